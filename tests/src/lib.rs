//! Harness for end-to-end tests: builds the real `muster` binary, starts agents on free
//! loopback ports, and speaks to them as clients do (HTTP, DNS over UDP and TCP, the CLI).
//!
//! Never reaches into the agent's internals: everything goes over its public interfaces.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};

/// The `muster` binary of the same profile as the running test, rebuilt once per test run
/// so a stale binary is never tested.
pub fn muster_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().expect("test executable path");
        // target/<profile>/deps/<test> → target/<profile>
        let profile_dir = exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf();
        let target_dir = profile_dir.parent().expect("target dir").to_path_buf();
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.args(["build", "-q", "-p", "muster", "--bin", "muster", "--target-dir"]).arg(&target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build for the muster binary");
        assert!(status.success(), "cargo build -p muster failed");
        profile_dir.join("muster")
    })
}

/// A tiny HTTP server on 127.0.0.1 that answers every request with the status in `code`
/// (a health check's target whose health a test switches); returns its port.
pub fn health_endpoint(code: std::sync::Arc<std::sync::atomic::AtomicU16>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind the health endpoint");
    let port = l.local_addr().expect("local addr").port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 2048];
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let _ = s.read(&mut buf);
            let c = code.load(std::sync::atomic::Ordering::SeqCst);
            let _ = write!(s, "HTTP/1.1 {c} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    port
}

/// Polls `ok` until it holds, panicking with `what` after `timeout`; returns how long it took.
pub fn wait_until(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !ok() {
        assert!(start.elapsed() < timeout, "{what}: not within {timeout:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// A free TCP port on 127.0.0.1 that is also free for UDP (DNS uses both). Ports come from
/// below the kernel's ephemeral range (32768 up): a port the kernel handed out could be
/// taken by any outgoing connection between this check and the agent's bind, which made
/// agents fail to start now and then. Each test process walks its own stretch of the range.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919) % SPAN;
    for _ in 0..SPAN {
        let port = (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16;
        let tcp = TcpListener::bind(("127.0.0.1", port));
        if tcp.is_ok() && UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port below the ephemeral range");
}

/// A running `muster agent` process; killed when dropped.
pub struct Agent {
    child: Child,
    /// Every flag it was started with, ports included, so `restart` starts the same agent.
    args: Vec<String>,
    pub http_port: u16,
    pub dns_port: u16,
    log: PathBuf,
}

impl Agent {
    /// `muster agent -dev` on free ports with extra flags.
    pub fn dev(extra: &[&str]) -> Agent {
        let mut args = vec!["-dev", "-node", "test-node"];
        args.extend_from_slice(extra);
        Agent::start(&args)
    }

    /// `muster agent <args> -http-port P -dns-port D`, waiting until it answers HTTP.
    pub fn start(args: &[&str]) -> Agent {
        let mut agent = Agent::launch(args);
        agent.wait_ready();
        agent
    }

    /// Like `start` without the wait: a server expecting peers has no leader until they run.
    pub fn launch(args: &[&str]) -> Agent {
        let (http_port, dns_port) = (free_port(), free_port());
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        args.extend(["-http-port".into(), http_port.to_string(), "-dns-port".into(), dns_port.to_string()]);
        // Gossip ports of their own, so agents of parallel tests never meet by accident.
        for flag in ["-serf-lan-port", "-serf-wan-port"] {
            if !args.iter().any(|a| a == flag) {
                args.extend([flag.to_string(), free_port().to_string()]);
            }
        }
        let log = std::env::temp_dir().join(format!("muster-e2e-{http_port}.log"));
        std::fs::File::create(&log).expect("create agent log");
        let child = spawn_agent(&args, &log);
        Agent { child, args, http_port, dns_port, log }
    }

    /// SIGKILL: the process gets no chance to shut down cleanly.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts a killed agent again with the same flags, ports and data dir (its log goes on
    /// in the same file), waiting until it answers HTTP with a leader.
    pub fn restart(&mut self) {
        assert!(matches!(self.child.try_wait(), Ok(Some(_))), "restart only a stopped agent");
        self.child = spawn_agent(&self.args, &self.log);
        self.wait_ready();
    }

    /// Waits until the agent answers HTTP and knows a leader.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("agent exited ({status}) before it was ready; log:\n{}", self.log_text());
            }
            if let Ok(r) = ureq::get(&self.url("/v1/status/leader")).call() {
                if r.into_string().is_ok_and(|s| s.len() > 2) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent did not become ready; log:\n{}", self.log_text());
    }

    /// Whether the process has ended (on its own, e.g. after `leave`).
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.http_port, path)
    }

    pub fn http_addr(&self) -> String {
        format!("127.0.0.1:{}", self.http_port)
    }

    /// One HTTP request; any status is a result, not an error.
    pub fn req(&self, method: &str, path: &str, body: Option<&[u8]>) -> Resp {
        http(method, &self.url(path), body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None)
    }

    pub fn put(&self, path: &str, body: &[u8]) -> Resp {
        self.req("PUT", path, Some(body))
    }

    /// Runs the CLI against this agent.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(muster_bin())
            .args(args)
            .env("CONSUL_HTTP_ADDR", self.http_addr())
            .output()
            .expect("run muster CLI")
    }

    /// One DNS query over UDP (with an EDNS buffer size when `edns` is set).
    pub fn dig(&self, name: &str, qtype: RecordType, edns: Option<u16>) -> Message {
        let packet = query_packet(name, qtype, edns);
        let sock = UdpSocket::bind("127.0.0.1:0").expect("udp bind");
        sock.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        sock.send_to(&packet, ("127.0.0.1", self.dns_port)).expect("send");
        let mut buf = [0u8; 65535];
        let n = sock.recv(&mut buf).expect("dns answer");
        Message::from_vec(&buf[..n]).expect("a parseable answer")
    }

    /// One DNS query over TCP.
    pub fn dig_tcp(&self, name: &str, qtype: RecordType) -> Message {
        let packet = query_packet(name, qtype, None);
        let mut s = TcpStream::connect(("127.0.0.1", self.dns_port)).expect("tcp connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).expect("timeout");
        s.write_all(&(packet.len() as u16).to_be_bytes()).expect("len");
        s.write_all(&packet).expect("write");
        let mut len = [0u8; 2];
        s.read_exact(&mut len).expect("answer length");
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).expect("answer");
        Message::from_vec(&buf).expect("a parseable answer")
    }

    /// Polls until `f` holds or the deadline passes.
    pub fn eventually(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("timed out waiting for {what}; agent log:\n{}", self.log_text());
    }
}

