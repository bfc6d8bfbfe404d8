//! Secondary zones (`zones.secondary`): zones followed from a primary by zone transfer,
//! and the members of catalog zones (RFC 9432), kept on disk so an office keeps answering
//! through a WAN outage and a restart.
//!
//! Per zone one task: a serial check (SOA over TCP, TSIG-signed) at start, every refresh
//! and on NOTIFY (RFC 1996) from a listed primary; a newer serial brings an IXFR (RFC 1995)
//! from the serial held, or an AXFR (RFC 5936) when none is held. A failed check is retried
//! after the SOA's retry; after the SOA's expire without a successful check the zone is no
//! longer served (its names are forwarded as if it had no zone). Timers: RFC 1034 §4.3.5.
//!
//! A received zone passes the checks of a zone file ([`super::load::zone_from_records`]);
//! a bad one is rejected whole and the copy held keeps answering. An IXFR is applied to the
//! records held, never re-parsing the unchanged rest. Accepted zones are published through
//! a callback that swaps the resolver's state like a reload ([`Secondaries::overlay`] lays
//! them over the zones of `zones/`), then written to `zones.secondary_dir` (`disk`).
//!
//! State lives behind a std mutex held only for map updates, never across an `.await`.

mod catalog;
mod disk;
mod transfer;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use tokio::sync::Notify;

use super::{Zone, ZoneError, ZoneFormat, ZoneStore, load::zone_from_records};
use crate::{
    config::{CatalogGroupConfig, Config, MergeMode, SecondaryConfig, ZonesConfig},
    hickory as convert,
    metrics::Metrics,
    record::{DomainName, Rec, RecordData},
    shutdown::CancellationToken,
};

use transfer::{Body, Diff, Key, newer, serial_of};
pub use transfer::{Kind as TransferKind, TransferError};

/// A serial check must finish within this.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// A transfer must finish within this.
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(300);
/// Retry interval before any SOA is known.
const DEFAULT_RETRY: Duration = Duration::from_secs(10);
/// No timer fires sooner than this after the last check.
const MIN_DELAY: Duration = Duration::from_millis(500);
/// Checks (and transfers) running at once: a catalog of 1,000 members at start does not
/// open 1,000 connections to the primary at the same moment.
const MAX_CONCURRENT_CHECKS: usize = 16;

/// Tells the server that the set of transferred zones changed (it swaps its state).
pub type Publish = Arc<dyn Fn() + Send + Sync>;

/// What a followed zone is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A zone named in `zones.secondary`.
    Zone,
    /// A catalog zone (read for its members, not served).
    Catalog,
    /// A member zone of a catalog.
    Member,
}

/// The last accepted transfer.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LastTransfer {
    /// `axfr` or `ixfr`.
    pub kind: TransferKind,
    /// Unix time it finished.
    pub at: f64,
    /// Bytes received (DNS messages with their TCP length prefix).
    pub bytes: usize,
    /// Records received.
    pub records: usize,
    /// How long it took, seconds.
    pub duration_seconds: f64,
    /// The primary it came from.
    pub primary: SocketAddr,
}

/// Where one secondary zone stands (the API's `secondary` object).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SecondaryStatus {
    /// The zone.
    pub zone: DomainName,
    /// `zone`, `catalog` or `member`.
    pub role: Role,
    /// For a member: its catalog.
    pub catalog: Option<DomainName>,
    /// For a member: its `group` property, when the config has that template.
    pub group: Option<String>,
    /// How it combines with upstream.
    pub mode: MergeMode,
    /// Where its copy is kept.
    pub file: PathBuf,
    /// True while its records answer queries.
    pub serving: bool,
    /// The SOA serial held.
    pub serial: Option<u32>,
    /// Records held (the SOA not counted).
    pub records: usize,
    /// The copy held was read from `zones.secondary_dir` at start.
    pub from_disk: bool,
    /// Seconds between serial checks.
    pub refresh_seconds: Option<f64>,
    /// Seconds before a failed check is retried.
    pub retry_seconds: Option<f64>,
    /// Unix time of the last serial check.
    pub last_check: Option<f64>,
    /// Unix time of the last successful check.
    pub last_success: Option<f64>,
    /// Unix time of the next check.
    pub next_check: Option<f64>,
    /// Unix time at which the zone stops being served without a successful check.
    pub expires_at: Option<f64>,
    /// The last accepted transfer.
    pub last_transfer: Option<LastTransfer>,
    /// The error of the last check, if it failed (cleared by a success).
    pub error: Option<String>,
}

