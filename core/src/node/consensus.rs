//! The node's side of Raft: proposing, forwarding, read barriers, discovery and applying.
//!
//! Owns how a request that needs the cluster reaches it: a leader proposes writes itself; a
//! follower forwards them to the leader (one hop) and answers when the leader replies; with
//! no leader known, work waits up to the RPC hold timeout. Reads that must not be stale pass
//! a barrier first (the leader's lease, else a ReadIndex quorum round, asked of the leader
//! when this node follows) and are served once the local state has applied that index.
//! Also owns `-bootstrap-expect` (hellos to `-retry-join` peers until enough servers are
//! known), adding newcomers, and turning committed entries and installed snapshots into
//! state. Never decides what a request means: `node::mod` routes requests here.

use std::collections::BTreeMap;

use crate::api::{ApiRequest, ApiResponse, Consistency};
use crate::fsm::{Outcome, State};
use crate::ids::{Index, ReqId, Term};
use crate::io::{Effect, Event};
use crate::raft::{Entry, MembershipChange, RaftInput, RaftOutput, Role, SnapshotData};
use crate::rng::Rng;
use crate::rpc::{PeerMessage, Work};
use crate::time::{Duration, Time};

use super::Node;

/// How often a server says hello to its `-retry-join` peers.
const HELLO_INTERVAL: Duration = Duration::from_secs(2);
/// How often held work tries the known leader again.
const RETRY_INTERVAL: Duration = Duration::from_millis(100);

/// Who waits for a piece of work.
#[derive(Debug)]
pub(super) enum Waiter {
    /// Answer with the apply outcome (`true`/`false`, or the error).
    Outcome(ReqId),
    /// Answer 200 with no body (operator endpoints).
    Empty(ReqId),
    /// An agent sync: answer these agent endpoints with 200 once it is applied (or has
    /// failed: the local change stands and anti-entropy retries), and let the next sync go.
    Synced(Vec<ReqId>),
    /// A follower forwarded it: reply with `Forwarded`.
    Remote { to: String, ctx: u64 },
    /// A client agent's call: reply with an `Answer`.
    Call { to: String, ctx: u64 },
    /// The leader's membership reconcile: let the next one go.
    Reconciled,
    /// A Raft membership change the reconcile asked for (a server joined or left).
    PeerChanged,
}

/// What a node hands to the cluster: work for the leader, or a read that needs a barrier.
#[derive(Debug)]
enum Task {
    Write(Work),
    Read(ReqId, ApiRequest),
}

/// A task with no leader to take it yet.
#[derive(Debug)]
struct Held {
    task: Task,
    waiter: Option<Waiter>,
    deadline: Time,
}

/// Work sent to a leader, awaiting its reply.
#[derive(Debug)]
struct Forwarded {
    to: String,
    deadline: Time,
    waiter: Option<Waiter>,
}

/// Who waits for a read barrier.
#[derive(Debug)]
pub(super) enum BarrierFor {
    /// A local read, served once the barrier index is applied.
    Read { id: ReqId, req: ApiRequest, deadline: Time },
    /// A follower's barrier request.
    Remote { to: String, ctx: u64 },
}

/// The cluster-facing bookkeeping of a node.
#[derive(Debug, Default)]
pub(super) struct Cluster {
    /// Proposals awaiting their index, by Raft context.
    proposals: BTreeMap<u64, Option<Waiter>>,
    /// Proposed entries awaiting apply: the term they were proposed in, who waits, and
    /// until when.
    pending: BTreeMap<Index, Vec<(Term, Waiter, Time)>>,
    /// Work forwarded to the leader, by context: the deadline and who waits.
    forwards: BTreeMap<u64, Forwarded>,
    held: Vec<Held>,
    barriers: BTreeMap<u64, BarrierFor>,
    /// Reads whose barrier passed, waiting for the state to apply its index.
    after_apply: Vec<(Index, ReqId, ApiRequest)>,
    next_ctx: u64,
    pub(super) raft_timer: Option<Time>,
    /// Servers that said hello, and whether each already belongs to a cluster.
    seen: BTreeMap<String, bool>,
    next_hello: Time,
    next_retry: Time,
    leader_changed: bool,
    snapshot_due: bool,
}

