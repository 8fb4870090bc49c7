//! `muster operator raft list-peers | remove-peer`: the Raft configuration as
//! `/v1/operator/raft/configuration` reports it, and removing a server from it.
//!
//! Never does: change the configuration any other way than the API's DELETE.

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{align, emit, parse_json, str_field, HttpArgs};

#[derive(Subcommand, Debug)]
pub enum OperatorCommand {
    /// Inspect and change the Raft configuration
    Raft {
        #[command(subcommand)]
        command: RaftCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum RaftCommand {
    /// Display the current Raft peer configuration
    ListPeers(ListPeersArgs),
    /// Remove a Consul server from the Raft configuration
    RemovePeer(RemovePeerArgs),
}

#[derive(Args, Debug)]
pub struct ListPeersArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct RemovePeerArgs {
    /// The address (ip:port) of the server to remove
    #[arg(long)]
    pub address: Option<String>,
    /// The ID of the server to remove
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(command: OperatorCommand) -> anyhow::Result<()> {
    let OperatorCommand::Raft { command } = command;
    match command {
        RaftCommand::ListPeers(args) => {
            const ERR: &str = "Failed to retrieve raft configuration";
            let resp = args.http.client()?.get("/v1/operator/raft/configuration", &[]).await.context(ERR)?;
            emit(peers_table(&parse_json(&resp.body).context(ERR)?).as_bytes())
        }
        RaftCommand::RemovePeer(args) => {
            let (key, value) = match (&args.address, &args.id) {
                (Some(a), None) => ("address", a),
                (None, Some(i)) => ("id", i),
                _ => bail!("Exactly one of -address or -id is required"),
            };
            let client = args.http.client()?;
            client
                .delete("/v1/operator/raft/peer", &[(key, value)])
                .await
                .with_context(|| format!("Error removing peer with {key} \"{value}\""))?;
            emit(format!("Removed peer with {key} \"{value}\"\n").as_bytes())
        }
    }
}

/// Consul's `list-peers` table: one row per server, the leader's state first-class.
fn peers_table(config: &Value) -> String {
    let mut rows =
        vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"].map(String::from).to_vec()];
    for s in config.get("Servers").and_then(Value::as_array).into_iter().flatten() {
        let leader = s.get("Leader").and_then(Value::as_bool).unwrap_or(false);
        rows.push(vec![
            str_field(s, "Node").to_string(),
            str_field(s, "ID").to_string(),
            str_field(s, "Address").to_string(),
            if leader { "leader" } else { "follower" }.to_string(),
            s.get("Voter").and_then(Value::as_bool).unwrap_or(false).to_string(),
            str_field(s, "ProtocolVersion").to_string(),
        ]);
    }
    align(&rows, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_render_as_consul_lays_them_out() {
        let v: Value = serde_json::from_str(
            r#"{"Servers":[{"ID":"id-1","Node":"s1","Address":"127.0.0.1:8300","Leader":true,"ProtocolVersion":"3","Voter":true},
                {"ID":"id-2","Node":"s2","Address":"127.0.0.2:8300","Leader":false,"ProtocolVersion":"3","Voter":false}],"Index":0}"#,
        )
        .unwrap();
        let t = peers_table(&v);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("Node") && lines[0].contains("RaftProtocol"));
        assert!(lines[1].contains("s1") && lines[1].contains("leader") && lines[1].contains("true"));
        assert!(lines[2].contains("follower") && lines[2].contains("false"));
    }
}
