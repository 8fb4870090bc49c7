//! Check executors: one probe of a script, HTTP, TCP, UDP or gRPC check, mapped to a status and
//! an output text the way Consul's agent words them.
//!
//! Owns process spawning and killing, the network exchanges (hyper for HTTP/1.1 and for the gRPC
//! health call over HTTP/2, rustls for TLS), output capture and truncation. Never schedules,
//! retries or applies thresholds (`muster_core::checks::Scheduler` does), and never outlives its
//! future: when the host aborts the task, the process group it started is killed and its sockets
//! are closed.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use muster_core::checks::CheckSpec;
use muster_core::fsm::catalog::Health;
use muster_core::time::format_go_duration;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::net::{lookup_host, TcpStream, UdpSocket};
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;

/// Runs one probe, bounded by `timeout`, and returns its status and output.
pub async fn run(spec: &CheckSpec, timeout: Duration) -> (Health, String) {
    match spec {
        CheckSpec::Script { args, output_max } => script(args, *output_max, timeout).await,
        CheckSpec::Http { url, method, headers, body, tls_skip_verify, disable_redirects, output_max } => {
            let probe = HttpProbe {
                url,
                method: if method.is_empty() { "GET" } else { method },
                headers,
                body,
                tls_skip_verify: *tls_skip_verify,
                follow_redirects: !disable_redirects,
                output_max: *output_max,
            };
            http(&probe, timeout).await
        }
        CheckSpec::Tcp { addr } => tcp(addr, timeout).await,
        CheckSpec::Udp { addr, message } => udp(addr, message, timeout).await,
        CheckSpec::Grpc { target, use_tls } => grpc(target, *use_tls, timeout).await,
    }
}

// ---- script ----

async fn script(args: &[String], output_max: usize, timeout: Duration) -> (Health, String) {
    let Some((program, rest)) = args.split_first() else {
        return (Health::Critical, "no command to run".into());
    };
    let (mut group, mut output) = match Group::spawn(program, rest) {
        Ok(spawned) => spawned,
        Err(e) => return (Health::Critical, format!("fork/exec {program}: {}", os_text(&e))),
    };
    let mut tail = Tail::new(output_max);
    // Done once the process has exited and every holder of its output pipe (it, or children it
    // left running) has closed it, as Go's exec waits for the copy of the output.
    let finished = tokio::time::timeout(timeout, async {
        let ((), status) = tokio::join!(copy_to_tail(&mut output, &mut tail), group.child.wait());
        status
    })
    .await;
    match finished {
        Ok(Ok(status)) => {
            group.reaped();
            let health = match status.code() {
                Some(0) => Health::Passing,
                Some(1) => Health::Warning,
                _ => Health::Critical,
            };
            (health, tail.annotated())
        }
        Ok(Err(e)) => (Health::Critical, format!("wait: {}", os_text(&e))),
        Err(_) => {
            group.kill();
            // Reaped before reporting, so the next run of this check never overlaps this one.
            let _ = group.child.wait().await;
            let mut text = format!("Timed out ({}) running check", format_go_duration(timeout));
            let captured = tail.annotated();
            if !captured.is_empty() {
                text.push_str("\n\n");
                text.push_str(&captured);
            }
            (Health::Critical, text)
        }
    }
}

/// A check process leading its own process group. Until it is known to have finished, `kill` or
/// dropping this (the host aborted the task) sends SIGKILL to the whole group, so the children a
/// shell started die with it.
struct Group {
    child: Child,
    pgid: Option<libc::pid_t>,
}

impl Group {
    /// Spawns `program` with stdout and stderr on one pipe, so the two interleave as written;
    /// returns the pipe's read end.
    fn spawn(program: &str, args: &[String]) -> io::Result<(Group, pipe::Receiver)> {
        let (writer, reader) = pipe::pipe()?;
        let writer = writer.into_blocking_fd()?;
        // The Command, a temporary here, holds our copies of the write end; once it is gone only
        // the new process group holds them, so end of file means they have all closed it.
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone()?)
            .stderr(writer)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()?;
        let pgid = child.id().and_then(|id| libc::pid_t::try_from(id).ok());
        Ok((Group { child, pgid }, reader))
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // SAFETY: killpg takes plain integers and touches no memory of ours.
            unsafe {
                libc::killpg(pgid, libc::SIGKILL);
            }
        }
    }

    /// The leader exited and was reaped and its output closed: leave anything it detached alone,
    /// as Consul does, and never signal a group id that could since have been reused.
    fn reaped(&mut self) {
        self.pgid = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn copy_to_tail(from: &mut pipe::Receiver, tail: &mut Tail) {
    let mut chunk = [0u8; 4096];
    // A read error ends the capture like end of file: the exit status still decides.
    while let Ok(n @ 1..) = from.read(&mut chunk).await {
        tail.push(&chunk[..n]);
    }
}

/// The last `max` bytes of a stream, and how many bytes it had in all.
struct Tail {
    kept: Vec<u8>,
    max: usize,
    total: usize,
}

impl Tail {
    fn new(max: usize) -> Tail {
        Tail { kept: Vec::new(), max, total: 0 }
    }

    fn push(&mut self, data: &[u8]) {
        self.total = self.total.saturating_add(data.len());
        self.kept.extend_from_slice(&data[data.len().saturating_sub(self.max)..]);
        let excess = self.kept.len().saturating_sub(self.max);
        self.kept.drain(..excess);
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.kept).into_owned()
    }

    /// The text, with Consul's note in front when the start was cut off.
    fn annotated(&self) -> String {
        if self.total > self.max {
            format!("Captured {} of {} bytes\n...\n{}", self.max, self.total, self.text())
        } else {
            self.text()
        }
    }
}

// ---- TCP and UDP ----

async fn tcp(addr: &str, timeout: Duration) -> (Health, String) {
    match tokio::time::timeout(timeout, dial(addr)).await {
        Ok(Ok(_)) => (Health::Passing, format!("TCP connect {addr}: Success")),
        Ok(Err(e)) => (Health::Critical, e),
        Err(_) => (Health::Critical, format!("dial tcp {addr}: i/o timeout")),
    }
}

