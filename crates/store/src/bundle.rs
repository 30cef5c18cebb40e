//! Transaction and batch Bundles (R4 §3.1.0.11).
//!
//! A transaction is all-or-nothing: entries are resolved (new ids for POST, conditional
//! create/update/delete searched inside the same database transaction), `urn:uuid:` and other
//! `fullUrl` references are rewritten to the ids assigned, and every write is applied in one
//! database transaction. A batch runs each entry on its own and reports each outcome.

use std::collections::HashMap;

use fhir::search::{self, Handling};
use serde_json::Value;

use crate::read::ReadOutcome;
use crate::write::WriteRequest;
use crate::{Store, StoreError, StoredResource};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BundleKind {
    Transaction,
    Batch,
}

/// The outcome of one entry, in the order of the request's entries.
#[derive(Debug)]
pub struct EntryResult {
    /// e.g. `201 Created`
    pub status: String,
    /// `Type/id/_history/n` for writes.
    pub location: Option<String>,
    pub version: Option<i64>,
    pub last_updated_ms: Option<i64>,
    pub resource: Option<StoredResource>,
    /// For a failed batch entry.
    pub error: Option<StoreError>,
}

#[derive(Debug, Default)]
pub struct BundleResult {
    pub entries: Vec<EntryResult>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Method {
    Delete,
    Post,
    Put,
    Get,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::Delete => "DELETE",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Get => "GET",
        }
    }
}

#[derive(Debug)]
struct Entry {
    index: usize,
    /// A batch entry that could not be parsed.
    error: Option<StoreError>,
    method: Method,
    url: String,
    full_url: Option<String>,
    resource: Option<Value>,
    if_none_exist: Option<String>,
    if_match: Option<i64>,
}

impl Store {
    /// Run a transaction or batch Bundle. Batch entries whose index is in `skip` are not run
    /// (the caller refused them, e.g. for lack of permission); their results are placeholders
    /// the caller replaces. A transaction's entries are never skipped: refuse the whole Bundle.
    pub async fn process_bundle(&self, bundle: &Value, skip: &[usize]) -> Result<BundleResult, StoreError> {
        let kind = match bundle.get("type").and_then(Value::as_str) {
            Some("transaction") => BundleKind::Transaction,
            Some("batch") => BundleKind::Batch,
            other => {
                return Err(StoreError::BadRequest(format!(
                    "only transaction and batch Bundles can be posted to the base URL (got type {})",
                    other.unwrap_or("none")
                )))
            }
        };
        let raw_entries = match bundle.get("entry") {
            None => Vec::new(),
            Some(Value::Array(entries)) => entries.clone(),
            Some(_) => return Err(StoreError::BadRequest("Bundle.entry must be an array".into())),
        };
        let mut entries = Vec::with_capacity(raw_entries.len());
        if kind == BundleKind::Transaction && !skip.is_empty() {
            return Err(StoreError::BadRequest("a transaction runs all of its entries or none".into()));
        }
        for (index, raw) in raw_entries.into_iter().enumerate() {
            if skip.contains(&index) {
                entries.push(Entry::invalid(index, StoreError::BadRequest("not run".into())));
                continue;
            }
            match parse_entry(index, raw) {
                Ok(e) => entries.push(e),
                Err(e) if kind == BundleKind::Transaction => {
                    return Err(StoreError::InBundle { index, source: Box::new(e) })
                }
                Err(e) => entries.push(Entry::invalid(index, e)),
            }
        }
        match kind {
            BundleKind::Transaction => self.transaction(entries).await,
            BundleKind::Batch => self.batch(entries).await,
        }
    }

