//! Search as SQL over the typed index tables.
//!
//! Each search term becomes one condition on `resources r`: the most selective term drives the
//! query as `r.rkey IN (SELECT rkey FROM idx_… WHERE …)` and the others are correlated `EXISTS`
//! checks on that row, so a patient's laboratory observations are found through the patient
//! reference first rather than by scanning every observation of the category. Paging is keyset
//! (sort values + rkey of the last row) so a `next` link stays correct while data changes. On
//! PostgreSQL a page in storage order takes the driving term's matches in rkey order and checks
//! them one by one until the page is full (`Filters::driven_page`).

use std::collections::{HashMap, HashSet};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use fhir::search::{
    Include, Modifier, Prefix, SearchRequest, SearchTerm, SearchValue, SortKey, Summary, Target, TokenSystem, TotalMode,
};
use fhir::ParamType;
use serde_json::Value;

use crate::cache::Cached;
use crate::clock::epoch_ms;
use crate::db::{Col, Conn, Dialect, RowExt, Sql, SqlValue};
use crate::restrict::Restriction;
use crate::{param_key, Store, StoreError, StoredResource};

/// The most resources `_include`/`_revinclude` add to one page.
const MAX_INCLUDED: i64 = 1000;

#[derive(Debug, Clone, PartialEq, Default)]
pub struct SearchPage {
    pub matches: Vec<StoredResource>,
    pub included: Vec<StoredResource>,
    pub total: Option<i64>,
    pub next_cursor: Option<String>,
    /// `_revinclude` found more than `MAX_INCLUDED` resources; the rest were left out.
    pub include_truncated: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EverythingQuery {
    pub patient_id: String,
    pub since_ms: Option<i64>,
    pub types: Option<Vec<String>>,
    pub count: usize,
    pub cursor: Option<String>,
}

/// Types referenced from a patient's records that are not themselves in the compartment but
/// belong in `$everything` (who treated them, where, with what).
const EVERYTHING_REFERENCED: &[&str] =
    &["Practitioner", "PractitionerRole", "Organization", "Location", "Medication", "Device", "Substance"];

impl Store {
    /// Search within what `restriction` lets the caller see (matches, totals and includes alike).
    /// Not cached: answers to clients are cached finished, by [`Store::search_rendered`].
    pub async fn search(&self, request: &SearchRequest, restriction: &Restriction) -> Result<SearchPage, StoreError> {
        self.search_db(request, restriction).await
    }

    /// A search whose answer the caller builds from the page with `render`; the built text is
    /// what is cached, under `answer_key` (whatever else the answer depends on, such as the
    /// request's own parameter text for its links) beside the search itself. A hit then costs
    /// a lookup, not rebuilding a Bundle of tens of KB from its entries; and the cache holds
    /// each answer once, in one piece, rather than the page and the answer. The text is served
    /// only while nothing has been written since its page was read, like every cached entry.
    pub async fn search_rendered(
        &self,
        request: &SearchRequest,
        restriction: &Restriction,
        answer_key: &str,
        render: impl FnOnce(&SearchPage) -> String,
    ) -> Result<bytes::Bytes, StoreError> {
        let Some(cache) = &self.cache else {
            return Ok(render(&self.search_db(request, restriction).await?).into());
        };
        let key = if restriction.is_unrestricted() {
            format!("t|{request:?}|{answer_key}")
        } else {
            format!("t|{request:?}|{restriction:?}|{answer_key}")
        };
        if let Some(Cached::Text(text)) = cache.get(&key) {
            return Ok(text);
        }
        let epoch = cache.epoch();
        // Bytes takes the String's buffer as it is: no copy of a page that may run to a MB.
        let text = bytes::Bytes::from(render(&self.search_db(request, restriction).await?));
        cache.put(key, epoch, Cached::Text(text.clone()));
        Ok(text)
    }

    async fn search_db(&self, request: &SearchRequest, restriction: &Restriction) -> Result<SearchPage, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        self.search_with(&mut lease.conn(), request, restriction).await
    }

    pub(crate) async fn search_with(
        &self,
        conn: &mut Conn<'_>,
        request: &SearchRequest,
        restriction: &Restriction,
    ) -> Result<SearchPage, StoreError> {
        if !restriction.type_visible(self.registry, &request.resource_type) {
            let total = (request.total != TotalMode::None).then_some(0);
            return Ok(SearchPage { total, ..SearchPage::default() });
        }
        let now_ms = epoch_ms(self.clock.now());
        let filters = Filters { store: self, request, now_ms, restriction: Some(restriction) };
        // `_count=0` asks for the total only, like `_summary=count`.
        if request.summary == Some(Summary::Count) || request.count == 0 {
            let total = filters.count(conn).await?;
            return Ok(SearchPage { total: Some(total), ..SearchPage::default() });
        }
        let cursor = request.cursor.as_deref().map(Cursor::decode).transpose()?;
        let limit = request.count as i64;
        let sort = sort_columns(&request.resource_type, &request.sort);

        let sql = match filters.driven_page(conn.dialect(), &sort, cursor.as_ref(), limit + 1) {
            Some(sql) => sql,
            None => {
                let mut sql = Sql::new(conn.dialect());
                sql.push("SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body");
                for (i, s) in sort.iter().enumerate() {
                    sql.push(", ");
                    s.push_expr(&mut sql);
                    sql.push(&format!(" AS sk{i}"));
                }
                sql.push(" FROM resources r JOIN resource_history h ON h.hid = r.hid WHERE ");
                filters.push(&mut sql);
                if let Some(cursor) = &cursor {
                    push_keyset(&mut sql, &sort, cursor)?;
                }
                sql.push(" ORDER BY ");
                for (i, s) in sort.iter().enumerate() {
                    sql.push(&format!("sk{i} {}, ", if s.descending { "DESC" } else { "ASC" }));
                }
                sql.push("r.rkey ASC LIMIT ").bind(limit + 1);
                sql
            }
        };

        let mut cols = STORED_COLS.to_vec();
        cols.extend(sort.iter().map(|s| s.col));
        let mut rows = if limit == 0 { Vec::new() } else { conn.fetch(&sql, &cols).await? };
        let mut next_cursor = None;
        if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            if let Some(last) = rows.last() {
                next_cursor = Some(Cursor { keys: last[6..].to_vec(), rkey: last.int(0) }.encode());
            }
        }
        let rkeys: Vec<i64> = rows.iter().map(|r| r.int(0)).collect();
        let matches: Vec<StoredResource> = rows.into_iter().map(stored_from_row).collect();

