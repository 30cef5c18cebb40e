//! `portico link …`: serve Link (the app developer's side) and administer it — apps, the
//! directory of portals, and the vault's keys.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use link::directory::{Category, EndpointInput};
use link::vault::{KeySource, Vault};
use link::{Link, LinkConfig};
use serde_json::json;
use store::SystemClock;

use crate::run::RunError;

// Parsed once per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum LinkCommand {
    /// Serve Link's API, the login broker and its background workers.
    Serve(LinkServeArgs),
    /// Link's own clients (an app developer's backends).
    #[command(subcommand)]
    App(AppCommand),
    /// Portals in the directory.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Import a User-access Brands bundle, a FHIR Endpoint/Organization bundle, or CSV.
    #[command(subcommand)]
    Directory(DirectoryCommand),
    /// The vault's encryption keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Payer-to-payer: fetch a member's history through a connection (to their previous
    /// health plan) and load it into this Portico's store, with Provenance naming the old plan.
    /// Re-running it writes only what changed.
    Import(LinkImportArgs),
}

#[derive(Args, Clone)]
pub struct LinkImportArgs {
    /// The connection to the old plan (con_…).
    #[arg(long)]
    pub connection: String,
    /// The member's Patient id in this Portico: references to the old plan's Patient point
    /// there, and the old Patient is not copied. Without it, the old Patient is copied too.
    #[arg(long)]
    pub patient: Option<String>,
    /// The Portico store to import into.
    #[command(flatten)]
    pub target: crate::DbArgs,
    /// Link's database (`postgres://…` or a SQLite file).
    #[arg(long = "link-database-url", env = "PORTICO_LINK_DATABASE_URL", default_value = "portico-data/link.db")]
    pub link_database_url: String,
    /// Link's settings file.
    #[arg(long = "link-config", env = "PORTICO_LINK_CONFIG")]
    pub link_config: Option<PathBuf>,
    /// Link's vault key file (when PORTICO_LINK_KEY is not set).
    #[arg(long = "link-key-file", env = "PORTICO_LINK_KEY_FILE", default_value = "portico-data/link.keys")]
    pub link_key_file: PathBuf,
    /// This Portico's FHIR base URL (for the store's absolute references).
    #[arg(long, env = "PORTICO_BASE_URL", default_value = "http://127.0.0.1:8080/fhir")]
    pub base_url: String,
}

#[derive(Args, Clone)]
pub struct LinkDbArgs {
    /// `postgres://…` for PostgreSQL; otherwise a SQLite file path.
    #[arg(long, env = "PORTICO_LINK_DATABASE_URL", default_value = "portico-data/link.db")]
    pub database_url: String,
    /// A TOML file of Link settings (see the README's Link section).
    #[arg(long, env = "PORTICO_LINK_CONFIG")]
    pub config: Option<PathBuf>,
    /// The vault key file, created on first use, used when PORTICO_LINK_KEY is not set.
    #[arg(long, env = "PORTICO_LINK_KEY_FILE", default_value = "portico-data/link.keys")]
    pub key_file: PathBuf,
    /// Link's public base URL (the portals' redirect URI is BASE/link/v1/callback).
    #[arg(long, env = "PORTICO_LINK_BASE_URL")]
    pub base_url: Option<String>,
}

#[derive(Args, Clone)]
pub struct LinkServeArgs {
    #[command(flatten)]
    pub db: LinkDbArgs,
    #[arg(long, env = "PORTICO_LINK_LISTEN", default_value = "127.0.0.1:8090")]
    pub listen: String,
}

#[derive(Subcommand)]
pub enum AppCommand {
    /// Register an app; prints its id and a secret key (shown once).
    Add {
        #[command(flatten)]
        db: LinkDbArgs,
        #[arg(long)]
        name: String,
        /// Where people are sent back after a login (exact match); repeat for several.
        #[arg(long = "client-url", required = true)]
        client_urls: Vec<String>,
        /// Where events are POSTed (signed; the signing secret is printed once).
        #[arg(long)]
        webhook_url: Option<String>,
    },
    List {
        #[command(flatten)]
        db: LinkDbArgs,
    },
}

