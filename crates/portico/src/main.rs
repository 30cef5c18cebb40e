//! `portico`: serve the FHIR server, import data, or run the demo.

mod admin;
mod convert;
mod demo_accounts;
mod demo_run;
mod group;
mod import;
mod link_cli;
mod run;
mod sync_client;
mod task_link;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

// Parsing and indexing FHIR JSON allocates many small objects; mimalloc handles that pattern
// far better than the system allocator (it was ~40% of import time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "portico", version, about = "FHIR R4 server and SMART authorization server")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per run: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Serve the FHIR API (migrations run on start).
    Serve(ServeArgs),
    /// Load FHIR Bundles (transaction/batch/collection) and NDJSON files, plain or .gz.
    Import(ImportArgs),
    /// Generate sample patients with Portico's own generator, load them, and serve.
    Demo(DemoArgs),
    /// Register and list apps (OAuth clients).
    #[command(subcommand)]
    Client(admin::ClientCommand),
    /// Create sign-in accounts.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Give a practitioner's account or an organization access to a patient.
    Assign(admin::AssignArgs),
    /// List or revoke grants (a person's consent to an app).
    #[command(subcommand)]
    Grant(admin::GrantCommand),
    /// Issue tokens for a grant made by an operator (testing, benchmarks).
    #[command(subcommand)]
    Token(admin::TokenCommand),
    /// Rotate and list token signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// EHR launch contexts.
    #[command(subcommand)]
    Launch(admin::LaunchCommand),
    /// Convert DSTU2 or STU3 files (Bundles, resources, NDJSON, .gz) to R4 NDJSON or a Bundle.
    Convert(convert::ConvertArgs),
    /// Check FHIR R4 JSON files (resources, Bundles, NDJSON) against the R4 definitions.
    Validate(validate::ValidateArgs),
    /// Single-task action links (approve a prior authorization, sign a Consent) for one Task.
    #[command(subcommand, name = "task-link")]
    TaskLink(task_link::TaskLinkCommand),
    /// The offline client: keep a local database in step with a server (pull, push, status, resolve).
    Sync(sync_client::SyncArgs),
    /// Groups of patients (an attribution list) for `Group/{id}/$export`.
    #[command(subcommand)]
    Group(group::GroupCommand),
    /// Link, the app developer's side: serve it, register apps, manage the directory and keys.
    #[command(subcommand)]
    Link(link_cli::LinkCommand),
}

#[derive(Args, Clone)]
pub struct DbArgs {
    /// `postgres://…` for PostgreSQL; otherwise a SQLite file path.
    #[arg(long, env = "PORTICO_DATABASE_URL", default_value = "portico-data/portico.db")]
    pub database_url: String,
    /// A TOML file with further settings: `[auth]` (token lifetimes, registration policy,
    /// lockout, practitioner access rules) and `[labels]` (sensitivity code lists); see the README.
    #[arg(long, env = "PORTICO_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct ServeArgs {
    #[command(flatten)]
    pub db: DbArgs,
    #[arg(long, env = "PORTICO_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Public base URL of the FHIR API; defaults to http://LISTEN/fhir.
    #[arg(long, env = "PORTICO_BASE_URL")]
    pub base_url: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "PORTICO_MAX_BODY_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Memory for cached reads and search pages, in MiB (0 turns the cache off).
    #[arg(long, env = "PORTICO_CACHE_MB", default_value_t = 32)]
    pub cache_mb: u64,
    /// DEVELOPMENT ONLY: answer FHIR requests without a token as an administrator's. Never use
    /// this with real records.
    #[arg(long)]
    pub dev_open_access: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub db: DbArgs,
    /// Files or folders (searched recursively for .json, .ndjson, .json.gz, .ndjson.gz).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Resources per database transaction.
    #[arg(long, default_value_t = 2000)]
    pub batch: usize,
    /// No progress bar (logs and CI).
    #[arg(long)]
    pub quiet: bool,
    /// The files are DSTU2 or STU3: convert them to R4 on the way in.
    #[arg(long, value_parser = parse_version)]
    pub from: Option<fhir::convert::Version>,
}

/// `dstu2` or `stu3` (or a version number such as 1.0.2 or 3.0.1).
pub fn parse_version(text: &str) -> Result<fhir::convert::Version, String> {
    fhir::convert::Version::parse(text).ok_or_else(|| format!("'{text}' is not dstu2 or stu3"))
}

#[derive(Args)]
pub struct DemoArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// How many patients to generate.
    #[arg(long, default_value_t = 25)]
    pub patients: usize,
    /// Generator seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Serve the clinical portal only (no health plan, Link or sample aggregator).
    #[arg(long)]
    pub no_link: bool,
    /// The health plan portal's address (default: the clinic's port + 1).
    #[arg(long)]
    pub plan_listen: Option<String>,
    /// Link's address (default: the clinic's port + 10).
    #[arg(long)]
    pub link_listen: Option<String>,
    /// The sample aggregator app's address (default: the clinic's port + 11).
    #[arg(long)]
    pub aggregator_listen: Option<String>,
    /// The health plan's database (default: beside the clinic's SQLite file, `-plan.db`).
    #[arg(long)]
    pub plan_database_url: Option<String>,
    /// Link's database (default: beside the clinic's SQLite file, `-link.db`).
    #[arg(long)]
    pub link_database_url: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A bulk load's index builds and VACUUM take seconds by design; sqlx would warn of each as a
    // "slow statement", which reads like a fault to whoever runs the import.
    let default_filter = match cli.command {
        Command::Import(_) => "info,sqlx=warn,sqlx::query=error",
        _ => "info,sqlx=warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTICO_LOG").unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal: a log file gets plain text (and each
        // request's span is formatted once, so escape codes would cost on every request too).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => run::serve(args).await,
            Command::Import(args) => import::run(args).await.map(|_| ()),
            Command::Demo(args) => demo_run::demo(args).await,
            Command::Client(c) => admin::client(c).await,
            Command::User(c) => admin::user(c).await,
            Command::Keys(c) => admin::keys(c).await,
            Command::Assign(a) => admin::assign(a).await,
            Command::Grant(c) => admin::grant(c).await,
            Command::Token(c) => admin::token(c).await,
            Command::Launch(c) => admin::launch(c).await,
            Command::Link(c) => link_cli::run(c).await,
            Command::TaskLink(c) => task_link::run(c).await,
            Command::Group(c) => group::run(c).await,
            Command::Sync(c) => sync_client::run(c).await,
            Command::Validate(args) => validate::run(args),
            Command::Convert(args) => convert::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
