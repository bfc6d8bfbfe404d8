//! A blocking HTTP client over the REST API (ureq: the CLI runs one request at a time and
//! needs no runtime). Every request carries the bearer token; an answer that is not 2xx
//! becomes a [`ClientError`] with the API's own message.

use std::time::Duration;

use serde_json::Value;

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API could not be reached.
    #[error("cannot reach the API at {url}: {reason}")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// Why.
        reason: String,
    },
    /// The API answered with an error status.
    #[error("{status}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's message (its `reason` or `error` field, or the body).
        message: String,
    },
}

/// The API at one base URL.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

impl Client {
    /// A client for `base` (`http://127.0.0.1:8053`) with an optional token.
    pub fn new(base: &str, token: Option<String>) -> Self {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false)
            .build()
            .into();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            agent,
        }
    }

    /// `GET`, JSON answer; an error status is an error.
    pub fn get(&self, path: &str) -> Result<Value, ClientError> {
        self.request("GET", path, None, false, None).map(|(v, _)| v)
    }

    /// `GET`, JSON answer and its `ETag`.
    pub fn get_tagged(&self, path: &str) -> Result<(Value, Option<String>), ClientError> {
        self.request("GET", path, None, false, None)
    }

    /// `GET`, JSON answer whatever the status (`/readyz` answers 503 with its detail).
    pub fn get_any(&self, path: &str) -> Result<Value, ClientError> {
        self.request("GET", path, None, true, None).map(|(v, _)| v)
    }

    /// `POST` with an optional JSON body.
    pub fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        self.request("POST", path, body, false, None)
            .map(|(v, _)| v)
    }

    /// `DELETE`, only if the resource is still at version `if_match` (an `ETag`).
    pub fn delete(&self, path: &str, if_match: Option<&str>) -> Result<Value, ClientError> {
        self.request("DELETE", path, None, false, if_match)
            .map(|(v, _)| v)
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        any_status: bool,
        if_match: Option<&str>,
    ) -> Result<(Value, Option<String>), ClientError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |e: ureq::Error| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let auth = self.token.as_ref().map(|t| format!("Bearer {t}"));
        let result = match method {
            "GET" | "DELETE" => {
                let mut req = if method == "GET" {
                    self.agent.get(&url)
                } else {
                    self.agent.delete(&url)
                };
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                if let Some(tag) = if_match {
                    req = req.header("If-Match", tag);
                }
                req.call()
            }
            _ => {
                let mut req = self.agent.post(&url);
                if let Some(a) = &auth {
                    req = req.header("Authorization", a);
                }
                match body {
                    Some(b) => req
                        .header("Content-Type", "application/json")
                        .send(b.to_string()),
                    None => req.send_empty(),
                }
            }
        };
        let mut resp = result.map_err(unreachable)?;
        let status = resp.status().as_u16();
        let etag = resp
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.body_mut().read_to_string().map_err(unreachable)?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text.clone()))
        };
        if (200..300).contains(&status) || any_status {
            return Ok((value, etag));
        }
        let message = match &value {
            Value::Object(m) => {
                let mut msg = m
                    .get("reason")
                    .or_else(|| m.get("message"))
                    .or_else(|| m.get("error"))
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                    .unwrap_or_else(|| value.to_string());
                if let Some(problems) = m.get("problems").and_then(Value::as_array) {
                    for p in problems {
                        let field = p["field"].as_str().unwrap_or("body");
                        let reason = p["reason"].as_str().unwrap_or_default();
                        msg.push_str(&format!("; {field}: {reason}"));
                    }
                }
                msg
            }
            other => other
                .as_str()
                .map_or_else(|| other.to_string(), str::to_owned),
        };
        Err(ClientError::Refused { status, message })
    }
}

/// Percent-encodes what a path segment or query value must not carry raw.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:@".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
