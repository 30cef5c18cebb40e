-- meta.lastUpdated follows commit order: each write transaction takes, with the next commit
-- sequence value and under the same row lock, a time strictly after the previous transaction's
-- (the clock's time, or 1 ms past the last one when the clock has not moved on or went back).
-- A client syncing with `_lastUpdated=gt<the newest lastUpdated it holds>` then misses no
-- write that committed after it looked, whatever order transactions started in.
ALTER TABLE commit_seq ADD COLUMN last_ms INTEGER NOT NULL DEFAULT 0;
UPDATE commit_seq SET last_ms = COALESCE((SELECT MAX(lu_ms) FROM resource_history), 0);

-- Offline sync pulls (GET [base]/$sync): each answer's `next` cursor is a row here holding the
-- position in commit order and the patient list the answer was computed for, so the next pull
-- can tell the client which patients joined or left its list since. Rows older than 90 days are
-- pruned as new ones are written.
CREATE TABLE sync_cursors (
    cursor_id TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    rkey INTEGER NOT NULL,
    version INTEGER NOT NULL,
    patients TEXT,                       -- JSON array; NULL when the caller is not limited to a list
    created_ms INTEGER NOT NULL
);
CREATE INDEX sync_cursors_created ON sync_cursors (created_ms);
