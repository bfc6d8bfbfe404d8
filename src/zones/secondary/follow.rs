//! The task of one followed zone: serial checks on its timers and on NOTIFY, transfers,
//! the IXFR applied to the copy held, and expiry.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime},
};

use tokio::sync::Notify;

use super::{
    CHECK_TIMEOUT, CheckError, Checked, DEFAULT_RETRY, LastTransfer, MIN_DELAY, Role, Secondaries,
    Settings, State, TRANSFER_TIMEOUT, disk, timers,
    transfer::{self, Body, Diff, newer, serial_of},
    tsig::Key,
    unix,
};
use crate::{
    record::{DomainName, Rec},
    zones::{Zone, ZoneError, ZoneFormat, load::zone_from_records},
};

/// Least time between the starts of two checks of one zone when the second is started by
/// a NOTIFY.
const NOTIFY_GAP: Duration = Duration::from_millis(250);

impl Secondaries {
    pub(super) fn spawn(self: &Arc<Self>, origin: &DomainName) {
        let Some((wake, stop)) = self.with_entry(origin, |e| (e.wake.clone(), e.stop.clone()))
        else {
            return;
        };
        let this = self.clone();
        let origin = origin.clone();
        let global = self.shutdown.get().cloned().unwrap_or_default();
        let Some(rt) = self.runtime.get() else {
            return;
        };
        // Stopped (the zone left its catalog or the config): the task ends at once, even
        // in the middle of a check, so it cannot touch a later entry of the same name.
        rt.spawn(async move {
            tokio::select! {
                () = global.cancelled() => {}
                () = stop.cancelled() => {}
                () = this.run(origin, wake) => {}
            }
        });
    }

    /// The task of one zone: check now, then at every timer or NOTIFY (it runs until
    /// [`Self::spawn`]'s task drops it).
    pub(super) async fn run(self: Arc<Self>, origin: DomainName, wake: Arc<Notify>) -> ! {
        loop {
            let started = tokio::time::Instant::now();
            let delay = self.check(&origin).await;
            let next = SystemTime::now() + delay;
            self.with_entry(&origin, |e| e.status.next_check = Some(unix(next)));
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = wake.notified() => {
                    tracing::debug!(zone = %origin, "NOTIFY: checking the serial now");
                    // An unsigned NOTIFY is taken on its source address, which a stranger
                    // can forge: a flood of them starts at most one check per gap.
                    tokio::time::sleep_until(started + NOTIFY_GAP).await;
                }
            }
        }
    }

    /// One serial check (and transfer when needed) over the primaries in order; returns
    /// how long until the next one.
    pub(super) async fn check(self: &Arc<Self>, origin: &DomainName) -> Duration {
        let Ok(_permit) = self.checks.acquire().await else {
            return DEFAULT_RETRY;
        };
        let Some((mut settings, held)) = self.with_entry(origin, |e| {
            e.status.last_check = Some(unix(SystemTime::now()));
            (e.settings.clone(), e.held.clone())
        }) else {
            return DEFAULT_RETRY;
        };
        if let (Some(tsig), None) = (&settings.tsig, &settings.key) {
            // The secret file could not be read so far: no check goes out unsigned.
            match Key::load(tsig) {
                Ok(key) => {
                    tracing::info!(zone = %origin, "TSIG key read");
                    let mut with_key = (*settings).clone();
                    with_key.key = Some(key);
                    settings = Arc::new(with_key);
                    self.with_entry(origin, |e| e.settings = settings.clone());
                }
                Err(e) => return self.failed(&settings, format!("TSIG key: {e}")).await,
            }
        }
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

    pub(super) async fn check_primary(
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

    pub(super) async fn succeeded(
        self: &Arc<Self>,
        settings: &Settings,
        found: Checked,
    ) -> Duration {
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

    pub(super) async fn failed(self: &Arc<Self>, settings: &Settings, err: String) -> Duration {
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

    pub(super) async fn publish(&self) {
        if let Some(p) = self.publish.get().cloned()
            && let Err(e) = tokio::task::spawn_blocking(move || p()).await
        {
            tracing::error!(error = %e, "publishing secondary zones failed");
        }
    }
}

/// The zone `base` after the IXFR steps `diffs`, ending at `soa`: the records held minus
/// those removed plus those added (a record added twice is kept once, as a zone file's
/// would be), checked like any zone. Only the changed records are looked at; the rest is
/// carried over as is.
pub(super) fn apply(
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
