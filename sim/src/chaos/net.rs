//! The network between the nodes: delay = min + exponential, on some seeds with a rare long
//! tail; loss, duplication, optional per-link FIFO, else reordering; partitions (halves,
//! isolate one, one-way, one link, bridge), a cut also dropping what is in flight.

use muster_core::time::{Duration, Time};

use super::{Env, Event, ELECTION};

impl<L> Env<L> {
    /// A network delay: a floor, an exponential body and, on some seeds, a long tail.
    pub fn delay(&mut self) -> Duration {
        let mut d = self.profile.delay_min + self.exp(self.profile.delay_mean);
        if self.safety_phase() && self.chance(self.profile.slow_per_mille) {
            d += self.exp(ELECTION.as_nanos() as u64);
        }
        Duration::from_nanos(d)
    }

    /// Puts a message on the wire, unless the link is cut or the message is lost; only a
    /// `datagram` may arrive twice (a stream carries each frame once).
    pub fn transmit(&mut self, from: usize, to: usize, bytes: Vec<u8>, datagram: bool) {
        if self.blocked.contains(&(from, to))
            || (self.safety_phase() && self.chance(self.profile.loss_per_mille))
        {
            return;
        }
        // Drawn for streams too, so which messages are datagrams shifts no other draw.
        let twice = self.safety_phase() && self.chance(self.profile.dup_per_mille);
        let copies = if twice && datagram { 2 } else { 1 };
        for _ in 0..copies {
            let mut at = self.now + self.delay();
            if self.profile.fifo {
                let last = self.link_last.entry((from, to)).or_default();
                at = at.max(Time(last.0 + 1));
                *last = at;
            }
            self.schedule(at, Event::Deliver { from, to, bytes: bytes.clone() });
        }
    }

    /// The partition fault's clock; `leader` is the node leading the highest term, if any.
    pub(super) fn partition(&mut self, leader: Option<usize>) {
        if !self.safety_phase() {
            return;
        }
        self.stats.partitions += 1;
        let n = self.machines.len();
        self.blocked.clear();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = self.below(i as u64 + 1) as usize;
            order.swap(i, j);
        }
        // `side[k]`: node k is cut off from the nodes on the other side.
        let mut side = vec![false; n];
        let mut bridge = None;
        let mut one_way = false;
        // The stale-read hunt cuts one leader link or isolates the leader.
        let mode = if self.profile.at_leader_per_mille == 1000 { 3 + self.below(3) } else { self.below(7) };
        let mut cut_link = None;
        match mode {
            // Halves: a random minority (at least one node) against the rest.
            0 => {
                let size = 1 + self.below((n / 2) as u64) as usize;
                for k in &order[..size] {
                    side[*k] = true;
                }
            }
            // A bridge: two halves, and one node that reaches both.
            1 => {
                for k in &order[..n / 2] {
                    side[*k] = true;
                }
                bridge = Some(order[n - 1]);
            }
            // One node hears nobody, but is heard (asymmetric).
            2 => {
                side[order[0]] = true;
                one_way = true;
            }
            // One link, one way: a follower stops hearing the leader while the rest still
            // do. It times out alone and, unless voters that still hear the leader hold
            // back, replaces a leader whose lease is still running.
            3 => {
                let leader = leader.unwrap_or(order[0]);
                let follower = order.iter().copied().find(|k| *k != leader).expect("at least three nodes");
                cut_link = Some((leader, follower));
            }
            // Isolate one node, often the leader, as Jepsen does.
            _ => {
                let at_leader = self.chance(self.profile.at_leader_per_mille);
                side[leader.filter(|_| at_leader).unwrap_or(order[0])] = true;
            }
        }
        for a in 0..n {
            for b in 0..n {
                let across = side[a] != side[b] && Some(a) != bridge && Some(b) != bridge;
                if a != b && across && !(one_way && side[a]) {
                    self.blocked.insert((a, b));
                }
            }
        }
        self.blocked.extend(cut_link);
        let kind = ["halves", "bridge", "one deaf node", "one link", "one isolated"][mode.min(4) as usize];
        self.note(|w| format!("partition, {kind}: blocked (from, to) {:?}", w.blocked));
        // A cut drops what is in flight across it.
        let blocked = &self.blocked;
        self.queue
            .retain(|_, e| !matches!(e, Event::Deliver { from, to, .. } if blocked.contains(&(*from, *to))));
        let heal = 300_000_000 + self.below(2_500_000_000);
        self.schedule(self.now + Duration::from_nanos(heal), Event::Heal);
        let next = self.exp(self.profile.partition_every);
        self.schedule(self.now + Duration::from_nanos(heal + next), Event::Partition);
    }
}