impl Cluster {
    /// The bookkeeping of a new life of the node. Its request contexts start at a random
    /// point drawn from the life's seed: replies to an earlier life's requests still arrive
    /// at the same address (a leader answering a forward sent before a crash), and must not
    /// match a request of this one.
    pub(super) fn new(mut ids: Rng) -> Cluster {
        Cluster { next_ctx: ids.next_u64() >> 1, ..Cluster::default() }
    }

    pub(super) fn ctx(&mut self) -> u64 {
        self.next_ctx += 1;
        self.next_ctx
    }

    /// The earliest deadline among waiting work; held work retries only once a leader is
    /// known, and hellos go out only with `-retry-join` peers.
    pub(super) fn next_deadline(&self, leader_known: bool, hellos: bool) -> Option<Time> {
        let forwards = self.forwards.values().map(|f| f.deadline);
        let held = self.held.iter().map(|h| h.deadline);
        let barriers = self.barriers.values().filter_map(|b| match b {
            BarrierFor::Read { deadline, .. } => Some(*deadline),
            BarrierFor::Remote { .. } => None,
        });
        let pending = self.pending.values().flatten().map(|(_, _, d)| *d);
        let retry = (leader_known && !self.held.is_empty()).then_some(self.next_retry);
        let hello = hellos.then_some(self.next_hello);
        [self.raft_timer, forwards.min(), held.min(), barriers.min(), pending.min(), retry, hello]
            .into_iter()
            .flatten()
            .min()
    }
}

impl Node {
    pub(super) fn is_leader(&self) -> bool {
        self.raft.role() == Role::Leader
    }

    pub(super) fn bootstrapped(&self) -> bool {
        !self.raft.membership().voters.is_empty()
    }

    /// Feeds the replica one input and carries out what it asks.
    pub(super) fn drive(&mut self, input: RaftInput, out: &mut Vec<Effect>) {
        let mut ro = Vec::new();
        self.raft.step(self.now, input, &mut ro);
        for o in ro {
            match o {
                RaftOutput::Send { to, msg } => out.push(Effect::Send { to, msg: PeerMessage::Raft(msg) }),
                RaftOutput::Persist { token, op } => out.push(Effect::Persist { token, op }),
                RaftOutput::SetTimer { at } => self.cluster.raft_timer = Some(at),
                RaftOutput::Committed { entries } => {
                    for e in entries {
                        self.apply(&e, out);
                    }
                }
                RaftOutput::InstallSnapshot { index, data, .. } => self.install(index, &data, out),
                RaftOutput::ProposeResult { ctx, result } => {
                    let waiter = self.cluster.proposals.remove(&ctx).flatten();
                    match (result, waiter) {
                        (Ok(index), Some(w)) => {
                            let term = self.raft.debug_state().term;
                            let deadline = self.now + self.cfg.rpc_hold_timeout;
                            self.cluster.pending.entry(index).or_default().push((term, w, deadline));
                        }
                        (Err(e), Some(w)) => self.reply(w, Err(e.to_string()), out),
                        (_, None) => {}
                    }
                }
                RaftOutput::ReadReady { ctx, index } => match self.cluster.barriers.remove(&ctx) {
                    Some(BarrierFor::Read { id, req, .. }) => self.after_barrier(index, id, req, out),
                    Some(BarrierFor::Remote { to, ctx }) => {
                        out.push(Effect::Send { to, msg: PeerMessage::Barrier { ctx, result: Ok(index) } })
                    }
                    None => {}
                },
                RaftOutput::ReadFailed { ctx, .. } => match self.cluster.barriers.remove(&ctx) {
                    // Leadership moved mid-round: ask again, of whoever leads now.
                    Some(BarrierFor::Read { id, req, deadline }) => {
                        self.cluster.held.push(Held { task: Task::Read(id, req), waiter: None, deadline })
                    }
                    Some(BarrierFor::Remote { to, ctx }) => out.push(Effect::Send {
                        to,
                        msg: PeerMessage::Barrier { ctx, result: Err("leadership lost".into()) },
                    }),
                    None => {}
                },
                RaftOutput::LeaderChanged { term, leader } => {
                    if leader.as_deref() == Some(self.id.as_str()) {
                        out.push(Effect::Emit(Event::BecameLeader { term }));
                        if let Some(m) = self.membership.as_mut() {
                            m.leadership_gained();
                        }
                    }
                    self.cluster.leader_changed = true;
                }
            }
        }
    }

