//! The durable Raft log: what `Effect::Persist` writes and what `Node::recover` reads back.
//!
//! Owns everything under `<data_dir>/raft/`:
//! - `log-<first index, 20 digits>.wal`: log segments. A segment holds only entries, each one a
//!   record `[u32 LE payload length][u32 LE crc32 of payload][payload = postcard(Entry)]`, and
//!   every entry in it lies in `[its name, the next segment's name)`. A new segment starts when
//!   the current one passes `SEGMENT_BYTES` and right after a snapshot, so compaction deletes
//!   whole files.
//! - `snapshot-<index, 20 digits>.snap`: `[magic][index][term][data length][crc32][data]`, the
//!   crc covering index, term, length and data. Written as `.snap.tmp`, synced, renamed, and the
//!   directory synced; only then are older snapshots and the segments it covers deleted. A
//!   snapshot the log continues (the node's own) is written by a thread of its own while
//!   appends go on, and compacts the log after the first batch that ends once it is durable:
//!   written in line, its file and syncs held every write behind it for 6–15 ms. A
//!   snapshot the log does not continue (no entry at its index with its term, as when a
//!   follower installs its leader's) replaces the whole log, in order, as
//!   `raft::disk::apply` defines.
//! - `hardstate`: `[magic][record of postcard((term, voted_for))]`, replaced atomically the same
//!   way. It lives apart from the log because repairing the log cuts its tail: a vote recorded
//!   there would vanish if the machine died between the cut and re-writing it, and a forgotten
//!   vote lets a node vote twice in one term.
//!
//! Group commit: `persist` writes a whole batch, then makes it durable with one `fdatasync` of
//! the log (plus the syncs a snapshot or hard state needs), and returns only when all of it is.
//! `spawn` runs that on a dedicated thread and reports tokens in order.
//!
//! Recovery trusts nothing it has not checked: a record with a bad length, CRC or payload ends
//! the log (a torn write), and later segments are dropped since nothing after a hole can be
//! trusted; entries must then follow the snapshot without a gap, or `open` refuses to guess. A
//! log holding the snapshot's index with another term is one the snapshot replaced, left by a
//! crash before its deletion, and is deleted.
//!
//! Never decides anything (what to persist and when is core's business) and never reads the
//! disk after `open`: the log tail the node needs is in its memory.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use muster_core::ids::{Index, PersistToken, Term};
use muster_core::io::{PersistOp, Recovered};
use muster_core::raft::{Entry, SnapshotData};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A segment past this size gets a successor at the next entry.
const SEGMENT_BYTES: u64 = 64 << 20;
const SNAPSHOT_MAGIC: &[u8; 8] = b"MUSTSNP1";
/// Magic, index, term, data length (u64 each after the magic), crc32.
const SNAPSHOT_HEADER: usize = 8 + 8 + 8 + 8 + 4;
const HARD_STATE_MAGIC: &[u8; 8] = b"MUSTHS01";
const HARD_STATE_FILE: &str = "hardstate";
/// Length and crc32 before each record's payload.
const RECORD_HEADER: usize = 8;

/// A snapshot as `Recovered` carries it: index, term, state machine bytes.
type Snapshot = (Index, Term, Vec<u8>);

/// Why the log could not be read or made durable. Each names the file or directory involved.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: io::Error },
    #[error("{} is corrupt: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    #[error(
        "{} is corrupt and the log only reaches index {last}, so state up to index {index} is gone; \
         refusing to start without it",
        path.display()
    )]
    SnapshotLost { path: PathBuf, index: u64, last: u64 },
    #[error("{}: entry {got} cannot follow entry {after}; log entries must be consecutive", dir.display())]
    Gap { dir: PathBuf, after: u64, got: u64 },
    #[error("{}: an append at index {first} would rewrite entries the snapshot at {snapshot} covers", dir.display())]
    BeforeSnapshot { dir: PathBuf, first: u64, snapshot: u64 },
    #[error("{}: a snapshot at index {index} is not newer than the one on disk at {current}", dir.display())]
    SnapshotRegress { dir: PathBuf, index: u64, current: u64 },
    #[error("encoding a record for {}: {source}", path.display())]
    Encode { path: PathBuf, source: postcard::Error },
    #[error("encoding a record for {}: {len} bytes does not fit a record", path.display())]
    RecordTooLarge { path: PathBuf, len: usize },
    #[error("{}: an earlier write failed, so what is on disk is unknown; reopen to recover", dir.display())]
    Broken { dir: PathBuf },
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
    move |source| DiskError::Io { action, path: path.to_path_buf(), source }
}

/// Where a logged entry's record starts, and the entry's term (which decides whether a
/// snapshot continues the log).
#[derive(Clone, Copy, Debug)]
struct Loc {
    segment: u64,
    offset: u64,
    term: Term,
}

/// The durable log of one node.
pub struct DiskLog {
    dir: PathBuf,
    /// Names (first indexes) of the segments on disk, oldest first; never empty. The last one is
    /// the one appended to.
    segments: Vec<u64>,
    active: File,
    active_len: u64,
    /// A field rather than the constant so tests can make segments small.
    segment_bytes: u64,
    /// The active segment has writes not yet synced.
    unsynced: bool,
    /// Files were created or renamed in `dir` and the directory is not yet synced.
    dir_unsynced: bool,
    /// The index of the snapshot on disk (0: none).
    snapshot: u64,
    /// The last index the log speaks for: its last entry, or the snapshot when that is later.
    last: u64,
    /// Where each entry after the snapshot starts, and its term; `locs[i]` is entry
    /// `snapshot + 1 + i`.
    locs: VecDeque<Loc>,
    /// A write failed part way, so appending more could follow a half-written record.
    broken: bool,
    /// The snapshot the log continues that is being written, if any.
    checkpoint: Option<Checkpoint>,
}

/// A snapshot the log continues, on its way to disk on its own thread.
struct Checkpoint {
    index: u64,
    writer: std::thread::JoinHandle<Result<(), DiskError>>,
}

/// A log let go while a snapshot is being written waits for it, so that the directory is
/// not opened again (by a restart in the same process) with a writer still renaming into it.
impl Drop for DiskLog {
    fn drop(&mut self) {
        if let Some(c) = self.checkpoint.take() {
            let _ = c.writer.join();
        }
    }
}

