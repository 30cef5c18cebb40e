//! Keeping a connection's access token usable: refreshed ahead of expiry and after a portal's
//! 401, **single-flight per connection across every Link process**. Portals that rotate refresh
//! tokens (Portico does) revoke the whole grant when a used one is presented again, so two
//! refreshes of one connection must never overlap: inside a process a per-connection mutex
//! serialises them, across processes a lease on the connection's row does (taken only if the
//! token generation is still the one read, so a process that lost the race re-reads the fresh
//! token instead of refreshing again). A lease outlives any refresh request, so a process that
//! dies holding one frees it when it runs out.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::broker::{read_token_answer, tokens_context, PortalTokens};
use crate::connections::{ConnectionRecord, ACTIVE};
use crate::db::int_value;
use crate::error::{LinkError, Result};
use crate::health::EventKind;
use crate::ids::ConnectionId;
use crate::portal::PortalError;
use crate::Link;

/// A usable token and the generation it belongs to (to tell "refresh this" from "someone
/// already did").
#[derive(Debug, Clone)]
pub struct AccessToken {
    pub token: String,
    pub generation: i64,
}

enum Want {
    /// Refresh when the token expires within the refresh-ahead window.
    Fresh,
    /// The portal refused this generation's token: refresh unless it has changed since.
    Replace(i64),
}

/// A token this process read or obtained recently, so that the requests of a fetch do not each
/// read and decrypt the connection (kept briefly: another process may change the connection).
#[derive(Debug, Clone)]
pub(crate) struct CachedToken {
    token: AccessToken,
    refresh_at: Option<i64>,
    cached_at: std::time::Instant,
}

const TOKEN_CACHE: Duration = Duration::from_secs(15);

impl Link {
    /// The connection's access token, refreshed first when it is about to expire.
    pub(crate) async fn access_token(&self, id: &ConnectionId) -> Result<AccessToken> {
        let now = self.now_ms();
        let cached = self.inner.token_cache.lock().unwrap_or_else(|p| p.into_inner()).get(id).cloned();
        if let Some(c) = cached {
            if c.cached_at.elapsed() < TOKEN_CACHE && c.refresh_at.is_none_or(|at| at > now) {
                return Ok(c.token);
            }
        }
        self.token_with(id, Want::Fresh).await
    }

    /// After a 401 with `generation`'s token: a new token (refreshing unless another request
    /// already did).
    pub(crate) async fn replace_token(&self, id: &ConnectionId, generation: i64) -> Result<AccessToken> {
        self.forget_token(id);
        self.token_with(id, Want::Replace(generation)).await
    }

    /// Drop the cached token of a connection (it was revoked or needs reauthorization).
    pub(crate) fn forget_token(&self, id: &ConnectionId) {
        self.inner.token_cache.lock().unwrap_or_else(|p| p.into_inner()).remove(id);
    }

    fn remember_token(&self, id: &ConnectionId, token: &AccessToken, refresh_at: Option<i64>) {
        let mut cache = self.inner.token_cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() > 10_000 {
            cache.retain(|_, c| c.cached_at.elapsed() < TOKEN_CACHE);
        }
        cache
            .insert(id.clone(), CachedToken { token: token.clone(), refresh_at, cached_at: std::time::Instant::now() });
    }

    /// When a token should be refreshed: ahead of its expiry by the configured margin, or by
    /// half its life when that is shorter (a ten-second token is not refreshed on every use).
    fn refresh_at(&self, expires_at: Option<i64>, issued_at: Option<i64>) -> Option<i64> {
        expires_at.map(|exp| {
            let lifetime = issued_at.map_or(i64::MAX, |issued| exp - issued);
            exp - (self.config().refresh_ahead_seconds * 1000).min(lifetime / 2)
        })
    }

    fn local_lock(&self, id: &ConnectionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.inner.refresh_locks.lock().unwrap_or_else(|p| p.into_inner());
        // Forget locks nobody holds, so the map does not grow with every connection ever used.
        if locks.len() > 1024 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(id.clone()).or_default().clone()
    }

