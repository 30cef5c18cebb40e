//! Link's identifiers: a short type prefix and 32 hex digits of randomness, so an id says what it
//! names and a path segment that is not one is refused before any query.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub const PREFIX: &'static str = $prefix;

            /// A new random id.
            pub fn generate() -> $name {
                $name(format!("{}_{}", $prefix, uuid::Uuid::new_v4().simple()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = InvalidId;
            fn from_str(s: &str) -> Result<$name, InvalidId> {
                let rest = s.strip_prefix(concat!($prefix, "_")).ok_or(InvalidId)?;
                if rest.len() == 32 && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                    Ok($name(s.to_owned()))
                } else {
                    Err(InvalidId)
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = InvalidId;
            fn try_from(s: String) -> Result<$name, InvalidId> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

prefixed_id!(
    /// An app: one of Link's own clients (an app developer's backend).
    AppId,
    "app"
);
prefixed_id!(
    /// A portal in the directory.
    EndpointId,
    "ep"
);
prefixed_id!(
    /// One person's authorization at one portal, for one app.
    ConnectionId,
    "conn"
);
prefixed_id!(
    /// A fetch job.
    JobId,
    "job"
);
prefixed_id!(
    /// A webhook event.
    EventId,
    "evt"
);

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id")]
pub struct InvalidId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_refuse_other_shapes() {
        let id = ConnectionId::generate();
        assert_eq!(id.as_str().parse::<ConnectionId>(), Ok(id.clone()));
        assert!(id.as_str().starts_with("conn_"));
        assert!(id.as_str().parse::<AppId>().is_err(), "another type's prefix");
        for bad in
            ["", "conn_", "conn_xyz", "conn_0123456789abcdef0123456789ABCDEF", "conn_0123456789abcdef0123456789abcdef0"]
        {
            assert!(bad.parse::<ConnectionId>().is_err(), "{bad}");
        }
    }
}
