//! The prober task: discovers targets, sends one SIP OPTIONS per target per interval,
//! matches replies, feeds the state machine and publishes the health snapshot.
//!
//! # Design
//!
//! - **One task, one timer heap.** Every pending event (next probe of a target, UDP
//!   retransmission, probe deadline) sits in one `BinaryHeap` ordered by due time, and the
//!   task sleeps until the earliest (`sleep_until` in a `select!` with the shutdown token,
//!   as pingora's `background.rs` loop does). 5,000 targets at 1 s are ~15,000 heap
//!   operations a second: cheaper than 5,000 sleeping tasks, and simpler than a
//!   `DelayQueue` because stale entries are just skipped (each carries a generation).
//! - **UDP**: all probes share one socket per address family. Replies are matched by
//!   Via branch, Call-ID and CSeq against the outstanding probes; anything else is counted
//!   in `sipdns_probe_unmatched_total` and ignored. Retransmissions follow RFC 3261
//!   §17.1.2.2 (Timer E: T1 = 500 ms doubling, capped at T2 = 4 s) until `timeout`
//!   (Timer F); a provisional reply stops them. A timeout is a local verdict with no code,
//!   so it can never be mistaken for a reply.
//! - **TCP/TLS**: one short-lived connection per probe, run as its own task in a
//!   `JoinSet` (connect, send, read the final reply, close). A fresh connection each time
//!   also checks that the server still accepts connections, which a reused one would not.
//! - **Publishing**: the task owns the state; after a status change it publishes a new
//!   immutable [`HealthSnapshot`] through `ArcSwap`, so the DNS path reads it with one
//!   atomic load. Changes closer together than [`PUBLISH_GAP`] are coalesced into one
//!   snapshot (at 5,000 targets a snapshot costs ~5,000 map inserts).
//! - **Admin state** is changed from the API's thread by [`ProberHandle::set_admin`]: it
//!   persists the state file and patches the snapshot under the same lock the task holds
//!   while publishing, so neither can lose the other's change.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, BinaryHeap, HashMap, HashSet},
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, SystemTime},
};

use arc_swap::ArcSwap;
use rand::RngExt as _;
use rustls::pki_types::ServerName;
use serde::Serialize;
use tokio::{
    net::UdpSocket,
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep_until},
};
use tokio_rustls::TlsConnector;

use super::{
    AdminState, Health, HealthSnapshot, ProbeError, TargetStatus,
    admin::{AdminTable, Drain},
    discover::{self, Discovery, Found, Lookup, Origin},
    observer::{AdminCause, Observer, Observers, Transition},
    sip::{self, ProbeIds},
    state::{BadReason, TargetState, Thresholds, Verdict},
    transport,
};
use crate::{
    config::{ProbeConfig, SipConfig},
    metrics::Metrics,
    record::DomainName,
    shutdown::CancellationToken,
    target::{TargetKey, Transport},
};

/// RFC 3261 §17.1.1.1: T1, the RTT estimate and first retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.1.1: T2, the cap on the non-INVITE retransmission interval.
pub const T2: Duration = Duration::from_secs(4);
/// Status changes closer together than this are published as one snapshot.
pub const PUBLISH_GAP: Duration = Duration::from_millis(10);
/// The first probes of new targets are spread over at most this long.
const FIRST_SPREAD: Duration = Duration::from_secs(1);
/// Timer events handled per wake-up before the task looks at its other inputs.
const TIMER_BATCH: usize = 4096;

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

/// Starts the prober.
pub struct Prober;

/// State shared between the task and the handles.
struct Shared {
    snapshot: Arc<ArcSwap<HealthSnapshot>>,
    /// The admin table. Held while a snapshot is built and stored (task) or patched
    /// (`set_admin`), so the two writers are serialized; never held across an `.await`.
    admin: Mutex<AdminTable>,
    state_file: Option<PathBuf>,
    /// Rows for [`ProberHandle::targets`]; updated by the task per probe (O(1), no await
    /// while held).
    info: Mutex<HashMap<TargetKey, TargetInfo>>,
    metrics: Arc<Metrics>,
    /// Domains with a `sipdns_domain_targets_up` series, so gone ones are removed.
    domain_series: Mutex<BTreeSet<String>>,
    /// The status page's history and the webhooks.
    observers: Observers,
}

