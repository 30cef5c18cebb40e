//! Compiles the embedded R4 JSON Schema into a compact in-memory model: one entry per definition
//! with a property table (name -> target + cardinality), the required properties and, for
//! primitives, a checker. Descriptions are skipped while deserializing, so the one-time build
//! reads the 3.5 MB file without materialising it as a `serde_json::Value`.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use serde::Deserialize;

use super::prim::Prim;

/// The embedded schema file is Medplum's edition of the official R4 schema: it adds these
/// resource types (and their backbone elements) that are not FHIR R4. They are not known resource
/// types here.
const NON_R4_RESOURCE_TYPES: &[&str] = &[
    "AccessPolicy",
    "AccessPolicyResource",
    "Agent",
    "AsyncJob",
    "Bot",
    "BulkDataExport",
    "ClientApplication",
    "DomainConfiguration",
    "IdentityProvider",
    "JsonWebKey",
    "Login",
    "PasswordChangeRequest",
    "Project",
    "ProjectDefaultProfile",
    "ProjectMembership",
    "SmartAppLaunch",
    "User",
    "UserConfiguration",
    "UserSecurityRequest",
    "ViewDefinition",
];

/// ... and it adds these properties to R4 definitions; they are dropped so that R4 rules apply.
const NON_R4_PROPERTIES: &[(&str, &str)] = &[
    ("Meta", "project"),
    ("Meta", "author"),
    ("Meta", "account"),
    ("Meta", "compartment"),
    ("Reference", "resource"),
    ("DeviceDefinition", "classification"),
    ("ObservationDefinition", "publisher"),
    ("OperationOutcome", "resource"),
    ("OperationOutcome", "status"),
];

/// Pattern the schema uses for inline `base64Binary` choice elements (`Extension.valueBase64Binary`).
const BASE64_PATTERN: &str = r"^(\s*([0-9a-zA-Z\+/=]){4}\s*)+$";

/// A small, fast, non-cryptographic hasher (the rustc "Fx" hash) for the property tables: keys
/// are short schema names, never attacker-controlled in a way that matters for a fixed table.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FxMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// What a property's value must be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// an object of the complex type `Model::types[i]`
    Complex(u16),
    Prim(Prim),
    /// one of the codes in `Model::enums[i]`
    Enum(u16),
    /// any resource (`contained`, `Bundle.entry.resource`, `Parameters.parameter.resource`...)
    Resource,
    /// `resourceType` of a resource; checked when the resource is dispatched
    ResourceType,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Prop {
    pub kind: Kind,
    pub array: bool,
    /// `_field` siblings and primitive arrays may hold `null` items (FHIR JSON rule for
    /// aligning values with their extensions)
    pub nulls_in_array: bool,
    /// bit set in the "seen" mask when this property (or, for `_name`, its primitive) is one of
    /// the first 64 required ones; 0 otherwise
    pub required_bit: u64,
}

#[derive(Debug)]
pub(crate) struct ComplexType {
    pub name: Box<str>,
    pub props: FxMap<Box<str>, Prop>,
    /// required properties as (`name`, `_name`): a primitive counts as present when only its
    /// extension sibling is
    pub required: Box<[(Box<str>, Box<str>)]>,
    /// the bits of the first 64 `required` properties (see [`Prop::required_bit`])
    pub required_mask: u64,
}

#[derive(Debug)]
pub(crate) struct Model {
    pub types: Vec<ComplexType>,
    pub enums: Vec<Box<[Box<str>]>>,
    pub regexes: Vec<regex::Regex>,
    /// resourceType -> index in `types`
    pub resources: FxMap<Box<str>, u16>,
    /// every type's name -> index in `types` (datatypes and backbone elements too)
    pub by_name: FxMap<Box<str>, u16>,
}

#[derive(Deserialize)]
struct RawSchema {
    definitions: HashMap<String, RawDef>,
    discriminator: RawDiscriminator,
}

#[derive(Deserialize)]
struct RawDiscriminator {
    mapping: HashMap<String, String>,
}

