//! The HTTP API on hyper 1: Consul's `/v1` paths, methods, query parameters, headers and
//! error texts, mapped onto typed core requests.
//!
//! Owns routing (404/405/OPTIONS), query parsing (blocking, consistency, `dc`, flags),
//! request body limits and decoding, rendering (compact or `?pretty` JSON, raw KV values,
//! plain-text errors) and response post-processing that is pure presentation: `?filter=`
//! and `?node-meta=`. Never decides anything about state: the node answers every request.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CONTENT_TYPE};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use muster_core::api::shapes::Reply;
use muster_core::api::{
    ApiError, ApiRequest, ApiResponse, Body, Consistency, EmptyShape, KeyringOp, KvRead, QueryOpts,
};
use muster_core::fsm::catalog::Health;
use muster_core::fsm::kv::KvSetMode;
use muster_core::ids::Index;
use muster_core::time::parse_go_duration;
use serde_json::Value;
use tokio::net::TcpListener;

use crate::host::NodeHandle;
use crate::limits::{LogThrottle, OpenConns};
use muster_core::api::decode;
use muster_core::api::filter::Filter;

/// Reads the config files again and says what a reload registers (`AgentReload`).
pub type Reloader = Arc<dyn Fn() -> Result<ApiRequest, String> + Send + Sync>;

/// Settings the HTTP layer needs from the agent configuration.
#[derive(Clone)]
pub struct HttpOptions {
    pub datacenter: String,
    /// Indent every JSON answer (`-dev` does, as Consul's does).
    pub pretty: bool,
    pub kv_max_value_size: usize,
    /// Open connections one client address may hold; the next is closed at once.
    pub max_conns_per_client: usize,
    /// `acl.default_policy`, echoed in `X-Consul-Default-ACL-Policy`.
    pub acl_default_policy: String,
    pub disable_unprintable_char_filter: bool,
    /// Default ports for `/v1/agent/join/:address` without a port.
    pub serf_lan_port: i32,
    pub serf_wan_port: i32,
    /// `PUT /v1/agent/reload`; `None` where nothing can be read again.
    pub reload: Option<Reloader>,
}

/// Bodies of endpoints other than KV are capped here (Consul's txn limit), so a client
/// cannot make the agent buffer without bound.
const MAX_OTHER_BODY: usize = 512 * 1024;

/// Accepts connections until the node is gone; each connection is served on its own task.
pub async fn serve(listener: TcpListener, node: NodeHandle, opts: Arc<HttpOptions>) {
    let open = OpenConns::default();
    let mut refused_log = LogThrottle::default();
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "http accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = open.take(peer.ip(), opts.max_conns_per_client) else {
            if let Some(suppressed) = refused_log.allow() {
                let limit = opts.max_conns_per_client;
                tracing::warn!(%peer, limit, suppressed, "too many HTTP connections from one address; closing the new one");
            }
            continue;
        };
        let (node, opts) = (node.clone(), opts.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req| {
                let (node, opts) = (node.clone(), opts.clone());
                async move { Ok::<_, Infallible>(handle(req, &node, &opts, peer).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "http connection ended with an error");
            }
        });
    }
}

/// A request's head must arrive within this (counted from the first byte of an idle
/// keep-alive connection too, so a connection sending nothing is closed after it).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A request's body must arrive within this once its head has.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// Parsed query string: presence-based flags and repeated keys are both common.
struct Query(Vec<(String, String)>);

impl Query {
    fn parse(q: Option<&str>) -> Query {
        Query(form_urlencoded::parse(q.unwrap_or("").as_bytes()).into_owned().collect())
    }
    fn has(&self, k: &str) -> bool {
        self.0.iter().any(|(x, _)| x == k)
    }
    fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(x, _)| x == k).map(|(_, v)| v.as_str())
    }
    fn all(&self, k: &str) -> Vec<String> {
        self.0.iter().filter(|(x, _)| x == k).map(|(_, v)| v.clone()).collect()
    }
}

/// What to do to a JSON answer before it leaves.
#[derive(Default)]
struct Post {
    filter: Option<Filter>,
    node_meta: Vec<(String, String)>,
    /// `/v1/catalog/services` with a filter: filter instances, then fold into name → tags.
    fold_services: bool,
    /// `/v1/catalog/node/<n>`: the filter applies to the node's `Services` map.
    filter_node_services: bool,
    pretty: bool,
}

impl Post {
    /// Whether the answer is printed as it comes: no filtering, folding or indenting.
    fn is_plain(&self) -> bool {
        self.filter.is_none() && self.node_meta.is_empty() && !self.fold_services && !self.pretty
    }
}

type Resp = Response<Full<Bytes>>;

