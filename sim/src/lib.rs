//! The deterministic simulator: the same `Node` code the agent runs, driven under virtual
//! time by one seed, with a client workload checked against an independent model.
//!
//! Owns the world (a time-ordered event queue, persist and check latencies, clients), the
//! workload, the reference model and the invariants. Never uses real time, threads or IO:
//! a seed replays to the same trace hash.
//!
//! This first simulator drives one node (the dev agent's single-voter log). It checks that
//! every write is acknowledged exactly once and only after its persist, that every read
//! answers what a simple reference KV holds at that moment (so CAS, delete and listing
//! semantics are checked against an independent model), that blocking reads return by their
//! deadline or when their key changed, and that catalog health follows the TTL updates.
//! On about half the seeds the node also crashes at random moments: persists still in flight
//! are lost, the node is rebuilt with `Node::recover` from what was durable, and every
//! acknowledged write must still be there (writes in flight at the crash count as done
//! exactly when their entry had reached the disk).
//!
//! The chaos worlds run clusters under the faults of `chaos` (network, clocks, disks,
//! crashes, pauses) with a linearizability check (`lin`): `raft` runs bare Raft replicas,
//! `nodes` whole servers driven through the API, `clients` servers and client agents driven
//! through the client agents' API (`fleet` hosts the agents of both). The gossip world
//! (`gossip`) runs a SWIM + Lifeguard pool under its own faults, on an engine that also
//! scales to thousands of members (`gossip::scale`).

mod chaos;
pub mod clients;
mod fleet;
pub mod gossip;
pub mod lin;
pub mod nodes;
pub mod raft;

pub use chaos::{ClusterOutcome, ClusterStats};
pub use fleet::HostBugs;

use std::collections::BTreeMap;

use muster_core::agent::NodeInfo;
use muster_core::api::defs::{CheckDef, ServiceDef};
use muster_core::api::shapes::Reply;
use muster_core::api::{ApiRequest, ApiResponse, Body, KvRead, QueryOpts};
use muster_core::fsm::catalog::Health;
use muster_core::fsm::fnv1a;
use muster_core::fsm::kv::KvSetMode;
use muster_core::ids::{Index, PersistToken, ReqId};
use muster_core::io::{Effect, Input, PersistOp, Recovered};
use muster_core::node::{Config, Node};
use muster_core::raft::disk;
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// How many operations a seed runs (`SIM_OPS` overrides).
pub fn ops_per_seed() -> usize {
    std::env::var("SIM_OPS").ok().and_then(|s| s.parse().ok()).unwrap_or(300)
}

const KEYS: [&str; 6] = ["a", "b", "c", "dir/x", "dir/y", "dir/z/q"];
const SERVICES: usize = 3;

/// A failed invariant, with what the simulator was doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub seed: u64,
    pub at: Time,
    pub what: String,
}

/// The result of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub seed: u64,
    pub trace_hash: u64,
    pub ops: usize,
    pub violation: Option<Violation>,
}

#[derive(Debug)]
enum Event {
    /// An input for the node incarnation `epoch`; stale once the node has crashed since.
    Input(u32, Input),
    Client,
    Crash,
    Restart,
}

/// A request in flight and what the model expects of it.
#[derive(Debug)]
enum Expect {
    /// A write: the model applies it when it is acknowledged.
    Write(ModelOp),
    /// A plain read of one key: must equal the model when answered.
    Read { key: String },
    /// A prefix listing: must equal the model's keys under the prefix.
    Keys { prefix: String },
    /// A blocking read: answers with a newer index, or with the same one no earlier than
    /// `earliest` (its wait) and no later than `latest` (wait plus the most jitter).
    Blocking { key: String, min_index: u64, earliest: Time, latest: Time },
    /// Agent writes: must answer 200.
    Agent,
}

#[derive(Debug, Clone)]
enum ModelOp {
    Set { key: String, value: Vec<u8> },
    Cas { key: String, value: Vec<u8>, index: u64 },
    Delete { key: String },
    DeleteTree { prefix: String },
}

