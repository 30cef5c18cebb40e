//! Which patients a signed-in person may choose, and how to name them on the pages.

use auth::PatientId;
use serde_json::Value;
use store::auth::User;

use crate::error::PageError;
use crate::AuthServer;

/// A patient as the picker shows them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatientChoice {
    pub id: PatientId,
    pub name: String,
    pub birth_date: Option<String>,
}

/// "Given Family" from a resource's `name` (the `official` one first), or its `text`.
pub fn human_name(resource: &Value) -> Option<String> {
    let names = resource.get("name")?.as_array()?;
    let name =
        names.iter().find(|n| n.get("use").and_then(Value::as_str) == Some("official")).or_else(|| names.first())?;
    if let Some(text) = name.get("text").and_then(Value::as_str) {
        return Some(text.to_owned());
    }
    let mut parts: Vec<&str> = Vec::new();
    if let Some(given) = name.get("given").and_then(Value::as_array) {
        parts.extend(given.iter().filter_map(Value::as_str));
    }
    if let Some(family) = name.get("family").and_then(Value::as_str) {
        parts.push(family);
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

impl AuthServer {
    /// The patients `user` may choose (patients and members: themselves and those they are proxy
    /// for; practitioners: the patients linked to them, see [`AuthServer::patient_ids_for`]).
    pub async fn patients_for(&self, user: &User) -> Result<Vec<PatientId>, PageError> {
        let ids = self.patient_ids_for(user).await.map_err(PageError::internal)?;
        Ok(ids.into_iter().filter_map(|id| id.parse().ok()).collect())
    }

    /// Names and birth dates for the picker, in the order given. A patient without a stored
    /// resource is still listed, by id.
    pub async fn patient_choices(&self, ids: &[PatientId]) -> Vec<PatientChoice> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let resource = match self.inner.store.read("Patient", id.as_str()).await {
                Ok(store::ReadOutcome::Found(r)) => serde_json::from_str::<Value>(&r.body).ok(),
                _ => None,
            };
            let name = resource.as_ref().and_then(human_name).unwrap_or_else(|| format!("Patient {id}"));
            let birth_date =
                resource.as_ref().and_then(|r| r.get("birthDate")).and_then(Value::as_str).map(str::to_owned);
            out.push(PatientChoice { id: id.clone(), name, birth_date });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        let p = json!({"name": [{"use": "maiden", "family": "Old"}, {"use": "official", "given": ["Ada", "M"], "family": "Lovelace"}]});
        assert_eq!(human_name(&p).as_deref(), Some("Ada M Lovelace"));
        assert_eq!(human_name(&json!({"name": [{"text": "Dr. Who"}]})).as_deref(), Some("Dr. Who"));
        assert_eq!(human_name(&json!({"name": []})), None);
        assert_eq!(human_name(&json!({})), None);
    }
}
