//! Reads that go through the state store, and the blocking-query registry that parks them.
//!
//! Owns which rows each read endpoint returns, in which order, with which `X-Consul-Index`,
//! and what a parked read watches so the right writes wake it. Never changes state and never
//! reads time itself: deadlines are computed by the node from `now`.

mod rendered;

pub use rendered::Rendered;

use std::collections::{BTreeMap, BTreeSet};

use crate::api::shapes::{CheckServiceNode, KvEntryJson, NodeServices, Reply, ServiceNode};
use crate::api::{ApiRequest, ApiResponse, Body, EmptyShape, KvRead, QueryMeta, QueryOpts};
use crate::fsm::catalog::{Catalog, Health, HealthCheck};
use crate::fsm::coordinates::CoordinateEntry;
use crate::fsm::{State, Touched};
use crate::ids::{Index, ReqId};
use crate::time::Time;

/// What a parked read depends on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Watch {
    Kv {
        key: String,
        prefix: bool,
    },
    Catalog,
    /// Coordinate reads; a node deregistration (a catalog write) may drop a row too.
    Coordinates,
}

impl Watch {
    /// Whether an apply that touched `t` may change this read's result.
    pub fn woken_by(&self, t: &Touched) -> bool {
        match (self, t) {
            (Watch::Catalog, Touched::Catalog) => true,
            (Watch::Coordinates, Touched::Coordinates | Touched::Catalog) => true,
            (Watch::Kv { key, prefix }, Touched::Kv { key: k, prefix: p }) => match (prefix, p) {
                (false, false) => key == k,
                (false, true) => key.starts_with(k.as_str()),
                (true, false) => k.starts_with(key.as_str()),
                (true, true) => k.starts_with(key.as_str()) || key.starts_with(k.as_str()),
            },
            _ => false,
        }
    }
}

/// One state-store read: the response (without headers yet), its index, and what it watched.
pub struct ReadResult {
    pub resp: ApiResponse,
    pub index: Index,
    pub watch: Watch,
    /// Catalog and health reads report their consistency mode.
    pub reports_consistency: bool,
}

/// The query options of `req` if it is a state-store read.
pub fn query_opts(req: &ApiRequest) -> Option<QueryOpts> {
    match req {
        ApiRequest::KvGet { q, .. }
        | ApiRequest::CatalogNodes { q, .. }
        | ApiRequest::CoordinateNodes { q }
        | ApiRequest::Empty { q, .. }
        | ApiRequest::CoordinateNode { q, .. }
        | ApiRequest::CatalogServices { q }
        | ApiRequest::CatalogAllInstances { q }
        | ApiRequest::CatalogService { q, .. }
        | ApiRequest::CatalogNode { q, .. }
        | ApiRequest::HealthNode { q, .. }
        | ApiRequest::HealthChecks { q, .. }
        | ApiRequest::HealthService { q, .. }
        | ApiRequest::HealthState { q, .. } => Some(*q),
        _ => None,
    }
}

