//! What an app asks to fetch: resource groups (FHIR types, with Vitals and Labs as Observation
//! categories), a time window, and whether undated entries count.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{LinkError, Result};

/// A resource group an app can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Group {
    Patient,
    Immunization,
    AllergyIntolerance,
    MedicationRequest,
    MedicationStatement,
    Vitals,
    Labs,
    DiagnosticReport,
    Condition,
    Procedure,
    FamilyMemberHistory,
    DocumentReference,
    CareTeam,
    CarePlan,
    ExplanationOfBenefit,
    Coverage,
}

pub const ALL_GROUPS: [Group; 16] = [
    Group::Patient,
    Group::Immunization,
    Group::AllergyIntolerance,
    Group::MedicationRequest,
    Group::MedicationStatement,
    Group::Vitals,
    Group::Labs,
    Group::DiagnosticReport,
    Group::Condition,
    Group::Procedure,
    Group::FamilyMemberHistory,
    Group::DocumentReference,
    Group::CareTeam,
    Group::CarePlan,
    Group::ExplanationOfBenefit,
    Group::Coverage,
];

const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::Patient => "Patient",
            Group::Immunization => "Immunization",
            Group::AllergyIntolerance => "AllergyIntolerance",
            Group::MedicationRequest => "MedicationRequest",
            Group::MedicationStatement => "MedicationStatement",
            Group::Vitals => "Vitals",
            Group::Labs => "Labs",
            Group::DiagnosticReport => "DiagnosticReport",
            Group::Condition => "Condition",
            Group::Procedure => "Procedure",
            Group::FamilyMemberHistory => "FamilyMemberHistory",
            Group::DocumentReference => "DocumentReference",
            Group::CareTeam => "CareTeam",
            Group::CarePlan => "CarePlan",
            Group::ExplanationOfBenefit => "ExplanationOfBenefit",
            Group::Coverage => "Coverage",
        }
    }

    pub fn parse(name: &str) -> Option<Group> {
        ALL_GROUPS.iter().copied().find(|g| g.name() == name)
    }

    /// The FHIR type searched.
    pub fn resource_type(self) -> &'static str {
        match self {
            Group::Vitals | Group::Labs => "Observation",
            other => other.name(),
        }
    }

    /// Extra search parameters that narrow the type to the group.
    pub fn narrowing(self) -> Option<(&'static str, String)> {
        match self {
            Group::Vitals => Some(("category", format!("{OBSERVATION_CATEGORY}|vital-signs"))),
            Group::Labs => Some(("category", format!("{OBSERVATION_CATEGORY}|laboratory"))),
            _ => None,
        }
    }

    /// The R4 search parameter for the group's clinically relevant date, when it has one.
    pub fn date_param(self) -> Option<&'static str> {
        match self {
            Group::Patient | Group::Coverage => None,
            Group::MedicationRequest => Some("authoredon"),
            Group::MedicationStatement => Some("effective"),
            Group::Condition => Some("onset-date"),
            Group::ExplanationOfBenefit => Some("created"),
            _ => Some("date"),
        }
    }

    /// Where a resource of the group keeps that date, in the order looked at.
    pub fn date_paths(self) -> &'static [&'static [&'static str]] {
        match self {
            Group::Patient => &[],
            Group::Immunization => &[&["occurrenceDateTime"], &["recorded"]],
            Group::AllergyIntolerance => &[&["recordedDate"], &["onsetDateTime"], &["onsetPeriod", "start"]],
            Group::MedicationRequest => &[&["authoredOn"]],
            Group::MedicationStatement => &[&["effectiveDateTime"], &["effectivePeriod", "start"], &["dateAsserted"]],
            Group::Vitals | Group::Labs => {
                &[&["effectiveDateTime"], &["effectivePeriod", "start"], &["effectiveInstant"], &["issued"]]
            }
            Group::DiagnosticReport => &[&["effectiveDateTime"], &["effectivePeriod", "start"], &["issued"]],
            Group::Condition => &[&["onsetDateTime"], &["onsetPeriod", "start"], &["recordedDate"]],
            Group::Procedure => &[&["performedDateTime"], &["performedPeriod", "start"]],
            Group::FamilyMemberHistory => &[&["date"]],
            Group::DocumentReference => &[&["date"], &["context", "period", "start"]],
            Group::CareTeam => &[&["period", "start"]],
            Group::CarePlan => &[&["period", "start"], &["created"]],
            Group::ExplanationOfBenefit => &[&["billablePeriod", "start"], &["created"]],
            Group::Coverage => &[&["period", "start"]],
        }
    }

    /// Which group a resource belongs to (Observations by category), if any.
    pub fn of(resource: &Value) -> Option<Group> {
        let t = resource.get("resourceType").and_then(Value::as_str)?;
        if t == "Observation" {
            let categories = resource.get("category").and_then(Value::as_array).into_iter().flatten();
            let codes: Vec<&str> = categories
                .flat_map(|c| c.get("coding").and_then(Value::as_array).into_iter().flatten())
                .filter_map(|c| c.get("code").and_then(Value::as_str))
                .collect();
            return if codes.contains(&"laboratory") {
                Some(Group::Labs)
            } else if codes.contains(&"vital-signs") {
                Some(Group::Vitals)
            } else {
                None
            };
        }
        Group::parse(t).filter(|g| !matches!(g, Group::Vitals | Group::Labs))
    }
}