/// Connects to the first address of `addr` (`host:port`) that accepts.
async fn dial(addr: &str) -> Result<TcpStream, String> {
    let addrs = lookup_host(addr).await.map_err(|e| format!("dial tcp: lookup {addr}: {}", os_text(&e)))?;
    let mut failure = format!("dial tcp: lookup {addr}: no such host");
    for a in addrs {
        match TcpStream::connect(a).await {
            Ok(stream) => return Ok(stream),
            Err(e) => failure = format!("dial tcp {a}: connect: {}", os_text(&e)),
        }
    }
    Err(failure)
}

async fn udp(addr: &str, message: &str, timeout: Duration) -> (Health, String) {
    match udp_probe(addr, message, timeout).await {
        Ok(()) => (Health::Passing, format!("UDP connect {addr}: Success")),
        Err(e) => (Health::Critical, e),
    }
}

/// Sends `message` and waits for one byte back. Silence is a pass: a UDP service need not answer,
/// but a port that refuses (an ICMP error on the connected socket) is not listening.
async fn udp_probe(addr: &str, message: &str, timeout: Duration) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let remote = tokio::time::timeout_at(deadline, lookup_host(addr))
        .await
        .map_err(|_| format!("dial udp {addr}: i/o timeout"))?
        .map_err(|e| format!("dial udp: lookup {addr}: {}", os_text(&e)))?
        .next()
        .ok_or_else(|| format!("dial udp: lookup {addr}: no such host"))?;
    let local = if remote.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let socket = UdpSocket::bind(local).await.map_err(|e| format!("dial udp {addr}: {}", os_text(&e)))?;
    socket.connect(remote).await.map_err(|e| format!("dial udp {addr}: {}", os_text(&e)))?;
    // An empty datagram is easy to miss on the other side; send one zero byte instead.
    let payload = if message.is_empty() { &[0u8][..] } else { message.as_bytes() };
    socket.send(payload).await.map_err(|e| format!("write udp {remote}: {}", os_text(&e)))?;
    let mut reply = [0u8; 1];
    match tokio::time::timeout_at(deadline, socket.recv(&mut reply)).await {
        Ok(Err(e)) => Err(format!("read udp {remote}: {}", os_text(&e))),
        Ok(Ok(_)) | Err(_) => Ok(()),
    }
}

// ---- HTTP ----

/// One HTTP check's fixed inputs.
struct HttpProbe<'a> {
    url: &'a str,
    method: &'a str,
    headers: &'a BTreeMap<String, Vec<String>>,
    body: &'a str,
    tls_skip_verify: bool,
    follow_redirects: bool,
    output_max: usize,
}

/// Go's client stops when the 10th response in a row is a redirect.
const MAX_REDIRECTS: usize = 10;

async fn http(probe: &HttpProbe<'_>, timeout: Duration) -> (Health, String) {
    let (method, url) = (probe.method, probe.url);
    // Go's url.Error names the operation after the method: `Get "<url>": <cause>`.
    let op = go_op(method);
    match tokio::time::timeout(timeout, fetch(probe)).await {
        Ok(Ok(reply)) => {
            let health = match reply.status.as_u16() {
                200..=299 => Health::Passing,
                429 => Health::Warning,
                _ => Health::Critical,
            };
            let status = format!("{} {}", reply.status.as_u16(), reply.reason);
            (health, format!("HTTP {method} {url}: {} Output: {}", status.trim_end(), reply.body.text()))
        }
        Ok(Err(e)) => (Health::Critical, format!("{op} {url:?}: {e}")),
        Err(_) => {
            (Health::Critical, format!("{op} {url:?}: timed out after {}", format_go_duration(timeout)))
        }
    }
}

fn go_op(method: &str) -> String {
    let mut chars = method.chars();
    chars.next().map_or_else(String::new, |c| {
        c.to_ascii_uppercase().to_string() + &chars.as_str().to_ascii_lowercase()
    })
}

