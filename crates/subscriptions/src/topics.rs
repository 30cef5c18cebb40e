//! The topics a Subscription can name: what change of which resource type fires each, and the
//! search parameters a subscriber may filter on. Each topic is served in the backport IG's R4
//! form (a `Basic` resource carrying the R5 SubscriptionTopic elements as cross-version
//! extensions) and advertised in the CapabilityStatement.

use serde_json::{json, Value};

/// Canonical URLs of Portico's topics start with this.
pub const TOPIC_BASE: &str = "https://portico.dev/fhir/SubscriptionTopic/";

/// Which writes fire a topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// A new resource (the first version).
    Created,
    /// A new resource or a new version of one.
    CreatedOrUpdated,
    /// An encounter becomes `in-progress` (started) or `finished` (ended).
    EncounterStartedOrFinished,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topic {
    /// The last segment of the canonical URL, also the `Basic` resource's id.
    pub name: &'static str,
    pub title: &'static str,
    pub description: &'static str,
    pub resource_type: &'static str,
    pub trigger: Trigger,
    /// Search terms every matching resource must meet (e.g. the laboratory category).
    pub criteria: &'static [(&'static str, &'static str)],
    /// The search parameters subscribers may filter on.
    pub filters: &'static [&'static str],
}

impl Topic {
    pub fn url(&self) -> String {
        format!("{TOPIC_BASE}{}", self.name)
    }
}

const LAB: &str = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";

pub const TOPICS: &[Topic] = &[
    Topic {
        name: "condition-changed",
        title: "Problem list: a condition added or changed",
        description: "A Condition is created or a new version of one is stored.",
        resource_type: "Condition",
        trigger: Trigger::CreatedOrUpdated,
        criteria: &[],
        filters: &["patient", "category", "code", "clinical-status"],
    },
    Topic {
        name: "medication-request-changed",
        title: "A medication request added or changed",
        description: "A MedicationRequest is created or a new version of one is stored.",
        resource_type: "MedicationRequest",
        trigger: Trigger::CreatedOrUpdated,
        criteria: &[],
        filters: &["patient", "status", "intent", "code"],
    },
    Topic {
        name: "lab-result-added",
        title: "A laboratory result added",
        description: "An Observation with the laboratory category is created.",
        resource_type: "Observation",
        trigger: Trigger::Created,
        criteria: &[("category", LAB)],
        filters: &["patient", "code", "status"],
    },
    Topic {
        name: "encounter-start-end",
        title: "An encounter started or finished",
        description: "An Encounter's status becomes in-progress (it started) or finished (it ended).",
        resource_type: "Encounter",
        trigger: Trigger::EncounterStartedOrFinished,
        criteria: &[],
        filters: &["patient", "class", "type", "status"],
    },
    Topic {
        name: "claim-added",
        title: "A claim added",
        description: "A Claim is created.",
        resource_type: "Claim",
        trigger: Trigger::Created,
        criteria: &[],
        filters: &["patient", "use", "status"],
    },
    Topic {
        name: "eob-added",
        title: "An explanation of benefit added",
        description: "An ExplanationOfBenefit is created.",
        resource_type: "ExplanationOfBenefit",
        trigger: Trigger::Created,
        criteria: &[],
        filters: &["patient", "status"],
    },
];

pub fn by_url(url: &str) -> Option<&'static Topic> {
    let name = url.strip_prefix(TOPIC_BASE)?;
    TOPICS.iter().find(|t| t.name == name)
}

pub fn by_name(name: &str) -> Option<&'static Topic> {
    TOPICS.iter().find(|t| t.name == name)
}

/// The resource types any topic watches.
pub fn watched_types() -> Vec<&'static str> {
    let mut types: Vec<&'static str> = TOPICS.iter().map(|t| t.resource_type).collect();
    types.sort_unstable();
    types.dedup();
    types
}

/// Does this write fire `topic`'s trigger? `current` is the new version (None: a deletion),
/// `previous` the version before it (None: the resource is new).
pub fn fires(topic: &Topic, current: Option<&Value>, previous: Option<&Value>) -> bool {
    let Some(current) = current else { return false };
    match topic.trigger {
        Trigger::Created => previous.is_none(),
        Trigger::CreatedOrUpdated => true,
        Trigger::EncounterStartedOrFinished => {
            let status = |v: &Value| v.get("status").and_then(Value::as_str).map(str::to_owned);
            let now = status(current);
            let before = previous.and_then(status);
            matches!(now.as_deref(), Some("in-progress" | "finished")) && now != before
        }
    }
}

