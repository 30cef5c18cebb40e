//! Administration commands: `client`, `user`, `keys`, `launch`.

use std::path::PathBuf;

use auth::keys::SigningAlg;
use auth::password::hash_secret;
use auth::PatientId;
use clap::{Args, Subcommand};
use oauth::launch::LaunchRequest;
use oauth::register::{ClientSpec, DEFAULT_APP_SCOPES};
use oauth::{AuthConfig, AuthServer};
use store::auth::{ClientType, NewUser, OwnerType, RegistrationSource, Role};

use crate::run::{open_store, RunError};
use crate::DbArgs;

#[derive(Args)]
pub struct AdminDb {
    #[command(flatten)]
    pub db: DbArgs,
    /// The public FHIR base URL (the issuer of tokens); only matters for printed URLs.
    #[arg(long, env = "PORTICO_BASE_URL", default_value = "http://127.0.0.1:8080/fhir")]
    pub base_url: String,
}

#[derive(Subcommand)]
pub enum ClientCommand {
    /// Register an app and print it as JSON (with its secret, shown only now).
    Add(Box<ClientAdd>),
    /// List registered apps as JSON.
    List(AdminDb),
}

#[derive(Args)]
pub struct ClientAdd {
    #[command(flatten)]
    pub admin: AdminDb,
    /// The app's name as people see it on the authorization screen.
    #[arg(long)]
    pub name: String,
    /// Who operates the app: health-plan, independent-developer or covered-entity.
    #[arg(long, default_value = "independent-developer")]
    pub owner_type: String,
    /// A redirect URI (repeat for several); matched exactly.
    #[arg(long = "redirect-uri")]
    pub redirect_uris: Vec<String>,
    /// A confidential client with a generated secret (client_secret_basic/_post).
    #[arg(long, conflicts_with_all = ["jwks", "jwks_uri"])]
    pub confidential: bool,
    /// A confidential client authenticating with private_key_jwt, keys from this JWK Set file.
    #[arg(long, conflicts_with = "jwks_uri")]
    pub jwks: Option<PathBuf>,
    /// A confidential client authenticating with private_key_jwt, keys at this URL.
    #[arg(long)]
    pub jwks_uri: Option<String>,
    /// The most the app may be granted (space-separated). Default: every patient/ and user/ scope
    /// plus openid, fhirUser, launch and offline access; for backend services, system/*.rs.
    #[arg(long)]
    pub scopes: Option<String>,
    /// Choose the client_id (default: random).
    #[arg(long)]
    pub client_id: Option<String>,
    #[arg(long)]
    pub logo_uri: Option<String>,
    #[arg(long)]
    pub policy_uri: Option<String>,
    #[arg(long)]
    pub tos_uri: Option<String>,
    /// May create EHR launch contexts through POST /auth/launch (the EHR side).
    #[arg(long)]
    pub ehr_launcher: bool,
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a sign-in account.
    Add(UserAdd),
}

#[derive(Args)]
pub struct UserAdd {
    #[command(flatten)]
    pub admin: AdminDb,
    #[arg(long)]
    pub username: String,
    /// The password (or set PORTICO_USER_PASSWORD, which stays out of the process list).
    #[arg(long, env = "PORTICO_USER_PASSWORD", hide_env_values = true)]
    pub password: String,
    /// A patient the user may act for (repeat for a proxy: a parent for children). For a
    /// practitioner, a patient assigned to them.
    #[arg(long = "patient")]
    pub patients: Vec<String>,
    /// The user is this Practitioner.
    #[arg(long, conflicts_with = "admin_role")]
    pub practitioner: Option<String>,
    /// An administrator (operators).
    #[arg(long)]
    pub admin_role: bool,
    /// The user's own FHIR resource (default: Patient/<first --patient>, or the practitioner).
    #[arg(long)]
    pub fhir_user: Option<String>,
}

#[derive(Subcommand)]
pub enum KeysCommand {
    /// Add a signing key and retire the previous one (still published until its tokens expire).
    Rotate(KeysRotate),
    /// Print the published JWKS.
    List(AdminDb),
}

#[derive(Args)]
pub struct KeysRotate {
    #[command(flatten)]
    pub admin: AdminDb,
    /// Rotate only RS256 (ID tokens) or only ES256 (access tokens); both by default.
    #[arg(long)]
    pub alg: Option<String>,
}

#[derive(Subcommand)]
pub enum LaunchCommand {
    /// Store an EHR launch context and print its single-use `launch` value.
    Create(LaunchCreate),
}