/// Sends the request, following redirects when asked, and reads the final response.
async fn fetch(probe: &HttpProbe<'_>) -> Result<Reply, String> {
    let mut hop = Hop::first(probe)?;
    for _ in 0..MAX_REDIRECTS {
        let mut reply = exchange(probe, &hop).await?;
        match reply.location.take() {
            None => return Ok(reply),
            Some(location) => hop = hop.redirect(reply.status, &location)?,
        }
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// One request of a possibly redirected exchange.
struct Hop {
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    /// The check's own `Host` header, which replaces the URL's host.
    host: Option<HeaderValue>,
    body: Bytes,
}

impl Hop {
    fn first(probe: &HttpProbe<'_>) -> Result<Hop, String> {
        let method = Method::from_bytes(probe.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", probe.method))?;
        let mut headers = HeaderMap::new();
        let mut host = None;
        for (name, values) in probe.headers {
            let value =
                |v: &str| HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {name:?}"));
            if name.eq_ignore_ascii_case("host") {
                host = values.iter().find(|v| !v.is_empty()).map(|v| value(v)).transpose()?;
                continue;
            }
            let header_name =
                HeaderName::from_bytes(name.as_bytes()).map_err(|_| format!("invalid header {name:?}"))?;
            for v in values {
                headers.append(header_name.clone(), value(v)?);
            }
        }
        for (name, default) in
            [(header::USER_AGENT, "Consul Health Check"), (header::ACCEPT, "text/plain, text/*, */*")]
        {
            if !matches!(headers.get(&name), Some(v) if !v.is_empty()) {
                headers.insert(name, HeaderValue::from_static(default));
            }
        }
        // Keep-alives are off: every probe is a fresh connection, closed after the response.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        let uri = parse_url(probe.url)?;
        Ok(Hop { uri, method, headers, host, body: Bytes::copy_from_slice(probe.body.as_bytes()) })
    }

    /// The request that follows a redirect, with the method and body rules of Go's client.
    fn redirect(self, status: StatusCode, location: &str) -> Result<Hop, String> {
        let (uri, relative) = resolve(&self.uri, location)?;
        let (method, body) = match status.as_u16() {
            307 | 308 => (self.method, self.body),
            _ if self.method == Method::HEAD => (self.method, Bytes::new()),
            _ => (Method::GET, Bytes::new()),
        };
        let mut headers = self.headers;
        if uri.host() != self.uri.host() {
            for secret in [header::AUTHORIZATION, header::COOKIE, header::WWW_AUTHENTICATE] {
                headers.remove(secret);
            }
        }
        // A relative redirect stays on the site the Host header named; an absolute one leaves it.
        let host = self.host.filter(|_| relative);
        Ok(Hop { uri, method, headers, host, body })
    }
}

/// Parses a URL, dropping any fragment (never sent).
fn parse_url(text: &str) -> Result<Uri, String> {
    let text = text.split('#').next().unwrap_or_default();
    text.parse().map_err(|e| format!("invalid URL {text:?}: {e}"))
}

/// Resolves a `Location` against the URL that answered with it; says whether it was relative.
fn resolve(base: &Uri, location: &str) -> Result<(Uri, bool), String> {
    let scheme = base.scheme_str().unwrap_or("http");
    let authority = base.authority().map_or("", |a| a.as_str());
    let has_scheme = location.split_once(':').is_some_and(|(s, _)| {
        s.starts_with(|c: char| c.is_ascii_alphabetic())
            && s.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
    });
    let (absolute, relative) = if has_scheme {
        (location.to_string(), false)
    } else if location.starts_with("//") {
        (format!("{scheme}:{location}"), false)
    } else if location.starts_with('/') {
        (format!("{scheme}://{authority}{location}"), true)
    } else {
        let dir = base.path().rsplit_once('/').map_or("", |(dir, _)| dir);
        (format!("{scheme}://{authority}{dir}/{location}"), true)
    };
    let uri =
        parse_url(&absolute).map_err(|e| format!("failed to parse Location header {location:?}: {e}"))?;
    Ok((uri, relative))
}

/// A response's status line, and either the tail of its body or where it redirects to.
struct Reply {
    status: StatusCode,
    reason: String,
    body: Tail,
    location: Option<String>,
}

async fn exchange(probe: &HttpProbe<'_>, hop: &Hop) -> Result<Reply, String> {
    let target = Target::of(&hop.uri)?;
    let stream = target.connect(probe.tls_skip_verify, b"http/1.1").await?;
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        // Header names as Go writes them; some servers still compare them case-sensitively.
        .title_case_headers(true)
        .handshake::<_, Full<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| chain(&e))?;
    let path = match hop.uri.query() {
        Some(query) => format!("{}?{query}", hop.uri.path()),
        None => hop.uri.path().to_string(),
    };
    let mut request = Request::new(Full::new(hop.body.clone()));
    *request.method_mut() = hop.method.clone();
    *request.uri_mut() = path.parse().map_err(|e| format!("invalid path {path:?}: {e}"))?;
    *request.headers_mut() = hop.headers.clone();
    request.headers_mut().insert(header::HOST, hop.host.clone().unwrap_or_else(|| target.authority.clone()));
    drive(conn, async {
        let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
        let status = response.status();
        let reason = match response.extensions().get::<hyper::ext::ReasonPhrase>() {
            Some(reason) => String::from_utf8_lossy(reason.as_bytes()).into_owned(),
            None => status.canonical_reason().unwrap_or_default().to_string(),
        };
        let redirects = matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308);
        let location = response
            .headers()
            .get(header::LOCATION)
            .filter(|_| probe.follow_redirects && redirects)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        let mut body = Tail::new(probe.output_max);
        if location.is_none() {
            read_body(response.into_body(), |chunk| body.push(chunk)).await?;
        }
        Ok(Reply { status, reason, body, location })
    })
    .await
}

/// Runs `exchange` while driving its connection. Once the connection has ended, whatever the
/// exchange still waits for has arrived or failed, so it is then awaited alone.
async fn drive<T>(
    conn: impl Future<Output = Result<(), hyper::Error>>,
    exchange: impl Future<Output = Result<T, String>>,
) -> Result<T, String> {
    let (mut conn, mut exchange) = (std::pin::pin!(conn), std::pin::pin!(exchange));
    tokio::select! {
        result = &mut exchange => result,
        ended = &mut conn => {
            ended.map_err(|e| chain(&e))?;
            exchange.await
        }
    }
}

/// Reads a body to its end, handing each data chunk to `on_data`; returns its trailers.
async fn read_body(mut body: Incoming, mut on_data: impl FnMut(&[u8])) -> Result<Option<HeaderMap>, String> {
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.map_err(|e| chain(&e))?.into_data() {
            Ok(data) => on_data(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Ok(trailers)
}

// ---- transport shared by HTTP and gRPC ----

trait Transport: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Transport for T {}

/// Where an HTTP or gRPC exchange goes, taken from its URL.
struct Target {
    host: String,
    port: u16,
    tls: bool,
    /// `host[:port]` as the URL wrote it, for the `Host` header.
    authority: HeaderValue,
}

impl Target {
    fn of(uri: &Uri) -> Result<Target, String> {
        let tls = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            other => return Err(format!("unsupported protocol scheme {:?}", other.unwrap_or_default())),
        };
        let authority = uri.authority().filter(|a| !a.host().is_empty()).ok_or("no Host in request URL")?;
        // Credentials in the URL are not sent, and never belong in the Host header.
        let host_port = authority.as_str().rsplit('@').next().unwrap_or_default();
        Ok(Target {
            host: authority.host().to_string(),
            port: authority.port_u16().unwrap_or(if tls { 443 } else { 80 }),
            tls,
            authority: HeaderValue::from_str(host_port).map_err(|e| e.to_string())?,
        })
    }

    /// Connects, wrapping the stream in TLS offering the `alpn` protocol when the URL is https.
    async fn connect(&self, skip_verify: bool, alpn: &[u8]) -> Result<Box<dyn Transport>, String> {
        let tcp = dial(&format!("{}:{}", self.host, self.port)).await?;
        if !self.tls {
            return Ok(Box::new(tcp));
        }
        let bare = self.host.trim_start_matches('[').trim_end_matches(']');
        let name =
            ServerName::try_from(bare.to_string()).map_err(|e| format!("tls: server name {bare:?}: {e}"))?;
        let connector = TlsConnector::from(Arc::new(tls_config(skip_verify, alpn)?));
        let tls = connector.connect(name, tcp).await.map_err(|e| format!("tls: {}", os_text(&e)))?;
        Ok(Box::new(tls))
    }
}

fn tls_config(skip_verify: bool, alpn: &[u8]) -> Result<ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("tls: {e}"))?;
    let mut config = if skip_verify {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth()
    } else {
        builder.with_root_certificates(system_roots()).with_no_client_auth()
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    Ok(config)
}

/// The system's trust anchors, which Go's TLS trusts too; read from disk once per process.
fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
            Arc::new(roots)
        })
        .clone()
}

