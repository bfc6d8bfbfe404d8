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
//!
//! The listener may face a whole LAN, so [`serve`] bounds what a client without the token
//! can hold ([`ApiLimits`]): at most `max_connections` connections (one more is closed at
//! once), request headers within `request_timeout` (hyper's header timer, which also closes
//! a kept-alive connection that sends no new request in that time) and the whole body
//! within `request_timeout` after them, of at most [`BODY_LIMIT`] bytes (read only after
//! the token check).

pub mod auth;
mod error;
pub mod openapi;
pub mod routes;
mod ui;

use std::{sync::Arc, time::Duration};

use axum::{
    body::Body,
    extract::{Request, State},
    middleware::{self, Next},
    response::Response,
};
use futures::StreamExt as _;
use tokio::{
    net::TcpListener,
    sync::{Semaphore, watch},
};

use crate::{
    health::{AdminState, admin::Drain, history::History},
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

    /// Drains one target with an end time, a note and an author (a timed drain ends by
    /// itself). Blocks like [`Self::set_admin`]. Without support for details, a plain drain.
    fn drain(&self, key: &TargetKey, drain: Drain) -> Result<(), AdminError> {
        let _ = drain;
        self.set_admin(key, AdminState::Drained)
    }
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
    /// The last hour per target, for the status page (`None`: no history kept).
    pub(crate) history: Option<Arc<History>>,
    /// Serve the status page at `/` (`api.ui`).
    pub(crate) ui: bool,
    /// What one client may hold.
    pub(crate) limits: ApiLimits,
}

/// The bounds [`serve`] enforces (`api.max_connections`, `api.request_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// Connections open at once; one more is closed at once.
    pub max_connections: usize,
    /// Deadline for a request's headers, and then for its whole body.
    pub request_timeout: Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_connections: 64,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Largest request body a handler reads (axum's default limit, kept; 413 over it): the
/// biggest zone document an operator sends is far below it.
pub const BODY_LIMIT: usize = 2 << 20;

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
            history: None,
            ui: true,
            limits: ApiLimits::default(),
        }
    }

    /// Connects the history the status page draws its strips from.
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = Some(history);
        self
    }

    /// Turns the status page at `/` on or off (`api.ui`).
    pub fn with_ui(mut self, ui: bool) -> Self {
        self.ui = ui;
        self
    }

    /// Sets the connection and time bounds [`serve`] enforces.
    pub fn with_limits(mut self, limits: ApiLimits) -> Self {
        self.limits = limits;
        self
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

/// What the open `/readyz` says: ready or not and one reason code. Nothing else: the
/// listener may be reachable from the whole LAN (issue 14: a reload error quoting a file
/// that a symlink in `zones/` pointed at put the API token on `/readyz`). The detail is
/// [`Readiness`], behind the token at `GET /api/v1/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ReadyCode {
    /// True when phones can be served well (the HTTP status is 200, else 503).
    pub ready: bool,
    /// Why, from a fixed set.
    pub reason: ReadyReason,
}

/// The reason codes of `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadyReason {
    /// Config and zones loaded, first probe round done, last reload (if any) accepted.
    Ok,
    /// Still ready: the last reload was rejected and the running config stays in force
    /// (the files on disk are not what runs; the error is at `/api/v1/status`).
    LastReloadFailed,
    /// Not ready: the prober's first round is still running.
    FirstProbeRoundPending,
}

/// The readiness detail, `GET /api/v1/status` (token only).
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
    /// The readiness detail (`GET /api/v1/status`).
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

    /// What `/readyz` reports: [`Self::readiness`] reduced to a reason code.
    pub fn ready_code(&self) -> ReadyCode {
        let r = self.readiness();
        let reason = if r.first_probe_round == ProbeRound::Pending {
            ReadyReason::FirstProbeRoundPending
        } else if r.reload.last_error.is_some() {
            ReadyReason::LastReloadFailed
        } else {
            ReadyReason::Ok
        };
        ReadyCode {
            ready: r.ready,
            reason,
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

/// Serves the API on `listener` until `shutdown`, then lets open requests finish (each
/// within its request deadline).
///
/// Each connection is served by hyper's HTTP/1 connection builder (axum's `serve` has no
/// knob for a connection limit or a header deadline), behind a semaphore of
/// `max_connections` permits. A connection over the limit is accepted and closed at once
/// rather than left in the kernel's backlog, so a legitimate client that retries gets the
/// next free slot instead of queueing behind an attacker's connections.
pub async fn serve(listener: TcpListener, state: ApiState, shutdown: CancellationToken) {
    use hyper_util::{
        rt::{TokioExecutor, TokioIo, TokioTimer},
        server::conn::auto,
        service::TowerToHyperService,
    };

    let limits = state.limits;
    let metrics = state.metrics.clone();
    let app = router(state).layer(middleware::from_fn_with_state(limits, body_in_time));
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let mut builder = auto::Builder::new(TokioExecutor::new()).http1_only();
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .keep_alive(true);
    let builder = Arc::new(builder);
    let open = tokio_util::task::TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    if crate::descriptors::is_exhaustion(&e) {
                        metrics
                            .api_connections_rejected
                            .with_label_values(&["descriptors"])
                            .inc();
                    }
                    tracing::warn!(error = %e, "API accept failed");
                    // Out of descriptors and the like: back off briefly, never spin.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics
                .api_connections_rejected
                .with_label_values(&["max_connections"])
                .inc();
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let builder = builder.clone();
        let stop = shutdown.clone();
        open.spawn(async move {
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "API connection ended");
                    }
                }
                () = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
        });
    }
    open.close();
    open.wait().await;
}

/// Puts a deadline on the request body: `request_timeout` after the headers arrived (their
/// own deadline is hyper's), the body stream ends in an error, which the handler's body
/// extractor answers with 400 and hyper with closing the connection. Nothing is read here:
/// a body is read only by a handler, after the token check, within axum's
/// [`BODY_LIMIT`], so a client without the token cannot make sipdns buffer anything.
async fn body_in_time(State(limits): State<ApiLimits>, req: Request, next: Next) -> Response {
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let req = req.map(|body| {
        let state = (
            body.into_data_stream(),
            Box::pin(tokio::time::sleep_until(deadline)),
            false,
        );
        Body::from_stream(futures::stream::unfold(
            state,
            |(mut data, mut late, over)| async move {
                if over {
                    return None;
                }
                tokio::select! {
                    chunk = data.next() => {
                        let chunk = chunk?.map_err(axum::BoxError::from);
                        Some((chunk, (data, late, false)))
                    }
                    () = late.as_mut() => {
                        let e = std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "the request body did not arrive within api.request_timeout",
                        );
                        Some((Err(axum::BoxError::from(e)), (data, late, true)))
                    }
                }
            },
        ))
    });
    next.run(req).await
}
