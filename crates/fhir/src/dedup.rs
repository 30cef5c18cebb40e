//! When two records are the same real-world thing — the same immunization, condition,
//! medication, lab result or encounter seen at a clinic and in a health plan's claims-derived
//! data. A record's **match keys** are computed from its own fields; two records of one person
//! are the same when they share a key. The rules, in order:
//!
//! 1. **Shared identifiers**: the same `system|value` identifier on two records of one type.
//! 2. **Per type** (codes compared as `system|code`, any coding in common; "day" is the date as
//!    written, `YYYY-MM-DD`; "minute" is the instant in UTC to the minute):
//!
//! | type | same when |
//! |---|---|
//! | Immunization | vaccine code, occurrence day |
//! | Condition | code, onset day (or, with no onset, recorded day) |
//! | MedicationRequest | medication code, authored day |
//! | MedicationStatement | medication code, effective (start) day |
//! | Procedure | code, performed (start) day |
//! | Observation | code, effective minute, value (quantity value and unit, coded value, text, or the components' codes and values) |
//! | Encounter | class, start minute |
//! | AllergyIntolerance | substance code |
//!
//! A record without what its rule needs (no date, no code) is matched by identifiers only: near
//! misses stay apart — the same code on another day, the same day with another code, the same
//! lab at the same time with another value. Patients are not merged: within one person's fetch
//! every portal's records are that person's, and each portal's Patient is kept.

use serde_json::Value;

/// The types whose records may be merged.
pub const MERGED_TYPES: &[&str] = &[
    "Immunization",
    "Condition",
    "MedicationRequest",
    "MedicationStatement",
    "Procedure",
    "Observation",
    "Encounter",
    "AllergyIntolerance",
];

/// The top-level fields the rules read (so callers can hand over just those).
pub const FIELDS: &[&str] = &[
    "resourceType",
    "identifier",
    "vaccineCode",
    "code",
    "medicationCodeableConcept",
    "occurrenceDateTime",
    "onsetDateTime",
    "onsetPeriod",
    "recordedDate",
    "authoredOn",
    "effectiveDateTime",
    "effectivePeriod",
    "effectiveInstant",
    "performedDateTime",
    "performedPeriod",
    "period",
    "class",
    "valueQuantity",
    "valueCodeableConcept",
    "valueString",
    "valueBoolean",
    "valueInteger",
    "component",
];

fn codes(concept: Option<&Value>) -> Vec<String> {
    concept
        .and_then(|c| c.get("coding"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let code = c.get("code").and_then(Value::as_str)?;
            let system = c.get("system").and_then(Value::as_str).unwrap_or_default();
            Some(format!("{}|{code}", system.trim_end_matches('/')))
        })
        .collect()
}

fn text<'a>(r: &'a Value, path: &[&str]) -> Option<&'a str> {
    let mut v = r;
    for k in path {
        v = v.get(k)?;
    }
    v.as_str()
}

/// `YYYY-MM-DD` of a date or dateTime as written.
fn day(s: Option<&str>) -> Option<String> {
    let s = s?;
    (s.len() >= 10 && crate::datetime::parse_range(s).is_some()).then(|| s[..10].to_owned())
}

/// The instant to the minute, in UTC (a value without time gives its day).
fn minute(s: Option<&str>) -> Option<String> {
    let s = s?;
    let range = crate::datetime::parse_range(s)?;
    if s.len() <= 10 {
        return Some(s.to_owned());
    }
    Some((range.start / 60_000).to_string())
}

fn number(v: &Value) -> Option<String> {
    let n = v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))?;
    // Six significant digits: 5.80 and 5.8 are one value.
    let text = format!("{n:.6}");
    Some(text.trim_end_matches('0').trim_end_matches('.').to_owned())
}

fn quantity(q: &Value) -> Option<String> {
    let value = number(q.get("value")?)?;
    let unit = q.get("code").or_else(|| q.get("unit")).and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    Some(format!("{value} {unit}"))
}