        // A count costs a second pass over every match, so by default the total is given only
        // when it is known for free (everything fit in the first page); `_total=accurate` asks
        // for it always.
        let total = match request.total {
            TotalMode::None => None,
            _ if cursor.is_none() && next_cursor.is_none() => Some(matches.len() as i64),
            TotalMode::Accurate => Some(filters.count(conn).await?),
            TotalMode::Estimate => None,
        };

        let mut included = Vec::new();
        let mut include_truncated = false;
        if !matches.is_empty() {
            let mut seen: HashSet<(String, String)> =
                matches.iter().map(|m| (m.resource_type.clone(), m.id.clone())).collect();
            for include in &request.includes {
                included.extend(self.include(conn, &rkeys, include, &mut seen, restriction).await?);
            }
            for include in &request.revincludes {
                let (found, truncated) = self.revinclude(conn, &matches, include, &mut seen, restriction).await?;
                included.extend(found);
                include_truncated |= truncated;
            }
        }
        Ok(SearchPage { matches, included, total, next_cursor, include_truncated })
    }

    /// Ids matching a search, for conditional create/update/delete inside a transaction.
    pub(crate) async fn matching_ids(
        &self,
        conn: &mut Conn<'_>,
        request: &SearchRequest,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let filters = Filters { store: self, request, now_ms: epoch_ms(self.clock.now()), restriction: None };
        let mut sql = Sql::new(conn.dialect());
        sql.push("SELECT r.id, r.version FROM resources r WHERE ");
        filters.push(&mut sql);
        sql.push(" ORDER BY r.rkey LIMIT ").bind(limit);
        let rows = conn.fetch(&sql, &[Col::Text, Col::Int]).await?;
        Ok(rows.into_iter().map(|mut r| (r.take_text(0).unwrap_or_default(), r.int(1))).collect())
    }

    async fn include(
        &self,
        conn: &mut Conn<'_>,
        rkeys: &[i64],
        include: &Include,
        seen: &mut HashSet<(String, String)>,
        restriction: &Restriction,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let params = reference_params(self.registry, &include.source_type, include.param.as_deref());
        if params.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(conn.dialect());
        sql.push("SELECT DISTINCT x.ttype, x.tid FROM idx_reference x WHERE x.rkey IN ")
            .bind_list(rkeys.iter().copied())
            .push(" AND x.p IN ")
            .bind_list(params)
            .push(" AND x.tid <> '' AND x.ttype <> ''");
        if let Some(t) = &include.target_type {
            sql.push(" AND x.ttype = ").bind(t.as_str());
        }
        let targets = conn.fetch(&sql, &[Col::Text, Col::Text]).await?;
        let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
        for mut row in targets {
            let key = (row.take_text(0).unwrap_or_default(), row.take_text(1).unwrap_or_default());
            if seen.insert(key.clone()) {
                by_type.entry(key.0).or_default().push(key.1);
            }
        }
        self.fetch_by_ids(conn, by_type, restriction).await
    }

    async fn revinclude(
        &self,
        conn: &mut Conn<'_>,
        matches: &[StoredResource],
        include: &Include,
        seen: &mut HashSet<(String, String)>,
        restriction: &Restriction,
    ) -> Result<(Vec<StoredResource>, bool), StoreError> {
        let params = reference_params(self.registry, &include.source_type, include.param.as_deref());
        if params.is_empty() || !restriction.type_visible(self.registry, &include.source_type) {
            return Ok((Vec::new(), false));
        }
        let mut truncated = false;
        let mut by_type: HashMap<&str, Vec<&str>> = HashMap::new();
        for m in matches {
            if include.target_type.as_deref().is_none_or(|t| t == m.resource_type) {
                by_type.entry(m.resource_type.as_str()).or_default().push(m.id.as_str());
            }
        }
        let mut found = Vec::new();
        for (target_type, ids) in by_type {
            let mut sql = Sql::new(conn.dialect());
            select_live(&mut sql);
            sql.push(" AND r.rtype = ")
                .bind(include.source_type.as_str())
                .push(" AND r.rkey IN (SELECT x.rkey FROM idx_reference x WHERE x.p IN ")
                .bind_list(params.iter().copied())
                .push(" AND x.ttype = ")
                .bind(target_type)
                .push(" AND x.tid IN ")
                .bind_list(ids)
                .push(")");
            restriction.push(self, &mut sql, &include.source_type, epoch_ms(self.clock.now()), false);
            sql.push(" ORDER BY r.rkey LIMIT ").bind(MAX_INCLUDED);
            let rows = conn.fetch(&sql, &STORED_COLS).await?;
            truncated |= rows.len() as i64 >= MAX_INCLUDED;
            for row in rows {
                let r = stored_from_row(row);
                if seen.insert((r.resource_type.clone(), r.id.clone())) {
                    found.push(r);
                }
            }
        }
        Ok((found, truncated))
    }

    /// The live resources named by `by_type` that `restriction` lets the caller see. Every
    /// type goes into one statement (a group per type, each with its own view), at most
    /// [`IDS_PER_FETCH`] ids to a statement: a page's includes cost one round trip, not one per
    /// type.
    async fn fetch_by_ids(
        &self,
        conn: &mut Conn<'_>,
        by_type: HashMap<String, Vec<String>>,
        restriction: &Restriction,
    ) -> Result<Vec<StoredResource>, StoreError> {
        let now_ms = epoch_ms(self.clock.now());
        let mut found = Vec::new();
        let mut groups: Vec<(&str, &[String])> = Vec::new();
        let mut pending = 0;
        for (resource_type, ids) in &by_type {
            if !restriction.type_visible(self.registry, resource_type) {
                continue;
            }
            for chunk in ids.chunks(IDS_PER_FETCH) {
                if pending + chunk.len() > IDS_PER_FETCH {
                    found.extend(self.fetch_groups(conn, &groups, restriction, now_ms).await?);
                    groups.clear();
                    pending = 0;
                }
                groups.push((resource_type.as_str(), chunk));
                pending += chunk.len();
            }
        }
        found.extend(self.fetch_groups(conn, &groups, restriction, now_ms).await?);
        Ok(found)
    }

    /// One statement of [`Self::fetch_by_ids`]: `(r.rtype = T AND r.id IN (…) AND <view of T>) OR …`.
    async fn fetch_groups(
        &self,
        conn: &mut Conn<'_>,
        groups: &[(&str, &[String])],
        restriction: &Restriction,
        now_ms: i64,
    ) -> Result<Vec<StoredResource>, StoreError> {
        if groups.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql = Sql::new(conn.dialect());
        select_live(&mut sql);
        sql.push(" AND (");
        for (n, (resource_type, ids)) in groups.iter().enumerate() {
            if n > 0 {
                sql.push(" OR ");
            }
            sql.push("(r.rtype = ")
                .bind(*resource_type)
                .push(" AND r.id IN ")
                .bind_list(ids.iter().map(String::as_str));
            restriction.push(self, &mut sql, resource_type, now_ms, false);
            sql.push(")");
        }
        sql.push(")");
        let rows = conn.fetch(&sql, &STORED_COLS).await?;
        Ok(rows.into_iter().map(stored_from_row).collect())
    }

    /// `Patient/{id}/$everything`: the patient's compartment, paged by rkey, plus the
    /// practitioners, organizations, locations and medications those records point to.
    pub async fn everything(
        &self,
        query: &EverythingQuery,
        restriction: &Restriction,
    ) -> Result<SearchPage, StoreError> {
        let mut lease = self.pool.read_conn().await?;
        let mut conn = lease.conn();
        let after = match &query.cursor {
            Some(c) => Cursor::decode(c)?.rkey,
            None => 0,
        };
        let limit = query.count.max(1) as i64;
        // The page walks the compartment's primary key `(patient_id, rkey)` from the cursor on
        // and stops when it is full. `r.rkey IN (SELECT … compartment …)` read the patient's
        // whole compartment for every page instead (SQLite builds the list first): a patient
        // with 1,000 records paid for all of them on each of ten pages.
        let mut sql = Sql::new(conn.dialect());
        sql.push(
            "SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body FROM compartment pc \
             JOIN resources r ON r.rkey = pc.rkey JOIN resource_history h ON h.hid = r.hid \
             WHERE pc.patient_id = ",
        )
        .bind(query.patient_id.as_str())
        .push(" AND pc.rkey > ")
        .bind(after)
        .push(" AND r.deleted = 0");
        if let Some(types) = &query.types {
            sql.push(" AND r.rtype IN ").bind_list(types.iter().map(String::as_str));
        }
        if let Some(since) = query.since_ms {
            sql.push(" AND r.lu_ms >= ").bind(since);
        }
        if !restriction.is_unrestricted() {
            let types: Vec<&str> = self.registry.patient_compartment_types();
            restriction.push_any_type(self, &mut sql, &types, epoch_ms(self.clock.now()));
        }
        sql.push(" ORDER BY pc.rkey LIMIT ").bind(limit + 1);
        let mut rows = conn.fetch(&sql, &STORED_COLS).await?;
        let mut next_cursor = None;
        if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            if let Some(last) = rows.last() {
                next_cursor = Some(Cursor { keys: vec![], rkey: last.int(0) }.encode());
            }
        }
        let rkeys: Vec<i64> = rows.iter().map(|r| r.int(0)).collect();
        let matches: Vec<StoredResource> = rows.into_iter().map(stored_from_row).collect();
        let mut included = Vec::new();
        let wanted: Vec<&str> = EVERYTHING_REFERENCED
            .iter()
            .copied()
            .filter(|t| query.types.as_ref().is_none_or(|types| types.iter().any(|x| x == t)))
            .collect();
        if !rkeys.is_empty() && !wanted.is_empty() {
            let mut sql = Sql::new(conn.dialect());
            sql.push("SELECT DISTINCT x.ttype, x.tid FROM idx_reference x WHERE x.rkey IN ")
                .bind_list(rkeys.iter().copied())
                .push(" AND x.ttype IN ")
                .bind_list(wanted)
                .push(" AND x.tid <> ''");
            let mut by_type: HashMap<String, Vec<String>> = HashMap::new();
            for mut row in conn.fetch(&sql, &[Col::Text, Col::Text]).await? {
                by_type
                    .entry(row.take_text(0).unwrap_or_default())
                    .or_default()
                    .push(row.take_text(1).unwrap_or_default());
            }
            included = self.fetch_by_ids(&mut conn, by_type, restriction).await?;
        }
        Ok(SearchPage { matches, included, total: None, next_cursor, include_truncated: false })
    }
}