impl DiskLog {
    /// Opens (creating if needed) `<data_dir>/raft/`, recovers what is there, and returns the
    /// log ready to append. A torn tail is cut off; anything else inconsistent is an error.
    pub fn open(data_dir: &Path) -> Result<(DiskLog, Recovered), DiskError> {
        let dir = data_dir.join("raft");
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_error("creating", &dir))?;
            // The new directory's own entry must survive a crash like the files in it.
            sync_dir(data_dir)?;
        }
        let listing = Listing::scan(&dir)?;
        // A .tmp never got its rename, so it was never part of what was made durable.
        for tmp in &listing.temps {
            remove(tmp)?;
        }
        let (snapshot, corrupt) = newest_valid_snapshot(&dir, &listing.snapshots)?;
        let hard_state = read_hard_state(&dir)?;
        let (snap_index, snap_term) =
            snapshot.as_ref().map_or((0, Term(0)), |(index, term, _)| (index.0, *term));
        let replay = replay(&dir, &listing.segments, snap_index, snap_term)?;
        let last = replay.entries.last().map_or(snap_index, |e| e.index.0);
        // Falling back past a corrupt snapshot is fine only if the log still holds what it held.
        if let Some(&index) = corrupt.iter().find(|&&index| index > last) {
            return Err(DiskError::SnapshotLost { path: snapshot_path(&dir, index), index, last });
        }

        // Everything checks out; only now change the disk.
        for &index in &corrupt {
            remove(&snapshot_path(&dir, index))?;
        }
        let mut segments = listing.segments;
        if replay.stale {
            remove_newest_first(&dir, &segments)?;
            segments.clear();
        } else if let Some((pos, offset)) = replay.torn {
            // Later segments go first: were the cut made durable before them, the next
            // recovery would see a hole instead of a torn record.
            for &name in &segments[pos + 1..] {
                remove(&segment_path(&dir, name))?;
            }
            sync_dir(&dir)?;
            segments.truncate(pos + 1);
            let path = segment_path(&dir, segments[pos]);
            let file = open_segment(&path, false)?;
            file.set_len(offset).map_err(io_error("truncating", &path))?;
            file.sync_data().map_err(io_error("syncing", &path))?;
        }
        let (active, active_len) = match segments.last() {
            Some(&name) => {
                let path = segment_path(&dir, name);
                let file = open_segment(&path, false)?;
                let len = file.metadata().map_err(io_error("reading the size of", &path))?.len();
                (file, len)
            }
            None => {
                segments.push(last + 1);
                let file = open_segment(&segment_path(&dir, last + 1), true)?;
                sync_dir(&dir)?;
                (file, 0)
            }
        };
        let log = DiskLog {
            dir,
            segments,
            active,
            active_len,
            segment_bytes: SEGMENT_BYTES,
            unsynced: false,
            dir_unsynced: false,
            snapshot: snap_index,
            last,
            locs: replay.locs,
            broken: false,
            checkpoint: None,
        };
        Ok((log, Recovered { hard_state, snapshot, entries: replay.entries }))
    }

    /// Makes a batch durable: writes every op in order, then syncs once (group commit).
    /// Returns only when all of it is durable, except a snapshot the log continues, which
    /// only has to be on its way (`PersistOp::Snapshot`); `settle` waits for it. After an
    /// error the log refuses further writes; reopen it to learn what survived.
    pub fn persist(&mut self, batch: Vec<PersistOp>) -> Result<(), DiskError> {
        if self.broken {
            return Err(DiskError::Broken { dir: self.dir.clone() });
        }
        let result = self.write_batch(batch);
        self.broken = result.is_err();
        result
    }

    /// Waits for a snapshot still being written and compacts the log behind it.
    pub fn settle(&mut self) -> Result<(), DiskError> {
        if self.broken {
            return Err(DiskError::Broken { dir: self.dir.clone() });
        }
        let result = self.finish_checkpoint(true);
        self.broken = result.is_err();
        result
    }

    fn write_batch(&mut self, batch: Vec<PersistOp>) -> Result<(), DiskError> {
        for op in batch {
            match op {
                PersistOp::AppendLog { entries } => self.append(&entries)?,
                // Durable before the ops after it are written, so nothing core ordered after
                // it (entries of the new term, say) can survive a crash without it.
                PersistOp::HardState { term, voted_for } => self.write_hard_state(term, &voted_for)?,
                PersistOp::Snapshot { index, term, data } => self.write_snapshot(index.0, term, data)?,
            }
        }
        self.sync_active()?;
        if self.dir_unsynced {
            sync_dir(&self.dir)?;
            self.dir_unsynced = false;
        }
        // After the syncs: compacting rolls to a new segment, whose creation the next
        // batch's directory sync makes durable.
        self.finish_checkpoint(false)
    }

    fn append(&mut self, entries: &[Entry]) -> Result<(), DiskError> {
        let Some(first) = entries.first() else { return Ok(()) };
        let first = first.index.0;
        if self.checkpoint.as_ref().is_some_and(|c| first <= c.index) {
            // Never the case with a correct caller (snapshots cover committed entries only);
            // settling first makes the check below refuse it.
            self.finish_checkpoint(true)?;
        }
        if first <= self.snapshot {
            return Err(DiskError::BeforeSnapshot { dir: self.dir.clone(), first, snapshot: self.snapshot });
        }
        if first > self.last + 1 {
            return Err(DiskError::Gap { dir: self.dir.clone(), after: self.last, got: first });
        }
        if let Some(pair) = entries.windows(2).find(|pair| pair[1].index.0 != pair[0].index.0 + 1) {
            let (after, got) = (pair[0].index.0, pair[1].index.0);
            return Err(DiskError::Gap { dir: self.dir.clone(), after, got });
        }
        if first <= self.last {
            self.truncate_from(first)?;
        }
        for entry in entries {
            if self.active_len >= self.segment_bytes {
                self.roll(entry.index.0)?;
            }
            let path = segment_path(&self.dir, self.active_name());
            let record = frame(entry, &path)?;
            self.active.write_all(&record).map_err(io_error("writing", &path))?;
            self.locs.push_back(Loc {
                segment: self.active_name(),
                offset: self.active_len,
                term: entry.term,
            });
            self.active_len += record.len() as u64;
            self.last = entry.index.0;
            self.unsynced = true;
        }
        Ok(())
    }

    /// Cuts the log so that `index` is the next entry written (Raft's repair of a conflicting
    /// suffix). Durable before anything new is written: otherwise old records past the new ones
    /// could survive a crash and read as their continuation.
    fn truncate_from(&mut self, index: u64) -> Result<(), DiskError> {
        let at = (index - self.snapshot - 1) as usize;
        let Loc { segment, offset, .. } = self.locs[at];
        if self.active_name() > segment {
            let keep = self.segments.partition_point(|&name| name <= segment);
            remove_newest_first(&self.dir, &self.segments[keep..])?;
            self.segments.truncate(keep);
            self.active = open_segment(&segment_path(&self.dir, segment), false)?;
        }
        let path = segment_path(&self.dir, segment);
        self.active.set_len(offset).map_err(io_error("truncating", &path))?;
        // fdatasync covers the size change: the size is needed to read the data back.
        self.active.sync_data().map_err(io_error("syncing", &path))?;
        self.unsynced = false;
        self.active_len = offset;
        self.locs.truncate(at);
        self.last = index - 1;
        Ok(())
    }

    fn write_hard_state(&mut self, term: Term, voted_for: &Option<String>) -> Result<(), DiskError> {
        let path = self.dir.join(HARD_STATE_FILE);
        let record = frame(&(term, voted_for), &path)?;
        write_renamed(&self.dir, HARD_STATE_FILE, &[HARD_STATE_MAGIC, &record])?;
        sync_dir(&self.dir)?;
        self.dir_unsynced = false;
        Ok(())
    }

    fn write_snapshot(&mut self, index: u64, term: Term, data: SnapshotData) -> Result<(), DiskError> {
        // An equal index too: if a crash cut short its replacing the log, what is left would
        // start right after it, which recovery cannot tell from a log that continues it.
        let current = self.checkpoint.as_ref().map_or(self.snapshot, |c| c.index);
        if index <= current {
            return Err(DiskError::SnapshotRegress { dir: self.dir.clone(), index, current });
        }
        let continues = index <= self.last && self.locs[(index - self.snapshot - 1) as usize].term == term;
        if continues {
            return self.start_checkpoint(index, term, data);
        }
        self.finish_checkpoint(true)?;
        let data = data.bytes();
        write_renamed(&self.dir, &snapshot_name(index), &[&snapshot_header(index, term, data), data])?;
        self.replace_log(index)?;
        self.remove_snapshots_below(index)
    }

    /// Starts writing a snapshot the log continues (after the one before it, if any, is done):
    /// its bytes encoded if the node deferred that, its file synced and renamed, and the
    /// directory synced. The log is compacted once it is.
    fn start_checkpoint(&mut self, index: u64, term: Term, data: SnapshotData) -> Result<(), DiskError> {
        self.finish_checkpoint(true)?;
        let dir = self.dir.clone();
        let write = move || {
            let data = data.bytes();
            write_renamed(&dir, &snapshot_name(index), &[&snapshot_header(index, term, data), data])?;
            sync_dir(&dir)
        };
        let writer = std::thread::Builder::new()
            .name("muster-snapshot".into())
            .spawn(write)
            .map_err(io_error("starting a thread to write a snapshot in", &self.dir))?;
        self.checkpoint = Some(Checkpoint { index, writer });
        Ok(())
    }

    /// Once the snapshot being written is durable (`wait`: wait for it), compacts the log to it.
    fn finish_checkpoint(&mut self, wait: bool) -> Result<(), DiskError> {
        let Some(c) = self.checkpoint.take_if(|c| wait || c.writer.is_finished()) else { return Ok(()) };
        let path = snapshot_path(&self.dir, c.index);
        c.writer.join().map_err(|_| DiskError::Io {
            action: "writing (the writer panicked)",
            path: path.clone(),
            source: io::Error::other("snapshot writer panicked"),
        })??;
        self.compact_to(c.index)?;
        self.remove_snapshots_below(c.index)
    }

    fn remove_snapshots_below(&self, index: u64) -> Result<(), DiskError> {
        for older in Listing::scan(&self.dir)?.snapshots.into_iter().filter(|&older| older < index) {
            remove(&snapshot_path(&self.dir, older))?;
        }
        Ok(())
    }

    /// Drops the entries up to `index`, which a durable snapshot holds and the log continues.
    fn compact_to(&mut self, index: u64) -> Result<(), DiskError> {
        self.locs.drain(..(index - self.snapshot) as usize);
        self.snapshot = index;
        // The new segment's creation becomes durable with the next batch's directory sync.
        // Until then a crash may lose the empty file, which recovery handles like any log
        // that ends where it ends.
        if self.active_len > 0 {
            self.roll(self.last + 1)?;
        }
        // A segment holds only entries below its successor's name, so one whose successor
        // starts at or below `index + 1` is wholly covered. Deletions need no sync: a file
        // that comes back after a crash holds only what the snapshot covers, and recovery
        // skips it.
        let keep =
            self.segments.windows(2).position(|pair| pair[1] > index + 1).unwrap_or(self.segments.len() - 1);
        for name in self.segments.drain(..keep) {
            remove(&segment_path(&self.dir, name))?;
        }
        Ok(())
    }

    /// Deletes the whole log, which does not continue the snapshot at `index`, and starts an
    /// empty one after it.
    fn replace_log(&mut self, index: u64) -> Result<(), DiskError> {
        // The snapshot is durable before the log it replaces goes. Deleting newest first
        // leaves, after a crash, a log that either ends below `index` or still holds the
        // entry there with another term; recovery drops both.
        sync_dir(&self.dir)?;
        remove_newest_first(&self.dir, &self.segments)?;
        self.segments.clear();
        self.unsynced = false;
        self.start_segment(index + 1)?;
        self.locs.clear();
        self.last = index;
        self.snapshot = index;
        Ok(())
    }

    /// Starts segment `name`; the one left behind is never written again, so it is synced now.
    fn roll(&mut self, name: u64) -> Result<(), DiskError> {
        self.sync_active()?;
        self.start_segment(name)
    }

    fn start_segment(&mut self, name: u64) -> Result<(), DiskError> {
        self.active = open_segment(&segment_path(&self.dir, name), true)?;
        self.segments.push(name);
        self.active_len = 0;
        self.dir_unsynced = true;
        Ok(())
    }

    fn sync_active(&mut self) -> Result<(), DiskError> {
        if self.unsynced {
            let path = segment_path(&self.dir, self.active_name());
            self.active.sync_data().map_err(io_error("syncing", &path))?;
            self.unsynced = false;
        }
        Ok(())
    }

    fn active_name(&self) -> u64 {
        *self.segments.last().expect("a log always has an active segment")
    }
}

