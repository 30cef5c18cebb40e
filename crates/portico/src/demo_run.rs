//! `portico demo`: both sides of the platform from one command. A clinical portal (Portico with
//! generated patients), a health plan (a second Portico with the same people's coverage and
//! claims-derived records), Link with both in its directory, and a sample aggregator app built
//! on Link's API. `--no-link` serves the clinical portal alone.

use std::net::SocketAddr;

use link::directory::{Category, EndpointInput};
use oauth::register::ClientSpec;
use server::AppState;
use store::auth::{ClientType, OwnerType, RegistrationSource};

use crate::run::{open_store, redact, server_config, RunError};
use crate::DemoArgs;

/// Link's client id at both demo portals.
const LINK_CLIENT: &str = "portico-link";

/// What the health plan holds of a member: coverage, claims and what claims show.
const PLAN_TYPES: &[&str] = &[
    "Patient",
    "Coverage",
    "Claim",
    "ExplanationOfBenefit",
    "Condition",
    "Immunization",
    "MedicationRequest",
    "Organization",
    "Practitioner",
    "PractitionerRole",
    "Location",
];

async fn bind(addr: &str) -> Result<tokio::net::TcpListener, RunError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|source| RunError::Listen { addr: addr.to_owned(), source })
}

/// The demo's other listeners beside the clinic's: its port moved by `offset`, or port 0 (the OS
/// picks) when the clinic's port was itself left to the OS. Offsetting the port the OS picked would
/// land on a port some other process may well hold (ephemeral ports are shared with clients).
fn offset_addr(requested: &str, bound: &SocketAddr, offset: u16) -> String {
    let os_picked = requested.rsplit_once(':').is_some_and(|(_, port)| port == "0");
    let port = if os_picked || bound.port() == 0 { 0 } else { bound.port().saturating_add(offset) };
    SocketAddr::new(bound.ip(), port).to_string()
}

/// A sibling database of the clinic's: `portico-data/demo.db` → `portico-data/demo-plan.db`.
fn sibling_db(clinic: &str, suffix: &str, given: Option<&String>) -> Result<String, RunError> {
    if let Some(url) = given {
        return Ok(url.clone());
    }
    if store::db::is_postgres_url(clinic) {
        return Err(RunError::Config(format!(
            "with a PostgreSQL clinic database, give --plan-database-url and --link-database-url too (or --no-link); the {suffix} database is not created for you"
        )));
    }
    let path = std::path::Path::new(clinic);
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "demo".into());
    Ok(path.with_file_name(format!("{stem}-{suffix}.db")).display().to_string())
}

/// Register Link as a public client of a demo portal (or point it at Link's current address).
async fn register_link(state: &AppState, callback: &str) -> Result<(), RunError> {
    let err = |e: &dyn std::fmt::Display| RunError::Auth(e.to_string());
    let id: auth::ClientId = LINK_CLIENT.parse().map_err(|e| err(&e))?;
    if state.auth.store().client(&id).await.map_err(|e| err(&e))?.is_some() {
        state.auth.store().set_client_redirect_uris(&id, &[callback.to_owned()]).await.map_err(|e| err(&e))?;
        return Ok(());
    }
    state
        .auth
        .register_client(ClientSpec {
            client_id: Some(LINK_CLIENT.into()),
            name: "Acme Health Records (through Portico Link)".into(),
            owner_type: OwnerType::IndependentDeveloper,
            client_type: ClientType::Public,
            redirect_uris: vec![callback.to_owned()],
            scopes: oauth::register::DEFAULT_APP_SCOPES.into(),
            jwks: None,
            jwks_uri: None,
            logo_uri: None,
            policy_uri: None,
            tos_uri: None,
            ehr_launcher: false,
            source: RegistrationSource::Cli,
        })
        .await
        .map_err(|e| err(&e))?;
    Ok(())
}

/// One generated data set as a portal's resources (the plan keeps its own types).
fn resources(data: &demo::DemoData, keep: Option<&[&str]>) -> Result<Vec<serde_json::Value>, RunError> {
    let mut out = Vec::new();
    for bundle in &data.bundles {
        for r in crate::import::resources_of_bundle(bundle.clone()).map_err(RunError::Import)? {
            let t = r.get("resourceType").and_then(serde_json::Value::as_str).unwrap_or_default();
            if keep.is_none_or(|k| k.contains(&t)) {
                out.push(r);
            }
        }
    }
    Ok(out)
}