    /// Work that had to wait for the replica's outputs to be handled: a snapshot, and
    /// whatever was held for a leader.
    pub(super) fn settle(&mut self, out: &mut Vec<Effect>) {
        if std::mem::take(&mut self.cluster.snapshot_due) {
            // The rest of the committed batch has been applied since the threshold was
            // crossed: the snapshot is of the state as it is now, labelled so.
            let index = self.state.applied();
            self.snapshot_index = index;
            self.snapshot_gap = super::next_snapshot_gap(self.cfg.snapshot_threshold, &mut self.snapshot_rng);
            // A copy that costs nothing (persistent maps), encoded off the loop.
            let state = self.state.clone();
            let data = SnapshotData::deferred(move || {
                postcard::to_allocvec(&state).expect("the state always encodes")
            });
            self.drive(RaftInput::Snapshot { index, data }, out);
        }
        let changed = std::mem::take(&mut self.cluster.leader_changed);
        if changed {
            self.abandon_forwards(out);
        }
        let retry = changed || self.now >= self.cluster.next_retry;
        if retry && self.raft.leader().is_some() && !self.cluster.held.is_empty() {
            self.cluster.next_retry = self.now + RETRY_INTERVAL;
            for h in std::mem::take(&mut self.cluster.held) {
                self.submit_until(h.task, h.waiter, h.deadline, out);
            }
        }
    }

    /// Sends `work` where it can be carried out, or holds it until a leader is known.
    pub(super) fn submit(&mut self, work: Work, waiter: Option<Waiter>, out: &mut Vec<Effect>) {
        let deadline = self.now + self.cfg.rpc_hold_timeout;
        self.submit_until(Task::Write(work), waiter, deadline, out);
    }

    /// Serves a read that must reflect every write acknowledged before it arrived.
    pub(super) fn linearizable_read(&mut self, id: ReqId, req: ApiRequest, out: &mut Vec<Effect>) {
        let deadline = self.now + self.cfg.rpc_hold_timeout;
        self.submit_until(Task::Read(id, req), None, deadline, out);
    }

    fn submit_until(&mut self, task: Task, waiter: Option<Waiter>, deadline: Time, out: &mut Vec<Effect>) {
        if !self.cfg.server {
            // A client has no Raft: its servers carry out the work.
            if let Task::Write(work) = task {
                let waiter = super::remote::CallWaiter::Work(waiter);
                return self.call(None, crate::rpc::Call::Work(work), waiter, deadline, out);
            }
        }
        if self.is_leader() {
            return self.lead(task, waiter, out);
        }
        let Some(leader) = self.raft.leader().map(str::to_string) else {
            self.cluster.held.push(Held { task, waiter, deadline });
            return;
        };
        let ctx = self.cluster.ctx();
        match task {
            Task::Read(id, req) => {
                let lease = server_consistency(&req) == Consistency::Default;
                self.cluster.barriers.insert(ctx, BarrierFor::Read { id, req, deadline });
                out.push(Effect::Send { to: leader, msg: PeerMessage::ReadBarrier { ctx, lease } });
            }
            Task::Write(work) => {
                self.cluster.forwards.insert(ctx, Forwarded { to: leader.clone(), deadline, waiter });
                out.push(Effect::Send { to: leader, msg: PeerMessage::Forward { ctx, work } });
            }
        }
    }

    /// A leader carries out `work` itself.
    fn lead(&mut self, task: Task, waiter: Option<Waiter>, out: &mut Vec<Effect>) {
        match task {
            Task::Write(Work::Commands(cmds)) => {
                let last = cmds.len().saturating_sub(1);
                let mut waiter = waiter;
                for (i, command) in cmds.into_iter().enumerate() {
                    let ctx = self.cluster.ctx();
                    self.cluster.proposals.insert(ctx, if i == last { waiter.take() } else { None });
                    self.drive(RaftInput::Propose { command, ctx }, out);
                }
            }
            Task::Write(Work::AddPeer(id)) => self.change(MembershipChange::AddNonVoter(id), waiter, out),
            Task::Write(Work::RemovePeer(id)) => self.change(MembershipChange::Remove(id), waiter, out),
            Task::Read(id, req) => {
                let lease_ok = server_consistency(&req) == Consistency::Default;
                match self.raft.lease_read_index(self.now).filter(|_| lease_ok) {
                    Some(index) => self.after_barrier(index, id, req, out),
                    None => {
                        let ctx = self.cluster.ctx();
                        let deadline = self.now + self.cfg.rpc_hold_timeout;
                        self.cluster.barriers.insert(ctx, BarrierFor::Read { id, req, deadline });
                        self.drive(RaftInput::ReadIndex { ctx }, out);
                    }
                }
            }
        }
    }

