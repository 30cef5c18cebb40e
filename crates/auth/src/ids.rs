//! Identifier newtypes, so a client id can never be passed where a patient id is expected. Each
//! validates on `FromStr` and on deserialization (serde goes through `TryFrom<String>`), so a value
//! of the type is always well formed; on the wire each is a plain JSON string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = AuthError;
            fn from_str(s: &str) -> Result<Self, AuthError> {
                $check(s).map_err(|reason| AuthError::InvalidId { kind: $kind, reason })?;
                Ok($name(s.to_owned()))
            }
        }

        impl TryFrom<String> for $name {
            type Error = AuthError;
            fn try_from(s: String) -> Result<Self, AuthError> {
                $check(&s).map_err(|reason| AuthError::InvalidId { kind: $kind, reason })?;
                Ok($name(s))
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

string_id!(
    /// An OAuth `client_id`: 1-255 visible ASCII characters. RFC 6749 allows spaces too, but a
    /// space would break the space-separated lists and log lines ids end up in.
    ClientId,
    "client_id",
    check_visible_ascii
);
string_id!(
    /// One authorization grant (a person's consent to one client), which every token and refresh
    /// token hangs off so revoking the grant revokes them all.
    GrantId,
    "grant id",
    check_token_id
);
string_id!(
    /// A Patient resource id, following the FHIR `id` rules (`[A-Za-z0-9\-\.]{1,64}`) because it
    /// is returned as the `patient` launch context and used in `Patient/{id}` references.
    PatientId,
    "patient id",
    check_fhir_id
);
string_id!(
    /// A signed-in account (not a FHIR resource; `fhirUser` names the resource): 1-255 visible
    /// ASCII characters so e-mail-like logins fit.
    UserId,
    "user id",
    check_visible_ascii
);

impl GrantId {
    /// A fresh random grant id (UUID v4): unguessable, since it appears inside tokens.
    pub fn generate() -> GrantId {
        GrantId(uuid::Uuid::new_v4().to_string())
    }
}

impl PatientId {
    /// The relative reference `Patient/{id}`.
    pub fn reference(&self) -> String {
        format!("Patient/{}", self.0)
    }
}

fn check_visible_ascii(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 255 {
        return Err("must be at most 255 characters");
    }
    if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) {
        return Err("may only contain visible ASCII characters (no spaces)");
    }
    Ok(())
}

fn check_token_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 64 {
        return Err("must be at most 64 characters");
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
        return Err("may only contain A-Z a-z 0-9 - _ .");
    }
    Ok(())
}

fn check_fhir_id(s: &str) -> Result<(), &'static str> {
    if s.is_empty() {
        return Err("must not be empty");
    }
    if s.len() > 64 {
        return Err("must be at most 64 characters");
    }
    if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.')) {
        return Err("may only contain A-Z a-z 0-9 - .");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_ids() {
        let cases: &[(&str, bool, bool, bool, bool)] = &[
            // text, client, grant, patient, user
            ("my-app", true, true, true, true),
            ("pat.123", true, true, true, true),
            ("a_b", true, true, false, true),
            ("alice@example.org", true, false, false, true),
            ("", false, false, false, false),
            ("has space", false, false, false, false),
            ("tab\there", false, false, false, false),
            ("Ω", false, false, false, false),
        ];
        for &(text, client, grant, patient, user) in cases {
            assert_eq!(text.parse::<ClientId>().is_ok(), client, "client {text:?}");
            assert_eq!(text.parse::<GrantId>().is_ok(), grant, "grant {text:?}");
            assert_eq!(text.parse::<PatientId>().is_ok(), patient, "patient {text:?}");
            assert_eq!(text.parse::<UserId>().is_ok(), user, "user {text:?}");
        }
        assert!("x".repeat(64).parse::<PatientId>().is_ok());
        assert!("x".repeat(65).parse::<PatientId>().is_err());
        assert!("x".repeat(255).parse::<ClientId>().is_ok());
        assert!("x".repeat(256).parse::<ClientId>().is_err());
    }

    #[test]
    fn serde_is_a_plain_string_and_validates() {
        let p: PatientId = serde_json::from_str("\"123\"").unwrap();
        assert_eq!(p.to_string(), "123");
        assert_eq!(p.reference(), "Patient/123");
        assert_eq!(serde_json::to_string(&p).unwrap(), "\"123\"");
        assert!(serde_json::from_str::<PatientId>("\"a b\"").is_err());
        assert!(serde_json::from_str::<ClientId>("\"\"").is_err());
    }

    #[test]
    fn generated_grant_ids_are_valid_and_distinct() {
        let a = GrantId::generate();
        let b = GrantId::generate();
        assert_ne!(a, b);
        assert_eq!(a.as_str().parse::<GrantId>().unwrap(), a);
    }
}