/// How one zone is followed.
#[derive(Debug, Clone)]
struct Settings {
    origin: DomainName,
    role: Role,
    primaries: Vec<SocketAddr>,
    key: Option<Key>,
    mode: MergeMode,
    refresh: Option<Duration>,
    retry: Option<Duration>,
    catalog: Option<DomainName>,
    group: Option<String>,
    /// The `sip.domains` entry whose policy this member gets as a managed SIP domain.
    sip_policy: Option<DomainName>,
}

struct Entry {
    settings: Arc<Settings>,
    /// The last accepted copy (also the IXFR base); `None` before the first transfer and
    /// after expiry.
    held: Option<Arc<Zone>>,
    status: SecondaryStatus,
    expires_at: Option<SystemTime>,
    wake: Arc<Notify>,
    stop: CancellationToken,
}

#[derive(Default)]
struct State {
    entries: BTreeMap<DomainName, Entry>,
    /// The zones answering queries.
    serving: HashMap<DomainName, Arc<Zone>>,
}

/// Every secondary zone, and the tasks that follow them.
pub struct Secondaries {
    dir: PathBuf,
    groups: BTreeMap<String, CatalogGroupConfig>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    publish: OnceLock<Publish>,
    shutdown: OnceLock<CancellationToken>,
    checks: tokio::sync::Semaphore,
    /// The SIP domains [`Self::overlay_config`] added last (names no `sip.domains` entry
    /// had): taken out again before the next overlay, so a member removed loses its own.
    added_domains: Mutex<HashSet<DomainName>>,
}

/// Why a check failed.
#[derive(Debug, thiserror::Error)]
enum CheckError {
    #[error(transparent)]
    Transfer(#[from] TransferError),
    #[error("transfer from {primary} rejected: {reason}")]
    Rejected { primary: SocketAddr, reason: String },
}

/// What a successful check found.
enum Checked {
    UpToDate(Rec),
    Transferred(Arc<Zone>, LastTransfer),
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// (refresh, retry, expire) of an SOA.
fn timers(soa: &Rec) -> Option<(Duration, Duration, Duration)> {
    match soa.data {
        RecordData::Soa {
            refresh,
            retry,
            expire,
            ..
        } => Some((
            Duration::from_secs(refresh.into()),
            Duration::from_secs(retry.into()),
            Duration::from_secs(expire.into()),
        )),
        _ => None,
    }
}

impl Settings {
    fn refresh_of(&self, soa: &Rec) -> Duration {
        self.refresh
            .or_else(|| timers(soa).map(|t| t.0))
            .unwrap_or(DEFAULT_RETRY)
            .max(MIN_DELAY)
    }
    fn retry_of(&self, soa: Option<&Rec>) -> Duration {
        self.retry
            .or_else(|| soa.and_then(timers).map(|t| t.1))
            .unwrap_or(DEFAULT_RETRY)
            .max(MIN_DELAY)
    }
}

fn new_status(s: &Settings, file: PathBuf) -> SecondaryStatus {
    SecondaryStatus {
        zone: s.origin.clone(),
        role: s.role,
        catalog: s.catalog.clone(),
        group: s.group.clone(),
        mode: s.mode,
        file,
        serving: false,
        serial: None,
        records: 0,
        from_disk: false,
        refresh_seconds: s.refresh.map(|d| d.as_secs_f64()),
        retry_seconds: s.retry.map(|d| d.as_secs_f64()),
        last_check: None,
        last_success: None,
        next_check: None,
        expires_at: None,
        last_transfer: None,
        error: None,
    }
}

impl Secondaries {
    /// Reads the config's secondary zones and the copies kept on disk (a catalog's copy
    /// brings its members'); a copy that cannot be read is set aside and transferred
    /// again. Nothing is transferred before [`Self::start`].
    pub fn open(config: &ZonesConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let this = Self {
            dir: config.secondary_dir.clone(),
            groups: config.catalog_groups.clone(),
            metrics,
            state: Mutex::new(State::default()),
            publish: OnceLock::new(),
            shutdown: OnceLock::new(),
            checks: tokio::sync::Semaphore::new(MAX_CONCURRENT_CHECKS),
            added_domains: Mutex::new(HashSet::new()),
        };
        let mut catalogs = Vec::new();
        for (i, c) in config.secondary.iter().enumerate() {
            let settings = settings_of(c).map_err(|e| format!("zones.secondary[{i}]: {e}"))?;
            if settings.role == Role::Catalog {
                catalogs.push(settings.origin.clone());
            }
            this.add_entry(settings);
        }
        for origin in catalogs {
            let members = this.with_entry(&origin, |e| e.held.clone()).flatten();
            if let Some(zone) = members {
                this.read_catalog(&origin, &zone);
            }
        }
        // What parsing the copies left behind goes back to the system.
        crate::memory::release_freed();
        Ok(Arc::new(this))
    }