    fn change(&mut self, change: MembershipChange, waiter: Option<Waiter>, out: &mut Vec<Effect>) {
        let ctx = self.cluster.ctx();
        self.cluster.proposals.insert(ctx, waiter);
        self.drive(RaftInput::ChangeMembership { change, ctx }, out);
    }

    /// Answers whoever waits for work, with its outcome.
    pub(super) fn reply(
        &mut self,
        waiter: Waiter,
        result: Result<(Index, bool), String>,
        out: &mut Vec<Effect>,
    ) {
        let resp = |id, resp| Effect::Respond { id, resp };
        if let Waiter::Synced(ids) = waiter {
            self.syncing = false;
            if result.is_err() && !self.cfg.server {
                self.next_full_sync = self.next_full_sync.min(self.now + super::SYNC_RETRY);
            }
            out.extend(ids.into_iter().map(|id| resp(id, ApiResponse::empty())));
            return;
        }
        if let Waiter::Reconciled | Waiter::PeerChanged = waiter {
            let now = self.now;
            if let Some(m) = self.membership.as_mut() {
                match waiter {
                    Waiter::Reconciled => m.reconciled(now, result.is_ok()),
                    _ => m.reconciled_peer(now),
                }
            }
            return;
        }
        out.push(match (waiter, result) {
            (Waiter::Remote { to, ctx }, result) => {
                Effect::Send { to, msg: PeerMessage::Forwarded { ctx, result } }
            }
            (Waiter::Call { to, ctx }, result) => Effect::Send {
                to,
                msg: PeerMessage::Answer { ctx, answer: crate::rpc::Answer::Work(result) },
            },
            (Waiter::Empty(id), Ok(_)) => resp(id, ApiResponse::empty()),
            (Waiter::Outcome(id), Ok((_, b))) => {
                resp(id, ApiResponse::json(crate::api::shapes::Reply::Bool(b)))
            }
            (Waiter::Empty(id) | Waiter::Outcome(id), Err(reason)) => {
                resp(id, ApiResponse::error(500, reason))
            }
            (Waiter::Synced(_) | Waiter::Reconciled | Waiter::PeerChanged, _) => {
                unreachable!("answered above")
            }
        });
    }

    /// A barrier passed at `index`: serve the read once the state has applied it.
    fn after_barrier(&mut self, index: Index, id: ReqId, req: ApiRequest, out: &mut Vec<Effect>) {
        if self.state.applied() >= index {
            self.read(id, req, None, out);
        } else {
            self.cluster.after_apply.push((index, id, req));
        }
    }

    /// Work sent to a server that no longer leads gets no answer: say so now, rather than
    /// at the timeout, so clients retry against the new leader.
    fn abandon_forwards(&mut self, out: &mut Vec<Effect>) {
        let leader = self.raft.leader().map(str::to_string);
        let stale: Vec<u64> = self
            .cluster
            .forwards
            .iter()
            .filter(|(_, f)| Some(&f.to) != leader.as_ref())
            .map(|(c, _)| *c)
            .collect();
        for ctx in stale {
            if let Some(Forwarded { waiter: Some(w), .. }) = self.cluster.forwards.remove(&ctx) {
                self.reply(w, Err("leadership changed while the write was in flight; it may or may not have been applied".into()), out);
            }
        }
    }

    /// A message that never reached its server: work it carried waits for a leader again.
    pub(super) fn undelivered(&mut self, to: &str, msg: PeerMessage, out: &mut Vec<Effect>) {
        match msg {
            PeerMessage::Call { ctx, call } => self.call_undelivered(to, ctx, call, out),
            PeerMessage::Forward { ctx, work } => {
                if let Some(f) = self.cluster.forwards.remove(&ctx) {
                    self.cluster.held.push(Held {
                        task: Task::Write(work),
                        waiter: f.waiter,
                        deadline: f.deadline,
                    });
                }
            }
            PeerMessage::ReadBarrier { ctx, .. } => {
                if let Some(BarrierFor::Read { id, req, deadline }) = self.cluster.barriers.remove(&ctx) {
                    self.cluster.held.push(Held { task: Task::Read(id, req), waiter: None, deadline });
                }
            }
            _ => {}
        }
    }

