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
//!
//! Rooms: `follow` (the task of one zone: checks, transfers, expiry), `members` (catalog
//! membership), `notify` (NOTIFY from a primary), `overlay` (the hand-off to a reload),
//! `status` (status rows and metrics), `transfer` (SOA/AXFR/IXFR on the wire, TSIG),
//! `catalog` (what a catalog zone says), `disk` (the copies kept on disk).

mod catalog;
mod disk;
mod follow;
mod members;
mod notify;
mod overlay;
mod reconfigure;
mod status;
mod transfer;
mod tsig;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;

use super::Zone;
use crate::{
    config::{CatalogGroupConfig, MergeMode, SecondaryConfig, TsigConfig, ZonesConfig},
    metrics::Metrics,
    record::{DomainName, Rec, RecordData},
    shutdown::CancellationToken,
};

use status::new_status;
use transfer::serial_of;
pub use transfer::{Kind as TransferKind, TransferError};
use tsig::Key;

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
    /// The configured key; with `key` `None` its secret file could not be read (every
    /// check reads it again, and fails until it can).
    tsig: Option<TsigConfig>,
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
    /// `zones.catalog_groups` in force.
    groups: Mutex<BTreeMap<String, CatalogGroupConfig>>,
    /// `zones.secondary` in force (a reload compares it with the new one).
    configured: Mutex<Vec<SecondaryConfig>>,
    metrics: Arc<Metrics>,
    state: Mutex<State>,
    publish: OnceLock<Publish>,
    shutdown: OnceLock<CancellationToken>,
    /// The runtime the zones' tasks run on (a reload that adds a zone runs on the blocking
    /// pool).
    runtime: OnceLock<tokio::runtime::Handle>,
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

impl Secondaries {
    /// Reads the config's secondary zones and the copies kept on disk (a catalog's copy
    /// brings its members'); a copy that cannot be read is set aside and transferred
    /// again. Nothing is transferred before [`Self::start`].
    pub fn open(config: &ZonesConfig, metrics: Arc<Metrics>) -> Result<Arc<Self>, String> {
        let this = Self {
            dir: config.secondary_dir.clone(),
            groups: Mutex::new(config.catalog_groups.clone()),
            configured: Mutex::new(config.secondary.clone()),
            metrics,
            state: Mutex::new(State::default()),
            publish: OnceLock::new(),
            shutdown: OnceLock::new(),
            runtime: OnceLock::new(),
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

    /// Starts one task per zone; `publish` is called (on the blocking pool) after every
    /// change of the zones in force.
    pub fn start(self: &Arc<Self>, publish: Publish, shutdown: CancellationToken) {
        let _ = self.publish.set(publish);
        let _ = self.shutdown.set(shutdown);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let _ = self.runtime.set(rt);
        }
        let origins: Vec<DomainName> = match self.state.lock() {
            Ok(s) => s.entries.keys().cloned().collect(),
            Err(_) => return,
        };
        for origin in origins {
            self.spawn(&origin);
        }
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
}

/// `sipdns check`: the TSIG secret files of `config.secondary` that cannot be read, each
/// as `zones.secondary[i].tsig: why`.
pub fn check_keys(config: &ZonesConfig) -> Vec<String> {
    config
        .secondary
        .iter()
        .enumerate()
        .filter_map(|(i, c)| {
            let e = Key::load(c.tsig.as_ref()?).err()?;
            Some(format!("zones.secondary[{i}].tsig: {e}"))
        })
        .collect()
}

/// The settings of one `zones.secondary` entry.
fn settings_of(c: &SecondaryConfig) -> Result<Settings, String> {
    let (origin, role) = match (&c.zone, &c.catalog) {
        (Some(z), None) => (z.clone(), Role::Zone),
        (None, Some(z)) => (z.clone(), Role::Catalog),
        _ => return Err("give either `zone` or `catalog`".into()),
    };
    // An unreadable secret does not stop the start: the disk copy answers, and every check
    // reads the file again (and fails, saying why, until it can).
    let key = c.tsig.as_ref().and_then(|t| {
        Key::load(t)
            .inspect_err(|e| tracing::error!(zone = %origin, error = %e, "TSIG key"))
            .ok()
    });
    Ok(Settings {
        origin,
        role,
        primaries: c.primaries.clone(),
        tsig: c.tsig.clone(),
        key,
        mode: c.mode,
        refresh: c.refresh,
        retry: c.retry,
        catalog: None,
        group: None,
        sip_policy: None,
    })
}

#[cfg(test)]
mod tests;
