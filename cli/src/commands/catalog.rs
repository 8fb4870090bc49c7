//! `muster catalog datacenters|nodes|services`: read-only views of the
//! catalog (`/v1/catalog/*`) in Consul's layouts.
//!
//! Never does: catalog writes (register/deregister go through the agent, see
//! `services`).

use anyhow::{bail, Context as _};
use clap::{Args, Subcommand};
use serde_json::Value;

use super::{
    align, emit, join_map, load_data_source, parse_json, parse_key_value, sorted, str_field, HttpArgs,
};
use crate::client::encode;

#[derive(Subcommand, Debug)]
pub enum CatalogCommand {
    /// Lists all known datacenters
    Datacenters(DatacentersArgs),
    /// Lists all nodes in the given datacenter
    Nodes(NodesArgs),
    /// Lists all registered services in a datacenter
    Services(ServicesArgs),
}

#[derive(Args, Debug)]
pub struct DatacentersArgs {
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct NodesArgs {
    /// Only nodes providing this service
    #[arg(long)]
    pub service: Option<String>,
    /// Full node IDs, tagged addresses and metadata
    #[arg(long)]
    pub detailed: bool,
    /// Filter expression; `@file` or `-` read it from a file or stdin
    #[arg(long, allow_hyphen_values = true)]
    pub filter: Option<String>,
    /// Only nodes with this metadata (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub node_meta: Vec<(String, String)>,
    /// Sort by estimated round-trip time from this node (`_agent`: this agent)
    #[arg(long)]
    pub near: Option<String>,
    #[command(flatten)]
    pub http: HttpArgs,
}

#[derive(Args, Debug)]
pub struct ServicesArgs {
    /// Only services on this node
    #[arg(long)]
    pub node: Option<String>,
    /// Print each service's tags beside it
    #[arg(long)]
    pub tags: bool,
    /// Only services on nodes with this metadata (repeatable)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub node_meta: Vec<(String, String)>,
    #[command(flatten)]
    pub http: HttpArgs,
}

pub async fn run(command: CatalogCommand) -> anyhow::Result<()> {
    match command {
        CatalogCommand::Datacenters(args) => datacenters(args).await,
        CatalogCommand::Nodes(args) => nodes(args).await,
        CatalogCommand::Services(args) => services(args).await,
    }
}

/// `node-meta=k:v` query values, the API's spelling of a metadata filter.
fn node_meta_query(pairs: &[(String, String)]) -> Vec<String> {
    pairs.iter().map(|(k, v)| format!("{k}:{v}")).collect()
}

async fn datacenters(args: DatacentersArgs) -> anyhow::Result<()> {
    const ERR: &str = "Error listing datacenters";
    let resp = args.http.client()?.get("/v1/catalog/datacenters", &[]).await.context(ERR)?;
    let dcs = parse_json(&resp.body).context(ERR)?;
    let dcs: Vec<&str> = dcs.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    if dcs.is_empty() {
        bail!("No datacenters found");
    }
    emit(dcs.iter().flat_map(|dc| [*dc, "\n"]).collect::<String>().as_bytes())
}

async fn nodes(args: NodesArgs) -> anyhow::Result<()> {
    let client = args.http.client()?;
    let filter = match &args.filter {
        Some(f) => Some(
            load_data_source(f)
                .and_then(|bytes| Ok(String::from_utf8(bytes)?))
                .context("Could not process filter argument")?,
        ),
        None => None,
    };
    let meta = node_meta_query(&args.node_meta);
    let mut query: Vec<(&str, &str)> = meta.iter().map(|m| ("node-meta", m.as_str())).collect();
    if let Some(f) = &filter {
        query.push(("filter", f));
    }
    if let Some(near) = &args.near {
        query.push(("near", near));
    }
    let nodes = match &args.service {
        Some(service) => {
            const ERR: &str = "Error listing nodes for service";
            let path = format!("/v1/catalog/service/{}", encode(service));
            let resp = client.get(&path, &query).await.context(ERR)?;
            service_nodes_as_nodes(&parse_json(&resp.body).context(ERR)?)
        }
        None => {
            const ERR: &str = "Error listing nodes";
            let resp = client.get("/v1/catalog/nodes", &query).await.context(ERR)?;
            parse_json(&resp.body).context(ERR)?
        }
    };
    match nodes_table(&nodes, args.detailed) {
        Some(table) => emit(table.as_bytes()),
        None => {
            // Consul reports an empty result on stderr and still succeeds.
            eprintln!("No nodes match the given query - try expanding your search.");
            Ok(())
        }
    }
}

/// `catalog/service/:name` answers flattened ServiceNodes; the node table
/// wants Node objects, so rename the node-level fields.
fn service_nodes_as_nodes(service_nodes: &Value) -> Value {
    let nodes = service_nodes.as_array().into_iter().flatten().map(|sn| {
        let mut node = serde_json::Map::new();
        for (from, to) in [
            ("ID", "ID"),
            ("Node", "Node"),
            ("Address", "Address"),
            ("Datacenter", "Datacenter"),
            ("TaggedAddresses", "TaggedAddresses"),
            ("NodeMeta", "Meta"),
        ] {
            if let Some(v) = sn.get(from) {
                node.insert(to.to_string(), v.clone());
            }
        }
        Value::Object(node)
    });
    Value::Array(nodes.collect())
}

/// The `Node  ID  Address  DC` table (plus `TaggedAddresses  Meta` and full
/// IDs with `detailed`), or `None` for no nodes.
pub fn nodes_table(nodes: &Value, detailed: bool) -> Option<String> {
    let nodes = nodes.as_array().filter(|n| !n.is_empty())?;
    let mut header = vec!["Node", "ID", "Address", "DC"];
    if detailed {
        header.extend(["TaggedAddresses", "Meta"]);
    }
    let mut rows = vec![header.into_iter().map(String::from).collect::<Vec<_>>()];
    for n in nodes {
        let id = str_field(n, "ID");
        // The short form is the UUID's first group, as in Consul.
        let id = if detailed { id } else { id.split('-').next().unwrap_or_default() };
        let mut row = vec![
            str_field(n, "Node").to_string(),
            id.to_string(),
            str_field(n, "Address").to_string(),
            str_field(n, "Datacenter").to_string(),
        ];
        if detailed {
            row.push(join_map(n.get("TaggedAddresses"), ", "));
            row.push(join_map(n.get("Meta"), ", "));
        }
        rows.push(row);
    }
    Some(align(&rows, 2))
}

async fn services(args: ServicesArgs) -> anyhow::Result<()> {
    let client = args.http.client()?;
    let meta = node_meta_query(&args.node_meta);
    let query: Vec<(&str, &str)> = meta.iter().map(|m| ("node-meta", m.as_str())).collect();
    let services = match &args.node {
        Some(node) => {
            const ERR: &str = "Error listing services for node";
            let path = format!("/v1/catalog/node/{}", encode(node));
            let resp = client.get(&path, &query).await.context(ERR)?;
            node_services_by_name(&parse_json(&resp.body).context(ERR)?)
        }
        None => {
            const ERR: &str = "Error listing services";
            let resp = client.get("/v1/catalog/services", &query).await.context(ERR)?;
            parse_json(&resp.body).context(ERR)?
        }
    };
    match services_list(&services, args.tags) {
        Some(list) => emit(list.as_bytes()),
        None => {
            eprintln!("No services match the given query - try expanding your search.");
            Ok(())
        }
    }
}

/// Turns `catalog/node/:node` (`{"Node":…,"Services":{id: NodeService}}`, or
/// `null` for an unknown node) into the `{name: [tags]}` shape of
/// `catalog/services`, merging the tags of instances sharing a name.
fn node_services_by_name(node: &Value) -> Value {
    let mut by_name = serde_json::Map::new();
    for svc in node.get("Services").and_then(Value::as_object).into_iter().flat_map(|m| m.values()) {
        let tags =
            by_name.entry(str_field(svc, "Service").to_string()).or_insert_with(|| Value::Array(Vec::new()));
        if let (Value::Array(all), Some(new)) = (tags, svc.get("Tags").and_then(Value::as_array)) {
            all.extend(new.iter().cloned());
        }
    }
    Value::Object(by_name)
}

/// Service names one per line, sorted; with `tags`, each name beside its
/// sorted, comma-joined tags. `None` for no services.
pub fn services_list(services: &Value, tags: bool) -> Option<String> {
    let services = sorted(Some(services));
    if services.is_empty() {
        return None;
    }
    let rows: Vec<Vec<String>> = services
        .into_iter()
        .map(|(name, service_tags)| {
            if !tags {
                return vec![name.clone()];
            }
            let mut list: Vec<&str> =
                service_tags.as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            list.sort_unstable();
            list.dedup();
            vec![name.clone(), list.join(",")]
        })
        .collect();
    Some(align(&rows, 6))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nodes() -> Value {
        json!([
            {"ID": "1b662d97-8b5c-3cc2-0ac0-96f55ad423b5", "Node": "worker-01", "Address": "10.4.5.31",
             "Datacenter": "dc1", "TaggedAddresses": {"wan": "1.2.3.4", "lan": "10.4.5.31"},
             "Meta": {"consul-network-segment": ""}},
            {"ID": "", "Node": "ext", "Address": "10.0.0.9", "Datacenter": "dc1",
             "TaggedAddresses": null, "Meta": {}}
        ])
    }

    #[test]
    fn nodes_short_table() {
        assert_eq!(
            nodes_table(&nodes(), false).unwrap(),
            "Node       ID        Address    DC\n\
             worker-01  1b662d97  10.4.5.31  dc1\n\
             ext                  10.0.0.9   dc1\n"
        );
        assert!(nodes_table(&json!([]), false).is_none());
    }

    #[test]
    fn nodes_detailed_table() {
        let table = nodes_table(&nodes(), true).unwrap();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[0],
            "Node       ID                                    Address    DC   TaggedAddresses             Meta"
        );
        assert_eq!(
            lines[1],
            "worker-01  1b662d97-8b5c-3cc2-0ac0-96f55ad423b5  10.4.5.31  dc1  lan=10.4.5.31, wan=1.2.3.4  consul-network-segment="
        );
        assert_eq!(lines[2], "ext                                              10.0.0.9   dc1");
    }

