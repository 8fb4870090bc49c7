//! The hosts of the muster agents a chaos world runs: servers (Raft inside) and client
//! agents, each a whole `Node` fed what `runtime-tokio` would feed it.
//!
//! Owns each agent's process and what its host does for it: stepping at the machine's own
//! clock time; the wire (peer messages as postcard bytes after a kind byte; gossip datagrams
//! and streams per pool; a message for a server that is down comes back as `Undelivered`, a
//! gossip stream to a member that is down as `GossipUnreachable`, a round trip later); a
//! client agent's calls and the connections they travel on (a server's answer goes back on
//! the connection the call came on, so it is lost if the client died since, and a server
//! never answers a call twice or unasked); the API state each agent asked to keep
//! (`SaveAgentState`, fsynced in production), which a restarted client gets back; restarts
//! (servers through `Node::recover` from the simulated disk), and the agent a world lets die
//! for good (`gone`: never restarted). The servers' effects feed `chaos::ledger`: their
//! sends (AppendEntries), their persists (log matching; and a copy of each log, so every
//! `Applied` names its committed entry), `BecameLeader` (election safety, leader
//! completeness), their state digests. A `FleetWorld` adds the workload and its checks; it
//! gets `chaos::World` from here. Never decides what a request means, and never looks
//! inside a node beyond its read-only views.

use std::collections::BTreeMap;

use muster_core::agent::{NodeInfo, SavedDefs};
use muster_core::api::ApiResponse;
use muster_core::fsm::catalog::Health;
use muster_core::fsm::State;
use muster_core::gossip::message::{Msg, Packet};
use muster_core::gossip::wire::{Codec, Frame};
use muster_core::gossip::{GossipConfig, MemberStatus};
use muster_core::ids::{Index, PersistToken, ReqId, Term};
use muster_core::io::{Effect, Event, Input, PersistOp, Pool, Recovered};
use muster_core::node::{Config, GossipSetup, Node};
use muster_core::raft::disk;
use muster_core::rpc::{client_id, Call, PeerMessage};
use muster_core::time::{Duration, Time};

use crate::chaos::{self, Env, Profile, World, ELECTION, HEARTBEAT};
use crate::raft::summary;

/// How long a server holds work waiting for a leader (`rpc_hold_timeout`): below the
/// nodes world's 2 s client timeout, so most failures there are the server's own answers.
pub(crate) const HOLD: Duration = Duration::from_millis(1500);

/// After the heal, how long gossip may take to agree again and the leader to write every
/// member's `serfHealth` passing: three reconnect rounds and a suspicion timeout.
pub(crate) const GOSSIP_SETTLE: Duration = Duration::from_secs(25);

/// What the transport tells an agent about its own sends, and a world's own inputs.
#[derive(Debug)]
pub(crate) enum Local<X> {
    /// A server message for a server that was down came back.
    Undelivered { life: u32, to: usize, bytes: Vec<u8> },
    /// A gossip stream to a member that was down could not be opened.
    Unreachable { life: u32, pool: Pool, to: String, tag: Option<u64> },
    /// An input only the world knows.
    World(X),
}

/// The first byte of everything on the wire: a message on the server port, gossip (per
/// pool, datagram or stream), or a server's answer on a client's connection.
const WIRE_PEER: u8 = 0;
const WIRE_ANSWER: u8 = 5;

fn gossip_kind(pool: Pool, stream: bool) -> u8 {
    1 + 2 * u8::from(pool == Pool::Wan) + u8::from(stream)
}

/// Agent `i`'s address: servers first, then client agents.
pub(crate) fn address(i: usize) -> String {
    format!("10.0.0.{}", i + 1)
}

/// A gossip address (`10.0.0.N:port`) as the agent index it names.
fn gossip_target(addr: &str) -> Option<usize> {
    let host = addr.rsplit_once(':')?.0;
    let n: usize = host.strip_prefix("10.0.0.")?.parse().ok()?;
    n.checked_sub(1)
}

