//! The documented demo accounts and the sample app's registration (`portico demo`). Idempotent:
//! running the demo again keeps existing accounts and points the app at the current address.

use auth::password::hash_secret;
use auth::{ClientId, PatientId};
use demo::DemoAccounts;
use oauth::register::ClientSpec;
use oauth::AuthServer;
use store::auth::{ClientType, NewUser, OwnerType, RegistrationSource, Role};

use crate::run::RunError;

/// The password of every demo account. Demo data only: never use this on real records.
pub const PASSWORD: &str = "portico-demo";

/// The sample app's client id.
pub const DEMO_APP: &str = "portico-demo-app";

/// An account to create: username, role, FHIR user, patients, and what to print about it.
struct Wanted(&'static str, Role, Option<String>, Vec<PatientId>, String);

pub struct Login {
    pub username: &'static str,
    pub about: String,
}

fn err(e: impl std::fmt::Display) -> RunError {
    RunError::Auth(e.to_string())
}

fn patient(id: &str) -> Result<PatientId, RunError> {
    id.parse().map_err(err)
}

/// Create the demo accounts (if missing) and register the sample app for `origin`.
pub async fn ensure(auth: &AuthServer, accounts: &DemoAccounts, origin: &str) -> Result<Vec<Login>, RunError> {
    let mut logins = Vec::new();
    let mut wanted: Vec<Wanted> = vec![
        Wanted(
            "member",
            Role::Patient,
            Some(format!("Patient/{}", accounts.member_patient_id)),
            vec![patient(&accounts.member_patient_id)?],
            format!("a health-plan member (Patient/{}), with behavioral-health records", accounts.member_patient_id),
        ),
        Wanted(
            "parent",
            Role::Patient,
            Some(format!("Patient/{}", accounts.proxy_parent_patient_id)),
            std::iter::once(&accounts.proxy_parent_patient_id)
                .chain(&accounts.proxy_patient_ids)
                .map(|p| patient(p))
                .collect::<Result<_, _>>()?,
            format!("a parent who also acts for two children ({})", accounts.proxy_patient_ids.join(", ")),
        ),
        Wanted("admin", Role::Admin, None, Vec::new(), "an administrator (sees every record; audit log)".into()),
    ];
    for (i, (name, letter)) in [("doctor.a", "A"), ("doctor.b", "B")].into_iter().enumerate() {
        if let Some(p) = accounts.practitioner_ids.get(i) {
            wanted.push(Wanted(
                name,
                Role::Practitioner,
                Some(format!("Practitioner/{p}")),
                Vec::new(),
                format!("practitioner {letter} (Practitioner/{p}), sees the patients of their care teams"),
            ));
        }
    }
    let hash = tokio::task::spawn_blocking(|| hash_secret(PASSWORD)).await.map_err(err)?.map_err(err)?;
    for Wanted(username, role, fhir_user, patients, about) in wanted {
        if auth.store().user_by_username(username).await.map_err(err)?.is_none() {
            auth.store()
                .create_user(NewUser {
                    username: username.into(),
                    password_hash: hash.clone(),
                    role,
                    fhir_user,
                    patients,
                })
                .await
                .map_err(err)?;
        }
        logins.push(Login { username, about });
    }

    let redirect = format!("{origin}/demo-app/");
    let client_id: ClientId = DEMO_APP.parse().map_err(err)?;
    if auth.store().client(&client_id).await.map_err(err)?.is_some() {
        auth.store().set_client_redirect_uris(&client_id, std::slice::from_ref(&redirect)).await.map_err(err)?;
    } else {
        auth.register_client(ClientSpec {
            client_id: Some(DEMO_APP.into()),
            name: "My Health Summary (Portico sample app)".into(),
            owner_type: OwnerType::HealthPlan,
            client_type: ClientType::Public,
            redirect_uris: vec![redirect],
            scopes: "openid fhirUser profile launch launch/patient offline_access online_access patient/*.rs user/*.rs"
                .into(),
            jwks: None,
            jwks_uri: None,
            logo_uri: None,
            policy_uri: None,
            tos_uri: None,
            ehr_launcher: false,
            source: RegistrationSource::Cli,
        })
        .await
        .map_err(err)?;
    }
    Ok(logins)
}
