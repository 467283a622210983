//! The controller's error: each step's typed error, plus what the driver
//! itself can fail at. Messages are shown in events and in status.

use super::apply::ApplyError;
use super::binding::BindError;
use super::cleanup::CleanupError;
use super::observe::ObserveError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    #[error(transparent)]
    Observe(#[from] ObserveError),
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A Kubernetes API call outside the steps' own errors.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error(transparent)]
    Cleanup(#[from] CleanupError),
    #[error("the object has no {0}")]
    MissingField(&'static str),
    #[error(
        "the caches of Secrets, ConfigMaps, PVCs, Deployments, Services and Ingresses did not sync within a minute: check the operator's RBAC"
    )]
    CachesNotSynced,
}

impl Error {
    /// The metrics label.
    /// Every value `reason()` can take: the error counter starts at 0 for
    /// each, so that `increase()` sees the first error of a reason too.
    pub(crate) const REASONS: [&'static str; 5] =
        ["KubernetesApi", "Internal", "Finalizer", "ZitadelCleanup", "CachesNotSynced"];

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            Error::Observe(_) | Error::Bind(_) | Error::Kube(_) => "KubernetesApi",
            Error::Apply(e) => e.reason(),
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e) | kube::runtime::finalizer::Error::CleanupFailed(e) => {
                    e.reason()
                }
                _ => "Finalizer",
            },
            Error::Cleanup(_) => "ZitadelCleanup",
            Error::MissingField(_) => "Internal",
            Error::CachesNotSynced => "CachesNotSynced",
        }
    }
}
