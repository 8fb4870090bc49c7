//! The agent's side of gossip: its LAN pool (and, on servers, the WAN pool), joins and
//! retries, leave and force-leave, user events, server discovery, and — on the leader —
//! reconciling the catalog with who is alive (`serfHealth`).
//!
//! Owns turning gossip effects into agent behaviour and bytes on the wire (through the
//! codec, so encryption and garbage handling live at one edge). Never runs SWIM itself
//! (`gossip` does) and never writes the catalog except through Raft like any other write.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::{Effect, Node, Reply, SERF_HEALTH};
use crate::api::shapes::KeyringPool;
use crate::api::shapes::{Member as MemberJson, UserEvent};
use crate::api::{ApiResponse, KeyringOp, QueryMeta, QueryOpts};
use crate::fsm::catalog::{Deregistration, Health, HealthCheck, Registration};
use crate::fsm::Command;
use crate::gossip::keyring::{GossipKey, Keyring};
use crate::gossip::wire::{Codec, Frame};
use crate::gossip::{Change, Gossip, GossipConfig, GossipEffect, GossipInput, Identity, MemberStatus, Tags};
use crate::ids::{Index, ReqId};
use crate::io::{Event, Pool};
use crate::rng::{Rng, Stream};
use crate::rpc::Work;
use crate::time::{Duration, Time};
use serde::{Deserialize, Serialize};

/// The query every member answers with its keyring (after applying the operation).
const KEYRING_QUERY: &str = "_muster-keyring";

/// How many received user events `/v1/event/list` keeps.
const EVENT_RING: usize = 256;

/// How often the leader compares the whole member list with the catalog, beyond reacting
/// to each change (Consul: 60 s).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(60);

/// How soon a reconcile that could not be written is tried again.
const RECONCILE_RETRY: Duration = Duration::from_secs(1);

/// What the agent's gossip needs from its configuration.
#[derive(Clone, Debug)]
pub struct GossipSetup {
    pub lan: GossipConfig,
    pub wan: GossipConfig,
    pub codec: Codec,
    /// `-join`/`-retry-join`: LAN gossip addresses, `host:port`.
    pub join: Vec<String>,
    /// `-retry-join-wan` (servers only).
    pub join_wan: Vec<String>,
    pub retry_interval: Duration,
    pub retry_interval_wan: Duration,
}

/// A user event as it travels inside a gossip user message (whose name is the event's).
#[derive(Serialize, Deserialize)]
struct EventBody {
    id: String,
    payload: Vec<u8>,
    node_filter: String,
    service_filter: String,
    tag_filter: String,
}

/// A member's answer to a keyring query: its keys after the operation, or why it failed.
#[derive(Serialize, Deserialize)]
struct KeyringAnswer {
    keys: Vec<String>,
    primary: String,
    error: Option<String>,
    /// Whether the operation changed this member's keyring (not sent: a local fact).
    #[serde(skip)]
    changed: bool,
}

impl EventBody {
    fn into_event(self, name: String, ltime: u64) -> UserEvent {
        UserEvent {
            id: self.id,
            name,
            payload: self.payload,
            node_filter: self.node_filter,
            service_filter: self.service_filter,
            tag_filter: self.tag_filter,
            version: 1,
            ltime,
        }
    }
}

#[derive(Debug)]
enum Joiner {
    Request(ReqId),
    Retry(Pool),
    /// A WAN join a LAN server's arrival prompted; its outcome only matters to logs.
    Flood,
}

/// A pool still to be joined: where to, how often, and when next.
#[derive(Debug)]
struct RetryJoin {
    addrs: Vec<Arc<str>>,
    every: Duration,
    next: Time,
}

#[derive(Debug)]
struct EventWaiter {
    id: ReqId,
    name: Option<String>,
    hash: u64,
    deadline: Time,
}

#[derive(Debug)]
pub(super) struct Membership {
    lan: Gossip,
    wan: Option<Gossip>,
    codec: Codec,
    nonces: Rng,
    ids: Rng,
    /// `-retry-join` per pool, until a join succeeds.
    retry: BTreeMap<Pool, RetryJoin>,
    next_token: u64,
    joins: BTreeMap<u64, Joiner>,
    leaving: Vec<ReqId>,
    events: VecDeque<UserEvent>,
    event_waiters: Vec<EventWaiter>,
    /// Gossip messages refused per pool (garbage, wrong transport, wrong key).
    dropped: BTreeMap<Pool, u64>,
    /// Keyring requests waiting for their query's answers: token → (request, operation).
    keyring: BTreeMap<u64, (ReqId, KeyringOp)>,
    /// Alive LAN members of this datacenter that are servers (this one aside): name →
    /// server RPC address. Kept as members change, since clients consult it per request.
    pub(super) servers: BTreeMap<String, String>,
    dirty: bool,
    reconciling: bool,
    next_reconcile: Time,
}

