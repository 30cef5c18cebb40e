//! Portico's deterministic FHIR R4 sample-data generator.
//!
//! `portico demo` serves data produced here instead of third-party sample
//! sets. Everything is derived from [`DemoConfig::seed`] through a small
//! built-in PRNG, so the same seed always yields byte-identical output,
//! independent of dependency versions or platform.
//!
//! The output is a list of FHIR R4 `transaction` Bundles: the first one holds
//! the shared Organizations (providers and the payer "Portico Health Plan"),
//! Practitioners, PractitionerRoles and Locations; then one Bundle per patient
//! (the proxy household — a parent and two children — shares one Bundle).
//! Every entry is a `PUT Type/id` with `fullUrl` `urn:uuid:<id>`, and all
//! references are relative (`Type/id`).
//!
//! Fixed roles, exposed through [`DemoAccounts`]:
//! * patient 0 — the health-plan member, an adult with a behavioral-health
//!   condition (ICD-10-CM F32.9/F41.1) and a substance-use condition (F10.20);
//! * patient 1 — the parent (proxy), patients 2 and 3 — their children;
//! * practitioners A and B — A is on the CareTeams of the first 60 % of the
//!   patients, B on the last 60 % (for 25 patients: A on 0..15, B on 10..25).
//!
//! Clinical timelines run through 2026-02-15; claims are adjudicated by
//! 2026-03-01 ([`AS_OF`]).

mod codes;
mod date;
mod gen;
mod json;
mod rng;
pub mod todo;

use serde_json::Value;

/// Date (FHIR `date`) up to which the generated history runs: the last
/// encounters happen a few weeks before it, the last claims are paid by it.
pub const AS_OF: &str = "2026-03-01";

/// Minimum number of patients: the member and the proxy household always exist.
pub const MIN_PATIENTS: usize = 4;

/// Generator settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DemoConfig {
    pub seed: u64,
    /// Number of patients; values below [`MIN_PATIENTS`] are raised to it.
    pub patients: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { seed: 42, patients: 25 }
    }
}

/// Generated data set.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoData {
    /// FHIR R4 `transaction` Bundles: shared directory first, then patients.
    pub bundles: Vec<Value>,
    /// Who to sign in as.
    pub accounts: DemoAccounts,
}

/// Logical ids of the resources the demo accounts act as / for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DemoAccounts {
    /// An adult health-plan member (Patient id).
    pub member_patient_id: String,
    /// The two children the parent may act for (Patient ids).
    pub proxy_patient_ids: Vec<String>,
    /// The parent (proxy), also a Patient.
    pub proxy_parent_patient_id: String,
    /// Two practitioners whose patient lists (CareTeams) overlap partially.
    pub practitioner_ids: Vec<String>,
}

impl DemoData {
    /// All resources of all bundles, in bundle order.
    pub fn resources(&self) -> impl Iterator<Item = &Value> {
        self.bundles
            .iter()
            .filter_map(|b| b.get("entry").and_then(Value::as_array))
            .flatten()
            .filter_map(|e| e.get("resource"))
    }
}

/// Generate the demo data set for `config`. Pure and deterministic.
pub fn generate(config: &DemoConfig) -> DemoData {
    gen::generate(config)
}
