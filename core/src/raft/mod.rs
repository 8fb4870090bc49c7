//! The replicated log: append, persist, commit, hand committed entries to the state machine.
//!
//! Owns the log, the term and the commit point. This version runs with one voter (dev mode and
//! single-server clusters): the node leads its own term, and an entry commits once its own
//! persist has returned, since that one durable copy is the quorum. Multi-server replication
//! (elections, AppendEntries, snapshots) extends this type without changing the state machine.
//! Never applies entries itself and never touches disk: it asks the host through `Persist`.

pub mod disk;
mod durability;
mod election;
pub mod log;
pub mod membership;
pub mod message;
mod read;
pub mod replica;
mod replication;
mod snapshot;

pub use membership::{Membership, MembershipChange};
pub use message::{AppendResult, Message};
pub use replica::{
    ConfigError, DebugState, ProposeError, RaftInput, RaftOutput, RecoverError, Replica, ReplicaConfig, Role,
};

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

use crate::fsm::Command;
use crate::ids::{Index, PersistToken, Term};
use crate::io::{Effect, Event, PersistOp};

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub command: Command,
}

#[derive(Debug)]
pub struct Raft {
    term: Term,
    last_index: Index,
    commit: Index,
    /// Entries appended but not yet committed, oldest first.
    uncommitted: VecDeque<Entry>,
    /// Persist tokens in flight with the last index each one covers.
    in_flight: VecDeque<(PersistToken, Index)>,
    next_token: u64,
    leader: bool,
}

impl Raft {
    /// A single-voter log that starts empty.
    pub fn single_voter() -> Raft {
        Raft {
            term: Term(0),
            last_index: Index::ZERO,
            commit: Index::ZERO,
            uncommitted: VecDeque::new(),
            in_flight: VecDeque::new(),
            next_token: 1,
            leader: false,
        }
    }

    pub fn term(&self) -> Term {
        self.term
    }
    pub fn is_leader(&self) -> bool {
        self.leader
    }
    pub fn commit_index(&self) -> Index {
        self.commit
    }
    pub fn last_index(&self) -> Index {
        self.last_index
    }

    /// A single-voter log that resumes from disk: everything that was persisted is
    /// committed, since this voter's durable copy was the quorum.
    pub fn recover(term: Term, last_index: Index) -> Raft {
        Raft { term, last_index, commit: last_index, ..Raft::single_voter() }
    }

    /// With one voter there is nobody to ask: start the next term as leader and write its
    /// no-op, as every new leader does.
    pub fn campaign(&mut self, out: &mut Vec<Effect>) {
        self.term = Term(self.term.0 + 1);
        self.leader = true;
        let token = self.next_persist_token();
        out.push(Effect::Persist { token, op: PersistOp::HardState { term: self.term, voted_for: None } });
        out.push(Effect::Emit(Event::BecameLeader { term: self.term }));
        self.propose(Command::Noop, out);
    }

    /// The next persist token; persists outside the log (hard state, snapshots) take one
    /// too, so every persist shares one order.
    pub fn next_persist_token(&mut self) -> PersistToken {
        let t = PersistToken(self.next_token);
        self.next_token += 1;
        t
    }

    /// Appends a command; returns its index. Only a leader proposes.
    pub fn propose(&mut self, command: Command, out: &mut Vec<Effect>) -> Index {
        assert!(self.leader, "propose on a non-leader");
        self.propose_batch(vec![command], out)
    }

    /// Appends several commands under one persist (group commit); returns the last index.
    pub fn propose_batch(&mut self, commands: Vec<Command>, out: &mut Vec<Effect>) -> Index {
        assert!(self.leader, "propose on a non-leader");
        let mut entries = Vec::with_capacity(commands.len());
        for command in commands {
            self.last_index = self.last_index.next();
            entries.push(Entry { term: self.term, index: self.last_index, command });
        }
        self.uncommitted.extend(entries.iter().cloned());
        let token = self.next_persist_token();
        self.in_flight.push_back((token, self.last_index));
        out.push(Effect::Persist { token, op: PersistOp::AppendLog { entries } });
        self.last_index
    }

    /// The host made `token` durable. Returns the entries that are now committed, in order.
    pub fn persisted(&mut self, token: PersistToken) -> Vec<Entry> {
        let mut durable = None;
        while let Some(&(t, idx)) = self.in_flight.front() {
            if t > token {
                break;
            }
            self.in_flight.pop_front();
            durable = Some(idx);
        }
        let mut committed = Vec::new();
        if let Some(upto) = durable {
            while self.uncommitted.front().is_some_and(|e| e.index <= upto) {
                let e = self.uncommitted.pop_front().expect("front checked");
                self.commit = e.index;
                committed.push(e);
            }
        }
        committed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(out: &[Effect]) -> Vec<PersistToken> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Persist { token, .. } => Some(*token),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn commits_only_after_persist_in_order() {
        let mut r = Raft::single_voter();
        let mut out = vec![];
        r.campaign(&mut out);
        let a = r.propose(Command::Noop, &mut out);
        let b = r.propose(Command::Noop, &mut out);
        assert_eq!((a, b), (Index(2), Index(3)));
        assert_eq!(r.commit_index(), Index::ZERO, "nothing commits before it is durable");
        let t = tokens(&out);
        assert_eq!(t.len(), 4, "hard state + no-op + two appends");
        let first = r.persisted(t[2]);
        assert_eq!(first.iter().map(|e| e.index).collect::<Vec<_>>(), [Index(1), Index(2)]);
        let rest = r.persisted(t[3]);
        assert_eq!(rest.iter().map(|e| e.index).collect::<Vec<_>>(), [Index(3)]);
        assert_eq!(r.commit_index(), Index(3));
        assert!(r.persisted(t[3]).is_empty(), "a repeated ack commits nothing new");
    }

    #[test]
    fn group_commit_shares_one_persist() {
        let mut r = Raft::single_voter();
        let mut out = vec![];
        r.campaign(&mut out);
        out.clear();
        let last = r.propose_batch(vec![Command::Noop, Command::Noop, Command::Noop], &mut out);
        assert_eq!(last, Index(4));
        assert_eq!(tokens(&out).len(), 1);
    }
}
