//! Log replication: the leader's per-follower progress, AppendEntries, and commit.
//!
//! Owns `Progress` (next and match index per follower, and whether the leader is probing for
//! the match point, streaming a bounded pipeline of batches, or waiting on a snapshot), the
//! follower's handling of AppendEntries (consistency check, conflict hint, merge, ack once
//! durable), log repair from the hint, heartbeats, and the commit rule: an index commits
//! once a majority of voters hold it and it is from the leader's current term (§5.4.2; the
//! leader counts itself only for what its own disk holds). Never decides elections or reads;
//! it only feeds read acks to `read`.

use std::collections::{BTreeMap, VecDeque};

use super::log::well_formed;
use super::message::{AppendResult, Message};
use super::read::ReadState;
use super::replica::RaftOutput;
use super::replica::{Leadership, ProposeError, Replica, RoleState};
use super::Entry;
use crate::fsm::Command;
use crate::ids::{Index, Term};
use crate::time::Time;

/// Entries per AppendEntries at most.
pub const MAX_BATCH: usize = 64;

/// What the leader knows of one follower's log.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The next index to send.
    pub next: Index,
    /// The follower durably holds the leader's log through this index.
    pub matched: Index,
    mode: Mode,
    /// `matched` at the previous heartbeat, to notice a pipeline whose batches were lost.
    matched_at_beat: Index,
}

#[derive(Debug, Clone)]
enum Mode {
    /// Looking for the match point: one AppendEntries at a time, resent each heartbeat.
    Probe { sent: bool },
    /// Streaming: batches sent optimistically, the last index of each one unacknowledged.
    Replicate { inflight: VecDeque<Index> },
    /// An InstallSnapshot of `index` is on its way.
    Snapshot { index: Index, sent_at: Time },
}

impl Progress {
    fn new(next: Index) -> Progress {
        Progress {
            next,
            matched: Index::ZERO,
            mode: Mode::Probe { sent: false },
            matched_at_beat: Index::ZERO,
        }
    }

    fn probe_from(&mut self, next: Index) {
        self.next = next;
        self.mode = Mode::Probe { sent: false };
    }

    /// The follower holds the leader's log through `index`.
    fn matched(&mut self, index: Index) {
        self.matched = self.matched.max(index);
        match &mut self.mode {
            Mode::Probe { .. } if index.next() >= self.next => {
                self.next = index.next();
                self.mode = Mode::Replicate { inflight: VecDeque::new() };
            }
            Mode::Probe { .. } => {}
            Mode::Replicate { inflight } => {
                while inflight.front().is_some_and(|i| *i <= index) {
                    inflight.pop_front();
                }
                self.next = self.next.max(index.next());
            }
            Mode::Snapshot { index: snap, .. } if index >= *snap => {
                self.next = index.next();
                self.mode = Mode::Replicate { inflight: VecDeque::new() };
            }
            Mode::Snapshot { .. } => {}
        }
    }

    /// Whether a rejection of `(prev_index, _)` is news rather than an answer to something
    /// already superseded.
    fn takes_rejection(&self, prev_index: Index) -> bool {
        match self.mode {
            Mode::Probe { .. } => prev_index.next() == self.next,
            Mode::Replicate { .. } => prev_index > self.matched,
            Mode::Snapshot { .. } => false,
        }
    }

    pub(super) fn snapshot_sent(&mut self, index: Index, at: Time) {
        self.mode = Mode::Snapshot { index, sent_at: at };
    }
}

impl Replica {
    /// Takes office: a progress per member, this term's no-op appended and sent.
    pub(super) fn become_leader(&mut self, out: &mut Vec<RaftOutput>) {
        let now = self.now;
        let first_index = self.log.last_index().next();
        self.leader = Some(self.cfg.id.clone());
        self.role = RoleState::Leader(Box::new(Leadership {
            progress: BTreeMap::new(),
            first_index,
            heartbeat_at: now + self.cfg.heartbeat_interval,
            check_quorum_at: now + self.cfg.election_timeout,
            heard: Default::default(),
            reads: ReadState::new(now),
        }));
        self.sync_progress();
        self.leader_append(Command::Noop, out);
        self.replicate_all(out);
        self.maybe_commit(out);
    }

