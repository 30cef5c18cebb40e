//! The sensitive categories a person can withhold from an app. Records carry them as security
//! labels (`meta.security`) from HL7 v3 ActCode; the consent screen shows the plain-language
//! description, and the data layer filters on the codes.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::AuthError;

/// The code system of the labels (`meta.security.system`).
pub const V3_ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SensitiveCategory {
    BehavioralHealth,
    SubstanceUse,
    #[serde(rename = "sexual-reproductive")]
    SexualAndReproductive,
    Hiv,
}

impl SensitiveCategory {
    pub const ALL: [SensitiveCategory; 4] = [
        SensitiveCategory::BehavioralHealth,
        SensitiveCategory::SubstanceUse,
        SensitiveCategory::SexualAndReproductive,
        SensitiveCategory::Hiv,
    ];

    /// The kebab-case name used in JSON and forms.
    pub fn as_str(self) -> &'static str {
        match self {
            SensitiveCategory::BehavioralHealth => "behavioral-health",
            SensitiveCategory::SubstanceUse => "substance-use",
            SensitiveCategory::SexualAndReproductive => "sexual-reproductive",
            SensitiveCategory::Hiv => "hiv",
        }
    }

    /// The v3 ActCode this category labels records with.
    pub fn code(self) -> &'static str {
        self.codes()[0]
    }

    /// Every v3 ActCode that puts a record in this category (the first is [`Self::code`]). Labels
    /// from other sources use the newer `BH` and `SUD` codes next to R4's `PSY` and `ETH`; when
    /// withholding, recognising more codes is the side that protects the person.
    pub fn codes(self) -> &'static [&'static str] {
        match self {
            SensitiveCategory::BehavioralHealth => &["PSY", "BH"],
            SensitiveCategory::SubstanceUse => &["ETH", "SUD"],
            SensitiveCategory::SexualAndReproductive => &["SEX"],
            SensitiveCategory::Hiv => &["HIV"],
        }
    }

    /// The category a `meta.security` coding puts a record in, if any.
    pub fn from_coding(system: &str, code: &str) -> Option<SensitiveCategory> {
        if system != V3_ACT_CODE {
            return None;
        }
        SensitiveCategory::ALL.into_iter().find(|c| c.codes().contains(&code))
    }

    /// The v3 ActCode display of [`Self::code`], for writing labels.
    pub fn code_display(self) -> &'static str {
        match self {
            SensitiveCategory::BehavioralHealth => "psychiatry information sensitivity",
            SensitiveCategory::SubstanceUse => "substance abuse information sensitivity",
            SensitiveCategory::SexualAndReproductive => "sexuality and reproductive health information sensitivity",
            SensitiveCategory::Hiv => "HIV/AIDS information sensitivity",
        }
    }

    /// A short name for the consent screen.
    pub fn display(self) -> &'static str {
        match self {
            SensitiveCategory::BehavioralHealth => "Behavioral health",
            SensitiveCategory::SubstanceUse => "Substance use",
            SensitiveCategory::SexualAndReproductive => "Sexual and reproductive health",
            SensitiveCategory::Hiv => "HIV",
        }
    }

    /// What the category covers, in words a patient recognises.
    pub fn description(self) -> &'static str {
        match self {
            SensitiveCategory::BehavioralHealth => {
                "Mental health care, such as therapy, psychiatric diagnoses and their medications"
            }
            SensitiveCategory::SubstanceUse => "Alcohol and drug use, and treatment for it",
            SensitiveCategory::SexualAndReproductive => {
                "Sexual health, contraception, pregnancy and other reproductive care"
            }
            SensitiveCategory::Hiv => "HIV tests, diagnosis and treatment",
        }
    }
}

impl fmt::Display for SensitiveCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SensitiveCategory {
    type Err = AuthError;
    fn from_str(s: &str) -> Result<Self, AuthError> {
        SensitiveCategory::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| AuthError::UnknownSensitivity(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_uses_kebab_case_names() {
        let cases = [
            (SensitiveCategory::BehavioralHealth, "\"behavioral-health\""),
            (SensitiveCategory::SubstanceUse, "\"substance-use\""),
            (SensitiveCategory::SexualAndReproductive, "\"sexual-reproductive\""),
            (SensitiveCategory::Hiv, "\"hiv\""),
        ];
        for (category, json) in cases {
            assert_eq!(serde_json::to_string(&category).unwrap(), json);
            assert_eq!(serde_json::from_str::<SensitiveCategory>(json).unwrap(), category);
            assert_eq!(format!("\"{category}\""), json);
            assert_eq!(json.trim_matches('"').parse::<SensitiveCategory>().unwrap(), category);
        }
        for bad in ["\"HIV\"", "\"sexual-and-reproductive\"", "\"behavioral_health\"", "\"\""] {
            assert!(serde_json::from_str::<SensitiveCategory>(bad).is_err(), "{bad}");
        }
        assert_eq!("mental".parse::<SensitiveCategory>(), Err(AuthError::UnknownSensitivity("mental".into())));
        let list: Vec<SensitiveCategory> = serde_json::from_str(r#"["hiv","substance-use"]"#).unwrap();
        assert_eq!(list, [SensitiveCategory::Hiv, SensitiveCategory::SubstanceUse]);
    }

    #[test]
    fn codes_map_to_categories() {
        let cases = [
            ("PSY", Some(SensitiveCategory::BehavioralHealth)),
            ("BH", Some(SensitiveCategory::BehavioralHealth)),
            ("ETH", Some(SensitiveCategory::SubstanceUse)),
            ("SUD", Some(SensitiveCategory::SubstanceUse)),
            ("SEX", Some(SensitiveCategory::SexualAndReproductive)),
            ("HIV", Some(SensitiveCategory::Hiv)),
            ("R", None),
            ("hiv", None),
        ];
        for (code, expected) in cases {
            assert_eq!(SensitiveCategory::from_coding(V3_ACT_CODE, code), expected, "{code}");
        }
        assert_eq!(SensitiveCategory::from_coding("http://example.org", "HIV"), None);
        let primary: Vec<&str> = SensitiveCategory::ALL.iter().map(|c| c.code()).collect();
        assert_eq!(primary, ["PSY", "ETH", "SEX", "HIV"]);
    }

    #[test]
    fn every_category_has_words_for_people() {
        for c in SensitiveCategory::ALL {
            assert!(!c.display().is_empty());
            assert!(c.description().len() > 10);
            assert!(c.code_display().ends_with("information sensitivity"));
        }
    }
}
