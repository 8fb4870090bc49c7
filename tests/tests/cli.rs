//! The CLI against a real agent, with Consul's command shapes and output.

use std::io::Write;

use muster_tests::{muster_bin, Agent};

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "stderr: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kv_commands_round_trip() {
    let a = Agent::dev(&[]);
    assert_eq!(ok(&a.cli(&["kv", "put", "app/name", "muster"])).trim(), "Success! Data written to: app/name");
    assert_eq!(ok(&a.cli(&["kv", "get", "app/name"])).trim(), "muster");
    ok(&a.cli(&["kv", "put", "-flags=7", "app/other", "x"]));
    assert_eq!(ok(&a.cli(&["kv", "get", "-recurse", "app/"])), "app/name:muster\napp/other:x\n");
    let detailed = ok(&a.cli(&["kv", "get", "-detailed", "app/other"]));
    assert!(detailed.contains("Flags") && detailed.contains('7'), "{detailed}");
    let missing = a.cli(&["kv", "get", "nope"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("No key exists at: nope"));
    let idx = a.get("/v1/kv/app/name").json()[0]["ModifyIndex"].as_u64().unwrap();
    let stale = a.cli(&["kv", "put", "-cas", &format!("-modify-index={}", idx + 1), "app/name", "y"]);
    assert_eq!(stale.status.code(), Some(1), "a stale CAS fails");
    ok(&a.cli(&["kv", "put", "-cas", &format!("-modify-index={idx}"), "app/name", "y"]));
    assert!(ok(&a.cli(&["kv", "delete", "-recurse", "app"])).contains("Success!"));
    assert_eq!(a.get("/v1/kv/app?recurse").status, 404);
}

#[test]
fn members_info_catalog_and_services() {
    let a = Agent::dev(&[]);
    let members = ok(&a.cli(&["members"]));
    let mut lines = members.lines();
    assert!(lines.next().unwrap().starts_with("Node"));
    let row = lines.next().unwrap();
    assert!(row.starts_with("test-node") && row.contains("alive") && row.contains("server"), "{row}");
    let info = ok(&a.cli(&["info"]));
    assert!(info.contains("consul:") && info.contains("leader = true"), "{info}");
    let dir = std::env::temp_dir().join(format!("muster-cli-{}", a.http_port));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("web.json");
    let mut f = std::fs::File::create(&file).unwrap();
    f.write_all(br#"{"service": {"name": "web", "id": "web-1", "port": 80, "tags": ["a"]}}"#).unwrap();
    ok(&a.cli(&["services", "register", file.to_str().unwrap()]));
    assert_eq!(ok(&a.cli(&["catalog", "services"])), "consul\nweb\n");
    assert!(ok(&a.cli(&["catalog", "nodes"])).contains("test-node"));
    ok(&a.cli(&["services", "deregister", "-id=web-1"]));
    assert_eq!(ok(&a.cli(&["catalog", "services"])), "consul\n");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn version_and_unreachable_agent() {
    let out = std::process::Command::new(muster_bin()).arg("version").output().unwrap();
    let text = ok(&out);
    assert!(text.starts_with("Muster v") && text.contains("1.22"), "{text}");
    let out = std::process::Command::new(muster_bin())
        .args(["members", "-http-addr=127.0.0.1:1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(!out.stderr.is_empty());
}
