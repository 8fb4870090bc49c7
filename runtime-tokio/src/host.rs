//! The host loop: one task owns the `Node`, feeds it inputs with the current time and carries
//! out its effects in order.
//!
//! Owns the mapping from effects to the world: timers (one `sleep_until`), persistence
//! (the disk thread when there is a data dir; otherwise in memory, durable as soon as
//! accepted, which is what `-dev` promises), answering requests through oneshot channels, and
//! starting/cancelling check runs. Decides nothing.

use std::collections::HashMap;
use std::time::Instant;

use muster_core::api::{ApiRequest, ApiResponse};
use muster_core::fsm::catalog::Health;
use muster_core::ids::{PersistToken, ReqId, RunId};
use muster_core::io::{Effect, Event, Input, PersistOp, Pool};
use muster_core::node::Node;
use muster_core::time::Time;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::checks;
use crate::disk::{self, DiskHandle, DiskLog};
use crate::gossip::GossipPort;
use crate::limits::LogThrottle;
use crate::rpc::{Delivery, Transport};

/// Messages IO tasks send to the host loop.
enum HostMsg {
    Request {
        req: ApiRequest,
        reply: oneshot::Sender<ApiResponse>,
    },
    /// The disk thread finished a persist (`ok == false`: it failed).
    Persisted {
        token: PersistToken,
        ok: bool,
    },
    CheckResult {
        check: String,
        run: RunId,
        status: Health,
        output: String,
    },
    Shutdown,
}

/// The node went away (it stopped or failed); the request could not be answered.
#[derive(Debug, thiserror::Error)]
#[error("the agent is shutting down")]
pub struct NodeGone;

/// A cheap, cloneable way for IO tasks to reach the node.
#[derive(Clone)]
pub struct NodeHandle {
    tx: mpsc::UnboundedSender<HostMsg>,
}

impl NodeHandle {
    /// Sends one API request and waits for its answer (blocking reads wait here too).
    pub async fn call(&self, req: ApiRequest) -> Result<ApiResponse, NodeGone> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(HostMsg::Request { req, reply }).map_err(|_| NodeGone)?;
        rx.await.map_err(|_| NodeGone)
    }

    /// Asks the loop to stop the node; `run` returns once it has.
    pub fn shutdown(&self) {
        let _ = self.tx.send(HostMsg::Shutdown);
    }
}

/// How the host loop ended.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error("node failed: {0}")]
    NodeFailed(String),
}

/// Where persists go.
pub enum Storage {
    /// Nothing survives the process: each persist is acknowledged at once.
    Memory,
    /// The durable log under the data dir, written by its own thread.
    Disk(DiskLog),
}

enum Persister {
    Memory,
    Disk(DiskHandle),
}

/// The running loop; `run` drives it until shutdown.
pub struct Host {
    node: Node,
    persister: Persister,
    epoch: Instant,
    rx: mpsc::UnboundedReceiver<HostMsg>,
    tx: mpsc::UnboundedSender<HostMsg>,
    next_req: u64,
    waiting: HashMap<ReqId, oneshot::Sender<ApiResponse>>,
    /// The run in flight per check, so a cancel can stop it.
    runs: HashMap<String, (RunId, AbortHandle)>,
    deadline: Option<Instant>,
    transport: Transport,
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    delivery_tx: mpsc::UnboundedSender<Delivery>,
    gossip: HashMap<Pool, GossipPort>,
    /// Where a changed gossip keyring is kept (`<data_dir>/keyring`), if anywhere.
    keyring_file: Option<std::path::PathBuf>,
    /// Where the API's services and checks are kept (`<data_dir>/agent-state.json`).
    agent_state_file: Option<std::path::PathBuf>,
    dropped_log: LogThrottle,
}

impl Host {
    /// Wraps a node; `epoch` is the instant the node's `Time(0)` stands for. `me` is the
    /// node's server address, which peers know it by.
    pub fn new(node: Node, epoch: Instant, storage: Storage, me: String) -> (Host, NodeHandle) {
        let (delivery_tx, deliveries) = mpsc::unbounded_channel();
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = NodeHandle { tx: tx.clone() };
        let persister = match storage {
            Storage::Memory => Persister::Memory,
            Storage::Disk(log) => {
                let tx = tx.clone();
                Persister::Disk(disk::spawn(log, move |token, ok| {
                    let _ = tx.send(HostMsg::Persisted { token, ok });
                }))
            }
        };
        let host = Host {
            node,
            persister,
            epoch,
            rx,
            tx,
            next_req: 0,
            waiting: HashMap::new(),
            runs: HashMap::new(),
            deadline: None,
            transport: Transport::new(me, delivery_tx.clone()),
            deliveries,
            delivery_tx,
            gossip: HashMap::new(),
            keyring_file: None,
            agent_state_file: None,
            dropped_log: LogThrottle::default(),
        };
        (host, handle)
    }

