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

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use ipnet::IpNet;

use prometheus::Histogram;

use super::{
    fastpath::{self, AnswerCache, KeyBuf, Series},
    header,
    ratelimit::{self, Decision, RateLimiter},
    wire::{self, Parsed, Question},
};
use crate::{
    metrics::Metrics,
    record::{Answer, Rcode, Reuse, Source},
    resolve::Resolver,
    state::Data,
    upstream::Want,
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
    /// Secondary zones: answer NOTIFY while some zone is followed (otherwise NOTIFY gets
    /// NOTIMP like any other opcode).
    notify: std::sync::OnceLock<Arc<crate::zones::secondary::Secondaries>>,
}

/// Encoded responses kept by the fast path.
const ANSWER_CACHE_SIZE: usize = 65_536;

/// True if `ip` is inside one of `allow` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn allowed(allow: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.iter().any(|n| n.contains(&ip))
}

/// What [`Handler::step`] did with a request.
pub enum Step {
    /// The reply is in the caller's buffer.
    Ready,
    /// Nothing is to be sent.
    Drop,
    /// The reply waits for upstream: await this future (`None`: send nothing). The caller
    /// bounds how many of these wait at once and answers [`Handler::overloaded`] past that.
    Wait(Pending),
}

/// The rest of one query that must wait for upstream, boxed so that the UDP loops can poll
/// it in place and move it to a task.
pub type Pending = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

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

/// What the fast path learned about a request it could not answer: the config snapshot
/// the whole query is answered under, and the cache key and generation to store it by.
pub struct Miss {
    /// The answer cache key, when the question has the common shape.
    key: Option<Vec<u8>>,
    /// The question, when the fast path could read it whole (no second parse).
    question: Option<Question>,
    /// The generation the answer will be computed under (read before `data`).
    generation: u128,
    /// The config and zones, loaded once for the whole query.
    data: Arc<Data>,
}