impl Membership {
    pub(super) fn new(
        setup: GossipSetup,
        lan_me: Identity,
        wan_me: Option<Identity>,
        seed: [u8; 32],
    ) -> Membership {
        let mut wan_seed = seed;
        wan_seed[31] ^= 0x5a;
        let join_wan = if wan_me.is_some() { setup.join_wan } else { vec![] };
        // The same -retry-join list is often given to every server, this one included:
        // joining itself is nothing to retry, and a list of only itself means there is
        // nobody to join yet (others will join it).
        let own = |addrs: Vec<String>, me: Option<&Identity>| -> Vec<String> {
            addrs.into_iter().filter(|a| me.is_none_or(|me| **a != *me.addr)).collect()
        };
        let (join_lan, join_wan) = (own(setup.join, Some(&lan_me)), own(join_wan, wan_me.as_ref()));
        let retry =
            [(Pool::Lan, join_lan, setup.retry_interval), (Pool::Wan, join_wan, setup.retry_interval_wan)]
                .into_iter()
                .filter(|(_, addrs, _)| !addrs.is_empty())
                .map(|(pool, addrs, every)| {
                    (
                        pool,
                        RetryJoin {
                            addrs: addrs.into_iter().map(Arc::from).collect(),
                            every,
                            next: Time::ZERO,
                        },
                    )
                })
                .collect();
        Membership {
            lan: Gossip::new(setup.lan, lan_me, Rng::new(seed, Stream::Gossip)),
            wan: wan_me.map(|me| Gossip::new(setup.wan, me, Rng::new(wan_seed, Stream::Gossip))),
            codec: setup.codec,
            nonces: Rng::new(seed, Stream::Nonces),
            ids: Rng::new(seed, Stream::Events),
            retry,
            next_token: 0,
            joins: BTreeMap::new(),
            leaving: Vec::new(),
            events: VecDeque::new(),
            event_waiters: Vec::new(),
            keyring: BTreeMap::new(),
            dropped: BTreeMap::new(),
            servers: BTreeMap::new(),
            dirty: true,
            reconciling: false,
            next_reconcile: Time::ZERO,
        }
    }

    fn pool(&mut self, pool: Pool) -> Option<&mut Gossip> {
        match pool {
            Pool::Lan => Some(&mut self.lan),
            Pool::Wan => self.wan.as_mut(),
        }
    }

    pub(super) fn next_deadline(&self) -> Time {
        let mut t = self.lan.next_deadline();
        if let Some(w) = &self.wan {
            t = t.min(w.next_deadline());
        }
        let rest =
            [self.retry.values().map(|r| r.next).min(), self.event_waiters.iter().map(|w| w.deadline).min()];
        rest.into_iter().flatten().fold(t, Time::min)
    }

    /// When the leader next compares the member list with the catalog.
    pub(super) fn next_reconcile(&self) -> Time {
        self.next_reconcile
    }

    /// Server addresses of the members gossip believes alive that serve `dc` (`None`: this
    /// agent's own datacenter, kept as members change; another from the WAN pool), never
    /// `me`.
    pub(super) fn alive_servers(&self, dc: Option<&str>, me: &super::NodeInfo) -> Vec<String> {
        let Some(dc) = dc else { return self.servers.values().cloned().collect() };
        let Some(pool) = self.wan.as_ref() else { return vec![] };
        pool.members()
            .filter(|x| !x.down() && *x.id.name != *me.name)
            .filter_map(|x| server_rpc(&x.id, dc))
            .collect()
    }

    /// One pool's gossip, read-only.
    pub(super) fn gossip(&self, pool: Pool) -> Option<&Gossip> {
        match pool {
            Pool::Lan => Some(&self.lan),
            Pool::Wan => self.wan.as_ref(),
        }
    }

    /// How many members the LAN pool holds that are not down.
    pub(super) fn lan_size(&self) -> usize {
        self.lan.members().filter(|x| !x.down()).count()
    }

    /// Whether any member of the WAN pool, alive or not, belongs to `dc`.
    pub(super) fn knows_datacenter(&self, dc: &str) -> bool {
        self.wan.as_ref().is_some_and(|w| w.members().any(|x| x.id.tags.get("dc").is_some_and(|d| d == dc)))
    }

    /// This server just became leader: whatever it reconciled in an earlier term may have
    /// been undone by the leaders between (a `serfHealth` they turned critical while it was
    /// away), so it compares the whole member list at once.
    pub(super) fn leadership_gained(&mut self) {
        self.dirty = true;
    }

    /// A reconcile's writes landed (or failed: then try again shortly, not at once, since
    /// a leader change or a membership change in progress is the usual reason).
    pub(super) fn reconciled(&mut self, now: Time, ok: bool) {
        self.reconciling = false;
        if !ok {
            self.next_reconcile = self.next_reconcile.min(now + RECONCILE_RETRY);
        }
    }

