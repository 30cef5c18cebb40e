//! Source values as extension values: a value of a known R4 datatype becomes `value[x]` of that
//! type; anything else becomes a complex extension whose sub-extensions are named by the source
//! element names (the cross-version extension pattern).

use serde_json::{json, Map, Value};

/// The datatypes recognised by their keys, most specific first (a value is of the type when all
/// its keys are among the type's and it has the keys listed as telling).
const DATATYPES: &[(&str, &[&str], &[&str])] = &[
    ("Coding", &["system", "version", "code", "display", "userSelected", "extension", "id"], &["code"]),
    ("CodeableConcept", &["coding", "text", "extension", "id"], &[]),
    ("Quantity", &["value", "comparator", "unit", "system", "code", "extension", "id"], &["value"]),
    ("Period", &["start", "end", "extension", "id"], &[]),
    ("Range", &["low", "high", "extension", "id"], &[]),
    ("Ratio", &["numerator", "denominator", "extension", "id"], &[]),
    ("Reference", &["reference", "display", "identifier", "type", "extension", "id"], &[]),
    ("Identifier", &["use", "type", "system", "value", "period", "assigner", "extension", "id"], &["value"]),
    ("HumanName", &["use", "text", "family", "given", "prefix", "suffix", "period", "extension", "id"], &[]),
    (
        "Address",
        &[
            "use",
            "type",
            "text",
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
            "period",
            "extension",
            "id",
        ],
        &[],
    ),
    ("ContactPoint", &["system", "value", "use", "rank", "period", "extension", "id"], &["system", "value"]),
    ("Annotation", &["authorReference", "authorString", "time", "text", "extension", "id"], &["text"]),
    (
        "Attachment",
        &["contentType", "language", "data", "url", "size", "hash", "title", "creation", "extension", "id"],
        &[],
    ),
];

fn datatype_of(map: &Map<String, Value>) -> Option<&'static str> {
    if map.is_empty() {
        return None;
    }
    DATATYPES
        .iter()
        .find(|(_, keys, telling)| {
            map.keys().all(|k| keys.contains(&k.as_str()))
                && telling.iter().all(|t| map.contains_key(*t))
                // Each candidate needs at least one of its own keys besides extension/id.
                && map.keys().any(|k| k != "extension" && k != "id")
        })
        .map(|(name, ..)| *name)
}

fn looks_like_datetime(s: &str) -> bool {
    crate::datetime::parse_range(s).is_some() && s.len() >= 4 && s.as_bytes()[..4].iter().all(u8::is_ascii_digit)
}

/// One extension (or several, for an array) with `url` holding `value`.
pub fn extensions_for(url: &str, value: Value) -> Vec<Value> {
    match value {
        Value::Array(items) => items.into_iter().flat_map(|i| extensions_for(url, i)).collect(),
        Value::Null => Vec::new(),
        other => vec![extension(url, other)],
    }
}

fn extension(url: &str, value: Value) -> Value {
    match value {
        Value::Bool(b) => json!({"url": url, "valueBoolean": b}),
        Value::Number(n) => {
            let text = n.to_string();
            if text.contains(['.', 'e', 'E']) {
                json!({"url": url, "valueDecimal": n})
            } else {
                json!({"url": url, "valueInteger": n})
            }
        }
        Value::String(s) if looks_like_datetime(&s) => json!({"url": url, "valueDateTime": s}),
        Value::String(s) => json!({"url": url, "valueString": s}),
        Value::Object(map) => match datatype_of(&map) {
            Some(t) => {
                let mut ext = Map::new();
                ext.insert("url".into(), Value::String(url.to_owned()));
                ext.insert(format!("value{t}"), Value::Object(map));
                Value::Object(ext)
            }
            None => {
                // A backbone element: one sub-extension per child, named by the child.
                let mut subs = Vec::new();
                for (k, v) in map {
                    if k.starts_with('_') || k == "id" {
                        continue;
                    }
                    if k == "extension" || k == "modifierExtension" {
                        if let Value::Array(items) = v {
                            subs.extend(items);
                        }
                        continue;
                    }
                    subs.extend(extensions_for(&k, v));
                }
                json!({"url": url, "extension": subs})
            }
        },
        Value::Array(_) | Value::Null => json!({"url": url}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_take_their_datatype_or_nest() {
        let e = extensions_for("u", json!(true));
        assert_eq!(e, vec![json!({"url": "u", "valueBoolean": true})]);
        assert_eq!(extensions_for("u", json!("2020-01-02"))[0]["valueDateTime"], "2020-01-02");
        assert_eq!(extensions_for("u", json!("hello"))[0]["valueString"], "hello");
        assert!(extensions_for("u", json!({"coding": [{"code": "x"}]}))[0].get("valueCodeableConcept").is_some());
        assert!(extensions_for("u", json!({"reference": "Patient/1"}))[0].get("valueReference").is_some());
        assert!(extensions_for("u", json!({"value": 5, "unit": "mg"}))[0].get("valueQuantity").is_some());
        let nested = &extensions_for("u", json!({"role": {"text": "r"}, "period": {"start": "2020"}, "other": "x"}))[0];
        let subs = nested["extension"].as_array().unwrap();
        assert_eq!(subs.len(), 3);
        assert!(subs.iter().any(|s| s["url"] == "role" && s.get("valueCodeableConcept").is_some()));
        assert_eq!(extensions_for("u", json!([1, 2])).len(), 2);
    }
}