async fn handle(req: Request<Incoming>, node: &NodeHandle, opts: &HttpOptions, peer: SocketAddr) -> Resp {
    let method = req.method().clone();
    let gzip_ok = accepts_gzip(req.headers());
    let raw_path = req.uri().path().to_string();
    let query = Query::parse(req.uri().query());
    let mut resp = match dispatch(req, node, opts, &method, &raw_path, &query).await {
        Ok(r) => r,
        Err(e) => text(e.status, &e.reason),
    };
    tracing::debug!(%method, path = %raw_path, status = resp.status().as_u16(), %peer, "http request");
    let policy = HeaderValue::from_str(&opts.acl_default_policy).unwrap_or(HeaderValue::from_static("allow"));
    resp.headers_mut().insert("X-Consul-Default-ACL-Policy", policy);
    if gzip_ok {
        resp = gzip(resp).await;
    }
    resp
}

/// Bodies shorter than this are sent as they are: compressing them saves nothing.
const GZIP_MIN_SIZE: usize = 1400;

/// Whether the client accepts gzip (and did not refuse it with `q=0`).
fn accepts_gzip(h: &hyper::HeaderMap) -> bool {
    h.get_all(hyper::header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';').map(str::trim);
            let coding = parts.next().unwrap_or("");
            let refused = parts.any(|p| p.replace(' ', "") == "q=0");
            coding.eq_ignore_ascii_case("gzip") && !refused
        })
}

/// Compresses a finished response when that is worth it, as Consul's gzip handler does.
async fn gzip(resp: Resp) -> Resp {
    use std::io::Write;
    let (mut parts, body) = resp.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    parts.headers.insert(hyper::header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if bytes.len() < GZIP_MIN_SIZE {
        return Response::from_parts(parts, Full::new(bytes));
    }
    let mut enc =
        flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::fast());
    let compressed = enc.write_all(&bytes).and_then(|()| enc.finish());
    match compressed {
        Ok(z) => {
            parts.headers.insert(hyper::header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            parts.headers.remove(hyper::header::CONTENT_LENGTH);
            Response::from_parts(parts, Full::new(Bytes::from(z)))
        }
        Err(_) => Response::from_parts(parts, Full::new(bytes)),
    }
}

fn err(status: u16, reason: impl Into<String>) -> ApiError {
    ApiError::new(status, reason)
}

fn text(status: u16, body: &str) -> Resp {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// The endpoint families: path (prefix ending in `/` takes the rest as a parameter) and
/// the methods each answers. Body-less agent actions also answer GET, as older Consul did,
/// since plain `curl URL` (the demo's way) sends GET.
const ROUTES: &[(&str, &[Method])] = &[
    ("/v1/kv/", &[Method::GET, Method::PUT, Method::POST, Method::DELETE]),
    ("/v1/catalog/register", &[Method::PUT, Method::POST]),
    ("/v1/catalog/deregister", &[Method::PUT, Method::POST]),
    ("/v1/catalog/datacenters", &[Method::GET]),
    ("/v1/catalog/nodes", &[Method::GET]),
    ("/v1/catalog/services", &[Method::GET]),
    ("/v1/catalog/service/", &[Method::GET]),
    ("/v1/catalog/node/", &[Method::GET]),
    ("/v1/health/node/", &[Method::GET]),
    ("/v1/health/checks/", &[Method::GET]),
    ("/v1/health/service/", &[Method::GET]),
    ("/v1/health/state/", &[Method::GET]),
    ("/v1/catalog/connect/", &[Method::GET]),
    ("/v1/catalog/gateway-services/", &[Method::GET]),
    ("/v1/health/connect/", &[Method::GET]),
    ("/v1/health/ingress/", &[Method::GET]),
    ("/v1/agent/self", &[Method::GET]),
    ("/v1/coordinate/datacenters", &[Method::GET]),
    ("/v1/coordinate/nodes", &[Method::GET]),
    ("/v1/coordinate/node/", &[Method::GET]),
    ("/v1/coordinate/update", &[Method::PUT]),
    ("/v1/agent/reload", &[Method::PUT]),
    ("/v1/agent/members", &[Method::GET]),
    ("/v1/agent/join/", &[Method::PUT, Method::POST]),
    ("/v1/agent/leave", &[Method::PUT, Method::POST]),
    ("/v1/agent/force-leave/", &[Method::PUT, Method::POST]),
    ("/v1/event/fire/", &[Method::PUT, Method::POST]),
    ("/v1/event/list", &[Method::GET]),
    ("/v1/agent/services", &[Method::GET]),
    ("/v1/agent/checks", &[Method::GET]),
    ("/v1/agent/service/register", &[Method::PUT, Method::POST]),
    ("/v1/agent/service/deregister/", &[Method::PUT, Method::POST, Method::GET]),
    ("/v1/agent/service/maintenance/", &[Method::PUT, Method::POST]),
    ("/v1/agent/service/", &[Method::GET]),
    ("/v1/agent/check/register", &[Method::PUT, Method::POST]),
    ("/v1/agent/check/deregister/", &[Method::PUT, Method::POST, Method::GET]),
    ("/v1/agent/check/pass/", &[Method::PUT, Method::POST, Method::GET]),
    ("/v1/agent/check/warn/", &[Method::PUT, Method::POST, Method::GET]),
    ("/v1/agent/check/fail/", &[Method::PUT, Method::POST, Method::GET]),
    ("/v1/agent/check/update/", &[Method::PUT, Method::POST]),
    ("/v1/agent/maintenance", &[Method::PUT, Method::POST]),
    ("/v1/status/leader", &[Method::GET]),
    ("/v1/operator/raft/configuration", &[Method::GET]),
    ("/v1/operator/raft/peer", &[Method::DELETE]),
    ("/v1/operator/keyring", &[Method::GET, Method::POST, Method::PUT, Method::DELETE]),
    ("/v1/status/peers", &[Method::GET]),
];

/// Finds the route for a path: (pattern, methods, parameter).
fn find_route(path: &str) -> Option<(&'static str, &'static [Method], String)> {
    ROUTES.iter().find_map(|(pattern, methods)| {
        if let Some(prefix) = pattern.strip_suffix('/') {
            let rest = path.strip_prefix(prefix)?.strip_prefix('/')?;
            Some((*pattern, *methods, rest.to_string()))
        } else {
            (path == *pattern).then(|| (*pattern, *methods, String::new()))
        }
    })
}

fn allow_header(methods: &[Method]) -> HeaderValue {
    let list: Vec<&str> = std::iter::once("OPTIONS").chain(methods.iter().map(Method::as_str)).collect();
    HeaderValue::from_str(&list.join(",")).unwrap_or(HeaderValue::from_static("OPTIONS"))
}

/// The first `%` in `raw` not followed by two hex digits, with what follows it (as Go's URL
/// parser reports it): such a path is refused rather than read as a key with a `%` in it.
fn bad_escape(raw: &str) -> Option<&str> {
    let bytes = raw.as_bytes();
    let at = (0..bytes.len()).find(|&i| {
        bytes[i] == b'%' && !(bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)))
    })?;
    (1..=3).rev().find_map(|n| raw.get(at..(at + n).min(raw.len())))
}

