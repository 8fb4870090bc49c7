//! Serf queries: a request gossiped to every member, each of which answers the asker
//! directly; the asker collects answers until its deadline. Consul runs keyring operations
//! this way, so every member applies them and reports back.
//!
//! Owns query ordering (a Lamport clock of its own), de-duplication and answer collection.
//! Never interprets a query: the agent answers it through `GossipInput::Answer`.

use super::broadcast::Topic;
use super::message::{encoded_size, Msg};
use super::{Gossip, GossipEffect, LamportTime};
use crate::time::{Duration, Time};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// A query this member asked and is collecting answers for.
#[derive(Debug)]
pub(super) struct Asked {
    token: u64,
    ltime: LamportTime,
    deadline: Time,
    answers: BTreeMap<Arc<str>, Vec<u8>>,
}

/// Queries this member has seen (to gossip each once) and is asking.
#[derive(Debug, Default)]
pub(super) struct Queries {
    pub clock: super::serf::LamportClock,
    seen: BTreeSet<(LamportTime, u32)>,
    asked: BTreeMap<u32, Asked>,
}

/// How many recent queries are remembered for de-duplication.
const SEEN_LIMIT: usize = 256;

/// Pools up to this size also get each query straight from the asker (see `ask`).
const DIRECT_QUERY_LIMIT: usize = 64;

impl Queries {
    pub fn next_deadline(&self) -> Option<Time> {
        self.asked.values().map(|a| a.deadline).min()
    }

    /// True the first time this query is seen.
    fn admit(&mut self, ltime: LamportTime, id: u32) -> bool {
        self.clock.witness(ltime);
        if !self.seen.insert((ltime, id)) {
            return false;
        }
        while self.seen.len() > SEEN_LIMIT {
            self.seen.pop_first();
        }
        true
    }
}

impl Gossip {
    /// Asks every member; `GossipEffect::Answers { token }` reports who answered by `timeout`.
    /// Besides the gossip, a small pool gets the query straight away, one packet each: a
    /// broadcast has only a few transmits, which probes and acks also spend, and a keyring
    /// operation must reach every member (CI saw "4/5 nodes reported success" with five
    /// alive). Larger pools rely on the gossip alone, as serf does.
    pub(super) fn ask(
        &mut self,
        now: Time,
        token: u64,
        name: String,
        payload: Vec<u8>,
        timeout: Duration,
        out: &mut Vec<GossipEffect>,
    ) {
        let ltime = LamportTime(self.queries.clock.time().0.saturating_add(1));
        let id = self.rng.next_u64() as u32;
        let asked = Asked { token, ltime, deadline: now + timeout, answers: BTreeMap::new() };
        self.queries.asked.insert(id, asked);
        let reply_to = self.me.addr.clone();
        let Some(msg) = self.on_query(ltime, id, name, payload, reply_to) else { return };
        let others: Vec<Arc<str>> = self
            .members
            .values()
            .filter(|m| !m.down() && m.id.name != self.me.name)
            .map(|m| m.id.addr.clone())
            .collect();
        if others.len() <= DIRECT_QUERY_LIMIT {
            for to in others {
                self.send(to, vec![msg.clone()], out);
            }
        }
    }

    /// A query seen for the first time is gossiped on and shown to the agent; returns the
    /// message queued (`None` for one seen before).
    pub(super) fn on_query(
        &mut self,
        ltime: LamportTime,
        id: u32,
        name: String,
        payload: Vec<u8>,
        reply_to: Arc<str>,
    ) -> Option<Msg> {
        if !self.queries.admit(ltime, id) {
            return None;
        }
        let msg = Msg::Query {
            ltime,
            id,
            name: name.clone(),
            payload: payload.clone(),
            reply_to: reply_to.clone(),
        };
        let size = encoded_size(&msg);
        self.queue.push(Topic::Event, msg.clone(), size);
        self.pending_queries.push(GossipEffect::Query { ltime, id, name, payload, reply_to });
        Some(msg)
    }

    /// The agent's answer to a query it was shown: to the asker directly (ourselves included).
    pub(super) fn answer(
        &mut self,
        now: Time,
        ltime: LamportTime,
        id: u32,
        reply_to: Arc<str>,
        payload: Vec<u8>,
    ) {
        let from = self.me.name.clone();
        if reply_to == self.me.addr {
            self.on_query_response(now, ltime, id, from, payload);
            return;
        }
        self.pending_answers.push((reply_to, Msg::QueryResponse { ltime, id, from, payload }));
    }

    pub(super) fn on_query_response(
        &mut self,
        now: Time,
        ltime: LamportTime,
        id: u32,
        from: Arc<str>,
        payload: Vec<u8>,
    ) {
        if let Some(a) = self.queries.asked.get_mut(&id).filter(|a| a.ltime == ltime && a.deadline > now) {
            a.answers.entry(from).or_insert(payload);
        }
    }

    pub(super) fn poll_queries(&mut self, now: Time, out: &mut Vec<GossipEffect>) {
        out.append(&mut self.pending_queries);
        for (to, msg) in std::mem::take(&mut self.pending_answers) {
            self.send(to, vec![msg], out);
        }
        let done: Vec<u32> =
            self.queries.asked.iter().filter(|(_, a)| a.deadline <= now).map(|(i, _)| *i).collect();
        for id in done {
            if let Some(a) = self.queries.asked.remove(&id) {
                out.push(GossipEffect::Answers { token: a.token, answers: a.answers.into_iter().collect() });
            }
        }
    }
}
