//! The agent's local state: the services and checks registered on this node, and keeping the
//! catalog in step with them (anti-entropy).
//!
//! Owns local registrations, their in-sync flags, maintenance checks, the deferral of
//! output-only check changes, and the reaping of services whose checks stay critical. Turns
//! differences between local state and the catalog into catalog commands. Never writes the
//! catalog itself (the node proposes the commands) and never schedules probes (`checks`).

mod saved;

pub use saved::SavedDefs;

use std::collections::{BTreeMap, BTreeSet};

use crate::fsm::catalog::{Catalog, Deregistration, Health, HealthCheck, Node, NodeService, Registration};
use crate::fsm::Command;
use crate::time::{Duration, Time};

/// The service every server registers for itself; the leader owns it, never anti-entropy.
pub const CONSUL_SERVICE: &str = "consul";
/// The node health check the leader writes from gossip; never touched by anti-entropy.
pub const SERF_HEALTH: &str = "serfHealth";
pub const NODE_MAINTENANCE: &str = "_node_maintenance";
pub const SERVICE_MAINTENANCE_PREFIX: &str = "_service_maintenance:";

/// The full-sync period for a cluster of `nodes`: the base period up to 128 nodes, then one
/// more period per doubling (Consul's scaling), so the servers' load from full syncs stays
/// flat as the cluster grows.
pub fn ae_scale(interval: Duration, nodes: usize) -> Duration {
    const THRESHOLD: usize = 128;
    if nodes <= THRESHOLD {
        return interval;
    }
    let doublings = (nodes as f64 / THRESHOLD as f64).log2().ceil() as u32;
    interval * (doublings + 1)
}

#[derive(Clone, Debug)]
struct LocalService {
    svc: NodeService,
    in_sync: bool,
}

#[derive(Clone, Debug)]
struct LocalCheck {
    row: HealthCheck,
    in_sync: bool,
    /// An output-only change waits until then, so chatty checks don't flood the log.
    sync_after: Option<Time>,
    deregister_after: Option<Duration>,
    critical_since: Option<Time>,
}

/// Who this node is, as the catalog shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub name: String,
    pub id: String,
    pub address: String,
    pub datacenter: String,
    pub tagged_addresses: BTreeMap<String, String>,
    pub meta: BTreeMap<String, String>,
}

