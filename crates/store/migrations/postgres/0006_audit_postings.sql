-- Finding a patient's (or a user's) audit records: one posting per patient and per user per
-- stored batch, listing the batch's record ids, instead of an index entry per record. Every FHIR
-- request writes a record, and an index keyed by patient took each one as a random insert.
CREATE TABLE audit_postings (
    kind TEXT NOT NULL,          -- patient | user
    subject_id TEXT NOT NULL,    -- the patient's or the user's id
    last_id BIGINT NOT NULL,     -- the largest id listed
    first_id BIGINT NOT NULL,    -- the smallest id listed
    last_ms BIGINT NOT NULL,     -- the latest recorded_ms of the records listed
    ids TEXT NOT NULL,           -- audit_events ids, decimal, comma-separated
    PRIMARY KEY (kind, subject_id, last_id)
);

-- Records stored before: one posting per patient (user) per 100,000 ids.
INSERT INTO audit_postings (kind, subject_id, last_id, first_id, last_ms, ids)
SELECT 'patient', patient_id, max(id), min(id), max(recorded_ms), string_agg(id::text, ',' ORDER BY id)
FROM audit_events WHERE patient_id IS NOT NULL GROUP BY patient_id, id / 100000;
INSERT INTO audit_postings (kind, subject_id, last_id, first_id, last_ms, ids)
SELECT 'user', user_id, max(id), min(id), max(recorded_ms), string_agg(id::text, ',' ORDER BY id)
FROM audit_events WHERE user_id IS NOT NULL GROUP BY user_id, id / 100000;

DROP INDEX audit_events_patient;
DROP INDEX audit_events_user;