#[derive(Args, Clone, Default)]
pub struct AddressArgs {
    #[arg(long)]
    pub organization: Option<String>,
    #[arg(long)]
    pub street: Option<String>,
    #[arg(long)]
    pub city: Option<String>,
    #[arg(long)]
    pub state: Option<String>,
    #[arg(long)]
    pub zip: Option<String>,
    #[arg(long, allow_hyphen_values = true)]
    pub latitude: Option<f64>,
    #[arg(long, allow_hyphen_values = true)]
    pub longitude: Option<f64>,
    #[arg(long)]
    pub vendor: Option<String>,
}

#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
pub enum EndpointCommand {
    /// Add a portal (or update the one with the same FHIR base) and discover it.
    Add {
        #[command(flatten)]
        db: LinkDbArgs,
        #[arg(long)]
        name: String,
        /// clinical or payer
        #[arg(long)]
        category: String,
        #[arg(long)]
        fhir_base: String,
        /// Link's client id at this portal.
        #[arg(long)]
        client_id: String,
        /// For client_secret_basic (PORTICO_LINK_CLIENT_SECRET keeps it out of the process list).
        #[arg(long, env = "PORTICO_LINK_CLIENT_SECRET", conflicts_with = "private_key")]
        client_secret: Option<String>,
        /// A PEM private key (RSA or EC) for private_key_jwt.
        #[arg(long)]
        private_key: Option<PathBuf>,
        /// The `kid` the portal knows the key by.
        #[arg(long, requires = "private_key")]
        key_id: Option<String>,
        /// Scopes to ask for (default: launch/patient openid fhirUser offline_access patient/*.rs).
        #[arg(long)]
        scopes: Option<String>,
        #[command(flatten)]
        address: AddressArgs,
    },
    List {
        #[command(flatten)]
        db: LinkDbArgs,
    },
    /// Run discovery now and show the endpoint's state.
    Check {
        #[command(flatten)]
        db: LinkDbArgs,
        id: String,
    },
}

#[derive(Subcommand)]
pub enum DirectoryCommand {
    Import {
        #[command(flatten)]
        db: LinkDbArgs,
        file: PathBuf,
        /// Run discovery for every endpoint imported.
        #[arg(long)]
        discover: bool,
    },
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// With a key file: add a new key, re-encrypt everything with it, drop the old one. With
    /// PORTICO_LINK_KEY: re-encrypt everything with its first key (put the new key first, run
    /// this, then remove the old key).
    Rotate {
        #[command(flatten)]
        db: LinkDbArgs,
    },
    /// How many sealed values each key holds.
    List {
        #[command(flatten)]
        db: LinkDbArgs,
    },
}

fn link_error(e: link::LinkError) -> RunError {
    RunError::Config(e.to_string())
}

/// Settings from `--config` and the command line.
pub fn link_config(db: &LinkDbArgs, default_base: &str) -> Result<LinkConfig, RunError> {
    let mut config = match &db.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RunError::Config(format!("cannot read {}: {e}", path.display())))?;
            toml::from_str::<LinkConfig>(&text).map_err(|e| RunError::Config(format!("{}: {e}", path.display())))?
        }
        None => LinkConfig::default(),
    };
    config.base_url = db.base_url.clone().unwrap_or_else(|| default_base.to_owned()).trim_end_matches('/').to_owned();
    Ok(config)
}

pub async fn open_link(db: &LinkDbArgs, config: LinkConfig) -> Result<(Link, KeySource), RunError> {
    let (vault, source) = Vault::load(&db.key_file).map_err(link_error)?;
    let link = Link::open(&db.database_url, config, vault, Arc::new(SystemClock)).await.map_err(link_error)?;
    Ok((link, source))
}

