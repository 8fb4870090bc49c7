//! Service registration, health checks of every kind, the catalog, health and DNS views,
//! against a real dev agent.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{RData, RecordType};
use muster_tests::{health_endpoint, Agent};
use serde_json::json;

fn srv_targets(a: &Agent, name: &str) -> Vec<(u16, String)> {
    let m = a.dig(name, RecordType::SRV, None);
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            Some(RData::SRV(s)) => Some((s.port(), s.target().to_ascii())),
            _ => None,
        })
        .collect()
}

#[test]
fn http_check_drives_health_and_dns() {
    let a = Agent::dev(&[]);
    let code = Arc::new(AtomicU16::new(200));
    let port = health_endpoint(code.clone());
    let body = json!({
        "Name": "web", "ID": "web1", "Port": 8080, "Tags": ["v1"],
        "Check": {"HTTP": format!("http://127.0.0.1:{port}/health"), "Interval": "1s", "Timeout": "1s"}
    });
    let r = a.put("/v1/agent/service/register", body.to_string().as_bytes());
    assert_eq!((r.status, r.body.len()), (200, 0), "{}", r.text());
    a.eventually("the HTTP check to pass", Duration::from_secs(10), || {
        a.get("/v1/health/service/web?passing").json().as_array().unwrap().len() == 1
    });
    let checks = a.get("/v1/health/checks/web").json();
    assert_eq!(checks[0]["CheckID"], "service:web1");
    assert_eq!(checks[0]["Type"], "http");
    assert!(checks[0]["Output"].as_str().unwrap().contains("200"), "{checks}");
    assert_eq!(srv_targets(&a, "web.service.consul"), [(8080, "test-node.node.dc1.consul.".to_string())]);
    let m = a.dig("web.service.consul", RecordType::SRV, None);
    assert!(m
        .additionals()
        .iter()
        .any(|r| matches!(r.data(), Some(RData::A(ip)) if ip.0 == std::net::Ipv4Addr::LOCALHOST)));

    code.store(503, Ordering::SeqCst);
    a.eventually("the failing check to hide the instance", Duration::from_secs(10), || {
        a.dig("web.service.consul", RecordType::SRV, None).response_code() == ResponseCode::NXDomain
    });
    assert_eq!(a.get("/v1/health/service/web?passing").json(), json!([]));
    assert_eq!(
        a.get("/v1/health/service/web").json().as_array().unwrap().len(),
        1,
        "critical instances still listed"
    );
    code.store(429, Ordering::SeqCst);
    a.eventually("429 to count as warning", Duration::from_secs(10), || {
        a.get("/v1/health/checks/web").json()[0]["Status"] == "warning"
    });
    assert_eq!(srv_targets(&a, "web.service.consul").len(), 1, "warning instances are still served");
}

