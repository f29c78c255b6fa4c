//! The local HTTP API (axum). Loopback by default; bearer tokens with three roles.
//!
//! | route                     | method | roles                   |
//! |---------------------------|--------|-------------------------|
//! | `/v1/records`             | POST   | operator, admin         |
//! | `/v1/records`             | GET    | operator, admin         |
//! | `/v1/records/{id}`        | GET    | operator, admin         |
//! | `/v1/records/{id}/revoke` | POST   | operator, admin         |
//! | `/v1/records/{id}/feedback` | POST | operator, admin         |
//! | `/v1/peers`               | GET    | operator, admin         |
//! | `/v1/status`              | GET    | operator, admin, auditor|
//! | `/v1/audit`               | GET    | auditor                 |
//! | `/v1/audit/verify`        | GET, POST (witness, indexes) | auditor |
//! | `/v1/audit/count`         | GET    | auditor                 |
//! | `/v1/audit/trace/{id}`    | GET    | auditor                 |
//! | `/v1/audit/export`        | GET    | auditor                 |
//! | `/v1/audit/checkpoints`   | GET    | auditor                 |
//! | `/v1/backup`              | GET    | admin                   |
//! | `/v1/policy`              | GET    | admin                   |
//! | `/v1/policy/reload`       | POST   | admin                   |
//! | `/metrics`                | GET    | none (loopback scrape)  |
//!
//! An audit query or trace cut short (at its `limit`, or at
//! [`crate::audit_index::MAX_ANSWER_BYTES`] of entries) carries the header
//! `tamga-more-entries: true` ([`MORE_ENTRIES_HEADER`]).
//!
//! Every refused call (missing or wrong token, a role that may not) is answered 401 or
//! 403 and audited, its entry durable before the answer, with the client's address; past
//! `[api] refusals_per_min` of them from one address in a minute, it is answered 429 and
//! counted, one entry per address and minute saying how many ([`ApiRefusals`]), so that
//! a client without a token cannot grow the log without bound. Bodies are parsed by hand
//! from bytes so that every malformed input gets a message naming the problem; a batch
//! with one bad record stores nothing.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value as Json_};
use tamga_protocol::{Classification, Digest, Record, RecordHeader, RecordId, SaltedRecord};

use crate::audit::{Action, AuditEvent, Outcome};
use crate::daemon::Shared;
use crate::identity::Role;
use crate::refusals::{Refusals, Window};
use crate::store::{ListCursor, RecordFilter, StoredRecord};
use crate::writer::now_ms;

/// Most records in one ingest request.
pub const MAX_BATCH_RECORDS: usize = 10_000;
/// Default page of a record listing (the largest is [`MAX_LIST_LIMIT`]).
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// Largest page of any listing.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// An API error: a status and one clear message, with details where useful.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    details: Vec<Json_>,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError { status, message: message.into(), details: Vec::new() }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
    }
}

/// The body of a request, or the JSON error every other refusal gets: a body over the
/// route's size limit (`limit` bytes) is 413, not the framework's plain-text answer.
fn body_within(body: Result<Bytes, BytesRejection>, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than the limit of {limit} bytes"),
        ),
        status => ApiError::new(status, e.body_text()),
    })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "error": self.message });
        if !self.details.is_empty() {
            body["details"] = Json_::Array(self.details);
        }
        (self.status, Json(body)).into_response()
    }
}

fn route_roles(method: &axum::http::Method, path: &str) -> Option<&'static [Role]> {
    const OPS: &[Role] = &[Role::Operator, Role::Admin];
    const ALL: &[Role] = &[Role::Operator, Role::Admin, Role::Auditor];
    const AUDIT: &[Role] = &[Role::Auditor];
    const ADMIN: &[Role] = &[Role::Admin];
    let _ = method;
    if path == "/metrics" {
        None
    } else if path.starts_with("/v1/records") || path.starts_with("/v1/peers") {
        Some(OPS)
    } else if path.starts_with("/v1/audit") {
        Some(AUDIT)
    } else if path.starts_with("/v1/backup") || path.starts_with("/v1/policy") {
        Some(ADMIN)
    } else {
        Some(ALL)
    }
}

/// The label a request is counted under in `api_requests_total`: its route's family, from
/// a fixed list, so that no request can add a label of its own.
fn route_label(path: &str) -> &'static str {
    const ROUTES: [&str; 7] =
        ["/v1/records", "/v1/status", "/v1/peers", "/v1/audit", "/v1/backup", "/v1/policy", "/metrics"];
    ROUTES
        .into_iter()
        .find(|r| path.strip_prefix(r).is_some_and(|rest| rest.is_empty() || rest.starts_with('/')))
        .unwrap_or("unmatched")
}

