//! `Node`: one muster agent as a single deterministic state machine.
//!
//! Owns the routing of inputs to the subsystems (log, state machine, agent, check scheduler,
//! blocking reads, DNS) and the one timer a host arms. Answers writes once their log entries
//! are applied, parks blocking reads until what they watch changes, and keeps the catalog in
//! step with the agent's local state. Never performs IO: everything leaves as an `Effect`.

mod consensus;
mod coordinates;
mod membership;
mod remote;

use std::collections::{BTreeMap, BTreeSet};

use crate::agent::{
    Agent, NodeInfo, SavedDefs, CONSUL_SERVICE, NODE_MAINTENANCE, SERF_HEALTH, SERVICE_MAINTENANCE_PREFIX,
};
use crate::api::defs::{
    BuiltCheck, CatalogDeregisterDef, CatalogRegisterDef, CheckContext, CheckDef, DefError, ServiceDef,
};
use crate::api::dns::{self, DnsConfig};
use crate::api::shapes::{AgentSelf, AgentSelfConfig, AgentService, Member, Reply, Xds};
use crate::api::{ApiError, ApiRequest, ApiResponse, Body};
use crate::checks::Scheduler;
use crate::fsm::catalog::{Deregistration, Health, HealthCheck, NodeService, Registration, Weights};
use crate::fsm::{fnv1a, Command, State};
use crate::ids::{Index, ReqId};
use crate::io::{Effect, Event, Input, Pool, Recovered};
use crate::raft::{RaftInput, Replica, ReplicaConfig};
use crate::rng::{Rng, Stream};
use crate::rpc::Work;
use crate::server::{self, Parked};
use crate::time::{Duration, Time};
use consensus::{Cluster, Waiter};
use coordinates::CoordinateSync;
pub use membership::GossipSetup;
use membership::Membership;
use remote::Remote;

/// How soon anti-entropy tries again after a sync could not be written.
const SYNC_RETRY: Duration = Duration::from_secs(2);

/// The Consul release whose HTTP API muster speaks; clients branch on `Config.Version`.
pub const CONSUL_API_VERSION: &str = "1.22.0";

/// Ports this agent listens on, as advertised to clients (-1: disabled).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ports {
    pub http: i32,
    pub dns: i32,
    pub grpc: i32,
    pub server: u16,
    pub serf_lan: u16,
    pub serf_wan: u16,
}

/// Everything a node is told at birth.
#[derive(Clone, Debug)]
pub struct Config {
    pub node: NodeInfo,
    pub server: bool,
    pub bootstrap: bool,
    pub primary_datacenter: String,
    pub ports: Ports,
    pub dns: DnsConfig,
    pub enable_script_checks: bool,
    pub enable_local_script_checks: bool,
    pub check_output_max: usize,
    pub check_update_interval: Duration,
    pub default_query_time: Duration,
    pub max_query_time: Duration,
    /// Full anti-entropy sync period (Consul's 1 minute).
    pub ae_interval: Duration,
    /// The least time between two coordinate updates (15 s), and the updates a second the
    /// servers should see from the whole datacenter (64), which slows large clusters.
    pub coordinate_sync_min: Duration,
    pub coordinate_rate_target: f64,
    /// Unix seconds at host time zero, for the DNS SOA serial.
    pub unix_secs_at_zero: u64,
    pub muster_version: String,
    /// Sanitized runtime configuration shown in `agent/self` `DebugConfig`.
    pub debug_config: BTreeMap<String, String>,
    /// Host facts for `Stats.runtime` (arch, os, cpu count).
    pub host_stats: BTreeMap<String, String>,
    /// Write a state-machine snapshot after this many applied entries, so the durable log
    /// can be compacted.
    pub snapshot_threshold: u64,
    /// Log entries kept below a snapshot, so a follower a little behind catches up from the
    /// log rather than by a whole snapshot (Consul's `raft_trailing_logs`).
    pub raft_trailing_logs: u64,
    /// Followers campaign after hearing nothing from a leader for a random time in
    /// [T, 2T); leaders send heartbeats every `raft_heartbeat`.
    pub raft_election_timeout: Duration,
    pub raft_heartbeat: Duration,
    /// `-bootstrap-expect`: form a cluster once this many servers know each other (0: off).
    pub bootstrap_expect: u32,
    /// Servers (`host:port` of their server port) to say hello to without gossip: the
    /// simulator's worlds use this; agents find servers through gossip tags instead.
    pub retry_join: Vec<String>,
    /// Gossip pools; `None` runs without gossip (the simulator's Raft worlds).
    pub gossip: Option<GossipSetup>,
    /// How long a request waits for a leader (Consul's `rpc_hold_timeout`).
    pub rpc_hold_timeout: Duration,
    /// How many calls a second this agent may send to servers (`limits.rpc_rate`; `None`:
    /// no limit, Consul's default), and how many at once after a quiet spell
    /// (`limits.rpc_max_burst`). Past it a request answers 429 instead of queueing.
    pub rpc_rate: Option<f64>,
    pub rpc_max_burst: u64,
    /// Services and checks from config files.
    pub services: Vec<ServiceDef>,
    pub checks: Vec<CheckDef>,
    /// Services and checks registered through the API before a restart (from the data dir).
    pub restored: SavedDefs,
}

impl Config {
    /// A bootstrapping server named by `node`, with Consul's defaults for everything else.
    pub fn defaults(node: NodeInfo) -> Config {
        Config {
            primary_datacenter: node.datacenter.clone(),
            node,
            server: true,
            bootstrap: true,
            ports: Ports { http: 8500, dns: 8600, grpc: -1, server: 8300, serf_lan: 8301, serf_wan: 8302 },
            dns: DnsConfig::default(),
            enable_script_checks: false,
            enable_local_script_checks: false,
            check_output_max: 4096,
            check_update_interval: Duration::from_secs(300),
            default_query_time: Duration::from_secs(300),
            max_query_time: Duration::from_secs(600),
            ae_interval: Duration::from_secs(60),
            coordinate_sync_min: Duration::from_secs(15),
            coordinate_rate_target: 64.0,
            unix_secs_at_zero: 0,
            muster_version: String::new(),
            debug_config: BTreeMap::new(),
            host_stats: BTreeMap::new(),
            snapshot_threshold: 8192,
            raft_trailing_logs: 10_240,
            raft_election_timeout: Duration::from_secs(1),
            raft_heartbeat: Duration::from_millis(150),
            bootstrap_expect: 0,
            retry_join: vec![],
            gossip: None,
            rpc_hold_timeout: Duration::from_secs(7),
            rpc_rate: None,
            rpc_max_burst: 1000,
            services: vec![],
            checks: vec![],
            restored: SavedDefs::default(),
        }
    }
}

