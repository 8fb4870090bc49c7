//! The nodes world: 3 or 5 whole muster `Node`s, the product's servers (Raft inside, writes
//! forwarded to the leader, read barriers, the agent), under the chaos of `chaos`, driven
//! through API requests by clients that ask random servers.
//!
//! Owns the workload and its checks; `fleet` hosts the servers (the wire, restarts through
//! `Node::recover`, the Raft ledger fed from their effects). The clients write unique
//! values (sets, CAS, deletes) and read in default and consistent mode, each op at a random
//! server, so followers forward and pass read barriers; a 500 whose reason says the write
//! surely did not happen is `fail`, any other 500 or no answer is `info`. Stale reads are
//! only checked to return a value some write of that key carried. The liveness phase
//! settles once a write through every server has succeeded, every server has applied every
//! committed entry and gossip agrees (members, `serfHealth`); then durability is checked.
//! Never looks inside a node beyond `state()`, which the workload peeks at for CAS indexes.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;

use muster_core::api::{ApiRequest, ApiResponse};
use muster_core::ids::{Index, ReqId};
use muster_core::io::Input;
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;

use crate::chaos::{self, fmt_duration, Env, KvWork, Outcome, Profile, ReadMode, ELECTION, KEYS};
use crate::fleet::{self, Fleet, FleetWorld, GOSSIP_SETTLE, HOLD};
use crate::lin::OpKind;
use crate::ClusterOutcome;

