//! The cluster simulator: 3 or 5 `raft::Replica`s under virtual time, faults and a KV
//! workload, with Raft's safety invariants and a linearizability check.
//!
//! Owns one seed's world: a time-ordered event queue; a clock per node (offset plus bounded
//! drift); a network (delay = min + exponential, on some seeds with a rare long tail; loss,
//! duplication, optional per-link FIFO, else reordering; partitions: halves, isolate one,
//! one-way, one link, bridge; a cut also drops what is in flight); a disk per node (durable
//! image plus pending writes that a crash loses, the one in progress maybe torn: a prefix of
//! its entries survives and recovery sees the rest as absent; restart goes through
//! `Replica::recover`); pauses (a paused node's inputs wait); clients writing unique values
//! and reading through ReadIndex or the lease, each node applying what it commits to its own
//! `fsm::State`. Each seed draws its fault mix (a swarm profile), runs a safety phase, then a
//! liveness phase: heal, restart everything, stop faults and new work; a single leader must
//! emerge within 10 election timeouts and every node must apply the same index.
//!
//! Invariants, checked as the run goes: election safety (one leader per term, from the
//! replicas' own announcements and from who sends AppendEntries on the wire), log matching
//! (an (index, term) ledger: one entry per pair, always after an entry of the same term, so
//! logs that share an entry share everything before it), state-machine safety (one
//! committed entry per index, equal `State::digest()` at equal applied index), leader
//! completeness (a new leader holds every committed entry), durability (every acknowledged
//! write is committed, stays committed through crashes, and is applied everywhere at the
//! end), and linearizability of the KV history (`lin`). Never uses real time, threads or OS
//! randomness: a seed replays to the same trace hash, and can list its events as it goes.

mod lin;

pub use lin::{KvOp, LinResult, OpKind};

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use muster_core::fsm::kv::KvSetMode;
use muster_core::fsm::{fnv1a, Command, State};
use muster_core::ids::{Index, PersistToken, Term};
use muster_core::io::{PersistOp, Recovered};
use muster_core::raft::{disk, Entry, Message, RaftInput, RaftOutput, Replica, ReplicaConfig, Role};
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// How many seeds `cargo test` runs (`SIM_RAFT_SEEDS` overrides).
pub fn seeds_per_test() -> u64 {
    std::env::var("SIM_RAFT_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(30)
}

const ELECTION: Duration = Duration::from_millis(300);
const HEARTBEAT: Duration = Duration::from_millis(50);
const MAX_DRIFT: Duration = Duration::from_millis(30);
/// Per-node clock rate error bound, parts per million: two clocks part by at most 2% of an
/// election timeout (6 ms), well inside `MAX_DRIFT`.
const MAX_DRIFT_PPM: u64 = 10_000;
const SAFETY_PHASE: Duration = Duration::from_secs(20);
const KEYS: [&str; 3] = ["x", "y", "z"];
const LIN_BUDGET: u64 = 2_000_000;
/// Far above what a run queues (a few thousand events): more means messages breed messages,
/// and the run would never end.
const MAX_QUEUED: usize = 100_000;

/// The result of one seed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterOutcome {
    pub seed: u64,
    pub trace_hash: u64,
    pub violation: Option<String>,
    pub lin: LinResult,
    pub stats: ClusterStats,
}

/// What happened, so tests can check the faults and features were exercised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterStats {
    pub nodes: usize,
    pub writes_ok: u64,
    pub writes_info: u64,
    pub reads_ok: u64,
    pub lease_reads_ok: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub terms: u64,
    pub snapshots_installed: u64,
    pub torn_writes: u64,
    pub max_commit: u64,
}

/// Switches for the planted-bug tests; the defaults are the real system under the swarm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterOptions {
    /// Leaders serve lease reads without checking the lease (see `ReplicaConfig`).
    pub unsafe_skip_lease_check: bool,
    /// A profile aimed at stale reads: the leader cut off often, one key, many clients
    /// reading mostly by lease and quick to give up on a silent node.
    pub hunt_stale_reads: bool,
    /// Every disk reports a write persisted as soon as it is issued and makes it durable
    /// only later (a write cache that lies about fsync), so a crash loses acknowledged
    /// votes and entries. Lives in the simulated disk only: the replica is the real one.
    pub ack_before_fsync: bool,
}

pub fn run_cluster_seed(seed: u64) -> ClusterOutcome {
    run_cluster_seed_with(seed, ClusterOptions::default())
}

pub fn run_cluster_seed_with(seed: u64, options: ClusterOptions) -> ClusterOutcome {
    run_cluster(seed, options, false).0
}

/// Like `run_cluster_seed_with`, also returning the trace: one line per event handled.
pub fn run_cluster_traced(seed: u64, options: ClusterOptions) -> (ClusterOutcome, Vec<String>) {
    run_cluster(seed, options, true)
}

fn run_cluster(seed: u64, options: ClusterOptions, traced: bool) -> (ClusterOutcome, Vec<String>) {
    let mut w = World::new(seed, options);
    w.lines = traced.then(Vec::new);
    let violation = w.run().err();
    let lin = if violation.is_some() { LinResult::Unknown } else { lin::check(&w.history(), LIN_BUDGET) };
    let outcome = ClusterOutcome { seed, trace_hash: w.trace, violation, lin, stats: w.stats };
    (outcome, w.lines.unwrap_or_default())
}

/// The faults one seed turns on, and how hard (swarm testing: many seeds run with few).
#[derive(Debug, Clone)]
struct Profile {
    nodes: usize,
    delay_min: u64,
    delay_mean: u64,
    /// Chance a message also waits an exponential delay with the mean of an election
    /// timeout (a retransmission, a stalled queue): late enough to arrive a term later.
    slow_per_mille: u64,
    loss_per_mille: u64,
    dup_per_mille: u64,
    fifo: bool,
    /// Mean gap between faults of each kind, in ns; 0 means off.
    partition_every: u64,
    crash_every: u64,
    pause_every: u64,
    disk_latency_max: u64,
    snapshot_every: u64,
    trailing: u64,
    clients: usize,
    /// How many of `KEYS` the clients use: fewer keys, more contention.
    keys: u64,
    lease_per_mille: u64,
    /// How long a client waits for an answer before giving up (a write then is `info`).
    op_timeout: Duration,
    /// Chance a client ignores its leader hint and asks a random node.
    wander_per_mille: u64,
    /// Chance a fault that hits one node aims at the leader.
    at_leader_per_mille: u64,
}

