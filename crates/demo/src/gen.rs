//! The generator proper: shared directory, people, and clinical timelines.

use std::collections::HashSet;

use serde_json::{json, Map, Value};
use uuid::Uuid;

use crate::codes::*;
use crate::date::{Day, Ts};
use crate::json::{concept, concept_multi, concept_plain, decimal, money, quantity, reference, reference_display};
use crate::rng::Rng;
use crate::{DemoAccounts, DemoConfig, DemoData, MIN_PATIENTS};

/// Last day on which an encounter may happen.
const WINDOW_END: Day = Day::from_ymd(2026, 2, 15);
/// Claims are adjudicated (EOB created and paid) no later than this day.
const AS_OF_DAY: Day = Day::from_ymd(2026, 3, 1);

// Practitioner slots in the shared directory.
const PRAC_A: usize = 0; // family medicine (demo practitioner A)
const PRAC_B: usize = 1; // internal medicine (demo practitioner B)
const PRAC_PSYCH: usize = 2;
const PRAC_ED: usize = 3;
const PRAC_HOSPITALIST: usize = 4;
const PRAC_NP: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OrgSlot {
    Clinic,
    Hospital,
    Behavioral,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LocSlot {
    Clinic,
    Emergency,
    Inpatient,
    Behavioral,
}

// ---------------------------------------------------------------------------
// Ids

struct IdGen {
    ns: Uuid,
    scope: String,
    n: u64,
}

impl IdGen {
    fn new(ns: Uuid, scope: impl Into<String>) -> Self {
        IdGen { ns, scope: scope.into(), n: 0 }
    }

    fn next(&mut self, resource_type: &str) -> String {
        self.n += 1;
        let name = format!("{}/{}/{}", self.scope, resource_type, self.n);
        Uuid::new_v5(&self.ns, name.as_bytes()).to_string()
    }
}

fn namespace(seed: u64) -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, format!("https://portico.example/demo/seed/{seed}").as_bytes())
}

/// A 10-digit NPI with a valid Luhn check digit (prefix 80840).
fn npi(rng: &mut Rng, used: &mut HashSet<String>) -> String {
    loop {
        let base = format!("{}{}", 1 + rng.below(2), rng.digits(8));
        let candidate = format!("{base}{}", npi_check_digit(&base));
        if used.insert(candidate.clone()) {
            return candidate;
        }
    }
}

fn npi_check_digit(base9: &str) -> u32 {
    let digits: Vec<u32> = format!("80840{base9}").chars().filter_map(|c| c.to_digit(10)).collect();
    let mut sum = 0;
    for (i, d) in digits.iter().rev().enumerate() {
        let mut v = *d;
        if i % 2 == 0 {
            v *= 2;
            if v > 9 {
                v -= 9;
            }
        }
        sum += v;
    }
    (10 - sum % 10) % 10
}

// ---------------------------------------------------------------------------
// Bundles

fn resource_type(r: &Value) -> &str {
    r.get("resourceType").and_then(Value::as_str).unwrap_or("")
}

fn resource_id(r: &Value) -> &str {
    r.get("id").and_then(Value::as_str).unwrap_or("")
}

fn transaction(id: String, resources: Vec<Value>) -> Value {
    // Built by hand: `json!` would deep-copy every resource through serde.
    let entries: Vec<Value> = resources
        .into_iter()
        .map(|r| {
            let rt = resource_type(&r).to_string();
            let rid = resource_id(&r).to_string();
            let mut request = Map::new();
            request.insert("method".into(), Value::from("PUT"));
            request.insert("url".into(), Value::from(format!("{rt}/{rid}")));
            let mut entry = Map::new();
            entry.insert("fullUrl".into(), Value::from(format!("urn:uuid:{rid}")));
            entry.insert("resource".into(), r);
            entry.insert("request".into(), Value::Object(request));
            Value::Object(entry)
        })
        .collect();
    let mut bundle = Map::new();
    bundle.insert("resourceType".into(), Value::from("Bundle"));
    bundle.insert("id".into(), Value::from(id));
    bundle.insert("type".into(), Value::from("transaction"));
    bundle.insert("entry".into(), Value::Array(entries));
    Value::Object(bundle)
}

// ---------------------------------------------------------------------------
// Shared directory

struct Org {
    id: String,
    name: &'static str,
    phone: &'static str,
}

struct Practitioner {
    id: String,
    display: String,
    org: OrgSlot,
}

struct Location {
    id: String,
    name: &'static str,
}

struct Shared {
    clinic: Org,
    hospital: Org,
    behavioral: Org,
    payer: Org,
    practitioners: Vec<Practitioner>,
    locations: Vec<(LocSlot, Location)>,
    resources: Vec<Value>,
}

impl Shared {
    fn org(&self, slot: OrgSlot) -> &Org {
        match slot {
            OrgSlot::Clinic => &self.clinic,
            OrgSlot::Hospital => &self.hospital,
            OrgSlot::Behavioral => &self.behavioral,
        }
    }

    fn location(&self, slot: LocSlot) -> &Location {
        self.locations.iter().find(|(s, _)| *s == slot).map(|(_, l)| l).unwrap_or(&self.locations[0].1)
    }

    fn prac(&self, idx: usize) -> &Practitioner {
        &self.practitioners[idx.min(self.practitioners.len() - 1)]
    }
}

fn address(line: &[&str], city: &str, state: &str, zip: &str) -> Value {
    json!({
        "use": "work",
        "type": "physical",
        "line": line,
        "city": city,
        "state": state,
        "postalCode": zip,
        "country": "US",
    })
}

fn build_shared(ids: &mut IdGen, rng: &mut Rng, npis: &mut HashSet<String>) -> Shared {
    let mut resources = Vec::new();

    let mut provider = |name: &'static str, line: &str, city: &str, zip: &str, phone: &'static str, email: &str| {
        let id = ids.next("Organization");
        resources.push(json!({
            "resourceType": "Organization",
            "id": id,
            "identifier": [{ "system": NPI, "value": npi(rng, npis) }],
            "active": true,
            "type": [concept_plain(ORG_TYPE, "prov", "Healthcare Provider")],
            "name": name,
            "telecom": [
                { "system": "phone", "value": phone, "use": "work" },
                { "system": "email", "value": email, "use": "work" },
            ],
            "address": [address(&[line], city, "MA", zip)],
        }));
        Org { id, name, phone }
    };
    let clinic = provider(
        "Portico Family Medicine",
        "415 Centre Street",
        "Boston",
        "02130",
        "617-555-0100",
        "info@family.portico.example",
    );
    let hospital = provider(
        "Northgate Regional Hospital",
        "1200 Northgate Avenue",
        "Cambridge",
        "02139",
        "617-555-0110",
        "contact@northgate-hospital.example",
    );
    let behavioral = provider(
        "Lakeside Behavioral Health",
        "88 Lakeside Drive",
        "Somerville",
        "02143",
        "617-555-0120",
        "intake@lakeside-bh.example",
    );
    let payer_id = ids.next("Organization");
    resources.push(json!({
        "resourceType": "Organization",
        "id": payer_id,
        "identifier": [{ "system": PAYER_ID_SYSTEM, "value": "PHP01" }],
        "active": true,
        "type": [concept_plain(ORG_TYPE, "pay", "Payer")],
        "name": "Portico Health Plan",
        "alias": ["PHP"],
        "telecom": [
            { "system": "phone", "value": "800-555-0199", "use": "work" },
            { "system": "url", "value": "https://health-plan.portico.example", "use": "work" },
        ],
        "address": [address(&["1 Portico Plaza", "Suite 400"], "Boston", "MA", "02118")],
    }));
    let payer = Org { id: payer_id, name: "Portico Health Plan", phone: "800-555-0199" };

    // Locations.
    let loc_defs: [(LocSlot, &str, &str, &str, OrgSlot); 4] = [
        (LocSlot::Clinic, "Portico Family Medicine - Jamaica Plain", "FMC", "Family medicine clinic", OrgSlot::Clinic),
        (
            LocSlot::Emergency,
            "Northgate Regional Hospital Emergency Department",
            "ER",
            "Emergency room",
            OrgSlot::Hospital,
        ),
        (
            LocSlot::Inpatient,
            "Northgate Regional Hospital Inpatient Medicine Unit",
            "HOSP",
            "Hospital",
            OrgSlot::Hospital,
        ),
        (
            LocSlot::Behavioral,
            "Lakeside Behavioral Health Outpatient Clinic",
            "PSY",
            "Psychiatry clinic",
            OrgSlot::Behavioral,
        ),
    ];
    let org_of = |slot: OrgSlot| match slot {
        OrgSlot::Clinic => (&clinic, "415 Centre Street", "Boston", "02130"),
        OrgSlot::Hospital => (&hospital, "1200 Northgate Avenue", "Cambridge", "02139"),
        OrgSlot::Behavioral => (&behavioral, "88 Lakeside Drive", "Somerville", "02143"),
    };
    let mut locations = Vec::new();
    for (slot, name, code, display, org_slot) in loc_defs {
        let id = ids.next("Location");
        let (org, line, city, zip) = org_of(org_slot);
        resources.push(json!({
            "resourceType": "Location",
            "id": id,
            "status": "active",
            "name": name,
            "mode": "instance",
            "type": [concept_plain(ROLE_CODE, code, display)],
            "telecom": [{ "system": "phone", "value": org.phone, "use": "work" }],
            "address": address(&[line], city, "MA", zip),
            "physicalType": concept_plain(LOCATION_PHYSICAL, "bu", "Building"),
            "managingOrganization": reference_display("Organization", &org.id, org.name),
        }));
        locations.push((slot, Location { id, name }));
    }

    // Practitioners and their roles.
    let prac_defs: [(Code, &str, &str, OrgSlot, LocSlot); 6] = [
        (NUCC_FAMILY, "doctor", "MD", OrgSlot::Clinic, LocSlot::Clinic),
        (NUCC_INTERNAL, "doctor", "MD", OrgSlot::Clinic, LocSlot::Clinic),
        (NUCC_PSYCHIATRY, "doctor", "MD", OrgSlot::Behavioral, LocSlot::Behavioral),
        (NUCC_EMERGENCY, "doctor", "MD", OrgSlot::Hospital, LocSlot::Emergency),
        (NUCC_HOSPITALIST, "doctor", "DO", OrgSlot::Hospital, LocSlot::Inpatient),
        (NUCC_NP_FAMILY, "nurse", "NP", OrgSlot::Clinic, LocSlot::Clinic),
    ];
    let mut practitioners = Vec::new();
    let mut used_names = HashSet::new();
    for (specialty, role, suffix, org_slot, loc_slot) in prac_defs {
        let female = rng.chance(0.5);
        let (given, family) = loop {
            let given = *rng.pick(if female { FEMALE_NAMES } else { MALE_NAMES });
            let family = *rng.pick(FAMILY_NAMES);
            if used_names.insert((given, family)) {
                break (given, family);
            }
        };
        let id = ids.next("Practitioner");
        let is_doctor = role == "doctor";
        let display = if is_doctor { format!("Dr. {given} {family}") } else { format!("{given} {family}, {suffix}") };
        let org = &org_of(org_slot).0;
        let email = format!("{}.{}@portico.example", ascii_lower(given), ascii_lower(family));
        let mut name = json!({ "use": "official", "family": family, "given": [given], "suffix": [suffix] });
        if is_doctor {
            name["prefix"] = json!(["Dr."]);
        }
        resources.push(json!({
            "resourceType": "Practitioner",
            "id": id,
            "identifier": [{ "system": NPI, "value": npi(rng, npis) }],
            "active": true,
            "name": [name],
            "telecom": [
                { "system": "phone", "value": org.phone, "use": "work" },
                { "system": "email", "value": email, "use": "work" },
            ],
            "gender": if female { "female" } else { "male" },
        }));
        let loc = locations.iter().find(|(s, _)| *s == loc_slot).map(|(_, l)| l.id.clone()).unwrap_or_default();
        let role_display = if is_doctor { "Doctor" } else { "Nurse" };
        resources.push(json!({
            "resourceType": "PractitionerRole",
            "id": ids.next("PractitionerRole"),
            "active": true,
            "practitioner": reference_display("Practitioner", &id, &display),
            "organization": reference_display("Organization", &org.id, org.name),
            "code": [concept_plain(PRACTITIONER_ROLE, role, role_display)],
            "specialty": [concept(&specialty)],
            "location": [reference("Location", &loc)],
            "telecom": [{ "system": "phone", "value": org.phone, "use": "work" }],
        }));
        practitioners.push(Practitioner { id, display, org: org_slot });
    }

    Shared { clinic, hospital, behavioral, payer, practitioners, locations, resources }
}

fn ascii_lower(s: &str) -> String {
    s.chars().filter(|c| c.is_ascii_alphanumeric()).map(|c| c.to_ascii_lowercase()).collect()
}

// ---------------------------------------------------------------------------
// People

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Member,
    Parent,
    Child,
    Other,
}

#[derive(Debug, Clone)]
struct Person {
    idx: usize,
    id: String,
    role: Role,
    female: bool,
    given: Vec<&'static str>,
    family: &'static str,
    prefix: Option<&'static str>,
    birth: Day,
    line: Vec<String>,
    city: usize,
    phone: String,
    email: Option<String>,
    mrn: String,
    subscriber_id: String,
    dependent: u32,
    race: usize,
    hispanic: bool,
    marital: (&'static str, &'static str),
    language: (&'static str, &'static str),
    group: usize,
    pcp: usize,
    team: Vec<usize>,
}

