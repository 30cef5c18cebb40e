//! Registered OAuth clients (apps).

use std::fmt;

use ::auth::{ClientId, ScopeSet};
use serde_json::Value;

use super::{
    check_argon2id, conflict_on_duplicate, opt_int, parse_json, parse_stored, required_text, take_text, to_json,
    AuthStoreError, Result,
};
use crate::db::{Col, Sql, SqlValue};
use crate::Store;

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> std::result::Result<Self, String> {
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| format!("unknown {} {s:?}", stringify!($name)))
            }
        }
    };
}
pub(super) use text_enum;

text_enum!(
    /// Who operates the app (shown on the consent screen; CMS distinguishes these).
    OwnerType {
        HealthPlan => "health-plan",
        IndependentDeveloper => "independent-developer",
        CoveredEntity => "covered-entity",
    }
);

text_enum!(
    /// How the client authenticates at the token endpoint: not at all (PKCE only), with a shared
    /// secret (`client_secret_basic`/`_post`), or with a signed JWT (`private_key_jwt`).
    ClientType {
        Public => "public",
        ConfidentialSymmetric => "confidential-symmetric",
        ConfidentialAsymmetric => "confidential-asymmetric",
    }
);

text_enum!(
    /// How the client was registered.
    RegistrationSource {
        Cli => "cli",
        Dynamic => "dynamic",
    }
);

/// A client to register. `secret_hash` is required exactly for confidential-symmetric clients
/// (argon2id PHC string); confidential-asymmetric clients need `jwks` or `jwks_uri`.
#[derive(Clone, PartialEq)]
pub struct NewClient {
    pub client_id: ClientId,
    pub name: String,
    pub owner_type: OwnerType,
    pub client_type: ClientType,
    pub secret_hash: Option<String>,
    /// JWK Set (`{"keys": [...]}`).
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    /// The most this client may ever be granted.
    pub allowed_scopes: ScopeSet,
    pub logo_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub tos_uri: Option<String>,
    pub registration_source: RegistrationSource,
    /// May create EHR launch contexts through the API (it is the EHR side of an EHR launch).
    pub ehr_launcher: bool,
}

/// A registered client.
#[derive(Clone, PartialEq)]
pub struct Client {
    pub client_id: ClientId,
    pub name: String,
    pub owner_type: OwnerType,
    pub client_type: ClientType,
    pub secret_hash: Option<String>,
    pub jwks: Option<Value>,
    pub jwks_uri: Option<String>,
    pub redirect_uris: Vec<String>,
    pub allowed_scopes: ScopeSet,
    pub logo_uri: Option<String>,
    pub policy_uri: Option<String>,
    pub tos_uri: Option<String>,
    /// Epoch seconds.
    pub created_at: i64,
    pub registration_source: RegistrationSource,
    pub ehr_launcher: bool,
}

impl Client {
    pub fn is_confidential(&self) -> bool {
        self.client_type != ClientType::Public
    }

    /// Is `uri` one of the registered redirect URIs (exact string comparison, as OAuth 2.1 and
    /// SMART require)?
    pub fn has_redirect_uri(&self, uri: &str) -> bool {
        self.redirect_uris.iter().any(|r| r == uri)
    }
}

// The secret hash stays out of logs.
fn redacted(v: &Option<String>) -> &'static str {
    if v.is_some() {
        "Some(<redacted>)"
    } else {
        "None"
    }
}

impl fmt::Debug for NewClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewClient")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("owner_type", &self.owner_type)
            .field("client_type", &self.client_type)
            .field("secret_hash", &redacted(&self.secret_hash))
            .field("jwks", &self.jwks)
            .field("jwks_uri", &self.jwks_uri)
            .field("redirect_uris", &self.redirect_uris)
            .field("allowed_scopes", &self.allowed_scopes.to_string())
            .field("registration_source", &self.registration_source)
            .field("ehr_launcher", &self.ehr_launcher)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &self.client_id)
            .field("name", &self.name)
            .field("owner_type", &self.owner_type)
            .field("client_type", &self.client_type)
            .field("secret_hash", &redacted(&self.secret_hash))
            .field("jwks", &self.jwks)
            .field("jwks_uri", &self.jwks_uri)
            .field("redirect_uris", &self.redirect_uris)
            .field("allowed_scopes", &self.allowed_scopes.to_string())
            .field("created_at", &self.created_at)
            .field("registration_source", &self.registration_source)
            .field("ehr_launcher", &self.ehr_launcher)
            .finish_non_exhaustive()
    }
}

const CLIENT_COLS: &str = "client_id, name, owner_type, client_type, secret_hash, jwks, jwks_uri, redirect_uris, \
     allowed_scopes, logo_uri, policy_uri, tos_uri, created_at, registration_source, ehr_launcher";
const CLIENT_KINDS: [Col; 15] = [
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Int,
];

