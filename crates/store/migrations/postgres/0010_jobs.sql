-- Durable asynchronous work (today: Bulk Data $export). A job is claimed under a lease (the
-- single writer on SQLite, FOR UPDATE SKIP LOCKED on PostgreSQL) that its worker renews after
-- every piece of work; a process that dies lets its lease run out and any process resumes the
-- job from its last checkpoint (`checkpoint`, written with the work it records). A job
-- belongs to the grant of the token that started it and to that token's client: revoking the
-- grant cancels the job in the same transaction (see auth::grants::revoke_tree).
CREATE TABLE jobs (
    job_id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,                  -- bulk-export
    status TEXT NOT NULL,                -- queued | running | completed | failed | cancelled
    client_id TEXT NOT NULL,
    grant_id TEXT,
    spec TEXT NOT NULL,                  -- JSON: what to do, as accepted
    checkpoint TEXT,                     -- JSON: how far it got
    result TEXT,                         -- JSON: the finished job's answer (the manifest)
    progress TEXT,                       -- a line for people (X-Progress)
    error TEXT,                          -- why it failed (for the status answer)
    created_ms BIGINT NOT NULL,
    updated_ms BIGINT NOT NULL,
    finished_ms BIGINT,
    expires_ms BIGINT,                  -- its output is removed after this
    last_poll_ms BIGINT,                -- polling faster than the configured interval gets 429
    lease_owner TEXT,
    lease_until BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX jobs_claim ON jobs (kind, status, created_ms);
CREATE INDEX jobs_grant ON jobs (grant_id);
CREATE INDEX jobs_expiry ON jobs (expires_ms);

-- Export reads each type in rkey order, a page at a time.
CREATE INDEX resources_type_rkey ON resources (rtype, rkey);
