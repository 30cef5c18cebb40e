use super::*;

const LAB: &str = "category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
const VITALS: &str = "category=http://terminology.hl7.org/CodeSystem/observation-category|vital-signs";

fn scope(text: &str) -> Scope {
    Scope::parse(text).unwrap_or_else(|| panic!("{text} should parse"))
}

fn clinical(text: &str) -> ClinicalScope {
    match scope(text) {
        Scope::Clinical(c) => c,
        other => panic!("{text} is not clinical: {other:?}"),
    }
}

/// A set from scopes that must all be understood.
fn set(text: &str) -> ScopeSet {
    let (set, dropped) = ScopeSet::parse(text);
    assert!(dropped.is_empty(), "{text}: dropped {dropped:?}");
    set
}

fn perms(letters: &str) -> Permissions {
    Permissions::from_v2(letters).unwrap_or_else(|| panic!("{letters}"))
}

#[test]
fn non_clinical_scopes() {
    let cases = [
        ("openid", Scope::OpenId),
        ("fhirUser", Scope::FhirUser),
        ("profile", Scope::Profile),
        ("launch", Scope::Launch),
        ("launch/patient", Scope::LaunchPatient),
        ("launch/encounter", Scope::LaunchEncounter),
        ("offline_access", Scope::OfflineAccess),
        ("online_access", Scope::OnlineAccess),
    ];
    for (text, expected) in cases {
        assert_eq!(Scope::parse(text), Some(expected.clone()), "{text}");
        assert_eq!(expected.to_string(), text);
    }
}

#[test]
fn clinical_scopes_parse_into_parts() {
    use Context::*;
    let any = ScopeResource::Any;
    let ty = |t: &str| ScopeResource::Type(t.to_owned());
    let cases = [
        // v1
        ("patient/Observation.read", Patient, ty("Observation"), Permissions::READ, Spelling::V1),
        ("patient/Observation.write", Patient, ty("Observation"), Permissions::WRITE, Spelling::V1),
        ("patient/Observation.*", Patient, ty("Observation"), Permissions::ALL, Spelling::V1),
        ("user/*.read", User, any.clone(), Permissions::READ, Spelling::V1),
        ("system/*.*", System, any.clone(), Permissions::ALL, Spelling::V1),
        // v2
        ("patient/Observation.rs", Patient, ty("Observation"), Permissions::READ, Spelling::V2),
        ("patient/Observation.cud", Patient, ty("Observation"), Permissions::WRITE, Spelling::V2),
        ("patient/*.cruds", Patient, any.clone(), Permissions::ALL, Spelling::V2),
        ("user/Condition.r", User, ty("Condition"), perms("r"), Spelling::V2),
        ("user/Condition.s", User, ty("Condition"), perms("s"), Spelling::V2),
        ("system/Patient.c", System, ty("Patient"), perms("c"), Spelling::V2),
        ("system/Patient.cd", System, ty("Patient"), perms("cd"), Spelling::V2),
        ("patient/ExplanationOfBenefit.crus", Patient, ty("ExplanationOfBenefit"), perms("crus"), Spelling::V2),
        ("user/*.u", User, any, perms("u"), Spelling::V2),
    ];
    for (text, context, resource, permissions, spelling) in cases {
        let c = clinical(text);
        assert_eq!(
            (c.context, &c.resource, c.permissions, c.spelling, c.query.is_none()),
            (context, &resource, permissions, spelling, true),
            "{text}"
        );
        assert_eq!(c.to_string(), text, "echoed as requested");
    }
}

