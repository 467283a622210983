//! scim-operator: a SCIM 2.0 server for Microsoft Entra ID that projects users
//! into ZITADEL, and the Kubernetes operator that runs it per tenant.

pub mod app;
pub mod config;
pub mod keys;
pub mod operator;
pub mod preflight;
pub(crate) mod provisioning;
pub mod scim;
pub(crate) mod server;
pub mod store;
pub mod zitadel;