impl Profile {
    fn draw(r: &mut ChaCha8Rng, options: ClusterOptions) -> Profile {
        let mut below = |n: u64| r.next_u64() % n.max(1);
        let ms = 1_000_000;
        let mut p = Profile {
            nodes: if below(2) == 0 { 3 } else { 5 },
            delay_min: 100_000 + below(2 * ms),
            delay_mean: 500_000 + below(15 * ms),
            slow_per_mille: if below(3) == 0 { below(30) } else { 0 },
            loss_per_mille: if below(3) > 0 { below(80) } else { 0 },
            dup_per_mille: if below(3) > 0 { below(40) } else { 0 },
            fifo: below(2) == 0,
            partition_every: if below(3) > 0 { 800 * ms + below(2_500 * ms) } else { 0 },
            crash_every: if below(3) > 0 { 700 * ms + below(3_000 * ms) } else { 0 },
            pause_every: if below(2) == 0 { 1_000 * ms + below(3_000 * ms) } else { 0 },
            disk_latency_max: 50_000 + below(5 * ms),
            snapshot_every: 10 + below(60),
            trailing: 2 + below(15),
            clients: 2 + below(3) as usize,
            keys: KEYS.len() as u64,
            lease_per_mille: 200 + below(600),
            op_timeout: Duration::from_secs(2),
            wander_per_mille: 50 + below(200),
            at_leader_per_mille: 300 + below(500),
        };
        if options.hunt_stale_reads {
            // Make a stale read's window common: the leader cut off often, many clients, most
            // reads by lease, clients quick to find the new leader.
            p.partition_every = 500 * ms + below(500 * ms);
            p.at_leader_per_mille = 1000;
            p.clients = 8;
            p.keys = 1;
            p.lease_per_mille = 800;
            p.wander_per_mille = 400;
            p.op_timeout = Duration::from_millis(300);
        }
        p
    }
}

/// A node's clock: local = offset + global · (1 + drift), never going backwards.
#[derive(Debug, Clone)]
struct Clock {
    offset: u64,
    /// Parts per million, in [-MAX_DRIFT_PPM, MAX_DRIFT_PPM].
    drift_ppm: i64,
}

impl Clock {
    fn local(&self, global: Time) -> Time {
        let g = global.as_nanos() as i128;
        Time((self.offset as i128 + g + g * self.drift_ppm as i128 / 1_000_000) as u64)
    }

    /// The earliest global time whose local time is at least `local`.
    fn global(&self, local: Time) -> Time {
        let l = local.as_nanos() as i128 - self.offset as i128;
        // The division may round past the answer by a nanosecond or two; start below it.
        let g = ((l * 1_000_000).div_euclid(1_000_000 + self.drift_ppm as i128) - 2).max(0);
        let mut t = Time(g as u64);
        while self.local(t) < local {
            t = Time(t.0 + 1);
        }
        t
    }
}

/// A node's disk: what survives a crash, and writes still on their way. Writes complete in
/// order; the first pending one is in progress.
#[derive(Debug, Default)]
struct Disk {
    durable: Recovered,
    pending: Vec<(PersistToken, PersistOp)>,
    /// When the last pending write completes: the next one no earlier than this.
    busy_until: Time,
}

#[derive(Debug)]
struct Node {
    id: String,
    replica: Option<Replica>,
    /// Bumped on each crash: events of an earlier life are dropped.
    life: u32,
    timer_gen: u64,
    clock: Clock,
    last_local: Time,
    disk: Disk,
    state: State,
    applied_since_snapshot: u64,
    paused_until: Time,
    /// Writes proposed here, by log index, waiting to see what commits there.
    writes: BTreeMap<Index, (usize, Command)>,
    /// Reads waiting for the state machine to reach an index.
    reads: Vec<(usize, Index)>,
}

#[derive(Debug)]
enum Event {
    /// A message on the wire, as the bytes a real transport would carry.
    Deliver {
        from: usize,
        to: usize,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        life: u32,
        gen: u64,
    },
    /// The disk made writes durable through `token`.
    Synced {
        node: usize,
        life: u32,
        token: PersistToken,
    },
    /// The node hears that writes through `token` are durable (with an honest disk, right
    /// after `Synced`).
    Persisted {
        node: usize,
        life: u32,
        token: PersistToken,
    },
    Request {
        node: usize,
        op: usize,
    },
    OpTimeout {
        op: usize,
    },
    Client {
        client: usize,
    },
    Crash,
    CrashNode {
        node: usize,
    },
    Restart {
        node: usize,
    },
    Partition,
    Heal,
    Pause,
    Liveness,
    Check,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pending,
    Ok,
    /// Surely not applied.
    Fail,
    /// Might have applied, at any time after the call.
    Info,
    /// A read that was abandoned; it did nothing and leaves no record.
    Dropped,
}

#[derive(Debug, Clone)]
struct Op {
    client: usize,
    key: &'static str,
    kind: OpKind,
    lease: bool,
    invoke: Time,
    done: Option<Time>,
    outcome: Outcome,
}

struct Client {
    leader_hint: Option<usize>,
}

struct World {
    options: ClusterOptions,
    profile: Profile,
    rng: ChaCha8Rng,
    now: Time,
    queue: BTreeMap<(Time, u64), Event>,
    seq: u64,
    nodes: Vec<Node>,
    blocked: BTreeSet<(usize, usize)>,
    link_last: BTreeMap<(usize, usize), Time>,
    clients: Vec<Client>,
    ops: Vec<Op>,
    next_value: u64,
    liveness_from: Option<Time>,
    /// The next node to start a multi-entry append crashes during it.
    crash_mid_append: bool,
    // Ledgers for the invariants.
    leaders: BTreeMap<Term, usize>,
    wire_leaders: BTreeMap<Term, usize>,
    /// (index, term) → (entry hash, the term of the entry before it, once seen).
    entries: BTreeMap<(Index, Term), (u64, Option<Term>)>,
    /// Index → (entry term, entry hash, the earliest term a replica reported it committed in).
    committed: BTreeMap<Index, (Term, u64, Term)>,
    digests: BTreeMap<Index, u64>,
    trace: u64,
    /// The event lines, when asked for.
    lines: Option<Vec<String>>,
    stats: ClusterStats,
}