/// How long one address's count of refused calls runs.
pub const REFUSAL_WINDOW_MS: i64 = 60_000;
/// Most client addresses whose refusals are counted apart; past it, the others share one
/// count (under the address 0.0.0.0).
pub const MAX_REFUSING_ADDRS: usize = 1024;
/// Most bytes of a refused call's path kept in its entry.
const MAX_PATH_IN_ENTRY: usize = 256;

/// Refused calls per client address and minute: the first `[api] refusals_per_min` are
/// audited one by one; past them a call is answered 429 and counted, and one entry per
/// address and minute says how many, once the minute is over.
#[derive(Debug)]
pub struct ApiRefusals(Refusals<IpAddr>);

impl Default for ApiRefusals {
    fn default() -> Self {
        ApiRefusals(Refusals::bounded(MAX_REFUSING_ADDRS, Ipv4Addr::UNSPECIFIED.into()))
    }
}

impl ApiRefusals {
    /// Count a refusal of `call` from `ip` at `now`: whether it is audited one by one
    /// (within `limit` this minute), and the summary of the address's minute before, if
    /// it ended with calls counted.
    fn admit(&self, ip: IpAddr, limit: u64, now: i64, call: &str) -> (bool, Option<AuditEvent>) {
        let (one_by_one, ended) = self.0.admit(ip, limit, REFUSAL_WINDOW_MS, now, call);
        (one_by_one, ended.map(refusal_summary))
    }

    /// The summaries of the minutes that ended by `now` (of every one with `all`, as the
    /// node stops), which are forgotten.
    pub fn due(&self, now: i64, all: bool) -> Vec<AuditEvent> {
        self.0.ended(now, REFUSAL_WINDOW_MS, all).into_iter().map(refusal_summary).collect()
    }
}

/// The entry counting one address's refused calls of a minute past those audited.
fn refusal_summary((ip, w): (IpAddr, Window)) -> AuditEvent {
    AuditEvent::new(Action::ApiRefused, Outcome::Refused).reason(format!(
        "{} more calls from {ip} refused since {}, answered 429 after {} audited one by one; the latest: {}",
        w.counted,
        crate::audit::rfc3339(w.since_ms),
        w.audited,
        w.latest
    ))
}

/// `path`, cut to [`MAX_PATH_IN_ENTRY`] bytes (at a character boundary) with `…` after it.
fn path_for_entry(path: &str) -> String {
    if path.len() <= MAX_PATH_IN_ENTRY {
        return path.to_owned();
    }
    let mut end = MAX_PATH_IN_ENTRY;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

async fn auth(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let path = req.uri().path().to_owned();
    shared.metrics.api_requests.add(route_label(&path), 1);
    if let Some(allowed) = route_roles(req.method(), &path) {
        let presented = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' ').filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer")))
            .map(|(_, token)| token);
        let role = presented.and_then(|t| shared.tokens.role_of(t.trim()));
        let refusal = match role {
            None => Some((
                StatusCode::UNAUTHORIZED,
                if presented.is_some() { "wrong token" } else { "missing bearer token" },
            )),
            Some(r) if !allowed.contains(&r) => Some((StatusCode::FORBIDDEN, "role may not call this route")),
            Some(_) => None,
        };
        if let Some((status, why)) = refusal {
            shared.metrics.api_refused.add(1);
            let who = role.map_or("unauthenticated", Role::as_str);
            // Without an address (a router served without one): all such calls share one.
            let ip = req
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map_or(Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip());
            let call = format!("{} {}: {why} ({who}, from {ip})", req.method(), path_for_entry(&path));
            let limit = shared.config.api.refusals_per_min;
            let (one_by_one, ended) = shared.api_refusals.admit(ip, limit, now_ms(), &call);
            if let Some(ev) = ended {
                shared.writer.audit(ev).await;
            }
            if !one_by_one {
                let mut resp = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "more than {limit} refused calls from {ip} this minute: {why} for {} {path}",
                        req.method()
                    ),
                )
                .into_response();
                resp.headers_mut().insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
                return resp;
            }
            // Answered only once its entry is durable: a kill -9 after the answer cannot
            // erase the trace of a refused call.
            let ev = AuditEvent::new(Action::ApiRefused, Outcome::Refused).reason(call);
            if let Err(e) = shared.writer.audit_durable(ev).await {
                tracing::warn!(error = %e, "the refusal of {path} could not be audited");
            }
            return ApiError::new(status, format!("{why} for {} {path}", req.method())).into_response();
        }
    }
    let resp = next.run(req).await;
    shared.metrics.api_latency.observe(started.elapsed().as_secs_f64());
    resp
}

