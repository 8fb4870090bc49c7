//! `sim gossip-scale --nodes N`: one LAN pool of thousands of members on the gossip
//! engine, every member starting with the whole pool in its table (the `Arc<Identity>`s
//! shared, through `Gossip::assume_alive`), on a quiet network (0.2 ms + exp(2 ms), no
//! loss). Measures how fast a user event spreads, how fast a crash is seen everywhere,
//! and how many false failures slow-but-alive members cause with Lifeguard and without.
//!
//! Owns the measurements, not the checks of the seeded world; on demand only (not in CI).

use std::sync::Arc;
use std::time::Instant;

use muster_core::gossip::{Change, Gossip, GossipConfig, GossipEffect, GossipInput, Identity, Incarnation};
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use super::engine::{addr, index, name, Engine, NetModel, Step};
use super::member_rng_from;

const MS: u64 = 1_000_000;
const S: u64 = 1_000 * MS;

/// What a scale run is asked to do.
#[derive(Debug, Clone)]
pub struct ScaleOptions {
    pub nodes: usize,
    pub seed: u64,
    pub lifeguard: bool,
    /// The slow members of the false-failure comparison.
    pub slow: SlowModel,
    /// How long the comparison watches for false failures.
    pub window: Duration,
}

/// Slow-but-alive members, as in the Lifeguard paper's setting: a member starved of CPU
/// (or stuck in GC, or behind an overloaded NIC) that still runs but handles messages late.
#[derive(Debug, Clone)]
pub struct SlowModel {
    /// Share of members that are slow, per ten thousand (at least one member).
    pub per_10k: u64,
    /// Extra time, uniform in `[lo, hi)` ns and drawn per message, before a slow member
    /// handles a packet or stream it received, and again before one it sends leaves (a
    /// message between two slow members pays both). Its timers still fire on time.
    pub delay: (u64, u64),
    /// Stalls (`None`: none): for a length uniform in the first range the member does
    /// nothing at all, its timers and inbound queue waiting, then works off the backlog;
    /// the next stall starts a gap uniform in the second range later.
    pub stall: Option<((u64, u64), (u64, u64))>,
}

impl SlowModel {
    /// The model the comparison reports (LIFEGUARD_REPORT.md): 2% of the members are slow;
    /// each message they receive is handled, and each they send leaves, 2–15 s late (drawn
    /// per message); no stalls.
    pub fn standard() -> SlowModel {
        SlowModel { per_10k: 200, delay: (2 * S, 15 * S), stall: None }
    }
}

impl std::fmt::Display for SlowModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = |ns: u64| ns as f64 / S as f64;
        write!(
            f,
            "{}% slow, each message {}–{} s late",
            self.per_10k as f64 / 100.0,
            s(self.delay.0),
            s(self.delay.1)
        )?;
        if let Some(((l0, l1), (g0, g1))) = self.stall {
            write!(f, ", stalls of {}–{} s every {}–{} s", s(l0), s(l1), s(g0), s(g1))?;
        }
        Ok(())
    }
}

/// One pool's measurements.
#[derive(Debug, Clone, Default)]
pub struct Spread {
    /// From firing to 99.99% (and to all) of the members delivering the event.
    pub event_9999: Option<Duration>,
    pub event_all: Option<Duration>,
    /// From the crash to the first, the 99.99th percentile and the last live member
    /// marking the crashed one failed.
    pub crash_first: Option<Duration>,
    pub crash_9999: Option<Duration>,
    pub crash_all: Option<Duration>,
}

/// False failures in one comparison run: `Failed` effects about members that never
/// crashed, indexed `[declarer][target]` with 0 = healthy, 1 = slow.
#[derive(Debug, Clone, Default)]
pub struct FalseDead {
    pub lifeguard: bool,
    pub slow: usize,
    /// Every member that turned a live one failed in its own table (whether its own
    /// suspicion timer fired or it believed another member's dead notice).
    pub views: [[u64; 2]; 2],
    /// Of `views`, those the declarer's own suspicion timer produced: the originals.
    pub own: [[u64; 2]; 2],
    /// Members falsely declared failed by at least one other member.
    pub distinct: usize,
}

impl FalseDead {
    pub fn total(&self) -> u64 {
        self.views.iter().flatten().sum()
    }

