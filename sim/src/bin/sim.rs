//! `sim run --seeds A..B [--only node|cluster|nodes|gossip|clients] [--plant BUG]`,
//! `sim replay [--cluster|--nodes|--gossip|--clients] --seed S [--trace] [--plant BUG]` and
//! `sim gossip-scale [--nodes N] [--seed S] [--no-lifeguard] [--window SECS] [--no-compare]
//! [--no-spread] [--runs K] [--slow-per-10k P] [--delay LO..HI] [--stall LEN_LO..LEN_HI/GAP_LO..GAP_HI|none]`.
//!
//! `run` runs every seed of the single-node world, of the replica cluster chaos world, of
//! the nodes chaos world (whole servers), of the gossip world and of the clients chaos world
//! (servers and client agents) twice and compares the trace hashes; a failure
//! prints the seed, its trace hash and the replay command. A chaos seed whose
//! linearizability search ran out of budget is reported and counted as unknown, never as
//! passed, but does not fail the run: only a violation does. `--plant lease|fsync` turns on
//! a planted bug in the replica cluster world, `--plant drop-work|lose-state|zombie-gossip`
//! one in the clients world's hosts, to watch it be caught.
//!
//! Exit codes: 0 all seeds passed, 1 an invariant failed, 4 a seed was not deterministic,
//! 2 usage.

use std::ops::Range;
use std::process::ExitCode;

use sim::lin::LinResult;
use sim::raft::{self, ClusterOptions};
use sim::{clients, nodes, HostBugs};

fn usage() -> ExitCode {
    eprintln!(
        "usage: sim run --seeds A..B [--only node|cluster|nodes|gossip|clients] [--plant BUG]\n       \
         sim replay [--cluster|--nodes|--gossip|--clients] --seed S [--trace] [--plant BUG]   (SIM_OPS sets node ops per seed)\n       \
         (BUG: lease|fsync in the cluster world, drop-work|lose-state|zombie-gossip in the clients world)\n       \
         sim gossip-scale [--nodes N] [--seed S] [--no-lifeguard] [--window SECS] [--no-compare]\n                          \
         [--no-spread] [--runs K] [--slow-per-10k P] [--delay LO..HI] [--stall LEN_LO..LEN_HI/GAP_LO..GAP_HI|none]   (N defaults to $SIM_GOSSIP_NODES, else 10000; seconds)"
    );
    ExitCode::from(2)
}

/// The planted bugs a `--plant` value stands for: in the replica cluster world, or in the
/// clients world's hosts.
fn planted(name: Option<&str>) -> Option<(ClusterOptions, HostBugs)> {
    let none = (ClusterOptions::default(), HostBugs::default());
    match name {
        None => Some(none),
        Some("lease") => Some((
            ClusterOptions { unsafe_skip_lease_check: true, hunt_stale_reads: true, ..Default::default() },
            HostBugs::default(),
        )),
        Some("fsync") => {
            Some((ClusterOptions { ack_before_fsync: true, ..Default::default() }, HostBugs::default()))
        }
        Some("drop-work") => Some((none.0, HostBugs { drop_client_work: true, ..HostBugs::default() })),
        Some("lose-state") => Some((none.0, HostBugs { lose_saved_state: true, ..HostBugs::default() })),
        Some("zombie-gossip") => Some((none.0, HostBugs { zombie_gossip: true, ..HostBugs::default() })),
        Some(_) => None,
    }
}

/// Folds trace hashes in order. A fold of one is that hash, so `run --only W` over one seed
/// prints the `trace-hash` line `replay` prints.
fn fold(acc: u64, hash: u64) -> u64 {
    acc.rotate_left(1) ^ hash
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// The linearizability search ran out of budget: neither passed nor failed.
    Unknown,
    Fail,
}

fn node_verdict(o: &sim::Outcome) -> (Verdict, String) {
    match &o.violation {
        Some(v) => (Verdict::Fail, format!("FAIL node seed {} at {}: {}", o.seed, v.at, v.what)),
        None => (Verdict::Pass, format!("node seed {}: {} ops, all invariants hold", o.seed, o.ops)),
    }
}

