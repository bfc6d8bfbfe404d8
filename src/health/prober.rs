//! The prober: the loop that ties discovery, the target table and the transports
//! together, and the app's [`ProberHandle`].
//!
//! # Design
//!
//! - **One task, one timer heap.** The next probe of every target sits in one
//!   `BinaryHeap` ordered by due time, and the task sleeps until the earliest (`sleep_until`
//!   in a `select!` with the shutdown token, as pingora's `background.rs` loop does). 5,000
//!   targets at 1 s are ~5,000 heap operations a second: cheaper than 5,000 sleeping tasks,
//!   and simpler than a `DelayQueue` because stale entries are just skipped (each carries
//!   a generation).
//! - **UDP**: the [`UdpTransactions`] table sends, retransmits and matches, one connected
//!   socket per transaction; the loop waits on [`UdpTransactions::next`] for verdicts.
//!   While the table is full, due UDP probes wait in a queue, in order, for a free slot.
//! - **TCP/TLS**: one short-lived connection per probe, run as its own task in a
//!   `JoinSet` (connect, send, read the final reply, close). A fresh connection each time
//!   also checks that the server still accepts connections, which a reused one would not.
//! - **State**: the [`TargetTable`] holds every target; verdicts go in with
//!   [`TargetTable::finish`], and status changes closer together than [`PUBLISH_GAP`] are
//!   published as one snapshot (at 5,000 targets a snapshot costs ~5,000 map inserts).
//! - **Discovery** runs in its own task and sends each pass here; the merge with the
//!   previous passes is the pure [`discover::merge`].

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, HashSet, VecDeque},
    path::PathBuf,
    sync::Arc,
    time::{Duration, SystemTime},
};

use rand::RngExt as _;
use tokio::{
    sync::{mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep_until},
};
use tokio_rustls::TlsConnector;

use super::{
    AdminState, HealthHandle, ProbeError,
    admin::{AdminTable, Drain},
    discover::{self, Discovery, Found, Lookup},
    observer::{AdminCause, Observer},
    sip::ProbeIds,
    state::{Thresholds, Verdict},
    table::{TargetInfo, TargetTable},
    transport,
    udp::{UdpRequest, UdpTransactions},
};
use crate::{
    config::{ProbeConfig, SipConfig},
    metrics::Metrics,
    record::DomainName,
    shutdown::CancellationToken,
    target::{TargetKey, Transport},
};

/// Status changes closer together than this are published as one snapshot.
pub const PUBLISH_GAP: Duration = Duration::from_millis(10);
/// The first probes of new targets are spread over at most this long.
const FIRST_SPREAD: Duration = Duration::from_secs(1);
/// Timer events handled per wake-up before the task looks at its other inputs.
const TIMER_BATCH: usize = 4096;

/// The app's handle on the running prober.
#[derive(Clone)]
pub struct ProberHandle {
    table: Arc<TargetTable>,
    health: HealthHandle,
    ready: watch::Receiver<bool>,
    config: Arc<watch::Sender<Arc<SipConfig>>>,
}

impl ProberHandle {
    /// Loads the admin state file, starts discovery and probing, publishing into
    /// `health`, and returns the handle. Must be called inside a tokio runtime. Both
    /// tasks stop when `shutdown` is cancelled.
    pub fn spawn(
        cfg: &SipConfig,
        lookup: Arc<dyn Lookup>,
        metrics: Arc<Metrics>,
        state_file: Option<PathBuf>,
        health: HealthHandle,
        shutdown: CancellationToken,
    ) -> Result<Self, ProbeError> {
        let udp = UdpTransactions::new(metrics.clone());
        Self::spawn_with(cfg, lookup, metrics, state_file, health, udp, shutdown)
    }

