//! The data walk of one query, top to bottom:
//!
//! 0. rate limit (UDP only) — over the client's `dns.rate_limit`: dropped, or an empty
//!    TC=1 reply ([`super::ratelimit`]), so sipdns cannot be used to amplify;
//! 1. client ACL — outside the allowed networks: REFUSED (never an open resolver);
//! 2. parse — malformed: FORMERR; responses: dropped; other opcodes: NOTIMP; EDNS version
//!    above 0: BADVERS;
//! 3. resolve — static entries / upstream by merge mode, RFC 3263 ADDITIONAL records, and
//!    the health policy for managed SIP domains ([`crate::resolve::Resolver::answer`]);
//! 4. encode — fit the transport (ADDITIONAL dropped before TC is set), echo ID and the
//!    question's case.
//!
//! Every step reports what it did through metrics; nothing here logs per query above
//! `debug`.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use ipnet::IpNet;

use prometheus::Histogram;

use super::{
    fastpath::{self, AnswerCache, KeyBuf, Series},
    ratelimit::{self, Decision, RateLimiter},
    wire::{self, Parsed, Question},
};
use crate::{
    metrics::Metrics,
    record::{Answer, Rcode, RecordData},
    resolve::Resolver,
};

/// Which transport a query came over (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp = 0,
    /// TCP.
    Tcp = 1,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Answers DNS queries. Shared by every listener.
pub struct Handler {
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    cache: AnswerCache,
    /// `dns_duration` by transport, resolved once: the fast path hashes no label strings.
    duration: [Histogram; 2],
    limiter: RateLimiter,
    /// Secondary zones: answers NOTIFY (set only when some are configured; otherwise
    /// NOTIFY gets NOTIMP like any other opcode).
    notify: std::sync::OnceLock<Arc<crate::zones::secondary::Secondaries>>,
}

/// Encoded responses kept by the fast path.
const ANSWER_CACHE_SIZE: usize = 65_536;

/// True if `ip` is inside one of `allow` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn allowed(allow: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.iter().any(|n| n.contains(&ip))
}

/// What [`Handler::fast`] did with a request.
#[derive(Debug)]
pub enum Fast {
    /// The response is in the caller's buffer.
    Answered,
    /// Nothing is to be sent.
    Dropped,
    /// The full path must answer it: pass this to [`Handler::slow`].
    Miss(Miss),
}

/// What the fast path learned about a request it could not answer.
#[derive(Debug)]
pub struct Miss {
    /// The answer cache key, when the question has the common shape.
    key: Option<Vec<u8>>,
    /// The generation the answer will be computed under.
    generation: u128,
}

impl Handler {
    /// A handler over a resolver.
    pub fn new(resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        let duration = [
            metrics
                .dns_duration
                .with_label_values(&[Transport::Udp.label()]),
            metrics
                .dns_duration
                .with_label_values(&[Transport::Tcp.label()]),
        ];
        Self {
            resolver,
            metrics,
            cache: AnswerCache::new(ANSWER_CACHE_SIZE),
            duration,
            limiter: RateLimiter::new(),
            notify: std::sync::OnceLock::new(),
        }
    }

    /// The per-client UDP rate limiter (`dns.rate_limit`).
    pub fn limiter(&self) -> &RateLimiter {
        &self.limiter
    }

    /// Forgets rate-limited clients that have been quiet long enough (bounded table).
    pub fn prune_rate_limit(&self) {
        let data = self.resolver.data_guard();
        self.limiter
            .prune(&data.config.dns.rate_limit, Instant::now());
    }

    /// Hands NOTIFY messages (RFC 1996) to the secondary zones from now on.
    pub fn set_notify(&self, secondaries: Arc<crate::zones::secondary::Secondaries>) {
        let _ = self.notify.set(secondaries);
    }

    /// The resolver.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Answers one request; `None` means send nothing.
    pub async fn handle(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        let mut out = Vec::new();
        match self.fast(bytes, src, transport, start, &mut out) {
            Fast::Answered => Some(out),
            Fast::Dropped => None,
            Fast::Miss(miss) => self.slow(bytes, transport, start, miss).await,
        }
    }

