//! Connections: one person's authorization at one portal, for one app. The portal's tokens are
//! sealed in the vault; apps see the connection's status, patient, scope and expiry, never the
//! tokens. A connection is `active`, `reauthorization_required` (the portal no longer honours
//! it: the person must sign in there again), `revoked` (by the app) or `error`.

use serde_json::json;

use crate::broker::{tokens_context, ConnectionView, PortalTokens, TokenAnswer};
use crate::db::{int_value, opt_int, Col, RowExt, SqlValue};
use crate::directory::Endpoint;
use crate::error::{LinkError, Result};
use crate::health::EventKind;
use crate::ids::{AppId, ConnectionId, EndpointId};
use crate::webhooks::{self, EventType};
use crate::Link;

pub const ACTIVE: &str = "active";
pub const REAUTHORIZATION_REQUIRED: &str = "reauthorization_required";
pub const REVOKED: &str = "revoked";

/// A connection as stored.
#[derive(Debug, Clone)]
pub struct ConnectionRecord {
    pub id: ConnectionId,
    pub app: AppId,
    pub endpoint: EndpointId,
    pub person: Option<String>,
    pub patient_id: Option<String>,
    pub fhir_user: Option<String>,
    pub scope: String,
    pub status: String,
    pub status_detail: Option<String>,
    pub sealed_tokens: Option<String>,
    pub access_expires_at: Option<i64>,
    /// When the current access token was obtained.
    pub access_issued_at: Option<i64>,
    pub refreshable: bool,
    pub generation: i64,
    pub created_at: i64,
    pub last_fetch_at: Option<i64>,
}

const COLUMNS: &str =
    "connection_id, app_id, endpoint_id, person, patient_id, fhir_user, scope, status, status_detail, \
     tokens, access_expires_at, refreshable, token_generation, created_at, last_fetch_at, access_issued_at";
const KINDS: &[Col] = &[
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
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
    Col::Int,
];

fn record_of(mut row: Vec<SqlValue>) -> Option<ConnectionRecord> {
    Some(ConnectionRecord {
        id: row.text(0)?.parse().ok()?,
        app: row.text(1)?.parse().ok()?,
        endpoint: row.text(2)?.parse().ok()?,
        person: row.take_text(3),
        patient_id: row.take_text(4),
        fhir_user: row.take_text(5),
        scope: row.take_text(6).unwrap_or_default(),
        status: row.take_text(7).unwrap_or_default(),
        status_detail: row.take_text(8),
        sealed_tokens: row.take_text(9),
        access_expires_at: opt_int(&row, 10),
        refreshable: row.int(11) != 0,
        generation: row.int(12),
        created_at: row.int(13),
        last_fetch_at: opt_int(&row, 14),
        access_issued_at: opt_int(&row, 15),
    })
}

