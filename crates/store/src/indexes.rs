//! The secondary indexes that serve the driving term of a search.
//!
//! They are created by code, not by the migrations, so a bulk load into an empty database can
//! drop them, load, and build them afterwards in one sorted pass (much faster than maintaining
//! them row by row). `ensure` runs at every start, so a load that was interrupted leaves a
//! database that is correct (searches never depend on an index for their results) and gets its
//! indexes back on the next start.

use crate::db::{Conn, Dialect, Sql};
use crate::StoreError;

/// (name, table and columns). Columns are the same on both backends; PostgreSQL adds `rkey`
/// so the index covers the lookup (SQLite's WITHOUT ROWID index entries carry it already).
const SEARCH_INDEXES: &[(&str, &str, &str)] = &[
    ("idx_string_search", "idx_string", "p, norm"),
    ("idx_token_search", "idx_token", "p, code, system"),
    ("idx_reference_search", "idx_reference", "p, tid, ttype"),
    ("idx_date_search", "idx_date", "p, lo"),
    ("idx_number_search", "idx_number", "p, val"),
    ("idx_quantity_search", "idx_quantity", "p, val"),
    ("idx_uri_search", "idx_uri", "p, uri"),
];

/// PostgreSQL's indexes for the per-row checks (`EXISTS … WHERE x.rkey = r.rkey AND x.p = …`),
/// created by migration 0001 and, like the search indexes, dropped for a load into an empty
/// database: maintained row by row they were about a fifth of the load's database time, built at
/// the end they are one sorted pass. (SQLite's index tables are clustered on the same columns,
/// their primary keys, which stay.)
const PG_CHECK_INDEXES: &[(&str, &str, &str)] = &[
    ("idx_string_rkey", "idx_string", "rkey, p"),
    ("idx_token_rkey", "idx_token", "rkey, p, code, system"),
    ("idx_reference_rkey", "idx_reference", "rkey, p, tid, ttype"),
    ("idx_date_rkey", "idx_date", "rkey, p, lo, hi"),
    ("idx_number_rkey", "idx_number", "rkey, p, val"),
    ("idx_quantity_rkey", "idx_quantity", "rkey, p, val"),
    ("idx_uri_rkey", "idx_uri", "rkey, p"),
];

/// PostgreSQL's indexes on the current rows, history and compartment that a load itself never
/// reads (`_lastUpdated` by type, history and sync in commit order, a resource's compartment
/// rows), created by migration 0001 and dropped for a load into an empty database too: kept,
/// each resource cost four more index insertions on the database's side, the side that bounds
/// the load (about 3% of the fixture set's import, rebuilds included).
const PG_LOAD_INDEXES: &[(&str, &str, &str)] = &[
    ("resources_type_lu", "resources", "rtype, lu_ms"),
    ("history_seq", "resource_history", "seq"),
    ("history_type_seq", "resource_history", "rtype, seq"),
    ("compartment_rkey", "compartment", "rkey"),
];

pub(crate) fn create_statements(dialect: Dialect) -> Vec<String> {
    let rkey = if dialect == Dialect::Postgres { ", rkey" } else { "" };
    let mut statements: Vec<String> = SEARCH_INDEXES
        .iter()
        .map(|(name, table, columns)| format!("CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns}{rkey})"))
        .collect();
    if dialect == Dialect::Postgres {
        statements.extend(
            PG_CHECK_INDEXES
                .iter()
                .chain(PG_LOAD_INDEXES)
                .map(|(name, table, columns)| format!("CREATE INDEX IF NOT EXISTS {name} ON {table} ({columns})")),
        );
    }
    statements
        .push(format!("CREATE INDEX IF NOT EXISTS idx_reference_url ON idx_reference (p, url{rkey}) WHERE url <> ''"));
    // Bulk export's page order (also created by migration 0010). Dropped during a bulk load too:
    // maintained row by row under a load's stale statistics, PostgreSQL's planner preferred it
    // to the (rtype, id) key for the load's own existence checks, and a ×6 load slowed from ~2,000
    // to ~400 resources/s.
    statements.push("CREATE INDEX IF NOT EXISTS resources_type_rkey ON resources (rtype, rkey)".to_owned());
    statements
}

pub(crate) async fn ensure(conn: &mut Conn<'_>) -> Result<(), StoreError> {
    for statement in create_statements(conn.dialect()) {
        conn.execute(&Sql::raw(conn.dialect(), statement)).await?;
    }
    Ok(())
}

pub(crate) async fn drop_all(conn: &mut Conn<'_>) -> Result<(), StoreError> {
    let pg_only: &[&[(&str, &str, &str)]] =
        if conn.dialect() == Dialect::Postgres { &[PG_CHECK_INDEXES, PG_LOAD_INDEXES] } else { &[] };
    let names = SEARCH_INDEXES
        .iter()
        .chain(pg_only.iter().copied().flatten())
        .map(|(name, _, _)| *name)
        .chain(["idx_reference_url", "resources_type_rkey"]);
    for name in names {
        conn.execute(&Sql::raw(conn.dialect(), format!("DROP INDEX IF EXISTS {name}"))).await?;
    }
    Ok(())
}
