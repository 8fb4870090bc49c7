//! The in-memory Raft log: the entries after the last compaction point.
//!
//! Owns the entries, their term lookup, appends with conflict truncation (§5.3 of the Raft
//! paper), slices for replication and commit, and compaction. Never persists anything and
//! never decides what is committed: the replica tells it what to hold and asks it questions.

use std::collections::VecDeque;

use super::Entry;
use crate::ids::{Index, Term};

/// Entries `offset+1 ..= last_index()`, plus the term of `offset` (the last entry folded
/// into a snapshot or compacted away), which is all AppendEntries needs to check a prefix.
#[derive(Debug, Clone)]
pub struct Log {
    offset: Index,
    offset_term: Term,
    /// `stale` compacted entries, then entries `offset+1 ..`.
    entries: VecDeque<Entry>,
    /// Compacted entries not yet freed. Freeing (or moving) a snapshot interval's entries at
    /// once held the node's loop for milliseconds, so appends free them a few at a time
    /// instead; they are never read.
    stale: usize,
}

/// How many compacted entries each append frees: more than one, so the backlog is gone
/// well before the next compaction adds to it.
const FREE_PER_APPEND: usize = 2;

impl Log {
    /// A log that is empty, or holds only what a snapshot at `(offset, offset_term)` covers.
    pub fn starting_at(offset: Index, offset_term: Term) -> Log {
        Log { offset, offset_term, entries: VecDeque::new(), stale: 0 }
    }

    /// The last index no longer held as an entry (compacted or covered by a snapshot).
    pub fn offset(&self) -> Index {
        self.offset
    }

    pub fn last_index(&self) -> Index {
        self.last().map_or(self.offset, |e| e.index)
    }

    pub fn last_term(&self) -> Term {
        self.last().map_or(self.offset_term, |e| e.term)
    }

    fn last(&self) -> Option<&Entry> {
        self.entries.back().filter(|_| self.entries.len() > self.stale)
    }

    /// The term at `index`, if it is the offset or a held entry.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        if index == self.offset {
            return Some(self.offset_term);
        }
        self.entry(index).map(|e| e.term)
    }

    pub fn entry(&self, index: Index) -> Option<&Entry> {
        let pos = index.0.checked_sub(self.offset.0 + 1)?;
        self.entries.get(usize::try_from(pos).ok()?.checked_add(self.stale)?)
    }

    /// Up to `max` entries starting at `from` (empty if `from` is not held).
    pub fn entries_from(&self, from: Index, max: usize) -> Vec<Entry> {
        let Some(start) = from.0.checked_sub(self.offset.0 + 1) else { return Vec::new() };
        let start =
            usize::try_from(start).unwrap_or(usize::MAX).saturating_add(self.stale).min(self.entries.len());
        let end = start.saturating_add(max).min(self.entries.len());
        self.entries.range(start..end).cloned().collect()
    }

    /// Entries `from ..= to`, all of which must be held.
    pub fn range(&self, from: Index, to: Index) -> Vec<Entry> {
        let n = to.0.saturating_sub(from.0 - 1) as usize;
        let slice = self.entries_from(from, n);
        assert_eq!(slice.len(), n, "range {from:?}..={to:?} is not held (offset {:?})", self.offset);
        slice
    }

    /// Appends one entry at the end (the leader's path: a leader never overwrites).
    pub fn push(&mut self, entry: Entry) {
        assert_eq!(entry.index, self.last_index().next(), "log append out of order");
        assert!(entry.term >= self.last_term(), "log terms never go down");
        self.entries.push_back(entry);
        let free = FREE_PER_APPEND.min(self.stale);
        self.entries.drain(..free);
        self.stale -= free;
    }

    /// Merges entries a leader sent (contiguous, following a prefix already known to match).
    /// Entries already held with the same term are kept; from the first one that differs,
    /// the held suffix is dropped and the rest appended. Returns the entries written, which
    /// the caller must persist, and empty if the log already had them all.
    pub fn merge(&mut self, entries: &[Entry]) -> Vec<Entry> {
        let Some(first_new) =
            entries.iter().position(|e| e.index > self.offset && self.term_at(e.index) != Some(e.term))
        else {
            return Vec::new();
        };
        let from = entries[first_new].index;
        self.truncate_from(from);
        for e in &entries[first_new..] {
            self.push(e.clone());
        }
        entries[first_new..].to_vec()
    }

    /// Drops every entry at or after `from`.
    fn truncate_from(&mut self, from: Index) {
        assert!(from > self.offset, "truncating below the offset");
        let keep = (from.0 - self.offset.0 - 1) as usize;
        self.entries.truncate(self.stale + keep);
    }

    /// Forgets entries at or below `upto` (they live on in a snapshot).
    pub fn compact(&mut self, upto: Index) {
        if upto <= self.offset {
            return;
        }
        let term = self.term_at(upto).expect("compacting to an index the log holds");
        self.stale += (upto.0 - self.offset.0) as usize;
        self.offset = upto;
        self.offset_term = term;
    }

    /// The largest index at or below `upto` whose term is at most `term`, or `None` when
    /// even the offset's term is above it (or `upto` is below the offset). Terms never go
    /// down along a log, so this is a binary search.
    pub fn last_with_term_at_most(&self, upto: Index, term: Term) -> Option<Index> {
        if upto < self.offset || self.offset_term > term {
            return None;
        }
        let upto = upto.min(self.last_index());
        let held = (upto.0 - self.offset.0) as usize;
        // Stale entries come first and have terms at most the offset's, so they all pass.
        let n = (self.entries.partition_point(|e| e.term <= term) - self.stale).min(held);
        Some(Index(self.offset.0 + n as u64))
    }

    /// Whether a log ending at `(last_index, last_term)` is at least as up to date as this
    /// one (§5.4.1): a later last term wins, equal terms compare length.
    pub fn candidate_up_to_date(&self, last_index: Index, last_term: Term) -> bool {
        (last_term, last_index) >= (self.last_term(), self.last_index())
    }
}

