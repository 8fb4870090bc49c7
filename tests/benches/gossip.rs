//! Gossip benchmark, muster against real Serf: `cargo bench -p muster-tests --bench gossip`.
//!
//! For each cluster size N it starts N release `muster agent -server` processes (no
//! `-bootstrap`, so no Raft cluster forms: only the gossip pools work), each on its own
//! loopback ports, all `-retry-join`ing the first; then, when `serf` is installed
//! (`apt-get install serf`), N `serf agent -profile=lan` processes joining the first with
//! `-join`. Both use the memberlist/serf LAN timers (probe 1 s, probe timeout 500 ms, gossip
//! 200 ms to 3 members, suspicion multiplier 4, retransmit multiplier 4, push-pull 30 s). Only
//! one system runs at a time; every agent is killed (SIGKILL) when its handle drops, panics
//! included, and each (system, N) gets its own port range, checked free for TCP and UDP.
//!
//! Per system and N it measures:
//! 1. join convergence: the first agent is started and answers; then the other N−1 are
//!    spawned back to back; time from the last spawn until every agent sees N alive members;
//! 2. event spread: one user event fired on the first agent (muster `PUT /v1/event/fire`,
//!    serf the RPC `event` command with coalescing off, both over a fresh loopback
//!    connection); time from sending the request until every agent has received it;
//! 3. failure detection: kill -9 of one agent; time until every survivor marks it failed;
//! 4. idle cost: after a quiet period, CPU time (utime + stime from /proc/PID/stat) per agent
//!    over an idle window, in ms of CPU per minute, and resident memory (VmRSS) per agent,
//!    both means over the agents.
//!
//! Times come from the agents' own output, stamped by the bench as each line arrives (one
//! reader thread per agent, blocked in `read`, so idle agents cost the bench nothing): muster's
//! `member changed pool=Lan member=.. change=..` log lines (stderr) and serf's `serf:
//! EventMemberJoin/Failed/Leave: ..` and `agent: Received event: user-event: ..` lines
//! (stdout; serf's own stamps have only second resolution). muster does not log user events,
//! so each muster agent has one blocking query (`GET /v1/event/list?index=..`) parked while
//! the event spreads, stamped when it answers. For each time the table gives the slowest
//! agent (what "every agent" means) and, in brackets, the median agent.
//!
//! The serf agents carry the tags a muster server gossips (Consul's set: role, dc, id,
//! versions, ports), so both pools move members of the same size.
//!
//! muster servers flood-join every LAN server into their WAN pool too (as Consul's do), a
//! second pool of N members with WAN timers that a serf agent does not run; so the muster
//! agents run with `-serf-wan-port -1` (LAN pool only) unless `GOSSIP_BENCH_MUSTER_WAN=1`.
//!
//! Knobs: `GOSSIP_BENCH_SIZES` (default `20,50,100`), `GOSSIP_BENCH_QUIET` seconds before the
//! idle window (default 20), `GOSSIP_BENCH_IDLE` seconds of idle window (default 30),
//! `GOSSIP_BENCH_TIMEOUT` seconds any one phase may take (default 120),
//! `GOSSIP_BENCH_PORT_BASE` the first port tried (default 20000, below Linux's ephemeral
//! range; each run takes 1000 ports from there on), `SERF_BIN` (default `serf` on PATH).
//! Without serf the muster half still runs and the output says serf was skipped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use muster_tests::bench::{cpu_time, rss_kib, TempDir};
use muster_tests::muster_bin;

/// The event name fired in the event-spread phase.
const EVENT: &str = "gossip-bench";
/// Log lines kept per agent for diagnostics.
const TAIL: usize = 30;

/// The system under test.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Sys {
    Muster,
    Serf,
}

impl Sys {
    fn name(self) -> &'static str {
        match self {
            Sys::Muster => "muster",
            Sys::Serf => "serf",
        }
    }
}

/// What one agent's output said so far, each item stamped when the bench read it.
#[derive(Default)]
struct Seen {
    /// Membership changes in order: (when, member, alive after the change).
    changes: Vec<(Instant, String, bool)>,
    /// First arrival of each user event, by name.
    events: HashMap<String, Instant>,
    /// The last lines, for diagnostics.
    tail: VecDeque<String>,
}

