//! `Replica`: one Raft participant as a pure state machine, driven like `Node`.
//!
//! Owns the replica's public surface (config, inputs, outputs, errors, the debug view), its
//! hard state (term and vote), the commit point, and the dispatch of each input to the part
//! of the algorithm that handles it: `election`, `replication`, `read`, `snapshot` and
//! `membership` add their own `impl Replica` blocks. Also owns the rules that cut across
//! them: time never goes backwards, a message whose term is stale is answered or dropped
//! here, anything that depends on durable state waits in `durability`, and the host gets one
//! earliest wakeup. Never does IO, reads a clock or draws OS randomness, and never applies
//! entries: it hands committed entries and installed snapshots to the caller.

use std::collections::{BTreeMap, BTreeSet};

use super::durability::{Durability, Held};
use super::election::{ElectionClock, Tally};
use super::log::Log;
use super::membership::{ConfigHistory, Membership, MembershipChange};
use super::message::Message;
use super::read::ReadState;
use super::replication::Progress;
use super::snapshot::{Image, StoredSnapshot};
use super::Entry;
use super::SnapshotData;
use crate::fsm::Command;
use crate::ids::{Index, PersistToken, Term};
use crate::io::{PersistOp, Recovered};
use crate::rng::{Rng, Stream};
use crate::time::{Duration, Time};

/// How one replica is set up. Every replica of a cluster must agree on the timing fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub id: String,
    /// The initial voters, this replica included. A server joining a running cluster lists
    /// the current voters without itself: it then never campaigns before a configuration
    /// entry makes it a voter.
    pub peers: Vec<String>,
    /// The minimum election timeout T: followers wait a random time in [T, 2T) without
    /// hearing from a leader before they campaign.
    pub election_timeout: Duration,
    pub heartbeat_interval: Duration,
    /// How far two replicas' clocks may drift apart over one election timeout; the lease
    /// is shortened by this much.
    pub max_clock_drift: Duration,
    /// Entries kept in memory below a snapshot, so slightly lagging followers still get
    /// entries instead of a whole snapshot.
    pub snapshot_trailing: u64,
    /// AppendEntries with entries a leader keeps unacknowledged per follower. Small on
    /// purpose: while two are in flight, new entries gather into the next one, so under load
    /// each message (and each follower persist and ack) carries a batch; at 8, messages of
    /// one entry each cost a quarter of write throughput (cluster benchmark).
    pub max_inflight: usize,
    /// Exists only to prove the simulator's linearizability checker can catch a broken
    /// lease: when set, a leader claims its lease holds without checking its age. Never set
    /// it anywhere else.
    pub unsafe_skip_lease_check: bool,
}

impl ReplicaConfig {
    /// A config with the default timing (T = 1s, heartbeats every 150ms, 100ms drift) and
    /// two AppendEntries in flight per follower.
    pub fn new(id: impl Into<String>, peers: Vec<String>) -> ReplicaConfig {
        ReplicaConfig {
            id: id.into(),
            peers,
            election_timeout: Duration::from_secs(1),
            heartbeat_interval: Duration::from_millis(150),
            max_clock_drift: Duration::from_millis(100),
            snapshot_trailing: 10_240,
            max_inflight: 2,
            unsafe_skip_lease_check: false,
        }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id.is_empty() {
            return Err(ConfigError::EmptyId);
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.election_timeout {
            return Err(ConfigError::HeartbeatNotBelowElection);
        }
        if self.max_clock_drift >= self.election_timeout {
            return Err(ConfigError::DriftNotBelowElection);
        }
        if self.max_inflight == 0 {
            return Err(ConfigError::NoInflight);
        }
        Ok(())
    }
}

/// Why a `ReplicaConfig` cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("the replica id is empty")]
    EmptyId,
    #[error("the heartbeat interval must be positive and below the election timeout")]
    HeartbeatNotBelowElection,
    #[error("the clock drift bound must be below the election timeout (the lease would be empty)")]
    DriftNotBelowElection,
    #[error("max_inflight must be at least 1")]
    NoInflight,
}

