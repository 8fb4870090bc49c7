//! Scenario tests for `Replica`, driven directly: a small in-memory network and disk under
//! a test-controlled clock. Each test cites the part of the Raft paper or thesis it checks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use super::*;
use crate::fsm::kv::KvSetMode;
use crate::raft::{disk, AppendResult};

const T: Duration = Duration::from_millis(100);
const STEP: Duration = Duration::from_millis(5);

fn cfg(id: &str, peers: &[&str]) -> ReplicaConfig {
    ReplicaConfig {
        election_timeout: T,
        heartbeat_interval: Duration::from_millis(20),
        max_clock_drift: Duration::from_millis(10),
        snapshot_trailing: 2,
        max_inflight: 4,
        ..ReplicaConfig::new(id, peers.iter().map(|s| s.to_string()).collect())
    }
}

fn seed(id: &str) -> [u8; 32] {
    let mut s = [0u8; 32];
    s[..id.len()].copy_from_slice(id.as_bytes());
    s
}

fn put(n: u64) -> Command {
    Command::KvSet { key: format!("k{n}"), value: n.to_le_bytes().to_vec(), flags: 0, mode: KvSetMode::Set }
}

/// A little world: replicas, a FIFO wire with cuttable links, a disk per replica whose
/// writes complete when the test (or `settle`) says so, and the checkers' ledgers.
struct Net {
    now: Time,
    nodes: BTreeMap<String, Replica>,
    wire: VecDeque<(String, String, Message)>,
    unsynced: BTreeMap<String, VecDeque<(PersistToken, PersistOp)>>,
    disks: BTreeMap<String, Recovered>,
    /// Replicas whose persists only complete through `sync`.
    manual: BTreeSet<String>,
    cut: BTreeSet<(String, String)>,
    /// Each replica's committed entries (index → term) over all its lives, and how far its
    /// current life has applied.
    committed: BTreeMap<String, BTreeMap<Index, Term>>,
    applied: BTreeMap<String, Index>,
    /// Outputs the tests look at (results, reads, installs).
    events: Vec<(String, RaftOutput)>,
    /// Election safety: who led each term.
    leaders: BTreeMap<Term, String>,
}

impl Net {
    fn new(ids: &[&str]) -> Net {
        let mut net = Net {
            now: Time::ZERO,
            nodes: BTreeMap::new(),
            wire: VecDeque::new(),
            unsynced: BTreeMap::new(),
            disks: BTreeMap::new(),
            manual: BTreeSet::new(),
            cut: BTreeSet::new(),
            committed: BTreeMap::new(),
            applied: BTreeMap::new(),
            events: Vec::new(),
            leaders: BTreeMap::new(),
        };
        for id in ids {
            net.nodes.insert(id.to_string(), Replica::new(cfg(id, ids), seed(id)));
        }
        net
    }

    fn step(&mut self, id: &str, input: RaftInput) {
        let mut out = Vec::new();
        let Some(r) = self.nodes.get_mut(id) else { return };
        r.step(self.now, input, &mut out);
        for o in out {
            match o {
                RaftOutput::Send { to, msg } => self.wire.push_back((id.to_string(), to, msg)),
                RaftOutput::Persist { token, op } => {
                    self.unsynced.entry(id.to_string()).or_default().push_back((token, op))
                }
                RaftOutput::SetTimer { .. } => {}
                RaftOutput::Committed { entries } => {
                    let c = self.committed.entry(id.to_string()).or_default();
                    let applied = self.applied.entry(id.to_string()).or_default();
                    for e in entries {
                        assert_eq!(e.index, applied.next(), "{id} committed out of order");
                        *applied = e.index;
                        let before = c.insert(e.index, e.term);
                        assert!(
                            before.is_none_or(|t| t == e.term),
                            "{id} committed two terms at {:?}",
                            e.index
                        );
                    }
                }
                RaftOutput::LeaderChanged { term, leader: Some(l) } if l == id => {
                    let prev = self.leaders.insert(term, l.clone());
                    assert!(
                        prev.as_ref().is_none_or(|p| *p == l),
                        "two leaders in {term:?}: {prev:?} and {l}"
                    );
                    self.events.push((id.to_string(), RaftOutput::LeaderChanged { term, leader: Some(l) }));
                }
                RaftOutput::InstallSnapshot { index, term, data } => {
                    self.applied.insert(id.to_string(), index);
                    self.events.push((id.to_string(), RaftOutput::InstallSnapshot { index, term, data }));
                }
                other => self.events.push((id.to_string(), other)),
            }
        }
    }