impl Person {
    fn display(&self) -> String {
        format!("{} {}", self.given.first().copied().unwrap_or(""), self.family)
    }

    fn member_id(&self) -> String {
        format!("{}-{:02}", self.subscriber_id, self.dependent)
    }

    fn age_on(&self, day: Day) -> i64 {
        self.birth.age_on(day)
    }

    fn years_on(&self, day: Day) -> f64 {
        (day.0 - self.birth.0) as f64 / 365.25
    }
}

/// Employer groups / plans: (group id, group name, plan id, plan name, HMO?).
const GROUPS: &[(&str, &str, &str, &str, bool)] = &[
    ("GRP-10450", "Harborline Logistics", "PPO-GOLD", "Portico Gold PPO", false),
    ("GRP-20117", "Commonwealth Analytics", "PPO-GOLD", "Portico Gold PPO", false),
    ("GRP-31002", "Pioneer Valley Schools", "HMO-SILVER", "Portico Silver HMO", true),
    ("IND-00001", "Portico Individual & Family", "HMO-BRONZE", "Portico Bronze HMO", true),
];

struct Uniques {
    mrns: HashSet<String>,
    subscribers: HashSet<String>,
}

fn unique(rng: &mut Rng, used: &mut HashSet<String>, make: impl Fn(&mut Rng) -> String) -> String {
    loop {
        let v = make(rng);
        if used.insert(v.clone()) {
            return v;
        }
    }
}

fn plan_person(
    idx: usize,
    n: usize,
    rng: &mut Rng,
    ids: &mut IdGen,
    uniq: &mut Uniques,
    parent: Option<&Person>,
) -> Person {
    let role = match idx {
        0 => Role::Member,
        1 => Role::Parent,
        2 | 3 => Role::Child,
        _ => Role::Other,
    };
    let age = match role {
        Role::Member => rng.range(28, 52),
        Role::Parent => rng.range(34, 45),
        Role::Child if idx == 2 => rng.range(9, 12),
        Role::Child => rng.range(4, 8),
        Role::Other => match rng.weighted(&[10, 20, 35, 35]) {
            0 => rng.range(2, 17),
            1 => rng.range(18, 34),
            2 => rng.range(35, 59),
            _ => rng.range(60, 89),
        },
    };
    let birth = WINDOW_END.plus_years(-age).plus(-rng.range(0, 364));
    let female = match role {
        Role::Parent => rng.chance(0.6),
        _ => rng.chance(0.5),
    };
    let names = if female { FEMALE_NAMES } else { MALE_NAMES };
    let mut given = vec![*rng.pick(names)];
    if rng.chance(0.6) {
        let middle = *rng.pick(names);
        if middle != given[0] {
            given.push(middle);
        }
    }
    let adult = age >= 18;
    let (family, line, city, phone, hispanic, race) = match parent {
        Some(p) => (p.family, p.line.clone(), p.city, p.phone.clone(), p.hispanic, p.race),
        None => {
            let family = *rng.pick(FAMILY_NAMES);
            let mut line =
                vec![format!("{} {} {}", rng.range(1, 999), rng.pick(STREET_NAMES), rng.pick(STREET_SUFFIXES))];
            if rng.chance(0.25) {
                line.push(format!("Apt {}{}", rng.range(1, 6), char::from(b'A' + rng.below(4) as u8)));
            }
            let city = rng.below(CITIES.len() as u64) as usize;
            let phone = format!("{}-555-01{:02}", CITIES[city].4, rng.below(100));
            let weights: Vec<u32> = RACES.iter().map(|r| r.2).collect();
            let race = rng.weighted(&weights);
            (family, line, city, phone, rng.chance(0.15), race)
        }
    };
    let email = (age >= 13)
        .then(|| format!("{}.{}{}@example.com", ascii_lower(given[0]), ascii_lower(family), rng.range(10, 99)));
    let marital = if !adult {
        ("S", "Never Married")
    } else if role == Role::Parent {
        ("M", "Married")
    } else {
        match rng.weighted(&[50, 30, 14, if age > 60 { 12 } else { 0 }]) {
            0 => ("M", "Married"),
            1 => ("S", "Never Married"),
            2 => ("D", "Divorced"),
            _ => ("W", "Widowed"),
        }
    };
    let prefix = adult.then(|| {
        if !female {
            "Mr."
        } else if marital.0 == "M" {
            "Mrs."
        } else {
            "Ms."
        }
    });
    let language = if hispanic && rng.chance(0.4) {
        ("es-US", "Spanish (United States)")
    } else if RACES[race].0 == "2028-9" && rng.chance(0.3) {
        ("zh-CN", "Chinese (China)")
    } else {
        ("en-US", "English (United States)")
    };
    let mrn = unique(rng, &mut uniq.mrns, |r| format!("{}{}", 1 + r.below(9), r.digits(7)));
    let (subscriber_id, dependent, group) = match parent {
        Some(p) => (p.subscriber_id.clone(), if idx == 2 { 2 } else { 3 }, p.group),
        None => (
            unique(rng, &mut uniq.subscribers, |r| format!("PHP{}", r.digits(9))),
            1,
            rng.below(GROUPS.len() as u64) as usize,
        ),
    };
    // CareTeam split: A on the first 60 %, B on the last 60 %.
    let a_end = (n * 3).div_ceil(5);
    let b_start = (n * 2) / 5;
    let mut team = Vec::new();
    if idx < a_end {
        team.push(PRAC_A);
    }
    if idx >= b_start {
        team.push(PRAC_B);
    }
    let pcp = *rng.pick(&team);
    let id = ids.next("Patient");
    Person {
        idx,
        id,
        role,
        female,
        given,
        family,
        prefix,
        birth,
        line,
        city,
        phone,
        email,
        mrn,
        subscriber_id,
        dependent,
        race,
        hispanic,
        marital,
        language,
        group,
        pcp,
        team,
    }
}

// ---------------------------------------------------------------------------
// Top level

pub fn generate(config: &DemoConfig) -> DemoData {
    let n = config.patients.max(MIN_PATIENTS);
    let ns = namespace(config.seed);

    let mut shared_rng = Rng::derive(config.seed, u64::MAX);
    let mut shared_ids = IdGen::new(ns, "shared");
    let mut npis = HashSet::new();
    let mut shared = build_shared(&mut shared_ids, &mut shared_rng, &mut npis);

    let mut uniq = Uniques { mrns: HashSet::new(), subscribers: HashSet::new() };
    let mut people: Vec<Person> = Vec::with_capacity(n);
    for idx in 0..n {
        let mut rng = Rng::derive(config.seed, 2 * idx as u64);
        let mut ids = IdGen::new(ns, format!("person-{idx}"));
        let parent = if matches!(idx, 2 | 3) { people.get(1) } else { None };
        let person = plan_person(idx, n, &mut rng, &mut ids, &mut uniq, parent);
        people.push(person);
    }

    let mut bundles = vec![transaction(shared_ids.next("Bundle"), std::mem::take(&mut shared.resources))];
    let mut household = Vec::new();
    for person in &people {
        let rng = Rng::derive(config.seed, 2 * person.idx as u64 + 1);
        let ids = IdGen::new(ns, format!("patient-{}", person.idx));
        let subscriber = match person.role {
            Role::Child => people.get(1),
            _ => None,
        };
        let mut gen = PatientGen::new(rng, ids, &shared, person, subscriber);
        let resources = gen.run();
        let bundle_id = gen.ids.next("Bundle");
        match person.role {
            Role::Parent | Role::Child => {
                household.extend(resources);
                if person.idx == 3 {
                    bundles.push(transaction(bundle_id, std::mem::take(&mut household)));
                }
            }
            _ => bundles.push(transaction(bundle_id, resources)),
        }
    }

    let id_of = |i: usize| people.get(i).map(|p| p.id.clone()).unwrap_or_default();
    let accounts = DemoAccounts {
        member_patient_id: id_of(0),
        proxy_patient_ids: vec![id_of(2), id_of(3)],
        proxy_parent_patient_id: id_of(1),
        practitioner_ids: vec![shared.prac(PRAC_A).id.clone(), shared.prac(PRAC_B).id.clone()],
    };
    DemoData { bundles, accounts }
}

// ---------------------------------------------------------------------------
// Per-patient clinical generation

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Wellness,
    FollowUp,
    Acute,
    BhIntake,
    BhFollowUp,
    Emergency,
    Inpatient,
}

struct PlannedEnc {
    kind: Kind,
    start: Ts,
    end: Ts,
}

struct CondState {
    id: String,
    def: &'static CondDef,
    onset: Day,
    recorded: Option<Day>,
    encounter_id: Option<String>,
}

struct MedState {
    out_index: usize,
    def: MedDef,
}

struct Item {
    code: Code,
    cents: i64,
    qty: u32,
    revenue: Option<Code>,
}

struct Enc {
    id: String,
    kind: Kind,
    start: Ts,
    end: Ts,
    prac: usize,
    org: OrgSlot,
    loc: LocSlot,
    reasons: Vec<usize>,
    diagnoses: Vec<Code>,
    items: Vec<Item>,
}

impl Enc {
    fn bill(&mut self, code: Code, qty: u32, revenue: Option<Code>) {
        let cents = price_cents(&code);
        self.items.push(Item { code, cents, qty, revenue });
    }

    fn bill_priced(&mut self, code: Code, cents: i64, revenue: Option<Code>) {
        self.items.push(Item { code, cents, qty: 1, revenue });
    }

    fn diagnose(&mut self, code: Code) {
        if !self.diagnoses.contains(&code) {
            self.diagnoses.push(code);
        }
    }

    fn institutional(&self) -> bool {
        matches!(self.kind, Kind::Emergency | Kind::Inpatient)
    }
}

/// Slowly varying physiology and scores of one patient.
struct Physio {
    adult_height: f64,
    bmi: f64,
    systolic: f64,
    diastolic: f64,
    heart_rate: f64,
    a1c: f64,
    ldl: f64,
    hdl: f64,
    tg: f64,
    creatinine: f64,
    hemoglobin: f64,
    phq9: f64,
    gad7: f64,
    audit_c: f64,
    smoking: Code,
}

struct PatientGen<'a> {
    rng: Rng,
    ids: IdGen,
    shared: &'a Shared,
    p: &'a Person,
    subscriber: Option<&'a Person>,
    out: Vec<Value>,
    conditions: Vec<CondState>,
    meds: Vec<MedState>,
    vaccines: Vec<&'static str>,
    physio: Physio,
    coverage_id: String,
    care_team_id: String,
    penicillin_allergy: bool,
    first_enc_id: String,
    first_day: Day,
}

impl<'a> PatientGen<'a> {
    fn new(rng: Rng, ids: IdGen, shared: &'a Shared, p: &'a Person, subscriber: Option<&'a Person>) -> Self {
        PatientGen {
            rng,
            ids,
            shared,
            p,
            subscriber,
            out: Vec::new(),
            conditions: Vec::new(),
            meds: Vec::new(),
            vaccines: Vec::new(),
            physio: Physio {
                adult_height: 170.0,
                bmi: 24.0,
                systolic: 118.0,
                diastolic: 76.0,
                heart_rate: 72.0,
                a1c: 5.3,
                ldl: 105.0,
                hdl: 55.0,
                tg: 110.0,
                creatinine: 0.9,
                hemoglobin: 14.0,
                phq9: 2.0,
                gad7: 2.0,
                audit_c: 1.0,
                smoking: NEVER_SMOKER,
            },
            coverage_id: String::new(),
            care_team_id: String::new(),
            penicillin_allergy: false,
            first_enc_id: String::new(),
            first_day: WINDOW_END,
        }
    }

    fn patient_ref(&self) -> Value {
        reference_display("Patient", &self.p.id, &self.p.display())
    }

    fn prac_ref(&self, idx: usize) -> Value {
        let pr = self.shared.prac(idx);
        reference_display("Practitioner", &pr.id, &pr.display)
    }

    fn org_ref(&self, slot: OrgSlot) -> Value {
        let o = self.shared.org(slot);
        reference_display("Organization", &o.id, o.name)
    }

    fn loc_ref(&self, slot: LocSlot) -> Value {
        let l = self.shared.location(slot);
        reference_display("Location", &l.id, l.name)
    }

    fn has(&self, key: CondKey) -> bool {
        self.conditions.iter().any(|c| c.def.key == key)
    }

    fn cond_index(&self, key: CondKey) -> Option<usize> {
        self.conditions.iter().position(|c| c.def.key == key)
    }

    fn has_kind(&self, kind: CondKind) -> bool {
        self.conditions.iter().any(|c| c.def.kind == kind)
    }

    fn age(&self, day: Day) -> i64 {
        self.p.age_on(day)
    }

    fn run(&mut self) -> Vec<Value> {
        self.plan_physiology_and_conditions();
        let plan = self.plan_encounters();
        let first_day = plan.first().map(|e| e.start.day()).unwrap_or(WINDOW_END);
        self.first_day = first_day;

        self.push_patient();
        self.push_related_person();
        self.push_coverage(first_day);
        self.push_care_team(first_day);

        for (i, planned) in plan.iter().enumerate() {
            self.encounter(i, planned);
        }
        self.push_care_plans();
        std::mem::take(&mut self.out)
    }