    /// A Raft membership change from the reconcile finished: look again soon, whether for
    /// the next change or to retry this one.
    pub(super) fn reconciled_peer(&mut self, now: Time) {
        self.next_reconcile = self.next_reconcile.min(now + RECONCILE_RETRY);
    }

    fn encode(&mut self, frame: &Frame) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        nonce[..8].copy_from_slice(&self.nonces.next_u64().to_le_bytes());
        nonce[8..].copy_from_slice(&(self.nonces.next_u64() as u32).to_le_bytes());
        self.codec.encode(frame, nonce)
    }
}

/// Consul's event index: the two halves of the newest event's UUID, XORed (1 if none).
fn events_hash(events: &VecDeque<UserEvent>) -> u64 {
    let Some(last) = events.back() else { return 1 };
    let hex: String = last.id.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    let half = |s: &str| u64::from_str_radix(s, 16).unwrap_or(0);
    if hex.len() != 32 {
        return 1;
    }
    (half(&hex[..16]) ^ half(&hex[16..])).max(1)
}

/// `host:port`, with an IPv6 host in brackets.
fn host_port(host: &str, port: impl std::fmt::Display) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// The server (RPC) address of a member that is a server of datacenter `dc`: its gossip
/// host and the port its `port` tag names.
fn server_rpc(id: &Identity, dc: &str) -> Option<String> {
    let server =
        id.tags.get("role").is_some_and(|r| r == "consul") && id.tags.get("dc").is_some_and(|d| d == dc);
    let port = id.tags.get("port").filter(|_| server)?;
    Some(host_port(&split_addr(&id.addr).0, port))
}

/// Splits `host:port` (the form gossip addresses take).
fn split_addr(addr: &str) -> (String, u16) {
    match addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_matches(['[', ']']).to_string(), p.parse().unwrap_or(0)),
        None => (addr.to_string(), 0),
    }
}

impl Node {
    /// Feeds one gossip input to a pool and carries out what it asks.
    fn gossip_input(&mut self, pool: Pool, input: GossipInput, out: &mut Vec<Effect>) -> Result<(), String> {
        let now = self.now;
        let Some(m) = self.membership.as_mut() else { return Err("gossip is not enabled".into()) };
        let Some(g) = m.pool(pool) else { return Err("this agent is not in the WAN pool".into()) };
        let mut effects = Vec::new();
        let result = g.handle(now, input, &mut effects).map_err(|e| e.to_string());
        for e in effects {
            self.gossip_effect(pool, e, out);
        }
        result
    }

    pub(super) fn on_gossip(
        &mut self,
        pool: Pool,
        from: String,
        bytes: &[u8],
        stream: bool,
        out: &mut Vec<Effect>,
    ) {
        let Some(m) = self.membership.as_ref() else { return };
        let input = match (m.codec.decode(bytes), stream) {
            (Ok(Frame::Packet(packet)), false) => {
                Ok(GossipInput::Packet { from: from.clone().into(), packet })
            }
            (Ok(Frame::PushPull(msg)), true) => Ok(GossipInput::Stream { msg }),
            (Ok(_), _) => Err("a frame on the wrong transport".to_string()),
            (Err(e), _) => Err(e.to_string()),
        };
        let input = match input {
            Ok(input) => input,
            Err(reason) => {
                if let Some(m) = self.membership.as_mut() {
                    *m.dropped.entry(pool).or_insert(0) += 1;
                }
                return out.push(Effect::Emit(Event::GossipDropped { pool, from, reason }));
            }
        };
        let _ = self.gossip_input(pool, input, out);
    }

    pub(super) fn on_gossip_unreachable(
        &mut self,
        pool: Pool,
        to: String,
        tag: Option<u64>,
        out: &mut Vec<Effect>,
    ) {
        let _ = self.gossip_input(pool, GossipInput::StreamFailed { to: to.into(), join: tag }, out);
    }

