//! Three nodes over an in-memory network, driven directly: discovery, bootstrap, forwarding
//! and read barriers work end to end without a runtime.

use std::collections::{BTreeMap, VecDeque};

use super::*;
use crate::api::shapes::Reply;
use crate::api::{Consistency, KvRead, QueryOpts};
use crate::fsm::kv::KvSetMode;
use crate::rpc::PeerMessage;

struct Net {
    nodes: Vec<Node>,
    ids: Vec<String>,
    now: Time,
    wire: VecDeque<(usize, String, PeerMessage)>,
    responses: BTreeMap<(usize, u64), ApiResponse>,
    next_req: u64,
    down: Vec<bool>,
    /// What each server's disk holds (every persist lands at once).
    disks: Vec<Recovered>,
}

impl Net {
    fn new(n: usize) -> Net {
        let ids: Vec<String> = (1..=n).map(|i| format!("10.0.0.{i}:8300")).collect();
        let nodes = (1..=n)
            .map(|i| {
                let info = NodeInfo::new(&format!("s{i}"), &format!("10.0.0.{i}"), "dc1");
                let cfg = Config {
                    bootstrap: false,
                    bootstrap_expect: n as u32,
                    retry_join: ids.clone(),
                    ..Config::defaults(info)
                };
                Node::new(cfg, [i as u8; 32]).unwrap()
            })
            .collect();
        Net {
            nodes,
            ids,
            now: Time(1),
            wire: VecDeque::new(),
            responses: BTreeMap::new(),
            next_req: 0,
            down: vec![false; n],
            disks: vec![Recovered::default(); n],
        }
    }

    fn step(&mut self, i: usize, input: Input) {
        let mut queue = VecDeque::from([input]);
        let mut steps = 0;
        while let Some(input) = queue.pop_front() {
            steps += 1;
            assert!(steps < 10_000, "node {i} keeps asking for persists: {input:?}");
            let mut out = vec![];
            self.nodes[i].step(self.now, input, &mut out);
            for e in out {
                match e {
                    Effect::Persist { token, op } => {
                        crate::raft::disk::apply(&mut self.disks[i], op);
                        queue.push_back(Input::Persisted { token });
                    }
                    Effect::Send { to, msg } => {
                        let from = self.ids[i].clone();
                        match self.ids.iter().position(|x| *x == to) {
                            // A dead server refuses the connection: the host hands the message back.
                            Some(j) if self.down[j] => queue.push_back(Input::Undelivered { to, msg }),
                            Some(j) => self.wire.push_back((j, from, msg)),
                            None => {}
                        }
                    }
                    Effect::Respond { id, resp } => {
                        self.responses.insert((i, id.0), resp);
                    }
                    _ => {}
                }
            }
        }
    }

    /// Delivers messages and advances time by `d` in 10 ms rounds.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now = self.now + Duration::from_millis(10);
            for i in 0..self.nodes.len() {
                if !self.down[i] {
                    self.step(i, Input::Tick);
                }
            }
            let mut delivered = 0;
            while let Some((j, from, msg)) = self.wire.pop_front() {
                delivered += 1;
                assert!(delivered < 100_000, "a message storm: {msg:?} to {j}");
                let sender_down = self.ids.iter().position(|x| *x == from).is_some_and(|s| self.down[s]);
                if !self.down[j] && !sender_down {
                    self.step(j, Input::Peer { from, msg });
                }
            }
        }
    }

    fn send(&mut self, i: usize, req: ApiRequest) -> u64 {
        self.next_req += 1;
        let id = self.next_req;
        self.step(i, Input::Request { id: ReqId(id), req });
        id
    }

    fn call(&mut self, i: usize, req: ApiRequest) -> ApiResponse {
        let id = self.send(i, req);
        for _ in 0..1000 {
            if let Some(r) = self.responses.remove(&(i, id)) {
                return r;
            }
            self.run(Duration::from_millis(10));
        }
        panic!("request {id} on node {i} never answered");
    }

    /// Adds a client agent that knows the servers without gossip; returns its index.
    fn add_client(&mut self, name: &str) -> usize {
        let info = NodeInfo::new(name, "10.0.1.1", "dc1");
        let cfg = Config {
            server: false,
            bootstrap: false,
            retry_join: self.ids.clone(),
            ae_interval: Duration::from_secs(2),
            ..Config::defaults(info)
        };
        self.nodes.push(Node::new(cfg, [7; 32]).unwrap());
        self.ids.push(crate::rpc::client_id(name));
        self.down.push(false);
        self.disks.push(Recovered::default());
        self.nodes.len() - 1
    }

    /// Server `i` comes back from what its disk holds.
    fn restart(&mut self, i: usize) {
        let cfg = self.nodes[i].config().clone();
        self.nodes[i] = Node::recover(cfg, [99; 32], self.disks[i].clone()).unwrap();
        self.down[i] = false;
    }

    fn a_follower(&mut self) -> usize {
        let leader = self.leader().expect("a leader is elected");
        (self.ids.iter().position(|x| *x == leader).unwrap() + 1) % self.nodes.len()
    }

    fn leader(&mut self) -> Option<String> {
        match self.call(0, ApiRequest::StatusLeader).body {
            Body::Json(Reply::Str(s)) if !s.is_empty() => Some(s),
            _ => None,
        }
    }
}

