//! Client-agent benchmark: `cargo bench -p muster-tests --bench clients`.
//!
//! Starts three release `muster agent -server -bootstrap-expect 3` processes (durable
//! `-data-dir`, every write fsynced) and two client agents, each on its own loopback address
//! (127.0.0.120 and up, one shared LAN gossip port, Consul's default timers), and measures:
//!
//! - with the shared keep-alive load generator (64 connections, `MUSTER_BENCH_SECS` per
//!   phase, default 4), each case once through client A and once straight to the server
//!   client A forwards to (found from its open connections): KV PUT (16-byte values over
//!   1,000 keys), KV GET with default consistency, and `/v1/health/service/web?passing` with
//!   10 instances of `web` (two registered on each agent); rate, p50/p99/p99.9, errors, the
//!   CPU time of every agent per request and the resident memory of the agent that took them;
//! - check critical on client A → the instance out of DNS on client B: an HTTP check
//!   (interval 1 s) against an endpoint in this process switched to 503, client B's DNS polled
//!   over UDP every 10 ms; 5 runs, healthy again in between;
//! - kill -9 of a client → its check-less service out of DNS on client B; 3 runs, each with
//!   a fresh third client.
//!
//! Prints a markdown table for the README. Every agent is killed when the fleet drops, panics
//! included (their logs' tails are printed then), and every wait has a deadline.

use std::collections::HashSet;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::RecordType;
use muster_tests::bench::{
    self, cpu_time_of, free_ports, http_load, median, ms, progress, request, rss_kib, thousands, Load,
    TempDir,
};
use muster_tests::{free_port, health_endpoint, query_packet, wait_until, Agent};

const SERVERS: usize = 3;
const MANY: usize = 64;
const VALUE: &[u8] = b"0123456789abcdef";
const KEYS: u64 = 1000;
/// Instances of `web` for the health phase: two on each of the five agents.
const WEB: usize = 10;
const FLIPS: usize = 5;
const KILLS: usize = 3;
/// The first agent's address; the others follow (servers, then clients).
const FIRST_IP: u8 = 120;
const PATIENCE: Duration = Duration::from_secs(30);
/// How often DNS is asked while a change is awaited.
const POLL: Duration = Duration::from_millis(10);

/// Three servers and the client agents, all killed (SIGKILL) when dropped.
struct Fleet {
    // Declared before `dir`: the agents are killed before their data dirs are removed.
    servers: Vec<Agent>,
    clients: Vec<Agent>,
    /// Clients killed by the kill -9 runs, kept so their logs can be shown.
    killed: Vec<Agent>,
    server_ports: Vec<u16>,
    serf: String,
    next_ip: u8,
    dir: TempDir,
}

