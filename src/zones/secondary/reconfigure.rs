//! A reloaded config's `zones.secondary` and `zones.catalog_groups`, applied to the zones
//! followed: entries added start being followed (from their disk copy, if one is there);
//! entries removed stop being served, their copies are deleted and their series taken out
//! of the metrics; entries changed are followed again with their new settings from the
//! copy on disk (a catalog with its members); and every TSIG secret file is read again (a
//! zone whose key changed is checked with it at once). `zones.secondary_dir` is read at
//! start only.

use std::{collections::BTreeMap, sync::Arc};

use super::{Role, Secondaries, Settings, State, disk, settings_of, tsig::Key};
use crate::{
    config::{SecondaryConfig, TsigConfig, ZonesConfig},
    record::DomainName,
};

impl Secondaries {
    /// Brings the zones followed in line with `config` (a reload's, validated and about to
    /// be installed). Blocking file I/O (disk copies, key files): call it off the async
    /// workers. The caller installs the overlay afterwards, so zones added from a disk copy
    /// answer with the reload that added them.
    pub fn reconfigure(self: &Arc<Self>, config: &ZonesConfig) {
        if config.secondary_dir != self.dir {
            tracing::warn!(
                from = %self.dir.display(),
                to = %config.secondary_dir.display(),
                "zones.secondary_dir: a change takes a restart; the zones stay where they are"
            );
        }
        let groups_changed = self
            .groups
            .lock()
            .map(|mut g| {
                let changed = *g != config.catalog_groups;
                *g = config.catalog_groups.clone();
                changed
            })
            .unwrap_or(false);
        let before = self
            .configured
            .lock()
            .map(|mut c| std::mem::replace(&mut *c, config.secondary.clone()))
            .unwrap_or_default();
        let before = by_origin(&before);
        let after = by_origin(&config.secondary);

        // Entries gone from the config (their copies deleted), and entries changed (followed
        // again: their copies stay and are read back at once).
        let mut gone = Vec::new();
        let mut again = Vec::new();
        for (origin, was) in &before {
            match after.get(origin) {
                None => gone.push(origin.clone()),
                Some(now) if now != was || (groups_changed && now.catalog.is_some()) => {
                    again.push(origin.clone());
                }
                Some(_) => {}
            }
        }
        let deleted = self.stop_following(&gone);
        self.stop_following(&again);
        let mut added = Vec::new();
        for (origin, c) in &after {
            if before.contains_key(origin) && !again.contains(origin) {
                continue;
            }
            match settings_of(c) {
                Ok(settings) => added.extend(self.follow(settings)),
                Err(e) => tracing::error!(zone = %origin, error = %e, "zones.secondary"),
            }
        }
        self.read_keys_again();
        for origin in &added {
            self.spawn(origin);
        }
        for origin in &deleted {
            self.forget_metrics(origin);
            let _ = std::fs::remove_file(disk::path_of(&self.dir, origin));
        }
        if !gone.is_empty() || !again.is_empty() || !added.is_empty() {
            tracing::info!(
                removed = gone.len(),
                changed = again.len(),
                followed = added.len(),
                "zones.secondary reloaded"
            );
        }
    }

    /// Stops following `origins` and, for a catalog, its members; returns every zone
    /// stopped (the copies to delete when the entries are gone for good).
    fn stop_following(&self, origins: &[DomainName]) -> Vec<DomainName> {
        let Ok(mut s) = self.state.lock() else {
            return Vec::new();
        };
        let State { entries, serving } = &mut *s;
        let stopped: Vec<DomainName> = entries
            .iter()
            .filter(|(o, e)| {
                origins.contains(o)
                    || (e.settings.role == Role::Member
                        && e.settings
                            .catalog
                            .as_ref()
                            .is_some_and(|c| origins.contains(c)))
            })
            .map(|(o, _)| o.clone())
            .collect();
        for o in &stopped {
            if let Some(e) = entries.remove(o) {
                e.stop.cancel();
            }
            serving.remove(o);
        }
        stopped
    }

    /// Follows one `zones.secondary` entry (a catalog with the members its copy names);
    /// returns the zones added.
    fn follow(&self, settings: Settings) -> Vec<DomainName> {
        let origin = settings.origin.clone();
        let catalog = settings.role == Role::Catalog;
        if !self.add_entry(settings) {
            return Vec::new();
        }
        let mut added = vec![origin.clone()];
        if catalog && let Some(zone) = self.with_entry(&origin, |e| e.held.clone()).flatten() {
            added.extend(self.read_catalog(&origin, &zone).0);
        }
        added
    }

    /// Reads every zone's TSIG secret file again; a zone whose secret changed is checked
    /// with the new one at once (a file that cannot be read keeps the key held).
    fn read_keys_again(&self) {
        // Each file once (a catalog's members share its key), outside the lock.
        let mut files: Vec<TsigConfig> = Vec::new();
        if let Ok(s) = self.state.lock() {
            for e in s.entries.values() {
                if let Some(t) = &e.settings.tsig
                    && !files.contains(t)
                {
                    files.push(t.clone());
                }
            }
        }
        let keys: Vec<(TsigConfig, Key)> = files
            .into_iter()
            .filter_map(|t| match Key::load(&t) {
                Ok(k) => Some((t, k)),
                Err(e) => {
                    tracing::warn!(error = %e, "TSIG key not read again: the key held stays");
                    None
                }
            })
            .collect();
        let Ok(mut s) = self.state.lock() else {
            return;
        };
        for (origin, e) in &mut s.entries {
            let Some((_, key)) = keys
                .iter()
                .find(|(t, _)| e.settings.tsig.as_ref() == Some(t))
            else {
                continue;
            };
            if e.settings.key.as_ref().is_some_and(|k| k.same_secret(key)) {
                continue;
            }
            tracing::info!(zone = %origin, "TSIG key read again: changed");
            let mut settings = (*e.settings).clone();
            settings.key = Some(key.clone());
            e.settings = Arc::new(settings);
            // Checked with it now (a NOTIFY signed with it may have been refused).
            e.wake.notify_one();
        }
    }
}

/// The entries of `zones.secondary` by the zone (or catalog) they name.
fn by_origin(entries: &[SecondaryConfig]) -> BTreeMap<DomainName, SecondaryConfig> {
    entries
        .iter()
        .filter_map(|c| Some((c.zone.clone().or_else(|| c.catalog.clone())?, c.clone())))
        .collect()
}
