//! The route table and the handlers. A handler extracts, calls one domain method and
//! serializes (ARCHITECTURE.md, "Invariants"); the domain work lives in `zones::edit`
//! (run by the reloader), the reloader, the resolver and the prober.
//!
//! [`table`] is the single list of routes: the router is built from it, and the OpenAPI
//! document is checked against it.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    middleware,
    response::{IntoResponse, Response},
    routing::{MethodFilter, MethodRouter, on},
};
use serde::de::DeserializeOwned;
use serde_json::json;

use super::{AdminError, ApiState, auth, error::ApiError, openapi};
use crate::{
    health::{AdminState, admin::Drain},
    policy::Explanation,
    record::{DomainName, RType},
    reload::ReloadError,
    target::TargetKey,
    zones::{
        edit::{self, Change, ETag, Edited, IfMatch, Problem},
        schema::{RecordDoc, ZoneDoc},
    },
};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone who can reach the listener (`/livez`, `/readyz`, `/metrics`).
    Open,
    /// Only with the bearer token.
    Token,
}

/// One route: method, path (axum / OpenAPI template syntax) and access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteSpec {
    /// `GET`, `POST`, `PUT` or `DELETE`.
    pub method: &'static str,
    /// The path template, e.g. `/api/v1/zones/{zone}`.
    pub path: &'static str,
    /// Whether it needs the token.
    pub access: Access,
}

/// Every route the API serves.
pub fn table() -> Vec<RouteSpec> {
    routes().into_iter().map(|(spec, _)| spec).collect()
}

/// The table with its handlers. The method's name and its filter come from one macro
/// argument, so they cannot disagree.
fn routes() -> Vec<(RouteSpec, MethodRouter<ApiState>)> {
    use Access::{Open, Token};
    macro_rules! r {
        ($method:ident $path:literal, $access:expr, $handler:expr) => {
            (
                RouteSpec {
                    method: stringify!($method),
                    path: $path,
                    access: $access,
                },
                on(MethodFilter::$method, $handler),
            )
        };
    }
    vec![
        r!(GET "/livez", Open, livez),
        r!(GET "/readyz", Open, readyz),
        r!(GET "/metrics", Open, metrics),
        r!(GET "/api/v1/openapi.json", Token, openapi_doc),
        r!(GET "/api/v1/status", Token, status),
        r!(GET "/api/v1/zones", Token, list_zones),
        r!(POST "/api/v1/zones", Token, create_zone),
        r!(GET "/api/v1/zones/{zone}", Token, get_zone),
        r!(PUT "/api/v1/zones/{zone}", Token, replace_zone),
        r!(DELETE "/api/v1/zones/{zone}", Token, delete_zone),
        r!(POST "/api/v1/zones/{zone}/records", Token, add_record),
        r!(DELETE "/api/v1/zones/{zone}/records/{index}", Token, delete_record),
        r!(GET "/api/v1/targets", Token, list_targets),
        r!(POST "/api/v1/targets/{addr}/{transport}/drain", Token, drain_target),
        r!(POST "/api/v1/targets/{addr}/{transport}/enable", Token, enable_target),
        r!(GET "/api/v1/explain", Token, explain),
        r!(POST "/api/v1/reload", Token, reload),
        r!(GET "/", Open, super::ui::page),
        r!(GET "/ui/app.js", Open, super::ui::script),
        r!(GET "/ui/app.css", Open, super::ui::style),
        r!(GET "/api/v1/ui/dashboard", Token, super::ui::dashboard),
    ]
}

/// The router: every route of [`table`], the protected ones behind the token check.
pub fn router(state: ApiState) -> Router {
    let mut app = Router::new();
    for (spec, handler) in routes() {
        let handler = match spec.access {
            Access::Open => handler,
            Access::Token => handler.route_layer(middleware::from_fn_with_state(
                state.clone(),
                auth::require_token,
            )),
        };
        // Routes on one path with different methods merge into one method router.
        app = app.route(spec.path, handler);
    }
    app.fallback(no_route)
        .layer(middleware::from_fn(log_writes))
        .with_state(state)
}

