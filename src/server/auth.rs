//! Bearer keys. The server holds only SHA-256 hashes; a presented token is
//! hashed, the hash looked up in a map (one lookup per request, however many
//! keys there are), and the hash found compared in constant time. Timing can
//! tell only something about the SHA-256 of a guess, which says nothing about
//! the keys.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;

use crate::keys::{KeyError, KeyHash, generate_token, hash_token, parse_keys_file};
use crate::store::{ApiKeyRecord, now_ms};

/// A self-service key as the ring holds it, with when it was last used.
#[derive(Debug)]
pub(crate) struct ApiKey {
    pub record: ApiKeyRecord,
    /// Unix ms of the last request with it (0: never), updated without a lock.
    last_used_ms: AtomicU64,
    /// What the store last saw of `last_used_ms`.
    persisted_ms: AtomicU64,
}

impl ApiKey {
    pub(crate) fn new(record: ApiKeyRecord) -> Self {
        let used = record.last_used_ms.unwrap_or_default();
        ApiKey { record, last_used_ms: AtomicU64::new(used), persisted_ms: AtomicU64::new(used) }
    }

    pub(crate) fn last_used_ms(&self) -> Option<u64> {
        Some(self.last_used_ms.load(Ordering::Relaxed)).filter(|&t| t > 0)
    }

    pub(crate) fn expired(&self, now_ms: u64) -> bool {
        self.record.expires_ms.is_some_and(|e| e <= now_ms)
    }
}

/// How coarse `lastUsedAt` is: a key used again within a second is not
/// written to its atomic again, so busy keys do not bounce a cache line
/// between cores on every request.
const LAST_USED_GRANULARITY_MS: u64 = 1000;

// Re-exported for the server's startup (`server/mod.rs`) and `scim-operator keys`
// (`main.rs`), which name them through `server::auth`.

/// The keys the server accepts: fixed ones (SCIM_TOKEN, the standalone dev key)
/// plus the current content of the keys file.
pub(crate) struct KeyRing {
    /// SCIM_TOKEN and the dev key, and the keys file, by hash.
    fixed: ByDigest<KeyHash>,
    from_file: RwLock<Arc<ByDigest<KeyHash>>>,
    /// Self-service keys (`selfService`), by hash.
    api: RwLock<ByDigest<Arc<ApiKey>>>,
    /// Changed keys files that could not be used (reported on /status).
    reload_failures: AtomicU64,
}

/// Maps keyed by a key's SHA-256. A digest is already uniform, so its
/// first bytes serve as the map's hash instead of SipHash on every request;
/// the entries are our keys, never a client's choice, so no client can
/// crowd one bucket.
type ByDigest<V> = HashMap<[u8; 32], V, std::hash::BuildHasherDefault<DigestHasher>>;

#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 ^= u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

fn by_hash(keys: Vec<KeyHash>) -> ByDigest<KeyHash> {
    keys.into_iter().map(|k| (k.sha256, k)).collect()
}

impl KeyRing {
    pub(crate) fn new(fixed: Vec<KeyHash>, from_file: Vec<KeyHash>) -> Self {
        Self {
            fixed: by_hash(fixed),
            from_file: RwLock::new(Arc::new(by_hash(from_file))),
            api: RwLock::new(ByDigest::default()),
            reload_failures: AtomicU64::new(0),
        }
    }

    pub(crate) fn replace_file_keys(&self, keys: Vec<KeyHash>) {
        *self.from_file.write() = Arc::new(by_hash(keys));
    }

