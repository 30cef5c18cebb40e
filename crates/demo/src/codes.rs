//! Portico's own code tables for the demo generator.
//!
//! Codes come from public terminologies (LOINC, SNOMED CT, ICD-10-CM, RxNorm,
//! CVX, UCUM, CPT/HCPCS, NUBC, NUCC); the selection, groupings, value ranges
//! and prices are written for this project.

pub const SNOMED: &str = "http://snomed.info/sct";
pub const LOINC: &str = "http://loinc.org";
pub const ICD10CM: &str = "http://hl7.org/fhir/sid/icd-10-cm";
pub const RXNORM: &str = "http://www.nlm.nih.gov/research/umls/rxnorm";
pub const CVX: &str = "http://hl7.org/fhir/sid/cvx";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const CPT: &str = "http://www.ama-assn.org/go/cpt";
pub const HCPCS: &str = "http://www.cms.gov/Medicare/Coding/HCPCSReleaseCodeSets";
pub const NUBC_REVENUE: &str = "https://www.nubc.org/CodeSystem/RevenueCodes";
pub const POS: &str = "https://www.cms.gov/Medicare/Coding/place-of-service-codes/Place_of_Service_Code_Set";
pub const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
pub const NUCC: &str = "http://nucc.org/provider-taxonomy";
pub const MRN_SYSTEM: &str = "http://portico.example/mrn";
pub const MEMBER_SYSTEM: &str = "http://portico.example/member-id";
pub const PAYER_ID_SYSTEM: &str = "http://portico.example/payer-id";

pub const OBS_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
pub const COND_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
pub const COND_VER: &str = "http://terminology.hl7.org/CodeSystem/condition-ver-status";
pub const COND_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/condition-category";
pub const ALLERGY_CLINICAL: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical";
pub const ALLERGY_VER: &str = "http://terminology.hl7.org/CodeSystem/allergyintolerance-verification";
pub const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
pub const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";
pub const PARTICIPATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ParticipationType";
pub const MARITAL: &str = "http://terminology.hl7.org/CodeSystem/v3-MaritalStatus";
pub const V2_0203: &str = "http://terminology.hl7.org/CodeSystem/v2-0203";
pub const V2_0074: &str = "http://terminology.hl7.org/CodeSystem/v2-0074";
pub const V2_0131: &str = "http://terminology.hl7.org/CodeSystem/v2-0131";
pub const V2_0443: &str = "http://terminology.hl7.org/CodeSystem/v2-0443";
pub const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
pub const ORG_TYPE: &str = "http://terminology.hl7.org/CodeSystem/organization-type";
pub const PRACTITIONER_ROLE: &str = "http://terminology.hl7.org/CodeSystem/practitioner-role";
pub const CLAIM_TYPE: &str = "http://terminology.hl7.org/CodeSystem/claim-type";
pub const PROCESS_PRIORITY: &str = "http://terminology.hl7.org/CodeSystem/processpriority";
pub const DIAGNOSIS_TYPE: &str = "http://terminology.hl7.org/CodeSystem/ex-diagnosistype";
pub const CARE_TEAM_ROLE: &str = "http://terminology.hl7.org/CodeSystem/claimcareteamrole";
pub const ADJUDICATION: &str = "http://terminology.hl7.org/CodeSystem/adjudication";
pub const PAYMENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/ex-paymenttype";
pub const COVERAGE_CLASS: &str = "http://terminology.hl7.org/CodeSystem/coverage-class";
pub const SUBSCRIBER_REL: &str = "http://terminology.hl7.org/CodeSystem/subscriber-relationship";
pub const DISCHARGE_DISPOSITION: &str = "http://terminology.hl7.org/CodeSystem/discharge-disposition";
pub const ADMIT_SOURCE: &str = "http://terminology.hl7.org/CodeSystem/admit-source";
pub const DIAGNOSIS_ROLE: &str = "http://terminology.hl7.org/CodeSystem/diagnosis-role";
pub const MED_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/medicationrequest-category";
pub const GOAL_ACHIEVEMENT: &str = "http://terminology.hl7.org/CodeSystem/goal-achievement";
pub const GOAL_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/goal-category";
pub const CAREPLAN_CATEGORY: &str = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category";
pub const LOCATION_PHYSICAL: &str = "http://terminology.hl7.org/CodeSystem/location-physical-type";
pub const RACE_ETHNICITY: &str = "urn:oid:2.16.840.1.113883.6.238";
pub const BCP47: &str = "urn:ietf:bcp:47";
pub const US_CORE_RACE: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
pub const US_CORE_ETHNICITY: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-ethnicity";
pub const US_CORE_BIRTHSEX: &str = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-birthsex";

/// A single coding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code {
    pub system: &'static str,
    pub code: &'static str,
    pub display: &'static str,
}

const fn c(system: &'static str, code: &'static str, display: &'static str) -> Code {
    Code { system, code, display }
}

const fn sct(code: &'static str, display: &'static str) -> Code {
    c(SNOMED, code, display)
}

const fn icd(code: &'static str, display: &'static str) -> Code {
    c(ICD10CM, code, display)
}

const fn loinc(code: &'static str, display: &'static str) -> Code {
    c(LOINC, code, display)
}

const fn cpt(code: &'static str, display: &'static str) -> Code {
    c(CPT, code, display)
}

