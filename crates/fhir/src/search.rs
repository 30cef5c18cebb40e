//! Parsing FHIR search query strings into typed search requests.
//!
//! The parser knows nothing about storage: it resolves each parameter against the registry,
//! checks modifiers and values against the parameter's type, and produces a `SearchRequest` that
//! the store turns into SQL. Every mistake a client can make becomes a `SearchError` with a
//! message fit for an OperationOutcome.

use crate::datetime::{parse_range, DateRange};
use crate::normalize::normalize_string;
use crate::registry::{ParamType, Registry};

pub const DEFAULT_COUNT: usize = 50;
pub const MAX_COUNT: usize = 1000;
/// The most values (across all parameters, comma lists included) one search may carry; keeps
/// every search within the databases' limits on bound parameters.
pub const MAX_VALUES: usize = 1000;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct SearchError {
    pub message: String,
}

fn err<T>(message: impl Into<String>) -> Result<T, SearchError> {
    Err(SearchError { message: message.into() })
}

/// Comparison prefixes for ordered types (date, number, quantity).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    Sa,
    Eb,
    Ap,
}

impl Prefix {
    /// Split a leading two-letter prefix off a value (`ge2015` -> (Ge, "2015")).
    fn split(value: &str) -> (Prefix, &str) {
        let table = [
            ("eq", Prefix::Eq),
            ("ne", Prefix::Ne),
            ("gt", Prefix::Gt),
            ("lt", Prefix::Lt),
            ("ge", Prefix::Ge),
            ("le", Prefix::Le),
            ("sa", Prefix::Sa),
            ("eb", Prefix::Eb),
            ("ap", Prefix::Ap),
        ];
        for (text, prefix) in table {
            if let Some(rest) = value.strip_prefix(text) {
                return (prefix, rest);
            }
        }
        (Prefix::Eq, value)
    }
}

/// Which system a token value names.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenSystem {
    /// `code` — any system
    Any,
    /// `|code` — no system
    None,
    /// `system|code` or `system|`
    Is(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum SearchValue {
    /// Normalized (lower case, no diacritics) for default/contains; raw for `:exact`.
    String {
        normalized: String,
        raw: String,
    },
    Token {
        system: TokenSystem,
        code: Option<String>,
    },
    /// `:text` on a token: normalized text prefix.
    TokenText(String),
    Reference {
        target_type: Option<String>,
        target_id: Option<String>,
        url: Option<String>,
    },
    Date {
        prefix: Prefix,
        range: DateRange,
    },
    /// Number with the implicit precision range of the value as written (`100` is [99.5, 100.5)).
    Number {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
    },
    Quantity {
        prefix: Prefix,
        value: f64,
        low: f64,
        high: f64,
        system: Option<String>,
        code: Option<String>,
    },
    Uri(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modifier {
    None,
    Exact,
    Contains,
    Not,
    Text,
    Missing,
    Below,
    Above,
    /// `subject:Patient=123`
    Type,
}

/// What a term tests.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    /// `_id`, compared against the stored id column.
    Id,
    /// `_lastUpdated`, compared against the stored timestamp column.
    LastUpdated,
    /// A search parameter of the index tables.
    Param { code: String, kind: ParamType },
}

/// One `name[:modifier]=v1,v2` pair: the values are ORed; terms are ANDed.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchTerm {
    pub target: Target,
    pub modifier: Modifier,
    /// For `:missing` this is empty and `missing` is set.
    pub values: Vec<SearchValue>,
    pub missing: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SortKey {
    pub target: Target,
    pub descending: bool,
}

/// `_include=Source:param[:Target]` / `_revinclude=...`
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    pub source_type: String,
    /// `None` for `*` (every reference parameter)
    pub param: Option<String>,
    pub target_type: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    Count,
    Data,
    Text,
    False,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    None,
    Accurate,
    /// The default: the total is reported when it is known without counting (all matches fit
    /// in the first page).
    Estimate,
}

#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    pub resource_type: String,
    pub terms: Vec<SearchTerm>,
    pub count: usize,
    pub sort: Vec<SortKey>,
    pub includes: Vec<Include>,
    pub revincludes: Vec<Include>,
    pub summary: Option<Summary>,
    pub elements: Option<Vec<String>>,
    pub total: TotalMode,
    /// Opaque keyset cursor of a `next` link.
    pub cursor: Option<String>,
    /// Parameters ignored under `Prefer: handling=lenient`.
    pub ignored: Vec<String>,
}

/// How unknown or unsupported parameters are treated (`Prefer: handling=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    Strict,
    Lenient,
}