#[test]
fn granular_scopes_parse_their_query() {
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            &[("category", "http://terminology.hl7.org/CodeSystem/observation-category|laboratory")],
        ),
        ("patient/Observation.rs?category=laboratory", &[("category", "laboratory")]),
        (
            "user/Observation.rs?category=laboratory&code=http://loinc.org|2345-7",
            &[("category", "laboratory"), ("code", "http://loinc.org|2345-7")],
        ),
        (
            "patient/Condition.r?category=problem-list-item,health-concern",
            &[("category", "problem-list-item,health-concern")],
        ),
        ("system/*.s?_security:not=R", &[("_security:not", "R")]),
    ];
    for (text, params) in cases {
        let c = clinical(text);
        let q = c.query.as_ref().unwrap_or_else(|| panic!("{text} has a query"));
        let got: Vec<(&str, &str)> = q.params.iter().map(|p| (p.name.as_str(), p.value.as_str())).collect();
        assert_eq!(&got, params, "{text}");
        assert_eq!(Some(q.raw.as_str()), text.split_once('?').map(|(_, raw)| raw));
        assert_eq!(c.to_string(), *text, "raw query echoed");
    }
    let lab = clinical(&format!("patient/Observation.rs?{LAB}")).query;
    assert_eq!(lab.as_ref().and_then(|q| q.param("category")), LAB.strip_prefix("category="));
}

#[test]
fn unknown_scopes_are_dropped_and_reported() {
    let unknown = [
        // Contexts and shapes
        "Patient/Observation.read",
        "practitioner/Observation.read",
        "patient/Observation",
        "patient/.read",
        "patient/Observation.",
        "patient/Observation.read.extra",
        "/Observation.read",
        "patient",
        // Resource types: not R4, wrong case, R5-only
        "patient/observation.read",
        "patient/Foo.read",
        "patient/Requirements.rs",
        "patient/**.read",
        // v1 words
        "patient/Observation.READ",
        "patient/Observation.readwrite",
        "patient/Observation.all",
        // v2 letters out of order, repeated, foreign, empty
        "patient/Observation.sr",
        "patient/Observation.rc",
        "patient/Observation.dc",
        "patient/Observation.scrud",
        "patient/Observation.rr",
        "patient/Observation.crudss",
        "patient/Observation.rx",
        "patient/Observation.R",
        "patient/Observation.cruds*",
        // Granular queries: malformed, or on a v1 permission
        "patient/Observation.rs?",
        "patient/Observation.rs?category",
        "patient/Observation.rs?category=",
        "patient/Observation.rs?=laboratory",
        "patient/Observation.rs?category=a&",
        "patient/Observation.rs?category=a&&code=b",
        "patient/Observation.rs?category=a?code=b",
        "patient/Observation.rs?category=a=b",
        "patient/Observation.read?category=laboratory",
        "patient/*.*?category=laboratory",
        // Near misses of the non-clinical ones
        "OpenID",
        "fhiruser",
        "launch/Patient",
        "launch/location",
        "offline",
        "online",
        "email",
    ];
    for text in unknown {
        assert_eq!(Scope::parse(text), None, "{text}");
    }
    let (granted, dropped) = ScopeSet::parse("openid  patient/Observation.sr\tlaunch/patient email patient/Foo.read");
    assert_eq!(granted.to_string(), "openid launch/patient");
    assert_eq!(dropped, ["patient/Observation.sr", "email", "patient/Foo.read"]);
    assert_eq!(ScopeSet::parse(""), (ScopeSet::default(), vec![]));
}

#[test]
fn v2_permission_letters() {
    let cases = [
        ("c", Some(1)),
        ("r", Some(2)),
        ("u", Some(4)),
        ("d", Some(8)),
        ("s", Some(16)),
        ("rs", Some(18)),
        ("cud", Some(13)),
        ("cruds", Some(31)),
        ("cs", Some(17)),
        ("", None),
        ("sr", None),
        ("cc", None),
        ("cruds ", None),
        ("CRUDS", None),
    ];
    for (text, bits) in cases {
        assert_eq!(Permissions::from_v2(text).map(|p| p.0), bits, "{text:?}");
        if let Some(p) = Permissions::from_v2(text) {
            assert_eq!(p.to_v2(), text);
        }
    }
    assert_eq!(Permissions::READ.to_v2(), "rs");
    assert_eq!(Permissions::WRITE.to_v2(), "cud");
    assert_eq!(Permissions::ALL.to_v2(), "cruds");
    assert_eq!(perms("rs").v1_word(), Some("read"));
    assert_eq!(perms("r").v1_word(), None);
    assert_eq!(Permissions::of(&[Interaction::Search, Interaction::Read]), Permissions::READ);
}

