//! Every error the API answers with, and its one JSON shape:
//! `{ "error": "<code>", "reason": "...", "field": "records[2].port", "errors": [...] }`
//! (`field` and `errors` only where a field is at fault).

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::zones::edit::{EditError, Problem};

/// An error response.
#[derive(Debug)]
pub(crate) enum ApiError {
    /// 400: the request cannot be read (not JSON, bad query or path parameter).
    BadRequest(Problem),
    /// 401: no or wrong bearer token.
    Unauthorized {
        /// A token was given, but not the right one.
        invalid: bool,
    },
    /// 404: no such zone, record or target.
    NotFound(String),
    /// 404: no such route.
    NoRoute,
    /// 409: the change conflicts with the state (read-only zone, zone exists, zone file
    /// changed by hand).
    Conflict(String),
    /// 412: `If-Match` does not match the current version.
    PreconditionFailed(String),
    /// 415: the body is not `application/json`.
    UnsupportedMediaType,
    /// 422: the document is well-formed but wrong; every problem, first one on top.
    Invalid(Vec<Problem>),
    /// 428: an index-based edit without `If-Match`.
    PreconditionRequired(String),
    /// 500: the change could not be carried out (disk write); nothing changed.
    Internal(String),
    /// 503: the feature's backend is not running (no prober).
    Unavailable(String),
}

#[derive(Serialize)]
struct Body<'a> {
    error: &'static str,
    reason: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [Problem],
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            Self::Unauthorized { .. } => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::PreconditionFailed(_) => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
            Self::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Self::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            Self::PreconditionRequired(_) => {
                (StatusCode::PRECONDITION_REQUIRED, "precondition_required")
            }
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let unauthorized = |invalid: bool| {
            if invalid {
                "the bearer token is wrong"
            } else {
                "this route needs Authorization: Bearer <token>"
            }
        };
        let (reason, field, errors): (&str, Option<&str>, &[Problem]) = match &self {
            Self::BadRequest(p) => (&p.reason, p.field.as_deref(), &[]),
            Self::Unauthorized { invalid } => (unauthorized(*invalid), None, &[]),
            Self::UnsupportedMediaType => {
                ("send the body as Content-Type: application/json", None, &[])
            }
            Self::NoRoute => ("no such route; see /api/v1/openapi.json", None, &[]),
            Self::Invalid(all) => match all.first() {
                Some(p) => (&p.reason, p.field.as_deref(), all),
                None => ("invalid document", None, &[]),
            },
            Self::NotFound(r)
            | Self::Conflict(r)
            | Self::PreconditionFailed(r)
            | Self::PreconditionRequired(r)
            | Self::Internal(r)
            | Self::Unavailable(r) => (r, None, &[]),
        };
        if let Self::Internal(r) = &self {
            tracing::error!(reason = %r, "API request failed");
        }
        let mut resp = (
            status,
            Json(Body {
                error: code,
                reason,
                field,
                errors: if errors.len() > 1 { errors } else { &[] },
            }),
        )
            .into_response();
        if let Self::Unauthorized { invalid } = self {
            // RFC 6750 §3: the challenge; `invalid_token` only when one was presented.
            let challenge = if invalid {
                "Bearer realm=\"sipdns\", error=\"invalid_token\""
            } else {
                "Bearer realm=\"sipdns\""
            };
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        resp
    }
}

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::NotFound(r) => Self::NotFound(r),
            EditError::ReadOnly(r) | EditError::Exists(r) | EditError::Changed(r) => {
                Self::Conflict(r)
            }
            EditError::Stale(r) => Self::PreconditionFailed(r),
            EditError::NeedsIfMatch(r) => Self::PreconditionRequired(r),
            EditError::Invalid(p) => Self::Invalid(p),
            EditError::Io(r) => Self::Internal(r),
        }
    }
}
