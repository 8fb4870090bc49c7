//! Starting agents: config files and directories, unknown keys, `agent/self`, ports.

use std::process::Command;

use muster_tests::{free_port, muster_bin, Agent};

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("muster-cfg-{tag}-{}", free_port()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn config_file_services_and_checks_are_loaded() {
    let dir = temp_dir("ok");
    // The seed presentation's service file, plus a check with its own stanza.
    std::fs::write(
        dir.join("redis.json"),
        br#"{"service": {"name": "redis", "tags": ["master"], "address": "127.0.0.1", "port": 8000,
             "checks": [{"script": "exit 0", "interval": "10s"}]},
            "enable_local_script_checks": true}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("web.hcl"),
        b"check {\n  id = \"api\"\n  name = \"HTTP API\"\n  ttl = \"30s\"\n}\n",
    )
    .unwrap();
    std::fs::write(dir.join("ignored.txt"), b"not config").unwrap();
    let a = Agent::dev(&["-config-dir", dir.to_str().unwrap(), "-datacenter", "east"]);
    let services = a.get("/v1/agent/services").json();
    assert_eq!(services["redis"]["Tags"], serde_json::json!(["master"]));
    assert_eq!(services["redis"]["Datacenter"], "east");
    let checks = a.get("/v1/agent/checks").json();
    assert!(checks.get("service:redis").is_some() && checks.get("api").is_some(), "{checks}");
    a.eventually("the script check to pass", std::time::Duration::from_secs(15), || {
        a.get("/v1/agent/checks").json()["service:redis"]["Status"] == "passing"
    });
    let srv = || a.dig("redis.service.east.consul", hickory_proto::rr::RecordType::SRV, None).answers().len();
    assert_eq!(
        srv(),
        0,
        "the node-level TTL check `api` starts critical, which hides every service on the node"
    );
    assert_eq!(a.put("/v1/agent/check/pass/api", b"").status, 200);
    assert_eq!(srv(), 1);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn unknown_config_key_fails_naming_file_and_key() {
    let dir = temp_dir("bad");
    let file = dir.join("bad.json");
    std::fs::write(&file, br#"{"datacenter": "dc1", "ports": {"htttp": 1}}"#).unwrap();
    let out = Command::new(muster_bin())
        .args(["agent", "-dev", "-config-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("ports.htttp"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn agent_self_reports_consul_api_version_and_members() {
    let a = Agent::dev(&[]);
    let s = a.get("/v1/agent/self").json();
    assert_eq!(s["Config"]["Version"], "1.22.0");
    assert!(s["Config"]["MusterVersion"].is_string());
    assert_eq!(s["Config"]["NodeName"], "test-node");
    assert_eq!(s["Config"]["Server"], true);
    let keys: std::collections::BTreeSet<&str> = s.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(keys, ["Config", "Coord", "DebugConfig", "Member", "Meta", "Stats", "xDS"].into());
    assert_eq!(s["Stats"]["consul"]["leader_addr"], a.get("/v1/status/leader").json());
    assert_eq!(a.get("/v1/status/peers").json()[0], s["Stats"]["consul"]["leader_addr"]);
    let members = a.get("/v1/agent/members").json();
    assert_eq!(members[0]["Name"], "test-node");
    assert_eq!(members[0]["Status"], 1);
    assert_eq!(members[0]["Tags"]["role"], "consul");
    // -dev answers pretty JSON, as Consul's dev agent does.
    assert!(a.get("/v1/catalog/datacenters").text().ends_with("]\n"));
}

#[test]
fn disabled_listener_and_sigterm_shutdown() {
    let http = free_port();
    let log = std::env::temp_dir().join(format!("muster-term-{http}.log"));
    let mut child = Command::new(muster_bin())
        .args(["agent", "-dev", "-dns-port", "-1", "-http-port", &http.to_string()])
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{http}/v1/status/leader");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while ureq::get(&url).call().is_err() {
        assert!(std::time::Instant::now() < deadline, "agent never came up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = child.wait().unwrap();
    assert!(status.success(), "SIGTERM is a clean shutdown: {status:?}");
    let banner = std::fs::read_to_string(&log).unwrap();
    assert!(
        banner.contains(&format!("(HTTP: 127.0.0.1:{http}, DNS: )")),
        "a port of -1 opens no listener:\n{banner}"
    );
    let _ = std::fs::remove_file(log);
}

#[test]
fn reload_applies_added_changed_and_removed_config_services_and_keeps_api_ones() {
    let dir = temp_dir("reload");
    let file = dir.join("services.json");
    let write = |body: &str| std::fs::write(&file, body).unwrap();
    write(
        r#"{"services": [{"id": "a", "name": "alpha", "port": 1}, {"id": "b", "name": "beta", "port": 2}]}"#,
    );
    let a = Agent::dev(&["-config-dir", dir.to_str().unwrap()]);
    assert_eq!(a.put("/v1/agent/service/register", br#"{"Name": "api-made", "Port": 9}"#).status, 200);
    let ids = || {
        let v = a.get("/v1/agent/services").json();
        let mut ids: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        ids.sort();
        (ids, v)
    };
    assert_eq!(ids().0, ["a", "api-made", "b"]);
    // Through the HTTP API: b goes, a changes port, c arrives; the API's service stays.
    write(
        r#"{"services": [{"id": "a", "name": "alpha", "port": 11}, {"id": "c", "name": "gamma", "port": 3}]}"#,
    );
    assert_eq!(a.put("/v1/agent/reload", b"").status, 200);
    let (list, v) = ids();
    assert_eq!(list, ["a", "api-made", "c"]);
    assert_eq!(v["a"]["Port"], 11);
    // Through the CLI.
    write(r#"{"services": [{"id": "c", "name": "gamma", "port": 3}]}"#);
    let out = a.cli(&["reload"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Configuration reload triggered");
    assert_eq!(ids().0, ["api-made", "c"]);
    // By SIGHUP, as `kill -HUP` does.
    write(r#"{"services": [{"id": "d", "name": "delta", "port": 4}]}"#);
    let hup = Command::new("kill").args(["-HUP", &a.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    a.eventually("SIGHUP to reload", std::time::Duration::from_secs(10), || ids().0 == ["api-made", "d"]);
    // A bad file changes nothing and says why.
    write(r#"{"services": [{"id": "e", "port": 5}]}"#);
    let r = a.put("/v1/agent/reload", b"");
    assert_eq!(r.status, 500, "{}", r.text());
    assert!(r.text().contains("Missing service name"), "{}", r.text());
    assert_eq!(ids().0, ["api-made", "d"]);
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_client_agent_needs_a_data_dir_and_makes_it_and_the_pid_files_folder() {
    let out = Command::new(muster_bin()).args(["agent", "-node", "c", "-http-port", "-1"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("data_dir"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = temp_dir("client-dirs");
    let (data, pid) = (dir.join("deep/data"), dir.join("run/sub/muster.pid"));
    let args = [
        "-node",
        "c1",
        "-bind",
        "127.0.0.1",
        "-data-dir",
        data.to_str().unwrap(),
        "-pid-file",
        pid.to_str().unwrap(),
    ];
    let a = Agent::launch(&args);
    a.eventually("the pid file", std::time::Duration::from_secs(10), || pid.exists());
    assert!(data.join("node-id").exists(), "the data dir was made and holds the node ID");
    assert_eq!(a.get("/v1/agent/self").json()["Config"]["Server"], false);
    let r = a.get("/v1/kv/anything");
    assert_eq!((r.status, r.text()), (500, "No known Consul servers".to_string()));
    let _ = std::fs::remove_dir_all(dir);
}
