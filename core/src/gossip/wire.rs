//! Gossip's byte form: a 3-byte header (magic, version, flags) and a postcard body,
//! sealed with the keyring's primary key when gossip encryption is on.
//!
//! Owns encoding, decoding and the encryption policy at the edge of the pool. Never
//! trusts its input: every byte string either decodes or yields a `WireError`, and a
//! packet sealed with a key this member does not hold is refused, not crashed on.

use super::keyring::{Keyring, KeyringError, SEAL_OVERHEAD};
use super::message::{Packet, PushPull};
use serde::{Deserialize, Serialize};

const MAGIC: u8 = 0xA7;
const VERSION: u8 = 1;
const SEALED: u8 = 1;
const HEADER: usize = 3;

/// Bytes a datagram spends beyond its messages: header, sealing, enum tag and length.
pub const PACKET_OVERHEAD: usize = HEADER + SEAL_OVERHEAD + 8;

/// Largest stream frame accepted (a push-pull of a very large pool).
pub const MAX_STREAM: usize = 64 << 20;

/// What travels: datagrams carry `Packet`s, streams carry `PushPull`s.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Frame {
    Packet(Packet),
    PushPull(PushPull),
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("too short for a gossip header")]
    TooShort,
    #[error("not a muster gossip message (magic {0:#04x})")]
    BadMagic(u8),
    #[error("unsupported gossip version {0}")]
    BadVersion(u8),
    #[error("encrypted message but gossip encryption is not configured")]
    UnexpectedEncryption,
    #[error("unencrypted message but gossip encryption is required")]
    MissingEncryption,
    #[error("cannot decrypt: {0}")]
    Keyring(#[from] KeyringError),
    #[error("malformed body: {0}")]
    Body(#[from] postcard::Error),
}

/// This member's encryption stance.
#[derive(Clone, Debug, Default)]
pub struct Codec {
    pub keyring: Option<Keyring>,
    /// Refuse plaintext when a keyring is set (Consul's `encrypt_verify_incoming`).
    pub verify_incoming: bool,
    /// Seal outgoing messages when a keyring is set (`encrypt_verify_outgoing`).
    pub verify_outgoing: bool,
}

impl Codec {
    pub fn plain() -> Codec {
        Codec::default()
    }

    pub fn encrypted(keyring: Keyring) -> Codec {
        Codec { keyring: Some(keyring), verify_incoming: true, verify_outgoing: true }
    }

    /// Encodes a frame; `nonce` must be fresh per message (the caller draws it).
    pub fn encode(&self, frame: &Frame, nonce: [u8; 12]) -> Vec<u8> {
        let body = postcard::to_allocvec(frame).expect("gossip frames always serialize");
        match self.keyring.as_ref().filter(|_| self.verify_outgoing) {
            Some(k) => {
                let header = [MAGIC, VERSION, SEALED];
                let mut out = header.to_vec();
                out.extend(k.seal(&body, nonce, &header));
                out
            }
            None => {
                let mut out = vec![MAGIC, VERSION, 0];
                out.extend(body);
                out
            }
        }
    }

    pub fn decode(&self, bytes: &[u8]) -> Result<Frame, WireError> {
        if bytes.len() < HEADER {
            return Err(WireError::TooShort);
        }
        let header = [bytes[0], bytes[1], bytes[2]];
        if header[0] != MAGIC {
            return Err(WireError::BadMagic(header[0]));
        }
        if header[1] != VERSION {
            return Err(WireError::BadVersion(header[1]));
        }
        let body = &bytes[HEADER..];
        if header[2] & SEALED != 0 {
            let k = self.keyring.as_ref().ok_or(WireError::UnexpectedEncryption)?;
            let plain = k.open(body, &header)?;
            return Ok(postcard::from_bytes(&plain)?);
        }
        if self.keyring.is_some() && self.verify_incoming {
            return Err(WireError::MissingEncryption);
        }
        Ok(postcard::from_bytes(body)?)
    }
}