fn put(key: &str, value: &str) -> ApiRequest {
    ApiRequest::KvPut { key: key.into(), value: value.as_bytes().to_vec(), flags: 0, mode: KvSetMode::Set }
}

fn get(key: &str, consistency: Consistency) -> ApiRequest {
    let q = QueryOpts { consistency, ..Default::default() };
    ApiRequest::KvGet { key: key.into(), read: KvRead::Entry { raw: true }, q }
}

#[test]
fn three_servers_bootstrap_forward_writes_and_serve_linearizable_reads_anywhere() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let leader = net.leader().expect("a leader is elected");
    let peers = net.call(2, ApiRequest::StatusPeers);
    assert_eq!(peers.body, Body::Json(Reply::Strings(net.ids.clone())));
    // Write through every server, read back through every server in every mode.
    for (i, key) in ["a", "b", "c"].into_iter().enumerate() {
        assert_eq!(net.call(i, put(key, "v")).body, Body::Json(Reply::Bool(true)), "write via node {i}");
    }
    for i in 0..3 {
        for c in [Consistency::Default, Consistency::Consistent] {
            let r = net.call(i, get("c", c));
            assert_eq!(r.body, Body::Raw(b"v".to_vec()), "node {i} {c:?}");
            assert!(r.meta.unwrap().known_leader);
        }
    }
    // Kill the leader: the others elect a new one, and writes and reads go on.
    let l = net.ids.iter().position(|x| *x == leader).unwrap();
    net.down[l] = true;
    let other = (l + 1) % 3;
    assert_eq!(net.call(other, put("after", "1")).body, Body::Json(Reply::Bool(true)));
    let r = net.call((l + 2) % 3, get("after", Consistency::Consistent));
    assert_eq!(r.body, Body::Raw(b"1".to_vec()));
    // The old leader returns and catches up.
    net.down[l] = false;
    net.run(Duration::from_secs(3));
    let r = net.call(l, get("after", Consistency::Stale));
    assert_eq!(r.body, Body::Raw(b"1".to_vec()));
}

#[test]
fn without_a_quorum_writes_wait_then_fail_with_no_leader() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    net.down[1] = true;
    net.down[2] = true;
    let r = net.call(0, put("k", "v"));
    assert_eq!(r.status, 500);
    let stale = net.call(0, get("k", Consistency::Stale));
    assert_eq!(stale.status, 404, "a stale read is served locally even without a leader");
}

#[test]
fn operator_removes_a_peer() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let gone = net.ids[2].clone();
    let r = net.call(0, ApiRequest::OperatorRaftRemovePeer { address: Some(gone.clone()), id: None });
    assert_eq!(r.status, 200, "{r:?}");
    net.down[2] = true;
    let peers = net.call(1, ApiRequest::StatusPeers);
    assert_eq!(peers.body, Body::Json(Reply::Strings(net.ids[..2].to_vec())));
    let Body::Json(Reply::RaftConfiguration(c)) = net.call(0, ApiRequest::OperatorRaftConfiguration).body
    else {
        panic!("a configuration")
    };
    assert_eq!(c.servers.len(), 2);
    assert!(c.servers.iter().any(|s| s.leader));
    let l = leader_index(&mut net);
    let Body::Json(Reply::RaftConfiguration(c)) = net.call(l, ApiRequest::OperatorRaftConfiguration).body
    else {
        panic!("a configuration")
    };
    assert!(c.servers.iter().all(|s| s.last_index > 0), "the leader knows every member's log: {c:?}");
    assert_eq!(net.call(1, ApiRequest::OperatorRaftRemovePeer { address: Some(gone), id: None }).status, 500);
}

