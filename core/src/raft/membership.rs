//! Who votes: the membership, its quorum arithmetic, and how it changes.
//!
//! Owns `Membership` (voters and non-voters), majority counting, the history of configuration
//! entries in the log, and the leader's side of a change: refusing it, promoting a caught-up
//! non-voter, stepping down once its own removal commits. Never replicates the entries
//! itself (`replication` does).
//!
//! The rule, single-server changes from the Raft thesis (§4.1): a configuration entry takes
//! effect on a replica as soon as it is in that replica's log, committed or not, and a log
//! truncation that removes it reverts to the one before. Because each change adds or removes
//! one voter, any majority of the old set and any majority of the new set overlap, so two
//! leaders can never be elected in one term across a change. Safety then needs only:
//! - one change at a time: a leader refuses a new change while its latest configuration entry
//!   is uncommitted;
//! - a leader refuses a change until an entry of its own term has committed (the thesis
//!   erratum: otherwise a change from an earlier term, never committed, could combine with a
//!   new one to give two disjoint majorities);
//! - servers join as non-voters, which replicate but neither vote nor count for commit, and
//!   the leader promotes a non-voter to voter once it has caught up to the commit index;
//! - a leader that removes itself keeps leading (without counting itself) until the change
//!   commits, then steps down.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::replica::RaftOutput;
use super::replica::{ProposeError, Replica};
use super::Entry;
use crate::fsm::Command;
use crate::ids::{Index, Term};

/// A configuration: the voters, whose majorities elect and commit, and the non-voters, which
/// only receive the log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub voters: BTreeSet<String>,
    pub non_voters: BTreeSet<String>,
}

/// One change a caller may ask for; promotion of a caught-up non-voter is the leader's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MembershipChange {
    /// A new server joins as a non-voter.
    AddNonVoter(String),
    /// A voter or non-voter leaves.
    Remove(String),
}

impl Membership {
    pub fn of_voters<I: IntoIterator<Item = String>>(voters: I) -> Membership {
        Membership { voters: voters.into_iter().collect(), non_voters: BTreeSet::new() }
    }

    /// The membership a configuration command carries, if it is one.
    pub fn from_command(cmd: &Command) -> Option<Membership> {
        match cmd {
            Command::Config { voters, non_voters } => Some(Membership {
                voters: voters.iter().cloned().collect(),
                non_voters: non_voters.iter().cloned().collect(),
            }),
            _ => None,
        }
    }

    pub fn to_command(&self) -> Command {
        Command::Config {
            voters: self.voters.iter().cloned().collect(),
            non_voters: self.non_voters.iter().cloned().collect(),
        }
    }

    pub fn is_voter(&self, id: &str) -> bool {
        self.voters.contains(id)
    }

    pub fn is_member(&self, id: &str) -> bool {
        self.voters.contains(id) || self.non_voters.contains(id)
    }

    /// Every member, voters first, each in name order.
    pub fn members(&self) -> impl Iterator<Item = &String> {
        self.voters.iter().chain(self.non_voters.iter())
    }

    /// Whether the voters for which `yes` holds form a majority.
    pub fn is_quorum(&self, yes: impl Fn(&str) -> bool) -> bool {
        let n = self.voters.iter().filter(|v| yes(v)).count();
        n > self.voters.len() / 2
    }

    /// The highest value a majority of voters has reached, given each voter's value (a
    /// match index, a read round).
    pub fn quorum_value<T: Ord + Copy + Default>(&self, reached: impl Fn(&str) -> T) -> T {
        let mut got: Vec<T> = self.voters.iter().map(|v| reached(v)).collect();
        if got.is_empty() {
            return T::default();
        }
        got.sort_unstable_by(|a, b| b.cmp(a));
        got[self.voters.len() / 2]
    }