    /// Keeps one progress per member but this replica, after a configuration change.
    pub(super) fn sync_progress(&mut self) {
        let next = self.log.last_index().next();
        let members: Vec<String> =
            self.configs.current().members().filter(|m| **m != self.cfg.id).cloned().collect();
        let Some(l) = self.leadership() else { return };
        l.progress.retain(|k, _| members.contains(k));
        for m in members {
            l.progress.entry(m).or_insert_with(|| Progress::new(next));
        }
    }

    /// Appends a command to a leader's log and persists it; returns its index.
    pub(super) fn leader_append(&mut self, command: Command, out: &mut Vec<RaftOutput>) -> Index {
        let index = self.log.last_index().next();
        self.append_local(&[Entry { term: self.term, index, command }], true, out);
        index
    }

    pub(super) fn propose(
        &mut self,
        command: Command,
        out: &mut Vec<RaftOutput>,
    ) -> Result<Index, ProposeError> {
        if !matches!(self.role, RoleState::Leader(_)) {
            return Err(ProposeError::NotLeader { leader: self.leader.clone() });
        }
        if matches!(command, Command::Config { .. }) {
            return Err(ProposeError::ConfigCommand);
        }
        Ok(self.leader_append(command, out))
    }

    pub(super) fn replicate_all(&mut self, out: &mut Vec<RaftOutput>) {
        let peers: Vec<String> =
            self.leadership_ref().map(|l| l.progress.keys().cloned().collect()).unwrap_or_default();
        for p in peers {
            self.replicate_to(&p, out);
        }
    }

    /// Sends `peer` what its progress allows: one probe, or batches up to the pipeline
    /// bound, or a snapshot if its next entry was compacted away.
    pub(super) fn replicate_to(&mut self, peer: &str, out: &mut Vec<RaftOutput>) {
        loop {
            let Some(l) = self.leadership_ref() else { return };
            let Some(p) = l.progress.get(peer) else { return };
            let read_ctx = l.reads.round();
            let probing = match &p.mode {
                Mode::Snapshot { .. } | Mode::Probe { sent: true } => return,
                Mode::Replicate { inflight } if inflight.len() >= self.cfg.max_inflight => return,
                Mode::Probe { sent: false } => true,
                Mode::Replicate { .. } => false,
            };
            let next = p.next;
            if next <= self.log.offset() {
                return self.send_snapshot(peer, out);
            }
            let entries = self.log.entries_from(next, MAX_BATCH);
            if entries.is_empty() && !probing {
                return;
            }
            let last = entries.last().map(|e| e.index);
            let prev_index = Index(next.0 - 1);
            let prev_term = self.log.term_at(prev_index).expect("next - 1 is at or above the offset");
            let msg = Message::AppendEntries {
                term: self.term,
                leader: self.cfg.id.clone(),
                prev_index,
                prev_term,
                entries,
                commit: self.commit,
                read_ctx,
            };
            self.send(peer.to_string(), msg, out);
            let p = self.leadership().and_then(|l| l.progress.get_mut(peer)).expect("checked above");
            match (&mut p.mode, last) {
                (Mode::Replicate { inflight }, Some(last)) => {
                    inflight.push_back(last);
                    p.next = last.next();
                }
                (Mode::Probe { sent }, _) => {
                    *sent = true;
                    return;
                }
                _ => return,
            }
        }
    }

