//! Da Vinci HRex `$member-match`: a new health plan asks the member's old plan "which of your
//! members is this?", sending the member's demographics (`MemberPatient`), the old coverage as
//! the member reported it (`CoverageToMatch`), optionally the new coverage (`CoverageToLink`)
//! and the member's `Consent` to share. The old plan answers with the member's identifier
//! (`MemberIdentifier`) when exactly one member matches.
//!
//! The rules, in order (all must hold):
//! 1. **Demographics**: the same family name and birth date (candidates are searched by those),
//!    a given name in common when the request has one, the same gender when both say.
//! 2. **Coverage**: one of the candidate's Coverages (as beneficiary) has the `subscriberId` or
//!    one of the `identifier`s (`system|value`) of `CoverageToMatch`.
//! 3. **Consent**, when sent: active, and its policy one HRex defines (`#regular`: everything but
//!    sensitive data; `#sensitive`: everything).
//!
//! This module reads and checks; the search for candidates and their coverage is the caller's.

use serde_json::{json, Value};

/// The HRex consent policies (share everything but sensitive data; share everything).
pub const POLICY_REGULAR: &str = "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#regular";
pub const POLICY_SENSITIVE: &str =
    "http://hl7.org/fhir/us/davinci-hrex/StructureDefinition-hrex-consent.html#sensitive";
const IDENTIFIER_TYPE: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";

/// A checked `$member-match` request.
#[derive(Debug, Clone)]
pub struct MemberMatch {
    pub member: Value,
    pub coverage_to_match: Value,
    pub coverage_to_link: Option<Value>,
    pub consent: Option<Value>,
    family: String,
    birth_date: String,
}

fn lower(s: &str) -> String {
    s.trim().to_lowercase()
}

fn names(patient: &Value, part: &str) -> Vec<String> {
    patient["name"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|n| match &n[part] {
            Value::String(s) => vec![lower(s)],
            Value::Array(items) => items.iter().filter_map(Value::as_str).map(lower).collect(),
            _ => Vec::new(),
        })
        .filter(|s| !s.is_empty())
        .collect()
}

fn identifiers(r: &Value) -> Vec<(String, String)> {
    r["identifier"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| Some((i["system"].as_str()?.to_owned(), i["value"].as_str()?.trim().to_owned())))
        .collect()
}

impl MemberMatch {
    /// Read the request's Parameters. The error says what is wrong (a 400).
    pub fn parse(parameters: &Value) -> Result<MemberMatch, String> {
        if parameters["resourceType"] != "Parameters" {
            return Err("$member-match takes a Parameters resource".into());
        }
        let mut found: std::collections::BTreeMap<&str, Value> = std::collections::BTreeMap::new();
        for p in parameters["parameter"].as_array().into_iter().flatten() {
            let Some(name) = p["name"].as_str() else { return Err("a parameter has no name".into()) };
            let expected = match name {
                "MemberPatient" => "Patient",
                "CoverageToMatch" | "CoverageToLink" => "Coverage",
                "Consent" => "Consent",
                other => return Err(format!("$member-match has no parameter '{other}'")),
            };
            let resource = &p["resource"];
            if resource["resourceType"] != expected {
                return Err(format!("{name} must be a {expected} resource"));
            }
            if found.insert(name, resource.clone()).is_some() {
                return Err(format!("{name} is given more than once"));
            }
        }
        let member = found.remove("MemberPatient").ok_or("MemberPatient is required")?;
        let coverage_to_match = found.remove("CoverageToMatch").ok_or("CoverageToMatch is required")?;
        let family = names(&member, "family").into_iter().next().ok_or("MemberPatient needs a family name")?;
        let birth_date = member["birthDate"]
            .as_str()
            .filter(|d| crate::datetime::parse_range(d).is_some())
            .ok_or("MemberPatient needs a birthDate")?
            .to_owned();
        if coverage_to_match["subscriberId"].as_str().is_none_or(|s| s.trim().is_empty())
            && identifiers(&coverage_to_match).is_empty()
        {
            return Err("CoverageToMatch needs a subscriberId or an identifier with system and value".into());
        }
        Ok(MemberMatch {
            member,
            coverage_to_match,
            coverage_to_link: found.remove("CoverageToLink"),
            consent: found.remove("Consent"),
            family,
            birth_date,
        })
    }