    /// [`Self::spawn`] with the UDP transaction table given (tests bound it tighter).
    pub(crate) fn spawn_with(
        cfg: &SipConfig,
        lookup: Arc<dyn Lookup>,
        metrics: Arc<Metrics>,
        state_file: Option<PathBuf>,
        health: HealthHandle,
        udp: UdpTransactions,
        shutdown: CancellationToken,
    ) -> Result<Self, ProbeError> {
        let admin = match &state_file {
            Some(p) => AdminTable::load_at_start(p, &metrics),
            None => AdminTable::default(),
        };
        let tls = transport::tls_connector(&cfg.probe.tls)?;
        let cfg = Arc::new(cfg.clone());
        let (config_tx, config_rx) = watch::channel(cfg.clone());
        let (ready_tx, ready_rx) = watch::channel(false);
        let (disc_tx, disc_rx) = mpsc::channel(2);
        let table = Arc::new(TargetTable::new(
            admin,
            state_file,
            health.clone(),
            metrics.clone(),
        ));
        let engine = Engine {
            table: table.clone(),
            udp,
            metrics,
            probe: cfg.probe.clone(),
            th: Thresholds::from_config(&cfg.probe),
            tls,
            last_found: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            waiting_udp: VecDeque::new(),
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
        let handle = Self {
            table,
            health,
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

    /// The health the DNS path reads (one atomic load per query): the handle given to
    /// [`spawn`](Self::spawn).
    pub fn snapshot(&self) -> HealthHandle {
        self.health.clone()
    }

    /// Becomes true once every target found by the first discovery has been probed once,
    /// or `startup_grace` has passed.
    pub fn ready(&self) -> watch::Receiver<bool> {
        self.ready.clone()
    }

    /// Every known target with its state, sorted by key.
    pub fn targets(&self) -> Vec<TargetInfo> {
        self.table.rows()
    }

    /// Drains or enables a target. The change is written to the state file first (if one
    /// is configured; a write error changes nothing) and is in the published snapshot when
    /// this returns. Blocking file I/O: call it from `spawn_blocking` if that matters.
    pub fn set_admin(&self, key: &TargetKey, state: AdminState) -> Result<(), ProbeError> {
        self.set_admin_with(key, state, None, AdminCause::Api)
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
        self.table.set_admin(key, state, drain, cause)
    }

    /// Tells `o` of every probe, transition and admin change from now on.
    pub fn observe(&self, o: Arc<dyn Observer>) {
        self.table.observe(o);
    }

    /// The earliest end of a timed drain.
    pub fn next_drain_end(&self) -> Option<SystemTime> {
        self.table.next_drain_end()
    }

    /// Enables every target whose timed drain has ended at `now`.
    pub fn end_drains(&self, now: SystemTime) {
        for key in self.table.drains_ended(now) {
            if let Err(e) =
                self.set_admin_with(&key, AdminState::Enabled, None, AdminCause::Expired)
            {
                tracing::error!(target = %key, error = %e, "cannot end a timed drain; retrying");
            }
        }
    }

    /// Applies a new SIP config (hot reload): thresholds, timing and TLS settings take
    /// effect at once, domains are rediscovered now. Health of targets that remain is kept.
    pub fn reconfigure(&self, cfg: &SipConfig) {
        self.config.send_replace(Arc::new(cfg.clone()));
    }
}

/// Rediscovers targets whenever the records' TTLs expire or the config changes (also
/// during a round: it starts over).
async fn discovery_task(
    mut config: watch::Receiver<Arc<SipConfig>>,
    lookup: Arc<dyn Lookup>,
    out: mpsc::Sender<Discovery>,
    shutdown: CancellationToken,
) {
    loop {
        let cfg = config.borrow_and_update().clone();
        // A config change during a round (a reload, a catalog member made a SIP domain)
        // starts over at once with the new config: the round under way may be waiting on
        // upstream lookups of the old one.
        let mut found = tokio::select! {
            () = shutdown.cancelled() => return,
            changed = config.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
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

struct Engine {
    table: Arc<TargetTable>,
    udp: UdpTransactions,
    metrics: Arc<Metrics>,
    probe: ProbeConfig,
    th: Thresholds,
    tls: TlsConnector,
    /// The last discovery result per domain (kept for domains whose lookups fail).
    last_found: HashMap<DomainName, Vec<Found>>,
    /// Next probe per target: `(due, sequence, target, generation)`.
    timers: BinaryHeap<Reverse<(Instant, u64, TargetKey, u64)>>,
    timer_seq: u64,
    /// UDP probes due while the transaction table was full: `(target, generation)`, at
    /// most one per target (its timer fired once and nothing else is scheduled for it).
    waiting_udp: VecDeque<(TargetKey, u64)>,
    streams: JoinSet<(TargetKey, u64, Verdict)>,
    next_probe_id: u64,
    /// A status changed since the last snapshot.
    dirty: bool,
    last_publish: Option<Instant>,
    /// Targets of the first discovery not probed yet (`None` before the first discovery).
    first_round: Option<HashSet<TargetKey>>,
    ready: watch::Sender<bool>,
    grace_until: Instant,
}

impl Engine {
    async fn run(
        mut self,
        mut config: watch::Receiver<Arc<SipConfig>>,
        mut discoveries: mpsc::Receiver<Discovery>,
        shutdown: CancellationToken,
    ) {
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, ..))| *at);
            let publish_at = self.dirty.then(|| {
                self.last_publish
                    .map_or_else(Instant::now, |t| t + PUBLISH_GAP)
            });
            let waiting_ready = !*self.ready.borrow();
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
                (key, id, verdict) = self.udp.next(&self.th) => {
                    self.finish(key, id, &verdict);
                    self.start_waiting_udp();
                }
                Some(done) = self.streams.join_next(), if !self.streams.is_empty() => {
                    if let Ok((key, id, verdict)) = done {
                        self.finish(key, id, &verdict);
                    }
                }
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    self.fire_timers();
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

    fn schedule(&mut self, at: Instant, key: TargetKey, epoch: u64) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, key, epoch)));
    }