/// Whether `entries` can follow `(prev_index, prev_term)` in a leader of `term`'s log:
/// consecutive indexes, terms never going down and never above the leader's term.
pub fn well_formed(prev_index: Index, prev_term: Term, entries: &[Entry], term: Term) -> bool {
    let mut last = (prev_index, prev_term);
    for e in entries {
        if e.index != last.0.next() || e.term < last.1 || e.term > term {
            return false;
        }
        last = (e.index, e.term);
    }
    prev_term <= term
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::Command;

    fn e(index: u64, term: u64) -> Entry {
        Entry { term: Term(term), index: Index(index), command: Command::Noop }
    }

    fn log_of(terms: &[u64]) -> Log {
        let mut l = Log::starting_at(Index::ZERO, Term(0));
        for (i, t) in terms.iter().enumerate() {
            l.push(e(i as u64 + 1, *t));
        }
        l
    }

    #[test]
    fn merge_keeps_matching_entries_and_truncates_at_the_first_conflict() {
        let mut l = log_of(&[1, 1, 2, 2]);
        assert!(l.merge(&[e(2, 1), e(3, 2)]).is_empty(), "a stale, shorter batch changes nothing");
        assert_eq!(l.last_index(), Index(4));
        let written = l.merge(&[e(3, 2), e(4, 3), e(5, 3)]);
        assert_eq!(written, vec![e(4, 3), e(5, 3)]);
        assert_eq!(l.term_at(Index(4)), Some(Term(3)));
        assert_eq!(l.last_index(), Index(5));
    }

    #[test]
    fn compacted_entries_are_freed_a_few_per_append() {
        let mut l = log_of(&[1; 10]);
        l.compact(Index(8));
        assert_eq!((l.stale, l.entries.len(), l.last_index()), (8, 10, Index(10)));
        assert_eq!(l.term_at(Index(7)), None);
        l.push(e(11, 1));
        assert_eq!((l.stale, l.entries.len()), (8 - FREE_PER_APPEND, 11 - FREE_PER_APPEND));
        for i in 12..=20 {
            l.push(e(i, 1));
        }
        assert_eq!((l.stale, l.entries.len()), (0, 12));
        assert_eq!(l.entries_from(Index(9), 3), vec![e(9, 1), e(10, 1), e(11, 1)]);
        assert_eq!(l.entries_from(Index(19), 5), vec![e(19, 1), e(20, 1)]);
        l.compact(Index(20));
        assert_eq!(
            (l.last_index(), l.last_term(), l.entries_from(Index(20), 5)),
            (Index(20), Term(1), vec![])
        );
        assert_eq!(l.last_with_term_at_most(Index(20), Term(1)), Some(Index(20)));
        l.push(e(21, 2));
        assert_eq!((l.last_index(), l.entries_from(Index(21), 5)), (Index(21), vec![e(21, 2)]));
    }

    #[test]
    fn compaction_keeps_the_offset_term() {
        let mut l = log_of(&[1, 1, 2, 3]);
        l.compact(Index(2));
        assert_eq!((l.offset(), l.term_at(Index(2))), (Index(2), Some(Term(1))));
        assert_eq!(l.term_at(Index(1)), None);
        assert_eq!(l.entries_from(Index(1), 10), vec![]);
        assert_eq!(l.entries_from(Index(3), 10), vec![e(3, 2), e(4, 3)]);
        assert_eq!(l.range(Index(4), Index(4)), vec![e(4, 3)]);
    }

    #[test]
    fn finds_the_last_index_with_a_term_at_most() {
        let l = log_of(&[1, 1, 2, 2, 4, 4]);
        assert_eq!(l.last_with_term_at_most(Index(6), Term(3)), Some(Index(4)));
        assert_eq!(l.last_with_term_at_most(Index(3), Term(3)), Some(Index(3)));
        assert_eq!(l.last_with_term_at_most(Index(9), Term(9)), Some(Index(6)));
        assert_eq!(l.last_with_term_at_most(Index(6), Term(0)), Some(Index(0)));
        let mut c = l.clone();
        c.compact(Index(3));
        assert_eq!(c.last_with_term_at_most(Index(6), Term(1)), None);
        assert_eq!(c.last_with_term_at_most(Index(2), Term(9)), None);
    }

    #[test]
    fn well_formed_batches() {
        assert!(well_formed(Index(2), Term(1), &[e(3, 1), e(4, 2)], Term(2)));
        assert!(!well_formed(Index(2), Term(1), &[e(4, 1)], Term(2)), "gap");
        assert!(!well_formed(Index(2), Term(2), &[e(3, 1)], Term(2)), "term goes down");
        assert!(!well_formed(Index(2), Term(1), &[e(3, 3)], Term(2)), "term above the leader's");
    }
}
