//! Link's own clients: apps (an app developer's backend). Each has a secret key, shown once and
//! stored as its SHA-256 (the key is 256 random bits, so a fast hash is as strong as a slow one),
//! the exact client URLs a person may be sent back to, and optionally a webhook URL with its
//! signing secret (kept in the vault: it is needed to sign).

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::db::{Col, RowExt};
use crate::error::{LinkError, Result};
use crate::ids::AppId;
use crate::Link;

/// The prefix of an app's secret key (so a leaked one is recognisable).
pub const KEY_PREFIX: &str = "lk_";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct App {
    pub app_id: AppId,
    pub name: String,
    pub client_urls: Vec<String>,
    pub webhook_url: Option<String>,
    pub created: String,
}

/// A new app with its secrets, shown once.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApp {
    #[serde(flatten)]
    pub app: App,
    pub secret_key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

pub fn key_hash(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// A URL Link may send a person's browser or a webhook to: absolute http(s), no fragment, no
/// credentials.
pub fn check_url(url: &str, what: &str) -> Result<()> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| LinkError::bad_request(format!("{what} '{url}' is not an absolute URL")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(LinkError::bad_request(format!("{what} '{url}' must be http or https")));
    }
    if parsed.fragment().is_some() || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(LinkError::bad_request(format!("{what} '{url}' may not carry a fragment or credentials")));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(LinkError::bad_request(format!("{what} '{url}' has no host")));
    }
    Ok(())
}

impl Link {
    pub async fn create_app(
        &self,
        name: &str,
        client_urls: &[String],
        webhook_url: Option<&str>,
    ) -> Result<CreatedApp> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(LinkError::bad_request("an app needs a name (at most 200 characters)"));
        }
        if client_urls.is_empty() {
            return Err(LinkError::bad_request("an app needs at least one client URL"));
        }
        for url in client_urls {
            check_url(url, "client URL")?;
        }
        if let Some(url) = webhook_url {
            check_url(url, "webhook URL")?;
        }
        let app_id = AppId::generate();
        let secret_key = format!("{KEY_PREFIX}{}", auth::password::random_token(32));
        let webhook_secret = webhook_url.map(|_| crate::webhooks::new_secret());
        let sealed_secret = match &webhook_secret {
            Some(s) => Some(self.vault().seal_str(&webhook_context(&app_id), s)?),
            None => None,
        };
        let now = self.now_ms();
        let db = self.db();
        let mut tx = db.begin().await?;
        let mut sql = db.sql();
        sql.push("INSERT INTO link_apps (app_id, name, key_hash, webhook_url, webhook_secret, created_at) VALUES (")
            .bind(app_id.as_str())
            .push(", ")
            .bind(name)
            .push(", ")
            .bind(key_hash(&secret_key))
            .push(", ")
            .bind(webhook_url)
            .push(", ")
            .bind(sealed_secret)
            .push(", ")
            .bind(now)
            .push(")");
        tx.conn().execute(&sql).await?;
        let mut urls: Vec<String> = client_urls.to_vec();
        urls.sort();
        urls.dedup();
        for url in &urls {
            let mut sql = db.sql();
            sql.push("INSERT INTO link_app_client_urls (app_id, url) VALUES (")
                .bind(app_id.as_str())
                .push(", ")
                .bind(url.as_str())
                .push(")");
            tx.conn().execute(&sql).await?;
        }
        tx.commit().await?;
        let app = App {
            app_id,
            name: name.to_owned(),
            client_urls: urls,
            webhook_url: webhook_url.map(String::from),
            created: store::clock::instant_text(now),
        };
        Ok(CreatedApp { app, secret_key, webhook_secret })
    }

    pub async fn apps(&self) -> Result<Vec<App>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT app_id, name, webhook_url, created_at FROM link_apps ORDER BY created_at, app_id");
        let rows = db.rows(&sql, &[Col::Text, Col::Text, Col::Text, Col::Int]).await?;
        let mut sql = db.sql();
        sql.push("SELECT app_id, url FROM link_app_client_urls ORDER BY url");
        let urls = db.rows(&sql, &[Col::Text, Col::Text]).await?;
        let mut apps = Vec::new();
        for mut row in rows {
            let Some(app_id) = row.text(0).and_then(|a| a.parse::<AppId>().ok()) else { continue };
            let client_urls = urls
                .iter()
                .filter(|u| u.text(0) == Some(app_id.as_str()))
                .filter_map(|u| u.text(1).map(String::from))
                .collect();
            apps.push(App {
                name: row.take_text(1).unwrap_or_default(),
                webhook_url: row.take_text(2),
                created: store::clock::instant_text(row.int(3)),
                client_urls,
                app_id,
            });
        }
        Ok(apps)
    }

    /// The app a secret key belongs to (the same answer for a missing and a wrong key).
    pub async fn authenticate_app(&self, key: Option<&str>) -> Result<AppId> {
        let refused =
            || LinkError::Unauthorized("a valid app secret key is required (Authorization: Bearer lk_…)".into());
        let key = key.filter(|k| k.starts_with(KEY_PREFIX) && k.len() < 200).ok_or_else(refused)?;
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT app_id FROM link_apps WHERE key_hash = ").bind(key_hash(key));
        let rows = db.rows(&sql, &[Col::Text]).await?;
        rows.first().and_then(|r| r.text(0)).and_then(|a| a.parse().ok()).ok_or_else(refused)
    }

    /// Is `url` registered, exactly, as one of the app's client URLs?
    pub async fn client_url_registered(&self, app: &AppId, url: &str) -> Result<bool> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT app_id FROM link_app_client_urls WHERE app_id = ")
            .bind(app.as_str())
            .push(" AND url = ")
            .bind(url);
        Ok(!db.rows(&sql, &[Col::Text]).await?.is_empty())
    }

    /// The app's webhook URL and signing secret, when it has one.
    pub(crate) async fn webhook_target(&self, app: &AppId) -> Result<Option<(String, String)>> {
        let db = self.db();
        let mut sql = db.sql();
        sql.push("SELECT webhook_url, webhook_secret FROM link_apps WHERE app_id = ").bind(app.as_str());
        let rows = db.rows(&sql, &[Col::Text, Col::Text]).await?;
        let Some(row) = rows.first() else { return Ok(None) };
        match (row.text(0), row.text(1)) {
            (Some(url), Some(sealed)) => {
                Ok(Some((url.to_owned(), self.vault().open_string(&webhook_context(app), sealed)?)))
            }
            _ => Ok(None),
        }
    }
}

pub(crate) fn webhook_context(app: &AppId) -> String {
    format!("app:{app}:webhook-secret")
}
