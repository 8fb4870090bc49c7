//! Request bodies as Consul's clients send them, decoded from JSON into the definition types
//! of `api::defs`.
//!
//! Owns the decoding rules Consul inherits from Go's `encoding/json` and its own config
//! aliases: field names match ignoring case and underscores (`EnableTagOverride`,
//! `enabletagoverride`, `enable_tag_override`), durations come as Go duration text or as a
//! number of nanoseconds, `null` means absent, unknown fields are ignored, and the keys of
//! user maps (`Meta`, `NodeMeta`, `Header`, `TaggedAddresses`) are data and keep their case.
//! Owns the `Request decode failed: ...` error text too.
//!
//! Never validates or defaults what it decodes (required names, statuses, check kinds, meta
//! rules belong to `ServiceDef::to_node_service`, `CheckDef::build` and friends) and never
//! touches the store.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::api::defs::{CatalogCheckDef, CatalogDeregisterDef, CatalogRegisterDef, CheckDef, ServiceDef};
use crate::fsm::catalog::{ServiceAddress, Weights};
use crate::time::parse_go_duration;
use serde_json::Value;

/// Why a body was refused; Display is the 400 text the API answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No body where one is required; Consul passes on Go's `io.EOF` text as is.
    #[error("Request decode failed: EOF")]
    Eof,
    /// Not JSON; serde_json's description of where it broke.
    #[error("Request decode failed: {0}")]
    Syntax(String),
    /// A field holds the wrong JSON type. `field` is a path such as `Checks[1].Interval`,
    /// empty when the body itself is not an object.
    #[error("Request decode failed: {}expected {expected}, got {got}", at(.field))]
    WrongType { field: String, expected: &'static str, got: &'static str },
    /// The type is right but the value is unusable (bad duration text, number out of range).
    #[error("Request decode failed: {}{reason}", at(.field))]
    BadValue { field: String, reason: String },
}

fn at(field: &str) -> String {
    if field.is_empty() {
        String::new()
    } else {
        format!("field \"{field}\": ")
    }
}

/// Parses a request body. Like Go's `json.Decoder`, only the first JSON value counts: an
/// empty (or all-whitespace) body is `EOF`, and anything after the first value is ignored.
pub fn parse_body(bytes: &[u8]) -> Result<Value, DecodeError> {
    match serde_json::Deserializer::from_slice(bytes).into_iter::<Value>().next() {
        None => Err(DecodeError::Eof),
        Some(parsed) => parsed.map_err(|e| DecodeError::Syntax(e.to_string())),
    }
}

/// `PUT /v1/agent/service/register` body, or a config file `service` block.
pub fn service_def(v: &Value) -> Result<ServiceDef, DecodeError> {
    service(v, "", &["Name"])
}

/// `PUT /v1/agent/check/register` body, or a config file `check` block.
pub fn check_def(v: &Value) -> Result<CheckDef, DecodeError> {
    check(v, "")
}

/// `PUT /v1/catalog/register` body.
pub fn catalog_register(v: &Value) -> Result<CatalogRegisterDef, DecodeError> {
    let o = Obj::new(v, "")?;
    Ok(CatalogRegisterDef {
        id: o.or_default(&["ID"], string)?,
        node: o.or_default(&["Node"], string)?,
        address: o.or_default(&["Address"], string)?,
        datacenter: o.get(&["Datacenter"], string)?,
        tagged_addresses: o.or_default(&["TaggedAddresses"], map(string))?,
        node_meta: o.or_default(&["NodeMeta"], map(string))?,
        // The catalog's `NodeService` names the service `Service`; some clients send the
        // agent's `Name` there, which is taken when `Service` is missing.
        service: o.get(&["Service"], |v: &Value, field: &str| service(v, field, &["Service", "Name"]))?,
        checks: o.one_then_many("Check", "Checks", catalog_check)?,
        skip_node_update: o.or_default(&["SkipNodeUpdate"], boolean)?,
    })
}

