//! Cluster benchmark: `cargo bench -p muster-tests --bench cluster`.
//!
//! Starts three release `muster agent -server` processes on loopback ports (durable
//! `-data-dir` under the temp dir) and measures, with keep-alive HTTP/1.1 connections, in the
//! load shape issue 11 measured (req/s, p50, p99, p99.9 and the members' CPU per request):
//! - KV PUT of 256-byte values over 1,000 keys, 1 and 64 clients, to the leader and (64)
//!   to a follower;
//! - KV GET with 64 clients in each consistency mode;
//! - `/v1/health/service/web?passing` and `/v1/catalog/service/web` with 64 clients, 10
//!   instances of `web` registered, compared with muster's default KV GET and etcd's
//!   serializable range read;
//! - each member's resident memory after the PUT phases, after 5 s idle, and with 100,000
//!   more keys (16 B values) after another 5 s;
//! - failover (kill -9 the leader → first successful write through a survivor) on that
//!   loaded cluster and on five fresh ones, and the restart of the killed leader until it
//!   serves a newer write.
//!
//! Then, when `etcd` is installed, the same phases (but those etcd has no counterpart for)
//! run against a three-member etcd cluster over its HTTP/JSON gateway, with the same request
//! bytes and connection counts, and the table gives muster/etcd ratios and the bars issue 11
//! sets. Without etcd the muster half still runs and says etcd was skipped.
//!
//! Environment: `MUSTER_BENCH_SECS` sets each load phase's length (default 4);
//! `MUSTER_BENCH_DRIVER=wrk` generates the load phases with `wrk` (1 client: `-c1 -t1`, 64:
//! `-c64 -t2`) instead of the built-in client, to check its figures with a load generator
//! in C; `ETCD_BIN` names the etcd binary (default `etcd` on PATH). Install both with
//! `apt-get install etcd-server wrk`. Every process is killed when its handle drops, panics
//! included.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use muster_tests::bench::{
    self, cpu_time_of, free_ports, http_each, median, ms, progress, rss_kib, thousands, Driver, Load, Req,
    TempDir,
};
use muster_tests::{http, muster_bin, Agent};

const SERVERS: usize = 3;
const MANY: usize = 64;
/// The size of every value the PUT and GET phases write and read, as issue 11 measured.
const VALUE_BYTES: usize = 256;
/// The value itself: printable, so it reads the same in a log or a wrk script.
const VALUE: [u8; VALUE_BYTES] = {
    let mut v = [0u8; VALUE_BYTES];
    let mut i = 0;
    while i < VALUE_BYTES {
        v[i] = b"0123456789abcdef"[i % 16];
        i += 1;
    }
    v
};
/// Keys the PUT phases spread their writes over.
const PUT_KEYS: u64 = 1000;
/// Keys written before the GET phases, so every GET finds its key.
const GET_KEYS: u64 = 256;
/// Instances of `web` registered for the health and catalog phases.
const WEB: usize = 10;
/// Distinct keys written for the memory measurement, with 16-byte values.
const MEM_KEYS: u64 = 100_000;
const MEM_VALUE: &[u8] = b"0123456789abcdef";
/// How long the members idle before a memory reading that should not see a load's garbage.
const IDLE: Duration = Duration::from_secs(5);
const FAILOVERS: usize = 5;

fn contains(body: &[u8], needle: &[u8]) -> bool {
    body.windows(needle.len()).any(|w| w == needle)
}

/// A read's consistency, in each system's terms.
#[derive(Clone, Copy, PartialEq)]
enum Read {
    /// muster's default (leader lease); etcd has no such mode.
    Default,
    /// muster `?consistent`, etcd linearizable (both a quorum round per read batch).
    Consistent,
    /// muster `?stale`, etcd serializable (the member's local state).
    Local,
}

/// The system under test: how its requests look.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Muster,
    Etcd,
}