/// Runs a read. `None` when `req` is not a state-store read.
pub fn read(state: &State, req: &ApiRequest) -> Option<ReadResult> {
    let cat = &state.catalog;
    let catalog_read = |reply: Reply, index: Index| ReadResult {
        resp: ApiResponse::json(reply),
        index,
        watch: Watch::Catalog,
        reports_consistency: true,
    };
    Some(match req {
        ApiRequest::KvGet { key, read, .. } => kv_read(state, key, read),
        ApiRequest::CatalogNodes { near, .. } => {
            let mut rows: Vec<_> = cat.nodes().cloned().collect();
            sort_near(state, near.as_deref(), &mut rows, |n| n.node.as_str());
            catalog_read(Reply::Nodes(rows), cat.table_index())
        }
        ApiRequest::CatalogServices { .. } => {
            let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (_, s) in cat.all_services() {
                map.entry(s.service.clone()).or_default().extend(s.tags.iter().cloned());
            }
            let map = map.into_iter().map(|(k, v)| (k, v.into_iter().collect())).collect();
            catalog_read(Reply::ServiceTags(map), cat.table_index())
        }
        ApiRequest::CatalogAllInstances { .. } => {
            let rows = cat.all_services().map(|(n, s)| ServiceNode::new(n, s)).collect();
            catalog_read(Reply::ServiceNodes(rows), cat.table_index())
        }
        ApiRequest::CatalogService { name, tags, near, .. } => {
            let mut rows: Vec<_> = instances(cat, name, tags).map(|(n, s)| ServiceNode::new(n, s)).collect();
            sort_near(state, near.as_deref(), &mut rows, |r| r.node.as_str());
            catalog_read(Reply::ServiceNodes(rows), cat.service_index(name))
        }
        ApiRequest::CatalogNode { name, .. } => {
            let out = cat.node(name).map(|n| NodeServices {
                node: n.clone(),
                services: cat.node_services(name).map(|s| (s.id.clone(), s.clone())).collect(),
            });
            catalog_read(Reply::NodeServices(out), cat.table_index())
        }
        ApiRequest::HealthNode { name, .. } => {
            catalog_read(Reply::Checks(sorted(cat.node_checks(name).cloned().collect())), cat.table_index())
        }
        ApiRequest::HealthChecks { service, .. } => {
            let checks = cat
                .all_checks()
                .filter(|c| !c.service_id.is_empty() && c.service_name.eq_ignore_ascii_case(service));
            catalog_read(Reply::Checks(sorted(checks.cloned().collect())), cat.service_index(service))
        }
        ApiRequest::HealthService { service, tags, passing, near, .. } => {
            let mut rows: Vec<_> = instances(cat, service, tags)
                .map(|(n, s)| CheckServiceNode {
                    node: n.clone(),
                    service: s.clone(),
                    checks: sorted(cat.instance_checks(&n.node, &s.id).cloned().collect()),
                })
                .filter(|r| !passing || r.checks.iter().all(|c| c.status == Health::Passing))
                .collect();
            sort_near(state, near.as_deref(), &mut rows, |r| r.node.node.as_str());
            catalog_read(Reply::CheckServiceNodes(rows), cat.service_index(service))
        }
        ApiRequest::HealthState { state: wanted, .. } => {
            let want = Health::parse(wanted);
            let checks = cat.all_checks().filter(|c| wanted == "any" || Some(c.status) == want);
            catalog_read(Reply::Checks(sorted(checks.cloned().collect())), cat.table_index())
        }
        ApiRequest::Empty { shape, .. } => {
            let reply = match shape {
                EmptyShape::List => Reply::Strings(vec![]),
                EmptyShape::Object => Reply::ServiceTags(BTreeMap::new()),
                EmptyShape::Null => Reply::NodeServices(None),
            };
            catalog_read(reply, cat.table_index())
        }
        ApiRequest::CoordinateNodes { .. } => {
            coordinate_read(state, state.coordinates.all().cloned().collect())
        }
        ApiRequest::CoordinateNode { name, .. } => {
            let rows: Vec<_> = state.coordinates.get(name).cloned().into_iter().collect();
            let mut r = coordinate_read(state, rows);
            if matches!(&r.resp.body, Body::Json(Reply::Coordinates(rows)) if rows.is_empty()) {
                r.resp = ApiResponse { status: 404, meta: None, body: Body::Empty };
            }
            r
        }
        _ => return None,
    })
}

fn coordinate_read(state: &State, rows: Vec<CoordinateEntry>) -> ReadResult {
    ReadResult {
        resp: ApiResponse::json(Reply::Coordinates(rows)),
        index: state.coordinates.index(),
        watch: Watch::Coordinates,
        reports_consistency: false,
    }
}

/// `?near=`: rows by estimated round trip from `near`'s coordinate, nearest first; rows
/// whose node has no coordinate keep their order after the rest. Without a coordinate for
/// `near` itself the order stays as it was. `near`'s own rows come first: its distance to
/// itself is zero, whatever the estimate's noise (heights, adjustments) says.
fn sort_near<T>(state: &State, near: Option<&str>, rows: &mut [T], node_of: impl Fn(&T) -> &str) {
    let Some((name, from)) = near.and_then(|n| state.coordinates.get(n).map(|e| (n, &e.coord))) else {
        return;
    };
    crate::coordinate::sort_by_distance(from, rows, |r| state.coordinates.get(node_of(r)).map(|e| &e.coord));
    rows.sort_by_key(|r| !node_of(r).eq_ignore_ascii_case(name));
}

/// Instances of a service (name compared without case) carrying every tag in `tags`.
fn instances<'a>(
    cat: &'a Catalog,
    name: &'a str,
    tags: &'a [String],
) -> impl Iterator<Item = (&'a crate::fsm::catalog::Node, &'a crate::fsm::catalog::NodeService)> + 'a {
    cat.all_services().filter(move |(_, s)| {
        s.service.eq_ignore_ascii_case(name)
            && tags.iter().all(|t| s.tags.iter().any(|x| x.eq_ignore_ascii_case(t)))
    })
}

