//! The API surface: typed requests a host decodes from HTTP or DNS, and typed responses whose
//! JSON form is Consul's.
//!
//! Owns the vocabulary only: `defs` (request bodies and their validation), `shapes` (response
//! objects), `dns` (names and records). Never parses HTTP or DNS wire formats (hosts do) and
//! never reads state (the node answers requests).

pub mod decode;
pub mod defs;
pub mod dns;
pub mod filter;
pub mod shapes;

use crate::fsm::catalog::Health;
use crate::fsm::kv::KvSetMode;
use crate::ids::Index;
use crate::time::Duration;
use defs::{CatalogDeregisterDef, CatalogRegisterDef, CheckDef, ServiceDef};
use dns::{DnsQuestion, DnsResponse};
use shapes::Reply;

/// Read consistency (`?stale`, `?consistent`, or neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Consistency {
    #[default]
    Default,
    Stale,
    Consistent,
}

impl Consistency {
    /// The `X-Consul-Effective-Consistency` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            Consistency::Default => "leader",
            Consistency::Stale => "stale",
            Consistency::Consistent => "consistent",
        }
    }
}

/// Options every read takes: blocking (`?index=&wait=`) and consistency.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryOpts {
    /// Block until the result's index exceeds this; 0 means answer at once.
    pub min_index: Index,
    /// How long to block at most; `None` takes the agent's default query time.
    pub wait: Option<Duration>,
    pub consistency: Consistency,
}

/// A gossip keyring operation; keys are base64 text.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyringOp {
    List,
    Install(String),
    Use(String),
    Remove(String),
}

/// How an empty answer looks: `[]`, `{}` (`catalog/services`) or `null` (`catalog/node`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum EmptyShape {
    List,
    Object,
    Null,
}

