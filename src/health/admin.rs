//! The operator's admin state (`drained` / `enabled`) per target, kept in a small JSON
//! state file so a drain survives a restart.
//!
//! The file is written atomically: a temporary file in the same directory is written,
//! fsynced and renamed over the old one, then the directory is fsynced, so a crash leaves
//! either the old or the new file, never half of one. Only drained targets are stored;
//! every other target is enabled. A drained target stays drained while it is absent from
//! DNS, so it is still drained when it comes back.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use super::AdminState;
use crate::target::TargetKey;

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
}

/// Admin state of every target that is not simply enabled.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminTable {
    states: BTreeMap<TargetKey, AdminState>,
}

impl AdminTable {
    /// The admin state of a target (enabled unless set).
    pub fn get(&self, key: &TargetKey) -> AdminState {
        self.states.get(key).copied().unwrap_or_default()
    }

    /// Sets a target's admin state; returns true if it changed.
    pub fn set(&mut self, key: TargetKey, state: AdminState) -> bool {
        let old = self.get(&key);
        match state {
            AdminState::Enabled => {
                self.states.remove(&key);
            }
            AdminState::Drained => {
                self.states.insert(key, state);
            }
        }
        old != state
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
