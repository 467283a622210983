//! ZITADEL: the client, and the projector that mirrors the SCIM store into it.

pub mod admin;
pub mod auth;
pub mod client;
pub mod config;
pub mod desired;
pub mod error;
pub mod projector;