/// The forms of a KV read.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KvRead {
    Entry { raw: bool },
    Recurse,
    Keys { separator: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ApiRequest {
    KvGet {
        key: String,
        read: KvRead,
        q: QueryOpts,
    },
    KvPut {
        key: String,
        value: Vec<u8>,
        flags: u64,
        mode: KvSetMode,
    },
    KvDelete {
        key: String,
        recurse: bool,
        cas: Option<u64>,
    },
    CatalogRegister(Box<CatalogRegisterDef>),
    CatalogDeregister(CatalogDeregisterDef),
    CatalogDatacenters,
    CatalogNodes {
        q: QueryOpts,
        /// `?near=`: sort by estimated round trip from this node (`_agent`: the agent's own).
        near: Option<String>,
    },
    CatalogServices {
        q: QueryOpts,
    },
    /// Every instance of every service, flattened (`/v1/catalog/services?filter=` filters
    /// these, then folds them back into the name → tags map).
    CatalogAllInstances {
        q: QueryOpts,
    },
    CatalogService {
        name: String,
        tags: Vec<String>,
        q: QueryOpts,
        near: Option<String>,
    },
    CatalogNode {
        name: String,
        q: QueryOpts,
    },
    HealthNode {
        name: String,
        q: QueryOpts,
    },
    HealthChecks {
        service: String,
        q: QueryOpts,
    },
    HealthService {
        service: String,
        tags: Vec<String>,
        passing: bool,
        q: QueryOpts,
        near: Option<String>,
    },
    HealthState {
        state: String,
        q: QueryOpts,
    },
    AgentSelf,
    AgentMembers {
        wan: bool,
    },
    /// `PUT /v1/agent/join/:address[?wan]`: `addr` is `host:port`.
    AgentJoin {
        addr: String,
        wan: bool,
    },
    AgentLeave,
    AgentForceLeave {
        node: String,
        prune: bool,
        wan: bool,
    },
    /// `PUT /v1/event/fire/:name`; the filters are regular expressions (validated).
    EventFire {
        name: String,
        payload: Vec<u8>,
        node: String,
        service: String,
        tag: String,
    },
    /// `/v1/operator/keyring`: list (GET), install (POST), use (PUT), remove (DELETE).
    OperatorKeyring {
        op: KeyringOp,
    },
    /// `GET /v1/event/list[?name=]`; blocks on the hash of the newest event's ID.
    EventList {
        name: Option<String>,
        q: QueryOpts,
    },
    AgentServices,
    AgentService {
        id: String,
    },
    AgentChecks,
    AgentServiceRegister {
        def: Box<ServiceDef>,
        replace_existing_checks: bool,
    },
    AgentServiceDeregister {
        id: String,
    },
    AgentCheckRegister {
        def: Box<CheckDef>,
    },
    AgentCheckDeregister {
        id: String,
    },
    /// `check/pass|warn|fail/:id?note=` and `check/update/:id`.
    AgentCheckTtl {
        id: String,
        status: Health,
        output: String,
    },
    AgentMaintenance {
        enable: bool,
        reason: String,
    },
    AgentServiceMaintenance {
        id: String,
        enable: bool,
        reason: String,
    },
    StatusLeader,
    StatusPeers,
    OperatorRaftConfiguration,
    /// `DELETE /v1/operator/raft/peer?address=` or `?id=`.
    OperatorRaftRemovePeer {
        address: Option<String>,
        id: Option<String>,
    },
    Dns(DnsQuestion),
    /// A read whose answer is known to be empty, with the catalog's index: the mesh
    /// family (`catalog/connect`, `health/connect`, `health/ingress`,
    /// `catalog/gateway-services`) while no mesh exists, and catalog and health reads of a
    /// cluster peer (`?peer=`; no peerings exist).
    Empty {
        q: QueryOpts,
        shape: EmptyShape,
    },
    /// `/v1/coordinate/nodes`: every node's LAN coordinate.
    CoordinateNodes {
        q: QueryOpts,
    },
    CoordinateNode {
        name: String,
        q: QueryOpts,
    },
    /// `/v1/coordinate/datacenters`: the servers' WAN coordinates, from the WAN pool.
    CoordinateDatacenters,
    /// `PUT /v1/coordinate/update`.
    CoordinateUpdate(Box<crate::fsm::coordinates::CoordinateEntry>),
    /// `PUT /v1/agent/reload` (or SIGHUP): the config files' services and checks as read
    /// again; the host has already named what cannot change without a restart.
    AgentReload {
        services: Vec<ServiceDef>,
        checks: Vec<CheckDef>,
    },
    /// `?dc=` naming another datacenter (or a write body's `Datacenter`): answered there,
    /// by one of its servers found in the WAN pool. Never on the wire: a call carries the
    /// datacenter beside the request (`rpc::Call::Api`), so a peer cannot nest requests
    /// without bound and make decoding recurse as deep as it likes.
    #[serde(skip)]
    InDatacenter {
        dc: String,
        req: Box<ApiRequest>,
    },
}

impl ApiRequest {
    /// Whether a server answers this request: the state store, Raft and the WAN live
    /// there, so a client agent sends these over the server port. Everything else is
    /// the local agent's own business (its services and checks, gossip, events).
    pub fn needs_server(&self) -> bool {
        use ApiRequest::*;
        match self {
            KvGet { .. }
            | KvPut { .. }
            | KvDelete { .. }
            | CatalogRegister(_)
            | CatalogDeregister(_)
            | CatalogDatacenters
            | CatalogNodes { .. }
            | CatalogServices { .. }
            | CatalogAllInstances { .. }
            | CatalogService { .. }
            | CatalogNode { .. }
            | HealthNode { .. }
            | HealthChecks { .. }
            | HealthService { .. }
            | HealthState { .. }
            | StatusLeader
            | StatusPeers
            | OperatorRaftConfiguration
            | OperatorRaftRemovePeer { .. }
            | Dns(_)
            | Empty { .. }
            | CoordinateNodes { .. }
            | CoordinateNode { .. }
            | CoordinateDatacenters
            | CoordinateUpdate(_)
            | InDatacenter { .. } => true,
            AgentSelf
            | AgentMembers { .. }
            | AgentJoin { .. }
            | AgentLeave
            | AgentForceLeave { .. }
            | EventFire { .. }
            | OperatorKeyring { .. }
            | EventList { .. }
            | AgentServices
            | AgentService { .. }
            | AgentChecks
            | AgentServiceRegister { .. }
            | AgentServiceDeregister { .. }
            | AgentCheckRegister { .. }
            | AgentCheckDeregister { .. }
            | AgentCheckTtl { .. }
            | AgentMaintenance { .. }
            | AgentServiceMaintenance { .. }
            | AgentReload { .. } => false,
        }
    }

    /// Whether carrying this out twice could change anything twice: such a request is
    /// never retried once it may have reached a server.
    pub fn is_write(&self) -> bool {
        match self {
            ApiRequest::KvPut { .. }
            | ApiRequest::KvDelete { .. }
            | ApiRequest::CatalogRegister(_)
            | ApiRequest::CatalogDeregister(_)
            | ApiRequest::OperatorRaftRemovePeer { .. }
            | ApiRequest::CoordinateUpdate(_) => true,
            ApiRequest::InDatacenter { req, .. } => req.is_write(),
            _ => false,
        }
    }
}

/// Headers of reads that go through the state store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryMeta {
    /// `X-Consul-Index`, never 0.
    pub index: Index,
    pub known_leader: bool,
    pub last_contact_ms: u64,
    /// `X-Consul-Effective-Consistency`, on catalog and health reads.
    pub consistency: Option<Consistency>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// 200 with no body at all (agent write endpoints).
    Empty,
    /// Plain text: error reasons.
    Text(String),
    /// Raw bytes (`?raw` KV reads).
    Raw(Vec<u8>),
    Json(Reply),
    /// JSON already rendered by the server that answered a forwarded request.
    JsonText(String),
    Dns(DnsResponse),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ApiResponse {
    pub status: u16,
    pub meta: Option<QueryMeta>,
    pub body: Body,
}

/// A refused request: status code and the plain-text reason Consul would give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub reason: String,
}

