//! Reading whole types in pages for Bulk Data export: one type at a time in rkey order, a
//! keyset page at a time, so an export of any size holds one page in memory and a restarted job
//! resumes after the last rkey it stored. The caller's view applies in SQL, as in searches.

use crate::clock::epoch_ms;
use crate::db::{Col, RowExt, Sql};
use crate::restrict::Restriction;
use crate::{Store, StoreError};

/// One page of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportSlice<'a> {
    pub resource_type: &'a str,
    /// Only resources last changed at or after this time (epoch ms): `_since`. At or after, not
    /// after: a client passing the previous export's `transactionTime` then misses nothing
    /// written in that millisecond (it may see such a resource twice).
    pub since_ms: Option<i64>,
    /// Only resources in some patient's compartment (patient-level exports of every patient).
    pub in_a_compartment: bool,
    /// Resume after this rkey (0 from the start).
    pub after_rkey: i64,
    pub limit: i64,
}

/// One exported resource: its rkey (the resume point) and its stored JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    pub rkey: i64,
    pub id: String,
    pub body: String,
}

/// A resource deleted since `_since` (for the manifest's `deleted` files).
#[derive(Debug, Clone, PartialEq)]
pub struct DeletedRow {
    pub rkey: i64,
    pub id: String,
    pub deleted_ms: i64,
}

impl Store {
    /// The live resources of `slice.resource_type` that `restriction` lets through, by rkey.
    pub async fn export_page(
        &self,
        slice: &ExportSlice<'_>,
        restriction: &Restriction,
    ) -> Result<Vec<ExportRow>, StoreError> {
        let Some(sql) = self.export_sql(slice, restriction, true) else { return Ok(Vec::new()) };
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Int, Col::Text, Col::Text]).await?;
        Ok(rows
            .into_iter()
            .map(|mut row| ExportRow {
                rkey: row.int(0),
                id: row.take_text(1).unwrap_or_default(),
                body: row.take_text(2).unwrap_or_default(),
            })
            .collect())
    }

    /// The ids [`Store::export_page`] would return for the same slice, without the bodies (to
    /// tell whether given resources are part of an export: the restriction carries an `_id`
    /// filter).
    pub async fn export_ids(
        &self,
        slice: &ExportSlice<'_>,
        restriction: &Restriction,
    ) -> Result<Vec<String>, StoreError> {
        let Some(sql) = self.export_sql(slice, restriction, false) else { return Ok(Vec::new()) };
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Text]).await?;
        Ok(rows.into_iter().filter_map(|mut row| row.take_text(0)).collect())
    }

    /// One export page's statement: rkey, id and body (`with_body`), or the id alone; `None` when
    /// the restriction hides the whole type.
    fn export_sql(&self, slice: &ExportSlice<'_>, restriction: &Restriction, with_body: bool) -> Option<Sql> {
        if !restriction.type_visible(self.registry, slice.resource_type) {
            return None;
        }
        let mut sql = Sql::new(self.dialect());
        sql.push(if with_body {
            "SELECT r.rkey, r.id, h.body FROM resources r JOIN resource_history h ON h.hid = r.hid WHERE r.rtype = "
        } else {
            "SELECT r.id FROM resources r WHERE r.rtype = "
        });
        sql.bind(slice.resource_type).push(" AND r.deleted = 0 AND r.rkey > ").bind(slice.after_rkey);
        if let Some(since) = slice.since_ms {
            sql.push(" AND r.lu_ms >= ").bind(since);
        }
        if slice.in_a_compartment && restriction.patients.is_none() {
            sql.push(" AND EXISTS (SELECT 1 FROM compartment c WHERE c.rkey = r.rkey)");
        }
        restriction.push(self, &mut sql, slice.resource_type, epoch_ms(self.clock.now()), false);
        sql.push(" ORDER BY r.rkey LIMIT ").bind(slice.limit.max(1));
        Some(sql)
    }

    /// Resources of `slice.resource_type` deleted at or after `slice.since_ms`, by rkey, without
    /// any restriction: the caller offers them only to clients that see the whole type.
    pub async fn export_deleted_page(&self, slice: &ExportSlice<'_>) -> Result<Vec<DeletedRow>, StoreError> {
        let Some(since) = slice.since_ms else { return Ok(Vec::new()) };
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT r.rkey, r.id, r.lu_ms FROM resources r WHERE r.rtype = ")
            .bind(slice.resource_type)
            .push(" AND r.deleted = 1 AND r.rkey > ")
            .bind(slice.after_rkey)
            .push(" AND r.lu_ms >= ")
            .bind(since)
            .push(" ORDER BY r.rkey LIMIT ")
            .bind(slice.limit.max(1));
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Int, Col::Text, Col::Int]).await?;
        Ok(rows
            .into_iter()
            .map(|mut row| DeletedRow {
                rkey: row.int(0),
                id: row.take_text(1).unwrap_or_default(),
                deleted_ms: row.int(2),
            })
            .collect())
    }

    /// The resource types that have ever been stored (an export of "everything" reads only
    /// these; an index-only scan).
    pub async fn stored_types(&self) -> Result<Vec<String>, StoreError> {
        let mut sql = Sql::new(self.dialect());
        sql.push("SELECT DISTINCT rtype FROM resources ORDER BY rtype");
        let mut lease = self.pool.read_conn().await?;
        let rows = lease.conn().fetch(&sql, &[Col::Text]).await?;
        Ok(rows.into_iter().filter_map(|mut r| r.take_text(0)).collect())
    }
}
