//! Search results against an independent oracle.
//!
//! The Synthea fixture bundles are imported with the real CLI; the test then reads the same
//! files itself and computes the expected matches of every query with small hand-written
//! extractors (no use of the `fhir` crate's indexer, parser or normalizer), draws parameter
//! values from the data deterministically, and checks that the server returns exactly the
//! expected ids, each once, following every `next` link.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::both_backends;
use crate::fixtures::{imported_server, Fixtures, Key, DEFAULT_BUNDLES};
use crate::harness::{synthea_dir, synthea_files_unless, Backend, TestServer};

both_backends!(search_matches_oracle);

// ---------------------------------------------------------------------------------------------
// Hand-written extractors
// ---------------------------------------------------------------------------------------------

/// A repeating element as a list (absent → empty, single → one).
fn list(v: &Value) -> Vec<&Value> {
    match v {
        Value::Null => Vec::new(),
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    }
}

fn strs(v: &Value) -> Vec<&str> {
    list(v).into_iter().filter_map(Value::as_str).collect()
}

/// Lower case without accents: the Latin letters with a canonical decomposition are folded by
/// hand (enough for the fixtures' á í ó ñ é Á); everything else is just lower-cased.
fn norm(s: &str) -> String {
    const FOLDS: [(&str, char); 10] = [
        ("ÀÁÂÃÄÅàáâãäåĀāĂăĄą", 'a'),
        ("ÇçĆćĈĉĊċČč", 'c'),
        ("ÈÉÊËèéêëĒēĔĕĖėĘęĚě", 'e'),
        ("ÌÍÎÏìíîïĨĩĪīĬĭĮįİ", 'i'),
        ("ÑñŃńŅņŇň", 'n'),
        ("ÒÓÔÕÖòóôõöŌōŎŏŐő", 'o'),
        ("ÙÚÛÜùúûüŨũŪūŬŭŮůŰűŲų", 'u'),
        ("ÝýÿŸ", 'y'),
        ("ŚśŜŝŞşŠš", 's'),
        ("ŹźŻżŽž", 'z'),
    ];
    s.chars()
        .map(|c| FOLDS.iter().find(|(from, _)| from.contains(c)).map_or(c, |(_, to)| *to))
        .flat_map(char::to_lowercase)
        .collect()
}

/// `{"reference": "Type/id"}` elements of a field (single or repeating) as (type, id).
fn refs<'a>(r: &'a Value, field: &str) -> Vec<(&'a str, &'a str)> {
    list(&r[field])
        .into_iter()
        .filter_map(|x| x["reference"].as_str())
        .filter_map(|s| s.split_once('/'))
        .filter(|(_, id)| !id.contains('/'))
        .collect()
}

fn patient_of<'a>(r: &'a Value, field: &str) -> Option<&'a str> {
    refs(r, field).into_iter().find(|(t, _)| *t == "Patient").map(|(_, id)| id)
}

/// Every `reference` string anywhere in a resource.
fn all_references<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(obj) => {
            for (k, x) in obj {
                match (k.as_str(), x) {
                    ("reference", Value::String(s)) => out.push(s),
                    _ => all_references(x, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|x| all_references(x, out)),
        _ => {}
    }
}

/// One token of a Coding / CodeableConcept / code.
#[derive(Debug, Clone, Copy)]
struct Tok<'a> {
    system: Option<&'a str>,
    code: Option<&'a str>,
    text: Option<&'a str>,
}

fn coding_tok(c: &Value) -> Tok<'_> {
    Tok { system: c["system"].as_str(), code: c["code"].as_str(), text: c["display"].as_str() }
}

/// CodeableConcept(s): each coding, plus the concept's text.
fn concept_toks(v: &Value) -> Vec<Tok<'_>> {
    let mut toks = Vec::new();
    for cc in list(v) {
        toks.extend(list(&cc["coding"]).into_iter().map(coding_tok));
        if let Some(text) = cc["text"].as_str() {
            toks.push(Tok { system: None, code: None, text: Some(text) });
        }
    }
    toks
}

fn code_toks(v: &Value) -> Vec<Tok<'_>> {
    strs(v).into_iter().map(|c| Tok { system: None, code: Some(c), text: None }).collect()
}

/// A token query value: `code`, `|code`, `system|code`, `system|`.
fn tok_matches(toks: &[Tok<'_>], query: &str) -> bool {
    toks.iter().any(|t| match query.split_once('|') {
        None => t.code == Some(query),
        Some(("", code)) => t.system.is_none() && t.code == Some(code),
        Some((system, "")) => t.system == Some(system),
        Some((system, code)) => t.system == Some(system) && t.code == Some(code),
    })
}

fn any_tok(toks: &[Tok<'_>], comma_list: &str) -> bool {
    comma_list.split(',').any(|q| tok_matches(toks, q))
}

fn text_matches(toks: &[Tok<'_>], query: &str) -> bool {
    let q = norm(query);
    toks.iter().any(|t| t.text.is_some_and(|x| norm(x).starts_with(&q)))
}

/// Names: every part of every HumanName.
fn name_parts(r: &Value) -> Vec<&str> {
    let mut parts = Vec::new();
    for name in list(&r["name"]) {
        for key in ["family", "given", "prefix", "suffix", "text"] {
            parts.extend(strs(&name[key]));
        }
    }
    parts
}

fn families(r: &Value) -> Vec<&str> {
    list(&r["name"]).into_iter().flat_map(|n| strs(&n["family"])).collect()
}

fn givens(r: &Value) -> Vec<&str> {
    list(&r["name"]).into_iter().flat_map(|n| strs(&n["given"])).collect()
}

fn cities(r: &Value) -> Vec<&str> {
    list(&r["address"]).into_iter().flat_map(|a| strs(&a["city"])).collect()
}

#[derive(Clone, Copy)]
enum StrMode {
    Prefix,
    Exact,
    Contains,
}

fn str_matches(values: &[&str], mode: StrMode, comma_list: &str) -> bool {
    comma_list.split(',').any(|q| {
        values.iter().any(|v| match mode {
            StrMode::Prefix => norm(v).starts_with(&norm(q)),
            StrMode::Exact => *v == q,
            StrMode::Contains => norm(v).contains(&norm(q)),
        })
    })
}

// --- dates ----------------------------------------------------------------------------------

const DAY: i64 = 86_400_000;

/// Days from 1970-01-01 (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { yoe + era * 400 + 1 } else { yoe + era * 400 }, m, d)
}

/// A FHIR date/dateTime as a half-open UTC millisecond range covering its precision.
fn date_range(s: &str) -> Option<(i64, i64)> {
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        part.bytes().all(|b| b.is_ascii_digit()).then(|| part.parse().ok())?
    };
    let at = |i: usize| s.as_bytes().get(i).copied();
    let year = num(0, 4)?;
    if s.len() == 4 {
        return Some((days_from_civil(year, 1, 1) * DAY, days_from_civil(year + 1, 1, 1) * DAY));
    }
    (at(4) == Some(b'-')).then_some(())?;
    let month = num(5, 7)?;
    if s.len() == 7 {
        let (ny, nm) = if month == 12 { (year + 1, 1) } else { (year, month + 1) };
        return Some((days_from_civil(year, month, 1) * DAY, days_from_civil(ny, nm, 1) * DAY));
    }
    (at(7) == Some(b'-')).then_some(())?;
    let day = num(8, 10)?;
    let midnight = days_from_civil(year, month, day) * DAY;
    if s.len() == 10 {
        return Some((midnight, midnight + DAY));
    }
    (at(10) == Some(b'T') && at(13) == Some(b':')).then_some(())?;
    let mut local = midnight + num(11, 13)? * 3_600_000 + num(14, 16)? * 60_000;
    let mut width = 60_000;
    let mut rest = &s[16..];
    if let Some(after) = rest.strip_prefix(':') {
        local += num(17, 19)?.min(59) * 1000;
        width = 1000;
        rest = &after[2..];
        if let Some(fraction) = rest.strip_prefix('.') {
            let digits: String = fraction.chars().take_while(char::is_ascii_digit).collect();
            let ms: String = digits.chars().chain("000".chars()).take(3).collect();
            local += ms.parse::<i64>().ok()?;
            width = 1;
            rest = &fraction[digits.len()..];
        }
    }
    let offset = match rest {
        "" | "Z" => 0,
        zone => {
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let (h, m) = zone[1..].split_once(':')?;
            sign * (h.parse::<i64>().ok()? * 3_600_000 + m.parse::<i64>().ok()? * 60_000)
        }
    };
    Some((local - offset, local - offset + width))
}

/// A Period: a missing bound is open.
fn period_range(p: &Value) -> Option<(i64, i64)> {
    if !p.is_object() {
        return None;
    }
    let start = match p["start"].as_str() {
        Some(s) => date_range(s)?.0,
        None => i64::MIN,
    };
    let end = match p["end"].as_str() {
        Some(s) => date_range(s)?.1,
        None => i64::MAX,
    };
    Some((start, end))
}

/// The date values of a choice element `{prefix}DateTime` / `{prefix}Period` / `{prefix}Instant`.
fn choice_dates(r: &Value, prefix: &str) -> Vec<(i64, i64)> {
    let mut out = Vec::new();
    for suffix in ["DateTime", "Instant", "Date"] {
        out.extend(r[format!("{prefix}{suffix}")].as_str().and_then(date_range));
    }
    out.extend(period_range(&r[format!("{prefix}Period")]));
    out
}

fn plain_dates(r: &Value, field: &str) -> Vec<(i64, i64)> {
    strs(&r[field]).into_iter().filter_map(date_range).collect()
}

/// The server's documented date comparison of a value range `r` with a search range `s`.
fn date_prefix_match(prefix: &str, r: (i64, i64), s: (i64, i64)) -> bool {
    let eq = r.0 >= s.0 && r.1 <= s.1;
    match prefix {
        "eq" => eq,
        "ne" => !eq,
        "gt" => r.1 > s.1,
        "lt" => r.0 < s.0,
        "ge" => r.1 > s.0,
        "le" => r.0 < s.1,
        "sa" => r.0 >= s.1,
        "eb" => r.1 <= s.0,
        other => panic!("oracle does not know prefix {other}"),
    }
}

fn split_prefix(q: &str) -> (&str, &str) {
    for p in ["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"] {
        if let Some(rest) = q.strip_prefix(p) {
            return (p, rest);
        }
    }
    ("eq", q)
}

/// Does any value match the (comma-ORed) date query?
fn dates_match(values: &[(i64, i64)], query: &str) -> bool {
    query.split(',').any(|q| {
        let (prefix, text) = split_prefix(q);
        let s = date_range(text).unwrap_or_else(|| panic!("oracle cannot parse date {text}"));
        values.iter().any(|&r| date_prefix_match(prefix, r, s))
    })
}

/// `YYYY-MM-DDThh:mm:ss±hh:mm` of an instant, shown at the given UTC offset (minutes).
fn date_time_text(ms: i64, offset_minutes: i64) -> String {
    let local = ms.div_euclid(1000) + offset_minutes * 60;
    let (y, m, d) = civil_from_days(local.div_euclid(86_400));
    let secs = local.rem_euclid(86_400);
    let zone = if offset_minutes == 0 {
        "Z".to_string()
    } else {
        let sign = if offset_minutes < 0 { '-' } else { '+' };
        format!("{sign}{:02}:{:02}", offset_minutes.abs() / 60, offset_minutes.abs() % 60)
    };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}{zone}", secs / 3600, secs / 60 % 60, secs % 60)
}

