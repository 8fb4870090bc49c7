//! Gossip membership: SWIM with Lifeguard, plus the serf layer (intents, user events,
//! Lamport clocks) Consul builds on it. One `Gossip` is one member of one pool (LAN or WAN).
//!
//! Owns who is alive, suspect, dead or left, and the news about it; a `Gossip` is driven by
//! `handle(now, input, out)` like every state machine here, and tells its host when to wake
//! through `next_deadline`. Never touches sockets or clocks: packets and streams arrive as
//! inputs and leave as effects; `wire` has their byte form.

mod broadcast;
mod coords;
pub mod keyring;
pub mod lifeguard;
pub mod message;
mod pushpull;
mod query;
mod serf;
mod swim;
pub mod wire;

#[cfg(test)]
mod tests;

use crate::rng::Rng;
use crate::time::{Duration, Time};
use lifeguard::{Awareness, Suspicion};
pub use message::{Identity, MemberState, Msg, Packet, PushPull, RecentEvent, Tags};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// A member's own counter for "news about me": only the member raises it, to refute.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Incarnation(pub u32);

/// A Lamport clock reading (serf intents and user events).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct LamportTime(pub u64);

/// SWIM's view of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Alive,
    Suspect,
    Dead,
    Left,
}

/// Serf's status as `/v1/agent/members` reports it (`Status` is this number).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemberStatus {
    Alive = 1,
    Leaving = 2,
    Left = 3,
    Failed = 4,
}

/// One entry of the member table.
#[derive(Clone, Debug)]
pub struct Member {
    pub id: Arc<Identity>,
    pub incarnation: Incarnation,
    pub state: State,
    /// When `state` last changed (for gossip to the dead and reaping).
    pub since: Time,
    /// A leave intent was seen while the member was still alive (force-leave of a live
    /// member, or a graceful leave in progress).
    pub leaving: bool,
    /// Lamport time of the newest intent applied to this member.
    pub intent: LamportTime,
}

impl Member {
    pub fn status(&self) -> MemberStatus {
        match self.state {
            State::Alive | State::Suspect if self.leaving => MemberStatus::Leaving,
            State::Alive | State::Suspect => MemberStatus::Alive,
            State::Dead => MemberStatus::Failed,
            State::Left => MemberStatus::Left,
        }
    }

    /// Dead or left: no longer probed.
    pub fn down(&self) -> bool {
        matches!(self.state, State::Dead | State::Left)
    }
}

/// Timing and limits of one pool. `lan()` and `wan()` give Consul's defaults.
#[derive(Clone, Debug)]
pub struct GossipConfig {
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub indirect_checks: usize,
    pub suspicion_mult: u32,
    pub suspicion_max_timeout_mult: u32,
    pub retransmit_mult: u32,
    pub gossip_interval: Duration,
    pub gossip_nodes: usize,
    pub push_pull_interval: Duration,
    pub gossip_to_the_dead: Duration,
    pub awareness_max_multiplier: u32,
    /// Largest datagram this member sends.
    pub packet_size: usize,
    pub reconnect_interval: Duration,
    /// Failed members are forgotten after this long (Consul: 72 h).
    pub reconnect_timeout: Duration,
    /// Left members are forgotten after this long (24 h).
    pub tombstone_timeout: Duration,
    /// Largest encoded user event.
    pub user_event_size_limit: usize,
    /// Zero delivers every user event; otherwise events of one name arriving within the
    /// period are delivered once, as the newest.
    pub user_coalesce_period: Duration,
    /// How long a leaving member keeps gossiping its departure before it may stop.
    pub leave_propagate_delay: Duration,
    /// Give up on a join whose push-pull has not been answered in this long.
    pub stream_timeout: Duration,
    /// Lifeguard on (the default). Only the simulator turns it off, to compare against
    /// plain SWIM: no awareness, fixed suspicion timeout, no buddy warning.
    pub lifeguard: bool,
}

impl GossipConfig {
    pub fn lan() -> GossipConfig {
        GossipConfig {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_checks: 3,
            suspicion_mult: 4,
            suspicion_max_timeout_mult: 6,
            retransmit_mult: 4,
            gossip_interval: Duration::from_millis(200),
            gossip_nodes: 3,
            push_pull_interval: Duration::from_secs(30),
            gossip_to_the_dead: Duration::from_secs(30),
            awareness_max_multiplier: 8,
            packet_size: 1400,
            reconnect_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(72 * 3600),
            tombstone_timeout: Duration::from_secs(24 * 3600),
            user_event_size_limit: 512,
            user_coalesce_period: Duration::ZERO,
            leave_propagate_delay: Duration::from_secs(1),
            stream_timeout: Duration::from_secs(10),
            lifeguard: true,
        }
    }