/// A fetch request's JSON body.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FetchRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_time: Option<String>,
    #[serde(default)]
    pub exclude_undated_entries: bool,
    /// Merge records that are the same across portals (absent: yes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dedup: Option<bool>,
}

/// A checked fetch request.
#[derive(Debug, Clone, PartialEq)]
pub struct FetchPlan {
    pub groups: Vec<Group>,
    /// Every group (the request named none).
    pub all: bool,
    /// `[start, end)` in epoch ms.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
    pub exclude_undated: bool,
    pub from_text: Option<String>,
    pub to_text: Option<String>,
}

impl FetchRequest {
    /// Whether duplicates across portals are merged (the default).
    pub fn deduplicate(&self) -> bool {
        self.dedup.unwrap_or(true)
    }

    pub fn plan(&self) -> Result<FetchPlan> {
        let (groups, all) = match &self.resources {
            None => (ALL_GROUPS.to_vec(), true),
            Some(names) if names.is_empty() => {
                return Err(LinkError::bad_request("resources, when given, may not be empty"))
            }
            Some(names) => {
                let mut groups = Vec::new();
                for n in names {
                    let g = Group::parse(n).ok_or_else(|| {
                        let known: Vec<&str> = ALL_GROUPS.iter().map(|g| g.name()).collect();
                        LinkError::bad_request(format!("'{n}' is not a resource Link fetches ({})", known.join(", ")))
                    })?;
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
                groups.sort();
                (groups, false)
            }
        };
        let time = |name: &str, value: &Option<String>| -> Result<Option<fhir::datetime::DateRange>> {
            match value {
                None => Ok(None),
                Some(v) => fhir::datetime::parse_range(v)
                    .map(Some)
                    .ok_or_else(|| LinkError::bad_request(format!("{name} '{v}' is not a FHIR date or dateTime"))),
            }
        };
        let from = time("fromTime", &self.from_time)?;
        let to = time("toTime", &self.to_time)?;
        if let (Some(f), Some(t)) = (from, to) {
            if f.start >= t.end {
                return Err(LinkError::bad_request("fromTime must be before toTime"));
            }
        }
        Ok(FetchPlan {
            groups,
            all,
            from_ms: from.map(|r| r.start),
            to_ms: to.map(|r| r.end),
            exclude_undated: self.exclude_undated_entries,
            from_text: self.from_time.clone(),
            to_text: self.to_time.clone(),
        })
    }
}

impl FetchPlan {
    pub fn has_dates(&self) -> bool {
        self.from_ms.is_some() || self.to_ms.is_some()
    }

