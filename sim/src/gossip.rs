//! The gossip world: 5–12 members of one LAN pool (`muster_core::gossip`), all joining
//! through one or two seeds, under chaos for a fault phase, then healed and watched until
//! they agree. `scale` (`sim gossip-scale`) runs thousands of members on the same engine.
//!
//! Owns this world's faults and invariants. Each seed draws a profile: benign (loss ≤ 5%,
//! delay ≤ probe_timeout/2, at most one member paused ≤ 2 s at a time, no partitions) or
//! harsh (a slow tail, up to 15% loss, partitions: halves, one isolated, one deaf; long and
//! overlapping pauses; sometimes plain SWIM instead of Lifeguard). Both crash members: some
//! stay down for good (a few of those leave gracefully first), the rest restart as a new
//! `Gossip` with the same name and address and join again. Packets are typed; a sample goes
//! through `wire::Codec::plain()` and back. Checked:
//! - convergence: within 3 push-pull intervals plus a detection allowance after the faults
//!   end, every running member sees exactly the running members alive and every member
//!   down for good as failed or left (or has never heard of it: memberlist does not add a
//!   member it first hears of as dead);
//! - no false dead: on benign seeds with Lifeguard, no member that never stopped is
//!   declared failed by anyone (harsh seeds count them; convergence covers the refutation);
//! - incarnations: what one member process believes about another's incarnation never
//!   goes down while it remembers it;
//! - user events: each reaches every member process at most once; by the end of the run
//!   (3 push-pull intervals after convergence), one fired during the faults and held by
//!   any member that never stopped has reached every such member that had joined by
//!   then exactly once (a straggler gets a few more push-pull rounds), even one cut off by a partition or
//!   losing packets (push-pull carries the recent events, as serf's does), and one fired
//!   after convergence every running member exactly once.
//!
//! Never uses real time or OS randomness: each seed runs to one trace hash.

mod engine;
pub mod scale;

use std::collections::BTreeMap;

use muster_core::gossip::{Change, Gossip, GossipConfig, GossipEffect, GossipInput, Identity, State, Tags};
use muster_core::rng::{Rng, Stream};
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use engine::{addr, name, Engine, NetModel, NetStats, Step};

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;
/// Faults (and new user events) stop here.
const FAULT_PHASE: Duration = Duration::from_secs(60);
/// A member still answering nothing this long after the heal has not converged.
const DETECTION_ALLOWANCE: Duration = Duration::from_secs(40);
/// How long convergence must then hold, with a user event fired at its start: by its end
/// every event has reached every member, through gossip or, failing that, push-pull.
const SETTLE: Duration = Duration::from_secs(90);
/// The latest an event may arrive by push-pull alone: 20 push-pull intervals after
/// convergence (with one holder left among six members, a miss is 0.64^20 ≈ 1e-4 likely).
const EVENT_DEADLINE: Duration = Duration::from_secs(600);

/// The result of one seed of the gossip world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipOutcome {
    pub seed: u64,
    pub trace_hash: u64,
    pub violation: Option<String>,
    pub stats: GossipStats,
}

/// What happened, so tests can check the faults were exercised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GossipStats {
    pub members: usize,
    pub benign: bool,
    pub lifeguard: bool,
    pub crashes: u64,
    pub restarts: u64,
    pub down_for_good: u64,
    pub leaves: u64,
    pub partitions: u64,
    pub pauses: u64,
    pub user_events: u64,
    /// Failed declarations (by any member) about a member that never stopped.
    pub false_dead: u64,
    /// Failed declarations about members that were down.
    pub true_dead: u64,
    /// From the end of the faults to agreement.
    pub converged_ms: u64,
    pub packets: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub codec_round_trips: u64,
    pub events: u64,
}

/// The faults one seed turns on.
#[derive(Debug, Clone)]
struct Profile {
    members: usize,
    seeds: usize,
    benign: bool,
    lifeguard: bool,
    net: NetModel,
    /// Mean gaps between faults of each kind (ns); 0 is off.
    crash_every: u64,
    pause_every: u64,
    pause_max: u64,
    partition_every: u64,
    user_events: u64,
}