    // -- planning ----------------------------------------------------------

    fn plan_physiology_and_conditions(&mut self) {
        let age = self.age(WINDOW_END);
        let female = self.p.female;
        let r = &mut self.rng;
        let ph = &mut self.physio;
        ph.adult_height = if female { r.normalish(163.0, 6.0) } else { r.normalish(177.0, 6.5) };
        ph.bmi = if age < 18 { r.uniform(15.0, 19.5) } else { r.normalish(27.5, 4.5).clamp(18.5, 42.0) };
        ph.systolic =
            if age < 13 { r.uniform(95.0, 108.0) } else { r.uniform(106.0, 126.0) + (age.max(30) - 30) as f64 * 0.15 };
        ph.diastolic = if age < 13 { r.uniform(56.0, 68.0) } else { r.uniform(66.0, 80.0) };
        ph.heart_rate = if age < 6 {
            r.uniform(88.0, 110.0)
        } else if age < 13 {
            r.uniform(74.0, 98.0)
        } else {
            r.uniform(60.0, 86.0)
        };
        ph.a1c = r.uniform(4.8, 5.5);
        ph.ldl = if age < 18 { r.uniform(60.0, 105.0) } else { r.uniform(80.0, 128.0) };
        ph.hdl = if female { r.uniform(48.0, 78.0) } else { r.uniform(38.0, 62.0) };
        ph.tg = r.uniform(60.0, 145.0);
        ph.creatinine = if female { r.uniform(0.55, 0.95) } else { r.uniform(0.75, 1.15) };
        ph.hemoglobin = if female { r.uniform(12.2, 14.8) } else { r.uniform(13.6, 16.4) };
        if age >= 18 {
            ph.smoking = match r.weighted(&[65, 22, 13]) {
                0 => NEVER_SMOKER,
                1 => EX_SMOKER,
                _ => DAILY_SMOKER,
            };
        }

        let mut chronic: Vec<CondKey> = Vec::new();
        let a = age as f64;
        if age >= 30 && self.rng.chance(0.08 + (a - 30.0) * 0.011) {
            chronic.push(CondKey::Hypertension);
        }
        if age >= 30 && self.rng.chance(0.08 + (a - 30.0) * 0.008) {
            chronic.push(CondKey::Hyperlipidemia);
        }
        if age >= 35 && self.rng.chance(0.05 + (a - 35.0) * 0.004) {
            chronic.push(CondKey::Diabetes2);
        } else if age >= 25 && self.rng.chance(0.12) {
            chronic.push(CondKey::Prediabetes);
        }
        if age >= 18 && self.physio.bmi >= 30.0 {
            chronic.push(CondKey::Obesity);
        }
        if age >= 2 && self.rng.chance(0.08) {
            chronic.push(CondKey::Asthma);
        }
        if age >= 50 && self.rng.chance(0.18) {
            chronic.push(CondKey::OsteoarthritisKnee);
        }
        if age >= 4 && self.rng.chance(0.12) {
            chronic.push(CondKey::AllergicRhinitis);
        }
        if age >= 18 && self.rng.chance(0.05) {
            chronic.push(CondKey::ChronicSinusitis);
        }

        let mut bh: Vec<CondKey> = Vec::new();
        if self.p.role == Role::Member {
            bh.push(CondKey::Depression);
            if self.rng.chance(0.5) {
                bh.push(CondKey::Anxiety);
            }
            bh.push(CondKey::AlcoholDependence);
        } else if age >= 18 {
            if self.rng.chance(0.2) {
                bh.push(match self.rng.weighted(&[5, 4, 1]) {
                    0 => CondKey::Depression,
                    1 => CondKey::Anxiety,
                    _ => CondKey::Ptsd,
                });
            }
            if self.rng.chance(0.08) {
                bh.push(if self.rng.chance(0.65) { CondKey::AlcoholDependence } else { CondKey::OpioidDependence });
            }
        } else if age >= 6 && self.p.role == Role::Other && self.rng.chance(0.15) {
            bh.push(CondKey::Adhd);
        }

        let birth = self.p.birth;
        for key in chronic.into_iter().chain(bh) {
            let def = cond_def(key);
            let min_age = match def.kind {
                CondKind::Chronic if key == CondKey::Asthma => 2,
                CondKind::Chronic if age < 18 => 3,
                CondKind::Chronic => 18,
                _ => 6,
            };
            let earliest = birth.plus_years(min_age.min(age));
            // Earliest plausible onset; the actual onset is drawn when the
            // condition is recorded.
            let id = self.ids.next("Condition");
            self.conditions.push(CondState { id, def, onset: earliest, recorded: None, encounter_id: None });
        }

        // Disease-driven physiology.
        let ph = &mut self.physio;
        let has = |k: CondKey| self.conditions.iter().any(|c| c.def.key == k);
        if has(CondKey::Hypertension) {
            ph.systolic = self.rng.uniform(142.0, 162.0);
            ph.diastolic = self.rng.uniform(88.0, 99.0);
        }
        if has(CondKey::Diabetes2) {
            ph.a1c = self.rng.uniform(7.4, 9.6);
        } else if has(CondKey::Prediabetes) {
            ph.a1c = self.rng.uniform(5.7, 6.4);
        }
        if has(CondKey::Hyperlipidemia) {
            ph.ldl = self.rng.uniform(150.0, 195.0);
            ph.tg = self.rng.uniform(160.0, 280.0);
        }
        if has(CondKey::Depression) {
            ph.phq9 = self.rng.uniform(13.0, 20.0);
        } else if has(CondKey::Anxiety) || has(CondKey::Ptsd) {
            ph.phq9 = self.rng.uniform(5.0, 10.0);
        }
        if has(CondKey::Anxiety) || has(CondKey::Ptsd) {
            ph.gad7 = self.rng.uniform(11.0, 17.0);
        }
        if has(CondKey::AlcoholDependence) {
            ph.audit_c = self.rng.uniform(7.0, 11.0);
        }
    }

    fn plan_encounters(&mut self) -> Vec<PlannedEnc> {
        let age = self.age(WINDOW_END);
        let n = if self.p.role == Role::Member {
            self.rng.range_usize(10, 16)
        } else if age < 18 {
            self.rng.range_usize(5, 12)
        } else {
            self.rng.range_usize(5, 20)
        };
        let span_years = self.rng.range(3, 8);
        let start = WINDOW_END.plus_years(-span_years).max(self.p.birth.plus(60));
        let len = (WINDOW_END.0 - start.0).max(n as i64 * 20);
        let slot = len / n as i64;

        let has_chronic = self.has_kind(CondKind::Chronic);
        let has_bh = self.has_kind(CondKind::Behavioral) || self.has_kind(CondKind::SubstanceUse);
        let bh_intake = if has_bh { Some(self.rng.range_usize(1, 3.min(n - 2))) } else { None };

        let mut kinds = Vec::with_capacity(n);
        let mut days = Vec::with_capacity(n);
        let mut last_wellness = 0i64;
        let mut inpatient_done = false;
        for i in 0..n {
            let day = Day(start.0 + i as i64 * slot + self.rng.range(0, (slot - 7).max(1)));
            let kind = if i == 0 {
                Kind::Wellness
            } else if Some(i) == bh_intake {
                Kind::BhIntake
            } else {
                let since_wellness = day.0 - last_wellness;
                let bh_ready = bh_intake.is_some_and(|b| i > b);
                let weights = [
                    if since_wellness >= 330 { 7 } else { 0 },
                    if has_chronic { 4 } else { 0 },
                    3,
                    if bh_ready { 4 } else { 0 },
                    1,
                    if !inpatient_done && (age >= 45 || has_chronic) && age >= 18 { 1 } else { 0 },
                ];
                match self.rng.weighted(&weights) {
                    0 => Kind::Wellness,
                    1 => Kind::FollowUp,
                    2 => Kind::Acute,
                    3 => Kind::BhFollowUp,
                    4 => Kind::Emergency,
                    _ => Kind::Inpatient,
                }
            };
            if kind == Kind::Wellness {
                last_wellness = day.0;
            }
            if kind == Kind::Inpatient {
                inpatient_done = true;
            }
            kinds.push(kind);
            days.push(day);
        }
        // Every behavioral-health patient has at least one follow-up session.
        if let Some(b) = bh_intake {
            if !kinds.contains(&Kind::BhFollowUp) {
                let j = (b + 1..n)
                    .rev()
                    .find(|&j| kinds[j] != Kind::Wellness && kinds[j] != Kind::Inpatient)
                    .unwrap_or(n - 1);
                kinds[j] = Kind::BhFollowUp;
            }
        }

        let mut plan = Vec::with_capacity(n);
        for (kind, day) in kinds.into_iter().zip(days) {
            let (start, minutes) = match kind {
                Kind::Emergency => {
                    (Ts::at(day, self.rng.range(0, 23), self.rng.range(0, 59)), self.rng.range(120, 360))
                }
                Kind::Inpatient => (
                    Ts::at(day, self.rng.range(0, 23), self.rng.range(0, 59)),
                    self.rng.range(2, 5) * 1440 + self.rng.range(-180, 180),
                ),
                _ => {
                    let ts = Ts::at(day, self.rng.range(8, 16), 15 * self.rng.range(0, 3));
                    let minutes = match kind {
                        Kind::Wellness => self.rng.range(30, 45),
                        Kind::FollowUp => self.rng.range(20, 30),
                        Kind::BhIntake => 60,
                        Kind::BhFollowUp => self.rng.range(45, 53),
                        _ => self.rng.range(15, 25),
                    };
                    (ts, minutes)
                }
            };
            plan.push(PlannedEnc { kind, start, end: start.plus_minutes(minutes) });
        }
        plan
    }

    // -- demographics, coverage, care team ----------------------------------

    fn push_patient(&mut self) {
        let p = self.p;
        let (city, state, zip, county, _) = CITIES[p.city % CITIES.len()];
        let race = RACES[p.race % RACES.len()];
        let eth = if p.hispanic { HISPANIC } else { NOT_HISPANIC };
        let mut name = json!({ "use": "official", "family": p.family, "given": p.given });
        if let Some(prefix) = p.prefix {
            name["prefix"] = json!([prefix]);
        }
        let mut telecom = vec![json!({
            "system": "phone",
            "value": p.phone,
            "use": if p.role == Role::Child { "home" } else { "mobile" },
        })];
        if let Some(email) = &p.email {
            telecom.push(json!({ "system": "email", "value": email, "use": "home" }));
        }
        let gp = self.prac_ref(p.pcp);
        let mut patient = json!({
            "resourceType": "Patient",
            "id": p.id,
            "extension": [
                {
                    "url": US_CORE_RACE,
                    "extension": [
                        { "url": "ombCategory", "valueCoding": { "system": RACE_ETHNICITY, "code": race.0, "display": race.1 } },
                        { "url": "text", "valueString": race.1 },
                    ],
                },
                {
                    "url": US_CORE_ETHNICITY,
                    "extension": [
                        { "url": "ombCategory", "valueCoding": { "system": RACE_ETHNICITY, "code": eth.0, "display": eth.1 } },
                        { "url": "text", "valueString": eth.1 },
                    ],
                },
                { "url": US_CORE_BIRTHSEX, "valueCode": if p.female { "F" } else { "M" } },
            ],
            "identifier": [
                {
                    "use": "usual",
                    "type": concept_plain(V2_0203, "MR", "Medical Record Number"),
                    "system": MRN_SYSTEM,
                    "value": p.mrn,
                },
                {
                    "type": concept_plain(V2_0203, "MB", "Member Number"),
                    "system": MEMBER_SYSTEM,
                    "value": p.member_id(),
                },
            ],
            "active": true,
            "name": [name],
            "telecom": telecom,
            "gender": if p.female { "female" } else { "male" },
            "birthDate": p.birth.fhir(),
            "address": [{
                "use": "home",
                "type": "both",
                "line": p.line,
                "city": city,
                "district": county,
                "state": state,
                "postalCode": zip,
                "country": "US",
            }],
            "maritalStatus": concept_plain(MARITAL, p.marital.0, p.marital.1),
            "communication": [{
                "language": { "coding": [{ "system": BCP47, "code": p.language.0, "display": p.language.1 }], "text": p.language.1 },
                "preferred": true,
            }],
            "generalPractitioner": [gp],
            "managingOrganization": self.org_ref(OrgSlot::Clinic),
        });
        if let Some(parent) = self.subscriber {
            let (rel, rel_display) = if parent.female { ("MTH", "mother") } else { ("FTH", "father") };
            patient["contact"] = json!([{
                "relationship": [
                    concept_plain(V2_0131, "N", "Next-of-Kin"),
                    concept_plain(ROLE_CODE, rel, rel_display),
                ],
                "name": { "use": "official", "family": parent.family, "given": parent.given },
                "telecom": [{ "system": "phone", "value": parent.phone, "use": "mobile" }],
                "gender": if parent.female { "female" } else { "male" },
            }]);
        }
        self.out.push(patient);
    }