/// Health check lists sort by node, then check ID without case (`serfHealth` first).
fn sorted(mut checks: Vec<HealthCheck>) -> Vec<HealthCheck> {
    checks.sort_by(|a, b| {
        (a.node.to_ascii_lowercase(), a.check_id.to_ascii_lowercase())
            .cmp(&(b.node.to_ascii_lowercase(), b.check_id.to_ascii_lowercase()))
    });
    checks
}

fn kv_read(state: &State, key: &str, read: &KvRead) -> ReadResult {
    let kv = &state.kv;
    let not_found = || ApiResponse { status: 404, meta: None, body: Body::Empty };
    let result = |resp, index, prefix| ReadResult {
        resp,
        index,
        watch: Watch::Kv { key: key.to_string(), prefix },
        reports_consistency: false,
    };
    match read {
        KvRead::Entry { raw } => match kv.get(key) {
            Some(e) => {
                let body = if *raw {
                    Body::Raw(e.value.clone())
                } else {
                    Body::Json(Reply::KvEntries(vec![KvEntryJson(e.clone())]))
                };
                result(ApiResponse { status: 200, meta: None, body }, e.modify_index, false)
            }
            None => result(not_found(), kv.table_index(), false),
        },
        KvRead::Recurse => {
            let entries: Vec<KvEntryJson> = kv.prefix(key).cloned().map(KvEntryJson).collect();
            let resp =
                if entries.is_empty() { not_found() } else { ApiResponse::json(Reply::KvEntries(entries)) };
            result(resp, kv.prefix_index(key), true)
        }
        KvRead::Keys { separator } => {
            let mut keys: Vec<String> = Vec::new();
            for e in kv.prefix(key) {
                let rest = &e.key[key.len()..];
                let k = match separator
                    .as_deref()
                    .filter(|s| !s.is_empty())
                    .and_then(|s| rest.find(s).map(|i| i + s.len()))
                {
                    Some(end) => format!("{key}{}", &rest[..end]),
                    None => e.key.to_string(),
                };
                if keys.last() != Some(&k) {
                    keys.push(k);
                }
            }
            let resp = if keys.is_empty() && !key.is_empty() {
                not_found()
            } else {
                ApiResponse::json(Reply::Strings(keys))
            };
            result(resp, kv.prefix_index(key), true)
        }
    }
}

/// Attaches the standard read headers.
/// `contact` is whether a leader is known and how long ago it was last heard from.
pub fn finish(r: ReadResult, q: &QueryOpts, contact: (bool, u64)) -> ApiResponse {
    let meta = QueryMeta {
        index: r.index.max(Index(1)),
        known_leader: contact.0,
        last_contact_ms: contact.1,
        consistency: r.reports_consistency.then_some(q.consistency),
    };
    r.resp.with_meta(meta)
}

/// A read waiting for its index to move.
#[derive(Debug)]
pub struct Parked {
    pub id: ReqId,
    pub req: ApiRequest,
    pub deadline: Time,
    pub watch: Watch,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::kv::KvSetMode;
    use crate::fsm::Command;

    fn state_with(keys: &[&str]) -> State {
        let mut s = State::default();
        for (i, k) in keys.iter().enumerate() {
            let cmd =
                Command::KvSet { key: (*k).into(), value: b"v".to_vec(), flags: 0, mode: KvSetMode::Set };
            s.apply(Index(i as u64 + 1), &cmd);
        }
        s
    }

    fn keys(s: &State, prefix: &str, sep: Option<&str>) -> (u16, Option<Vec<String>>) {
        let req = ApiRequest::KvGet {
            key: prefix.into(),
            read: KvRead::Keys { separator: sep.map(Into::into) },
            q: QueryOpts::default(),
        };
        let r = read(s, &req).unwrap();
        let list = match r.resp.body {
            Body::Json(Reply::Strings(v)) => Some(v),
            _ => None,
        };
        (r.resp.status, list)
    }

    #[test]
    fn keys_with_separator_fold_folders() {
        let s = state_with(&["bar", "base/foo", "base/base/foo", "a/x/1", "a/y/2", "a/z/3"]);
        assert_eq!(keys(&s, "base/", Some("/")).1.unwrap(), ["base/base/", "base/foo"]);
        assert_eq!(keys(&s, "a/", Some("/")).1.unwrap(), ["a/x/", "a/y/", "a/z/"]);
        assert_eq!(keys(&s, "a", None).1.unwrap().len(), 3);
        assert_eq!(keys(&s, "nope", None), (404, None));
        assert_eq!(keys(&State::default(), "", None), (200, Some(vec![])));
    }

