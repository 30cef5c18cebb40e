-- Topic-based subscriptions (FHIR Subscriptions R5 Backport IG). A subscription belongs to the
-- grant of the token that created it: revoking the grant turns it off in the same transaction
-- (see auth::grants::revoke_tree), and it never outlives the grant (`end_at`).
--
-- The outbox is the version history itself: every committed change already has its row in
-- resource_history, written in the change's own transaction and ordered by the commit
-- sequence. The dispatcher keeps a cursor over it (`subscription_cursor`) and turns each change
-- into per-subscription events (`subscription_events`) in one transaction with the cursor, so a
-- change is matched exactly once whatever crashes; delivery then walks each subscription's
-- events in order.
CREATE TABLE subscriptions (
    sub_id TEXT PRIMARY KEY,
    grant_id TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scopes TEXT NOT NULL,                -- the creating token's scopes (may be narrower than the grant's)
    topic TEXT NOT NULL,                 -- topic canonical URL
    filters TEXT NOT NULL,               -- JSON array of [param, value] pairs
    endpoint TEXT NOT NULL,
    headers TEXT NOT NULL,               -- JSON array of "Name: value"
    payload TEXT NOT NULL,               -- empty | id-only | full-resource
    heartbeat_s INTEGER,
    timeout_s INTEGER NOT NULL,
    max_count INTEGER NOT NULL,
    end_at INTEGER,                      -- epoch seconds
    status TEXT NOT NULL,                -- requested | active | error | off
    error TEXT,
    resource TEXT NOT NULL,              -- the Subscription as accepted (JSON)
    since_seq INTEGER NOT NULL,          -- changes after this commit sequence count
    events_count INTEGER NOT NULL DEFAULT 0,
    delivered_through INTEGER NOT NULL DEFAULT 0,
    failures INTEGER NOT NULL DEFAULT 0,
    next_attempt_ms INTEGER NOT NULL DEFAULT 0,
    last_sent_ms INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX subscriptions_grant ON subscriptions (grant_id);
CREATE INDEX subscriptions_status ON subscriptions (status);

CREATE TABLE subscription_events (
    sub_id TEXT NOT NULL,
    event_number INTEGER NOT NULL,
    rtype TEXT NOT NULL,
    rid TEXT NOT NULL,
    version INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at_ms INTEGER NOT NULL,
    PRIMARY KEY (sub_id, event_number)
) WITHOUT ROWID;

CREATE TABLE subscription_cursor (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);

-- Leases: which process runs a singleton worker (the subscription dispatcher), renewed while
-- it lives; another process takes over once a lease has lapsed.
CREATE TABLE worker_leases (name TEXT PRIMARY KEY, holder TEXT NOT NULL, expires_ms INTEGER NOT NULL);
