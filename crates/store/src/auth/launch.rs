//! EHR launch contexts: the EHR stores the context, hands the app an opaque `launch` value, and
//! the authorization request takes the context back exactly once.

use ::auth::PatientId;
use serde_json::Value;

use super::{parse_json, parse_opt, required_text, take_text, to_json, AuthStoreError, Result};
use crate::db::{Col, RowExt, Sql};
use crate::Store;

#[derive(Debug, Clone, PartialEq)]
pub struct NewLaunch {
    pub patient_id: Option<PatientId>,
    pub encounter_id: Option<String>,
    /// SMART `fhirContext` (JSON array).
    pub fhir_context: Option<Value>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
    pub ttl_seconds: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LaunchContext {
    pub launch_id: String,
    pub patient_id: Option<PatientId>,
    pub encounter_id: Option<String>,
    pub fhir_context: Option<Value>,
    pub need_patient_banner: bool,
    pub smart_style_url: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

impl Store {
    /// Store a launch context; returns its random, unguessable `launch` value.
    pub async fn create_launch(&self, launch: NewLaunch) -> Result<String> {
        if launch.ttl_seconds <= 0 {
            return Err(AuthStoreError::Invalid("launch lifetime must be positive".into()));
        }
        let now = self.now_secs();
        let launch_id = uuid::Uuid::new_v4().simple().to_string();
        let fhir_context = launch.fhir_context.as_ref().map(to_json).transpose()?;
        let mut sql = Sql::new(self.dialect());
        sql.push(
            "INSERT INTO launch_contexts (launch_id, patient_id, encounter_id, fhir_context, need_patient_banner, \
             smart_style_url, created_at, expires_at, used_at) VALUES (",
        )
        .bind(launch_id.as_str())
        .push(", ")
        .bind(launch.patient_id.as_ref().map(PatientId::as_str))
        .push(", ")
        .bind(launch.encounter_id)
        .push(", ")
        .bind(fhir_context)
        .push(", ")
        .bind(i64::from(launch.need_patient_banner))
        .push(", ")
        .bind(launch.smart_style_url)
        .push(", ")
        .bind(now)
        .push(", ")
        .bind(now.saturating_add(launch.ttl_seconds))
        .push(", NULL)");
        let mut tx = self.pool.begin_write().await?;
        tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(launch_id)
    }

    /// Take a launch context: `None` when unknown, already taken or expired. Single use: the
    /// context is marked used in the same statement that reads it.
    pub async fn take_launch(&self, launch_id: &str) -> Result<Option<LaunchContext>> {
        let now = self.now_secs();
        let mut sql = Sql::new(self.dialect());
        sql.push("UPDATE launch_contexts SET used_at = ")
            .bind(now)
            .push(" WHERE launch_id = ")
            .bind(launch_id)
            .push(" AND used_at IS NULL AND expires_at > ")
            .bind(now)
            .push(
                " RETURNING launch_id, patient_id, encounter_id, fhir_context, need_patient_banner, smart_style_url, \
                 created_at, expires_at",
            );
        let mut tx = self.pool.begin_write().await?;
        let rows = tx
            .conn()
            .fetch(&sql, &[Col::Text, Col::Text, Col::Text, Col::Text, Col::Int, Col::Text, Col::Int, Col::Int])
            .await?;
        tx.commit().await?;
        let Some(mut row) = rows.into_iter().next() else { return Ok(None) };
        Ok(Some(LaunchContext {
            launch_id: required_text(&mut row, 0, "launch_id")?,
            patient_id: parse_opt(take_text(&mut row, 1), "launch patient_id")?,
            encounter_id: take_text(&mut row, 2),
            fhir_context: take_text(&mut row, 3).map(|t| parse_json(&t, "launch fhir_context")).transpose()?,
            need_patient_banner: row.int(4) != 0,
            smart_style_url: take_text(&mut row, 5),
            created_at: row.int(6),
            expires_at: row.int(7),
        }))
    }
}