impl Fleet {
    fn start() -> Fleet {
        let dir = TempDir::new("clients");
        let mut f = Fleet {
            servers: Vec::new(),
            clients: Vec::new(),
            killed: Vec::new(),
            server_ports: free_ports(SERVERS),
            serf: free_port().to_string(),
            next_ip: FIRST_IP,
            dir,
        };
        for i in 0..SERVERS {
            let port = f.server_ports[i].to_string();
            let extra = ["-server", "-bootstrap-expect", "3", "-server-port", &port];
            let args = f.args(&format!("s{i}"), &extra);
            f.servers.push(Agent::launch(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        }
        for s in &mut f.servers {
            s.wait_ready();
        }
        for i in 0..2 {
            f.add_client(&format!("c{i}"));
        }
        f
    }

    /// An agent's flags, on the next free address.
    fn args(&mut self, node: &str, extra: &[&str]) -> Vec<String> {
        let ip = format!("127.0.0.{}", self.next_ip);
        self.next_ip += 1;
        let data = self.dir.0.join(node).display().to_string();
        // Every agent joins through the servers' gossip addresses (a server through the others).
        let joins = (0..SERVERS as u8).map(|i| format!("127.0.0.{}:{}", FIRST_IP + i, self.serf));
        let mut args: Vec<String> = [
            "-data-dir",
            &data,
            "-node",
            node,
            "-bind",
            &ip,
            "-client",
            "127.0.0.1",
            "-serf-lan-port",
            &self.serf,
            "-retry-interval",
            "1s",
            "-log-level",
            "info",
        ]
        .map(String::from)
        .into();
        args.extend(
            joins.filter(|j| !j.starts_with(&format!("{ip}:"))).flat_map(|j| ["-retry-join".into(), j]),
        );
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Starts a client agent and waits until it answers with a leader (through a server).
    fn add_client(&mut self, node: &str) -> &Agent {
        let args = self.args(node, &[]);
        self.clients.push(Agent::start(&args.iter().map(String::as_str).collect::<Vec<_>>()));
        self.clients.last().expect("just added")
    }

    fn all(&self) -> impl Iterator<Item = &Agent> {
        self.servers.iter().chain(&self.clients)
    }

    fn pids(&self) -> Vec<u32> {
        self.all().map(Agent::pid).collect()
    }

    /// The server (index) the servers name as leader, once they agree.
    fn leader(&self) -> Option<usize> {
        let seen: Vec<Option<usize>> = self
            .servers
            .iter()
            .map(|s| {
                let text = muster_tests::http("GET", &s.url("/v1/status/leader"), None).ok()?.text();
                let port = text.trim_matches('"').rsplit_once(':')?.1.parse::<u16>().ok()?;
                self.server_ports.iter().position(|&p| p == port)
            })
            .collect();
        seen.windows(2).all(|w| w[0] == w[1]).then_some(seen[0]).flatten()
    }

    /// The servers (indexes) process `pid` holds established TCP connections to on their
    /// server ports: which server a client agent sends its calls to.
    fn servers_used_by(&self, pid: u32) -> Vec<usize> {
        let inodes: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter_map(|l| {
                let l = l.display().to_string();
                Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
            })
            .collect();
        let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).unwrap_or_default();
        let mut used: Vec<usize> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let f: Vec<&str> = line.split_whitespace().collect();
                if f.len() < 10 || f[3] != "01" || !inodes.contains(f[9]) {
                    return None;
                }
                let port = u16::from_str_radix(f[2].rsplit_once(':')?.1, 16).ok()?;
                self.server_ports.iter().position(|&p| p == port)
            })
            .collect();
        used.sort();
        used.dedup();
        used
    }

    /// What each live agent says about the members and, for servers, the critical checks
    /// in their own state (`?stale`): printed when the bench fails, to say where it stuck.
    fn snapshot(&self) -> String {
        let get = |a: &Agent, path: &str| -> serde_json::Value {
            let r = ureq::get(&a.url(path)).timeout(Duration::from_secs(2)).call();
            r.ok().and_then(|r| r.into_json().ok()).unwrap_or_default()
        };
        let mut out = String::new();
        for a in self.all() {
            let name = get(a, "/v1/agent/self")["Config"]["NodeName"].as_str().unwrap_or("?").to_string();
            let members: Vec<String> = get(a, "/v1/agent/members")
                .as_array()
                .into_iter()
                .flatten()
                .map(|m| format!("{}={}", m["Name"].as_str().unwrap_or("?"), m["Status"]))
                .collect();
            out += &format!("{name} (HTTP {}): members {}\n", a.http_port, members.join(" "));
        }
        for (i, s) in self.servers.iter().enumerate() {
            let critical: Vec<String> = get(s, "/v1/health/state/critical?stale")
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    format!("{}/{}", c["Node"].as_str().unwrap_or("?"), c["CheckID"].as_str().unwrap_or("?"))
                })
                .collect();
            out += &format!("s{i}: critical checks (stale) {}\n", critical.join(" "));
        }
        out
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in self.all().chain(&self.killed) {
                let log = a.log_text();
                let tail: Vec<&str> =
                    log.lines().filter(|l| l.contains(" WARN ") || l.contains(" INFO ")).collect();
                let tail = &tail[tail.len().saturating_sub(40)..];
                eprintln!(
                    "---- agent on HTTP port {} (its last log lines) ----\n{}",
                    a.http_port,
                    tail.join("\n")
                );
            }
            eprintln!("---- the live agents' views ----\n{}", self.snapshot());
        }
    }
}