impl Seen {
    /// When this agent (`me`) last came to see every one of `all` alive, if it does now.
    fn converged(&self, me: &str, all: &HashSet<String>) -> Option<Instant> {
        let mut alive: HashSet<&str> = HashSet::new();
        let mut since = None;
        for (t, name, up) in &self.changes {
            if name == me || !all.contains(name) {
                continue;
            }
            if *up {
                alive.insert(name);
            } else {
                alive.remove(name.as_str());
            }
            since = match (alive.len() + 1 == all.len(), since) {
                (true, None) => Some(*t),
                (true, s) => s,
                (false, _) => None,
            };
        }
        since
    }

    /// When this agent first marked `who` failed (or left) at or after `after`.
    fn marked_down(&self, who: &str, after: Instant) -> Option<Instant> {
        self.changes.iter().find(|(t, n, up)| *t >= after && n == who && !up).map(|(t, ..)| *t)
    }
}

/// One line of agent output → what it says, if anything the bench follows.
fn parse_line(sys: Sys, line: &str, seen: &mut Seen, now: Instant) {
    match sys {
        Sys::Muster => {
            // `... INFO muster_runtime_tokio::host: member changed pool=Lan member=n3 change=Failed`
            if !line.contains("member changed") || !line.contains("pool=Lan") {
                return;
            }
            let field = |k: &str| line.split_whitespace().find_map(|w| w.strip_prefix(k)).map(String::from);
            if let (Some(member), Some(change)) = (field("member="), field("change=")) {
                match change.as_str() {
                    "Joined" => seen.changes.push((now, member, true)),
                    "Failed" | "Left" | "Reaped" => seen.changes.push((now, member, false)),
                    _ => {}
                }
            }
        }
        Sys::Serf => {
            // `    2024/01/01 00:00:00 [INFO] serf: EventMemberJoin: n3 127.0.0.1`
            if let Some((_, rest)) = line.split_once("serf: EventMember") {
                let (kind, rest) = rest.split_once(": ").unwrap_or((rest, ""));
                let Some(member) = rest.split_whitespace().next().map(String::from) else { return };
                match kind {
                    "Join" => seen.changes.push((now, member, true)),
                    "Failed" | "Leave" | "Reap" => seen.changes.push((now, member, false)),
                    _ => {}
                }
            } else if let Some((_, name)) = line.split_once("agent: Received event: user-event: ") {
                seen.events.entry(name.trim().to_string()).or_insert(now);
            }
        }
    }
}

/// Reads `out` line by line until EOF, stamping and recording each line.
fn follow(sys: Sys, out: impl Read + Send + 'static, seen: Arc<Mutex<Seen>>) {
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        let mut line = String::new();
        loop {
            line.clear();
            match r.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let now = Instant::now();
                    let mut s = seen.lock().unwrap();
                    parse_line(sys, &line, &mut s, now);
                    if s.tail.len() == TAIL {
                        s.tail.pop_front();
                    }
                    s.tail.push_back(line.trim_end().to_string());
                }
            }
        }
    });
}

/// One agent process; killed (SIGKILL) and reaped when dropped.
struct Node {
    child: Child,
    name: String,
    /// muster: the HTTP port; serf: the RPC port.
    api_port: u16,
    seen: Arc<Mutex<Seen>>,
}