impl Shared {
    /// Sets `sipdns_domain_targets_up` from `targets` (the snapshot just stored) and the
    /// API rows (which domains a target serves, whether it is a fallback). O(targets), as
    /// building the snapshot is.
    fn update_domain_gauges(&self, targets: &HashMap<TargetKey, TargetStatus>) {
        let up: HashMap<String, i64> = {
            let info = lock(&self.info);
            let mut by_domain: HashMap<&DomainName, i64> = HashMap::new();
            for (key, row) in info.iter().filter(|(_, row)| !row.fallback) {
                let usable = targets.get(key).is_some_and(TargetStatus::is_usable);
                for d in &row.domains {
                    *by_domain.entry(d).or_default() += i64::from(usable);
                }
            }
            // Labelled as the domain is written in the config: without the trailing dot.
            by_domain
                .into_iter()
                .map(|(d, n)| (d.as_str().trim_end_matches('.').to_owned(), n))
                .collect()
        };
        let mut published = lock(&self.domain_series);
        for gone in published.iter().filter(|d| !up.contains_key(*d)) {
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
        *published = up.into_keys().collect();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding one of these locks cannot leave the data half-updated in a
    // way that matters more than stopping health checks would; keep going.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The app's handle on the running prober.
#[derive(Clone)]
pub struct ProberHandle {
    shared: Arc<Shared>,
    ready: watch::Receiver<bool>,
    config: Arc<watch::Sender<Arc<SipConfig>>>,
}

impl Prober {
    /// Loads the admin state file, starts discovery and probing, and returns the handle.
    /// Must be called inside a tokio runtime. Both tasks stop when `shutdown` is
    /// cancelled.
    pub fn spawn(
        cfg: &SipConfig,
        lookup: Arc<dyn Lookup>,
        metrics: Arc<Metrics>,
        state_file: Option<PathBuf>,
        shutdown: CancellationToken,
    ) -> Result<ProberHandle, ProbeError> {
        let admin = match &state_file {
            Some(p) => AdminTable::load_at_start(p, &metrics),
            None => AdminTable::default(),
        };
        let tls = transport::tls_connector(&cfg.probe.tls)?;
        let cfg = Arc::new(cfg.clone());
        let (config_tx, config_rx) = watch::channel(cfg.clone());
        let (ready_tx, ready_rx) = watch::channel(false);
        let (disc_tx, disc_rx) = mpsc::channel(2);
        let shared = Arc::new(Shared {
            snapshot: Arc::new(ArcSwap::from_pointee(HealthSnapshot::default())),
            admin: Mutex::new(admin),
            state_file,
            info: Mutex::new(HashMap::new()),
            metrics,
            domain_series: Mutex::new(BTreeSet::new()),
            observers: Observers::default(),
        });
        let engine = Engine {
            shared: shared.clone(),
            probe: cfg.probe.clone(),
            th: Thresholds::from_config(&cfg.probe),
            tls,
            targets: HashMap::new(),
            last_found: HashMap::new(),
            by_host: Arc::new(HashMap::new()),
            host_domain: Arc::new(HashMap::new()),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            udp: HashMap::new(),
            by_branch: HashMap::new(),
            udp4: None,
            udp6: None,
            sources: HashMap::new(),
            streams: JoinSet::new(),
            next_probe_id: 1,
            dirty: false,
            last_publish: None,
            first_round: None,
            ready: ready_tx,
            grace_until: Instant::now() + cfg.probe.startup_grace,
        };
        tokio::spawn(discovery_task(
            config_rx.clone(),
            lookup,
            disc_tx,
            shutdown.clone(),
        ));
        tokio::spawn(engine.run(config_rx, disc_rx, shutdown.clone()));
        let handle = ProberHandle {
            shared,
            ready: ready_rx,
            config: Arc::new(config_tx),
        };
        let (h1, h2) = (handle.clone(), handle.clone());
        tokio::spawn(super::admin::end_drains(
            move || h1.next_drain_end(),
            move |now| h2.end_drains(now),
            shutdown,
        ));
        Ok(handle)
    }
}

impl ProberHandle {
    /// The health table the DNS path reads (one atomic load per query).
    pub fn snapshot(&self) -> Arc<ArcSwap<HealthSnapshot>> {
        self.shared.snapshot.clone()
    }

    /// Becomes true once every target found by the first discovery has been probed once,
    /// or `startup_grace` has passed.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Every known target with its state, sorted by key.
    pub fn targets(&self) -> Vec<TargetInfo> {
        let admin = lock(&self.shared.admin).clone();
        let mut rows: Vec<TargetInfo> = lock(&self.shared.info)
            .values()
            .cloned()
            .map(|mut r| {
                r.admin = admin.get(&r.key);
                r.drain = admin.drain_of(&r.key).cloned();
                r
            })
            .collect();
        rows.sort_by_key(|r| r.key);
        rows
    }

    /// Drains or enables a target. The change is written to the state file first (if one
    /// is configured; a write error changes nothing) and is in the published snapshot when
    /// this returns. Blocking file I/O: call it from `spawn_blocking` if that matters.
    pub fn set_admin(&self, key: &TargetKey, state: AdminState) -> Result<(), ProbeError> {
        self.set_admin_with(key, state, None, AdminCause::Api)
    }

    /// Tells `o` of every probe, transition and admin change from now on.
    pub fn observe(&self, o: Arc<dyn Observer>) {
        self.shared.observers.add(o);
    }

    /// The earliest end of a timed drain.
    pub fn next_drain_end(&self) -> Option<SystemTime> {
        lock(&self.shared.admin).next_end()
    }

    /// Enables every target whose timed drain has ended at `now`.
    pub fn end_drains(&self, now: SystemTime) {
        let ended = lock(&self.shared.admin).ended(now);
        for key in ended {
            if let Err(e) =
                self.set_admin_with(&key, AdminState::Enabled, None, AdminCause::Expired)
            {
                tracing::error!(target = %key, error = %e, "cannot end a timed drain; retrying");
            }
        }
    }

    /// [`Self::set_admin`] with the drain's details (`Drained` only) and the cause, which
    /// observers are told.
    pub fn set_admin_with(
        &self,
        key: &TargetKey,
        state: AdminState,
        drain: Option<Drain>,
        cause: AdminCause,
    ) -> Result<(), ProbeError> {
        let known = lock(&self.shared.info).contains_key(key);
        let mut admin = lock(&self.shared.admin);
        if !known && !admin.contains(key) {
            return Err(ProbeError::UnknownTarget(*key));
        }
        let mut next = admin.clone();
        let changed = match (state, drain) {
            (AdminState::Drained, Some(d)) => next.drain(*key, d),
            (state, _) => next.set(*key, state),
        };
        if !changed {
            return Ok(());
        }
        let details = next.drain_of(key).cloned();
        if let Some(path) = &self.shared.state_file {
            next.save(path)?;
        }
        *admin = next;
        let current = self.shared.snapshot.load_full();
        let mut targets = (*current.targets).clone();
        let status = targets.entry(*key).or_insert(TargetStatus::UNKNOWN);
        status.admin = state;
        let usable = status.is_usable();
        let targets = Arc::new(targets);
        self.shared.snapshot.store(Arc::new(HealthSnapshot {
            generation: current.generation + 1,
            targets: targets.clone(),
            by_host: current.by_host.clone(),
            host_domain: current.host_domain.clone(),
        }));
        drop(admin);
        self.shared.update_domain_gauges(&targets);
        if let Some(row) = lock(&self.shared.info).get_mut(key) {
            row.admin = state;
        }
        if known {
            self.shared
                .metrics
                .target_up
                .with_label_values(&[&key.to_string()])
                .set(i64::from(usable));
        }
        let (until, note, by) = details.as_ref().map_or((None, None, None), |d| {
            (
                d.until
                    .map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                d.note.as_deref(),
                d.by.as_deref(),
            )
        });
        tracing::info!(event = "admin", target = %key, admin = ?state, ?cause, until, note, by, "target admin state changed");
        self.shared
            .observers
            .each(|o| o.admin(key, state, details.as_ref(), cause));
        Ok(())
    }

    /// Applies a new SIP config (hot reload): thresholds, timing and TLS settings take
    /// effect at once, domains are rediscovered now. Health of targets that remain is kept.
    pub fn reconfigure(&self, cfg: &SipConfig) {
        self.config.send_replace(Arc::new(cfg.clone()));
    }
}

/// Rediscovers targets whenever the records' TTLs expire or the config changes.
async fn discovery_task(
    mut config: watch::Receiver<Arc<SipConfig>>,
    lookup: Arc<dyn Lookup>,
    out: mpsc::Sender<Discovery>,
    shutdown: CancellationToken,
) {
    loop {
        let cfg = config.borrow_and_update().clone();
        let mut found = tokio::select! {
            () = shutdown.cancelled() => return,
            d = discover::discover(&cfg, &*lookup) => d,
        };
        for d in &mut found.domains {
            d.found
                .retain(|f| !discover::is_documentation(f.target.key.ip));
        }
        let refresh = found.refresh_in;
        tokio::select! {
            () = shutdown.cancelled() => return,
            sent = out.send(found) => if sent.is_err() { return },
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = config.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(refresh) => {}
        }
    }
}

/// An outstanding UDP probe.
struct UdpProbe {
    key: TargetKey,
    id: u64,
    ids: ProbeIds,
    bytes: Arc<[u8]>,
    dest: SocketAddr,
    sent: Instant,
    rto: Duration,
    deadline: Instant,
    provisional: bool,
}

/// One target as the task tracks it.
struct Entry {
    origin: Origin,
    named: bool,
    host: DomainName,
    hosts: BTreeSet<DomainName>,
    domains: BTreeSet<DomainName>,
    fallback: bool,
    state: TargetState,
    /// Generation of the scheduled probe timer (older heap entries are stale).
    epoch: u64,
    /// Id of the probe in flight.
    in_flight: Option<u64>,
    /// When the probe in flight (or the last one) started.
    started: Instant,
    cseq: u32,
    last_code: Option<u16>,
    last_rtt: Option<Duration>,
}

impl Entry {
    fn uri_host(&self, key: &TargetKey) -> String {
        if self.named {
            self.host.as_str().trim_end_matches('.').to_owned()
        } else {
            match key.ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            }
        }
    }

    fn sni(&self, key: &TargetKey) -> Option<ServerName<'static>> {
        if self.named {
            ServerName::try_from(self.host.as_str().trim_end_matches('.').to_owned()).ok()
        } else {
            Some(ServerName::IpAddress(key.ip.into()))
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Start the next probe of a target (if the generation still matches).
    Probe(TargetKey, u64),
    /// Retransmit a UDP probe.
    Retransmit(u64),
    /// A UDP probe's deadline.
    Deadline(u64),
}

struct Engine {
    shared: Arc<Shared>,
    probe: ProbeConfig,
    th: Thresholds,
    tls: TlsConnector,
    targets: HashMap<TargetKey, Entry>,
    /// The last discovery result per domain (kept for domains whose lookups fail).
    last_found: HashMap<DomainName, Vec<Found>>,
    by_host: Arc<HashMap<DomainName, Vec<TargetKey>>>,
    host_domain: Arc<HashMap<DomainName, DomainName>>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    udp: HashMap<u64, UdpProbe>,
    by_branch: HashMap<String, u64>,
    udp4: Option<Arc<UdpSocket>>,
    udp6: Option<Arc<UdpSocket>>,
    /// Source address per destination, for Via/Contact of UDP probes.
    sources: HashMap<IpAddr, IpAddr>,
    streams: JoinSet<(TargetKey, u64, Verdict)>,
    next_probe_id: u64,
    dirty: bool,
    last_publish: Option<Instant>,
    /// Targets of the first discovery not probed yet (`None` before the first discovery).
    first_round: Option<HashSet<TargetKey>>,
    ready: watch::Sender<bool>,
    grace_until: Instant,
}

async fn recv_opt(
    sock: Option<&Arc<UdpSocket>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl Engine {
    async fn run(
        mut self,
        mut config: watch::Receiver<Arc<SipConfig>>,
        mut discoveries: mpsc::Receiver<Discovery>,
        shutdown: CancellationToken,
    ) {
        let mut buf4 = vec![0u8; 65_535];
        let mut buf6 = vec![0u8; 65_535];
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let publish_at = self.dirty.then(|| {
                self.last_publish
                    .map_or_else(Instant::now, |t| t + PUBLISH_GAP)
            });
            let waiting_ready = !*self.ready.borrow();
            let (s4, s6) = (self.udp4.clone(), self.udp6.clone());
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = config.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let cfg = config.borrow_and_update().clone();
                    self.reconfigure(&cfg);
                }
                Some(d) = discoveries.recv() => self.apply_discovery(d),
                r = recv_opt(s4.as_ref(), &mut buf4) => self.on_udp(s4.as_ref(), r, &buf4),
                r = recv_opt(s6.as_ref(), &mut buf6) => self.on_udp(s6.as_ref(), r, &buf6),
                Some(done) = self.streams.join_next(), if !self.streams.is_empty() => {
                    if let Ok((key, id, verdict)) = done {
                        self.finish(key, id, verdict);
                    }
                }
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    self.fire_timers().await;
                }
                () = sleep_until(publish_at.unwrap_or_else(Instant::now)), if publish_at.is_some() => {
                    self.publish();
                }
                () = sleep_until(self.grace_until), if waiting_ready => {
                    if !*self.ready.borrow() {
                        tracing::info!("startup grace passed before the first probe round finished; reporting ready");
                        self.ready.send_replace(true);
                    }
                }
            }
            if self.dirty && self.last_publish.is_none_or(|t| t.elapsed() >= PUBLISH_GAP) {
                self.publish();
            }
        }
        self.streams.abort_all();
    }