    fn gossip_effect(&mut self, pool: Pool, e: GossipEffect, out: &mut Vec<Effect>) {
        let Some(m) = self.membership.as_mut() else { return };
        match e {
            GossipEffect::SendPacket { to, packet } => {
                let bytes = m.encode(&Frame::Packet(packet));
                out.push(Effect::Gossip { pool, to: to.to_string(), bytes, stream: false, tag: None });
            }
            GossipEffect::SendStream { to, msg } => {
                let tag = msg.join;
                let bytes = m.encode(&Frame::PushPull(msg));
                out.push(Effect::Gossip { pool, to: to.to_string(), bytes, stream: true, tag });
            }
            GossipEffect::Member { change, member } => {
                if pool == Pool::Lan {
                    m.dirty = true;
                    let rpc = server_rpc(&member, &self.cfg.node.datacenter);
                    if let Some(rpc) = rpc.filter(|_| member.name.as_ref() != self.cfg.node.name) {
                        match change {
                            Change::Joined | Change::Updated => {
                                m.servers.insert(member.name.to_string(), rpc);
                                self.flood_wan(&member, out);
                            }
                            // A failed server that recovers comes back as `Joined`.
                            Change::Left | Change::Reaped | Change::Failed => {
                                m.servers.remove(member.name.as_ref());
                            }
                        }
                    }
                }
                let name = member.name.to_string();
                out.push(Effect::Emit(Event::Member { pool, name, change }));
            }
            GossipEffect::UserEvent { ltime, name, payload } => {
                if pool == Pool::Lan {
                    self.on_user_event(ltime.0, name, &payload, out);
                }
            }
            GossipEffect::Joined { token, result } => match m.joins.remove(&token) {
                Some(Joiner::Request(id)) => out.push(Effect::Respond {
                    id,
                    resp: match result {
                        Ok(_) => ApiResponse::empty(),
                        Err(e) => ApiResponse::error(500, e),
                    },
                }),
                Some(Joiner::Retry(p)) => match result {
                    Ok(n) => {
                        tracing::info!(pool = ?p, contacted = n, "joined the gossip pool");
                        m.retry.remove(&p);
                    }
                    Err(e) => tracing::warn!(pool = ?p, error = %e, "join failed; retrying"),
                },
                Some(Joiner::Flood) => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "WAN join of a LAN server failed");
                    }
                }
                None => {}
            },
            GossipEffect::Query { ltime, id, name, payload, reply_to } => {
                if name == KEYRING_QUERY {
                    let answer = keyring_apply(&mut m.codec.keyring, &payload);
                    if answer.error.is_none() && answer.changed {
                        out.push(Effect::SaveKeyring { keys: answer.keys.clone() });
                    }
                    let payload = postcard::to_allocvec(&answer).expect("answers serialize");
                    let _ =
                        self.gossip_input(pool, GossipInput::Answer { ltime, id, reply_to, payload }, out);
                }
            }
            GossipEffect::Answers { token, answers } => {
                if let Some((id, op)) = m.keyring.remove(&token) {
                    let resp = self.keyring_response(pool, op, answers);
                    out.push(Effect::Respond { id, resp });
                }
            }
            GossipEffect::Left => {
                if pool == Pool::Lan {
                    for id in std::mem::take(&mut m.leaving) {
                        out.push(Effect::Respond { id, resp: ApiResponse::empty() });
                    }
                    out.push(Effect::Exit);
                }
            }
        }
    }

    /// A server of this datacenter appeared in the LAN pool: servers also meet in the WAN
    /// pool, so join it there unless it is already a WAN member (Consul's flood join).
    fn flood_wan(&mut self, server: &Identity, out: &mut Vec<Effect>) {
        let Some(m) = self.membership.as_mut() else { return };
        let Some(wan) = m.wan.as_ref() else { return };
        let wan_name = format!("{}.{}", server.name, self.cfg.node.datacenter);
        let Some(port) = server.tags.get("wan_join_port") else { return };
        if wan.member(&wan_name).is_some() {
            return;
        }
        let addr = host_port(&split_addr(&server.addr).0, port);
        m.next_token += 1;
        let token = m.next_token;
        m.joins.insert(token, Joiner::Flood);
        let _ = self.gossip_input(Pool::Wan, GossipInput::Join { token, addrs: vec![addr.into()] }, out);
    }

    /// Starts joins due for `-retry-join`, runs gossip timers, times out event waiters and,
    /// on the leader, reconciles the catalog with the member list.
    pub(super) fn poll_membership(&mut self, now: Time, out: &mut Vec<Effect>) {
        let Some(m) = self.membership.as_ref() else { return };
        let due: Vec<Pool> = m.retry.iter().filter(|(_, r)| r.next <= now).map(|(p, _)| *p).collect();
        for pool in due {
            let Some(m) = self.membership.as_mut() else { return };
            let Some(r) = m.retry.get_mut(&pool) else { continue };
            r.next = now + r.every;
            let addrs = r.addrs.clone();
            m.next_token += 1;
            let token = m.next_token;
            m.joins.insert(token, Joiner::Retry(pool));
            let _ = self.gossip_input(pool, GossipInput::Join { token, addrs }, out);
        }
        for pool in [Pool::Lan, Pool::Wan] {
            let Some(m) = self.membership.as_mut() else { return };
            if m.pool(pool).is_some_and(|g| g.next_deadline() <= now) {
                let _ = self.gossip_input(pool, GossipInput::Tick, out);
            }
        }
        let Some(m) = self.membership.as_mut() else { return };
        let (expired, waiting): (Vec<EventWaiter>, Vec<EventWaiter>) =
            std::mem::take(&mut m.event_waiters).into_iter().partition(|w| w.deadline <= now);
        m.event_waiters = waiting;
        for w in expired {
            let resp = self.event_list(w.name.as_deref());
            out.push(Effect::Respond { id: w.id, resp });
        }
        self.reconcile_members(now, out);
    }

    // ---- API ----

    pub(super) fn members_json(&self, wan: bool) -> Result<Vec<MemberJson>, String> {
        let Some(m) = self.membership.as_ref() else { return Ok(vec![self.member()]) };
        let g =
            if wan { m.wan.as_ref().ok_or("this agent is not a member of the WAN pool")? } else { &m.lan };
        Ok(g.members()
            .map(|mem| {
                let (addr, port) = split_addr(&mem.id.addr);
                MemberJson {
                    name: mem.id.name.to_string(),
                    addr,
                    port,
                    tags: mem.id.tags.clone(),
                    status: mem.status() as u8,
                    ..self.member()
                }
            })
            .collect())
    }

    /// The LAN pool as this agent sees it (name, status): a read-only view for checkers.
    pub fn lan_members(&self) -> Vec<(String, MemberStatus)> {
        let Some(m) = self.membership.as_ref() else { return vec![] };
        m.lan.members().map(|x| (x.id.name.to_string(), x.status())).collect()
    }

    /// A pool's `Stats` section of `/v1/agent/self` (serf's names, plus `dropped`: packets
    /// and streams refused as garbage or sealed with a key this agent lacks). Without gossip
    /// the LAN section shows this agent alone.
    pub(super) fn pool_stats(&self, pool: Pool) -> Option<BTreeMap<String, String>> {
        let Some(m) = self.membership.as_ref() else {
            let alone = [("members", "1"), ("failed", "0"), ("left", "0")];
            return (pool == Pool::Lan)
                .then(|| alone.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect());
        };
        let g = match pool {
            Pool::Lan => &m.lan,
            Pool::Wan => m.wan.as_ref()?,
        };
        let count = |s: &[MemberStatus]| g.members().filter(|x| s.contains(&x.status())).count();
        let stats = [
            ("members", count(&[MemberStatus::Alive, MemberStatus::Leaving])),
            ("failed", count(&[MemberStatus::Failed])),
            ("left", count(&[MemberStatus::Left])),
            ("health_score", g.health_score() as usize),
            ("member_time", g.member_clock().0 as usize),
            ("event_time", g.event_clock().0 as usize),
            ("intent_queue", 0),
            ("event_queue", g.pending_broadcasts()),
            ("dropped", m.dropped.get(&pool).copied().unwrap_or(0) as usize),
        ];
        let mut map: BTreeMap<String, String> =
            stats.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        map.insert("encrypted".into(), m.codec.keyring.is_some().to_string());
        Some(map)
    }

    pub(super) fn api_join(&mut self, id: ReqId, addr: String, wan: bool, out: &mut Vec<Effect>) {
        let pool = if wan { Pool::Wan } else { Pool::Lan };
        let Some(m) = self.membership.as_mut() else {
            return out.push(Effect::Respond { id, resp: ApiResponse::error(500, "gossip is not enabled") });
        };
        m.next_token += 1;
        let token = m.next_token;
        m.joins.insert(token, Joiner::Request(id));
        if let Err(e) = self.gossip_input(pool, GossipInput::Join { token, addrs: vec![addr.into()] }, out) {
            if let Some(m) = self.membership.as_mut() {
                m.joins.remove(&token);
            }
            out.push(Effect::Respond { id, resp: ApiResponse::error(500, e) });
        }
    }

    pub(super) fn api_leave(&mut self, id: ReqId, out: &mut Vec<Effect>) {
        let Some(m) = self.membership.as_mut() else {
            out.push(Effect::Respond { id, resp: ApiResponse::empty() });
            return out.push(Effect::Exit);
        };
        m.leaving.push(id);
        if m.wan.is_some() {
            let _ = self.gossip_input(Pool::Wan, GossipInput::Leave, out);
        }
        let _ = self.gossip_input(Pool::Lan, GossipInput::Leave, out);
    }

    pub(super) fn api_force_leave(
        &mut self,
        id: ReqId,
        node: String,
        prune: bool,
        wan: bool,
        out: &mut Vec<Effect>,
    ) {
        let pool = if wan { Pool::Wan } else { Pool::Lan };
        let resp = match self.gossip_input(pool, GossipInput::ForceLeave { node, prune }, out) {
            Ok(()) => ApiResponse::empty(),
            Err(e) => ApiResponse::error(500, e),
        };
        out.push(Effect::Respond { id, resp });
    }

    pub(super) fn api_fire(
        &mut self,
        id: ReqId,
        name: String,
        body: (Vec<u8>, String, String, String),
        out: &mut Vec<Effect>,
    ) {
        let (payload, node_filter, service_filter, tag_filter) = body;
        let Some(m) = self.membership.as_mut() else {
            return out.push(Effect::Respond { id, resp: ApiResponse::error(500, "gossip is not enabled") });
        };
        let body = EventBody { id: m.ids.uuid(), payload, node_filter, service_filter, tag_filter };
        let payload = postcard::to_allocvec(&body).expect("event bodies serialize");
        let input = GossipInput::UserEvent { name: name.clone(), payload };
        let resp = match self.gossip_input(Pool::Lan, input, out) {
            // The answer carries LTime 0, as Consul's does: the time is stamped in gossip.
            Ok(()) => ApiResponse::json(Reply::Event(Box::new(body.into_event(name, 0)))),
            Err(e) => ApiResponse::error(500, e),
        };
        out.push(Effect::Respond { id, resp });
    }

    /// A user event arrived: keep it if its filters match this agent, wake list waiters.
    fn on_user_event(&mut self, ltime: u64, name: String, payload: &[u8], out: &mut Vec<Effect>) {
        let Ok(body) = postcard::from_bytes::<EventBody>(payload) else { return };
        if !self.event_matches(&body) {
            return;
        }
        let event = body.into_event(name, ltime);
        let Some(m) = self.membership.as_mut() else { return };
        if m.events.len() == EVENT_RING {
            m.events.pop_front();
        }
        m.events.push_back(event);
        let hash = events_hash(&m.events);
        let (wake, keep): (Vec<EventWaiter>, Vec<EventWaiter>) =
            std::mem::take(&mut m.event_waiters).into_iter().partition(|w| w.hash != hash);
        m.event_waiters = keep;
        for w in wake {
            let resp = self.event_list(w.name.as_deref());
            out.push(Effect::Respond { id: w.id, resp });
        }
    }

    /// Node, service and tag filters are regular expressions; an unparsable one matches
    /// nothing (the firing agent already refused bad ones).
    fn event_matches(&self, e: &EventBody) -> bool {
        let re = |p: &str| regex::Regex::new(p).ok();
        if !e.node_filter.is_empty() && !re(&e.node_filter).is_some_and(|r| r.is_match(&self.cfg.node.name)) {
            return false;
        }
        if e.service_filter.is_empty() {
            return true;
        }
        let (Some(svc), tag) = (re(&e.service_filter), (!e.tag_filter.is_empty()).then(|| re(&e.tag_filter)))
        else {
            return false;
        };
        self.agent.services().any(|s| {
            svc.is_match(&s.service)
                && match &tag {
                    None => true,
                    Some(Some(t)) => s.tags.iter().any(|x| t.is_match(x)),
                    Some(None) => false,
                }
        })
    }

    pub(super) fn event_list(&self, name: Option<&str>) -> ApiResponse {
        let Some(m) = self.membership.as_ref() else {
            return ApiResponse::json(Reply::Events(vec![]));
        };
        let events = m.events.iter().filter(|e| name.is_none_or(|n| e.name == n)).cloned().collect();
        let meta = QueryMeta {
            index: Index(events_hash(&m.events)),
            known_leader: true,
            last_contact_ms: 0,
            consistency: None,
        };
        ApiResponse::json(Reply::Events(events)).with_meta(meta)
    }

    pub(super) fn api_event_list(
        &mut self,
        id: ReqId,
        name: Option<String>,
        q: QueryOpts,
        out: &mut Vec<Effect>,
    ) {
        let now = self.now;
        let wait = q.wait.unwrap_or(self.cfg.default_query_time).min(self.cfg.max_query_time);
        let Some(m) = self.membership.as_mut() else {
            return out.push(Effect::Respond { id, resp: self.event_list(None) });
        };
        let hash = events_hash(&m.events);
        if q.min_index.0 == 0 || q.min_index.0 != hash {
            let resp = self.event_list(name.as_deref());
            return out.push(Effect::Respond { id, resp });
        }
        m.event_waiters.push(EventWaiter { id, name, hash, deadline: now + wait });
    }

    // ---- keyring ----

    /// Keyring operations run as a query every member answers (applying it first), as
    /// Consul's do; the query travels sealed with the current key, so only holders of a
    /// key can change the keyring.
    pub(super) fn api_keyring(&mut self, id: ReqId, op: KeyringOp, out: &mut Vec<Effect>) {
        let respond = |out: &mut Vec<Effect>, resp| out.push(Effect::Respond { id, resp });
        let Some(m) = self.membership.as_mut() else {
            return respond(out, ApiResponse::error(500, "gossip is not enabled"));
        };
        if m.codec.keyring.is_none() {
            return respond(out, ApiResponse::error(500, "Gossip encryption is not enabled"));
        }
        if let KeyringOp::Install(k) | KeyringOp::Use(k) | KeyringOp::Remove(k) = &op {
            if let Err(e) = GossipKey::from_base64(k) {
                return respond(out, ApiResponse::error(400, format!("Invalid key: {e}")));
            }
        }
        m.next_token += 1;
        let token = m.next_token;
        m.keyring.insert(token, (id, op.clone()));
        let cfg = m.lan.config();
        let n = m.lan.alive_count();
        // Serf's query timeout: 16 gossip intervals per generation the pool needs.
        let timeout = cfg.gossip_interval * 16 * crate::gossip::lifeguard::log10_ceil(n);
        let payload = postcard::to_allocvec(&op).expect("keyring operations serialize");
        let query = GossipInput::Query { token, name: KEYRING_QUERY.into(), payload, timeout };
        let _ = self.gossip_input(Pool::Lan, query, out);
    }

    fn keyring_response(&self, pool: Pool, op: KeyringOp, answers: Vec<(Arc<str>, Vec<u8>)>) -> ApiResponse {
        let Some(m) = self.membership.as_ref() else {
            return ApiResponse::error(500, "gossip is not enabled");
        };
        let nodes = m.lan.alive_count();
        let answers: Vec<(Arc<str>, KeyringAnswer)> =
            answers.into_iter().filter_map(|(n, p)| Some((n, postcard::from_bytes(&p).ok()?))).collect();
        let errors: Vec<String> =
            answers.iter().filter_map(|(n, a)| a.error.as_ref().map(|e| format!("{n}: {e}"))).collect();
        if !errors.is_empty() {
            return ApiResponse::error(
                500,
                format!("{} nodes reported an error: {}", errors.len(), errors.join("; ")),
            );
        }
        if op == KeyringOp::List {
            let mut keys = BTreeMap::new();
            let mut primary = BTreeMap::new();
            for (_, a) in &answers {
                for k in &a.keys {
                    *keys.entry(k.clone()).or_insert(0) += 1;
                }
                *primary.entry(a.primary.clone()).or_insert(0) += 1;
            }
            let pools = vec![KeyringPool {
                wan: pool == Pool::Wan,
                datacenter: self.cfg.node.datacenter.clone(),
                segment: String::new(),
                keys,
                primary_keys: primary,
                num_nodes: nodes,
            }];
            return ApiResponse::json(Reply::Keyring(pools));
        }
        if answers.len() < nodes {
            return ApiResponse::error(500, format!("{}/{} nodes reported success", answers.len(), nodes));
        }
        ApiResponse::empty()
    }

    // ---- leader reconcile ----

    /// On the leader: make the catalog agree with the LAN pool. Alive members get a node
    /// and a passing `serfHealth`, failed ones a critical one, left and forgotten ones are
    /// deregistered (and left servers leave the Raft configuration).
    fn reconcile_members(&mut self, now: Time, out: &mut Vec<Effect>) {
        // A new leader's state may still miss writes of the previous term (a critical
        // serfHealth among them): compare only once it has caught up.
        if !self.raft.leader_caught_up(self.state.applied()) {
            return;
        }
        let Some(m) = self.membership.as_mut() else { return };
        if m.reconciling || !(m.dirty || now >= m.next_reconcile) {
            return;
        }
        m.dirty = false;
        m.next_reconcile = now + RECONCILE_INTERVAL;
        let m = self.membership.as_ref().expect("checked above");
        let cat = &self.state.catalog;
        let mut cmds = Vec::new();
        let mut remove_peers = Vec::new();
        let mut add_peers = Vec::new();
        let dc = &self.cfg.node.datacenter;
        for mem in m.lan.members() {
            let name = mem.id.name.as_ref();
            let serf = cat.node_checks(name).find(|c| c.check_id == SERF_HEALTH);
            match mem.status() {
                MemberStatus::Alive | MemberStatus::Leaving | MemberStatus::Failed => {
                    let alive = mem.status() != MemberStatus::Failed;
                    if mem.status() == MemberStatus::Alive {
                        add_peers.extend(self.new_server(mem));
                    }
                    let want = if alive { Health::Passing } else { Health::Critical };
                    if serf.is_some_and(|c| c.status == want) {
                        continue;
                    }
                    let existing = cat.node(name);
                    if existing.is_none() && !alive {
                        continue;
                    }
                    let (addr, _) = split_addr(&mem.id.addr);
                    let node = existing.cloned().unwrap_or_else(|| crate::fsm::catalog::Node {
                        id: mem.id.tags.get("id").cloned().unwrap_or_default(),
                        node: name.to_string(),
                        address: addr,
                        datacenter: dc.clone(),
                        tagged_addresses: BTreeMap::new(),
                        meta: BTreeMap::new(),
                        create_index: 0,
                        modify_index: 0,
                    });
                    let output =
                        if alive { "Agent alive and reachable" } else { "Agent not live or unreachable" };
                    let check = HealthCheck {
                        output: output.into(),
                        ..HealthCheck::new(name, SERF_HEALTH, "Serf Health Status", want)
                    };
                    cmds.push(Command::Register(Box::new(Registration {
                        node,
                        skip_node_update: existing.is_some(),
                        service: None,
                        checks: vec![check],
                    })));
                }
                MemberStatus::Left => {
                    if cat.node(name).is_some() {
                        cmds.push(Command::Deregister(Deregistration {
                            node: name.into(),
                            service_id: None,
                            check_id: None,
                        }));
                    }
                    if let Some(rpc) = self.left_server(mem) {
                        remove_peers.push(rpc);
                    }
                }
            }
        }
        // Nodes the pool has forgotten entirely, but that carry a serfHealth check (so
        // they were members once), go too; nodes registered directly never had one. A
        // leader that restarted with an empty table waits until it has heard the pool's
        // state, or it would deregister live nodes it has not re-learned yet.
        let settled = m.lan.settled(now);
        let forgotten = cat
            .nodes()
            .filter(|_| settled)
            .filter(|n| m.lan.member(&n.node).is_none())
            .filter(|n| cat.node_checks(&n.node).any(|c| c.check_id == SERF_HEALTH));
        for n in forgotten {
            cmds.push(Command::Deregister(Deregistration {
                node: n.node.clone(),
                service_id: None,
                check_id: None,
            }));
        }
        // One membership change at a time: the rest wait for the next reconcile, which a
        // finished change brings forward.
        let change = remove_peers
            .into_iter()
            .map(Work::RemovePeer)
            .chain(add_peers.into_iter().map(Work::AddPeer))
            .next();
        if let Some(work) = change {
            self.submit(work, Some(super::consensus::Waiter::PeerChanged), out);
        }
        if !cmds.is_empty() {
            if let Some(m) = self.membership.as_mut() {
                m.reconciling = true;
            }
            self.submit(Work::Commands(cmds), Some(super::consensus::Waiter::Reconciled), out);
        }
    }

    /// An alive server of this datacenter that is not yet in the Raft configuration: its
    /// server address (the leader adds it, as Consul's does on a serf join).
    fn new_server(&self, mem: &crate::gossip::Member) -> Option<String> {
        self.other_server(mem).filter(|rpc| !self.raft.membership().is_member(rpc))
    }

    /// A left member that is still in the Raft configuration: its server address.
    fn left_server(&self, mem: &crate::gossip::Member) -> Option<String> {
        self.other_server(mem).filter(|rpc| self.raft.membership().is_member(rpc))
    }

    /// Another server of this datacenter: its server address.
    fn other_server(&self, mem: &crate::gossip::Member) -> Option<String> {
        server_rpc(&mem.id, &self.cfg.node.datacenter).filter(|rpc| *rpc != self.id)
    }

    /// The gossip identity of this agent in a pool (LAN name, or `name.dc` on the WAN).
    pub(super) fn gossip_identity(cfg: &super::Config, tags: Tags, wan: bool) -> Identity {
        let (name, port) = if wan {
            (format!("{}.{}", cfg.node.name, cfg.node.datacenter), cfg.ports.serf_wan)
        } else {
            (cfg.node.name.clone(), cfg.ports.serf_lan)
        };
        let addr = host_port(&cfg.node.address, port);
        Identity { name: name.into(), addr: addr.into(), tags }
    }
}

