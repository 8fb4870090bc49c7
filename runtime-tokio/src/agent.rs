//! Assembling and running one agent: configuration in, listeners bound, node running.
//!
//! Owns the translation from `AgentConfig` to the core's `node::Config` (node name and ID,
//! advertise address, DNS settings, config-file services and checks), binding the HTTP and
//! DNS listeners, and running until told to stop. Never interprets requests (http, dns) or
//! makes protocol decisions (the node).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use muster_core::agent::{NodeInfo, SavedDefs};
use muster_core::api::dns::DnsConfig;
use muster_core::api::ApiRequest;
use muster_core::gossip::keyring::{GossipKey, Keyring};
use muster_core::gossip::wire::Codec;
use muster_core::gossip::GossipConfig;
use muster_core::io::Pool;
use muster_core::node::{Config, GossipSetup, Node, Ports, CONSUL_API_VERSION};
use muster_core::rng::{Rng, Stream};
use muster_core::time::Duration;
use tokio::net::{TcpListener, UdpSocket};

use crate::config::AgentConfig;
use crate::disk::DiskLog;
use crate::host::{Host, HostError, NodeHandle, Storage};
use crate::http::{HttpOptions, Reloader};
use crate::limits::StreamLimits;
use crate::{dns, gossip, http, rpc};
use muster_core::api::decode;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid service definition: {0}")]
    ServiceDecode(decode::DecodeError),
    #[error("invalid check definition: {0}")]
    CheckDecode(decode::DecodeError),
    #[error(transparent)]
    Node(#[from] muster_core::node::ConfigError),
    #[error("{0}")]
    Advertise(String),
    #[error("failed to bind {what} on {addr}: {err}")]
    Bind { what: &'static str, addr: String, err: std::io::Error },
    #[error("invalid address {0:?}")]
    Address(String),
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("data dir {path}: {err}")]
    DataDir { path: String, err: std::io::Error },
    #[error(transparent)]
    Disk(#[from] crate::disk::DiskError),
    #[error("invalid gossip encryption key: {0}")]
    Encrypt(String),
}

/// A started agent: its handle and the addresses it actually listens on.
pub struct Running {
    pub handle: NodeHandle,
    pub http: Vec<SocketAddr>,
    pub dns: Vec<SocketAddr>,
    host: tokio::task::JoinHandle<Result<(), HostError>>,
}

impl Running {
    /// Stops the node and waits for its loop to end.
    pub async fn stop(self) -> Result<(), AgentError> {
        self.handle.shutdown();
        self.wait().await
    }

    /// Waits until the node stops on its own (it fail-stopped) or is stopped.
    pub async fn wait(self) -> Result<(), AgentError> {
        match self.host.await {
            Ok(r) => r.map_err(AgentError::from),
            Err(e) => Err(AgentError::Advertise(format!("agent task ended abnormally: {e}"))),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// The address other agents reach us at: `advertise_addr`, else `bind_addr`, else (when
/// binding everywhere) the machine's single private IPv4, as Consul chooses.
fn advertise(cfg: &AgentConfig) -> Result<String, AgentError> {
    if let Some(a) = cfg.advertise_addr.as_ref().filter(|a| !a.is_empty()) {
        return Ok(a.clone());
    }
    if !matches!(cfg.bind_addr.as_str(), "0.0.0.0" | "::" | "[::]") {
        return Ok(cfg.bind_addr.clone());
    }
    let ifaces = if_addrs::get_if_addrs().map_err(|e| AgentError::Advertise(e.to_string()))?;
    let private: Vec<IpAddr> = ifaces
        .iter()
        .map(|i| i.ip())
        .filter(|ip| matches!(ip, IpAddr::V4(v4) if v4.is_private() || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64))
        .collect();
    match private.as_slice() {
        [one] => Ok(one.to_string()),
        [] => Err(AgentError::Advertise(
            "No private IPv4 address found. Please configure one with 'bind' and/or 'advertise'.".into(),
        )),
        _ => Err(AgentError::Advertise(
            "Multiple private IPv4 addresses found. Please configure one with 'bind' and/or 'advertise'."
                .into(),
        )),
    }
}

fn secs(d: std::time::Duration) -> u32 {
    u32::try_from(d.as_secs()).unwrap_or(u32::MAX)
}

/// Builds the node's configuration; config-file services and checks are decoded here.
pub fn node_config(cfg: &AgentConfig, muster_version: &str) -> Result<Config, AgentError> {
    let address = advertise(cfg)?;
    let name = cfg.node_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(hostname);
    let id = match (&cfg.node_id, &cfg.data_dir) {
        (Some(id), _) => id.clone(),
        (None, Some(dir)) => persistent_node_id(dir)?,
        (None, None) => Rng::new(os_seed(), Stream::Ids).uuid(),
    };
    let wan = cfg.advertise_addr_wan.clone().unwrap_or_else(|| address.clone());
    let tagged_addresses = BTreeMap::from([
        ("lan".to_string(), address.clone()),
        ("lan_ipv4".to_string(), address.clone()),
        ("wan".to_string(), wan.clone()),
        ("wan_ipv4".to_string(), wan),
    ]);
    let mut meta = cfg.node_meta.clone();
    meta.insert("consul-network-segment".into(), String::new());
    meta.insert("consul-version".into(), CONSUL_API_VERSION.into());
    let services = cfg
        .services
        .iter()
        .map(decode::service_def)
        .collect::<Result<_, _>>()
        .map_err(AgentError::ServiceDecode)?;
    let checks = cfg
        .checks
        .iter()
        .map(decode::check_def)
        .collect::<Result<_, _>>()
        .map_err(AgentError::CheckDecode)?;
    let d = &cfg.dns_config;
    let dns = DnsConfig {
        domain: cfg.domain.to_ascii_lowercase(),
        alt_domain: cfg.alt_domain.as_ref().map(|a| a.to_ascii_lowercase()),
        datacenter: cfg.datacenter.clone(),
        node_ttl: secs(d.node_ttl),
        service_ttl: d.service_ttl.iter().map(|(k, v)| (k.clone(), secs(*v))).collect(),
        only_passing: d.only_passing,
        udp_answer_limit: d.udp_answer_limit as usize,
        a_record_limit: d.a_record_limit as usize,
        enable_additional_node_meta_txt: d.enable_additional_node_meta_txt,
        soa_refresh: d.soa.refresh,
        soa_retry: d.soa.retry,
        soa_expire: d.soa.expire,
        soa_min_ttl: d.soa.min_ttl,
    };
    let port = |p: i32| u16::try_from(p).unwrap_or(0);
    let debug_config = BTreeMap::from([
        ("Datacenter".to_string(), cfg.datacenter.clone()),
        ("NodeName".to_string(), name.clone()),
        ("BindAddr".to_string(), cfg.bind_addr.clone()),
        ("ClientAddrs".to_string(), cfg.client_addrs().join(" ")),
        ("DNSDomain".to_string(), cfg.domain.clone()),
        ("EnableScriptChecks".to_string(), cfg.enable_script_checks.to_string()),
        ("ServerMode".to_string(), cfg.server.to_string()),
    ]);
    let host_stats = BTreeMap::from([
        ("arch".to_string(), std::env::consts::ARCH.to_string()),
        ("os".to_string(), std::env::consts::OS.to_string()),
        ("cpu_count".to_string(), std::thread::available_parallelism().map_or(1, |n| n.get()).to_string()),
    ]);
    let unix_secs_at_zero = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    Ok(Config {
        node: NodeInfo { name, id, address, datacenter: cfg.datacenter.clone(), tagged_addresses, meta },
        server: cfg.server,
        bootstrap: cfg.bootstrap || cfg.bootstrap_expect == 1,
        primary_datacenter: cfg.primary_datacenter.clone(),
        ports: Ports {
            http: cfg.ports.http,
            dns: cfg.ports.dns,
            grpc: cfg.ports.grpc,
            server: port(cfg.ports.server),
            serf_lan: port(cfg.ports.serf_lan),
            serf_wan: port(cfg.ports.serf_wan),
        },
        dns,
        enable_script_checks: cfg.enable_script_checks,
        enable_local_script_checks: cfg.enable_local_script_checks,
        check_output_max: cfg.check_output_max_size,
        check_update_interval: cfg.check_update_interval,
        default_query_time: cfg.default_query_time,
        max_query_time: cfg.max_query_time,
        ae_interval: cfg.ae_interval,
        coordinate_sync_min: cfg.sync_coordinate_interval_min,
        coordinate_rate_target: cfg.sync_coordinate_rate_target,
        unix_secs_at_zero,
        muster_version: muster_version.to_string(),
        debug_config,
        host_stats,
        snapshot_threshold: cfg.raft_snapshot_threshold.max(1),
        raft_trailing_logs: cfg.raft_trailing_logs,
        raft_election_timeout: cfg.raft_timing.election_timeout,
        // Several heartbeats fit in the shortest election timeout, so one lost heartbeat
        // never starts an election.
        raft_heartbeat: cfg.raft_timing.election_timeout * 3 / 20,
        bootstrap_expect: cfg.bootstrap_expect,
        // Servers find each other through gossip tags; `-retry-join` joins the LAN pool.
        retry_join: vec![],
        gossip: Some(gossip_setup(cfg)?),
        rpc_hold_timeout: Duration::from_secs(7),
        rpc_rate: cfg.rpc_rate.is_finite().then_some(cfg.rpc_rate),
        rpc_max_burst: cfg.rpc_max_burst,
        services,
        checks,
        restored: Default::default(),
    })
}

/// What a reload with the config files read again as `new` asks of the node: their
/// services and checks. Settings that only take effect at start are named in the log.
pub fn reload_request(
    old: &AgentConfig,
    new: &AgentConfig,
    muster_version: &str,
) -> Result<ApiRequest, AgentError> {
    let fixed: [(&str, bool); 12] = [
        ("node_name", old.node_name != new.node_name),
        ("datacenter", old.datacenter != new.datacenter),
        ("server", old.server != new.server),
        ("bootstrap_expect", old.bootstrap_expect != new.bootstrap_expect),
        ("data_dir", old.data_dir != new.data_dir),
        ("bind_addr", old.bind_addr != new.bind_addr),
        ("advertise_addr", old.advertise_addr != new.advertise_addr),
        ("client_addr", old.client_addr != new.client_addr),
        ("ports", old.ports != new.ports),
        ("encrypt", old.encrypt != new.encrypt),
        ("retry_join", old.retry_join != new.retry_join),
        ("enable_script_checks", old.enable_script_checks != new.enable_script_checks),
    ];
    for (key, _) in fixed.iter().filter(|(_, changed)| *changed) {
        tracing::warn!(key, "changed in the config files, but only takes effect after a restart");
    }
    let cfg = node_config(new, muster_version)?;
    Ok(ApiRequest::AgentReload { services: cfg.services, checks: cfg.checks })
}

/// Where the services and checks registered through the API are kept between runs.
fn agent_state_path(cfg: &AgentConfig) -> Option<PathBuf> {
    cfg.data_dir.as_ref().map(|d| d.join("agent-state.json"))
}

/// The definitions a previous run saved; an unreadable file is reported and skipped, so
/// the agent still starts (with its config-file services).
fn saved_defs(cfg: &AgentConfig) -> SavedDefs {
    let Some(path) = agent_state_path(cfg) else { return SavedDefs::default() };
    let read = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return SavedDefs::default(),
        Err(e) => Err(e.to_string()),
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| e.to_string()),
    };
    read.unwrap_or_else(|e| {
        tracing::error!(path = %path.display(), error = %e, "saved services and checks unreadable; skipped");
        SavedDefs::default()
    })
}

/// A server with no peers to expect or join: it can run without its server port.
fn node_is_alone(cfg: &AgentConfig) -> bool {
    cfg.retry_join.is_empty() && cfg.bootstrap_expect <= 1
}

/// The agent's gossip pools: timing from `gossip_lan`/`gossip_wan`, the `encrypt` key, and
/// the `-retry-join` addresses (`host[:port]`, this agent's serf port by default).
fn gossip_setup(cfg: &AgentConfig) -> Result<GossipSetup, AgentError> {
    let tune = |base: GossipConfig, g: &crate::config::GossipConfig| GossipConfig {
        gossip_nodes: g.gossip_nodes as usize,
        gossip_interval: g.gossip_interval,
        probe_interval: g.probe_interval,
        probe_timeout: g.probe_timeout,
        suspicion_mult: g.suspicion_mult,
        retransmit_mult: g.retransmit_mult,
        ..base
    };
    let keyring = match (saved_keyring(cfg)?, &cfg.encrypt) {
        // A keyring rotated at run time wins over `encrypt`, as Consul's local.keyring does:
        // the pool may no longer accept the configured key.
        (Some(saved), _) => Some(saved),
        (None, Some(text)) => {
            Some(Keyring::new(GossipKey::from_base64(text).map_err(|e| AgentError::Encrypt(e.to_string()))?))
        }
        (None, None) => None,
    };
    let codec = match keyring {
        Some(k) => Codec {
            keyring: Some(k),
            verify_incoming: cfg.encrypt_verify_incoming,
            verify_outgoing: cfg.encrypt_verify_outgoing,
        },
        None => Codec::plain(),
    };
    let resolve = |list: &[String], port: i32| -> Result<Vec<String>, AgentError> {
        list.iter().map(|j| resolve_addr(j, port)).collect()
    };
    Ok(GossipSetup {
        lan: tune(GossipConfig::lan(), &cfg.gossip_lan),
        wan: tune(GossipConfig::wan(), &cfg.gossip_wan),
        codec,
        join: resolve(&cfg.retry_join, cfg.ports.serf_lan)?,
        join_wan: if cfg.server { resolve(&cfg.retry_join_wan, cfg.ports.serf_wan)? } else { vec![] },
        retry_interval: cfg.retry_interval,
        retry_interval_wan: cfg.retry_interval_wan,
    })
}

/// Where a rotated gossip keyring is kept: `<data_dir>/keyring`.
fn keyring_path(cfg: &AgentConfig) -> Option<std::path::PathBuf> {
    cfg.data_dir.as_ref().map(|d| d.join("keyring"))
}

/// The keyring saved by an earlier run (a JSON array of base64 keys, the primary first).
fn saved_keyring(cfg: &AgentConfig) -> Result<Option<Keyring>, AgentError> {
    let Some(path) = keyring_path(cfg) else { return Ok(None) };
    let bad = |why: String| AgentError::Encrypt(format!("{}: {why}", path.display()));
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    let keys: Vec<String> = serde_json::from_slice(&text).map_err(|e| bad(e.to_string()))?;
    let mut keys = keys.iter().map(|k| GossipKey::from_base64(k).map_err(|e| bad(e.to_string())));
    let Some(primary) = keys.next().transpose()? else { return Err(bad("no keys".into())) };
    let mut ring = Keyring::new(primary);
    for k in keys {
        ring.install(k?);
    }
    Ok(Some(ring))
}

/// `host[:port]` resolved to `ip:port`, with `default_port` when none is given.
pub fn resolve_addr(join: &str, default_port: i32) -> Result<String, AgentError> {
    use std::net::ToSocketAddrs;
    let with_port = match socket(join, default_port) {
        Ok(addr) => return Ok(addr.to_string()),
        Err(_) if join.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok()) => join.to_string(),
        Err(_) => format!("{join}:{default_port}"),
    };
    let resolved = with_port.to_socket_addrs().ok().and_then(|mut a| a.find(SocketAddr::is_ipv4));
    resolved.map(|a| a.to_string()).ok_or(AgentError::Address(join.to_string()))
}

/// The node ID kept in `<data_dir>/node-id`, made on first start, so a restarted agent is
/// the same node.
fn persistent_node_id(dir: &std::path::Path) -> Result<String, AgentError> {
    let path = dir.join("node-id");
    let io = |err: std::io::Error| AgentError::DataDir { path: path.display().to_string(), err };
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(e)),
    }
    std::fs::create_dir_all(dir).map_err(io)?;
    let id = Rng::new(os_seed(), Stream::Ids).uuid();
    let tmp = dir.join("node-id.tmp");
    std::fs::write(&tmp, &id).and_then(|()| std::fs::rename(&tmp, &path)).map_err(io)?;
    Ok(id)
}

