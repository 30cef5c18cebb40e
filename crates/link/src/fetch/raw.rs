//! Resources as Link handles them in bulk: the top level parsed into a map of raw JSON values
//! (each field's text kept as it came), so that routing, date checks and tagging read only the
//! few fields they need and passing a resource on is a copy of its text, not a parse into a tree
//! and a serialisation back.

use indexmap::IndexMap;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::request::Group;

/// One resource: its top-level fields, each as raw JSON text.
#[derive(Debug)]
pub struct RawResource {
    fields: IndexMap<String, Box<RawValue>>,
}

/// A search answer's page: its entries' resources raw, its links.
#[derive(Debug, Deserialize)]
pub struct Page {
    #[serde(rename = "resourceType")]
    pub resource_type: Option<String>,
    #[serde(default)]
    pub link: Vec<PageLink>,
    #[serde(default)]
    pub entry: Vec<PageEntry>,
}

#[derive(Debug, Deserialize)]
pub struct PageLink {
    pub relation: Option<String>,
    pub url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PageEntry {
    pub search: Option<PageSearch>,
    pub resource: Option<Box<RawValue>>,
}

#[derive(Debug, Deserialize)]
pub struct PageSearch {
    pub mode: Option<String>,
}

impl Page {
    pub fn next(&self) -> Option<&str> {
        self.link.iter().find(|l| l.relation.as_deref() == Some("next")).and_then(|l| l.url.as_deref())
    }
}

impl RawResource {
    /// Parse a resource's top level (an error when it is not a JSON object).
    pub fn parse(text: &str) -> Result<RawResource, serde_json::Error> {
        Ok(RawResource { fields: serde_json::from_str(text)? })
    }

    fn string(&self, name: &str) -> Option<String> {
        self.fields.get(name).and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    }

    /// One field as a value tree (for the few fields a check needs).
    pub fn field(&self, name: &str) -> Option<Value> {
        self.fields.get(name).and_then(|raw| serde_json::from_str(raw.get()).ok())
    }

    pub fn resource_type(&self) -> Option<String> {
        self.string("resourceType")
    }

    pub fn id(&self) -> Option<String> {
        self.string("id")
    }

    /// An R4 resource type and a valid id.
    pub fn well_formed(&self) -> bool {
        let t = self.resource_type().unwrap_or_default();
        let id = self.id().unwrap_or_default();
        fhir::Registry::r4().is_resource_type(&t) && fhir::search::is_valid_id(&id)
    }

    /// The group the resource belongs to (Observations by category).
    pub fn group(&self) -> Option<Group> {
        let t = self.resource_type()?;
        if t == "Observation" {
            let category = self.field("category").unwrap_or(Value::Null);
            return Group::of(&serde_json::json!({"resourceType": "Observation", "category": category}));
        }
        Group::parse(&t).filter(|g| !matches!(g, Group::Vitals | Group::Labs))
    }

    /// The group's date of the resource, as a range.
    pub fn date(&self, group: Group) -> Option<fhir::datetime::DateRange> {
        group.date_paths().iter().find_map(|path| {
            let (first, rest) = path.split_first()?;
            let value = self.field(first)?;
            let mut v = &value;
            for key in rest {
                v = v.get(key)?;
            }
            v.as_str().and_then(fhir::datetime::parse_range)
        })
    }