/// Every agent's LAN gossip: timers scaled down (probes every 100 ms, push-pull and
/// reconnects every 5 s), so a pool that chaos split converges within the liveness phase.
pub(crate) fn lan_gossip() -> GossipConfig {
    GossipConfig {
        push_pull_interval: Duration::from_secs(5),
        reconnect_interval: Duration::from_secs(5),
        ..GossipConfig::lan().dev()
    }
}

/// Gossip with `lan_gossip`'s timers (the WAN's reconnects also every 5 s); it joins `join`
/// (agent indexes).
fn gossip(join: impl Iterator<Item = usize>) -> GossipSetup {
    GossipSetup {
        lan: lan_gossip(),
        wan: GossipConfig { reconnect_interval: Duration::from_secs(5), ..GossipConfig::wan().dev() },
        codec: Codec::plain(),
        join: join.map(|j| format!("{}:8301", address(j))).collect(),
        join_wan: vec![],
        retry_interval: Duration::from_secs(2),
        retry_interval_wan: Duration::from_secs(30),
    }
}

/// Bugs a host can be told to have, so a world's checks can be seen to fail.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostBugs {
    /// Drop every `Call::Work` (anti-entropy) a client agent sends in the liveness phase.
    pub drop_client_work: bool,
    /// Restart client agents without the state they saved.
    pub lose_saved_state: bool,
    /// The agent that died for good acks every ping sent to it, as if its gossip lived on
    /// (a hung agent whose gossip still answers): gossip never fails it.
    pub zombie_gossip: bool,
}

pub(crate) struct Agent {
    /// What messages to this agent are addressed to: a server's id (`host:port`), or the
    /// name a client's connections carry.
    pub id: String,
    pub name: String,
    pub node: Option<Node>,
    /// The node's log as its persists describe it, nothing lost (snapshots without their
    /// bytes): where an `Applied` index finds its entry, and a new leader's log is checked
    /// for completeness.
    pub log: Recovered,
    /// The applied index whose digest was checked last.
    checked: Index,
    /// The last term this server announced leading.
    led: Option<Term>,
    /// The API registrations the node last asked to keep.
    pub saved: SavedDefs,
}

/// Every agent of a world and their hosts, over the world's chaos.
pub(crate) struct Fleet<X> {
    pub env: Env<Local<X>>,
    pub agents: Vec<Agent>,
    /// Agents `0..servers` are servers, the rest client agents.
    pub servers: usize,
    ids: BTreeMap<String, usize>,
    /// Calls of client agents sent and not answered: (server, client, ctx) → the client's
    /// life when it sent the call (the connection it opened).
    calls: BTreeMap<(usize, usize, u64), u32>,
    pub bugs: HostBugs,
    /// An agent that dies for good at this time: no restart brings it back, not even the
    /// liveness phase's.
    pub gone: Option<(usize, Time)>,
    /// Services restarted client agents got back from their saved state.
    pub restored: u64,
    /// Client agents' calls that came back undelivered, and answers lost with a client
    /// agent's connection.
    pub calls_undelivered: u64,
    pub answers_lost: u64,
}

fn server_config(i: usize, ids: &[String], p: &Profile) -> Config {
    let mut info = NodeInfo::new(&format!("s{i}"), &address(i), "dc1");
    info.id = format!("00000000-0000-4000-8000-{:012}", i + 1);
    Config {
        bootstrap: false,
        bootstrap_expect: ids.len() as u32,
        retry_join: ids.to_vec(),
        gossip: Some(gossip((0..ids.len()).filter(|j| *j != i))),
        raft_election_timeout: ELECTION,
        raft_heartbeat: HEARTBEAT,
        rpc_hold_timeout: HOLD,
        snapshot_threshold: p.snapshot_every,
        // Few kept below a snapshot, so followers that fall behind need one installed.
        raft_trailing_logs: p.trailing,
        muster_version: "sim".into(),
        ..Config::defaults(info)
    }
}

/// Anti-entropy's full sync period on client agents: short, so a few fit in the liveness
/// phase.
pub(crate) const AE_INTERVAL: Duration = Duration::from_secs(5);

