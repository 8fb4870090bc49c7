//! Network coordinates: Vivaldi (Dabek et al., 2004) with the refinements Serf ships from
//! "Network Coordinates in the Wild" (Ledlie et al., 2007): a height for each node's access
//! link, a per-peer median filter on RTT samples, an adjustment term learned from recent
//! errors, and a weak gravity toward the origin against drift.
//!
//! Owns this node's coordinate, what it learns from (latency filters, adjustment window), and
//! the arithmetic that turns two coordinates into an estimated RTT. Never measures anything:
//! the host times the probes and passes each RTT in. Never draws randomness of its own: the
//! rare random direction comes from the caller's `Rng`. All arithmetic is in seconds as f64.

use crate::rng::Rng;
use crate::time::Duration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// Lengths below this (seconds) count as zero: closer points are treated as coincident, and
/// RTTs are floored here so the relative error of a sample stays finite.
const ZERO_THRESHOLD: f64 = 1e-6;

/// The longest RTT taken as a sample; anything slower is a stalled probe, not latency.
pub const MAX_RTT: Duration = Duration::from_secs(10);

/// Tuning for the Vivaldi client; `Default` is Consul's.
#[derive(Clone, Debug, PartialEq)]
pub struct CoordinateConfig {
    /// Euclidean dimensions of `Coordinate::vec` (the height comes on top).
    pub dimensionality: usize,
    /// Cap on a node's error estimate, and its value at the origin.
    pub vivaldi_error_max: f64,
    /// How much one sample can move the error estimate.
    pub vivaldi_ce: f64,
    /// How much one sample can move the coordinate.
    pub vivaldi_cc: f64,
    /// Samples in the adjustment window; 0 turns adjustment off.
    pub adjustment_window_size: usize,
    /// Floor of the height, in seconds.
    pub height_min: f64,
    /// RTT samples per peer whose median is fed to Vivaldi (0 is taken as 1).
    pub latency_filter_size: usize,
    /// Distance (seconds) at which gravity's pull reaches one second per update; a
    /// non-positive value turns gravity off.
    pub gravity_rho: f64,
}

impl Default for CoordinateConfig {
    fn default() -> Self {
        CoordinateConfig {
            dimensionality: 8,
            vivaldi_error_max: 1.5,
            vivaldi_ce: 0.25,
            vivaldi_cc: 0.25,
            adjustment_window_size: 20,
            height_min: 10e-6,
            latency_filter_size: 3,
            gravity_rho: 150.0,
        }
    }
}

/// A point in latency space, in Consul's wire shape. Equality is bit for bit, so it is an
/// equivalence (replicated tables that hold coordinates compare and digest alike).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Coordinate {
    pub vec: Vec<f64>,
    pub error: f64,
    pub adjustment: f64,
    pub height: f64,
}

impl PartialEq for Coordinate {
    fn eq(&self, other: &Coordinate) -> bool {
        let bits = |c: &Coordinate| {
            c.vec.iter().chain([&c.error, &c.adjustment, &c.height]).map(|f| f.to_bits()).collect::<Vec<_>>()
        };
        bits(self) == bits(other)
    }
}

impl Eq for Coordinate {}

/// Why a coordinate or an RTT sample was refused.
#[derive(Clone, Debug, Error, PartialEq)]
pub enum CoordinateError {
    #[error("coordinate has a non-finite component or a negative error or height")]
    Invalid,
    #[error("coordinate has {got} dimensions, expected {want}")]
    DimensionMismatch { want: usize, got: usize },
    #[error("round trip time {0:?} is not in (0, 10s]")]
    RttOutOfRange(Duration),
}

impl Coordinate {
    /// The origin, knowing nothing: maximal error, minimal height.
    pub fn new(config: &CoordinateConfig) -> Coordinate {
        Coordinate {
            vec: vec![0.0; config.dimensionality],
            error: config.vivaldi_error_max,
            adjustment: 0.0,
            height: config.height_min,
        }
    }