/// `PUT /v1/catalog/deregister` body.
pub fn catalog_deregister(v: &Value) -> Result<CatalogDeregisterDef, DecodeError> {
    let o = Obj::new(v, "")?;
    Ok(CatalogDeregisterDef {
        node: o.or_default(&["Node"], string)?,
        datacenter: o.get(&["Datacenter"], string)?,
        service_id: o.get(&["ServiceID"], string)?,
        check_id: o.get(&["CheckID"], string)?,
    })
}

/// `PUT /v1/agent/check/update/:id` body: `Status` (absent = unchanged) and `Output`.
pub fn check_update(v: &Value) -> Result<(Option<String>, String), DecodeError> {
    let o = Obj::new(v, "")?;
    Ok((o.get(&["Status"], string)?, o.or_default(&["Output"], string)?))
}

/// A service object; `name_keys` differ between the agent's definition and the catalog's.
fn service(v: &Value, path: &str, name_keys: &[&str]) -> Result<ServiceDef, DecodeError> {
    let o = Obj::new(v, path)?;
    Ok(ServiceDef {
        id: o.get(&["ID"], string)?,
        name: o.or_default(name_keys, string)?,
        tags: o.or_default(&["Tags"], list(string))?,
        address: o.or_default(&["Address"], string)?,
        tagged_addresses: o.or_default(&["TaggedAddresses"], map(service_address))?,
        meta: o.or_default(&["Meta"], map(string))?,
        port: o.or_default(&["Port"], uint)?,
        kind: o.or_default(&["Kind"], string)?,
        weights: o.get(&["Weights"], weights)?,
        enable_tag_override: o.or_default(&["EnableTagOverride"], boolean)?,
        checks: o.one_then_many("Check", "Checks", check)?,
    })
}

/// A check object. The first name of each list is the canonical one; later names are aliases
/// that only count when it is missing, as Consul's alias translation does.
fn check(v: &Value, path: &str) -> Result<CheckDef, DecodeError> {
    let o = Obj::new(v, path)?;
    Ok(CheckDef {
        id: o.get(&["ID", "CheckID"], string)?,
        name: o.get(&["Name"], string)?,
        service_id: o.get(&["ServiceID"], string)?,
        notes: o.or_default(&["Notes"], string)?,
        status: o.get(&["Status"], string)?,
        ttl: o.get(&["TTL"], duration)?,
        interval: o.get(&["Interval"], duration)?,
        timeout: o.get(&["Timeout"], duration)?,
        http: o.get(&["HTTP"], string)?,
        method: o.get(&["Method"], string)?,
        header: o.or_default(&["Header"], map(header_values))?,
        body: o.get(&["Body"], string)?,
        tls_skip_verify: o.or_default(&["TLSSkipVerify"], boolean)?,
        disable_redirects: o.or_default(&["DisableRedirects"], boolean)?,
        tcp: o.get(&["TCP"], string)?,
        udp: o.get(&["UDP"], string)?,
        grpc: o.get(&["GRPC"], string)?,
        grpc_use_tls: o.or_default(&["GRPCUseTLS"], boolean)?,
        args: o.or_default(&["ScriptArgs", "Args"], list(string))?,
        script: o.get(&["Script"], string)?,
        docker_container_id: o.get(&["DockerContainerID"], string)?,
        h2ping: o.get(&["H2PING"], string)?,
        alias_service: o.get(&["AliasService"], string)?,
        deregister_critical_service_after: o.get(&["DeregisterCriticalServiceAfter"], duration)?,
        output_max_size: o.get(&["OutputMaxSize"], uint)?,
        success_before_passing: o.or_default(&["SuccessBeforePassing"], uint)?,
        failures_before_warning: o.get(&["FailuresBeforeWarning"], uint)?,
        failures_before_critical: o.or_default(&["FailuresBeforeCritical"], uint)?,
    })
}

