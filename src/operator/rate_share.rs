//! The ZITADEL budget in a pass (the division itself is `rate_budget.rs`):
//! the share written into the tenant's ConfigMap, and what the server's
//! `/status` says about the rate it runs at and whether it has work.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use kube::runtime::reflector::Store;
use serde_json::Value;

use super::build::{self, Desired, RATE_FILE_KEY};
use super::context::{OperatorContext, ReconcileContext, TenantMemo};
use super::crd::ScimTenant;
use super::names::{FIELD_MANAGER, label};
use super::rate_budget::{Budget, Share};

/// How soon a tenant whose share is moving is looked at again: its server
/// must confirm a lower share before another may rise.
pub(crate) const SETTLE_POLL: Duration = Duration::from_secs(1);

fn budget(operator: &OperatorContext) -> Option<Budget> {
    operator.cfg.zitadel_budget.map(|total| Budget { total })
}

fn shares(memo: &HashMap<String, TenantMemo>) -> HashMap<String, Share> {
    memo.iter().filter_map(|(uid, m)| m.rate_share.clone().map(|s| (uid.clone(), s))).collect()
}

/// Brings the plan in force up to date with what was observed; whether it changed.
fn replan(budget: &Budget, memo: &mut HashMap<String, TenantMemo>) -> bool {
    let mut all = shares(memo);
    budget.replan(&mut all);
    let mut changed = false;
    for (uid, planned) in all {
        if let Some(share) = memo.get_mut(&uid).and_then(|m| m.rate_share.as_mut()) {
            changed |= share.planned != planned.planned;
            share.planned = planned.planned;
            share.planned_busy = planned.planned_busy;
        }
    }
    if changed && tracing::enabled!(tracing::Level::DEBUG) {
        // uid prefix: B (busy) calls made / share.
        let mut division: Vec<String> = shares(memo)
            .iter()
            .map(|(uid, s)| {
                format!(
                    "{}:{}{}/{}",
                    uid.chars().take(8).collect::<String>(),
                    if s.busy { "B" } else { "" },
                    s.calls,
                    s.planned.unwrap_or(0.0)
                )
            })
            .collect();
        division.sort();
        tracing::debug!(division = %division.join(" "), "ZITADEL budget divided anew");
    }
    changed
}

/// Reads every server with a share's `/status` each `budget_poll`, all at
/// once, so servers that turn busy together are divided for together (a
/// tenant's own pass reads it only once per `status_poll`). Runs while this
/// replica leads.
pub(crate) async fn sweep(operator: std::sync::Arc<OperatorContext>) {
    use futures::StreamExt;
    if budget(&operator).is_none() {
        return;
    }
    let mut tick = tokio::time::interval(operator.cfg.budget_poll);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let servers: Vec<(String, String)> = operator
            .memo
            .lock()
            .iter()
            .filter(|(_, m)| m.rate_share.is_some())
            .filter_map(|(uid, m)| m.status_url.clone().map(|url| (uid.clone(), url)))
            .collect();
        // Every answer is taken before anything is divided anew.
        let answers: Vec<(String, Value)> = futures::stream::iter(servers)
            .map(|(uid, url)| {
                let http = operator.http.clone();
                async move { super::server_status::fetch(&http, &url).await.ok().map(|body| (uid, body)) }
            })
            .buffer_unordered(SWEEP_CONCURRENCY)
            .filter_map(std::future::ready)
            .collect()
            .await;
        observe_statuses(&operator, answers.iter().map(|(uid, body)| (uid.as_str(), body)));
    }
}

/// Status reads in flight at once during a sweep.
const SWEEP_CONCURRENCY: usize = 32;

/// Puts the tenant's share into its ConfigMap.
pub(crate) fn assign(ctx: &ReconcileContext, tenant: &ScimTenant, uid: &str, desired: &mut Desired) {
    let Some(budget) = budget(&ctx.operator) else { return };
    let mut memo = ctx.operator.memo.lock();
    let every_namespace = ctx.operator.cfg.watch_namespaces.is_empty();
    seed(&ctx.stores.configmaps, &mut memo, every_namespace, &tenant.namespace().unwrap_or_default());
    let entry = memo.entry(uid.to_string()).or_default();
    entry.status_url = Some(super::server_status::tenant_url(&ctx.operator.cfg.status_url_template, tenant));
    let own = entry.rate_share.get_or_insert_with(Share::default);
    own.fixed = tenant.spec.zitadel.max_requests_per_second;
    own.seeded_in = None;
    replan(&budget, &mut memo);
    let grant = budget.grant(uid, &shares(&memo));
    if let Some(share) = memo.get_mut(uid).and_then(|m| m.rate_share.as_mut()) {
        share.wrote(grant);
    }
    desired.config.data.get_or_insert_with(Default::default).insert(RATE_FILE_KEY.into(), build::rate_file(grant));
}

