//! `scim-operator controller`: connects to the cluster, serves the admin
//! endpoints, takes the lease if asked to, and runs the controller until
//! SIGTERM.

use std::sync::Arc;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::ListParams;
use kube::{Api, Client};

use super::controller::{self, ControllerConfig, OperatorContext};
use super::crd::ScimTenant;
use super::leader::{Candidate, LeaseConfig};
use super::metrics::{self, OperatorMetrics};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot reach the Kubernetes API: {0} (in a pod this needs a service account; outside, a kubeconfig)")]
    Connect(#[source] kube::Error),
    #[error(
        "the ScimTenant CRD is not installed or not readable: {0}. Install it with `scim-operator crd | kubectl apply --server-side -f -`"
    )]
    Crd(#[source] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("lost the leader lease; exiting so that a fresh process competes for it")]
    LeaseLost,
}

pub struct RunOptions {
    pub config: ControllerConfig,
    pub lease: Option<LeaseConfig>,
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        if let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs with an already built client and admin listener (tests pass a fake
/// API server's client and a port-0 listener).
pub async fn run_with(
    client: Client,
    listener: tokio::net::TcpListener,
    opts: RunOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let tenants: Api<ScimTenant> = match opts.config.watch_namespaces.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    tenants.list_metadata(&ListParams::default().limit(1)).await.map_err(RunError::Crd)?;
    let metrics = Arc::new(OperatorMetrics::new());
    tracing::info!(addr = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(), "admin endpoints: /metrics /healthz /readyz");
    let app = metrics::router(metrics.clone());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let operator = OperatorContext::new(client.clone(), opts.config, metrics.clone());
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|v| *v).await;
        }
    };
    let Some(lease_cfg) = opts.lease else {
        controller::run(operator, stopped()).await;
        return Ok(());
    };
    let leases: Api<Lease> = Api::namespaced(client, &lease_cfg.namespace);
    let identity = lease_cfg.identity.clone();
    let mut candidate = Candidate::new(leases, lease_cfg);
    // A standby is healthy and ready: it only waits.
    metrics.ready.store(true, std::sync::atomic::Ordering::Relaxed);
    tokio::select! {
        _ = candidate.acquire() => {}
        _ = stopped() => return Ok(()),
    }
    tracing::info!(identity = %identity, "leading");
    metrics.set_leader(true);
    let lost = tokio::select! {
        _ = candidate.hold() => true,
        _ = controller::run(operator, stopped()) => false,
    };
    metrics.set_leader(false);
    if lost {
        return Err(RunError::LeaseLost);
    }
    candidate.release().await;
    Ok(())
}

pub async fn run(opts: RunOptions, admin_listen: &str) -> Result<(), RunError> {
    let client = Client::try_default().await.map_err(RunError::Connect)?;
    let listener = tokio::net::TcpListener::bind(admin_listen)
        .await
        .map_err(|source| RunError::Bind { addr: admin_listen.to_string(), source })?;
    run_with(client, listener, opts, shutdown_signal()).await
}