    #[test]
    fn missing_key_is_404_with_table_index() {
        let s = state_with(&["a", "b"]);
        let req = ApiRequest::KvGet {
            key: "zz".into(),
            read: KvRead::Entry { raw: false },
            q: QueryOpts::default(),
        };
        let r = read(&s, &req).unwrap();
        assert_eq!((r.resp.status, r.index), (404, Index(2)));
        let resp = finish(r, &QueryOpts::default(), (true, 0));
        assert_eq!(resp.meta.unwrap().index, Index(2));
        let empty = read(&State::default(), &req).unwrap();
        assert_eq!(finish(empty, &QueryOpts::default(), (true, 0)).meta.unwrap().index, Index(1), "never 0");
    }

    #[test]
    fn near_sorts_instances_by_estimated_round_trip_and_coordinate_reads_block_on_their_index() {
        use crate::coordinate::{Coordinate, CoordinateConfig};
        use crate::fsm::catalog::Registration;
        use crate::fsm::coordinates::CoordinateEntry;
        let mut s = State::default();
        let mut index = 0;
        let mut apply = |s: &mut State, cmd: Command| {
            index += 1;
            s.apply(Index(index), &cmd)
        };
        for n in ["n1", "n2", "n3", "n4"] {
            let service = crate::fsm::catalog::tests::service("web", "web");
            let node = crate::agent::NodeInfo::new(n, "10.0.0.1", "dc1").row();
            let reg = Registration { node, skip_node_update: false, service: Some(service), checks: vec![] };
            apply(&mut s, Command::Register(Box::new(reg)));
        }
        let at = |node: &str, x: f64| {
            let mut coord = Coordinate::new(&CoordinateConfig::default());
            coord.vec[0] = x;
            CoordinateEntry { node: node.into(), segment: String::new(), coord }
        };
        // n2 is far from n1, n3 near; n4 sent no coordinate.
        let applied =
            apply(&mut s, Command::Coordinates(vec![at("n1", 0.0), at("n2", 0.050), at("n3", 0.002)]));
        assert!(Watch::Coordinates.woken_by(&applied.touched));
        let order = |near: Option<&str>| {
            let req = ApiRequest::HealthService {
                service: "web".into(),
                tags: vec![],
                passing: false,
                q: QueryOpts::default(),
                near: near.map(str::to_string),
            };
            match read(&s, &req).unwrap().resp.body {
                Body::Json(Reply::CheckServiceNodes(rows)) => {
                    rows.into_iter().map(|r| r.node.node).collect::<Vec<_>>()
                }
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(order(None), ["n1", "n2", "n3", "n4"]);
        assert_eq!(order(Some("n1")), ["n1", "n3", "n2", "n4"]);
        assert_eq!(order(Some("n2")), ["n2", "n3", "n1", "n4"]);
        assert_eq!(order(Some("unknown")), ["n1", "n2", "n3", "n4"], "no coordinate to sort from");
        let nodes = read(&s, &ApiRequest::CoordinateNodes { q: QueryOpts::default() }).unwrap();
        assert_eq!(nodes.index, Index(5));
        assert!(matches!(nodes.resp.body, Body::Json(Reply::Coordinates(ref rows)) if rows.len() == 3));
        let missing = ApiRequest::CoordinateNode { name: "n4".into(), q: QueryOpts::default() };
        assert_eq!(read(&s, &missing).unwrap().resp.status, 404);
        // Deregistering a node drops its coordinate.
        let gone =
            crate::fsm::catalog::Deregistration { node: "n3".into(), service_id: None, check_id: None };
        apply(&mut s, Command::Deregister(gone));
        assert!(s.coordinates.get("n3").is_none());
    }

    #[test]
    fn watches_match_the_writes_that_matter() {
        let single = Watch::Kv { key: "a/b".into(), prefix: false };
        let tree = Watch::Kv { key: "a/".into(), prefix: true };
        let set = |k: &str| Touched::Kv { key: k.into(), prefix: false };
        let del_tree = |k: &str| Touched::Kv { key: k.into(), prefix: true };
        assert!(single.woken_by(&set("a/b")));
        assert!(!single.woken_by(&set("a/c")));
        assert!(single.woken_by(&del_tree("a")));
        assert!(tree.woken_by(&set("a/zz")));
        assert!(!tree.woken_by(&set("b")));
        assert!(tree.woken_by(&del_tree("")));
        assert!(!tree.woken_by(&Touched::Catalog));
        assert!(Watch::Catalog.woken_by(&Touched::Catalog));
    }
}
