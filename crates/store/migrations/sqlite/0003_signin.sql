-- Sign-in sessions and authorization requests in progress (the pages between /authorize and the
-- redirect back to the app), plus the EHR-side permission to create launch contexts.

-- A browser's sign-in. The cookie carries a random value; the table keeps its SHA-256 hex.
CREATE TABLE web_sessions (
    session_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    ended_at INTEGER                     -- signed out (online_access grants end with it)
);
CREATE INDEX web_sessions_user ON web_sessions (user_id);

-- One /authorize request on its way through sign-in, patient picker and consent. It is bound to the
-- browser that started it (a cookie whose SHA-256 hex is browser_hash) and every form carries
-- its csrf value.
CREATE TABLE authorize_requests (
    request_id TEXT PRIMARY KEY,
    browser_hash TEXT NOT NULL,
    csrf TEXT NOT NULL,
    client_id TEXT NOT NULL,
    params TEXT NOT NULL,                -- JSON: the validated request
    user_id TEXT,                        -- set at sign-in
    session_hash TEXT,
    patient_id TEXT,                     -- chosen or from the launch context
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    completed_at INTEGER                 -- approved or denied: the request cannot be used again
);
CREATE INDEX authorize_requests_expiry ON authorize_requests (expires_at);

-- Clients that may create EHR launch contexts through the API (the EHR side of an EHR launch).
ALTER TABLE oauth_clients ADD COLUMN ehr_launcher INTEGER NOT NULL DEFAULT 0;

-- EHR launch details returned with the token (SMART launch context).
ALTER TABLE grants ADD COLUMN need_patient_banner INTEGER;
ALTER TABLE grants ADD COLUMN smart_style_url TEXT;