/// Hands persists to a [`DiskLog`] running on its own thread.
pub struct DiskHandle {
    tx: mpsc::Sender<(PersistToken, PersistOp)>,
}

impl DiskHandle {
    /// Queues a persist; its token comes back through `done` once it is durable (or failed).
    pub fn submit(&self, token: PersistToken, op: PersistOp) {
        if self.tx.send((token, op)).is_err() {
            tracing::error!(token = token.0, "the disk thread is gone; this persist will never complete");
        }
    }
}

/// A persist at least this long is logged (target `muster::slow`, debug).
const SLOW_BATCH: std::time::Duration = std::time::Duration::from_millis(3);

/// Runs `log` on its own OS thread. Everything queued when the thread wakes becomes one batch
/// (group commit); once it is durable, `done(token, true)` is called for each of its tokens in
/// order. After a failure every token, of that batch and all later ones, is reported with
/// `false`; the thread ends when the handle is dropped.
pub fn spawn(mut log: DiskLog, done: impl Fn(PersistToken, bool) + Send + 'static) -> DiskHandle {
    let (tx, rx) = mpsc::channel::<(PersistToken, PersistOp)>();
    let run = move || {
        while let Ok(first) = rx.recv() {
            let (tokens, ops): (Vec<_>, Vec<_>) = std::iter::once(first).chain(rx.try_iter()).unzip();
            let started = std::time::Instant::now();
            let snapshot = ops.iter().any(|op| matches!(op, PersistOp::Snapshot { .. }));
            let count = ops.len();
            // A failed log stays failed (`Broken`), which is what fails every later batch.
            let ok = match log.persist(ops) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "persist failed");
                    false
                }
            };
            let took = started.elapsed();
            if took >= SLOW_BATCH {
                tracing::debug!(target: "muster::slow", ops = count, snapshot, took_us = took.as_micros() as u64, "slow persist");
            }
            for token in tokens {
                done(token, ok);
            }
        }
    };
    std::thread::Builder::new().name("muster-disk".into()).spawn(run).expect("spawning the disk thread");
    DiskHandle { tx }
}

