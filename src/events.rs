//! Events out: every target transition, drain / enable and reload result, POSTed as one
//! JSON object to each `events.webhooks` URL (schema: `docs/cockpit.md` and the OpenAPI
//! document's `Event`).
//!
//! Never slows probing or DNS: [`Events::emit`] serializes the event once and offers it
//! to each receiver's bounded queue with `try_send`; a full queue drops the event and
//! counts it (`sipdns_events_dropped_total{reason="queue_full"}`). Each receiver has its
//! own thread (a blocking client on a thread of its own: a receiver that hangs holds only
//! that thread, never a runtime worker) that delivers in order, retrying a failed attempt
//! with doubling back-off from 500 ms (capped at 30 s); an event whose attempts all fail
//! is counted as `reason="failed"`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{self, SyncSender, TrySendError},
    },
    time::{Duration, SystemTime},
};

use serde_json::{Value, json};

use crate::{
    config::{EventsConfig, WebhookConfig},
    health::{
        AdminState,
        admin::Drain,
        observer::{AdminCause, Observer, Transition},
    },
    metrics::Metrics,
    target::TargetKey,
};

/// The first retry waits this long; each next one twice as long.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One serialized event.
struct Payload {
    kind: &'static str,
    body: String,
}

/// The webhook senders of one server.
pub struct Events {
    sinks: Vec<SyncSender<Arc<Payload>>>,
    metrics: Arc<Metrics>,
    seq: AtomicU64,
}

impl Events {
    /// Starts one sender thread per webhook. A webhook whose token cannot be read is
    /// skipped with an error (the server still starts: events are not worth an outage).
    pub fn start(cfg: &EventsConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let mut sinks = Vec::new();
        for (i, w) in cfg.webhooks.iter().enumerate() {
            let token = match token_of(w) {
                Ok(t) => t,
                Err(e) => {
                    tracing::error!(url = w.url.as_str(), error = %e, "webhook disabled");
                    continue;
                }
            };
            let (tx, rx) = mpsc::sync_channel(w.queue.max(1));
            let sender = Sender {
                url: w.url.as_str().to_owned(),
                auth: token.map(|t| format!("Bearer {t}")),
                retries: w.retries,
                agent: ureq::Agent::config_builder()
                    .timeout_global(Some(w.timeout))
                    .http_status_as_error(false)
                    .build()
                    .into(),
                metrics: metrics.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name(format!("sipdns-webhook-{i}"))
                .spawn(move || sender.run(&rx));
            match spawned {
                Ok(_) => sinks.push(tx),
                Err(e) => {
                    tracing::error!(url = w.url.as_str(), error = %e, "cannot start the webhook sender")
                }
            }
        }
        Arc::new(Self {
            sinks,
            metrics,
            seq: AtomicU64::new(0),
        })
    }

    /// True if any webhook is configured.
    pub fn is_active(&self) -> bool {
        !self.sinks.is_empty()
    }

    /// Offers one event to every receiver; never blocks.
    pub fn emit(&self, kind: &'static str, mut fields: Value) {
        if self.sinks.is_empty() {
            return;
        }
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) + 1;
        if let Some(m) = fields.as_object_mut() {
            m.insert("type".into(), json!(kind));
            m.insert("seq".into(), json!(seq));
            m.insert(
                "time".into(),
                json!(humantime::format_rfc3339_millis(SystemTime::now()).to_string()),
            );
        }
        let payload = Arc::new(Payload {
            kind,
            body: fields.to_string(),
        });
        for tx in &self.sinks {
            match tx.try_send(payload.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.metrics
                        .events_dropped
                        .with_label_values(&["queue_full"])
                        .inc();
                }
                Err(TrySendError::Disconnected(_)) => {
                    self.metrics
                        .events_dropped
                        .with_label_values(&["failed"])
                        .inc();
                }
            }
        }
    }

    /// A reload's result.
    pub fn reload(&self, result: Result<(), &str>) {
        self.emit(
            "reload",
            json!({ "ok": result.is_ok(), "error": result.err() }),
        );
    }
}

impl Observer for Events {
    fn transition(&self, t: &Transition<'_>) {
        self.emit(
            "transition",
            json!({
                "target": t.key.to_string(),
                "host": t.host,
                "from": t.from,
                "to": t.to,
                "reason": t.reason,
            }),
        );
    }

    fn admin(&self, key: &TargetKey, state: AdminState, drain: Option<&Drain>, cause: AdminCause) {
        let d = drain.cloned().unwrap_or_default();
        self.emit(
            "admin",
            json!({
                "target": key.to_string(),
                "admin": state,
                "cause": cause,
                "until": d.until.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                "note": d.note,
                "by": d.by,
            }),
        );
    }
}

fn token_of(w: &WebhookConfig) -> Result<Option<String>, String> {
    if let Some(f) = &w.token_file {
        let t = std::fs::read_to_string(f)
            .map_err(|e| format!("cannot read token_file {}: {e}", f.display()))?;
        let t = t.trim();
        if t.is_empty() {
            return Err(format!("token_file {} is empty", f.display()));
        }
        return Ok(Some(t.to_owned()));
    }
    match &w.token_env {
        Some(var) => match std::env::var(var) {
            Ok(t) if !t.trim().is_empty() => Ok(Some(t.trim().to_owned())),
            _ => Err(format!("token_env {var} is unset or empty")),
        },
        None => Ok(None),
    }
}

/// One receiver's delivery loop.
struct Sender {
    url: String,
    auth: Option<String>,
    retries: u32,
    agent: ureq::Agent,
    metrics: Arc<Metrics>,
}

impl Sender {
    fn run(self, rx: &mpsc::Receiver<Arc<Payload>>) {
        // Ends when the server's `Events` is dropped (every sender gone).
        while let Ok(p) = rx.recv() {
            if self.deliver(&p) {
                self.metrics.events_sent.with_label_values(&[p.kind]).inc();
            } else {
                self.metrics
                    .events_dropped
                    .with_label_values(&["failed"])
                    .inc();
            }
        }
    }

    fn deliver(&self, p: &Payload) -> bool {
        let mut wait = FIRST_BACKOFF;
        for attempt in 0..=self.retries {
            if attempt > 0 {
                std::thread::sleep(wait);
                wait = (wait * 2).min(MAX_BACKOFF);
            }
            let mut req = self
                .agent
                .post(&self.url)
                .header("Content-Type", "application/json")
                .header("User-Agent", concat!("sipdns/", env!("CARGO_PKG_VERSION")));
            if let Some(a) = &self.auth {
                req = req.header("Authorization", a);
            }
            match req.send(p.body.as_str()) {
                Ok(r) if r.status().is_success() => return true,
                Ok(r) => {
                    tracing::warn!(url = %self.url, status = r.status().as_u16(), attempt, "webhook refused an event");
                }
                Err(e) => {
                    tracing::warn!(url = %self.url, error = %e, attempt, "webhook delivery failed");
                }
            }
        }
        false
    }
}