    fn push_related_person(&mut self) {
        let Some(parent) = self.subscriber else {
            return;
        };
        let (rel, rel_display) = if parent.female { ("MTH", "mother") } else { ("FTH", "father") };
        let mut telecom = vec![json!({ "system": "phone", "value": parent.phone, "use": "mobile" })];
        if let Some(email) = &parent.email {
            telecom.push(json!({ "system": "email", "value": email, "use": "home" }));
        }
        let id = self.ids.next("RelatedPerson");
        let (city, state, zip, _, _) = CITIES[parent.city % CITIES.len()];
        self.out.push(json!({
            "resourceType": "RelatedPerson",
            "id": id,
            "active": true,
            "patient": self.patient_ref(),
            "relationship": [
                concept_plain(ROLE_CODE, rel, rel_display),
                concept_plain(ROLE_CODE, "GUARD", "guardian"),
            ],
            "name": [{ "use": "official", "family": parent.family, "given": parent.given }],
            "telecom": telecom,
            "gender": if parent.female { "female" } else { "male" },
            "birthDate": parent.birth.fhir(),
            "address": [{ "use": "home", "line": parent.line, "city": city, "state": state, "postalCode": zip, "country": "US" }],
        }));
    }

    fn push_coverage(&mut self, first_day: Day) {
        let p = self.p;
        let (group_id, group_name, plan_id, plan_name, hmo) = GROUPS[p.group % GROUPS.len()];
        let subscriber = self.subscriber.unwrap_or(p);
        let relationship = if self.subscriber.is_some() { ("child", "Child") } else { ("self", "Self") };
        let (type_code, type_display) = if hmo {
            ("HMO", "health maintenance organization policy")
        } else {
            ("PPO", "preferred provider organization policy")
        };
        let start = first_day.plus(-self.rng.range(30, 400)).max(p.birth);
        self.coverage_id = self.ids.next("Coverage");
        self.out.push(json!({
            "resourceType": "Coverage",
            "id": self.coverage_id,
            "identifier": [{
                "type": concept_plain(V2_0203, "MB", "Member Number"),
                "system": MEMBER_SYSTEM,
                "value": p.member_id(),
            }],
            "status": "active",
            "type": concept_plain(ACT_CODE, type_code, type_display),
            "subscriber": reference_display("Patient", &subscriber.id, &subscriber.display()),
            "subscriberId": p.subscriber_id,
            "beneficiary": self.patient_ref(),
            "dependent": format!("{:02}", p.dependent),
            "relationship": concept_plain(SUBSCRIBER_REL, relationship.0, relationship.1),
            "period": { "start": start.fhir() },
            "payor": [reference_display("Organization", &self.shared.payer.id, self.shared.payer.name)],
            "class": [
                {
                    "type": concept_plain(COVERAGE_CLASS, "group", "Group"),
                    "value": group_id,
                    "name": group_name,
                },
                {
                    "type": concept_plain(COVERAGE_CLASS, "plan", "Plan"),
                    "value": plan_id,
                    "name": plan_name,
                },
            ],
            "network": "Portico Preferred Network",
        }));
    }

    fn push_care_team(&mut self, first_day: Day) {
        self.care_team_id = self.ids.next("CareTeam");
        let mut participants = Vec::new();
        for &prac in &self.p.team {
            participants.push(json!({
                "role": [concept(&ROLE_PCP)],
                "member": self.prac_ref(prac),
                "onBehalfOf": self.org_ref(OrgSlot::Clinic),
                "period": { "start": first_day.fhir() },
            }));
        }
        if self.has_kind(CondKind::Behavioral) || self.has_kind(CondKind::SubstanceUse) {
            participants.push(json!({
                "role": [concept(&ROLE_PSYCHIATRIST)],
                "member": self.prac_ref(PRAC_PSYCH),
                "onBehalfOf": self.org_ref(OrgSlot::Behavioral),
            }));
        }
        participants.push(json!({ "role": [concept(&ROLE_PATIENT)], "member": self.patient_ref() }));
        self.out.push(json!({
            "resourceType": "CareTeam",
            "id": self.care_team_id,
            "status": "active",
            "category": [concept(&CARE_TEAM_LONGITUDINAL)],
            "name": format!("Primary care team for {}", self.p.display()),
            "subject": self.patient_ref(),
            "period": { "start": first_day.fhir() },
            "participant": participants,
            "managingOrganization": [self.org_ref(OrgSlot::Clinic)],
        }));
    }

    // -- encounters ---------------------------------------------------------

    fn encounter(&mut self, index: usize, planned: &PlannedEnc) {
        let (prac, org, loc) = match planned.kind {
            Kind::Wellness | Kind::FollowUp => (self.p.pcp, OrgSlot::Clinic, LocSlot::Clinic),
            Kind::Acute => {
                let prac = match self.rng.weighted(&[6, 2, 2]) {
                    0 => self.p.pcp,
                    1 => *self.rng.pick(&self.p.team),
                    _ => PRAC_NP,
                };
                (prac, OrgSlot::Clinic, LocSlot::Clinic)
            }
            Kind::BhIntake | Kind::BhFollowUp => (PRAC_PSYCH, OrgSlot::Behavioral, LocSlot::Behavioral),
            Kind::Emergency => (PRAC_ED, OrgSlot::Hospital, LocSlot::Emergency),
            Kind::Inpatient => (PRAC_HOSPITALIST, OrgSlot::Hospital, LocSlot::Inpatient),
        };
        debug_assert_eq!(self.shared.prac(prac).org, org);
        let mut enc = Enc {
            id: self.ids.next("Encounter"),
            kind: planned.kind,
            start: planned.start,
            end: planned.end,
            prac,
            org,
            loc,
            reasons: Vec::new(),
            diagnoses: Vec::new(),
            items: Vec::new(),
        };
        if index == 0 {
            self.first_enc_id = enc.id.clone();
        }
        let placeholder = self.out.len();
        self.out.push(Value::Null);

        match planned.kind {
            Kind::Wellness => self.wellness(&mut enc, index == 0),
            Kind::FollowUp => self.follow_up(&mut enc),
            Kind::Acute => self.acute(&mut enc),
            Kind::BhIntake => self.bh_intake(&mut enc),
            Kind::BhFollowUp => self.bh_follow_up(&mut enc),
            Kind::Emergency => self.emergency(&mut enc),
            Kind::Inpatient => self.inpatient(&mut enc),
        }

        let resource = self.encounter_resource(&enc);
        self.out[placeholder] = resource;
        self.claim_and_eob(&enc);
    }

    fn encounter_resource(&self, enc: &Enc) -> Value {
        let (class_code, class_display) = match enc.kind {
            Kind::Emergency => ("EMER", "emergency"),
            Kind::Inpatient => ("IMP", "inpatient encounter"),
            _ => ("AMB", "ambulatory"),
        };
        let child = self.age(enc.start.day()) < 18;
        let type_code = match enc.kind {
            Kind::Wellness if child => ENC_WELL_CHILD,
            Kind::Wellness => ENC_CHECKUP,
            Kind::FollowUp => ENC_FOLLOW_UP,
            Kind::Acute => ENC_SYMPTOM,
            Kind::BhIntake => ENC_PSYCH_INTAKE,
            Kind::BhFollowUp => ENC_PSYCH_FOLLOW_UP,
            Kind::Emergency => ENC_EMERGENCY,
            Kind::Inpatient => ENC_HOSPITAL,
        };
        let period = json!({ "start": enc.start.fhir(), "end": enc.end.fhir() });
        let mut reason_codes: Vec<Value> =
            enc.reasons.iter().filter_map(|&i| self.conditions.get(i)).map(|c| self.condition_code(c.def)).collect();
        if reason_codes.is_empty() {
            let z = if child { ICD_ROUTINE_CHILD } else { ICD_ROUTINE_ADULT };
            reason_codes.push(concept(&z));
        }
        let mut r = json!({
            "resourceType": "Encounter",
            "id": enc.id,
            "status": "finished",
            "class": { "system": ACT_CODE, "code": class_code, "display": class_display },
            "type": [concept(&type_code)],
            "subject": self.patient_ref(),
            "participant": [{
                "type": [concept_plain(PARTICIPATION, "PPRF", "primary performer")],
                "period": period,
                "individual": self.prac_ref(enc.prac),
            }],
            "period": period,
            "reasonCode": reason_codes,
        });
        let obj = r.as_object_mut();
        if let Some(obj) = obj {
            if !enc.reasons.is_empty() {
                let refs: Vec<Value> = enc
                    .reasons
                    .iter()
                    .filter_map(|&i| self.conditions.get(i))
                    .map(|c| reference("Condition", &c.id))
                    .collect();
                let diagnoses: Vec<Value> = enc
                    .reasons
                    .iter()
                    .filter_map(|&i| self.conditions.get(i))
                    .enumerate()
                    .map(|(rank, c)| {
                        let (code, display) = if enc.kind == Kind::Inpatient {
                            ("DD", "Discharge diagnosis")
                        } else {
                            ("billing", "Billing")
                        };
                        json!({
                            "condition": reference("Condition", &c.id),
                            "use": concept_plain(DIAGNOSIS_ROLE, code, display),
                            "rank": rank + 1,
                        })
                    })
                    .collect();
                obj.insert("reasonReference".into(), Value::Array(refs));
                obj.insert("diagnosis".into(), Value::Array(diagnoses));
            }
            match enc.kind {
                Kind::Emergency => {
                    obj.insert(
                        "hospitalization".into(),
                        json!({
                            "admitSource": concept_plain(ADMIT_SOURCE, "outp", "From outpatient department"),
                            "dischargeDisposition": concept_plain(DISCHARGE_DISPOSITION, "home", "Home"),
                        }),
                    );
                }
                Kind::Inpatient => {
                    obj.insert(
                        "hospitalization".into(),
                        json!({
                            "admitSource": concept_plain(ADMIT_SOURCE, "emd", "From accident/emergency department"),
                            "dischargeDisposition": concept_plain(DISCHARGE_DISPOSITION, "home", "Home"),
                        }),
                    );
                }
                _ => {}
            }
            obj.insert(
                "location".into(),
                json!([{ "location": self.loc_ref(enc.loc), "status": "completed", "period": period }]),
            );
            obj.insert("serviceProvider".into(), self.org_ref(enc.org));
        }
        r
    }

    fn condition_code(&self, def: &CondDef) -> Value {
        match def.kind {
            CondKind::Behavioral | CondKind::SubstanceUse => concept_multi(&[&def.icd10, &def.snomed]),
            _ => concept(&def.snomed),
        }
    }