#[derive(Deserialize)]
struct RawDef {
    properties: Option<HashMap<String, RawProp>>,
    #[serde(default)]
    required: Vec<String>,
    pattern: Option<String>,
    #[serde(rename = "type")]
    json_type: Option<String>,
    #[serde(rename = "oneOf")]
    one_of: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct RawProp {
    #[serde(rename = "$ref")]
    reference: Option<String>,
    items: Option<Box<RawProp>>,
    #[serde(rename = "type")]
    json_type: Option<String>,
    pattern: Option<String>,
    #[serde(rename = "enum")]
    enumeration: Option<Vec<String>>,
    #[serde(rename = "const")]
    constant: Option<String>,
}

struct Builder<'a> {
    defs: &'a HashMap<String, RawDef>,
    /// primitive definition name -> Prim
    prims: HashMap<&'a str, Prim>,
    /// primitive pattern -> Prim, for inline choice-element patterns
    patterns: HashMap<&'a str, Prim>,
    complex_ids: HashMap<&'a str, u16>,
    enum_ids: HashMap<Vec<String>, u16>,
    enums: Vec<Box<[Box<str>]>>,
    regexes: Vec<regex::Regex>,
    regex_ids: HashMap<(String, bool), u16>,
}

impl Model {
    pub(crate) fn compile(schema_json: &str) -> Result<Model, String> {
        let raw: RawSchema = serde_json::from_str(schema_json).map_err(|e| format!("cannot parse the schema: {e}"))?;
        let defs = &raw.definitions;

        let mut b = Builder {
            defs,
            prims: HashMap::new(),
            patterns: HashMap::new(),
            complex_ids: HashMap::new(),
            enum_ids: HashMap::new(),
            enums: Vec::new(),
            regexes: Vec::new(),
            regex_ids: HashMap::new(),
        };

        // Primitive definitions (no `properties`), and complex ones, numbered in name order so
        // that the model does not depend on hash-map iteration order.
        let mut names: Vec<&str> = defs.keys().map(String::as_str).collect();
        names.sort_unstable();
        let mut complex_names = Vec::new();
        for &name in &names {
            let Some(def) = defs.get(name) else { continue };
            if def.properties.is_some() {
                if NON_R4_RESOURCE_TYPES.contains(&name) || is_non_r4_backbone(name) {
                    continue;
                }
                let id = u16::try_from(complex_names.len()).map_err(|_| "too many definitions".to_string())?;
                b.complex_ids.insert(name, id);
                complex_names.push(name);
            } else if def.one_of.is_some() {
                // `ResourceList`: handled as Kind::Resource
            } else {
                let prim = match Prim::from_name(name) {
                    Some(p) => p,
                    None => b.regex_prim(def.pattern.as_deref(), def.json_type.as_deref())?,
                };
                b.prims.insert(name, prim);
                if let Some(p) = &def.pattern {
                    // first (alphabetical) wins: canonical/uri/url and markdown/string share patterns
                    b.patterns.entry(p.as_str()).or_insert(prim);
                }
            }
        }
        b.patterns.insert(BASE64_PATTERN, Prim::Base64Binary);

        let mut types = Vec::with_capacity(complex_names.len());
        for &name in &complex_names {
            let Some(def) = defs.get(name) else { continue };
            let mut props = FxMap::default();
            if let Some(raw_props) = &def.properties {
                for (pname, raw) in raw_props {
                    if NON_R4_PROPERTIES.contains(&(name, pname.as_str())) {
                        continue;
                    }
                    let prop = b.prop(pname, raw).map_err(|e| format!("{name}.{pname}: {e}"))?;
                    props.insert(pname.clone().into_boxed_str(), prop);
                }
            }
            let required: Box<[(Box<str>, Box<str>)]> = def
                .required
                .iter()
                .filter(|r| r.as_str() != "resourceType")
                .map(|r| (r.clone().into_boxed_str(), format!("_{r}").into_boxed_str()))
                .collect();
            let mut required_mask = 0u64;
            for (i, (r, ext)) in required.iter().enumerate().take(64) {
                let bit = 1u64 << i;
                required_mask |= bit;
                for key in [r, ext] {
                    if let Some(p) = props.get_mut(key) {
                        p.required_bit = bit;
                    }
                }
            }
            types.push(ComplexType { name: name.into(), props, required, required_mask });
        }

        let mut resources = FxMap::default();
        for (rt, target) in &raw.discriminator.mapping {
            let def_name = target.rsplit('/').next().unwrap_or(target);
            let Some(&id) = b.complex_ids.get(def_name) else {
                continue;
            };
            let is_resource =
                defs.get(def_name).and_then(|d| d.properties.as_ref()).is_some_and(|p| p.contains_key("resourceType"));
            if is_resource && !NON_R4_RESOURCE_TYPES.contains(&rt.as_str()) {
                resources.insert(rt.clone().into_boxed_str(), id);
            }
        }

        let by_name =
            types.iter().enumerate().filter_map(|(i, t)| Some((t.name.clone(), u16::try_from(i).ok()?))).collect();
        Ok(Model { types, enums: b.enums, regexes: b.regexes, resources, by_name })
    }
}

