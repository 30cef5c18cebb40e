//! `_elements`: a resource cut down to some top-level elements, marked SUBSETTED (R4 3.1.1.5.8;
//! the mandatory `resourceType`, `id` and `meta` are always kept).

use serde_json::{json, Map, Value};

/// The v3 ObservationValue code a subsetted resource carries in `meta.tag`.
pub const SUBSETTED: (&str, &str) = ("http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "SUBSETTED");

/// Keep only `keep` (plus the mandatory elements) and mark the resource SUBSETTED.
pub fn retain(doc: &mut Map<String, Value>, keep: &[&str]) {
    doc.retain(|k, _| matches!(k.as_str(), "resourceType" | "id" | "meta") || keep.contains(&k.as_str()));
    mark_subsetted(doc);
}

/// Add the SUBSETTED tag to `meta.tag`.
pub fn mark_subsetted(doc: &mut Map<String, Value>) {
    let meta = doc.entry("meta").or_insert_with(|| json!({}));
    if let Some(meta) = meta.as_object_mut() {
        let tags = meta.entry("tag").or_insert_with(|| json!([]));
        if let Some(tags) = tags.as_array_mut() {
            tags.push(json!({"system": SUBSETTED.0, "code": SUBSETTED.1}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_mandatory_elements_and_marks_the_subset() {
        let mut doc = json!({"resourceType": "Patient", "id": "p", "name": [{"family": "X"}], "gender": "male"});
        let Value::Object(map) = &mut doc else { unreachable!() };
        retain(map, &["gender"]);
        assert_eq!(
            doc,
            json!({"resourceType": "Patient", "id": "p", "gender": "male",
                   "meta": {"tag": [{"system": SUBSETTED.0, "code": "SUBSETTED"}]}})
        );
    }
}
