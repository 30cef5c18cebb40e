//! Data behind enforcement that is not a FHIR resource: which patients a practitioner may see
//! (care teams, general practitioner, administrator assignments to them or their organization).

use ::auth::{PatientId, UserId};
use serde::{Deserialize, Serialize};

use crate::auth::AuthStoreError;
use crate::db::{Col, RowExt, Sql};
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
}