/// The SRV answers `name` gets from the DNS server on `port` over UDP, or what went wrong.
fn srv(port: u16, name: &str) -> Result<usize, String> {
    let sock = UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_millis(500))).map_err(|e| e.to_string())?;
    sock.send_to(&query_packet(name, RecordType::SRV, None), ("127.0.0.1", port))
        .map_err(|e| e.to_string())?;
    let mut buf = [0u8; 4096];
    let n = sock.recv(&mut buf).map_err(|e| format!("no answer in 500 ms ({e})"))?;
    let m = Message::from_vec(&buf[..n]).map_err(|e| e.to_string())?;
    match m.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain => Ok(m.answers().len()),
        other => Err(format!("rcode {other}")),
    }
}

/// Polls `name`'s SRV answers on `port` every 10 ms until there are `want`, timed from `t0`;
/// DNS errors on the way are counted in `odd` (with the first one's text).
fn dns_until(port: u16, name: &str, want: usize, t0: Instant, odd: &mut Vec<String>) -> Duration {
    let (mut errors, mut first_error) = (0, String::new());
    loop {
        let last = srv(port, name);
        match &last {
            Ok(n) if *n == want => break,
            Ok(_) => {}
            Err(e) => {
                if errors == 0 {
                    first_error = e.clone();
                }
                errors += 1;
            }
        }
        assert!(
            t0.elapsed() < PATIENCE,
            "{name}: not {want} SRV answers within {PATIENCE:?}; the last query got {last:?}, \
             {errors} DNS errors on the way (first: {first_error:?})"
        );
        std::thread::sleep(POLL);
    }
    let took = t0.elapsed();
    if errors > 0 {
        odd.push(format!(
            "{errors} DNS errors while waiting for {want} `{name}` answers (first: {first_error})"
        ));
    }
    took
}

/// The load phases' settings and what they noticed on the way.
struct Phases<'a> {
    rt: &'a tokio::runtime::Runtime,
    secs: u64,
    odd: &'a mut Vec<String>,
}

impl Phases<'_> {
    /// Runs one load phase against `target`, returning it with every agent's CPU time per
    /// request and the resident memory (KiB) of `target` after it. Panics if it overruns by
    /// a minute (a stalled agent).
    fn run(&mut self, fleet: &Fleet, target: &Agent, what: &str, make: Make, ok: Check) -> (Load, u64) {
        progress(what.to_string());
        let pids = fleet.pids();
        let (leader, cpu) = (fleet.leader(), cpu_time_of(&pids));
        let secs = self.secs;
        let load = self.rt.block_on(async {
            let run = http_load(target.http_port, MANY, secs, make, ok);
            tokio::time::timeout(Duration::from_secs(secs + 60), run).await.expect("the load phase stalled")
        });
        let cpu = cpu_time_of(&pids) - cpu;
        let rss = rss_kib(target.pid());
        if fleet.leader() != leader {
            self.odd
                .push(format!("{what}: leader changed during the phase ({leader:?} → {:?})", fleet.leader()));
        }
        if load.errors > 0 {
            self.odd.push(format!("{what}: {} errors (the first one is on stderr)", load.errors));
        }
        let load = Load { cpu_per_req: cpu / u32::try_from(load.count.max(1)).unwrap_or(u32::MAX), ..load };
        progress(format!("{what}: {}", cell((load, rss))));
        (load, rss)
    }
}

/// A phase's request for connection `c`'s `n`th, and what its answer's body must be.
type Make = fn(usize, u64) -> hyper::Request<http_body_util::Full<Bytes>>;
type Check = fn(&[u8]) -> bool;

fn put_req(c: usize, n: u64) -> hyper::Request<http_body_util::Full<Bytes>> {
    request("PUT", format!("/v1/kv/bench/{}", (c as u64 * 16 + n) % KEYS), Bytes::from_static(VALUE))
}

fn get_req(c: usize, n: u64) -> hyper::Request<http_body_util::Full<Bytes>> {
    request("GET", format!("/v1/kv/bench/{}?raw", (c as u64 * 16 + n) % KEYS), Bytes::new())
}

fn health_req(_: usize, _: u64) -> hyper::Request<http_body_util::Full<Bytes>> {
    request("GET", "/v1/health/service/web?passing".into(), Bytes::new())
}

/// Entries in a `/v1/health/service` answer: each has one `"Checks"` list.
fn entries(body: &[u8]) -> usize {
    body.windows(8).filter(|w| w == b"\"Checks\"").count()
}

