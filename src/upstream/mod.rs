//! The forwarder: sends questions sipdns does not answer statically to the upstream
//! resolvers (hickory-resolver), with a cache that honours TTLs and serves stale answers
//! (RFC 8767) when every upstream fails.
//!
//! A question goes: fresh cache entry -> one upstream request shared by every identical
//! question in flight -> stale cache entry -> error. In more detail:
//!
//! - **Cache** (`cache.rs`): (name, type) -> the upstream's whole answer, for the lowest TTL of
//!   its records (negative answers: RFC 2308 §5, the SOA's TTL capped by its MINIMUM).
//!   SERVFAIL, REFUSED and timeouts are never cached. Bounded by `cache_size` entries.
//! - **Coalescing**: the first miss for a question spawns one task that asks the upstreams,
//!   fills the cache and finishes even if every client gave up; later identical questions
//!   await the same task's result (a `Shared` future in a map).
//! - **Serve-stale** (RFC 8767): an entry stays for `serve_stale` after it expires. A
//!   question that finds only such an entry still starts (or joins) a refresh; if every
//!   upstream fails, or the refresh takes longer than `stale_answer_after` (the RFC's
//!   "client response timer"), the stale answer is returned with TTL `stale_ttl` and the
//!   refresh carries on in the background and updates the cache. So recovery needs no
//!   restart, and a phone still finds its PBX while the office's internet link is down.
//!
//! The public API speaks only the plain types of [`crate::record`]; hickory stays inside
//! `servers.rs`.

mod cache;
mod servers;

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use arc_swap::ArcSwap;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::time::Instant;

use self::{
    cache::{Cache, Hit, Key, StalePolicy, cache_ttl},
    servers::Upstreams,
};
use crate::{
    config::UpstreamConfig,
    metrics::Metrics,
    record::{Answer, DomainName, RType},
};

/// Why the upstreams gave no answer. Each variant has a bounded [`label`](Self::label) for
/// the `upstream_errors{kind}` and `upstream_requests{result}` metrics; the DNS layer
/// answers every one of them with SERVFAIL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    /// No upstream answered within the timeout.
    #[error("upstream timed out")]
    Timeout,
    /// The upstream answered SERVFAIL.
    #[error("upstream answered SERVFAIL")]
    ServFail,
    /// The upstream answered REFUSED.
    #[error("upstream refused the query")]
    Refused,
    /// A network error talking to the upstream (connection refused, unreachable, ...).
    #[error("upstream i/o error: {0}")]
    Io(String),
    /// The upstream set could not be built from the config (e.g. an unreadable resolv.conf).
    #[error("upstream configuration: {0}")]
    Config(String),
    /// Anything else: a malformed reply, an unexpected rcode (FORMERR, NOTIMP, ...).
    #[error("upstream error: {0}")]
    Other(String),
}

impl UpstreamError {
    /// A bounded label for metrics: `timeout`, `servfail`, `refused`, `io` or `other`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Timeout => "timeout",
            Self::ServFail => "servfail",
            Self::Refused => "refused",
            Self::Io(_) => "io",
            Self::Config(_) | Self::Other(_) => "other",
        }
    }

    /// How much the error says about the upstream; when every server fails, the most telling
    /// error is reported: an answer (SERVFAIL, REFUSED, a bad reply) beats a network error,
    /// which beats silence.
    fn rank(&self) -> u8 {
        match self {
            Self::Timeout => 0,
            Self::Io(_) => 1,
            Self::Config(_) | Self::Other(_) => 2,
            Self::ServFail | Self::Refused => 3,
        }
    }
}

/// The settings that a reload swaps as one.
struct Settings {
    upstreams: Upstreams,
    stale: StalePolicy,
    stale_answer_after: Duration,
}

impl Settings {
    fn from_config(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        Ok(Self {
            upstreams: Upstreams::from_config(cfg)?,
            stale: StalePolicy {
                window: cfg.serve_stale,
                ttl: cfg.stale_ttl,
            },
            stale_answer_after: cfg.stale_answer_after,
        })
    }
}

