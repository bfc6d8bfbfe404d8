//! Bearer-token authentication (RFC 6750) of the protected routes: the token is read once
//! at start from `api.token_file`, else from the `api.token_env` variable, is never logged
//! or printed, and is compared in constant time.

use std::{fmt, path::Path};

use axum::{
    extract::{Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{ApiState, error::ApiError};
use crate::config::ApiConfig;

/// The API's bearer token. Its `Debug` output hides the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(Box<[u8]>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(<redacted>)")
    }
}

impl ApiToken {
    /// A token from its text (surrounding whitespace, such as a file's final newline, is
    /// dropped); `None` when nothing is left.
    pub fn new(text: &str) -> Option<Self> {
        let t = text.trim();
        (!t.is_empty()).then(|| Self(t.as_bytes().into()))
    }

    /// The token the config points at: `token_file` if set, else the `token_env`
    /// variable. An unreadable or empty file is logged (without its content) and gives no
    /// token, so the API refuses every protected request rather than running open.
    pub fn from_config(api: &ApiConfig) -> Option<Self> {
        let env = std::env::var(&api.token_env).ok();
        Self::choose(api.token_file.as_deref(), read_file, env, &api.token_env)
    }

    /// The choice behind [`Self::from_config`], with the file reader and the variable's
    /// value passed in (unit-tested without touching the environment).
    fn choose(
        file: Option<&Path>,
        read: impl Fn(&Path) -> std::io::Result<String>,
        env: Option<String>,
        env_name: &str,
    ) -> Option<Self> {
        if let Some(path) = file {
            return match read(path) {
                Ok(text) => {
                    let t = Self::new(&text);
                    if t.is_none() {
                        tracing::error!(file = %path.display(), "api.token_file is empty");
                    }
                    t
                }
                Err(e) => {
                    tracing::error!(file = %path.display(), error = %e, "cannot read api.token_file");
                    None
                }
            };
        }
        let t = env.as_deref().and_then(Self::new);
        if t.is_none() {
            tracing::debug!(variable = env_name, "API token variable unset or empty");
        }
        t
    }

    /// True if `presented` is the token. Takes time that depends only on the length of
    /// `presented`, never on where it first differs from the secret, nor on the secret's
    /// length.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let secret = &self.0;
        // `secret` is never empty (see `new`), so the modulo is defined.
        let mut diff = u8::from(presented.len() != secret.len());
        for (i, b) in presented.iter().enumerate() {
            diff |= b ^ secret[i % secret.len()];
        }
        std::hint::black_box(diff) == 0
    }
}

fn read_file(path: &Path) -> std::io::Result<String> {
    std::fs::read_to_string(path)
}

/// Middleware for every protected route: 401 with `WWW-Authenticate: Bearer` unless the
/// request carries `Authorization: Bearer <the token>`.
pub(crate) async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .and_then(bearer);
    match (&state.token, presented) {
        (Some(token), Some(p)) if token.matches(p) => next.run(request).await,
        (_, None) => ApiError::Unauthorized { invalid: false }.into_response(),
        (_, Some(_)) => ApiError::Unauthorized { invalid: true }.into_response(),
    }
}

/// The credentials of an `Authorization: Bearer <token>` header (scheme case-insensitive,
/// RFC 9110 §11.1).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let start = rest.iter().position(|b| *b != b' ')?;
    let creds = &rest[start..];
    let end = creds.iter().rposition(|b| *b != b' ').map_or(0, |i| i + 1);
    Some(&creds[..end])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn token_matches_only_itself() {
        let t = ApiToken::new("s3cret\n").unwrap();
        assert!(t.matches(b"s3cret"));
        assert!(!t.matches(b"s3cre"));
        assert!(!t.matches(b"s3crett"));
        assert!(!t.matches(b"S3cret"));
        assert!(!t.matches(b""));
        assert!(!t.matches(b"s3crets3cret"));
        assert!(ApiToken::new(" \n").is_none());
    }

    #[test]
    fn debug_hides_the_token() {
        let t = ApiToken::new("s3cret").unwrap();
        assert!(!format!("{t:?}").contains("s3cret"));
    }

    #[test]
    fn bearer_header_forms() {
        assert_eq!(bearer(b"Bearer abc"), Some(&b"abc"[..]));
        assert_eq!(bearer(b"bearer   abc  "), Some(&b"abc"[..]));
        assert_eq!(bearer(b"Basic abc"), None);
        assert_eq!(bearer(b"Bearer "), None);
        assert_eq!(bearer(b"Bearer"), None);
    }

    #[test]
    fn file_wins_over_the_variable() {
        let ok = |_: &Path| Ok("from-file\n".to_owned());
        let t = ApiToken::choose(Some(Path::new("t")), ok, Some("from-env".into()), "V");
        assert_eq!(t, ApiToken::new("from-file"));
        let t = ApiToken::choose(None, ok, Some("from-env".into()), "V");
        assert_eq!(t, ApiToken::new("from-env"));
        assert_eq!(ApiToken::choose(None, ok, None, "V"), None);
        assert_eq!(ApiToken::choose(None, ok, Some(String::new()), "V"), None);
    }

    #[test]
    fn an_unreadable_or_empty_file_gives_no_token_even_with_the_variable_set() {
        let missing = |_: &Path| Err(std::io::Error::from(std::io::ErrorKind::NotFound));
        let t = ApiToken::choose(Some(Path::new("t")), missing, Some("env".into()), "V");
        assert_eq!(t, None);
        let empty = |_: &Path| Ok("\n".to_owned());
        assert_eq!(
            ApiToken::choose(Some(Path::new("t")), empty, None, "V"),
            None
        );
    }
}