/// One log line per API write (any method but GET / HEAD), with stable field names.
async fn log_writes(req: axum::extract::Request, next: middleware::Next) -> Response {
    let method = req.method().clone();
    if method == axum::http::Method::GET || method == axum::http::Method::HEAD {
        return next.run(req).await;
    }
    let path = req.uri().path().to_owned();
    let resp = next.run(req).await;
    tracing::info!(event = "api_write", method = %method, path, status = resp.status().as_u16(), "API write");
    resp
}

async fn no_route() -> ApiError {
    ApiError::NoRoute
}

// ---- open routes ----

async fn livez() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<ApiState>) -> Response {
    let r = s.ready_code();
    let status = if r.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(r)).into_response()
}

/// The readiness detail with the last reload error: token only.
async fn status(State(s): State<ApiState>) -> Response {
    let r = s.readiness();
    (StatusCode::OK, Json(r)).into_response()
}

async fn metrics(State(s): State<ApiState>) -> Response {
    (
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        s.scrape(),
    )
        .into_response()
}

// ---- zones ----

async fn openapi_doc() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        openapi::DOCUMENT,
    )
        .into_response()
}

async fn list_zones(State(s): State<ApiState>) -> Json<Vec<edit::ZoneSummary>> {
    let data = s.resolver.data();
    Json(match &s.secondaries {
        Some(sec) => edit::list_with_secondaries(&data.zones, sec.status()),
        None => edit::list(&data.zones),
    })
}

async fn get_zone(
    State(s): State<ApiState>,
    Path(zone): Path<String>,
) -> Result<Response, ApiError> {
    let origin = zone_name(&zone)?;
    let (doc, etag) = edit::get(&s.resolver.data().zones, &origin)?;
    Ok(zone_response(StatusCode::OK, Some((doc, etag))))
}

async fn create_zone(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let doc: ZoneDoc = json_body(&headers, &body)?;
    let origin = doc.zone.clone();
    let edited = run_edit(&s, origin.clone(), &headers, Change::Create(doc)).await?;
    let mut resp = zone_response(StatusCode::CREATED, edited.zone);
    let location = format!("/api/v1/zones/{}", origin.as_str().trim_end_matches('.'));
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    Ok(resp)
}

async fn replace_zone(
    State(s): State<ApiState>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let origin = zone_name(&zone)?;
    let doc: ZoneDoc = json_body(&headers, &body)?;
    let edited = run_edit(&s, origin, &headers, Change::Replace(doc)).await?;
    Ok(zone_response(StatusCode::OK, edited.zone))
}

