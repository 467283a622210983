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

/// Polls the keys file and swaps the key set when its content changes.
/// Polling (rather than inotify) follows Kubernetes' Secret volume updates,
/// which replace a symlink rather than write the file.
pub(crate) fn spawn_reloader(ring: Arc<KeyRing>, path: PathBuf, every: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut last = tokio::fs::read(&path).await.ok();
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = match tokio::fs::read(&path).await {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the keys file; keeping the current keys");
                    continue;
                }
            };
            if now == last {
                continue;
            }
            let text = String::from_utf8_lossy(now.as_deref().unwrap_or_default()).into_owned();
            match parse_keys_file(&path, &text) {
                Ok(keys) => {
                    tracing::info!(path = %path.display(), keys = keys.len(), "keys file changed; key set reloaded");
                    ring.replace_file_keys(keys);
                    last = now;
                }
                Err(e) => {
                    ring.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "keys file changed but is invalid; keeping the current keys");
                    last = now;
                }
            }
        }
    })
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
