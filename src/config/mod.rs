//! The configuration file: serde types (strict: an unknown key is an error), defaults, and
//! loading with errors that name the file, line and field.
//!
//! Loading is parse first ([`yaml::from_str`]), then semantic checks ([`validate`]); both
//! report [`yaml::FileError`]s. Relative paths in the file are taken relative to the
//! directory of the config file, so the same file works whatever the working directory.

mod dns;
mod ops;
mod sip;
pub mod validate;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use dns::*;
pub use ops::*;
pub use sip::*;
pub use yaml::FileError;

/// Why a config could not be loaded: every problem found, each with file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub errors: Vec<FileError>,
}

impl From<FileError> for ConfigError {
    fn from(e: FileError) -> Self {
        Self { errors: vec![e] }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The DNS listener and who may use it.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where names that are not answered statically are forwarded.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Static entries.
    #[serde(default)]
    pub zones: ZonesConfig,
    /// The managed SIP domains and how their servers are probed.
    #[serde(default)]
    pub sip: SipConfig,
    /// The REST API, `/metrics`, `/livez` and `/readyz`.
    #[serde(default)]
    pub api: ApiConfig,
    /// Where operator state that must survive a restart (drained targets) is kept.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How log lines are written.
    #[serde(default)]
    pub log: LogConfig,
    /// Where events (transitions, drains, reloads) are sent.
    #[serde(default)]
    pub events: EventsConfig,
    /// Hints about the phones, for `sipdns check` and `sipdns phones`.
    #[serde(default)]
    pub phones: PhonesConfig,
}
pub(crate) fn default_true() -> bool {
    true
}

/// Durations written for people: `500ms`, `5s`, `1m 30s`, `1d`.
pub mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads a humantime duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. 500ms, 5s, 1d"
            ))
        })
    }

    /// Writes a humantime duration.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// [`human`] for an optional duration (`null` or absent: none).
pub mod human_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads an optional humantime duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. 500ms, 5s, 1d"
                ))
            }),
        }
    }

    /// Writes an optional humantime duration.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are made
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::whole(path, format!("cannot read config: {e}")))?;
        Self::from_text(path, &text)
    }

    /// Parses and validates config text as if read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::from_text_reusing(path, text, None)
    }

    /// [`Self::from_text`] for a reload: if `text` is the text `previous` was read from,
    /// its parse is reused (a config listing 5,000 targets takes tens of milliseconds to
    /// parse, on every edit of a zone file). It is validated again either way: files it
    /// names may have changed.
    pub fn from_text_reusing(
        path: &Path,
        text: &str,
        previous: Option<(&str, &Self)>,
    ) -> Result<Self, ConfigError> {
        let config = match previous {
            Some((was, config)) if was == text => config.clone(),
            _ => {
                let mut config: Self = yaml::from_str(path, text)?;
                let base = path.parent().unwrap_or_else(|| Path::new("."));
                config.resolve_paths(base);
                config
            }
        };
        let errors = validate::validate(&config)
            .into_iter()
            .map(|v| FileError::at_field(path, text, &v.field, v.reason))
            .collect::<Vec<_>>();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { errors })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.zones.dir);
        fix(&mut self.zones.secondary_dir);
        for s in &mut self.zones.secondary {
            if let Some(t) = &mut s.tsig {
                fix(&mut t.secret_file);
            }
        }
        if let Some(p) = &mut self.state_file {
            fix(p);
        }
        if let Some(p) = &mut self.api.token_file {
            fix(p);
        }
        for w in &mut self.events.webhooks {
            if let Some(p) = &mut w.token_file {
                fix(p);
            }
        }
        if let Some(p) = &mut self.sip.probe.tls.ca_file {
            fix(p);
        }
        fix(&mut self.upstream.resolv_conf);
    }
}
