//! Snapshot bytes that may be made later, on whichever thread first needs them.
//!
//! Owns the deferral: a closure that makes the bytes, run at most once, and the bytes kept
//! after. Encoding a large state machine takes tens of milliseconds; done on the node's loop
//! it held every request for as long. The node instead hands over a copy of its state that
//! costs nothing to take (its tables are persistent maps), and the host's snapshot writer
//! encodes it; a follower that needs the bytes first makes them wherever it asks. Never
//! spawns anything or decides when the bytes are made.

use std::sync::{Arc, Mutex, OnceLock, PoisonError};

type Make = Box<dyn FnOnce() -> Vec<u8> + Send>;

/// A snapshot image's bytes, now or on first use. Clones share one encoding.
#[derive(Clone)]
pub struct SnapshotData(Arc<Deferred>);

struct Deferred {
    bytes: OnceLock<Vec<u8>>,
    make: Mutex<Option<Make>>,
}

impl SnapshotData {
    /// Bytes that already exist.
    pub fn ready(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData(Arc::new(Deferred { bytes: OnceLock::from(bytes), make: Mutex::new(None) }))
    }

    /// Bytes `make` produces when they are first asked for.
    pub fn deferred(make: impl FnOnce() -> Vec<u8> + Send + 'static) -> SnapshotData {
        SnapshotData(Arc::new(Deferred { bytes: OnceLock::new(), make: Mutex::new(Some(Box::new(make))) }))
    }

    /// The bytes, made here if nobody has made them yet (a second caller waits for the first).
    pub fn bytes(&self) -> &[u8] {
        self.0.bytes.get_or_init(|| {
            let make = self.0.make.lock().unwrap_or_else(PoisonError::into_inner).take();
            // `get_or_init` runs this once per cell, and only a deferred cell is empty.
            make.map_or_else(Vec::new, |make| make())
        })
    }
}

impl From<Vec<u8>> for SnapshotData {
    fn from(bytes: Vec<u8>) -> SnapshotData {
        SnapshotData::ready(bytes)
    }
}

impl std::fmt::Debug for SnapshotData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.bytes.get() {
            Some(b) => write!(f, "SnapshotData({} bytes)", b.len()),
            None => f.write_str("SnapshotData(not yet encoded)"),
        }
    }
}

/// Equal bytes (making them if need be): what a model disk compares.
impl PartialEq for SnapshotData {
    fn eq(&self, other: &SnapshotData) -> bool {
        self.bytes() == other.bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deferred_bytes_are_made_once_and_shared_by_clones() {
        let made = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = made.clone();
        let d = SnapshotData::deferred(move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            b"image".to_vec()
        });
        let copy = d.clone();
        assert_eq!(format!("{d:?}"), "SnapshotData(not yet encoded)");
        assert_eq!(copy.bytes(), b"image");
        assert_eq!(d.bytes(), b"image");
        assert_eq!(made.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(d, SnapshotData::ready(b"image".to_vec()));
        assert_eq!(format!("{d:?}"), "SnapshotData(5 bytes)");
    }
}