/// The verdict on a seed of a chaos world (`world`: "cluster", "nodes" or "clients").
fn cluster_verdict(world: &str, o: &sim::ClusterOutcome) -> (Verdict, String) {
    let seed = o.seed;
    match (&o.violation, &o.lin) {
        (Some(v), _) => (Verdict::Fail, format!("FAIL {world} seed {seed} {v}")),
        (None, LinResult::Violation(why)) => {
            (Verdict::Fail, format!("FAIL {world} seed {seed}: not linearizable: {why}"))
        }
        (None, LinResult::Unknown) => (
            Verdict::Unknown,
            format!(
                "UNKNOWN {world} seed {seed}: invariants hold, the linearizability search ran out of budget"
            ),
        ),
        (None, LinResult::Ok) => {
            (Verdict::Pass, format!("{world} seed {seed}: all invariants hold, the history is linearizable"))
        }
    }
}

fn gossip_verdict(o: &sim::gossip::GossipOutcome) -> (Verdict, String) {
    let seed = o.seed;
    match &o.violation {
        Some(v) => (Verdict::Fail, format!("FAIL gossip seed {seed} {v}\nstats: {:?}", o.stats)),
        None => (Verdict::Pass, format!("gossip seed {seed}: all invariants hold")),
    }
}

const WORLDS: [&str; 5] = ["node", "cluster", "nodes", "gossip", "clients"];

