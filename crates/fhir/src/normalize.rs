//! String normalization used for `string` search parameters.

use unicode_normalization::{char::is_combining_mark, UnicodeNormalization};

/// Lower case with diacritics removed (NFD, combining marks dropped), so that `Zoë` matches `zoe`.
pub fn normalize_string(s: &str) -> String {
    // Most indexed strings are plain ASCII; skip the decomposition machinery for them.
    if s.is_ascii() {
        return s.to_ascii_lowercase();
    }
    s.nfd().filter(|c| !is_combining_mark(*c)).flat_map(char::to_lowercase).collect()
}

#[cfg(test)]
mod tests {
    use super::normalize_string;

    #[test]
    fn folds_case_and_diacritics() {
        assert_eq!(normalize_string("Zoë"), "zoe");
        assert_eq!(normalize_string("ÉLODIE Müller"), "elodie muller");
        assert_eq!(normalize_string("Ångström"), "angstrom");
        assert_eq!(normalize_string("Smith"), "smith");
        assert_eq!(normalize_string(""), "");
        // Letters without a decomposition are kept (lower-cased).
        assert_eq!(normalize_string("Łukasz ß"), "łukasz ß");
    }
}