    /// True when no zone is followed.
    pub fn is_empty(&self) -> bool {
        self.state
            .lock()
            .map(|s| s.entries.is_empty())
            .unwrap_or(true)
    }

    /// `store` with the transferred zones in force laid over it (see
    /// [`ZoneStore::with_secondaries`]).
    pub fn overlay(&self, store: &ZoneStore) -> ZoneStore {
        match self.state.lock() {
            Ok(s) => store.with_secondaries(&s.serving),
            Err(_) => store.clone(),
        }
    }

    /// `config` with every served catalog member whose group has a `sip_policy` made a
    /// managed SIP domain: a copy of that `sip.domains` entry under the member's name
    /// (unless the config names the member itself). `None` when there is nothing to add
    /// or take out.
    pub fn overlay_config(&self, config: &Config) -> Option<Config> {
        let wanted: Vec<(DomainName, DomainName)> = {
            let s = self.state.lock().ok()?;
            s.entries
                .iter()
                .filter(|(o, _)| s.serving.contains_key(*o))
                .filter_map(|(o, e)| Some((o.clone(), e.settings.sip_policy.clone()?)))
                .collect()
        };
        let mut added = self.added_domains.lock().ok()?;
        if wanted.is_empty() && added.is_empty() {
            return None;
        }
        let mut c = config.clone();
        c.sip.domains.retain(|d| !added.contains(&d.name));
        added.clear();
        for (member, template) in wanted {
            if c.sip.domains.iter().any(|d| d.name == member) {
                continue;
            }
            if let Some(mut d) = c.sip.domains.iter().find(|d| d.name == template).cloned() {
                d.name = member.clone();
                c.sip.domains.push(d);
                added.insert(member);
            }
        }
        // The same domains: the config in force stays (its followers, such as the
        // forwarder, see no change).
        (c.sip.domains != config.sip.domains).then_some(c)
    }

    /// Starts one task per zone; `publish` is called (on the blocking pool) after every
    /// change of the zones in force.
    pub fn start(self: &Arc<Self>, publish: Publish, shutdown: CancellationToken) {
        let _ = self.publish.set(publish);
        let _ = self.shutdown.set(shutdown);
        let origins: Vec<DomainName> = match self.state.lock() {
            Ok(s) => s.entries.keys().cloned().collect(),
            Err(_) => return,
        };
        for origin in origins {
            self.spawn(&origin);
        }
    }

