//! The API surface: typed requests a host decodes from HTTP or DNS, and typed responses whose
//! JSON form is Consul's.
//!
//! Owns the vocabulary only: `defs` (request bodies and their validation), `shapes` (response
//! objects), `dns` (names and records). Never parses HTTP or DNS wire formats (hosts do) and
//! never reads state (the node answers requests).

pub mod defs;
pub mod dns;
pub mod shapes;

use crate::fsm::catalog::Health;
use crate::fsm::kv::KvSetMode;
use crate::ids::Index;
use crate::time::Duration;
use defs::{CatalogDeregisterDef, CatalogRegisterDef, CheckDef, ServiceDef};
use dns::{DnsQuestion, DnsResponse};
use shapes::Reply;

/// Read consistency (`?stale`, `?consistent`, or neither).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// The forms of a KV read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KvRead {
    Entry { raw: bool },
    Recurse,
    Keys { separator: Option<String> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
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
}

/// Headers of reads that go through the state store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