// ---------------------------------------------------------------------------
// Conditions

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondKind {
    Chronic,
    Acute,
    /// Mental / behavioral health (ICD-10-CM chapter F, not substance use).
    Behavioral,
    /// Substance use disorder.
    SubstanceUse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CondKey {
    Hypertension,
    Diabetes2,
    Prediabetes,
    Hyperlipidemia,
    Obesity,
    Asthma,
    OsteoarthritisKnee,
    AllergicRhinitis,
    ChronicSinusitis,
    ViralPharyngitis,
    StrepThroat,
    AcuteBronchitis,
    ViralSinusitis,
    OtitisMedia,
    AnkleSprain,
    Uti,
    Covid19,
    Pneumonia,
    Depression,
    Anxiety,
    Ptsd,
    Adhd,
    AlcoholDependence,
    OpioidDependence,
}

#[derive(Debug, Clone, Copy)]
pub struct CondDef {
    pub key: CondKey,
    pub kind: CondKind,
    pub snomed: Code,
    /// ICD-10-CM code: used on claims for every condition, and as the primary
    /// coding of behavioral-health and substance-use Condition resources.
    pub icd10: Code,
}

const fn cond(key: CondKey, kind: CondKind, snomed: Code, icd10: Code) -> CondDef {
    CondDef { key, kind, snomed, icd10 }
}

pub const CONDITIONS: &[CondDef] = &[
    cond(
        CondKey::Hypertension,
        CondKind::Chronic,
        sct("38341003", "Hypertensive disorder, systemic arterial (disorder)"),
        icd("I10", "Essential (primary) hypertension"),
    ),
    cond(
        CondKey::Diabetes2,
        CondKind::Chronic,
        sct("44054006", "Diabetes mellitus type 2 (disorder)"),
        icd("E11.9", "Type 2 diabetes mellitus without complications"),
    ),
    cond(
        CondKey::Prediabetes,
        CondKind::Chronic,
        sct("15777000", "Prediabetes (finding)"),
        icd("R73.03", "Prediabetes"),
    ),
    cond(
        CondKey::Hyperlipidemia,
        CondKind::Chronic,
        sct("55822004", "Hyperlipidemia (disorder)"),
        icd("E78.5", "Hyperlipidemia, unspecified"),
    ),
    cond(
        CondKey::Obesity,
        CondKind::Chronic,
        sct("162864005", "Body mass index 30+ - obesity (finding)"),
        icd("E66.9", "Obesity, unspecified"),
    ),
    cond(
        CondKey::Asthma,
        CondKind::Chronic,
        sct("195967001", "Asthma (disorder)"),
        icd("J45.909", "Unspecified asthma, uncomplicated"),
    ),
    cond(
        CondKey::OsteoarthritisKnee,
        CondKind::Chronic,
        sct("239873007", "Osteoarthritis of knee (disorder)"),
        icd("M17.9", "Osteoarthritis of knee, unspecified"),
    ),
    cond(
        CondKey::AllergicRhinitis,
        CondKind::Chronic,
        sct("446096008", "Perennial allergic rhinitis (disorder)"),
        icd("J30.89", "Other allergic rhinitis"),
    ),
    cond(
        CondKey::ChronicSinusitis,
        CondKind::Chronic,
        sct("40055000", "Chronic sinusitis (disorder)"),
        icd("J32.9", "Chronic sinusitis, unspecified"),
    ),
    cond(
        CondKey::ViralPharyngitis,
        CondKind::Acute,
        sct("195662009", "Acute viral pharyngitis (disorder)"),
        icd("J02.9", "Acute pharyngitis, unspecified"),
    ),
    cond(
        CondKey::StrepThroat,
        CondKind::Acute,
        sct("43878008", "Streptococcal sore throat (disorder)"),
        icd("J02.0", "Streptococcal pharyngitis"),
    ),
    cond(
        CondKey::AcuteBronchitis,
        CondKind::Acute,
        sct("10509002", "Acute bronchitis (disorder)"),
        icd("J20.9", "Acute bronchitis, unspecified"),
    ),
    cond(
        CondKey::ViralSinusitis,
        CondKind::Acute,
        sct("444814009", "Viral sinusitis (disorder)"),
        icd("J01.90", "Acute sinusitis, unspecified"),
    ),
    cond(
        CondKey::OtitisMedia,
        CondKind::Acute,
        sct("65363002", "Otitis media (disorder)"),
        icd("H66.90", "Otitis media, unspecified, unspecified ear"),
    ),
    cond(
        CondKey::AnkleSprain,
        CondKind::Acute,
        sct("44465007", "Sprain of ankle (disorder)"),
        icd("S93.409A", "Sprain of unspecified ligament of unspecified ankle, initial encounter"),
    ),
    cond(
        CondKey::Uti,
        CondKind::Acute,
        sct("68566005", "Urinary tract infectious disease (disorder)"),
        icd("N39.0", "Urinary tract infection, site not specified"),
    ),
    cond(
        CondKey::Covid19,
        CondKind::Acute,
        sct("840539006", "Disease caused by severe acute respiratory syndrome coronavirus 2 (disorder)"),
        icd("U07.1", "COVID-19"),
    ),
    cond(
        CondKey::Pneumonia,
        CondKind::Acute,
        sct("233604007", "Pneumonia (disorder)"),
        icd("J18.9", "Pneumonia, unspecified organism"),
    ),
    cond(
        CondKey::Depression,
        CondKind::Behavioral,
        sct("36923009", "Major depression, single episode (disorder)"),
        icd("F32.9", "Major depressive disorder, single episode, unspecified"),
    ),
    cond(
        CondKey::Anxiety,
        CondKind::Behavioral,
        sct("21897009", "Generalized anxiety disorder (disorder)"),
        icd("F41.1", "Generalized anxiety disorder"),
    ),
    cond(
        CondKey::Ptsd,
        CondKind::Behavioral,
        sct("47505003", "Posttraumatic stress disorder (disorder)"),
        icd("F43.10", "Post-traumatic stress disorder, unspecified"),
    ),
    cond(
        CondKey::Adhd,
        CondKind::Behavioral,
        sct("406506008", "Attention deficit hyperactivity disorder (disorder)"),
        icd("F90.0", "Attention-deficit hyperactivity disorder, predominantly inattentive type"),
    ),
    cond(
        CondKey::AlcoholDependence,
        CondKind::SubstanceUse,
        sct("66590003", "Alcohol dependence (disorder)"),
        icd("F10.20", "Alcohol dependence, uncomplicated"),
    ),
    cond(
        CondKey::OpioidDependence,
        CondKind::SubstanceUse,
        sct("75544000", "Opioid dependence (disorder)"),
        icd("F11.20", "Opioid dependence, uncomplicated"),
    ),
];

pub fn cond_def(key: CondKey) -> &'static CondDef {
    CONDITIONS.iter().find(|d| d.key == key).unwrap_or(&CONDITIONS[0])
}

/// Claim diagnosis for a preventive visit.
pub const ICD_ROUTINE_ADULT: Code =
    icd("Z00.00", "Encounter for general adult medical examination without abnormal findings");