fn etcd_put_body(key: &str, value: &[u8]) -> String {
    format!(r#"{{"key":"{}","value":"{}"}}"#, B64.encode(key), B64.encode(value))
}

fn etcd_range_body(key: &str, serializable: bool) -> String {
    format!(r#"{{"key":"{}","serializable":{serializable}}}"#, B64.encode(key))
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Muster => "muster",
            Kind::Etcd => "etcd",
        }
    }

    fn put(self, key: &str, value: &[u8]) -> Req {
        match self {
            Kind::Muster => Req::new("PUT", format!("/v1/kv/{key}"), value.to_vec()),
            Kind::Etcd => Req::new("POST", "/v3/kv/put".into(), etcd_put_body(key, value)),
        }
    }

    fn put_ok(self) -> fn(&[u8]) -> bool {
        match self {
            Kind::Muster => |b| b == b"true",
            Kind::Etcd => |b| contains(b, b"\"header\""),
        }
    }

    fn get(self, key: &str, read: Read) -> Req {
        let muster = |query: &str| Req::new("GET", format!("/v1/kv/{key}?raw{query}"), Vec::new());
        match (self, read) {
            (Kind::Muster, Read::Default) => muster(""),
            (Kind::Muster, Read::Consistent) => muster("&consistent"),
            (Kind::Muster, Read::Local) => muster("&stale"),
            (Kind::Etcd, read) => {
                Req::new("POST", "/v3/kv/range".into(), etcd_range_body(key, read == Read::Local))
            }
        }
    }

    fn get_ok(self) -> fn(&[u8]) -> bool {
        match self {
            Kind::Muster => |b| b == VALUE,
            Kind::Etcd => |b| contains(b, b"\"kvs\""),
        }
    }

    /// One blocking write of `key` through the member serving HTTP on `port`.
    fn write_once(self, port: u16, key: &str, timeout: Duration) -> bool {
        let req = self.put(key, &VALUE);
        let url = format!("http://127.0.0.1:{port}{}", req.path);
        match ureq::request(req.method, &url).timeout(timeout).send_bytes(&req.body) {
            Ok(r) => r.into_string().is_ok_and(|b| self.put_ok()(b.as_bytes())),
            Err(_) => false,
        }
    }

    /// Whether the member on `port` has `key` in its local state.
    fn has_locally(self, port: u16, key: &str) -> bool {
        let timeout = Duration::from_secs(1);
        let res = match self {
            Kind::Muster => {
                ureq::get(&format!("http://127.0.0.1:{port}/v1/kv/{key}?raw&stale")).timeout(timeout).call()
            }
            Kind::Etcd => ureq::post(&format!("http://127.0.0.1:{port}/v3/kv/range"))
                .timeout(timeout)
                .send_string(&etcd_range_body(key, true)),
        };
        res.ok().and_then(|r| r.into_string().ok()).is_some_and(|b| self.get_ok()(b.as_bytes()))
    }
}

/// Polls `f` every 20 ms until it yields a value, panicking with `what` after `timeout`.
fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Three members of one system, some of which may be dead.
trait Cluster {
    fn kind(&self) -> Kind;
    /// Each member's HTTP port, `None` while it is killed.
    fn ports(&self) -> Vec<Option<u16>>;
    /// The live members' process ids.
    fn pids(&self) -> Vec<u32>;
    /// Each member's (Raft term, the member it names as leader), `None` when it does not answer.
    fn views(&self) -> Vec<Option<(u64, Option<usize>)>>;
    /// kill -9, waiting for the process to be gone.
    fn kill(&mut self, i: usize);
    /// Starts member `i` again on its old data dir; `Err` says why it did not come up.
    fn restart(&mut self, i: usize) -> Result<(), String>;

    fn port(&self, i: usize) -> u16 {
        self.ports()[i].expect("a live member")
    }
    /// The highest term a live member reports: it moves when an election happens.
    fn max_term(&self) -> u64 {
        self.views().into_iter().flatten().map(|(term, _)| term).max().unwrap_or(0)
    }
    /// The leader every live member agrees on, all in the same term.
    fn leader(&self) -> Option<usize> {
        let views: Vec<_> = self.views().into_iter().zip(self.ports()).filter(|(_, p)| p.is_some()).collect();
        let (term, leader) = views.first()?.0?;
        let agreed = views.iter().all(|(v, _)| *v == Some((term, leader)));
        leader.filter(|&l| agreed && self.ports()[l].is_some())
    }
    fn wait_leader(&self) -> usize {
        wait_for("a leader", Duration::from_secs(30), || self.leader())
    }
}

struct MusterCluster {
    // Declared before `_dir`: the agents are killed before their data dirs are removed.
    nodes: Vec<Option<Agent>>,
    args: Vec<Vec<String>>,
    server_ports: Vec<u16>,
    _dir: TempDir,
}

