//! A small HTTP/1.1 client for the local agent's `/v1` API, as the CLI uses it.
//!
//! Owns: parsing the `-http-addr` forms Consul accepts (`http://host:port`,
//! bare `host:port`, `unix:///path`), percent-encoding of path segments and
//! query strings, the cross-cutting request decorations (`X-Consul-Token`,
//! `?dc=`, `?stale`), and turning an unexpected status into an error that reads
//! like Consul's Go client (`Unexpected response code: 500 (No cluster leader)`).
//!
//! Never does: TLS (an `https://` address is refused rather than silently sent
//! in clear), connection reuse (every command makes one or a few requests, so
//! one connection per request keeps the code trivial), retries, or any
//! interpretation of response bodies — that belongs to the commands.

use std::fmt;
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the agent listens.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// `host` keeps IPv6 brackets so it can be used verbatim in `Host:`.
    Tcp {
        host: String,
        port: u16,
    },
    Unix(PathBuf),
}

/// A response whose status the caller accepted.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub body: Bytes,
}

/// A non-2xx answer from the agent. Displayed exactly like Consul's Go API
/// client so scripts grepping CLI errors keep working.
#[derive(Debug)]
pub struct StatusError {
    pub status: u16,
    pub body: String,
}

impl fmt::Display for StatusError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Unexpected response code: {} ({})", self.status, self.body)
    }
}

impl std::error::Error for StatusError {}

/// Client for one agent address, with the per-invocation HTTP flags applied.
#[derive(Debug, Clone)]
pub struct Client {
    target: Target,
    token: Option<String>,
    datacenter: Option<String>,
    stale: bool,
}

impl Client {
    /// `addr` is an `-http-addr` value; `token`, `datacenter` and `stale`
    /// are applied to every request where the agent accepts them.
    pub fn new(
        addr: &str,
        token: Option<String>,
        datacenter: Option<String>,
        stale: bool,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            target: parse_addr(addr)?,
            token: token.filter(|t| !t.is_empty()),
            datacenter: datacenter.filter(|d| !d.is_empty()),
            stale,
        })
    }

    /// GET that must answer 2xx.
    pub async fn get(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Response> {
        self.expect_success(self.send(Method::GET, path, query, Bytes::new()).await?)
    }

    /// GET where 404 means "nothing there" (KV keys, prefixes), as Consul's
    /// API client treats it.
    pub async fn get_optional(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Option<Response>> {
        let resp = self.send(Method::GET, path, query, Bytes::new()).await?;
        if resp.status == 404 {
            return Ok(None);
        }
        self.expect_success(resp).map(Some)
    }

    /// PUT with a raw body that must answer 2xx.
    pub async fn put(
        &self,
        path: &str,
        query: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> anyhow::Result<Response> {
        self.expect_success(self.send(Method::PUT, path, query, body.into()).await?)
    }

    /// Any method with a body (keyring operations send their key as JSON) that must
    /// answer 2xx.
    pub async fn send_json(&self, method: &str, path: &str, body: Vec<u8>) -> anyhow::Result<Response> {
        let method = Method::from_bytes(method.as_bytes())?;
        self.expect_success(self.send(method, path, &[], body.into()).await?)
    }

    /// DELETE that must answer 2xx.
    pub async fn delete(&self, path: &str, query: &[(&str, &str)]) -> anyhow::Result<Response> {
        self.expect_success(self.send(Method::DELETE, path, query, Bytes::new()).await?)
    }

    fn expect_success(&self, resp: Response) -> anyhow::Result<Response> {
        if (200..300).contains(&resp.status) {
            return Ok(resp);
        }
        // Agent error bodies are plain text, usually newline-terminated;
        // the newline would split the one-line error message.
        let body = String::from_utf8_lossy(&resp.body).trim_end().to_string();
        Err(StatusError { status: resp.status, body }.into())
    }

    /// Builds `path?query` with the invocation-wide parameters added.
    /// `path` must already be encoded (see [`encode`]).
    fn request_target(&self, method: &Method, path: &str, query: &[(&str, &str)]) -> String {
        let mut params: Vec<(&str, &str)> = query.to_vec();
        // Agent endpoints are local to the answering agent and take neither a
        // datacenter nor a consistency mode.
        if !path.starts_with("/v1/agent/") {
            if let Some(dc) = &self.datacenter {
                params.push(("dc", dc));
            }
            if self.stale && *method == Method::GET {
                params.push(("stale", ""));
            }
        }
        let mut target = path.to_string();
        for (i, (k, v)) in params.iter().enumerate() {
            target.push(if i == 0 { '?' } else { '&' });
            target.push_str(&encode(k));
            // Boolean parameters are presence-based in the API; a bare key is
            // the most compact spelling of "present".
            if !v.is_empty() {
                target.push('=');
                target.push_str(&encode(v));
            }
        }
        target
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Bytes,
    ) -> anyhow::Result<Response> {
        let target = self.request_target(&method, path, query);
        let host = match &self.target {
            Target::Tcp { host, port } => format!("{host}:{port}"),
            // Any Host will do over a socket; HTTP/1.1 only insists it exists.
            Target::Unix(_) => "localhost".to_string(),
        };
        let mut builder =
            Request::builder().method(method.clone()).uri(target.as_str()).header(HOST, host.as_str());
        if let Some(token) = &self.token {
            let value = HeaderValue::from_str(token).context("token is not a valid header value")?;
            builder = builder.header("X-Consul-Token", value);
        }
        if !body.is_empty() {
            builder = builder.header(CONTENT_TYPE, "application/octet-stream");
        }
        let request = builder.body(Full::new(body))?;

        // Reads like Go's `Get "http://…/v1/kv/foo": <cause>`, which is what
        // Consul users see when the agent is down.
        let describe = |e: anyhow::Error| {
            let verb = method.as_str();
            let verb = format!("{}{}", &verb[..1], verb[1..].to_lowercase());
            let shown = match &self.target {
                Target::Tcp { .. } => format!("http://{host}{target}"),
                Target::Unix(p) => format!("unix://{}{target}", p.display()),
            };
            anyhow!("{verb} \"{shown}\": {e:#}")
        };
        match &self.target {
            Target::Tcp { host, port } => {
                let bare = host.trim_start_matches('[').trim_end_matches(']');
                let stream =
                    tokio::net::TcpStream::connect((bare, *port)).await.map_err(|e| describe(e.into()))?;
                exchange(stream, request).await.map_err(describe)
            }
            Target::Unix(path) => {
                let stream = tokio::net::UnixStream::connect(path).await.map_err(|e| describe(e.into()))?;
                exchange(stream, request).await.map_err(describe)
            }
        }
    }
}

/// One request/response over a fresh connection.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> anyhow::Result<Response>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // The connection future does the actual I/O; if it fails, send_request or
    // the body read below reports the error, so its own result adds nothing.
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let resp = sender.send_request(request).await?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Response { status, body })
}