    pub fn wan() -> GossipConfig {
        GossipConfig {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_mult: 6,
            gossip_interval: Duration::from_millis(500),
            gossip_nodes: 4,
            push_pull_interval: Duration::from_secs(60),
            gossip_to_the_dead: Duration::from_secs(60),
            stream_timeout: Duration::from_secs(30),
            ..GossipConfig::lan()
        }
    }

    /// `-dev`: Consul's fast timers for a single machine.
    pub fn dev(mut self) -> GossipConfig {
        self.gossip_interval = Duration::from_millis(100);
        self.probe_interval = Duration::from_millis(100);
        self.probe_timeout = Duration::from_millis(100);
        self.suspicion_mult = 3;
        self
    }
}

/// Largest user event this implementation accepts at all, whatever the config says.
pub const USER_EVENT_SIZE_CEILING: usize = 9 * 1024;

/// Something a host hands a `Gossip`.
#[derive(Debug)]
pub enum GossipInput {
    /// Time passed.
    Tick,
    /// A datagram arrived from gossip address `from`.
    Packet { from: Arc<str>, packet: Packet },
    /// A push-pull arrived over a stream.
    Stream { msg: PushPull },
    /// A stream to `to` could not be opened or written; `join` says which join it served.
    StreamFailed { to: Arc<str>, join: Option<u64> },
    /// Join the pool through these gossip addresses; answered by `Joined { token }`.
    Join { token: u64, addrs: Vec<Arc<str>> },
    /// Leave gracefully; answered by `Left` once the news has had time to spread.
    Leave,
    /// Mark a member left (failed ones), or leaving (alive ones, until they refute);
    /// `prune` forgets it entirely.
    ForceLeave { node: String, prune: bool },
    /// Fire a user event into the pool.
    UserEvent { name: String, payload: Vec<u8> },
    /// Ask every member (a serf query); answered by `Answers { token }` after `timeout`.
    Query { token: u64, name: String, payload: Vec<u8>, timeout: Duration },
    /// This agent's answer to a query `GossipEffect::Query` showed it.
    Answer { ltime: LamportTime, id: u32, reply_to: Arc<str>, payload: Vec<u8> },
}

/// Something the host must do or may observe.
#[derive(Debug, PartialEq)]
pub enum GossipEffect {
    SendPacket {
        to: Arc<str>,
        packet: Packet,
    },
    SendStream {
        to: Arc<str>,
        msg: PushPull,
    },
    /// A member changed in a way the agent cares about.
    Member {
        change: Change,
        member: Arc<Identity>,
    },
    /// A user event arrived (including one this member fired).
    UserEvent {
        ltime: LamportTime,
        name: String,
        payload: Vec<u8>,
    },
    /// The join `token` finished: how many addresses answered, or why none did.
    Joined {
        token: u64,
        result: Result<usize, String>,
    },
    /// A graceful leave has been told to the pool; the host may stop.
    Left,
    /// A query arrived (including one this member asked): the agent should `Answer` it.
    Query {
        ltime: LamportTime,
        id: u32,
        name: String,
        payload: Vec<u8>,
        reply_to: Arc<str>,
    },
    /// The query `token` asked is over: each answering member's name and answer.
    Answers {
        token: u64,
        answers: Vec<(Arc<str>, Vec<u8>)>,
    },
}

/// How a member changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Joined,
    Updated,
    Failed,
    Left,
    /// Forgotten: reaped after its timeout, or pruned.
    Reaped,
}

/// Why a command was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GossipError {
    #[error("No node named {0} in the member list")]
    UnknownMember(String),
    #[error("user event exceeds sane limit of {limit} bytes before encoding (got {size})")]
    EventTooLarge { size: usize, limit: usize },
    #[error("this member has left the pool")]
    HasLeft,
}

/// A probe in progress (SWIM): direct ping, then indirect pings, then suspicion.
#[derive(Debug)]
struct Probe {
    seq: u32,
    target: Arc<str>,
    sent_at: Time,
    indirect_at: Time,
    end_at: Time,
    indirect_sent: bool,
    expected_nacks: u32,
    nacks: u32,
}

/// A ping this member sends on behalf of another (indirect probe).
#[derive(Debug)]
struct Relay {
    reply_to: Arc<str>,
    seq: u32,
    deadline: Time,
    nack: bool,
}

#[derive(Debug)]
struct PendingJoin {
    waiting: usize,
    answered: usize,
    errors: Vec<String>,
    deadline: Time,
}

