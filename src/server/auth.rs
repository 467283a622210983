//! Bearer keys. The server holds only SHA-256 hashes; a presented token is
//! hashed and compared in constant time against every known hash, so neither
//! timing nor early exit tells an attacker how close a guess was.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::keys::{KeyError, KeyHash, generate_token, hash_token, parse_keys_file};

// Re-exported for the server's startup (`server/mod.rs`) and `scim-operator keys`
// (`main.rs`), which name them through `server::auth`.

/// The keys the server accepts: fixed ones (SCIM_TOKEN, the standalone dev key)
/// plus the current content of the keys file.
pub(crate) struct KeyRing {
    fixed: Vec<KeyHash>,
    from_file: RwLock<Arc<Vec<KeyHash>>>,
    /// Changed keys files that could not be used (reported on /status).
    reload_failures: AtomicU64,
}

impl KeyRing {
    pub(crate) fn new(fixed: Vec<KeyHash>, from_file: Vec<KeyHash>) -> Self {
        Self { fixed, from_file: RwLock::new(Arc::new(from_file)), reload_failures: AtomicU64::new(0) }
    }

    pub(crate) fn replace_file_keys(&self, keys: Vec<KeyHash>) {
        *self.from_file.write() = Arc::new(keys);
    }

    pub(crate) fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    pub(crate) fn len(&self) -> usize {
        self.fixed.len() + self.from_file.read().len()
    }

    /// The name of the key `token` matches, if any. Every hash is compared,
    /// whatever the outcome.
    pub(crate) fn verify(&self, token: &str) -> Option<String> {
        let h = hash_token(token);
        let file = self.from_file.read().clone();
        let mut found: Option<&KeyHash> = None;
        for k in self.fixed.iter().chain(file.iter()) {
            if k.matches(&h) && found.is_none() {
                found = Some(k);
            }
        }
        found.map(|k| k.name.clone())
    }
}

/// How long apart the two reads of a changed keys file are: a file being
/// rewritten in place reads differently twice and is taken on a later poll.
const SETTLE: Duration = Duration::from_millis(100);

/// What the reloader last saw in the keys file.
#[derive(PartialEq)]
enum Seen {
    Content(Vec<u8>),
    /// Unreadable, with the error's text (a new error counts again).
    Unreadable(String),
}

/// Polls the keys file and swaps the key set when its content changes.
/// Polling (rather than inotify) follows Kubernetes' Secret volume updates,
/// which replace a symlink rather than write the file.
///
/// The keys stay as they are, with a WARN and one more `keysReloadFailures`,
/// when the file cannot be read, is empty or is invalid; a changed file is
/// taken only when two reads [`SETTLE`] apart agree, so an in-place rewrite
/// (truncate, then write) is never taken half-written. Only an explicit
/// `keys: []` revokes every key.
pub(crate) fn spawn_reloader(ring: Arc<KeyRing>, path: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = read_seen(&path).await;
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = read_seen(&path).await;
            if now == last {
                continue;
            }
            if let Seen::Content(_) = now {
                tokio::time::sleep(SETTLE).await;
                if read_seen(&path).await != now {
                    tracing::debug!(path = %path.display(), "keys file is being written; reading it again later");
                    continue;
                }
            }
            apply(&ring, &path, &now);
            last = now;
        }
    })
}

async fn read_seen(path: &Path) -> Seen {
    match tokio::fs::read(path).await {
        Ok(b) => Seen::Content(b),
        Err(e) => Seen::Unreadable(e.to_string()),
    }
}

/// Takes a changed keys file, or counts why it could not be taken.
fn apply(ring: &KeyRing, path: &Path, seen: &Seen) {
    let parsed = match seen {
        Seen::Unreadable(e) => Err(format!("cannot read the keys file {}: {e}", path.display())),
        Seen::Content(bytes) => match std::str::from_utf8(bytes) {
            Ok(text) => parse_keys_file(path, text).map_err(|e| e.to_string()),
            Err(_) => Err(format!("the keys file {} is not UTF-8", path.display())),
        },
    };
    match parsed {
        Ok(keys) if keys.is_empty() => {
            tracing::warn!(path = %path.display(), "the keys file lists no keys ('keys: []'): every key from it is revoked");
            ring.replace_file_keys(keys);
        }
        Ok(keys) => {
            tracing::info!(path = %path.display(), keys = keys.len(), "keys file changed; key set reloaded");
            ring.replace_file_keys(keys);
        }
        Err(e) => {
            ring.reload_failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "keys file changed but cannot be used; keeping the current keys");
        }
    }
}

/// The standalone dev key: created on first start, only its hash kept.
pub(crate) enum DevKey {
    /// Created now; the token is shown once.
    Created { token: String, hash: KeyHash, path: PathBuf },
    /// Created on an earlier start; only the hash exists.
    Existing { hash: KeyHash, path: PathBuf },
}

pub(crate) fn load_or_create_dev_key(data_dir: &Path) -> Result<DevKey, KeyError> {
    let path = data_dir.join("dev-key.sha256");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let bytes = hex::decode(text.trim()).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
                KeyError::Parse {
                    path: path.clone(),
                    why: "expected 64 hex digits; delete the file to create a new key".into(),
                }
            })?;
            Ok(DevKey::Existing { hash: KeyHash { name: "dev".into(), sha256: bytes }, path })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_token();
            let sha256 = hash_token(&token);
            std::fs::write(&path, format!("{}\n", hex::encode(sha256)))
                .map_err(|source| KeyError::Write { path: path.clone(), source })?;
            Ok(DevKey::Created { token, hash: KeyHash { name: "dev".into(), sha256 }, path })
        }
        Err(source) => Err(KeyError::Read { path, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::keys_file_line;

    #[test]
    fn ring_verifies_by_hash() {
        let t = generate_token();
        let line = keys_file_line("entra", &t);
        let keys = parse_keys_file(Path::new("k"), &format!("keys:\n{line}\n")).unwrap();
        let ring = KeyRing::new(vec![KeyHash { name: "env".into(), sha256: hash_token("dev-token") }], keys);
        assert_eq!(ring.verify(&t).as_deref(), Some("entra"));
        assert_eq!(ring.verify("dev-token").as_deref(), Some("env"));
        assert_eq!(ring.verify("wrong"), None);
        ring.replace_file_keys(Vec::new());
        assert_eq!(ring.verify(&t), None);
    }

    #[test]
    fn dev_key_is_created_once_and_only_its_hash_kept() {
        let dir = tempfile::tempdir().unwrap();
        let DevKey::Created { token, hash, path } = load_or_create_dev_key(dir.path()).unwrap() else {
            panic!("expected a new key")
        };
        let on_disk = std::fs::read_to_string(&path).unwrap();
        assert!(!on_disk.contains(&token));
        let DevKey::Existing { hash: again, .. } = load_or_create_dev_key(dir.path()).unwrap() else {
            panic!("expected the existing key")
        };
        assert_eq!(hash, again);
    }
}
