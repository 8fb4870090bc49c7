//! DNS: parsing Consul's names (`web.service.consul`, `_web._tcp.service.dc1.consul`,
//! `n1.node.consul`, `<hex>.addr.consul`, reverse PTR) and building answers from the catalog.
//!
//! Owns the naming grammar, the health filter (no instance with a critical check is served),
//! the per-answer shuffle that spreads load, TTL selection and answer-count limits. Never
//! touches the wire format: hosts decode questions into `DnsQuestion` and encode
//! `DnsResponse`, including trimming to the client's size and setting TC.

use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::fsm::catalog::{Catalog, Health, Node, NodeService};
use crate::rng::Rng;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RecordType {
    A,
    Aaaa,
    Srv,
    Txt,
    Any,
    Soa,
    Ns,
    Ptr,
    Cname,
    Axfr,
    Other(u16),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsQuestion {
    /// The name as asked (case kept, so answers echo it).
    pub name: String,
    pub qtype: RecordType,
    /// Asked over UDP without EDNS: Consul caps such answers at `udp_answer_limit` records.
    pub plain_udp: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rcode {
    NoError,
    FormErr,
    ServFail,
    NxDomain,
    NotImp,
    Refused,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv { priority: u16, weight: u16, port: u16, target: String },
    Txt(Vec<String>),
    Soa { mname: String, rname: String, serial: u32, refresh: u32, retry: u32, expire: u32, minimum: u32 },
    Ns(String),
    Cname(String),
    Ptr(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsRecord {
    pub name: String,
    pub ttl: u32,
    pub data: RData,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsResponse {
    pub rcode: Rcode,
    pub answers: Vec<DnsRecord>,
    pub authority: Vec<DnsRecord>,
    pub additional: Vec<DnsRecord>,
}

/// `dns_config` and the naming context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsConfig {
    /// Lower case, ending in a dot: `consul.`.
    pub domain: String,
    pub alt_domain: Option<String>,
    pub datacenter: String,
    pub node_ttl: u32,
    /// Service name or `prefix*` → TTL seconds.
    pub service_ttl: BTreeMap<String, u32>,
    pub only_passing: bool,
    pub udp_answer_limit: usize,
    pub a_record_limit: usize,
    pub enable_additional_node_meta_txt: bool,
    pub soa_refresh: u32,
    pub soa_retry: u32,
    pub soa_expire: u32,
    pub soa_min_ttl: u32,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            domain: "consul.".into(),
            alt_domain: None,
            datacenter: "dc1".into(),
            node_ttl: 0,
            service_ttl: BTreeMap::new(),
            only_passing: false,
            udp_answer_limit: 3,
            a_record_limit: 0,
            enable_additional_node_meta_txt: true,
            soa_refresh: 3600,
            soa_retry: 600,
            soa_expire: 86400,
            soa_min_ttl: 0,
        }
    }
}

impl DnsConfig {
    fn service_ttl(&self, service: &str) -> u32 {
        if let Some(t) = self.service_ttl.get(service) {
            return *t;
        }
        self.service_ttl
            .iter()
            .filter_map(|(k, t)| k.strip_suffix('*').map(|p| (p, t)))
            .filter(|(p, _)| service.starts_with(p))
            .max_by_key(|(p, _)| p.len())
            .map_or(0, |(_, t)| *t)
    }
}

/// What a name asks for, after the grammar.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Lookup {
    Apex,
    Node { node: String },
    Service { service: String, tag: Option<String> },
    Addr(IpAddr),
    Ptr(IpAddr),
    Invalid,
    OutOfZone,
}

/// Splits `name` into the query and the domain it was asked under.
fn parse(name: &str, cfg: &DnsConfig, qtype: RecordType) -> (Lookup, String) {
    let lower = name.trim_end_matches('.').to_ascii_lowercase() + ".";
    if let Some(ip) = parse_reverse(&lower) {
        return (Lookup::Ptr(ip), cfg.domain.clone());
    }
    let domains = core::iter::once(&cfg.domain).chain(cfg.alt_domain.as_ref());
    let Some((domain, rest)) = domains.filter_map(|d| zone_rest(&lower, d).map(|r| (d.clone(), r))).next()
    else {
        return (Lookup::OutOfZone, cfg.domain.clone());
    };
    if rest.is_empty() {
        return (Lookup::Apex, domain);
    }
    let labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return (Lookup::Invalid, domain);
    }
    const KINDS: [&str; 7] = ["service", "node", "query", "addr", "connect", "ingress", "virtual"];
    let Some(pos) = labels.iter().rposition(|l| KINDS.contains(l)) else {
        // `_web._tcp.consul`: for SRV the `service` label may be left out.
        if qtype == RecordType::Srv && labels.len() == 2 && labels.iter().all(|l| l.starts_with('_')) {
            return (rfc2782(&labels), domain);
        }
        return (Lookup::Invalid, domain);
    };
    let (parts, suffix) = (&labels[..pos], &labels[pos + 1..]);
    let dc_ok = match suffix {
        [] => true,
        [dc] | [dc, "dc"] => *dc == cfg.datacenter,
        _ => false,
    };
    if !dc_ok || parts.is_empty() {
        return (Lookup::Invalid, domain);
    }
    let lookup = match labels[pos] {
        "node" => Lookup::Node { node: parts.join(".") },
        "service" if parts.len() == 2 && parts.iter().all(|l| l.starts_with('_')) => rfc2782(parts),
        "service" => {
            let (service, tags) = parts.split_last().expect("parts is not empty");
            let tag = (!tags.is_empty()).then(|| tags.join("."));
            Lookup::Service { service: (*service).to_string(), tag }
        }
        "addr" if parts.len() == 1 => parse_hex_ip(parts[0]).map_or(Lookup::Invalid, Lookup::Addr),
        _ => Lookup::Invalid,
    };
    (lookup, domain)
}

