//! SMART App Launch 2.x scopes: parsing, canonical printing, subset and intersection rules, and
//! the access check the FHIR API asks ("may this token search Observations, and under which
//! granular filters?").
//!
//! Syntax (<https://build.fhir.org/ig/HL7/smart-app-launch/scopes-and-launch-context.html>):
//! `(patient|user|system)/(ResourceType|*).(read|write|*  or v2  [c][r][u][d][s])[?param=value(&param=value)*]`
//! plus the non-clinical `openid fhirUser profile launch launch/patient launch/encounter
//! offline_access online_access`. Anything else is dropped and reported, never an error: the spec
//! lets a server grant fewer scopes than requested, and a client asking for a scope we do not know
//! must still be able to sign in.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::r4::is_r4_resource_type;

/// Whose data a clinical scope reaches: the patient in context, whatever the signed-in user may
/// see, or (backend services) anything the client is configured for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Context {
    Patient,
    User,
    System,
}

impl Context {
    pub fn as_str(self) -> &'static str {
        match self {
            Context::Patient => "patient",
            Context::User => "user",
            Context::System => "system",
        }
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Context {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "patient" => Ok(Context::Patient),
            "user" => Ok(Context::User),
            "system" => Ok(Context::System),
            _ => Err(()),
        }
    }
}

/// The five FHIR REST interactions SMART v2 permissions distinguish. History and `vread` count as
/// Read, `_search` and `$everything`-style reads of many resources as Search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    pub const ALL: [Interaction; 5] =
        [Interaction::Create, Interaction::Read, Interaction::Update, Interaction::Delete, Interaction::Search];

    /// The v2 permission letter.
    pub fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }
}

/// A set of [`Interaction`]s, as a bitset. Always printed in the spec's `cruds` order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    pub const NONE: Permissions = Permissions(0);
    /// v1 `read`: SMART v2 maps it to `rs`.
    pub const READ: Permissions = Permissions(2 | 16);
    /// v1 `write`: SMART v2 maps it to `cud`.
    pub const WRITE: Permissions = Permissions(1 | 4 | 8);
    /// v1 `*`: everything, `cruds`.
    pub const ALL: Permissions = Permissions(1 | 2 | 4 | 8 | 16);

    pub fn of(interactions: &[Interaction]) -> Permissions {
        Permissions(interactions.iter().fold(0, |bits, i| bits | i.bit()))
    }

    pub fn allows(self, interaction: Interaction) -> bool {
        self.0 & interaction.bit() != 0
    }

    /// Does `self` grant everything `other` does?
    pub fn contains(self, other: Permissions) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn intersection(self, other: Permissions) -> Permissions {
        Permissions(self.0 & other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The interactions granted, in `cruds` order.
    pub fn interactions(self) -> impl Iterator<Item = Interaction> {
        Interaction::ALL.into_iter().filter(move |i| self.allows(*i))
    }

    /// Parse v2 letters: a non-empty subset of `cruds` in that order, no repeats. Anything else
    /// (`rc`, `rr`, `x`) is `None`, because the spec fixes the order so scopes compare as text.
    pub fn from_v2(text: &str) -> Option<Permissions> {
        if text.is_empty() {
            return None;
        }
        let mut bits = 0u8;
        let mut next = 0usize;
        for c in text.chars() {
            let pos = Interaction::ALL[next..].iter().position(|i| i.letter() == c)?;
            bits |= Interaction::ALL[next + pos].bit();
            next += pos + 1;
        }
        Some(Permissions(bits))
    }

    /// The v2 letters, e.g. `rs`.
    pub fn to_v2(self) -> String {
        self.interactions().map(Interaction::letter).collect()
    }

    /// The v1 word with exactly these permissions, if there is one.
    pub fn v1_word(self) -> Option<&'static str> {
        match self {
            Permissions::READ => Some("read"),
            Permissions::WRITE => Some("write"),
            Permissions::ALL => Some("*"),
            _ => None,
        }
    }
}

/// Which spelling the client used, so we echo `patient/Observation.read` back to a v1 client that
/// may compare the granted scope string with what it asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Spelling {
    V1,
    V2,
}

/// The resource part of a clinical scope.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ScopeResource {
    /// `*`: every resource type.
    Any,
    /// One R4 resource type name.
    Type(String),
}

impl ScopeResource {
    pub fn matches(&self, resource_type: &str) -> bool {
        match self {
            ScopeResource::Any => true,
            ScopeResource::Type(t) => t == resource_type,
        }
    }

    /// Does `self` reach every type `other` does?
    fn covers(&self, other: &ScopeResource) -> bool {
        match (self, other) {
            (ScopeResource::Any, _) => true,
            (ScopeResource::Type(a), ScopeResource::Type(b)) => a == b,
            (ScopeResource::Type(_), ScopeResource::Any) => false,
        }
    }
}