/// `TLSSkipVerify`: any certificate for any name is accepted, but the handshake signatures are
/// still checked, so the peer must at least hold the key of the certificate it shows.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

// ---- gRPC ----

/// `grpc.health.v1.HealthCheckResponse.ServingStatus.SERVING`.
const SERVING: u64 = 1;

/// A health reply is a few bytes; more than this is not one, and is not kept.
const MAX_GRPC_REPLY: usize = 4096;

async fn grpc(target: &str, use_tls: bool, timeout: Duration) -> (Health, String) {
    let (server, service) = target.split_once('/').unwrap_or((target, ""));
    match tokio::time::timeout(timeout, health_call(server, service, use_tls)).await {
        Ok(Ok(SERVING)) => (Health::Passing, format!("gRPC check {target}: success")),
        Ok(Ok(status)) => {
            let name = match status {
                0 => "UNKNOWN".to_string(),
                2 => "NOT_SERVING".to_string(),
                3 => "SERVICE_UNKNOWN".to_string(),
                n => n.to_string(),
            };
            (Health::Critical, format!("gRPC {target} serving status: {name}"))
        }
        Ok(Err(e)) => (Health::Critical, format!("gRPC check {target}: {e}")),
        Err(_) => (
            Health::Critical,
            format!("gRPC check {target}: timed out after {}", format_go_duration(timeout)),
        ),
    }
}

/// One `grpc.health.v1.Health/Check` call over HTTP/2; returns the reply's serving status.
async fn health_call(server: &str, service: &str, use_tls: bool) -> Result<u64, String> {
    let scheme = if use_tls { "https" } else { "http" };
    let uri: Uri = format!("{scheme}://{server}/grpc.health.v1.Health/Check")
        .parse()
        .map_err(|e| format!("invalid target {server:?}: {e}"))?;
    let target = Target::of(&uri)?;
    let stream = target.connect(false, b"h2").await?;
    let (mut sender, conn) = hyper::client::conn::http2::handshake::<_, _, Full<Bytes>>(
        TokioExecutor::new(),
        TokioIo::new(stream),
    )
    .await
    .map_err(|e| chain(&e))?;
    let request = Request::post(uri)
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .body(Full::new(health_request(service)))
        .map_err(|e| e.to_string())?;
    drive(conn, async move {
        let response = sender.send_request(request).await.map_err(|e| chain(&e))?;
        if response.status() != StatusCode::OK {
            return Err(format!("unexpected HTTP status {}", response.status()));
        }
        let (head, body) = response.into_parts();
        let mut reply = Vec::new();
        let trailers = read_body(body, |chunk| {
            let room = MAX_GRPC_REPLY.saturating_sub(reply.len());
            reply.extend_from_slice(&chunk[..chunk.len().min(room)]);
        })
        .await?;
        // A call that fails at once may answer "trailers-only": the status in the headers.
        let status_fields =
            trailers.as_ref().filter(|t| t.contains_key("grpc-status")).unwrap_or(&head.headers);
        grpc_status(status_fields)?;
        serving_status(&reply)
    })
    .await
}

fn grpc_status(fields: &HeaderMap) -> Result<(), String> {
    let text = |name: &str| fields.get(name).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    match text("grpc-status") {
        Some(code) if code == "0" => Ok(()),
        Some(code) => {
            Err(format!("rpc error: code = {code} desc = {}", text("grpc-message").unwrap_or_default()))
        }
        None => Err("the server closed the stream without a grpc-status".into()),
    }
}

/// A gRPC frame (uncompressed, length-prefixed) holding `HealthCheckRequest { service = 1 }`.
fn health_request(service: &str) -> Bytes {
    let mut message = Vec::new();
    // proto3 leaves an empty string out.
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0];
    frame.extend_from_slice(&u32::try_from(message.len()).unwrap_or(u32::MAX).to_be_bytes());
    frame.extend_from_slice(&message);
    Bytes::from(frame)
}

/// The `status` (field 1) of the `HealthCheckResponse` in the reply's first gRPC frame; absent
/// means 0, UNKNOWN. Other fields are skipped, as protobuf readers must.
fn serving_status(reply: &[u8]) -> Result<u64, String> {
    let malformed = || "malformed health reply".to_string();
    let [compressed, a, b, c, d, rest @ ..] = reply else {
        return Err("the reply carries no message".into());
    };
    if *compressed != 0 {
        return Err("the reply is compressed, which was not offered".into());
    }
    let len = usize::try_from(u32::from_be_bytes([*a, *b, *c, *d])).map_err(|_| malformed())?;
    let mut message = rest.get(..len).ok_or_else(malformed)?;
    let mut status = 0;
    while !message.is_empty() {
        let key = varint(&mut message).ok_or_else(malformed)?;
        let skip = match key & 7 {
            0 => {
                let value = varint(&mut message).ok_or_else(malformed)?;
                if key >> 3 == 1 {
                    status = value;
                }
                0
            }
            1 => 8,
            2 => varint(&mut message).and_then(|n| usize::try_from(n).ok()).ok_or_else(malformed)?,
            5 => 4,
            _ => return Err(malformed()),
        };
        message = message.get(skip..).ok_or_else(malformed)?;
    }
    Ok(status)
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Takes a base-128 varint off the front of `input`; `None` when cut short or longer than 64 bits.
fn varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

// ---- error text ----

/// An OS error in Go's wording: `connection refused`, not `Connection refused (os error 111)`.
fn os_text(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match e.raw_os_error() {
        Some(code) => text.strip_suffix(&format!(" (os error {code})")).unwrap_or(&text).to_string(),
        None => text,
    };
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |c| c.to_lowercase().chain(chars).collect())
}

