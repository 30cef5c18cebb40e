-- Audit records stored in blocks: one row holds up to 128 consecutive records as a JSON array,
-- instead of a row of fourteen columns per record (binding and inserting a row per record was
-- most of what an audited read cost). Postings (0006) find a patient's or a user's record ids;
-- the block holding an id is the one with the largest first_id not above it.
CREATE TABLE audit_blocks (
    first_id BIGINT PRIMARY KEY,    -- the smallest record id in the block
    last_id BIGINT NOT NULL,        -- the largest
    last_ms BIGINT NOT NULL,        -- the latest recorded_ms in the block
    records TEXT NOT NULL           -- JSON array of records (objects named as store::AuditRecord)
);

-- New records are numbered after the last block's last id (under a lock shared by all servers),
-- so each block's ids are contiguous.
INSERT INTO audit_blocks (first_id, last_id, last_ms, records)
SELECT min(id), max(id), max(recorded_ms), json_agg(json_build_object(
        'id', id, 'recorded_ms', recorded_ms, 'interaction', interaction, 'action', action,
        'outcome', outcome, 'status', status, 'user_id', user_id, 'fhir_user', fhir_user,
        'client_id', client_id, 'grant_id', grant_id, 'patient_id', patient_id,
        'resource_type', resource_type, 'resource_id', resource_id, 'detail', detail) ORDER BY id)::text
FROM audit_events
GROUP BY id / 128;

DROP TABLE audit_events;