fn observation_value(r: &Value) -> String {
    if let Some(q) = r.get("valueQuantity").and_then(quantity) {
        return q;
    }
    let coded = codes(r.get("valueCodeableConcept"));
    if !coded.is_empty() {
        let mut c = coded;
        c.sort();
        return c.join(",");
    }
    for key in ["valueString", "valueBoolean", "valueInteger"] {
        if let Some(v) = r.get(key) {
            return v.to_string();
        }
    }
    let mut parts: Vec<String> = r
        .get("component")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let mut code = codes(c.get("code"));
            code.sort();
            format!("{}={}", code.join(","), observation_value(c))
        })
        .collect();
    parts.sort();
    parts.join(";")
}

/// A record's match keys (empty: it is never merged).
pub fn match_keys(r: &Value) -> Vec<String> {
    let t = r.get("resourceType").and_then(Value::as_str).unwrap_or_default();
    if !MERGED_TYPES.contains(&t) {
        return Vec::new();
    }
    let mut keys: Vec<String> = r
        .get("identifier")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| {
            let value = i.get("value").and_then(Value::as_str)?;
            let system = i.get("system").and_then(Value::as_str)?;
            Some(format!("{t}|id|{system}|{value}"))
        })
        .collect();
    let with = |codes: Vec<String>, when: Option<String>, extra: &str| -> Vec<String> {
        match when {
            Some(w) => codes.into_iter().map(|c| format!("{t}|rule|{c}|{w}|{extra}")).collect(),
            None => Vec::new(),
        }
    };
    let rule = match t {
        "Immunization" => with(codes(r.get("vaccineCode")), day(text(r, &["occurrenceDateTime"])), ""),
        "Condition" => {
            let when = day(text(r, &["onsetDateTime"]).or_else(|| text(r, &["onsetPeriod", "start"])))
                .or_else(|| day(text(r, &["recordedDate"])));
            with(codes(r.get("code")), when, "")
        }
        "MedicationRequest" => with(codes(r.get("medicationCodeableConcept")), day(text(r, &["authoredOn"])), ""),
        "MedicationStatement" => with(
            codes(r.get("medicationCodeableConcept")),
            day(text(r, &["effectiveDateTime"]).or_else(|| text(r, &["effectivePeriod", "start"]))),
            "",
        ),
        "Procedure" => with(
            codes(r.get("code")),
            day(text(r, &["performedDateTime"]).or_else(|| text(r, &["performedPeriod", "start"]))),
            "",
        ),
        "Observation" => {
            let when = minute(
                text(r, &["effectiveDateTime"])
                    .or_else(|| text(r, &["effectiveInstant"]))
                    .or_else(|| text(r, &["effectivePeriod", "start"])),
            );
            with(codes(r.get("code")), when, &observation_value(r))
        }
        "Encounter" => {
            let class =
                r.get("class").and_then(|c| c.get("code")).and_then(Value::as_str).map(|c| format!("class|{c}"));
            with(class.into_iter().collect(), minute(text(r, &["period", "start"])), "")
        }
        "AllergyIntolerance" => codes(r.get("code")).into_iter().map(|c| format!("{t}|rule|{c}")).collect(),
        _ => Vec::new(),
    };
    keys.extend(rule);
    keys.sort();
    keys.dedup();
    keys
}

