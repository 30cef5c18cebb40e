-- Current state of every resource: one row per (type, id). `rkey` is the surrogate key that
-- the index tables and history point at; it never changes, so keyset paging stays stable.
CREATE TABLE resources (
    rkey INTEGER PRIMARY KEY,
    rtype TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    lu_ms INTEGER NOT NULL,          -- meta.lastUpdated as epoch milliseconds
    seq INTEGER NOT NULL,            -- commit sequence of the current version
    deleted INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT,               -- hash of the resource without meta.versionId/lastUpdated
    UNIQUE (rtype, id)
);
CREATE INDEX resources_type_lu ON resources (rtype, lu_ms);

-- Every version, including the current one, as the exact JSON returned to clients.
CREATE TABLE resource_history (
    rkey INTEGER NOT NULL,
    version INTEGER NOT NULL,
    rtype TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lu_ms INTEGER NOT NULL,
    method TEXT NOT NULL,            -- POST, PUT or DELETE
    body TEXT,                       -- NULL for a deletion
    PRIMARY KEY (rkey, version)
);
CREATE INDEX history_seq ON resource_history (seq);
CREATE INDEX history_type_seq ON resource_history (rtype, seq);

-- Monotonic commit sequence: one value per committed write transaction.
CREATE TABLE commit_seq (one INTEGER PRIMARY KEY CHECK (one = 1), value INTEGER NOT NULL);
INSERT INTO commit_seq (one, value) VALUES (1, 0);

-- Typed search indexes. `p` is a stable 64-bit hash of "ResourceType.code" (see store::param_key).
CREATE TABLE idx_string (rkey INTEGER NOT NULL, p INTEGER NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL);
CREATE INDEX idx_string_search ON idx_string (p, norm);
CREATE INDEX idx_string_rkey ON idx_string (rkey, p);

CREATE TABLE idx_token (rkey INTEGER NOT NULL, p INTEGER NOT NULL, system TEXT, code TEXT, text TEXT);
CREATE INDEX idx_token_search ON idx_token (p, code, system);
CREATE INDEX idx_token_rkey ON idx_token (rkey, p);

CREATE TABLE idx_reference (rkey INTEGER NOT NULL, p INTEGER NOT NULL, ttype TEXT, tid TEXT, url TEXT);
CREATE INDEX idx_reference_search ON idx_reference (p, tid, ttype);
CREATE INDEX idx_reference_url ON idx_reference (p, url) WHERE url IS NOT NULL;
CREATE INDEX idx_reference_rkey ON idx_reference (rkey, p);

CREATE TABLE idx_date (rkey INTEGER NOT NULL, p INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL);
CREATE INDEX idx_date_search ON idx_date (p, lo);
CREATE INDEX idx_date_rkey ON idx_date (rkey, p);

CREATE TABLE idx_number (rkey INTEGER NOT NULL, p INTEGER NOT NULL, val REAL NOT NULL);
CREATE INDEX idx_number_search ON idx_number (p, val);
CREATE INDEX idx_number_rkey ON idx_number (rkey, p);

CREATE TABLE idx_quantity (rkey INTEGER NOT NULL, p INTEGER NOT NULL, val REAL NOT NULL, system TEXT, code TEXT, unit TEXT);
CREATE INDEX idx_quantity_search ON idx_quantity (p, val);
CREATE INDEX idx_quantity_rkey ON idx_quantity (rkey, p);

CREATE TABLE idx_uri (rkey INTEGER NOT NULL, p INTEGER NOT NULL, uri TEXT NOT NULL);
CREATE INDEX idx_uri_search ON idx_uri (p, uri);
CREATE INDEX idx_uri_rkey ON idx_uri (rkey, p);

-- Patient compartment membership (R4 CompartmentDefinition `patient`).
CREATE TABLE compartment (rkey INTEGER NOT NULL, patient_id TEXT NOT NULL, PRIMARY KEY (patient_id, rkey)) WITHOUT ROWID;
CREATE INDEX compartment_rkey ON compartment (rkey);