    /// One REST write (create, update, delete, conditional or not) through the same path as a
    /// transaction entry, so conditional semantics exist once.
    pub async fn rest_write(&self, write: RestWrite) -> Result<EntryResult, StoreError> {
        let (method, url, resource) = match write.kind {
            RestWriteKind::Create { resource } => {
                let t = type_of(&resource);
                (Method::Post, t, Some(resource))
            }
            RestWriteKind::Update { url, resource } => (Method::Put, url, Some(resource)),
            RestWriteKind::Delete { url } => (Method::Delete, url, None),
        };
        let entry = Entry {
            index: 0,
            error: None,
            method,
            url,
            full_url: None,
            resource,
            if_none_exist: write.if_none_exist,
            if_match: write.if_match,
        };
        match self.transaction(vec![entry]).await {
            Ok(mut result) => result.entries.pop().ok_or_else(|| StoreError::BadRequest("nothing to do".into())),
            Err(StoreError::InBundle { source, .. }) => Err(*source),
            Err(e) => Err(e),
        }
    }

    async fn transaction(&self, mut entries: Vec<Entry>) -> Result<BundleResult, StoreError> {
        let total = entries.len();
        entries.sort_by_key(|e| (e.method, e.index));
        let mut tx = self.pool.begin_write().await?;
        let mut ids: HashMap<String, String> = HashMap::new(); // fullUrl -> Type/id
        let mut plans: Vec<(usize, Plan)> = Vec::with_capacity(total);

        // 1. resolve every entry to a concrete action, assigning ids
        for e in &entries {
            let plan = self
                .resolve(&mut tx, e)
                .await
                .map_err(|err| StoreError::InBundle { index: e.index, source: Box::new(err) })?;
            if let (Some(full_url), Plan::Write { resource_type, id, .. }) = (&e.full_url, &plan) {
                ids.insert(full_url.clone(), format!("{resource_type}/{id}"));
            }
            if let (Some(full_url), Plan::Existing { resource_type, id, .. }) = (&e.full_url, &plan) {
                ids.insert(full_url.clone(), format!("{resource_type}/{id}"));
            }
            plans.push((e.index, plan));
        }

        // 2. rewrite references to the ids assigned, then apply all writes at once
        let mut requests = Vec::new();
        let mut request_of: Vec<(usize, Option<usize>)> = Vec::new();
        for (index, plan) in &mut plans {
            let slot = match plan {
                Plan::Write { resource: Some(resource), resource_type, id, if_match, create } => {
                    fhir::references::rewrite(resource, &ids);
                    if let Some(obj) = resource.as_object_mut() {
                        obj.insert("id".into(), Value::String(id.clone()));
                    }
                    requests.push(if *create {
                        WriteRequest::CreateWithId { id: id.clone(), resource: resource.clone() }
                    } else {
                        WriteRequest::Update {
                            resource_type: resource_type.clone(),
                            id: id.clone(),
                            resource: resource.clone(),
                            if_match: *if_match,
                        }
                    });
                    Some(requests.len() - 1)
                }
                Plan::Write { resource: None, resource_type, id, if_match, .. } => {
                    requests.push(WriteRequest::Delete {
                        resource_type: resource_type.clone(),
                        id: id.clone(),
                        if_match: *if_match,
                    });
                    Some(requests.len() - 1)
                }
                _ => None,
            };
            request_of.push((*index, slot));
        }
        let (outcomes, seq) = self.apply(&mut tx, requests).await.map_err(|e| match e {
            StoreError::InBundle { index, source } => {
                let original = request_of.iter().filter(|(_, s)| s.is_some()).nth(index).map_or(index, |(i, _)| *i);
                StoreError::InBundle { index: original, source }
            }
            other => other,
        })?;
        tx.commit().await?;
        self.committed(seq);

        // 3. results, then GETs (after the writes, as the specification orders them)
        let mut results: Vec<Option<EntryResult>> = (0..total).map(|_| None).collect();
        for ((index, slot), (_, plan)) in request_of.iter().zip(plans.iter()) {
            let result = match (slot, plan) {
                (Some(s), Plan::Write { resource: None, .. }) => {
                    let o = &outcomes[*s];
                    EntryResult::status("204 No Content").versioned(o.version, o.last_updated_ms, None)
                }
                (Some(s), Plan::Write { .. }) => {
                    let o = &outcomes[*s];
                    let status = if o.created { "201 Created" } else { "200 OK" };
                    EntryResult::status(status)
                        .versioned(
                            o.version,
                            o.last_updated_ms,
                            Some(format!("{}/{}/_history/{}", o.resource_type, o.id, o.version)),
                        )
                        .with_resource(o.stored())
                }
                (_, Plan::Existing { status, resource, .. }) => {
                    EntryResult::status(status).with_resource(resource.clone())
                }
                (_, Plan::Nothing) => EntryResult::status("204 No Content"),
                (_, Plan::Read { .. }) | (None, Plan::Write { .. }) => EntryResult::status("200 OK"),
            };
            results[*index] = Some(result);
        }
        for (index, plan) in &plans {
            if let Plan::Read { url } = plan {
                results[*index] = Some(self.get_entry(url).await);
            }
        }
        Ok(BundleResult {
            entries: results.into_iter().map(|r| r.unwrap_or_else(|| EntryResult::status("200 OK"))).collect(),
        })
    }