    /// Completes every write `id` has issued, in order.
    fn sync(&mut self, id: &str) {
        let pending = self.unsynced.remove(id).unwrap_or_default();
        let Some(last) = pending.back().map(|(t, _)| *t) else { return };
        let d = self.disks.entry(id.to_string()).or_default();
        for (_, op) in pending {
            disk::apply(d, op);
        }
        self.step(id, RaftInput::Persisted { token: last });
    }

    fn deliver_one(&mut self) -> bool {
        let Some((from, to, msg)) = self.wire.pop_front() else { return false };
        if !self.cut.contains(&(from.clone(), to.clone())) {
            self.step(&to, RaftInput::Message { from, msg });
        }
        true
    }

    /// Delivers the first message from `from` to `to`.
    fn deliver_first(&mut self, from: &str, to: &str) {
        let i = self.wire.iter().position(|(f, t, _)| f == from && t == to).expect("a message on that link");
        let (from, to, msg) = self.wire.remove(i).expect("position is valid");
        self.step(&to, RaftInput::Message { from, msg });
    }

    /// Starts every replica now, then lets only `favored` time out (two timeouts later):
    /// the others' election deadlines are pushed out of reach until they grant a vote.
    fn boot_favoring(&mut self, favored: &[&str]) {
        self.tick_all();
        for (id, r) in &mut self.nodes {
            if !favored.contains(&id.as_str()) {
                r.election.deadline = Time::MAX;
            }
        }
        self.now = self.now + 2 * T;
        for id in favored {
            self.step(id, RaftInput::Tick);
        }
    }

    /// Delivers messages one at a time (completing automatic writes when the wire is
    /// empty) until `done` holds.
    fn settle_until(&mut self, done: impl Fn(&Net) -> bool) {
        while !done(self) {
            if !self.deliver_one() {
                let auto: Vec<String> =
                    self.unsynced.keys().filter(|id| !self.manual.contains(*id)).cloned().collect();
                assert!(!auto.is_empty(), "nothing left to do, and the condition does not hold");
                for id in auto {
                    self.sync(&id);
                }
            }
        }
    }

    /// Delivers everything and completes automatic writes until nothing moves.
    fn settle(&mut self) {
        loop {
            while self.deliver_one() {}
            let auto: Vec<String> =
                self.unsynced.keys().filter(|id| !self.manual.contains(*id)).cloned().collect();
            if auto.is_empty() {
                return;
            }
            for id in auto {
                self.sync(&id);
            }
        }
    }

    fn tick_all(&mut self) {
        let ids: Vec<String> = self.nodes.keys().cloned().collect();
        for id in ids {
            self.step(&id, RaftInput::Tick);
        }
    }