#[derive(Args)]
pub struct LaunchCreate {
    #[command(flatten)]
    pub admin: AdminDb,
    #[arg(long)]
    pub patient: Option<String>,
    #[arg(long)]
    pub encounter: Option<String>,
    /// SMART fhirContext as JSON, e.g. '[{"reference":"DiagnosticReport/1"}]'.
    #[arg(long)]
    pub fhir_context: Option<String>,
    /// The EHR shows its own patient banner (need_patient_banner=false).
    #[arg(long)]
    pub no_patient_banner: bool,
    #[arg(long)]
    pub smart_style_url: Option<String>,
}

async fn auth_server(admin: &AdminDb) -> Result<AuthServer, RunError> {
    let store = open_store(&admin.db, &admin.base_url, 0).await?;
    let config = AuthConfig { fhir_base_url: admin.base_url.trim_end_matches('/').to_owned(), ..AuthConfig::default() };
    AuthServer::new(store, config).await.map_err(|e| RunError::Auth(e.to_string()))
}

fn print_json(value: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(value).unwrap_or_default());
}

pub async fn client(command: ClientCommand) -> Result<(), RunError> {
    match command {
        ClientCommand::List(admin) => {
            let server = auth_server(&admin).await?;
            let clients = server.store().list_clients().await.map_err(|e| RunError::Auth(e.to_string()))?;
            let list: Vec<serde_json::Value> = clients
                .into_iter()
                .map(|client| oauth::register::Registered { client, client_secret: None }.to_json())
                .collect();
            print_json(&serde_json::Value::Array(list));
            Ok(())
        }
        ClientCommand::Add(args) => {
            let server = auth_server(&args.admin).await?;
            let registered =
                server.register_client(client_spec(*args)?).await.map_err(|e| RunError::Auth(e.to_string()))?;
            print_json(&registered.to_json());
            Ok(())
        }
    }
}

fn client_spec(args: ClientAdd) -> Result<ClientSpec, RunError> {
    let owner_type: OwnerType = args.owner_type.parse().map_err(RunError::Auth)?;
    let jwks = match &args.jwks {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| RunError::Auth(format!("cannot read {}: {e}", path.display())))?;
            Some(
                serde_json::from_str::<serde_json::Value>(&text)
                    .map_err(|e| RunError::Auth(format!("{} is not JSON: {e}", path.display())))?,
            )
        }
        None => None,
    };
    let client_type = if jwks.is_some() || args.jwks_uri.is_some() {
        ClientType::ConfidentialAsymmetric
    } else if args.confidential {
        ClientType::ConfidentialSymmetric
    } else {
        ClientType::Public
    };
    let scopes = args.scopes.unwrap_or_else(|| {
        if client_type == ClientType::ConfidentialAsymmetric && args.redirect_uris.is_empty() {
            "system/*.rs".to_owned()
        } else {
            DEFAULT_APP_SCOPES.to_owned()
        }
    });
    Ok(ClientSpec {
        client_id: args.client_id,
        name: args.name,
        owner_type,
        client_type,
        redirect_uris: args.redirect_uris,
        scopes,
        jwks,
        jwks_uri: args.jwks_uri,
        logo_uri: args.logo_uri,
        policy_uri: args.policy_uri,
        tos_uri: args.tos_uri,
        ehr_launcher: args.ehr_launcher,
        source: RegistrationSource::Cli,
    })
}

pub async fn user(command: UserCommand) -> Result<(), RunError> {
    let UserCommand::Add(args) = command;
    let server = auth_server(&args.admin).await?;
    let new = new_user(&args)?;
    let user = server.store().create_user(new).await.map_err(|e| RunError::Auth(e.to_string()))?;
    let patients = server.store().user_patients(&user.user_id).await.map_err(|e| RunError::Auth(e.to_string()))?;
    print_json(&serde_json::json!({
        "user_id": user.user_id,
        "username": user.username,
        "role": user.role.as_str(),
        "fhirUser": user.fhir_user,
        "patients": patients,
    }));
    Ok(())
}

