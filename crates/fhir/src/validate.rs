//! Structural validation of resources against the official R4 JSON Schema.
//!
//! The schema embedded in `definitions/fhir.schema.json` is compiled once into a compact model
//! (see [`model`]) and resources are checked by one walk over their JSON:
//!
//! * the value is an object whose `resourceType` is an R4 resource type;
//! * no property unknown to the definition (choice elements are known as `valueQuantity`...,
//!   primitive extensions as `_birthDate`...);
//! * arrays where the definition has arrays (non-empty), single values where it does not, no
//!   `null` except as an item of a primitive array or of its `_field` sibling;
//! * the JSON kind and the lexical form of every primitive (id, date, dateTime, instant, time,
//!   code, integer ranges, uri, oid, uuid, base64Binary...), and the codes of enumerations;
//! * properties listed as `required`;
//! * recursively, datatypes, backbone elements, extensions, and resources nested in `contained`,
//!   `Bundle.entry.resource` and `Parameters.parameter.resource`.
//!
//! It does not evaluate invariants (FHIRPath constraints), cardinalities other than
//! single/array, "at most one choice", terminology bindings other than the schema's `enum`s, or
//! profiles.

mod model;
mod prim;

use std::fmt;
use std::sync::OnceLock;

use serde_json::{Map, Value};

use model::{Kind, Model, Prop};
use prim::json_kind;

/// The R4 JSON Schema shipped with the crate.
const SCHEMA_JSON: &str = include_str!("../definitions/fhir.schema.json");

/// At most this many issues are collected for one resource.
pub const MAX_ISSUES: usize = 50;

/// Nesting deeper than this is reported rather than followed.
const MAX_DEPTH: usize = 256;

/// One structural problem found in a resource.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidationIssue {
    /// FHIRPath-like location, e.g. `Patient.name[0].given[1]`
    pub path: String,
    pub message: String,
}

impl fmt::Display for ValidationIssue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A validator compiled from the R4 JSON Schema.
pub struct Validator {
    model: Result<Model, String>,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.model {
            Ok(m) => f
                .debug_struct("Validator")
                .field("types", &m.types.len())
                .field("resource_types", &m.resources.len())
                .finish(),
            Err(e) => f.debug_struct("Validator").field("error", e).finish(),
        }
    }
}

impl Validator {
    /// The process-wide validator for FHIR R4, compiled on first use.
    pub fn r4() -> &'static Validator {
        static VALIDATOR: OnceLock<Validator> = OnceLock::new();
        VALIDATOR.get_or_init(|| Validator { model: Model::compile(SCHEMA_JSON) })
    }

    /// Is `name` a resource type this validator knows (the 146 R4 resource types)?
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.model.as_ref().is_ok_and(|m| m.resources.contains_key(name))
    }

    /// Every resource type this validator knows, sorted.
    pub fn resource_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = match &self.model {
            Ok(m) => m.resources.keys().map(|k| &**k).collect(),
            Err(_) => Vec::new(),
        };
        v.sort_unstable();
        v
    }

    /// What the R4 definition says of property `prop` of the type `type_name` (a resource type,
    /// a datatype such as `CodeableConcept`, or a backbone element such as
    /// `Observation_Component`): `None` when R4 has no such property.
    pub fn shape(&self, type_name: &str, prop: &str) -> Option<Shape<'_>> {
        self.shape_in(self.type_id(type_name)?, prop)
    }

    /// The id of an R4 type (a resource type, datatype or backbone element) for [`Self::shape_in`]:
    /// one lookup per object when many of its properties are asked about.
    pub fn type_id(&self, type_name: &str) -> Option<TypeId> {
        self.model.as_ref().ok()?.by_name.get(type_name).copied().map(TypeId)
    }

    /// [`Self::shape`] of a property of the type `id` names.
    pub fn shape_in(&self, id: TypeId, prop: &str) -> Option<Shape<'_>> {
        let model = self.model.as_ref().ok()?;
        let ty = model.types.get(usize::from(id.0))?;
        let p = ty.props.get(prop)?;
        let mut codes: Option<&[Box<str>]> = None;
        let (kind, complex) = match p.kind {
            Kind::Complex(i) => (ShapeKind::Complex, model.types.get(usize::from(i)).map(|t| &*t.name)),
            Kind::Prim(prim) => (ShapeKind::Primitive(prim_name(prim)), None),
            Kind::Enum(i) => {
                codes = model.enums.get(usize::from(i)).map(|c| &**c);
                (ShapeKind::Code, None)
            }
            Kind::Resource => (ShapeKind::Resource, None),
            Kind::ResourceType => (ShapeKind::Code, None),
        };
        Some(Shape { array: p.array, kind, complex, codes })
    }

    /// Checks `resource` structurally. All issues are collected (up to [`MAX_ISSUES`]).
    pub fn validate(&self, resource: &Value) -> Result<(), Vec<ValidationIssue>> {
        let model = match &self.model {
            Ok(m) => m,
            Err(e) => {
                return Err(vec![ValidationIssue {
                    path: String::new(),
                    message: format!("the validator could not be built from the embedded schema: {e}"),
                }])
            }
        };
        let mut w = Walker { model, path: Vec::with_capacity(16), issues: Vec::new(), depth: 0 };
        w.resource(resource, true);
        if w.issues.is_empty() {
            Ok(())
        } else {
            Err(w.issues)
        }
    }
}

