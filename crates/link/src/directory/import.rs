//! Directory imports: a SMART User-access Brands bundle (Organizations with the brand and portal
//! extensions, their Endpoints), a plain FHIR bundle of Endpoints and Organizations (the same
//! reader: the extensions are optional), or CSV with a header row. Every entry is checked; what
//! cannot be used is reported with the reason, not silently dropped.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::{json, Value};

use super::brands::{FHIR_VERSION_EXT, PORTAL_EXT};
use super::{normalize_base, Category, EndpointInput};
use crate::error::{LinkError, Result};
use crate::Link;

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub added: usize,
    pub updated: usize,
    /// `(where, why)` for every entry not imported.
    pub skipped: Vec<(String, String)>,
}

/// `(where, why)` of an entry that was not imported.
pub type Skipped = (String, String);

/// The entries read from a file and those that could not be used.
pub type Parsed = (Vec<EndpointInput>, Vec<Skipped>);

/// Parse an import file: JSON (a Bundle) or CSV.
pub fn parse(text: &str, source: &str) -> Result<Parsed> {
    let trimmed = text.trim_start_matches('\u{feff}').trim_start();
    if trimmed.starts_with('{') {
        let value: Value = serde_json::from_str(trimmed)
            .map_err(|e| LinkError::bad_request(format!("the file is not valid JSON: {e}")))?;
        parse_bundle(&value, source)
    } else {
        parse_csv(trimmed, source)
    }
}

fn text_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
}

fn sub_extension<'a>(ext: &'a Value, url: &str) -> Vec<&'a Value> {
    ext.get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(url))
        .collect()
}

fn extensions<'a>(resource: &'a Value, url: &str) -> Vec<&'a Value> {
    resource
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(url))
        .collect()
}

fn value_string(ext: &Value) -> Option<String> {
    ["valueString", "valueUrl", "valueUri", "valueCode", "valueMarkdown"]
        .iter()
        .find_map(|k| text_of(ext, k))
        .map(String::from)
}

