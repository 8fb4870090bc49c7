//! Gossip commands: `join`, `leave`, `force-leave` and `event`, each one call to the
//! local agent (`/v1/agent/join|leave|force-leave`, `/v1/event/fire`).
//!
//! Never does: decide membership itself; the agent's gossip does.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;

use super::{emit, parse_json, str_field, HttpArgs};
use crate::client::encode;

#[derive(Args, Debug)]
pub struct JoinArgs {
    /// Join the WAN pool (servers only)
    #[arg(long)]
    pub wan: bool,
    /// Addresses (`host[:port]`) of agents already in the cluster
    #[arg(required = true, value_name = "ADDRESS")]
    pub addresses: Vec<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn join(args: JoinArgs) -> anyhow::Result<ExitCode> {
    let client = args.http.client()?;
    let query: &[(&str, &str)] = if args.wan { &[("wan", "1")] } else { &[] };
    let mut joined = 0;
    for addr in &args.addresses {
        match client.put(&format!("/v1/agent/join/{}", encode(addr)), query, Vec::new()).await {
            Ok(_) => joined += 1,
            Err(e) => eprintln!("Error joining address '{addr}': {e}"),
        }
    }
    if joined == 0 {
        bail!("Failed to join any nodes.");
    }
    emit(format!("Successfully joined cluster by contacting {joined} nodes.\n").as_bytes())?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct LeaveArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn leave(args: LeaveArgs) -> anyhow::Result<ExitCode> {
    let client = args.http.client()?;
    client.put("/v1/agent/leave", &[], Vec::new()).await.context("Error leaving")?;
    emit(b"Graceful leave complete\n")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ReloadArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn reload(args: ReloadArgs) -> anyhow::Result<ExitCode> {
    let client = args.http.client()?;
    client.put("/v1/agent/reload", &[], Vec::new()).await.context("Error reloading")?;
    emit(b"Configuration reload triggered\n")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct ForceLeaveArgs {
    /// Also remove the member from the member list entirely
    #[arg(long)]
    pub prune: bool,
    /// Act on the WAN pool (member names are `node.dc`)
    #[arg(long)]
    pub wan: bool,
    /// The member to mark as left
    #[arg(value_name = "NODE")]
    pub node: String,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn force_leave(args: ForceLeaveArgs) -> anyhow::Result<ExitCode> {
    let client = args.http.client()?;
    let mut query = Vec::new();
    if args.prune {
        query.push(("prune", "1"));
    }
    if args.wan {
        query.push(("wan", "1"));
    }
    let path = format!("/v1/agent/force-leave/{}", encode(&args.node));
    client.put(&path, &query, Vec::new()).await.context("Error force leaving")?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Args, Debug)]
pub struct EventArgs {
    /// The event's name
    #[arg(long)]
    pub name: String,
    /// Regular expression on node names that should receive it
    #[arg(long, default_value = "")]
    pub node: String,
    /// Regular expression on service names that should receive it
    #[arg(long, default_value = "")]
    pub service: String,
    /// Regular expression on service tags (needs -service)
    #[arg(long, default_value = "")]
    pub tag: String,
    /// An optional payload
    #[arg(value_name = "PAYLOAD")]
    pub payload: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn event(args: EventArgs) -> anyhow::Result<ExitCode> {
    if args.name.is_empty() {
        bail!("Event name must be specified");
    }
    if !args.tag.is_empty() && args.service.is_empty() {
        bail!("Cannot provide tag filter without service filter.");
    }
    let client = args.http.client()?;
    let mut query = Vec::new();
    for (k, v) in [("node", &args.node), ("service", &args.service), ("tag", &args.tag)] {
        if !v.is_empty() {
            query.push((k, v.as_str()));
        }
    }
    let body = args.payload.unwrap_or_default().into_bytes();
    let path = format!("/v1/event/fire/{}", encode(&args.name));
    let resp = client.put(&path, &query, body).await.context("Error firing event")?;
    let event = parse_json(&resp.body).context("Error firing event")?;
    emit(format!("Event ID: {}\n", str_field(&event, "ID")).as_bytes())?;
    Ok(ExitCode::SUCCESS)
}