/// Parameters that control the result rather than select resources.
const RESULT_PARAMS: &[&str] =
    &["_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_format", "_pretty", "_cursor"];

/// Parse `(name, value)` pairs (already percent-decoded) for a search on `resource_type`.
pub fn parse(
    registry: &Registry,
    resource_type: &str,
    pairs: &[(String, String)],
    handling: Handling,
) -> Result<SearchRequest, SearchError> {
    let mut request = SearchRequest {
        resource_type: resource_type.to_string(),
        terms: Vec::new(),
        count: DEFAULT_COUNT,
        sort: Vec::new(),
        includes: Vec::new(),
        revincludes: Vec::new(),
        summary: None,
        elements: None,
        total: TotalMode::Estimate,
        cursor: None,
        ignored: Vec::new(),
    };
    for (name, value) in pairs {
        if name.chars().chain(value.chars()).any(|c| c < ' ' && !matches!(c, '\t' | '\n' | '\r')) {
            return err(format!("search parameter '{}' contains control characters", name.escape_debug()));
        }
        if RESULT_PARAMS.contains(&name.as_str()) {
            parse_result_param(registry, resource_type, name, value, &mut request)?;
            continue;
        }
        match parse_term(registry, resource_type, name, value) {
            Ok(term) => request.terms.push(term),
            Err(e) if handling == Handling::Lenient && e.is_unknown_param => {
                request.ignored.push(name.clone());
            }
            Err(e) => return Err(e.error),
        }
    }
    let values: usize = request.terms.iter().map(|t| t.values.len().max(1)).sum();
    if values > MAX_VALUES {
        return err(format!("this search has {values} values; at most {MAX_VALUES} are accepted"));
    }
    Ok(request)
}

fn parse_result_param(
    registry: &Registry,
    resource_type: &str,
    name: &str,
    value: &str,
    request: &mut SearchRequest,
) -> Result<(), SearchError> {
    match name {
        "_count" => {
            let n: usize = value.parse().map_err(|_| SearchError {
                message: format!("_count must be a non-negative integer, got '{value}'"),
            })?;
            request.count = n.min(MAX_COUNT);
        }
        "_sort" => {
            for key in value.split(',').filter(|k| !k.is_empty()) {
                let (descending, code) = match key.strip_prefix('-') {
                    Some(code) => (true, code),
                    None => (false, key),
                };
                let target = resolve_target(registry, resource_type, code).ok_or_else(|| SearchError {
                    message: format!("unknown sort parameter '{code}' for {resource_type}"),
                })?;
                if let Target::Param { kind, .. } = &target {
                    if matches!(kind, ParamType::Composite | ParamType::Special) {
                        return err(format!("sorting by '{code}' is not supported"));
                    }
                }
                request.sort.push(SortKey { target, descending });
            }
        }
        "_include" | "_revinclude" => {
            let include = parse_include(registry, value, if name == "_include" { Some(resource_type) } else { None })?;
            if name == "_include" {
                request.includes.push(include);
            } else {
                request.revincludes.push(include);
            }
        }
        "_summary" => {
            request.summary = Some(match value {
                "count" => Summary::Count,
                "data" => Summary::Data,
                "text" => Summary::Text,
                "false" => Summary::False,
                other => return err(format!("_summary={other} is not supported (count, data, text, false)")),
            });
        }
        "_elements" => {
            let elements: Vec<String> =
                value.split(',').map(str::trim).filter(|e| !e.is_empty()).map(String::from).collect();
            request.elements = Some(elements);
        }
        "_total" => {
            request.total = match value {
                "none" => TotalMode::None,
                "accurate" => TotalMode::Accurate,
                "estimate" => TotalMode::Estimate,
                other => return err(format!("_total={other} is not valid (none, estimate, accurate)")),
            };
        }
        "_format" if !matches!(value, "json" | "application/json" | "application/fhir+json") => {
            return err(format!("_format={value} is not supported; this server speaks JSON only"));
        }
        "_cursor" => request.cursor = Some(value.to_string()),
        _ => {} // _pretty: output is always compact
    }
    Ok(())
}

