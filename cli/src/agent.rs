//! `muster agent`: turns Consul's agent flags into a configuration source, loads and merges
//! the config files, and runs the agent until SIGINT or SIGTERM.
//!
//! Owns flag handling, logging setup, the start banner and the pid file. Never decides
//! configuration semantics (runtime's `config`) or protocol behaviour (the core).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use muster_runtime::agent;
use muster_runtime::config::{self, AgentConfig, ConfigFormat, Source};
use muster_runtime::http::Reloader;
use serde_json::{json, Map, Value};

/// Flags of `consul agent` that muster honours (values override config files).
#[derive(clap::Args, Debug, Default)]
pub struct AgentArgs {
    /// Development mode: a single server in memory, no config needed.
    #[arg(long)]
    pub dev: bool,
    /// Run as a server.
    #[arg(long)]
    pub server: bool,
    /// Let this server elect itself.
    #[arg(long)]
    pub bootstrap: bool,
    /// Servers to wait for before bootstrapping.
    #[arg(long = "bootstrap-expect")]
    pub bootstrap_expect: Option<u32>,
    /// Where state is kept.
    #[arg(long = "data-dir")]
    pub data_dir: Option<PathBuf>,
    /// A JSON or HCL config file (repeatable).
    #[arg(long = "config-file")]
    pub config_file: Vec<PathBuf>,
    /// A directory of *.json / *.hcl config files (repeatable).
    #[arg(long = "config-dir")]
    pub config_dir: Vec<PathBuf>,
    /// Parse config files as this format regardless of extension (json or hcl).
    #[arg(long = "config-format")]
    pub config_format: Option<String>,
    /// Inline HCL configuration (repeatable).
    #[arg(long = "hcl")]
    pub hcl: Vec<String>,
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Node name (default: the host name).
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long = "node-id")]
    pub node_id: Option<String>,
    /// key:value node metadata (repeatable).
    #[arg(long = "node-meta")]
    pub node_meta: Vec<String>,
    /// Address for cluster communication.
    #[arg(long)]
    pub bind: Option<String>,
    /// Address(es) for HTTP and DNS (space-separated).
    #[arg(long)]
    pub client: Option<String>,
    #[arg(long)]
    pub advertise: Option<String>,
    #[arg(long = "advertise-wan")]
    pub advertise_wan: Option<String>,
    /// Address to join at start (repeatable).
    #[arg(long = "retry-join", alias = "join")]
    pub retry_join: Vec<String>,
    #[arg(long = "retry-join-wan", alias = "join-wan")]
    pub retry_join_wan: Vec<String>,
    #[arg(long = "retry-interval")]
    pub retry_interval: Option<String>,
    #[arg(long = "retry-max")]
    pub retry_max: Option<u32>,
    #[arg(long)]
    pub encrypt: Option<String>,
    /// Serve the web UI.
    #[arg(long)]
    pub ui: bool,
    #[arg(long = "dns-port", allow_negative_numbers = true)]
    pub dns_port: Option<i32>,
    #[arg(long = "http-port", allow_negative_numbers = true)]
    pub http_port: Option<i32>,
    #[arg(long = "https-port", allow_negative_numbers = true)]
    pub https_port: Option<i32>,
    #[arg(long = "grpc-port", allow_negative_numbers = true)]
    pub grpc_port: Option<i32>,
    #[arg(long = "serf-lan-port", allow_negative_numbers = true)]
    pub serf_lan_port: Option<i32>,
    #[arg(long = "serf-wan-port", allow_negative_numbers = true)]
    pub serf_wan_port: Option<i32>,
    #[arg(long = "server-port", allow_negative_numbers = true)]
    pub server_port: Option<i32>,
    /// Upstream DNS server (repeatable).
    #[arg(long)]
    pub recursor: Vec<String>,
    #[arg(long)]
    pub domain: Option<String>,
    #[arg(long = "alt-domain")]
    pub alt_domain: Option<String>,
    /// trace, debug, info, warn or err.
    #[arg(long = "log-level")]
    pub log_level: Option<String>,
    #[arg(long = "log-json")]
    pub log_json: bool,
    #[arg(long = "pid-file")]
    pub pid_file: Option<PathBuf>,
    #[arg(long = "enable-script-checks")]
    pub enable_script_checks: bool,
    #[arg(long = "enable-local-script-checks")]
    pub enable_local_script_checks: bool,
    #[arg(long = "disable-host-node-id")]
    pub disable_host_node_id: bool,
}

