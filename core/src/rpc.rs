//! Messages on the server port and their wire frames.
//!
//! Owns the vocabulary spoken on the server port (between servers: Raft messages, writes
//! forwarded to the leader, read barriers, hellos for discovery; from client agents and
//! from servers of other datacenters: calls a server answers) and the framing: a connection opens with
//! a preamble naming the sender, then carries length-prefixed postcard frames. The decoder
//! is incremental and refuses garbage and oversized frames with an error, so a host can
//! drop the connection and keep serving. Never touches a socket.

use serde::{Deserialize, Serialize};

use crate::api::{ApiRequest, WireResponse};
use crate::fsm::catalog::Catalog;
use crate::fsm::Command;
use crate::ids::Index;
use crate::raft::Message;

/// A connection's first bytes, before the preamble frame.
pub const MAGIC: &[u8; 4] = b"MSTR";
/// The protocol version written after the magic; a mismatch closes the connection.
pub const VERSION: u8 = 1;
/// The largest frame accepted: room for a snapshot of a large catalog, small enough that a
/// bogus length cannot make a server allocate without bound.
pub const MAX_FRAME: usize = 256 << 20;
/// The largest preamble frame: it holds only a name (`host:port`, `client/<node>`). Anyone
/// who reaches the port can send one, so a larger claim is refused before anything is
/// buffered for it.
pub const MAX_PREAMBLE: usize = 1024;

/// What a forwarded write asks the leader to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Work {
    /// Commit these commands, in order; the reply carries the last one's outcome.
    Commands(Vec<Command>),
    /// Add this server to the Raft configuration (as a non-voter, promoted once caught up).
    AddPeer(String),
    /// Remove this server from the Raft configuration.
    RemovePeer(String),
}

/// What a client agent, or a server of another datacenter, asks a server to do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Call {
    /// Answer this API request as if it had arrived at the server's own HTTP port, with
    /// `?dc=dc` when `dc` is given.
    Api { dc: Option<String>, req: ApiRequest },
    /// Carry out this work through Raft (a client agent's anti-entropy sync).
    Work(Work),
    /// The catalog's rows for this node, which a client's full anti-entropy sync compares
    /// its local state against.
    NodeView(String),
}

/// A server's answer to a `Call`, of the same kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    Api(WireResponse),
    Work(Result<(Index, bool), String>),
    NodeView(Box<Catalog>),
}

/// One message on the server port.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMessage {
    Raft(Message),
    /// "I am a server": sent to `-retry-join` addresses and answered in kind, so servers
    /// find each other for `-bootstrap-expect` and a leader adds newcomers.
    Hello {
        bootstrapped: bool,
    },
    /// A non-leader asks the leader to carry out `work`; answered by `Forwarded`.
    Forward {
        ctx: u64,
        work: Work,
    },
    /// The leader applied the forwarded work at `index`; `Ok(b)` is the outcome Consul
    /// returns as `true`/`false`, `Err` a reason for a 500.
    Forwarded {
        ctx: u64,
        result: Result<(Index, bool), String>,
    },
    /// A non-leader asks for an index a linearizable read must wait for. `lease` lets the
    /// leader answer from its lease instead of a quorum round.
    ReadBarrier {
        ctx: u64,
        lease: bool,
    },
    /// The barrier index, or why there is none (no leader).
    Barrier {
        ctx: u64,
        result: Result<Index, String>,
    },
    /// A call for a server to answer; the answer comes back on the same connection.
    Call {
        ctx: u64,
        call: Call,
    },
    Answer {
        ctx: u64,
        answer: Answer,
    },
}

/// The preamble name a client agent's connection carries: it has no server port of its
/// own, so answers to it travel back on the connection it opened.
pub fn client_id(node: &str) -> String {
    format!("{CLIENT_PREFIX}{node}")
}

/// Whether a peer id names a client agent's connection rather than a server address.
pub fn is_client_id(id: &str) -> bool {
    id.starts_with(CLIENT_PREFIX)
}

const CLIENT_PREFIX: &str = "client/";

/// Why a connection's bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("not a muster server connection (bad magic)")]
    BadMagic,
    #[error("unsupported protocol version {0}")]
    Version(u8),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("undecodable frame: {0}")]
    Decode(String),
}

/// The bytes a connection starts with: magic, version, and a frame holding the sender's id.
pub fn preamble(from: &str) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.push(VERSION);
    out.extend(frame_bytes(&from.to_string()));
    out
}

/// One length-prefixed postcard frame.
pub fn encode(msg: &PeerMessage) -> Vec<u8> {
    frame_bytes(msg)
}

fn frame_bytes<T: Serialize>(value: &T) -> Vec<u8> {
    let body = postcard::to_allocvec(value).expect("peer messages always encode");
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend((body.len() as u32).to_be_bytes());
    out.extend(body);
    out
}

/// Reassembles what arrives on one connection: the preamble first, then messages.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Bytes at the front of `buf` already decoded; dropped in bulk, not per frame.
    used: usize,
    /// The sender's id once the preamble has been read.
    from: Option<String>,
}

impl Decoder {
    /// A decoder for a connection whose other end is known (one this agent opened): no
    /// preamble comes back on it.
    pub fn identified(from: String) -> Decoder {
        Decoder { from: Some(from), ..Decoder::default() }
    }

