//! The KV workload as the HTTP API carries it (the worlds of whole agents): drawing an
//! operation and its request, and reading its answer into the history.
//!
//! Owns the values written (each unique, so a read names the write it saw) and the versions
//! seen, which CAS arguments are drawn from. Never sends anything: the world carries the
//! request to an agent and hands the answer back.

use std::collections::BTreeMap;

use muster_core::api::shapes::Reply;
use muster_core::api::{ApiRequest, ApiResponse, Body, Consistency, KvRead, QueryOpts};
use muster_core::fsm::kv::KvSetMode;
use muster_core::fsm::State;
use muster_core::ids::Index;

use super::{read_value, Env, Outcome, ReadMode};
use crate::lin::OpKind;

#[derive(Debug, Default)]
pub(crate) struct KvWork {
    /// The key each written value was written to.
    values: BTreeMap<u64, &'static str>,
    /// (value, modify index) pairs seen in servers' states, per key: CAS arguments.
    versions: BTreeMap<&'static str, Vec<(u64, Index)>>,
}

impl KvWork {
    /// An operation on `key`: a set, a CAS (its argument from `states`, the live servers'),
    /// a delete, or a read in default, consistent or stale mode.
    pub fn draw<L>(
        &mut self,
        env: &mut Env<L>,
        key: &'static str,
        states: &[&State],
    ) -> (OpKind, ReadMode, ApiRequest) {
        match env.below(100) {
            0..=29 => self.write(env, key, None),
            30..=41 => {
                let cas = self.cas_expectation(env, key, states);
                self.write(env, key, Some(cas))
            }
            42..=47 => {
                let req = ApiRequest::KvDelete { key: key.into(), recurse: false, cas: None };
                (OpKind::Delete, ReadMode::Quorum, req)
            }
            pick => {
                let (consistency, read) = match pick % 3 {
                    0 => (Consistency::Default, ReadMode::Lease),
                    1 => (Consistency::Consistent, ReadMode::Quorum),
                    _ => (Consistency::Stale, ReadMode::Stale),
                };
                (OpKind::Read(None), read, read_request(key, consistency))
            }
        }
    }

    /// A write of a fresh value to `key`: a set, or a CAS from `expect` at `index`.
    pub fn write<L>(
        &mut self,
        env: &mut Env<L>,
        key: &'static str,
        cas: Option<(Option<u64>, u64)>,
    ) -> (OpKind, ReadMode, ApiRequest) {
        let v = env.next_value;
        env.next_value += 1;
        self.values.insert(v, key);
        let (kind, mode) = match cas {
            Some((expect, index)) => (OpKind::Cas { expect, new: v, swapped: None }, KvSetMode::Cas(index)),
            None => (OpKind::Write(v), KvSetMode::Set),
        };
        let req = ApiRequest::KvPut { key: key.into(), value: v.to_le_bytes().to_vec(), flags: 0, mode };
        (kind, ReadMode::Quorum, req)
    }

    /// A CAS argument: mostly what a server holds now, else a version seen before (likely
    /// stale), else "absent".
    fn cas_expectation<L>(
        &mut self,
        env: &mut Env<L>,
        key: &'static str,
        states: &[&State],
    ) -> (Option<u64>, u64) {
        let now = match states.len() {
            0 => None,
            n => Some(
                states[env.below(n as u64) as usize]
                    .kv
                    .get(key)
                    .map(|e| (read_value(&e.value), e.modify_index)),
            ),
        };
        let seen = self.versions.entry(key).or_default();
        if let Some(Some(v)) = now {
            if !seen.contains(&v) {
                seen.push(v);
            }
        }
        let pick = env.below(10);
        let seen = &self.versions[key];
        let chosen = match now {
            Some(current) if pick < 6 => current,
            _ if pick < 9 && !seen.is_empty() => Some(seen[env.below(seen.len() as u64) as usize]),
            _ => None,
        };
        chosen.map_or((None, 0), |(v, i)| (Some(v), i.0))
    }

    /// Operation `op` got `resp` from `node`: the history learns its outcome. A stale read
    /// must have seen a value some write of its key carried.
    pub fn settle<L>(
        &self,
        env: &mut Env<L>,
        node: usize,
        op: usize,
        resp: &ApiResponse,
    ) -> Result<(), String> {
        let o = &env.ops[op];
        let Some((outcome, kind)) = kv_outcome(o.kind, resp) else {
            let (kind, status, body) = (o.kind, resp.status, &resp.body);
            return env.fail(format!("n{node} answered op {op} ({kind:?}) with {status} {body:?}"));
        };
        if let (Some(OpKind::Read(Some(v))), ReadMode::Stale) = (kind, o.read) {
            if self.values.get(&v) != Some(&o.key) {
                return env
                    .fail(format!("stale read op {op} of {} saw {v}, which no write of it carried", o.key));
            }
        }
        env.note(|_| format!("n{node} answers op {op}: {} {}", resp.status, text(resp)));
        env.finish(op, outcome, kind);
        Ok(())
    }
}

/// A read of `key`'s raw value.
pub(crate) fn read_request(key: &str, consistency: Consistency) -> ApiRequest {
    let q = QueryOpts { consistency, ..QueryOpts::default() };
    ApiRequest::KvGet { key: key.into(), read: KvRead::Entry { raw: true }, q }
}

/// An answer's plain-text reason, if it has one.
pub(crate) fn text(resp: &ApiResponse) -> &str {
    match &resp.body {
        Body::Text(t) => t.as_str(),
        _ => "",
    }
}

/// Whether a 500's reason promises the write was not carried out: no server was known or
/// reachable to take it (a client agent's call never left), the server never found a
/// leader, or the leader refused or lost it before it could commit.
fn surely_not_applied(reason: &str) -> bool {
    reason == "No cluster leader"
        || reason == "No known Consul servers"
        || reason.starts_with("rpc error: failed to reach a server")
        || reason.ends_with("it was not applied")
        || reason.starts_with("not the leader")
}

/// What the answer to a KV operation of `kind` says: its outcome and, for reads and CAS,
/// what it saw; `None` for an answer no such request may get. A 500 whose reason says the
/// write surely did not happen is `Fail`, any other 500 `Info` (a read's: `Dropped`).
fn kv_outcome(kind: OpKind, resp: &ApiResponse) -> Option<(Outcome, Option<OpKind>)> {
    // A server answers `true`/`false` itself, or as JSON text through a client agent.
    let flag = match &resp.body {
        Body::Json(Reply::Bool(b)) => Some(*b),
        Body::JsonText(t) => t.parse().ok(),
        _ => None,
    };
    Some(match (kind, resp.status, &resp.body) {
        (OpKind::Read(_), 200, Body::Raw(v)) => (Outcome::Ok, Some(OpKind::Read(Some(read_value(v))))),
        (OpKind::Read(_), 404, _) => (Outcome::Ok, Some(OpKind::Read(None))),
        (OpKind::Read(_), 500, _) => (Outcome::Dropped, None),
        (OpKind::Cas { expect, new, .. }, 200, _) if flag.is_some() => {
            (Outcome::Ok, Some(OpKind::Cas { expect, new, swapped: flag }))
        }
        (OpKind::Write(_) | OpKind::Delete, 200, _) if flag == Some(true) => (Outcome::Ok, None),
        (_, 500, _) if surely_not_applied(text(resp)) => (Outcome::Fail, None),
        (_, 500, _) => (Outcome::Info, None),
        _ => return None,
    })
}