    /// A failed batch entry; a stale `If-Match` (412) carries the current version, so an offline
    /// client can merge and retry that entry alone. (The caller decides whether the requester
    /// may see it.)
    async fn failed_with_current(&self, error: StoreError) -> Result<EntryResult, StoreError> {
        let current = match &error {
            StoreError::VersionConflict { resource_type, id, .. } => match self.read(resource_type, id).await? {
                crate::ReadOutcome::Found(current) => Some(current),
                _ => None,
            },
            _ => None,
        };
        let mut result = EntryResult::failed(error);
        if let Some(current) = current {
            result.version = Some(current.version);
            result.last_updated_ms = Some(current.last_updated_ms);
            result.resource = Some(current);
        }
        Ok(result)
    }

    async fn batch(&self, entries: Vec<Entry>) -> Result<BundleResult, StoreError> {
        // A batch of plain updates and deletes (an offline client's push) is tried as one
        // transaction first: one commit instead of one per entry. Such entries cannot depend on
        // each other (no conditional URLs, no `urn:` ids, no creates), so applying them together
        // is what applying them one by one gives when all succeed. If any fails, nothing of the
        // attempt is kept and every entry is applied alone, as below.
        let independent = entries.len() > 1
            && entries.iter().all(|e| {
                e.error.is_none()
                    && matches!(e.method, Method::Put | Method::Delete)
                    && !e.url.contains('?')
                    && e.if_none_exist.is_none()
                    && e.full_url.as_deref().is_none_or(|u| !u.starts_with("urn:"))
            });
        if independent {
            let together: Vec<Entry> = entries
                .iter()
                .map(|e| Entry {
                    index: e.index,
                    error: None,
                    method: e.method,
                    url: e.url.clone(),
                    full_url: e.full_url.clone(),
                    resource: e.resource.clone(),
                    if_none_exist: None,
                    if_match: e.if_match,
                })
                .collect();
            match Box::pin(self.transaction(together)).await {
                Ok(result) => return Ok(result),
                Err(StoreError::Database(e)) => return Err(StoreError::Database(e)),
                Err(_) => {} // an entry failed: apply them one by one
            }
        }
        let mut results = Vec::with_capacity(entries.len());
        for e in entries {
            if let Some(err) = e.error {
                results.push(EntryResult::failed(err));
                continue;
            }
            let single = Entry { index: 0, ..e };
            let result = match single.method {
                Method::Get => self.get_entry(&single.url).await,
                _ => match Box::pin(self.transaction(vec![single])).await {
                    Ok(mut r) => r.entries.pop().unwrap_or_else(|| EntryResult::status("200 OK")),
                    Err(StoreError::InBundle { source, .. }) => self.failed_with_current(*source).await?,
                    Err(StoreError::Database(e)) => return Err(StoreError::Database(e)),
                    Err(other) => self.failed_with_current(other).await?,
                },
            };
            results.push(result);
        }
        Ok(BundleResult { entries: results })
    }