fn run(
    seeds: Range<u64>,
    worlds: [bool; 5],
    (options, bugs): (ClusterOptions, HostBugs),
    plant: &str,
) -> ExitCode {
    let (mut passed, mut unknown, mut failed, mut nondeterministic) = ([0u64; 5], 0, 0, 0);
    let mut combined = 0u64;
    for seed in seeds.clone() {
        for (world, on) in worlds.into_iter().enumerate() {
            if !on {
                continue;
            }
            let once = || match world {
                0 => {
                    let o = sim::run_seed(seed);
                    (node_verdict(&o), o.trace_hash)
                }
                1 => {
                    let o = raft::run_cluster_seed_with(seed, options);
                    (cluster_verdict("cluster", &o), o.trace_hash)
                }
                2 => {
                    let o = nodes::run_nodes_seed(seed);
                    (cluster_verdict("nodes", &o), o.trace_hash)
                }
                3 => {
                    let o = sim::gossip::run_gossip_seed(seed);
                    (gossip_verdict(&o), o.trace_hash)
                }
                _ => {
                    let (o, _) = clients::run_clients_seed(seed, bugs);
                    (cluster_verdict("clients", &o), o.trace_hash)
                }
            };
            // The two runs share nothing, so they run side by side: on two cores a seed
            // costs one run. The second gets the main thread's stack size.
            let (((verdict, line), hash), again) = std::thread::scope(|s| {
                let second = std::thread::Builder::new()
                    .stack_size(8 << 20)
                    .spawn_scoped(s, || once().1)
                    .expect("a thread starts");
                (once(), second.join().expect("a run panicked"))
            });
            combined = fold(combined, hash);
            let replay = match world {
                0 => format!("replay: cargo run -p sim -- replay --seed {seed} --trace"),
                1 => format!("replay: cargo run -p sim -- replay --cluster --seed {seed} --trace{plant}"),
                2 => format!("replay: cargo run -p sim -- replay --nodes --seed {seed} --trace"),
                3 => format!("replay: cargo run -p sim -- replay --gossip --seed {seed} --trace"),
                _ => format!("replay: cargo run -p sim -- replay --clients --seed {seed} --trace{plant}"),
            };
            if verdict != Verdict::Pass {
                println!("{line}\ntrace-hash: {hash:016x}\n{replay}");
            }
            match verdict {
                Verdict::Pass => passed[world] += 1,
                Verdict::Unknown => unknown += 1,
                Verdict::Fail => failed += 1,
            }
            if again != hash {
                nondeterministic += 1;
                let name = WORLDS[world];
                println!("NONDETERMINISTIC {name} seed {seed}: trace hashes {hash:016x} then {again:016x}\n{replay}");
            }
        }
    }
    println!(
        "seeds {}..{}, each run twice: node {} passed, cluster {} passed, nodes {} passed, gossip {} passed, \
         clients {} passed, {unknown} unknown, {failed} failed, {nondeterministic} not deterministic",
        seeds.start, seeds.end, passed[0], passed[1], passed[2], passed[3], passed[4]
    );
    println!("trace-hash: {combined:016x}");
    if failed > 0 {
        ExitCode::from(1)
    } else if nondeterministic > 0 {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    let has = |name: &str| args.iter().any(|a| a == name);
    let plant = flag("--plant").map(|p| format!(" --plant {p}")).unwrap_or_default();
    let Some(plants) = planted(flag("--plant").as_deref()) else { return usage() };
    match args.first().map(String::as_str) {
        Some("run") => {
            let Some(seeds) = flag("--seeds").as_deref().and_then(sim::parse_seeds) else { return usage() };
            let worlds = match flag("--only").as_deref() {
                None => [true; 5],
                Some(only) if WORLDS.contains(&only) => WORLDS.map(|w| w == only),
                Some(_) => return usage(),
            };
            run(seeds, worlds, plants, &plant)
        }
        Some("replay") => {
            let Some(seed) = flag("--seed").and_then(|s| s.parse().ok()) else { return usage() };
            let (trace, (verdict, line), hash, stats) = if has("--cluster") {
                let (o, trace) = raft::run_cluster_traced(seed, plants.0);
                (trace, cluster_verdict("cluster", &o), o.trace_hash, format!("\nstats: {:?}", o.stats))
            } else if has("--gossip") {
                let (o, trace) = sim::gossip::run_gossip_traced(seed);
                (trace, gossip_verdict(&o), o.trace_hash, format!("\nstats: {:?}", o.stats))
            } else if has("--clients") {
                let (o, stats, trace) = clients::run_clients_traced(seed, plants.1);
                let stats = format!("\nstats: {:?}\nclient stats: {stats:?}", o.stats);
                (trace, cluster_verdict("clients", &o), o.trace_hash, stats)
            } else if has("--nodes") {
                let (o, trace) = nodes::run_nodes_traced(seed);
                (trace, cluster_verdict("nodes", &o), o.trace_hash, format!("\nstats: {:?}", o.stats))
            } else {
                let (o, trace) = sim::World::new(seed, sim::ops_per_seed()).run_traced();
                (trace, node_verdict(&o), o.trace_hash, String::new())
            };
            if has("--trace") {
                for event in trace {
                    println!("{event}");
                }
            }
            println!("{line}{stats}\ntrace-hash: {hash:016x}");
            ExitCode::from(u8::from(verdict == Verdict::Fail))
        }
        Some("gossip-scale") => gossip_scale(&flag, &has),
        _ => usage(),
    }
}

/// The scale measurements: event spread and crash detection in one pool, then false
/// failures caused by slow members with Lifeguard on and off.
fn gossip_scale(flag: &dyn Fn(&str) -> Option<String>, has: &dyn Fn(&str) -> bool) -> ExitCode {
    use sim::gossip::scale;
    let env_nodes = std::env::var("SIM_GOSSIP_NODES").ok();
    let Some(nodes) = flag("--nodes").or(env_nodes).map_or(Some(10_000), |s| s.parse().ok()) else {
        return usage();
    };
    let Some(seed) = flag("--seed").map_or(Some(1), |s| s.parse().ok()) else { return usage() };
    let Some(window) = flag("--window").map_or(Some(120), |s| s.parse().ok()) else { return usage() };
    let mut slow = scale::SlowModel::standard();
    let secs_range = |s: &str| -> Option<(u64, u64)> {
        let (a, b) = s.split_once("..")?;
        let ns = |x: &str| x.parse::<f64>().ok().filter(|v| *v >= 0.0).map(|v| (v * 1e9) as u64);
        Some((ns(a)?, ns(b)?)).filter(|(a, b)| a <= b)
    };
    if let Some(v) = flag("--slow-per-10k") {
        let Ok(v) = v.parse() else { return usage() };
        slow.per_10k = v;
    }
    if let Some(v) = flag("--delay") {
        let Some(d) = secs_range(&v) else { return usage() };
        slow.delay = d;
    }
    if let Some(v) = flag("--stall") {
        slow.stall = if v == "none" {
            None
        } else {
            let Some((len, gap)) = v.split_once('/') else { return usage() };
            let (Some(len), Some(gap)) = (secs_range(len), secs_range(gap)) else { return usage() };
            Some((len, gap))
        };
    }
    let Some(runs) = flag("--runs").map_or(Some(1u64), |s| s.parse().ok()) else { return usage() };
    let opts = scale::ScaleOptions {
        nodes,
        seed,
        lifeguard: !has("--no-lifeguard"),
        slow,
        window: muster_core::time::Duration::from_secs(window),
    };
    let secs = |d: Option<muster_core::time::Duration>| {
        d.map_or("never".to_string(), |d| format!("{:.2}s", d.as_secs_f64()))
    };
    let lg = if opts.lifeguard { "Lifeguard" } else { "plain SWIM" };
    println!("gossip-scale: {nodes} members, seed {seed}, LAN defaults, {lg}");
    if !has("--no-spread") {
        let (s, speed) = scale::spread(&opts);
        println!(
            "user event from one member: 99.99% of members in {}, all in {}",
            secs(s.event_9999),
            secs(s.event_all)
        );
        println!(
            "crashed member seen failed: first in {}, 99.99% in {}, every live member in {}",
            secs(s.crash_first),
            secs(s.crash_9999),
            secs(s.crash_all)
        );
        println!("speed: {speed}");
        println!("peak RSS: {} MiB", scale::peak_rss_mib().map_or("?".into(), |m| m.to_string()));
    }
    if !has("--no-compare") {
        println!(
            "false failures: {}, {window}s window, seeds {seed}..{}, the same slow members and stalls in both",
            opts.slow,
            seed + runs
        );
        let mut sums = [scale::FalseDead::default(), scale::FalseDead::default()];
        for (i, lifeguard) in [true, false].into_iter().enumerate() {
            let lg = if lifeguard { "Lifeguard " } else { "plain SWIM" };
            sums[i].lifeguard = lifeguard;
            for r in 0..runs {
                let o = scale::ScaleOptions { seed: seed + r, ..opts.clone() };
                let (f, speed) = scale::false_dead(&o, lifeguard);
                println!("{lg} seed {}: {} slow members: {f}", seed + r, f.slow);
                println!("  speed: {speed}");
                sums[i].add(&f);
            }
        }
        let [with, without] = &sums;
        if runs > 1 {
            println!("Lifeguard  total: {with}");
            println!("plain SWIM total: {without}");
        }
        let ratio = |a: u64, b: u64| match (a, b) {
            (0, 0) => "0 vs 0 (no difference measured)".to_string(),
            (k, 0) => format!("{k} vs 0 (≥ {k}×)"),
            (k, l) => format!("{k} vs {l} ({:.1}×)", k as f64 / l as f64),
        };
        println!("plain SWIM vs Lifeguard, all false failures:  {}", ratio(without.total(), with.total()));
        println!(
            "plain SWIM vs Lifeguard, about healthy members: {}",
            ratio(without.about_healthy(), with.about_healthy())
        );
        println!(
            "plain SWIM vs Lifeguard, about slow members:    {}",
            ratio(without.about_slow(), with.about_slow())
        );
        println!("peak RSS: {} MiB", scale::peak_rss_mib().map_or("?".into(), |m| m.to_string()));
    }
    ExitCode::SUCCESS
}
