//! The catalog tables: nodes, their services, and health checks.
//!
//! Owns the rows and the register/deregister rules (merge by ID, removing a service removes its
//! checks, removing a node removes everything on it) and the per-service indexes that blocking
//! queries on one service watch. Rows serialize with Consul's field names so the API can emit
//! them as they are. Never runs checks and never decides health: it stores what it is told.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

use imbl::OrdMap;

use crate::ids::Index;

/// Check status, as Consul spells it on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Passing,
    Warning,
    Critical,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Passing => "passing",
            Health::Warning => "warning",
            Health::Critical => "critical",
        }
    }
    pub fn parse(s: &str) -> Option<Health> {
        match s {
            "passing" => Some(Health::Passing),
            "warning" => Some(Health::Warning),
            "critical" => Some(Health::Critical),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
    pub create_index: u64,
    pub modify_index: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceAddress {
    pub address: String,
    pub port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Weights {
    pub passing: u32,
    pub warning: u32,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// A service instance on a node (Consul's `NodeService`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeService {
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

/// A check definition as echoed in `HealthCheck.Definition`: only the fields that apply.
/// In JSON it is a plain object; binary encodings keep the typed map.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct CheckDefinitionView {
    pub fields: BTreeMap<String, DefinitionValue>,
}

impl Serialize for CheckDefinitionView {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        if !s.is_human_readable() {
            return self.fields.serialize(s);
        }
        let mut m = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            match v {
                DefinitionValue::Str(x) => m.serialize_entry(k, x)?,
                DefinitionValue::Bool(x) => m.serialize_entry(k, x)?,
                DefinitionValue::Int(x) => m.serialize_entry(k, x)?,
                DefinitionValue::List(x) => m.serialize_entry(k, x)?,
                DefinitionValue::Headers(x) => m.serialize_entry(k, x)?,
            }
        }
        m.end()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum DefinitionValue {
    Str(String),
    Bool(bool),
    Int(u64),
    List(Vec<String>),
    Headers(BTreeMap<String, Vec<String>>),
}

/// A health check row (Consul's `HealthCheck`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    pub node: String,
    #[serde(rename = "CheckID")]
    pub check_id: String,
    pub name: String,
    pub status: Health,
    pub notes: String,
    pub output: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    #[serde(rename = "Type")]
    pub kind: String,
    pub interval: String,
    pub timeout: String,
    pub exposed_port: u16,
    pub definition: CheckDefinitionView,
    pub create_index: u64,
    pub modify_index: u64,
}

impl HealthCheck {
    /// A check row with everything but its identity and status empty.
    pub fn new(node: &str, check_id: &str, name: &str, status: Health) -> HealthCheck {
        HealthCheck {
            node: node.into(),
            check_id: check_id.into(),
            name: name.into(),
            status,
            notes: String::new(),
            output: String::new(),
            service_id: String::new(),
            service_name: String::new(),
            service_tags: vec![],
            kind: String::new(),
            interval: String::new(),
            timeout: String::new(),
            exposed_port: 0,
            definition: CheckDefinitionView::default(),
            create_index: 0,
            modify_index: 0,
        }
    }

    /// Same content, ignoring the indexes the store assigns.
    fn same_content(&self, other: &HealthCheck) -> bool {
        let strip = |c: &HealthCheck| HealthCheck { create_index: 0, modify_index: 0, ..c.clone() };
        strip(self) == strip(other)
    }
}

/// `PUT /v1/catalog/register` after decoding and defaulting.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registration {
    pub node: Node,
    pub skip_node_update: bool,
    pub service: Option<NodeService>,
    pub checks: Vec<HealthCheck>,
}

/// `PUT /v1/catalog/deregister`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deregistration {
    pub node: String,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum CatalogError {
    #[error("Must provide node")]
    MissingNode,
    #[error("Must provide address")]
    MissingAddress,
    #[error("Missing service registration for check \"{0}\"")]
    MissingService(String),
}

/// Case-insensitive node key: Consul node names compare without case.
fn node_key(name: &str) -> String {
    name.to_ascii_lowercase()
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Catalog {
    nodes: OrdMap<String, Node>,
    /// (node key, service ID) → service.
    services: OrdMap<(String, String), NodeService>,
    /// (node key, check ID) → check.
    checks: OrdMap<(String, String), HealthCheck>,
    /// Last index that changed anything in the catalog.
    table_index: Index,
    /// Last index that changed anything a `health/service/<name>` or `catalog/service/<name>`
    /// read of that service would see.
    service_index: OrdMap<String, Index>,
}

impl Catalog {
    pub fn table_index(&self) -> Index {
        self.table_index
    }

    /// The blocking index for one service's reads; falls back to the table index when the
    /// service was never seen (so a watcher can wait for it to appear).
    pub fn service_index(&self, name: &str) -> Index {
        self.service_index.get(name).copied().unwrap_or(self.table_index)
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes.get(&node_key(name))
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node_services<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a NodeService> + 'a {
        let k = node_key(node);
        self.services
            .range((k.clone(), String::new())..)
            .take_while(move |((n, _), _)| *n == k)
            .map(|(_, s)| s)
    }

    /// Every (node, service) pair, ordered by node name then service ID.
    pub fn all_services(&self) -> impl Iterator<Item = (&Node, &NodeService)> {
        self.services.iter().filter_map(|((n, _), s)| self.nodes.get(n).map(|node| (node, s)))
    }

    pub fn node_checks<'a>(&'a self, node: &str) -> impl Iterator<Item = &'a HealthCheck> + 'a {
        let k = node_key(node);
        self.checks.range((k.clone(), String::new())..).take_while(move |((n, _), _)| *n == k).map(|(_, c)| c)
    }

    /// A catalog holding one node with its services and checks (empty if it is unknown).
    pub fn node_slice(&self, name: &str) -> Catalog {
        let k = node_key(name);
        let mut slice = Catalog { table_index: self.table_index, ..Catalog::default() };
        if let Some(n) = self.nodes.get(&k) {
            slice.nodes.insert(k.clone(), n.clone());
        }
        for s in self.node_services(name) {
            slice.services.insert((k.clone(), s.id.clone()), s.clone());
        }
        for c in self.node_checks(name) {
            slice.checks.insert((k.clone(), c.check_id.clone()), c.clone());
        }
        slice
    }

    pub fn all_checks(&self) -> impl Iterator<Item = &HealthCheck> {
        self.checks.values()
    }

    /// Checks that decide the health of one service instance: the node's own checks plus the
    /// instance's checks.
    pub fn instance_checks<'a>(
        &'a self,
        node: &str,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a HealthCheck> + 'a {
        self.node_checks(node).filter(move |c| c.service_id.is_empty() || c.service_id == service_id)
    }

    fn bump_service(&mut self, name: &str, index: Index) {
        self.service_index.insert(name.to_string(), index);
    }

    /// Every service name on a node; a node-level change touches all of them.
    fn names_on_node(&self, node: &str) -> BTreeSet<String> {
        self.node_services(node).map(|s| s.service.clone()).collect()
    }

    pub fn register(&mut self, index: Index, reg: &Registration) -> Result<(), CatalogError> {
        if reg.node.node.is_empty() {
            return Err(CatalogError::MissingNode);
        }
        if reg.node.address.is_empty() {
            return Err(CatalogError::MissingAddress);
        }
        let key = node_key(&reg.node.node);
        for c in &reg.checks {
            let known = reg.service.as_ref().is_some_and(|s| s.id == c.service_id)
                || self.services.contains_key(&(key.clone(), c.service_id.clone()));
            if !c.service_id.is_empty() && !known {
                return Err(CatalogError::MissingService(c.check_id.clone()));
            }
        }
        let mut changed = false;
        let existing = self.nodes.get(&key);
        let write_node = match existing {
            None => true,
            Some(_) if reg.skip_node_update => false,
            Some(n) => {
                n.id != reg.node.id
                    || n.address != reg.node.address
                    || n.tagged_addresses != reg.node.tagged_addresses
                    || n.meta != reg.node.meta
                    || n.node != reg.node.node
            }
        };
        if write_node {
            let create_index = existing.map_or(index.0, |n| n.create_index);
            let node = Node { create_index, modify_index: index.0, ..reg.node.clone() };
            self.nodes.insert(key.clone(), node);
            for name in self.names_on_node(&key) {
                self.bump_service(&name, index);
            }
            changed = true;
        }
        if let Some(svc) = &reg.service {
            let id = (key.clone(), svc.id.clone());
            let old = self.services.get(&id);
            let same = old.is_some_and(|o| {
                NodeService { create_index: 0, modify_index: 0, ..o.clone() }
                    == NodeService { create_index: 0, modify_index: 0, ..svc.clone() }
            });
            if !same {
                let create_index = old.map_or(index.0, |o| o.create_index);
                if let Some(o) = old {
                    let renamed = o.service.clone();
                    self.bump_service(&renamed, index);
                }
                self.services.insert(id, NodeService { create_index, modify_index: index.0, ..svc.clone() });
                self.bump_service(&svc.service, index);
                changed = true;
            }
        }
        for c in &reg.checks {
            let id = (key.clone(), c.check_id.clone());
            let mut check = c.clone();
            check.node = reg.node.node.clone();
            if let Some(s) = self.services.get(&(key.clone(), c.service_id.clone())) {
                check.service_name = s.service.clone();
                check.service_tags = s.tags.clone();
            }
            let old = self.checks.get(&id);
            if old.is_some_and(|o| o.same_content(&check)) {
                continue;
            }
            check.create_index = old.map_or(index.0, |o| o.create_index);
            check.modify_index = index.0;
            let affected = if check.service_id.is_empty() {
                self.names_on_node(&key)
            } else {
                BTreeSet::from([check.service_name.clone()])
            };
            self.checks.insert(id, check);
            for name in affected {
                self.bump_service(&name, index);
            }
            changed = true;
        }
        if changed {
            self.table_index = index;
        }
        Ok(())
    }

    pub fn deregister(&mut self, index: Index, d: &Deregistration) {
        let key = node_key(&d.node);
        if !self.nodes.contains_key(&key) {
            return;
        }
        let mut touched: BTreeSet<String> = BTreeSet::new();
        match (&d.service_id, &d.check_id) {
            (Some(sid), _) => {
                if let Some(s) = self.services.remove(&(key.clone(), sid.clone())) {
                    touched.insert(s.service);
                }
                remove_rows(&mut self.checks, &key, |c| c.service_id == *sid);
            }
            (None, Some(cid)) => {
                if let Some(c) = self.checks.remove(&(key.clone(), cid.clone())) {
                    if c.service_id.is_empty() {
                        touched.extend(self.names_on_node(&key));
                    } else {
                        touched.insert(c.service_name);
                    }
                }
            }
            (None, None) => {
                touched.extend(self.names_on_node(&key));
                self.nodes.remove(&key);
                remove_rows(&mut self.services, &key, |_| true);
                remove_rows(&mut self.checks, &key, |_| true);
            }
        }
        for name in &touched {
            self.bump_service(name, index);
        }
        self.table_index = index;
    }
}