    /// Sends this pool's gossip through `port`.
    pub fn add_gossip(&mut self, pool: Pool, port: GossipPort) {
        self.gossip.insert(pool, port);
    }

    /// Keep the gossip keyring in `path` whenever it changes.
    pub fn keep_keyring_in(&mut self, path: std::path::PathBuf) {
        self.keyring_file = Some(path);
    }

    pub fn keep_agent_state_in(&mut self, path: std::path::PathBuf) {
        self.agent_state_file = Some(path);
    }

    /// Where the server-port listener hands what peers send.
    pub fn deliveries(&self) -> mpsc::UnboundedSender<Delivery> {
        self.delivery_tx.clone()
    }

    /// Where the server port's listener registers client agents' connections.
    pub fn rpc_clients(&self) -> crate::rpc::Clients {
        self.transport.clients()
    }

    fn now(&self) -> Time {
        Time(self.epoch.elapsed().as_nanos() as u64)
    }

    /// Runs until a shutdown is requested (Ok) or the node fail-stops (Err).
    pub async fn run(mut self) -> Result<(), HostError> {
        self.step(Input::Tick)?;
        loop {
            let sleep = async {
                match self.deadline {
                    Some(d) => tokio::time::sleep_until(d.into()).await,
                    None => std::future::pending().await,
                }
            };
            // Peer messages and the timer first: they are few, and a flood of requests must
            // never delay the heartbeats and acknowledgements that keep a leader in office.
            let input = tokio::select! {
                biased;
                Some(d) = self.deliveries.recv() => match d {
                    Delivery::Received { from, msg } => Input::Peer { from, msg },
                    Delivery::Undelivered { to, msg } => Input::Undelivered { to, msg },
                    Delivery::Gossip { pool, from, bytes, stream } => Input::Gossip { pool, from, bytes, stream },
                    Delivery::GossipUnreachable { pool, to, tag } => Input::GossipUnreachable { pool, to, tag },
                },
                () = sleep => {
                    self.deadline = None;
                    Input::Tick
                }
                msg = self.rx.recv() => match msg {
                    Some(HostMsg::Request { req, reply }) => {
                        self.next_req += 1;
                        let id = ReqId(self.next_req);
                        self.waiting.insert(id, reply);
                        Input::Request { id, req }
                    }
                    Some(HostMsg::Persisted { token, ok: true }) => Input::Persisted { token },
                    Some(HostMsg::Persisted { token, ok: false }) => Input::PersistFailed { token },
                    Some(HostMsg::CheckResult { check, run, status, output }) => {
                        if self.runs.get(&check).is_some_and(|(r, _)| *r == run) {
                            self.runs.remove(&check);
                        }
                        Input::CheckResult { check, run, status, output }
                    }
                    Some(HostMsg::Shutdown) | None => {
                        self.step(Input::Shutdown)?;
                        for (_, (_, h)) in self.runs.drain() {
                            h.abort();
                        }
                        return Ok(());
                    }
                },
            };
            self.step(input)?;
        }
    }

