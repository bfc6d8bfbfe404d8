//! Catalog membership: a new version of a catalog zone starts following the members it
//! adds and stops serving those it removes.

use std::sync::Arc;

use super::{Role, Secondaries, Settings, State, catalog, disk};
use crate::{record::DomainName, zones::Zone};

impl Secondaries {
    /// A new version of catalog `origin`: members added start being followed, members
    /// removed stop being served (and their copies are deleted).
    pub(super) async fn catalog_changed(self: &Arc<Self>, origin: &DomainName, zone: &Zone) {
        let (added, removed) = self.read_catalog(origin, zone);
        for m in &added {
            self.spawn(m);
        }
        for m in &removed {
            self.forget_metrics(m);
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
    pub(super) fn read_catalog(
        &self,
        origin: &DomainName,
        zone: &Zone,
    ) -> (Vec<DomainName>, Vec<DomainName>) {
        let groups = self.groups.lock().map(|g| g.clone()).unwrap_or_default();
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
            let template = m.group.as_ref().and_then(|g| groups.get(g));
            let mode = template.map_or(base.mode, |g| g.mode);
            let settings = Settings {
                origin: m.zone.clone(),
                role: Role::Member,
                primaries: base.primaries.clone(),
                tsig: base.tsig.clone(),
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