pub const ICD_ROUTINE_CHILD: Code =
    icd("Z00.129", "Encounter for routine child health examination without abnormal findings");

// ---------------------------------------------------------------------------
// Encounter types

pub const ENC_CHECKUP: Code = sct("185349003", "Encounter for check up (procedure)");
pub const ENC_WELL_CHILD: Code = sct("410620009", "Well child visit (procedure)");
pub const ENC_FOLLOW_UP: Code = sct("390906007", "Follow-up encounter (procedure)");
pub const ENC_SYMPTOM: Code = sct("185345009", "Encounter for symptom (procedure)");
pub const ENC_PSYCH_INTAKE: Code =
    sct("79094001", "Initial psychiatric interview with mental status and evaluation (procedure)");
pub const ENC_PSYCH_FOLLOW_UP: Code = sct("88848003", "Psychiatric follow-up (procedure)");
pub const ENC_EMERGENCY: Code = sct("50849002", "Emergency room admission (procedure)");
pub const ENC_HOSPITAL: Code = sct("32485007", "Hospital admission (procedure)");

// ---------------------------------------------------------------------------
// Observations

/// A quantitative observation definition.
#[derive(Debug, Clone, Copy)]
pub struct QtyDef {
    pub code: Code,
    pub unit: &'static str,
    pub ucum: &'static str,
    pub decimals: usize,
}

const fn q(code: Code, unit: &'static str, ucum: &'static str, decimals: usize) -> QtyDef {
    QtyDef { code, unit, ucum, decimals }
}

pub const BODY_HEIGHT: QtyDef = q(loinc("8302-2", "Body height"), "cm", "cm", 1);
pub const BODY_WEIGHT: QtyDef = q(loinc("29463-7", "Body weight"), "kg", "kg", 1);
pub const BMI: QtyDef = q(loinc("39156-5", "Body mass index (BMI) [Ratio]"), "kg/m2", "kg/m2", 1);
pub const HEART_RATE: QtyDef = q(loinc("8867-4", "Heart rate"), "/min", "/min", 0);
pub const RESP_RATE: QtyDef = q(loinc("9279-1", "Respiratory rate"), "/min", "/min", 0);
pub const BODY_TEMP: QtyDef = q(loinc("8310-5", "Body temperature"), "Cel", "Cel", 1);
pub const SPO2: QtyDef = q(loinc("59408-5", "Oxygen saturation in Arterial blood by Pulse oximetry"), "%", "%", 0);
pub const BP_PANEL: Code = loinc("85354-9", "Blood pressure panel with all children optional");
pub const SYSTOLIC: QtyDef = q(loinc("8480-6", "Systolic blood pressure"), "mm[Hg]", "mm[Hg]", 0);
pub const DIASTOLIC: QtyDef = q(loinc("8462-4", "Diastolic blood pressure"), "mm[Hg]", "mm[Hg]", 0);

pub const SMOKING_STATUS: Code = loinc("72166-2", "Tobacco smoking status");
pub const NEVER_SMOKER: Code = sct("266919005", "Never smoked tobacco (finding)");
pub const EX_SMOKER: Code = sct("8517006", "Ex-smoker (finding)");
pub const DAILY_SMOKER: Code = sct("449868002", "Smokes tobacco daily (finding)");

pub const PHQ2: QtyDef =
    q(loinc("55758-7", "Patient Health Questionnaire 2 item (PHQ-2) total score [Reported]"), "{score}", "{score}", 0);
pub const PHQ9: QtyDef =
    q(loinc("44261-6", "Patient Health Questionnaire 9 item (PHQ-9) total score [Reported]"), "{score}", "{score}", 0);
pub const GAD7: QtyDef = q(
    loinc("70274-6", "Generalized anxiety disorder 7 item (GAD-7) total score [Reported.PHQ]"),
    "{score}",
    "{score}",
    0,
);
pub const AUDIT_C: QtyDef = q(loinc("75626-2", "Total score [AUDIT-C]"), "{score}", "{score}", 0);

/// A laboratory test with its normal reference range.
#[derive(Debug, Clone, Copy)]
pub struct LabDef {
    pub q: QtyDef,
    pub low: f64,
    pub high: f64,
}

const fn lab(code: Code, unit: &'static str, decimals: usize, low: f64, high: f64) -> LabDef {
    LabDef { q: q(code, unit, unit, decimals), low, high }
}

pub const GLUCOSE: LabDef = lab(loinc("2339-0", "Glucose [Mass/volume] in Blood"), "mg/dL", 0, 70.0, 99.0);
pub const BUN: LabDef = lab(loinc("3094-0", "Urea nitrogen [Mass/volume] in Serum or Plasma"), "mg/dL", 0, 7.0, 20.0);
pub const CREATININE: LabDef =
    lab(loinc("2160-0", "Creatinine [Mass/volume] in Serum or Plasma"), "mg/dL", 2, 0.6, 1.2);
pub const SODIUM: LabDef = lab(loinc("2951-2", "Sodium [Moles/volume] in Serum or Plasma"), "mmol/L", 0, 136.0, 145.0);
pub const POTASSIUM: LabDef =
    lab(loinc("2823-3", "Potassium [Moles/volume] in Serum or Plasma"), "mmol/L", 1, 3.5, 5.1);
pub const CHLORIDE: LabDef =
    lab(loinc("2075-0", "Chloride [Moles/volume] in Serum or Plasma"), "mmol/L", 0, 98.0, 107.0);
pub const CO2: LabDef =
    lab(loinc("2028-9", "Carbon dioxide, total [Moles/volume] in Serum or Plasma"), "mmol/L", 0, 22.0, 29.0);
pub const CALCIUM: LabDef = lab(loinc("17861-6", "Calcium [Mass/volume] in Serum or Plasma"), "mg/dL", 1, 8.6, 10.3);
pub const CHOLESTEROL: LabDef =
    lab(loinc("2093-3", "Cholesterol [Mass/volume] in Serum or Plasma"), "mg/dL", 0, 100.0, 199.0);
pub const TRIGLYCERIDES: LabDef =
    lab(loinc("2571-8", "Triglyceride [Mass/volume] in Serum or Plasma"), "mg/dL", 0, 40.0, 149.0);
