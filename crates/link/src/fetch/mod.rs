//! The fetch engine: requests, per-connection runs, FHIR at the portal, and the pass-through.

pub mod assemble;
pub mod passthrough;
pub mod portal_fhir;
pub mod raw;
pub mod request;
pub mod run;

pub use request::{FetchRequest, Group};
