//! `portico group import`: a FHIR Group of patients from a list (a payer's attribution list, a
//! clinic's panel), for `Group/{id}/$export`. Every entry must name a stored Patient; the Group
//! is written only when all of them do, so a typo never silently shrinks an export.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{json, Value};
use store::{ReadOutcome, Restriction, Store, WriteRequest};

use crate::admin::AdminDb;
use crate::run::{open_store, RunError};

#[derive(Subcommand)]
pub enum GroupCommand {
    /// Create or replace a Group of patients from a CSV or NDJSON file and print its id.
    Import(GroupImport),
}

#[derive(Args)]
pub struct GroupImport {
    #[command(flatten)]
    pub admin: AdminDb,
    /// The Group's name.
    #[arg(long)]
    pub name: String,
    /// The Group's id (replacing that Group); default: a new id.
    #[arg(long)]
    pub id: Option<String>,
    /// CSV (first column: a Patient id, or an identifier as `system|value`; a header row is
    /// skipped) or NDJSON (each line `{"id": …}`, `{"reference": "Patient/…"}`, `{"identifier":
    /// {"system": …, "value": …}}`, or a Patient resource).
    pub file: PathBuf,
}

/// One entry of the list, before it is resolved to a Patient id.
#[derive(Debug, Clone, PartialEq)]
enum Member {
    Id(String),
    Identifier(String, String),
}

pub async fn run(command: GroupCommand) -> Result<(), RunError> {
    let GroupCommand::Import(args) = command;
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| RunError::Config(format!("cannot read {}: {e}", args.file.display())))?;
    let ndjson = args.file.extension().is_some_and(|e| e == "ndjson" || e == "jsonl");
    let entries = if ndjson { parse_ndjson(&text) } else { parse_csv(&text) }.map_err(RunError::Config)?;
    if entries.is_empty() {
        return Err(RunError::Config(format!("{} lists no members", args.file.display())));
    }
    if let Some(id) = &args.id {
        if !fhir::search::is_valid_id(id) {
            return Err(RunError::Config(format!("'{id}' is not a valid FHIR id")));
        }
    }
    let store = open_store(&args.admin.db, &args.admin.base_url, 0).await?;
    let mut patients: Vec<String> = Vec::new();
    let mut unknown = Vec::new();
    for entry in &entries {
        match resolve(&store, entry).await? {
            Some(id) if !patients.contains(&id) => patients.push(id),
            Some(_) => {}
            None => unknown.push(entry),
        }
    }
    if !unknown.is_empty() {
        let shown: Vec<String> = unknown.iter().take(10).map(|m| describe(m)).collect();
        return Err(RunError::Config(format!(
            "{} of {} entries name no stored Patient (first: {}); nothing was written",
            unknown.len(),
            entries.len(),
            shown.join(", ")
        )));
    }
    let members: Vec<Value> =
        patients.iter().map(|p| json!({"entity": {"reference": format!("Patient/{p}")}})).collect();
    let mut group = json!({
        "resourceType": "Group",
        "type": "person",
        "actual": true,
        "name": args.name,
        "quantity": members.len(),
        "member": members,
    });
    let request = match &args.id {
        Some(id) => {
            group["id"] = json!(id);
            WriteRequest::Update { resource_type: "Group".into(), id: id.clone(), resource: group, if_match: None }
        }
        None => WriteRequest::Create { resource: group },
    };
    let outcome = store.write(vec![request]).await?;
    let written = outcome.first().ok_or_else(|| RunError::Import("the Group write produced no outcome".into()))?;
    println!("{}", json!({"id": written.id, "version": written.version, "members": patients.len()}));
    Ok(())
}

fn describe(m: &Member) -> String {
    match m {
        Member::Id(id) => format!("Patient/{id}"),
        Member::Identifier(system, value) => format!("identifier {system}|{value}"),
    }
}

async fn resolve(store: &Store, member: &Member) -> Result<Option<String>, RunError> {
    match member {
        Member::Id(id) => {
            if !fhir::search::is_valid_id(id) {
                return Ok(None);
            }
            Ok(matches!(store.read("Patient", id).await?, ReadOutcome::Found(_)).then(|| id.clone()))
        }
        Member::Identifier(system, value) => {
            let pairs = vec![("identifier".to_owned(), format!("{system}|{value}"))];
            let search = fhir::search::parse(fhir::Registry::r4(), "Patient", &pairs, fhir::search::Handling::Strict)
                .map_err(|e| RunError::Config(e.message))?;
            let page = store.search(&search, &Restriction::default()).await?;
            match page.matches.as_slice() {
                [one] => Ok(Some(one.id.clone())),
                [] => Ok(None),
                _ => Err(RunError::Config(format!("identifier {system}|{value} names more than one Patient"))),
            }
        }
    }
}

fn member_from_text(cell: &str) -> Option<Member> {
    let cell = cell.trim().trim_matches('"').trim();
    if cell.is_empty() {
        return None;
    }
    if let Some(id) = cell.strip_prefix("Patient/") {
        return Some(Member::Id(id.to_owned()));
    }
    match cell.split_once('|') {
        Some((system, value)) => Some(Member::Identifier(system.to_owned(), value.to_owned())),
        None => Some(Member::Id(cell.to_owned())),
    }
}

fn parse_csv(text: &str) -> Result<Vec<Member>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let first = line.split(',').next().unwrap_or("").trim();
        let header =
            i == 0 && matches!(first.to_ascii_lowercase().as_str(), "id" | "patient" | "identifier" | "member");
        if header || first.is_empty() || first.starts_with('#') {
            continue;
        }
        out.extend(member_from_text(first));
    }
    Ok(out)
}

fn parse_ndjson(text: &str) -> Result<Vec<Member>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: Value = serde_json::from_str(line).map_err(|e| format!("line {}: not JSON: {e}", i + 1))?;
        let member = if let Some(reference) = v.get("reference").and_then(Value::as_str) {
            member_from_text(reference)
        } else if let Some(identifier) = v.get("identifier") {
            let identifier = identifier.as_array().and_then(|a| a.first()).unwrap_or(identifier);
            match (identifier.get("system").and_then(Value::as_str), identifier.get("value").and_then(Value::as_str)) {
                (Some(s), Some(v)) => Some(Member::Identifier(s.to_owned(), v.to_owned())),
                _ => None,
            }
        } else {
            v.get("id").and_then(Value::as_str).map(|id| Member::Id(id.to_owned()))
        };
        out.push(member.ok_or_else(|| format!("line {}: no id, reference or identifier", i + 1))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_and_ndjson_lists() {
        let csv = "patient,name\np1,Ann\nPatient/p2\nhttp://ids|123\n\n";
        assert_eq!(
            parse_csv(csv).unwrap(),
            vec![
                Member::Id("p1".into()),
                Member::Id("p2".into()),
                Member::Identifier("http://ids".into(), "123".into())
            ]
        );
        let nd =
            "{\"id\":\"p1\"}\n{\"reference\":\"Patient/p2\"}\n{\"identifier\":{\"system\":\"s\",\"value\":\"v\"}}\n";
        assert_eq!(
            parse_ndjson(nd).unwrap(),
            vec![Member::Id("p1".into()), Member::Id("p2".into()), Member::Identifier("s".into(), "v".into())]
        );
        assert!(parse_ndjson("{\"name\":1}\n").is_err());
    }
}
