//! Sensitivity labeling: a resource that carries a code from a configured list (a behavioral-health
//! diagnosis, a substance-use treatment, an HIV test, a pregnancy) gets the matching HL7 v3
//! ActCode security label in `meta.security`. The store runs this on every write and import, so
//! consent filters ("withhold my behavioral-health records") can be applied in SQL on the
//! indexed `_security` values.
//!
//! Every coding in the resource is looked at (conditions' codes, encounters' reasons, claims'
//! items, medications), except `meta` itself. Labels are only ever added, never removed: a label
//! set by a clinician stays.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde::Deserialize;
use serde_json::{Map, Value};

/// The code system of security labels.
pub const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

const DEFAULT_LISTS: &str = include_str!("../labels/sensitivity-labels.json");

#[derive(Debug, Deserialize)]
struct FileFormat {
    #[serde(default)]
    #[allow(dead_code)]
    about: Option<String>,
    categories: Vec<CategoryFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CategoryFormat {
    label: String,
    display: String,
    rules: Vec<RuleFormat>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFormat {
    system: String,
    #[serde(default)]
    codes: Vec<String>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    except_prefixes: Vec<String>,
}

#[derive(Debug, Default)]
struct SystemRules {
    /// Exact code -> label indexes.
    codes: HashMap<String, Vec<usize>>,
    /// (prefix, excluded prefixes, label index).
    prefixes: Vec<(String, Vec<String>, usize)>,
}

/// Code lists per security label.
#[derive(Debug)]
pub struct Labeler {
    /// (code, display) per label, in file order.
    labels: Vec<(String, String)>,
    by_system: HashMap<String, SystemRules>,
}

impl Labeler {
    /// Portico's default lists (`crates/fhir/labels/sensitivity-labels.json`).
    pub fn default_lists() -> &'static Labeler {
        static DEFAULT: std::sync::OnceLock<Labeler> = std::sync::OnceLock::new();
        DEFAULT.get_or_init(|| {
            // The embedded file is tested; an empty labeler is the fallback the type system needs.
            Labeler::from_json(DEFAULT_LISTS).unwrap_or(Labeler { labels: Vec::new(), by_system: HashMap::new() })
        })
    }

    /// A fresh copy of the default lists (to own, e.g. in an `Arc`).
    pub fn defaults() -> Labeler {
        Labeler::from_json(DEFAULT_LISTS).unwrap_or(Labeler { labels: Vec::new(), by_system: HashMap::new() })
    }

    /// Parse a code-list file (the format of the default one).
    pub fn from_json(text: &str) -> Result<Labeler, String> {
        let file: FileFormat = serde_json::from_str(text).map_err(|e| format!("sensitivity code lists: {e}"))?;
        let mut labels = Vec::new();
        let mut by_system: HashMap<String, SystemRules> = HashMap::new();
        for category in file.categories {
            if category.label.is_empty() {
                return Err("sensitivity code lists: a category has an empty label".into());
            }
            let index = labels.len();
            labels.push((category.label, category.display));
            for rule in category.rules {
                let entry = by_system.entry(rule.system).or_default();
                for code in rule.codes {
                    entry.codes.entry(code).or_default().push(index);
                }
                for prefix in rule.prefixes {
                    entry.prefixes.push((prefix, rule.except_prefixes.clone(), index));
                }
            }
        }
        Ok(Labeler { labels, by_system })
    }

    /// The security label codes this labeler can add.
    pub fn label_codes(&self) -> Vec<&str> {
        self.labels.iter().map(|(c, _)| c.as_str()).collect()
    }

    /// The labels `resource`'s codings call for (label codes, sorted).
    pub fn labels_for(&self, resource: &Map<String, Value>) -> BTreeSet<usize> {
        let mut found = BTreeSet::new();
        for (key, value) in resource {
            if key != "meta" {
                self.visit(value, &mut found);
            }
        }
        found
    }

    fn visit(&self, value: &Value, found: &mut BTreeSet<usize>) {
        match value {
            Value::Object(map) => {
                if let (Some(Value::String(system)), Some(Value::String(code))) = (map.get("system"), map.get("code")) {
                    self.match_coding(system, code, found);
                }
                for v in map.values() {
                    if v.is_object() || v.is_array() {
                        self.visit(v, found);
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| self.visit(v, found)),
            _ => {}
        }
    }

    fn match_coding(&self, system: &str, code: &str, found: &mut BTreeSet<usize>) {
        let Some(rules) = self.by_system.get(system) else { return };
        if let Some(labels) = rules.codes.get(code) {
            found.extend(labels.iter().copied());
        }
        for (prefix, except, label) in &rules.prefixes {
            if code.starts_with(prefix.as_str()) && !except.iter().any(|e| code.starts_with(e.as_str())) {
                found.insert(*label);
            }
        }
    }

    /// Add the labels `resource` calls for to its `meta.security` (keeping existing ones). Returns
    /// whether anything was added.
    pub fn apply(&self, resource: &mut Map<String, Value>) -> bool {
        let wanted = self.labels_for(resource);
        if wanted.is_empty() {
            return false;
        }
        let meta = resource.entry("meta").or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(meta) = meta else { return false };
        let security = meta.entry("security").or_insert_with(|| Value::Array(Vec::new()));
        let Value::Array(security) = security else { return false };
        let present: HashSet<String> = security
            .iter()
            .filter(|c| c.get("system").and_then(Value::as_str) == Some(V3_ACT_CODE))
            .filter_map(|c| c.get("code").and_then(Value::as_str).map(str::to_owned))
            .collect();
        let mut added = false;
        for index in wanted {
            let (code, display) = &self.labels[index];
            if !present.contains(code) {
                security.push(serde_json::json!({ "system": V3_ACT_CODE, "code": code, "display": display }));
                added = true;
            }
        }
        added
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn security(m: &Map<String, Value>) -> Vec<String> {
        m["meta"]["security"].as_array().unwrap().iter().map(|c| c["code"].as_str().unwrap().to_owned()).collect()
    }

    #[test]
    fn default_lists_load() {
        let l = Labeler::default_lists();
        assert_eq!(l.label_codes(), ["PSY", "ETH", "SEX", "HIV"]);
    }

    #[test]
    fn codes_anywhere_in_the_resource_add_labels() {
        let l = Labeler::default_lists();
        let mut depression = map(json!({"resourceType": "Condition",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "370143000", "display": "Major depression disorder"}]}}));
        assert!(l.apply(&mut depression));
        assert_eq!(security(&depression), ["PSY"]);
        assert!(!l.apply(&mut depression), "idempotent");

        let mut sud = map(json!({"resourceType": "Condition",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F10.20"}]}}));
        l.apply(&mut sud);
        assert_eq!(security(&sud), ["ETH"], "F10-F19 are substance use, not PSY");
        let mut anxiety = map(json!({"resourceType": "Condition",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "F41.1"}]}}));
        l.apply(&mut anxiety);
        assert_eq!(security(&anxiety), ["PSY"]);

        // An encounter whose reason is a pregnancy, with an existing unrelated label kept.
        let mut encounter = map(json!({"resourceType": "Encounter",
            "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "N"}]},
            "reasonCode": [{"coding": [{"system": "http://snomed.info/sct", "code": "72892002"}]}]}));
        l.apply(&mut encounter);
        assert_eq!(security(&encounter), ["N", "SEX"]);

        // Codes in meta do not count; other systems and codes do not match.
        let mut plain = map(json!({"resourceType": "Observation",
            "meta": {"tag": [{"system": "http://snomed.info/sct", "code": "370143000"}]},
            "code": {"coding": [{"system": "http://loinc.org", "code": "8302-2"}]},
            "valueCodeableConcept": {"coding": [{"system": "http://example.org", "code": "370143000"}]}}));
        assert!(!l.apply(&mut plain));
        assert!(plain["meta"].get("security").is_none());
    }

    #[test]
    fn custom_lists_with_exceptions() {
        let l = Labeler::from_json(
            r#"{"categories": [{"label": "PSY", "display": "p", "rules": [
                {"system": "s", "prefixes": ["F"], "except_prefixes": ["F1"]}]}]}"#,
        )
        .unwrap();
        let mut a = map(json!({"code": {"coding": [{"system": "s", "code": "F32"}]}}));
        let mut b = map(json!({"code": {"coding": [{"system": "s", "code": "F10"}]}}));
        assert!(l.apply(&mut a));
        assert!(!l.apply(&mut b));
        assert!(Labeler::from_json(r#"{"categories": [{"label": "", "display": "", "rules": []}]}"#).is_err());
        assert!(Labeler::from_json("not json").is_err());
    }
}
