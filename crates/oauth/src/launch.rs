//! EHR launch: the EHR side stores a launch context (patient, encounter, `fhirContext`, display
//! hints) and receives an opaque, single-use `launch` value to pass to the app, which sends it to
//! `/authorize`. Through HTTP only clients registered as EHR launchers may do this; the CLI does
//! it directly.

use auth::PatientId;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use store::auth::NewLaunch;

use crate::client_auth::ClientCredentials;
use crate::error::{ErrorCode, OAuthError};
use crate::AuthServer;

/// The launch context to store (the JSON body of `POST /auth/launch`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LaunchRequest {
    pub patient: Option<String>,
    pub encounter: Option<String>,
    #[serde(rename = "fhirContext")]
    pub fhir_context: Option<Value>,
    pub need_patient_banner: Option<bool>,
    pub smart_style_url: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LaunchCreated {
    pub launch: String,
    pub expires_in: i64,
}

/// SMART 2.2 `fhirContext`: an array of objects, each naming a resource by `reference`,
/// `canonical` or `identifier` (with an optional `type` and `role`).
pub fn check_fhir_context(value: &Value) -> Result<(), String> {
    let Some(items) = value.as_array() else { return Err("fhirContext must be an array".into()) };
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else { return Err(format!("fhirContext[{i}] must be an object")) };
        let named = ["reference", "canonical", "identifier"].iter().filter(|k| obj.contains_key(**k)).count();
        if named == 0 {
            return Err(format!("fhirContext[{i}] needs a reference, canonical or identifier"));
        }
        for (key, v) in obj {
            let ok = match key.as_str() {
                "reference" | "canonical" | "type" | "role" => v.is_string(),
                "identifier" => v.is_object(),
                _ => false,
            };
            if !ok {
                return Err(format!("fhirContext[{i}].{key} is not allowed or has the wrong type"));
            }
        }
    }
    Ok(())
}

impl AuthServer {
    /// `POST /auth/launch`: an authenticated EHR-launcher client stores a context.
    pub async fn create_launch_for_client(
        &self,
        creds: &ClientCredentials,
        request: LaunchRequest,
    ) -> Result<LaunchCreated, OAuthError> {
        let client = self.authenticate_client(creds).await?;
        if !client.is_authenticated() || !client.client.ehr_launcher {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "only confidential clients registered as EHR launchers may create launch contexts",
            ));
        }
        self.create_launch(request).await
    }

    /// Store a launch context (the CLI calls this directly).
    pub async fn create_launch(&self, request: LaunchRequest) -> Result<LaunchCreated, OAuthError> {
        let patient_id = match request.patient.as_deref() {
            Some(p) => {
                let id: PatientId =
                    p.parse().map_err(|_| OAuthError::invalid_request(format!("{p:?} is not a valid patient id")))?;
                match self.inner.store.read("Patient", id.as_str()).await? {
                    store::ReadOutcome::Found(_) => Some(id),
                    _ => return Err(OAuthError::invalid_request(format!("Patient/{id} does not exist"))),
                }
            }
            None => None,
        };
        if let Some(encounter) = request.encounter.as_deref() {
            if !matches!(self.inner.store.read("Encounter", encounter).await, Ok(store::ReadOutcome::Found(_))) {
                return Err(OAuthError::invalid_request(format!("Encounter/{encounter} does not exist")));
            }
        }
        if let Some(ctx) = &request.fhir_context {
            check_fhir_context(ctx).map_err(OAuthError::invalid_request)?;
        }
        if let Some(url) = request.smart_style_url.as_deref() {
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err(OAuthError::invalid_request("smart_style_url must be an http(s) URL"));
            }
        }
        let ttl = self.config().launch_seconds.max(1);
        let launch = self
            .inner
            .store
            .create_launch(NewLaunch {
                patient_id,
                encounter_id: request.encounter,
                fhir_context: request.fhir_context,
                need_patient_banner: request.need_patient_banner.unwrap_or(true),
                smart_style_url: request.smart_style_url,
                ttl_seconds: ttl,
            })
            .await?;
        Ok(LaunchCreated { launch, expires_in: ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fhir_context_shapes() {
        assert!(check_fhir_context(&json!([{"reference": "Encounter/1"}, {"canonical": "http://q|1", "role": "x"}]))
            .is_ok());
        assert!(check_fhir_context(&json!([{"identifier": {"value": "1"}, "type": "Patient"}])).is_ok());
        assert!(check_fhir_context(&json!(["Encounter/1"])).is_err());
        assert!(check_fhir_context(&json!([{"type": "Encounter"}])).is_err());
        assert!(check_fhir_context(&json!([{"reference": 1}])).is_err());
        assert!(check_fhir_context(&json!({"reference": "x"})).is_err());
        assert!(check_fhir_context(&json!([{"reference": "x", "extra": "y"}])).is_err());
    }
}