/// Agent `i`, the client agent `c{i - servers}`, joining the LAN pool through server
/// `i % servers`.
fn client_config(i: usize, servers: usize, restored: SavedDefs) -> Config {
    let mut info = NodeInfo::new(&format!("c{}", i - servers), &address(i), "dc1");
    info.id = format!("00000000-0000-4000-8000-{:012}", i + 1);
    Config {
        server: false,
        bootstrap: false,
        gossip: Some(gossip(std::iter::once(i % servers))),
        rpc_hold_timeout: HOLD,
        ae_interval: AE_INTERVAL,
        muster_version: "sim".into(),
        restored,
        ..Config::defaults(info)
    }
}

impl<X> Fleet<X> {
    /// `servers` servers forming a cluster by `-bootstrap-expect`, then the client agents:
    /// one per machine of `env`, each started from its seed.
    pub fn new(env: Env<Local<X>>, servers: usize, seeds: Vec<[u8; 32]>) -> Fleet<X> {
        let server_ids: Vec<String> = (0..servers).map(|i| format!("{}:8300", address(i))).collect();
        let agents: Vec<Agent> = seeds
            .into_iter()
            .enumerate()
            .map(|(i, seed)| {
                let (id, cfg) = if i < servers {
                    (server_ids[i].clone(), server_config(i, &server_ids, &env.profile))
                } else {
                    let cfg = client_config(i, servers, SavedDefs::default());
                    (client_id(&cfg.node.name), cfg)
                };
                Agent {
                    id,
                    name: cfg.node.name.clone(),
                    node: Some(Node::new(cfg, seed).expect("the sim's config is valid")),
                    log: Recovered::default(),
                    checked: Index::ZERO,
                    led: None,
                    saved: SavedDefs::default(),
                }
            })
            .collect();
        let ids = agents.iter().enumerate().map(|(i, a)| (a.id.clone(), i)).collect();
        Fleet {
            env,
            agents,
            servers,
            ids,
            calls: BTreeMap::new(),
            bugs: HostBugs::default(),
            gone: None,
            restored: 0,
            calls_undelivered: 0,
            answers_lost: 0,
        }
    }

    pub fn is_client(&self, i: usize) -> bool {
        i >= self.servers
    }

    /// Whether agent `i` has died for good.
    pub fn is_gone(&self, i: usize) -> bool {
        self.gone.is_some_and(|(g, at)| g == i && self.env.now >= at)
    }

    /// The live servers' states.
    pub fn server_states(&self) -> impl Iterator<Item = &State> {
        self.agents[..self.servers].iter().filter_map(|a| a.node.as_ref().map(Node::state))
    }

    /// The environment, beside the live servers' states (the workload draws from both).
    pub fn env_and_states(&mut self) -> (&mut Env<Local<X>>, Vec<&State>) {
        let states = self.agents[..self.servers].iter().filter_map(|a| a.node.as_ref().map(Node::state));
        (&mut self.env, states.collect())
    }

    /// State-machine safety: the server's state equals everyone's at the same index.
    fn check_state(&mut self, node: usize, how: &str) -> Result<(), String> {
        let a = &mut self.agents[node];
        let Some(state) = a.node.as_ref().map(Node::state).filter(|_| node < self.servers) else {
            return Ok(());
        };
        if state.applied() == a.checked {
            return Ok(());
        }
        a.checked = state.applied();
        let (index, digest) = (state.applied(), state.digest());
        self.env.check_digest(node, index, digest, how)
    }

    /// Keeps the server's log copy in step with a persist it asked for.
    fn log_persist(&mut self, node: usize, op: &PersistOp) {
        let log = &mut self.agents[node].log;
        let op = match op {
            PersistOp::AppendLog { entries } => PersistOp::AppendLog { entries: entries.clone() },
            PersistOp::HardState { term, voted_for } => {
                PersistOp::HardState { term: *term, voted_for: voted_for.clone() }
            }
            PersistOp::Snapshot { index, term, .. } => {
                // A snapshot that does not continue the log replaces it: one from the leader.
                let continues = log.entries.iter().any(|e| e.index == *index && e.term == *term);
                self.env.stats.snapshots_installed += u64::from(!continues);
                PersistOp::Snapshot { index: *index, term: *term, data: Vec::new().into() }
            }
        };
        disk::apply(log, op);
    }