#[test]
fn permissions_allow_interactions() {
    use Interaction::*;
    // (permissions, interactions allowed)
    let cases: &[(&str, &[Interaction])] = &[
        ("read", &[Read, Search]),
        ("write", &[Create, Update, Delete]),
        ("*", &[Create, Read, Update, Delete, Search]),
        ("rs", &[Read, Search]),
        ("r", &[Read]),
        ("s", &[Search]),
        ("cu", &[Create, Update]),
        ("cruds", &[Create, Read, Update, Delete, Search]),
    ];
    for (text, allowed) in cases {
        let p = clinical(&format!("patient/Observation.{text}")).permissions;
        for i in Interaction::ALL {
            assert_eq!(p.allows(i), allowed.contains(&i), "{text} {i:?}");
        }
        assert_eq!(p.interactions().collect::<Vec<_>>(), *allowed);
    }
}

#[test]
fn canonical_round_trip() {
    let cases = [
        // Fixed order for non-clinical, then clinical by context, type (`*` first), permissions.
        ("offline_access openid launch fhirUser", "openid fhirUser launch offline_access"),
        (
            "user/Observation.rs patient/Observation.read patient/*.s openid",
            "openid patient/*.s patient/Observation.read user/Observation.rs",
        ),
        ("system/Patient.cruds system/*.read", "system/*.read system/Patient.cruds"),
        // Duplicates and same-meaning spellings collapse to the first one written.
        ("patient/Observation.read patient/Observation.read", "patient/Observation.read"),
        ("patient/Observation.rs patient/Observation.read", "patient/Observation.rs"),
        ("patient/Observation.read patient/Observation.rs", "patient/Observation.read"),
        ("patient/*.* patient/*.cruds", "patient/*.*"),
        (
            "patient/Observation.rs?category=a&code=b patient/Observation.rs?code=b&category=a",
            "patient/Observation.rs?category=a&code=b",
        ),
        // Different meanings are all kept.
        (
            &format!("patient/Observation.rs?{LAB} patient/Observation.rs"),
            &format!("patient/Observation.rs patient/Observation.rs?{LAB}"),
        ),
        ("launch/encounter launch/patient launch", "launch launch/patient launch/encounter"),
        ("online_access offline_access profile", "profile offline_access online_access"),
    ];
    for (input, canonical) in cases {
        let parsed = set(input);
        assert_eq!(parsed.to_string(), canonical, "{input}");
        assert_eq!(set(canonical), parsed, "canonical form re-parses to the same set");
        assert_eq!(set(canonical).to_string(), canonical, "stable");
    }
}