/// After a restart the operator knows no share yet: every tenant not seen in
/// this process counts with the share its ConfigMap holds, so the first
/// tenants looked at cannot take what the others still use. Such an entry
/// goes when its ConfigMap has (a deleted tenant's, collected after its
/// cleanup), checked for the namespaces this cache covers: every one, or the
/// namespace of the tenant at hand.
fn seed(configmaps: &Store<ConfigMap>, memo: &mut HashMap<String, TenantMemo>, every_namespace: bool, namespace: &str) {
    let cached = configmaps.state();
    let owners: std::collections::HashSet<&str> = cached
        .iter()
        .filter_map(|cm| cm.metadata.owner_references.as_ref().and_then(|o| o.first()).map(|o| o.uid.as_str()))
        .collect();
    for (uid, m) in memo.iter_mut() {
        let gone = m
            .rate_share
            .as_ref()
            .and_then(|s| s.seeded_in.as_deref())
            .is_some_and(|ns| (every_namespace || ns == namespace) && !owners.contains(uid.as_str()));
        if gone {
            m.rate_share = None;
        }
    }
    for cm in &cached {
        let managed = cm.metadata.labels.as_ref().and_then(|l| l.get(label::MANAGED_BY)).map(String::as_str);
        if managed != Some(FIELD_MANAGER) {
            continue;
        }
        let Some(rate) = cm.data.as_ref().and_then(|d| d.get(RATE_FILE_KEY)).and_then(|t| t.trim().parse::<f64>().ok())
        else {
            continue;
        };
        let Some(owner) = cm.metadata.owner_references.as_ref().and_then(|o| o.first()) else { continue };
        let entry = memo.entry(owner.uid.clone()).or_default();
        if entry.rate_share.is_none() {
            let mut share = Share { seeded_in: cm.metadata.namespace.clone(), ..Share::default() };
            share.wrote(rate);
            entry.rate_share = Some(share);
        }
    }
}

/// Takes the rate the server runs at and whether it has work from its `/status`.
pub(crate) fn observe_status(operator: &OperatorContext, uid: &str, body: &Value) {
    observe_statuses(operator, std::iter::once((uid, body)));
}

/// [`observe_status`] for several servers, divided for once they are all taken.
fn observe_statuses<'a>(operator: &OperatorContext, statuses: impl Iterator<Item = (&'a str, &'a Value)>) {
    let Some(budget) = budget(operator) else { return };
    let changed = {
        let mut memo = operator.memo.lock();
        let mut moved = false;
        for (uid, body) in statuses {
            let share = memo.entry(uid.to_string()).or_default().rate_share.get_or_insert_with(Share::default);
            moved |= take_status(share, body);
        }
        replan(&budget, &mut memo) || moved
    };
    if changed {
        operator.budget_changed.send_modify(|n| *n = n.wrapping_add(1));
    }
}

/// One server's `/status` into its share; whether it turned busy or idle,
/// or confirmed its share.
fn take_status(share: &mut Share, body: &Value) -> bool {
    let (was_busy, was_unconfirmed) = (share.busy, share.unconfirmed());
    if let Some(limit) = body.pointer("/zitadel/rate/limit").and_then(Value::as_f64) {
        share.confirm(limit);
    }
    let waiting = body.pointer("/zitadel/rate/busy").and_then(Value::as_bool).unwrap_or(false);
    let backlog = body.pointer("/projection/pendingOperations").and_then(Value::as_u64).unwrap_or(0) > 0;
    let calls = body.pointer("/zitadel/requests").and_then(Value::as_u64).unwrap_or(0);
    share.observe_work(waiting || backlog, calls);
    share.busy != was_busy || (was_unconfirmed && !share.unconfirmed())
}

/// Whether the tenant's share is still moving: its server has not confirmed
/// it, or it waits for headroom, or the set of busy servers changed its
/// target. Such a tenant is looked at every [`SETTLE_POLL`].
pub(crate) fn settling(operator: &OperatorContext, uid: &str) -> bool {
    let Some(budget) = budget(operator) else { return false };
    let memo = operator.memo.lock();
    let Some(own) = memo.get(uid).and_then(|m| m.rate_share.as_ref()) else { return false };
    let shares = shares(&memo);
    (own.confirmed.is_some() && own.unconfirmed())
        || own.written.is_some_and(|w| (budget.target(uid, &shares) - w).abs() > 1e-9)
}