/// An error and its causes on one line, as Go prints wrapped errors.
fn chain(e: &dyn StdError) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;

    use http_body_util::combinators::BoxBody;
    use http_body_util::Empty;
    use hyper::service::service_fn;
    use hyper::Response;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::PrivateKeyDer;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_rustls::TlsAcceptor;

    use super::*;

    const SECOND: Duration = Duration::from_secs(1);

    fn sh(script: &str) -> CheckSpec {
        CheckSpec::Script { args: vec!["sh".into(), "-c".into(), script.into()], output_max: 4096 }
    }

    /// A scratch file path unique to this test process and `name`.
    fn scratch(name: &str) -> String {
        format!("{}/muster-checks-{}-{name}", std::env::temp_dir().display(), std::process::id())
    }

    /// Gone means no such process, or a zombie nobody has reaped yet.
    fn process_gone(pid: &str) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().is_some_and(|s| s.trim_start().starts_with('Z')),
        }
    }

    async fn wait_for(mut condition: impl FnMut() -> bool) -> bool {
        for _ in 0..250 {
            if condition() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    #[tokio::test]
    async fn script_exit_codes_map_to_status() {
        assert_eq!(run(&sh("exit 0"), SECOND).await.0, Health::Passing);
        assert_eq!(run(&sh("exit 1"), SECOND).await.0, Health::Warning);
        assert_eq!(run(&sh("exit 2"), SECOND).await.0, Health::Critical);
        assert_eq!(run(&sh("kill -9 $$"), SECOND).await.0, Health::Critical, "killed by a signal");
    }

    #[tokio::test]
    async fn script_output_interleaves_stdout_and_stderr() {
        let (health, output) = run(&sh("echo one; echo two >&2; echo three; exit 1"), SECOND).await;
        assert_eq!(health, Health::Warning);
        assert_eq!(output, "one\ntwo\nthree\n");
        let spec =
            CheckSpec::Script { args: vec!["echo".into(), "a b".into(), "$HOME".into()], output_max: 64 };
        assert_eq!(run(&spec, SECOND).await.1, "a b $HOME\n", "arguments pass through without a shell");
    }

    #[tokio::test]
    async fn script_output_keeps_the_last_bytes() {
        let spec = CheckSpec::Script {
            args: vec!["sh".into(), "-c".into(), "printf 01234; printf 56789 >&2".into()],
            output_max: 4,
        };
        assert_eq!(run(&spec, SECOND).await, (Health::Passing, "Captured 4 of 10 bytes\n...\n6789".into()));
    }

    #[tokio::test]
    async fn script_that_cannot_start_is_critical() {
        let spec = CheckSpec::Script { args: vec!["/nonexistent/check".into()], output_max: 4096 };
        let (health, output) = run(&spec, SECOND).await;
        assert_eq!(health, Health::Critical);
        assert_eq!(output, "fork/exec /nonexistent/check: no such file or directory");
        let empty = CheckSpec::Script { args: vec![], output_max: 4096 };
        assert_eq!(run(&empty, SECOND).await.0, Health::Critical);
    }

    #[tokio::test]
    async fn script_timeout_kills_the_process_group() {
        let pidfile = scratch("timeout");
        let spec = sh(&format!("echo started; sleep 30 & echo $! > {pidfile}; wait"));
        let began = std::time::Instant::now();
        let (health, output) = run(&spec, Duration::from_millis(300)).await;
        assert!(began.elapsed() < Duration::from_secs(5));
        assert_eq!(health, Health::Critical);
        assert_eq!(output, "Timed out (300ms) running check\n\nstarted\n");
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let _ = std::fs::remove_file(&pidfile);
        assert!(wait_for(|| process_gone(pid.trim())).await, "the shell's child was killed too");
    }

    #[tokio::test]
    async fn aborting_the_task_kills_the_process_group() {
        let pidfile = scratch("abort");
        let spec = sh(&format!("sleep 30 & echo $! > {pidfile}; wait"));
        let task = tokio::spawn(async move { run(&spec, Duration::from_secs(60)).await });
        assert!(wait_for(|| std::fs::read_to_string(&pidfile).is_ok_and(|p| p.ends_with('\n'))).await);
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let _ = std::fs::remove_file(&pidfile);
        task.abort();
        assert!(task.await.unwrap_err().is_cancelled());
        assert!(wait_for(|| process_gone(pid.trim())).await);
    }

    // ---- HTTP ----

    fn response(status: &str, headers: &str, body: &str) -> String {
        format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\n{headers}\r\n{body}", body.len())
    }

    fn route(request: &str) -> String {
        let target = request.split_whitespace().nth(1).unwrap_or_default();
        match target.split('?').next().unwrap_or_default() {
            "/ok" => response("200 OK", "", "hello"),
            "/busy" => response("429 Too Many Requests", "", "slow down"),
            "/down" => response("503 Service Unavailable", "", "bye"),
            "/fine" => response("200 Fine", "", ""),
            "/long" => response("200 OK", "", "0123456789"),
            "/start" => response("302 Found", "Location: next\r\n", ""),
            "/next" => response("307 Temporary Redirect", "Location: /final\r\n", ""),
            "/final" => response("200 OK", "", "arrived"),
            "/loop" => response("302 Found", "Location: /loop\r\n", ""),
            _ => response("404 Not Found", "", ""),
        }
    }

    /// An HTTP/1 server on 127.0.0.1 answering one request per connection with `route`, over TLS
    /// when given an acceptor; every request it reads (head and body) is sent on the channel.
    async fn http_server(tls: Option<TlsAcceptor>) -> (SocketAddr, mpsc::UnboundedReceiver<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen, requests) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (tls, seen) = (tls.clone(), seen.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(tcp).await {
                                answer(stream, seen).await;
                            }
                        }
                        None => answer(tcp, seen).await,
                    }
                });
            }
        });
        (addr, requests)
    }

    async fn answer(mut stream: impl AsyncRead + AsyncWrite + Unpin, seen: mpsc::UnboundedSender<String>) {
        let mut request = Vec::new();
        let mut chunk = [0u8; 1024];
        loop {
            match stream.read(&mut chunk).await {
                Ok(n @ 1..) => request.extend_from_slice(&chunk[..n]),
                _ => return,
            }
            let text = String::from_utf8_lossy(&request).to_lowercase();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |n| n.trim().parse().unwrap());
                if request.len() >= end + 4 + length {
                    break;
                }
            }
        }
        let request = String::from_utf8(request).unwrap();
        let _ = stream.write_all(route(&request).as_bytes()).await;
        let _ = stream.shutdown().await;
        let _ = seen.send(request);
    }

    fn http(url: String) -> CheckSpec {
        CheckSpec::Http {
            url,
            method: String::new(),
            headers: BTreeMap::new(),
            body: String::new(),
            tls_skip_verify: false,
            disable_redirects: false,
            output_max: 4096,
        }
    }

    #[tokio::test]
    async fn http_status_maps_to_health() {
        let (addr, _) = http_server(None).await;
        let check = |path: &str| run_owned(http(format!("http://{addr}{path}")));
        assert_eq!(
            check("/ok").await,
            (Health::Passing, format!("HTTP GET http://{addr}/ok: 200 OK Output: hello"))
        );
        assert_eq!(
            check("/busy").await,
            (
                Health::Warning,
                format!("HTTP GET http://{addr}/busy: 429 Too Many Requests Output: slow down")
            )
        );
        assert_eq!(check("/down").await.0, Health::Critical);
        assert_eq!(check("/fine").await.1, format!("HTTP GET http://{addr}/fine: 200 Fine Output: "));
    }

    async fn run_owned(spec: CheckSpec) -> (Health, String) {
        run(&spec, SECOND).await
    }

    #[tokio::test]
    async fn http_sends_method_headers_and_body() {
        let (addr, mut requests) = http_server(None).await;
        let headers = BTreeMap::from([
            ("X-Probe".to_string(), vec!["a".to_string(), "b".to_string()]),
            ("Host".to_string(), vec!["service.example".to_string()]),
            ("User-Agent".to_string(), vec!["probe/1".to_string()]),
        ]);
        let spec = CheckSpec::Http {
            url: format!("http://{addr}/ok?x=1"),
            method: "PUT".into(),
            headers,
            body: "ping".into(),
            tls_skip_verify: false,
            disable_redirects: false,
            output_max: 4096,
        };
        let (health, output) = run(&spec, SECOND).await;
        assert_eq!(health, Health::Passing);
        assert!(output.starts_with(&format!("HTTP PUT http://{addr}/ok?x=1: 200 OK")), "{output}");
        let request = requests.recv().await.unwrap();
        assert!(request.starts_with("PUT /ok?x=1 HTTP/1.1\r\n"), "{request}");
        for line in [
            "Host: service.example",
            "X-Probe: a",
            "X-Probe: b",
            "User-Agent: probe/1",
            "Accept: text/plain, text/*, */*",
            "Connection: close",
        ] {
            assert!(request.contains(&format!("\r\n{line}\r\n")), "{line} missing from {request}");
        }
        assert!(!request.contains("Consul Health Check"), "a given User-Agent replaces the default");
        assert!(request.ends_with("\r\n\r\nping"));

        run(&http(format!("http://{addr}/ok")), SECOND).await;
        let request = requests.recv().await.unwrap();
        assert!(request.contains(&format!("\r\nHost: {addr}\r\n")), "{request}");
        assert!(request.contains("\r\nUser-Agent: Consul Health Check\r\n"));
    }

    #[tokio::test]
    async fn http_follows_redirects_unless_disabled() {
        let (addr, mut requests) = http_server(None).await;
        let mut spec = http(format!("http://{addr}/start"));
        if let CheckSpec::Http { method, body, .. } = &mut spec {
            *method = "POST".into();
            *body = "payload".into();
        }
        let (health, output) = run(&spec, SECOND).await;
        assert_eq!(
            (health, output),
            (Health::Passing, format!("HTTP POST http://{addr}/start: 200 OK Output: arrived"))
        );
        let mut seen = Vec::new();
        while let Ok(r) = requests.try_recv() {
            seen.push(r.lines().next().unwrap().to_string());
        }
        // 302 turns the POST into a GET; 307 keeps the method.
        assert_eq!(seen, ["POST /start HTTP/1.1", "GET /next HTTP/1.1", "GET /final HTTP/1.1"]);

        if let CheckSpec::Http { disable_redirects, .. } = &mut spec {
            *disable_redirects = true;
        }
        assert_eq!(run(&spec, SECOND).await.1, format!("HTTP POST http://{addr}/start: 302 Found Output: "));

        let (health, output) = run(&http(format!("http://{addr}/loop")), SECOND).await;
        assert_eq!(health, Health::Critical);
        assert_eq!(output, format!("Get \"http://{addr}/loop\": stopped after 10 redirects"));
    }

    #[tokio::test]
    async fn http_body_keeps_the_last_bytes() {
        let (addr, _) = http_server(None).await;
        let mut spec = http(format!("http://{addr}/long"));
        if let CheckSpec::Http { output_max, .. } = &mut spec {
            *output_max = 3;
        }
        assert!(run(&spec, SECOND).await.1.ends_with(": 200 OK Output: 789"));
    }

    #[tokio::test]
    async fn http_transport_failures_are_critical() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        let (health, output) = run(&http(format!("http://{closed}/")), SECOND).await;
        assert_eq!(health, Health::Critical);
        assert_eq!(
            output,
            format!("Get \"http://{closed}/\": dial tcp {closed}: connect: connection refused")
        );

        // A server that accepts and never answers.
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((stream, _)) = silent.accept().await {
                held.push(stream);
            }
        });
        let began = std::time::Instant::now();
        let (health, output) = run(&http(format!("http://{addr}/")), Duration::from_millis(200)).await;
        assert!(began.elapsed() < SECOND);
        assert_eq!(
            (health, output),
            (Health::Critical, format!("Get \"http://{addr}/\": timed out after 200ms"))
        );

        for url in ["", "not a url", "ftp://127.0.0.1/", "http:///path", "http://[::1"] {
            assert_eq!(run(&http(url.into()), SECOND).await.0, Health::Critical, "{url}");
        }
        let mut spec = http(format!("http://{addr}/"));
        if let CheckSpec::Http { method, .. } = &mut spec {
            *method = "BAD METHOD".into();
        }
        assert_eq!(run(&spec, SECOND).await.0, Health::Critical);
    }

    /// Self-signed for IP 127.0.0.1, valid until 2126; made for these tests only.
    const TEST_CERT: &str = "-----BEGIN CERTIFICATE-----