impl Node {
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn tail(&self) -> String {
        self.seen.lock().unwrap().tail.iter().cloned().collect::<Vec<_>>().join("\n")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Hands out loopback ports free for both TCP and UDP, scanning up from a base.
struct Ports(u16);

impl Ports {
    fn take(&mut self) -> u16 {
        loop {
            let p = self.0;
            self.0 = self.0.checked_add(1).expect("ran out of ports");
            let tcp = TcpListener::bind(("127.0.0.1", p)).is_ok();
            if tcp && UdpSocket::bind(("127.0.0.1", p)).is_ok() {
                return p;
            }
        }
    }
}

/// How to start one system's agents.
struct Launcher {
    sys: Sys,
    bin: PathBuf,
    dir: TempDir,
    ports: Ports,
    /// How agent n1 was started.
    example: String,
    /// muster only: run the WAN pool as well (`GOSSIP_BENCH_MUSTER_WAN=1`).
    muster_wan: bool,
}

impl Launcher {
    /// The command line of agent `i` (`join` is the first agent's gossip port, for all others).
    fn args(&mut self, i: usize, join: Option<u16>) -> (Vec<String>, u16, u16) {
        let name = format!("n{i}");
        let mut a: Vec<String> = Vec::new();
        let mut push = |xs: &[&str]| a.extend(xs.iter().map(|s| s.to_string()));
        match self.sys {
            Sys::Muster => {
                let (http, server, lan, wan) =
                    (self.ports.take(), self.ports.take(), self.ports.take(), self.ports.take());
                let data = self.dir.0.join(&name).display().to_string();
                push(&["agent", "-server", "-data-dir", &data, "-node", &name]);
                push(&["-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "info"]);
                push(&["-http-port", &http.to_string(), "-dns-port", "-1"]);
                push(&["-server-port", &server.to_string()]);
                // Servers flood-join every LAN server into their WAN pool: a second pool of N
                // that serf does not have. Off (`-serf-wan-port -1`) unless asked for.
                let wan = if self.muster_wan { wan.to_string() } else { "-1".into() };
                push(&["-serf-lan-port", &lan.to_string(), "-serf-wan-port", &wan]);
                if let Some(j) = join {
                    push(&["-retry-join", &format!("127.0.0.1:{j}")]);
                }
                (a, http, lan)
            }
            Sys::Serf => {
                let (bind, rpc) = (self.ports.take(), self.ports.take());
                push(&["agent", "-node", &name, "-profile=lan", "-log-level=info"]);
                // The tags a muster server gossips (Consul's set), so both pools carry
                // members of the same size.
                let id = format!("-tag=id=00000000-0000-4000-8000-{i:012}");
                let port = format!("-tag=port={}", 8300 + i);
                push(&[
                    "-tag=role=consul",
                    "-tag=dc=dc1",
                    "-tag=segment=",
                    &id,
                    "-tag=vsn=2",
                    "-tag=vsn_min=2",
                ]);
                push(&["-tag=vsn_max=3", "-tag=build=1.22.0:muster-0.1.0", "-tag=acls=0", "-tag=ft_fs=1"]);
                push(&["-tag=ft_si=1", &port, "-tag=raft_vsn=3", "-tag=wan_join_port=-1"]);
                push(&["-bind", &format!("127.0.0.1:{bind}"), "-rpc-addr", &format!("127.0.0.1:{rpc}")]);
                if let Some(j) = join {
                    push(&["-join", &format!("127.0.0.1:{j}")]);
                }
                (a, rpc, bind)
            }
        }
    }

    /// Spawns agent `i`; returns it and its gossip port.
    fn spawn(&mut self, i: usize, join: Option<u16>) -> (Node, u16) {
        let (args, api_port, gossip) = self.args(i, join);
        if i == 1 {
            self.example = format!("{} {}", self.bin.display(), args.join(" "));
        }
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut cmd = Command::new(&self.bin);
        cmd.args(&args).stdin(Stdio::null());
        let mut child = match self.sys {
            // muster logs (tracing) to stderr; serf logs to stdout, errors to stderr.
            Sys::Muster => cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn(),
            Sys::Serf => {
                let err = std::fs::File::create(self.dir.0.join(format!("n{i}.err"))).expect("stderr file");
                cmd.stdout(Stdio::piped()).stderr(err).spawn()
            }
        }
        .unwrap_or_else(|e| panic!("spawn {}: {e}", self.bin.display()));
        match self.sys {
            Sys::Muster => follow(self.sys, child.stderr.take().expect("piped stderr"), seen.clone()),
            Sys::Serf => follow(self.sys, child.stdout.take().expect("piped stdout"), seen.clone()),
        }
        (Node { child, name: format!("n{i}"), api_port, seen }, gossip)
    }

    /// Whether agent `node` answers its API (muster HTTP, serf RPC).
    fn ready(&self, node: &Node) -> bool {
        match self.sys {
            Sys::Muster => ureq::get(&format!("http://127.0.0.1:{}/v1/agent/members", node.api_port))
                .timeout(Duration::from_secs(1))
                .call()
                .is_ok(),
            Sys::Serf => TcpStream::connect(("127.0.0.1", node.api_port)).is_ok(),
        }
    }
}

/// Spread of one phase over the agents: the median and the slowest agent.
#[derive(Clone, Copy)]
struct Spread {
    median: Duration,
    max: Duration,
}

impl Spread {
    fn of(mut v: Vec<Duration>) -> Spread {
        v.sort();
        Spread { median: v[v.len() / 2], max: *v.last().expect("at least one agent") }
    }
}

/// Everything measured on one (system, N).
struct Run {
    join: Result<Spread, String>,
    event: Result<Spread, String>,
    detect: Result<Spread, String>,
    /// Mean CPU ms per minute per agent, and mean RSS in MiB per agent, over the idle window.
    cpu_ms_per_min: f64,
    rss_mib: f64,
    /// Members wrongly marked failed by some agent (changes to failed of a live member).
    false_failures: usize,
    /// The API's member view disagreed with the log view after convergence.
    api_mismatch: Vec<String>,
    /// How agent n1 was started.
    command: String,
}

/// A progress line on stderr, stamped with the seconds since the bench started.
fn progress(what: String) {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    eprintln!("[{:6.1} s] {what}", START.get_or_init(Instant::now).elapsed().as_secs_f64());
}

/// Polls `f` every 100 ms until it yields a value or `timeout` passes.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---- a minimal msgpack client for serf's RPC (handshake + event) ----

fn mp_str(out: &mut Vec<u8>, s: &str) {
    assert!(s.len() < 256, "short strings only");
    if s.len() < 32 {
        out.push(0xa0 | s.len() as u8);
    } else {
        out.extend([0xd9, s.len() as u8]);
    }
    out.extend(s.as_bytes());
}

/// A msgpack map of string keys to string, small unsigned or bool values.
enum Mp<'a> {
    S(&'a str),
    U(u8),
    B(bool),
}

fn mp_map(out: &mut Vec<u8>, kv: &[(&str, Mp)]) {
    out.push(0x80 | kv.len() as u8);
    for (k, v) in kv {
        mp_str(out, k);
        match v {
            Mp::S(s) => mp_str(out, s),
            Mp::U(u) => {
                assert!(*u < 128);
                out.push(*u)
            }
            Mp::B(b) => out.push(if *b { 0xc3 } else { 0xc2 }),
        }
    }
}

/// Reads one msgpack value made of maps, strings, binaries, unsigned ints, bools and nil;
/// returns the strings it held, in order.
fn mp_read(r: &mut impl Read, strings: &mut Vec<String>) -> std::io::Result<()> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b)?;
    let n = |len: usize, r: &mut dyn Read| -> std::io::Result<usize> {
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        Ok(buf.iter().fold(0usize, |acc, &x| acc << 8 | x as usize))
    };
    let bytes = |len: usize, r: &mut dyn Read, strings: &mut Vec<String>| -> std::io::Result<()> {
        let mut buf = vec![0u8; len];
        r.read_exact(&mut buf)?;
        strings.push(String::from_utf8_lossy(&buf).into_owned());
        Ok(())
    };
    match b[0] {
        0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 => Ok(()),
        0xcc => n(1, r).map(drop),
        0xcd => n(2, r).map(drop),
        0xce => n(4, r).map(drop),
        0xcf => n(8, r).map(drop),
        x @ 0xa0..=0xbf => bytes((x & 0x1f) as usize, r, strings),
        0xd9 | 0xc4 => {
            let len = n(1, r)?;
            bytes(len, r, strings)
        }
        0xda | 0xc5 => {
            let len = n(2, r)?;
            bytes(len, r, strings)
        }
        x @ (0x80..=0x8f | 0xde) => {
            let len = if x == 0xde { n(2, r)? } else { (x & 0x0f) as usize };
            for _ in 0..2 * len {
                mp_read(r, strings)?;
            }
            Ok(())
        }
        x => Err(std::io::Error::other(format!("unexpected msgpack byte {x:#x}"))),
    }
}

/// Reads one RPC response header ({Seq, Error}); `Err` with the agent's error if it has one.
fn serf_reply(s: &mut TcpStream) -> Result<(), String> {
    let mut strings = Vec::new();
    mp_read(s, &mut strings).map_err(|e| e.to_string())?;
    // Keys and values in order: the value after "Error" is the error text.
    match strings.iter().position(|k| k == "Error").and_then(|i| strings.get(i + 1)) {
        Some(e) if !e.is_empty() => Err(e.clone()),
        _ => Ok(()),
    }
}

/// Fires user event `name` (coalescing off) through the serf agent whose RPC is on `port`;
/// returns when the request was sent.
fn serf_fire(port: u16, name: &str) -> Result<Instant, String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut msg = Vec::new();
    mp_map(&mut msg, &[("Command", Mp::S("handshake")), ("Seq", Mp::U(0))]);
    mp_map(&mut msg, &[("Version", Mp::U(1))]);
    s.write_all(&msg).map_err(|e| e.to_string())?;
    serf_reply(&mut s)?;
    let mut msg = Vec::new();
    mp_map(&mut msg, &[("Command", Mp::S("event")), ("Seq", Mp::U(1))]);
    mp_map(&mut msg, &[("Name", Mp::S(name)), ("Coalesce", Mp::B(false))]);
    let t0 = Instant::now();
    s.write_all(&msg).map_err(|e| e.to_string())?;
    serf_reply(&mut s)?;
    Ok(t0)
}

/// Members with Status 1 (alive) in a muster agent's `/v1/agent/members`.
fn muster_alive(port: u16) -> Option<usize> {
    let r = ureq::get(&format!("http://127.0.0.1:{port}/v1/agent/members"))
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?;
    let v: serde_json::Value = serde_json::from_str(&r.into_string().ok()?).ok()?;
    Some(v.as_array()?.iter().filter(|m| m["Status"] == 1).count())
}

/// Alive members a serf agent lists (`serf members -status alive`).
fn serf_alive(bin: &PathBuf, port: u16) -> Option<usize> {
    let out = Command::new(bin)
        .args(["members", "-status", "alive", "-rpc-addr", &format!("127.0.0.1:{port}")])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).lines().count())
}

