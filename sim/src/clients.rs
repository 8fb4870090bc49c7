//! The clients world: 3 servers and 2-4 client agents (`server: false`, no Raft, gossip on,
//! joining the LAN pool through one server), under the chaos of `chaos`, driven through the
//! client agents' API.
//!
//! Owns the workload and its checks; `fleet` hosts the agents. Users ask a random client
//! agent to register services with TTL checks, flip their statuses, deregister them, write
//! and read KV (so calls travel to servers: KV goes through the linearizability check and
//! the durability ledger) and read health and the catalog, some reads blocking. A model of
//! each client's API registrations is updated when a request reaches the agent (the agent
//! saves its state in the same step, and a restarted agent gets it back). Checks: every
//! request reaching a live agent is answered exactly once, within what the agent's own call
//! deadlines promise; agent endpoints answer 200 (a TTL update of an unknown check 404),
//! reads 200 (500 only while no server can answer), a blocking read that saw nothing new
//! not before its wait. In the liveness phase each client agent registers a service,
//! passes its check, writes and reads a key and reads health and the catalog, retried
//! until each succeeds; the phase settles once gossip agrees, every server has applied
//! everything and every server's catalog holds exactly each client's local services and
//! checks with their statuses (`serfHealth` aside); then durability, and each client's
//! services against the model. On half the seeds one client agent dies for good (killed in
//! the safety phase, half the time in its last half second, and never restarted): within
//! `dead_bound` of the heal every live agent's gossip must hold it failed and every server's
//! catalog its `serfHealth` critical (or no node for it), none of its services served (each
//! has a critical check), and then each live client's `?passing` health reads and DNS
//! lookups of the services must leave it out; the other checks skip it. Never looks inside a node beyond `local()`, `state()` and
//! `lan_members()`, and never takes a client's `state()` for the catalog.

use std::collections::{BTreeMap, BTreeSet};

use muster_core::api::defs::{CheckDef, ServiceDef};
use muster_core::api::dns::{DnsQuestion, RData, Rcode, RecordType};
use muster_core::api::{ApiRequest, ApiResponse, Body, Consistency, QueryOpts};
use muster_core::fsm::catalog::Health;
use muster_core::gossip::MemberStatus;
use muster_core::ids::{Index, ReqId};
use muster_core::io::Input;
use muster_core::time::{Duration, Time};
use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

use crate::chaos::{self, fmt_duration, Env, KvWork, Outcome, Profile, ELECTION, KEYS};
use crate::fleet::{self, Fleet, FleetWorld, HostBugs, AE_INTERVAL, GOSSIP_SETTLE, HOLD};
use crate::lin::OpKind;
use crate::ClusterOutcome;

/// How many seeds `cargo test` runs (`SIM_CLIENTS_SEEDS` overrides).
pub fn seeds_per_test() -> u64 {
    std::env::var("SIM_CLIENTS_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(6)
}

const SERVERS: usize = 3;
const SAFETY_PHASE: Duration = Duration::from_secs(16);
const SERVICES: [&str; 3] = ["web", "db", "cache"];
const TTL: Duration = Duration::from_secs(6);
/// The service every client agent registers in the liveness phase.
const LIVE_SERVICE: &str = "live";

/// How long an agent may take to answer: its wait for a sync already on its way (a full
/// one asks for the catalog's view first) and then its own, each call held by a server up
/// to `HOLD`, plus the calls' 2 s of slack, the network and pauses; and a blocking read's
/// wait. Past it, a request to a live agent has gone unanswered.
fn answer_bound(wait: Option<Duration>) -> Duration {
    let wait = wait.map_or(Duration::ZERO, |w| w + w / 16);
    HOLD * 3 + Duration::from_secs(7) + wait
}

/// How long the liveness phase may take to settle: a leader, gossip agreeing again, the
/// tasks' retries, and a few full anti-entropy syncs.
fn live_bound() -> Duration {
    10 * ELECTION + 2 * HOLD + GOSSIP_SETTLE + 3 * AE_INTERVAL
}

/// How soon the leader tries again a reconcile whose write failed (core's
/// `membership::RECONCILE_RETRY`).
const RECONCILE_RETRY: Duration = Duration::from_secs(1);

/// How long after the heal the client agent that died for good may still look alive
/// anywhere, with `agents` agents (it included) on `fleet::lan_gossip`'s timers. First
/// every live agent fails it: its turn to be probed comes within two shuffled rounds (two
/// probe intervals per member), each interval and the probe's timeout stretched by up to
/// Lifeguard's awareness multiplier while the prober's own acks go missing; then the
/// longest suspicion (`suspicion_max_timeout_mult` × `suspicion_mult` probe intervals, the
/// minimum below ten members), and a push-pull interval for an agent that missed every
/// notice. Then the leader's reconcile, which a member change starts at once (`dirty`; its
/// 60 s timer is a backstop this bound leaves out): a leader (ten election timeouts, as in
/// `live_bound`) caught up on its predecessors' writes, the write held at most twice
/// `HOLD`, and two retries of a write that failed. With 7 agents: 11.2 + 0.8 + 1.8 + 5 +
/// 3 + 3 + 2 = 26.8 s.
fn dead_bound(agents: usize) -> Duration {
    let g = fleet::lan_gossip();
    let stretch = g.awareness_max_multiplier;
    let probed = g.probe_interval * (2 * agents as u32) * stretch + g.probe_timeout * stretch;
    let suspicion = g.probe_interval * g.suspicion_mult * g.suspicion_max_timeout_mult;
    let reconcile = 10 * ELECTION + 2 * HOLD + 2 * RECONCILE_RETRY;
    probed + suspicion + g.push_pull_interval + reconcile
}

/// The client agent that dies for good on `seed`, if any, and when: on half the seeds, in
/// the safety phase after its first second, half the time in its last half second (gossip
/// then fails it after the heal). Drawn apart from the world's own randomness, so the other
/// seeds run as they did without it.
fn draw_dead(seed: u64, clients: usize) -> Option<(usize, Time)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x4445_4144);
    let mut below = |n: u64| rng.next_u64() % n;
    if below(2) == 0 {
        return None;
    }
    let c = below(clients as u64) as usize;
    let end = SAFETY_PHASE.as_nanos() as u64;
    let at =
        if below(2) == 0 { 1_000_000_000 + below(end - 1_000_000_000) } else { end - 1 - below(500_000_000) };
    Some((SERVERS + c, Time(at)))
}