fn entry_hash(e: &Entry) -> u64 {
    fnv1a(&postcard::to_allocvec(&e.command).expect("commands encode"))
}

impl World {
    fn new(seed: u64, options: ClusterOptions) -> World {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5241_4654);
        let profile = Profile::draw(&mut rng, options);
        let ids: Vec<String> = (0..profile.nodes).map(|i| format!("n{i}")).collect();
        let mut nodes = Vec::new();
        for id in &ids {
            let clock = Clock {
                offset: rng.next_u64() % 10_000_000_000,
                drift_ppm: (rng.next_u64() % (2 * MAX_DRIFT_PPM + 1)) as i64 - MAX_DRIFT_PPM as i64,
            };
            let mut node_seed = [0u8; 32];
            rng.fill_bytes(&mut node_seed);
            let cfg = replica_config(id, &ids, &profile, options);
            nodes.push(Node {
                id: id.clone(),
                replica: Some(Replica::new(cfg, node_seed)),
                life: 0,
                timer_gen: 0,
                last_local: Time::ZERO,
                clock,
                disk: Disk::default(),
                state: State::default(),
                applied_since_snapshot: 0,
                paused_until: Time::ZERO,
                writes: BTreeMap::new(),
                reads: Vec::new(),
            });
        }
        let clients = (0..profile.clients).map(|_| Client { leader_hint: None }).collect();
        let stats = ClusterStats { nodes: profile.nodes, ..ClusterStats::default() };
        World {
            options,
            profile,
            rng,
            now: Time::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            nodes,
            blocked: BTreeSet::new(),
            link_last: BTreeMap::new(),
            clients,
            ops: Vec::new(),
            next_value: 1,
            liveness_from: None,
            crash_mid_append: false,
            leaders: BTreeMap::new(),
            wire_leaders: BTreeMap::new(),
            entries: BTreeMap::new(),
            committed: BTreeMap::new(),
            digests: BTreeMap::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            lines: None,
            stats,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// An exponentially distributed gap with this mean.
    fn exp(&mut self, mean: u64) -> u64 {
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (-(1.0 - u).ln() * mean as f64).min(20.0 * mean as f64) as u64
    }

    fn schedule(&mut self, at: Time, e: Event) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), e);
    }

    fn mix(&mut self, parts: &[u64]) {
        for p in parts {
            self.trace = (self.trace ^ p).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// Adds a trace line; `line` runs only when tracing, so untraced runs pay nothing.
    fn note(&mut self, line: impl FnOnce(&World) -> String) {
        if let Some(mut lines) = self.lines.take() {
            lines.push(format!("{} {}", self.now, line(self)));
            self.lines = Some(lines);
        }
    }

    /// A network delay: a floor, an exponential body and, on some seeds, a long tail.
    fn delay(&mut self) -> Duration {
        let mut d = self.profile.delay_min + self.exp(self.profile.delay_mean);
        if self.safety_phase() && self.chance(self.profile.slow_per_mille) {
            d += self.exp(ELECTION.as_nanos() as u64);
        }
        Duration::from_nanos(d)
    }

    fn fail<T>(&self, what: String) -> Result<T, String> {
        Err(format!("at {}: {what}", self.now))
    }

    fn safety_phase(&self) -> bool {
        self.liveness_from.is_none()
    }

    fn run(&mut self) -> Result<(), String> {
        for n in 0..self.nodes.len() {
            self.schedule(Time::ZERO, Event::Timer { node: n, life: 0, gen: 0 });
        }
        for c in 0..self.clients.len() {
            let at = Time(self.below(50_000_000));
            self.schedule(at, Event::Client { client: c });
        }
        for (every, e) in [
            (self.profile.partition_every, Event::Partition),
            (self.profile.crash_every, Event::Crash),
            (self.profile.pause_every, Event::Pause),
        ] {
            if every > 0 {
                let at = Time(self.exp(every));
                self.schedule(at, e);
            }
        }
        self.schedule(Time::ZERO + SAFETY_PHASE, Event::Liveness);
        while let Some(((at, _), event)) = self.queue.pop_first() {
            self.now = at;
            if self.queue.len() > MAX_QUEUED {
                return self.fail(format!("message storm: {} events queued", self.queue.len()));
            }
            if let Some(done) = self.handle(event)? {
                return done;
            }
        }
        self.fail("the event queue ran dry".into())
    }

    /// Handles one event; `Some` ends the run.
    fn handle(&mut self, event: Event) -> Result<Option<Result<(), String>>, String> {
        if let Some(node) = self.target(&event) {
            if self.nodes[node].paused_until > self.now {
                let at = self.nodes[node].paused_until;
                self.schedule(at, event);
                return Ok(None);
            }
        }
        match event {
            Event::Deliver { from, to, bytes } => {
                if !self.blocked.contains(&(from, to)) {
                    let Ok(msg) = Message::decode(&bytes) else {
                        return self.fail("a message did not decode".into());
                    };
                    self.mix(&[1, to as u64, fnv1a(&bytes)]);
                    self.note(|_| format!("n{from} -> n{to}: {}", summary(&msg)));
                    let from = self.nodes[from].id.clone();
                    self.step(to, RaftInput::Message { from, msg })?;
                }
            }
            Event::Timer { node, life, gen } => {
                if self.nodes[node].life == life && self.nodes[node].timer_gen == gen {
                    self.mix(&[2, node as u64]);
                    self.note(|_| format!("n{node}: timer"));
                    self.step(node, RaftInput::Tick)?;
                }
            }
            Event::Synced { node, life, token } => {
                if self.nodes[node].life == life {
                    self.mix(&[3, node as u64, token.0]);
                    let n = &mut self.nodes[node];
                    let k = n.disk.pending.iter().take_while(|(t, _)| *t <= token).count();
                    for (_, op) in n.disk.pending.drain(..k) {
                        disk::apply(&mut n.disk.durable, op);
                    }
                }
            }
            Event::Persisted { node, life, token } => {
                if self.nodes[node].life == life {
                    self.mix(&[10, node as u64, token.0]);
                    self.note(|_| format!("n{node}: persisted through {}", token.0));
                    self.step(node, RaftInput::Persisted { token })?;
                }
            }
            Event::Request { node, op } => self.request(node, op)?,
            Event::OpTimeout { op } => {
                if self.ops[op].outcome == Outcome::Pending {
                    let outcome = if matches!(self.ops[op].kind, OpKind::Write(_)) {
                        Outcome::Info
                    } else {
                        Outcome::Dropped
                    };
                    self.finish(op, outcome, None);
                }
            }
            Event::Client { client } => self.client_op(client),
            Event::Crash => self.crash(),
            Event::CrashNode { node } => self.crash_node(node),
            Event::Restart { node } => self.restart(node)?,
            Event::Partition => self.partition(),
            Event::Heal => {
                self.note(|_| "heal".into());
                self.blocked.clear();
            }
            Event::Pause => self.pause(),
            Event::Liveness => self.start_liveness()?,
            Event::Check => return self.liveness_check(),
        }
        Ok(None)
    }

    /// The node an event is an input to (paused nodes take none).
    fn target(&self, e: &Event) -> Option<usize> {
        match e {
            Event::Deliver { to, .. } => Some(*to),
            Event::Timer { node, .. } | Event::Persisted { node, .. } | Event::Request { node, .. } => {
                Some(*node)
            }
            // The disk goes on writing while its process is paused.
            _ => None,
        }
    }

    /// Steps a live node with its local time and carries out what it asks.
    fn step(&mut self, node: usize, input: RaftInput) -> Result<(), String> {
        let mut queue = VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let n = &mut self.nodes[node];
            let Some(r) = n.replica.as_mut() else { return Ok(()) };
            let local = n.clock.local(self.now).max(n.last_local);
            n.last_local = local;
            let mut out = Vec::new();
            r.step(local, input, &mut out);
            for o in out {
                self.output(node, o, &mut queue)?;
            }
        }
        Ok(())
    }

    fn output(
        &mut self,
        node: usize,
        o: RaftOutput,
        follow_up: &mut VecDeque<RaftInput>,
    ) -> Result<(), String> {
        match o {
            RaftOutput::Send { to, msg } => {
                self.check_wire(node, &msg)?;
                let to: usize = to[1..].parse().expect("node ids are n<k>");
                self.transmit(node, to, msg);
            }
            RaftOutput::Persist { token, op } => {
                let mut appends = 0;
                if let PersistOp::AppendLog { entries } = &op {
                    self.check_entries(None, entries)?;
                    appends = entries.len();
                }
                self.mix(&[4, node as u64, token.0]);
                let mut latency = 1 + self.below(self.profile.disk_latency_max);
                if self.options.ack_before_fsync {
                    // The cache takes its time to reach the platter.
                    latency += self.below(ELECTION.as_nanos() as u64);
                }
                let n = &mut self.nodes[node];
                let start = n.disk.busy_until.max(self.now);
                n.disk.busy_until = start.max(self.now + Duration::from_nanos(latency));
                n.disk.pending.push((token, op));
                let (synced, life) = (n.disk.busy_until, n.life);
                if self.crash_mid_append && appends > 1 {
                    self.crash_mid_append = false;
                    let at = start + Duration::from_nanos(self.below(synced.since(start).as_nanos() as u64));
                    self.schedule(at, Event::CrashNode { node });
                }
                let acked = if self.options.ack_before_fsync { self.now } else { synced };
                self.schedule(synced, Event::Synced { node, life, token });
                self.schedule(acked, Event::Persisted { node, life, token });
            }
            RaftOutput::SetTimer { at } => {
                let n = &mut self.nodes[node];
                n.timer_gen += 1;
                let (global, life, gen) = (n.clock.global(at), n.life, n.timer_gen);
                self.schedule(global, Event::Timer { node, life, gen });
            }
            RaftOutput::Committed { entries } => {
                let term =
                    self.nodes[node].replica.as_ref().expect("a live node committed").debug_state().term;
                for e in entries {
                    self.apply(node, e, term, follow_up)?;
                }
                self.serve_reads(node);
            }
            RaftOutput::InstallSnapshot { index, data, .. } => self.install(node, index, &data)?,
            RaftOutput::ProposeResult { ctx, result } => {
                let op = ctx as usize;
                match result {
                    Ok(index) => {
                        let OpKind::Write(v) = self.ops[op].kind else { unreachable!("only writes propose") };
                        let cmd = write_command(self.ops[op].key, v);
                        self.nodes[node].writes.insert(index, (op, cmd));
                    }
                    Err(e) => {
                        self.redirect(op, &e);
                        self.finish(op, Outcome::Fail, None);
                    }
                }
            }
            RaftOutput::ReadReady { ctx, index } => {
                self.nodes[node].reads.push((ctx as usize, index));
                self.serve_reads(node);
            }
            RaftOutput::ReadFailed { ctx, leader } => {
                let op = ctx as usize;
                self.clients[self.ops[op].client].leader_hint = leader.and_then(|l| l[1..].parse().ok());
                self.finish(op, Outcome::Fail, None);
            }
            RaftOutput::LeaderChanged { term, leader } => {
                self.mix(&[5, node as u64, term.0]);
                self.note(|_| format!("n{node}: in term {} the leader is {leader:?}", term.0));
                if leader.as_deref() == Some(self.nodes[node].id.as_str()) {
                    self.became_leader(node, term)?;
                } else {
                    // Leadership lost: what it accepted may or may not commit.
                    let writes = std::mem::take(&mut self.nodes[node].writes);
                    for (op, _) in writes.into_values() {
                        self.finish(op, Outcome::Info, None);
                    }
                }
            }
        }
        Ok(())
    }

    fn redirect(&mut self, op: usize, e: &muster_core::raft::ProposeError) {
        if let muster_core::raft::ProposeError::NotLeader { leader } = e {
            let hint = leader.as_ref().and_then(|l| l[1..].parse().ok());
            self.clients[self.ops[op].client].leader_hint = hint;
        }
    }

    // ---- invariants -------------------------------------------------------------------

    /// Election safety on the wire: AppendEntries of one term come from one sender.
    fn check_wire(&mut self, node: usize, msg: &Message) -> Result<(), String> {
        if let Message::AppendEntries { term, entries, prev_term, .. } = msg {
            let first = *self.wire_leaders.entry(*term).or_insert(node);
            if first != node {
                return self.fail(format!(
                    "election safety: n{first} and n{node} both sent AppendEntries in {term:?}"
                ));
            }
            self.check_entries(Some(*prev_term), entries)?;
        }
        Ok(())
    }

    /// Log matching, wherever a run of entries is seen: one entry per (index, term), and the
    /// entry before it always of the same term (`prev`, the term before the first, when
    /// known). By induction two logs sharing an entry then share everything before it.
    fn check_entries(&mut self, mut prev: Option<Term>, entries: &[Entry]) -> Result<(), String> {
        for e in entries {
            let h = entry_hash(e);
            let seen = self.entries.entry((e.index, e.term)).or_insert((h, prev));
            if seen.0 != h {
                return self
                    .fail(format!("log matching: two different entries at {:?} in {:?}", e.index, e.term));
            }
            match (seen.1, prev) {
                (Some(a), Some(b)) if a != b => {
                    return self.fail(format!(
                        "log matching: the entry at {:?} in {:?} follows {a:?} in one log, {b:?} in another",
                        e.index, e.term
                    ))
                }
                (None, Some(_)) => seen.1 = prev,
                _ => {}
            }
            prev = Some(e.term);
        }
        Ok(())
    }

    fn became_leader(&mut self, node: usize, term: Term) -> Result<(), String> {
        self.stats.terms += 1;
        if let Some(other) = self.leaders.insert(term, node) {
            if other != node {
                return self.fail(format!("election safety: n{other} and n{node} both lead {term:?}"));
            }
        }
        // Leader completeness: every entry committed in an earlier term is in its log
        // (below its snapshot, the snapshot holds it).
        let r = self.nodes[node].replica.as_ref().expect("a live node announced");
        let s = r.debug_state();
        for (index, (t, _, committed_in)) in self.committed.range(s.snapshot_index.next()..) {
            let held = *index <= s.last_index && r.log_term(*index).is_none_or(|have| have == *t);
            if *committed_in < term && !held {
                return self.fail(format!(
                    "leader completeness: n{node} leads {term:?} without committed {index:?}"
                ));
            }
        }
        Ok(())
    }

    /// A node applies a committed entry: state-machine safety, durability, write results.
    fn apply(
        &mut self,
        node: usize,
        e: Entry,
        term: Term,
        follow_up: &mut VecDeque<RaftInput>,
    ) -> Result<(), String> {
        let h = entry_hash(&e);
        let first = *self.committed.entry(e.index).or_insert((e.term, h, term));
        if (first.0, first.1) != (e.term, h) {
            return self
                .fail(format!("state-machine safety: n{node} committed a different entry at {:?}", e.index));
        }
        self.stats.max_commit = self.stats.max_commit.max(e.index.0);
        let n = &mut self.nodes[node];
        n.state.apply(e.index, &e.command);
        let digest = n.state.digest();
        if *self.digests.entry(e.index).or_insert(digest) != digest {
            return self.fail(format!("state-machine safety: n{node}'s state differs at {:?}", e.index));
        }
        let n = &mut self.nodes[node];
        if let Some((op, cmd)) = n.writes.remove(&e.index) {
            let outcome = if cmd == e.command { Outcome::Ok } else { Outcome::Fail };
            self.finish(op, outcome, None);
        }
        let n = &mut self.nodes[node];
        n.applied_since_snapshot += 1;
        if n.applied_since_snapshot >= self.profile.snapshot_every {
            n.applied_since_snapshot = 0;
            let data = postcard::to_allocvec(&n.state).expect("states encode");
            follow_up.push_back(RaftInput::Snapshot { index: n.state.applied(), data });
        }
        Ok(())
    }

    fn install(&mut self, node: usize, index: Index, data: &[u8]) -> Result<(), String> {
        let state: State = match postcard::from_bytes(data) {
            Ok(s) => s,
            Err(e) => return self.fail(format!("n{node} got a snapshot that does not decode: {e}")),
        };
        if self.digests.get(&index).is_some_and(|d| *d != state.digest()) {
            return self
                .fail(format!("state-machine safety: n{node} installed a different state at {index:?}"));
        }
        self.stats.snapshots_installed += 1;
        let n = &mut self.nodes[node];
        n.state = state;
        let covered: Vec<Index> = n.writes.range(..=index).map(|(i, _)| *i).collect();
        for i in covered {
            let (op, _) = self.nodes[node].writes.remove(&i).expect("listed");
            self.finish(op, Outcome::Info, None);
        }
        self.serve_reads(node);
        Ok(())
    }

    // ---- clients ----------------------------------------------------------------------

    fn client_op(&mut self, client: usize) {
        if !self.safety_phase() {
            return;
        }
        let key = KEYS[self.below(self.profile.keys) as usize];
        let (kind, lease) = if self.chance(500) {
            let v = self.next_value;
            self.next_value += 1;
            (OpKind::Write(v), false)
        } else {
            (OpKind::Read(None), self.chance(self.profile.lease_per_mille))
        };
        let op = self.ops.len();
        self.ops.push(Op {
            client,
            key,
            kind,
            lease,
            invoke: self.now,
            done: None,
            outcome: Outcome::Pending,
        });
        let wander = self.chance(self.profile.wander_per_mille);
        let node = match self.clients[client].leader_hint {
            Some(n) if !wander => n,
            _ => self.below(self.nodes.len() as u64) as usize,
        };
        self.mix(&[6, client as u64, op as u64, node as u64]);
        self.note(|_| format!("client {client}: op {op} {kind:?} {key} at n{node}"));
        let at = self.now + self.delay();
        self.schedule(at, Event::Request { node, op });
        self.schedule(self.now + self.profile.op_timeout, Event::OpTimeout { op });
    }

    fn request(&mut self, node: usize, op: usize) -> Result<(), String> {
        if self.ops[op].outcome != Outcome::Pending {
            return Ok(());
        }
        if self.nodes[node].replica.is_none() {
            // Nobody heard it: surely not applied.
            self.clients[self.ops[op].client].leader_hint = None;
            self.finish(op, Outcome::Fail, None);
            return Ok(());
        }
        let ctx = op as u64;
        match (self.ops[op].kind, self.ops[op].lease) {
            (OpKind::Write(v), _) => {
                let command = write_command(self.ops[op].key, v);
                self.step(node, RaftInput::Propose { command, ctx })?;
            }
            (OpKind::Read(_), false) => self.step(node, RaftInput::ReadIndex { ctx })?,
            (OpKind::Read(_), true) => {
                let n = &mut self.nodes[node];
                let local = n.clock.local(self.now).max(n.last_local);
                let r = n.replica.as_ref().expect("checked live");
                match r.lease_read_index(local) {
                    Some(index) => {
                        n.reads.push((op, index));
                        self.serve_reads(node);
                    }
                    None => {
                        self.clients[self.ops[op].client].leader_hint =
                            r.debug_state().leader.and_then(|l| l[1..].parse().ok());
                        self.finish(op, Outcome::Fail, None);
                    }
                }
            }
        }
        Ok(())
    }

    /// Answers the reads whose index the node's state machine has reached.
    fn serve_reads(&mut self, node: usize) {
        let applied = self.nodes[node].state.applied();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            self.nodes[node].reads.drain(..).partition(|(_, i)| *i <= applied);
        self.nodes[node].reads = waiting;
        for (op, _) in ready {
            let key = self.ops[op].key;
            let seen = self.nodes[node].state.kv.get(key).map(|e| read_value(&e.value));
            self.finish(op, Outcome::Ok, Some(seen));
        }
    }

    fn finish(&mut self, op: usize, outcome: Outcome, seen: Option<Option<u64>>) {
        let o = &mut self.ops[op];
        if o.outcome != Outcome::Pending {
            return;
        }
        o.outcome = outcome;
        o.done = Some(self.now);
        if let Some(v) = seen {
            o.kind = OpKind::Read(v);
        }
        match (o.kind, outcome, o.lease) {
            (OpKind::Write(_), Outcome::Ok, _) => self.stats.writes_ok += 1,
            (OpKind::Write(_), Outcome::Info, _) => self.stats.writes_info += 1,
            (OpKind::Read(_), Outcome::Ok, lease) => {
                self.stats.reads_ok += 1;
                self.stats.lease_reads_ok += u64::from(lease);
            }
            _ => {}
        }
        let client = o.client;
        self.mix(&[7, op as u64, outcome as u64]);
        self.note(|w| format!("op {op}: {outcome:?} {:?}", w.ops[op].kind));
        let think = 1_000_000 + self.below(30_000_000);
        self.schedule(self.now + Duration::from_nanos(think), Event::Client { client });
    }

    /// The history the checker sees: ok and info writes, ok reads.
    fn history(&self) -> Vec<KvOp> {
        self.ops
            .iter()
            .filter_map(|o| {
                let ret = match (o.outcome, o.kind) {
                    (Outcome::Ok, _) => Some(o.done.expect("finished").as_nanos()),
                    (Outcome::Info, OpKind::Write(_)) => None,
                    _ => return None,
                };
                Some(KvOp { key: o.key.to_string(), kind: o.kind, invoke: o.invoke.as_nanos(), ret })
            })
            .collect()
    }

    // ---- network and faults -----------------------------------------------------------

    fn transmit(&mut self, from: usize, to: usize, msg: Message) {
        if self.blocked.contains(&(from, to))
            || (self.safety_phase() && self.chance(self.profile.loss_per_mille))
        {
            return;
        }
        let copies = if self.safety_phase() && self.chance(self.profile.dup_per_mille) { 2 } else { 1 };
        let bytes = msg.encode();
        for _ in 0..copies {
            let mut at = self.now + self.delay();
            if self.profile.fifo {
                let last = self.link_last.entry((from, to)).or_default();
                at = at.max(Time(last.0 + 1));
                *last = at;
            }
            self.schedule(at, Event::Deliver { from, to, bytes: bytes.clone() });
        }
    }

    fn partition(&mut self) {
        if !self.safety_phase() {
            return;
        }
        self.stats.partitions += 1;
        let n = self.nodes.len();
        self.blocked.clear();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        // `side[k]`: node k is cut off from the nodes on the other side.
        let mut side = vec![false; n];
        let mut bridge = None;
        let mut one_way = false;
        // The stale-read hunt cuts one leader link or isolates the leader.
        let mode = if self.profile.at_leader_per_mille == 1000 { 3 + self.below(3) } else { self.below(7) };
        let mut cut_link = None;
        match mode {
            // Halves: a random minority (at least one node) against the rest.
            0 => {
                let size = 1 + self.below((n / 2) as u64) as usize;
                for k in &order[..size] {
                    side[*k] = true;
                }
            }
            // A bridge: two halves, and one node that reaches both.
            1 => {
                for k in &order[..n / 2] {
                    side[*k] = true;
                }
                bridge = Some(order[n - 1]);
            }
            // One node hears nobody, but is heard (asymmetric).
            2 => {
                side[order[0]] = true;
                one_way = true;
            }
            // One link, one way: a follower stops hearing the leader while the rest still
            // do. It times out alone and, unless voters that still hear the leader hold
            // back, replaces a leader whose lease is still running.
            3 => {
                let leader = self.current_leader().unwrap_or(order[0]);
                let follower = order.iter().copied().find(|k| *k != leader).expect("at least three nodes");
                cut_link = Some((leader, follower));
            }
            // Isolate one node, often the leader, as Jepsen does.
            _ => {
                let at_leader = self.chance(self.profile.at_leader_per_mille);
                side[self.current_leader().filter(|_| at_leader).unwrap_or(order[0])] = true;
            }
        }
        for a in 0..n {
            for b in 0..n {
                let across = side[a] != side[b] && Some(a) != bridge && Some(b) != bridge;
                if a != b && across && !(one_way && side[a]) {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.blocked.extend(cut_link);
        let kind = ["halves", "bridge", "one deaf node", "one link", "one isolated"][mode.min(4) as usize];
        self.note(|w| format!("partition, {kind}: blocked (from, to) {:?}", w.blocked));
        // A cut drops what is in flight across it.
        let blocked = &self.blocked;
        self.queue
            .retain(|_, e| !matches!(e, Event::Deliver { from, to, .. } if blocked.contains(&(*from, *to))));
        let heal = 300_000_000 + self.below(2_500_000_000);
        self.schedule(self.now + Duration::from_nanos(heal), Event::Heal);
        let next = self.exp(self.profile.partition_every);
        self.schedule(self.now + Duration::from_nanos(heal + next), Event::Partition);
    }

    /// The crash fault's clock: crash a random node now or, half the time, the next node that
    /// starts writing several entries at once, before that write completes (a random crash
    /// almost never lands inside a write, and only there can a write tear).
    fn crash(&mut self) {
        if !self.safety_phase() {
            return;
        }
        if self.chance(500) {
            self.crash_mid_append = true;
        } else {
            let node = self.below(self.nodes.len() as u64) as usize;
            self.crash_node(node);
        }
        let next = self.exp(self.profile.crash_every);
        self.schedule(self.now + Duration::from_nanos(next), Event::Crash);
    }

    fn crash_node(&mut self, node: usize) {
        if self.safety_phase() && self.nodes[node].replica.is_some() {
            self.stats.crashes += 1;
            self.mix(&[8, node as u64]);
            // The write in progress may be torn: the records of a prefix of its entries made
            // it, the next one fails its checksum, and recovery ends the log before it.
            let pending = std::mem::take(&mut self.nodes[node].disk.pending);
            let mut torn = String::new();
            if let Some((_, PersistOp::AppendLog { entries })) = pending.first() {
                let kept = self.below(entries.len() as u64) as usize;
                if kept > 0 {
                    self.stats.torn_writes += 1;
                    torn = format!(", the first torn after {kept} of its {} entries", entries.len());
                    let op = PersistOp::AppendLog { entries: entries[..kept].to_vec() };
                    disk::apply(&mut self.nodes[node].disk.durable, op);
                }
            }
            self.note(|_| format!("n{node}: crash, {} pending writes lost{torn}", pending.len()));
            let n = &mut self.nodes[node];
            n.replica = None;
            n.life += 1;
            n.disk.busy_until = self.now;
            let writes: Vec<usize> = std::mem::take(&mut n.writes).into_values().map(|(op, _)| op).collect();
            let reads: Vec<usize> = n.reads.drain(..).map(|(op, _)| op).collect();
            for op in writes {
                self.finish(op, Outcome::Info, None);
            }
            for op in reads {
                self.finish(op, Outcome::Dropped, None);
            }
            let down = 100_000_000 + self.below(1_500_000_000);
            self.schedule(self.now + Duration::from_nanos(down), Event::Restart { node });
        }
    }

    /// The live node leading the highest term, if any (the fault injector aims at it).
    fn current_leader(&self) -> Option<usize> {
        let leading = self.nodes.iter().enumerate().filter_map(|(i, n)| {
            let s = n.replica.as_ref()?.debug_state();
            (s.role == Role::Leader).then_some((s.term, i))
        });
        leading.max().map(|(_, i)| i)
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        if self.nodes[node].replica.is_some() {
            return Ok(());
        }
        let ids: Vec<String> = self.nodes.iter().map(|n| n.id.clone()).collect();
        let cfg = replica_config(&self.nodes[node].id, &ids, &self.profile, self.options);
        let mut seed = [0u8; 32];
        self.rng.fill_bytes(&mut seed);
        let n = &mut self.nodes[node];
        let d = &n.disk.durable;
        let disk = Recovered {
            hard_state: d.hard_state.clone(),
            snapshot: d.snapshot.clone(),
            entries: d.entries.clone(),
        };
        let r = match Replica::recover(cfg, seed, disk) {
            Ok(r) => r,
            Err(e) => return self.fail(format!("n{node} cannot recover: {e}")),
        };
        let state = match r.snapshot_state() {
            Some((_, bytes)) => {
                postcard::from_bytes(&bytes).map_err(|e| format!("n{node}'s snapshot: {e}"))?
            }
            None => State::default(),
        };
        n.state = state;
        n.applied_since_snapshot = 0;
        n.replica = Some(r);
        n.timer_gen = 0;
        let (life, last) = (n.life, n.disk.durable.entries.last().map(|e| (e.index.0, e.term.0)));
        self.mix(&[9, node as u64]);
        self.note(|_| format!("n{node}: restart, last durable entry (index, term) {last:?}"));
        self.schedule(self.now, Event::Timer { node, life, gen: 0 });
        Ok(())
    }

    fn pause(&mut self) {
        if !self.safety_phase() {
            return;
        }
        self.stats.pauses += 1;
        // Often the leader stalls (a GC pause): the lease scenario of Jepsen 2014.
        let any = self.below(self.nodes.len() as u64) as usize;
        let at_leader = self.chance(self.profile.at_leader_per_mille);
        let node = self.current_leader().filter(|_| at_leader).unwrap_or(any);
        let len = 50_000_000 + self.below(800_000_000);
        self.nodes[node].paused_until = self.now + Duration::from_nanos(len);
        self.note(|_| format!("n{node}: paused for {}ms", len / 1_000_000));
        let next = self.exp(self.profile.pause_every);
        self.schedule(self.now + Duration::from_nanos(len + next), Event::Pause);
    }

    // ---- liveness ---------------------------------------------------------------------

    fn start_liveness(&mut self) -> Result<(), String> {
        self.note(|_| "liveness phase: heal, restart, no more faults or new work".into());
        self.liveness_from = Some(self.now);
        self.blocked.clear();
        for n in 0..self.nodes.len() {
            self.nodes[n].paused_until = Time::ZERO;
            self.restart(n)?;
        }
        self.schedule(self.now + Duration::from_millis(50), Event::Check);
        Ok(())
    }

    /// After the heal: one leader within 10 election timeouts, every op answered, every
    /// node applied to the leader's commit; then durability of every acknowledged write.
    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String> {
        let since = self.now.since(self.liveness_from.expect("in the liveness phase"));
        let states: Vec<_> =
            self.nodes.iter().map(|n| n.replica.as_ref().expect("all restarted").debug_state()).collect();
        let leaders: Vec<usize> = (0..states.len()).filter(|i| states[*i].role == Role::Leader).collect();
        let settled = match leaders[..] {
            // The leader must have committed its whole log (its term's no-op included): a
            // fresh leader's commit index may still trail what earlier leaders committed.
            [l] if states[l].commit == states[l].last_index => {
                let commit = states[l].commit;
                let all_applied = self.nodes.iter().all(|n| n.state.applied() == commit);
                let ops_done = self.ops.iter().all(|o| o.outcome != Outcome::Pending);
                all_applied && ops_done
            }
            _ => false,
        };
        if settled {
            return Ok(Some(self.final_checks()));
        }
        if leaders.len() != 1 && since > 10 * ELECTION {
            return self.fail(format!(
                "liveness: {} leaders {} after the heal",
                leaders.len(),
                fmt_duration(since)
            ));
        }
        if since > 10 * ELECTION + self.profile.op_timeout {
            let applied: Vec<u64> = self.nodes.iter().map(|n| n.state.applied().0).collect();
            return self
                .fail(format!("liveness: not converged after {}: applied {applied:?}", fmt_duration(since)));
        }
        self.schedule(self.now + Duration::from_millis(50), Event::Check);
        Ok(None)
    }

    fn final_checks(&self) -> Result<(), String> {
        let applied = self.nodes.iter().map(|n| n.state.applied()).min().unwrap_or_default();
        for (i, o) in self.ops.iter().enumerate() {
            if let (OpKind::Write(v), Outcome::Ok) = (o.kind, o.outcome) {
                let cmd = write_command(o.key, v);
                let h = fnv1a(&postcard::to_allocvec(&cmd).expect("commands encode"));
                let Some((&index, _)) = self.committed.iter().find(|(_, (_, eh, _))| *eh == h) else {
                    return self.fail(format!(
                        "durability: acknowledged write op {i} is not in the committed ledger"
                    ));
                };
                if index > applied {
                    return self
                        .fail(format!("durability: acknowledged write at {index:?} not applied everywhere"));
                }
            }
        }
        Ok(())
    }
}

fn fmt_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn replica_config(id: &str, ids: &[String], p: &Profile, options: ClusterOptions) -> ReplicaConfig {
    ReplicaConfig {
        election_timeout: ELECTION,
        heartbeat_interval: HEARTBEAT,
        max_clock_drift: MAX_DRIFT,
        snapshot_trailing: p.trailing,
        max_inflight: 4,
        unsafe_skip_lease_check: options.unsafe_skip_lease_check,
        ..ReplicaConfig::new(id, ids.to_vec())
    }
}

/// A message for the trace, without entry payloads or snapshot bytes.
fn summary(msg: &Message) -> String {
    match msg {
        Message::AppendEntries { term, prev_index, prev_term, entries, commit, read_ctx, .. } => format!(
            "AppendEntries {term:?} after ({}, {}) {} entries, commit {}, read {read_ctx}",
            prev_index.0,
            prev_term.0,
            entries.len(),
            commit.0
        ),
        Message::InstallSnapshot { term, index, term_of_index, data, .. } => {
            format!("InstallSnapshot {term:?} at ({}, {}), {} bytes", index.0, term_of_index.0, data.len())
        }
        other => format!("{other:?}"),
    }
}

fn write_command(key: &str, v: u64) -> Command {
    Command::KvSet { key: key.to_string(), value: v.to_le_bytes().to_vec(), flags: 0, mode: KvSetMode::Set }
}

fn read_value(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_seeds_hold_every_invariant() {
        let mut total = ClusterStats::default();
        for seed in 0..seeds_per_test() {
            let o = run_cluster_seed(seed);
            assert_eq!(o.violation, None, "replay: run_cluster_seed({seed})");
            assert_eq!(o.lin, LinResult::Ok, "seed {seed}: linearizability");
            let s = o.stats;
            total.writes_ok += s.writes_ok;
            total.reads_ok += s.reads_ok;
            total.lease_reads_ok += s.lease_reads_ok;
            total.crashes += s.crashes;
            total.partitions += s.partitions;
            total.pauses += s.pauses;
            total.snapshots_installed += s.snapshots_installed;
            total.torn_writes += s.torn_writes;
            total.terms += s.terms;
        }
        if seeds_per_test() >= 10 {
            assert!(total.writes_ok > 0 && total.reads_ok > 0 && total.lease_reads_ok > 0, "{total:?}");
            assert!(total.crashes > 0 && total.partitions > 0 && total.pauses > 0, "{total:?}");
            assert!(total.torn_writes > 0, "no crash tore an append: {total:?}");
            assert!(total.snapshots_installed > 0, "no follower ever needed a snapshot: {total:?}");
        }
    }

    #[test]
    fn a_seed_replays_to_the_same_trace() {
        // Seed 6 crashes, tears, partitions and pauses.
        let a = run_cluster_seed(6);
        let (b, lines) = run_cluster_traced(6, ClusterOptions::default());
        assert_eq!(a, b, "tracing changes nothing");
        let has = |what: &str| lines.iter().any(|l| l.contains(what));
        assert!(has("torn") && has("partition") && has("paused"), "the trace shows the faults");
        assert_ne!(a.trace_hash, run_cluster_seed(7).trace_hash);
    }

    #[test]
    fn clocks_convert_both_ways() {
        let c = Clock { offset: 5_000, drift_ppm: -7_000 };
        for g in [0u64, 1, 999, 123_456_789] {
            let l = c.local(Time(g));
            assert!(c.global(l) <= Time(g) && c.local(c.global(l)) >= l);
        }
    }

    /// Seed 0 is the first to catch it today; the margin absorbs changes to the swarm.
    const HUNT_SEEDS: u64 = 12;

    #[test]
    fn a_leader_serving_reads_without_its_lease_is_caught() {
        let options =
            ClusterOptions { unsafe_skip_lease_check: true, hunt_stale_reads: true, ..Default::default() };
        let found = (0..HUNT_SEEDS).find(|seed| {
            let o = run_cluster_seed_with(*seed, options);
            assert_eq!(o.violation, None, "the lease bug breaks no Raft invariant, only reads");
            matches!(o.lin, LinResult::Violation(_))
        });
        assert!(found.is_some(), "{HUNT_SEEDS} seeds with unchecked leases found no stale read");
    }

    #[test]
    fn the_same_hunt_with_a_checked_lease_finds_nothing() {
        let options = ClusterOptions { hunt_stale_reads: true, ..Default::default() };
        for seed in 0..seeds_per_test() {
            let o = run_cluster_seed_with(seed, options);
            assert_eq!((o.violation, o.lin), (None, LinResult::Ok), "seed {seed}");
        }
    }

    /// Seed 4 is the first to catch it today; the margin absorbs changes to the swarm.
    const FSYNC_SEEDS: u64 = 15;

    #[test]
    fn disks_that_acknowledge_before_fsync_are_caught() {
        let options = ClusterOptions { ack_before_fsync: true, ..Default::default() };
        let found = (0..FSYNC_SEEDS).find_map(|seed| {
            let v = run_cluster_seed_with(seed, options).violation?;
            // Lost acknowledged state must break a safety invariant, not merely stall.
            (!v.contains("liveness") && !v.contains("message storm")).then_some(v)
        });
        assert!(found.is_some(), "{FSYNC_SEEDS} seeds with a lying disk broke no safety invariant");
    }
}