pub const HDL: LabDef =
    lab(loinc("2085-9", "Cholesterol in HDL [Mass/volume] in Serum or Plasma"), "mg/dL", 0, 40.0, 90.0);
pub const LDL: LabDef = lab(
    loinc("18262-6", "Cholesterol in LDL [Mass/volume] in Serum or Plasma by Direct assay"),
    "mg/dL",
    0,
    40.0,
    129.0,
);
pub const HBA1C: LabDef = lab(loinc("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood"), "%", 1, 4.0, 5.6);
pub const WBC: LabDef =
    lab(loinc("6690-2", "Leukocytes [#/volume] in Blood by Automated count"), "10*3/uL", 1, 4.5, 11.0);
pub const RBC: LabDef =
    lab(loinc("789-8", "Erythrocytes [#/volume] in Blood by Automated count"), "10*6/uL", 2, 4.2, 5.9);
pub const HEMOGLOBIN: LabDef = lab(loinc("718-7", "Hemoglobin [Mass/volume] in Blood"), "g/dL", 1, 12.0, 17.5);
pub const HEMATOCRIT: LabDef =
    lab(loinc("4544-3", "Hematocrit [Volume Fraction] of Blood by Automated count"), "%", 1, 36.0, 50.0);
pub const PLATELETS: LabDef =
    lab(loinc("777-3", "Platelets [#/volume] in Blood by Automated count"), "10*3/uL", 0, 150.0, 400.0);

pub const PANEL_LIPID: Code = loinc("57698-3", "Lipid panel with direct LDL - Serum or Plasma");
pub const PANEL_BMP: Code = loinc("51990-0", "Basic metabolic panel - Blood");
pub const PANEL_CBC: Code = loinc("58410-2", "CBC panel - Blood by Automated count");

// ---------------------------------------------------------------------------
// Medications (RxNorm clinical drugs)

#[derive(Debug, Clone, Copy)]
pub struct MedDef {
    pub code: Code,
    pub sig: &'static str,
    /// Doses per day (0 = as needed).
    pub per_day: u32,
    pub dispense: u32,
    pub dispense_unit: &'static str,
    pub dispense_ucum: &'static str,
}

const fn med(
    code: &'static str,
    display: &'static str,
    sig: &'static str,
    per_day: u32,
    dispense: u32,
    dispense_unit: &'static str,
    dispense_ucum: &'static str,
) -> MedDef {
    MedDef { code: c(RXNORM, code, display), sig, per_day, dispense, dispense_unit, dispense_ucum }
}

pub const LISINOPRIL: MedDef =
    med("314076", "lisinopril 10 MG Oral Tablet", "Take 1 tablet by mouth once daily.", 1, 90, "tablet", "{tbl}");
pub const AMLODIPINE: MedDef =
    med("197361", "amlodipine 5 MG Oral Tablet", "Take 1 tablet by mouth once daily.", 1, 90, "tablet", "{tbl}");
pub const METFORMIN: MedDef = med(
    "860975",
    "24 HR metformin hydrochloride 500 MG Extended Release Oral Tablet",
    "Take 1 tablet by mouth once daily with the evening meal.",
    1,
    90,
    "tablet",
    "{tbl}",
);
pub const SIMVASTATIN: MedDef = med(
    "312961",
    "simvastatin 20 MG Oral Tablet",
    "Take 1 tablet by mouth once daily in the evening.",
    1,
    90,
    "tablet",
    "{tbl}",
);
pub const ALBUTEROL: MedDef = med(
    "745679",
    "200 ACTUAT albuterol 0.09 MG/ACTUAT Metered Dose Inhaler",
    "Inhale 2 puffs every 4 to 6 hours as needed for wheezing or shortness of breath.",
    0,
    1,
    "inhaler",
    "{inhaler}",
);
pub const FLUTICASONE: MedDef = med(
    "895994",
    "120 ACTUAT fluticasone propionate 0.044 MG/ACTUAT Metered Dose Inhaler",
    "Inhale 2 puffs twice daily. Rinse mouth after use.",
    2,
    1,
    "inhaler",
    "{inhaler}",
);
pub const NAPROXEN: MedDef = med(
    "198014",
    "naproxen 500 MG Oral Tablet",
    "Take 1 tablet by mouth twice daily with food as needed for joint pain.",
    0,
    60,
    "tablet",
    "{tbl}",
);
pub const LORATADINE: MedDef =
    med("311372", "loratadine 10 MG Oral Tablet", "Take 1 tablet by mouth once daily.", 1, 30, "tablet", "{tbl}");
pub const SERTRALINE: MedDef =
    med("312941", "sertraline 50 MG Oral Tablet", "Take 1 tablet by mouth once daily.", 1, 30, "tablet", "{tbl}");
pub const ESCITALOPRAM: MedDef =
    med("349332", "escitalopram 10 MG Oral Tablet", "Take 1 tablet by mouth once daily.", 1, 30, "tablet", "{tbl}");
