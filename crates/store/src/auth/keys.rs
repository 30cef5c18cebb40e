//! Token signing keys. A key is created active; retiring it stops new signatures with it, but it
//! stays published in the JWKS (and usable for verification) until the tokens it signed have
//! expired.

use std::fmt;

use serde_json::Value;

use super::clients::text_enum;
use super::{conflict_on_duplicate, opt_int, parse_json, parse_stored, required_text, to_json, AuthStoreError, Result};
use crate::db::{Col, RowExt, Sql, SqlValue};
use crate::Store;

text_enum!(
    /// JWS algorithms Portico signs with.
    KeyAlg {
        Rs256 => "RS256",
        Es256 => "ES256",
    }
);

#[derive(Clone, PartialEq)]
pub struct NewSigningKey {
    pub kid: String,
    pub alg: KeyAlg,
    /// PKCS#8 PEM of the private key.
    pub private_pem: String,
    /// The public JWK as published (with `kid`, `alg`, `use`).
    pub public_jwk: Value,
}

#[derive(Clone, PartialEq)]
pub struct SigningKey {
    pub kid: String,
    pub alg: KeyAlg,
    pub private_pem: String,
    pub public_jwk: Value,
    pub created_at: i64,
    pub retired_at: Option<i64>,
    /// For a retired key: published until this time (epoch seconds).
    pub publish_until: Option<i64>,
    /// New tokens are signed with active keys only.
    pub active: bool,
}

impl fmt::Debug for NewSigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pem", &"<redacted>")
            .field("public_jwk", &self.public_jwk)
            .finish()
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pem", &"<redacted>")
            .field("public_jwk", &self.public_jwk)
            .field("created_at", &self.created_at)
            .field("retired_at", &self.retired_at)
            .field("publish_until", &self.publish_until)
            .field("active", &self.active)
            .finish()
    }
}

const KEY_COLS: &str = "kid, alg, private_pem, public_jwk, created_at, retired_at, publish_until, active";
const KEY_KINDS: [Col; 8] = [Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Int, Col::Int, Col::Int];

fn decode_key(mut row: Vec<SqlValue>) -> Result<SigningKey> {
    Ok(SigningKey {
        kid: required_text(&mut row, 0, "kid")?,
        alg: parse_stored(&required_text(&mut row, 1, "alg")?, "alg")?,
        private_pem: required_text(&mut row, 2, "private_pem")?,
        public_jwk: parse_json(&required_text(&mut row, 3, "public_jwk")?, "public_jwk")?,
        created_at: row.int(4),
        retired_at: opt_int(&row, 5),
        publish_until: opt_int(&row, 6),
        active: row.int(7) != 0,
    })
}

/// `WHERE` condition of a published key: active, or retired and still within its window.
fn push_published(sql: &mut Sql, now: i64) {
    sql.push("(active = 1 OR (publish_until IS NOT NULL AND publish_until > ").bind(now).push("))");
}

impl Store {
    /// Store a new active key. A `kid` already used is a `Conflict`.
    pub async fn insert_signing_key(&self, key: NewSigningKey) -> Result<SigningKey> {
        if key.kid.is_empty() || key.private_pem.trim().is_empty() || !key.public_jwk.is_object() {
            return Err(AuthStoreError::Invalid("a signing key needs a kid, a private key and a public JWK".into()));
        }
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("INSERT INTO signing_keys (")
            .push(KEY_COLS)
            .push(") VALUES (")
            .bind(key.kid.as_str())
            .push(", ")
            .bind(key.alg.as_str())
            .push(", ")
            .bind(key.private_pem.as_str())
            .push(", ")
            .bind(to_json(&key.public_jwk)?)
            .push(", ")
            .bind(now)
            .push(", NULL, NULL, 1)");
        let mut tx = self.pool.begin_write().await?;
        tx.conn()
            .execute(&sql)
            .await
            .map_err(|e| conflict_on_duplicate(e, || format!("signing key {:?} already exists", key.kid)))?;
        tx.commit().await?;
        Ok(SigningKey {
            kid: key.kid,
            alg: key.alg,
            private_pem: key.private_pem,
            public_jwk: key.public_jwk,
            created_at: now,
            retired_at: None,
            publish_until: None,
            active: true,
        })
    }

    /// The keys to publish in the JWKS: active ones, and retired ones still within their window.
    /// Active keys first, newest first.
    pub async fn signing_keys(&self) -> Result<Vec<SigningKey>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(KEY_COLS).push(" FROM signing_keys WHERE ");
        push_published(&mut sql, self.now_secs());
        sql.push(" ORDER BY active DESC, created_at DESC, kid");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &KEY_KINDS).await?;
        rows.into_iter().map(decode_key).collect()
    }

    /// A published key by `kid` (to verify a token's signature).
    pub async fn signing_key(&self, kid: &str) -> Result<Option<SigningKey>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(KEY_COLS).push(" FROM signing_keys WHERE kid = ").bind(kid).push(" AND ");
        push_published(&mut sql, self.now_secs());
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &KEY_KINDS).await?;
        rows.into_iter().next().map(decode_key).transpose()
    }

    /// The key to sign new tokens with: the newest active key of `alg`.
    pub async fn active_signing_key(&self, alg: KeyAlg) -> Result<Option<SigningKey>> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ")
            .push(KEY_COLS)
            .push(" FROM signing_keys WHERE alg = ")
            .bind(alg.as_str())
            .push(" AND active = 1 ORDER BY created_at DESC, kid DESC LIMIT 1");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &KEY_KINDS).await?;
        rows.into_iter().next().map(decode_key).transpose()
    }

    /// Stop signing with a key. It stays published for `publish_for_seconds` (at least the
    /// longest lifetime of the tokens it signed). Returns false when no active key has that kid.
    pub async fn retire_signing_key(&self, kid: &str, publish_for_seconds: i64) -> Result<bool> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE signing_keys SET active = 0, retired_at = ")
            .bind(now)
            .push(", publish_until = ")
            .bind(now.saturating_add(publish_for_seconds.max(0)))
            .push(" WHERE kid = ")
            .bind(kid)
            .push(" AND active = 1");
        let mut tx = self.pool.begin_write().await?;
        let changed = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(changed > 0)
    }
}