fn parse_include(registry: &Registry, value: &str, required_source: Option<&str>) -> Result<Include, SearchError> {
    let mut parts = value.split(':');
    let source_type = parts.next().unwrap_or_default();
    let param = parts.next();
    let target_type = parts.next().filter(|t| *t != "iterate");
    if !registry.is_resource_type(source_type) {
        return err(format!("_include/_revinclude '{value}': unknown resource type '{source_type}'"));
    }
    if let Some(required) = required_source {
        if source_type != required {
            return err(format!("_include '{value}' must start with the searched type {required}"));
        }
    }
    let param = match param {
        None => return err(format!("_include/_revinclude '{value}' needs the form Type:parameter[:TargetType]")),
        Some("*") => None,
        Some(code) => match registry.param(source_type, code) {
            Some(def) if def.kind == ParamType::Reference => Some(code.to_string()),
            Some(_) => return err(format!("'{code}' on {source_type} is not a reference parameter")),
            None => return err(format!("unknown parameter '{code}' on {source_type}")),
        },
    };
    if let Some(t) = target_type {
        if !registry.is_resource_type(t) {
            return err(format!("_include '{value}': unknown target type '{t}'"));
        }
    }
    Ok(Include { source_type: source_type.to_string(), param, target_type: target_type.map(String::from) })
}

fn resolve_target(registry: &Registry, resource_type: &str, code: &str) -> Option<Target> {
    match code {
        "_id" => Some(Target::Id),
        "_lastUpdated" => Some(Target::LastUpdated),
        _ => registry.param(resource_type, code).map(|def| Target::Param { code: def.code.clone(), kind: def.kind }),
    }
}

struct TermError {
    error: SearchError,
    is_unknown_param: bool,
}

impl From<SearchError> for TermError {
    fn from(error: SearchError) -> Self {
        TermError { error, is_unknown_param: false }
    }
}

fn unknown(message: String) -> TermError {
    TermError { error: SearchError { message }, is_unknown_param: true }
}

fn parse_term(registry: &Registry, resource_type: &str, name: &str, value: &str) -> Result<SearchTerm, TermError> {
    let (code, modifier_text) = match name.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (name, None),
    };
    if code.contains('.') {
        return Err(unknown(format!("chained parameter '{name}' is not supported")));
    }
    if code == "_has" || code.starts_with("_has") {
        return Err(unknown(format!("'{name}': _has is not supported")));
    }
    let target = resolve_target(registry, resource_type, code)
        .ok_or_else(|| unknown(format!("unknown search parameter '{code}' for {resource_type}")))?;
    let kind = match &target {
        Target::Id => ParamType::Token,
        Target::LastUpdated => ParamType::Date,
        Target::Param { kind, .. } => *kind,
    };
    if matches!(kind, ParamType::Composite | ParamType::Special) {
        return Err(unknown(format!("search parameter '{code}' ({kind:?}) is not supported")));
    }
    let (modifier, type_modifier) = parse_modifier(modifier_text, kind, registry).map_err(TermError::from)?;
    if modifier == Modifier::Missing {
        let missing = match value {
            "true" => true,
            "false" => false,
            other => {
                return Err(SearchError { message: format!("{name}: expected true or false, got '{other}'") }.into())
            }
        };
        if matches!(target, Target::Id | Target::LastUpdated) {
            return Err(SearchError { message: format!("{name}: :missing is not meaningful here") }.into());
        }
        return Ok(SearchTerm { target, modifier, values: Vec::new(), missing: Some(missing) });
    }
    let mut values = Vec::new();
    for raw in split_unescaped(value, ',') {
        if raw.is_empty() {
            continue;
        }
        let v = parse_value(&target, kind, modifier, type_modifier.as_deref(), &raw, name)?;
        values.push(v);
    }
    if values.is_empty() {
        return Err(SearchError { message: format!("search parameter '{name}' has no value") }.into());
    }
    Ok(SearchTerm { target, modifier, values, missing: None })
}

fn parse_modifier(
    modifier: Option<&str>,
    kind: ParamType,
    registry: &Registry,
) -> Result<(Modifier, Option<String>), SearchError> {
    let Some(m) = modifier else { return Ok((Modifier::None, None)) };
    let parsed = match (m, kind) {
        ("missing", _) => Modifier::Missing,
        ("exact", ParamType::String) => Modifier::Exact,
        ("contains", ParamType::String) => Modifier::Contains,
        ("not", ParamType::Token) => Modifier::Not,
        ("text", ParamType::Token) => Modifier::Text,
        ("below", ParamType::Uri) => Modifier::Below,
        ("above", ParamType::Uri) => Modifier::Above,
        (t, ParamType::Reference) if registry.is_resource_type(t) => return Ok((Modifier::Type, Some(t.to_string()))),
        (other, _) => return err(format!("modifier ':{other}' is not supported for {kind:?} parameters")),
    };
    Ok((parsed, None))
}