/// Ids per statement when resources are fetched by id (includes, `$everything`'s referenced
/// resources): one statement's bound values stay well under SQLite's and PostgreSQL's limits.
const IDS_PER_FETCH: usize = 500;

/// Columns of a stored resource row, in the order `stored_from_row` reads them.
const STORED_COLS: [Col; 6] = [Col::Int, Col::Text, Col::Text, Col::Int, Col::Int, Col::Text];

/// `SELECT <stored columns> FROM resources r JOIN resource_history h … WHERE r.deleted = 0`;
/// callers append ` AND …`.
fn select_live(sql: &mut Sql) {
    sql.push(
        "SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body \
         FROM resources r JOIN resource_history h ON h.hid = r.hid WHERE r.deleted = 0",
    );
}

fn stored_from_row(mut row: Vec<SqlValue>) -> StoredResource {
    StoredResource {
        resource_type: row.take_text(1).unwrap_or_default(),
        id: row.take_text(2).unwrap_or_default(),
        version: row.int(3),
        last_updated_ms: row.int(4),
        body: row.take_text(5).unwrap_or_default().into(),
    }
}

fn reference_params(registry: &fhir::Registry, resource_type: &str, code: Option<&str>) -> Vec<i64> {
    match code {
        Some(code) => vec![param_key(resource_type, code)],
        None => registry
            .params_for(resource_type)
            .into_iter()
            .filter(|d| d.kind == ParamType::Reference)
            .map(|d| param_key(resource_type, &d.code))
            .collect(),
    }
}

