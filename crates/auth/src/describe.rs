//! Plain-language descriptions of scopes for the consent screen. The person deciding is usually a
//! patient, not a developer, so this says what the app could do with which records ("Read and
//! search your laboratory results"), never `patient/Observation.rs?category=…`.

use crate::scope::{ClinicalScope, Context, Interaction, QueryFilter, QueryParam, Scope, ScopeResource};

pub(crate) const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub(crate) const CONDITION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
pub(crate) const US_CORE_CONDITION_CATEGORY: &str = "http://hl7.org/fhir/us/core/CodeSystem/condition-category";

/// (resource type, what a person calls those records).
const FRIENDLY_NAMES: &[(&str, &str)] = &[
    ("AllergyIntolerance", "allergies"),
    ("Appointment", "appointments"),
    ("CarePlan", "care plans"),
    ("CareTeam", "care teams"),
    ("Claim", "claims"),
    ("Condition", "conditions (problems and diagnoses)"),
    ("Coverage", "insurance coverage"),
    ("Device", "medical devices"),
    ("DiagnosticReport", "reports"),
    ("DocumentReference", "documents"),
    ("Encounter", "visits"),
    ("ExplanationOfBenefit", "claims and payments (explanations of benefit)"),
    ("FamilyMemberHistory", "family health history"),
    ("Goal", "health goals"),
    ("ImagingStudy", "imaging studies"),
    ("Immunization", "immunizations"),
    ("Location", "care locations"),
    ("Medication", "medication details"),
    ("MedicationAdministration", "medications given"),
    ("MedicationDispense", "medication fills"),
    ("MedicationRequest", "medications"),
    ("MedicationStatement", "medications"),
    ("Observation", "test results and measurements"),
    ("Organization", "healthcare organizations' details"),
    ("Patient", "demographics"),
    ("Practitioner", "care providers' details"),
    ("PractitionerRole", "care providers' roles"),
    ("Procedure", "procedures"),
    ("Provenance", "record history (who entered what)"),
    ("QuestionnaireResponse", "questionnaire answers"),
    ("ServiceRequest", "orders and referrals"),
];

/// (resource type, code system, code, name) for the `category` of a granular scope.
pub(crate) const CATEGORY_NAMES: &[(&str, &str, &str, &str)] = &[
    ("Observation", OBSERVATION_CATEGORY, "laboratory", "laboratory results"),
    ("Observation", OBSERVATION_CATEGORY, "vital-signs", "vital signs"),
    ("Observation", OBSERVATION_CATEGORY, "social-history", "social history (such as smoking and alcohol use)"),
    ("Observation", OBSERVATION_CATEGORY, "survey", "survey and questionnaire answers"),
    ("Observation", OBSERVATION_CATEGORY, "imaging", "imaging results"),
    ("Observation", OBSERVATION_CATEGORY, "exam", "physical exam findings"),
    ("Observation", OBSERVATION_CATEGORY, "procedure", "procedure results"),
    ("Observation", OBSERVATION_CATEGORY, "therapy", "therapy results"),
    ("Observation", OBSERVATION_CATEGORY, "activity", "activity and fitness measurements"),
    ("Condition", CONDITION_CATEGORY, "problem-list-item", "problem list"),
    ("Condition", CONDITION_CATEGORY, "encounter-diagnosis", "visit diagnoses"),
    ("Condition", US_CORE_CONDITION_CATEGORY, "health-concern", "health concerns"),
    ("Condition", US_CORE_CONDITION_CATEGORY, "sdoh", "social needs (such as housing and food)"),
];

/// What a person calls records of `resource_type` ("test results and measurements" for
/// Observation); for types without a table entry, the type name split into words plus "records"
/// ("family member history records"), which is plain enough for the rare ones.
pub fn resource_friendly_name(resource_type: &str) -> String {
    match FRIENDLY_NAMES.iter().find(|(t, _)| *t == resource_type) {
        Some((_, name)) => (*name).to_owned(),
        None => format!("{} records", split_camel_case(resource_type)),
    }
}

