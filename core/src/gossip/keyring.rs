//! The gossip encryption keyring: which AES-GCM keys an agent holds, which one seals outgoing
//! gossip, and sealing and opening of gossip payloads with them.
//!
//! Owns: the key text format (standard base64 of 16, 24 or 32 bytes, as `consul keygen` and
//! `muster keygen` print it), the primary/secondary split that makes key rotation possible (seal with the
//! primary, open with any installed key), and the sealed wire format
//! `version (1) | nonce (12) | ciphertext | GCM tag (16)`.
//!
//! Never does: draw randomness (the caller supplies every nonce, from its seeded stream) or IO
//! (loading and persisting the keyring is the host's business).

use std::fmt;

use aes_gcm::aead::consts::{U12, U16};
use aes_gcm::aes::Aes192;
use aes_gcm::{AeadInPlace, Aes128Gcm, Aes256Gcm, AesGcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use thiserror::Error;

/// The only sealed-format version; the byte leads every sealed payload so the format can change.
const VERSION: u8 = 1;
const VERSION_LEN: usize = 1;
pub const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = VERSION_LEN + NONCE_LEN;

/// Bytes `Keyring::seal` adds to a payload: version byte, nonce and GCM tag.
pub const SEAL_OVERHEAD: usize = VERSION_LEN + NONCE_LEN + TAG_LEN;

type Aes192Gcm = AesGcm<Aes192, U12>;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum KeyringError {
    #[error("Invalid key: {0}")]
    InvalidBase64(#[from] base64::DecodeError),
    #[error("Invalid key: key size must be 16, 24 or 32 bytes, got {0}")]
    InvalidKeyLength(usize),
    #[error("Requested key is not in the keyring")]
    KeyNotInstalled,
    #[error("Removing the primary key is not allowed")]
    RemovePrimary,
    #[error("Sealed message too short: {len} bytes, at least {SEAL_OVERHEAD} needed")]
    TooShort { len: usize },
    #[error("Unsupported sealed message version {0}")]
    UnknownVersion(u8),
    #[error("No installed key could decrypt the message")]
    NoKeyOpens,
}

/// A gossip encryption key; its length picks the cipher.
#[derive(Clone, PartialEq, Eq)]
pub struct GossipKey(KeyBytes);

#[derive(Clone, PartialEq, Eq)]
enum KeyBytes {
    Aes128([u8; 16]),
    Aes192([u8; 24]),
    Aes256([u8; 32]),
}

impl GossipKey {
    /// A key from raw bytes: 16, 24 or 32 of them (AES-128, -192 or -256-GCM).
    pub fn from_bytes(bytes: &[u8]) -> Result<GossipKey, KeyringError> {
        let key = if let Ok(k) = bytes.try_into() {
            KeyBytes::Aes128(k)
        } else if let Ok(k) = bytes.try_into() {
            KeyBytes::Aes192(k)
        } else if let Ok(k) = bytes.try_into() {
            KeyBytes::Aes256(k)
        } else {
            return Err(KeyringError::InvalidKeyLength(bytes.len()));
        };
        Ok(GossipKey(key))
    }

    /// A key from standard, padded base64 (what `consul keygen` and `muster keygen` print).
    pub fn from_base64(text: &str) -> Result<GossipKey, KeyringError> {
        GossipKey::from_bytes(&STANDARD.decode(text)?)
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.as_bytes())
    }

    pub fn as_bytes(&self) -> &[u8] {
        match &self.0 {
            KeyBytes::Aes128(k) => k,
            KeyBytes::Aes192(k) => k,
            KeyBytes::Aes256(k) => k,
        }
    }

    /// Encrypts `buf` in place and returns the tag.
    fn seal_in_place(&self, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        match &self.0 {
            KeyBytes::Aes128(k) => seal_with(&Aes128Gcm::new(k.into()), nonce, aad, buf),
            KeyBytes::Aes192(k) => seal_with(&Aes192Gcm::new(k.into()), nonce, aad, buf),
            KeyBytes::Aes256(k) => seal_with(&Aes256Gcm::new(k.into()), nonce, aad, buf),
        }
    }

    /// Decrypts `buf` in place if `tag` authenticates it under this key.
    fn open_in_place(
        &self,
        nonce: &[u8; NONCE_LEN],
        aad: &[u8],
        buf: &mut [u8],
        tag: &[u8; TAG_LEN],
    ) -> bool {
        match &self.0 {
            KeyBytes::Aes128(k) => open_with(&Aes128Gcm::new(k.into()), nonce, aad, buf, tag),
            KeyBytes::Aes192(k) => open_with(&Aes192Gcm::new(k.into()), nonce, aad, buf, tag),
            KeyBytes::Aes256(k) => open_with(&Aes256Gcm::new(k.into()), nonce, aad, buf, tag),
        }
    }
}

/// Key material stays out of logs: only the cipher is shown.
impl fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cipher = match self.0 {
            KeyBytes::Aes128(_) => "AES-128-GCM",
            KeyBytes::Aes192(_) => "AES-192-GCM",
            KeyBytes::Aes256(_) => "AES-256-GCM",
        };
        write!(f, "GossipKey({cipher})")
    }
}

