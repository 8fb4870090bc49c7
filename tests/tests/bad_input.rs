//! Bad input gets a Consul-style error (status + plain-text reason) and loses nothing: the
//! agent keeps serving and keeps its data.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use muster_tests::Agent;

fn still_serving(a: &Agent) {
    assert_eq!(a.get("/v1/kv/sentinel?raw").body, b"kept", "data survives bad input");
    assert_eq!(a.dig("test-node.node.consul", RecordType::A, None).answers().len(), 1);
}

#[test]
fn malformed_bodies_and_parameters_are_400_with_a_reason() {
    let a = Agent::dev(&[]);
    a.put("/v1/kv/sentinel", b"kept");
    let cases: &[(&str, &str, &[u8])] = &[
        ("PUT", "/v1/agent/service/register", b"{not json"),
        ("PUT", "/v1/agent/service/register", b""),
        ("PUT", "/v1/agent/service/register", br#"{"Name":"x","Port":"eighty"}"#),
        ("PUT", "/v1/agent/service/register", br#"{"Name":"x","Tags":"one"}"#),
        ("PUT", "/v1/agent/service/register", br#"{"Port":80}"#),
        ("PUT", "/v1/agent/service/register", br#"{"Name":"x","Check":{"Interval":"10s"}}"#),
        ("PUT", "/v1/agent/service/register", br#"{"Name":"x","Check":{"TTL":"ten seconds"}}"#),
        (
            "PUT",
            "/v1/agent/service/register",
            br#"{"Name":"x","Check":{"DockerContainerID":"c1","Interval":"5s"}}"#,
        ),
        ("PUT", "/v1/agent/check/register", br#"{"Name":"c","TTL":"10s","Status":"great"}"#),
        ("PUT", "/v1/catalog/register", br#"[1,2,3]"#),
        ("GET", "/v1/kv/x?index=abc", b""),
        ("GET", "/v1/kv/x?wait=forever", b""),
        ("GET", "/v1/kv/x?stale&consistent", b""),
        ("PUT", "/v1/kv/x?flags=-1", b""),
        ("PUT", "/v1/kv/x?cas=1&acquire=abc", b""),
        ("PUT", "/v1/kv/app/%2E%2E%2Fsecret", b""),
        ("PUT", "/v1/kv/%zz", b"v"),
        ("GET", "/v1/kv/a%2", b""),
        ("GET", "/v1/health/service/x?passing=maybe", b""),
        ("GET", "/v1/catalog/nodes?filter=Node%20%3D%3D", b""),
    ];
    for (method, path, body) in cases {
        let r = a.req(method, path, Some(body));
        assert_eq!(r.status, 400, "{method} {path} → {} {}", r.status, r.text());
        assert!(!r.text().trim().is_empty(), "{method} {path}: a reason is given");
        assert!(r.header("Content-Type").unwrap_or("").starts_with("text/plain"), "{method} {path}");
    }
    let r =
        a.req("PUT", "/v1/agent/check/register", Some(br#"{"Name":"c","TTL":"10s","ServiceID":"ghost"}"#));
    assert_eq!(r.status, 404);
    still_serving(&a);
}

#[test]
fn oversized_values_are_413_and_unknown_routes_404_or_405() {
    let a = Agent::dev(&[]);
    a.put("/v1/kv/sentinel", b"kept");
    let big = vec![b'x'; 512 * 1024 + 1];
    let r = a.put("/v1/kv/big", &big);
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(a.get("/v1/kv/big").status, 404, "nothing was written");
    assert_eq!(a.put("/v1/kv/justright", &big[..512 * 1024]).status, 200);
    let r = a.get("/v1/nope");
    assert_eq!(r.status, 404);
    assert!(r.text().contains("not a recognized HTTP API endpoint"));
    let r = a.req("DELETE", "/v1/catalog/nodes", None);
    assert_eq!(r.status, 405);
    assert_eq!(r.header("Allow"), Some("OPTIONS,GET"));
    let r = a.req("OPTIONS", "/v1/kv/x", None);
    assert_eq!((r.status, r.header("Allow")), (200, Some("OPTIONS,GET,PUT,POST,DELETE")));
    still_serving(&a);
}

#[test]
fn garbage_on_the_wire_does_not_hurt() {
    let a = Agent::dev(&[]);
    a.put("/v1/kv/sentinel", b"kept");
    // Raw garbage on the HTTP port.
    let mut s = TcpStream::connect(("127.0.0.1", a.http_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"\x00\x01\x02 NOT HTTP \r\n\r\n").unwrap();
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(buf.is_empty() || buf.starts_with(b"HTTP/1.1 400"), "{}", String::from_utf8_lossy(&buf));
    // Garbage DNS: a full header of junk gets FORMERR; a few bytes are dropped.
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut junk = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00];
    junk.extend_from_slice(b"\xff\xff\xff\xff garbage question");
    sock.send_to(&junk, ("127.0.0.1", a.dns_port)).unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("FORMERR answer");
    let m = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    sock.send_to(b"\x01\x02", ("127.0.0.1", a.dns_port)).unwrap();
    assert!(sock.recv(&mut buf).is_err(), "a runt packet gets no answer");
    // Garbage on DNS over TCP.
    let mut t = TcpStream::connect(("127.0.0.1", a.dns_port)).unwrap();
    t.write_all(&[0, 4, 1, 2, 3, 4]).unwrap();
    drop(t);
    still_serving(&a);
}

#[test]
fn the_server_port_refuses_a_huge_preamble_at_once_and_drops_silent_connections() {
    let rpc = muster_tests::free_port();
    let cfg = std::env::temp_dir().join(format!("muster-rpc-limits-{rpc}.json"));
    std::fs::write(&cfg, r#"{"limits": {"rpc_handshake_timeout": "2s"}}"#).unwrap();
    let a = Agent::dev(&["-server-port", &rpc.to_string(), "-config-file", cfg.to_str().unwrap()]);
    a.put("/v1/kv/sentinel", b"kept");
    let rss = muster_tests::bench::rss_kib(a.pid());
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", rpc)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        s
    };
    let closed_after = |mut s: TcpStream| {
        let started = std::time::Instant::now();
        let mut byte = [0u8; 1];
        let n = s.read(&mut byte).unwrap_or(0);
        assert_eq!(n, 0, "the server sends nothing on a connection that never named itself");
        started.elapsed()
    };
    // A preamble claiming 256 MiB, then 4 MiB of it: refused when the length arrives.
    let mut huge = connect();
    huge.write_all(b"MSTR\x01").unwrap();
    huge.write_all(&(256u32 << 20).to_be_bytes()).unwrap();
    let _ = huge.write_all(&vec![b'x'; 4 << 20]);
    assert!(closed_after(huge) < Duration::from_secs(3), "closed without waiting for the bytes");
    // A connection that says nothing, or only part of a preamble, is closed after the
    // handshake timeout (limits.rpc_handshake_timeout, 2 s here).
    let (silent, opened) = (connect(), std::time::Instant::now());
    let mut partial = connect();
    partial.write_all(b"MSTR\x01\x00\x00").unwrap();
    // One address holds at most 100 (limits.rpc_max_conns_per_client): the next is closed
    // at once.
    let crowd: Vec<TcpStream> = (0..98).map(|_| connect()).collect();
    assert!(closed_after(connect()) < Duration::from_secs(2), "the 101st connection is closed at once");
    drop(crowd);
    closed_after(silent);
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(1900) && waited < Duration::from_secs(5), "{waited:?}");
    assert!(closed_after(partial) < Duration::from_secs(5));
    let grew = muster_tests::bench::rss_kib(a.pid()).saturating_sub(rss);
    assert!(grew < 16 * 1024, "nothing claimed was reserved: RSS grew {grew} KiB");
    still_serving(&a);
    let _ = std::fs::remove_file(cfg);
}

#[test]
fn http_refuses_claimed_bodies_at_once_closes_stalled_connections_and_caps_each_client() {
    let cfg = std::env::temp_dir().join(format!("muster-limits-{}.json", std::process::id()));
    std::fs::write(&cfg, r#"{"limits": {"http_max_conns_per_client": 8}}"#).unwrap();
    let a = Agent::dev(&["-config-file", cfg.to_str().unwrap()]);
    a.put("/v1/kv/sentinel", b"kept");
    let connect = || {
        let s = TcpStream::connect(("127.0.0.1", a.http_port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s
    };
    let answer = |s: &mut TcpStream| {
        let mut buf = vec![0u8; 4096];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    };
    // A body claimed past the limit is refused before it is sent, and no 100 Continue.
    let mut s = connect();
    let started = std::time::Instant::now();
    s.write_all(
        b"PUT /v1/kv/big HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\nExpect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let text = answer(&mut s);
    assert!(text.starts_with("HTTP/1.1 413"), "{text}");
    assert!(text.contains("Request body(100000000 bytes) too large"), "{text}");
    assert!(started.elapsed() < Duration::from_secs(3));
    // Half a request line, then silence: closed after the header timeout (10 s).
    let mut half = connect();
    half.write_all(b"GET /v1/kv/sent").unwrap();
    let started = std::time::Instant::now();
    let text = answer(&mut half);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(8) && waited < Duration::from_secs(15), "{waited:?}: {text}");
    // Eight connections from one address are served; the ninth is closed at once, and a
    // place freed is taken again.
    let mut held: Vec<TcpStream> = (0..8).map(|_| connect()).collect();
    for s in &mut held {
        s.write_all(b"GET /v1/kv/sentinel?raw HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        assert!(answer(s).ends_with("kept"));
    }
    let mut ninth = connect();
    let _ = ninth.write_all(b"GET /v1/kv/sentinel?raw HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(answer(&mut ninth), "", "over the per-client limit");
    drop(held.pop());
    std::thread::sleep(Duration::from_millis(200));
    let mut again = connect();
    again.write_all(b"GET /v1/kv/sentinel?raw HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(answer(&mut again).ends_with("kept"));
    // The agent sees the closes a moment later; until then the address is at its limit.
    drop((held, again));
    std::thread::sleep(Duration::from_millis(300));
    still_serving(&a);
    let _ = std::fs::remove_file(cfg);
}