    /// The synchronous first steps: the ACL, and a stored response for this question under
    /// the current generation, written into `out` with the request's ID and spelling. No
    /// allocation and no label hashing on a hit. `start` is when the request arrived.
    pub fn fast(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        start: Instant,
        out: &mut Vec<u8>,
    ) -> Fast {
        let (allowed, max_udp, limited) = {
            let data = self.resolver.data_guard();
            (
                allowed(&data.config.dns.allow, src.ip()),
                data.config.dns.max_udp_payload,
                // Rate limit (UDP only, before anything else, REFUSED included): see
                // `ratelimit` for why TCP is exempt and what a slip is.
                match transport {
                    Transport::Udp => {
                        self.limiter
                            .check(src.ip(), &data.config.dns.rate_limit, start)
                    }
                    Transport::Tcp => Decision::Pass,
                },
            )
        };
        if limited != Decision::Pass {
            self.metrics
                .dns_rate_limited
                .with_label_values(&[limited.label()])
                .inc();
            return match limited {
                Decision::Slip => match ratelimit::truncated_reply(bytes) {
                    Some(resp) => {
                        out.clear();
                        out.extend_from_slice(&resp);
                        Fast::Answered
                    }
                    None => Fast::Dropped,
                },
                _ => Fast::Dropped,
            };
        }
        // [secondary zones] NOTIFY (opcode 4, QR clear) before the ACL: the primaries
        // are checked by the secondaries themselves, and need not be in `dns.allow`.
        if let Some(secondaries) = self.notify.get()
            && bytes.len() >= 12
            && bytes[2] & 0xf8 == 4 << 3
        {
            return match secondaries.notify(bytes, src) {
                Some(resp) => {
                    out.clear();
                    out.extend_from_slice(&resp);
                    Fast::Answered
                }
                None => Fast::Dropped,
            };
        }
        if !allowed {
            self.metrics
                .dns_dropped
                .with_label_values(&["acl_refused"])
                .inc();
            let Some(resp) = wire::refused(bytes) else {
                return Fast::Dropped;
            };
            self.count(transport, "other", Rcode::Refused, start);
            out.clear();
            out.extend_from_slice(&resp);
            return Fast::Answered;
        }
        let generation = self.resolver.generation();
        let Some(qq) = fastpath::quick(bytes) else {
            return Fast::Miss(Miss {
                key: None,
                generation,
            });
        };
        let tcp = transport == Transport::Tcp;
        let limit = wire::budget_for(qq.edns_payload, tcp, max_udp);
        let mut key = KeyBuf::new();
        let key = fastpath::key_into(bytes, &qq, limit, tcp, &mut key);
        if self.cache.get_into(key, generation, start, bytes, &qq, out) {
            self.duration[transport as usize].observe(start.elapsed().as_secs_f64());
            return Fast::Answered;
        }
        Fast::Miss(Miss {
            key: Some(key.to_vec()),
            generation,
        })
    }

    /// The full path for a request [`Self::fast`] could not answer: parse, resolve (may
    /// wait for upstream), encode, and store the response for the fast path.
    pub async fn slow(
        &self,
        bytes: &[u8],
        transport: Transport,
        start: Instant,
        miss: Miss,
    ) -> Option<Vec<u8>> {
        let q = match wire::parse(bytes) {
            Parsed::Query(q) => q,
            Parsed::Reply(resp, rcode) => {
                self.count(transport, "other", rcode, start);
                return Some(resp);
            }
            Parsed::Drop(reason) => {
                self.metrics.dns_dropped.with_label_values(&[reason]).inc();
                return None;
            }
        };
        let answer = self.resolver.answer(&q.name, q.qtype).await;
        let resp = self.respond(&q, &answer, transport, start);
        if let Some(key) = miss.key
            && self.cacheable(&q, &answer)
        {
            let series = Series {
                queries: self.metrics.dns_queries.with_label_values(&[
                    transport.label(),
                    q.qtype.metric_label(),
                    answer.rcode.metric_label(),
                ]),
                answers: self
                    .metrics
                    .dns_answers
                    .with_label_values(&[answer.source.metric_label()]),
            };
            self.cache
                .put(key, &resp, miss.generation, answer.source, series);
        }
        Some(resp)
    }

    /// Whether a response may be reused for the same question: not stale, not an error,
    /// and not ordered at random per response by the health policy.
    fn cacheable(&self, q: &Question, answer: &Answer) -> bool {
        if answer.source == crate::record::Source::Stale
            || !matches!(answer.rcode, Rcode::NoError | Rcode::NxDomain)
        {
            return false;
        }
        let data = self.resolver.data_guard();
        match data.config.sip.domain_of(&q.name) {
            Some(d) if d.ordering == crate::config::Ordering::Weighted => {
                !has_weighted_choice(answer)
            }
            _ => true,
        }
    }

    /// Answers a request without waiting for upstream, for when too many queries are
    /// already waiting: a cached answer (fresh or stale) if there is one, else SERVFAIL.
    pub fn overloaded(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        self.metrics
            .dns_dropped
            .with_label_values(&["overloaded"])
            .inc();
        let data = self.resolver.data();
        if !allowed(&data.config.dns.allow, src.ip()) {
            return wire::refused(bytes);
        }
        let Parsed::Query(q) = wire::parse(bytes) else {
            return None;
        };
        let answer = self
            .resolver
            .forwarder()
            .stale(&q.name, q.qtype)
            .unwrap_or_else(Answer::servfail);
        Some(self.respond(&q, &answer, transport, start))
    }

    fn respond(
        &self,
        q: &Question,
        answer: &Answer,
        transport: Transport,
        start: Instant,
    ) -> Vec<u8> {
        let max_udp = self.resolver.data().config.dns.max_udp_payload;
        let limit = wire::budget(q, transport == Transport::Tcp, max_udp);
        let (bytes, truncated) = wire::encode(q, answer, limit, max_udp);
        if truncated {
            self.metrics
                .dns_truncated
                .with_label_values(&[transport.label()])
                .inc();
        }
        self.metrics
            .dns_answers
            .with_label_values(&[answer.source.metric_label()])
            .inc();
        self.count(transport, q.qtype.metric_label(), answer.rcode, start);
        bytes
    }

    fn count(&self, transport: Transport, qtype: &str, rcode: Rcode, start: Instant) {
        self.metrics
            .dns_queries
            .with_label_values(&[transport.label(), qtype, rcode.metric_label()])
            .inc();
        self.duration[transport as usize].observe(start.elapsed().as_secs_f64());
    }
}

/// True if some SRV set in the answer has two records of one priority: the weighted order
/// is drawn per response, so the encoded response must not be reused.
fn has_weighted_choice(answer: &Answer) -> bool {
    let mut seen = std::collections::HashSet::new();
    answer
        .answers
        .iter()
        .chain(&answer.additional)
        .any(|r| match &r.data {
            RecordData::Srv { priority, .. } => !seen.insert((r.name.clone(), *priority)),
            _ => false,
        })
}