fn seal_with<C>(cipher: &C, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN]
where
    C: AeadInPlace<NonceSize = U12, TagSize = U16>,
{
    cipher
        .encrypt_in_place_detached(nonce.into(), aad, buf)
        // AES-GCM only refuses payloads over 64 GiB, far beyond any gossip message.
        .expect("gossip payload within AES-GCM's size limit")
        .into()
}

fn open_with<C>(cipher: &C, nonce: &[u8; NONCE_LEN], aad: &[u8], buf: &mut [u8], tag: &[u8; TAG_LEN]) -> bool
where
    C: AeadInPlace<NonceSize = U12, TagSize = U16>,
{
    cipher.decrypt_in_place_detached(nonce.into(), aad, buf, tag.into()).is_ok()
}

/// The installed gossip keys: one primary that seals, plus secondaries that still open, so a
/// cluster can rotate keys without a moment where some members cannot read others.
#[derive(Clone, Debug)]
pub struct Keyring {
    /// `keys[0]` is the primary; no key appears twice.
    keys: Vec<GossipKey>,
}

impl Keyring {
    pub fn new(primary: GossipKey) -> Keyring {
        Keyring { keys: vec![primary] }
    }

    /// The key that seals outgoing messages.
    pub fn primary(&self) -> &GossipKey {
        &self.keys[0]
    }

    /// Every installed key, the primary first.
    pub fn keys(&self) -> &[GossipKey] {
        &self.keys
    }

    /// Adds a secondary key; installing a key already present changes nothing.
    pub fn install(&mut self, key: GossipKey) {
        if !self.keys.contains(&key) {
            self.keys.push(key);
        }
    }

    /// Makes an installed key the primary; the old primary stays installed as a secondary.
    pub fn use_key(&mut self, key: &GossipKey) -> Result<(), KeyringError> {
        let at = self.position(key)?;
        // Rotating right keeps the former primary next in line, first of the secondaries.
        self.keys[..=at].rotate_right(1);
        Ok(())
    }

    /// Uninstalls a secondary key. The primary cannot be removed: the keyring would have
    /// nothing to seal with.
    pub fn remove(&mut self, key: &GossipKey) -> Result<(), KeyringError> {
        match self.position(key)? {
            0 => Err(KeyringError::RemovePrimary),
            at => {
                self.keys.remove(at);
                Ok(())
            }
        }
    }

    fn position(&self, key: &GossipKey) -> Result<usize, KeyringError> {
        self.keys.iter().position(|k| k == key).ok_or(KeyringError::KeyNotInstalled)
    }

