//! Raft's invariants, checked from outside the nodes as a run goes, and durability at its end.
//!
//! Election safety (one leader per term, from the nodes' own announcements and from who
//! sends AppendEntries on the wire); log matching (an (index, term) ledger: one entry per
//! pair, always after an entry of the same term, so logs that share an entry share
//! everything before it); state-machine safety (one committed entry per index, equal
//! `State::digest()` at equal applied index); leader completeness (a new leader holds every
//! committed entry); durability (every acknowledged write is committed and applied
//! everywhere at the end, and no write answered as surely failed ever commits).

use std::collections::BTreeMap;

use muster_core::fsm::{fnv1a, Command};
use muster_core::ids::{Index, Term};
use muster_core::raft::{Entry, Message};

use super::{read_value, Env, Outcome};
use crate::lin::OpKind;

#[derive(Debug, Default)]
pub(crate) struct Ledger {
    leaders: BTreeMap<Term, usize>,
    wire_leaders: BTreeMap<Term, usize>,
    /// (index, term) → (entry hash, the term of the entry before it, once seen).
    entries: BTreeMap<(Index, Term), (u64, Option<Term>)>,
    /// Index → (entry term, entry hash, the earliest term a node reported it committed in).
    committed: BTreeMap<Index, (Term, u64, Term)>,
    /// The index of each committed KV write, by its (unique) value.
    values: BTreeMap<u64, Index>,
    digests: BTreeMap<Index, u64>,
}

fn entry_hash(e: &Entry) -> u64 {
    fnv1a(&postcard::to_allocvec(&e.command).expect("commands encode"))
}

impl<L> Env<L> {
    /// Election safety on the wire: AppendEntries of one term come from one sender.
    pub fn check_wire(&mut self, node: usize, msg: &Message) -> Result<(), String> {
        if let Message::AppendEntries { term, entries, prev_term, .. } = msg {
            let first = *self.ledger.wire_leaders.entry(*term).or_insert(node);
            if first != node {
                return self.fail(format!(
                    "election safety: n{first} and n{node} both sent AppendEntries in {term:?}"
                ));
            }
            self.check_entries(Some(*prev_term), entries)?;
        }
        Ok(())
    }

    /// Log matching, wherever a run of entries is seen: one entry per (index, term), and the
    /// entry before it always of the same term (`prev`, the term before the first, when
    /// known). By induction two logs sharing an entry then share everything before it.
    pub fn check_entries(&mut self, mut prev: Option<Term>, entries: &[Entry]) -> Result<(), String> {
        for e in entries {
            let h = entry_hash(e);
            let seen = self.ledger.entries.entry((e.index, e.term)).or_insert((h, prev));
            if seen.0 != h {
                return self
                    .fail(format!("log matching: two different entries at {:?} in {:?}", e.index, e.term));
            }
            match (seen.1, prev) {
                (Some(a), Some(b)) if a != b => {
                    return self.fail(format!(
                        "log matching: the entry at {:?} in {:?} follows {a:?} in one log, {b:?} in another",
                        e.index, e.term
                    ))
                }
                (None, Some(_)) => seen.1 = prev,
                _ => {}
            }
            prev = Some(e.term);
        }
        Ok(())
    }

    /// `node` announced it leads `term`: election safety, and leader completeness (every
    /// entry committed in an earlier term is in its log, `log_term` of which answers from
    /// `first` to `last`; below `first`, its snapshot holds it).
    pub fn elected(
        &mut self,
        node: usize,
        term: Term,
        (first, last): (Index, Index),
        log_term: impl Fn(Index) -> Option<Term>,
    ) -> Result<(), String> {
        self.stats.terms += 1;
        if let Some(other) = self.ledger.leaders.insert(term, node) {
            if other != node {
                return self.fail(format!("election safety: n{other} and n{node} both lead {term:?}"));
            }
        }
        for (index, (t, _, committed_in)) in self.ledger.committed.range(first..) {
            let held = *index <= last && log_term(*index).is_none_or(|have| have == *t);
            if *committed_in < term && !held {
                return self.fail(format!(
                    "leader completeness: n{node} leads {term:?} without committed {index:?}"
                ));
            }
        }
        Ok(())
    }

    /// `node`, in `term`, applies committed entry `e`: one entry per index.
    pub fn committed(&mut self, node: usize, e: &Entry, term: Term) -> Result<(), String> {
        let h = entry_hash(e);
        let first = *self.ledger.committed.entry(e.index).or_insert((e.term, h, term));
        if (first.0, first.1) != (e.term, h) {
            return self
                .fail(format!("state-machine safety: n{node} committed a different entry at {:?}", e.index));
        }
        if let Command::KvSet { value, .. } = &e.command {
            self.ledger.values.insert(read_value(value), e.index);
        }
        self.stats.max_commit = self.stats.max_commit.max(e.index.0);
        Ok(())
    }

    /// `node`'s state at `index` has this digest: equal at equal index everywhere. `how`
    /// says how it got there ("state", or "installed" for a snapshot).
    pub fn check_digest(&mut self, node: usize, index: Index, digest: u64, how: &str) -> Result<(), String> {
        if *self.ledger.digests.entry(index).or_insert(digest) != digest {
            return self.fail(format!("state-machine safety: n{node}'s {how} differs at {index:?}"));
        }
        Ok(())
    }

    /// At the end, with every node applied through `applied`: every acknowledged write is
    /// committed and applied everywhere; no write answered as surely failed committed.
    pub fn check_durability(&self, applied: Index) -> Result<(), String> {
        for (i, o) in self.ops.iter().enumerate() {
            let value = match o.kind {
                OpKind::Write(v) | OpKind::Cas { new: v, .. } => v,
                _ => continue,
            };
            let index = self.ledger.values.get(&value);
            match (o.outcome, index) {
                (Outcome::Ok, None) => {
                    return self.fail(format!(
                        "durability: acknowledged write op {i} is not in the committed ledger"
                    ))
                }
                (Outcome::Ok, Some(index)) if *index > applied => {
                    return self
                        .fail(format!("durability: acknowledged write at {index:?} not applied everywhere"))
                }
                (Outcome::Fail, Some(index)) => {
                    return self
                        .fail(format!("op {i} was answered as surely failed, yet committed at {index:?}"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}
