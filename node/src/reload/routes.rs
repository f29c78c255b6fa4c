//! The policy routes of the local API (admin token; see `route_roles` in
//! [`crate::api`]):
//!
//! | route               | method | answer                                                        |
//! |---------------------|--------|---------------------------------------------------------------|
//! | `/v1/policy`        | GET    | the set in force: digest, since when, and each file's text    |
//! | `/v1/policy/reload` | POST   | 200 `loaded`/`unchanged`, or 422 with every error (old set stays) |
//!
//! This module only translates between HTTP and [`Reloader`](super::Reloader); it never
//! reads a policy file itself.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tamga_config::{ConfigError, SourceFile};

use super::Trigger;
use crate::daemon::Shared;

/// The policy routes, to merge into the API router before its auth layer.
pub fn routes() -> Router<Arc<Shared>> {
    Router::new().route("/v1/policy", get(in_force)).route("/v1/policy/reload", post(reload))
}

/// An error as JSON: its parts, and `text` as the CLI prints it.
pub fn error_json(e: &ConfigError) -> Value {
    let mut v = super::commands::error_json(e);
    v["text"] = Value::String(super::commands::error_text(e));
    v
}

fn file_json(role: &str, f: &SourceFile) -> Value {
    json!({
        "role": role,
        "path": f.path().display().to_string(),
        "digest": f.digest().to_hex(),
        "text": f.text(),
    })
}

async fn in_force(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.reloader.in_force();
    let Some(src) = now.sources else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": "the texts of the policy in force are not known (its files changed while the node started); run `tamga policy reload`",
                "digest": now.fed.policy_digest.to_hex(),
            })),
        )
            .into_response();
    };
    let mut files = vec![file_json("roster", &src.roster), file_json("catalog", &src.catalog)];
    files.extend(src.agreements.iter().map(|a| file_json("agreement", a)));
    files.push(file_json("policy", &src.policy));
    Json(json!({
        "member": now.fed.me.as_str(),
        "digest": now.fed.policy_digest.to_hex(),
        "since": crate::audit::rfc3339(now.since_ms),
        "trigger": now.trigger.map(Trigger::as_str),
        "files": files,
    }))
    .into_response()
}

async fn reload(State(shared): State<Arc<Shared>>) -> Response {
    match shared.reloader.reload(Trigger::Api).await {
        Ok(r) => Json(json!({
            "outcome": if r.changed { "loaded" } else { "unchanged" },
            "digest": r.digest.to_hex(),
            "previous": r.previous.to_hex(),
            "files": r.files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "took_ms": r.took.as_secs_f64() * 1000.0,
        }))
        .into_response(),
        Err(refused) if refused.unaudited.is_some() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": refused.to_string(), "digest": refused.in_force.to_hex() })),
        )
            .into_response(),
        Err(refused) => {
            let n = refused.errors.len();
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({
                    "error": format!(
                        "the new policy files have {n} error{}; the policy in force ({}) stays",
                        if n == 1 { "" } else { "s" },
                        refused.in_force.to_hex()
                    ),
                    "digest": refused.in_force.to_hex(),
                    "details": refused.errors.iter().map(error_json).collect::<Vec<_>>(),
                })),
            )
                .into_response()
        }
    }
}