    /// Gossip on the wire: a datagram for an agent that is down is lost, a stream to it is
    /// refused a round trip later.
    fn gossip_send(
        &mut self,
        node: usize,
        pool: Pool,
        to: String,
        bytes: Vec<u8>,
        stream: bool,
        tag: Option<u64>,
    ) -> Result<(), String> {
        let Some(target) = gossip_target(&to).filter(|t| *t < self.agents.len()) else {
            return self.env.fail(format!("n{node} gossiped to unknown address {to}"));
        };
        if self.agents[target].node.is_some() {
            let mut wire = vec![gossip_kind(pool, stream)];
            wire.extend(bytes);
            self.env.transmit(node, target, wire, !stream);
        } else if !stream && self.bugs.zombie_gossip && self.is_gone(target) {
            self.zombie_acks(node, target, pool, &bytes);
        } else if stream {
            let at = self.env.now + self.env.delay() * 2;
            let life = self.env.machines[node].life;
            let event = Local::Unreachable { life, pool, to, tag };
            self.env.schedule(at, chaos::Event::Local { node, event });
        }
        Ok(())
    }

    /// The planted zombie: the gone agent `target` acks the pings in a datagram `node`
    /// sent it.
    fn zombie_acks(&mut self, node: usize, target: usize, pool: Pool, bytes: &[u8]) {
        let Ok(Frame::Packet(packet)) = Codec::plain().decode(bytes) else { return };
        let name = &self.agents[target].name;
        let msgs: Vec<Msg> = packet
            .msgs
            .into_iter()
            .filter_map(|m| match m {
                Msg::Ping { seq, target } if *target == **name => Some(Msg::Ack { seq, payload: vec![] }),
                _ => None,
            })
            .collect();
        if msgs.is_empty() {
            return;
        }
        self.env.note(|_| format!("n{target}: planted bug: its gossip acks {} pings of n{node}", msgs.len()));
        let mut wire = vec![gossip_kind(pool, false)];
        wire.extend(Codec::plain().encode(&Frame::Packet(Packet { msgs }), [0; 12]));
        self.env.transmit(target, node, wire, true);
    }

    /// Whether gossip agrees again and the catalog says so: every live agent sees every
    /// agent alive in the LAN pool (the gone one aside), and every server's state has every
    /// such agent's `serfHealth` passing (the leader's reconcile). What becomes of the gone
    /// agent is its world's to check.
    pub fn gossip_settled(&self) -> bool {
        let gone = self.gone.map(|(g, _)| self.agents[g].name.as_str());
        let expected = self.agents.len() - usize::from(gone.is_some());
        self.agents.iter().enumerate().all(|(i, a)| {
            let Some(n) = a.node.as_ref() else { return self.is_gone(i) };
            let alive = n
                .lan_members()
                .iter()
                .filter(|(name, st)| *st == MemberStatus::Alive && Some(name.as_str()) != gone)
                .count();
            alive == expected
                && (self.is_client(i)
                    || self.agents.iter().filter(|b| Some(b.name.as_str()) != gone).all(|b| {
                        n.state()
                            .catalog
                            .node_checks(&b.name)
                            .any(|c| c.check_id == "serfHealth" && c.status == Health::Passing)
                    }))
        })
    }

    /// What every agent sees of the LAN pool and every server of `serfHealth`, to say why
    /// gossip did not settle.
    pub fn gossip_views(&self) -> String {
        let views: Vec<_> = self
            .agents
            .iter()
            .map(|a| {
                a.node.as_ref().map(|n| {
                    let serf: Vec<_> = n
                        .state()
                        .catalog
                        .all_checks()
                        .filter(|c| c.check_id == "serfHealth")
                        .map(|c| (c.node.clone(), c.status))
                        .collect();
                    (n.lan_members(), serf)
                })
            })
            .collect();
        format!("{views:?}")
    }

