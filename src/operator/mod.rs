//! The `ScimTenant` operator: the resource, pure builders and status
//! computation, and the controller that applies them.

pub mod binding;
pub mod build;
pub mod controller;
pub mod crd;
pub mod diff;
pub mod keys;
pub mod leader;
pub mod metrics;
pub mod provisioning;
pub mod run;
pub mod status;
pub mod validate;
