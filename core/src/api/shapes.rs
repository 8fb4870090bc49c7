//! Response objects with Consul's JSON field names and presence rules.
//!
//! Owns how rows look on the wire where that differs from how they are stored: base64 KV
//! values, the flattened `ServiceNode`, the agent's view of a service, members and
//! `agent/self`. Never decides which rows a request sees (the node does that).

use base64::Engine;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::collections::BTreeMap;

use crate::coordinate::Coordinate;
use crate::fsm::catalog::{HealthCheck, Node, NodeService, ServiceAddress, Weights};
use crate::fsm::coordinates::CoordinateEntry;
use crate::fsm::kv::KvEntry;

/// Everything a JSON response can carry.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Reply {
    Bool(bool),
    Str(String),
    Strings(Vec<String>),
    KvEntries(Vec<KvEntryJson>),
    Nodes(Vec<Node>),
    ServiceTags(BTreeMap<String, Vec<String>>),
    ServiceNodes(Vec<ServiceNode>),
    NodeServices(Option<NodeServices>),
    Checks(Vec<HealthCheck>),
    CheckServiceNodes(Vec<CheckServiceNode>),
    AgentServices(BTreeMap<String, AgentService>),
    AgentService(Box<AgentService>),
    AgentChecks(BTreeMap<String, HealthCheck>),
    Members(Vec<Member>),
    Event(Box<UserEvent>),
    Events(Vec<UserEvent>),
    Keyring(Vec<KeyringPool>),
    AgentSelf(Box<AgentSelf>),
    RaftConfiguration(RaftConfiguration),
    Coordinates(Vec<CoordinateEntry>),
    DatacenterCoordinates(Vec<DatacenterCoordinates>),
}

/// `GET /v1/operator/raft/configuration`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftConfiguration {
    pub servers: Vec<RaftServer>,
    /// Always 0, as in current Consul; clients rely on it.
    pub index: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct RaftServer {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub leader: bool,
    pub protocol_version: String,
    pub voter: bool,
    pub last_index: u64,
}

/// A KV entry as `GET /v1/kv` shows it.
#[derive(Clone, Debug, PartialEq)]
pub struct KvEntryJson(pub KvEntry);

impl Serialize for KvEntryJson {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let e = &self.0;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("LockIndex", &e.lock_index)?;
        m.serialize_entry("Key", &e.key)?;
        m.serialize_entry("Flags", &e.flags)?;
        let value = (!e.value.is_empty()).then(|| base64::engine::general_purpose::STANDARD.encode(&e.value));
        m.serialize_entry("Value", &value)?;
        if let Some(session) = &e.session {
            m.serialize_entry("Session", session)?;
        }
        m.serialize_entry("CreateIndex", &e.create_index.0)?;
        m.serialize_entry("ModifyIndex", &e.modify_index.0)?;
        m.end()
    }
}

/// `catalog/service/:s` rows: node and service flattened into one object.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceNode {
    #[serde(rename = "ID")]
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service_kind: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Vec<String>,
    pub service_address: String,
    pub service_tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub service_weights: Weights,
    pub service_meta: BTreeMap<String, String>,
    pub service_port: u16,
    pub service_enable_tag_override: bool,
    pub create_index: u64,
    pub modify_index: u64,
}

impl ServiceNode {
    pub fn new(n: &Node, s: &NodeService) -> ServiceNode {
        ServiceNode {
            id: n.id.clone(),
            node: n.node.clone(),
            address: n.address.clone(),
            datacenter: n.datacenter.clone(),
            tagged_addresses: n.tagged_addresses.clone(),
            node_meta: n.meta.clone(),
            service_kind: s.kind.clone(),
            service_id: s.id.clone(),
            service_name: s.service.clone(),
            service_tags: s.tags.clone(),
            service_address: s.address.clone(),
            service_tagged_addresses: s.tagged_addresses.clone(),
            service_weights: s.weights,
            service_meta: s.meta.clone(),
            service_port: s.port,
            service_enable_tag_override: s.enable_tag_override,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// `catalog/node/:n`.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct NodeServices {
    pub node: Node,
    pub services: BTreeMap<String, NodeService>,
}

/// `health/service/:s` rows.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckServiceNode {
    pub node: Node,
    pub service: NodeService,
    pub checks: Vec<HealthCheck>,
}

impl CheckServiceNode {
    /// The worst status among the instance's checks (passing when it has none).
    pub fn aggregate(&self) -> crate::fsm::catalog::Health {
        self.checks.iter().map(|c| c.status).max().unwrap_or(crate::fsm::catalog::Health::Passing)
    }
}

/// A service as the agent that owns it shows it (`/v1/agent/services`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(rename = "ID")]
    pub id: String,
    pub service: String,
    pub tags: Vec<String>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub address: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub weights: Weights,
    pub enable_tag_override: bool,
    pub datacenter: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content_hash: Option<String>,
}

