//! Request bodies after JSON decoding, before validation: service, check and catalog
//! definitions as a client or a config file wrote them.
//!
//! Owns the validation and defaulting rules Consul applies to them (generated check IDs,
//! default names, interval floors, which fields make which check kind) and turns them into
//! catalog rows and scheduler kinds. Never parses JSON: hosts decode into these types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::checks::{CheckKind, CheckSpec, Thresholds};
use crate::fsm::catalog::{
    CheckDefinitionView, DefinitionValue, Health, HealthCheck, NodeService, ServiceAddress, Weights,
};
use crate::time::{format_go_duration, Duration};

/// A service definition (`/v1/agent/service/register` body or a config file `service`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDef {
    pub id: Option<String>,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    pub meta: BTreeMap<String, String>,
    pub port: u16,
    pub kind: String,
    pub weights: Option<Weights>,
    pub enable_tag_override: bool,
    /// `Check` first, then `Checks`, in the order given.
    pub checks: Vec<CheckDef>,
}

/// A check definition (`/v1/agent/check/register` body, a service's `Check`/`Checks`, a
/// config file `check`). Exactly one kind field should be set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckDef {
    pub id: Option<String>,
    pub name: Option<String>,
    pub service_id: Option<String>,
    pub notes: String,
    pub status: Option<String>,
    pub ttl: Option<Duration>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub http: Option<String>,
    pub method: Option<String>,
    pub header: BTreeMap<String, Vec<String>>,
    pub body: Option<String>,
    pub tls_skip_verify: bool,
    pub disable_redirects: bool,
    pub tcp: Option<String>,
    pub udp: Option<String>,
    pub grpc: Option<String>,
    pub grpc_use_tls: bool,
    /// `Args` / `ScriptArgs`.
    pub args: Vec<String>,
    /// Legacy `Script`, run through `/bin/sh -c`.
    pub script: Option<String>,
    pub docker_container_id: Option<String>,
    pub h2ping: Option<String>,
    pub alias_service: Option<String>,
    pub deregister_critical_service_after: Option<Duration>,
    pub output_max_size: Option<usize>,
    pub success_before_passing: u32,
    pub failures_before_warning: Option<u32>,
    pub failures_before_critical: u32,
}

/// `PUT /v1/catalog/register` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogRegisterDef {
    pub id: String,
    pub node: String,
    pub address: String,
    pub datacenter: Option<String>,
    pub tagged_addresses: BTreeMap<String, String>,
    pub node_meta: BTreeMap<String, String>,
    pub service: Option<ServiceDef>,
    /// `Check` then `Checks`; catalog checks carry a status rather than a probe.
    pub checks: Vec<CatalogCheckDef>,
    pub skip_node_update: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogCheckDef {
    pub check_id: Option<String>,
    pub name: String,
    pub notes: String,
    pub status: Option<String>,
    pub output: String,
    pub service_id: String,
    pub definition: CheckDef,
}

/// `PUT /v1/catalog/deregister` body.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CatalogDeregisterDef {
    pub node: String,
    pub datacenter: Option<String>,
    pub service_id: Option<String>,
    pub check_id: Option<String>,
}

/// Why a definition was refused; Display is the text the API answers with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DefError {
    #[error("Missing service name")]
    MissingServiceName,
    #[error("Missing check name")]
    MissingCheckName,
    #[error("Invalid service address")]
    InvalidServiceAddress,
    #[error("Invalid check: {0}")]
    InvalidCheck(String),
    #[error("Status for checks must 'passing', 'warning', 'critical'")]
    BadStatus,
    #[error("Invalid weights: passing must be in [1, 65535] and warning in [0, 65535]")]
    BadWeights,
    #[error("Invalid meta: {0}")]
    BadMeta(String),
    #[error("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true")]
    ScriptsDisabled,
}

/// Checks shorter than this are raised to it, as Consul does.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
const DEFAULT_SCRIPT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A check ready to register on an agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltCheck {
    pub row: HealthCheck,
    pub kind: CheckKind,
    pub thresholds: Thresholds,
    pub deregister_after: Option<Duration>,
}

/// Context the check builder needs from the agent.
pub struct CheckContext<'a> {
    pub node: &'a str,
    pub scripts_allowed: bool,
    pub output_max: usize,
}

