//! What each persist op of a `Replica` means on disk, as an executable reference for hosts.
//!
//! Owns one function: apply an op to the `Recovered` image a host would read back after a
//! restart. The simulator's disk and the tests use it; a real host implements the same
//! rules over files. Never does IO itself.

use crate::io::{PersistOp, Recovered};

/// Applies one durable write to `disk`:
/// - `AppendLog` replaces the logged suffix from its first index on;
/// - `HardState` replaces the term and vote;
/// - `Snapshot` replaces the snapshot and keeps the logged entries above its index only if
///   the entry at its index has its term (the log then continues the snapshot); otherwise
///   the whole log is dropped, as a follower installing a leader's snapshot requires.
pub fn apply(disk: &mut Recovered, op: PersistOp) {
    match op {
        PersistOp::AppendLog { entries } => {
            if let Some(first) = entries.first() {
                disk.entries.retain(|e| e.index < first.index);
            }
            disk.entries.extend(entries);
        }
        PersistOp::HardState { term, voted_for } => disk.hard_state = Some((term, voted_for)),
        PersistOp::Snapshot { index, term, data } => {
            let continues = disk.entries.iter().any(|e| e.index == index && e.term == term);
            if continues {
                disk.entries.retain(|e| e.index > index);
            } else {
                disk.entries.clear();
            }
            disk.snapshot = Some((index, term, data.bytes().to_vec()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Command;
    use crate::ids::{Index, Term};
    use crate::raft::Entry;

    fn e(index: u64, term: u64) -> Entry {
        Entry { term: Term(term), index: Index(index), command: Command::Noop }
    }

    #[test]
    fn appends_replace_the_suffix_and_snapshots_keep_only_a_continuing_log() {
        let mut d = Recovered::default();
        apply(&mut d, PersistOp::AppendLog { entries: vec![e(1, 1), e(2, 1), e(3, 1)] });
        apply(&mut d, PersistOp::AppendLog { entries: vec![e(2, 2)] });
        assert_eq!(d.entries, vec![e(1, 1), e(2, 2)]);
        apply(&mut d, PersistOp::AppendLog { entries: vec![e(3, 2), e(4, 2)] });
        apply(&mut d, PersistOp::Snapshot { index: Index(2), term: Term(2), data: vec![].into() });
        assert_eq!(d.entries, vec![e(3, 2), e(4, 2)]);
        apply(&mut d, PersistOp::Snapshot { index: Index(4), term: Term(3), data: vec![].into() });
        assert!(d.entries.is_empty(), "a snapshot that does not continue the log replaces it");
    }
}