pub fn new_user(args: &UserAdd) -> Result<NewUser, RunError> {
    let patients = args
        .patients
        .iter()
        .map(|p| p.parse::<PatientId>().map_err(|e| RunError::Auth(format!("--patient {p:?}: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let (role, default_fhir_user) = if args.admin_role {
        (Role::Admin, None)
    } else if let Some(practitioner) = &args.practitioner {
        (Role::Practitioner, Some(format!("Practitioner/{practitioner}")))
    } else {
        if patients.is_empty() && args.fhir_user.is_none() {
            return Err(RunError::Auth(
                "a patient user needs --patient ID (or --practitioner ID, or --admin-role)".into(),
            ));
        }
        (Role::Patient, patients.first().map(|p| p.reference()))
    };
    if args.password.chars().count() < 8 {
        return Err(RunError::Auth("the password must have at least 8 characters".into()));
    }
    let password_hash = hash_secret(&args.password).map_err(|e| RunError::Auth(e.to_string()))?;
    Ok(NewUser {
        username: args.username.clone(),
        password_hash,
        role,
        fhir_user: args.fhir_user.clone().or(default_fhir_user),
        patients,
    })
}

pub async fn keys(command: KeysCommand) -> Result<(), RunError> {
    match command {
        KeysCommand::List(admin) => {
            let server = auth_server(&admin).await?;
            print_json(&server.jwks().await.map_err(|e| RunError::Auth(e.to_string()))?);
            Ok(())
        }
        KeysCommand::Rotate(args) => {
            let algs: Vec<SigningAlg> = match &args.alg {
                Some(a) => vec![a.parse().map_err(|e: auth::AuthError| RunError::Auth(e.to_string()))?],
                None => vec![SigningAlg::Rs256, SigningAlg::Es256],
            };
            let server = auth_server(&args.admin).await?;
            let mut rotated = Vec::new();
            for alg in algs {
                let kid = server.rotate_keys(alg).await.map_err(|e| RunError::Auth(e.to_string()))?;
                rotated.push(serde_json::json!({ "kid": kid, "alg": alg.as_str() }));
            }
            let jwks = server.jwks().await.map_err(|e| RunError::Auth(e.to_string()))?;
            print_json(&serde_json::json!({ "rotated": rotated, "jwks": jwks }));
            Ok(())
        }
    }
}

pub async fn launch(command: LaunchCommand) -> Result<(), RunError> {
    let LaunchCommand::Create(args) = command;
    let server = auth_server(&args.admin).await?;
    let fhir_context = match &args.fhir_context {
        Some(text) => {
            Some(serde_json::from_str(text).map_err(|e| RunError::Auth(format!("--fhir-context is not JSON: {e}")))?)
        }
        None => None,
    };
    let created = server
        .create_launch(LaunchRequest {
            patient: args.patient,
            encounter: args.encounter,
            fhir_context,
            need_patient_banner: Some(!args.no_patient_banner),
            smart_style_url: args.smart_style_url,
        })
        .await
        .map_err(|e| RunError::Auth(e.to_string()))?;
    print_json(
        &serde_json::json!({ "launch": created.launch, "expires_in": created.expires_in, "iss": args.admin.base_url }),
    );
    Ok(())
}

#[derive(Args)]
pub struct AssignArgs {
    #[command(flatten)]
    pub admin: AdminDb,
    /// The patient to give access to.
    #[arg(long)]
    pub patient: String,
    /// A practitioner's (or other) account, by username.
    #[arg(long, conflicts_with = "organization", required_unless_present = "organization")]
    pub username: Option<String>,
    /// An Organization id: practitioners with a PractitionerRole there see the patient.
    #[arg(long)]
    pub organization: Option<String>,
}

pub async fn assign(args: AssignArgs) -> Result<(), RunError> {
    let server = auth_server(&args.admin).await?;
    let patient: PatientId = args.patient.parse().map_err(|e: auth::AuthError| RunError::Auth(e.to_string()))?;
    let added = match (&args.username, &args.organization) {
        (Some(username), _) => {
            let user = server
                .store()
                .user_by_username(username)
                .await
                .map_err(|e| RunError::Auth(e.to_string()))?
                .ok_or_else(|| RunError::Auth(format!("no account {username:?}")))?;
            server.store().add_user_patient(&user.user_id, &patient).await.map_err(|e| RunError::Auth(e.to_string()))?
        }
        (None, Some(org)) => {
            server.store().assign_to_organization(org, &patient).await.map_err(|e| RunError::Auth(e.to_string()))?
        }
        (None, None) => return Err(RunError::Auth("give --username or --organization".into())),
    };
    print_json(&serde_json::json!({ "patient": patient, "assigned": added, "already": !added }));
    Ok(())
}

#[derive(Subcommand)]
pub enum GrantCommand {
    /// List a person's grants (live, expired and revoked) as JSON.
    List(GrantList),
    /// Revoke a grant and everything issued from it (tokens stop at once).
    Revoke(GrantRevoke),
}

#[derive(Args)]
pub struct GrantList {
    #[command(flatten)]
    pub admin: AdminDb,
    #[arg(long)]
    pub username: String,
}

#[derive(Args)]
pub struct GrantRevoke {
    #[command(flatten)]
    pub admin: AdminDb,
    /// The grant id (see `portico grant list`).
    pub grant: String,
}

pub async fn grant(command: GrantCommand) -> Result<(), RunError> {
    match command {
        GrantCommand::List(args) => {
            let server = auth_server(&args.admin).await?;
            let err = |e: store::auth::AuthStoreError| RunError::Auth(e.to_string());
            let user = server
                .store()
                .user_by_username(&args.username)
                .await
                .map_err(err)?
                .ok_or_else(|| RunError::Auth(format!("no account {:?}", args.username)))?;
            let now = server.now();
            let grants = server.store().grants_for_user(&user.user_id).await.map_err(err)?;
            let list: Vec<serde_json::Value> = grants
                .iter()
                .map(|g| {
                    serde_json::json!({
                        "grant": g.grant_id, "client_id": g.client_id, "scope": g.scopes.to_string(),
                        "patient": g.patient_id, "withheld": g.withheld, "created_at": g.created_at,
                        "expires_at": g.expires_at, "revoked_at": g.revoked_at, "live": g.is_live(now),
                    })
                })
                .collect();
            print_json(&serde_json::Value::Array(list));
            Ok(())
        }
        GrantCommand::Revoke(args) => {
            let server = auth_server(&args.admin).await?;
            let id: auth::GrantId = args.grant.parse().map_err(|e: auth::AuthError| RunError::Auth(e.to_string()))?;
            let revoked = server.revoke_grant(&id, "admin:cli").await.map_err(|e| RunError::Auth(e.to_string()))?;
            print_json(&serde_json::json!({ "revoked": revoked }));
            Ok(())
        }
    }
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Record a grant for a person (or a backend client) and print tokens for it, without an
    /// OAuth flow: for operators testing an integration, and for benchmarks. The grant appears on
    /// the person's Connected apps page and can be revoked like any other.
    Issue(TokenIssue),
}

#[derive(Args)]
pub struct TokenIssue {
    #[command(flatten)]
    pub admin: AdminDb,
    /// The registered app the grant is for.
    #[arg(long)]
    pub client: String,
    /// The person (omit for a backend service token).
    #[arg(long)]
    pub username: Option<String>,
    /// Space-separated scopes (limited to what the client may have).
    #[arg(long)]
    pub scopes: String,
    /// The patient in context (needed for patient/ scopes).
    #[arg(long)]
    pub patient: Option<String>,
    /// Sensitive categories withheld (behavioral-health, substance-use, sexual-reproductive, hiv).
    #[arg(long = "withhold")]
    pub withheld: Vec<String>,
    /// Grant lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lifetime: i64,
}

pub async fn token(command: TokenCommand) -> Result<(), RunError> {
    let TokenCommand::Issue(args) = command;
    let server = auth_server(&args.admin).await?;
    let err = |e: store::auth::AuthStoreError| RunError::Auth(e.to_string());
    let client_id: auth::ClientId = args.client.parse().map_err(|e: auth::AuthError| RunError::Auth(e.to_string()))?;
    let client = server
        .store()
        .client(&client_id)
        .await
        .map_err(err)?
        .ok_or_else(|| RunError::Auth(format!("no client {:?}", args.client)))?;
    let (asked, dropped) = auth::ScopeSet::parse(&args.scopes);
    if !dropped.is_empty() {
        return Err(RunError::Auth(format!("unknown scopes: {}", dropped.join(" "))));
    }
    let scopes = client.allowed_scopes.narrow_to(&asked);
    let user_id = match &args.username {
        Some(u) => Some(
            server
                .store()
                .user_by_username(u)
                .await
                .map_err(err)?
                .ok_or_else(|| RunError::Auth(format!("no account {u:?}")))?
                .user_id,
        ),
        None => None,
    };
    if scopes.has_patient_scopes() && args.patient.is_none() {
        return Err(RunError::Auth("patient/ scopes need --patient".into()));
    }
    let withheld = args
        .withheld
        .iter()
        .map(|w| w.parse::<auth::SensitiveCategory>().map_err(|e| RunError::Auth(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    let patient_id = match &args.patient {
        Some(p) => Some(p.parse::<PatientId>().map_err(|e| RunError::Auth(e.to_string()))?),
        None => None,
    };
    let grant = server
        .store()
        .create_grant(store::auth::NewGrant {
            user_id,
            patient_id,
            withheld,
            lifetime_seconds: Some(args.lifetime),
            ..store::auth::NewGrant::new(client_id, scopes)
        })
        .await
        .map_err(err)?;
    let tokens = server.tokens_for(&grant).await.map_err(|e| RunError::Auth(e.to_string()))?;
    print_json(&serde_json::to_value(&tokens).unwrap_or_default());
    Ok(())
}
