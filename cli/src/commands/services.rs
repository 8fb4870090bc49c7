//! `muster services register|deregister`: manage services on the local
//! agent (`/v1/agent/service/*`) from JSON definition files or flags.
//!
//! Definitions are forwarded to the agent as written: the agent accepts any
//! key casing and the config-file snake_case names, so this module only reads
//! the name and ID it needs for messages. Never does: HCL definition files
//! (they are refused with a clear message), or catalog-level registration.

use anyhow::{anyhow, bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use super::{emit, field_ci, parse_key_value, HttpArgs};
use crate::client::encode;

#[derive(Subcommand, Debug)]
pub enum ServicesCommand {
    /// Register services with the local agent
    Register(RegisterArgs),
    /// Deregister services from the local agent
    Deregister(DeregisterArgs),
}

#[derive(Args, Debug)]
pub struct RegisterArgs {
    /// JSON files holding a `service` object or a `services` list
    pub files: Vec<String>,
    /// Service name (when not using files)
    #[arg(long)]
    pub name: Option<String>,
    /// Service ID (default: the name)
    #[arg(long)]
    pub id: Option<String>,
    #[arg(long)]
    pub address: Option<String>,
    #[arg(long)]
    pub port: Option<u16>,
    /// Tag (repeatable)
    #[arg(long = "tag")]
    pub tags: Vec<String>,
    /// Metadata (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub meta: Vec<(String, String)>,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct DeregisterArgs {
    /// JSON files whose services to deregister
    pub files: Vec<String>,
    /// ID of the service to deregister (when not using files)
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(command: ServicesCommand) -> anyhow::Result<()> {
    match command {
        ServicesCommand::Register(args) => register(args).await,
        ServicesCommand::Deregister(args) => deregister(args).await,
    }
}

async fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let definitions = if args.files.is_empty() {
        let Some(name) = &args.name else {
            bail!("Service registration requires at least one argument or flags.");
        };
        vec![flag_definition(&args, name)]
    } else {
        if args.name.is_some() || args.id.is_some() {
            bail!("Cannot specify both service files and -name or -id flags.");
        }
        definitions_from_files(&args.files)?
    };
    let client = args.http.client()?;
    for def in &definitions {
        let name = service_name(def);
        client
            .put("/v1/agent/service/register", &[], serde_json::to_vec(def)?)
            .await
            .with_context(|| format!("Error registering service {name:?}"))?;
        emit(format!("Registered service: {name}\n").as_bytes())?;
    }
    Ok(())
}

async fn deregister(args: DeregisterArgs) -> anyhow::Result<()> {
    let ids: Vec<String> = match (&args.id, args.files.is_empty()) {
        (Some(_), false) => bail!("Only one of -id or a service file may be given."),
        (Some(id), true) => vec![id.clone()],
        (None, true) => bail!("Deregistration requires a service file or the -id flag."),
        (None, false) => definitions_from_files(&args.files)?.iter().map(service_id).collect(),
    };
    let client = args.http.client()?;
    for id in &ids {
        let path = format!("/v1/agent/service/deregister/{}", encode(id));
        client
            .put(&path, &[], Vec::new())
            .await
            .with_context(|| format!("Error deregistering service {id:?}"))?;
        emit(format!("Deregistered service: {id}\n").as_bytes())?;
    }
    Ok(())
}

/// The register body built from `-name -id -address -port -tag -meta`.
fn flag_definition(args: &RegisterArgs, name: &str) -> Value {
    let mut def = Map::new();
    def.insert("Name".into(), json!(name));
    if let Some(id) = &args.id {
        def.insert("ID".into(), json!(id));
    }
    if let Some(address) = &args.address {
        def.insert("Address".into(), json!(address));
    }
    if let Some(port) = args.port {
        def.insert("Port".into(), json!(port));
    }
    if !args.tags.is_empty() {
        def.insert("Tags".into(), json!(args.tags));
    }
    if !args.meta.is_empty() {
        let meta: Map<String, Value> = args.meta.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        def.insert("Meta".into(), Value::Object(meta));
    }
    Value::Object(def)
}

fn definitions_from_files(files: &[String]) -> anyhow::Result<Vec<Value>> {
    let mut all = Vec::new();
    for file in files {
        if file.ends_with(".hcl") {
            bail!("Error reading {file}: HCL service files are not supported; use JSON");
        }
        let text = std::fs::read(file).with_context(|| format!("Error reading {file}"))?;
        let doc: Value = serde_json::from_slice(&text).map_err(|e| anyhow!("Error parsing {file}: {e}"))?;
        all.extend(definitions_in(&doc).map_err(|e| anyhow!("Error parsing {file}: {e}"))?);
    }
    Ok(all)
}

/// The service definitions of a config document: its `service` object and/or
/// the entries of its `services` list.
fn definitions_in(doc: &Value) -> Result<Vec<Value>, String> {
    let mut defs = Vec::new();
    if let Some(one) = field_ci(doc, "service") {
        if !one.is_object() {
            return Err("\"service\" must be an object".into());
        }
        defs.push(one.clone());
    }
    if let Some(many) = field_ci(doc, "services") {
        let list = many.as_array().ok_or("\"services\" must be a list")?;
        defs.extend(list.iter().cloned());
    }
    if defs.is_empty() {
        return Err("no \"service\" or \"services\" definition found".into());
    }
    Ok(defs)
}

fn service_name(def: &Value) -> String {
    field_ci(def, "name").and_then(Value::as_str).unwrap_or_default().to_string()
}

/// The agent defaults a service's ID to its name.
fn service_id(def: &Value) -> String {
    field_ci(def, "id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| service_name(def))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn definitions_from_service_and_services() {
        let doc = json!({"service": {"name": "web", "port": 80},
                         "services": [{"Name": "db", "ID": "db1"}, {"name": "cache"}]});
        let defs = definitions_in(&doc).unwrap();
        let ids: Vec<String> = defs.iter().map(service_id).collect();
        assert_eq!(ids, ["web", "db1", "cache"]);
        assert_eq!(service_name(&defs[1]), "db");
        assert!(definitions_in(&json!({"check": {}})).is_err());
        assert!(definitions_in(&json!({"services": {}})).is_err());
    }

    #[test]
    fn definition_from_flags() {
        let args = RegisterArgs {
            files: vec![],
            name: Some("web".into()),
            id: None,
            address: Some("10.0.0.1".into()),
            port: Some(8080),
            tags: vec!["a".into(), "b".into()],
            meta: vec![("env".into(), "prod".into())],
            http: HttpArgs::default(),
        };
        assert_eq!(
            flag_definition(&args, "web"),
            json!({"Name": "web", "Address": "10.0.0.1", "Port": 8080,
                   "Tags": ["a", "b"], "Meta": {"env": "prod"}})
        );
    }
}
