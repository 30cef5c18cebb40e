//! `portico validate PATH...`: check FHIR R4 JSON against the R4 structure definitions Portico
//! validates writes with — single resources, Bundles (each entry's resource) and NDJSON, plain
//! or gzipped. Prints a JSON summary; fails when anything is invalid.

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::run::RunError;

#[derive(clap::Args)]
pub struct ValidateArgs {
    /// Files or folders (searched for .json, .ndjson and their .gz forms).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
}

fn check(resource: &Value, at: &str, counts: &mut (usize, usize), problems: &mut Vec<Value>) {
    counts.0 += 1;
    if let Err(issues) = fhir::validate::Validator::r4().validate(resource) {
        counts.1 += 1;
        if problems.len() < 50 {
            let what = format!(
                "{}/{}",
                resource.get("resourceType").and_then(Value::as_str).unwrap_or("?"),
                resource.get("id").and_then(Value::as_str).unwrap_or("?")
            );
            let issues: Vec<String> = issues.iter().take(5).map(|i| format!("{}: {}", i.path, i.message)).collect();
            problems.push(json!({"at": at, "resource": what, "issues": issues}));
        }
    }
}

fn check_value(value: &Value, at: &str, counts: &mut (usize, usize), problems: &mut Vec<Value>) {
    if value.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
        for (i, entry) in value.get("entry").and_then(Value::as_array).into_iter().flatten().enumerate() {
            if let Some(r) = entry.get("resource") {
                check(r, &format!("{at} entry[{i}]"), counts, problems);
            }
        }
    } else {
        check(value, at, counts, problems);
    }
}

pub fn run(args: ValidateArgs) -> Result<(), RunError> {
    let files = crate::import::collect_files(&args.paths);
    if files.is_empty() {
        return Err(RunError::Import("no .json, .ndjson, .json.gz or .ndjson.gz files found".into()));
    }
    let mut counts = (0usize, 0usize);
    let mut problems = Vec::new();
    let mut unreadable = Vec::new();
    for file in &files {
        let at = file.display().to_string();
        let text = match crate::import::read_text(file) {
            Ok(t) => t,
            Err(e) => {
                unreadable.push(json!({"file": at, "error": e}));
                continue;
            }
        };
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.trim_end_matches(".gz").ends_with(".ndjson") {
            for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()) {
                match serde_json::from_str::<Value>(line) {
                    Ok(v) => check_value(&v, &format!("{at}:{}", n + 1), &mut counts, &mut problems),
                    Err(e) => unreadable.push(json!({"file": format!("{at}:{}", n + 1), "error": e.to_string()})),
                }
            }
        } else {
            match serde_json::from_str::<Value>(&text) {
                Ok(v) => check_value(&v, &at, &mut counts, &mut problems),
                Err(e) => unreadable.push(json!({"file": at, "error": e.to_string()})),
            }
        }
    }
    let summary = json!({"files": files.len(), "resources": counts.0, "invalid": counts.1, "problems": problems, "unreadable": unreadable});
    println!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    if counts.1 > 0 || !unreadable.is_empty() {
        return Err(RunError::Import(format!(
            "{} of {} resources are not valid R4; {} files unreadable",
            counts.1,
            counts.0,
            unreadable.len()
        )));
    }
    Ok(())
}