impl MusterCluster {
    fn start() -> MusterCluster {
        muster_bin(); // build once, before three threads want it
        let dir = TempDir::new("muster");
        let server_ports = free_ports(SERVERS);
        // Servers find each other by LAN gossip: each joins the others' gossip ports.
        let serf_ports = free_ports(SERVERS);
        let args: Vec<Vec<String>> = (0..SERVERS)
            .map(|i| {
                let mut a: Vec<String> = [
                    "-server",
                    "-bootstrap-expect",
                    "3",
                    "-bind",
                    "127.0.0.1",
                    "-client",
                    "127.0.0.1",
                    "-log-level",
                    "warn",
                ]
                .map(String::from)
                .into();
                a.extend(["-data-dir".into(), dir.0.join(format!("s{i}")).display().to_string()]);
                a.extend(["-node".into(), format!("s{i}")]);
                a.extend(["-server-port".into(), server_ports[i].to_string()]);
                a.extend(["-serf-lan-port".into(), serf_ports[i].to_string()]);
                for p in &serf_ports {
                    a.extend(["-retry-join".into(), format!("127.0.0.1:{p}")]);
                }
                a
            })
            .collect();
        // Agent::start returns once the agent knows a leader, which needs all three up.
        let handles: Vec<_> = args
            .iter()
            .cloned()
            .map(|a| {
                std::thread::spawn(move || Agent::start(&a.iter().map(String::as_str).collect::<Vec<_>>()))
            })
            .collect();
        let nodes = handles.into_iter().map(|h| Some(h.join().expect("muster server started"))).collect();
        MusterCluster { nodes, args, server_ports, _dir: dir }
    }
}

impl Cluster for MusterCluster {
    fn kind(&self) -> Kind {
        Kind::Muster
    }
    fn ports(&self) -> Vec<Option<u16>> {
        self.nodes.iter().map(|n| n.as_ref().map(|a| a.http_port)).collect()
    }
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(Agent::pid).collect()
    }
    fn views(&self) -> Vec<Option<(u64, Option<usize>)>> {
        let view = |agent: &Agent| {
            let term = agent.get("/v1/agent/self").json()["Stats"]["raft"]["term"].as_str()?.parse().ok()?;
            // "\"127.0.0.1:<server port>\"", or "\"\"" while there is none
            let text = agent.get("/v1/status/leader").text();
            let port = text.trim_matches('"').rsplit_once(':').and_then(|(_, p)| p.parse::<u16>().ok());
            Some((term, port.and_then(|port| self.server_ports.iter().position(|&p| p == port))))
        };
        self.nodes.iter().map(|n| n.as_ref().and_then(view)).collect()
    }
    fn kill(&mut self, i: usize) {
        self.nodes[i] = None; // Agent's Drop is Child::kill (SIGKILL) + wait
    }
    fn restart(&mut self, i: usize) -> Result<(), String> {
        let args: Vec<&str> = self.args[i].iter().map(String::as_str).collect();
        // Agent::start panics (with the agent's log) when the agent does not come up.
        let agent = std::panic::catch_unwind(|| Agent::start(&args)).map_err(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            let log = msg.split_once("log:\n").map_or(msg.as_str(), |(_, log)| log);
            log.lines().find(|l| !l.trim().is_empty()).unwrap_or("no log").to_string()
        })?;
        self.nodes[i] = Some(agent);
        Ok(())
    }
}

/// A child process killed (SIGKILL) and reaped when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct EtcdCluster {
    // Declared before `dir`: the members are killed before their data dirs are removed.
    nodes: Vec<Option<Proc>>,
    bin: PathBuf,
    client_ports: Vec<u16>,
    peer_ports: Vec<u16>,
    dir: TempDir,
}

impl EtcdCluster {
    fn start(bin: &Path) -> EtcdCluster {
        let ports = free_ports(2 * SERVERS);
        let mut c = EtcdCluster {
            nodes: (0..SERVERS).map(|_| None).collect(),
            bin: bin.to_path_buf(),
            client_ports: ports[..SERVERS].to_vec(),
            peer_ports: ports[SERVERS..].to_vec(),
            dir: TempDir::new("etcd"),
        };
        for i in 0..SERVERS {
            c.nodes[i] = Some(c.spawn(i));
        }
        let leader = c.wait_leader_logged();
        wait_for("a first etcd write", Duration::from_secs(30), || {
            Kind::Etcd.write_once(c.port(leader), "ready", Duration::from_secs(1)).then_some(())
        });
        c
    }