/// The WHERE clause of a search (without paging).
pub(crate) struct Filters<'a> {
    pub(crate) store: &'a Store,
    pub(crate) request: &'a SearchRequest,
    pub(crate) now_ms: i64,
    /// The caller's view; `None` for internal searches (conditional writes).
    pub(crate) restriction: Option<&'a Restriction>,
}

/// How a search's conditions are arranged (see [`Filters::plan`]).
#[derive(Debug, Clone, Copy)]
struct Plan {
    /// The caller's patient compartment drives (a patient-restricted search naming no patient).
    compartment_drives: bool,
    /// A term already confines the search to the caller's patients.
    compartment_implied: bool,
    /// The term that drives, by index.
    driver: Option<usize>,
}

impl Filters<'_> {
    fn plan(&self) -> Plan {
        let rtype = self.request.resource_type.as_str();
        let has_id = self.request.terms.iter().any(|t| t.target == Target::Id && t.modifier == Modifier::None);
        // Under a patient restriction the compartment (a few patients) is the most selective
        // term there is, so it drives and every search term becomes a check on its rows.
        // Unless the search names a patient itself (`patient=`, `subject=`…): then that reference
        // drives and the compartment is a check on its few rows.
        let names_patient = self.request.terms.iter().any(|t| {
            t.missing.is_none()
                && t.modifier != Modifier::Not
                && match &t.target {
                    Target::Param { kind: ParamType::Reference, code } => {
                        matches!(code.as_str(), "patient" | "subject" | "beneficiary")
                            || t.values.iter().all(|v| {
                                matches!(v, SearchValue::Reference { target_type: Some(tt), target_id: Some(_), .. } if tt == "Patient")
                            })
                    }
                    _ => false,
                }
        });
        // When a term already confines the search to patients the caller may see, through a
        // parameter that defines compartment membership (`Observation?patient=…` under that
        // patient's token), the compartment condition would only repeat it.
        let compartment_implied = self.restriction.is_some_and(|r| self.names_only_allowed_patients(r, rtype));
        let compartment_drives = !has_id
            && !names_patient
            && self.restriction.is_some_and(|r| r.compartment_applies(self.store.registry, rtype));
        let driver = if has_id || compartment_drives { None } else { pick_driver(&self.request.terms) };
        Plan { compartment_drives, compartment_implied, driver }
    }

    fn push(&self, sql: &mut Sql) {
        let plan = self.plan();
        if plan.compartment_drives {
            if let Some(r) = self.restriction {
                r.push_compartment_driver(sql);
                sql.push(" AND ");
            }
        }
        self.push_checks(sql, plan);
    }

    /// Every condition but a compartment driver: the type, liveness, the terms (the driving
    /// one as `r.rkey IN (…)`), the caller's restriction.
    fn push_checks(&self, sql: &mut Sql, plan: Plan) {
        self.push_row_checks(sql, plan);
        if let Some(term) = plan.driver.and_then(|i| self.request.terms.get(i)) {
            sql.push(" AND ");
            self.push_term(sql, term, true);
        }
        self.push_index_checks(sql, plan);
    }

    /// Would [`Self::push_index_checks`] push anything?
    fn has_index_checks(&self, plan: Plan) -> bool {
        let other_param_terms = self
            .request
            .terms
            .iter()
            .enumerate()
            .any(|(i, term)| plan.driver != Some(i) && matches!(term.target, Target::Param { .. }));
        let compartment_done = plan.compartment_drives || plan.compartment_implied;
        other_param_terms
            || self
                .restriction
                .is_some_and(|r| r.has_index_checks(self.store, &self.request.resource_type, compartment_done))
    }

    /// The conditions of [`Self::push_checks`] but the driver's that need only the index rows of
    /// `r.rkey` (each ` AND …`): the parameter terms and the restriction's compartment and labels.
    fn push_index_checks(&self, sql: &mut Sql, plan: Plan) {
        for (i, term) in self.request.terms.iter().enumerate() {
            if plan.driver != Some(i) && matches!(term.target, Target::Param { .. }) {
                sql.push(" AND ");
                self.push_term(sql, term, false);
            }
        }
        if let Some(r) = self.restriction {
            let compartment_done = plan.compartment_drives || plan.compartment_implied;
            r.push_index_checks(self.store, sql, &self.request.resource_type, compartment_done);
        }
    }

    /// The rest of [`Self::push_checks`]: the type, liveness, terms on the row itself (`_id`,
    /// `_lastUpdated`) and the scope's filters. With [`Self::push_index_checks`], every
    /// condition but the driver's.
    fn push_row_checks(&self, sql: &mut Sql, plan: Plan) {
        let rtype = self.request.resource_type.as_str();
        sql.push("r.rtype = ").bind(rtype).push(" AND r.deleted = 0");
        for (i, term) in self.request.terms.iter().enumerate() {
            if plan.driver != Some(i) && !matches!(term.target, Target::Param { .. }) {
                sql.push(" AND ");
                self.push_term(sql, term, false);
            }
        }
        if let Some(r) = self.restriction {
            r.push_type_filters(self.store, sql, rtype, self.now_ms);
        }
    }

    /// A page in storage order (no `_sort`) on PostgreSQL, when a term drives: the driving
    /// term's matches in rkey order, each checked against the other conditions in that order
    /// until the page is full, and only the page's bodies read. The planner, left to itself,
    /// checked every match of the driving term (all of a patient's Observations for
    /// `Observation?patient=…&category=laboratory&_count=10`), read every passing body, then
    /// sorted; its row estimates for the index tables cannot tell it that stopping early pays.
    /// `OFFSET 0` keeps the per-row checks a nested loop in the driver's order.
    fn driven_page(&self, dialect: Dialect, sort: &[SortColumn], cursor: Option<&Cursor>, limit: i64) -> Option<Sql> {
        if dialect != Dialect::Postgres || !sort.is_empty() || cursor.is_some_and(|c| !c.keys.is_empty()) {
            return None;
        }
        let plan = self.plan();
        let mut sql = Sql::new(dialect);
        sql.push(
            "SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, h.body FROM (\
             SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.hid FROM (",
        );
        if !self.push_driver_rkeys(&mut sql, plan) {
            return None;
        }
        if let Some(cursor) = cursor {
            sql.push(" AND x.rkey > ").bind(cursor.rkey);
        }
        // Two checks per candidate, in this order: first what the index rows of its rkey can
        // tell (`k`, where `r` names the candidate's rkey alone), then, for those that pass,
        // its resources row (`r`). Most candidates fail on the index rows (a patient's
        // Observations that are not lab results), and these no longer cost a row lookup. With
        // nothing to check on index rows the driver itself is `k`. The page is ordered by the
        // driver's column, which the planner knows sorted, so the nested loop stops at the
        // page's end without a sort.
        let checks = self.has_index_checks(plan);
        if checks {
            sql.push(" ORDER BY x.rkey) d CROSS JOIN LATERAL (SELECT r.rkey FROM (SELECT d.rkey) r WHERE TRUE");
            self.push_index_checks(&mut sql, plan);
            sql.push(" OFFSET 0) k");
        } else {
            sql.push(" ORDER BY x.rkey) k");
        }
        sql.push(
            " CROSS JOIN LATERAL (\
             SELECT r.rkey, r.rtype, r.id, r.version, r.lu_ms, r.hid FROM resources r WHERE r.rkey = k.rkey AND ",
        );
        self.push_row_checks(&mut sql, plan);
        sql.push(if checks { " OFFSET 0) r ORDER BY d.rkey LIMIT " } else { " OFFSET 0) r ORDER BY k.rkey LIMIT " })
            .bind(limit);
        sql.push(") r JOIN resource_history h ON h.hid = r.hid ORDER BY r.rkey");
        Some(sql)
    }

    /// `SELECT DISTINCT x.rkey FROM idx_… x WHERE …` for the driving term, when there is one
    /// (and no compartment drives instead).
    fn push_driver_rkeys(&self, sql: &mut Sql, plan: Plan) -> bool {
        let Some(term) = plan.driver.filter(|_| !plan.compartment_drives).and_then(|i| self.request.terms.get(i))
        else {
            return false;
        };
        let Target::Param { code, kind } = &term.target else { return false };
        sql.push("SELECT DISTINCT x.rkey FROM ").push(table_of(*kind)).push(" x WHERE x.p = ");
        sql.bind(param_key(&self.request.resource_type, code));
        self.push_values(sql, term);
        true
    }

    /// Does one of the search's terms name only patients of `restriction`, through a parameter
    /// by which `rtype` is in the Patient compartment? Then every match is in their compartment.
    fn names_only_allowed_patients(&self, restriction: &Restriction, rtype: &str) -> bool {
        let Some(patients) = restriction.patients.as_deref() else { return false };
        let compartment_params = self.store.registry.patient_compartment_params(rtype);
        self.request.terms.iter().any(|t| {
            let Target::Param { kind: ParamType::Reference, code } = &t.target else { return false };
            t.missing.is_none()
                && t.modifier == Modifier::None
                && !t.values.is_empty()
                // Every R4 `patient` parameter selects a subset of a compartment parameter
                // (checked against the official definitions in this module's tests).
                && (code == "patient" || compartment_params.iter().any(|c| c == code))
                && t.values.iter().all(|v| match v {
                    SearchValue::Reference { target_type, target_id: Some(id), url: None } => {
                        // A bare id is a patient only where the parameter can only point at one.
                        let is_patient = match target_type.as_deref() {
                            Some(t) => t == "Patient",
                            None => code == "patient",
                        };
                        is_patient && patients.iter().any(|p| p == id)
                    }
                    _ => false,
                })
        })
    }

    async fn count(&self, conn: &mut Conn<'_>) -> Result<i64, StoreError> {
        let mut sql = Sql::new(conn.dialect());
        sql.push("SELECT COUNT(*) FROM resources r WHERE ");
        self.push(&mut sql);
        let rows = conn.fetch(&sql, &[Col::Int]).await?;
        Ok(rows.first().map_or(0, |r| r.int(0)))
    }

    pub(crate) fn push_term(&self, sql: &mut Sql, term: &SearchTerm, driver: bool) {
        match &term.target {
            Target::Id => {
                let ids = term.values.iter().filter_map(|v| match v {
                    SearchValue::Token { code: Some(c), .. } => Some(c.as_str()),
                    _ => None,
                });
                sql.push(if term.modifier == Modifier::Not { "r.id NOT IN " } else { "r.id IN " }).bind_list(ids);
            }
            Target::LastUpdated => {
                sql.push("(");
                for (i, v) in term.values.iter().enumerate() {
                    if i > 0 {
                        sql.push(" OR ");
                    }
                    if let SearchValue::Date { prefix, range } = v {
                        push_range_condition(
                            sql,
                            "r.lu_ms",
                            "(r.lu_ms + 1)",
                            *prefix,
                            range.start,
                            range.end,
                            self.now_ms,
                        );
                    }
                }
                sql.push(")");
            }
            Target::Param { code, kind } => {
                let table = table_of(*kind);
                let p = param_key(&self.request.resource_type, code);
                if let Some(missing) = term.missing {
                    sql.push(if missing { "NOT EXISTS (SELECT 1 FROM " } else { "EXISTS (SELECT 1 FROM " })
                        .push(table)
                        .push(" x WHERE x.rkey = r.rkey AND x.p = ")
                        .bind(p)
                        .push(")");
                    return;
                }
                let negated = term.modifier == Modifier::Not;
                if driver && !negated {
                    sql.push("r.rkey IN (SELECT x.rkey FROM ").push(table).push(" x WHERE x.p = ").bind(p);
                } else {
                    sql.push(if negated { "NOT EXISTS (SELECT 1 FROM " } else { "EXISTS (SELECT 1 FROM " })
                        .push(table)
                        .push(" x WHERE x.rkey = r.rkey AND x.p = ")
                        .bind(p);
                }
                self.push_values(sql, term);
                sql.push(")");
            }
        }
    }

    /// ` AND (value OR value …)` on the index row `x`.
    fn push_values(&self, sql: &mut Sql, term: &SearchTerm) {
        sql.push(" AND (");
        for (i, value) in term.values.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            self.push_value(sql, term.modifier, value);
        }
        sql.push(")");
    }

    fn push_value(&self, sql: &mut Sql, modifier: Modifier, value: &SearchValue) {
        match value {
            SearchValue::String { normalized, raw } => match modifier {
                Modifier::Exact => {
                    sql.push("x.exact = ").bind(raw.as_str());
                }
                Modifier::Contains => {
                    sql.push("x.norm LIKE ").bind(format!("%{}%", escape_like(normalized))).push(" ESCAPE '\\'");
                }
                _ => push_prefix(sql, "x.norm", normalized),
            },
            SearchValue::Token { system, code } => {
                sql.push("(");
                match code {
                    Some(code) => sql.push("x.code = ").bind(code.as_str()),
                    None => sql.push("1 = 1"),
                };
                match system {
                    TokenSystem::Any => {}
                    TokenSystem::None => {
                        sql.push(" AND x.system = ''");
                    }
                    TokenSystem::Is(s) => {
                        sql.push(" AND x.system = ").bind(s.as_str());
                    }
                }
                sql.push(")");
            }
            SearchValue::TokenText(text) => push_prefix(sql, "x.text", text),
            SearchValue::Reference { target_type, target_id, url } => {
                let local = url.as_deref().and_then(|u| self.local_reference(u));
                let (target_type, target_id) = match (&local, url) {
                    (Some((t, id)), _) => (Some(t.as_str()), Some(id.as_str())),
                    (None, Some(url)) => {
                        sql.push("x.url = ").bind(url.as_str());
                        return;
                    }
                    (None, None) => (target_type.as_deref(), target_id.as_deref()),
                };
                sql.push("(x.tid = ").bind(target_id.unwrap_or_default());
                if let Some(t) = target_type {
                    sql.push(" AND x.ttype = ").bind(t);
                }
                sql.push(")");
            }
            SearchValue::Date { prefix, range } => {
                push_range_condition(sql, "x.lo", "x.hi", *prefix, range.start, range.end, self.now_ms);
            }
            SearchValue::Number { prefix, value, low, high } => push_number(sql, *prefix, *value, *low, *high),
            SearchValue::Quantity { prefix, value, low, high, system, code } => {
                sql.push("(");
                push_number(sql, *prefix, *value, *low, *high);
                match (system, code) {
                    (Some(s), Some(c)) => {
                        sql.push(" AND x.system = ").bind(s.as_str()).push(" AND x.code = ").bind(c.as_str());
                    }
                    (None, Some(c)) => {
                        sql.push(" AND (x.code = ").bind(c.as_str()).push(" OR x.unit = ").bind(c.as_str()).push(")");
                    }
                    (Some(s), None) => {
                        sql.push(" AND x.system = ").bind(s.as_str());
                    }
                    (None, None) => {}
                }
                sql.push(")");
            }
            SearchValue::Uri(uri) => match modifier {
                Modifier::Below => push_prefix(sql, "x.uri", uri),
                Modifier::Above => {
                    let prefixes: Vec<&str> =
                        uri.match_indices('/').map(|(i, _)| &uri[..i]).chain(std::iter::once(uri.as_str())).collect();
                    sql.push("x.uri IN ").bind_list(prefixes);
                }
                _ => {
                    sql.push("x.uri = ").bind(uri.as_str());
                }
            },
        }
    }

    /// `http://this-server/fhir/Patient/1` → (Patient, 1)
    fn local_reference(&self, url: &str) -> Option<(String, String)> {
        let rest = url.strip_prefix(self.store.options.base_url.as_str())?.strip_prefix('/')?;
        let mut parts = rest.split('/');
        let (t, id) = (parts.next()?, parts.next()?);
        Some((t.to_string(), id.to_string()))
    }
}

