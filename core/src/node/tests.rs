//! Drives a whole node directly, the way a host would, without tokio.

use super::*;
use crate::api::defs::CheckDef;
use crate::api::dns::{DnsQuestion, RData, Rcode, RecordType};
use crate::api::shapes::Reply;
use crate::api::{KvRead, QueryOpts};
use crate::fsm::kv::KvSetMode;
use crate::io::{PersistOp, Recovered};
use crate::raft::disk;

fn config() -> Config {
    Config { unix_secs_at_zero: 1_700_000_000, ..Config::defaults(NodeInfo::new("dev", "127.0.0.1", "dc1")) }
}

/// A host that makes every persist durable at once, keeps what a disk would (compacting at
/// snapshots), and keeps what else came out.
struct Host {
    node: Node,
    now: Time,
    next_req: u64,
    responses: BTreeMap<u64, ApiResponse>,
    runs: Vec<Effect>,
    disk: Recovered,
}

impl Host {
    fn new(cfg: Config) -> Host {
        Host::around(Node::new(cfg, [9; 32]).unwrap())
    }

    fn around(node: Node) -> Host {
        let mut h = Host {
            node,
            now: Time(1),
            next_req: 0,
            responses: BTreeMap::new(),
            runs: vec![],
            disk: Recovered::default(),
        };
        h.feed(Input::Tick);
        h
    }

