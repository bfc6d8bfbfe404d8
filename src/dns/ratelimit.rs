//! Per-client response rate limiting for UDP, so sipdns cannot be used to amplify traffic
//! towards a spoofed source address (`dns.rate_limit`).
//!
//! Each client gets a token bucket: `responses_per_second` tokens a second, at most `burst`
//! saved up; every UDP response costs one. A client is an IPv4 address, or an IPv6 /64
//! (one host's whole allocation, so rotating addresses inside it gains nothing). Networks in
//! `exempt` (default: loopback) are never limited, and TCP is never limited: a TCP client
//! has completed a handshake, so its address is real and it cannot aim answers elsewhere.
//!
//! Beyond the limit a query is dropped, except every `slip`-th one, which gets a minimal
//! reply with TC=1 and no records (the question only, never larger than the query). A
//! real client that hit the limit thus retries over TCP and still gets its answer, while
//! a spoofed victim receives at most one small packet per `slip` queries: no amplification
//! in bytes or packets. (Dropping everything would starve a real client behind a busy NAT;
//! answering every excess query with TC would reflect at full rate.) BIND's RRL uses the
//! same slip idea.
//!
//! Memory is bounded: at most `max_clients` buckets, in shards behind `std::sync::Mutex`es
//! (each held only for one map operation, never across an `.await`). A full shard first
//! forgets clients whose bucket has refilled (they carry no state worth keeping); if it is
//! still full, the new client shares one overflow bucket with every other client that did
//! not fit — so a flood from many spoofed sources cannot grow the table nor escape the limit.

use std::{
    collections::HashMap,
    hash::BuildHasher,
    net::IpAddr,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::config::RateLimitConfig;

/// What to do with one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within the limit: answer normally.
    Pass,
    /// Over the limit: send nothing.
    Drop,
    /// Over the limit: send a truncated reply (TC=1, no records) so the client retries over
    /// TCP.
    Slip,
}

impl Decision {
    /// The metric label of an over-limit decision.
    pub fn label(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Drop => "drop",
            Self::Slip => "slip",
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
    /// Responses refused since the bucket last had a token (drives `slip`).
    over: u32,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Self {
        Self {
            tokens: burst,
            last: now,
            over: 0,
        }
    }

    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.last = now;
    }

    /// Whether the bucket would be full at `now` (its client can be forgotten).
    fn refilled(&self, now: Instant, rate: f64, burst: f64) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * rate >= burst
    }

    fn take(&mut self, now: Instant, rate: f64, burst: f64, slip: u32) -> Decision {
        self.refill(now, rate, burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.over = 0;
            return Decision::Pass;
        }
        self.over = self.over.wrapping_add(1);
        if slip > 0 && self.over.is_multiple_of(slip) {
            Decision::Slip
        } else {
            Decision::Drop
        }
    }
}

const SHARDS: usize = 16;

/// The per-client table. `Send + Sync`; one per DNS server, shared by every UDP loop.
pub struct RateLimiter {
    shards: Vec<Mutex<HashMap<u128, Bucket>>>,
    overflow: Mutex<Option<Bucket>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new()
    }
}

/// The bucket key of a client: IPv4 address, or IPv6 /64 (IPv4-mapped IPv6 counts as
/// IPv4).
fn client_key(ip: IpAddr) -> u128 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => u128::from(u32::from(v4)) | (0xffff << 32),
        IpAddr::V6(v6) => u128::from(v6) & !u128::from(u64::MAX),
    }
}

impl RateLimiter {
    /// An empty table.
    pub fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            overflow: Mutex::new(None),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }

    /// Charges one response to `ip` under `cfg` at `now`.
    pub fn check(&self, ip: IpAddr, cfg: &RateLimitConfig, now: Instant) -> Decision {
        if cfg.responses_per_second == 0 {
            return Decision::Pass;
        }
        let canonical = ip.to_canonical();
        if cfg.exempt.iter().any(|n| n.contains(&canonical)) {
            return Decision::Pass;
        }
        let rate = f64::from(cfg.responses_per_second);
        let burst = f64::from(cfg.burst.max(1));
        let per_shard = cfg.max_clients.div_ceil(SHARDS).max(1);
        let key = client_key(canonical);
        let shard = &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS];
        // A poisoned lock only means another thread panicked mid-update of plain numbers:
        // the data is still usable.
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(b) = map.get_mut(&key) {
            return b.take(now, rate, burst, cfg.slip);
        }
        if map.len() >= per_shard {
            map.retain(|_, b| !b.refilled(now, rate, burst));
        }
        if map.len() < per_shard {
            let mut b = Bucket::full(burst, now);
            let d = b.take(now, rate, burst, cfg.slip);
            map.insert(key, b);
            return d;
        }
        drop(map);
        let mut overflow = self.overflow.lock().unwrap_or_else(|e| e.into_inner());
        overflow
            .get_or_insert_with(|| Bucket::full(burst, now))
            .take(now, rate, burst, cfg.slip)
    }

    /// Clients with a bucket of their own (not counting the shared overflow bucket).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map_or(0, |m| m.len()))
            .sum()
    }

    /// True when no client has a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets clients whose bucket has refilled, so an idle table shrinks back. Cheap
    /// enough to call from a periodic task; [`Self::check`] also does it when a shard is
    /// full.
    pub fn prune(&self, cfg: &RateLimitConfig, now: Instant) {
        let rate = f64::from(cfg.responses_per_second.max(1));
        let burst = f64::from(cfg.burst.max(1));
        for s in &self.shards {
            let mut map = s.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, b| !b.refilled(now, rate, burst));
        }
    }
}