#[test]
fn ttl_check_pass_expire_and_deregister() {
    let a = Agent::dev(&[]);
    let body = br#"{"name":"redis","id":"redis1","port":6379,"check":{"ttl":"2s"}}"#;
    assert_eq!(a.put("/v1/agent/service/register", body).status, 200);
    let check = &a.get("/v1/agent/checks").json()["service:redis1"];
    assert_eq!(check["Status"], "critical", "new checks start critical");
    // The demo's plain `curl URL` sends GET; it must work.
    assert_eq!(a.get("/v1/agent/check/pass/service:redis1?note=fine").status, 200);
    let state = a.get("/v1/health/state/passing").json();
    assert!(state
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "service:redis1" && c["Output"] == "fine"));
    a.eventually("the TTL to expire", Duration::from_secs(8), || {
        a.get("/v1/health/checks/redis").json()[0]["Status"] == "critical"
    });
    let out = a.get("/v1/health/checks/redis").json()[0]["Output"].as_str().unwrap().to_string();
    assert!(out.starts_with("TTL expired"), "{out}");
    assert_eq!(
        a.put("/v1/agent/check/update/service:redis1", br#"{"Status":"warning","Output":"slow"}"#).status,
        200
    );
    assert_eq!(a.get("/v1/health/checks/redis").json()[0]["Status"], "warning");
    assert_eq!(a.put("/v1/agent/check/update/service:redis1", br#"{"Status":"bogus"}"#).status, 400);
    assert_eq!(a.put("/v1/agent/check/pass/nope", b"").status, 404);
    assert_eq!(a.get("/v1/agent/service/deregister/redis1").status, 200);
    assert_eq!(a.get("/v1/agent/services").json(), json!({}));
    assert_eq!(a.get("/v1/agent/checks").json(), json!({}));
    assert_eq!(a.get("/v1/catalog/service/redis").json(), json!([]));
}

#[test]
fn tcp_and_script_checks_run_for_real() {
    let a = Agent::dev(&["-enable-script-checks"]);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let tcp_port = listener.local_addr().unwrap().port();
    let body = json!({"Name": "db", "Port": tcp_port, "Checks": [
        {"TCP": format!("127.0.0.1:{tcp_port}"), "Interval": "1s"},
        {"Args": ["sh", "-c", "echo warming up; exit 1"], "Interval": "1s"}
    ]});
    assert_eq!(a.put("/v1/agent/service/register", body.to_string().as_bytes()).status, 200);
    a.eventually("both probes to report", Duration::from_secs(10), || {
        let c = a.get("/v1/health/checks/db").json();
        c[0]["Status"] == "passing" && c[1]["Status"] == "warning"
    });
    let c = a.get("/v1/health/checks/db").json();
    assert_eq!(c[0]["CheckID"], "service:db:1");
    assert!(c[0]["Output"].as_str().unwrap().contains("Success"));
    assert!(c[1]["Output"].as_str().unwrap().contains("warming up"));
    drop(listener);
    a.eventually("the TCP check to fail once the port closes", Duration::from_secs(10), || {
        a.get("/v1/health/checks/db").json()[0]["Status"] == "critical"
    });
}

#[test]
fn scripts_are_refused_unless_enabled() {
    let a = Agent::dev(&[]);
    let body = br#"{"Name":"s","Check":{"Args":["true"],"Interval":"10s"}}"#;
    let r = a.put("/v1/agent/service/register", body);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("enable_script_checks"), "{}", r.text());
}

#[test]
fn catalog_register_external_service_and_node_views() {
    let a = Agent::dev(&[]);
    // The seed presentation's third-party registration, verbatim.
    let body = br#"{"Datacenter": "dc1", "Node": "google", "Address": "www.google.com", "Service": {"Service": "search", "Port": 80}}"#;
    let r = a.req("PUT", "/v1/catalog/register", Some(body));
    assert_eq!(r.text().trim(), "true");
    let nodes = a.get("/v1/catalog/nodes").json();
    let names: Vec<&str> = nodes.as_array().unwrap().iter().map(|n| n["Node"].as_str().unwrap()).collect();
    assert_eq!(names, ["google", "test-node"]);
    let services = a.get("/v1/catalog/services").json();
    assert_eq!(services, json!({"consul": [], "search": []}));
    let rows = a.get("/v1/catalog/service/search").json();
    assert_eq!(rows[0]["ServiceAddress"], "");
    assert_eq!(rows[0]["Address"], "www.google.com");
    assert_eq!(rows[0]["ServiceID"], "search");
    let node = a.get("/v1/catalog/node/google").json();
    assert_eq!(node["Services"]["search"]["Port"], 80);
    assert_eq!(a.get("/v1/catalog/node/nobody").text().trim(), "null");
    // A hostname address answers with a CNAME.
    let m = a.dig("search.service.consul", RecordType::A, None);
    assert!(matches!(m.answers()[0].data(), Some(RData::CNAME(c)) if c.0.to_ascii() == "www.google.com."));
    let dereg = a.put("/v1/catalog/deregister", br#"{"Node":"google"}"#);
    assert_eq!(dereg.text().trim(), "true");
    assert_eq!(a.get("/v1/catalog/service/search").json(), json!([]));
    assert_eq!(a.get("/v1/catalog/datacenters").json(), json!(["dc1"]));
}

#[test]
fn health_views_serf_health_and_filters() {
    let a = Agent::dev(&[]);
    let body = json!({"Name": "api", "ID": "api1", "Tags": ["prod"], "Meta": {"env": "prod"}, "Check": {"TTL": "30s"}});
    a.put("/v1/agent/service/register", body.to_string().as_bytes());
    a.put("/v1/agent/service/register", br#"{"Name":"api","ID":"api2","Tags":["dev"],"Meta":{"env":"dev"}}"#);
    let node_checks = a.get("/v1/health/node/test-node").json();
    assert_eq!(node_checks[0]["CheckID"], "serfHealth");
    assert_eq!(node_checks[0]["Status"], "passing");
    let any = a.get("/v1/health/state/any").json();
    assert_eq!(any.as_array().unwrap().len(), 2, "serfHealth + the TTL check");
    assert_eq!(a.get("/v1/health/state/critical").json().as_array().unwrap().len(), 1);
    let tagged = a.get("/v1/catalog/service/api?tag=prod").json();
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let filtered = a.get("/v1/health/service/api?filter=Service.Meta.env%20%3D%3D%20%22dev%22").json();
    assert_eq!(filtered.as_array().unwrap().len(), 1);
    assert_eq!(filtered[0]["Service"]["ID"], "api2");
    let agent_filtered = a.get("/v1/agent/services?filter=%22prod%22%20in%20Tags").json();
    assert_eq!(agent_filtered.as_object().unwrap().keys().collect::<Vec<_>>(), ["api1"]);
    let folded = a.get("/v1/catalog/services?filter=ServiceMeta.env%20%3D%3D%20%22prod%22").json();
    assert_eq!(folded, json!({"api": ["prod"]}));
    let r = a.get("/v1/health/service/api");
    assert_eq!(r.header("X-Consul-Effective-Consistency"), Some("leader"));
    assert_eq!(a.get("/v1/health/service/api?filter=Service.ID%20%3D%3D").status, 400);
}

#[test]
fn maintenance_modes_hide_instances() {
    let a = Agent::dev(&[]);
    a.put("/v1/agent/service/register", br#"{"Name":"m","Port":1,"Check":{"TTL":"60s","Status":"passing"}}"#);
    assert_eq!(srv_targets(&a, "m.service.consul").len(), 1);
    assert_eq!(a.put("/v1/agent/service/maintenance/m?enable=true&reason=deploy", b"").status, 200);
    assert_eq!(srv_targets(&a, "m.service.consul").len(), 0);
    let checks = a.get("/v1/agent/checks").json();
    assert_eq!(checks["_service_maintenance:m"]["Notes"], "deploy");
    a.put("/v1/agent/service/maintenance/m?enable=false", b"");
    assert_eq!(srv_targets(&a, "m.service.consul").len(), 1);
    assert_eq!(a.put("/v1/agent/maintenance?enable=true", b"").status, 200);
    assert_eq!(srv_targets(&a, "m.service.consul").len(), 0);
    assert_eq!(a.put("/v1/agent/maintenance", b"").status, 400, "enable is required");
    assert_eq!(a.put("/v1/agent/maintenance?enable=maybe", b"").status, 400);
}

#[test]
fn dns_forms_and_tcp() {
    let a = Agent::dev(&[]);
    a.put(
        "/v1/agent/service/register",
        br#"{"Name":"db","Tags":["primary"],"Port":5432,"Address":"127.0.0.2"}"#,
    );
    let m = a.dig("db.service.consul", RecordType::A, None);
    assert!(
        matches!(m.answers()[0].data(), Some(RData::A(ip)) if ip.0 == std::net::Ipv4Addr::new(127, 0, 0, 2))
    );
    assert_eq!(srv_targets(&a, "primary.db.service.consul").len(), 1);
    assert_eq!(srv_targets(&a, "_db._primary.service.consul").len(), 1);
    assert_eq!(srv_targets(&a, "_db._tcp.service.dc1.consul")[0].1, "7f000002.addr.dc1.consul.");
    assert_eq!(srv_targets(&a, "secondary.db.service.consul").len(), 0);
    let node = a.dig("test-node.node.consul", RecordType::A, None);
    assert_eq!(node.answers().len(), 1);
    let nx = a.dig("nothing.service.consul", RecordType::A, None);
    assert_eq!(nx.response_code(), ResponseCode::NXDomain);
    assert!(matches!(nx.name_servers()[0].data(), Some(RData::SOA(_))));
    let tcp = a.dig_tcp("db.service.consul", RecordType::SRV);
    assert_eq!(tcp.answers().len(), 1);
    assert!(tcp.authoritative());
}

#[test]
fn big_answers_are_truncated_over_udp_but_whole_over_tcp() {
    let a = Agent::dev(&[]);
    for i in 0..40 {
        let body = json!({"Node": format!("node-with-a-long-name-{i:02}"), "Address": format!("127.0.1.{i}"),
                          "Service": {"Service": "many", "Port": 1000 + i}});
        assert_eq!(a.put("/v1/catalog/register", body.to_string().as_bytes()).status, 200);
    }
    let udp = a.dig("many.service.consul", RecordType::SRV, Some(1232));
    assert!(udp.truncated(), "a 40-instance SRV answer cannot fit 1232 bytes");
    assert!(!udp.answers().is_empty());
    let tcp = a.dig_tcp("many.service.consul", RecordType::SRV);
    assert_eq!(tcp.answers().len(), 40);
    assert!(!tcp.truncated());
    let plain = a.dig("many.service.consul", RecordType::A, None);
    assert_eq!(plain.answers().len(), 3, "plain UDP answers are capped at udp_answer_limit (3)");
    let first: std::collections::BTreeSet<String> = (0..20)
        .map(|_| format!("{:?}", a.dig("many.service.consul", RecordType::A, None).answers()[0]))
        .collect();
    assert!(first.len() > 1, "answers are shuffled per query");
}

#[test]
fn seed_demo_registration_flow_as_curl_sends_it() {
    // `curl -H PUT URL -d @file` sends POST; `curl URL` sends GET. Both must work.
    let a = Agent::dev(&[]);
    let redis =
        br#"{"ID": "redis1", "Name": "redis", "Tags": ["master"], "Address": "127.0.0.1", "Port": 8000}"#;
    assert_eq!(a.req("POST", "/v1/agent/service/register", Some(redis)).status, 200);
    let health =
        br#"{"ID": "redis1", "Name": "redis", "Tags": ["master"], "Address": "127.0.0.1", "Port": 8000,
                      "Check": {"TTL": "30s"}}"#;
    assert_eq!(a.req("POST", "/v1/agent/service/register", Some(health)).status, 200);
    assert_eq!(a.get("/v1/agent/services").json()["redis1"]["Service"], "redis");
    assert_eq!(a.get("/v1/health/service/redis?passing").json(), json!([]));
    assert_eq!(a.get("/v1/agent/check/pass/service:redis1").status, 200);
    assert_eq!(a.get("/v1/health/service/redis?passing").json()[0]["Service"]["ID"], "redis1");
    assert_eq!(srv_targets(&a, "redis.service.consul"), [(8000, "7f000001.addr.dc1.consul.".to_string())]);
    assert_eq!(a.get("/v1/agent/service/deregister/redis1").status, 200);
    assert_eq!(a.get("/v1/agent/services").json(), json!({}));
}

#[test]
fn mesh_reads_and_peer_reads_are_empty_lists_and_node_filters_apply_to_services() {
    let a = Agent::dev(&[]);
    for (name, port) in [("web", 80), ("db", 5432)] {
        let def = json!({"Name": name, "Port": port});
        assert_eq!(a.put("/v1/agent/service/register", def.to_string().as_bytes()).status, 200);
    }
    for path in [
        "/v1/catalog/connect/web",
        "/v1/health/connect/web?passing",
        "/v1/health/ingress/web",
        "/v1/catalog/gateway-services/gw",
        "/v1/health/service/web?peer=elsewhere",
        "/v1/catalog/service/web?peer=elsewhere&merge-central-config",
    ] {
        let r = a.get(path);
        assert_eq!((r.status, r.json()), (200, json!([])), "{path}");
        assert!(r.index() > 0, "{path} carries X-Consul-Index");
    }
    assert_eq!(a.get("/v1/catalog/services?peer=elsewhere").json(), json!({}));
    assert_eq!(a.get("/v1/catalog/node/test-node?peer=elsewhere").json(), json!(null));
    let merged = a.get("/v1/health/service/web?merge-central-config");
    assert_eq!(merged.json().as_array().map(Vec::len), Some(1), "merge-central-config is accepted");
    // A node's filter keeps the node and filters its services.
    let node = a.get("/v1/catalog/node/test-node?filter=Port%20%3D%3D%205432").json();
    assert_eq!(node["Node"]["Node"], "test-node");
    let services: Vec<&String> = node["Services"].as_object().unwrap().keys().collect();
    assert_eq!(services, ["db"], "{node}");
}