/// Pick the term most likely to narrow the search the most, to drive the query.
fn pick_driver(terms: &[SearchTerm]) -> Option<usize> {
    terms
        .iter()
        .enumerate()
        .filter(|(_, t)| t.missing.is_none() && t.modifier != Modifier::Not)
        .filter_map(|(i, t)| {
            let score = match (&t.target, t.values.first()) {
                (Target::Param { kind: ParamType::Reference, .. }, _) => 1,
                (Target::Param { kind: ParamType::Token, .. }, Some(SearchValue::Token { code: Some(_), .. })) => 2,
                (Target::Param { kind: ParamType::String, .. }, _) if t.modifier == Modifier::Exact => 3,
                (Target::Param { kind: ParamType::String, .. }, _) if t.modifier == Modifier::None => 4,
                (Target::Param { kind: ParamType::Uri, .. }, _) if t.modifier == Modifier::None => 4,
                _ => return None,
            };
            Some((score, i))
        })
        .min()
        .map(|(_, i)| i)
}

fn table_of(kind: ParamType) -> &'static str {
    match kind {
        ParamType::String => "idx_string",
        ParamType::Token => "idx_token",
        ParamType::Reference => "idx_reference",
        ParamType::Date => "idx_date",
        ParamType::Number => "idx_number",
        ParamType::Quantity => "idx_quantity",
        ParamType::Uri | ParamType::Composite | ParamType::Special => "idx_uri",
    }
}