    /// Whether every component is finite.
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// Estimated RTT to `other`. `Duration::MAX` stands for "unknown" when the two cannot be
    /// compared (different dimensionality, or components so wild the sum is not a number).
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        if !self.is_compatible_with(other) {
            return Duration::MAX;
        }
        secs_to_duration(self.distance_secs(other))
    }

    /// Vector distance plus both heights: the model before adjustment.
    fn raw_distance_secs(&self, other: &Coordinate) -> f64 {
        let squares: f64 = self.vec.iter().zip(&other.vec).map(|(a, b)| (a - b) * (a - b)).sum();
        squares.sqrt() + self.height + other.height
    }

    /// The raw distance plus both adjustments, unless that would make it non-positive: the
    /// adjustments correct a systematic bias and must not turn a distance negative.
    fn distance_secs(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance_secs(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            raw
        }
    }

    /// Moves this coordinate by `force` seconds away from `other` (toward it when negative).
    /// The height takes its share of the push in proportion to how much of the distance the
    /// heights make up, and never sinks below `height_min`.
    fn apply_force(&mut self, force: f64, other: &Coordinate, height_min: f64, rng: &mut Rng) {
        let (unit, mag) = unit_vector(&self.vec, &other.vec, rng);
        for (v, u) in self.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
        // Coincident points carry no height direction; leave the height to later samples.
        if mag > ZERO_THRESHOLD {
            let height = self.height + (self.height + other.height) * force / mag;
            self.height = height.max(height_min);
        }
    }
}

