//! Hot reload: on SIGHUP, a change of the config file or of `zones/`, or an API call, the
//! new config and zones are read, parsed and validated off to the side, then swapped in with
//! one atomic store. A bad version is rejected whole: the running one stays, the error is
//! logged, counted and kept for `/readyz` and the API. Queries never wait on a reload: they
//! read the old or the new state through an `ArcSwap`.
//!
//! Whatever must follow the state in force (the forwarder's upstream settings, the prober's
//! domains) follows it one way: [`Reloader::follow`], over a `watch` of the applied
//! generation. Zone edits through the API are applied here too ([`Reloader::edit_zone`]),
//! under the same lock as reloads.

use std::{
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use tokio::sync::watch;

use crate::{
    config::Config,
    metrics::Metrics,
    record::DomainName,
    resolve::Resolver,
    shutdown::CancellationToken,
    state::{self, Data, LoadError},
    upstream::{self, UpstreamError},
    zones::{
        ZoneStore,
        edit::{self, Change, EditError, Edited, IfMatch},
    },
};

/// Why a reload was rejected; the running config and zones stay in force in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The config or a zone is unreadable or invalid: the operator's to fix.
    #[error(transparent)]
    Invalid(#[from] LoadError),
    /// The new upstream settings cannot be used (e.g. an unreadable resolv.conf).
    #[error("upstream settings rejected: {0}")]
    Upstream(#[from] UpstreamError),
    /// A thread panicked while holding the reload lock (a bug).
    #[error("reload lock poisoned")]
    Poisoned,
    /// The reload task did not finish (it panicked or was cancelled; a bug).
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// True when the error is ours, not the operator's: a bug, not a bad file.
    pub fn is_internal(&self) -> bool {
        matches!(self, Self::Poisoned | Self::Task(_))
    }
}

/// The outcome of the last reload attempt.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    /// Unix time of the last successful load.
    pub last_ok: f64,
    /// The error of the last attempt, if it failed (cleared by a later success).
    pub last_error: Option<String>,
    /// Successful reloads since start.
    pub reloads_ok: u64,
    /// Rejected reloads since start.
    pub reloads_failed: u64,
}

/// Zones of another source laid over every store loaded from `zones/` (the transferred
/// secondary zones, [`crate::zones::secondary`]), and the SIP domains they bring (`None`:
/// the config as it is).
pub type ZoneOverlay =
    Arc<dyn Fn(&Config, &ZoneStore) -> (Option<Config>, ZoneStore) + Send + Sync>;

/// Told of every config a reload is about to install, validated, before the overlay is
/// laid over it (the secondary zones follow `zones.secondary`).
pub type ConfigHook = Arc<dyn Fn(&Config) + Send + Sync>;

/// Told of every reload attempt's result (the webhooks).
pub type ResultHook = Box<dyn Fn(Result<(), &str>) + Send + Sync>;

/// Reloads config and zones for one running server.
pub struct Reloader {
    config_path: PathBuf,
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
    status: Mutex<ReloadStatus>,
    /// Serializes reloads and zone writes, so two cannot interleave their read-modify-swap.
    /// A std mutex: held only around synchronous file reads and the swap, never across an
    /// `.await`.
    write_lock: Mutex<()>,
    /// The number of states installed since start (reloads and zone edits): followers wait
    /// on it ([`Self::follow`]).
    applied: watch::Sender<u64>,
    /// Told of every reload attempt's result ([`Self::on_result`]).
    results: Mutex<Vec<ResultHook>>,
    /// The text of the config file in force, once a reload has read it: an unchanged
    /// config is not parsed again when only a zone changed.
    config_text: Mutex<Option<String>>,
    /// Secondary zones laid over every reloaded state.
    overlay: Mutex<Option<ZoneOverlay>>,
    /// Told of every reloaded config before the overlay ([`Self::before_overlay`]).
    config_hook: Mutex<Option<ConfigHook>>,
}

impl Reloader {
    /// A reloader for the server whose config file is `config_path`.
    pub fn new(config_path: &Path, resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        let status = ReloadStatus {
            last_ok: unix_now(),
            ..ReloadStatus::default()
        };
        metrics.reload_timestamp.set(status.last_ok);
        Self {
            config_path: config_path.to_path_buf(),
            resolver,
            metrics,
            status: Mutex::new(status),
            write_lock: Mutex::new(()),
            applied: watch::Sender::new(0),
            results: Mutex::new(Vec::new()),
            config_text: Mutex::new(None),
            overlay: Mutex::new(None),
            config_hook: Mutex::new(None),
        }
    }

    /// The applied generation: changes after every state installed (a reload or a zone
    /// edit), once the new state is in force.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Calls `follower` with the state in force after every state installed, until
    /// `shutdown`. Several installs in a row may be seen once, with the latest state:
    /// followers apply the state, not the steps to it. Spawn the returned future.
    pub fn follow(
        &self,
        shutdown: CancellationToken,
        mut follower: impl FnMut(&Data) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut applied = self.subscribe();
        let resolver = self.resolver.clone();
        async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    changed = applied.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        follower(&resolver.data());
                    }
                }
            }
        }
    }

    /// Lays `overlay` over the state of every later reload.
    pub fn set_overlay(&self, overlay: ZoneOverlay) {
        if let Ok(mut o) = self.overlay.lock() {
            *o = Some(overlay);
        }
    }

    /// Calls `hook` with every reloaded config, validated, before the overlay is laid over
    /// it (under the reload lock, on the blocking pool).
    pub fn before_overlay(&self, hook: ConfigHook) {
        if let Ok(mut h) = self.config_hook.lock() {
            *h = Some(hook);
        }
    }

    fn overlaid(&self, config: Config, zones: ZoneStore) -> (Config, ZoneStore) {
        match self.overlay.lock().ok().and_then(|o| o.clone()) {
            Some(f) => {
                let (c, z) = f(&config, &zones);
                (c.unwrap_or(config), z)
            }
            None => (config, zones),
        }
    }

    /// Swaps in the state in force with the overlay laid over it again (a secondary zone
    /// was transferred, expired or removed): atomically like a reload, under the same
    /// lock, followed the same way; not counted as a reload.
    pub fn apply_overlay(&self) {
        let Ok(_guard) = self.write_lock.lock() else {
            return;
        };
        let Some(f) = self.overlay.lock().ok().and_then(|o| o.clone()) else {
            return;
        };
        let current = self.resolver.data();
        let (config, zones) = f(&current.config, &current.zones);
        self.resolver.swap(Data {
            config: config.map_or_else(|| current.config.clone(), Arc::new),
            zones: Arc::new(zones),
        });
        self.applied.send_modify(|g| *g += 1);
        drop(current);
    }

    /// Runs `hook` with the result of every reload attempt (not of API zone edits).
    pub fn on_result(&self, hook: ResultHook) {
        if let Ok(mut h) = self.results.lock() {
            h.push(hook);
        }
    }

    fn tell(&self, result: Result<(), &str>) {
        if let Ok(hooks) = self.results.lock() {
            for h in hooks.iter() {
                h(result);
            }
        }
    }

    /// The config file.
    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The last outcome.
    pub fn status(&self) -> ReloadStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Re-reads config and zones; swaps them in only if every part is valid.
    pub fn reload(&self) -> Result<(), ReloadError> {
        let _guard = self.write_lock.lock().map_err(|_| ReloadError::Poisoned)?;
        let current = self.resolver.data();
        let loaded = self.load(&current);
        match loaded {
            Ok((data, text)) => {
                self.install(data);
                if let Ok(mut t) = self.config_text.lock() {
                    *t = Some(text);
                }
                tracing::info!(event = "reload", ok = true, path = %self.config_path.display(), "config and zones reloaded");
                self.tell(Ok(()));
                // `current` is released only after the swap: freeing a large old state
                // (tens of ms for 100,000 records) then happens after the new one is in
                // force.
                drop(current);
                crate::memory::release_freed();
                Ok(())
            }
            Err(e) => {
                let text = e.to_string();
                self.failed(&text);
                self.tell(Err(&text));
                Err(e)
            }
        }
    }

    /// Reads, parses and validates the next state beside `current`: its data and the
    /// config text it came from.
    fn load(&self, current: &Data) -> Result<(Data, String), ReloadError> {
        let text = state::read_config(&self.config_path)?;
        let was = self.config_text.lock().ok().and_then(|t| t.clone());
        let previous = was.as_deref().map(|was| (was, &*current.config));
        let (config, zones) =
            state::load_text_reusing(&self.config_path, &text, previous, Some(&current.zones))?;
        // Checked here, applied by the forwarder's follower once the state is in force.
        upstream::check_config(&config.upstream)?;
        if let Some(hook) = self.config_hook.lock().ok().and_then(|h| h.clone()) {
            hook(&config);
        }
        let (config, zones) = self.overlaid(config, zones);
        let data = Data {
            config: Arc::new(config),
            zones: Arc::new(zones),
        };
        Ok((data, text))
    }

    /// Carries out a zone edit from the API ([`edit::apply`]) on the zones in force and
    /// swaps the result in, under the write lock: serialized with reloads and other edits.
    /// Blocking file I/O: call it from the blocking pool.
    pub fn edit_zone(
        &self,
        origin: &DomainName,
        if_match: &IfMatch,
        change: Change,
    ) -> Result<Edited, EditError> {
        let _guard = self
            .write_lock
            .lock()
            .map_err(|_| EditError::Io(ReloadError::Poisoned.to_string()))?;
        let current = self.resolver.data();
        let pending = self.status().last_error;
        let (zones, edited) = edit::apply(
            &current.zones,
            &current.config.zones.dir,
            origin,
            if_match,
            change,
            pending.as_deref(),
        )?;
        self.install(Data {
            config: current.config.clone(),
            zones: Arc::new(zones),
        });
        Ok(edited)
    }

    fn install(&self, data: Data) {
        self.resolver.swap(data);
        self.applied.send_modify(|g| *g += 1);
        let now = unix_now();
        self.metrics.reloads.with_label_values(&["ok"]).inc();
        self.metrics.reload_timestamp.set(now);
        self.metrics.reload_last_ok.set(1);
        if let Ok(mut s) = self.status.lock() {
            s.last_ok = now;
            s.last_error = None;
            s.reloads_ok += 1;
        }
    }

    fn failed(&self, e: &str) {
        self.metrics.reloads.with_label_values(&["error"]).inc();
        self.metrics.reload_last_ok.set(0);
        tracing::error!(event = "reload", ok = false, error = %e, "reload rejected; keeping the running config");
        if let Ok(mut s) = self.status.lock() {
            s.last_error = Some(e.to_owned());
            s.reloads_failed += 1;
        }
    }

    /// Watches the config file and the zones directory (by modification time and file
    /// list, every `every`) and reloads on a change; also reloads on SIGHUP. Runs until
    /// `shutdown`.
    pub async fn watch(self: Arc<Self>, every: Duration, shutdown: CancellationToken) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        let mut last = self.fingerprint();
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            #[cfg(unix)]
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_recv = std::future::pending::<()>();
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = hup_recv => {
                    tracing::info!("SIGHUP received, reloading");
                    self.reload_blocking().await;
                    last = self.fingerprint();
                }
                _ = tick.tick() => {
                    let now = self.fingerprint();
                    if now != last {
                        last = now;
                        self.reload_blocking().await;
                    }
                }
            }
        }
    }

    /// [`Self::reload`] on the blocking pool: reading and parsing 100,000 records takes a
    /// while, and must not hold a runtime worker that TCP connections and upstream waits use.
    async fn reload_blocking(self: &Arc<Self>) {
        let this = self.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || this.reload()).await {
            tracing::error!(error = %e, "reload task failed");
        }
    }

    /// (path, mtime, len) of the config file and every file in the zones directory.
    fn fingerprint(&self) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
        let stat = |p: &Path| {
            let m = std::fs::metadata(p).ok();
            (
                p.to_path_buf(),
                m.as_ref().and_then(|m| m.modified().ok()),
                m.map_or(0, |m| m.len()),
            )
        };
        let mut out = vec![stat(&self.config_path)];
        let dir = self.resolver.data().config.zones.dir.clone();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            let mut files: Vec<PathBuf> =
                entries.filter_map(Result::ok).map(|e| e.path()).collect();
            files.sort();
            out.extend(files.iter().map(|p| stat(p)));
        }
        out
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