/// `column` starts with `prefix` (as a range, so an index can serve it).
fn push_prefix(sql: &mut Sql, column: &str, prefix: &str) {
    sql.push("(")
        .push(column)
        .push(" >= ")
        .bind(prefix)
        .push(" AND ")
        .push(column)
        .push(" < ")
        .bind(format!("{prefix}\u{10FFFF}"))
        .push(")");
}

fn escape_like(s: &str) -> String {
    s.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_")
}

/// Date comparison of a stored range [lo, hi) against a search range [start, end), R4 §3.1.1.4.2.
fn push_range_condition(sql: &mut Sql, lo: &str, hi: &str, prefix: Prefix, start: i64, end: i64, now_ms: i64) {
    match prefix {
        Prefix::Eq => {
            sql.push("(").push(lo).push(" >= ").bind(start).push(" AND ").push(hi).push(" <= ").bind(end).push(")")
        }
        Prefix::Ne => {
            sql.push("NOT (").push(lo).push(" >= ").bind(start).push(" AND ").push(hi).push(" <= ").bind(end).push(")")
        }
        Prefix::Gt => sql.push(hi).push(" > ").bind(end),
        Prefix::Lt => sql.push(lo).push(" < ").bind(start),
        Prefix::Ge => sql.push(hi).push(" > ").bind(start),
        Prefix::Le => sql.push(lo).push(" < ").bind(end),
        Prefix::Sa => sql.push(lo).push(" >= ").bind(end),
        Prefix::Eb => sql.push(hi).push(" <= ").bind(start),
        Prefix::Ap => {
            // "approximately": the search range widened by 10% of its distance from now.
            let slack = ((now_ms - start).abs() / 10).max(86_400_000);
            sql.push("(")
                .push(lo)
                .push(" < ")
                .bind(end.saturating_add(slack))
                .push(" AND ")
                .push(hi)
                .push(" > ")
                .bind(start.saturating_sub(slack))
                .push(")")
        }
    };
}