/// The reference KV: values and modify indexes, nothing else.
#[derive(Default)]
struct Model {
    kv: BTreeMap<String, (Vec<u8>, u64)>,
}

impl Model {
    /// Applies an acknowledged write; returns the result the API must have given.
    fn apply(&mut self, op: &ModelOp, index: u64) -> bool {
        match op {
            ModelOp::Set { key, value } => {
                let unchanged = self.kv.get(key).is_some_and(|(v, _)| v == value);
                if !unchanged {
                    self.kv.insert(key.clone(), (value.clone(), index));
                }
                true
            }
            ModelOp::Cas { key, value, index: want } => {
                let have = self.kv.get(key).map_or(0, |(_, i)| *i);
                if have != *want {
                    return false;
                }
                self.kv.insert(key.clone(), (value.clone(), index));
                true
            }
            ModelOp::Delete { key } => {
                self.kv.remove(key);
                true
            }
            ModelOp::DeleteTree { prefix } => {
                self.kv.retain(|k, _| !k.starts_with(prefix.as_str()));
                true
            }
        }
    }
}

pub struct World {
    seed: u64,
    node: Node,
    now: Time,
    rng: ChaCha8Rng,
    queue: BTreeMap<(Time, u64), Event>,
    seq: u64,
    /// When the last persist completes; persists complete in token order.
    persist_done: Time,
    /// What has reached the disk, and what is still being written (lost on a crash).
    disk: Recovered,
    writing: BTreeMap<u64, PersistOp>,
    /// The log index each in-flight write got, to settle it if the node crashes.
    write_index: BTreeMap<u64, Index>,
    /// Chance per client operation (in 1/1000) that the node crashes; 0 on calm seeds.
    crash_per_mille: u64,
    /// A disk that lies: it acknowledges appends that a crash then loses (the last few).
    lossy_disk: bool,
    epoch: u32,
    down: bool,
    last_restart: Option<Time>,
    /// TTL checks registered before a crash and not since: the restarted agent forgot them.
    forgotten: std::collections::BTreeSet<String>,
    inflight: BTreeMap<u64, Expect>,
    next_req: u64,
    model: Model,
    /// Last status the workload gave each TTL check, and when its TTL runs out.
    ttl: BTreeMap<String, (Health, Time)>,
    issued: usize,
    ops: usize,
    hash: u64,
    pub trace: Option<Vec<String>>,
}

fn config() -> Config {
    let mut node = NodeInfo::new("sim", "10.0.0.1", "dc1");
    node.id = "00000000-0000-4000-8000-000000000001".into();
    Config {
        unix_secs_at_zero: 1_700_000_000,
        muster_version: "sim".into(),
        ae_interval: AE_INTERVAL,
        snapshot_threshold: SNAPSHOT_THRESHOLD,
        ..Config::defaults(node)
    }
}

const TTL: Duration = Duration::from_secs(5);
const AE_INTERVAL: Duration = Duration::from_secs(60);
/// Small, so runs take snapshots and recoveries start from one.
const SNAPSHOT_THRESHOLD: u64 = 16;