/// Event spread on muster: parks one blocking `/v1/event/list` query on every agent, fires
/// the event on agent 0 and stamps each query's answer.
fn muster_event(nodes: &[Node], timeout: Duration) -> Result<(Instant, Vec<Option<Instant>>), String> {
    let ready = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let waiters: Vec<_> = nodes
        .iter()
        .map(|n| {
            let (port, ready, stop) = (n.api_port, ready.clone(), stop.clone());
            std::thread::spawn(move || -> Option<Instant> {
                let url = format!("http://127.0.0.1:{port}/v1/event/list");
                let first = ureq::get(&url).timeout(Duration::from_secs(10)).call();
                let mut index = first.ok().and_then(|r| r.header("X-Consul-Index").map(String::from));
                ready.fetch_add(1, Ordering::SeqCst);
                while !stop.load(Ordering::SeqCst) {
                    let idx = index.clone().unwrap_or_else(|| "0".into());
                    let r = ureq::get(&format!("{url}?index={idx}&wait=20s"))
                        .timeout(Duration::from_secs(30))
                        .call()
                        .ok()?;
                    index = r.header("X-Consul-Index").map(String::from);
                    let body = r.into_string().ok()?;
                    let now = Instant::now();
                    if body.contains(&format!("\"Name\":\"{EVENT}\"")) {
                        return Some(now);
                    }
                }
                None
            })
        })
        .collect();
    poll(Duration::from_secs(30), || (ready.load(Ordering::SeqCst) == nodes.len()).then_some(()))
        .ok_or("event-list waiters did not start")?;
    std::thread::sleep(Duration::from_millis(300)); // let the blocking queries park
    let url = format!("http://127.0.0.1:{}/v1/event/fire/{EVENT}", nodes[0].api_port);
    let t0 = Instant::now();
    ureq::put(&url).timeout(Duration::from_secs(10)).call().map_err(|e| format!("fire: {e}"))?;
    // Waiters return as the event arrives; the rest give up after the timeout.
    poll(timeout, || waiters.iter().all(|w| w.is_finished()).then_some(()));
    stop.store(true, Ordering::SeqCst);
    let got =
        waiters.into_iter().map(|w| if w.is_finished() { w.join().ok().flatten() } else { None }).collect();
    Ok((t0, got))
}

