//! Calls over the server port that a server answers on someone else's behalf: a client
//! agent's requests and anti-entropy (to a server of its own datacenter), and requests for
//! another datacenter (`?dc=`, `.dc2.consul`) that a server passes to one of that
//! datacenter's servers, found in the WAN pool.
//!
//! Owns the caller's side: which server to ask (a client sticks to one server, chosen at
//! random, until it fails or a rebalance is due), deadlines that leave room for a blocking
//! read's wait, retries on the other servers for a call that never left (the transport hands
//! it back undelivered, so resending cannot do anything twice), setting aside for a while a
//! server that could not be reached (gossip takes seconds to see it fail), and failing calls
//! to a server gossip has seen fail. Also owns the
//! answering side: a call is served exactly as a request on the server's own HTTP port
//! would be, under a request id of its own, and whatever response that id gets goes back to
//! the caller as an answer. Never decides what a request means: `node::mod` does, on
//! whichever agent ends up answering it.

use std::collections::BTreeMap;

use super::consensus::Waiter;
use super::Node;
use crate::api::dns::{DnsResponse, Rcode};
use crate::api::{ApiRequest, ApiResponse, Body};
use crate::fsm::catalog::Catalog;
use crate::fsm::Command;
use crate::ids::ReqId;
use crate::io::Effect;
use crate::rng::Rng;
use crate::rpc::{Answer, Call, PeerMessage, Work};
use crate::time::{Duration, Time};

/// Request ids at and above this are calls served for another agent; hosts number their
/// own requests from zero and never get near it.
const SERVING_BASE: u64 = 1 << 63;

/// How long a client keeps its chosen server before choosing again, so that the load of
/// many clients spreads over servers that joined later (plus up to as much again, at random).
const REBALANCE: Duration = Duration::from_secs(120);

/// How long a server that could not be reached is passed over when choosing one, unless
/// no other is left: about as long as gossip takes to see a dead server fail.
const SET_ASIDE: Duration = Duration::from_secs(10);

/// Time a call may take beyond what the server itself may spend (its hold for a leader,
/// a blocking read's wait): the network and a forward to the leader.
const CALL_SLACK: Duration = Duration::from_secs(2);

/// What a call over the agent's `limits.rpc_rate` answers (Consul's text, with a 429).
const RATE_EXCEEDED: &str = "RPC rate limit exceeded";

/// Who waits for a call's answer.
#[derive(Debug)]
pub(super) enum CallWaiter {
    /// An API request on this agent.
    Request(ReqId),
    /// A DNS question on this agent: a failure is a SERVFAIL, not a text.
    Dns(ReqId),
    /// Raft work (a client agent's sync).
    Work(Option<Waiter>),
    /// The catalog's view of this node, which a client's full sync waits for.
    NodeView,
}

#[derive(Debug)]
struct Outgoing {
    to: String,
    /// The datacenter asked; `None` is this agent's own.
    dc: Option<String>,
    waiter: CallWaiter,
    deadline: Time,
    /// Servers this call was handed to that could not be reached.
    tried: Vec<String>,
}

#[derive(Debug)]
pub(super) struct Remote {
    calls: BTreeMap<u64, Outgoing>,
    /// Calls this server is serving: the request id each runs under → (caller, its context).
    serving: BTreeMap<ReqId, (String, u64)>,
    next_serving: u64,
    /// The server a client agent sends its calls to, while it answers.
    preferred: Option<String>,
    rebalance_at: Time,
    /// Servers that could not be reached, passed over until the time given.
    set_aside: BTreeMap<String, Time>,
    rng: Rng,
    /// `limits.rpc_rate` and `rpc_max_burst`, when a rate is set.
    limiter: Option<TokenBucket>,
}

/// A token bucket: `rate` tokens a second, holding at most `burst`; a call takes one.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Time,
}

