//! The state in force — config and static zones, swapped whole on reload — and how it is
//! built from disk: [`load`] at start, [`load_text_reusing`] on a reload (reusing what did
//! not change), [`check`] for `sipdns check`. `resolve` reads it, `reload` and the API's
//! zone edits build the next one; nothing here knows about sockets or tasks.

use std::{path::Path, sync::Arc};

use crate::{
    config::{Config, ConfigError, FileError},
    zones::{self, ZoneError, ZoneStore},
};

/// The config and zones in force, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct Data {
    /// The config.
    pub config: Arc<Config>,
    /// The static zones.
    pub zones: Arc<ZoneStore>,
}

/// Why config or zones could not be loaded: every problem found, each naming file, line
/// and field.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A zone file is unreadable or invalid.
    #[error(transparent)]
    Zones(#[from] ZoneError),
}

/// Loads config and zones, or every error found in them.
pub fn load(path: &Path) -> Result<(Config, ZoneStore), LoadError> {
    load_reusing(path, None)
}

/// [`load`] for a reload: zone files unchanged since `previous` was read are not parsed
/// again.
pub fn load_reusing(
    path: &Path,
    previous: Option<&ZoneStore>,
) -> Result<(Config, ZoneStore), LoadError> {
    let text = read_config(path)?;
    load_text_reusing(path, &text, None, previous)
}

/// Reads the config file.
pub fn read_config(path: &Path) -> Result<String, LoadError> {
    std::fs::read_to_string(path).map_err(|e| {
        LoadError::Config(ConfigError::from(FileError::whole(
            path,
            format!("cannot read config: {e}"),
        )))
    })
}

/// [`load_reusing`] with the config text already read; `previous_config` is the text and
/// config in force, whose parse is reused if the text is the same.
pub fn load_text_reusing(
    path: &Path,
    text: &str,
    previous_config: Option<(&str, &Config)>,
    previous: Option<&ZoneStore>,
) -> Result<(Config, ZoneStore), LoadError> {
    let config = Config::from_text_reusing(path, text, previous_config)?;
    let zones = zones::load_dir_limited(
        &config.zones.dir,
        &config.zones.modes,
        config.zones.max_file_size,
        previous,
    )?;
    Ok((config, zones))
}

/// `sipdns check`: loads the config and every zone; returns a one-line summary.
pub fn check(path: &Path) -> Result<String, LoadError> {
    let (config, zones) = load(path)?;
    let mut summary = format!(
        "{}: ok — {} zones, {} static records, {} SIP domains",
        path.display(),
        zones.len(),
        zones.record_count(),
        config.sip.domains.len()
    );
    for w in crate::config::validate::warnings(&config) {
        summary.push_str(&format!("\nwarning: {}: {}", w.field, w.reason));
    }
    Ok(summary)
}