/// Why a node refused its configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid service definition \"{name}\": {err}")]
    Service { name: String, err: DefError },
    #[error("invalid check definition \"{name}\": {err}")]
    Check { name: String, err: DefError },
    #[error("the recovered snapshot does not decode: {0}")]
    Snapshot(String),
    #[error("the recovered log is unusable: {0}")]
    Log(#[from] crate::raft::RecoverError),
    #[error("invalid Raft timing: {0}")]
    Timing(#[from] crate::raft::ConfigError),
}

/// A config-file registration: a service with its checks, or a lone node check.
type Startup = (Option<NodeService>, Vec<BuiltCheck>);

pub struct Node {
    cfg: Config,
    /// This server's Raft id: its advertised server address, `host:port`.
    id: String,
    raft: Replica,
    cluster: Cluster,
    state: State,
    agent: Agent,
    scheduler: Scheduler,
    /// Config-file registrations, validated at construction, registered at the first step.
    startup: Vec<Startup>,
    parked: Vec<Parked>,
    /// One agent sync at a time: until it is applied the catalog cannot show it, and a
    /// second sync would send the same commands again.
    syncing: bool,
    /// Agent endpoints that answer once the next sync is applied.
    sync_waiters: Vec<ReqId>,
    blocking_rng: Rng,
    dns_rng: Rng,
    ae_rng: Rng,
    next_full_sync: Time,
    armed: Option<Time>,
    /// Index of the last snapshot handed to the host.
    snapshot_index: Index,
    /// Applied entries after `snapshot_index` that make the next snapshot due: the
    /// threshold plus up to half again, drawn afresh each time, so servers fed the same log
    /// do not all snapshot (and write) at once.
    snapshot_gap: u64,
    snapshot_rng: Rng,
    now: Time,
    started: bool,
    failed: Option<String>,
    membership: Option<Membership>,
    /// Calls to servers (a client's requests, a server's to other datacenters) and calls
    /// served for other agents.
    remote: Remote,
    /// What the API registered, for the host to keep; `saved_dirty` when it changed.
    saved: SavedDefs,
    saved_dirty: bool,
    /// IDs of the services and standalone checks the config files registered, which a
    /// reload replaces.
    config_services: BTreeSet<String>,
    config_checks: BTreeSet<String>,
    coord_sync: CoordinateSync,
    /// The most polled reads, rendered once per change.
    rendered: server::Rendered,
}

impl Node {
    /// Builds a node, refusing invalid config-file services and checks.
    pub fn new(cfg: Config, seed: [u8; 32]) -> Result<Node, ConfigError> {
        Node::recover(cfg, seed, Recovered::default())
    }

    /// Rebuilds a node from what its host read back from disk: the state from the snapshot;
    /// the logged entries after it apply again as they commit.
    pub fn recover(cfg: Config, seed: [u8; 32], disk: Recovered) -> Result<Node, ConfigError> {
        let startup = validate_definitions(&cfg)?;
        let id = format!("{}:{}", cfg.node.address, cfg.ports.server);
        let rcfg = ReplicaConfig {
            election_timeout: cfg.raft_election_timeout,
            heartbeat_interval: cfg.raft_heartbeat,
            max_clock_drift: cfg.raft_election_timeout / 10,
            snapshot_trailing: cfg.raft_trailing_logs,
            ..ReplicaConfig::new(id.clone(), vec![])
        };
        rcfg.validate()?;
        let raft = Replica::recover(rcfg, seed, disk)?;
        let mut state = State::default();
        let mut snapshot_index = Index::ZERO;
        if let Some((index, data)) = raft.snapshot_state() {
            state = postcard::from_bytes(&data).map_err(|e| ConfigError::Snapshot(e.to_string()))?;
            if state.applied() != index {
                let held = state.applied();
                return Err(ConfigError::Snapshot(format!("it holds index {held:?}, not {index:?}")));
            }
            snapshot_index = index;
        }
        let mut snapshot_rng = Rng::new(seed, Stream::Snapshots);
        let membership = cfg.gossip.clone().map(|setup| {
            let lan = Node::gossip_identity(&cfg, lan_tags(&cfg), false);
            let wan = cfg.server.then(|| Node::gossip_identity(&cfg, wan_tags(&cfg), true));
            Membership::new(setup, lan, wan, seed)
        });
        Ok(Node {
            membership,
            // Consul limits only client agents' calls; a server's own (to other datacenters) are not.
            remote: Remote::new(
                Rng::new(seed, Stream::Servers),
                cfg.rpc_rate.filter(|_| !cfg.server),
                cfg.rpc_max_burst,
            ),
            saved: SavedDefs::default(),
            saved_dirty: false,
            config_services: BTreeSet::new(),
            config_checks: BTreeSet::new(),
            coord_sync: CoordinateSync::default(),
            rendered: server::Rendered::default(),
            id,
            raft,
            cluster: Cluster::new(Rng::new(seed, Stream::Ids)),
            state,
            agent: Agent::new(cfg.node.clone(), cfg.check_update_interval),
            scheduler: Scheduler::new(Rng::new(seed, Stream::Checks)),
            startup,
            parked: Vec::new(),
            syncing: false,
            sync_waiters: Vec::new(),
            blocking_rng: Rng::new(seed, Stream::Blocking),
            dns_rng: Rng::new(seed, Stream::Dns),
            ae_rng: Rng::new(seed, Stream::AntiEntropy),
            next_full_sync: Time::ZERO,
            armed: None,
            snapshot_index,
            snapshot_gap: next_snapshot_gap(cfg.snapshot_threshold, &mut snapshot_rng),
            snapshot_rng,
            now: Time::ZERO,
            started: false,
            failed: None,
            cfg,
        })
    }

    /// Read-only view for tests and checkers; never feeds behaviour.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The agent's local services and checks (read-only, for tests and checkers).
    pub fn local(&self) -> &Agent {
        &self.agent
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Feeds one input that happened at `now`; effects are appended to `out` in order.
    pub fn step(&mut self, now: Time, input: Input, out: &mut Vec<Effect>) {
        assert!(now >= self.now, "time went backwards: {now} after {}", self.now);
        self.now = now;
        let start = out.len();
        self.step_input(now, input, out);
        self.answer_served(start, out);
        if std::mem::take(&mut self.saved_dirty) {
            out.push(Effect::SaveAgentState { defs: self.saved.clone() });
        }
    }

    fn step_input(&mut self, now: Time, input: Input, out: &mut Vec<Effect>) {
        if let Some(reason) = &self.failed {
            if let Input::Request { id, .. } = input {
                out.push(Effect::Respond {
                    id,
                    resp: ApiResponse::error(500, format!("agent stopped: {reason}")),
                });
            }
            return;
        }
        if !self.started {
            self.start(now, out);
        }
        match input {
            Input::Tick => {}
            Input::Request { id, req } => self.request(now, id, req, out),
            Input::CheckResult { check, run, status, output } => {
                if let Some(v) = self.scheduler.on_result(&check, run, status, output, now) {
                    self.publish(&v.check, v.status, &v.output, now, out);
                }
            }
            Input::Persisted { token } => self.drive(RaftInput::Persisted { token }, out),
            Input::Peer { from, msg } => self.on_peer(from, msg, out),
            Input::Undelivered { to, msg } => self.undelivered(&to, msg, out),
            Input::Gossip { pool, from, bytes, stream } => self.on_gossip(pool, from, &bytes, stream, out),
            Input::GossipUnreachable { pool, to, tag } => self.on_gossip_unreachable(pool, to, tag, out),
            Input::PersistFailed { token } => {
                let reason = format!("persist {} failed; refusing to continue without durability", token.0);
                out.push(Effect::Emit(Event::Failed { reason: reason.clone() }));
                self.failed = Some(reason);
                return;
            }
            Input::Shutdown => {
                out.push(Effect::Emit(Event::Stopped));
                return;
            }
        }
        // Raft's timer runs on whatever input comes first once it is due: under a stream
        // of requests the host's own wakeup may come later, and a heartbeat must not.
        if self.cluster.raft_timer.is_some_and(|t| t <= now) {
            self.drive(RaftInput::Tick, out);
        }
        self.settle(out);
        self.poll(now, out);
        self.sync(now, false, out);
        self.settle(out);
        self.arm(out);
    }

    /// First step: bootstrap a lone server (`-dev`, `-bootstrap`; ignored once a log
    /// exists), write this node's own catalog entry (what the leader's membership reconcile
    /// does), and start the config-file registrations.
    fn start(&mut self, now: Time, out: &mut Vec<Effect>) {
        self.started = true;
        if !self.cfg.server {
            // A client holds no Raft; the leader writes its node when gossip shows it alive.
        } else if self.cfg.bootstrap {
            self.drive(RaftInput::Bootstrap { voters: vec![self.id.clone()] }, out);
        } else {
            self.drive(RaftInput::Tick, out);
        }
        if self.cfg.server {
            let reconcile = self.reconcile_self();
            self.submit(Work::Commands(vec![reconcile]), None, out);
        }
        for (svc, checks) in std::mem::take(&mut self.startup) {
            self.add_startup(svc, checks, now, out);
        }
        self.restore(now, out);
        self.next_full_sync = now + self.cfg.ae_interval;
    }

    /// A config-file registration: a service with its checks, or a standalone check.
    fn add_startup(
        &mut self,
        svc: Option<NodeService>,
        checks: Vec<BuiltCheck>,
        now: Time,
        out: &mut Vec<Effect>,
    ) {
        match svc {
            Some(svc) => {
                let keep: Vec<&str> = checks.iter().map(|b| b.row.check_id.as_str()).collect();
                self.drop_checks_of(&svc.id, &keep, out);
                self.config_services.insert(svc.id.clone());
                self.agent.add_service(svc);
            }
            None => self.config_checks.extend(checks.iter().map(|b| b.row.check_id.clone())),
        }
        for b in checks {
            self.add_check(b, now, out);
        }
    }

    /// Registers again what the API had registered before the restart.
    fn restore(&mut self, now: Time, out: &mut Vec<Effect>) {
        let restored = std::mem::take(&mut self.cfg.restored);
        for def in restored.services.values() {
            if let Err(e) = self.register_service(&SavedDefs::restored_service(def), true, now, out) {
                tracing::warn!(service = %def.name, error = %e, "a saved service no longer registers; dropped");
            }
        }
        for def in restored.checks.values() {
            if let Err(e) = self.register_check(&SavedDefs::restored_check(def), now, out) {
                tracing::warn!(error = %e.reason, "a saved check no longer registers; dropped");
            }
        }
    }

    /// Re-reads the config files' services and checks: removed ones go, changed ones are
    /// replaced, new ones start. Nothing changes unless every definition is valid.
    fn reload(
        &mut self,
        services: Vec<ServiceDef>,
        checks: Vec<CheckDef>,
        now: Time,
        out: &mut Vec<Effect>,
    ) -> Result<(), ConfigError> {
        let fresh = validate(&self.cfg, &services, &checks)?;
        let new_services: BTreeSet<String> =
            fresh.iter().filter_map(|(s, _)| s.as_ref().map(|s| s.id.clone())).collect();
        let new_checks: BTreeSet<String> = fresh
            .iter()
            .filter(|(s, _)| s.is_none())
            .flat_map(|(_, c)| c.iter().map(|b| b.row.check_id.clone()))
            .collect();
        for gone in self.config_services.difference(&new_services).cloned().collect::<Vec<_>>() {
            if !self.saved.services.contains_key(&gone) {
                for c in self.agent.remove_service(&gone) {
                    self.scheduler.remove(&c, out);
                }
            }
        }
        for gone in self.config_checks.difference(&new_checks).cloned().collect::<Vec<_>>() {
            if !self.saved.checks.contains_key(&gone) && self.agent.remove_check(&gone) {
                self.scheduler.remove(&gone, out);
            }
        }
        self.config_services.clear();
        self.config_checks.clear();
        for (svc, built) in fresh {
            self.add_startup(svc, built, now, out);
        }
        self.cfg.services = services;
        self.cfg.checks = checks;
        Ok(())
    }

    /// Removes a service's checks that are not among `keep` (a re-registration replaces them).
    fn drop_checks_of(&mut self, service_id: &str, keep: &[&str], out: &mut Vec<Effect>) {
        let stale: Vec<String> = self
            .agent
            .checks()
            .filter(|c| c.service_id == service_id && !keep.contains(&c.check_id.as_str()))
            .map(|c| c.check_id.clone())
            .collect();
        for c in stale {
            self.agent.remove_check(&c);
            self.scheduler.remove(&c, out);
        }
    }

    /// The leader's record of a live member: the node, its `serfHealth`, and for servers
    /// the `consul` service.
    fn reconcile_self(&self) -> Command {
        let info = &self.cfg.node;
        let serf = HealthCheck {
            output: "Agent alive and reachable".into(),
            ..HealthCheck::new(&info.name, SERF_HEALTH, "Serf Health Status", Health::Passing)
        };
        let service = self.cfg.server.then(|| NodeService {
            kind: String::new(),
            id: CONSUL_SERVICE.into(),
            service: CONSUL_SERVICE.into(),
            tags: vec![],
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::from([
                ("non_voter".into(), "false".into()),
                ("raft_version".into(), "3".into()),
                ("read_replica".into(), "false".into()),
                ("serf_protocol_current".into(), "2".into()),
                ("serf_protocol_max".into(), "5".into()),
                ("serf_protocol_min".into(), "1".into()),
                ("version".into(), CONSUL_API_VERSION.into()),
            ]),
            port: self.cfg.ports.server,
            weights: Weights::default(),
            enable_tag_override: false,
            create_index: 0,
            modify_index: 0,
        });
        Command::Register(Box::new(Registration {
            node: info.row(),
            skip_node_update: false,
            service,
            checks: vec![serf],
        }))
    }

    /// Runs due timers: check runs and TTL expiries, reaping, blocking-read deadlines.
    fn poll(&mut self, now: Time, out: &mut Vec<Effect>) {
        for v in self.scheduler.poll(now, out) {
            self.publish(&v.check, v.status, &v.output, now, out);
        }
        for sid in self.agent.services_to_reap(now) {
            for c in self.agent.remove_service(&sid) {
                self.scheduler.remove(&c, out);
            }
            self.saved_dirty |= self.saved.remove_service(&sid);
            out.push(Effect::Emit(Event::ServiceDeregistered {
                service_id: sid,
                reason: "a check stayed critical past DeregisterCriticalServiceAfter".into(),
            }));
        }
        let (expired, waiting): (Vec<Parked>, Vec<Parked>) =
            std::mem::take(&mut self.parked).into_iter().partition(|p| p.deadline <= now);
        self.parked = waiting;
        for p in expired {
            if let Some(r) = self.rendered.read(&self.state, &p.req) {
                let q = server::query_opts(&p.req).unwrap_or_default();
                out.push(Effect::Respond { id: p.id, resp: server::finish(r, &q, self.contact()) });
            }
        }
        self.poll_cluster(now, out);
        self.poll_membership(now, out);
        self.poll_remote(now, out);
        self.poll_coordinate(now, out);
        if now >= self.next_full_sync {
            if self.sync(now, true, out) {
                let members = self.membership.as_ref().map_or(1, |m| m.lan_size());
                let period = crate::agent::ae_scale(self.cfg.ae_interval, members);
                let jitter = self.ae_rng.below(period.as_nanos() as u64);
                self.next_full_sync = now + period + Duration::from_nanos(jitter);
            } else {
                // A sync is still on its way; compare once it has landed.
                self.next_full_sync = now + Duration::from_secs(1);
            }
        }
    }

    /// Submits what the agent's local state needs the catalog to learn, unless a sync is
    /// still on its way (so a full sync compares against a catalog that has caught up);
    /// agent endpoints waiting for it are answered once it is applied. Returns whether it ran.
    fn sync(&mut self, now: Time, full: bool, out: &mut Vec<Effect>) -> bool {
        if self.syncing {
            return false;
        }
        if !self.cfg.server && !self.knows_servers() {
            // The change stands locally and reaches the catalog once a server is known.
            let waiters = std::mem::take(&mut self.sync_waiters);
            out.extend(waiters.into_iter().map(|id| Effect::Respond { id, resp: ApiResponse::empty() }));
            return false;
        }
        if !self.cfg.server && full {
            // A client compares against the catalog's current rows for its node.
            self.fetch_view(out);
            return true;
        }
        self.push_sync(now, full, out);
        true
    }

    /// Sends what the catalog (or, on a client, its copy of its node's rows) lacks.
    fn push_sync(&mut self, now: Time, full: bool, out: &mut Vec<Effect>) {
        let cmds = self.agent.sync(&self.state.catalog, full, now);
        let waiters = std::mem::take(&mut self.sync_waiters);
        if cmds.is_empty() {
            out.extend(waiters.into_iter().map(|id| Effect::Respond { id, resp: ApiResponse::empty() }));
            return;
        }
        if !self.cfg.server {
            self.note_sent(&cmds);
        }
        self.syncing = true;
        self.submit(Work::Commands(cmds), Some(Waiter::Synced(waiters)), out);
    }

    /// Asks for one wakeup at the earliest deadline, if it changed.
    fn arm(&mut self, out: &mut Vec<Effect>) {
        let next = [
            self.scheduler.next_deadline(),
            self.agent.next_deadline(),
            self.parked.iter().map(|p| p.deadline).min(),
            Some(self.next_full_sync),
            self.remote.next_deadline(),
            self.next_coordinate_sync(),
            self.cluster.next_deadline(self.raft.leader().is_some(), self.says_hello()),
            self.membership.as_ref().map(|m| m.next_deadline()),
            self.membership.as_ref().filter(|_| self.is_leader()).map(|m| m.next_reconcile()),
        ]
        .into_iter()
        .flatten()
        // Whatever was due has run in this step; a deadline left behind must not spin the host.
        .filter(|t| *t > self.now)
        .min();
        // The host forgets a timer once it fires, so a due one is re-armed even if unchanged.
        if self.armed.is_some_and(|a| a <= self.now) {
            self.armed = None;
        }
        if let Some(at) = next.filter(|t| Some(*t) != self.armed) {
            self.armed = Some(at);
            out.push(Effect::SetTimer { at });
        }
    }

    fn publish(&mut self, check: &str, status: Health, output: &str, now: Time, out: &mut Vec<Effect>) {
        let before = self.agent.check(check).map(|c| c.status);
        if self.agent.set_check(check, status, output, now) && before != Some(status) {
            out.push(Effect::Emit(Event::CheckChanged { check: check.to_string(), status }));
        }
    }

    fn add_check(&mut self, b: BuiltCheck, now: Time, out: &mut Vec<Effect>) {
        let mut row = b.row;
        // Re-registering a check keeps its last result rather than flapping back to critical.
        if let Some(prev) = self.agent.check(&row.check_id) {
            if prev.kind == row.kind {
                row.status = prev.status;
                row.output = prev.output.clone();
            }
        }
        self.scheduler.add(&row.check_id, b.kind, b.thresholds, now, out);
        self.agent.add_check(row, b.deregister_after, now);
    }

    fn respond(&self, id: ReqId, resp: ApiResponse, out: &mut Vec<Effect>) {
        out.push(Effect::Respond { id, resp });
    }

    /// Answers once the sync of an agent change is applied (at once when nothing changed).
    fn respond_after_sync(&mut self, id: ReqId, now: Time, out: &mut Vec<Effect>) {
        self.sync_waiters.push(id);
        self.sync(now, false, out);
    }

    fn propose_write(&mut self, id: ReqId, cmd: Command, out: &mut Vec<Effect>) {
        self.submit(Work::Commands(vec![cmd]), Some(Waiter::Outcome(id)), out);
    }

    /// Runs a state-store read, parking it when it blocks and nothing newer exists.
    /// `deadline` is set when a parked read is re-run.
    fn read(&mut self, id: ReqId, req: ApiRequest, deadline: Option<Time>, out: &mut Vec<Effect>) {
        let q = server::query_opts(&req).unwrap_or_default();
        let Some(r) = self.rendered.read(&self.state, &req) else {
            return;
        };
        if q.min_index == Index::ZERO || r.index > q.min_index {
            self.respond(id, server::finish(r, &q, self.contact()), out);
            return;
        }
        let deadline = deadline.unwrap_or_else(|| {
            let wait = q
                .wait
                .filter(|w| !w.is_zero())
                .unwrap_or(self.cfg.default_query_time)
                .min(self.cfg.max_query_time);
            // Jitter spreads the wakeups of many watchers that started together.
            let jitter = self.blocking_rng.below(wait.as_nanos() as u64 / 16);
            self.now + wait + Duration::from_nanos(jitter)
        });
        self.parked.push(Parked { id, req, deadline, watch: r.watch });
    }

    fn request(&mut self, now: Time, id: ReqId, mut req: ApiRequest, out: &mut Vec<Effect>) {
        self.resolve_near(&mut req);
        if !self.cfg.server && req.needs_server() {
            return self.call_request(id, None, req, out);
        }
        if let Some(dc) = self.foreign_datacenter(&req) {
            let req = match req {
                ApiRequest::InDatacenter { req, .. } => *req,
                other => other,
            };
            return self.call_request(id, Some(dc), req, out);
        }
        if let ApiRequest::InDatacenter { req, .. } = req {
            return self.request(now, id, *req, out);
        }
        if let Some(q) = server::query_opts(&req) {
            if let ApiRequest::KvGet { key, read: crate::api::KvRead::Entry { .. }, .. } = &req {
                if key.is_empty() {
                    return self.respond(id, ApiResponse::error(400, "Missing key name"), out);
                }
            }
            if q.consistency == crate::api::Consistency::Stale {
                return self.read(id, req, None, out);
            }
            return self.linearizable_read(id, req, out);
        }
        match req {
            ApiRequest::KvPut { key, value, flags, mode } => match validate_key(&key) {
                Err(e) => self.respond(id, e.into(), out),
                Ok(()) => self.propose_write(id, Command::KvSet { key, value, flags, mode }, out),
            },
            ApiRequest::KvDelete { key, recurse, cas } => {
                if key.is_empty() && !recurse {
                    return self.respond(id, ApiResponse::error(400, "Missing key name"), out);
                }
                self.propose_write(id, Command::KvDelete { key, recurse, cas }, out);
            }
            ApiRequest::CatalogRegister(def) => match self.registration(*def) {
                Ok(reg) => self.propose_write(id, Command::Register(Box::new(reg)), out),
                Err(e) => self.respond(id, e.into(), out),
            },
            ApiRequest::CatalogDeregister(def) => match deregistration(def) {
                Ok(d) => self.propose_write(id, Command::Deregister(d), out),
                Err(e) => self.respond(id, e.into(), out),
            },
            ApiRequest::CatalogDatacenters => {
                self.respond(id, ApiResponse::json(Reply::Strings(self.datacenters())), out)
            }
            ApiRequest::StatusLeader => {
                let leader = self.raft.leader().unwrap_or_default().to_string();
                self.respond(id, ApiResponse::json(Reply::Str(leader)), out)
            }
            ApiRequest::StatusPeers => {
                let voters = self.raft.membership().voters.iter().cloned().collect();
                self.respond(id, ApiResponse::json(Reply::Strings(voters)), out)
            }
            ApiRequest::OperatorRaftConfiguration => {
                let reply = Reply::RaftConfiguration(self.raft_configuration());
                self.respond(id, ApiResponse::json(reply), out)
            }
            ApiRequest::OperatorRaftRemovePeer { address, id: peer_id } => {
                match self.peer_to_remove(address, peer_id) {
                    Ok(peer) => self.submit(Work::RemovePeer(peer), Some(Waiter::Empty(id)), out),
                    Err(e) => self.respond(id, e.into(), out),
                }
            }
            ApiRequest::AgentSelf => {
                self.respond(id, ApiResponse::json(Reply::AgentSelf(Box::new(self.agent_self()))), out)
            }
            ApiRequest::AgentMembers { wan } => {
                let resp = match self.members_json(wan) {
                    Ok(members) => ApiResponse::json(Reply::Members(members)),
                    Err(e) => ApiResponse::error(500, e),
                };
                self.respond(id, resp, out)
            }
            ApiRequest::AgentJoin { addr, wan } => self.api_join(id, addr, wan, out),
            ApiRequest::AgentLeave => self.api_leave(id, out),
            ApiRequest::AgentForceLeave { node, prune, wan } => {
                self.api_force_leave(id, node, prune, wan, out)
            }
            ApiRequest::EventFire { name, payload, node, service, tag } => {
                self.api_fire(id, name, (payload, node, service, tag), out)
            }
            ApiRequest::EventList { name, q } => self.api_event_list(id, name, q, out),
            ApiRequest::OperatorKeyring { op } => self.api_keyring(id, op, out),
            ApiRequest::AgentServices => {
                let dc = &self.cfg.node.datacenter;
                let map = self.agent.services().map(|s| (s.id.clone(), AgentService::new(s, dc))).collect();
                self.respond(id, ApiResponse::json(Reply::AgentServices(map)), out)
            }
            ApiRequest::AgentService { id: sid } => {
                let resp = match self.agent.service(&sid) {
                    Some(s) => {
                        let mut view = AgentService::new(s, &self.cfg.node.datacenter);
                        view.content_hash = Some(format!("{:016x}", fnv1a(format!("{view:?}").as_bytes())));
                        ApiResponse::json(Reply::AgentService(Box::new(view)))
                    }
                    None => ApiResponse::error(404, format!("unknown service ID: {sid}")),
                };
                self.respond(id, resp, out)
            }
            ApiRequest::AgentChecks => {
                let map = self.agent.checks().map(|c| (c.check_id.clone(), c.clone())).collect();
                self.respond(id, ApiResponse::json(Reply::AgentChecks(map)), out)
            }
            ApiRequest::AgentServiceRegister { def, replace_existing_checks } => {
                match self.register_service(&def, replace_existing_checks, now, out) {
                    Ok(()) => self.respond_after_sync(id, now, out),
                    Err(e) => self.respond(id, ApiResponse::error(400, e.to_string()), out),
                }
            }
            ApiRequest::AgentServiceDeregister { id: sid } => {
                for c in self.agent.remove_service(&sid) {
                    self.scheduler.remove(&c, out);
                }
                self.saved_dirty |= self.saved.remove_service(&sid);
                self.respond_after_sync(id, now, out)
            }
            ApiRequest::AgentCheckRegister { def } => match self.register_check(&def, now, out) {
                Ok(()) => self.respond_after_sync(id, now, out),
                Err(e) => self.respond(id, e.into(), out),
            },
            ApiRequest::AgentCheckDeregister { id: cid } => {
                if !self.agent.remove_check(&cid) {
                    return self.respond(
                        id,
                        ApiResponse::error(404, format!("Unknown check ID \"{cid}\"")),
                        out,
                    );
                }
                self.scheduler.remove(&cid, out);
                self.saved_dirty |= self.saved.checks.remove(&cid).is_some();
                self.respond_after_sync(id, now, out)
            }
            ApiRequest::AgentCheckTtl { id: cid, status, output } => {
                if self.agent.check(&cid).is_none() {
                    let reason = format!(
                        "Unknown check ID \"{cid}\". Ensure that the check ID is passed, not the check name."
                    );
                    return self.respond(id, ApiResponse::error(404, reason), out);
                }
                let output = truncate_output(&output, self.cfg.check_output_max);
                if !self.scheduler.ttl_update(&cid, &output, now) {
                    let reason = format!("CheckID \"{cid}\" does not have associated TTL");
                    return self.respond(id, ApiResponse::error(500, reason), out);
                }
                self.publish(&cid, status, &output, now, out);
                self.respond_after_sync(id, now, out)
            }
            ApiRequest::AgentMaintenance { enable, reason } => {
                let notes = if reason.is_empty() {
                    "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.".into()
                } else {
                    reason
                };
                self.maintenance(NODE_MAINTENANCE, "Node Maintenance Mode", None, enable, notes, now);
                self.respond_after_sync(id, now, out)
            }
            ApiRequest::AgentServiceMaintenance { id: sid, enable, reason } => {
                let Some(svc) = self.agent.service(&sid).cloned() else {
                    return self.respond(
                        id,
                        ApiResponse::error(404, format!("Unknown service ID \"{sid}\"")),
                        out,
                    );
                };
                let notes = if reason.is_empty() {
                    "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.".into()
                } else {
                    reason
                };
                let check_id = format!("{SERVICE_MAINTENANCE_PREFIX}{sid}");
                self.maintenance(&check_id, "Service Maintenance Mode", Some(&svc), enable, notes, now);
                self.respond_after_sync(id, now, out)
            }
            ApiRequest::Dns(q) => {
                let serial = (self.cfg.unix_secs_at_zero + now.as_nanos() / 1_000_000_000) as u32;
                let answer = dns::answer(&q, &self.state.catalog, &self.cfg.dns, serial, &mut self.dns_rng);
                self.respond(id, ApiResponse { status: 200, meta: None, body: Body::Dns(answer) }, out)
            }
            ApiRequest::KvGet { .. }
            | ApiRequest::CatalogNodes { .. }
            | ApiRequest::CatalogServices { .. }
            | ApiRequest::CatalogAllInstances { .. }
            | ApiRequest::CatalogService { .. }
            | ApiRequest::CatalogNode { .. }
            | ApiRequest::HealthNode { .. }
            | ApiRequest::HealthChecks { .. }
            | ApiRequest::HealthService { .. }
            | ApiRequest::HealthState { .. }
            | ApiRequest::CoordinateNodes { .. }
            | ApiRequest::CoordinateNode { .. }
            | ApiRequest::Empty { .. } => unreachable!("reads are routed above"),
            ApiRequest::InDatacenter { .. } => unreachable!("other datacenters are routed above"),
            ApiRequest::CoordinateDatacenters => {
                let reply = Reply::DatacenterCoordinates(self.wan_coordinates());
                self.respond(id, ApiResponse::json(reply), out)
            }
            ApiRequest::CoordinateUpdate(entry) => {
                let usable = entry.coord.is_valid()
                    && entry.coord.vec.len() == crate::coordinate::CoordinateConfig::default().dimensionality;
                if !usable {
                    return self.respond(id, ApiResponse::error(400, "Invalid coordinate"), out);
                }
                self.propose_write(id, Command::Coordinates(vec![*entry]), out)
            }
            ApiRequest::AgentReload { services, checks } => match self.reload(services, checks, now, out) {
                Ok(()) => self.respond_after_sync(id, now, out),
                Err(e) => {
                    self.respond(id, ApiResponse::error(500, format!("Failed reloading services: {e}")), out)
                }
            },
        }
    }

    /// The datacenter a request is for, when it is not this one: `?dc=`, a write body's
    /// `Datacenter`, or a DNS name's datacenter label.
    fn foreign_datacenter(&self, req: &ApiRequest) -> Option<String> {
        let own = &self.cfg.node.datacenter;
        let named = match req {
            ApiRequest::InDatacenter { dc, .. } => Some(dc.clone()),
            ApiRequest::CatalogRegister(def) => def.datacenter.clone(),
            ApiRequest::CatalogDeregister(def) => def.datacenter.clone(),
            ApiRequest::Dns(q) => dns::foreign_datacenter(q, &self.cfg.dns),
            _ => None,
        };
        named.filter(|d| !d.is_empty() && !d.eq_ignore_ascii_case(own))
    }

    fn maintenance(
        &mut self,
        check_id: &str,
        name: &str,
        svc: Option<&NodeService>,
        enable: bool,
        notes: String,
        now: Time,
    ) {
        if !enable {
            self.agent.remove_check(check_id);
            return;
        }
        let row = HealthCheck {
            notes,
            service_id: svc.map(|s| s.id.clone()).unwrap_or_default(),
            service_name: svc.map(|s| s.service.clone()).unwrap_or_default(),
            service_tags: svc.map(|s| s.tags.clone()).unwrap_or_default(),
            kind: "maintenance".into(),
            ..HealthCheck::new(&self.cfg.node.name, check_id, name, Health::Critical)
        };
        self.agent.add_check(row, None, now);
    }

    fn check_context(&self) -> CheckContext<'_> {
        CheckContext {
            node: &self.cfg.node.name,
            scripts_allowed: self.cfg.enable_script_checks,
            output_max: self.cfg.check_output_max,
        }
    }

    fn register_service(
        &mut self,
        def: &ServiceDef,
        replace: bool,
        now: Time,
        out: &mut Vec<Effect>,
    ) -> Result<(), DefError> {
        let svc = def.to_node_service()?;
        let built = def.build_checks(&self.check_context())?;
        if replace {
            let keep: Vec<&str> = built.iter().map(|b| b.row.check_id.as_str()).collect();
            self.drop_checks_of(&svc.id, &keep, out);
        }
        self.saved.services.insert(svc.id.clone(), def.clone());
        self.saved_dirty = true;
        self.agent.add_service(svc);
        for b in built {
            self.add_check(b, now, out);
        }
        Ok(())
    }

    fn register_check(&mut self, def: &CheckDef, now: Time, out: &mut Vec<Effect>) -> Result<(), ApiError> {
        if let Some(sid) = def.service_id.as_deref().filter(|s| !s.is_empty()) {
            if self.agent.service(sid).is_none() {
                return Err(ApiError::new(404, format!("ServiceID \"{sid}\" does not exist")));
            }
        }
        let built = def.build(&self.check_context()).map_err(|e| ApiError::new(400, e.to_string()))?;
        self.saved.checks.insert(built.row.check_id.clone(), def.clone());
        self.saved_dirty = true;
        self.add_check(built, now, out);
        Ok(())
    }

    fn registration(&self, def: CatalogRegisterDef) -> Result<Registration, ApiError> {
        let dc = &self.cfg.node.datacenter;
        if def.datacenter.as_deref().is_some_and(|d| !d.is_empty() && d != dc) {
            return Err(ApiError::new(500, "No path to datacenter"));
        }
        let bad = |e: DefError| ApiError::new(400, e.to_string());
        crate::api::defs::validate_meta(&def.node_meta).map_err(bad)?;
        let service = def.service.as_ref().map(|s| s.to_node_service()).transpose().map_err(bad)?;
        let mut checks = Vec::new();
        for c in &def.checks {
            let status = crate::api::defs::parse_status(c.status.as_deref()).map_err(bad)?;
            let check_id = c.check_id.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| c.name.clone());
            checks.push(HealthCheck {
                notes: c.notes.clone(),
                output: c.output.clone(),
                service_id: c.service_id.clone(),
                definition: c.definition.view(),
                ..HealthCheck::new(&def.node, &check_id, &c.name, status)
            });
        }
        let node = crate::fsm::catalog::Node {
            id: def.id,
            node: def.node,
            address: def.address,
            datacenter: dc.clone(),
            tagged_addresses: def.tagged_addresses,
            meta: def.node_meta,
            create_index: 0,
            modify_index: 0,
        };
        Ok(Registration { node, skip_node_update: def.skip_node_update, service, checks })
    }

    fn member(&self) -> Member {
        let c = &self.cfg;
        let tags = lan_tags(c);
        Member {
            name: c.node.name.clone(),
            addr: c.node.address.clone(),
            port: c.ports.serf_lan,
            tags,
            status: 1,
            protocol_min: 1,
            protocol_max: 5,
            protocol_cur: 2,
            delegate_min: 2,
            delegate_max: 5,
            delegate_cur: 4,
        }
    }

    /// `agent/self`'s `Stats.raft` (servers only).
    fn raft_stats(&self) -> BTreeMap<String, String> {
        let raft = self.raft.debug_state();
        [
            ("applied_index", self.state.applied().0.to_string()),
            ("commit_index", raft.commit.0.to_string()),
            ("last_log_index", raft.last_index.0.to_string()),
            ("last_log_term", raft.last_term.0.to_string()),
            ("last_snapshot_index", raft.snapshot_index.0.to_string()),
            ("num_peers", raft.voters.len().saturating_sub(1).to_string()),
            ("state", format!("{:?}", raft.role)),
            ("term", raft.term.0.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    fn agent_self(&self) -> AgentSelf {
        let c = &self.cfg;
        let s = |pairs: &[(&str, String)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| ((*k).to_string(), v.clone())).collect()
        };
        let leader = self.is_leader();
        let mut stats = BTreeMap::new();
        stats.insert(
            "agent".into(),
            s(&[
                ("check_monitors", self.agent.checks().filter(|x| x.kind == "script").count().to_string()),
                ("check_ttls", self.agent.checks().filter(|x| x.kind == "ttl").count().to_string()),
                ("checks", self.agent.checks().count().to_string()),
                ("services", self.agent.services().count().to_string()),
            ]),
        );
        stats.insert(
            "build".into(),
            s(&[
                ("prerelease", String::new()),
                ("revision", "muster".into()),
                ("version", CONSUL_API_VERSION.into()),
                ("muster_version", c.muster_version.clone()),
            ]),
        );
        let consul = if c.server {
            s(&[
                ("acl", "disabled".into()),
                ("bootstrap", c.bootstrap.to_string()),
                ("known_datacenters", self.datacenters().len().to_string()),
                ("leader", leader.to_string()),
                ("leader_addr", self.raft.leader().unwrap_or_default().to_string()),
                ("server", "true".into()),
            ])
        } else {
            s(&[
                ("acl", "disabled".into()),
                ("known_servers", self.known_servers().to_string()),
                ("server", "false".into()),
            ])
        };
        stats.insert("consul".into(), consul);
        if c.server {
            stats.insert("raft".into(), self.raft_stats());
        }
        stats.insert("runtime".into(), c.host_stats.clone());
        for (name, pool) in [("serf_lan", Pool::Lan), ("serf_wan", Pool::Wan)] {
            if let Some(stats_of_pool) = self.pool_stats(pool) {
                stats.insert(name.into(), stats_of_pool);
            }
        }
        let xds = (c.ports.grpc > 0).then(|| Xds {
            supported_proxies: BTreeMap::new(),
            port: c.ports.grpc,
            ports: BTreeMap::from([("Plaintext".into(), c.ports.grpc), ("TLS".into(), -1)]),
        });
        AgentSelf {
            config: AgentSelfConfig {
                datacenter: c.node.datacenter.clone(),
                primary_datacenter: c.primary_datacenter.clone(),
                node_name: c.node.name.clone(),
                node_id: c.node.id.clone(),
                revision: "muster".into(),
                server: c.server,
                version: CONSUL_API_VERSION.into(),
                muster_version: c.muster_version.clone(),
                build_date: String::new(),
            },
            debug_config: c.debug_config.clone(),
            coord: self.lan_coordinate(),
            member: self.member(),
            stats,
            meta: c.node.meta.clone(),
            xds,
        }
    }
}

/// Entries between two snapshots: `threshold` plus a random part of up to half of it.
fn next_snapshot_gap(threshold: u64, rng: &mut Rng) -> u64 {
    threshold + rng.below(threshold / 2 + 1)
}

fn validate_definitions(cfg: &Config) -> Result<Vec<Startup>, ConfigError> {
    validate(cfg, &cfg.services, &cfg.checks)
}

/// Config-file definitions, built; local script checks are allowed in config files.
fn validate(cfg: &Config, services: &[ServiceDef], checks: &[CheckDef]) -> Result<Vec<Startup>, ConfigError> {
    let scripts = cfg.enable_script_checks || cfg.enable_local_script_checks;
    let ctx =
        CheckContext { node: &cfg.node.name, scripts_allowed: scripts, output_max: cfg.check_output_max };
    let mut out = Vec::new();
    for def in services {
        let err = |err| ConfigError::Service { name: def.name.clone(), err };
        out.push((Some(def.to_node_service().map_err(err)?), def.build_checks(&ctx).map_err(err)?));
    }
    for def in checks {
        let err = |err| ConfigError::Check { name: def.name.clone().unwrap_or_default(), err };
        out.push((None, vec![def.build(&ctx).map_err(err)?]));
    }
    Ok(out)
}

fn deregistration(def: CatalogDeregisterDef) -> Result<Deregistration, ApiError> {
    if def.node.is_empty() {
        return Err(ApiError::new(400, "Missing node name"));
    }
    let nonempty = |s: Option<String>| s.filter(|x| !x.is_empty());
    Ok(Deregistration {
        node: def.node,
        service_id: nonempty(def.service_id),
        check_id: nonempty(def.check_id),
    })
}

/// Keys that could be read as paths upward, or that carry stray whitespace, are refused
/// (Consul's CVE-2025-11392 rule).
fn validate_key(key: &str) -> Result<(), ApiError> {
    if key.is_empty() {
        return Err(ApiError::new(400, "Missing key name"));
    }
    let traversal = key.split(['/', '\\']).any(|seg| seg == "..");
    if traversal || key.trim() != key {
        return Err(ApiError::new(
            400,
            format!("Invalid key name \"{key}\": path traversal or surrounding whitespace"),
        ));
    }
    Ok(())
}

/// TTL notes keep their first `max` bytes, with Consul's suffix when cut.
fn truncate_output(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{} ... (captured {max} of {} bytes)", &s[..end], s.len())
}

/// The tags this agent carries in the LAN pool (Consul's set: role, datacenter, versions,
/// and for servers the RPC port and bootstrap expectations).
fn lan_tags(c: &Config) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([
        ("role".to_string(), if c.server { "consul" } else { "node" }.to_string()),
        ("dc".into(), c.node.datacenter.clone()),
        ("segment".into(), String::new()),
        ("id".into(), c.node.id.clone()),
        ("vsn".into(), "2".into()),
        ("vsn_min".into(), "2".into()),
        ("vsn_max".into(), "3".into()),
        ("build".into(), format!("{CONSUL_API_VERSION}:muster-{}", c.muster_version)),
        ("acls".into(), "0".into()),
        ("ft_fs".into(), "1".into()),
        ("ft_si".into(), "1".into()),
    ]);
    if c.server {
        tags.insert("port".into(), c.ports.server.to_string());
        tags.insert("raft_vsn".into(), "3".into());
        tags.insert("wan_join_port".into(), c.ports.serf_wan.to_string());
        if c.bootstrap {
            tags.insert("bootstrap".into(), "1".into());
        }
        if c.bootstrap_expect > 0 {
            tags.insert("expect".into(), c.bootstrap_expect.to_string());
        }
    }
    if c.ports.grpc > 0 {
        tags.insert("grpc_port".into(), c.ports.grpc.to_string());
    }
    tags
}

/// WAN tags: a server's role, datacenter and RPC port, which is how other datacenters
/// find it.
fn wan_tags(c: &Config) -> BTreeMap<String, String> {
    let keep = ["role", "dc", "id", "port", "build", "vsn", "vsn_min", "vsn_max", "raft_vsn", "segment"];
    lan_tags(c).into_iter().filter(|(k, _)| keep.contains(&k.as_str())).collect()
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod cluster_tests;