impl fmt::Display for ScopeResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeResource::Any => f.write_str("*"),
            ScopeResource::Type(t) => f.write_str(t),
        }
    }
}

/// One `param=value` of a granular scope. The value is kept as written (token values usually are
/// `system|code`); a comma-separated value means "any of", as in FHIR search.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryParam {
    pub name: String,
    pub value: String,
}

impl QueryParam {
    /// The alternatives of a comma-separated value.
    pub fn alternatives(&self) -> impl Iterator<Item = &str> {
        self.value.split(',')
    }

    /// Does every resource matching `self` also match `other`? Same parameter, and each of our
    /// alternatives is one of theirs (`category=a` implies `category=a,b`).
    fn implies(&self, other: &QueryParam) -> bool {
        self.name == other.name && self.alternatives().all(|a| other.alternatives().any(|b| a == b))
    }
}

/// A granular scope's query: resources must match every parameter (`&` is AND, as in FHIR
/// search). `raw` is the text after `?`, kept so the granted scope echoes what was asked.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QueryFilter {
    pub raw: String,
    pub params: Vec<QueryParam>,
}

impl QueryFilter {
    /// Parse the text after `?`. `None` when any part is not `name=value` with both non-empty.
    ///
    /// Values are not percent-decoded: the scope string has already been form-decoded once by the
    /// HTTP layer, and the spec writes `|` literally (it is a legal scope character).
    pub fn parse(raw: &str) -> Option<QueryFilter> {
        let mut params = Vec::new();
        for part in raw.split('&') {
            let (name, value) = part.split_once('=')?;
            let name_ok = !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b':' | b'.'));
            if !name_ok || value.is_empty() || value.contains(['?', '=']) {
                return None;
            }
            params.push(QueryParam { name: name.to_owned(), value: value.to_owned() });
        }
        Some(QueryFilter { raw: raw.to_owned(), params })
    }

    /// Does every resource matching `self` also match `other` (is `self` at least as narrow)?
    pub fn implies(&self, other: &QueryFilter) -> bool {
        other.params.iter().all(|theirs| self.params.iter().any(|ours| ours.implies(theirs)))
    }

    /// The value of the first parameter called `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.iter().find(|p| p.name == name).map(|p| p.value.as_str())
    }
}

impl fmt::Display for QueryFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.raw)
    }
}

/// `context/Resource.permissions[?query]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClinicalScope {
    pub context: Context,
    pub resource: ScopeResource,
    pub permissions: Permissions,
    pub query: Option<QueryFilter>,
    pub spelling: Spelling,
}

impl ClinicalScope {
    /// Parse one clinical scope; `None` if it is not one we understand.
    pub fn parse(text: &str) -> Option<ClinicalScope> {
        let (head, query) = match text.split_once('?') {
            Some((head, q)) => (head, Some(QueryFilter::parse(q)?)),
            None => (text, None),
        };
        let (context, rest) = head.split_once('/')?;
        let context: Context = context.parse().ok()?;
        let (resource, perms) = rest.split_once('.')?;
        let resource = match resource {
            "*" => ScopeResource::Any,
            t if is_r4_resource_type(t) => ScopeResource::Type(t.to_owned()),
            _ => return None,
        };
        let (permissions, spelling) = match perms {
            "read" => (Permissions::READ, Spelling::V1),
            "write" => (Permissions::WRITE, Spelling::V1),
            "*" => (Permissions::ALL, Spelling::V1),
            letters => (Permissions::from_v2(letters)?, Spelling::V2),
        };
        // Granular queries are a v2 feature; `read?category=…` is neither v1 nor v2, and guessing
        // what the client meant could grant more than it showed the user.
        if spelling == Spelling::V1 && query.is_some() {
            return None;
        }
        Some(ClinicalScope { context, resource, permissions, query, spelling })
    }

    /// Does `self` grant nothing beyond `other`? Same context; `other` reaches our resource type;
    /// our permissions are among theirs; and if `other` is granular, we are at least as narrow.
    /// Spelling does not matter (`.read` and `.rs` are the same scope).
    pub fn is_subset_of(&self, other: &ClinicalScope) -> bool {
        self.context == other.context
            && other.resource.covers(&self.resource)
            && other.permissions.contains(self.permissions)
            && match (&self.query, &other.query) {
                (_, None) => true,
                (None, Some(_)) => false,
                (Some(ours), Some(theirs)) => ours.implies(theirs),
            }
    }