fn spawn_agent(args: &[String], log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new().append(true).open(log).expect("open agent log");
    Command::new(muster_bin())
        .arg("agent")
        .args(args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().expect("dup log"))
        .stderr(log_file)
        .spawn()
        .expect("spawn muster agent")
}

/// One HTTP request to `url`; any status is a result, and only a failure to get an answer
/// (refused, reset, timed out) is an error.
pub fn http(method: &str, url: &str, body: Option<&[u8]>) -> Result<Resp, String> {
    let r = ureq::request(method, url).timeout(Duration::from_secs(30));
    let res = match body {
        Some(b) => r.send_bytes(b),
        None => r.call(),
    };
    let resp = match res {
        Ok(r) | Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(e.to_string()),
    };
    let status = resp.status();
    let headers = resp
        .headers_names()
        .into_iter()
        .map(|h| (h.clone(), resp.header(&h).unwrap_or("").to_string()))
        .collect();
    let mut body = Vec::new();
    resp.into_reader().read_to_end(&mut body).map_err(|e| format!("reading the body: {e}"))?;
    Ok(Resp { status, headers, body })
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Servers on loopback forming one Raft cluster, each with a data dir under one temporary
/// directory. If the test panics, every server's log is printed and the data dirs are kept.
pub struct Cluster {
    pub servers: Vec<Agent>,
    server_ports: Vec<u16>,
    dir: PathBuf,
}

impl Cluster {
    /// Starts `n` servers that expect each other (`-bootstrap-expect n`, `-retry-join` all of
    /// their gossip ports) and waits until each knows a leader.
    pub fn start(n: usize) -> Cluster {
        let server_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let serf_ports: Vec<String> = (0..n).map(|_| free_port().to_string()).collect();
        let dir = std::env::temp_dir().join(format!("muster-cluster-{}", server_ports[0]));
        let joins: Vec<String> = serf_ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let expect = n.to_string();
        let servers = (0..n)
            .map(|i| {
                let node = format!("s{i}");
                let data_dir = dir.join(&node).to_str().expect("a UTF-8 temp dir").to_string();
                let port = server_ports[i].to_string();
                let mut args = vec!["-server", "-bootstrap-expect", &expect, "-data-dir", &data_dir];
                args.extend([
                    "-bind",
                    "127.0.0.1",
                    "-client",
                    "127.0.0.1",
                    "-node",
                    &node,
                    "-server-port",
                    &port,
                    "-serf-lan-port",
                    &serf_ports[i],
                ]);
                for j in &joins {
                    args.extend(["-retry-join", j.as_str()]);
                }
                Agent::launch(&args)
            })
            .collect();
        let mut cluster = Cluster { servers, server_ports, dir };
        for s in &mut cluster.servers {
            s.wait_ready();
        }
        cluster
    }

    /// Server `i`'s Raft id, as /v1/status/leader and peers name it.
    pub fn server_id(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.server_ports[i])
    }

    /// The leader server `i` names, if it answers and knows one.
    pub fn leader_seen_by(&self, i: usize) -> Option<String> {
        let r = http("GET", &self.servers[i].url("/v1/status/leader"), None).ok()?;
        let leader: String = serde_json::from_slice(&r.body).ok()?;
        (!leader.is_empty()).then_some(leader)
    }

    /// Waits until every server in `among` names the same leader, itself one of `among`, and
    /// returns its index.
    pub fn wait_leader(&self, among: &[usize], timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            let seen: Vec<Option<String>> = among.iter().map(|&i| self.leader_seen_by(i)).collect();
            let agreed = seen.windows(2).all(|w| w[0] == w[1]);
            let leader = among.iter().find(|&&i| seen[0].as_deref() == Some(self.server_id(i).as_str()));
            if let (true, Some(&leader)) = (agreed, leader) {
                return leader;
            }
            assert!(Instant::now() < deadline, "no agreed leader among {among:?} in {timeout:?}: {seen:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Polls until `f` holds or the deadline passes.
    pub fn eventually(&self, what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + timeout;
        while !f() {
            assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
        if std::thread::panicking() {
            for (i, s) in self.servers.iter().enumerate() {
                eprintln!("---- server s{i} ({}) log ----\n{}", self.server_id(i), s.log_text());
            }
            eprintln!("---- data dirs kept in {} ----", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

pub fn query_packet(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(0x4d55)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true);
    m.add_query(Query::query(Name::from_ascii(name).expect("valid name"), qtype));
    if let Some(size) = edns {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().expect("encode query")
}

/// An HTTP answer.
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn index(&self) -> u64 {
        self.header("X-Consul-Index").and_then(|v| v.parse().ok()).expect("X-Consul-Index header")
    }
}

pub mod wrk;

/// What the benchmarks share: the keep-alive HTTP load generator and its results, what they
/// read about processes, where they keep their files, and how they print figures.
pub mod bench {
    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::client::conn::http1::SendRequest;
    use hyper::Request;
    use hyper_util::rt::TokioIo;

    /// What a load phase measured: successful requests per second and their latency percentiles.
    #[derive(Clone, Copy)]
    pub struct Load {
        pub rps: f64,
        pub p50: Duration,
        pub p99: Duration,
        pub p999: Duration,
        pub errors: u64,
        /// Successful requests.
        pub count: u64,
        /// CPU time (user + system) the measured processes spent per successful request
        /// (zero as `http_load` returns it; the caller knows which processes to count).
        pub cpu_per_req: Duration,
    }

    /// Opens `clients` keep-alive HTTP/1.1 connections to `port` (no Nagle delay).
    async fn connect(port: u16, clients: usize) -> Vec<SendRequest<Full<Bytes>>> {
        let mut conns = Vec::new();
        for _ in 0..clients {
            let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.expect("connect");
            stream.set_nodelay(true).expect("nodelay");
            let (send, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.expect("handshake");
            tokio::spawn(conn);
            conns.push(send);
        }
        conns
    }

    /// Runs `clients` keep-alive HTTP/1.1 connections to `port` for `secs` (timed from when all
    /// are connected), each sending requests made by `make(client, n)`; a request counts when its
    /// status is 2xx and `ok(body)` holds, otherwise it is an error.
    pub async fn http_load<M, C>(port: u16, clients: usize, secs: u64, make: M, ok: C) -> Load
    where
        M: Fn(usize, u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
        C: Fn(&[u8]) -> bool + Send + Sync + 'static,
    {
        let (make, ok) = (Arc::new(make), Arc::new(ok));
        let conns = connect(port, clients).await;
        let start = Instant::now();
        let deadline = start + Duration::from_secs(secs);
        let tasks: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, mut send)| {
                let (make, ok) = (make.clone(), ok.clone());
                tokio::spawn(async move {
                    let (mut lat, mut errors, mut n) = (Vec::new(), 0u64, 0u64);
                    while Instant::now() < deadline {
                        let t = Instant::now();
                        let resp = send.send_request(make(c, n)).await.expect("request");
                        let status = resp.status();
                        let body = resp.into_body().collect().await.expect("body").to_bytes();
                        if status.is_success() && ok(&body) {
                            lat.push(t.elapsed());
                        } else {
                            if errors == 0 {
                                eprintln!("client {c}: {status} {}", String::from_utf8_lossy(&body));
                            }
                            errors += 1;
                        }
                        n += 1;
                    }
                    (lat, errors)
                })
            })
            .collect();
        let (mut all, mut errors) = (Vec::new(), 0);
        for t in tasks {
            let (lat, e) = t.await.expect("client task");
            all.extend(lat);
            errors += e;
        }
        let elapsed = start.elapsed().as_secs_f64();
        all.sort();
        Load {
            rps: all.len() as f64 / elapsed,
            p50: percentile(&all, 0.5),
            p99: percentile(&all, 0.99),
            p999: percentile(&all, 0.999),
            errors,
            count: all.len() as u64,
            cpu_per_req: Duration::ZERO,
        }
    }

    /// Sends `make(i)` once for each `i` in `0..total` over `clients` keep-alive connections
    /// (connection `c` sends `c`, `c + clients`, …), each as soon as the previous one is
    /// answered: filling a store with distinct keys, not timing it. Returns how many failed
    /// (not 2xx, or `ok(body)` false).
    pub async fn http_each<M, C>(port: u16, clients: usize, total: u64, make: M, ok: C) -> u64
    where
        M: Fn(u64) -> Request<Full<Bytes>> + Send + Sync + 'static,
        C: Fn(&[u8]) -> bool + Send + Sync + 'static,
    {
        let (make, ok) = (Arc::new(make), Arc::new(ok));
        let tasks: Vec<_> = connect(port, clients)
            .await
            .into_iter()
            .enumerate()
            .map(|(c, mut send)| {
                let (make, ok) = (make.clone(), ok.clone());
                tokio::spawn(async move {
                    let mut errors = 0;
                    for i in (c as u64..total).step_by(clients) {
                        let resp = send.send_request(make(i)).await.expect("request");
                        let status = resp.status();
                        let body = resp.into_body().collect().await.expect("body").to_bytes();
                        if !(status.is_success() && ok(&body)) {
                            errors += 1;
                        }
                    }
                    errors
                })
            })
            .collect();
        let mut errors = 0;
        for t in tasks {
            errors += t.await.expect("client task");
        }
        errors
    }

    /// One request of a load phase, kept as data so that either driver can replay it: the
    /// built-in client builds it per request, wrk gets it written into its Lua script.
    #[derive(Clone)]
    pub struct Req {
        pub method: &'static str,
        pub path: String,
        pub body: Bytes,
    }

    impl Req {
        pub fn new(method: &'static str, path: String, body: impl Into<Bytes>) -> Req {
            Req { method, path, body: body.into() }
        }

        pub fn to_request(&self) -> Request<Full<Bytes>> {
            request(self.method, self.path.clone(), self.body.clone())
        }
    }

    /// What generates a load phase's requests, chosen by `MUSTER_BENCH_DRIVER`: the built-in
    /// client (`http_load`, the default) or `wrk` (`MUSTER_BENCH_DRIVER=wrk`), a load generator
    /// in C that others can run against the same servers to check the built-in one's figures.
    pub enum Driver {
        Builtin,
        Wrk(crate::wrk::Wrk),
    }

    impl Driver {
        /// The driver `MUSTER_BENCH_DRIVER` names; `Err` says why it cannot run.
        pub fn from_env() -> Result<Driver, String> {
            match std::env::var("MUSTER_BENCH_DRIVER").as_deref() {
                Err(_) | Ok("" | "builtin") => Ok(Driver::Builtin),
                Ok("wrk") => crate::wrk::Wrk::new().map(Driver::Wrk),
                Ok(other) => Err(format!("MUSTER_BENCH_DRIVER={other}: expected `wrk` or `builtin`")),
            }
        }

        /// How the result tables name it.
        pub fn name(&self) -> &'static str {
            match self {
                Driver::Builtin => "the built-in keep-alive client (1 tokio thread)",
                Driver::Wrk(_) => "wrk",
            }
        }

        /// Runs `clients` keep-alive connections to `port` for `secs`, cycling through `reqs`
        /// (the built-in client sends connection `c` its `n`th as `reqs[(n * clients + c) %
        /// len]`, so concurrent requests spread over the list; each wrk thread takes every
        /// thread-count-th entry in turn). The built-in client counts a request only when
        /// `ok(body)` holds too; wrk only checks for a status below 400, since reading bodies
        /// in its Lua would cost more than the servers' work being measured.
        pub fn load(
            &self,
            rt: &tokio::runtime::Runtime,
            port: u16,
            clients: usize,
            secs: u64,
            reqs: Vec<Req>,
            ok: fn(&[u8]) -> bool,
        ) -> Load {
            match self {
                Driver::Builtin => {
                    let len = reqs.len() as u64;
                    let make = move |c: usize, n: u64| {
                        reqs[((n * clients as u64 + c as u64) % len) as usize].to_request()
                    };
                    rt.block_on(http_load(port, clients, secs, make, ok))
                }
                Driver::Wrk(wrk) => wrk.run(port, clients, secs, &reqs),
            }
        }
    }

    /// The `p` quantile (0..1) of sorted durations, zero when there are none.
    pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
        sorted
            .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    }

    /// The median (the upper one of an even count), `None` for no values.
    pub fn median(v: &[Duration]) -> Option<Duration> {
        let mut v = v.to_vec();
        v.sort();
        v.get(v.len() / 2).copied()
    }

    /// A request with the headers the benchmarks send (`host`, JSON content type).
    pub fn request(method: &str, path: String, body: Bytes) -> Request<Full<Bytes>> {
        Request::builder()
            .method(method)
            .uri(path)
            .header("host", "127.0.0.1")
            .header("content-type", "application/json")
            .body(Full::new(body))
            .expect("request")
    }

    /// `n` distinct free loopback ports.
    pub fn free_ports(n: usize) -> Vec<u16> {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < n {
            let p = super::free_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        ports
    }

    /// A progress line on stderr, stamped with the seconds since the first one.
    pub fn progress(what: String) {
        static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        eprintln!("[{:6.1} s] {what}", START.get_or_init(Instant::now).elapsed().as_secs_f64());
    }

    /// A whole number with thousands separators: 12345.6 → "12,346".
    pub fn thousands(x: f64) -> String {
        let s = format!("{:.0}", x);
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        out
    }

    /// Milliseconds with two decimals: "1.23 ms".
    pub fn ms(d: Duration) -> String {
        format!("{:.2} ms", d.as_secs_f64() * 1e3)
    }

    /// What a load benchmark starts with.
    pub struct Run {
        /// Each load phase's length in seconds: `MUSTER_BENCH_SECS`, default 4.
        pub secs: u64,
        /// The runtime `http_load` runs on: one worker thread, so the load generator takes at
        /// most one core from the agents it measures.
        pub rt: tokio::runtime::Runtime,
        pub started: Instant,
        /// The machine's 1, 5 and 15 minute load averages at the start (/proc/loadavg).
        pub loadavg: String,
    }

    /// Reads the settings, notes the load average and builds the release `muster` binary;
    /// `None` when `cargo test --all-targets` only probes the bench (`--list`, `--test`).
    pub fn start() -> Option<Run> {
        if std::env::args().any(|a| a == "--list" || a == "--test") {
            return None;
        }
        let secs = std::env::var("MUSTER_BENCH_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(4);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let loadavg = loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ");
        let started = Instant::now();
        progress("building muster".into());
        super::muster_bin();
        Some(Run { secs, rt, started, loadavg })
    }

    /// CPU time (user + system) the processes have used so far, together.
    pub fn cpu_time_of(pids: &[u32]) -> Duration {
        pids.iter().map(|p| cpu_time(*p)).sum()
    }

    /// A directory under the temp dir, removed on drop.
    pub struct TempDir(pub PathBuf);

    impl TempDir {
        pub fn new(tag: &str) -> TempDir {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
            let dir = std::env::temp_dir().join(format!("muster-bench-{tag}-{}-{nanos}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("create bench dir");
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
    pub fn cpu_time(pid: u32) -> Duration {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // Fields after "(comm)": state is the first, utime the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let ticks: u64 = rest.split_whitespace().skip(11).take(2).filter_map(|f| f.parse::<u64>().ok()).sum();
        Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
    }

    /// Resident memory of a process, from /proc/<pid>/status.
    pub fn rss_kib(pid: u32) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}