/// The unit vector pointing from `other` toward `this`, and the length of the difference.
/// When the points coincide, any direction separates them, so one is drawn at random (as the
/// Vivaldi paper prescribes) and the length reported is 0.
fn unit_vector(this: &[f64], other: &[f64], rng: &mut Rng) -> (Vec<f64>, f64) {
    let diff: Vec<f64> = this.iter().zip(other).map(|(a, b)| a - b).collect();
    let mag = norm(&diff);
    if mag > ZERO_THRESHOLD {
        return (diff.iter().map(|d| d / mag).collect(), mag);
    }
    let mut dir: Vec<f64> = diff.iter().map(|_| unit_f64(rng) - 0.5).collect();
    let len = norm(&dir);
    if len > ZERO_THRESHOLD {
        dir.iter_mut().for_each(|d| *d /= len);
    } else {
        // Every draw landed at the centre: any fixed axis will do.
        dir.iter_mut().for_each(|d| *d = 0.0);
        if let Some(first) = dir.first_mut() {
            *first = 1.0;
        }
    }
    (dir, 0.0)
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

/// Uniform in `[0, 1)` from the top 53 bits of a draw.
fn unit_f64(rng: &mut Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Seconds to a `Duration` without panicking: NaN is unknown (`MAX`), negatives are zero,
/// and anything too large for a `Duration` saturates.
fn secs_to_duration(secs: f64) -> Duration {
    if secs.is_nan() {
        Duration::MAX
    } else if secs <= 0.0 {
        Duration::ZERO
    } else {
        Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
    }
}

/// Counters a host may export as metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoordinateStats {
    /// Times an update left the coordinate non-finite and it was reset to the origin.
    pub resets: u64,
}

/// This node's view of latency space: its coordinate and what it learns it from.
#[derive(Clone, Debug)]
pub struct CoordinateClient {
    coord: Coordinate,
    origin: Coordinate,
    config: CoordinateConfig,
    /// Ring of `rtt - raw distance` for the last `adjustment_window_size` samples.
    adjustment_samples: Vec<f64>,
    adjustment_index: usize,
    /// The last `latency_filter_size` RTTs (seconds) per peer, oldest first. Grows with the
    /// membership; the host calls `forget` when a peer leaves.
    latency_samples: BTreeMap<String, Vec<f64>>,
    stats: CoordinateStats,
}

impl CoordinateClient {
    pub fn new(config: CoordinateConfig) -> CoordinateClient {
        let origin = Coordinate::new(&config);
        CoordinateClient {
            coord: origin.clone(),
            origin,
            adjustment_samples: vec![0.0; config.adjustment_window_size],
            adjustment_index: 0,
            latency_samples: BTreeMap::new(),
            stats: CoordinateStats::default(),
            config,
        }
    }

    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// Replaces the coordinate wholesale, e.g. with one restored from a snapshot.
    pub fn set_coordinate(&mut self, coord: Coordinate) -> Result<(), CoordinateError> {
        self.check(&coord)?;
        self.coord = coord;
        Ok(())
    }

    pub fn stats(&self) -> CoordinateStats {
        self.stats
    }

    /// Drops what was learned about `peer`'s latency, once it has left.
    pub fn forget(&mut self, peer: &str) {
        self.latency_samples.remove(peer);
    }

    /// Estimated RTT from this node to `other` (see `Coordinate::distance_to`).
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        self.coord.distance_to(other)
    }

    /// Folds one RTT sample to `peer`, whose coordinate is `peer_coord`, into this node's
    /// coordinate. A refused sample leaves every piece of state untouched.
    pub fn update(
        &mut self,
        peer: &str,
        peer_coord: &Coordinate,
        rtt: Duration,
        rng: &mut Rng,
    ) -> Result<&Coordinate, CoordinateError> {
        self.check(peer_coord)?;
        if rtt.is_zero() || rtt > MAX_RTT {
            return Err(CoordinateError::RttOutOfRange(rtt));
        }
        let rtt = self.filtered_rtt(peer, rtt.as_secs_f64());
        self.update_vivaldi(peer_coord, rtt, rng);
        self.update_adjustment(peer_coord, rtt);
        self.update_gravity(rng);
        if !self.coord.is_valid() {
            // Extreme but finite inputs can still overflow; start over rather than spread NaN.
            // The adjustment samples were measured against the lost coordinate, so they go too.
            self.stats.resets += 1;
            self.coord = self.origin.clone();
            self.adjustment_samples.iter_mut().for_each(|s| *s = 0.0);
        }
        Ok(&self.coord)
    }

    /// A coordinate this client can learn from: finite, same dimensions, and the error and
    /// height no well-behaved node ever sends negative.
    fn check(&self, coord: &Coordinate) -> Result<(), CoordinateError> {
        if !self.coord.is_compatible_with(coord) {
            return Err(CoordinateError::DimensionMismatch {
                want: self.coord.vec.len(),
                got: coord.vec.len(),
            });
        }
        if !coord.is_valid() || coord.error < 0.0 || coord.height < 0.0 {
            return Err(CoordinateError::Invalid);
        }
        Ok(())
    }

    /// Records the sample and returns the median of the peer's recent ones, so a single
    /// delayed probe (a GC pause, a busy queue) does not yank the coordinate.
    fn filtered_rtt(&mut self, peer: &str, rtt: f64) -> f64 {
        let size = self.config.latency_filter_size.max(1);
        let samples = self.latency_samples.entry(peer.to_owned()).or_default();
        samples.push(rtt);
        if samples.len() > size {
            samples.drain(..samples.len() - size);
        }
        let mut sorted = samples.clone();
        sorted.sort_by(f64::total_cmp);
        sorted[sorted.len() / 2]
    }

    /// The Vivaldi spring step: a sample moves this node in proportion to how confident it
    /// is relative to the peer, and the error estimate tracks the sample's relative error.
    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64, rng: &mut Rng) {
        let rtt = rtt.max(ZERO_THRESHOLD);
        let dist = self.coord.distance_secs(other);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        let ce = self.config.vivaldi_ce * weight;
        let error = wrongness * ce + self.coord.error * (1.0 - ce);
        self.coord.error = error.min(self.config.vivaldi_error_max);
        let force = self.config.vivaldi_cc * weight * (rtt - dist);
        self.coord.apply_force(force, other, self.config.height_min, rng);
    }

    /// Half the mean of recent `rtt - raw distance`: the peer applies its own half, so the
    /// pair together cancel the bias the Euclidean model cannot represent.
    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let window = self.adjustment_samples.len();
        if window == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance_secs(other);
        self.adjustment_index = (self.adjustment_index + 1) % window;
        let sum: f64 = self.adjustment_samples.iter().sum();
        self.coord.adjustment = sum / (2.0 * window as f64);
    }

    /// A pull toward the origin, quadratic in the distance from it, so the whole system does
    /// not drift away together (relative distances alone cannot pin it down).
    fn update_gravity(&mut self, rng: &mut Rng) {
        if self.config.gravity_rho <= 0.0 {
            return;
        }
        let dist = self.origin.distance_secs(&self.coord);
        let force = -(dist / self.config.gravity_rho).powi(2);
        self.coord.apply_force(force, &self.origin, self.config.height_min, rng);
    }
}