pub const NALTREXONE: MedDef = med(
    "1483744",
    "naltrexone hydrochloride 50 MG Oral Tablet",
    "Take 1 tablet by mouth once daily.",
    1,
    30,
    "tablet",
    "{tbl}",
);
pub const BUPRENORPHINE_NALOXONE: MedDef = med(
    "1010604",
    "buprenorphine 8 MG / naloxone 2 MG Sublingual Film",
    "Dissolve 1 film under the tongue once daily.",
    1,
    14,
    "film",
    "{film}",
);
pub const ACETAMINOPHEN: MedDef = med(
    "313782",
    "acetaminophen 325 MG Oral Tablet",
    "Take 2 tablets by mouth every 6 hours as needed for pain or fever.",
    0,
    30,
    "tablet",
    "{tbl}",
);
pub const IBUPROFEN: MedDef = med(
    "310965",
    "ibuprofen 200 MG Oral Tablet",
    "Take 2 tablets by mouth every 6 hours as needed for pain.",
    0,
    40,
    "tablet",
    "{tbl}",
);
pub const AMOXICILLIN_500: MedDef = med(
    "308192",
    "amoxicillin 500 MG Oral Tablet",
    "Take 1 tablet by mouth twice daily for 10 days.",
    2,
    20,
    "tablet",
    "{tbl}",
);
pub const AMOXICILLIN_250: MedDef = med(
    "308182",
    "amoxicillin 250 MG Oral Capsule",
    "Take 1 capsule by mouth three times daily for 10 days.",
    3,
    30,
    "capsule",
    "{capsule}",
);
pub const AMOX_CLAV: MedDef = med(
    "562251",
    "amoxicillin 250 MG / clavulanate 125 MG Oral Tablet",
    "Take 1 tablet by mouth three times daily for 7 days.",
    3,
    21,
    "tablet",
    "{tbl}",
);
pub const AZITHROMYCIN: MedDef = med(
    "308460",
    "azithromycin 250 MG Oral Tablet",
    "Take 2 tablets on day 1, then 1 tablet daily on days 2 through 5.",
    1,
    6,
    "tablet",
    "{tbl}",
);
pub const NITROFURANTOIN: MedDef = med(
    "311995",
    "nitrofurantoin, macrocrystals 50 MG Oral Capsule",
    "Take 1 capsule by mouth four times daily for 5 days.",
    4,
    20,
    "capsule",
    "{capsule}",
);
pub const PREDNISONE: MedDef = med(
    "312617",
    "predniSONE 5 MG Oral Tablet",
    "Take 8 tablets by mouth once daily for 5 days.",
    1,
    40,
    "tablet",
    "{tbl}",
);

// ---------------------------------------------------------------------------
// Immunizations (CVX) with the CPT product code billed for them

#[derive(Debug, Clone, Copy)]
pub struct VaccineDef {
    pub cvx: Code,
    pub cpt: Code,
    pub cents: i64,
    /// Age window in years (inclusive) in which the dose is given.
    pub min_age: i64,
    pub max_age: i64,
}

const fn vax(
    cvx: &'static str,
    display: &'static str,
    cpt_code: &'static str,
    cpt_display: &'static str,
    cents: i64,
    min_age: i64,
    max_age: i64,
) -> VaccineDef {
    VaccineDef { cvx: c(CVX, cvx, display), cpt: cpt(cpt_code, cpt_display), cents, min_age, max_age }
}

pub const FLU: VaccineDef = vax(
    "140",
    "Influenza, seasonal, injectable, preservative free",
    "90686",
    "Influenza vaccine, quadrivalent, preservative free, intramuscular",
    3200,
    1,
    120,
);
pub const COVID_MRNA: VaccineDef = vax(
    "208",
    "SARS-COV-2 (COVID-19) vaccine, mRNA, spike protein, LNP, preservative free, 30 mcg/0.3mL dose",
    "91300",
    "SARS-CoV-2 vaccine, mRNA-LNP, 30 mcg/0.3 mL dose",
    4000,
    12,
    120,
);
pub const TDAP: VaccineDef =
    vax("115", "Tdap", "90715", "Tdap vaccine, 7 years or older, intramuscular", 5500, 11, 120);
pub const ZOSTER: VaccineDef = vax(
    "187",
    "zoster vaccine recombinant",
    "90750",
    "Zoster (shingles) vaccine, recombinant, intramuscular",
    21000,
    50,
    120,
);
pub const PCV13: VaccineDef = vax(
    "133",
    "Pneumococcal conjugate PCV 13",
    "90670",
    "Pneumococcal conjugate vaccine, 13 valent, intramuscular",
    23000,
    65,
    120,
);
pub const HPV9: VaccineDef =
    vax("165", "HPV9", "90651", "Human papillomavirus vaccine, 9-valent, intramuscular", 28000, 11, 14);
pub const MENACWY: VaccineDef =
    vax("114", "meningococcal MCV4P", "90734", "Meningococcal conjugate vaccine, intramuscular", 14000, 11, 14);
pub const DTAP: VaccineDef =
    vax("20", "DTaP", "90700", "DTaP vaccine, younger than 7 years, intramuscular", 4000, 0, 6);
pub const IPV: VaccineDef =
    vax("10", "IPV", "90713", "Poliovirus vaccine, inactivated, subcutaneous or intramuscular", 4500, 0, 6);
pub const MMR: VaccineDef =
    vax("03", "MMR", "90707", "Measles, mumps and rubella virus vaccine, live, subcutaneous", 9000, 1, 6);
pub const VARICELLA: VaccineDef =
    vax("21", "varicella", "90716", "Varicella virus vaccine, live, subcutaneous", 15000, 1, 6);
pub const HEP_A: VaccineDef = vax(
    "83",
    "Hep A, ped/adol, 2 dose",
    "90633",
    "Hepatitis A vaccine, pediatric/adolescent, 2 dose, intramuscular",
    4000,
    1,
    3,
);
pub const HEP_B: VaccineDef = vax(
    "08",
    "Hep B, adolescent or pediatric",
    "90744",
    "Hepatitis B vaccine, pediatric/adolescent, 3 dose, intramuscular",
    3000,
    0,
    1,
);

/// Childhood series offered at well-child visits when due (one dose each here).
pub const CHILD_VACCINES: &[VaccineDef] = &[HEP_B, HEP_A, DTAP, IPV, MMR, VARICELLA, TDAP, HPV9, MENACWY];

// ---------------------------------------------------------------------------
// Allergies

#[derive(Debug, Clone, Copy)]
pub struct AllergyDef {
    pub code: Code,
    pub category: &'static str,
    pub reaction: Code,
    pub criticality: &'static str,
}

const fn allergy(
    code: &'static str,
    display: &'static str,
    category: &'static str,
    reaction: Code,
    criticality: &'static str,
) -> AllergyDef {
    AllergyDef { code: sct(code, display), category, reaction, criticality }
}

pub const HIVES: Code = sct("247472004", "Wheal (finding)");
pub const RASH: Code = sct("271807003", "Eruption of skin (disorder)");
pub const ANAPHYLAXIS: Code = sct("39579001", "Anaphylaxis (disorder)");
pub const SNEEZING: Code = sct("76067001", "Sneezing (finding)");
pub const DYSPNEA: Code = sct("267036007", "Dyspnea (finding)");