/// Runs every phase on one system with `n` agents.
fn measure(mut l: Launcher, n: usize, quiet: Duration, idle: Duration, timeout: Duration) -> Run {
    let sys = l.sys;
    let name = sys.name();
    let all: HashSet<String> = (0..n).map(|i| format!("n{i}")).collect();

    // 1. join convergence
    let (first, seed) = l.spawn(0, None);
    if poll(Duration::from_secs(30), || l.ready(&first).then_some(())).is_none() {
        panic!("{name} n0 did not come up; output:\n{}", first.tail());
    }
    let mut nodes = vec![first];
    for i in 1..n {
        nodes.push(l.spawn(i, Some(seed)).0);
    }
    let last_start = Instant::now();
    progress(format!("{name} N={n}: all started; waiting for convergence"));
    let converged = |nodes: &[Node]| -> Vec<Option<Instant>> {
        nodes.iter().map(|nd| nd.seen.lock().unwrap().converged(&nd.name, &all)).collect()
    };
    let join = match poll(timeout, || {
        let c = converged(&nodes);
        c.iter().all(Option::is_some).then(|| c.into_iter().flatten().collect::<Vec<_>>())
    }) {
        Some(ts) => Ok(Spread::of(ts.iter().map(|t| t.saturating_duration_since(last_start)).collect())),
        None => {
            let mut exited = Vec::new();
            for nd in &mut nodes {
                if let Ok(Some(st)) = nd.child.try_wait() {
                    exited.push(format!("{} ({st})", nd.name));
                }
            }
            let c = converged(&nodes);
            let behind: Vec<_> =
                c.iter().zip(&nodes).filter(|(c, _)| c.is_none()).map(|(_, nd)| nd.name.clone()).collect();
            if let Some(nd) = nodes.iter().find(|nd| behind.contains(&nd.name)) {
                eprintln!("--- {name} {} output (tail) ---\n{}", nd.name, nd.tail());
            }
            Err(format!("{} of {n} not converged after {timeout:?}; exited: {exited:?}", behind.len()))
        }
    };
    progress(format!("{name} N={n}: join {}", fmt_res(&join)));
    // The API's view should agree with the logs'.
    let mut api_mismatch = Vec::new();
    if join.is_ok() {
        for nd in &nodes {
            let alive = match sys {
                Sys::Muster => muster_alive(nd.api_port),
                Sys::Serf => serf_alive(&l.bin, nd.api_port),
            };
            if alive != Some(n) {
                api_mismatch.push(format!("{} lists {alive:?} alive", nd.name));
            }
        }
    }
    std::thread::sleep(Duration::from_secs(2));

    // 2. event spread
    let event = match sys {
        Sys::Muster => muster_event(&nodes, timeout.min(Duration::from_secs(30))),
        Sys::Serf => serf_fire(nodes[0].api_port, EVENT).map(|t0| {
            poll(Duration::from_secs(30), || {
                nodes.iter().all(|nd| nd.seen.lock().unwrap().events.contains_key(EVENT)).then_some(())
            });
            (t0, nodes.iter().map(|nd| nd.seen.lock().unwrap().events.get(EVENT).copied()).collect())
        }),
    }
    .and_then(|(t0, got)| {
        let missing = got.iter().filter(|g| g.is_none()).count();
        if missing > 0 {
            return Err(format!("{missing} of {n} agents never got the event"));
        }
        Ok(Spread::of(got.into_iter().flatten().map(|t| t.saturating_duration_since(t0)).collect()))
    });
    progress(format!("{name} N={n}: event spread {}", fmt_res(&event)));

    // 4. idle cost (before the kill, which changes the membership)
    std::thread::sleep(quiet);
    let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
    let before: Vec<Duration> = pids.iter().map(|&p| cpu_time(p)).collect();
    let t = Instant::now();
    std::thread::sleep(idle);
    let after: Vec<Duration> = pids.iter().map(|&p| cpu_time(p)).collect();
    let window = t.elapsed().as_secs_f64();
    let used: Duration = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).sum();
    let cpu_ms_per_min = used.as_secs_f64() * 1000.0 / n as f64 * 60.0 / window;
    let rss_mib = pids.iter().map(|&p| rss_kib(p)).sum::<u64>() as f64 / 1024.0 / n as f64;
    progress(format!("{name} N={n}: idle {cpu_ms_per_min:.1} ms CPU/min, {rss_mib:.1} MiB RSS per agent"));

    // 3. failure detection
    let victim = n / 2;
    let victim_name = nodes[victim].name.clone();
    let t0 = Instant::now();
    nodes.remove(victim); // SIGKILL + reap
    let detect = match poll(timeout, || {
        let d: Vec<_> =
            nodes.iter().map(|nd| nd.seen.lock().unwrap().marked_down(&victim_name, t0)).collect();
        d.iter().all(Option::is_some).then(|| d.into_iter().flatten().collect::<Vec<_>>())
    }) {
        Some(ts) => Ok(Spread::of(ts.iter().map(|t| t.saturating_duration_since(t0)).collect())),
        None => {
            let left = nodes
                .iter()
                .filter(|nd| nd.seen.lock().unwrap().marked_down(&victim_name, t0).is_none())
                .count();
            Err(format!("{left} of {} survivors had not marked it failed after {timeout:?}", n - 1))
        }
    };
    progress(format!("{name} N={n}: failure detection {}", fmt_res(&detect)));
    let false_failures = nodes
        .iter()
        .map(|nd| {
            nd.seen.lock().unwrap().changes.iter().filter(|(_, who, up)| !up && *who != victim_name).count()
        })
        .sum();
    drop(nodes);
    let command = std::mem::take(&mut l.example);
    Run { join, event, detect, cpu_ms_per_min, rss_mib, false_failures, api_mismatch, command }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