/// Seeds from the OS at boot: the only randomness the runtime ever feeds the core.
fn os_seed() -> [u8; 32] {
    use rand_core::RngCore;
    let mut s = [0u8; 32];
    rand_core::OsRng.fill_bytes(&mut s);
    s
}

fn socket(host: &str, port: i32) -> Result<SocketAddr, AgentError> {
    let text = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    text.parse().map_err(|_| AgentError::Address(text))
}

/// Binds the gossip ports (LAN; WAN too on servers). A lone agent whose ports are taken
/// runs without gossip, as `-dev` must keep working; anyone else fails to start.
fn bind_gossip(cfg: &AgentConfig) -> Result<Vec<(Pool, gossip::Bound)>, AgentError> {
    let mut pools = vec![(Pool::Lan, cfg.ports.serf_lan)];
    if cfg.server && cfg.ports.serf_wan > 0 {
        pools.push((Pool::Wan, cfg.ports.serf_wan));
    }
    let mut bound = Vec::new();
    for (pool, port) in pools {
        let addr = socket(&cfg.bind_addr, port)?;
        match gossip::bind(addr) {
            Ok(b) => bound.push((pool, b)),
            Err(err) if node_is_alone(cfg) => {
                tracing::warn!(%addr, error = %err, "gossip port unavailable; running without gossip");
                return Ok(vec![]);
            }
            Err(err) => return Err(AgentError::Bind { what: "gossip", addr: addr.to_string(), err }),
        }
    }
    Ok(bound)
}