/// Why `Replica::recover` refused what the host read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecoverError {
    #[error("the snapshot does not decode: {0}")]
    Snapshot(String),
    #[error("log entry {found} follows {expected_after}: the log has a gap or goes back in term")]
    Log { expected_after: u64, found: u64 },
}

/// Something that happened to a replica.
#[derive(Debug)]
pub enum RaftInput {
    /// Time passed; a timer may be due. Extra ticks are harmless.
    Tick,
    Message {
        from: String,
        msg: Message,
    },
    /// The persist with this token, and every earlier one, is durable.
    Persisted {
        token: PersistToken,
    },
    /// Append a command, answered by `ProposeResult` (only a leader accepts).
    Propose {
        command: Command,
        ctx: u64,
    },
    /// Add or remove one server, answered by `ProposeResult` with the configuration
    /// entry's index.
    ChangeMembership {
        change: MembershipChange,
        ctx: u64,
    },
    /// A linearizable read: answered by `ReadReady` (serve once applied reaches its index)
    /// or `ReadFailed`.
    ReadIndex {
        ctx: u64,
    },
    /// The caller's state-machine bytes as of `index` (applied, hence committed), possibly
    /// still to be encoded: take a snapshot there and compact the log.
    Snapshot {
        index: Index,
        data: SnapshotData,
    },
    /// Start a new cluster with these voters. Ignored unless the replica has never held any
    /// state, so a restarted server never bootstraps twice.
    Bootstrap {
        voters: Vec<String>,
    },
}

/// What the caller must do, in order.
#[derive(Debug, PartialEq)]
pub enum RaftOutput {
    Send {
        to: String,
        msg: Message,
    },
    /// Make this durable, then answer `Persisted { token }`, in token order. A `Snapshot` op
    /// keeps the log entries above its index only if the entry at its index has its term;
    /// otherwise the whole log is replaced (Raft's InstallSnapshot rule).
    Persist {
        token: PersistToken,
        op: PersistOp,
    },
    /// Wake the replica with `Tick` at `at`; replaces any earlier request.
    SetTimer {
        at: Time,
    },
    /// Newly committed entries, in order: apply them.
    Committed {
        entries: Vec<Entry>,
    },
    /// A leader sent a snapshot: replace the state machine with `data` (state as of `index`).
    InstallSnapshot {
        index: Index,
        term: Term,
        data: Vec<u8>,
    },
    /// The proposal is in the leader's log at `index` (not yet committed). It committed iff
    /// the entry later committed at that index has the term this leader was in.
    ProposeResult {
        ctx: u64,
        result: Result<Index, ProposeError>,
    },
    /// The read may be served once the state machine has applied `index`.
    ReadReady {
        ctx: u64,
        index: Index,
    },
    ReadFailed {
        ctx: u64,
        leader: Option<String>,
    },
    /// The replica now knows `leader` (or none) for `term`.
    LeaderChanged {
        term: Term,
        leader: Option<String>,
    },
}

/// Why a proposal or membership change was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    #[error("not the leader (leader: {leader:?})")]
    NotLeader { leader: Option<String> },
    /// The previous change is uncommitted, or the leader has not yet committed an entry of
    /// its own term: retry later.
    #[error("a membership change must wait")]
    ChangeInProgress,
    #[error("the server is already a member")]
    AlreadyMember,
    #[error("the server is not a member")]
    NotMember,
    #[error("the change would leave no voters")]
    WouldLeaveNoVoters,
    #[error("configuration entries are proposed through ChangeMembership")]
    ConfigCommand,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Follower,
    PreCandidate,
    Candidate,
    Leader,
}

/// A read-only view for checkers and logs; it never feeds behaviour.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DebugState {
    pub role: Role,
    pub term: Term,
    pub leader: Option<String>,
    pub commit: Index,
    pub last_index: Index,
    pub last_term: Term,
    pub durable_index: Index,
    pub snapshot_index: Index,
    pub voters: Vec<String>,
    pub non_voters: Vec<String>,
}

/// What only a leader keeps.
#[derive(Debug)]
pub(super) struct Leadership {
    pub(super) progress: BTreeMap<String, Progress>,
    /// The index of this term's no-op: nothing is served until it commits.
    pub(super) first_index: Index,
    pub(super) heartbeat_at: Time,
    pub(super) check_quorum_at: Time,
    /// Voters heard from (at this term) since the last CheckQuorum.
    pub(super) heard: BTreeSet<String>,
    pub(super) reads: ReadState,
}