    /// Every followed zone's status, by name.
    pub fn status(&self) -> Vec<SecondaryStatus> {
        match self.state.lock() {
            Ok(s) => s.entries.values().map(|e| e.status.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Brings the time-dependent gauges (`sipdns_zone_expiry_seconds`) up to date.
    pub fn update_metrics(&self) {
        let now = SystemTime::now();
        if let Ok(s) = self.state.lock() {
            for (origin, e) in &s.entries {
                if let Some(at) = e.expires_at {
                    let left = match at.duration_since(now) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    };
                    let left = if e.status.serving {
                        left
                    } else {
                        left.min(0.0)
                    };
                    self.metrics
                        .zone_expiry
                        .with_label_values(&[origin.as_str()])
                        .set(left);
                }
            }
        }
    }

    /// Answers a NOTIFY (RFC 1996) from `src`: for a followed zone from one of its
    /// primaries' addresses, a check is started and NOERROR returned; anything else is
    /// REFUSED and counted. `None`: not a message to answer.
    pub fn notify(&self, bytes: &[u8], src: SocketAddr) -> Option<Vec<u8>> {
        let msg = Message::from_vec(bytes).ok()?;
        if msg.metadata.message_type != MessageType::Query || msg.metadata.op_code != OpCode::Notify
        {
            return None;
        }
        let wake = msg.queries.first().and_then(|q| {
            let origin = convert::name_from_hickory(q.name());
            let s = self.state.lock().ok()?;
            let e = s.entries.get(&origin)?;
            e.settings
                .primaries
                .iter()
                .any(|p| p.ip().to_canonical() == src.ip().to_canonical())
                .then(|| e.wake.clone())
        });
        let rcode = match &wake {
            Some(w) => {
                w.notify_one();
                self.metrics
                    .zone_notifies
                    .with_label_values(&["accepted"])
                    .inc();
                ResponseCode::NoError
            }
            None => {
                self.metrics
                    .zone_notifies
                    .with_label_values(&["refused"])
                    .inc();
                tracing::debug!(%src, "NOTIFY refused: not a followed zone, or not from its primary");
                ResponseCode::Refused
            }
        };
        let mut resp = Message::new(msg.metadata.id, MessageType::Response, OpCode::Notify);
        resp.metadata.authoritative = rcode == ResponseCode::NoError;
        resp.metadata.response_code = rcode;
        resp.queries = msg.queries;
        resp.to_vec().ok()
    }

    fn add_entry(&self, settings: Settings) -> bool {
        let path = disk::path_of(&self.dir, &settings.origin);
        let mut status = new_status(&settings, path.clone());
        let mut held = None;
        let mut expires_at = None;
        if path.exists() {
            match disk::read(&path, &settings.origin, settings.mode) {
                Ok(zone) => {
                    let expire = timers(&zone.soa).map_or(Duration::ZERO, |t| t.2);
                    let confirmed = disk::confirmed_at(&path).unwrap_or(SystemTime::UNIX_EPOCH);
                    let at = confirmed + expire;
                    status.serial = serial_of(&zone.soa);
                    status.records = zone.len();
                    status.from_disk = true;
                    status.last_success = Some(unix(confirmed));
                    status.expires_at = Some(unix(at));
                    expires_at = Some(at);
                    if at > SystemTime::now() {
                        tracing::info!(zone = %settings.origin, serial = ?status.serial, path = %path.display(), "serving the transferred copy kept on disk");
                        status.serving = true;
                        held = Some(Arc::new(zone));
                    } else {
                        tracing::warn!(zone = %settings.origin, path = %path.display(), "the copy on disk has expired (SOA expire since its last check): not served");
                        status.error = Some("the copy on disk had expired".into());
                    }
                }
                Err(e) => {
                    let aside = disk::set_aside(&path);
                    let msg = match &aside {
                        Ok(p) => format!("corrupt copy set aside as {}: {e}", p.display()),
                        Err(io) => format!("corrupt copy (could not set it aside: {io}): {e}"),
                    };
                    tracing::warn!(zone = %settings.origin, "{msg}");
                    status.error = Some(msg);
                }
            }
        }
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        if s.entries.contains_key(&settings.origin) {
            return false;
        }
        if let Some(z) = &held {
            self.set_serial_metrics(&settings, z);
            let l = [settings.origin.as_str()];
            if let Some(t) = status.last_success {
                self.metrics.zone_last_success.with_label_values(&l).set(t);
            }
            if let Some(at) = status.expires_at {
                let left = at - unix(SystemTime::now());
                self.metrics.zone_expiry.with_label_values(&l).set(left);
            }
            if settings.role != Role::Catalog {
                s.serving.insert(settings.origin.clone(), z.clone());
            }
        }
        let stop = self
            .shutdown
            .get()
            .map_or_else(CancellationToken::new, CancellationToken::child_token);
        s.entries.insert(
            settings.origin.clone(),
            Entry {
                settings: Arc::new(settings),
                held,
                status,
                expires_at,
                wake: Arc::new(Notify::new()),
                stop,
            },
        );
        true
    }

    fn with_entry<T>(&self, origin: &DomainName, f: impl FnOnce(&mut Entry) -> T) -> Option<T> {
        let mut s = self.state.lock().ok()?;
        s.entries.get_mut(origin).map(f)
    }

    fn set_serial_metrics(&self, settings: &Settings, zone: &Zone) {
        let l = [settings.origin.as_str()];
        if let Some(serial) = serial_of(&zone.soa) {
            self.metrics
                .zone_serial
                .with_label_values(&l)
                .set(f64::from(serial));
        }
        self.metrics
            .zone_refresh
            .with_label_values(&l)
            .set(settings.refresh_of(&zone.soa).as_secs_f64());
    }

    fn spawn(self: &Arc<Self>, origin: &DomainName) {
        let Some((wake, stop)) = self.with_entry(origin, |e| (e.wake.clone(), e.stop.clone()))
        else {
            return;
        };
        let this = self.clone();
        let origin = origin.clone();
        let global = self.shutdown.get().cloned().unwrap_or_default();
        tokio::spawn(async move {
            tokio::select! {
                () = global.cancelled() => {}
                () = this.run(origin, wake, stop) => {}
            }
        });
    }

    /// The task of one zone: check now, then at every timer or NOTIFY, until stopped.
    async fn run(self: Arc<Self>, origin: DomainName, wake: Arc<Notify>, stop: CancellationToken) {
        loop {
            let delay = self.check(&origin).await;
            let next = SystemTime::now() + delay;
            self.with_entry(&origin, |e| e.status.next_check = Some(unix(next)));
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(delay) => {}
                () = wake.notified() => {
                    tracing::debug!(zone = %origin, "NOTIFY: checking the serial now");
                }
            }
        }
    }

    /// One serial check (and transfer when needed) over the primaries in order; returns
    /// how long until the next one.
    async fn check(self: &Arc<Self>, origin: &DomainName) -> Duration {
        let Ok(_permit) = self.checks.acquire().await else {
            return DEFAULT_RETRY;
        };
        let Some((settings, held)) = self.with_entry(origin, |e| {
            e.status.last_check = Some(unix(SystemTime::now()));
            (e.settings.clone(), e.held.clone())
        }) else {
            return DEFAULT_RETRY;
        };
        let mut last_err = None;
        for &primary in &settings.primaries {
            match self.check_primary(&settings, held.as_ref(), primary).await {
                Ok(found) => return self.succeeded(&settings, found).await,
                Err(e) => {
                    tracing::warn!(zone = %origin, error = %e, "zone check failed");
                    last_err = Some(e);
                }
            }
        }
        let err = last_err.map_or_else(|| "no primary".to_owned(), |e| e.to_string());
        self.failed(&settings, err).await
    }

    async fn check_primary(
        &self,
        settings: &Settings,
        held: Option<&Arc<Zone>>,
        primary: SocketAddr,
    ) -> Result<Checked, CheckError> {
        let origin = &settings.origin;
        let key = settings.key.as_ref();
        let soa = transfer::soa(primary, origin, key, CHECK_TIMEOUT).await?;
        let serial = serial_of(&soa).unwrap_or(0);
        if let Some(h) = held
            && let Some(have) = serial_of(&h.soa)
            && !newer(serial, have)
        {
            return Ok(Checked::UpToDate(soa));
        }
        let kind = if held.is_some() { "ixfr" } else { "axfr" };
        let count = |kind: &str, result: &str| {
            self.metrics
                .zone_transfers
                .with_label_values(&[origin.as_str(), kind, result])
                .inc();
        };
        let rx =
            match transfer::transfer(primary, origin, key, held.map(|z| &z.soa), TRANSFER_TIMEOUT)
                .await
            {
                Ok(rx) => rx,
                Err(e) => {
                    count(kind, e.label());
                    return Err(e.into());
                }
            };
        let kind = rx.kind.label();
        let info = LastTransfer {
            kind: rx.kind,
            at: unix(SystemTime::now()),
            bytes: rx.bytes,
            records: rx.records,
            duration_seconds: rx.duration.as_secs_f64(),
            primary,
        };
        let path = disk::path_of(&self.dir, origin);
        let (mode, origin2, base) = (settings.mode, origin.clone(), held.cloned());
        let built = tokio::task::spawn_blocking(move || match rx.body {
            Body::UpToDate => Ok(None),
            Body::Full(recs) => {
                zone_from_records(&path, None, origin2, mode, ZoneFormat::Secondary, recs).map(Some)
            }
            Body::Incremental { soa, diffs } => match base {
                Some(base) => apply(&base, soa, diffs, &path).map(Some),
                None => {
                    Err(crate::config::FileError::whole(&path, "an IXFR without a base").into())
                }
            },
        })
        .await
        .map_err(|e| CheckError::Rejected {
            primary,
            reason: e.to_string(),
        })?;
        match built {
            Ok(Some(zone)) => {
                count(kind, "ok");
                Ok(Checked::Transferred(Arc::new(zone), info))
            }
            Ok(None) => {
                count(kind, "up_to_date");
                Ok(Checked::UpToDate(soa))
            }
            Err(e) => {
                count(kind, "rejected");
                Err(CheckError::Rejected {
                    primary,
                    reason: e.to_string(),
                })
            }
        }
    }

    async fn succeeded(self: &Arc<Self>, settings: &Settings, found: Checked) -> Duration {
        let now = SystemTime::now();
        let origin = &settings.origin;
        let mut transferred = None;
        let delay = {
            let Ok(mut s) = self.state.lock() else {
                return DEFAULT_RETRY;
            };
            let State { entries, serving } = &mut *s;
            let Some(e) = entries.get_mut(origin) else {
                return DEFAULT_RETRY;
            };
            let soa = match &found {
                Checked::UpToDate(soa) => e
                    .held
                    .as_ref()
                    .map_or_else(|| soa.clone(), |z| z.soa.clone()),
                Checked::Transferred(zone, info) => {
                    e.held = Some(zone.clone());
                    e.status.last_transfer = Some(info.clone());
                    e.status.from_disk = false;
                    if settings.role != Role::Catalog {
                        serving.insert(origin.clone(), zone.clone());
                    }
                    transferred = Some(zone.clone());
                    zone.soa.clone()
                }
            };
            let (refresh, retry) = (settings.refresh_of(&soa), settings.retry_of(Some(&soa)));
            let expire = timers(&soa).map_or(Duration::ZERO, |t| t.2);
            let was_serving = e.status.serving;
            e.expires_at = Some(now + expire);
            let st = &mut e.status;
            st.serving = e.held.is_some() && settings.role != Role::Catalog;
            st.serial = e.held.as_ref().and_then(|z| serial_of(&z.soa));
            st.records = e.held.as_ref().map_or(0, |z| z.len());
            st.refresh_seconds = Some(refresh.as_secs_f64());
            st.retry_seconds = Some(retry.as_secs_f64());
            st.last_success = Some(unix(now));
            st.expires_at = Some(unix(now + expire));
            st.error = None;
            if !was_serving && st.serving && transferred.is_none() {
                // Expired earlier, and the primary is back with the same serial: serve
                // the copy held again.
                if let Some(z) = &e.held {
                    serving.insert(origin.clone(), z.clone());
                }
            }
            if let Some(z) = &e.held {
                self.set_serial_metrics(settings, z);
            }
            self.metrics
                .zone_last_success
                .with_label_values(&[origin.as_str()])
                .set(unix(now));
            self.metrics
                .zone_expiry
                .with_label_values(&[origin.as_str()])
                .set(expire.as_secs_f64());
            refresh
        };
        let path = disk::path_of(&self.dir, origin);
        match transferred {
            Some(zone) => {
                if let Checked::Transferred(_, info) = &found {
                    tracing::info!(
                        zone = %origin,
                        serial = ?serial_of(&zone.soa),
                        records = zone.len(),
                        kind = info.kind.label(),
                        bytes = info.bytes,
                        received = info.records,
                        seconds = info.duration_seconds,
                        "zone transferred"
                    );
                }
                if settings.role == Role::Catalog {
                    self.catalog_changed(origin, &zone).await;
                } else {
                    self.publish().await;
                }
                // On disk after the swap: the new copy answers first; a crash in between
                // only means the next start transfers from the older serial.
                let text_zone = zone.clone();
                let written = tokio::task::spawn_blocking(move || {
                    let written = disk::write_atomic(&path, &disk::render(&text_zone));
                    // The old copy and the text are freed: RSS follows the zones held.
                    drop(text_zone);
                    crate::memory::release_freed();
                    written
                })
                .await;
                if let Ok(Err(e)) | Err(e) = written.map_err(std::io::Error::other) {
                    tracing::error!(zone = %origin, error = %e, "cannot keep the transferred zone on disk");
                    self.with_entry(origin, |e2| {
                        e2.status.error = Some(format!("cannot keep the copy on disk: {e}"));
                    });
                }
            }
            None => {
                let _ = tokio::task::spawn_blocking(move || disk::touch(&path)).await;
            }
        }
        delay
    }

    async fn failed(self: &Arc<Self>, settings: &Settings, err: String) -> Duration {
        let now = SystemTime::now();
        let origin = &settings.origin;
        let (delay, expired) = {
            let Ok(mut s) = self.state.lock() else {
                return DEFAULT_RETRY;
            };
            let State { entries, serving } = &mut *s;
            let Some(e) = entries.get_mut(origin) else {
                return DEFAULT_RETRY;
            };
            let retry = settings.retry_of(e.held.as_ref().map(|z| &z.soa));
            let mut expired = false;
            let mut delay = retry;
            match e.expires_at {
                Some(at) if at <= now && (e.status.serving || e.held.is_some()) => {
                    expired = true;
                    e.held = None;
                    serving.remove(origin);
                    e.status.serving = false;
                    e.status.records = 0;
                }
                Some(at) if at <= now => {}
                Some(at) => {
                    if let Ok(left) = at.duration_since(now) {
                        delay = delay.min(left.max(MIN_DELAY));
                    }
                }
                None => {}
            }
            e.status.retry_seconds = Some(retry.as_secs_f64());
            e.status.error = Some(
                if expired || (!e.status.serving && e.expires_at.is_some()) {
                    format!("expired (no successful check within the SOA expire): {err}")
                } else {
                    err
                },
            );
            (delay, expired)
        };
        if expired {
            tracing::error!(zone = %origin, "zone expired: no successful check within the SOA expire; no longer served");
            self.metrics
                .zone_expiry
                .with_label_values(&[origin.as_str()])
                .set(0.0);
            if settings.role != Role::Catalog {
                self.publish().await;
            }
        }
        delay
    }

    async fn publish(&self) {
        if let Some(p) = self.publish.get().cloned()
            && let Err(e) = tokio::task::spawn_blocking(move || p()).await
        {
            tracing::error!(error = %e, "publishing secondary zones failed");
        }
    }

    /// A new version of catalog `origin`: members added start being followed, members
    /// removed stop being served (and their copies are deleted).
    async fn catalog_changed(self: &Arc<Self>, origin: &DomainName, zone: &Zone) {
        let (added, removed) = self.read_catalog(origin, zone);
        for m in &added {
            self.spawn(m);
        }
        if !removed.is_empty() || !added.is_empty() {
            tracing::info!(catalog = %origin, added = added.len(), removed = removed.len(), "catalog members changed");
            self.publish().await;
        }
        let dir = self.dir.clone();
        let _ = tokio::task::spawn_blocking(move || {
            for m in removed {
                let _ = std::fs::remove_file(disk::path_of(&dir, &m));
            }
        })
        .await;
    }

    /// Brings the member entries of catalog `origin` in line with `zone`; returns the
    /// members added and removed.
    fn read_catalog(&self, origin: &DomainName, zone: &Zone) -> (Vec<DomainName>, Vec<DomainName>) {
        let groups = &self.groups;
        let cat = match catalog::read(zone, &|g| groups.contains_key(g)) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(catalog = %origin, error = %e, "catalog not used");
                self.with_entry(origin, |en| en.status.error = Some(e));
                return (Vec::new(), Vec::new());
            }
        };
        if cat.unknown > 0 {
            self.metrics
                .catalog_unknown_properties
                .with_label_values(&[origin.as_str()])
                .inc_by(cat.unknown as u64);
        }
        let Some(base) = self.with_entry(origin, |e| e.settings.clone()) else {
            return (Vec::new(), Vec::new());
        };
        // Members gone, or whose group changed (followed again with the new settings).
        let mut removed = Vec::new();
        if let Ok(mut s) = self.state.lock() {
            let State { entries, serving } = &mut *s;
            let gone: Vec<DomainName> = entries
                .iter()
                .filter(|(_, e)| e.settings.catalog.as_ref() == Some(origin))
                .filter(|(m, e)| {
                    cat.members
                        .get(*m)
                        .is_none_or(|mm| mm.group != e.settings.group)
                })
                .map(|(m, _)| m.clone())
                .collect();
            for m in gone {
                if let Some(e) = entries.remove(&m) {
                    e.stop.cancel();
                }
                serving.remove(&m);
                if cat.members.contains_key(&m) {
                    continue;
                }
                removed.push(m);
            }
        }
        let mut added = Vec::new();
        for m in cat.members.values() {
            let template = m.group.as_ref().and_then(|g| self.groups.get(g));
            let mode = template.map_or(base.mode, |g| g.mode);
            let settings = Settings {
                origin: m.zone.clone(),
                role: Role::Member,
                primaries: base.primaries.clone(),
                key: base.key.clone(),
                mode,
                refresh: base.refresh,
                retry: base.retry,
                catalog: Some(origin.clone()),
                group: m.group.clone(),
                sip_policy: template.and_then(|g| g.sip_policy.clone()),
            };
            if self.add_entry(settings) {
                added.push(m.zone.clone());
            }
        }
        (added, removed)
    }
}

/// The settings of one `zones.secondary` entry.
fn settings_of(c: &SecondaryConfig) -> Result<Settings, String> {
    let (origin, role) = match (&c.zone, &c.catalog) {
        (Some(z), None) => (z.clone(), Role::Zone),
        (None, Some(z)) => (z.clone(), Role::Catalog),
        _ => return Err("give either `zone` or `catalog`".into()),
    };
    let key = c.tsig.as_ref().map(Key::load).transpose()?;
    Ok(Settings {
        origin,
        role,
        primaries: c.primaries.clone(),
        key,
        mode: c.mode,
        refresh: c.refresh,
        retry: c.retry,
        catalog: None,
        group: None,
        sip_policy: None,
    })
}

/// The zone `base` after the IXFR steps `diffs`, ending at `soa`: the records held minus
/// those removed plus those added (a record added twice is kept once, as a zone file's
/// would be), checked like any zone. Only the changed records are looked at; the rest is
/// carried over as is.
fn apply(
    base: &Zone,
    soa: Rec,
    diffs: Vec<Diff>,
    path: &std::path::Path,
) -> Result<Zone, ZoneError> {
    let mut recs: Vec<Rec> = base.recs.clone();
    for d in diffs {
        if !d.removed.is_empty() {
            let removed: HashSet<&Rec> = d.removed.iter().collect();
            recs.retain(|r| !removed.contains(r));
        }
        if d.added.is_empty() {
            continue;
        }
        let use_set = d.added.len() > 16;
        let mut present: HashSet<Rec> = if use_set {
            recs.iter().cloned().collect()
        } else {
            HashSet::new()
        };
        for a in d.added {
            let dup = if use_set {
                !present.insert(a.clone())
            } else {
                recs.contains(&a)
            };
            if !dup {
                recs.push(a);
            }
        }
    }
    zone_from_records(
        path,
        None,
        base.origin.clone(),
        base.mode,
        ZoneFormat::Secondary,
        std::iter::once(soa).chain(recs),
    )
}

#[cfg(test)]
mod tests;
