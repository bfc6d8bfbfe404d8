//! The operator's admin state (`drained` / `enabled`) per target, kept in a small JSON
//! state file so a drain survives a restart.
//!
//! The file is written atomically: a temporary file in the same directory is written,
//! fsynced and renamed over the old one, then the directory is fsynced, so a crash leaves
//! either the old or the new file, never half of one. Only drained targets are stored;
//! every other target is enabled. A drained target stays drained while it is absent from
//! DNS, so it is still drained when it comes back.
//!
//! A drain may carry a [`Drain`]: an end time (a maintenance window that ends by itself,
//! even across a restart: the end is stored as wall-clock time), a note and who set it.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::{shutdown::CancellationToken, target::TargetKey};

/// How often the drain timer looks again when no drain ends sooner: a drain set meanwhile,
/// or a step of the wall clock, is noticed within this.
const DRAIN_CHECK: Duration = Duration::from_secs(1);

/// Ends timed drains when their time comes (wall clock, so an end written before a
/// restart holds after it): `end(now)` enables what has ended, `next_end()` tells when the
/// next one ends. Runs until `shutdown`.
pub(super) async fn end_drains(
    next_end: impl Fn() -> Option<SystemTime>,
    end: impl Fn(SystemTime),
    shutdown: CancellationToken,
) {
    loop {
        let now = SystemTime::now();
        end(now);
        let wait = next_end()
            .and_then(|t| t.duration_since(now).ok())
            .unwrap_or(DRAIN_CHECK)
            .clamp(Duration::from_millis(50), DRAIN_CHECK);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Why the state file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("state file {}: {reason}", path.display())]
pub struct StateFileError {
    /// The file.
    pub path: PathBuf,
    /// What went wrong.
    pub reason: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileFormat {
    /// Format version, 1.
    version: u32,
    /// Drained targets, as `192.0.2.10:5060/udp`.
    #[serde(default)]
    drained: Vec<String>,
    /// End time, note and author of drains that have them, by target.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    drains: BTreeMap<String, Drain>,
}

/// The details of a drain: when it ends by itself, why and by whom. All optional.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drain {
    /// When the drain ends by itself (RFC 3339, UTC); `null`: until enabled.
    #[serde(default, with = "rfc3339")]
    pub until: Option<SystemTime>,
    /// The operator's note ("firmware upgrade").
    #[serde(default)]
    pub note: Option<String>,
    /// Who drained it, as the client said (`alice@desk`, `status page`).
    #[serde(default)]
    pub by: Option<String>,
}

impl Drain {
    /// A drain lasting `duration` from now.
    pub fn for_duration(duration: Duration, note: Option<String>, by: Option<String>) -> Self {
        Self {
            until: SystemTime::now().checked_add(duration),
            note,
            by,
        }
    }

    /// True if the drain has an end at or before `now`.
    pub fn ended(&self, now: SystemTime) -> bool {
        self.until.is_some_and(|u| u <= now)
    }
}

/// `Option<SystemTime>` as an RFC 3339 string (second precision) or null.
mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        v: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(t) => s.collect_str(&humantime::format_rfc3339_seconds(*t)),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|t| {
                humantime::parse_rfc3339_weak(&t).map_err(|e| {
                    serde::de::Error::custom(format!("{t:?} is not an RFC 3339 time: {e}"))
                })
            })
            .transpose()
    }
}

/// Admin state of every target that is not simply enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminTable {
    states: BTreeMap<TargetKey, AdminState>,
    /// Details of drains that have any (a subset of the drained keys).
    drains: BTreeMap<TargetKey, Drain>,
}

impl AdminTable {
    /// The admin state of a target (enabled unless set).
    pub fn get(&self, key: &TargetKey) -> AdminState {
        self.states.get(key).copied().unwrap_or_default()
    }

    /// Sets a target's admin state; returns true if it changed. Enabling forgets the
    /// drain's details; draining without details keeps those of a drain in force.
    pub fn set(&mut self, key: TargetKey, state: AdminState) -> bool {
        let old = self.get(&key);
        match state {
            AdminState::Enabled => {
                self.states.remove(&key);
                self.drains.remove(&key);
            }
            AdminState::Drained => {
                self.states.insert(key, state);
            }
        }
        old != state
    }

    /// Drains a target with these details (replacing earlier ones); returns true if the
    /// state or the details changed.
    pub fn drain(&mut self, key: TargetKey, drain: Drain) -> bool {
        let changed = self.set(key, AdminState::Drained);
        let details_changed = if drain == Drain::default() {
            self.drains.remove(&key).is_some()
        } else {
            self.drains.insert(key, drain.clone()) != Some(drain)
        };
        changed || details_changed
    }

    /// The details of a target's drain, if it is drained with any.
    pub fn drain_of(&self, key: &TargetKey) -> Option<&Drain> {
        self.drains.get(key)
    }