impl Profile {
    fn draw(r: &mut ChaCha8Rng) -> Profile {
        let mut below = |n: u64| r.next_u64() % n.max(1);
        let members = 5 + below(8) as usize;
        let seeds = 1 + below(2) as usize;
        let benign = below(2) == 0;
        let codec_per_mille = 20;
        if benign {
            Profile {
                members,
                seeds,
                benign,
                lifeguard: true,
                net: NetModel {
                    delay_min: 100_000 + below(2 * MS),
                    delay_mean: 500_000 + below(30 * MS),
                    // Half the probe timeout.
                    delay_cap: 250 * MS,
                    tail_per_mille: 0,
                    tail_mean: 0,
                    loss_per_mille: below(51),
                    dup_per_mille: below(30),
                    codec_per_mille,
                    slow_extra: (0, 0),
                    faults: true,
                },
                crash_every: if below(3) > 0 { 10 * S + below(30 * S) } else { 0 },
                pause_every: if below(3) > 0 { 3 * S + below(15 * S) } else { 0 },
                pause_max: 2 * S,
                partition_every: 0,
                user_events: 1 + below(3),
            }
        } else {
            Profile {
                members,
                seeds,
                benign,
                lifeguard: below(5) > 0,
                net: NetModel {
                    delay_min: 100_000 + below(5 * MS),
                    delay_mean: 500_000 + below(60 * MS),
                    delay_cap: 0,
                    tail_per_mille: if below(2) == 0 { 1 + below(60) } else { 0 },
                    tail_mean: 300 * MS + below(2 * S),
                    loss_per_mille: below(151),
                    dup_per_mille: below(60),
                    codec_per_mille,
                    slow_extra: (0, 0),
                    faults: true,
                },
                crash_every: if below(4) > 0 { 5 * S + below(20 * S) } else { 0 },
                pause_every: if below(2) == 0 { 3 * S + below(10 * S) } else { 0 },
                pause_max: 8 * S,
                partition_every: if below(4) > 0 { 5 * S + below(20 * S) } else { 0 },
                user_events: 1 + below(4),
            }
        }
    }
}

/// This world's own events.
#[derive(Debug)]
enum W {
    Join { node: usize },
    Crash,
    Restart { node: usize },
    Partition,
    Heal,
    Pause,
    PauseOver,
    Fire,
    FaultsEnd,
    Check,
    Settled,
}

/// What becomes of a member that stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Running,
    /// Down, to restart (at the latest when the faults end).
    Restarting,
    /// Down for good (or leaving, then down for good).
    Gone,
}

struct GossipWorld {
    seed: u64,
    p: Profile,
    cfg: GossipConfig,
    e: Engine<W>,
    fate: Vec<Fate>,
    /// Stopped at least once (crashed, or left).
    stopped: Vec<bool>,
    /// Was at one end of a blocked link at some point.
    cut_off: Vec<bool>,
    /// When each member's first process finished joining (the founding seed: at once).
    joined_at: Vec<Option<Time>>,
    /// When each fault-phase user event was fired (by event number).
    fired_at: BTreeMap<u64, Time>,
    /// Per member process: the incarnation it last saw of each member (by index).
    seen_inc: Vec<Vec<Option<u32>>>,
    /// Per member process: how many times it delivered each user event (by event number).
    delivered: Vec<BTreeMap<u64, u32>>,
    /// User events fired during the faults (by number), and the one fired after.
    fault_events: Vec<u64>,
    final_event: Option<u64>,
    next_event: u64,
    tokens: u64,
    pausing: bool,
    faults_end: Option<Time>,
    converged: Option<Time>,
    stats: GossipStats,
    lines: Option<Vec<String>>,
}

/// Runs one seed of the gossip world.
pub fn run_gossip_seed(seed: u64) -> GossipOutcome {
    GossipWorld::new(seed, false).run().0
}

/// Like `run_gossip_seed`, also returning the trace: faults, joins, member changes, events.
pub fn run_gossip_traced(seed: u64) -> (GossipOutcome, Vec<String>) {
    GossipWorld::new(seed, true).run()
}

/// Per-member randomness: the master stream's draw, on the gossip stream.
fn member_rng(e: &mut Engine<W>) -> Rng {
    member_rng_from(&mut e.rng)
}

