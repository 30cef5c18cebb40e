//! `serve` and `demo`.

use std::sync::Arc;

use server::{AppState, ServerConfig};
use store::{Store, StoreOptions, SystemClock};

use crate::{DemoArgs, ServeArgs};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Store(#[from] store::StoreError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("server stopped: {0}")]
    Serve(std::io::Error),
    #[error("import failed: {0}")]
    Import(String),
}

pub async fn open_store(database_url: &str, base_url: &str, cache_mb: u64) -> Result<Store, RunError> {
    let options =
        StoreOptions { base_url: base_url.to_string(), cache_bytes: cache_mb << 20, ..StoreOptions::default() };
    Ok(Store::connect(database_url, options, Arc::new(SystemClock)).await?)
}

pub async fn serve(args: ServeArgs) -> Result<(), RunError> {
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| RunError::Listen { addr: args.listen.clone(), source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let base_url = args.base_url.clone().unwrap_or_else(|| format!("http://{local}/fhir"));
    let store = open_store(&args.db.database_url, &base_url, args.cache_mb).await?;
    tracing::info!(%base_url, database = %redact(&args.db.database_url), "Portico is serving");
    serve_on(listener, store, &args, base_url).await
}

async fn serve_on(
    listener: tokio::net::TcpListener,
    store: Store,
    args: &ServeArgs,
    base_url: String,
) -> Result<(), RunError> {
    let config = ServerConfig { base_url, max_body_bytes: args.max_body_bytes };
    let state = AppState::new(store, config);
    server::serve(listener, state).await.map_err(RunError::Serve)
}

pub async fn demo(args: DemoArgs) -> Result<(), RunError> {
    let mut serve_args = args.serve.clone();
    if serve_args.db.database_url == "portico-data/portico.db" {
        serve_args.db.database_url = "portico-data/demo.db".into();
    }
    let listener = tokio::net::TcpListener::bind(&serve_args.listen)
        .await
        .map_err(|source| RunError::Listen { addr: serve_args.listen.clone(), source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let origin = format!("http://{local}");
    let base_url = serve_args.base_url.clone().unwrap_or_else(|| format!("{origin}/fhir"));
    let store = open_store(&serve_args.db.database_url, &base_url, serve_args.cache_mb).await?;

    let data = demo::generate(&demo::DemoConfig { seed: args.seed, patients: args.patients });
    let mut resources = Vec::new();
    for bundle in data.bundles {
        resources.extend(crate::import::resources_of_bundle(bundle).map_err(RunError::Import)?);
    }
    let count = resources.len();
    let stats = store.import(resources).await?;
    let accounts = data.accounts;
    println!();
    println!("Portico demo — {count} generated resources ({} new or changed), seed {}", stats.written, args.seed);
    println!();
    println!("  FHIR base URL        {base_url}");
    println!("  CapabilityStatement  {base_url}/metadata");
    println!("  A member's record    {base_url}/Patient/{}/$everything", accounts.member_patient_id);
    println!(
        "  Their lab results    {base_url}/Observation?patient={}&category=laboratory",
        accounts.member_patient_id
    );
    println!("  All patients         {base_url}/Patient");
    println!("  Health               {origin}/healthz   {origin}/readyz");
    println!("  Database             {}", redact(&serve_args.db.database_url));
    println!();
    println!("Press Ctrl-C to stop.");
    serve_on(listener, store, &serve_args, base_url).await
}

/// Never print a password from a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => format!("{}://…@{}", &url[..scheme], &url[at + 1..]),
        _ => url.to_string(),
    }
}