/// One member of one gossip pool.
#[derive(Debug)]
pub struct Gossip {
    cfg: GossipConfig,
    me: Arc<Identity>,
    members: BTreeMap<Arc<str>, Member>,
    /// Every other member's name in shuffled probe order; the cursor walks it round-robin.
    order: Vec<Arc<str>>,
    cursor: usize,
    probe: Option<Probe>,
    relays: BTreeMap<u32, Relay>,
    suspicions: BTreeMap<Arc<str>, Suspicion>,
    awareness: Awareness,
    queue: broadcast::Queue,
    seq: u32,
    next_probe: Time,
    next_gossip: Time,
    next_push_pull: Time,
    next_reconnect: Time,
    serf: serf::Serf,
    queries: query::Queries,
    /// Queries seen and answers given during this step, emitted by `poll`.
    pending_queries: Vec<GossipEffect>,
    pending_answers: Vec<(Arc<str>, Msg)>,
    joins: BTreeMap<u64, PendingJoin>,
    /// Set by `Leave`: when the host may stop.
    leave_at: Option<Time>,
    started: bool,
    /// When this member started, and whether it has since exchanged full state with a peer.
    started_at: Time,
    synced: bool,
    rng: Rng,
    /// This member's network coordinate in this pool, and the last one each member sent.
    coords: crate::coordinate::CoordinateClient,
    coord_cache: BTreeMap<Arc<str>, crate::coordinate::Coordinate>,
    coord_rng: Rng,
}

impl Gossip {
    /// A member named `me.name`, reachable at `me.addr`. The rng must be this member's own
    /// stream (the simulator hands each member a seeded one).
    pub fn new(cfg: GossipConfig, me: Identity, rng: Rng) -> Gossip {
        let me = Arc::new(me);
        let mut members = BTreeMap::new();
        members.insert(
            me.name.clone(),
            Member {
                id: me.clone(),
                incarnation: Incarnation(1),
                state: State::Alive,
                since: Time::ZERO,
                leaving: false,
                intent: LamportTime(0),
            },
        );
        Gossip {
            awareness: Awareness::new(if cfg.lifeguard { cfg.awareness_max_multiplier } else { 1 }),
            serf: serf::Serf::new(&cfg),
            queries: query::Queries::default(),
            pending_queries: Vec::new(),
            pending_answers: Vec::new(),
            cfg,
            me,
            members,
            order: Vec::new(),
            cursor: 0,
            probe: None,
            relays: BTreeMap::new(),
            suspicions: BTreeMap::new(),
            queue: broadcast::Queue::default(),
            seq: 0,
            next_probe: Time::ZERO,
            next_gossip: Time::ZERO,
            next_push_pull: Time::ZERO,
            next_reconnect: Time::ZERO,
            joins: BTreeMap::new(),
            leave_at: None,
            started: false,
            started_at: Time::ZERO,
            synced: false,
            coords: crate::coordinate::CoordinateClient::new(Default::default()),
            coord_cache: BTreeMap::new(),
            coord_rng: rng.fork(crate::rng::Stream::Coordinates),
            rng,
        }
    }

    /// Feeds one input that happened at `now`; effects are appended to `out`.
    pub fn handle(
        &mut self,
        now: Time,
        input: GossipInput,
        out: &mut Vec<GossipEffect>,
    ) -> Result<(), GossipError> {
        if !self.started {
            self.start(now);
        }
        let result = match input {
            GossipInput::Tick => Ok(()),
            GossipInput::Packet { from, packet } => {
                self.on_packet(now, from, packet, out);
                Ok(())
            }
            GossipInput::Stream { msg } => {
                self.on_push_pull(now, msg, out);
                Ok(())
            }
            GossipInput::StreamFailed { to, join } => {
                if let Some(token) = join {
                    self.join_answer(token, Err(format!("failed to reach {to}")), out);
                }
                Ok(())
            }
            GossipInput::Join { token, addrs } => {
                self.join(now, token, addrs, out);
                Ok(())
            }
            GossipInput::Leave => {
                self.leave(now);
                Ok(())
            }
            GossipInput::ForceLeave { node, prune } => self.force_leave(now, &node, prune, out),
            GossipInput::UserEvent { name, payload } => self.fire(now, name, payload),
            GossipInput::Query { token, name, payload, timeout } => {
                self.ask(now, token, name, payload, timeout, out);
                Ok(())
            }
            GossipInput::Answer { ltime, id, reply_to, payload } => {
                self.answer(now, ltime, id, reply_to, payload);
                Ok(())
            }
        };
        self.poll(now, out);
        result
    }