    /// An empty AppendEntries at the follower's match point: it resets the follower's
    /// election timer, carries the commit index and the read round, and needs no repair.
    fn send_heartbeat(&mut self, peer: &str, out: &mut Vec<RaftOutput>) {
        let Some(l) = self.leadership_ref() else { return };
        let Some(p) = l.progress.get(peer) else { return };
        let prev_index = p.matched.max(self.log.offset());
        let prev_term =
            self.log.term_at(prev_index).expect("at or above the offset and at most the last index");
        let msg = Message::AppendEntries {
            term: self.term,
            leader: self.cfg.id.clone(),
            prev_index,
            prev_term,
            entries: Vec::new(),
            commit: self.commit.min(prev_index),
            read_ctx: l.reads.round(),
        };
        self.send(peer.to_string(), msg, out);
    }

    /// The heartbeat timer: repair stalled followers, then a new heartbeat round.
    pub(super) fn heartbeat(&mut self, out: &mut Vec<RaftOutput>) {
        let (now, t) = (self.now, self.cfg.election_timeout);
        let next_beat = now + self.cfg.heartbeat_interval;
        let Some(l) = self.leadership() else { return };
        l.heartbeat_at = next_beat;
        for p in l.progress.values_mut() {
            let stalled = p.matched == p.matched_at_beat && p.next > p.matched.next();
            p.matched_at_beat = p.matched;
            match p.mode {
                // Batches of a whole heartbeat interval went unanswered: they or their acks
                // were lost; probe again from what is known to match.
                Mode::Replicate { .. } if stalled => p.probe_from(p.matched.next()),
                // The snapshot or its answer was lost: try again.
                Mode::Snapshot { sent_at, .. } if now.since(sent_at) >= t => p.probe_from(p.next),
                _ => {}
            }
        }
        self.broadcast_round(out);
        self.promote_caught_up(out);
    }

    /// Starts a heartbeat round: every follower gets a probe, or a heartbeat.
    pub(super) fn broadcast_round(&mut self, out: &mut Vec<RaftOutput>) {
        let now = self.now;
        let Some(l) = self.leadership() else { return };
        l.reads.start_round(now);
        let mut probes = Vec::new();
        for (peer, p) in &mut l.progress {
            if let Mode::Probe { sent } = &mut p.mode {
                *sent = false;
                probes.push((peer.clone(), true));
            } else {
                probes.push((peer.clone(), false));
            }
        }
        for (peer, probe) in probes {
            if probe {
                self.replicate_to(&peer, out);
            } else {
                self.send_heartbeat(&peer, out);
            }
        }
        self.advance_reads(out);
    }