/// The reads each live client agent makes once the dead client looks dead everywhere: per
/// service it may have registered, a `?passing` health read and a DNS lookup.
const PROBES: usize = 2 * SERVICES.len();

/// What happened, so tests can check the world's features were exercised.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub clients: usize,
    pub requests: u64,
    pub answered: u64,
    /// Requests that reached an agent that was down (a refused connection).
    pub refused: u64,
    /// Requests whose agent crashed before answering them.
    pub lost: u64,
    pub registrations: u64,
    pub ttl_updates: u64,
    pub deregistrations: u64,
    pub reads_ok: u64,
    pub blocking_reads_ok: u64,
    pub kv_ok: u64,
    pub client_crashes: u64,
    /// Services a restarted client agent got back from its saved state.
    pub services_restored: u64,
    /// Calls that came back undelivered (their server was down) and answers lost with the
    /// client's connection.
    pub calls_undelivered: u64,
    pub answers_lost: u64,
    pub liveness_retries: u64,
    /// Seeds whose client agent died for good, and the reads checked to leave it out.
    pub dead_clients: u64,
    pub dead_probes_ok: u64,
    /// How long after the heal the dead client first looked dead everywhere.
    pub dead_settled_ms: Option<u64>,
}

pub fn run_clients_seed(seed: u64, bugs: HostBugs) -> (ClusterOutcome, ClientStats) {
    let mut w = Clients::new(seed, bugs);
    let (o, _) = chaos::run(seed, &mut w, false);
    (o, w.stats())
}

/// Like `run_clients_seed`, also returning the trace: one line per event handled.
pub fn run_clients_traced(seed: u64, bugs: HostBugs) -> (ClusterOutcome, ClientStats, Vec<String>) {
    let mut w = Clients::new(seed, bugs);
    let (o, lines) = chaos::run(seed, &mut w, true);
    (o, w.stats(), lines)
}

/// What a request asks, as far as its checks care.
#[derive(Debug, Clone, PartialEq, Eq)]
enum What {
    /// A KV operation: the history holds it.
    Kv {
        op: usize,
    },
    Register(String),
    Deregister(String),
    /// A TTL update of this service's check; `known` once the agent has it, which the model
    /// says when the request arrives.
    Ttl {
        service: String,
        known: bool,
    },
    /// A health or catalog read (`query` names it for later blocking reads); blocking when
    /// it names an index and a wait.
    Read {
        query: String,
        min_index: u64,
        wait: Option<Duration>,
    },
    /// A `?passing` health read, or a DNS lookup, of `service`, which must leave out the
    /// dead client.
    Probe {
        service: &'static str,
        dns: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// On its way to the agent.
    Sent,
    /// At the agent, in its `life`.
    Waiting {
        life: u32,
    },
    /// Answered, and whether the answer was a success.
    Answered {
        ok: bool,
    },
    Refused,
    Lost,
}

#[derive(Debug)]
struct Req {
    user: usize,
    agent: usize,
    what: What,
    /// The request itself, until it reaches the agent.
    req: Option<ApiRequest>,
    stage: Stage,
    arrived: Time,
}

#[derive(Debug)]
enum Ev {
    Arrive(usize),
    Deadline(usize),
}

/// A service as the checks compare it: ID, name, port, tags.
type Svc = (String, String, u16, Vec<String>);

/// The liveness phase's tasks, in order, for each client agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Register,
    Pass,
    Put,
    Get,
    Health,
    Catalog,
}

const TASKS: [Task; 6] = [Task::Register, Task::Pass, Task::Put, Task::Get, Task::Health, Task::Catalog];

struct Clients {
    fleet: Fleet<Ev>,
    kv: KvWork,
    reqs: Vec<Req>,
    /// Per client agent (from 0), the services its API registrations leave it with.
    model: Vec<BTreeMap<String, Svc>>,
    /// The last index a read of each query answered, for blocking reads to name.
    indexes: BTreeMap<String, u64>,
    /// Per client agent, the liveness task under way and its latest request.
    live: Vec<(usize, Option<usize>)>,
    /// The client agent that died for good, if one did.
    dead: Option<usize>,
    /// When it first looked dead everywhere after the heal.
    dead_settled: Option<Time>,
    /// Per client agent, the probe under way (of `PROBES`) and its latest request.
    probes: Vec<(usize, Option<usize>)>,
    stats: ClientStats,
}