    /// Create the Condition resource for `conditions[i]` at this encounter.
    fn record_condition(&mut self, enc: &Enc, i: usize, abatement: Option<Ts>) {
        let Some(c) = self.conditions.get(i) else {
            return;
        };
        let acute = c.def.kind == CondKind::Acute;
        let category = if acute {
            concept_plain(COND_CATEGORY, "encounter-diagnosis", "Encounter Diagnosis")
        } else {
            concept_plain(COND_CATEGORY, "problem-list-item", "Problem List Item")
        };
        let resolved = abatement.is_some();
        let clinical = if resolved {
            concept_plain(COND_CLINICAL, "resolved", "Resolved")
        } else {
            concept_plain(COND_CLINICAL, "active", "Active")
        };
        let onset = if acute {
            Value::from(enc.start.plus_minutes(-1440 * self.rng.range(1, 4)).fhir())
        } else {
            let day = enc.start.day();
            let back = match c.def.kind {
                CondKind::Chronic => self.rng.range(60, 6 * 365),
                _ => self.rng.range(45, 900),
            };
            Value::from(day.plus(-back).max(c.onset).min(day).fhir())
        };
        let mut r = json!({
            "resourceType": "Condition",
            "id": c.id,
            "clinicalStatus": clinical,
            "verificationStatus": concept_plain(COND_VER, "confirmed", "Confirmed"),
            "category": [category],
            "code": self.condition_code(c.def),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &enc.id),
            "onsetDateTime": onset,
            "recordedDate": enc.start.fhir(),
            "recorder": self.prac_ref(enc.prac),
            "asserter": self.prac_ref(enc.prac),
        });
        if let Some(end) = abatement {
            r["abatementDateTime"] = Value::from(end.fhir());
        }
        let day = enc.start.day();
        if let Some(c) = self.conditions.get_mut(i) {
            c.recorded = Some(day);
            c.encounter_id = Some(enc.id.clone());
        }
        self.out.push(r);
    }

    /// Add a new acute condition and record it at this encounter.
    fn new_acute(&mut self, enc: &mut Enc, key: CondKey) -> usize {
        let def = cond_def(key);
        let id = self.ids.next("Condition");
        self.conditions.push(CondState { id, def, onset: enc.start.day(), recorded: None, encounter_id: None });
        let i = self.conditions.len() - 1;
        let resolve_after = self.rng.range(7, 21);
        let abatement = enc.start.plus_minutes(resolve_after * 1440);
        self.record_condition(enc, i, Some(abatement));
        enc.reasons.push(i);
        enc.diagnose(def.icd10);
        i
    }

    fn wellness(&mut self, enc: &mut Enc, first: bool) {
        let day = enc.start.day();
        let age = self.age(day);
        if first {
            self.record_allergies(enc);
            let chronic: Vec<usize> =
                (0..self.conditions.len()).filter(|&i| self.conditions[i].def.kind == CondKind::Chronic).collect();
            for i in chronic {
                self.record_condition(enc, i, None);
                let key = self.conditions[i].def.key;
                self.start_chronic_meds(enc, i, key);
            }
        }
        self.vitals(enc, false);
        if age >= 13 {
            self.smoking_status(enc);
        }
        if age >= 12 {
            let phq2 = if self.physio.phq9 >= 10.0 { self.rng.range(3, 6) } else { self.rng.range(0, 2) };
            self.survey(enc, &PHQ2, phq2 as f64);
            self.procedure(enc, PROC_DEPRESSION_SCREEN, 5, None);
            enc.bill(CPT_SCREENING, 1, None);
        }
        if age >= 18 && self.rng.chance(0.5) {
            let score = self.physio.audit_c.round() + self.rng.range(-1, 1) as f64;
            self.survey(enc, &AUDIT_C, score.clamp(0.0, 12.0));
            enc.bill(HCPCS_ALCOHOL_SCREEN, 1, None);
        }
        if age >= 18 {
            let mut labs = false;
            if self.rng.chance(0.75) || self.has(CondKey::Hyperlipidemia) {
                self.lipid_panel(enc);
                labs = true;
            }
            if self.rng.chance(0.6) || self.has(CondKey::Hypertension) {
                self.bmp(enc, false);
                labs = true;
            }
            if self.rng.chance(0.4) {
                self.cbc(enc, false);
                labs = true;
            }
            let screen_a1c = age >= 35 && self.physio.bmi >= 25.0 && self.rng.chance(0.4);
            if self.has(CondKey::Diabetes2) || self.has(CondKey::Prediabetes) || screen_a1c {
                self.a1c(enc);
                labs = true;
            }
            if labs {
                enc.bill(CPT_VENIPUNCTURE, 1, None);
            }
            if !self.meds.is_empty() {
                self.procedure(enc, PROC_MED_RECONCILIATION, 5, None);
            }
        }
        self.immunizations(enc);
        let code = match age {
            0..=4 => CPT_PREVENT_1_4,
            5..=11 => CPT_PREVENT_5_11,
            12..=17 => CPT_PREVENT_12_17,
            18..=39 => CPT_PREVENT_18_39,
            40..=64 => CPT_PREVENT_40_64,
            _ => CPT_PREVENT_65,
        };
        enc.items.insert(0, Item { cents: price_cents(&code), code, qty: 1, revenue: None });
        enc.diagnoses.insert(0, if age < 18 { ICD_ROUTINE_CHILD } else { ICD_ROUTINE_ADULT });
        // Known chronic problems are billed as secondary diagnoses.
        let chronic: Vec<Code> = self
            .conditions
            .iter()
            .filter(|c| c.def.kind == CondKind::Chronic && c.recorded.is_some())
            .map(|c| c.def.icd10)
            .collect();
        for code in chronic.into_iter().take(3) {
            enc.diagnose(code);
        }
    }

    fn follow_up(&mut self, enc: &mut Enc) {
        let candidates: Vec<usize> = (0..self.conditions.len())
            .filter(|&i| {
                let c = &self.conditions[i];
                c.def.kind == CondKind::Chronic && c.recorded.is_some()
            })
            .collect();
        let Some(&i) = candidates.get(self.rng.below(candidates.len() as u64) as usize) else {
            // Nothing to follow up on: treat as a symptom visit.
            enc.kind = Kind::Acute;
            self.acute(enc);
            return;
        };
        let key = self.conditions[i].def.key;
        enc.reasons.push(i);
        enc.diagnose(self.conditions[i].def.icd10);
        // Treatment slowly works.
        match key {
            CondKey::Hypertension => {
                self.physio.systolic = (self.physio.systolic - self.rng.uniform(2.0, 6.0)).max(124.0);
                self.physio.diastolic = (self.physio.diastolic - self.rng.uniform(1.0, 3.0)).max(76.0);
            }
            CondKey::Diabetes2 => {
                self.physio.a1c = (self.physio.a1c - self.rng.uniform(0.1, 0.5)).max(6.4);
            }
            CondKey::Hyperlipidemia => {
                self.physio.ldl = (self.physio.ldl - self.rng.uniform(6.0, 18.0)).max(92.0);
                self.physio.tg = (self.physio.tg - self.rng.uniform(5.0, 25.0)).max(120.0);
            }
            CondKey::Obesity => {
                self.physio.bmi = (self.physio.bmi - self.rng.uniform(0.0, 0.8)).max(29.0);
            }
            _ => {}
        }
        self.vitals(enc, false);
        let mut labs = false;
        match key {
            CondKey::Diabetes2 | CondKey::Prediabetes => {
                self.a1c(enc);
                if self.rng.chance(0.5) {
                    self.bmp(enc, false);
                }
                labs = true;
            }
            CondKey::Hyperlipidemia => {
                self.lipid_panel(enc);
                labs = true;
            }
            CondKey::Hypertension if self.rng.chance(0.6) => {
                self.bmp(enc, false);
                labs = true;
            }
            CondKey::Asthma => {
                self.procedure(enc, PROC_SPIROMETRY, 20, Some(i));
                enc.bill(CPT_SPIROMETRY, 1, None);
            }
            _ => {}
        }
        if labs {
            enc.bill(CPT_VENIPUNCTURE, 1, None);
        }
        self.renew_meds(enc, i);
        if self.rng.chance(0.4) {
            self.immunizations(enc);
        }
        enc.items.insert(0, Item { code: CPT_OFFICE_4, cents: price_cents(&CPT_OFFICE_4), qty: 1, revenue: None });
    }

    fn acute(&mut self, enc: &mut Enc) {
        let day = enc.start.day();
        let age = self.age(day);
        let covid_era = day >= Day::from_ymd(2020, 3, 1);
        let options: &[(CondKey, u32)] = &[
            (CondKey::ViralPharyngitis, 4),
            (CondKey::StrepThroat, if age < 18 { 3 } else { 1 }),
            (CondKey::AcuteBronchitis, 3),
            (CondKey::ViralSinusitis, 4),
            (CondKey::OtitisMedia, if age < 12 { 5 } else { 0 }),
            (CondKey::AnkleSprain, 2),
            (CondKey::Uti, if self.p.female && age >= 16 { 3 } else { 0 }),
            (CondKey::Covid19, if covid_era && age >= 5 { 3 } else { 0 }),
        ];
        let weights: Vec<u32> = options.iter().map(|o| o.1).collect();
        let key = options[self.rng.weighted(&weights)].0;
        let i = self.new_acute(enc, key);
        let febrile = matches!(key, CondKey::StrepThroat | CondKey::OtitisMedia | CondKey::Covid19)
            || (key != CondKey::AnkleSprain && self.rng.chance(0.3));
        self.vitals(enc, febrile);
        let med = match key {
            CondKey::StrepThroat | CondKey::OtitisMedia if self.penicillin_allergy => AZITHROMYCIN,
            CondKey::StrepThroat if age >= 12 => AMOXICILLIN_500,
            CondKey::StrepThroat | CondKey::OtitisMedia => AMOXICILLIN_250,
            CondKey::Uti => NITROFURANTOIN,
            CondKey::AnkleSprain => IBUPROFEN,
            CondKey::ViralSinusitis if self.rng.chance(0.3) => {
                if self.penicillin_allergy {
                    AZITHROMYCIN
                } else {
                    AMOX_CLAV
                }
            }
            _ => ACETAMINOPHEN,
        };
        self.prescribe(enc, med, Some(i), false);
        match key {
            CondKey::ViralPharyngitis | CondKey::StrepThroat => {
                self.procedure(enc, PROC_THROAT_CULTURE, 5, Some(i));
                enc.bill(CPT_RAPID_STREP, 1, None);
            }
            CondKey::AnkleSprain => {
                self.procedure(enc, PROC_IMMOBILIZATION, 10, Some(i));
                enc.bill(CPT_STRAPPING, 1, None);
            }
            _ => {}
        }
        enc.items.insert(0, Item { code: CPT_OFFICE_3, cents: price_cents(&CPT_OFFICE_3), qty: 1, revenue: None });
    }

    fn bh_conditions(&self) -> Vec<usize> {
        (0..self.conditions.len())
            .filter(|&i| matches!(self.conditions[i].def.kind, CondKind::Behavioral | CondKind::SubstanceUse))
            .collect()
    }

    fn bh_intake(&mut self, enc: &mut Enc) {
        let bh = self.bh_conditions();
        for &i in &bh {
            self.record_condition(enc, i, None);
            enc.reasons.push(i);
            enc.diagnose(self.conditions[i].def.icd10);
        }
        self.bh_surveys(enc);
        self.procedure(enc, PROC_PSYCH_ASSESSMENT, 45, bh.first().copied());
        for &i in &bh {
            let med = match self.conditions[i].def.key {
                CondKey::Depression | CondKey::Ptsd => Some(SERTRALINE),
                CondKey::Anxiety if !self.has(CondKey::Depression) => Some(ESCITALOPRAM),
                CondKey::AlcoholDependence => Some(NALTREXONE),
                CondKey::OpioidDependence => Some(BUPRENORPHINE_NALOXONE),
                _ => None,
            };
            if let Some(med) = med {
                self.prescribe(enc, med, Some(i), true);
            }
        }
        enc.items.insert(0, Item { code: CPT_PSYCH_EVAL, cents: price_cents(&CPT_PSYCH_EVAL), qty: 1, revenue: None });
        enc.bill(CPT_SCREENING, 1, None);
    }

    fn bh_follow_up(&mut self, enc: &mut Enc) {
        let bh = self.bh_conditions();
        let ph = &mut self.physio;
        ph.phq9 = (ph.phq9 - self.rng.uniform(0.5, 3.0)).max(3.0);
        ph.gad7 = (ph.gad7 - self.rng.uniform(0.5, 2.5)).max(2.0);
        ph.audit_c = (ph.audit_c - self.rng.uniform(0.0, 1.5)).max(2.0);
        for &i in &bh {
            if self.conditions[i].recorded.is_some() {
                enc.reasons.push(i);
                enc.diagnose(self.conditions[i].def.icd10);
            }
        }
        self.bh_surveys(enc);
        let sud = bh.iter().copied().find(|&i| self.conditions[i].def.kind == CondKind::SubstanceUse);
        match sud {
            Some(i) if self.rng.chance(0.5) || bh.len() == 1 => {
                self.procedure(enc, PROC_SUD_COUNSELING, 45, Some(i));
                if self.conditions[i].def.key == CondKey::OpioidDependence {
                    enc.bill(HCPCS_OUD_BUNDLE, 1, None);
                }
            }
            _ => {
                let target = bh.first().copied();
                self.procedure(enc, PROC_CBT, 45, target);
            }
        }
        for &i in &bh {
            self.renew_meds(enc, i);
        }
        enc.items
            .insert(0, Item { code: CPT_PSYCHOTHERAPY, cents: price_cents(&CPT_PSYCHOTHERAPY), qty: 1, revenue: None });
    }

    fn bh_surveys(&mut self, enc: &mut Enc) {
        let has_dep = self.has(CondKey::Depression) || self.has(CondKey::Ptsd);
        let has_anx = self.has(CondKey::Anxiety) || self.has(CondKey::Ptsd);
        if has_dep || !has_anx {
            let v = self.physio.phq9.round();
            self.survey(enc, &PHQ9, v.clamp(0.0, 27.0));
        }
        if has_anx {
            let v = self.physio.gad7.round();
            self.survey(enc, &GAD7, v.clamp(0.0, 21.0));
        }
        if self.has(CondKey::AlcoholDependence) {
            let v = self.physio.audit_c.round();
            self.survey(enc, &AUDIT_C, v.clamp(0.0, 12.0));
        }
    }

    fn emergency(&mut self, enc: &mut Enc) {
        let day = enc.start.day();
        let age = self.age(day);
        let asthma = self
            .cond_index(CondKey::Asthma)
            .filter(|&i| self.conditions[i].recorded.is_some_and(|d| d <= day) && self.rng.chance(0.6));
        let (i, respiratory) = if let Some(i) = asthma {
            enc.reasons.push(i);
            enc.diagnose(self.conditions[i].def.icd10);
            self.procedure(enc, PROC_NEBULIZER, 20, Some(i));
            enc.bill(CPT_NEBULIZER, 1, Some(REV_RESPIRATORY));
            self.prescribe(enc, PREDNISONE, Some(i), false);
            (i, true)
        } else {
            let options: &[(CondKey, u32)] = &[
                (CondKey::AnkleSprain, 4),
                (CondKey::AcuteBronchitis, 2),
                (CondKey::Uti, if self.p.female && age >= 16 { 2 } else { 0 }),
                (CondKey::StrepThroat, 1),
            ];
            let weights: Vec<u32> = options.iter().map(|o| o.1).collect();
            let key = options[self.rng.weighted(&weights)].0;
            let i = self.new_acute(enc, key);
            let med = match key {
                CondKey::AnkleSprain => IBUPROFEN,
                CondKey::Uti => NITROFURANTOIN,
                CondKey::StrepThroat if self.penicillin_allergy => AZITHROMYCIN,
                CondKey::StrepThroat => AMOXICILLIN_500,
                _ => ACETAMINOPHEN,
            };
            self.prescribe(enc, med, Some(i), false);
            if key == CondKey::AnkleSprain {
                self.procedure(enc, PROC_IMMOBILIZATION, 15, Some(i));
                enc.bill(CPT_STRAPPING, 1, None);
            }
            (i, key == CondKey::AcuteBronchitis)
        };
        self.acute_vitals(enc, respiratory);
        if respiratory {
            self.procedure(enc, PROC_CHEST_XRAY, 15, Some(i));
            enc.bill(CPT_CHEST_XRAY, 1, Some(REV_RADIOLOGY));
        }
        if self.rng.chance(0.5) {
            self.cbc(enc, respiratory);
            self.bmp(enc, false);
            enc.bill(CPT_VENIPUNCTURE, 1, Some(REV_LAB));
        }
        enc.items.insert(0, Item { code: CPT_ED_4, cents: price_cents(&CPT_ED_4), qty: 1, revenue: Some(REV_ER) });
        for item in &mut enc.items {
            if item.revenue.is_none() {
                item.revenue = Some(REV_ER);
            }
        }
    }

    fn inpatient(&mut self, enc: &mut Enc) {
        let i = self.new_acute(enc, CondKey::Pneumonia);
        self.acute_vitals(enc, true);
        self.procedure(enc, PROC_CHEST_XRAY, 20, Some(i));
        self.cbc(enc, true);
        self.bmp(enc, true);
        let med = if self.penicillin_allergy { AZITHROMYCIN } else { AMOX_CLAV };
        self.prescribe(enc, med, Some(i), false);
        let days = ((enc.end.0 - enc.start.0) / 1440).max(1) as u32;
        enc.bill(CPT_HOSPITAL_INITIAL, 1, Some(REV_ROOM));
        if days > 1 {
            enc.bill(CPT_HOSPITAL_SUBSEQUENT, days - 1, Some(REV_ROOM));
        }
        enc.bill(CPT_DISCHARGE, 1, Some(REV_ROOM));
        enc.bill(CPT_CHEST_XRAY, 1, Some(REV_RADIOLOGY));
        enc.bill(CPT_CBC, 1, Some(REV_LAB));
        enc.bill(CPT_BMP, 1, Some(REV_LAB));
        enc.bill_priced(
            Code { system: HCPCS, code: "J0696", display: "Injection, ceftriaxone sodium, per 250 mg" },
            2_400 * i64::from(days),
            Some(Code { system: NUBC_REVENUE, code: "0250", display: "Pharmacy - General Classification" }),
        );
    }

    // -- observations -------------------------------------------------------

    fn obs_base(&mut self, enc: &Enc, category: (&str, &str), code: &Code, at: Ts) -> (String, Value) {
        let id = self.ids.next("Observation");
        let issued =
            if category.0 == "laboratory" { at.plus_minutes(self.rng.range(240, 1800)) } else { at.plus_minutes(5) };
        let performer = if category.0 == "laboratory" { self.org_ref(enc.org) } else { self.prac_ref(enc.prac) };
        let r = json!({
            "resourceType": "Observation",
            "id": id,
            "status": "final",
            "category": [concept_plain(OBS_CATEGORY, category.0, category.1)],
            "code": concept(code),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &enc.id),
            "effectiveDateTime": at.fhir(),
            "issued": issued.fhir(),
            "performer": [performer],
        });
        (id, r)
    }

    fn vital(&mut self, enc: &Enc, def: &QtyDef, value: f64) -> String {
        let at = enc.start.plus_minutes(5);
        let (id, mut r) = self.obs_base(enc, ("vital-signs", "Vital Signs"), &def.code, at);
        r["valueQuantity"] = quantity(value, def);
        self.out.push(r);
        id
    }

    fn blood_pressure(&mut self, enc: &Enc, systolic: f64, diastolic: f64) {
        let at = enc.start.plus_minutes(6);
        let (_, mut r) = self.obs_base(enc, ("vital-signs", "Vital Signs"), &BP_PANEL, at);
        r["component"] = json!([
            { "code": concept(&SYSTOLIC.code), "valueQuantity": quantity(systolic, &SYSTOLIC) },
            { "code": concept(&DIASTOLIC.code), "valueQuantity": quantity(diastolic, &DIASTOLIC) },
        ]);
        self.out.push(r);
    }

    fn height_at(&self, day: Day) -> f64 {
        let years = self.p.years_on(day);
        let reference = if self.p.female { 163.0 } else { 177.0 };
        let h = if years < 1.0 {
            50.0 + 25.0 * years
        } else if years < 2.0 {
            75.0 + 12.0 * (years - 1.0)
        } else {
            87.0 + 6.4 * (years - 2.0)
        };
        (h * self.physio.adult_height / reference).min(self.physio.adult_height)
    }

    fn vitals(&mut self, enc: &Enc, febrile: bool) {
        let day = enc.start.day();
        let years = self.p.years_on(day);
        let height = self.height_at(day) + self.rng.uniform(-0.4, 0.4);
        let bmi = if years < 18.0 { self.physio.bmi + 0.15 * (years - 8.0).max(0.0) } else { self.physio.bmi };
        let weight = bmi * (height / 100.0) * (height / 100.0) * self.rng.uniform(0.98, 1.02);
        let height = (height * 10.0).round() / 10.0;
        let weight = (weight * 10.0).round() / 10.0;
        self.vital(enc, &BODY_HEIGHT, height);
        self.vital(enc, &BODY_WEIGHT, weight);
        if years >= 2.0 {
            self.vital(enc, &BMI, weight / ((height / 100.0) * (height / 100.0)));
        }
        let sys = self.physio.systolic + self.rng.normalish(0.0, 4.0);
        let dia = self.physio.diastolic + self.rng.normalish(0.0, 3.0);
        if years >= 3.0 {
            self.blood_pressure(enc, sys, dia);
        }
        let hr = self.physio.heart_rate + self.rng.normalish(0.0, 4.0) + if febrile { 12.0 } else { 0.0 };
        self.vital(enc, &HEART_RATE, hr);
        let rr = if years < 6.0 {
            self.rng.range(20, 28)
        } else if years < 13.0 {
            self.rng.range(16, 22)
        } else {
            self.rng.range(12, 18)
        };
        self.vital(enc, &RESP_RATE, rr as f64);
        if febrile || self.rng.chance(0.3) {
            let t = if febrile { self.rng.uniform(38.0, 39.4) } else { self.rng.uniform(36.4, 37.2) };
            self.vital(enc, &BODY_TEMP, t);
        }
    }

    fn acute_vitals(&mut self, enc: &Enc, respiratory: bool) {
        let sys = self.physio.systolic + self.rng.uniform(0.0, 14.0);
        let dia = self.physio.diastolic + self.rng.uniform(0.0, 8.0);
        self.blood_pressure(enc, sys, dia);
        let hr = self.physio.heart_rate + self.rng.uniform(8.0, 25.0);
        self.vital(enc, &HEART_RATE, hr);
        let rr = if respiratory { self.rng.range(20, 28) } else { self.rng.range(14, 20) };
        self.vital(enc, &RESP_RATE, rr as f64);
        let t = if respiratory { self.rng.uniform(37.8, 39.5) } else { self.rng.uniform(36.5, 37.3) };
        self.vital(enc, &BODY_TEMP, t);
        let spo2 = if respiratory { self.rng.range(89, 95) } else { self.rng.range(96, 100) };
        self.vital(enc, &SPO2, spo2 as f64);
    }

    fn smoking_status(&mut self, enc: &Enc) {
        let at = enc.start.plus_minutes(8);
        let (_, mut r) = self.obs_base(enc, ("social-history", "Social History"), &SMOKING_STATUS, at);
        r["valueCodeableConcept"] = concept(&self.physio.smoking);
        self.out.push(r);
    }

    fn survey(&mut self, enc: &Enc, def: &QtyDef, score: f64) {
        let at = enc.start.plus_minutes(10);
        let (_, mut r) = self.obs_base(enc, ("survey", "Survey"), &def.code, at);
        r["valueQuantity"] = quantity(score, def);
        self.out.push(r);
    }

    /// One lab result; returns the Observation id.
    fn lab(&mut self, enc: &Enc, def: &LabDef, value: f64, at: Ts, issued: Ts) -> String {
        let (id, mut r) = self.obs_base(enc, ("laboratory", "Laboratory"), &def.q.code, at);
        let factor = 10f64.powi(def.q.decimals as i32);
        let rounded = (value * factor).round() / factor;
        let (code, display) = if rounded > def.high {
            ("H", "High")
        } else if rounded < def.low {
            ("L", "Low")
        } else {
            ("N", "Normal")
        };
        r["issued"] = Value::from(issued.fhir());
        r["valueQuantity"] = quantity(value, &def.q);
        r["interpretation"] = json!([concept_plain(INTERPRETATION, code, display)]);
        r["referenceRange"] = json!([{
            "low": quantity(def.low, &def.q),
            "high": quantity(def.high, &def.q),
        }]);
        self.out.push(r);
        id
    }

    fn panel(&mut self, enc: &Enc, code: &Code, results: &[(LabDef, f64)]) {
        let at = enc.start.plus_minutes(self.rng.range(10, 20));
        let issued = at.plus_minutes(self.rng.range(240, 1800));
        let ids: Vec<String> = results.iter().map(|(def, v)| self.lab(enc, def, *v, at, issued)).collect();
        let id = self.ids.next("DiagnosticReport");
        let r = json!({
            "resourceType": "DiagnosticReport",
            "id": id,
            "status": "final",
            "category": [concept_plain(V2_0074, "LAB", "Laboratory")],
            "code": concept(code),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &enc.id),
            "effectiveDateTime": at.fhir(),
            "issued": issued.fhir(),
            "performer": [self.org_ref(enc.org)],
            "resultsInterpreter": [self.prac_ref(enc.prac)],
            "result": ids.iter().map(|i| reference("Observation", i)).collect::<Vec<_>>(),
        });
        self.out.push(r);
    }

    fn lipid_panel(&mut self, enc: &mut Enc) {
        let hdl = self.physio.hdl + self.rng.normalish(0.0, 3.0);
        let tg = self.physio.tg + self.rng.normalish(0.0, 12.0);
        let ldl = self.physio.ldl + self.rng.normalish(0.0, 7.0);
        let chol = ldl + hdl + tg / 5.0 + self.rng.normalish(0.0, 3.0);
        self.panel(enc, &PANEL_LIPID, &[(CHOLESTEROL, chol), (TRIGLYCERIDES, tg), (LDL, ldl), (HDL, hdl)]);
        let rev = enc.institutional().then_some(REV_LAB);
        enc.bill(CPT_LIPID, 1, rev);
    }

    fn bmp(&mut self, enc: &mut Enc, sick: bool) {
        let glucose = if self.has(CondKey::Diabetes2) {
            // Estimated average glucose from HbA1c, plus day-to-day noise.
            28.7 * self.physio.a1c - 46.7 + self.rng.normalish(0.0, 12.0)
        } else if self.has(CondKey::Prediabetes) {
            self.rng.uniform(100.0, 124.0)
        } else {
            self.rng.uniform(74.0, 98.0)
        };
        let bun = self.rng.uniform(8.0, 19.0) + if sick { 6.0 } else { 0.0 };
        let creat = self.physio.creatinine + self.rng.normalish(0.0, 0.05);
        let results = [
            (GLUCOSE, glucose),
            (BUN, bun),
            (CREATININE, creat),
            (SODIUM, self.rng.uniform(136.5, 143.5)),
            (POTASSIUM, self.rng.uniform(3.7, 4.9)),
            (CHLORIDE, self.rng.uniform(99.0, 106.0)),
            (CO2, self.rng.uniform(23.0, 29.0)),
            (CALCIUM, self.rng.uniform(8.8, 10.1)),
        ];
        self.panel(enc, &PANEL_BMP, &results);
        if enc.kind != Kind::Inpatient {
            let rev = enc.institutional().then_some(REV_LAB);
            enc.bill(CPT_BMP, 1, rev);
        }
    }

    fn cbc(&mut self, enc: &mut Enc, infection: bool) {
        let hgb = self.physio.hemoglobin + self.rng.normalish(0.0, 0.3);
        let results = [
            (WBC, if infection { self.rng.uniform(11.5, 16.0) } else { self.rng.uniform(4.8, 9.6) }),
            (RBC, hgb / 3.0 + self.rng.uniform(-0.2, 0.2)),
            (HEMOGLOBIN, hgb),
            (HEMATOCRIT, hgb * 2.95 + self.rng.uniform(-1.0, 1.0)),
            (PLATELETS, self.rng.uniform(170.0, 380.0)),
        ];
        self.panel(enc, &PANEL_CBC, &results);
        if enc.kind != Kind::Inpatient {
            let rev = enc.institutional().then_some(REV_LAB);
            enc.bill(CPT_CBC, 1, rev);
        }
    }

    fn a1c(&mut self, enc: &mut Enc) {
        let v = self.physio.a1c + self.rng.normalish(0.0, 0.1);
        self.panel(enc, &HBA1C.q.code, &[(HBA1C, v)]);
        enc.bill(CPT_A1C, 1, None);
    }

    // -- other clinical resources --------------------------------------------

    fn procedure(&mut self, enc: &Enc, code: Code, minutes: i64, reason: Option<usize>) {
        let id = self.ids.next("Procedure");
        let start = enc.start.plus_minutes(self.rng.range(5, 15));
        let end = start.plus_minutes(minutes);
        let mut r = json!({
            "resourceType": "Procedure",
            "id": id,
            "status": "completed",
            "code": concept(&code),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &enc.id),
            "performedPeriod": { "start": start.fhir(), "end": end.fhir() },
            "performer": [{ "actor": self.prac_ref(enc.prac) }],
            "location": self.loc_ref(enc.loc),
        });
        if let Some(c) = reason.and_then(|i| self.conditions.get(i)) {
            r["reasonReference"] = json!([reference("Condition", &c.id)]);
        }
        self.out.push(r);
    }

    fn prescribe(&mut self, enc: &Enc, med: MedDef, reason: Option<usize>, chronic: bool) {
        let id = self.ids.next("MedicationRequest");
        let mut dosage = json!({ "sequence": 1, "text": med.sig });
        if med.per_day == 0 {
            dosage["asNeededBoolean"] = Value::Bool(true);
        } else {
            dosage["timing"] = json!({ "repeat": { "frequency": med.per_day, "period": 1, "periodUnit": "d" } });
            dosage["asNeededBoolean"] = Value::Bool(false);
        }
        let mut r = json!({
            "resourceType": "MedicationRequest",
            "id": id,
            "status": if chronic { "active" } else { "completed" },
            "intent": "order",
            "category": [concept_plain(MED_CATEGORY, "outpatient", "Outpatient")],
            "medicationCodeableConcept": concept(&med.code),
            "subject": self.patient_ref(),
            "encounter": reference("Encounter", &enc.id),
            "authoredOn": enc.start.plus_minutes(self.rng.range(10, 25)).fhir(),
            "requester": self.prac_ref(enc.prac),
            "dosageInstruction": [dosage],
            "dispenseRequest": {
                "numberOfRepeatsAllowed": if chronic { 3 } else { 0 },
                "quantity": { "value": med.dispense, "unit": med.dispense_unit, "system": UCUM, "code": med.dispense_ucum },
                "expectedSupplyDuration": { "value": if chronic { 90 } else { 10 }, "unit": "days", "system": UCUM, "code": "d" },
            },
        });
        if let Some(c) = reason.and_then(|i| self.conditions.get(i)) {
            r["reasonReference"] = json!([reference("Condition", &c.id)]);
        }
        if chronic {
            self.meds.push(MedState { out_index: self.out.len(), def: med });
        }
        self.out.push(r);
    }

    fn start_chronic_meds(&mut self, enc: &Enc, i: usize, key: CondKey) {
        let meds: Vec<MedDef> = match key {
            CondKey::Hypertension => vec![if self.rng.chance(0.6) { LISINOPRIL } else { AMLODIPINE }],
            CondKey::Diabetes2 => vec![METFORMIN],
            CondKey::Hyperlipidemia => vec![SIMVASTATIN],
            CondKey::Asthma => {
                let mut v = vec![ALBUTEROL];
                if self.rng.chance(0.5) {
                    v.push(FLUTICASONE);
                }
                v
            }
            CondKey::OsteoarthritisKnee => vec![NAPROXEN],
            CondKey::AllergicRhinitis => vec![LORATADINE],
            _ => Vec::new(),
        };
        for med in meds {
            self.prescribe(enc, med, Some(i), true);
        }
    }

    /// Renew the active prescriptions for condition `i` (old ones complete).
    fn renew_meds(&mut self, enc: &Enc, i: usize) {
        let Some(cond_id) = self.conditions.get(i).map(|c| c.id.clone()) else {
            return;
        };
        let target = json!([reference("Condition", &cond_id)]);
        let mut renew = Vec::new();
        for m in &self.meds {
            let Some(r) = self.out.get_mut(m.out_index) else {
                continue;
            };
            let active = r.get("status").and_then(Value::as_str) == Some("active");
            if active && r.get("reasonReference") == Some(&target) {
                r["status"] = Value::from("completed");
                renew.push(m.def);
            }
        }
        for med in renew {
            self.prescribe(enc, med, Some(i), true);
        }
    }

    fn record_allergies(&mut self, enc: &Enc) {
        let count = self.rng.weighted(&[60, 30, 10]);
        let mut chosen: Vec<usize> = Vec::new();
        while chosen.len() < count {
            let k = self.rng.below(ALLERGIES.len() as u64) as usize;
            if !chosen.contains(&k) {
                chosen.push(k);
            }
        }
        for k in chosen {
            let def = ALLERGIES[k];
            if def.code == ALLERGY_PENICILLIN.code {
                self.penicillin_allergy = true;
            }
            let onset_years = self.rng.range(1, self.age(enc.start.day()).max(2));
            let onset = self.p.birth.plus_years(onset_years).min(enc.start.day());
            let severity = match def.criticality {
                "high" => "severe",
                _ => *self.rng.pick(&["mild", "moderate"]),
            };
            let id = self.ids.next("AllergyIntolerance");
            self.out.push(json!({
                "resourceType": "AllergyIntolerance",
                "id": id,
                "clinicalStatus": concept_plain(ALLERGY_CLINICAL, "active", "Active"),
                "verificationStatus": concept_plain(ALLERGY_VER, "confirmed", "Confirmed"),
                "type": "allergy",
                "category": [def.category],
                "criticality": def.criticality,
                "code": concept(&def.code),
                "patient": self.patient_ref(),
                "encounter": reference("Encounter", &enc.id),
                "onsetDateTime": onset.fhir(),
                "recordedDate": enc.start.fhir(),
                "recorder": self.prac_ref(enc.prac),
                "reaction": [{
                    "manifestation": [concept(&def.reaction)],
                    "severity": severity,
                }],
            }));
        }
    }

    fn immunizations(&mut self, enc: &mut Enc) {
        let day = enc.start.day();
        let age = self.age(day);
        let years = self.p.years_on(day);
        let mut due: Vec<VaccineDef> = Vec::new();
        let flu_season = matches!(day.month(), 9..=12 | 1);
        if flu_season && years >= 0.5 && self.rng.chance(0.75) {
            due.push(FLU);
        }
        if age < 18 {
            for v in CHILD_VACCINES {
                if age >= v.min_age && age <= v.max_age && !self.vaccines.contains(&v.cvx.code) {
                    due.push(*v);
                }
            }
        } else {
            let covid_window = day >= Day::from_ymd(2021, 1, 15) && day <= Day::from_ymd(2023, 6, 30);
            for (v, p) in [(COVID_MRNA, 0.6), (TDAP, 0.15), (ZOSTER, 0.35), (PCV13, 0.4)] {
                let eligible = age >= v.min_age
                    && age <= v.max_age
                    && !self.vaccines.contains(&v.cvx.code)
                    && (v.cvx.code != COVID_MRNA.cvx.code || covid_window);
                if eligible && self.rng.chance(p) {
                    due.push(v);
                }
            }
        }
        for (n, v) in due.into_iter().enumerate() {
            if v.cvx.code != FLU.cvx.code {
                self.vaccines.push(v.cvx.code);
            }
            let id = self.ids.next("Immunization");
            let at = enc.start.plus_minutes(20 + n as i64 * 2);
            let subcutaneous = matches!(v.cvx.code, "03" | "21");
            let (route, route_display) =
                if subcutaneous { ("SQ", "Injection, subcutaneous") } else { ("IM", "Injection, intramuscular") };
            let (site, site_display) = if n % 2 == 0 { ("LA", "left arm") } else { ("RA", "right arm") };
            let expiration = day.plus(self.rng.range(120, 540));
            let lot = format!(
                "{}{}{}",
                char::from(b'A' + self.rng.below(26) as u8),
                char::from(b'A' + self.rng.below(26) as u8),
                self.rng.digits(5)
            );
            self.out.push(json!({
                "resourceType": "Immunization",
                "id": id,
                "status": "completed",
                "vaccineCode": concept(&v.cvx),
                "patient": self.patient_ref(),
                "encounter": reference("Encounter", &enc.id),
                "occurrenceDateTime": at.fhir(),
                "recorded": at.fhir(),
                "primarySource": true,
                "location": self.loc_ref(enc.loc),
                "lotNumber": lot,
                "expirationDate": expiration.fhir(),
                "site": concept_plain("http://terminology.hl7.org/CodeSystem/v3-ActSite", site, site_display),
                "route": concept_plain("http://terminology.hl7.org/CodeSystem/v3-RouteOfAdministration", route, route_display),
                "doseQuantity": { "value": decimal(0.5, 1), "unit": "mL", "system": UCUM, "code": "mL" },
                "performer": [{
                    "function": concept_plain(V2_0443, "AP", "Administering Provider"),
                    "actor": self.prac_ref(enc.prac),
                }],
            }));
            enc.bill_priced(v.cpt, v.cents, None);
            enc.bill(CPT_IMM_ADMIN, 1, None);
        }
    }

    // -- care plans and goals ------------------------------------------------

    fn push_care_plans(&mut self) {
        struct PlanSpec {
            category: Code,
            title: &'static str,
            conditions: Vec<usize>,
            activities: Vec<Code>,
            goal: &'static str,
            goal_category: (&'static str, &'static str),
            target: Option<(Code, f64, &'static str, &'static str, bool)>,
            behavioral: bool,
        }
        let idx = |key: CondKey| self.cond_index(key).filter(|&i| self.conditions[i].recorded.is_some());
        let mut specs: Vec<PlanSpec> = Vec::new();
        if let Some(i) = idx(CondKey::Diabetes2).or_else(|| idx(CondKey::Prediabetes)) {
            let diabetic = self.conditions[i].def.key == CondKey::Diabetes2;
            specs.push(PlanSpec {
                category: CAREPLAN_DIABETES,
                title: if diabetic { "Type 2 diabetes self-management" } else { "Prediabetes lifestyle program" },
                conditions: vec![i],
                activities: vec![ACT_DIABETIC_DIET, ACT_EXERCISE],
                goal: if diabetic { "Hemoglobin A1c below 7.0%" } else { "Hemoglobin A1c below 5.7%" },
                goal_category: ("dietary", "Dietary"),
                target: Some((
                    HBA1C.q.code,
                    if diabetic { 7.0 } else { 5.7 },
                    "%",
                    "%",
                    self.physio.a1c < if diabetic { 7.0 } else { 5.7 },
                )),
                behavioral: false,
            });
        }
        if let Some(i) = idx(CondKey::Hypertension) {
            specs.push(PlanSpec {
                category: CAREPLAN_GENERIC,
                title: "Hypertension management",
                conditions: vec![i],
                activities: vec![ACT_LOW_SALT, ACT_EXERCISE],
                goal: "Systolic blood pressure below 130 mm[Hg]",
                goal_category: ("physiotherapy", "Physiotherapy"),
                target: Some((SYSTOLIC.code, 130.0, "mm[Hg]", "mm[Hg]", self.physio.systolic < 130.0)),
                behavioral: false,
            });
        }
        if let Some(i) = idx(CondKey::Hyperlipidemia) {
            specs.push(PlanSpec {
                category: CAREPLAN_HYPERLIPIDEMIA,
                title: "Cholesterol management",
                conditions: vec![i],
                activities: vec![ACT_LOW_FAT, ACT_EXERCISE],
                goal: "LDL cholesterol below 100 mg/dL",
                goal_category: ("dietary", "Dietary"),
                target: Some((LDL.q.code, 100.0, "mg/dL", "mg/dL", self.physio.ldl < 100.0)),
                behavioral: false,
            });
        }
        if let Some(i) = idx(CondKey::Asthma) {
            specs.push(PlanSpec {
                category: CAREPLAN_ASTHMA,
                title: "Asthma action plan",
                conditions: vec![i],
                activities: if self.meds.iter().any(|m| m.def.code == FLUTICASONE.code) {
                    vec![ACT_INHALED_STEROID, ACT_BREATHING]
                } else {
                    vec![ACT_BREATHING]
                },
                goal: "Rescue inhaler needed no more than twice a week",
                goal_category: ("behavioral", "Behavioral"),
                target: None,
                behavioral: false,
            });
        }
        if let Some(i) = idx(CondKey::Obesity) {
            specs.push(PlanSpec {
                category: CAREPLAN_GENERIC,
                title: "Weight management",
                conditions: vec![i],
                activities: vec![ACT_HEALTHY_DIET, ACT_EXERCISE],
                goal: "Body mass index below 30 kg/m2",
                goal_category: ("dietary", "Dietary"),
                target: Some((BMI.code, 30.0, "kg/m2", "kg/m2", self.physio.bmi < 30.0)),
                behavioral: false,
            });
        }
        let mental: Vec<usize> =
            [CondKey::Depression, CondKey::Anxiety, CondKey::Ptsd, CondKey::Adhd].into_iter().filter_map(idx).collect();
        if !mental.is_empty() {
            let depression = self.has(CondKey::Depression);
            let anxiety = self.has(CondKey::Anxiety) || self.has(CondKey::Ptsd);
            specs.push(PlanSpec {
                category: if depression { CAREPLAN_DEPRESSION } else { CAREPLAN_MENTAL_HEALTH },
                title: "Behavioral health treatment plan",
                conditions: mental,
                activities: vec![ACT_CBT_TEAM, ACT_STRESS, ACT_PSYCH_FOLLOW_UP],
                goal: if depression {
                    "PHQ-9 score below 5 (remission)"
                } else if anxiety {
                    "GAD-7 score below 5"
                } else {
                    "Improved attention and school functioning"
                },
                goal_category: ("behavioral", "Behavioral"),
                target: if depression {
                    Some((PHQ9.code, 5.0, "{score}", "{score}", self.physio.phq9 < 5.0))
                } else if anxiety {
                    Some((GAD7.code, 5.0, "{score}", "{score}", self.physio.gad7 < 5.0))
                } else {
                    None
                },
                behavioral: true,
            });
        }
        let sud: Vec<usize> =
            [CondKey::AlcoholDependence, CondKey::OpioidDependence].into_iter().filter_map(idx).collect();
        if !sud.is_empty() {
            let alcohol = self.has(CondKey::AlcoholDependence);
            specs.push(PlanSpec {
                category: CAREPLAN_PSYCHIATRY,
                title: "Substance use disorder treatment plan",
                conditions: sud,
                activities: vec![if alcohol { ACT_ALCOHOL_COUNSELING } else { ACT_DRUG_COUNSELING }],
                goal: if alcohol { "Sustained abstinence from alcohol" } else { "Sustained remission from opioid use" },
                goal_category: ("behavioral", "Behavioral"),
                target: None,
                behavioral: true,
            });
        }
        if specs.is_empty() || self.physio.smoking == DAILY_SMOKER {
            let smoker = self.physio.smoking == DAILY_SMOKER;
            specs.push(PlanSpec {
                category: CAREPLAN_GENERIC,
                title: if smoker { "Tobacco cessation and preventive care" } else { "Preventive care plan" },
                conditions: Vec::new(),
                activities: if smoker {
                    vec![ACT_SMOKING_CESSATION, ACT_EXERCISE]
                } else {
                    vec![ACT_HEALTHY_DIET, ACT_EXERCISE]
                },
                goal: if smoker {
                    "Quit smoking within six months"
                } else {
                    "150 minutes of moderate physical activity per week"
                },
                goal_category: ("behavioral", "Behavioral"),
                target: None,
                behavioral: false,
            });
        }

        for spec in specs {
            let (start, enc_id) = spec
                .conditions
                .first()
                .and_then(|&i| self.conditions.get(i))
                .and_then(|c| Some((c.recorded?, c.encounter_id.clone()?)))
                .unwrap_or((WINDOW_END, self.first_enc_id.clone()));
            let start = if spec.conditions.is_empty() { self.first_day.fhir() } else { start.fhir() };
            let author = if spec.behavioral { PRAC_PSYCH } else { self.p.pcp };
            let goal_id = self.ids.next("Goal");
            let addresses: Vec<Value> = spec
                .conditions
                .iter()
                .filter_map(|&i| self.conditions.get(i))
                .map(|c| reference("Condition", &c.id))
                .collect();
            let mut goal = json!({
                "resourceType": "Goal",
                "id": goal_id,
                "lifecycleStatus": "active",
                "category": [concept_plain(GOAL_CATEGORY, spec.goal_category.0, spec.goal_category.1)],
                "description": { "text": spec.goal },
                "subject": self.patient_ref(),
                "startDate": start,
                "expressedBy": self.prac_ref(author),
            });
            let mut achieved = false;
            if let Some((code, value, unit, ucum, met)) = spec.target {
                achieved = met;
                let due = WINDOW_END.plus(self.rng.range(90, 270));
                goal["target"] = json!([{
                    "measure": concept(&code),
                    "detailQuantity": {
                        "value": decimal(value, if value.fract() == 0.0 { 0 } else { 1 }),
                        "comparator": "<",
                        "unit": unit,
                        "system": UCUM,
                        "code": ucum,
                    },
                    "dueDate": due.fhir(),
                }]);
            }
            let (ach_code, ach_display) = if achieved {
                ("achieved", "Achieved")
            } else if self.rng.chance(0.6) {
                ("improving", "Improving")
            } else {
                ("in-progress", "In Progress")
            };
            goal["achievementStatus"] = concept_plain(GOAL_ACHIEVEMENT, ach_code, ach_display);
            if !addresses.is_empty() {
                goal["addresses"] = Value::Array(addresses.clone());
            }
            self.out.push(goal);

            let plan_id = self.ids.next("CarePlan");
            let activities: Vec<Value> = spec
                .activities
                .iter()
                .map(|a| {
                    json!({
                        "detail": {
                            "code": concept(a),
                            "status": "in-progress",
                            "performer": [self.prac_ref(author)],
                        }
                    })
                })
                .collect();
            let mut plan = json!({
                "resourceType": "CarePlan",
                "id": plan_id,
                "status": "active",
                "intent": "plan",
                "category": [
                    concept_plain(CAREPLAN_CATEGORY, "assess-plan", "Assessment and Plan of Treatment"),
                    concept(&spec.category),
                ],
                "title": spec.title,
                "subject": self.patient_ref(),
                "encounter": reference("Encounter", &enc_id),
                "period": { "start": start },
                "author": self.prac_ref(author),
                "careTeam": [reference("CareTeam", &self.care_team_id)],
                "goal": [reference("Goal", &goal_id)],
                "activity": activities,
            });
            if !addresses.is_empty() {
                plan["addresses"] = Value::Array(addresses);
            }
            self.out.push(plan);
        }
    }

    // -- claims -------------------------------------------------------------

    fn claim_and_eob(&mut self, enc: &Enc) {
        if enc.items.is_empty() {
            return;
        }
        let institutional = enc.institutional();
        let (type_code, type_display) =
            if institutional { ("institutional", "Institutional") } else { ("professional", "Professional") };
        let claim_type = concept_plain(CLAIM_TYPE, type_code, type_display);
        let provider = if institutional { self.org_ref(enc.org) } else { self.prac_ref(enc.prac) };
        let pos = match enc.kind {
            Kind::Emergency => POS_ER,
            Kind::Inpatient => POS_INPATIENT,
            _ => POS_OFFICE,
        };
        let billable = json!({ "start": enc.start.fhir(), "end": enc.end.fhir() });
        let created = enc.end.plus_minutes(self.rng.range(60, 2 * 1440));
        let claim_number = format!("CLM{}", self.rng.digits(10));
        let care_team = json!([{
            "sequence": 1,
            "provider": self.prac_ref(enc.prac),
            "role": concept_plain(CARE_TEAM_ROLE, "primary", "Primary provider"),
        }]);
        let mut diagnoses = enc.diagnoses.clone();
        if diagnoses.is_empty() {
            diagnoses.push(ICD_ROUTINE_ADULT);
        }
        let diagnosis: Vec<Value> = diagnoses
            .iter()
            .enumerate()
            .map(|(n, code)| {
                let mut d = json!({ "sequence": n + 1, "diagnosisCodeableConcept": concept(code) });
                if n == 0 {
                    d["type"] = json!([concept_plain(DIAGNOSIS_TYPE, "principal", "Principal Diagnosis")]);
                }
                d
            })
            .collect();
        let diag_seq: Vec<usize> = (1..=diagnoses.len().min(4)).collect();
        let served = enc.start.day().fhir();

        let item_base = |n: usize, item: &Item| -> Value {
            let mut v = json!({
                "sequence": n + 1,
                "careTeamSequence": [1],
                "diagnosisSequence": diag_seq,
                "productOrService": concept(&item.code),
                "servicedDate": served,
                "locationCodeableConcept": concept(&pos),
                "quantity": { "value": item.qty },
                "unitPrice": money(item.cents),
                "net": money(item.cents * i64::from(item.qty)),
                "encounter": [reference("Encounter", &enc.id)],
            });
            if let Some(rev) = &item.revenue {
                v["revenue"] = concept(rev);
            }
            v
        };
        let items: Vec<Value> = enc.items.iter().enumerate().map(|(n, it)| item_base(n, it)).collect();
        let total: i64 = enc.items.iter().map(|i| i.cents * i64::from(i.qty)).sum();

        let claim_id = self.ids.next("Claim");
        let mut claim = json!({
            "resourceType": "Claim",
            "id": claim_id,
            "identifier": [{ "system": "http://portico.example/claim-number", "value": claim_number }],
            "status": "active",
            "type": claim_type,
            "use": "claim",
            "patient": self.patient_ref(),
            "billablePeriod": billable,
            "created": created.fhir(),
            "insurer": reference_display("Organization", &self.shared.payer.id, self.shared.payer.name),
            "provider": provider,
            "priority": concept_plain(PROCESS_PRIORITY, "normal", "Normal"),
            "careTeam": care_team,
            "diagnosis": diagnosis,
            "insurance": [{ "sequence": 1, "focal": true, "coverage": reference("Coverage", &self.coverage_id) }],
            "item": items,
            "total": money(total),
        });
        if institutional {
            claim["facility"] = self.loc_ref(enc.loc);
        }

        // Adjudication.
        let allowed_pct = self.rng.range(58, 86);
        let mut eob_items = Vec::new();
        let (mut sum_eligible, mut sum_copay, mut sum_deductible, mut sum_benefit) = (0, 0, 0, 0);
        for (n, it) in enc.items.iter().enumerate() {
            let submitted = it.cents * i64::from(it.qty);
            let eligible = submitted * allowed_pct / 100;
            let (copay, deductible) = if n == 0 {
                match enc.kind {
                    Kind::Wellness => (0, 0),
                    Kind::Emergency => (15_000.min(eligible), 0),
                    Kind::Inpatient => (0, 50_000.min(eligible)),
                    Kind::BhIntake | Kind::BhFollowUp => (3_000.min(eligible), 0),
                    _ => (2_500.min(eligible), 0),
                }
            } else {
                (0, 0)
            };
            let benefit = (eligible - copay - deductible).max(0);
            sum_eligible += eligible;
            sum_copay += copay;
            sum_deductible += deductible;
            sum_benefit += benefit;
            let mut v = item_base(n, it);
            let mut adj = vec![
                json!({ "category": concept_plain(ADJUDICATION, "submitted", "Submitted Amount"), "amount": money(submitted) }),
                json!({ "category": concept_plain(ADJUDICATION, "eligible", "Eligible Amount"), "amount": money(eligible) }),
            ];
            if copay > 0 {
                adj.push(json!({ "category": concept_plain(ADJUDICATION, "copay", "CoPay"), "amount": money(copay) }));
            }
            if deductible > 0 {
                adj.push(json!({ "category": concept_plain(ADJUDICATION, "deductible", "Deductible"), "amount": money(deductible) }));
            }
            adj.push(json!({ "category": concept_plain(ADJUDICATION, "benefit", "Benefit Amount"), "amount": money(benefit) }));
            v["adjudication"] = Value::Array(adj);
            eob_items.push(v);
        }
        let mut totals = vec![
            json!({ "category": concept_plain(ADJUDICATION, "submitted", "Submitted Amount"), "amount": money(total) }),
            json!({ "category": concept_plain(ADJUDICATION, "eligible", "Eligible Amount"), "amount": money(sum_eligible) }),
        ];
        if sum_copay > 0 {
            totals
                .push(json!({ "category": concept_plain(ADJUDICATION, "copay", "CoPay"), "amount": money(sum_copay) }));
        }
        if sum_deductible > 0 {
            totals.push(json!({ "category": concept_plain(ADJUDICATION, "deductible", "Deductible"), "amount": money(sum_deductible) }));
        }
        totals.push(json!({ "category": concept_plain(ADJUDICATION, "benefit", "Benefit Amount"), "amount": money(sum_benefit) }));

        let processed = created.plus_minutes(self.rng.range(3, 12) * 1440);
        let processed_day = processed.day().min(AS_OF_DAY);
        let paid = processed_day.plus(self.rng.range(1, 7)).min(AS_OF_DAY);
        let processed_ts = if processed.day() > AS_OF_DAY { Ts::at(AS_OF_DAY, 9, 0) } else { processed };
        let eob_id = self.ids.next("ExplanationOfBenefit");
        let mut eob = json!({
            "resourceType": "ExplanationOfBenefit",
            "id": eob_id,
            "identifier": [{ "system": "http://portico.example/claim-number", "value": claim_number }],
            "status": "active",
            "type": claim_type,
            "use": "claim",
            "patient": self.patient_ref(),
            "billablePeriod": billable,
            "created": processed_ts.fhir(),
            "insurer": reference_display("Organization", &self.shared.payer.id, self.shared.payer.name),
            "provider": provider,
            "claim": reference("Claim", &claim_id),
            "outcome": "complete",
            "disposition": "Claim settled as per contract.",
            "careTeam": care_team,
            "diagnosis": diagnosis,
            "insurance": [{ "focal": true, "coverage": reference("Coverage", &self.coverage_id) }],
            "item": eob_items,
            "total": totals,
            "payment": {
                "type": concept_plain(PAYMENT_TYPE, "complete", "Complete"),
                "date": paid.fhir(),
                "amount": money(sum_benefit),
            },
        });
        if institutional {
            eob["facility"] = self.loc_ref(enc.loc);
        }
        self.out.push(claim);
        self.out.push(eob);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npi_check_digit_matches_cms_example() {
        // CMS example: 123456789 -> check digit 3.
        assert_eq!(npi_check_digit("123456789"), 3);
    }
}
