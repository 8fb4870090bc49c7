//! A server with a data dir keeps every acknowledged write across `kill -9` and restart.

use muster_tests::{free_port, Agent};

#[test]
fn acknowledged_writes_survive_kill_9() {
    let dir = std::env::temp_dir().join(format!("muster-durable-{}", free_port()));
    let d = dir.to_str().unwrap().to_string();
    let args = ["-server", "-bootstrap", "-node", "durable", "-bind", "127.0.0.1", "-data-dir", &d];
    let node_id;
    {
        let a = Agent::start(&args);
        for i in 0..300 {
            let r = a.put(&format!("/v1/kv/k/{i:03}"), format!("v{i}").as_bytes());
            assert_eq!(r.text().trim(), "true");
        }
        a.put(
            "/v1/catalog/register",
            br#"{"Node":"ext","Address":"127.0.0.9","Service":{"Service":"db","Port":5432}}"#,
        );
        node_id = a.get("/v1/agent/self").json()["Config"]["NodeID"].clone();
        // Dropping the agent kills it with SIGKILL: no clean shutdown.
    }
    let b = Agent::start(&args);
    let keys = b.get("/v1/kv/k/?keys").json();
    assert_eq!(keys.as_array().unwrap().len(), 300, "every acknowledged write is back");
    assert_eq!(b.get("/v1/kv/k/299?raw").body, b"v299");
    assert_eq!(b.get("/v1/catalog/service/db").json()[0]["Node"], "ext");
    assert_eq!(
        b.get("/v1/agent/self").json()["Config"]["NodeID"],
        node_id,
        "the node ID is kept in the data dir"
    );
    assert_eq!(b.put("/v1/kv/after", b"restart").text().trim(), "true", "writes resume");
    drop(b);
    let c = Agent::start(&args);
    assert_eq!(c.get("/v1/kv/after?raw").body, b"restart");
    drop(c);
    let _ = std::fs::remove_dir_all(dir);
}
