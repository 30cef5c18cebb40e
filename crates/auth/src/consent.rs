//! The authorization screen as data: what the person is offered for a request, and what their
//! answer grants. Pure, so the rules are tested here and the page only renders them.
//!
//! * Each requested permission is one line the person can untick. `openid`, `fhirUser` and
//!   `profile` share one line ("Know who you are"); `launch…` scopes are context, not
//!   permissions, and are kept as requested.
//! * An unrestricted Observation or Condition permission offers category-level choices: ticking
//!   only some categories grants one v2 granular scope per category
//!   (`patient/Observation.rs?category=…|laboratory`); ticking all keeps the unrestricted scope.
//! * Sensitive categories are withheld unless the person ticks them: sharing behavioral-health,
//!   substance-use, sexual-health or HIV records is a choice made explicitly (42 CFR Part 2 asks as
//!   much for substance-use treatment records).

use std::collections::{BTreeMap, BTreeSet};

use crate::describe::{describe, CATEGORY_NAMES};
use crate::scope::{ClinicalScope, QueryFilter, Scope, ScopeResource, ScopeSet, Spelling};
use crate::sensitivity::SensitiveCategory;

/// The form key of the identity line.
pub const IDENTITY_KEY: &str = "identity";

/// One category a person may choose for Observation or Condition access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CategoryOption {
    pub system: &'static str,
    pub code: &'static str,
    /// What a person calls it ("laboratory results").
    pub name: &'static str,
}

/// The categories offered for a resource type (empty for types without category choices).
pub fn category_options(resource_type: &str) -> Vec<CategoryOption> {
    CATEGORY_NAMES
        .iter()
        .filter(|(t, ..)| *t == resource_type)
        .map(|&(_, system, code, name)| CategoryOption { system, code, name })
        .collect()
}

/// One line of the authorization screen.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentItem {
    /// The form value of its checkbox: [`IDENTITY_KEY`] or the scope's canonical text.
    pub key: String,
    pub description: String,
    /// What ticking it grants.
    pub scopes: Vec<Scope>,
    /// Category-level choices (non-empty only for unrestricted Observation/Condition access).
    pub categories: Vec<CategoryOption>,
    /// Long-lived access, shown with a plain warning.
    pub long_lived: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsentOffer {
    pub items: Vec<ConsentItem>,
    /// Context scopes kept without asking (`launch`, `launch/patient`, `launch/encounter`).
    pub implicit: Vec<Scope>,
}

impl ConsentOffer {
    /// Does the request ask for `offline_access` (access that outlives the session)?
    pub fn asks_offline(&self) -> bool {
        self.items.iter().any(|i| i.scopes.contains(&Scope::OfflineAccess))
    }

    /// Does any line reach clinical records (so the sensitive-category choice matters)?
    pub fn reaches_records(&self) -> bool {
        self.items.iter().any(|i| i.scopes.iter().any(|s| matches!(s, Scope::Clinical(_))))
    }
}

/// What the person ticked.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsentAnswer {
    /// Keys of the ticked lines.
    pub kept: BTreeSet<String>,
    /// Per line key, the category codes ticked (lines with categories only).
    pub categories: BTreeMap<String, BTreeSet<String>>,
    /// Sensitive categories the person chose to share.
    pub shared_sensitive: BTreeSet<SensitiveCategory>,
}

impl ConsentAnswer {
    /// Everything offered, ticked (sensitive categories stay withheld unless listed).
    pub fn accept_all(offer: &ConsentOffer) -> ConsentAnswer {
        let mut answer = ConsentAnswer::default();
        for item in &offer.items {
            answer.kept.insert(item.key.clone());
            if !item.categories.is_empty() {
                answer.categories.insert(item.key.clone(), item.categories.iter().map(|c| c.code.to_owned()).collect());
            }
        }
        answer
    }
}

/// The outcome: the scopes to grant and the categories withheld.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentDecision {
    pub granted: ScopeSet,
    pub withheld: Vec<SensitiveCategory>,
}

/// The lines to show for `requested` (already limited to what the client may have).
pub fn offer(requested: &ScopeSet) -> ConsentOffer {
    let mut items: Vec<ConsentItem> = Vec::new();
    let mut implicit = Vec::new();
    let mut identity: Vec<Scope> = Vec::new();
    for scope in requested.iter() {
        match scope {
            Scope::OpenId | Scope::FhirUser | Scope::Profile => identity.push(scope.clone()),
            Scope::Launch | Scope::LaunchPatient | Scope::LaunchEncounter => implicit.push(scope.clone()),
            Scope::OfflineAccess | Scope::OnlineAccess => items.push(ConsentItem {
                key: scope.to_string(),
                description: describe(scope),
                scopes: vec![scope.clone()],
                categories: Vec::new(),
                long_lived: *scope == Scope::OfflineAccess,
            }),
            Scope::Clinical(c) => {
                let categories = match (&c.resource, &c.query) {
                    (ScopeResource::Type(t), None) => category_options(t),
                    _ => Vec::new(),
                };
                items.push(ConsentItem {
                    key: scope.to_string(),
                    description: describe(scope),
                    scopes: vec![scope.clone()],
                    categories,
                    long_lived: false,
                });
            }
        }
    }
    if !identity.is_empty() {
        items.insert(
            0,
            ConsentItem {
                key: IDENTITY_KEY.to_owned(),
                description: describe(&Scope::OpenId),
                scopes: identity,
                categories: Vec::new(),
                long_lived: false,
            },
        );
    }
    // Clinical lines first (what is shared), then identity, then how long.
    items.sort_by_key(|i| match i.scopes.first() {
        Some(Scope::Clinical(_)) => 0,
        Some(Scope::OpenId | Scope::FhirUser | Scope::Profile) => 1,
        _ => 2,
    });
    ConsentOffer { items, implicit }
}