/// Checks that `cfg` can be applied by [`Forwarder::reconfigure`] (the resolv.conf it
/// names is readable, the server set can be built), without applying it.
pub fn check_config(cfg: &UpstreamConfig) -> Result<(), UpstreamError> {
    Settings::from_config(cfg).map(drop)
}

/// One upstream request, awaited by every identical question that arrives while it runs.
type SharedLookup = Shared<BoxFuture<'static, Result<Answer, UpstreamError>>>;

struct Inner {
    /// Read on every question, replaced on reload: an `ArcSwap` costs readers no lock.
    settings: ArcSwap<Settings>,
    cache: Cache,
    /// Questions in flight upstream, each with the generation number of its request. A
    /// plain mutex: held only to look up, insert or remove, never across an `.await`, and
    /// only on cache misses.
    inflight: Mutex<HashMap<Key, (u64, SharedLookup)>>,
    generation: AtomicU64,
    metrics: Arc<Metrics>,
}

impl Inner {
    fn inflight(&self) -> MutexGuard<'_, HashMap<Key, (u64, SharedLookup)>> {
        // Nothing panics while the map is locked, so a poisoned lock is still consistent.
        self.inflight.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets request `generation` of `key`, and only that one.
    fn finished(&self, key: &Key, generation: u64) {
        let mut inflight = self.inflight();
        if inflight.get(key).is_some_and(|(g, _)| *g == generation) {
            inflight.remove(key);
        }
    }
}

/// Removes a question from the in-flight map when its upstream task ends, however it ends
/// (finished or panicked), so a question can never get stuck. It is made inside the task,
/// on its first poll: a task dropped unpolled by a runtime that is shutting down is cleaned
/// up by its waiters instead (see `join_or_start`), and never while the map is locked.
struct InflightGuard {
    inner: Arc<Inner>,
    key: Key,
    generation: u64,
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.inner.finished(&self.key, self.generation);
    }
}

/// An answer at hand, an upstream request to wait for, or a request that could not start.
enum Pending {
    Ready(Answer),
    Upstream(SharedLookup),
    Failed(UpstreamError),
}

/// The forwarder. `Send + Sync`; share it behind an `Arc`. Spawns its upstream requests on
/// the current tokio runtime.
pub struct Forwarder {
    inner: Arc<Inner>,
}

impl Forwarder {
    /// A forwarder for `cfg.servers` (or the resolvers in `cfg.resolv_conf` when that list is
    /// empty). Fails if no upstream can be determined.
    pub fn new(cfg: &UpstreamConfig, metrics: Arc<Metrics>) -> Result<Self, UpstreamError> {
        let settings = Settings::from_config(cfg)?;
        let cache = Cache::new(cfg.cache_size, metrics.cache_entries.clone());
        Ok(Self {
            inner: Arc::new(Inner {
                settings: ArcSwap::from_pointee(settings),
                cache,
                inflight: Mutex::new(HashMap::new()),
                generation: AtomicU64::new(0),
                metrics,
            }),
        })
    }

    /// A fresh cached answer (source `Cache`, TTLs decremented by the entry's age), without
    /// any I/O and without waiting: the DNS fast path asks this first.
    pub fn cached(&self, name: &DomainName, rtype: RType) -> Option<Answer> {
        match self.lookup_cache(&(name.clone(), rtype)) {
            Hit::Fresh(answer) => Some(answer),
            Hit::Stale(_) | Hit::Miss => None,
        }
    }

    /// Any usable cached answer: fresh (source `Cache`) or expired within the serve-stale
    /// window (source `Stale`, TTL `stale_ttl`). Starts no upstream request; meant for when
    /// the server is too busy to forward.
    pub fn stale(&self, name: &DomainName, rtype: RType) -> Option<Answer> {
        match self.lookup_cache(&(name.clone(), rtype)) {
            Hit::Fresh(answer) | Hit::Stale(answer) => Some(answer),
            Hit::Miss => None,
        }
    }