    /// A message from another server.
    pub(super) fn on_peer(&mut self, from: String, msg: PeerMessage, out: &mut Vec<Effect>) {
        match msg {
            PeerMessage::Raft(msg) => self.drive(RaftInput::Message { from, msg }, out),
            PeerMessage::Hello { bootstrapped } => self.on_hello(from, bootstrapped, out),
            PeerMessage::Forward { ctx, work } => {
                let waiter = Some(Waiter::Remote { to: from, ctx });
                if self.is_leader() {
                    self.lead(Task::Write(work), waiter, out);
                } else if let Some(w) = waiter {
                    // One hop only: a stale forward is refused, and the follower retries.
                    self.reply(w, Err("No cluster leader".into()), out);
                }
            }
            PeerMessage::Forwarded { ctx, result } => {
                if let Some(Forwarded { waiter: Some(w), .. }) = self.cluster.forwards.remove(&ctx) {
                    self.reply(w, result, out);
                }
            }
            PeerMessage::ReadBarrier { ctx, lease } => {
                let lease_index = self.raft.lease_read_index(self.now).filter(|_| lease);
                if let Some(index) = lease_index.filter(|_| self.is_leader()) {
                    out.push(Effect::Send { to: from, msg: PeerMessage::Barrier { ctx, result: Ok(index) } });
                } else if self.is_leader() {
                    let mine = self.cluster.ctx();
                    self.cluster.barriers.insert(mine, BarrierFor::Remote { to: from, ctx });
                    self.drive(RaftInput::ReadIndex { ctx: mine }, out);
                } else {
                    let result = Err("No cluster leader".into());
                    out.push(Effect::Send { to: from, msg: PeerMessage::Barrier { ctx, result } });
                }
            }
            PeerMessage::Call { ctx, call } => self.on_call(from, ctx, call, out),
            PeerMessage::Answer { ctx, answer } => self.on_answer(&from, ctx, answer, out),
            PeerMessage::Barrier { ctx, result } => {
                if let Some(BarrierFor::Read { id, req, deadline }) = self.cluster.barriers.remove(&ctx) {
                    match result {
                        Ok(index) => self.after_barrier(index, id, req, out),
                        // The leader moved; try again while the hold timeout allows.
                        Err(_) => {
                            self.cluster.held.push(Held { task: Task::Read(id, req), waiter: None, deadline })
                        }
                    }
                }
            }
        }
    }

    fn on_hello(&mut self, from: String, bootstrapped: bool, out: &mut Vec<Effect>) {
        if self.cluster.seen.insert(from.clone(), bootstrapped).is_none() {
            let msg = PeerMessage::Hello { bootstrapped: self.bootstrapped() };
            out.push(Effect::Send { to: from.clone(), msg });
        }
        if !self.raft.membership().is_member(&from) && self.bootstrapped() {
            self.submit(Work::AddPeer(from), None, out);
        }
        self.maybe_bootstrap(out);
    }

    /// With `-bootstrap-expect N`: once N servers (this one included) know each other and
    /// none belongs to a cluster yet, all of them bootstrap the same voter set.
    fn maybe_bootstrap(&mut self, out: &mut Vec<Effect>) {
        let expect = self.cfg.bootstrap_expect as usize;
        if expect == 0 || self.bootstrapped() || self.cluster.seen.values().any(|b| *b) {
            return;
        }
        let mut voters: Vec<String> = self.cluster.seen.keys().cloned().collect();
        voters.push(self.id.clone());
        voters.sort();
        voters.dedup();
        if voters.len() >= expect {
            self.drive(RaftInput::Bootstrap { voters }, out);
        }
    }

    /// Servers to say hello to: those found through gossip tags, plus any configured
    /// statically (the simulator's worlds).
    fn hello_targets(&self) -> Vec<String> {
        let gossip = self
            .membership
            .as_ref()
            .filter(|_| self.expecting_servers())
            .map(|m| m.servers.values().cloned().collect::<Vec<_>>());
        let mut all: Vec<String> =
            self.cfg.retry_join.iter().cloned().chain(gossip.unwrap_or_default()).collect();
        all.sort();
        all.dedup();
        all.retain(|p| *p != self.id);
        all
    }

