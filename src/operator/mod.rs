//! The `ScimTenant` operator. A pass over a tenant is a pipeline, one module
//! per step: `observe` → `validate` → `keys` (plan) → `binding` (ZITADEL) →
//! `build` (pure) → `apply` → `status` (pure, with `status::checks`) →
//! `events`. `reconcile` orders the steps, `controller` drives them, and
//! `names` holds every condition, reason, annotation and label string.

pub(crate) mod apply;
pub(crate) mod binding;
pub mod build;
pub(crate) mod cleanup;
pub(crate) mod config;
pub(crate) mod context;
pub mod controller;
pub mod crd;
pub(crate) mod diff;
pub(crate) mod error;
pub(crate) mod events;
pub(crate) mod keys;
pub mod leader;
pub(crate) mod metrics;
pub(crate) mod names;
pub(crate) mod observe;
pub(crate) mod provisioning_health;
pub(crate) mod rate_budget;
pub(crate) mod rate_share;
pub(crate) mod reconcile;
pub mod run;
pub(crate) mod self_service;
pub(crate) mod server_status;
pub(crate) mod status;
pub mod validate;