    /// The Patient search that finds the candidates (`family`, `birthdate`).
    pub fn candidate_search(&self) -> Vec<(String, String)> {
        vec![("family".into(), self.family.clone()), ("birthdate".into(), self.birth_date.clone())]
    }

    /// Rule 1 on a candidate the search found.
    pub fn demographics_match(&self, patient: &Value) -> bool {
        if !names(patient, "family").contains(&self.family) || patient["birthDate"].as_str() != Some(&self.birth_date) {
            return false;
        }
        let wanted = names(&self.member, "given");
        if !wanted.is_empty() && !names(patient, "given").iter().any(|g| wanted.contains(g)) {
            return false;
        }
        match (self.member["gender"].as_str(), patient["gender"].as_str()) {
            (Some(a), Some(b)) => a == b,
            _ => true,
        }
    }

    /// Rule 2 on one of the candidate's Coverages.
    pub fn coverage_matches(&self, coverage: &Value) -> bool {
        let subscriber = |c: &Value| c["subscriberId"].as_str().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
        if let (Some(a), Some(b)) = (subscriber(&self.coverage_to_match), subscriber(coverage)) {
            if a == b {
                return true;
            }
        }
        let held = identifiers(coverage);
        identifiers(&self.coverage_to_match).iter().any(|i| held.contains(i))
    }

    /// Rule 3: why the consent is not one to act on (a 422), if it is not.
    pub fn consent_problem(&self) -> Option<String> {
        let consent = self.consent.as_ref()?;
        if consent["status"] != "active" {
            return Some("the Consent is not active".into());
        }
        let policies: Vec<&str> =
            consent["policy"].as_array().into_iter().flatten().filter_map(|p| p["uri"].as_str()).collect();
        if !policies.iter().any(|p| *p == POLICY_REGULAR || *p == POLICY_SENSITIVE) {
            return Some(format!("the Consent's policy must be {POLICY_REGULAR} or {POLICY_SENSITIVE}"));
        }
        None
    }

    /// Whether the member consented to sharing sensitive data too.
    pub fn shares_sensitive(&self) -> bool {
        self.consent.as_ref().is_some_and(|c| c["policy"].to_string().contains(POLICY_SENSITIVE))
    }
}

/// The member's identifier at this plan: its member-number identifier (type `MB`) when the
/// Patient has one, else its first identifier, else its id at `base`; always typed `MB`.
pub fn member_identifier(patient: &Value, base: &str) -> Value {
    let all = patient["identifier"].as_array().cloned().unwrap_or_default();
    let typed_mb = |i: &&Value| i["type"]["coding"].to_string().contains("\"MB\"");
    let chosen = all
        .iter()
        .find(typed_mb)
        .or_else(|| all.iter().find(|i| i["system"].is_string() && i["value"].is_string()))
        .cloned();
    let mut identifier = chosen.unwrap_or_else(|| {
        json!({"system": format!("{}/Patient", base.trim_end_matches('/')),
               "value": patient["id"].as_str().unwrap_or_default()})
    });
    identifier["type"] = json!({"coding": [{"system": IDENTIFIER_TYPE, "code": "MB", "display": "Member Number"}]});
    identifier
}

