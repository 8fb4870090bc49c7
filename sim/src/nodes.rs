//! The nodes world: 3 or 5 whole muster `Node`s, the product's servers (Raft inside, writes
//! forwarded to the leader, read barriers, the agent), under the chaos of `chaos`, driven
//! through API requests by clients that ask random servers.
//!
//! Owns the hosts: each server's node, fed what a real host would feed it (peer messages as
//! postcard bytes, persist acknowledgements, timer ticks at its own clock's time, API
//! requests; a message for a server that is down comes back as `Undelivered`, as a refused
//! TCP connection does), restarted through `Node::recover` from its simulated disk. The
//! clients write unique values (sets, CAS, deletes) and read in default and consistent mode,
//! each op at a random server, so followers forward and pass read barriers; a 500 whose
//! reason says the write surely did not happen is `fail`, any other 500 or no answer is
//! `info`. Stale reads are only checked to return a value some write of that key carried.
//! The servers' effects feed `chaos::ledger`: their sends (AppendEntries), their persists
//! (log matching; and a copy of each log, so every `Applied` names its committed entry),
//! `BecameLeader` (election safety, leader completeness), their state digests. The liveness
//! phase settles once a write through every server has succeeded and every server has
//! applied every committed entry; then durability is checked. Never looks inside a node
//! beyond `state()`, which the workload peeks at for CAS indexes.

use std::collections::{BTreeMap, BTreeSet};

use muster_core::agent::NodeInfo;
use muster_core::api::shapes::Reply;
use muster_core::api::{ApiRequest, ApiResponse, Body, Consistency, KvRead, QueryOpts};
use muster_core::fsm::catalog::Health;
use muster_core::fsm::kv::KvSetMode;
use muster_core::fsm::State;
use muster_core::gossip::wire::Codec;
use muster_core::gossip::{GossipConfig, MemberStatus};
use muster_core::ids::{Index, PersistToken, ReqId, Term};
use muster_core::io::{Effect, Event, Input, PersistOp, Pool, Recovered};
use muster_core::node::{Config, GossipSetup, Node};
use muster_core::raft::disk;
use muster_core::rpc::PeerMessage;
use muster_core::time::Duration;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::chaos::{
    self, fmt_duration, read_value, Env, Outcome, Profile, ReadMode, World, ELECTION, HEARTBEAT, KEYS,
};
use crate::lin::OpKind;
use crate::raft::summary;
use crate::ClusterOutcome;

