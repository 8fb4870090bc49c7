//! The replicated state machine: commands from the log applied, in order, to the tables.
//!
//! Owns `Command` (what the log carries) and `State::apply`, which is pure and deterministic:
//! the same commands in the same order give byte-identical tables on every replica. Never
//! reads time or randomness; anything that needs either is stamped into the command by the
//! proposer. Never answers API requests (that is `server`), only says what an apply did.

pub mod catalog;
pub mod coordinates;
pub mod kv;

use serde::{Deserialize, Serialize};

use crate::ids::Index;
use catalog::{Catalog, CatalogError, Deregistration, Registration};
use coordinates::{CoordinateEntry, Coordinates};
use kv::{KvError, KvSetMode, KvTable};

/// One entry of the replicated log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Written by a new leader at the start of its term.
    Noop,
    KvSet {
        key: String,
        value: Vec<u8>,
        flags: u64,
        mode: KvSetMode,
    },
    KvDelete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
    Register(Box<Registration>),
    Deregister(Deregistration),
    /// Agents' network coordinates (for nodes the catalog holds).
    Coordinates(Vec<CoordinateEntry>),
    /// A Raft membership: who votes and who only replicates. Raft acts on it when it is
    /// appended; the tables ignore it.
    Config {
        voters: Vec<String>,
        non_voters: Vec<String>,
    },
}

/// What applying one command did, for the proposer's reply and for waking watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub index: Index,
    pub outcome: Outcome,
    pub touched: Touched,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// `true`/`false` as the API answers (CAS and lock results).
    Bool(bool),
    Kv(KvError),
    Catalog(CatalogError),
}

/// Which reads an apply may have changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Touched {
    Nothing,
    /// A KV key, or with `prefix` every key under it.
    Kv {
        key: String,
        prefix: bool,
    },
    Catalog,
    Coordinates,
}

/// All replicated tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub kv: KvTable,
    pub catalog: Catalog,
    pub coordinates: Coordinates,
    applied: Index,
}

impl State {
    pub fn applied(&self) -> Index {
        self.applied
    }

    /// Applies the command at `index`. Indexes must rise by one: a gap is a broken log.
    pub fn apply(&mut self, index: Index, cmd: &Command) -> Applied {
        assert!(index > self.applied, "apply out of order: {index:?} after {:?}", self.applied);
        self.applied = index;
        let (outcome, touched) = match cmd {
            Command::Noop => (Outcome::Bool(true), Touched::Nothing),
            Command::KvSet { key, value, flags, mode } => {
                // Sessions arrive with their own issue; until then no session is live.
                let r = self.kv.set(index, key, value, *flags, mode, |_| false);
                let touched = Touched::Kv { key: key.clone(), prefix: false };
                (r.map_or_else(Outcome::Kv, Outcome::Bool), touched)
            }
            Command::KvDelete { key, recurse, cas } => {
                let ok = self.kv.delete(index, key, *recurse, *cas);
                (Outcome::Bool(ok), Touched::Kv { key: key.clone(), prefix: *recurse })
            }
            Command::Register(r) => {
                let res = self.catalog.register(index, r);
                (res.map_or_else(Outcome::Catalog, |()| Outcome::Bool(true)), Touched::Catalog)
            }
            Command::Deregister(d) => {
                self.catalog.deregister(index, d);
                if d.service_id.is_none() && d.check_id.is_none() {
                    self.coordinates.remove_node(index, &d.node);
                }
                (Outcome::Bool(true), Touched::Catalog)
            }
            Command::Coordinates(entries) => {
                let stored = self.coordinates.update(index, entries, &self.catalog);
                (Outcome::Bool(stored > 0), Touched::Coordinates)
            }
            Command::Config { .. } => (Outcome::Bool(true), Touched::Nothing),
        };
        Applied { index, outcome, touched }
    }

    /// A digest of the whole state, equal on replicas at the same applied index.
    pub fn digest(&self) -> u64 {
        let bytes = postcard::to_allocvec(self).expect("state always encodes");
        fnv1a(&bytes)
    }
}

/// FNV-1a: a small stable hash for digests that must not change between builds.
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_commands_same_digest() {
        let cmds = [
            Command::KvSet { key: "a".into(), value: b"1".to_vec(), flags: 0, mode: KvSetMode::Set },
            Command::KvDelete { key: "a".into(), recurse: false, cas: None },
            Command::Noop,
        ];
        let run = || {
            let mut s = State::default();
            for (i, c) in cmds.iter().enumerate() {
                s.apply(Index(i as u64 + 1), c);
            }
            s.digest()
        };
        assert_eq!(run(), run());
    }

    #[test]
    #[should_panic(expected = "apply out of order")]
    fn out_of_order_apply_is_a_broken_invariant() {
        let mut s = State::default();
        s.apply(Index(2), &Command::Noop);
        s.apply(Index(1), &Command::Noop);
    }
}