pub fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), DefError> {
    if meta.len() > 64 {
        return Err(DefError::BadMeta("more than 64 pairs".into()));
    }
    for (k, v) in meta {
        let ok_key = !k.is_empty()
            && k.len() <= 128
            && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok_key {
            return Err(DefError::BadMeta(format!("key \"{k}\" is not valid")));
        }
        if k.starts_with("consul-") {
            return Err(DefError::BadMeta(format!("key \"{k}\" uses the reserved consul- prefix")));
        }
        if v.len() > 512 {
            return Err(DefError::BadMeta(format!("value for \"{k}\" is over 512 characters")));
        }
    }
    Ok(())
}

impl ServiceDef {
    pub fn service_id(&self) -> String {
        self.id.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| self.name.clone())
    }

    /// The catalog row for this definition (indexes left for the store to assign).
    pub fn to_node_service(&self) -> Result<NodeService, DefError> {
        if self.name.is_empty() {
            return Err(DefError::MissingServiceName);
        }
        if matches!(self.address.as_str(), "0.0.0.0" | "::" | "[::]") {
            return Err(DefError::InvalidServiceAddress);
        }
        validate_meta(&self.meta)?;
        let weights = match self.weights {
            None => Weights::default(),
            Some(w) if w.passing == 0 => Weights { passing: 1, ..w },
            Some(w) if w.passing > 65535 || w.warning > 65535 => return Err(DefError::BadWeights),
            Some(w) => w,
        };
        let mut tags = self.tags.clone();
        dedup_keep_order(&mut tags);
        Ok(NodeService {
            kind: self.kind.clone(),
            id: self.service_id(),
            service: self.name.clone(),
            tags,
            address: self.address.clone(),
            tagged_addresses: self.tagged_addresses.clone(),
            meta: self.meta.clone(),
            port: self.port,
            weights,
            enable_tag_override: self.enable_tag_override,
            create_index: 0,
            modify_index: 0,
        })
    }

    /// The checks attached to this service, with Consul's generated IDs and names.
    pub fn build_checks(&self, ctx: &CheckContext<'_>) -> Result<Vec<BuiltCheck>, DefError> {
        let sid = self.service_id();
        let n = self.checks.len();
        self.checks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let mut c = c.clone();
                if c.id.as_deref().unwrap_or("").is_empty() {
                    c.id = Some(if n == 1 {
                        format!("service:{sid}")
                    } else {
                        format!("service:{sid}:{}", i + 1)
                    });
                }
                if c.name.as_deref().unwrap_or("").is_empty() {
                    c.name = Some(format!("Service '{}' check", self.name));
                }
                c.service_id = Some(sid.clone());
                let mut built = c.build(ctx)?;
                built.row.service_name = self.name.clone();
                built.row.service_tags = self.tags.clone();
                Ok(built)
            })
            .collect()
    }
}

fn dedup_keep_order(v: &mut Vec<String>) {
    let mut seen = std::collections::BTreeSet::new();
    v.retain(|t| seen.insert(t.clone()));
}

pub fn parse_status(s: Option<&str>) -> Result<Health, DefError> {
    match s {
        None | Some("") => Ok(Health::Critical),
        Some(s) => Health::parse(s).ok_or(DefError::BadStatus),
    }
}

impl CheckDef {
    /// Validates one check and builds its catalog row and scheduling kind.
    pub fn build(&self, ctx: &CheckContext<'_>) -> Result<BuiltCheck, DefError> {
        let name = self.name.clone().filter(|n| !n.is_empty()).ok_or(DefError::MissingCheckName)?;
        let id = self.id.clone().filter(|i| !i.is_empty()).unwrap_or_else(|| name.clone());
        let status = parse_status(self.status.as_deref())?;
        let (kind, type_name) = self.kind(ctx)?;
        let (interval, timeout) = match &kind {
            CheckKind::Probe { interval, timeout, .. } => {
                (format_go_duration(*interval), format_go_duration(*timeout))
            }
            CheckKind::Ttl(_) => (String::new(), String::new()),
        };
        let row = HealthCheck {
            notes: self.notes.clone(),
            service_id: self.service_id.clone().unwrap_or_default(),
            kind: type_name.into(),
            interval,
            timeout,
            definition: self.view(),
            ..HealthCheck::new(ctx.node, &id, &name, status)
        };
        let c = self.failures_before_critical;
        let thresholds = Thresholds {
            success_before_passing: self.success_before_passing,
            failures_before_warning: self.failures_before_warning.unwrap_or(c),
            failures_before_critical: c,
        };
        Ok(BuiltCheck { row, kind, thresholds, deregister_after: self.deregister_critical_service_after })
    }