/// The files the directory holds, by kind, sorted by index.
struct Listing {
    segments: Vec<u64>,
    snapshots: Vec<u64>,
    temps: Vec<PathBuf>,
}

impl Listing {
    fn scan(dir: &Path) -> Result<Listing, DiskError> {
        let mut listing = Listing { segments: Vec::new(), snapshots: Vec::new(), temps: Vec::new() };
        for item in fs::read_dir(dir).map_err(io_error("listing", dir))? {
            let name = item.map_err(io_error("listing", dir))?.file_name();
            // Files this module never writes are left alone.
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(".tmp") {
                listing.temps.push(dir.join(name));
            } else if let Some(index) = parse_index(name, "log-", ".wal") {
                listing.segments.push(index);
            } else if let Some(index) = parse_index(name, "snapshot-", ".snap") {
                listing.snapshots.push(index);
            }
        }
        listing.segments.sort_unstable();
        listing.snapshots.sort_unstable();
        Ok(listing)
    }
}

fn parse_index(name: &str, prefix: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_prefix(prefix)?.strip_suffix(suffix)?;
    if digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

fn segment_path(dir: &Path, name: u64) -> PathBuf {
    dir.join(format!("log-{name:020}.wal"))
}

fn snapshot_name(index: u64) -> String {
    format!("snapshot-{index:020}.snap")
}

fn snapshot_path(dir: &Path, index: u64) -> PathBuf {
    dir.join(snapshot_name(index))
}

/// A segment opened for appending; `create` insists the file is new (names never repeat).
fn open_segment(path: &Path, create: bool) -> Result<File, DiskError> {
    let action = if create { "creating" } else { "opening" };
    OpenOptions::new().append(true).create_new(create).open(path).map_err(io_error(action, path))
}

fn remove(path: &Path) -> Result<(), DiskError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(DiskError::Io { action: "deleting", path: path.into(), source: e })
        }
        _ => Ok(()),
    }
}

/// Deletes these segments newest first, each deletion durable before the next, so a crash
/// leaves a prefix of the log, never one with a hole in it.
fn remove_newest_first(dir: &Path, segments: &[u64]) -> Result<(), DiskError> {
    for &name in segments.iter().rev() {
        remove(&segment_path(dir, name))?;
        sync_dir(dir)?;
    }
    Ok(())
}

/// Replaces the file at `path` with `bytes` so that after a crash it is either the old file
/// or the whole new one (temp file, sync, rename, directory sync).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    write_renamed(dir, name, &[bytes])?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<(), DiskError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_error("syncing the directory", dir))
}

/// Writes `parts` to `<name>.tmp`, syncs it and renames it to `name`, so the file is either
/// the old one or the whole new one. The caller syncs the directory to make the rename durable.
fn write_renamed(dir: &Path, name: &str, parts: &[&[u8]]) -> Result<(), DiskError> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp).map_err(io_error("creating", &tmp))?;
    for part in parts {
        file.write_all(part).map_err(io_error("writing", &tmp))?;
    }
    file.sync_data().map_err(io_error("syncing", &tmp))?;
    let path = dir.join(name);
    fs::rename(&tmp, &path).map_err(io_error("renaming into place", &path))
}

/// `value` as one record: length, crc32, postcard payload.
fn frame<T: Serialize>(value: &T, path: &Path) -> Result<Vec<u8>, DiskError> {
    let mut record = postcard::to_extend(value, vec![0; RECORD_HEADER])
        .map_err(|source| DiskError::Encode { path: path.into(), source })?;
    let len = record.len() - RECORD_HEADER;
    let len32 = u32::try_from(len).map_err(|_| DiskError::RecordTooLarge { path: path.into(), len })?;
    let crc = crc32fast::hash(&record[RECORD_HEADER..]);
    record[..4].copy_from_slice(&len32.to_le_bytes());
    record[4..RECORD_HEADER].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

/// The record at the start of `buf` and its size on disk, or `None` if it is short, fails its
/// CRC or does not decode to exactly one `T`.
fn unframe<T: DeserializeOwned>(buf: &[u8]) -> Option<(T, usize)> {
    let le32 = |at: usize| buf.get(at..at + 4)?.try_into().ok().map(u32::from_le_bytes);
    let len = usize::try_from(le32(0)?).ok()?;
    let payload = buf.get(RECORD_HEADER..RECORD_HEADER.checked_add(len)?)?;
    if crc32fast::hash(payload) != le32(4)? {
        return None;
    }
    match postcard::take_from_bytes(payload) {
        Ok((value, [])) => Some((value, RECORD_HEADER + len)),
        _ => None,
    }
}

fn snapshot_header(index: u64, term: Term, data: &[u8]) -> [u8; SNAPSHOT_HEADER] {
    let mut header = [0; SNAPSHOT_HEADER];
    header[..8].copy_from_slice(SNAPSHOT_MAGIC);
    header[8..16].copy_from_slice(&index.to_le_bytes());
    header[16..24].copy_from_slice(&term.0.to_le_bytes());
    header[24..32].copy_from_slice(&(data.len() as u64).to_le_bytes());
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header[8..32]);
    crc.update(data);
    header[32..].copy_from_slice(&crc.finalize().to_le_bytes());
    header
}