/// Binds the listeners and starts the node. Ports of -1 stay closed.
pub async fn start(
    cfg: &AgentConfig,
    mut node_cfg: Config,
    pretty: bool,
    reload: Option<Reloader>,
) -> Result<Running, AgentError> {
    node_cfg.restored = saved_defs(cfg);
    let gossip_ports = bind_gossip(cfg)?;
    if gossip_ports.is_empty() {
        node_cfg.gossip = None;
    }
    let (node, storage) = match &cfg.data_dir {
        // A client holds no Raft log; its data dir keeps its node ID and keyring.
        Some(_) if !cfg.server => (Node::new(node_cfg, os_seed())?, Storage::Memory),
        Some(dir) => {
            let (log, recovered) = DiskLog::open(dir)?;
            (Node::recover(node_cfg, os_seed(), recovered)?, Storage::Disk(log))
        }
        None => (Node::new(node_cfg, os_seed())?, Storage::Memory),
    };
    // Servers are known by their server address; a client, which has no server port, by a
    // name its servers write answers back to on the connection it opened.
    let me = if cfg.server {
        format!("{}:{}", node.config().node.address, node.config().ports.server)
    } else {
        muster_core::rpc::client_id(&node.config().node.name)
    };
    let (mut host, handle) = Host::new(node, Instant::now(), storage, me);
    if let Some(path) = keyring_path(cfg) {
        host.keep_keyring_in(path);
    }
    if let Some(path) = agent_state_path(cfg) {
        host.keep_agent_state_in(path);
    }
    for (pool, bound) in gossip_ports {
        let port = bound.serve(pool, host.deliveries()).map_err(|err| AgentError::Bind {
            what: "gossip",
            addr: format!("{pool:?}"),
            err,
        })?;
        host.add_gossip(pool, port);
    }
    if cfg.server && cfg.ports.server > 0 {
        let addr = socket(&cfg.bind_addr, cfg.ports.server)?;
        let (events, clients) = (host.deliveries(), host.rpc_clients());
        let limits = StreamLimits {
            conns_per_client: usize::try_from(cfg.rpc_max_conns_per_client).unwrap_or(usize::MAX),
            handshake: cfg.rpc_handshake_timeout,
        };
        match std::net::TcpListener::bind(addr).and_then(|l| rpc::listen(l, events, clients, limits)) {
            Ok(()) => {}
            // A lone server has nobody to talk to: -dev keeps working when the port is taken.
            Err(err) if node_is_alone(cfg) => {
                tracing::warn!(%addr, error = %err, "server port unavailable; running without it")
            }
            Err(err) => return Err(AgentError::Bind { what: "server RPC", addr: addr.to_string(), err }),
        }
    }
    let opts = Arc::new(HttpOptions {
        datacenter: cfg.datacenter.clone(),
        pretty,
        kv_max_value_size: usize::try_from(cfg.kv_max_value_size).unwrap_or(usize::MAX),
        max_conns_per_client: usize::try_from(cfg.http_max_conns_per_client).unwrap_or(usize::MAX),
        acl_default_policy: cfg.acl_default_policy.clone(),
        disable_unprintable_char_filter: cfg.disable_http_unprintable_char_filter,
        serf_lan_port: cfg.ports.serf_lan,
        serf_wan_port: cfg.ports.serf_wan,
        reload,
    });
    let client_addrs = cfg.client_addrs();
    let hosts = |specific: &Option<String>| -> Vec<String> {
        specific
            .as_ref()
            .map(|a| a.split_whitespace().map(str::to_string).collect())
            .unwrap_or_else(|| client_addrs.clone())
    };
    let mut http_addrs = Vec::new();
    if cfg.ports.http > 0 {
        for h in hosts(&cfg.addresses.http) {
            let addr = socket(&h, cfg.ports.http)?;
            let l = TcpListener::bind(addr).await.map_err(|err| AgentError::Bind {
                what: "HTTP",
                addr: addr.to_string(),
                err,
            })?;
            http_addrs.push(l.local_addr().unwrap_or(addr));
            tokio::spawn(http::serve(l, handle.clone(), opts.clone()));
        }
    }
    let mut dns_addrs = Vec::new();
    if cfg.ports.dns > 0 {
        for h in hosts(&cfg.addresses.dns) {
            let addr = socket(&h, cfg.ports.dns)?;
            let bind_err = |err| AgentError::Bind { what: "DNS", addr: addr.to_string(), err };
            let udp = UdpSocket::bind(addr).await.map_err(bind_err)?;
            let actual = udp.local_addr().unwrap_or(addr);
            let tcp = TcpListener::bind(actual).await.map_err(|err| AgentError::Bind {
                what: "DNS",
                addr: actual.to_string(),
                err,
            })?;
            dns_addrs.push(actual);
            tokio::spawn(dns::serve_udp(udp, handle.clone()));
            tokio::spawn(dns::serve_tcp(tcp, handle.clone()));
        }
    }
    let host = tokio::spawn(host.run());
    Ok(Running { handle, http: http_addrs, dns: dns_addrs, host })
}