impl Clients {
    fn new(seed: u64, bugs: HostBugs) -> Clients {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x434c_4945);
        let mut profile = Profile::draw(&mut rng);
        let clients = profile.clients;
        profile.nodes = SERVERS + clients;
        // Two users per client agent, each with one request at a time.
        profile.clients = 2 * clients;
        // Agents answer by their own deadlines; this world checks them (`answer_bound`).
        profile.op_timeout = Duration::from_secs(3600);
        // Seven agents cost twice what three servers do per second: a shorter phase keeps
        // the world's seeds as cheap as the nodes world's.
        profile.safety_phase = SAFETY_PHASE;
        let (env, seeds) = Env::new(rng, profile);
        let mut fleet = Fleet::new(env, SERVERS, seeds);
        fleet.bugs = bugs;
        let mut live = vec![(0, None); clients];
        let mut probes = vec![(PROBES, None); clients];
        let dead = draw_dead(seed, clients);
        if let Some((agent, at)) = dead {
            fleet.gone = dead;
            fleet.env.schedule(at, chaos::Event::CrashNode { node: agent });
            live[agent - SERVERS].0 = TASKS.len();
            for (c, p) in probes.iter_mut().enumerate() {
                p.0 = if SERVERS + c == agent { PROBES } else { 0 };
            }
        }
        Clients {
            fleet,
            kv: KvWork::default(),
            reqs: Vec::new(),
            model: vec![BTreeMap::new(); clients],
            indexes: BTreeMap::new(),
            live,
            dead: dead.map(|(agent, _)| agent),
            dead_settled: None,
            probes,
            stats: ClientStats { clients, dead_clients: u64::from(dead.is_some()), ..ClientStats::default() },
        }
    }

    fn stats(&self) -> ClientStats {
        let f = &self.fleet;
        ClientStats {
            services_restored: f.restored,
            calls_undelivered: f.calls_undelivered,
            answers_lost: f.answers_lost,
            ..self.stats.clone()
        }
    }

    fn clients(&self) -> std::ops::Range<usize> {
        SERVERS..self.fleet.agents.len()
    }

    /// The client agents that live on: all but the one that died for good.
    fn live_clients(&self) -> impl Iterator<Item = usize> + '_ {
        self.clients().filter(|c| Some(*c) != self.dead)
    }

    /// `user` sends `req` to client agent `agent`.
    fn issue(&mut self, user: usize, agent: usize, what: What, req: ApiRequest) {
        let r = self.reqs.len();
        self.stats.requests += 1;
        let env = &mut self.fleet.env;
        env.mix(&[20, user as u64, r as u64, agent as u64]);
        env.note(|_| format!("user {user}: request {r} at n{agent}: {req:?}"));
        let at = env.now + env.delay();
        env.schedule(at, chaos::Event::Local { node: agent, event: fleet::Local::World(Ev::Arrive(r)) });
        self.reqs.push(Req { user, agent, what, req: Some(req), stage: Stage::Sent, arrived: Time::ZERO });
    }

    /// A KV operation through client agent `agent`, in the history as well.
    fn issue_kv(
        &mut self,
        user: usize,
        agent: usize,
        key: &'static str,
        (kind, read, req): (OpKind, chaos::ReadMode, ApiRequest),
    ) {
        let op = self.fleet.env.invoke(user, key, kind, read);
        self.issue(user, agent, What::Kv { op }, req);
    }

    /// Request `r` is over without an answer: `stage` says why.
    fn settle_unanswered(&mut self, r: usize, stage: Stage) {
        self.reqs[r].stage = stage;
        match self.reqs[r].what {
            What::Kv { op } => {
                let env = &mut self.fleet.env;
                let outcome = match (stage, env.ops[op].kind.is_write()) {
                    (Stage::Refused, _) => Outcome::Fail,
                    (_, true) => Outcome::Info,
                    (_, false) => Outcome::Dropped,
                };
                env.finish(op, outcome, None);
            }
            _ => self.next(self.reqs[r].user),
        }
    }

    /// The user thinks, then sends its next request (`Env::finish` does this for KV).
    fn next(&mut self, user: usize) {
        let env = &mut self.fleet.env;
        let think = 1_000_000 + env.below(30_000_000);
        env.schedule(env.now + Duration::from_nanos(think), chaos::Event::Client { client: user });
    }

    /// Request `r` reaches its agent: the model learns what it changes (the agent saves
    /// its registrations in this same step), and the agent takes it.
    fn arrive(&mut self, r: usize) -> Result<(), String> {
        let agent = self.reqs[r].agent;
        if self.fleet.agents[agent].node.is_none() {
            self.stats.refused += 1;
            self.settle_unanswered(r, Stage::Refused);
            return Ok(());
        }
        let req = self.reqs[r].req.take().expect("a request arrives once");
        let model = &mut self.model[agent - SERVERS];
        match (&mut self.reqs[r].what, &req) {
            (What::Register(id), ApiRequest::AgentServiceRegister { def, .. }) => {
                model.insert(id.clone(), (id.clone(), def.name.clone(), def.port, def.tags.clone()));
            }
            (What::Deregister(id), _) => {
                model.remove(id);
            }
            (What::Ttl { service, known }, _) => *known = model.contains_key(service),
            _ => {}
        }
        let env = &mut self.fleet.env;
        let life = env.machines[agent].life;
        let wait = match self.reqs[r].what {
            What::Read { wait, .. } => wait,
            _ => None,
        };
        let deadline = env.now + answer_bound(wait);
        env.schedule(
            deadline,
            chaos::Event::Local { node: agent, event: fleet::Local::World(Ev::Deadline(r)) },
        );
        let q = &mut self.reqs[r];
        q.stage = Stage::Waiting { life };
        q.arrived = env.now;
        fleet::step(self, agent, Input::Request { id: ReqId(r as u64), req })
    }

    /// Whether `resp` is what request `r` may get; `Ok(ok)` says whether it succeeded.
    fn judge(&mut self, r: usize, resp: &ApiResponse) -> Result<bool, String> {
        let q = &self.reqs[r];
        let agent = q.agent;
        let env = &mut self.fleet.env;
        let status = resp.status;
        let ok = match (&q.what, status) {
            (What::Kv { op }, _) => {
                let op = *op;
                if env.ops[op].outcome == Outcome::Pending {
                    self.kv.settle(env, agent, op, resp)?;
                }
                let ok = env.ops[op].outcome == Outcome::Ok;
                self.stats.kv_ok += u64::from(ok);
                ok
            }
            (What::Register(_) | What::Deregister(_), 200) => true,
            (What::Ttl { known: true, .. }, 200) | (What::Ttl { known: false, .. }, 404) => {
                self.stats.ttl_updates += u64::from(status == 200);
                true
            }
            (What::Read { query, min_index, wait }, 200) => {
                let (min_index, wait) = (*min_index, *wait);
                let Some(meta) = resp.meta.filter(|_| matches!(resp.body, Body::JsonText(_))) else {
                    return env
                        .fail(format!("read request {r} answered 200 without its index or JSON: {resp:?}"));
                };
                if let Some(wait) = wait {
                    // The server waits by its own clock, which may run 1% fast.
                    let earliest = q.arrived + (wait - wait / 50);
                    if meta.index.0 <= min_index && env.now < earliest {
                        return env.fail(format!(
                            "blocking read request {r} answered at index {} ≤ {min_index} before its wait of {}",
                            meta.index.0,
                            fmt_duration(wait)
                        ));
                    }
                    self.stats.blocking_reads_ok += 1;
                }
                self.indexes.insert(query.clone(), meta.index.0);
                self.stats.reads_ok += 1;
                true
            }
            // A read no server could answer in time (none known, no leader, a call lost).
            (What::Read { .. } | What::Probe { dns: false, .. }, 500) => false,
            (What::Probe { service, dns }, 200) => {
                let (service, dns) = (*service, *dns);
                return self.judge_probe(r, service, dns, resp);
            }
            (what, _) => {
                return env
                    .fail(format!("n{agent} answered request {r} ({what:?}) with {status} {:?}", resp.body))
            }
        };
        Ok(ok)
    }

    /// Whether probe `r`'s answer (200) leaves out the dead client; `Ok(false)` when no
    /// server could answer (a DNS lookup says so by SERVFAIL).
    fn judge_probe(
        &mut self,
        r: usize,
        service: &str,
        dns: bool,
        resp: &ApiResponse,
    ) -> Result<bool, String> {
        let dead = self.dead.expect("probes only with a dead client");
        let name = &self.fleet.agents[dead].name;
        let found = match (&resp.body, dns) {
            (Body::Dns(a), true) if a.rcode == Rcode::ServFail => return Ok(false),
            (Body::Dns(a), true) => {
                let addr = fleet::address(dead);
                a.answers.iter().chain(&a.additional).any(|rec| match &rec.data {
                    RData::A(ip) => ip.to_string() == addr,
                    RData::Srv { target, .. } => target.starts_with(&format!("{name}.")),
                    _ => false,
                })
            }
            (Body::JsonText(text), false) => text.contains(&format!("\"Node\":\"{name}\"")),
            _ => return self.fleet.env.fail(format!("probe request {r} answered 200 with {resp:?}")),
        };
        if found {
            let env = &self.fleet.env;
            let settled = self.dead_settled.map_or(Duration::ZERO, |t| env.now.since(t));
            return env.fail(format!(
                "dead client {name}: n{} served it in a passing read of {service} (request {r}), \
                 {} after every server's catalog had it critical: {resp:?}",
                self.reqs[r].agent,
                fmt_duration(settled)
            ));
        }
        self.stats.dead_probes_ok += 1;
        Ok(true)
    }

    /// A health or catalog read of what client agent `agent` registers, blocking on the
    /// last index seen for it half the time.
    fn read(&mut self, user: usize, agent: usize, service: &str) {
        let env = &mut self.fleet.env;
        let kind = env.below(3);
        let name = if kind == 2 { self.fleet.agents[agent].name.clone() } else { service.to_string() };
        let query = format!("{kind}/{name}");
        let mut q = QueryOpts::default();
        let mut wait = None;
        if let Some(&index) = self.indexes.get(&query).filter(|_| env.below(2) == 0) {
            let w = Duration::from_millis(200 + env.below(1_800));
            (q.min_index, q.wait, wait) = (Index(index), Some(w), Some(w));
        }
        if env.below(4) == 0 {
            q.consistency = Consistency::Stale;
        }
        let req = match kind {
            0 => ApiRequest::HealthService { service: name, tags: vec![], passing: false, q, near: None },
            1 => ApiRequest::CatalogService { name, tags: vec![], q, near: None },
            _ => ApiRequest::HealthNode { name, q },
        };
        self.issue(user, agent, What::Read { query, min_index: q.min_index.0, wait }, req);
    }

    fn register(&mut self, user: usize, agent: usize, name: &str, port: u16, tags: Vec<String>) {
        self.stats.registrations += 1;
        let def = ServiceDef {
            id: Some(name.into()),
            name: name.into(),
            port,
            tags,
            checks: vec![CheckDef { ttl: Some(TTL), ..CheckDef::default() }],
            ..ServiceDef::default()
        };
        let req = ApiRequest::AgentServiceRegister { def: Box::new(def), replace_existing_checks: false };
        self.issue(user, agent, What::Register(name.into()), req);
    }

    fn ttl(&mut self, user: usize, agent: usize, service: &str, status: Health) {
        let req =
            ApiRequest::AgentCheckTtl { id: format!("service:{service}"), status, output: String::new() };
        self.issue(user, agent, What::Ttl { service: service.into(), known: false }, req);
    }

    /// Where a run of liveness requests stands, given its step under way and that step's
    /// latest request: `None` while the request is under way, else the step to send (the
    /// next once the request succeeded, the same again if it failed).
    fn advance(&mut self, (step, last): (usize, Option<usize>)) -> Option<usize> {
        let (step, retry) = match last.map(|r| self.reqs[r].stage) {
            Some(Stage::Sent | Stage::Waiting { .. }) => return None,
            Some(Stage::Answered { ok: true }) => (step + 1, false),
            Some(_) => (step, true),
            None => (step, false),
        };
        self.stats.liveness_retries += u64::from(retry);
        Some(step)
    }

    /// Sends the next request of client agent `c`'s liveness tasks, or the same again if
    /// it failed; whether they are all done.
    fn live_task(&mut self, c: usize) -> bool {
        if self.live[c].0 == TASKS.len() {
            return true;
        }
        let agent = SERVERS + c;
        let Some(task) = self.advance(self.live[c]) else { return false };
        self.live[c].0 = task;
        let Some(&t) = TASKS.get(task) else { return true };
        let user = self.fleet.env.profile.clients + c;
        let key = KEYS[c % KEYS.len()];
        match t {
            Task::Register => self.register(user, agent, LIVE_SERVICE, 9000, vec![format!("c{c}")]),
            Task::Pass => self.ttl(user, agent, LIVE_SERVICE, Health::Passing),
            Task::Put => {
                let op = self.kv.write(&mut self.fleet.env, key, None);
                self.issue_kv(user, agent, key, op);
            }
            Task::Get => {
                let req = chaos::read_request(key, Consistency::Default);
                self.issue_kv(user, agent, key, (OpKind::Read(None), chaos::ReadMode::Lease, req));
            }
            Task::Health | Task::Catalog => {
                let q = QueryOpts::default();
                let service = LIVE_SERVICE.to_string();
                let req = if t == Task::Health {
                    ApiRequest::HealthService { service, tags: vec![], passing: false, q, near: None }
                } else {
                    ApiRequest::CatalogService { name: service, tags: vec![], q, near: None }
                };
                self.issue(user, agent, What::Read { query: String::new(), min_index: 0, wait: None }, req);
            }
        }
        self.live[c].1 = Some(self.reqs.len() - 1);
        false
    }

    /// Sends client agent `c`'s next probe of the dead client's services, or the same
    /// again if it failed; whether they are all done.
    fn dead_probe(&mut self, c: usize) -> bool {
        if self.probes[c].0 == PROBES {
            return true;
        }
        let Some(probe) = self.advance(self.probes[c]) else { return false };
        self.probes[c].0 = probe;
        if probe == PROBES {
            return true;
        }
        let (service, dns) = (SERVICES[probe / 2], probe % 2 == 1);
        let req = if dns {
            let name = format!("{service}.service.consul.");
            ApiRequest::Dns(DnsQuestion { name, qtype: RecordType::A, plain_udp: false })
        } else {
            let q = QueryOpts::default();
            ApiRequest::HealthService { service: service.into(), tags: vec![], passing: true, q, near: None }
        };
        let user = self.fleet.env.profile.clients + c;
        self.issue(user, SERVERS + c, What::Probe { service, dns }, req);
        self.probes[c].1 = Some(self.reqs.len() - 1);
        false
    }

    /// Why the client agent that died for good does not look dead yet, if it does not: a
    /// live agent's gossip still holds it alive, or a server's catalog holds its node with
    /// `serfHealth` not critical or a service without a critical check (DNS serves those,
    /// and `?passing` those whose checks all pass). A catalog without its node is fine: a
    /// leader whose gossip does not know the member deregisters a node with `serfHealth`.
    fn dead_diff(&self) -> Option<String> {
        let dead = self.dead?;
        let name = &self.fleet.agents[dead].name;
        for (i, a) in self.fleet.agents.iter().enumerate() {
            let Some(n) = a.node.as_ref() else { continue };
            let members = n.lan_members();
            let alive = |st: &MemberStatus| matches!(st, MemberStatus::Alive | MemberStatus::Leaving);
            if let Some((_, st)) = members.iter().find(|(m, st)| m == name && alive(st)) {
                return Some(format!("n{i}'s gossip holds {name} {st:?}"));
            }
            let cat = &n.state().catalog;
            if self.fleet.is_client(i) || cat.node(name).is_none() {
                continue;
            }
            let serf = cat.node_checks(name).find(|c| c.check_id == "serfHealth").map(|c| c.status);
            let worst = |id: &str| cat.instance_checks(name, id).map(|c| c.status).max();
            let served: Vec<(&str, Option<Health>)> = cat
                .node_services(name)
                .map(|s| (s.id.as_str(), worst(&s.id)))
                .filter(|(_, worst)| *worst != Some(Health::Critical))
                .collect();
            if serf != Some(Health::Critical) || !served.is_empty() {
                return Some(format!(
                    "n{i}'s catalog has {name}'s serfHealth {serf:?}, and its services (worst check) \
                     {served:?} still served"
                ));
            }
        }
        None
    }

    /// How a server's catalog differs from client agent `agent`'s local services and checks
    /// (IDs, names, ports, tags; check IDs and statuses, `serfHealth` aside), if it does.
    fn catalog_diff(&self, server: usize, agent: usize) -> Option<String> {
        let (Some(s), Some(c)) = (&self.fleet.agents[server].node, &self.fleet.agents[agent].node) else {
            return Some("down".into());
        };
        let name = &self.fleet.agents[agent].name;
        let local = c.local();
        let catalog = &s.state().catalog;
        let svc = |s: &muster_core::fsm::catalog::NodeService| {
            (s.id.clone(), s.service.clone(), s.port, s.tags.clone())
        };
        let local_svcs: BTreeSet<Svc> = local.services().map(svc).collect();
        let cat_svcs: BTreeSet<Svc> = catalog.node_services(name).map(svc).collect();
        let local_checks: BTreeSet<(String, Health)> =
            local.checks().map(|c| (c.check_id.clone(), c.status)).collect();
        let outputs: BTreeMap<&str, &str> =
            local.checks().map(|c| (c.check_id.as_str(), c.output.as_str())).collect();
        let cat_checks: BTreeSet<(String, Health)> = catalog
            .node_checks(name)
            .filter(|c| c.check_id != "serfHealth")
            .map(|c| (c.check_id.clone(), c.status))
            .collect();
        (local_svcs != cat_svcs || local_checks != cat_checks).then(|| {
            format!(
                "n{server}'s catalog for {name}: services {cat_svcs:?}, checks {cat_checks:?}; \
                 the agent holds {local_svcs:?}, {local_checks:?} (outputs {outputs:?})"
            )
        })
    }

    /// What each live agent's gossip holds of the dead client (`None`: no entry).
    fn dead_views(&self, dead: usize) -> String {
        let name = &self.fleet.agents[dead].name;
        let views: Vec<String> = (self.fleet.agents.iter().enumerate())
            .filter_map(|(i, a)| {
                let st = a.node.as_ref()?.lan_members().into_iter().find(|(m, _)| m == name).map(|(_, s)| s);
                Some(format!("n{i} {st:?}"))
            })
            .collect();
        format!("gossip holds {name}: {}", views.join(", "))
    }

    /// The first difference between a server's catalog and a client agent's local state.
    fn first_catalog_diff(&self) -> Option<String> {
        let pairs = (0..SERVERS).flat_map(|s| self.live_clients().map(move |c| (s, c)));
        pairs.into_iter().find_map(|(s, c)| self.catalog_diff(s, c))
    }

    /// Each client agent holds the services its API registrations left it with, restarts
    /// included.
    fn check_model(&self) -> Result<(), String> {
        for c in self.live_clients() {
            let node = self.fleet.agents[c].node.as_ref().expect("all restarted");
            let have: BTreeMap<String, Svc> = node
                .local()
                .services()
                .map(|s| (s.id.clone(), (s.id.clone(), s.service.clone(), s.port, s.tags.clone())))
                .collect();
            if have != self.model[c - SERVERS] {
                return self.fleet.env.fail(format!(
                    "n{c} holds services {have:?}; its registrations say {:?}",
                    self.model[c - SERVERS]
                ));
            }
        }
        Ok(())
    }
}