    fn jittered_interval(&self) -> Duration {
        // ±10 % so probes of targets found together drift apart (CoreDNS reload jitter).
        self.probe
            .interval
            .mul_f64(rand::rng().random_range(0.9..=1.1))
    }

    fn publish(&mut self) {
        self.table.publish();
        self.dirty = false;
        self.last_publish = Some(Instant::now());
    }

    fn apply_discovery(&mut self, d: Discovery) {
        let now = Instant::now();
        let merged = discover::merge(&self.last_found, d);
        self.last_found = merged.last_found.clone();
        let applied = self.table.apply(merged, now);
        // A gone target's UDP transaction runs out on its own (its verdict is then
        // ignored); its socket is held until the probe's timeout at most.
        for key in &applied.gone {
            tracing::info!(target = %key, "target no longer in DNS or config; dropped");
        }
        let spread = self.probe.interval.min(FIRST_SPREAD);
        for key in &applied.added {
            let delay = spread.mul_f64(rand::rng().random_range(0.0..1.0));
            self.schedule(now + delay, *key, 0);
        }
        let total = self.table.len();
        if !applied.added.is_empty() {
            tracing::info!(added = applied.added.len(), total, "new targets to probe");
        }
        if self.first_round.is_none() {
            let pending: HashSet<TargetKey> = self.table.keys().into_iter().collect();
            self.first_round = Some(pending);
            self.check_ready();
        }
        if applied.changed {
            self.dirty = true;
        }
    }

    fn check_ready(&mut self) {
        if let Some(p) = &self.first_round
            && p.is_empty()
            && !*self.ready.borrow()
        {
            tracing::info!(targets = self.table.len(), "first probe round done");
            self.ready.send_replace(true);
        }
    }

    fn fire_timers(&mut self) {
        let now = Instant::now();
        for _ in 0..TIMER_BATCH {
            match self.timers.peek() {
                Some(Reverse((at, ..))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, _, key, epoch))) = self.timers.pop() else {
                break;
            };
            self.start_probe(key, epoch);
        }
    }

    /// Starts UDP probes that waited for a free transaction slot, oldest first.
    fn start_waiting_udp(&mut self) {
        while self.udp.has_room() {
            let Some((key, epoch)) = self.waiting_udp.pop_front() else {
                return;
            };
            self.start_probe(key, epoch);
        }
    }

    fn start_probe(&mut self, key: TargetKey, epoch: u64) {
        if key.transport == Transport::Udp && !self.udp.has_room() {
            if self.waiting_udp.is_empty() {
                tracing::debug!(
                    capacity = self.udp.capacity(),
                    "UDP probe transactions at their limit; probes wait for a free slot"
                );
            }
            self.waiting_udp.push_back((key, epoch));
            return;
        }
        let now = Instant::now();
        let id = self.next_probe_id;
        let Some(start) = self.table.begin(&key, epoch, id, now) else {
            return;
        };
        self.next_probe_id += 1;
        let ids = ProbeIds::fresh(start.cseq);
        match key.transport {
            Transport::Udp => {
                let req = UdpRequest {
                    key,
                    id,
                    ids,
                    uri_host: &start.uri_host,
                    from_domain: &self.probe.from_domain,
                    user_agent: &self.probe.user_agent,
                    timeout: self.probe.timeout,
                };
                if let Err(v) = self.udp.start(req) {
                    self.finish(key, id, &v);
                }
            }
            Transport::Tcp | Transport::Tls => {
                let probe = transport::StreamProbe {
                    dest: start.dest,
                    transport: key.transport,
                    uri_host: start.uri_host,
                    sni: start.sni,
                    tls: (key.transport == Transport::Tls).then(|| self.tls.clone()),
                    ids,
                    from_domain: self.probe.from_domain.clone(),
                    user_agent: self.probe.user_agent.clone(),
                    timeout: self.probe.timeout,
                };
                let metrics = self.metrics.clone();
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

    /// Records a verdict and schedules the target's next probe.
    fn finish(&mut self, key: TargetKey, id: u64, v: &Verdict) {
        let now = Instant::now();
        let Some(done) = self.table.finish(&key, id, v, now, &self.th) else {
            return;
        };
        self.dirty |= done.changed;
        // Next probe: one interval after this one started, never before now.
        let next = (done.started + self.jittered_interval()).max(now);
        self.schedule(next, key, done.epoch);
        if let Some(p) = &mut self.first_round
            && p.remove(&key)
        {
            self.check_ready();
        }
    }
}
