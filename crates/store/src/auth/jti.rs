//! Replay protection for `private_key_jwt` client assertions (SMART Backend Services: the server
//! must refuse a `jti` it has seen before for the same client, until the assertion expires).

use ::auth::ClientId;

use super::{execute, Result};
use crate::db::Sql;
use crate::Store;

impl Store {
    /// Remember that `client_id` used assertion `jti` (valid until `expires_at`, epoch seconds).
    /// Returns false when the pair was seen before and has not expired: a replay. Expired pairs
    /// are pruned on the way.
    pub async fn remember_jti(&self, client_id: &ClientId, jti: &str, expires_at: i64) -> Result<bool> {
        let now = self.now_secs();
        let mut tx = self.pool.begin_write().await?;
        let fresh = {
            let mut conn = tx.conn();
            let mut prune = Sql::new(conn.dialect());
            prune.push("DELETE FROM client_assertion_jtis WHERE expires_at <= ").bind(now);
            execute(&mut conn, &prune).await?;
            let mut sql = Sql::new(conn.dialect());
            sql.push("INSERT INTO client_assertion_jtis (client_id, jti, expires_at) VALUES (")
                .bind(client_id.as_str())
                .push(", ")
                .bind(jti)
                .push(", ")
                .bind(expires_at.max(now.saturating_add(1)))
                .push(") ON CONFLICT (client_id, jti) DO NOTHING");
            execute(&mut conn, &sql).await? == 1
        };
        tx.commit().await?;
        Ok(fresh)
    }
}
