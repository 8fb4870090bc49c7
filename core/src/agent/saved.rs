//! The service and check definitions registered through the HTTP API, kept so an agent
//! restarted on its data dir comes back with them (config-file definitions come from the
//! config files again, so they are not kept).
//!
//! Owns which definitions are kept and how a restored one is made safe to register again
//! (a TTL check restarts critical: nobody has vouched for it since the restart). Never
//! writes anything: the node hands the whole set to its host to store.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::api::defs::{CheckDef, ServiceDef};

/// Definitions by service ID and by check ID.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDefs {
    pub services: BTreeMap<String, ServiceDef>,
    pub checks: BTreeMap<String, CheckDef>,
}

impl SavedDefs {
    /// Forgets a service and the standalone checks registered for it.
    pub fn remove_service(&mut self, id: &str) -> bool {
        let before = self.checks.len();
        self.checks.retain(|_, c| c.service_id.as_deref() != Some(id));
        self.services.remove(id).is_some() || self.checks.len() != before
    }

    /// A definition as it registers again after a restart.
    pub fn restored_check(def: &CheckDef) -> CheckDef {
        let mut def = def.clone();
        if def.ttl.is_some() {
            def.status = None;
        }
        def
    }

    pub fn restored_service(def: &ServiceDef) -> ServiceDef {
        let mut def = def.clone();
        def.checks = def.checks.iter().map(SavedDefs::restored_check).collect();
        def
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Duration;

    #[test]
    fn restored_ttl_checks_start_critical_and_others_keep_their_status() {
        let ttl = CheckDef {
            ttl: Some(Duration::from_secs(10)),
            status: Some("passing".into()),
            ..Default::default()
        };
        let http =
            CheckDef { http: Some("http://x/".into()), status: Some("passing".into()), ..Default::default() };
        let svc =
            ServiceDef { name: "web".into(), checks: vec![ttl.clone(), http.clone()], ..Default::default() };
        let back = SavedDefs::restored_service(&svc);
        assert_eq!(back.checks[0].status, None);
        assert_eq!(back.checks[1].status.as_deref(), Some("passing"));
    }

    #[test]
    fn removing_a_service_forgets_its_standalone_checks() {
        let mut s = SavedDefs::default();
        s.services.insert("web".into(), ServiceDef { name: "web".into(), ..Default::default() });
        s.checks.insert("c1".into(), CheckDef { service_id: Some("web".into()), ..Default::default() });
        s.checks.insert("c2".into(), CheckDef::default());
        assert!(s.remove_service("web"));
        assert_eq!(s.checks.keys().collect::<Vec<_>>(), ["c2"]);
        assert!(!s.remove_service("web"));
    }
}
