-- Single-task action links: a URL that lets one person take one decision on one Task (approve
-- or decline a prior authorization, sign a Consent) without a portal session. Only the SHA-256
-- of the link's secret is kept; the PIN (policy 'pin') is kept as an Argon2 hash. A link is
-- usable while used_at, revoked_at and locked_at are NULL and expires_at is in the future; it
-- belongs to the grant of the token that minted it (revoking the grant revokes the link, in
-- the same transaction: see auth::grants::revoke_tree).
CREATE TABLE action_links (
    link_id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL UNIQUE,
    task_id TEXT NOT NULL,
    patient_id TEXT NOT NULL,
    action TEXT NOT NULL,                -- prior-authorization | consent
    policy TEXT NOT NULL,                -- click-through | pin | sign-in
    pin_hash TEXT,
    pin_failures INTEGER NOT NULL DEFAULT 0,
    grant_id TEXT,                       -- NULL when minted on the command line
    client_id TEXT,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,              -- epoch seconds
    used_at INTEGER,
    outcome TEXT,                        -- approved | declined
    used_by TEXT,                        -- who decided (a FHIR reference or a description)
    revoked_at INTEGER,
    locked_at INTEGER                         -- too many wrong PINs
);
CREATE INDEX action_links_task ON action_links (task_id);
CREATE INDEX action_links_grant ON action_links (grant_id);