// --- numbers and quantities -----------------------------------------------------------------

struct Qty<'a> {
    value: f64,
    system: Option<&'a str>,
    code: Option<&'a str>,
    unit: Option<&'a str>,
}

fn value_quantity(r: &Value) -> Option<Qty<'_>> {
    let q = &r["valueQuantity"];
    Some(Qty {
        value: q["value"].as_f64()?,
        system: q["system"].as_str(),
        code: q["code"].as_str(),
        unit: q["unit"].as_str(),
    })
}

/// `[prefix]number[|system|code]` against a quantity; `eq`/`ne` use the precision of the number
/// as written (`100` is [99.5, 100.5)).
fn quantity_matches(q: &Qty<'_>, query: &str) -> bool {
    let (prefix, rest) = split_prefix(query);
    let mut parts = rest.split('|');
    let number = parts.next().unwrap_or_default();
    let system = parts.next().filter(|s| !s.is_empty());
    let code = parts.next().filter(|s| !s.is_empty());
    let value: f64 = number.parse().unwrap_or_else(|_| panic!("oracle: bad number {number}"));
    let decimals = number.split_once('.').map_or(0, |(_, f)| f.len() as i32);
    let half = 0.5 * 10f64.powi(-decimals);
    let (lo, hi) = (value - half, value + half);
    let v = q.value;
    let number_ok = match prefix {
        "eq" => v >= lo && v < hi,
        "ne" => !(v >= lo && v < hi),
        "gt" | "sa" => v > value,
        "lt" | "eb" => v < value,
        "ge" => v >= value,
        "le" => v <= value,
        other => panic!("oracle does not know prefix {other}"),
    };
    let unit_ok = match (system, code) {
        (Some(s), Some(c)) => q.system == Some(s) && q.code == Some(c),
        (None, Some(c)) => q.code == Some(c) || q.unit == Some(c),
        (Some(s), None) => q.system == Some(s),
        (None, None) => true,
    };
    number_ok && unit_ok
}

// ---------------------------------------------------------------------------------------------
// Queries and the runner
// ---------------------------------------------------------------------------------------------

/// One level of a sort key: a number (dates as epoch ms) or a text (compared bytewise).
#[derive(Debug, Clone, PartialEq, PartialOrd)]
enum SortVal {
    Num(f64),
    Text(String),
}

struct Order {
    /// Per level: descending?
    descending: Vec<bool>,
    /// Sort key per id, one entry per level; None = no value (sorts last at that level).
    keys: HashMap<String, Vec<Option<SortVal>>>,
}

impl Order {
    fn one(descending: bool, keys: HashMap<String, Option<SortVal>>) -> Order {
        Order { descending: vec![descending], keys: keys.into_iter().map(|(k, v)| (k, vec![v])).collect() }
    }

    /// May `a` come before `b`?
    fn allows(&self, a: &[Option<SortVal>], b: &[Option<SortVal>]) -> bool {
        for (level, descending) in self.descending.iter().enumerate() {
            match (a.get(level).cloned().flatten(), b.get(level).cloned().flatten()) {
                (None, None) => {}
                (Some(_), None) => return true,
                (None, Some(_)) => return false,
                (Some(x), Some(y)) if x == y => {}
                (Some(x), Some(y)) => return if *descending { x > y } else { x < y },
            }
        }
        true
    }
}

struct Query {
    kind: &'static str,
    resource_type: String,
    params: Vec<(String, String)>,
    expected: BTreeSet<String>,
    order: Option<Order>,
    /// Page size; by default from the expected count.
    count: Option<usize>,
}

/// Percent-encode a query component (keeping `| , : /` readable).
fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~|,:/".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn query_string(params: &[(String, String)]) -> String {
    params.iter().map(|(k, v)| format!("{}={}", enc(k), enc(v))).collect::<Vec<_>>().join("&")
}

fn readable(resource_type: &str, params: &[(String, String)]) -> String {
    let q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{resource_type}?{}", q.join("&"))
}

/// A page size that pages several times without making large result sets slow.
fn page_size(expected: usize) -> usize {
    if expected <= 120 {
        7
    } else {
        (expected / 6 + 1).min(1000)
    }
}

fn sample(ids: impl IntoIterator<Item = impl std::fmt::Display>) -> String {
    let v: Vec<String> = ids.into_iter().take(4).map(|i| i.to_string()).collect();
    v.join(", ")
}

/// Every page of a search (first URL relative to the base), following `next`.
async fn all_pages(s: &TestServer, path_and_query: &str) -> Result<Vec<Value>, String> {
    let mut url = s.url(path_and_query);
    let mut pages = Vec::new();
    loop {
        let r = s.client.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        if status != 200 {
            return Err(format!(
                "status {status} on page {}: {}",
                pages.len() + 1,
                text.chars().take(300).collect::<String>()
            ));
        }
        let bundle: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
        let next = bundle["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str())
            .map(String::from);
        pages.push(bundle);
        match next {
            Some(n) if pages.len() < 5000 => url = n,
            Some(_) => return Err("more than 5000 pages".into()),
            None => return Ok(pages),
        }
    }
}

fn entries<'a>(page: &'a Value, mode: &'a str) -> impl Iterator<Item = &'a Value> + 'a {
    page["entry"].as_array().into_iter().flatten().filter(move |e| e["search"]["mode"] == mode).map(|e| &e["resource"])
}

/// Compare returned ids with the expected set; every id once.
fn compare(label: &str, returned: &[String], expected: &BTreeSet<String>) -> Option<String> {
    let mut seen = HashSet::new();
    let duplicates: BTreeSet<&String> = returned.iter().filter(|id| !seen.insert(*id)).collect();
    let got: BTreeSet<String> = returned.iter().cloned().collect();
    let missing: Vec<&String> = expected.difference(&got).collect();
    let unexpected: Vec<&String> = got.difference(expected).collect();
    if duplicates.is_empty() && missing.is_empty() && unexpected.is_empty() {
        return None;
    }
    Some(format!(
        "{label}: expected {} ids, got {} ({} distinct); missing {} [{}]; unexpected {} [{}]; duplicated {} [{}]",
        expected.len(),
        returned.len(),
        got.len(),
        missing.len(),
        sample(&missing),
        unexpected.len(),
        sample(&unexpected),
        duplicates.len(),
        sample(&duplicates)
    ))
}

struct Runner<'a> {
    s: &'a TestServer,
    failures: Vec<String>,
    kinds: BTreeMap<&'static str, usize>,
}