impl World {
    pub fn new(seed: u64, ops: usize) -> World {
        let mut master = ChaCha8Rng::seed_from_u64(seed);
        let mut node_seed = [0u8; 32];
        master.fill_bytes(&mut node_seed);
        let node = Node::new(config(), node_seed).expect("the simulated config is valid");
        let crash_per_mille = if master.next_u64() % 2 == 0 { 0 } else { 5 + master.next_u64() % 25 };
        World {
            seed,
            node,
            now: Time(0),
            rng: master,
            queue: BTreeMap::new(),
            seq: 0,
            persist_done: Time(0),
            disk: Recovered::default(),
            writing: BTreeMap::new(),
            write_index: BTreeMap::new(),
            crash_per_mille,
            lossy_disk: false,
            epoch: 0,
            down: false,
            last_restart: None,
            forgotten: Default::default(),
            inflight: BTreeMap::new(),
            next_req: 0,
            model: Model::default(),
            ttl: BTreeMap::new(),
            issued: 0,
            ops,
            hash: 0xcbf2_9ce4_8422_2325,
            trace: None,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn schedule(&mut self, at: Time, e: Event) {
        self.seq += 1;
        self.queue.insert((at, self.seq), e);
    }

    fn fail(&self, what: String) -> Violation {
        Violation { seed: self.seed, at: self.now, what }
    }

    fn record(&mut self, line: String) {
        self.hash = fnv1a(&[self.hash.to_le_bytes().as_slice(), line.as_bytes()].concat());
        if let Some(t) = &mut self.trace {
            t.push(line);
        }
    }

    /// Runs the seed: the workload, then a drain until every request has answered.
    pub fn run(mut self) -> Outcome {
        self.schedule(Time(0), Event::Input(0, Input::Tick));
        self.schedule(Time(1_000_000), Event::Client);
        let violation = self.run_events().err();
        Outcome { seed: self.seed, trace_hash: self.hash, ops: self.issued, violation }
    }

    /// Like `run`, keeping the trace lines.
    pub fn run_traced(mut self) -> (Outcome, Vec<String>) {
        self.trace = Some(Vec::new());
        self.schedule(Time(0), Event::Input(0, Input::Tick));
        self.schedule(Time(1_000_000), Event::Client);
        let violation = self.run_events().err();
        let trace = self.trace.take().unwrap_or_default();
        (Outcome { seed: self.seed, trace_hash: self.hash, ops: self.issued, violation }, trace)
    }

    fn run_events(&mut self) -> Result<(), Violation> {
        // Time bound: the workload plus the longest blocking wait, with room to spare.
        let horizon = Time(0) + Duration::from_secs(3600);
        while let Some(((at, _), event)) = self.queue.pop_first() {
            if at > horizon {
                return Err(self.fail("the simulation did not settle within an hour of virtual time".into()));
            }
            self.now = at;
            match event {
                Event::Client => {
                    if self.issued < self.ops {
                        if !self.down {
                            self.issued += 1;
                            self.client_op()?;
                            if self.below(1000) < self.crash_per_mille {
                                let at = self.now + Duration::from_micros(self.below(5_000));
                                self.schedule(at, Event::Crash);
                            }
                        }
                        let gap = Duration::from_micros(100 + self.below(20_000));
                        self.schedule(self.now + gap, Event::Client);
                    }
                }
                Event::Input(epoch, _) if epoch != self.epoch => {}
                Event::Input(_, input) => self.step(input)?,
                Event::Crash if self.down => {}
                Event::Crash => self.crash(),
                Event::Restart => self.restart()?,
            }
            if self.issued >= self.ops && self.inflight.is_empty() && !self.pending_work() {
                return self.final_checks();
            }
        }
        self.final_checks()
    }

    /// Whether anything besides timers (and stale inputs) is still queued.
    fn pending_work(&self) -> bool {
        self.down
            || self.queue.values().any(|e| match e {
                Event::Input(epoch, input) => *epoch == self.epoch && !matches!(input, Input::Tick),
                _ => true,
            })
    }

    /// The process dies: writes still in flight to the disk are lost; in-flight requests
    /// never get an answer; writes whose entry was already durable will be applied when the
    /// node recovers, so the model applies them now, in log order.
    /// This world's disk acknowledges writes it has not made durable, and crashes more: a
    /// fault no correct host has, which the durability checks must catch.
    pub fn with_lossy_disk(mut self) -> World {
        self.lossy_disk = true;
        self.crash_per_mille = 50;
        self
    }

    fn crash(&mut self) {
        self.record(format!("{} crash", self.now));
        if self.lossy_disk {
            let keep = self.disk.entries.len().saturating_sub(3);
            self.disk.entries.truncate(keep);
        }
        self.epoch += 1;
        self.down = true;
        self.writing.clear();
        self.persist_done = self.now;
        let durable = self.disk.entries.last().map(|e| e.index).or(self.disk.snapshot.as_ref().map(|s| s.0));
        let mut settled: Vec<(Index, ModelOp)> = Vec::new();
        for (id, expect) in std::mem::take(&mut self.inflight) {
            if let (Expect::Write(op), Some(index)) = (expect, self.write_index.get(&id)) {
                if durable.is_some_and(|d| *index <= d) {
                    settled.push((*index, op));
                }
            }
        }
        settled.sort_by_key(|(i, _)| *i);
        for (index, op) in settled {
            self.model.apply(&op, index.0);
        }
        self.write_index.clear();
        self.forgotten.extend(std::mem::take(&mut self.ttl).into_keys());
        let downtime = Duration::from_micros(500 + self.below(50_000));
        self.schedule(self.now + downtime, Event::Restart);
    }

    fn restart(&mut self) -> Result<(), Violation> {
        self.record(format!("{} restart", self.now));
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        self.node = Node::recover(config(), seed, self.disk.clone())
            .map_err(|e| self.fail(format!("recovery failed: {e}")))?;
        self.down = false;
        self.last_restart = Some(self.now);
        self.schedule(self.now, Event::Input(self.epoch, Input::Tick));
        Ok(())
    }

    /// A persist reached the disk.
    fn durable(&mut self, token: PersistToken) {
        if let Some(op) = self.writing.remove(&token.0) {
            disk::apply(&mut self.disk, op);
        }
    }

    fn step(&mut self, input: Input) -> Result<(), Violation> {
        let label = format!("{:?}", std::mem::discriminant(&input));
        if let Input::Persisted { token } = input {
            self.durable(token);
        }
        let request = match &input {
            Input::Request { id, req: ApiRequest::KvPut { .. } | ApiRequest::KvDelete { .. } } => Some(id.0),
            _ => None,
        };
        let mut out = Vec::new();
        self.node.step(self.now, input, &mut out);
        self.record(format!("{} step {label} -> {} effects", self.now, out.len()));
        for effect in out {
            match effect {
                Effect::SetTimer { at } => {
                    self.schedule(at.max(self.now), Event::Input(self.epoch, Input::Tick))
                }
                Effect::Persist { token, op } => {
                    // A KV write's own entry is the first append of the step that received it.
                    if let (Some(id), PersistOp::AppendLog { entries }) = (request, &op) {
                        if let Some(e) = entries.first() {
                            self.write_index.entry(id).or_insert(e.index);
                        }
                    }
                    let kind = match &op {
                        PersistOp::AppendLog { entries } => format!("append {} entries", entries.len()),
                        PersistOp::HardState { term, .. } => format!("hard state term {}", term.0),
                        PersistOp::Snapshot { index, .. } => format!("snapshot at {}", index.0),
                    };
                    self.record(format!("{} persist {} {kind}", self.now, token.0));
                    self.writing.insert(token.0, op);
                    let latency = Duration::from_micros(50 + self.below(3_000));
                    self.persist_done = self.persist_done.max(self.now + latency);
                    let at = self.persist_done;
                    self.schedule(at, Event::Input(self.epoch, Input::Persisted { token }));
                }
                Effect::Respond { id, resp } => self.answered(id, resp)?,
                Effect::RunCheck { .. } | Effect::CancelCheck { .. } => {
                    return Err(self.fail("the workload registers only TTL checks, yet a probe ran".into()));
                }
                Effect::Send { to, .. } | Effect::Gossip { to, .. } => {
                    return Err(self.fail(format!("a lone server sent a message to {to}")));
                }
                Effect::Exit | Effect::SaveKeyring { .. } => {
                    return Err(self.fail("the workload never leaves nor rotates keys".into()))
                }
                // Restarts model the Raft disk; API registrations are not replayed across them.
                Effect::SaveAgentState { .. } => {}
                Effect::Emit(e) => self.record(format!("{} emit {e:?}", self.now)),
            }
        }
        Ok(())
    }

    fn send(&mut self, req: ApiRequest, expect: Expect) {
        self.next_req += 1;
        let id = self.next_req;
        self.record(format!("{} send {id} {req:?}", self.now));
        self.inflight.insert(id, expect);
        self.schedule(self.now, Event::Input(self.epoch, Input::Request { id: ReqId(id), req }));
    }

    fn key(&mut self) -> String {
        KEYS[self.below(KEYS.len() as u64) as usize].to_string()
    }

    fn client_op(&mut self) -> Result<(), Violation> {
        let value = format!("v{}", self.issued).into_bytes();
        match self.below(100) {
            0..=29 => {
                let key = self.key();
                let req = ApiRequest::KvPut {
                    key: key.clone(),
                    value: value.clone(),
                    flags: 0,
                    mode: KvSetMode::Set,
                };
                self.send(req, Expect::Write(ModelOp::Set { key, value }));
            }
            30..=44 => {
                let key = self.key();
                // Half the time the index the model holds (likely to win), else a stale one.
                let index = match (self.below(2), self.model.kv.get(&key)) {
                    (0, Some((_, i))) => *i,
                    _ => self.below(5),
                };
                let req = ApiRequest::KvPut {
                    key: key.clone(),
                    value: value.clone(),
                    flags: 0,
                    mode: KvSetMode::Cas(index),
                };
                self.send(req, Expect::Write(ModelOp::Cas { key, value, index }));
            }
            45..=52 => {
                let key = self.key();
                self.send(
                    ApiRequest::KvDelete { key: key.clone(), recurse: false, cas: None },
                    Expect::Write(ModelOp::Delete { key }),
                );
            }
            53..=55 => {
                let prefix = "dir/".to_string();
                let req = ApiRequest::KvDelete { key: prefix.clone(), recurse: true, cas: None };
                self.send(req, Expect::Write(ModelOp::DeleteTree { prefix }));
            }
            56..=74 => {
                let key = self.key();
                let req = ApiRequest::KvGet {
                    key: key.clone(),
                    read: KvRead::Entry { raw: true },
                    q: QueryOpts::default(),
                };
                self.send(req, Expect::Read { key });
            }
            75..=79 => {
                let prefix = ["", "dir/", "d"][self.below(3) as usize].to_string();
                let req = ApiRequest::KvGet {
                    key: prefix.clone(),
                    read: KvRead::Keys { separator: None },
                    q: QueryOpts::default(),
                };
                self.send(req, Expect::Keys { prefix });
            }
            80..=85 => {
                let key = self.key();
                let min_index = self.model.kv.get(&key).map_or(1, |(_, i)| *i).max(1);
                let wait = Duration::from_millis(200 + self.below(2_000));
                let q = QueryOpts { min_index: Index(min_index), wait: Some(wait), ..QueryOpts::default() };
                // The node adds up to wait/16 of jitter.
                let (earliest, latest) = (self.now + wait, self.now + wait + wait / 16);
                let req = ApiRequest::KvGet { key: key.clone(), read: KvRead::Entry { raw: true }, q };
                self.send(req, Expect::Blocking { key, min_index, earliest, latest });
            }
            86..=91 => {
                let i = self.below(SERVICES as u64);
                let def = ServiceDef {
                    name: format!("svc{i}"),
                    id: Some(format!("svc{i}")),
                    port: 8000 + i as u16,
                    checks: vec![CheckDef { ttl: Some(TTL), ..CheckDef::default() }],
                    ..ServiceDef::default()
                };
                let check = format!("service:svc{i}");
                self.forgotten.remove(&check);
                self.ttl.entry(check).or_insert((Health::Critical, self.now + TTL));
                self.send(
                    ApiRequest::AgentServiceRegister { def: Box::new(def), replace_existing_checks: false },
                    Expect::Agent,
                );
            }
            _ => {
                let i = self.below(SERVICES as u64);
                let check = format!("service:svc{i}");
                if self.ttl.contains_key(&check) {
                    let status = [Health::Passing, Health::Warning, Health::Critical][self.below(3) as usize];
                    self.ttl.insert(check.clone(), (status, self.now + TTL));
                    self.send(
                        ApiRequest::AgentCheckTtl { id: check, status, output: String::new() },
                        Expect::Agent,
                    );
                }
            }
        }
        Ok(())
    }

    fn answered(&mut self, id: ReqId, resp: ApiResponse) -> Result<(), Violation> {
        self.record(format!("{} answer {} {} {:?}", self.now, id.0, resp.status, resp.body));
        let Some(expect) = self.inflight.remove(&id.0) else {
            return Err(self.fail(format!("request {} answered twice or never sent", id.0)));
        };
        let index = resp.meta.map_or(0, |m| m.index.0);
        self.write_index.remove(&id.0);
        match expect {
            Expect::Write(op) => {
                let applied = self.node.state().applied().0;
                let want = self.model.apply(&op, applied);
                if resp.body != Body::Json(Reply::Bool(want)) {
                    return Err(self.fail(format!("{op:?} answered {:?}, the model says {want}", resp.body)));
                }
            }
            Expect::Read { key } => self.check_value(&key, &resp)?,
            Expect::Keys { prefix } => {
                let want: Vec<String> =
                    self.model.kv.keys().filter(|k| k.starts_with(prefix.as_str())).cloned().collect();
                let got = match resp.body {
                    Body::Json(Reply::Strings(v)) => v,
                    _ if resp.status == 404 => vec![],
                    other => return Err(self.fail(format!("keys {prefix:?} answered {other:?}"))),
                };
                if got != want {
                    return Err(self.fail(format!("keys {prefix:?}: got {got:?}, model {want:?}")));
                }
            }
            Expect::Blocking { key, min_index, earliest, latest } => {
                if index <= min_index && self.now < earliest {
                    return Err(self.fail(format!(
                        "blocking read of {key} returned early at index {index} ≤ {min_index}"
                    )));
                }
                if self.now > latest {
                    return Err(self.fail(format!("blocking read of {key} outlived its deadline {latest}")));
                }
                self.check_value(&key, &resp)?;
            }
            Expect::Agent => {
                if resp.status != 200 {
                    return Err(self.fail(format!("agent write answered {} {:?}", resp.status, resp.body)));
                }
            }
        }
        Ok(())
    }

    fn check_value(&self, key: &str, resp: &ApiResponse) -> Result<(), Violation> {
        let got = match &resp.body {
            Body::Raw(v) => Some(v.clone()),
            _ if resp.status == 404 => None,
            other => return Err(self.fail(format!("read {key} answered {other:?}"))),
        };
        let want = self.model.kv.get(key).map(|(v, _)| v.clone());
        if got != want {
            return Err(self.fail(format!("read {key}: got {got:?}, model {want:?}")));
        }
        Ok(())
    }

    /// After the drain: every TTL check shows what the workload last said, or critical once
    /// its TTL has run out.
    fn final_checks(&mut self) -> Result<(), Violation> {
        if !self.inflight.is_empty() {
            return Err(self.fail(format!("{} requests never answered", self.inflight.len())));
        }
        // Let every TTL run out (and, after a restart, two anti-entropy periods pass), then
        // the catalog must show all of them critical.
        let mut end = self.now + TTL + Duration::from_secs(1);
        if let Some(restart) = self.last_restart {
            end = end.max(restart + AE_INTERVAL * 2 + Duration::from_secs(1));
        }
        while let Some((&(at, _), _)) = self.queue.first_key_value() {
            if at > end {
                break;
            }
            let ((at, _), event) = self.queue.pop_first().expect("peeked");
            self.now = at;
            match event {
                Event::Input(epoch, input) if epoch == self.epoch => self.step(input)?,
                _ => {}
            }
        }
        self.now = self.now.max(end);
        self.step(Input::Tick)?;
        let catalog = &self.node.state().catalog;
        for check in self.ttl.keys() {
            let row = catalog.node_checks("sim").find(|c| &c.check_id == check);
            match row {
                Some(c) if c.status == Health::Critical => {}
                other => {
                    return Err(
                        self.fail(format!("{check} should be critical after its TTL, catalog has {other:?}"))
                    )
                }
            }
        }
        // A restarted agent does not know the checks it had before: its full anti-entropy
        // sync (within two sync periods of the restart) removes them from the catalog.
        for check in &self.forgotten {
            if let Some(row) = catalog.node_checks("sim").find(|c| &c.check_id == check) {
                return Err(self.fail(format!(
                    "{check}, forgotten by the restarted agent, is still in the catalog: {row:?}"
                )));
            }
        }
        Ok(())
    }
}

/// Runs one seed.
pub fn run_seed(seed: u64) -> Outcome {
    World::new(seed, ops_per_seed()).run()
}

/// Runs one seed twice and compares trace hashes.
pub fn check_determinism(seed: u64) -> Result<u64, (u64, u64)> {
    let (a, b) = (run_seed(seed).trace_hash, run_seed(seed).trace_hash);
    if a == b {
        Ok(a)
    } else {
        Err((a, b))
    }
}

/// Seeds as `a..b` or a single number.
pub fn parse_seeds(s: &str) -> Option<std::ops::Range<u64>> {
    match s.split_once("..") {
        Some((a, b)) => Some(a.parse().ok()?..b.parse().ok()?),
        None => {
            let n: u64 = s.parse().ok()?;
            Some(n..n + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> u64 {
        std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(40)
    }

    #[test]
    fn seeds_hold_every_invariant() {
        for seed in 0..seeds() {
            let o = run_seed(seed);
            assert!(
                o.violation.is_none(),
                "{:?}\nreplay: cargo run -p sim -- replay --seed {seed} --trace",
                o.violation
            );
            assert!(o.ops > 0);
        }
    }

    #[test]
    fn a_seed_replays_to_the_same_trace() {
        for seed in [0, 7, 12345] {
            assert!(check_determinism(seed).is_ok(), "seed {seed} is not deterministic");
        }
        assert_ne!(run_seed(1).trace_hash, run_seed(2).trace_hash, "different seeds explore different runs");
    }

    #[test]
    fn crashes_snapshots_and_recoveries_happen() {
        let (o, trace) = World::new(3, 300).run_traced();
        assert!(o.violation.is_none(), "{:?}", o.violation);
        let count = |w: &str| trace.iter().filter(|l| l.contains(w)).count();
        assert!(count(" crash") > 0 && count(" restart") == count(" crash"), "seed 3 crashes and restarts");
        assert!(count(" snapshot at ") > 0, "snapshots are taken, so recoveries start from them");
    }

    #[test]
    fn a_disk_that_loses_acknowledged_writes_is_caught() {
        let found = (0..20).find_map(|seed| World::new(seed, 300).with_lossy_disk().run().violation);
        let v = found.expect("lost acknowledged writes must be reported within 20 seeds");
        assert!(v.what.contains("model") || v.what.contains("recovery"), "{v:?}");
    }

    #[test]
    fn the_model_catches_a_wrong_answer() {
        // A planted disagreement: the model holds a key no workload op ever writes, so only a
        // listing can reveal it; the checker must report it within a few seeds.
        let found = (0..10).find_map(|seed| {
            let mut w = World::new(seed, 200);
            w.model.kv.insert("zz".into(), (b"x".to_vec(), 999));
            w.run().violation
        });
        let v = found.expect("a model/node disagreement must be reported within 10 seeds");
        assert!(v.what.contains("zz"), "{v:?}");
    }
}
