//! Stored documents as the store holds them in memory: the compact JSON with
//! the boilerplate every SCIM document repeats (schema URNs, attribute names,
//! the `meta` frame) replaced by one byte each.
//!
//! Compact JSON as serde_json writes it never contains a byte below 0x20
//! (control characters inside strings are escaped, and there is no
//! whitespace), so those 31 byte values are free to stand for the fragments
//! below, which shrinks a typical Entra user to about a third. Unpacking restores
//! the exact text, so what a client sent is still returned byte for byte.
//! The database keeps the plain JSON.

use std::sync::{Arc, LazyLock};

/// Byte `i + 1` stands for `TOKENS[i]`. Only ever append: nothing packed
/// outlives the process, but a stable table keeps sizes comparable.
const TOKENS: [&str; 31] = [
    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User""#,
    r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group""#,
    r#""urn:ietf:params:scim:schemas:extension:enterprise:2.0:User""#,
    r#"],"id":""#,
    r#"","externalId":""#,
    r#","userName":""#,
    r#","displayName":""#,
    r#","active":true"#,
    r#","active":false"#,
    r#","name":{"#,
    r#""givenName":""#,
    r#""familyName":""#,
    r#""formatted":""#,
    r#","emails":[{"#,
    r#""primary":true,"#,
    r#""type":"work","#,
    r#""value":""#,
    r#","phoneNumbers":[{"#,
    r#","addresses":[{"#,
    r#""department":""#,
    r#""employeeNumber":""#,
    r#""manager":{"value":""#,
    r#","title":""#,
    r#","preferredLanguage":""#,
    r#","meta":{"resourceType":"User","created":""#,
    r#","meta":{"resourceType":"Group","created":""#,
    r#"","lastModified":""#,
    r#"","version":"W/\""#,
    r#","members":[{"value":""#,
    r#""},{"value":""#,
    r#""streetAddress":""#,
];

/// Marks a text that holds a byte below 0x20 (so not compact JSON from
/// serde_json): it is kept verbatim after this byte.
const RAW: u8 = 0;

/// The tokens by their first two bytes, so that packing tries only the one
/// or two that can match: every `"` and `,` of a document starts a lookup,
/// and most tokens share those first bytes.
struct Lookup {
    /// For each byte, its row in `by_second` plus one; 0: no token starts
    /// with it.
    row: [u8; 256],
    /// For each row and second byte, the range of `codes` to try.
    by_second: Vec<[(u8, u8); 256]>,
    /// Token codes grouped by their first two bytes, longest first in a group.
    codes: Vec<u8>,
}

static LOOKUP: LazyLock<Lookup> = LazyLock::new(|| {
    let mut codes: Vec<u8> = (0..TOKENS.len()).filter_map(|i| u8::try_from(i).ok()).collect();
    let key = |code: u8| {
        let tok = TOKENS[usize::from(code)].as_bytes();
        (tok.first().copied(), tok.get(1).copied(), std::cmp::Reverse(tok.len()))
    };
    codes.sort_by_key(|&code| key(code));
    let mut lookup = Lookup { row: [0; 256], by_second: Vec::new(), codes: Vec::new() };
    for code in codes {
        // Every token is at least two bytes long (a test checks it).
        let (Some(first), Some(second), _) = key(code) else { continue };
        if lookup.row[usize::from(first)] == 0 {
            lookup.by_second.push([(0, 0); 256]);
            lookup.row[usize::from(first)] = u8::try_from(lookup.by_second.len()).unwrap_or(u8::MAX);
        }
        let row = usize::from(lookup.row[usize::from(first)]) - 1;
        let at = u8::try_from(lookup.codes.len()).unwrap_or(u8::MAX);
        let range = &mut lookup.by_second[row][usize::from(second)];
        if range.1 == 0 {
            range.0 = at;
        }
        range.1 += 1;
        lookup.codes.push(code);
    }
    lookup
});

impl Lookup {
    /// The longest token `rest` starts with.
    fn find(&self, rest: &[u8]) -> Option<u8> {
        let (&first, &second) = (rest.first()?, rest.get(1)?);
        let row = self.by_second.get(usize::from(self.row[usize::from(first)]).checked_sub(1)?)?;
        let (at, len) = row[usize::from(second)];
        let candidates = self.codes.get(usize::from(at)..usize::from(at) + usize::from(len))?;
        candidates.iter().copied().find(|&code| {
            let tok = TOKENS[usize::from(code)].as_bytes();
            // The tokens after a comma all start `,"`: their third and last
            // bytes tell most apart before a full comparison.
            tok.get(2) == rest.get(2) && tok.last() == rest.get(tok.len() - 1) && rest.starts_with(tok)
        })
    }
}

/// A packed document; cloning shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Packed(Arc<[u8]>);

