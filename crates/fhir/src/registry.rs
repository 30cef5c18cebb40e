//! Resource types and search parameters, from the embedded official R4 definitions.
//!
//! Built once per process ([`Registry::r4`]). Every search parameter expression is split per base
//! type and compiled to a [`fhirpath::Expr`] at build time, so indexing never parses FHIRPath.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::OnceLock;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::fhirpath::{self, Expr};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamType {
    Number,
    Date,
    String,
    Token,
    Reference,
    Composite,
    Quantity,
    Uri,
    Special,
}

impl ParamType {
    /// The SearchParameter.type code (`token`, `reference`, ...).
    pub fn from_code(code: &str) -> Option<ParamType> {
        Some(match code {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            "special" => ParamType::Special,
            _ => return None,
        })
    }
}

/// One search parameter as it applies to one resource type.
#[derive(Debug, Clone)]
pub struct SearchParamDef {
    /// e.g. `patient`
    pub code: String,
    /// the resource type it is defined on for this entry, e.g. `Observation` (`Resource` for `_tag`...)
    pub resource_type: String,
    pub kind: ParamType,
    /// the part of the official FHIRPath expression that applies to `resource_type`
    pub expression: String,
    /// allowed target resource types for references (empty otherwise)
    pub targets: Vec<String>,
}

/// The parameters of one type (or the common `Resource` ones), with their compiled expressions.
#[derive(Default)]
struct ParamTable {
    defs: Vec<SearchParamDef>,
    /// Parallel to `defs`; `None` when the parameter has no expression (or it did not parse).
    compiled: Vec<Option<Expr>>,
    by_code: HashMap<String, usize>,
}

impl ParamTable {
    fn insert(&mut self, def: SearchParamDef, compiled: Option<Expr>) {
        self.by_code.insert(def.code.clone(), self.defs.len());
        self.defs.push(def);
        self.compiled.push(compiled);
    }
    fn get(&self, code: &str) -> Option<&SearchParamDef> {
        self.by_code.get(code).map(|&i| &self.defs[i])
    }
    fn compiled(&self) -> impl Iterator<Item = (&SearchParamDef, &Expr)> {
        self.defs.iter().zip(&self.compiled).filter_map(|(def, expr)| Some((def, expr.as_ref()?)))
    }
}

#[derive(Default)]
pub struct Registry {
    resource_types: BTreeSet<String>,
    /// Type-specific parameters by resource type.
    by_type: HashMap<String, ParamTable>,
    /// Parameters defined on `Resource` / `DomainResource`, which apply to every type.
    common: ParamTable,
    patient_compartment: HashMap<String, Vec<String>>,
    /// Expressions the FHIRPath subset could not parse: `Type.code: error`.
    expression_errors: Vec<String>,
}

const SEARCH_PARAMETERS: &str = include_str!("../definitions/search-parameters.json");
const PATIENT_COMPARTMENT: &str = include_str!("../definitions/compartmentdefinition-patient.json");
const SCHEMA: &str = include_str!("../definitions/fhir.schema.json");

/// Abstract bases whose parameters apply to all resource types.
fn is_abstract_base(name: &str) -> bool {
    name == "Resource" || name == "DomainResource"
}