#[test]
fn subset_rules_for_refresh_narrowing() {
    let lab = format!("patient/Observation.rs?{LAB}");
    let vitals = format!("patient/Observation.rs?{VITALS}");
    let lab_or_vitals = "patient/Observation.rs?category=laboratory,vital-signs".to_owned();
    let lab_code = "patient/Observation.rs?category=laboratory&code=http://loinc.org|2345-7".to_owned();
    // (a, b, a ⊆ b, b ⊆ a)
    let cases: Vec<(&str, &str, bool, bool)> = vec![
        ("patient/Observation.rs", "patient/Observation.read", true, true),
        ("patient/Observation.r", "patient/Observation.read", true, false),
        ("patient/Observation.s", "patient/Observation.rs", true, false),
        ("patient/Observation.rs", "patient/*.cruds", true, false),
        ("patient/Observation.rs", "patient/*.read", true, false),
        ("patient/Observation.rs", "patient/*.*", true, false),
        ("patient/Observation.read", "patient/Observation.*", true, false),
        ("patient/Observation.cud", "patient/Observation.write", true, true),
        ("patient/Observation.c", "patient/Observation.write", true, false),
        ("patient/Observation.write", "patient/Observation.read", false, false),
        ("patient/Observation.rs", "patient/Observation.cu", false, false),
        ("patient/*.rs", "patient/*.cruds", true, false),
        ("patient/*.rs", "patient/Observation.cruds", false, false),
        ("patient/Observation.rs", "patient/Condition.rs", false, false),
        // Contexts never cover each other.
        ("patient/Observation.rs", "user/Observation.rs", false, false),
        ("user/Observation.rs", "system/*.cruds", false, false),
        ("user/Observation.r", "user/*.read", true, false),
        ("system/Patient.s", "system/*.*", true, false),
        // Granular: narrower than the same scope without a query, never the other way.
        (&lab, "patient/Observation.rs", true, false),
        (&lab, "patient/Observation.read", true, false),
        (&lab, "patient/*.cruds", true, false),
        (&lab, "patient/Observation.r", false, false),
        (&lab, &vitals, false, false),
        (&lab, &lab, true, true),
        ("patient/Observation.rs?category=laboratory", &lab_or_vitals, true, false),
        (&lab_code, "patient/Observation.rs?category=laboratory", true, false),
        (&lab_code, &lab_or_vitals, true, false),
        ("patient/Observation.r?category=laboratory", "patient/Observation.rs?category=laboratory", true, false),
        ("patient/Observation.rs?code=x", "patient/Observation.rs?category=laboratory", false, false),
        // Non-clinical scopes only cover themselves.
        ("openid", "openid", true, true),
        ("openid", "fhirUser", false, false),
        ("launch/patient", "launch", false, false),
        ("offline_access", "online_access", false, false),
        ("openid", "patient/*.*", false, false),
    ];
    assert!(cases.len() >= 20);
    for (a, b, a_in_b, b_in_a) in cases {
        let (sa, sb) = (scope(a), scope(b));
        assert_eq!(sa.is_subset_of(&sb), a_in_b, "{a} ⊆ {b}");
        assert_eq!(sb.is_subset_of(&sa), b_in_a, "{b} ⊆ {a}");
        assert_eq!(set(a).is_subset_of(&set(b)), a_in_b, "set {a} ⊆ {b}");
    }
}

#[test]
fn set_subset_needs_every_scope_covered() {
    let granted = set("openid fhirUser offline_access patient/Observation.read patient/Condition.rs");
    let cases = [
        ("", true),
        ("openid", true),
        ("patient/Observation.rs", true),
        ("patient/Observation.s patient/Condition.r offline_access", true),
        (&format!("patient/Observation.rs?{LAB}"), true),
        ("openid fhirUser offline_access patient/Observation.read patient/Condition.rs", true),
        ("patient/Observation.rs patient/Procedure.rs", false),
        ("patient/Observation.rs launch/patient", false),
        ("patient/*.rs", false),
        ("patient/Observation.c", false),
        ("online_access", false),
    ];
    for (request, expected) in cases {
        assert_eq!(set(request).is_subset_of(&granted), expected, "{request}");
    }
}

