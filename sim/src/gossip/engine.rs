//! The ground the gossip worlds run on: hosts (a `Gossip`, its clock, whether it is paused
//! or down), a time-ordered event queue (a binary heap keyed by time and sequence, so 10,000
//! members stay cheap), and the network (delay with an optional slow tail, loss,
//! duplication, reordering, blocked links, slow hosts, and a sampled wire round trip).
//!
//! Owns delivery, not judgement: the worlds (`gossip`, `scale`) decide the faults and check
//! the invariants from the effects a step leaves in `observed`. Never uses real time or OS
//! randomness: one seed, one trace hash.

use std::cmp::Ordering;
use std::collections::{BTreeSet, BinaryHeap};
use std::sync::Arc;

use muster_core::gossip::wire::{Codec, Frame};
use muster_core::gossip::{Gossip, GossipEffect, GossipError, GossipInput, Msg, Packet, PushPull};
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::RngCore;

use crate::chaos::{exp_draw, Clock};

/// Member `i` is named `n{i}` and gossips at address `a{i}`.
pub(crate) fn name(i: usize) -> Arc<str> {
    format!("n{i}").into()
}

pub(crate) fn addr(i: usize) -> Arc<str> {
    format!("a{i}").into()
}

pub(crate) fn index(a: &str) -> Option<usize> {
    a.get(1..)?.parse().ok()
}

/// How the network behaves; `faults` off keeps only the delay floor and body.
#[derive(Debug, Clone)]
pub(crate) struct NetModel {
    pub delay_min: u64,
    pub delay_mean: u64,
    /// A delay never exceeds this (0: no cap).
    pub delay_cap: u64,
    pub tail_per_mille: u64,
    pub tail_mean: u64,
    pub loss_per_mille: u64,
    pub dup_per_mille: u64,
    /// Share of packets and streams that go through `Codec::plain()` and back.
    pub codec_per_mille: u64,
    /// Extra delay range (ns) on every packet a slow host sends or receives.
    pub slow_extra: (u64, u64),
    pub faults: bool,
}

/// One member's machine.
pub(crate) struct Host {
    /// The process, or `None` while it is down.
    pub g: Option<Gossip>,
    /// Bumped on each crash and restart: answers to an earlier process are dropped.
    pub life: u32,
    /// When the process asked to be woken (global time); other wakes are stale.
    wake_at: Time,
    clock: Clock,
    last_local: Time,
    pub paused_until: Time,
    pub slow: bool,
}

pub(crate) enum Ev<W> {
    Wake { node: usize },
    Packet { from: usize, to: usize, packet: Packet },
    Stream { from: usize, to: usize, msg: PushPull },
    StreamFailed { node: usize, life: u32, to: Arc<str>, join: Option<u64> },
    World(W),
}

struct Queued<W> {
    at: Time,
    seq: u64,
    ev: Ev<W>,
}

impl<W> PartialEq for Queued<W> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<W> Eq for Queued<W> {}
impl<W> PartialOrd for Queued<W> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<W> Ord for Queued<W> {
    /// Reversed: the heap pops the earliest (time, sequence) first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// What one step of the engine did.
pub(crate) enum Step<W> {
    /// A host handled an input; its observable effects are in `observed`.
    Node(usize),
    World(W),
    /// A stale, dropped or deferred event.
    Idle,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct NetStats {
    pub packets: u64,
    pub streams: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub codec_round_trips: u64,
    pub events: u64,
}

pub(crate) struct Engine<W> {
    pub now: Time,
    heap: BinaryHeap<Queued<W>>,
    seq: u64,
    pub rng: ChaCha8Rng,
    pub hosts: Vec<Host>,
    pub net: NetModel,
    /// Links that carry nothing, as (from, to).
    pub blocked: BTreeSet<(usize, usize)>,
    pub trace: u64,
    /// Effects other than sends, as (host, effect), left by the last `Step::Node`.
    pub observed: Vec<(usize, GossipEffect)>,
    /// With `track_dead`: the members the packet handled by the last `Step::Node` said were
    /// dead (so a `Failed` effect about anyone else came from the host's own timer).
    pub track_dead: bool,
    pub heard_dead: Vec<Arc<str>>,
    out: Vec<GossipEffect>,
    codec: Codec,
    /// A wire round trip that did not give back what went in.
    pub wire_failure: Option<String>,
    pub stats: NetStats,
}

impl<W> Engine<W> {
    /// `n` hosts, all down, with clocks drawn from `rng` (or exact clocks without `drift`).
    pub fn new(mut rng: ChaCha8Rng, n: usize, net: NetModel, drift: bool) -> Engine<W> {
        let hosts = (0..n)
            .map(|_| Host {
                g: None,
                life: 0,
                wake_at: Time::MAX,
                clock: if drift { Clock::draw(&mut rng) } else { Clock::new(0, 0) },
                last_local: Time::ZERO,
                paused_until: Time::ZERO,
                slow: false,
            })
            .collect();
        Engine {
            now: Time::ZERO,
            heap: BinaryHeap::new(),
            seq: 0,
            rng,
            hosts,
            net,
            blocked: BTreeSet::new(),
            trace: 0xcbf2_9ce4_8422_2325,
            observed: Vec::new(),
            track_dead: false,
            heard_dead: Vec::new(),
            out: Vec::new(),
            codec: Codec::plain(),
            wire_failure: None,
            stats: NetStats::default(),
        }
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n.max(1)
    }

    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }

    pub fn exp(&mut self, mean: u64) -> u64 {
        exp_draw(&mut self.rng, mean)
    }

    /// Uniform in `[lo, hi)` nanoseconds.
    pub fn between(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_nanos(lo + self.below(hi.saturating_sub(lo)))
    }

    pub fn mix(&mut self, parts: &[u64]) {
        for p in parts {
            self.trace = (self.trace ^ p).wrapping_mul(0x100_0000_01b3);
        }
    }

    pub fn schedule(&mut self, at: Time, ev: Ev<W>) {
        self.seq += 1;
        self.heap.push(Queued { at: at.max(self.now), seq: self.seq, ev });
    }

    pub fn world(&mut self, at: Time, w: W) {
        self.schedule(at, Ev::World(w));
    }

    pub fn queued(&self) -> usize {
        self.heap.len()
    }

    pub fn up(&self, node: usize) -> bool {
        self.hosts[node].g.is_some()
    }

    pub fn paused(&self, node: usize) -> bool {
        self.hosts[node].paused_until > self.now
    }

    fn local_time(&mut self, node: usize) -> Time {
        let h = &mut self.hosts[node];
        h.last_local = h.clock.local(self.now).max(h.last_local);
        h.last_local
    }

    /// Starts a process on `node` (a new one after a crash) and wakes it now.
    pub fn boot(&mut self, node: usize, g: Gossip) {
        let h = &mut self.hosts[node];
        h.g = Some(g);
        h.life += 1;
        h.wake_at = self.now;
        self.schedule(self.now, Ev::Wake { node });
    }

    /// The process on `node` stops: its wakes and answers are dropped, what reaches it lost.
    pub fn kill(&mut self, node: usize) {
        let h = &mut self.hosts[node];
        h.g = None;
        h.life += 1;
        h.wake_at = Time::MAX;
        h.paused_until = Time::ZERO;
    }

    /// Hands `node` an input now (the node must be up and not paused).
    pub fn input(&mut self, node: usize, input: GossipInput) -> Result<(), GossipError> {
        let local = self.local_time(node);
        let mut out = std::mem::take(&mut self.out);
        let g = self.hosts[node].g.as_mut().expect("input to a running host");
        let result = g.handle(local, input, &mut out);
        let deadline = g.next_deadline();
        for e in out.drain(..) {
            match e {
                GossipEffect::SendPacket { to, packet } => self.send_packet(node, &to, packet),
                GossipEffect::SendStream { to, msg } => self.send_stream(node, to, msg),
                other => self.observed.push((node, other)),
            }
        }
        self.out = out;
        let h = &mut self.hosts[node];
        let at = h.clock.global(deadline).max(self.now);
        if at != h.wake_at {
            h.wake_at = at;
            self.schedule(at, Ev::Wake { node });
        }
        result
    }

    fn delay(&mut self) -> u64 {
        let n = &self.net;
        let (min, mean, cap, tail, tail_mean, faults) =
            (n.delay_min, n.delay_mean, n.delay_cap, n.tail_per_mille, n.tail_mean, n.faults);
        let mut d = min + self.exp(mean);
        if faults && tail > 0 && self.chance(tail) {
            d += self.exp(tail_mean);
        }
        if cap > 0 {
            d = d.min(cap);
        }
        d
    }

    /// The extra time a slow host spends on a packet it sends or receives.
    fn slow_extra(&mut self, from: usize, to: usize) -> u64 {
        let (lo, hi) = self.net.slow_extra;
        let mut extra = 0;
        for h in [from, to] {
            if self.hosts[h].slow {
                extra += lo + self.below(hi.saturating_sub(lo));
            }
        }
        extra
    }

    pub fn is_blocked(&self, from: usize, to: usize) -> bool {
        !self.blocked.is_empty() && self.blocked.contains(&(from, to))
    }

    fn round_trip(&mut self, frame: Frame) -> Frame {
        self.stats.codec_round_trips += 1;
        let mut nonce = [0u8; 12];
        self.rng.fill_bytes(&mut nonce);
        let bytes = self.codec.encode(&frame, nonce);
        match self.codec.decode(&bytes) {
            Ok(back) if back == frame => back,
            Ok(back) => {
                self.wire_failure.get_or_insert(format!("wire round trip changed {frame:?} into {back:?}"));
                back
            }
            Err(e) => {
                self.wire_failure.get_or_insert(format!("wire round trip failed on {frame:?}: {e}"));
                frame
            }
        }
    }