impl Registry {
    /// The process-wide registry built once from the embedded definitions.
    pub fn r4() -> &'static Registry {
        static R4: OnceLock<Registry> = OnceLock::new();
        R4.get_or_init(|| {
            Registry::from_definitions(SEARCH_PARAMETERS, PATIENT_COMPARTMENT, SCHEMA).unwrap_or_else(|e| {
                // The embedded files are tested to parse (see tests); this is only a safety net.
                eprintln!("fhir: embedded R4 definitions failed to load: {e}");
                Registry::default()
            })
        })
    }

    /// Build from the JSON of a SearchParameter Bundle, the Patient CompartmentDefinition and the
    /// FHIR JSON schema (whose `discriminator.mapping` names the resource types).
    pub fn from_definitions(
        search_parameters: &str,
        patient_compartment: &str,
        schema: &str,
    ) -> Result<Registry, serde_json::Error> {
        let bundle: raw::Bundle = serde_json::from_str(search_parameters)?;
        let compartment: raw::CompartmentDefinition = serde_json::from_str(patient_compartment)?;
        let schema: raw::Schema = serde_json::from_str(schema)?;

        // The bundled schema also carries non-HL7 types (it comes from a server distribution);
        // the CompartmentDefinition lists every R4 resource type except Parameters, so use it to
        // keep only R4 types.
        let listed: BTreeSet<&str> = compartment.resource.iter().map(|r| r.code.as_str()).collect();
        let mut registry = Registry {
            resource_types: schema
                .discriminator
                .mapping
                .into_keys()
                .filter(|name| listed.contains(name.as_str()) || name == "Parameters")
                .collect(),
            ..Registry::default()
        };

        for sp in bundle.entry.into_iter().map(|e| e.resource) {
            let Some(kind) = ParamType::from_code(&sp.kind) else {
                continue;
            };
            let expression = sp.expression.unwrap_or_default();
            let parts = split_union(&expression);
            for base in &sp.base {
                let mine: Vec<&str> = parts.iter().copied().filter(|p| root_type(p) == base).collect();
                let expression = match (mine.is_empty(), sp.base.len()) {
                    (false, _) => mine.join(" | "),
                    (true, 1) => expression.clone(),
                    (true, _) => String::new(),
                };
                let compiled = match expression.as_str() {
                    "" => None,
                    source => match fhirpath::parse(source) {
                        Ok(expr) => Some(expr),
                        Err(e) => {
                            registry.expression_errors.push(format!("{base}.{}: {e} in `{source}`", sp.code));
                            None
                        }
                    },
                };
                let def = SearchParamDef {
                    code: sp.code.clone(),
                    resource_type: base.clone(),
                    kind,
                    expression,
                    targets: sp.target.clone(),
                };
                let table = if is_abstract_base(base) {
                    &mut registry.common
                } else {
                    registry.by_type.entry(base.clone()).or_default()
                };
                table.insert(def, compiled);
            }
        }

        for resource in compartment.resource {
            if resource.param.is_empty() {
                continue;
            }
            let mut params = resource.param;
            // A Patient is in its own compartment ("{def}" in the CompartmentDefinition notation).
            if resource.code == "Patient" {
                params.insert(0, "{def}".to_owned());
            }
            registry.patient_compartment.insert(resource.code, params);
        }
        Ok(registry)
    }

    /// Is this an R4 resource type name?
    pub fn is_resource_type(&self, name: &str) -> bool {
        self.resource_types.contains(name)
    }

    /// Every R4 resource type name, sorted.
    pub fn resource_types(&self) -> Vec<&str> {
        self.resource_types.iter().map(String::as_str).collect()
    }

    /// Do the `Resource`/`DomainResource` parameters apply to `resource_type`?
    fn has_common_params(&self, resource_type: &str) -> bool {
        is_abstract_base(resource_type) || self.is_resource_type(resource_type)
    }

    /// The parameter `code` for `resource_type`, including the common ones (`_id`, `_lastUpdated`,
    /// `_tag`, `_profile`, `_security`, `_source`). Composite and special parameters are returned
    /// too (kind tells), so callers can say "not supported" rather than "unknown".
    pub fn param(&self, resource_type: &str, code: &str) -> Option<&SearchParamDef> {
        self.by_type
            .get(resource_type)
            .and_then(|t| t.get(code))
            .or_else(|| self.has_common_params(resource_type).then(|| self.common.get(code)).flatten())
    }

    /// All parameters that apply to `resource_type` (including common `Resource` ones).
    pub fn params_for(&self, resource_type: &str) -> Vec<&SearchParamDef> {
        self.tables(resource_type).flat_map(|t| &t.defs).collect()
    }

    /// The parameters of `resource_type` that have an expression, with that expression compiled.
    pub fn compiled_params<'a>(
        &'a self,
        resource_type: &str,
    ) -> impl Iterator<Item = (&'a SearchParamDef, &'a Expr)> + 'a {
        self.tables(resource_type).flat_map(ParamTable::compiled)
    }

    fn tables<'a>(&'a self, resource_type: &str) -> impl Iterator<Item = &'a ParamTable> + 'a {
        let common = self.has_common_params(resource_type).then_some(&self.common);
        self.by_type.get(resource_type).into_iter().chain(common)
    }

    /// Official expressions the FHIRPath subset does not parse (empty for R4; see tests).
    pub fn expression_errors(&self) -> &[String] {
        &self.expression_errors
    }

    /// Search parameter codes through which `resource_type` is in the Patient compartment
    /// (R4 CompartmentDefinition `patient`); empty when it is not in it. Patient -> ["{def}", "link"].
    pub fn patient_compartment_params(&self, resource_type: &str) -> &[String] {
        self.patient_compartment.get(resource_type).map_or(&[], Vec::as_slice)
    }

    /// Resource types that can be in the Patient compartment.
    pub fn patient_compartment_types(&self) -> Vec<&str> {
        let mut types: Vec<&str> = self.patient_compartment.keys().map(String::as_str).collect();
        types.sort_unstable();
        types
    }
}