fn cell((l, rss): (Load, u64)) -> String {
    let errors = if l.errors > 0 { format!(", **{} errors**", l.errors) } else { ", 0 errors".into() };
    format!(
        "{} req/s (p50 {}, p99 {}, p99.9 {}; {} µs CPU/req; RSS {:.1} MiB{errors})",
        thousands(l.rps),
        ms(l.p50),
        ms(l.p99),
        ms(l.p999),
        l.cpu_per_req.as_micros(),
        rss as f64 / 1024.0
    )
}

fn ratio(c: (Load, u64), s: (Load, u64)) -> String {
    let (c, s) = (c.0, s.0);
    format!(
        "{:.2}× req/s, {:.2}× p50, {:.2}× CPU/req",
        c.rps / s.rps.max(1e-9),
        c.p50.as_secs_f64() / s.p50.as_secs_f64().max(1e-9),
        c.cpu_per_req.as_secs_f64() / s.cpu_per_req.as_secs_f64().max(1e-9)
    )
}

fn times(v: &[Duration]) -> String {
    let max = v.iter().max().copied().unwrap_or_default();
    let all: Vec<String> = v.iter().map(|d| format!("{:.0}", d.as_secs_f64() * 1e3)).collect();
    format!(
        "median {} ms, max {} ms (runs: {} ms)",
        thousands(median(v).unwrap_or_default().as_secs_f64() * 1e3),
        thousands(max.as_secs_f64() * 1e3),
        all.join(", ")
    )
}