/// One line for the consent screen.
pub fn describe(scope: &Scope) -> String {
    match scope {
        Scope::OpenId | Scope::FhirUser | Scope::Profile => "Know who you are (name and role)".to_owned(),
        Scope::Launch => "Start from within your health record system and know what is open there".to_owned(),
        Scope::LaunchPatient => "Know which patient's records you choose to share".to_owned(),
        Scope::LaunchEncounter => "Know which visit is being looked at".to_owned(),
        Scope::OfflineAccess => "Keep access when you are not using the app (until you revoke it)".to_owned(),
        Scope::OnlineAccess => "Keep access while you are signed in and using the app".to_owned(),
        Scope::Clinical(c) => describe_clinical(c),
    }
}

fn describe_clinical(scope: &ClinicalScope) -> String {
    let verbs = verb_phrase(scope);
    let (noun, leftover) = match (&scope.resource, &scope.query) {
        (ScopeResource::Type(t), Some(q)) => match category_noun(t, q) {
            Some((noun, rest)) => (Some(noun), rest),
            None => (None, q.params.iter().collect()),
        },
        (_, Some(q)) => (None, q.params.iter().collect()),
        (_, None) => (None, Vec::new()),
    };
    let object = match (&scope.resource, scope.context) {
        (ScopeResource::Any, Context::Patient) => "all of your health records".to_owned(),
        (ScopeResource::Any, Context::User) => "all health records you can access".to_owned(),
        (ScopeResource::Any, Context::System) => "all health records, for any patient".to_owned(),
        (ScopeResource::Type(t), context) => {
            let noun = noun.unwrap_or_else(|| resource_friendly_name(t));
            match context {
                Context::Patient => format!("your {noun}"),
                // Outside a patient's own view "demographics" alone is unclear whose.
                Context::User if t == "Patient" => "patient demographics you can access".to_owned(),
                Context::User => format!("{noun} you can access"),
                Context::System if t == "Patient" => "patient demographics, for any patient".to_owned(),
                Context::System => format!("{noun}, for any patient"),
            }
        }
    };
    if leftover.is_empty() {
        format!("{verbs} {object}")
    } else {
        let limits: Vec<String> = leftover.iter().map(|p| format!("{}={}", p.name, p.value)).collect();
        format!("{verbs} {object} (only records matching {})", limits.join(" and "))
    }
}

/// "Read and search", "Create and change", … in the order a person thinks of them: looking before
/// changing.
fn verb_phrase(scope: &ClinicalScope) -> String {
    let order = [Interaction::Read, Interaction::Search, Interaction::Create, Interaction::Update, Interaction::Delete];
    let words: Vec<&str> = order
        .into_iter()
        .filter(|i| scope.permissions.allows(*i))
        .map(|i| match i {
            Interaction::Read => "read",
            Interaction::Search => "search",
            Interaction::Create => "create",
            Interaction::Update => "change",
            Interaction::Delete => "delete",
        })
        .collect();
    capitalize(&join_and(&words))
}

/// When the query's `category` names known categories, the records' name ("laboratory results")
/// and the parameters still to be mentioned.
fn category_noun<'q>(resource_type: &str, query: &'q QueryFilter) -> Option<(String, Vec<&'q QueryParam>)> {
    let category = query.params.iter().find(|p| p.name == "category")?;
    let names = category
        .alternatives()
        .map(|value| {
            let (system, code) = match value.split_once('|') {
                Some((system, code)) => (Some(system), code),
                None => (None, value),
            };
            CATEGORY_NAMES
                .iter()
                .find(|(t, s, c, _)| *t == resource_type && *c == code && system.is_none_or(|sys| sys == *s))
                .map(|(_, _, _, name)| *name)
        })
        .collect::<Option<Vec<&str>>>()?;
    let rest = query.params.iter().filter(|p| !std::ptr::eq(*p, category)).collect();
    Some((join_and(&names), rest))
}