fn push_number(sql: &mut Sql, prefix: Prefix, value: f64, low: f64, high: f64) {
    match prefix {
        Prefix::Eq => sql.push("(x.val >= ").bind(low).push(" AND x.val < ").bind(high).push(")"),
        Prefix::Ne => sql.push("NOT (x.val >= ").bind(low).push(" AND x.val < ").bind(high).push(")"),
        Prefix::Gt | Prefix::Sa => sql.push("x.val > ").bind(value),
        Prefix::Lt | Prefix::Eb => sql.push("x.val < ").bind(value),
        Prefix::Ge => sql.push("x.val >= ").bind(value),
        Prefix::Le => sql.push("x.val <= ").bind(value),
        Prefix::Ap => {
            let slack = (value * 0.1).abs();
            sql.push("(x.val >= ").bind(value - slack).push(" AND x.val <= ").bind(value + slack).push(")")
        }
    };
}

/// One `_sort` key as a SQL expression with a sentinel for "no value" (sorted last).
struct SortColumn {
    descending: bool,
    col: Col,
    /// `None` for plain columns of `r`.
    table: Option<(&'static str, &'static str, i64)>,
    column: &'static str,
}

fn sort_columns(resource_type: &str, keys: &[SortKey]) -> Vec<SortColumn> {
    keys.iter()
        .map(|k| {
            let (col, table, column) = match &k.target {
                Target::Id => (Col::Text, None, "r.id"),
                Target::LastUpdated => (Col::Int, None, "r.lu_ms"),
                Target::Param { code, kind } => {
                    let p = param_key(resource_type, code);
                    let (col, column) = match kind {
                        ParamType::String => (Col::Text, "x.norm"),
                        // '' marks an absent value (text-only tokens, url-only references)
                        ParamType::Token => (Col::Text, "NULLIF(x.code, '')"),
                        ParamType::Reference => (Col::Text, "NULLIF(x.tid, '')"),
                        ParamType::Uri | ParamType::Composite | ParamType::Special => (Col::Text, "x.uri"),
                        ParamType::Date if k.descending => (Col::Int, "x.hi"),
                        ParamType::Date => (Col::Int, "x.lo"),
                        ParamType::Number | ParamType::Quantity => (Col::Real, "x.val"),
                    };
                    (col, Some((table_of(*kind), if k.descending { "MAX" } else { "MIN" }, p)), column)
                }
            };
            SortColumn { descending: k.descending, col, table, column }
        })
        .collect()
}