    fn run_for(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = self.now + STEP;
            self.tick_all();
            self.settle();
        }
    }

    /// Runs until some replica leads, at most `limit`.
    fn run_until_leader(&mut self, limit: Duration) -> String {
        let end = self.now + limit;
        while self.now < end {
            if let Some(l) = self.leader() {
                return l;
            }
            self.run_for(STEP);
        }
        panic!("no leader within {limit:?}");
    }

    /// The leader of the highest term, if any replica leads.
    fn leader(&self) -> Option<String> {
        self.nodes
            .iter()
            .filter(|(_, r)| r.role() == Role::Leader)
            .max_by_key(|(_, r)| r.term)
            .map(|(id, _)| id.clone())
    }

    fn isolate(&mut self, id: &str) {
        for other in self.nodes.keys() {
            if other != id {
                self.cut.insert((id.to_string(), other.clone()));
                self.cut.insert((other.clone(), id.to_string()));
            }
        }
    }

    fn heal(&mut self) {
        self.cut.clear();
    }

    fn state(&self, id: &str) -> DebugState {
        self.nodes[id].debug_state()
    }

    fn propose(&mut self, id: &str, n: u64) {
        self.step(id, RaftInput::Propose { command: put(n), ctx: n });
    }

    /// The process dies: unwritten persists are lost, in-flight messages to it too; it comes
    /// back from what its disk holds.
    fn crash_and_recover(&mut self, id: &str) {
        self.unsynced.remove(id);
        self.wire.retain(|(_, to, _)| to != id);
        let d = self.disks.get(id).map(|d| Recovered {
            hard_state: d.hard_state.clone(),
            snapshot: d.snapshot.clone(),
            entries: d.entries.clone(),
        });
        let peers: Vec<String> = self.nodes[id].cfg.peers.clone();
        let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
        let r = Replica::recover(cfg(id, &peers), seed(id), d.unwrap_or_default()).expect("recovers");
        self.applied.insert(id.to_string(), r.debug_state().snapshot_index);
        self.nodes.insert(id.to_string(), r);
    }

    /// Log matching (§5.3): equal (index, term) in two logs means equal entries up to it;
    /// and every pair of replicas agrees on every index both committed.
    fn check(&self) {
        let logs: Vec<(&String, &Replica)> = self.nodes.iter().collect();
        for (i, (a, ra)) in logs.iter().enumerate() {
            for (b, rb) in &logs[i + 1..] {
                let lo = ra.log.offset().max(rb.log.offset()).next();
                let hi = ra.log.last_index().min(rb.log.last_index());
                let mut matched_at = None;
                for idx in (lo.0..=hi.0).rev().map(Index) {
                    if matched_at.is_none() && ra.log.term_at(idx) == rb.log.term_at(idx) {
                        matched_at = Some(idx);
                    }
                    if matched_at.is_some() {
                        assert_eq!(ra.log.entry(idx), rb.log.entry(idx), "{a} and {b} differ at {idx:?}");
                    }
                }
            }
        }
        for (a, ca) in &self.committed {
            for (b, cb) in &self.committed {
                for (idx, t) in ca {
                    if let Some(u) = cb.get(idx) {
                        assert_eq!(t, u, "{a} and {b} committed different entries at {idx:?}");
                    }
                }
            }
        }
    }

    fn results(&self, id: &str) -> Vec<&RaftOutput> {
        self.events.iter().filter(|(n, _)| n == id).map(|(_, o)| o).collect()
    }
}

fn sends(out: &[RaftOutput]) -> Vec<&Message> {
    out.iter()
        .filter_map(|o| match o {
            RaftOutput::Send { msg, .. } => Some(msg),
            _ => None,
        })
        .collect()
}

fn persist_tokens(out: &[RaftOutput]) -> Vec<PersistToken> {
    out.iter()
        .filter_map(|o| match o {
            RaftOutput::Persist { token, .. } => Some(*token),
            _ => None,
        })
        .collect()
}

#[test]
fn a_single_voter_elects_itself_at_once_and_commits_on_its_own_persist() {
    let mut r = Replica::new(cfg("a", &["a"]), seed("a"));
    let mut out = Vec::new();
    r.step(Time::ZERO, RaftInput::Tick, &mut out);
    assert_eq!(r.role(), Role::Candidate, "campaigns on its first step, no timeout");
    let hs = persist_tokens(&out);
    assert_eq!(hs.len(), 1, "the hard state, before anything counts");
    out.clear();
    r.step(Time::ZERO, RaftInput::Persisted { token: hs[0] }, &mut out);
    assert_eq!(r.role(), Role::Leader);
    let noop = persist_tokens(&out);
    assert!(
        !out.iter().any(|o| matches!(o, RaftOutput::Committed { .. })),
        "no commit before the no-op is durable"
    );
    out.clear();
    r.step(Time::ZERO, RaftInput::Propose { command: put(1), ctx: 7 }, &mut out);
    assert!(out.contains(&RaftOutput::ProposeResult { ctx: 7, result: Ok(Index(2)) }));
    let put_token = persist_tokens(&out);
    out.clear();
    r.step(Time::ZERO, RaftInput::Persisted { token: noop[0] }, &mut out);
    let committed: Vec<_> = out
        .iter()
        .filter_map(|o| match o {
            RaftOutput::Committed { entries } => Some(entries.iter().map(|e| e.index).collect::<Vec<_>>()),
            _ => None,
        })
        .collect();
    assert_eq!(committed, vec![vec![Index(1)]]);
    out.clear();
    r.step(Time::ZERO, RaftInput::Persisted { token: put_token[0] }, &mut out);
    assert!(matches!(&out[0], RaftOutput::Committed { entries } if entries[0].index == Index(2)));
    assert_eq!(r.debug_state().commit, Index(2));
}

