//! The client-side CLI commands (`members`, `join`, `leave`, `force-leave`,
//! `event`, `kv`, `catalog`, `services`, `info`, `operator`, `keygen`, `keyring`,
//! `version`) and what they share.
//!
//! Owns: the command-line shape of each command (clap `Args`), the HTTP flags
//! every agent-facing command accepts, and Consul's output formats. Each
//! format is a pure function from the agent's JSON to text so it can be tested
//! without an agent; the async `run` functions only fetch, render and print.
//!
//! Never does: talk to anything but the agent's HTTP API, or write to stdout
//! anything other than the command's result (diagnostics and errors go to
//! stderr through `main`).

pub mod catalog;
pub mod gossip;
pub mod info;
pub mod keygen;
pub mod keyring;
pub mod kv;
pub mod members;
pub mod operator;
pub mod services;

use std::io::{self, Read as _, Write as _};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::client::Client;

/// Every command except `agent`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Lists the members of a cluster
    Members(members::MembersArgs),
    /// Tell the local agent to join a cluster
    Join(gossip::JoinArgs),
    /// Gracefully leaves the cluster and shuts down the local agent
    Leave(gossip::LeaveArgs),
    /// Triggers the agent to reload configuration files
    Reload(gossip::ReloadArgs),
    /// Forces a member of the cluster to enter the "left" state
    ForceLeave(gossip::ForceLeaveArgs),
    /// Fire a new event
    Event(gossip::EventArgs),
    /// Interact with the key-value store
    Kv {
        #[command(subcommand)]
        command: kv::KvCommand,
    },
    /// Interact with the catalog
    Catalog {
        #[command(subcommand)]
        command: catalog::CatalogCommand,
    },
    /// Interact with services registered on the local agent
    Services {
        #[command(subcommand)]
        command: services::ServicesCommand,
    },
    /// Provides debugging information for operators
    Info(info::InfoArgs),
    /// Provides cluster-level tools for operators
    Operator {
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Generates a new encryption key
    Keygen,
    /// Manages gossip layer encryption keys
    Keyring(keyring::KeyringArgs),
    /// Prints the muster version
    Version,
}

/// Runs one client command. An `Err` is the complete message for stderr.
pub async fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Members(args) => members::run(args).await,
        Command::Reload(args) => gossip::reload(args).await,
        Command::Join(args) => gossip::join(args).await,
        Command::Leave(args) => gossip::leave(args).await,
        Command::ForceLeave(args) => gossip::force_leave(args).await,
        Command::Event(args) => gossip::event(args).await,
        Command::Kv { command } => kv::run(command).await.map(|()| ExitCode::SUCCESS),
        Command::Catalog { command } => catalog::run(command).await.map(|()| ExitCode::SUCCESS),
        Command::Services { command } => services::run(command).await.map(|()| ExitCode::SUCCESS),
        Command::Info(args) => info::run(args).await.map(|()| ExitCode::SUCCESS),
        Command::Operator { command } => operator::run(command).await.map(|()| ExitCode::SUCCESS),
        Command::Keygen => keygen::run().map(|()| ExitCode::SUCCESS),
        Command::Keyring(args) => keyring::run(args).await,
        Command::Version => emit(info::version_text().as_bytes()).map(|()| ExitCode::SUCCESS),
    }
}

const DEFAULT_HTTP_ADDR: &str = "http://127.0.0.1:8500";

/// The HTTP flags Consul puts on every command that talks to an agent.
#[derive(Args, Debug, Clone, Default)]
pub struct HttpArgs {
    /// Address of the agent's HTTP API: http://host:port, host:port or
    /// unix:///path [env: CONSUL_HTTP_ADDR, then MUSTER_HTTP_ADDR]
    /// [default: http://127.0.0.1:8500]
    #[arg(long, value_name = "ADDR")]
    pub http_addr: Option<String>,
    /// ACL token sent as X-Consul-Token
    #[arg(long, env = "CONSUL_HTTP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the ACL token (used when -token is not given)
    #[arg(long, env = "CONSUL_HTTP_TOKEN_FILE", value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// Datacenter to query (default: the agent's)
    #[arg(long)]
    pub datacenter: Option<String>,
    /// Allow any server, not only the leader, to answer reads
    #[arg(long)]
    pub stale: bool,
}

impl HttpArgs {
    pub fn client(&self) -> anyhow::Result<Client> {
        let addr = resolve_http_addr(self.http_addr.clone(), |name| std::env::var(name).ok());
        let token = match (&self.token, &self.token_file) {
            (Some(token), _) => Some(token.clone()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("Error reading token file {}", path.display()))?
                    .trim()
                    .to_string(),
            ),
            (None, None) => None,
        };
        Client::new(&addr, token, self.datacenter.clone(), self.stale)
            .context("Error connecting to Consul agent")
    }
}