    pub fn about_slow(&self) -> u64 {
        self.views[0][1] + self.views[1][1]
    }

    pub fn about_healthy(&self) -> u64 {
        self.views[0][0] + self.views[1][0]
    }

    pub fn by_slow(&self) -> u64 {
        self.views[1][0] + self.views[1][1]
    }

    pub fn by_healthy(&self) -> u64 {
        self.views[0][0] + self.views[0][1]
    }

    /// Adds another run's counts (several seeds).
    pub fn add(&mut self, o: &FalseDead) {
        for d in 0..2 {
            for t in 0..2 {
                self.views[d][t] += o.views[d][t];
                self.own[d][t] += o.own[d][t];
            }
        }
        self.slow += o.slow;
        self.distinct += o.distinct;
    }
}

impl std::fmt::Display for FalseDead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let [[hh, hs], [sh, ss]] = self.views;
        let [[ohh, ohs], [osh, oss]] = self.own;
        write!(
            f,
            "{} false failed declarations: about slow {}, about healthy {}; by slow {}, by healthy {} \
             [healthy→healthy {hh} (own timer {ohh}), healthy→slow {hs} ({ohs}), slow→healthy {sh} ({osh}), \
             slow→slow {ss} ({oss})]; {} members falsely failed",
            self.total(),
            self.about_slow(),
            self.about_healthy(),
            self.by_slow(),
            self.by_healthy(),
            self.distinct
        )
    }
}

/// Simulator speed and size for one run.
#[derive(Debug, Clone, Default)]
pub struct Speed {
    pub nodes: usize,
    pub build: std::time::Duration,
    pub simulated: Duration,
    pub wall: std::time::Duration,
    pub events: u64,
}

impl Speed {
    fn of(e: &Engine<()>, nodes: usize, build: std::time::Duration, wall: std::time::Instant) -> Speed {
        Speed {
            nodes,
            build,
            simulated: e.now.since(Time::ZERO),
            wall: wall.elapsed(),
            events: e.stats.events,
        }
    }

    pub fn node_seconds_per_second(&self) -> f64 {
        self.nodes as f64 * self.simulated.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)
    }
}

impl std::fmt::Display for Speed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} members, built in {:.1}s; {:.0}s simulated in {:.1}s wall, {} events: {:.0} node-seconds per wall second",
            self.nodes,
            self.build.as_secs_f64(),
            self.simulated.as_secs_f64(),
            self.wall.as_secs_f64(),
            self.events,
            self.node_seconds_per_second()
        )
    }
}

/// The pool: every member knows every other, alive at incarnation 1.
fn build(opts: &ScaleOptions, lifeguard: bool, seed_salt: u64) -> (Engine<()>, std::time::Duration) {
    let started = Instant::now();
    let n = opts.nodes;
    let rng = ChaCha8Rng::seed_from_u64(opts.seed ^ seed_salt);
    let net = NetModel {
        delay_min: 200_000,
        delay_mean: 2 * MS,
        delay_cap: 0,
        tail_per_mille: 0,
        tail_mean: 0,
        loss_per_mille: 0,
        dup_per_mille: 0,
        codec_per_mille: 0,
        slow_extra: opts.slow.delay,
        faults: true,
    };
    let mut e: Engine<()> = Engine::new(rng, n, net, true);
    let cfg = GossipConfig { lifeguard, ..GossipConfig::lan() };
    let mut ids: Vec<Arc<Identity>> = (0..n)
        .map(|i| Arc::new(Identity { name: name(i), addr: addr(i), tags: Default::default() }))
        .collect();
    // In name order, so every table is built from a sorted run.
    ids.sort_by(|a, b| a.name.cmp(&b.name));
    for id in &ids {
        let i = index(&id.addr).expect("addresses are a<i>");
        let mut g = Gossip::new(cfg.clone(), (**id).clone(), member_rng_from(&mut e.rng));
        g.assume_alive(ids.iter().filter(|o| o.name != id.name).map(|o| (o.clone(), Incarnation(1))));
        e.boot(i, g);
    }
    (e, started.elapsed())
}