#[test]
fn elects_one_leader_per_term_and_replicates() {
    // §5.2: one leader; §5.3: its entries reach every follower.
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    for n in 1..=5 {
        net.propose(&l, n);
    }
    net.run_for(T);
    for id in ["a", "b", "c"] {
        let s = net.state(id);
        assert_eq!((s.leader.as_deref(), s.commit), (Some(l.as_str()), Index(6)), "{id}");
    }
    net.check();
}

#[test]
fn a_split_vote_resolves_in_a_later_term() {
    // §5.2: with randomized timeouts, split votes are rare and resolve.
    let mut net = Net::new(&["a", "b", "c", "d"]);
    net.boot_favoring(&["a", "c"]);
    // Both pre-candidates win their pre-votes (nobody has heard from a leader)...
    net.settle_until(|n| {
        !n.wire.iter().any(|(_, _, m)| matches!(m, Message::PreVote { .. } | Message::PreVoteResp { .. }))
    });
    assert_eq!((net.state("a").role, net.state("c").role), (Role::Candidate, Role::Candidate));
    // ...b takes a's request first, d takes c's: two votes each, no majority of four.
    net.deliver_first("a", "b");
    net.deliver_first("c", "d");
    net.settle();
    assert_eq!(net.leader(), None, "a split vote elects nobody");
    assert_eq!(net.state("a").term, Term(1));
    let l = net.run_until_leader(6 * T);
    assert!(net.state(&l).term > Term(1));
    net.check();
}

#[test]
fn prevote_keeps_a_partitioned_node_from_disrupting_the_leader() {
    // Thesis §9.6.
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    let term = net.state(&l).term;
    let other = ["a", "b", "c"].into_iter().find(|id| *id != l).expect("three replicas");
    net.isolate(other);
    net.run_for(10 * T);
    assert_eq!(net.state(other).term, term, "pre-votes never raise the term");
    net.heal();
    net.run_for(2 * T);
    assert_eq!((net.leader(), net.state(&l).term), (Some(l.clone()), term), "the leader was not disturbed");
    assert_eq!(net.state(other).leader, Some(l));
}

#[test]
fn check_quorum_steps_a_cut_off_leader_down() {
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    net.isolate(&l);
    net.run_for(2 * T + STEP);
    assert_ne!(net.state(&l).role, Role::Leader, "a leader that hears from no majority steps down");
    let next = net.run_until_leader(4 * T);
    assert_ne!(next, l);
}

#[test]
fn votes_and_acks_wait_for_their_persist() {
    // Durability before dependent sends (architecture rule 3).
    let mut b = Replica::new(cfg("b", &["a", "b", "c"]), seed("b"));
    let mut out = Vec::new();
    b.step(Time::ZERO, RaftInput::Tick, &mut out);
    out.clear();
    let at = Time::ZERO + T;
    let ask = Message::RequestVote { term: Term(1), last_index: Index::ZERO, last_term: Term(0) };
    b.step(at, RaftInput::Message { from: "a".into(), msg: ask }, &mut out);
    assert!(sends(&out).is_empty(), "no vote before the hard state is durable: {out:?}");
    let token = *persist_tokens(&out).last().expect("the vote is persisted");
    out.clear();
    b.step(at, RaftInput::Persisted { token }, &mut out);
    assert_eq!(sends(&out), vec![&Message::VoteResp { term: Term(1), granted: true }]);
    out.clear();
    let append = Message::AppendEntries {
        term: Term(1),
        leader: "a".into(),
        prev_index: Index::ZERO,
        prev_term: Term(0),
        entries: vec![Entry { term: Term(1), index: Index(1), command: Command::Noop }],
        commit: Index::ZERO,
        read_ctx: 1,
    };
    b.step(at, RaftInput::Message { from: "a".into(), msg: append }, &mut out);
    assert!(sends(&out).is_empty(), "no ack before the entries are durable: {out:?}");
    let token = persist_tokens(&out)[0];
    out.clear();
    b.step(at, RaftInput::Persisted { token }, &mut out);
    let ack =
        Message::AppendResp { term: Term(1), read_ctx: 1, result: AppendResult::Matched { index: Index(1) } };
    assert_eq!(sends(&out), vec![&ack]);
}

