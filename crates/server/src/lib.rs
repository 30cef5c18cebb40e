//! Portico's HTTP edge. Handlers parse the request, call the store or domain, and map the
//! result; they hold no business rules.

mod account;
mod action_pages;
pub mod aggregator_demo;
mod audit;
pub mod config;
mod demo_app;
mod error;
mod fhir_api;
mod health;
pub mod link_api;
mod oauth_api;
mod pages;
mod request;
mod response;

use std::sync::Arc;

use axum::response::IntoResponse;
use axum::Router;
use oauth::{AuthServer, OAuthError};
use tower_http::cors::CorsLayer;
use tower_http::trace::TraceLayer;

pub use audit::AuditLog;
pub use config::{ServerConfig, SubscriptionsConfig};
pub use error::ApiError;
use store::Store;

/// The application's shared state. One `Arc`, so the clone axum makes for every request and
/// middleware is a single reference-count increment.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

pub struct Shared {
    pub store: Store,
    pub config: Arc<ServerConfig>,
    /// The SMART authorization server.
    pub auth: AuthServer,
    /// The audit trail writer.
    pub audit: AuditLog,
    /// The CapabilityStatement, rendered once.
    capability: Arc<String>,
    /// What a request without a token may do under `--dev-open-access`: one value for all of
    /// them (it holds no per-request state), not an allocation per request.
    open_access: Arc<oauth::access::Access>,
    /// Bulk Data export (`None` when turned off).
    pub bulk: Option<bulk::Exporter>,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// Build the state: loads (or creates) the token signing keys.
    pub async fn new(store: Store, mut config: ServerConfig) -> Result<AppState, OAuthError> {
        config.auth.fhir_base_url = config.base_url.trim_end_matches('/').to_owned();
        let auth = AuthServer::new(store.clone(), config.auth.clone()).await?;
        let capability = fhir_api::metadata::capability_statement(&config.base_url, &auth.oauth_uris()).to_string();
        let audit = AuditLog::start(store.clone());
        if config.subscriptions.enabled {
            let s = &config.subscriptions;
            let notifier = subscriptions::Notifier::new(
                store.clone(),
                auth.clone(),
                config.auth.fhir_base_url.clone(),
                subscriptions::NotifierConfig {
                    lease_ms: s.lease_ms.max(100),
                    poll_ms: s.poll_ms.max(10),
                    failures_before_error: s.failures_before_error.max(1),
                    max_backoff_ms: s.max_backoff_ms.max(100),
                    ..subscriptions::NotifierConfig::default()
                },
            )
            .map_err(OAuthError::internal)?;
            notifier.spawn();
        }
        let bulk = if config.bulk.enabled {
            // Without a configured place, files go to the temporary folder (they expire anyway);
            // `portico serve` configures a folder beside its database.
            let storage = config
                .bulk
                .storage
                .clone()
                .unwrap_or_else(|| std::env::temp_dir().join("portico-bulk").to_string_lossy().into_owned());
            let fhir_base = config.auth.fhir_base_url.clone();
            let origin = fhir_base.strip_suffix("/fhir").unwrap_or(&fhir_base).to_owned();
            let deps = bulk::Deps { store: store.clone(), auth: auth.clone(), origin, fhir_base };
            let exporter = bulk::Exporter::new(deps, config.bulk.clone(), &storage).map_err(OAuthError::internal)?;
            exporter.spawn();
            Some(exporter)
        } else {
            None
        };
        Ok(AppState(Arc::new(Shared {
            store,
            config: Arc::new(config),
            auth,
            audit,
            capability: Arc::new(capability),
            open_access: Arc::new(oauth::access::Access::dev_open()),
            bulk,
        })))
    }
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(oauth_api::routes())
        .merge(account::routes())
        .merge(action_pages::routes())
        .merge(demo_app::routes(state.config.demo_app))
        // Public FHIR-base documents: no token needed, none checked.
        .route(
            "/fhir/metadata",
            axum::routing::get(fhir_api::metadata::get).fallback(|method: axum::http::Method| async move {
                ApiError::new(
                    axum::http::StatusCode::METHOD_NOT_ALLOWED,
                    "not-supported",
                    format!("{method} is not supported on metadata (use GET)"),
                )
            }),
        )
        .nest("/fhir/.well-known", oauth_api::fhir_routes())
        .merge(
            fhir_api::routes()
                .route_layer(axum::middleware::from_fn_with_state(state.clone(), fhir_api::access::authenticate)),
        )
        // Paths no route matches; under the FHIR base (an empty id, a trailing slash) the answer
        // is an OperationOutcome like every other FHIR error.
        .fallback(|uri: axum::http::Uri| async move {
            if uri.path().starts_with("/fhir/") {
                ApiError::not_found("no such FHIR endpoint").into_response()
            } else {
                axum::http::StatusCode::NOT_FOUND.into_response()
            }
        })
        // Browser apps call discovery, the token endpoint and the FHIR API from their own
        // origin with `Authorization: Bearer`; a `*` in Allow-Headers does not cover
        // Authorization, so the requested headers are mirrored. No cookies cross origins.
        .layer(
            CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::AllowHeaders::mirror_request())
                .max_age(std::time::Duration::from_secs(600))
                .expose_headers([
                    axum::http::header::LOCATION,
                    axum::http::header::ETAG,
                    axum::http::header::LAST_MODIFIED,
                    axum::http::header::CONTENT_LOCATION,
                    axum::http::header::WWW_AUTHENTICATE,
                ]),
        )
        .layer(TraceLayer::new_for_http().make_span_with(|req: &axum::http::Request<_>| {
            // The matched route, never the query string (it may carry codes or states).
            let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("unmatched", |p| p.as_str());
            tracing::info_span!("request", method = req.method().as_str(), route)
        }))
        .with_state(state)
}

/// Serve until the process is stopped.
pub async fn serve(listener: tokio::net::TcpListener, state: AppState) -> std::io::Result<()> {
    serve_until(listener, state, std::future::pending()).await
}

/// Serve until `stop` completes; then stop accepting, let the requests in flight finish (for at
/// most [`DRAIN`]), and store the audit records still queued, so a restart loses no trail.
pub async fn serve_until(
    listener: tokio::net::TcpListener,
    state: AppState,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let audit = state.audit.clone();
    let (stopping_tx, stopping) = tokio::sync::oneshot::channel::<()>();
    // The peer address feeds sign-in throttling.
    let server = axum::serve(listener, router(state).into_make_service_with_connect_info::<std::net::SocketAddr>())
        .with_graceful_shutdown(async move {
            stop.await;
            let _ = stopping_tx.send(());
        });
    let drained = async {
        // Idle keep-alive connections close at once; a client holding one open does not keep
        // the process alive past the deadline.
        if stopping.await.is_ok() {
            tokio::time::sleep(DRAIN).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let result = tokio::select! {
        r = server => r,
        () = drained => {
            tracing::warn!("connections still open {} s after the stop request; closing them", DRAIN.as_secs());
            Ok(())
        }
    };
    audit.flush().await;
    result
}

/// How long a stopping server waits for requests in flight.
pub const DRAIN: std::time::Duration = std::time::Duration::from_secs(10);
