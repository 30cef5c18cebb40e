//! The SMART App Launch 2.x authorization domain with no I/O: what a scope string means and what
//! it allows, PKCE verification, the sensitive categories a person may withhold, and the claims
//! carried by Portico's access tokens, key generation, JWT signing and verification, and
//! password hashing. HTTP and storage live elsewhere; everything here is pure so
//! it can be tested like the spec reads.

pub mod claims;
pub mod consent;
pub mod describe;
pub mod error;
pub mod ids;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod pkce;
mod r4;
pub mod scope;
pub mod sensitivity;

pub use claims::{AccessClaims, TokenKind};
pub use describe::{describe, resource_friendly_name};
pub use error::AuthError;
pub use ids::{ClientId, GrantId, PatientId, UserId};
pub use pkce::{ChallengeMethod, PkceChallenge};
pub use r4::is_r4_resource_type;
pub use scope::{
    ClinicalScope, Context, Interaction, Permissions, QueryFilter, QueryParam, Scope, ScopeResource, ScopeSet, Spelling,
};
pub use sensitivity::SensitiveCategory;