/// Parses an `-http-addr` value.
fn parse_addr(addr: &str) -> anyhow::Result<Target> {
    if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() {
            bail!("invalid HTTP address {addr:?}: missing socket path");
        }
        return Ok(Target::Unix(PathBuf::from(path)));
    }
    if addr.starts_with("https://") {
        bail!("HTTPS is not supported by this client; use an http:// address");
    }
    let rest = addr.strip_prefix("http://").unwrap_or(addr);
    // A trailing slash is a common way of writing the root; anything longer
    // would be a path prefix we would silently drop.
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() || authority.contains('/') {
        bail!("invalid HTTP address {addr:?}");
    }
    let (host, port) = match authority.rfind(':') {
        // `[::1]` alone: the colon is inside the brackets.
        Some(i) if !authority[i..].contains(']') => {
            let port = authority[i + 1..]
                .parse::<u16>()
                .with_context(|| format!("invalid port in HTTP address {addr:?}"))?;
            (&authority[..i], port)
        }
        _ => (authority, 80),
    };
    if host.is_empty() {
        bail!("invalid HTTP address {addr:?}: missing host");
    }
    Ok(Target::Tcp { host: host.to_string(), port })
}

/// Percent-encodes `s` for use in a URL path or query, leaving only RFC 3986
/// unreserved characters and `/` as they are. `/` stays literal because KV
/// keys are paths (`/v1/kv/a/b`), and the agent decodes everything else back
/// to the original bytes, so keys like `a b/c#d` or `100%` round-trip.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// What the agent does to a path: undo the percent-encoding.
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn encode_keeps_slashes_and_unreserved() {
        assert_eq!(encode("a b/c#d"), "a%20b/c%23d");
        assert_eq!(encode("app/config-1.2_x~"), "app/config-1.2_x~");
        assert_eq!(encode("q?&=+%"), "q%3F%26%3D%2B%25");
        assert_eq!(encode("é"), "%C3%A9");
    }

    #[test]
    fn encode_round_trips() {
        for key in ["a b/c#d", "100%/x", "é/ü?x=1&y", "app#1.2.3.4#3000", ""] {
            assert_eq!(decode(&encode(key)), key);
        }
    }

    #[test]
    fn addresses() {
        let tcp = |h: &str, p| Target::Tcp { host: h.to_string(), port: p };
        assert_eq!(parse_addr("http://127.0.0.1:8500").unwrap(), tcp("127.0.0.1", 8500));
        assert_eq!(parse_addr("127.0.0.1:8500").unwrap(), tcp("127.0.0.1", 8500));
        assert_eq!(parse_addr("http://localhost:9/").unwrap(), tcp("localhost", 9));
        assert_eq!(parse_addr("[::1]:8500").unwrap(), tcp("[::1]", 8500));
        assert_eq!(parse_addr("http://[::1]").unwrap(), tcp("[::1]", 80));
        assert_eq!(parse_addr("example").unwrap(), tcp("example", 80));
        assert_eq!(
            parse_addr("unix:///tmp/agent.sock").unwrap(),
            Target::Unix(PathBuf::from("/tmp/agent.sock"))
        );
        assert!(parse_addr("https://127.0.0.1:8501").is_err());
        assert!(parse_addr("http://h:notaport").is_err());
        assert!(parse_addr("http://h:1/prefix").is_err());
        assert!(parse_addr(":8500").is_err());
    }

    #[test]
    fn request_target_adds_dc_and_stale_only_where_accepted() {
        let c = Client::new("h:1", None, Some("dc2".into()), true).unwrap();
        assert_eq!(
            c.request_target(&Method::GET, "/v1/kv/a%20b", &[("recurse", ""), ("separator", "/")]),
            "/v1/kv/a%20b?recurse&separator=/&dc=dc2&stale"
        );
        assert_eq!(c.request_target(&Method::PUT, "/v1/kv/k", &[]), "/v1/kv/k?dc=dc2");
        assert_eq!(c.request_target(&Method::GET, "/v1/agent/self", &[]), "/v1/agent/self");
    }

    #[test]
    fn status_error_reads_like_consul() {
        let e = StatusError { status: 500, body: "No cluster leader".into() };
        assert_eq!(e.to_string(), "Unexpected response code: 500 (No cluster leader)");
    }

    /// Serves one canned response and hands back the raw request it got.
    async fn one_shot_server(response: &'static str) -> (String, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the head, then as much body as Content-Length announces.
            loop {
                let n = sock.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
                let text = String::from_utf8_lossy(&seen).to_string();
                if let Some(end) = text.find("\r\n\r\n") {
                    let len = text
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if seen.len() >= end + 4 + len {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            sock.write_all(response.as_bytes()).await.unwrap();
            String::from_utf8_lossy(&seen).to_string()
        });
        (addr, task)
    }

    #[tokio::test]
    async fn put_sends_encoded_key_token_and_body() {
        let (addr, server) =
            one_shot_server("HTTP/1.1 200 OK\r\nContent-Length: 4\r\nX-Consul-Index: 7\r\n\r\ntrue").await;
        let c = Client::new(&format!("http://{addr}"), Some("secret".into()), None, false).unwrap();
        let path = format!("/v1/kv/{}", encode("a b/c#d"));
        let resp = c.put(&path, &[("flags", "42")], b"hello".to_vec()).await.unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(&resp.body[..], b"true");
        let req = server.await.unwrap();
        assert!(req.starts_with("PUT /v1/kv/a%20b/c%23d?flags=42 HTTP/1.1\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains("x-consul-token: secret\r\n"), "{req}");
        assert!(req.to_ascii_lowercase().contains(&format!("host: {addr}\r\n")), "{req}");
        assert!(req.ends_with("\r\n\r\nhello"), "{req}");
    }

    #[tokio::test]
    async fn non_2xx_becomes_status_error() {
        let (addr, _server) = one_shot_server(
            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 18\r\n\r\nNo cluster leader\n",
        )
        .await;
        let c = Client::new(&addr, None, None, false).unwrap();
        let err = c.get("/v1/catalog/nodes", &[]).await.unwrap_err();
        assert_eq!(err.to_string(), "Unexpected response code: 500 (No cluster leader)");
        assert_eq!(err.downcast_ref::<StatusError>().unwrap().status, 500);
    }

    #[tokio::test]
    async fn optional_get_maps_404_to_none() {
        let (addr, _server) = one_shot_server("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n").await;
        let c = Client::new(&addr, None, None, false).unwrap();
        assert!(c.get_optional("/v1/kv/missing", &[]).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn connection_failure_names_the_url() {
        // Bind then drop to get a port nobody listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let c = Client::new(&format!("127.0.0.1:{port}"), None, None, false).unwrap();
        let err = c.get("/v1/agent/self", &[]).await.unwrap_err().to_string();
        assert!(err.starts_with(&format!("Get \"http://127.0.0.1:{port}/v1/agent/self\": ")), "{err}");
    }
}