    /// The membership after `change`, or why it may not be made.
    pub fn changed(&self, change: &MembershipChange) -> Result<Membership, ProposeError> {
        let mut next = self.clone();
        match change {
            MembershipChange::AddNonVoter(id) => {
                if self.is_member(id) {
                    return Err(ProposeError::AlreadyMember);
                }
                next.non_voters.insert(id.clone());
            }
            MembershipChange::Remove(id) => {
                if !self.is_member(id) {
                    return Err(ProposeError::NotMember);
                }
                next.voters.remove(id);
                next.non_voters.remove(id);
                if next.voters.is_empty() {
                    return Err(ProposeError::WouldLeaveNoVoters);
                }
            }
        }
        Ok(next)
    }

    /// The membership with the non-voter `id` made a voter.
    pub fn promoted(&self, id: &str) -> Membership {
        let mut next = self.clone();
        if next.non_voters.remove(id) {
            next.voters.insert(id.to_string());
        }
        next
    }
}

/// The configurations in a replica's log: the one in force at `base_index` (from the
/// snapshot or the initial peers) and every configuration entry after it.
#[derive(Clone, Debug)]
pub struct ConfigHistory {
    base_index: Index,
    base: Membership,
    changes: Vec<(Index, Membership)>,
}

impl ConfigHistory {
    pub fn new(base_index: Index, base: Membership) -> ConfigHistory {
        ConfigHistory { base_index, base, changes: Vec::new() }
    }

    /// The configuration in force: the latest in the log.
    pub fn current(&self) -> &Membership {
        self.changes.last().map_or(&self.base, |(_, m)| m)
    }

    /// The index of the latest configuration entry (the base index if none follows it).
    pub fn latest_index(&self) -> Index {
        self.changes.last().map_or(self.base_index, |(i, _)| *i)
    }

    /// The configuration in force at `index` (at or after the base).
    pub fn at(&self, index: Index) -> &Membership {
        self.changes.iter().rev().find(|(i, _)| *i <= index).map_or(&self.base, |(_, m)| m)
    }

    /// An entry at `index` was appended; record it if it is a configuration.
    pub fn appended(&mut self, index: Index, cmd: &Command) {
        if let Some(m) = Membership::from_command(cmd) {
            self.changes.push((index, m));
        }
    }

    /// Entries from `from` on were dropped: so are their configurations.
    pub fn truncated_from(&mut self, from: Index) {
        self.changes.retain(|(i, _)| *i < from);
    }

    /// A snapshot now covers everything through `index`: fold the configurations up to it
    /// into the base.
    pub fn fold_to(&mut self, index: Index) {
        if index <= self.base_index {
            return;
        }
        self.base = self.at(index).clone();
        self.base_index = index;
        self.changes.retain(|(i, _)| *i > index);
    }

    /// The log was replaced by a snapshot at `index` whose configuration is `m`.
    pub fn reset(&mut self, index: Index, m: Membership) {
        *self = ConfigHistory::new(index, m);
    }
}

impl Replica {
    /// Whether the leader may start a change: its no-op has committed and so has the last
    /// configuration entry.
    fn change_allowed(&self) -> bool {
        self.leadership_ref()
            .is_some_and(|l| self.commit >= l.first_index && self.configs.latest_index() <= self.commit)
    }

    pub(super) fn change_membership(
        &mut self,
        change: &MembershipChange,
        out: &mut Vec<RaftOutput>,
    ) -> Result<Index, ProposeError> {
        if self.leadership_ref().is_none() {
            return Err(ProposeError::NotLeader { leader: self.leader.clone() });
        }
        if !self.change_allowed() {
            return Err(ProposeError::ChangeInProgress);
        }
        let next = self.configs.current().changed(change)?;
        Ok(self.leader_append(next.to_command(), out))
    }

