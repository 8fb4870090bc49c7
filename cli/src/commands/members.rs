//! `muster members`: the cluster's gossip members as the local agent sees
//! them (`GET /v1/agent/members`), in Consul's table layout.
//!
//! Never does: membership changes (join/leave live elsewhere) or any query
//! but the one listing.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{anyhow, Context as _};
use clap::Args;
use regex_lite::Regex;
use serde_json::Value;

use super::{align, emit, parse_json, str_field, u64_field, HttpArgs};

#[derive(Args, Debug)]
pub struct MembersArgs {
    /// List the WAN pool (servers of all datacenters) instead of the LAN
    #[arg(long)]
    pub wan: bool,
    /// Print every member tag instead of the summary columns
    #[arg(long)]
    pub detailed: bool,
    /// Only list members whose status (alive, leaving, left, failed) matches
    /// this regular expression
    #[arg(long, default_value = ".*", value_name = "REGEX")]
    pub status: String,
    /// Filter expression passed to the agent
    #[arg(long)]
    pub filter: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(args: MembersArgs) -> anyhow::Result<ExitCode> {
    let status = Regex::new(&args.status).map_err(|e| anyhow!("Failed to compile status regexp: {e}"))?;
    let client = args.http.client()?;
    let mut query = Vec::new();
    if args.wan {
        query.push(("wan", "1"));
    }
    if let Some(filter) = &args.filter {
        query.push(("filter", filter.as_str()));
    }
    let resp = client.get("/v1/agent/members", &query).await.context("Error retrieving members")?;
    let members = parse_json(&resp.body).context("Error retrieving members")?;
    match members_table(&members, args.detailed, &status) {
        Some(table) => emit(table.as_bytes()).map(|()| ExitCode::SUCCESS),
        // Consul's convention: nothing matched is exit code 2, no output.
        None => Ok(ExitCode::from(2)),
    }
}

/// One member, with the derived values both layouts print.
struct Row<'a> {
    name: &'a str,
    address: String,
    status: &'static str,
    server: bool,
    /// The member's tags plus the `partition` and `segment` values shown,
    /// which Consul fills in for members that do not carry them.
    tags: BTreeMap<&'a str, String>,
}

/// Renders the members table, or `None` when no member's status matches
/// `status`. Members are ordered servers first, then by segment and name.
pub fn members_table(members: &Value, detailed: bool, status: &Regex) -> Option<String> {
    let mut rows: Vec<Row> = members
        .as_array()
        .into_iter()
        .flatten()
        .map(member_row)
        .filter(|r| status.is_match(r.status))
        .collect();
    if rows.is_empty() {
        return None;
    }
    rows.sort_by(|a, b| {
        (!a.server, &a.tags["segment"], a.name).cmp(&(!b.server, &b.tags["segment"], b.name))
    });

    let header: &[&str] = if detailed {
        &["Node", "Address", "Status", "Tags"]
    } else {
        &["Node", "Address", "Status", "Type", "Build", "Protocol", "DC", "Partition", "Segment"]
    };
    let mut table = vec![header.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in &rows {
        let mut line = vec![r.name.to_string(), r.address.clone(), r.status.to_string()];
        if detailed {
            let tags: Vec<String> = r.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
            line.push(tags.join(","));
        } else {
            let tag = |k: &str| r.tags.get(k).cloned().unwrap_or_default();
            let build = tag("build");
            // The build tag is `version:revision`; the table shows the version.
            let build = build.split(':').next().unwrap_or_default().to_string();
            line.extend([
                if r.server { "server" } else { "client" }.to_string(),
                build,
                tag("vsn"),
                tag("dc"),
                tag("partition"),
                tag("segment"),
            ]);
        }
        table.push(line);
    }
    Some(align(&table, 2))
}

fn member_row(m: &Value) -> Row<'_> {
    let mut tags: BTreeMap<&str, String> = m
        .get("Tags")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(k, v)| (k.as_str(), v.as_str().unwrap_or_default().to_string()))
        .collect();
    let server = tags.get("role").map(String::as_str) == Some("consul");
    let partition = tags.entry("partition").or_default();
    if partition.is_empty() {
        *partition = "default".to_string();
    }
    let segment = tags.entry("segment").or_default();
    if server {
        // Servers take part in every network segment.
        *segment = "<all>".to_string();
    } else if segment.is_empty() {
        *segment = "<default>".to_string();
    }
    let addr = str_field(m, "Addr");
    let port = u64_field(m, "Port");
    let address = if addr.contains(':') { format!("[{addr}]:{port}") } else { format!("{addr}:{port}") };
    Row { name: str_field(m, "Name"), address, status: status_name(u64_field(m, "Status")), server, tags }
}

/// Serf's member status numbers.
fn status_name(status: u64) -> &'static str {
    match status {
        0 => "none",
        1 => "alive",
        2 => "leaving",
        3 => "left",
        4 => "failed",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Value {
        json!([
            {"Name": "client-b", "Addr": "10.0.0.3", "Port": 8301, "Status": 4,
             "Tags": {"role": "node", "dc": "dc1", "vsn": "2", "build": "0.1.0:abc", "segment": ""}},
            {"Name": "server-1", "Addr": "10.0.0.1", "Port": 8301, "Status": 1,
             "Tags": {"role": "consul", "dc": "dc1", "vsn": "2", "build": "0.1.0:abc", "port": "8300"}},
            {"Name": "client-a", "Addr": "::1", "Port": 8301, "Status": 1,
             "Tags": {"role": "node", "dc": "dc1", "vsn": "2", "build": "0.1.0"}}
        ])
    }

    #[test]
    fn standard_table() {
        let all = Regex::new(".*").unwrap();
        assert_eq!(
            members_table(&sample(), false, &all).unwrap(),
            "Node      Address        Status  Type    Build  Protocol  DC   Partition  Segment\n\
             server-1  10.0.0.1:8301  alive   server  0.1.0  2         dc1  default    <all>\n\
             client-a  [::1]:8301     alive   client  0.1.0  2         dc1  default    <default>\n\
             client-b  10.0.0.3:8301  failed  client  0.1.0  2         dc1  default    <default>\n"
        );
    }

    #[test]
    fn detailed_table_lists_sorted_tags() {
        let alive = Regex::new("alive").unwrap();
        assert_eq!(
            members_table(&sample(), true, &alive).unwrap(),
            "Node      Address        Status  Tags\n\
             server-1  10.0.0.1:8301  alive   build=0.1.0:abc,dc=dc1,partition=default,port=8300,role=consul,segment=<all>,vsn=2\n\
             client-a  [::1]:8301     alive   build=0.1.0,dc=dc1,partition=default,role=node,segment=<default>,vsn=2\n"
        );
    }

    #[test]
    fn no_match_is_none() {
        assert!(members_table(&sample(), false, &Regex::new("^left$").unwrap()).is_none());
        assert!(members_table(&json!([]), false, &Regex::new(".*").unwrap()).is_none());
    }
}
