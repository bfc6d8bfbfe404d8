//! The per-target health state machine: consecutive good/bad counts, `fall`, `rise`,
//! `hold_down` and the 503 Retry-After hold. Pure and clock-injected (every call takes
//! `now`), so tests drive it with plain instants or paused tokio time.
//!
//! Rules (docs/probing.md, "Health"):
//! - a target is [`Health::Unknown`] until its first probe; a good first probe makes it
//!   `Up` at once (it was handed out anyway), bad probes count towards `fall`;
//! - `fall` consecutive bad probes make it `Down`;
//! - `rise` consecutive good probes, and (if set) a run of good probes lasting `hold_down`,
//!   make a down target `Up` again (pingora `health_check.rs` consecutive thresholds);
//! - a 503 with Retry-After makes it `Down` at once and keeps it down for
//!   `min(Retry-After, retry_after_max)` whatever the probes say (RFC 3261 §21.5.4,
//!   RFC 3263 §4.3); good probes during the hold do not count towards `rise`.
//!
//! [`TargetState::observe`] returns the transition when the health changed, so only real
//! transitions are logged and counted (as pingora's `health_check.rs` does).

use std::time::Duration;

use tokio::time::Instant;

use super::Health;
use crate::config::{CodeRange, ProbeConfig};

/// Thresholds of the state machine, from `sip.probe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    /// Consecutive bad probes that mark a target down.
    pub fall: u32,
    /// Consecutive good probes that mark a down target up.
    pub rise: u32,
    /// How long a run of good probes must last before a down target is up again.
    pub hold_down: Duration,
    /// Cap on a Retry-After hold.
    pub retry_after_max: Duration,
    /// Reply codes that count as good.
    pub up_codes: Vec<CodeRange>,
}

impl Thresholds {
    /// The thresholds of a probe config (a `fall` or `rise` of 0 is taken as 1).
    pub fn from_config(cfg: &ProbeConfig) -> Self {
        Self {
            fall: cfg.fall.max(1),
            rise: cfg.rise.max(1),
            hold_down: cfg.hold_down,
            retry_after_max: cfg.retry_after_max,
            up_codes: cfg.up_codes.clone(),
        }
    }

    /// True if a final reply code counts as good.
    pub fn is_up_code(&self, code: u16) -> bool {
        self.up_codes.iter().any(|r| r.contains(code))
    }
}

impl Default for Thresholds {
    fn default() -> Self {
        Self::from_config(&ProbeConfig::default())
    }
}

/// Why a probe was bad; the `result` label of `sipdns_probes_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BadReason {
    /// A final reply whose code is not in `up_codes` (5xx/6xx by default).
    Code,
    /// No final reply before the probe timeout.
    Timeout,
    /// ICMP unreachable for the UDP probe.
    Unreachable,
    /// TCP connection refused.
    Refused,
    /// TCP connection reset or closed before the reply.
    Reset,
    /// TLS handshake or certificate failure.
    Tls,
    /// Any other local error (no route, socket error, request not buildable).
    Error,
}

impl BadReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Code => "bad_code",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Refused => "refused",
            Self::Reset => "reset",
            Self::Tls => "tls",
            Self::Error => "error",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A final reply with a code in `up_codes`.
    Good {
        /// Reply code.
        code: u16,
        /// Round-trip time from the first transmission.
        rtt: Duration,
    },
    /// Anything else.
    Bad {
        /// Why.
        reason: BadReason,
        /// The reply code, when there was a reply.
        code: Option<u16>,
        /// Retry-After of a 503 reply.
        retry_after: Option<Duration>,
        /// Human-readable detail for logs and the API.
        detail: String,
    },
}

