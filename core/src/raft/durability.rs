//! What the host has made durable, and what must wait until it has.
//!
//! Owns persist tokens, the index through which the log is on disk, and the messages held
//! back until every persist issued before them has returned (votes, append and snapshot
//! acks, the candidate's own vote). Never talks to the host itself and never decides what a
//! message says: `replica` builds the `Persist` outputs and sends what this releases.

use std::collections::VecDeque;

use super::message::Message;
use crate::ids::{Index, PersistToken, Term};

/// Something that depends on state not yet durable.
#[derive(Debug)]
pub enum Held {
    Send {
        to: String,
        msg: Message,
    },
    /// The candidate's vote for itself in `term`, counted only once its hard state is on disk
    /// (a leader whose term was not durable could lead the same term twice after a crash).
    SelfVote {
        term: Term,
    },
}

#[derive(Debug)]
pub struct Durability {
    issued: u64,
    done: u64,
    /// After each token returns, the log is durable through this index.
    log_marks: VecDeque<(u64, Index)>,
    durable_index: Index,
    held: VecDeque<(u64, Held)>,
}

impl Durability {
    /// Nothing in flight; the log is on disk through `durable_index` (what recovery read).
    pub fn new(durable_index: Index) -> Durability {
        Durability { issued: 0, done: 0, log_marks: VecDeque::new(), durable_index, held: VecDeque::new() }
    }

    /// A token for the next persist; tokens share one order across every kind of write.
    pub fn issue(&mut self) -> PersistToken {
        self.issued += 1;
        PersistToken(self.issued)
    }

    /// `token` wrote log entries; once it returns the log is durable through `last`.
    pub fn mark_log(&mut self, token: PersistToken, last: Index) {
        self.log_marks.push_back((token.0, last));
    }

    /// Entries after `keep` were replaced in memory: whatever earlier writes put on disk
    /// there no longer matches the log, so nothing beyond `keep` counts as durable until a
    /// later write covers it.
    pub fn cap(&mut self, keep: Index) {
        self.durable_index = self.durable_index.min(keep);
        for (_, last) in &mut self.log_marks {
            *last = (*last).min(keep);
        }
    }

    /// The log is on disk through this index.
    pub fn durable_index(&self) -> Index {
        self.durable_index
    }

    /// Holds `item` until every persist issued so far has returned; gives it back at once if
    /// nothing is in flight.
    pub fn after_pending(&mut self, item: Held) -> Option<Held> {
        if self.done == self.issued {
            return Some(item);
        }
        self.held.push_back((self.issued, item));
        None
    }

    /// The host made `token` (and every earlier one) durable. Returns what that releases, in
    /// the order it was held. Stale tokens release nothing.
    pub fn persisted(&mut self, token: PersistToken) -> Vec<Held> {
        assert!(token.0 <= self.issued, "persisted token {token:?} was never issued");
        if token.0 <= self.done {
            return Vec::new();
        }
        self.done = token.0;
        while self.log_marks.front().is_some_and(|(t, _)| *t <= token.0) {
            let (_, last) = self.log_marks.pop_front().expect("front checked");
            self.durable_index = self.durable_index.max(last);
        }
        let mut released = Vec::new();
        while self.held.front().is_some_and(|(t, _)| *t <= token.0) {
            released.push(self.held.pop_front().expect("front checked").1);
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vote(t: u64) -> Held {
        Held::SelfVote { term: Term(t) }
    }

    #[test]
    fn holds_until_every_earlier_persist_returns() {
        let mut d = Durability::new(Index::ZERO);
        assert!(d.after_pending(vote(1)).is_some(), "nothing in flight: no wait");
        let a = d.issue();
        let b = d.issue();
        d.mark_log(b, Index(5));
        assert!(d.after_pending(vote(2)).is_none());
        assert!(d.persisted(a).is_empty());
        assert_eq!(d.durable_index(), Index::ZERO);
        assert_eq!(d.persisted(b).len(), 1);
        assert_eq!(d.durable_index(), Index(5));
        assert!(d.persisted(b).is_empty(), "a repeated token releases nothing");
    }

    #[test]
    fn a_truncation_caps_what_earlier_writes_made_durable() {
        let mut d = Durability::new(Index(3));
        let a = d.issue();
        d.mark_log(a, Index(10));
        d.cap(Index(7));
        let b = d.issue();
        d.mark_log(b, Index(9));
        d.persisted(a);
        assert_eq!(d.durable_index(), Index(7));
        d.persisted(b);
        assert_eq!(d.durable_index(), Index(9));
    }
}
