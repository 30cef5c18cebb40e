//! Discovery: what a portal says about itself in `.well-known/smart-configuration` (SMART App
//! Launch 2) and its CapabilityStatement (`metadata`): OAuth endpoints, PKCE methods, client
//! authentication methods, capabilities, FHIR version, `$everything`, resource types and their
//! search parameters. Run when an endpoint is added, by `portico link endpoint check`, and on a
//! schedule; every run is a health event.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::directory::Endpoint;
use crate::error::Result;
use crate::health::EventKind;
use crate::ids::EndpointId;
use crate::portal::{PortalError, PortalRequest};
use crate::Link;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Discovery {
    pub issuer: Option<String>,
    pub authorize_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub revocation_endpoint: Option<String>,
    pub jwks_uri: Option<String>,
    pub pkce_methods: Vec<String>,
    pub token_endpoint_auth_methods: Vec<String>,
    pub capabilities: Vec<String>,
    pub scopes_supported: Vec<String>,
    pub fhir_version: Option<String>,
    pub software: Option<String>,
    /// `Patient/{id}/$everything` is offered.
    pub everything: bool,
    pub resource_types: Vec<String>,
    /// Search parameter names per resource type (empty when the portal lists none).
    pub search_params: BTreeMap<String, Vec<String>>,
}

impl Discovery {
    /// Does the portal say it supports this search parameter on this type? (A portal that
    /// lists no parameters for a type is taken not to promise any.)
    pub fn supports_search(&self, resource_type: &str, param: &str) -> bool {
        self.search_params.get(resource_type).is_some_and(|params| params.iter().any(|p| p == param))
    }

    /// May Link use PKCE S256 here? Refused only when the portal lists methods without S256
    /// (e.g. `plain` alone); a portal that lists none is sent S256 anyway, which servers that
    /// ignore PKCE also ignore.
    pub fn allows_s256(&self) -> bool {
        self.pkce_methods.is_empty() || self.pkce_methods.iter().any(|m| m == "S256")
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(String::from).collect()
}

fn url_field(doc: &Value, key: &str) -> Option<String> {
    doc.get(key)
        .and_then(Value::as_str)
        .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
        .map(String::from)
}

/// Read a SMART configuration document.
pub fn read_smart_configuration(doc: &Value, into: &mut Discovery) {
    into.issuer = url_field(doc, "issuer");
    into.authorize_endpoint = url_field(doc, "authorization_endpoint");
    into.token_endpoint = url_field(doc, "token_endpoint");
    into.revocation_endpoint = url_field(doc, "revocation_endpoint");
    into.jwks_uri = url_field(doc, "jwks_uri");
    into.pkce_methods = strings(doc.get("code_challenge_methods_supported"));
    into.token_endpoint_auth_methods = strings(doc.get("token_endpoint_auth_methods_supported"));
    into.capabilities = strings(doc.get("capabilities"));
    into.scopes_supported = strings(doc.get("scopes_supported"));
}

/// Read a CapabilityStatement: version, software, types, search parameters, `$everything`, and
/// the OAuth URIs of the SMART security extension (used when there is no smart-configuration).
pub fn read_capability_statement(doc: &Value, into: &mut Discovery) {
    into.fhir_version = doc.get("fhirVersion").and_then(Value::as_str).map(String::from);
    into.software = doc.get("software").and_then(|s| s.get("name")).and_then(Value::as_str).map(String::from);
    let rests = doc.get("rest").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    let Some(rest) = rests.iter().find(|r| r.get("mode").and_then(Value::as_str) != Some("client")) else { return };
    let named_everything = |ops: Option<&Value>| {
        ops.and_then(Value::as_array).into_iter().flatten().any(|o| {
            o.get("name").and_then(Value::as_str).is_some_and(|n| n.trim_start_matches('$') == "everything")
                || o.get("definition").and_then(Value::as_str).is_some_and(|d| d.ends_with("Patient-everything"))
        })
    };
    into.everything = named_everything(rest.get("operation"));
    into.resource_types.clear();
    into.search_params.clear();
    for resource in rest.get("resource").and_then(Value::as_array).into_iter().flatten() {
        let Some(t) = resource.get("type").and_then(Value::as_str) else { continue };
        into.resource_types.push(t.to_owned());
        let params: Vec<String> = resource
            .get("searchParam")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("name").and_then(Value::as_str))
            .map(String::from)
            .collect();
        into.search_params.insert(t.to_owned(), params);
        if t == "Patient" && named_everything(resource.get("operation")) {
            into.everything = true;
        }
    }
    if into.authorize_endpoint.is_none() {
        let uris =
            rest.get("security").and_then(|s| s.get("extension")).and_then(Value::as_array).into_iter().flatten().find(
                |e| {
                    e.get("url").and_then(Value::as_str)
                        == Some("http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris")
                },
            );
        for sub in uris.and_then(|u| u.get("extension")).and_then(Value::as_array).into_iter().flatten() {
            let value = sub.get("valueUri").and_then(Value::as_str).map(String::from);
            match sub.get("url").and_then(Value::as_str) {
                Some("authorize") => into.authorize_endpoint = value,
                Some("token") => into.token_endpoint = value,
                Some("revoke") => into.revocation_endpoint = value,
                _ => {}
            }
        }
    }
}

