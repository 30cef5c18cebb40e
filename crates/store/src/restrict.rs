//! What a caller may see, as SQL. Enforcement is a query filter, not a post-filter: a search under
//! a patient's token is a search restricted to that patient's compartment inside the statement,
//! so counts, totals, paging and `_include` stay correct, and the same value restricts reads,
//! history and `$everything`.
//!
//! A [`Restriction`] has three parts, each optional:
//! * **patients**: only resources in one of these patients' compartments (R4 CompartmentDefinition
//!   `patient`). Types that are never in a patient compartment and hold no patient data (the
//!   directory: Practitioner, Organization, Location, Medication, …) stay visible; every other
//!   non-compartment type is hidden.
//! * **withheld**: hide resources carrying any of these v3 ActCode security labels.
//! * **types**: per resource type, all, none, or only resources matching one of a list of granular
//!   filters (SMART v2 `?category=…` scopes; each filter is an AND of search terms).

use std::collections::BTreeMap;
use std::sync::Arc;

use fhir::search::{SearchRequest, SearchTerm, TotalMode};

use crate::db::Sql;
use crate::search::Filters;
use crate::Store;

/// Types outside any patient compartment that carry no patient's data: readable under a patient
/// restriction (an app showing a lab result may show who ordered it).
pub const SHARED_TYPES: &[&str] = &[
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "OrganizationAffiliation",
    "Location",
    "HealthcareService",
    "Endpoint",
    "Medication",
    "MedicationKnowledge",
    "Substance",
    "ValueSet",
    "CodeSystem",
    "ConceptMap",
    "StructureDefinition",
    "SearchParameter",
    "OperationDefinition",
    "CapabilityStatement",
    "Questionnaire",
    "PlanDefinition",
    "ActivityDefinition",
    "Library",
    "Measure",
];

/// How much of one resource type a caller may see.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum TypeRule {
    #[default]
    All,
    /// Only resources matching at least one filter; a filter is an AND of terms.
    Filtered(Vec<Vec<SearchTerm>>),
    None,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct TypeRules {
    /// The rule for types not in `by_type`.
    pub default: TypeRule,
    pub by_type: BTreeMap<String, TypeRule>,
}

impl TypeRules {
    pub fn rule(&self, resource_type: &str) -> &TypeRule {
        self.by_type.get(resource_type).unwrap_or(&self.default)
    }
}

/// A caller's view of the data. `Restriction::default()` sees everything.
#[derive(Clone, Default)]
pub struct Restriction {
    pub patients: Option<Arc<Vec<String>>>,
    pub withheld: Arc<Vec<String>>,
    pub types: Arc<TypeRules>,
    /// The cache key text, computed once per restriction value.
    key: Arc<std::sync::OnceLock<String>>,
}

impl PartialEq for Restriction {
    fn eq(&self, other: &Restriction) -> bool {
        self.patients == other.patients && self.withheld == other.withheld && self.types == other.types
    }
}

impl std::fmt::Debug for Restriction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.cache_key())
    }
}

impl Restriction {
    pub fn new(patients: Option<Arc<Vec<String>>>, withheld: Arc<Vec<String>>, types: TypeRules) -> Restriction {
        Restriction { patients, withheld, types: Arc::new(types), key: Arc::default() }
    }

    /// A copy whose rule for `resource_type` is "all" (to tell a granular-scope refusal from an
    /// unknown resource).
    pub fn without_filter_on(&self, resource_type: &str) -> Restriction {
        let mut types = (*self.types).clone();
        types.by_type.insert(resource_type.to_owned(), TypeRule::All);
        Restriction::new(self.patients.clone(), self.withheld.clone(), types)
    }

    /// Text that identifies what this restriction lets through (for cache keys).
    pub(crate) fn cache_key(&self) -> &str {
        self.key
            .get_or_init(|| format!("patients={:?} withheld={:?} types={:?}", self.patients, self.withheld, self.types))
    }

    pub fn is_unrestricted(&self) -> bool {
        self.patients.is_none() && self.withheld.is_empty() && *self.types == TypeRules::default()
    }

    /// Can any resource of `resource_type` be visible?
    pub fn type_visible(&self, registry: &fhir::Registry, resource_type: &str) -> bool {
        if *self.types.rule(resource_type) == TypeRule::None {
            return false;
        }
        match &self.patients {
            None => true,
            Some(_) => {
                !registry.patient_compartment_params(resource_type).is_empty() || SHARED_TYPES.contains(&resource_type)
            }
        }
    }

    /// Does the compartment limit apply to this type (and must drive its searches)?
    pub(crate) fn compartment_applies(&self, registry: &fhir::Registry, resource_type: &str) -> bool {
        self.patients.is_some() && !registry.patient_compartment_params(resource_type).is_empty()
    }

    /// Append ` AND …` conditions on the row `r` (of `resources r`, known to be of
    /// `resource_type`). `compartment_done` skips the compartment condition when the caller made
    /// it the driving term. Callers check [`Self::type_visible`] first.
    pub(crate) fn push(&self, store: &Store, sql: &mut Sql, resource_type: &str, now_ms: i64, compartment_done: bool) {
        self.push_index_checks(store, sql, resource_type, compartment_done);
        self.push_type_filters(store, sql, resource_type, now_ms);
    }