    /// The largest scope both `self` and `other` grant, spelled like `self`. `None` when they share
    /// nothing, and also when both are granular on unrelated filters: their AND would be an odd,
    /// possibly empty query nobody asked for, so granting nothing for that pair is the safe side.
    pub fn intersect(&self, other: &ClinicalScope) -> Option<ClinicalScope> {
        if self.context != other.context {
            return None;
        }
        let resource = if other.resource.covers(&self.resource) {
            self.resource.clone()
        } else if self.resource.covers(&other.resource) {
            other.resource.clone()
        } else {
            return None;
        };
        let permissions = self.permissions.intersection(other.permissions);
        if permissions.is_empty() {
            return None;
        }
        let query = match (&self.query, &other.query) {
            (None, None) => None,
            (Some(q), None) | (None, Some(q)) => Some(q.clone()),
            (Some(a), Some(b)) if a.implies(b) => Some(a.clone()),
            (Some(a), Some(b)) if b.implies(a) => Some(b.clone()),
            (Some(_), Some(_)) => return None,
        };
        Some(ClinicalScope { context: self.context, resource, permissions, query, spelling: self.spelling })
    }

    /// Does this scope allow `interaction` on `resource_type` in `context` (ignoring any query)?
    pub fn reaches(&self, context: Context, resource_type: &str, interaction: Interaction) -> bool {
        self.context == context && self.resource.matches(resource_type) && self.permissions.allows(interaction)
    }
}

impl fmt::Display for ClinicalScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}.", self.context, self.resource)?;
        // v1 only when it can say exactly this: no v1 word means it, or a query is attached
        // (which v1 cannot carry, e.g. after intersecting with a granular scope).
        match (self.spelling, self.permissions.v1_word(), &self.query) {
            (Spelling::V1, Some(word), None) => f.write_str(word),
            _ => f.write_str(&self.permissions.to_v2()),
        }?;
        if let Some(q) = &self.query {
            write!(f, "?{q}")?;
        }
        Ok(())
    }
}

/// One understood scope. The variant order is the canonical printing order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    OpenId,
    FhirUser,
    Profile,
    Launch,
    LaunchPatient,
    LaunchEncounter,
    OfflineAccess,
    OnlineAccess,
    Clinical(ClinicalScope),
}

impl Scope {
    /// Parse one scope token; `None` when we do not understand it.
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text {
            "openid" => Scope::OpenId,
            "fhirUser" => Scope::FhirUser,
            "profile" => Scope::Profile,
            "launch" => Scope::Launch,
            "launch/patient" => Scope::LaunchPatient,
            "launch/encounter" => Scope::LaunchEncounter,
            "offline_access" => Scope::OfflineAccess,
            "online_access" => Scope::OnlineAccess,
            other => Scope::Clinical(ClinicalScope::parse(other)?),
        })
    }

    /// Does `self` grant nothing beyond `other`?
    pub fn is_subset_of(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::Clinical(a), Scope::Clinical(b)) => a.is_subset_of(b),
            (a, b) => a == b,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scope::OpenId => "openid",
            Scope::FhirUser => "fhirUser",
            Scope::Profile => "profile",
            Scope::Launch => "launch",
            Scope::LaunchPatient => "launch/patient",
            Scope::LaunchEncounter => "launch/encounter",
            Scope::OfflineAccess => "offline_access",
            Scope::OnlineAccess => "online_access",
            Scope::Clinical(c) => return c.fmt(f),
        })
    }
}

/// A set of understood scopes, kept in canonical order (non-clinical first in a fixed order, then
/// clinical by context, resource type, permissions, query) so printing is stable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScopeSet {
    scopes: BTreeSet<Scope>,
}