/// How many seeds `cargo test` runs (`SIM_NODES_SEEDS` overrides).
pub fn seeds_per_test() -> u64 {
    std::env::var("SIM_NODES_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

/// How long a server holds work waiting for a leader (`rpc_hold_timeout`): below the
/// clients' 2 s timeout, so most failures are the server's own answers.
const HOLD: Duration = Duration::from_millis(1500);

pub fn run_nodes_seed(seed: u64) -> ClusterOutcome {
    chaos::run(seed, &mut Nodes::new(seed), false).0
}

/// Like `run_nodes_seed`, also returning the trace: one line per event handled.
pub fn run_nodes_traced(seed: u64) -> (ClusterOutcome, Vec<String>) {
    chaos::run(seed, &mut Nodes::new(seed), true)
}

/// A message its server could not hand over: the destination was down.
/// What the transport tells a server about its own sends.
#[derive(Debug)]
enum Local {
    /// A server message for a server that was down came back.
    Undelivered { life: u32, to: usize, bytes: Vec<u8> },
    /// A gossip stream to a server that was down could not be opened.
    Unreachable { life: u32, pool: Pool, to: String, tag: Option<u64> },
}

/// The first byte of everything on this world's wire: a server message, or gossip (per
/// pool, datagram or stream).
const WIRE_PEER: u8 = 0;

fn gossip_kind(pool: Pool, stream: bool) -> u8 {
    1 + 2 * u8::from(pool == Pool::Wan) + u8::from(stream)
}

/// A gossip address (`10.0.0.N:port`) as the server index it names.
fn gossip_target(addr: &str) -> Option<usize> {
    let host = addr.rsplit_once(':')?.0;
    let n: usize = host.strip_prefix("10.0.0.")?.parse().ok()?;
    n.checked_sub(1)
}

/// Gossip with its timers scaled down (probes every 100 ms, push-pull and reconnects every
/// 5 s), so a pool that chaos split converges within the liveness phase.
fn gossip(i: usize, n: usize) -> GossipSetup {
    let lan = GossipConfig {
        push_pull_interval: Duration::from_secs(5),
        reconnect_interval: Duration::from_secs(5),
        ..GossipConfig::lan().dev()
    };
    GossipSetup {
        lan,
        wan: GossipConfig { reconnect_interval: Duration::from_secs(5), ..GossipConfig::wan().dev() },
        codec: Codec::plain(),
        join: (0..n).filter(|j| *j != i).map(|j| format!("10.0.0.{}:8301", j + 1)).collect(),
        join_wan: vec![],
        retry_interval: Duration::from_secs(2),
        retry_interval_wan: Duration::from_secs(30),
    }
}

/// After the heal, how long gossip may take to agree again and the leader to write every
/// member's `serfHealth` passing: three reconnect rounds and a suspicion timeout.
const GOSSIP_SETTLE: Duration = Duration::from_secs(25);

struct Server {
    id: String,
    node: Option<Node>,
    /// The node's log as its persists describe it, nothing lost (snapshots without their
    /// bytes): where an `Applied` index finds its entry, and a new leader's log is checked
    /// for completeness.
    log: Recovered,
    /// Client operations delivered here and not answered yet.
    inflight: BTreeSet<usize>,
    /// The applied index whose digest was checked last.
    checked: Index,
    /// The last term this server announced leading.
    led: Option<Term>,
}

struct Nodes {
    env: Env<Local>,
    servers: Vec<Server>,
    ids: BTreeMap<String, usize>,
    /// The request each client operation sends, until it reaches a server.
    requests: BTreeMap<usize, ApiRequest>,
    /// The key each written value was written to.
    values: BTreeMap<u64, &'static str>,
    /// (value, modify index) pairs seen in servers' states, per key: CAS arguments.
    versions: BTreeMap<&'static str, Vec<(u64, Index)>>,
    /// Per server, the latest liveness-phase write through it.
    live: Vec<Option<usize>>,
}

fn config(i: usize, ids: &[String], p: &Profile) -> Config {
    let mut info = NodeInfo::new(&format!("s{i}"), &format!("10.0.0.{}", i + 1), "dc1");
    info.id = format!("00000000-0000-4000-8000-{:012}", i + 1);
    Config {
        bootstrap: false,
        bootstrap_expect: ids.len() as u32,
        retry_join: ids.to_vec(),
        gossip: Some(gossip(i, ids.len())),
        raft_election_timeout: ELECTION,
        raft_heartbeat: HEARTBEAT,
        rpc_hold_timeout: HOLD,
        snapshot_threshold: p.snapshot_every,
        muster_version: "sim".into(),
        ..Config::defaults(info)
    }
}

impl Nodes {
    fn new(seed: u64) -> Nodes {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4e4f_4445);
        let mut profile = Profile::draw(&mut rng);
        // The server transport is TCP, written once per message: it loses and delays, but
        // never duplicates.
        profile.dup_per_mille = 0;
        // Three times the replica world's clients: more writes race through forwarding.
        profile.clients *= 3;
        let (env, seeds) = Env::new(rng, profile);
        let ids: Vec<String> = (0..env.profile.nodes).map(|i| format!("10.0.0.{}:8300", i + 1)).collect();
        let servers = seeds
            .into_iter()
            .enumerate()
            .map(|(i, seed)| Server {
                id: ids[i].clone(),
                node: Some(
                    Node::new(config(i, &ids, &env.profile), seed).expect("the sim's config is valid"),
                ),
                log: Recovered::default(),
                inflight: BTreeSet::new(),
                checked: Index::ZERO,
                led: None,
            })
            .collect();
        let live = vec![None; ids.len()];
        let ids = ids.into_iter().enumerate().map(|(i, id)| (id, i)).collect();
        Nodes {
            env,
            servers,
            ids,
            requests: BTreeMap::new(),
            values: BTreeMap::new(),
            versions: BTreeMap::new(),
            live,
        }
    }

    /// Steps a live server at its local time and carries out what it asks.
    fn step(&mut self, node: usize, input: Input) -> Result<(), String> {
        let now = self.env.local_time(node);
        let Some(n) = self.servers[node].node.as_mut() else { return Ok(()) };
        let mut out = Vec::new();
        n.step(now, input, &mut out);
        for e in out {
            self.effect(node, e)?;
        }
        self.check_state(node, "state")
    }

    /// State-machine safety: the server's state equals everyone's at the same index.
    fn check_state(&mut self, node: usize, how: &str) -> Result<(), String> {
        let s = &mut self.servers[node];
        let Some(state) = s.node.as_ref().map(Node::state) else { return Ok(()) };
        if state.applied() == s.checked {
            return Ok(());
        }
        s.checked = state.applied();
        let (index, digest) = (state.applied(), state.digest());
        self.env.check_digest(node, index, digest, how)
    }

    fn effect(&mut self, node: usize, e: Effect) -> Result<(), String> {
        match e {
            Effect::SetTimer { at } => self.env.set_timer(node, at),
            Effect::Persist { token, op } => {
                self.log_persist(node, &op);
                self.env.persist(node, token, op)?;
            }
            Effect::Send { to, msg } => self.send(node, &to, &msg)?,
            Effect::Gossip { pool, to, bytes, stream, tag } => {
                self.gossip_send(node, pool, to, bytes, stream, tag)?
            }
            Effect::Exit | Effect::SaveKeyring { .. } => {
                return self.env.fail(format!("n{node} left or rotated keys, which nothing asked for"))
            }
            // Restarts model the Raft disk; API registrations are not replayed across them.
            Effect::SaveAgentState { .. } => {}
            Effect::Respond { id, resp } => self.answered(node, id.0 as usize, resp)?,
            Effect::Emit(Event::BecameLeader { term }) => {
                self.env.mix(&[5, node as u64, term.0]);
                self.env.note(|_| format!("n{node}: leads term {}", term.0));
                self.servers[node].led = Some(term);
                let log = &self.servers[node].log;
                let first = log.snapshot.as_ref().map_or(Index::ZERO, |s| s.0).next();
                let last = log.entries.last().map_or(Index(first.0 - 1), |e| e.index);
                let log_term = |i: Index| log.entries.iter().find(|e| e.index == i).map(|e| e.term);
                self.env.elected(node, term, (first, last), log_term)?;
            }
            Effect::Emit(Event::Applied { index }) => {
                let log = &self.servers[node].log;
                let Some(entry) = log.entries.iter().find(|e| e.index == index).cloned() else {
                    return self.env.fail(format!("n{node} applied {index:?}, which its log does not hold"));
                };
                let term = log.hard_state.as_ref().map_or(Term(0), |h| h.0);
                self.env.committed(node, &entry, term)?;
            }
            Effect::Emit(Event::Failed { reason }) => {
                return self.env.fail(format!("n{node} stopped: {reason}"))
            }
            Effect::Emit(Event::Member { pool, name, change }) => {
                self.env.mix(&[12, node as u64, pool as u64, change as u64]);
                self.env.note(|_| format!("n{node}: {pool:?} member {name} {change:?}"));
            }
            Effect::Emit(Event::GossipDropped { from, reason, .. }) => {
                return self.env.fail(format!("n{node} dropped gossip from {from}: {reason}"));
            }
            Effect::Emit(_) => {}
            Effect::RunCheck { .. } | Effect::CancelCheck { .. } => {
                return self.env.fail(format!("n{node} runs a check probe, yet none is registered"));
            }
        }
        Ok(())
    }

    /// Keeps the server's log copy in step with a persist it asked for.
    fn log_persist(&mut self, node: usize, op: &PersistOp) {
        let log = &mut self.servers[node].log;
        let op = match op {
            PersistOp::AppendLog { entries } => PersistOp::AppendLog { entries: entries.clone() },
            PersistOp::HardState { term, voted_for } => {
                PersistOp::HardState { term: *term, voted_for: voted_for.clone() }
            }
            PersistOp::Snapshot { index, term, .. } => {
                // A snapshot that does not continue the log replaces it: one from the leader.
                let continues = log.entries.iter().any(|e| e.index == *index && e.term == *term);
                self.env.stats.snapshots_installed += u64::from(!continues);
                PersistOp::Snapshot { index: *index, term: *term, data: Vec::new() }
            }
        };
        disk::apply(log, op);
    }

    /// Gossip on the wire: a datagram for a server that is down is lost, a stream to it is
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
        let Some(target) = gossip_target(&to).filter(|t| *t < self.servers.len()) else {
            return self.env.fail(format!("n{node} gossiped to unknown address {to}"));
        };
        if self.servers[target].node.is_some() {
            let mut wire = vec![gossip_kind(pool, stream)];
            wire.extend(bytes);
            self.env.transmit(node, target, wire);
        } else if stream {
            let at = self.env.now + self.env.delay() * 2;
            let life = self.env.machines[node].life;
            let event = Local::Unreachable { life, pool, to, tag };
            self.env.schedule(at, chaos::Event::Local { node, event });
        }
        Ok(())
    }

    /// Whether gossip agrees again and the catalog says so: every server sees every server
    /// alive in the LAN pool, and every server's state has every server's `serfHealth`
    /// passing (the leader's reconcile).
    fn gossip_settled(&self) -> bool {
        let names: Vec<String> = (0..self.servers.len()).map(|i| format!("s{i}")).collect();
        self.servers.iter().all(|s| {
            let Some(n) = s.node.as_ref() else { return false };
            let alive = n.lan_members().iter().filter(|(_, st)| *st == MemberStatus::Alive).count();
            alive == names.len()
                && names.iter().all(|name| {
                    n.state()
                        .catalog
                        .node_checks(name)
                        .any(|c| c.check_id == "serfHealth" && c.status == Health::Passing)
                })
        })
    }

    /// A message on the wire; one for a server that is down comes back undelivered.
    fn send(&mut self, node: usize, to: &str, msg: &PeerMessage) -> Result<(), String> {
        if let PeerMessage::Raft(m) = msg {
            self.env.check_wire(node, m)?;
        }
        let Some(&to) = self.ids.get(to) else {
            return self.env.fail(format!("n{node} sent to unknown server {to}"));
        };
        let bytes = postcard::to_allocvec(msg).expect("peer messages encode");
        if self.servers[to].node.is_some() {
            let mut wire = vec![WIRE_PEER];
            wire.extend(&bytes);
            self.env.transmit(node, to, wire);
        } else {
            // A refused connection is known about a round trip later.
            let at = self.env.now + self.env.delay() * 2;
            let life = self.env.machines[node].life;
            let event = Local::Undelivered { life, to, bytes };
            self.env.schedule(at, chaos::Event::Local { node, event });
        }
        Ok(())
    }

    /// A server answered client operation `op`.
    fn answered(&mut self, node: usize, op: usize, resp: ApiResponse) -> Result<(), String> {
        if !self.servers[node].inflight.remove(&op) {
            return self.env.fail(format!("n{node} answered op {op} twice, or unasked"));
        }
        if self.env.ops[op].outcome != Outcome::Pending {
            return Ok(()); // the client gave up already
        }
        let o = &self.env.ops[op];
        let text = match &resp.body {
            Body::Text(t) => t.as_str(),
            _ => "",
        };
        let (outcome, kind) = match (o.kind, resp.status, &resp.body) {
            (OpKind::Read(_), 200, Body::Raw(v)) => (Outcome::Ok, Some(OpKind::Read(Some(read_value(v))))),
            (OpKind::Read(_), 404, _) => (Outcome::Ok, Some(OpKind::Read(None))),
            (OpKind::Read(_), 500, _) => (Outcome::Dropped, None),
            (OpKind::Cas { expect, new, .. }, 200, Body::Json(Reply::Bool(b))) => {
                (Outcome::Ok, Some(OpKind::Cas { expect, new, swapped: Some(*b) }))
            }
            (OpKind::Write(_) | OpKind::Delete, 200, Body::Json(Reply::Bool(true))) => (Outcome::Ok, None),
            (_, 500, _) if surely_not_applied(text) => (Outcome::Fail, None),
            (_, 500, _) => (Outcome::Info, None),
            (kind, status, body) => {
                return self.env.fail(format!("n{node} answered op {op} ({kind:?}) with {status} {body:?}"))
            }
        };
        if let (Some(OpKind::Read(Some(v))), ReadMode::Stale) = (kind, o.read) {
            if self.values.get(&v) != Some(&o.key) {
                return self
                    .env
                    .fail(format!("stale read op {op} of {} saw {v}, which no write of it carried", o.key));
            }
        }
        self.env.note(|_| format!("n{node} answers op {op}: {} {text}", resp.status));
        self.env.finish(op, outcome, kind);
        Ok(())
    }

    /// A CAS argument: mostly what a server holds now, else a version seen before (likely
    /// stale), else "absent".
    fn cas_expectation(&mut self, key: &'static str) -> (Option<u64>, u64) {
        let live: Vec<&State> =
            self.servers.iter().filter_map(|s| s.node.as_ref().map(Node::state)).collect();
        let now = match live.len() {
            0 => None,
            n => Some(
                live[self.env.below(n as u64) as usize]
                    .kv
                    .get(key)
                    .map(|e| (read_value(&e.value), e.modify_index)),
            ),
        };
        let seen = self.versions.entry(key).or_default();
        if let Some(Some(v)) = now {
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        let pick = self.env.below(10);
        let seen = &self.versions[key];
        let chosen = match now {
            Some(current) if pick < 6 => current,
            _ if pick < 9 && !seen.is_empty() => Some(seen[self.env.below(seen.len() as u64) as usize]),
            _ => None,
        };
        chosen.map_or((None, 0), |(v, i)| (Some(v), i.0))
    }

    /// Starts a client operation at `node`.
    fn invoke(
        &mut self,
        client: usize,
        node: usize,
        key: &'static str,
        kind: OpKind,
        read: ReadMode,
        req: ApiRequest,
    ) {
        let env = &mut self.env;
        let op = env.invoke(client, key, kind, read);
        env.mix(&[6, client as u64, op as u64, node as u64]);
        env.note(|_| format!("client {client}: op {op} {kind:?} {key} {read:?} at n{node}"));
        let at = env.now + env.delay();
        env.schedule(at, chaos::Event::Request { node, op });
        self.requests.insert(op, req);
    }

    /// A write of a fresh value to `key`: a set, or a CAS from `expect` at `index`.
    fn write(&mut self, client: usize, node: usize, key: &'static str, cas: Option<(Option<u64>, u64)>) {
        let v = self.env.next_value;
        self.env.next_value += 1;
        self.values.insert(v, key);
        let (kind, mode) = match cas {
            Some((expect, index)) => (OpKind::Cas { expect, new: v, swapped: None }, KvSetMode::Cas(index)),
            None => (OpKind::Write(v), KvSetMode::Set),
        };
        let req = ApiRequest::KvPut { key: key.into(), value: v.to_le_bytes().to_vec(), flags: 0, mode };
        self.invoke(client, node, key, kind, ReadMode::Quorum, req);
    }
}

/// Whether a 500's reason promises the write was not carried out: the server never found a
/// leader to take it, or the leader refused or lost it before it could commit.
fn surely_not_applied(reason: &str) -> bool {
    reason == "No cluster leader"
        || reason.ends_with("it was not applied")
        || reason.starts_with("not the leader")
}

impl World for Nodes {
    type Local = Local;

    fn env(&mut self) -> &mut Env<Local> {
        &mut self.env
    }

    fn is_up(&self, node: usize) -> bool {
        self.servers[node].node.is_some()
    }

    /// The live server that announced the highest term and has not moved past it: a node
    /// tells no one when it steps down, so this may name a deposed leader (fault aim only).
    fn leader(&self) -> Option<usize> {
        let leading = self.servers.iter().enumerate().filter_map(|(i, s)| {
            let term = s.led?;
            let current = s.log.hard_state.as_ref().map(|h| h.0);
            (s.node.is_some() && current == Some(term)).then_some((term, i))
        });
        leading.max().map(|(_, i)| i)
    }

    fn deliver(&mut self, from: usize, to: usize, wire: &[u8]) -> Result<(), String> {
        let (&kind, bytes) = wire.split_first().expect("every message has its kind byte");
        if kind != WIRE_PEER {
            let pool = if kind >= 3 { Pool::Wan } else { Pool::Lan };
            let port = if pool == Pool::Wan { 8302 } else { 8301 };
            let input = Input::Gossip {
                pool,
                from: format!("10.0.0.{}:{port}", from + 1),
                bytes: bytes.to_vec(),
                stream: kind % 2 == 0,
            };
            return self.step(to, input);
        }
        let Ok(msg) = postcard::from_bytes::<PeerMessage>(bytes) else {
            return self.env.fail("a message did not decode".into());
        };
        self.env.note(|_| match &msg {
            PeerMessage::Raft(m) => format!("n{from} -> n{to}: {}", summary(m)),
            other => format!("n{from} -> n{to}: {other:?}"),
        });
        let from = self.servers[from].id.clone();
        self.step(to, Input::Peer { from, msg })
    }

    fn tick(&mut self, node: usize) -> Result<(), String> {
        self.step(node, Input::Tick)
    }

    fn persisted(&mut self, node: usize, token: PersistToken) -> Result<(), String> {
        self.step(node, Input::Persisted { token })
    }

    fn request(&mut self, node: usize, op: usize) -> Result<(), String> {
        let req = self.requests.remove(&op).expect("each op is sent once");
        if self.servers[node].node.is_none() {
            // The connection was refused: nobody heard it.
            self.env.finish(op, Outcome::Fail, None);
            return Ok(());
        }
        self.servers[node].inflight.insert(op);
        self.step(node, Input::Request { id: ReqId(op as u64), req })
    }

    fn client_op(&mut self, client: usize) {
        if !self.env.safety_phase() {
            return;
        }
        let env = &mut self.env;
        let key = KEYS[env.below(env.profile.keys) as usize];
        let node = env.below(self.servers.len() as u64) as usize;
        match env.below(100) {
            0..=29 => self.write(client, node, key, None),
            30..=41 => {
                let cas = self.cas_expectation(key);
                self.write(client, node, key, Some(cas));
            }
            42..=47 => {
                let req = ApiRequest::KvDelete { key: key.into(), recurse: false, cas: None };
                self.invoke(client, node, key, OpKind::Delete, ReadMode::Quorum, req);
            }
            pick => {
                let (consistency, read) = match pick % 3 {
                    0 => (Consistency::Default, ReadMode::Lease),
                    1 => (Consistency::Consistent, ReadMode::Quorum),
                    _ => (Consistency::Stale, ReadMode::Stale),
                };
                let q = QueryOpts { consistency, ..QueryOpts::default() };
                let req = ApiRequest::KvGet { key: key.into(), read: KvRead::Entry { raw: true }, q };
                self.invoke(client, node, key, OpKind::Read(None), read, req);
            }
        }
    }

    fn local(&mut self, node: usize, event: Local) -> Result<(), String> {
        match event {
            Local::Undelivered { life, to, bytes } => {
                if life != self.env.machines[node].life {
                    return Ok(());
                }
                let Ok(msg) = postcard::from_bytes::<PeerMessage>(&bytes) else {
                    return self.env.fail("a message did not decode".into());
                };
                self.env.mix(&[11, node as u64, to as u64]);
                self.env.note(|_| format!("n{node}: undelivered to n{to}: {msg:?}"));
                let to = self.servers[to].id.clone();
                self.step(node, Input::Undelivered { to, msg })
            }
            Local::Unreachable { life, pool, to, tag } => {
                if life != self.env.machines[node].life {
                    return Ok(());
                }
                self.env.note(|_| format!("n{node}: gossip stream to {to} refused"));
                self.step(node, Input::GossipUnreachable { pool, to, tag })
            }
        }
    }

    fn kill(&mut self, node: usize) {
        let s = &mut self.servers[node];
        s.node = None;
        s.led = None;
        for op in std::mem::take(&mut s.inflight) {
            let outcome = if self.env.ops[op].kind.is_write() { Outcome::Info } else { Outcome::Dropped };
            self.env.finish(op, outcome, None);
        }
    }

    fn revive(&mut self, node: usize, seed: [u8; 32], disk: Recovered) -> Result<(), String> {
        let ids: Vec<String> = self.servers.iter().map(|s| s.id.clone()).collect();
        let n = match Node::recover(config(node, &ids, &self.env.profile), seed, disk.clone()) {
            Ok(n) => n,
            Err(e) => return self.env.fail(format!("n{node} cannot recover: {e}")),
        };
        let s = &mut self.servers[node];
        s.node = Some(n);
        s.log = disk;
        s.checked = Index::ZERO;
        self.check_state(node, "recovered snapshot")
    }

    /// After the heal: a write through every server succeeds (retried while it fails),
    /// every op is answered and every server applies every committed entry; then
    /// durability. All within 10 election timeouts plus two hold timeouts.
    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String> {
        let mut writes_ok = true;
        for s in 0..self.servers.len() {
            match self.live[s].map(|op| self.env.ops[op].outcome) {
                Some(Outcome::Ok) => {}
                Some(Outcome::Pending) => writes_ok = false,
                _ => {
                    writes_ok = false;
                    let client = self.env.profile.clients + s;
                    self.write(client, s, KEYS[s % KEYS.len()], None);
                    self.live[s] = Some(self.env.ops.len() - 1);
                }
            }
        }
        let applied: Vec<u64> = self
            .servers
            .iter()
            .map(|s| s.node.as_ref().expect("all restarted").state().applied().0)
            .collect();
        let converged = applied.iter().all(|a| *a == self.env.stats.max_commit);
        let ops_done = self.env.ops.iter().all(|o| o.outcome != Outcome::Pending);
        let settled = self.gossip_settled();
        if writes_ok && converged && ops_done && settled {
            return Ok(Some(self.env.check_durability(Index(self.env.stats.max_commit))));
        }
        let since = self.env.since_liveness();
        if writes_ok && converged && ops_done && since > 10 * ELECTION + 2 * HOLD + GOSSIP_SETTLE {
            let views: Vec<_> = self
                .servers
                .iter()
                .map(|s| {
                    s.node.as_ref().map(|n| {
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
            return self.env.fail(format!(
                "gossip: {} after the heal, members or serfHealth still disagree: {views:?}",
                fmt_duration(since)
            ));
        }
        if !(writes_ok && converged && ops_done) && since > 10 * ELECTION + 2 * HOLD {
            let failing: Vec<usize> = (0..self.servers.len())
                .filter(|s| self.live[*s].is_none_or(|op| self.env.ops[op].outcome != Outcome::Ok))
                .collect();
            return self.env.fail(format!(
                "liveness: {} after the heal, writes through {failing:?} have not succeeded; applied {applied:?} of {}",
                fmt_duration(since),
                self.env.stats.max_commit
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_seeds_hold_every_invariant() {
        let total = crate::chaos::check_seeds("nodes", seeds_per_test(), run_nodes_seed);
        if seeds_per_test() >= 10 {
            assert!(total.snapshots_installed > 0, "no follower ever needed a snapshot: {total:?}");
        }
    }

    #[test]
    fn a_seed_replays_to_the_same_trace() {
        let a = run_nodes_seed(3);
        let (b, lines) = run_nodes_traced(3);
        assert_eq!(a, b, "tracing changes nothing");
        let has = |what: &str| lines.iter().any(|l| l.contains(what));
        assert!(has("Forward") && has("ReadBarrier"), "followers forward writes and ask for barriers");
        assert_ne!(a.trace_hash, run_nodes_seed(4).trace_hash);
    }
}
