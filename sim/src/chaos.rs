//! The chaos the cluster worlds run under, and the loop that drives them.
//!
//! Owns one seed's environment, whatever runs inside it: a time-ordered event queue; a clock
//! per node (offset plus bounded drift); the network (`net`); a disk per node (durable image
//! plus pending writes that a crash loses, the one in progress maybe torn: a prefix of its
//! entries survives and recovery sees the rest as absent); pauses (a paused node's inputs
//! wait); the fault clocks; the clients' operations and their history; the trace; and the
//! ledgers of Raft's invariants (`ledger`). Each seed draws its fault mix (a swarm profile),
//! runs a safety phase, then a liveness phase: heal, restart everything (but a node its world
//! let die for good), stop faults and new work. A `World` supplies the processes: how a node
//! steps, what a client asks of it, how it dies and comes back, and when the liveness phase
//! has settled; `run` drives it. Never uses real time, threads or OS randomness: a seed
//! replays to the same trace hash.

mod api;
mod ledger;
mod net;

use std::collections::{BTreeMap, BTreeSet};

use muster_core::ids::PersistToken;
use muster_core::io::{PersistOp, Recovered};
use muster_core::raft::disk;
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use crate::lin::{KvOp, LinResult, OpKind};

pub(crate) use api::{read_request, text, KvWork};
pub(crate) use ledger::Ledger;

pub(crate) const ELECTION: Duration = Duration::from_millis(300);
pub(crate) const HEARTBEAT: Duration = Duration::from_millis(50);
pub(crate) const MAX_DRIFT: Duration = Duration::from_millis(30);
/// Per-node clock rate error bound, parts per million: two clocks part by at most 2% of an
/// election timeout (6 ms), well inside `MAX_DRIFT`.
const MAX_DRIFT_PPM: u64 = 10_000;
pub(crate) const KEYS: [&str; 3] = ["x", "y", "z"];
const LIN_BUDGET: u64 = 2_000_000;
/// Far above what a run queues (a few thousand events): more means messages breed messages,
/// and the run would never end.
const MAX_QUEUED: usize = 100_000;

/// The result of one seed of a cluster world.
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
    /// Reads a leader may serve from its lease (the nodes world: default consistency).
    pub lease_reads_ok: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub terms: u64,
    pub snapshots_installed: u64,
    pub torn_writes: u64,
    pub max_commit: u64,
}

/// The faults one seed turns on, and how hard (swarm testing: many seeds run with few).
#[derive(Debug, Clone)]
pub(crate) struct Profile {
    pub nodes: usize,
    pub delay_min: u64,
    pub delay_mean: u64,
    /// Chance a message also waits an exponential delay with the mean of an election
    /// timeout (a retransmission, a stalled queue): late enough to arrive a term later.
    pub slow_per_mille: u64,
    pub loss_per_mille: u64,
    pub dup_per_mille: u64,
    pub fifo: bool,
    /// Mean gap between faults of each kind, in ns; 0 means off.
    pub partition_every: u64,
    pub crash_every: u64,
    pub pause_every: u64,
    pub disk_latency_max: u64,
    pub snapshot_every: u64,
    pub trailing: u64,
    pub clients: usize,
    /// How many of `KEYS` the clients use: fewer keys, more contention.
    pub keys: u64,
    pub lease_per_mille: u64,
    /// How long a client waits for an answer before giving up (a write then is `info`).
    pub op_timeout: Duration,
    /// Chance a client ignores its leader hint and asks a random node.
    pub wander_per_mille: u64,
    /// Chance a fault that hits one node aims at the leader.
    pub at_leader_per_mille: u64,
    /// How long faults and new work go on before the liveness phase.
    pub safety_phase: Duration,
}

impl Profile {
    pub(crate) fn draw(r: &mut ChaCha8Rng) -> Profile {
        let mut below = |n: u64| r.next_u64() % n.max(1);
        let ms = 1_000_000;
        Profile {
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
            safety_phase: Duration::from_secs(20),
        }
    }
}