    fn kind(&self, ctx: &CheckContext<'_>) -> Result<(CheckKind, &'static str), DefError> {
        let output_max = self.output_max_size.filter(|n| *n > 0).unwrap_or(ctx.output_max);
        let probe: Option<(CheckSpec, &'static str)> = if let Some(url) = &self.http {
            let spec = CheckSpec::Http {
                url: url.clone(),
                method: self.method.clone().filter(|m| !m.is_empty()).unwrap_or_else(|| "GET".into()),
                headers: self.header.clone(),
                body: self.body.clone().unwrap_or_default(),
                tls_skip_verify: self.tls_skip_verify,
                disable_redirects: self.disable_redirects,
                output_max,
            };
            Some((spec, "http"))
        } else if let Some(addr) = &self.tcp {
            Some((CheckSpec::Tcp { addr: addr.clone() }, "tcp"))
        } else if let Some(addr) = &self.udp {
            Some((CheckSpec::Udp { addr: addr.clone(), message: String::new() }, "udp"))
        } else if let Some(target) = &self.grpc {
            Some((CheckSpec::Grpc { target: target.clone(), use_tls: self.grpc_use_tls }, "grpc"))
        } else if !self.args.is_empty() || self.script.is_some() {
            if !ctx.scripts_allowed {
                return Err(DefError::ScriptsDisabled);
            }
            let args = match &self.script {
                Some(s) if self.args.is_empty() => vec!["/bin/sh".into(), "-c".into(), s.clone()],
                _ => self.args.clone(),
            };
            Some((CheckSpec::Script { args, output_max }, "script"))
        } else if self.docker_container_id.is_some() {
            return Err(DefError::InvalidCheck(
                "docker checks need a Docker engine, which muster does not drive yet".into(),
            ));
        } else if self.h2ping.is_some() {
            return Err(DefError::InvalidCheck("h2ping checks are not supported by muster yet".into()));
        } else if self.alias_service.is_some() {
            return Err(DefError::InvalidCheck("alias checks are not supported by muster yet".into()));
        } else {
            None
        };
        match (probe, self.ttl, self.interval) {
            (Some(_), Some(_), _) => Err(DefError::InvalidCheck("TTL and a probe cannot both be set".into())),
            (Some((spec, name)), None, Some(interval)) if !interval.is_zero() => {
                let default_timeout = match spec {
                    CheckSpec::Script { .. } => DEFAULT_SCRIPT_TIMEOUT,
                    _ => DEFAULT_PROBE_TIMEOUT,
                };
                let timeout = self.timeout.filter(|t| !t.is_zero()).unwrap_or(default_timeout);
                Ok((CheckKind::Probe { spec, interval: interval.max(MIN_INTERVAL), timeout }, name))
            }
            (Some(_), None, _) => Err(DefError::InvalidCheck(
                "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or GRPC checks".into(),
            )),
            (None, Some(ttl), None) if !ttl.is_zero() => Ok((CheckKind::Ttl(ttl), "ttl")),
            (None, Some(_), Some(_)) => {
                Err(DefError::InvalidCheck("Interval cannot be set for TTL checks".into()))
            }
            (None, _, _) => Err(DefError::InvalidCheck("TTL must be > 0 for TTL checks".into())),
        }
    }

    /// The `Definition` object Consul echoes: only the fields that were given.
    pub fn view(&self) -> CheckDefinitionView {
        let mut f = BTreeMap::new();
        let mut s = |k: &str, v: &Option<String>| {
            if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
                f.insert(k.to_string(), DefinitionValue::Str(v.clone()));
            }
        };
        s("HTTP", &self.http);
        s("Method", &self.method);
        s("Body", &self.body);
        s("TCP", &self.tcp);
        s("UDP", &self.udp);
        s("GRPC", &self.grpc);
        s("DockerContainerID", &self.docker_container_id);
        s("AliasService", &self.alias_service);
        let dur = |d: Option<Duration>| d.filter(|d| !d.is_zero()).map(format_go_duration);
        s("Interval", &dur(self.interval));
        s("Timeout", &dur(self.timeout));
        s("TTL", &dur(self.ttl));
        s("DeregisterCriticalServiceAfter", &dur(self.deregister_critical_service_after));
        if !self.header.is_empty() {
            f.insert("Header".into(), DefinitionValue::Headers(self.header.clone()));
        }
        if self.tls_skip_verify {
            f.insert("TLSSkipVerify".into(), DefinitionValue::Bool(true));
        }
        if self.grpc_use_tls {
            f.insert("GRPCUseTLS".into(), DefinitionValue::Bool(true));
        }
        if !self.args.is_empty() {
            f.insert("ScriptArgs".into(), DefinitionValue::List(self.args.clone()));
        }
        if let Some(n) = self.output_max_size.filter(|n| *n > 0) {
            f.insert("OutputMaxSize".into(), DefinitionValue::Int(n as u64));
        }
        CheckDefinitionView { fields: f }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CTX: CheckContext<'static> = CheckContext { node: "n1", scripts_allowed: false, output_max: 4096 };