pub const ALLERGY_PENICILLIN: AllergyDef =
    allergy("91936005", "Allergy to penicillin (finding)", "medication", HIVES, "high");

pub const ALLERGIES: &[AllergyDef] = &[
    ALLERGY_PENICILLIN,
    allergy("91935009", "Allergy to peanuts (finding)", "food", ANAPHYLAXIS, "high"),
    allergy("300913006", "Shellfish allergy (finding)", "food", HIVES, "high"),
    allergy("91930004", "Allergy to eggs (finding)", "food", RASH, "low"),
    allergy("418689008", "Allergy to grass pollen (finding)", "environment", SNEEZING, "low"),
    allergy("419263009", "Allergy to tree pollen (finding)", "environment", SNEEZING, "low"),
    allergy("232347008", "Dander (animal) allergy (finding)", "environment", DYSPNEA, "low"),
    allergy("232350006", "House dust mite allergy (finding)", "environment", SNEEZING, "low"),
    allergy("300916003", "Latex allergy (finding)", "environment", RASH, "high"),
];

// ---------------------------------------------------------------------------
// Procedures

pub const PROC_DEPRESSION_SCREEN: Code = sct("171207006", "Depression screening (procedure)");
pub const PROC_MED_RECONCILIATION: Code = sct("428191000124101", "Documentation of current medications (procedure)");
pub const PROC_THROAT_CULTURE: Code = sct("117015009", "Throat culture (procedure)");
pub const PROC_CHEST_XRAY: Code = sct("399208008", "Plain X-ray of chest (procedure)");
pub const PROC_CBT: Code = sct("228557008", "Cognitive and behavioral therapy (regime/therapy)");
pub const PROC_SUD_COUNSELING: Code = sct("313071005", "Counseling for substance abuse (procedure)");
pub const PROC_PSYCH_ASSESSMENT: Code = sct("405783006", "Psychological assessment (procedure)");
pub const PROC_SPIROMETRY: Code = sct("127783003", "Spirometry (procedure)");
pub const PROC_IMMOBILIZATION: Code = sct("274474001", "Bone immobilization (procedure)");
pub const PROC_NEBULIZER: Code = sct("56251003", "Nebulizer therapy (procedure)");

// ---------------------------------------------------------------------------
// Billing codes (CPT/HCPCS) and prices in cents

pub const CPT_OFFICE_3: Code = cpt("99213", "Office or outpatient visit, established patient, low complexity");
pub const CPT_OFFICE_4: Code = cpt("99214", "Office or outpatient visit, established patient, moderate complexity");
pub const CPT_PREVENT_1_4: Code = cpt("99392", "Periodic preventive medicine visit, age 1 through 4 years");
pub const CPT_PREVENT_5_11: Code = cpt("99393", "Periodic preventive medicine visit, age 5 through 11 years");
pub const CPT_PREVENT_12_17: Code = cpt("99394", "Periodic preventive medicine visit, age 12 through 17 years");
pub const CPT_PREVENT_18_39: Code = cpt("99395", "Periodic preventive medicine visit, age 18 through 39 years");
pub const CPT_PREVENT_40_64: Code = cpt("99396", "Periodic preventive medicine visit, age 40 through 64 years");
pub const CPT_PREVENT_65: Code = cpt("99397", "Periodic preventive medicine visit, age 65 years and older");
pub const CPT_ED_4: Code = cpt("99284", "Emergency department visit, moderate complexity");
pub const CPT_HOSPITAL_INITIAL: Code = cpt("99223", "Initial hospital inpatient care, high complexity");
pub const CPT_HOSPITAL_SUBSEQUENT: Code = cpt("99232", "Subsequent hospital inpatient care, moderate complexity");
pub const CPT_DISCHARGE: Code = cpt("99238", "Hospital discharge day management, 30 minutes or less");
pub const CPT_PSYCH_EVAL: Code = cpt("90791", "Psychiatric diagnostic evaluation");
pub const CPT_PSYCHOTHERAPY: Code = cpt("90834", "Psychotherapy, 45 minutes with patient");
pub const CPT_LIPID: Code = cpt("80061", "Lipid panel");
pub const CPT_BMP: Code = cpt("80048", "Basic metabolic panel");
pub const CPT_CBC: Code = cpt("85025", "Complete blood count with automated differential");
pub const CPT_A1C: Code = cpt("83036", "Hemoglobin A1c");
pub const CPT_VENIPUNCTURE: Code = cpt("36415", "Collection of venous blood by venipuncture");
pub const CPT_IMM_ADMIN: Code = cpt("90471", "Immunization administration, one vaccine");
pub const CPT_SCREENING: Code = cpt("96127", "Brief emotional/behavioral assessment with standardized instrument");
pub const CPT_RAPID_STREP: Code = cpt("87880", "Infectious agent antigen detection, Streptococcus group A");
pub const CPT_CHEST_XRAY: Code = cpt("71046", "Radiologic examination, chest, 2 views");
pub const CPT_SPIROMETRY: Code = cpt("94010", "Spirometry");
pub const CPT_NEBULIZER: Code = cpt("94640", "Inhalation treatment for acute airway obstruction");
pub const CPT_STRAPPING: Code = cpt("29540", "Strapping of ankle and/or foot");
pub const HCPCS_ALCOHOL_SCREEN: Code = c(HCPCS, "G0442", "Annual alcohol misuse screening, 5 to 15 minutes");
pub const HCPCS_OUD_BUNDLE: Code =
    c(HCPCS, "G2068", "Medication assisted treatment, buprenorphine (oral); weekly bundle");

pub fn price_cents(code: &Code) -> i64 {
    match code.code {
        "99213" => 13_500,
        "99214" => 19_800,
        "99392" | "99393" => 19_000,
        "99394" => 21_000,
        "99395" => 24_000,
        "99396" => 26_500,
        "99397" => 28_500,
        "99284" => 68_000,
        "99223" => 42_000,
        "99232" => 15_500,
        "99238" => 14_500,
        "90791" => 26_000,
        "90834" => 15_500,
        "80061" => 4_500,
        "80048" => 3_200,
        "85025" => 2_800,
        "83036" => 3_600,
        "36415" => 1_200,
        "90471" => 2_500,
        "96127" => 1_500,
        "87880" => 2_600,
        "71046" => 12_500,
        "94010" => 6_400,
        "94640" => 4_800,
        "29540" => 5_500,
        "G0442" => 2_200,
        "G2068" => 9_500,
        _ => 5_000,
    }
}

