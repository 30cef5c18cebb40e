//! What a job stores: its accepted request (`JobSpec`), how far it got (`Checkpoint`), and the
//! completion manifest built from them.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::request::{Associated, Level};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub level: Level,
    /// The kick-off URL, for the manifest's `request`.
    pub request: String,
    /// When the kick-off was accepted (epoch ms): the manifest's `transactionTime`.
    pub transaction_time_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub types: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub type_filters: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub elements: Option<Vec<String>>,
    /// The patients of a Group (resolved at kick-off) or of the `patient` parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patients: Option<Vec<String>>,
    /// `includeAssociatedData`, when it was asked for and the caller may read Provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub associated: Option<Associated>,
    /// The kick-off token's scopes.
    pub scopes: String,
    /// Notes for the `error` file (parameters ignored under lenient handling).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Which stream of a type is being written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    #[default]
    Resources,
    Deleted,
    /// The Provenance of `includeAssociatedData`, after every type.
    Associated,
}

/// One finished file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    #[serde(rename = "type")]
    pub resource_type: String,
    pub name: String,
    pub count: i64,
}

/// How far a job got; stored after every file, so a resumed job starts the next one.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The types to export, fixed on the first run (a resumed job sees the same list).
    #[serde(default)]
    pub types: Option<Vec<String>>,
    pub type_index: usize,
    pub stage: Stage,
    /// Resume after this rkey in the current type and stage.
    pub after_rkey: i64,
    /// The next file's number within the current type and stage.
    pub part: u32,
    pub output: Vec<OutputFile>,
    pub deleted: Vec<OutputFile>,
    /// Types skipped while running (no longer authorized), for the `error` file.
    pub notes: Vec<String>,
    pub exported: i64,
    /// The associated Provenance (if asked for) are written too.
    #[serde(default)]
    pub associated_done: bool,
}

impl Checkpoint {
    pub fn progress(&self) -> String {
        let total = self.types.as_ref().map_or(0, Vec::len);
        let current = self.types.as_ref().and_then(|t| t.get(self.type_index)).map_or("", String::as_str);
        if self.stage == Stage::Associated {
            format!("{} resources exported; associated Provenance", self.exported)
        } else if current.is_empty() {
            format!("{} resources exported; finishing", self.exported)
        } else {
            format!(
                "{} resources exported; type {} of {} ({current})",
                self.exported,
                (self.type_index + 1).min(total),
                total
            )
        }
    }
}

/// The name of the file with the OperationOutcomes of a job's notes.
pub const ERROR_FILE: &str = "errors.ndjson";

/// The completion manifest (Bulk Data 2.0 "Complete Status").
pub fn manifest(spec: &JobSpec, done: &Checkpoint, file_url: impl Fn(&str) -> String, has_errors: bool) -> Value {
    let list = |files: &[OutputFile]| -> Vec<Value> {
        files.iter().map(|f| json!({"type": f.resource_type, "url": file_url(&f.name), "count": f.count})).collect()
    };
    let mut errors = Vec::new();
    if has_errors {
        errors.push(json!({"type": "OperationOutcome", "url": file_url(ERROR_FILE)}));
    }
    let mut m = json!({
        "transactionTime": fhir_instant(spec.transaction_time_ms),
        "request": spec.request,
        "requiresAccessToken": true,
        "output": list(&done.output),
        "error": errors,
    });
    if spec.since_ms.is_some() {
        m["deleted"] = Value::Array(list(&done.deleted));
    }
    m
}

pub fn fhir_instant(ms: i64) -> String {
    let at = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    at.format(&time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"))
        .unwrap_or_default()
}

/// One OperationOutcome line of the `error` file.
pub fn outcome_line(note: &str) -> String {
    json!({"resourceType": "OperationOutcome",
           "issue": [{"severity": "warning", "code": "processing", "diagnostics": note}]})
    .to_string()
}

/// One line of a `deleted` file: a transaction Bundle with the DELETE of the resource.
pub fn deleted_line(resource_type: &str, id: &str, deleted_ms: i64) -> String {
    json!({"resourceType": "Bundle", "type": "transaction",
           "entry": [{"request": {"method": "DELETE", "url": format!("{resource_type}/{id}")},
                      "response": {"status": "410", "lastModified": fhir_instant(deleted_ms)}}]})
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_lists_files_with_urls_and_counts() {
        let spec = JobSpec {
            level: Level::System,
            request: "http://h/fhir/$export".into(),
            transaction_time_ms: 1_704_164_645_123,
            types: None,
            type_filters: vec![],
            since_ms: Some(0),
            elements: None,
            patients: None,
            associated: None,
            scopes: "system/*.rs".into(),
            notes: vec![],
        };
        let done = Checkpoint {
            output: vec![OutputFile { resource_type: "Patient".into(), name: "Patient-0.ndjson".into(), count: 3 }],
            ..Checkpoint::default()
        };
        let m = manifest(&spec, &done, |n| format!("http://h/bulk/files/j/{n}"), true);
        assert_eq!(m["transactionTime"], "2024-01-02T03:04:05.123Z");
        assert_eq!(
            m["output"][0],
            json!({"type": "Patient", "url": "http://h/bulk/files/j/Patient-0.ndjson", "count": 3})
        );
        assert_eq!(m["error"][0]["type"], "OperationOutcome");
        assert_eq!(m["deleted"], json!([]));
        assert_eq!(m["requiresAccessToken"], true);
    }
}