/// Build the router over the node's shared state.
pub fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.api.max_body_bytes;
    Router::new()
        .route("/v1/records", post(ingest).get(list_records))
        .route("/v1/records/{id}", get(show_record))
        .route("/v1/records/{id}/revoke", post(revoke_record))
        .route("/v1/records/{id}/feedback", post(give_feedback))
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/audit", get(audit_query))
        .route(
            "/v1/audit/verify",
            get(audit_verify).post(audit_verify_witness).layer(DefaultBodyLimit::max(MAX_WITNESS_BYTES)),
        )
        .route("/v1/audit/count", get(audit_count))
        .route("/v1/audit/trace/{id}", get(audit_trace))
        .route("/v1/audit/export", get(audit_export))
        .route("/v1/audit/checkpoints", get(audit_checkpoints))
        .route("/v1/backup", get(backup))
        .route("/metrics", get(metrics))
        .merge(crate::reload::routes::routes())
        .layer(middleware::from_fn_with_state(shared.clone(), auth))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(shared)
}

/// One record as the API accepts it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordIn {
    /// Catalog category.
    pub category: String,
    /// Sensitivity level (required).
    pub classification: String,
    /// The body fields.
    pub body: serde_json::Map<String, Json_>,
    /// Creation time, RFC 3339; defaults to now (send it to make retries idempotent).
    #[serde(default)]
    pub created: Option<String>,
    /// Expiry, RFC 3339.
    #[serde(default)]
    pub expires: Option<String>,
    /// Id of a record this one replaces.
    #[serde(default)]
    pub supersedes: Option<String>,
}

/// The body of `POST /v1/records`: a batch, `{"records": [...]}` and no other key, or one
/// record (an object without `records`). Read by hand rather than as an untagged enum,
/// which would store a batch without a key it does not know and, refusing, could not say
/// why.
#[derive(Debug)]
enum IngestBody {
    Batch(Vec<Json_>),
    One(Json_),
}

impl IngestBody {
    /// Read a request body; the error is the message for the client.
    fn parse(body: &[u8]) -> Result<IngestBody, String> {
        let v: Json_ = serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
        let Json_::Object(mut map) = v else { return Ok(IngestBody::One(v)) };
        let Some(records) = map.remove("records") else { return Ok(IngestBody::One(Json_::Object(map))) };
        if !map.is_empty() {
            let keys: Vec<String> = map.keys().map(|k| format!("`{k}`")).collect();
            let s = if keys.len() == 1 { "" } else { "s" };
            return Err(format!(
                "unknown key{s} {} in a batch, which holds `records` and nothing else; nothing was stored",
                keys.join(", ")
            ));
        }
        match records {
            Json_::Array(records) => Ok(IngestBody::Batch(records)),
            _ => Err("`records` is not a list of records; nothing was stored".into()),
        }
    }
}

/// How far past the node's clock an ingested record's `created` may be: 10 minutes, for
/// clocks that differ a little. Tighter than what peers tolerate between themselves
/// ([`tamga_config::MAX_CREATED_AHEAD_MS`]): here it is the node's own clock, and a
/// time further ahead is a mistake (a local time sent as UTC, say).
const MAX_INGEST_AHEAD_MS: i64 = 10 * 60 * 1000;

fn parse_time(field: &str, s: &str) -> Result<i64, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s)
        .map_err(|e| format!("`{field}`: {s:?} is not an RFC 3339 time ({e})"))?;
    // Shown and sent in UTC, as a body's timestamps are.
    if !tamga_config::catalog::in_rfc3339_years(&t.with_timezone(&chrono::Utc)) {
        return Err(format!("`{field}`: {s:?} falls outside the years 0000 to 9999 in UTC"));
    }
    Ok(t.timestamp_millis())
}

/// Validate one record from the API against the catalog. Errors name the problem.
fn to_record(shared: &Shared, raw: Json_, now: i64) -> Result<Record, Vec<String>> {
    let r: RecordIn = serde_json::from_value(raw).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let category = r.category.parse().map_err(|e: tamga_protocol::ParseError| e.to_string());
    let classification = r.classification.parse::<Classification>().map_err(|e| e.to_string());
    let created = r.created.as_deref().map(|s| parse_time("created", s)).transpose().and_then(|c| match c {
        // The agreements' retention runs from it: not from a time not yet come.
        Some(t) if t > now.saturating_add(MAX_INGEST_AHEAD_MS) => Err(format!(
            "`created`: {} is more than 10 minutes ahead of this node's clock ({})",
            crate::audit::rfc3339(t),
            crate::audit::rfc3339(now)
        )),
        c => Ok(c),
    });
    let expires = r.expires.as_deref().map(|s| parse_time("expires", s)).transpose();
    let supersedes = r
        .supersedes
        .as_deref()
        .map(|s| s.parse::<Digest>().map_err(|e| format!("`supersedes`: {e}")))
        .transpose();
    let fed = shared.fed();
    let body = match &category {
        Ok(c) => fed
            .catalog
            .validate_body(c, &r.body)
            .map_err(|es| es.into_iter().map(|e| e.to_string()).collect::<Vec<_>>()),
        Err(_) => Ok(BTreeMap::new()),
    };
    for e in [category.as_ref().err(), classification.as_ref().err()].into_iter().flatten() {
        errors.push(e.clone());
    }
    for e in [created.as_ref().err(), expires.as_ref().err(), supersedes.as_ref().err()].into_iter().flatten()
    {
        errors.push(e.clone());
    }
    if let Err(es) = &body {
        errors.extend(es.iter().cloned());
    }
    match (category, classification, created, expires, supersedes, body) {
        (Ok(category), Ok(classification), Ok(created), Ok(expires), Ok(supersedes), Ok(body))
            if errors.is_empty() =>
        {
            Ok(Record {
                header: RecordHeader {
                    category,
                    classification,
                    origin: shared.config.member,
                    created_ms: created.unwrap_or(now),
                    supersedes,
                    expires_ms: expires,
                },
                body,
            })
        }
        _ => Err(errors),
    }
}

