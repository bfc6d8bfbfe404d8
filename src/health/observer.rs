//! Who else hears of probe results, health transitions and admin changes: the status
//! page's history and the webhooks. The prober calls every observer on its own task (and
//! `set_admin` on the API's thread), so an observer must return at once: take a short lock,
//! push into a bounded queue, never wait on I/O.

use std::{sync::Arc, time::Duration};

use arc_swap::ArcSwap;

use super::{AdminState, Health, admin::Drain};
use crate::target::TargetKey;

/// A real health change (`up -> down`, `down -> up`; not the first verdict).
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// The target.
    pub key: &'a TargetKey,
    /// The host name probed (or the address).
    pub host: &'a str,
    /// Health before.
    pub from: Health,
    /// Health now.
    pub to: Health,
    /// Why (`timeout`, `ICMP unreachable`, `503 Retry-After 60s`, ...).
    pub reason: &'a str,
}

/// Why an admin state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminCause {
    /// An API call (the CLI, the status page or a script).
    Api,
    /// A timed drain reached its end.
    Expired,
}

/// Hears what the prober does. Every method defaults to doing nothing.
pub trait Observer: Send + Sync {
    /// One probe finished: `good` is its verdict, `health` the target's state after it.
    fn probed(&self, key: &TargetKey, good: bool, health: Health, rtt: Option<Duration>) {
        let _ = (key, good, health, rtt);
    }

    /// A target's health changed.
    fn transition(&self, t: &Transition<'_>) {
        let _ = t;
    }

    /// A target was drained or enabled.
    fn admin(&self, key: &TargetKey, state: AdminState, drain: Option<&Drain>, cause: AdminCause) {
        let _ = (key, state, drain, cause);
    }
}

/// The observers of one prober: read lock-free per probe, added to rarely (at start).
#[derive(Default)]
pub struct Observers(ArcSwap<Vec<Arc<dyn Observer>>>);

impl Observers {
    /// Adds an observer.
    pub fn add(&self, o: Arc<dyn Observer>) {
        self.0.rcu(|v| {
            let mut v = Vec::clone(v);
            v.push(o.clone());
            v
        });
    }

    /// Calls `f` on every observer.
    pub fn each(&self, f: impl Fn(&dyn Observer)) {
        for o in self.0.load().iter() {
            f(&**o);
        }
    }
}
