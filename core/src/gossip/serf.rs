//! The serf layer over SWIM: Lamport clocks, join/leave intents (graceful leave and
//! force-leave), and user events with de-duplication, a size limit and optional coalescing.
//!
//! Owns ordering of intents and events and what the agent is told about them. Never
//! probes or decides liveness; a leave intent only changes how a member is reported until
//! SWIM confirms it.

use super::broadcast::Topic;
use super::message::{encoded_size, Msg, RecentEvent};
use super::{
    Change, Gossip, GossipConfig, GossipEffect, GossipError, LamportTime, State, USER_EVENT_SIZE_CEILING,
};
use crate::time::{Duration, Time};
use std::collections::BTreeMap;
use std::sync::Arc;

/// How many recent Lamport times of user events are remembered for de-duplication; older
/// events are dropped as stale (serf's event buffer).
const EVENT_BUFFER: u64 = 64;

#[derive(Clone, Copy, Debug, Default)]
pub struct LamportClock(LamportTime);

impl LamportClock {
    pub fn time(&self) -> LamportTime {
        self.0
    }

    /// Advances the clock and returns the new reading. Saturates: a peer can push the clock
    /// to the end of its range, and that must not crash or rewind it.
    pub fn increment(&mut self) -> LamportTime {
        self.0 = LamportTime(self.0 .0.saturating_add(1));
        self.0
    }

    /// Catches up with a time seen from another member. Taking the maximum (rather than
    /// one past it, as serf does) keeps push-pulls from inflating every clock, so a member
    /// that joins through a busy peer does not discard later events of a quieter one.
    pub fn witness(&mut self, seen: LamportTime) {
        self.0 = self.0.max(seen);
    }
}

/// The user events seen at one Lamport time (name and payload).
type Slot = (LamportTime, Vec<(String, Vec<u8>)>);

#[derive(Debug)]
struct Coalesced {
    ltime: LamportTime,
    payload: Vec<u8>,
    flush_at: Time,
}

#[derive(Debug)]
pub struct Serf {
    pub member_clock: LamportClock,
    pub event_clock: LamportClock,
    /// Per slot (ltime mod EVENT_BUFFER): the ltime it holds and the events seen at it.
    seen: Vec<Slot>,
    /// Events below this are from before this member joined and are not replayed.
    event_min: LamportTime,
    coalesce: Duration,
    pending: BTreeMap<String, Coalesced>,
    ready: Vec<(LamportTime, String, Vec<u8>)>,
}

impl Serf {
    pub fn new(cfg: &GossipConfig) -> Serf {
        Serf {
            member_clock: LamportClock::default(),
            event_clock: LamportClock::default(),
            seen: vec![(LamportTime(u64::MAX), Vec::new()); EVENT_BUFFER as usize],
            event_min: LamportTime(0),
            coalesce: cfg.user_coalesce_period,
            pending: BTreeMap::new(),
            ready: Vec::new(),
        }
    }

    pub fn ignore_events_before(&mut self, t: LamportTime) {
        self.event_min = self.event_min.max(t);
    }

    /// Records an event; false if it is a duplicate or too old to tell.
    fn admit(&mut self, ltime: LamportTime, name: &str, payload: &[u8]) -> bool {
        self.event_clock.witness(ltime);
        let now = self.event_clock.time().0;
        if ltime < self.event_min || (now > EVENT_BUFFER && ltime.0 < now - EVENT_BUFFER) {
            return false;
        }
        let slot = &mut self.seen[(ltime.0 % EVENT_BUFFER) as usize];
        if slot.0 != ltime {
            *slot = (ltime, Vec::new());
        }
        if slot.1.iter().any(|(n, p)| n == name && p == payload) {
            return false;
        }
        slot.1.push((name.to_string(), payload.to_vec()));
        true
    }

    /// The events still in the de-duplication buffer, oldest first (what a push-pull
    /// carries, as serf's does).
    pub fn recent(&self) -> Vec<RecentEvent> {
        let now = self.event_clock.time().0;
        let mut slots: Vec<&Slot> = self
            .seen
            .iter()
            .filter(|(t, _)| t.0 != u64::MAX && t.0.saturating_add(EVENT_BUFFER) >= now)
            .collect();
        slots.sort_by_key(|(t, _)| *t);
        slots
            .into_iter()
            .flat_map(|(ltime, events)| {
                events.iter().map(|(name, payload)| RecentEvent {
                    ltime: *ltime,
                    name: name.clone(),
                    payload: payload.clone(),
                })
            })
            .collect()
    }

    fn deliver(&mut self, now: Time, ltime: LamportTime, name: String, payload: Vec<u8>) {
        if self.coalesce == Duration::ZERO {
            self.ready.push((ltime, name, payload));
            return;
        }
        let flush_at = now + self.coalesce;
        let c = self.pending.entry(name).or_insert(Coalesced { ltime, payload: Vec::new(), flush_at });
        if ltime >= c.ltime {
            c.ltime = ltime;
            c.payload = payload;
        }
    }

