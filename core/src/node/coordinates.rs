//! The agent's side of network coordinates: sending its LAN coordinate to the catalog,
//! answering `/v1/coordinate/datacenters` from the WAN pool, ordering datacenters by round
//! trip, and naming the node `?near=_agent` means.
//!
//! Owns when a coordinate is sent (Consul's pacing: at least every 15 s by default, slower
//! in large clusters so the servers see about 64 updates a second in all) and how datacenters
//! compare (the median estimated round trip to their servers). Never computes coordinates
//! (`gossip` does) and never writes the catalog except through Raft.

use super::Node;
use crate::api::shapes::DatacenterCoordinates;
use crate::api::ApiRequest;
use crate::coordinate::Coordinate;
use crate::fsm::coordinates::CoordinateEntry;
use crate::fsm::Command;
use crate::io::{Effect, Pool};
use crate::rpc::Work;
use crate::time::{Duration, Time};

/// When the agent next sends its coordinate, and what it sent last.
#[derive(Debug, Default)]
pub(super) struct CoordinateSync {
    next: Time,
    sent: Option<Coordinate>,
}

impl Node {
    /// This agent's LAN coordinate (the origin without gossip).
    pub(super) fn lan_coordinate(&self) -> Coordinate {
        self.membership
            .as_ref()
            .and_then(|m| m.gossip(Pool::Lan))
            .map(|g| g.coordinate().clone())
            .unwrap_or_else(|| Coordinate::new(&Default::default()))
    }

    /// `?near=_agent` means this agent's node; resolved here, before a client passes the
    /// request on, so the server sorts by the right node.
    pub(super) fn resolve_near(&self, req: &mut ApiRequest) {
        let near = match req {
            ApiRequest::CatalogNodes { near, .. }
            | ApiRequest::CatalogService { near, .. }
            | ApiRequest::HealthService { near, .. } => near,
            ApiRequest::InDatacenter { req, .. } => return self.resolve_near(req),
            _ => return,
        };
        if near.as_deref() == Some("_agent") {
            *near = Some(self.cfg.node.name.clone());
        }
    }

    /// Sends this agent's LAN coordinate to the catalog when it is due and has moved.
    pub(super) fn poll_coordinate(&mut self, now: Time, out: &mut Vec<Effect>) {
        let Some(m) = self.membership.as_ref() else { return };
        if now < self.coord_sync.next {
            return;
        }
        let paced = Duration::try_from_secs_f64(m.lan_size() as f64 / self.cfg.coordinate_rate_target)
            .unwrap_or(Duration::ZERO);
        let interval = self.cfg.coordinate_sync_min.max(paced);
        let jitter = self.ae_rng.below(interval.as_nanos() as u64);
        self.coord_sync.next = now + interval + Duration::from_nanos(jitter);
        let coord = self.lan_coordinate();
        if self.coord_sync.sent.as_ref() == Some(&coord) {
            return;
        }
        self.coord_sync.sent = Some(coord.clone());
        let entry = CoordinateEntry { node: self.cfg.node.name.clone(), segment: String::new(), coord };
        self.submit(Work::Commands(vec![Command::Coordinates(vec![entry])]), None, out);
    }

    pub(super) fn next_coordinate_sync(&self) -> Option<Time> {
        self.membership.as_ref().map(|_| self.coord_sync.next)
    }

    /// `/v1/coordinate/datacenters`: every datacenter's servers with their WAN coordinates.
    pub(super) fn wan_coordinates(&self) -> Vec<DatacenterCoordinates> {
        let Some(wan) = self.membership.as_ref().and_then(|m| m.gossip(Pool::Wan)) else { return vec![] };
        let mut by_dc: std::collections::BTreeMap<String, Vec<CoordinateEntry>> = Default::default();
        for x in wan.members().filter(|x| !x.down()) {
            let (Some(dc), Some(coord)) = (x.id.tags.get("dc"), wan.member_coordinate(&x.id.name)) else {
                continue;
            };
            let entry =
                CoordinateEntry { node: x.id.name.to_string(), segment: String::new(), coord: coord.clone() };
            by_dc.entry(dc.clone()).or_default().push(entry);
        }
        by_dc
            .into_iter()
            .map(|(datacenter, coordinates)| DatacenterCoordinates {
                datacenter,
                area_id: "WAN".into(),
                coordinates,
            })
            .collect()
    }

    /// Datacenters known from the WAN pool, this one first, the others by the median
    /// estimated round trip from this server to theirs (those without coordinates last, by
    /// name).
    pub(super) fn datacenters(&self) -> Vec<String> {
        let own = self.cfg.node.datacenter.clone();
        let Some(wan) = self.membership.as_ref().and_then(|m| m.gossip(Pool::Wan)) else { return vec![own] };
        let mut rtts: std::collections::BTreeMap<String, Vec<Duration>> = Default::default();
        for x in wan.members().filter(|x| !x.down()) {
            let Some(dc) = x.id.tags.get("dc").filter(|dc| **dc != own) else { continue };
            let rtt = wan.member_coordinate(&x.id.name).map(|c| wan.coordinate().distance_to(c));
            rtts.entry(dc.clone()).or_default().extend(rtt.filter(|d| *d != Duration::MAX));
        }
        let mut others: Vec<(Option<Duration>, String)> = rtts
            .into_iter()
            .map(|(dc, mut rtt)| {
                rtt.sort();
                (rtt.get(rtt.len() / 2).copied(), dc)
            })
            .collect();
        others.sort_by_key(|(rtt, dc)| (rtt.is_none(), *rtt, dc.clone()));
        std::iter::once(own).chain(others.into_iter().map(|(_, dc)| dc)).collect()
    }
}
