//! The SCIM protocol, pure: no I/O, so it can be tested and fuzzed alone.

pub mod discovery;
pub mod error;
pub mod filter;
pub mod patch;
pub mod resource;
pub mod schema;
