//! The unique names of resources (`userName`, a group's `displayName`): what a
//! valid one is, and the key two names are compared by.
//!
//! ZITADEL turns a userName into a login name, so two names it would treat as
//! one must not both be stored: the key is the name trimmed, in Unicode NFKC
//! (full-width letters fold to ASCII, ligatures split) and lowercased. Names
//! are still stored exactly as sent; only the key is normalised.

use unicode_normalization::UnicodeNormalization;

use super::error::{ScimError, ScimResult};

/// The key unique names are compared by. Idempotent: `unique_name_key(k) == k`
/// for any key `k`, so an index built from keys can be probed with a key.
pub fn unique_name_key(name: &str) -> String {
    let name = name.trim();
    if name.is_ascii() {
        return name.to_ascii_lowercase();
    }
    // NFKC, lowercase, NFKC again: lowercasing can leave a sequence NFKC
    // would compose, and a second pass makes the key a fixed point.
    let folded: String = name.nfkc().collect::<String>().to_lowercase();
    folded.nfkc().collect::<String>().trim().to_string()
}

/// Characters that are invisible or change how text is displayed without
/// being visible themselves: zero-width spaces and joiners, direction marks
/// and overrides, the soft hyphen, the byte-order mark.
fn is_invisible(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
        | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFF8}')
}

/// A unique name must contain a visible character and no control or
/// invisible ones: a name of spaces, or one that differs from another only by
/// a NUL or a zero-width space, cannot be told apart by a person or becomes
/// an invalid login name in ZITADEL.
pub fn check_unique_name(attr: &str, name: &str) -> ScimResult<()> {
    if let Some(c) = name.chars().find(|c| c.is_control() || is_invisible(*c)) {
        return Err(ScimError::invalid_value(format!(
            "'{attr}' must not contain control or invisible characters (found U+{:04X})",
            u32::from(c)
        )));
    }
    if name.chars().all(char::is_whitespace) {
        return Err(ScimError::invalid_value(format!("'{attr}' must contain a character other than spaces")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_fold_what_zitadel_treats_as_one_name() {
        assert_eq!(unique_name_key(" Alice@Contoso.com "), "alice@contoso.com");
        assert_eq!(unique_name_key("ａｌｉｃｅ"), "alice");
        assert_eq!(unique_name_key("\u{3000}ALİCE"), unique_name_key(&unique_name_key("ALİCE")));
        assert_eq!(unique_name_key("ﬁona"), "fiona");
        for k in ["Ǆemal", "ΣΊΣΥΦΟΣ", "ⅻ", "é", "e\u{301}"] {
            let key = unique_name_key(k);
            assert_eq!(unique_name_key(&key), key, "idempotent for {k}");
        }
        assert_eq!(unique_name_key("é"), unique_name_key("e\u{301}"));
    }

    #[test]
    fn names_of_spaces_or_with_hidden_characters_are_refused() {
        for bad in ["", "   ", "\u{3000}", "al\u{200B}ice", "al\0ice", "alice\n", "\u{FEFF}alice", "a\u{202E}b"] {
            let e = check_unique_name("userName", bad).unwrap_err();
            assert_eq!(e.scim_type, Some(crate::scim::error::ScimType::InvalidValue), "{bad:?}");
        }
        for good in ["alice", "Alice Smith", "ｱﾘｽ", "josé@example.com", " padded "] {
            check_unique_name("userName", good).unwrap();
        }
    }
}