async fn dispatch(
    req: Request<Incoming>,
    node: &NodeHandle,
    opts: &HttpOptions,
    method: &Method,
    raw_path: &str,
    query: &Query,
) -> Result<Resp, ApiError> {
    if let Some(bad) = bad_escape(raw_path) {
        return Err(err(400, format!("invalid URL escape {bad:?}")));
    }
    let path = percent_encoding::percent_decode_str(raw_path).decode_utf8_lossy().to_string();
    if path.contains(['\n', '\r']) && !opts.disable_unprintable_char_filter {
        return Err(err(400, format!("Invalid URL path: {raw_path:?} contains a line break")));
    }
    if path == "/" || path.is_empty() {
        let mut r = text(200, "muster agent (Consul-compatible): the HTTP API lives under /v1/.\n");
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        return Ok(r);
    }
    let Some((pattern, methods, param)) = find_route(&path) else {
        return Err(err(404, "Invalid URL path: not a recognized HTTP API endpoint\n"));
    };
    if method == Method::OPTIONS {
        let mut r = Response::new(Full::new(Bytes::new()));
        r.headers_mut().insert(ALLOW, allow_header(methods));
        return Ok(r);
    }
    if !methods.contains(method) {
        let mut r = text(405, &format!("method {method} not allowed"));
        r.headers_mut().insert(ALLOW, allow_header(methods));
        return Ok(r);
    }
    let limit = if pattern == "/v1/kv/" { opts.kv_max_value_size } else { MAX_OTHER_BODY };
    let body = read_body(req, limit).await?;
    let mut post = Post { pretty: opts.pretty || query.has("pretty"), ..Post::default() };
    let mut api = build(pattern, method, param, query, body, opts, &mut post)?;
    if let Some(dc) = query.get("dc").filter(|d| !d.is_empty() && *d != opts.datacenter) {
        if api.needs_server() {
            api = ApiRequest::InDatacenter { dc: dc.to_string(), req: Box::new(api) };
        }
    }
    let resp = node.call(api).await.map_err(|e| err(500, e.to_string()))?;
    render(resp, &post)
}

/// How much of an oversized body is read and thrown away so the client, still sending, gets
/// to read the 413 instead of a reset connection; past this the connection is just closed.
const DRAIN_LIMIT: usize = 16 * 1024 * 1024;