/// A node's clock: local = offset + global · (1 + drift), never going backwards.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    offset: u64,
    /// Parts per million, in [-MAX_DRIFT_PPM, MAX_DRIFT_PPM].
    drift_ppm: i64,
}

impl Clock {
    /// A clock `offset` ns ahead of global time at zero, running `drift_ppm` fast (or slow).
    pub(crate) fn new(offset: u64, drift_ppm: i64) -> Clock {
        let bound = MAX_DRIFT_PPM as i64;
        Clock { offset, drift_ppm: drift_ppm.clamp(-bound, bound) }
    }

    /// A random clock within the bounds every chaos world uses.
    pub(crate) fn draw(r: &mut ChaCha8Rng) -> Clock {
        let offset = r.next_u64() % 10_000_000_000;
        let drift = (r.next_u64() % (2 * MAX_DRIFT_PPM + 1)) as i64 - MAX_DRIFT_PPM as i64;
        Clock::new(offset, drift)
    }

    pub(crate) fn local(&self, global: Time) -> Time {
        let g = global.as_nanos() as i128;
        Time((self.offset as i128 + g + g * self.drift_ppm as i128 / 1_000_000) as u64)
    }

    /// The earliest global time whose local time is at least `local`.
    pub(crate) fn global(&self, local: Time) -> Time {
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

/// An exponentially distributed draw with this mean, capped at 20 means (the delay model's
/// body and tail, and the gaps between faults).
pub(crate) fn exp_draw(r: &mut ChaCha8Rng, mean: u64) -> u64 {
    let u = (r.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
    (-(1.0 - u).ln() * mean as f64).min(20.0 * mean as f64) as u64
}

/// A node's disk: what survives a crash, and writes still on their way. Writes complete in
/// order; the first pending one is in progress.
#[derive(Debug, Default)]
pub(crate) struct Disk {
    pub durable: Recovered,
    pending: Vec<(PersistToken, PersistOp)>,
    /// When the last pending write completes: the next one no earlier than this.
    busy_until: Time,
}

/// What a node's process runs on: its clock, its disk, and whether it is paused.
#[derive(Debug)]
pub(crate) struct Machine {
    /// Bumped on each crash: events of an earlier life are dropped.
    pub life: u32,
    timer_gen: u64,
    clock: Clock,
    last_local: Time,
    pub disk: Disk,
    paused_until: Time,
}

#[derive(Debug)]
pub(crate) enum Event<L> {
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
    /// An input to `node` that only one world has.
    Local {
        node: usize,
        event: L,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pending,
    Ok,
    /// Surely not applied.
    Fail,
    /// Might have applied, at any time after the call.
    Info,
    /// A read that was abandoned; it did nothing and leaves no record.
    Dropped,
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    /// After a quorum round (ReadIndex); writes carry this too.
    Quorum,
    /// From the leader's lease when it holds one.
    Lease,
    /// From the local state, whatever it holds: not linearizable, not checked as such.
    Stale,
}

#[derive(Debug, Clone)]
pub(crate) struct Op {
    pub client: usize,
    pub key: &'static str,
    pub kind: OpKind,
    pub read: ReadMode,
    pub invoke: Time,
    pub done: Option<Time>,
    pub outcome: Outcome,
}

/// Everything of one seed's world but the processes under test.
pub(crate) struct Env<L> {
    pub profile: Profile,
    rng: ChaCha8Rng,
    pub now: Time,
    queue: BTreeMap<(Time, u64), Event<L>>,
    seq: u64,
    pub machines: Vec<Machine>,
    blocked: BTreeSet<(usize, usize)>,
    link_last: BTreeMap<(usize, usize), Time>,
    pub ops: Vec<Op>,
    pub next_value: u64,
    liveness_from: Option<Time>,
    /// The next node to start a multi-entry append crashes during it.
    crash_mid_append: bool,
    /// Every disk reports a write persisted as soon as it is issued and makes it durable
    /// only later (a write cache that lies about fsync).
    pub ack_before_fsync: bool,
    pub ledger: Ledger,
    pub trace: u64,
    /// The event lines, when asked for.
    pub lines: Option<Vec<String>>,
    pub stats: ClusterStats,
}

impl<L> Env<L> {
    /// The environment for `profile`, and a seed for each node's process.
    pub fn new(mut rng: ChaCha8Rng, profile: Profile) -> (Env<L>, Vec<[u8; 32]>) {
        let mut machines = Vec::new();
        let mut seeds = Vec::new();
        for _ in 0..profile.nodes {
            let clock = Clock::draw(&mut rng);
            let mut seed = [0u8; 32];
            rng.fill_bytes(&mut seed);
            seeds.push(seed);
            machines.push(Machine {
                life: 0,
                timer_gen: 0,
                clock,
                last_local: Time::ZERO,
                disk: Disk::default(),
                paused_until: Time::ZERO,
            });
        }
        let stats = ClusterStats { nodes: profile.nodes, ..ClusterStats::default() };
        let env = Env {
            profile,
            rng,
            now: Time::ZERO,
            queue: BTreeMap::new(),
            seq: 0,
            machines,
            blocked: BTreeSet::new(),
            link_last: BTreeMap::new(),
            ops: Vec::new(),
            next_value: 1,
            liveness_from: None,
            crash_mid_append: false,
            ack_before_fsync: false,
            ledger: Ledger::default(),
            trace: 0xcbf2_9ce4_8422_2325,
            lines: None,
            stats,
        };
        (env, seeds)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    /// An exponentially distributed gap with this mean.
    fn exp(&mut self, mean: u64) -> u64 {
        exp_draw(&mut self.rng, mean)
    }

    pub fn schedule(&mut self, at: Time, e: Event<L>) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), e);
    }

    pub fn mix(&mut self, parts: &[u64]) {
        for p in parts {
            self.trace = (self.trace ^ p).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// Adds a trace line; `line` runs only when tracing, so untraced runs pay nothing.
    pub fn note(&mut self, line: impl FnOnce(&Env<L>) -> String) {
        if let Some(mut lines) = self.lines.take() {
            lines.push(format!("{} {}", self.now, line(self)));
            self.lines = Some(lines);
        }
    }

    pub fn fail<T>(&self, what: String) -> Result<T, String> {
        Err(format!("at {}: {what}", self.now))
    }

    pub fn safety_phase(&self) -> bool {
        self.liveness_from.is_none()
    }

    /// How long the liveness phase has run.
    pub fn since_liveness(&self) -> Duration {
        self.now.since(self.liveness_from.expect("in the liveness phase"))
    }

    /// `node`'s clock now; it never goes backwards.
    pub fn local_time(&mut self, node: usize) -> Time {
        let m = &mut self.machines[node];
        m.last_local = m.clock.local(self.now).max(m.last_local);
        m.last_local
    }

    /// The node asks to be woken at local time `at`, replacing its earlier request.
    pub fn set_timer(&mut self, node: usize, at: Time) {
        let m = &mut self.machines[node];
        m.timer_gen += 1;
        let (global, life, gen) = (m.clock.global(at), m.life, m.timer_gen);
        self.schedule(global, Event::Timer { node, life, gen });
    }

    /// The node asks its disk for a write: it completes after the writes before it, and is
    /// acknowledged once durable (or at once, with a disk that lies).
    pub fn persist(&mut self, node: usize, token: PersistToken, op: PersistOp) -> Result<(), String> {
        let mut appends = 0;
        if let PersistOp::AppendLog { entries } = &op {
            self.check_entries(None, entries)?;
            appends = entries.len();
        }
        self.mix(&[4, node as u64, token.0]);
        let mut latency = 1 + self.below(self.profile.disk_latency_max);
        if self.ack_before_fsync {
            // The cache takes its time to reach the platter.
            latency += self.below(ELECTION.as_nanos() as u64);
        }
        let m = &mut self.machines[node];
        let start = m.disk.busy_until.max(self.now);
        m.disk.busy_until = start.max(self.now + Duration::from_nanos(latency));
        m.disk.pending.push((token, op));
        let (synced, life) = (m.disk.busy_until, m.life);
        if self.crash_mid_append && appends > 1 {
            self.crash_mid_append = false;
            let at = start + Duration::from_nanos(self.below(synced.since(start).as_nanos() as u64));
            self.schedule(at, Event::CrashNode { node });
        }
        let acked = if self.ack_before_fsync { self.now } else { synced };
        self.schedule(synced, Event::Synced { node, life, token });
        self.schedule(acked, Event::Persisted { node, life, token });
        Ok(())
    }

    /// The machine under a crashing process: pending writes are lost, the one in progress
    /// maybe torn (the records of a prefix of its entries made it, the next one fails its
    /// checksum, and recovery ends the log before it).
    fn crash_machine(&mut self, node: usize) {
        self.stats.crashes += 1;
        self.mix(&[8, node as u64]);
        let pending = std::mem::take(&mut self.machines[node].disk.pending);
        let mut torn = String::new();
        if let Some((_, PersistOp::AppendLog { entries })) = pending.first() {
            let kept = self.below(entries.len() as u64) as usize;
            if kept > 0 {
                self.stats.torn_writes += 1;
                torn = format!(", the first torn after {kept} of its {} entries", entries.len());
                let op = PersistOp::AppendLog { entries: entries[..kept].to_vec() };
                disk::apply(&mut self.machines[node].disk.durable, op);
            }
        }
        self.note(|_| format!("n{node}: crash, {} pending writes lost{torn}", pending.len()));
        let m = &mut self.machines[node];
        m.life += 1;
        m.disk.busy_until = self.now;
    }

    /// A client starts an operation; it gives up after the profile's timeout.
    pub fn invoke(&mut self, client: usize, key: &'static str, kind: OpKind, read: ReadMode) -> usize {
        let op = self.ops.len();
        self.ops.push(Op {
            client,
            key,
            kind,
            read,
            invoke: self.now,
            done: None,
            outcome: Outcome::Pending,
        });
        self.schedule(self.now + self.profile.op_timeout, Event::OpTimeout { op });
        op
    }

    /// An operation ends (`kind` refines it with what it saw or answered); its client
    /// thinks, then starts the next one.
    pub fn finish(&mut self, op: usize, outcome: Outcome, kind: Option<OpKind>) {
        let o = &mut self.ops[op];
        if o.outcome != Outcome::Pending {
            return;
        }
        o.outcome = outcome;
        o.done = Some(self.now);
        if let Some(k) = kind {
            o.kind = k;
        }
        match (o.kind.is_write(), outcome, o.read) {
            (true, Outcome::Ok, _) => self.stats.writes_ok += 1,
            (true, Outcome::Info, _) => self.stats.writes_info += 1,
            (false, Outcome::Ok, read) => {
                self.stats.reads_ok += 1;
                self.stats.lease_reads_ok += u64::from(read == ReadMode::Lease);
            }
            _ => {}
        }
        let client = o.client;
        self.mix(&[7, op as u64, outcome as u64]);
        self.note(|w| format!("op {op}: {outcome:?} {:?}", w.ops[op].kind));
        let think = 1_000_000 + self.below(30_000_000);
        self.schedule(self.now + Duration::from_nanos(think), Event::Client { client });
    }

    /// The history the checker sees: ok and info writes, ok reads other than stale ones.
    pub fn history(&self) -> Vec<KvOp> {
        self.ops
            .iter()
            .filter_map(|o| {
                let ret = match (o.outcome, o.kind.is_write(), o.read) {
                    (Outcome::Ok, _, ReadMode::Quorum | ReadMode::Lease) => {
                        Some(o.done.expect("finished").as_nanos())
                    }
                    (Outcome::Info, true, _) => None,
                    _ => return None,
                };
                Some(KvOp { key: o.key.to_string(), kind: o.kind, invoke: o.invoke.as_nanos(), ret })
            })
            .collect()
    }
}

/// The processes of one kind of cluster, run under an `Env` by `run`.
pub(crate) trait World {
    /// Inputs only this world has (`Event::Local`).
    type Local;
    fn env(&mut self) -> &mut Env<Self::Local>;
    /// Whether `node`'s process is running (`&mut`, like `leader`: the worlds of whole
    /// agents reach their processes through one mutable accessor).
    fn is_up(&mut self, node: usize) -> bool;
    /// The live node leading the highest term, if any (the fault injector aims at it).
    fn leader(&mut self) -> Option<usize>;
    fn deliver(&mut self, from: usize, to: usize, bytes: &[u8]) -> Result<(), String>;
    fn tick(&mut self, node: usize) -> Result<(), String>;
    fn persisted(&mut self, node: usize, token: PersistToken) -> Result<(), String>;
    /// Client operation `op` reaches `node`.
    fn request(&mut self, node: usize, op: usize) -> Result<(), String>;
    /// The client is ready for its next operation.
    fn client_op(&mut self, client: usize);
    fn local(&mut self, node: usize, event: Self::Local) -> Result<(), String>;
    /// `node`'s process dies: forget it, and settle the operations that waited on it.
    fn kill(&mut self, node: usize);
    /// Starts `node`'s process again from what its disk held.
    fn revive(&mut self, node: usize, seed: [u8; 32], disk: Recovered) -> Result<(), String>;
    /// Whether `node` has died for good: it is not restarted, not even by the liveness
    /// phase.
    fn stays_down(&mut self, _node: usize) -> bool {
        false
    }
    /// Called every 50 ms of the liveness phase; `Some` ends the run.
    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String>;
}

/// Runs seed `seed` of world `w` to its end, then checks its history; with `traced`, also
/// returns the trace: one line per event handled.
pub(crate) fn run<W: World>(seed: u64, w: &mut W, traced: bool) -> (ClusterOutcome, Vec<String>) {
    w.env().lines = traced.then(Vec::new);
    let violation = drive(w).err();
    let env = w.env();
    let lin =
        if violation.is_some() { LinResult::Unknown } else { crate::lin::check(&env.history(), LIN_BUDGET) };
    let outcome = ClusterOutcome { seed, trace_hash: env.trace, violation, lin, stats: env.stats.clone() };
    (outcome, env.lines.take().unwrap_or_default())
}

/// Runs the world to its end; `Err` is the first invariant that failed.
fn drive<W: World>(w: &mut W) -> Result<(), String> {
    let env = w.env();
    for n in 0..env.machines.len() {
        env.schedule(Time::ZERO, Event::Timer { node: n, life: 0, gen: 0 });
    }
    for c in 0..env.profile.clients {
        let at = Time(env.below(50_000_000));
        env.schedule(at, Event::Client { client: c });
    }
    let p = &env.profile;
    for (every, e) in
        [(p.partition_every, Event::Partition), (p.crash_every, Event::Crash), (p.pause_every, Event::Pause)]
    {
        if every > 0 {
            let at = Time(env.exp(every));
            env.schedule(at, e);
        }
    }
    let phase = env.profile.safety_phase;
    env.schedule(Time::ZERO + phase, Event::Liveness);
    while let Some(((at, _), event)) = w.env().queue.pop_first() {
        let env = w.env();
        env.now = at;
        if env.queue.len() > MAX_QUEUED {
            return env.fail(format!("message storm: {} events queued", env.queue.len()));
        }
        if let Some(done) = handle(w, event)? {
            return done;
        }
    }
    w.env().fail("the event queue ran dry".into())
}

/// Handles one event; `Some` ends the run.
fn handle<W: World>(w: &mut W, event: Event<W::Local>) -> Result<Option<Result<(), String>>, String> {
    let env = w.env();
    let target = match &event {
        Event::Deliver { to, .. } => Some(*to),
        Event::Timer { node, .. }
        | Event::Persisted { node, .. }
        | Event::Request { node, .. }
        | Event::Local { node, .. } => Some(*node),
        // The disk goes on writing while its process is paused.
        _ => None,
    };
    if let Some(node) = target {
        if env.machines[node].paused_until > env.now {
            let at = env.machines[node].paused_until;
            env.schedule(at, event);
            return Ok(None);
        }
    }
    match event {
        Event::Deliver { from, to, bytes } => {
            if !env.blocked.contains(&(from, to)) {
                env.mix(&[1, to as u64, muster_core::fsm::fnv1a(&bytes)]);
                w.deliver(from, to, &bytes)?;
            }
        }
        Event::Timer { node, life, gen } => {
            let m = &env.machines[node];
            if m.life == life && m.timer_gen == gen {
                env.mix(&[2, node as u64]);
                env.note(|_| format!("n{node}: timer"));
                w.tick(node)?;
            }
        }
        Event::Synced { node, life, token } => {
            if env.machines[node].life == life {
                env.mix(&[3, node as u64, token.0]);
                let d = &mut env.machines[node].disk;
                let k = d.pending.iter().take_while(|(t, _)| *t <= token).count();
                for (_, op) in d.pending.drain(..k) {
                    disk::apply(&mut d.durable, op);
                }
            }
        }
        Event::Persisted { node, life, token } => {
            if env.machines[node].life == life {
                env.mix(&[10, node as u64, token.0]);
                env.note(|_| format!("n{node}: persisted through {}", token.0));
                w.persisted(node, token)?;
            }
        }
        Event::Request { node, op } => {
            if env.ops[op].outcome == Outcome::Pending {
                w.request(node, op)?;
            }
        }
        Event::OpTimeout { op } => {
            if env.ops[op].outcome == Outcome::Pending {
                let outcome = if env.ops[op].kind.is_write() { Outcome::Info } else { Outcome::Dropped };
                env.finish(op, outcome, None);
            }
        }
        Event::Client { client } => w.client_op(client),
        Event::Crash => crash(w),
        Event::CrashNode { node } => crash_node(w, node),
        Event::Restart { node } => restart(w, node)?,
        Event::Partition => {
            let leader = w.leader();
            w.env().partition(leader);
        }
        Event::Heal => {
            env.note(|_| "heal".into());
            env.blocked.clear();
        }
        Event::Pause => pause(w),
        Event::Liveness => {
            env.note(|_| "liveness phase: heal, restart, no more faults or new work".into());
            env.liveness_from = Some(env.now);
            env.blocked.clear();
            for n in 0..env.machines.len() {
                w.env().machines[n].paused_until = Time::ZERO;
                restart(w, n)?;
            }
            let env = w.env();
            env.schedule(env.now + Duration::from_millis(50), Event::Check);
        }
        Event::Check => {
            let done = w.liveness_check()?;
            if done.is_none() {
                let env = w.env();
                env.schedule(env.now + Duration::from_millis(50), Event::Check);
            }
            return Ok(done);
        }
        Event::Local { node, event } => w.local(node, event)?,
    }
    Ok(None)
}

/// The crash fault's clock: crash a random node now or, half the time, the next node that
/// starts writing several entries at once, before that write completes (a random crash
/// almost never lands inside a write, and only there can a write tear).
fn crash<W: World>(w: &mut W) {
    let env = w.env();
    if !env.safety_phase() {
        return;
    }
    if env.chance(500) {
        env.crash_mid_append = true;
    } else {
        let node = env.below(env.machines.len() as u64) as usize;
        crash_node(w, node);
    }
    let env = w.env();
    let next = env.exp(env.profile.crash_every);
    env.schedule(env.now + Duration::from_nanos(next), Event::Crash);
}

fn crash_node<W: World>(w: &mut W, node: usize) {
    if w.env().safety_phase() && w.is_up(node) {
        w.env().crash_machine(node);
        w.kill(node);
        let env = w.env();
        let down = 100_000_000 + env.below(1_500_000_000);
        env.schedule(env.now + Duration::from_nanos(down), Event::Restart { node });
    }
}

fn restart<W: World>(w: &mut W, node: usize) -> Result<(), String> {
    if w.is_up(node) || w.stays_down(node) {
        return Ok(());
    }
    let env = w.env();
    let mut seed = [0u8; 32];
    env.rng.fill_bytes(&mut seed);
    let disk = env.machines[node].disk.durable.clone();
    w.revive(node, seed, disk)?;
    let env = w.env();
    let m = &mut env.machines[node];
    m.timer_gen = 0;
    let (life, last) = (m.life, m.disk.durable.entries.last().map(|e| (e.index.0, e.term.0)));
    env.mix(&[9, node as u64]);
    env.note(|_| format!("n{node}: restart, last durable entry (index, term) {last:?}"));
    env.schedule(env.now, Event::Timer { node, life, gen: 0 });
    Ok(())
}

fn pause<W: World>(w: &mut W) {
    if !w.env().safety_phase() {
        return;
    }
    let leader = w.leader();
    let env = w.env();
    env.stats.pauses += 1;
    // Often the leader stalls (a GC pause): the lease scenario of Jepsen 2014.
    let any = env.below(env.machines.len() as u64) as usize;
    let at_leader = env.chance(env.profile.at_leader_per_mille);
    let node = leader.filter(|_| at_leader).unwrap_or(any);
    let len = 50_000_000 + env.below(800_000_000);
    env.machines[node].paused_until = env.now + Duration::from_nanos(len);
    env.note(|_| format!("n{node}: paused for {}ms", len / 1_000_000));
    let next = env.exp(env.profile.pause_every);
    env.schedule(env.now + Duration::from_nanos(len + next), Event::Pause);
}

/// The workload's values are eight little-endian bytes.
pub(crate) fn read_value(bytes: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[..8]);
    u64::from_le_bytes(b)
}

pub(crate) fn fmt_duration(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Runs `seeds` of `world` ("cluster" or "nodes", as `sim replay` names it), asserting
/// every invariant held and every history is linearizable; returns the stats summed.
#[cfg(test)]
pub(crate) fn check_seeds(world: &str, seeds: u64, run: impl Fn(u64) -> ClusterOutcome) -> ClusterStats {
    let mut t = ClusterStats::default();
    for seed in 0..seeds {
        let o = run(seed);
        assert_eq!(o.violation, None, "replay: cargo run -p sim -- replay --{world} --seed {seed} --trace");
        assert_eq!(o.lin, LinResult::Ok, "{world} seed {seed}: linearizability");
        let s = o.stats;
        t.writes_ok += s.writes_ok;
        t.reads_ok += s.reads_ok;
        t.lease_reads_ok += s.lease_reads_ok;
        t.crashes += s.crashes;
        t.partitions += s.partitions;
        t.pauses += s.pauses;
        t.snapshots_installed += s.snapshots_installed;
        t.torn_writes += s.torn_writes;
        t.terms += s.terms;
    }
    if seeds >= 10 {
        assert!(t.writes_ok > 0 && t.reads_ok > 0 && t.lease_reads_ok > 0, "{t:?}");
        assert!(t.crashes > 0 && t.partitions > 0 && t.pauses > 0, "{t:?}");
        assert!(t.torn_writes > 0, "no crash tore an append: {t:?}");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clocks_convert_both_ways() {
        let c = Clock { offset: 5_000, drift_ppm: -7_000 };
        for g in [0u64, 1, 999, 123_456_789] {
            let l = c.local(Time(g));
            assert!(c.global(l) <= Time(g) && c.local(c.global(l)) >= l);
        }
    }
}