/// The snapshot named `index` if it checks out whole; `None` if it does not.
fn read_snapshot(dir: &Path, index: u64) -> Result<Option<Snapshot>, DiskError> {
    let path = snapshot_path(dir, index);
    let mut bytes = fs::read(&path).map_err(io_error("reading", &path))?;
    if bytes.len() < SNAPSHOT_HEADER {
        return Ok(None);
    }
    let term = Term(u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")));
    let data = bytes.split_off(SNAPSHOT_HEADER);
    // Rebuilding the header from what it claims checks magic, index, length and crc at once.
    Ok((bytes == snapshot_header(index, term, &data)).then_some((Index(index), term, data)))
}

/// The newest snapshot that checks out, and the indexes of the corrupt ones newer than it.
fn newest_valid_snapshot(dir: &Path, snapshots: &[u64]) -> Result<(Option<Snapshot>, Vec<u64>), DiskError> {
    let mut corrupt = Vec::new();
    for &index in snapshots.iter().rev() {
        match read_snapshot(dir, index)? {
            Some(snapshot) => return Ok((Some(snapshot), corrupt)),
            None => {
                tracing::warn!(path = %snapshot_path(dir, index).display(), "snapshot is corrupt; trying an older one");
                corrupt.push(index);
            }
        }
    }
    Ok((None, corrupt))
}

/// The hard state file is replaced by rename, so a bad one is damage, not a torn write.
fn read_hard_state(dir: &Path) -> Result<Option<(Term, Option<String>)>, DiskError> {
    let path = dir.join(HARD_STATE_FILE);
    let bytes = match fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DiskError::Io { action: "reading", path, source: e }),
    };
    let record = bytes.strip_prefix(HARD_STATE_MAGIC);
    match record.and_then(|record| unframe(record).filter(|&(_, used)| used == record.len())) {
        Some((hard_state, _)) => Ok(Some(hard_state)),
        None => Err(DiskError::Corrupt { path, reason: "the hard state does not check out".into() }),
    }
}

#[derive(Default)]
struct Replay {
    /// The entries after the snapshot, in order.
    entries: Vec<Entry>,
    locs: VecDeque<Loc>,
    /// Where the first bad record is: (position in the segment list, offset).
    torn: Option<(usize, u64)>,
    /// The log holds the snapshot's index with another term: the snapshot replaced it, so
    /// none of it counts.
    stale: bool,
}

