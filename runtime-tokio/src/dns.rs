//! DNS on the wire: decodes queries with hickory-proto, asks the node, encodes its answer.
//!
//! Owns the transports (UDP datagrams, TCP with 2-byte length prefixes), the header rules
//! (FORMERR for malformed queries, NOTIMP for other opcodes, REFUSED for classes other than
//! IN/ANY, silence for responses and runts), the EDNS echo, and fitting an answer into the
//! client's size by dropping records from the end and setting TC. Never decides what a name
//! means or which records answer it: that is `muster_core::api::dns`, reached through
//! `ApiRequest::Dns`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::error::{ProtoError, ProtoErrorKind};
use hickory_proto::op::message::emit_message_parts;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{DNSClass, Name, RData as WireData, Record, RecordType as WireType};
use hickory_proto::serialize::binary::BinEncoder;
use muster_core::api::dns::{DnsQuestion, DnsRecord, DnsResponse, RData, Rcode, RecordType};
use muster_core::api::{ApiRequest, ApiResponse, Body};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

use crate::host::NodeHandle;

/// Every DNS message starts with a 12-byte header; anything shorter is not worth answering.
const HEADER_LEN: usize = 12;
/// The UDP size every client accepts (RFC 1035), and the least EDNS may advertise.
const PLAIN_UDP_SIZE: u16 = 512;
/// The most we advertise or send over UDP with EDNS: bigger datagrams tend to fragment.
const EDNS_UDP_CAP: u16 = 4096;
/// A TCP connection that brings no complete query for this long is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// A failing `accept` (out of descriptors, say) fails again at once; pausing avoids a spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Answers DNS over UDP until a query finds the node gone. Each datagram gets its own task,
/// so one slow node call never holds up the others.
pub async fn serve_udp(socket: UdpSocket, node: NodeHandle) {
    let socket = Arc::new(socket);
    let gone = Arc::new(Notify::new());
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (len, peer) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS UDP receive failed");
                    continue;
                }
            },
            () = gone.notified() => return,
        };
        let packet = buf[..len].to_vec();
        let (socket, node, gone) = (socket.clone(), node.clone(), gone.clone());
        tokio::spawn(async move {
            let outcome = answer(&packet, true, &node).await;
            if let Some(reply) = outcome.reply {
                if let Err(e) = socket.send_to(&reply, peer).await {
                    tracing::debug!(%peer, error = %e, "DNS UDP send failed");
                }
            }
            if outcome.node_gone {
                gone.notify_one();
            }
        });
    }
}

/// Answers DNS over TCP until a query finds the node gone: one task per connection, queries
/// answered in order, the connection closed after `TCP_IDLE` without a query.
pub async fn serve_tcp(listener: TcpListener, node: NodeHandle) {
    let gone = Arc::new(Notify::new());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "DNS TCP accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = gone.notified() => return,
        };
        let (node, gone) = (node.clone(), gone.clone());
        tokio::spawn(async move {
            if serve_connection(stream, &node).await {
                gone.notify_one();
            }
        });
    }
}

/// Serves one TCP connection until EOF, a bad frame, an IO error, idleness or the node going
/// away; returns whether the node went away.
async fn serve_connection(mut stream: TcpStream, node: &NodeHandle) -> bool {
    loop {
        let packet = match tokio::time::timeout(TCP_IDLE, read_frame(&mut stream)).await {
            Ok(Ok(packet)) => packet,
            Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => return false,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "DNS TCP connection closed");
                return false;
            }
            Err(_) => return false,
        };
        let outcome = answer(&packet, false, node).await;
        let sent = match &outcome.reply {
            Some(reply) => {
                matches!(tokio::time::timeout(TCP_IDLE, write_frame(&mut stream, reply)).await, Ok(Ok(())))
            }
            None => true,
        };
        if outcome.node_gone || !sent {
            return outcome.node_gone;
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = usize::from(stream.read_u16().await?);
    if len < HEADER_LEN {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{len}-byte DNS message")));
    }
    let mut packet = vec![0; len];
    stream.read_exact(&mut packet).await?;
    Ok(packet)
}