/// An R4 type, as [`Validator::type_id`] found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TypeId(u16);

/// A property's shape in R4 (see [`Validator::shape`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape<'m> {
    pub array: bool,
    pub kind: ShapeKind,
    /// The complex type's definition name (`CodeableConcept`, `Observation_Component`).
    pub complex: Option<&'m str>,
    /// The allowed codes, for a code with a fixed list.
    pub codes: Option<&'m [Box<str>]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShapeKind {
    Complex,
    /// A primitive by its FHIR type name (`string`, `dateTime`, `boolean`...).
    Primitive(&'static str),
    /// A code with a fixed list of values.
    Code,
    /// A nested resource.
    Resource,
}

fn prim_name(p: prim::Prim) -> &'static str {
    use prim::Prim as P;
    match p {
        P::Boolean => "boolean",
        P::Integer | P::Integer64 => "integer",
        P::PositiveInt => "positiveInt",
        P::UnsignedInt => "unsignedInt",
        P::Decimal => "decimal",
        P::String | P::Xhtml => "string",
        P::Uri => "uri",
        P::Code => "code",
        P::Id => "id",
        P::Oid => "oid",
        P::Uuid => "uuid",
        P::Date => "date",
        P::DateTime => "dateTime",
        P::Instant => "instant",
        P::Time => "time",
        P::Base64Binary => "base64Binary",
        P::Regex { .. } => "string",
    }
}

#[derive(Clone, Copy)]
enum Seg<'v> {
    Key(&'v str),
    Index(usize),
}

struct Walker<'m, 'v> {
    model: &'m Model,
    /// the location, kept as borrowed segments and only formatted when an issue is reported
    path: Vec<Seg<'v>>,
    issues: Vec<ValidationIssue>,
    depth: usize,
}

impl<'m, 'v> Walker<'m, 'v> {
    #[inline]
    fn full(&self) -> bool {
        self.issues.len() >= MAX_ISSUES
    }

