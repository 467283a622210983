//! Creating, deleting and listing self-service SCIM keys: the limits (keys
//! per tenant, creations per user and minute), the store write, the key ring
//! (so a key works or stops working at once), the audit log and the counters.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::access::Caller;
use crate::keys::{generate_token, hash_token};
use crate::server::auth::KeyRing;
use crate::server::metrics::ServerMetrics;
use crate::store::{ApiKeyChange, ApiKeyRecord, Store, now_ms};

/// Creations per user within [`RATE_WINDOW`].
pub(crate) const RATE_LIMIT: usize = 10;
const RATE_WINDOW: Duration = Duration::from_secs(60);
/// Longest expiry a key may be given, in days (ten years).
const MAX_EXPIRES_IN_DAYS: i32 = 3650;
const MAX_NAME_CHARS: usize = 100;
/// How keys from the keys file are named in `scimKeys` ids.
pub(crate) const KUBERNETES_ID_PREFIX: &str = "kubernetes:";

/// Why a key operation failed; each has a GraphQL error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum KeyOpError {
    #[error("{0}")]
    BadInput(String),
    #[error(
        "this user asked for {RATE_LIMIT} keys within the last minute, the most allowed; retry in {retry_after_secs} s"
    )]
    RateLimited { retry_after_secs: u64 },
    #[error(
        "this tenant already has {max} active self-service keys, the most allowed (selfService.maxKeys); delete one with scimKeyDelete first"
    )]
    KeyLimit { max: usize },
    #[error("no self-service key has the id '{0}'")]
    NotFound(String),
    #[error(
        "'{0}' is a key from the tenant's Kubernetes configuration (the ScimTenant's keys), not created here; it is managed by the platform team in Kubernetes"
    )]
    Kubernetes(String),
    #[error("the key could not be stored; nothing was changed, retry later")]
    Storage,
}

impl KeyOpError {
    pub(crate) fn code(&self) -> &'static str {
        match self {
            KeyOpError::BadInput(_) => "BAD_USER_INPUT",
            KeyOpError::RateLimited { .. } => "RATE_LIMITED",
            KeyOpError::KeyLimit { .. } => "KEY_LIMIT",
            KeyOpError::NotFound(_) => "NOT_FOUND",
            KeyOpError::Kubernetes(_) => "MANAGED_IN_KUBERNETES",
            KeyOpError::Storage => "INTERNAL_SERVER_ERROR",
        }
    }
}

/// A key just created: the only time its token is shown.
#[derive(Debug, Clone)]
pub(crate) struct CreatedKey {
    pub record: ApiKeyRecord,
    pub token: String,
}

/// One entry of `scimKeys`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyInfo {
    pub id: String,
    pub name: String,
    /// `API` or `KUBERNETES`.
    pub source: &'static str,
    pub created_ms: Option<u64>,
    pub created_by: Option<String>,
    pub last_used_ms: Option<u64>,
    pub expires_ms: Option<u64>,
    pub fingerprint: Option<String>,
}

/// What `/status` shows as `selfServiceKeys`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Summary {
    pub last_created: Option<(u64, String)>,
    pub last_deleted: Option<(u64, String)>,
}

/// `sha256:` and the first 16 hex digits of the token's hash: enough to tell
/// keys apart in logs and lists, nothing to guess the key from.
pub(crate) fn fingerprint(sha256: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(&sha256[..8]))
}

pub(crate) struct KeyManager {
    store: Arc<dyn Store>,
    ring: Arc<KeyRing>,
    metrics: Arc<ServerMetrics>,
    max_keys: usize,
    /// One creation at a time, so the key limit holds under concurrency.
    create_lock: tokio::sync::Mutex<()>,
    /// User id → times of recent creations.
    recent: Mutex<HashMap<String, VecDeque<Instant>>>,
    summary: Mutex<Summary>,
}

impl KeyManager {
    /// Loads the stored keys into the ring.
    pub(crate) async fn start(
        store: Arc<dyn Store>,
        ring: Arc<KeyRing>,
        metrics: Arc<ServerMetrics>,
        max_keys: usize,
    ) -> Result<Self, crate::store::StoreError> {
        let stored = store.api_keys().await?;
        let last_created = stored.iter().max_by_key(|k| k.created_ms).map(|k| (k.created_ms, k.created_by.clone()));
        for k in stored {
            ring.add_api_key(k);
        }
        Ok(KeyManager {
            store,
            ring,
            metrics,
            max_keys,
            create_lock: tokio::sync::Mutex::new(()),
            recent: Mutex::new(HashMap::new()),
            summary: Mutex::new(Summary { last_created, last_deleted: None }),
        })
    }

