//! `portico convert --from dstu2|stu3 PATH... [--out FILE] [--bundle]`: legacy FHIR to R4, as
//! NDJSON (one resource per line, references as `Type/id`, every resource with an id) or one
//! `collection` Bundle (entries as they were, `fullUrl`s kept). A summary of what was converted,
//! renamed, derived and kept in extensions goes to standard error.

use std::io::Write as _;
use std::path::PathBuf;

use fhir::convert::{convert, Report, Version};
use serde_json::{json, Value};

use crate::run::RunError;

#[derive(clap::Args)]
pub struct ConvertArgs {
    /// The source version: dstu2 or stu3.
    #[arg(long, value_parser = crate::parse_version)]
    pub from: Version,
    /// Files or folders (searched for .json, .ndjson and their .gz forms).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// Where to write (default: standard output).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Write one Bundle instead of NDJSON.
    #[arg(long)]
    pub bundle: bool,
}

fn documents(path: &std::path::Path) -> Result<Vec<Value>, String> {
    let text = crate::import::read_text(path)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
    if name.trim_end_matches(".gz").ends_with(".ndjson") {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| serde_json::from_str(l).map_err(|e| format!("line {}: {e}", n + 1)))
            .collect()
    } else {
        Ok(vec![serde_json::from_str(&text).map_err(|e| format!("invalid JSON: {e}"))?])
    }
}

pub fn run(args: ConvertArgs) -> Result<(), RunError> {
    let files = crate::import::collect_files(&args.paths);
    if files.is_empty() {
        return Err(RunError::Import("no .json, .ndjson, .json.gz or .ndjson.gz files found".into()));
    }
    let mut report = Report::default();
    let mut failed = Vec::new();
    let mut lines: Vec<String> = Vec::new();
    let mut entries: Vec<Value> = Vec::new();
    for file in &files {
        let docs = match documents(file) {
            Ok(d) => d,
            Err(e) => {
                failed.push(json!({"file": file.display().to_string(), "error": e}));
                continue;
            }
        };
        for doc in docs {
            let converted = match convert(args.from, doc, &mut report) {
                Ok(c) => c,
                Err(e) => {
                    failed.push(json!({"file": file.display().to_string(), "error": e.to_string()}));
                    continue;
                }
            };
            if args.bundle {
                if converted.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                    entries.extend(converted.get("entry").and_then(Value::as_array).cloned().unwrap_or_default());
                } else {
                    entries.push(json!({"resource": converted}));
                }
                continue;
            }
            let resources = if converted.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                crate::import::resources_of_bundle(converted)
            } else {
                let mut converted = converted;
                if converted.get("id").is_none() {
                    // An id from the content, so that converting again gives the same one.
                    let id =
                        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_URL, converted.to_string().as_bytes()).to_string();
                    converted["id"] = Value::String(id);
                }
                crate::import::resources_of(converted)
            };
            match resources {
                Ok(rs) => lines.extend(rs.iter().map(Value::to_string)),
                Err(e) => failed.push(json!({"file": file.display().to_string(), "error": e})),
            }
        }
    }
    let output = if args.bundle {
        let count = entries.len();
        lines.clear();
        let bundle = json!({"resourceType": "Bundle", "type": "collection", "entry": entries});
        (bundle.to_string(), count)
    } else {
        let count = lines.len();
        let mut text = lines.join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        (text, count)
    };
    match &args.out {
        Some(path) => std::fs::write(path, output.0.as_bytes())
            .map_err(|e| RunError::Config(format!("cannot write {}: {e}", path.display())))?,
        None => std::io::stdout().write_all(output.0.as_bytes()).map_err(RunError::Serve)?,
    }
    let summary = json!({"from": args.from.name(), "files": files.len(), "written": output.1, "report": report, "failed": failed});
    eprintln!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
    if failed.is_empty() {
        Ok(())
    } else {
        Err(RunError::Import(format!("{} files or documents could not be converted", failed.len())))
    }
}
