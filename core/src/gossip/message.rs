//! What members say to each other: datagram messages (probes and piggybacked news) and
//! the stream state exchange (push-pull).
//!
//! Owns the message vocabulary and its sizes. Never decides what to send; `wire` turns
//! these into bytes (and back) for hosts that need bytes.

use super::{Incarnation, LamportTime, State};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Member tags: role, datacenter, ports, build (Consul's `Tags` in `/v1/agent/members`).
pub type Tags = BTreeMap<String, String>;

/// Who a member is: its unique name, the gossip address others reach it at, its tags.
/// Shared behind an `Arc` so every member's table can hold it without a copy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub name: Arc<str>,
    pub addr: Arc<str>,
    pub tags: Tags,
}

/// One datagram message. A packet carries several (a probe plus piggybacked news).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Msg {
    /// "Are you `target`?" Answered with `Ack` to the packet's source.
    Ping {
        seq: u32,
        target: Arc<str>,
    },
    /// "Probe `target` at `addr` for me"; the relay acks (or nacks) back to `reply_to`.
    IndirectPing {
        seq: u32,
        target: Arc<str>,
        addr: Arc<str>,
        reply_to: Arc<str>,
        nack: bool,
    },
    /// `payload`: the responder's network coordinate (postcard), which the prober
    /// updates its own with; empty when a relay passes an indirect probe's ack on.
    Ack {
        seq: u32,
        payload: Vec<u8>,
    },
    /// The relay is alive but heard nothing from the target: the requester's own link is
    /// fine, which Lifeguard counts in its favour.
    Nack {
        seq: u32,
    },
    Alive {
        incarnation: Incarnation,
        member: Arc<Identity>,
    },
    Suspect {
        incarnation: Incarnation,
        node: Arc<str>,
        from: Arc<str>,
    },
    /// `from == node` means the member left on purpose.
    Dead {
        incarnation: Incarnation,
        node: Arc<str>,
        from: Arc<str>,
    },
    /// A serf intent: `leave` marks a member leaving/left (`prune` also forgets it),
    /// `join` cancels an earlier leave.
    Intent {
        leave: bool,
        node: Arc<str>,
        ltime: LamportTime,
        prune: bool,
    },
    /// A user event (`/v1/event/fire`).
    User {
        ltime: LamportTime,
        name: String,
        payload: Vec<u8>,
    },
    /// A serf query: gossiped to everyone, each member answers `reply_to` directly.
    Query {
        ltime: LamportTime,
        id: u32,
        name: String,
        payload: Vec<u8>,
        reply_to: Arc<str>,
    },
    /// One member's answer to query `id`.
    QueryResponse {
        ltime: LamportTime,
        id: u32,
        from: Arc<str>,
        payload: Vec<u8>,
    },
}

/// A datagram: messages for one recipient.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packet {
    pub msgs: Vec<Msg>,
}

/// One member as a push-pull sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberState {
    pub member: Arc<Identity>,
    pub incarnation: Incarnation,
    pub state: State,
    pub leaving: bool,
    pub intent: LamportTime,
}

/// Full state exchange over a stream: on join, on reconnect to a failed member, and
/// periodically with a random member, so news lost by gossip still arrives.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushPull {
    /// The sender's gossip address: a reply goes there.
    pub from: Arc<str>,
    /// Set by a joiner and echoed in the reply, so the joiner knows which join it answers.
    pub join: Option<u64>,
    pub reply: bool,
    pub members: Vec<MemberState>,
    pub member_clock: LamportTime,
    pub event_clock: LamportTime,
    /// The user events the sender still remembers (serf's recent-event buffer), so a member
    /// that missed an event's gossip (lost packets, a partition) still gets it once.
    pub events: Vec<RecentEvent>,
}

/// A user event carried by a push-pull.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentEvent {
    pub ltime: LamportTime,
    pub name: String,
    pub payload: Vec<u8>,
}

/// Bytes a message adds to a packet once encoded.
pub fn encoded_size(msg: &Msg) -> usize {
    postcard::to_allocvec(msg).map(|v| v.len()).unwrap_or(usize::MAX / 2)
}