/// Runs the pool until `until`, handing every member effect to `seen` (time, observer, effect).
fn run_until(e: &mut Engine<()>, until: Time, mut seen: impl FnMut(Time, usize, &GossipEffect)) {
    while let Some(step) = e.step() {
        if let Step::Node(node) = step {
            for (_, effect) in &e.observed {
                seen(e.now, node, effect);
            }
        }
        if e.now >= until {
            break;
        }
    }
}

fn quantile_count(n: usize) -> usize {
    // 99.99% of the members, rounded up.
    (n * 9999).div_ceil(10_000)
}

/// (a) and (b): a user event from one member, then a crash.
pub fn spread(opts: &ScaleOptions) -> (Spread, Speed) {
    let (mut e, build_time) = build(opts, opts.lifeguard, 0x5ca1e);
    let n = opts.nodes;
    let wall = Instant::now();
    let mut out = Spread::default();
    // Warm up: timers start at random offsets within their intervals.
    run_until(&mut e, Time(5 * S), |_, _, _| {});

    let fired = e.now;
    let _ = e.input(0, GossipInput::UserEvent { name: "spread".into(), payload: b"x".to_vec() });
    let mut got = vec![false; n];
    let mut count = 0;
    let mut t9999 = None;
    let mut tall = None;
    let mark = |at: Time,
                node: usize,
                got: &mut Vec<bool>,
                count: &mut usize,
                t9999: &mut Option<Time>,
                tall: &mut Option<Time>| {
        if !got[node] {
            got[node] = true;
            *count += 1;
            if *count >= quantile_count(n) && t9999.is_none() {
                *t9999 = Some(at);
            }
            if *count == n {
                *tall = Some(at);
            }
        }
    };
    for (_, effect) in std::mem::take(&mut e.observed) {
        if matches!(effect, GossipEffect::UserEvent { .. }) {
            mark(e.now, 0, &mut got, &mut count, &mut t9999, &mut tall);
        }
    }
    let deadline = fired + Duration::from_secs(30);
    while tall.is_none() && e.now < deadline {
        let Some(step) = e.step() else { break };
        if let Step::Node(node) = step {
            let hit = e.observed.iter().any(|(_, ef)| matches!(ef, GossipEffect::UserEvent { .. }));
            if hit {
                mark(e.now, node, &mut got, &mut count, &mut t9999, &mut tall);
            }
        }
    }
    out.event_9999 = t9999.map(|t| t.since(fired));
    out.event_all = tall.map(|t| t.since(fired));

    // (b) A crash, 2 s later.
    let until = e.now + Duration::from_secs(2);
    run_until(&mut e, until, |_, _, _| {});
    let victim = n / 2;
    let crashed = e.now;
    e.kill(victim);
    let victim_name = name(victim);
    let mut seen = vec![false; n];
    seen[victim] = true;
    let mut count = 1;
    let mut times = Vec::new();
    let deadline = crashed + Duration::from_secs(180);
    while count < n && e.now < deadline {
        let Some(step) = e.step() else { break };
        if let Step::Node(node) = step {
            let hit = e.observed.iter().any(|(_, ef)| {
                matches!(ef, GossipEffect::Member { change: Change::Failed, member } if member.name == victim_name)
            });
            if hit && !seen[node] {
                seen[node] = true;
                count += 1;
                times.push(e.now.since(crashed));
            }
        }
    }
    out.crash_first = times.first().copied();
    out.crash_9999 = times.get(quantile_count(n - 1).saturating_sub(1)).copied();
    out.crash_all = (count == n).then(|| times.last().copied()).flatten();
    let speed = Speed::of(&e, n, build_time, wall);
    (out, speed)
}