async fn open_admin(db: &LinkDbArgs) -> Result<Link, RunError> {
    let config = link_config(db, "http://127.0.0.1:8090")?;
    Ok(open_link(db, config).await?.0)
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

pub async fn run(command: LinkCommand) -> Result<(), RunError> {
    match command {
        LinkCommand::Serve(args) => serve(args).await,
        LinkCommand::App(AppCommand::Add { db, name, client_urls, webhook_url }) => {
            let link = open_admin(&db).await?;
            let created = link.create_app(&name, &client_urls, webhook_url.as_deref()).await.map_err(link_error)?;
            print_json(&serde_json::to_value(&created).unwrap_or_default());
            eprintln!("The secret key (and webhook secret) are shown only now; Link stores a hash of the key.");
            link.close().await;
            Ok(())
        }
        LinkCommand::App(AppCommand::List { db }) => {
            let link = open_admin(&db).await?;
            print_json(&serde_json::to_value(link.apps().await.map_err(link_error)?).unwrap_or_default());
            link.close().await;
            Ok(())
        }
        LinkCommand::Endpoint(EndpointCommand::Add {
            db,
            name,
            category,
            fhir_base,
            client_id,
            client_secret,
            private_key,
            key_id,
            scopes,
            address,
        }) => {
            let link = open_admin(&db).await?;
            let private_key_pem = match &private_key {
                Some(path) => Some(
                    std::fs::read_to_string(path)
                        .map_err(|e| RunError::Config(format!("cannot read {}: {e}", path.display())))?,
                ),
                None => None,
            };
            let input = EndpointInput {
                name,
                category: Some(category.parse::<Category>().map_err(link_error)?),
                fhir_base,
                organization: address.organization,
                street: address.street,
                city: address.city,
                state: address.state,
                zip: address.zip,
                latitude: address.latitude,
                longitude: address.longitude,
                vendor: address.vendor,
                client_id: Some(client_id),
                client_secret,
                private_key_pem,
                key_id,
                scopes,
                source: "cli".into(),
                ..EndpointInput::default()
            };
            let (id, created) = link.upsert_endpoint(&input).await.map_err(link_error)?;
            let endpoint = link.require_endpoint(&id).await.map_err(link_error)?;
            let discovered = link.discover(&endpoint).await.map_err(link_error)?;
            link.health().flush().await;
            let entry = link
                .directory_entry(link.require_endpoint(&id).await.map_err(link_error)?)
                .await
                .map_err(link_error)?;
            print_json(&json!({"created": created, "endpoint": entry}));
            if let Err(why) = discovered {
                eprintln!("warning: discovery failed ({why}); the endpoint is listed and will be retried on schedule");
            }
            link.close().await;
            Ok(())
        }
        LinkCommand::Endpoint(EndpointCommand::List { db }) => {
            let link = open_admin(&db).await?;
            let items = link.directory(None, &link::directory::search::Lookup::All, None).await.map_err(link_error)?;
            print_json(&serde_json::to_value(items).unwrap_or_default());
            link.close().await;
            Ok(())
        }
        LinkCommand::Endpoint(EndpointCommand::Check { db, id }) => {
            let link = open_admin(&db).await?;
            let id: link::ids::EndpointId =
                id.parse().map_err(|_| RunError::Config(format!("'{id}' is not an endpoint id (ep_…)")))?;
            let endpoint = link.require_endpoint(&id).await.map_err(link_error)?;
            let outcome = link.discover(&endpoint).await.map_err(link_error)?;
            link.health().flush().await;
            let entry = link
                .directory_entry(link.require_endpoint(&id).await.map_err(link_error)?)
                .await
                .map_err(link_error)?;
            print_json(&json!({"discovery": outcome.as_ref().map(|_| "ok").unwrap_or("failed"), "endpoint": entry}));
            link.close().await;
            Ok(())
        }
        LinkCommand::Directory(DirectoryCommand::Import { db, file, discover }) => {
            let link = open_admin(&db).await?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| RunError::Config(format!("cannot read {}: {e}", file.display())))?;
            let source = format!("import:{}", file.file_name().map(|f| f.to_string_lossy()).unwrap_or_default());
            let report = link.import_directory(&text, &source).await.map_err(link_error)?;
            if discover {
                let (ok, failed) = link.rediscover_all().await.map_err(link_error)?;
                eprintln!("discovery: {ok} ok, {failed} failed");
            }
            link.health().flush().await;
            print_json(&serde_json::to_value(&report).unwrap_or_default());
            link.close().await;
            Ok(())
        }
        LinkCommand::Keys(KeysCommand::List { db }) => {
            let (link, source) = open_link(&db, link_config(&db, "http://127.0.0.1:8090")?).await?;
            let counts = link.sealed_by_key().await.map_err(link_error)?;
            print_json(&json!({"source": format!("{source:?}"), "sealedByKey": counts}));
            link.close().await;
            Ok(())
        }
        LinkCommand::Keys(KeysCommand::Rotate { db }) => rotate(&db).await,
        LinkCommand::Import(args) => import(args).await,
    }
}