async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Vec<u8>, ApiError> {
    let declared =
        req.headers().get(hyper::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    let too_large =
        |n: usize| err(413, format!("Request body({n} bytes) too large, max size: {limit} bytes"));
    // Answered before reading (so no `100 Continue` goes out) when the client waits for
    // one or claims more than is worth draining: a body claimed past the limit is refused
    // whether or not it ever comes. A smaller one already on its way is read and dropped
    // below, so its sender gets to read the 413 rather than a broken pipe.
    let expects = req.headers().contains_key(hyper::header::EXPECT);
    if let Some(n) = declared.filter(|&n| n > limit && (expects || n > DRAIN_LIMIT)) {
        return Err(too_large(n));
    }
    let mut body = req.into_body();
    let mut buf = Vec::new();
    let mut seen = 0usize;
    let deadline = tokio::time::Instant::now() + BODY_TIMEOUT;
    loop {
        let next = tokio::time::timeout_at(deadline, body.frame())
            .await
            .map_err(|_| err(408, format!("request body not received within {}s", BODY_TIMEOUT.as_secs())))?;
        let Some(frame) = next else { break };
        let frame = frame.map_err(|e| err(400, format!("failed to read request body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        seen += data.len();
        if seen <= limit {
            buf.extend_from_slice(&data);
        } else if seen > DRAIN_LIMIT {
            break;
        }
    }
    if seen > limit {
        return Err(too_large(seen));
    }
    Ok(buf)
}

/// Parses `?index=&wait=` and the consistency flags.
fn query_opts(q: &Query) -> Result<QueryOpts, ApiError> {
    let min_index = match q.get("index") {
        None | Some("") => Index::ZERO,
        Some(v) => Index(v.parse().map_err(|_| err(400, "Invalid index"))?),
    };
    let wait = match q.get("wait") {
        None | Some("") => None,
        Some(v) => Some(parse_go_duration(v).map_err(|_| err(400, "Invalid wait time"))?),
    };
    let consistency = match (q.has("stale"), q.has("consistent")) {
        (true, true) => {
            return Err(err(400, "Cannot specify ?stale with ?consistent, conflicting semantics."))
        }
        (true, false) => Consistency::Stale,
        (false, true) => Consistency::Consistent,
        (false, false) => Consistency::Default,
    };
    Ok(QueryOpts { min_index, wait, consistency })
}

/// Events are fired into this datacenter's gossip only.
fn check_dc(q: &Query, opts: &HttpOptions) -> Result<(), ApiError> {
    match q.get("dc") {
        Some(dc) if !dc.is_empty() && dc != opts.datacenter => Err(err(500, "No path to datacenter")),
        _ => Ok(()),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

fn parse_u64(q: &Query, key: &str) -> Result<Option<u64>, ApiError> {
    q.get(key)
        .map(|v| v.parse::<u64>().map_err(|_| err(400, format!("Invalid {key}: {v:?} is not a number"))))
        .transpose()
}

fn json_body(body: &[u8]) -> Result<Value, ApiError> {
    decode::parse_body(body).map_err(|e| err(400, e.to_string()))
}

fn decoded<T>(r: Result<T, decode::DecodeError>) -> Result<T, ApiError> {
    r.map_err(|e| err(400, e.to_string()))
}

fn require(param: String, what: &str) -> Result<String, ApiError> {
    if param.is_empty() {
        Err(err(400, format!("Missing {what}")))
    } else {
        Ok(param)
    }
}

/// Builds the typed request for one route.
fn build(
    pattern: &str,
    method: &Method,
    param: String,
    q: &Query,
    body: Vec<u8>,
    opts: &HttpOptions,
    post: &mut Post,
) -> Result<ApiRequest, ApiError> {
    let reads_catalog = pattern.starts_with("/v1/catalog/") || pattern.starts_with("/v1/health/");
    if reads_catalog && *method == Method::GET {
        post.filter = match q.get("filter").filter(|f| !f.trim().is_empty()) {
            Some(f) => Some(Filter::parse(f).map_err(|e| err(400, e.to_string()))?),
            None => None,
        };
        post.node_meta = q
            .all("node-meta")
            .into_iter()
            .map(|nm| match nm.split_once(':') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (nm, String::new()),
            })
            .collect();
    }
    // No peerings exist: any list of a peer's nodes, services or checks is empty.
    if reads_catalog && q.get("peer").is_some_and(|p| !p.is_empty()) {
        let shape = match pattern {
            "/v1/catalog/services" => EmptyShape::Object,
            "/v1/catalog/node/" => EmptyShape::Null,
            _ => EmptyShape::List,
        };
        return Ok(ApiRequest::Empty { q: query_opts(q)?, shape });
    }
    Ok(match pattern {
        "/v1/kv/" => return kv(method, param, q, body),
        "/v1/catalog/connect/"
        | "/v1/catalog/gateway-services/"
        | "/v1/health/connect/"
        | "/v1/health/ingress/" => {
            require(param, "service name")?;
            ApiRequest::Empty { q: query_opts(q)?, shape: EmptyShape::List }
        }
        "/v1/catalog/register" => {
            ApiRequest::CatalogRegister(Box::new(decoded(decode::catalog_register(&json_body(&body)?))?))
        }
        "/v1/catalog/deregister" => {
            ApiRequest::CatalogDeregister(decoded(decode::catalog_deregister(&json_body(&body)?))?)
        }
        "/v1/catalog/datacenters" => ApiRequest::CatalogDatacenters,
        "/v1/catalog/nodes" => ApiRequest::CatalogNodes { q: query_opts(q)?, near: near(q) },
        "/v1/catalog/services" if post.filter.is_some() || !post.node_meta.is_empty() => {
            post.fold_services = true;
            ApiRequest::CatalogAllInstances { q: query_opts(q)? }
        }
        "/v1/catalog/services" => ApiRequest::CatalogServices { q: query_opts(q)? },
        "/v1/catalog/service/" => ApiRequest::CatalogService {
            name: require(param, "service name")?,
            tags: q.all("tag"),
            q: query_opts(q)?,
            near: near(q),
        },
        "/v1/catalog/node/" => {
            post.filter_node_services = true;
            ApiRequest::CatalogNode { name: require(param, "node name")?, q: query_opts(q)? }
        }
        "/v1/health/node/" => {
            ApiRequest::HealthNode { name: require(param, "node name")?, q: query_opts(q)? }
        }
        "/v1/health/checks/" => {
            ApiRequest::HealthChecks { service: require(param, "service name")?, q: query_opts(q)? }
        }
        "/v1/health/service/" => {
            let passing = match q.get("passing") {
                None => false,
                Some("") => true,
                Some(v) => parse_bool(v).ok_or_else(|| err(400, "Invalid value for ?passing"))?,
            };
            ApiRequest::HealthService {
                service: require(param, "service name")?,
                tags: q.all("tag"),
                passing,
                q: query_opts(q)?,
                near: near(q),
            }
        }
        "/v1/health/state/" => {
            let state = require(param, "check state")?;
            if state != "any" && Health::parse(&state).is_none() {
                return Err(err(400, "Invalid check state"));
            }
            ApiRequest::HealthState { state, q: query_opts(q)? }
        }
        "/v1/agent/self" => ApiRequest::AgentSelf,
        "/v1/coordinate/datacenters" => ApiRequest::CoordinateDatacenters,
        "/v1/coordinate/nodes" => ApiRequest::CoordinateNodes { q: query_opts(q)? },
        "/v1/coordinate/node/" => {
            ApiRequest::CoordinateNode { name: require(param, "node name")?, q: query_opts(q)? }
        }
        "/v1/coordinate/update" => {
            let entry = serde_json::from_value(json_body(&body)?)
                .map_err(|e| err(400, format!("Request decode failed: {e}")))?;
            ApiRequest::CoordinateUpdate(Box::new(entry))
        }
        "/v1/agent/reload" => match &opts.reload {
            Some(reload) => reload().map_err(|e| err(500, format!("Failed reloading config: {e}")))?,
            None => return Err(err(500, "this agent has no configuration to reload")),
        },
        "/v1/agent/members" => {
            let wan = flag(q, "wan");
            if wan && q.get("segment").is_some_and(|s| !s.is_empty() && s != "_all") {
                return Err(err(400, "Cannot provide a segment with wan=true"));
            }
            ApiRequest::AgentMembers { wan }
        }
        "/v1/agent/join/" => {
            let wan = flag(q, "wan");
            let port = if wan { opts.serf_wan_port } else { opts.serf_lan_port };
            let target = require(param, "address to join")?;
            let addr = crate::agent::resolve_addr(&target, port).map_err(|e| err(500, e.to_string()))?;
            ApiRequest::AgentJoin { addr, wan }
        }
        "/v1/agent/leave" => ApiRequest::AgentLeave,
        "/v1/agent/force-leave/" => ApiRequest::AgentForceLeave {
            node: require(param, "node name")?,
            prune: flag(q, "prune"),
            wan: flag(q, "wan"),
        },
        "/v1/event/fire/" => {
            check_dc(q, opts)?;
            let name = require(param, "name")?;
            let filter = |k: &str| -> Result<String, ApiError> {
                let v = q.get(k).unwrap_or("").to_string();
                regex::Regex::new(&v).map_err(|e| err(400, format!("Invalid {k} filter: {e}")))?;
                Ok(v)
            };
            let (node, service, tag) = (filter("node")?, filter("service")?, filter("tag")?);
            if !tag.is_empty() && service.is_empty() {
                return Err(err(400, "Cannot provide tag filter without service filter"));
            }
            ApiRequest::EventFire { name, payload: body, node, service, tag }
        }
        "/v1/event/list" => ApiRequest::EventList {
            name: q.get("name").filter(|n| !n.is_empty()).map(str::to_string),
            q: query_opts(q)?,
        },
        "/v1/agent/services" => {
            post.filter = agent_filter(q)?;
            ApiRequest::AgentServices
        }
        "/v1/agent/checks" => {
            post.filter = agent_filter(q)?;
            ApiRequest::AgentChecks
        }
        "/v1/agent/service/register" => ApiRequest::AgentServiceRegister {
            def: Box::new(decoded(decode::service_def(&json_body(&body)?))?),
            replace_existing_checks: q
                .get("replace-existing-checks")
                .is_some_and(|v| v.is_empty() || parse_bool(v) == Some(true)),
        },
        "/v1/agent/service/deregister/" => {
            ApiRequest::AgentServiceDeregister { id: require(param, "service ID")? }
        }
        "/v1/agent/service/maintenance/" => {
            let (enable, reason) = maintenance_params(q)?;
            ApiRequest::AgentServiceMaintenance { id: require(param, "service ID")?, enable, reason }
        }
        "/v1/agent/service/" => ApiRequest::AgentService { id: require(param, "service ID")? },
        "/v1/agent/check/register" => {
            ApiRequest::AgentCheckRegister { def: Box::new(decoded(decode::check_def(&json_body(&body)?))?) }
        }
        "/v1/agent/check/deregister/" => ApiRequest::AgentCheckDeregister { id: require(param, "check ID")? },
        "/v1/agent/check/pass/" | "/v1/agent/check/warn/" | "/v1/agent/check/fail/" => {
            let status = match pattern {
                "/v1/agent/check/pass/" => Health::Passing,
                "/v1/agent/check/warn/" => Health::Warning,
                _ => Health::Critical,
            };
            ApiRequest::AgentCheckTtl {
                id: require(param, "check ID")?,
                status,
                output: q.get("note").unwrap_or("").to_string(),
            }
        }
        "/v1/agent/check/update/" => {
            let (status, output) = decoded(decode::check_update(&json_body(&body)?))?;
            let status = status.unwrap_or_default();
            let status = Health::parse(&status)
                .ok_or_else(|| err(400, format!("Invalid check status: '{status}'")))?;
            ApiRequest::AgentCheckTtl { id: require(param, "check ID")?, status, output }
        }
        "/v1/agent/maintenance" => {
            let (enable, reason) = maintenance_params(q)?;
            ApiRequest::AgentMaintenance { enable, reason }
        }
        "/v1/status/leader" => ApiRequest::StatusLeader,
        "/v1/status/peers" => ApiRequest::StatusPeers,
        "/v1/operator/raft/configuration" => ApiRequest::OperatorRaftConfiguration,
        "/v1/operator/keyring" => {
            let key = || -> Result<String, ApiError> {
                let v = json_body(&body)?;
                let key = v.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case("key")));
                match key.map(|(_, k)| k) {
                    Some(Value::String(k)) if !k.is_empty() => Ok(k.clone()),
                    _ => Err(err(400, "Request body must contain a \"Key\" string")),
                }
            };
            let op = match *method {
                Method::GET => KeyringOp::List,
                Method::POST => KeyringOp::Install(key()?),
                Method::PUT => KeyringOp::Use(key()?),
                _ => KeyringOp::Remove(key()?),
            };
            ApiRequest::OperatorKeyring { op }
        }
        "/v1/operator/raft/peer" => {
            let get = |k: &str| q.get(k).map(str::to_string);
            ApiRequest::OperatorRaftRemovePeer { address: get("address"), id: get("id") }
        }
        other => return Err(err(404, format!("Invalid URL path: {other} is not routed"))),
    })
}

/// `?near=<node>` (or `_agent`); empty means no sorting.
fn near(q: &Query) -> Option<String> {
    q.get("near").filter(|n| !n.is_empty()).map(str::to_string)
}

/// A flag parameter: present with an empty or true value (`?wan`, `?wan=1`, `?prune`).
fn flag(q: &Query, name: &str) -> bool {
    q.get(name).is_some_and(|v| v.is_empty() || v == "1" || parse_bool(v) == Some(true))
}

fn agent_filter(q: &Query) -> Result<Option<Filter>, ApiError> {
    q.get("filter")
        .filter(|f| !f.trim().is_empty())
        .map(|f| Filter::parse(f).map_err(|e| err(400, e.to_string())))
        .transpose()
}

fn maintenance_params(q: &Query) -> Result<(bool, String), ApiError> {
    let enable = match q.get("enable") {
        None => return Err(err(400, "Missing value for enable")),
        Some(v) => parse_bool(v).ok_or_else(|| err(400, format!("Invalid value for enable: {v:?}")))?,
    };
    Ok((enable, q.get("reason").unwrap_or("").to_string()))
}

fn kv(method: &Method, key: String, q: &Query, body: Vec<u8>) -> Result<ApiRequest, ApiError> {
    match *method {
        Method::GET => {
            let read = if q.has("keys") {
                let sep = q.get("separator").or_else(|| q.get("seperator")).map(str::to_string);
                KvRead::Keys { separator: sep }
            } else if q.has("recurse") {
                KvRead::Recurse
            } else {
                KvRead::Entry { raw: q.has("raw") }
            };
            Ok(ApiRequest::KvGet { key, read, q: query_opts(q)? })
        }
        Method::DELETE => {
            let recurse = q.has("recurse");
            let cas = parse_u64(q, "cas")?;
            if recurse && cas.is_some() {
                return Err(err(400, "Conflicting flags: cas and recurse cannot be combined"));
            }
            Ok(ApiRequest::KvDelete { key, recurse, cas })
        }
        _ => {
            let flags = parse_u64(q, "flags")?.unwrap_or(0);
            let modes: Vec<KvSetMode> = [
                parse_u64(q, "cas")?.map(KvSetMode::Cas),
                q.get("acquire").map(|s| KvSetMode::Acquire(s.to_string())),
                q.get("release").map(|s| KvSetMode::Release(s.to_string())),
            ]
            .into_iter()
            .flatten()
            .collect();
            if modes.len() > 1 {
                return Err(err(400, "Conflicting flags: only one of cas, acquire and release may be given"));
            }
            let mode = modes.into_iter().next().unwrap_or(KvSetMode::Set);
            Ok(ApiRequest::KvPut { key, value: body, flags, mode })
        }
    }
}

/// Turns the node's answer into an HTTP response.
fn render(resp: ApiResponse, post: &Post) -> Result<Resp, ApiError> {
    let mut r = match resp.body {
        Body::Empty => {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::from_u16(resp.status).unwrap_or(StatusCode::OK);
            r
        }
        Body::Text(t) => text(resp.status, &t),
        Body::Raw(bytes) => {
            let mut r = Response::new(Full::new(Bytes::from(bytes)));
            let h = r.headers_mut();
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
            h.insert("X-Content-Type-Options", HeaderValue::from_static("nosniff"));
            h.insert("Content-Security-Policy", HeaderValue::from_static("sandbox"));
            r
        }
        // With nothing to change in the answer, it is written straight out: a server's
        // rendering as it came, or the reply serialized without a tree of values.
        Body::JsonText(text) if post.is_plain() => json_response(resp.status, text.into_bytes()),
        Body::Json(reply) if post.is_plain() => {
            json_response(resp.status, serde_json::to_vec(&reply).map_err(|e| err(500, e.to_string()))?)
        }
        Body::Json(_) | Body::JsonText(_) => {
            let value = match resp.body {
                Body::Json(reply) => {
                    let maps = matches!(reply, Reply::AgentServices(_) | Reply::AgentChecks(_));
                    let value = serde_json::to_value(&reply).map_err(|e| err(500, e.to_string()))?;
                    present(value, maps, post)
                }
                Body::JsonText(text) => {
                    present(serde_json::from_str(&text).map_err(|e| err(500, e.to_string()))?, false, post)
                }
                _ => unreachable!("matched above"),
            };
            let bytes = if post.pretty {
                let mut b = pretty4(&value);
                b.push(b'\n');
                b
            } else {
                serde_json::to_vec(&value).map_err(|e| err(500, e.to_string()))?
            };
            json_response(resp.status, bytes)
        }
        Body::Dns(_) => return Err(err(500, "a DNS answer reached the HTTP layer")),
    };
    if let Some(meta) = resp.meta {
        let h = r.headers_mut();
        h.insert("X-Consul-Index", HeaderValue::from(meta.index.0.max(1)));
        h.insert(
            "X-Consul-KnownLeader",
            HeaderValue::from_static(if meta.known_leader { "true" } else { "false" }),
        );
        h.insert("X-Consul-LastContact", HeaderValue::from(meta.last_contact_ms));
        if let Some(c) = meta.consistency {
            h.insert("X-Consul-Effective-Consistency", HeaderValue::from_static(c.header_value()));
        }
    }
    Ok(r)
}

fn json_response(status: u16, mut bytes: Vec<u8>) -> Resp {
    bytes.shrink_to_fit();
    let mut r = Response::new(Full::new(Bytes::from(bytes)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// JSON with 4-space indentation, as Consul's `?pretty`.
fn pretty4(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"    ");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
    serde::Serialize::serialize(v, &mut ser).expect("a JSON value always serializes");
    out
}

/// Applies `?filter=` and `?node-meta=` to a list answer, or to a map answer's values
/// where `maps` says the map is a list by key (agent services and checks).
fn present(mut value: Value, maps: bool, post: &Post) -> Value {
    let keep = |v: &Value| {
        post.filter.as_ref().is_none_or(|f| f.matches(v))
            && post.node_meta.iter().all(|(k, want)| node_meta_of(v, k) == Some(want))
    };
    match &mut value {
        Value::Array(items) => items.retain(keep),
        Value::Object(map) if maps => map.retain(|_, v| keep(v)),
        Value::Object(map) if post.filter_node_services && post.filter.is_some() => {
            if let Some(Value::Object(services)) = map.get_mut("Services") {
                services.retain(|_, v| post.filter.as_ref().is_none_or(|f| f.matches(v)));
            }
        }
        _ => {}
    }
    if post.fold_services {
        value = fold_services(&value);
    }
    value
}

/// The node metadata value `k` of a node, service row or health row.
fn node_meta_of<'a>(v: &'a Value, k: &str) -> Option<&'a String> {
    let meta =
        v.get("NodeMeta").or_else(|| v.get("Node").and_then(|n| n.get("Meta"))).or_else(|| v.get("Meta"))?;
    match meta.get(k)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// Folds flattened service rows back into `{"name": [tags...]}`.
fn fold_services(rows: &Value) -> Value {
    let mut map: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> = Default::default();
    for row in rows.as_array().into_iter().flatten() {
        let name = row.get("ServiceName").and_then(Value::as_str).unwrap_or_default().to_string();
        let tags =
            row.get("ServiceTags").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str);
        map.entry(name).or_default().extend(tags.map(str::to_string));
    }
    serde_json::to_value(map).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_take_parameters_and_methods() {
        let (p, m, rest) = find_route("/v1/kv/a/b/c").unwrap();
        assert_eq!((p, rest.as_str()), ("/v1/kv/", "a/b/c"));
        assert!(m.contains(&Method::DELETE));
        assert_eq!(find_route("/v1/kv/").unwrap().2, "");
        assert_eq!(find_route("/v1/agent/service/deregister/app#1").unwrap().2, "app#1");
        assert_eq!(find_route("/v1/agent/service/web").unwrap().0, "/v1/agent/service/");
        assert_eq!(find_route("/v1/agent/service/register").unwrap().0, "/v1/agent/service/register");
        assert!(find_route("/v1/nope").is_none());
        assert!(find_route("/v1/catalog/nodesx").is_none());
    }

    #[test]
    fn a_percent_without_two_hex_digits_is_a_bad_escape() {
        assert_eq!(bad_escape("/v1/kv/%zz"), Some("%zz"));
        assert_eq!(bad_escape("/v1/kv/a%2"), Some("%2"));
        assert_eq!(bad_escape("/v1/kv/a%"), Some("%"));
        assert_eq!(bad_escape("/v1/kv/%é"), Some("%é"), "never splits a character");
        assert_eq!(bad_escape("/v1/kv/%aé"), Some("%a"), "a cut inside a character is shortened");
        assert_eq!(bad_escape("/v1/kv/a%2Fb%20c"), None);
        assert_eq!(bad_escape("/v1/kv/plain"), None);
    }

    #[test]
    fn query_flags_are_presence_based_and_bad_values_refused() {
        let q = Query::parse(Some("index=5&wait=10s&stale"));
        let o = query_opts(&q).unwrap();
        assert_eq!((o.min_index, o.consistency), (Index(5), Consistency::Stale));
        assert_eq!(query_opts(&Query::parse(Some("index=x"))).unwrap_err().reason, "Invalid index");
        assert_eq!(query_opts(&Query::parse(Some("wait=15"))).unwrap_err().reason, "Invalid wait time");
        assert_eq!(query_opts(&Query::parse(Some("stale&consistent"))).unwrap_err().status, 400);
        let put = kv(&Method::PUT, "k".into(), &Query::parse(Some("cas=1&acquire=s")), vec![]);
        assert_eq!(put.unwrap_err().status, 400);
        let put = kv(&Method::PUT, "k".into(), &Query::parse(Some("flags=42")), vec![1]).unwrap();
        assert!(matches!(put, ApiRequest::KvPut { flags: 42, mode: KvSetMode::Set, .. }));
    }

    #[test]
    fn gzip_is_negotiated() {
        let mut h = hyper::HeaderMap::new();
        assert!(!accepts_gzip(&h));
        h.insert(hyper::header::ACCEPT_ENCODING, HeaderValue::from_static("deflate, gzip;q=1.0, br"));
        assert!(accepts_gzip(&h));
        h.insert(hyper::header::ACCEPT_ENCODING, HeaderValue::from_static("gzip;q=0"));
        assert!(!accepts_gzip(&h));
    }

    #[test]
    fn filters_and_node_meta_apply_to_lists_and_maps() {
        let rows = serde_json::json!([
            {"ServiceName": "web", "ServiceTags": ["a"], "NodeMeta": {"rack": "r1"}},
            {"ServiceName": "db", "ServiceTags": ["b"], "NodeMeta": {"rack": "r2"}},
        ]);
        assert_eq!(fold_services(&rows), serde_json::json!({"db": ["b"], "web": ["a"]}));
        let v = serde_json::json!({"Node": {"Meta": {"rack": "r1"}}});
        assert_eq!(node_meta_of(&v, "rack").map(String::as_str), Some("r1"));
        assert_eq!(pretty4(&serde_json::json!({"a": 1})), b"{\n    \"a\": 1\n}");
    }
}