impl Runner<'_> {
    fn count(&mut self, kind: &'static str) {
        *self.kinds.entry(kind).or_default() += 1;
    }

    fn fail(&mut self, kind: &str, message: String) {
        self.failures.push(format!("[{kind}] {message}"));
    }

    async fn run(&mut self, q: &Query) {
        self.count(q.kind);
        let mut params = q.params.clone();
        params.push(("_count".into(), q.count.unwrap_or_else(|| page_size(q.expected.len())).to_string()));
        let label = readable(&q.resource_type, &params);
        let t = std::time::Instant::now();
        let pages = match all_pages(self.s, &format!("{}?{}", q.resource_type, query_string(&params))).await {
            Ok(p) => p,
            Err(e) => return self.fail(q.kind, format!("{label}: {e}")),
        };
        if std::env::var_os("PORTICO_ORACLE_VERBOSE").is_some() {
            eprintln!("{label}: {} expected, {} pages, {:.0?}", q.expected.len(), pages.len(), t.elapsed());
        }
        let mut returned = Vec::new();
        for page in &pages {
            for r in entries(page, "match") {
                if r["resourceType"] != q.resource_type.as_str() {
                    self.fail(q.kind, format!("{label}: a {} among the matches", r["resourceType"]));
                }
                returned.push(r["id"].as_str().unwrap_or_default().to_string());
            }
        }
        if let Some(problem) = compare(&label, &returned, &q.expected) {
            return self.fail(q.kind, problem);
        }
        // a total, when reported, is the number of matches
        if let Some(total) = pages.first().and_then(|p| p.get("total")) {
            if total.as_u64() != Some(q.expected.len() as u64) {
                return self.fail(q.kind, format!("{label}: Bundle.total {total}, expected {}", q.expected.len()));
            }
        }
        if let Some(order) = &q.order {
            let keys: Vec<Vec<Option<SortVal>>> =
                returned.iter().map(|id| order.keys.get(id).cloned().unwrap_or_default()).collect();
            for (i, pair) in keys.windows(2).enumerate() {
                if !order.allows(&pair[0], &pair[1]) {
                    return self.fail(
                        q.kind,
                        format!(
                            "{label}: out of order at positions {i}/{}: {} ({:?}) then {} ({:?})",
                            i + 1,
                            returned[i],
                            pair[0],
                            returned[i + 1],
                            pair[1]
                        ),
                    );
                }
            }
        }
    }
}

/// The fixture resources (final content), by type, sorted by id.
struct Data<'a> {
    by_type: BTreeMap<String, Vec<&'a Value>>,
}

impl<'a> Data<'a> {
    fn new(latest: &HashMap<Key, &'a Value>) -> Data<'a> {
        let mut by_type: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for ((t, _), r) in latest {
            by_type.entry(t.clone()).or_default().push(r);
        }
        for v in by_type.values_mut() {
            v.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
        }
        Data { by_type }
    }

    fn all(&self, t: &str) -> &[&'a Value] {
        self.by_type.get(t).map_or(&[], Vec::as_slice)
    }

    fn ids_where(&self, t: &str, pred: impl Fn(&Value) -> bool) -> BTreeSet<String> {
        self.all(t).iter().filter(|r| pred(r)).map(|r| r["id"].as_str().unwrap_or_default().to_string()).collect()
    }

    fn query(&self, kind: &'static str, t: &str, params: &[(&str, &str)], pred: impl Fn(&Value) -> bool) -> Query {
        Query {
            kind,
            resource_type: t.to_string(),
            params: params.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            expected: self.ids_where(t, pred),
            order: None,
            count: None,
        }
    }

    fn keys(&self, t: &str, key: impl Fn(&Value) -> Option<SortVal>) -> HashMap<String, Option<SortVal>> {
        self.all(t).iter().map(|r| (r["id"].as_str().unwrap_or_default().to_string(), key(r))).collect()
    }
}

fn id_of(r: &Value) -> String {
    r["id"].as_str().unwrap_or_default().to_string()
}

/// Most frequent values first (ties by value), from an iterator of occurrences.
fn by_frequency<T: Ord + Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut counts: BTreeMap<T, usize> = BTreeMap::new();
    for i in items {
        *counts.entry(i).or_default() += 1;
    }
    let mut v: Vec<(T, usize)> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.into_iter().map(|(t, _)| t).collect()
}

/// The Patient-compartment links of the fixtures' resource types.
const COMPARTMENT: &[(&str, &str)] = &[
    ("Observation", "subject"),
    ("Encounter", "subject"),
    ("Condition", "subject"),
    ("Claim", "patient"),
    ("ExplanationOfBenefit", "patient"),
    ("Immunization", "patient"),
    ("Procedure", "subject"),
    ("MedicationRequest", "subject"),
    ("DiagnosticReport", "subject"),
    ("CarePlan", "subject"),
    ("AllergyIntolerance", "patient"),
    ("Goal", "subject"),
    ("ImagingStudy", "subject"),
];

// ---------------------------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------------------------