/// Read a Bundle of Organizations and Endpoints.
pub fn parse_bundle(bundle: &Value, source: &str) -> Result<Parsed> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(LinkError::bad_request("a directory file in JSON must be a FHIR Bundle"));
    }
    let entries = bundle.get("entry").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    // Every way an entry can be referred to: Type/id and its fullUrl.
    let mut keys: HashMap<String, usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(resource) = entry.get("resource") else { continue };
        if let (Some(t), Some(id)) = (text_of(resource, "resourceType"), text_of(resource, "id")) {
            keys.insert(format!("{t}/{id}"), i);
        }
        if let Some(full) = text_of(entry, "fullUrl") {
            keys.insert(full.to_owned(), i);
        }
    }
    let resolve = |reference: &str| -> Option<usize> {
        keys.get(reference).copied().or_else(|| {
            // An absolute reference ending in Type/id.
            let mut parts = reference.rsplit('/');
            let id = parts.next()?;
            let t = parts.next()?;
            keys.get(&format!("{t}/{id}")).copied()
        })
    };
    let resource = |i: usize| entries.get(i).and_then(|e| e.get("resource"));

    let mut skipped = Vec::new();
    // Endpoint entry index -> the directory entry built for it.
    let mut built: Vec<(usize, EndpointInput)> = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(org) = entry.get("resource").filter(|r| text_of(r, "resourceType") == Some("Organization")) else {
            continue;
        };
        let name = match text_of(org, "name") {
            Some(n) => n.to_owned(),
            None => {
                skipped.push((format!("entry[{i}] Organization"), "no name".to_owned()));
                continue;
            }
        };
        let portal = extensions(org, PORTAL_EXT);
        let mut references: Vec<String> = Vec::new();
        for p in &portal {
            for e in sub_extension(p, "portalEndpoint") {
                if let Some(r) = e.get("valueReference").and_then(|v| text_of(v, "reference")) {
                    references.push(r.to_owned());
                }
            }
        }
        for r in org.get("endpoint").and_then(Value::as_array).into_iter().flatten() {
            if let Some(r) = text_of(r, "reference") {
                references.push(r.to_owned());
            }
        }
        // An affiliated brand whose access is provided by its parent uses the parent's endpoints.
        let parent = org.get("partOf").and_then(|p| text_of(p, "reference")).and_then(resolve).and_then(resource);
        if references.is_empty() {
            for r in parent.and_then(|p| p.get("endpoint")).and_then(Value::as_array).into_iter().flatten() {
                if let Some(r) = text_of(r, "reference") {
                    references.push(r.to_owned());
                }
            }
        }
        if references.is_empty() {
            skipped.push((format!("entry[{i}] Organization {name}"), "no Endpoint".to_owned()));
            continue;
        }
        let category = if org
            .get("type")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .flat_map(|t| t.get("coding").and_then(Value::as_array).into_iter().flatten())
            .any(|c| matches!(text_of(c, "code"), Some("ins" | "pay")))
        {
            Category::Payer
        } else {
            Category::Clinical
        };
        let address = org.get("address").and_then(Value::as_array).and_then(|a| a.first());
        let (lat, lon) = address.map(geolocation).unwrap_or_default();
        let mut brand = serde_json::Map::new();
        if let Some(logo) = extensions(org, super::brands::BRAND_EXT)
            .iter()
            .flat_map(|b| sub_extension(b, "brandLogo"))
            .find_map(value_string)
        {
            brand.insert("logo".into(), json!(logo));
        }
        for (key, field) in [("portalName", "portalName"), ("portalUrl", "portalUrl"), ("portalLogo", "portalLogo")] {
            if let Some(v) = portal.iter().flat_map(|p| sub_extension(p, field)).find_map(value_string) {
                brand.insert(key.into(), json!(v));
            }
        }
        if let Some(ids) = org.get("identifier").filter(|i| i.is_array()) {
            brand.insert("identifiers".into(), ids.clone());
        }
        let aliases: Vec<Value> = org
            .get("alias")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter(|a| a.is_string())
            .cloned()
            .collect();
        brand.insert("names".into(), Value::Array(aliases));
        let mut indexes = Vec::new();
        for reference in references {
            match resolve(&reference) {
                Some(index) if !indexes.contains(&index) => indexes.push(index),
                Some(_) => {}
                None => skipped.push((
                    format!("entry[{i}] Organization {name}"),
                    format!("Endpoint {reference} is not in the bundle"),
                )),
            }
        }
        for index in indexes {
            if let Some((_, existing)) = built.iter_mut().find(|(j, _)| *j == index) {
                // Another brand served by the same endpoint: searchable by its name too.
                if let Some(names) =
                    existing.brand.as_mut().and_then(|b| b.get_mut("names")).and_then(Value::as_array_mut)
                {
                    if !names.iter().any(|n| n.as_str() == Some(name.as_str())) {
                        names.push(json!(name));
                    }
                }
                continue;
            }
            let input = EndpointInput {
                name: name.clone(),
                category: Some(category),
                organization: parent.and_then(|p| text_of(p, "name")).map(String::from).or_else(|| Some(name.clone())),
                street: address
                    .and_then(|a| a.get("line"))
                    .and_then(Value::as_array)
                    .and_then(|l| l.first())
                    .and_then(Value::as_str)
                    .map(String::from),
                city: address.and_then(|a| text_of(a, "city")).map(String::from),
                state: address.and_then(|a| text_of(a, "state")).map(String::from),
                zip: address.and_then(|a| text_of(a, "postalCode")).map(String::from),
                latitude: lat,
                longitude: lon,
                brand: Some(Value::Object(brand.clone())),
                source: source.to_owned(),
                ..EndpointInput::default()
            };
            built.push((index, input));
        }
    }
    // Endpoints no Organization claimed stand alone, named by themselves.
    for (i, entry) in entries.iter().enumerate() {
        if entry.get("resource").and_then(|r| text_of(r, "resourceType")) == Some("Endpoint")
            && !built.iter().any(|(j, _)| *j == i)
        {
            let r = &entry["resource"];
            let name = text_of(r, "name").or_else(|| text_of(r, "address")).unwrap_or("Unnamed portal").to_owned();
            built.push((i, EndpointInput { name, source: source.to_owned(), ..EndpointInput::default() }));
        }
    }
    let mut out = Vec::new();
    for (index, mut input) in built {
        let Some(endpoint) = resource(index) else { continue };
        let label = format!("entry[{index}] Endpoint {}", text_of(endpoint, "id").unwrap_or("?"));
        if text_of(endpoint, "resourceType") != Some("Endpoint") {
            skipped.push((label, "the reference is not to an Endpoint".into()));
            continue;
        }
        if let Some(code) = endpoint.get("connectionType").and_then(|c| text_of(c, "code")) {
            if code != "hl7-fhir-rest" {
                skipped.push((label, format!("connection type {code} is not hl7-fhir-rest")));
                continue;
            }
        }
        if matches!(text_of(endpoint, "status"), Some("off" | "entered-in-error")) {
            skipped.push((label, "the Endpoint is off".into()));
            continue;
        }
        let Some(address) = text_of(endpoint, "address") else {
            skipped.push((label, "no address".into()));
            continue;
        };
        match normalize_base(address) {
            Ok(base) => input.fhir_base = base,
            Err(e) => {
                skipped.push((label, e.to_string()));
                continue;
            }
        }
        input.fhir_version = extensions(endpoint, FHIR_VERSION_EXT).iter().find_map(|e| value_string(e));
        out.push(input);
    }
    Ok((out, skipped))
}