fn member_rng_from(master: &mut ChaCha8Rng) -> Rng {
    let mut seed = [0u8; 32];
    master.fill_bytes(&mut seed);
    Rng::new(seed, Stream::Gossip)
}

fn identity(i: usize) -> Identity {
    let mut tags = Tags::new();
    tags.insert("role".into(), if i.is_multiple_of(3) { "consul".into() } else { "node".into() });
    tags.insert("dc".into(), "dc1".into());
    Identity { name: name(i), addr: addr(i), tags }
}

impl GossipWorld {
    fn new(seed: u64, traced: bool) -> GossipWorld {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x6f55_1b0b_d00d_5eed);
        let p = Profile::draw(&mut rng);
        let n = p.members;
        let cfg = GossipConfig { lifeguard: p.lifeguard, ..GossipConfig::lan() };
        let e = Engine::new(rng, n, p.net.clone(), true);
        let stats =
            GossipStats { members: n, benign: p.benign, lifeguard: p.lifeguard, ..Default::default() };
        GossipWorld {
            seed,
            cfg,
            e,
            fate: vec![Fate::Running; n],
            stopped: vec![false; n],
            cut_off: vec![false; n],
            joined_at: (0..n).map(|i| (i == 0).then_some(Time::ZERO)).collect(),
            fired_at: BTreeMap::new(),
            seen_inc: vec![vec![None; n]; n],
            delivered: vec![BTreeMap::new(); n],
            fault_events: Vec::new(),
            final_event: None,
            next_event: 0,
            tokens: 0,
            pausing: false,
            faults_end: None,
            converged: None,
            stats,
            lines: traced.then(Vec::new),
            p,
        }
    }

    fn note(&mut self, line: impl FnOnce() -> String) {
        if let Some(lines) = &mut self.lines {
            lines.push(format!("{} {}", self.e.now, line()));
        }
    }

    fn fail<T>(&self, what: String) -> Result<T, String> {
        Err(format!("at {}: {what}", self.e.now))
    }

    fn n(&self) -> usize {
        self.p.members
    }

    fn run(mut self) -> (GossipOutcome, Vec<String>) {
        let violation = self.drive().err();
        let NetStats { packets, lost, duplicated, codec_round_trips, events, .. } = self.e.stats.clone();
        let stats =
            GossipStats { packets, lost, duplicated, codec_round_trips, events, ..self.stats.clone() };
        let outcome = GossipOutcome { seed: self.seed, trace_hash: self.e.trace, violation, stats };
        (outcome, self.lines.take().unwrap_or_default())
    }

    fn drive(&mut self) -> Result<(), String> {
        for i in 0..self.n() {
            let g = Gossip::new(self.cfg.clone(), identity(i), member_rng(&mut self.e));
            self.e.boot(i, g);
            let at = Time(self.e.below(3 * S));
            self.e.world(at, W::Join { node: i });
        }
        let p = self.p.clone();
        for (every, w) in
            [(p.crash_every, W::Crash), (p.pause_every, W::Pause), (p.partition_every, W::Partition)]
        {
            if every > 0 {
                let at = Time(8 * S + self.e.exp(every));
                self.e.world(at, w);
            }
        }
        for _ in 0..p.user_events {
            let at = Time(10 * S + self.e.below(45 * S));
            self.e.world(at, W::Fire);
        }
        self.e.world(Time::ZERO + FAULT_PHASE, W::FaultsEnd);
        while let Some(step) = self.e.step() {
            if let Some(why) = self.e.wire_failure.take() {
                return self.fail(why);
            }
            if self.e.queued() > 200_000 {
                return self.fail(format!("message storm: {} events queued", self.e.queued()));
            }
            match step {
                Step::Idle => {}
                Step::Node(node) => self.observe(node)?,
                Step::World(w) => {
                    if self.world(w)? {
                        return Ok(());
                    }
                }
            }
        }
        self.fail("the event queue ran dry".into())
    }

    /// Checks what a member process did in its last step.
    fn observe(&mut self, node: usize) -> Result<(), String> {
        let observed = std::mem::take(&mut self.e.observed);
        for (_, effect) in &observed {
            match effect {
                GossipEffect::Member { change, member } => {
                    let Some(j) = engine::index(&member.addr) else { continue };
                    self.e.mix(&[5, node as u64, j as u64, *change as u64]);
                    self.note(|| format!("n{node}: n{j} {change:?}"));
                    if *change == Change::Failed {
                        if self.stopped[j] {
                            self.stats.true_dead += 1;
                        } else {
                            self.stats.false_dead += 1;
                            if self.p.benign && self.p.lifeguard {
                                return self.fail(format!(
                                    "n{node} declared n{j} failed, though n{j} never stopped (benign profile, Lifeguard on)"
                                ));
                            }
                        }
                    }
                }
                GossipEffect::UserEvent { name, ltime, .. } => {
                    let Some(k) = name.strip_prefix("ev").and_then(|k| k.parse::<u64>().ok()) else {
                        return self.fail(format!("n{node} delivered an event nobody fired: {name:?}"));
                    };
                    self.e.mix(&[6, node as u64, k, ltime.0]);
                    self.note(|| format!("n{node}: user event {name} at ltime {}", ltime.0));
                    let count = self.delivered[node].entry(k).or_insert(0);
                    *count += 1;
                    let count = *count;
                    if count > 1 {
                        return self.fail(format!("n{node} delivered user event {name} {count} times"));
                    }
                }
                GossipEffect::Joined { token, result } => {
                    self.e.mix(&[7, node as u64, *token, u64::from(result.is_ok())]);
                    self.note(|| format!("n{node}: join {token}: {result:?}"));
                    if result.is_ok() && !self.stopped[node] && self.joined_at[node].is_none() {
                        self.joined_at[node] = Some(self.e.now);
                    }
                    if result.is_err() && self.fate[node] == Fate::Running {
                        let at = self.e.now + Duration::from_secs(2);
                        self.e.world(at, W::Join { node });
                    }
                }
                GossipEffect::Left => {
                    self.note(|| format!("n{node}: left, stops"));
                    self.e.kill(node);
                }
                GossipEffect::SendPacket { .. } | GossipEffect::SendStream { .. } => {}
                GossipEffect::Query { .. } | GossipEffect::Answers { .. } => {
                    return self.fail(format!("n{node} saw a query, and this world asks none"));
                }
            }
        }
        self.e.observed = observed;
        self.check_incarnations(node)
    }

    fn check_incarnations(&mut self, node: usize) -> Result<(), String> {
        let Some(g) = self.e.hosts[node].g.as_ref() else { return Ok(()) };
        let seen = &mut self.seen_inc[node];
        let mut known = vec![false; seen.len()];
        for m in g.members() {
            let Some(j) = engine::index(&m.id.addr) else { continue };
            known[j] = true;
            if let Some(before) = seen[j] {
                if m.incarnation.0 < before {
                    let now = m.incarnation.0;
                    return self
                        .fail(format!("n{node} saw n{j}'s incarnation go back from {before} to {now}"));
                }
            }
            seen[j] = Some(m.incarnation.0);
        }
        for (j, k) in known.into_iter().enumerate() {
            if !k {
                seen[j] = None;
            }
        }
        Ok(())
    }

    /// A running member, not paused and not on its way out, chosen at random.
    fn pick_running(&mut self, also: impl Fn(&GossipWorld, usize) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.n())
            .filter(|i| {
                self.fate[*i] == Fate::Running && self.e.up(*i) && !self.e.paused(*i) && also(self, *i)
            })
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.e.below(candidates.len() as u64) as usize])
    }

    /// Who fires a user event: a running member holding the highest event clock. A member
    /// ignores events stamped below the pool's event clock when it joined (serf's
    /// ignore-old join, as Consul joins), and Lamport clocks climb unevenly, so an event
    /// from a member with a lower clock may rightly never reach a member that joined just
    /// before; from the highest clock it must reach everyone.
    fn pick_firer(&mut self) -> Option<usize> {
        let clock = |w: &GossipWorld, i: usize| w.e.hosts[i].g.as_ref().map_or(0, |g| g.event_clock().0);
        let top = (0..self.n())
            .filter(|i| self.fate[*i] == Fate::Running && !self.e.paused(*i))
            .map(|i| clock(self, i))
            .max()?;
        self.pick_running(|w, i| clock(w, i) == top)
    }

    fn join(&mut self, node: usize) {
        if !self.e.up(node) || self.fate[node] != Fate::Running {
            return;
        }
        let mut addrs: Vec<_> = (0..self.p.seeds).filter(|s| *s != node).map(addr).collect();
        if self.e.hosts[node].life > 1 || self.e.below(4) == 0 {
            // A restarted member (or a retry) also knows one other member, as retry_join lists do.
            let other = self.e.below(self.n() as u64) as usize;
            if other != node && !addrs.contains(&addr(other)) {
                addrs.push(addr(other));
            }
        }
        if addrs.is_empty() {
            return;
        }
        if self.e.paused(node) {
            let at = self.e.hosts[node].paused_until;
            self.e.world(at, W::Join { node });
            return;
        }
        self.tokens += 1;
        let token = self.tokens;
        self.note(|| format!("n{node}: join {token} through {addrs:?}"));
        let _ = self.e.input(node, GossipInput::Join { token, addrs });
    }

    /// Handles a world event; true ends the run.
    fn world(&mut self, w: W) -> Result<bool, String> {
        let faulting = self.faults_end.is_none();
        match w {
            W::Join { node } => {
                self.join(node);
                if self.e.up(node) {
                    self.observe(node)?;
                }
            }
            W::Crash if faulting => {
                self.crash();
                let next = self.e.exp(self.p.crash_every);
                self.e.world(self.e.now + Duration::from_nanos(next), W::Crash);
            }
            W::Restart { node } => self.restart(node)?,
            W::Partition if faulting => {
                self.partition();
                let heal = self.e.between(3 * S, 25 * S);
                self.e.world(self.e.now + heal, W::Heal);
                let next = heal + Duration::from_nanos(self.e.exp(self.p.partition_every));
                self.e.world(self.e.now + next, W::Partition);
            }
            W::Heal => {
                self.note(|| "heal".into());
                self.e.blocked.clear();
            }
            W::Pause if faulting => self.pause(),
            W::PauseOver => self.pausing = false,
            W::Fire if faulting => {
                if let Some(node) = self.pick_firer() {
                    let k = self.fire(node)?;
                    self.fault_events.push(k);
                }
            }
            W::FaultsEnd => self.faults_end()?,
            W::Check => {
                let end = self.faults_end.expect("checks run after the faults");
                match self.disagreement() {
                    None => {
                        self.converged = Some(self.e.now);
                        self.stats.converged_ms = self.e.now.since(end).as_millis() as u64;
                        self.note(|| "converged".into());
                        let node = self.pick_firer().expect("someone runs");
                        self.final_event = Some(self.fire(node)?);
                        self.e.world(self.e.now + SETTLE, W::Settled);
                    }
                    Some(why) => {
                        let bound = self.cfg.push_pull_interval * 3 + DETECTION_ALLOWANCE;
                        if self.e.now.since(end) > bound {
                            return self.fail(format!(
                                "no agreement {}s after the faults ended: {why}",
                                bound.as_secs()
                            ));
                        }
                        self.e.world(self.e.now + Duration::from_secs(1), W::Check);
                    }
                }
            }
            W::Settled => {
                if let Some(why) = self.disagreement() {
                    return self.fail(format!("agreement did not hold for {}s: {why}", SETTLE.as_secs()));
                }
                // A member may still lack an event only push-pull with one particular other
                // member can bring it (the only holder left): that takes a few rounds more.
                let converged = self.converged.expect("settling after convergence");
                let last_chance = self.e.now.since(converged) >= EVENT_DEADLINE;
                if let Err(why) = self.check_events() {
                    if last_chance {
                        return Err(why);
                    }
                    self.e.world(self.e.now + Duration::from_secs(5), W::Settled);
                    return Ok(false);
                }
                return Ok(true);
            }
            W::Crash | W::Partition | W::Pause | W::Fire => {}
        }
        Ok(false)
    }

    fn fire(&mut self, node: usize) -> Result<u64, String> {
        let k = self.next_event;
        self.next_event += 1;
        self.stats.user_events += 1;
        self.note(|| format!("n{node}: fires user event ev{k}"));
        self.fired_at.insert(k, self.e.now);
        let payload = vec![k as u8; (k % 7) as usize];
        if let Err(e) = self.e.input(node, GossipInput::UserEvent { name: format!("ev{k}"), payload }) {
            return self.fail(format!("n{node} refused user event ev{k}: {e}"));
        }
        self.observe(node)?;
        Ok(k)
    }

    fn crash(&mut self) {
        let n = self.n();
        let running = (0..n).filter(|i| self.fate[*i] == Fate::Running).count();
        if running <= n / 2 + 1 {
            return;
        }
        let Some(node) = self.pick_running(|_, _| true) else { return };
        let gone = self.fate.iter().filter(|f| **f == Fate::Gone).count();
        let for_good = node >= self.p.seeds && gone < (n / 4).max(1) && self.e.chance(350);
        self.stopped[node] = true;
        self.stats.crashes += 1;
        if for_good {
            self.fate[node] = Fate::Gone;
            self.stats.down_for_good += 1;
            if self.e.chance(400) {
                self.stats.leaves += 1;
                self.note(|| format!("n{node}: leaves for good"));
                let _ = self.e.input(node, GossipInput::Leave);
                let _ = self.observe(node);
                return;
            }
            self.note(|| format!("n{node}: crashes for good"));
        } else {
            self.fate[node] = Fate::Restarting;
            let down = self.e.between(2 * S, 25 * S);
            self.note(|| format!("n{node}: crashes, back in {}ms", down.as_millis()));
            self.e.world(self.e.now + down, W::Restart { node });
        }
        self.e.mix(&[8, node as u64]);
        self.e.kill(node);
    }

    fn restart(&mut self, node: usize) -> Result<(), String> {
        if self.fate[node] != Fate::Restarting {
            return Ok(());
        }
        self.fate[node] = Fate::Running;
        self.stats.restarts += 1;
        self.seen_inc[node] = vec![None; self.n()];
        self.delivered[node].clear();
        self.e.mix(&[9, node as u64]);
        self.note(|| format!("n{node}: restarts as a new process"));
        let g = Gossip::new(self.cfg.clone(), identity(node), member_rng(&mut self.e));
        self.e.boot(node, g);
        let at = self.e.now + Duration::from_millis(1 + self.e.below(500));
        self.e.world(at, W::Join { node });
        Ok(())
    }

    fn partition(&mut self) {
        let n = self.n();
        self.stats.partitions += 1;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.e.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        let mut side = vec![false; n];
        let mode = self.e.below(3);
        match mode {
            0 => {
                let size = 1 + self.e.below((n / 2) as u64) as usize;
                for k in &order[..size] {
                    side[*k] = true;
                }
            }
            _ => side[order[0]] = true,
        }
        // Mode 2: the one node hears nobody, but is heard.
        let one_way = mode == 2;
        self.e.blocked.clear();
        for a in 0..n {
            for b in 0..n {
                if a != b && side[a] != side[b] && !(one_way && side[a]) {
                    self.e.blocked.insert((a, b));
                    self.cut_off[a] = true;
                    self.cut_off[b] = true;
                }
            }
        }
        let kind = ["halves", "one isolated", "one deaf"][mode as usize];
        self.e.mix(&[10, mode]);
        let blocked = self.e.blocked.clone();
        self.note(|| format!("partition, {kind}: blocked (from, to) {blocked:?}"));
    }

    fn pause(&mut self) {
        let next_gap = self.e.exp(self.p.pause_every);
        if self.p.benign && self.pausing {
            self.e.world(self.e.now + Duration::from_nanos(next_gap), W::Pause);
            return;
        }
        if let Some(node) = self.pick_running(|_, _| true) {
            let len = self.e.between(100 * MS, self.p.pause_max + 1);
            self.stats.pauses += 1;
            self.e.hosts[node].paused_until = self.e.now + len;
            self.pausing = true;
            self.e.world(self.e.now + len, W::PauseOver);
            self.e.mix(&[11, node as u64, len.as_nanos() as u64]);
            self.note(|| format!("n{node}: paused for {}ms", len.as_millis()));
            // A benign profile pauses one member at a time.
            let after = if self.p.benign { len } else { Duration::ZERO };
            self.e.world(self.e.now + after + Duration::from_nanos(next_gap), W::Pause);
        }
    }

    /// The faults end: links heal, the network stops losing, duplicating and stalling,
    /// members that were to restart do; pauses run out.
    fn faults_end(&mut self) -> Result<(), String> {
        self.e.blocked.clear();
        self.e.net.faults = false;
        for node in 0..self.n() {
            self.restart(node)?;
        }
        let end = (0..self.n()).map(|i| self.e.hosts[i].paused_until).fold(self.e.now, Time::max);
        self.faults_end = Some(end);
        self.note(|| format!("faults end; pauses over at {end}"));
        self.e.world(end + Duration::from_secs(1), W::Check);
        Ok(())
    }

    /// Why the running members do not (yet) agree, if they do not.
    fn disagreement(&self) -> Option<String> {
        let n = self.n();
        for i in (0..n).filter(|i| self.e.up(*i)) {
            let g = self.e.hosts[i].g.as_ref().expect("up");
            for j in 0..n {
                let state = g.member(&name(j)).map(|m| m.state);
                let running = self.fate[j] == Fate::Running;
                let ok = if running {
                    state == Some(State::Alive)
                } else {
                    matches!(state, None | Some(State::Dead | State::Left))
                };
                if !ok {
                    let fate = self.fate[j];
                    return Some(format!("n{i} sees n{j} as {state:?}, but n{j} is {fate:?}"));
                }
            }
        }
        None
    }

    fn check_events(&self) -> Result<(), String> {
        for i in (0..self.n()).filter(|i| self.e.up(*i)) {
            let got = |k: u64| self.delivered[i].get(&k).copied().unwrap_or(0);
            if let Some(k) = self.final_event {
                if got(k) != 1 {
                    return self.fail(format!(
                        "n{i} delivered ev{k}, fired after convergence, {} times (want once)",
                        got(k)
                    ));
                }
            }
            if self.stopped[i] {
                continue;
            }
            // A member ignores events from before it joined (Consul joins ignoring old ones).
            let joined = self.joined_at[i].unwrap_or(Time::MAX);
            for &k in &self.fault_events {
                // An event whose firer stopped before telling anyone is rightly lost; one
                // that any member which never stopped holds must reach them all.
                let held = (0..self.n()).any(|j| !self.stopped[j] && self.delivered[j].contains_key(&k));
                if held && joined < self.fired_at[&k] && got(k) != 1 {
                    let cut = if self.cut_off[i] { ", though cut off for a while" } else { "" };
                    return self.fail(format!(
                        "n{i}, never stopped{cut}, delivered ev{k} {} times (want once)",
                        got(k)
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gossip_seeds_hold_every_invariant_and_replay() {
        let seeds: u64 = std::env::var("SIM_GOSSIP_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(8);
        let mut t = GossipStats::default();
        let (mut benign, mut harsh) = (0, 0);
        for seed in 0..seeds {
            let o = run_gossip_seed(seed);
            assert_eq!(
                o.violation, None,
                "replay: cargo run -p sim -- replay --gossip --seed {seed} --trace"
            );
            assert_eq!(
                run_gossip_seed(seed).trace_hash,
                o.trace_hash,
                "gossip seed {seed} is not deterministic"
            );
            let s = o.stats;
            if s.benign {
                benign += 1;
            } else {
                harsh += 1;
            }
            t.crashes += s.crashes;
            t.restarts += s.restarts;
            t.partitions += s.partitions;
            t.pauses += s.pauses;
            t.codec_round_trips += s.codec_round_trips;
            t.user_events += s.user_events;
            t.true_dead += s.true_dead;
        }
        assert!(benign > 0 && harsh > 0, "both profiles ran");
        assert!(t.crashes > 0 && t.restarts > 0 && t.partitions > 0 && t.pauses > 0, "{t:?}");
        assert!(t.codec_round_trips > 0 && t.true_dead > 0 && t.user_events > 0, "{t:?}");
    }
}