/// The datacenter a question names when it is not this one (`web.service.dc2.consul`,
/// `n1.node.dc2.dc.consul`): such a question is answered by that datacenter's servers.
pub fn foreign_datacenter(q: &DnsQuestion, cfg: &DnsConfig) -> Option<String> {
    let lower = q.name.trim_end_matches('.').to_ascii_lowercase() + ".";
    let domains = core::iter::once(&cfg.domain).chain(cfg.alt_domain.as_ref());
    let rest = domains.filter_map(|d| zone_rest(&lower, d)).next()?;
    let labels: Vec<&str> = rest.split('.').collect();
    const KINDS: [&str; 4] = ["service", "node", "query", "addr"];
    let pos = labels.iter().rposition(|l| KINDS.contains(l))?;
    match &labels[pos + 1..] {
        [dc] | [dc, "dc"] if *dc != cfg.datacenter && pos > 0 => Some((*dc).to_string()),
        _ => None,
    }
}

fn zone_rest(name: &str, domain: &str) -> Option<String> {
    if name == domain {
        return Some(String::new());
    }
    name.strip_suffix(domain)?.strip_suffix('.').map(str::to_string)
}

/// `_web._tcp` (no tag filter) or `_web._primary` (tag `primary`).
fn rfc2782(parts: &[&str]) -> Lookup {
    let service = parts[0].trim_start_matches('_').to_string();
    let tag = parts[1].trim_start_matches('_');
    let tag = (tag != "tcp").then(|| tag.to_string());
    Lookup::Service { service, tag }
}

fn parse_hex_ip(s: &str) -> Option<IpAddr> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    match bytes?.as_slice() {
        b if b.len() == 4 && s.len() == 8 => Some(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        b if b.len() == 16 && s.len() == 32 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(b);
            Some(IpAddr::V6(Ipv6Addr::from(a)))
        }
        _ => None,
    }
}

fn parse_reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa.") {
        let octets: Option<Vec<u8>> = rest.split('.').rev().map(|o| o.parse().ok()).collect();
        let o = octets?;
        return (o.len() == 4).then(|| IpAddr::V4(Ipv4Addr::new(o[0], o[1], o[2], o[3])));
    }
    let rest = name.strip_suffix(".ip6.arpa.")?;
    let nibbles: Vec<&str> = rest.split('.').rev().collect();
    if nibbles.len() != 32 {
        return None;
    }
    parse_hex_ip(&nibbles.concat())
}