#[test]
fn divergent_followers_are_repaired_quickly() {
    // §5.3 log repair, with the conflict hint skipping a whole term per round trip.
    let mut net = Net::new(&["a", "b", "c"]);
    let old = net.run_until_leader(4 * T);
    net.isolate(&old);
    for n in 1..=150 {
        net.propose(&old, n);
    }
    net.run_for(T);
    let new = net.run_until_leader(6 * T);
    for n in 200..=210 {
        net.propose(&new, n);
    }
    net.run_for(T);
    let before = net.wire.len();
    assert_eq!(before, 0);
    net.heal();
    let mut rejections = 0;
    let end = net.now + 3 * T;
    while net.now < end {
        net.now = net.now + STEP;
        net.tick_all();
        while let Some((from, to, msg)) = net.wire.pop_front() {
            if from == old && matches!(msg, Message::AppendResp { result: AppendResult::Rejected { .. }, .. })
            {
                rejections += 1;
            }
            net.step(&to, RaftInput::Message { from, msg });
        }
        net.settle();
    }
    let (s_old, s_new) = (net.state(&old), net.state(&new));
    assert_eq!((s_old.last_index, s_old.commit), (s_new.last_index, s_new.commit));
    assert!(rejections <= 3, "{rejections} rejections to repair 150 divergent entries");
    net.check();
}

#[test]
fn only_current_term_entries_commit_by_counting() {
    // §5.4.2, Figure 8: an entry of an earlier term stored on a majority is not committed
    // by counting replicas; it commits once an entry of the leader's own term does.
    let mut net = Net::new(&["a", "b", "c", "d", "e"]);
    net.boot_favoring(&["a"]);
    net.settle();
    assert_eq!(net.leader().as_deref(), Some("a"));
    // Term 1: index 2 reaches b and c, but their acks are lost: a commits nothing new.
    for (x, y) in [("b", "a"), ("c", "a"), ("a", "d"), ("a", "e")] {
        net.cut.insert((x.into(), y.into()));
    }
    net.propose("a", 1);
    net.settle();
    assert_eq!(
        (net.state("b").last_index, net.state("c").last_index, net.state("a").commit),
        (Index(2), Index(2), Index(1))
    );
    // a loses office (CheckQuorum) and wins term 2; nobody else campaigns.
    net.now = net.now + 2 * T;
    net.step("a", RaftInput::Tick);
    net.now = net.now + T + STEP;
    net.step("a", RaftInput::Tick);
    assert_eq!(net.state("a").role, Role::Follower);
    net.heal();
    net.settle();
    net.now = net.now + 3 * T;
    net.step("a", RaftInput::Tick);
    net.settle_until(|n| n.state("a").role == Role::Leader);
    assert_eq!(net.state("a").term, Term(2));
    // Index 2 (term 1) is now on a majority (a, b, c); the term-2 no-op (index 3) nowhere
    // else. Counting must not commit index 2.
    for from in ["b", "c"] {
        let ack = Message::AppendResp {
            term: Term(2),
            read_ctx: 1,
            result: AppendResult::Matched { index: Index(2) },
        };
        net.step("a", RaftInput::Message { from: from.into(), msg: ack });
    }
    assert_eq!(
        net.state("a").commit,
        Index(1),
        "an old-term entry on a majority is not committed by counting"
    );
    net.settle();
    assert_eq!(net.state("a").commit, Index(3), "the no-op commits, and index 2 with it");
    net.run_for(T);
    for id in ["b", "c", "d", "e"] {
        assert_eq!(net.state(id).commit, Index(3), "{id}");
    }
    net.check();
}

#[test]
fn read_index_needs_a_quorum_round_and_fails_off_the_leader() {
    // Thesis §6.4.
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    net.run_for(T);
    let f = ["a", "b", "c"].into_iter().find(|id| *id != l).expect("a follower");
    net.step(f, RaftInput::ReadIndex { ctx: 1 });
    assert!(net.results(f).contains(&&RaftOutput::ReadFailed { ctx: 1, leader: Some(l.clone()) }));
    net.step(&l, RaftInput::ReadIndex { ctx: 2 });
    assert!(
        !net.results(&l).iter().any(|o| matches!(o, RaftOutput::ReadReady { .. })),
        "not before the round"
    );
    net.settle();
    let commit = net.state(&l).commit;
    assert!(net.results(&l).contains(&&RaftOutput::ReadReady { ctx: 2, index: commit }));
    // A leader cut off cannot confirm a round; its reads fail when it steps down.
    net.isolate(&l);
    net.step(&l, RaftInput::ReadIndex { ctx: 3 });
    net.run_for(T / 2);
    assert!(!net.results(&l).iter().any(|o| matches!(o, RaftOutput::ReadReady { ctx: 3, .. })));
    net.run_for(2 * T);
    assert!(net.results(&l).contains(&&RaftOutput::ReadFailed { ctx: 3, leader: None }));
}

