//! Three servers and three client agents, real processes on their own loopback addresses,
//! as users deploy them: a service registered on a client reaches the catalog and DNS of
//! every agent; its HTTP check failing takes it out of DNS and `?passing` everywhere and
//! wakes a blocking read held on another client; kill -9 of a client turns its
//! `serfHealth` critical and its services leave DNS; restarted on its data dir it comes back
//! with its services; a catalog entry deleted behind its back is restored by anti-entropy;
//! and kill -9 of the server a client uses leaves the client's next requests working. A
//! client over its `limits.rpc_rate` answers 429 rather than queueing.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;
use muster_tests::{free_port, health_endpoint, wait_until, Agent};
use serde_json::Value;

const PATIENCE: Duration = Duration::from_secs(30);

struct Cluster {
    servers: Vec<Agent>,
    clients: Vec<Agent>,
}

impl Cluster {
    fn start(dir: &std::path::Path) -> Cluster {
        let serf = free_port().to_string();
        let common = |i: usize, name: &str| -> Vec<String> {
            let data = dir.join(name).to_str().expect("UTF-8 temp dir").to_string();
            [
                "-data-dir",
                &data,
                "-node",
                name,
                "-bind",
                &format!("127.0.0.{}", 60 + i),
                "-serf-lan-port",
                &serf,
                "-retry-join",
                "127.0.0.60",
                "-retry-interval",
                "1s",
                "-hcl",
                "ae_interval = \"3s\"",
                "-hcl",
                "sync_coordinate_interval_min = \"1s\"",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        };
        let mut servers: Vec<Agent> = (0..3)
            .map(|i| {
                let mut args = common(i, &format!("s{i}"));
                args.extend(["-server", "-bootstrap-expect", "3"].map(String::from));
                Agent::launch(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        for s in &mut servers {
            s.wait_ready();
        }
        let clients = (0..3)
            .map(|i| {
                Agent::start(&common(3 + i, &format!("c{i}")).iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        Cluster { servers, clients }
    }

    fn all(&self) -> impl Iterator<Item = &Agent> {
        self.servers.iter().chain(&self.clients)
    }
}

fn srv_answers(a: &Agent, name: &str) -> usize {
    a.dig(name, RecordType::SRV, None).answers().len()
}

fn passing(a: &Agent, service: &str) -> usize {
    let r = a.get(&format!("/v1/health/service/{service}?passing"));
    r.json().as_array().map_or(0, Vec::len)
}

#[test]
fn services_on_client_agents_reach_every_agent_and_follow_their_health() {
    let dir = muster_tests::bench::TempDir::new("clients");
    let mut c = Cluster::start(&dir.0);
    // Every agent sees six members; clients say they are clients.
    wait_until("six alive members everywhere", PATIENCE, || {
        c.all().all(|a| {
            let v = a.get("/v1/agent/members").json();
            v.as_array().is_some_and(|m| m.iter().filter(|x| x["Status"] == 1).count() == 6)
        })
    });
    // Every agent's coordinate reaches the catalog; ?near=_agent puts the asking node first.
    wait_until("six coordinates in the catalog", PATIENCE, || {
        c.clients[1].get("/v1/coordinate/nodes").json().as_array().is_some_and(|a| a.len() == 6)
    });
    let one = c.clients[1].get("/v1/coordinate/node/c1");
    assert_eq!(one.json()[0]["Node"], "c1");
    assert!(one.index() > 0);
    assert_eq!(c.clients[1].get("/v1/coordinate/node/nobody").status, 404);
    let nodes = c.clients[1].get("/v1/catalog/nodes?near=_agent").json();
    assert_eq!(nodes[0]["Node"], "c1", "the agent itself is nearest: {nodes}");
    // WAN coordinates come from WAN probes (one every 5 s per server).
    wait_until("three servers' WAN coordinates", PATIENCE, || {
        let dcs = c.clients[0].get("/v1/coordinate/datacenters").json();
        assert_eq!((&dcs[0]["Datacenter"], &dcs[0]["AreaID"]), (&"dc1".into(), &"WAN".into()), "{dcs}");
        dcs[0]["Coordinates"].as_array().map(Vec::len) == Some(3)
    });
    let me = c.clients[0].get("/v1/agent/self").json();
    assert_eq!(me["Config"]["Server"], false);
    assert_eq!(me["Stats"]["consul"]["server"], "false");
    assert_eq!(me["Stats"]["consul"]["known_servers"], "3");
    let members = c.clients[0].cli(&["members"]);
    let text = String::from_utf8_lossy(&members.stdout).to_string();
    assert_eq!(text.matches(" client ").count(), 3, "{text}");
    assert_eq!(text.matches(" server ").count(), 3, "{text}");

    // A service with an HTTP check, registered on client 0, as the README does with curl.
    let code = Arc::new(AtomicU16::new(200));
    let port = health_endpoint(code.clone());
    let def = format!(
        r#"{{"Name": "web", "Port": {port}, "Check": {{"HTTP": "http://127.0.0.1:{port}/", "Interval": "1s"}}}}"#
    );
    assert_eq!(c.clients[0].put("/v1/agent/service/register", def.as_bytes()).status, 200);
    wait_until("web in DNS and ?passing on every agent", PATIENCE, || {
        c.all().all(|a| srv_answers(a, "web.service.consul") == 1 && passing(a, "web") == 1)
    });
    // KV through a client, read back through another.
    assert_eq!(c.clients[1].put("/v1/kv/via-client", b"yes").text(), "true");
    assert_eq!(c.clients[2].get("/v1/kv/via-client?raw&consistent").text(), "yes");

    // A blocking read held on client 1 wakes when the check fails.
    let index = c.clients[1].get("/v1/health/service/web?passing").index();
    let watcher = {
        let url = c.clients[1].url(&format!("/v1/health/service/web?passing&index={index}&wait=60s"));
        std::thread::spawn(move || {
            let r = muster_tests::http("GET", &url, None).expect("blocking read");
            (Instant::now(), r.json().as_array().map_or(99, Vec::len))
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    code.store(503, Ordering::SeqCst);
    let failed_at = Instant::now();
    let mut critical_on_servers = None;
    wait_until("web critical at the servers", PATIENCE, || {
        let done = passing(&c.servers[0], "web") == 0;
        if done {
            critical_on_servers = Some(Instant::now());
        }
        done
    });
    let (woke_at, seen) = watcher.join().expect("watcher");
    assert_eq!(seen, 0, "the woken read shows no passing instance");
    let critical = critical_on_servers.expect("seen critical");
    println!(
        "check failed → critical at the servers {:?}; blocking read on another client woke {:?} after that",
        critical - failed_at,
        woke_at.saturating_duration_since(critical)
    );
    assert!(woke_at < critical + Duration::from_secs(1), "the blocking read woke within 1 s of the change");
    wait_until("web gone from DNS and ?passing everywhere", PATIENCE, || {
        c.all().all(|a| srv_answers(a, "web.service.consul") == 0 && passing(a, "web") == 0)
    });
    code.store(200, Ordering::SeqCst);

    // Delete client 0's service behind its back: anti-entropy puts it back.
    let gone = br#"{"Node": "c0", "ServiceID": "web"}"#;
    assert_eq!(c.servers[1].put("/v1/catalog/deregister", gone).text(), "true");
    assert_eq!(c.servers[1].get("/v1/catalog/service/web").json(), Value::Array(vec![]));
    wait_until("anti-entropy restores web", PATIENCE, || {
        c.servers[2].get("/v1/catalog/service/web").json().as_array().is_some_and(|a| a.len() == 1)
    });

    // A service on client 2 with no check of its own lives and dies with the client.
    assert_eq!(c.clients[2].put("/v1/agent/service/register", br#"{"Name": "api", "Port": 81}"#).status, 200);
    wait_until("api in DNS everywhere", PATIENCE, || {
        c.all().all(|a| srv_answers(a, "api.service.consul") == 1)
    });
    c.clients[2].kill();
    let up: Vec<&Agent> = c.servers.iter().chain(&c.clients[..2]).collect();
    let took = wait_until("api gone from DNS on every live agent", PATIENCE, || {
        up.iter().all(|a| srv_answers(a, "api.service.consul") == 0)
    });
    println!("kill -9 of a client → its service out of DNS everywhere: {took:?}");
    let checks = c.servers[0].get("/v1/health/node/c2").json();
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    assert_eq!(checks[0]["Status"], "critical");
    // Restarted on its data dir, it comes back with its service without re-registering.
    c.clients[2].restart();
    wait_until("api back in DNS everywhere", PATIENCE, || {
        c.all().all(|a| srv_answers(a, "api.service.consul") == 1)
    });
    let services = c.clients[2].get("/v1/agent/services").json();
    assert!(services.get("api").is_some(), "restored from the data dir: {services}");

    // Kill every server but one, one at a time: clients keep answering through the rest.
    for dead in 0..2 {
        c.servers[dead].kill();
        for client in &c.clients {
            let r = client.get("/v1/catalog/services?stale");
            let ok = r.status == 200 || {
                // A call to the server that just died may fail once; the next goes elsewhere.
                client.get("/v1/catalog/services?stale").status == 200
            };
            assert!(ok, "a client answers with server {dead} dead: {} {}", r.status, r.text());
        }
    }
}

#[test]
fn a_client_over_its_rpc_rate_answers_429_and_recovers() {
    let dir = muster_tests::bench::TempDir::new("rpc-rate");
    let serf = free_port().to_string();
    let agent = |name: &str, addr: &str, extra: &[&str]| {
        let data = dir.0.join(name).to_str().expect("UTF-8 temp dir").to_string();
        let mut args = vec!["-data-dir", &data, "-node", name, "-bind", addr, "-serf-lan-port", &serf];
        args.extend(["-retry-join", "127.0.0.80", "-retry-interval", "1s"]);
        args.extend_from_slice(extra);
        Agent::start(&args)
    };
    let limits = ["-hcl", "limits {\n  rpc_rate = 1\n  rpc_max_burst = 3\n}"];
    let server = agent("s", "127.0.0.80", &["-server", "-bootstrap", limits[0], limits[1]]);
    server.put("/v1/kv/k", b"v");
    let client = agent("c", "127.0.0.81", &limits);
    wait_until("the client reaches the server", PATIENCE, || client.get("/v1/kv/k?raw").body == b"v");
    // A burst of reads through the client: past the bucket they are refused, not queued.
    let statuses: Vec<u16> = (0..10).map(|_| client.get("/v1/kv/k?raw").status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let refused = client.get("/v1/kv/k?raw");
    assert_eq!((refused.status, refused.text().trim()), (429, "RPC rate limit exceeded"));
    // A server's own requests are not limited, and the client's bucket refills.
    assert!((0..10).all(|_| server.get("/v1/kv/k?raw").status == 200));
    // Three seconds refill the whole burst, room for the client's own syncs too.
    std::thread::sleep(Duration::from_millis(3500));
    assert_eq!(client.get("/v1/kv/k?raw").body, b"v");
}
