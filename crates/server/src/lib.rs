//! Portico's HTTP edge. Handlers parse the request, call the store or domain, and map the
//! result; they hold no business rules.

pub mod config;
mod error;
mod fhir_api;
mod health;
mod request;
mod response;

use std::sync::Arc;

use axum::Router;
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

pub use config::ServerConfig;
pub use error::ApiError;
use store::Store;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    /// The CapabilityStatement, rendered once.
    capability: Arc<String>,
}

impl AppState {
    pub fn new(store: Store, config: ServerConfig) -> AppState {
        let capability = fhir_api::metadata::capability_statement(&config.base_url).to_string();
        AppState { store, config: Arc::new(config), capability: Arc::new(capability) }
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .route("/fhir/", axum::routing::post(fhir_api::post_bundle))
        .nest("/fhir", fhir_api::routes())
        .layer(CorsLayer::permissive().expose_headers([
            axum::http::header::LOCATION,
            axum::http::header::ETAG,
            axum::http::header::LAST_MODIFIED,
            axum::http::header::CONTENT_LOCATION,
        ]))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // The matched route, never the query string (it may carry codes or states).
            let route = req
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "unmatched".into());
            tracing::info_span!("request", method = %req.method(), route)
        }))
        .with_state(state)
}

/// Bind and serve until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    axum::serve(listener, router(state)).await
}