fn hex_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// Answers one question from the catalog. `serial` is the SOA serial (Unix seconds).
pub fn answer(
    q: &DnsQuestion,
    catalog: &Catalog,
    cfg: &DnsConfig,
    serial: u32,
    rng: &mut Rng,
) -> DnsResponse {
    let (lookup, domain) = parse(&q.name, cfg, q.qtype);
    let b = Builder { q, cfg, domain: &domain, serial };
    if q.qtype == RecordType::Axfr {
        return b.reply(Rcode::NotImp, vec![], vec![]);
    }
    match lookup {
        Lookup::OutOfZone => b.reply(Rcode::Refused, vec![], vec![]),
        Lookup::Invalid => b.nxdomain(),
        Lookup::Apex => b.apex(),
        Lookup::Node { node } => match catalog.node(&node) {
            None => b.nxdomain(),
            Some(n) => b.node(n),
        },
        Lookup::Addr(ip) => match (q.qtype, ip) {
            (RecordType::A | RecordType::Any, IpAddr::V4(v4)) => {
                b.ok(vec![b.rec(&q.name, cfg.node_ttl, RData::A(v4))], vec![])
            }
            (RecordType::Aaaa | RecordType::Any, IpAddr::V6(v6)) => {
                b.ok(vec![b.rec(&q.name, cfg.node_ttl, RData::Aaaa(v6))], vec![])
            }
            _ => b.nodata(),
        },
        Lookup::Ptr(ip) => {
            let ip = ip.to_string();
            match catalog.nodes().find(|n| n.address == ip) {
                Some(n) => {
                    let target = format!("{}.node.{}.{}", n.node, cfg.datacenter, domain);
                    b.ok(vec![b.rec(&q.name, cfg.node_ttl, RData::Ptr(target))], vec![])
                }
                None => b.nxdomain(),
            }
        }
        Lookup::Service { service, tag } => {
            let mut instances = healthy_instances(catalog, &service, tag.as_deref(), cfg.only_passing);
            if instances.is_empty() {
                return b.nxdomain();
            }
            rng.shuffle(&mut instances);
            b.service(&service, &instances)
        }
    }
}

/// Instances of `service` (with `tag`) that have no critical check (nor warning, with
/// `only_passing`), with their aggregate status.
fn healthy_instances<'a>(
    catalog: &'a Catalog,
    service: &str,
    tag: Option<&str>,
    only_passing: bool,
) -> Vec<(&'a Node, &'a NodeService, Health)> {
    catalog
        .all_services()
        .filter(|(_, s)| s.service.eq_ignore_ascii_case(service))
        .filter(|(_, s)| tag.is_none_or(|t| s.tags.iter().any(|x| x.eq_ignore_ascii_case(t))))
        .filter_map(|(n, s)| {
            let worst =
                catalog.instance_checks(&n.node, &s.id).map(|c| c.status).max().unwrap_or(Health::Passing);
            let ok = match worst {
                Health::Passing => true,
                Health::Warning => !only_passing,
                Health::Critical => false,
            };
            ok.then_some((n, s, worst))
        })
        .collect()
}

struct Builder<'a> {
    q: &'a DnsQuestion,
    cfg: &'a DnsConfig,
    domain: &'a str,
    serial: u32,
}