async fn search_matches_oracle(backend: Backend) {
    let Some(dir) = synthea_dir() else { return };
    let started = std::time::Instant::now();
    // The oracle over all 623 bundles takes ~10 minutes; PORTICO_FULL_ORACLE=1 asks for it.
    let files = synthea_files_unless(&dir, DEFAULT_BUNDLES, "PORTICO_FULL_ORACLE");
    let fixtures = Fixtures::load(&files);
    let latest = fixtures.latest();
    for (t, _) in latest.keys() {
        assert!(
            t == "Patient" || t == "Organization" || t == "Practitioner" || COMPARTMENT.iter().any(|(c, _)| c == t),
            "the oracle does not know the compartment of {t}"
        );
    }
    let Some((s, _)) = imported_server(backend, &files).await else { return };
    let imported_at = started.elapsed();
    let data = Data::new(&latest);
    let mut runner = Runner { s: &s, failures: Vec::new(), kinds: BTreeMap::new() };

    let queries = build_queries(&data, &s.base);
    for q in &queries {
        runner.run(q).await;
    }
    special_checks(&mut runner, &data).await;
    partial_and_open_dates(&mut runner).await;
    paging_stability(&mut runner, &data).await;

    let total: usize = runner.kinds.values().sum();
    eprintln!(
        "search oracle ({backend:?}): {total} queries {:?}; import {:.1}s, total {:.1}s",
        runner.kinds,
        imported_at.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(total >= 60, "only {total} queries");
    assert!(
        runner.failures.is_empty(),
        "{} of {total} search checks failed ({backend:?}):\n  {}",
        runner.failures.len(),
        runner.failures.join("\n  ")
    );
}

fn build_queries(data: &Data<'_>, base: &str) -> Vec<Query> {
    let mut qs = Vec::new();
    let patients = data.all("Patient");
    let observations = data.all("Observation");
    assert!(patients.len() >= 8 && observations.len() >= 100, "too few fixtures for the oracle");
    // every 7th patient
    let pids: Vec<String> = patients.iter().step_by(7).map(|p| id_of(p)).collect();
    let pid = |i: usize| pids[i % pids.len()].clone();

    // ---- tokens ----------------------------------------------------------------------------
    let loinc = by_frequency(observations.iter().flat_map(|o| {
        list(&o["code"]["coding"])
            .into_iter()
            .filter(|c| c["system"] == "http://loinc.org")
            .filter_map(|c| c["code"].as_str().map(String::from))
            .collect::<Vec<_>>()
    }));
    assert!(loinc.len() >= 10);
    let top: Vec<String> = loinc[..10].to_vec();
    let obs_code = |o: &Value, q: &str| any_tok(&concept_toks(&o["code"]), q);
    for (i, code) in top.iter().enumerate().take(3) {
        let q = if i == 1 { format!("http://loinc.org|{code}") } else { code.clone() };
        qs.push(data.query("token", "Observation", &[("code", &q)], |o| obs_code(o, &q)));
    }
    let no_system = format!("|{}", top[0]);
    qs.push(data.query("token", "Observation", &[("code", &no_system)], |o| obs_code(o, &no_system)));
    assert!(qs.last().is_some_and(|q| q.expected.is_empty()), "LOINC codings always carry their system");
    qs.push(data.query("token", "Observation", &[("code", "http://loinc.org|")], |o| obs_code(o, "http://loinc.org|")));
    let not = format!("http://loinc.org|{}", top[0]);
    qs.push(data.query("token", "Observation", &[("code:not", &not)], |o| !obs_code(o, &not)));
    let or = format!("{},{},{}", top[3], top[4], top[5]);
    qs.push(data.query("token", "Observation", &[("code", &or)], |o| obs_code(o, &or)));
    let or_sys = format!("http://loinc.org|{},http://loinc.org|{}", top[6], top[7]);
    qs.push(data.query("token", "Observation", &[("code", &or_sys)], |o| obs_code(o, &or_sys)));
    // :text — a prefix of the display of a frequent code, in other case
    for code in [&top[0], &top[8]] {
        let display = observations
            .iter()
            .flat_map(|o| list(&o["code"]["coding"]))
            .find(|c| c["code"] == code.as_str())
            .and_then(|c| c["display"].as_str())
            .unwrap_or("x")
            .to_string();
        let prefix: String = display.chars().take(display.chars().count().min(7)).collect::<String>().to_uppercase();
        qs.push(data.query("token", "Observation", &[("code:text", &prefix)], |o| {
            text_matches(&concept_toks(&o["code"]), &prefix)
        }));
    }
    let category = "http://terminology.hl7.org/CodeSystem/observation-category|laboratory";
    qs.push(data.query("token", "Observation", &[("category", category)], |o| {
        any_tok(&concept_toks(&o["category"]), category)
    }));
    qs.push(data.query("token", "Observation", &[("category", "vital-signs")], |o| {
        any_tok(&concept_toks(&o["category"]), "vital-signs")
    }));
    qs.push(data.query("token", "Patient", &[("gender", "female")], |p| any_tok(&code_toks(&p["gender"]), "female")));
    qs.push(data.query("token", "Patient", &[("gender:not", "male")], |p| !any_tok(&code_toks(&p["gender"]), "male")));
    qs.push(
        data.query("token", "Patient", &[("gender", "male,female")], |p| {
            any_tok(&code_toks(&p["gender"]), "male,female")
        }),
    );
    let some_patients = format!("{},{},{}", pid(0), pid(1), pid(2));
    qs.push(
        data.query("token", "Patient", &[("_id", &some_patients)], |p| some_patients.split(',').any(|i| p["id"] == i)),
    );
    let not_these = format!("{},{}", pid(1), pid(3));
    qs.push(
        data.query("token", "Patient", &[("_id:not", &not_these)], |p| !not_these.split(',').any(|i| p["id"] == i)),
    );
    let some_obs: Vec<String> = observations.iter().step_by(observations.len() / 5).map(|o| id_of(o)).collect();
    let some_obs = some_obs.join(",");
    qs.push(data.query("token", "Observation", &[("_id", &some_obs)], |o| some_obs.split(',').any(|i| o["id"] == i)));

    let conditions = data.all("Condition");
    let snomed = by_frequency(conditions.iter().flat_map(|c| {
        list(&c["code"]["coding"]).into_iter().filter_map(|x| x["code"].as_str().map(String::from)).collect::<Vec<_>>()
    }));
    if let Some(code) = snomed.first() {
        qs.push(data.query("token", "Condition", &[("code", code)], |c| any_tok(&concept_toks(&c["code"]), code)));
    }
    qs.push(data.query("token", "Condition", &[("code", "http://snomed.info/sct|")], |c| {
        any_tok(&concept_toks(&c["code"]), "http://snomed.info/sct|")
    }));
    qs.push(data.query("token", "Condition", &[("code:text", "body mass")], |c| {
        text_matches(&concept_toks(&c["code"]), "body mass")
    }));
    let class = |e: &Value, q: &str| any_tok(&list(&e["class"]).into_iter().map(coding_tok).collect::<Vec<_>>(), q);
    qs.push(data.query("token", "Encounter", &[("class", "EMER")], |e| class(e, "EMER")));
    let classes =
        "http://terminology.hl7.org/CodeSystem/v3-ActCode|IMP,http://terminology.hl7.org/CodeSystem/v3-ActCode|EMER";
    qs.push(data.query("token", "Encounter", &[("class", classes)], |e| class(e, classes)));
    let enc_types = by_frequency(data.all("Encounter").iter().flat_map(|e| {
        concept_toks(&e["type"]).into_iter().filter_map(|t| t.code.map(String::from)).collect::<Vec<_>>()
    }));
    if let Some(t) = enc_types.get(1) {
        qs.push(data.query("token", "Encounter", &[("type", t)], |e| any_tok(&concept_toks(&e["type"]), t)));
    }
    qs.push(data.query("token", "Encounter", &[("type:text", "Encounter for")], |e| {
        text_matches(&concept_toks(&e["type"]), "Encounter for")
    }));
    qs.push(
        data.query("token", "MedicationRequest", &[("status", "active")], |m| {
            any_tok(&code_toks(&m["status"]), "active")
        }),
    );
    qs.push(data.query("token", "MedicationRequest", &[("status:not", "stopped")], |m| {
        !any_tok(&code_toks(&m["status"]), "stopped")
    }));
    let cvx = by_frequency(data.all("Immunization").iter().flat_map(|i| {
        concept_toks(&i["vaccineCode"]).into_iter().filter_map(|t| t.code.map(String::from)).collect::<Vec<_>>()
    }));
    if cvx.len() >= 3 {
        let first = cvx[0].clone();
        qs.push(data.query("token", "Immunization", &[("vaccine-code", &first)], |i| {
            any_tok(&concept_toks(&i["vaccineCode"]), &first)
        }));
        let two = format!("http://hl7.org/fhir/sid/cvx|{},http://hl7.org/fhir/sid/cvx|{}", cvx[1], cvx[2]);
        qs.push(data.query("token", "Immunization", &[("vaccine-code", &two)], |i| {
            any_tok(&concept_toks(&i["vaccineCode"]), &two)
        }));
    }

    // ---- strings -----------------------------------------------------------------------------
    let family_of =
        |i: usize| families(patients[i % patients.len()]).first().map_or("x".to_string(), |f| f.to_string());
    let f3 = family_of(3);
    let f3_prefix: String = f3.chars().take(3).collect::<String>().to_uppercase();
    qs.push(data.query("string", "Patient", &[("family", &f3_prefix)], |p| {
        str_matches(&families(p), StrMode::Prefix, &f3_prefix)
    }));
    let f11 = family_of(11).to_lowercase();
    qs.push(data.query("string", "Patient", &[("family", &f11)], |p| str_matches(&families(p), StrMode::Prefix, &f11)));
    let two_families = format!("{},{}", family_of(19), family_of(26).to_uppercase());
    qs.push(data.query("string", "Patient", &[("family", &two_families)], |p| {
        str_matches(&families(p), StrMode::Prefix, &two_families)
    }));
    qs.push(data.query("string", "Patient", &[("family:exact", &family_of(5))], |p| {
        str_matches(&families(p), StrMode::Exact, &family_of(5))
    }));
    let lower_exact = family_of(5).to_lowercase();
    qs.push(data.query("string", "Patient", &[("family:exact", &lower_exact)], |p| {
        str_matches(&families(p), StrMode::Exact, &lower_exact)
    }));
    let f13 = family_of(13);
    let middle: String = f13.chars().skip(1).take(3).collect::<String>().to_uppercase();
    qs.push(data.query("string", "Patient", &[("family:contains", &middle)], |p| {
        str_matches(&families(p), StrMode::Contains, &middle)
    }));
    // accents: a given or family name with a non-ASCII letter, searched folded and in upper case
    let accented = patients
        .iter()
        .flat_map(|p| name_parts(p))
        .filter(|n| !n.is_ascii())
        .map(String::from)
        .collect::<BTreeSet<_>>();
    if let Some(a) = accented.iter().next() {
        let folded = norm(a);
        let short: String = folded.chars().take(4).collect();
        qs.push(data.query("string", "Patient", &[("name", &folded.to_uppercase())], |p| {
            str_matches(&name_parts(p), StrMode::Prefix, &folded)
        }));
        qs.push(
            data.query("string", "Patient", &[("given", &short)], |p| str_matches(&givens(p), StrMode::Prefix, &short)),
        );
        qs.push(
            data.query("string", "Patient", &[("name:exact", a)], |p| str_matches(&name_parts(p), StrMode::Exact, a)),
        );
        qs.push(data.query("string", "Patient", &[("name:exact", &folded)], |p| {
            str_matches(&name_parts(p), StrMode::Exact, &folded)
        }));
        let accented_query: String = a.to_uppercase();
        qs.push(data.query("string", "Patient", &[("name:contains", &accented_query)], |p| {
            str_matches(&name_parts(p), StrMode::Contains, &accented_query)
        }));
    }
    qs.push(data.query("string", "Patient", &[("name", "MR")], |p| str_matches(&name_parts(p), StrMode::Prefix, "MR")));
    let given8: String = givens(patients[8]).first().map_or("x".into(), |g| g.chars().take(2).collect());
    qs.push(
        data.query("string", "Patient", &[("given", &given8)], |p| str_matches(&givens(p), StrMode::Prefix, &given8)),
    );
    qs.push(data.query("string", "Patient", &[("name:contains", "NGEL")], |p| {
        str_matches(&name_parts(p), StrMode::Contains, "NGEL")
    }));
    let city_list =
        by_frequency(patients.iter().flat_map(|p| cities(p).into_iter().map(String::from).collect::<Vec<_>>()));
    let city = city_list[0].clone();
    qs.push(data.query("string", "Patient", &[("address-city", &city.to_lowercase())], |p| {
        str_matches(&cities(p), StrMode::Prefix, &city)
    }));
    if let Some(spaced) = city_list.iter().find(|c| c.contains(' ')) {
        qs.push(data.query("string", "Patient", &[("address-city:exact", spaced)], |p| {
            str_matches(&cities(p), StrMode::Exact, spaced)
        }));
        let prefix: String = spaced.chars().take(spaced.find(' ').unwrap_or(0) + 2).collect();
        qs.push(data.query("string", "Patient", &[("address-city", &prefix)], |p| {
            str_matches(&cities(p), StrMode::Prefix, &prefix)
        }));
    }
    qs.push(data.query("string", "Patient", &[("address-city:contains", "FIELD")], |p| {
        str_matches(&cities(p), StrMode::Contains, "FIELD")
    }));
    // LIKE wildcards are literal characters in a FHIR string search
    for wild in ["_", "%", "o_", "a%"] {
        qs.push(data.query("string", "Patient", &[("name:contains", wild)], |p| {
            str_matches(&name_parts(p), StrMode::Contains, wild)
        }));
    }
    qs.push(
        data.query("string", "Patient", &[("name", "mrs.")], |p| str_matches(&name_parts(p), StrMode::Prefix, "mrs.")),
    );

    // ---- references --------------------------------------------------------------------------
    let (p0, p1, p2, p3) = (pid(0), pid(1), pid(2), pid(3));
    qs.push(
        data.query("reference", "Observation", &[("patient", &p0)], |o| patient_of(o, "subject") == Some(p0.as_str())),
    );
    qs.push(data.query("reference", "Observation", &[("subject", &format!("Patient/{p1}"))], |o| {
        patient_of(o, "subject") == Some(p1.as_str())
    }));
    qs.push(data.query("reference", "Observation", &[("subject:Patient", &p2)], |o| {
        patient_of(o, "subject") == Some(p2.as_str())
    }));
    qs.push(data.query("reference", "Observation", &[("subject", &format!("{base}/Patient/{p3}"))], |o| {
        patient_of(o, "subject") == Some(p3.as_str())
    }));
    qs.push(data.query("reference", "Claim", &[("patient", &p0)], |c| patient_of(c, "patient") == Some(p0.as_str())));
    let two = format!("{p1},{p2}");
    qs.push(data.query("reference", "Encounter", &[("patient", &two)], |e| {
        patient_of(e, "subject").is_some_and(|id| id == p1 || id == p2)
    }));
    qs.push(data.query("reference", "Observation", &[("subject", &format!("Patient/{p2}/_history/1"))], |o| {
        patient_of(o, "subject") == Some(p2.as_str())
    }));
    let p4 = pid(4);
    qs.push(data.query("reference", "Condition", &[("subject", &format!("Patient/{p4}"))], |c| {
        patient_of(c, "subject") == Some(p4.as_str())
    }));
    let (c0, p0c) = (top[0].clone(), p0.clone());
    qs.push(data.query("reference", "Observation", &[("patient", &p0c), ("code", &c0)], |o| {
        patient_of(o, "subject") == Some(p0c.as_str()) && obs_code(o, &c0)
    }));

    // ---- more parameters: identifiers, contact points, nested and choice paths ------------
    let identifiers = |p: &Value| -> Vec<(Option<String>, Option<String>, Option<String>)> {
        list(&p["identifier"])
            .into_iter()
            .map(|i| {
                (
                    i["system"].as_str().map(String::from),
                    i["value"].as_str().map(String::from),
                    i["type"]["text"].as_str().map(String::from),
                )
            })
            .collect()
    };
    let ssn = identifiers(patients[5]).into_iter().find(|i| i.0.as_deref() == Some("http://hl7.org/fhir/sid/us-ssn"));
    if let Some((Some(system), Some(value), _)) = ssn {
        let q = format!("{system}|{value}");
        qs.push(data.query("token", "Patient", &[("identifier", &q)], |p| {
            identifiers(p)
                .iter()
                .any(|i| i.0.as_deref() == Some(system.as_str()) && i.1.as_deref() == Some(value.as_str()))
        }));
        qs.push(data.query("token", "Patient", &[("identifier", &value)], |p| {
            identifiers(p).iter().any(|i| i.1.as_deref() == Some(value.as_str()))
        }));
    }
    qs.push(data.query("token", "Patient", &[("identifier:text", "DRIVER'S")], |p| {
        identifiers(p).iter().any(|i| i.2.as_deref().is_some_and(|t| norm(t).starts_with("driver's")))
    }));
    let phones = |p: &Value| -> Vec<String> {
        list(&p["telecom"])
            .into_iter()
            .filter(|t| t["system"] == "phone")
            .filter_map(|t| t["value"].as_str().map(String::from))
            .collect()
    };
    if let Some(phone) = phones(patients[6]).first().cloned() {
        qs.push(data.query("token", "Patient", &[("phone", &phone)], |p| phones(p).contains(&phone)));
    }
    // FHIRPath `Patient.deceased.exists() and Patient.deceased != false` is false without a deceased[x]
    let deceased = |p: &Value| p["deceasedDateTime"].is_string() || p["deceasedBoolean"] == true;
    qs.push(data.query("token", "Patient", &[("deceased", "true")], deceased));
    qs.push(data.query("token", "Patient", &[("deceased", "false")], |p| !deceased(p)));
    qs.push(
        data.query("missing", "Patient", &[("death-date:missing", "false")], |p| p["deceasedDateTime"].is_string()),
    );
    let component_codes = by_frequency(observations.iter().flat_map(|o| {
        list(&o["component"])
            .into_iter()
            .flat_map(|c| concept_toks(&c["code"]))
            .filter_map(|t| t.code.map(String::from))
            .collect::<Vec<_>>()
    }));
    if let Some(cc) = component_codes.first().cloned() {
        let in_components =
            |o: &Value, code: &str| list(&o["component"]).into_iter().any(|c| any_tok(&concept_toks(&c["code"]), code));
        qs.push(data.query("token", "Observation", &[("component-code", &cc)], |o| in_components(o, &cc)));
        qs.push(
            data.query("token", "Observation", &[("combo-code", &cc)], |o| in_components(o, &cc) || obs_code(o, &cc)),
        );
    }
    let value_concepts = by_frequency(observations.iter().flat_map(|o| {
        concept_toks(&o["valueCodeableConcept"])
            .into_iter()
            .filter_map(|t| t.code.map(String::from))
            .collect::<Vec<_>>()
    }));
    if let Some(vc) = value_concepts.first().cloned() {
        qs.push(data.query("token", "Observation", &[("value-concept", &vc)], |o| {
            any_tok(&concept_toks(&o["valueCodeableConcept"]), &vc)
        }));
    }
    let meds = by_frequency(data.all("MedicationRequest").iter().flat_map(|m| {
        concept_toks(&m["medicationCodeableConcept"])
            .into_iter()
            .filter_map(|t| t.code.map(String::from))
            .collect::<Vec<_>>()
    }));
    if let Some(med) = meds.first().cloned() {
        qs.push(data.query("token", "MedicationRequest", &[("code", &med)], |m| {
            any_tok(&concept_toks(&m["medicationCodeableConcept"]), &med)
        }));
    }
    qs.push(data.query("token", "Condition", &[("clinical-status", "active")], |c| {
        any_tok(&concept_toks(&c["clinicalStatus"]), "active")
    }));
    let report = data.all("DiagnosticReport").get(3).copied();
    if let Some(result) = report.and_then(|r| refs(r, "result").first().map(|(t, id)| format!("{t}/{id}"))) {
        qs.push(data.query("reference", "DiagnosticReport", &[("result", &result)], |r| {
            refs(r, "result").iter().any(|(t, id)| format!("{t}/{id}") == result)
        }));
    }
    let encounter_ref = observations
        .get(observations.len() / 3)
        .and_then(|o| refs(o, "encounter").first().map(|(t, id)| format!("{t}/{id}")));
    if let Some(enc) = encounter_ref {
        qs.push(data.query("reference", "Observation", &[("encounter", &enc)], |o| {
            refs(o, "encounter").iter().any(|(t, id)| format!("{t}/{id}") == enc)
        }));
    }
    qs.push(data.query("reference", "ExplanationOfBenefit", &[("patient", &pid(2))], |e| {
        patient_of(e, "patient") == Some(pid(2).as_str())
    }));
    qs.push(
        data.query("missing", "Observation", &[("encounter:missing", "true")], |o| refs(o, "encounter").is_empty()),
    );

    // ---- dates -------------------------------------------------------------------------------
    let obs_dates = |o: &Value| choice_dates(o, "effective");
    let mut by_date: Vec<&Value> =
        observations.iter().copied().filter(|o| o["effectiveDateTime"].is_string()).collect();
    by_date.sort_by_key(|o| obs_dates(o).first().map(|r| r.0));
    let d = by_date[by_date.len() / 2]["effectiveDateTime"].as_str().unwrap_or_default().to_string();
    let (year, ym, day) = (d[..4].to_string(), d[..7].to_string(), d[..10].to_string());
    let instant = date_range(&d).map_or(0, |r| r.0);
    let mut obs_date_queries: Vec<Vec<String>> = vec![
        vec![year.clone()],
        vec![format!("eq{ym}")],
        vec![day.clone()],
        vec![format!("ne{year}")],
        vec![format!("gt{ym}")],
        vec![format!("lt{day}")],
        vec![format!("ge{day}")],
        vec![format!("le{ym}")],
        vec![format!("sa{year}")],
        vec![format!("eb{year}")],
        vec![d.clone()],
        vec![format!("eq{}", date_time_text(instant, 0))],
        vec![format!("ge{}", date_time_text(instant, -300))],
        vec![format!("lt{}", date_time_text(instant, 330))],
        vec![format!("gt{}", date_time_text(instant, 0))],
        vec![format!("le{}", d[..16].to_string())],
        vec![format!("le{}", date_time_text(instant, 0))],
        vec![format!("sa{d}")],
        vec![format!("eb{d}")],
        vec![format!("ne{d}")],
        vec![format!("ge{}.500Z", &date_time_text(instant, 0)[..19])],
        vec![format!("lt{}.001Z", &date_time_text(instant, 0)[..19])],
        vec![format!("ge{year}"), format!("lt{}", year.parse::<i32>().unwrap_or(2015) + 1)],
        vec![format!("sa{day}"), format!("eb{}", year.parse::<i32>().unwrap_or(2015) + 2)],
    ];
    for params in obs_date_queries.drain(..) {
        let pairs: Vec<(&str, &str)> = params.iter().map(|v| ("date", v.as_str())).collect();
        qs.push(data.query("date", "Observation", &pairs, |o| params.iter().all(|v| dates_match(&obs_dates(o), v))));
    }
    let ymp = ym.clone();
    qs.push(data.query("date", "Observation", &[("patient", &p0), ("date", &format!("le{ymp}"))], |o| {
        patient_of(o, "subject") == Some(p0.as_str()) && dates_match(&obs_dates(o), &format!("le{ymp}"))
    }));

    let birth = |p: &Value| plain_dates(p, "birthDate");
    let mut by_birth: Vec<&Value> = patients.to_vec();
    by_birth.sort_by_key(|p| p["birthDate"].as_str().map(String::from));
    let b = by_birth[by_birth.len() / 2]["birthDate"].as_str().unwrap_or("1970-01-01").to_string();
    let b_early = by_birth[by_birth.len() / 4]["birthDate"].as_str().unwrap_or("1950-01-01")[..4].to_string();
    for v in [
        b.clone(),
        format!("ne{b}"),
        format!("gt{}", &b[..4]),
        format!("lt{}", &b[..7]),
        format!("ge{b}"),
        format!("le{}", &b[..4]),
        format!("sa{}", &b[..7]),
        format!("eb{}", &b[..4]),
        format!("eq{}", &b[..4]),
        format!("{},{}", &b[..7], by_birth[0]["birthDate"].as_str().unwrap_or("1900")),
    ] {
        qs.push(data.query("date", "Patient", &[("birthdate", &v)], |p| dates_match(&birth(p), &v)));
    }
    let (lo, hi) = (format!("ge{b_early}"), format!("lt{}", &b[..4]));
    qs.push(data.query("date", "Patient", &[("birthdate", &lo), ("birthdate", &hi)], |p| {
        dates_match(&birth(p), &lo) && dates_match(&birth(p), &hi)
    }));

    let encounters = data.all("Encounter");
    let enc_dates = |e: &Value| period_range(&e["period"]).into_iter().collect::<Vec<_>>();
    let mut by_start: Vec<&Value> = encounters.to_vec();
    by_start.sort_by_key(|e| enc_dates(e).first().map(|r| r.0));
    let e = by_start[by_start.len() / 2];
    let start = e["period"]["start"].as_str().unwrap_or("2015-01-01T00:00:00Z").to_string();
    let start_ms = date_range(&start).map_or(0, |r| r.0);
    let end = e["period"]["end"].as_str().unwrap_or("2015-01-01T00:00:00Z").to_string();
    let (ey, eym, eday) = (start[..4].to_string(), start[..7].to_string(), start[..10].to_string());
    let next_year = ey.parse::<i32>().unwrap_or(2015) + 1;
    for vs in [
        vec![eday.clone()],
        vec![format!("eq{eym}")],
        vec![format!("ne{eday}")],
        vec![format!("gt{ey}")],
        vec![format!("lt{eym}")],
        vec![format!("ge{eday}")],
        vec![format!("le{eday}")],
        vec![format!("sa{ey}")],
        vec![format!("eb{ey}")],
        vec![start.clone()],
        vec![format!("eb{start}")],
        vec![format!("lt{start}")],
        vec![format!("sa{end}")],
        vec![format!("gt{end}")],
        vec![format!("ge{end}")],
        vec![format!("ge{}", date_time_text(start_ms + 60_000, 0))],
        vec![format!("le{}", date_time_text(start_ms, 120))],
        vec![format!("ge{ey}"), format!("lt{next_year}")],
    ] {
        let pairs: Vec<(&str, &str)> = vs.iter().map(|v| ("date", v.as_str())).collect();
        qs.push(data.query("date", "Encounter", &pairs, |e| vs.iter().all(|v| dates_match(&enc_dates(e), v))));
    }
    let proc_dates = |p: &Value| choice_dates(p, "performed");
    let procedures = data.all("Procedure");
    let proc_day = procedures
        .get(procedures.len() / 3)
        .and_then(|p| p["performedPeriod"]["start"].as_str().or(p["performedDateTime"].as_str()))
        .map_or("2015-01-01".to_string(), |d| d[..10].to_string());
    for v in [format!("ge{eym}"), format!("lt{ey}"), format!("eq{eday}"), proc_day.clone(), format!("le{proc_day}")] {
        qs.push(data.query("date", "Procedure", &[("date", &v)], |p| dates_match(&proc_dates(p), &v)));
    }
    for v in [format!("ge{ey}"), format!("le{eym}")] {
        qs.push(data.query("date", "MedicationRequest", &[("authoredon", &v)], |m| {
            dates_match(&plain_dates(m, "authoredOn"), &v)
        }));
    }
    qs.push(data.query("date", "Immunization", &[("date", &ey)], |i| dates_match(&choice_dates(i, "occurrence"), &ey)));
    let created = format!("ge{eym}");
    qs.push(
        data.query("date", "Claim", &[("created", &created)], |c| dates_match(&plain_dates(c, "created"), &created)),
    );
    let onset = format!("lt{ey}");
    qs.push(
        data.query("date", "Condition", &[("onset-date", &onset)], |c| dates_match(&choice_dates(c, "onset"), &onset)),
    );

    // ---- quantities --------------------------------------------------------------------------
    let mut mgdl: Vec<&Value> =
        observations.iter().copied().filter(|o| value_quantity(o).is_some_and(|q| q.code == Some("mg/dL"))).collect();
    mgdl.sort_by(|a, b| {
        let (x, y) = (value_quantity(a).map_or(0.0, |q| q.value), value_quantity(b).map_or(0.0, |q| q.value));
        x.total_cmp(&y)
    });
    let mid = mgdl.get(mgdl.len() / 2).copied();
    // the median mg/dL value as written in the data (its JSON text)
    let written = mid.map_or("100".to_string(), |o| o["valueQuantity"]["value"].to_string());
    let as_number: f64 = written.parse().unwrap_or(100.0);
    let rounded = format!("{}", as_number.round());
    let one_decimal = format!("{:.1}", as_number);
    let vq = |o: &Value, q: &str| value_quantity(o).is_some_and(|x| q.split(',').any(|v| quantity_matches(&x, v)));
    for v in [
        "gt100".to_string(),
        "gt1e2".to_string(),
        "lt0.55e1".to_string(),
        "lt5.5".to_string(),
        format!("ge{written}"),
        format!("le{written}"),
        format!("gt{written}"),
        rounded.clone(),
        format!("ne{rounded}"),
        format!("eq{one_decimal}"),
        format!("{one_decimal}|http://unitsofmeasure.org|mg/dL"),
        "gt100|http://unitsofmeasure.org|mg/dL".to_string(),
        "lt5.5||mmol/L".to_string(),
        "ge10|http://unitsofmeasure.org|".to_string(),
        format!("{rounded},lt1"),
    ] {
        qs.push(data.query("quantity", "Observation", &[("value-quantity", &v)], |o| vq(o, &v)));
    }
    qs.push(data.query("quantity", "Observation", &[("value-quantity", "ge50"), ("value-quantity", "lt80")], |o| {
        vq(o, "ge50") && vq(o, "lt80")
    }));

    // ---- :missing ----------------------------------------------------------------------------
    qs.push(
        data.query("missing", "Observation", &[("value-quantity:missing", "true")], |o| value_quantity(o).is_none()),
    );
    qs.push(
        data.query("missing", "Observation", &[("value-quantity:missing", "false")], |o| value_quantity(o).is_some()),
    );
    qs.push(data.query("missing", "Condition", &[("abatement-date:missing", "true")], |c| {
        choice_dates(c, "abatement").is_empty()
    }));
    qs.push(data.query("missing", "Encounter", &[("reason-code:missing", "false")], |e| {
        !concept_toks(&e["reasonCode"]).is_empty()
    }));
    qs.push(data.query("missing", "Patient", &[("family:missing", "false"), ("gender", "male")], |p| {
        !families(p).is_empty() && p["gender"] == "male"
    }));

    // ---- _lastUpdated ------------------------------------------------------------------------
    qs.push(data.query("_lastUpdated", "Observation", &[("_lastUpdated", "gt2000-01-01")], |_| true));
    qs.push(data.query("_lastUpdated", "Patient", &[("_lastUpdated", "gt2000-01-01")], |_| true));
    qs.push(data.query("_lastUpdated", "Patient", &[("_lastUpdated", "lt2000-01-01")], |_| false));

    // ---- _sort -------------------------------------------------------------------------------
    let asc_start = |v: Vec<(i64, i64)>| v.iter().map(|r| r.0).min().map(|x| SortVal::Num(x as f64));
    let desc_end = |v: Vec<(i64, i64)>| v.iter().map(|r| r.1).max().map(|x| SortVal::Num(x as f64));
    let mut q = data.query("_sort", "Patient", &[("_sort", "birthdate")], |_| true);
    q.order = Some(Order::one(false, data.keys("Patient", |p| asc_start(birth(p)))));
    qs.push(q);
    let mut q =
        data.query("_sort", "Patient", &[("_sort", "-birthdate"), ("gender", "female")], |p| p["gender"] == "female");
    q.order = Some(Order::one(true, data.keys("Patient", |p| desc_end(birth(p)))));
    qs.push(q);
    let mut q = data.query("_sort", "Observation", &[("patient", &p1), ("_sort", "-date")], |o| {
        patient_of(o, "subject") == Some(p1.as_str())
    });
    q.order = Some(Order::one(true, data.keys("Observation", |o| desc_end(obs_dates(o)))));
    qs.push(q);
    let mut q = data.query("_sort", "Observation", &[("patient", &p3), ("_sort", "date")], |o| {
        patient_of(o, "subject") == Some(p3.as_str())
    });
    q.order = Some(Order::one(false, data.keys("Observation", |o| asc_start(obs_dates(o)))));
    q.count = Some(1);
    qs.push(q);
    let mut q = data.query("_sort", "Observation", &[("_sort", "-date")], |_| true);
    q.order = Some(Order::one(true, data.keys("Observation", |o| desc_end(obs_dates(o)))));
    qs.push(q);
    let mut q = data.query("_sort", "Condition", &[("_sort", "abatement-date")], |_| true);
    q.order = Some(Order::one(false, data.keys("Condition", |c| asc_start(choice_dates(c, "abatement")))));
    qs.push(q);
    let mut q = data.query("_sort", "Observation", &[("patient", &p2), ("_sort", "-value-quantity")], |o| {
        patient_of(o, "subject") == Some(p2.as_str())
    });
    q.order = Some(Order::one(true, data.keys("Observation", |o| value_quantity(o).map(|x| SortVal::Num(x.value)))));
    qs.push(q);
    let mut q = data.query("_sort", "Encounter", &[("patient", &p3), ("_sort", "date")], |e| {
        patient_of(e, "subject") == Some(p3.as_str())
    });
    q.order = Some(Order::one(false, data.keys("Encounter", |e| asc_start(enc_dates(e)))));
    qs.push(q);
    // strings sort by their normalized form: the smallest (ascending) or largest (descending)
    let family_key = |p: &Value, descending: bool| {
        let normalized = families(p).into_iter().map(norm);
        if descending { normalized.max() } else { normalized.min() }.map(SortVal::Text)
    };
    let mut q = data.query("_sort", "Patient", &[("_sort", "family")], |_| true);
    q.order = Some(Order::one(false, data.keys("Patient", |p| family_key(p, false))));
    qs.push(q);
    let mut q = data.query("_sort", "Patient", &[("_sort", "-family")], |_| true);
    q.order = Some(Order::one(true, data.keys("Patient", |p| family_key(p, true))));
    qs.push(q);
    // two keys: a token (smallest code) then a date, descending
    let mut q = data.query("_sort", "Patient", &[("_sort", "gender,-birthdate")], |_| true);
    q.order = Some(Order {
        descending: vec![false, true],
        keys: patients
            .iter()
            .map(|p| (id_of(p), vec![p["gender"].as_str().map(|g| SortVal::Text(g.to_string())), desc_end(birth(p))]))
            .collect(),
    });
    q.count = Some(3);
    qs.push(q);
    let mut q = data.query("_sort", "Observation", &[("patient", &p0), ("_sort", "code,-date")], |o| {
        patient_of(o, "subject") == Some(p0.as_str())
    });
    q.order = Some(Order {
        descending: vec![false, true],
        keys: observations
            .iter()
            .map(|o| {
                let code = concept_toks(&o["code"])
                    .into_iter()
                    .filter_map(|t| t.code)
                    .min()
                    .map(|c| SortVal::Text(c.to_string()));
                (id_of(o), vec![code, desc_end(obs_dates(o))])
            })
            .collect(),
    });
    qs.push(q);

    qs
}

/// `_total`, `_summary=count`, `_include`, `_revinclude`, `$everything`.
async fn special_checks(runner: &mut Runner<'_>, data: &Data<'_>) {
    let s = runner.s;
    let observations = data.all("Observation");
    let patients = data.all("Patient");
    let top = by_frequency(observations.iter().flat_map(|o| {
        list(&o["code"]["coding"]).into_iter().filter_map(|c| c["code"].as_str().map(String::from)).collect::<Vec<_>>()
    }));
    let code_ids = |code: &str| data.ids_where("Observation", |o| any_tok(&concept_toks(&o["code"]), code));

    // _total=accurate on a paged search
    runner.count("_total");
    let expected = code_ids(&top[0]);
    let (status, page) = s.get(&format!("Observation?code={}&_total=accurate&_count=7", top[0])).await;
    if status != 200 || page["total"].as_u64() != Some(expected.len() as u64) {
        runner.fail(
            "_total",
            format!(
                "Observation?code={}&_total=accurate: status {status}, total {} (expected {})",
                top[0],
                page["total"],
                expected.len()
            ),
        );
    }
    // _summary=count
    for (path, expected) in [
        (format!("Observation?code={}&_summary=count", top[1]), code_ids(&top[1]).len()),
        ("Patient?gender=male&_summary=count".to_string(), data.ids_where("Patient", |p| p["gender"] == "male").len()),
        ("Encounter?_summary=count".to_string(), data.all("Encounter").len()),
    ] {
        runner.count("_summary=count");
        let (status, bundle) = s.get(&path).await;
        let entries = bundle["entry"].as_array().map_or(0, Vec::len);
        if status != 200 || bundle["total"].as_u64() != Some(expected as u64) || entries != 0 {
            runner.fail(
                "_summary=count",
                format!(
                    "{path}: status {status}, total {}, {entries} entries (expected total {expected})",
                    bundle["total"]
                ),
            );
        }
    }

    // _include=Observation:patient: each page includes exactly the patients its matches point to
    let subject_of: HashMap<String, String> =
        observations.iter().filter_map(|o| Some((id_of(o), patient_of(o, "subject")?.to_string()))).collect();
    for code in [&top[2], &top[9]] {
        runner.count("_include");
        let expected = code_ids(code);
        let path = format!("Observation?code={code}&_include=Observation:patient&_count={}", page_size(expected.len()));
        match all_pages(s, &path).await {
            Err(e) => runner.fail("_include", format!("{path}: {e}")),
            Ok(pages) => {
                let mut matched = Vec::new();
                for (n, page) in pages.iter().enumerate() {
                    let ids: Vec<String> = entries(page, "match").map(id_of).collect();
                    let want: BTreeSet<String> = ids.iter().filter_map(|id| subject_of.get(id).cloned()).collect();
                    let included: Vec<String> =
                        entries(page, "include")
                            .map(|r| {
                                if r["resourceType"] == "Patient" {
                                    id_of(r)
                                } else {
                                    format!("{}?", r["resourceType"])
                                }
                            })
                            .collect();
                    if let Some(p) = compare(&format!("{path} page {} includes", n + 1), &included, &want) {
                        runner.fail("_include", p);
                    }
                    matched.extend(ids);
                }
                if let Some(p) = compare(&path, &matched, &expected) {
                    runner.fail("_include", p);
                }
            }
        }
    }

    // _revinclude=Observation:patient: each page includes exactly its patients' observations
    let mut obs_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (o, p) in &subject_of {
        obs_of.entry(p.clone()).or_default().insert(o.clone());
    }
    let picks: Vec<String> = patients.iter().skip(1).step_by(9).map(|p| id_of(p)).collect();
    for (ids, count) in [(picks[..1].to_vec(), 7), (picks.clone(), 1)] {
        runner.count("_revinclude");
        let path = format!("Patient?_id={}&_revinclude=Observation:patient&_count={count}", ids.join(","));
        match all_pages(s, &path).await {
            Err(e) => runner.fail("_revinclude", format!("{path}: {e}")),
            Ok(pages) => {
                let mut matched = Vec::new();
                for (n, page) in pages.iter().enumerate() {
                    let ps: Vec<String> = entries(page, "match").map(id_of).collect();
                    let want: BTreeSet<String> =
                        ps.iter().flat_map(|p| obs_of.get(p).cloned().unwrap_or_default()).collect();
                    let included: Vec<String> = entries(page, "include")
                        .map(|r| {
                            if r["resourceType"] == "Observation" {
                                id_of(r)
                            } else {
                                format!("{}?", r["resourceType"])
                            }
                        })
                        .collect();
                    if let Some(p) = compare(&format!("{path} page {} includes", n + 1), &included, &want) {
                        runner.fail("_revinclude", p);
                    }
                    matched.extend(ps);
                }
                if let Some(p) = compare(&path, &matched, &ids.iter().cloned().collect()) {
                    runner.fail("_revinclude", p);
                }
            }
        }
    }

    // $everything: the compartment (by the oracle's links) plus referenced practitioners/orgs
    for p in patients.iter().step_by(13) {
        runner.count("$everything");
        let pid = id_of(p);
        let mut expected: BTreeSet<String> = BTreeSet::from([format!("Patient/{pid}")]);
        let mut referenced: HashSet<String> = HashSet::new();
        for (t, field) in COMPARTMENT {
            for r in data.all(t) {
                if patient_of(r, field) == Some(pid.as_str()) {
                    expected.insert(format!("{t}/{}", id_of(r)));
                    let mut refs = Vec::new();
                    all_references(r, &mut refs);
                    referenced.extend(refs.into_iter().map(String::from));
                }
            }
        }
        let path = format!("Patient/{pid}/$everything?_count=50");
        match all_pages(s, &path).await {
            Err(e) => runner.fail("$everything", format!("{path}: {e}")),
            Ok(pages) => {
                let mut matched = Vec::new();
                let mut included = Vec::new();
                for page in &pages {
                    matched.extend(
                        entries(page, "match")
                            .map(|r| format!("{}/{}", r["resourceType"].as_str().unwrap_or("?"), id_of(r))),
                    );
                    included.extend(
                        entries(page, "include")
                            .map(|r| format!("{}/{}", r["resourceType"].as_str().unwrap_or("?"), id_of(r))),
                    );
                }
                if let Some(problem) = compare(&path, &matched, &expected) {
                    runner.fail("$everything", problem);
                }
                let bad: Vec<&String> = included
                    .iter()
                    .filter(|k| {
                        !(k.starts_with("Practitioner/") || k.starts_with("Organization/"))
                            || !referenced.contains(k.as_str())
                    })
                    .collect();
                if !bad.is_empty() {
                    runner.fail(
                        "$everything",
                        format!(
                            "{path}: {} included resources not referenced by the compartment: [{}]",
                            bad.len(),
                            sample(&bad)
                        ),
                    );
                }
                if included.is_empty()
                    && referenced.iter().any(|r| r.starts_with("Practitioner/") || r.starts_with("Organization/"))
                {
                    runner.fail("$everything", format!("{path}: no Practitioner/Organization included"));
                }
            }
        }
    }
}

/// Date precision and open Periods, which the fixtures lack: a few resources created here.
async fn partial_and_open_dates(runner: &mut Runner<'_>) {
    let s = runner.s;
    let mut created: Vec<Value> = Vec::new();
    let post = |body: Value| async move {
        let (status, _, r) = s.post(body["resourceType"].as_str().unwrap_or_default(), &body).await;
        assert_eq!(status, 201, "create {body}: {r}");
        r
    };
    let patient = |birth: Option<&str>| {
        let mut p = json!({"resourceType": "Patient", "name": [{"family": "Oraclesynth"}]});
        if let Some(b) = birth {
            p["birthDate"] = json!(b);
        }
        p
    };
    for birth in [Some("1980"), Some("1980-06"), Some("1980-06-15"), None] {
        created.push(post(patient(birth)).await);
    }
    let pid = id_of(&created[0]);
    let encounter = |period: Option<Value>| {
        let mut e = json!({"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{pid}")}});
        if let Some(p) = period {
            e["period"] = p;
        }
        e
    };
    for period in [
        Some(json!({"start": "2015-03-01T10:00:00Z"})),
        Some(json!({"end": "2015-03-01T10:00:00Z"})),
        Some(json!({"start": "2015-03-01", "end": "2015-03-01"})),
        Some(json!({"start": "2015-03-01T10:00:00.250+01:00", "end": "2015-03-01T10:00:00.250+01:00"})),
        Some(json!({"start": "2015-02-28T23:30:00-01:00", "end": "2015-03-02T00:00:00+00:00"})),
        None,
    ] {
        created.push(post(encounter(period)).await);
    }
    let latest: HashMap<Key, &Value> = created.iter().map(|r| (crate::fixtures::key_of(r), r)).collect();
    let data = Data::new(&latest);
    let birth = |p: &Value| plain_dates(p, "birthDate");
    for v in [
        "1980",
        "1980-06",
        "1980-06-15",
        "ne1980-06-15",
        "gt1980-06-15",
        "lt1980-06-15",
        "ge1980-06",
        "le1980-06-15",
        "sa1979",
        "eb1981",
        "sa1980-06-14",
        "eq1980-06-15T10:00:00Z",
    ] {
        runner
            .run(&data.query("date", "Patient", &[("family", "oraclesynth"), ("birthdate", v)], |p| {
                dates_match(&birth(p), v)
            }))
            .await;
    }
    runner
        .run(&data.query("missing", "Patient", &[("family", "oraclesynth"), ("birthdate:missing", "true")], |p| {
            birth(p).is_empty()
        }))
        .await;
    let subject = format!("Patient/{pid}");
    let dates = |e: &Value| period_range(&e["period"]).into_iter().collect::<Vec<_>>();
    for v in [
        "2015",
        "2015-03-01",
        "ne2015-03-01",
        "gt2015-03-01",
        "lt2015-03-01",
        "ge2015-03-01T10:00:00Z",
        "le2015-03-01T09:00:00Z",
        "sa2014",
        "eb2016",
        "sa2015-03-01",
        "eb2015-03-01",
        "gt2099",
        "lt1900",
        "2015-03-01T09:00:00.250Z",
        "2015-03-01T09:00:00Z",
    ] {
        runner
            .run(&data.query("date", "Encounter", &[("subject", &subject), ("date", v)], |e| dates_match(&dates(e), v)))
            .await;
    }
    runner
        .run(
            &data.query("missing", "Encounter", &[("subject", &subject), ("date:missing", "true")], |e| {
                dates(e).is_empty()
            }),
        )
        .await;
}

