-- Current state of every resource: one row per (type, id). `rkey` is the surrogate key that
-- the index tables and history point at; it never changes, so keyset paging stays stable.
-- `hid` is the history row of the current version, so a read is two primary-key lookups.
CREATE TABLE resources (
    rkey INTEGER PRIMARY KEY,
    rtype TEXT NOT NULL,
    id TEXT NOT NULL,
    version INTEGER NOT NULL,
    lu_ms INTEGER NOT NULL,          -- meta.lastUpdated as epoch milliseconds
    seq INTEGER NOT NULL,            -- commit sequence of the current version
    deleted INTEGER NOT NULL DEFAULT 0,
    content_hash TEXT,               -- hash of the resource without meta.versionId/lastUpdated
    hid INTEGER NOT NULL DEFAULT 0,
    UNIQUE (rtype, id)
);
CREATE INDEX resources_type_lu ON resources (rtype, lu_ms);

-- Every version, including the current one, as the exact JSON returned to clients.
CREATE TABLE resource_history (
    hid INTEGER PRIMARY KEY,
    rkey INTEGER NOT NULL,
    version INTEGER NOT NULL,
    rtype TEXT NOT NULL,
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lu_ms INTEGER NOT NULL,
    method TEXT NOT NULL,            -- POST, PUT or DELETE
    body TEXT,                       -- NULL for a deletion
    UNIQUE (rkey, version)
);
CREATE INDEX history_seq ON resource_history (seq);
CREATE INDEX history_type_seq ON resource_history (rtype, seq);

-- Monotonic commit sequence: one value per committed write transaction.
CREATE TABLE commit_seq (one INTEGER PRIMARY KEY CHECK (one = 1), value INTEGER NOT NULL);
INSERT INTO commit_seq (one, value) VALUES (1, 0);

-- Typed search indexes (their secondary `_search` indexes are created by the store at start,
-- see store::indexes, so a bulk load into an empty database can build them after loading).
-- Typed search indexes. `p` is a stable 64-bit hash of "ResourceType.code" (see store::param_key).
-- Clustered by resource (rkey first) so "does this resource match" checks and deletes on update
-- are one range scan; the `_search` index serves the term that drives a search and covers rkey.
-- Absent text values are '' (primary-key columns cannot be NULL).
CREATE TABLE idx_string (rkey INTEGER NOT NULL, p INTEGER NOT NULL, norm TEXT NOT NULL, exact TEXT NOT NULL,
    PRIMARY KEY (rkey, p, norm, exact)) WITHOUT ROWID;

CREATE TABLE idx_token (rkey INTEGER NOT NULL, p INTEGER NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, text TEXT NOT NULL,
    PRIMARY KEY (rkey, p, code, system, text)) WITHOUT ROWID;

CREATE TABLE idx_reference (rkey INTEGER NOT NULL, p INTEGER NOT NULL, tid TEXT NOT NULL, ttype TEXT NOT NULL, url TEXT NOT NULL,
    PRIMARY KEY (rkey, p, tid, ttype, url)) WITHOUT ROWID;

CREATE TABLE idx_date (rkey INTEGER NOT NULL, p INTEGER NOT NULL, lo INTEGER NOT NULL, hi INTEGER NOT NULL,
    PRIMARY KEY (rkey, p, lo, hi)) WITHOUT ROWID;

CREATE TABLE idx_number (rkey INTEGER NOT NULL, p INTEGER NOT NULL, val REAL NOT NULL,
    PRIMARY KEY (rkey, p, val)) WITHOUT ROWID;

CREATE TABLE idx_quantity (rkey INTEGER NOT NULL, p INTEGER NOT NULL, val REAL NOT NULL, code TEXT NOT NULL, system TEXT NOT NULL, unit TEXT NOT NULL,
    PRIMARY KEY (rkey, p, val, code, system, unit)) WITHOUT ROWID;

CREATE TABLE idx_uri (rkey INTEGER NOT NULL, p INTEGER NOT NULL, uri TEXT NOT NULL,
    PRIMARY KEY (rkey, p, uri)) WITHOUT ROWID;

-- Patient compartment membership (R4 CompartmentDefinition `patient`).
CREATE TABLE compartment (rkey INTEGER NOT NULL, patient_id TEXT NOT NULL, PRIMARY KEY (patient_id, rkey)) WITHOUT ROWID;
CREATE INDEX compartment_rkey ON compartment (rkey);