async fn ingest(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>, ApiError> {
    let body = body_within(body, shared.config.api.max_body_bytes)?;
    let parsed = IngestBody::parse(&body).map_err(|e| {
        shared.metrics.ingest_refused.add(1);
        ApiError::bad(e)
    })?;
    let (raws, batch) = match parsed {
        IngestBody::Batch(records) => (records, true),
        IngestBody::One(v) => (vec![v], false),
    };
    if raws.is_empty() {
        return Err(ApiError::bad("the batch has no records"));
    }
    if raws.len() > MAX_BATCH_RECORDS {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{} records in one batch, more than the limit of {MAX_BATCH_RECORDS}", raws.len()),
        ));
    }
    let now = now_ms();
    let mut records = Vec::with_capacity(raws.len());
    let mut details = Vec::new();
    for (i, raw) in raws.into_iter().enumerate() {
        match to_record(&shared, raw, now) {
            Ok(r) => records.push(r),
            Err(errs) => details.push(json!({ "index": i, "errors": errs })),
        }
    }
    if !details.is_empty() {
        shared.metrics.ingest_refused.add(1);
        let first = details[0]["errors"][0].as_str().unwrap_or("invalid record").to_owned();
        let message = if batch {
            format!("{} of the records are invalid; nothing was stored (first: {first})", details.len())
        } else {
            format!("invalid record: {first}")
        };
        return Err(ApiError { status: StatusCode::UNPROCESSABLE_ENTITY, message, details });
    }
    let salted = records.into_iter().map(|r| SaltedRecord::new(r, &shared.identity.salt_key)).collect();
    let outcome = shared.writer.ingest(salted).await.map_err(ApiError::internal)?;
    let new = outcome.iter().filter(|i| i.new).count();
    Ok(Json(json!({
        "ids": outcome.iter().map(|i| i.id.to_hex()).collect::<Vec<_>>(),
        "new": new,
        "duplicates": outcome.len() - new,
    })))
}

/// A record as the API shows it.
#[derive(Debug, Serialize)]
pub struct RecordView {
    id: RecordId,
    category: String,
    classification: Classification,
    origin: String,
    created: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    supersedes: Option<RecordId>,
    body: BTreeMap<String, Json_>,
    withheld_fields: u32,
    source: Json_,
    stored: String,
    state: crate::store::RecordState,
}

impl From<StoredRecord> for RecordView {
    fn from(r: StoredRecord) -> Self {
        RecordView {
            id: r.id,
            category: r.header.category.to_string(),
            classification: r.header.classification,
            origin: r.header.origin.to_string(),
            created: crate::audit::rfc3339(r.header.created_ms),
            expires: r.header.expires_ms.map(crate::audit::rfc3339),
            supersedes: r.header.supersedes,
            body: r.body.iter().map(|(k, v)| (k.clone(), v.to_json())).collect(),
            withheld_fields: r.withheld,
            source: r.source.to_json(),
            state: r.state,
            stored: crate::audit::rfc3339(r.stored_ms),
        }
    }
}

/// Query of `GET /v1/records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    category: Option<String>,
    origin: Option<String>,
    since: Option<String>,
    limit: Option<usize>,
    after: Option<String>,
}

