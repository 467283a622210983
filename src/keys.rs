//! SCIM bearer keys, shared by the server (which checks them) and the
//! operator (which issues them): token generation, hashing, and the keys file
//! the operator writes and the server reads. One definition of the format
//! keeps the writer and the reader from drifting apart.

use std::path::{Path, PathBuf};

use base64::Engine;
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Prefix of every generated token, so secret scanners can recognise one.
pub(crate) const TOKEN_PREFIX: &str = "scim_";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the keys file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "the keys file {path} is not valid YAML of the form 'keys: [{{name: entra, sha256: <64 hex digits>}}]': {why}"
    )]
    Parse { path: PathBuf, why: String },
    #[error(
        "the keys file {path} is empty; write 'keys: []' to revoke every key, or list the keys as 'keys: [{{name: entra, sha256: <64 hex digits>}}]'"
    )]
    Empty { path: PathBuf },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
}

/// A key as the server knows it: its name and the SHA-256 of its token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyHash {
    pub name: String,
    pub sha256: [u8; 32],
}

impl KeyHash {
    /// Compared in constant time, so timing does not tell how close a guess was.
    pub(crate) fn matches(&self, hash: &[u8; 32]) -> bool {
        Self::ct_eq(&self.sha256, hash)
    }

    /// Two hashes compared in constant time.
    pub(crate) fn ct_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
        bool::from(a.ct_eq(b))
    }
}

#[derive(Debug, Deserialize, Serialize)]
struct KeysFile {
    #[serde(default)]
    keys: Vec<KeysFileEntry>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct KeysFileEntry {
    name: String,
    sha256: String,
}

pub(crate) fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The token's SHA-256 as lowercase hex, as the keys file holds it.
pub(crate) fn hash_hex(token: &str) -> String {
    hex::encode(hash_token(token))
}

/// A new key: 256 random bits, URL-safe, with [`TOKEN_PREFIX`].
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

/// The line to add under `keys:` for `token` (two-space indent, no newline).
pub fn keys_file_line(name: &str, token: &str) -> String {
    format!("  - {{name: {name}, sha256: {}}}", hash_hex(token))
}

/// A whole keys file for `(name, token)` pairs. Flow-style entries keep one
/// key per line, which reads well in `kubectl get secret -o yaml`.
pub(crate) fn render_keys_file<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let lines: Vec<String> = keys.into_iter().map(|(name, token)| keys_file_line(name, token)).collect();
    if lines.is_empty() {
        return "keys: []\n".into();
    }
    let mut out = String::from("keys:\n");
    for line in lines {
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Parses a keys file; `path` only names the file in errors. An empty file
/// is an error ([`KeyError::Empty`]): it is what a reader sees in the middle
/// of an in-place rewrite, so only an explicit `keys: []` holds no keys.
pub(crate) fn parse_keys_file(path: &Path, text: &str) -> Result<Vec<KeyHash>, KeyError> {
    let perr = |why: String| KeyError::Parse { path: path.into(), why };
    if text.trim().is_empty() {
        return Err(KeyError::Empty { path: path.into() });
    }
    let file: KeysFile = serde_yaml::from_str(text).map_err(|e| perr(e.to_string()))?;
    file.keys
        .into_iter()
        .map(|e| {
            let bytes =
                hex::decode(e.sha256.trim()).map_err(|_| perr(format!("key '{}': sha256 is not hex", e.name)))?;
            let sha256: [u8; 32] =
                bytes.try_into().map_err(|_| perr(format!("key '{}': sha256 must be 64 hex digits", e.name)))?;
            Ok(KeyHash { name: e.name, sha256 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_are_long_random_and_url_safe() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert!(a.len() >= 5 + 43);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'));
    }

    #[test]
    fn a_rendered_keys_file_parses_back_to_the_hashes_of_its_tokens() {
        let text = render_keys_file([("entra", "scim_a"), ("second", "scim_b")]);
        assert_eq!(
            text,
            format!("keys:\n{}\n{}\n", keys_file_line("entra", "scim_a"), keys_file_line("second", "scim_b"))
        );
        let parsed = parse_keys_file(Path::new("k"), &text).unwrap();
        let key = |name: &str, token: &str| KeyHash { name: name.into(), sha256: hash_token(token) };
        assert_eq!(parsed, [key("entra", "scim_a"), key("second", "scim_b")]);
        assert!(parsed[0].matches(&hash_token("scim_a")) && !parsed[0].matches(&hash_token("scim_b")));
        let none = render_keys_file([]);
        assert_eq!(none, "keys: []\n");
        assert!(parse_keys_file(Path::new("k"), &none).unwrap().is_empty());
    }

    #[test]
    fn bad_keys_files_say_what_is_wrong() {
        let e = parse_keys_file(Path::new("k"), "keys: [{name: a, sha256: zz}]").unwrap_err().to_string();
        assert!(e.contains("not hex"), "{e}");
        let e = parse_keys_file(Path::new("k"), "keys: [{name: a, sha256: abcd}]").unwrap_err().to_string();
        assert!(e.contains("64 hex"), "{e}");
        let e = parse_keys_file(Path::new("k"), "keys: [{name: a, sha256: abcd, extra: 1}]").unwrap_err().to_string();
        assert!(e.contains("extra"), "{e}");
        assert!(matches!(parse_keys_file(Path::new("k"), " \n"), Err(KeyError::Empty { .. })));
        assert!(parse_keys_file(Path::new("k"), "keys: []\n").unwrap().is_empty());
    }
}
