//! Passwords and client secrets: argon2id with the library's recommended parameters (19 MiB, two
//! passes), stored as PHC strings. Verification of an unknown account still runs a full hash so a
//! sign-in attempt takes as long whether or not the username exists.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

use crate::error::AuthError;

/// Hash a password or client secret into an argon2id PHC string.
pub fn hash_secret(secret: &str) -> Result<String, AuthError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthError::Key(format!("cannot hash the secret: {e}")))
}

/// Does `secret` match the stored PHC string? A malformed stored hash never matches.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default().verify_password(secret.as_bytes(), &parsed).is_ok(),
        Err(_) => false,
    }
}

/// Spend the time of one verification without an account, so "no such user" is not faster than
/// "wrong password".
pub fn verify_against_nothing(secret: &str) {
    // Hashed once per process from a random value nobody knows; the result is irrelevant.
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let dummy = DUMMY.get_or_init(|| hash_secret(&random_token(16)).unwrap_or_default());
    let _ = verify_secret(secret, dummy);
}

/// A random secret of `bytes` bytes in base64url, for client secrets, codes and refresh tokens.
pub fn random_token(bytes: usize) -> String {
    use base64::Engine as _;
    use rand_bytes::fill;
    let mut buf = vec![0u8; bytes];
    fill(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// `n` random decimal digits (a PIN), uniformly distributed: bytes of 250 or more are
/// redrawn so that no digit is likelier than another.
pub fn random_digits(n: usize) -> String {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 32];
    while out.len() < n {
        rand_bytes::fill(&mut buf);
        for b in buf {
            if b < 250 && out.len() < n {
                out.push(char::from(b'0' + b % 10));
            }
        }
    }
    out
}

mod rand_bytes {
    /// Fill from the operating system's CSPRNG (through aws-lc's RNG).
    pub fn fill(buf: &mut [u8]) {
        use aws_lc_rs::rand::{SecureRandom, SystemRandom};
        // SystemRandom only fails if the OS has no entropy source, which would make every
        // security property moot; panicking there is not possible under our lints, so fall back
        // to uuid v4 (itself OS randomness) to fill the buffer.
        if SystemRandom::new().fill(buf).is_err() {
            for chunk in buf.chunks_mut(16) {
                let r = uuid::Uuid::new_v4();
                let bytes = r.as_bytes();
                chunk.copy_from_slice(&bytes[..chunk.len()]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_digits_are_digits() {
        let pin = random_digits(6);
        assert_eq!(pin.len(), 6);
        assert!(pin.bytes().all(|b| b.is_ascii_digit()), "{pin}");
        assert_ne!(random_digits(12), random_digits(12));
    }

    #[test]
    fn hash_and_verify() {
        let hash = hash_secret("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_secret("correct horse", &hash));
        assert!(!verify_secret("correct horse ", &hash));
        assert!(!verify_secret("", &hash));
        assert!(!verify_secret("correct horse", "not a hash"));
        // Salted: the same secret hashes differently.
        assert_ne!(hash_secret("correct horse").unwrap(), hash);
        verify_against_nothing("anything");
    }

    #[test]
    fn random_tokens_are_long_and_distinct() {
        let a = random_token(32);
        assert_eq!(a.len(), 43);
        assert!(a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_ne!(a, random_token(32));
    }
}
