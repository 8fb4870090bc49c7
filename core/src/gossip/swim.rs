//! SWIM proper: probing (direct, then indirect through k members, then suspicion), the
//! incarnation rules for alive/suspect/dead news, refutation, and gossip rounds.
//!
//! Owns what a member believes about others and how it tests that belief. Never does
//! the serf layer's intents or events (`serf`), nor full-state sync (`pushpull`).

use super::broadcast::Topic;
use super::lifeguard::{suspicion_min, Suspicion};
use super::message::{encoded_size, Msg, Packet};
use super::{Change, Gossip, GossipEffect, Identity, Incarnation, Member, Probe, Relay, State};
use crate::time::Time;
use std::sync::Arc;

/// Bytes each message adds to a packet beyond its own encoding (the vector length prefix
/// share, rounded up generously).
const MSG_OVERHEAD: usize = 3;

/// Longest member name or address relayed in a probe, so a relayed ping always fits a
/// packet (DNS labels, and so Consul node names, are far shorter).
const MAX_NAME: usize = 256;

impl Gossip {
    pub(super) fn on_packet(
        &mut self,
        now: Time,
        from: Arc<str>,
        packet: Packet,
        out: &mut Vec<GossipEffect>,
    ) {
        for msg in packet.msgs {
            self.on_msg(now, &from, msg, out);
        }
    }