    /// Decide what an entry does, searching for conditional ones inside the transaction. The
    /// rules are those of the plain interactions (which come through here too, by `rest_write`),
    /// so an entry can do exactly what the same request alone could.
    async fn resolve(&self, tx: &mut crate::db::Tx, e: &Entry) -> Result<Plan, StoreError> {
        check_shape(e)?;
        let (path, query) = split_url(&e.url);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        if e.method == Method::Get {
            return Ok(Plan::Read { url: e.url.clone() });
        }
        let url_type = segments.first().copied().unwrap_or_default();
        if !self.registry.is_resource_type(url_type) {
            return Err(StoreError::UnknownType(url_type.to_string()));
        }
        let resource = match &e.resource {
            Some(resource) => {
                let body_type = type_of(resource);
                if body_type != url_type {
                    return Err(StoreError::BadRequest(format!(
                        "resourceType '{body_type}' does not match the URL's type {url_type}"
                    )));
                }
                Some(resource.clone())
            }
            None => None,
        };
        match (e.method, resource) {
            (Method::Post, Some(resource)) => {
                if segments.len() != 1 || query.is_some() {
                    return Err(StoreError::BadRequest(format!(
                        "POST url '{}' must be the resource type {url_type}",
                        e.url
                    )));
                }
                if let Some(condition) = &e.if_none_exist {
                    let found = self.find(tx, url_type, condition).await?;
                    match found.as_slice() {
                        [] => {}
                        [(id, _)] => return self.existing(tx, url_type, id, "200 OK").await,
                        _ => {
                            return Err(StoreError::PreconditionFailed(format!(
                                "ifNoneExist '{condition}' matches more than one resource"
                            )))
                        }
                    }
                }
                // A create ignores any id in the body: the server assigns one.
                let id = uuid::Uuid::new_v4().to_string();
                Ok(Plan::Write {
                    resource_type: url_type.to_string(),
                    id,
                    resource: Some(resource),
                    if_match: None,
                    create: true,
                })
            }
            (Method::Put, Some(resource)) => {
                let body_id = resource.get("id").and_then(Value::as_str).map(String::from);
                let id = match (segments.as_slice(), query) {
                    ([_, id], None) => match body_id {
                        Some(body_id) if body_id == *id => body_id,
                        Some(body_id) => {
                            return Err(StoreError::BadRequest(format!(
                                "the resource id '{body_id}' does not match the URL's id '{id}'"
                            )))
                        }
                        None => {
                            return Err(StoreError::BadRequest(
                                "an update must carry the resource id in the body".into(),
                            ))
                        }
                    },
                    ([_], Some(condition)) => {
                        let found = self.find(tx, url_type, condition).await?;
                        match (found.as_slice(), body_id) {
                            // No match: created, with the body's id when it has one.
                            ([], body_id) => body_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
                            ([(id, _)], Some(body_id)) if body_id != *id => {
                                return Err(StoreError::BadRequest(format!(
                                    "the resource id '{body_id}' is not that of {url_type}/{id}, the resource '{}' matches",
                                    e.url
                                )))
                            }
                            ([(id, _)], _) => id.clone(),
                            _ => {
                                return Err(StoreError::PreconditionFailed(format!(
                                    "conditional update '{}' matches more than one resource",
                                    e.url
                                )))
                            }
                        }
                    }
                    _ => {
                        return Err(StoreError::BadRequest(format!(
                            "PUT url '{}' must be {url_type}/id or {url_type}?search",
                            e.url
                        )))
                    }
                };
                let mut resource = resource;
                if let Some(obj) = resource.as_object_mut() {
                    obj.insert("id".into(), Value::String(id.clone()));
                }
                Ok(Plan::Write {
                    resource_type: url_type.to_string(),
                    id,
                    resource: Some(resource),
                    if_match: e.if_match,
                    create: false,
                })
            }
            (Method::Delete, None) => {
                let id = match (segments.as_slice(), query) {
                    ([_, id], None) if search::is_valid_id(id) => (*id).to_string(),
                    ([_, id], None) => {
                        return Err(StoreError::NotFound { resource_type: url_type.to_string(), id: (*id).to_string() })
                    }
                    ([_], Some(condition)) => {
                        let found = self.find(tx, url_type, condition).await?;
                        match found.as_slice() {
                            [] => return Ok(Plan::Nothing),
                            [(id, _)] => id.clone(),
                            _ => {
                                return Err(StoreError::PreconditionFailed(format!(
                                    "conditional delete '{}' matches more than one resource",
                                    e.url
                                )))
                            }
                        }
                    }
                    _ => {
                        return Err(StoreError::BadRequest(format!(
                            "DELETE url '{}' must be Type/id or Type?search",
                            e.url
                        )))
                    }
                };
                Ok(Plan::Write {
                    resource_type: url_type.to_string(),
                    id,
                    resource: None,
                    if_match: e.if_match,
                    create: false,
                })
            }
            // check_shape let through only POST/PUT with a resource and DELETE without one.
            _ => Err(StoreError::BadRequest("an entry's method and resource do not fit together".into())),
        }
    }