/// The reply sent instead of an answer when a query slips through the limit: the header
/// with QR and TC set, RD and CD echoed, RCODE NOERROR, and the question only (RFC 1035
/// §4.1.1: TC tells the client to retry over TCP). Never longer than the query. `None`
/// for anything but a plain one-question query, which is then dropped.
pub fn truncated_reply(request: &[u8], max_udp_payload: u16) -> Option<Vec<u8>> {
    super::fastpath::quick(request)?;
    let skim = super::wire::skim(request, max_udp_payload);
    Some(skim.reply(
        crate::record::Rcode::NoError,
        super::header::RA | super::header::TC,
    ))
}

/// How often the server prunes idle clients from the table.
pub const PRUNE_EVERY: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn cfg(rps: u32, burst: u32, slip: u32, max_clients: usize) -> RateLimitConfig {
        RateLimitConfig {
            responses_per_second: rps,
            burst,
            slip,
            max_clients,
            exempt: vec!["127.0.0.0/8".parse().unwrap()],
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_rate() {
        let l = RateLimiter::new();
        let c = cfg(10, 5, 0, 100);
        let t0 = Instant::now();
        let passed = (0..20)
            .filter(|_| l.check(ip("192.0.2.1"), &c, t0) == Decision::Pass)
            .count();
        assert_eq!(passed, 5, "the burst, then nothing");
        // 0.5 s later: 5 more tokens.
        let t1 = t0 + Duration::from_millis(500);
        let passed = (0..20)
            .filter(|_| l.check(ip("192.0.2.1"), &c, t1) == Decision::Pass)
            .count();
        assert_eq!(passed, 5);
        // Another client is not affected.
        assert_eq!(l.check(ip("192.0.2.2"), &c, t1), Decision::Pass);
    }

    #[test]
    fn slip_answers_every_nth_excess_query() {
        let l = RateLimiter::new();
        let c = cfg(1, 1, 3, 100);
        let t = Instant::now();
        assert_eq!(l.check(ip("192.0.2.1"), &c, t), Decision::Pass);
        let d: Vec<_> = (0..6).map(|_| l.check(ip("192.0.2.1"), &c, t)).collect();
        use Decision::{Drop as D, Slip as S};
        assert_eq!(d, vec![D, D, S, D, D, S]);
    }

    #[test]
    fn exempt_and_off() {
        let l = RateLimiter::new();
        let c = cfg(1, 1, 0, 100);
        let t = Instant::now();
        for _ in 0..100 {
            assert_eq!(l.check(ip("127.0.0.1"), &c, t), Decision::Pass);
            assert_eq!(l.check(ip("::ffff:127.0.0.1"), &c, t), Decision::Pass);
            assert_eq!(
                l.check(ip("192.0.2.1"), &cfg(0, 1, 0, 100), t),
                Decision::Pass
            );
        }
        assert!(l.is_empty());
    }

    #[test]
    fn ipv6_clients_are_limited_per_64() {
        let l = RateLimiter::new();
        let c = cfg(1, 2, 0, 100);
        let t = Instant::now();
        assert_eq!(l.check(ip("2001:db8:1:2::1"), &c, t), Decision::Pass);
        assert_eq!(l.check(ip("2001:db8:1:2::ffff"), &c, t), Decision::Pass);
        assert_eq!(l.check(ip("2001:db8:1:2:ab::1"), &c, t), Decision::Drop);
        assert_eq!(l.check(ip("2001:db8:1:3::1"), &c, t), Decision::Pass);
    }

    #[test]
    fn the_table_is_bounded_and_overflow_is_limited_too() {
        let l = RateLimiter::new();
        let c = cfg(10, 2, 0, 64);
        let t = Instant::now();
        let mut passed = 0;
        for i in 0..10_000u32 {
            let a = std::net::Ipv4Addr::from(0xC000_0000 | i);
            if l.check(IpAddr::V4(a), &c, t) == Decision::Pass {
                passed += 1;
            }
        }
        assert!(l.len() <= 64 + SHARDS, "{} buckets", l.len());
        // Every client that got a bucket had its burst; all others shared one bucket.
        assert!(passed <= (64 + SHARDS) * 2 + 2, "{passed} passed");
        // Idle clients are forgotten once their bucket refilled.
        l.prune(&c, t + Duration::from_secs(1));
        assert!(l.is_empty());
    }

    #[test]
    fn truncated_reply_is_header_and_question_only() {
        // ID 0x1234, RD, one question `a.example.` A IN, plus an OPT record.
        let mut q = vec![0x12, 0x34, 0x01, 0x10, 0, 1, 0, 0, 0, 0, 0, 1];
        q.extend_from_slice(b"\x01a\x07example\x00\x00\x01\x00\x01");
        q.extend_from_slice(&[0, 0, 41, 4, 0xd0, 0, 0, 0, 0, 0, 0]);
        let r = truncated_reply(&q, 1232).unwrap();
        assert!(r.len() <= q.len());
        assert_eq!(&r[..2], &[0x12, 0x34]);
        assert_eq!(r[2], 0x80 | 0x02 | 0x01, "QR, TC, RD");
        assert_eq!(r[3] & 0x0f, 0, "NOERROR");
        assert_eq!(r[3] & 0x10, 0x10, "CD echoed");
        assert_eq!(&r[4..12], &[0, 1, 0, 0, 0, 0, 0, 1], "the question and OPT");
        assert!(truncated_reply(&q[..10], 1232).is_none());
    }
}