/// The operation's answer.
pub fn answer(identifier: Value) -> Value {
    json!({"resourceType": "Parameters", "parameter": [{"name": "MemberIdentifier", "valueIdentifier": identifier}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(extra: Vec<Value>) -> Value {
        let mut parameter = vec![
            json!({"name": "MemberPatient", "resource": {"resourceType": "Patient", "name": [{"family": "Member", "given": ["Alice"]}],
                "gender": "female", "birthDate": "1980-02-03"}}),
            json!({"name": "CoverageToMatch", "resource": {"resourceType": "Coverage", "status": "active", "subscriberId": "OLD-123",
                "beneficiary": {"reference": "Patient/1"}, "payor": [{"display": "Old Plan"}]}}),
        ];
        parameter.extend(extra);
        json!({"resourceType": "Parameters", "parameter": parameter})
    }

    #[test]
    fn demographics_and_coverage() {
        let m = MemberMatch::parse(&request(vec![])).unwrap();
        assert_eq!(m.candidate_search()[0], ("family".to_owned(), "member".to_owned()));
        let alice = json!({"resourceType": "Patient", "name": [{"family": "MEMBER", "given": ["alice", "B"]}], "gender": "female", "birthDate": "1980-02-03"});
        assert!(m.demographics_match(&alice));
        let mut other = alice.clone();
        other["birthDate"] = json!("1980-02-04");
        assert!(!m.demographics_match(&other), "another birth date");
        let mut other = alice.clone();
        other["name"][0]["given"] = json!(["Bob"]);
        assert!(!m.demographics_match(&other), "another given name");
        let mut other = alice.clone();
        other["gender"] = json!("male");
        assert!(!m.demographics_match(&other));
        assert!(m.coverage_matches(&json!({"resourceType": "Coverage", "subscriberId": " OLD-123 "})));
        assert!(!m.coverage_matches(&json!({"resourceType": "Coverage", "subscriberId": "OLD-124"})));
        let by_identifier = MemberMatch::parse(&json!({"resourceType": "Parameters", "parameter": [
            request(vec![])["parameter"][0].clone(),
            {"name": "CoverageToMatch", "resource": {"resourceType": "Coverage", "identifier": [{"system": "urn:plan", "value": "9"}]}}]}))
        .unwrap();
        assert!(by_identifier.coverage_matches(&json!({"identifier": [{"system": "urn:plan", "value": "9"}]})));
        assert!(!by_identifier.coverage_matches(&json!({"identifier": [{"system": "urn:other", "value": "9"}]})));
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let cases = [
            (json!({"resourceType": "Patient"}), "Parameters"),
            (
                json!({"resourceType": "Parameters", "parameter": [request(vec![])["parameter"][1].clone()]}),
                "MemberPatient",
            ),
            (
                json!({"resourceType": "Parameters", "parameter": [request(vec![])["parameter"][0].clone()]}),
                "CoverageToMatch",
            ),
            (request(vec![json!({"name": "Surprise", "resource": {"resourceType": "Patient"}})]), "Surprise"),
            (request(vec![json!({"name": "Consent", "resource": {"resourceType": "Patient"}})]), "Consent"),
        ];
        for (body, says) in cases {
            let e = MemberMatch::parse(&body).unwrap_err();
            assert!(e.contains(says), "{e}");
        }
        let mut no_birth = request(vec![]);
        no_birth["parameter"][0]["resource"]["birthDate"] = json!("soon");
        assert!(MemberMatch::parse(&no_birth).unwrap_err().contains("birthDate"));
    }

    #[test]
    fn consent_and_identifier() {
        let consent = |status: &str, policy: &str| {
            request(vec![json!({"name": "Consent", "resource": {"resourceType": "Consent", "status": status,
                "policy": [{"uri": policy}]}})])
        };
        assert_eq!(MemberMatch::parse(&consent("active", POLICY_REGULAR)).unwrap().consent_problem(), None);
        assert!(!MemberMatch::parse(&consent("active", POLICY_REGULAR)).unwrap().shares_sensitive());
        assert!(MemberMatch::parse(&consent("active", POLICY_SENSITIVE)).unwrap().shares_sensitive());
        assert!(MemberMatch::parse(&consent("inactive", POLICY_REGULAR)).unwrap().consent_problem().is_some());
        assert!(MemberMatch::parse(&consent("active", "urn:other")).unwrap().consent_problem().is_some());
        let id = member_identifier(
            &json!({"id": "p1", "identifier": [{"system": "urn:mrn", "value": "1"}, {"system": "urn:member", "value": "M-1",
                "type": {"coding": [{"system": IDENTIFIER_TYPE, "code": "MB"}]}}]}),
            "https://plan/fhir",
        );
        assert_eq!(id["value"], "M-1");
        let id = member_identifier(&json!({"id": "p1"}), "https://plan/fhir/");
        assert_eq!((id["system"].as_str(), id["value"].as_str()), (Some("https://plan/fhir/Patient"), Some("p1")));
        assert_eq!(id["type"]["coding"][0]["code"], "MB");
    }
}
