//! Snapshots: taking one, compacting the log, and sending and installing one.
//!
//! Owns the snapshot image (the caller's state-machine bytes plus the membership in force at
//! the snapshot's index, since configuration entries below it leave the log), the latest
//! image kept in memory to send to lagging followers, compaction that keeps
//! `snapshot_trailing` entries below the snapshot, and a follower's InstallSnapshot (Raft
//! Figure 13): if its log holds the snapshot's last entry it keeps what follows, otherwise
//! it discards the log; either way it tells the caller to restore its state machine. Never
//! interprets the state bytes. The image is what `PersistOp::Snapshot` carries and what
//! `Recovered` hands back; `Replica::snapshot_state` unwraps it.

use serde::{Deserialize, Serialize};

use super::log::Log;
use super::membership::Membership;
use super::message::Message;
use super::replica::RaftOutput;
use super::replica::Replica;
use super::SnapshotData;
use crate::ids::{Index, Term};
use crate::io::PersistOp;

/// What a Raft snapshot holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Image {
    pub(super) membership: Membership,
    pub(super) state: Vec<u8>,
}

/// An image as `Image` encodes it, borrowing the state's bytes: encoding copies them once,
/// into the image, rather than into an `Image` first.
#[derive(Serialize)]
struct ImageRef<'a> {
    membership: &'a Membership,
    state: &'a [u8],
}

impl Image {
    fn encode(membership: &Membership, state: &[u8]) -> Vec<u8> {
        postcard::to_allocvec(&ImageRef { membership, state }).expect("snapshot images always encode")
    }

    pub(super) fn decode(bytes: &[u8]) -> Result<Image, String> {
        postcard::from_bytes(bytes).map_err(|e| e.to_string())
    }
}

/// The latest snapshot, encoded, as sent to followers.
#[derive(Debug, Clone)]
pub(super) struct StoredSnapshot {
    pub(super) index: Index,
    pub(super) term: Term,
    pub(super) image: SnapshotData,
}

impl Replica {
    /// The caller's state as of `index`: persist a snapshot there and compact the log.
    /// Ignored unless `index` is committed and newer than the last snapshot (or, with none
    /// yet, than index 0: a snapshot there holds no entry, so a disk could not tell that the
    /// log continues it and would drop the whole log).
    pub(super) fn take_snapshot(&mut self, index: Index, data: SnapshotData, out: &mut Vec<RaftOutput>) {
        let newer = index > self.snapshot.as_ref().map_or(Index::ZERO, |s| s.index);
        if index > self.commit || !newer || index < self.log.offset() {
            return;
        }
        let term = self.log.term_at(index).expect("a committed index at or above the offset is held");
        let membership = self.configs.at(index).clone();
        // Made where the bytes are first needed (the host's snapshot writer, normally).
        let image = SnapshotData::deferred(move || Image::encode(&membership, data.bytes()));
        self.configs.fold_to(index);
        self.persist(PersistOp::Snapshot { index, term, data: image.clone() }, out);
        self.snapshot = Some(StoredSnapshot { index, term, image });
        let keep_from = Index(index.0.saturating_sub(self.cfg.snapshot_trailing));
        self.log.compact(keep_from);
    }

    /// Sends `peer` the latest snapshot: its next entry is no longer in the log.
    pub(super) fn send_snapshot(&mut self, peer: &str, out: &mut Vec<RaftOutput>) {
        let now = self.now;
        let s = self.snapshot.as_ref().expect("a compacted log always has a snapshot below it");
        let (index, term_of_index, data) = (s.index, s.term, s.image.bytes().to_vec());
        let Some(l) = self.leadership() else { return };
        let read_ctx = l.reads.round();
        let Some(p) = l.progress.get_mut(peer) else { return };
        p.snapshot_sent(index, now);
        let msg = Message::InstallSnapshot {
            term: self.term,
            leader: self.cfg.id.clone(),
            index,
            term_of_index,
            data,
            read_ctx,
        };
        self.send(peer.to_string(), msg, out);
    }

    /// A follower's InstallSnapshot handling (the current leader sent it).
    pub(super) fn on_install_snapshot(
        &mut self,
        from: String,
        index: Index,
        term_of_index: Term,
        data: Vec<u8>,
        read_ctx: u64,
        out: &mut Vec<RaftOutput>,
    ) {
        // A leader's log holds no term above its own; a log starting there would make this
        // replica's next entries go back in term.
        if term_of_index > self.term {
            return;
        }
        let reply = Message::InstallSnapshotResp { term: self.term, index, read_ctx };
        if index <= self.commit {
            // Already here: the log matches the leader's through the commit index.
            return self.send_when_durable(from, reply, out);
        }
        let Ok(image) = Image::decode(&data) else { return };
        if self.log.term_at(index) == Some(term_of_index) {
            self.log.compact(index);
            self.configs.fold_to(index);
        } else {
            self.log = Log::starting_at(index, term_of_index);
            self.configs.reset(index, image.membership);
            self.durability.cap(index);
        }
        self.commit = index;
        let data = SnapshotData::ready(data);
        let token = self.persist(PersistOp::Snapshot { index, term: term_of_index, data: data.clone() }, out);
        self.durability.mark_log(token, index);
        self.snapshot = Some(StoredSnapshot { index, term: term_of_index, image: data });
        out.push(RaftOutput::InstallSnapshot { index, term: term_of_index, data: image.state });
        self.send_when_durable(from, reply, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_encoded_from_borrowed_state_is_the_image_encoding() {
        let membership = Membership::of_voters(["a:8300".to_string(), "b:8300".to_string()]);
        let state = vec![0u8, 7, 255, 128, 1];
        let owned =
            postcard::to_allocvec(&Image { membership: membership.clone(), state: state.clone() }).unwrap();
        let borrowed = Image::encode(&membership, &state);
        assert_eq!(borrowed, owned, "snapshots written before still decode");
        assert_eq!(Image::decode(&borrowed), Ok(Image { membership, state }));
    }
}