impl FleetWorld for Clients {
    type Extra = Ev;

    fn fleet(&mut self) -> &mut Fleet<Ev> {
        &mut self.fleet
    }

    fn answered(&mut self, node: usize, id: ReqId, resp: ApiResponse) -> Result<(), String> {
        let r = id.0 as usize;
        let life = self.fleet.env.machines[node].life;
        let waiting = self.reqs.get(r).is_some_and(|q| q.agent == node && q.stage == Stage::Waiting { life });
        if !waiting {
            return self.fleet.env.fail(format!("n{node} answered request {r} twice, or unasked"));
        }
        self.stats.answered += 1;
        let env = &mut self.fleet.env;
        env.mix(&[21, r as u64, resp.status as u64]);
        env.note(|_| format!("n{node} answers request {r}: {} {}", resp.status, chaos::text(&resp)));
        let ok = self.judge(r, &resp)?;
        self.reqs[r].stage = Stage::Answered { ok };
        if !matches!(self.reqs[r].what, What::Kv { .. }) {
            self.next(self.reqs[r].user);
        }
        Ok(())
    }

    fn request(&mut self, _: usize, _: usize) -> Result<(), String> {
        unreachable!("requests reach client agents as this world's own events")
    }

    fn client_op(&mut self, user: usize) {
        let env = &mut self.fleet.env;
        if !env.safety_phase() {
            return;
        }
        let agent = SERVERS + env.below(self.model.len() as u64) as usize;
        let i = env.below(SERVICES.len() as u64) as u16;
        let service = SERVICES[i as usize];
        match env.below(100) {
            0..=39 => {
                let key = KEYS[env.below(env.profile.keys) as usize];
                let (env, states) = self.fleet.env_and_states();
                let op = self.kv.draw(env, key, &states);
                self.issue_kv(user, agent, key, op);
            }
            40..=51 => {
                let port = 8000 + 10 * i + env.below(3) as u16;
                let tags = ["a", "b"].iter().filter(|_| env.below(2) == 0).map(|t| t.to_string()).collect();
                self.register(user, agent, service, port, tags);
            }
            52..=69 => {
                let status = [Health::Passing, Health::Warning, Health::Critical][env.below(3) as usize];
                self.ttl(user, agent, service, status);
            }
            70..=74 => {
                self.stats.deregistrations += 1;
                let req = ApiRequest::AgentServiceDeregister { id: service.into() };
                self.issue(user, agent, What::Deregister(service.into()), req);
            }
            _ => self.read(user, agent, service),
        }
    }