fn parse_value(
    target: &Target,
    kind: ParamType,
    modifier: Modifier,
    type_modifier: Option<&str>,
    raw: &str,
    name: &str,
) -> Result<SearchValue, SearchError> {
    match kind {
        ParamType::String => Ok(SearchValue::String { normalized: normalize_string(raw), raw: raw.to_string() }),
        ParamType::Token if modifier == Modifier::Text => Ok(SearchValue::TokenText(normalize_string(raw))),
        ParamType::Token => {
            if *target == Target::Id {
                return Ok(SearchValue::Token { system: TokenSystem::Any, code: Some(raw.to_string()) });
            }
            let parts = split_unescaped(raw, '|');
            match parts.as_slice() {
                [code] => Ok(SearchValue::Token { system: TokenSystem::Any, code: Some(code.clone()) }),
                [system, code] => {
                    let system = if system.is_empty() { TokenSystem::None } else { TokenSystem::Is(system.clone()) };
                    let code = if code.is_empty() { None } else { Some(code.clone()) };
                    if system == TokenSystem::None && code.is_none() {
                        return err(format!("{name}: '|' alone is not a token"));
                    }
                    Ok(SearchValue::Token { system, code })
                }
                _ => err(format!("{name}: a token has at most one unescaped '|': '{raw}'")),
            }
        }
        ParamType::Reference => parse_reference(raw, type_modifier),
        ParamType::Date => {
            let (prefix, rest) = Prefix::split(raw);
            let range = parse_range(rest).ok_or_else(|| SearchError {
                message: format!("{name}: '{rest}' is not a valid FHIR date or dateTime"),
            })?;
            Ok(SearchValue::Date { prefix, range })
        }
        ParamType::Number => {
            let (prefix, rest) = Prefix::split(raw);
            let (value, low, high) = parse_number(rest)
                .ok_or_else(|| SearchError { message: format!("{name}: '{rest}' is not a number") })?;
            Ok(SearchValue::Number { prefix, value, low, high })
        }
        ParamType::Quantity => {
            let (prefix, rest) = Prefix::split(raw);
            let parts = split_unescaped(rest, '|');
            let (number, system, code) = match parts.as_slice() {
                [n] => (n.as_str(), None, None),
                [n, s, c] => {
                    (n.as_str(), Some(s.clone()).filter(|s| !s.is_empty()), Some(c.clone()).filter(|c| !c.is_empty()))
                }
                _ => return err(format!("{name}: a quantity is number or number|system|code, got '{raw}'")),
            };
            let (value, low, high) = parse_number(number)
                .ok_or_else(|| SearchError { message: format!("{name}: '{number}' is not a number") })?;
            Ok(SearchValue::Quantity { prefix, value, low, high, system, code })
        }
        ParamType::Uri => Ok(SearchValue::Uri(raw.to_string())),
        ParamType::Composite | ParamType::Special => err(format!("{name}: not supported")),
    }
}

fn parse_reference(raw: &str, type_modifier: Option<&str>) -> Result<SearchValue, SearchError> {
    let is_absolute = raw.starts_with("http://") || raw.starts_with("https://") || raw.starts_with("urn:");
    if is_absolute {
        // The store strips its own base URL; anything else is matched as a URL.
        return Ok(SearchValue::Reference { target_type: None, target_id: None, url: Some(raw.to_string()) });
    }
    let segments: Vec<&str> = raw.split('/').collect();
    let (target_type, target_id) = match segments.as_slice() {
        [id] => (type_modifier.map(String::from), (*id).to_string()),
        [t, id] => (Some((*t).to_string()), (*id).to_string()),
        [t, id, "_history", _] => (Some((*t).to_string()), (*id).to_string()),
        _ => return err(format!("'{raw}' is not a reference (id, Type/id or URL)")),
    };
    if let (Some(t), Some(m)) = (&target_type, type_modifier) {
        if t != m {
            return err(format!("reference '{raw}' contradicts the modifier :{m}"));
        }
    }
    if !is_valid_id(&target_id) {
        return err(format!("'{target_id}' is not a valid resource id"));
    }
    Ok(SearchValue::Reference { target_type, target_id: Some(target_id), url: None })
}

/// A number with the range implied by its precision: `100` → [99.5, 100.5), `1.5` → [1.45, 1.55).
fn parse_number(text: &str) -> Option<(f64, f64, f64)> {
    let valid =
        !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if !valid {
        return None;
    }
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let mantissa = text.split(['e', 'E']).next().unwrap_or(text);
    let exponent: i32 = text.split(['e', 'E']).nth(1).and_then(|e| e.parse().ok()).unwrap_or(0);
    let decimals = mantissa.split_once('.').map(|(_, frac)| frac.len() as i32).unwrap_or(0);
    let half_step = 0.5 * 10f64.powi(exponent - decimals);
    Some((value, value - half_step, value + half_step))
}