impl AgentService {
    pub fn new(s: &NodeService, datacenter: &str) -> AgentService {
        AgentService {
            kind: s.kind.clone(),
            id: s.id.clone(),
            service: s.service.clone(),
            tags: s.tags.clone(),
            meta: s.meta.clone(),
            port: s.port,
            address: s.address.clone(),
            tagged_addresses: s.tagged_addresses.clone(),
            weights: s.weights,
            enable_tag_override: s.enable_tag_override,
            datacenter: datacenter.to_string(),
            content_hash: None,
        }
    }
}

/// A gossip pool member (`/v1/agent/members`).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Member {
    pub name: String,
    pub addr: String,
    pub port: u16,
    pub tags: BTreeMap<String, String>,
    /// 0 none, 1 alive, 2 leaving, 3 left, 4 failed.
    pub status: u8,
    pub protocol_min: u8,
    pub protocol_max: u8,
    pub protocol_cur: u8,
    pub delegate_min: u8,
    pub delegate_max: u8,
    pub delegate_cur: u8,
}

/// One pool's keys as `GET /v1/operator/keyring` reports them: how many members hold each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyringPool {
    #[serde(rename = "WAN")]
    pub wan: bool,
    pub datacenter: String,
    pub segment: String,
    pub keys: BTreeMap<String, usize>,
    pub primary_keys: BTreeMap<String, usize>,
    pub num_nodes: usize,
}

/// A user event (`/v1/event/fire` and `/v1/event/list`): exactly Consul's eight keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserEvent {
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(rename = "Name")]
    pub name: String,
    /// Base64 on the wire, `null` when empty.
    #[serde(rename = "Payload", serialize_with = "base64_or_null")]
    pub payload: Vec<u8>,
    #[serde(rename = "NodeFilter")]
    pub node_filter: String,
    #[serde(rename = "ServiceFilter")]
    pub service_filter: String,
    #[serde(rename = "TagFilter")]
    pub tag_filter: String,
    #[serde(rename = "Version")]
    pub version: u32,
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

fn base64_or_null<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    if bytes.is_empty() {
        s.serialize_none()
    } else {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }
}

/// `/v1/agent/self`; free-form sections are string maps, as Consul's `Stats` are.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentSelf {
    #[serde(rename = "Config")]
    pub config: AgentSelfConfig,
    #[serde(rename = "DebugConfig")]
    pub debug_config: BTreeMap<String, String>,
    #[serde(rename = "Coord")]
    pub coord: Coordinate,
    #[serde(rename = "Member")]
    pub member: Member,
    #[serde(rename = "Stats")]
    pub stats: BTreeMap<String, BTreeMap<String, String>>,
    #[serde(rename = "Meta")]
    pub meta: BTreeMap<String, String>,
    #[serde(rename = "xDS", skip_serializing_if = "Option::is_none")]
    pub xds: Option<Xds>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentSelfConfig {
    pub datacenter: String,
    pub primary_datacenter: String,
    pub node_name: String,
    #[serde(rename = "NodeID")]
    pub node_id: String,
    pub revision: String,
    pub server: bool,
    /// The Consul version whose API this agent speaks; clients branch on it.
    pub version: String,
    /// muster's own version.
    pub muster_version: String,
    pub build_date: String,
}

/// `GET /v1/coordinate/datacenters`: the WAN coordinates of one datacenter's servers.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct DatacenterCoordinates {
    pub datacenter: String,
    #[serde(rename = "AreaID")]
    pub area_id: String,
    pub coordinates: Vec<CoordinateEntry>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Xds {
    #[serde(rename = "SupportedProxies")]
    pub supported_proxies: BTreeMap<String, Vec<String>>,
    #[serde(rename = "Port")]
    pub port: i32,
    #[serde(rename = "Ports")]
    pub ports: BTreeMap<String, i32>,
}
