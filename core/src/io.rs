//! The driving contract: what a host feeds a node (`Input`) and what it must carry out
//! (`Effect`), in order.
//!
//! Owns only the vocabulary between core and hosts. Never performs anything itself.

use crate::api::{ApiRequest, ApiResponse};
use crate::checks::CheckSpec;
use crate::fsm::catalog::Health;
use crate::ids::{CheckId, Index, PersistToken, ReqId, RunId, Term};
use crate::raft::Entry;
use crate::rpc::PeerMessage;
use crate::time::{Duration, Time};

/// Something that happened, handed to `Node::step` with the time it happened.
#[derive(Debug)]
pub enum Input {
    /// Time passed; the node's earliest timer may be due. Extra ticks are harmless.
    Tick,
    /// An API request (HTTP or DNS) decoded by the host.
    Request { id: ReqId, req: ApiRequest },
    /// The outcome of a `RunCheck`.
    CheckResult { check: CheckId, run: RunId, status: Health, output: String },
    /// The persist with this token (and all before it) is durable.
    Persisted { token: PersistToken },
    /// A message from another server (`from` is its Raft id, `host:port`).
    Peer { from: String, msg: PeerMessage },
    /// A `Send` the host could not deliver (no connection could be made): the message
    /// never left, so work it carried may safely be sent again.
    Undelivered { to: String, msg: PeerMessage },
    /// The persist failed; the node fail-stops rather than lie about durability.
    PersistFailed { token: PersistToken },
    /// Bytes arrived on a gossip port: a datagram, or one frame read from a stream.
    Gossip { pool: Pool, from: String, bytes: Vec<u8>, stream: bool },
    /// A gossip stream to `to` could not be opened or written (`tag` as the send gave it).
    GossipUnreachable { pool: Pool, to: String, tag: Option<u64> },
    /// The host wants the node to shut down cleanly.
    Shutdown,
}

/// The two gossip pools: every agent's datacenter-wide LAN pool, and the servers' WAN pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pool {
    Lan,
    Wan,
}

/// Something the host must do, in the order given.
#[derive(Debug, PartialEq)]
pub enum Effect {
    /// Wake the node with `Input::Tick` at `at` (replaces any earlier request).
    SetTimer { at: Time },
    /// Make this durable, then answer `Persisted { token }`.
    Persist { token: PersistToken, op: PersistOp },
    /// Send `msg` to server `to` (best effort: Raft tolerates loss, and forwards time out).
    Send { to: String, msg: PeerMessage },
    /// Answer request `id`.
    Respond { id: ReqId, resp: ApiResponse },
    /// Run one check probe with this deadline and answer `CheckResult`.
    RunCheck { check: CheckId, run: RunId, spec: CheckSpec, timeout: Duration },
    /// Stop any run of this check still in flight; its result no longer matters.
    CancelCheck { check: CheckId },
    /// Send gossip bytes to `to` (`host:port`): a datagram, or one frame over a fresh
    /// stream. If a stream cannot be delivered, answer `GossipUnreachable` with `tag`.
    Gossip { pool: Pool, to: String, bytes: Vec<u8>, stream: bool, tag: Option<u64> },
    /// The agent left its pools gracefully (`/v1/agent/leave`): the host should stop.
    Exit,
    /// The gossip keyring changed: keep these keys (base64, the primary first) where the
    /// agent will find them at its next start (the data dir), or the agent may not be able
    /// to rejoin a pool that has rotated away from its `encrypt` key.
    SaveKeyring { keys: Vec<String> },
    /// The services and checks registered through the API changed: keep these where the
    /// agent will find them at its next start (the data dir).
    SaveAgentState { defs: crate::agent::SavedDefs },
    /// Something worth telling observers (logs, the simulator's checkers).
    Emit(Event),
}

/// Writes a node asks its host to make durable, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum PersistOp {
    /// Append these entries (indexes continue the log; an index at or below the current last
    /// one replaces that suffix).
    AppendLog { entries: Vec<Entry> },
    /// The term and vote, which must survive a restart before any message depends on them.
    HardState { term: Term, voted_for: Option<String> },
    /// A snapshot as of `index` (the replica's image: the membership then and the state
    /// machine's bytes). Once durable, log entries at or below `index` are no longer needed;
    /// see `raft::disk::apply` for what it keeps.
    ///
    /// One the log continues (it holds the entry at `index` with `term`, as after the node's
    /// own snapshot) loses nothing if a crash takes it: the log still holds what it covers,
    /// for as long as it is not durable. So a host may write it beside the ops after it and
    /// acknowledge those first, provided no entry at or below `index` leaves the log before
    /// the snapshot is durable. One that replaces the log is written in order like any op.
    Snapshot { index: Index, term: Term, data: crate::raft::SnapshotData },
}

/// What a host read back from disk at start: the latest snapshot, the hard state, and the
/// log entries after the snapshot, in index order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recovered {
    pub hard_state: Option<(Term, Option<String>)>,
    pub snapshot: Option<(Index, Term, Vec<u8>)>,
    pub entries: Vec<Entry>,
}

/// Observations for logs and checkers; they never feed behaviour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    BecameLeader {
        term: Term,
    },
    Applied {
        index: Index,
    },
    CheckChanged {
        check: CheckId,
        status: Health,
    },
    ServiceDeregistered {
        service_id: String,
        reason: String,
    },
    /// A gossip member changed (joined, failed, left, reaped).
    Member {
        pool: Pool,
        name: String,
        change: crate::gossip::Change,
    },
    /// Gossip bytes that did not decode (garbage, wrong key) were dropped.
    GossipDropped {
        pool: Pool,
        from: String,
        reason: String,
    },
    Stopped,
    Failed {
        reason: String,
    },
}
