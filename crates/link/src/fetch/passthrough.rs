//! `GET /link/v1/connections/{id}/fhir/{type}[/{id}][?params]`: a read or search passed through
//! to the portal with the vault's token, for apps that want FHIR directly. Paging links that
//! point into the portal are rewritten to come back through Link.

use serde_json::Value;

use super::portal_fhir::PartError;
use crate::error::{LinkError, Result};
use crate::ids::{AppId, ConnectionId};
use crate::Link;

impl Link {
    /// `path` is `Type`, `Type/id` or `Type/id/_history/v`; `query` is passed on as it came.
    pub async fn passthrough(
        &self,
        app: &AppId,
        connection: &ConnectionId,
        path: &str,
        query: Option<&str>,
    ) -> Result<Value> {
        let record = self.app_connection(app, connection).await?;
        let segments: Vec<&str> = path.split('/').collect();
        let valid = match segments.as_slice() {
            [t] => fhir::Registry::r4().is_resource_type(t),
            [t, id] => fhir::Registry::r4().is_resource_type(t) && fhir::search::is_valid_id(id),
            [t, id, "_history", v] => {
                fhir::Registry::r4().is_resource_type(t)
                    && fhir::search::is_valid_id(id)
                    && v.chars().all(|c| c.is_ascii_digit())
            }
            _ => false,
        };
        if !valid {
            return Err(LinkError::bad_request(format!("'{path}' is not Type, Type/id or Type/id/_history/version")));
        }
        if query.is_some_and(|q| q.len() > 4096) {
            return Err(LinkError::bad_request("the query is too long"));
        }
        let endpoint = self.require_endpoint(&record.endpoint).await?;
        let url = match query.filter(|q| !q.is_empty()) {
            Some(q) => format!("{}/{path}?{q}", endpoint.fhir_base),
            None => format!("{}/{path}", endpoint.fhir_base),
        };
        let mut value = match self.portal_get(&record, &endpoint, &url).await {
            Ok(v) => v,
            Err(PartError::Reauthorize) => return Err(LinkError::ReauthorizationRequired),
            Err(PartError::Portal(e)) => return Err(LinkError::Portal(e)),
            Err(PartError::Internal) => return Err(LinkError::Vault("pass-through failed".into())),
        };
        if !value.get("resourceType").is_some_and(Value::is_string) {
            return Err(LinkError::Portal(crate::portal::PortalError::Invalid("not a FHIR resource".into())));
        }
        let through = format!("{}/link/v1/connections/{connection}/fhir", self.config().base_url);
        if let Some(links) = value.get_mut("link").and_then(Value::as_array_mut) {
            for link in links {
                if let Some(u) = link.get("url").and_then(Value::as_str) {
                    if let Some(rest) = u.strip_prefix(endpoint.fhir_base.as_str()) {
                        link["url"] = Value::String(format!("{through}{rest}"));
                    }
                }
            }
        }
        self.touch_fetched(connection).await?;
        Ok(value)
    }
}
