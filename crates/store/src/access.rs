//! Data behind enforcement that is not a FHIR resource: which patients a practitioner may see
//! (care teams, general practitioner, administrator assignments to them or their organization)
//! and the audit trail.

use ::auth::{PatientId, UserId};
use serde::{Deserialize, Serialize};

use crate::auth::AuthStoreError;
use crate::db::{Col, Dialect, RowExt, Sql, SqlValue};
use crate::{param_key, Store, StoreError};

/// The ways a practitioner comes to see a patient. Which apply is configurable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PractitionerLink {
    /// A participant of one of the patient's CareTeams.
    CareTeam,
    /// The patient's `generalPractitioner`.
    GeneralPractitioner,
    /// Assigned to the practitioner's account by an administrator (`portico assign`).
    Assigned,
    /// Assigned by an administrator to an Organization where the practitioner holds a
    /// PractitionerRole.
    Organization,
}

impl PractitionerLink {
    pub const ALL: [PractitionerLink; 4] = [
        PractitionerLink::CareTeam,
        PractitionerLink::GeneralPractitioner,
        PractitionerLink::Assigned,
        PractitionerLink::Organization,
    ];
}

/// One audited FHIR interaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditRecord {
    /// Assigned when stored (0 before).
    pub id: i64,
    pub recorded_ms: i64,
    /// read, vread, search-type, search-system, history-instance, history-type, history-system,
    /// create, update, delete, operation, transaction, batch.
    pub interaction: String,
    /// C R U D E.
    pub action: String,
    /// 0 success, 4 refused or not found, 8 server failure.
    pub outcome: i64,
    pub status: i64,
    pub user_id: Option<String>,
    pub fhir_user: Option<String>,
    pub client_id: Option<String>,
    pub grant_id: Option<String>,
    pub patient_id: Option<String>,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub detail: Option<String>,
}

/// Which audit records to list, newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    /// Only these patients' records (`None`: all).
    pub patients: Option<Vec<String>>,
    pub user_id: Option<String>,
    pub since_ms: Option<i64>,
    /// Only records older than this id (paging).
    pub before_id: Option<i64>,
    pub limit: i64,
}

const AUDIT_COLS: &str =
    "id, recorded_ms, interaction, action, outcome, status, user_id, fhir_user, client_id, grant_id, \
     patient_id, resource_type, resource_id, detail";
const AUDIT_KINDS: [Col; 14] = [
    Col::Int,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Int,
    Col::Int,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
    Col::Text,
];