    /// Seals `plain` with the primary key, binding `aad` (authenticated, not sent).
    ///
    /// `nonce` must never repeat under the same key: GCM loses both secrecy and integrity if
    /// it does. Draw it fresh for every message.
    pub fn seal(&self, plain: &[u8], nonce: [u8; NONCE_LEN], aad: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(plain);
        let tag = self.primary().seal_in_place(&nonce, aad, &mut sealed[HEADER_LEN..]);
        sealed.extend_from_slice(&tag);
        sealed
    }

    /// Opens a message sealed by any installed key with the same `aad`.
    pub fn open(&self, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, KeyringError> {
        let too_short = || KeyringError::TooShort { len: sealed.len() };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(too_short());
        }
        let (&version, rest) = sealed.split_first().ok_or_else(too_short)?;
        if version != VERSION {
            return Err(KeyringError::UnknownVersion(version));
        }
        let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>().ok_or_else(too_short)?;
        let (ciphertext, tag) = rest.split_last_chunk::<TAG_LEN>().ok_or_else(too_short)?;
        let mut buf = Vec::with_capacity(ciphertext.len());
        for key in &self.keys {
            // A fresh copy per key, so a failed attempt can never leave a half-decrypted buffer
            // for the next.
            buf.clear();
            buf.extend_from_slice(ciphertext);
            if key.open_in_place(nonce, aad, &mut buf, tag) {
                return Ok(buf);
            }
        }
        Err(KeyringError::NoKeyOpens)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key(len: usize, fill: u8) -> GossipKey {
        GossipKey::from_bytes(&vec![fill; len]).unwrap()
    }

    const NONCE: [u8; NONCE_LEN] = [7; NONCE_LEN];

    #[test]
    fn round_trips_with_every_key_size() {
        for len in [16, 24, 32] {
            let ring = Keyring::new(key(len, 1));
            let sealed = ring.seal(b"hello gossip", NONCE, b"aad");
            assert_eq!(sealed.len(), 12 + SEAL_OVERHEAD);
            assert_eq!(sealed[0], VERSION);
            assert_eq!(&sealed[1..HEADER_LEN], &NONCE);
            assert_ne!(&sealed[HEADER_LEN..HEADER_LEN + 12], b"hello gossip");
            assert_eq!(ring.open(&sealed, b"aad").unwrap(), b"hello gossip", "{len}-byte key");
        }
        let ring = Keyring::new(key(32, 1));
        assert_eq!(ring.open(&ring.seal(b"", NONCE, b""), b"").unwrap(), b"");
    }

    #[test]
    fn base64_keys() {
        let k = key(32, 0xab);
        assert_eq!(GossipKey::from_base64(&k.to_base64()).unwrap(), k);
        assert_eq!(GossipKey::from_base64("AAAAAAAAAAAAAAAAAAAAAA==").unwrap().as_bytes(), [0; 16]);
        assert_eq!(
            GossipKey::from_base64("AAAAAAAAAAAAAAAAAAAA").unwrap_err(),
            KeyringError::InvalidKeyLength(15)
        );
        assert!(matches!(GossipKey::from_base64("not base64!"), Err(KeyringError::InvalidBase64(_))));
        assert_eq!(format!("{k:?}"), "GossipKey(AES-256-GCM)", "no key material in Debug");
    }

    #[test]
    fn wrong_key_tampering_and_aad_mismatch_fail() {
        let ring = Keyring::new(key(32, 1));
        let sealed = ring.seal(b"payload", NONCE, b"aad");
        assert_eq!(Keyring::new(key(32, 2)).open(&sealed, b"aad"), Err(KeyringError::NoKeyOpens));
        assert_eq!(ring.open(&sealed, b"other"), Err(KeyringError::NoKeyOpens));
        // Every byte past the version is authenticated: nonce, ciphertext and tag.
        for i in VERSION_LEN..sealed.len() {
            let mut tampered = sealed.clone();
            tampered[i] ^= 0x01;
            assert_eq!(ring.open(&tampered, b"aad"), Err(KeyringError::NoKeyOpens), "byte {i}");
        }
    }

    #[test]
    fn malformed_input_has_distinct_errors() {
        let ring = Keyring::new(key(16, 1));
        assert_eq!(ring.open(&[1; SEAL_OVERHEAD - 1], b""), Err(KeyringError::TooShort { len: 28 }));
        let mut sealed = ring.seal(b"x", NONCE, b"");
        sealed[0] = 2;
        assert_eq!(ring.open(&sealed, b""), Err(KeyringError::UnknownVersion(2)));
    }

    #[test]
    fn rotation_keeps_old_key_opening_until_removed() {
        let (old, new) = (key(32, 1), key(32, 2));
        let mut ring = Keyring::new(old.clone());
        let from_old = ring.seal(b"before", NONCE, b"");

        assert_eq!(ring.use_key(&new), Err(KeyringError::KeyNotInstalled));
        ring.install(new.clone());
        ring.install(new.clone());
        assert_eq!(ring.keys(), [old.clone(), new.clone()], "install is idempotent");
        assert_eq!(ring.primary(), &old, "installing does not switch the primary");

        ring.use_key(&new).unwrap();
        assert_eq!(ring.keys(), [new.clone(), old.clone()]);
        let from_new = ring.seal(b"after", NONCE, b"");
        assert_eq!(Keyring::new(new.clone()).open(&from_new, b"").unwrap(), b"after", "sealed with new");
        assert_eq!(ring.open(&from_old, b"").unwrap(), b"before", "old key still opens");

        assert_eq!(ring.remove(&new), Err(KeyringError::RemovePrimary));
        assert_eq!(KeyringError::RemovePrimary.to_string(), "Removing the primary key is not allowed");
        ring.remove(&old).unwrap();
        assert_eq!(ring.remove(&old), Err(KeyringError::KeyNotInstalled));
        assert_eq!(ring.keys(), std::slice::from_ref(&new));
        assert_eq!(ring.open(&from_old, b""), Err(KeyringError::NoKeyOpens));
        assert_eq!(ring.open(&from_new, b"").unwrap(), b"after");
    }

    #[test]
    fn use_key_keeps_former_primary_first_among_secondaries() {
        let (a, b, c) = (key(16, 1), key(16, 2), key(16, 3));
        let mut ring = Keyring::new(a.clone());
        ring.install(b.clone());
        ring.install(c.clone());
        ring.use_key(&c).unwrap();
        assert_eq!(ring.keys(), [c.clone(), a.clone(), b.clone()]);
        ring.use_key(&c).unwrap();
        assert_eq!(ring.keys(), [c, a, b], "using the primary again changes nothing");
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256), aad in any::<Vec<u8>>()) {
            let mut ring = Keyring::new(key(32, 1));
            ring.install(key(16, 2));
            // A forgery would need to guess a 128-bit tag, so nothing random opens.
            prop_assert!(ring.open(&bytes, &aad).is_err());
            // With a valid version byte the key-trying path sees the arbitrary data too.
            let mut versioned = bytes;
            versioned.insert(0, VERSION);
            prop_assert!(ring.open(&versioned, &aad).is_err());
        }

        #[test]
        fn seal_open_round_trips(
            plain in any::<Vec<u8>>(),
            aad in any::<Vec<u8>>(),
            nonce in any::<[u8; NONCE_LEN]>(),
            len in prop::sample::select(vec![16usize, 24, 32]),
            fill in any::<u8>(),
        ) {
            let ring = Keyring::new(key(len, fill));
            let sealed = ring.seal(&plain, nonce, &aad);
            prop_assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
            prop_assert_eq!(ring.open(&sealed, &aad).unwrap(), plain);
        }
    }
}