    /// Who the connection says it is from, once known.
    pub fn from(&self) -> Option<&str> {
        self.from.as_deref()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        if self.used > 0 && self.used >= self.buf.len() / 2 {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete message, `Ok(None)` when more bytes are needed. After an error
    /// the connection is unusable.
    pub fn next_message(&mut self) -> Result<Option<PeerMessage>, FrameError> {
        if self.from.is_none() {
            if self.buf.len() < MAGIC.len() + 1 {
                return Ok(None);
            }
            if &self.buf[..4] != MAGIC {
                return Err(FrameError::BadMagic);
            }
            if self.buf[4] != VERSION {
                return Err(FrameError::Version(self.buf[4]));
            }
            let Some((from, used)) = take_frame::<String>(&self.buf[5..], MAX_PREAMBLE)? else {
                return Ok(None);
            };
            self.used = 5 + used;
            self.from = Some(from);
        }
        let Some((msg, used)) = take_frame::<PeerMessage>(&self.buf[self.used..], MAX_FRAME)? else {
            return Ok(None);
        };
        self.used += used;
        Ok(Some(msg))
    }
}

/// Decodes one frame of at most `max` bytes from the front of `buf`, returning it and the
/// bytes it used.
fn take_frame<T: for<'de> Deserialize<'de>>(
    buf: &[u8],
    max: usize,
) -> Result<Option<(T, usize)>, FrameError> {
    let Some(len) = buf.get(..4) else { return Ok(None) };
    let len = u32::from_be_bytes(len.try_into().expect("four bytes")) as usize;
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let Some(body) = buf.get(4..4 + len) else { return Ok(None) };
    let value = postcard::from_bytes(body).map_err(|e| FrameError::Decode(e.to_string()))?;
    Ok(Some((value, 4 + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Term;
    use proptest::prelude::*;

    fn sample() -> Vec<PeerMessage> {
        vec![
            PeerMessage::Hello { bootstrapped: true },
            PeerMessage::Raft(Message::PreVoteResp { term: Term(3), granted: true }),
            PeerMessage::Forward { ctx: 7, work: Work::Commands(vec![Command::Noop]) },
            PeerMessage::Forwarded { ctx: 7, result: Ok((Index(9), true)) },
            PeerMessage::Barrier { ctx: 1, result: Err("No cluster leader".into()) },
            PeerMessage::Call {
                ctx: 2,
                call: Call::Api {
                    dc: Some("dc2".into()),
                    req: ApiRequest::KvPut {
                        key: "k".into(),
                        value: b"v".to_vec(),
                        flags: 0,
                        mode: crate::fsm::kv::KvSetMode::Cas(3),
                    },
                },
            },
            PeerMessage::Answer {
                ctx: 2,
                answer: Answer::Api(
                    crate::api::ApiResponse::json(crate::api::shapes::Reply::Bool(true)).into(),
                ),
            },
            PeerMessage::Answer { ctx: 3, answer: Answer::NodeView(Box::default()) },
        ]
    }

    #[test]
    fn frames_survive_any_split() {
        let mut bytes = preamble("127.0.0.1:8300");
        for m in sample() {
            bytes.extend(encode(&m));
        }
        for chunk in [1, 3, 7, bytes.len()] {
            let mut d = Decoder::default();
            let mut got = vec![];
            for piece in bytes.chunks(chunk) {
                d.push(piece);
                while let Some(m) = d.next_message().unwrap() {
                    got.push(m);
                }
            }
            assert_eq!(d.from(), Some("127.0.0.1:8300"));
            assert_eq!(got, sample());
        }
    }

    #[test]
    fn a_request_for_another_datacenter_never_nests_on_the_wire() {
        let inner = Box::new(ApiRequest::StatusLeader);
        assert!(postcard::to_allocvec(&ApiRequest::InDatacenter { dc: "dc2".into(), req: inner }).is_err());
        // The variant after the last one that travels is not decodable either.
        let last =
            postcard::to_allocvec(&ApiRequest::AgentReload { services: vec![], checks: vec![] }).unwrap();
        let mut nested = vec![last[0] + 1, 3, b'd', b'c', b'2'];
        nested.extend(std::iter::repeat_n([last[0] + 1, 3, b'd', b'c', b'2'], 100_000).flatten());
        assert!(postcard::from_bytes::<ApiRequest>(&nested).is_err());
    }

    #[test]
    fn garbage_is_refused_not_buffered_forever() {
        let mut d = Decoder::default();
        d.push(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(d.next_message(), Err(FrameError::BadMagic));
        let mut d = Decoder::default();
        d.push(&preamble("a"));
        d.push(&u32::MAX.to_be_bytes());
        assert!(matches!(d.next_message(), Err(FrameError::TooLarge(_))));
        let mut d = Decoder::default();
        d.push(&preamble("a"));
        d.push(&[0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(d.next_message(), Err(FrameError::Decode(_))));
        // A preamble claiming 256 MiB is refused once its length is in, not after the bytes.
        let mut d = Decoder::default();
        d.push(b"MSTR\x01");
        d.push(&(256u32 << 20).to_be_bytes());
        assert_eq!(d.next_message(), Err(FrameError::TooLarge(256 << 20)));
        let mut d = Decoder::default();
        d.push(&preamble(&"n".repeat(MAX_PREAMBLE)));
        assert!(
            matches!(d.next_message(), Err(FrameError::TooLarge(_))),
            "the name and its length prefix exceed it"
        );
        let mut d = Decoder::default();
        d.push(&preamble(&"n".repeat(MAX_PREAMBLE - 2)));
        d.push(&encode(&PeerMessage::Hello { bootstrapped: false }));
        assert_eq!(d.next_message(), Ok(Some(PeerMessage::Hello { bootstrapped: false })));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            crate::fuzzing::rpc_frames(&bytes);
        }
    }
}