MIIBkTCCATegAwIBAgIUW+ExE/LfnJBF400Pc8NYdaMnUJYwCgYIKoZIzj0EAwIw
FjEUMBIGA1UEAwwLbXVzdGVyLXRlc3QwIBcNMjYxMTI1MjE1ODQwWhgPMjEyNjEx
MDEyMTU4NDBaMBYxFDASBgNVBAMMC211c3Rlci10ZXN0MFkwEwYHKoZIzj0CAQYI
KoZIzj0DAQcDQgAEolt3Gcis3rxVqFyNylXKWXtS32cuXUkoCwUYeb0khZpnywfH
eoUnO6zyPfn9MrWmxDkUMn2+Us4+x/2i2QvomqNhMF8wHQYDVR0OBBYEFPuzOPxu
7QnbEucr1z/8rQsyfQuTMB8GA1UdIwQYMBaAFPuzOPxu7QnbEucr1z/8rQsyfQuT
MA8GA1UdEQQIMAaHBH8AAAEwDAYDVR0TAQH/BAIwADAKBggqhkjOPQQDAgNIADBF
AiEAmq9KeZzA/zVtx5yYurxVCD9BL7kEorJqnRxe1vdflcMCIEq0uix5xSkVTQle
hXsxCvNSjkgCKkI63VKd1U/Yk4/t
-----END CERTIFICATE-----
";
    const TEST_KEY: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgZxzKC2HcD2XK17ZT