    /// Drained targets whose drain has ended at `now`.
    pub fn ended(&self, now: SystemTime) -> Vec<TargetKey> {
        self.drains
            .iter()
            .filter(|(_, d)| d.ended(now))
            .map(|(k, _)| *k)
            .collect()
    }

    /// The earliest end of a timed drain.
    pub fn next_end(&self) -> Option<SystemTime> {
        self.drains.values().filter_map(|d| d.until).min()
    }

    /// True if the table holds a non-default state for this key.
    pub fn contains(&self, key: &TargetKey) -> bool {
        self.states.contains_key(key)
    }

    /// Reads the state file; a missing file is an empty table.
    pub fn load(path: &Path) -> Result<Self, StateFileError> {
        let err = |reason: String| StateFileError {
            path: path.to_owned(),
            reason,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(err(format!("cannot read: {e}"))),
        };
        let file: FileFormat =
            serde_json::from_str(&text).map_err(|e| err(format!("not valid JSON: {e}")))?;
        if file.version != 1 {
            return Err(err(format!("unknown version {}", file.version)));
        }
        let mut table = Self::default();
        for entry in &file.drained {
            let key: TargetKey = entry.parse().map_err(err)?;
            table.set(key, AdminState::Drained);
        }
        for (entry, drain) in file.drains {
            let key: TargetKey = entry.parse().map_err(err)?;
            if table.get(&key) != AdminState::Drained {
                return Err(err(format!(
                    "drains: {entry} has details but is not in drained"
                )));
            }
            table.drain(key, drain);
        }
        Ok(table)
    }

    /// Writes the state file atomically (temp file + fsync + rename + directory fsync).
    pub fn save(&self, path: &Path) -> Result<(), StateFileError> {
        let err = |what: &str, e: std::io::Error| StateFileError {
            path: path.to_owned(),
            reason: format!("{what}: {e}"),
        };
        let file = FileFormat {
            version: 1,
            drained: self
                .states
                .iter()
                .filter(|(_, s)| **s == AdminState::Drained)
                .map(|(k, _)| k.to_string())
                .collect(),
            drains: self
                .drains
                .iter()
                .map(|(k, d)| (k.to_string(), d.clone()))
                .collect(),
        };
        let mut text = serde_json::to_string_pretty(&file).map_err(|e| StateFileError {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
            _ => PathBuf::from("."),
        };
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".to_owned());
        let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)?;
            // The rename is durable only once the directory entry is.
            std::fs::File::open(&dir)?.sync_all()
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            err("cannot write", e)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drained_targets_survive_a_save_and_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(AdminTable::load(&path).unwrap(), AdminTable::default());
        let k: TargetKey = "192.0.2.10:5060/udp".parse().unwrap();
        let k6: TargetKey = "[2001:db8::1]:5061/tls".parse().unwrap();
        let mut t = AdminTable::default();
        assert!(t.set(k, AdminState::Drained));
        assert!(!t.set(k, AdminState::Drained));
        assert!(t.set(k6, AdminState::Drained));
        t.save(&path).unwrap();
        let back = AdminTable::load(&path).unwrap();
        assert_eq!(back.get(&k), AdminState::Drained);
        assert_eq!(back.get(&k6), AdminState::Drained);
        let mut t = back;
        assert!(t.set(k, AdminState::Enabled));
        t.save(&path).unwrap();
        let back = AdminTable::load(&path).unwrap();
        assert_eq!(back.get(&k), AdminState::Enabled);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
    }

    #[test]
    fn a_timed_drain_is_saved_with_its_end_and_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let k: TargetKey = "192.0.2.10:5060/udp".parse().unwrap();
        let end = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let d = Drain {
            until: Some(end),
            note: Some("firmware".into()),
            by: Some("alice".into()),
        };
        let mut t = AdminTable::default();
        assert!(t.drain(k, d.clone()));
        assert!(!t.drain(k, d.clone()));
        t.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("2027-01-15T08:00:00Z"), "{text}");
        let back = AdminTable::load(&path).unwrap();
        assert_eq!(back.drain_of(&k), Some(&d));
        assert_eq!(back.next_end(), Some(end));
        assert!(back.ended(end - Duration::from_secs(1)).is_empty());
        assert_eq!(back.ended(end), vec![k]);
        let mut t = back;
        assert!(t.set(k, AdminState::Enabled));
        assert_eq!(t.drain_of(&k), None);
        assert_eq!(t.next_end(), None);
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        std::fs::write(&path, "{\"version\":1,\"drained\":[\"nonsense\"]}").unwrap();
        let e = AdminTable::load(&path).unwrap_err();
        assert!(e.to_string().contains("state.json"), "{e}");
        std::fs::write(&path, "{").unwrap();
        assert!(AdminTable::load(&path).is_err());
    }
}