impl ApiError {
    pub fn new(status: u16, reason: impl Into<String>) -> ApiError {
        ApiError { status, reason: reason.into() }
    }
}

impl From<ApiError> for ApiResponse {
    fn from(e: ApiError) -> ApiResponse {
        ApiResponse::error(e.status, e.reason)
    }
}

/// An `ApiResponse` as it crosses the server port: replies rendered to JSON text, since
/// their shapes are Consul's JSON and not a binary format's.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WireResponse {
    pub status: u16,
    pub meta: Option<QueryMeta>,
    pub body: WireBody,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum WireBody {
    Empty,
    Text(String),
    Raw(Vec<u8>),
    Json(String),
    Dns(DnsResponse),
}

impl From<ApiResponse> for WireResponse {
    fn from(r: ApiResponse) -> WireResponse {
        let body = match r.body {
            Body::Empty => WireBody::Empty,
            Body::Text(t) => WireBody::Text(t),
            Body::Raw(b) => WireBody::Raw(b),
            Body::Json(reply) => match serde_json::to_string(&reply) {
                Ok(text) => WireBody::Json(text),
                Err(e) => return ApiResponse::error(500, format!("rendering the answer failed: {e}")).into(),
            },
            Body::JsonText(text) => WireBody::Json(text),
            Body::Dns(d) => WireBody::Dns(d),
        };
        WireResponse { status: r.status, meta: r.meta, body }
    }
}

impl From<WireResponse> for ApiResponse {
    fn from(w: WireResponse) -> ApiResponse {
        let body = match w.body {
            WireBody::Empty => Body::Empty,
            WireBody::Text(t) => Body::Text(t),
            WireBody::Raw(b) => Body::Raw(b),
            WireBody::Json(text) => Body::JsonText(text),
            WireBody::Dns(d) => Body::Dns(d),
        };
        ApiResponse { status: w.status, meta: w.meta, body }
    }
}

impl ApiResponse {
    pub fn json(reply: Reply) -> ApiResponse {
        ApiResponse { status: 200, meta: None, body: Body::Json(reply) }
    }
    pub fn empty() -> ApiResponse {
        ApiResponse { status: 200, meta: None, body: Body::Empty }
    }
    pub fn error(status: u16, reason: impl Into<String>) -> ApiResponse {
        ApiResponse { status, meta: None, body: Body::Text(reason.into()) }
    }
    pub fn with_meta(mut self, meta: QueryMeta) -> ApiResponse {
        self.meta = Some(meta);
        self
    }
}