    async fn find(
        &self,
        tx: &mut crate::db::Tx,
        resource_type: &str,
        query: &str,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let pairs: Vec<(String, String)> = form_pairs(query);
        let request = search::parse(self.registry, resource_type, &pairs, Handling::Strict)?;
        self.matching_ids(&mut tx.conn(), &request, 2).await
    }

    async fn existing(
        &self,
        tx: &mut crate::db::Tx,
        resource_type: &str,
        id: &str,
        status: &str,
    ) -> Result<Plan, StoreError> {
        let _ = tx;
        let resource = match self.read(resource_type, id).await? {
            ReadOutcome::Found(r) => Some(r),
            _ => None,
        };
        Ok(Plan::Existing {
            resource_type: resource_type.to_string(),
            id: id.to_string(),
            status: status.to_string(),
            resource,
        })
    }

    /// A GET entry: a read (`Type/id`) only; searches belong in their own requests.
    async fn get_entry(&self, url: &str) -> EntryResult {
        let (path, _) = split_url(url);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        match segments.as_slice() {
            [t, id] => match self.read(t, id).await {
                Ok(ReadOutcome::Found(r)) => EntryResult::status("200 OK").with_resource(Some(r)),
                Ok(ReadOutcome::Deleted { .. }) => EntryResult::failed(StoreError::Gone {
                    resource_type: (*t).to_string(),
                    id: (*id).to_string(),
                    version: 0,
                    last_updated_ms: 0,
                }),
                Ok(ReadOutcome::NotFound) => {
                    EntryResult::failed(StoreError::NotFound { resource_type: (*t).to_string(), id: (*id).to_string() })
                }
                Err(e) => EntryResult::failed(e),
            },
            _ => {
                EntryResult::failed(StoreError::BadRequest(format!("GET entries support reads (Type/id), not '{url}'")))
            }
        }
    }
}

/// A REST write: `POST Type`, `PUT Type/id` or `PUT Type?query`, `DELETE Type/id` or `DELETE Type?query`.
#[derive(Debug, Clone)]
pub struct RestWrite {
    pub kind: RestWriteKind,
    pub if_none_exist: Option<String>,
    pub if_match: Option<i64>,
}

#[derive(Debug, Clone)]
pub enum RestWriteKind {
    Create {
        resource: Value,
    },
    /// `url` is `Type/id` or `Type?query`, relative to the base.
    Update {
        url: String,
        resource: Value,
    },
    Delete {
        url: String,
    },
}

#[derive(Debug)]
enum Plan {
    /// Create/update (`resource` Some) or delete (`resource` None).
    Write {
        resource_type: String,
        id: String,
        resource: Option<Value>,
        if_match: Option<i64>,
        create: bool,
    },
    /// A conditional create that found its match.
    Existing {
        resource_type: String,
        id: String,
        status: String,
        resource: Option<StoredResource>,
    },
    Read {
        url: String,
    },
    /// A conditional delete that matched nothing.
    Nothing,
}

