//! Fuzz bodies as plain functions, so `cargo fuzz` and the ordinary test run (through
//! proptest) exercise the same code.
//!
//! Owns nothing but the drivers: arbitrary bytes in, and the invariant each entry point must
//! keep (no panic, deterministic results). Never used by the agent itself.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::api::dns::{answer, DnsConfig, DnsQuestion, RecordType};
use crate::fsm::catalog::{Catalog, Registration};
use crate::fsm::kv::KvSetMode;
use crate::fsm::{Command, State};
use crate::gossip::keyring::{GossipKey, Keyring, SEAL_OVERHEAD};
use crate::gossip::lifeguard::log10_ceil;
use crate::gossip::wire::{Codec, Frame};
use crate::gossip::{Change, Gossip, GossipConfig, GossipEffect, GossipError, GossipInput, Identity};
use crate::gossip::{
    Incarnation, LamportTime, MemberState, Msg, Packet, PushPull, RecentEvent, State as GossipState, Tags,
};
use crate::ids::{Index, PersistToken, Term};
use crate::io::{PersistOp, Recovered};
use crate::raft::{disk, AppendResult, Entry, Membership, Message, RaftInput, RaftOutput, Replica};
use crate::raft::{ReplicaConfig, Role};
use crate::rng::{Rng, Stream};
use crate::time::{Duration, Time};

/// Arbitrary bytes as a DNS question (the first two bytes pick the type, the rest is the
/// name) against a small catalog: an answer always comes back, never a panic.
pub fn dns_question(data: &[u8]) {
    let (qtype, name) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), String::from_utf8_lossy(rest).into_owned()),
        _ => (1, String::new()),
    };
    let qtype = match qtype % 12 {
        0 => RecordType::A,
        1 => RecordType::Aaaa,
        2 => RecordType::Srv,
        3 => RecordType::Txt,
        4 => RecordType::Any,
        5 => RecordType::Soa,
        6 => RecordType::Ns,
        7 => RecordType::Ptr,
        _ => RecordType::Other(qtype),
    };
    let mut catalog = Catalog::default();
    let node = crate::agent::NodeInfo::new("n1", "10.0.0.1", "dc1").row();
    let reg = Registration { node, skip_node_update: false, service: None, checks: vec![] };
    catalog.register(Index(1), &reg).expect("a valid registration");
    let q = DnsQuestion { name, qtype, plain_udp: data.first().is_some_and(|b| b & 1 == 1) };
    let _ = answer(&q, &catalog, &DnsConfig::default(), 0, &mut Rng::new([0; 32], Stream::Dns));
}

/// Arbitrary bytes decoded (postcard) as a list of log commands and applied to two fresh
/// state machines: neither panics and both end byte-identical.
pub fn fsm_apply(data: &[u8]) {
    let Ok(commands) = postcard::from_bytes::<Vec<Command>>(data) else { return };
    let (mut a, mut b) = (State::default(), State::default());
    for (i, c) in commands.iter().enumerate() {
        a.apply(Index(i as u64 + 1), c);
        b.apply(Index(i as u64 + 1), c);
    }
    assert_eq!(a.digest(), b.digest(), "the same log gives the same state");
}