    /// Counts a creation attempt of `user_id`, or says when the next one is allowed.
    fn take_rate(&self, user_id: &str, now: Instant) -> Result<(), KeyOpError> {
        let mut recent = self.recent.lock();
        if recent.len() > 10_000 {
            recent.retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) < RATE_WINDOW));
        }
        let q = recent.entry(user_id.to_string()).or_default();
        while q.front().is_some_and(|t| now.duration_since(*t) >= RATE_WINDOW) {
            q.pop_front();
        }
        if q.len() >= RATE_LIMIT {
            let oldest = q.front().copied().unwrap_or(now);
            let wait = RATE_WINDOW.saturating_sub(now.duration_since(oldest));
            return Err(KeyOpError::RateLimited { retry_after_secs: wait.as_secs().max(1) });
        }
        q.push_back(now);
        Ok(())
    }

    pub(crate) async fn create(
        &self,
        caller: &Caller,
        name: Option<String>,
        expires_in_days: Option<i32>,
    ) -> Result<CreatedKey, KeyOpError> {
        let name = name.map(|n| n.trim().to_string()).filter(|n| !n.is_empty());
        if name.as_ref().is_some_and(|n| n.chars().count() > MAX_NAME_CHARS || n.chars().any(char::is_control)) {
            return Err(KeyOpError::BadInput(format!(
                "name must be at most {MAX_NAME_CHARS} characters without control characters"
            )));
        }
        if let Some(d) = expires_in_days
            && !(1..=MAX_EXPIRES_IN_DAYS).contains(&d)
        {
            return Err(KeyOpError::BadInput(format!(
                "expiresInDays must be between 1 and {MAX_EXPIRES_IN_DAYS}, or left out for a key that does not expire"
            )));
        }
        self.take_rate(&caller.user_id, Instant::now())?;
        let _one_at_a_time = self.create_lock.lock().await;
        let now = now_ms();
        let active = self.ring.api_keys().iter().filter(|k| !k.expired(now)).count();
        if active >= self.max_keys {
            return Err(KeyOpError::KeyLimit { max: self.max_keys });
        }
        let id = uuid::Uuid::now_v7().to_string();
        let token = generate_token();
        let record = ApiKeyRecord {
            name: name.unwrap_or_else(|| format!("key-{}", &id[id.len() - 8..])),
            id,
            sha256: hash_token(&token),
            created_ms: now,
            created_by: caller.user_id.clone(),
            expires_ms: expires_in_days.map(|d| now + u64::try_from(d).unwrap_or(0) * 86_400_000),
            last_used_ms: None,
        };
        if let Err(e) = self.store.api_key_write(ApiKeyChange::Put(record.clone())).await {
            tracing::error!(user = %caller.user_id, error = %e, "storing a self-service SCIM key failed");
            return Err(KeyOpError::Storage);
        }
        self.ring.add_api_key(record.clone());
        self.summary.lock().last_created = Some((now, caller.user_id.clone()));
        self.metrics.key_change("created");
        tracing::info!(
            user = %caller.user_id,
            username = caller.username.as_deref().unwrap_or_default(),
            key_id = %record.id,
            fingerprint = %fingerprint(&record.sha256),
            expires_ms = record.expires_ms,
            "self-service SCIM key created"
        );
        Ok(CreatedKey { record, token })
    }

    pub(crate) async fn delete(&self, caller: &Caller, id: &str) -> Result<(), KeyOpError> {
        let id = id.trim();
        if let Some(name) = id.strip_prefix(KUBERNETES_ID_PREFIX) {
            return Err(KeyOpError::Kubernetes(name.to_string()));
        }
        let Some(key) = self.ring.api_keys().into_iter().find(|k| k.record.id == id) else {
            return Err(KeyOpError::NotFound(id.to_string()));
        };
        if let Err(e) = self.store.api_key_write(ApiKeyChange::Delete(id.to_string())).await {
            tracing::error!(user = %caller.user_id, key_id = %id, error = %e, "deleting a self-service SCIM key failed");
            return Err(KeyOpError::Storage);
        }
        self.ring.remove_api_key(id);
        self.summary.lock().last_deleted = Some((now_ms(), caller.user_id.clone()));
        self.metrics.key_change("deleted");
        tracing::info!(
            user = %caller.user_id,
            username = caller.username.as_deref().unwrap_or_default(),
            key_id = %id,
            fingerprint = %fingerprint(&key.record.sha256),
            "self-service SCIM key deleted"
        );
        Ok(())
    }

    /// Self-service keys, then the keys file's.
    pub(crate) fn list(&self) -> Vec<KeyInfo> {
        let api = self.ring.api_keys().into_iter().map(|k| KeyInfo {
            id: k.record.id.clone(),
            name: k.record.name.clone(),
            source: "API",
            created_ms: Some(k.record.created_ms),
            created_by: Some(k.record.created_by.clone()),
            last_used_ms: k.last_used_ms(),
            expires_ms: k.record.expires_ms,
            fingerprint: Some(fingerprint(&k.record.sha256)),
        });
        let files = self.ring.file_key_names().into_iter().map(|name| KeyInfo {
            id: format!("{KUBERNETES_ID_PREFIX}{name}"),
            name,
            source: "KUBERNETES",
            created_ms: None,
            created_by: None,
            last_used_ms: None,
            expires_ms: None,
            fingerprint: None,
        });
        api.chain(files).collect()
    }

    pub(crate) fn summary(&self) -> (usize, Summary) {
        (self.ring.api_keys().len(), self.summary.lock().clone())
    }

    /// Writes the keys' last use to the store, in one write, every `every`.
    pub(crate) fn spawn_last_used_flusher(self: &Arc<Self>, every: Duration) -> tokio::task::JoinHandle<()> {
        let me = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                me.flush_last_used().await;
            }
        })
    }

    pub(crate) async fn flush_last_used(&self) {
        let used = self.ring.take_used();
        if used.is_empty() {
            return;
        }
        if let Err(e) = self.store.api_key_write(ApiKeyChange::Touch(used.clone())).await {
            tracing::warn!(error = %e, keys = used.len(), "storing when self-service keys were last used failed; retrying later");
            self.ring.unmark_used(&used);
        }
    }
}
