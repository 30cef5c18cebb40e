//! `GET /metadata`: a CapabilityStatement generated from what the code supports, so it cannot
//! drift: every resource type of the registry, each with the search parameters the indexer
//! handles (composite and special parameters are left out because search rejects them).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use fhir::ParamType;
use serde_json::{json, Value};

use crate::response::fhir_json;
use crate::AppState;

pub async fn get(State(state): State<AppState>) -> Response {
    fhir_json(StatusCode::OK, state.capability.as_str().to_string())
}

fn type_name(kind: ParamType) -> Option<&'static str> {
    Some(match kind {
        ParamType::Number => "number",
        ParamType::Date => "date",
        ParamType::String => "string",
        ParamType::Token => "token",
        ParamType::Reference => "reference",
        ParamType::Quantity => "quantity",
        ParamType::Uri => "uri",
        ParamType::Composite | ParamType::Special => return None,
    })
}

/// The SMART security block: the service coding and the `oauth-uris` extension pointing at the
/// authorization server's endpoints.
fn security(oauth_uris: &[(&str, String)]) -> Value {
    let uris: Vec<Value> = oauth_uris.iter().map(|(name, url)| json!({"url": name, "valueUri": url})).collect();
    json!({
        "cors": true,
        "service": [{
            "coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                "code": "SMART-on-FHIR",
                "display": "SMART-on-FHIR"
            }],
            "text": "OAuth2 using SMART-on-FHIR profile (see /.well-known/smart-configuration)"
        }],
        "extension": [{
            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
            "extension": uris
        }]
    })
}

/// Subscriptions are topic-based (the R5 Backport IG): create, read, search and delete, the
/// backport's operations, and every topic by its canonical URL.
fn subscription_capability() -> Value {
    let mut extension: Vec<Value> = subscriptions::topics::TOPICS
        .iter()
        .map(|t| {
            json!({
                "url": "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                "valueCanonical": t.url(),
            })
        })
        .collect();
    extension.push(json!({
        "url": "http://hl7.org/fhir/StructureDefinition/capabilitystatement-expectation",
        "valueCode": "SHALL",
    }));
    json!({
        "type": "Subscription",
        "extension": extension,
        "supportedProfile": ["http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/backport-subscription"],
        "interaction": [{"code": "create"}, {"code": "read"}, {"code": "delete"}, {"code": "search-type"}],
        "versioning": "no-version",
        "operation": [{
            "name": "status",
            "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-status"
        }, {
            "name": "events",
            "definition": "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/backport-subscription-events"
        }],
    })
}

pub fn capability_statement(base_url: &str, oauth_uris: &[(&str, String)]) -> Value {
    let registry = fhir::Registry::r4();
    let interactions: Vec<Value> =
        ["read", "vread", "update", "delete", "history-instance", "history-type", "create", "search-type"]
            .iter()
            .map(|code| json!({ "code": code }))
            .collect();
    let resources: Vec<Value> = registry
        .resource_types()
        .into_iter()
        .map(|rtype| {
            let mut params: Vec<Value> = vec![
                json!({"name": "_id", "type": "token", "definition": "http://hl7.org/fhir/SearchParameter/Resource-id"}),
                json!({"name": "_lastUpdated", "type": "date", "definition": "http://hl7.org/fhir/SearchParameter/Resource-lastUpdated"}),
            ];
            let mut includes = Vec::new();
            let mut defs = registry.params_for(rtype);
            defs.sort_by(|a, b| a.code.cmp(&b.code));
            for def in defs {
                if matches!(def.code.as_str(), "_id" | "_lastUpdated" | "_text" | "_content" | "_query") {
                    continue;
                }
                let Some(kind) = type_name(def.kind) else { continue };
                params.push(json!({"name": def.code, "type": kind}));
                if def.kind == ParamType::Reference {
                    includes.push(format!("{rtype}:{}", def.code));
                }
            }
            let mut resource = json!({
                "type": rtype,
                "interaction": interactions,
                "versioning": "versioned",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": true,
                "conditionalDelete": "single",
                "searchInclude": includes,
                "searchParam": params,
            });
            if rtype == "Patient" {
                resource["operation"] = json!([{
                    "name": "everything",
                    "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"
                }, {
                    "name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
                }, {
                    "name": "member-match",
                    "definition": "http://hl7.org/fhir/us/davinci-hrex/OperationDefinition/member-match"
                }]);
            }
            if rtype == "Task" {
                resource["operation"] = json!([{
                    "name": "action-link",
                    "definition": "https://portico.dev/fhir/OperationDefinition/Task-action-link",
                    "documentation": "POST a Parameters with policy (click-through | pin | sign-in) and optionally expires: \
                        a single-use link for the Task's one action (a prior authorization Claim or a Consent), \
                        recorded on the Task as an input of type https://portico.dev/fhir/CodeSystem/task-io|action-link"
                }]);
            }
            if rtype == "Group" {
                resource["operation"] = json!([{
                    "name": "export",
                    "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
                }]);
            }
            if rtype == "Subscription" {
                resource = subscription_capability();
            }
            resource
        })
        .collect();
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-23",
        "publisher": "Portico",
        "kind": "instance",
        "software": { "name": "Portico", "version": env!("CARGO_PKG_VERSION") },
        "implementation": { "description": "Portico FHIR R4 server", "url": base_url },
        "instantiates": ["http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"],
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": security(oauth_uris),
            "resource": resources,
            "interaction": [
                {"code": "transaction"},
                {"code": "batch"},
                {"code": "history-system"}
            ],
            "operation": [{
                "name": "export",
                "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
            }, {
                "name": "sync",
                "definition": "https://portico.dev/fhir/OperationDefinition/sync",
                "documentation": "GET [base]/$sync[?cursor=C][&_count=N]: every version committed after the cursor, \
                    in commit order, within the caller's access (deletions as tombstones; a Parameters entry names \
                    patients who joined or left the caller's list); the next link carries the cursor to resume from"
            }],
            "searchParam": [
                {"name": "_count", "type": "number"},
                {"name": "_sort", "type": "string"},
                {"name": "_include", "type": "string"},
                {"name": "_revinclude", "type": "string"},
                {"name": "_summary", "type": "token"},
                {"name": "_elements", "type": "string"},
                {"name": "_total", "type": "token"}
            ]
        }]
    })
}
