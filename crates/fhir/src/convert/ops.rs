//! The small moves the per-type rules are written with.

use serde_json::{json, Map, Value};

use super::{Report, Version};

/// What a conversion step knows about where it is.
pub(crate) struct Ctx<'a> {
    pub version: Version,
    /// The source resource type (cross-version extension URLs name it).
    pub source_type: &'a str,
    pub report: &'a mut Report,
}

/// A resource (or element) being converted: moves on its JSON object.
pub(crate) struct Obj<'m> {
    pub map: &'m mut Map<String, Value>,
}

pub(crate) fn obj(map: &mut Map<String, Value>) -> Obj<'_> {
    Obj { map }
}

impl Obj<'_> {
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub fn take(&mut self, name: &str) -> Option<Value> {
        self.map.remove(name)
    }

    pub fn put(&mut self, name: &str, value: Value) {
        self.map.insert(name.to_owned(), value);
    }

    pub fn str(&self, name: &str) -> Option<&str> {
        self.map.get(name).and_then(Value::as_str)
    }

    /// Move `from` (and its `_from` extension sibling) to `to`, unless `to` is already set.
    pub fn rename(&mut self, from: &str, to: &str) {
        if from == to || self.map.contains_key(to) {
            return;
        }
        if let Some(v) = self.map.remove(from) {
            self.map.insert(to.to_owned(), v);
        }
        if let Some(v) = self.map.remove(&format!("_{from}")) {
            self.map.insert(format!("_{to}"), v);
        }
    }

    /// Map a code through `codes` (source, target); an unlisted code is left as it is (the fit
    /// step keeps it in an extension when R4 does not know it).
    pub fn recode(&mut self, name: &str, codes: &[(&str, &str)]) {
        if let Some(Value::String(code)) = self.map.get_mut(name) {
            if let Some((_, to)) = codes.iter().find(|(from, _)| *from == code.as_str()) {
                *code = (*to).to_owned();
            }
        }
    }

    /// A `code` element that became a CodeableConcept of `system` in R4, its codes mapped.
    pub fn code_to_concept(&mut self, from: &str, to: &str, system: &str, codes: &[(&str, &str)]) {
        let Some(Value::String(code)) = self.map.get(from).cloned() else {
            self.rename(from, to);
            return;
        };
        let mapped = codes.iter().find(|(f, _)| *f == code).map_or(code.as_str(), |(_, t)| *t).to_owned();
        self.map.remove(from);
        self.map.remove(&format!("_{from}"));
        self.map.insert(to.to_owned(), json!({"coding": [{"system": system, "code": mapped}]}));
    }

    /// A string that became a CodeableConcept (its text).
    pub fn string_to_concept(&mut self, name: &str) {
        if let Some(Value::String(text)) = self.map.get(name).cloned() {
            self.map.insert(name.to_owned(), json!({"text": text}));
        }
    }

    /// A string (or a single Annotation) that became an array of Annotations.
    pub fn annotations(&mut self, from: &str, to: &str) {
        let Some(v) = self.map.remove(from) else { return };
        let notes: Vec<Value> = match v {
            Value::String(text) => vec![json!({"text": text})],
            Value::Array(items) => items
                .into_iter()
                .map(|i| match i {
                    Value::String(text) => json!({"text": text}),
                    other => other,
                })
                .collect(),
            other => vec![other],
        };
        let existing = self.map.entry(to.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
        if let Some(list) = existing.as_array_mut() {
            list.extend(notes);
        }
    }

    /// A single Reference that became a list of `{"<key>": Reference}` objects (e.g. a
    /// performer Reference → `performer[{actor}]`).
    pub fn wrap_in(&mut self, from: &str, to: &str, key: &str) {
        let Some(v) = self.map.remove(from) else { return };
        let items = match v {
            Value::Array(items) => items,
            other => vec![other],
        };
        let wrapped: Vec<Value> = items.into_iter().map(|i| json!({key: i})).collect();
        self.map.insert(to.to_owned(), Value::Array(wrapped));
    }

    /// `reasonCodeableConcept`/`reasonReference` style choice → `reasonCode[]`/`reasonReference[]`.
    pub fn choice_to_lists(&mut self, prefix: &str, code_to: &str, reference_to: &str) {
        self.rename(&format!("{prefix}CodeableConcept"), code_to);
        self.rename(&format!("{prefix}Reference"), reference_to);
    }

    /// Apply `f` to each object in the element (one or many).
    pub fn each(&mut self, name: &str, mut f: impl FnMut(&mut Map<String, Value>)) {
        match self.map.get_mut(name) {
            Some(Value::Object(o)) => f(o),
            Some(Value::Array(items)) => {
                for i in items.iter_mut() {
                    if let Value::Object(o) = i {
                        f(o);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Keep `value` of the source element `name` in its cross-version extension on `o`.
pub(crate) fn keep(o: &mut Obj, ctx: &mut Ctx, name: &str, value: Value) {
    let path = format!("{}.{name}", ctx.source_type);
    ctx.report.kept(&path);
    let url = ctx.version.extension_url(&path);
    let list = o.map.entry("extension").or_insert_with(|| Value::Array(Vec::new()));
    if let Some(l) = list.as_array_mut() {
        l.extend(super::values::extensions_for(&url, value));
    }
}

/// A code element whose R4 value set is `allowed`: any other code is kept in its extension
/// (R4 has no code for it, and none is made up).
pub(crate) fn restrict(o: &mut Obj, ctx: &mut Ctx, name: &str, allowed: &[&str]) {
    let unknown = o.map.get(name).and_then(Value::as_str).is_some_and(|c| !allowed.contains(&c));
    if unknown {
        if let Some(v) = o.take(name) {
            keep(o, ctx, name, v);
        }
    }
}

/// Give `resource` the record's one Patient as subject (or patient) when R4 requires one and the
/// resource names none: a record export says whose record it is.
pub(crate) fn give_subject(resource: &mut Value, patient: &str, version: Version, report: &mut Report) {
    let t = resource.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_owned();
    let key = match t.as_str() {
        "Goal"
        | "Condition"
        | "CarePlan"
        | "Procedure"
        | "MedicationRequest"
        | "MedicationStatement"
        | "Observation"
        | "DiagnosticReport"
        | "Encounter"
        | "DocumentReference"
        | "CareTeam" => "subject",
        "AllergyIntolerance" | "Immunization" | "FamilyMemberHistory" => "patient",
        _ => return,
    };
    let Some(map) = resource.as_object_mut() else { return };
    if map.contains_key(key) {
        return;
    }
    // Only where R4 requires it (Observation, DiagnosticReport, Encounter… may have no subject).
    if !matches!(
        t.as_str(),
        "Goal"
            | "Condition"
            | "CarePlan"
            | "Procedure"
            | "MedicationRequest"
            | "MedicationStatement"
            | "AllergyIntolerance"
            | "Immunization"
            | "FamilyMemberHistory"
    ) {
        return;
    }
    map.insert(
        key.into(),
        json!({"reference": patient, "extension": [{
            "url": DERIVED_EXTENSION,
            "valueString": format!("the {} record export's one Patient", version.name())}]}),
    );
    report.derived(&format!("{t}.{key} (the record's one Patient)"));
}

/// Marks an element whose value was derived from context rather than copied.
pub const DERIVED_EXTENSION: &str = "http://portico.dev/fhir/StructureDefinition/derived-in-conversion";