/// How many seeds `cargo test` runs (`SIM_NODES_SEEDS` overrides).
pub fn seeds_per_test() -> u64 {
    std::env::var("SIM_NODES_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

pub fn run_nodes_seed(seed: u64) -> ClusterOutcome {
    chaos::run(seed, &mut Nodes::new(seed), false).0
}

/// Like `run_nodes_seed`, also returning the trace: one line per event handled.
pub fn run_nodes_traced(seed: u64) -> (ClusterOutcome, Vec<String>) {
    chaos::run(seed, &mut Nodes::new(seed), true)
}

struct Nodes {
    fleet: Fleet<Infallible>,
    /// Per server, the client operations delivered there and not answered yet.
    inflight: Vec<BTreeSet<usize>>,
    /// The request each client operation sends, until it reaches a server.
    requests: BTreeMap<usize, ApiRequest>,
    kv: KvWork,
    /// Per server, the latest liveness-phase write through it.
    live: Vec<Option<usize>>,
}

impl Nodes {
    fn new(seed: u64) -> Nodes {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4e4f_4445);
        let mut profile = Profile::draw(&mut rng);
        // The server transport is TCP, written once per message: it loses and delays, but
        // never duplicates.
        profile.dup_per_mille = 0;
        // Three times the replica world's clients: more writes race through forwarding.
        profile.clients *= 3;
        let (env, seeds) = Env::new(rng, profile);
        let n = env.profile.nodes;
        Nodes {
            fleet: Fleet::new(env, n, seeds),
            inflight: vec![BTreeSet::new(); n],
            requests: BTreeMap::new(),
            kv: KvWork::default(),
            live: vec![None; n],
        }
    }

    /// Starts a client operation at `node`.
    fn invoke(
        &mut self,
        client: usize,
        node: usize,
        key: &'static str,
        (kind, read, req): (OpKind, ReadMode, ApiRequest),
    ) {
        let env = &mut self.fleet.env;
        let op = env.invoke(client, key, kind, read);
        env.mix(&[6, client as u64, op as u64, node as u64]);
        env.note(|_| format!("client {client}: op {op} {kind:?} {key} {read:?} at n{node}"));
        let at = env.now + env.delay();
        env.schedule(at, chaos::Event::Request { node, op });
        self.requests.insert(op, req);
    }
}

impl FleetWorld for Nodes {
    type Extra = Infallible;

    fn fleet(&mut self) -> &mut Fleet<Infallible> {
        &mut self.fleet
    }

    /// A server answered client operation `op`.
    fn answered(&mut self, node: usize, id: ReqId, resp: ApiResponse) -> Result<(), String> {
        let (op, env) = (id.0 as usize, &mut self.fleet.env);
        if !self.inflight[node].remove(&op) {
            return env.fail(format!("n{node} answered op {op} twice, or unasked"));
        }
        if env.ops[op].outcome != Outcome::Pending {
            return Ok(()); // the client gave up already
        }
        self.kv.settle(env, node, op, &resp)
    }

    fn request(&mut self, node: usize, op: usize) -> Result<(), String> {
        let req = self.requests.remove(&op).expect("each op is sent once");
        if self.fleet.agents[node].node.is_none() {
            // The connection was refused: nobody heard it.
            self.fleet.env.finish(op, Outcome::Fail, None);
            return Ok(());
        }
        self.inflight[node].insert(op);
        fleet::step(self, node, Input::Request { id: ReqId(op as u64), req })
    }

    fn client_op(&mut self, client: usize) {
        let env = &mut self.fleet.env;
        if !env.safety_phase() {
            return;
        }
        let key = KEYS[env.below(env.profile.keys) as usize];
        let node = env.below(self.fleet.agents.len() as u64) as usize;
        let (env, states) = self.fleet.env_and_states();
        let op = self.kv.draw(env, key, &states);
        self.invoke(client, node, key, op);
    }

    fn extra(&mut self, _: usize, event: Infallible) -> Result<(), String> {
        match event {}
    }

    fn killed(&mut self, node: usize) {
        for op in std::mem::take(&mut self.inflight[node]) {
            let env = &mut self.fleet.env;
            let outcome = if env.ops[op].kind.is_write() { Outcome::Info } else { Outcome::Dropped };
            env.finish(op, outcome, None);
        }
    }

    /// After the heal: a write through every server succeeds (retried while it fails),
    /// every op is answered and every server applies every committed entry; then
    /// durability. All within 10 election timeouts plus two hold timeouts.
    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String> {
        let mut writes_ok = true;
        for s in 0..self.fleet.agents.len() {
            match self.live[s].map(|op| self.fleet.env.ops[op].outcome) {
                Some(Outcome::Ok) => {}
                Some(Outcome::Pending) => writes_ok = false,
                _ => {
                    writes_ok = false;
                    let client = self.fleet.env.profile.clients + s;
                    let key = KEYS[s % KEYS.len()];
                    let op = self.kv.write(&mut self.fleet.env, key, None);
                    self.invoke(client, s, key, op);
                    self.live[s] = Some(self.fleet.env.ops.len() - 1);
                }
            }
        }
        let f = &self.fleet;
        let applied: Vec<u64> = f.server_states().map(|s| s.applied().0).collect();
        let converged = applied.iter().all(|a| *a == f.env.stats.max_commit);
        let ops_done = f.env.ops.iter().all(|o| o.outcome != Outcome::Pending);
        let settled = f.gossip_settled();
        if writes_ok && converged && ops_done && settled {
            return Ok(Some(f.env.check_durability(Index(f.env.stats.max_commit))));
        }
        let since = f.env.since_liveness();
        if writes_ok && converged && ops_done && since > 10 * ELECTION + 2 * HOLD + GOSSIP_SETTLE {
            return f.env.fail(format!(
                "gossip: {} after the heal, members or serfHealth still disagree: {}",
                fmt_duration(since),
                f.gossip_views()
            ));
        }
        if !(writes_ok && converged && ops_done) && since > 10 * ELECTION + 2 * HOLD {
            let failing: Vec<usize> = (0..f.agents.len())
                .filter(|s| self.live[*s].is_none_or(|op| f.env.ops[op].outcome != Outcome::Ok))
                .collect();
            return f.env.fail(format!(
                "liveness: {} after the heal, writes through {failing:?} have not succeeded; applied {applied:?} of {}",
                fmt_duration(since),
                f.env.stats.max_commit
            ));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_seeds_hold_every_invariant() {
        let total = crate::chaos::check_seeds("nodes", seeds_per_test(), run_nodes_seed);
        if seeds_per_test() >= 10 {
            assert!(total.snapshots_installed > 0, "no follower ever needed a snapshot: {total:?}");
        }
    }

    #[test]
    fn a_seed_replays_to_the_same_trace() {
        let a = run_nodes_seed(3);
        let (b, lines) = run_nodes_traced(3);
        assert_eq!(a, b, "tracing changes nothing");
        let has = |what: &str| lines.iter().any(|l| l.contains(what));
        assert!(has("Forward") && has("ReadBarrier"), "followers forward writes and ask for barriers");
        assert_ne!(a.trace_hash, run_nodes_seed(4).trace_hash);
    }
}
