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

/// A free TCP port on 127.0.0.1 that is also free for UDP (DNS uses both).
pub fn free_port() -> u16 {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = l.local_addr().expect("local addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running `muster agent` process; killed when dropped.
pub struct Agent {
    child: Child,
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
        let (http_port, dns_port) = (free_port(), free_port());
        let log = std::env::temp_dir().join(format!("muster-e2e-{http_port}.log"));
        let log_file = std::fs::File::create(&log).expect("create agent log");
        let child = Command::new(muster_bin())
            .arg("agent")
            .args(args)
            .args(["-http-port", &http_port.to_string(), "-dns-port", &dns_port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("spawn muster agent");
        let agent = Agent { child, http_port, dns_port, log };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = ureq::get(&self.url("/v1/status/leader")).call() {
                if r.into_string().is_ok_and(|s| s.len() > 2) {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("agent did not become ready; log:\n{}", self.log_text());
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
        let r = ureq::request(method, &self.url(path)).timeout(Duration::from_secs(30));
        let res = match body {
            Some(b) => r.send_bytes(b),
            None => r.call(),
        };
        let resp = match res {
            Ok(r) | Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{method} {path}: {e}"),
        };
        let status = resp.status();
        let headers = resp
            .headers_names()
            .into_iter()
            .map(|h| (h.clone(), resp.header(&h).unwrap_or("").to_string()))
            .collect();
        let mut body = Vec::new();
        resp.into_reader().read_to_end(&mut body).expect("read body");
        Resp { status, headers, body }
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

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
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