pub const REV_ER: Code = c(NUBC_REVENUE, "0450", "Emergency Room - General Classification");
pub const REV_LAB: Code = c(NUBC_REVENUE, "0300", "Laboratory - General Classification");
pub const REV_RADIOLOGY: Code = c(NUBC_REVENUE, "0320", "Radiology - Diagnostic - General Classification");
pub const REV_ROOM: Code = c(NUBC_REVENUE, "0120", "Room & Board - Semi-Private Two Beds - General Classification");
pub const REV_RESPIRATORY: Code = c(NUBC_REVENUE, "0410", "Respiratory Services - General Classification");

pub const POS_OFFICE: Code = c(POS, "11", "Office");
pub const POS_INPATIENT: Code = c(POS, "21", "Inpatient Hospital");
pub const POS_ER: Code = c(POS, "23", "Emergency Room - Hospital");

// ---------------------------------------------------------------------------
// Care plans and goals

pub const CAREPLAN_GENERIC: Code = sct("734163000", "Care plan (record artifact)");
pub const CAREPLAN_DIABETES: Code = sct("698360004", "Diabetes self management plan (record artifact)");
pub const CAREPLAN_ASTHMA: Code = sct("699728000", "Asthma self management (record artifact)");
pub const CAREPLAN_HYPERLIPIDEMIA: Code = sct("736285004", "Hyperlipidemia clinical management plan (record artifact)");
pub const CAREPLAN_MENTAL_HEALTH: Code = sct("718347000", "Mental health care plan (record artifact)");
pub const CAREPLAN_DEPRESSION: Code =
    sct("737434004", "Major depressive disorder clinical management plan (record artifact)");
pub const CAREPLAN_PSYCHIATRY: Code = sct("736254008", "Psychiatry care plan (record artifact)");

pub const ACT_HEALTHY_DIET: Code = sct("226234005", "Healthy diet (regime/therapy)");
pub const ACT_EXERCISE: Code = sct("229065009", "Exercise therapy (regime/therapy)");
pub const ACT_DIABETIC_DIET: Code = sct("160670007", "Diabetic diet (finding)");
pub const ACT_LOW_SALT: Code = sct("183063000", "Low salt diet education (procedure)");
pub const ACT_LOW_FAT: Code = sct("436861000124104", "Decreased fat diet (regime/therapy)");
pub const ACT_INHALED_STEROID: Code = sct("710818004", "Inhaled steroid therapy (procedure)");
pub const ACT_BREATHING: Code = sct("229298005", "Breathing control (regime/therapy)");
pub const ACT_CBT_TEAM: Code =
    sct("425680009", "Cognitive behavioral therapy by multidisciplinary team (regime/therapy)");
pub const ACT_STRESS: Code = sct("226060000", "Stress management (regime/therapy)");
pub const ACT_ALCOHOL_COUNSELING: Code = sct("24165007", "Alcoholism counseling (procedure)");
pub const ACT_DRUG_COUNSELING: Code = sct("60112009", "Drug addiction counseling (procedure)");
pub const ACT_PSYCH_FOLLOW_UP: Code = sct("88848003", "Psychiatric follow-up (procedure)");
pub const ACT_SMOKING_CESSATION: Code = sct("710081004", "Smoking cessation therapy (regime/therapy)");

// ---------------------------------------------------------------------------
// Practitioner specialties (NUCC taxonomy)

pub const NUCC_FAMILY: Code = c(NUCC, "207Q00000X", "Family Medicine Physician");
pub const NUCC_INTERNAL: Code = c(NUCC, "207R00000X", "Internal Medicine Physician");
pub const NUCC_PSYCHIATRY: Code = c(NUCC, "2084P0800X", "Psychiatry & Neurology Physician - Psychiatry");
pub const NUCC_EMERGENCY: Code = c(NUCC, "207P00000X", "Emergency Medicine Physician");
pub const NUCC_HOSPITALIST: Code = c(NUCC, "208M00000X", "Hospitalist Physician");
pub const NUCC_NP_FAMILY: Code = c(NUCC, "363LF0000X", "Nurse Practitioner - Family");

pub const ROLE_PCP: Code = sct("446050000", "Primary care physician (occupation)");
pub const ROLE_PSYCHIATRIST: Code = sct("80584001", "Psychiatrist (occupation)");
pub const ROLE_PATIENT: Code = sct("116154003", "Patient (person)");
pub const CARE_TEAM_LONGITUDINAL: Code = loinc("LA28865-6", "Longitudinal care-coordination focused care team");

// ---------------------------------------------------------------------------
// Demographics

pub const RACES: &[(&str, &str, u32)] = &[
    ("2106-3", "White", 62),
    ("2054-5", "Black or African American", 14),
    ("2028-9", "Asian", 9),
    ("1002-5", "American Indian or Alaska Native", 2),
    ("2076-8", "Native Hawaiian or Other Pacific Islander", 1),
    ("2131-1", "Other Race", 12),
];

pub const HISPANIC: (&str, &str) = ("2135-2", "Hispanic or Latino");
pub const NOT_HISPANIC: (&str, &str) = ("2186-5", "Not Hispanic or Latino");

pub const FEMALE_NAMES: &[&str] = &[
    "Olivia",
    "Emma",
    "Ava",
    "Sophia",
    "Isabella",
    "Mia",
    "Amelia",
    "Harper",
    "Evelyn",
    "Abigail",
    "Emily",
    "Elizabeth",
    "Sofia",
    "Avery",
    "Ella",
    "Scarlett",
    "Grace",
    "Chloe",
    "Victoria",
    "Riley",
    "Aria",
    "Lily",
    "Aubrey",
    "Zoey",
    "Penelope",
    "Hannah",
    "Nora",
    "Layla",
    "Camila",
    "Mary",
    "Patricia",
    "Jennifer",
    "Linda",
    "Barbara",
    "Susan",
    "Jessica",
    "Sarah",
    "Karen",
    "Nancy",
    "Lisa",
    "Margaret",
    "Sandra",
    "Ashley",
    "Dorothy",
    "Kimberly",
    "Donna",
    "Michelle",
    "Carol",
    "Amanda",
    "Melissa",
    "Deborah",
    "Stephanie",
    "Rebecca",
    "Laura",
    "Maria",
    "Rosa",
    "Mei",
    "Priya",
    "Aaliyah",
    "Imani",
];