    #[test]
    fn service_nodes_map_to_nodes() {
        let sn = json!([{"ID": "abc-1", "Node": "n1", "Address": "1.1.1.1", "Datacenter": "dc1",
                         "NodeMeta": {"k": "v"}, "ServiceName": "web"}]);
        let n = service_nodes_as_nodes(&sn);
        assert_eq!(
            n,
            json!([{"ID": "abc-1", "Node": "n1", "Address": "1.1.1.1",
                              "Datacenter": "dc1", "Meta": {"k": "v"}}])
        );
    }

    #[test]
    fn services_plain_and_tagged() {
        let s = json!({"web": ["v2", "prod", "v2"], "consul": [], "db": ["primary"]});
        assert_eq!(services_list(&s, false).unwrap(), "consul\ndb\nweb\n");
        assert_eq!(
            services_list(&s, true).unwrap(),
            "consul\n\
             db          primary\n\
             web         prod,v2\n"
        );
        assert!(services_list(&json!({}), true).is_none());
    }

    #[test]
    fn node_services_merge_by_name() {
        let node = json!({"Node": {}, "Services": {
            "web1": {"Service": "web", "Tags": ["a"]},
            "web2": {"Service": "web", "Tags": ["b"]},
            "db": {"Service": "db", "Tags": []}}});
        assert_eq!(node_services_by_name(&node), json!({"db": [], "web": ["a", "b"]}));
        assert_eq!(node_services_by_name(&Value::Null), json!({}));
    }
}