    /// A message on the wire. One for a server that is down comes back undelivered; a
    /// server's answer to a client agent goes back on the connection the call came on.
    fn send(&mut self, node: usize, to: &str, msg: &PeerMessage) -> Result<(), String> {
        if let PeerMessage::Raft(m) = msg {
            self.env.check_wire(node, m)?;
        }
        let Some(&to) = self.ids.get(to) else {
            return self.env.fail(format!("n{node} sent to unknown agent {to}"));
        };
        let bytes = postcard::to_allocvec(msg).expect("peer messages encode");
        if self.is_client(to) {
            return self.answer(node, to, msg, bytes);
        }
        if let (true, PeerMessage::Call { ctx, call }) = (self.is_client(node), msg) {
            if self.bugs.drop_client_work && !self.env.safety_phase() && matches!(call, Call::Work(_)) {
                self.env.note(|_| format!("n{node}: planted bug drops call {ctx}: {call:?}"));
                return Ok(());
            }
            self.calls.insert((to, node, *ctx), self.env.machines[node].life);
        }
        if self.agents[to].node.is_some() {
            let mut wire = vec![WIRE_PEER];
            wire.extend(&bytes);
            self.env.transmit(node, to, wire, false);
        } else {
            // A refused connection is known about a round trip later.
            let at = self.env.now + self.env.delay() * 2;
            let life = self.env.machines[node].life;
            let event = Local::Undelivered { life, to, bytes };
            self.env.schedule(at, chaos::Event::Local { node, event });
        }
        Ok(())
    }

    /// Server `node` answers a call of client agent `to`, once, on the connection the call
    /// came on: if the client died since, the connection died with it.
    fn answer(&mut self, node: usize, to: usize, msg: &PeerMessage, bytes: Vec<u8>) -> Result<(), String> {
        let PeerMessage::Answer { ctx, .. } = msg else {
            return self.env.fail(format!("n{node} sent a client agent {msg:?}, which is no answer"));
        };
        let Some(life) = self.calls.remove(&(node, to, *ctx)) else {
            return self.env.fail(format!("n{node} answered call {ctx} of n{to} twice, or unasked"));
        };
        if self.agents[to].node.is_none() || self.env.machines[to].life != life {
            self.answers_lost += 1;
            self.env.note(|_| format!("n{node}: answer {ctx} to n{to} lost with its connection"));
            return Ok(());
        }
        let mut wire = vec![WIRE_ANSWER];
        wire.extend(life.to_le_bytes());
        wire.extend(&bytes);
        self.env.transmit(node, to, wire, false);
        Ok(())
    }

    /// Starts `node`'s process again: a server from what its disk held, a client agent with
    /// the API state it saved last.
    fn revive(&mut self, node: usize, seed: [u8; 32], disk: Recovered) -> Result<(), String> {
        let n = if self.is_client(node) {
            let saved = if self.bugs.lose_saved_state {
                SavedDefs::default()
            } else {
                self.agents[node].saved.clone()
            };
            self.restored += saved.services.len() as u64;
            Node::new(client_config(node, self.servers, saved), seed)
        } else {
            let ids: Vec<String> = self.agents[..self.servers].iter().map(|s| s.id.clone()).collect();
            Node::recover(server_config(node, &ids, &self.env.profile), seed, disk.clone())
        };
        let n = match n {
            Ok(n) => n,
            Err(e) => return self.env.fail(format!("n{node} cannot recover: {e}")),
        };
        let a = &mut self.agents[node];
        a.node = Some(n);
        a.log = disk;
        a.checked = Index::ZERO;
        self.check_state(node, "recovered snapshot")
    }
}