/// Are two records the same thing?
pub fn same(a: &Value, b: &Value) -> bool {
    let kb = match_keys(b);
    match_keys(a).iter().any(|k| kb.contains(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cvx(code: &str, date: &str) -> Value {
        json!({"resourceType": "Immunization", "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": code}]}, "occurrenceDateTime": date})
    }

    fn lab(code: &str, when: &str, value: f64, unit: &str) -> Value {
        json!({"resourceType": "Observation", "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
               "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": unit, "code": unit, "system": "http://unitsofmeasure.org"}})
    }

    /// The table: (what, a, b, the same?).
    #[test]
    fn matches_and_near_misses() {
        let cases: Vec<(&str, Value, Value, bool)> = vec![
            (
                "same vaccine, same day (one with a time)",
                cvx("140", "2021-10-01"),
                cvx("140", "2021-10-01T09:30:00-04:00"),
                true,
            ),
            ("same vaccine, another day", cvx("140", "2021-10-01"), cvx("140", "2021-10-02"), false),
            ("another vaccine, same day", cvx("140", "2021-10-01"), cvx("141", "2021-10-01"), false),
            (
                "no date: identifiers only",
                json!({"resourceType": "Immunization", "vaccineCode": {"coding": [{"code": "140"}]}}),
                json!({"resourceType": "Immunization", "vaccineCode": {"coding": [{"code": "140"}]}}),
                false,
            ),
            (
                "a shared identifier",
                json!({"resourceType": "Condition", "identifier": [{"system": "urn:x", "value": "1"}]}),
                json!({"resourceType": "Condition", "identifier": [{"system": "urn:x", "value": "1"}], "code": {"text": "other"}}),
                true,
            ),
            (
                "an identifier of another type",
                json!({"resourceType": "Condition", "identifier": [{"system": "urn:x", "value": "1"}]}),
                json!({"resourceType": "Procedure", "identifier": [{"system": "urn:x", "value": "1"}]}),
                false,
            ),
            (
                "condition: code in common (SNOMED beside ICD-10), same onset day",
                json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}, "onsetDateTime": "2018-01-01"}),
                json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}, {"system": "http://snomed.info/sct", "code": "44054006"}]}, "onsetDateTime": "2018-01-01T00:00:00Z"}),
                true,
            ),
            (
                "condition: same code, onset another year",
                json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}, "onsetDateTime": "2018-01-01"}),
                json!({"resourceType": "Condition", "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]}, "onsetDateTime": "2019-01-01"}),
                false,
            ),
            (
                "lab: same code, minute and value (5.8 and 5.80, a trailing slash on UCUM)",
                lab("4548-4", "2021-05-01T10:00:00Z", 5.8, "%"),
                {
                    let mut b = lab("4548-4", "2021-05-01T10:00:30Z", 5.80, "%");
                    b["valueQuantity"]["system"] = json!("http://unitsofmeasure.org/");
                    b
                },
                true,
            ),
            (
                "lab: same code and minute, another value",
                lab("4548-4", "2021-05-01T10:00:00Z", 5.8, "%"),
                lab("4548-4", "2021-05-01T10:00:00Z", 6.1, "%"),
                false,
            ),
            (
                "lab: same code and value, another hour",
                lab("4548-4", "2021-05-01T10:00:00Z", 5.8, "%"),
                lab("4548-4", "2021-05-01T11:00:00Z", 5.8, "%"),
                false,
            ),
            (
                "lab: same instant in two zones",
                lab("2339-0", "2021-05-01T10:00:00Z", 90.0, "mg/dL"),
                lab("2339-0", "2021-05-01T06:00:00-04:00", 90.0, "mg/dL"),
                true,
            ),
            (
                "medication: same RxNorm, same day",
                json!({"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "849727"}]}, "authoredOn": "2020-02-02"}),
                json!({"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "849727"}]}, "authoredOn": "2020-02-02T08:00:00Z"}),
                true,
            ),
            (
                "medication: same RxNorm, a refill months later",
                json!({"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "849727"}]}, "authoredOn": "2020-02-02"}),
                json!({"resourceType": "MedicationRequest", "medicationCodeableConcept": {"coding": [{"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "849727"}]}, "authoredOn": "2020-06-02"}),
                false,
            ),
            (
                "encounter: same class and start",
                json!({"resourceType": "Encounter", "class": {"code": "AMB"}, "period": {"start": "2021-05-01T10:00:00Z"}}),
                json!({"resourceType": "Encounter", "class": {"code": "AMB"}, "period": {"start": "2021-05-01T10:00:00+00:00", "end": "2021-05-01T11:00:00Z"}}),
                true,
            ),
            (
                "encounter: same start, another class",
                json!({"resourceType": "Encounter", "class": {"code": "AMB"}, "period": {"start": "2021-05-01T10:00:00Z"}}),
                json!({"resourceType": "Encounter", "class": {"code": "EMER"}, "period": {"start": "2021-05-01T10:00:00Z"}}),
                false,
            ),
            (
                "patients are never merged",
                json!({"resourceType": "Patient", "identifier": [{"system": "urn:ssn", "value": "1"}]}),
                json!({"resourceType": "Patient", "identifier": [{"system": "urn:ssn", "value": "1"}]}),
                false,
            ),
        ];
        for (what, a, b, expected) in cases {
            assert_eq!(same(&a, &b), expected, "{what}: {:?} / {:?}", match_keys(&a), match_keys(&b));
            assert_eq!(same(&b, &a), expected, "{what} (the other way)");
        }
    }
}