impl Store {
    /// The patients practitioner `practitioner_id` (signed in as `user_id`) may see, by the
    /// `links` that apply; sorted and deduplicated.
    pub async fn practitioner_patients(
        &self,
        practitioner_id: &str,
        user_id: &UserId,
        links: &[PractitionerLink],
    ) -> Result<Vec<String>, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let mut conn = lease.conn();
        let mut out: Vec<String> = Vec::new();
        for link in links {
            let mut sql = Sql::new(conn.dialect());
            match link {
                PractitionerLink::CareTeam => {
                    sql.push("SELECT DISTINCT s.tid FROM idx_reference m JOIN resources r ON r.rkey = m.rkey AND r.deleted = 0 \
                              JOIN idx_reference s ON s.rkey = m.rkey AND s.p IN ")
                        .bind_list([param_key("CareTeam", "subject"), param_key("CareTeam", "patient")])
                        .push(" AND s.ttype = 'Patient' WHERE m.p = ")
                        .bind(param_key("CareTeam", "participant"))
                        .push(" AND m.tid = ")
                        .bind(practitioner_id)
                        .push(" AND m.ttype = 'Practitioner'");
                }
                PractitionerLink::GeneralPractitioner => {
                    sql.push(
                        "SELECT r.id FROM idx_reference g JOIN resources r ON r.rkey = g.rkey AND r.deleted = 0 \
                              AND r.rtype = 'Patient' WHERE g.p = ",
                    )
                    .bind(param_key("Patient", "general-practitioner"))
                    .push(" AND g.tid = ")
                    .bind(practitioner_id)
                    .push(" AND g.ttype = 'Practitioner'");
                }
                PractitionerLink::Assigned => {
                    sql.push("SELECT patient_id FROM user_patients WHERE user_id = ").bind(user_id.as_str());
                }
                PractitionerLink::Organization => {
                    sql.push("SELECT DISTINCT op.patient_id FROM idx_reference pr JOIN resources r ON r.rkey = pr.rkey \
                              AND r.deleted = 0 JOIN idx_reference o ON o.rkey = pr.rkey AND o.p = ")
                        .bind(param_key("PractitionerRole", "organization"))
                        .push(" AND o.ttype = 'Organization' JOIN organization_patients op ON op.organization_id = o.tid WHERE pr.p = ")
                        .bind(param_key("PractitionerRole", "practitioner"))
                        .push(" AND pr.tid = ")
                        .bind(practitioner_id)
                        .push(" AND pr.ttype = 'Practitioner'");
                }
            }
            for mut row in conn.fetch(&sql, &[Col::Text]).await? {
                if let Some(id) = row.take_text(0) {
                    out.push(id);
                }
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Assign a patient to an organization (its practitioners may see them). False when it
    /// already was.
    pub async fn assign_to_organization(
        &self,
        organization_id: &str,
        patient: &PatientId,
    ) -> Result<bool, AuthStoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("INSERT INTO organization_patients (organization_id, patient_id) VALUES (")
            .bind(organization_id)
            .push(", ")
            .bind(patient.as_str())
            .push(") ON CONFLICT (organization_id, patient_id) DO NOTHING");
        let mut tx = self.pool.begin_write().await?;
        let n = tx.conn().execute(&sql).await?;
        tx.commit().await?;
        Ok(n > 0)
    }

    /// Append audit records in one transaction, as multi-row inserts of fixed sizes (100, 10
    /// and 1 rows) so each size is prepared once per connection and then only bound: auditing
    /// every request must not cost a statement parse (or a JSON parse per column) per row.
    pub async fn record_audit(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin_write().await?;
        let mut rest = records;
        for size in [100, 10, 1] {
            while rest.len() >= size {
                let (chunk, tail) = rest.split_at(size);
                tx.conn().execute_owned(self.audit_insert(chunk)).await?;
                rest = tail;
            }
        }
        tx.commit().await
    }

    fn audit_insert(&self, rows: &[AuditRecord]) -> Sql {
        let mut sql = Sql::new(self.dialect());
        // SQLite keeps a statement journal for a multi-row insert that may abort halfway (a NOT
        // NULL column), copying every page it touches; OR FAIL needs none, and a failure still
        // rolls the whole transaction back.
        sql.push(match self.dialect() {
            Dialect::Sqlite => "INSERT OR FAIL",
            Dialect::Postgres => "INSERT",
        });
        sql.push(
            " INTO audit_events (recorded_ms, interaction, action, outcome, status, user_id, fhir_user, \
             client_id, grant_id, patient_id, resource_type, resource_id, detail) VALUES ",
        );
        for (i, a) in rows.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind_list::<SqlValue>([
                a.recorded_ms.into(),
                a.interaction.as_str().into(),
                a.action.as_str().into(),
                a.outcome.into(),
                a.status.into(),
                a.user_id.clone().into(),
                a.fhir_user.clone().into(),
                a.client_id.clone().into(),
                a.grant_id.clone().into(),
                a.patient_id.clone().into(),
                a.resource_type.clone().into(),
                a.resource_id.clone().into(),
                a.detail.clone().into(),
            ]);
        }
        sql
    }

    /// Audit records, newest first.
    pub async fn audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(AUDIT_COLS).push(" FROM audit_events WHERE 1 = 1");
        if let Some(patients) = &query.patients {
            if patients.is_empty() {
                return Ok(Vec::new());
            }
            sql.push(" AND patient_id IN ").bind_list(patients.iter().map(String::as_str));
        }
        if let Some(user) = &query.user_id {
            sql.push(" AND user_id = ").bind(user.as_str());
        }
        if let Some(since) = query.since_ms {
            sql.push(" AND recorded_ms >= ").bind(since);
        }
        if let Some(before) = query.before_id {
            sql.push(" AND id < ").bind(before);
        }
        sql.push(" ORDER BY id DESC LIMIT ").bind(query.limit.clamp(1, 1000));
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &AUDIT_KINDS).await?;
        Ok(rows.into_iter().map(decode_audit).collect())
    }

    pub async fn audit_event(&self, id: i64) -> Result<Option<AuditRecord>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT ").push(AUDIT_COLS).push(" FROM audit_events WHERE id = ").bind(id);
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &AUDIT_KINDS).await?;
        Ok(rows.into_iter().next().map(decode_audit))
    }
}

fn decode_audit(mut row: Vec<crate::db::SqlValue>) -> AuditRecord {
    AuditRecord {
        id: row.int(0),
        recorded_ms: row.int(1),
        interaction: row.take_text(2).unwrap_or_default(),
        action: row.take_text(3).unwrap_or_default(),
        outcome: row.int(4),
        status: row.int(5),
        user_id: row.take_text(6),
        fhir_user: row.take_text(7),
        client_id: row.take_text(8),
        grant_id: row.take_text(9),
        patient_id: row.take_text(10),
        resource_type: row.take_text(11),
        resource_id: row.take_text(12),
        detail: row.take_text(13),
    }
}