    /// Does a resource of `group` fall inside the window? (Patients always do.)
    pub fn keeps(&self, group: Group, resource: &Value) -> bool {
        self.keeps_dated(group, date_of(group, resource))
    }

    /// [`FetchPlan::keeps`] for a resource whose group date is `date`.
    pub fn keeps_dated(&self, group: Group, date: Option<fhir::datetime::DateRange>) -> bool {
        if group == Group::Patient {
            return true;
        }
        match date {
            None => !self.exclude_undated,
            Some(range) => {
                self.from_ms.is_none_or(|from| range.end > from) && self.to_ms.is_none_or(|to| range.start < to)
            }
        }
    }
}

/// The resource's date for its group, as a range.
pub fn date_of(group: Group, resource: &Value) -> Option<fhir::datetime::DateRange> {
    group.date_paths().iter().find_map(|path| {
        let mut v = resource;
        for key in *path {
            v = v.get(key)?;
        }
        v.as_str().and_then(fhir::datetime::parse_range)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn requests_are_checked() {
        let plan = FetchRequest::default().plan().unwrap();
        assert!(plan.all && plan.groups.len() == 16);
        let r = FetchRequest {
            resources: Some(vec!["Labs".into(), "Condition".into(), "Labs".into()]),
            ..Default::default()
        };
        assert_eq!(r.plan().unwrap().groups, vec![Group::Labs, Group::Condition]);
        for bad in [
            FetchRequest { resources: Some(vec!["Observation".into()]), ..Default::default() },
            FetchRequest { resources: Some(vec![]), ..Default::default() },
            FetchRequest { from_time: Some("yesterday".into()), ..Default::default() },
            FetchRequest { from_time: Some("2024".into()), to_time: Some("2023".into()), ..Default::default() },
        ] {
            assert!(bad.plan().is_err(), "{bad:?}");
        }
        assert!(
            serde_json::from_value::<FetchRequest>(json!({"resource": ["Labs"]})).is_err(),
            "unknown fields refused"
        );
    }

    #[test]
    fn windows_keep_what_overlaps() {
        let plan = FetchRequest {
            from_time: Some("2020-01-01".into()),
            to_time: Some("2020-12-31".into()),
            ..Default::default()
        }
        .plan()
        .unwrap();
        let obs = |date: &str| json!({"resourceType": "Observation", "effectiveDateTime": date});
        assert!(plan.keeps(Group::Labs, &obs("2020-06-01T10:00:00Z")));
        assert!(plan.keeps(Group::Labs, &obs("2020-12-31")));
        assert!(!plan.keeps(Group::Labs, &obs("2021-01-01")));
        assert!(!plan.keeps(Group::Labs, &obs("2019-12-31T23:59:59Z")));
        assert!(plan.keeps(Group::Labs, &json!({"resourceType": "Observation"})), "undated kept by default");
        let strict = FetchPlan { exclude_undated: true, ..plan.clone() };
        assert!(!strict.keeps(Group::Labs, &json!({"resourceType": "Observation"})));
        assert!(strict.keeps(Group::Patient, &json!({"resourceType": "Patient"})));
        let condition = json!({"resourceType": "Condition", "onsetPeriod": {"start": "2020-03"}});
        assert!(plan.keeps(Group::Condition, &condition));
    }

    #[test]
    fn observations_group_by_category() {
        let lab = json!({"resourceType": "Observation", "category": [{"coding": [{"code": "laboratory"}]}]});
        assert_eq!(Group::of(&lab), Some(Group::Labs));
        assert_eq!(Group::of(&json!({"resourceType": "Observation"})), None);
        assert_eq!(Group::of(&json!({"resourceType": "Coverage"})), Some(Group::Coverage));
        assert_eq!(Group::of(&json!({"resourceType": "Practitioner"})), None);
    }
}