#[test]
fn a_cut_off_leaders_lease_expires_before_anyone_else_can_lead() {
    // Thesis §6.4.1: the lease is sound because voters that acknowledged the last round
    // refuse to elect anyone for an election timeout after receiving it.
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    net.run_for(T);
    assert!(net.nodes[&l].lease_valid(net.now));
    assert!(net.nodes[&l].lease_read_index(net.now).is_some());
    net.isolate(&l);
    let mut expired_at = None;
    for _ in 0..200 {
        net.run_for(STEP);
        if expired_at.is_none() && !net.nodes[&l].lease_valid(net.now) {
            expired_at = Some(net.now);
        }
        let others_lead = net.nodes.iter().any(|(id, r)| *id != l && r.role() == Role::Leader);
        if others_lead {
            assert!(expired_at.is_some(), "a new leader while the old lease still held");
            return;
        }
    }
    panic!("no new leader was elected");
}

#[test]
fn a_lagging_follower_catches_up_through_a_snapshot() {
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    let lag = ["a", "b", "c"].into_iter().find(|id| *id != l).expect("a follower").to_string();
    net.isolate(&lag);
    for n in 1..=20 {
        net.propose(&l, n);
    }
    net.run_for(T / 2);
    let commit = net.state(&l).commit;
    assert_eq!(commit, Index(21));
    net.step(&l, RaftInput::Snapshot { index: Index(18), data: b"state@18".to_vec().into() });
    assert_eq!(net.nodes[&l].log.offset(), Index(16), "two trailing entries kept below the snapshot");
    net.heal();
    net.run_for(T);
    assert!(net.results(&lag).contains(&&RaftOutput::InstallSnapshot {
        index: Index(18),
        term: net.state(&l).term,
        data: b"state@18".to_vec()
    }));
    assert_eq!(net.state(&lag).commit, Index(21));
    // The follower restarts from its own disk: the snapshot and what followed it.
    net.crash_and_recover(&lag);
    assert_eq!(net.nodes[&lag].snapshot_state(), Some((Index(18), b"state@18".to_vec())));
    assert_eq!(net.state(&lag).last_index, Index(21));
    net.run_for(T);
    net.check();
}

#[test]
fn membership_add_promote_and_remove() {
    // Thesis §4.1 (single-server changes, effective on append) and §4.2.2 (removing the
    // leader).
    let mut net = Net::new(&["a", "b", "c"]);
    net.nodes.insert("d".into(), Replica::new(cfg("d", &["a", "b", "c"]), seed("d")));
    let l = net.run_until_leader(4 * T);
    net.run_for(T);
    let add = |ctx| RaftInput::ChangeMembership { change: MembershipChange::AddNonVoter("d".into()), ctx };
    net.step(&l, add(1));
    let cfg_index = net.state(&l).last_index;
    assert!(net.results(&l).contains(&&RaftOutput::ProposeResult { ctx: 1, result: Ok(cfg_index) }));
    assert_eq!(net.state(&l).non_voters, vec!["d".to_string()], "effective on append, before commit");
    net.step(&l, RaftInput::ChangeMembership { change: MembershipChange::Remove("c".into()), ctx: 2 });
    assert!(net
        .results(&l)
        .contains(&&RaftOutput::ProposeResult { ctx: 2, result: Err(ProposeError::ChangeInProgress) }));
    net.run_for(T);
    for id in ["a", "b", "c", "d"] {
        assert_eq!(net.state(id).voters, vec!["a", "b", "c", "d"], "{id}: d was promoted once caught up");
    }
    net.step(&l, add(3));
    assert!(net
        .results(&l)
        .contains(&&RaftOutput::ProposeResult { ctx: 3, result: Err(ProposeError::AlreadyMember) }));
    // The leader removes itself: it leads until that commits, then steps down.
    net.step(&l, RaftInput::ChangeMembership { change: MembershipChange::Remove(l.clone()), ctx: 4 });
    assert_eq!(net.state(&l).role, Role::Leader);
    net.run_for(T / 2);
    assert_ne!(net.state(&l).role, Role::Leader);
    let next = net.run_until_leader(6 * T);
    assert_ne!(next, l);
    net.propose(&next, 99);
    net.run_for(T);
    let s = net.state(&next);
    assert_eq!(s.voters.len(), 3);
    assert!(!s.voters.contains(&l));
    for id in s.voters {
        assert_eq!(net.state(&id).commit, s.commit, "{id}");
    }
    net.check();
}