pub const MALE_NAMES: &[&str] = &[
    "Liam",
    "Noah",
    "Oliver",
    "Elijah",
    "James",
    "William",
    "Benjamin",
    "Lucas",
    "Henry",
    "Alexander",
    "Mason",
    "Michael",
    "Ethan",
    "Daniel",
    "Jacob",
    "Logan",
    "Jackson",
    "Levi",
    "Sebastian",
    "Mateo",
    "Jack",
    "Owen",
    "Theodore",
    "Aiden",
    "Samuel",
    "Joseph",
    "John",
    "David",
    "Wyatt",
    "Matthew",
    "Robert",
    "Richard",
    "Thomas",
    "Charles",
    "Christopher",
    "Anthony",
    "Mark",
    "Donald",
    "Steven",
    "Paul",
    "Andrew",
    "Joshua",
    "Kenneth",
    "Kevin",
    "Brian",
    "George",
    "Edward",
    "Ronald",
    "Timothy",
    "Jason",
    "Jose",
    "Carlos",
    "Luis",
    "Wei",
    "Arjun",
    "Malik",
    "Andre",
    "Darnell",
    "Hiroshi",
    "Omar",
];

pub const FAMILY_NAMES: &[&str] = &[
    "Smith",
    "Johnson",
    "Williams",
    "Brown",
    "Jones",
    "Garcia",
    "Miller",
    "Davis",
    "Rodriguez",
    "Martinez",
    "Hernandez",
    "Lopez",
    "Gonzalez",
    "Wilson",
    "Anderson",
    "Thomas",
    "Taylor",
    "Moore",
    "Jackson",
    "Martin",
    "Lee",
    "Perez",
    "Thompson",
    "White",
    "Harris",
    "Sanchez",
    "Clark",
    "Ramirez",
    "Lewis",
    "Robinson",
    "Walker",
    "Young",
    "Allen",
    "King",
    "Wright",
    "Scott",
    "Torres",
    "Nguyen",
    "Hill",
    "Flores",
    "Green",
    "Adams",
    "Nelson",
    "Baker",
    "Hall",
    "Rivera",
    "Campbell",
    "Mitchell",
    "Carter",
    "Roberts",
    "Gomez",
    "Phillips",
    "Evans",
    "Turner",
    "Diaz",
    "Parker",
    "Cruz",
    "Edwards",
    "Collins",
    "Reyes",
    "Stewart",
    "Morris",
    "Morales",
    "Murphy",
    "Cook",
    "Rogers",
    "Gutierrez",
    "Ortiz",
    "Morgan",
    "Cooper",
    "Peterson",
    "Bailey",
    "Reed",
    "Kelly",
    "Howard",
    "Ramos",
    "Kim",
    "Cox",
    "Ward",
    "Richardson",
    "Watson",
    "Brooks",
    "Chavez",
    "Wood",
    "James",
    "Bennett",
    "Gray",
    "Mendoza",
    "Ruiz",
    "Hughes",
    "Price",
    "Alvarez",
    "Castillo",
    "Sanders",
    "Patel",
    "Myers",
    "Long",
    "Ross",
    "Foster",
    "Chen",
    "O'Brien",
    "Sullivan",
    "Kowalski",
    "Okafor",
    "Tran",
    "Shah",
    "Yamamoto",
    "Fitzgerald",
];

pub const STREET_NAMES: &[&str] = &[
    "Maple",
    "Oak",
    "Elm",
    "Cedar",
    "Pine",
    "Washington",
    "Lincoln",
    "Park",
    "Lake",
    "Hill",
    "Chestnut",
    "Walnut",
    "Highland",
    "Pleasant",
    "Prospect",
    "Summer",
    "Winter",
    "Spring",
    "Union",
    "Church",
    "School",
    "Center",
    "Franklin",
    "Adams",
    "Beacon",
    "Harbor",
    "Forest",
    "Meadow",
    "River",
    "Orchard",
    "Willow",
    "Birch",
    "Cottage",
    "Garden",
    "Linden",
    "Bay",
];

pub const STREET_SUFFIXES: &[&str] = &["Street", "Avenue", "Road", "Lane", "Drive", "Court", "Way", "Terrace", "Place"];

/// (city, state, postal code, county, phone area code)
pub const CITIES: &[(&str, &str, &str, &str, &str)] = &[
    ("Boston", "MA", "02118", "Suffolk County", "617"),
    ("Boston", "MA", "02130", "Suffolk County", "617"),
    ("Cambridge", "MA", "02139", "Middlesex County", "617"),
    ("Somerville", "MA", "02143", "Middlesex County", "617"),
    ("Quincy", "MA", "02169", "Norfolk County", "617"),
    ("Newton", "MA", "02458", "Middlesex County", "617"),
    ("Brookline", "MA", "02445", "Norfolk County", "617"),
    ("Medford", "MA", "02155", "Middlesex County", "781"),
    ("Malden", "MA", "02148", "Middlesex County", "781"),
    ("Waltham", "MA", "02453", "Middlesex County", "781"),
    ("Arlington", "MA", "02474", "Middlesex County", "781"),
    ("Watertown", "MA", "02472", "Middlesex County", "617"),
    ("Revere", "MA", "02151", "Suffolk County", "781"),
    ("Framingham", "MA", "01702", "Middlesex County", "508"),
    ("Worcester", "MA", "01609", "Worcester County", "508"),
    ("Brockton", "MA", "02301", "Plymouth County", "508"),
    ("Lowell", "MA", "01852", "Middlesex County", "978"),
    ("Lynn", "MA", "01902", "Essex County", "781"),
    ("Salem", "MA", "01970", "Essex County", "978"),
    ("Providence", "RI", "02903", "Providence County", "401"),
    ("Nashua", "NH", "03060", "Hillsborough County", "603"),
];