impl Builder<'_> {
    fn rec(&self, name: &str, ttl: u32, data: RData) -> DnsRecord {
        DnsRecord { name: name.to_string(), ttl, data }
    }

    fn soa(&self) -> DnsRecord {
        let c = self.cfg;
        let data = RData::Soa {
            mname: format!("ns.{}", self.domain),
            rname: format!("hostmaster.{}", self.domain),
            serial: self.serial,
            refresh: c.soa_refresh,
            retry: c.soa_retry,
            expire: c.soa_expire,
            minimum: c.soa_min_ttl,
        };
        self.rec(self.domain, c.soa_min_ttl, data)
    }

    fn reply(&self, rcode: Rcode, answers: Vec<DnsRecord>, additional: Vec<DnsRecord>) -> DnsResponse {
        DnsResponse { rcode, answers, authority: vec![], additional }
    }

    fn ok(&self, answers: Vec<DnsRecord>, additional: Vec<DnsRecord>) -> DnsResponse {
        self.reply(Rcode::NoError, answers, additional)
    }

    fn nxdomain(&self) -> DnsResponse {
        DnsResponse {
            rcode: Rcode::NxDomain,
            answers: vec![],
            authority: vec![self.soa()],
            additional: vec![],
        }
    }

    fn nodata(&self) -> DnsResponse {
        DnsResponse {
            rcode: Rcode::NoError,
            answers: vec![],
            authority: vec![self.soa()],
            additional: vec![],
        }
    }

    fn apex(&self) -> DnsResponse {
        match self.q.qtype {
            RecordType::Soa | RecordType::Any => self.ok(vec![self.soa()], vec![]),
            RecordType::Ns => {
                let ns = format!("ns.{}", self.domain);
                self.ok(vec![self.rec(self.domain, self.cfg.node_ttl, RData::Ns(ns))], vec![])
            }
            _ => self.nodata(),
        }
    }

    /// Address records for `addr` under `name`: A/AAAA for IPs, CNAME for host names.
    fn addr_records(&self, name: &str, addr: &str, ttl: u32, qtype: RecordType) -> Vec<DnsRecord> {
        match addr.parse::<IpAddr>() {
            Ok(IpAddr::V4(v4)) if matches!(qtype, RecordType::A | RecordType::Any | RecordType::Srv) => {
                vec![self.rec(name, ttl, RData::A(v4))]
            }
            Ok(IpAddr::V6(v6)) if matches!(qtype, RecordType::Aaaa | RecordType::Any | RecordType::Srv) => {
                vec![self.rec(name, ttl, RData::Aaaa(v6))]
            }
            Ok(_) => vec![],
            Err(_) if addr.is_empty() => vec![],
            Err(_) => vec![self.rec(name, ttl, RData::Cname(fqdn(addr)))],
        }
    }

    fn meta_txt(&self, name: &str, node: &Node, ttl: u32) -> Vec<DnsRecord> {
        node.meta
            .iter()
            .map(|(k, v)| {
                let text = match k.strip_prefix("rfc1035-") {
                    Some(_) => v.clone(),
                    None => format!("{}={}", escape_txt_key(k), v.replace('`', "``")),
                };
                self.rec(name, ttl, RData::Txt(vec![text]))
            })
            .collect()
    }

    fn node(&self, n: &Node) -> DnsResponse {
        let ttl = self.cfg.node_ttl;
        let name = &self.q.name;
        let (answers, additional) = match self.q.qtype {
            RecordType::Txt => (self.meta_txt(name, n, ttl), vec![]),
            RecordType::Any => {
                let mut a = self.addr_records(name, &n.address, ttl, RecordType::Any);
                a.extend(self.meta_txt(name, n, ttl));
                (a, vec![])
            }
            RecordType::A | RecordType::Aaaa => {
                let extra = if self.cfg.enable_additional_node_meta_txt {
                    self.meta_txt(name, n, ttl)
                } else {
                    vec![]
                };
                (self.addr_records(name, &n.address, ttl, self.q.qtype), extra)
            }
            _ => (vec![], vec![]),
        };
        self.ok(answers, additional)
    }

    fn service(&self, service: &str, instances: &[(&Node, &NodeService, Health)]) -> DnsResponse {
        let ttl = self.cfg.service_ttl(service);
        let name = &self.q.name;
        let cap = |n: usize| {
            let mut cap = n;
            if self.q.plain_udp && self.cfg.udp_answer_limit > 0 {
                cap = cap.min(self.cfg.udp_answer_limit);
            }
            cap
        };
        match self.q.qtype {
            RecordType::A | RecordType::Aaaa | RecordType::Any => {
                let mut seen = BTreeSet::new();
                let mut answers: Vec<DnsRecord> = instances
                    .iter()
                    .map(
                        |(n, s, _)| {
                            if s.address.is_empty() {
                                n.address.as_str()
                            } else {
                                s.address.as_str()
                            }
                        },
                    )
                    .filter(|a| seen.insert(a.to_string()))
                    .flat_map(|a| self.addr_records(name, a, ttl, self.q.qtype))
                    .collect();
                // CNAMEs only stand in when no instance gives an address record.
                if answers.iter().any(|r| !matches!(r.data, RData::Cname(_))) {
                    answers.retain(|r| !matches!(r.data, RData::Cname(_)));
                }
                let mut limit = cap(answers.len());
                if self.cfg.a_record_limit > 0 {
                    limit = limit.min(self.cfg.a_record_limit);
                }
                answers.truncate(limit);
                if answers.is_empty() {
                    return self.nodata();
                }
                self.ok(answers, vec![])
            }
            RecordType::Srv => {
                let mut seen = BTreeSet::new();
                let mut answers = vec![];
                let mut additional = vec![];
                for (n, s, health) in instances.iter().take(cap(instances.len())) {
                    let addr = if s.address.is_empty() { &n.address } else { &s.address };
                    if !seen.insert((n.node.clone(), addr.clone(), s.port)) {
                        continue;
                    }
                    let target = match (s.address.is_empty(), s.address.parse::<IpAddr>()) {
                        (true, _) => {
                            format!("{}.node.{}.{}", n.node, self.cfg.datacenter, self.domain)
                        }
                        (false, Ok(ip)) => {
                            format!("{}.addr.{}.{}", hex_ip(ip), self.cfg.datacenter, self.domain)
                        }
                        (false, Err(_)) => fqdn(&s.address),
                    };
                    let weight = match health {
                        Health::Warning => s.weights.warning,
                        _ => s.weights.passing,
                    };
                    let data = RData::Srv {
                        priority: 1,
                        weight: weight.min(u32::from(u16::MAX)) as u16,
                        port: s.port,
                        target: target.clone(),
                    };
                    answers.push(self.rec(name, ttl, data));
                    additional.extend(self.addr_records(&target, addr, ttl, RecordType::Srv));
                    if self.cfg.enable_additional_node_meta_txt && s.address.is_empty() {
                        additional.extend(self.meta_txt(&target, n, ttl));
                    }
                }
                self.ok(answers, additional)
            }
            _ => self.nodata(),
        }
    }
}

