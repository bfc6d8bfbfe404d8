//! The operator's HTTP interface on its own listener: the REST API under `/api/v1` (zones
//! and records, targets, explain, reload, the OpenAPI document), plus the open `/livez`,
//! `/readyz` and `/metrics`.
//!
//! Every route but those three needs `Authorization: Bearer <token>` ([`auth`]). Handlers
//! ([`routes`]) only extract, call one domain method and serialize; zone edits are
//! `zones::edit`, run by the reloader (`Reloader::edit_zone`). The route table in [`routes::table`] is the one list the router is built from,
//! and the OpenAPI document ([`openapi`]) is checked against it by a test.
//!
//! Shared state is one cheap-to-clone [`ApiState`] of `Arc` handles, handed to axum through
//! `State`. Nothing in it is locked across an `.await`: zone edits run on the
//! blocking pool under the reloader's write lock.

pub mod auth;
mod error;
pub mod openapi;
pub mod routes;

use std::sync::Arc;

use tokio::{net::TcpListener, sync::watch};

use crate::{
    health::AdminState,
    metrics::Metrics,
    reload::{ReloadStatus, Reloader},
    resolve::Resolver,
    shutdown::CancellationToken,
    target::TargetKey,
    zones::secondary::Secondaries,
};

pub use auth::ApiToken;
pub use routes::{RouteSpec, router, table};

/// Why a target's admin state could not be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// The prober knows no such target (answered 404).
    #[error("unknown target {0}")]
    UnknownTarget(String),
    /// Anything else, such as the state file not being writable (answered 500).
    #[error("{0}")]
    Failed(String),
}

/// What the API needs of the prober: the target list and the drain / enable switch. The
/// prober's handle implements it; tests use a fake.
pub trait TargetControl: Send + Sync {
    /// Every target with health, admin state, last reply code, RTT, since and transitions,
    /// as the JSON array the API returns.
    fn list(&self) -> serde_json::Value;

    /// Drains or enables one target. May block on file I/O (the admin state file): the API
    /// calls it on the blocking pool.
    fn set_admin(&self, key: &TargetKey, state: AdminState) -> Result<(), AdminError>;
}

/// Everything a handler can reach. Cloned per request (a few `Arc`s).
#[derive(Clone)]
pub struct ApiState {
    /// Config, zones and the lookup path (explain).
    pub(crate) resolver: Arc<Resolver>,
    /// Reloads and serializes zone edits with reloads.
    pub(crate) reloader: Arc<Reloader>,
    /// The registry `/metrics` serves.
    pub(crate) metrics: Arc<Metrics>,
    /// The bearer token; `None` refuses every protected route.
    pub(crate) token: Option<Arc<ApiToken>>,
    /// The prober's targets, once connected.
    pub(crate) targets: Option<Arc<dyn TargetControl>>,
    /// Turns true when the first probe round is done; `None`: no prober, nothing to wait
    /// for.
    pub(crate) first_round: Option<watch::Receiver<bool>>,
    /// The secondary zones, whose status `GET /api/v1/zones` shows.
    pub(crate) secondaries: Option<Arc<Secondaries>>,
}

impl ApiState {
    /// State over a running server's parts. Without a token every protected route answers
    /// 401 (a warning is logged once, here).
    pub fn new(
        resolver: Arc<Resolver>,
        reloader: Arc<Reloader>,
        metrics: Arc<Metrics>,
        token: Option<ApiToken>,
    ) -> Self {
        if token.is_none() {
            tracing::warn!(
                "no API token configured (api.token_file or the api.token_env variable): \
                 every /api/v1 route will answer 401"
            );
        }
        Self {
            resolver,
            reloader,
            metrics,
            token: token.map(Arc::new),
            targets: None,
            first_round: None,
            secondaries: None,
        }
    }

    /// Connects the prober's target list and admin switch.
    pub fn with_targets(mut self, targets: Arc<dyn TargetControl>) -> Self {
        self.targets = Some(targets);
        self
    }

    /// Connects the secondary zones' status.
    pub fn with_secondaries(mut self, secondaries: Arc<Secondaries>) -> Self {
        self.secondaries = Some(secondaries);
        self
    }

    /// `/readyz` waits for this to turn true (the prober's first round).
    pub fn with_readiness(mut self, first_round: watch::Receiver<bool>) -> Self {
        self.first_round = Some(first_round);
        self
    }
}

/// Where the first probe round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProbeRound {
    /// Done (or given up after `startup_grace`).
    Done,
    /// Still running.
    Pending,
    /// No prober is connected: nothing to wait for.
    NoProber,
}

/// The `/readyz` detail.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Readiness {
    /// True when phones can be served well: config and zones loaded, first round done.
    pub ready: bool,
    /// Config and zones are loaded (always true once the server runs: a server that could
    /// not load them did not start).
    pub config_loaded: bool,
    /// Static zones in force.
    pub zones: usize,
    /// The prober's first round.
    pub first_probe_round: ProbeRound,
    /// The last reload: when it last succeeded and, if the last attempt failed, why (the
    /// running config stays in force then, so this alone does not make the server unready).
    pub reload: ReloadStatus,
}

impl ApiState {
    /// What `/readyz` reports.
    pub fn readiness(&self) -> Readiness {
        let first_probe_round = match &self.first_round {
            None => ProbeRound::NoProber,
            Some(rx) if *rx.borrow() => ProbeRound::Done,
            Some(_) => ProbeRound::Pending,
        };
        let data = self.resolver.data();
        Readiness {
            ready: first_probe_round != ProbeRound::Pending,
            config_loaded: true,
            zones: data.zones.len(),
            first_probe_round,
            reload: self.reloader.status(),
        }
    }

    /// The Prometheus text. Gauges that mirror a size are brought up to date first.
    pub fn scrape(&self) -> String {
        let cache = self.resolver.forwarder().cache_len();
        self.metrics
            .cache_entries
            .set(i64::try_from(cache).unwrap_or(i64::MAX));
        if let Some(s) = &self.secondaries {
            s.update_metrics();
        }
        self.metrics.encode()
    }
}

/// Serves the API on `listener` until `shutdown`, then lets open requests finish.
pub async fn serve(listener: TcpListener, state: ApiState, shutdown: CancellationToken) {
    let app = router(state);
    let stop = shutdown.clone();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        tracing::error!(error = %e, "the API server stopped");
    }
}
