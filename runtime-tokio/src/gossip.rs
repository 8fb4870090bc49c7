//! The gossip ports: UDP datagrams and TCP streams for the LAN (8301) and WAN (8302)
//! pools. A stream carries one length-prefixed frame per connection (push-pull).
//!
//! Owns the sockets, on the server-port runtime so request floods never delay probes and
//! acks. Bytes go to the node undecoded: decoding, decryption and refusing garbage happen in
//! core, where they are counted. Decides nothing about what the bytes mean.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use muster_core::gossip::wire::MAX_STREAM;
use muster_core::io::Pool;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use crate::rpc::{runtime, Delivery};

/// How long a stream may take to connect, or to deliver its frame.
const STREAM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted stream may take to send its frame's length.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Sends on one pool's sockets.
pub struct GossipPort {
    pool: Pool,
    udp: std::net::UdpSocket,
    events: mpsc::UnboundedSender<Delivery>,
}

/// A pool's sockets, bound but not yet read (binding comes first so a lone agent can
/// decide to run without gossip when its ports are taken).
pub struct Bound {
    udp: std::net::UdpSocket,
    tcp: std::net::TcpListener,
}

/// Binds UDP and TCP on `addr` (the same port for both).
pub fn bind(addr: SocketAddr) -> std::io::Result<Bound> {
    let udp = std::net::UdpSocket::bind(addr)?;
    let tcp = std::net::TcpListener::bind(udp.local_addr()?)?;
    udp.set_nonblocking(true)?;
    tcp.set_nonblocking(true)?;
    Ok(Bound { udp, tcp })
}

impl Bound {
    /// Starts reading both sockets; what arrives goes to `events`.
    pub fn serve(self, pool: Pool, events: mpsc::UnboundedSender<Delivery>) -> std::io::Result<GossipPort> {
        let rt = runtime();
        let (reader, tcp) = {
            let _entered = rt.enter();
            (UdpSocket::from_std(self.udp.try_clone()?)?, TcpListener::from_std(self.tcp)?)
        };
        rt.spawn(read_datagrams(pool, Arc::new(reader), events.clone()));
        rt.spawn(accept_streams(pool, tcp, events.clone()));
        Ok(GossipPort { pool, udp: self.udp, events })
    }
}

impl GossipPort {
    /// Sends a datagram (best effort: gossip tolerates loss), or a frame over a new stream
    /// whose failure comes back as `GossipUnreachable`.
    pub fn send(&self, to: String, bytes: Vec<u8>, stream: bool, tag: Option<u64>) {
        if !stream {
            match to.parse::<SocketAddr>() {
                Ok(addr) => {
                    if let Err(e) = self.udp.send_to(&bytes, addr) {
                        tracing::debug!(%to, error = %e, "gossip datagram not sent");
                    }
                }
                Err(_) => tracing::debug!(%to, "gossip datagram to an unparsable address"),
            }
            return;
        }
        let (pool, events) = (self.pool, self.events.clone());
        runtime().spawn(async move {
            if let Err(e) = send_stream(&to, &bytes).await {
                tracing::debug!(%to, error = %e, "gossip stream failed");
                let _ = events.send(Delivery::GossipUnreachable { pool, to, tag });
            }
        });
    }
}

async fn send_stream(to: &str, bytes: &[u8]) -> std::io::Result<()> {
    let work = async {
        let mut s = TcpStream::connect(to).await?;
        let len = u32::try_from(bytes.len()).map_err(|_| std::io::Error::other("frame too large"))?;
        s.write_all(&len.to_be_bytes()).await?;
        s.write_all(bytes).await?;
        s.shutdown().await
    };
    tokio::time::timeout(STREAM_TIMEOUT, work).await.map_err(|_| std::io::Error::other("timed out"))?
}

async fn read_datagrams(pool: Pool, udp: Arc<UdpSocket>, events: mpsc::UnboundedSender<Delivery>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, from)) = udp.recv_from(&mut buf).await else { continue };
        let d = Delivery::Gossip { pool, from: from.to_string(), bytes: buf[..n].to_vec(), stream: false };
        if events.send(d).is_err() {
            return;
        }
    }
}

async fn accept_streams(pool: Pool, listener: TcpListener, events: mpsc::UnboundedSender<Delivery>) {
    loop {
        let Ok((stream, from)) = listener.accept().await else { continue };
        let events = events.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(STREAM_TIMEOUT, read_frame(stream)).await {
                Ok(Ok(bytes)) => {
                    let _ =
                        events.send(Delivery::Gossip { pool, from: from.to_string(), bytes, stream: true });
                }
                Ok(Err(e)) => tracing::debug!(%from, error = %e, "gossip stream refused"),
                Err(_) => tracing::debug!(%from, "gossip stream timed out"),
            }
        });
    }
}

/// One frame: a 4-byte big-endian length (within `HANDSHAKE_TIMEOUT`), then that many bytes
/// (at most `MAX_STREAM`). The buffer grows with what arrives: a length is only a claim, and
/// reserving it up front let 100 stalled streams claiming 64 MiB each reserve 7 GB.
async fn read_frame(mut s: TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, s.read_exact(&mut len))
        .await
        .map_err(|_| std::io::Error::other("no frame length within the handshake timeout"))??;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_STREAM {
        return Err(std::io::Error::other(format!("frame of {len} bytes exceeds {MAX_STREAM}")));
    }
    let mut bytes = Vec::new();
    s.take(len as u64).read_to_end(&mut bytes).await?;
    if bytes.len() < len {
        return Err(std::io::Error::other(format!("stream ended after {} of {len} bytes", bytes.len())));
    }
    Ok(bytes)
}