fn geolocation(address: &Value) -> (Option<f64>, Option<f64>) {
    let Some(geo) = extensions(address, "http://hl7.org/fhir/StructureDefinition/geolocation").into_iter().next()
    else {
        return (None, None);
    };
    let number = |name: &str| {
        sub_extension(geo, name)
            .first()
            .and_then(|e| e.get("valueDecimal"))
            .and_then(|v| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())))
    };
    (number("latitude"), number("longitude"))
}

/// Read CSV with a header row naming the columns (any order, case and `_`/camel spelling).
pub fn parse_csv(text: &str, source: &str) -> Result<Parsed> {
    let mut reader = csv::ReaderBuilder::new().flexible(true).trim(csv::Trim::All).from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| LinkError::bad_request(format!("the CSV header cannot be read: {e}")))?
        .iter()
        .map(|h| h.to_ascii_lowercase().replace(['_', ' ', '-'], ""))
        .collect();
    let column = |names: &[&str]| headers.iter().position(|h| names.contains(&h.as_str()));
    let base_col = column(&["fhirbase", "fhirbaseurl", "url", "address", "baseurl"])
        .ok_or_else(|| LinkError::bad_request("the CSV needs a fhir_base column"))?;
    let name_col = column(&["name"]).ok_or_else(|| LinkError::bad_request("the CSV needs a name column"))?;
    let cols = [
        column(&["organization", "org"]),
        column(&["street", "line", "address1"]),
        column(&["city"]),
        column(&["state"]),
        column(&["zip", "postalcode", "zipcode"]),
        column(&["latitude", "lat"]),
        column(&["longitude", "lon", "lng"]),
        column(&["vendor"]),
        column(&["category", "type"]),
        column(&["fhirversion", "version"]),
        column(&["clientid"]),
        column(&["scopes", "scope"]),
    ];
    let mut out = Vec::new();
    let mut skipped = Vec::new();
    for (n, record) in reader.records().enumerate() {
        let line = format!("line {}", n + 2);
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                skipped.push((line, format!("unreadable: {e}")));
                continue;
            }
        };
        let get =
            |c: Option<usize>| c.and_then(|i| record.get(i)).map(str::trim).filter(|v| !v.is_empty()).map(String::from);
        let number = |c: Option<usize>| -> std::result::Result<Option<f64>, String> {
            match get(c) {
                None => Ok(None),
                Some(v) => v.parse::<f64>().map(Some).map_err(|_| format!("'{v}' is not a number")),
            }
        };
        let (Some(name), Some(base)) = (get(Some(name_col)), get(Some(base_col))) else {
            skipped.push((line, "name and fhir_base are required".into()));
            continue;
        };
        let fhir_base = match normalize_base(&base) {
            Ok(b) => b,
            Err(e) => {
                skipped.push((line, e.to_string()));
                continue;
            }
        };
        let (latitude, longitude) = match (number(cols[5]), number(cols[6])) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                skipped.push((line, e));
                continue;
            }
        };
        let category = match get(cols[8]).map(|c| c.parse::<Category>()) {
            None => None,
            Some(Ok(c)) => Some(c),
            Some(Err(e)) => {
                skipped.push((line, e.to_string()));
                continue;
            }
        };
        out.push(EndpointInput {
            name,
            fhir_base,
            organization: get(cols[0]),
            street: get(cols[1]),
            city: get(cols[2]),
            state: get(cols[3]),
            zip: get(cols[4]),
            latitude,
            longitude,
            vendor: get(cols[7]),
            category,
            fhir_version: get(cols[9]),
            client_id: get(cols[10]),
            scopes: get(cols[11]),
            source: source.to_owned(),
            ..EndpointInput::default()
        });
    }
    Ok((out, skipped))
}

