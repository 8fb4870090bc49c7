//! Fuzz bodies as plain functions, so `cargo fuzz` and the ordinary test run (through
//! proptest) exercise the same code.
//!
//! Owns nothing but the drivers: arbitrary bytes in, and the invariant each entry point must
//! keep (no panic, deterministic results). Never used by the agent itself.

use crate::api::dns::{answer, DnsConfig, DnsQuestion, RecordType};
use crate::fsm::catalog::{Catalog, Registration};
use crate::fsm::{Command, State};
use crate::ids::Index;
use crate::rng::{Rng, Stream};

/// Arbitrary bytes as a DNS question (the first two bytes pick the type, the rest is the
/// name) against a small catalog: an answer always comes back, never a panic.
pub fn dns_question(data: &[u8]) {
    let (qtype, name) = match data {
        [a, b, rest @ ..] => (u16::from_be_bytes([*a, *b]), String::from_utf8_lossy(rest).into_owned()),
        _ => (1, String::new()),
    };
    let qtype = match qtype % 12 {
        0 => RecordType::A,
        1 => RecordType::Aaaa,
        2 => RecordType::Srv,
        3 => RecordType::Txt,
        4 => RecordType::Any,
        5 => RecordType::Soa,
        6 => RecordType::Ns,
        7 => RecordType::Ptr,
        _ => RecordType::Other(qtype),
    };
    let mut catalog = Catalog::default();
    let node = crate::agent::NodeInfo::new("n1", "10.0.0.1", "dc1").row();
    let reg = Registration { node, skip_node_update: false, service: None, checks: vec![] };
    catalog.register(Index(1), &reg).expect("a valid registration");
    let q = DnsQuestion { name, qtype, plain_udp: data.first().is_some_and(|b| b & 1 == 1) };
    let _ = answer(&q, &catalog, &DnsConfig::default(), 0, &mut Rng::new([0; 32], Stream::Dns));
}

/// Arbitrary bytes decoded (postcard) as a list of log commands and applied to two fresh
/// state machines: neither panics and both end byte-identical.
pub fn fsm_apply(data: &[u8]) {
    let Ok(commands) = postcard::from_bytes::<Vec<Command>>(data) else { return };
    let (mut a, mut b) = (State::default(), State::default());
    for (i, c) in commands.iter().enumerate() {
        a.apply(Index(i as u64 + 1), c);
        b.apply(Index(i as u64 + 1), c);
    }
    assert_eq!(a.digest(), b.digest(), "the same log gives the same state");
}

/// Arbitrary bytes as what arrives on a server-port connection, fed in uneven pieces: the
/// decoder yields messages or an error, never panics, and stops at the first error.
pub fn rpc_frames(data: &[u8]) {
    let mut d = crate::rpc::Decoder::default();
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    for piece in data.chunks(step) {
        d.push(piece);
        loop {
            match d.next_message() {
                Ok(Some(msg)) => {
                    let again = crate::rpc::encode(&msg);
                    assert!(again.len() > 4, "a decoded message re-encodes");
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::kv::KvSetMode;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = Command> {
        let key = "[a-c]{0,2}(/[a-c]{0,2}){0,2}";
        prop_oneof![
            (key, proptest::collection::vec(any::<u8>(), 0..4), any::<u64>(), 0u64..8).prop_map(
                |(key, value, flags, cas)| {
                    let mode = if cas == 0 { KvSetMode::Set } else { KvSetMode::Cas(cas - 1) };
                    Command::KvSet { key, value, flags: flags % 3, mode }
                }
            ),
            (key, any::<bool>(), proptest::option::of(0u64..8)).prop_map(|(key, recurse, cas)| {
                Command::KvDelete { key, recurse, cas: if recurse { None } else { cas } }
            }),
            Just(Command::Noop),
        ]
    }

    proptest! {
        #[test]
        fn dns_question_never_panics(data in proptest::collection::vec(any::<u8>(), 0..120)) {
            dns_question(&data);
        }

        #[test]
        fn fsm_apply_on_arbitrary_bytes(data in proptest::collection::vec(any::<u8>(), 0..200)) {
            fsm_apply(&data);
        }

        #[test]
        fn fsm_apply_on_encoded_logs(cmds in proptest::collection::vec(command(), 0..40)) {
            fsm_apply(&postcard::to_allocvec(&cmds).expect("commands encode"));
        }
    }
}