async fn delete_zone(
    State(s): State<ApiState>,
    Path(zone): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let origin = zone_name(&zone)?;
    run_edit(&s, origin, &headers, Change::Delete).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn add_record(
    State(s): State<ApiState>,
    Path(zone): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let origin = zone_name(&zone)?;
    let rec: RecordDoc = json_body(&headers, &body)?;
    let edited = run_edit(&s, origin, &headers, Change::AddRecord(rec)).await?;
    Ok(zone_response(StatusCode::CREATED, edited.zone))
}

async fn delete_record(
    State(s): State<ApiState>,
    Path((zone, index)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let origin = zone_name(&zone)?;
    let index: usize = index.parse().map_err(|_| {
        ApiError::BadRequest(Problem::at(
            "index",
            format!("{index:?} is not a record index (0, 1, ...)"),
        ))
    })?;
    let edited = run_edit(&s, origin, &headers, Change::DeleteRecord(index)).await?;
    Ok(zone_response(StatusCode::OK, edited.zone))
}

/// Runs a zone edit on the blocking pool (it takes the reloader's lock and fsyncs).
async fn run_edit(
    s: &ApiState,
    origin: DomainName,
    headers: &HeaderMap,
    change: Change,
) -> Result<Edited, ApiError> {
    let if_match = if_match(headers)?;
    let reloader = s.reloader.clone();
    tokio::task::spawn_blocking(move || reloader.edit_zone(&origin, &if_match, change))
        .await
        .map_err(|e| ApiError::Internal(format!("the edit task failed: {e}")))?
        .map_err(ApiError::from)
}

/// A zone document with its `ETag`, or an empty body.
fn zone_response(status: StatusCode, zone: Option<(ZoneDoc, ETag)>) -> Response {
    match zone {
        Some((doc, etag)) => {
            let mut resp = (status, Json(doc)).into_response();
            if let Ok(v) = HeaderValue::from_str(etag.as_str()) {
                resp.headers_mut().insert(header::ETAG, v);
            }
            resp
        }
        None => status.into_response(),
    }
}

fn zone_name(text: &str) -> Result<DomainName, ApiError> {
    DomainName::parse(text).map_err(|e| {
        ApiError::BadRequest(Problem::at(
            "zone",
            format!("{text:?} is not a zone name: {e}"),
        ))
    })
}

fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(IfMatch::Absent),
        Some(v) => v.to_str().map(|t| IfMatch::parse(Some(t))).map_err(|_| {
            ApiError::BadRequest(Problem::at("If-Match", "not a list of entity tags"))
        }),
    }
}

/// Reads a JSON body: not JSON (or not `application/json`) is 400 / 415; JSON that does not
/// fit the document (a wrong type, an unknown or missing field) is 422 naming the field.
fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|m| {
            let m = m.trim().to_ascii_lowercase();
            m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
        })
        .unwrap_or(false);
    if !json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_data() {
            let field = (path != ".").then_some(path);
            ApiError::Invalid(vec![Problem {
                field,
                reason: inner.to_string(),
            }])
        } else {
            ApiError::BadRequest(Problem::whole(format!(
                "the body is not valid JSON: {inner}"
            )))
        }
    })?;
    de.end().map_err(|e| {
        ApiError::BadRequest(Problem::whole(format!("the body is not valid JSON: {e}")))
    })?;
    Ok(value)
}

// ---- targets ----

async fn list_targets(State(s): State<ApiState>) -> Result<Json<serde_json::Value>, ApiError> {
    Ok(Json(targets(&s)?.list()))
}

/// The optional body of a drain: `{"duration": "30m", "note": "...", "by": "..."}`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainRequest {
    /// How long (humantime: `30m`, `2h`, `1d`); none: until enabled.
    #[serde(default)]
    duration: Option<String>,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    by: Option<String>,
}

/// The longest timed drain (a longer one is a plain drain, not a maintenance window).
const MAX_DRAIN: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

impl DrainRequest {
    fn into_drain(self) -> Result<Drain, ApiError> {
        let invalid =
            |field: &str, reason: String| ApiError::Invalid(vec![Problem::at(field, reason)]);
        let text =
            |field: &str, v: Option<String>, max: usize| -> Result<Option<String>, ApiError> {
                match v.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()) {
                    Some(t) if t.chars().count() > max => {
                        Err(invalid(field, format!("longer than {max} characters")))
                    }
                    Some(t) if t.chars().any(char::is_control) => Err(invalid(
                        field,
                        "control characters are not allowed".to_owned(),
                    )),
                    other => Ok(other),
                }
            };
        let note = text("note", self.note, 500)?;
        let by = text("by", self.by, 100)?;
        let Some(d) = self.duration else {
            return Ok(Drain {
                until: None,
                note,
                by,
            });
        };
        let duration = humantime::parse_duration(d.trim()).map_err(|e| {
            invalid(
                "duration",
                format!("{d:?} is not a duration ({e}); write e.g. 30m, 2h"),
            )
        })?;
        if duration.is_zero() || duration > MAX_DRAIN {
            return Err(invalid(
                "duration",
                format!("{d:?} is out of range (more than 0, at most 366 days)"),
            ));
        }
        Ok(Drain::for_duration(duration, note, by))
    }
}