impl Link {
    /// Import a directory file; entries whose FHIR base is known update that endpoint.
    pub async fn import_directory(&self, text: &str, source: &str) -> Result<ImportReport> {
        let (inputs, mut skipped) = parse(text, source)?;
        let mut report = ImportReport::default();
        for input in inputs {
            let label = input.fhir_base.clone();
            match self.upsert_endpoint(&input).await {
                Ok((_, true)) => report.added += 1,
                Ok((_, false)) => report.updated += 1,
                Err(e) if !e.is_internal() => skipped.push((label, e.to_string())),
                Err(e) => return Err(e),
            }
        }
        report.skipped = skipped;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brands() -> Value {
        json!({"resourceType": "Bundle", "type": "collection", "entry": [
            {"fullUrl": "https://ehr.example.org/Organization/brand1", "resource": {
                "resourceType": "Organization", "id": "brand1", "name": "Brand One Clinic",
                "alias": ["B1"],
                "type": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/organization-type", "code": "prov"}]}],
                "extension": [
                    {"url": "http://hl7.org/fhir/StructureDefinition/organization-brand", "extension": [{"url": "brandLogo", "valueUrl": "https://b1/logo.svg"}]},
                    {"url": PORTAL_EXT, "extension": [
                        {"url": "portalName", "valueString": "B1 Portal"},
                        {"url": "portalEndpoint", "valueReference": {"reference": "Endpoint/ep1"}}]}],
                "address": [{"line": ["1 Main St"], "city": "Napa", "state": "CA", "postalCode": "94558",
                    "extension": [{"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": [
                        {"url": "latitude", "valueDecimal": 38.3}, {"url": "longitude", "valueDecimal": -122.3}]}]}],
                "endpoint": [{"reference": "Endpoint/ep1"}]}},
            {"fullUrl": "https://ehr.example.org/Organization/brand2", "resource": {
                "resourceType": "Organization", "id": "brand2", "name": "Brand Two",
                "endpoint": [{"reference": "Endpoint/ep1"}]}},
            {"fullUrl": "https://ehr.example.org/Organization/plan", "resource": {
                "resourceType": "Organization", "id": "plan", "name": "Umbrella Insurance",
                "type": [{"coding": [{"code": "ins"}]}],
                "endpoint": [{"reference": "https://ehr.example.org/Endpoint/ep2"}]}},
            {"fullUrl": "https://ehr.example.org/Organization/nothing", "resource": {"resourceType": "Organization", "id": "nothing", "name": "No Portal"}},
            {"fullUrl": "https://ehr.example.org/Endpoint/ep1", "resource": {
                "resourceType": "Endpoint", "id": "ep1", "status": "active", "address": "https://fhir.b1.example/r4/",
                "connectionType": {"code": "hl7-fhir-rest"},
                "extension": [{"url": FHIR_VERSION_EXT, "valueCode": "4.0.1"}]}},
            {"fullUrl": "https://ehr.example.org/Endpoint/ep2", "resource": {
                "resourceType": "Endpoint", "id": "ep2", "status": "active", "address": "https://plan.example/fhir"}},
            {"fullUrl": "https://ehr.example.org/Endpoint/ep3", "resource": {
                "resourceType": "Endpoint", "id": "ep3", "status": "active", "address": "not a url", "name": "Broken"}},
        ]})
    }

    #[test]
    fn brands_bundles_become_directory_entries() {
        let (inputs, skipped) = parse_bundle(&brands(), "test").unwrap();
        assert_eq!(inputs.len(), 2, "{inputs:?}");
        let b1 = inputs.iter().find(|i| i.fhir_base == "https://fhir.b1.example/r4").unwrap();
        assert_eq!(b1.name, "Brand One Clinic");
        assert_eq!(b1.category, Some(Category::Clinical));
        assert_eq!((b1.city.as_deref(), b1.zip.as_deref()), (Some("Napa"), Some("94558")));
        assert_eq!((b1.latitude, b1.longitude), (Some(38.3), Some(-122.3)));
        assert_eq!(b1.fhir_version.as_deref(), Some("4.0.1"));
        let brand = b1.brand.as_ref().unwrap();
        assert_eq!(brand["logo"], "https://b1/logo.svg");
        assert_eq!(brand["portalName"], "B1 Portal");
        assert_eq!(brand["names"], json!(["B1", "Brand Two"]), "the co-equal brand is searchable");
        let plan = inputs.iter().find(|i| i.fhir_base == "https://plan.example/fhir").unwrap();
        assert_eq!(plan.category, Some(Category::Payer));
        let reasons: Vec<&str> = skipped.iter().map(|(_, why)| why.as_str()).collect();
        assert!(reasons.iter().any(|r| r.contains("no Endpoint")), "{skipped:?}");
        assert!(reasons.iter().any(|r| r.contains("not an absolute URL")), "{skipped:?}");
    }

    #[test]
    fn csv_rows_are_checked() {
        let text = "Name,FHIR_Base,City,Zip,Latitude,Longitude,Category\n\
                    Clinic A,https://a.example/fhir,Boston,02115,42.3,-71.1,clinical\n\
                    Plan B,https://b.example/fhir/,,,,,payer\n\
                    Bad,ftp://c.example,,,,,\n\
                    Worse,https://d.example,,,north,,\n\
                    Odd,https://e.example,,,,,hospital-ish\n";
        let (inputs, skipped) = parse(text, "csv").unwrap();
        assert_eq!(inputs.len(), 2);
        assert_eq!(inputs[1].fhir_base, "https://b.example/fhir");
        assert_eq!(inputs[1].category, Some(Category::Payer));
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(parse("just,a,header\n", "csv").is_err(), "no fhir_base column");
        assert!(parse("{not json", "x").is_err());
        assert!(parse(r#"{"resourceType": "Patient"}"#, "x").is_err());
    }
}
