//! `sim run --seeds 0..500` and `sim replay --seed S [--trace]`.
//!
//! Exit codes: 0 all seeds passed, 1 an invariant failed, 4 a seed was not deterministic,
//! 2 usage.

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!("usage: sim run --seeds A..B | sim replay --seed S [--trace]   (SIM_OPS sets ops per seed)");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let flag = |name: &str| args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned();
    match args.first().map(String::as_str) {
        Some("run") => {
            let Some(seeds) = flag("--seeds").as_deref().and_then(sim::parse_seeds) else { return usage() };
            let (mut passed, mut combined) = (0u64, 0u64);
            for seed in seeds.clone() {
                let o = sim::run_seed(seed);
                if let Some(v) = o.violation {
                    println!("FAIL seed {seed} at {}: {}", v.at, v.what);
                    println!("replay: cargo run -p sim -- replay --seed {seed} --trace");
                    return ExitCode::from(1);
                }
                if sim::run_seed(seed).trace_hash != o.trace_hash {
                    println!("NONDETERMINISTIC seed {seed}");
                    return ExitCode::from(4);
                }
                combined ^= o.trace_hash.rotate_left((seed % 64) as u32);
                passed += 1;
            }
            println!(
                "{passed} seeds passed ({}..{}), each run twice with equal traces",
                seeds.start, seeds.end
            );
            println!("trace-hash: {combined:016x}");
            ExitCode::SUCCESS
        }
        Some("replay") => {
            let Some(seed) = flag("--seed").and_then(|s| s.parse().ok()) else { return usage() };
            let (o, trace) = sim::World::new(seed, sim::ops_per_seed()).run_traced();
            if args.iter().any(|a| a == "--trace") {
                for line in trace {
                    println!("{line}");
                }
            }
            match o.violation {
                Some(v) => println!("FAIL seed {seed} at {}: {}", v.at, v.what),
                None => println!("seed {seed}: {} ops, all invariants hold", o.ops),
            }
            println!("trace-hash: {:016x}", o.trace_hash);
            ExitCode::SUCCESS
        }
        _ => usage(),
    }
}