    fn http_check() -> CheckDef {
        CheckDef {
            http: Some("http://x/health".into()),
            interval: Some(Duration::from_millis(100)),
            ..Default::default()
        }
    }

    #[test]
    fn generated_ids_and_names_follow_consul() {
        let one = ServiceDef {
            name: "web".into(),
            id: Some("web1".into()),
            checks: vec![http_check()],
            ..Default::default()
        };
        let built = one.build_checks(&CTX).unwrap();
        assert_eq!(built[0].row.check_id, "service:web1");
        assert_eq!(built[0].row.name, "Service 'web' check");
        assert_eq!(built[0].row.status, Health::Critical, "new checks start critical");
        assert_eq!(built[0].row.interval, "1s", "interval raised to the 1s floor");
        let two =
            ServiceDef { name: "web".into(), checks: vec![http_check(), http_check()], ..Default::default() };
        let ids: Vec<_> = two.build_checks(&CTX).unwrap().into_iter().map(|b| b.row.check_id).collect();
        assert_eq!(ids, ["service:web:1", "service:web:2"]);
    }

    #[test]
    fn kinds_are_validated() {
        let named = |c: CheckDef| CheckDef { name: Some("c".into()), ..c };
        let no_interval = named(CheckDef { tcp: Some("a:1".into()), ..Default::default() });
        assert!(matches!(no_interval.build(&CTX), Err(DefError::InvalidCheck(_))));
        let nothing = named(CheckDef::default());
        assert_eq!(
            nothing.build(&CTX).unwrap_err().to_string(),
            "Invalid check: TTL must be > 0 for TTL checks"
        );
        let script = named(CheckDef {
            args: vec!["true".into()],
            interval: Some(Duration::from_secs(5)),
            ..Default::default()
        });
        assert_eq!(script.build(&CTX), Err(DefError::ScriptsDisabled));
        let ctx = CheckContext { scripts_allowed: true, ..CTX };
        let built = script.build(&ctx).unwrap();
        assert!(matches!(built.kind, CheckKind::Probe { timeout, .. } if timeout == Duration::from_secs(30)));
        let ttl = named(CheckDef {
            ttl: Some(Duration::from_secs(30)),
            status: Some("passing".into()),
            ..Default::default()
        });
        let b = ttl.build(&CTX).unwrap();
        assert_eq!((b.row.kind.as_str(), b.row.status), ("ttl", Health::Passing));
        let bad = named(CheckDef {
            ttl: Some(Duration::from_secs(1)),
            status: Some("ok".into()),
            ..Default::default()
        });
        assert_eq!(bad.build(&CTX), Err(DefError::BadStatus));
    }

    #[test]
    fn service_validation() {
        assert_eq!(ServiceDef::default().to_node_service(), Err(DefError::MissingServiceName));
        let any = ServiceDef { name: "a".into(), address: "0.0.0.0".into(), ..Default::default() };
        assert_eq!(any.to_node_service(), Err(DefError::InvalidServiceAddress));
        let meta = ServiceDef {
            name: "a".into(),
            meta: BTreeMap::from([("consul-x".into(), "1".into())]),
            ..Default::default()
        };
        assert!(matches!(meta.to_node_service(), Err(DefError::BadMeta(_))));
        let ok = ServiceDef { name: "a".into(), tags: vec!["x".into(), "x".into()], ..Default::default() };
        let s = ok.to_node_service().unwrap();
        assert_eq!((s.id.as_str(), s.tags.len(), s.weights), ("a", 1, Weights::default()));
    }
}