impl TokenBucket {
    fn take(&mut self, now: Time) -> bool {
        let refill = now.since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

impl Remote {
    pub(super) fn new(rng: Rng, rate: Option<f64>, burst: u64) -> Remote {
        let limiter = rate.filter(|r| r.is_finite() && *r >= 0.0).map(|rate| {
            let burst = burst.max(1) as f64;
            TokenBucket { rate, burst, tokens: burst, at: Time::ZERO }
        });
        Remote {
            limiter,
            calls: BTreeMap::new(),
            serving: BTreeMap::new(),
            next_serving: SERVING_BASE,
            preferred: None,
            rebalance_at: Time::ZERO,
            set_aside: BTreeMap::new(),
            rng,
        }
    }

    pub(super) fn next_deadline(&self) -> Option<Time> {
        self.calls.values().map(|c| c.deadline).min()
    }
}

impl Node {
    /// Sends `call` to a server of `dc` (`None`: this datacenter, which a client agent asks).
    pub(super) fn call(
        &mut self,
        dc: Option<String>,
        call: Call,
        waiter: CallWaiter,
        deadline: Time,
        out: &mut Vec<Effect>,
    ) {
        let now = self.now;
        if self.remote.limiter.as_mut().is_some_and(|l| !l.take(now)) {
            return self.call_failed(waiter, 429, RATE_EXCEEDED.into(), out);
        }
        let Some(to) = self.pick_server(dc.as_deref(), &[]) else {
            let reason = match dc.as_deref() {
                None => "No known Consul servers".to_string(),
                Some(d) if self.membership.as_ref().is_some_and(|m| m.knows_datacenter(d)) => {
                    format!("rpc error: no server of datacenter \"{d}\" is reachable")
                }
                Some(_) => "No path to datacenter".to_string(),
            };
            return self.call_failed(waiter, 500, reason, out);
        };
        let ctx = self.cluster.ctx();
        out.push(Effect::Send { to: to.clone(), msg: PeerMessage::Call { ctx, call } });
        self.remote.calls.insert(ctx, Outgoing { to, dc, waiter, deadline, tried: vec![] });
    }

    /// Passes a request to a server: this datacenter's (from a client agent), or another's.
    pub(super) fn call_request(
        &mut self,
        id: ReqId,
        dc: Option<String>,
        req: ApiRequest,
        out: &mut Vec<Effect>,
    ) {
        let deadline = self.call_deadline(&req);
        // A request for another datacenter travels as the request and that datacenter's name.
        let (mut wire_dc, mut req) = (None, req);
        while let ApiRequest::InDatacenter { dc, req: inner } = req {
            wire_dc = wire_dc.or(Some(dc));
            req = *inner;
        }
        let waiter =
            if matches!(req, ApiRequest::Dns(_)) { CallWaiter::Dns(id) } else { CallWaiter::Request(id) };
        self.call(dc, Call::Api { dc: wire_dc, req }, waiter, deadline, out);
    }

    /// How long a request may take at a server: a blocking read's wait (with the jitter
    /// the server adds), or the server's hold for a leader.
    fn call_deadline(&self, req: &ApiRequest) -> Time {
        let inner = match req {
            ApiRequest::InDatacenter { req, .. } => req,
            other => other,
        };
        let blocking = crate::server::query_opts(inner).filter(|q| q.min_index.0 > 0).map(|q| {
            let wait = q.wait.filter(|w| !w.is_zero()).unwrap_or(self.cfg.default_query_time);
            let wait = wait.min(self.cfg.max_query_time);
            wait + wait / 16
        });
        self.now + blocking.unwrap_or(Duration::ZERO) + self.cfg.rpc_hold_timeout + CALL_SLACK
    }

    /// Alive servers of `dc` (`None`: this one), by server address.
    fn servers_of(&self, dc: Option<&str>) -> Vec<String> {
        match (&self.membership, dc) {
            (Some(m), dc) => m.alive_servers(dc, &self.cfg.node),
            // Without gossip (the simulator's worlds) the configured servers are the pool.
            (None, None) => self.cfg.retry_join.clone(),
            (None, Some(_)) => vec![],
        }
    }

    /// Whether a client agent knows any server to send to.
    pub(super) fn knows_servers(&self) -> bool {
        !self.servers_of(None).is_empty()
    }

    /// How many alive servers of its datacenter this agent knows (`info`'s `known_servers`).
    pub(super) fn known_servers(&self) -> usize {
        self.servers_of(None).len() + usize::from(self.cfg.server)
    }

    /// A server to call: a client keeps the one it has while it is alive; otherwise one at
    /// random, never one of `exclude` (those this call could not reach) and, while others
    /// are left, none that was set aside.
    fn pick_server(&mut self, dc: Option<&str>, exclude: &[String]) -> Option<String> {
        let now = self.now;
        self.remote.set_aside.retain(|_, until| *until > now);
        let mut servers = self.servers_of(dc);
        servers.retain(|s| !exclude.contains(s));
        if servers.iter().any(|s| !self.remote.set_aside.contains_key(s)) {
            servers.retain(|s| !self.remote.set_aside.contains_key(s));
        }
        if dc.is_none() {
            if let Some(p) = self.remote.preferred.as_ref().filter(|p| servers.contains(p)) {
                return Some(p.clone());
            }
        }
        if servers.is_empty() {
            return None;
        }
        let chosen = servers.swap_remove(self.remote.rng.below(servers.len() as u64) as usize);
        if dc.is_none() {
            self.remote.preferred = Some(chosen.clone());
        }
        Some(chosen)
    }

    /// Answers a call's waiter with a failure: an API request with `status` (500, or 429
    /// from the rate limiter) and `reason`.
    fn call_failed(&mut self, waiter: CallWaiter, status: u16, reason: String, out: &mut Vec<Effect>) {
        match waiter {
            CallWaiter::Request(id) => {
                out.push(Effect::Respond { id, resp: ApiResponse::error(status, reason) })
            }
            CallWaiter::Dns(id) => {
                let answer = DnsResponse {
                    rcode: Rcode::ServFail,
                    answers: vec![],
                    authority: vec![],
                    additional: vec![],
                };
                out.push(Effect::Respond {
                    id,
                    resp: ApiResponse { status: 200, meta: None, body: Body::Dns(answer) },
                })
            }
            CallWaiter::Work(Some(w)) => self.reply(w, Err(reason), out),
            CallWaiter::Work(None) => {}
            CallWaiter::NodeView => self.view_failed(),
        }
    }

    /// A call that never reached its server: it goes to another server, until none is left.
    pub(super) fn call_undelivered(&mut self, to: &str, ctx: u64, call: Call, out: &mut Vec<Effect>) {
        let Some(mut o) = self.remote.calls.remove(&ctx) else { return };
        self.server_unreachable(to, o.dc.is_none());
        o.tried.push(to.to_string());
        let Some(next) = self.pick_server(o.dc.as_deref(), &o.tried) else {
            let reason = format!("rpc error: failed to reach a server (last tried {to})");
            return self.call_failed(o.waiter, 500, reason, out);
        };
        o.to = next.clone();
        out.push(Effect::Send { to: next, msg: PeerMessage::Call { ctx, call } });
        self.remote.calls.insert(ctx, o);
    }

    fn server_unreachable(&mut self, server: &str, own_dc: bool) {
        self.remote.set_aside.insert(server.to_string(), self.now + SET_ASIDE);
        if own_dc && self.remote.preferred.as_deref() == Some(server) {
            self.remote.preferred = None;
        }
    }

    pub(super) fn on_answer(&mut self, from: &str, ctx: u64, answer: Answer, out: &mut Vec<Effect>) {
        if self.remote.calls.get(&ctx).is_none_or(|o| o.to != from) {
            return;
        }
        let Some(o) = self.remote.calls.remove(&ctx) else { return };
        match (o.waiter, answer) {
            (CallWaiter::Request(id) | CallWaiter::Dns(id), Answer::Api(w)) => {
                out.push(Effect::Respond { id, resp: w.into() })
            }
            (CallWaiter::Work(w), Answer::Work(result)) => {
                if let Some(w) = w {
                    self.reply(w, result, out);
                }
            }
            (CallWaiter::NodeView, Answer::NodeView(view)) => self.node_view(*view, out),
            (waiter, _) => self.call_failed(
                waiter,
                500,
                "rpc error: the server answered another kind of call".into(),
                out,
            ),
        }
    }

    /// Calls past their deadline, calls to servers gossip has seen fail (whatever they
    /// carried may or may not have been done, so they fail rather than retry), and a
    /// client's periodic rebalance.
    pub(super) fn poll_remote(&mut self, now: Time, out: &mut Vec<Effect>) {
        if !self.cfg.server && now >= self.remote.rebalance_at {
            let jitter = self.remote.rng.below(REBALANCE.as_nanos() as u64);
            self.remote.rebalance_at = now + REBALANCE + Duration::from_nanos(jitter);
            self.remote.preferred = None;
        }
        if self.remote.calls.is_empty() {
            return;
        }
        let own = (!self.cfg.server).then(|| self.servers_of(None));
        let doomed: Vec<(u64, String)> = self
            .remote
            .calls
            .iter()
            .filter_map(|(ctx, o)| {
                if o.deadline <= now {
                    return Some((*ctx, format!("rpc error: timed out waiting for an answer from {}", o.to)));
                }
                let gone = o.dc.is_none() && own.as_ref().is_some_and(|s| !s.contains(&o.to));
                gone.then(|| {
                    (*ctx, format!("rpc error: server {} failed while the call was in flight", o.to))
                })
            })
            .collect();
        for (ctx, reason) in doomed {
            if let Some(o) = self.remote.calls.remove(&ctx) {
                self.server_unreachable(&o.to, o.dc.is_none());
                self.call_failed(o.waiter, 500, reason, out);
            }
        }
    }

    /// A call from a client agent or another datacenter's server.
    pub(super) fn on_call(&mut self, from: String, ctx: u64, call: Call, out: &mut Vec<Effect>) {
        if !self.cfg.server {
            let resp = ApiResponse::error(500, "this agent is not a server");
            let answer = match call {
                Call::Work(_) => Answer::Work(Err("this agent is not a server".into())),
                _ => Answer::Api(resp.into()),
            };
            return out.push(Effect::Send { to: from, msg: PeerMessage::Answer { ctx, answer } });
        }
        if let Err(reason) = callable(&call) {
            let answer = match call {
                Call::Work(_) => Answer::Work(Err(reason.into())),
                _ => Answer::Api(ApiResponse::error(403, reason).into()),
            };
            return out.push(Effect::Send { to: from, msg: PeerMessage::Answer { ctx, answer } });
        }
        match call {
            Call::Api { dc, req } => {
                let id = ReqId(self.remote.next_serving);
                self.remote.next_serving += 1;
                self.remote.serving.insert(id, (from, ctx));
                let req = match dc {
                    Some(dc) => ApiRequest::InDatacenter { dc, req: Box::new(req) },
                    None => req,
                };
                self.request(self.now, id, req, out);
            }
            Call::Work(work) => self.submit(work, Some(Waiter::Call { to: from, ctx }), out),
            Call::NodeView(node) => {
                let answer = Answer::NodeView(Box::new(self.state.catalog.node_slice(&node)));
                out.push(Effect::Send { to: from, msg: PeerMessage::Answer { ctx, answer } });
            }
        }
    }

    /// Turns responses to served calls (among the effects from `start` on) into answers.
    pub(super) fn answer_served(&mut self, start: usize, out: &mut [Effect]) {
        if self.remote.serving.is_empty() {
            return;
        }
        for e in out[start..].iter_mut() {
            let Effect::Respond { id, resp } = e else { continue };
            let Some((to, ctx)) = self.remote.serving.remove(id) else { continue };
            let answer = Answer::Api(std::mem::replace(resp, ApiResponse::empty()).into());
            *e = Effect::Send { to, msg: PeerMessage::Answer { ctx, answer } };
        }
    }

    /// A client's full sync: ask a server for the catalog's view of this node first.
    pub(super) fn fetch_view(&mut self, out: &mut Vec<Effect>) {
        self.syncing = true;
        let deadline = self.now + self.cfg.rpc_hold_timeout + CALL_SLACK;
        self.call(None, Call::NodeView(self.cfg.node.name.clone()), CallWaiter::NodeView, deadline, out);
    }

    fn node_view(&mut self, view: Catalog, out: &mut Vec<Effect>) {
        self.state.catalog = view;
        self.syncing = false;
        self.push_sync(self.now, true, out);
    }

    fn view_failed(&mut self) {
        self.syncing = false;
        self.next_full_sync = self.now + super::SYNC_RETRY;
    }

    /// A client's copy of its node's catalog entry follows what it sends, so the next
    /// partial sync does not send the node again; a write that fails is repaired by the
    /// full sync it prompts.
    pub(super) fn note_sent(&mut self, cmds: &[Command]) {
        let index = self.state.catalog.table_index();
        for c in cmds {
            match c {
                Command::Register(r) => {
                    let _ = self.state.catalog.register(index, r);
                }
                Command::Deregister(d) => self.state.catalog.deregister(index, d),
                _ => {}
            }
        }
    }
}

/// What a server carries out for someone else: requests a server answers (never the
/// agent's own endpoints: another agent must not make this one leave or reload), and
/// catalog work an agent's anti-entropy sends (never Raft membership or KV, which have
/// their own checked paths).
fn callable(call: &Call) -> Result<(), &'static str> {
    match call {
        Call::Api { req, .. } if !req.needs_server() => Err("only server requests may be called"),
        Call::Work(Work::Commands(cmds))
            if !cmds.iter().all(|c| {
                matches!(c, Command::Register(_) | Command::Deregister(_) | Command::Coordinates(_))
            }) =>
        {
            Err("only catalog work may be called")
        }
        Call::Work(Work::AddPeer(_) | Work::RemovePeer(_)) => Err("only catalog work may be called"),
        _ => Ok(()),
    }
}