fn join_and(words: &[&str]) -> String {
    match words {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn split_camel_case(name: &str) -> String {
    let mut out = String::new();
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push(' ');
        }
        out.push(c.to_ascii_lowercase());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> String {
        let scope = Scope::parse(text).unwrap_or_else(|| panic!("{text} should parse"));
        describe(&scope)
    }

    #[test]
    fn descriptions_read_like_plain_language() {
        let cases = [
            (
                "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
                "Read and search your laboratory results",
            ),
            ("patient/Condition.r", "Read your conditions (problems and diagnoses)"),
            ("patient/Condition.read", "Read and search your conditions (problems and diagnoses)"),
            ("patient/MedicationRequest.cu", "Create and change your medications"),
            ("patient/MedicationRequest.write", "Create, change and delete your medications"),
            ("patient/*.read", "Read and search all of your health records"),
            ("patient/*.*", "Read, search, create, change and delete all of your health records"),
            ("patient/Patient.r", "Read your demographics"),
            ("patient/AllergyIntolerance.rs", "Read and search your allergies"),
            ("patient/Immunization.s", "Search your immunizations"),
            ("patient/Encounter.read", "Read and search your visits"),
            ("patient/ExplanationOfBenefit.rs", "Read and search your claims and payments (explanations of benefit)"),
            ("patient/Coverage.rs", "Read and search your insurance coverage"),
            ("patient/DocumentReference.d", "Delete your documents"),
            ("patient/FamilyMemberHistory.rs", "Read and search your family health history"),
            ("patient/RiskAssessment.rs", "Read and search your risk assessment records"),
            (
                "patient/Observation.rs?category=vital-signs",
                "Read and search your vital signs",
            ),
            (
                "patient/Observation.rs?category=laboratory,vital-signs",
                "Read and search your laboratory results and vital signs",
            ),
            (
                "patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|problem-list-item",
                "Read and search your problem list",
            ),
            (
                "patient/Condition.rs?category=http://hl7.org/fhir/us/core/CodeSystem/condition-category|health-concern",
                "Read and search your health concerns",
            ),
            (
                "patient/Condition.rs?category=http://terminology.hl7.org/CodeSystem/condition-category|encounter-diagnosis",
                "Read and search your visit diagnoses",
            ),
            // A category from an unknown system is not guessed at.
            (
                "patient/Observation.rs?category=http://example.org|laboratory",
                "Read and search your test results and measurements (only records matching category=http://example.org|laboratory)",
            ),
            (
                "patient/Observation.rs?category=laboratory&date=ge2020",
                "Read and search your laboratory results (only records matching date=ge2020)",
            ),
            ("user/Observation.rs", "Read and search test results and measurements you can access"),
            ("user/*.rs", "Read and search all health records you can access"),
            ("user/Patient.r", "Read patient demographics you can access"),
            ("system/Observation.rs", "Read and search test results and measurements, for any patient"),
            ("system/*.read", "Read and search all health records, for any patient"),
            ("openid", "Know who you are (name and role)"),
            ("fhirUser", "Know who you are (name and role)"),
            ("profile", "Know who you are (name and role)"),
            ("offline_access", "Keep access when you are not using the app (until you revoke it)"),
            ("online_access", "Keep access while you are signed in and using the app"),
            ("launch/patient", "Know which patient's records you choose to share"),
        ];
        for (scope, expected) in cases {
            assert_eq!(one(scope), expected, "{scope}");
        }
    }

    #[test]
    fn friendly_names_cover_the_common_types() {
        let cases = [
            ("Observation", "test results and measurements"),
            ("Condition", "conditions (problems and diagnoses)"),
            ("MedicationRequest", "medications"),
            ("AllergyIntolerance", "allergies"),
            ("Immunization", "immunizations"),
            ("Encounter", "visits"),
            ("Procedure", "procedures"),
            ("DiagnosticReport", "reports"),
            ("DocumentReference", "documents"),
            ("CarePlan", "care plans"),
            ("Coverage", "insurance coverage"),
            ("ExplanationOfBenefit", "claims and payments (explanations of benefit)"),
            ("Claim", "claims"),
            ("NutritionOrder", "nutrition order records"),
        ];
        for (t, expected) in cases {
            assert_eq!(resource_friendly_name(t), expected, "{t}");
        }
        assert!(FRIENDLY_NAMES.windows(2).all(|w| w[0].0 < w[1].0), "keep the table sorted");
        assert!(FRIENDLY_NAMES.iter().all(|(t, _)| crate::is_r4_resource_type(t)));
    }

    #[test]
    fn a_scope_set_describes_each_meaning_once() {
        let (set, _) = crate::ScopeSet::parse("openid fhirUser profile offline_access patient/Condition.rs");
        assert_eq!(
            set.describe(),
            [
                "Know who you are (name and role)",
                "Keep access when you are not using the app (until you revoke it)",
                "Read and search your conditions (problems and diagnoses)",
            ]
        );
    }
}