    /// Writes the first configuration as entry 1 of term 1. Every server that bootstraps
    /// the same cluster writes the identical entry, so their logs match from the start.
    pub(super) fn bootstrap(&mut self, voters: Vec<String>, out: &mut Vec<RaftOutput>) {
        let fresh = self.term == Term(0) && self.log.last_index() == Index::ZERO && self.snapshot.is_none();
        if !fresh || voters.is_empty() {
            return;
        }
        self.term = Term(1);
        self.persist_hard_state(out);
        let m = Membership::of_voters(voters);
        let entry = Entry { term: Term(1), index: Index(1), command: m.to_command() };
        self.append_local(&[entry], true, out);
        if m.voters.len() == 1 && m.is_voter(&self.cfg.id) {
            self.start_prevote(out);
        }
    }

    /// Promotes one non-voter whose log has reached the commit index, if a change may start.
    pub(super) fn promote_caught_up(&mut self, out: &mut Vec<RaftOutput>) {
        if !self.change_allowed() {
            return;
        }
        let Some(l) = self.leadership_ref() else { return };
        let current = self.configs.current();
        let ready =
            current.non_voters.iter().find(|n| l.progress.get(*n).is_some_and(|p| p.matched >= self.commit));
        if let Some(id) = ready.cloned() {
            let next = current.promoted(&id);
            self.leader_append(next.to_command(), out);
            self.replicate_all(out);
        }
    }

    /// A leader whose removal (or demotion) has committed hands over by stepping down.
    pub(super) fn step_down_if_removed(&mut self, out: &mut Vec<RaftOutput>) {
        let removed = !self.configs.current().is_voter(&self.cfg.id);
        if removed && self.configs.latest_index() <= self.commit {
            let term = self.term;
            self.become_follower(term, None, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn voters(v: &[&str]) -> Membership {
        Membership::of_voters(v.iter().map(|s| s.to_string()))
    }

    #[test]
    fn quorum_arithmetic() {
        let m = voters(&["a", "b", "c", "d", "e"]);
        assert!(m.is_quorum(|v| v < "d"));
        assert!(!m.is_quorum(|v| v < "c"));
        let idx = |v: &str| {
            Index(match v {
                "a" => 9,
                "b" => 7,
                "c" => 5,
                "d" => 3,
                _ => 1,
            })
        };
        assert_eq!(m.quorum_value(idx), Index(5));
        assert_eq!(voters(&["a"]).quorum_value(|_| Index(4)), Index(4));
    }

    #[test]
    fn changes_are_checked() {
        let m = voters(&["a", "b"]);
        assert_eq!(m.changed(&MembershipChange::AddNonVoter("a".into())), Err(ProposeError::AlreadyMember));
        assert_eq!(m.changed(&MembershipChange::Remove("z".into())), Err(ProposeError::NotMember));
        let added = m.changed(&MembershipChange::AddNonVoter("c".into())).unwrap();
        assert!(added.non_voters.contains("c") && !added.is_voter("c"));
        assert!(added.promoted("c").is_voter("c"));
        let one = voters(&["a"]);
        assert_eq!(one.changed(&MembershipChange::Remove("a".into())), Err(ProposeError::WouldLeaveNoVoters));
    }

    #[test]
    fn history_follows_appends_truncations_and_snapshots() {
        let mut h = ConfigHistory::new(Index::ZERO, voters(&["a"]));
        h.appended(Index(3), &voters(&["a", "b"]).to_command());
        h.appended(Index(4), &Command::Noop);
        h.appended(Index(6), &voters(&["a", "b", "c"]).to_command());
        assert_eq!(h.current(), &voters(&["a", "b", "c"]));
        assert_eq!(h.at(Index(5)), &voters(&["a", "b"]));
        assert_eq!(h.latest_index(), Index(6));
        h.truncated_from(Index(5));
        assert_eq!(h.current(), &voters(&["a", "b"]));
        h.fold_to(Index(4));
        assert_eq!(h.at(Index(4)), &voters(&["a", "b"]));
        assert_eq!(h.latest_index(), Index(4));
    }
}
