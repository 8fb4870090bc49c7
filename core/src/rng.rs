//! Seeded randomness: one ChaCha stream per subsystem so draws in one never shift another.
//!
//! Never touches OS randomness: the host supplies the seed (from the OS at boot in production,
//! from the master seed in the simulator).

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The subsystems that draw random numbers, each on its own stream.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    Checks = 1,
    Blocking = 2,
    Dns = 3,
    Ids = 4,
    AntiEntropy = 5,
    Raft = 6,
    Gossip = 7,
    Nonces = 8,
    Events = 9,
    Servers = 10,
    Coordinates = 11,
    Snapshots = 12,
}

/// A deterministic random source for one subsystem.
#[derive(Clone, Debug)]
pub struct Rng(ChaCha8Rng);

impl Rng {
    pub fn new(seed: [u8; 32], stream: Stream) -> Rng {
        let mut r = ChaCha8Rng::from_seed(seed);
        r.set_stream(stream as u64);
        Rng(r)
    }

    /// An independent stream of the same seed and position: draws from it never shift
    /// this one's.
    pub fn fork(&self, stream: Stream) -> Rng {
        let mut r = self.0.clone();
        r.set_stream(stream as u64);
        Rng(r)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `[0, bound)`; 0 when `bound` is 0.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Rejection sampling keeps the draw unbiased.
        let zone = u64::MAX - (u64::MAX % bound);
        loop {
            let v = self.next_u64();
            if v < zone {
                return v % bound;
            }
        }
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }

    /// A random RFC 4122 version-4 UUID in its text form.
    pub fn uuid(&mut self) -> String {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        b[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
        format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_are_independent_and_reproducible() {
        let seed = [7u8; 32];
        let mut a = Rng::new(seed, Stream::Checks);
        let mut b = Rng::new(seed, Stream::Checks);
        let mut c = Rng::new(seed, Stream::Dns);
        let (x, y, z) = (a.next_u64(), b.next_u64(), c.next_u64());
        assert_eq!(x, y);
        assert_ne!(x, z);
    }

    #[test]
    fn uuid_has_v4_shape() {
        let u = Rng::new([1; 32], Stream::Ids).uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
    }
}
