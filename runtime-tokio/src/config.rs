//! Agent configuration: reading Consul-format config files (JSON and HCL),
//! checking every key against the keys Consul's agent accepts, merging the
//! sources in order and producing a typed [`AgentConfig`].
//!
//! Owns: reading files and config directories, the key schema (everything
//! Consul accepts, and which part of it muster uses), translation of
//! deprecated keys, merge rules, Consul's defaults, the `-dev` preset and a
//! few cross-key consistency checks.
//!
//! Never does: resolve addresses (go-sockaddr templates, picking the private
//! IP to advertise), read or write anything under `data_dir`, decide whether
//! `data_dir` is required (the caller knows about `-dev`), or decode service,
//! check and watch definitions: those stay raw JSON for the agent code.
//!
//! Every source is validated on its own, so an error names the file that
//! holds the bad key. A key Consul knows but muster does not implement yet is
//! accepted with a warning, so existing Consul config files start unchanged.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Map, Value};

/// One configuration fragment: a parsed file, or values built by the caller
/// (named e.g. "flags" or "defaults").
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub name: String,
    pub value: Value,
}

/// Syntax of a config file; normally taken from its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Json,
    Hcl,
}

impl ConfigFormat {
    /// The format a file's extension names, as Consul decides it: the name
    /// must end in `.json` or `.hcl` exactly.
    fn from_path(path: &Path) -> Option<ConfigFormat> {
        let name = path.to_string_lossy();
        if name.ends_with(".json") {
            Some(ConfigFormat::Json)
        } else if name.ends_with(".hcl") {
            Some(ConfigFormat::Hcl)
        } else {
            None
        }
    }
}

/// Why configuration could not be loaded. Every variant's `Display` names
/// the file (or source) involved.
///
/// `Display` and `Error` are written by hand: thiserror treats any field
/// named `source` as the underlying cause, and here `source` is the name of
/// a config source.
#[derive(Debug)]
pub enum ConfigError {
    /// The file or directory could not be read.
    Io { path: String, error: std::io::Error },
    /// A config file named without `.json`/`.hcl` and no format given.
    UnknownFormat { path: String },
    /// The text is not valid JSON/HCL, or its top level is not an object.
    Parse { source: String, reason: String },
    /// A key Consul's agent does not accept; `key` is the dotted path.
    UnknownKey { source: String, key: String },
    /// A known key with a value of the wrong type or out of range.
    Invalid { source: String, key: String, reason: String },
    /// The merged configuration contradicts itself.
    Inconsistent { reason: String },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Io { path, error } => write!(f, "Error reading {path}: {error}"),
            ConfigError::UnknownFormat { path } => write!(
                f,
                "Error reading {path}: unknown extension; must be .hcl or .json, or a config format must be given"
            ),
            ConfigError::Parse { source, reason } => write!(f, "Error parsing {source}: {reason}"),
            ConfigError::UnknownKey { source, key } => {
                write!(f, "Error parsing {source}: invalid config key \"{key}\"")
            }
            ConfigError::Invalid {
                source,
                key,
                reason,
            } => write!(
                f,
                "Error parsing {source}: invalid value for \"{key}\": {reason}"
            ),
            ConfigError::Inconsistent { reason } => write!(f, "Invalid configuration: {reason}"),
        }
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Io { error, .. } => Some(error),
            _ => None,
        }
    }
}

/// Parses config text in the given syntax. `name` is used in error messages
/// (a path, or e.g. "flags-0.hcl" for inline `-hcl` text).
pub fn parse_config(name: &str, text: &str, format: ConfigFormat) -> Result<Source, ConfigError> {
    let parse_error = |reason: String| ConfigError::Parse { source: name.to_string(), reason };
    // Consul skips empty files rather than rejecting them.
    let value = if text.trim().is_empty() {
        Value::Object(Map::new())
    } else {
        match format {
            ConfigFormat::Json => serde_json::from_str(text).map_err(|e| parse_error(e.to_string()))?,
            ConfigFormat::Hcl => hcl::from_str(text).map_err(|e| parse_error(e.to_string()))?,
        }
    };
    if !value.is_object() {
        return Err(parse_error("the top level must be an object of config keys".to_string()));
    }
    Ok(Source { name: name.to_string(), value })
}

/// Reads one config file; its format comes from the `.json`/`.hcl`
/// extension, any other extension is an error.
pub fn read_config_file(path: &Path) -> Result<Source, ConfigError> {
    read_config_file_as(path, None)
}

/// Reads one config file; `format` (from `-config-format`) overrides the
/// extension.
pub fn read_config_file_as(path: &Path, format: Option<ConfigFormat>) -> Result<Source, ConfigError> {
    let name = path.display().to_string();
    let format = format
        .or_else(|| ConfigFormat::from_path(path))
        .ok_or_else(|| ConfigError::UnknownFormat { path: name.clone() })?;
    let text =
        std::fs::read_to_string(path).map_err(|error| ConfigError::Io { path: name.clone(), error })?;
    parse_config(&name, &text, format)
}

/// Reads every `*.json` and `*.hcl` file directly inside `dir` (not in
/// sub-directories), in lexical order of file name. Other files are skipped.
pub fn read_config_dir(dir: &Path) -> Result<Vec<Source>, ConfigError> {
    read_config_dir_as(dir, None)
}

/// Like [`read_config_dir`]; with a `format`, every file is read in that
/// format whatever its extension (Consul's `-config-format`).
pub fn read_config_dir_as(dir: &Path, format: Option<ConfigFormat>) -> Result<Vec<Source>, ConfigError> {
    let io_error = |error| ConfigError::Io { path: dir.display().to_string(), error };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error)? {
        let path = entry.map_err(io_error)?.path();
        // fs::metadata follows symlinks, so a linked directory is skipped
        // and a linked file is read, as Consul does.
        let metadata = std::fs::metadata(&path)
            .map_err(|error| ConfigError::Io { path: path.display().to_string(), error })?;
        if metadata.is_file() && (format.is_some() || ConfigFormat::from_path(&path).is_some()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    files.iter().map(|path| read_config_file_as(path, format)).collect()
}

/// The typed agent configuration, with Consul's defaults for everything not
/// set. Keys Consul accepts that have no field here stay in `raw`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Lower-cased, `[a-z0-9_-]+`.
    pub datacenter: String,
    /// Authoritative datacenter for ACLs; the local `datacenter` when unset.
    pub primary_datacenter: String,
    /// `None`: the caller uses the host name.
    pub node_name: Option<String>,
    /// `None`: the caller generates one (and persists it in `data_dir`).
    pub node_id: Option<String>,
    pub node_meta: BTreeMap<String, String>,
    pub server: bool,
    pub bootstrap: bool,
    pub bootstrap_expect: u32,
    pub data_dir: Option<PathBuf>,
    pub bind_addr: String,
    pub advertise_addr: Option<String>,
    pub advertise_addr_wan: Option<String>,
    /// One address, or several separated by spaces: see [`Self::client_addrs`].
    pub client_addr: String,
    pub addresses: Addresses,
    pub ports: Ports,
    /// Always ends with a dot.
    pub domain: String,
    /// Ends with a dot when set.
    pub alt_domain: Option<String>,
    pub recursors: Vec<String>,
    pub dns_config: DnsConfig,
    pub enable_script_checks: bool,
    pub enable_local_script_checks: bool,
    pub check_output_max_size: usize,
    pub check_update_interval: Duration,
    /// The full anti-entropy period before scaling with cluster size (Consul's hidden
    /// `ae_interval`, 1 minute; tests shorten it).
    pub ae_interval: Duration,
    /// How often an agent sends its network coordinate at least (15 s), and how many
    /// updates a second the servers should see from the whole datacenter (64).
    pub sync_coordinate_interval_min: Duration,
    pub sync_coordinate_rate_target: f64,
    pub log_level: String,
    pub log_json: bool,
    pub pid_file: Option<PathBuf>,
    pub default_query_time: Duration,
    pub max_query_time: Duration,
    /// `limits.kv_max_value_size`.
    pub kv_max_value_size: u64,
    /// `limits.http_max_conns_per_client`: open HTTP connections from one address.
    pub http_max_conns_per_client: u64,
    /// `limits.rpc_max_conns_per_client`: open server-port connections from one address.
    pub rpc_max_conns_per_client: u64,
    /// `limits.rpc_handshake_timeout`: how long a server-port connection may take to send
    /// its preamble.
    pub rpc_handshake_timeout: Duration,
    /// `limits.rpc_rate` (calls a second a client agent may send to servers; infinite, the
    /// default, for no limit) and `limits.rpc_max_burst`.
    pub rpc_rate: f64,
    pub rpc_max_burst: u64,
    /// `limits.txn_max_req_len`.
    pub txn_max_req_len: u64,
    pub session_ttl_min: Duration,
    /// Applied entries between state-machine snapshots (`raft_snapshot_threshold`).
    pub raft_snapshot_threshold: u64,
    /// Log entries kept below a snapshot for followers a little behind (`raft_trailing_logs`).
    pub raft_trailing_logs: u64,
    /// Includes the deprecated `start_join` addresses.
    pub retry_join: Vec<String>,
    /// Includes the deprecated `start_join_wan` addresses.
    pub retry_join_wan: Vec<String>,
    pub retry_interval: Duration,
    pub retry_interval_wan: Duration,
    /// 0 = retry forever.
    pub retry_max: u32,
    pub retry_max_wan: u32,
    pub rejoin_after_leave: bool,
    /// Base64 gossip key.
    pub encrypt: Option<String>,
    pub encrypt_verify_incoming: bool,
    pub encrypt_verify_outgoing: bool,
    pub disable_keyring_file: bool,
    /// `ui_config.enabled`, or the deprecated `ui`.
    pub ui_enabled: bool,
    /// `acl.enabled` (also turned on by the deprecated `acl_datacenter`).
    pub acl_enabled: bool,
    /// `acl.default_policy`: "allow" or "deny".
    pub acl_default_policy: String,
    /// `acl.down_policy`.
    pub acl_down_policy: String,
    /// `acl.enable_token_persistence`.
    pub acl_enable_token_persistence: bool,
    pub acl_tokens: AclTokens,
    /// `None`: Consul's role default (true for clients, false for servers).
    pub leave_on_terminate: Option<bool>,
    /// `None`: Consul's role default (true for servers, false for clients).
    pub skip_leave_on_interrupt: Option<bool>,
    pub disable_http_unprintable_char_filter: bool,
    pub disable_kv_key_validation: bool,
    pub disable_remote_exec: bool,
    /// `performance.raft_multiplier`, 1..=10.
    pub raft_multiplier: u32,
    /// Raft timeouts: `consul.raft.*` (1s, 1s, 500ms) times `raft_multiplier`.
    pub raft_timing: RaftTiming,
    pub gossip_lan: GossipConfig,
    pub gossip_wan: GossipConfig,
    /// Service definitions from `service` and `services`, in source order,
    /// undecoded.
    pub services: Vec<Value>,
    /// Check definitions from `check` and `checks`, in source order,
    /// undecoded.
    pub checks: Vec<Value>,
    /// Watch definitions, undecoded.
    pub watches: Vec<Value>,
    /// The merged configuration tree, deprecated keys already translated.
    pub raw: Value,
}

