//! The messages Raft replicas exchange, and their postcard encoding.
//!
//! Owns the wire vocabulary: PreVote and votes, AppendEntries (which doubles as the heartbeat
//! and carries the read round), its answer, and InstallSnapshot. Never decides anything: what
//! a message means to a replica is `replica`'s and its helpers' business. Decoding never
//! panics; a bad frame is an error the caller counts and drops.

use serde::{Deserialize, Serialize};

use super::Entry;
use crate::ids::{Index, Term};

/// One Raft message between replicas. `from` travels beside it (`RaftInput::Message`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// "Would you vote for me in `term`?" asked without changing anyone's term, so a node
    /// that was cut off cannot disrupt a healthy leader when it comes back (thesis §9.6).
    PreVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    /// `term` is the term asked about when granted, else the responder's own term.
    PreVoteResp {
        term: Term,
        granted: bool,
    },
    RequestVote {
        term: Term,
        last_index: Index,
        last_term: Term,
    },
    VoteResp {
        term: Term,
        granted: bool,
    },
    /// Entries after `(prev_index, prev_term)`; empty as a heartbeat. `read_ctx` names the
    /// leader's latest heartbeat round, echoed back to confirm leadership for reads.
    AppendEntries {
        term: Term,
        leader: String,
        prev_index: Index,
        prev_term: Term,
        entries: Vec<Entry>,
        commit: Index,
        read_ctx: u64,
    },
    AppendResp {
        term: Term,
        read_ctx: u64,
        result: AppendResult,
    },
    /// The whole state as of `index` (a snapshot image, see `snapshot`), for a follower
    /// whose next entry the leader no longer holds.
    InstallSnapshot {
        term: Term,
        leader: String,
        index: Index,
        term_of_index: Term,
        data: Vec<u8>,
        read_ctx: u64,
    },
    /// The follower's log now matches the leader's through `index`.
    InstallSnapshotResp {
        term: Term,
        index: Index,
        read_ctx: u64,
    },
}

/// How a follower answered AppendEntries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AppendResult {
    /// The follower's log matches the leader's through `index`, durably.
    Matched { index: Index },
    /// The follower has no entry `(prev_index, prev_term)`. Its log can only match the
    /// leader's at or below `hint_index`, where it holds an entry of `hint_term`: the leader
    /// skips back past every index whose term is above `hint_term` in one round trip.
    Rejected { prev_index: Index, hint_index: Index, hint_term: Term },
}

/// Why bytes did not decode as a `Message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad raft message: {0}")]
pub struct DecodeError(String);

impl Message {
    /// The term the sender was in.
    pub fn term(&self) -> Term {
        match self {
            Message::PreVote { term, .. }
            | Message::PreVoteResp { term, .. }
            | Message::RequestVote { term, .. }
            | Message::VoteResp { term, .. }
            | Message::AppendEntries { term, .. }
            | Message::AppendResp { term, .. }
            | Message::InstallSnapshot { term, .. }
            | Message::InstallSnapshotResp { term, .. } => *term,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("raft messages always encode")
    }

    pub fn decode(bytes: &[u8]) -> Result<Message, DecodeError> {
        postcard::from_bytes(bytes).map_err(|e| DecodeError(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Command;

    #[test]
    fn round_trips_and_rejects_garbage() {
        let m = Message::AppendEntries {
            term: Term(3),
            leader: "a".into(),
            prev_index: Index(4),
            prev_term: Term(2),
            entries: vec![Entry { term: Term(3), index: Index(5), command: Command::Noop }],
            commit: Index(4),
            read_ctx: 9,
        };
        assert_eq!(Message::decode(&m.encode()), Ok(m));
        assert!(Message::decode(&[0xff, 0xff, 0xff]).is_err());
        assert!(Message::decode(&[]).is_err());
    }
}