/// A catalog check: a status to record, with the probe (if any) only described in `Definition`.
fn catalog_check(v: &Value, path: &str) -> Result<CatalogCheckDef, DecodeError> {
    let o = Obj::new(v, path)?;
    Ok(CatalogCheckDef {
        check_id: o.get(&["CheckID", "ID"], string)?,
        name: o.or_default(&["Name"], string)?,
        notes: o.or_default(&["Notes"], string)?,
        status: o.get(&["Status"], string)?,
        output: o.or_default(&["Output"], string)?,
        service_id: o.or_default(&["ServiceID"], string)?,
        definition: o.or_default(&["Definition"], check)?,
    })
}

fn service_address(v: &Value, path: &str) -> Result<ServiceAddress, DecodeError> {
    let o = Obj::new(v, path)?;
    Ok(ServiceAddress { address: o.or_default(&["Address"], string)?, port: o.or_default(&["Port"], uint)? })
}

/// A missing member is zero, as in Go; `ServiceDef::to_node_service` raises `Passing` to 1.
fn weights(v: &Value, path: &str) -> Result<Weights, DecodeError> {
    let o = Obj::new(v, path)?;
    Ok(Weights { passing: o.or_default(&["Passing"], uint)?, warning: o.or_default(&["Warning"], uint)? })
}

/// One JSON object, its field names folded once so that every lookup ignores case and
/// underscores.
struct Obj<'a> {
    /// Where this object sits in the body (`""`, `Service`, `Checks[2]`), for error text.
    path: String,
    /// Folded name → value. `null` members are left out so they read as absent.
    fields: BTreeMap<String, &'a Value>,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: &str) -> Result<Self, DecodeError> {
        let Value::Object(members) = v else {
            return Err(wrong(path, "an object", v));
        };
        let mut fields = BTreeMap::new();
        // When one name is spelled twice ("Name" and "name") the first in key order wins; Go
        // would take the last in the document, which serde_json's map no longer knows.
        for (k, x) in members.iter().filter(|(_, x)| !x.is_null()) {
            fields.entry(fold(k)).or_insert(x);
        }
        Ok(Obj { path: path.to_owned(), fields })
    }

    /// The first of `names` present, converted; errors name the field as the client spelled
    /// it (up to case), prefixed by this object's path.
    fn get<T>(
        &self,
        names: &[&str],
        conv: impl Fn(&Value, &str) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        let Some((name, v)) = names.iter().find_map(|n| Some((n, *self.fields.get(&fold(n))?))) else {
            return Ok(None);
        };
        let field = if self.path.is_empty() { (*name).to_owned() } else { format!("{}.{name}", self.path) };
        conv(v, &field).map(Some)
    }

    fn or_default<T: Default>(
        &self,
        names: &[&str],
        conv: impl Fn(&Value, &str) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        Ok(self.get(names, conv)?.unwrap_or_default())
    }

    /// A single-object field followed by an array field of the same things (`Check` then
    /// `Checks`): Consul numbers generated check IDs in that order.
    fn one_then_many<T>(
        &self,
        one: &str,
        many: &str,
        conv: impl Fn(&Value, &str) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        let mut all: Vec<T> = self.get(&[one], &conv)?.into_iter().collect();
        all.extend(self.or_default(&[many], list(&conv))?);
        Ok(all)
    }
}

/// The form two field names share when Consul would take one for the other.
fn fold(name: &str) -> String {
    name.chars().filter(|c| *c != '_').flat_map(char::to_lowercase).collect()
}

fn wrong(field: &str, expected: &'static str, v: &Value) -> DecodeError {
    let got = match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    };
    DecodeError::WrongType { field: field.to_owned(), expected, got }
}

fn bad(field: &str, reason: String) -> DecodeError {
    DecodeError::BadValue { field: field.to_owned(), reason }
}

fn string(v: &Value, field: &str) -> Result<String, DecodeError> {
    v.as_str().map(str::to_owned).ok_or_else(|| wrong(field, "a string", v))
}