impl NodeInfo {
    /// A node in `datacenter` with no ID, tagged addresses or metadata.
    pub fn new(name: &str, address: &str, datacenter: &str) -> NodeInfo {
        NodeInfo {
            name: name.into(),
            id: String::new(),
            address: address.into(),
            datacenter: datacenter.into(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
        }
    }

    pub fn row(&self) -> Node {
        Node {
            id: self.id.clone(),
            node: self.name.clone(),
            address: self.address.clone(),
            datacenter: self.datacenter.clone(),
            tagged_addresses: self.tagged_addresses.clone(),
            meta: self.meta.clone(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

#[derive(Debug)]
pub struct Agent {
    pub info: NodeInfo,
    services: BTreeMap<String, LocalService>,
    checks: BTreeMap<String, LocalCheck>,
    removed_services: BTreeSet<String>,
    removed_checks: BTreeSet<String>,
    check_update_interval: Duration,
}

impl Agent {
    pub fn new(info: NodeInfo, check_update_interval: Duration) -> Agent {
        Agent {
            info,
            services: BTreeMap::new(),
            checks: BTreeMap::new(),
            removed_services: BTreeSet::new(),
            removed_checks: BTreeSet::new(),
            check_update_interval,
        }
    }

    pub fn services(&self) -> impl Iterator<Item = &NodeService> {
        self.services.values().map(|s| &s.svc)
    }

    pub fn service(&self, id: &str) -> Option<&NodeService> {
        self.services.get(id).map(|s| &s.svc)
    }

    pub fn checks(&self) -> impl Iterator<Item = &HealthCheck> {
        self.checks.values().map(|c| &c.row)
    }

    pub fn check(&self, id: &str) -> Option<&HealthCheck> {
        self.checks.get(id).map(|c| &c.row)
    }

    pub fn add_service(&mut self, svc: NodeService) {
        self.removed_services.remove(&svc.id);
        self.services.insert(svc.id.clone(), LocalService { svc, in_sync: false });
    }

    /// Removes a service and its checks; returns the IDs of the checks removed.
    pub fn remove_service(&mut self, id: &str) -> Vec<String> {
        if self.services.remove(id).is_some() {
            self.removed_services.insert(id.to_string());
        }
        let doomed: Vec<String> =
            self.checks.iter().filter(|(_, c)| c.row.service_id == id).map(|(k, _)| k.clone()).collect();
        for c in &doomed {
            self.checks.remove(c);
        }
        doomed
    }

    pub fn add_check(&mut self, mut row: HealthCheck, deregister_after: Option<Duration>, now: Time) {
        row.node = self.info.name.clone();
        if let Some(s) = self.services.get(&row.service_id) {
            row.service_name = s.svc.service.clone();
            row.service_tags = s.svc.tags.clone();
        }
        self.removed_checks.remove(&row.check_id);
        let critical_since = (row.status == Health::Critical).then_some(now);
        let id = row.check_id.clone();
        self.checks.insert(
            id,
            LocalCheck { row, in_sync: false, sync_after: None, deregister_after, critical_since },
        );
    }

    pub fn remove_check(&mut self, id: &str) -> bool {
        let had = self.checks.remove(id).is_some();
        if had {
            self.removed_checks.insert(id.to_string());
        }
        had
    }

    /// Records a new status/output. A status change syncs at once; an output-only change
    /// waits for `check_update_interval`.
    pub fn set_check(&mut self, id: &str, status: Health, output: &str, now: Time) -> bool {
        let interval = self.check_update_interval;
        let Some(c) = self.checks.get_mut(id) else {
            return false;
        };
        if c.row.status == status && c.row.output == output {
            return true;
        }
        if c.row.status != status {
            c.sync_after = None;
            c.critical_since = (status == Health::Critical).then_some(now);
        } else if c.in_sync {
            c.sync_after = Some(now + interval);
        }
        c.row.status = status;
        c.row.output = output.to_string();
        c.in_sync = false;
        true
    }

    /// Services whose checks have been critical longer than their
    /// `DeregisterCriticalServiceAfter`.
    pub fn services_to_reap(&self, now: Time) -> Vec<String> {
        let mut out: Vec<String> = self
            .checks
            .values()
            .filter(|c| !c.row.service_id.is_empty())
            .filter(|c| match (c.deregister_after, c.critical_since) {
                (Some(after), Some(since)) => now.since(since) >= after,
                _ => false,
            })
            .map(|c| c.row.service_id.clone())
            .collect();
        out.dedup();
        out
    }

    /// The earliest moment something local needs attention (deferred syncs, reaping).
    pub fn next_deadline(&self) -> Option<Time> {
        self.checks
            .values()
            .flat_map(|c| {
                let reap = c.deregister_after.zip(c.critical_since).map(|(a, s)| s + a);
                [c.sync_after.filter(|_| !c.in_sync), reap]
            })
            .flatten()
            .min()
    }

    /// Commands that bring the catalog in line with local state. With `full`, the catalog's
    /// view of this node is compared entry by entry (repairing external edits); otherwise only
    /// local changes are pushed. Marks everything it emits as in sync.
    pub fn sync(&mut self, catalog: &Catalog, full: bool, now: Time) -> Vec<Command> {
        let mut cmds = Vec::new();
        let node = self.info.row();
        if full {
            self.compare_with_catalog(catalog);
        }
        let remote_node = catalog.node(&self.info.name);
        let node_dirty = remote_node.is_none_or(|n| {
            n.id != node.id
                || n.address != node.address
                || n.tagged_addresses != node.tagged_addresses
                || n.meta != node.meta
        });
        for id in std::mem::take(&mut self.removed_services) {
            cmds.push(Command::Deregister(Deregistration {
                node: node.node.clone(),
                service_id: Some(id),
                check_id: None,
            }));
        }
        for id in std::mem::take(&mut self.removed_checks) {
            cmds.push(Command::Deregister(Deregistration {
                node: node.node.clone(),
                service_id: None,
                check_id: Some(id),
            }));
        }
        let mut node_written = false;
        for ls in self.services.values_mut().filter(|s| !s.in_sync) {
            ls.in_sync = true;
            let checks: Vec<HealthCheck> = self
                .checks
                .values_mut()
                .filter(|c| c.row.service_id == ls.svc.id)
                .map(|c| {
                    c.in_sync = true;
                    c.sync_after = None;
                    c.row.clone()
                })
                .collect();
            cmds.push(Command::Register(Box::new(Registration {
                node: node.clone(),
                skip_node_update: false,
                service: Some(ls.svc.clone()),
                checks,
            })));
            node_written = true;
        }
        let due: Vec<HealthCheck> = self
            .checks
            .values_mut()
            .filter(|c| !c.in_sync && c.sync_after.is_none_or(|t| t <= now))
            .map(|c| {
                c.in_sync = true;
                c.sync_after = None;
                c.row.clone()
            })
            .collect();
        if !due.is_empty() || (node_dirty && !node_written) {
            cmds.push(Command::Register(Box::new(Registration {
                node,
                skip_node_update: false,
                service: None,
                checks: due,
            })));
        }
        cmds
    }

    /// Marks out of sync whatever differs from the catalog, and queues removal of what the
    /// catalog holds for this node that the agent doesn't know (except what the leader owns).
    fn compare_with_catalog(&mut self, catalog: &Catalog) {
        let name = self.info.name.clone();
        for remote in catalog.node_services(&name) {
            match self.services.get_mut(&remote.id) {
                Some(local) => {
                    let mut want = local.svc.clone();
                    if want.enable_tag_override {
                        want.tags = remote.tags.clone();
                        local.svc.tags = remote.tags.clone();
                    }
                    want.create_index = remote.create_index;
                    want.modify_index = remote.modify_index;
                    if want != *remote {
                        local.in_sync = false;
                    }
                }
                None if remote.id == CONSUL_SERVICE => {}
                None => {
                    self.removed_services.insert(remote.id.clone());
                }
            }
        }
        for ls in self.services.values_mut() {
            if catalog.node_services(&name).all(|r| r.id != ls.svc.id) {
                ls.in_sync = false;
            }
        }
        for remote in catalog.node_checks(&name) {
            match self.checks.get_mut(&remote.check_id) {
                Some(local) => {
                    let mut want = local.row.clone();
                    want.create_index = remote.create_index;
                    want.modify_index = remote.modify_index;
                    // An output-only update may be waiting for `check_update_interval`;
                    // any other difference (a status write that was lost) is due now.
                    if local.sync_after.is_some() {
                        want.output = remote.output.clone();
                    }
                    if want != *remote {
                        local.in_sync = false;
                        local.sync_after = None;
                    }
                }
                None if remote.check_id == SERF_HEALTH => {}
                None if self.removed_services.contains(&remote.service_id) => {}
                None => {
                    self.removed_checks.insert(remote.check_id.clone());
                }
            }
        }
        for lc in self.checks.values_mut() {
            if catalog.node_checks(&name).all(|r| r.check_id != lc.row.check_id) {
                lc.in_sync = false;
                lc.sync_after = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fsm::catalog::tests::{check, service};
    use crate::fsm::State;

    fn agent() -> Agent {
        let info = NodeInfo {
            name: "n1".into(),
            id: "id".into(),
            address: "127.0.0.1".into(),
            datacenter: "dc1".into(),
            tagged_addresses: BTreeMap::new(),
            meta: BTreeMap::new(),
        };
        Agent::new(info, Duration::from_secs(300))
    }

    fn apply_all(state: &mut State, cmds: Vec<Command>) {
        for c in cmds {
            let next = state.applied().next();
            state.apply(next, &c);
        }
    }

    #[test]
    fn partial_sync_pushes_changes_once() {
        let mut a = agent();
        let mut st = State::default();
        a.add_service(service("web1", "web"));
        a.add_check(check("service:web1", "web1", Health::Critical), None, Time(0));
        let cmds = a.sync(&st.catalog, false, Time(0));
        assert_eq!(cmds.len(), 1, "service and its checks in one registration");
        apply_all(&mut st, cmds);
        assert_eq!(st.catalog.node_checks("n1").next().unwrap().service_name, "web");
        assert!(a.sync(&st.catalog, false, Time(0)).is_empty(), "nothing left to push");
        assert!(a.set_check("service:web1", Health::Passing, "ok", Time(5)));
        let cmds = a.sync(&st.catalog, false, Time(5));
        apply_all(&mut st, cmds);
        assert_eq!(st.catalog.node_checks("n1").next().unwrap().status, Health::Passing);
    }

    #[test]
    fn output_only_changes_are_deferred() {
        let mut a = agent();
        let mut st = State::default();
        a.add_check(check("c", "", Health::Passing), None, Time(0));
        let cmds = a.sync(&st.catalog, false, Time(0));
        apply_all(&mut st, cmds);
        a.set_check("c", Health::Passing, "new output", Time(10));
        assert!(a.sync(&st.catalog, false, Time(10)).is_empty());
        let later = Time(10) + Duration::from_secs(300);
        assert_eq!(a.next_deadline(), Some(later));
        assert_eq!(a.sync(&st.catalog, false, later).len(), 1);
    }

    /// Found by the simulator's clients world (seed 890): a status write that was lost, then
    /// an output-only change, left the catalog wrong until `check_update_interval`.
    #[test]
    fn a_lost_status_write_is_repaired_even_while_an_output_change_waits() {
        let mut a = agent();
        let mut st = State::default();
        a.add_check(check("c", "", Health::Warning), None, Time(0));
        let cmds = a.sync(&st.catalog, false, Time(0));
        apply_all(&mut st, cmds);
        a.set_check("c", Health::Critical, "failing", Time(10));
        let lost = a.sync(&st.catalog, false, Time(10));
        assert_eq!(lost.len(), 1, "the status change goes out at once, and is lost");
        a.set_check("c", Health::Critical, "TTL expired", Time(20));
        assert!(a.sync(&st.catalog, false, Time(20)).is_empty(), "output-only: deferred");
        let cmds = a.sync(&st.catalog, true, Time(30));
        apply_all(&mut st, cmds);
        let row = st.catalog.node_checks("n1").find(|c| c.check_id == "c").unwrap();
        assert_eq!((row.status, row.output.as_str()), (Health::Critical, "TTL expired"));
        // A check the catalog lost is due at once too, deferred output or not.
        a.set_check("c", Health::Critical, "again", Time(40));
        let gone = Deregistration { node: "n1".into(), service_id: None, check_id: Some("c".into()) };
        apply_all(&mut st, vec![Command::Deregister(gone)]);
        assert_eq!(a.sync(&st.catalog, true, Time(41)).len(), 1);
    }

    #[test]
    fn full_sync_repairs_external_edits_but_spares_leader_entries() {
        let mut a = agent();
        let mut st = State::default();
        a.add_service(service("web1", "web"));
        let cmds = a.sync(&st.catalog, false, Time(0));
        apply_all(&mut st, cmds);
        // Someone edits the catalog behind the agent's back.
        let node = a.info.row();
        let mut changed = service("web1", "web");
        changed.port = 9999;
        let extra = vec![check(SERF_HEALTH, "", Health::Passing), check("stray", "", Health::Passing)];
        apply_all(
            &mut st,
            vec![
                Command::Register(Box::new(Registration {
                    node: node.clone(),
                    skip_node_update: false,
                    service: Some(changed),
                    checks: extra,
                })),
                Command::Register(Box::new(Registration {
                    node,
                    skip_node_update: false,
                    service: Some(service(CONSUL_SERVICE, CONSUL_SERVICE)),
                    checks: vec![],
                })),
            ],
        );
        let cmds = a.sync(&st.catalog, true, Time(1));
        apply_all(&mut st, cmds);
        let ports: Vec<_> = st.catalog.node_services("n1").map(|s| (s.id.clone(), s.port)).collect();
        assert_eq!(ports, [(CONSUL_SERVICE.to_string(), 80), ("web1".to_string(), 80)]);
        let checks: Vec<_> = st.catalog.node_checks("n1").map(|c| c.check_id.clone()).collect();
        assert_eq!(checks, [SERF_HEALTH]);
    }

    #[test]
    fn critical_services_are_reaped_after_their_deadline() {
        let mut a = agent();
        a.add_service(service("web1", "web"));
        a.add_check(check("c", "web1", Health::Critical), Some(Duration::from_secs(60)), Time(0));
        assert!(a.services_to_reap(Time(0) + Duration::from_secs(59)).is_empty());
        assert_eq!(a.services_to_reap(Time(0) + Duration::from_secs(60)), ["web1"]);
        a.set_check("c", Health::Passing, "", Time(0) + Duration::from_secs(30));
        assert!(a.services_to_reap(Time(0) + Duration::from_secs(90)).is_empty());
    }
}

#[cfg(test)]
mod scale_tests {
    use super::*;

    #[test]
    fn full_sync_period_grows_one_period_per_doubling_past_128_nodes() {
        let m = Duration::from_secs(60);
        assert_eq!(ae_scale(m, 1), m);
        assert_eq!(ae_scale(m, 128), m);
        assert_eq!(ae_scale(m, 129), m * 2);
        assert_eq!(ae_scale(m, 256), m * 2);
        assert_eq!(ae_scale(m, 257), m * 3);
        assert_eq!(ae_scale(m, 10_000), m * 8);
    }
}