/// Arbitrary bytes as what arrives on a server-port connection, fed in uneven pieces: the
/// decoder yields messages or an error, never panics, and stops at the first error.
pub fn rpc_frames(data: &[u8]) {
    let mut d = crate::rpc::Decoder::default();
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    for piece in data.chunks(step) {
        d.push(piece);
        loop {
            match d.next_message() {
                Ok(Some(msg)) => {
                    let again = crate::rpc::encode(&msg);
                    assert!(again.len() > 4, "a decoded message re-encodes");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

/// Arbitrary bytes as the calls a client agent (or anything that reaches the server port)
/// sends a lone server (`-dev`), decoded as `(context, call)` pairs: never panics; every
/// call is answered exactly once, on the caller's connection, by the time its longest wait
/// has passed; and afterwards the server still takes a write and reads it back.
pub fn server_calls(data: &[u8]) {
    use crate::agent::NodeInfo;
    use crate::api::{ApiRequest, Body, KvRead, QueryOpts};
    use crate::io::{Effect, Input};
    use crate::node::{Config, Node};
    use crate::rpc::{Call, PeerMessage};
    let Ok(calls) = postcard::from_bytes::<Vec<(u64, Call)>>(data) else { return };
    let cfg = Config {
        max_query_time: Duration::from_secs(2),
        default_query_time: Duration::from_secs(2),
        ..Config::defaults(NodeInfo::new("s1", "10.0.0.1", "dc1"))
    };
    let Ok(mut node) = Node::new(cfg, [5; 32]) else { return };
    let caller = crate::rpc::client_id("c1");
    let mut now = Time(1);
    let mut answers: BTreeMap<u64, usize> = BTreeMap::new();
    let mut local = Vec::new();
    // A host that makes every persist durable at once.
    let mut step = |node: &mut Node, now: Time, input: Input, answers: &mut BTreeMap<u64, usize>| {
        let mut inputs = VecDeque::from([input]);
        while let Some(input) = inputs.pop_front() {
            let mut out = vec![];
            node.step(now, input, &mut out);
            for e in out {
                match e {
                    Effect::Send { to, msg: PeerMessage::Answer { ctx, .. } } => {
                        assert_eq!(to, caller, "answers go to the caller");
                        *answers.entry(ctx).or_default() += 1;
                    }
                    Effect::Persist { token, .. } => inputs.push_back(Input::Persisted { token }),
                    Effect::Respond { id, resp } => local.push((id, resp)),
                    _ => {}
                }
            }
        }
    };
    step(&mut node, now, Input::Tick, &mut answers);
    let mut asked = BTreeSet::new();
    for (ctx, call) in calls {
        if !asked.insert(ctx) {
            continue;
        }
        step(
            &mut node,
            now,
            Input::Peer { from: caller.clone(), msg: PeerMessage::Call { ctx, call } },
            &mut answers,
        );
    }
    // Past every wait (2 s, plus the blocking jitter) and the hold for a leader (7 s).
    for _ in 0..20 {
        now = now + Duration::from_millis(500);
        step(&mut node, now, Input::Tick, &mut answers);
    }
    for ctx in &asked {
        assert_eq!(answers.get(ctx), Some(&1), "call {ctx} answered exactly once: {answers:?}");
    }
    let put = ApiRequest::KvPut { key: "after".into(), value: b"1".to_vec(), flags: 0, mode: KvSetMode::Set };
    step(&mut node, now, Input::Request { id: crate::ids::ReqId(1), req: put }, &mut answers);
    let get =
        ApiRequest::KvGet { key: "after".into(), read: KvRead::Entry { raw: true }, q: QueryOpts::default() };
    step(&mut node, now, Input::Request { id: crate::ids::ReqId(2), req: get }, &mut answers);
    let read = local.iter().find(|(id, _)| id.0 == 2).map(|(_, r)| &r.body);
    assert_eq!(read, Some(&Body::Raw(b"1".to_vec())), "the server still works");
}

/// Arbitrary bytes as a script for one Raft replica ("a", voters a, b and c, default timing):
/// each step lets time pass, delivers a message from b or c (a raw frame, or one built near
/// the replica's own term and indexes so the deep paths are reached), completes queued
/// persists in order, proposes, reads, or snapshots at the applied index. Never panics, and
/// after every step: the term and the commit index never go back, the commit index stays
/// within the log, committed entries are handed out once each, in order, and a leader is a
/// voter; a granted vote or an ack leaves only once what it promises was durable, and no two
/// votes are cast in one term.
pub fn raft_messages(data: &[u8]) {
    RaftScript::run(data);
}

/// A fuzz input read front to back; past its end every byte reads as zero.
struct Bytes<'a>(&'a [u8]);

impl<'a> Bytes<'a> {
    fn byte(&mut self) -> u8 {
        let (&b, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        b
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    fn bit(&mut self) -> bool {
        self.byte() & 1 == 1
    }

    /// A value within `base - 2 ..= base + 1`: random terms and indexes almost never match
    /// anything, values next to the replica's own reach its conflict and catch-up paths.
    fn near(&mut self, base: u64) -> u64 {
        (base + 1).saturating_sub(u64::from(self.byte() % 4))
    }

    /// A small membership over a..d; it may leave out this replica or every voter.
    fn membership(&mut self) -> Membership {
        let mask = self.byte();
        let names = ["a", "b", "c", "d"].into_iter().enumerate();
        let mut m = Membership::default();
        for (i, n) in names {
            if mask & (1 << i) != 0 {
                m.voters.insert(n.to_string());
            } else if mask & (1 << (i + 4)) != 0 {
                m.non_voters.insert(n.to_string());
            }
        }
        m
    }

    fn command(&mut self) -> Command {
        match self.byte() % 8 {
            0 => self.membership().to_command(),
            1..=3 => Command::KvSet {
                key: format!("k{}", self.byte() % 4),
                value: vec![self.byte()],
                flags: 0,
                mode: KvSetMode::Set,
            },
            _ => Command::Noop,
        }
    }
}

/// The replica under test and what its host has seen of it: the write queue, the disk the
/// acknowledged writes built, and the ledgers the invariants are checked against.
struct RaftScript {
    replica: Replica,
    now: Time,
    /// The latest wakeup the replica asked for.
    timer: Time,
    /// Persists issued and not yet acknowledged, in token order.
    queued: VecDeque<(PersistToken, PersistOp)>,
    last_issued: PersistToken,
    last_acked: Option<PersistToken>,
    disk: Recovered,
    /// Per durable term, the furthest the durable log reached while the disk held that term:
    /// an ack in a term promises the entries it names were on disk at some moment in it.
    durable_reach: BTreeMap<Term, Index>,
    /// The vote each term's hard state carried when issued, and once durable.
    votes: BTreeMap<Term, String>,
    durable_votes: BTreeMap<Term, String>,
    /// Last seen term, commit point, and how far committed entries and snapshots were handed
    /// out.
    term: Term,
    commit: Index,
    applied: Index,
    next_ctx: u64,
}

impl RaftScript {
    fn run(data: &[u8]) -> RaftScript {
        let (mut bytes, mut script) = (Bytes(data), RaftScript::new());
        while !bytes.0.is_empty() {
            script.step(&mut bytes);
        }
        script
    }

    fn new() -> RaftScript {
        let peers = ["a", "b", "c"].map(String::from).to_vec();
        RaftScript {
            replica: Replica::new(ReplicaConfig::new("a", peers), [0; 32]),
            now: Time::ZERO,
            timer: Time::ZERO,
            queued: VecDeque::new(),
            last_issued: PersistToken(0),
            last_acked: None,
            disk: Recovered::default(),
            durable_reach: BTreeMap::from([(Term(0), Index::ZERO)]),
            votes: BTreeMap::new(),
            durable_votes: BTreeMap::new(),
            term: Term(0),
            commit: Index::ZERO,
            applied: Index::ZERO,
            next_ctx: 0,
        }
    }

    fn step(&mut self, b: &mut Bytes) {
        let input = match b.byte() % 16 {
            0..=2 => {
                let n = b.byte();
                // Mostly straight to the requested wakeup, so elections and heartbeats fire.
                self.now = if n >= 0xc0 {
                    self.now.max(self.timer)
                } else {
                    self.now + Duration::from_millis(u64::from(n) * 10)
                };
                RaftInput::Tick
            }
            3..=7 => {
                let (from, msg) = self.message(b);
                assert_eq!(Message::decode(&msg.encode()).as_ref(), Ok(&msg), "a message survives the wire");
                RaftInput::Message { from, msg }
            }
            8 => {
                let len = usize::from(b.byte());
                let from = if b.bit() { "b" } else { "c" };
                // Most frames are garbage: refused with an error, not a panic.
                let Ok(msg) = Message::decode(b.take(len)) else { return };
                RaftInput::Message { from: from.to_string(), msg }
            }
            9..=11 => match self.acknowledge(b.byte()) {
                Some(token) => RaftInput::Persisted { token },
                None => return,
            },
            12 => {
                self.next_ctx += 1;
                RaftInput::Propose { command: b.command(), ctx: self.next_ctx }
            }
            13 => {
                self.next_ctx += 1;
                RaftInput::ReadIndex { ctx: self.next_ctx }
            }
            _ => {
                let len = usize::from(b.byte() % 8);
                RaftInput::Snapshot { index: self.applied, data: b.take(len).to_vec().into() }
            }
        };
        let mut out = Vec::new();
        self.replica.step(self.now, input, &mut out);
        for o in out {
            self.observe(o);
        }
        self.check();
    }

    /// A message from b or c built from the fuzz bytes around the replica's own state.
    fn message(&self, b: &mut Bytes) -> (String, Message) {
        let d = self.replica.debug_state();
        let (from, other) = if b.bit() { ("b", "c") } else { ("c", "b") };
        let term = Term(b.near(d.term.0));
        let read_ctx = u64::from(b.byte() % 4);
        let index_near = |b: &mut Bytes| {
            let base = if b.bit() { d.commit } else { d.last_index };
            Index(b.near(base.0))
        };
        // The replica's own term at an index (so a consistency check passes), or any.
        let term_at = |b: &mut Bytes, i: Index| match self.replica.log_term(i) {
            Some(t) if b.bit() => t,
            _ => Term(b.near(term.0)),
        };
        // Mostly the sender itself; another leader of the same term is a broken peer.
        let leader = if b.byte().is_multiple_of(8) { other } else { from }.to_string();
        let msg = match b.byte() % 10 {
            0 => Message::PreVote { term, last_index: index_near(b), last_term: Term(b.near(d.last_term.0)) },
            1 => Message::PreVoteResp { term, granted: b.bit() },
            2 => Message::RequestVote {
                term,
                last_index: index_near(b),
                last_term: Term(b.near(d.last_term.0)),
            },
            3 => Message::VoteResp { term, granted: b.bit() },
            4 | 5 => {
                let prev_index = index_near(b);
                let prev_term = term_at(b, prev_index);
                let mut entries = Vec::new();
                let mut last = (prev_index, prev_term);
                for _ in 0..b.byte() % 4 {
                    let t = if b.bit() { Term(last.1 .0 + 1).min(term) } else { last.1 };
                    last = (last.0.next(), t);
                    entries.push(Entry { term: t, index: last.0, command: b.command() });
                }
                let commit = Index(b.near(last.0 .0));
                Message::AppendEntries { term, leader, prev_index, prev_term, entries, commit, read_ctx }
            }
            6 | 7 => {
                let result = if b.bit() {
                    AppendResult::Matched { index: index_near(b) }
                } else {
                    let prev_index = index_near(b);
                    let hint_index = index_near(b);
                    AppendResult::Rejected { prev_index, hint_index, hint_term: term_at(b, hint_index) }
                };
                Message::AppendResp { term, read_ctx, result }
            }
            8 => Message::InstallSnapshotResp { term, index: index_near(b), read_ctx },
            _ => {
                let index = Index(b.near(d.last_index.0 + 2));
                let term_of_index = term_at(b, index);
                let len = usize::from(b.byte() % 4);
                let state = b.take(len).to_vec();
                // The layout of a snapshot image (`raft::snapshot::Image`), or garbage.
                let data = if b.bit() {
                    postcard::to_allocvec(&(b.membership(), state)).expect("an image encodes")
                } else {
                    state
                };
                Message::InstallSnapshot { term, leader, index, term_of_index, data, read_ctx }
            }
        };
        (from.to_string(), msg)
    }

    /// The host finishes the oldest queued writes (how many, the fuzz byte says) and returns
    /// the last one's token; with nothing queued it repeats the last acknowledgement.
    fn acknowledge(&mut self, n: u8) -> Option<PersistToken> {
        if self.queued.is_empty() {
            return self.last_acked;
        }
        for _ in 0..=usize::from(n) % self.queued.len() {
            let (token, op) = self.queued.pop_front().expect("within the queue's length");
            if let PersistOp::HardState { term, voted_for: Some(v) } = &op {
                self.durable_votes.insert(*term, v.clone());
            }
            disk::apply(&mut self.disk, op);
            let term = self.disk.hard_state.as_ref().map_or(Term(0), |(t, _)| *t);
            let logged = self.disk.entries.last().map(|e| e.index);
            let reach = logged.max(self.disk.snapshot.as_ref().map(|s| s.0)).unwrap_or(Index::ZERO);
            let r = self.durable_reach.entry(term).or_default();
            *r = (*r).max(reach);
            self.last_acked = Some(token);
        }
        self.last_acked
    }

    /// Plays the host's part for one output and checks what only an output shows.
    fn observe(&mut self, o: RaftOutput) {
        match o {
            RaftOutput::Send { to, msg } => self.check_send(&to, &msg),
            RaftOutput::Persist { token, op } => {
                assert!(
                    token > self.last_issued,
                    "persist tokens go up: {token:?} after {:?}",
                    self.last_issued
                );
                self.last_issued = token;
                if let PersistOp::HardState { term, voted_for } = &op {
                    assert!(*term >= self.term, "hard state for {term:?} after {:?}", self.term);
                    if let Some(v) = voted_for {
                        let before = self.votes.entry(*term).or_insert_with(|| v.clone());
                        assert_eq!(before, v, "two votes in {term:?}");
                    }
                }
                self.queued.push_back((token, op));
            }
            RaftOutput::SetTimer { at } => self.timer = at,
            RaftOutput::Committed { entries } => {
                for e in entries {
                    assert_eq!(e.index, self.applied.next(), "committed entries come once, in order");
                    self.applied = e.index;
                }
            }
            RaftOutput::InstallSnapshot { index, .. } => {
                assert!(index > self.applied, "a snapshot at {index:?} after applying {:?}", self.applied);
                self.applied = index;
            }
            RaftOutput::ProposeResult { .. }
            | RaftOutput::ReadReady { .. }
            | RaftOutput::ReadFailed { .. }
            | RaftOutput::LeaderChanged { .. } => {}
        }
    }

    /// Votes and acks promise durable state: it must have been on disk before they leave.
    fn check_send(&self, to: &str, msg: &Message) {
        let (term, acked) = match *msg {
            Message::VoteResp { term, granted: true } => {
                let durable = self.durable_votes.get(&term).map(String::as_str);
                assert_eq!(durable, Some(to), "vote in {term:?} sent to {to} before it was durable");
                return;
            }
            Message::AppendResp { term, result: AppendResult::Matched { index }, .. } => (term, index),
            // Index 0 acknowledges nothing (the answer to a stale InstallSnapshot).
            Message::InstallSnapshotResp { term, index, .. } if index > Index::ZERO => (term, index),
            _ => return,
        };
        let reach = self.durable_reach.get(&term).copied();
        assert!(
            reach >= Some(acked),
            "ack of {acked:?} in {term:?} to {to} before it was durable (durable reach {reach:?})"
        );
    }

    /// What must hold after every step, whatever the peers sent.
    fn check(&mut self) {
        let d = self.replica.debug_state();
        assert!(d.term >= self.term, "term went back from {:?} to {:?}", self.term, d.term);
        assert!(d.commit >= self.commit, "commit went back from {:?} to {:?}", self.commit, d.commit);
        assert!(d.commit <= d.last_index, "commit {:?} beyond the last index {:?}", d.commit, d.last_index);
        assert_eq!(self.applied, d.commit, "everything committed is handed out as it commits");
        if d.role == Role::Leader {
            assert!(d.voters.iter().any(|v| v == "a"), "a leader that is not a voter: {d:?}");
            let own = self.durable_votes.get(&d.term).map(String::as_str);
            assert_eq!(own, Some("a"), "leads {:?} without a durable vote for itself", d.term);
        }
        (self.term, self.commit) = (d.term, d.commit);
    }
}

/// Arbitrary bytes as a gossip datagram or stream frame, as is, behind a plain header, and
/// sealed with a key the receiver holds: decoding never panics, a sealed body decodes
/// exactly as the same body in plaintext, and whatever decodes re-encodes to an equal frame.
pub fn gossip_packets(data: &[u8]) {
    let keyring = fuzz_keyring();
    let (plain, sealed) = (Codec::plain(), Codec::encrypted(keyring.clone()));
    let nonce: [u8; 12] = std::array::from_fn(|i| data.get(i).copied().unwrap_or(0));
    let probe = Frame::Packet(Packet { msgs: vec![] });
    let plain_header = plain.encode(&probe, nonce)[..3].to_vec();
    let sealed_header = sealed.encode(&probe, nonce)[..3].to_vec();
    let in_plain = [&plain_header[..], data].concat();
    // Sealed by either installed key (the secondary makes the receiver try both).
    let mut sender = keyring;
    if data.first().is_some_and(|b| b & 1 == 1) {
        let secondary = sender.keys()[1].clone();
        sender.use_key(&secondary).expect("an installed key");
    }
    let in_seal = [&sealed_header[..], &sender.seal(data, nonce, &sealed_header)].concat();
    for (codec, bytes) in [(&plain, data), (&sealed, data), (&plain, &in_plain), (&sealed, &in_plain)] {
        if let Ok(frame) = codec.decode(bytes) {
            gossip_round_trip(codec, &frame, nonce);
        }
    }
    let opened = sealed.decode(&in_seal);
    assert_eq!(opened.as_ref().ok(), plain.decode(&in_plain).as_ref().ok(), "sealing changes nothing");
    if let Ok(frame) = opened {
        gossip_round_trip(&sealed, &frame, nonce);
    }
}

/// The fixed keyring both gossip targets use: an AES-256 primary and an AES-128 secondary.
fn fuzz_keyring() -> Keyring {
    let mut k = Keyring::new(GossipKey::from_bytes(&[7; 32]).expect("a 32-byte key"));
    k.install(GossipKey::from_bytes(&[9; 16]).expect("a 16-byte key"));
    k
}

fn gossip_round_trip(codec: &Codec, frame: &Frame, nonce: [u8; 12]) {
    let again = codec.encode(frame, nonce);
    assert_eq!(codec.decode(&again).ok().as_ref(), Some(frame), "a decoded frame survives the wire");
}

/// Arbitrary bytes as a script for one gossip member ("n0" at "a0"; the others are n1..n4
/// at a1..a4, sometimes at a conflicting b-address): each step lets time pass, delivers a
/// packet of messages built around what the member believes (incarnations and clocks near
/// its own, acks for the probes it sent), a push-pull, a failed stream, or asks it to join,
/// leave, force-leave or fire an event. Never panics, and after every step: its own
/// incarnation never goes back, nor does any member's while remembered; a member seen dead
/// or left comes back alive only with a higher incarnation (unless forgotten in between);
/// the broadcast queue holds at most one item per (member, kind) plus the user events not yet
/// sent their retransmit limit; the next deadline lies in the future; every packet fits the
/// configured size once sealed; each join is answered once, each event delivered once, and
/// `Left` comes once, only after `Leave`.
pub fn gossip_node(data: &[u8]) {
    GossipScript::run(data);
}

const GOSSIP_NAMES: [&str; 5] = ["n0", "n1", "n2", "n3", "n4"];

/// A user event as the queue and the host see it: Lamport time, name, payload.
type EventKey = (LamportTime, String, Vec<u8>);

struct GossipScript {
    g: Gossip,
    now: Time,
    own: Incarnation,
    /// What each remembered member last looked like.
    last: BTreeMap<String, (Incarnation, GossipState)>,
    /// Sequence numbers of pings the member sent (direct and indirect), newest last.
    seqs: VecDeque<u32>,
    next_token: u64,
    /// Joins asked for and not yet answered.
    joins: BTreeSet<u64>,
    leave_asked: bool,
    left_seen: bool,
    /// Every user event the member may have queued, and how often it went out since.
    events: BTreeMap<EventKey, u32>,
    delivered: BTreeSet<EventKey>,
}

impl Bytes<'_> {
    /// A value near `base` (`base - 2 ..= base + 3`), sometimes zero or the type's maximum.
    fn near_wide(&mut self, base: u64, max: u64) -> u64 {
        match self.byte() % 32 {
            30 => 0,
            31 => max,
            k => base.saturating_add(u64::from(k % 6)).saturating_sub(2).min(max),
        }
    }

    /// Bytes a peer chooses: a coordinate whose components may be anything (NaN,
    /// infinities, huge), or garbage.
    fn coordinate_bytes(&mut self) -> Vec<u8> {
        if self.bit() {
            let n = usize::from(self.byte() % 16);
            return self.take(n).to_vec();
        }
        let mut f = || f64::from_bits(u64::from_le_bytes(std::array::from_fn(|_| self.byte())));
        let coord = crate::coordinate::Coordinate {
            vec: (0..8).map(|_| f()).collect(),
            error: f(),
            adjustment: f(),
            height: f(),
        };
        postcard::to_allocvec(&coord).expect("coordinates encode")
    }

    fn gossip_name(&mut self) -> &'static str {
        GOSSIP_NAMES[usize::from(self.byte()) % GOSSIP_NAMES.len()]
    }

    fn gossip_addr(&mut self) -> Arc<str> {
        let i = usize::from(self.byte()) % GOSSIP_NAMES.len();
        format!("a{i}").into()
    }
}

impl GossipScript {
    fn run(data: &[u8]) -> GossipScript {
        let mut bytes = Bytes(data);
        let mut script = GossipScript::new(bytes.byte());
        while !bytes.0.is_empty() {
            script.step(&mut bytes);
        }
        script
    }

    fn new(pick: u8) -> GossipScript {
        let lan = GossipConfig::lan();
        let cfg = match pick % 5 {
            0 => lan,
            1 => GossipConfig::wan(),
            2 => lan.dev(),
            3 => GossipConfig { user_coalesce_period: Duration::from_secs(1), ..lan },
            _ => GossipConfig { lifeguard: false, ..lan },
        };
        let me = GossipScript::identity(0, false, false);
        GossipScript {
            g: Gossip::new(cfg, me, Rng::new([0; 32], Stream::Gossip)),
            now: Time::ZERO,
            own: Incarnation(0),
            last: BTreeMap::new(),
            seqs: VecDeque::new(),
            next_token: 0,
            joins: BTreeSet::new(),
            leave_asked: false,
            left_seen: false,
            events: BTreeMap::new(),
            delivered: BTreeSet::new(),
        }
    }

    /// Member `i` as it introduces itself; `moved` gives it another address (a name
    /// conflict while it lives), `tagged` a changed tag set.
    fn identity(i: usize, moved: bool, tagged: bool) -> Identity {
        let mut tags = Tags::new();
        if tagged {
            tags.insert("role".into(), "node".into());
        }
        let addr = format!("{}{i}", if moved { "b" } else { "a" });
        Identity { name: GOSSIP_NAMES[i].into(), addr: addr.into(), tags }
    }

    fn some_identity(b: &mut Bytes) -> Arc<Identity> {
        let i = usize::from(b.byte()) % GOSSIP_NAMES.len();
        let flags = b.byte();
        Arc::new(GossipScript::identity(i, flags % 8 == 7, flags % 8 == 6))
    }

    fn incarnation(&self, b: &mut Bytes, name: &str) -> Incarnation {
        let base = self.g.member(name).map_or(0, |m| m.incarnation.0);
        Incarnation(b.near_wide(u64::from(base), u64::from(u32::MAX)) as u32)
    }

    fn seq(&self, b: &mut Bytes) -> u32 {
        let pick = usize::from(b.byte());
        match self.seqs.len() {
            0 => pick as u32 % 4,
            n => self.seqs[pick % n],
        }
    }

    fn msg(&mut self, b: &mut Bytes) -> Msg {
        match b.byte() % 10 {
            0 => Msg::Ping { seq: b.byte().into(), target: b.gossip_name().into() },
            1 => Msg::IndirectPing {
                seq: b.byte().into(),
                target: b.gossip_name().into(),
                addr: b.gossip_addr(),
                reply_to: b.gossip_addr(),
                nack: b.bit(),
            },
            2 => Msg::Ack { seq: self.seq(b), payload: b.coordinate_bytes() },
            3 => Msg::Nack { seq: self.seq(b) },
            4 => {
                let member = GossipScript::some_identity(b);
                Msg::Alive { incarnation: self.incarnation(b, &member.name), member }
            }
            5 => {
                let node = b.gossip_name();
                Msg::Suspect {
                    incarnation: self.incarnation(b, node),
                    node: node.into(),
                    from: b.gossip_name().into(),
                }
            }
            6 => {
                let node = b.gossip_name();
                let incarnation = self.incarnation(b, node);
                // Half the time from the member itself: a graceful leave.
                let from = if b.bit() { node } else { b.gossip_name() };
                Msg::Dead { incarnation, node: node.into(), from: from.into() }
            }
            7 => Msg::Intent {
                leave: b.bit(),
                node: b.gossip_name().into(),
                ltime: LamportTime(b.near_wide(self.g.member_clock().0, u64::MAX)),
                prune: b.bit(),
            },
            _ => {
                let ltime = LamportTime(b.near_wide(self.g.event_clock().0, u64::MAX));
                let name = format!("e{}", b.byte() % 3);
                let len = usize::from(b.byte() % 4);
                let msg = Msg::User { ltime, name, payload: b.take(len).to_vec() };
                if let Msg::User { ltime, name, payload } = &msg {
                    self.events.entry((*ltime, name.clone(), payload.clone())).or_insert(0);
                }
                msg
            }
        }
    }

    fn push_pull(&mut self, b: &mut Bytes) -> PushPull {
        let from = b.gossip_addr();
        let join = match b.byte() % 4 {
            0 => self.joins.iter().next().copied(),
            1 => Some(self.next_token),
            _ => None,
        };
        let reply = b.bit();
        let mut members = Vec::new();
        for _ in 0..b.byte() % 5 {
            let member = GossipScript::some_identity(b);
            let incarnation = self.incarnation(b, &member.name);
            let state = [GossipState::Alive, GossipState::Suspect, GossipState::Dead, GossipState::Left]
                [usize::from(b.byte() % 4)];
            let leaving = b.bit();
            let intent = LamportTime(b.near_wide(self.g.member_clock().0, u64::MAX));
            members.push(MemberState { member, incarnation, state, leaving, intent });
        }
        let member_clock = LamportTime(b.near_wide(self.g.member_clock().0, u64::MAX));
        let event_clock = LamportTime(b.near_wide(self.g.event_clock().0, u64::MAX));
        let mut events = Vec::new();
        for _ in 0..b.byte() % 3 {
            let ltime = LamportTime(b.near_wide(self.g.event_clock().0, u64::MAX));
            let name = format!("e{}", b.byte() % 3);
            let len = usize::from(b.byte() % 4);
            let payload = b.take(len).to_vec();
            self.events.entry((ltime, name.clone(), payload.clone())).or_insert(0);
            events.push(RecentEvent { ltime, name, payload });
        }
        PushPull { from, join, reply, members, member_clock, event_clock, events }
    }

    fn step(&mut self, b: &mut Bytes) {
        let input = match b.byte() % 16 {
            0..=3 => {
                let n = b.byte();
                self.now = match n % 8 {
                    _ if n >= 0xa0 => self.now.max(self.g.next_deadline()),
                    0..=3 => self.now + Duration::from_millis(u64::from(n) * 10),
                    4 | 5 => self.now + Duration::from_secs(u64::from(n)),
                    6 => self.now + Duration::from_secs(u64::from(n) * 60),
                    _ => self.now + Duration::from_secs(u64::from(n % 32) * 3600),
                };
                GossipInput::Tick
            }
            4..=8 => {
                let from = b.gossip_addr();
                let msgs = (0..=b.byte() % 3).map(|_| self.msg(b)).collect();
                GossipInput::Packet { from, packet: Packet { msgs } }
            }
            9 | 10 => GossipInput::Stream { msg: self.push_pull(b) },
            11 => {
                let join = if b.bit() { self.joins.iter().next_back().copied() } else { None };
                GossipInput::StreamFailed { to: b.gossip_addr(), join }
            }
            12 => {
                let mask = b.byte();
                let addrs = (0..GOSSIP_NAMES.len()).filter(|i| mask & (1 << i) != 0);
                let addrs = addrs.map(|i| Arc::from(format!("a{i}"))).collect();
                self.next_token += 1;
                self.joins.insert(self.next_token);
                GossipInput::Join { token: self.next_token, addrs }
            }
            13 => {
                self.leave_asked = true;
                GossipInput::Leave
            }
            14 => {
                let node = if b.byte() % 8 == 7 { "zz" } else { b.gossip_name() };
                GossipInput::ForceLeave { node: node.into(), prune: b.bit() }
            }
            _ => {
                let name = format!("e{}", b.byte() % 3);
                let len = if b.byte() % 16 == 15 { 600 } else { usize::from(b.byte() % 8) };
                let payload = b.take(len).to_vec();
                // Fired one past the current event clock, if the member accepts it.
                let ltime = LamportTime(self.g.event_clock().0.saturating_add(1));
                self.events.entry((ltime, name.clone(), payload.clone())).or_insert(0);
                GossipInput::UserEvent { name, payload }
            }
        };
        let mut out = Vec::new();
        let result = self.g.handle(self.now, input, &mut out);
        if let Err(GossipError::UnknownMember(node)) = &result {
            assert!(self.g.member(node).is_none(), "{node} is a member, yet unknown");
        }
        let mut forgotten = BTreeSet::new();
        for e in out {
            self.observe(e, &mut forgotten);
        }
        self.check(&forgotten);
    }

    /// Plays the host's part for one effect and checks what only an effect shows.
    fn observe(&mut self, e: GossipEffect, forgotten: &mut BTreeSet<String>) {
        match e {
            GossipEffect::SendPacket { to, packet } => {
                // Copies for a member that is down (or gone) are not counted as transmits.
                let counts = self.g.members().any(|m| m.id.addr == to && !m.down());
                let frame = Frame::Packet(packet);
                let bytes = Codec::plain().encode(&frame, [0; 12]);
                assert_eq!(
                    Codec::plain().decode(&bytes).ok().as_ref(),
                    Some(&frame),
                    "a packet survives the wire"
                );
                let limit = self.g.config().packet_size;
                assert!(
                    bytes.len() + SEAL_OVERHEAD <= limit,
                    "a {}-byte packet (sealed) exceeds the {limit}-byte limit: {frame:?}",
                    bytes.len() + SEAL_OVERHEAD
                );
                let Frame::Packet(packet) = frame else { unreachable!() };
                for m in packet.msgs {
                    match m {
                        Msg::Ping { seq, .. } | Msg::IndirectPing { seq, .. } => {
                            self.seqs.push_back(seq);
                            if self.seqs.len() > 8 {
                                self.seqs.pop_front();
                            }
                        }
                        Msg::User { ltime, name, payload } if counts => {
                            *self.events.entry((ltime, name, payload)).or_insert(0) += 1;
                        }
                        _ => {}
                    }
                }
            }
            GossipEffect::SendStream { msg, .. } => {
                assert_eq!(msg.from.as_ref(), "a0", "a push-pull names its sender");
                let frame = Frame::PushPull(msg);
                let bytes = Codec::plain().encode(&frame, [0; 12]);
                assert_eq!(
                    Codec::plain().decode(&bytes).ok().as_ref(),
                    Some(&frame),
                    "a push-pull survives the wire"
                );
            }
            GossipEffect::Member { change, member } => {
                assert_ne!(member.name.as_ref(), "n0", "a member is not told about itself");
                if change == Change::Reaped {
                    forgotten.insert(member.name.to_string());
                }
            }
            GossipEffect::UserEvent { ltime, name, payload } => {
                assert!(self.delivered.insert((ltime, name, payload)), "an event is delivered once");
            }
            GossipEffect::Joined { token, .. } => {
                assert!(self.joins.remove(&token), "join {token} answered twice, or never asked");
            }
            GossipEffect::Left => {
                assert!(self.leave_asked && !self.left_seen, "Left once, and only after Leave");
                self.left_seen = true;
            }
            // The script asks no queries and peers' ones are not generated.
            GossipEffect::Query { .. } | GossipEffect::Answers { .. } => {}
        }
    }

    /// What must hold after every step, whatever arrived.
    fn check(&mut self, forgotten: &BTreeSet<String>) {
        let g = &self.g;
        let me = g.member("n0").expect("a member always knows itself");
        assert!(
            me.incarnation >= self.own,
            "own incarnation went back: {:?} after {:?}",
            me.incarnation,
            self.own
        );
        self.own = me.incarnation;
        self.last.retain(|name, _| !forgotten.contains(name) && g.member(name).is_some());
        for m in g.members() {
            let name = m.id.name.to_string();
            if let Some((inc, state)) = self.last.get(&name) {
                assert!(
                    m.incarnation >= *inc,
                    "{name}'s incarnation went back: {:?} after {inc:?}",
                    m.incarnation
                );
                if matches!(state, GossipState::Dead | GossipState::Left) && m.state == GossipState::Alive {
                    assert!(m.incarnation > *inc, "{name} came back from {state:?} at {inc:?}");
                }
            }
            self.last.insert(name, (m.incarnation, m.state));
        }
        // Retransmits per broadcast: the small pool here never reaches ten members.
        let limit = g.config().retransmit_mult.max(1) * log10_ceil(GOSSIP_NAMES.len());
        let events = self.events.values().filter(|sent| **sent < limit).count();
        let bound = 2 * GOSSIP_NAMES.len() + events;
        assert!(
            g.pending_broadcasts() <= bound,
            "{} broadcasts pending, bound {bound}",
            g.pending_broadcasts()
        );
        let next = g.next_deadline();
        assert!(next > self.now, "deadline {next:?} not after now {:?}: the host would spin", self.now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        let key = "[a-c]{0,2}(/[a-c]{0,2}){0,2}";
        prop_oneof![
            (key, proptest::collection::vec(any::<u8>(), 0..4), any::<u64>(), 0u64..8).prop_map(
                |(key, value, flags, cas)| {
                    let mode = if cas == 0 { KvSetMode::Set } else { KvSetMode::Cas(cas - 1) };
                    Command::KvSet { key, value, flags: flags % 3, mode }
                }
            ),
            (key, any::<bool>(), proptest::option::of(0u64..8)).prop_map(|(key, recurse, cas)| {
                Command::KvDelete { key, recurse, cas: if recurse { None } else { cas } }
            }),
            Just(Command::Noop),
        ]
    }

    proptest! {
        #[test]
        fn dns_question_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            dns_question(&data);
        }

        #[test]
        fn fsm_apply_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            fsm_apply(&data);
        }

        #[test]
        fn fsm_apply_on_encoded_logs(cmds in proptest::collection::vec(command(), 0..40)) {
            fsm_apply(&postcard::to_allocvec(&cmds).expect("commands encode"));
        }

        /// Half the cases start from leadership, which random bytes alone rarely reach.
        #[test]
        fn raft_messages_keep_the_invariants(
            lead in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let prefix: &[u8] = if lead { ELECT_A } else { &[] };
            raft_messages(&[prefix, &data].concat());
        }
    }

    fn gossip_frame() -> impl Strategy<Value = Frame> {
        let name = "[a-c]{0,3}";
        let msg = prop_oneof![
            (any::<u32>(), name).prop_map(|(seq, t)| Msg::Ping { seq, target: t.into() }),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..8))
                .prop_map(|(seq, payload)| Msg::Ack { seq, payload }),
            (any::<u64>(), name, proptest::collection::vec(any::<u8>(), 0..4))
                .prop_map(|(t, name, payload)| Msg::User { ltime: LamportTime(t), name, payload }),
        ];
        proptest::collection::vec(msg, 0..4).prop_map(|msgs| Frame::Packet(Packet { msgs }))
    }

    fn call() -> impl Strategy<Value = crate::rpc::Call> {
        use crate::api::{ApiRequest, KvRead, QueryOpts};
        use crate::rpc::{Call, Work};
        let key = "[a-c/.]{0,4}";
        let opts = (0u64..40, any::<bool>()).prop_map(|(min_index, wait)| QueryOpts {
            min_index: Index(min_index),
            wait: wait.then(|| Duration::from_millis(300)),
            ..QueryOpts::default()
        });
        let api = prop_oneof![
            (key, proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(key, value)| {
                ApiRequest::KvPut { key, value, flags: 0, mode: KvSetMode::Set }
            }),
            (key, opts.clone()).prop_map(|(key, q)| ApiRequest::KvGet { key, read: KvRead::Recurse, q }),
            (key, opts).prop_map(|(service, q)| ApiRequest::HealthService {
                service,
                tags: vec![],
                passing: true,
                q,
                near: Some("s1".into()),
            }),
            Just(ApiRequest::AgentLeave),
            Just(ApiRequest::CatalogDatacenters),
            Just(ApiRequest::CoordinateDatacenters),
        ];
        prop_oneof![
            (api, proptest::option::of("dc[12]")).prop_map(|(req, dc)| Call::Api { dc, req }),
            command().prop_map(|c| Call::Work(Work::Commands(vec![c]))),
            key.prop_map(|n| Call::Work(Work::RemovePeer(n))),
            key.prop_map(Call::NodeView),
        ]
    }

    proptest! {
        #[test]
        fn server_calls_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            server_calls(&data);
        }

        #[test]
        fn server_calls_answer_each_call_once(calls in proptest::collection::vec((0u64..6, call()), 0..8)) {
            server_calls(&postcard::to_allocvec(&calls).expect("calls encode"));
        }

        #[test]
        fn gossip_packets_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            gossip_packets(&data);
        }

        /// Bodies that decode, so the round trip is exercised too.
        #[test]
        fn gossip_packets_on_encoded_frames(frame in gossip_frame()) {
            gossip_packets(&postcard::to_allocvec(&frame).expect("frames encode"));
        }

        /// Half the cases start from a full member table, which random bytes rarely reach.
        #[test]
        fn gossip_node_keeps_the_invariants(
            pool in any::<bool>(),
            data in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let prefix: &[u8] = if pool { JOIN_POOL } else { &[] };
            gossip_node(&[prefix, &data].concat());
        }
    }

    /// A script that fills the member table: the LAN config, then a push-pull from a1 telling
    /// of n1..n4 alive at incarnation 1.
    const JOIN_POOL: &[u8] =
        &[0, 9, 1, 2, 0, 4, 1, 0, 3, 0, 0, 2, 2, 0, 3, 0, 0, 2, 3, 0, 3, 0, 0, 2, 4, 0, 3, 0, 0, 2, 2, 2];

    #[test]
    fn the_pool_script_fills_the_member_table() {
        let g = GossipScript::run(JOIN_POOL).g;
        assert_eq!(g.alive_count(), 5);
        assert!(g.members().all(|m| m.incarnation == Incarnation(1)));
    }

    /// A script that makes the replica lead term 1: boot, time out, a granted pre-vote from
    /// b, its own vote made durable, b's vote.
    const ELECT_A: &[u8] = &[0, 0xff, 0, 0xff, 3, 1, 0, 0, 1, 1, 1, 9, 0, 3, 1, 1, 0, 1, 3, 1];

    #[test]
    fn the_election_script_elects_the_replica() {
        let d = RaftScript::run(ELECT_A).replica.debug_state();
        assert_eq!((d.role, d.term), (Role::Leader, Term(1)));
    }
}