impl Link {
    /// Store the tokens of a finished login: a new connection, or the same person's existing one
    /// at this portal (for this patient) made active again.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn store_connection(
        &self,
        app: &AppId,
        endpoint: &Endpoint,
        person: Option<&str>,
        patient: &str,
        fhir_user: Option<&str>,
        scope_asked: &str,
        answer: &TokenAnswer,
    ) -> Result<ConnectionId> {
        let now = self.now_ms();
        let db = self.db();
        let existing = match person {
            Some(p) => {
                let mut sql = db.sql();
                sql.push("SELECT connection_id FROM link_connections WHERE app_id = ")
                    .bind(app.as_str())
                    .push(" AND endpoint_id = ")
                    .bind(endpoint.id.as_str())
                    .push(" AND person = ")
                    .bind(p)
                    .push(" AND patient_id = ")
                    .bind(patient)
                    .push(" ORDER BY created_at DESC LIMIT 1");
                db.rows(&sql, &[Col::Text])
                    .await?
                    .first()
                    .and_then(|r| r.text(0))
                    .and_then(|c| c.parse::<ConnectionId>().ok())
            }
            None => None,
        };
        let id = existing.clone().unwrap_or_else(ConnectionId::generate);
        self.forget_token(&id);
        let tokens =
            PortalTokens { access_token: answer.access_token.clone(), refresh_token: answer.refresh_token.clone() };
        let sealed =
            self.vault().seal_str(&tokens_context(&id), &serde_json::to_string(&tokens).unwrap_or_default())?;
        let expires = answer.expires_in.map(|s| now + s * 1000);
        let scope = answer.scope.clone().unwrap_or_else(|| scope_asked.to_owned());
        let refreshable = i64::from(answer.refresh_token.is_some());
        let mut sql = db.sql();
        if existing.is_some() {
            sql.push("UPDATE link_connections SET status = 'active', status_detail = NULL, tokens = ")
                .bind(sealed)
                .push(", access_expires_at = ")
                .bind(int_value(expires))
                .push(", access_issued_at = ")
                .bind(now)
                .push(", refreshable = ")
                .bind(refreshable)
                .push(", scope = ")
                .bind(scope)
                .push(", fhir_user = ")
                .bind(fhir_user)
                .push(", token_generation = token_generation + 1, refresh_lease_until = NULL, updated_at = ")
                .bind(now)
                .push(" WHERE connection_id = ")
                .bind(id.as_str());
        } else {
            sql.push(
                "INSERT INTO link_connections (connection_id, app_id, endpoint_id, person, patient_id, fhir_user, scope, \
                 status, tokens, access_expires_at, access_issued_at, refreshable, created_at, updated_at) VALUES (",
            )
            .bind(id.as_str())
            .push(", ")
            .bind(app.as_str())
            .push(", ")
            .bind(endpoint.id.as_str())
            .push(", ")
            .bind(person)
            .push(", ")
            .bind(patient)
            .push(", ")
            .bind(fhir_user)
            .push(", ")
            .bind(scope)
            .push(", 'active', ")
            .bind(sealed)
            .push(", ")
            .bind(int_value(expires))
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(refreshable)
            .push(", ")
            .bind(now)
            .push(", ")
            .bind(now)
            .push(")");
        }
        db.execute(&sql).await?;
        Ok(id)
    }

    pub(crate) async fn connection_record(&self, id: &ConnectionId) -> Result<Option<ConnectionRecord>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT ").push(COLUMNS).push(" FROM link_connections WHERE connection_id = ").bind(id.as_str());
        Ok(db.rows(&sql, KINDS).await?.into_iter().next().and_then(record_of))
    }

    /// The app's own connection, or a 404 (another app's connection is as unknown as a missing one).
    pub(crate) async fn app_connection(&self, app: &AppId, id: &ConnectionId) -> Result<ConnectionRecord> {
        match self.connection_record(id).await? {
            Some(c) if &c.app == app => Ok(c),
            _ => Err(LinkError::not_found(format!("connection {id} is not known"))),
        }
    }

    pub async fn connection_view(&self, app: &AppId, id: &ConnectionId) -> Result<ConnectionView> {
        let record = self.app_connection(app, id).await?;
        let name = self.endpoint(&record.endpoint).await?.map(|e| e.name);
        Ok(view_of(record, name))
    }

    /// The app's connections, optionally one person's, newest first.
    pub async fn connections(&self, app: &AppId, person: Option<&str>) -> Result<Vec<ConnectionView>> {
        let records = self.connection_records(app, person).await?;
        let names: std::collections::HashMap<EndpointId, String> =
            self.endpoints(None).await?.into_iter().map(|e| (e.id, e.name)).collect();
        Ok(records
            .into_iter()
            .map(|r| {
                let name = names.get(&r.endpoint).cloned();
                view_of(r, name)
            })
            .collect())
    }

    pub(crate) async fn connection_records(&self, app: &AppId, person: Option<&str>) -> Result<Vec<ConnectionRecord>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT ").push(COLUMNS).push(" FROM link_connections WHERE app_id = ").bind(app.as_str());
        if let Some(p) = person {
            sql.push(" AND person = ").bind(p);
        }
        sql.push(" ORDER BY created_at DESC, connection_id");
        Ok(db.rows(&sql, KINDS).await?.into_iter().filter_map(record_of).collect())
    }

    /// The portal tokens of a connection (decrypted; never leaves Link).
    pub(crate) fn open_tokens(&self, record: &ConnectionRecord) -> Result<Option<PortalTokens>> {
        let Some(sealed) = &record.sealed_tokens else { return Ok(None) };
        let text = self.vault().open_string(&tokens_context(&record.id), sealed)?;
        serde_json::from_str(&text).map(Some).map_err(|_| LinkError::Vault("damaged connection tokens".into()))
    }

    /// `DELETE /link/v1/connections/{id}`: revoke at the portal when it offers revocation, then
    /// forget the tokens. The app hears `connection.revoked`.
    pub async fn revoke_connection(&self, app: &AppId, id: &ConnectionId) -> Result<ConnectionView> {
        let record = self.app_connection(app, id).await?;
        self.forget_token(id);
        if let (Some(tokens), Some(endpoint)) = (self.open_tokens(&record)?, self.endpoint(&record.endpoint).await?) {
            // The refresh token first: revoking it ends the grant at portals like Portico.
            let mut candidates = Vec::new();
            if let Some(rt) = &tokens.refresh_token {
                candidates.push((rt.clone(), "refresh_token"));
            }
            candidates.push((tokens.access_token.clone(), "access_token"));
            let offers_revocation = endpoint.discovery.as_ref().is_some_and(|d| d.revocation_endpoint.is_some());
            if offers_revocation {
                for (token, hint) in candidates {
                    let form = vec![("token".to_owned(), token), ("token_type_hint".to_owned(), hint.to_owned())];
                    if let Err(e) = self.token_request(&endpoint, form, EventKind::Revoke).await? {
                        tracing::warn!(connection = %id, error = %e, "revocation at the portal failed; the tokens are forgotten anyway");
                    }
                }
            }
        }
        let now = self.now_ms();
        let db = self.db();
        let mut tx = db.begin().await?;
        let mut sql = db.sql();
        sql.push(
            "UPDATE link_connections SET status = 'revoked', status_detail = 'revoked by the app', tokens = NULL, \
                  refreshable = 0, token_generation = token_generation + 1, updated_at = ",
        )
        .bind(now)
        .push(" WHERE connection_id = ")
        .bind(id.as_str());
        tx.conn().execute(&sql).await?;
        let data = json!({"connectionId": id, "endpointId": record.endpoint, "person": record.person});
        webhooks::enqueue(db, &mut tx, app, EventType::ConnectionRevoked, data, now).await?;
        tx.commit().await?;
        self.wake_webhooks();
        self.connection_view(app, id).await
    }

    /// Mark a connection as needing the person's sign-in again, and tell the app (once).
    pub(crate) async fn require_reauthorization(&self, record: &ConnectionRecord, why: &str) -> Result<()> {
        self.forget_token(&record.id);
        let now = self.now_ms();
        let db = self.db();
        let mut tx = db.begin().await?;
        let mut sql = db.sql();
        sql.push("UPDATE link_connections SET status = 'reauthorization_required', status_detail = ")
            .bind(why)
            .push(", refresh_lease_until = NULL, updated_at = ")
            .bind(now)
            .push(" WHERE connection_id = ")
            .bind(record.id.as_str())
            .push(" AND status = 'active'");
        let changed = tx.conn().execute(&sql).await?;
        if changed > 0 {
            let data = json!({"connectionId": record.id, "endpointId": record.endpoint, "person": record.person, "reason": why});
            webhooks::enqueue(db, &mut tx, &record.app, EventType::ConnectionReauthorizationRequired, data, now)
                .await?;
        }
        tx.commit().await?;
        if changed > 0 {
            tracing::info!(connection = %record.id, why, "connection needs reauthorization");
            self.wake_webhooks();
        }
        Ok(())
    }

    pub(crate) async fn touch_fetched(&self, id: &ConnectionId) -> Result<()> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("UPDATE link_connections SET last_fetch_at = ")
            .bind(self.now_ms())
            .push(" WHERE connection_id = ")
            .bind(id.as_str());
        db.execute(&sql).await?;
        Ok(())
    }
}

fn view_of(r: ConnectionRecord, endpoint_name: Option<String>) -> ConnectionView {
    ConnectionView {
        connection_id: r.id,
        endpoint_id: r.endpoint,
        endpoint_name,
        person: r.person,
        patient_id: r.patient_id,
        fhir_user: r.fhir_user,
        scope: r.scope,
        status: r.status,
        status_detail: r.status_detail,
        token_expires: r.access_expires_at.map(store::clock::instant_text),
        refreshable: r.refreshable,
        created: store::clock::instant_text(r.created_at),
        last_fetch: r.last_fetch_at.map(store::clock::instant_text),
    }
}