    fn extra(&mut self, node: usize, event: Ev) -> Result<(), String> {
        match event {
            Ev::Arrive(r) => self.arrive(r),
            Ev::Deadline(r) => {
                let q = &self.reqs[r];
                let env = &self.fleet.env;
                if q.stage == (Stage::Waiting { life: env.machines[node].life }) {
                    return env.fail(format!(
                        "n{node} has not answered request {r} ({:?}), {} after it arrived",
                        q.what,
                        fmt_duration(env.now.since(q.arrived))
                    ));
                }
                Ok(())
            }
        }
    }

    fn killed(&mut self, node: usize) {
        if !self.fleet.is_client(node) {
            return;
        }
        self.stats.client_crashes += 1;
        let waiting: Vec<usize> = (0..self.reqs.len())
            .filter(|r| self.reqs[*r].agent == node && matches!(self.reqs[*r].stage, Stage::Waiting { .. }))
            .collect();
        for r in waiting {
            self.stats.lost += 1;
            self.settle_unanswered(r, Stage::Lost);
        }
    }

    /// After the heal: every live client agent's tasks succeed, every request is settled,
    /// every server applies every committed entry, gossip agrees and the catalogs hold what
    /// the client agents hold; the dead client, if any, looks dead everywhere within
    /// `dead_bound`, and then every live client's probes leave it out; then durability and
    /// the registrations model.
    fn liveness_check(&mut self) -> Result<Option<Result<(), String>>, String> {
        let dead = self.dead_diff();
        let since = self.fleet.env.since_liveness();
        if let (Some(d), None) = (self.dead, &dead) {
            if self.dead_settled.is_none() {
                self.dead_settled = Some(self.fleet.env.now);
                self.stats.dead_settled_ms = Some(since.as_millis() as u64);
                self.fleet.env.note(|_| format!("n{d} looks dead everywhere"));
            }
        }
        if let (Some(d), Some(why)) = (self.dead, &dead) {
            let bound = dead_bound(self.fleet.agents.len());
            if since > bound {
                let leader = <Self as chaos::World>::leader(self).map(|l| format!("n{l}"));
                let name = &self.fleet.agents[d].name;
                return self.fleet.env.fail(format!(
                    "dead client {name} (n{d}) still looks alive {} after the heal (bound {}): {why} \
                     ({}; leader {})",
                    fmt_duration(since),
                    fmt_duration(bound),
                    self.dead_views(d),
                    leader.unwrap_or_else(|| "none".into())
                ));
            }
        }
        let (mut tasks_done, mut probes_done) = (true, true);
        for c in 0..self.live.len() {
            let done = self.live_task(c);
            tasks_done &= done;
            probes_done &=
                if done && dead.is_none() { self.dead_probe(c) } else { self.probes[c].0 == PROBES };
        }
        let f = &self.fleet;
        let applied: Vec<u64> = f.server_states().map(|s| s.applied().0).collect();
        let converged = applied.len() == SERVERS && applied.iter().all(|a| *a == f.env.stats.max_commit);
        let settled_reqs = self.reqs.iter().all(|q| !matches!(q.stage, Stage::Sent | Stage::Waiting { .. }));
        let gossip = f.gossip_settled();
        let diff = if gossip { self.first_catalog_diff() } else { None };
        if tasks_done
            && probes_done
            && dead.is_none()
            && converged
            && settled_reqs
            && gossip
            && diff.is_none()
        {
            f.env.check_durability(Index(f.env.stats.max_commit))?;
            return Ok(Some(self.check_model()));
        }
        if since <= live_bound() {
            return Ok(None);
        }
        let why = if !tasks_done {
            let stuck: Vec<_> =
                self.live.iter().map(|(t, r)| (TASKS.get(*t), r.map(|r| &self.reqs[r]))).collect();
            format!("the client agents' tasks have not all succeeded: {stuck:?}")
        } else if !probes_done {
            let stuck: Vec<_> = self.probes.iter().map(|(p, r)| (p, r.map(|r| &self.reqs[r]))).collect();
            format!("the probes of the dead client's services have not all succeeded: {stuck:?}")
        } else if !settled_reqs {
            "requests are still unanswered".to_string()
        } else if !converged {
            format!("applied {applied:?} of {}", f.env.stats.max_commit)
        } else if !gossip {
            format!("members or serfHealth still disagree: {}", f.gossip_views())
        } else {
            format!("catalog and client agent disagree: {}", diff.unwrap_or_default())
        };
        f.env.fail(format!("liveness: {} after the heal, {why}", fmt_duration(since)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seeds: u64, bugs: HostBugs) -> (Vec<Option<String>>, ClientStats) {
        let mut total = ClientStats::default();
        let mut violations = vec![];
        for seed in 0..seeds {
            let (o, s) = run_clients_seed(seed, bugs);
            violations.push(o.violation.clone());
            if o.violation.is_none() {
                assert_eq!(o.lin, crate::lin::LinResult::Ok, "clients seed {seed}: linearizability");
            }
            total.requests += s.requests;
            total.refused += s.refused;
            total.lost += s.lost;
            total.ttl_updates += s.ttl_updates;
            total.blocking_reads_ok += s.blocking_reads_ok;
            total.kv_ok += s.kv_ok;
            total.client_crashes += s.client_crashes;
            total.services_restored += s.services_restored;
            total.calls_undelivered += s.calls_undelivered;
            total.dead_clients += s.dead_clients;
            total.dead_probes_ok += s.dead_probes_ok;
        }
        (violations, total)
    }

    #[test]
    fn clients_seeds_hold_every_invariant() {
        let (violations, total) = run(seeds_per_test(), HostBugs::default());
        for (seed, v) in violations.iter().enumerate() {
            assert_eq!(v, &None, "replay: cargo run -p sim -- replay --clients --seed {seed} --trace");
        }
        assert!(total.kv_ok > 0 && total.ttl_updates > 0 && total.blocking_reads_ok > 0, "{total:?}");
        assert!(total.client_crashes > 0 && total.services_restored > 0, "{total:?}");
        assert!(total.dead_clients > 0 && total.dead_probes_ok > 0, "{total:?}");
    }

    #[test]
    fn a_seed_replays_to_the_same_trace() {
        let (a, sa) = run_clients_seed(1, HostBugs::default());
        let (b, sb, lines) = run_clients_traced(1, HostBugs::default());
        assert_eq!((a.clone(), sa), (b, sb), "tracing changes nothing");
        let has = |what: &str| lines.iter().any(|l| l.contains(what));
        assert!(has("Call") && has("Answer"), "client agents call servers");
        assert_ne!(a.trace_hash, run_clients_seed(2, HostBugs::default()).0.trace_hash);
    }

    /// The first seed below `within` whose run with `bugs` fails, by a violation that
    /// names one of `what`, while the same seed passes without them.
    fn caught(bugs: HostBugs, within: u64, what: &[&str]) -> u64 {
        let named = |v: String| what.iter().any(|w| v.contains(w));
        let seed = (0..within)
            .find(|s| run_clients_seed(*s, bugs).0.violation.is_some_and(named))
            .unwrap_or_else(|| panic!("{bugs:?} not caught within {within} seeds"));
        assert_eq!(run_clients_seed(seed, HostBugs::default()).0.violation, None, "seed {seed} fails anyway");
        seed
    }

    #[test]
    fn dropped_anti_entropy_is_caught() {
        let bugs = HostBugs { drop_client_work: true, ..HostBugs::default() };
        assert_eq!(caught(bugs, 1, &["catalog and client agent disagree"]), 0);
    }

    /// A client agent that died for good but whose gossip still acks its pings is never
    /// failed: its `serfHealth` stays passing, and the dead-client check names it.
    #[test]
    fn a_dead_client_that_gossip_keeps_alive_is_caught() {
        let bugs = HostBugs { zombie_gossip: true, ..HostBugs::default() };
        caught(bugs, 10, &["dead client"]);
    }

    /// A restarted agent that forgot its registrations answers a TTL update of a check it
    /// had with 404, or ends without a service it had.
    #[test]
    fn lost_saved_state_is_caught() {
        let bugs = HostBugs { lose_saved_state: true, ..HostBugs::default() };
        caught(bugs, 10, &["Unknown check ID", "registrations say"]);
    }
}
