-- Audit rows are written for every FHIR interaction, so each index costs on every request.
-- Readers look rows up by patient or by user, newest first (ORDER BY id), and rows without a
-- patient or user (system tokens, open mode) need no entry at all.
DROP INDEX audit_events_patient;
DROP INDEX audit_events_user;
CREATE INDEX audit_events_patient ON audit_events (patient_id, id) WHERE patient_id IS NOT NULL;
CREATE INDEX audit_events_user ON audit_events (user_id, id) WHERE user_id IS NOT NULL;
