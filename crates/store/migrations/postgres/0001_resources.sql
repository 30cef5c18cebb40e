-- See the SQLite migration for the meaning of each table. PostgreSQL differences:
-- * bodies are jsonb; text columns compared by range use COLLATE "C" (byte order, like SQLite);
-- * every table that grows with patients carries `patient_id` (the first patient whose
--   compartment holds the resource, NULL for shared resources), the distribution column for
--   Citus (see README).
CREATE TABLE resources (
    rkey BIGSERIAL PRIMARY KEY,
    rtype TEXT NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    version BIGINT NOT NULL,
    lu_ms BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    deleted BIGINT NOT NULL DEFAULT 0,
    content_hash TEXT,
    hid BIGINT NOT NULL DEFAULT 0,
    patient_id TEXT,
    UNIQUE (rtype, id)
);
CREATE INDEX resources_type_lu ON resources (rtype, lu_ms);

CREATE TABLE resource_history (
    hid BIGSERIAL PRIMARY KEY,
    rkey BIGINT NOT NULL,
    version BIGINT NOT NULL,
    rtype TEXT NOT NULL,
    id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    lu_ms BIGINT NOT NULL,
    method TEXT NOT NULL,
    body JSONB,
    patient_id TEXT,
    UNIQUE (rkey, version)
);
CREATE INDEX history_seq ON resource_history (seq);
CREATE INDEX history_type_seq ON resource_history (rtype, seq);

CREATE TABLE commit_seq (one INTEGER PRIMARY KEY CHECK (one = 1), value BIGINT NOT NULL);
INSERT INTO commit_seq (one, value) VALUES (1, 0);

-- Secondary indexes of the idx_* tables are created by the store at start (store::indexes).
CREATE TABLE idx_string (rkey BIGINT NOT NULL, p BIGINT NOT NULL, norm TEXT COLLATE "C" NOT NULL, exact TEXT COLLATE "C" NOT NULL, patient_id TEXT);

CREATE TABLE idx_token (rkey BIGINT NOT NULL, p BIGINT NOT NULL, code TEXT COLLATE "C" NOT NULL, system TEXT COLLATE "C" NOT NULL, text TEXT COLLATE "C" NOT NULL, patient_id TEXT);

CREATE TABLE idx_reference (rkey BIGINT NOT NULL, p BIGINT NOT NULL, tid TEXT COLLATE "C" NOT NULL, ttype TEXT COLLATE "C" NOT NULL, url TEXT COLLATE "C" NOT NULL, patient_id TEXT);

CREATE TABLE idx_date (rkey BIGINT NOT NULL, p BIGINT NOT NULL, lo BIGINT NOT NULL, hi BIGINT NOT NULL, patient_id TEXT);

CREATE TABLE idx_number (rkey BIGINT NOT NULL, p BIGINT NOT NULL, val DOUBLE PRECISION NOT NULL, patient_id TEXT);

CREATE TABLE idx_quantity (rkey BIGINT NOT NULL, p BIGINT NOT NULL, val DOUBLE PRECISION NOT NULL, code TEXT COLLATE "C" NOT NULL, system TEXT COLLATE "C" NOT NULL, unit TEXT COLLATE "C" NOT NULL, patient_id TEXT);

CREATE TABLE idx_uri (rkey BIGINT NOT NULL, p BIGINT NOT NULL, uri TEXT COLLATE "C" NOT NULL, patient_id TEXT);

CREATE TABLE compartment (rkey BIGINT NOT NULL, patient_id TEXT NOT NULL, PRIMARY KEY (patient_id, rkey));
CREATE INDEX compartment_rkey ON compartment (rkey);

-- Per-resource access to index rows (correlated checks, replacing rows on update). The
-- search-side indexes are created by the store (store::indexes).
CREATE INDEX idx_string_rkey ON idx_string (rkey, p);
CREATE INDEX idx_token_rkey ON idx_token (rkey, p, code, system);
CREATE INDEX idx_reference_rkey ON idx_reference (rkey, p, tid, ttype);
CREATE INDEX idx_date_rkey ON idx_date (rkey, p, lo, hi);
CREATE INDEX idx_number_rkey ON idx_number (rkey, p, val);
CREATE INDEX idx_quantity_rkey ON idx_quantity (rkey, p, val);
CREATE INDEX idx_uri_rkey ON idx_uri (rkey, p);