    async fn token_with(&self, id: &ConnectionId, want: Want) -> Result<AccessToken> {
        let lock = self.local_lock(id);
        let _held = lock.lock().await;
        let lease_ms = self.config().refresh_lease_seconds * 1000;
        let mut waited_ms = 0i64;
        loop {
            let record = self.connection_record(id).await?.ok_or_else(|| LinkError::not_found("connection is gone"))?;
            if record.status != ACTIVE {
                return Err(LinkError::ReauthorizationRequired);
            }
            let tokens = self.open_tokens(&record)?.ok_or(LinkError::ReauthorizationRequired)?;
            let now = self.now_ms();
            let needed = match want {
                Want::Fresh => {
                    self.refresh_at(record.access_expires_at, record.access_issued_at).is_some_and(|at| at <= now)
                }
                Want::Replace(generation) => record.generation == generation,
            };
            if !needed {
                let token = AccessToken { token: tokens.access_token, generation: record.generation };
                self.remember_token(id, &token, self.refresh_at(record.access_expires_at, record.access_issued_at));
                return Ok(token);
            }
            let Some(refresh_token) = tokens.refresh_token.clone() else {
                let why = "the access token expired and the portal gave no refresh token";
                self.require_reauthorization(&record, why).await?;
                return Err(LinkError::ReauthorizationRequired);
            };
            if !self.take_refresh_lease(&record, now, lease_ms).await? {
                // Another process is refreshing: wait for its new generation.
                if waited_ms > lease_ms {
                    return Err(LinkError::Portal(PortalError::Timeout(waited_ms as u64)));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                waited_ms += 100;
                continue;
            }
            return self.refresh_holding_lease(&record, &tokens, &refresh_token).await;
        }
    }

    async fn take_refresh_lease(&self, record: &ConnectionRecord, now: i64, lease_ms: i64) -> Result<bool> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("UPDATE link_connections SET refresh_lease_owner = ")
            .bind(self.inner.instance.as_str())
            .push(", refresh_lease_until = ")
            .bind(now + lease_ms)
            .push(" WHERE connection_id = ")
            .bind(record.id.as_str())
            .push(" AND status = 'active' AND token_generation = ")
            .bind(record.generation)
            .push(" AND (refresh_lease_until IS NULL OR refresh_lease_until < ")
            .bind(now)
            .push(")");
        Ok(db.execute(&sql).await? == 1)
    }

    async fn refresh_holding_lease(
        &self,
        record: &ConnectionRecord,
        tokens: &PortalTokens,
        refresh_token: &str,
    ) -> Result<AccessToken> {
        let endpoint = self.require_endpoint(&record.endpoint).await?;
        let form = vec![
            ("grant_type".to_owned(), "refresh_token".to_owned()),
            ("refresh_token".to_owned(), refresh_token.to_owned()),
        ];
        let outcome = match self.token_request(&endpoint, form, EventKind::Refresh).await? {
            Ok(value) => read_token_answer(&value),
            Err(e) => Err(e),
        };
        let answer = match outcome {
            Ok(a) => a,
            Err(e @ PortalError::Unauthorized) | Err(e @ PortalError::Status { status: 400..=499, .. }) => {
                // The portal no longer honours the grant (invalid_grant, a revoked app, a
                // replayed token): only the person can mend that.
                self.require_reauthorization(record, &format!("refresh refused: {e}")).await?;
                return Err(LinkError::ReauthorizationRequired);
            }
            Err(e) => {
                self.release_refresh_lease(&record.id).await?;
                return Err(LinkError::Portal(e));
            }
        };
        self.health().record(
            &endpoint.id,
            EventKind::Refresh,
            true,
            None,
            Some(json!({"refreshToken": answer.refresh_token.is_some(), "expiresIn": answer.expires_in})),
        );
        let new_tokens = PortalTokens {
            access_token: answer.access_token.clone(),
            // A portal that does not rotate keeps the old refresh token valid.
            refresh_token: answer.refresh_token.clone().or_else(|| tokens.refresh_token.clone()),
        };
        let now = self.now_ms();
        let sealed = self
            .vault()
            .seal_str(&tokens_context(&record.id), &serde_json::to_string(&new_tokens).unwrap_or_default())?;
        let db = self.db();
        let mut sql = db.sql();
        sql.push("UPDATE link_connections SET tokens = ")
            .bind(sealed)
            .push(", access_expires_at = ")
            .bind(int_value(answer.expires_in.map(|s| now + s * 1000)))
            .push(", access_issued_at = ")
            .bind(now)
            .push(", token_generation = token_generation + 1, refresh_lease_until = NULL, refresh_lease_owner = NULL, updated_at = ")
            .bind(now);
        if let Some(scope) = &answer.scope {
            sql.push(", scope = ").bind(scope.as_str());
        }
        sql.push(" WHERE connection_id = ").bind(record.id.as_str());
        db.execute(&sql).await?;
        tracing::debug!(connection = %record.id, "access token refreshed");
        let token = AccessToken { token: answer.access_token, generation: record.generation + 1 };
        let expires_at = answer.expires_in.map(|s| now + s * 1000);
        self.remember_token(&record.id, &token, self.refresh_at(expires_at, Some(now)));
        Ok(token)
    }

    async fn release_refresh_lease(&self, id: &ConnectionId) -> Result<()> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("UPDATE link_connections SET refresh_lease_until = NULL WHERE connection_id = ")
            .bind(id.as_str())
            .push(" AND refresh_lease_owner = ")
            .bind(self.inner.instance.as_str());
        db.execute(&sql).await?;
        Ok(())
    }
}