    pub fn poll(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        let due: Vec<String> =
            self.pending.iter().filter(|(_, c)| c.flush_at <= now).map(|(n, _)| n.clone()).collect();
        for name in due {
            if let Some(c) = self.pending.remove(&name) {
                self.ready.push((c.ltime, name, c.payload));
            }
        }
        out.extend(self.ready.drain(..).map(|(ltime, name, payload)| GossipEffect::UserEvent {
            ltime,
            name,
            payload,
        }));
    }

    pub fn next_deadline(&self) -> Option<Time> {
        self.pending.values().map(|c| c.flush_at).min()
    }
}

impl Gossip {
    pub(super) fn broadcast_intent(&mut self, leave: bool, node: Arc<str>, ltime: LamportTime, prune: bool) {
        let msg = Msg::Intent { leave, node: node.clone(), ltime, prune };
        let size = encoded_size(&msg);
        self.queue.push(Topic::Intent(node), msg, size);
    }

    pub(super) fn on_intent(
        &mut self,
        now: Time,
        leave: bool,
        node: Arc<str>,
        ltime: LamportTime,
        prune: bool,
        out: &mut Vec<GossipEffect>,
    ) {
        self.serf.member_clock.witness(ltime);
        if self.apply_intent(now, leave, &node, ltime, prune, out) {
            self.broadcast_intent(leave, node, ltime, prune);
        }
    }

    /// Intent news from a push-pull: applied, not re-gossiped.
    pub(super) fn merge_intent(
        &mut self,
        now: Time,
        node: &Arc<str>,
        leaving: bool,
        ltime: LamportTime,
        out: &mut Vec<GossipEffect>,
    ) {
        self.apply_intent(now, leaving, node, ltime, false, out);
    }

    /// Applies an intent newer than the member's last one; true if it was news.
    fn apply_intent(
        &mut self,
        now: Time,
        leave: bool,
        node: &Arc<str>,
        ltime: LamportTime,
        prune: bool,
        out: &mut Vec<GossipEffect>,
    ) -> bool {
        let Some(m) = self.members.get_mut(node) else { return false };
        if ltime <= m.intent {
            return false;
        }
        m.intent = ltime;
        if !leave {
            m.leaving = false;
            return true;
        }
        if *node == self.me.name {
            if m.state != State::Left {
                // Someone force-left us while we are alive: say we are still here.
                let incarnation = m.incarnation;
                self.refute(incarnation);
                let ltime = self.serf.member_clock.increment();
                self.me_mut().intent = ltime;
                self.broadcast_intent(false, node.clone(), ltime, false);
                return false;
            }
            return true;
        }
        match m.state {
            State::Alive | State::Suspect => m.leaving = true,
            State::Dead => {
                m.state = State::Left;
                m.since = now;
                let member = m.id.clone();
                self.suspicions.remove(node);
                out.push(GossipEffect::Member { change: Change::Left, member });
            }
            State::Left => {}
        }
        if prune {
            self.forget(node, out);
        }
        true
    }

    pub(super) fn force_leave(
        &mut self,
        now: Time,
        node: &str,
        prune: bool,
        out: &mut Vec<GossipEffect>,
    ) -> Result<(), GossipError> {
        let Some(name) = self.members.get(node).map(|m| m.id.name.clone()) else {
            return Err(GossipError::UnknownMember(node.into()));
        };
        let ltime = self.serf.member_clock.increment();
        self.on_intent(now, true, name, ltime, prune, out);
        Ok(())
    }

    pub(super) fn fire(&mut self, now: Time, name: String, payload: Vec<u8>) -> Result<(), GossipError> {
        if self.has_left() {
            return Err(GossipError::HasLeft);
        }
        // Past every time this member has seen, so a member that joined through any peer
        // we have heard from counts it as news.
        let ltime = LamportTime(self.serf.event_clock.time().0.saturating_add(1));
        let msg = Msg::User { ltime, name, payload };
        let size = encoded_size(&msg);
        let limit = self.cfg.user_event_size_limit.min(self.event_cap());
        if size > limit {
            return Err(GossipError::EventTooLarge { size, limit });
        }
        let Msg::User { ltime, name, payload } = msg else { unreachable!() };
        self.on_user(now, ltime, name, payload);
        Ok(())
    }

    /// The largest user event that can travel at all: within the hard ceiling, and small
    /// enough to fit one packet.
    fn event_cap(&self) -> usize {
        let packet = self.cfg.packet_size.saturating_sub(super::wire::PACKET_OVERHEAD + 3);
        USER_EVENT_SIZE_CEILING.min(packet)
    }

    pub(super) fn on_user(&mut self, now: Time, ltime: LamportTime, name: String, payload: Vec<u8>) {
        let msg = Msg::User { ltime, name: name.clone(), payload: payload.clone() };
        let size = encoded_size(&msg);
        // An event larger than any member may fire could never be re-gossiped whole.
        if size > self.event_cap() || !self.serf.admit(ltime, &name, &payload) {
            return;
        }
        self.queue.push(Topic::Event, msg, size);
        self.serf.deliver(now, ltime, name, payload);
    }
}