fn fqdn(host: &str) -> String {
    if host.ends_with('.') {
        host.to_string()
    } else {
        format!("{host}.")
    }
}

/// RFC 1464 key escaping: backquote, `=` and surrounding spaces.
fn escape_txt_key(k: &str) -> String {
    let mut out = k.replace('`', "``").replace('=', "`=");
    if out.starts_with(' ') {
        out.insert(0, '`');
    }
    if out.ends_with(' ') {
        out.insert(out.len() - 1, '`');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::catalog::tests::{check, node, service};
    use crate::fsm::catalog::Registration;
    use crate::ids::Index;
    use crate::rng::Stream;

    fn catalog() -> Catalog {
        let mut c = Catalog::default();
        let mut i = 0;
        let mut reg = |c: &mut Catalog, n: &str, addr: &str, s: Option<NodeService>, checks| {
            i += 1;
            let mut nd = node(n);
            nd.address = addr.into();
            c.register(Index(i), &Registration { node: nd, skip_node_update: false, service: s, checks })
                .unwrap();
        };
        let mut web1 = service("web1", "web");
        web1.tags = vec!["primary".into()];
        web1.port = 8080;
        reg(&mut c, "n1", "10.0.0.1", Some(web1), vec![check("c1", "web1", Health::Passing)]);
        let mut web2 = service("web2", "web");
        web2.port = 8081;
        web2.address = "10.0.0.9".into();
        reg(&mut c, "n2", "10.0.0.2", Some(web2), vec![check("c2", "web2", Health::Warning)]);
        reg(
            &mut c,
            "n3",
            "10.0.0.3",
            Some(service("web3", "web")),
            vec![check("c3", "web3", Health::Critical)],
        );
        reg(
            &mut c,
            "n4",
            "10.0.0.4",
            Some(service("db1", "db")),
            vec![check("serfHealth", "", Health::Critical)],
        );
        c
    }

    fn ask(name: &str, qtype: RecordType) -> DnsResponse {
        let q = DnsQuestion { name: name.into(), qtype, plain_udp: false };
        answer(&q, &catalog(), &DnsConfig::default(), 7, &mut Rng::new([0; 32], Stream::Dns))
    }

    fn a_records(r: &DnsResponse) -> BTreeSet<Ipv4Addr> {
        r.answers.iter().filter_map(|x| if let RData::A(a) = x.data { Some(a) } else { None }).collect()
    }

    #[test]
    fn service_a_serves_only_non_critical_instances() {
        let r = ask("web.service.consul.", RecordType::A);
        assert_eq!(r.rcode, Rcode::NoError);
        let want: BTreeSet<Ipv4Addr> = ["10.0.0.1".parse().unwrap(), "10.0.0.9".parse().unwrap()].into();
        assert_eq!(a_records(&r), want);
        let db = ask("db.service.consul.", RecordType::A);
        assert_eq!(db.rcode, Rcode::NxDomain, "a critical node check hides every service on it");
        assert!(matches!(db.authority[0].data, RData::Soa { serial: 7, .. }));
    }

    #[test]
    fn srv_targets_and_additionals() {
        let r = ask("web.service.dc1.consul.", RecordType::Srv);
        let mut targets: Vec<(u16, String)> = r
            .answers
            .iter()
            .map(|x| match &x.data {
                RData::Srv { port, target, .. } => (*port, target.clone()),
                other => panic!("{other:?}"),
            })
            .collect();
        targets.sort();
        assert_eq!(
            targets,
            [(8080, "n1.node.dc1.consul.".into()), (8081, "0a000009.addr.dc1.consul.".into())]
        );
        assert_eq!(r.additional.len(), 2);
    }

    #[test]
    fn tags_rfc2782_and_case() {
        assert_eq!(a_records(&ask("primary.web.service.consul", RecordType::A)).len(), 1);
        assert_eq!(ask("_web._primary.service.consul", RecordType::Srv).answers.len(), 1);
        assert_eq!(ask("_web._tcp.service.consul", RecordType::Srv).answers.len(), 2);
        assert_eq!(ask("_web._tcp.consul", RecordType::Srv).answers.len(), 2);
        assert_eq!(ask("WEB.Service.CONSUL", RecordType::A).answers[0].name, "WEB.Service.CONSUL");
    }

    #[test]
    fn nodes_addr_ptr_and_errors() {
        assert_eq!(a_records(&ask("n1.node.consul", RecordType::A)), ["10.0.0.1".parse().unwrap()].into());
        assert_eq!(ask("nope.node.consul", RecordType::A).rcode, Rcode::NxDomain);
        assert_eq!(ask("n1.node.dc2.consul", RecordType::A).rcode, Rcode::NxDomain);
        let q = |name: &str| DnsQuestion { name: name.into(), qtype: RecordType::A, plain_udp: false };
        let cfg = DnsConfig::default();
        assert_eq!(foreign_datacenter(&q("n1.node.dc2.consul."), &cfg).as_deref(), Some("dc2"));
        assert_eq!(foreign_datacenter(&q("web.service.DC2.dc.consul"), &cfg).as_deref(), Some("dc2"));
        assert_eq!(foreign_datacenter(&q("web.service.dc1.consul"), &cfg), None);
        assert_eq!(foreign_datacenter(&q("web.service.consul"), &cfg), None);
        assert_eq!(foreign_datacenter(&q("example.com"), &cfg), None);
        assert_eq!(ask("web.service.consul", RecordType::Other(15)).authority.len(), 1, "NODATA has an SOA");
        assert_eq!(
            a_records(&ask("7f000001.addr.consul", RecordType::A)),
            ["127.0.0.1".parse().unwrap()].into()
        );
        let ptr = ask("2.0.0.10.in-addr.arpa.", RecordType::Ptr);
        assert_eq!(ptr.answers[0].data, RData::Ptr("n2.node.dc1.consul.".into()));
        assert_eq!(ask("example.com.", RecordType::A).rcode, Rcode::Refused);
        assert_eq!(ask("a..service.consul", RecordType::A).rcode, Rcode::NxDomain);
        assert_eq!(ask("consul.", RecordType::Soa).answers.len(), 1);
    }

    #[test]
    fn plain_udp_answers_are_capped() {
        let mut c = Catalog::default();
        for i in 1..=6u8 {
            let mut nd = node(&format!("n{i}"));
            nd.address = format!("10.0.1.{i}");
            let reg = Registration {
                node: nd,
                skip_node_update: false,
                service: Some(service(&format!("s{i}"), "many")),
                checks: vec![],
            };
            c.register(Index(u64::from(i)), &reg).unwrap();
        }
        let q = DnsQuestion { name: "many.service.consul.".into(), qtype: RecordType::A, plain_udp: true };
        let mut rng = Rng::new([0; 32], Stream::Dns);
        assert_eq!(answer(&q, &c, &DnsConfig::default(), 0, &mut rng).answers.len(), 3);
        let firsts: BTreeSet<String> = (0..20)
            .map(|_| format!("{:?}", answer(&q, &c, &DnsConfig::default(), 0, &mut rng).answers[0]))
            .collect();
        assert!(firsts.len() > 1, "answers are shuffled");
    }

    #[test]
    fn service_ttl_prefers_exact_then_longest_prefix() {
        let cfg = DnsConfig {
            service_ttl: BTreeMap::from([("web".into(), 10), ("db-*".into(), 5), ("*".into(), 1)]),
            ..DnsConfig::default()
        };
        assert_eq!((cfg.service_ttl("web"), cfg.service_ttl("db-main"), cfg.service_ttl("x")), (10, 5, 1));
    }

    proptest::proptest! {
        #[test]
        fn any_name_gets_an_answer_without_panic(name in "\\PC{0,80}", t in 0u16..300) {
            let q = DnsQuestion { name, qtype: RecordType::Other(t), plain_udp: true };
            let _ = answer(&q, &catalog(), &DnsConfig::default(), 0, &mut Rng::new([0; 32], Stream::Dns));
        }
    }
}
