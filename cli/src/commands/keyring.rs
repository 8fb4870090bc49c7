//! `muster keyring`: lists and rotates the gossip encryption keys of every member through
//! the local agent (`/v1/operator/keyring`), in Consul's output layout.
//!
//! Never does: touch keys itself; the agent runs each operation as a query every member
//! answers.

use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};

use super::{emit, parse_json, str_field, u64_field, HttpArgs};

#[derive(Args, Debug)]
pub struct KeyringArgs {
    /// List the keys installed on the cluster's members
    #[arg(long)]
    pub list: bool,
    /// Install a new key on every member
    #[arg(long, value_name = "KEY")]
    pub install: Option<String>,
    /// Make an installed key the one every member encrypts with
    #[arg(long = "use", value_name = "KEY")]
    pub use_key: Option<String>,
    /// Remove a key from every member (not the one in use)
    #[arg(long, value_name = "KEY")]
    pub remove: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(args: KeyringArgs) -> anyhow::Result<ExitCode> {
    let chosen = [args.list, args.install.is_some(), args.use_key.is_some(), args.remove.is_some()];
    if chosen.iter().filter(|c| **c).count() != 1 {
        bail!("Exactly one of -list, -install, -use, or -remove must be provided");
    }
    let client = args.http.client()?;
    let path = "/v1/operator/keyring";
    let body = |k: &str| json!({ "Key": k }).to_string().into_bytes();
    if args.list {
        emit(b"==> Gathering installed encryption keys...\n")?;
        let resp = client.get(path, &[]).await.context("error")?;
        emit(keyring_text(&parse_json(&resp.body)?).as_bytes())?;
    } else if let Some(k) = &args.install {
        emit(b"==> Installing new gossip encryption key...\n")?;
        client.send_json("POST", path, body(k)).await.context("error")?;
    } else if let Some(k) = &args.use_key {
        emit(b"==> Changing primary gossip encryption key...\n")?;
        client.put(path, &[], body(k)).await.context("error")?;
    } else if let Some(k) = &args.remove {
        emit(b"==> Removing gossip encryption key...\n")?;
        client.send_json("DELETE", path, body(k)).await.context("error")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Each pool, then each key with how many of the pool's members hold it.
pub fn keyring_text(pools: &Value) -> String {
    let mut out = String::new();
    for p in pools.as_array().into_iter().flatten() {
        let pool = if p["WAN"].as_bool() == Some(true) {
            "WAN".to_string()
        } else {
            format!("{} (LAN)", str_field(p, "Datacenter"))
        };
        let total = u64_field(p, "NumNodes");
        out.push_str(&format!("\n{pool}:\n"));
        for (key, count) in p["Keys"].as_object().into_iter().flatten() {
            out.push_str(&format!("  {key} [{}/{total}]\n", count.as_u64().unwrap_or(0)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_keys_per_pool_with_holder_counts() {
        let pools = json!([{"WAN": false, "Datacenter": "dc1", "Segment": "", "NumNodes": 3,
            "Keys": {"a2V5MQ==": 3, "a2V5Mg==": 1}, "PrimaryKeys": {"a2V5MQ==": 3}}]);
        assert_eq!(keyring_text(&pools), "\ndc1 (LAN):\n  a2V5MQ== [3/3]\n  a2V5Mg== [1/3]\n");
    }
}
