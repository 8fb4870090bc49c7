//! The piggyback queue: what this member still has to tell others, and how often.
//!
//! Owns retransmit accounting: each broadcast goes out `limit` times (RetransmitMult ×
//! ceil(log10(n+1))), fresher and less-sent ones first, and a newer message about the same
//! member replaces an older one. Never chooses recipients; `swim` does.

use super::message::Msg;
use std::sync::Arc;

/// What a broadcast is about; a new broadcast with the same key supersedes the old one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Topic {
    /// alive/suspect/dead about this member.
    Member(Arc<str>),
    /// A serf join/leave intent about this member.
    Intent(Arc<str>),
    /// Stands alone (user events).
    Event,
}

/// The most broadcasts held at once (serf trims its queue at the same depth).
const MAX_DEPTH: usize = 4096;

#[derive(Debug)]
struct Pending {
    topic: Topic,
    msg: Msg,
    size: usize,
    transmits: u32,
    seq: u64,
}

#[derive(Debug, Default)]
pub struct Queue {
    items: Vec<Pending>,
    next_seq: u64,
}

impl Queue {
    /// Queues `msg` (encoded size `size`), dropping anything it supersedes.
    pub fn push(&mut self, topic: Topic, msg: Msg, size: usize) {
        if topic != Topic::Event {
            self.items.retain(|p| p.topic != topic);
        }
        self.next_seq += 1;
        self.items.push(Pending { topic, msg, size, transmits: 0, seq: self.next_seq });
        if self.items.len() > MAX_DEPTH {
            // With nobody to gossip to, news piles up: keep the freshest.
            self.items.sort_by(|a, b| a.transmits.cmp(&b.transmits).then(b.seq.cmp(&a.seq)));
            self.items.truncate(MAX_DEPTH);
        }
    }

    /// Takes broadcasts fitting `budget` bytes (each costing its size plus `overhead`),
    /// least-transmitted and then newest first; each taken one counts a transmit and is
    /// dropped once it has gone out `limit` times.
    pub fn take(&mut self, budget: usize, overhead: usize, limit: u32) -> Vec<Msg> {
        let chosen = self.choose(budget, overhead);
        for &i in &chosen {
            self.items[i].transmits += 1;
        }
        let out = chosen.iter().map(|&i| self.items[i].msg.clone()).collect();
        self.items.retain(|p| p.transmits < limit.max(1));
        out
    }

    /// The broadcasts `take` would hand out, without counting a transmit: for members that
    /// are down, whom news is sent to in case they are not (so they can refute) but whose
    /// copies must not use up what live members are owed.
    pub fn peek(&mut self, budget: usize, overhead: usize) -> Vec<Msg> {
        self.choose(budget, overhead).into_iter().map(|i| self.items[i].msg.clone()).collect()
    }

    /// Positions of the broadcasts that fit `budget` bytes (each costing its size plus
    /// `overhead`), least-transmitted and then newest first.
    fn choose(&mut self, budget: usize, overhead: usize) -> Vec<usize> {
        self.items.sort_by(|a, b| a.transmits.cmp(&b.transmits).then(b.seq.cmp(&a.seq)));
        let mut left = budget;
        let mut chosen = Vec::new();
        for (i, p) in self.items.iter().enumerate() {
            if p.size + overhead <= left {
                left -= p.size + overhead;
                chosen.push(i);
            }
        }
        chosen
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Whether something about `topic` is still waiting to go out.
    pub fn holds(&self, topic: &Topic) -> bool {
        self.items.iter().any(|p| &p.topic == topic)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::Incarnation;

    fn suspect(node: &str, inc: u32) -> Msg {
        Msg::Suspect { incarnation: Incarnation(inc), node: node.into(), from: "x".into() }
    }

    #[test]
    fn newer_news_about_a_member_replaces_older() {
        let mut q = Queue::default();
        q.push(Topic::Member("a".into()), suspect("a", 1), 10);
        q.push(Topic::Member("a".into()), suspect("a", 2), 10);
        q.push(Topic::Member("b".into()), suspect("b", 1), 10);
        assert_eq!(q.len(), 2);
        let got = q.take(1000, 2, 3);
        assert!(got.contains(&suspect("a", 2)) && got.contains(&suspect("b", 1)));
    }

    #[test]
    fn each_broadcast_goes_out_limit_times_within_budget() {
        let mut q = Queue::default();
        for i in 0..5 {
            q.push(Topic::Event, suspect(&format!("n{i}"), 1), 100);
        }
        let mut sent = 0;
        for _ in 0..100 {
            let got = q.take(250, 5, 4);
            assert!(got.len() <= 2, "two fit in 250 bytes");
            sent += got.len();
        }
        assert_eq!(sent, 5 * 4);
        assert!(q.is_empty());
    }

    #[test]
    fn peeking_counts_no_transmit() {
        let mut q = Queue::default();
        q.push(Topic::Event, suspect("a", 1), 10);
        for _ in 0..10 {
            assert_eq!(q.peek(100, 0), vec![suspect("a", 1)]);
        }
        assert_eq!(q.take(100, 0, 1), vec![suspect("a", 1)]);
        assert!(q.is_empty());
    }

    #[test]
    fn least_sent_goes_first() {
        let mut q = Queue::default();
        q.push(Topic::Event, suspect("old", 1), 100);
        assert_eq!(q.take(100, 0, 4), vec![suspect("old", 1)]);
        q.push(Topic::Event, suspect("new", 1), 100);
        assert_eq!(q.take(100, 0, 4), vec![suspect("new", 1)]);
    }
}
