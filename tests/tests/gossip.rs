//! Five real agents on their own loopback addresses form a cluster by gossip alone, with
//! gossip encryption on: members converge; an event fired on one reaches all; `kill -9` of
//! one shows it `failed` everywhere within the detection bound (and `serfHealth` goes
//! critical); a graceful `leave` shows `left`; `force-leave` turns the failed one `left`; the
//! keyring rotates on every member; an agent with the wrong key cannot join. And the gossip
//! endpoints refuse bad input while garbage on the gossip ports changes nothing.

use std::time::{Duration, Instant};

use muster_tests::{free_port, wait_until, Agent};
use serde_json::Value;

const KEY: &str = "pUqJrVyVRj5jsiYEkM/tFQYfWyJIv4s3XkvDwy7Cu5s=";
const NEW_KEY: &str = "9c2IjcJxLZ2nhcSg1yTIg6X5SlLSxbsvaMFzvfUuKq8=";
const WRONG_KEY: &str = "H7Uq2ZDCV4dOxm+jMsA9oqaeQsRZaOjUDBlm6VtTN6U=";
const PATIENCE: Duration = Duration::from_secs(30);

/// Lifeguard's longest suspicion at 5 members (6 × 4 s) plus a probe round, with slack for
/// a loaded machine; the measured detection time is printed.
const DETECTION_BOUND: Duration = Duration::from_secs(30);

fn start(i: usize, serf: &str, key: &str, dir: &std::path::Path) -> Agent {
    let ip = format!("127.0.0.{}", 40 + i);
    let data = dir.join(format!("a{i}"));
    let data = data.to_str().expect("UTF-8 temp dir").to_string();
    let node = format!("a{i}");
    let mut args = vec!["-server", "-bootstrap-expect", "5", "-data-dir", &data, "-node", &node];
    args.extend(["-bind", &ip, "-client", "127.0.0.1", "-serf-lan-port", serf, "-encrypt", key]);
    args.extend(["-retry-join", "127.0.0.40", "-retry-interval", "1s"]);
    Agent::launch(&args)
}

/// Each member's status as agent `a` sees it (name → Status number).
fn statuses(a: &Agent) -> Vec<(String, u64)> {
    let r = a.req("GET", "/v1/agent/members", None);
    let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let mut out: Vec<(String, u64)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| (m["Name"].as_str().unwrap_or("").to_string(), m["Status"].as_u64().unwrap_or(0)))
        .collect();
    out.sort();
    out
}

fn status_of(a: &Agent, node: &str) -> Option<u64> {
    statuses(a).into_iter().find(|(n, _)| n == node).map(|(_, s)| s)
}

