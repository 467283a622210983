//! Test support for `scim-operator`: in-process fakes of the ZITADEL API
//! (`zitadel_fake`) and of the Kubernetes API (`kube_fake`), and the real
//! server binary started on port 0 with a SCIM client for it (`Server`), whose
//! log, like in-process tracing (`init_tracing`), is shown only for a failing
//! test. `kstatus` computes an object's status the way cli-utils' kstatus does.
//!
//! Used by the integration tests and the examples of the root package. It does
//! not depend on the `scim_operator` library: the fakes speak the wire
//! protocols, so they check the real client code rather than share it.

pub mod kstatus;
pub mod kube_fake;
mod logs;
mod server;
pub mod zitadel_fake;

pub use logs::init_tracing;
pub use server::{Client, Options, Resp, Server, TOKEN, patch_ops, wait_until};