impl Verdict {
    /// The verdict for a final reply code.
    pub fn from_reply(
        th: &Thresholds,
        code: u16,
        rtt: Duration,
        retry_after: Option<Duration>,
    ) -> Self {
        if th.is_up_code(code) {
            Self::Good { code, rtt }
        } else {
            Self::Bad {
                reason: BadReason::Code,
                code: Some(code),
                retry_after: if code == 503 { retry_after } else { None },
                detail: match (code, retry_after) {
                    (503, Some(ra)) => format!("503 reply, Retry-After {}s", ra.as_secs()),
                    _ => format!("{code} reply"),
                },
            }
        }
    }

    /// A bad verdict without a reply.
    pub fn bad(reason: BadReason, detail: impl Into<String>) -> Self {
        Self::Bad {
            reason,
            code: None,
            retry_after: None,
            detail: detail.into(),
        }
    }

    /// The `result` label of `sipdns_probes_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Good { .. } => "good",
            Self::Bad { reason, .. } => reason.label(),
        }
    }

    /// A short description (`200 reply`, `timeout after 2s`).
    pub fn describe(&self) -> String {
        match self {
            Self::Good { code, .. } => format!("{code} reply"),
            Self::Bad { detail, .. } => detail.clone(),
        }
    }
}

/// A change of health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// Health before.
    pub from: Health,
    /// Health after.
    pub to: Health,
    /// Why, for the log line and the API.
    pub reason: String,
}

impl Transition {
    /// True if what phones are given changes: anything but the first verdict
    /// `unknown -> up` (unknown already counts as up). Only these are logged at info and
    /// counted in `sipdns_target_transitions_total`.
    pub fn is_real(&self) -> bool {
        !(self.from == Health::Unknown && self.to == Health::Up)
    }
}

/// The health state of one target.
#[derive(Debug, Clone)]
pub struct TargetState {
    health: Health,
    good_run: u32,
    bad_run: u32,
    good_since: Option<Instant>,
    held_until: Option<Instant>,
    since: Instant,
    transitions: u64,
    last_reason: String,
}

