//! The KV table: entries with create/modify/lock indexes, CAS by modify index, tombstones.
//!
//! Owns key storage and the KV rules of Consul (identical writes are no-ops, a plain set keeps
//! a lock, deletes leave tombstones so prefix indexes never go backwards). Never decides who
//! may write, and never reads time: anything time-dependent arrives stamped in the command.

use std::sync::Arc;

use imbl::OrdMap;
use serde::{Deserialize, Serialize};

use crate::ids::Index;

/// One stored key. Serialized to JSON through `api::KvEntryJson` (base64 value).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The same allocation as the table's key for it.
    pub key: Arc<str>,
    pub value: Vec<u8>,
    pub flags: u64,
    pub lock_index: u64,
    pub session: Option<String>,
    pub create_index: Index,
    pub modify_index: Index,
}

/// How a set treats what is already there.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvSetMode {
    /// Unconditional write.
    Set,
    /// Write only if the current modify index equals this (0: only if the key is absent).
    Cas(u64),
    /// Take the lock for this session (`?acquire=`).
    Acquire(String),
    /// Give up the lock held by this session (`?release=`).
    Release(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Decoded")]
pub struct KvTable {
    /// Entries behind their own pointer: a tree node then holds 24 bytes per key, not 120,
    /// and copying one (after a snapshot took a copy of the table) copies no strings.
    entries: OrdMap<Arc<str>, Arc<KvEntry>>,
    tombstones: OrdMap<String, Index>,
    /// Last index that changed any entry or tombstone.
    table_index: Index,
}

impl KvTable {
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key).map(|e| &**e)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub fn prefix<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = &'a KvEntry> + 'a {
        self.entries
            .range::<_, str>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(move |(k, _)| k.starts_with(prefix))
            .map(|(_, e)| &**e)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The blocking index for a missing key: the table's last change (never below 1).
    pub fn table_index(&self) -> Index {
        self.table_index
    }

    /// The blocking index for a prefix read: max over entries and tombstones under it, falling
    /// back to the table index when nothing is there.
    pub fn prefix_index(&self, prefix: &str) -> Index {
        let live = self.prefix(prefix).map(|e| e.modify_index).max();
        let dead = self
            .tombstones
            .range::<_, str>((std::ops::Bound::Included(prefix), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max();
        live.max(dead).unwrap_or(self.table_index)
    }

    /// Applies a set; `session_exists` answers whether an acquiring session is live.
    pub fn set(
        &mut self,
        index: Index,
        key: &str,
        value: &[u8],
        flags: u64,
        mode: &KvSetMode,
        session_exists: impl Fn(&str) -> bool,
    ) -> Result<bool, KvError> {
        let current = self.entries.get(key);
        let (session, lock_index) = match mode {
            KvSetMode::Set => (current.and_then(|e| e.session.clone()), current.map_or(0, |e| e.lock_index)),
            KvSetMode::Cas(want) => {
                let have = current.map_or(0, |e| e.modify_index.0);
                if have != *want {
                    return Ok(false);
                }
                (current.and_then(|e| e.session.clone()), current.map_or(0, |e| e.lock_index))
            }
            KvSetMode::Acquire(s) => {
                if !session_exists(s) {
                    return Err(KvError::InvalidSession(s.clone()));
                }
                match current.and_then(|e| e.session.as_deref()) {
                    Some(held) if held == s => (Some(s.clone()), current.map_or(0, |e| e.lock_index)),
                    Some(_) => return Ok(false),
                    None => (Some(s.clone()), current.map_or(0, |e| e.lock_index) + 1),
                }
            }
            KvSetMode::Release(s) => match current.and_then(|e| e.session.as_deref()) {
                Some(held) if held == s => (None, current.map_or(0, |e| e.lock_index)),
                _ => return Ok(false),
            },
        };
        if let Some(e) = current {
            if e.value == value && e.flags == flags && e.session == session {
                return Ok(true); // identical content: indexes do not move
            }
        }
        let create_index = current.map_or(index, |e| e.create_index);
        let key: Arc<str> = current.map_or_else(|| key.into(), |e| e.key.clone());
        self.tombstones.remove(&*key);
        self.entries.insert(
            key.clone(),
            Arc::new(KvEntry {
                key,
                value: value.to_vec(),
                flags,
                lock_index,
                session,
                create_index,
                modify_index: index,
            }),
        );
        self.table_index = index;
        Ok(true)
    }

    /// Deletes one key (or, with `recurse`, every key under the prefix), leaving tombstones.
    /// With `cas`, deletes only if the modify index matches; a missing key counts as deleted.
    pub fn delete(&mut self, index: Index, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        if recurse {
            let doomed: Vec<Arc<str>> = self.prefix(key).map(|e| e.key.clone()).collect();
            for k in doomed {
                self.entries.remove(&k);
                self.tombstones.insert(k.to_string(), index);
            }
            self.table_index = index;
            return true;
        }
        let Some(e) = self.entries.get(key) else {
            return true;
        };
        if cas.is_some_and(|want| e.modify_index.0 != want) {
            return false;
        }
        self.entries.remove(key);
        self.tombstones.insert(key.into(), index);
        self.table_index = index;
        true
    }
}

/// A table as snapshots hold it: keys are stored twice there (as map keys and in their
/// entries), and decoding shares one allocation between the two again.
#[derive(Deserialize)]
struct Decoded {
    entries: OrdMap<Arc<str>, Arc<KvEntry>>,
    tombstones: OrdMap<String, Index>,
    table_index: Index,
}

impl From<Decoded> for KvTable {
    fn from(d: Decoded) -> KvTable {
        let entries = d.entries.into_iter().map(|(_, e)| (e.key.clone(), e)).collect();
        KvTable { entries, tombstones: d.tombstones, table_index: d.table_index }
    }
}

/// KV operations that fail outright (as opposed to answering `false`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum KvError {
    #[error("invalid session \"{0}\"")]
    InvalidSession(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(t: &mut KvTable, i: u64, k: &str, v: &str, mode: KvSetMode) -> Result<bool, KvError> {
        t.set(Index(i), k, v.as_bytes(), 0, &mode, |s| s == "live")
    }

    #[test]
    fn cas_create_update_and_identical_writes() {
        let mut t = KvTable::default();
        assert_eq!(set(&mut t, 1, "a", "x", KvSetMode::Cas(0)), Ok(true));
        assert_eq!(set(&mut t, 2, "a", "y", KvSetMode::Cas(0)), Ok(false));
        assert_eq!(set(&mut t, 3, "a", "y", KvSetMode::Cas(1)), Ok(true));
        assert_eq!(t.get("a").unwrap().create_index, Index(1));
        assert_eq!(t.get("a").unwrap().modify_index, Index(3));
        assert_eq!(set(&mut t, 4, "a", "y", KvSetMode::Set), Ok(true));
        assert_eq!(t.get("a").unwrap().modify_index, Index(3), "identical write is a no-op");
    }

    #[test]
    fn locks_acquire_release_and_survive_plain_set() {
        let mut t = KvTable::default();
        assert_eq!(
            set(&mut t, 1, "l", "", KvSetMode::Acquire("dead".into())),
            Err(KvError::InvalidSession("dead".into()))
        );
        assert_eq!(set(&mut t, 2, "l", "a", KvSetMode::Acquire("live".into())), Ok(true));
        assert_eq!(t.get("l").unwrap().lock_index, 1);
        assert_eq!(set(&mut t, 3, "l", "b", KvSetMode::Set), Ok(true));
        assert_eq!(t.get("l").unwrap().session.as_deref(), Some("live"));
        assert_eq!(set(&mut t, 4, "l", "b", KvSetMode::Release("other".into())), Ok(false));
        assert_eq!(set(&mut t, 5, "l", "b", KvSetMode::Release("live".into())), Ok(true));
        assert_eq!(t.get("l").unwrap().session, None);
        assert_eq!(t.get("l").unwrap().lock_index, 1);
    }

    #[test]
    fn deletes_leave_tombstones_that_hold_prefix_index() {
        let mut t = KvTable::default();
        set(&mut t, 1, "p/a", "1", KvSetMode::Set).unwrap();
        set(&mut t, 2, "p/b", "2", KvSetMode::Set).unwrap();
        set(&mut t, 3, "q", "3", KvSetMode::Set).unwrap();
        assert_eq!(t.prefix_index("p/"), Index(2));
        assert!(t.delete(Index(4), "p/b", false, None));
        assert_eq!(t.prefix_index("p/"), Index(4));
        assert!(!t.delete(Index(5), "p/a", false, Some(9)));
        assert!(t.delete(Index(5), "missing", false, Some(9)));
        assert!(t.delete(Index(6), "p", true, None));
        assert_eq!(t.prefix("p").count(), 0);
        assert_eq!(t.prefix_index("p/"), Index(6));
        assert_eq!(t.get("q").unwrap().modify_index, Index(3));
    }

    #[test]
    fn prefix_is_plain_string_prefix() {
        let mut t = KvTable::default();
        for (i, k) in ["foo", "foo/", "foo/bar", "foo1", "fop"].iter().enumerate() {
            set(&mut t, i as u64 + 1, k, "", KvSetMode::Set).unwrap();
        }
        let keys: Vec<_> = t.prefix("foo").map(|e| &*e.key).collect();
        assert_eq!(keys, ["foo", "foo/", "foo/bar", "foo1"]);
    }

    #[test]
    fn keys_are_stored_once_and_shared_again_after_decoding() {
        let mut t = KvTable::default();
        t.set(Index(1), "a/b", b"v", 0, &KvSetMode::Set, |_| false).unwrap();
        t.set(Index(2), "a/b", b"w", 0, &KvSetMode::Set, |_| false).unwrap();
        let shared = |t: &KvTable| t.entries.iter().all(|(k, e)| Arc::ptr_eq(k, &e.key));
        assert!(shared(&t));
        let back: KvTable = postcard::from_bytes(&postcard::to_allocvec(&t).unwrap()).unwrap();
        assert_eq!(back, t);
        assert!(shared(&back));
    }
}