impl std::fmt::Debug for Miss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Miss")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
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

    /// The one dispatch of a request, shared by the UDP loops and TCP: the fast path (rate
    /// limit, ACL, answer cache); on a miss the full path, polled once in place, so static
    /// and cached answers complete here; what must wait for upstream comes back as
    /// [`Step::Wait`].
    pub fn step(
        self: &Arc<Self>,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        start: Instant,
        out: &mut Vec<u8>,
    ) -> Step {
        let miss = match self.fast(bytes, src, transport, start, out) {
            Fast::Answered => return Step::Ready,
            Fast::Dropped => return Step::Drop,
            Fast::Miss(miss) => miss,
        };
        let packet = bytes.to_vec();
        let h = self.clone();
        let mut fut: Pending =
            Box::pin(async move { h.slow(&packet, transport, start, miss).await });
        match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Some(resp)) => {
                *out = resp;
                Step::Ready
            }
            Poll::Ready(None) => Step::Drop,
            Poll::Pending => Step::Wait(fut),
        }
    }

    /// Answers one request; `None` means send nothing. (Tests and the fuzz target; the
    /// listeners use [`Self::step`] to bound the waiting ones.)
    pub async fn handle(
        self: &Arc<Self>,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        match self.step(bytes, src, transport, Instant::now(), &mut out) {
            Step::Ready => Some(out),
            Step::Drop => None,
            Step::Wait(fut) => fut.await,
        }
    }

    /// The synchronous first steps: the rate limit, the ACL, and a stored response for
    /// this question under the current generation, written into `out` with the request's
    /// ID and spelling. No allocation and no label hashing on a hit. `start` is when the
    /// request arrived.
    pub fn fast(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
        start: Instant,
        out: &mut Vec<u8>,
    ) -> Fast {
        // The generation first: were config or health to change after it is read, entries
        // stored under it are already stale and will not be served.
        let generation = self.resolver.generation();
        let data = self.resolver.data_guard();
        let max_udp = data.config.dns.max_udp_payload;
        // Rate limit (UDP only, before anything else, REFUSED included): see `ratelimit`
        // for why TCP is exempt and what a slip is.
        let limited = match transport {
            Transport::Udp => self
                .limiter
                .check(src.ip(), &data.config.dns.rate_limit, start),
            Transport::Tcp => Decision::Pass,
        };
        if limited != Decision::Pass {
            self.metrics
                .dns_rate_limited
                .with_label_values(&[limited.label()])
                .inc();
            return match limited {
                Decision::Slip => match ratelimit::truncated_reply(bytes, max_udp) {
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
            && bytes.len() >= header::LEN
            && header::flags(bytes) & (header::QR | header::OPCODE_MASK)
                == u16::from(header::OPCODE_NOTIFY) << header::OPCODE_SHIFT
            && !secondaries.is_empty()
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
        if !allowed(&data.config.dns.allow, src.ip()) {
            self.metrics
                .dns_dropped
                .with_label_values(&["acl_refused"])
                .inc();
            let Some(resp) = wire::refused(bytes, max_udp) else {
                return Fast::Dropped;
            };
            self.count(transport, "other", Rcode::Refused, start);
            out.clear();
            out.extend_from_slice(&resp);
            return Fast::Answered;
        }
        let Some(qq) = fastpath::quick(bytes) else {
            return Fast::Miss(Miss {
                key: None,
                question: None,
                generation,
                data: arc_swap::Guard::into_inner(data),
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
            question: wire::from_quick(bytes, &qq),
            generation,
            data: arc_swap::Guard::into_inner(data),
        })
    }

    /// The full path for a request [`Self::fast`] could not answer: parse, resolve (may
    /// wait for upstream), encode, and store the response for the fast path, under the
    /// config snapshot the fast path loaded.
    pub async fn slow(
        &self,
        bytes: &[u8],
        transport: Transport,
        start: Instant,
        miss: Miss,
    ) -> Option<Vec<u8>> {
        let data = &miss.data;
        let parsed = match miss.question {
            Some(q) => Parsed::Query(q),
            None => wire::parse(bytes, data.config.dns.max_udp_payload),
        };
        let q = match parsed {
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
        let want = Want {
            dnssec_ok: q.dnssec_ok,
            checking_disabled: q.cd,
        };
        let answer = self.resolver.answer_in(data, &q.name, q.qtype, want).await;
        let resp = self.respond(&q, &answer, transport, start, data);
        if let Some(key) = miss.key
            && let Some(life) = lifetime(&answer, data.config.upstream.retry_after)
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
            self.cache.put(key, &resp, miss.generation, life, series);
        }
        Some(resp)
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
        let max_udp = data.config.dns.max_udp_payload;
        if !allowed(&data.config.dns.allow, src.ip()) {
            return wire::refused(bytes, max_udp);
        }
        let q = match wire::parse(bytes, max_udp) {
            Parsed::Query(q) => q,
            Parsed::Reply(resp, _) => return Some(resp),
            Parsed::Drop(_) => return None,
        };
        let want = Want {
            dnssec_ok: q.dnssec_ok,
            checking_disabled: q.cd,
        };
        let answer = self
            .resolver
            .forwarder()
            .stale_with(&q.name, q.qtype, want)
            .unwrap_or_else(Answer::servfail);
        Some(self.respond(&q, &answer, transport, start, &data))
    }

    fn respond(
        &self,
        q: &Question,
        answer: &Answer,
        transport: Transport,
        start: Instant,
        data: &Data,
    ) -> Vec<u8> {
        let max_udp = data.config.dns.max_udp_payload;
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

/// How long the reply built from `answer` may be reused, if at all: the answer cache is a
/// cache of this path's output, and must not outlive what the output was built from.
///
/// - errors other than NXDOMAIN, and answers drawn per response: never;
/// - answers given because upstream failed: until `retry_after`, then upstream is asked
///   again;
/// - static and synthesized answers: a minute (any reload or health change invalidates
///   them at once through the generation);
/// - answers with upstream data: at most a second (so TTLs are at most a second stale),
///   and never when a record's TTL is 0.
fn lifetime(answer: &Answer, retry_after: Duration) -> Option<Duration> {
    if !matches!(answer.rcode, Rcode::NoError | Rcode::NxDomain) {
        return None;
    }
    let life = match answer.reuse {
        Reuse::Never => return None,
        Reuse::UntilRetry => retry_after,
        Reuse::Fresh => match answer.source {
            Source::Static | Source::Synthesized => Duration::from_secs(60),
            Source::Stale => retry_after,
            Source::Upstream | Source::Cache | Source::Merged => {
                let min_ttl = answer
                    .answers
                    .iter()
                    .chain(&answer.authority)
                    .chain(&answer.additional)
                    .map(|r| r.ttl)
                    .min()
                    .unwrap_or(1);
                Duration::from_secs(u64::from(min_ttl.min(1)))
            }
        },
    };
    (!life.is_zero()).then_some(life)
}