/// A chaos world made of a `Fleet`'s agents: it supplies the workload and the checks, and
/// gets `World` from the fleet.
pub(crate) trait FleetWorld {
    /// Inputs only this world has.
    type Extra;
    fn fleet(&mut self) -> &mut Fleet<Self::Extra>;
    /// Agent `node` answered request `id`.
    fn answered(&mut self, node: usize, id: ReqId, resp: ApiResponse) -> Result<(), String>;
    /// Client operation `op` reaches `node`.
    fn request(&mut self, node: usize, op: usize) -> Result<(), String>;
    /// The workload's client is ready for its next operation.
    fn client_op(&mut self, client: usize);
    fn extra(&mut self, node: usize, event: Self::Extra) -> Result<(), String>;
    /// `node`'s process died: settle what waited on it.
    fn killed(&mut self, node: usize);
    /// Called every 50 ms of the liveness phase; `Some` ends the run.
    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String>;
}

/// Steps a live agent at its local time and carries out what it asks.
pub(crate) fn step<W: FleetWorld>(w: &mut W, node: usize, input: Input) -> Result<(), String> {
    let f = w.fleet();
    let now = f.env.local_time(node);
    let Some(n) = f.agents[node].node.as_mut() else { return Ok(()) };
    let mut out = Vec::new();
    n.step(now, input, &mut out);
    for e in out {
        match e {
            Effect::Respond { id, resp } => w.answered(node, id, resp)?,
            e => effect(w.fleet(), node, e)?,
        }
    }
    w.fleet().check_state(node, "state")
}

fn effect<X>(f: &mut Fleet<X>, node: usize, e: Effect) -> Result<(), String> {
    match e {
        Effect::SetTimer { at } => f.env.set_timer(node, at),
        Effect::Persist { token, op } => {
            f.log_persist(node, &op);
            f.env.persist(node, token, op)?;
        }
        Effect::Send { to, msg } => f.send(node, &to, &msg)?,
        Effect::Gossip { pool, to, bytes, stream, tag } => {
            f.gossip_send(node, pool, to, bytes, stream, tag)?
        }
        Effect::Exit | Effect::SaveKeyring { .. } => {
            return f.env.fail(format!("n{node} left or rotated keys, which nothing asked for"))
        }
        // The file is fsynced before the host goes on: it survives any crash after this.
        Effect::SaveAgentState { defs } => f.agents[node].saved = defs,
        Effect::Respond { .. } => unreachable!("the world takes the answers"),
        Effect::Emit(Event::BecameLeader { term }) => {
            f.env.mix(&[5, node as u64, term.0]);
            f.env.note(|_| format!("n{node}: leads term {}", term.0));
            f.agents[node].led = Some(term);
            let log = &f.agents[node].log;
            let first = log.snapshot.as_ref().map_or(Index::ZERO, |s| s.0).next();
            let last = log.entries.last().map_or(Index(first.0 - 1), |e| e.index);
            let log_term = |i: Index| log.entries.iter().find(|e| e.index == i).map(|e| e.term);
            f.env.elected(node, term, (first, last), log_term)?;
        }
        Effect::Emit(Event::Applied { index }) => {
            let log = &f.agents[node].log;
            let Some(entry) = log.entries.iter().find(|e| e.index == index).cloned() else {
                return f.env.fail(format!("n{node} applied {index:?}, which its log does not hold"));
            };
            let term = log.hard_state.as_ref().map_or(Term(0), |h| h.0);
            f.env.committed(node, &entry, term)?;
        }
        Effect::Emit(Event::Failed { reason }) => return f.env.fail(format!("n{node} stopped: {reason}")),
        Effect::Emit(Event::Member { pool, name, change }) => {
            f.env.mix(&[12, node as u64, pool as u64, change as u64]);
            f.env.note(|_| format!("n{node}: {pool:?} member {name} {change:?}"));
        }
        Effect::Emit(Event::GossipDropped { from, reason, .. }) => {
            return f.env.fail(format!("n{node} dropped gossip from {from}: {reason}"));
        }
        Effect::Emit(_) => {}
        Effect::RunCheck { .. } | Effect::CancelCheck { .. } => {
            return f.env.fail(format!("n{node} runs a check probe, yet none is registered"));
        }
    }
    Ok(())
}

impl<W: FleetWorld> World for W {
    type Local = Local<W::Extra>;

    fn env(&mut self) -> &mut Env<Self::Local> {
        &mut self.fleet().env
    }