/// Reads the segments in order, keeping entries after the snapshot at `snapshot` with `term`,
/// up to the first bad record.
fn replay(dir: &Path, segments: &[u64], snapshot: u64, term: Term) -> Result<Replay, DiskError> {
    let mut out = Replay::default();
    for (pos, &name) in segments.iter().enumerate() {
        let path = segment_path(dir, name);
        let bytes = fs::read(&path).map_err(io_error("reading", &path))?;
        let limit = segments.get(pos + 1).copied().unwrap_or(u64::MAX);
        let mut offset = 0;
        while offset < bytes.len() {
            let Some((entry, used)) = unframe::<Entry>(&bytes[offset..]) else {
                tracing::warn!(
                    path = %path.display(),
                    offset,
                    dropped_segments = segments.len() - pos - 1,
                    "torn record; the log ends here"
                );
                out.torn = Some((pos, offset as u64));
                return Ok(out);
            };
            let index = entry.index.0;
            if index < name || index >= limit {
                let reason =
                    format!("entry {index} lies outside the range {name}..{limit} the file names promise");
                return Err(DiskError::Corrupt { path, reason });
            }
            // Entries the snapshot covers may linger in a segment that also holds later ones,
            // or in one a crash kept from being deleted.
            if out.entries.is_empty() && index <= snapshot {
                // What a crash left of a log the snapshot replaced (see `replace_log`).
                if index == snapshot && entry.term != term {
                    return Ok(Replay { stale: true, ..Replay::default() });
                }
                offset += used;
                continue;
            }
            let expected = out.entries.last().map_or(snapshot + 1, |e| e.index.0 + 1);
            if index != expected {
                let reason = format!("entry {index} where {expected} was expected (snapshot at {snapshot})");
                return Err(DiskError::Corrupt { path, reason });
            }
            out.locs.push_back(Loc { segment: name, offset: offset as u64, term: entry.term });
            out.entries.push(entry);
            offset += used;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_core::fsm::kv::KvSetMode;
    use muster_core::fsm::Command;
    use muster_core::raft::disk;
    use proptest::prelude::*;
    use std::ops::RangeInclusive;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    /// A fresh directory under the system temp dir, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let unique =
                format!("muster-disk-{tag}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
            let path = std::env::temp_dir().join(unique);
            let _ = fs::remove_dir_all(&path);
            TempDir(path)
        }

        fn raft(&self) -> PathBuf {
            self.0.join("raft")
        }

        fn open(&self) -> (DiskLog, Recovered) {
            DiskLog::open(&self.0).unwrap()
        }

        /// Opens with tiny segments, so a few entries span several files.
        fn open_small(&self) -> (DiskLog, Recovered) {
            let (mut log, recovered) = self.open();
            log.segment_bytes = 512;
            (log, recovered)
        }

        fn segments(&self) -> Vec<u64> {
            Listing::scan(&self.raft()).unwrap().segments
        }

        fn snapshots(&self) -> Vec<u64> {
            Listing::scan(&self.raft()).unwrap().snapshots
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn entry(index: u64, term: u64) -> Entry {
        // Values of varying size so records differ in length.
        let value = vec![term as u8; (index % 5 * 20) as usize];
        let command = Command::KvSet { key: format!("k{index}"), value, flags: term, mode: KvSetMode::Set };
        Entry { term: Term(term), index: Index(index), command }
    }

    fn append(indexes: RangeInclusive<u64>, term: u64) -> PersistOp {
        PersistOp::AppendLog { entries: indexes.map(|i| entry(i, term)).collect() }
    }

    fn hard_state(term: u64, vote: &str) -> PersistOp {
        PersistOp::HardState { term: Term(term), voted_for: Some(vote.to_string()) }
    }

    fn snapshot(index: u64, term: u64) -> PersistOp {
        PersistOp::Snapshot {
            index: Index(index),
            term: Term(term),
            data: format!("state at {index}").into_bytes().into(),
        }
    }

    /// Persists `batch` and applies it to `model`, the ideal disk core defines.
    fn persist(log: &mut DiskLog, model: &mut Recovered, batch: Vec<PersistOp>) {
        log.persist(batch.clone()).unwrap();
        log.settle().unwrap();
        for op in batch {
            disk::apply(model, op);
        }
    }

    fn flip_byte(path: &Path, at: u64) {
        let mut bytes = fs::read(path).unwrap();
        bytes[at as usize] ^= 0x5a;
        fs::write(path, bytes).unwrap();
    }

    fn file_len(path: &Path) -> u64 {
        fs::metadata(path).unwrap().len()
    }

    #[test]
    fn append_and_recover_round_trip() {
        let dir = TempDir::new("round-trip");
        let (mut log, recovered) = dir.open();
        assert_eq!(recovered, Recovered::default());
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![hard_state(1, "a"), append(1..=3, 1)]);
        persist(&mut log, &mut model, vec![append(4..=5, 1), hard_state(2, "b")]);
        drop(log);

        let (mut log, recovered) = dir.open();
        assert_eq!(recovered, model);
        persist(&mut log, &mut model, vec![append(6..=6, 2)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn one_persist_commits_a_large_batch() {
        let dir = TempDir::new("group");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        let mut batch = Vec::new();
        for i in 1..=300 {
            batch.push(append(i..=i, 1 + i / 100));
            if i % 50 == 0 {
                batch.push(hard_state(1 + i / 100, "a"));
            }
            if i == 150 {
                batch.push(snapshot(120, 2));
            }
        }
        persist(&mut log, &mut model, batch);
        assert!(dir.segments().len() > 10, "the batch rolled through many segments");
        assert!(dir.segments()[0] <= 121, "the segment holding entry 121 survives compaction");
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn a_torn_tail_is_cut_and_appends_continue() {
        let dir = TempDir::new("torn");
        let (mut log, _) = dir.open();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=5, 1)]);
        drop(log);
        let segment = segment_path(&dir.raft(), 1);
        let intact = file_len(&segment);

        // Zeros (a file extended but never written), a header whose CRC fails, a huge length.
        let tails: [&[u8]; 3] = [&[0; 16], &[4, 0, 0, 0, 1, 2, 3, 4, 9, 9, 9, 9], &[0xab; 13]];
        for tail in tails {
            OpenOptions::new().append(true).open(&segment).unwrap().write_all(tail).unwrap();
            let (_, recovered) = dir.open();
            assert_eq!(recovered, model);
            assert_eq!(file_len(&segment), intact, "the garbage is gone from the file");
        }

        let (mut log, _) = dir.open();
        persist(&mut log, &mut model, vec![append(6..=6, 1)]);
        drop(log);
        assert_eq!(dir.open().1, model);

        // The last record cut in half: entry 6 is gone, the rest stays.
        fs::OpenOptions::new().write(true).open(&segment).unwrap().set_len(file_len(&segment) - 10).unwrap();
        model.entries.pop();
        let (mut log, recovered) = dir.open();
        assert_eq!(recovered, model);
        persist(&mut log, &mut model, vec![append(6..=7, 2)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn a_bad_record_mid_log_drops_everything_after_it() {
        let dir = TempDir::new("mid");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        for i in (1..=30).step_by(3) {
            persist(&mut log, &mut model, vec![append(i..=i + 2, 1)]);
        }
        assert!(dir.segments().len() >= 3);
        let Loc { segment, offset, .. } = log.locs[1];
        assert_eq!(segment, 1);
        drop(log);
        flip_byte(&segment_path(&dir.raft(), 1), offset + RECORD_HEADER as u64 + 1);

        let (mut log, recovered) = dir.open_small();
        model.entries.truncate(1);
        assert_eq!(recovered, model);
        assert_eq!(dir.segments(), [1]);
        persist(&mut log, &mut model, vec![append(2..=3, 2)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn an_append_below_the_end_replaces_the_suffix() {
        let dir = TempDir::new("overwrite");
        let (mut log, _) = dir.open();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=10, 1)]);
        persist(&mut log, &mut model, vec![append(6..=8, 2)]);
        let terms: Vec<u64> = model.entries.iter().map(|e| e.term.0).collect();
        assert_eq!(terms, [1, 1, 1, 1, 1, 2, 2, 2]);
        drop(log);
        let (mut log, recovered) = dir.open();
        assert_eq!(recovered, model);
        persist(&mut log, &mut model, vec![append(9..=9, 2)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn an_overwrite_reaching_back_segments_deletes_the_later_ones() {
        let dir = TempDir::new("overwrite-segments");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=30, 1)]);
        let before = dir.segments();
        assert!(before.len() >= 3);
        let target = before[1] + 1;
        persist(&mut log, &mut model, vec![append(target..=target + 1, 2)]);
        assert_eq!(dir.segments(), before[..2]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn a_snapshot_compacts_and_recovery_starts_after_it() {
        let dir = TempDir::new("compact");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=40, 1)]);
        persist(&mut log, &mut model, vec![snapshot(5, 1)]);
        persist(&mut log, &mut model, vec![snapshot(25, 1)]);
        let segments = dir.segments();
        assert!(segments[0] <= 26 && segments[1] > 26, "only segments wholly ≤ 25 went: {segments:?}");
        assert_eq!(*segments.last().unwrap(), 41, "a fresh segment follows the snapshot");
        assert_eq!(dir.snapshots(), [25]);
        drop(log);

        let (mut log, recovered) = dir.open_small();
        assert_eq!(recovered, model);
        assert_eq!(recovered.entries.first().unwrap().index, Index(26));
        // A snapshot past the end of the log (as InstallSnapshot brings) leaves no log at all.
        persist(&mut log, &mut model, vec![append(41..=45, 1), snapshot(100, 1)]);
        assert_eq!(dir.segments(), [101]);
        drop(log);
        let (mut log, recovered) = dir.open_small();
        assert_eq!(recovered, model);
        persist(&mut log, &mut model, vec![append(101..=102, 3)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn appends_go_on_while_a_continuing_snapshot_is_written() {
        let dir = TempDir::new("checkpoint");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        let batch = vec![append(1..=40, 1), snapshot(30, 1), append(41..=42, 1)];
        for op in batch.iter().cloned() {
            disk::apply(&mut model, op);
        }
        log.persist(batch).unwrap();
        // Acknowledged before the snapshot is known durable; none of what it covers is gone.
        for i in 43..=60 {
            log.persist(vec![append(i..=i, 1)]).unwrap();
            disk::apply(&mut model, append(i..=i, 1));
        }
        log.settle().unwrap();
        assert_eq!(dir.snapshots(), [30]);
        let segments = dir.segments();
        assert!(segments[0] <= 31 && segments[0] > 1, "compacted to the snapshot once settled: {segments:?}");
        log.persist(vec![snapshot(50, 1)]).unwrap();
        log.settle().unwrap();
        disk::apply(&mut model, snapshot(50, 1));
        drop(log);
        let (mut log, recovered) = dir.open_small();
        assert_eq!(recovered.snapshot.as_ref().map(|s| s.0), Some(Index(50)));
        assert_eq!(recovered, model);
        // A snapshot not newer than the one in flight is refused.
        log.persist(vec![snapshot(55, 1)]).unwrap();
        assert!(matches!(
            log.persist(vec![snapshot(52, 1)]),
            Err(DiskError::SnapshotRegress { current: 55, .. })
        ));
    }

    #[test]
    fn hard_state_survives_compaction() {
        let dir = TempDir::new("hard-state");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![hard_state(3, "b"), append(1..=20, 3)]);
        persist(&mut log, &mut model, vec![snapshot(20, 3)]);
        assert!(dir.segments().iter().all(|&name| name > 20));
        drop(log);
        let (mut log, recovered) = dir.open_small();
        assert_eq!(recovered.hard_state, Some((Term(3), Some("b".into()))));
        assert_eq!(recovered, model);
        persist(&mut log, &mut model, vec![append(21..=22, 3), hard_state(4, "c"), snapshot(50, 4)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn a_snapshot_the_log_does_not_continue_replaces_it() {
        let dir = TempDir::new("replace");
        let (mut log, _) = dir.open_small();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=30, 1), append(21..=30, 2)]);
        // Entry 25 has term 2: a leader's snapshot there with term 3 replaces the log.
        persist(&mut log, &mut model, vec![snapshot(25, 3)]);
        assert!(model.entries.is_empty());
        assert_eq!(dir.segments(), [26]);
        persist(&mut log, &mut model, vec![append(26..=28, 3)]);
        drop(log);
        let (mut log, recovered) = dir.open_small();
        assert_eq!(recovered, model);
        persist(&mut log, &mut model, vec![append(29..=29, 3)]);
        drop(log);
        assert_eq!(dir.open().1, model);
    }

    #[test]
    fn recovery_drops_what_a_crash_left_of_a_replaced_log() {
        // Entry 25 has another term; 40 is past the log's end.
        for (index, term) in [(25, 3), (40, 2)] {
            let dir = TempDir::new("replace-crash");
            let (mut log, _) = dir.open_small();
            let mut model = Recovered::default();
            persist(&mut log, &mut model, vec![append(1..=30, 2)]);
            let old: Vec<(u64, Vec<u8>)> = dir
                .segments()
                .into_iter()
                .map(|name| (name, fs::read(segment_path(&dir.raft(), name)).unwrap()))
                .collect();
            persist(&mut log, &mut model, vec![snapshot(index, term)]);
            drop(log);
            let snapshotted = dir.0.join("snapshotted");
            fs::rename(dir.raft(), &snapshotted).unwrap();

            // A crash after the snapshot's rename, while deleting the log newest first.
            for kept in 1..=old.len() {
                let _ = fs::remove_dir_all(dir.raft());
                fs::create_dir(dir.raft()).unwrap();
                fs::copy(snapshotted.join(snapshot_name(index)), snapshot_path(&dir.raft(), index)).unwrap();
                for (name, bytes) in &old[..kept] {
                    fs::write(segment_path(&dir.raft(), *name), bytes).unwrap();
                }
                let mut model = model.clone();
                let (mut log, recovered) = dir.open_small();
                assert_eq!(recovered, model, "{kept} segments left");
                // What is left below the snapshot's index may linger; it holds only what it covers.
                if index <= 30 && old.get(kept).is_none_or(|&(next, _)| next > index) {
                    assert_eq!(dir.segments(), [index + 1], "{kept} segments left holding entry {index}");
                }
                persist(&mut log, &mut model, vec![append(index + 1..=index + 3, term)]);
                drop(log);
                assert_eq!(dir.open().1, model, "{kept} segments left");
            }
        }
    }

    #[test]
    fn a_corrupt_newest_snapshot_falls_back_to_an_older_one() {
        let dir = TempDir::new("fallback");
        let (mut log, _) = dir.open();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=20, 1), snapshot(5, 1)]);
        let older = fs::read(snapshot_path(&dir.raft(), 5)).unwrap();
        persist(&mut log, &mut model, vec![snapshot(10, 1)]);
        drop(log);
        // As if a crash came between writing snapshot 10 and deleting snapshot 5.
        fs::write(snapshot_path(&dir.raft(), 5), older).unwrap();
        let newest = snapshot_path(&dir.raft(), 10);
        flip_byte(&newest, file_len(&newest) - 1);

        let (_, recovered) = dir.open();
        let mut expected = Recovered::default();
        disk::apply(&mut expected, append(1..=20, 1));
        disk::apply(&mut expected, snapshot(5, 1));
        assert_eq!(recovered, expected);
        assert_eq!(dir.snapshots(), [5], "the corrupt snapshot is deleted");
    }

    #[test]
    fn a_corrupt_only_snapshot_falls_back_to_the_whole_log() {
        let dir = TempDir::new("fallback-log");
        let (mut log, _) = dir.open();
        let mut model = Recovered::default();
        persist(&mut log, &mut model, vec![append(1..=20, 1), snapshot(10, 1)]);
        drop(log);
        flip_byte(&snapshot_path(&dir.raft(), 10), 20);

        let (_, recovered) = dir.open();
        assert_eq!(recovered.snapshot, None);
        assert_eq!(recovered.entries, (1..=20).map(|i| entry(i, 1)).collect::<Vec<_>>());
    }

    #[test]
    fn a_corrupt_snapshot_without_the_log_behind_it_is_an_error() {
        let dir = TempDir::new("lost-compacted");
        let (mut log, _) = dir.open_small();
        persist(&mut log, &mut Recovered::default(), vec![append(1..=40, 1), snapshot(30, 1)]);
        drop(log);
        let path = snapshot_path(&dir.raft(), 30);
        flip_byte(&path, 40);
        let err = DiskLog::open(&dir.0).err().expect("the log no longer starts at 1");
        assert!(matches!(err, DiskError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("log-"), "{err}");
        assert!(path.exists(), "nothing is deleted when recovery refuses");

        // A snapshot installed past an empty log: nothing at all covers it.
        let dir = TempDir::new("lost-installed");
        let (mut log, _) = dir.open();
        persist(&mut log, &mut Recovered::default(), vec![snapshot(100, 1)]);
        drop(log);
        flip_byte(&snapshot_path(&dir.raft(), 100), 0);
        let err = DiskLog::open(&dir.0).err().expect("snapshot 100 is lost");
        assert!(matches!(err, DiskError::SnapshotLost { index: 100, last: 0, .. }), "{err}");
        assert!(err.to_string().contains("snapshot-00000000000000000100.snap"), "{err}");
    }

    #[test]
    fn bad_appends_are_refused_and_the_log_stays_failed() {
        let dir = TempDir::new("refused");
        let (mut log, _) = dir.open();
        log.persist(vec![append(1..=3, 1)]).unwrap();
        let err = log.persist(vec![append(5..=5, 1)]).unwrap_err();
        assert!(matches!(err, DiskError::Gap { after: 3, got: 5, .. }), "{err}");
        let err = log.persist(vec![append(4..=4, 1)]).unwrap_err();
        assert!(matches!(err, DiskError::Broken { .. }), "{err}");

        let dir = TempDir::new("refused-gap-inside");
        let (mut log, _) = dir.open();
        let entries = vec![entry(1, 1), entry(3, 1)];
        let err = log.persist(vec![PersistOp::AppendLog { entries }]).unwrap_err();
        assert!(matches!(err, DiskError::Gap { after: 1, got: 3, .. }), "{err}");

        let dir = TempDir::new("refused-covered");
        let (mut log, _) = dir.open();
        let err = log.persist(vec![snapshot(10, 1), append(10..=11, 1)]).unwrap_err();
        assert!(matches!(err, DiskError::BeforeSnapshot { first: 10, snapshot: 10, .. }), "{err}");

        let dir = TempDir::new("refused-same-snapshot");
        let (mut log, _) = dir.open();
        let err = log.persist(vec![append(1..=3, 1), snapshot(2, 1), snapshot(2, 1)]).unwrap_err();
        assert!(matches!(err, DiskError::SnapshotRegress { index: 2, current: 2, .. }), "{err}");
    }

    fn spawn_collecting(log: DiskLog) -> (DiskHandle, mpsc::Receiver<(PersistToken, bool)>) {
        let (tx, rx) = mpsc::channel();
        (spawn(log, move |token, ok| tx.send((token, ok)).unwrap()), rx)
    }

    fn collect(rx: &mpsc::Receiver<(PersistToken, bool)>, n: usize) -> Vec<(PersistToken, bool)> {
        (0..n).map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap()).collect()
    }

    #[test]
    fn the_disk_thread_reports_tokens_in_order() {
        let dir = TempDir::new("thread");
        let (handle, rx) = spawn_collecting(dir.open().0);
        for i in 1..=100 {
            handle.submit(PersistToken(i), append(i..=i, 1));
        }
        let expected: Vec<_> = (1..=100).map(|i| (PersistToken(i), true)).collect();
        assert_eq!(collect(&rx, 100), expected);
        drop(handle);
        assert_eq!(dir.open().1.entries.len(), 100);
    }

    #[test]
    fn the_disk_thread_fails_every_token_after_an_error() {
        let dir = TempDir::new("thread-fail");
        let (handle, rx) = spawn_collecting(dir.open().0);
        handle.submit(PersistToken(1), append(1..=1, 1));
        handle.submit(PersistToken(2), append(2..=2, 1));
        assert_eq!(collect(&rx, 2), [(PersistToken(1), true), (PersistToken(2), true)]);
        // Writing the hard state needs a file created in the directory, which is gone.
        fs::remove_dir_all(dir.raft()).unwrap();
        handle.submit(PersistToken(3), hard_state(2, "a"));
        handle.submit(PersistToken(4), append(3..=3, 2));
        handle.submit(PersistToken(5), append(4..=4, 2));
        let failed: Vec<_> = (3..=5).map(|i| (PersistToken(i), false)).collect();
        assert_eq!(collect(&rx, 3), failed);
    }

    /// One step of a random history; turned into an op that is valid for the log as it is.
    #[derive(Clone, Debug)]
    enum Step {
        /// Entries starting `back` before the next index (never into the snapshot).
        Append {
            back: u64,
            count: u64,
            term: u64,
        },
        HardState {
            term: u64,
            vote: bool,
        },
        /// A snapshot somewhere after the current one up to a little past the log's end, with
        /// `term`, or else the term of the log's entry there: the log may or may not continue it.
        Snapshot {
            at: u64,
            term: Option<u64>,
        },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (0..6u64, 1..6u64, 1..5u64).prop_map(|(back, count, term)| Step::Append { back, count, term }),
            1 => (1..5u64, any::<bool>()).prop_map(|(term, vote)| Step::HardState { term, vote }),
            1 => (0..64u64, prop::option::of(1..6u64)).prop_map(|(at, term)| Step::Snapshot { at, term }),
        ]
    }

    fn op_for(step: &Step, model: &Recovered) -> PersistOp {
        let snap = model.snapshot.as_ref().map_or(0, |(index, _, _)| index.0);
        let last = model.entries.last().map_or(snap, |e| e.index.0);
        match *step {
            Step::Append { back, count, term } => {
                let first = (last + 1).saturating_sub(back).max(snap + 1);
                append(first..=first + count - 1, term)
            }
            Step::HardState { term, vote } => {
                PersistOp::HardState { term: Term(term), voted_for: vote.then(|| format!("n{term}")) }
            }
            Step::Snapshot { at, term } => {
                let index = snap + 1 + at % (last + 3 - snap);
                let logged = model.entries.iter().find(|e| e.index.0 == index).map(|e| e.term.0);
                snapshot(index, term.or(logged).unwrap_or(1))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn recovery_matches_the_model(
            batches in prop::collection::vec((prop::collection::vec(step(), 1..4), prop::bool::weighted(0.3)), 1..12)
        ) {
            let dir = TempDir::new("prop");
            let (mut log, _) = dir.open_small();
            let mut model = Recovered::default();
            for (steps, reopen) in &batches {
                let mut batch = Vec::new();
                for step in steps {
                    batch.push(op_for(step, &model));
                    let op = op_for(step, &model);
                    disk::apply(&mut model, op);
                }
                log.persist(batch).unwrap();
                log.settle().unwrap();
                if *reopen {
                    drop(log);
                    let (reopened, recovered) = dir.open_small();
                    prop_assert_eq!(&recovered, &model);
                    log = reopened;
                }
            }
            drop(log);
            prop_assert_eq!(dir.open().1, model);
        }
    }
}