impl Link {
    /// Discover an endpoint now and store what was found (or why it failed).
    pub async fn discover(&self, endpoint: &Endpoint) -> Result<std::result::Result<Discovery, String>> {
        let base = &endpoint.fhir_base;
        let smart = self
            .portals()
            .get_json(
                &endpoint.id,
                &PortalRequest::get(format!("{base}/.well-known/smart-configuration"), EventKind::Discovery),
            )
            .await;
        let metadata = self
            .portals()
            .get_json(&endpoint.id, &PortalRequest::get(format!("{base}/metadata"), EventKind::Discovery))
            .await;
        let mut found = Discovery::default();
        let mut problems = Vec::new();
        match &smart {
            Ok(doc) if doc.is_object() => read_smart_configuration(doc, &mut found),
            Ok(_) => problems.push("smart-configuration: not a JSON object".to_owned()),
            Err(e) => problems.push(format!("smart-configuration: {e}")),
        }
        match &metadata {
            Ok(doc) if doc.get("resourceType").and_then(Value::as_str) == Some("CapabilityStatement") => {
                read_capability_statement(doc, &mut found)
            }
            Ok(doc) if doc.get("resourceType").and_then(Value::as_str) == Some("Conformance") => {
                // DSTU2 calls it Conformance; the shape of what is read here is the same.
                read_capability_statement(doc, &mut found)
            }
            Ok(_) => problems.push("metadata: not a CapabilityStatement".to_owned()),
            Err(e) => problems.push(format!("metadata: {e}")),
        }
        let usable = found.authorize_endpoint.is_some() && found.token_endpoint.is_some();
        let outcome = if usable { Ok(found) } else { Err(problems.join("; ")) };
        self.store_discovery(&endpoint.id, &outcome, if usable { Some(problems.join("; ")) } else { None }).await?;
        Ok(outcome)
    }

    async fn store_discovery(
        &self,
        id: &EndpointId,
        outcome: &std::result::Result<Discovery, String>,
        warnings: Option<String>,
    ) -> Result<()> {
        let now = self.now_ms();
        let db = self.db();
        let mut sql = db.sql();
        match outcome {
            Ok(found) => {
                sql.push("UPDATE link_endpoints SET discovery = ")
                    .bind(serde_json::to_string(found).unwrap_or_default())
                    .push(", discovered_at = ")
                    .bind(now)
                    .push(", discovery_error = ")
                    .bind(warnings.filter(|w| !w.is_empty()));
                if let Some(v) = &found.fhir_version {
                    sql.push(", fhir_version = ").bind(v.as_str());
                }
                if let Some(s) = &found.software {
                    sql.push(", vendor = COALESCE(vendor, ").bind(s.as_str()).push(")");
                }
            }
            Err(why) => {
                sql.push("UPDATE link_endpoints SET discovery_error = ").bind(why.as_str());
            }
        }
        sql.push(", updated_at = ").bind(now).push(" WHERE endpoint_id = ").bind(id.as_str());
        db.execute(&sql).await?;
        Ok(())
    }

    /// Re-discover every endpoint (the schedule's work). Returns (ok, failed).
    pub async fn rediscover_all(&self) -> Result<(usize, usize)> {
        let mut counts = (0, 0);
        for endpoint in self.endpoints(None).await? {
            match self.discover(&endpoint).await? {
                Ok(_) => counts.0 += 1,
                Err(_) => counts.1 += 1,
            }
        }
        Ok(counts)
    }

    /// The discovery an operation needs: stored, or run now when there is none.
    pub(crate) async fn discovery_for(
        &self,
        endpoint: &Endpoint,
    ) -> Result<std::result::Result<Discovery, PortalError>> {
        if let Some(d) = &endpoint.discovery {
            return Ok(Ok(d.clone()));
        }
        Ok(self.discover(endpoint).await?.map_err(PortalError::Invalid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capability_statements_are_read() {
        let cs = json!({"resourceType": "CapabilityStatement", "fhirVersion": "4.0.1", "software": {"name": "Portico"},
            "rest": [{"mode": "server", "resource": [
                {"type": "Patient", "operation": [{"name": "everything"}], "searchParam": [{"name": "name"}]},
                {"type": "Observation", "searchParam": [{"name": "patient"}, {"name": "date"}, {"name": "category"}]}],
              "security": {"extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                "extension": [{"url": "authorize", "valueUri": "https://p/auth"}, {"url": "token", "valueUri": "https://p/token"}]}]}}]});
        let mut d = Discovery::default();
        read_capability_statement(&cs, &mut d);
        assert_eq!(d.fhir_version.as_deref(), Some("4.0.1"));
        assert!(d.everything);
        assert!(d.supports_search("Observation", "date"));
        assert!(!d.supports_search("Condition", "date"));
        assert_eq!(d.authorize_endpoint.as_deref(), Some("https://p/auth"));
        assert_eq!(d.resource_types, vec!["Patient", "Observation"]);
    }

    #[test]
    fn pkce_rules() {
        let mut d = Discovery::default();
        assert!(d.allows_s256());
        d.pkce_methods = vec!["plain".into()];
        assert!(!d.allows_s256());
        d.pkce_methods.push("S256".into());
        assert!(d.allows_s256());
    }
}