    fn feed(&mut self, input: Input) {
        let mut queue = vec![input];
        while let Some(input) = queue.pop() {
            let mut out = vec![];
            self.node.step(self.now, input, &mut out);
            for e in out {
                match e {
                    Effect::Persist { token, op } => {
                        disk::apply(&mut self.disk, op);
                        queue.insert(0, Input::Persisted { token });
                    }
                    Effect::Respond { id, resp } => {
                        self.responses.insert(id.0, resp);
                    }
                    e @ Effect::RunCheck { .. } => self.runs.push(e),
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, req: ApiRequest) -> u64 {
        self.next_req += 1;
        let id = self.next_req;
        self.feed(Input::Request { id: ReqId(id), req });
        id
    }

    fn call(&mut self, req: ApiRequest) -> ApiResponse {
        let id = self.send(req);
        self.responses.remove(&id).expect("answered at once")
    }

    fn advance(&mut self, d: Duration) {
        self.now = self.now + d;
        self.feed(Input::Tick);
    }
}

fn put(key: &str, value: &str, mode: KvSetMode) -> ApiRequest {
    ApiRequest::KvPut { key: key.into(), value: value.as_bytes().to_vec(), flags: 0, mode }
}

fn get(key: &str, min_index: u64) -> ApiRequest {
    let q =
        QueryOpts { min_index: Index(min_index), wait: Some(Duration::from_secs(10)), ..Default::default() };
    ApiRequest::KvGet { key: key.into(), read: KvRead::Entry { raw: true }, q }
}

#[test]
fn kv_write_answers_after_commit_and_reads_back() {
    let mut h = Host::new(config());
    let r = h.call(put("foo", "bar", KvSetMode::Set));
    assert_eq!(r.body, Body::Json(Reply::Bool(true)));
    let r = h.call(get("foo", 0));
    assert_eq!(r.body, Body::Raw(b"bar".to_vec()));
    let idx = r.meta.unwrap().index;
    assert_eq!(h.call(put("foo", "baz", KvSetMode::Cas(idx.0 + 100))).body, Body::Json(Reply::Bool(false)));
    assert_eq!(h.call(put("foo", "baz", KvSetMode::Cas(idx.0))).body, Body::Json(Reply::Bool(true)));
    assert_eq!(h.call(put("../etc", "x", KvSetMode::Set)).status, 400);
}

#[test]
fn persist_effect_precedes_the_answer() {
    let mut node = Node::new(config(), [1; 32]).unwrap();
    let mut out = vec![];
    node.step(Time(1), Input::Request { id: ReqId(1), req: put("k", "v", KvSetMode::Set) }, &mut out);
    // Acknowledge persists one at a time, in order: the answer may only come after the
    // append holding the write is durable.
    let (mut queue, mut write_durable, mut answered) = (std::collections::VecDeque::new(), false, false);
    for step in 2..100 {
        for e in out.drain(..) {
            match e {
                Effect::Persist { token, op } => {
                    let holds = matches!(&op, PersistOp::AppendLog { entries }
                        if entries.iter().any(|e| matches!(e.command, Command::KvSet { .. })));
                    queue.push_back((token, holds));
                }
                Effect::Respond { id: ReqId(1), .. } => {
                    assert!(write_durable, "no answer before the write is durable");
                    answered = true;
                }
                _ => {}
            }
        }
        if answered {
            return;
        }
        let (token, holds) = queue.pop_front().expect("a persist is outstanding until the answer");
        write_durable |= holds;
        node.step(Time(step), Input::Persisted { token }, &mut out);
    }
    panic!("the write was never answered");
}

#[test]
fn blocking_read_wakes_on_write_and_times_out_otherwise() {
    let mut h = Host::new(config());
    h.call(put("watched", "1", KvSetMode::Set));
    let idx = h.call(get("watched", 0)).meta.unwrap().index.0;
    let parked = h.send(get("watched", idx));
    assert!(!h.responses.contains_key(&parked), "parks while nothing changed");
    h.call(put("other", "x", KvSetMode::Set));
    assert!(!h.responses.contains_key(&parked), "unrelated keys do not wake it");
    h.call(put("watched", "2", KvSetMode::Set));
    let r = h.responses.remove(&parked).expect("woken by the write");
    assert_eq!(r.body, Body::Raw(b"2".to_vec()));
    assert!(r.meta.unwrap().index.0 > idx);

    let idx = r.meta.unwrap().index.0;
    let parked = h.send(get("watched", idx));
    h.advance(Duration::from_secs(10));
    assert!(!h.responses.contains_key(&parked) || h.responses[&parked].meta.unwrap().index.0 == idx);
    h.advance(Duration::from_secs(1));
    let r = h.responses.remove(&parked).expect("answered at wait + jitter");
    assert_eq!(r.meta.unwrap().index.0, idx, "a timeout returns the unchanged index");
}

#[test]
fn missing_key_blocks_until_created() {
    let mut h = Host::new(config());
    let r = h.call(get("later", 0));
    assert_eq!(r.status, 404);
    let parked = h.send(get("later", r.meta.unwrap().index.0));
    h.call(put("later", "here", KvSetMode::Set));
    assert_eq!(h.responses.remove(&parked).unwrap().status, 200);
}

fn ttl_service() -> ServiceDef {
    ServiceDef {
        name: "web".into(),
        id: Some("web1".into()),
        port: 8080,
        checks: vec![CheckDef { ttl: Some(Duration::from_secs(30)), ..Default::default() }],
        ..Default::default()
    }
}

fn health(h: &mut Host, passing: bool) -> usize {
    let r = h.call(ApiRequest::HealthService {
        service: "web".into(),
        tags: vec![],
        passing,
        q: QueryOpts::default(),
        near: None,
    });
    match r.body {
        // Health rows come rendered (see `server::Rendered`).
        Body::JsonText(text) => serde_json::from_str::<Vec<serde_json::Value>>(&text).map_or(0, |v| v.len()),
        other => panic!("{other:?}"),
    }
}

fn srv_count(h: &mut Host) -> usize {
    let q = DnsQuestion { name: "web.service.consul.".into(), qtype: RecordType::Srv, plain_udp: false };
    match h.call(ApiRequest::Dns(q)).body {
        Body::Dns(d) if d.rcode == Rcode::NoError => {
            d.answers.iter().filter(|r| matches!(r.data, RData::Srv { .. })).count()
        }
        Body::Dns(_) => 0,
        other => panic!("{other:?}"),
    }
}

#[test]
fn ttl_check_drives_catalog_health_and_dns() {
    let mut h = Host::new(config());
    let r = h.call(ApiRequest::AgentServiceRegister {
        def: Box::new(ttl_service()),
        replace_existing_checks: false,
    });
    assert_eq!((r.status, r.body), (200, Body::Empty));
    assert_eq!((health(&mut h, false), health(&mut h, true)), (1, 0), "new checks start critical");
    assert_eq!(srv_count(&mut h), 0);
    let pass =
        ApiRequest::AgentCheckTtl { id: "service:web1".into(), status: Health::Passing, output: "ok".into() };
    assert_eq!(h.call(pass).status, 200);
    assert_eq!(health(&mut h, true), 1);
    assert_eq!(srv_count(&mut h), 1);
    h.advance(Duration::from_secs(31));
    assert_eq!(health(&mut h, true), 0, "an expired TTL turns critical");
    assert_eq!(srv_count(&mut h), 0);
    let r = h.call(ApiRequest::AgentServiceDeregister { id: "web1".into() });
    assert_eq!(r.status, 200);
    assert_eq!(health(&mut h, false), 0);
}

#[test]
fn probe_results_flow_into_the_catalog() {
    let mut h = Host::new(config());
    let mut def = ttl_service();
    def.checks = vec![CheckDef {
        tcp: Some("127.0.0.1:9".into()),
        interval: Some(Duration::from_secs(5)),
        ..Default::default()
    }];
    h.call(ApiRequest::AgentServiceRegister { def: Box::new(def), replace_existing_checks: false });
    h.advance(Duration::from_secs(5));
    let Some(Effect::RunCheck { check, run, .. }) = h.runs.pop() else { panic!("a run was scheduled") };
    h.feed(Input::CheckResult { check, run, status: Health::Passing, output: "TCP connect: Success".into() });
    assert_eq!(health(&mut h, true), 1);
}

#[test]
fn maintenance_hides_the_node() {
    let mut h = Host::new(config());
    h.call(ApiRequest::AgentServiceRegister { def: Box::new(ttl_service()), replace_existing_checks: false });
    h.call(ApiRequest::AgentCheckTtl {
        id: "service:web1".into(),
        status: Health::Passing,
        output: String::new(),
    });
    assert_eq!(srv_count(&mut h), 1);
    h.call(ApiRequest::AgentMaintenance { enable: true, reason: String::new() });
    assert_eq!(srv_count(&mut h), 0);
    h.call(ApiRequest::AgentMaintenance { enable: false, reason: String::new() });
    assert_eq!(srv_count(&mut h), 1);
    let r = h.call(ApiRequest::AgentServiceMaintenance {
        id: "nope".into(),
        enable: true,
        reason: String::new(),
    });
    assert_eq!(r.status, 404);
}

#[test]
fn own_node_is_registered_with_serf_health_and_consul_service() {
    let mut h = Host::new(config());
    let r = h.call(ApiRequest::HealthNode { name: "dev".into(), q: QueryOpts::default() });
    let Body::Json(Reply::Checks(checks)) = r.body else { panic!() };
    assert_eq!(checks[0].check_id, "serfHealth");
    assert_eq!(checks[0].status, Health::Passing);
    let r = h.call(ApiRequest::CatalogServices { q: QueryOpts::default() });
    let Body::Json(Reply::ServiceTags(map)) = r.body else { panic!() };
    assert_eq!(map.get("consul"), Some(&vec![]));
}

#[test]
fn config_services_are_validated_and_registered() {
    let mut cfg = config();
    cfg.services = vec![ServiceDef {
        name: "redis".into(),
        checks: vec![CheckDef {
            script: Some("true".into()),
            interval: Some(Duration::from_secs(10)),
            ..Default::default()
        }],
        ..Default::default()
    }];
    assert!(
        matches!(Node::new(cfg.clone(), [0; 32]), Err(ConfigError::Service { .. })),
        "scripts need enabling"
    );
    cfg.enable_local_script_checks = true;
    let mut h = Host::new(cfg);
    let r = h.call(ApiRequest::AgentChecks);
    let Body::Json(Reply::AgentChecks(map)) = r.body else { panic!() };
    assert_eq!(map.keys().collect::<Vec<_>>(), ["service:redis"]);
}

#[test]
fn failed_persist_stops_the_node() {
    let mut node = Node::new(config(), [1; 32]).unwrap();
    let mut out = vec![];
    node.step(Time(1), Input::Tick, &mut out);
    node.step(Time(2), Input::PersistFailed { token: crate::ids::PersistToken(1) }, &mut out);
    let mut out = vec![];
    node.step(Time(3), Input::Request { id: ReqId(7), req: ApiRequest::StatusLeader }, &mut out);
    assert!(matches!(&out[..], [Effect::Respond { resp, .. }] if resp.status == 500));
}

#[test]
fn full_sync_writes_nothing_when_the_catalog_already_agrees() {
    let mut h = Host::new(config());
    let mut def = ttl_service();
    def.checks[0].ttl = Some(Duration::from_secs(3600));
    h.call(ApiRequest::AgentServiceRegister { def: Box::new(def), replace_existing_checks: false });
    h.call(ApiRequest::AgentMaintenance { enable: true, reason: "x".into() });
    let before = h.node.state().applied();
    h.advance(Duration::from_secs(150));
    assert_eq!(h.node.state().applied(), before, "two full syncs passed without a write");
}

#[test]
fn a_recovered_node_holds_what_was_acknowledged() {
    let mut cfg = config();
    cfg.snapshot_threshold = 10;
    let mut h = Host::new(cfg.clone());
    for i in 0..25 {
        assert_eq!(h.call(put(&format!("k{i}"), &format!("v{i}"), KvSetMode::Set)).status, 200);
    }
    h.call(ApiRequest::AgentServiceRegister { def: Box::new(ttl_service()), replace_existing_checks: false });
    let (snap_index, _, _) = h.disk.snapshot.clone().expect("a snapshot was taken past the threshold");
    assert!(h.disk.entries.iter().all(|e| e.index > snap_index), "the log was compacted");
    let before = h.node.state().digest();
    let applied = h.node.state().applied();

    let disk = std::mem::take(&mut h.disk);
    let mut r = Host::around(Node::recover(cfg, [5; 32], disk).unwrap());
    assert!(r.node.state().applied() > applied, "the recovered node started a new term with a no-op");
    assert_eq!(r.call(get("k24", 0)).body, Body::Raw(b"v24".to_vec()));
    assert_eq!(r.call(get("k3", 0)).body, Body::Raw(b"v3".to_vec()));
    assert_eq!(health(&mut r, false), 1, "the catalog came back too");
    assert_ne!(before, 0);
    let r2 = r.call(put("after", "restart", KvSetMode::Set));
    assert_eq!(r2.body, Body::Json(Reply::Bool(true)), "writes resume after recovery");
}

#[test]
fn a_snapshot_taken_mid_batch_is_labelled_with_what_it_holds() {
    // Writes whose persists are acknowledged together commit as one batch; the snapshot
    // due at the threshold inside it must name the index its state has reached.
    let cfg = Config { snapshot_threshold: 3, ..config() };
    let mut node = Node::new(cfg.clone(), [3; 32]).unwrap();
    let mut disk = Recovered::default();
    let mut out = vec![];
    let ack = |node: &mut Node, out: &mut Vec<Effect>, disk: &mut Recovered| {
        let mut last = None;
        for e in std::mem::take(out) {
            if let Effect::Persist { token, op } = e {
                crate::raft::disk::apply(disk, op);
                last = Some(token);
            }
        }
        if let Some(token) = last {
            node.step(Time(20), Input::Persisted { token }, out);
        }
    };
    node.step(Time(1), Input::Tick, &mut out);
    for _ in 0..5 {
        ack(&mut node, &mut out, &mut disk);
    }
    for i in 0..8 {
        let req = put(&format!("k{i}"), "v", KvSetMode::Set);
        node.step(Time(20), Input::Request { id: ReqId(i), req }, &mut out);
    }
    for _ in 0..5 {
        ack(&mut node, &mut out, &mut disk);
    }
    assert!(disk.snapshot.is_some(), "the batch crossed the threshold");
    let back = Node::recover(cfg, [4; 32], disk).expect("the snapshot's label matches its state");
    assert!(back.state().applied() >= Index(4));
}

#[test]
fn recovery_refuses_a_log_with_a_hole() {
    let mut h = Host::new(config());
    h.call(put("a", "1", KvSetMode::Set));
    h.call(put("b", "2", KvSetMode::Set));
    let mut disk = std::mem::take(&mut h.disk);
    disk.entries.remove(1);
    assert!(matches!(Node::recover(config(), [0; 32], disk), Err(ConfigError::Log(_))));
}