    fn on_msg(&mut self, now: Time, from: &Arc<str>, msg: Msg, out: &mut Vec<GossipEffect>) {
        match msg {
            Msg::Ping { seq, target } => {
                if target == self.me.name {
                    let payload = self.coordinate_payload();
                    self.send(from.clone(), vec![Msg::Ack { seq, payload }], out);
                }
            }
            Msg::IndirectPing { seq, target, addr, reply_to, nack } => {
                if target.len() > MAX_NAME || addr.len() > MAX_NAME || reply_to.len() > MAX_NAME {
                    return;
                }
                let mine = self.next_seq();
                let deadline = now + self.cfg.probe_timeout;
                self.relays.insert(mine, Relay { reply_to, seq, deadline, nack });
                self.send(addr, vec![Msg::Ping { seq: mine, target }], out);
            }
            Msg::Ack { seq, payload } => {
                if let Some(p) = self.probe.take_if(|p| p.seq == seq) {
                    self.awareness.apply(-1);
                    // Only a direct probe measures this member's own round trip.
                    if !p.indirect_sent {
                        self.observe_rtt(&p.target, &payload, now.since(p.sent_at));
                    }
                } else if let Some(r) = self.relays.remove(&seq) {
                    self.send(r.reply_to, vec![Msg::Ack { seq: r.seq, payload: vec![] }], out);
                }
            }
            Msg::Nack { seq } => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.seq == seq) {
                    p.nacks += 1;
                }
            }
            Msg::Alive { incarnation, member } => self.on_alive(now, incarnation, member, out),
            Msg::Suspect { incarnation, node, from } => self.on_suspect(now, incarnation, node, from),
            Msg::Dead { incarnation, node, from } => self.on_dead(now, incarnation, node, from, out),
            Msg::Intent { leave, node, ltime, prune } => self.on_intent(now, leave, node, ltime, prune, out),
            Msg::User { ltime, name, payload } => self.on_user(now, ltime, name, payload),
            Msg::Query { ltime, id, name, payload, reply_to } => {
                if reply_to.len() <= MAX_NAME {
                    let _ = self.on_query(ltime, id, name, payload, reply_to);
                }
            }
            Msg::QueryResponse { ltime, id, from, payload } => {
                self.on_query_response(now, ltime, id, from, payload)
            }
        }
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `msgs` to `to`, filling the rest of the packet with pending broadcasts.
    pub(super) fn send(&mut self, to: Arc<str>, mut msgs: Vec<Msg>, out: &mut Vec<GossipEffect>) {
        let used: usize = msgs.iter().map(|m| encoded_size(m) + MSG_OVERHEAD).sum();
        let budget = self.cfg.packet_size.saturating_sub(used + super::wire::PACKET_OVERHEAD);
        let limit = self.retransmit_limit();
        msgs.extend(self.queue.take(budget, MSG_OVERHEAD, limit));
        out.push(GossipEffect::SendPacket { to, packet: Packet { msgs } });
    }

    pub(super) fn broadcast_member(&mut self, msg: Msg) {
        let node = match &msg {
            Msg::Alive { member, .. } => member.name.clone(),
            Msg::Suspect { node, .. } | Msg::Dead { node, .. } => node.clone(),
            _ => unreachable!("only member news is keyed by member"),
        };
        let size = encoded_size(&msg);
        self.queue.push(Topic::Member(node), msg, size);
    }

    // ---- probing ----

    pub(super) fn poll_probe(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        if let Some(p) = &self.probe {
            if !p.indirect_sent && now >= p.indirect_at {
                self.indirect(out);
            }
        }
        if self.probe.as_ref().is_some_and(|p| now >= p.end_at) {
            if let Some(p) = self.probe.take() {
                self.probe_failed(now, p);
            }
        }
        if now >= self.next_probe {
            self.next_probe = now + self.awareness.scale(self.cfg.probe_interval);
            if self.probe.is_none() && !self.has_left() {
                self.probe_next(now, out);
            }
        }
    }

    fn probe_next(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        let Some(target) = self.next_target() else { return };
        let seq = self.next_seq();
        let m = &self.members[&target];
        let addr = m.id.addr.clone();
        let mut msgs = vec![Msg::Ping { seq, target: target.clone() }];
        // Lifeguard's buddy system: tell a suspect it is suspected, so it can refute at once.
        if self.cfg.lifeguard && m.state == State::Suspect {
            let (incarnation, from) = (m.incarnation, self.me.name.clone());
            msgs.insert(0, Msg::Suspect { incarnation, node: target.clone(), from });
        }
        self.probe = Some(Probe {
            seq,
            target,
            sent_at: now,
            indirect_at: now + self.awareness.scale(self.cfg.probe_timeout),
            end_at: now + self.awareness.scale(self.cfg.probe_interval),
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
        });
        self.send(addr, msgs, out);
    }

    /// The next member in round-robin order that is still worth probing; the order is
    /// reshuffled after each full pass.
    fn next_target(&mut self) -> Option<Arc<str>> {
        for _ in 0..2 {
            while self.cursor < self.order.len() {
                let name = self.order[self.cursor].clone();
                self.cursor += 1;
                if self.members.get(&name).is_some_and(|m| !m.down()) {
                    return Some(name);
                }
            }
            self.reshuffle();
        }
        None
    }

    pub(super) fn reshuffle(&mut self) {
        self.order = self.members.keys().filter(|n| **n != self.me.name).cloned().collect();
        self.rng.shuffle(&mut self.order);
        self.cursor = 0;
    }

    fn indirect(&mut self, out: &mut Vec<GossipEffect>) {
        let Some(p) = self.probe.as_ref() else { return };
        let (target, seq) = (p.target.clone(), p.seq);
        let Some(addr) = self.members.get(&target).map(|m| m.id.addr.clone()) else {
            // Forgotten (pruned) while we were probing it: nothing left to test.
            self.probe = None;
            return;
        };
        let me = self.me.name.clone();
        let relays = self.pick(self.cfg.indirect_checks, |m| {
            m.state == State::Alive && m.id.name != target && m.id.name != me
        });
        for relay in &relays {
            let msg = Msg::IndirectPing {
                seq,
                target: target.clone(),
                addr: addr.clone(),
                reply_to: self.me.addr.clone(),
                nack: true,
            };
            let to = self.members[relay].id.addr.clone();
            self.send(to, vec![msg], out);
        }
        if let Some(p) = self.probe.as_mut() {
            p.indirect_sent = true;
            p.expected_nacks = relays.len() as u32;
        }
    }

    /// No ack, direct or indirect, within the probe interval: suspect the target. Lifeguard
    /// counts missing nacks against this member's own health first.
    fn probe_failed(&mut self, now: Time, p: Probe) {
        if self.cfg.lifeguard {
            let missed = p.expected_nacks.saturating_sub(p.nacks);
            self.awareness.apply(if p.expected_nacks == 0 { 1 } else { missed as i32 });
        }
        let Some(m) = self.members.get(&p.target) else { return };
        let (incarnation, from) = (m.incarnation, self.me.name.clone());
        self.on_suspect(now, incarnation, p.target, from);
    }

    pub(super) fn poll_relays(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        let due: Vec<u32> = self.relays.iter().filter(|(_, r)| r.deadline <= now).map(|(s, _)| *s).collect();
        for seq in due {
            if let Some(r) = self.relays.remove(&seq).filter(|r| r.nack) {
                self.send(r.reply_to, vec![Msg::Nack { seq: r.seq }], out);
            }
        }
    }

    pub(super) fn poll_suspicions(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        let due: Vec<Arc<str>> =
            self.suspicions.iter().filter(|(_, s)| s.deadline <= now).map(|(n, _)| n.clone()).collect();
        for node in due {
            let Some(s) = self.suspicions.remove(&node) else { continue };
            let still = self
                .members
                .get(&node)
                .is_some_and(|m| m.state == State::Suspect && m.incarnation == s.incarnation);
            if still {
                let from = self.me.name.clone();
                self.on_dead(now, s.incarnation, node, from, out);
            }
        }
    }

    /// Piggyback-only gossip: pending news to a few random members, including recently
    /// dead ones (so a member wrongly declared dead hears it and refutes).
    pub(super) fn gossip_round(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        if self.queue.is_empty() {
            return;
        }
        let dead_window = self.cfg.gossip_to_the_dead;
        // Members that left on purpose need no news; ones declared dead get it for a while,
        // in case they are not.
        let targets = self.pick(self.cfg.gossip_nodes, |m| match m.state {
            State::Alive | State::Suspect => true,
            State::Dead => now.since(m.since) < dead_window,
            State::Left => false,
        });
        let limit = self.retransmit_limit();
        for name in targets {
            let budget = self.cfg.packet_size.saturating_sub(super::wire::PACKET_OVERHEAD);
            let msgs = if self.members[&name].down() {
                self.queue.peek(budget, MSG_OVERHEAD)
            } else {
                self.queue.take(budget, MSG_OVERHEAD, limit)
            };
            if msgs.is_empty() {
                break;
            }
            let to = self.members[&name].id.addr.clone();
            out.push(GossipEffect::SendPacket { to, packet: Packet { msgs } });
        }
    }

    // ---- the incarnation rules ----

    /// Raises our incarnation past `seen` and tells everyone we are alive. Saturates at the
    /// end of the range (news at `u32::MAX` is a hostile peer's; wrapping would rewind us).
    pub(super) fn refute(&mut self, seen: Incarnation) {
        if self.cfg.lifeguard {
            self.awareness.apply(1);
        }
        let me = self.me_mut();
        me.incarnation = Incarnation(me.incarnation.0.max(seen.0).saturating_add(1));
        let incarnation = me.incarnation;
        let member = self.me.clone();
        self.broadcast_member(Msg::Alive { incarnation, member });
    }

    /// An alive notice is accepted only with an incarnation above what we hold: that is
    /// what keeps a dead member dead until it itself says otherwise.
    pub(super) fn on_alive(
        &mut self,
        now: Time,
        incarnation: Incarnation,
        member: Arc<Identity>,
        out: &mut Vec<GossipEffect>,
    ) {
        if member.name == self.me.name {
            let mine = &self.members[&self.me.name];
            if !self.has_left()
                && (incarnation > mine.incarnation || (incarnation == mine.incarnation && member != self.me))
            {
                self.refute(incarnation);
            }
            return;
        }
        let name = member.name.clone();
        let change = match self.members.get_mut(&name) {
            None => {
                self.add_member(now, incarnation, member.clone(), State::Alive);
                Some(Change::Joined)
            }
            Some(m) => {
                if incarnation <= m.incarnation {
                    return;
                }
                if m.id.addr != member.addr && !m.down() {
                    tracing::warn!(node = %name, old = %m.id.addr, new = %member.addr, "name conflict; keeping the live member");
                    return;
                }
                let change =
                    if m.down() { Some(Change::Joined) } else { (m.id != member).then_some(Change::Updated) };
                m.incarnation = incarnation;
                if m.state != State::Alive {
                    m.since = now;
                }
                m.state = State::Alive;
                m.id = member.clone();
                self.suspicions.remove(&name);
                change
            }
        };
        if let Some(change) = change {
            out.push(GossipEffect::Member { change, member: member.clone() });
        }
        self.broadcast_member(Msg::Alive { incarnation, member });
    }

    pub(super) fn on_suspect(&mut self, now: Time, incarnation: Incarnation, node: Arc<str>, from: Arc<str>) {
        let Some(m) = self.members.get(&node) else { return };
        if incarnation < m.incarnation {
            if node == self.me.name && !self.has_left() {
                // Someone still suspects an incarnation we already refuted: our alive
                // notice missed it. Say it again; it rides on our next packet, such as the
                // ack to the buddy ping that carried this suspicion.
                let (incarnation, member) = (m.incarnation, self.me.clone());
                self.broadcast_member(Msg::Alive { incarnation, member });
            }
            return;
        }
        if node == self.me.name {
            if !self.has_left() {
                self.refute(incarnation);
            }
            return;
        }
        if let Some(s) = self.suspicions.get_mut(&node) {
            if s.confirm(from.clone()) {
                self.broadcast_member(Msg::Suspect { incarnation, node, from });
            }
            return;
        }
        if m.state != State::Alive {
            return;
        }
        let n = self.estimate();
        let min = suspicion_min(self.cfg.suspicion_mult, n, self.cfg.probe_interval);
        let (k, max) = if self.cfg.lifeguard {
            let k = self.cfg.suspicion_mult.saturating_sub(2);
            let k = if n.saturating_sub(2) < k as usize { 0 } else { k };
            (k, min * self.cfg.suspicion_max_timeout_mult)
        } else {
            (0, min)
        };
        self.suspicions.insert(node.clone(), Suspicion::new(incarnation, from.clone(), k, min, max, now));
        if let Some(m) = self.members.get_mut(&node) {
            m.incarnation = incarnation;
            m.state = State::Suspect;
            m.since = now;
        }
        self.broadcast_member(Msg::Suspect { incarnation, node, from });
    }

    pub(super) fn on_dead(
        &mut self,
        now: Time,
        incarnation: Incarnation,
        node: Arc<str>,
        from: Arc<str>,
        out: &mut Vec<GossipEffect>,
    ) {
        let Some(m) = self.members.get(&node) else { return };
        if incarnation < m.incarnation || m.down() {
            return;
        }
        if node == self.me.name {
            if !self.has_left() {
                self.refute(incarnation);
            }
            return;
        }
        let left = from == node;
        let m = self.members.get_mut(&node).expect("checked above");
        m.incarnation = incarnation;
        m.state = if left { State::Left } else { State::Dead };
        m.since = now;
        let member = m.id.clone();
        self.suspicions.remove(&node);
        let change = if left { Change::Left } else { Change::Failed };
        out.push(GossipEffect::Member { change, member });
        self.broadcast_member(Msg::Dead { incarnation, node, from });
    }

    fn add_member(&mut self, now: Time, incarnation: Incarnation, member: Arc<Identity>, state: State) {
        let name = member.name.clone();
        let intent = super::LamportTime(0);
        self.members.insert(
            name.clone(),
            Member { id: member, incarnation, state, since: now, leaving: false, intent },
        );
        // A newcomer joins the probe order at a random place, so it is probed within one
        // pass without disturbing the shuffle.
        let at = self.rng.below(self.order.len() as u64 + 1) as usize;
        self.order.insert(at, name);
        if at < self.cursor {
            self.cursor += 1;
        }
    }

    /// A member this one never knew that a push-pull says is dead: it is known as failed
    /// from now on (as serf keeps failed members until they are reaped), so a member that
    /// starts afresh, such as a restarted server, agrees with the pool about who is gone
    /// instead of never hearing of them (the simulator's clients world found a dead client
    /// a restarted leader never reconciled). News about a known member keeps the rule that
    /// a remote "dead" only makes it suspect.
    pub(super) fn learn_failed(
        &mut self,
        now: Time,
        incarnation: Incarnation,
        member: Arc<Identity>,
        out: &mut Vec<GossipEffect>,
    ) {
        if self.members.contains_key(&member.name) || member.name == self.me.name {
            return;
        }
        self.add_member(now, incarnation, member.clone(), State::Dead);
        out.push(GossipEffect::Member { change: Change::Failed, member });
    }

    /// Forgets members dead past the reconnect timeout or left past the tombstone timeout.
    pub(super) fn reap(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        let (dead, left) = (self.cfg.reconnect_timeout, self.cfg.tombstone_timeout);
        let gone: Vec<Arc<str>> = self
            .members
            .values()
            .filter(|m| match m.state {
                State::Dead => now.since(m.since) >= dead,
                State::Left => m.id.name != self.me.name && now.since(m.since) >= left,
                _ => false,
            })
            .map(|m| m.id.name.clone())
            .collect();
        for name in gone {
            self.forget(&name, out);
        }
    }

    pub(super) fn forget(&mut self, name: &Arc<str>, out: &mut Vec<GossipEffect>) {
        if let Some(m) = self.members.remove(name) {
            self.suspicions.remove(name);
            self.forget_coordinate(name);
            self.order.retain(|n| n != name);
            self.cursor = self.cursor.min(self.order.len());
            out.push(GossipEffect::Member { change: Change::Reaped, member: m.id });
        }
    }
}