async fn drain_target(
    State(s): State<ApiState>,
    Path((addr, transport)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<serde_json::Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return set_admin(&s, &addr, &transport, AdminState::Drained).await;
    }
    let drain = json_body::<DrainRequest>(&headers, &body)?.into_drain()?;
    let key = target_key(&addr, &transport)?;
    let control = targets(&s)?;
    let d = drain.clone();
    tokio::task::spawn_blocking(move || control.drain(&key, d))
        .await
        .map_err(|e| ApiError::Internal(format!("the admin task failed: {e}")))?
        .map_err(admin_error)?;
    let mut out = json!({ "target": key.to_string(), "admin": AdminState::Drained });
    if let (Some(map), Ok(serde_json::Value::Object(details))) =
        (out.as_object_mut(), serde_json::to_value(&drain))
    {
        map.extend(details.into_iter().filter(|(_, v)| !v.is_null()));
    }
    Ok(Json(out))
}

fn target_key(addr: &str, transport: &str) -> Result<TargetKey, ApiError> {
    format!("{addr}/{transport}")
        .parse()
        .map_err(|e: String| ApiError::BadRequest(Problem::at("target", e)))
}

fn admin_error(e: AdminError) -> ApiError {
    match e {
        AdminError::UnknownTarget(t) => ApiError::NotFound(format!("unknown target {t}")),
        AdminError::Failed(r) => ApiError::Internal(r),
    }
}

async fn enable_target(
    State(s): State<ApiState>,
    Path((addr, transport)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_admin(&s, &addr, &transport, AdminState::Enabled).await
}

fn targets(s: &ApiState) -> Result<Arc<dyn super::TargetControl>, ApiError> {
    s.targets
        .clone()
        .ok_or_else(|| ApiError::Unavailable("the prober is not running".to_owned()))
}

async fn set_admin(
    s: &ApiState,
    addr: &str,
    transport: &str,
    state: AdminState,
) -> Result<Json<serde_json::Value>, ApiError> {
    let key = target_key(addr, transport)?;
    let control = targets(s)?;
    tokio::task::spawn_blocking(move || control.set_admin(&key, state))
        .await
        .map_err(|e| ApiError::Internal(format!("the admin task failed: {e}")))?
        .map_err(admin_error)?;
    Ok(Json(json!({ "target": key.to_string(), "admin": state })))
}

// ---- explain ----

async fn explain(
    State(s): State<ApiState>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Explanation>, ApiError> {
    let name = q
        .get("name")
        .ok_or_else(|| ApiError::BadRequest(Problem::at("name", "give ?name=<domain name>")))?;
    let name = DomainName::parse(name)
        .map_err(|e| ApiError::BadRequest(Problem::at("name", e.to_string())))?;
    let qtype: RType = q
        .get("type")
        .map_or(Ok(RType::A), |t| t.parse())
        .map_err(|e: String| ApiError::BadRequest(Problem::at("type", e)))?;
    Ok(Json(s.resolver.explain(&name, qtype).await))
}

// ---- reload ----

async fn reload(State(s): State<ApiState>) -> Response {
    let reloader = s.reloader.clone();
    let result = tokio::task::spawn_blocking(move || reloader.reload())
        .await
        .unwrap_or_else(|e| Err(ReloadError::Task(e.to_string())));
    let status = s.reloader.status();
    match result {
        Ok(()) => (
            StatusCode::OK,
            Json(json!({ "reloaded": true, "status": status })),
        )
            .into_response(),
        Err(e) => {
            // A config or zone problem is the operator's to fix (422); a failed lock or
            // task is ours (500). Either way the running config stays.
            let (code, label) = if e.is_internal() {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            } else {
                (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
            };
            let reason = e.to_string();
            (
                code,
                Json(json!({ "error": label, "reason": reason, "reloaded": false, "status": status })),
            )
                .into_response()
        }
    }
}
