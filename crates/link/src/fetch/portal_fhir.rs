//! FHIR reads and searches at a portal on a connection's behalf: the vault's token (refreshed
//! ahead of expiry, and once after a 401), `next` links followed only inside the portal's own
//! base, and every answer checked before it is used.

use serde_json::Value;

use super::raw::{Page, RawResource};
use crate::connections::ConnectionRecord;
use crate::directory::Endpoint;
use crate::error::{LinkError, Result};
use crate::health::EventKind;
use crate::portal::{PortalError, PortalRequest};
use crate::Link;

/// Why a part of a fetch failed.
#[derive(Debug, Clone, PartialEq)]
pub enum PartError {
    Portal(PortalError),
    /// The connection's authorization is gone.
    Reauthorize,
    /// Link's own failure (storage, vault): logged, reported without detail.
    Internal,
}

impl PartError {
    pub fn text(&self) -> String {
        match self {
            PartError::Portal(e) => e.to_string(),
            PartError::Reauthorize => {
                "the connection needs the person to sign in at the portal again (reauthorization_required)".into()
            }
            PartError::Internal => "Link could not complete this part (internal error)".into(),
        }
    }
    /// The OperationOutcome issue code.
    pub fn code(&self) -> &'static str {
        match self {
            PartError::Portal(PortalError::Timeout(_)) => "timeout",
            PartError::Portal(PortalError::Throttled { .. }) => "throttled",
            PartError::Portal(PortalError::InvalidJson(_) | PortalError::Invalid(_) | PortalError::TooLarge(_)) => {
                "structure"
            }
            PartError::Portal(_) => "transient",
            PartError::Reauthorize => "security",
            PartError::Internal => "exception",
        }
    }
}

impl From<LinkError> for PartError {
    fn from(e: LinkError) -> PartError {
        match e {
            LinkError::ReauthorizationRequired => PartError::Reauthorize,
            LinkError::Portal(p) => PartError::Portal(p),
            other => {
                tracing::error!(error = %other, "fetch part failed inside Link");
                PartError::Internal
            }
        }
    }
}

impl From<PortalError> for PartError {
    fn from(e: PortalError) -> PartError {
        PartError::Portal(e)
    }
}

/// Is `url` inside the portal's FHIR base (same scheme, host, port and path prefix)?
pub fn inside_base(base: &str, url: &str) -> bool {
    url.strip_prefix(base).is_some_and(|rest| rest.is_empty() || rest.starts_with('/') || rest.starts_with('?'))
}

impl Link {
    /// GET a FHIR document at the portal with the connection's token: its body, checked for
    /// nothing yet.
    pub(crate) async fn portal_fetch(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        url: &str,
    ) -> Result<bytes::Bytes, PartError> {
        if !inside_base(&endpoint.fhir_base, url) {
            return Err(PartError::Portal(PortalError::Invalid(format!(
                "a link outside the portal's FHIR base ({})",
                url.split('?').next().unwrap_or_default()
            ))));
        }
        let token = self.access_token(&record.id).await?;
        let request = PortalRequest::get(url, EventKind::Request).bearer(&token.token);
        match self.portals().send(&endpoint.id, &request).await {
            Ok(r) => Ok(r.body),
            Err(PortalError::Unauthorized) => {
                let fresh = self.replace_token(&record.id, token.generation).await?;
                let request = PortalRequest::get(url, EventKind::Request).bearer(&fresh.token);
                match self.portals().send(&endpoint.id, &request).await {
                    Ok(r) => Ok(r.body),
                    Err(PortalError::Unauthorized) => {
                        self.require_reauthorization(record, "the portal refuses a freshly refreshed token").await?;
                        Err(PartError::Reauthorize)
                    }
                    Err(e) => Err(e.into()),
                }
            }
            Err(e) => Err(e.into()),
        }
    }

    /// GET a FHIR JSON document as a value tree (the pass-through).
    pub(crate) async fn portal_get(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        url: &str,
    ) -> Result<Value, PartError> {
        let body = self.portal_fetch(record, endpoint, url).await?;
        serde_json::from_slice(&body).map_err(|e| PartError::Portal(PortalError::InvalidJson(e.to_string())))
    }

    /// Read one resource.
    pub(crate) async fn portal_read(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        url: &str,
    ) -> Result<RawResource, PartError> {
        let body = self.portal_fetch(record, endpoint, url).await?;
        let text = std::str::from_utf8(&body).map_err(|_| PortalError::InvalidJson("not UTF-8".into()))?;
        RawResource::parse(text).map_err(|e| PartError::Portal(PortalError::InvalidJson(e.to_string())))
    }

    /// A search, following `next` links (inside the base only, at most `max_pages`). Returns the
    /// resources of every page, OperationOutcome entries left out.
    pub(crate) async fn portal_search(
        &self,
        record: &ConnectionRecord,
        endpoint: &Endpoint,
        first: String,
    ) -> Result<Vec<RawResource>, PartError> {
        let mut url = first;
        let mut out = Vec::new();
        let mut seen_urls = std::collections::HashSet::new();
        for _ in 0..self.portals().limits().max_pages.max(1) {
            let body = self.portal_fetch(record, endpoint, &url).await?;
            let page: Page = serde_json::from_slice(&body).map_err(|e| match e.classify() {
                serde_json::error::Category::Data => PortalError::Invalid(format!("not a Bundle: {e}")),
                _ => PortalError::InvalidJson(e.to_string()),
            })?;
            if page.resource_type.as_deref() != Some("Bundle") {
                return Err(PortalError::Invalid("a search answered with something other than a Bundle".into()).into());
            }
            for entry in &page.entry {
                if entry.search.as_ref().and_then(|s| s.mode.as_deref()) == Some("outcome") {
                    continue;
                }
                let Some(raw) = &entry.resource else { continue };
                let resource = RawResource::parse(raw.get())
                    .map_err(|_| PortalError::Invalid("an entry's resource is not a JSON object".into()))?;
                if resource.resource_type().as_deref() != Some("OperationOutcome") {
                    out.push(resource);
                }
            }
            match page.next() {
                Some(n) if seen_urls.insert(n.to_owned()) => url = n.to_owned(),
                Some(_) => return Err(PortalError::Invalid("the search's next link repeats".into()).into()),
                None => return Ok(out),
            }
        }
        Err(PortalError::Invalid(format!("more than {} pages", self.portals().limits().max_pages)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_stay_inside_the_base() {
        let base = "https://portal.example/fhir";
        assert!(inside_base(base, "https://portal.example/fhir/Observation?_cursor=x"));
        assert!(inside_base(base, "https://portal.example/fhir?x"));
        assert!(!inside_base(base, "https://portal.example/fhirevil/Observation"));
        assert!(!inside_base(base, "https://evil.example/fhir/Observation"));
        assert!(!inside_base(base, "http://portal.example/fhir/Observation"));
    }
}
