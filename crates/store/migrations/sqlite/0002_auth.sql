-- Authorization server state (SMART App Launch 2.x). Every token hangs off a grant: revoking the
-- grant revokes codes, refresh tokens, child grants and (through the liveness check, a primary-key
-- lookup on `grants`) the access tokens that carry its id. Times are epoch seconds. Secrets are
-- never stored in clear: client secrets and passwords as argon2id PHC strings, codes and refresh
-- tokens as the SHA-256 hex of the token. JSON values are stored as text.

CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    owner_type TEXT NOT NULL,            -- health-plan | independent-developer | covered-entity
    client_type TEXT NOT NULL,           -- public | confidential-symmetric | confidential-asymmetric
    secret_hash TEXT,                    -- argon2id PHC string, only for confidential-symmetric
    jwks TEXT,                           -- JWK Set (JSON)
    jwks_uri TEXT,
    redirect_uris TEXT NOT NULL,         -- JSON array of strings
    allowed_scopes TEXT NOT NULL,
    logo_uri TEXT,
    policy_uri TEXT,
    tos_uri TEXT,
    created_at INTEGER NOT NULL,
    registration_source TEXT NOT NULL    -- cli | dynamic
);

CREATE TABLE users (
    user_id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,         -- argon2id PHC string
    role TEXT NOT NULL,                  -- patient | practitioner | admin
    fhir_user TEXT,                      -- e.g. Patient/123, Practitioner/9; NULL for admin
    created_at INTEGER NOT NULL,
    failed_logins INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER
);
-- Usernames are unique regardless of (ASCII) case, so "Alice" cannot impersonate "alice".
CREATE UNIQUE INDEX users_username_lower ON users (lower(username));

-- The patients a user may act for: themselves and, for a proxy or parent, others.
CREATE TABLE user_patients (
    user_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    PRIMARY KEY (user_id, patient_id)
) WITHOUT ROWID;

CREATE TABLE grants (
    grant_id TEXT PRIMARY KEY,
    user_id TEXT,                        -- NULL for backend services
    client_id TEXT NOT NULL,
    scopes TEXT NOT NULL,                -- granted scopes, canonical text
    patient_id TEXT,
    encounter_id TEXT,
    fhir_context TEXT,                   -- JSON array, SMART fhirContext
    withheld TEXT NOT NULL,              -- JSON array of sensitive categories
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    revoked_at INTEGER,
    revoked_by TEXT,
    parent_grant_id TEXT,
    last_used_at INTEGER,
    session_id TEXT                      -- online_access: the sign-in session it lives with
);
CREATE INDEX grants_user ON grants (user_id, created_at);
CREATE INDEX grants_parent ON grants (parent_grant_id);
CREATE INDEX grants_session ON grants (session_id);

CREATE TABLE auth_codes (
    code_hash TEXT PRIMARY KEY,          -- SHA-256 hex of the code
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    code_challenge TEXT NOT NULL,        -- PKCE S256 challenge
    expires_at INTEGER NOT NULL,
    used_at INTEGER,
    nonce TEXT
);
CREATE INDEX auth_codes_grant ON auth_codes (grant_id);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,         -- SHA-256 hex of the token
    grant_id TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER,                     -- rotation: a used token is dead, presenting it again revokes the grant
    replaced_by TEXT
);
CREATE INDEX refresh_tokens_grant ON refresh_tokens (grant_id);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL,                   -- RS256 | ES256
    private_pem TEXT NOT NULL,
    public_jwk TEXT NOT NULL,            -- JSON
    created_at INTEGER NOT NULL,
    retired_at INTEGER,
    publish_until INTEGER,               -- a retired key stays in the JWKS until its tokens expired
    active INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX signing_keys_alg ON signing_keys (alg, active, created_at);

CREATE TABLE launch_contexts (
    launch_id TEXT PRIMARY KEY,
    patient_id TEXT,
    encounter_id TEXT,
    fhir_context TEXT,                   -- JSON
    need_patient_banner INTEGER NOT NULL DEFAULT 1,
    smart_style_url TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at INTEGER
);

-- Replay protection for private_key_jwt client assertions.
CREATE TABLE client_assertion_jtis (
    client_id TEXT NOT NULL,
    jti TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) WITHOUT ROWID;
CREATE INDEX client_assertion_jtis_expiry ON client_assertion_jtis (expires_at);