    /// The answer to a question: a fresh cache entry; else the upstream's answer (source
    /// `Upstream`; NXDOMAIN and NODATA are answers too), with identical questions in flight
    /// sharing one request; else, if every upstream failed or did not answer within
    /// `stale_answer_after`, a stale entry (source `Stale`). `Err` only when every upstream
    /// failed and nothing usable is cached.
    pub async fn lookup(&self, name: &DomainName, rtype: RType) -> Result<Answer, UpstreamError> {
        let key = (name.clone(), rtype);
        let stale = match self.lookup_cache(&key) {
            Hit::Fresh(answer) => return Ok(answer),
            Hit::Stale(answer) => Some(answer),
            Hit::Miss => None,
        };
        let request = match self.join_or_start(key) {
            Pending::Ready(answer) => return Ok(answer),
            Pending::Upstream(request) => request,
            Pending::Failed(e) => return stale.ok_or(e),
        };
        let Some(stale) = stale else {
            return request.await;
        };
        // RFC 8767 §5: with stale data at hand, answer it when the refresh fails or is slow;
        // the refresh task keeps running either way.
        let patience = self.inner.settings.load().stale_answer_after;
        match tokio::time::timeout(patience, request).await {
            Ok(Ok(fresh)) => Ok(fresh),
            Ok(Err(e)) => {
                tracing::debug!(%name, %rtype, error = %e, "upstream failed, serving stale");
                Ok(stale)
            }
            Err(_) => {
                tracing::debug!(%name, %rtype, "upstream slow, serving stale while refreshing");
                Ok(stale)
            }
        }
    }

    /// Applies a new upstream config (checked first with [`check_config`]): servers, timeouts, attempts, serve-stale settings and
    /// the cache bound (the cache is kept, trimmed if it shrank). Questions already in flight
    /// finish on the old servers. On error nothing changes.
    pub fn reconfigure(&self, cfg: &UpstreamConfig) -> Result<(), UpstreamError> {
        let settings = Settings::from_config(cfg)?;
        self.inner.settings.store(Arc::new(settings));
        self.inner
            .cache
            .set_capacity(cfg.cache_size, Instant::now());
        Ok(())
    }

    /// Entries in the cache, fresh or stale.
    pub fn cache_len(&self) -> usize {
        self.inner.cache.len()
    }

    fn lookup_cache(&self, key: &Key) -> Hit {
        let stale = self.inner.settings.load().stale;
        self.inner.cache.get(key, Instant::now(), stale)
    }

