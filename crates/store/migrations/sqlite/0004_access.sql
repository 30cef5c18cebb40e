-- Patients an administrator assigned to an Organization: practitioners who hold a PractitionerRole
-- at that organization may see them (one of the configurable practitioner access rules).
CREATE TABLE organization_patients (
    organization_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (organization_id, patient_id)
) WITHOUT ROWID;

-- The audit trail: one row per FHIR interaction (reads, searches, writes, denials), written in
-- batches and served to administrators as R4 AuditEvent resources.
CREATE TABLE audit_events (
    id INTEGER PRIMARY KEY,
    recorded_ms INTEGER NOT NULL,
    interaction TEXT NOT NULL,           -- read, vread, search-type, create, update, delete, history-*, operation, transaction, batch
    action TEXT NOT NULL,                -- C R U D E
    outcome INTEGER NOT NULL,            -- 0 success, 4 minor failure (refused, not found), 8 serious failure
    status INTEGER NOT NULL,             -- HTTP status answered
    user_id TEXT,
    fhir_user TEXT,                      -- e.g. Patient/1, Practitioner/9
    client_id TEXT,
    grant_id TEXT,
    patient_id TEXT,                     -- the patient whose data it was, when known
    resource_type TEXT,
    resource_id TEXT,
    detail TEXT                          -- query or operation, without tokens
);
CREATE INDEX audit_events_patient ON audit_events (patient_id, recorded_ms);
CREATE INDEX audit_events_user ON audit_events (user_id, recorded_ms);
CREATE INDEX audit_events_recorded ON audit_events (recorded_ms);
