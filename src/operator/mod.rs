//! The Kubernetes operator: the `ScimTenant` resource, pure builders of its
//! children, and the status it reports.

pub mod build;
pub mod crd;
pub mod status;
pub mod validate;
