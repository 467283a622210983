//! What every pass shares: the client, configuration, metrics, the event
//! recorder, the operator's ZITADEL admin client, and what is remembered per
//! tenant between passes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource};
use parking_lot::Mutex;

use super::config::ControllerConfig;
use super::crd::{ProvisioningStatus, ScimTenant, SelfServiceStatus};
use super::events::EventNote;
use super::metrics::OperatorMetrics;
use super::names::{EVENT_ACTION, EVENT_REPORTER, reason};
use super::status::Check;
use crate::zitadel::auth::Credential;
use crate::zitadel::client::Client as Zitadel;

/// Longest event note; the API server rejects longer ones.
const EVENT_NOTE_CHARS: usize = 1000;

/// The caches of children, filled by the controller's watches.
#[derive(Clone)]
pub(crate) struct Stores {
    pub secrets: Store<Secret>,
    pub configmaps: Store<ConfigMap>,
    pub pvcs: Store<PersistentVolumeClaim>,
    pub deployments: Store<Deployment>,
    pub services: Store<Service>,
    pub ingresses: Store<Ingress>,
    pub network_policies: Store<NetworkPolicy>,
}

impl Stores {
    pub(crate) async fn ready(&self) {
        let _ = futures::join!(
            self.secrets.wait_until_ready(),
            self.configmaps.wait_until_ready(),
            self.pvcs.wait_until_ready(),
            self.deployments.wait_until_ready(),
            self.services.wait_until_ready(),
            self.ingresses.wait_until_ready(),
            self.network_policies.wait_until_ready(),
        );
    }
}

/// The last successful binding of a tenant.
#[derive(Clone)]
pub(crate) struct BoundMemo {
    pub at: Instant,
    pub generation: i64,
    /// What the binding was made for: the managed key id, or the existing Secret's resourceVersion.
    pub credential: Option<String>,
    pub user_id: String,
}

/// The last self-service application found in order in ZITADEL.
#[derive(Clone)]
pub(crate) struct SelfServiceMemo {
    pub at: Instant,
    pub generation: i64,
    /// The key id the Secret held then.
    pub key_id: String,
    pub app_id: String,
    pub client_id: String,
}

/// The last answer of a tenant server's `/status`.
#[derive(Clone)]
pub(crate) struct ProvisioningMemo {
    pub at: Instant,
    pub status: Option<ProvisioningStatus>,
    pub check: Check,
    pub self_service_keys: Option<SelfServiceStatus>,
}

/// What is remembered per tenant (by uid) between passes.
#[derive(Default)]
pub(crate) struct TenantMemo {
    pub bound: Option<BoundMemo>,
    pub provisioning: Option<ProvisioningMemo>,
    pub self_service: Option<SelfServiceMemo>,
    pub failures: u32,
    /// The rotate request last acted on, until the tenant cache shows it in status.
    pub rotate_handled: Option<String>,
    /// Its share of the ZITADEL budget.
    pub rate_share: Option<super::rate_budget::Share>,
    /// Where its server's `/status` is read, known once it has a share.
    pub status_url: Option<String>,
}

/// Shared by the controllers of every watched namespace.
pub(crate) struct OperatorContext {
    pub client: Client,
    pub cfg: ControllerConfig,
    pub metrics: Arc<OperatorMetrics>,
    recorder: Recorder,
    pub http: reqwest::Client,
    admin: Mutex<Option<(String, Arc<Zitadel>)>>,
    pub memo: Mutex<HashMap<String, TenantMemo>>,
    /// Bumped when the ZITADEL budget's division may have changed for other
    /// tenants (a server became busy or idle, or confirmed a lower share):
    /// every tenant is looked at again then, not at its next poll.
    pub budget_changed: tokio::sync::watch::Sender<u64>,
}

impl OperatorContext {
    pub(crate) fn new(client: Client, cfg: ControllerConfig, metrics: Arc<OperatorMetrics>) -> Arc<Self> {
        let recorder = Recorder::new(
            client.clone(),
            Reporter { controller: EVENT_REPORTER.into(), instance: Some(cfg.instance.clone()) },
        );
        Arc::new(OperatorContext {
            client,
            cfg,
            metrics,
            recorder,
            http: reqwest::Client::new(),
            admin: Mutex::new(None),
            memo: Mutex::new(HashMap::new()),
            budget_changed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// The admin client, rebuilt whenever the credential file changes (a
    /// rotated Secret is picked up without a restart).
    pub(crate) fn admin(&self) -> Result<Arc<Zitadel>, Check> {
        let unusable = |message: String| Check::Failed { reason: reason::ZITADEL_UNAUTHORIZED, message };
        let path = &self.cfg.admin_credential_file;
        let text = std::fs::read_to_string(path).map_err(|e| {
            unusable(format!("the operator's ZITADEL credential {} cannot be read: {e}", path.display()))
        })?;
        let mut cached = self.admin.lock();
        if let Some((cached_text, client)) = cached.as_ref()
            && *cached_text == text
        {
            return Ok(client.clone());
        }
        let credential = Credential::parse(&text)
            .map_err(|e| unusable(format!("the operator's ZITADEL credential is unusable: {e}")))?;
        let client = Arc::new(
            Zitadel::with_credential(&self.cfg.admin_zitadel(), credential).map_err(|e| unusable(e.to_string()))?,
        );
        *cached = Some((text, client.clone()));
        Ok(client)
    }

    /// Publishes an event on the tenant; a failure to do so only is logged.
    pub(crate) async fn publish(&self, tenant: &ScimTenant, note: &EventNote) {
        let event = Event {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.clone(),
            note: Some(note.message.chars().take(EVENT_NOTE_CHARS).collect()),
            action: EVENT_ACTION.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, &tenant.object_ref(&())).await {
            tracing::debug!(error = %e, "cannot publish an event");
        }
    }

    pub(crate) async fn publish_all(&self, tenant: &ScimTenant, notes: &[EventNote]) {
        for note in notes {
            self.publish(tenant, note).await;
        }
    }

    /// The delay before retrying a failing tenant: doubling from
    /// `backoff_base` up to `backoff_max`.
    pub(crate) fn backoff(&self, uid: &str) -> Duration {
        let mut memo = self.memo.lock();
        let tenant = memo.entry(uid.to_string()).or_default();
        tenant.failures = tenant.failures.saturating_add(1);
        let exponential = self.cfg.backoff_base.saturating_mul(1u32 << tenant.failures.saturating_sub(1).min(16));
        let delay = exponential.min(self.cfg.backoff_max);
        // Spread retries of many tenants failing together by up to 10%.
        delay + delay.mul_f64(rand::random::<f64>() * 0.1)
    }

    pub(crate) fn succeeded(&self, uid: &str) {
        if let Some(tenant) = self.memo.lock().get_mut(uid) {
            tenant.failures = 0;
        }
    }
}

/// One scope's (namespace's, or all namespaces') view: the shared context
/// plus that scope's caches.
pub(crate) struct ReconcileContext {
    pub operator: Arc<OperatorContext>,
    pub stores: Stores,
}
