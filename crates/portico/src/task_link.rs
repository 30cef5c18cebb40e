//! `portico task-link create`: mint a single-task action link from the command line (the same
//! as `POST Task/{id}/$action-link` by an administrator), print its URL and, for the `pin`
//! policy, the PIN to give the person out of band.

use clap::{Args, Subcommand};
use oauth::AuthConfig;
use tasks::{MintRequest, Minter, Policy, TaskError};

use crate::admin::AdminDb;
use crate::run::{open_store, RunError};

#[derive(Subcommand)]
pub enum TaskLinkCommand {
    /// Mint a link for one Task and print it as JSON (with the PIN, shown only now).
    Create(TaskLinkCreate),
}

#[derive(Args)]
pub struct TaskLinkCreate {
    #[command(flatten)]
    pub admin: AdminDb,
    /// The Task's id (its focus: a Claim with use = preauthorization, or a Consent).
    #[arg(long)]
    pub task: String,
    /// click-through, pin or sign-in.
    #[arg(long, value_parser = parse_policy)]
    pub policy: Policy,
    /// When the link stops working: a duration from now (`30m`, `48h`, `7d`) or an RFC 3339
    /// date and time. Default 72 hours; at most 30 days.
    #[arg(long)]
    pub expires: Option<String>,
}

fn parse_policy(text: &str) -> Result<Policy, String> {
    Policy::parse(text).ok_or_else(|| "the policy is click-through, pin or sign-in".to_owned())
}

/// `30m`, `48h`, `7d`, `90s` from `now`, or an RFC 3339 instant.
pub fn parse_expiry(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(at) = tasks::parse_instant(text) {
        return Ok(at);
    }
    let (digits, unit) = text.split_at(text.len().saturating_sub(1));
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => 0,
    };
    match digits.parse::<i64>() {
        Ok(n) if seconds > 0 && n > 0 => Ok(now.saturating_add(n.saturating_mul(seconds))),
        _ => Err(format!("--expires '{text}' is neither a duration (30m, 48h, 7d) nor an RFC 3339 date and time")),
    }
}

pub async fn run(command: TaskLinkCommand) -> Result<(), RunError> {
    let TaskLinkCommand::Create(args) = command;
    let store = open_store(&args.admin.db, &args.admin.base_url, 0).await?;
    let now = store.clock().now().unix_timestamp();
    let expires_at = args.expires.as_deref().map(|e| parse_expiry(e, now)).transpose().map_err(RunError::Config)?;
    let config =
        AuthConfig { fhir_base_url: args.admin.base_url.trim_end_matches('/').to_owned(), ..AuthConfig::default() };
    let request = MintRequest { policy: args.policy, expires_at };
    let minted =
        tasks::mint(&store, &args.task, &request, &Minter::default(), config.origin()).await.map_err(|e| match e {
            TaskError::Store(e) => RunError::from(e),
            other => RunError::Config(other.to_string()),
        })?;
    let mut record = [store::AuditRecord {
        recorded_ms: store::clock::epoch_ms(store.clock().now()),
        interaction: "operation".into(),
        action: "E".into(),
        outcome: 0,
        status: 200,
        patient_id: Some(minted.patient_id.clone()),
        resource_type: Some("Task".into()),
        resource_id: Some(args.task.clone()),
        detail: Some(format!("$action-link ({}) by the command line", minted.policy.as_str())),
        ..Default::default()
    }];
    store.record_audit(&mut record).await?;
    let mut out = serde_json::json!({
        "url": minted.url,
        "policy": minted.policy.as_str(),
        "expires": tasks::fhir_instant(minted.expires_at),
        "task": format!("Task/{}/_history/{}", args.task, minted.task.version),
    });
    if let Some(pin) = &minted.pin {
        out["pin"] = serde_json::Value::String(pin.clone());
    }
    println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    store.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiries_are_durations_or_instants() {
        assert_eq!(parse_expiry("30m", 1000), Ok(1000 + 1800));
        assert_eq!(parse_expiry("48h", 0), Ok(48 * 3600));
        assert_eq!(parse_expiry("7d", 0), Ok(7 * 86_400));
        assert_eq!(parse_expiry("2030-01-01T00:00:00Z", 0), Ok(1_893_456_000));
        for bad in ["", "7", "d", "-3h", "tomorrow", "2030-01-01"] {
            assert!(parse_expiry(bad, 0).is_err(), "{bad}");
        }
    }
}