fn boolean(v: &Value, field: &str) -> Result<bool, DecodeError> {
    v.as_bool().ok_or_else(|| wrong(field, "a boolean", v))
}

/// A whole non-negative number that fits `T`. Like Go, `80.0` is not an integer.
fn uint<T: TryFrom<u64>>(v: &Value, field: &str) -> Result<T, DecodeError> {
    let Value::Number(n) = v else {
        return Err(wrong(field, "a number", v));
    };
    n.as_u64().and_then(|n| T::try_from(n).ok()).ok_or_else(|| {
        let ty = std::any::type_name::<T>();
        bad(field, format!("number {n} does not fit in {ty}"))
    })
}

/// Go duration text (`"10s"`, `"1m30s"`, `"0"`) or a JSON number of nanoseconds.
fn duration(v: &Value, field: &str) -> Result<Duration, DecodeError> {
    match v {
        Value::String(s) => parse_go_duration(s).map_err(|e| bad(field, e.to_string())),
        Value::Number(n) => match (n.as_u64(), n.as_f64()) {
            (Some(ns), _) => Ok(Duration::from_nanos(ns)),
            // Consul reads the number as a float64 and truncates it to whole nanoseconds;
            // the cast saturates instead of wrapping for absurdly large values.
            (None, Some(f)) if f >= 0.0 => Ok(Duration::from_nanos(f as u64)),
            _ => Err(bad(field, format!("negative duration {n}"))),
        },
        _ => Err(wrong(field, "a duration string or a number of nanoseconds", v)),
    }
}

/// `Header` values are lists, but a lone string is taken as a one-element list because
/// hand-written bodies often say `{"X-Token": "t"}`.
fn header_values(v: &Value, field: &str) -> Result<Vec<String>, DecodeError> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        _ => list(string)(v, field),
    }
}

/// An array of `item`s; errors name the index (`Tags[2]`).
fn list<T>(
    item: impl Fn(&Value, &str) -> Result<T, DecodeError>,
) -> impl Fn(&Value, &str) -> Result<Vec<T>, DecodeError> {
    move |v: &Value, field: &str| match v {
        Value::Array(items) => {
            items.iter().enumerate().map(|(i, x)| item(x, &format!("{field}[{i}]"))).collect()
        }
        _ => Err(wrong(field, "an array", v)),
    }
}

/// A user map: its keys are data, kept exactly as sent; errors name the key (`Meta.env`).
fn map<T>(
    value: impl Fn(&Value, &str) -> Result<T, DecodeError>,
) -> impl Fn(&Value, &str) -> Result<BTreeMap<String, T>, DecodeError> {
    move |v: &Value, field: &str| match v {
        Value::Object(members) => {
            members.iter().map(|(k, x)| Ok((k.clone(), value(x, &format!("{field}.{k}"))?))).collect()
        }
        _ => Err(wrong(field, "an object", v)),
    }
}

