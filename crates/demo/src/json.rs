//! Small builders for FHIR JSON datatypes.

use serde_json::{json, Number, Value};

use crate::codes::{Code, QtyDef, UCUM};

pub fn coding(c: &Code) -> Value {
    json!({ "system": c.system, "code": c.code, "display": c.display })
}

/// CodeableConcept with one coding and `text`.
pub fn concept(c: &Code) -> Value {
    json!({ "coding": [coding(c)], "text": c.display })
}

/// CodeableConcept with one coding and no `text` (for status-like concepts).
pub fn concept_plain(system: &str, code: &str, display: &str) -> Value {
    json!({ "coding": [{ "system": system, "code": code, "display": display }] })
}

/// CodeableConcept with several codings; `text` taken from the first.
pub fn concept_multi(codes: &[&Code]) -> Value {
    let text = codes.first().map(|c| c.display).unwrap_or_default();
    json!({ "coding": codes.iter().map(|c| coding(c)).collect::<Vec<_>>(), "text": text })
}

/// Relative reference `Type/id`.
pub fn reference(resource_type: &str, id: &str) -> Value {
    json!({ "reference": format!("{resource_type}/{id}") })
}

pub fn reference_display(resource_type: &str, id: &str, display: &str) -> Value {
    json!({ "reference": format!("{resource_type}/{id}"), "display": display })
}

/// A JSON number written with exactly `places` decimals (no float noise).
pub fn decimal(value: f64, places: usize) -> Value {
    if places == 0 {
        return Value::from(value.round() as i64);
    }
    let text = format!("{value:.places$}");
    text.parse::<Number>().map(Value::Number).unwrap_or_else(|_| Value::from(value))
}

pub fn quantity(value: f64, def: &QtyDef) -> Value {
    json!({
        "value": decimal(value, def.decimals),
        "unit": def.unit,
        "system": UCUM,
        "code": def.ucum,
    })
}

/// Amount in cents as a two-decimal number.
pub fn cents_value(cents: i64) -> Value {
    let sign = if cents < 0 { "-" } else { "" };
    let abs = cents.unsigned_abs();
    let text = format!("{sign}{}.{:02}", abs / 100, abs % 100);
    text.parse::<Number>().map(Value::Number).unwrap_or_else(|_| Value::from(cents as f64 / 100.0))
}

pub fn money(cents: i64) -> Value {
    json!({ "value": cents_value(cents), "currency": "USD" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact() {
        assert_eq!(decimal(5.4, 1).to_string(), "5.4");
        assert_eq!(decimal(5.0, 1).to_string(), "5.0");
        assert_eq!(decimal(0.849, 2).to_string(), "0.85");
        assert_eq!(decimal(72.6, 0).to_string(), "73");
        assert_eq!(cents_value(13_505).to_string(), "135.05");
        assert_eq!(cents_value(7).to_string(), "0.07");
    }
}
