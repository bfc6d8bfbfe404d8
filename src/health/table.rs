//! The target table: one row per target, the only description of the targets. It owns
//! what the prober knows of each target (discovery facts, state machine, probe in flight,
//! last reply), the operator's admin table, and everything derived from them: the
//! published [`HealthSnapshot`], the API's [`TargetInfo`] rows and the `target_up` /
//! `domain_targets_up` gauges.
//!
//! There is one publish path, [`TargetTable::publish`]: the prober calls it after probe
//! verdicts (coalesced) and discoveries, [`TargetTable::set_admin`] after an operator's
//! change. It runs under the table's lock, so the two writers are serialized and neither
//! can lose the other's change; the lock is never held across an `.await`.

use std::{
    collections::{BTreeSet, HashMap},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use rand::RngExt as _;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::time::Instant;

use super::{
    AdminState, Health, HealthHandle, HealthSnapshot, ProbeError, TargetStatus,
    admin::{AdminTable, Drain},
    discover::{Merged, Origin, TargetFacts},
    observer::{AdminCause, Observer, Observers, Transition},
    state::{TargetState, Thresholds, Verdict},
};
use crate::{
    metrics::Metrics,
    record::DomainName,
    target::{TargetKey, Transport},
};

/// What the API shows of one target.
#[derive(Debug, Clone, Serialize)]
pub struct TargetInfo {
    /// `192.0.2.10:5060/udp`.
    #[serde(serialize_with = "display")]
    pub key: TargetKey,
    /// The host name probed (SRV target, SIP domain or fallback host), or the address.
    pub host: String,
    /// The SIP domains this target serves.
    pub domains: Vec<DomainName>,
    /// Where it came from (the first of its origins).
    pub origin: Origin,
    /// True for fallback (survivability) targets.
    pub fallback: bool,
    /// Probe verdict.
    pub health: Health,
    /// Operator state.
    pub admin: AdminState,
    /// Code of the last final reply, if the last probe got one.
    pub last_code: Option<u16>,
    /// Round-trip time of the last answered probe, milliseconds.
    pub rtt_ms: Option<f64>,
    /// Unix time (seconds) of the last health change, or of discovery.
    pub since: u64,
    /// Health transitions so far (`unknown -> up` not counted).
    pub transitions: u64,
    /// Why the health is what it is (the last transition's reason, or the last verdict).
    pub last_reason: String,
    /// The drain's end, note and author, when drained with any.
    pub drain: Option<Drain>,
}

fn display<S: serde::Serializer>(k: &TargetKey, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(k)
}

/// One target.
struct Entry {
    facts: TargetFacts,
    state: TargetState,
    /// Generation of the scheduled probe timer (older timers are stale).
    epoch: u64,
    /// Id of the probe in flight.
    in_flight: Option<u64>,
    /// When the probe in flight (or the last one) started.
    started: Instant,
    cseq: u32,
    last_code: Option<u16>,
    last_rtt: Option<Duration>,
    /// The value `target_up` was last set to (`None`: not yet).
    gauge: Option<bool>,
}

/// What a probe needs to know of its target, handed out by [`TargetTable::begin`].
pub(crate) struct ProbeStart {
    /// Where to send it.
    pub(crate) dest: SocketAddr,
    /// The CSeq number of this probe.
    pub(crate) cseq: u32,
    /// Request-URI host.
    pub(crate) uri_host: String,
    /// TLS server name (TLS targets only).
    pub(crate) sni: Option<ServerName<'static>>,
}

/// A finished probe, as [`TargetTable::finish`] reports it.
pub(crate) struct Finished {
    /// When the probe started (the next one is due an interval later).
    pub(crate) started: Instant,
    /// The generation the next probe timer must carry.
    pub(crate) epoch: u64,
    /// True if the target's health changed (a snapshot is due).
    pub(crate) changed: bool,
}

/// What [`TargetTable::apply`] changed.
pub(crate) struct Applied {
    /// New targets (to probe soon).
    pub(crate) added: Vec<TargetKey>,
    /// Targets that are gone (their probes in flight are moot).
    pub(crate) gone: Vec<TargetKey>,
    /// True if what answers are built from changed (a snapshot is due).
    pub(crate) changed: bool,
}

struct Rows {
    targets: HashMap<TargetKey, Entry>,
    admin: AdminTable,
    by_host: Arc<HashMap<DomainName, Vec<TargetKey>>>,
    host_domain: Arc<HashMap<DomainName, DomainName>>,
    /// Domains with a `sipdns_domain_targets_up` series, so gone ones are removed.
    domain_series: BTreeSet<String>,
}

/// The target table (see the module documentation). Shared by the prober task and the
/// API's handle.
pub(crate) struct TargetTable {
    rows: Mutex<Rows>,
    health: HealthHandle,
    metrics: Arc<Metrics>,
    state_file: Option<PathBuf>,
    /// The status page's history and the webhooks; told outside the lock.
    observers: Observers,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock cannot leave the rows half-updated in a way that
    // matters more than stopping health checks would; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl TargetTable {
    /// An empty table publishing into `health`.
    pub(crate) fn new(
        admin: AdminTable,
        state_file: Option<PathBuf>,
        health: HealthHandle,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            rows: Mutex::new(Rows {
                targets: HashMap::new(),
                admin,
                by_host: Arc::default(),
                host_domain: Arc::default(),
                domain_series: BTreeSet::new(),
            }),
            health,
            metrics,
            state_file,
            observers: Observers::default(),
        }
    }

    /// Tells `o` of every probe, transition and admin change from now on.
    pub(crate) fn observe(&self, o: Arc<dyn Observer>) {
        self.observers.add(o);
    }

    /// Number of targets.
    pub(crate) fn len(&self) -> usize {
        lock(&self.rows).targets.len()
    }

    /// Makes the table hold exactly the merged targets: gone ones dropped, new ones added
    /// (unknown, not probed yet), the facts of known ones refreshed; health is kept.
    pub(crate) fn apply(&self, merged: Merged, now: Instant) -> Applied {
        let Merged {
            targets,
            by_host,
            host_domain,
            ..
        } = merged;
        let mut rows = lock(&self.rows);
        let gone: Vec<TargetKey> = rows
            .targets
            .keys()
            .filter(|k| !targets.contains_key(k))
            .copied()
            .collect();
        for key in &gone {
            rows.targets.remove(key);
            let _ = self
                .metrics
                .target_up
                .remove_label_values(&[&key.to_string()]);
        }
        let mut added = Vec::new();
        for (key, facts) in targets {
            if let Some(e) = rows.targets.get_mut(&key) {
                e.facts = facts;
                continue;
            }
            rows.targets.insert(
                key,
                Entry {
                    facts,
                    state: TargetState::new(now),
                    epoch: 0,
                    in_flight: None,
                    started: now,
                    cseq: rand::rng().random_range(1..10_000),
                    last_code: None,
                    last_rtt: None,
                    gauge: None,
                },
            );
            added.push(key);
        }
        // A new snapshot only if what answers are built from changed: a new generation
        // empties the DNS answer cache, and rediscovery runs every time records expire.
        let changed = !added.is_empty()
            || !gone.is_empty()
            || *rows.by_host != by_host
            || *rows.host_domain != host_domain;
        rows.by_host = Arc::new(by_host);
        rows.host_domain = Arc::new(host_domain);
        self.metrics
            .targets
            .set(i64::try_from(rows.targets.len()).unwrap_or(i64::MAX));
        Applied {
            added,
            gone,
            changed,
        }
    }

    /// Every target key.
    pub(crate) fn keys(&self) -> Vec<TargetKey> {
        lock(&self.rows).targets.keys().copied().collect()
    }

    /// Marks probe `id` of `key` in flight if the timer's `epoch` is current and no probe
    /// is; returns what the probe needs.
    pub(crate) fn begin(
        &self,
        key: &TargetKey,
        epoch: u64,
        id: u64,
        now: Instant,
    ) -> Option<ProbeStart> {
        let mut rows = lock(&self.rows);
        let e = rows.targets.get_mut(key)?;
        if e.epoch != epoch || e.in_flight.is_some() {
            return None;
        }
        e.cseq = e.cseq.wrapping_add(1).max(1);
        e.in_flight = Some(id);
        e.started = now;
        let sni = (key.transport == Transport::Tls)
            .then(|| sni(&e.facts, key))
            .flatten();
        Some(ProbeStart {
            dest: SocketAddr::new(key.ip, key.port),
            cseq: e.cseq,
            uri_host: e.facts.uri_host(key.ip),
            sni,
        })
    }

    /// Records the verdict of probe `id` of `key`: metrics, state machine, last reply;
    /// then tells the observers. `None` if that probe is not the one in flight (a late
    /// verdict of a dropped target).
    pub(crate) fn finish(
        &self,
        key: &TargetKey,
        id: u64,
        v: &Verdict,
        now: Instant,
        th: &Thresholds,
    ) -> Option<Finished> {
        let mut rows = lock(&self.rows);
        let e = rows.targets.get_mut(key)?;
        if e.in_flight != Some(id) {
            return None;
        }
        e.in_flight = None;
        let transport = key.transport.as_str();
        let metrics = &self.metrics;
        metrics
            .probes
            .with_label_values(&[transport, v.label()])
            .inc();
        let rtt = match v {
            Verdict::Good { code, rtt } => {
                metrics
                    .probe_rtt
                    .with_label_values(&[transport])
                    .observe(rtt.as_secs_f64());
                e.last_code = Some(*code);
                e.last_rtt = Some(*rtt);
                Some(*rtt)
            }
            Verdict::Bad { code, .. } => {
                e.last_code = *code;
                None
            }
        };
        tracing::trace!(target = %key, verdict = %v.describe(), "probe done");
        let mut changed = false;
        // A real transition, for the observers: (from, to, reason, host).
        let mut told = None;
        if let Some(t) = e.state.observe(v, now, th) {
            if t.is_real() {
                let to = match t.to {
                    Health::Up => "up",
                    Health::Down => "down",
                    Health::Unknown => "unknown",
                };
                metrics.target_transitions.with_label_values(&[to]).inc();
                tracing::info!(event = "transition", target = %key, host = %e.facts.host, from = ?t.from, to = ?t.to, reason = %t.reason, "target health changed");
                told = Some((t.from, t.to, t.reason, e.facts.uri_host(key.ip)));
            } else {
                tracing::debug!(target = %key, reason = %t.reason, "target answered its first probe");
            }
            changed = true;
        }
        e.epoch += 1;
        let (health, good) = (e.state.health(), matches!(v, Verdict::Good { .. }));
        let done = Finished {
            started: e.started,
            epoch: e.epoch,
            changed,
        };
        drop(rows);
        if let Some((from, to, reason, host)) = &told {
            self.observers.each(|o| {
                o.transition(&Transition {
                    key,
                    host,
                    from: *from,
                    to: *to,
                    reason,
                });
            });
        }
        self.observers.each(|o| o.probed(key, good, health, rtt));
        Some(done)
    }

    /// Builds and stores a new snapshot from the rows, and brings the gauges in line.
    pub(crate) fn publish(&self) {
        let mut rows = lock(&self.rows);
        self.publish_locked(&mut rows);
    }

    /// The one publish path (under the lock: see the module documentation). O(targets);
    /// `target_up` is set only for targets whose value changed.
    fn publish_locked(&self, rows: &mut Rows) {
        let Rows {
            targets,
            admin,
            by_host,
            host_domain,
            domain_series,
        } = rows;
        let mut status = HashMap::with_capacity(targets.len());
        let mut up_by_domain: HashMap<&DomainName, i64> = HashMap::new();
        for (key, e) in targets.iter_mut() {
            let s = TargetStatus {
                health: e.state.health(),
                admin: admin.get(key),
            };
            let usable = s.is_usable();
            if e.gauge != Some(usable) {
                self.metrics
                    .target_up
                    .with_label_values(&[&key.to_string()])
                    .set(i64::from(usable));
                e.gauge = Some(usable);
            }
            if !e.facts.fallback {
                for d in &e.facts.domains {
                    *up_by_domain.entry(d).or_default() += i64::from(usable);
                }
            }
            status.insert(*key, s);
        }
        // Labelled as the domain is written in the config: without the trailing dot.
        let up: HashMap<String, i64> = up_by_domain
            .into_iter()
            .map(|(d, n)| (d.as_str().trim_end_matches('.').to_owned(), n))
            .collect();
        let generation = self.health.load().generation + 1;
        self.health.store(HealthSnapshot {
            generation,
            targets: Arc::new(status),
            by_host: by_host.clone(),
            host_domain: host_domain.clone(),
        });
        for gone in domain_series.iter().filter(|d| !up.contains_key(*d)) {
            let _ = self
                .metrics
                .domain_targets_up
                .remove_label_values(&[gone.as_str()]);
        }
        for (d, n) in &up {
            self.metrics
                .domain_targets_up
                .with_label_values(&[d.as_str()])
                .set(*n);
        }
        *domain_series = up.into_keys().collect();
    }

    /// Every known target with its state, sorted by key.
    pub(crate) fn rows(&self) -> Vec<TargetInfo> {
        let rows = lock(&self.rows);
        let (now, wall) = (Instant::now(), SystemTime::now());
        let mut out: Vec<TargetInfo> = rows
            .targets
            .iter()
            .map(|(key, e)| {
                let age = now.saturating_duration_since(e.state.since());
                let since = wall
                    .checked_sub(age)
                    .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_secs());
                TargetInfo {
                    key: *key,
                    host: e.facts.uri_host(key.ip),
                    domains: e.facts.domains.iter().cloned().collect(),
                    origin: e.facts.origin,
                    fallback: e.facts.fallback,
                    health: e.state.health(),
                    admin: rows.admin.get(key),
                    drain: rows.admin.drain_of(key).cloned(),
                    last_code: e.last_code,
                    rtt_ms: e.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
                    since,
                    transitions: e.state.transitions(),
                    last_reason: e.state.last_reason().to_owned(),
                }
            })
            .collect();
        drop(rows);
        out.sort_by_key(|r| r.key);
        out
    }

    /// Drains or enables a target, with the drain's details (`Drained` only) and the
    /// cause, which observers are told. The change is written to the state file first (if
    /// one is configured; a write error changes nothing) and is in the published snapshot
    /// when this returns. Blocking file I/O.
    pub(crate) fn set_admin(
        &self,
        key: &TargetKey,
        state: AdminState,
        drain: Option<Drain>,
        cause: AdminCause,
    ) -> Result<(), ProbeError> {
        let mut rows = lock(&self.rows);
        if !rows.targets.contains_key(key) && !rows.admin.contains(key) {
            return Err(ProbeError::UnknownTarget(*key));
        }
        let mut next = rows.admin.clone();
        let changed = match (state, drain) {
            (AdminState::Drained, Some(d)) => next.drain(*key, d),
            (state, _) => next.set(*key, state),
        };
        if !changed {
            return Ok(());
        }
        let details = next.drain_of(key).cloned();
        if let Some(path) = &self.state_file {
            next.save(path)?;
        }
        rows.admin = next;
        self.publish_locked(&mut rows);
        drop(rows);
        let (until, note, by) = details.as_ref().map_or((None, None, None), |d| {
            (
                d.until
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                d.note.as_deref(),
                d.by.as_deref(),
            )
        });
        tracing::info!(event = "admin", target = %key, admin = ?state, ?cause, until, note, by, "target admin state changed");
        self.observers
            .each(|o| o.admin(key, state, details.as_ref(), cause));
        Ok(())
    }

    /// The earliest end of a timed drain.
    pub(crate) fn next_drain_end(&self) -> Option<SystemTime> {
        lock(&self.rows).admin.next_end()
    }

    /// The targets whose timed drain has ended at `now`.
    pub(crate) fn drains_ended(&self, now: SystemTime) -> Vec<TargetKey> {
        lock(&self.rows).admin.ended(now)
    }
}

/// The TLS server name: the host name, or the address.
fn sni(facts: &TargetFacts, key: &TargetKey) -> Option<ServerName<'static>> {
    if facts.named {
        ServerName::try_from(facts.host.as_str().trim_end_matches('.').to_owned()).ok()
    } else {
        Some(ServerName::IpAddress(key.ip.into()))
    }
}
