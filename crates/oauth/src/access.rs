//! Who may see what, per request. SMART scopes only delegate a person's access to an app; below
//! them are the person's own rights: a patient or member reaches their own compartment and those
//! they are proxy for, a practitioner the patients linked to them (care team, general practitioner,
//! assignments), an administrator everything. An [`Access`] combines the token's scopes and
//! patient context, those rights, and the categories the person withheld, and turns them into a
//! [`store::Restriction`] that the store applies in SQL.

use std::collections::BTreeMap;
use std::sync::Arc;

use auth::{ClinicalScope, Context, Interaction, QueryFilter, ScopeResource, ScopeSet, SensitiveCategory};
use fhir::search::{parse, Handling, SearchTerm};
use store::auth::{Role, User};
use store::{Restriction, TypeRule, TypeRules};

use crate::bearer::TokenAccess;
use crate::error::OAuthError;
use crate::AuthServer;

/// Restrictions worked out per (resource type, interaction).
type Memo = std::collections::HashMap<(String, Interaction), Result<Restriction, Refusal>>;

/// Who is asking.
#[derive(Debug, Clone)]
pub enum Principal {
    /// `--dev-open-access` and no token: everything (development only).
    DevOpen,
    /// A backend service (client credentials).
    Service,
    /// A person through an app.
    Person(Arc<User>),
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No scope allows this interaction on this type (403).
    Scope(String),
    /// Outside what the caller may see; answered as not found so nothing leaks (404).
    Hidden,
}

/// A request's access, built once from its token.
#[derive(Debug, Clone)]
pub struct Access {
    pub principal: Principal,
    pub token: Option<TokenAccess>,
    /// The token's scopes (possibly narrower than the grant's, after a refresh with `scope`).
    pub scopes: ScopeSet,
    /// The patient in context (`patient/` scopes).
    pub patient: Option<String>,
    /// The patients the person may reach through `user/` scopes; `None`: all (administrators).
    pub user_patients: Option<Arc<Vec<String>>>,
    /// Security label codes the person withheld from this app.
    pub withheld: Arc<Vec<String>>,
    /// Restrictions already worked out for this access (it lives as long as its token is cached,
    /// so each is computed once, with its cache key).
    memo: Arc<std::sync::Mutex<Memo>>,
}

impl Access {
    /// Development open mode.
    pub fn dev_open() -> Access {
        Access::new(Principal::DevOpen, None, ScopeSet::default(), None, None, Arc::new(Vec::new()))
    }

    pub fn new(
        principal: Principal,
        token: Option<TokenAccess>,
        scopes: ScopeSet,
        patient: Option<String>,
        user_patients: Option<Arc<Vec<String>>>,
        withheld: Arc<Vec<String>>,
    ) -> Access {
        Access { principal, token, scopes, patient, user_patients, withheld, memo: Arc::default() }
    }

    pub fn is_unrestricted(&self) -> bool {
        matches!(self.principal, Principal::DevOpen)
    }

    pub fn user(&self) -> Option<&User> {
        match &self.principal {
            Principal::Person(u) => Some(u),
            _ => None,
        }
    }

    /// Is the caller an administrator (or the development open mode)?
    pub fn is_admin(&self) -> bool {
        match &self.principal {
            Principal::DevOpen => true,
            Principal::Person(u) => u.role == Role::Admin,
            Principal::Service => false,
        }
    }

    /// The contexts whose scopes may apply, broadest first.
    fn contexts(&self) -> Vec<Context> {
        match self.principal {
            Principal::DevOpen => Vec::new(),
            Principal::Service => vec![Context::System],
            Principal::Person(_) => vec![Context::User, Context::Patient],
        }
    }

