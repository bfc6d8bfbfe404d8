//! The sections for running it: `api` (REST API and status page), `log`, `events`
//! (webhooks) and `phones` (hints about the phones, for `sipdns check`).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{default_true, human, human_opt};
/// `log:` — read at start (a change takes a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (for people; colours only on a terminal) or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `2026-01-01T08:00:00Z  INFO message key=value`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `events:` — read at start (a change takes a restart).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// URLs that receive a JSON POST for every event.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook receiver.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: WebhookUrl,
    /// File holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding that token (used when `token_file` is unset).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Time for one delivery attempt.
    #[serde(default = "default_webhook_timeout", with = "human")]
    pub timeout: Duration,
    /// Further attempts after a failed one (with doubling back-off from 500 ms).
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// Events waiting for this receiver at most; more are dropped and counted.
    #[serde(default = "default_webhook_queue")]
    pub queue: usize,
}

/// A webhook URL: `http://` or `https://`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// The URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WebhookUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(Self(s)),
            _ => Err(format!(
                "{s:?} is not a webhook URL; write http://host[:port]/path or https://..."
            )),
        }
    }
}

impl From<WebhookUrl> for String {
    fn from(u: WebhookUrl) -> Self {
        u.0
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_webhook_retries() -> u32 {
    3
}
fn default_webhook_queue() -> usize {
    1000
}

/// `phones:` — what the operator knows about the phones (optional hints, no behaviour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhonesConfig {
    /// How often the phones send a request (their registration refresh). A phone that
    /// caches DNS answers for their TTL (Yealink `dns_cache_type` 1, linphone) sends its
    /// next request on a cached answer while the TTL runs: `sipdns check` warns when a
    /// domain's policy `ttl` is not below this, since such a phone can then miss a
    /// failover by a whole refresh cycle.
    #[serde(default, with = "human_opt", skip_serializing_if = "Option::is_none")]
    pub register_refresh: Option<Duration>,
}

/// `api:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP API; `/metrics`, `/livez` and `/readyz` are served there too.
    #[serde(default = "default_api_listen")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token (used when `token_file` is unset).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Most API connections open at once; one over it is closed at once. sipdns may lower
    /// it at start to fit the open-files limit (logged).
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Deadline for a request's headers, then for its whole body; a slower client is cut
    /// off. A kept-alive connection that starts no new request within it is closed too.
    #[serde(default = "default_api_request_timeout", with = "human")]
    pub request_timeout: Duration,
    /// Serve the status page at `/` (its data still needs the token).
    #[serde(default = "default_true")]
    pub ui: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token_file: None,
            token_env: default_token_env(),
            max_connections: default_api_max_connections(),
            request_timeout: default_api_request_timeout(),
            ui: true,
        }
    }
}
fn default_api_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8053)))
}
fn default_token_env() -> String {
    "SIPDNS_API_TOKEN".to_owned()
}
fn default_api_max_connections() -> usize {
    64
}
fn default_api_request_timeout() -> Duration {
    Duration::from_secs(10)
}
