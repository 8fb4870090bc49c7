//! Answers rendered once and served many times: a service's health and catalog rows, which
//! every client library, load balancer and DNS-less watcher polls far more often than they
//! change.
//!
//! Owns the cache: the JSON text of each such read, kept while the service's index (which
//! every write that could change the rows moves) stays where it was, and a bound on how
//! many are kept. Never decides what a read returns (`server::read` does): a hit is byte for
//! byte what rendering afresh would give. `?near=` answers, sorted per caller, are not kept.

use std::collections::BTreeMap;

use super::{read, ReadResult, Watch};
use crate::api::{ApiRequest, ApiResponse, Body};
use crate::fsm::State;
use crate::ids::Index;

/// How many renderings are kept; past it, one is dropped for each new one.
const CAPACITY: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    health: bool,
    service: String,
    tags: Vec<String>,
    passing: bool,
}

#[derive(Debug, Default)]
pub struct Rendered {
    entries: BTreeMap<Key, (Index, String)>,
}

impl Rendered {
    /// Runs `req` against `state`, from the cache when it holds this read at the current
    /// index; a read it can keep is stored as rendered JSON.
    pub fn read(&mut self, state: &State, req: &ApiRequest) -> Option<ReadResult> {
        let Some(key) = key(req) else { return read(state, req) };
        let index = state.catalog.service_index(&key.service);
        if let Some((at, text)) = self.entries.get(&key).filter(|(at, _)| *at == index) {
            // Both reads answer as every catalog read does (see `server::read`).
            return Some(ReadResult {
                resp: ApiResponse { status: 200, meta: None, body: Body::JsonText(text.clone()) },
                index: *at,
                watch: Watch::Catalog,
                reports_consistency: true,
            });
        }
        let mut r = read(state, req)?;
        if let Body::Json(reply) = &r.resp.body {
            let Ok(text) = serde_json::to_string(reply) else { return Some(r) };
            if self.entries.len() >= CAPACITY && !self.entries.contains_key(&key) {
                self.entries.pop_first();
            }
            self.entries.insert(key, (r.index, text.clone()));
            r.resp.body = Body::JsonText(text);
        }
        Some(r)
    }
}

/// The cacheable reads: a service's health or catalog rows, unsorted by distance.
fn key(req: &ApiRequest) -> Option<Key> {
    let (health, service, tags, passing) = match req {
        ApiRequest::HealthService { service, tags, passing, near: None, .. } => {
            (true, service, tags, *passing)
        }
        ApiRequest::CatalogService { name, tags, near: None, .. } => (false, name, tags, false),
        _ => return None,
    };
    Some(Key { health, service: service.clone(), tags: tags.clone(), passing })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::QueryOpts;
    use crate::fsm::catalog::tests::{check, node, service};
    use crate::fsm::catalog::{Health, Registration};
    use crate::fsm::Command;

    fn health(passing: bool) -> ApiRequest {
        ApiRequest::HealthService {
            service: "web".into(),
            tags: vec![],
            passing,
            q: QueryOpts::default(),
            near: None,
        }
    }

    fn json(r: &ReadResult) -> String {
        match &r.resp.body {
            Body::JsonText(t) => t.clone(),
            Body::Json(reply) => serde_json::to_string(reply).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hit_is_what_a_fresh_read_renders_until_the_service_changes() {
        let mut s = State::default();
        let reg = |n: &str, status| {
            let svc = service("web", "web");
            Command::Register(Box::new(Registration {
                node: node(n),
                skip_node_update: false,
                service: Some(svc),
                checks: vec![check("c", "web", status)],
            }))
        };
        s.apply(Index(1), &reg("n1", Health::Passing));
        s.apply(Index(2), &reg("n2", Health::Critical));
        let mut cache = Rendered::default();
        for passing in [true, false] {
            let first = cache.read(&s, &health(passing)).unwrap();
            let hit = cache.read(&s, &health(passing)).unwrap();
            let fresh = read(&s, &health(passing)).unwrap();
            assert_eq!(json(&hit), json(&fresh));
            assert_eq!((hit.index, first.index), (fresh.index, fresh.index));
        }
        assert_eq!(
            json(&cache.read(&s, &health(true)).unwrap()).matches("\"Checks\":[").count(),
            1,
            "one passing row"
        );
        // n2's check passes: the index moves and the cache renders again.
        s.apply(Index(3), &reg("n2", Health::Passing));
        let after = cache.read(&s, &health(true)).unwrap();
        assert_eq!(json(&after), json(&read(&s, &health(true)).unwrap()));
        assert_eq!(after.index, Index(3));
        // A change to another service leaves web's rendering in place.
        let other = Command::Register(Box::new(Registration {
            node: node("n3"),
            skip_node_update: false,
            service: Some(service("db", "db")),
            checks: vec![],
        }));
        s.apply(Index(4), &other);
        assert_eq!(cache.read(&s, &health(true)).unwrap().index, Index(3));
    }

    #[test]
    fn the_cache_stays_bounded() {
        let s = State::default();
        let mut cache = Rendered::default();
        for i in 0..CAPACITY + 10 {
            let req = ApiRequest::CatalogService {
                name: format!("svc{i}"),
                tags: vec![],
                q: QueryOpts::default(),
                near: None,
            };
            cache.read(&s, &req);
        }
        assert_eq!(cache.entries.len(), CAPACITY);
    }
}
