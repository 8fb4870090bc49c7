//! Full-state exchange over a stream: on join, periodically with a random live member,
//! and as the reconnect attempt to a failed one (how partitions heal).
//!
//! Owns building a push-pull and merging a remote one. Merging never trusts a remote
//! "dead" outright: it only makes the member suspect here, so the member gets its chance
//! to refute (a remote "left" is taken as is, since only the member itself says it).

use super::message::{MemberState, PushPull};
use super::{Gossip, GossipEffect, LamportTime, State};
use crate::time::Time;

impl Gossip {
    pub(super) fn push_pull_msg(&self, join: Option<u64>, reply: bool) -> PushPull {
        let members = self
            .members
            .values()
            .map(|m| MemberState {
                member: m.id.clone(),
                incarnation: m.incarnation,
                state: m.state,
                leaving: m.leaving,
                intent: m.intent,
            })
            .collect();
        PushPull {
            from: self.me.addr.clone(),
            join,
            reply,
            members,
            member_clock: self.serf.member_clock.time(),
            event_clock: self.serf.event_clock.time(),
            events: self.serf.recent(),
        }
    }

    /// Periodic sync with one random live member.
    pub(super) fn push_pull_round(&mut self, out: &mut Vec<GossipEffect>) {
        self.push_pull_with(State::Alive, out);
    }

    /// Serf's reconnect: a push-pull to one random failed member. If it is back, each side
    /// learns the other's view and the stale "dead" is refuted.
    pub(super) fn reconnect(&mut self, out: &mut Vec<GossipEffect>) {
        self.push_pull_with(State::Dead, out);
    }

    fn push_pull_with(&mut self, state: State, out: &mut Vec<GossipEffect>) {
        if self.has_left() {
            return;
        }
        if let Some(name) = self.pick(1, |m| m.state == state).pop() {
            let to = self.members[&name].id.addr.clone();
            let msg = self.push_pull_msg(None, false);
            out.push(GossipEffect::SendStream { to, msg });
        }
    }

    pub(super) fn on_push_pull(&mut self, now: Time, msg: PushPull, out: &mut Vec<GossipEffect>) {
        if !msg.reply {
            let reply = self.push_pull_msg(msg.join, true);
            out.push(GossipEffect::SendStream { to: msg.from.clone(), msg: reply });
        }
        self.serf.member_clock.witness(msg.member_clock);
        self.serf.event_clock.witness(msg.event_clock);
        let first_answer = msg.join.and_then(|t| self.joins.get(&t)).is_some_and(|j| j.answered == 0);
        if msg.reply && first_answer {
            // A joiner does not replay events the pool saw before it arrived: those carry
            // times up to the pool's clock, and later ones come after it. Only the first
            // answer counts, or a slow second one would hide events fired in between.
            self.serf.ignore_events_before(LamportTime(msg.event_clock.0.saturating_add(1)));
        }
        self.synced = true;
        let me = self.me.name.clone();
        for s in msg.members {
            let name = s.member.name.clone();
            match s.state {
                State::Alive => self.on_alive(now, s.incarnation, s.member, out),
                State::Left => self.on_dead(now, s.incarnation, name.clone(), name.clone(), out),
                State::Dead if !self.members.contains_key(&name) => {
                    self.learn_failed(now, s.incarnation, s.member, out)
                }
                State::Dead | State::Suspect => self.on_suspect(now, s.incarnation, name.clone(), me.clone()),
            }
            self.merge_intent(now, &name, s.leaving, s.intent, out);
        }
        // Events this member missed (de-duplicated, and ignored if from before it joined).
        for e in msg.events {
            self.on_user(now, e.ltime, e.name, e.payload);
        }
        if let Some(token) = msg.join.filter(|_| msg.reply) {
            self.join_answer(token, Ok(()), out);
        }
    }
}