    /// Gossip-found servers only matter while this one waits to bootstrap: afterwards the
    /// leader adds newcomers from the member list, and hellos to every server every 2 s
    /// would cost N² messages.
    fn expecting_servers(&self) -> bool {
        self.cfg.bootstrap_expect > 0 && !self.bootstrapped()
    }

    /// Whether there is anyone to say hello to (checked on every step, so without building
    /// the list).
    pub(super) fn says_hello(&self) -> bool {
        let gossip = self.membership.as_ref().is_some_and(|m| !m.servers.is_empty());
        self.cfg.retry_join.iter().any(|p| *p != self.id) || (gossip && self.expecting_servers())
    }

    /// Hellos to known servers, and work whose hold timeout ran out.
    pub(super) fn poll_cluster(&mut self, now: Time, out: &mut Vec<Effect>) {
        if now >= self.cluster.next_hello && self.says_hello() {
            let targets = self.hello_targets();
            self.cluster.next_hello = now + HELLO_INTERVAL;
            let bootstrapped = self.bootstrapped();
            for to in targets {
                out.push(Effect::Send { to, msg: PeerMessage::Hello { bootstrapped } });
            }
        }
        let (expired, held): (Vec<Held>, Vec<Held>) =
            std::mem::take(&mut self.cluster.held).into_iter().partition(|h| h.deadline <= now);
        self.cluster.held = held;
        for h in expired {
            match h.task {
                Task::Read(id, _) => out.push(Effect::Respond { id, resp: no_leader() }),
                _ => {
                    if let Some(w) = h.waiter {
                        self.reply(w, Err("No cluster leader".into()), out);
                    }
                }
            }
        }
        let mut expired = Vec::new();
        for waiting in self.cluster.pending.values_mut() {
            let (gone, keep): (Vec<_>, Vec<_>) =
                std::mem::take(waiting).into_iter().partition(|p| p.2 <= now);
            *waiting = keep;
            expired.extend(gone);
        }
        self.cluster.pending.retain(|_, w| !w.is_empty());
        for (_, w, _) in expired {
            self.reply(w, Err("timed out waiting for the write to commit".into()), out);
        }
        let expired: Vec<u64> =
            self.cluster.forwards.iter().filter(|(_, f)| f.deadline <= now).map(|(c, _)| *c).collect();
        for ctx in expired {
            if let Some(Forwarded { waiter: Some(w), .. }) = self.cluster.forwards.remove(&ctx) {
                self.reply(w, Err("timed out waiting for the leader to apply the write".into()), out);
            }
        }
        let expired: Vec<u64> = self
            .cluster
            .barriers
            .iter()
            .filter(|(_, b)| matches!(b, BarrierFor::Read { deadline, .. } if *deadline <= now))
            .map(|(c, _)| *c)
            .collect();
        for ctx in expired {
            if let Some(BarrierFor::Read { id, .. }) = self.cluster.barriers.remove(&ctx) {
                out.push(Effect::Respond { id, resp: no_leader() });
            }
        }
    }

    /// Applies one committed entry and answers whoever waited for it.
    pub(super) fn apply(&mut self, entry: &Entry, out: &mut Vec<Effect>) {
        let index = entry.index;
        if index <= self.state.applied() {
            return;
        }
        let applied = self.state.apply(index, &entry.command);
        out.push(Effect::Emit(Event::Applied { index }));
        if index.0 - self.snapshot_index.0 >= self.snapshot_gap {
            self.cluster.snapshot_due = true;
        }
        for (term, w, _) in self.cluster.pending.remove(&index).unwrap_or_default() {
            let result = if term != entry.term {
                Err("leadership lost before the write committed; it was not applied".to_string())
            } else {
                match &applied.outcome {
                    Outcome::Bool(b) => Ok((index, *b)),
                    Outcome::Kv(e) => Err(e.to_string()),
                    Outcome::Catalog(e) => Err(e.to_string()),
                }
            };
            self.reply(w, result, out);
        }
        self.wake(|w| w.woken_by(&applied.touched), out);
    }

    /// Replaces the state with a leader's snapshot.
    fn install(&mut self, index: Index, data: &[u8], out: &mut Vec<Effect>) {
        match postcard::from_bytes::<State>(data) {
            Ok(state) => {
                self.state = state;
                self.snapshot_index = index;
            }
            Err(e) => {
                let reason = format!("the leader's snapshot at {index:?} does not decode: {e}");
                out.push(Effect::Emit(Event::Failed { reason: reason.clone() }));
                self.failed = Some(reason);
                return;
            }
        }
        let stale: Vec<Index> = self.cluster.pending.range(..=index).map(|(i, _)| *i).collect();
        for i in stale {
            for (_, w, _) in self.cluster.pending.remove(&i).unwrap_or_default() {
                self.reply(w, Err("leadership lost; the write's outcome is unknown".into()), out);
            }
        }
        self.wake(|_| true, out);
    }