    /// Say where the resource came from: `meta.source` and the endpoint tag (replacing an
    /// earlier one of the same system).
    pub fn tag_source(&mut self, fhir_base: &str, tag_system: &str, endpoint: &str) {
        let mut meta = match self.field("meta") {
            Some(Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        meta.insert("source".into(), Value::String(fhir_base.to_owned()));
        let tags = meta.entry("tag").or_insert_with(|| Value::Array(Vec::new()));
        if !tags.is_array() {
            *tags = Value::Array(Vec::new());
        }
        if let Some(tags) = tags.as_array_mut() {
            tags.retain(|t| t.get("system").and_then(Value::as_str) != Some(tag_system));
            tags.push(serde_json::json!({"system": tag_system, "code": endpoint}));
        }
        if let Ok(raw) = serde_json::value::to_raw_value(&Value::Object(meta)) {
            self.fields.insert("meta".into(), raw);
        }
    }

    /// The resource's JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(&self.fields).unwrap_or_default()
    }

    /// Append the resource's JSON text to `out` (UTF-8, as serde_json writes).
    pub fn write_to(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        serde_json::to_writer(out, &self.fields)
    }

    /// Every `"reference": "…"` string in the resource, found in its text.
    pub fn references(&self) -> Vec<String> {
        let mut out = Vec::new();
        for raw in self.fields.values() {
            scan_references(raw.get(), &mut out);
        }
        out
    }

    /// A rough size of the resource's text (to size buffers).
    pub fn text_len(&self) -> usize {
        self.fields.iter().map(|(k, v)| k.len() + v.get().len() + 4).sum()
    }
}

/// The strings that follow `"reference":` keys in JSON text.
pub fn scan_references(text: &str, out: &mut Vec<String>) {
    const KEY: &str = "\"reference\"";
    // Built once: a searcher costs more to set up than most fields take to scan.
    static FINDER: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::Finder::new(KEY.as_bytes()));
    let mut rest = text;
    while let Some(at) = FINDER.find(rest.as_bytes()) {
        rest = &rest[at + KEY.len()..];
        let after_colon = rest.trim_start().strip_prefix(':').map(str::trim_start);
        let Some(value) = after_colon.filter(|v| v.starts_with('"')) else { continue };
        // The string's end: the next quote not escaped.
        let bytes = value.as_bytes();
        let mut i = 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        if let Some(literal) = value.get(..=i) {
            if let Ok(s) = serde_json::from_str::<String>(literal) {
                out.push(s);
            }
        }
        rest = value.get(i..).unwrap_or_default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_and_tagged_without_touching_the_rest() {
        let text = r#"{"resourceType":"Observation","id":"o1","meta":{"versionId":"3"},"category":[{"coding":[{"code":"laboratory"}]}],"effectivePeriod":{"start":"2021-05-01"},"valueQuantity":{"value":5.40},"performer":[{"reference":"Practitioner/p1"},{"display":"x","reference" : "Organization/o\"1"}]}"#;
        let mut r = RawResource::parse(text).unwrap();
        assert_eq!((r.resource_type().as_deref(), r.id().as_deref()), (Some("Observation"), Some("o1")));
        assert!(r.well_formed());
        assert_eq!(r.group(), Some(Group::Labs));
        assert!(r.date(Group::Labs).is_some());
        assert_eq!(r.references(), vec!["Practitioner/p1", "Organization/o\"1"]);
        r.tag_source("https://p/fhir", "urn:sys", "ep_1");
        let out: Value = serde_json::from_str(&r.to_text()).unwrap();
        assert_eq!(out["meta"]["versionId"], "3");
        assert_eq!(out["meta"]["source"], "https://p/fhir");
        assert_eq!(out["meta"]["tag"][0]["code"], "ep_1");
        assert!(r.to_text().contains("\"value\":5.40"), "numbers keep their text: {}", r.to_text());
        assert!(RawResource::parse("[1]").is_err());
        assert!(!RawResource::parse(r#"{"resourceType":"Nope","id":"x"}"#).unwrap().well_formed());
    }

    #[test]
    fn pages_keep_entries_raw() {
        let page: Page = serde_json::from_str(
            r#"{"resourceType":"Bundle","link":[{"relation":"next","url":"https://p/fhir/Observation?page=2"}],
                "entry":[{"search":{"mode":"match"},"resource":{"resourceType":"Observation","id":"a"}},{"search":{"mode":"outcome"},"resource":{"resourceType":"OperationOutcome"}}]}"#,
        )
        .unwrap();
        assert_eq!(page.next(), Some("https://p/fhir/Observation?page=2"));
        assert_eq!(page.entry.len(), 2);
        assert_eq!(page.entry[0].resource.as_ref().unwrap().get(), r#"{"resourceType":"Observation","id":"a"}"#);
    }
}