impl Packed {
    pub(crate) fn pack(text: &str) -> Self {
        let bytes = text.as_bytes();
        if bytes.iter().any(|&b| b < 0x20) {
            let mut out = Vec::with_capacity(bytes.len() + 1);
            out.push(RAW);
            out.extend_from_slice(bytes);
            return Self(out.into());
        }
        let lookup = &*LOOKUP;
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        loop {
            // Most bytes start no token: copy each run of them in one go.
            let run = bytes[i..].iter().position(|&b| lookup.row[usize::from(b)] != 0).unwrap_or(bytes.len() - i);
            out.extend_from_slice(&bytes[i..i + run]);
            i += run;
            let Some(&b) = bytes.get(i) else { break };
            match lookup.find(&bytes[i..]) {
                Some(code) => {
                    out.push(code + 1);
                    i += TOKENS[usize::from(code)].len();
                }
                None => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        Self(out.into())
    }

    pub(crate) fn unpack(&self) -> String {
        let bytes = &*self.0;
        if let Some((&RAW, raw)) = bytes.split_first() {
            return String::from_utf8_lossy(raw).into_owned();
        }
        let mut out = Vec::with_capacity(bytes.len() * 3);
        let mut rest = bytes;
        while let Some(at) = rest.iter().position(|&b| b < 0x20) {
            out.extend_from_slice(&rest[..at]);
            if let Some(tok) = TOKENS.get(usize::from(rest[at]).wrapping_sub(1)) {
                out.extend_from_slice(tok.as_bytes());
            }
            rest = &rest[at + 1..];
        }
        out.extend_from_slice(rest);
        // Packing replaced whole ASCII fragments of valid UTF-8, so putting
        // them back gives valid UTF-8 again.
        String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// Bytes held.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const ENTRA_USER: &str = r#"{"schemas":["urn:ietf:params:scim:schemas:core:2.0:User","urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"],"id":"0193a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b","externalId":"9b1deb4d-3b7d-4bad-9bdd-2b0d7b3dcb6d","userName":"Test_User_ab6490ee@contoso.com","active":true,"displayName":"Test User","title":"Engineer","emails":[{"primary":true,"type":"work","value":"Test_User_ab6490ee@contoso.com"}],"preferredLanguage":"en-US","name":{"givenName":"Test","familyName":"User","formatted":"Test User"},"addresses":[{"type":"work","streetAddress":"1 Main St","locality":"Redmond","country":"US","primary":false}],"phoneNumbers":[{"type":"mobile","value":"+1 555 0100"}],"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User":{"department":"Sales","employeeNumber":"42","manager":{"value":"0193a1b2-0000-7000-8000-000000000001"}},"meta":{"resourceType":"User","created":"2026-11-29T01:51:28.860Z","lastModified":"2026-11-29T01:51:28.860Z","version":"W/\"3\""}}"#;

    #[test]
    fn an_entra_user_comes_back_exactly_and_takes_a_third_of_the_space() {
        let packed = Packed::pack(ENTRA_USER);
        assert_eq!(packed.unpack(), ENTRA_USER);
        assert!(packed.len() * 100 < ENTRA_USER.len() * 60, "{} of {} bytes", packed.len(), ENTRA_USER.len());
    }

    #[test]
    fn group_member_lists_shrink_too() {
        let members: Vec<String> = (0..50).map(|i| format!(r#"{{"value":"id-{i}"}}"#)).collect();
        let group = format!(
            r#"{{"schemas":["urn:ietf:params:scim:schemas:core:2.0:Group"],"id":"g","displayName":"Sales","members":[{}],"meta":{{"resourceType":"Group","created":"t","lastModified":"t","version":"W/\"1\""}}}}"#,
            members.join(",")
        );
        let packed = Packed::pack(&group);
        assert_eq!(packed.unpack(), group);
        assert!(packed.len() < group.len() * 2 / 3, "{} of {} bytes", packed.len(), group.len());
    }

    #[test]
    fn text_with_control_bytes_is_kept_verbatim() {
        let odd = "{\"a\":\n\"\u{1}x\"}";
        assert_eq!(Packed::pack(odd).unpack(), odd);
        assert_eq!(Packed::pack("").unpack(), "");
    }

    #[test]
    fn every_token_is_printable_ascii_and_found_by_its_first_two_bytes() {
        for (code, tok) in TOKENS.iter().enumerate() {
            assert!(tok.len() >= 2 && tok.bytes().all(|b| (0x20..0x7f).contains(&b)), "{tok}");
            // Followed by a byte that extends no token, each is found as itself.
            let found = LOOKUP.find(format!("{tok}\u{7f}").as_bytes()).map(usize::from);
            assert_eq!(found, Some(code), "{tok}");
        }
    }

    proptest! {
        #[test]
        fn any_text_round_trips(parts in proptest::collection::vec(
            prop_oneof![
                proptest::sample::select(TOKENS.to_vec()).prop_map(str::to_owned),
                any::<String>(),
                "[\"{}:,a-z]{0,12}",
            ],
            0..24,
        )) {
            let text: String = parts.concat();
            prop_assert_eq!(Packed::pack(&text).unpack(), text);
        }

        #[test]
        fn any_json_value_round_trips(v in proptest::arbitrary::any::<(String, Vec<(String, bool)>)>()) {
            let text = serde_json::json!({"schemas": [v.0], "members": v.1}).to_string();
            prop_assert_eq!(Packed::pack(&text).unpack(), text);
        }
    }
}
