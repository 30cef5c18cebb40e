//! The vault's encryption: AES-256-GCM with a random 96-bit nonce per value, the key's id stored
//! with each ciphertext, and the row the value belongs to bound in as associated data (a
//! ciphertext copied into another row does not open).
//!
//! Keys come from `PORTICO_LINK_KEY` (comma-separated, base64 or hex, 32 bytes each) or from a
//! key file (one key per line, `#` comments). The first key seals; every key listed opens, so a
//! rotation lists the new key first, re-encrypts ([`crate::Link::reencrypt_all`]) and then drops
//! the old one.

use std::path::Path;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::{LinkError, Result};

/// The environment variable that holds the vault keys.
pub const KEY_ENV: &str = "PORTICO_LINK_KEY";

const FORMAT: &str = "v1";

struct VaultKey {
    kid: String,
    key: LessSafeKey,
}

/// The keys that seal and open secrets at rest.
pub struct Vault {
    keys: Vec<VaultKey>,
}

impl std::fmt::Debug for Vault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vault").field("kids", &self.kids()).finish_non_exhaustive()
    }
}

/// Where the keys came from (rotation works differently for each).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Environment,
    File(std::path::PathBuf),
}

impl Vault {
    /// A vault over raw 32-byte keys, the first one sealing.
    pub fn from_keys(raw: &[[u8; 32]]) -> Result<Vault> {
        if raw.is_empty() {
            return Err(LinkError::Vault("no vault key".into()));
        }
        let keys = raw
            .iter()
            .map(|bytes| {
                let unbound =
                    UnboundKey::new(&AES_256_GCM, bytes).map_err(|_| LinkError::Vault("unusable key".into()))?;
                Ok(VaultKey { kid: key_id(bytes), key: LessSafeKey::new(unbound) })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Vault { keys })
    }

    /// Keys from `PORTICO_LINK_KEY` when it is set, else from `key_file` (created with one new
    /// key, readable by its owner only, when it does not exist).
    pub fn load(key_file: &Path) -> Result<(Vault, KeySource)> {
        if let Ok(text) = std::env::var(KEY_ENV) {
            let keys = parse_keys(&text.replace(',', "\n"))?;
            return Ok((Vault::from_keys(&keys)?, KeySource::Environment));
        }
        if !key_file.exists() {
            write_key_file(key_file, &[new_key()])?;
        }
        let text = std::fs::read_to_string(key_file)
            .map_err(|e| LinkError::Config(format!("vault key file {}: {e}", key_file.display())))?;
        let keys = parse_keys(&text)?;
        Ok((Vault::from_keys(&keys)?, KeySource::File(key_file.to_path_buf())))
    }

    /// The id of the key that seals.
    pub fn active_kid(&self) -> &str {
        self.keys.first().map_or("", |k| k.kid.as_str())
    }

    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Encrypt `plaintext` for the row named by `context`.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String> {
        let key = self.keys.first().ok_or_else(|| LinkError::Vault("no vault key".into()))?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| LinkError::Vault("no randomness".into()))?;
        let mut data = plaintext.to_vec();
        key.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| LinkError::Vault("encryption failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!("{FORMAT}.{}.{}", key.kid, URL_SAFE_NO_PAD.encode(out)))
    }

    pub fn seal_str(&self, context: &str, plaintext: &str) -> Result<String> {
        self.seal(context, plaintext.as_bytes())
    }

    /// Decrypt what [`Vault::seal`] produced for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>> {
        let mut parts = sealed.splitn(3, '.');
        let (Some(FORMAT), Some(kid), Some(data)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(LinkError::Vault("not a vault ciphertext".into()));
        };
        let key = self
            .keys
            .iter()
            .find(|k| k.kid == kid)
            .ok_or_else(|| LinkError::Vault(format!("sealed with key {kid}, which this process does not have")))?;
        let bytes = URL_SAFE_NO_PAD.decode(data).map_err(|_| LinkError::Vault("damaged ciphertext".into()))?;
        if bytes.len() < NONCE_LEN {
            return Err(LinkError::Vault("damaged ciphertext".into()));
        }
        let (nonce, rest) = bytes.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| LinkError::Vault("damaged ciphertext".into()))?;
        let mut rest = rest.to_vec();
        let plain = key
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut rest)
            .map_err(|_| LinkError::Vault("a ciphertext did not open (wrong key or row)".into()))?;
        Ok(plain.to_vec())
    }

    pub fn open_string(&self, context: &str, sealed: &str) -> Result<String> {
        String::from_utf8(self.open(context, sealed)?).map_err(|_| LinkError::Vault("not text".into()))
    }

    /// The key id a ciphertext was sealed with.
    pub fn kid_of(sealed: &str) -> Option<&str> {
        let mut parts = sealed.splitn(3, '.');
        match (parts.next(), parts.next()) {
            (Some(FORMAT), Some(kid)) => Some(kid),
            _ => None,
        }
    }
}

