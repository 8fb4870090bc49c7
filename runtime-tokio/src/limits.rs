//! Budgets against what a peer can repeat at will: how many connections one address holds,
//! and how often a line about it reaches the log.
//!
//! Owns the counting (a place taken when a connection is accepted, given back when it
//! closes; log lines held back). Never accepts or closes anything itself: each listener
//! decides what to do with a connection over its limit.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// What a stream listener allows each connection (Consul's `limits` keys).
#[derive(Clone, Copy, Debug)]
pub struct StreamLimits {
    /// Open connections one address may hold.
    pub conns_per_client: usize,
    /// How long a new connection may take to identify itself.
    pub handshake: Duration,
}

/// Open connections by client address, shared by one listener's connection tasks.
#[derive(Clone, Default)]
pub struct OpenConns(Arc<Mutex<HashMap<IpAddr, usize>>>);

/// One open connection counted against its client address; dropping it frees the place.
pub struct ConnSlot {
    open: OpenConns,
    ip: IpAddr,
}

impl OpenConns {
    /// A place for one more connection from `ip`, or `None` when it already holds `limit`.
    pub fn take(&self, ip: IpAddr, limit: usize) -> Option<ConnSlot> {
        let mut counts = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let n = counts.entry(ip).or_insert(0);
        if *n >= limit {
            return None;
        }
        *n += 1;
        Some(ConnSlot { open: self.clone(), ip })
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut counts = self.open.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
    }
}

/// At most one log line a second for something a peer can repeat at will; the lines held
/// back are counted in the next one.
pub struct LogThrottle {
    next: Instant,
    suppressed: u64,
}

impl Default for LogThrottle {
    fn default() -> LogThrottle {
        LogThrottle { next: Instant::now(), suppressed: 0 }
    }
}

impl LogThrottle {
    /// `Some(lines held back since the last one)` when a line may be written now.
    pub fn allow(&mut self) -> Option<u64> {
        let now = Instant::now();
        if now < self.next {
            self.suppressed += 1;
            return None;
        }
        self.next = now + std::time::Duration::from_secs(1);
        Some(std::mem::take(&mut self.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn places_are_counted_per_address_and_given_back() {
        let open = OpenConns::default();
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let first = open.take(a, 2).unwrap();
        let _second = open.take(a, 2).unwrap();
        assert!(open.take(a, 2).is_none(), "a third from the same address");
        assert!(open.take(b, 2).is_some(), "another address has its own budget");
        drop(first);
        assert!(open.take(a, 2).is_some(), "a closed connection gives its place back");
    }

    #[test]
    fn a_throttled_log_lets_the_first_line_through_and_holds_back_the_rest() {
        let mut t = LogThrottle::default();
        assert_eq!(t.allow(), Some(0));
        assert_eq!((t.allow(), t.allow()), (None, None));
        assert_eq!(t.suppressed, 2, "counted for the next line");
    }
}
