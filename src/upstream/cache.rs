//! The forwarder's answer cache: one upstream answer per (name, type), kept for its TTL and,
//! when serve-stale is on, for a window after expiry (RFC 8767), bounded in entries.
//!
//! It is on the hot path of every forwarded query, so it is a few `std::sync::Mutex`-guarded
//! shards (never held across an `.await`, only for a hash lookup and a clone) and eviction is
//! the CLOCK algorithm: each entry has a "referenced" bit set by a hit; on insert into a full
//! shard a hand sweeps the slots, evicting the first entry that is expired or not referenced
//! since the hand last passed, and clearing the bit of the others. That is LRU-ish, prefers
//! expired entries, and costs amortised O(1) with no per-hit list surgery.

use std::{
    collections::HashMap,
    hash::{BuildHasher, RandomState},
    sync::{
        Mutex, MutexGuard, PoisonError,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use prometheus::IntGauge;
use tokio::time::Instant;

use crate::record::{Answer, DomainName, RType, Rcode, Rec, RecordData, Reuse, Source};

/// What the cache is keyed by: the question, and the DNSSEC bits it is asked upstream with
/// (a reply to DO or CD differs from one without).
pub(crate) type Key = (DomainName, RType, super::Want);

/// The longest an answer stays fresh whatever its TTL says (RFC 8767 §4 suggests capping
/// TTLs at 7 days, as many resolvers do).
const MAX_TTL: u32 = 604_800;

/// Caches of at least this many entries are split into [`SHARDS`] shards; smaller ones use one
/// shard, so that their bound is exact and a skewed hash cannot waste most of a tiny cache.
const SHARDING_THRESHOLD: usize = 1024;
const SHARDS: usize = 16;

/// How long past expiry an entry may still be served, and with which TTL (RFC 8767).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StalePolicy {
    /// How long after expiry an entry is kept and may be served stale; zero turns it off.
    pub(crate) window: Duration,
    /// The TTL every record of a stale answer carries.
    pub(crate) ttl: u32,
}

/// The result of a cache lookup.
#[derive(Debug)]
pub(crate) enum Hit {
    /// Within its TTL: the answer with TTLs decremented by its age, source `Cache`.
    Fresh(Answer),
    /// Expired but within the stale window: the answer with the stale TTL, source `Stale`.
    Stale(Answer),
    /// Nothing usable.
    Miss,
}

/// How long an upstream answer may be cached, in seconds; `None` if it must not be.
///
/// - Positive answers: the lowest TTL of any record in the response.
/// - NXDOMAIN and NODATA: RFC 2308 §5, the minimum of the SOA's TTL and its MINIMUM field
///   (and of any CNAME leading there); without an SOA they are not cached at all.
/// - Any other rcode (SERVFAIL, REFUSED, ...) is never cached as an answer.
/// - TTL 0 means "do not cache"; TTLs are capped at [`MAX_TTL`].
pub(crate) fn cache_ttl(answer: &Answer, qtype: RType) -> Option<u32> {
    let positive = answer.rcode == Rcode::NoError
        && answer
            .answers
            .iter()
            .any(|r| r.rtype() == qtype || qtype == RType::ANY);
    let ttl = if positive {
        all_records(answer).map(|r| r.ttl).min()?
    } else if matches!(answer.rcode, Rcode::NoError | Rcode::NxDomain) {
        let soa_ttl = answer.authority.iter().find_map(|r| match r.data {
            RecordData::Soa { minimum, .. } => Some(r.ttl.min(minimum)),
            _ => None,
        })?;
        answer.answers.iter().map(|r| r.ttl).fold(soa_ttl, u32::min)
    } else {
        return None;
    };
    (ttl > 0).then_some(ttl.min(MAX_TTL))
}

fn all_records(a: &Answer) -> impl Iterator<Item = &Rec> {
    a.answers.iter().chain(&a.authority).chain(&a.additional)
}

/// A copy of `answer` with every TTL set by `ttl_of` and the given source.
fn with_ttls(answer: &Answer, source: Source, ttl_of: impl Fn(u32) -> u32) -> Answer {
    let adjust = |recs: &[Rec]| -> Vec<Rec> {
        recs.iter()
            .map(|r| Rec {
                ttl: ttl_of(r.ttl),
                ..r.clone()
            })
            .collect()
    };
    Answer {
        rcode: answer.rcode,
        authoritative: answer.authoritative,
        answers: adjust(&answer.answers),
        authority: adjust(&answer.authority),
        additional: adjust(&answer.additional),
        source,
        authentic_data: answer.authentic_data && source != Source::Stale,
        reuse: if source == Source::Stale {
            Reuse::UntilRetry
        } else {
            answer.reuse
        },
    }
}

#[derive(Debug)]
struct Entry {
    answer: Answer,
    stored: Instant,
    /// Seconds the entry is fresh for, from `stored`.
    ttl: u32,
}

impl Entry {
    fn expires(&self) -> Instant {
        self.stored + Duration::from_secs(u64::from(self.ttl))
    }

    fn is_expired(&self, now: Instant) -> bool {
        now >= self.expires()
    }

    fn is_dead(&self, now: Instant, stale: StalePolicy) -> bool {
        // An absurd window that overflows the clock means "never dead".
        self.expires()
            .checked_add(stale.window)
            .is_some_and(|end| now >= end)
    }

    /// The answer as it should be served at `now`, or `None` if it is past the stale window.
    fn serve(&self, now: Instant, stale: StalePolicy) -> Hit {
        if !self.is_expired(now) {
            let age = u32::try_from(now.saturating_duration_since(self.stored).as_secs())
                .unwrap_or(u32::MAX);
            // Every record is clamped to the entry's lifetime, so nobody downstream keeps a
            // record longer than we do (for negative answers this is the RFC 2308 SOA TTL).
            let ttl = self.ttl;
            Hit::Fresh(with_ttls(&self.answer, Source::Cache, |t| {
                t.min(ttl).saturating_sub(age)
            }))
        } else if !self.is_dead(now, stale) {
            // RFC 8767 §4: stale answers carry a short TTL (30 s recommended).
            // A stale answer is sipdns' own make: no signature is relayed with it.
            Hit::Stale(with_ttls(&self.answer, Source::Stale, |_| stale.ttl).without_dnssec())
        } else {
            Hit::Miss
        }
    }
}

#[derive(Debug)]
struct Slot {
    key: Key,
    entry: Entry,
    referenced: bool,
}

#[derive(Debug, Default)]
struct Shard {
    index: HashMap<Key, usize>,
    slots: Vec<Slot>,
    hand: usize,
    cap: usize,
}

impl Shard {
    /// Picks the slot to evict (CLOCK). The shard must not be empty.
    fn victim(&mut self, now: Instant) -> usize {
        let len = self.slots.len();
        // Two sweeps at most: after the first every referenced bit is clear.
        for _ in 0..2 * len {
            if self.hand >= len {
                self.hand = 0;
            }
            let i = self.hand;
            self.hand += 1;
            let slot = &mut self.slots[i];
            if slot.entry.is_expired(now) || !slot.referenced {
                return i;
            }
            slot.referenced = false;
        }
        0
    }

    fn remove_at(&mut self, i: usize) {
        if i >= self.slots.len() {
            return;
        }
        let slot = self.slots.swap_remove(i);
        self.index.remove(&slot.key);
        if let Some(moved) = self.slots.get(i) {
            self.index.insert(moved.key.clone(), i);
        }
        if self.hand > self.slots.len() {
            self.hand = 0;
        }
    }

    /// Inserts or replaces; returns the change in the number of entries.
    fn insert(&mut self, key: Key, entry: Entry, now: Instant) -> isize {
        if let Some(&i) = self.index.get(&key)
            && let Some(slot) = self.slots.get_mut(i)
        {
            slot.entry = entry;
            slot.referenced = true;
            return 0;
        }
        if self.cap == 0 {
            return 0;
        }
        let slot = Slot {
            key: key.clone(),
            entry,
            referenced: false,
        };
        if self.slots.len() < self.cap {
            self.index.insert(key, self.slots.len());
            self.slots.push(slot);
            return 1;
        }
        let i = self.victim(now);
        let old = std::mem::replace(&mut self.slots[i], slot);
        self.index.remove(&old.key);
        self.index.insert(key, i);
        0
    }

    /// Evicts until the shard fits its cap; returns how many entries went.
    fn shrink(&mut self, now: Instant) -> usize {
        let mut gone = 0;
        while self.slots.len() > self.cap {
            let i = self.victim(now);
            self.remove_at(i);
            gone += 1;
        }
        gone
    }
}

/// The cache. Cheap to share (`&self` everywhere).
#[derive(Debug)]
pub(crate) struct Cache {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    len: AtomicUsize,
    gauge: IntGauge,
}

impl Cache {
    /// A cache of at most `capacity` entries (0 disables caching) that keeps `gauge` at its
    /// size.
    pub(crate) fn new(capacity: usize, gauge: IntGauge) -> Self {
        let n = if capacity >= SHARDING_THRESHOLD {
            SHARDS
        } else {
            1
        };
        let shards: Box<[Mutex<Shard>]> = (0..n).map(|_| Mutex::default()).collect();
        let cache = Self {
            shards,
            hasher: RandomState::new(),
            len: AtomicUsize::new(0),
            gauge,
        };
        cache.split_capacity(capacity);
        cache.publish();
        cache
    }

    /// Spreads `capacity` over the shards so that the caps add up to exactly `capacity`. The
    /// shard count is fixed at construction, so a cache shrunk by a reload from thousands to
    /// a handful of entries may leave some shards with room for none: still within bound.
    fn split_capacity(&self, capacity: usize) {
        let n = self.shards.len();
        for (i, shard) in self.shards.iter().enumerate() {
            lock(shard).cap = capacity / n + usize::from(i < capacity % n);
        }
    }

    fn shard(&self, key: &Key) -> &Mutex<Shard> {
        let h = self.hasher.hash_one(key);
        // The modulo keeps the index in range; `shards` is never empty.
        &self.shards[(h % self.shards.len() as u64) as usize]
    }

    fn publish(&self) {
        let len = self.len.load(Ordering::Relaxed);
        self.gauge.set(i64::try_from(len).unwrap_or(i64::MAX));
    }

    fn account(&self, delta: isize) {
        if delta > 0 {
            self.len.fetch_add(delta.unsigned_abs(), Ordering::Relaxed);
        } else if delta < 0 {
            self.len.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
        if delta != 0 {
            self.publish();
        }
    }

    /// The entry for `key` as it should be served at `now`. An entry past the stale window is
    /// dropped on the way.
    pub(crate) fn get(&self, key: &Key, now: Instant, stale: StalePolicy) -> Hit {
        let mut removed = false;
        let hit = {
            let mut shard = lock(self.shard(key));
            let Some(&i) = shard.index.get(key) else {
                return Hit::Miss;
            };
            let hit = match shard.slots.get_mut(i) {
                Some(slot) => {
                    slot.referenced = true;
                    slot.entry.serve(now, stale)
                }
                None => Hit::Miss,
            };
            if matches!(hit, Hit::Miss) {
                shard.remove_at(i);
                removed = true;
            }
            hit
        };
        if removed {
            self.account(-1);
        }
        hit
    }

    /// Stores an upstream answer that may be cached for `ttl` seconds (see [`cache_ttl`]).
    pub(crate) fn insert(&self, key: Key, answer: Answer, ttl: u32, now: Instant) {
        let entry = Entry {
            answer,
            stored: now,
            ttl,
        };
        let delta = lock(self.shard(&key)).insert(key, entry, now);
        self.account(delta);
    }

    /// Changes the bound, evicting what no longer fits.
    pub(crate) fn set_capacity(&self, capacity: usize, now: Instant) {
        self.split_capacity(capacity);
        let mut gone = 0;
        for shard in self.shards.iter() {
            gone += lock(shard).shrink(now);
        }
        self.account(-isize::try_from(gone).unwrap_or(isize::MAX));
    }

    /// Entries held, fresh or stale.
    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Relaxed)
    }
}