/// Flag first, then Consul's variable (so existing setups work unchanged),
/// then muster's own, then the default. An empty variable counts as unset.
fn resolve_http_addr(flag: Option<String>, env: impl Fn(&str) -> Option<String>) -> String {
    flag.or_else(|| env("CONSUL_HTTP_ADDR").filter(|v| !v.is_empty()))
        .or_else(|| env("MUSTER_HTTP_ADDR").filter(|v| !v.is_empty()))
        .unwrap_or_else(|| DEFAULT_HTTP_ADDR.to_string())
}

/// Writes a command's result to stdout. A closed pipe (`muster kv get
/// -recurse | head`) is the reader's choice, not an error.
pub fn emit(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("Error writing output"),
    }
}

/// Consul's data-source convention for command arguments: `@path` reads a
/// file, a lone `-` reads stdin, anything else (including `-x`) is literal.
pub fn load_data_source(arg: &str) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("Failed to read file {path}"));
    }
    if arg == "-" {
        let mut buf = Vec::new();
        io::stdin().read_to_end(&mut buf).context("Failed to read stdin")?;
        return Ok(buf);
    }
    Ok(arg.as_bytes().to_vec())
}

/// clap value parser for `key=value` flags (`-meta`, `-node-meta`).
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got {s:?}"))
}

pub fn parse_json(body: &[u8]) -> anyhow::Result<Value> {
    serde_json::from_slice(body).context("Error decoding agent response")
}

/// A string field of a JSON object, `""` when absent or not a string.
pub fn str_field<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

/// An unsigned field of a JSON object, `0` when absent.
pub fn u64_field(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Looks up an object key ignoring ASCII case, as the agent's decoder does,
/// so hand-written files may say `Name`, `name` or `NAME`.
pub fn field_ci<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.as_object()?.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v)
}

/// A JSON object's entries sorted by key: the agent keeps Consul's field order, while
/// listings print sorted.
pub fn sorted(v: Option<&Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<(&String, &Value)> = v.and_then(Value::as_object).into_iter().flatten().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

/// `k1=v1<joiner>k2=v2` for a JSON object of strings, sorted by key.
pub fn join_map(v: Option<&Value>, joiner: &str) -> String {
    sorted(v)
        .into_iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_string)))
        .collect::<Vec<_>>()
        .join(joiner)
}

/// Lays rows out in left-aligned columns, each padded to its widest cell plus
/// `gap` spaces; the last column is not padded and trailing blanks are
/// trimmed. Consul's tables use a gap of 2, its key/value listings 6.
pub fn align(rows: &[Vec<String>], gap: usize) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| rows.iter().filter_map(|r| r.get(c)).map(|s| s.chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (c, cell) in row.iter().enumerate() {
            line.push_str(cell);
            if c + 1 < row.len() {
                let pad = widths[c] - cell.chars().count() + gap;
                line.push_str(&" ".repeat(pad));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn http_addr_precedence() {
        let env = |consul: Option<&str>, muster: Option<&str>| {
            let (c, m) = (consul.map(String::from), muster.map(String::from));
            move |name: &str| match name {
                "CONSUL_HTTP_ADDR" => c.clone(),
                "MUSTER_HTTP_ADDR" => m.clone(),
                _ => None,
            }
        };
        assert_eq!(resolve_http_addr(None, env(None, None)), DEFAULT_HTTP_ADDR);
        assert_eq!(resolve_http_addr(None, env(None, Some("m:1"))), "m:1");
        assert_eq!(resolve_http_addr(None, env(Some("c:1"), Some("m:1"))), "c:1");
        assert_eq!(resolve_http_addr(None, env(Some(""), Some("m:1"))), "m:1");
        assert_eq!(resolve_http_addr(Some("f:1".into()), env(Some("c:1"), None)), "f:1");
    }

    #[test]
    fn align_pads_all_but_last_column() {
        let rows = vec![
            vec!["Node".into(), "Address".into(), "Status".into()],
            vec!["a-long-name".into(), "1.2.3.4:8301".into(), "alive".into()],
            vec!["b".into(), "".into(), "".into()],
        ];
        assert_eq!(
            align(&rows, 2),
            "Node         Address       Status\n\
             a-long-name  1.2.3.4:8301  alive\n\
             b\n"
        );
    }

    #[test]
    fn key_value_helpers() {
        assert_eq!(parse_key_value("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_key_value("novalue").is_err());
        let v = json!({"Name": "web", "tags": {"b": "2", "a": "1"}});
        assert_eq!(field_ci(&v, "name"), Some(&json!("web")));
        assert_eq!(join_map(v.get("tags"), ", "), "a=1, b=2");
        assert_eq!(join_map(None, ","), "");
        assert_eq!(load_data_source("-x").unwrap(), b"-x");
    }
}
