//! The server port: TCP connections carrying `core::rpc` frames between servers, and from
//! client agents to servers.
//!
//! Owns the sockets. Each peer gets one outbound connection, written by its own task from a
//! queue; when a connection cannot be made, everything queued for it goes back to the node
//! as undelivered (it never left, so forwarded work may be retried elsewhere), and the task
//! retries with backoff. What comes back on an outbound connection (answers to a client
//! agent's calls) is read too. Inbound connections are read by a task each and their
//! messages handed to the node; a client agent has no server port to dial back, so messages
//! for it are written on the connection it opened. Garbage, a bad preamble or an oversized
//! frame closes just that connection. All of it runs on a thread and runtime of its own, so a flood of HTTP
//! requests on the agent's runtime never delays the heartbeats and acknowledgements that
//! keep a leader in office. Decides nothing about what the messages mean.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use muster_core::io::Pool;
use muster_core::rpc::{self, Decoder, PeerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::limits::{LogThrottle, OpenConns, StreamLimits};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What the transport tells the host loop.
pub enum Delivery {
    Received {
        from: String,
        msg: PeerMessage,
    },
    Undelivered {
        to: String,
        msg: PeerMessage,
    },
    /// Gossip bytes from `from` (a datagram, or one stream frame).
    Gossip {
        pool: Pool,
        from: String,
        bytes: Vec<u8>,
        stream: bool,
    },
    GossipUnreachable {
        pool: Pool,
        to: String,
        tag: Option<u64>,
    },
}

type Queue = mpsc::UnboundedSender<PeerMessage>;

/// Writers of the client agents connected to this server, by the name their preamble gave.
#[derive(Clone, Default)]
pub struct Clients(Arc<Mutex<HashMap<String, Queue>>>);

impl Clients {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queue>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Outbound connections, one queue and writer task per peer.
pub struct Transport {
    me: String,
    peers: HashMap<String, Queue>,
    clients: Clients,
    events: mpsc::UnboundedSender<Delivery>,
}

impl Transport {
    pub fn new(me: String, events: mpsc::UnboundedSender<Delivery>) -> Transport {
        Transport { me, peers: HashMap::new(), clients: Clients::default(), events }
    }

    /// The client connections a listener registers, so answers can be written back on them.
    pub fn clients(&self) -> Clients {
        self.clients.clone()
    }

    /// Queues `msg` for `to`, starting its writer on first use.
    pub fn send(&mut self, to: String, msg: PeerMessage) {
        if rpc::is_client_id(&to) {
            // Its connection is gone: the client times the call out and asks elsewhere.
            if let Some(tx) = self.clients.lock().get(&to) {
                let _ = tx.send(msg);
            }
            return;
        }
        let tx = self.peers.entry(to.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            runtime().spawn(write_loop(self.me.clone(), to, rx, self.events.clone()));
            tx
        });
        let _ = tx.send(msg);
    }
}

async fn write_loop(
    me: String,
    to: String,
    mut rx: mpsc::UnboundedReceiver<PeerMessage>,
    events: mpsc::UnboundedSender<Delivery>,
) {
    let mut backoff = Duration::from_millis(50);
    // Wait for something to send before connecting, so idle peers cost nothing.
    let Some(mut first) = rx.recv().await else { return };
    loop {
        let conn = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&to)).await;
        let stream = match conn {
            Ok(Ok(s)) => s,
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".into(),
                };
                tracing::debug!(peer = %to, %reason, "server connection failed");
                let _ = events.send(Delivery::Undelivered { to: to.clone(), msg: first });
                while let Ok(msg) = rx.try_recv() {
                    let _ = events.send(Delivery::Undelivered { to: to.clone(), msg });
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                let Some(next) = rx.recv().await else { return };
                first = next;
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let _ = stream.set_nodelay(true);
        let (reader, mut stream) = stream.into_split();
        // Reads answers; it ends when the server closes the connection (it died or
        // restarted), and then so does this one, so the next message connects afresh.
        let mut answers = tokio::spawn(read_answers(reader, to.clone(), events.clone()));
        let mut buf = rpc::preamble(&me);
        buf.extend(rpc::encode(&first));
        loop {
            // Batch whatever else is queued into one write.
            while let Ok(msg) = rx.try_recv() {
                buf.extend(rpc::encode(&msg));
            }
            if let Err(e) = stream.write_all(&buf).await {
                tracing::debug!(peer = %to, error = %e, "server connection lost");
                break;
            }
            buf.clear();
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(msg) => buf.extend(rpc::encode(&msg)),
                    None => {
                        answers.abort();
                        return;
                    }
                },
                _ = &mut answers => {
                    tracing::debug!(peer = %to, "server closed the connection");
                    break;
                }
            }
        }
        answers.abort();
        // What was written may or may not have arrived; only later messages are retried.
        let Some(next) = rx.recv().await else { return };
        first = next;
    }
}