/// Fuzz body: arbitrary bytes through the body parser and every decoder; none may panic.
#[cfg(any(test, feature = "fuzzing"))]
pub fn fuzz_bodies(data: &[u8]) {
    if let Ok(v) = parse_body(data) {
        let _ = service_def(&v);
        let _ = check_def(&v);
        let _ = catalog_register(&v);
        let _ = catalog_deregister(&v);
        let _ = check_update(&v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    fn err_text(r: Result<impl std::fmt::Debug, DecodeError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn python_client_lowercase_body() {
        let body = br#"{"name":"foo","id":"foo1","address":"1.2.3.4","port":80,"tags":["a"],
            "meta":{"Env":"x"},"enabletagoverride":true,"weights":{"passing":3,"warning":1},
            "checks":[{"http":"http://localhost:8500","interval":"10s","timeout":"1s",
                       "header":{"X-Token":["t"]}}]}"#;
        let s = service_def(&parse_body(body).unwrap()).unwrap();
        let want = ServiceDef {
            id: Some("foo1".into()),
            name: "foo".into(),
            tags: vec!["a".into()],
            address: "1.2.3.4".into(),
            meta: BTreeMap::from([("Env".into(), "x".into())]),
            port: 80,
            weights: Some(Weights { passing: 3, warning: 1 }),
            enable_tag_override: true,
            checks: vec![CheckDef {
                http: Some("http://localhost:8500".into()),
                interval: secs(10),
                timeout: secs(1),
                header: BTreeMap::from([("X-Token".into(), vec!["t".into()])]),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(s, want);
    }

    #[test]
    fn node_client_pascal_case_body() {
        let body = json!({
            "Name": "web", "ID": "web1", "Tags": ["v1", "prod"], "Address": "10.0.0.5",
            "Port": 8080, "Kind": "", "Meta": {"Version": "1"},
            "TaggedAddresses": {"lan": {"Address": "10.0.0.5", "Port": 8080},
                                "WAN": {"address": "1.2.3.4", "port": 80}},
            "Check": {"CheckID": "web-ttl", "Name": "ttl", "TTL": "15s", "Notes": "n",
                      "Status": "passing", "DeregisterCriticalServiceAfter": "1m30s"},
            "Token": "secret", "Connect": {"Native": true}, "Proxy": null,
        });
        let s = service_def(&body).unwrap();
        assert_eq!((s.id.as_deref(), s.name.as_str()), (Some("web1"), "web"));
        assert_eq!(s.tags, ["v1", "prod"]);
        assert_eq!(s.weights, None);
        let addr = |a: &str, p| ServiceAddress { address: a.into(), port: p };
        let want =
            BTreeMap::from([("WAN".into(), addr("1.2.3.4", 80)), ("lan".into(), addr("10.0.0.5", 8080))]);
        assert_eq!(s.tagged_addresses, want, "keys are data; Address/Port any case");
        let c = &s.checks[0];
        assert_eq!(c.id.as_deref(), Some("web-ttl"), "CheckID is an alias of ID");
        assert_eq!((c.ttl, c.status.as_deref()), (secs(15), Some("passing")));
        assert_eq!(c.deregister_critical_service_after, secs(90));
        assert_eq!(c.notes, "n");
    }

    #[test]
    fn snake_case_config_style() {
        let body = json!({
            "name": "db", "enable_tag_override": true,
            "tagged_addresses": {"lan_ipv4": {"address": "10.1.1.1", "port": 5432}},
            "check": {"args": ["/bin/check", "-q"], "interval": "30s",
                      "deregister_critical_service_after": "10m", "docker_container_id": "c1",
                      "success_before_passing": 2, "failures_before_warning": 1,
                      "failures_before_critical": 3, "output_max_size": 1024},
            "checks": [{"grpc": "localhost:9090", "grpc_use_tls": true, "interval": "5s"},
                       {"http": "https://x", "tls_skip_verify": true, "disable_redirects": true,
                        "method": "POST", "body": "{}", "interval": "5s"},
                       {"h2ping": "localhost:443", "interval": "5s"},
                       {"alias_service": "web", "service_id": "db", "check_id": "a"}],
        });
        let s = service_def(&body).unwrap();
        assert!(s.enable_tag_override);
        assert_eq!(s.tagged_addresses["lan_ipv4"].port, 5432);
        let [script, grpc, http, h2, alias] = &s.checks[..] else { panic!("{:?}", s.checks) };
        assert_eq!(script.args, ["/bin/check", "-q"]);
        assert_eq!(script.deregister_critical_service_after, secs(600));
        assert_eq!(script.docker_container_id.as_deref(), Some("c1"));
        let thresholds = (
            script.success_before_passing,
            script.failures_before_warning,
            script.failures_before_critical,
            script.output_max_size,
        );
        assert_eq!(thresholds, (2, Some(1), 3, Some(1024)));
        assert!(grpc.grpc_use_tls && grpc.grpc.is_some());
        assert!(http.tls_skip_verify && http.disable_redirects);
        assert_eq!((http.method.as_deref(), http.body.as_deref()), (Some("POST"), Some("{}")));
        assert_eq!(h2.h2ping.as_deref(), Some("localhost:443"));
        assert_eq!(alias.alias_service.as_deref(), Some("web"));
        assert_eq!((alias.service_id.as_deref(), alias.id.as_deref()), (Some("db"), Some("a")));
    }

    #[test]
    fn check_registration_body_and_aliases() {
        let c = check_def(&json!({
            "ID": "mem", "CheckID": "ignored", "Name": "Memory", "ServiceID": "web1",
            "ScriptArgs": ["a"], "Args": ["b"], "Script": "echo hi", "Interval": "10s",
            "TCP": "localhost:22", "UDP": "localhost:53",
            "Header": {"Accept": "text/plain", "X-Multi": ["1", "2"]},
        }))
        .unwrap();
        assert_eq!(c.id.as_deref(), Some("mem"), "canonical ID wins over CheckID");
        assert_eq!(c.args, ["a"], "canonical ScriptArgs wins over Args");
        assert_eq!(c.script.as_deref(), Some("echo hi"));
        assert_eq!((c.tcp.as_deref(), c.udp.as_deref()), (Some("localhost:22"), Some("localhost:53")));
        assert_eq!(c.header["Accept"], ["text/plain"], "a lone string is a one-element list");
        assert_eq!(c.header["X-Multi"], ["1", "2"]);
        let by_check_id = check_def(&json!({"checkid": "x", "name": "x", "ttl": "1s"})).unwrap();
        assert_eq!(by_check_id.id.as_deref(), Some("x"));
    }

    #[test]
    fn durations_as_text_or_nanoseconds() {
        let c = check_def(&json!({
            "Interval": 10_000_000_000u64, "Timeout": 1.5e9, "TTL": "0",
            "DeregisterCriticalServiceAfter": 0,
        }))
        .unwrap();
        assert_eq!(c.interval, secs(10));
        assert_eq!(c.timeout, Some(Duration::from_millis(1500)));
        assert_eq!((c.ttl, c.deregister_critical_service_after), (secs(0), secs(0)));
        let bad = |v: Value| err_text(check_def(&json!({ "Interval": v })));
        assert_eq!(
            bad(json!("15")),
            "Request decode failed: field \"Interval\": time: invalid duration \"15\""
        );
        assert!(bad(json!(-1)).contains("negative duration"));
        assert!(bad(json!(true)).contains("got a boolean"));
    }

    #[test]
    fn check_comes_before_checks() {
        let s = service_def(&json!({
            "Name": "s",
            "Checks": [{"Name": "second"}, {"Name": "third"}],
            "Check": {"Name": "first"},
        }))
        .unwrap();
        let names: Vec<_> = s.checks.iter().map(|c| c.name.as_deref().unwrap()).collect();
        assert_eq!(names, ["first", "second", "third"]);
    }

    #[test]
    fn map_keys_keep_their_case() {
        let s =
            service_def(&json!({"Name": "s", "Meta": {"Env": "x", "env": "y", "ENV_NAME": "z"}})).unwrap();
        let keys: Vec<_> = s.meta.keys().map(String::as_str).collect();
        assert_eq!(keys, ["ENV_NAME", "Env", "env"]);
    }

    #[test]
    fn null_is_absent_and_unknown_fields_are_ignored() {
        let s = service_def(&json!({
            "Name": "s", "ID": null, "Port": null, "Checks": null, "Weights": null,
            "WriteRequest": {"Token": "t"}, "Namespace": "default", "SocketPath": 5,
        }))
        .unwrap();
        assert_eq!(s, ServiceDef { name: "s".into(), ..Default::default() });
        let c = service_def(&json!({"name": null, "Name": "kept"})).unwrap();
        assert_eq!(c.name, "kept", "a null spelling does not hide a real one");
    }

    #[test]
    fn wrong_types_name_the_field() {
        let svc = |v: Value| err_text(service_def(&v));
        assert_eq!(
            svc(json!({"Port": "abc"})),
            "Request decode failed: field \"Port\": expected a number, got a string"
        );
        assert_eq!(
            svc(json!({"tags": "x"})),
            "Request decode failed: field \"Tags\": expected an array, got a string"
        );
        assert!(svc(json!({"Name": 5})).contains("\"Name\": expected a string, got a number"));
        assert!(svc(json!({"Port": 70000})).contains("field \"Port\": number 70000 does not fit in u16"));
        assert!(svc(json!({"Port": 80.0})).contains("\"Port\""), "Go refuses floats for ints");
        assert!(svc(json!({"Tags": ["a", 1]})).contains("\"Tags[1]\""));
        assert!(svc(json!({"Meta": {"k": 1}})).contains("\"Meta.k\""));
        assert!(svc(json!({"Weights": {"Passing": -1}})).contains("\"Weights.Passing\""));
        assert!(svc(json!({"Checks": [{}, {"Interval": "x"}]})).contains("\"Checks[1].Interval\""));
        assert!(svc(json!({"Check": {"Header": {"A": [1]}}})).contains("\"Check.Header.A[0]\""));
        assert!(svc(json!({"Weights": 3})).contains("\"Weights\": expected an object, got a number"));
        assert!(svc(json!({"EnableTagOverride": "true"})).contains("expected a boolean"));
        assert_eq!(svc(json!([])), "Request decode failed: expected an object, got an array");
        let reg = err_text(catalog_register(&json!({"Node": "n", "Service": {"Port": "1"}})));
        assert!(reg.contains("field \"Service.Port\""), "{reg}");
    }

    #[test]
    fn body_parsing() {
        assert_eq!(parse_body(b""), Err(DecodeError::Eof));
        assert_eq!(parse_body(b" \n\t"), Err(DecodeError::Eof));
        assert_eq!(DecodeError::Eof.to_string(), "Request decode failed: EOF");
        let broken = err_text(parse_body(br#"{"Name": "#));
        assert!(broken.starts_with("Request decode failed: EOF while parsing"), "{broken}");
        assert!(parse_body(b"{nope}").is_err());
        assert_eq!(parse_body(br#"{"a":1} trailing"#).unwrap(), json!({"a": 1}));
    }

    #[test]
    fn catalog_register_with_service_and_checks() {
        let py = json!({
            "node": "n1", "address": "10.1.10.11", "datacenter": "dc1",
            "service": {"service": "redis", "id": "redis1", "port": 8000, "tags": ["primary"]},
            "check": {"name": "redis alive", "serviceid": "redis1", "status": "passing"},
            "WriteRequest": {"Token": "t"},
        });
        let r = catalog_register(&py).unwrap();
        assert_eq!((r.node.as_str(), r.address.as_str()), ("n1", "10.1.10.11"));
        assert_eq!(r.datacenter.as_deref(), Some("dc1"));
        let s = r.service.unwrap();
        assert_eq!((s.id.as_deref(), s.name.as_str(), s.port), (Some("redis1"), "redis", 8000));
        assert_eq!(r.checks[0].service_id, "redis1");
        assert_eq!(r.checks[0].status.as_deref(), Some("passing"));

        let node = json!({
            "ID": "40e4a748-2192-161a-0510-9bf59fe950b5", "Node": "n2", "Address": "10.0.0.2",
            "TaggedAddresses": {"lan": "10.0.0.2", "wan": "1.1.1.1"},
            "NodeMeta": {"Rack": "r1"}, "SkipNodeUpdate": true,
            "Service": {"Name": "web", "Meta": {"Tier": "front"}},
            "Checks": [{"Node": "n2", "CheckID": "web:http", "Name": "h", "Notes": "x",
                        "Output": "ok", "ServiceID": "web",
                        "Definition": {"HTTP": "http://x", "interval": "5s", "Timeout": 1e9}},
                       {"ID": "mem", "Name": "m"}],
            "Check": {"Name": "first"},
        });
        let r = catalog_register(&node).unwrap();
        assert_eq!(r.id, "40e4a748-2192-161a-0510-9bf59fe950b5");
        assert!(r.skip_node_update);
        assert_eq!(r.tagged_addresses["wan"], "1.1.1.1");
        assert_eq!(r.node_meta["Rack"], "r1");
        let s = r.service.unwrap();
        assert_eq!((s.id, s.name.as_str()), (None, "web"), "Name is taken when Service is missing");
        assert_eq!(s.meta["Tier"], "front");
        let ids: Vec<_> = r.checks.iter().map(|c| c.check_id.as_deref()).collect();
        assert_eq!(ids, [None, Some("web:http"), Some("mem")], "Check, then Checks");
        let http = &r.checks[1];
        assert_eq!((http.output.as_str(), http.notes.as_str()), ("ok", "x"));
        assert_eq!(http.definition.http.as_deref(), Some("http://x"));
        assert_eq!((http.definition.interval, http.definition.timeout), (secs(5), secs(1)));
    }

    #[test]
    fn catalog_deregister_bodies() {
        let d = catalog_deregister(&json!({"node": "n1", "datacenter": "dc1", "serviceid": "s1"})).unwrap();
        let want = CatalogDeregisterDef {
            node: "n1".into(),
            datacenter: Some("dc1".into()),
            service_id: Some("s1".into()),
            check_id: None,
        };
        assert_eq!(d, want);
        let d = catalog_deregister(&json!({"Node": "n1", "CheckID": "c1"})).unwrap();
        assert_eq!((d.check_id.as_deref(), d.service_id), (Some("c1"), None));
        let d = catalog_deregister(&json!({"Node": "n1", "service_id": "s2"})).unwrap();
        assert_eq!(d.service_id.as_deref(), Some("s2"));
    }

    #[test]
    fn check_update_bodies() {
        let u = check_update(&json!({"Status": "warning", "Output": "disk 91%"})).unwrap();
        assert_eq!(u, (Some("warning".into()), "disk 91%".into()));
        assert_eq!(check_update(&json!({"output": "x"})).unwrap(), (None, "x".into()));
        assert!(err_text(check_update(&json!({"Status": 1}))).contains("\"Status\""));
    }

    /// Field names the decoders look for, so generated objects reach nested decoding.
    const KEYS: &str = "Name name ID id CheckID Port Tags Meta Address Kind Weights Passing Warning
        TaggedAddresses tagged_addresses EnableTagOverride Check Checks Interval Timeout TTL Header
        Args ScriptArgs OutputMaxSize SuccessBeforePassing FailuresBeforeWarning Status Output
        Node NodeMeta Service ServiceID Definition Datacenter SkipNodeUpdate";
    const TEXTS: &[&str] = &["", "0", "15", "10s", "1m30s", "-1s", "1.5h", "passing", "µs"];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            prop::sample::select(TEXTS).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 96, 8, |inner| {
            let key = prop_oneof![
                prop::sample::select(KEYS.split_whitespace().collect::<Vec<_>>()).prop_map(String::from),
                "[A-Za-z_]{0,10}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn no_input_panics_a_decoder(v in json_value()) {
            let _ = service_def(&v);
            let _ = check_def(&v);
            let _ = catalog_register(&v);
            let _ = catalog_deregister(&v);
            let _ = check_update(&v);
            let _ = catalog_register(&json!({ "Service": v.clone(), "Checks": [v] }));
        }

        #[test]
        fn no_bytes_panic_the_parser(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            fuzz_bodies(&bytes);
        }
    }
}
