//! Linearizability of a key-value history: Wing & Gong's search with Lowe's memoisation.
//!
//! Owns the history vocabulary (`KvOp`), the per-key register model, and the search. The
//! history is split per key (linearizability is compositional, so each key is checked on
//! its own). Within a key, the search walks the call/return events in time order, tries to
//! linearize each pending call whose effect agrees with the model, backtracks when an
//! operation returns without having been linearized, and remembers every (set of linearized
//! ops, register value) it has already explored so it never explores it twice. Operations
//! with an unknown outcome (`info`) return at infinity: they may take effect at any moment
//! after their call, or never. A search that runs out of budget answers `Unknown`, never
//! `Ok`. Never looks at the system under test: it sees only the history.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The verdict on a whole history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinResult {
    Ok,
    Violation(String),
    /// The search budget ran out before a verdict.
    Unknown,
}

/// One completed-or-not operation on one key. Times are the world's global nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvOp {
    pub key: String,
    pub kind: OpKind,
    pub invoke: u64,
    /// When the answer came back; `None` for an `info` operation (its outcome is unknown).
    pub ret: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    /// Wrote this (unique) value.
    Write(u64),
    /// Read and saw this value (`None`: the key was absent).
    Read(Option<u64>),
    /// Removed the key.
    Delete,
    /// Wrote `new` if the key held `expect` (`None`: absent); `swapped` is the answer, `None`
    /// while unknown.
    Cas { expect: Option<u64>, new: u64, swapped: Option<bool> },
}

impl OpKind {
    /// Whether the operation may change the register.
    pub fn is_write(self) -> bool {
        !matches!(self, OpKind::Read(_))
    }

    /// What the register holds after this operation, if it takes effect.
    fn writes(self) -> Option<Option<u64>> {
        match self {
            OpKind::Write(v) | OpKind::Cas { new: v, .. } => Some(Some(v)),
            OpKind::Delete => Some(None),
            OpKind::Read(_) => None,
        }
    }
}

/// Checks every key's sub-history, spending at most `budget` search steps on each.
///
/// An `info` write whose result no read saw and no CAS expected is left out first when no
/// CAS that answered `false` returned after its call: it can then always be linearized
/// after everything else (with any `info` CAS that did nothing while its value stood), where
/// it changes no outcome, so the history is linearizable with it exactly when it is without
/// it. A failed CAS could need it as the value that made it fail, hence that condition.
/// Left in, each one would double the space the search may have to explore.
pub fn check(ops: &[KvOp], budget: u64) -> LinResult {
    let mut observed: BTreeSet<(&str, Option<u64>)> = BTreeSet::new();
    let mut last_failed_cas: BTreeMap<&str, u64> = BTreeMap::new();
    for o in ops {
        let key = o.key.as_str();
        match o.kind {
            OpKind::Read(seen) => {
                observed.insert((key, seen));
            }
            OpKind::Cas { expect, swapped, .. } => {
                observed.insert((key, expect));
                if swapped == Some(false) {
                    let ret = o.ret.unwrap_or(u64::MAX);
                    let last = last_failed_cas.entry(key).or_default();
                    *last = (*last).max(ret);
                }
            }
            _ => {}
        }
    }
    let mut by_key: BTreeMap<&str, Vec<&KvOp>> = BTreeMap::new();
    for op in ops {
        let key = op.key.as_str();
        let unseen_info = op.ret.is_none()
            && op.kind.writes().is_some_and(|w| !observed.contains(&(key, w)))
            && last_failed_cas.get(key).is_none_or(|ret| *ret < op.invoke);
        if !unseen_info {
            by_key.entry(key).or_default().push(op);
        }
    }
    let mut unknown = false;
    for (key, ops) in by_key {
        match check_register(&ops, budget) {
            Some(true) => {}
            Some(false) => {
                return LinResult::Violation(format!(
                    "key {key:?}: no linearization of its {} ops",
                    ops.len()
                ))
            }
            None => unknown = true,
        }
    }
    if unknown {
        LinResult::Unknown
    } else {
        LinResult::Ok
    }
}

