//! Check scheduling: when each check runs, when a TTL expires, and what result is published.
//!
//! Owns the timing (staggered first run, interval measured from the end of the previous run,
//! one run in flight, a missing result at its deadline counts as critical), the TTL timers and
//! the success/failure thresholds. Never runs a probe: it asks the host with `RunCheck` and is
//! told the outcome with `CheckResult`. Never decides what a status means for the catalog.

use std::collections::BTreeMap;

use crate::fsm::catalog::Health;
use crate::ids::{CheckId, RunId};
use crate::io::Effect;
use crate::rng::Rng;
use crate::time::{format_go_duration, Duration, Time};

/// What a host needs to run one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckSpec {
    Http {
        url: String,
        method: String,
        headers: BTreeMap<String, Vec<String>>,
        body: String,
        tls_skip_verify: bool,
        disable_redirects: bool,
        output_max: usize,
    },
    Tcp {
        addr: String,
    },
    Udp {
        addr: String,
        message: String,
    },
    /// A process: `args[0]` with the rest as arguments (legacy `Script` is `sh -c <script>`).
    Script {
        args: Vec<String>,
        output_max: usize,
    },
    /// gRPC health protocol: `host:port[/service]`.
    Grpc {
        target: String,
        use_tls: bool,
    },
}

/// How a check gets its results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// Pushed by the application; critical once `ttl` passes without an update.
    Ttl(Duration),
    /// Probed by the agent every `interval`.
    Probe { spec: CheckSpec, interval: Duration, timeout: Duration },
}

/// Consul's result thresholds; counters start saturated so the first result applies at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Thresholds {
    pub success_before_passing: u32,
    pub failures_before_warning: u32,
    pub failures_before_critical: u32,
}

/// A status the scheduler wants published for a check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub check: CheckId,
    pub status: Health,
    pub output: String,
}

/// How long past its deadline a run may still report before it counts as timed out; the host
/// enforces the deadline itself, this only covers a host that never answers.
const RESULT_GRACE: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Scheduled {
    kind: CheckKind,
    thresholds: Thresholds,
    successes: u32,
    failures: u32,
    next_run: Option<Time>,
    in_flight: Option<(RunId, Time)>,
    ttl_deadline: Option<Time>,
    last_output: String,
}

#[derive(Debug)]
pub struct Scheduler {
    checks: BTreeMap<CheckId, Scheduled>,
    next_run_id: u64,
    rng: Rng,
}

impl Scheduler {
    pub fn new(rng: Rng) -> Scheduler {
        Scheduler { checks: BTreeMap::new(), next_run_id: 1, rng }
    }

    /// Starts (or restarts, replacing any earlier definition) scheduling one check.
    pub fn add(
        &mut self,
        id: &str,
        kind: CheckKind,
        thresholds: Thresholds,
        now: Time,
        out: &mut Vec<Effect>,
    ) {
        self.remove(id, out);
        let (next_run, ttl_deadline) = match &kind {
            CheckKind::Ttl(ttl) => (None, Some(now + *ttl)),
            CheckKind::Probe { interval, .. } => {
                let stagger = Duration::from_nanos(self.rng.below(interval.as_nanos() as u64));
                (Some(now + stagger), None)
            }
        };
        let t = thresholds;
        self.checks.insert(
            id.to_string(),
            Scheduled {
                kind,
                thresholds,
                successes: t.success_before_passing,
                failures: t.failures_before_critical.max(t.failures_before_warning),
                next_run,
                in_flight: None,
                ttl_deadline,
                last_output: String::new(),
            },
        );
    }