#[test]
fn a_reply_meant_for_an_earlier_life_of_a_server_answers_nothing_in_its_new_one() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let f = net.a_follower();
    // The follower forwards a write, and crashes while the forward is still on its way.
    net.send(f, put("old", "1"));
    let in_flight: Vec<_> = net.wire.drain(..).collect();
    net.restart(f);
    net.run(Duration::from_secs(2));
    // Its new life forwards a CAS that fails; the leader answers the old write first.
    net.wire.extend(in_flight);
    let cas =
        ApiRequest::KvPut { key: "new".into(), value: b"2".to_vec(), flags: 0, mode: KvSetMode::Cas(12345) };
    let r = net.call(f, cas);
    assert_eq!(r.body, Body::Json(Reply::Bool(false)), "answered with the old write's outcome");
}

#[test]
fn a_due_raft_timer_runs_on_a_request_before_the_hosts_wakeup() {
    // Under a stream of requests the host may step the node many times before its wakeup
    // fires; a leader whose heartbeat is due must still send it.
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let l = leader_index(&mut net);
    net.now = net.now + Duration::from_millis(200);
    let mut out = vec![];
    let req = get("k", Consistency::Stale);
    net.nodes[l].step(net.now, Input::Request { id: ReqId(999), req }, &mut out);
    let heartbeats = out
        .iter()
        .filter(|e| {
            matches!(
                e,
                Effect::Send { msg: PeerMessage::Raft(crate::raft::Message::AppendEntries { .. }), .. }
            )
        })
        .count();
    assert_eq!(heartbeats, 2, "one heartbeat to each follower");
}

fn leader_index(net: &mut Net) -> usize {
    let leader = net.leader().expect("a leader");
    net.ids.iter().position(|x| *x == leader).expect("a member leads")
}

fn web_service() -> ApiRequest {
    let def = crate::api::defs::ServiceDef {
        name: "web".into(),
        port: 80,
        checks: vec![crate::api::defs::CheckDef {
            name: Some("alive".into()),
            ttl: Some(Duration::from_secs(30)),
            status: Some("passing".into()),
            ..Default::default()
        }],
        ..Default::default()
    };
    ApiRequest::AgentServiceRegister { def: Box::new(def), replace_existing_checks: false }
}

fn health_web(min_index: u64) -> ApiRequest {
    let q =
        QueryOpts { min_index: Index(min_index), wait: Some(Duration::from_secs(30)), ..Default::default() };
    ApiRequest::HealthService { service: "web".into(), tags: vec![], passing: true, q, near: None }
}

/// Instances of `web` in a health answer (rendered JSON, as servers and clients give it).
fn instances(r: &ApiResponse) -> usize {
    let Body::JsonText(text) = &r.body else { panic!("rendered JSON, got {r:?}") };
    text.matches("\"ServiceID\":\"web\"").count()
}

#[test]
fn a_client_agent_forwards_reads_and_writes_and_its_services_reach_the_catalog() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let c = net.add_client("c1");
    let r = net.call(c, put("k", "v"));
    assert_eq!(r.body, Body::JsonText("true".into()), "{r:?}");
    let r = net.call(c, get("k", Consistency::Consistent));
    assert_eq!(r.body, Body::Raw(b"v".to_vec()));
    assert!(r.meta.unwrap().known_leader);
    // A service registered on the client is the catalog's, on every server.
    assert_eq!(net.call(c, web_service()).status, 200);
    for s in 0..3 {
        let r = net.call(s, health_web(0));
        assert_eq!(instances(&r), 1, "server {s} sees the client's service");
    }
    // A blocking health read held through the client wakes when the check fails.
    let index = net.call(c, health_web(0)).meta.unwrap().index.0;
    let waiting = net.send(c, health_web(index));
    net.run(Duration::from_secs(1));
    assert!(!net.responses.contains_key(&(c, waiting)), "the read blocks at its server");
    let fail = ApiRequest::AgentCheckTtl {
        id: "service:web".into(),
        status: Health::Critical,
        output: "down".into(),
    };
    assert_eq!(net.call(c, fail).status, 200);
    net.run(Duration::from_millis(200));
    let woke = net.responses.remove(&(c, waiting)).expect("the blocking read woke");
    assert_eq!(instances(&woke), 0, "no passing instance left: {woke:?}");
    assert!(woke.meta.unwrap().index.0 > index);
}