fn ext(element: &str, value: Value) -> Value {
    let mut e =
        json!({ "url": format!("http://hl7.org/fhir/5.0/StructureDefinition/extension-SubscriptionTopic.{element}") });
    if let (Some(map), Value::Object(v)) = (e.as_object_mut(), value) {
        map.extend(v);
    }
    e
}

/// The topic in the IG's R4 form: a `Basic` resource with the R5 elements as extensions.
pub fn as_basic(topic: &Topic) -> Value {
    let mut extension = vec![
        ext("url", json!({ "valueUri": topic.url() })),
        ext("version", json!({ "valueString": "1" })),
        ext("title", json!({ "valueString": topic.title })),
        ext("status", json!({ "valueCode": "active" })),
        ext("description", json!({ "valueMarkdown": topic.description })),
    ];
    let interactions: &[&str] = match topic.trigger {
        Trigger::Created => &["create"],
        Trigger::CreatedOrUpdated | Trigger::EncounterStartedOrFinished => &["create", "update"],
    };
    let mut trigger = vec![
        json!({ "url": "description", "valueMarkdown": topic.description }),
        json!({ "url": "resource", "valueUri": format!("http://hl7.org/fhir/StructureDefinition/{}", topic.resource_type) }),
    ];
    for i in interactions {
        trigger.push(json!({ "url": "supportedInteraction", "valueCode": i }));
    }
    if topic.trigger == Trigger::EncounterStartedOrFinished {
        trigger.push(json!({ "url": "fhirPathCriteria", "valueString": "(%previous.empty() or %previous.status != %current.status) and (%current.status = 'in-progress' or %current.status = 'finished')" }));
    }
    if !topic.criteria.is_empty() {
        let query: Vec<String> = topic.criteria.iter().map(|(k, v)| format!("{k}={v}")).collect();
        trigger.push(json!({ "url": "queryCriteria", "extension": [
            { "url": "current", "valueString": query.join("&") },
            { "url": "resultForCreate", "valueCode": "test-passes" },
            { "url": "resultForDelete", "valueCode": "test-fails" },
        ]}));
    }
    extension.push(ext("resourceTrigger", json!({ "extension": trigger })));
    for f in topic.filters {
        extension.push(ext(
            "canFilterBy",
            json!({ "extension": [
                { "url": "resource", "valueUri": topic.resource_type },
                { "url": "filterParameter", "valueString": f },
            ]}),
        ));
    }
    extension.push(ext(
        "notificationShape",
        json!({ "extension": [{ "url": "resource", "valueUri": topic.resource_type }] }),
    ));
    json!({
        "resourceType": "Basic",
        "id": format!("topic-{}", topic.name),
        "extension": extension,
        "code": { "coding": [{ "system": "http://hl7.org/fhir/fhir-types", "code": "SubscriptionTopic" }] },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_round_trip_and_types_are_watched() {
        for t in TOPICS {
            assert_eq!(by_url(&t.url()), Some(t));
            assert!(watched_types().contains(&t.resource_type));
            assert!(t.filters.contains(&"patient"), "{} must filter by patient", t.name);
        }
        assert_eq!(by_url("https://example.org/other"), None);
    }

    #[test]
    fn encounter_fires_on_start_and_end_only() {
        let t = by_name("encounter-start-end").unwrap_or(&TOPICS[0]);
        let enc = |s: &str| json!({"resourceType": "Encounter", "status": s});
        assert!(fires(t, Some(&enc("in-progress")), None));
        assert!(fires(t, Some(&enc("finished")), Some(&enc("in-progress"))));
        assert!(!fires(t, Some(&enc("finished")), Some(&enc("finished"))), "no change of status");
        assert!(!fires(t, Some(&enc("planned")), None));
        assert!(!fires(t, None, Some(&enc("in-progress"))), "deletions fire nothing");
    }

    #[test]
    fn created_only_topics_ignore_updates() {
        let t = by_name("lab-result-added").unwrap_or(&TOPICS[0]);
        let obs = json!({"resourceType": "Observation"});
        assert!(fires(t, Some(&obs), None));
        assert!(!fires(t, Some(&obs), Some(&obs)));
    }
}