/// The register model: a write or delete always succeeds; a read must see the current
/// value; a CAS swaps exactly when the register holds what it expects, and must have
/// answered so (an unknown answer fits either way).
fn apply(state: Option<u64>, kind: OpKind) -> Option<Option<u64>> {
    match kind {
        OpKind::Write(_) | OpKind::Delete => kind.writes(),
        OpKind::Read(seen) => (seen == state).then_some(state),
        OpKind::Cas { expect, new, swapped } => {
            let hit = state == expect;
            if swapped.is_some_and(|s| s != hit) {
                return None;
            }
            Some(if hit { Some(new) } else { state })
        }
    }
}

/// One call or return in the time-ordered event list.
struct Event {
    op: usize,
    call: bool,
}

/// `Some(linearizable?)`, or `None` when the budget ran out.
fn check_register(ops: &[&KvOp], budget: u64) -> Option<bool> {
    // Events sorted by time; at equal times calls come first, which treats operations that
    // touch at an instant as concurrent (the permissive reading).
    let mut order: Vec<(u64, u8, usize)> = Vec::with_capacity(ops.len() * 2);
    for (i, op) in ops.iter().enumerate() {
        order.push((op.invoke, 0, i));
        order.push((op.ret.unwrap_or(u64::MAX), 1, i));
    }
    order.sort_unstable();
    let events: Vec<Event> = order.iter().map(|&(_, kind, op)| Event { op, call: kind == 0 }).collect();
    // A doubly linked list over the events, slot k + 1 for event k, 0 the head, n + 1 the tail.
    let n = events.len();
    let (head, tail) = (0, n + 1);
    let mut next: Vec<usize> = (1..=n + 1).chain([tail]).collect();
    let mut prev: Vec<usize> = [0].into_iter().chain(0..=n).collect();
    let mut ret_slot = vec![0; ops.len()];
    for (k, e) in events.iter().enumerate() {
        if !e.call {
            ret_slot[e.op] = k + 1;
        }
    }
    let unlink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, s: usize| {
        let (p, q) = (prev[s], next[s]);
        next[p] = q;
        prev[q] = p;
    };
    let relink = |next: &mut Vec<usize>, prev: &mut Vec<usize>, s: usize| {
        let (p, q) = (prev[s], next[s]);
        next[p] = s;
        prev[q] = s;
    };

    let mut linearized = vec![0u64; ops.len().div_ceil(64)];
    let mut state: Option<u64> = None;
    let mut seen: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<u64>)> = Vec::new();
    let mut slot = next[head];
    let mut steps = 0u64;
    while next[head] != tail {
        steps += 1;
        if steps > budget {
            return None;
        }
        let is_call = slot != tail && events[slot - 1].call;
        if is_call {
            let op = events[slot - 1].op;
            if let Some(after) = apply(state, ops[op].kind) {
                let mut lin = linearized.clone();
                lin[op / 64] |= 1 << (op % 64);
                if seen.insert((lin.clone(), after)) {
                    stack.push((slot, state));
                    state = after;
                    linearized = lin;
                    unlink(&mut next, &mut prev, slot);
                    unlink(&mut next, &mut prev, ret_slot[op]);
                    slot = next[head];
                    continue;
                }
            }
            slot = next[slot];
        } else {
            // An operation returned before any linearization placed it: undo the last choice.
            let Some((call, before)) = stack.pop() else { return Some(false) };
            let op = events[call - 1].op;
            relink(&mut next, &mut prev, ret_slot[op]);
            relink(&mut next, &mut prev, call);
            linearized[op / 64] &= !(1 << (op % 64));
            state = before;
            slot = next[call];
        }
    }
    Some(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(key: &str, v: u64, invoke: u64, ret: Option<u64>) -> KvOp {
        KvOp { key: key.into(), kind: OpKind::Write(v), invoke, ret }
    }
    fn r(key: &str, v: Option<u64>, invoke: u64, ret: u64) -> KvOp {
        KvOp { key: key.into(), kind: OpKind::Read(v), invoke, ret: Some(ret) }
    }

    #[test]
    fn sequential_and_concurrent_histories() {
        let ok = [
            w("a", 1, 0, Some(10)),
            r("a", Some(1), 11, 20),
            w("a", 2, 15, Some(30)),
            r("a", Some(1), 16, 25),
        ];
        assert_eq!(check(&ok, 10_000), LinResult::Ok);
        let stale = [w("a", 1, 0, Some(10)), w("a", 2, 11, Some(20)), r("a", Some(1), 21, 30)];
        assert!(matches!(check(&stale, 10_000), LinResult::Violation(_)));
        let from_nowhere = [r("a", Some(7), 0, 5)];
        assert!(matches!(check(&from_nowhere, 10_000), LinResult::Violation(_)));
        assert_eq!(check(&[r("a", None, 0, 5)], 10_000), LinResult::Ok);
    }

    #[test]
    fn info_writes_may_apply_late_or_never() {
        let late = [w("a", 1, 0, None), r("a", None, 5, 10), r("a", Some(1), 50, 60)];
        assert_eq!(check(&late, 10_000), LinResult::Ok);
        let never = [w("a", 1, 0, None), r("a", None, 50, 60)];
        assert_eq!(check(&never, 10_000), LinResult::Ok);
        let flicker = [w("a", 1, 0, None), r("a", Some(1), 5, 10), r("a", None, 50, 60)];
        assert!(matches!(check(&flicker, 10_000), LinResult::Violation(_)), "a write cannot be undone");
    }

    #[test]
    fn keys_are_checked_apart_and_budget_exhaustion_is_unknown() {
        let ops = [
            w("a", 1, 0, Some(10)),
            w("b", 2, 0, Some(10)),
            r("a", Some(1), 11, 12),
            r("b", Some(2), 11, 12),
        ];
        assert_eq!(check(&ops, 10_000), LinResult::Ok);
        assert_eq!(check(&ops, 1), LinResult::Unknown, "out of budget is never Ok");
    }

    #[test]
    fn unobserved_info_writes_are_left_out_and_observed_ones_kept() {
        let many: Vec<KvOp> = (0..200).map(|i| w("a", i, 0, None)).chain([r("a", None, 1, 2)]).collect();
        assert_eq!(check(&many, 1_000), LinResult::Ok, "200 unobserved info writes cost nothing");
        let seen = [w("a", 1, 0, None), w("a", 2, 0, Some(3)), r("a", Some(1), 5, 6), r("a", Some(2), 7, 8)];
        assert!(matches!(check(&seen, 10_000), LinResult::Violation(_)), "w2 returned before w1 was read");
    }

    fn cas(key: &str, expect: Option<u64>, new: u64, swapped: Option<bool>, at: (u64, Option<u64>)) -> KvOp {
        KvOp { key: key.into(), kind: OpKind::Cas { expect, new, swapped }, invoke: at.0, ret: at.1 }
    }

    #[test]
    fn deletes_and_cas_follow_the_register() {
        let del = KvOp { key: "a".into(), kind: OpKind::Delete, invoke: 11, ret: Some(20) };
        let ok = [
            w("a", 1, 0, Some(10)),
            cas("a", Some(1), 2, Some(true), (11, Some(12))),
            cas("a", Some(1), 3, Some(false), (13, Some(14))),
            r("a", Some(2), 15, 16),
        ];
        assert_eq!(check(&ok, 10_000), LinResult::Ok);
        let lying = [w("a", 1, 0, Some(10)), cas("a", Some(1), 2, Some(false), (11, Some(12)))];
        assert!(matches!(check(&lying, 10_000), LinResult::Violation(_)), "nothing else wrote a");
        let gone = [w("a", 1, 0, Some(10)), del.clone(), r("a", None, 21, 22)];
        assert_eq!(check(&gone, 10_000), LinResult::Ok);
        let back = [w("a", 1, 0, Some(10)), del, r("a", Some(1), 21, 22)];
        assert!(matches!(check(&back, 10_000), LinResult::Violation(_)), "a deleted value came back");
    }

    #[test]
    fn an_info_write_that_explains_a_failed_cas_is_kept() {
        // Only the unseen info write of 2 lets the CAS fail: leaving it out would be wrong.
        let ops =
            [w("a", 1, 0, Some(10)), w("a", 2, 11, None), cas("a", Some(1), 3, Some(false), (12, Some(13)))];
        assert_eq!(check(&ops, 10_000), LinResult::Ok);
        let unknown =
            [w("a", 1, 0, Some(10)), cas("a", Some(1), 3, None, (11, None)), r("a", Some(3), 12, 13)];
        assert_eq!(check(&unknown, 10_000), LinResult::Ok, "an info CAS may have swapped");
    }
}