impl EntryResult {
    fn status(status: &str) -> EntryResult {
        EntryResult {
            status: status.to_string(),
            location: None,
            version: None,
            last_updated_ms: None,
            resource: None,
            error: None,
        }
    }
    fn versioned(mut self, version: i64, last_updated_ms: i64, location: Option<String>) -> EntryResult {
        self.version = Some(version);
        self.last_updated_ms = Some(last_updated_ms);
        self.location = location;
        self
    }
    fn with_resource(mut self, resource: Option<StoredResource>) -> EntryResult {
        self.resource = resource;
        self
    }
    fn failed(error: StoreError) -> EntryResult {
        let mut r = EntryResult::status("");
        r.error = Some(error);
        r
    }
}

/// What an entry may carry for its method, as for the plain interaction: a resource only with
/// POST and PUT (a body on GET or DELETE is refused, not ignored), `ifNoneExist` only on a
/// create, `ifMatch` only on an update or delete.
fn check_shape(e: &Entry) -> Result<(), StoreError> {
    let method = e.method.name();
    let refused = |text: String| Err(StoreError::BadRequest(text));
    match (e.method, &e.resource) {
        (Method::Get | Method::Delete, Some(_)) => return refused(format!("a {method} carries no resource")),
        (Method::Post | Method::Put, None) => return refused(format!("a {method} needs a resource")),
        _ => {}
    }
    if e.if_none_exist.is_some() && e.method != Method::Post {
        return refused(format!("If-None-Exist (ifNoneExist) applies to a create (POST), not to a {method}"));
    }
    if e.if_match.is_some() && !matches!(e.method, Method::Put | Method::Delete) {
        return refused(format!("If-Match (ifMatch) applies to an update or a delete, not to a {method}"));
    }
    Ok(())
}

fn type_of(resource: &Value) -> String {
    resource.get("resourceType").and_then(Value::as_str).unwrap_or_default().to_string()
}

fn split_url(url: &str) -> (&str, Option<&str>) {
    match url.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (url, None),
    }
}

fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let plus_as_space = s.replace('+', " ");
    percent_decode(&plus_as_space)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Some(b) = s.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl Entry {
    fn invalid(index: usize, error: StoreError) -> Entry {
        Entry {
            index,
            error: Some(error),
            method: Method::Get,
            url: String::new(),
            full_url: None,
            resource: None,
            if_none_exist: None,
            if_match: None,
        }
    }
}

fn parse_entry(index: usize, raw: Value) -> Result<Entry, StoreError> {
    let request = raw.get("request").ok_or_else(|| StoreError::BadRequest("entry.request is required".into()))?;
    let method = match request.get("method").and_then(Value::as_str) {
        Some("GET") | Some("HEAD") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some(other) => return Err(StoreError::BadRequest(format!("entry.request.method {other} is not supported"))),
        None => return Err(StoreError::BadRequest("entry.request.method is required".into())),
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| StoreError::BadRequest("entry.request.url is required".into()))?;
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(etag) => Some(
            parse_etag(etag)
                .ok_or_else(|| StoreError::BadRequest(format!("ifMatch '{etag}' is not an ETag like W/\"3\"")))?,
        ),
        None => None,
    };
    Ok(Entry {
        index,
        error: None,
        method,
        url: url.trim_start_matches('/').to_string(),
        full_url: raw.get("fullUrl").and_then(Value::as_str).map(String::from),
        resource: raw.get("resource").cloned(),
        if_none_exist: request.get("ifNoneExist").and_then(Value::as_str).map(String::from),
        if_match,
    })
}

/// `W/"3"` or `"3"` or `3` → 3
pub fn parse_etag(etag: &str) -> Option<i64> {
    etag.trim().trim_start_matches("W/").trim_matches('"').parse().ok()
}
