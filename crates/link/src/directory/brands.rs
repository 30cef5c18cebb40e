//! The directory published as a SMART User-access Brands bundle (SMART App Launch 2.2): an
//! Organization per endpoint with the `organization-brand` and `organization-portal`
//! extensions, and the Endpoint it points at (with `endpoint-fhir-version`).

use serde_json::{json, Value};

use super::{Category, Endpoint};
use crate::health::Status;

pub const BRAND_EXT: &str = "http://hl7.org/fhir/StructureDefinition/organization-brand";
pub const PORTAL_EXT: &str = "http://hl7.org/fhir/StructureDefinition/organization-portal";
pub const FHIR_VERSION_EXT: &str = "http://hl7.org/fhir/StructureDefinition/endpoint-fhir-version";
pub const BRANDS_PROFILE: &str = "http://hl7.org/fhir/smart-app-launch/StructureDefinition/user-access-brands-bundle";
const ORG_TYPE: &str = "http://terminology.hl7.org/CodeSystem/organization-type";

/// A FHIR id for a Link id (`ep_…` → `ep-…`: FHIR ids have no underscore).
fn fhir_id(prefix: &str, endpoint: &Endpoint) -> String {
    let hex = endpoint.id.as_str().split('_').nth(1).unwrap_or_default();
    format!("{prefix}-{hex}")
}

/// The whole directory as a Brands bundle; `base` is Link's base URL (for fullUrls).
pub fn brands_bundle(endpoints: &[Endpoint], base: &str, now_ms: i64) -> Value {
    let mut entries = Vec::new();
    for e in endpoints {
        let org_id = fhir_id("org", e);
        let ep_id = fhir_id("ep", e);
        let brand = e.brand.as_ref();
        let text = |key: &str| brand.and_then(|b| b.get(key)).and_then(Value::as_str).map(String::from);
        let mut brand_ext = Vec::new();
        if let Some(logo) = text("logo") {
            brand_ext.push(json!({"url": "brandLogo", "valueUrl": logo}));
        }
        let mut portal_ext = vec![
            json!({"url": "portalName", "valueString": text("portalName").unwrap_or_else(|| e.name.clone())}),
            json!({"url": "portalEndpoint", "valueReference": {"reference": format!("Endpoint/{ep_id}")}}),
        ];
        if let Some(url) = text("portalUrl") {
            portal_ext.push(json!({"url": "portalUrl", "valueUrl": url}));
        }
        if let Some(logo) = text("portalLogo") {
            portal_ext.push(json!({"url": "portalLogo", "valueUrl": logo}));
        }
        let mut extension = Vec::new();
        if !brand_ext.is_empty() {
            extension.push(json!({"url": BRAND_EXT, "extension": brand_ext}));
        }
        extension.push(json!({"url": PORTAL_EXT, "extension": portal_ext}));
        let (code, display) = match e.category {
            Category::Clinical => ("prov", "Healthcare Provider"),
            Category::Payer => ("pay", "Payer"),
        };
        let mut org = json!({
            "resourceType": "Organization",
            "id": org_id,
            "extension": extension,
            "active": true,
            "type": [{"coding": [{"system": ORG_TYPE, "code": code, "display": display}]}],
            "name": e.organization.clone().unwrap_or_else(|| e.name.clone()),
            "endpoint": [{"reference": format!("Endpoint/{ep_id}")}],
        });
        if let Some(ids) = brand.and_then(|b| b.get("identifiers")).filter(|i| i.is_array()) {
            org["identifier"] = ids.clone();
        }
        let aliases: Vec<&str> = brand
            .and_then(|b| b.get("names"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !aliases.is_empty() {
            org["alias"] = json!(aliases);
        }
        let mut address = serde_json::Map::new();
        if let Some(street) = &e.street {
            address.insert("line".into(), json!([street]));
        }
        for (key, value) in [("city", &e.city), ("state", &e.state), ("postalCode", &e.zip)] {
            if let Some(v) = value {
                address.insert(key.into(), json!(v));
            }
        }
        if let (Some(lat), Some(lon)) = (e.latitude, e.longitude) {
            address.insert(
                "extension".into(),
                json!([{"url": "http://hl7.org/fhir/StructureDefinition/geolocation", "extension": [
                    {"url": "latitude", "valueDecimal": lat}, {"url": "longitude", "valueDecimal": lon}]}]),
            );
        }
        if !address.is_empty() {
            org["address"] = json!([Value::Object(address)]);
        }
        let status = match e.status {
            Status::Down => "error",
            _ => "active",
        };
        let mut endpoint = json!({
            "resourceType": "Endpoint",
            "id": ep_id,
            "status": status,
            "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type", "code": "hl7-fhir-rest"},
            "name": e.name,
            "managingOrganization": {"reference": format!("Organization/{org_id}")},
            "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type", "code": "none"}]}],
            "address": e.fhir_base,
        });
        let version = e.fhir_version.clone().or_else(|| e.discovery.as_ref().and_then(|d| d.fhir_version.clone()));
        if let Some(v) = version {
            endpoint["extension"] = json!([{"url": FHIR_VERSION_EXT, "valueCode": v}]);
        }
        entries.push(
            json!({"fullUrl": format!("{base}/link/v1/directory/brands/Organization/{org_id}"), "resource": org}),
        );
        entries.push(
            json!({"fullUrl": format!("{base}/link/v1/directory/brands/Endpoint/{ep_id}"), "resource": endpoint}),
        );
    }
    json!({
        "resourceType": "Bundle",
        "id": format!("link-brands-{now_ms}"),
        "meta": {"profile": [BRANDS_PROFILE], "lastUpdated": store::clock::instant_text(now_ms)},
        "type": "collection",
        "timestamp": store::clock::instant_text(now_ms),
        "entry": entries,
    })
}
