//! ZITADEL: the client, and the projector that mirrors the SCIM store into it.

pub(crate) mod admin;
pub(crate) mod apps;
pub(crate) mod auth;
pub mod client;
pub(crate) mod config;
pub(crate) mod desired;
pub(crate) mod error;
pub(crate) mod introspection;
pub(crate) mod projector;
pub mod rate;