#[derive(Debug)]
pub(super) enum RoleState {
    Follower,
    PreCandidate(Tally),
    Candidate(Tally),
    Leader(Box<Leadership>),
}

/// One Raft participant.
#[derive(Debug)]
pub struct Replica {
    pub(super) cfg: ReplicaConfig,
    pub(super) rng: Rng,
    pub(super) now: Time,
    booted: bool,
    pub(super) term: Term,
    pub(super) voted_for: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) role: RoleState,
    pub(super) log: Log,
    pub(super) commit: Index,
    pub(super) configs: ConfigHistory,
    pub(super) durability: Durability,
    pub(super) snapshot: Option<StoredSnapshot>,
    pub(super) election: ElectionClock,
    announced: Option<(Term, Option<String>)>,
    timer: Option<Time>,
}

impl Replica {
    /// A replica with an empty log. Panics on an invalid config (a programming error).
    pub fn new(cfg: ReplicaConfig, seed: [u8; 32]) -> Replica {
        if let Err(e) = cfg.validate() {
            panic!("invalid replica config: {e}");
        }
        let base = Membership::of_voters(cfg.peers.iter().cloned());
        Replica {
            rng: Rng::new(seed, Stream::Raft),
            now: Time::ZERO,
            booted: false,
            term: Term(0),
            voted_for: None,
            leader: None,
            role: RoleState::Follower,
            log: Log::starting_at(Index::ZERO, Term(0)),
            commit: Index::ZERO,
            configs: ConfigHistory::new(Index::ZERO, base),
            durability: Durability::new(Index::ZERO),
            snapshot: None,
            election: ElectionClock::default(),
            announced: None,
            timer: None,
            cfg,
        }
    }

    /// A replica resuming from what its host read back. The caller restores its state
    /// machine from `snapshot_state()`; everything after it arrives again as `Committed`.
    pub fn recover(cfg: ReplicaConfig, seed: [u8; 32], disk: Recovered) -> Result<Replica, RecoverError> {
        let mut r = Replica::new(cfg, seed);
        if let Some((index, term, data)) = disk.snapshot {
            let image = Image::decode(&data).map_err(RecoverError::Snapshot)?;
            r.log = Log::starting_at(index, term);
            r.commit = index;
            r.configs.reset(index, image.membership);
            r.snapshot = Some(StoredSnapshot { index, term, image: data.into() });
        }
        let offset = r.log.offset();
        for e in disk.entries.into_iter().filter(|e| e.index > offset) {
            if e.index != r.log.last_index().next() || e.term < r.log.last_term() {
                return Err(RecoverError::Log { expected_after: r.log.last_index().0, found: e.index.0 });
            }
            r.configs.appended(e.index, &e.command);
            r.log.push(e);
        }
        r.durability = Durability::new(r.log.last_index());
        let (term, voted_for) = disk.hard_state.unwrap_or_default();
        // Entries are written after the hard state that allowed them, so the term on disk
        // is never below the last entry's; take the larger anyway rather than trust it.
        if term >= r.log.last_term() {
            (r.term, r.voted_for) = (term, voted_for);
        } else {
            r.term = r.log.last_term();
        }
        Ok(r)
    }

    /// Handles one input at local time `now`, appending what the caller must do to `out`.
    pub fn step(&mut self, now: Time, input: RaftInput, out: &mut Vec<RaftOutput>) {
        assert!(now >= self.now, "time went backwards: {now} after {}", self.now);
        self.now = now;
        if !self.booted {
            self.booted = true;
            self.boot(out);
        }
        match input {
            RaftInput::Tick => {}
            RaftInput::Message { from, msg } => self.on_message(from, msg, out),
            RaftInput::Persisted { token } => self.on_persisted(token, out),
            RaftInput::Propose { command, ctx } => {
                let result = self.propose(command, out);
                self.after_propose(ctx, result, out);
            }
            RaftInput::ChangeMembership { change, ctx } => {
                let result = self.change_membership(&change, out);
                self.after_propose(ctx, result, out);
            }
            RaftInput::ReadIndex { ctx } => self.read_index(ctx, out),
            RaftInput::Snapshot { index, data } => self.take_snapshot(index, data, out),
            RaftInput::Bootstrap { voters } => self.bootstrap(voters, out),
        }
        self.fire_timers(out);
        self.announce(out);
        self.request_wakeup(out);
    }