impl TargetState {
    /// A target not probed yet.
    pub fn new(now: Instant) -> Self {
        Self {
            health: Health::Unknown,
            good_run: 0,
            bad_run: 0,
            good_since: None,
            held_until: None,
            since: now,
            transitions: 0,
            last_reason: "not probed yet".to_owned(),
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        self.health
    }

    /// When the health last changed (or the target appeared).
    pub fn since(&self) -> Instant {
        self.since
    }

    /// Real transitions so far (see [`Transition::is_real`]).
    pub fn transitions(&self) -> u64 {
        self.transitions
    }

    /// Why the health is what it is.
    pub fn last_reason(&self) -> &str {
        &self.last_reason
    }

    /// Until when a Retry-After keeps the target down, if it does.
    pub fn held_until(&self) -> Option<Instant> {
        self.held_until
    }

    fn set(&mut self, to: Health, now: Instant, reason: String) -> Option<Transition> {
        if self.health == to {
            return None;
        }
        let t = Transition {
            from: self.health,
            to,
            reason: reason.clone(),
        };
        self.health = to;
        self.since = now;
        self.last_reason = reason;
        if t.is_real() {
            self.transitions += 1;
        }
        Some(t)
    }

    /// Feeds one probe verdict; returns the transition if the health changed.
    pub fn observe(&mut self, v: &Verdict, now: Instant, th: &Thresholds) -> Option<Transition> {
        if self.held_until.is_some_and(|until| now >= until) {
            self.held_until = None;
        }
        match v {
            Verdict::Good { .. } => {
                self.bad_run = 0;
                if self.held_until.is_some() {
                    // RFC 3261 §21.5.4: the server asked not to be used until then.
                    self.good_run = 0;
                    self.good_since = None;
                    return None;
                }
                self.good_run = self.good_run.saturating_add(1);
                let run_start = *self.good_since.get_or_insert(now);
                match self.health {
                    Health::Unknown => self.set(Health::Up, now, v.describe()),
                    Health::Up => None,
                    Health::Down => {
                        let ran = now.saturating_duration_since(run_start);
                        if self.good_run >= th.rise && ran >= th.hold_down {
                            let reason = if th.hold_down.is_zero() {
                                format!("{} good probes ({})", self.good_run, v.describe())
                            } else {
                                format!(
                                    "{} good probes over {:?} ({})",
                                    self.good_run,
                                    ran,
                                    v.describe()
                                )
                            };
                            self.set(Health::Up, now, reason)
                        } else {
                            None
                        }
                    }
                }
            }
            Verdict::Bad { retry_after, .. } => {
                self.good_run = 0;
                self.good_since = None;
                self.bad_run = self.bad_run.saturating_add(1);
                if let Some(ra) = retry_after {
                    let hold = (*ra).min(th.retry_after_max);
                    if !hold.is_zero() {
                        let until = now + hold;
                        self.held_until = Some(self.held_until.map_or(until, |u| u.max(until)));
                        let reason = format!("{} (held down {}s)", v.describe(), hold.as_secs());
                        let flipped = self.set(Health::Down, now, reason.clone());
                        if flipped.is_none() {
                            self.last_reason = reason;
                        }
                        return flipped;
                    }
                }
                if self.health != Health::Down && self.bad_run >= th.fall {
                    let reason = format!("{} bad probes ({})", self.bad_run, v.describe());
                    self.set(Health::Down, now, reason)
                } else {
                    None
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn th(fall: u32, rise: u32, hold_down: Duration) -> Thresholds {
        Thresholds {
            fall,
            rise,
            hold_down,
            ..Thresholds::default()
        }
    }

    fn good() -> Verdict {
        Verdict::Good {
            code: 200,
            rtt: Duration::from_millis(1),
        }
    }

    fn timeout() -> Verdict {
        Verdict::bad(BadReason::Timeout, "timeout")
    }

    const SEC: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn unknown_until_the_first_verdict_then_up_on_good() {
        let t = th(3, 2, Duration::ZERO);
        let mut s = TargetState::new(Instant::now());
        assert_eq!(s.health(), Health::Unknown);
        let flip = s.observe(&good(), Instant::now(), &t).unwrap();
        assert_eq!((flip.from, flip.to), (Health::Unknown, Health::Up));
        assert!(!flip.is_real(), "unknown -> up changes nothing for phones");
        assert_eq!(s.transitions(), 0);
        assert_eq!(s.observe(&good(), Instant::now(), &t), None);
    }

    #[tokio::test(start_paused = true)]
    async fn fall_consecutive_bad_mark_down() {
        let t = th(3, 2, Duration::ZERO);
        let mut s = TargetState::new(Instant::now());
        s.observe(&good(), Instant::now(), &t);
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
        // A good probe in between resets the count.
        assert_eq!(s.observe(&good(), Instant::now(), &t), None);
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
        let flip = s.observe(&timeout(), Instant::now(), &t).unwrap();
        assert_eq!((flip.from, flip.to), (Health::Up, Health::Down));
        assert!(flip.reason.contains("3 bad probes"), "{}", flip.reason);
        assert!(flip.is_real());
        assert_eq!(s.transitions(), 1);
        // Further bad probes are not transitions.
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_unprobed_target_goes_down_after_fall() {
        let t = th(2, 2, Duration::ZERO);
        let mut s = TargetState::new(Instant::now());
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
        assert_eq!(s.health(), Health::Unknown);
        let flip = s.observe(&timeout(), Instant::now(), &t).unwrap();
        assert_eq!((flip.from, flip.to), (Health::Unknown, Health::Down));
    }

    #[tokio::test(start_paused = true)]
    async fn rise_consecutive_good_mark_up_again() {
        let t = th(1, 3, Duration::ZERO);
        let mut s = TargetState::new(Instant::now());
        s.observe(&timeout(), Instant::now(), &t).unwrap();
        assert_eq!(s.observe(&good(), Instant::now(), &t), None);
        assert_eq!(s.observe(&good(), Instant::now(), &t), None);
        assert_eq!(s.observe(&timeout(), Instant::now(), &t), None);
        assert_eq!(s.observe(&good(), Instant::now(), &t), None);
        assert_eq!(s.observe(&good(), Instant::now(), &t), None);
        let flip = s.observe(&good(), Instant::now(), &t).unwrap();
        assert_eq!((flip.from, flip.to), (Health::Down, Health::Up));
        assert_eq!(s.transitions(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn hold_down_needs_a_long_enough_good_run() {
        let t = th(1, 2, Duration::from_secs(10));
        let mut s = TargetState::new(Instant::now());
        s.observe(&timeout(), Instant::now(), &t).unwrap();
        // Good every second: rise (2) is reached after 1 s, hold_down after 10 s.
        for _ in 0..10 {
            assert_eq!(s.observe(&good(), Instant::now(), &t), None);
            tokio::time::advance(SEC).await;
        }
        let flip = s.observe(&good(), Instant::now(), &t).unwrap();
        assert_eq!(flip.to, Health::Up);
        assert!(flip.reason.contains("over 10s"), "{}", flip.reason);
        // A bad probe restarts the clock.
        s.observe(&timeout(), Instant::now(), &t).unwrap();
        for _ in 0..5 {
            s.observe(&good(), Instant::now(), &t);
            tokio::time::advance(SEC).await;
        }
        s.observe(&timeout(), Instant::now(), &t);
        for _ in 0..9 {
            assert_eq!(s.observe(&good(), Instant::now(), &t), None);
            tokio::time::advance(SEC).await;
        }
        assert_eq!(s.health(), Health::Down);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_holds_down_regardless_of_probes() {
        let t = Thresholds {
            retry_after_max: Duration::from_secs(30),
            ..th(3, 1, Duration::ZERO)
        };
        let mut s = TargetState::new(Instant::now());
        s.observe(&good(), Instant::now(), &t);
        let busy = Verdict::from_reply(&t, 503, SEC, Some(Duration::from_secs(3600)));
        let flip = s.observe(&busy, Instant::now(), &t).unwrap();
        assert_eq!(flip.to, Health::Down, "503 + Retry-After is down at once");
        assert!(flip.reason.contains("held down 30s"), "{}", flip.reason);
        // Capped at retry_after_max: good probes for 29 s change nothing ...
        for _ in 0..29 {
            tokio::time::advance(SEC).await;
            assert_eq!(s.observe(&good(), Instant::now(), &t), None);
        }
        // ... and the first one after the hold counts (rise = 1).
        tokio::time::advance(SEC).await;
        let flip = s.observe(&good(), Instant::now(), &t).unwrap();
        assert_eq!(flip.to, Health::Up);
        assert_eq!(s.held_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_without_retry_after_is_just_bad() {
        let t = th(2, 1, Duration::ZERO);
        let mut s = TargetState::new(Instant::now());
        s.observe(&good(), Instant::now(), &t);
        let busy = Verdict::from_reply(&t, 503, SEC, None);
        assert_eq!(busy.label(), "bad_code");
        assert_eq!(s.observe(&busy, Instant::now(), &t), None);
        assert!(s.observe(&busy, Instant::now(), &t).is_some());
        // Retry-After on another code is ignored.
        let other = Verdict::from_reply(&t, 500, SEC, Some(SEC));
        assert!(matches!(
            other,
            Verdict::Bad {
                retry_after: None,
                ..
            }
        ));
    }

    #[test]
    fn up_codes_decide_good() {
        let t = Thresholds::default();
        for code in [200, 404, 405, 401, 483, 499] {
            assert!(t.is_up_code(code), "{code}");
        }
        for code in [100, 180, 500, 503, 603] {
            assert!(!t.is_up_code(code), "{code}");
        }
    }
}
