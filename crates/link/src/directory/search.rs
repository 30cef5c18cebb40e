//! Finding portals: all of a category, by name or zip, or by distance; each answer carries the
//! endpoint's fields, what discovery found, its health figures and a ready `connectUrl`.

use serde::Serialize;
use serde_json::{json, Value};

use super::{Category, Endpoint};
use crate::error::{LinkError, Result};
use crate::health::HealthSummary;
use crate::Link;

/// One directory answer entry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryItem {
    pub id: String,
    pub name: String,
    pub organization: Option<String>,
    pub address: Value,
    pub latitude: Option<f64>,
    pub longitude: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub distance_km: Option<f64>,
    pub vendor: Option<String>,
    pub category: Category,
    pub fhir_base: String,
    pub fhir_version: Option<String>,
    pub status: crate::health::Status,
    pub connectable: bool,
    pub discovery: Value,
    pub health: HealthSummary,
    pub brand: Option<Value>,
    /// Send the person's browser here, adding `app`, `clientURL` and `state`.
    pub connect_url: String,
}

/// How to look.
#[derive(Debug, Clone, PartialEq)]
pub enum Lookup {
    All,
    /// A name (words, each must match the name, organization, city or a brand name) or a zip
    /// code (digits: a prefix of the endpoint's zip).
    Term(String),
}

/// `?near=LAT,LON&radius_km=R`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Near {
    pub latitude: f64,
    pub longitude: f64,
    pub radius_km: f64,
}

impl Near {
    pub fn parse(near: &str, radius: Option<&str>) -> Result<Near> {
        let bad = || LinkError::bad_request("near must be LAT,LON in decimal degrees");
        let (lat, lon) = near.split_once(',').ok_or_else(bad)?;
        let latitude: f64 = lat.trim().parse().map_err(|_| bad())?;
        let longitude: f64 = lon.trim().parse().map_err(|_| bad())?;
        if !(-90.0..=90.0).contains(&latitude) || !(-180.0..=180.0).contains(&longitude) {
            return Err(bad());
        }
        let radius_km = match radius {
            Some(r) => r.trim().parse::<f64>().map_err(|_| LinkError::bad_request("radius_km must be a number"))?,
            None => 50.0,
        };
        if !radius_km.is_finite() || radius_km <= 0.0 || radius_km > 20_000.0 {
            return Err(LinkError::bad_request("radius_km must be more than 0 and at most 20000"));
        }
        Ok(Near { latitude, longitude, radius_km })
    }
}

/// Great-circle distance in kilometres.
pub fn haversine_km(lat1: f64, lon1: f64, lat2: f64, lon2: f64) -> f64 {
    let (p1, p2) = (lat1.to_radians(), lat2.to_radians());
    let dp = (lat2 - lat1).to_radians();
    let dl = (lon2 - lon1).to_radians();
    let a = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * 6371.0 * a.sqrt().asin()
}

fn matches(endpoint: &Endpoint, lookup: &Lookup) -> bool {
    let Lookup::Term(term) = lookup else { return true };
    let term = term.trim();
    if !term.is_empty() && term.chars().all(|c| c.is_ascii_digit()) {
        return endpoint.zip.as_deref().is_some_and(|z| z.starts_with(term));
    }
    let haystack = [Some(endpoint.name.as_str()), endpoint.organization.as_deref(), endpoint.city.as_deref()];
    let mut text: String = haystack.iter().flatten().copied().collect::<Vec<_>>().join(" ").to_lowercase();
    if let Some(names) = endpoint.brand.as_ref().and_then(|b| b.get("names")).and_then(Value::as_array) {
        for n in names.iter().filter_map(Value::as_str) {
            text.push(' ');
            text.push_str(&n.to_lowercase());
        }
    }
    term.to_lowercase().split_whitespace().all(|word| text.contains(word))
}

impl Link {
    /// Search the directory.
    pub async fn directory(
        &self,
        category: Option<Category>,
        lookup: &Lookup,
        near: Option<Near>,
    ) -> Result<Vec<DirectoryItem>> {
        if let Lookup::Term(t) = lookup {
            if t.trim().is_empty() || t.len() > 200 {
                return Err(LinkError::bad_request("the search term must be 1 to 200 characters"));
            }
        }
        let mut found: Vec<(Endpoint, Option<f64>)> = Vec::new();
        for endpoint in self.endpoints(category).await? {
            if !matches(&endpoint, lookup) {
                continue;
            }
            let distance = match (near, endpoint.latitude, endpoint.longitude) {
                (Some(n), Some(lat), Some(lon)) => {
                    let d = haversine_km(n.latitude, n.longitude, lat, lon);
                    if d > n.radius_km {
                        continue;
                    }
                    Some(d)
                }
                (Some(_), _, _) => continue,
                (None, _, _) => None,
            };
            found.push((endpoint, distance));
        }
        if near.is_some() {
            found.sort_by(|a, b| a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal));
        }
        let ids: Vec<_> = found.iter().map(|(e, _)| e.id.clone()).collect();
        let mut health = crate::health::summaries(self.db(), &ids, self.now_ms()).await?;
        Ok(found
            .into_iter()
            .map(|(e, distance)| {
                let h = health.remove(&e.id).unwrap_or_default();
                self.directory_item(e, distance, h)
            })
            .collect())
    }

    /// One endpoint as the directory shows it.
    pub async fn directory_entry(&self, endpoint: Endpoint) -> Result<DirectoryItem> {
        let ids = [endpoint.id.clone()];
        let mut health = crate::health::summaries(self.db(), &ids, self.now_ms()).await?;
        let h = health.remove(&endpoint.id).unwrap_or_default();
        Ok(self.directory_item(endpoint, None, h))
    }

    fn directory_item(&self, e: Endpoint, distance_km: Option<f64>, health: HealthSummary) -> DirectoryItem {
        let discovery = match &e.discovery {
            Some(d) => serde_json::to_value(d).unwrap_or(Value::Null),
            None => json!({"error": e.discovery_error}),
        };
        let connectable = e.client_id.is_some() && e.discovery.as_ref().is_some_and(|d| d.authorize_endpoint.is_some());
        DirectoryItem {
            connect_url: format!("{}/link/v1/connect/{}", self.config().base_url, e.id),
            id: e.id.to_string(),
            name: e.name,
            organization: e.organization,
            address: json!({"street": e.street, "city": e.city, "state": e.state, "zip": e.zip}),
            latitude: e.latitude,
            longitude: e.longitude,
            distance_km: distance_km.map(|d| (d * 10.0).round() / 10.0),
            vendor: e.vendor,
            category: e.category,
            fhir_base: e.fhir_base,
            fhir_version: e.fhir_version,
            status: e.status,
            connectable,
            discovery,
            health,
            brand: e.brand,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distances_are_great_circle() {
        // Boston to New York is about 306 km.
        let d = haversine_km(42.3601, -71.0589, 40.7128, -74.0060);
        assert!((d - 306.0).abs() < 5.0, "{d}");
        assert!(haversine_km(10.0, 10.0, 10.0, 10.0) < 1e-9);
    }

    #[test]
    fn near_is_checked() {
        assert!(Near::parse("42.36,-71.06", Some("25")).is_ok());
        for (near, radius) in
            [("42.36", None), ("x,y", None), ("91,0", None), ("0,0", Some("-1")), ("0,0", Some("nan"))]
        {
            assert!(Near::parse(near, radius).is_err(), "{near} {radius:?}");
        }
    }
}