/// Parse `since`: RFC 3339, or a relative duration such as `24h`, `7d`, `30m`.
pub fn parse_since(s: &str, now: i64) -> Result<i64, String> {
    let time = chrono::DateTime::parse_from_rfc3339(s);
    if let Ok(t) = time {
        return Ok(t.timestamp_millis());
    }
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 =
        num.parse().map_err(|_| format!("{s:?} is neither an RFC 3339 time nor a duration like 24h"))?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        // A date, or a time without its zone: meant as a time, so say what it lacks.
        _ if unit.starts_with(['-', ':', 'T']) => {
            let why = time.err().map(|e| e.to_string()).unwrap_or_default();
            return Err(format!(
                "{s:?} is not an RFC 3339 time ({why}): give the date, the time and the zone, as 2026-11-28T00:00:00Z"
            ));
        }
        _ => return Err(format!("{s:?}: a duration's unit must be s, m, h or d (as 24h)")),
    };
    Ok(now - n.saturating_mul(ms))
}

/// A query parameter parsed, or a 400 naming it.
fn parse_param<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Option<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value.map(str::parse).transpose().map_err(|e| ApiError::bad(format!("{name}: {e}")))
}

async fn list_records(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let filter = RecordFilter {
        category: parse_param("category", q.category.as_deref())?,
        origin: parse_param("origin", q.origin.as_deref())?,
        since_ms: q.since.as_deref().map(|s| parse_since(s, now_ms())).transpose().map_err(ApiError::bad)?,
        after: parse_param("after", q.after.as_deref())?,
    };
    let limit = q.limit.unwrap_or(DEFAULT_LIST_LIMIT).min(MAX_LIST_LIMIT);
    let store = shared.store.clone();
    let records = tokio::task::spawn_blocking(move || store.records(&filter, limit))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?;
    // A full page may have more after it: `next` is where the next page starts.
    let next = records.last().filter(|_| records.len() == limit && limit > 0).map(ListCursor::at);
    let views: Vec<RecordView> = records.into_iter().map(RecordView::from).collect();
    let mut answer = json!({ "records": views });
    if let Some(next) = next {
        answer["next"] = json!(next.to_string());
    }
    Ok(Json(answer))
}

/// The record named in a path, or a 400 for a bad id and a 404 for an unknown one.
fn record_or_404(shared: &Shared, id: &str) -> Result<(RecordId, StoredRecord), ApiError> {
    let id: RecordId = id.parse().map_err(|e| ApiError::bad(format!("{e}")))?;
    let r = shared
        .store
        .record(&id)
        .map_err(ApiError::internal)?
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, format!("no record {id}")))?;
    Ok((id, r))
}

async fn show_record(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let (id, r) = record_or_404(&shared, &id)?;
    let projections: Vec<Json_> =
        r.shares.iter().map(|(a, s)| json!({"agreement": a.as_str(), "seq": s})).collect();
    let receipts = crate::audit_index::receipts(&shared.store, id).map_err(ApiError::internal)?;
    let feedback = shared.store.feedback_of(&id).map_err(ApiError::internal)?;
    Ok(Json(json!({
        "record": RecordView::from(r),
        "projections": projections,
        "feedback": feedback.iter().map(|f| json!({"from": f.from.as_str(), "outcome": f.outcome.as_str(), "note": f.note, "time": crate::audit::rfc3339(f.time_ms)})).collect::<Vec<_>>(),
        "receipts": receipts.iter().map(|(action, r)| json!({"for": action.as_str(), "agreement": r.agreement.as_str(), "seq": r.seq, "receiver": r.receiver.as_str(), "received": crate::audit::rfc3339(r.received_ms)})).collect::<Vec<_>>(),
    })))
}

async fn revoke_record(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Json<Json_>, ApiError> {
    let (id, r) = record_or_404(&shared, &id)?;
    if r.source != crate::store::Source::Local {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("record {id} is {}'s; only its origin can revoke it", r.header.origin),
        ));
    }
    // Whether it is revoked already is the writer's to say: it answers so only once a flush
    // covers that revocation, which the store shows as soon as it is applied.
    let n = shared.writer.revoke(id).await.map_err(|e| match e {
        crate::writer::WriteError::Refused(m) => ApiError::new(StatusCode::CONFLICT, m),
        e => ApiError::internal(e),
    })?;
    Ok(Json(json!({ "id": id.to_hex(), "revocations": n })))
}

/// Body of `POST /v1/records/{id}/feedback`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedbackIn {
    /// seized, no_finding or false_positive.
    outcome: String,
    /// Free text.
    #[serde(default)]
    note: String,
}