/// The server port's own runtime (shared by the gossip ports), started on first use.
pub(crate) fn runtime() -> &'static Handle {
    static RT: OnceLock<Handle> = OnceLock::new();
    RT.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the server-port runtime starts");
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("muster-rpc".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .expect("the server-port thread starts");
        handle
    })
}

/// Reads what a server writes back on a connection this agent opened to it.
async fn read_answers(mut reader: OwnedReadHalf, from: String, events: mpsc::UnboundedSender<Delivery>) {
    let mut decoder = Decoder::identified(from.clone());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_message() {
                Ok(Some(msg)) => {
                    if events.send(Delivery::Received { from: from.clone(), msg }).is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(reason) => {
                    tracing::debug!(peer = %from, %reason, "bad frame on a connection to a server");
                    return;
                }
            }
        }
    }
}

/// Serves a bound server port: accepts connections within `limits` (per address, and the
/// time a connection has to send its preamble, so silent ones hold nothing for long) and
/// hands their messages to the host.
pub fn listen(
    listener: std::net::TcpListener,
    events: mpsc::UnboundedSender<Delivery>,
    clients: Clients,
    limits: StreamLimits,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = runtime();
    let listener = {
        let _entered = rt.enter();
        TcpListener::from_std(listener)?
    };
    rt.spawn(serve(listener, events, clients, limits));
    Ok(())
}

async fn serve(
    listener: TcpListener,
    events: mpsc::UnboundedSender<Delivery>,
    clients: Clients,
    limits: StreamLimits,
) {
    let open = OpenConns::default();
    let mut refused_log = LogThrottle::default();
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let Some(slot) = open.take(peer.ip(), limits.conns_per_client) else {
            if let Some(suppressed) = refused_log.allow() {
                let limit = limits.conns_per_client;
                tracing::warn!(%peer, limit, suppressed, "too many server-port connections from one address; closing the new one");
            }
            continue;
        };
        let events = events.clone();
        let clients = clients.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let _ = stream.set_nodelay(true);
            let (reader, writer) = stream.into_split();
            let mut inbound = Inbound { writer: Some(writer), registered: None, clients };
            if let Err(reason) = inbound.read_loop(reader, events, limits.handshake).await {
                tracing::debug!(%peer, %reason, "server connection closed");
            }
        });
    }
}

/// One accepted connection; a client agent's also carries messages back to it.
struct Inbound {
    writer: Option<OwnedWriteHalf>,
    /// The client name and queue registered for this connection, removed when it closes.
    registered: Option<(String, Queue)>,
    clients: Clients,
}

impl Inbound {
    async fn read_loop(
        &mut self,
        mut reader: OwnedReadHalf,
        events: mpsc::UnboundedSender<Delivery>,
        handshake: Duration,
    ) -> Result<(), String> {
        let mut decoder = Decoder::default();
        let mut buf = vec![0u8; 64 * 1024];
        let handshake_by = tokio::time::Instant::now() + handshake;
        loop {
            let read = reader.read(&mut buf);
            let n = if decoder.from().is_some() {
                read.await
            } else {
                let late = || "no preamble within the handshake timeout".to_string();
                tokio::time::timeout_at(handshake_by, read).await.map_err(|_| late())?
            }
            .map_err(|e| e.to_string())?;
            if n == 0 {
                return Ok(());
            }
            decoder.push(&buf[..n]);
            while let Some(msg) = decoder.next_message().map_err(|e| e.to_string())? {
                let from = decoder.from().expect("a message follows the preamble").to_string();
                self.register(&from);
                if events.send(Delivery::Received { from, msg }).is_err() {
                    return Ok(());
                }
            }
        }
    }

    /// A client agent's first message: messages for it from now on go out on this
    /// connection (the newest connection of a client wins).
    fn register(&mut self, from: &str) {
        if !rpc::is_client_id(from) {
            return;
        }
        let Some(writer) = self.writer.take() else { return };
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(write_back(writer, rx));
        self.clients.lock().insert(from.to_string(), tx.clone());
        self.registered = Some((from.to_string(), tx));
    }
}

impl Drop for Inbound {
    fn drop(&mut self) {
        if let Some((name, tx)) = self.registered.take() {
            let mut clients = self.clients.lock();
            if clients.get(&name).is_some_and(|t| t.same_channel(&tx)) {
                clients.remove(&name);
            }
        }
    }
}

/// Writes messages for a client agent on the connection it opened, batching what is queued.
async fn write_back(mut writer: OwnedWriteHalf, mut rx: mpsc::UnboundedReceiver<PeerMessage>) {
    let mut buf = Vec::new();
    while let Some(msg) = rx.recv().await {
        buf.extend(rpc::encode(&msg));
        while let Ok(msg) = rx.try_recv() {
            buf.extend(rpc::encode(&msg));
        }
        if writer.write_all(&buf).await.is_err() {
            return;
        }
        buf.clear();
    }
}
