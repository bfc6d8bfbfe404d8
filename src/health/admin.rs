//! The operator's admin state (`drained` / `enabled`) per target, kept in a small JSON
//! state file so a drain survives a restart.
//!
//! The file is written atomically through [`crate::atomic_file`]: a temporary file in the
//! same directory is created (never through a symlink), written, fsynced and renamed over
//! the old one, then the directory is fsynced, so a crash leaves either the old or the new
//! file, never half of one. At start a file that cannot be used is moved aside and sipdns
//! starts with no drained targets ([`AdminTable::load_at_start`]). Only drained targets are stored;
//! every other target is enabled. A drained target stays drained while it is absent from
//! DNS, so it is still drained when it comes back.
//!
//! A drain may carry a [`Drain`]: an end time (a maintenance window that ends by itself,
//! even across a restart: the end is stored as wall-clock time), a note and who set it.

use std::{
    collections::BTreeMap,
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
    /// Which kind of failure (the metric label).
    pub kind: StateFileProblem,
}

/// The kinds of [`StateFileError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateFileProblem {
    /// It could not be read (permissions, a directory, an I/O error).
    Unreadable,
    /// It is empty (a crash of an editor, a full disk).
    Empty,
    /// Not the format sipdns writes.
    Corrupt,
    /// It could not be written.
    Write,
}

impl StateFileProblem {
    /// The `reason` label of `sipdns_state_file_quarantined_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreadable => "unreadable",
            Self::Empty => "empty",
            Self::Corrupt => "corrupt",
            Self::Write => "write",
        }
    }
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
        let with = |kind: StateFileProblem| {
            move |reason: String| StateFileError {
                path: path.to_owned(),
                reason,
                kind,
            }
        };
        let err = with(StateFileProblem::Corrupt);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => {
                return Err(with(StateFileProblem::Unreadable)(format!(
                    "cannot read: {e}"
                )));
            }
        };
        if text.trim().is_empty() {
            return Err(with(StateFileProblem::Empty)("empty".to_owned()));
        }
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
            kind: StateFileProblem::Write,
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
            kind: StateFileProblem::Write,
        })?;
        text.push('\n');
        crate::atomic_file::write(path, text.as_bytes()).map_err(|e| err("cannot write", e))
    }

    /// The admin table at start-up: [`Self::load`], except that a state file which cannot
    /// be used — unreadable, empty, not valid JSON, an unknown version or a bad entry — must
    /// not keep the office's DNS down (systemd would restart sipdns in a loop). It is moved
    /// aside to `<name>.corrupt-<UTC timestamp>` for the operator to look at, logged as an
    /// error, counted in `sipdns_state_file_quarantined_total`, and sipdns starts with no
    /// drained targets.
    pub fn load_at_start(path: &Path, metrics: &crate::metrics::Metrics) -> Self {
        let e = match Self::load(path) {
            Ok(table) => return table,
            Err(e) => e,
        };
        let aside = quarantine_path(path, SystemTime::now());
        let moved = std::fs::rename(path, &aside);
        metrics
            .state_file_quarantined
            .with_label_values(&[e.kind.label()])
            .inc();
        match moved {
            Ok(()) => {
                crate::atomic_file::sync_dir(path);
                tracing::error!(
                    file = %path.display(),
                    moved_to = %aside.display(),
                    error = %e,
                    "the admin state file cannot be used: moved aside, starting with no drained targets"
                );
            }
            Err(me) => tracing::error!(
                file = %path.display(),
                error = %e,
                move_error = %me,
                "the admin state file cannot be used and cannot be moved aside: starting with no drained targets"
            ),
        }
        Self::default()
    }

    /// What [`Self::load_at_start`] would do with `path`, in one line for `sipdns check`.
    /// Never an error: a bad state file does not stop sipdns from starting.
    pub fn check(path: &Path) -> String {
        match Self::load(path) {
            Ok(_) if !path.exists() => {
                format!(
                    "state file {}: absent, starts with no drained targets",
                    path.display()
                )
            }
            Ok(t) => format!(
                "state file {}: ok — {} drained targets",
                path.display(),
                t.states.len()
            ),
            Err(e) => format!(
                "warning: {e}; at start sipdns would move it aside to {} and start with no \
                 drained targets",
                quarantine_path(path, SystemTime::now()).display()
            ),
        }
    }
}

/// `<path>.corrupt-<UTC timestamp>`, e.g. `state.json.corrupt-20261207T013000Z`.
fn quarantine_path(path: &Path, now: SystemTime) -> PathBuf {
    let stamp = humantime::format_rfc3339_seconds(now)
        .to_string()
        .replace(['-', ':'], "");
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".corrupt-{stamp}"));
    path.with_file_name(name)
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

    #[test]
    fn an_unusable_file_is_moved_aside_counted_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let metrics = crate::metrics::Metrics::new();
        let count = |reason: &str| {
            metrics
                .state_file_quarantined
                .with_label_values(&[reason])
                .get()
        };
        let aside = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("state.json.corrupt-"))
                .collect()
        };
        // Empty.
        std::fs::write(&path, "").unwrap();
        assert_eq!(
            AdminTable::load(&path).unwrap_err().kind,
            StateFileProblem::Empty
        );
        assert!(AdminTable::check(&path).contains("would move it aside"));
        assert_eq!(
            AdminTable::load_at_start(&path, &metrics),
            AdminTable::default()
        );
        assert!(!path.exists());
        let moved = aside(dir.path());
        assert_eq!(moved.len(), 1, "{moved:?}");
        assert!(moved[0].ends_with('Z'), "{moved:?}");
        assert_eq!(count("empty"), 1);
        // Garbage JSON: moved aside with its content kept for the operator.
        let sub = dir.path().join("garbage");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("state.json");
        std::fs::write(&path, "{\"version\":1,\"drained\":[").unwrap();
        assert_eq!(
            AdminTable::load_at_start(&path, &metrics),
            AdminTable::default()
        );
        assert_eq!(count("corrupt"), 1);
        let moved = aside(&sub);
        assert_eq!(
            std::fs::read_to_string(sub.join(&moved[0])).unwrap(),
            "{\"version\":1,\"drained\":["
        );
        // Unreadable: a directory where the file should be.
        let sub = dir.path().join("unreadable");
        std::fs::create_dir(&sub).unwrap();
        let path = sub.join("state.json");
        std::fs::create_dir(&path).unwrap();
        assert_eq!(
            AdminTable::load(&path).unwrap_err().kind,
            StateFileProblem::Unreadable
        );
        assert_eq!(
            AdminTable::load_at_start(&path, &metrics),
            AdminTable::default()
        );
        assert_eq!(count("unreadable"), 1);
        assert!(!path.exists());
        assert_eq!(aside(&sub).len(), 1);
        // A good file is loaded and left alone; a missing one is empty.
        let k: TargetKey = "192.0.2.10:5060/udp".parse().unwrap();
        let mut t = AdminTable::default();
        t.set(k, AdminState::Drained);
        t.save(&path).unwrap();
        assert_eq!(AdminTable::load_at_start(&path, &metrics), t);
        assert!(AdminTable::check(&path).contains("ok — 1 drained targets"));
        let missing = sub.join("missing.json");
        assert!(AdminTable::check(&missing).contains("absent"));
    }
}