    /// Joins the upstream request in flight for `key`, or starts one.
    fn join_or_start(&self, key: Key) -> Pending {
        let inner = &self.inner;
        let mut inflight = inner.inflight();
        if let Some((_, request)) = inflight.get(&key) {
            return Pending::Upstream(request.clone());
        }
        // A request may have finished between our cache miss and taking the lock: its task
        // fills the cache before it leaves the map, so this second look closes the gap and
        // an answer is never fetched twice.
        if let Hit::Fresh(answer) = self.lookup_cache(&key) {
            return Pending::Ready(answer);
        }
        // `tokio::spawn` would panic outside a runtime (say, a foreign executor): fail instead.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Pending::Failed(UpstreamError::Other(
                "forwarder used outside a tokio runtime".into(),
            ));
        };
        let generation = inner.generation.fetch_add(1, Ordering::Relaxed);
        let settings = inner.settings.load_full();
        let (task_inner, task_key) = (Arc::clone(inner), key.clone());
        let task = runtime.spawn(async move {
            let guard = InflightGuard {
                inner: task_inner,
                key: task_key,
                generation,
            };
            let inner = &guard.inner;
            let (name, rtype) = &guard.key;
            let result = settings.upstreams.query(name, *rtype, &inner.metrics).await;
            let label = match &result {
                Ok(_) => "ok",
                Err(e) => e.label(),
            };
            inner
                .metrics
                .upstream_requests
                .with_label_values(&[label])
                .inc();
            if let Ok(answer) = &result
                && let Some(ttl) = cache_ttl(answer, *rtype)
            {
                inner
                    .cache
                    .insert(guard.key.clone(), answer.clone(), ttl, Instant::now());
            }
            result
            // `guard` drops here, after the cache is filled: see `join_or_start`.
        });
        let (waiter_inner, waiter_key) = (Arc::clone(inner), key.clone());
        let request: SharedLookup = async move {
            task.await.unwrap_or_else(|e| {
                // Cancelled (runtime shutdown) or panicked: make sure the question is free.
                waiter_inner.finished(&waiter_key, generation);
                Err(UpstreamError::Other(format!("upstream task failed: {e}")))
            })
        }
        .boxed()
        .shared();
        inflight.insert(key, (generation, request.clone()));
        Pending::Upstream(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_bounded() {
        let all = [
            UpstreamError::Timeout,
            UpstreamError::ServFail,
            UpstreamError::Refused,
            UpstreamError::Io("x".into()),
            UpstreamError::Config("x".into()),
            UpstreamError::Other("x".into()),
        ];
        for e in &all {
            assert!(["timeout", "servfail", "refused", "io", "other"].contains(&e.label()));
        }
        assert!(UpstreamError::ServFail.rank() > UpstreamError::Timeout.rank());
    }

    #[test]
    fn forwarder_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Forwarder>();
    }

    #[test]
    fn outside_a_runtime_lookup_fails_instead_of_panicking() {
        let cfg = UpstreamConfig {
            servers: vec!["127.0.0.1:9".parse().unwrap()],
            ..UpstreamConfig::default()
        };
        let f = Forwarder::new(&cfg, Arc::new(Metrics::new())).unwrap();
        let name = DomainName::parse("pbx.example.org").unwrap();
        let mut fut = std::pin::pin!(f.lookup(&name, RType::A));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let std::task::Poll::Ready(got) = fut.as_mut().poll(&mut cx) else {
            panic!("a lookup that cannot start should fail at once")
        };
        assert!(matches!(got, Err(UpstreamError::Other(_))), "{got:?}");
    }

    #[test]
    fn lookups_on_a_shut_down_runtime_fail_and_leave_nothing_in_flight() {
        let (tx, rx) = std::sync::mpsc::channel();
        // In a thread, so that a deadlock fails the test instead of hanging it.
        std::thread::spawn(move || {
            let cfg = UpstreamConfig {
                servers: vec!["127.0.0.1:9".parse().unwrap()],
                ..UpstreamConfig::default()
            };
            let f = Forwarder::new(&cfg, Arc::new(Metrics::new())).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let handle = rt.handle().clone();
            rt.shutdown_background();
            let _entered = handle.enter();
            let name = DomainName::parse("pbx.example.org").unwrap();
            let mut results = Vec::new();
            for _ in 0..2 {
                let mut fut = std::pin::pin!(f.lookup(&name, RType::A));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                if let std::task::Poll::Ready(r) = fut.as_mut().poll(&mut cx) {
                    results.push(r);
                }
            }
            let _ = tx.send((results, f.inner.inflight().len()));
        });
        let (results, inflight) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("lookup deadlocked");
        assert_eq!(results.len(), 2);
        assert!(
            results
                .iter()
                .all(|r| matches!(r, Err(UpstreamError::Other(_))))
        );
        assert_eq!(inflight, 0);
    }

    #[test]
    fn missing_resolv_conf_is_a_config_error() {
        let cfg = UpstreamConfig {
            resolv_conf: "/nonexistent/resolv.conf".into(),
            ..UpstreamConfig::default()
        };
        let err = Forwarder::new(&cfg, Arc::new(Metrics::new())).err();
        assert!(matches!(err, Some(UpstreamError::Config(_))), "{err:?}");
    }
}