impl SortColumn {
    fn sentinel(&self) -> SqlValue {
        match (self.col, self.descending) {
            (Col::Text, false) => SqlValue::Text("\u{10FFFF}".into()),
            (Col::Text, true) => SqlValue::Text(String::new()),
            (Col::Int, false) => SqlValue::Int(i64::MAX),
            (Col::Int, true) => SqlValue::Int(i64::MIN),
            (Col::Real, false) => SqlValue::Real(1e300),
            (Col::Real, true) => SqlValue::Real(-1e300),
        }
    }

    fn push_expr(&self, sql: &mut Sql) {
        match self.table {
            None => {
                sql.push(self.column);
            }
            Some((table, aggregate, p)) => {
                sql.push("COALESCE((SELECT ")
                    .push(aggregate)
                    .push("(")
                    .push(self.column)
                    .push(") FROM ")
                    .push(table)
                    .push(" x WHERE x.rkey = r.rkey AND x.p = ")
                    .bind(p)
                    .push("), ")
                    .bind(self.sentinel())
                    .push(")");
            }
        }
    }
}

/// Rows strictly after the cursor in (sort keys..., rkey) order.
fn push_keyset(sql: &mut Sql, sort: &[SortColumn], cursor: &Cursor) -> Result<(), StoreError> {
    if cursor.keys.len() != sort.len() {
        return Err(bad_cursor());
    }
    sql.push(" AND (");
    for level in 0..=sort.len() {
        if level > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        for (i, s) in sort.iter().enumerate().take(level) {
            s.push_expr(sql);
            sql.push(" = ").bind(cursor.keys[i].clone()).push(" AND ");
        }
        match sort.get(level) {
            Some(s) => {
                s.push_expr(sql);
                sql.push(if s.descending { " < " } else { " > " }).bind(cursor.keys[level].clone());
            }
            None => {
                sql.push("r.rkey > ").bind(cursor.rkey);
            }
        }
        sql.push(")");
    }
    sql.push(")");
    Ok(())
}

/// Keyset position: the sort values and rkey of the last row of the previous page.
struct Cursor {
    keys: Vec<SqlValue>,
    rkey: i64,
}

fn bad_cursor() -> StoreError {
    StoreError::BadRequest("the paging cursor is not valid for this search; start from the first page".into())
}

impl Cursor {
    fn encode(&self) -> String {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|k| match k {
                SqlValue::Int(v) => serde_json::json!(["i", v.to_string()]),
                SqlValue::Real(v) => serde_json::json!(["f", v.to_string()]),
                SqlValue::Text(v) => serde_json::json!(["s", v]),
                SqlValue::NullText | SqlValue::NullInt | SqlValue::NullReal => serde_json::json!(["n"]),
            })
            .collect();
        URL_SAFE_NO_PAD.encode(serde_json::json!([keys, self.rkey.to_string()]).to_string())
    }

    fn decode(text: &str) -> Result<Cursor, StoreError> {
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|_| bad_cursor())?;
        let value: Value = serde_json::from_slice(&bytes).map_err(|_| bad_cursor())?;
        let parts = value.as_array().ok_or_else(bad_cursor)?;
        let (Some(keys), Some(rkey)) = (parts.first().and_then(Value::as_array), parts.get(1).and_then(Value::as_str))
        else {
            return Err(bad_cursor());
        };
        let rkey = rkey.parse().map_err(|_| bad_cursor())?;
        let keys = keys
            .iter()
            .map(|k| {
                let kind = k.get(0).and_then(Value::as_str);
                let text = k.get(1).and_then(Value::as_str);
                match (kind, text) {
                    (Some("i"), Some(t)) => t.parse().map(SqlValue::Int).map_err(|_| bad_cursor()),
                    (Some("f"), Some(t)) => t.parse().map(SqlValue::Real).map_err(|_| bad_cursor()),
                    (Some("s"), Some(t)) => Ok(SqlValue::Text(t.to_string())),
                    (Some("n"), None) => Ok(SqlValue::NullText),
                    _ => Err(bad_cursor()),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Cursor { keys, rkey })
    }
}

#[cfg(test)]
mod tests {
    /// `names_only_allowed_patients` trusts `patient=` to imply compartment membership: every
    /// R4 `patient` parameter is a compartment parameter, a `.where(resolve() is Patient)` of
    /// `subject`, or one of four known equivalents.
    #[test]
    fn every_patient_parameter_implies_the_compartment() {
        let registry = fhir::Registry::r4();
        let equivalents = [
            ("Appointment", "actor"),
            ("AppointmentResponse", "actor"),
            ("Coverage", "beneficiary"),
            ("ResearchSubject", "individual"),
        ];
        for rtype in registry.resource_types() {
            let compartment = registry.patient_compartment_params(rtype);
            if compartment.is_empty() || registry.param(rtype, "patient").is_none() {
                continue;
            }
            let covered = compartment.iter().any(|c| c == "patient" || c == "subject")
                || equivalents.iter().any(|(t, c)| *t == rtype && compartment.iter().any(|x| x == c));
            assert!(covered, "{rtype}: `patient` is not known to imply the compartment ({compartment:?})");
        }
    }
}