fn fmt_res(r: &Result<Spread, String>) -> String {
    match r {
        Ok(s) => format!("{} (median agent {})", fmt_ms(s.max), fmt_ms(s.median)),
        Err(e) => format!("**failed**: {e}"),
    }
}

/// The serf binary and its version, or why serf is skipped.
fn find_serf() -> Result<(PathBuf, String), String> {
    let bin = PathBuf::from(std::env::var("SERF_BIN").unwrap_or_else(|_| "serf".into()));
    let out = Command::new(&bin)
        .arg("version")
        .output()
        .map_err(|e| format!("`{}` not runnable ({e}); `apt-get install serf`", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.lines().next().map(|l| l.trim().to_string()).filter(|v| !v.is_empty());
    let version = version.ok_or_else(|| format!("`{} version` printed nothing", bin.display()))?;
    // Debian builds report a placeholder version; the package version says which release.
    let pkg = Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", "serf"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| format!(", Debian package {}", String::from_utf8_lossy(&o.stdout)))
        .unwrap_or_default();
    Ok((bin, format!("{version}{pkg}")))
}

fn env_secs(key: &str, default: u64) -> Duration {
    Duration::from_secs(std::env::var(key).ok().and_then(|s| s.parse().ok()).unwrap_or(default))
}

fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --all-targets` probes benches; nothing to list
    }
    let sizes_env = std::env::var("GOSSIP_BENCH_SIZES").unwrap_or_else(|_| "20,50,100".into());
    let sizes: Vec<usize> =
        sizes_env.split(',').map(|s| s.trim().parse().expect("GOSSIP_BENCH_SIZES")).collect();
    assert!(sizes.iter().all(|&n| n >= 3), "clusters of at least 3 agents");
    let quiet = env_secs("GOSSIP_BENCH_QUIET", 20);
    let idle = env_secs("GOSSIP_BENCH_IDLE", 30);
    let timeout = env_secs("GOSSIP_BENCH_TIMEOUT", 120);
    let base: u16 =
        std::env::var("GOSSIP_BENCH_PORT_BASE").ok().and_then(|s| s.parse().ok()).unwrap_or(20000);
    let muster_wan = std::env::var("GOSSIP_BENCH_MUSTER_WAN").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let loadavg = loadavg.split_whitespace().take(3).collect::<Vec<_>>().join(" ");

    progress("building muster".into());
    let muster = muster_bin().to_path_buf();
    let serf = find_serf();
    if let Err(why) = &serf {
        println!("serf skipped: {why}");
    }
    let mut results: Vec<(usize, Run, Option<Run>)> = Vec::new();
    for (k, &n) in sizes.iter().enumerate() {
        let range = |sys: u16| base + 1000 * (2 * k as u16 + sys);
        let m = Launcher {
            sys: Sys::Muster,
            bin: muster.clone(),
            dir: TempDir::new("gossip"),
            ports: Ports(range(0)),
            example: String::new(),
            muster_wan,
        };
        let m = measure(m, n, quiet, idle, timeout);
        std::thread::sleep(Duration::from_secs(1));
        let s = serf.as_ref().ok().map(|(bin, _)| {
            let l = Launcher {
                sys: Sys::Serf,
                bin: bin.clone(),
                dir: TempDir::new("serf"),
                ports: Ports(range(1)),
                example: String::new(),
                muster_wan,
            };
            let r = measure(l, n, quiet, idle, timeout);
            std::thread::sleep(Duration::from_secs(1));
            r
        });
        results.push((n, m, s));
    }

    let serf_name = match &serf {
        Ok((_, v)) => format!("serf {v}"),
        Err(_) => "serf (skipped)".into(),
    };
    println!();
    println!("Command: `GOSSIP_BENCH_SIZES={sizes_env} cargo bench -p muster-tests --bench gossip`");
    for (n, m, s) in &results {
        println!();
        println!("### N = {n}");
        println!();
        println!("| measurement ({n} agents, loopback, LAN timers) | muster | serf | muster/serf |");
        println!("|---|---|---|---|");
        let time_row = |what: &str, f: fn(&Run) -> &Result<Spread, String>| {
            let (mr, sr) = (f(m), s.as_ref().map(f));
            let ratio = match (mr, sr) {
                (Ok(a), Some(Ok(b))) => format!(
                    "{:.2}× (median {:.2}×)",
                    a.max.as_secs_f64() / b.max.as_secs_f64(),
                    a.median.as_secs_f64() / b.median.as_secs_f64()
                ),
                _ => "—".into(),
            };
            println!("| {what} | {} | {} | {ratio} |", fmt_res(mr), sr.map_or("—".into(), fmt_res));
        };
        time_row("join convergence: last start → every agent sees N alive", |r| &r.join);
        time_row("event spread: fire → every agent has the event", |r| &r.event);
        time_row("failure detection: kill -9 → every survivor marks it failed", |r| &r.detect);
        let num_row = |what: &str, unit: &str, f: fn(&Run) -> f64| {
            let (a, b) = (f(m), s.as_ref().map(f));
            println!(
                "| {what} | {a:.1} {unit} | {} | {} |",
                b.map_or("—".into(), |b| format!("{b:.1} {unit}")),
                b.map_or("—".into(), |b| format!("{:.2}×", a / b))
            );
        };
        num_row(
            &format!("idle CPU per agent ({}s window after {}s quiet)", idle.as_secs(), quiet.as_secs()),
            "ms/min",
            |r| r.cpu_ms_per_min,
        );
        num_row("idle RSS per agent", "MiB", |r| r.rss_mib);
        println!(
            "| live members marked failed (false positives, all agents) | {} | {} | |",
            m.false_failures,
            s.as_ref().map_or("—".into(), |s| s.false_failures.to_string())
        );
        println!();
        for (sys, r) in [("muster", Some(m)), ("serf", s.as_ref())] {
            if let Some(r) = r {
                println!("- {sys} agent n1: `{}`", r.command);
                if !r.api_mismatch.is_empty() {
                    println!(
                        "- **{sys}: API member lists disagree with the logs**: {}",
                        r.api_mismatch.join("; ")
                    );
                }
            }
        }
    }
    println!();
    println!("Calibration (median agent / slowest agent):");
    println!();
    println!("| N | system | failure detection | event spread | join convergence |");
    println!("|---|---|---|---|---|");
    for (n, m, s) in &results {
        for (sys, r) in [("muster", Some(m)), ("serf", s.as_ref())] {
            let Some(r) = r else { continue };
            let c = |x: &Result<Spread, String>| match x {
                Ok(s) => format!("{} / {}", fmt_ms(s.median), fmt_ms(s.max)),
                Err(_) => "failed".into(),
            };
            println!("| {n} | {sys} | {} | {} | {} |", c(&r.detect), c(&r.event), c(&r.join));
        }
    }
    println!();
    println!(
        "Against {serf_name}. Ratios below 1× favour muster. Times are stamped when the bench \
         read each agent's log line (or, for muster events, the blocking query's answer); one \
         run per N, one kill per run (agent n<N/2>, never the seed n0). All agents and the bench \
         share the machine's {} cores (load average {loadavg} at start); whole run {:.0} s.",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        started.elapsed().as_secs_f64()
    );
}
