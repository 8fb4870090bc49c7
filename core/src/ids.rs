//! Identifiers that say what they are: log indexes, request ids, check runs, persist tokens.
//!
//! Owns only the newtypes; never allocates or interprets them beyond ordering.

use serde::{Deserialize, Serialize};

/// A Raft log index. Every state change gets the next one; `X-Consul-Index` is one of these.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Index(pub u64);

impl Index {
    pub const ZERO: Index = Index(0);
    pub fn next(self) -> Index {
        Index(self.0 + 1)
    }
}

/// A Raft term.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Term(pub u64);

/// Names one host request (an HTTP or DNS query) so its response can find its way back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ReqId(pub u64);

/// Names one run of one check, so a late result of an earlier run is recognised and dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunId(pub u64);

/// Names one persist request; the host answers `Persisted` with it, in token order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PersistToken(pub u64);

/// A check's ID as the API spells it (`service:web1`, `mem-util`).
pub type CheckId = String;