/// Split an expression at its top-level `|` (not inside parentheses or string literals).
fn split_union(expression: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut in_string, mut start) = (0i32, false, 0);
    for (i, c) in expression.char_indices() {
        match c {
            '\'' => in_string = !in_string,
            '(' if !in_string => depth += 1,
            ')' if !in_string => depth -= 1,
            '|' if !in_string && depth == 0 => {
                parts.push(expression[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(expression[start..].trim());
    parts.retain(|p| !p.is_empty());
    parts
}

/// The type an expression part starts from: `Observation` for `(Observation.value as Quantity)`.
fn root_type(part: &str) -> &str {
    let part = part.trim_start_matches(['(', ' ']);
    let end = part.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(part.len());
    &part[..end]
}

/// The slices of the official JSON files the registry needs.
mod raw {
    use super::*;

    #[derive(Deserialize)]
    pub struct Bundle {
        pub entry: Vec<Entry>,
    }
    #[derive(Deserialize)]
    pub struct Entry {
        pub resource: SearchParameter,
    }
    #[derive(Deserialize)]
    pub struct SearchParameter {
        pub code: String,
        pub base: Vec<String>,
        #[serde(rename = "type")]
        pub kind: String,
        pub expression: Option<String>,
        #[serde(default)]
        pub target: Vec<String>,
    }
    #[derive(Deserialize)]
    pub struct CompartmentDefinition {
        pub resource: Vec<CompartmentResource>,
    }
    #[derive(Deserialize)]
    pub struct CompartmentResource {
        pub code: String,
        #[serde(default)]
        pub param: Vec<String>,
    }
    #[derive(Deserialize)]
    pub struct Schema {
        pub discriminator: Discriminator,
    }
    #[derive(Deserialize)]
    pub struct Discriminator {
        pub mapping: BTreeMap<String, IgnoredAny>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_top_level_unions_only() {
        assert_eq!(
            split_union("A.b | (B.c as Quantity) | C.d.where(system='a|b') | (D.e | D.f).g"),
            vec!["A.b", "(B.c as Quantity)", "C.d.where(system='a|b')", "(D.e | D.f).g"]
        );
        assert_eq!(root_type("(Observation.value as Quantity)"), "Observation");
        assert_eq!(root_type("Condition.abatement.as(Age)"), "Condition");
        assert_eq!(root_type("Observation"), "Observation");
    }
}
