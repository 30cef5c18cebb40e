//! The directory of portals: endpoints with their address, category (clinical or payer), FHIR
//! base and version, what discovery found, their health, and the app registration Link holds
//! there (client id; secret or private key sealed in the vault). Endpoints come from
//! `portico link endpoint add` and from imported User-access Brands bundles, plain FHIR
//! Endpoint/Organization bundles or CSV files; the directory is published back as a Brands bundle.

pub mod brands;
pub mod import;
pub mod search;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::db::{opt_int, opt_real, real_value, Col, RowExt, SqlValue};
use crate::discovery::Discovery;
use crate::error::{LinkError, Result};
use crate::health::Status;
use crate::ids::EndpointId;
use crate::Link;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Clinical,
    Payer,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Clinical => "clinical",
            Category::Payer => "payer",
        }
    }
}

impl std::str::FromStr for Category {
    type Err = LinkError;
    fn from_str(s: &str) -> Result<Category> {
        match s.trim().to_ascii_lowercase().as_str() {
            "clinical" | "provider" => Ok(Category::Clinical),
            "payer" | "plan" | "health-plan" => Ok(Category::Payer),
            other => Err(LinkError::bad_request(format!("category '{other}' is not clinical or payer"))),
        }
    }
}

/// How Link authenticates to a portal's token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// A public client: `client_id` only.
    None,
    ClientSecretBasic,
    PrivateKeyJwt,
}

/// An endpoint to add or update. `None` leaves a stored value as it is on update.
#[derive(Debug, Clone, Default)]
pub struct EndpointInput {
    pub name: String,
    pub category: Option<Category>,
    pub fhir_base: String,
    pub organization: Option<String>,
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub vendor: Option<String>,
    pub fhir_version: Option<String>,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
    /// PEM of an RSA or EC private key for `private_key_jwt`.
    pub private_key_pem: Option<String>,
    pub key_id: Option<String>,
    pub scopes: Option<String>,
    /// Brand details from an import (logo, portal URL, identifiers, other names).
    pub brand: Option<Value>,
    /// Where the entry came from (`cli`, `brands:FILE`, `csv:FILE`).
    pub source: String,
}

/// A stored endpoint (no secrets).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub id: EndpointId,
    pub name: String,
    pub organization: Option<String>,
    pub street: Option<String>,
    pub city: Option<String>,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    pub vendor: Option<String>,
    pub category: Category,
    pub fhir_base: String,
    pub fhir_version: Option<String>,
    pub status: Status,
    pub client_id: Option<String>,
    pub client_auth: ClientAuth,
    pub scopes: Option<String>,
    pub discovery: Option<Discovery>,
    pub discovered_at: Option<i64>,
    pub discovery_error: Option<String>,
    pub brand: Option<Value>,
    pub source: String,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Endpoint {
    /// The scopes Link asks this portal for.
    pub fn scopes_or_default(&self) -> &str {
        self.scopes.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or(crate::config::DEFAULT_SCOPES)
    }
}

/// A FHIR base URL as stored: absolute http(s), no query or fragment, no trailing slash.
pub fn normalize_base(url: &str) -> Result<String> {
    let trimmed = url.trim().trim_end_matches('/');
    crate::apps::check_url(trimmed, "FHIR base")?;
    if trimmed.contains('?') {
        return Err(LinkError::bad_request(format!("FHIR base '{trimmed}' may not carry a query")));
    }
    Ok(trimmed.to_owned())
}

fn check_coordinates(lat: Option<f64>, lon: Option<f64>) -> Result<()> {
    if lat.is_some_and(|v| !(-90.0..=90.0).contains(&v)) || lon.is_some_and(|v| !(-180.0..=180.0).contains(&v)) {
        return Err(LinkError::bad_request("latitude must be within ±90 and longitude within ±180"));
    }
    Ok(())
}