j3Zc5lVHUvYwhMpC/V3rtY/rQp2hRANCAASiW3cZyKzevFWoXI3KVcpZe1LfZy5d
SSgLBRh5vSSFmmfLB8d6hSc7rPI9+f0ytabEORQyfb5Szj7H/aLZC+ia
-----END PRIVATE KEY-----
";

    fn tls_acceptor() -> TlsAcceptor {
        let cert = CertificateDer::from_pem_slice(TEST_CERT.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(TEST_KEY.as_bytes()).unwrap();
        let config =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(vec![cert], key)
                .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    #[tokio::test]
    async fn https_verifies_the_certificate_unless_told_not_to() {
        let (addr, _) = http_server(Some(tls_acceptor())).await;
        let mut spec = http(format!("https://{addr}/ok"));
        let (health, output) = run(&spec, SECOND).await;
        assert_eq!(health, Health::Critical);
        assert!(output.contains("invalid peer certificate"), "{output}");
        if let CheckSpec::Http { tls_skip_verify, .. } = &mut spec {
            *tls_skip_verify = true;
        }
        assert_eq!(
            run(&spec, SECOND).await,
            (Health::Passing, format!("HTTP GET https://{addr}/ok: 200 OK Output: hello"))
        );
    }

    // ---- TCP and UDP ----

    #[tokio::test]
    async fn tcp_connect_passes_and_refusal_fails() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let spec = CheckSpec::Tcp { addr: addr.clone() };
        assert_eq!(run(&spec, SECOND).await, (Health::Passing, format!("TCP connect {addr}: Success")));
        drop(listener);
        assert_eq!(
            run(&spec, SECOND).await,
            (Health::Critical, format!("dial tcp {addr}: connect: connection refused"))
        );
        assert_eq!(run(&CheckSpec::Tcp { addr: "no port".into() }, SECOND).await.0, Health::Critical);
    }

    #[tokio::test]
    async fn udp_reply_or_silence_passes_and_refusal_fails() {
        let echo = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = echo.local_addr().unwrap().to_string();
        let (got, mut received) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut buf = [0u8; 64];
            while let Ok((n, from)) = echo.recv_from(&mut buf).await {
                let _ = got.send(buf[..n].to_vec());
                let _ = echo.send_to(&buf[..n], from).await;
            }
        });
        let spec = |message: &str| CheckSpec::Udp { addr: addr.clone(), message: message.into() };
        assert_eq!(
            run(&spec("ping"), SECOND).await,
            (Health::Passing, format!("UDP connect {addr}: Success"))
        );
        assert_eq!(received.recv().await.unwrap(), b"ping");
        assert_eq!(run(&spec(""), SECOND).await.0, Health::Passing);
        assert_eq!(received.recv().await.unwrap(), [0]);

        let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let quiet = CheckSpec::Udp { addr: silent.local_addr().unwrap().to_string(), message: "hi".into() };
        assert_eq!(run(&quiet, Duration::from_millis(100)).await.0, Health::Passing);
        drop(silent);
        let (health, output) = run(&quiet, SECOND).await;
        assert_eq!(health, Health::Critical);
        assert!(output.ends_with("connection refused"), "{output}");
    }

    // ---- gRPC ----

    type GrpcBody = BoxBody<Bytes, Infallible>;

    /// A grpc.health.v1 server over cleartext HTTP/2 on 127.0.0.1. Services: "" and "up" serve,
    /// "down" does not, anything else fails the call with NOT_FOUND (5), trailers-only.
    async fn grpc_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(
                    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service_fn(health_service)),
                );
            }
        });
        addr
    }

    async fn health_service(request: Request<Incoming>) -> Result<Response<GrpcBody>, Infallible> {
        let headers = request.headers();
        let well_formed = request.uri().path() == "/grpc.health.v1.Health/Check"
            && headers.get(header::CONTENT_TYPE).is_some_and(|v| v == "application/grpc")
            && headers.get(header::TE).is_some_and(|v| v == "trailers");
        if !well_formed {
            return Ok(Response::builder().status(400).body(Empty::new().boxed()).unwrap());
        }
        let frame = request.into_body().collect().await.unwrap().to_bytes();
        // [flag, len x4, 0x0a, name length, name...] for the short names used here.
        let service = std::str::from_utf8(frame.get(7..).unwrap_or_default()).unwrap().to_string();
        let status: u8 = match service.as_str() {
            "" | "up" => 1,
            "down" => 2,
            _ => {
                let failed =
                    Response::builder().header("grpc-status", "5").header("grpc-message", "unknown service");
                return Ok(failed.body(Empty::new().boxed()).unwrap());
            }
        };
        // HealthCheckResponse { status = 1 }, after an unknown field a reader must skip.
        let reply = Bytes::from(vec![0, 0, 0, 0, 5, 0x12, 1, b'x', 0x08, status]);
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        let body = Full::new(reply).with_trailers(async { Some(Ok(trailers)) });
        Ok(Response::builder().header(header::CONTENT_TYPE, "application/grpc").body(body.boxed()).unwrap())
    }

    #[tokio::test]
    async fn grpc_health_protocol() {
        let addr = grpc_server().await;
        let check =
            |target: String| async move { run(&CheckSpec::Grpc { target, use_tls: false }, SECOND).await };
        assert_eq!(check(addr.to_string()).await, (Health::Passing, format!("gRPC check {addr}: success")));
        assert_eq!(
            check(format!("{addr}/up")).await,
            (Health::Passing, format!("gRPC check {addr}/up: success"))
        );
        assert_eq!(
            check(format!("{addr}/down")).await,
            (Health::Critical, format!("gRPC {addr}/down serving status: NOT_SERVING"))
        );
        assert_eq!(
            check(format!("{addr}/other")).await,
            (
                Health::Critical,
                format!("gRPC check {addr}/other: rpc error: code = 5 desc = unknown service")
            )
        );
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
        assert_eq!(check(closed.to_string()).await.0, Health::Critical);
        assert_eq!(check("not a target/x".into()).await.0, Health::Critical);
    }

    #[test]
    fn health_messages_encode_and_decode() {
        assert_eq!(&health_request("")[..], [0, 0, 0, 0, 0]);
        assert_eq!(&health_request("web")[..], [0, 0, 0, 0, 5, 0x0a, 3, b'w', b'e', b'b']);
        assert_eq!(serving_status(&[0, 0, 0, 0, 2, 0x08, 1]), Ok(1));
        assert_eq!(serving_status(&[0, 0, 0, 0, 0]), Ok(0), "absent means UNKNOWN");
        // A 64-bit field, a 32-bit field and a long varint before the status.
        let message = [0x11, 1, 2, 3, 4, 5, 6, 7, 8, 0x1d, 1, 2, 3, 4, 0x18, 0xff, 0x01, 0x08, 2];
        let mut reply = vec![0, 0, 0, 0, message.len() as u8];
        reply.extend_from_slice(&message);
        assert_eq!(serving_status(&reply), Ok(2));
        for bad in [
            &[][..],
            &[0, 0, 0],
            &[1, 0, 0, 0, 0],
            &[0, 0, 0, 0, 9, 0x08],
            &[0, 0, 0, 0, 1, 0x08],
            &[0, 0, 0, 0, 2, 0x0a, 5],
        ] {
            assert!(serving_status(bad).is_err(), "{bad:?}");
        }
        let mut long = vec![0x08];
        long.extend([0xff; 11]);
        assert_eq!(varint(&mut &long[1..]), None, "more than ten bytes");
        let mut out = Vec::new();
        put_varint(&mut out, 300);
        assert_eq!(varint(&mut &out[..]), Some(300));
    }

    #[test]
    fn targets_come_from_the_url() {
        let target = Target::of(&"http://user:pw@[::1]:8080/x".parse().unwrap()).unwrap();
        assert_eq!((target.host.as_str(), target.port, target.tls), ("[::1]", 8080, false));
        assert_eq!(target.authority, "[::1]:8080", "credentials stay out of the Host header");
        let target = Target::of(&"https://example.test/".parse().unwrap()).unwrap();
        assert_eq!((target.port, target.tls), (443, true));
        assert!(Target::of(&"/relative".parse().unwrap()).is_err());
    }

    #[test]
    fn locations_resolve_against_the_request_url() {
        let base: Uri = "http://h:1/a/b?q=1".parse().unwrap();
        let resolved = |loc: &str| resolve(&base, loc).map(|(uri, relative)| (uri.to_string(), relative));
        assert_eq!(resolved("c"), Ok(("http://h:1/a/c".into(), true)));
        assert_eq!(resolved("/c?d=1#frag"), Ok(("http://h:1/c?d=1".into(), true)));
        assert_eq!(resolved("//other/x"), Ok(("http://other/x".into(), false)));
        assert_eq!(resolved("https://other/x"), Ok(("https://other/x".into(), false)));
        assert!(resolved("http://bad host/").is_err());
    }
}