    /// The restriction for `interaction` on `resource_type` (and, through the same rules, the
    /// other types a search includes). Refused when no scope allows the interaction on the type.
    pub fn restriction(&self, resource_type: &str, interaction: Interaction) -> Result<Restriction, Refusal> {
        if self.is_unrestricted() {
            return Ok(Restriction::default());
        }
        let key = (resource_type.to_owned(), interaction);
        if let Some(known) = self.memo.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return known;
        }
        let answer = self.work_out(resource_type, interaction);
        if let Ok(mut m) = self.memo.lock() {
            if m.len() < 256 {
                m.insert(key, answer.clone());
            }
        }
        answer
    }

    fn work_out(&self, resource_type: &str, interaction: Interaction) -> Result<Restriction, Refusal> {
        for context in self.contexts() {
            if self.scopes.allows(context, resource_type, interaction).is_some() {
                return self.restriction_in(context, interaction);
            }
        }
        Err(Refusal::Scope(format!(
            "the token's scopes ({}) do not allow {} on {resource_type}",
            self.scopes,
            interaction_words(interaction)
        )))
    }

    /// The restriction across types (`$everything`, system history): the broadest context that
    /// allows `interaction` on any type.
    pub fn restriction_any(&self, interaction: Interaction) -> Result<Restriction, Refusal> {
        if self.is_unrestricted() {
            return Ok(Restriction::default());
        }
        for context in self.contexts() {
            if self.scopes.clinical().any(|c| c.context == context && c.permissions.allows(interaction)) {
                return self.restriction_in(context, interaction);
            }
        }
        Err(Refusal::Scope(format!(
            "the token's scopes ({}) do not allow {} on any resource type",
            self.scopes,
            interaction_words(interaction)
        )))
    }

    fn restriction_in(&self, context: Context, interaction: Interaction) -> Result<Restriction, Refusal> {
        let patients = match context {
            Context::System => None,
            Context::User => self.user_patients.clone(),
            Context::Patient => match &self.patient {
                Some(p) => Some(Arc::new(vec![p.clone()])),
                None => return Err(Refusal::Scope("patient/ scopes need a patient in context".into())),
            },
        };
        Ok(Restriction::new(patients, self.withheld.clone(), type_rules(&self.scopes, context, interaction)))
    }
}