impl AgentConfig {
    /// The client-facing bind addresses (`client_addr` may list several,
    /// space separated).
    pub fn client_addrs(&self) -> Vec<String> {
        self.client_addr.split_whitespace().map(str::to_string).collect()
    }

    /// The values `-dev` implies. The caller puts this source first, so
    /// every file and flag can still override it.
    pub fn dev_defaults() -> Source {
        let fast_gossip = json!({
            "gossip_interval": "100ms",
            "probe_interval": "100ms",
            "probe_timeout": "100ms",
            "suspicion_mult": 3
        });
        Source {
            name: "dev".to_string(),
            value: json!({
                "server": true,
                "bootstrap": true,
                "bind_addr": "127.0.0.1",
                "client_addr": "127.0.0.1",
                "ui_config": { "enabled": true },
                "log_level": "DEBUG",
                "ports": { "grpc": 8502 },
                "performance": { "raft_multiplier": 1 },
                "disable_keyring_file": true,
                "gossip_lan": fast_gossip,
                "gossip_wan": fast_gossip,
                "consul": {
                    "raft": {
                        "election_timeout": "52ms",
                        "heartbeat_timeout": "35ms",
                        "leader_lease_timeout": "20ms"
                    }
                }
            }),
        }
    }
}

/// Per-interface bind addresses overriding `client_addr`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Addresses {
    pub dns: Option<String>,
    pub http: Option<String>,
    pub https: Option<String>,
    pub grpc: Option<String>,
    pub grpc_tls: Option<String>,
}

/// Listener ports; -1 disables a listener (Consul maps any value <= 0 to -1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ports {
    pub dns: i32,
    pub http: i32,
    pub https: i32,
    pub grpc: i32,
    /// 8503 on servers when unset, as in Consul.
    pub grpc_tls: i32,
    pub serf_lan: i32,
    pub serf_wan: i32,
    pub server: i32,
}

/// `dns_config { ... }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    pub allow_stale: bool,
    pub max_stale: Duration,
    pub node_ttl: Duration,
    /// Keys are service names or `*`-suffixed prefixes.
    pub service_ttl: BTreeMap<String, Duration>,
    pub udp_answer_limit: u32,
    pub a_record_limit: u32,
    pub enable_truncate: bool,
    pub only_passing: bool,
    pub recursor_strategy: RecursorStrategy,
    pub recursor_timeout: Duration,
    pub soa: Soa,
    pub enable_additional_node_meta_txt: bool,
    pub disable_compression: bool,
}

/// How the DNS server picks among `recursors`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecursorStrategy {
    Sequential,
    Random,
}

/// `dns_config.soa { ... }`, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Soa {
    pub refresh: u32,
    pub retry: u32,
    pub expire: u32,
    pub min_ttl: u32,
}

/// `acl.tokens { ... }`, deprecated names already translated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclTokens {
    pub initial_management: Option<String>,
    pub agent: Option<String>,
    pub default: Option<String>,
    pub agent_recovery: Option<String>,
    pub replication: Option<String>,
    pub config_file_service_registration: Option<String>,
    pub dns: Option<String>,
}

/// `gossip_lan` / `gossip_wan`, defaults from memberlist's LAN/WAN profiles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GossipConfig {
    pub gossip_nodes: u32,
    pub gossip_interval: Duration,
    pub probe_interval: Duration,
    pub probe_timeout: Duration,
    pub suspicion_mult: u32,
    pub retransmit_mult: u32,
}

/// Effective Raft timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaftTiming {
    pub heartbeat_timeout: Duration,
    pub election_timeout: Duration,
    pub leader_lease_timeout: Duration,
}

/// Validates every source, translates deprecated keys, merges the sources
/// in order and builds the typed configuration.
///
/// Later sources override earlier ones; list keys are appended; maps are
/// merged key by key. Consul applies list-valued flags before the files and
/// scalar flags after them: a caller copying that passes two flag sources.
///
/// The warnings (deduplicated) name deprecated keys and keys muster accepts
/// but does not implement yet.
pub fn load(sources: &[Source]) -> Result<(AgentConfig, Vec<String>), ConfigError> {
    let mut warnings = Warnings::default();
    let mut merged = Map::new();
    for source in sources {
        let tree = normalize_source(source, &mut warnings)?;
        merge_block(&mut merged, tree, TOP);
    }
    let config = build(Value::Object(merged), &mut warnings)?;
    Ok((config, warnings.list))
}

/// Warnings in first-seen order, each once.
#[derive(Default)]
struct Warnings {
    seen: BTreeSet<String>,
    list: Vec<String>,
}

impl Warnings {
    fn push(&mut self, warning: String) {
        if self.seen.insert(warning.clone()) {
            self.list.push(warning);
        }
    }
}

// ---------------------------------------------------------------------------
// Schema