#[test]
fn proposals_off_the_leader_and_bad_messages_are_refused_quietly() {
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    let f = ["a", "b", "c"].into_iter().find(|id| *id != l).expect("a follower");
    net.propose(f, 1);
    assert!(net.results(f).contains(&&RaftOutput::ProposeResult {
        ctx: 1,
        result: Err(ProposeError::NotLeader { leader: Some(l.clone()) })
    }));
    net.step(
        &l,
        RaftInput::Propose { command: Command::Config { voters: vec![], non_voters: vec![] }, ctx: 2 },
    );
    assert!(net
        .results(&l)
        .contains(&&RaftOutput::ProposeResult { ctx: 2, result: Err(ProposeError::ConfigCommand) }));
    let term = net.state(&l).term;
    let junk = [
        Message::AppendResp {
            term,
            read_ctx: u64::MAX,
            result: AppendResult::Matched { index: Index(1_000) },
        },
        Message::AppendEntries {
            term,
            leader: "zz".into(),
            prev_index: Index(7),
            prev_term: term,
            entries: vec![],
            commit: Index(9),
            read_ctx: 0,
        },
        Message::InstallSnapshot {
            term: Term(term.0 + 5),
            leader: "zz".into(),
            index: Index(50),
            term_of_index: term,
            data: vec![1, 2, 3],
            read_ctx: 0,
        },
        Message::VoteResp { term, granted: true },
        Message::AppendResp {
            term,
            read_ctx: 0,
            result: AppendResult::Rejected {
                prev_index: Index(99),
                hint_index: Index(98),
                hint_term: Term(77),
            },
        },
    ];
    for msg in junk {
        net.step(&l, RaftInput::Message { from: "zz".into(), msg: msg.clone() });
        net.step(f, RaftInput::Message { from: "zz".into(), msg });
    }
    net.run_for(2 * T);
    net.check();
}

/// Messages no sound leader sends, found by the `raft_messages` fuzz body: each once either
/// panicked the follower or made it drop entries it had committed.
#[test]
fn a_broken_leader_can_neither_crash_a_follower_nor_rewrite_its_commits() {
    let mut r = Replica::new(cfg("a", &["a", "b", "c"]), seed("a"));
    let mut out = Vec::new();
    let e = |index, term| Entry { term: Term(term), index: Index(index), command: Command::Noop };
    let append = |term, leader: &str, prev: (u64, u64), entries, commit| RaftInput::Message {
        from: leader.to_string(),
        msg: Message::AppendEntries {
            term: Term(term),
            leader: leader.to_string(),
            prev_index: Index(prev.0),
            prev_term: Term(prev.1),
            entries,
            commit: Index(commit),
            read_ctx: 0,
        },
    };
    r.step(Time::ZERO, append(1, "b", (0, 0), vec![e(1, 1), e(2, 1), e(3, 1)], 3), &mut out);
    assert_eq!(r.debug_state().commit, Index(3));

    // c claims another entry 2 in a later term: the committed ones stay.
    r.step(Time::ZERO, append(2, "c", (1, 1), vec![e(2, 2)], 2), &mut out);
    let s = r.debug_state();
    assert_eq!((s.commit, s.last_index, r.log_term(Index(2))), (Index(3), Index(3), Some(Term(1))));

    // A snapshot whose last term is above its sender's would make the log go back in term.
    let image = Image { membership: Membership::of_voters(["a".to_string()]), state: vec![] };
    let msg = Message::InstallSnapshot {
        term: Term(2),
        leader: "c".into(),
        index: Index(9),
        term_of_index: Term(3),
        data: postcard::to_allocvec(&image).expect("images encode"),
        read_ctx: 0,
    };
    r.step(Time::ZERO, RaftInput::Message { from: "c".into(), msg }, &mut out);
    assert_eq!(r.debug_state().last_index, Index(3));

    // Entries the log already holds (and has compacted) but from a lower term: refused, where
    // they once followed the snapshot's term with a lower one.
    r.step(Time::ZERO, RaftInput::Snapshot { index: Index(3), data: vec![].into() }, &mut out);
    out.clear();
    r.step(Time::ZERO, append(2, "c", (0, 0), vec![e(1, 0), e(2, 0), e(3, 0), e(4, 0)], 4), &mut out);
    assert!(matches!(sends(&out)[..], [Message::AppendResp { result: AppendResult::Rejected { .. }, .. }]));
    assert_eq!(r.debug_state().last_index, Index(3));
}