fn clean(value: &Option<String>) -> Option<String> {
    value.as_ref().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

pub(crate) fn secret_context(id: &EndpointId) -> String {
    format!("endpoint:{id}:client-secret")
}

pub(crate) fn key_context(id: &EndpointId) -> String {
    format!("endpoint:{id}:private-key")
}

const COLUMNS: &str = "endpoint_id, name, organization, street, city, state, zip, latitude, longitude, vendor, \
     category, fhir_base, fhir_version, status, client_id, CASE WHEN client_secret IS NULL THEN CAST(0 AS BIGINT) ELSE CAST(1 AS BIGINT) END, \
     CASE WHEN private_key IS NULL THEN CAST(0 AS BIGINT) ELSE CAST(1 AS BIGINT) END, \
     scopes, discovery, discovered_at, discovery_error, brand, source, created_at, updated_at";

const COLUMN_KINDS: &[Col] = &[
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Real,
    Col::Real,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
];

fn endpoint_of(mut row: Vec<SqlValue>) -> Option<Endpoint> {
    let id = row.text(0)?.parse().ok()?;
    let client_auth = if row.int(16) != 0 {
        ClientAuth::PrivateKeyJwt
    } else if row.int(15) != 0 {
        ClientAuth::ClientSecretBasic
    } else {
        ClientAuth::None
    };
    Some(Endpoint {
        id,
        name: row.take_text(1).unwrap_or_default(),
        organization: row.take_text(2),
        street: row.take_text(3),
        city: row.take_text(4),
        state: row.take_text(5),
        zip: row.take_text(6),
        latitude: opt_real(&row, 7),
        longitude: opt_real(&row, 8),
        vendor: row.take_text(9),
        category: row.text(10).and_then(|c| c.parse().ok()).unwrap_or(Category::Clinical),
        fhir_base: row.take_text(11).unwrap_or_default(),
        fhir_version: row.take_text(12),
        status: Status::parse(row.text(13).unwrap_or_default()),
        client_id: row.take_text(14),
        client_auth,
        scopes: row.take_text(17),
        discovery: row.text(18).and_then(|d| serde_json::from_str(d).ok()),
        discovered_at: opt_int(&row, 19),
        discovery_error: row.take_text(20),
        brand: row.text(21).and_then(|b| serde_json::from_str(b).ok()),
        source: row.take_text(22).unwrap_or_default(),
        created_at: row.int(23),
        updated_at: row.int(24),
    })
}

impl Link {
    /// Add an endpoint, or update the one with the same FHIR base (fields not given are kept).
    /// Returns its id and whether it was new.
    pub async fn upsert_endpoint(&self, input: &EndpointInput) -> Result<(EndpointId, bool)> {
        let fhir_base = normalize_base(&input.fhir_base)?;
        let name = input.name.trim();
        if name.is_empty() || name.len() > 300 {
            return Err(LinkError::bad_request("an endpoint needs a name (at most 300 characters)"));
        }
        check_coordinates(input.latitude, input.longitude)?;
        if input.client_secret.is_some() && input.private_key_pem.is_some() {
            return Err(LinkError::bad_request("give a client secret or a private key, not both"));
        }
        if let Some(pem) = &input.private_key_pem {
            crate::broker::client_assertion_key(pem, None)?;
        }
        let existing = self.endpoint_by_base(&fhir_base).await?;
        let now = self.now_ms();
        let db = self.db();
        let mut tx = db.begin().await?;
        let (id, created) = match &existing {
            Some(e) => (e.id.clone(), false),
            None => (EndpointId::generate(), true),
        };
        let brand = input.brand.as_ref().map(Value::to_string);
        if created {
            let category = input.category.unwrap_or(Category::Clinical);
            let mut sql = db.sql();
            sql.push(
                "INSERT INTO link_endpoints (endpoint_id, name, organization, street, city, state, zip, latitude, \
                 longitude, vendor, category, fhir_base, fhir_version, status, scopes, brand, source, created_at, \
                 updated_at) VALUES (",
            );
            sql.bind(id.as_str()).push(", ").bind(name).push(", ");
            for v in [&input.organization, &input.street, &input.city, &input.state, &input.zip] {
                sql.bind(clean(v)).push(", ");
            }
            sql.bind(real_value(input.latitude)).push(", ").bind(real_value(input.longitude)).push(", ");
            sql.bind(clean(&input.vendor)).push(", ").bind(category.as_str()).push(", ");
            sql.bind(fhir_base.as_str()).push(", ").bind(clean(&input.fhir_version)).push(", 'active', ");
            sql.bind(clean(&input.scopes)).push(", ").bind(brand).push(", ").bind(input.source.as_str());
            sql.push(", ").bind(now).push(", ").bind(now).push(")");
            tx.conn().execute(&sql).await?;
        } else {
            let mut sql = db.sql();
            sql.push("UPDATE link_endpoints SET name = ").bind(name);
            let fields: [(&str, &Option<String>); 7] = [
                ("organization", &input.organization),
                ("street", &input.street),
                ("city", &input.city),
                ("state", &input.state),
                ("zip", &input.zip),
                ("vendor", &input.vendor),
                ("scopes", &input.scopes),
            ];
            for (column, value) in fields {
                if let Some(v) = clean(value) {
                    sql.push(", ").push(column).push(" = ").bind(v);
                }
            }
            if let Some(v) = clean(&input.fhir_version) {
                sql.push(", fhir_version = ").bind(v);
            }
            if let Some(lat) = input.latitude {
                sql.push(", latitude = ").bind(lat);
            }
            if let Some(lon) = input.longitude {
                sql.push(", longitude = ").bind(lon);
            }
            if let Some(c) = input.category {
                sql.push(", category = ").bind(c.as_str());
            }
            if let Some(b) = brand {
                sql.push(", brand = ").bind(b);
            }
            sql.push(", updated_at = ").bind(now).push(" WHERE endpoint_id = ").bind(id.as_str());
            tx.conn().execute(&sql).await?;
        }
        if let Some(client_id) = clean(&input.client_id) {
            let secret = match &input.client_secret {
                Some(s) => Some(self.vault().seal_str(&secret_context(&id), s)?),
                None => None,
            };
            let key = match &input.private_key_pem {
                Some(pem) => {
                    let stored = serde_json::json!({"pem": pem, "kid": input.key_id}).to_string();
                    Some(self.vault().seal_str(&key_context(&id), &stored)?)
                }
                None => None,
            };
            let mut sql = db.sql();
            sql.push("UPDATE link_endpoints SET client_id = ")
                .bind(client_id)
                .push(", client_secret = ")
                .bind(secret)
                .push(", private_key = ")
                .bind(key)
                .push(" WHERE endpoint_id = ")
                .bind(id.as_str());
            tx.conn().execute(&sql).await?;
        } else if input.client_secret.is_some() || input.private_key_pem.is_some() {
            return Err(LinkError::bad_request("a client secret or private key needs --client-id"));
        }
        tx.commit().await?;
        Ok((id, created))
    }

    pub async fn endpoint(&self, id: &EndpointId) -> Result<Option<Endpoint>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT ").push(COLUMNS).push(" FROM link_endpoints WHERE endpoint_id = ").bind(id.as_str());
        Ok(db.rows(&sql, COLUMN_KINDS).await?.into_iter().next().and_then(endpoint_of))
    }

    /// The endpoint or a 404.
    pub async fn require_endpoint(&self, id: &EndpointId) -> Result<Endpoint> {
        self.endpoint(id).await?.ok_or_else(|| LinkError::not_found(format!("endpoint {id} is not in the directory")))
    }

    pub async fn endpoint_by_base(&self, fhir_base: &str) -> Result<Option<Endpoint>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT ").push(COLUMNS).push(" FROM link_endpoints WHERE fhir_base = ").bind(fhir_base);
        Ok(db.rows(&sql, COLUMN_KINDS).await?.into_iter().next().and_then(endpoint_of))
    }

    /// Every endpoint, optionally of one category, by name.
    pub async fn endpoints(&self, category: Option<Category>) -> Result<Vec<Endpoint>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT ").push(COLUMNS).push(" FROM link_endpoints");
        if let Some(c) = category {
            sql.push(" WHERE category = ").bind(c.as_str());
        }
        sql.push(" ORDER BY name, endpoint_id");
        Ok(db.rows(&sql, COLUMN_KINDS).await?.into_iter().filter_map(endpoint_of).collect())
    }

    /// The client secret, when the endpoint uses one.
    pub(crate) async fn endpoint_secret(&self, id: &EndpointId) -> Result<Option<String>> {
        self.endpoint_sealed(id, "client_secret", &secret_context(id)).await
    }

    /// The private key (PEM) and key id, when the endpoint uses `private_key_jwt`.
    pub(crate) async fn endpoint_key(&self, id: &EndpointId) -> Result<Option<(String, Option<String>)>> {
        let Some(stored) = self.endpoint_sealed(id, "private_key", &key_context(id)).await? else { return Ok(None) };
        let value: Value = serde_json::from_str(&stored).map_err(|_| LinkError::Vault("damaged private key".into()))?;
        let pem = value.get("pem").and_then(Value::as_str).unwrap_or_default().to_owned();
        let kid = value.get("kid").and_then(Value::as_str).map(String::from);
        Ok(Some((pem, kid)))
    }

    async fn endpoint_sealed(&self, id: &EndpointId, column: &str, context: &str) -> Result<Option<String>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT ").push(column).push(" FROM link_endpoints WHERE endpoint_id = ").bind(id.as_str());
        let rows = db.rows(&sql, &[Col::Text]).await?;
        match rows.first().and_then(|r| r.text(0)) {
            Some(sealed) => Ok(Some(self.vault().open_string(context, sealed)?)),
            None => Ok(None),
        }
    }
}
