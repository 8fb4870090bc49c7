//! `sim run --seeds A..B [--only node|cluster|nodes] [--plant BUG]` and
//! `sim replay [--cluster|--nodes] --seed S [--trace] [--plant BUG]`.
//!
//! `run` runs every seed of the single-node world, of the replica cluster chaos world and of
//! the nodes chaos world (whole servers) twice and compares the trace hashes; a failure
//! prints the seed, its trace hash and the replay command. A chaos seed whose
//! linearizability search ran out of budget is reported and counted as unknown, never as
//! passed, but does not fail the run: only a violation does. `--plant lease|fsync` turns on
//! a planted bug in the replica cluster world, to watch it be caught.
//!
//! Exit codes: 0 all seeds passed, 1 an invariant failed, 4 a seed was not deterministic,
//! 2 usage.

use std::ops::Range;
use std::process::ExitCode;

use sim::lin::LinResult;
use sim::nodes;
use sim::raft::{self, ClusterOptions};

fn usage() -> ExitCode {
    eprintln!(
        "usage: sim run --seeds A..B [--only node|cluster|nodes] [--plant lease|fsync]\n       \
         sim replay [--cluster|--nodes] --seed S [--trace] [--plant lease|fsync]   (SIM_OPS sets node ops per seed)"
    );
    ExitCode::from(2)
}

/// The cluster options a `--plant` value stands for.
fn planted(name: Option<&str>) -> Option<ClusterOptions> {
    match name {
        None => Some(ClusterOptions::default()),
        Some("lease") => Some(ClusterOptions {
            unsafe_skip_lease_check: true,
            hunt_stale_reads: true,
            ..Default::default()
        }),
        Some("fsync") => Some(ClusterOptions { ack_before_fsync: true, ..Default::default() }),
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

/// The verdict on a seed of a chaos world (`world`: "cluster" or "nodes").
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

const WORLDS: [&str; 3] = ["node", "cluster", "nodes"];

fn run(seeds: Range<u64>, worlds: [bool; 3], options: ClusterOptions, plant: &str) -> ExitCode {
    let (mut passed, mut unknown, mut failed, mut nondeterministic) = ([0u64; 3], 0, 0, 0);
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
                _ => {
                    let o = nodes::run_nodes_seed(seed);
                    (cluster_verdict("nodes", &o), o.trace_hash)
                }
            };
            let ((verdict, line), hash) = once();
            let again = once().1;
            combined = fold(combined, hash);
            let replay = match world {
                0 => format!("replay: cargo run -p sim -- replay --seed {seed} --trace"),
                1 => format!("replay: cargo run -p sim -- replay --cluster --seed {seed} --trace{plant}"),
                _ => format!("replay: cargo run -p sim -- replay --nodes --seed {seed} --trace"),
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
        "seeds {}..{}, each run twice: node {} passed, cluster {} passed, nodes {} passed, {unknown} unknown, \
         {failed} failed, {nondeterministic} not deterministic",
        seeds.start, seeds.end, passed[0], passed[1], passed[2]
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
    let Some(options) = planted(flag("--plant").as_deref()) else { return usage() };
    match args.first().map(String::as_str) {
        Some("run") => {
            let Some(seeds) = flag("--seeds").as_deref().and_then(sim::parse_seeds) else { return usage() };
            let worlds = match flag("--only").as_deref() {
                None => [true; 3],
                Some(only) if WORLDS.contains(&only) => WORLDS.map(|w| w == only),
                Some(_) => return usage(),
            };
            run(seeds, worlds, options, &plant)
        }
        Some("replay") => {
            let Some(seed) = flag("--seed").and_then(|s| s.parse().ok()) else { return usage() };
            let (trace, (verdict, line), hash, stats) = if has("--cluster") {
                let (o, trace) = raft::run_cluster_traced(seed, options);
                (trace, cluster_verdict("cluster", &o), o.trace_hash, format!("\nstats: {:?}", o.stats))
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
        _ => usage(),
    }
}