#[test]
fn a_snapshot_of_nothing_is_ignored() {
    let mut r = Replica::new(cfg("a", &["a", "b", "c"]), seed("a"));
    let mut out = Vec::new();
    r.step(Time::ZERO, RaftInput::Snapshot { index: Index::ZERO, data: vec![].into() }, &mut out);
    assert!(persist_tokens(&out).is_empty(), "a snapshot at 0 would make a disk drop the log after it");
}

#[test]
#[should_panic(expected = "time went backwards")]
fn time_never_goes_backwards() {
    let mut r = Replica::new(cfg("a", &["a"]), seed("a"));
    let mut out = Vec::new();
    r.step(Time(10), RaftInput::Tick, &mut out);
    r.step(Time(9), RaftInput::Tick, &mut out);
}

#[test]
fn recovery_resumes_term_vote_and_log() {
    let mut net = Net::new(&["a", "b", "c"]);
    let l = net.run_until_leader(4 * T);
    for n in 1..=5 {
        net.propose(&l, n);
    }
    net.run_for(T);
    let before = net.state(&l);
    net.crash_and_recover(&l);
    let after = net.state(&l);
    assert_eq!((after.term, after.last_index, after.role), (before.term, before.last_index, Role::Follower));
    assert_eq!(after.commit, Index::ZERO, "commit is relearned from the leader");
    let next = net.run_until_leader(6 * T);
    net.propose(&next, 6);
    net.run_for(T);
    assert_eq!(net.state(&l).commit, net.state(&next).commit);
    net.check();
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Act {
        /// Deliver the message at this position (mod the queue length).
        Deliver(usize),
        Drop(usize),
        Duplicate(usize),
        /// Time passes for everyone.
        Advance(u8),
        Propose(u8),
        Sync(u8),
        Crash(u8),
    }

    fn act() -> impl Strategy<Value = Act> {
        prop_oneof![
            12 => any::<usize>().prop_map(Act::Deliver),
            1 => any::<usize>().prop_map(Act::Drop),
            1 => any::<usize>().prop_map(Act::Duplicate),
            4 => (5u8..80).prop_map(Act::Advance),
            3 => any::<u8>().prop_map(Act::Propose),
            6 => any::<u8>().prop_map(Act::Sync),
            1 => any::<u8>().prop_map(Act::Crash),
        ]
    }

    const IDS: [&str; 3] = ["a", "b", "c"];

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

        /// Election safety (§5.2) and log matching (§5.3) under drops, duplicates,
        /// reordering, slow disks and crashes.
        #[test]
        fn safety_holds_under_random_schedules(acts in proptest::collection::vec(act(), 1..800)) {
            let mut net = Net::new(&IDS);
            net.manual.extend(IDS.iter().map(|s| s.to_string()));
            let mut n = 0;
            for a in acts {
                match a {
                    Act::Deliver(i) | Act::Drop(i) | Act::Duplicate(i) if net.wire.is_empty() => { let _ = i; }
                    Act::Deliver(i) => {
                        let (from, to, msg) = net.wire.remove(i % net.wire.len()).expect("in range");
                        net.step(&to, RaftInput::Message { from, msg });
                    }
                    Act::Drop(i) => { net.wire.remove(i % net.wire.len()); }
                    Act::Duplicate(i) => {
                        let m = net.wire[i % net.wire.len()].clone();
                        net.wire.push_back(m);
                    }
                    Act::Advance(ms) => {
                        net.now = net.now + Duration::from_millis(u64::from(ms));
                        net.tick_all();
                    }
                    Act::Propose(x) => {
                        n += 1;
                        net.propose(IDS[x as usize % 3], n);
                    }
                    Act::Sync(x) => net.sync(IDS[x as usize % 3]),
                    Act::Crash(x) => net.crash_and_recover(IDS[x as usize % 3]),
                }
                net.check();
            }
        }
    }
}
