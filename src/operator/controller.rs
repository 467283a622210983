//! The controller driver: watches tenants and their children, runs each pass
//! (`reconcile.rs`) or the deletion cleanup (`cleanup.rs`) under the
//! finalizer, and turns failures into backoff, metrics and an event. A pass
//! that finds everything as it should be sends nothing.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalized, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use super::cleanup::cleanup;
use super::context::{ReconcileContext, Stores};
use super::crd::ScimTenant;
use super::events::EventNote;
use super::names::{FINALIZER, event, label};
use super::reconcile;

pub use super::config::ControllerConfig;
pub(crate) use super::context::OperatorContext;
pub(crate) use super::error::Error;

/// ZITADEL's rate limit, not parallelism, bounds a large initial sync; many
/// more in-flight passes would only hold memory.
const RECONCILE_CONCURRENCY: u16 = 32;

async fn reconcile(tenant: Arc<ScimTenant>, ctx: Arc<ReconcileContext>) -> Result<Action, Error> {
    let started = Instant::now();
    let namespace = tenant.namespace().ok_or(Error::MissingField("metadata.namespace"))?;
    let api: Api<ScimTenant> = Api::namespaced(ctx.operator.client.clone(), &namespace);
    let result = finalizer(&api, FINALIZER, tenant, |step| async {
        match step {
            Finalized::Apply(tenant) => reconcile::apply(tenant, &ctx).await,
            Finalized::Cleanup(tenant) => cleanup(tenant, &ctx).await.map_err(Error::from),
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.operator.metrics.reconciled(result.is_ok(), started.elapsed().as_secs_f64());
    result
}

fn error_policy(tenant: Arc<ScimTenant>, error: &Error, ctx: Arc<ReconcileContext>) -> Action {
    let operator = ctx.operator.clone();
    operator.metrics.failed(error.reason());
    let delay = operator.backoff(&tenant.uid().unwrap_or_default());
    tracing::warn!(tenant = %format!("{}/{}", tenant.namespace().unwrap_or_default(), tenant.name_any()), error = %error, retry_in = ?delay, "reconcile failed");
    let note = EventNote::warning(event::RECONCILE_FAILED, error.to_string());
    tokio::spawn(async move { operator.publish(&tenant, &note).await });
    Action::requeue(delay)
}

/// A cache of the operator's children of one kind, and the watch feeding it.
fn reflect<K>(api: Api<K>) -> (Store<K>, impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().labels(label::MANAGED_BY_SELECTOR).any_semantic())
        .default_backoff()
        .reflect(writer)
        .touched_objects();
    (reader, stream)
}

fn scoped<K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>>(
    client: &Client,
    namespace: &Option<String>,
) -> Api<K> {
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The PVC is kept when its tenant is deleted (it holds the store), so it
/// has no owner reference: it maps to its tenant by label.
fn pvc_owner(pvc: PersistentVolumeClaim) -> Option<ObjectRef<ScimTenant>> {
    let namespace = pvc.namespace()?;
    let tenant = pvc.labels().get(label::INSTANCE)?;
    Some(ObjectRef::<ScimTenant>::new(tenant).within(&namespace))
}

/// Changes of the ZITADEL budget's division (see `rate_share.rs`), those
/// within half a second taken as one: when many servers turn busy together
/// (Entra's cycles start together), every tenant is looked at once, not once
/// per server.
fn budget_changes(rx: tokio::sync::watch::Receiver<u64>) -> impl futures::Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        rx.borrow_and_update();
        Some(((), rx))
    })
}

/// Runs the controller for one scope (a namespace, or all) until `shutdown`.
async fn run_scope(
    operator: Arc<OperatorContext>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let client = operator.client.clone();
    let (secrets, secret_events) = reflect(scoped::<Secret>(&client, &namespace));
    let (configmaps, configmap_events) = reflect(scoped::<ConfigMap>(&client, &namespace));
    let (pvcs, pvc_events) = reflect(scoped::<PersistentVolumeClaim>(&client, &namespace));
    let (deployments, deployment_events) = reflect(scoped::<Deployment>(&client, &namespace));
    let (services, service_events) = reflect(scoped::<Service>(&client, &namespace));
    let (ingresses, ingress_events) = reflect(scoped::<Ingress>(&client, &namespace));
    let (network_policies, network_policy_events) = reflect(scoped::<NetworkPolicy>(&client, &namespace));
    let stores = Stores { secrets, configmaps, pvcs, deployments, services, ingresses, network_policies };
    let ctx = Arc::new(ReconcileContext { operator: operator.clone(), stores: stores.clone() });
    let metrics = operator.metrics.clone();
    tokio::spawn(async move {
        stores.ready().await;
        metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    Controller::new(scoped::<ScimTenant>(&client, &namespace), watcher::Config::default().any_semantic())
        .owns_stream(secret_events)
        .owns_stream(configmap_events)
        .watches_stream(pvc_events, pvc_owner)
        .owns_stream(deployment_events)
        .owns_stream(service_events)
        .owns_stream(ingress_events)
        .owns_stream(network_policy_events)
        .reconcile_all_on(budget_changes(operator.budget_changed.subscribe()))
        .with_config(kube::runtime::controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %e, "controller");
            }
        })
        .await;
}

/// Runs the controllers (one per watched namespace, or one for all) until `shutdown` resolves.
pub(crate) async fn run(operator: Arc<OperatorContext>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let scopes: Vec<Option<String>> = if operator.cfg.watch_namespaces.is_empty() {
        vec![None]
    } else {
        operator.cfg.watch_namespaces.iter().cloned().map(Some).collect()
    };
    let runs = scopes.into_iter().map(|namespace| {
        let mut stop_rx = stop_rx.clone();
        run_scope(operator.clone(), namespace, async move {
            let _ = stop_rx.wait_for(|stop| *stop).await;
        })
    });
    let sweep = tokio::spawn(super::rate_share::sweep(operator.clone()));
    let all = futures::future::join_all(runs);
    tokio::pin!(all);
    tokio::select! {
        _ = &mut all => {}
        _ = shutdown => {
            let _ = stop_tx.send(true);
            all.await;
        }
    }
    sweep.abort();
}