async fn give_feedback(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Json_>, ApiError> {
    let body = body_within(body, shared.config.api.max_body_bytes)?;
    let (id, r) = record_or_404(&shared, &id)?;
    let input: FeedbackIn =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad(format!("malformed JSON: {e}")))?;
    let outcome: tamga_protocol::FeedbackOutcome = input.outcome.parse().map_err(ApiError::bad)?;
    if input.note.len() > tamga_protocol::limits::MAX_REASON_LEN {
        return Err(ApiError::bad(format!(
            "the note is longer than {} bytes",
            tamga_protocol::limits::MAX_REASON_LEN
        )));
    }
    // An own record is held as received too once taken back from peers after a restore.
    let agreement = match r.source {
        crate::store::Source::Received { agreement, .. } if r.header.origin != shared.config.member => {
            agreement
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!("record {id} is this node's own; feedback goes to an origin"),
            ))
        }
    };
    let f = tamga_protocol::Feedback::sign(
        id,
        agreement,
        r.header.origin,
        shared.config.member,
        outcome,
        input.note,
        now_ms(),
        &shared.identity.signing,
    );
    shared
        .writer
        .feedback(f.clone(), crate::writer::FeedbackEvent::Given)
        .await
        .map_err(ApiError::internal)?;
    let s2 = shared.clone();
    tokio::spawn(async move { crate::sync::send_feedback(&s2, crate::store::OutboxKey::of(&f), f).await });
    Ok(Json(
        json!({ "record": id.to_hex(), "origin": r.header.origin.as_str(), "outcome": outcome.as_str(), "queued": true }),
    ))
}

async fn status(State(shared): State<Arc<Shared>>) -> Result<Json<Json_>, ApiError> {
    let fed = shared.fed();
    let records = shared.store.record_count();
    let head = shared.store.audit_head().map_err(ApiError::internal)?;
    Ok(Json(json!({
        "member": shared.config.member.as_str(),
        "peer_id": shared.identity.peer_id().to_string(),
        "version": env!("CARGO_PKG_VERSION"),
        "started": crate::audit::rfc3339(shared.started_ms),
        "uptime_secs": (now_ms() - shared.started_ms) / 1000,
        "records": records,
        "policy_digest": fed.policy_digest.to_hex(),
        "audit_head": head.map(|(s, h)| json!({"seq": s, "hash": h.to_hex()})),
        "peers_connected": shared.metrics.peers_connected.load(std::sync::atomic::Ordering::Relaxed),
        "disk_bytes": shared.store.size_on_disk(),
        "disk_values_bytes": shared.store.values_on_disk(),
    })))
}

async fn peers(State(shared): State<Arc<Shared>>) -> Result<Json<Json_>, ApiError> {
    let fed = shared.fed();
    let me = shared.config.member;
    let states = shared.sync.snapshot();
    let own = shared.store.streams().map_err(ApiError::internal)?;
    // Where each ready connection goes (TCP or QUIC); empty if the network task has stopped.
    let conns = shared.net.connection_addrs().await.unwrap_or_default();
    let feedback = shared.store.feedback_waiting().map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for m in fed.roster.members().filter(|m| m.code != me) {
        let addrs: Vec<String> =
            conns.iter().filter(|(c, _, _)| *c == m.code).map(|(_, _, a)| a.to_string()).collect();
        let st = states.get(&m.code).cloned().unwrap_or_default();
        let agreements: Vec<Json_> = fed
            .my_agreements()
            .filter(|a| a.is_party(m.code))
            .map(|a| {
                let status = st.agreements.get(&a.id).map_or(json!("unknown"), |s| json!(s));
                json!({ "agreement": a.id.as_str(), "digest": status })
            })
            .collect();
        let behind: Vec<Json_> = own
            .iter()
            .filter(|(s, _)| {
                s.origin == me && fed.agreement(&s.agreement).is_some_and(|a| a.is_party(m.code))
            })
            .map(|(s, head)| {
                let theirs = st.streams.get(&format!("{}/{}", s.origin, s.agreement)).copied();
                json!({ "stream": format!("{}/{}", s.origin, s.agreement), "head": head, "peer_has": theirs,
                        "behind": theirs.map(|t| head.saturating_sub(t)) })
            })
            .collect();
        out.push(json!({
            "member": m.code.as_str(),
            "name": m.name,
            "role": m.role.as_str(),
            "connected": st.connected,
            "addrs": addrs,
            "last_seen": st.last_seen_ms.map(crate::audit::rfc3339),
            "roster_mismatch": st.roster_mismatch,
            "agreements": agreements,
            "streams": behind,
            "receipts": { "pushed": st.pushed, "receipted": st.receipted, "refused": st.refused,
                          "outstanding": st.receipts_outstanding() },
            "feedback_waiting": feedback.get(&m.code).copied().unwrap_or(0),
        }));
    }
    Ok(Json(json!({ "peers": out })))
}

async fn metrics(State(shared): State<Arc<Shared>>) -> Response {
    let n = shared.store.record_count();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], shared.metrics.render(n)).into_response()
}

async fn backup(State(shared): State<Arc<Shared>>) -> Result<Response, ApiError> {
    let snap = shared.writer.snapshot().await.map_err(ApiError::internal)?;
    let bytes = crate::backup::encode(&snap);
    // Answered only once its entry is durable: a copy of the whole store does not leave
    // the node without a trace.
    let ev = AuditEvent::new(Action::BackupTaken, Outcome::Ok).reason(format!(
        "a backup of {} keys ({} bytes) taken through the API",
        snap.len(),
        bytes.len()
    ));
    shared.writer.audit_durable(ev).await.map_err(ApiError::internal)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}