    pub fn remove(&mut self, id: &str, out: &mut Vec<Effect>) {
        if let Some(s) = self.checks.remove(id) {
            if s.in_flight.is_some() {
                out.push(Effect::CancelCheck { check: id.to_string() });
            }
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.checks.contains_key(id)
    }

    pub fn is_ttl(&self, id: &str) -> bool {
        matches!(self.checks.get(id), Some(Scheduled { kind: CheckKind::Ttl(_), .. }))
    }

    /// An application's TTL update: rearms the timer and remembers the output for the expiry
    /// message. Returns false when `id` is not a TTL check.
    pub fn ttl_update(&mut self, id: &str, output: &str, now: Time) -> bool {
        match self.checks.get_mut(id) {
            Some(s) => match s.kind {
                CheckKind::Ttl(ttl) => {
                    s.ttl_deadline = Some(now + ttl);
                    s.last_output = output.to_string();
                    true
                }
                CheckKind::Probe { .. } => false,
            },
            None => false,
        }
    }

    /// A probe's outcome. Stale runs (replaced or cancelled) are dropped.
    pub fn on_result(
        &mut self,
        id: &str,
        run: RunId,
        status: Health,
        output: String,
        now: Time,
    ) -> Option<Verdict> {
        let s = self.checks.get_mut(id)?;
        if s.in_flight.map(|(r, _)| r) != Some(run) {
            return None;
        }
        s.in_flight = None;
        if let CheckKind::Probe { interval, .. } = s.kind {
            s.next_run = Some(now + interval);
        }
        Self::judge(s, status).map(|status| Verdict { check: id.to_string(), status, output })
    }

    /// Applies the thresholds; `None` means the result is held back.
    fn judge(s: &mut Scheduled, status: Health) -> Option<Health> {
        let t = s.thresholds;
        if status == Health::Critical {
            s.successes = 0;
            s.failures = s.failures.saturating_add(1);
            if s.failures >= t.failures_before_critical {
                Some(Health::Critical)
            } else if s.failures >= t.failures_before_warning {
                Some(Health::Warning)
            } else {
                None
            }
        } else {
            s.failures = 0;
            s.successes = s.successes.saturating_add(1);
            (s.successes >= t.success_before_passing).then_some(status)
        }
    }

    /// Starts due runs, expires TTLs and times out silent runs; returns what to publish.
    pub fn poll(&mut self, now: Time, out: &mut Vec<Effect>) -> Vec<Verdict> {
        let mut verdicts = Vec::new();
        for (id, s) in self.checks.iter_mut() {
            if s.ttl_deadline.is_some_and(|d| d <= now) {
                s.ttl_deadline = None;
                let output = if s.last_output.is_empty() {
                    "TTL expired".to_string()
                } else {
                    format!("TTL expired (last output before timeout follows): {}", s.last_output)
                };
                verdicts.push(Verdict { check: id.clone(), status: Health::Critical, output });
            }
            let CheckKind::Probe { spec, interval, timeout } = &s.kind else {
                continue;
            };
            if let Some((_, deadline)) = s.in_flight {
                if now >= deadline + RESULT_GRACE {
                    s.in_flight = None;
                    s.next_run = Some(now + *interval);
                    out.push(Effect::CancelCheck { check: id.clone() });
                    let output = format!("Timed out ({}) running check", format_go_duration(*timeout));
                    if let Some(status) = Self::judge(s, Health::Critical) {
                        verdicts.push(Verdict { check: id.clone(), status, output });
                    }
                }
                continue;
            }
            if s.next_run.is_some_and(|t| t <= now) {
                let run = RunId(self.next_run_id);
                self.next_run_id += 1;
                s.next_run = None;
                s.in_flight = Some((run, now + *timeout));
                out.push(Effect::RunCheck { check: id.clone(), run, spec: spec.clone(), timeout: *timeout });
            }
        }
        verdicts
    }

    /// The earliest instant at which `poll` has something to do.
    pub fn next_deadline(&self) -> Option<Time> {
        self.checks
            .values()
            .flat_map(|s| [s.ttl_deadline, s.next_run, s.in_flight.map(|(_, d)| d + RESULT_GRACE)])
            .flatten()
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Stream;

    fn sched() -> Scheduler {
        Scheduler::new(Rng::new([3; 32], Stream::Checks))
    }

    fn tcp(interval_s: u64) -> CheckKind {
        CheckKind::Probe {
            spec: CheckSpec::Tcp { addr: "127.0.0.1:1".into() },
            interval: Duration::from_secs(interval_s),
            timeout: Duration::from_secs(2),
        }
    }

    fn runs(out: &[Effect]) -> Vec<RunId> {
        out.iter()
            .filter_map(|e| match e {
                Effect::RunCheck { run, .. } => Some(*run),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn ttl_expires_to_critical_with_last_output() {
        let mut s = sched();
        let mut out = vec![];
        s.add("t", CheckKind::Ttl(Duration::from_secs(10)), Thresholds::default(), Time(0), &mut out);
        assert!(s.ttl_update("t", "all good", Time::ZERO + Duration::from_secs(5)));
        assert!(s.poll(Time::ZERO + Duration::from_secs(14), &mut out).is_empty());
        let v = s.poll(Time::ZERO + Duration::from_secs(15), &mut out);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].status, Health::Critical);
        assert_eq!(v[0].output, "TTL expired (last output before timeout follows): all good");
        assert!(s.poll(Time::ZERO + Duration::from_secs(30), &mut out).is_empty(), "expires once");
    }

    #[test]
    fn first_run_is_staggered_within_interval_and_runs_never_overlap() {
        let mut s = sched();
        let mut out = vec![];
        s.add("c", tcp(10), Thresholds::default(), Time(0), &mut out);
        let first = s.next_deadline().unwrap();
        assert!(first < Time::ZERO + Duration::from_secs(10));
        s.poll(first, &mut out);
        assert_eq!(runs(&out).len(), 1);
        s.poll(first + Duration::from_secs(1), &mut out);
        assert_eq!(runs(&out).len(), 1, "one run in flight at a time");
        let run = runs(&out)[0];
        let done = first + Duration::from_secs(1);
        let v = s.on_result("c", run, Health::Passing, "ok".into(), done).unwrap();
        assert_eq!(v.status, Health::Passing);
        assert_eq!(s.next_deadline(), Some(done + Duration::from_secs(10)), "interval from the end");
        assert!(s.on_result("c", run, Health::Critical, "late".into(), done).is_none(), "stale run dropped");
    }

    #[test]
    fn silent_run_times_out_critical() {
        let mut s = sched();
        let mut out = vec![];
        s.add("c", tcp(10), Thresholds::default(), Time(0), &mut out);
        let first = s.next_deadline().unwrap();
        s.poll(first, &mut out);
        let v = s.poll(first + Duration::from_secs(3), &mut out);
        assert_eq!(v[0].status, Health::Critical);
        assert_eq!(v[0].output, "Timed out (2s) running check");
        assert!(out.contains(&Effect::CancelCheck { check: "c".into() }));
    }

    #[test]
    fn thresholds_hold_back_flaps() {
        let mut s = sched();
        let mut out = vec![];
        let t =
            Thresholds { success_before_passing: 2, failures_before_warning: 1, failures_before_critical: 3 };
        s.add("c", tcp(1), t, Time(0), &mut out);
        let mut now = Time(0);
        let mut step = |s: &mut Scheduler, status: Health| {
            now = s.next_deadline().unwrap();
            let mut out = vec![];
            s.poll(now, &mut out);
            let run = runs(&out)[0];
            s.on_result("c", run, status, String::new(), now).map(|v| v.status)
        };
        assert_eq!(step(&mut s, Health::Passing), Some(Health::Passing), "first result applies");
        assert_eq!(step(&mut s, Health::Critical), Some(Health::Warning));
        assert_eq!(step(&mut s, Health::Critical), Some(Health::Warning));
        assert_eq!(step(&mut s, Health::Critical), Some(Health::Critical));
        assert_eq!(step(&mut s, Health::Passing), None, "needs two successes");
        assert_eq!(step(&mut s, Health::Passing), Some(Health::Passing));
    }
}