    fn send_packet(&mut self, from: usize, to: &str, packet: Packet) {
        self.stats.packets += 1;
        let Some(to) = index(to).filter(|t| *t < self.hosts.len()) else { return };
        if self.is_blocked(from, to) {
            return;
        }
        let faults = self.net.faults;
        if faults && self.net.loss_per_mille > 0 && self.chance(self.net.loss_per_mille) {
            self.stats.lost += 1;
            return;
        }
        let copies = if faults && self.net.dup_per_mille > 0 && self.chance(self.net.dup_per_mille) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        let mut packet = Some(packet);
        for copy in 0..copies {
            let mut p =
                if copy + 1 == copies { packet.take().expect("last copy") } else { packet.clone().unwrap() };
            if self.net.codec_per_mille > 0 && self.chance(self.net.codec_per_mille) {
                if let Frame::Packet(back) = self.round_trip(Frame::Packet(p.clone())) {
                    p = back;
                }
            }
            let d = self.delay() + self.slow_extra(from, to);
            let at = self.now + Duration::from_nanos(d);
            self.schedule(at, Ev::Packet { from, to, packet: p });
        }
    }

    /// A stream: refused at once by a down host, timed out across a cut, else delivered
    /// after a handshake and the transfer.
    fn send_stream(&mut self, from: usize, to: Arc<str>, mut msg: PushPull) {
        self.stats.streams += 1;
        let life = self.hosts[from].life;
        let target = index(&to).filter(|t| *t < self.hosts.len());
        let Some(t) = target.filter(|t| !self.is_blocked(from, *t) && !self.is_blocked(*t, from)) else {
            let at = self.now + Duration::from_secs(2);
            self.schedule(at, Ev::StreamFailed { node: from, life, to, join: msg.join });
            return;
        };
        if !self.up(t) {
            let at = self.now + Duration::from_nanos(2 * self.delay());
            self.schedule(at, Ev::StreamFailed { node: from, life, to, join: msg.join });
            return;
        }
        if self.net.codec_per_mille > 0 && self.chance(self.net.codec_per_mille) {
            if let Frame::PushPull(back) = self.round_trip(Frame::PushPull(msg.clone())) {
                msg = back;
            }
        }
        let d = 3 * self.delay() + self.slow_extra(from, t);
        let at = self.now + Duration::from_nanos(d);
        self.schedule(at, Ev::Stream { from, to: t, msg });
    }

    /// Defers an event for a paused host to the end of its pause.
    fn defer(&mut self, node: usize, ev: Ev<W>) -> Step<W> {
        let until = self.hosts[node].paused_until;
        if let Ev::Wake { .. } = ev {
            self.hosts[node].wake_at = until;
        }
        self.schedule(until, ev);
        Step::Idle
    }

    /// Handles the next event; `None` when the queue is empty.
    pub fn step(&mut self) -> Option<Step<W>> {
        let Queued { at, ev, .. } = self.heap.pop()?;
        self.now = at;
        self.stats.events += 1;
        self.observed.clear();
        self.heard_dead.clear();
        let step = match ev {
            Ev::World(w) => Step::World(w),
            Ev::Wake { node } => {
                let h = &self.hosts[node];
                if h.g.is_none() || h.wake_at != at {
                    Step::Idle
                } else if h.paused_until > at {
                    self.defer(node, ev)
                } else {
                    self.mix(&[1, node as u64, at.0]);
                    let _ = self.input(node, GossipInput::Tick);
                    Step::Node(node)
                }
            }
            Ev::Packet { from, to, .. } | Ev::Stream { from, to, .. }
                if self.is_blocked(from, to) || !self.up(to) =>
            {
                Step::Idle
            }
            Ev::Packet { to, .. } | Ev::Stream { to, .. } if self.paused(to) => self.defer(to, ev),
            Ev::Packet { from, to, packet } => {
                self.mix(&[2, from as u64, to as u64, at.0, packet.msgs.len() as u64]);
                if self.track_dead {
                    for m in &packet.msgs {
                        if let Msg::Dead { node, .. } = m {
                            self.heard_dead.push(node.clone());
                        }
                    }
                }
                let _ = self.input(to, GossipInput::Packet { from: addr(from), packet });
                Step::Node(to)
            }
            Ev::Stream { from, to, msg } => {
                self.mix(&[3, from as u64, to as u64, at.0, msg.members.len() as u64]);
                let _ = self.input(to, GossipInput::Stream { msg });
                Step::Node(to)
            }
            Ev::StreamFailed { node, life, .. } if self.hosts[node].life != life || !self.up(node) => {
                Step::Idle
            }
            Ev::StreamFailed { node, .. } if self.paused(node) => self.defer(node, ev),
            Ev::StreamFailed { node, to, join, .. } => {
                self.mix(&[4, node as u64, at.0]);
                let _ = self.input(node, GossipInput::StreamFailed { to, join });
                Step::Node(node)
            }
        };
        Some(step)
    }
}