impl AgentArgs {
    /// The flags as one more configuration source, layered after the files.
    fn as_source(&self) -> anyhow::Result<Source> {
        let mut m = Map::new();
        let mut set = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        if self.server {
            set("server", json!(true));
        }
        if self.bootstrap {
            set("bootstrap", json!(true));
        }
        let strings = [
            ("datacenter", &self.datacenter),
            ("node_name", &self.node),
            ("node_id", &self.node_id),
            ("bind_addr", &self.bind),
            ("client_addr", &self.client),
            ("advertise_addr", &self.advertise),
            ("advertise_addr_wan", &self.advertise_wan),
            ("retry_interval", &self.retry_interval),
            ("encrypt", &self.encrypt),
            ("domain", &self.domain),
            ("alt_domain", &self.alt_domain),
            ("log_level", &self.log_level),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                set(k, json!(v));
            }
        }
        if let Some(n) = self.bootstrap_expect {
            set("bootstrap_expect", json!(n));
        }
        if let Some(n) = self.retry_max {
            set("retry_max", json!(n));
        }
        if let Some(d) = &self.data_dir {
            set("data_dir", json!(d));
        }
        if let Some(p) = &self.pid_file {
            set("pid_file", json!(p));
        }
        for (k, list) in [
            ("retry_join", &self.retry_join),
            ("retry_join_wan", &self.retry_join_wan),
            ("recursors", &self.recursor),
        ] {
            if !list.is_empty() {
                set(k, json!(list));
            }
        }
        if !self.node_meta.is_empty() {
            let mut meta = Map::new();
            for kv in &self.node_meta {
                let (k, v) =
                    kv.split_once(':').with_context(|| format!("-node-meta {kv:?} must be key:value"))?;
                meta.insert(k.to_string(), json!(v));
            }
            set("node_meta", Value::Object(meta));
        }
        let ports: Map<String, Value> = [
            ("dns", self.dns_port),
            ("http", self.http_port),
            ("https", self.https_port),
            ("grpc", self.grpc_port),
            ("serf_lan", self.serf_lan_port),
            ("serf_wan", self.serf_wan_port),
            ("server", self.server_port),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k.to_string(), json!(v))))
        .collect();
        if !ports.is_empty() {
            set("ports", Value::Object(ports));
        }
        for (flag, key) in [
            (self.ui, "ui_config"),
            (self.log_json, "log_json"),
            (self.enable_script_checks, "enable_script_checks"),
            (self.enable_local_script_checks, "enable_local_script_checks"),
            (self.disable_host_node_id, "disable_host_node_id"),
        ] {
            if flag {
                set(key, if key == "ui_config" { json!({"enabled": true}) } else { json!(true) });
            }
        }
        Ok(Source { name: "command-line flags".into(), value: Value::Object(m) })
    }

    /// Defaults, then files and directories in the order given, then inline HCL, then flags.
    fn sources(&self) -> anyhow::Result<Vec<Source>> {
        let format = match self.config_format.as_deref() {
            None => None,
            Some("json") => Some(ConfigFormat::Json),
            Some("hcl") => Some(ConfigFormat::Hcl),
            Some(other) => anyhow::bail!("-config-format must be json or hcl, not {other:?}"),
        };
        let mut sources = Vec::new();
        if self.dev {
            sources.push(AgentConfig::dev_defaults());
        }
        for f in &self.config_file {
            sources.push(config::read_config_file_as(f, format)?);
        }
        for d in &self.config_dir {
            sources.extend(config::read_config_dir_as(d, format)?);
        }
        for (i, h) in self.hcl.iter().enumerate() {
            sources.push(config::parse_config(&format!("-hcl #{}", i + 1), h, ConfigFormat::Hcl)?);
        }
        sources.push(self.as_source()?);
        Ok(sources)
    }
}