/// Locks a shard. Nothing panics while a shard is locked, so a poisoned lock still holds a
/// consistent shard and is simply taken over.
fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    shard.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn a(n: &str, ttl: u32) -> Rec {
        Rec::new(name(n), ttl, RecordData::A("192.0.2.1".parse().unwrap()))
    }

    fn soa(ttl: u32, minimum: u32) -> Rec {
        Rec::new(
            name("example.org"),
            ttl,
            RecordData::Soa {
                mname: name("ns.example.org"),
                rname: name("hostmaster.example.org"),
                serial: 1,
                refresh: 3600,
                retry: 600,
                expire: 86400,
                minimum,
            },
        )
    }

    fn positive(n: &str, ttl: u32) -> Answer {
        Answer::records(vec![a(n, ttl)], Source::Upstream)
    }

    fn key(n: &str) -> Key {
        (name(n), RType::A, super::super::Want::default())
    }

    const STALE: StalePolicy = StalePolicy {
        window: Duration::from_secs(100),
        ttl: 30,
    };

    fn cache(cap: usize) -> Cache {
        Cache::new(cap, IntGauge::new("test_entries", "test").unwrap())
    }

    #[test]
    fn ttl_of_positive_answers_is_the_lowest_record_ttl() {
        let mut ans = positive("a.example.org", 300);
        ans.additional.push(a("b.example.org", 60));
        assert_eq!(cache_ttl(&ans, RType::A), Some(60));
        assert_eq!(cache_ttl(&positive("a.example.org", 0), RType::A), None);
        assert_eq!(
            cache_ttl(&positive("a.example.org", u32::MAX), RType::A),
            Some(MAX_TTL)
        );
    }

    #[test]
    fn ttl_of_negative_answers_follows_rfc2308() {
        let mut nx = Answer::empty(Rcode::NxDomain, Source::Upstream);
        assert_eq!(cache_ttl(&nx, RType::A), None, "no SOA: not cached");
        nx.authority.push(soa(3600, 60));
        assert_eq!(cache_ttl(&nx, RType::A), Some(60));
        let mut nodata = Answer::empty(Rcode::NoError, Source::Upstream);
        nodata.authority.push(soa(45, 600));
        assert_eq!(cache_ttl(&nodata, RType::AAAA), Some(45));
        // A CNAME leading to NODATA: the chain's TTL counts too.
        nodata.answers.push(Rec::new(
            name("www.example.org"),
            10,
            RecordData::Cname(name("a.example.org")),
        ));
        assert_eq!(cache_ttl(&nodata, RType::AAAA), Some(10));
    }

    #[test]
    fn failures_are_not_cached() {
        let mut sf = Answer::empty(Rcode::ServFail, Source::Upstream);
        sf.authority.push(soa(3600, 60));
        assert_eq!(cache_ttl(&sf, RType::A), None);
        assert_eq!(
            cache_ttl(&Answer::empty(Rcode::Refused, Source::Upstream), RType::A),
            None
        );
    }

    #[test]
    fn fresh_then_stale_then_gone() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert(
            key("a.example.org"),
            positive("a.example.org", 300),
            300,
            t0,
        );
        let Hit::Fresh(f) = c.get(&key("a.example.org"), t0 + Duration::from_secs(100), STALE)
        else {
            panic!("expected fresh")
        };
        assert_eq!(f.answers[0].ttl, 200);
        assert_eq!(f.source, Source::Cache);
        let Hit::Stale(s) = c.get(&key("a.example.org"), t0 + Duration::from_secs(350), STALE)
        else {
            panic!("expected stale")
        };
        assert_eq!(s.answers[0].ttl, 30);
        assert_eq!(s.source, Source::Stale);
        assert_eq!(c.len(), 1);
        assert!(matches!(
            c.get(&key("a.example.org"), t0 + Duration::from_secs(400), STALE),
            Hit::Miss
        ));
        assert_eq!(c.len(), 0, "entries past the stale window are dropped");
    }

    #[test]
    fn serve_stale_off_means_expired_is_a_miss() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert(key("a.example.org"), positive("a.example.org", 5), 5, t0);
        let off = StalePolicy {
            window: Duration::ZERO,
            ttl: 30,
        };
        assert!(matches!(
            c.get(&key("a.example.org"), t0 + Duration::from_secs(5), off),
            Hit::Miss
        ));
    }

    #[test]
    fn records_are_clamped_to_the_entry_lifetime() {
        let c = cache(10);
        let t0 = Instant::now();
        let mut nx = Answer::empty(Rcode::NxDomain, Source::Upstream);
        nx.authority.push(soa(3600, 60));
        c.insert(key("x.example.org"), nx, 60, t0);
        let Hit::Fresh(f) = c.get(&key("x.example.org"), t0 + Duration::from_secs(10), STALE)
        else {
            panic!("expected fresh")
        };
        assert_eq!(f.authority[0].ttl, 50);
    }

    #[test]
    fn bound_is_exact_and_clock_keeps_referenced_entries() {
        let c = cache(3);
        let t0 = Instant::now();
        for n in ["a.example.org", "b.example.org", "c.example.org"] {
            c.insert(key(n), positive(n, 300), 300, t0);
        }
        // a is used; d must evict an unreferenced entry, not a.
        assert!(matches!(
            c.get(&key("a.example.org"), t0, STALE),
            Hit::Fresh(_)
        ));
        c.insert(
            key("d.example.org"),
            positive("d.example.org", 300),
            300,
            t0,
        );
        assert_eq!(c.len(), 3);
        assert!(matches!(
            c.get(&key("a.example.org"), t0, STALE),
            Hit::Fresh(_)
        ));
        assert!(matches!(
            c.get(&key("d.example.org"), t0, STALE),
            Hit::Fresh(_)
        ));
        for i in 0..50 {
            let n = format!("n{i}.example.org");
            c.insert(key(&n), positive(&n, 300), 300, t0);
            assert!(c.len() <= 3);
        }
    }

    #[test]
    fn expired_entries_are_evicted_first() {
        let c = cache(2);
        let t0 = Instant::now();
        c.insert(
            key("short.example.org"),
            positive("short.example.org", 5),
            5,
            t0,
        );
        c.insert(
            key("long.example.org"),
            positive("long.example.org", 300),
            300,
            t0,
        );
        let later = t0 + Duration::from_secs(10);
        // Both referenced; the expired one still goes first.
        let _ = c.get(&key("short.example.org"), later, STALE);
        let _ = c.get(&key("long.example.org"), later, STALE);
        c.insert(
            key("new.example.org"),
            positive("new.example.org", 300),
            300,
            later,
        );
        assert!(matches!(
            c.get(&key("long.example.org"), later, STALE),
            Hit::Fresh(_)
        ));
        assert!(matches!(
            c.get(&key("short.example.org"), later, STALE),
            Hit::Miss
        ));
    }

    #[test]
    fn shrinking_evicts_and_zero_disables() {
        let c = cache(2000);
        let t0 = Instant::now();
        for i in 0..2000 {
            let n = format!("n{i}.example.org");
            c.insert(key(&n), positive(&n, 300), 300, t0);
        }
        assert!(c.len() <= 2000 && c.len() > 1500, "len {}", c.len());
        c.set_capacity(100, t0);
        assert!(c.len() <= 100);
        assert_eq!(c.gauge.get(), c.len() as i64);
        c.set_capacity(0, t0);
        assert_eq!(c.len(), 0);
        c.insert(
            key("a.example.org"),
            positive("a.example.org", 300),
            300,
            t0,
        );
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn replacing_an_entry_keeps_the_count() {
        let c = cache(10);
        let t0 = Instant::now();
        c.insert(
            key("a.example.org"),
            positive("a.example.org", 300),
            300,
            t0,
        );
        c.insert(key("a.example.org"), positive("a.example.org", 60), 60, t0);
        assert_eq!(c.len(), 1);
        assert_eq!(c.gauge.get(), 1);
        let Hit::Fresh(f) = c.get(&key("a.example.org"), t0, STALE) else {
            panic!("expected fresh")
        };
        assert_eq!(f.answers[0].ttl, 60);
    }
}