#[test]
fn narrowing_grants_at_most_what_was_requested_and_allowed() {
    let lab = format!("patient/Observation.rs?{LAB}");
    // (allowed, requested, granted)
    let cases: Vec<(&str, String, String)> = vec![
        ("patient/*.read", "patient/Observation.read".into(), "patient/Observation.read".into()),
        ("patient/*.cruds", "patient/Observation.read".into(), "patient/Observation.read".into()),
        // Requested spelling wins; permissions shrink to what is allowed.
        ("patient/*.rs", "patient/Observation.*".into(), "patient/Observation.read".into()),
        ("patient/*.r", "patient/Observation.*".into(), "patient/Observation.r".into()),
        ("patient/Observation.r", "patient/Observation.read".into(), "patient/Observation.r".into()),
        (
            "patient/Observation.rs patient/Condition.rs",
            "patient/*.read".into(),
            "patient/Condition.read patient/Observation.read".into(),
        ),
        ("patient/Observation.rs", "patient/Observation.write".into(), String::new()),
        ("user/*.rs", "patient/Observation.rs".into(), String::new()),
        // A granular request stays granular; a granular allowance narrows a plain request.
        ("patient/*.rs", lab.clone(), lab.clone()),
        (&lab, "patient/Observation.rs".into(), lab.clone()),
        (&lab, "patient/Observation.read".into(), lab.clone()),
        (&lab, format!("patient/Observation.rs?{VITALS}"), String::new()),
        (
            "patient/Observation.rs?category=laboratory,vital-signs",
            "patient/Observation.rs?category=laboratory".into(),
            "patient/Observation.rs?category=laboratory".into(),
        ),
        // Non-clinical scopes need both sides.
        (
            "openid fhirUser launch/patient",
            "openid profile launch/patient offline_access".into(),
            "openid launch/patient".into(),
        ),
        (
            "openid fhirUser offline_access patient/*.rs",
            "openid fhirUser offline_access patient/Patient.r patient/Observation.read patient/Observation.rs".into(),
            "openid fhirUser offline_access patient/Observation.read patient/Patient.r".into(),
        ),
        // Redundant results are folded into the broader one.
        (
            "patient/Observation.rs patient/Observation.r",
            "patient/Observation.read".into(),
            "patient/Observation.read".into(),
        ),
    ];
    for (allowed, requested, granted) in cases {
        let allowed_set = set(allowed);
        let requested_set = set(&requested);
        let result = allowed_set.narrow_to(&requested_set);
        assert_eq!(result.to_string(), granted, "allowed {allowed} / requested {requested}");
        assert!(result.is_subset_of(&allowed_set), "within allowed: {allowed} / {requested}");
        assert!(result.is_subset_of(&requested_set), "within requested: {allowed} / {requested}");
    }
}

#[test]
fn allows_answers_with_granular_filters() {
    use Context::*;
    use Interaction::*;
    let lab = format!("patient/Observation.rs?{LAB}");
    let vitals = format!("patient/Observation.rs?{VITALS}");
    let lab_filter = QueryFilter::parse(LAB).unwrap();
    let vitals_filter = QueryFilter::parse(VITALS).unwrap();
    let unrestricted = Some(vec![]);
    // (granted, context, type, interaction, answer)
    type Case<'a> = (String, Context, &'a str, Interaction, Option<Vec<QueryFilter>>);
    let cases: Vec<Case> = vec![
        // v1 read = r + s
        ("patient/Observation.read".into(), Patient, "Observation", Read, unrestricted.clone()),
        ("patient/Observation.read".into(), Patient, "Observation", Search, unrestricted.clone()),
        ("patient/Observation.read".into(), Patient, "Observation", Create, None),
        ("patient/Observation.read".into(), Patient, "Observation", Update, None),
        ("patient/Observation.read".into(), Patient, "Observation", Delete, None),
        // v1 write = c + u + d
        ("patient/Observation.write".into(), Patient, "Observation", Create, unrestricted.clone()),
        ("patient/Observation.write".into(), Patient, "Observation", Update, unrestricted.clone()),
        ("patient/Observation.write".into(), Patient, "Observation", Delete, unrestricted.clone()),
        ("patient/Observation.write".into(), Patient, "Observation", Read, None),
        ("patient/Observation.write".into(), Patient, "Observation", Search, None),
        // v1 * and v2 cruds = everything
        ("patient/*.*".into(), Patient, "Condition", Delete, unrestricted.clone()),
        ("patient/*.cruds".into(), Patient, "Patient", Create, unrestricted.clone()),
        // v2 single letters
        ("patient/Observation.r".into(), Patient, "Observation", Read, unrestricted.clone()),
        ("patient/Observation.r".into(), Patient, "Observation", Search, None),
        ("patient/Observation.s".into(), Patient, "Observation", Search, unrestricted.clone()),
        ("patient/Observation.s".into(), Patient, "Observation", Read, None),
        ("patient/Observation.u".into(), Patient, "Observation", Update, unrestricted.clone()),
        ("patient/Observation.u".into(), Patient, "Observation", Create, None),
        // Type and context must match.
        ("patient/Observation.rs".into(), Patient, "Condition", Read, None),
        ("patient/Observation.rs".into(), User, "Observation", Read, None),
        ("user/*.rs".into(), User, "Encounter", Search, unrestricted.clone()),
        ("system/*.rs".into(), Patient, "Encounter", Search, None),
        // Granular: only matching resources.
        (lab.clone(), Patient, "Observation", Search, Some(vec![lab_filter.clone()])),
        (lab.clone(), Patient, "Observation", Read, Some(vec![lab_filter.clone()])),
        (lab.clone(), Patient, "Observation", Create, None),
        (lab.clone(), Patient, "Condition", Read, None),
        (format!("{lab} {vitals}"), Patient, "Observation", Search, Some(vec![lab_filter.clone(), vitals_filter])),
        // A plain scope next to a granular one lifts the restriction…
        (format!("{lab} patient/Observation.s"), Patient, "Observation", Search, unrestricted.clone()),
        (format!("{lab} patient/*.rs"), Patient, "Observation", Read, unrestricted.clone()),
        // …but only for the interactions it grants.
        (format!("{lab} patient/Observation.s"), Patient, "Observation", Read, Some(vec![lab_filter])),
        // Non-clinical scopes allow no data access.
        ("openid fhirUser launch/patient offline_access".into(), Patient, "Patient", Read, None),
    ];
    for (granted, context, resource_type, interaction, expected) in cases {
        assert_eq!(
            set(&granted).allows(context, resource_type, interaction),
            expected,
            "{granted}: {context} {resource_type} {interaction:?}"
        );
    }
}

