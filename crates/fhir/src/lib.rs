//! FHIR R4 domain logic with no I/O: which resource types and search parameters exist (taken from
//! the official definitions embedded in `definitions/`), how a resource is turned into typed index
//! rows and patient-compartment membership, structural validation, and parsing of search queries.

pub mod convert;
pub mod datetime;
pub mod dedup;
pub mod elements;
pub mod fhirpath;
pub mod index;
pub mod labels;
pub mod member_match;
pub mod normalize;
pub mod outcome;
pub mod references;
pub mod registry;
pub mod search;
pub mod validate;

pub use index::{extract, Extracted, IndexEntry, IndexValue};
pub use registry::{ParamType, Registry, SearchParamDef};
