-- See the SQLite migration for the meaning of each table.
CREATE TABLE organization_patients (
    organization_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (organization_id, patient_id)
);

CREATE TABLE audit_events (
    id BIGSERIAL PRIMARY KEY,
    recorded_ms BIGINT NOT NULL,
    interaction TEXT NOT NULL,
    action TEXT NOT NULL,
    outcome BIGINT NOT NULL,
    status BIGINT NOT NULL,
    user_id TEXT,
    fhir_user TEXT,
    client_id TEXT,
    grant_id TEXT,
    patient_id TEXT,
    resource_type TEXT,
    resource_id TEXT,
    detail TEXT
);
CREATE INDEX audit_events_patient ON audit_events (patient_id, recorded_ms);
CREATE INDEX audit_events_user ON audit_events (user_id, recorded_ms);
CREATE INDEX audit_events_recorded ON audit_events (recorded_ms);
