//! The status page at `/`: one server-rendered page (maud) plus a small hand-written
//! script and stylesheet compiled into the binary, so it works with no internet access and
//! no JavaScript build.
//!
//! - `GET /` (open): the shell, with only "ready / not ready" and a sign-in form;
//! - `GET /ui/app.js`, `GET /ui/app.css` (open): the assets;
//! - `GET /api/v1/ui/dashboard` (token): the dashboard as an HTML fragment — per SIP
//!   domain the targets with state, reason, RTT and the last hour, what a phone is told
//!   now with the explain view, the zones and the last reload. The script fetches it every
//!   second with the token from `sessionStorage` (never a URL or a cookie), so a health
//!   transition shows within 2 s, and posts drain / enable to the REST API.
//!
//! Every answer carries a strict Content-Security-Policy (`script-src 'self'`, no inline
//! script or style), `X-Frame-Options: DENY` and `Cache-Control: no-store`.

mod view;

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{ApiState, error::ApiError};

/// The page's script.
const SCRIPT: &str = include_str!("app.js");
/// The page's stylesheet.
const STYLE: &str = include_str!("app.css");

/// The Content-Security-Policy of every UI answer: only this origin's script, style and
/// fetches; no plugins, frames, forms elsewhere or base-URI tricks.
pub(super) const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
    base-uri 'none'";

fn secured(mut resp: Response, cache: &'static str) -> Response {
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

fn enabled(s: &ApiState) -> Result<(), ApiError> {
    if s.ui {
        Ok(())
    } else {
        Err(ApiError::NotFound(
            "the status page is off (api.ui: false)".to_owned(),
        ))
    }
}

/// `GET /`: the shell.
pub(super) async fn page(State(s): State<ApiState>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let ready = s.readiness().ready;
    let html = view::shell(ready).into_string();
    let resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        html,
    )
        .into_response();
    Ok(secured(resp, "no-store"))
}

/// `GET /ui/app.js`.
pub(super) async fn script(State(s): State<ApiState>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let resp = (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response();
    Ok(secured(resp, "no-cache"))
}

/// `GET /ui/app.css`.
pub(super) async fn style(State(s): State<ApiState>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let resp = ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response();
    Ok(secured(resp, "no-cache"))
}

/// `GET /api/v1/ui/dashboard` (token): the dashboard fragment.
pub(super) async fn dashboard(State(s): State<ApiState>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let data = view::Dashboard::gather(&s).await;
    let resp = (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        data.render().into_string(),
    )
        .into_response();
    Ok(secured(resp, "no-store"))
}