/// FHIR ids: 1-64 of `[A-Za-z0-9\-\.]`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Split on `sep` unless escaped with a backslash; `\\`, `\,`, `\|`, `\$` unescape.
fn split_unescaped(value: &str, sep: char) -> Vec<String> {
    let mut parts = Vec::new();
    let mut current = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some(next) if next == sep => current.push(next),
                Some(next) => {
                    // Keep escapes meant for a later split level intact.
                    if sep == ',' {
                        current.push('\\');
                    }
                    current.push(next);
                }
                None => current.push('\\'),
            }
        } else if c == sep {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(q: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
    }

    fn parse_q(t: &str, q: &str) -> Result<SearchRequest, SearchError> {
        parse(Registry::r4(), t, &pairs(q), Handling::Strict)
    }

    #[test]
    fn token_forms() {
        let r = parse_q("Observation", "code=http://loinc.org|4548-4,|x,sys|").unwrap();
        assert_eq!(
            r.terms[0].values,
            vec![
                SearchValue::Token { system: TokenSystem::Is("http://loinc.org".into()), code: Some("4548-4".into()) },
                SearchValue::Token { system: TokenSystem::None, code: Some("x".into()) },
                SearchValue::Token { system: TokenSystem::Is("sys".into()), code: None },
            ]
        );
    }

    #[test]
    fn escaped_comma_stays_in_value() {
        let r = parse_q("Patient", r"name=a\,b,c").unwrap();
        assert_eq!(r.terms[0].values.len(), 2);
        assert_eq!(r.terms[0].values[0], SearchValue::String { normalized: "a,b".into(), raw: "a,b".into() });
    }

    #[test]
    fn date_prefixes_and_errors() {
        let r = parse_q("Observation", "date=ge2015-01-01&date=lt2016").unwrap();
        assert_eq!(r.terms.len(), 2);
        assert!(matches!(r.terms[0].values[0], SearchValue::Date { prefix: Prefix::Ge, .. }));
        assert!(parse_q("Observation", "date=2015-13-01").is_err());
        assert!(parse_q("Observation", "date=yesterday").is_err());
    }

    #[test]
    fn unknown_parameter_strict_and_lenient() {
        assert!(parse_q("Patient", "foo=bar").is_err());
        let r = parse(Registry::r4(), "Patient", &pairs("foo=bar&name=x"), Handling::Lenient).unwrap();
        assert_eq!(r.ignored, vec!["foo".to_string()]);
        assert_eq!(r.terms.len(), 1);
    }

    #[test]
    fn bad_modifiers_are_errors() {
        assert!(parse_q("Patient", "name:not=x").is_err());
        assert!(parse_q("Patient", "gender:exact=x").is_err());
        assert!(parse_q("Patient", "gender:missing=maybe").is_err());
        assert!(parse_q("Observation", "subject:Patient=123").is_ok());
        assert!(parse_q("Observation", "subject:Patient=Group/1").is_err());
    }

    #[test]
    fn too_many_values_is_an_error() {
        let many = (0..1001).map(|i| format!("id{i}")).collect::<Vec<_>>().join(",");
        let e = parse_q("Patient", &format!("_id={many}")).unwrap_err();
        assert!(e.message.contains("at most 1000"));
        assert!(parse_q(
            "Patient",
            &format!("_id={}", (0..1000).map(|i| format!("i{i}")).collect::<Vec<_>>().join(","))
        )
        .is_ok());
    }

    #[test]
    fn number_precision() {
        let (v, lo, hi) = parse_number("100").unwrap();
        assert_eq!((v, lo, hi), (100.0, 99.5, 100.5));
        let (_, lo, hi) = parse_number("1.5").unwrap();
        assert!((lo - 1.45).abs() < 1e-9 && (hi - 1.55).abs() < 1e-9);
        assert!(parse_number("abc").is_none());
        assert!(parse_number("1e999").is_none());
    }

    #[test]
    fn result_params() {
        let r =
            parse_q("Observation", "_count=10&_sort=-date,_id&_include=Observation:patient&_total=accurate").unwrap();
        assert_eq!(r.count, 10);
        assert_eq!(r.sort.len(), 2);
        assert!(r.sort[0].descending);
        assert_eq!(r.includes[0].param.as_deref(), Some("patient"));
        assert_eq!(r.total, TotalMode::Accurate);
        assert!(parse_q("Observation", "_count=-1").is_err());
        assert!(parse_q("Observation", "_include=Patient:organization").is_err());
        assert!(parse_q("Observation", "_revinclude=Provenance:target").is_ok());
    }
}
