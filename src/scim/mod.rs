//! The SCIM protocol, pure: no I/O, so it can be tested and fuzzed alone.

pub(crate) mod discovery;
pub(crate) mod error;
pub mod filter;
pub mod names;
pub mod patch;
pub mod resource;
pub mod schema;
