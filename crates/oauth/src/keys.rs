//! The signing keys in memory: the active key per algorithm for new tokens, every published key
//! for verification, and the JWKS document. Loaded from the database at start (a first RS256 key
//! is generated when there is none), reloaded when a token names an unknown `kid` and once a
//! minute, so a `portico keys rotate` run from another process is picked up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use auth::jwt::{SigningKeyPair, VerifyingKeys};
use auth::keys::{generate, SigningAlg};
use store::auth::{KeyAlg, NewSigningKey, SigningKey};
use store::Store;

use crate::error::OAuthError;

/// Keys are re-read at most this often when nothing forces it.
const RELOAD_EVERY: Duration = Duration::from_secs(60);
/// An unknown `kid` forces a reload at most this often (a flood of forged tokens must not turn
/// into a flood of queries).
const UNKNOWN_KID_RELOAD: Duration = Duration::from_secs(5);

pub(crate) struct KeyRing {
    /// Signs ID tokens (RS256, what OpenID Connect clients expect).
    pub id_token: SigningKeyPair,
    /// Signs access tokens.
    pub access_token: SigningKeyPair,
    pub verify: VerifyingKeys,
    pub loaded_at: Instant,
}

fn store_alg(alg: SigningAlg) -> KeyAlg {
    match alg {
        SigningAlg::Rs256 => KeyAlg::Rs256,
        SigningAlg::Es256 => KeyAlg::Es256,
    }
}

fn auth_alg(alg: KeyAlg) -> SigningAlg {
    match alg {
        KeyAlg::Rs256 => SigningAlg::Rs256,
        KeyAlg::Es256 => SigningAlg::Es256,
    }
}

/// Generate a key of `alg` and store it as active.
pub(crate) async fn create_key(store: &Store, alg: SigningAlg) -> Result<SigningKey, OAuthError> {
    let key = generate(alg).map_err(OAuthError::internal)?;
    let stored = store
        .insert_signing_key(NewSigningKey {
            kid: key.kid,
            alg: store_alg(alg),
            private_pem: key.private_pem,
            public_jwk: key.public_jwk,
        })
        .await?;
    Ok(stored)
}

async fn active_key(store: &Store, alg: SigningAlg) -> Result<SigningKeyPair, OAuthError> {
    let key = match store.active_signing_key(store_alg(alg)).await? {
        Some(k) => k,
        None => create_key(store, alg).await?,
    };
    SigningKeyPair::from_pem(&key.kid, auth_alg(key.alg), &key.private_pem).map_err(OAuthError::internal)
}

pub(crate) async fn load(store: &Store, access_es256: bool) -> Result<KeyRing, OAuthError> {
    let id_token = active_key(store, SigningAlg::Rs256).await?;
    let access_token = if access_es256 { active_key(store, SigningAlg::Es256).await? } else { id_token.clone() };
    let published = store.signing_keys().await?;
    let jwks_list: Vec<serde_json::Value> = published.iter().map(|k| k.public_jwk.clone()).collect();
    let verify = VerifyingKeys::from_jwks(jwks_list.iter());
    Ok(KeyRing { id_token, access_token, verify, loaded_at: Instant::now() })
}

/// The keys, reloaded when stale.
pub(crate) struct Keys {
    ring: std::sync::RwLock<Arc<KeyRing>>,
    reload: tokio::sync::Mutex<()>,
    access_es256: bool,
}

impl Keys {
    pub(crate) async fn new(store: &Store, access_es256: bool) -> Result<Keys, OAuthError> {
        let ring = load(store, access_es256).await?;
        Ok(Keys { ring: std::sync::RwLock::new(Arc::new(ring)), reload: tokio::sync::Mutex::new(()), access_es256 })
    }

    fn snapshot(&self) -> Arc<KeyRing> {
        match self.ring.read() {
            Ok(r) => r.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The current ring, re-read from the database when older than [`RELOAD_EVERY`].
    pub(crate) async fn current(&self, store: &Store) -> Arc<KeyRing> {
        let ring = self.snapshot();
        if ring.loaded_at.elapsed() < RELOAD_EVERY {
            return ring;
        }
        self.reload_if_older(store, RELOAD_EVERY).await
    }

    /// Reload after a token named an unknown key.
    pub(crate) async fn after_unknown_kid(&self, store: &Store) -> Arc<KeyRing> {
        self.reload_if_older(store, UNKNOWN_KID_RELOAD).await
    }

    pub(crate) async fn force_reload(&self, store: &Store) -> Result<(), OAuthError> {
        let _guard = self.reload.lock().await;
        let ring = load(store, self.access_es256).await?;
        self.install(ring);
        Ok(())
    }

    async fn reload_if_older(&self, store: &Store, age: Duration) -> Arc<KeyRing> {
        let _guard = self.reload.lock().await;
        let ring = self.snapshot();
        if ring.loaded_at.elapsed() < age {
            return ring;
        }
        match load(store, self.access_es256).await {
            Ok(fresh) => {
                self.install(fresh);
                self.snapshot()
            }
            Err(e) => {
                // Keep serving with the keys we have; the error was logged.
                tracing::warn!(error = %e, "could not reload signing keys");
                ring
            }
        }
    }

    fn install(&self, ring: KeyRing) {
        let ring = Arc::new(ring);
        match self.ring.write() {
            Ok(mut w) => *w = ring,
            Err(poisoned) => *poisoned.into_inner() = ring,
        }
    }
}

/// Add a new active key of `alg` and retire the previous active ones; they stay published for
/// `publish_seconds` so tokens they signed keep verifying until they expire. Returns the new kid.
pub async fn rotate(store: &Store, alg: SigningAlg, publish_seconds: i64) -> Result<String, OAuthError> {
    let previous: Vec<SigningKey> =
        store.signing_keys().await?.into_iter().filter(|k| k.active && k.alg == store_alg(alg)).collect();
    let new = create_key(store, alg).await?;
    for old in previous {
        store.retire_signing_key(&old.kid, publish_seconds).await?;
    }
    Ok(new.kid)
}