// ---------------------------------------------------------------------------------------
// Audit routes (auditor only). The work is in `audit` and `audit_index`; reads run on the
// blocking pool, against the store the writer appends to.
// ---------------------------------------------------------------------------------------

/// Largest body of `POST /v1/audit/verify` (a witness file of checkpoints).
pub const MAX_WITNESS_BYTES: usize = 64 * 1024 * 1024;
/// Largest page of `GET /v1/audit/export`.
pub const MAX_EXPORT_PAGE: usize = 10_000;

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::store::StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?.map_err(ApiError::internal)
}

async fn audit_query(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<crate::audit::QueryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let filter = q.into_filter(now_ms()).map_err(ApiError::bad)?;
    let store = shared.store.clone();
    let (out, more) = blocking(move || crate::audit_index::query_page(&store, &filter)).await?;
    Ok(with_more(Json(out).into_response(), more))
}

/// Header of an audit query's or trace's answer cut short: more entries match than it
/// holds (its `limit`, or [`crate::audit_index::MAX_ANSWER_BYTES`] of entries).
pub const MORE_ENTRIES_HEADER: &str = "tamga-more-entries";

fn with_more(mut resp: Response, more: bool) -> Response {
    if more {
        resp.headers_mut().insert(MORE_ENTRIES_HEADER, axum::http::HeaderValue::from_static("true"));
    }
    resp
}

async fn audit_count(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<BTreeMap<String, String>>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::audit_index::Counts>, ApiError> {
    let Query(mut q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    // Read as a map of strings, where `limit` would fail as "invalid type: string": said
    // plainly instead, as a count has no limit.
    if q.contains_key("limit") {
        return Err(ApiError::bad(
            "`limit` does not apply to a count, which counts every entry that matches",
        ));
    }
    let by = q
        .remove("by")
        .map(|b| b.parse::<crate::audit_index::GroupBy>())
        .transpose()
        .map_err(ApiError::bad)?;
    let params: crate::audit::QueryParams =
        serde_json::from_value(json!(q)).map_err(|e| ApiError::bad(format!("query: {e}")))?;
    let filter = params.into_filter(now_ms()).map_err(ApiError::bad)?;
    let store = shared.store.clone();
    Ok(Json(blocking(move || crate::audit_index::count(&store, &filter, by)).await?))
}

async fn audit_trace(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: RecordId = id.parse().map_err(|e| ApiError::bad(format!("{e}")))?;
    let store = shared.store.clone();
    let (out, more) = blocking(move || crate::audit_index::trace_page(&store, id)).await?;
    Ok(with_more(Json(out).into_response(), more))
}

/// Query of `GET /v1/audit/export`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    from: Option<u64>,
    to: Option<u64>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<usize>,
}

async fn audit_export(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let now = now_ms();
    let since = q.since.as_deref().map(|s| parse_since(s, now)).transpose().map_err(ApiError::bad)?;
    let until = q.until.as_deref().map(|s| parse_since(s, now)).transpose().map_err(ApiError::bad)?;
    let limit = q.limit.unwrap_or(MAX_EXPORT_PAGE).clamp(1, MAX_EXPORT_PAGE);
    let store = shared.store.clone();
    let (page, hi) = blocking(move || {
        let (lo, hi) = crate::audit_index::seq_range(&store, since, until)?;
        let (from, to) = (lo.max(q.from.unwrap_or(1)), hi.min(q.to.unwrap_or(u64::MAX)));
        if from > to {
            return Ok((Vec::new(), to));
        }
        Ok((crate::audit_index::export_page(&store, from, to, limit)?, to))
    })
    .await?;
    // A page ends at the limit, at the byte bound, or at `hi`: more may follow but at `hi`.
    let next = match page.last() {
        Some(e) if e.seq < hi => Some(e.seq + 1),
        _ => None,
    };
    Ok(Json(json!({ "entries": page, "next": next })))
}

/// Query of `GET /v1/audit/checkpoints`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointsQuery {
    member: Option<String>,
}

async fn audit_checkpoints(
    State(shared): State<Arc<Shared>>,
    q: Result<Query<CheckpointsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Json_>, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad(e.body_text()))?;
    let member: Option<tamga_protocol::MemberCode> =
        q.member.as_deref().map(str::parse).transpose().map_err(|e| ApiError::bad(format!("member: {e}")))?;
    let store = shared.store.clone();
    // Own checkpoints only up to the newest a flush made durable: the list may be kept as a
    // witness, and one a crash then lost would make this honest log look rewritten.
    let durable = shared.writer.durable_checkpoint().map_or(0, |c| c.seq);
    let cps = blocking(move || match member {
        Some(m) => store.peer_checkpoints(Some(m)),
        None => store.checkpoints().map(|cps| cps.into_iter().filter(|c| c.seq <= durable).collect()),
    })
    .await?;
    Ok(Json(json!({ "checkpoints": cps })))
}