    pub fn debug_state(&self) -> DebugState {
        let m = self.configs.current();
        DebugState {
            role: self.role(),
            term: self.term,
            leader: self.leader.clone(),
            commit: self.commit,
            last_index: self.log.last_index(),
            last_term: self.log.last_term(),
            durable_index: self.durability.durable_index(),
            snapshot_index: self.snapshot.as_ref().map_or(Index::ZERO, |s| s.index),
            voters: m.voters.iter().cloned().collect(),
            non_voters: m.non_voters.iter().cloned().collect(),
        }
    }

    /// Leading, with an entry of its own term committed and everything committed applied
    /// (`applied` is the state machine's index): only then does its state reflect every
    /// write an earlier leader acknowledged.
    pub fn leader_caught_up(&self, applied: Index) -> bool {
        self.role() == Role::Leader && self.log_term(self.commit) == Some(self.term) && applied >= self.commit
    }

    /// The leader this replica follows (itself when leading), if it knows one.
    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    /// When this follower last heard from its leader; `None` without a leader. Stale reads
    /// report the age as `X-Consul-LastContact`.
    pub fn leader_contact(&self) -> Option<Time> {
        self.leader.as_ref()?;
        Some(self.election.quiet_until - self.cfg.election_timeout)
    }

    /// On a leader, the highest index each other member is known to hold.
    pub fn matched(&self, peer: &str) -> Option<Index> {
        self.leadership_ref()?.progress.get(peer).map(|p| p.matched)
    }

    /// The configuration in force (the latest appended one).
    pub fn membership(&self) -> &Membership {
        self.configs.current()
    }

    /// The term of the entry at `index` if the in-memory log holds it: a view for checkers.
    pub fn log_term(&self, index: Index) -> Option<Term> {
        self.log.term_at(index)
    }

    pub fn role(&self) -> Role {
        match self.role {
            RoleState::Follower => Role::Follower,
            RoleState::PreCandidate(_) => Role::PreCandidate,
            RoleState::Candidate(_) => Role::Candidate,
            RoleState::Leader(_) => Role::Leader,
        }
    }

