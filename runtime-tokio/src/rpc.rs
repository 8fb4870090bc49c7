//! The server port: TCP connections carrying `core::rpc` frames between servers.
//!
//! Owns the sockets. Each peer gets one outbound connection, written by its own task from a
//! queue; when a connection cannot be made, everything queued for it goes back to the node
//! as undelivered (it never left, so forwarded work may be retried elsewhere), and the task
//! retries with backoff. Inbound connections are read by a task each and their messages
//! handed to the node; garbage, a bad preamble or an oversized frame closes just that
//! connection. All of it runs on a thread and runtime of its own, so a flood of HTTP
//! requests on the agent's runtime never delays the heartbeats and acknowledgements that
//! keep a leader in office. Decides nothing about what the messages mean.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use muster_core::io::Pool;
use muster_core::rpc::{self, Decoder, PeerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

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

/// Outbound connections, one queue and writer task per peer.
pub struct Transport {
    me: String,
    peers: HashMap<String, mpsc::UnboundedSender<PeerMessage>>,
    events: mpsc::UnboundedSender<Delivery>,
}

impl Transport {
    pub fn new(me: String, events: mpsc::UnboundedSender<Delivery>) -> Transport {
        Transport { me, peers: HashMap::new(), events }
    }

    /// Queues `msg` for `to`, starting its writer on first use.
    pub fn send(&mut self, to: String, msg: PeerMessage) {
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
        let mut stream = match conn {
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
            match rx.recv().await {
                Some(msg) => buf.extend(rpc::encode(&msg)),
                None => return,
            }
        }
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

/// Serves a bound server port: accepts connections and hands their messages to the host.
pub fn listen(
    listener: std::net::TcpListener,
    events: mpsc::UnboundedSender<Delivery>,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let rt = runtime();
    let listener = {
        let _entered = rt.enter();
        TcpListener::from_std(listener)?
    };
    rt.spawn(serve(listener, events));
    Ok(())
}

async fn serve(listener: TcpListener, events: mpsc::UnboundedSender<Delivery>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else { continue };
        let events = events.clone();
        tokio::spawn(async move {
            if let Err(reason) = read_loop(stream, events).await {
                tracing::debug!(%peer, %reason, "server connection closed");
            }
        });
    }
}

async fn read_loop(mut stream: TcpStream, events: mpsc::UnboundedSender<Delivery>) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    let mut decoder = Decoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(());
        }
        decoder.push(&buf[..n]);
        while let Some(msg) = decoder.next_message().map_err(|e| e.to_string())? {
            let from = decoder.from().expect("a message follows the preamble").to_string();
            if events.send(Delivery::Received { from, msg }).is_err() {
                return Ok(());
            }
        }
    }
}