pub async fn demo(args: DemoArgs) -> Result<(), RunError> {
    let mut serve_args = args.serve.clone();
    if serve_args.db.database_url == "portico-data/portico.db" {
        serve_args.db.database_url = "portico-data/demo.db".into();
    }
    let listener = bind(&serve_args.listen).await?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let origin = format!("http://{local}");
    let base_url = serve_args.base_url.clone().unwrap_or_else(|| format!("{origin}/fhir"));
    let store = open_store(&serve_args.db, &base_url, serve_args.cache_mb).await?;
    let data = demo::generate(&demo::DemoConfig { seed: args.seed, patients: args.patients });
    let mut clinic_resources = resources(&data, None)?;
    // Open to-dos (the member's and the children's), so the banner can print a working action link.
    clinic_resources.extend(demo::todo::prior_authorizations(&data));
    let count = clinic_resources.len();
    let stats = store.import(clinic_resources).await?;
    let accounts = data.accounts.clone();
    let mut config = server_config(&serve_args, base_url.clone())?;
    config.demo_app = true;
    let clinic = AppState::new(store, config).await.map_err(|e| RunError::Auth(e.to_string()))?;
    let logins = crate::demo_accounts::ensure(&clinic.auth, &accounts, &origin).await?;
    let todo = tasks::mint(
        &clinic.store,
        demo::todo::PRIOR_AUTH_TASK,
        &tasks::MintRequest { policy: tasks::Policy::ClickThrough, expires_at: None },
        &tasks::Minter::default(),
        clinic.auth.config().origin(),
    )
    .await
    .map_err(|e| RunError::Config(format!("the demo's action link: {e}")))?;

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        crate::run::stop_requested().await;
        let _ = stop_tx.send(true);
    });
    let stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    };

    println!();
    println!("Portico demo — {count} generated resources ({} new or changed), seed {}", stats.written, args.seed);
    println!();
    println!("  Try the sample app   {origin}/demo-app/");
    println!("  Connected apps       {origin}/account/apps");
    println!("  FHIR base URL        {base_url}");
    println!("  SMART configuration  {base_url}/.well-known/smart-configuration");
    println!("  CapabilityStatement  {base_url}/metadata");
    println!("  Health               {origin}/healthz   {origin}/readyz");
    println!("  A to-do link         {}", todo.url);
    println!("                       (the member approves or declines a prior authorization; one use)");
    println!("  Database             {}", redact(&serve_args.db.database_url));
    println!();
    println!("  Sign in as (password for all: {})", crate::demo_accounts::PASSWORD);
    for login in &logins {
        println!("    {:<10} {}", login.username, login.about);
    }
    println!();
    println!(
        "  The FHIR API needs an access token, e.g. from the sample app; the member is Patient/{}.",
        accounts.member_patient_id
    );

    let mut tasks = tokio::task::JoinSet::new();
    if !args.no_link {
        let plan_listener =
            bind(&args.plan_listen.clone().unwrap_or_else(|| offset_addr(&serve_args.listen, &local, 1))).await?;
        let link_listener =
            bind(&args.link_listen.clone().unwrap_or_else(|| offset_addr(&serve_args.listen, &local, 10))).await?;
        let app_listener =
            bind(&args.aggregator_listen.clone().unwrap_or_else(|| offset_addr(&serve_args.listen, &local, 11)))
                .await?;
        let plan_origin = format!("http://{}", plan_listener.local_addr().map_err(RunError::Serve)?);
        let link_base = format!("http://{}", link_listener.local_addr().map_err(RunError::Serve)?);
        let app_origin = format!("http://{}", app_listener.local_addr().map_err(RunError::Serve)?);

        // The health plan: the same people, the payer's share of their records.
        let plan_db = sibling_db(&serve_args.db.database_url, "plan", args.plan_database_url.as_ref())?;
        let plan_base = format!("{plan_origin}/fhir");
        let mut plan_db_args = serve_args.db.clone();
        plan_db_args.database_url = plan_db.clone();
        let plan_store = open_store(&plan_db_args, &plan_base, serve_args.cache_mb).await?;
        let plan_resources = resources(&data, Some(PLAN_TYPES))?;
        let plan_count = plan_resources.len();
        plan_store.import(plan_resources).await?;
        let plan_config = server_config(&serve_args, plan_base.clone())?;
        let plan = AppState::new(plan_store, plan_config).await.map_err(|e| RunError::Auth(e.to_string()))?;
        crate::demo_accounts::ensure(&plan.auth, &accounts, &plan_origin).await?;

        // Link, with both portals in its directory.
        let link_db = sibling_db(&serve_args.db.database_url, "link", args.link_database_url.as_ref())?;
        let key_file = if store::db::is_postgres_url(&link_db) {
            std::path::PathBuf::from("portico-data/demo-link.keys")
        } else {
            std::path::Path::new(&link_db).with_extension("keys")
        };
        let link_args = crate::link_cli::LinkDbArgs {
            database_url: link_db.clone(),
            config: None,
            key_file,
            base_url: Some(link_base.clone()),
        };
        let link_config = crate::link_cli::link_config(&link_args, &link_base)?;
        let (link, _) = crate::link_cli::open_link(&link_args, link_config).await?;
        let callback = link.callback_url();
        register_link(&clinic, &callback).await?;
        register_link(&plan, &callback).await?;

        tasks.spawn(server::serve_until(listener, clinic, stop()));
        tasks.spawn(server::serve_until(plan_listener, plan, stop()));

        let link_err = |e: link::LinkError| RunError::Config(e.to_string());
        let portals = [
            (
                "Springfield Community Clinic",
                Category::Clinical,
                base_url.clone(),
                "Springfield",
                "MA",
                "01103",
                42.1015,
                -72.5898,
            ),
            ("Portico Health Plan", Category::Payer, plan_base.clone(), "Boston", "MA", "02110", 42.3601, -71.0589),
        ];
        for (name, category, fhir_base, city, state, zip, lat, lon) in portals {
            let input = EndpointInput {
                name: name.into(),
                category: Some(category),
                fhir_base,
                organization: Some(name.into()),
                street: Some(
                    if category == Category::Clinical { "1 Main Street" } else { "100 Federal Street" }.into(),
                ),
                city: Some(city.into()),
                state: Some(state.into()),
                zip: Some(zip.into()),
                latitude: Some(lat),
                longitude: Some(lon),
                vendor: Some("Portico".into()),
                client_id: Some(LINK_CLIENT.into()),
                source: "demo".into(),
                ..EndpointInput::default()
            };
            let (id, _) = link.upsert_endpoint(&input).await.map_err(link_err)?;
            let endpoint = link.require_endpoint(&id).await.map_err(link_err)?;
            if let Err(why) = link.discover(&endpoint).await.map_err(link_err)? {
                return Err(RunError::Config(format!("Link could not discover the demo portal {name}: {why}")));
            }
        }
        let app = link
            .create_app(
                "Acme Health Records (sample aggregator)",
                &[format!("{app_origin}/connected")],
                Some(&format!("{app_origin}/webhooks")),
            )
            .await
            .map_err(link_err)?;
        let workers = link.start_workers();
        let aggregator = server::aggregator_demo::AggregatorConfig {
            link_base: link_base.clone(),
            origin: app_origin.clone(),
            app_id: app.app.app_id.to_string(),
            secret_key: app.secret_key.clone(),
            webhook_secret: app.webhook_secret.clone().unwrap_or_default(),
        };
        let served_link = link.clone();
        let link_stop = stop();
        tasks.spawn(async move {
            let outcome = server::link_api::serve_until(link_listener, served_link.clone(), link_stop).await;
            drop(workers);
            served_link.close().await;
            outcome
        });
        tasks.spawn(server::aggregator_demo::serve_until(app_listener, aggregator, stop()));

        println!();
        println!("  Link — the app developer's side");
        println!("    Sample aggregator app  {app_origin}/");
        println!("    Link API               {link_base}/link/v1/   (directory, connect, fetch, jobs)");
        println!("    Health plan portal     {plan_base}   ({plan_count} resources; same accounts)");
        println!("    Brands bundle          {link_base}/link/v1/directory/brands");
        println!("    Demo app at Link       {}   secret key {}", app.app.app_id, app.secret_key);
        println!("    Databases              {}   {}", redact(&plan_db), redact(&link_db));
    } else {
        tasks.spawn(server::serve_until(listener, clinic, stop()));
    }
    println!();
    println!("Press Ctrl-C to stop.");
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(RunError::Serve(e)),
            Err(e) => return Err(RunError::Config(format!("a demo server stopped: {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::offset_addr;

    #[test]
    fn other_listeners_follow_a_chosen_port_and_leave_a_picked_one_to_the_os() {
        let bound = "127.0.0.1:8080".parse().unwrap();
        assert_eq!(offset_addr("127.0.0.1:8080", &bound, 10), "127.0.0.1:8090");
        assert_eq!(offset_addr("localhost:8080", &bound, 1), "127.0.0.1:8081");
        let picked = "127.0.0.1:41234".parse().unwrap();
        assert_eq!(offset_addr("127.0.0.1:0", &picked, 1), "127.0.0.1:0");
        assert_eq!(offset_addr("[::1]:0", &"[::1]:41234".parse().unwrap(), 11), "[::1]:0");
    }
}
