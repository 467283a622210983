//! The `ScimTenant` operator. A pass over a tenant is a pipeline, one module
//! per step: `observe` → `validate` → `keys` (plan) → `binding` (ZITADEL) →
//! `build` (pure) → `apply` → `status` (pure, with `status::checks`) →
//! `events`. `reconcile` orders the steps, `controller` drives them, and
//! `names` holds every condition, reason, annotation and label string.

pub mod apply;
pub mod binding;
pub mod build;
pub mod cleanup;
pub mod config;
pub mod context;
pub mod controller;
pub mod crd;
pub mod diff;
pub mod error;
pub mod events;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod observe;
pub mod provisioning_health;
pub mod reconcile;
pub mod run;
pub mod status;
pub mod validate;
