//! Elections: the randomized timeout, PreVote, votes, CheckQuorum, and taking office.
//!
//! Owns the election deadline (a fresh draw in [T, 2T) from the seeded RNG each time it is
//! reset), the quiet period during which a replica that recently heard from a leader (or
//! just started) refuses pre-votes and ignores higher-term vote requests, the pre-vote and
//! vote tallies, and CheckQuorum: a leader that has not heard from a majority within an
//! election timeout steps down. Never replicates entries; taking office hands over to
//! `replication`, which appends the term's no-op.

use std::collections::BTreeSet;

use super::durability::Held;
use super::message::Message;
use super::replica::RaftOutput;
use super::replica::{Replica, RoleState};
use crate::ids::{Index, Term};
use crate::time::{Duration, Time};

#[derive(Debug, Default)]
pub(super) struct ElectionClock {
    /// When a follower or candidate next campaigns.
    pub(super) deadline: Time,
    /// Until then a leader may still hold a lease this replica acknowledged: grant no
    /// pre-votes and ignore vote requests from later terms.
    pub(super) quiet_until: Time,
}

/// The voters that granted a (pre-)vote.
#[derive(Debug, Default)]
pub(super) struct Tally {
    granted: BTreeSet<String>,
}

impl Replica {
    pub(super) fn reset_election_deadline(&mut self) {
        let t = self.cfg.election_timeout;
        let jitter = self.rng.below(u64::try_from(t.as_nanos()).unwrap_or(u64::MAX));
        self.election.deadline = self.now + t + Duration::from_nanos(jitter);
    }

    /// Whether this replica would still back a leader it heard from recently.
    pub(super) fn quiet(&self) -> bool {
        matches!(self.role, RoleState::Leader(_)) || self.now < self.election.quiet_until
    }

    pub(super) fn heard_from_leader(&mut self) {
        self.election.quiet_until = self.now + self.cfg.election_timeout;
        self.reset_election_deadline();
    }

    fn last_log(&self) -> (Index, Term) {
        (self.log.last_index(), self.log.last_term())
    }

    fn other_voters(&self) -> Vec<String> {
        self.configs.current().voters.iter().filter(|v| **v != self.cfg.id).cloned().collect()
    }

    /// Asks the voters whether they would elect this replica in the next term, without
    /// changing any term yet (thesis §9.6).
    pub(super) fn start_prevote(&mut self, out: &mut Vec<RaftOutput>) {
        self.reset_election_deadline();
        let mut tally = Tally::default();
        tally.granted.insert(self.cfg.id.clone());
        self.role = RoleState::PreCandidate(tally);
        self.leader = None;
        let (last_index, last_term) = self.last_log();
        let term = Term(self.term.0 + 1);
        for v in self.other_voters() {
            self.send(v, Message::PreVote { term, last_index, last_term }, out);
        }
        self.count_prevotes(out);
    }

    fn count_prevotes(&mut self, out: &mut Vec<RaftOutput>) {
        if let RoleState::PreCandidate(t) = &self.role {
            if self.configs.current().is_quorum(|v| t.granted.contains(v)) {
                self.campaign(out);
            }
        }
    }

    /// Starts a real election: a new term, a vote for itself that counts once durable.
    fn campaign(&mut self, out: &mut Vec<RaftOutput>) {
        self.term = Term(self.term.0 + 1);
        self.voted_for = Some(self.cfg.id.clone());
        self.leader = None;
        self.role = RoleState::Candidate(Tally::default());
        self.reset_election_deadline();
        self.persist_hard_state(out);
        let own = self.durability.after_pending(Held::SelfVote { term: self.term });
        debug_assert!(own.is_none(), "the hard state was just issued, so the own vote waits");
        let (last_index, last_term) = self.last_log();
        let term = self.term;
        for v in self.other_voters() {
            self.send(v, Message::RequestVote { term, last_index, last_term }, out);
        }
    }

    pub(super) fn on_self_vote(&mut self, term: Term, out: &mut Vec<RaftOutput>) {
        if term != self.term {
            return;
        }
        if let RoleState::Candidate(t) = &mut self.role {
            t.granted.insert(self.cfg.id.clone());
            self.count_votes(out);
        }
    }

    fn count_votes(&mut self, out: &mut Vec<RaftOutput>) {
        if let RoleState::Candidate(t) = &self.role {
            if self.configs.current().is_quorum(|v| t.granted.contains(v)) {
                self.become_leader(out);
            }
        }
    }

    pub(super) fn on_prevote(
        &mut self,
        from: String,
        term: Term,
        last_index: Index,
        last_term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        let granted =
            term > self.term && !self.quiet() && self.log.candidate_up_to_date(last_index, last_term);
        let term = if granted { term } else { self.term };
        self.send(from, Message::PreVoteResp { term, granted }, out);
    }

    pub(super) fn on_prevote_resp(
        &mut self,
        from: String,
        term: Term,
        granted: bool,
        out: &mut Vec<RaftOutput>,
    ) {
        if !granted {
            if term > self.term {
                self.become_follower(term, None, out);
            }
            return;
        }
        if term != Term(self.term.0 + 1) {
            return;
        }
        if let RoleState::PreCandidate(t) = &mut self.role {
            t.granted.insert(from);
            self.count_prevotes(out);
        }
    }

    /// A vote request for the current term (term changes were handled by the caller).
    pub(super) fn on_request_vote(
        &mut self,
        from: String,
        last_index: Index,
        last_term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        let free = self.voted_for.as_ref().is_none_or(|v| *v == from);
        let granted = free
            && !matches!(self.role, RoleState::Leader(_))
            && self.log.candidate_up_to_date(last_index, last_term);
        let term = self.term;
        if !granted {
            return self.send(from, Message::VoteResp { term, granted: false }, out);
        }
        if self.voted_for.is_none() {
            self.voted_for = Some(from.clone());
            self.persist_hard_state(out);
        }
        if !matches!(self.role, RoleState::Follower) {
            self.role = RoleState::Follower;
        }
        self.reset_election_deadline();
        self.send_when_durable(from, Message::VoteResp { term, granted: true }, out);
    }

    pub(super) fn on_vote_resp(&mut self, from: String, granted: bool, out: &mut Vec<RaftOutput>) {
        if let (RoleState::Candidate(t), true) = (&mut self.role, granted) {
            t.granted.insert(from);
            self.count_votes(out);
        }
    }

    /// CheckQuorum: a leader that has not heard from a majority of voters within an election
    /// timeout steps down, so a partitioned leader stops accepting writes and reads.
    pub(super) fn check_quorum(&mut self, out: &mut Vec<RaftOutput>) {
        let (id, next) = (self.cfg.id.clone(), self.now + self.cfg.election_timeout);
        let Some(l) = self.leadership() else { return };
        l.check_quorum_at = next;
        let heard = std::mem::take(&mut l.heard);
        if !self.configs.current().is_quorum(|v| v == id || heard.contains(v)) {
            let term = self.term;
            self.become_follower(term, None, out);
        }
    }
}