    /// When the host must next call `handle(Tick)`.
    pub fn next_deadline(&self) -> Time {
        let mut next =
            self.next_probe.min(self.next_gossip).min(self.next_push_pull).min(self.next_reconnect);
        if let Some(p) = &self.probe {
            next = next.min(if p.indirect_sent { p.end_at } else { p.indirect_at });
        }
        let others = [
            self.relays.values().map(|r| r.deadline).min(),
            self.suspicions.values().map(|s| s.deadline).min(),
            self.joins.values().map(|j| j.deadline).min(),
            self.leave_at,
            self.serf.next_deadline(),
            self.queries.next_deadline(),
        ];
        others.into_iter().flatten().fold(next, Time::min)
    }

    pub fn name(&self) -> &Arc<str> {
        &self.me.name
    }

    pub fn config(&self) -> &GossipConfig {
        &self.cfg
    }

    /// Whether this member's table can be trusted to list everyone the pool knows: it has
    /// exchanged full state with a peer, or a push-pull interval has passed without anyone
    /// to exchange with (a lone member). Until then, a member missing from the table may
    /// simply not have been heard of yet.
    pub fn settled(&self, now: Time) -> bool {
        self.synced || now >= self.started_at + self.push_pull_interval()
    }

    /// The member table, this member included, in name order.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.get(name)
    }

    /// Members alive or suspect (what SWIM still probes).
    pub fn alive_count(&self) -> usize {
        self.members.values().filter(|m| !m.down()).count()
    }

    /// Puts members this member already knows into its table as alive at `incarnation`,
    /// without news, effects or broadcasts, and reshuffles the probe order. For a host that
    /// starts from a known pool: the simulator's scale mode fills 10,000 tables this way,
    /// sharing the `Arc<Identity>`s (news would queue 10,000 broadcasts per member). Members
    /// already in the table are left as they are.
    pub fn assume_alive(&mut self, members: impl IntoIterator<Item = (Arc<Identity>, Incarnation)>) {
        let fresh = members.into_iter().map(|(id, incarnation)| {
            let m = Member {
                id,
                incarnation,
                state: State::Alive,
                since: Time::ZERO,
                leaving: false,
                intent: LamportTime(0),
            };
            (m.id.name.clone(), m)
        });
        // Collected in one go: a bulk-built map packs its nodes full. On equal names the
        // later entry wins, so the existing ones go last.
        let known = std::mem::take(&mut self.members);
        self.members = fresh.chain(known).collect();
        self.reshuffle();
    }

    /// Lifeguard's local health score (0 = healthy).
    pub fn health_score(&self) -> u32 {
        self.awareness.score()
    }

    pub fn member_clock(&self) -> LamportTime {
        self.serf.member_clock.time()
    }

    pub fn event_clock(&self) -> LamportTime {
        self.serf.event_clock.time()
    }

    /// Broadcasts still waiting to be gossiped (bounded by the retransmit limit).
    pub fn pending_broadcasts(&self) -> usize {
        self.queue.len()
    }

    fn me_mut(&mut self) -> &mut Member {
        self.members.get_mut(&self.me.name).expect("a member always knows itself")
    }

    /// The member table's size, as memberlist estimates the pool.
    fn estimate(&self) -> usize {
        self.members.len()
    }

    fn retransmit_limit(&self) -> u32 {
        self.cfg.retransmit_mult * lifeguard::log10_ceil(self.estimate())
    }

    /// Timers start at random offsets so a pool started together does not probe in step.
    fn start(&mut self, now: Time) {
        self.started = true;
        self.started_at = now;
        let jitter =
            |rng: &mut Rng, d: Duration| now + Duration::from_nanos(rng.below(d.as_nanos() as u64 + 1));
        self.next_probe = jitter(&mut self.rng, self.cfg.probe_interval);
        self.next_gossip = jitter(&mut self.rng, self.cfg.gossip_interval);
        let push_pull = self.push_pull_interval();
        self.next_push_pull = jitter(&mut self.rng, push_pull);
        self.next_reconnect = jitter(&mut self.rng, self.cfg.reconnect_interval);
        self.me_mut().since = now;
    }

    /// Push-pull slows down as the pool grows past 32 members, keeping the total stream
    /// traffic roughly flat.
    fn push_pull_interval(&self) -> Duration {
        let n = self.estimate();
        let scale = if n <= 32 { 1 } else { (64 - ((n - 1) as u64).leading_zeros()) - 5 + 1 };
        self.cfg.push_pull_interval * scale
    }

    /// Everything time-driven: probe stages, relays, suspicions, gossip rounds, push-pull,
    /// reconnects, reaping, joins and leave timing.
    fn poll(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        self.poll_probe(now, out);
        self.poll_relays(now, out);
        self.poll_suspicions(now, out);
        if now >= self.next_gossip {
            self.next_gossip = now + self.cfg.gossip_interval;
            self.gossip_round(now, out);
        }
        if now >= self.next_push_pull {
            self.next_push_pull = now + self.push_pull_interval();
            self.push_pull_round(out);
        }
        if now >= self.next_reconnect {
            self.next_reconnect = now + self.cfg.reconnect_interval;
            self.reconnect(out);
            self.reap(now, out);
        }
        let expired: Vec<u64> =
            self.joins.iter().filter(|(_, j)| j.deadline <= now).map(|(t, _)| *t).collect();
        for token in expired {
            if let Some(j) = self.joins.remove(&token) {
                out.push(GossipEffect::Joined { token, result: join_result(j, "timed out") });
            }
        }
        self.serf.poll(now, out);
        self.poll_queries(now, out);
        if let Some(at) = self.leave_at {
            let told = !self.queue.holds(&broadcast::Topic::Member(self.me.name.clone()))
                && !self.queue.holds(&broadcast::Topic::Intent(self.me.name.clone()));
            if now >= at || told || self.alive_count() == 0 {
                self.leave_at = None;
                out.push(GossipEffect::Left);
            }
        }
    }

    fn join(&mut self, now: Time, token: u64, addrs: Vec<Arc<str>>, out: &mut Vec<GossipEffect>) {
        let addrs: Vec<Arc<str>> = addrs.into_iter().filter(|a| *a != self.me.addr).collect();
        if addrs.is_empty() {
            out.push(GossipEffect::Joined {
                token,
                result: Err("no addresses to join (other than this agent)".into()),
            });
            return;
        }
        let join = PendingJoin {
            waiting: addrs.len(),
            answered: 0,
            errors: vec![],
            deadline: now + self.cfg.stream_timeout,
        };
        self.joins.insert(token, join);
        for to in addrs {
            let msg = self.push_pull_msg(Some(token), false);
            out.push(GossipEffect::SendStream { to, msg });
        }
    }

    fn join_answer(&mut self, token: u64, answer: Result<(), String>, out: &mut Vec<GossipEffect>) {
        let Some(j) = self.joins.get_mut(&token) else { return };
        match answer {
            Ok(()) => j.answered += 1,
            Err(e) => j.errors.push(e),
        }
        j.waiting = j.waiting.saturating_sub(1);
        if j.waiting == 0 {
            if let Some(j) = self.joins.remove(&token) {
                out.push(GossipEffect::Joined { token, result: join_result(j, "no answer") });
            }
        }
    }

    /// Graceful leave: tell the pool (intent and a dead notice from ourselves), keep
    /// gossiping for `leave_propagate_delay`, then report `Left`.
    fn leave(&mut self, now: Time) {
        if self.leave_at.is_some() || self.members[&self.me.name].state == State::Left {
            return;
        }
        let ltime = self.serf.member_clock.increment();
        let name = self.me.name.clone();
        let incarnation = {
            let me = self.me_mut();
            me.intent = ltime;
            me.state = State::Left;
            me.since = now;
            me.incarnation
        };
        self.broadcast_intent(true, name.clone(), ltime, false);
        self.broadcast_member(Msg::Dead { incarnation, node: name.clone(), from: name });
        self.leave_at = Some(now + self.cfg.leave_propagate_delay);
    }

    fn has_left(&self) -> bool {
        self.members[&self.me.name].state == State::Left
    }

    /// Up to `k` distinct other members passing `keep`, chosen at random.
    fn pick(&mut self, k: usize, keep: impl Fn(&Member) -> bool) -> Vec<Arc<str>> {
        let mut chosen: Vec<Arc<str>> = Vec::with_capacity(k);
        if self.order.len() <= 4 * k.max(16) {
            let mut all: Vec<Arc<str>> =
                self.order.iter().filter(|n| self.members.get(*n).is_some_and(&keep)).cloned().collect();
            self.rng.shuffle(&mut all);
            all.truncate(k);
            return all;
        }
        for _ in 0..k * 4 {
            if chosen.len() == k {
                break;
            }
            let n = &self.order[self.rng.below(self.order.len() as u64) as usize];
            if !chosen.contains(n) && self.members.get(n).is_some_and(&keep) {
                chosen.push(n.clone());
            }
        }
        chosen
    }
}

fn join_result(j: PendingJoin, why: &str) -> Result<usize, String> {
    if j.answered > 0 {
        Ok(j.answered)
    } else if j.errors.is_empty() {
        Err(why.into())
    } else {
        Err(j.errors.join("; "))
    }
}