async fn import(args: LinkImportArgs) -> Result<(), RunError> {
    let connection: link::ids::ConnectionId = args
        .connection
        .parse()
        .map_err(|_| RunError::Config(format!("'{}' is not a connection id (con_…)", args.connection)))?;
    if let Some(p) = &args.patient {
        if !fhir::search::is_valid_id(p) {
            return Err(RunError::Config(format!("'{p}' is not a FHIR id")));
        }
    }
    let db = LinkDbArgs {
        database_url: args.link_database_url.clone(),
        config: args.link_config.clone(),
        key_file: args.link_key_file.clone(),
        base_url: None,
    };
    let link = open_admin(&db).await?;
    let fetched = link.fetch_for_import(&connection).await;
    link.close().await;
    let (source, bundle) = fetched.map_err(link_error)?;
    let plan = link::import::plan_import(&bundle, &source, args.patient.as_deref()).map_err(link_error)?;
    let store = crate::run::open_store(&args.target, &args.base_url, 16).await?;
    if let Some(p) = &args.patient {
        if !matches!(store.read("Patient", p).await?, store::ReadOutcome::Found(_)) {
            store.close().await;
            return Err(RunError::Config(format!("Patient/{p} is not in the target store")));
        }
    }
    let count = plan.resources.len();
    let stats = store.import(plan.resources).await;
    store.close().await;
    let stats = stats?;
    print_json(&json!({
        "connection": connection.as_str(),
        "source": source.fhir_base,
        "patient": args.patient,
        "resources": count,
        "written": stats.written,
        "unchanged": stats.unchanged,
        "byType": plan.counts,
    }));
    Ok(())
}

async fn rotate(db: &LinkDbArgs) -> Result<(), RunError> {
    let config = link_config(db, "http://127.0.0.1:8090")?;
    let (_, source) = Vault::load(&db.key_file).map_err(link_error)?;
    match source {
        KeySource::File(path) => {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| RunError::Config(format!("cannot read {}: {e}", path.display())))?;
            let old = link::vault::parse_keys(&text).map_err(link_error)?;
            let new = link::vault::new_key();
            let mut keys = vec![new];
            keys.extend(old.iter().copied());
            link::vault::write_key_file(&path, &keys).map_err(link_error)?;
            let (link, _) = open_link(db, config).await?;
            let count = link.reencrypt_all().await.map_err(link_error)?;
            let counts = link.sealed_by_key().await.map_err(link_error)?;
            let active = Vault::from_keys(&[new]).map_err(link_error)?.active_kid().to_owned();
            if counts.keys().all(|k| *k == active) {
                link::vault::write_key_file(&path, &[new]).map_err(link_error)?;
            }
            print_json(&json!({"activeKey": active, "reencrypted": count, "sealedByKey": counts}));
            link.close().await;
        }
        KeySource::Environment => {
            let (link, _) = open_link(db, config).await?;
            let count = link.reencrypt_all().await.map_err(link_error)?;
            let counts = link.sealed_by_key().await.map_err(link_error)?;
            print_json(&json!({"reencrypted": count, "sealedByKey": counts}));
            eprintln!(
                "Every value is sealed with the first key of PORTICO_LINK_KEY; the other keys can be removed now."
            );
            link.close().await;
        }
    }
    Ok(())
}

/// mimalloc's `mi_option_purge_delay` (the same index in its v2 and v3 headers).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// `portico link serve`
pub async fn serve(args: LinkServeArgs) -> Result<(), RunError> {
    // A fan-out holds a burst of portal answers and frees them all at once; purging freed
    // memory at once (not 10 ms later) keeps the process's resident memory near what it uses
    // (measured: 130 → 74 MB peak in the 20-portal benchmark, same speed).
    // SAFETY: sets an integer option of the allocator; it takes effect for later purges.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .map_err(|source| RunError::Listen { addr: args.listen.clone(), source })?;
    let local = listener.local_addr().map_err(RunError::Serve)?;
    let config = link_config(&args.db, &format!("http://{local}"))?;
    let (link, source) = open_link(&args.db, config).await?;
    let workers = link.start_workers();
    tracing::info!(base_url = %link.config().base_url, keys = ?source, "Link is serving");
    println!("Link is serving at {} (callback {})", link.config().base_url, link.callback_url());
    let served = server::link_api::serve_until(listener, link.clone(), crate::run::stop_requested()).await;
    workers.abort();
    link.close().await;
    served.map_err(RunError::Serve)
}
