//! Agent benchmark: `cargo bench -p muster-tests --bench agent`.
//!
//! Starts a release `muster agent -dev` on free loopback ports and measures, with a Rust
//! load generator: time from spawn to HTTP ready, KV PUT and GET throughput with 64
//! keep-alive clients, DNS SRV queries per second over UDP, and resident memory at idle and
//! with 100k keys. `MUSTER_BENCH_SECS` sets each load phase's length (default 5).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper_util::rt::TokioIo;
use muster_tests::bench::{percentile, rss_kib};
use muster_tests::{query_packet, Agent};

const CLIENTS: usize = 64;

/// Runs `CLIENTS` keep-alive HTTP/1.1 connections for `secs`, each sending requests made by
/// `make(client, n)`; returns (requests/s, p50, p99, p99.9).
async fn http_load(
    port: u16,
    secs: u64,
    make: impl Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
) -> (f64, Duration, Duration, Duration) {
    let make = Arc::new(make);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (make, done) = (make.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (mut send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            let mut lat = Vec::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                let resp = send.send_request(make(c, n)).await.expect("request");
                let status = resp.status();
                resp.into_body().collect().await.expect("body");
                assert!(status.is_success() || status == 404, "unexpected status {status}");
                lat.push(t.elapsed());
                n += 1;
            }
            done.fetch_add(n, Ordering::Relaxed);
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    all.sort();
    let pct = |p| percentile(&all, p);
    (done.load(Ordering::Relaxed) as f64 / secs as f64, pct(0.5), pct(0.99), pct(0.999))
}

fn put_req(key: String, value: &'static [u8]) -> Request<Full<Bytes>> {
    Request::put(format!("/v1/kv/{key}"))
        .header("host", "127.0.0.1")
        .body(Full::new(Bytes::from_static(value)))
        .expect("request")
}

async fn dns_load(port: u16, secs: u64) -> f64 {
    let packet = Arc::new(query_packet("bench.service.consul.", hickory_proto::rr::RecordType::SRV, None));
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (packet, done) = (packet.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            sock.connect(("127.0.0.1", port)).await.expect("connect");
            let mut buf = [0u8; 1500];
            while Instant::now() < deadline {
                sock.send(&packet).await.expect("send");
                if tokio::time::timeout(Duration::from_secs(1), sock.recv(&mut buf)).await.is_ok() {
                    done.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("dns task");
    }
    done.load(Ordering::Relaxed) as f64 / secs as f64
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --all-targets` probes benches; nothing to list
    }
    let secs: u64 = std::env::var("MUSTER_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut starts: Vec<Duration> = (0..5)
        .map(|_| {
            let t = Instant::now();
            let a = Agent::dev(&["-log-level", "warn"]);
            let took = t.elapsed();
            drop(a);
            took
        })
        .collect();
    starts.sort();
    let agent = Agent::dev(&["-log-level", "warn"]);
    let pid = agent.pid();
    std::thread::sleep(Duration::from_millis(500));
    let idle = rss_kib(pid);
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    let port = agent.http_port;
    let (put_rps, put_p50, put_p99, put_p999) = rt.block_on(http_load(port, secs, |c, n| {
        put_req(format!("bench/{c}/{}", n % 1000), b"0123456789abcdef")
    }));
    let (get_rps, get_p50, get_p99, get_p999) = rt.block_on(http_load(port, secs, |c, n| {
        Request::get(format!("/v1/kv/bench/{c}/{}", n % 1000))
            .header("host", "127.0.0.1")
            .body(Full::default())
            .expect("req")
    }));
    for i in 0..3 {
        let body = format!(r#"{{"Name":"bench","ID":"bench{i}","Port":{}}}"#, 9000 + i);
        assert_eq!(agent.put("/v1/agent/service/register", body.as_bytes()).status, 200);
    }
    let dns_qps = rt.block_on(dns_load(agent.dns_port, secs));
    rt.block_on(async {
        let mut tasks = Vec::new();
        for c in 0..CLIENTS {
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("hs");
                tokio::spawn(conn);
                for k in (c..100_000).step_by(CLIENTS) {
                    let r = send
                        .send_request(put_req(format!("fill/{k:06}"), b"0123456789abcdef"))
                        .await
                        .expect("put");
                    r.into_body().collect().await.expect("body");
                }
            }));
        }
        for t in tasks {
            t.await.expect("fill task");
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    let full = rss_kib(pid);
    println!("| measurement | result |");
    println!("|---|---|");
    println!("| start → HTTP ready (median of 5) | {:.0} ms |", starts[2].as_secs_f64() * 1e3);
    println!(
        "| KV PUT, {CLIENTS} keep-alive clients | {put_rps:.0} req/s (p50 {put_p50:?}, p99 {put_p99:?}, \
         p99.9 {put_p999:?}) |"
    );
    println!(
        "| KV GET, {CLIENTS} keep-alive clients | {get_rps:.0} req/s (p50 {get_p50:?}, p99 {get_p99:?}, \
         p99.9 {get_p999:?}) |"
    );
    println!("| DNS SRV over UDP, 16 clients | {dns_qps:.0} queries/s |");
    println!("| RSS idle | {:.1} MiB |", idle as f64 / 1024.0);
    println!("| RSS with 100k keys (16 B values) | {:.1} MiB |", full as f64 / 1024.0);
}
