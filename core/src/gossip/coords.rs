//! Network coordinates carried on probes, as serf's ping delegate does: every ack carries
//! the responder's coordinate, and a direct probe's round trip updates the prober's own.
//!
//! Owns this member's coordinate in its pool and the last coordinate each member sent.
//! Never decides what the coordinates are used for (the node sorts answers and stores them
//! in the catalog); never trusts a peer's bytes: a payload that does not decode, or a
//! coordinate the Vivaldi client refuses, changes nothing.

use std::sync::Arc;

use super::Gossip;
use crate::coordinate::Coordinate;
use crate::time::Duration;

impl Gossip {
    /// What an ack carries: this member's coordinate.
    pub(super) fn coordinate_payload(&self) -> Vec<u8> {
        postcard::to_allocvec(self.coords.coordinate()).unwrap_or_default()
    }

    /// A direct probe of `member` was answered after `rtt`, carrying `payload`.
    pub(super) fn observe_rtt(&mut self, member: &Arc<str>, payload: &[u8], rtt: Duration) {
        let Ok(theirs) = postcard::from_bytes::<Coordinate>(payload) else { return };
        if self.coords.update(member, &theirs, rtt, &mut self.coord_rng).is_ok() {
            self.coord_cache.insert(member.clone(), theirs);
        }
    }

    pub(super) fn forget_coordinate(&mut self, member: &str) {
        self.coords.forget(member);
        self.coord_cache.remove(member);
    }

    /// This member's coordinate in this pool.
    pub fn coordinate(&self) -> &Coordinate {
        self.coords.coordinate()
    }

    /// The coordinate `member` last sent, or this member's own.
    pub fn member_coordinate(&self, member: &str) -> Option<&Coordinate> {
        if *member == *self.me.name {
            return Some(self.coordinate());
        }
        self.coord_cache.get(member)
    }
}