    /// The names of the keys from the keys file.
    pub(crate) fn file_key_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.from_file.read().values().map(|k| k.name.clone()).collect();
        names.sort();
        names
    }

    /// Starts accepting a self-service key (at once, on every connection).
    pub(crate) fn add_api_key(&self, key: ApiKeyRecord) {
        let key = Arc::new(ApiKey::new(key));
        self.api.write().insert(key.record.sha256, key);
    }

    /// Stops accepting a self-service key; the next request with it is refused.
    pub(crate) fn remove_api_key(&self, id: &str) -> Option<Arc<ApiKey>> {
        let mut api = self.api.write();
        let hash = api.values().find(|k| k.record.id == id).map(|k| k.record.sha256)?;
        api.remove(&hash)
    }

    /// The self-service keys, oldest first.
    pub(crate) fn api_keys(&self) -> Vec<Arc<ApiKey>> {
        let mut keys: Vec<Arc<ApiKey>> = self.api.read().values().cloned().collect();
        keys.sort_by(|a, b| (a.record.created_ms, &a.record.id).cmp(&(b.record.created_ms, &b.record.id)));
        keys
    }

    /// Keys used since the store last heard of it, as (id, unix ms); each is
    /// marked as stored (call [`Self::unmark_used`] if the write fails).
    pub(crate) fn take_used(&self) -> Vec<(String, u64)> {
        let api = self.api.read();
        let mut used = Vec::new();
        for k in api.values() {
            let t = k.last_used_ms.load(Ordering::Relaxed);
            if t > k.persisted_ms.swap(t, Ordering::Relaxed) {
                used.push((k.record.id.clone(), t));
            }
        }
        used
    }

    /// The store did not take these: report them again next time.
    pub(crate) fn unmark_used(&self, used: &[(String, u64)]) {
        let api = self.api.read();
        for k in api.values() {
            if used.iter().any(|(id, _)| *id == k.record.id) {
                k.persisted_ms.store(0, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Keys from the config and the keys file (self-service keys are counted apart).
    pub(crate) fn len(&self) -> usize {
        self.fixed.len() + self.from_file.read().len()
    }

    /// Whether `token` is a key this server accepts now: one map lookup per
    /// kind of key and a constant-time comparison of the hash found. A
    /// self-service key past its expiry is refused; one that matches has its
    /// last use noted (in memory; stored in batches).
    pub(crate) fn verify(&self, token: &str) -> bool {
        let h = hash_token(token);
        if self.fixed.get(&h).is_some_and(|k| k.matches(&h)) {
            return true;
        }
        if self.from_file.read().get(&h).is_some_and(|k| k.matches(&h)) {
            return true;
        }
        let api = self.api.read();
        let Some(k) = api.get(&h).filter(|k| KeyHash::ct_eq(&k.record.sha256, &h)) else {
            return false;
        };
        let now = now_ms();
        if k.expired(now) {
            return false;
        }
        if now >= k.last_used_ms.load(Ordering::Relaxed) + LAST_USED_GRANULARITY_MS {
            k.last_used_ms.fetch_max(now, Ordering::Relaxed);
        }
        true
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
        assert!(ring.verify(&t));
        assert!(ring.verify("dev-token"));
        assert!(!ring.verify("wrong"));
        ring.replace_file_keys(Vec::new());
        assert!(!ring.verify(&t));
    }

    fn api_key(id: &str, token: &str, expires_ms: Option<u64>) -> ApiKeyRecord {
        ApiKeyRecord {
            id: id.into(),
            name: id.into(),
            sha256: hash_token(token),
            created_ms: 1,
            created_by: "u".into(),
            expires_ms,
            last_used_ms: None,
        }
    }

    #[test]
    fn api_keys_work_at_once_until_removed_or_expired_and_note_their_use() {
        let ring = KeyRing::new(Vec::new(), Vec::new());
        ring.add_api_key(api_key("a", "scim_a", None));
        ring.add_api_key(api_key("old", "scim_old", Some(now_ms() - 1)));
        assert!(ring.verify("scim_a"));
        assert!(!ring.verify("scim_old"), "expired keys are refused");
        let used = ring.take_used();
        assert_eq!(used.len(), 1);
        assert_eq!(used[0].0, "a");
        assert!(ring.take_used().is_empty(), "reported once until used again");
        ring.unmark_used(&used);
        assert_eq!(ring.take_used().len(), 1, "a failed write is reported again");
        assert!(ring.remove_api_key("a").is_some());
        assert!(!ring.verify("scim_a"));
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