/// Applies a keyring query to this member's keyring and says what it holds now.
fn keyring_apply(keyring: &mut Option<Keyring>, payload: &[u8]) -> KeyringAnswer {
    let fail =
        |e: String| KeyringAnswer { keys: vec![], primary: String::new(), error: Some(e), changed: false };
    let Some(k) = keyring.as_mut() else { return fail("gossip encryption is not enabled".into()) };
    let Ok(op) = postcard::from_bytes::<KeyringOp>(payload) else {
        return fail("malformed keyring query".into());
    };
    let key = |text: &str| GossipKey::from_base64(text).map_err(|e| e.to_string());
    let before = (k.keys().to_vec(), k.primary().clone());
    let result = match &op {
        KeyringOp::List => Ok(()),
        KeyringOp::Install(t) => key(t).map(|g| k.install(g)),
        KeyringOp::Use(t) => key(t).and_then(|g| k.use_key(&g).map_err(|e| e.to_string())),
        KeyringOp::Remove(t) => key(t).and_then(|g| k.remove(&g).map_err(|e| e.to_string())),
    };
    KeyringAnswer {
        keys: k.keys().iter().map(GossipKey::to_base64).collect(),
        primary: k.primary().to_base64(),
        error: result.err(),
        changed: before != (k.keys().to_vec(), k.primary().clone()),
    }
}
