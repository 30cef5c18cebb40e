//! Rewriting references inside a resource (transaction `urn:uuid:` ids, imported Bundles).

use std::collections::HashMap;

use serde_json::Value;

/// Replace every `Reference.reference` (any `"reference"` string member, at any depth) that is a
/// key of `map` with the mapped value, e.g. `urn:uuid:…` → `Patient/123`.
pub fn rewrite(value: &mut Value, map: &HashMap<String, String>) {
    if map.is_empty() {
        return;
    }
    match value {
        Value::Object(obj) => {
            for (key, member) in obj.iter_mut() {
                if key == "reference" {
                    if let Value::String(reference) = member {
                        if let Some(replacement) = map.get(reference.as_str()) {
                            *reference = replacement.clone();
                        }
                        continue;
                    }
                }
                rewrite(member, map);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite(item, map)),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_nested_references_only() {
        let mut v = json!({
            "subject": {"reference": "urn:uuid:1"},
            "note": [{"text": "urn:uuid:1"}],
            "contained": [{"performer": [{"reference": "urn:uuid:1"}, {"reference": "Practitioner/x"}]}]
        });
        let map = HashMap::from([("urn:uuid:1".to_string(), "Patient/p".to_string())]);
        rewrite(&mut v, &map);
        assert_eq!(v["subject"]["reference"], "Patient/p");
        assert_eq!(v["note"][0]["text"], "urn:uuid:1");
        assert_eq!(v["contained"][0]["performer"][0]["reference"], "Patient/p");
        assert_eq!(v["contained"][0]["performer"][1]["reference"], "Practitioner/x");
    }
}