impl ScopeSet {
    /// Parse a space-separated scope string. Returns the understood scopes and, in request order,
    /// the tokens that were dropped. Never fails: unknown scopes are simply not granted.
    pub fn parse(text: &str) -> (ScopeSet, Vec<String>) {
        let mut scopes = BTreeSet::new();
        let mut dropped = Vec::new();
        // RFC 6749 §3.3 separates with spaces; splitting on any whitespace also tolerates tabs and
        // doubled spaces from hand-written client configuration.
        for token in text.split_whitespace() {
            match Scope::parse(token) {
                // `patient/Observation.read` and `.rs` (or one query's parameters in another order)
                // mean the same; keep the first spelling so the set prints each meaning once.
                Some(scope) if scopes.iter().any(|s: &Scope| s.is_subset_of(&scope) && scope.is_subset_of(s)) => {}
                Some(scope) => {
                    scopes.insert(scope);
                }
                None => dropped.push(token.to_owned()),
            }
        }
        (ScopeSet { scopes }, dropped)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Scope> {
        self.scopes.iter()
    }

    pub fn clinical(&self) -> impl Iterator<Item = &ClinicalScope> {
        self.scopes.iter().filter_map(|s| match s {
            Scope::Clinical(c) => Some(c),
            _ => None,
        })
    }

    pub fn contains(&self, scope: &Scope) -> bool {
        self.scopes.contains(scope)
    }

    pub fn insert(&mut self, scope: Scope) {
        self.scopes.insert(scope);
    }

    pub fn is_empty(&self) -> bool {
        self.scopes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.scopes.len()
    }

    /// Is every scope of `self` granted by some single scope of `other`? This is how a refresh
    /// request may narrow a grant but never widen it. (A scope covered only by the union of
    /// several granular scopes is not recognised; refusing is the safe side.)
    pub fn is_subset_of(&self, other: &ScopeSet) -> bool {
        self.scopes.iter().all(|mine| other.scopes.iter().any(|theirs| mine.is_subset_of(theirs)))
    }

    /// What both sets grant, spelled as in `self`. Scopes made redundant by a broader one in the
    /// result are left out so the consent screen and token do not repeat themselves.
    pub fn intersect(&self, other: &ScopeSet) -> ScopeSet {
        let mut out: Vec<Scope> = Vec::new();
        for mine in &self.scopes {
            match mine {
                Scope::Clinical(c) => {
                    for theirs in other.clinical() {
                        if let Some(both) = c.intersect(theirs) {
                            out.push(Scope::Clinical(both));
                        }
                    }
                }
                plain => {
                    if other.scopes.contains(plain) {
                        out.push(plain.clone());
                    }
                }
            }
        }
        ScopeSet { scopes: drop_redundant(out) }
    }

    /// Grant at most what was `requested` and `self` allows, in the requested spelling:
    /// `granted = allowed.narrow_to(&requested)`.
    pub fn narrow_to(&self, requested: &ScopeSet) -> ScopeSet {
        requested.intersect(self)
    }

    pub fn has_patient_scopes(&self) -> bool {
        self.clinical().any(|c| c.context == Context::Patient)
    }

    pub fn has_user_scopes(&self) -> bool {
        self.clinical().any(|c| c.context == Context::User)
    }

    pub fn has_system_scopes(&self) -> bool {
        self.clinical().any(|c| c.context == Context::System)
    }

    /// Must the authorization pick a patient? `patient/` scopes only mean something with one, and
    /// `launch/patient` asks for one explicitly.
    pub fn needs_patient_context(&self) -> bool {
        self.has_patient_scopes() || self.scopes.contains(&Scope::LaunchPatient)
    }

    /// `offline_access`: a refresh token that outlives the user's session.
    pub fn offline(&self) -> bool {
        self.scopes.contains(&Scope::OfflineAccess)
    }

    /// `online_access`: a refresh token only while the user's session lasts.
    pub fn online(&self) -> bool {
        self.scopes.contains(&Scope::OnlineAccess)
    }

    /// May `interaction` on `resource_type` happen in `context`? `None`: no scope allows it.
    /// `Some(vec![])`: allowed without restriction. `Some(filters)`: allowed only for resources
    /// matching at least one filter (each filter is an AND of its parameters).
    pub fn allows(&self, context: Context, resource_type: &str, interaction: Interaction) -> Option<Vec<QueryFilter>> {
        let mut filters: Vec<QueryFilter> = Vec::new();
        let mut any = false;
        for scope in self.clinical().filter(|c| c.reaches(context, resource_type, interaction)) {
            any = true;
            match &scope.query {
                // One unrestricted scope makes every granular one irrelevant.
                None => return Some(Vec::new()),
                Some(q) => {
                    if !filters.contains(q) {
                        filters.push(q.clone());
                    }
                }
            }
        }
        any.then_some(filters)
    }

    /// Plain-language lines for the consent screen, one per distinct meaning (`openid`, `fhirUser`
    /// and `profile` share one line), in canonical order.
    pub fn describe(&self) -> Vec<String> {
        let mut lines: Vec<String> = Vec::new();
        for line in self.scopes.iter().map(crate::describe::describe) {
            if !lines.contains(&line) {
                lines.push(line);
            }
        }
        lines
    }
}

/// Keep each scope unless another one in the list grants at least as much; of two that grant the
/// same (e.g. `.read` and `.rs`), keep the first.
fn drop_redundant(scopes: Vec<Scope>) -> BTreeSet<Scope> {
    let mut kept = BTreeSet::new();
    for (i, s) in scopes.iter().enumerate() {
        let redundant = scopes
            .iter()
            .enumerate()
            .any(|(j, other)| i != j && s.is_subset_of(other) && (!other.is_subset_of(s) || j < i));
        if !redundant {
            kept.insert(s.clone());
        }
    }
    kept
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, scope) in self.scopes.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            scope.fmt(f)?;
        }
        Ok(())
    }
}

impl FromIterator<Scope> for ScopeSet {
    fn from_iter<I: IntoIterator<Item = Scope>>(iter: I) -> Self {
        ScopeSet { scopes: iter.into_iter().collect() }
    }
}

#[cfg(test)]
mod tests;