    /// Would [`Self::push_index_checks`] push anything?
    pub(crate) fn has_index_checks(&self, store: &Store, resource_type: &str, compartment_done: bool) -> bool {
        (!compartment_done && self.compartment_applies(store.registry, resource_type)) || !self.withheld.is_empty()
    }

    /// The conditions that look only at index rows of `r.rkey` (each ` AND …`): the
    /// compartment (unless `compartment_done`) and the withheld labels.
    pub(crate) fn push_index_checks(&self, store: &Store, sql: &mut Sql, resource_type: &str, compartment_done: bool) {
        if !compartment_done && self.compartment_applies(store.registry, resource_type) {
            sql.push(" AND ");
            self.push_compartment_exists(sql);
        }
        // Any v3 ActCode token of the resource with a withheld code (in practice its
        // `_security`); not narrowed to the parameter so one condition serves every type.
        self.push_withheld(sql);
    }

    /// The scope's own filters on `resource_type` (` AND (…)`), when its rule has any: search
    /// terms of any kind, so they may look at the resource row itself.
    pub(crate) fn push_type_filters(&self, store: &Store, sql: &mut Sql, resource_type: &str, now_ms: i64) {
        if let TypeRule::Filtered(filters) = self.types.rule(resource_type) {
            let request = filter_request(resource_type);
            let f = Filters { store, request: &request, now_ms, restriction: None };
            sql.push(" AND (");
            if filters.is_empty() {
                sql.push("1 = 0");
            }
            for (i, terms) in filters.iter().enumerate() {
                if i > 0 {
                    sql.push(" OR ");
                }
                sql.push("(1 = 1");
                for term in terms {
                    sql.push(" AND ");
                    f.push_term(sql, term, false);
                }
                sql.push(")");
            }
            sql.push(")");
        }
    }

    /// `EXISTS (… compartment of one of the patients …)` for row `r`.
    pub(crate) fn push_compartment_exists(&self, sql: &mut Sql) {
        let patients = self.patients.as_deref().map_or(&[][..], Vec::as_slice);
        if patients.is_empty() {
            sql.push("1 = 0");
            return;
        }
        sql.push("EXISTS (SELECT 1 FROM compartment c WHERE c.rkey = r.rkey AND c.patient_id IN ")
            .bind_list(patients.iter().map(String::as_str))
            .push(")");
    }

    /// `r.rkey IN (… compartment of one of the patients …)`: the compartment as the driving term.
    pub(crate) fn push_compartment_driver(&self, sql: &mut Sql) {
        let patients = self.patients.as_deref().map_or(&[][..], Vec::as_slice);
        if patients.is_empty() {
            sql.push("1 = 0");
            return;
        }
        sql.push("r.rkey IN (SELECT c.rkey FROM compartment c WHERE c.patient_id IN ")
            .bind_list(patients.iter().map(String::as_str))
            .push(")");
    }

    /// Conditions for a row `r` of any type among `types` (history and `$everything` across
    /// types). Types whose rule is "all" are grouped by whether the compartment applies; filtered
    /// types get a group each (their filter terms are per type).
    pub(crate) fn push_any_type(&self, store: &Store, sql: &mut Sql, types: &[&str], now_ms: i64) {
        let visible: Vec<&str> = types.iter().copied().filter(|t| self.type_visible(store.registry, t)).collect();
        let (mut in_compartment, mut shared, mut filtered) = (Vec::new(), Vec::new(), Vec::new());
        for t in visible {
            match self.types.rule(t) {
                TypeRule::Filtered(_) => filtered.push(t),
                _ if self.compartment_applies(store.registry, t) => in_compartment.push(t),
                _ => shared.push(t),
            }
        }
        sql.push(" AND (1 = 0");
        for (group, compartment) in [(&in_compartment, true), (&shared, false)] {
            if group.is_empty() {
                continue;
            }
            sql.push(" OR (r.rtype IN ").bind_list(group.iter().copied());
            if compartment {
                sql.push(" AND ");
                self.push_compartment_exists(sql);
            }
            self.push_withheld(sql);
            sql.push(")");
        }
        for t in filtered {
            sql.push(" OR (r.rtype = ").bind(t);
            self.push(store, sql, t, now_ms, false);
            sql.push(")");
        }
        sql.push(")");
    }

    fn push_withheld(&self, sql: &mut Sql) {
        if !self.withheld.is_empty() {
            sql.push(" AND NOT EXISTS (SELECT 1 FROM idx_token s WHERE s.rkey = r.rkey AND s.system = ")
                .bind(fhir::labels::V3_ACT_CODE)
                .push(" AND s.code IN ")
                .bind_list(self.withheld.iter().map(String::as_str))
                .push(")");
        }
    }
}

/// A request shell that lets the search term compiler build filter terms for `resource_type`.
fn filter_request(resource_type: &str) -> SearchRequest {
    SearchRequest {
        resource_type: resource_type.to_owned(),
        terms: Vec::new(),
        count: 0,
        sort: Vec::new(),
        includes: Vec::new(),
        revincludes: Vec::new(),
        summary: None,
        elements: None,
        total: TotalMode::None,
        cursor: None,
        ignored: Vec::new(),
    }
}