    fn path_string(&self, extra: Option<&str>) -> String {
        let mut s = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                Seg::Index(i) => {
                    s.push('[');
                    s.push_str(&i.to_string());
                    s.push(']');
                }
            }
        }
        if let Some(k) = extra {
            if !s.is_empty() {
                s.push('.');
            }
            s.push_str(k);
        }
        s
    }

    #[cold]
    fn issue_at(&mut self, extra: Option<&str>, message: String) {
        if self.full() {
            return;
        }
        let path = self.path_string(extra);
        self.issues.push(ValidationIssue { path, message });
    }

    #[cold]
    fn issue(&mut self, message: String) {
        self.issue_at(None, message);
    }

    /// A resource: at the top level (`top`) or nested (`contained`, `entry.resource`...).
    fn resource(&mut self, v: &'v Value, top: bool) {
        let Value::Object(obj) = v else {
            if top {
                self.path.push(Seg::Key("Resource"));
            }
            self.issue(format!("expected a resource (JSON object), found {}", json_kind(v)));
            if top {
                self.path.pop();
            }
            return;
        };
        let rt = match obj.get("resourceType") {
            Some(Value::String(s)) => s.as_str(),
            found => {
                let message = match found {
                    Some(other) => {
                        format!("resourceType must be a string, found {}", json_kind(other))
                    }
                    None => "missing resourceType".to_string(),
                };
                if top {
                    self.path.push(Seg::Key("Resource"));
                }
                let at = found.map(|_| "resourceType");
                self.issue_at(at, message);
                if top {
                    self.path.pop();
                }
                return;
            }
        };
        let Some(&id) = self.model.resources.get(rt) else {
            let root = if top { Some(rt) } else { None };
            self.issue_at(root, format!("unknown resourceType {rt:?}"));
            return;
        };
        if top {
            self.path.push(Seg::Key(rt));
        }
        self.complex(id, obj);
        if top {
            self.path.pop();
        }
    }

    fn complex(&mut self, id: u16, obj: &'v Map<String, Value>) {
        let model = self.model;
        let Some(ty) = model.types.get(usize::from(id)) else {
            return;
        };
        if obj.is_empty() {
            self.issue("empty object: an element must have a value or children".to_string());
            return;
        }
        if self.depth >= MAX_DEPTH {
            self.issue(format!("nested more than {MAX_DEPTH} levels deep"));
            return;
        }
        self.depth += 1;
        let mut seen = 0u64;
        for (k, v) in obj {
            if self.full() {
                break;
            }
            match ty.props.get(k.as_str()) {
                Some(prop) => {
                    seen |= prop.required_bit;
                    self.path.push(Seg::Key(k));
                    self.value(*prop, v);
                    self.path.pop();
                }
                None => self.issue_at(Some(k), format!("unknown property {k:?} in {}", ty.name)),
            }
        }
        if seen != ty.required_mask || ty.required.len() > 64 {
            for (i, (name, ext_name)) in ty.required.iter().enumerate() {
                let present = if i < 64 {
                    seen & (1u64 << i) != 0
                } else {
                    obj.contains_key(&**name) || obj.contains_key(&**ext_name)
                };
                if !present {
                    self.issue(format!("missing required property {name:?}"));
                }
            }
        }
        self.depth -= 1;
    }

    fn value(&mut self, prop: Prop, v: &'v Value) {
        match (prop.array, v) {
            (true, Value::Array(items)) => {
                if items.is_empty() {
                    self.issue("empty array: omit the property instead".to_string());
                }
                for (i, item) in items.iter().enumerate() {
                    if self.full() {
                        break;
                    }
                    self.path.push(Seg::Index(i));
                    if item.is_null() {
                        if !prop.nulls_in_array {
                            self.issue("null is not allowed here".to_string());
                        }
                    } else {
                        self.single(prop.kind, item);
                    }
                    self.path.pop();
                }
            }
            (true, _) => self.issue(format!("expected an array, found {}", json_kind(v))),
            (false, Value::Array(_)) => self.issue("expected a single value, found an array".to_string()),
            (false, Value::Null) => self.issue("null is not allowed here".to_string()),
            (false, _) => self.single(prop.kind, v),
        }
    }

    fn single(&mut self, kind: Kind, v: &'v Value) {
        match kind {
            Kind::Complex(id) => match v {
                Value::Object(obj) => self.complex(id, obj),
                _ => self.issue(format!("expected an object, found {}", json_kind(v))),
            },
            Kind::Prim(p) => {
                if let Err(message) = prim::check(p, v, &self.model.regexes) {
                    self.issue(message);
                }
            }
            Kind::Enum(id) => self.enumeration(id, v),
            Kind::Resource => self.resource(v, false),
            Kind::ResourceType => {}
        }
    }

    fn enumeration(&mut self, id: u16, v: &'v Value) {
        let allowed = self.model.enums.get(usize::from(id)).map(|e| &e[..]).unwrap_or(&[]);
        match v {
            Value::String(s) if allowed.iter().any(|a| **a == **s) => {}
            Value::String(s) => {
                let list = if allowed.len() <= 12 {
                    allowed.iter().map(|a| &**a).collect::<Vec<_>>().join(" | ")
                } else {
                    format!("{} codes", allowed.len())
                };
                self.issue(format!("{s:?} is not an allowed code ({list})"));
            }
            _ => self.issue(format!("expected a JSON string (code), found {}", json_kind(v))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn issues(v: Value) -> Vec<ValidationIssue> {
        Validator::r4().validate(&v).err().unwrap_or_default()
    }

    #[test]
    fn compiles_with_r4_resource_types() {
        let v = Validator::r4();
        assert!(v.model.is_ok(), "{:?}", v.model.as_ref().err());
        let types = v.resource_types();
        assert_eq!(types.len(), 146, "{types:?}");
        assert!(v.is_resource_type("Observation"));
        assert!(v.is_resource_type("Parameters"));
        assert!(!v.is_resource_type("Project"));
        assert!(!v.is_resource_type("Observation_Component"));
        assert!(!v.is_resource_type("Element"));
    }

    #[test]
    fn non_r4_additions_are_rejected() {
        let found = issues(json!({"resourceType": "Patient", "meta": {"project": "x"}}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "Patient.meta.project");
        let found = issues(json!({"resourceType": "User"}));
        assert_eq!(found[0].path, "User");
    }

    #[test]
    fn paths_are_fhirpath_like() {
        let found = issues(json!({
            "resourceType": "Patient",
            "name": [{"given": ["a", 5]}],
        }));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].path, "Patient.name[0].given[1]");
    }

    #[test]
    fn issue_cap() {
        let given: Vec<Value> = (0..200).map(|_| json!(1)).collect();
        let found = issues(json!({"resourceType": "Patient", "name": [{"given": given}]}));
        assert_eq!(found.len(), MAX_ISSUES);
    }
}