    fn spawn(&self, i: usize) -> Proc {
        let peer = |j: usize| format!("http://127.0.0.1:{}", self.peer_ports[j]);
        let client = format!("http://127.0.0.1:{}", self.client_ports[i]);
        let initial: Vec<String> = (0..SERVERS).map(|j| format!("e{j}={}", peer(j))).collect();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.0.join(format!("e{i}.log")))
            .expect("etcd log file");
        let child = Command::new(&self.bin)
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(self.dir.0.join(format!("e{i}")))
            .args(["--listen-client-urls", &client, "--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer(i), "--initial-advertise-peer-urls", &peer(i)])
            .args(["--initial-cluster", &initial.join(",")])
            .args(["--initial-cluster-state", "new", "--initial-cluster-token", "muster-bench"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn etcd");
        Proc(child)
    }

    /// Like `wait_leader`, but shows the members' logs if none comes.
    fn wait_leader_logged(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(l) = self.leader() {
                return l;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        for i in 0..SERVERS {
            let log = std::fs::read_to_string(self.dir.0.join(format!("e{i}.log"))).unwrap_or_default();
            eprintln!("--- etcd e{i} log ---\n{log}");
        }
        panic!("etcd elected no leader");
    }

    /// (member_id, leader's member_id, raft term) as member `i` reports them.
    fn status(&self, i: usize) -> Option<(String, String, u64)> {
        let port = self.ports()[i]?;
        let r = ureq::post(&format!("http://127.0.0.1:{port}/v3/maintenance/status"))
            .timeout(Duration::from_secs(1))
            .send_string("{}")
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&r.into_string().ok()?).ok()?;
        let id = v["header"]["member_id"].as_str()?.to_string();
        let leader = v["leader"].as_str()?.to_string();
        Some((id, leader, v["header"]["raft_term"].as_str()?.parse().ok()?))
    }
}

impl Cluster for EtcdCluster {
    fn kind(&self) -> Kind {
        Kind::Etcd
    }
    fn ports(&self) -> Vec<Option<u16>> {
        self.nodes.iter().zip(&self.client_ports).map(|(n, &p)| n.as_ref().map(|_| p)).collect()
    }
    fn pids(&self) -> Vec<u32> {
        self.nodes.iter().flatten().map(|p| p.0.id()).collect()
    }
    fn views(&self) -> Vec<Option<(u64, Option<usize>)>> {
        let statuses: Vec<_> = (0..SERVERS).map(|i| self.status(i)).collect();
        let index_of =
            |leader: &str| statuses.iter().position(|s| s.as_ref().is_some_and(|(id, ..)| id == leader));
        statuses.iter().map(|s| s.as_ref().map(|(_, leader, term)| (*term, index_of(leader)))).collect()
    }
    fn kill(&mut self, i: usize) {
        self.nodes[i] = None;
    }
    fn restart(&mut self, i: usize) -> Result<(), String> {
        self.nodes[i] = Some(self.spawn(i));
        Ok(())
    }
}

/// Kills the leader with SIGKILL and times the first successful write through any survivor
/// (each polled from its own thread every 5 ms). Returns the killed member and the time.
fn failover(c: &mut dyn Cluster, round: usize) -> (usize, Duration) {
    let kind = c.kind();
    let leader = c.wait_leader();
    let survivors: Vec<u16> =
        c.ports().iter().enumerate().filter(|&(i, _)| i != leader).filter_map(|(_, p)| *p).collect();
    let first: Mutex<Option<Duration>> = Mutex::new(None);
    let done = AtomicBool::new(false);
    let t0 = Instant::now();
    c.kill(leader);
    std::thread::scope(|s| {
        for port in survivors {
            let (first, done) = (&first, &done);
            s.spawn(move || {
                let mut n = 0;
                while !done.load(Ordering::SeqCst) && t0.elapsed() < Duration::from_secs(60) {
                    n += 1;
                    let key = format!("failover/{round}/{port}/{n}");
                    if kind.write_once(port, &key, Duration::from_millis(250)) {
                        let took = t0.elapsed();
                        let mut f = first.lock().unwrap();
                        *f = Some(f.unwrap_or(took).min(took));
                        done.store(true, Ordering::SeqCst);
                    } else {
                        std::thread::sleep(Duration::from_millis(5));
                    }
                }
            });
        }
    });
    (leader, first.into_inner().unwrap().expect("a write succeeded after the leader was killed"))
}

/// Restarts killed member `i` on its data dir and times it until it serves, from its local
/// state, a write made through the leader after it was started.
fn rejoin(c: &mut dyn Cluster, i: usize) -> Result<Duration, String> {
    let kind = c.kind();
    let t0 = Instant::now();
    c.restart(i)?;
    let leader = c.wait_leader();
    if !kind.write_once(c.port(leader), "rejoined", Duration::from_secs(10)) {
        return Err("the marker write failed".into());
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while !kind.has_locally(c.port(i), "rejoined") {
        if Instant::now() > deadline {
            return Err("not caught up after 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(t0.elapsed())
}

/// Every measurement of one system.
#[derive(Default)]
struct Results {
    put_1: Option<Load>,
    put_many: Option<Load>,
    put_many_follower: Option<Load>,
    get_default: Option<Load>,
    get_consistent: Option<Load>,
    get_local: Option<Load>,
    /// `/v1/health/service/web?passing` (muster only).
    health: Option<Load>,
    /// `/v1/catalog/service/web` (muster only).
    catalog: Option<Load>,
    /// Each member's RSS (KiB) right after the PUT phases' write storm.
    rss_after_puts: Vec<u64>,
    /// The same after `IDLE` with no load.
    rss_idle: Vec<u64>,
    /// The same with `MEM_KEYS` more keys written, after `IDLE`.
    rss_100k: Vec<u64>,
    /// Failover on the cluster the load phases used (~100k writes in its log, and the keys).
    failover_loaded: Option<Duration>,
    /// Restart of that killed leader → caught up, or why it failed.
    rejoin: Option<Result<Duration, String>>,
    /// Failover on fresh clusters, one each.
    failovers: Vec<Duration>,
    /// Load phases during which an election happened (their numbers mix two leaders).
    elections: Vec<String>,
}

/// Each live member's resident memory (KiB).
fn rss_of(c: &dyn Cluster) -> Vec<u64> {
    c.pids().into_iter().map(rss_kib).collect()
}

/// Entries in a `/v1/health/service` answer: each has one `"Checks"` list.
fn entries(body: &[u8]) -> usize {
    body.windows(8).filter(|w| w == b"\"Checks\"").count()
}

/// Registers `WEB` instances of `web` (a node each, with a passing check) through the
/// muster leader on `port`, and waits until its health endpoint lists them all.
fn register_web(port: u16) {
    for i in 0..WEB {
        let body = format!(
            r#"{{"Node":"web-node-{i}","Address":"127.0.0.{}","Service":{{"ID":"web-{i}","Service":"web","Port":8080}},"Check":{{"CheckID":"web-{i}-check","Name":"alive","Status":"passing","ServiceID":"web-{i}"}}}}"#,
            i + 10
        );
        let r = http("PUT", &format!("http://127.0.0.1:{port}/v1/catalog/register"), Some(body.as_bytes()));
        assert!(r.as_ref().is_ok_and(|r| r.status == 200), "register web-{i}: {:?}", r.map(|r| r.text()));
    }
    wait_for(&format!("{WEB} passing instances of web"), Duration::from_secs(10), || {
        let r = http("GET", &format!("http://127.0.0.1:{port}/v1/health/service/web?passing"), None).ok()?;
        (entries(&r.body) == WEB).then_some(())
    });
}

/// The load phases, memory, failover and rejoin on one cluster, then failover on fresh
/// clusters.
fn measure<C: Cluster>(
    start: impl Fn() -> C,
    rt: &tokio::runtime::Runtime,
    driver: &Driver,
    secs: u64,
) -> Results {
    let mut c = start();
    let kind = c.kind();
    let name = kind.name();
    let leader = c.wait_leader();
    let follower = (0..SERVERS).find(|&i| i != leader).expect("a follower");
    let (lport, fport) = (c.port(leader), c.port(follower));
    progress(format!("{name}: started; leader is member {leader}"));
    let pids = c.pids();
    let elections = std::cell::RefCell::new(Vec::new());
    // Runs one load phase, adding the members' CPU time and noting any election during it.
    let phase = |what: String, port: u16, clients: usize, reqs: Vec<Req>, ok: fn(&[u8]) -> bool| {
        progress(format!("{name}: {what}"));
        let (cpu, term) = (cpu_time_of(&pids), c.max_term());
        let load = driver.load(rt, port, clients, secs, reqs, ok);
        let cpu = cpu_time_of(&pids) - cpu;
        let after = c.max_term();
        if after != term {
            progress(format!("{name}: {what}: ELECTION during the phase, term {term} → {after}"));
            elections.borrow_mut().push(format!("{what} (term {term} → {after})"));
        }
        Some(Load { cpu_per_req: cpu / u32::try_from(load.count.max(1)).unwrap_or(u32::MAX), ..load })
    };
    let puts: Vec<Req> = (0..PUT_KEYS).map(|k| kind.put(&format!("bench/{k}"), &VALUE)).collect();
    let put = |port: u16, clients: usize, to: &str| {
        phase(format!("PUT, {clients} clients, to the {to}"), port, clients, puts.clone(), kind.put_ok())
    };
    let mut r = Results {
        put_1: put(lport, 1, "leader"),
        put_many: put(lport, MANY, "leader"),
        put_many_follower: put(fport, MANY, "follower"),
        rss_after_puts: rss_of(&c),
        ..Results::default()
    };
    std::thread::sleep(IDLE);
    r.rss_idle = rss_of(&c);
    for k in 0..GET_KEYS {
        assert!(kind.write_once(lport, &format!("get/{k}"), Duration::from_secs(10)), "prefill get/{k}");
    }
    let get = |read: Read, what: &str| {
        let reqs = (0..GET_KEYS).map(|k| kind.get(&format!("get/{k}"), read)).collect();
        phase(format!("GET {what}, {MANY} clients"), lport, MANY, reqs, kind.get_ok())
    };
    if kind == Kind::Muster {
        r.get_default = get(Read::Default, "default");
    }
    r.get_consistent = get(Read::Consistent, "consistent");
    r.get_local = get(Read::Local, "local");
    if kind == Kind::Muster {
        register_web(lport);
        // Any instance's ID in the answer will do: a full parse would cost the client more
        // than the server's work being measured.
        let ok: fn(&[u8]) -> bool = |b| contains(b, b"\"web-0\"");
        let read = |path: &str| {
            let reqs = vec![Req::new("GET", path.to_string(), Vec::new())];
            phase(format!("GET {path}, {MANY} clients"), lport, MANY, reqs, ok)
        };
        r.health = read("/v1/health/service/web?passing");
        r.catalog = read("/v1/catalog/service/web");
    }
    r.elections = elections.into_inner();
    progress(format!("{name}: writing {MEM_KEYS} keys for the memory reading"));
    let failed = rt.block_on(http_each(
        lport,
        MANY,
        MEM_KEYS,
        move |k| kind.put(&format!("mem/{k}"), MEM_VALUE).to_request(),
        kind.put_ok(),
    ));
    if failed > 0 {
        progress(format!("{name}: {failed} of the {MEM_KEYS} memory writes failed"));
    }
    // The pause also makes the next failover one of a long log, not of the load's tail.
    std::thread::sleep(IDLE);
    r.rss_100k = rss_of(&c);
    let (killed, took) = failover(&mut c, 0);
    progress(format!("{name}: failover on the loaded cluster: {took:?}"));
    r.failover_loaded = Some(took);
    let rejoin = rejoin(&mut c, killed);
    progress(format!("{name}: restart of the killed leader: {rejoin:?}"));
    r.rejoin = Some(rejoin);
    drop(c);
    for round in 1..=FAILOVERS {
        let mut c = start();
        for k in 0..100 {
            assert!(kind.write_once(c.port(c.wait_leader()), &format!("pre/{k}"), Duration::from_secs(10)));
        }
        let (_, took) = failover(&mut c, round);
        progress(format!("{name}: failover {round} (fresh cluster): {took:?}"));
        r.failovers.push(took);
    }
    r
}

/// The etcd binary and its version, or why etcd is skipped.
fn find_etcd() -> Result<(PathBuf, String), String> {
    let bin = PathBuf::from(std::env::var("ETCD_BIN").unwrap_or_else(|_| "etcd".into()));
    let out = Command::new(&bin)
        .arg("--version")
        .output()
        .map_err(|e| format!("`{}` not runnable ({e}); `apt-get install etcd-server`", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("etcd Version:"))
        .map(|v| v.trim().to_string())
        .ok_or_else(|| format!("`{} --version` printed no version", bin.display()))?;
    Ok((bin, version))
}

fn cell(l: Option<Load>) -> String {
    match l {
        None => "—".into(),
        Some(l) => {
            let errors = if l.errors > 0 { format!(", **{} errors**", l.errors) } else { String::new() };
            format!(
                "{} req/s (p50 {}, p99 {}, p99.9 {}; {} µs CPU/req{errors})",
                thousands(l.rps),
                ms(l.p50),
                ms(l.p99),
                ms(l.p999),
                l.cpu_per_req.as_micros()
            )
        }
    }
}

fn ratio(m: Option<Load>, e: Option<Load>) -> Option<f64> {
    Some(m?.rps / e?.rps)
}

fn ratio_cell(m: Option<Load>, e: Option<Load>) -> String {
    match (m, e) {
        (Some(m), Some(e)) => format!(
            "{:.2}× (CPU/req {:.2}×)",
            m.rps / e.rps,
            m.cpu_per_req.as_secs_f64() / e.cpu_per_req.as_secs_f64().max(1e-9)
        ),
        _ => "—".into(),
    }
}

fn failover_cell(v: &[Duration]) -> String {
    match median(v) {
        None => "—".into(),
        Some(m) => {
            let all: Vec<String> = v.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
            format!("{} ms (runs: {} ms)", thousands(m.as_secs_f64() * 1e3), all.join(", "))
        }
    }
}

/// The largest and the mean of the members' RSS, in MiB; `None` without readings.
fn max_mean(kib: &[u64]) -> Option<(f64, f64)> {
    let max = *kib.iter().max()?;
    Some((max as f64 / 1024.0, kib.iter().sum::<u64>() as f64 / kib.len() as f64 / 1024.0))
}

fn rss_cell(kib: Option<&[u64]>) -> String {
    kib.and_then(max_mean).map_or("—".into(), |(max, mean)| format!("max {max:.1} MiB, mean {mean:.1} MiB"))
}

/// muster's largest member over etcd's, the figure the memory bar is about.
fn rss_ratio(m: &[u64], e: Option<&[u64]>) -> Option<f64> {
    Some(max_mean(m)?.0 / max_mean(e?)?.0)
}

/// How a ratio is held against its bar.
enum Need {
    AtLeast(f64),
    AtMost(f64),
}

fn bar(what: &str, r: Option<f64>, need: Need) {
    let (met, need) = match need {
        Need::AtLeast(n) => (r.map(|r| r >= n), format!("≥ {n}×")),
        Need::AtMost(n) => (r.map(|r| r <= n), format!("≤ {n}×")),
    };
    match (r, met) {
        (Some(r), Some(met)) => {
            println!("- bar {what} {need}: {r:.2}× — {}", if met { "met" } else { "NOT met" })
        }
        _ => println!("- bar {what} {need}: not measured (etcd skipped)"),
    }
}

fn main() {
    let Some(bench::Run { secs, rt, started, loadavg }) = bench::start() else {
        return; // `cargo test --all-targets` probes benches; nothing to list
    };
    let driver = Driver::from_env().unwrap_or_else(|why| {
        eprintln!("{why}");
        std::process::exit(2);
    });

    let muster = measure(MusterCluster::start, &rt, &driver, secs);
    let (etcd, etcd_name) = match find_etcd() {
        Ok((bin, version)) => {
            (Some(measure(|| EtcdCluster::start(&bin), &rt, &driver, secs)), format!("etcd {version}"))
        }
        Err(why) => {
            println!("etcd skipped: {why}");
            (None, "etcd (skipped)".to_string())
        }
    };
    let e = etcd.as_ref();
    let ef = |f: fn(&Results) -> Option<Load>| e.and_then(f);

    println!();
    println!(
        "| measurement (3 servers, loopback, {VALUE_BYTES} B values over {} keys) | muster | {etcd_name} | \
         muster/etcd |",
        thousands(PUT_KEYS as f64)
    );
    println!("|---|---|---|---|");
    type Pick = fn(&Results) -> Option<Load>;
    let rows: [(String, Pick, Pick); 8] = [
        ("KV PUT, 1 client, to the leader".into(), |r| r.put_1, |r| r.put_1),
        (format!("KV PUT, {MANY} clients, to the leader"), |r| r.put_many, |r| r.put_many),
        (
            format!("KV PUT, {MANY} clients, to a follower (forwarded)"),
            |r| r.put_many_follower,
            |r| r.put_many_follower,
        ),
        (format!("KV GET, {MANY} clients: muster default (lease) vs etcd serializable"), |r| r.get_default, |r| r.get_local),
        (
            format!("KV GET, {MANY} clients: muster `?consistent` vs etcd linearizable"),
            |r| r.get_consistent,
            |r| r.get_consistent,
        ),
        (format!("KV GET, {MANY} clients: muster `?stale` vs etcd serializable"), |r| r.get_local, |r| r.get_local),
        (
            format!("`/v1/health/service/web?passing` ({WEB} instances), {MANY} clients, vs etcd serializable range"),
            |r| r.health,
            |r| r.get_local,
        ),
        (
            format!("`/v1/catalog/service/web` ({WEB} instances), {MANY} clients, vs etcd serializable range"),
            |r| r.catalog,
            |r| r.get_local,
        ),
    ];
    for (what, mine, theirs) in rows {
        let (m, x) = (mine(&muster), ef(theirs));
        println!("| {what} | {} | {} | {} |", cell(m), cell(x), ratio_cell(m, x));
    }
    let mem_row = |what: &str, rss: fn(&Results) -> &[u64]| {
        let ratio = rss_ratio(rss(&muster), e.map(rss))
            .map_or("—".into(), |r| format!("{r:.2}× (largest member; lower is better)"));
        println!("| {what} | {} | {} | {ratio} |", rss_cell(Some(rss(&muster))), rss_cell(e.map(rss)));
    };
    mem_row("RSS per member, right after the PUT phases", |r| &r.rss_after_puts);
    mem_row(&format!("RSS per member, after {} s idle", IDLE.as_secs()), |r| &r.rss_idle);
    mem_row(
        &format!(
            "RSS per member with {} more keys (16 B values), after {} s idle",
            thousands(MEM_KEYS as f64),
            IDLE.as_secs()
        ),
        |r| &r.rss_100k,
    );
    let time_row = |what: &str, m: Option<Duration>, x: Option<Duration>, mcell: String, xcell: String| {
        let r = match (m, x) {
            (Some(m), Some(x)) => {
                format!("{:.2}× (time: lower is better)", m.as_secs_f64() / x.as_secs_f64())
            }
            _ => "—".into(),
        };
        println!("| {what} | {mcell} | {xcell} | {r} |");
    };
    time_row(
        &format!(
            "failover: kill -9 leader → first write via a survivor (fresh cluster, median of {FAILOVERS})"
        ),
        median(&muster.failovers),
        e.and_then(|r| median(&r.failovers)),
        failover_cell(&muster.failovers),
        e.map_or("—".into(), |r| failover_cell(&r.failovers)),
    );
    let loaded = |r: &Results| r.failover_loaded;
    time_row(
        "failover, the same, on the loaded cluster (after the memory reading)",
        loaded(&muster),
        e.and_then(loaded),
        loaded(&muster).map_or("—".into(), ms),
        e.and_then(loaded).map_or("—".into(), ms),
    );
    let rejoin = |r: &Results| r.rejoin.clone().and_then(Result::ok);
    let rejoin_cell = |r: Option<&Results>| match r.and_then(|r| r.rejoin.clone()) {
        None => "—".to_string(),
        Some(Ok(d)) => ms(d),
        Some(Err(why)) => format!("**failed**: {why}"),
    };
    time_row(
        "restart of that killed leader → serves a newer write locally",
        rejoin(&muster),
        e.and_then(rejoin),
        rejoin_cell(Some(&muster)),
        rejoin_cell(e),
    );
    println!();
    for (sys, r) in [("muster", Some(&muster)), ("etcd", e)] {
        for what in r.map(|r| r.elections.as_slice()).unwrap_or_default() {
            println!("- **{sys}: leadership changed during `{what}`**: that row mixes two leaders");
        }
    }
    bar("PUT 1 client vs etcd", ratio(muster.put_1, ef(|r| r.put_1)), Need::AtLeast(3.0));
    bar(
        &format!("PUT {MANY} clients vs etcd"),
        ratio(muster.put_many, ef(|r| r.put_many)),
        Need::AtLeast(3.0),
    );
    bar(
        "default GET vs etcd serializable GET",
        ratio(muster.get_default, ef(|r| r.get_local)),
        Need::AtLeast(5.0),
    );
    for (what, load) in [("health", muster.health), ("catalog", muster.catalog)] {
        bar(&format!("{what} vs muster default KV GET"), ratio(load, muster.get_default), Need::AtLeast(0.5));
        bar(
            &format!("{what} vs etcd serializable GET"),
            ratio(load, ef(|r| r.get_local)),
            Need::AtLeast(4.0),
        );
    }
    bar(
        &format!("RSS with {} keys vs etcd (largest member)", thousands(MEM_KEYS as f64)),
        rss_ratio(&muster.rss_100k, e.map(|r| r.rss_100k.as_slice())),
        Need::AtMost(0.5),
    );
    println!(
        "\nRatios are req/s (muster/etcd), with CPU time per request (all three members, user + \
         system) in brackets: below 1× muster spends less. Load from {}; each load phase runs \
         {secs} s after its connections are made; data dirs on {}, so every write is fsynced; etcd \
         is loaded through its HTTP/JSON gateway. Members and the load generator share the \
         machine's {} cores (load average {loadavg} at start); whole run {:.0} s.",
        driver.name(),
        std::env::temp_dir().display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
}