/// Backbone elements of the non-R4 resource types (`Project_Site`, `UserConfiguration_Menu`...)
/// and their flattened duplicates (`ProjectSetting`, `BulkDataExportOutput`...). No R4
/// definition name starts with one of those type names followed by `_` or a capital letter.
fn is_non_r4_backbone(name: &str) -> bool {
    NON_R4_RESOURCE_TYPES.iter().any(|rt| {
        name.strip_prefix(rt).and_then(|rest| rest.chars().next()).is_some_and(|c| c == '_' || c.is_ascii_uppercase())
    })
}

impl<'a> Builder<'a> {
    fn regex_prim(&mut self, pattern: Option<&str>, json_type: Option<&str>) -> Result<Prim, String> {
        let number = json_type == Some("number");
        let Some(pattern) = pattern else {
            // no pattern: a plain string (or number)
            return Ok(if number { Prim::Decimal } else { Prim::String });
        };
        let key = (pattern.to_string(), number);
        if let Some(&index) = self.regex_ids.get(&key) {
            return Ok(Prim::Regex { index, number });
        }
        let re = regex::Regex::new(pattern).map_err(|e| format!("bad pattern {pattern}: {e}"))?;
        let index = u16::try_from(self.regexes.len()).map_err(|_| "too many patterns".to_string())?;
        self.regexes.push(re);
        self.regex_ids.insert(key, index);
        Ok(Prim::Regex { index, number })
    }

    fn prop(&mut self, pname: &str, raw: &RawProp) -> Result<Prop, String> {
        let underscore = pname.starts_with('_');
        if let Some(items) = &raw.items {
            if raw.json_type.as_deref() != Some("array") {
                return Err("items without type array".into());
            }
            let kind = self.kind(items)?;
            let nulls_in_array = underscore || matches!(kind, Kind::Prim(_) | Kind::Enum(_));
            return Ok(Prop { kind, array: true, nulls_in_array, required_bit: 0 });
        }
        let kind = self.kind(raw)?;
        Ok(Prop { kind, array: false, nulls_in_array: false, required_bit: 0 })
    }

    fn kind(&mut self, raw: &RawProp) -> Result<Kind, String> {
        if let Some(r) = &raw.reference {
            let target = r.rsplit('/').next().unwrap_or(r);
            if target == "ResourceList" || target == "Resource" {
                return Ok(Kind::Resource);
            }
            if let Some(&id) = self.complex_ids.get(target) {
                return Ok(Kind::Complex(id));
            }
            if let Some(&p) = self.prims.get(target) {
                return Ok(Kind::Prim(p));
            }
            if self.defs.contains_key(target) {
                return Err(format!("reference to excluded definition {target}"));
            }
            return Err(format!("unknown reference {r}"));
        }
        if raw.constant.is_some() {
            return Ok(Kind::ResourceType);
        }
        if let Some(values) = &raw.enumeration {
            if let Some(&id) = self.enum_ids.get(values) {
                return Ok(Kind::Enum(id));
            }
            let id = u16::try_from(self.enums.len()).map_err(|_| "too many enums".to_string())?;
            self.enums.push(values.iter().map(|v| v.clone().into_boxed_str()).collect());
            self.enum_ids.insert(values.clone(), id);
            return Ok(Kind::Enum(id));
        }
        if let Some(p) = &raw.pattern {
            if let Some(&prim) = self.patterns.get(p.as_str()) {
                return Ok(Kind::Prim(prim));
            }
            let p = p.clone();
            return Ok(Kind::Prim(self.regex_prim(Some(&p), raw.json_type.as_deref())?));
        }
        match raw.json_type.as_deref() {
            Some("string") => Ok(Kind::Prim(Prim::String)),
            Some("number") => Ok(Kind::Prim(Prim::Decimal)),
            Some("boolean") => Ok(Kind::Prim(Prim::Boolean)),
            other => Err(format!("unsupported property schema (type {other:?})")),
        }
    }
}