/// (c) Slow members (`opts.slow`) in a pool otherwise as quiet as in (a): counts the
/// `Failed` effects about members that never crashed over `opts.window` (after 5 s of
/// warm-up), by who declared and about whom. The slow members and their stalls are drawn
/// from the seed alone, so both settings face the same ones.
pub fn false_dead(opts: &ScaleOptions, lifeguard: bool) -> (FalseDead, Speed) {
    let (mut e, build_time) = build(opts, lifeguard, 0xfa15e);
    e.track_dead = true;
    let n = opts.nodes;
    let model = &opts.slow;
    let slow_count = ((n as u64 * model.per_10k).div_ceil(10_000)).clamp(1, n as u64) as usize;
    let mut pick = ChaCha8Rng::seed_from_u64(opts.seed ^ 0x510e);
    let draw =
        |r: &mut ChaCha8Rng, (lo, hi): (u64, u64)| lo + rand_core::RngCore::next_u64(r) % (hi - lo).max(1);
    let mut is_slow = vec![false; n];
    let mut slow = Vec::new();
    while slow.len() < slow_count {
        let k = (rand_core::RngCore::next_u64(&mut pick) % n as u64) as usize;
        if !is_slow[k] {
            is_slow[k] = true;
            slow.push(k);
        }
    }
    for &k in &slow {
        e.hosts[k].slow = true;
    }
    let wall = Instant::now();
    let start = Time(5 * S);
    let end = start + opts.window;
    let mut next_stall: Vec<Time> = match model.stall {
        Some((_, gap)) => slow.iter().map(|_| Time(draw(&mut pick, gap))).collect(),
        None => vec![Time::MAX; slow.len()],
    };
    let mut report = FalseDead { lifeguard, slow: slow_count, ..Default::default() };
    let mut distinct = std::collections::BTreeSet::new();
    let mut tick = Time::ZERO;
    while let Some(step) = e.step() {
        if e.now >= end {
            break;
        }
        // Stalls start on a 100 ms grid of simulated time.
        if let Some((len, gap)) = model.stall.filter(|_| e.now >= tick) {
            tick = e.now + Duration::from_millis(100);
            for (s, &k) in slow.iter().enumerate() {
                if e.now >= next_stall[s] {
                    let l = draw(&mut pick, len);
                    let g = draw(&mut pick, gap);
                    e.hosts[k].paused_until = e.now + Duration::from_nanos(l);
                    next_stall[s] = e.now + Duration::from_nanos(l + g);
                }
            }
        }
        let Step::Node(node) = step else { continue };
        if e.now < start {
            continue;
        }
        for (_, effect) in &e.observed {
            if let GossipEffect::Member { change: Change::Failed, member } = effect {
                let j = index(&member.addr).expect("a<i>");
                let (by, about) = (usize::from(is_slow[node]), usize::from(is_slow[j]));
                report.views[by][about] += 1;
                if !e.heard_dead.contains(&member.name) {
                    report.own[by][about] += 1;
                }
                distinct.insert(j);
            }
        }
    }
    report.distinct = distinct.len();
    let speed = Speed::of(&e, n, build_time, wall);
    (report, speed)
}

/// Peak resident memory of this process (VmHWM), in MiB, where /proc tells it.
pub fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(nodes: usize, seed: u64) -> ScaleOptions {
        let slow = SlowModel { per_10k: 500, ..SlowModel::standard() };
        ScaleOptions { nodes, seed, lifeguard: true, slow, window: Duration::from_secs(60) }
    }

    #[test]
    fn two_hundred_members_spread_events_and_detect_a_crash_in_time() {
        let (s, _) = spread(&opts(200, 1));
        let event = s.event_all.expect("the event reached everyone");
        assert!(event <= Duration::from_millis(4_400), "{s:?}");
        let crash = s.crash_all.expect("everyone saw the crash");
        // The suspicion minimum at 200 members is 4 × log10(200) s ≈ 9.2 s.
        assert!(crash >= Duration::from_secs(9) && crash <= Duration::from_secs(25), "{s:?}");
    }

    /// The comparison at 100 members, 5% slow (each message 2–15 s late), over a minute:
    /// plain SWIM's slow members declare healthy members failed dozens of times, Lifeguard's
    /// far fewer. Only false failures about healthy members are held to a margin: those about
    /// the slow members themselves are about as many either way (a member that cannot answer
    /// within the minimum suspicion timeout is declared failed by both), see
    /// LIFEGUARD_REPORT.md.
    #[test]
    fn lifeguard_causes_fewer_false_failures_than_plain_swim() {
        let o = opts(100, 3);
        let (with, _) = false_dead(&o, true);
        let (without, _) = false_dead(&o, false);
        assert!(without.about_healthy() >= 20, "plain SWIM fails healthy members: {without}");
        assert!(without.views[1][0] >= 20, "slow members are the ones declaring them: {without}");
        assert!(
            with.about_healthy() * 10 < without.about_healthy(),
            "Lifeguard at least 10× fewer: with {with}, without {without}"
        );
    }
}
