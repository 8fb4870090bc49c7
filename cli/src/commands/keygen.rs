//! `muster keygen`: a fresh gossip encryption key, printed as `consul keygen` prints one
//! (standard base64 of 32 bytes, for AES-256-GCM, on one line).
//!
//! Owns the one draw of OS randomness the CLI makes; the key format is `GossipKey`'s.

use anyhow::anyhow;
use muster_core::gossip::keyring::GossipKey;
use rand_core::{OsRng, RngCore as _};

use super::emit;

/// Consul's key size: the largest AES-GCM accepts.
const KEY_LEN: usize = 32;

pub fn run() -> anyhow::Result<()> {
    emit(format!("{}\n", generate()?.to_base64()).as_bytes())
}

pub fn generate() -> anyhow::Result<GossipKey> {
    let mut bytes = [0u8; KEY_LEN];
    // rand_core's error is not `std::error::Error` without its `std` feature, hence `anyhow!`.
    OsRng.try_fill_bytes(&mut bytes).map_err(|e| anyhow!("Error reading random data: {e}"))?;
    Ok(GossipKey::from_bytes(&bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_256_bit_keys() {
        let (a, b) = (generate().unwrap(), generate().unwrap());
        assert_eq!(a.as_bytes().len(), KEY_LEN);
        assert_ne!(a, b);
        assert_eq!(GossipKey::from_base64(&a.to_base64()).unwrap(), a);
    }
}
