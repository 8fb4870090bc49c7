//! The network coordinates of catalog nodes (`/v1/coordinate/nodes`): the last coordinate
//! each agent sent for itself in its LAN pool.
//!
//! Owns the rows and their blocking index. An update for a node the catalog does not hold
//! is skipped (a coordinate never creates a node), and a node's coordinate goes when the
//! node is deregistered. Never computes coordinates (`gossip` does) and never sorts
//! answers by them (`server` does).

use imbl::OrdMap;

use serde::{Deserialize, Serialize};

use super::catalog::Catalog;
use crate::coordinate::Coordinate;
use crate::ids::Index;

/// One node's coordinate, in Consul's JSON shape (`Node`, `Segment`, `Coord`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CoordinateEntry {
    pub node: String,
    #[serde(default)]
    pub segment: String,
    pub coord: Coordinate,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinates {
    /// By node name compared without case, as the catalog's.
    rows: OrdMap<String, CoordinateEntry>,
    index: Index,
}

impl Coordinates {
    pub fn index(&self) -> Index {
        self.index
    }

    pub fn get(&self, node: &str) -> Option<&CoordinateEntry> {
        self.rows.get(&node.to_ascii_lowercase())
    }

    pub fn all(&self) -> impl Iterator<Item = &CoordinateEntry> {
        self.rows.values()
    }

    /// Stores the entries whose node exists and whose coordinate is usable; returns how
    /// many were stored.
    pub fn update(&mut self, index: Index, entries: &[CoordinateEntry], catalog: &Catalog) -> usize {
        let mut stored = 0;
        for e in entries {
            let Some(node) = catalog.node(&e.node) else { continue };
            if !e.coord.is_valid() {
                continue;
            }
            let row = CoordinateEntry { node: node.node.clone(), ..e.clone() };
            self.rows.insert(node.node.to_ascii_lowercase(), row);
            stored += 1;
        }
        if stored > 0 {
            self.index = index;
        }
        stored
    }

    pub fn remove_node(&mut self, index: Index, node: &str) {
        if self.rows.remove(&node.to_ascii_lowercase()).is_some() {
            self.index = index;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::coordinate::CoordinateConfig;
    use crate::fsm::catalog::Registration;

    fn entry(node: &str) -> CoordinateEntry {
        CoordinateEntry {
            node: node.into(),
            segment: String::new(),
            coord: Coordinate::new(&CoordinateConfig::default()),
        }
    }

    #[test]
    fn updates_land_only_for_known_nodes_and_leave_with_them() {
        let mut cat = Catalog::default();
        let node = crate::agent::NodeInfo::new("N1", "10.0.0.1", "dc1").row();
        cat.register(
            Index(1),
            &Registration { node, skip_node_update: false, service: None, checks: vec![] },
        )
        .unwrap();
        let mut c = Coordinates::default();
        let mut bad = entry("n1");
        bad.coord.vec[0] = f64::NAN;
        assert_eq!(c.update(Index(2), &[entry("n1"), entry("ghost"), bad], &cat), 1);
        assert_eq!(c.index(), Index(2));
        assert_eq!(c.get("N1").map(|e| e.node.as_str()), Some("N1"), "the catalog's spelling");
        assert_eq!(c.update(Index(3), &[entry("ghost")], &cat), 0);
        assert_eq!(c.index(), Index(2), "nothing stored, index unchanged");
        c.remove_node(Index(4), "n1");
        assert!(c.get("n1").is_none());
        assert_eq!(c.index(), Index(4));
    }

    #[test]
    fn json_is_consuls_shape() {
        let v = serde_json::to_value(entry("n1")).unwrap();
        let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys, ["Node", "Segment", "Coord"]);
    }
}