/// What `answer` grants out of `offer`. Keys and codes that were not offered are ignored, so a
/// tampered form can only grant less.
pub fn decide(offer: &ConsentOffer, answer: &ConsentAnswer) -> ConsentDecision {
    let mut granted: Vec<Scope> = offer.implicit.clone();
    for item in offer.items.iter().filter(|i| answer.kept.contains(&i.key)) {
        if item.categories.is_empty() {
            granted.extend(item.scopes.iter().cloned());
            continue;
        }
        let ticked = answer.categories.get(&item.key);
        let chosen: Vec<&CategoryOption> =
            item.categories.iter().filter(|c| ticked.is_some_and(|t| t.contains(c.code))).collect();
        if chosen.len() == item.categories.len() {
            granted.extend(item.scopes.iter().cloned());
            continue;
        }
        for scope in &item.scopes {
            let Scope::Clinical(c) = scope else { continue };
            for category in &chosen {
                let raw = format!("category={}|{}", category.system, category.code);
                if let Some(query) = QueryFilter::parse(&raw) {
                    granted.push(Scope::Clinical(ClinicalScope {
                        query: Some(query),
                        spelling: Spelling::V2,
                        ..c.clone()
                    }));
                }
            }
        }
    }
    let withheld = SensitiveCategory::ALL.into_iter().filter(|c| !answer.shared_sensitive.contains(c)).collect();
    ConsentDecision { granted: granted.into_iter().collect(), withheld }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scopes(text: &str) -> ScopeSet {
        ScopeSet::parse(text).0
    }

    #[test]
    fn lines_for_a_typical_patient_app() {
        let offer = offer(&scopes(
            "launch/patient openid fhirUser offline_access patient/Observation.rs patient/Patient.r patient/Condition.read",
        ));
        let keys: Vec<&str> = offer.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(
            keys,
            ["patient/Condition.read", "patient/Observation.rs", "patient/Patient.r", "identity", "offline_access"]
        );
        assert_eq!(offer.implicit, vec![Scope::LaunchPatient]);
        assert!(offer.asks_offline());
        assert!(offer.reaches_records());
        let obs = &offer.items[1];
        assert_eq!(obs.description, "Read and search your test results and measurements");
        assert_eq!(obs.categories.len(), 9);
        assert_eq!(obs.categories[0].code, "laboratory");
        assert_eq!(offer.items[0].categories.len(), 4, "Condition categories");
        assert!(offer.items[2].categories.is_empty(), "Patient has no categories");
        assert!(offer.items[4].long_lived);
    }

    #[test]
    fn accepting_everything_grants_the_request_and_withholds_sensitive_data() {
        let requested = scopes("launch/patient openid fhirUser patient/Observation.rs patient/Patient.r");
        let offer = offer(&requested);
        let decision = decide(&offer, &ConsentAnswer::accept_all(&offer));
        assert_eq!(decision.granted, requested);
        assert_eq!(decision.withheld, SensitiveCategory::ALL.to_vec());
    }

    #[test]
    fn unticking_lines_and_sharing_a_sensitive_category() {
        let offer = offer(&scopes("openid fhirUser offline_access patient/Observation.rs patient/Patient.r"));
        let mut answer = ConsentAnswer::accept_all(&offer);
        answer.kept.remove("offline_access");
        answer.kept.remove("identity");
        answer.shared_sensitive.insert(SensitiveCategory::BehavioralHealth);
        let decision = decide(&offer, &answer);
        assert_eq!(decision.granted.to_string(), "patient/Observation.rs patient/Patient.r");
        assert_eq!(
            decision.withheld,
            [SensitiveCategory::SubstanceUse, SensitiveCategory::SexualAndReproductive, SensitiveCategory::Hiv]
        );
    }

    #[test]
    fn choosing_some_categories_grants_granular_scopes() {
        let offer = offer(&scopes("patient/Observation.read patient/Condition.rs"));
        let mut answer = ConsentAnswer::accept_all(&offer);
        answer.categories.insert(
            "patient/Observation.read".into(),
            ["laboratory", "vital-signs", "made-up"].into_iter().map(String::from).collect(),
        );
        answer.categories.insert("patient/Condition.rs".into(), BTreeSet::new());
        let decision = decide(&offer, &answer);
        assert_eq!(
            decision.granted.to_string(),
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory \
             patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs"
        );
        // Granted scopes narrow what was asked.
        assert!(decision.granted.is_subset_of(&scopes("patient/Observation.read patient/Condition.rs")));
    }

    #[test]
    fn a_tampered_form_cannot_grant_more() {
        let offer = offer(&scopes("patient/Patient.r"));
        let mut answer = ConsentAnswer::default();
        answer.kept.insert("patient/*.cruds".into());
        answer.kept.insert("patient/Patient.r".into());
        answer.kept.insert("system/*.rs".into());
        assert_eq!(decide(&offer, &answer).granted.to_string(), "patient/Patient.r");
        assert!(decide(&offer, &ConsentAnswer::default()).granted.is_empty());
    }

    #[test]
    fn granular_requests_have_no_further_choices() {
        let offer = offer(&scopes(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
        ));
        assert!(offer.items[0].categories.is_empty());
        assert_eq!(offer.items[0].description, "Read and search your laboratory results");
    }
}