    fn reconfigure(&mut self, cfg: &SipConfig) {
        match transport::tls_connector(&cfg.probe.tls) {
            Ok(tls) => self.tls = tls,
            Err(e) => {
                tracing::error!(error = %e, "new TLS probe settings rejected; keeping the old ones");
            }
        }
        self.probe = cfg.probe.clone();
        self.th = Thresholds::from_config(&cfg.probe);
        tracing::info!("probe settings reloaded");
    }

    fn schedule(&mut self, at: Instant, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, t)));
    }

    fn jittered_interval(&self) -> Duration {
        // ±10 % so probes of targets found together drift apart (CoreDNS reload jitter).
        self.probe
            .interval
            .mul_f64(rand::rng().random_range(0.9..=1.1))
    }

    fn apply_discovery(&mut self, d: Discovery) {
        let now = Instant::now();
        // Merge per key: a target may serve several domains and have several names.
        let mut merged: HashMap<TargetKey, Vec<Found>> = HashMap::new();
        for dom in d.domains {
            let found = if dom.complete {
                dom.found
            } else {
                // Some lookups failed: keep what this domain had, add what was found.
                let mut keep = self
                    .last_found
                    .get(&dom.domain)
                    .cloned()
                    .unwrap_or_default();
                let mut seen: HashSet<Found> = keep.iter().cloned().collect();
                for f in dom.found {
                    if seen.insert(f.clone()) {
                        keep.push(f);
                    }
                }
                keep
            };
            for f in &found {
                merged.entry(f.target.key).or_default().push(f.clone());
            }
            self.last_found.insert(dom.domain, found);
        }
        self.last_found
            .retain(|dom, _| merged.values().flatten().any(|f| &f.target.domain == dom));

        // Drop targets that disappeared.
        let gone: Vec<TargetKey> = self
            .targets
            .keys()
            .filter(|k| !merged.contains_key(k))
            .copied()
            .collect();
        for key in &gone {
            if let Some(e) = self.targets.remove(key)
                && let Some(id) = e.in_flight
                && let Some(p) = self.udp.remove(&id)
            {
                self.by_branch.remove(&p.ids.branch);
            }
            lock(&self.shared.info).remove(key);
            let _ = self
                .shared
                .metrics
                .target_up
                .remove_label_values(&[&key.to_string()]);
            tracing::info!(target = %key, "target no longer in DNS or config; dropped");
        }

        // Add new ones, refresh the names of known ones.
        let spread = self.probe.interval.min(FIRST_SPREAD);
        let mut by_host: HashMap<DomainName, Vec<TargetKey>> = HashMap::new();
        let mut host_domain: HashMap<DomainName, DomainName> = HashMap::new();
        let mut added = Vec::new();
        for (key, founds) in &merged {
            let Some(first) = founds.iter().min_by_key(|f| (!f.named, f.origin)) else {
                continue;
            };
            let hosts: BTreeSet<DomainName> = founds
                .iter()
                .filter(|f| f.named)
                .map(|f| f.target.host.clone())
                .collect();
            let domains: BTreeSet<DomainName> =
                founds.iter().map(|f| f.target.domain.clone()).collect();
            for h in &hosts {
                by_host.entry(h.clone()).or_default().push(*key);
                if let Some(d) = domains.first() {
                    host_domain.entry(h.clone()).or_insert_with(|| d.clone());
                }
            }
            let fallback = founds.iter().any(|f| f.target.fallback);
            match self.targets.get_mut(key) {
                Some(e) => {
                    e.origin = first.origin;
                    e.named = first.named;
                    e.host = first.target.host.clone();
                    e.hosts = hosts;
                    e.domains = domains;
                    e.fallback = fallback;
                }
                None => {
                    let entry = Entry {
                        origin: first.origin,
                        named: first.named,
                        host: first.target.host.clone(),
                        hosts,
                        domains,
                        fallback,
                        state: TargetState::new(now),
                        epoch: 0,
                        in_flight: None,
                        started: now,
                        cseq: rand::rng().random_range(1..10_000),
                        last_code: None,
                        last_rtt: None,
                    };
                    self.targets.insert(*key, entry);
                    added.push(*key);
                    let delay = spread.mul_f64(rand::rng().random_range(0.0..1.0));
                    self.schedule(now + delay, Timer::Probe(*key, 0));
                    self.shared
                        .metrics
                        .target_up
                        .with_label_values(&[&key.to_string()])
                        .set(i64::from(
                            lock(&self.shared.admin).get(key) == AdminState::Enabled,
                        ));
                }
            }
            self.update_info(key);
        }
        for keys in by_host.values_mut() {
            keys.sort();
        }
        if !added.is_empty() {
            tracing::info!(
                added = added.len(),
                total = self.targets.len(),
                "new targets to probe"
            );
        }
        // A new snapshot only if what answers are built from changed: a new generation
        // empties the DNS answer cache, and rediscovery runs every time records expire.
        let changed = !added.is_empty()
            || !gone.is_empty()
            || *self.by_host != by_host
            || *self.host_domain != host_domain;
        self.by_host = Arc::new(by_host);
        self.host_domain = Arc::new(host_domain);
        self.shared
            .metrics
            .targets
            .set(i64::try_from(self.targets.len()).unwrap_or(i64::MAX));
        if self.sources.len() > 2 * self.targets.len() + 16 {
            self.sources.clear();
        }
        if self.first_round.is_none() {
            let pending: HashSet<TargetKey> = self.targets.keys().copied().collect();
            self.first_round = Some(pending);
            self.check_ready();
        }
        if changed {
            self.dirty = true;
        }
    }

    fn check_ready(&mut self) {
        if let Some(p) = &self.first_round
            && p.is_empty()
            && !*self.ready.borrow()
        {
            tracing::info!(targets = self.targets.len(), "first probe round done");
            self.ready.send_replace(true);
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        for _ in 0..TIMER_BATCH {
            match self.timers.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Probe(key, epoch) => self.start_probe(key, epoch).await,
                Timer::Retransmit(id) => self.retransmit(id).await,
                Timer::Deadline(id) => {
                    if let Some(p) = self.udp.remove(&id) {
                        self.by_branch.remove(&p.ids.branch);
                        let what = if p.provisional {
                            "no final reply"
                        } else {
                            "no reply"
                        };
                        let v = Verdict::bad(
                            BadReason::Timeout,
                            format!("{what} within {:?}", self.probe.timeout),
                        );
                        self.finish(p.key, p.id, v);
                    }
                }
            }
        }
    }

    async fn start_probe(&mut self, key: TargetKey, epoch: u64) {
        let now = Instant::now();
        let id = self.next_probe_id;
        let Some(e) = self.targets.get_mut(&key) else {
            return;
        };
        if e.epoch != epoch || e.in_flight.is_some() {
            return;
        }
        self.next_probe_id += 1;
        e.cseq = e.cseq.wrapping_add(1).max(1);
        e.in_flight = Some(id);
        e.started = now;
        let ids = ProbeIds::fresh(e.cseq);
        let uri_host = e.uri_host(&key);
        let dest = SocketAddr::new(key.ip, key.port);
        match key.transport {
            Transport::Udp => {
                if let Err(v) = self.send_udp_probe(key, id, ids, uri_host, dest).await {
                    self.finish(key, id, v);
                }
            }
            Transport::Tcp | Transport::Tls => {
                let sni = e.sni(&key);
                let probe = transport::StreamProbe {
                    dest,
                    transport: key.transport,
                    uri_host,
                    sni,
                    tls: (key.transport == Transport::Tls).then(|| self.tls.clone()),
                    ids,
                    from_domain: self.probe.from_domain.clone(),
                    user_agent: self.probe.user_agent.clone(),
                    timeout: self.probe.timeout,
                };
                let metrics = self.shared.metrics.clone();
                let th = self.th.clone();
                self.streams.spawn(async move {
                    let v = transport::stream_probe(probe, metrics, |reply, rtt| {
                        Verdict::from_reply(&th, reply.code, rtt, reply.retry_after)
                    })
                    .await;
                    (key, id, v)
                });
            }
        }
    }

    fn udp_socket(&mut self, v6: bool) -> Result<Arc<UdpSocket>, Verdict> {
        let slot = if v6 { &mut self.udp6 } else { &mut self.udp4 };
        if let Some(s) = slot {
            return Ok(s.clone());
        }
        let s = transport::bind_udp(v6)
            .map(Arc::new)
            .map_err(|e| Verdict::bad(BadReason::Error, format!("cannot open UDP socket: {e}")))?;
        *slot = Some(s.clone());
        Ok(s)
    }

    async fn send_udp_probe(
        &mut self,
        key: TargetKey,
        id: u64,
        ids: ProbeIds,
        uri_host: String,
        dest: SocketAddr,
    ) -> Result<(), Verdict> {
        let sock = self.udp_socket(dest.is_ipv6())?;
        let port = sock
            .local_addr()
            .map_err(|e| Verdict::bad(BadReason::Error, e.to_string()))?
            .port();
        let src = match self.sources.get(&dest.ip()) {
            Some(ip) => *ip,
            None => {
                let ip = transport::route_source(dest.ip()).ok_or_else(|| {
                    Verdict::bad(BadReason::Unreachable, format!("no route to {}", dest.ip()))
                })?;
                self.sources.insert(dest.ip(), ip);
                ip
            }
        };
        let bytes: Arc<[u8]> = sip::build_options(&sip::OptionsRequest {
            transport: Transport::Udp,
            host: &uri_host,
            port: dest.port(),
            local: SocketAddr::new(src, port),
            from_domain: &self.probe.from_domain,
            user_agent: &self.probe.user_agent,
            ids: &ids,
        })
        .map_err(|e| Verdict::bad(BadReason::Error, e.to_string()))?
        .into();
        self.udp_send(&sock, &bytes, dest).await?;
        let now = Instant::now();
        let deadline = now + self.probe.timeout;
        if now + T1 < deadline {
            self.schedule(now + T1, Timer::Retransmit(id));
        }
        self.schedule(deadline, Timer::Deadline(id));
        self.by_branch.insert(ids.branch.clone(), id);
        self.udp.insert(
            id,
            UdpProbe {
                key,
                id,
                ids,
                bytes,
                dest,
                sent: now,
                rto: T1,
                deadline,
                provisional: false,
            },
        );
        Ok(())
    }

    /// Sends on a shared socket. An ICMP error reported on this send belongs to an
    /// earlier datagram: it is handed to its probe and the send is tried once more.
    async fn udp_send(
        &mut self,
        sock: &Arc<UdpSocket>,
        bytes: &[u8],
        dest: SocketAddr,
    ) -> Result<(), Verdict> {
        for attempt in 0..2 {
            match sock.send_to(bytes, dest).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempt == 0 => {
                    self.on_icmp(sock);
                }
                Err(e) => {
                    let v = Verdict::bad(
                        match e.kind() {
                            std::io::ErrorKind::HostUnreachable
                            | std::io::ErrorKind::NetworkUnreachable => BadReason::Unreachable,
                            _ => BadReason::Error,
                        },
                        format!("send: {e}"),
                    );
                    return Err(v);
                }
            }
        }
        Err(Verdict::bad(
            BadReason::Error,
            "send failed twice".to_owned(),
        ))
    }

    async fn retransmit(&mut self, id: u64) {
        let Some(p) = self.udp.get_mut(&id) else {
            return;
        };
        if p.provisional {
            return;
        }
        // Timer E doubles up to T2 (RFC 3261 §17.1.2.2).
        p.rto = (p.rto * 2).min(T2);
        let (bytes, dest, next, deadline) = (p.bytes.clone(), p.dest, p.rto, p.deadline);
        let now = Instant::now();
        if now + next < deadline {
            self.schedule(now + next, Timer::Retransmit(id));
        }
        let Ok(sock) = self.udp_socket(dest.is_ipv6()) else {
            return;
        };
        if let Err(v) = self.udp_send(&sock, &bytes, dest).await
            && let Some(p) = self.udp.remove(&id)
        {
            self.by_branch.remove(&p.ids.branch);
            self.finish(p.key, id, v);
        }
    }

    fn on_icmp(&mut self, sock: &Arc<UdpSocket>) {
        for dest in transport::drain_icmp_errors(sock) {
            let key = TargetKey {
                ip: dest.ip(),
                port: dest.port(),
                transport: Transport::Udp,
            };
            let Some(id) = self.targets.get(&key).and_then(|e| e.in_flight) else {
                continue;
            };
            if let Some(p) = self.udp.remove(&id) {
                self.by_branch.remove(&p.ids.branch);
                self.finish(
                    key,
                    id,
                    Verdict::bad(BadReason::Unreachable, "ICMP unreachable".to_owned()),
                );
            }
        }
    }

    fn on_udp(
        &mut self,
        sock: Option<&Arc<UdpSocket>>,
        r: std::io::Result<(usize, SocketAddr)>,
        buf: &[u8],
    ) {
        let metrics = self.shared.metrics.clone();
        let n = match r {
            Ok((n, _from)) => n,
            Err(e) => {
                if let Some(s) = sock {
                    self.on_icmp(s);
                }
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::debug!(error = %e, "probe socket receive error");
                }
                return;
            }
        };
        let Some(msg) = buf.get(..n) else {
            return;
        };
        let reply = match sip::parse_reply(msg) {
            Ok(r) => r,
            Err(e) => {
                // CRLF keep-alives (RFC 5626 §4.4.1) are not worth counting.
                if !msg.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    tracing::debug!(error = %e, msg = %sip::excerpt(msg), "unparsable message on the probe socket");
                    metrics
                        .probe_unmatched
                        .with_label_values(&[e.label()])
                        .inc();
                }
                return;
            }
        };
        let Some(id) = self.by_branch.get(&reply.branch).copied() else {
            metrics
                .probe_unmatched
                .with_label_values(&["no_probe"])
                .inc();
            return;
        };
        let Some(p) = self.udp.get_mut(&id) else {
            metrics
                .probe_unmatched
                .with_label_values(&["no_probe"])
                .inc();
            return;
        };
        if !reply.matches(&p.ids) {
            metrics
                .probe_unmatched
                .with_label_values(&["mismatch"])
                .inc();
            return;
        }
        if reply.is_provisional() {
            // §17.1.2.2: a provisional reply moves the transaction to Proceeding.
            p.provisional = true;
            return;
        }
        let rtt = p.sent.elapsed();
        let key = p.key;
        self.udp.remove(&id);
        self.by_branch.remove(&reply.branch);
        let v = Verdict::from_reply(&self.th, reply.code, rtt, reply.retry_after);
        self.finish(key, id, v);
    }

    /// Records a verdict: metrics, state machine, snapshot, next probe.
    fn finish(&mut self, key: TargetKey, id: u64, v: Verdict) {
        let now = Instant::now();
        let Some(e) = self.targets.get_mut(&key) else {
            return;
        };
        if e.in_flight != Some(id) {
            return;
        }
        e.in_flight = None;
        let transport = key.transport.as_str();
        let metrics = &self.shared.metrics;
        metrics
            .probes
            .with_label_values(&[transport, v.label()])
            .inc();
        match &v {
            Verdict::Good { code, rtt } => {
                metrics
                    .probe_rtt
                    .with_label_values(&[transport])
                    .observe(rtt.as_secs_f64());
                e.last_code = Some(*code);
                e.last_rtt = Some(*rtt);
            }
            Verdict::Bad { code, .. } => e.last_code = *code,
        }
        tracing::trace!(target = %key, verdict = %v.describe(), "probe done");
        if let Some(t) = e.state.observe(&v, now, &self.th) {
            let admin = lock(&self.shared.admin).get(&key);
            let usable = TargetStatus {
                health: t.to,
                admin,
            }
            .is_usable();
            metrics
                .target_up
                .with_label_values(&[&key.to_string()])
                .set(i64::from(usable));
            if t.is_real() {
                let to = match t.to {
                    Health::Up => "up",
                    Health::Down => "down",
                    Health::Unknown => "unknown",
                };
                metrics.target_transitions.with_label_values(&[to]).inc();
                tracing::info!(event = "transition", target = %key, host = %e.host, from = ?t.from, to = ?t.to, reason = %t.reason, "target health changed");
                let host = e.uri_host(&key);
                self.shared.observers.each(|o| {
                    o.transition(&Transition {
                        key: &key,
                        host: &host,
                        from: t.from,
                        to: t.to,
                        reason: &t.reason,
                    });
                });
            } else {
                tracing::debug!(target = %key, reason = %t.reason, "target answered its first probe");
            }
            self.dirty = true;
        }
        let (good, health) = (matches!(v, Verdict::Good { .. }), e.state.health());
        let rtt = match &v {
            Verdict::Good { rtt, .. } => Some(*rtt),
            Verdict::Bad { .. } => None,
        };
        self.shared
            .observers
            .each(|o| o.probed(&key, good, health, rtt));
        // Next probe: one interval after this one started, never before now.
        e.epoch += 1;
        let epoch = e.epoch;
        let next = (e.started + self.jittered_interval()).max(now);
        self.schedule(next, Timer::Probe(key, epoch));
        self.update_info(&key);
        if let Some(p) = &mut self.first_round
            && p.remove(&key)
        {
            self.check_ready();
        }
    }

    fn update_info(&self, key: &TargetKey) {
        let Some(e) = self.targets.get(key) else {
            return;
        };
        let age = Instant::now().saturating_duration_since(e.state.since());
        let since = SystemTime::now()
            .checked_sub(age)
            .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs());
        let mut info = lock(&self.shared.info);
        if let Some(row) = info.get_mut(key) {
            // The common case, once per probe: update in place, allocate only on change.
            row.health = e.state.health();
            row.last_code = e.last_code;
            row.rtt_ms = e.last_rtt.map(|d| d.as_secs_f64() * 1000.0);
            row.since = since;
            row.transitions = e.state.transitions();
            if row.last_reason != e.state.last_reason() {
                e.state.last_reason().clone_into(&mut row.last_reason);
            }
            row.origin = e.origin;
            row.fallback = e.fallback;
            if row.domains.len() != e.domains.len()
                || !row.domains.iter().zip(&e.domains).all(|(a, b)| a == b)
            {
                row.domains = e.domains.iter().cloned().collect();
            }
            if e.named && row.host != e.host.as_str().trim_end_matches('.') {
                row.host = e.uri_host(key);
            }
            return;
        }
        let row = TargetInfo {
            key: *key,
            host: e.uri_host(key),
            domains: e.domains.iter().cloned().collect(),
            origin: e.origin,
            fallback: e.fallback,
            health: e.state.health(),
            admin: AdminState::Enabled,
            last_code: e.last_code,
            rtt_ms: e.last_rtt.map(|d| d.as_secs_f64() * 1000.0),
            since,
            transitions: e.state.transitions(),
            last_reason: e.state.last_reason().to_owned(),
            drain: None,
        };
        info.insert(*key, row);
    }

    /// Builds and stores a new snapshot (under the admin lock, see [`Shared::admin`]).
    fn publish(&mut self) {
        let admin = lock(&self.shared.admin);
        let targets: HashMap<TargetKey, TargetStatus> = self
            .targets
            .iter()
            .map(|(k, e)| {
                (
                    *k,
                    TargetStatus {
                        health: e.state.health(),
                        admin: admin.get(k),
                    },
                )
            })
            .collect();
        let generation = self.shared.snapshot.load().generation + 1;
        let targets = Arc::new(targets);
        self.shared.snapshot.store(Arc::new(HealthSnapshot {
            generation,
            targets: targets.clone(),
            by_host: self.by_host.clone(),
            host_domain: self.host_domain.clone(),
        }));
        drop(admin);
        self.shared.update_domain_gauges(&targets);
        self.dirty = false;
        self.last_publish = Some(Instant::now());
    }
}