/// Removes the rows of node `key` that `doomed` picks: a node's rows are adjacent, keyed by
/// (node, id).
fn remove_rows<V: Clone>(rows: &mut OrdMap<(String, String), V>, key: &str, doomed: impl Fn(&V) -> bool) {
    let gone: Vec<(String, String)> = rows
        .range((key.to_string(), String::new())..)
        .take_while(|((n, _), _)| n == key)
        .filter(|(_, v)| doomed(v))
        .map(|(k, _)| k.clone())
        .collect();
    for k in gone {
        rows.remove(&k);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn node(name: &str) -> Node {
        Node {
            id: String::new(),
            node: name.into(),
            address: "10.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
            create_index: 0,
            modify_index: 0,
        }
    }

    pub fn service(id: &str, name: &str) -> NodeService {
        NodeService {
            kind: String::new(),
            id: id.into(),
            service: name.into(),
            tags: vec![],
            address: String::new(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
            port: 80,
            weights: Weights::default(),
            enable_tag_override: false,
            create_index: 0,
            modify_index: 0,
        }
    }

    pub fn check(id: &str, service_id: &str, status: Health) -> HealthCheck {
        HealthCheck { service_id: service_id.into(), ..HealthCheck::new("", id, id, status) }
    }

    fn reg(n: &str, s: Option<NodeService>, checks: Vec<HealthCheck>) -> Registration {
        Registration { node: node(n), skip_node_update: false, service: s, checks }
    }

    #[test]
    fn register_merges_and_indexes_per_service() {
        let mut c = Catalog::default();
        c.register(Index(1), &reg("n1", Some(service("web1", "web")), vec![])).unwrap();
        c.register(Index(2), &reg("n1", Some(service("db1", "db")), vec![])).unwrap();
        assert_eq!(c.node_services("N1").count(), 2, "node names are case-insensitive");
        assert_eq!(c.service_index("web"), Index(1));
        assert_eq!(c.service_index("db"), Index(2));
        c.register(Index(3), &reg("n1", None, vec![check("c", "web1", Health::Passing)])).unwrap();
        assert_eq!(c.service_index("web"), Index(3));
        assert_eq!(c.service_index("db"), Index(2), "a web check does not wake db watchers");
        let stored = c.node_checks("n1").next().unwrap();
        assert_eq!(stored.service_name, "web");
        // identical re-registration moves nothing
        c.register(Index(4), &reg("n1", Some(service("web1", "web")), vec![])).unwrap();
        assert_eq!(c.table_index(), Index(3));
    }

    #[test]
    fn node_check_touches_every_service_on_node() {
        let mut c = Catalog::default();
        c.register(Index(1), &reg("n1", Some(service("web1", "web")), vec![])).unwrap();
        c.register(Index(2), &reg("n1", Some(service("db1", "db")), vec![])).unwrap();
        c.register(Index(3), &reg("n1", None, vec![check("serfHealth", "", Health::Passing)])).unwrap();
        assert_eq!(c.service_index("web"), Index(3));
        assert_eq!(c.service_index("db"), Index(3));
        c.register(Index(4), &reg("n1", None, vec![check("serfHealth", "", Health::Critical)])).unwrap();
        assert_eq!(c.service_index("web"), Index(4));
    }

    #[test]
    fn check_for_unknown_service_is_refused() {
        let mut c = Catalog::default();
        let r = c.register(Index(1), &reg("n1", None, vec![check("c", "nope", Health::Passing)]));
        assert_eq!(r, Err(CatalogError::MissingService("c".into())));
        assert_eq!(c.nodes().count(), 0, "a refused registration changes nothing");
    }

    #[test]
    fn deregister_service_removes_its_checks_and_node_removes_all() {
        let mut c = Catalog::default();
        let checks = vec![check("c1", "web1", Health::Passing), check("n", "", Health::Passing)];
        c.register(Index(1), &reg("n1", Some(service("web1", "web")), checks)).unwrap();
        let d = Deregistration { node: "n1".into(), service_id: Some("web1".into()), check_id: None };
        c.deregister(Index(2), &d);
        assert_eq!(c.node_checks("n1").count(), 1);
        c.deregister(Index(3), &Deregistration { node: "n1".into(), service_id: None, check_id: None });
        assert!(c.node("n1").is_none());
        assert_eq!(c.all_checks().count(), 0);
        assert_eq!(c.service_index("web"), Index(2));
    }
}
