//! Raft: the replicated log that every state change goes through.
//!
//! Owns the log entry type and the parts of one participant (`Replica`): elections,
//! replication, reads, snapshots, membership and durability ordering. A lone server is a
//! one-voter cluster. Never applies entries itself and never touches disk: it hands committed
//! entries to the caller and asks the host through `Persist`.

pub mod disk;
mod durability;
mod election;
pub mod log;
pub mod membership;
pub mod message;
mod read;
pub mod replica;
mod replication;
mod snapshot;
mod snapshot_data;

pub use membership::{Membership, MembershipChange};
pub use message::{AppendResult, Message};
pub use replica::{
    ConfigError, DebugState, ProposeError, RaftInput, RaftOutput, RecoverError, Replica, ReplicaConfig, Role,
};
pub use snapshot_data::SnapshotData;

use serde::{Deserialize, Serialize};

use crate::fsm::Command;
use crate::ids::{Index, Term};

/// One log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub term: Term,
    pub index: Index,
    pub command: Command,
}
