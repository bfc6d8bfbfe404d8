//! The last hour of every target, for the status page's strip: per target one bucket per
//! minute (probes, failures, whether it was down, RTT average and maximum), at most
//! [`MINUTES`] of them. Bounded: ~60 small buckets per target however often it is probed,
//! and targets silent for an hour are forgotten.

use std::{
    collections::{HashMap, VecDeque},
    sync::Mutex,
    time::{Duration, SystemTime},
};

use serde::Serialize;

use super::{Health, observer::Observer};
use crate::target::TargetKey;

/// Minutes of history kept per target.
pub const MINUTES: u64 = 60;

/// One minute of one target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Bucket {
    /// Unix time / 60 of this minute.
    pub minute: u64,
    /// Probes that finished in it.
    pub probes: u32,
    /// Of which failed.
    pub failed: u32,
    /// The target was down after at least one of them.
    pub down: bool,
    /// Sum of the RTTs of answered probes, milliseconds.
    pub rtt_sum_ms: f64,
    /// Answered probes.
    pub rtt_count: u32,
    /// Largest RTT, milliseconds.
    pub rtt_max_ms: f64,
}

impl Bucket {
    /// The average RTT, milliseconds.
    pub fn rtt_avg_ms(&self) -> Option<f64> {
        (self.rtt_count > 0).then(|| self.rtt_sum_ms / f64::from(self.rtt_count))
    }
}

/// Per-target minute buckets. A std mutex: held for a map lookup and a push, never across
/// an `.await`.
#[derive(Debug, Default)]
pub struct History {
    targets: Mutex<Targets>,
}

#[derive(Debug, Default)]
struct Targets {
    buckets: HashMap<TargetKey, VecDeque<Bucket>>,
    pruned_at: u64,
}

fn minute_of(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

impl History {
    /// Records one probe at `at`.
    pub fn record(
        &self,
        key: &TargetKey,
        at: SystemTime,
        good: bool,
        down: bool,
        rtt: Option<Duration>,
    ) {
        let minute = minute_of(at);
        let mut t = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if t.pruned_at != minute {
            // Once a minute: forget targets silent for the whole window.
            t.pruned_at = minute;
            t.buckets
                .retain(|_, b| b.back().is_some_and(|b| b.minute + MINUTES > minute));
        }
        let q = t.buckets.entry(*key).or_default();
        if q.back().is_none_or(|b| b.minute != minute) {
            q.push_back(Bucket {
                minute,
                ..Bucket::default()
            });
        }
        while q.front().is_some_and(|b| b.minute + MINUTES <= minute) || q.len() > MINUTES as usize
        {
            q.pop_front();
        }
        if let Some(b) = q.back_mut() {
            b.probes += 1;
            b.failed += u32::from(!good);
            b.down |= down;
            if let Some(rtt) = rtt {
                let ms = rtt.as_secs_f64() * 1000.0;
                b.rtt_sum_ms += ms;
                b.rtt_count += 1;
                b.rtt_max_ms = b.rtt_max_ms.max(ms);
            }
        }
    }

    /// The last [`MINUTES`] minutes before `now` (oldest first), `None` for minutes
    /// without probes.
    pub fn strip(&self, key: &TargetKey, now: SystemTime) -> Vec<Option<Bucket>> {
        let last = minute_of(now);
        let first = last + 1 - MINUTES;
        let mut out = vec![None; MINUTES as usize];
        let t = self
            .targets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(q) = t.buckets.get(key) {
            for b in q.iter().filter(|b| b.minute >= first && b.minute <= last) {
                if let Some(slot) = usize::try_from(b.minute - first)
                    .ok()
                    .and_then(|i| out.get_mut(i))
                {
                    *slot = Some(*b);
                }
            }
        }
        out
    }
}

impl Observer for History {
    fn probed(&self, key: &TargetKey, good: bool, health: Health, rtt: Option<Duration>) {
        self.record(key, SystemTime::now(), good, health == Health::Down, rtt);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_of_minutes_is_kept_and_no_more() {
        let h = History::default();
        let k: TargetKey = "192.0.2.10:5060/udp".parse().unwrap();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        for m in 0..120u64 {
            for s in [0u64, 20, 40] {
                let at = t0 + Duration::from_secs(m * 60 + s);
                h.record(
                    &k,
                    at,
                    m % 2 == 0,
                    m == 119,
                    Some(Duration::from_millis(m + 1)),
                );
            }
        }
        let now = t0 + Duration::from_secs(119 * 60 + 59);
        let strip = h.strip(&k, now);
        assert_eq!(strip.len(), 60);
        assert!(strip.iter().all(Option::is_some));
        let last = strip[59].unwrap();
        assert_eq!((last.probes, last.failed, last.down), (3, 3, true));
        assert_eq!(last.rtt_avg_ms(), Some(120.0));
        let first = strip[0].unwrap();
        assert_eq!(first.minute, minute_of(t0) + 60);
        assert_eq!(h.targets.lock().unwrap().buckets[&k].len(), 60);
        // An hour later with no probes: nothing to show, and the target is forgotten at
        // the next record of any target.
        let later = now + Duration::from_secs(3600);
        assert!(h.strip(&k, later).iter().all(Option::is_none));
        let other: TargetKey = "192.0.2.11:5060/udp".parse().unwrap();
        h.record(&other, later, true, false, None);
        assert!(!h.targets.lock().unwrap().buckets.contains_key(&k));
    }
}