/// What a key's value must look like, which also decides how it merges.
#[derive(Clone, Copy)]
enum Kind {
    Bool,
    Int {
        min: i64,
        max: i64,
    },
    Float,
    Str,
    /// A string from a fixed set (exact match).
    Choice(&'static [&'static str]),
    /// A datacenter name: lower-cased, then `[a-z0-9_-]+`.
    DcName,
    /// A Go duration string ("10s", "1m30s").
    Duration,
    StrList,
    /// User-chosen keys with string values; the keys are not checked.
    StrMap,
    /// User-chosen keys with duration values.
    DurationMap,
    /// Anything; an object merges key by key, anything else is replaced.
    Any,
    /// A list of anything (a single object counts as a one-item list).
    AnyList,
    /// A nested object with its own known keys.
    Block(&'static [Key]),
    /// A list of objects with known keys.
    BlockList(&'static [Key]),
    /// User-chosen names, each holding an object with known keys.
    NamedBlocks(&'static [Key]),
    /// Service or check definitions: an object or a list of objects, passed
    /// through undecoded.
    Definitions,
}

/// What muster does with a key.
#[derive(Clone, Copy)]
enum Status {
    /// Read into `AgentConfig` (or, for blocks, holds such keys).
    Used,
    /// Accepted, reported as not implemented.
    Ignored,
    /// Accepted with nothing to do: the feature it tunes does not exist in
    /// muster (update checks, anonymous usage reports).
    Inert,
    /// Deprecated name of the key at this dotted path.
    Renamed(&'static str),
    /// Deprecated and without effect.
    Obsolete,
}

struct Key {
    name: &'static str,
    kind: Kind,
    status: Status,
}

const fn used(name: &'static str, kind: Kind) -> Key {
    Key { name, kind, status: Status::Used }
}

const fn ignored(name: &'static str, kind: Kind) -> Key {
    Key { name, kind, status: Status::Ignored }
}

const fn inert(name: &'static str, kind: Kind) -> Key {
    Key { name, kind, status: Status::Inert }
}

const fn renamed(name: &'static str, kind: Kind, to: &'static str) -> Key {
    Key { name, kind, status: Status::Renamed(to) }
}

const fn obsolete(name: &'static str, kind: Kind) -> Key {
    Key { name, kind, status: Status::Obsolete }
}

/// A block: its own status does not matter, its keys' statuses do.
const fn block(name: &'static str, keys: &'static [Key]) -> Key {
    used(name, Kind::Block(keys))
}

const INT: Kind = Kind::Int { min: i64::MIN, max: i64::MAX };
const UINT: Kind = Kind::Int { min: 0, max: i64::MAX };
const U32: Kind = Kind::Int { min: 0, max: u32::MAX as i64 };
/// Values <= 0 disable a listener; above 65535 is an error.
const PORT: Kind = Kind::Int { min: i64::MIN, max: 65535 };
const STR: Kind = Kind::Str;
const BOOL: Kind = Kind::Bool;
const DUR: Kind = Kind::Duration;
const LIST: Kind = Kind::StrList;

const TOP: &[Key] = &[
    block("acl", ACL),
    renamed("acl_agent_master_token", STR, "acl.tokens.agent_recovery"),
    renamed("acl_agent_token", STR, "acl.tokens.agent"),
    renamed("acl_datacenter", Kind::DcName, "primary_datacenter"),
    renamed("acl_default_policy", Kind::Choice(ACL_POLICIES), "acl.default_policy"),
    renamed("acl_down_policy", Kind::Choice(ACL_DOWN_POLICIES), "acl.down_policy"),
    renamed("acl_enable_key_list_policy", BOOL, "acl.enable_key_list_policy"),
    obsolete("acl_enforce_version_8", Kind::Any),
    renamed("acl_master_token", STR, "acl.tokens.initial_management"),
    renamed("acl_replication_token", STR, "acl.tokens.replication"),
    renamed("acl_token", STR, "acl.tokens.default"),
    renamed("acl_ttl", DUR, "acl.token_ttl"),
    block("addresses", ADDRESSES),
    used("advertise_addr", STR),
    ignored("advertise_addr_ipv4", STR),
    ignored("advertise_addr_ipv6", STR),
    used("advertise_addr_wan", STR),
    ignored("advertise_addr_wan_ipv4", STR),
    ignored("advertise_addr_wan_ipv6", STR),
    block("advertise_addrs", ADVERTISE_ADDRS),
    ignored("advertise_reconnect_timeout", DUR),
    used("alt_domain", STR),
    block("audit", AUDIT),
    block("auto_config", AUTO_CONFIG),
    block("auto_encrypt", AUTO_ENCRYPT),
    ignored("auto_reload_config", BOOL),
    block("autopilot", AUTOPILOT),
    used("bind_addr", STR),
    used("bootstrap", BOOL),
    used("bootstrap_expect", U32),
    ignored("build_date", Kind::Any),
    renamed("ca_file", STR, "tls.defaults.ca_file"),
    renamed("ca_path", STR, "tls.defaults.ca_path"),
    block("cache", CACHE),
    renamed("cert_file", STR, "tls.defaults.cert_file"),
    used("check", Kind::Definitions),
    ignored("check_deregister_interval_min", DUR),
    used("check_output_max_size", Kind::Int { min: 1, max: i64::MAX }),
    ignored("check_reap_interval", DUR),
    used("check_update_interval", DUR),
    used("ae_interval", DUR),
    used("checks", Kind::Definitions),
    used("client_addr", STR),
    block("cloud", CLOUD),
    block("config_entries", CONFIG_ENTRIES),
    block("connect", CONNECT),
    block("consul", CONSUL),
    used("data_dir", STR),
    used("datacenter", Kind::DcName),
    used("default_query_time", DUR),
    inert("disable_anonymous_signature", BOOL),
    ignored("disable_coordinates", BOOL),
    ignored("disable_host_node_id", BOOL),
    used("disable_http_unprintable_char_filter", BOOL),
    used("disable_keyring_file", BOOL),
    used("disable_kv_key_validation", BOOL),
    used("disable_remote_exec", BOOL),
    inert("disable_update_check", BOOL),
    ignored("discard_check_output", BOOL),
    ignored("discovery_max_stale", DUR),
    block("dns_config", DNS),
    used("domain", STR),
    renamed("enable_acl_replication", BOOL, "acl.enable_token_replication"),
    ignored("enable_agent_tls_for_checks", BOOL),
    ignored("enable_central_service_config", BOOL),
    ignored("enable_debug", BOOL),
    used("enable_local_script_checks", BOOL),
    used("enable_script_checks", BOOL),
    ignored("enable_syslog", BOOL),
    used("encrypt", STR),
    used("encrypt_verify_incoming", BOOL),
    used("encrypt_verify_outgoing", BOOL),
    ignored("experiments", LIST),
    block("gossip_lan", GOSSIP),
    block("gossip_wan", GOSSIP),
    block("http_config", HTTP_CONFIG),
    renamed("key_file", STR, "tls.defaults.key_file"),
    used("leave_on_terminate", BOOL),
    ignored("license_path", STR),
    ignored("license_poll_base_time", DUR),
    ignored("license_poll_max_time", DUR),
    ignored("license_update_base_time", DUR),
    ignored("license_update_max_time", DUR),
    block("limits", LIMITS),
    block("locality", LOCALITY),
    ignored("log_file", STR),
    used("log_json", BOOL),
    used("log_level", STR),
    ignored("log_rotate_bytes", INT),
    ignored("log_rotate_duration", DUR),
    ignored("log_rotate_max_files", INT),
    ignored("log_sublevels", Kind::StrMap),
    used("max_query_time", DUR),
    used("node_id", STR),
    used("node_meta", Kind::StrMap),
    used("node_name", STR),
    renamed("non_voting_server", BOOL, "read_replica"),
    ignored("partition", STR),
    block("peering", PEERING),
    block("performance", PERFORMANCE),
    used("pid_file", STR),
    block("ports", PORTS),
    used("primary_datacenter", Kind::DcName),
    ignored("primary_gateways", LIST),
    ignored("primary_gateways_interval", DUR),
    ignored("protocol", INT),
    renamed("raft_boltdb", Kind::Block(RAFT_BOLTDB), "raft_logstore.boltdb"),
    block("raft_logstore", RAFT_LOGSTORE),
    ignored("raft_protocol", INT),
    ignored("raft_snapshot_interval", DUR),
    used("raft_snapshot_threshold", UINT),
    used("raft_trailing_logs", UINT),
    ignored("read_replica", BOOL),
    ignored("reconnect_timeout", DUR),
    ignored("reconnect_timeout_wan", DUR),
    used("recursors", LIST),
    used("rejoin_after_leave", BOOL),
    block("reporting", REPORTING),
    used("retry_interval", DUR),
    used("retry_interval_wan", DUR),
    used("retry_join", LIST),
    used("retry_join_wan", LIST),
    used("retry_max", U32),
    used("retry_max_wan", U32),
    ignored("revision", STR),
    block("rpc", RPC),
    ignored("segment", STR),
    ignored("segment_limit", INT),
    ignored("segment_name_limit", INT),
    used("segments", Kind::BlockList(SEGMENT)),
    ignored("serf_lan", STR),
    ignored("serf_lan_allowed_cidrs", LIST),
    ignored("serf_wan", STR),
    ignored("serf_wan_allowed_cidrs", LIST),
    used("server", BOOL),
    ignored("server_name", STR),
    ignored("server_rejoin_age_max", DUR),
    used("service", Kind::Definitions),
    used("services", Kind::Definitions),
    used("session_ttl_min", DUR),
    used("skip_leave_on_interrupt", BOOL),
    ignored("snapshot_agent", Kind::Any),
    renamed("start_join", LIST, "retry_join"),
    renamed("start_join_wan", LIST, "retry_join_wan"),
    used("sync_coordinate_interval_min", DUR),
    used("sync_coordinate_rate_target", Kind::Float),
    ignored("syslog_facility", STR),
    ignored("tagged_addresses", Kind::StrMap),
    block("telemetry", TELEMETRY),
    block("tls", TLS),
    renamed("tls_cipher_suites", STR, "tls.defaults.tls_cipher_suites"),
    renamed("tls_min_version", STR, "tls.defaults.tls_min_version"),
    obsolete("tls_prefer_server_cipher_suites", BOOL),
    ignored("translate_wan_addrs", BOOL),
    renamed("ui", BOOL, "ui_config.enabled"),
    block("ui_config", UI_CONFIG),
    renamed("ui_content_path", STR, "ui_config.content_path"),
    renamed("ui_dir", STR, "ui_config.dir"),
    block("unix_sockets", UNIX_SOCKETS),
    ignored("use_streaming_backend", BOOL),
    renamed("verify_incoming", BOOL, "tls.defaults.verify_incoming"),
    renamed("verify_incoming_https", BOOL, "tls.https.verify_incoming"),
    renamed("verify_incoming_rpc", BOOL, "tls.internal_rpc.verify_incoming"),
    renamed("verify_outgoing", BOOL, "tls.defaults.verify_outgoing"),
    renamed("verify_server_hostname", BOOL, "tls.internal_rpc.verify_server_hostname"),
    ignored("version", STR),
    ignored("version_metadata", STR),
    ignored("version_prerelease", STR),
    used("watches", Kind::AnyList),
    block("xds", XDS),
];

const ACL_POLICIES: &[&str] = &["allow", "deny"];
const ACL_DOWN_POLICIES: &[&str] = &["allow", "deny", "extend-cache", "async-cache"];

const ACL: &[Key] = &[
    used("default_policy", Kind::Choice(ACL_POLICIES)),
    used("down_policy", Kind::Choice(ACL_DOWN_POLICIES)),
    ignored("enable_key_list_policy", BOOL),
    used("enable_token_persistence", BOOL),
    ignored("enable_token_replication", BOOL),
    used("enabled", BOOL),
    ignored("msp_disable_bootstrap", BOOL),
    ignored("policy_ttl", DUR),
    ignored("role_ttl", DUR),
    ignored("token_ttl", DUR),
    block("tokens", ACL_TOKENS),
];

const ACL_TOKENS: &[Key] = &[
    used("agent", STR),
    renamed("agent_master", STR, "acl.tokens.agent_recovery"),
    used("agent_recovery", STR),
    used("config_file_service_registration", STR),
    used("default", STR),
    used("dns", STR),
    used("initial_management", STR),
    used("managed_service_provider", Kind::BlockList(MSP_TOKEN)),
    renamed("master", STR, "acl.tokens.initial_management"),
    used("replication", STR),
];

const MSP_TOKEN: &[Key] = &[ignored("accessor_id", STR), ignored("secret_id", STR)];

const ADDRESSES: &[Key] =
    &[used("dns", STR), used("grpc", STR), used("grpc_tls", STR), used("http", STR), used("https", STR)];

// Pre-1.0 Consul; still accepted so old files start.
const ADVERTISE_ADDRS: &[Key] = &[ignored("rpc", STR), ignored("serf_lan", STR), ignored("serf_wan", STR)];

const AUDIT: &[Key] = &[ignored("enabled", BOOL), used("sink", Kind::NamedBlocks(AUDIT_SINK))];

const AUDIT_SINK: &[Key] = &[
    ignored("delivery_guarantee", STR),
    ignored("format", STR),
    ignored("mode", STR),
    obsolete("name", STR),
    ignored("path", STR),
    ignored("rotate_bytes", INT),
    ignored("rotate_duration", DUR),
    ignored("rotate_max_files", INT),
    ignored("type", STR),
];

const AUTO_CONFIG: &[Key] = &[
    block("authorization", AUTO_CONFIG_AUTHORIZATION),
    ignored("dns_sans", LIST),
    ignored("enabled", BOOL),
    ignored("intro_token", STR),
    ignored("intro_token_file", STR),
    ignored("ip_sans", LIST),
    ignored("server_addresses", LIST),
];

const AUTO_CONFIG_AUTHORIZATION: &[Key] = &[ignored("enabled", BOOL), block("static", AUTO_CONFIG_STATIC)];

const AUTO_CONFIG_STATIC: &[Key] = &[
    ignored("allow_reuse", BOOL),
    ignored("bound_audiences", LIST),
    ignored("bound_issuer", STR),
    ignored("claim_assertions", LIST),
    ignored("claim_mappings", Kind::StrMap),
    ignored("clock_skew_leeway", DUR),
    ignored("expiration_leeway", DUR),
    ignored("jwks_ca_cert", STR),
    ignored("jwks_url", STR),
    ignored("jwt_supported_algs", LIST),
    ignored("jwt_validation_pub_keys", LIST),
    ignored("list_claim_mappings", Kind::StrMap),
    ignored("not_before_leeway", DUR),
    ignored("oidc_discovery_ca_cert", STR),
    ignored("oidc_discovery_url", STR),
];

const AUTO_ENCRYPT: &[Key] =
    &[ignored("allow_tls", BOOL), ignored("dns_san", LIST), ignored("ip_san", LIST), ignored("tls", BOOL)];

const AUTOPILOT: &[Key] = &[
    ignored("cleanup_dead_servers", BOOL),
    ignored("disable_upgrade_migration", BOOL),
    ignored("last_contact_threshold", DUR),
    ignored("max_trailing_logs", INT),
    ignored("min_quorum", UINT),
    ignored("redundancy_zone_tag", STR),
    ignored("server_stabilization_time", DUR),
    ignored("upgrade_version_tag", STR),
];

const CACHE: &[Key] = &[ignored("entry_fetch_max_burst", INT), ignored("entry_fetch_rate", Kind::Float)];

const CLOUD: &[Key] = &[
    ignored("auth_url", STR),
    ignored("client_id", STR),
    ignored("client_secret", STR),
    ignored("hostname", STR),
    ignored("management_token", STR),
    ignored("resource_id", STR),
    ignored("scada_address", STR),
];

const CONFIG_ENTRIES: &[Key] = &[ignored("bootstrap", Kind::AnyList)];

const CONNECT: &[Key] = &[
    ignored("ca_config", Kind::Any),
    ignored("ca_provider", STR),
    ignored("enable_mesh_gateway_wan_federation", BOOL),
    ignored("enabled", BOOL),
    ignored("test_ca_leaf_root_change_spread", DUR),
];

// Consul documents these as not user-configurable, yet its decoder accepts
// them; -dev uses them for fast Raft timers.
const CONSUL: &[Key] =
    &[block("coordinate", CONSUL_COORDINATE), block("raft", CONSUL_RAFT), block("server", CONSUL_SERVER)];

const CONSUL_COORDINATE: &[Key] =
    &[ignored("update_batch_size", INT), ignored("update_max_batches", INT), ignored("update_period", DUR)];

const CONSUL_RAFT: &[Key] =
    &[used("election_timeout", DUR), used("heartbeat_timeout", DUR), used("leader_lease_timeout", DUR)];

const CONSUL_SERVER: &[Key] = &[ignored("health_interval", DUR)];

const DNS: &[Key] = &[
    used("a_record_limit", U32),
    used("allow_stale", BOOL),
    ignored("cache_max_age", DUR),
    used("disable_compression", BOOL),
    used("enable_additional_node_meta_txt", BOOL),
    used("enable_truncate", BOOL),
    used("max_stale", DUR),
    used("node_ttl", DUR),
    used("only_passing", BOOL),
    ignored("prefer_namespace", BOOL),
    used("recursor_strategy", Kind::Choice(&["sequential", "random"])),
    used("recursor_timeout", DUR),
    used("service_ttl", Kind::DurationMap),
    block("soa", SOA),
    used("udp_answer_limit", U32),
    ignored("use_cache", BOOL),
];

const SOA: &[Key] = &[used("expire", U32), used("min_ttl", U32), used("refresh", U32), used("retry", U32)];

const GOSSIP: &[Key] = &[
    used("gossip_interval", DUR),
    used("gossip_nodes", U32),
    used("probe_interval", DUR),
    used("probe_timeout", DUR),
    used("retransmit_mult", U32),
    used("suspicion_mult", U32),
];

const HTTP_CONFIG: &[Key] = &[
    ignored("allow_write_http_from", LIST),
    ignored("block_endpoints", LIST),
    ignored("max_header_bytes", INT),
    ignored("response_headers", Kind::StrMap),
    ignored("use_cache", BOOL),
];

const LIMITS: &[Key] = &[
    used("http_max_conns_per_client", UINT),
    ignored("https_handshake_timeout", DUR),
    used("kv_max_value_size", UINT),
    block("request_limits", REQUEST_LIMITS),
    ignored("rpc_client_timeout", DUR),
    used("rpc_handshake_timeout", DUR),
    used("rpc_max_burst", UINT),
    used("rpc_max_conns_per_client", UINT),
    used("rpc_rate", Kind::Float),
    used("txn_max_req_len", UINT),
];

const REQUEST_LIMITS: &[Key] =
    &[ignored("mode", STR), ignored("read_rate", Kind::Float), ignored("write_rate", Kind::Float)];

const LOCALITY: &[Key] = &[ignored("region", STR), ignored("zone", STR)];

const PEERING: &[Key] = &[ignored("enabled", BOOL), ignored("test_allow_peer_registrations", BOOL)];

const PERFORMANCE: &[Key] = &[
    ignored("leave_drain_time", DUR),
    used("raft_multiplier", Kind::Int { min: 1, max: 10 }),
    ignored("rpc_hold_timeout", DUR),
];

const PORTS: &[Key] = &[
    used("dns", PORT),
    ignored("expose_max_port", PORT),
    ignored("expose_min_port", PORT),
    used("grpc", PORT),
    used("grpc_tls", PORT),
    used("http", PORT),
    used("https", PORT),
    ignored("proxy_max_port", PORT),
    ignored("proxy_min_port", PORT),
    used("serf_lan", PORT),
    used("serf_wan", PORT),
    used("server", PORT),
    ignored("sidecar_max_port", PORT),
    ignored("sidecar_min_port", PORT),
];

const RAFT_BOLTDB: &[Key] = &[ignored("no_freelist_sync", BOOL)];

const RAFT_LOGSTORE: &[Key] = &[
    ignored("backend", STR),
    block("boltdb", RAFT_BOLTDB),
    ignored("disable_log_cache", BOOL),
    block("verification", RAFT_VERIFICATION),
    block("wal", RAFT_WAL),
];

const RAFT_VERIFICATION: &[Key] = &[ignored("enabled", BOOL), ignored("interval", DUR)];

const RAFT_WAL: &[Key] = &[ignored("segment_size_mb", INT)];

const REPORTING: &[Key] = &[block("license", REPORTING_LICENSE)];

const REPORTING_LICENSE: &[Key] = &[ignored("enabled", BOOL)];

const RPC: &[Key] = &[ignored("enable_streaming", BOOL)];

const SEGMENT: &[Key] = &[
    ignored("advertise", STR),
    ignored("bind", STR),
    ignored("name", STR),
    ignored("port", INT),
    ignored("rpc_listener", BOOL),
];

const TELEMETRY: &[Key] = &[
    ignored("circonus_api_app", STR),
    ignored("circonus_api_token", STR),
    ignored("circonus_api_url", STR),
    ignored("circonus_broker_id", STR),
    ignored("circonus_broker_select_tag", STR),
    ignored("circonus_check_display_name", STR),
    ignored("circonus_check_force_metric_activation", STR),
    ignored("circonus_check_id", STR),
    ignored("circonus_check_instance_id", STR),
    ignored("circonus_check_search_tag", STR),
    ignored("circonus_check_tags", STR),
    ignored("circonus_submission_interval", STR),
    ignored("circonus_submission_url", STR),
    ignored("disable_hostname", BOOL),
    ignored("disable_per_tenancy_usage_metrics", BOOL),
    ignored("dogstatsd_addr", STR),
    ignored("dogstatsd_tags", LIST),
    ignored("enable_host_metrics", BOOL),
    ignored("filter_default", BOOL),
    ignored("metrics_prefix", STR),
    ignored("prefix_filter", LIST),
    ignored("prometheus_retention_time", DUR),
    ignored("retry_failed_connection", BOOL),
    ignored("statsd_address", STR),
    ignored("statsite_address", STR),
];

const TLS: &[Key] = &[
    block("defaults", TLS_PROTOCOL),
    block("grpc", TLS_PROTOCOL),
    block("https", TLS_PROTOCOL),
    block("internal_rpc", TLS_PROTOCOL),
];

const TLS_PROTOCOL: &[Key] = &[
    ignored("ca_file", STR),
    ignored("ca_path", STR),
    ignored("cert_file", STR),
    ignored("key_file", STR),
    ignored("tls_cipher_suites", STR),
    ignored("tls_min_version", STR),
    ignored("use_auto_cert", BOOL),
    ignored("verify_incoming", BOOL),
    ignored("verify_outgoing", BOOL),
    ignored("verify_server_hostname", BOOL),
];

const UI_CONFIG: &[Key] = &[
    ignored("content_path", STR),
    ignored("dashboard_url_templates", Kind::StrMap),
    ignored("dir", STR),
    used("enabled", BOOL),
    ignored("metrics_provider", STR),
    ignored("metrics_provider_files", LIST),
    ignored("metrics_provider_options_json", STR),
    block("metrics_proxy", UI_METRICS_PROXY),
];

const UI_METRICS_PROXY: &[Key] = &[
    used("add_headers", Kind::BlockList(UI_METRICS_PROXY_HEADER)),
    ignored("base_url", STR),
    ignored("path_allowlist", LIST),
];

const UI_METRICS_PROXY_HEADER: &[Key] = &[ignored("name", STR), ignored("value", STR)];

const UNIX_SOCKETS: &[Key] = &[ignored("group", STR), ignored("mode", STR), ignored("user", STR)];

const XDS: &[Key] = &[ignored("update_max_per_second", Kind::Float)];

fn find_key(keys: &'static [Key], name: &str) -> Option<&'static Key> {
    keys.iter().find(|key| key.name == name)
}

fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

// ---------------------------------------------------------------------------
// Per-source validation and normalization

/// Checks one source against the schema and returns it in canonical form:
/// repeated HCL blocks folded together, `service`/`check` moved into
/// `services`/`checks`, deprecated keys translated.
fn normalize_source(source: &Source, warnings: &mut Warnings) -> Result<Map<String, Value>, ConfigError> {
    let Value::Object(object) = &source.value else {
        return Err(ConfigError::Parse {
            source: source.name.clone(),
            reason: "the top level must be an object of config keys".to_string(),
        });
    };
    let mut normalizer = Normalizer { source: &source.name, renames: Vec::new(), obsolete: Vec::new() };
    let mut tree = normalizer.block("", object.clone(), TOP)?;

    // Consul cannot merge a single `service`/`check` with another source's,
    // so it appends them to this source's list first.
    for (single, list) in [("service", "services"), ("check", "checks")] {
        if let Some(Value::Array(items)) = tree.remove(single) {
            append(&mut tree, list, items);
        }
    }

    for (old, to, value) in normalizer.renames {
        warnings.push(format!("config key \"{old}\" is deprecated; use \"{to}\" instead"));
        set_if_absent(&mut tree, to, value);
        // Side effects Consul attaches to a few of the old names.
        match old.as_str() {
            "acl_datacenter" => set(&mut tree, "acl.enabled", Value::Bool(true)),
            "acl_replication_token" => set(&mut tree, "acl.enable_token_replication", Value::Bool(true)),
            // Before tls{} existed, verify_incoming never covered gRPC.
            "verify_incoming" => set_if_absent(&mut tree, "tls.grpc.verify_incoming", Value::Bool(false)),
            _ => {}
        }
    }
    for old in normalizer.obsolete {
        warnings.push(format!("config key \"{old}\" is deprecated and has no effect; remove it"));
    }
    warn_unimplemented(&tree, TOP, "", warnings);
    Ok(tree)
}

struct Normalizer<'a> {
    source: &'a str,
    /// (old dotted path, new dotted path, checked value), applied after the
    /// whole source is read so that an explicit new key wins.
    renames: Vec<(String, &'static str, Value)>,
    /// Dotted paths of obsolete keys seen, dropped from the tree.
    obsolete: Vec<String>,
}

impl Normalizer<'_> {
    fn block(
        &mut self,
        path: &str,
        object: Map<String, Value>,
        keys: &'static [Key],
    ) -> Result<Map<String, Value>, ConfigError> {
        let mut out = Map::new();
        for (name, value) in object {
            let key_path = join(path, &name);
            let key = find_key(keys, &name).ok_or_else(|| ConfigError::UnknownKey {
                source: self.source.to_string(),
                key: key_path.clone(),
            })?;
            // An explicit null leaves the key unset, as in Consul.
            if value.is_null() {
                continue;
            }
            let value = self.value(&key_path, key.kind, value)?;
            match key.status {
                Status::Renamed(to) => self.renames.push((key_path, to, value)),
                Status::Obsolete => self.obsolete.push(key_path),
                Status::Used | Status::Ignored | Status::Inert => {
                    out.insert(name, value);
                }
            }
        }
        Ok(out)
    }

    fn invalid(&self, path: &str, reason: String) -> ConfigError {
        ConfigError::Invalid { source: self.source.to_string(), key: path.to_string(), reason }
    }

    fn expected(&self, path: &str, what: &str, value: &Value) -> ConfigError {
        self.invalid(path, format!("expected {what}, got {}", describe(value)))
    }

    fn value(&mut self, path: &str, kind: Kind, value: Value) -> Result<Value, ConfigError> {
        match kind {
            Kind::Bool if value.is_boolean() => Ok(value),
            Kind::Bool => Err(self.expected(path, "a boolean", &value)),
            Kind::Int { min, max } => {
                let n = integer(&value).ok_or_else(|| self.expected(path, "an integer", &value))?;
                if n < min || n > max {
                    let range = match (min, max) {
                        (i64::MIN, max) => format!("at most {max}"),
                        (min, i64::MAX) => format!("at least {min}"),
                        (min, max) => format!("between {min} and {max}"),
                    };
                    return Err(self.invalid(path, format!("{n} is out of range, must be {range}")));
                }
                Ok(Value::from(n))
            }
            Kind::Float if value.is_number() => Ok(value),
            Kind::Float => Err(self.expected(path, "a number", &value)),
            Kind::Str if value.is_string() => Ok(value),
            Kind::Str => Err(self.expected(path, "a string", &value)),
            Kind::Choice(options) => match value.as_str() {
                Some(s) if options.contains(&s) => Ok(value),
                Some(s) => Err(self.invalid(path, format!("\"{s}\" is not one of: {}", options.join(", ")))),
                None => Err(self.expected(path, "a string", &value)),
            },
            Kind::DcName => {
                let s = value.as_str().ok_or_else(|| self.expected(path, "a string", &value))?;
                let lower = s.to_lowercase();
                let valid = !lower.is_empty()
                    && lower
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
                if !valid {
                    return Err(
                        self.invalid(path, format!("\"{s}\" may only contain letters, digits, '-' and '_'"))
                    );
                }
                Ok(Value::String(lower))
            }
            Kind::Duration => {
                self.duration(path, &value)?;
                Ok(value)
            }
            Kind::StrList => match &value {
                Value::Array(items) if items.iter().all(Value::is_string) => Ok(value),
                _ => Err(self.expected(path, "a list of strings", &value)),
            },
            Kind::StrMap => match &value {
                Value::Object(map) if map.values().all(Value::is_string) => Ok(value),
                _ => Err(self.expected(path, "an object with string values", &value)),
            },
            Kind::DurationMap => {
                let Value::Object(map) = &value else {
                    return Err(self.expected(path, "an object of durations", &value));
                };
                for (name, item) in map {
                    self.duration(&join(path, name), item)?;
                }
                Ok(value)
            }
            Kind::Any => Ok(value),
            Kind::AnyList => match value {
                Value::Array(_) => Ok(value),
                Value::Object(_) => Ok(Value::Array(vec![value])),
                _ => Err(self.expected(path, "a list", &value)),
            },
            Kind::Block(keys) => {
                let mut merged = Map::new();
                for object in self.objects(path, value)? {
                    let part = self.block(path, object, keys)?;
                    merge_block(&mut merged, part, keys);
                }
                Ok(Value::Object(merged))
            }
            Kind::BlockList(keys) => {
                let items = self
                    .objects(path, value)?
                    .into_iter()
                    .map(|object| self.block(path, object, keys).map(Value::Object))
                    .collect::<Result<_, _>>()?;
                Ok(Value::Array(items))
            }
            Kind::NamedBlocks(keys) => {
                let mut named = Map::new();
                for object in self.objects(path, value)? {
                    for (label, body) in object {
                        let label_path = join(path, &label);
                        let mut merged = Map::new();
                        for part in self.objects(&label_path, body)? {
                            let part = self.block(&label_path, part, keys)?;
                            merge_block(&mut merged, part, keys);
                        }
                        named.insert(label, Value::Object(merged));
                    }
                }
                Ok(Value::Object(named))
            }
            Kind::Definitions => {
                let items = self.objects(path, value)?;
                Ok(Value::Array(items.into_iter().map(Value::Object).collect()))
            }
        }
    }

    /// An object, or a list of objects: HCL turns a repeated block into a
    /// list, and Consul accepts the list form in JSON too.
    fn objects(&self, path: &str, value: Value) -> Result<Vec<Map<String, Value>>, ConfigError> {
        match value {
            Value::Object(object) => Ok(vec![object]),
            Value::Array(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::Object(object) => Ok(object),
                    other => Err(self.expected(path, "an object", &other)),
                })
                .collect(),
            other => Err(self.expected(path, "an object", &other)),
        }
    }

    fn duration(&self, path: &str, value: &Value) -> Result<Duration, ConfigError> {
        let text =
            value.as_str().ok_or_else(|| self.expected(path, "a duration string such as \"10s\"", value))?;
        parse_go_duration(text).map_err(|reason| self.invalid(path, reason))
    }
}

/// The value as an i64, accepting integral floats (HCL and JSON decoders
/// may produce `8500.0`).
fn integer(value: &Value) -> Option<i64> {
    if let Some(n) = value.as_i64() {
        return Some(n);
    }
    let f = value.as_f64()?;
    // The bounds are exact powers of two, so the comparison is exact.
    (f.fract() == 0.0 && f >= -(2f64.powi(63)) && f < 2f64.powi(63)).then_some(f as i64)
}

fn describe(value: &Value) -> String {
    match value {
        Value::Null => "null".to_string(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string \"{s}\""),
        Value::Array(_) => "a list".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// Adds one warning per present key that muster accepts but ignores.
fn warn_unimplemented(tree: &Map<String, Value>, keys: &'static [Key], path: &str, warnings: &mut Warnings) {
    for (name, value) in tree {
        let Some(key) = find_key(keys, name) else {
            continue;
        };
        let key_path = join(path, name);
        match (key.kind, value) {
            (Kind::Block(sub), Value::Object(object)) => warn_unimplemented(object, sub, &key_path, warnings),
            (Kind::BlockList(sub), Value::Array(items)) => {
                for item in items {
                    if let Value::Object(object) = item {
                        warn_unimplemented(object, sub, &key_path, warnings);
                    }
                }
            }
            (Kind::NamedBlocks(sub), Value::Object(named)) => {
                for (label, body) in named {
                    if let Value::Object(object) = body {
                        warn_unimplemented(object, sub, &join(&key_path, label), warnings);
                    }
                }
            }
            _ => {
                if let Status::Ignored = key.status {
                    warnings.push(format!(
                        "config key \"{key_path}\" is accepted but not implemented yet by muster; ignored"
                    ));
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tree editing and merging

/// The object at `path` (dotted), created along the way.
fn object_at<'a>(tree: &'a mut Map<String, Value>, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut current = tree;
    for name in path {
        let entry = current.entry(name.to_string()).or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        let Value::Object(next) = entry else {
            unreachable!("just made an object");
        };
        current = next;
    }
    current
}

fn split_path(path: &str) -> (Vec<&str>, &str) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    (parts, last)
}

fn set(tree: &mut Map<String, Value>, path: &str, value: Value) {
    let (parents, last) = split_path(path);
    object_at(tree, &parents).insert(last.to_string(), value);
}

/// Puts a renamed key's value at its new path unless the source set the
/// new key itself; lists are appended, objects filled key by key.
fn set_if_absent(tree: &mut Map<String, Value>, path: &str, value: Value) {
    let (parents, last) = split_path(path);
    let parent = object_at(tree, &parents);
    match (parent.get_mut(last), value) {
        (None, value) => {
            parent.insert(last.to_string(), value);
        }
        (Some(Value::Array(existing)), Value::Array(items)) => existing.extend(items),
        (Some(Value::Object(existing)), Value::Object(fields)) => {
            for (name, field) in fields {
                existing.entry(name).or_insert(field);
            }
        }
        (Some(_), _) => {}
    }
}

fn append(tree: &mut Map<String, Value>, name: &str, items: Vec<Value>) {
    match tree.get_mut(name) {
        Some(Value::Array(existing)) => existing.extend(items),
        _ => {
            tree.insert(name.to_string(), Value::Array(items));
        }
    }
}

/// Merges a later (normalized) source into `dst`: blocks recursively, lists
/// appended, maps key by key, everything else replaced.
fn merge_block(dst: &mut Map<String, Value>, src: Map<String, Value>, keys: &'static [Key]) {
    for (name, value) in src {
        let kind = find_key(keys, &name).map_or(Kind::Any, |key| key.kind);
        match (kind, dst.get_mut(&name), value) {
            (Kind::Block(sub), Some(Value::Object(existing)), Value::Object(fields)) => {
                merge_block(existing, fields, sub)
            }
            (
                Kind::StrList | Kind::AnyList | Kind::BlockList(_) | Kind::Definitions,
                Some(Value::Array(existing)),
                Value::Array(items),
            ) => existing.extend(items),
            (
                Kind::StrMap | Kind::DurationMap | Kind::NamedBlocks(_) | Kind::Any,
                Some(Value::Object(existing)),
                Value::Object(fields),
            ) => existing.extend(fields),
            (_, _, value) => {
                dst.insert(name, value);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Building the typed configuration

/// Read access to the merged tree. Every value was checked against the
/// schema, so a value of the wrong shape cannot occur; the defaults below
/// apply only to absent keys.
struct Tree(Value);

impl Tree {
    fn get(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.0, |value, name| value.get(name))
    }

    fn bool(&self, path: &str, default: bool) -> bool {
        self.get(path).and_then(Value::as_bool).unwrap_or(default)
    }

    fn opt_bool(&self, path: &str) -> Option<bool> {
        self.get(path).and_then(Value::as_bool)
    }

    fn int(&self, path: &str, default: i64) -> i64 {
        self.get(path).and_then(Value::as_i64).unwrap_or(default)
    }

    fn u32(&self, path: &str, default: u32) -> u32 {
        u32::try_from(self.int(path, i64::from(default))).unwrap_or(default)
    }

    fn float(&self, path: &str, default: f64) -> f64 {
        self.get(path).and_then(Value::as_f64).filter(|f| f.is_finite() && *f > 0.0).unwrap_or(default)
    }

    fn u64(&self, path: &str, default: u64) -> u64 {
        self.get(path).and_then(Value::as_u64).unwrap_or(default)
    }

    /// An optional string; "" counts as unset, as in Consul.
    fn string(&self, path: &str) -> Option<String> {
        self.get(path).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string)
    }

    fn string_or(&self, path: &str, default: &str) -> String {
        self.get(path).and_then(Value::as_str).unwrap_or(default).to_string()
    }

    fn duration(&self, path: &str, default: Duration) -> Duration {
        self.get(path)
            .and_then(Value::as_str)
            .and_then(|text| parse_go_duration(text).ok())
            .unwrap_or(default)
    }

    fn strings(&self, path: &str) -> Vec<String> {
        self.list(path).iter().filter_map(|item| item.as_str().map(str::to_string)).collect()
    }

    fn list(&self, path: &str) -> Vec<Value> {
        match self.get(path) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        }
    }

    fn object(&self, path: &str) -> Map<String, Value> {
        match self.get(path) {
            Some(Value::Object(map)) => map.clone(),
            _ => Map::new(),
        }
    }

    /// A port: unset → `default`, <= 0 → -1 (disabled).
    fn port(&self, path: &str, default: i32) -> i32 {
        match self.get(path).and_then(Value::as_i64) {
            None => default,
            Some(n) if n <= 0 => -1,
            Some(n) => i32::try_from(n).unwrap_or(-1),
        }
    }

    fn gossip(&self, path: &str, defaults: GossipConfig) -> GossipConfig {
        let at = |name: &str| join(path, name);
        GossipConfig {
            gossip_nodes: self.u32(&at("gossip_nodes"), defaults.gossip_nodes),
            gossip_interval: self.duration(&at("gossip_interval"), defaults.gossip_interval),
            probe_interval: self.duration(&at("probe_interval"), defaults.probe_interval),
            probe_timeout: self.duration(&at("probe_timeout"), defaults.probe_timeout),
            suspicion_mult: self.u32(&at("suspicion_mult"), defaults.suspicion_mult),
            retransmit_mult: self.u32(&at("retransmit_mult"), defaults.retransmit_mult),
        }
    }
}

fn fqdn(name: String) -> String {
    if name.ends_with('.') {
        name
    } else {
        name + "."
    }
}

const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

const fn millis(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn build(raw: Value, warnings: &mut Warnings) -> Result<AgentConfig, ConfigError> {
    let t = Tree(raw);
    let datacenter = t.string_or("datacenter", "dc1");
    let server = t.bool("server", false);
    let bootstrap = t.bool("bootstrap", false);
    let bootstrap_expect = t.u32("bootstrap_expect", 0);
    // Consul's default is 5 (elections after 5-10 s of silence); muster's Raft is cheap
    // enough to run at 1, so failover takes 1-2 s. An explicit setting is honoured.
    let raft_multiplier = t.u32("performance.raft_multiplier", 1);

    let inconsistent = |reason: &str| ConfigError::Inconsistent { reason: reason.to_string() };
    if bootstrap && bootstrap_expect > 0 {
        return Err(inconsistent("\"bootstrap\" and \"bootstrap_expect\" are mutually exclusive"));
    }
    if (bootstrap || bootstrap_expect > 0) && !server {
        return Err(inconsistent("\"bootstrap\" and \"bootstrap_expect\" require \"server\" = true"));
    }
    if bootstrap_expect == 2 || (bootstrap_expect > 2 && bootstrap_expect.is_multiple_of(2)) {
        warnings.push(format!(
            "bootstrap_expect = {bootstrap_expect}: an even number of servers tolerates no more failures than one fewer"
        ));
    }

    let ports = Ports {
        dns: t.port("ports.dns", 8600),
        http: t.port("ports.http", 8500),
        https: t.port("ports.https", -1),
        grpc: t.port("ports.grpc", -1),
        grpc_tls: t.port("ports.grpc_tls", if server { 8503 } else { -1 }),
        serf_lan: t.port("ports.serf_lan", 8301),
        serf_wan: t.port("ports.serf_wan", 8302),
        server: t.port("ports.server", 8300),
    };
    if ports.server <= 0 || ports.serf_lan <= 0 {
        return Err(inconsistent("\"ports.server\" and \"ports.serf_lan\" cannot be disabled"));
    }

    let mut service_ttl = BTreeMap::new();
    for (name, value) in t.object("dns_config.service_ttl") {
        if let Some(ttl) = value.as_str().and_then(|s| parse_go_duration(s).ok()) {
            service_ttl.insert(name, ttl);
        }
    }
    let dns_config = DnsConfig {
        allow_stale: t.bool("dns_config.allow_stale", true),
        max_stale: t.duration("dns_config.max_stale", secs(87_600 * 3600)),
        node_ttl: t.duration("dns_config.node_ttl", Duration::ZERO),
        service_ttl,
        udp_answer_limit: t.u32("dns_config.udp_answer_limit", 3),
        a_record_limit: t.u32("dns_config.a_record_limit", 0),
        enable_truncate: t.bool("dns_config.enable_truncate", false),
        only_passing: t.bool("dns_config.only_passing", false),
        recursor_strategy: match t.get("dns_config.recursor_strategy").and_then(Value::as_str) {
            Some("random") => RecursorStrategy::Random,
            _ => RecursorStrategy::Sequential,
        },
        recursor_timeout: t.duration("dns_config.recursor_timeout", secs(2)),
        soa: Soa {
            refresh: t.u32("dns_config.soa.refresh", 3600),
            retry: t.u32("dns_config.soa.retry", 600),
            expire: t.u32("dns_config.soa.expire", 86_400),
            min_ttl: t.u32("dns_config.soa.min_ttl", 0),
        },
        enable_additional_node_meta_txt: t.bool("dns_config.enable_additional_node_meta_txt", true),
        disable_compression: t.bool("dns_config.disable_compression", false),
    };

    let node_meta = t
        .object("node_meta")
        .into_iter()
        .filter_map(|(k, v)| v.as_str().map(|v| (k, v.to_string())))
        .collect();

    let lan_defaults = GossipConfig {
        gossip_nodes: 3,
        gossip_interval: millis(200),
        probe_interval: secs(1),
        probe_timeout: millis(500),
        suspicion_mult: 4,
        retransmit_mult: 4,
    };
    let wan_defaults = GossipConfig {
        gossip_nodes: 4,
        gossip_interval: millis(500),
        probe_interval: secs(5),
        probe_timeout: secs(3),
        suspicion_mult: 6,
        retransmit_mult: 4,
    };
    let raft_timing = RaftTiming {
        heartbeat_timeout: t.duration("consul.raft.heartbeat_timeout", secs(1)) * raft_multiplier,
        election_timeout: t.duration("consul.raft.election_timeout", secs(1)) * raft_multiplier,
        leader_lease_timeout: t.duration("consul.raft.leader_lease_timeout", millis(500)) * raft_multiplier,
    };

    Ok(AgentConfig {
        primary_datacenter: t.string("primary_datacenter").unwrap_or_else(|| datacenter.clone()),
        datacenter,
        node_name: t.string("node_name"),
        node_id: t.string("node_id"),
        node_meta,
        server,
        bootstrap,
        bootstrap_expect,
        data_dir: t.string("data_dir").map(PathBuf::from),
        bind_addr: t.string_or("bind_addr", "0.0.0.0"),
        advertise_addr: t.string("advertise_addr"),
        advertise_addr_wan: t.string("advertise_addr_wan"),
        client_addr: t.string_or("client_addr", "127.0.0.1"),
        addresses: Addresses {
            dns: t.string("addresses.dns"),
            http: t.string("addresses.http"),
            https: t.string("addresses.https"),
            grpc: t.string("addresses.grpc"),
            grpc_tls: t.string("addresses.grpc_tls"),
        },
        ports,
        domain: fqdn(t.string_or("domain", "consul.")),
        alt_domain: t.string("alt_domain").map(fqdn),
        recursors: t.strings("recursors"),
        dns_config,
        enable_script_checks: t.bool("enable_script_checks", false),
        enable_local_script_checks: t.bool("enable_local_script_checks", false),
        check_output_max_size: usize::try_from(t.int("check_output_max_size", 4096)).unwrap_or(4096),
        check_update_interval: t.duration("check_update_interval", secs(300)),
        ae_interval: t.duration("ae_interval", secs(60)),
        sync_coordinate_interval_min: t.duration("sync_coordinate_interval_min", secs(15)),
        sync_coordinate_rate_target: t.float("sync_coordinate_rate_target", 64.0),
        log_level: t.string_or("log_level", "INFO"),
        log_json: t.bool("log_json", false),
        pid_file: t.string("pid_file").map(PathBuf::from),
        default_query_time: t.duration("default_query_time", secs(300)),
        max_query_time: t.duration("max_query_time", secs(600)),
        kv_max_value_size: t.u64("limits.kv_max_value_size", 512 * 1024),
        http_max_conns_per_client: t.u64("limits.http_max_conns_per_client", 200),
        rpc_max_conns_per_client: t.u64("limits.rpc_max_conns_per_client", 100),
        rpc_handshake_timeout: t.duration("limits.rpc_handshake_timeout", secs(5)),
        rpc_rate: t.float("limits.rpc_rate", f64::INFINITY),
        rpc_max_burst: t.u64("limits.rpc_max_burst", 1000),
        txn_max_req_len: t.u64("limits.txn_max_req_len", 512 * 1024),
        session_ttl_min: t.duration("session_ttl_min", secs(10)),
        raft_snapshot_threshold: t.u64("raft_snapshot_threshold", 16384),
        raft_trailing_logs: t.u64("raft_trailing_logs", 10_240),
        retry_join: t.strings("retry_join"),
        retry_join_wan: t.strings("retry_join_wan"),
        retry_interval: t.duration("retry_interval", secs(30)),
        retry_interval_wan: t.duration("retry_interval_wan", secs(30)),
        retry_max: t.u32("retry_max", 0),
        retry_max_wan: t.u32("retry_max_wan", 0),
        rejoin_after_leave: t.bool("rejoin_after_leave", false),
        encrypt: t.string("encrypt"),
        encrypt_verify_incoming: t.bool("encrypt_verify_incoming", true),
        encrypt_verify_outgoing: t.bool("encrypt_verify_outgoing", true),
        disable_keyring_file: t.bool("disable_keyring_file", false),
        ui_enabled: t.bool("ui_config.enabled", false),
        acl_enabled: t.bool("acl.enabled", false),
        acl_default_policy: t.string_or("acl.default_policy", "allow"),
        acl_down_policy: t.string_or("acl.down_policy", "extend-cache"),
        acl_enable_token_persistence: t.bool("acl.enable_token_persistence", false),
        acl_tokens: AclTokens {
            initial_management: t.string("acl.tokens.initial_management"),
            agent: t.string("acl.tokens.agent"),
            default: t.string("acl.tokens.default"),
            agent_recovery: t.string("acl.tokens.agent_recovery"),
            replication: t.string("acl.tokens.replication"),
            config_file_service_registration: t.string("acl.tokens.config_file_service_registration"),
            dns: t.string("acl.tokens.dns"),
        },
        leave_on_terminate: t.opt_bool("leave_on_terminate"),
        skip_leave_on_interrupt: t.opt_bool("skip_leave_on_interrupt"),
        disable_http_unprintable_char_filter: t.bool("disable_http_unprintable_char_filter", false),
        disable_kv_key_validation: t.bool("disable_kv_key_validation", false),
        disable_remote_exec: t.bool("disable_remote_exec", true),
        raft_multiplier,
        raft_timing,
        gossip_lan: t.gossip("gossip_lan", lan_defaults),
        gossip_wan: t.gossip("gossip_wan", wan_defaults),
        services: t.list("services"),
        checks: t.list("checks"),
        watches: t.list("watches"),
        raw: t.0,
    })
}

/// Go duration text, through the core's parser (one grammar for config and API alike).
fn parse_go_duration(text: &str) -> Result<Duration, String> {
    muster_core::time::parse_go_duration(text).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(name: &str, value: Value) -> Source {
        Source { name: name.to_string(), value }
    }

    fn load_one(value: Value) -> Result<(AgentConfig, Vec<String>), ConfigError> {
        load(&[src("/etc/muster/a.json", value)])
    }

    /// A fresh, empty directory under the system temp dir.
    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("muster-config-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn defaults_match_consul() {
        let (c, warnings) = load(&[]).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.datacenter, "dc1");
        assert_eq!(c.primary_datacenter, "dc1");
        assert_eq!(c.node_name, None);
        assert!(!c.server && !c.bootstrap && c.bootstrap_expect == 0);
        assert_eq!(c.bind_addr, "0.0.0.0");
        assert_eq!(c.client_addrs(), vec!["127.0.0.1"]);
        assert_eq!(
            c.ports,
            Ports {
                dns: 8600,
                http: 8500,
                https: -1,
                grpc: -1,
                grpc_tls: -1,
                serf_lan: 8301,
                serf_wan: 8302,
                server: 8300
            }
        );
        assert_eq!(c.domain, "consul.");
        assert!(c.dns_config.allow_stale);
        assert_eq!(c.dns_config.udp_answer_limit, 3);
        assert_eq!(c.dns_config.node_ttl, Duration::ZERO);
        assert_eq!(c.dns_config.soa.expire, 86_400);
        assert!(c.dns_config.enable_additional_node_meta_txt);
        assert_eq!(c.check_output_max_size, 4096);
        assert_eq!(c.check_update_interval, secs(300));
        assert_eq!(c.log_level, "INFO");
        assert_eq!(c.default_query_time, secs(300));
        assert_eq!(c.max_query_time, secs(600));
        assert_eq!(c.kv_max_value_size, 524_288);
        assert_eq!(c.session_ttl_min, secs(10));
        assert_eq!(c.retry_interval, secs(30));
        assert_eq!(c.acl_default_policy, "allow");
        assert_eq!(c.acl_down_policy, "extend-cache");
        assert!(c.disable_remote_exec);
        assert_eq!(c.raft_multiplier, 1);
        assert_eq!(c.raft_timing.election_timeout, secs(1));
        assert_eq!(c.gossip_lan.probe_interval, secs(1));
        assert_eq!(c.gossip_wan.suspicion_mult, 6);
        assert_eq!(c.leave_on_terminate, None);
    }

    #[test]
    fn later_sources_override_and_lists_append() {
        let a = src(
            "a.json",
            json!({
                "datacenter": "east",
                "retry_join": ["10.0.0.1"],
                "recursors": ["8.8.8.8"],
                "ports": {"http": 9500, "dns": 9600},
                "node_meta": {"rack": "r1", "zone": "z1"},
                "dns_config": {"service_ttl": {"web": "5s"}, "only_passing": true},
                "log_level": "WARN"
            }),
        );
        let b = src(
            "b.json",
            json!({
                "datacenter": "West",
                "retry_join": ["10.0.0.2"],
                "recursors": ["1.1.1.1"],
                "ports": {"http": 9501},
                "node_meta": {"zone": "z2"},
                "dns_config": {"service_ttl": {"db": "7s"}}
            }),
        );
        let (c, _) = load(&[a, b]).unwrap();
        assert_eq!(c.datacenter, "west");
        assert_eq!(c.retry_join, vec!["10.0.0.1", "10.0.0.2"]);
        assert_eq!(c.recursors, vec!["8.8.8.8", "1.1.1.1"]);
        assert_eq!(c.ports.http, 9501);
        assert_eq!(c.ports.dns, 9600);
        assert_eq!(c.node_meta["rack"], "r1");
        assert_eq!(c.node_meta["zone"], "z2");
        assert_eq!(c.dns_config.service_ttl["web"], secs(5));
        assert_eq!(c.dns_config.service_ttl["db"], secs(7));
        assert!(c.dns_config.only_passing);
        assert_eq!(c.log_level, "WARN");
    }

    #[test]
    fn service_and_services_are_collected_in_order() {
        let a = src(
            "a.json",
            json!({
                "services": [{"name": "a"}],
                "service": {"name": "b"},
                "check": {"id": "c1", "ttl": "10s"}
            }),
        );
        let b = src("b.json", json!({"service": {"name": "c"}, "checks": [{"id": "c2", "ttl": "5s"}]}));
        let (c, _) = load(&[a, b]).unwrap();
        let names: Vec<_> = c.services.iter().map(|s| s["name"].clone()).collect();
        assert_eq!(names, vec![json!("a"), json!("b"), json!("c")]);
        let ids: Vec<_> = c.checks.iter().map(|s| s["id"].clone()).collect();
        assert_eq!(ids, vec![json!("c1"), json!("c2")]);
        assert!(c.raw.get("service").is_none());
    }

    #[test]
    fn unknown_keys_name_file_and_path() {
        let err = load_one(json!({"foo": 1})).unwrap_err();
        assert!(matches!(&err, ConfigError::UnknownKey { source, key }
            if source == "/etc/muster/a.json" && key == "foo"));
        assert_eq!(err.to_string(), "Error parsing /etc/muster/a.json: invalid config key \"foo\"");

        let err = load_one(json!({"dns_config": {"bar": true}})).unwrap_err();
        assert_eq!(
            err.to_string(),
            "Error parsing /etc/muster/a.json: invalid config key \"dns_config.bar\""
        );
        let err = load_one(json!({"acl": {"tokens": {"bogus": "x"}}})).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { key, .. } if key == "acl.tokens.bogus"));
        // Matching is exact: Consul's keys are snake_case.
        let err = load_one(json!({"Datacenter": "dc2"})).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { key, .. } if key == "Datacenter"));
        // The error names the source that holds the key, not the first one.
        let err =
            load(&[src("ok.json", json!({"server": true})), src("bad.hcl", json!({"ports": {"rpc": 8400}}))])
                .unwrap_err();
        assert!(matches!(err, ConfigError::UnknownKey { source, key }
            if source == "bad.hcl" && key == "ports.rpc"));
    }

    #[test]
    fn user_data_maps_are_not_key_checked() {
        let (c, _) = load_one(json!({
            "node_meta": {"Any-Key.with stuff": "v"},
            "dns_config": {"service_ttl": {"*": "1s", "web-*": "2s"}},
            "http_config": {"response_headers": {"X-Frame-Options": "DENY"}},
            "tagged_addresses": {"lan_custom": "10.1.1.1"},
            "service": {"name": "web", "meta": {"whatever": "x"}, "not_a_consul_key": 1},
            "check": {"id": "h", "http": "http://x", "header": {"X-Custom": ["1"]}},
            "watches": [{"type": "key", "key": "k", "args": ["/bin/true"]}],
            "connect": {"ca_config": {"leaf_cert_ttl": "1h", "anything": 1}},
            "audit": {"sink": {"my sink": {"type": "file", "path": "/tmp/a"}}}
        }))
        .unwrap();
        assert_eq!(c.node_meta["Any-Key.with stuff"], "v");
        assert_eq!(c.dns_config.service_ttl["*"], secs(1));
        assert_eq!(c.services[0]["not_a_consul_key"], 1);
        assert_eq!(c.watches.len(), 1);
    }

    #[test]
    fn type_errors_are_reported_with_key() {
        let cases = [
            (json!({"ports": {"http": "abc"}}), "ports.http", "expected an integer"),
            (json!({"server": "yes"}), "server", "expected a boolean"),
            (json!({"retry_join": "10.0.0.1"}), "retry_join", "list of strings"),
            (json!({"session_ttl_min": "10 parsecs"}), "session_ttl_min", "invalid duration"),
            (json!({"session_ttl_min": 10}), "session_ttl_min", "duration string"),
            (json!({"ports": {"dns": 70000}}), "ports.dns", "at most 65535"),
            (
                json!({"performance": {"raft_multiplier": 11}}),
                "performance.raft_multiplier",
                "between 1 and 10",
            ),
            (json!({"bootstrap_expect": -1}), "bootstrap_expect", "between 0 and"),
            (json!({"node_meta": {"a": 1}}), "node_meta", "string values"),
            (
                json!({"dns_config": {"service_ttl": {"web": "soon"}}}),
                "dns_config.service_ttl.web",
                "invalid duration",
            ),
            (json!({"acl": {"default_policy": "maybe"}}), "acl.default_policy", "not one of"),
            (json!({"datacenter": "dc 1"}), "datacenter", "may only contain"),
            (json!({"service": "web"}), "service", "expected an object"),
            (json!({"telemetry": {"statsd_address": 5}}), "telemetry.statsd_address", "expected a string"),
        ];
        for (value, key, reason_part) in cases {
            let err = load_one(value).unwrap_err();
            match &err {
                ConfigError::Invalid { source, key: k, reason } => {
                    assert_eq!(source, "/etc/muster/a.json");
                    assert_eq!(k, key);
                    assert!(reason.contains(reason_part), "{reason}");
                }
                other => panic!("{key}: unexpected {other}"),
            }
            assert!(err.to_string().contains(&format!("\"{key}\"")));
        }
    }

    #[test]
    fn hcl_blocks_and_repeated_service_blocks() {
        let text = r#"
# a comment
datacenter = "dc2"
server     = true
bootstrap_expect = 3
retry_join = ["10.0.0.1", "10.0.0.2"]
ports {
  https = -1
  grpc  = 8502
}
acl {
  enabled        = true
  default_policy = "deny"
  tokens {
    initial_management = "root"
  }
}
service {
  name = "web"
  port = 80
  tags = ["a"]
}
service {
  name   = "db"
  checks = [{ args = ["/bin/true"], interval = "10s" }]
}
"#;
        let source = parse_config("/etc/muster/x.hcl", text, ConfigFormat::Hcl).unwrap();
        let (c, warnings) = load(&[source]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(c.datacenter, "dc2");
        assert!(c.server);
        assert_eq!(c.bootstrap_expect, 3);
        assert_eq!(c.ports.grpc, 8502);
        assert_eq!(c.ports.grpc_tls, 8503);
        assert!(c.acl_enabled);
        assert_eq!(c.acl_default_policy, "deny");
        assert_eq!(c.acl_tokens.initial_management.as_deref(), Some("root"));
        assert_eq!(c.services.len(), 2);
        assert_eq!(c.services[0]["name"], "web");
        assert_eq!(c.services[1]["checks"][0]["interval"], "10s");
    }

    #[test]
    fn repeated_hcl_blocks_merge_in_order() {
        let text = "acl {\n  enabled = true\n}\nacl {\n  default_policy = \"deny\"\n}\n";
        let source = parse_config("x.hcl", text, ConfigFormat::Hcl).unwrap();
        let (c, _) = load(&[source]).unwrap();
        assert!(c.acl_enabled);
        assert_eq!(c.acl_default_policy, "deny");
    }

    #[test]
    fn hcl_syntax_errors_name_the_file() {
        let err = parse_config("/etc/muster/bad.hcl", "server = ", ConfigFormat::Hcl).unwrap_err();
        assert!(matches!(&err, ConfigError::Parse { source, .. } if source == "/etc/muster/bad.hcl"));
        assert!(err.to_string().starts_with("Error parsing /etc/muster/bad.hcl: "));
        let err = parse_config("a.json", "[1, 2]", ConfigFormat::Json).unwrap_err();
        assert!(matches!(err, ConfigError::Parse { .. }));
        let empty = parse_config("empty.json", "  \n", ConfigFormat::Json).unwrap();
        assert_eq!(empty.value, json!({}));
    }

    #[test]
    fn unimplemented_keys_warn_once_per_path() {
        let a = src(
            "a.json",
            json!({
                "telemetry": {"statsd_address": "127.0.0.1:8125", "disable_hostname": true},
                "disable_update_check": true,
                "segments": [{"name": "alpha", "port": 8303}, {"name": "beta"}]
            }),
        );
        let b = src("b.json", json!({"telemetry": {"statsd_address": "127.0.0.1:8126"}}));
        let (_, warnings) = load(&[a, b]).unwrap();
        let statsd =
            "config key \"telemetry.statsd_address\" is accepted but not implemented yet by muster; ignored";
        assert_eq!(warnings.iter().filter(|w| *w == statsd).count(), 1);
        assert!(warnings.iter().any(|w| w.contains("\"telemetry.disable_hostname\"")));
        assert!(warnings.iter().any(|w| w.contains("\"segments.name\"")));
        assert!(warnings.iter().any(|w| w.contains("\"segments.port\"")));
        // Inert keys need nothing from muster, so they do not warn.
        assert!(!warnings.iter().any(|w| w.contains("disable_update_check")));
        assert_eq!(warnings.len(), 4, "{warnings:?}");
    }

    #[test]
    fn deprecated_keys_are_translated() {
        let (c, warnings) = load_one(json!({
            "acl_datacenter": "Primary",
            "acl_master_token": "m",
            "acl_default_policy": "deny",
            "acl": {"tokens": {"agent_master": "am"}},
            "start_join": ["10.0.0.9"],
            "retry_join": ["10.0.0.8"],
            "ui": true,
            "ca_file": "/ca.pem",
            "tls_prefer_server_cipher_suites": true
        }))
        .unwrap();
        assert_eq!(c.primary_datacenter, "primary");
        assert!(c.acl_enabled, "acl_datacenter turns ACLs on");
        assert_eq!(c.acl_default_policy, "deny");
        assert_eq!(c.acl_tokens.initial_management.as_deref(), Some("m"));
        assert_eq!(c.acl_tokens.agent_recovery.as_deref(), Some("am"));
        assert_eq!(c.retry_join, vec!["10.0.0.8", "10.0.0.9"]);
        assert!(c.ui_enabled);
        assert_eq!(c.raw["tls"]["defaults"]["ca_file"], "/ca.pem");
        assert!(c.raw.get("ca_file").is_none());
        assert!(warnings.contains(
            &"config key \"acl_datacenter\" is deprecated; use \"primary_datacenter\" instead".to_string()
        ));
        assert!(warnings
            .iter()
            .any(|w| w.contains("\"tls.defaults.ca_file\" is accepted but not implemented")));
        assert!(warnings.iter().any(|w| w.contains("tls_prefer_server_cipher_suites")));

        // The new name wins over the old one in the same source.
        let (c, _) = load_one(json!({"ui": false, "ui_config": {"enabled": true}})).unwrap();
        assert!(c.ui_enabled);
    }

    #[test]
    fn dev_defaults_preset() {
        let (c, warnings) = load(&[AgentConfig::dev_defaults()]).unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        assert!(c.server && c.bootstrap);
        assert_eq!(c.bind_addr, "127.0.0.1");
        assert_eq!(c.client_addr, "127.0.0.1");
        assert!(c.ui_enabled);
        assert_eq!(c.log_level, "DEBUG");
        assert_eq!(c.ports.grpc, 8502);
        assert_eq!(c.raft_multiplier, 1);
        assert_eq!(c.raft_timing.election_timeout, millis(52));
        assert_eq!(c.raft_timing.heartbeat_timeout, millis(35));
        assert_eq!(c.raft_timing.leader_lease_timeout, millis(20));
        assert_eq!(c.gossip_lan.probe_interval, millis(100));
        assert_eq!(c.gossip_wan.suspicion_mult, 3);
        assert_eq!(c.skip_leave_on_interrupt, None);

        // Files after the preset still override it.
        let user = src("u.json", json!({"log_level": "INFO", "ports": {"http": 18500}}));
        let (c, _) = load(&[AgentConfig::dev_defaults(), user]).unwrap();
        assert_eq!(c.log_level, "INFO");
        assert_eq!(c.ports.http, 18500);
        assert_eq!(c.ports.grpc, 8502);
    }

    #[test]
    fn config_dir_reads_json_and_hcl_in_order() {
        let dir = temp_dir("dir");
        std::fs::write(dir.join("b.hcl"), "log_level = \"WARN\"\nretry_join = [\"b\"]\n").unwrap();
        std::fs::write(dir.join("a.json"), r#"{"log_level": "ERR", "retry_join": ["a"], "server": true}"#)
            .unwrap();
        std::fs::write(dir.join("c.txt"), "not config").unwrap();
        std::fs::create_dir(dir.join("d.json")).unwrap();
        std::fs::write(dir.join("d.json").join("e.json"), "{\"bogus\": 1}").unwrap();

        let sources = read_config_dir(&dir).unwrap();
        let names: Vec<_> = sources.iter().map(|s| s.name.clone()).collect();
        assert_eq!(
            names,
            vec![dir.join("a.json").display().to_string(), dir.join("b.hcl").display().to_string()]
        );
        let (c, _) = load(&sources).unwrap();
        assert_eq!(c.log_level, "WARN");
        assert_eq!(c.retry_join, vec!["a", "b"]);
        assert!(c.server);

        let err = read_config_file(&dir.join("c.txt")).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownFormat { .. }));
        let forced = read_config_file_as(&dir.join("b.hcl"), Some(ConfigFormat::Hcl)).unwrap();
        assert_eq!(forced.value["log_level"], "WARN");
        let err = read_config_file(&dir.join("missing.json")).unwrap_err();
        assert!(matches!(err, ConfigError::Io { .. }));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn seed_demo_config_loads() {
        let text = r#"{"service": {"name": "redis", "tags": ["master"], "address": "127.0.0.1", "port": 8000, "checks": [{"script": "/usr/local/bin/check_redis.py", "interval": "10s"}]}}"#;
        let source = parse_config("demo.json", text, ConfigFormat::Json).unwrap();
        let (c, warnings) = load(&[source]).unwrap();
        assert!(warnings.is_empty());
        assert_eq!(c.services.len(), 1);
        assert_eq!(c.services[0]["name"], "redis");
        assert_eq!(c.services[0]["checks"][0]["interval"], "10s");
    }

    #[test]
    fn cross_key_checks() {
        let err = load_one(json!({"server": true, "bootstrap": true, "bootstrap_expect": 3})).unwrap_err();
        assert!(matches!(err, ConfigError::Inconsistent { .. }));
        let err = load_one(json!({"bootstrap_expect": 3})).unwrap_err();
        assert!(matches!(err, ConfigError::Inconsistent { .. }));
        let err = load_one(json!({"ports": {"server": 0}})).unwrap_err();
        assert!(matches!(err, ConfigError::Inconsistent { .. }));
        let (_, warnings) = load_one(json!({"server": true, "bootstrap_expect": 2})).unwrap();
        assert!(warnings.iter().any(|w| w.contains("bootstrap_expect = 2")));
    }

    #[test]
    fn normalizations() {
        let (c, _) = load_one(json!({
            "domain": "example",
            "alt_domain": "alt.example.",
            "client_addr": "127.0.0.1  10.0.0.5",
            "ports": {"https": 0, "dns": 53.0},
            "node_name": "",
            "leave_on_terminate": false
        }))
        .unwrap();
        assert_eq!(c.domain, "example.");
        assert_eq!(c.alt_domain.as_deref(), Some("alt.example."));
        assert_eq!(c.client_addrs(), vec!["127.0.0.1", "10.0.0.5"]);
        assert_eq!(c.ports.https, -1);
        assert_eq!(c.ports.dns, 53);
        assert_eq!(c.node_name, None);
        assert_eq!(c.leave_on_terminate, Some(false));
    }

    #[test]
    fn go_durations() {
        let ok = [
            ("0", Duration::ZERO),
            ("10s", secs(10)),
            ("1m30s", secs(90)),
            ("100ms", millis(100)),
            ("1.5h", secs(5400)),
            ("2h45m", secs(9900)),
            (".5s", millis(500)),
            ("1us", Duration::from_micros(1)),
            ("1\u{b5}s", Duration::from_micros(1)),
            ("3ns", Duration::from_nanos(3)),
            ("+5s", secs(5)),
            ("87600h", secs(87_600 * 3600)),
        ];
        for (text, want) in ok {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
        for bad in ["", "10", "s", "1.s5", "-5s", "1d", "9999999999999h", "."] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    /// The schema entry at a dotted path through blocks.
    fn find_path(path: &str) -> Option<&'static Key> {
        let mut keys = TOP;
        let mut found = None;
        for name in path.split('.') {
            if found.is_some() {
                keys = match found.map(|key: &Key| key.kind) {
                    Some(Kind::Block(sub)) => sub,
                    _ => return None,
                };
            }
            found = Some(find_key(keys, name)?);
        }
        found
    }

    #[test]
    fn renamed_targets_exist_in_schema() {
        fn walk(keys: &'static [Key], out: &mut Vec<&'static str>) {
            for key in keys {
                if let Status::Renamed(to) = key.status {
                    out.push(to);
                }
                match key.kind {
                    Kind::Block(sub) | Kind::BlockList(sub) | Kind::NamedBlocks(sub) => walk(sub, out),
                    _ => {}
                }
            }
        }
        let mut targets = Vec::new();
        walk(TOP, &mut targets);
        for target in targets {
            assert!(find_path(target).is_some(), "{target}");
        }
    }
}