#[test]
fn five_agents_gossip_detect_failure_leave_events_and_refuse_a_wrong_key() {
    let dir = std::env::temp_dir().join(format!("muster-gossip-{}", free_port()));
    let serf = free_port().to_string();
    let mut agents: Vec<Agent> = (0..5).map(|i| start(i, &serf, KEY, &dir)).collect();
    for a in &mut agents {
        a.wait_ready();
    }
    let all_alive = |a: &Agent| statuses(a).iter().filter(|(_, s)| *s == 1).count() == 5;
    wait_until("every agent sees five alive members", PATIENCE, || agents.iter().all(all_alive));
    let catalog = agents[0].req("GET", "/v1/catalog/nodes", None);
    let nodes: Value = serde_json::from_slice(&catalog.body).unwrap();
    assert_eq!(nodes.as_array().map(Vec::len), Some(5), "the leader registered every member: {nodes}");

    // An event fired on one agent reaches every agent.
    let fired = agents[2].cli(&["event", "-name", "deploy", "v42"]);
    assert!(fired.status.success(), "{}", String::from_utf8_lossy(&fired.stderr));
    let spread = wait_until("the event reaches all", PATIENCE, || {
        agents.iter().all(|a| {
            let r = a.req("GET", "/v1/event/list?name=deploy", None);
            let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
            v.as_array().is_some_and(|e| e.len() == 1 && e[0]["Payload"] == "djQy")
        })
    });
    eprintln!("event reached all 5 agents in {spread:?}");

    // Key rotation through the keyring: install, use, remove the old one; all five hold it.
    for step in [
        vec!["keyring", "-install", NEW_KEY],
        vec!["keyring", "-use", NEW_KEY],
        vec!["keyring", "-remove", KEY],
    ] {
        let out = agents[1].cli(&step);
        assert!(out.status.success(), "{step:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let listed = agents[3].cli(&["keyring", "-list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.contains(&format!("{NEW_KEY} [5/5]")) && !listed.contains(KEY), "{listed}");
    let refused = agents[1].cli(&["keyring", "-remove", NEW_KEY]);
    assert!(!refused.status.success(), "the key in use cannot be removed");

    // kill -9: failed everywhere, serfHealth critical in the catalog.
    agents[4].kill();
    let detected = wait_until("the killed agent is failed everywhere", DETECTION_BOUND, || {
        agents[..4].iter().all(|a| status_of(a, "a4") == Some(4))
    });
    eprintln!("kill -9 seen as failed by all survivors in {detected:?}");
    wait_until("serfHealth of the killed agent goes critical", PATIENCE, || {
        let r = agents[0].req("GET", "/v1/health/node/a4", None);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        v.as_array().into_iter().flatten().any(|c| c["CheckID"] == "serfHealth" && c["Status"] == "critical")
    });

    // Graceful leave: the agent exits 0 and is `left` everywhere.
    let left = agents[3].cli(&["leave"]);
    assert!(left.status.success(), "{}", String::from_utf8_lossy(&left.stderr));
    assert_eq!(String::from_utf8_lossy(&left.stdout).trim(), "Graceful leave complete");
    wait_until("the leaving agent exits", PATIENCE, || agents[3].exited());
    wait_until("the agent that left is `left` everywhere", PATIENCE, || {
        agents[..3].iter().all(|a| status_of(a, "a3") == Some(3))
    });

    // force-leave turns the failed one left; with -prune it is forgotten.
    let forced = agents[0].cli(&["force-leave", "a4"]);
    assert!(forced.status.success(), "{}", String::from_utf8_lossy(&forced.stderr));
    wait_until("force-leave spreads", PATIENCE, || agents[..3].iter().all(|a| status_of(a, "a4") == Some(3)));
    let unknown = agents[0].cli(&["force-leave", "nobody"]);
    assert!(!unknown.status.success());

    // The killed agent comes back on its data dir. Its `-encrypt` key was rotated away, but
    // the keyring it saved there still holds the pool's key, so it rejoins and refutes `left`.
    agents[4].restart();
    wait_until("the restarted agent is alive everywhere", PATIENCE, || {
        agents[..3].iter().all(|a| status_of(a, "a4") == Some(1))
    });

    // A stranger with the wrong key is refused, and nobody counts it as a member.
    let mut stranger = start(5, &serf, WRONG_KEY, &dir);
    std::thread::sleep(Duration::from_secs(3));
    let joined = stranger.cli(&["join", "127.0.0.40"]);
    assert!(
        !joined.status.success(),
        "a wrong-key agent joined: {}",
        String::from_utf8_lossy(&joined.stdout)
    );
    for a in &agents[..3] {
        assert_eq!(status_of(a, "a5"), None, "the stranger became a member");
    }
    assert!(statuses(&stranger).iter().all(|(n, _)| n == "a5"), "the stranger learned the members");
    assert!(agents[0].log_text().contains("gossip message dropped"), "refused packets are logged");
    stranger.kill();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gossip_endpoints_refuse_bad_input_and_garbage_on_the_ports_is_dropped() {
    let serf = free_port();
    let port = serf.to_string();
    let agent = Agent::dev(&["-serf-lan-port", &port]);
    let status = |method: &str, path: &str| agent.req(method, path, None).status;
    assert_eq!(status("GET", "/v1/operator/keyring"), 500, "encryption is off");
    assert_eq!(status("PUT", "/v1/event/fire/x?tag=a"), 400);
    assert_eq!(status("PUT", "/v1/event/fire/x?node=("), 400);
    assert_eq!(status("PUT", "/v1/agent/join/127.0.0.1:1"), 500);
    assert_eq!(status("PUT", "/v1/agent/force-leave/nobody"), 500);
    assert_eq!(status("GET", "/v1/agent/members?wan=1&segment=x"), 400);
    let big = vec![b'x'; 600];
    assert_eq!(agent.req("PUT", "/v1/event/fire/big", Some(&big)).status, 500, "over the event size limit");

    // Garbage datagrams and streams on the gossip port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [&b""[..], b"\xa7\x01\x00garbage", b"GET / HTTP/1.1\r\n\r\n", &[0xffu8; 1400][..]] {
        udp.send_to(junk, ("127.0.0.1", serf)).unwrap();
    }
    for junk in [&b"\x00\x00\x00\x05hello"[..], b"\xff\xff\xff\xffmore than allowed", b"junk"] {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", serf)).unwrap();
        use std::io::Write as _;
        let _ = s.write_all(junk);
    }
    // A flood of junk is counted, not logged line by line; streams that claim a large
    // frame and stall reserve nothing for it.
    // Virtual size: a claimed frame reserved up front is zero pages, not resident ones.
    let vm_kib = |pid: u32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmSize:")).unwrap().to_string();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let vm = vm_kib(agent.pid());
    for _ in 0..20 {
        for _ in 0..100 {
            udp.send_to(b"\xa7\x01\x00junk", ("127.0.0.1", serf)).unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let stalled: Vec<_> = (0..20)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", serf)).unwrap();
            use std::io::Write as _;
            s.write_all(&(60u32 << 20).to_be_bytes()).unwrap();
            s.write_all(&[0u8; 1024]).unwrap();
            s
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let grew = vm_kib(agent.pid()).saturating_sub(vm);
    // Well below the 1.2 GB claimed; room for a malloc arena or two (64 MiB each, virtual).
    assert!(grew < 512 * 1024, "claimed frames were not reserved: the agent grew by {grew} KiB");
    drop(stalled);
    assert_eq!(statuses(&agent), vec![("test-node".to_string(), 1)], "still alone and alive");
    let lines = agent.log_text().matches("gossip message dropped").count();
    assert!((1..=5).contains(&lines), "garbage is logged, at most once a second: {lines} lines");
    let me = agent.req("GET", "/v1/agent/self", None).json();
    let dropped: u64 = me["Stats"]["serf_lan"]["dropped"].as_str().unwrap().parse().unwrap();
    // Datagrams may be lost on a busy machine; what arrives is counted.
    assert!(dropped >= 200, "garbage is counted: {dropped}");

    // Blocking on the event list returns when the wait runs out, with the same index.
    let r = agent.req("GET", "/v1/event/list", None);
    let index = r.header("X-Consul-Index").expect("an index").to_string();
    let start = Instant::now();
    let r = agent.req("GET", &format!("/v1/event/list?index={index}&wait=1s"), None);
    assert!(start.elapsed() >= Duration::from_millis(900), "it blocked");
    assert_eq!(r.header("X-Consul-Index"), Some(index.as_str()));
}

#[test]
fn servers_of_two_datacenters_meet_in_the_wan_pool() {
    let dir = std::env::temp_dir().join(format!("muster-wan-{}", free_port()));
    let wan1 = free_port().to_string();
    let data = |n: &str| dir.join(n).to_str().expect("UTF-8").to_string();
    let (d1, d2) = (data("one"), data("two"));
    let (rpc1, rpc2) = (free_port().to_string(), free_port().to_string());
    let base = ["-server", "-bootstrap", "-bind", "127.0.0.1", "-client", "127.0.0.1"];
    let mut args1 = base.to_vec();
    args1.extend([
        "-data-dir",
        &d1,
        "-node",
        "one",
        "-datacenter",
        "east",
        "-serf-wan-port",
        &wan1,
        "-server-port",
        &rpc1,
    ]);
    let one = Agent::start(&args1);
    let join = format!("127.0.0.1:{wan1}");
    let mut args2 = base.to_vec();
    args2.extend([
        "-data-dir",
        &d2,
        "-node",
        "two",
        "-datacenter",
        "west",
        "-retry-join-wan",
        &join,
        "-server-port",
        &rpc2,
    ]);
    let two = Agent::start(&args2);
    let dcs = |a: &Agent| a.req("GET", "/v1/catalog/datacenters", None).json();
    wait_until("both datacenters are known on both sides", PATIENCE, || {
        dcs(&one) == serde_json::json!(["east", "west"]) && dcs(&two) == serde_json::json!(["west", "east"])
    });
    let wan = one.req("GET", "/v1/agent/members?wan=1", None).json();
    let mut names: Vec<&str> = wan.as_array().unwrap().iter().map(|m| m["Name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["one.east", "two.west"]);
    let _ = std::fs::remove_dir_all(&dir);
}
