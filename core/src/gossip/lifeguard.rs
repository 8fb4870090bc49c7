//! Lifeguard (Dadgar et al.): the two refinements that keep a slow member from flapping
//! healthy peers, in integer math so every host computes the same deadlines.
//!
//! Owns local health awareness (probe timing stretched while this member itself misses
//! acks) and suspicion timers (start long, shrink as independent members confirm). Never
//! decides who is suspect: `swim` does, and asks this module only "how long?".

use crate::time::{Duration, Time};
use std::collections::BTreeSet;
use std::sync::Arc;

/// Fixed point with 16 fractional bits.
const ONE: u64 = 1 << 16;

/// log2(x) in Q16 for x ≥ 1, exact to the last bit the squaring method gives.
fn log2_q16(x: u64) -> u64 {
    debug_assert!(x >= 1);
    let int = 63 - u64::from(x.leading_zeros());
    // The mantissa x / 2^int in [1, 2), as Q32.
    let mut m: u128 = (u128::from(x) << 32) >> int;
    let mut frac = 0u64;
    for bit in (0..16).rev() {
        m = (m * m) >> 32;
        if m >= 2u128 << 32 {
            m >>= 1;
            frac |= 1 << bit;
        }
    }
    (int << 16) | frac
}

/// `mult × max(1, log10(n)) × interval`: the shortest time a suspect gets to refute.
pub fn suspicion_min(mult: u32, n: usize, interval: Duration) -> Duration {
    let log10 = log2_q16(n.max(1) as u64) * ONE / log2_q16(10);
    let scale = log10.max(ONE);
    let nanos = interval.as_nanos() * u128::from(mult) * u128::from(scale) / u128::from(ONE);
    Duration::from_nanos(nanos.min(u128::from(u64::MAX)) as u64)
}

/// `ceil(log10(n + 1))`, the number of decimal digits of n: how many gossip "generations"
/// a broadcast needs to reach n members.
pub fn log10_ceil(n: usize) -> u32 {
    let mut digits = 1;
    let mut rest = n / 10;
    while rest > 0 {
        digits += 1;
        rest /= 10;
    }
    digits
}

/// Local health: a score in `[0, max)` raised when this member misses acks or must refute
/// a suspicion, lowered by each successful probe. A struggling member probes more slowly
/// and waits longer, so its own lateness does not turn into suspicion of others.
#[derive(Clone, Debug)]
pub struct Awareness {
    score: u32,
    max: u32,
}

impl Awareness {
    pub fn new(max_multiplier: u32) -> Awareness {
        Awareness { score: 0, max: max_multiplier.max(1) }
    }

    pub fn apply(&mut self, delta: i32) {
        let next = i64::from(self.score) + i64::from(delta);
        self.score = next.clamp(0, i64::from(self.max) - 1) as u32;
    }

    pub fn score(&self) -> u32 {
        self.score
    }

    pub fn scale(&self, d: Duration) -> Duration {
        d * (self.score + 1)
    }
}

/// One member under suspicion: the deadline starts at `max` and moves toward `min` as
/// independent members report the same suspicion (k of them reach `min`).
#[derive(Clone, Debug)]
pub struct Suspicion {
    pub incarnation: super::Incarnation,
    confirmations: BTreeSet<Arc<str>>,
    k: u32,
    min: Duration,
    max: Duration,
    start: Time,
    pub deadline: Time,
}

impl Suspicion {
    /// `from` is the first accuser; it does not count towards the k confirmations.
    pub fn new(
        incarnation: super::Incarnation,
        from: Arc<str>,
        k: u32,
        min: Duration,
        max: Duration,
        start: Time,
    ) -> Suspicion {
        let mut s = Suspicion {
            incarnation,
            confirmations: BTreeSet::from([from]),
            k,
            min,
            max: max.max(min),
            start,
            deadline: start,
        };
        s.deadline = start + s.timeout();
        s
    }

    fn timeout(&self) -> Duration {
        let c = self.confirmations.len() as u64 - 1;
        if self.k == 0 {
            return self.min;
        }
        let ratio = (log2_q16(c + 1) * ONE / log2_q16(u64::from(self.k) + 1)).min(ONE);
        let span = (self.max - self.min).as_nanos();
        let cut = span * u128::from(ratio) / u128::from(ONE);
        self.max - Duration::from_nanos(cut as u64)
    }

    /// Counts an accusation from `from`; true when it was new, so it is worth re-gossiping.
    pub fn confirm(&mut self, from: Arc<str>) -> bool {
        if self.confirmations.len() as u32 > self.k || !self.confirmations.insert(from) {
            return false;
        }
        self.deadline = self.start + self.timeout();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::Incarnation;

    #[test]
    fn fixed_point_log_matches_floats() {
        for x in [1u64, 2, 3, 5, 10, 31, 100, 1000, 10_000, 123_456_789] {
            let want = (x as f64).log2();
            let got = log2_q16(x) as f64 / ONE as f64;
            assert!((want - got).abs() < 1e-3, "log2({x}) = {got}, want {want}");
        }
    }

    #[test]
    fn suspicion_min_follows_memberlist_formula() {
        let s = Duration::from_secs(1);
        assert_eq!(suspicion_min(4, 1, s), Duration::from_secs(4));
        assert_eq!(suspicion_min(4, 10, s), Duration::from_secs(4));
        let ten_k = suspicion_min(4, 10_000, s).as_secs_f64();
        assert!((ten_k - 16.0).abs() < 0.01, "{ten_k}");
        let hundred = suspicion_min(5, 100, Duration::from_millis(200)).as_secs_f64();
        assert!((hundred - 2.0).abs() < 0.01, "{hundred}");
    }

    #[test]
    fn digits() {
        assert_eq!([0, 1, 9, 10, 99, 100, 10_000].map(log10_ceil), [1, 1, 1, 2, 2, 3, 5]);
    }

    #[test]
    fn awareness_is_bounded_and_scales() {
        let mut a = Awareness::new(8);
        a.apply(-1);
        assert_eq!(a.score(), 0);
        a.apply(20);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_millis(500)), Duration::from_secs(4));
    }

    #[test]
    fn suspicion_shrinks_with_confirmations_down_to_min() {
        let (min, max) = (Duration::from_secs(4), Duration::from_secs(24));
        let mut s = Suspicion::new(Incarnation(1), "a".into(), 3, min, max, Time::ZERO);
        assert_eq!(s.deadline, Time::ZERO + max);
        assert!(!s.confirm("a".into()), "the accuser does not confirm itself");
        let mut last = s.deadline;
        for who in ["b", "c", "d"] {
            assert!(s.confirm(who.into()));
            assert!(s.deadline < last);
            last = s.deadline;
        }
        assert_eq!(s.deadline, Time::ZERO + min);
        assert!(!s.confirm("e".into()), "past k, confirmations no longer matter");
        let plain = Suspicion::new(Incarnation(1), "a".into(), 0, min, max, Time::ZERO);
        assert_eq!(plain.deadline, Time::ZERO + min);
    }
}
