//! Liveness (no database) and readiness (database reachable).

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

use crate::AppState;

pub fn routes() -> Router<AppState> {
    Router::new().route("/healthz", get(|| async { "ok" })).route("/readyz", get(ready))
}

async fn ready(State(state): State<AppState>) -> (StatusCode, &'static str) {
    match state.store.ping().await {
        Ok(()) if state.config.dev_open_access => {
            tracing::warn!("--dev-open-access: FHIR requests without a token are answered as an administrator's");
            (StatusCode::OK, "ready (WARNING: --dev-open-access, the FHIR API is open without tokens)")
        }
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable")
        }
    }
}
