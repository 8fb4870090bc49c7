//! The `wrk` load driver (`bench::Driver::Wrk`): runs a benchmark's load phase through the
//! `wrk` binary (`apt-get install wrk`) with a Lua script written for the phase, and reads
//! its results back into a `bench::Load`, so the tables look the same whichever driver ran.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::bench::{Load, Req, TempDir};

/// wrk threads for a phase with many connections: as many as the cores of the 2-core machine
/// the issue was measured on (each thread runs its own event loop over its connections).
const THREADS: usize = 2;

/// A checked `wrk` binary and the directory its phase scripts are written to.
pub struct Wrk {
    dir: TempDir,
}

impl Wrk {
    /// `Err` with the install command when `wrk` is not on PATH.
    pub fn new() -> Result<Wrk, String> {
        // `wrk -v` prints its version and exits non-zero: only whether it runs matters.
        Command::new("wrk")
            .arg("-v")
            .output()
            .map_err(|e| format!("MUSTER_BENCH_DRIVER=wrk needs wrk: apt-get install wrk ({e})"))?;
        Ok(Wrk { dir: TempDir::new("wrk") })
    }

    /// `clients` connections (on `min(clients, THREADS)` threads) to `port` for `secs`,
    /// cycling through `reqs`. Panics if wrk fails or prints no result line.
    pub fn run(&self, port: u16, clients: usize, secs: u64, reqs: &[Req]) -> Load {
        let path = self.dir.0.join("phase.lua");
        std::fs::write(&path, script(reqs)).expect("write the wrk script");
        let threads = clients.min(THREADS).to_string();
        let out = Command::new("wrk")
            .arg(format!("-c{clients}"))
            .args(["-t", &threads, "-d", &format!("{secs}s"), "-s"])
            .arg(&path)
            .arg(format!("http://127.0.0.1:{port}/"))
            .args(["--", &threads])
            .output()
            .expect("run wrk");
        let stdout = String::from_utf8_lossy(&out.stdout);
        parse(&stdout).unwrap_or_else(|| {
            panic!(
                "wrk ({}) printed no WRK line:\n{stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }
}

/// The phase's Lua script: the requests as a table, pre-formatted once per thread in `init`
/// (building one per call would cost more than a server answering it), handed out in turn by
/// `request`, and a `done` that prints one `WRK key=value …` line for `parse`.
fn script(reqs: &[Req]) -> String {
    let mut lua = String::from("local specs = {\n");
    for r in reqs {
        let body = if r.body.is_empty() { "nil".to_string() } else { lua_str(&r.body) };
        writeln!(lua, "  {{{}, {}, {body}}},", lua_str(r.method.as_bytes()), lua_str(r.path.as_bytes()))
            .expect("write to a String");
    }
    lua.push_str(
        r#"}
-- Numbers the threads: thread `id` of `args[1]` takes entries id, id + args[1], ...
local threads = 0
function setup(thread)
  thread:set("id", threads)
  threads = threads + 1
end
local reqs, n, step = {}, 0, 1
function init(args)
  for i, s in ipairs(specs) do
    reqs[i] = wrk.format(s[1], s[2], {["Content-Type"] = "application/json"}, s[3])
  end
  n, step = id, tonumber(args[1])
end
function request()
  local r = reqs[n % #reqs + 1]
  n = n + step
  return r
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRK requests=%d duration_us=%d p50=%d p99=%d p999=%d errors=%d non2xx=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    latency:percentile(99.9), e.connect + e.read + e.write + e.status + e.timeout, e.status))
end
"#,
    );
    lua
}

/// A Lua string literal of any bytes: printable ASCII as is, the rest as `\ddd`.
fn lua_str(bytes: &[u8]) -> String {
    let mut s = String::from("\"");
    for &b in bytes {
        match b {
            b'"' | b'\\' => write!(s, "\\{}", b as char),
            0x20..=0x7e => write!(s, "{}", b as char),
            _ => write!(s, "\\{b:03}"),
        }
        .expect("write to a String");
    }
    s.push('"');
    s
}

/// The `WRK …` line `done` printed, as a `Load`: completed requests with a status below 400
/// are the successful ones (errors.status counts the others).
fn parse(stdout: &str) -> Option<Load> {
    let line = stdout.lines().find_map(|l| l.strip_prefix("WRK "))?;
    let field = |name: &str| -> Option<u64> {
        line.split_whitespace().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    };
    let count = field("requests")?.saturating_sub(field("non2xx")?);
    Some(Load {
        rps: count as f64 / (field("duration_us")? as f64 / 1e6).max(1e-6),
        p50: Duration::from_micros(field("p50")?),
        p99: Duration::from_micros(field("p99")?),
        p999: Duration::from_micros(field("p999")?),
        errors: field("errors")?,
        count,
        cpu_per_req: Duration::ZERO,
    })
}