    fn is_up(&mut self, node: usize) -> bool {
        self.fleet().agents[node].node.is_some()
    }

    /// The live server that announced the highest term and has not moved past it: a node
    /// tells no one when it steps down, so this may name a deposed leader (fault aim only).
    fn leader(&mut self) -> Option<usize> {
        let leading = self.fleet().agents.iter().enumerate().filter_map(|(i, s)| {
            let term = s.led?;
            let current = s.log.hard_state.as_ref().map(|h| h.0);
            (s.node.is_some() && current == Some(term)).then_some((term, i))
        });
        leading.max().map(|(_, i)| i)
    }

    fn deliver(&mut self, from: usize, to: usize, wire: &[u8]) -> Result<(), String> {
        let (&kind, mut bytes) = wire.split_first().expect("every message has its kind byte");
        let f = self.fleet();
        if kind == WIRE_ANSWER {
            let (life, rest) = bytes.split_at(4);
            if f.env.machines[to].life != u32::from_le_bytes(life.try_into().expect("four bytes")) {
                return Ok(()); // the connection died with the process that opened it
            }
            bytes = rest;
        } else if kind != WIRE_PEER {
            let pool = if kind >= 3 { Pool::Wan } else { Pool::Lan };
            let port = if pool == Pool::Wan { 8302 } else { 8301 };
            let input = Input::Gossip {
                pool,
                from: format!("{}:{port}", address(from)),
                bytes: bytes.to_vec(),
                stream: kind % 2 == 0,
            };
            return step(self, to, input);
        }
        let Ok(msg) = postcard::from_bytes::<PeerMessage>(bytes) else {
            return f.env.fail("a message did not decode".into());
        };
        f.env.note(|_| match &msg {
            PeerMessage::Raft(m) => format!("n{from} -> n{to}: {}", summary(m)),
            other => format!("n{from} -> n{to}: {other:?}"),
        });
        let from = f.agents[from].id.clone();
        step(self, to, Input::Peer { from, msg })
    }

    fn tick(&mut self, node: usize) -> Result<(), String> {
        step(self, node, Input::Tick)
    }

    fn persisted(&mut self, node: usize, token: PersistToken) -> Result<(), String> {
        step(self, node, Input::Persisted { token })
    }

    fn request(&mut self, node: usize, op: usize) -> Result<(), String> {
        FleetWorld::request(self, node, op)
    }

    fn client_op(&mut self, client: usize) {
        FleetWorld::client_op(self, client)
    }

    fn local(&mut self, node: usize, event: Self::Local) -> Result<(), String> {
        let f = self.fleet();
        match event {
            Local::Undelivered { life, to, bytes } => {
                if life != f.env.machines[node].life {
                    return Ok(());
                }
                let Ok(msg) = postcard::from_bytes::<PeerMessage>(&bytes) else {
                    return f.env.fail("a message did not decode".into());
                };
                f.calls_undelivered += u64::from(f.is_client(node));
                f.env.mix(&[11, node as u64, to as u64]);
                f.env.note(|_| format!("n{node}: undelivered to n{to}: {msg:?}"));
                let to = f.agents[to].id.clone();
                step(self, node, Input::Undelivered { to, msg })
            }
            Local::Unreachable { life, pool, to, tag } => {
                if life != f.env.machines[node].life {
                    return Ok(());
                }
                f.env.note(|_| format!("n{node}: gossip stream to {to} refused"));
                step(self, node, Input::GossipUnreachable { pool, to, tag })
            }
            Local::World(x) => self.extra(node, x),
        }
    }

    fn kill(&mut self, node: usize) {
        let a = &mut self.fleet().agents[node];
        a.node = None;
        a.led = None;
        self.killed(node);
    }

    fn revive(&mut self, node: usize, seed: [u8; 32], disk: Recovered) -> Result<(), String> {
        self.fleet().revive(node, seed, disk)
    }

    fn stays_down(&mut self, node: usize) -> bool {
        self.fleet().is_gone(node)
    }

    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String> {
        FleetWorld::liveness_check(self)
    }
}