    /// Steps the node and performs its effects. In-memory persists complete at once, so
    /// their acknowledgements are stepped straight back in, in token order; disk persists
    /// come back as messages from the disk thread, also in token order.
    fn step(&mut self, input: Input) -> Result<(), HostError> {
        let mut queue = std::collections::VecDeque::from([input]);
        while let Some(input) = queue.pop_front() {
            let mut out = Vec::new();
            let kind = input_kind(&input);
            let started = Instant::now();
            self.node.step(self.now(), input, &mut out);
            let took = started.elapsed();
            if took >= SLOW_STEP {
                tracing::debug!(target: "muster::slow", input = kind, took_us = took.as_micros() as u64, effects = out.len(), "slow step");
            }
            for effect in out {
                match effect {
                    Effect::SetTimer { at } => {
                        self.deadline = Some(self.epoch + std::time::Duration::from_nanos(at.as_nanos()));
                    }
                    Effect::Persist { token, op } => match &self.persister {
                        Persister::Memory => {
                            if let PersistOp::Snapshot { data, .. } = op {
                                // Nothing writes it, but the replica keeps the image: encode
                                // it now (off this loop), so the copy of the state it was
                                // made from is let go rather than kept until the next one.
                                spawn_encode(data);
                            }
                            queue.push_back(Input::Persisted { token })
                        }
                        Persister::Disk(d) => d.submit(token, op),
                    },
                    Effect::Respond { id, resp } => {
                        if let Some(reply) = self.waiting.remove(&id) {
                            let _ = reply.send(resp);
                        }
                    }
                    Effect::RunCheck { check, run, spec, timeout } => {
                        let tx = self.tx.clone();
                        let name = check.clone();
                        let task = tokio::spawn(async move {
                            let (status, output) = checks::run(&spec, timeout).await;
                            let _ = tx.send(HostMsg::CheckResult { check: name, run, status, output });
                        });
                        if let Some((_, old)) = self.runs.insert(check, (run, task.abort_handle())) {
                            old.abort();
                        }
                    }
                    Effect::CancelCheck { check } => {
                        if let Some((_, h)) = self.runs.remove(&check) {
                            h.abort();
                        }
                    }
                    Effect::Send { to, msg } => self.transport.send(to, msg),
                    Effect::Gossip { pool, to, bytes, stream, tag } => {
                        if let Some(port) = self.gossip.get(&pool) {
                            port.send(to, bytes, stream, tag);
                        }
                    }
                    Effect::SaveKeyring { keys } => {
                        if let Some(path) = &self.keyring_file {
                            match crate::disk::write_atomically(path, &keyring_json(&keys)) {
                                Ok(()) => {
                                    tracing::info!(path = %path.display(), keys = keys.len(), "gossip keyring saved")
                                }
                                Err(e) => {
                                    tracing::error!(path = %path.display(), error = %e, "gossip keyring not saved")
                                }
                            }
                        }
                    }
                    Effect::SaveAgentState { defs } => {
                        // Small and rare (a registration changed): written in line, so saves
                        // land in the order the node made them.
                        if let Some(path) = &self.agent_state_file {
                            let bytes = serde_json::to_vec(&defs).expect("definitions serialize");
                            if let Err(e) = crate::disk::write_atomically(path, &bytes) {
                                tracing::error!(path = %path.display(), error = %e, "services and checks not saved");
                            }
                        }
                    }
                    Effect::Exit => {
                        tracing::info!("left the cluster gracefully; stopping");
                        // The leave request's answer is on its way: give it time to be written.
                        let tx = self.tx.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                            let _ = tx.send(HostMsg::Shutdown);
                        });
                    }
                    Effect::Emit(Event::GossipDropped { pool, from, reason }) => {
                        // Junk from anyone who can reach the port: a line per datagram would
                        // let them fill the disk through the log.
                        if let Some(suppressed) = self.dropped_log.allow() {
                            tracing::warn!(?pool, %from, %reason, suppressed, "gossip message dropped");
                        }
                    }
                    Effect::Emit(event) => log_event(&event)?,
                }
            }
        }
        Ok(())
    }
}

fn spawn_encode(data: muster_core::raft::SnapshotData) {
    let encode = move || {
        data.bytes();
    };
    if let Err(e) = std::thread::Builder::new().name("muster-snapshot".into()).spawn(encode) {
        tracing::warn!(error = %e, "no thread to encode the snapshot; it is encoded when first needed");
    }
}

/// A step at least this long is logged (target `muster::slow`, debug): where the loop's
/// time goes when requests wait.
const SLOW_STEP: std::time::Duration = std::time::Duration::from_millis(2);

fn input_kind(input: &Input) -> &'static str {
    match input {
        Input::Tick => "tick",
        Input::Request { .. } => "request",
        Input::CheckResult { .. } => "check result",
        Input::Persisted { .. } => "persisted",
        Input::Peer { .. } => "peer",
        Input::Undelivered { .. } => "undelivered",
        Input::PersistFailed { .. } => "persist failed",
        Input::Gossip { .. } => "gossip",
        Input::GossipUnreachable { .. } => "gossip unreachable",
        Input::Shutdown => "shutdown",
    }
}

/// The keyring file: a JSON array of base64 keys, the primary first (as Consul's
/// `local.keyring`).
fn keyring_json(keys: &[String]) -> Vec<u8> {
    serde_json::to_vec(keys).expect("strings serialize")
}

fn log_event(event: &Event) -> Result<(), HostError> {
    match event {
        Event::BecameLeader { term } => tracing::info!(term = term.0, "cluster leadership acquired"),
        Event::Applied { index } => tracing::trace!(index = index.0, "applied"),
        Event::CheckChanged { check, status } => {
            tracing::info!(check = %check, status = status.as_str(), "check status changed")
        }
        Event::ServiceDeregistered { service_id, reason } => {
            tracing::warn!(service = %service_id, %reason, "service deregistered")
        }
        Event::Member { pool, name, change } => {
            tracing::info!(?pool, member = %name, ?change, "member changed")
        }
        Event::GossipDropped { .. } => {}
        Event::Stopped => tracing::info!("node stopped"),
        Event::Failed { reason } => return Err(HostError::NodeFailed(reason.clone())),
    }
    Ok(())
}