/// Page 1, then a create and an update, then the remaining pages: each original match once.
async fn paging_stability(runner: &mut Runner<'_>, data: &Data<'_>) {
    let s = runner.s;
    let observations = data.all("Observation");
    let codes = by_frequency(observations.iter().flat_map(|o| {
        list(&o["code"]["coding"]).into_iter().filter_map(|c| c["code"].as_str().map(String::from)).collect::<Vec<_>>()
    }));
    let count_of = |code: &str| data.ids_where("Observation", |o| any_tok(&concept_toks(&o["code"]), code)).len();
    // frequent codes, but with few enough matches to page through five at a time
    let mut top: Vec<String> = codes.iter().filter(|c| (20..=400).contains(&count_of(c))).take(4).cloned().collect();
    top.extend(codes.iter().take(4).cloned());
    let pid = id_of(data.all("Patient")[0]);
    for (n, (code, sort)) in [(&top[0], None), (&top[1], Some("-date")), (&top[3], Some("_id"))].into_iter().enumerate()
    {
        runner.count("paging");
        let expected = data.ids_where("Observation", |o| any_tok(&concept_toks(&o["code"]), code));
        let mut path = format!("Observation?code={code}&_count=5");
        if let Some(sort) = sort {
            path.push_str(&format!("&_sort={sort}"));
        }
        let (status, first) = s.get(&path).await;
        if status != 200 {
            runner.fail("paging", format!("{path}: status {status}"));
            continue;
        }
        let mut returned: Vec<String> = entries(&first, "match").map(id_of).collect();
        let next = first["link"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|l| l["relation"] == "next")
            .and_then(|l| l["url"].as_str());
        let Some(next) = next.map(String::from) else {
            runner.fail("paging", format!("{path}: no next link for {} matches", expected.len()));
            continue;
        };
        // a new matching resource, dated in the middle of the data
        let new = json!({"resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "subject": {"reference": format!("Patient/{pid}")}, "effectiveDateTime": "2015-06-15T12:00:00Z"});
        let (status, _, created) = s.post("Observation", &new).await;
        let new_id = id_of(&created);
        if status != 201 {
            runner.fail("paging", format!("create: status {status}"));
        }
        // update an already returned one (still matching, same date), and one not yet returned
        let not_yet: Vec<&String> = expected.iter().filter(|id| !returned.contains(id)).collect();
        for id in
            [returned.get(1 + n).cloned(), not_yet.get(not_yet.len() / 2).map(|s| s.to_string())].into_iter().flatten()
        {
            let (_, mut current) = s.get(&format!("Observation/{id}")).await;
            current["status"] = json!("amended");
            let (status, _, _) = s.put(&format!("Observation/{id}"), &current).await;
            if status != 200 {
                runner.fail("paging", format!("update Observation/{id}: status {status}"));
            }
        }
        match all_pages(s, next.strip_prefix(&format!("{}/", s.base)).unwrap_or(&next)).await {
            Err(e) => runner.fail("paging", format!("{path} (after page 1): {e}")),
            Ok(pages) => {
                for page in &pages {
                    returned.extend(entries(page, "match").map(id_of));
                }
                let without_new: Vec<String> = returned.iter().filter(|id| **id != new_id).cloned().collect();
                if let Some(p) =
                    compare(&format!("{path} with a create and updates between pages"), &without_new, &expected)
                {
                    runner.fail("paging", p);
                }
                if returned.iter().filter(|id| **id == new_id).count() > 1 {
                    runner.fail("paging", format!("{path}: the new resource was returned twice"));
                }
            }
        }
    }
}

#[cfg(test)]
mod oracle_self_tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(date_range("1970"), Some((0, 365 * DAY)));
        assert_eq!(date_range("1970-02"), Some((31 * DAY, 59 * DAY)));
        assert_eq!(date_range("2016-02-29").map(|r| r.1 - r.0), Some(DAY));
        assert_eq!(date_range("1970-01-01T01:00:00+01:00"), Some((0, 1000)));
        assert_eq!(date_range("1970-01-01T00:00:00.250Z"), Some((250, 251)));
        assert_eq!(date_range("1970-01-01T00:01"), Some((60_000, 120_000)));
        assert_eq!(date_range("1969-12-31"), Some((-DAY, 0)));
        assert_eq!(date_time_text(0, -300), "1969-12-31T19:00:00-05:00");
        assert_eq!(date_range(&date_time_text(1_434_369_600_000, 330)).map(|r| r.0), Some(1_434_369_600_000));
        for days in [-1000, 0, 59, 365 * 45 + 11, 20_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn strings_and_numbers() {
        assert_eq!(norm("Ángela Guzmán"), "angela guzman");
        let q =
            Qty { value: 99.7, system: Some("http://unitsofmeasure.org"), code: Some("mg/dL"), unit: Some("mg/dL") };
        assert!(quantity_matches(&q, "100"));
        assert!(!quantity_matches(&q, "100.0"));
        assert!(quantity_matches(&q, "gt99|http://unitsofmeasure.org|mg/dL"));
        assert!(quantity_matches(&q, "lt100||mg/dL"));
        assert!(!quantity_matches(&q, "lt100||mmol/L"));
        let toks = [Tok { system: Some("http://loinc.org"), code: Some("1-8"), text: Some("Body Height") }];
        assert!(tok_matches(&toks, "1-8") && tok_matches(&toks, "http://loinc.org|") && !tok_matches(&toks, "|1-8"));
        assert!(text_matches(&toks, "BODY h"));
    }
}