fn interaction_words(i: Interaction) -> &'static str {
    match i {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

/// Per-type rules of the scopes of `context` for `interaction`.
fn type_rules(scopes: &ScopeSet, context: Context, interaction: Interaction) -> TypeRules {
    let relevant: Vec<&ClinicalScope> =
        scopes.clinical().filter(|c| c.context == context && c.permissions.allows(interaction)).collect();
    // Types not named by any scope follow the wildcard scopes. A granular wildcard cannot be
    // compiled without a type, so it grants nothing on its own (the safe side).
    let default = if relevant.iter().any(|c| c.resource == ScopeResource::Any && c.query.is_none()) {
        TypeRule::All
    } else {
        TypeRule::None
    };
    let mut by_type = BTreeMap::new();
    for c in &relevant {
        let ScopeResource::Type(t) = &c.resource else { continue };
        if by_type.contains_key(t) {
            continue;
        }
        let rule = match scopes.allows(context, t, interaction) {
            None => TypeRule::None,
            Some(filters) if filters.is_empty() => TypeRule::All,
            Some(filters) => TypeRule::Filtered(filters.iter().filter_map(|f| compile(t, f)).collect()),
        };
        by_type.insert(t.clone(), rule);
    }
    TypeRules { default, by_type }
}

/// A granular scope's query as search terms for `resource_type`; `None` when it does not parse
/// (then that filter matches nothing).
fn compile(resource_type: &str, filter: &QueryFilter) -> Option<Vec<SearchTerm>> {
    let pairs: Vec<(String, String)> = filter.params.iter().map(|p| (p.name.clone(), p.value.clone())).collect();
    match parse(fhir::Registry::r4(), resource_type, &pairs, Handling::Strict) {
        Ok(request) if request.includes.is_empty() && request.revincludes.is_empty() => Some(request.terms),
        _ => None,
    }
}

/// The v3 ActCode labels of withheld categories.
pub fn withheld_codes(categories: &[SensitiveCategory]) -> Vec<String> {
    let mut codes: Vec<String> = categories.iter().flat_map(|c| c.codes().iter().map(|s| (*s).to_owned())).collect();
    codes.sort();
    codes.dedup();
    codes
}

impl AuthServer {
    /// The access of a request carrying `token`: verified, live, and built once per token for
    /// [`crate::AuthConfig::liveness_cache_millis`] (revoking the grant drops it at once).
    pub async fn access_for_token(&self, token: &str) -> Result<Arc<Access>, OAuthError> {
        let key = store::auth::token_hash(token);
        if let Some(access) = self.inner.accesses.get(&key) {
            let live =
                access.token.as_ref().is_some_and(|t| !t.claims.is_expired(self.now()) && t.grant.is_live(self.now()));
            if live {
                if let Some(t) = &access.token {
                    self.note_use(&t.grant);
                }
                return Ok(access);
            }
            self.inner.accesses.invalidate(&key);
        }
        let verified = self.authenticate_bearer(token).await?;
        let access = Arc::new(self.access(verified).await?);
        self.inner.accesses.insert(key, access.clone());
        Ok(access)
    }

    /// Build the access of a request from its verified token.
    pub async fn access(&self, token: TokenAccess) -> Result<Access, OAuthError> {
        let scopes = token.claims.scopes();
        let withheld = Arc::new(withheld_codes(&token.grant.withheld));
        let patient = token.grant.patient_id.as_ref().map(|p| p.to_string());
        let Some(user_id) = token.grant.user_id.clone() else {
            return Ok(Access::new(Principal::Service, Some(token), scopes, None, None, withheld));
        };
        let user = self.cached_user(&user_id).await?;
        let user_patients = match user.role {
            Role::Admin => None,
            Role::Patient => Some(self.cached_patient_list(&user).await?),
            Role::Practitioner => Some(self.cached_patient_list(&user).await?),
        };
        Ok(Access::new(Principal::Person(user), Some(token), scopes, patient, user_patients, withheld))
    }

    /// The access a grant gives with `scopes` (a subscription's creating token's), outside any
    /// request: what a subscription notification may carry. The person's patient list is read
    /// fresh, so it is the list as it is at delivery time. `None` when the grant is not live.
    pub async fn access_for_grant(
        &self,
        grant_id: &auth::GrantId,
        scopes: ScopeSet,
    ) -> Result<Option<Access>, OAuthError> {
        let Some(grant) = self.inner.store.live_grant(grant_id).await? else { return Ok(None) };
        let scopes = scopes.intersect(&grant.scopes);
        let withheld = Arc::new(withheld_codes(&grant.withheld));
        let patient = grant.patient_id.as_ref().map(|p| p.to_string());
        let Some(user_id) = grant.user_id.clone() else {
            return Ok(Some(Access::new(Principal::Service, None, scopes, None, None, withheld)));
        };
        let Some(user) = self.inner.store.user(&user_id).await? else { return Ok(None) };
        let user_patients = match user.role {
            Role::Admin => None,
            Role::Patient | Role::Practitioner => Some(Arc::new(self.patient_ids_for(&user).await?)),
        };
        Ok(Some(Access::new(Principal::Person(Arc::new(user)), None, scopes, patient, user_patients, withheld)))
    }

    pub(crate) async fn cached_user(&self, user_id: &auth::UserId) -> Result<Arc<User>, OAuthError> {
        if let Some(u) = self.inner.users.get(user_id) {
            return Ok(u);
        }
        let user = self
            .inner
            .store
            .user(user_id)
            .await?
            .map(Arc::new)
            .ok_or_else(|| OAuthError::new(crate::ErrorCode::InvalidToken, "the token's user no longer exists"))?;
        self.inner.users.insert(user_id.clone(), user.clone());
        Ok(user)
    }

    /// The patients a person may reach (see [`AuthServer::patient_ids_for`]), cached briefly.
    async fn cached_patient_list(&self, user: &User) -> Result<Arc<Vec<String>>, OAuthError> {
        if let Some(list) = self.inner.patient_lists.get(&user.user_id) {
            return Ok(list);
        }
        let list = Arc::new(self.patient_ids_for(user).await?);
        self.inner.patient_lists.insert(user.user_id.clone(), list.clone());
        Ok(list)
    }

    /// The patients `user` may act for or see: for patients and members, themselves and those they
    /// are proxy for; for practitioners, those linked by the configured rules
    /// ([`crate::AuthConfig::practitioner_patients`]); administrators are not limited (empty here).
    pub async fn patient_ids_for(&self, user: &User) -> Result<Vec<String>, OAuthError> {
        match user.role {
            Role::Patient | Role::Admin => {
                Ok(self.inner.store.user_patients(&user.user_id).await?.into_iter().map(|p| p.to_string()).collect())
            }
            Role::Practitioner => {
                let Some(practitioner) = user.fhir_user.as_deref().and_then(|r| r.strip_prefix("Practitioner/")) else {
                    return Ok(Vec::new());
                };
                Ok(self
                    .inner
                    .store
                    .practitioner_patients(practitioner, &user.user_id, &self.config().practitioner_patients)
                    .await?)
            }
        }
    }

    /// Forget cached patient lists and users (after an assignment changes).
    pub fn forget_people(&self) {
        self.inner.patient_lists.invalidate_all();
        self.inner.users.invalidate_all();
        self.inner.accesses.invalidate_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(scopes: &str, patient: Option<&str>, user_patients: Option<Vec<&str>>) -> Access {
        Access::new(
            Principal::Service,
            None,
            ScopeSet::parse(scopes).0,
            patient.map(str::to_owned),
            user_patients.map(|v| Arc::new(v.into_iter().map(str::to_owned).collect())),
            Arc::new(vec!["PSY".into()]),
        )
    }

    fn person(mut a: Access) -> Access {
        a.principal = Principal::Person(Arc::new(User {
            user_id: "u".parse().unwrap(),
            username: "u".into(),
            password_hash: String::new(),
            role: Role::Patient,
            fhir_user: None,
            created_at: 0,
            failed_logins: 0,
            locked_until: None,
        }));
        a
    }

    #[test]
    fn patient_scopes_confine_to_the_patient_and_keep_withheld_labels() {
        let a = person(access("patient/Observation.rs patient/Patient.r", Some("p1"), Some(vec!["p1", "p2"])));
        let r = a.restriction("Observation", Interaction::Search).unwrap();
        assert_eq!(r.patients.as_deref(), Some(&vec!["p1".to_owned()]));
        assert_eq!(*r.withheld, vec!["PSY".to_owned()]);
        assert_eq!(r.types.rule("Observation"), &TypeRule::All);
        assert_eq!(r.types.rule("Condition"), &TypeRule::None);
        assert!(matches!(a.restriction("Condition", Interaction::Read), Err(Refusal::Scope(_))));
        assert!(matches!(a.restriction("Patient", Interaction::Search), Err(Refusal::Scope(_))), "r without s");
        assert!(a.restriction("Patient", Interaction::Read).is_ok());
    }

    #[test]
    fn user_scopes_use_the_persons_patients() {
        let a = person(access("user/*.rs patient/Observation.rs", Some("p1"), Some(vec!["p1", "p2"])));
        let r = a.restriction("Observation", Interaction::Search).unwrap();
        assert_eq!(r.patients.as_deref().map(Vec::len), Some(2), "user/ is the broader context");
        let r = a.restriction_any(Interaction::Read).unwrap();
        assert_eq!(r.types.default, TypeRule::All);
    }

    #[test]
    fn granular_scopes_become_filters() {
        let a = person(access(
            "patient/Observation.rs?category=http://terminology.hl7.org/CodeSystem/observation-category|laboratory",
            Some("p1"),
            None,
        ));
        let r = a.restriction("Observation", Interaction::Search).unwrap();
        match r.types.rule("Observation") {
            TypeRule::Filtered(f) => assert_eq!(f.len(), 1),
            other => panic!("{other:?}"),
        }
        // A filter on a parameter the type does not have matches nothing rather than everything.
        let odd = person(access("patient/Observation.rs?nonsense=1", Some("p1"), None));
        assert_eq!(
            odd.restriction("Observation", Interaction::Search).unwrap().types.rule("Observation"),
            &TypeRule::Filtered(vec![])
        );
    }

    #[test]
    fn services_see_every_patient_within_their_scopes() {
        let a = access("system/Patient.rs", None, None);
        let r = a.restriction("Patient", Interaction::Read).unwrap();
        assert!(r.patients.is_none());
        assert!(a.restriction("Observation", Interaction::Read).is_err());
        assert!(Access::dev_open().restriction("Anything", Interaction::Delete).unwrap().is_unrestricted());
    }

    #[test]
    fn withheld_categories_map_to_all_their_codes() {
        assert_eq!(
            withheld_codes(&[SensitiveCategory::BehavioralHealth, SensitiveCategory::SubstanceUse]),
            ["BH", "ETH", "PSY", "SUD"]
        );
    }
}