/// Sorts `items` nearest first by estimated RTT from `from`. Items without a coordinate, or
/// with one that cannot be compared to `from`, go last; ties keep their order.
pub fn sort_by_distance<'c, T>(
    from: &Coordinate,
    items: &mut [T],
    coord_of: impl Fn(&T) -> Option<&'c Coordinate>,
) {
    items.sort_by_cached_key(|item| match coord_of(item) {
        Some(c) if c.is_valid() && from.is_compatible_with(c) => (false, from.distance_to(c)),
        _ => (true, Duration::ZERO),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{Rng, Stream};
    use proptest::prelude::*;

    fn rng(seed: u8) -> Rng {
        Rng::new([seed; 32], Stream::Gossip)
    }

    fn ms(v: f64) -> Duration {
        Duration::from_secs_f64(v / 1000.0)
    }

    fn at(vec: Vec<f64>) -> Coordinate {
        Coordinate { vec, ..Coordinate::new(&CoordinateConfig::default()) }
    }

    #[test]
    fn two_nodes_converge_on_their_rtt() {
        let mut a = CoordinateClient::new(CoordinateConfig::default());
        let mut b = CoordinateClient::new(CoordinateConfig::default());
        let mut rng = rng(1);
        let rtt = ms(10.0);
        // Before any sample both sit at the origin, nowhere near 10 ms apart.
        assert!(a.distance_to(b.coordinate()) < ms(1.0));
        for _ in 0..300 {
            let peer = b.coordinate().clone();
            a.update("b", &peer, rtt, &mut rng).unwrap();
            let peer = a.coordinate().clone();
            b.update("a", &peer, rtt, &mut rng).unwrap();
        }
        let est = a.distance_to(b.coordinate()).as_secs_f64();
        assert!((est - 0.010).abs() < 0.0001, "estimated {est}s for a 10 ms link");
        assert!(a.coordinate().error < 0.1 && b.coordinate().error < 0.1);
    }

    const GRID: usize = 5;
    const N: usize = GRID * GRID;

    /// Nodes on a plane 5 ms apart, each with 0.5 ms of access link (1 ms per pair).
    fn grid_rtt(a: usize, b: usize) -> Duration {
        let (dx, dy) = ((a % GRID) as f64 - (b % GRID) as f64, (a / GRID) as f64 - (b / GRID) as f64);
        ms(5.0 * (dx * dx + dy * dy).sqrt() + 1.0)
    }

    fn pairwise_errors(nodes: &[CoordinateClient]) -> Vec<f64> {
        let mut errors = Vec::new();
        for i in 0..N {
            for j in i + 1..N {
                let est = nodes[i].distance_to(nodes[j].coordinate()).as_secs_f64();
                let actual = grid_rtt(i, j).as_secs_f64();
                errors.push((est - actual).abs() / actual);
            }
        }
        errors.sort_by(f64::total_cmp);
        errors
    }

    #[test]
    fn grid_topology_is_learned() {
        let mut nodes: Vec<_> = (0..N).map(|_| CoordinateClient::new(CoordinateConfig::default())).collect();
        let mut rng = rng(2);
        let untrained = pairwise_errors(&nodes);
        assert!(untrained[untrained.len() / 2] > 0.9, "the origin cannot already be accurate");
        for _ in 0..200 {
            for i in 0..N {
                let j = (i + 1 + rng.below(N as u64 - 1) as usize) % N;
                let peer = nodes[j].coordinate().clone();
                nodes[i].update(&format!("n{j}"), &peer, grid_rtt(i, j), &mut rng).unwrap();
            }
        }
        let errors = pairwise_errors(&nodes);
        let (median, p90) = (errors[errors.len() / 2], errors[errors.len() * 9 / 10]);
        // Measured: median 2.2%, p90 8.5% (over seeds 0..20: median <= 2.7%, p90 <= 10.7%).
        assert!(median < 0.05, "median relative error {median}");
        assert!(p90 < 0.15, "90th percentile relative error {p90}");
    }

    #[test]
    fn bad_input_is_refused_and_changes_nothing() {
        let mut client = CoordinateClient::new(CoordinateConfig::default());
        let mut rng = rng(3);
        let good = at(vec![0.001; 8]);
        client.update("warm", &good, ms(5.0), &mut rng).unwrap();
        let before = client.coordinate().clone();
        let bad_coords = [
            (at(vec![f64::NAN; 8]), CoordinateError::Invalid),
            (Coordinate { error: f64::INFINITY, ..good.clone() }, CoordinateError::Invalid),
            (Coordinate { adjustment: f64::NEG_INFINITY, ..good.clone() }, CoordinateError::Invalid),
            (Coordinate { height: f64::NAN, ..good.clone() }, CoordinateError::Invalid),
            (Coordinate { error: -1.0, ..good.clone() }, CoordinateError::Invalid),
            (at(vec![0.001; 3]), CoordinateError::DimensionMismatch { want: 8, got: 3 }),
        ];
        for (coord, want) in bad_coords {
            assert_eq!(client.update("p", &coord, ms(5.0), &mut rng).unwrap_err(), want);
        }
        for rtt in [Duration::ZERO, MAX_RTT + Duration::from_nanos(1), Duration::MAX] {
            let err = client.update("p", &good, rtt, &mut rng).unwrap_err();
            assert_eq!(err, CoordinateError::RttOutOfRange(rtt));
        }
        assert_eq!(client.coordinate(), &before);
        assert!(!client.latency_samples.contains_key("p"), "a refused sample must not be filtered in");
        assert_eq!(client.set_coordinate(at(vec![f64::INFINITY; 8])), Err(CoordinateError::Invalid));
        assert_eq!(client.coordinate(), &before);
        // The edges of the range are accepted.
        client.update("p", &good, MAX_RTT, &mut rng).unwrap();
        client.update("p", &good, Duration::from_nanos(1), &mut rng).unwrap();
        assert!(client.coordinate().is_valid());
    }

    #[test]
    fn an_overflowing_update_resets_to_the_origin() {
        let mut client = CoordinateClient::new(CoordinateConfig::default());
        let mut rng = rng(4);
        // Finite, so it passes the checks, but its distance overflows to infinity.
        let far = at(vec![1e300; 8]);
        client.update("far", &far, ms(5.0), &mut rng).unwrap();
        assert_eq!(client.coordinate(), &Coordinate::new(&CoordinateConfig::default()));
        assert_eq!(client.stats().resets, 1);
    }

    /// Mostly finite (extreme ones included) so that many samples pass the checks and reach
    /// the arithmetic; the non-finite ones exercise the refusals.
    fn any_f64() -> impl Strategy<Value = f64> {
        prop_oneof![
            8 => -1.0f64..1.0,
            4 => any::<f64>().prop_filter("finite", |v| v.is_finite()),
            1 => Just(f64::MAX),
            1 => Just(0.0),
            1 => Just(f64::NAN),
            1 => Just(f64::INFINITY),
            1 => Just(f64::NEG_INFINITY),
        ]
    }

    fn any_coordinate() -> impl Strategy<Value = Coordinate> {
        let dims = prop_oneof![8 => Just(8usize), 1 => 0usize..=9];
        let vec = dims.prop_flat_map(|n| prop::collection::vec(any_f64(), n));
        (vec, any_f64(), any_f64(), any_f64()).prop_map(|(vec, error, adjustment, height)| Coordinate {
            vec,
            error,
            adjustment,
            height,
        })
    }

    proptest! {
        #[test]
        fn arbitrary_samples_keep_the_coordinate_valid(
            samples in prop::collection::vec((0u8..4, any_coordinate(), 0u64..=20_000_000_000), 1..30),
            seed in any::<u8>(),
        ) {
            let mut client = CoordinateClient::new(CoordinateConfig::default());
            let mut rng = rng(seed);
            for (peer, coord, rtt_nanos) in samples {
                let _ = client.update(&format!("p{peer}"), &coord, Duration::from_nanos(rtt_nanos), &mut rng);
                prop_assert!(client.coordinate().is_valid(), "{:?}", client.coordinate());
                let _ = client.distance_to(&coord);
            }
        }
    }

    #[test]
    fn the_latency_filter_feeds_the_median_of_recent_samples() {
        let mut client = CoordinateClient::new(CoordinateConfig::default());
        assert_eq!(client.filtered_rtt("p", 0.010), 0.010);
        assert_eq!(client.filtered_rtt("p", 0.500), 0.500);
        // A lone spike is outvoted once the window fills...
        assert_eq!(client.filtered_rtt("p", 0.012), 0.012);
        // ...and ages out: the window is now [0.500, 0.012, 0.011].
        assert_eq!(client.filtered_rtt("p", 0.011), 0.012);
        assert_eq!(client.filtered_rtt("p", 0.013), 0.012);
        assert_eq!(client.filtered_rtt("q", 0.100), 0.100, "peers are filtered apart");
        client.forget("p");
        assert_eq!(client.filtered_rtt("p", 0.020), 0.020);
    }

    #[test]
    fn distance_adds_heights_and_adjustments_unless_they_go_negative() {
        let a = Coordinate { vec: vec![0.003, 0.0], error: 1.0, adjustment: 0.001, height: 0.0005 };
        let mut b = Coordinate { vec: vec![0.0, 0.004], error: 1.0, adjustment: 0.002, height: 0.0015 };
        assert_eq!(a.distance_to(&b), ms(5.0 + 2.0 + 3.0));
        b.adjustment = -0.009;
        assert_eq!(a.distance_to(&b), ms(7.0), "a negative total falls back to the raw distance");
        assert_eq!(a.distance_to(&at(vec![0.0; 3])), Duration::MAX);
    }

    #[test]
    fn json_has_consuls_shape_and_postcard_round_trips() {
        let origin = Coordinate::new(&CoordinateConfig::default());
        let json = serde_json::to_value(&origin).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["Vec", "Error", "Adjustment", "Height"]);
        assert_eq!(json["Vec"].as_array().unwrap().len(), 8);
        assert_eq!(json["Error"], 1.5);
        assert_eq!(json["Height"], 1e-5);
        let consul = r#"{"Vec":[0.1,0,0,0,0,0,0,-0.2],"Error":0.3,"Adjustment":-0.01,"Height":2e-5}"#;
        let parsed: Coordinate = serde_json::from_str(consul).unwrap();
        assert_eq!(parsed.vec[7], -0.2);
        assert_eq!(parsed.adjustment, -0.01);
        let bytes = postcard::to_allocvec(&parsed).unwrap();
        assert_eq!(postcard::from_bytes::<Coordinate>(&bytes).unwrap(), parsed);
    }

    #[test]
    fn sort_by_distance_puts_the_nearest_first_and_the_unknown_last() {
        let from = at(vec![0.0, 0.0]);
        // As the catalog sorts rows: the coordinates live in a table apart from the rows.
        let coords: BTreeMap<&str, Coordinate> = [
            ("far", at(vec![0.030, 0.0])),
            ("mismatched", at(vec![0.0; 3])),
            ("near", at(vec![0.0, 0.001])),
            ("mid-1", at(vec![0.010, 0.0])),
            ("mid-2", at(vec![0.0, -0.010])),
            ("nan", at(vec![f64::NAN, 0.0])),
        ]
        .into_iter()
        .collect();
        let mut names = vec!["none-1", "far", "mismatched", "near", "mid-1", "none-2", "mid-2", "nan"];
        sort_by_distance(&from, &mut names, |n| coords.get(n));
        assert_eq!(names, ["near", "mid-1", "mid-2", "far", "none-1", "mismatched", "none-2", "nan"]);
    }
}