    /// Serves reads whose barrier index is now applied, and re-runs parked blocking reads
    /// that the change touched.
    fn wake(&mut self, touched: impl Fn(&crate::server::Watch) -> bool, out: &mut Vec<Effect>) {
        let applied = self.state.applied();
        let (ready, waiting): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.cluster.after_apply).into_iter().partition(|(i, _, _)| *i <= applied);
        self.cluster.after_apply = waiting;
        for (_, id, req) in ready {
            self.read(id, req, None, out);
        }
        let (woken, still): (Vec<_>, Vec<_>) =
            std::mem::take(&mut self.parked).into_iter().partition(|p| touched(&p.watch));
        self.parked = still;
        for p in woken {
            self.read(p.id, p.req, Some(p.deadline), out);
        }
    }

    /// `X-Consul-KnownLeader` and `X-Consul-LastContact` for a read served now.
    pub(super) fn contact(&self) -> (bool, u64) {
        if self.is_leader() {
            return (true, 0);
        }
        match self.raft.leader_contact() {
            Some(at) => (true, u64::try_from(self.now.since(at).as_millis()).unwrap_or(u64::MAX)),
            None => (false, 0),
        }
    }
}

fn server_consistency(req: &ApiRequest) -> Consistency {
    crate::server::query_opts(req).map(|q| q.consistency).unwrap_or(Consistency::Default)
}

fn no_leader() -> ApiResponse {
    ApiResponse::error(500, "No cluster leader")
}

impl Node {
    /// The Raft configuration as `operator/raft/configuration` shows it, with each server's
    /// node name and id looked up in the catalog by its server address.
    pub(super) fn raft_configuration(&self) -> crate::api::shapes::RaftConfiguration {
        let m = self.raft.membership();
        let d = self.raft.debug_state();
        let servers = m
            .voters
            .iter()
            .map(|a| (a, true))
            .chain(m.non_voters.iter().map(|a| (a, false)))
            .map(|(addr, voter)| {
                let (node, id) = self.server_node(addr).unwrap_or_else(|| (addr.clone(), addr.clone()));
                crate::api::shapes::RaftServer {
                    id,
                    node,
                    address: addr.clone(),
                    leader: self.raft.leader() == Some(addr.as_str()),
                    protocol_version: "3".into(),
                    voter,
                    // A leader knows what each follower holds; a follower only itself.
                    last_index: if *addr == self.id {
                        d.last_index.0
                    } else {
                        self.raft.matched(addr).map_or(0, |i| i.0)
                    },
                }
            })
            .collect();
        crate::api::shapes::RaftConfiguration { servers, index: 0 }
    }

    /// The catalog node (name, id) whose `consul` service listens on `addr`.
    fn server_node(&self, addr: &str) -> Option<(String, String)> {
        let (host, port) = addr.rsplit_once(':')?;
        self.state.catalog.all_services().find_map(|(n, s)| {
            let matches =
                s.service == crate::agent::CONSUL_SERVICE && n.address == host && s.port.to_string() == port;
            matches.then(|| (n.node.clone(), if n.id.is_empty() { addr.to_string() } else { n.id.clone() }))
        })
    }

    /// Resolves `?address=` or `?id=` to a member's Raft id.
    pub(super) fn peer_to_remove(
        &self,
        address: Option<String>,
        id: Option<String>,
    ) -> Result<String, crate::api::ApiError> {
        let m = self.raft.membership();
        let found = match (address, id) {
            (Some(a), _) if !a.is_empty() => m.is_member(&a).then_some(a),
            (_, Some(i)) if !i.is_empty() => {
                m.members().find(|a| self.server_node(a).is_some_and(|(_, id)| id == i) || **a == i).cloned()
            }
            _ => {
                return Err(crate::api::ApiError::new(
                    400,
                    "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
                ))
            }
        };
        found.ok_or_else(|| {
            crate::api::ApiError::new(500, "address or id not found in the Raft configuration")
        })
    }
}