fn main() {
    let Some(bench::Run { secs, rt, started, loadavg }) = bench::start() else {
        return; // `cargo test --all-targets` probes benches; nothing to list
    };
    let mut odd: Vec<String> = Vec::new();

    progress("starting 3 servers and 2 client agents".into());
    let mut fleet = Fleet::start();
    wait_until("five alive members on every agent", PATIENCE, || {
        fleet.all().all(|a| {
            let v = a.get("/v1/agent/members").json();
            v.as_array().is_some_and(|m| m.iter().filter(|x| x["Status"] == 1).count() == 5)
        })
    });
    let leader = wait_until_some("a leader all servers name", || fleet.leader());
    // Every KV key the phases use, written once, so every GET finds its key.
    for k in 0..KEYS {
        let r = fleet.clients[0].put(&format!("/v1/kv/bench/{k}"), VALUE);
        assert_eq!(r.text(), "true", "prefill bench/{k}");
    }
    for (i, a) in fleet.all().enumerate() {
        for k in 0..WEB / 5 {
            let def = format!(r#"{{"Name": "web", "ID": "web-{i}-{k}", "Port": {}}}"#, 9000 + i * 10 + k);
            assert_eq!(a.put("/v1/agent/service/register", def.as_bytes()).status, 200, "register web");
        }
    }
    wait_until("10 passing instances of web on every agent", PATIENCE, || {
        fleet.all().all(|a| entries(&a.get("/v1/health/service/web?passing").body) == WEB)
    });
    let client_pid = fleet.clients[0].pid();
    let used = fleet.servers_used_by(client_pid);
    let via = *used.first().expect("client A holds a connection to a server");
    if used.len() != 1 {
        odd.push(format!("client A holds connections to servers {used:?} before the load"));
    }
    let role = if via == leader { "the leader" } else { "a follower" };
    progress(format!("leader is s{leader}; client A (c0) sends its calls to s{via} ({role})"));

    let cases: [(&str, Make, Check); 3] = [
        ("KV PUT, 16 B values over 1,000 keys", put_req, |b| b == b"true"),
        ("KV GET, default consistency", get_req, |b| b == VALUE),
        ("`GET /v1/health/service/web?passing`, 10 instances", health_req, |b| entries(b) == WEB),
    ];
    let mut phases = Phases { rt: &rt, secs, odd: &mut odd };
    let mut rows = Vec::new();
    for (what, make, ok) in cases {
        let through = phases.run(&fleet, &fleet.clients[0], &format!("{what}, through client A"), make, ok);
        let straight =
            phases.run(&fleet, &fleet.servers[via], &format!("{what}, straight to s{via}"), make, ok);
        rows.push((what, through, straight));
    }
    let used_after = fleet.servers_used_by(client_pid);
    if used_after != used {
        odd.push(format!(
            "client A's server connections went from {used:?} to {used_after:?} during the load"
        ));
    }

    // Check critical on client A → out of DNS on client B.
    let code = Arc::new(AtomicU16::new(200));
    let port = health_endpoint(code.clone());
    let def = format!(
        r#"{{"Name": "flip", "Port": {port}, "Check": {{"HTTP": "http://127.0.0.1:{port}/", "Interval": "1s"}}}}"#
    );
    assert_eq!(fleet.clients[0].put("/v1/agent/service/register", def.as_bytes()).status, 200);
    let b_dns = fleet.clients[1].dns_port;
    dns_until(b_dns, "flip.service.consul", 1, Instant::now(), &mut odd);
    let (mut gone, mut back) = (Vec::new(), Vec::new());
    for run in 0..FLIPS {
        // Flip at a different point of the check's 1 s cycle each run.
        std::thread::sleep(Duration::from_millis(250 + 150 * run as u64));
        code.store(503, Ordering::SeqCst);
        let took = dns_until(b_dns, "flip.service.consul", 0, Instant::now(), &mut odd);
        progress(format!("check critical on c0 → gone from DNS on c1, run {}: {took:?}", run + 1));
        gone.push(took);
        code.store(200, Ordering::SeqCst);
        back.push(dns_until(b_dns, "flip.service.consul", 1, Instant::now(), &mut odd));
    }

    // kill -9 of a client → its service out of DNS on client B, each run on a fresh client.
    let mut killed = Vec::new();
    for run in 0..KILLS {
        let node = format!("k{run}");
        let name = format!("api{run}");
        let def = format!(r#"{{"Name": "{name}", "Port": 81}}"#);
        let victim = fleet.add_client(&node);
        assert_eq!(victim.put("/v1/agent/service/register", def.as_bytes()).status, 200);
        let qname = format!("{name}.service.consul");
        dns_until(b_dns, &qname, 1, Instant::now(), &mut odd);
        let mut victim = fleet.clients.pop().expect("the victim");
        let t0 = Instant::now();
        victim.kill();
        fleet.killed.push(victim);
        let took = dns_until(b_dns, &qname, 0, t0, &mut odd);
        progress(format!("kill -9 of {node} → {name} gone from DNS on c1, run {}: {took:?}", run + 1));
        killed.push(took);
    }
    let leader_end = fleet.leader();
    if leader_end != Some(leader) {
        odd.push(format!("the leader changed during the run: s{leader} → {leader_end:?}"));
    }
    drop(fleet);

    let date = std::process::Command::new("date")
        .args(["-u", "+%F"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!();
    println!("Command: `cargo bench -p muster-tests --bench clients`. Measured {date}:");
    println!();
    println!(
        "| case ({MANY} keep-alive connections, {secs} s each) | through client agent A | straight to s{via} \
         ({role}), A's server | through A / straight |"
    );
    println!("|---|---|---|---|");
    for (what, through, straight) in rows {
        println!("| {what} | {} | {} | {} |", cell(through), cell(straight), ratio(through, straight));
    }
    println!();
    println!("| timing, polled every 10 ms over UDP DNS on client B | result |");
    println!("|---|---|");
    println!(
        "| HTTP check (1 s interval) turns critical on client A → instance gone from DNS | {} |",
        times(&gone)
    );
    println!("| the same check healthy again → instance back in DNS | {} |", times(&back));
    println!("| kill -9 of a client (fresh each run) → its service gone from DNS | {} |", times(&killed));
    println!();
    for o in &odd {
        println!("- **odd**: {o}");
    }
    println!(
        "\nCPU/req is the CPU time (user + system) of all five agents per successful request; RSS is \
         the agent that took the requests, after its phase. Servers keep their data on {} (every \
         write fsynced); agents run Consul's default timers (ae_interval 60 s, LAN gossip). The \
         agents and the load generator (1 tokio thread) share the machine's {} cores (load average \
         {loadavg} at start); whole run {:.0} s.",
        std::env::temp_dir().display(),
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
}

/// Polls `f` every 50 ms until it yields a value, panicking with `what` after `PATIENCE`.
fn wait_until_some<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let mut v = None;
    wait_until(what, PATIENCE, || {
        v = f();
        v.is_some()
    });
    v.expect("wait_until returned")
}