fn decode_client(mut row: Vec<SqlValue>) -> Result<Client> {
    let client_id = required_text(&mut row, 0, "client_id")?;
    let jwks = take_text(&mut row, 5).map(|t| parse_json::<Value>(&t, "client jwks")).transpose()?;
    let redirect_uris = parse_json(&required_text(&mut row, 7, "redirect_uris")?, "client redirect_uris")?;
    Ok(Client {
        client_id: parse_stored(&client_id, "client_id")?,
        name: required_text(&mut row, 1, "client name")?,
        owner_type: parse_stored(&required_text(&mut row, 2, "owner_type")?, "owner_type")?,
        client_type: parse_stored(&required_text(&mut row, 3, "client_type")?, "client_type")?,
        secret_hash: take_text(&mut row, 4),
        jwks,
        jwks_uri: take_text(&mut row, 6),
        redirect_uris,
        allowed_scopes: ScopeSet::parse(&required_text(&mut row, 8, "allowed_scopes")?).0,
        logo_uri: take_text(&mut row, 9),
        policy_uri: take_text(&mut row, 10),
        tos_uri: take_text(&mut row, 11),
        created_at: opt_int(&row, 12).unwrap_or(0),
        registration_source: parse_stored(&required_text(&mut row, 13, "registration_source")?, "registration_source")?,
        ehr_launcher: opt_int(&row, 14).unwrap_or(0) != 0,
    })
}

fn check_new_client(c: &NewClient) -> Result<()> {
    if c.name.trim().is_empty() {
        return Err(AuthStoreError::Invalid("client name must not be empty".into()));
    }
    match (c.client_type, &c.secret_hash) {
        (ClientType::ConfidentialSymmetric, Some(hash)) => check_argon2id(hash, "client secret_hash")?,
        (ClientType::ConfidentialSymmetric, None) => {
            return Err(AuthStoreError::Invalid("a confidential-symmetric client needs a secret_hash".into()))
        }
        (other, Some(_)) => {
            return Err(AuthStoreError::Invalid(format!("a {other} client must not have a secret_hash")));
        }
        (_, None) => {}
    }
    if c.client_type == ClientType::ConfidentialAsymmetric && c.jwks.is_none() && c.jwks_uri.is_none() {
        return Err(AuthStoreError::Invalid("a confidential-asymmetric client needs jwks or jwks_uri".into()));
    }
    if let Some(jwks) = &c.jwks {
        if !jwks.get("keys").is_some_and(Value::is_array) {
            return Err(AuthStoreError::Invalid("jwks must be a JWK Set: an object with a \"keys\" array".into()));
        }
    }
    if c.redirect_uris.iter().any(|u| u.is_empty() || u.contains('#')) {
        return Err(AuthStoreError::Invalid("redirect URIs must be non-empty and have no fragment".into()));
    }
    Ok(())
}

impl Store {
    /// Register a client. A client id that is taken is a `Conflict`.
    pub async fn create_client(&self, new: NewClient) -> Result<Client> {
        check_new_client(&new)?;
        let created_at = self.now_secs();
        let jwks = new.jwks.as_ref().map(to_json).transpose()?;
        let redirect_uris = to_json(&new.redirect_uris)?;
        let mut sql = Sql::new(self.dialect());
        sql.push("INSERT INTO oauth_clients (")
            .push(CLIENT_COLS)
            .push(") VALUES (")
            .bind(new.client_id.as_str())
            .push(", ")
            .bind(new.name.as_str())
            .push(", ")
            .bind(new.owner_type.as_str())
            .push(", ")
            .bind(new.client_type.as_str())
            .push(", ")
            .bind(new.secret_hash.clone())
            .push(", ")
            .bind(jwks)
            .push(", ")
            .bind(new.jwks_uri.clone())
            .push(", ")
            .bind(redirect_uris)
            .push(", ")
            .bind(new.allowed_scopes.to_string())
            .push(", ")
            .bind(new.logo_uri.clone())
            .push(", ")
            .bind(new.policy_uri.clone())
            .push(", ")
            .bind(new.tos_uri.clone())
            .push(", ")
            .bind(created_at)
            .push(", ")
            .bind(new.registration_source.as_str())
            .push(", ")
            .bind(i64::from(new.ehr_launcher))
            .push(")");
        let mut tx = self.pool.begin_write().await?;
        tx.conn()
            .execute(&sql)
            .await
            .map_err(|e| conflict_on_duplicate(e, || format!("client_id {} is already registered", new.client_id)))?;
        tx.commit().await?;
        Ok(Client {
            client_id: new.client_id,
            name: new.name,
            owner_type: new.owner_type,
            client_type: new.client_type,
            secret_hash: new.secret_hash,
            jwks: new.jwks,
            jwks_uri: new.jwks_uri,
            redirect_uris: new.redirect_uris,
            allowed_scopes: new.allowed_scopes,
            logo_uri: new.logo_uri,
            policy_uri: new.policy_uri,
            tos_uri: new.tos_uri,
            created_at,
            registration_source: new.registration_source,
            ehr_launcher: new.ehr_launcher,
        })
    }

    pub async fn client(&self, client_id: &ClientId) -> Result<Option<Client>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(CLIENT_COLS).push(" FROM oauth_clients WHERE client_id = ").bind(client_id.as_str());
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &CLIENT_KINDS).await?;
        rows.into_iter().next().map(decode_client).transpose()
    }

    /// Every client, oldest registration first.
    pub async fn list_clients(&self) -> Result<Vec<Client>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(CLIENT_COLS).push(" FROM oauth_clients ORDER BY created_at, client_id");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &CLIENT_KINDS).await?;
        rows.into_iter().map(decode_client).collect()
    }

    /// Replace a client's redirect URIs (e.g. the demo app when the demo moves to another port).
    /// Returns false for an unknown client.
    pub async fn set_client_redirect_uris(&self, client_id: &ClientId, uris: &[String]) -> Result<bool> {
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE oauth_clients SET redirect_uris = ")
            .bind(to_json(&uris)?)
            .push(" WHERE client_id = ")
            .bind(client_id.as_str());
        let mut tx = self.pool.begin_write().await?;
        let n = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(n > 0)
    }
}
