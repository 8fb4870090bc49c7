//! `muster info` (the agent's `Stats` from `GET /v1/agent/self`) and
//! `muster version` (no agent involved).
//!
//! Never does: interpret the stats; sections and keys are printed as the
//! agent reports them, only sorted.

use anyhow::Context as _;
use clap::Args;
use serde_json::Value;

use super::{emit, parse_json, sorted, HttpArgs};

/// The Consul release whose HTTP API and CLI muster follows.
const CONSUL_API_VERSION: &str = "1.22.0";

#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(args: InfoArgs) -> anyhow::Result<()> {
    const ERR: &str = "Error querying agent";
    let resp = args.http.client()?.get("/v1/agent/self", &[]).await.context(ERR)?;
    let this = parse_json(&resp.body).context(ERR)?;
    emit(stats_text(&this).as_bytes())
}

/// `section:` lines followed by tab-indented `key = value` lines, sections and
/// keys sorted, from the `Stats` object of an `/v1/agent/self` answer.
pub fn stats_text(agent_self: &Value) -> String {
    let mut out = String::new();
    for (section, stats) in sorted(agent_self.get("Stats")) {
        out.push_str(section);
        out.push_str(":\n");
        for (key, value) in sorted(Some(stats)) {
            // Stats values are strings; anything else is shown as JSON.
            let value = value.as_str().map_or_else(|| value.to_string(), str::to_string);
            out.push_str(&format!("\t{key} = {value}\n"));
        }
    }
    out
}

/// `muster version`: muster's own version, then the Consul API it speaks and
/// the gossip protocol range, worded as Consul words it.
pub fn version_text() -> String {
    format!(
        "Muster v{}\n\
         Consul API compatibility: v{CONSUL_API_VERSION}\n\
         Protocol 2 spoken by default, understands 2 to 3 \
         (agent will automatically use protocol >2 when speaking to compatible agents)\n",
        env!("CARGO_PKG_VERSION")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stats_sorted_by_section_and_key() {
        let agent_self = json!({"Config": {}, "Stats": {
            "raft": {"state": "Leader", "applied_index": "12"},
            "agent": {"services": "1", "checks": "0"},
            "build": {"prerelease": "", "version": "0.1.0"}}});
        assert_eq!(
            stats_text(&agent_self),
            "agent:\n\tchecks = 0\n\tservices = 1\n\
             build:\n\tprerelease = \n\tversion = 0.1.0\n\
             raft:\n\tapplied_index = 12\n\tstate = Leader\n"
        );
        assert_eq!(stats_text(&json!({})), "");
    }

    #[test]
    fn version_lines() {
        let text = version_text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], format!("Muster v{}", env!("CARGO_PKG_VERSION")));
        assert_eq!(lines[1], "Consul API compatibility: v1.22.0");
        assert_eq!(
            lines[2],
            "Protocol 2 spoken by default, understands 2 to 3 \
             (agent will automatically use protocol >2 when speaking to compatible agents)"
        );
    }
}
