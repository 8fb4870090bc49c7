//! KV over HTTP against a real dev agent: values, flags, CAS, listings, deletes, blocking.

use std::time::{Duration, Instant};

use base64::Engine;
use muster_tests::Agent;

fn b64(s: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[test]
fn put_get_raw_flags_and_entry_shape() {
    let a = Agent::dev(&[]);
    let r = a.put("/v1/kv/app/config?flags=42", b"hello");
    assert_eq!((r.status, r.text().trim()), (200, "true"));
    let r = a.get("/v1/kv/app/config");
    assert_eq!(r.status, 200);
    let e = &r.json()[0];
    assert_eq!(e["Key"], "app/config");
    assert_eq!(e["Value"], b64(b"hello"));
    assert_eq!(e["Flags"], 42);
    assert_eq!(e["LockIndex"], 0);
    assert!(e.get("Session").is_none(), "Session is omitted when unlocked");
    assert_eq!(r.index(), e["ModifyIndex"].as_u64().unwrap());
    assert_eq!(r.header("X-Consul-KnownLeader"), Some("true"));
    assert!(r.header("X-Consul-LastContact").is_some());
    let raw = a.get("/v1/kv/app/config?raw");
    assert_eq!(raw.body, b"hello");
    assert_eq!(raw.header("Content-Type"), Some("text/plain"));
    // binary values round-trip untouched; an empty value reads back as null
    a.put("/v1/kv/bin", &[0, 159, 146, 150, 255]);
    assert_eq!(a.get("/v1/kv/bin?raw").body, [0, 159, 146, 150, 255]);
    a.put("/v1/kv/empty", b"");
    assert!(a.get("/v1/kv/empty").json()[0]["Value"].is_null());
}

#[test]
fn missing_keys_are_404_with_index_and_listings_follow_consul() {
    let a = Agent::dev(&[]);
    let r = a.get("/v1/kv/nope");
    assert_eq!(r.status, 404);
    assert!(r.body.is_empty());
    assert!(r.index() >= 1, "X-Consul-Index is present and never 0 on a 404");
    for k in ["bar", "base/foo", "base/base/foo", "foo/", "foo/bar1", "foo1"] {
        assert_eq!(a.put(&format!("/v1/kv/{k}"), b"1").status, 200);
    }
    let keys = a.get("/v1/kv/base/?keys&separator=/").json();
    assert_eq!(keys, serde_json::json!(["base/base/", "base/foo"]));
    let all: Vec<String> = a
        .get("/v1/kv/foo?recurse")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["Key"].as_str().unwrap().into())
        .collect();
    assert_eq!(all, ["foo/", "foo/bar1", "foo1"], "prefix matching is plain string prefix, in key order");
    assert_eq!(a.get("/v1/kv/zzz?recurse").status, 404);
    assert_eq!(a.get("/v1/kv/zzz?keys").status, 404);
    assert_eq!(a.get("/v1/kv/").status, 400, "no key and no recurse: Missing key name");
}

#[test]
fn cas_and_deletes() {
    let a = Agent::dev(&[]);
    assert_eq!(a.put("/v1/kv/c?cas=0", b"1").text().trim(), "true");
    assert_eq!(a.put("/v1/kv/c?cas=0", b"2").text().trim(), "false", "cas=0 only creates");
    let idx = a.get("/v1/kv/c").json()[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(a.put(&format!("/v1/kv/c?cas={}", idx + 7), b"3").text().trim(), "false");
    assert_eq!(a.put(&format!("/v1/kv/c?cas={idx}"), b"3").text().trim(), "true");
    let idx = a.get("/v1/kv/c").json()[0]["ModifyIndex"].as_u64().unwrap();
    assert_eq!(a.req("DELETE", "/v1/kv/c?cas=1", None).text().trim(), "false");
    assert_eq!(a.req("DELETE", &format!("/v1/kv/c?cas={idx}"), None).text().trim(), "true");
    assert_eq!(a.get("/v1/kv/c").status, 404);
    assert_eq!(a.req("DELETE", "/v1/kv/missing?cas=5", None).text().trim(), "true");
    for k in ["t/a", "t/b", "u"] {
        a.put(&format!("/v1/kv/{k}"), b"x");
    }
    assert_eq!(a.req("DELETE", "/v1/kv/t?recurse", None).text().trim(), "true");
    assert_eq!(a.get("/v1/kv/t?recurse").status, 404);
    assert_eq!(a.get("/v1/kv/u").status, 200);
    assert_eq!(a.req("DELETE", "/v1/kv/?recurse", None).status, 200);
    assert_eq!(a.get("/v1/kv/u").status, 404, "DELETE ?recurse on the empty prefix wipes the store");
}

#[test]
fn blocking_query_returns_on_write_and_on_timeout() {
    let a = Agent::dev(&[]);
    a.put("/v1/kv/watched", b"v1");
    let idx = a.get("/v1/kv/watched").index();
    let url = format!("/v1/kv/watched?index={idx}&wait=20s");
    let started = Instant::now();
    let waiter = std::thread::scope(|s| {
        let h = s.spawn(|| a.get(&url));
        std::thread::sleep(Duration::from_millis(300));
        a.put("/v1/kv/unrelated", b"x");
        std::thread::sleep(Duration::from_millis(200));
        a.put("/v1/kv/watched", b"v2");
        h.join().unwrap()
    });
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(450), "it waited for the write ({took:?})");
    assert!(took < Duration::from_secs(10), "it returned on the write, not the timeout ({took:?})");
    assert!(waiter.index() > idx);
    assert_eq!(waiter.json()[0]["Value"], b64(b"v2"));

    let idx = waiter.index();
    let started = Instant::now();
    let r = a.get(&format!("/v1/kv/watched?index={idx}&wait=1s"));
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "wait 1s plus jitter: {took:?}"
    );
    assert_eq!(r.index(), idx, "a timed-out blocking query returns the unchanged index");
}

#[test]
fn blocking_on_missing_key_wakes_on_creation() {
    let a = Agent::dev(&[]);
    let idx = a.get("/v1/kv/later").index();
    let r = std::thread::scope(|s| {
        let h = s.spawn(|| a.get(&format!("/v1/kv/later?index={idx}&wait=20s")));
        std::thread::sleep(Duration::from_millis(200));
        a.put("/v1/kv/later", b"here");
        h.join().unwrap()
    });
    assert_eq!(r.status, 200);
    assert_eq!(r.json()[0]["Value"], b64(b"here"));
}

#[test]
fn large_answers_are_gzipped_when_asked() {
    use std::io::Read;
    let a = Agent::dev(&[]);
    for i in 0..60 {
        a.put(&format!("/v1/kv/z/{i:03}"), b"some value that repeats");
    }
    let resp = ureq::get(&a.url("/v1/kv/z/?recurse")).set("Accept-Encoding", "gzip").call().unwrap();
    assert_eq!(resp.header("Content-Encoding"), Some("gzip"));
    assert!(resp.header("X-Consul-Index").is_some(), "headers survive compression");
    let mut json = String::new();
    flate2::read::GzDecoder::new(resp.into_reader()).read_to_string(&mut json).unwrap();
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 60);
    let small = ureq::get(&a.url("/v1/status/leader")).set("Accept-Encoding", "gzip").call().unwrap();
    assert_eq!(small.header("Content-Encoding"), None, "small answers are sent as they are");
}