#[test]
fn context_flags() {
    // (scopes, patient, user, system, needs patient, offline, online)
    let cases = [
        ("openid fhirUser", false, false, false, false, false, false),
        ("patient/*.rs", true, false, false, true, false, false),
        ("launch/patient user/Observation.rs", false, true, false, true, false, false),
        ("user/*.* offline_access", false, true, false, false, true, false),
        ("system/*.rs", false, false, true, false, false, false),
        ("patient/Observation.r user/Patient.r system/Group.s online_access", true, true, true, true, false, true),
        ("launch launch/encounter", false, false, false, false, false, false),
    ];
    for (text, patient, user, system, needs_patient, offline, online) in cases {
        let s = set(text);
        assert_eq!(
            (
                s.has_patient_scopes(),
                s.has_user_scopes(),
                s.has_system_scopes(),
                s.needs_patient_context(),
                s.offline(),
                s.online()
            ),
            (patient, user, system, needs_patient, offline, online),
            "{text}"
        );
    }
}

#[test]
fn intersect_keeps_the_receivers_spelling() {
    let v1 = set("patient/Observation.read patient/Condition.*");
    let v2 = set("patient/*.rs");
    // Condition.* narrowed to rs is still sayable in v1: `read`.
    assert_eq!(v1.intersect(&v2).to_string(), "patient/Condition.read patient/Observation.read");
    assert_eq!(v2.intersect(&v1).to_string(), "patient/Condition.rs patient/Observation.rs");
    assert_eq!(
        set("patient/*.rs").intersect(&set("patient/Observation.read patient/Condition.r")).to_string(),
        "patient/Condition.r patient/Observation.rs"
    );
    // A v1 scope that can no longer be said in v1 (or gains a query) is printed in v2.
    let narrowed = set("patient/Observation.*").intersect(&set(&format!("patient/Observation.r?{LAB}")));
    assert_eq!(narrowed.to_string(), format!("patient/Observation.r?{LAB}"));
    assert_eq!(ScopeSet::parse(&narrowed.to_string()).1, Vec::<String>::new());
}