fn init_logging(level: &str, json: bool) {
    let level = match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "warn" | "warning" => "warn",
        "err" | "error" => "error",
        _ => "info",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},hyper=info,h2=info")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn banner(cfg: &AgentConfig, node: &muster_core::node::Config, running: &agent::Running) -> String {
    let list = |a: &[std::net::SocketAddr]| a.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    format!(
        "==> Starting muster agent...\n\
         \x20             Version: 'muster v{} (Consul API {})'\n\
         \x20             Node ID: '{}'\n\
         \x20           Node name: '{}'\n\
         \x20          Datacenter: '{}' (Segment: '<all>')\n\
         \x20              Server: {} (Bootstrap: {})\n\
         \x20         Client Addr: [{}] (HTTP: {}, DNS: {})\n\
         \x20        Cluster Addr: {} (LAN: {}, WAN: {})\n\
         \x20   Gossip Encryption: false\n\n\
         ==> Log data will now stream in as it occurs:\n",
        env!("CARGO_PKG_VERSION"),
        muster_core::node::CONSUL_API_VERSION,
        node.node.id,
        node.node.name,
        cfg.datacenter,
        cfg.server,
        node.bootstrap,
        cfg.client_addrs().join(" "),
        list(&running.http),
        list(&running.dns),
        node.node.address,
        cfg.ports.serf_lan,
        cfg.ports.serf_wan,
    )
}

pub fn run(args: AgentArgs) -> anyhow::Result<()> {
    let (cfg, warnings) = config::load(&args.sources()?)?;
    init_logging(&cfg.log_level, cfg.log_json);
    if !args.dev && cfg.data_dir.is_none() {
        anyhow::bail!("data_dir cannot be empty: give -data-dir or data_dir in a config file (or use -dev)");
    }
    // As Consul does, the agent makes its data dir and the pid file's folder when missing.
    for dir in cfg.data_dir.as_deref().into_iter().chain(cfg.pid_file.as_ref().and_then(|p| p.parent())) {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
    }
    let node_cfg = agent::node_config(&cfg, env!("CARGO_PKG_VERSION"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let dev = args.dev;
    let reloader: Reloader = {
        let (cfg, version) = (cfg.clone(), env!("CARGO_PKG_VERSION"));
        Arc::new(move || {
            let (new, _) =
                config::load(&args.sources().map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
            agent::reload_request(&cfg, &new, version).map_err(|e| e.to_string())
        })
    };
    rt.block_on(async move {
        let running = agent::start(&cfg, node_cfg.clone(), dev, Some(reloader.clone())).await?;
        eprint!("{}", banner(&cfg, &node_cfg, &running));
        for w in warnings {
            tracing::warn!("{w}");
        }
        if let Some(p) = &cfg.pid_file {
            std::fs::write(p, std::process::id().to_string())
                .with_context(|| format!("writing pid file {}", p.display()))?;
        }
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
        let reloading = {
            let handle = running.handle.clone();
            tokio::spawn(async move {
                while hangup.recv().await.is_some() {
                    tracing::info!("caught hangup, reloading the config files");
                    let outcome = match reloader() {
                        Ok(req) => handle.call(req).await.map_err(|e| e.to_string()).and_then(|r| {
                            if r.status == 200 {
                                Ok(())
                            } else {
                                Err(format!("{:?}", r.body))
                            }
                        }),
                        Err(e) => Err(e),
                    };
                    match outcome {
                        Ok(()) => tracing::info!("config reloaded"),
                        Err(e) => {
                            tracing::error!(error = %e, "config reload failed; the running config stands")
                        }
                    }
                }
            })
        };
        let handle = running.handle.clone();
        let stopper = tokio::spawn(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("caught interrupt, shutting down"),
                _ = term.recv() => tracing::info!("caught terminate, shutting down"),
            }
            handle.shutdown();
        });
        let result = running.wait().await;
        stopper.abort();
        reloading.abort();
        if let Some(p) = &cfg.pid_file {
            let _ = std::fs::remove_file(p);
        }
        result?;
        tracing::info!("agent stopped");
        Ok(())
    })
}