async fn write_frame(stream: &mut TcpStream, reply: &[u8]) -> io::Result<()> {
    let len = u16::try_from(reply.len()).map_err(|_| io::Error::other("DNS reply over 64 KiB"))?;
    let mut frame = Vec::with_capacity(reply.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(reply);
    stream.write_all(&frame).await
}

/// The reply to one DNS message received over UDP (`udp`) or TCP: `None` when it deserves
/// silence (a response, or fewer bytes than a header).
pub async fn answer_packet(packet: &[u8], udp: bool, node: &NodeHandle) -> Option<Vec<u8>> {
    answer(packet, udp, node).await.reply
}

/// What became of one packet: what to send back, and whether the node turned out to be gone
/// (it is still answered, with SERVFAIL, before the server stops).
struct Outcome {
    reply: Option<Vec<u8>>,
    node_gone: bool,
}

async fn answer(packet: &[u8], udp: bool, node: &NodeHandle) -> Outcome {
    let done = |reply| Outcome { reply, node_gone: false };
    let req = match Message::from_vec(packet) {
        Ok(req) => req,
        Err(e) => {
            tracing::debug!(error = %e, len = packet.len(), "undecodable DNS message");
            return done(undecodable(packet));
        }
    };
    if req.message_type() == MessageType::Response {
        return done(None);
    }
    let limit = size_limit(&req, udp);
    let question = match question(&req, udp) {
        Ok(q) => q,
        Err(rcode) => return done(error_reply(&req, rcode, limit)),
    };
    match node.call(ApiRequest::Dns(question)).await {
        Ok(ApiResponse { body: Body::Dns(resp), .. }) => done(render(&req, &resp, limit)),
        Ok(other) => {
            tracing::debug!(status = other.status, body = ?other.body, "DNS query got no DNS answer");
            done(error_reply(&req, ResponseCode::ServFail, limit))
        }
        Err(_) => Outcome { reply: error_reply(&req, ResponseCode::ServFail, limit), node_gone: true },
    }
}

/// The reply to a message hickory cannot decode, built from its raw header, since hickory has
/// no way to represent the unassigned opcodes that deserve NOTIMP rather than FORMERR.
fn undecodable(packet: &[u8]) -> Option<Vec<u8>> {
    const QR: u8 = 0x80;
    const OPCODE: u8 = 0x78;
    const RD: u8 = 0x01;
    let head = packet.get(..HEADER_LEN)?;
    if head[2] & QR != 0 {
        return None;
    }
    let rcode = if head[2] & OPCODE == 0 { ResponseCode::FormErr } else { ResponseCode::NotImp };
    let mut reply = vec![0; HEADER_LEN];
    reply[..2].copy_from_slice(&head[..2]);
    reply[2] = QR | (head[2] & (OPCODE | RD));
    reply[3] = rcode.low();
    Some(reply)
}

/// The question for the core, or the rcode that refuses the message.
fn question(req: &Message, udp: bool) -> Result<DnsQuestion, ResponseCode> {
    if req.op_code() != OpCode::Query {
        return Err(ResponseCode::NotImp);
    }
    let [q] = req.queries() else {
        return Err(ResponseCode::FormErr);
    };
    if !matches!(q.query_class(), DNSClass::IN | DNSClass::ANY) {
        // Chaos-class probes (`version.bind CH TXT`) ask about a zone we do not serve.
        return Err(ResponseCode::Refused);
    }
    Ok(DnsQuestion {
        name: q.name().to_ascii(),
        qtype: record_type(q.query_type()),
        plain_udp: udp && req.extensions().is_none(),
    })
}

fn record_type(t: WireType) -> RecordType {
    match t {
        WireType::A => RecordType::A,
        WireType::AAAA => RecordType::Aaaa,
        WireType::SRV => RecordType::Srv,
        WireType::TXT => RecordType::Txt,
        WireType::ANY => RecordType::Any,
        WireType::SOA => RecordType::Soa,
        WireType::NS => RecordType::Ns,
        WireType::PTR => RecordType::Ptr,
        WireType::CNAME => RecordType::Cname,
        WireType::AXFR => RecordType::Axfr,
        other => RecordType::Other(other.into()),
    }
}

fn response_code(rcode: Rcode) -> ResponseCode {
    match rcode {
        Rcode::NoError => ResponseCode::NoError,
        Rcode::FormErr => ResponseCode::FormErr,
        Rcode::ServFail => ResponseCode::ServFail,
        Rcode::NxDomain => ResponseCode::NXDomain,
        Rcode::NotImp => ResponseCode::NotImp,
        Rcode::Refused => ResponseCode::Refused,
    }
}

/// The UDP size the client advertised, kept within what we are willing to send.
fn advertised(edns: &Edns) -> u16 {
    edns.max_payload().clamp(PLAIN_UDP_SIZE, EDNS_UDP_CAP)
}

fn size_limit(req: &Message, udp: bool) -> u16 {
    match (udp, req.extensions()) {
        (false, _) => u16::MAX,
        (true, None) => PLAIN_UDP_SIZE,
        (true, Some(edns)) => advertised(edns),
    }
}

/// Encodes the core's answer. A record hickory cannot carry (a malformed name from the
/// catalog) turns the whole answer into SERVFAIL rather than a partial one.
fn render(req: &Message, resp: &DnsResponse, limit: u16) -> Option<Vec<u8>> {
    let sections = [&resp.answers, &resp.authority, &resp.additional]
        .map(|section| section.iter().map(|r| record(req, r)).collect::<Result<Vec<_>, _>>());
    let encoded = match sections {
        [Ok(answers), Ok(authority), Ok(additional)] => {
            Reply::new(req, response_code(resp.rcode), [answers, authority, additional]).encode(limit)
        }
        [Err(e), ..] | [_, Err(e), _] | [.., Err(e)] => Err(e),
    };
    encoded
        .map_err(|e| tracing::debug!(error = %e, answer = ?resp, "DNS answer not encodable; SERVFAIL"))
        .ok()
        .or_else(|| error_reply(req, ResponseCode::ServFail, limit))
}

fn error_reply(req: &Message, rcode: ResponseCode, limit: u16) -> Option<Vec<u8>> {
    Reply::new(req, rcode, Default::default())
        .encode(limit)
        .map_err(|e| tracing::debug!(error = %e, "DNS error reply not encodable"))
        .ok()
}

fn record(req: &Message, r: &DnsRecord) -> Result<Record, ProtoError> {
    let name = |s: &str| -> Result<Name, ProtoError> {
        // The core names answers with the asked name verbatim; reusing the decoded name keeps
        // its exact bytes, which a round trip through text escapes would not always do.
        if let Some(q) = req.queries().first().filter(|q| q.name().to_ascii() == s) {
            return Ok(q.name().clone());
        }
        let mut n = Name::from_ascii(s)?;
        n.set_fqdn(true);
        Ok(n)
    };
    let data = match &r.data {
        RData::A(ip) => WireData::A(A(*ip)),
        RData::Aaaa(ip) => WireData::AAAA(AAAA(*ip)),
        RData::Srv { priority, weight, port, target } => {
            WireData::SRV(SRV::new(*priority, *weight, *port, name(target)?))
        }
        RData::Txt(texts) => WireData::TXT(TXT::from_bytes(txt_strings(texts))),
        // hickory types the SOA timers as i32; the 32 bits on the wire are the same.
        RData::Soa { mname, rname, serial, refresh, retry, expire, minimum } => WireData::SOA(SOA::new(
            name(mname)?,
            name(rname)?,
            *serial,
            *refresh as i32,
            *retry as i32,
            *expire as i32,
            *minimum,
        )),
        RData::Ns(n) => WireData::NS(NS(name(n)?)),
        RData::Cname(n) => WireData::CNAME(CNAME(name(n)?)),
        RData::Ptr(n) => WireData::PTR(PTR(name(n)?)),
    };
    Ok(Record::from_rdata(name(&r.name)?, r.ttl, data))
}

/// A TXT character-string holds at most 255 bytes, and node metadata values may be longer:
/// those continue in the next string, which readers of multi-string TXT records join.
fn txt_strings(texts: &[String]) -> Vec<&[u8]> {
    texts
        .iter()
        .flat_map(|t| match t.as_bytes() {
            [] => vec![&[][..]],
            bytes => bytes.chunks(255).collect(),
        })
        .collect()
}

/// A response before encoding: the request's header turned around, the question echoed,
/// records in wire order (answer, authority, additional) and the EDNS echo.
struct Reply {
    header: Header,
    queries: Vec<Query>,
    sections: [Vec<Record>; 3],
    edns: Option<Edns>,
}

impl Reply {
    fn new(req: &Message, rcode: ResponseCode, sections: [Vec<Record>; 3]) -> Reply {
        let mut header = Header::response_from_request(req.header());
        header.set_authoritative(true).set_response_code(rcode);
        // With several questions (a FORMERR) there is no single question to echo.
        let queries = match req.queries() {
            [q] => vec![q.clone()],
            _ => vec![],
        };
        let edns = req.extensions().as_ref().map(|asked| {
            let mut edns = Edns::new();
            edns.set_max_payload(advertised(asked));
            edns
        });
        Reply { header, queries, sections, edns }
    }

    /// Encodes within `limit` bytes. When everything does not fit, records go from the end of
    /// the wire order (additional first, then authority, then answers from the last) and TC is
    /// set: the encoded size grows with the number of records kept, so a binary search finds
    /// the most that fit.
    fn encode(mut self, limit: u16) -> Result<Vec<u8>, ProtoError> {
        let total = self.sections.iter().map(Vec::len).sum();
        if let Some(bytes) = self.emit(total, limit)? {
            return Ok(bytes);
        }
        let (mut fits, mut overflows) = (0, total);
        while overflows - fits > 1 {
            let mid = (fits + overflows) / 2;
            match self.emit(mid, limit)? {
                Some(_) => fits = mid,
                None => overflows = mid,
            }
        }
        self.header.set_truncated(true);
        self.emit(fits, limit)?.ok_or_else(|| ProtoError::from("the question alone exceeds the size limit"))
    }

    /// The message with only the first `keep` records (in wire order), or `None` if it would
    /// exceed `limit`. The encoder never writes past `limit`, which also keeps hickory's name
    /// compression away from offsets it cannot point to.
    fn emit(&self, keep: usize, limit: u16) -> Result<Option<Vec<u8>>, ProtoError> {
        let mut left = keep;
        let [answers, authority, additional] = self.sections.each_ref().map(|s| {
            let n = left.min(s.len());
            left -= n;
            &s[..n]
        });
        let mut buf = Vec::with_capacity(usize::from(PLAIN_UDP_SIZE));
        let mut encoder = BinEncoder::new(&mut buf);
        encoder.set_max_size(limit);
        let written = emit_message_parts(
            &self.header,
            &mut self.queries.iter(),
            &mut answers.iter(),
            &mut authority.iter(),
            &mut additional.iter(),
            self.edns.as_ref(),
            &[],
            &mut encoder,
        );
        match written {
            // hickory quietly stops at the first record that does not fit; the counts tell.
            Ok(h) => {
                let records = usize::from(h.answer_count())
                    + usize::from(h.name_server_count())
                    + usize::from(h.additional_count());
                Ok((records == keep + usize::from(self.edns.is_some())).then_some(buf))
            }
            Err(e) if matches!(e.kind(), ProtoErrorKind::MaxBufferSizeExceeded(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {

    use std::net::SocketAddr;

    use muster_core::agent::NodeInfo;
    use muster_core::api::defs::{CatalogRegisterDef, ServiceDef};
    use muster_core::api::dns::DnsConfig;
    use muster_core::node::{Config, Node};

    use super::*;
    use crate::host::Host;

    fn config() -> Config {
        Config {
            // Without the plain-UDP cap, the byte limit alone decides what fits.
            dns: DnsConfig { udp_answer_limit: 0, ..DnsConfig::default() },
            ..Config::defaults(NodeInfo::new("dev", "127.0.0.1", "dc1"))
        }
    }

    const BIG: usize = 40;

    /// A running node with `db` on one node and `big` on `BIG` nodes, served on loopback.
    struct Fixture {
        node: NodeHandle,
        udp: SocketAddr,
        tcp: SocketAddr,
    }

    async fn start() -> Fixture {
        let (host, node) = Host::new(
            Node::new(config(), [7; 32]).unwrap(),
            std::time::Instant::now(),
            crate::host::Storage::Memory,
            "127.0.0.1:8300".into(),
        );
        tokio::spawn(host.run());
        register(&node, "n-db", "10.0.0.1", "db", 5432).await;
        for i in 1..=BIG {
            register(&node, &format!("n{i}"), &format!("10.1.0.{i}"), "big", 8000 + i as u16).await;
        }
        let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fixture =
            Fixture { node: node.clone(), udp: udp.local_addr().unwrap(), tcp: tcp.local_addr().unwrap() };
        tokio::spawn(serve_udp(udp, node.clone()));
        tokio::spawn(serve_tcp(tcp, node));
        fixture
    }

    async fn register(node: &NodeHandle, host: &str, address: &str, service: &str, port: u16) {
        let def = CatalogRegisterDef {
            node: host.into(),
            address: address.into(),
            service: Some(ServiceDef { name: service.into(), port, ..Default::default() }),
            ..Default::default()
        };
        let r = node.call(ApiRequest::CatalogRegister(Box::new(def))).await.unwrap();
        assert_eq!(r.status, 200, "{r:?}");
    }

    fn query(id: u16, name: &str, qtype: WireType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(id)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(size) = edns {
            let mut e = Edns::new();
            e.set_max_payload(size);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    async fn recv(socket: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0; 64 * 1024];
        let len = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf)).await.unwrap().unwrap();
        buf.truncate(len);
        buf
    }

    /// Sends one datagram from a fresh socket; the raw reply.
    async fn udp_raw(server: SocketAddr, packet: &[u8]) -> Vec<u8> {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(server).await.unwrap();
        socket.send(packet).await.unwrap();
        recv(&socket).await
    }

    async fn udp_ask(server: SocketAddr, packet: &[u8]) -> Message {
        Message::from_vec(&udp_raw(server, packet).await).unwrap()
    }

    async fn ask(node: &NodeHandle, packet: &[u8]) -> Message {
        Message::from_vec(&answer_packet(packet, true, node).await.expect("a reply")).unwrap()
    }

    fn targets(m: &Message) -> Vec<String> {
        m.answers()
            .iter()
            .map(|r| match r.data() {
                Some(WireData::SRV(srv)) => srv.target().to_ascii(),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_srv_and_nxdomain_over_udp() {
        let f = start().await;
        let a = udp_ask(f.udp, &query(1, "DB.Service.Consul.", WireType::A, None)).await;
        assert_eq!(
            (a.id(), a.message_type(), a.response_code()),
            (1, MessageType::Response, ResponseCode::NoError)
        );
        assert!(a.authoritative() && a.recursion_desired() && !a.recursion_available() && !a.truncated());
        assert_eq!(a.queries()[0].name().to_ascii(), "DB.Service.Consul.", "question echoed as asked");
        assert_eq!(a.answers().len(), 1);
        assert_eq!(a.answers()[0].name().to_ascii(), "DB.Service.Consul.");
        assert_eq!(a.answers()[0].data(), Some(&WireData::A(A("10.0.0.1".parse().unwrap()))));

        let srv = udp_ask(f.udp, &query(2, "db.service.consul.", WireType::SRV, None)).await;
        assert_eq!(targets(&srv), ["n-db.node.dc1.consul."]);
        let Some(WireData::SRV(s)) = srv.answers()[0].data() else { panic!() };
        assert_eq!((s.priority(), s.weight(), s.port()), (1, 1, 5432));
        assert_eq!(srv.additionals().len(), 1);
        assert_eq!(srv.additionals()[0].name().to_ascii(), "n-db.node.dc1.consul.");
        assert_eq!(srv.additionals()[0].data(), Some(&WireData::A(A("10.0.0.1".parse().unwrap()))));

        let nx = udp_ask(f.udp, &query(3, "nope.service.consul.", WireType::A, None)).await;
        assert_eq!(nx.response_code(), ResponseCode::NXDomain);
        assert!(nx.answers().is_empty());
        let Some(WireData::SOA(soa)) = nx.name_servers()[0].data() else { panic!("{nx:?}") };
        assert_eq!(soa.mname().to_ascii(), "ns.consul.");
        assert_eq!(soa.rname().to_ascii(), "hostmaster.consul.");
    }

    #[tokio::test]
    async fn udp_answers_are_trimmed_to_the_clients_size_with_tc() {
        let f = start().await;
        let plain = udp_raw(f.udp, &query(4, "big.service.consul.", WireType::SRV, None)).await;
        assert!(plain.len() <= 512, "{} bytes", plain.len());
        let plain = Message::from_vec(&plain).unwrap();
        assert!(plain.truncated());
        assert!(plain.extensions().is_none());
        assert!(plain.additionals().is_empty(), "additional records go first");
        assert!((1..BIG).contains(&plain.answers().len()), "{}", plain.answers().len());

        let mid = udp_raw(f.udp, &query(5, "big.service.consul.", WireType::SRV, Some(2000))).await;
        assert!(mid.len() <= 2000);
        let mid = Message::from_vec(&mid).unwrap();
        assert!(mid.truncated());
        assert_eq!(mid.answers().len(), BIG, "answers survive while additional records are dropped");
        assert!((1..BIG).contains(&mid.additionals().len()), "{}", mid.additionals().len());
        assert_eq!(mid.extensions().as_ref().unwrap().max_payload(), 2000);
        assert!(mid.answers().len() > plain.answers().len(), "a larger EDNS size gives more records");

        let full = udp_ask(f.udp, &query(6, "big.service.consul.", WireType::SRV, Some(8192))).await;
        assert!(!full.truncated());
        assert_eq!((full.answers().len(), full.additionals().len()), (BIG, BIG));
        assert_eq!(full.extensions().as_ref().unwrap().max_payload(), 4096, "advertised size is capped");

        let tiny = udp_ask(f.udp, &query(7, "db.service.consul.", WireType::SRV, Some(100))).await;
        assert_eq!(tiny.extensions().as_ref().unwrap().max_payload(), 512, "advertised size is at least 512");
    }

    async fn tcp_recv(stream: &mut TcpStream) -> Message {
        let len = tokio::time::timeout(Duration::from_secs(5), stream.read_u16()).await.unwrap().unwrap();
        let mut buf = vec![0; usize::from(len)];
        stream.read_exact(&mut buf).await.unwrap();
        Message::from_vec(&buf).unwrap()
    }

    #[tokio::test]
    async fn tcp_serves_several_queries_per_connection() {
        let f = start().await;
        let mut stream = TcpStream::connect(f.tcp).await.unwrap();
        write_frame(&mut stream, &query(10, "big.service.consul.", WireType::SRV, None)).await.unwrap();
        write_frame(&mut stream, &query(11, "db.service.consul.", WireType::A, None)).await.unwrap();
        let big = tcp_recv(&mut stream).await;
        assert_eq!(big.id(), 10);
        assert!(!big.truncated());
        assert_eq!((big.answers().len(), big.additionals().len()), (BIG, BIG), "no 512-byte limit on TCP");
        let db = tcp_recv(&mut stream).await;
        assert_eq!((db.id(), db.answers().len()), (11, 1));

        let mut garbage = vec![0xff; 40];
        garbage[..3].copy_from_slice(&[0x12, 0x34, 0x00]);
        write_frame(&mut stream, &garbage).await.unwrap();
        let formerr = tcp_recv(&mut stream).await;
        assert_eq!((formerr.id(), formerr.response_code()), (0x1234, ResponseCode::FormErr));
        write_frame(&mut stream, &query(12, "db.service.consul.", WireType::A, None)).await.unwrap();
        assert_eq!(tcp_recv(&mut stream).await.answers().len(), 1, "still serving after garbage");

        stream.write_all(&[0, 0]).await.unwrap();
        let mut rest = vec![];
        let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert_eq!(read.unwrap().unwrap(), 0, "a zero-length frame closes the connection");
    }

    #[tokio::test]
    async fn udp_garbage_gets_formerr_or_silence_and_serving_goes_on() {
        let f = start().await;
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.connect(f.udp).await.unwrap();
        socket.send(&[1, 2, 3, 4, 5]).await.unwrap();
        let mut garbage = vec![0xee; 30];
        garbage[..3].copy_from_slice(&[0xab, 0xcd, 0x01]);
        socket.send(&garbage).await.unwrap();
        let formerr = Message::from_vec(&recv(&socket).await).unwrap();
        assert_eq!((formerr.id(), formerr.response_code()), (0xabcd, ResponseCode::FormErr));
        assert!(formerr.recursion_desired() && formerr.queries().is_empty());
        socket.send(&query(20, "db.service.consul.", WireType::A, None)).await.unwrap();
        let ok = Message::from_vec(&recv(&socket).await).unwrap();
        assert_eq!((ok.id(), ok.answers().len()), (20, 1), "the runt got silence, then service went on");
    }

    #[tokio::test]
    async fn header_rules() {
        let f = start().await;
        assert_eq!(answer_packet(&[0; 11], true, &f.node).await, None, "shorter than a header");

        let mut response = Message::from_vec(&query(30, "db.service.consul.", WireType::A, None)).unwrap();
        response.set_message_type(MessageType::Response);
        assert_eq!(answer_packet(&response.to_vec().unwrap(), true, &f.node).await, None);

        let mut two = Message::from_vec(&query(31, "db.service.consul.", WireType::A, None)).unwrap();
        two.add_query(Query::query(Name::from_ascii("big.service.consul.").unwrap(), WireType::A));
        let r = ask(&f.node, &two.to_vec().unwrap()).await;
        assert_eq!((r.id(), r.response_code(), r.queries().len()), (31, ResponseCode::FormErr, 0));

        let mut status = Message::from_vec(&query(32, "db.service.consul.", WireType::A, None)).unwrap();
        status.set_op_code(OpCode::Status);
        let r = ask(&f.node, &status.to_vec().unwrap()).await;
        assert_eq!((r.op_code(), r.response_code()), (OpCode::Status, ResponseCode::NotImp));

        let mut opcode3 = query(33, "db.service.consul.", WireType::A, None);
        opcode3[2] |= 3 << 3;
        let r = answer_packet(&opcode3, true, &f.node).await.unwrap();
        assert_eq!((r[2] & 0xf8, r[3] & 0x0f), (0x80 | (3 << 3), ResponseCode::NotImp.low()));

        let mut chaos = Message::from_vec(&query(34, "version.bind.", WireType::TXT, None)).unwrap();
        chaos.queries_mut()[0].set_query_class(DNSClass::CH);
        let r = ask(&f.node, &chaos.to_vec().unwrap()).await;
        assert_eq!((r.response_code(), r.queries().len()), (ResponseCode::Refused, 1));

        let r = ask(&f.node, &query(35, "db.service.consul.", WireType::MX, Some(1232))).await;
        assert_eq!(
            (r.response_code(), r.answers().len(), r.name_servers().len()),
            (ResponseCode::NoError, 0, 1)
        );
        assert_eq!(r.extensions().as_ref().map(Edns::max_payload), Some(1232), "EDNS echoed");

        let r = ask(&f.node, &query(36, "consul.", WireType::AXFR, None)).await;
        assert_eq!(r.response_code(), ResponseCode::NotImp);
    }

    #[test]
    fn an_unencodable_answer_is_servfail() {
        let req = Message::from_vec(&query(40, "web.service.consul.", WireType::A, None)).unwrap();
        let resp = DnsResponse {
            rcode: Rcode::NoError,
            answers: vec![DnsRecord {
                name: "web.service.consul.".into(),
                ttl: 0,
                data: RData::Cname(format!("{}.example.", "x".repeat(70))),
            }],
            authority: vec![],
            additional: vec![],
        };
        let r = Message::from_vec(&render(&req, &resp, 512).unwrap()).unwrap();
        assert_eq!((r.id(), r.response_code(), r.answers().len()), (40, ResponseCode::ServFail, 0));
        assert_eq!(r.queries().len(), 1);
    }

    #[test]
    fn trimming_keeps_the_most_records_that_fit() {
        let req = Message::from_vec(&query(41, "many.example.", WireType::A, None)).unwrap();
        let record = |i: u8| {
            Record::from_rdata(req.queries()[0].name().clone(), 0, WireData::A(A([10, 0, 0, i].into())))
        };
        let extra = |i: u8| {
            Record::from_rdata(
                Name::from_ascii("extra.example.").unwrap(),
                0,
                WireData::A(A([10, 1, 0, i].into())),
            )
        };
        let reply = || {
            Reply::new(
                &req,
                ResponseCode::NoError,
                [(0..20).map(record).collect(), vec![], (0..20).map(extra).collect()],
            )
        };
        let whole = reply().encode(4096).unwrap();
        assert_eq!(Message::from_vec(&whole).unwrap().additionals().len(), 20);
        let limit = 250;
        let r = Message::from_vec(&reply().encode(limit).unwrap()).unwrap();
        assert!(r.truncated());
        assert!(r.additionals().is_empty());
        let kept = r.answers().len();
        assert!(kept > 0 && kept < 20);
        assert_eq!(
            r.answers()[kept - 1].data(),
            Some(&WireData::A(A([10, 0, 0, kept as u8 - 1].into()))),
            "the last ones go"
        );
        assert_eq!(reply().emit(kept + 1, limit).unwrap(), None, "one more would not fit");
    }

    #[test]
    fn long_txt_values_are_split_into_character_strings() {
        let long = "k=".to_string() + &"v".repeat(400);
        let texts = [long.clone(), String::new()];
        let strings = txt_strings(&texts);
        assert_eq!(strings.iter().map(|s| s.len()).collect::<Vec<_>>(), [255, 147, 0]);
        assert_eq!(strings[..2].concat(), long.as_bytes());
    }

    /// A node whose host is gone: every call fails at once, so decoding and encoding are
    /// exercised without a runtime to keep alive between cases.
    fn gone_node() -> NodeHandle {
        let (host, node) = Host::new(
            Node::new(config(), [7; 32]).unwrap(),
            std::time::Instant::now(),
            crate::host::Storage::Memory,
            "127.0.0.1:8300".into(),
        );
        drop(host);
        node
    }

    fn answer_blocking(packet: &[u8]) -> Option<Vec<u8>> {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(answer_packet(packet, true, &gone_node()))
    }

    #[test]
    fn a_gone_node_means_servfail() {
        let r =
            Message::from_vec(&answer_blocking(&query(50, "db.service.consul.", WireType::A, None)).unwrap())
                .unwrap();
        assert_eq!((r.id(), r.response_code()), (50, ResponseCode::ServFail));
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            if let Some(reply) = answer_blocking(&bytes) {
                proptest::prop_assert_eq!(&reply[..2], &bytes[..2], "replies keep the id");
            }
        }

        #[test]
        fn mangled_queries_never_panic(
            edits in proptest::collection::vec((0usize..64, proptest::num::u8::ANY), 1..8),
            cut in 0usize..64,
        ) {
            let mut packet = query(60, "web.service.consul.", WireType::SRV, Some(4096));
            for (at, byte) in edits {
                if let Some(b) = packet.get_mut(at) {
                    *b = byte;
                }
            }
            packet.truncate(packet.len().saturating_sub(cut));
            let _ = answer_blocking(&packet);
        }
    }
}