async fn verify_with(
    shared: &Shared,
    witness: Vec<tamga_protocol::Checkpoint>,
    indexes: bool,
) -> Result<Json<crate::audit::VerifyReport>, ApiError> {
    let me = shared.config.member;
    let keys = shared.fed().roster.verifying_keys(me).to_vec();
    let opts = crate::audit::VerifyOptions { signer: Some((me, keys)), witness };
    let store = shared.store.clone();
    let report = tokio::task::spawn_blocking(move || {
        if indexes {
            crate::audit::verify_store_and_indexes(&store, &opts)
        } else {
            crate::audit::verify_store_with(&store, &opts)
        }
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(report))
}

async fn audit_verify(
    State(shared): State<Arc<Shared>>,
) -> Result<Json<crate::audit::VerifyReport>, ApiError> {
    verify_with(&shared, Vec::new(), false).await
}

/// Body of `POST /v1/audit/verify`: `{"witness": [checkpoint, …], "indexes": true}`, both
/// optional (no witness; indexes not checked).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VerifyBody {
    #[serde(default)]
    witness: Vec<tamga_protocol::Checkpoint>,
    #[serde(default)]
    indexes: bool,
}

async fn audit_verify_witness(
    State(shared): State<Arc<Shared>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<crate::audit::VerifyReport>, ApiError> {
    let body = body_within(body, MAX_WITNESS_BYTES)?;
    let b: VerifyBody = serde_json::from_slice(&body).map_err(|e| {
        // serde names a field only when it is unknown: name the one that is mistyped.
        let v: Option<Json_> = serde_json::from_slice(&body).ok();
        let field = match v.as_ref().map(|v| (v.get("indexes"), v.get("witness"))) {
            Some((Some(i), _)) if !i.is_boolean() => "indexes",
            Some((_, Some(_))) if !e.to_string().starts_with("unknown field") => "witness",
            _ => "body",
        };
        ApiError::bad(format!("{field}: {e}"))
    })?;
    verify_with(&shared, b.witness, b.indexes).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Client, ClientError};

    #[test]
    fn a_time_or_duration_refused_says_which_it_was_taken_for() {
        let now = 1_000_000_000;
        assert_eq!(parse_since("2026-11-28T00:00:00Z", now), Ok(1_795_824_000_000));
        assert_eq!(parse_since("24h", now), Ok(now - 86_400_000));
        for date in ["2026-11-28", "2026-11-28T00:00:00"] {
            let e = parse_since(date, now).expect_err("no zone");
            assert!(e.contains("is not an RFC 3339 time") && e.contains("2026-11-28T00:00:00Z"), "{e}");
        }
        let e = parse_since("24w", now).expect_err("no such unit");
        assert!(e.contains("unit must be s, m, h or d"), "{e}");
        let e = parse_since("yesterday", now).expect_err("neither");
        assert!(e.contains("neither an RFC 3339 time nor a duration"), "{e}");
    }

    // A revocation whose flush failed is answered 503. Asked again, the store already
    // shows it revoked, but only a flush makes that durable: the answer (409, already
    // revoked) waits for one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_revocation_asked_again_after_a_failed_flush_is_answered_once_a_flush_ran() {
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let (node, _) = crate::example::start_node(dir.path(), "RU").await.expect("starts");
        let tokens = crate::identity::Tokens::load(&node.shared().config.tokens).expect("tokens");
        let base = format!("http://{}", node.api_addr());
        let client = Client::with_token(base, tokens.token(Role::Operator));
        let record = json!({
            "category": "rms.method",
            "classification": "public",
            "body": { "title": "Selectivity", "method_type": "selectivity", "summary": "A method." },
        });
        let v = client.post("/v1/records", &record).await.expect("ingests");
        let id = v["ids"][0].as_str().expect("an id").to_owned();
        let revoke = format!("/v1/records/{id}/revoke");
        let status = |e: ClientError| match e {
            ClientError::Api { status, .. } => status.as_u16(),
            other => panic!("{other}"),
        };
        let store = node.shared().store.clone();
        store.fail_next_flush();
        assert_eq!(status(client.post(&revoke, &json!({})).await.expect_err("not durable")), 503);
        let before = store.flushes();
        assert_eq!(status(client.post(&revoke, &json!({})).await.expect_err("revoked")), 409);
        assert!(store.flushes() > before, "answered before a flush covered the revocation");
        node.shutdown().await;
    }
}