#[test]
fn a_client_fails_over_when_its_server_dies_and_anti_entropy_repairs_the_catalog() {
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let c = net.add_client("c1");
    assert_eq!(net.call(c, web_service()).status, 200);
    // Every server the client might be using dies in turn; its next request still succeeds.
    for dead in 0..2 {
        net.down[dead] = true;
        net.run(Duration::from_secs(3));
        let r = net.call(c, get("k", Consistency::Stale));
        assert_eq!(r.status, 404, "with server {dead} down: {r:?}");
    }
    net.down[0] = false;
    net.down[1] = false;
    net.run(Duration::from_secs(3));
    // Delete the client's service behind its back: the next full sync puts it back.
    let gone = crate::api::defs::CatalogDeregisterDef {
        node: "c1".into(),
        service_id: Some("web".into()),
        ..Default::default()
    };
    assert_eq!(net.call(2, ApiRequest::CatalogDeregister(gone)).status, 200);
    let r = net.call(2, health_web(0));
    assert_eq!(r.body, Body::JsonText("[]".into()));
    net.run(Duration::from_secs(6));
    let r = net.call(2, health_web(0));
    assert_eq!(instances(&r), 1, "anti-entropy restored the service");
}

#[test]
fn a_server_refuses_calls_for_its_own_agent_endpoints_and_raft_membership() {
    use crate::rpc::{Answer, Call, Work};
    let mut net = Net::new(3);
    net.run(Duration::from_secs(5));
    let from = crate::rpc::client_id("intruder");
    let mut answers = vec![];
    for (ctx, call) in [
        (1, Call::Api { dc: None, req: ApiRequest::AgentLeave }),
        (2, Call::Work(Work::RemovePeer(net.ids[1].clone()))),
        (
            3,
            Call::Work(Work::Commands(vec![crate::fsm::Command::KvDelete {
                key: String::new(),
                recurse: true,
                cas: None,
            }])),
        ),
    ] {
        let mut out = vec![];
        net.nodes[0].step(
            net.now,
            Input::Peer { from: from.clone(), msg: PeerMessage::Call { ctx, call } },
            &mut out,
        );
        answers.extend(out.into_iter().filter_map(|e| match e {
            Effect::Send { msg: PeerMessage::Answer { answer, .. }, .. } => Some(answer),
            _ => None,
        }));
    }
    assert!(matches!(&answers[0], Answer::Api(w) if w.status == 403), "{answers:?}");
    assert!(matches!(&answers[1], Answer::Work(Err(_))));
    assert!(matches!(&answers[2], Answer::Work(Err(_))));
    net.run(Duration::from_secs(2));
    let peers = net.call(1, ApiRequest::StatusPeers);
    assert_eq!(peers.body, Body::Json(Reply::Strings(net.ids.clone())), "still three voters");
}

#[test]
fn another_datacenter_without_a_path_answers_500() {
    let mut net = Net::new(1);
    net.run(Duration::from_secs(3));
    let c = net.add_client("c1");
    let req = ApiRequest::InDatacenter { dc: "dc9".into(), req: Box::new(get("k", Consistency::Default)) };
    let r = net.call(c, req.clone());
    assert_eq!((r.status, r.body), (500, Body::Text("No path to datacenter".into())));
    let own = ApiRequest::InDatacenter { dc: "dc1".into(), req: Box::new(get("k", Consistency::Default)) };
    assert_eq!(net.call(0, own).status, 404, "its own datacenter is answered locally");
}