    pub(super) fn leadership(&mut self) -> Option<&mut Leadership> {
        match &mut self.role {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    pub(super) fn leadership_ref(&self) -> Option<&Leadership> {
        match &self.role {
            RoleState::Leader(l) => Some(l),
            _ => None,
        }
    }

    /// The first step: no votes for a while (this replica may have acknowledged a leader's
    /// lease just before it restarted), and a lone voter campaigns at once.
    fn boot(&mut self, out: &mut Vec<RaftOutput>) {
        self.election.quiet_until = self.now + self.cfg.election_timeout;
        self.reset_election_deadline();
        let m = self.configs.current();
        if m.voters.len() == 1 && m.is_voter(&self.cfg.id) {
            self.start_prevote(out);
        }
    }

    fn on_message(&mut self, from: String, msg: Message, out: &mut Vec<RaftOutput>) {
        if from == self.cfg.id {
            return;
        }
        let term = msg.term();
        match msg {
            // Pre-votes never change anyone's term; they handle terms themselves.
            Message::PreVote { term, last_index, last_term } => {
                return self.on_prevote(from, term, last_index, last_term, out)
            }
            Message::PreVoteResp { term, granted } => return self.on_prevote_resp(from, term, granted, out),
            _ => {}
        }
        if term > self.term {
            if matches!(msg, Message::RequestVote { .. }) && self.quiet() {
                // A leader was heard from within the election timeout (or this replica
                // just started): ignore, so the leader's lease stays sound (thesis §4.2.3).
                return;
            }
            let leader = matches!(msg, Message::AppendEntries { .. } | Message::InstallSnapshot { .. })
                .then(|| from.clone());
            self.become_follower(term, leader, out);
        } else if term < self.term {
            return self.answer_stale(from, msg, out);
        }
        match msg {
            Message::RequestVote { last_index, last_term, .. } => {
                self.on_request_vote(from, last_index, last_term, out)
            }
            Message::VoteResp { granted, .. } => self.on_vote_resp(from, granted, out),
            Message::AppendEntries { leader, prev_index, prev_term, entries, commit, read_ctx, .. } => {
                if leader == from && self.accept_leader(&from, out) {
                    self.on_append(from, prev_index, prev_term, entries, commit, read_ctx, out);
                }
            }
            Message::AppendResp { read_ctx, result, .. } => self.on_append_resp(from, read_ctx, result, out),
            Message::InstallSnapshot { leader, index, term_of_index, data, read_ctx, .. } => {
                if leader == from && self.accept_leader(&from, out) {
                    self.on_install_snapshot(from, index, term_of_index, data, read_ctx, out);
                }
            }
            Message::InstallSnapshotResp { index, read_ctx, .. } => {
                self.on_append_resp(from, read_ctx, super::message::AppendResult::Matched { index }, out)
            }
            Message::PreVote { .. } | Message::PreVoteResp { .. } => unreachable!("handled above"),
        }
    }

    /// A message from an earlier term: tell a stale leader or candidate the current term so
    /// it steps down; drop stale answers.
    fn answer_stale(&mut self, from: String, msg: Message, out: &mut Vec<RaftOutput>) {
        let term = self.term;
        let reply = match msg {
            Message::AppendEntries { prev_index, read_ctx, .. } => Message::AppendResp {
                term,
                read_ctx,
                result: super::message::AppendResult::Rejected {
                    prev_index,
                    hint_index: Index::ZERO,
                    hint_term: Term(0),
                },
            },
            Message::InstallSnapshot { read_ctx, .. } => {
                Message::InstallSnapshotResp { term, index: Index::ZERO, read_ctx }
            }
            Message::RequestVote { .. } => Message::VoteResp { term, granted: false },
            _ => return,
        };
        self.send(from, reply, out);
    }

    /// A message from `from` claiming leadership of the current term: follow it. Returns
    /// false if this replica leads the term itself (two leaders in one term would be a
    /// broken peer; ignore it rather than fail).
    fn accept_leader(&mut self, from: &str, out: &mut Vec<RaftOutput>) -> bool {
        match &self.role {
            RoleState::Leader(_) => return false,
            RoleState::Follower if self.leader.as_deref() == Some(from) => {}
            RoleState::Follower if self.leader.is_some() => return false,
            _ => self.become_follower(self.term, Some(from.to_string()), out),
        }
        self.heard_from_leader();
        true
    }

    /// Follows `leader` (if known) in `term`, persisting the term if it is new.
    pub(super) fn become_follower(&mut self, term: Term, leader: Option<String>, out: &mut Vec<RaftOutput>) {
        if term > self.term {
            self.term = term;
            self.voted_for = None;
            self.persist_hard_state(out);
        }
        if matches!(self.role, RoleState::Leader(_)) {
            self.fail_reads(leader.clone(), out);
        }
        if !matches!(self.role, RoleState::Follower) {
            self.role = RoleState::Follower;
            self.reset_election_deadline();
        }
        self.leader = leader;
    }

    pub(super) fn persist_hard_state(&mut self, out: &mut Vec<RaftOutput>) {
        let op = PersistOp::HardState { term: self.term, voted_for: self.voted_for.clone() };
        self.persist(op, out);
    }

    /// Issues a persist and returns its token.
    pub(super) fn persist(&mut self, op: PersistOp, out: &mut Vec<RaftOutput>) -> PersistToken {
        let token = self.durability.issue();
        out.push(RaftOutput::Persist { token, op });
        token
    }

    pub(super) fn send(&self, to: String, msg: Message, out: &mut Vec<RaftOutput>) {
        out.push(RaftOutput::Send { to, msg });
    }

    /// Sends `msg` once every persist issued so far is durable: votes and acks promise state
    /// that must survive a crash.
    pub(super) fn send_when_durable(&mut self, to: String, msg: Message, out: &mut Vec<RaftOutput>) {
        if let Some(Held::Send { to, msg }) = self.durability.after_pending(Held::Send { to, msg }) {
            self.send(to, msg, out);
        }
    }

    fn on_persisted(&mut self, token: PersistToken, out: &mut Vec<RaftOutput>) {
        for held in self.durability.persisted(token) {
            match held {
                Held::Send { to, msg } => self.send(to, msg, out),
                Held::SelfVote { term } => self.on_self_vote(term, out),
            }
        }
        self.maybe_commit(out);
    }

    /// Appends entries to the local log (a leader's own or a follower's merge) and
    /// persists what changed; truncations revert configurations and durability.
    pub(super) fn append_local(&mut self, entries: &[Entry], leader_append: bool, out: &mut Vec<RaftOutput>) {
        let config_before = self.configs.latest_index();
        let written = if leader_append {
            for e in entries {
                self.log.push(e.clone());
            }
            entries.to_vec()
        } else {
            let before = self.log.last_index();
            let written = self.log.merge(entries);
            if let Some(first) = written.first().filter(|e| e.index <= before) {
                self.configs.truncated_from(first.index);
                self.durability.cap(Index(first.index.0 - 1));
            }
            written
        };
        let Some(last) = written.last().map(|e| e.index) else { return };
        for e in &written {
            self.configs.appended(e.index, &e.command);
        }
        let token = self.persist(PersistOp::AppendLog { entries: written }, out);
        self.durability.mark_log(token, last);
        if self.configs.latest_index() != config_before {
            self.sync_progress();
        }
    }

    /// Moves the commit point to `index` and hands the newly committed entries over.
    pub(super) fn commit_to(&mut self, index: Index, out: &mut Vec<RaftOutput>) {
        if index <= self.commit {
            return;
        }
        let entries = self.log.range(self.commit.next(), index);
        self.commit = index;
        out.push(RaftOutput::Committed { entries });
        self.after_commit(out);
    }

    fn after_commit(&mut self, out: &mut Vec<RaftOutput>) {
        if self.leadership_ref().is_some() {
            self.advance_reads(out);
            self.step_down_if_removed(out);
        }
    }

    fn after_propose(&mut self, ctx: u64, result: Result<Index, ProposeError>, out: &mut Vec<RaftOutput>) {
        let ok = result.is_ok();
        out.push(RaftOutput::ProposeResult { ctx, result });
        if ok {
            self.replicate_all(out);
            self.maybe_commit(out);
        }
    }

    fn fire_timers(&mut self, out: &mut Vec<RaftOutput>) {
        let now = self.now;
        if let Some(l) = self.leadership_ref() {
            let (beat, check) = (now >= l.heartbeat_at, now >= l.check_quorum_at);
            if beat {
                self.heartbeat(out);
            }
            if check {
                self.check_quorum(out);
            }
        } else if now >= self.election.deadline {
            if self.configs.current().is_voter(&self.cfg.id) {
                self.start_prevote(out);
            } else {
                self.reset_election_deadline();
            }
        }
    }

    fn announce(&mut self, out: &mut Vec<RaftOutput>) {
        let now = (self.term, self.leader.clone());
        if self.announced.as_ref() != Some(&now) {
            out.push(RaftOutput::LeaderChanged { term: now.0, leader: now.1.clone() });
            self.announced = Some(now);
        }
    }

    fn request_wakeup(&mut self, out: &mut Vec<RaftOutput>) {
        let at = match self.leadership_ref() {
            Some(l) => l.heartbeat_at.min(l.check_quorum_at),
            None => self.election.deadline,
        };
        if self.timer != Some(at) {
            self.timer = Some(at);
            out.push(RaftOutput::SetTimer { at });
        }
    }

    /// The state-machine bytes of the latest snapshot, to restore after `recover`.
    pub fn snapshot_state(&self) -> Option<(Index, Vec<u8>)> {
        let s = self.snapshot.as_ref()?;
        let image = Image::decode(s.image.bytes()).expect("stored snapshot images decode");
        Some((s.index, image.state))
    }
}

#[cfg(test)]
#[path = "replica_tests.rs"]
mod tests;
