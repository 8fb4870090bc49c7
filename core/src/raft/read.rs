//! Linearizable reads without writing to the log: ReadIndex and the leader lease.
//!
//! Owns heartbeat rounds (every AppendEntries carries the leader's latest round as its
//! `read_ctx`, followers echo it), the send time of each round not yet confirmed, and the
//! reads waiting for one. A round is confirmed when a majority of voters (the leader
//! included) has echoed it or a later one: at that moment no other leader can have been
//! elected since the round was sent.
//! - ReadIndex (thesis §6.4): the read index is the commit index when the read arrives (or
//!   the term's no-op, if that has not committed yet); the read is ready once a round sent
//!   after it arrived is confirmed and the commit index has reached the read index. The
//!   caller serves it once its state machine has applied that index.
//! - The lease (§6.4.1, and Jepsen's 2014 Consul finding): a leader may answer from its
//!   state at the commit index without a round while the last confirmed round, timed from
//!   when it was *sent*, is younger than `election_timeout − max_clock_drift` on its own
//!   clock. Followers that echoed that round refuse to elect anyone for an election timeout
//!   after they received it (`election`), which is what makes the lease sound.
//!
//! Never sends anything itself: `replication` puts the rounds on the wire.

use std::collections::{BTreeMap, VecDeque};

use super::replica::RaftOutput;
use super::replica::{Replica, RoleState};
use crate::ids::Index;
use crate::time::Time;

#[derive(Debug)]
pub(super) struct ReadState {
    /// The latest round sent.
    round: u64,
    /// Rounds sent and not yet confirmed, with their local send times.
    sent: VecDeque<(u64, Time)>,
    /// The latest round each peer echoed.
    acked: BTreeMap<String, u64>,
    /// The latest confirmed round, and when it was sent.
    confirmed: Option<(u64, Time)>,
    pending: Vec<PendingRead>,
}

#[derive(Debug)]
struct PendingRead {
    ctx: u64,
    index: Index,
    round: u64,
}

impl ReadState {
    /// A new leader's reads: round 1 is its first AppendEntries, sent at `now`.
    pub(super) fn new(now: Time) -> ReadState {
        ReadState {
            round: 1,
            sent: VecDeque::from([(1, now)]),
            acked: BTreeMap::new(),
            confirmed: None,
            pending: Vec::new(),
        }
    }

    pub(super) fn round(&self) -> u64 {
        self.round
    }

    pub(super) fn start_round(&mut self, now: Time) {
        self.round += 1;
        self.sent.push_back((self.round, now));
    }

    /// `peer` echoed `round`. Rounds never sent are a bad message and ignored.
    pub(super) fn ack(&mut self, peer: &str, round: u64) {
        if round <= self.round {
            let a = self.acked.entry(peer.to_string()).or_default();
            *a = (*a).max(round);
        }
    }

    fn confirmed_round(&self) -> u64 {
        self.confirmed.map_or(0, |(r, _)| r)
    }

    /// A majority has echoed `round`: remember when it was sent.
    fn confirm(&mut self, round: u64) {
        if round <= self.confirmed_round() {
            return;
        }
        while let Some(&(r, at)) = self.sent.front() {
            if r > round {
                break;
            }
            self.sent.pop_front();
            self.confirmed = Some((r, at));
        }
    }
}

impl Replica {
    pub(super) fn read_index(&mut self, ctx: u64, out: &mut Vec<RaftOutput>) {
        let commit = self.commit;
        let Some(l) = self.leadership() else {
            let leader = self.leader.clone();
            return out.push(RaftOutput::ReadFailed { ctx, leader });
        };
        let index = commit.max(l.first_index);
        // Only a round sent after the read arrived proves leadership after it arrived.
        let round = l.reads.round + 1;
        l.reads.pending.push(PendingRead { ctx, index, round });
        self.broadcast_round(out);
    }

    /// Confirms what a majority has echoed and answers the reads that are now ready.
    pub(super) fn advance_reads(&mut self, out: &mut Vec<RaftOutput>) {
        let (commit, id) = (self.commit, self.cfg.id.clone());
        let RoleState::Leader(l) = &mut self.role else { return };
        let reads = &mut l.reads;
        let round = self.configs.current().quorum_value(|v| {
            if v == id {
                reads.round
            } else {
                reads.acked.get(v).copied().unwrap_or(0)
            }
        });
        reads.confirm(round);
        let confirmed = reads.confirmed_round();
        reads.pending.retain(|r| {
            let ready = r.round <= confirmed && commit >= r.index;
            if ready {
                out.push(RaftOutput::ReadReady { ctx: r.ctx, index: r.index });
            }
            !ready
        });
    }

    /// Leadership is lost: every waiting read fails.
    pub(super) fn fail_reads(&mut self, leader: Option<String>, out: &mut Vec<RaftOutput>) {
        let Some(l) = self.leadership() else { return };
        for r in l.reads.pending.drain(..) {
            out.push(RaftOutput::ReadFailed { ctx: r.ctx, leader: leader.clone() });
        }
    }

    /// Whether this replica may serve a read from its own state at `now` without a round:
    /// it leads, its term's no-op has committed, and its last confirmed round was sent
    /// less than `election_timeout − max_clock_drift` ago.
    pub fn lease_valid(&self, now: Time) -> bool {
        let Some(l) = self.leadership_ref() else { return false };
        if self.commit < l.first_index {
            return false;
        }
        if self.cfg.unsafe_skip_lease_check {
            return true;
        }
        let lease = self.cfg.election_timeout - self.cfg.max_clock_drift;
        l.reads.confirmed.is_some_and(|(_, sent)| now < sent + lease)
    }

    /// The index a lease read must be served at (once applied), if the lease holds.
    pub fn lease_read_index(&self, now: Time) -> Option<Index> {
        self.lease_valid(now).then_some(self.commit)
    }
}
