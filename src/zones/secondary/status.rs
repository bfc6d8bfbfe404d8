//! The status rows of the followed zones (API, `sipdns zones`) and their metrics.

use std::{path::PathBuf, time::SystemTime};

use super::{Secondaries, SecondaryStatus, Settings, transfer::serial_of};
use crate::{record::DomainName, zones::Zone};

pub(super) fn new_status(s: &Settings, file: PathBuf) -> SecondaryStatus {
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

    /// Takes a zone followed no more out of the zone series: its last values would stay,
    /// and `SipdnsZoneStale` fire for it once its last success grew old.
    pub(super) fn forget_metrics(&self, origin: &DomainName) {
        let zone = origin.as_str();
        let m = &self.metrics;
        for gauge in [
            &m.zone_serial,
            &m.zone_expiry,
            &m.zone_last_success,
            &m.zone_refresh,
        ] {
            let _ = gauge.remove_label_values(&[zone]);
        }
        for kind in ["axfr", "ixfr"] {
            for result in ["ok", "failed", "rejected", "up_to_date"] {
                let _ = m.zone_transfers.remove_label_values(&[zone, kind, result]);
            }
        }
    }

    pub(super) fn set_serial_metrics(&self, settings: &Settings, zone: &Zone) {
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
}