/// A fresh random 32-byte key.
pub fn new_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    // aws-lc's RNG only fails when the OS has no entropy source, where nothing else works either.
    if aws_lc_rs::rand::fill(&mut key).is_err() {
        key = rand::random();
    }
    key
}

/// A key as the key file and `PORTICO_LINK_KEY` spell it (standard base64).
pub fn encode_key(key: &[u8; 32]) -> String {
    STANDARD.encode(key)
}

/// Write a key file (0600 on Unix), keys in order, the first sealing.
pub fn write_key_file(path: &Path, keys: &[[u8; 32]]) -> Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| LinkError::Config(format!("{}: {e}", parent.display())))?;
    }
    let mut text = String::from("# Portico Link vault keys: the first seals, all open. Keep this file secret.\n");
    for key in keys {
        text.push_str(&encode_key(key));
        text.push('\n');
    }
    let tmp = path.with_extension("tmp");
    write_private(&tmp, text.as_bytes())?;
    std::fs::rename(&tmp, path).map_err(|e| LinkError::Config(format!("{}: {e}", path.display())))
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| LinkError::Config(format!("{}: {e}", path.display())))?;
    file.write_all(bytes).map_err(|e| LinkError::Config(format!("{}: {e}", path.display())))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| LinkError::Config(format!("{}: {e}", path.display())))
}

/// Keys from text: one per line (base64 or hex of 32 bytes), `#` comments and blanks skipped.
pub fn parse_keys(text: &str) -> Result<Vec<[u8; 32]>> {
    let mut keys = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let bytes = STANDARD
            .decode(line)
            .ok()
            .or_else(|| URL_SAFE_NO_PAD.decode(line).ok())
            .filter(|b| b.len() == 32)
            .or_else(|| hex::decode(line).ok())
            .filter(|b| b.len() == 32)
            .ok_or_else(|| LinkError::Config("a vault key is not 32 bytes of base64 or hex".into()))?;
        let mut key = [0u8; 32];
        key.copy_from_slice(&bytes);
        keys.push(key);
    }
    if keys.is_empty() {
        return Err(LinkError::Config("no vault key given".into()));
    }
    Ok(keys)
}

fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::new().chain_update(b"portico-link-vault-key\0").chain_update(key).finalize();
    hex::encode(&digest[..6])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_row() {
        let (a, b) = (new_key(), new_key());
        let vault = Vault::from_keys(&[a]).unwrap();
        let sealed = vault.seal_str("connection:1", "refresh-token-value").unwrap();
        assert!(!sealed.contains("refresh-token-value"));
        assert_eq!(vault.open_string("connection:1", &sealed).unwrap(), "refresh-token-value");
        assert!(vault.open("connection:2", &sealed).is_err(), "bound to its row");
        let other = Vault::from_keys(&[b]).unwrap();
        assert!(other.open("connection:1", &sealed).is_err(), "another key");
        // After a rotation both keys open; the new one seals.
        let rotated = Vault::from_keys(&[b, a]).unwrap();
        assert_eq!(rotated.open_string("connection:1", &sealed).unwrap(), "refresh-token-value");
        let resealed = rotated.seal_str("connection:1", "x").unwrap();
        assert_eq!(Vault::kid_of(&resealed), Some(rotated.active_kid()));
        assert_ne!(Vault::kid_of(&resealed), Vault::kid_of(&sealed));
        // Damage is an error, not a panic.
        let mut broken = sealed.clone();
        broken.pop();
        assert!(vault.open("connection:1", &broken).is_err());
        assert!(vault.open("connection:1", "v1.zz.%%%").is_err());
        assert!(vault.open("connection:1", "").is_err());
    }

    #[test]
    fn keys_parse_from_base64_and_hex() {
        let key = new_key();
        let text = format!("# comment\n{}\n\n{}\n", encode_key(&key), hex::encode(key));
        assert_eq!(parse_keys(&text).unwrap(), vec![key, key]);
        assert!(parse_keys("# nothing").is_err());
        assert!(parse_keys("c2hvcnQ=").is_err());
    }
}
