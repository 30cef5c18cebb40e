-- Link's own database: apps, the directory and its health, login flows, connections (tokens as
-- vault ciphertext only), one-time codes, fetch jobs and their parts, and the webhook outbox.
-- Times are epoch milliseconds.

CREATE TABLE link_apps (
    app_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL UNIQUE,
    webhook_url TEXT,
    webhook_secret TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE link_app_client_urls (
    app_id TEXT NOT NULL,
    url TEXT NOT NULL,
    PRIMARY KEY (app_id, url)
);

CREATE TABLE link_endpoints (
    endpoint_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    organization TEXT,
    street TEXT,
    city TEXT,
    state TEXT,
    zip TEXT,
    latitude DOUBLE PRECISION,
    longitude DOUBLE PRECISION,
    vendor TEXT,
    category TEXT NOT NULL,
    fhir_base TEXT NOT NULL UNIQUE,
    fhir_version TEXT,
    status TEXT NOT NULL,
    client_id TEXT,
    client_secret TEXT,
    private_key TEXT,
    scopes TEXT,
    discovery TEXT,
    discovered_at BIGINT,
    discovery_error TEXT,
    brand TEXT,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX link_endpoints_category ON link_endpoints (category, name);

CREATE TABLE link_endpoint_events (
    endpoint_id TEXT NOT NULL,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    ok BIGINT NOT NULL,
    millis BIGINT,
    detail TEXT
);
CREATE INDEX link_endpoint_events_by_endpoint ON link_endpoint_events (endpoint_id, at);

CREATE TABLE link_flows (
    state_hash TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    client_url TEXT NOT NULL,
    app_state TEXT NOT NULL,
    person TEXT,
    verifier TEXT NOT NULL,
    nonce TEXT,
    scope TEXT NOT NULL,
    browser_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE link_connections (
    connection_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    endpoint_id TEXT NOT NULL,
    person TEXT,
    patient_id TEXT,
    fhir_user TEXT,
    scope TEXT NOT NULL,
    status TEXT NOT NULL,
    status_detail TEXT,
    tokens TEXT,
    access_expires_at BIGINT,
    access_issued_at BIGINT,
    refreshable BIGINT NOT NULL,
    token_generation BIGINT NOT NULL DEFAULT 0,
    refresh_lease_owner TEXT,
    refresh_lease_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_fetch_at BIGINT
);
CREATE INDEX link_connections_by_person ON link_connections (app_id, person);

CREATE TABLE link_codes (
    code_hash TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT
);

CREATE TABLE link_jobs (
    job_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    request_key TEXT NOT NULL,
    request TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    lease_owner TEXT,
    lease_until BIGINT,
    attempts BIGINT NOT NULL DEFAULT 0,
    result_expires_at BIGINT,
    expired BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX link_jobs_due ON link_jobs (status, lease_until);
-- One running copy of a request per app: a second identical request finds the first.
CREATE UNIQUE INDEX link_jobs_running_key ON link_jobs (app_id, request_key) WHERE status IN ('queued', 'running');

CREATE TABLE link_job_parts (
    job_id TEXT NOT NULL,
    connection_id TEXT NOT NULL,
    part TEXT NOT NULL,
    status TEXT NOT NULL,
    resources BIGINT NOT NULL DEFAULT 0,
    -- Sealed: the entries as NDJSON ({"fullUrl", "resource"} per line), and beside them their
    -- fullUrls and the Practitioner/Organization/Location/Medication references they make.
    body TEXT,
    meta TEXT,
    error TEXT,
    finished_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, connection_id, part)
);

CREATE TABLE link_outbox (
    event_id TEXT PRIMARY KEY,
    app_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    lease_owner TEXT,
    lease_until BIGINT,
    delivered_at BIGINT,
    failed_at BIGINT,
    last_error TEXT
);
CREATE INDEX link_outbox_due ON link_outbox (delivered_at, failed_at, next_attempt_at);