    /// A follower's AppendEntries handling (the leader of the current term sent it).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_append(
        &mut self,
        from: String,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        read_ctx: u64,
        out: &mut Vec<RaftOutput>,
    ) {
        let term = self.term;
        if !well_formed(prev_index, prev_term, &entries, term) {
            return;
        }
        let last_new = Index(prev_index.0 + entries.len() as u64);
        // Everything at or below the commit index (the offset included) is committed here,
        // hence matches the leader: check from there, with the term the leader gives it, so a
        // broken leader can neither overwrite committed entries nor follow one with a lower
        // term.
        let commit_point = self.commit;
        let (prev_index, prev_term, entries) = if prev_index < commit_point {
            let skip = entries.iter().take_while(|e| e.index <= commit_point).count();
            if skip == entries.len() {
                let index = last_new.max(prev_index);
                return self.ack_append(from, read_ctx, index, out);
            }
            (commit_point, entries[skip - 1].term, entries[skip..].to_vec())
        } else {
            (prev_index, prev_term, entries)
        };
        if self.log.term_at(prev_index) != Some(prev_term) {
            return self.reject_append(from, read_ctx, prev_index, prev_term, out);
        }
        self.append_local(&entries, false, out);
        self.commit_to(commit.min(last_new), out);
        self.ack_append(from, read_ctx, last_new, out);
    }

    fn ack_append(&mut self, to: String, read_ctx: u64, index: Index, out: &mut Vec<RaftOutput>) {
        let msg = Message::AppendResp { term: self.term, read_ctx, result: AppendResult::Matched { index } };
        self.send_when_durable(to, msg, out);
    }

    /// No entry `(prev_index, prev_term)` here: answer with the highest index at which the
    /// logs could still match, skipping every entry whose term is above `prev_term`.
    fn reject_append(
        &mut self,
        to: String,
        read_ctx: u64,
        prev_index: Index,
        prev_term: Term,
        out: &mut Vec<RaftOutput>,
    ) {
        let upto = self.log.last_index().min(Index(prev_index.0.saturating_sub(1)));
        let hint_index = self.log.last_with_term_at_most(upto, prev_term).unwrap_or(self.log.offset());
        let hint_term = self.log.term_at(hint_index).expect("the hint is held or the offset");
        let result = AppendResult::Rejected { prev_index, hint_index, hint_term };
        self.send(to, Message::AppendResp { term: self.term, read_ctx, result }, out);
    }

    /// A leader's handling of a follower's answer (AppendEntries or InstallSnapshot).
    pub(super) fn on_append_resp(
        &mut self,
        from: String,
        read_ctx: u64,
        result: AppendResult,
        out: &mut Vec<RaftOutput>,
    ) {
        let last = self.log.last_index();
        // Where the follower's log could match ours, from its hint (log repair, §5.3).
        let repair_from = match &result {
            AppendResult::Rejected { prev_index, hint_index, hint_term } => {
                let upto = (*hint_index).min(Index(prev_index.0.saturating_sub(1)));
                self.log.last_with_term_at_most(upto, *hint_term).map_or(self.log.offset(), |j| j.next())
            }
            AppendResult::Matched { .. } => Index::ZERO,
        };
        let Some(l) = self.leadership() else { return };
        if !l.progress.contains_key(&from) {
            return;
        }
        l.heard.insert(from.clone());
        l.reads.ack(&from, read_ctx);
        let p = l.progress.get_mut(&from).expect("checked above");
        match result {
            AppendResult::Matched { index } if index <= last => p.matched(index),
            AppendResult::Matched { .. } => {}
            AppendResult::Rejected { prev_index, .. } if p.takes_rejection(prev_index) => {
                let next = repair_from.max(p.matched.next());
                // A rejection that moves nothing (a follower that lost entries it had
                // acknowledged, or a duplicate) waits for the heartbeat's resend: answering
                // every copy at once multiplies traffic on a duplicating network.
                if next != p.next || !matches!(p.mode, Mode::Probe { .. }) {
                    p.probe_from(next);
                }
            }
            AppendResult::Rejected { .. } => {}
        }
        self.maybe_commit(out);
        self.advance_reads(out);
        self.promote_caught_up(out);
        self.replicate_to(&from, out);
    }

    /// Commits the highest index a majority of voters holds, if it is from this term.
    pub(super) fn maybe_commit(&mut self, out: &mut Vec<RaftOutput>) {
        let Some(l) = self.leadership_ref() else { return };
        let (id, durable) = (&self.cfg.id, self.durability.durable_index());
        let reached = self.configs.current().quorum_value(|v| {
            if v == id {
                durable
            } else {
                l.progress.get(v).map_or(Index::ZERO, |p| p.matched)
            }
        });
        if reached > self.commit && self.log.term_at(reached) == Some(self.term) {
            // When nothing follows the new commit point, followers holding it learn it now
            // rather than at the next heartbeat, so they apply, and serve reads, without
            // that delay. Otherwise the entries still to come carry it.
            let holders: Vec<String> = if self.log.last_index() == reached {
                l.progress.iter().filter(|(_, p)| p.matched >= reached).map(|(k, _)| k.clone()).collect()
            } else {
                Vec::new()
            };
            self.commit_to(reached, out);
            for peer in holders {
                self.send_heartbeat(&peer, out);
            }
        }
    }
}
