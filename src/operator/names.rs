//! The operator's fixed vocabulary: condition types and reasons, event
//! reasons, annotation and label keys, the field manager and the finalizer.
//! Users and tools depend on these exact strings (`kubectl wait
//! --for=condition=Ready`, Flux and Argo CD health checks, alerts on event
//! reasons, label selectors, existing objects' finalizers), so a value here
//! never changes; only new ones are added.

/// The server-side apply field manager of every object the operator writes.
pub const FIELD_MANAGER: &str = "scim-operator";
/// Held until the tenant's ZITADEL machine user is removed.
pub const FINALIZER: &str = "scim.unique.app/zitadel-cleanup";
/// The `reportingController` of events.
pub const EVENT_REPORTER: &str = "scim-operator";
/// The `action` of every event.
pub const EVENT_ACTION: &str = "Reconcile";
/// The instance roles the SCIM server's machine user needs (`docs/zitadel-contract.md` §5.2).
pub const SERVICE_ROLES: [&str; 2] = ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"];

/// `status.conditions[].type`, and the `True`/`False`/`Unknown` statuses.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const RECONCILING: &str = "Reconciling";
    pub const STALLED: &str = "Stalled";
    pub const KEYS_READY: &str = "KeysReady";
    pub const ZITADEL_BOUND: &str = "ZitadelBound";
    pub const SERVER_AVAILABLE: &str = "ServerAvailable";
    pub const PROVISIONING_HEALTHY: &str = "ProvisioningHealthy";

    pub const TRUE: &str = "True";
    pub const FALSE: &str = "False";
    pub const UNKNOWN: &str = "Unknown";
}

/// `status.conditions[].reason`. Some also name the event sent when the
/// condition changes to them.
pub mod reason {
    // Summary conditions.
    pub const READY: &str = "Ready";
    pub const SUSPENDED: &str = "Suspended";
    pub const INVALID_SPEC: &str = "InvalidSpec";
    pub const PROGRESSING: &str = "Progressing";
    // KeysReady.
    pub const KEYS_ISSUED: &str = "KeysIssued";
    pub const KEY_EXPIRED: &str = "KeyExpired";
    pub const KEY_EXPIRING_SOON: &str = "KeyExpiringSoon";
    pub const KEYS_EXPIRED: &str = "KeysExpired";
    pub const NO_KEYS: &str = "NoKeys";
    pub const SECRET_CONFLICT: &str = "SecretConflict";
    // ZitadelBound.
    pub const BOUND: &str = "Bound";
    pub const CREDENTIAL_SECRET_MISSING: &str = "CredentialSecretMissing";
    pub const ZITADEL_UNAUTHORIZED: &str = "ZitadelUnauthorized";
    pub const ZITADEL_UNAVAILABLE: &str = "ZitadelUnavailable";
    pub const ZITADEL_REJECTED: &str = "ZitadelRejected";
    pub const INVALID_CREDENTIAL: &str = "InvalidCredential";
    pub const SERVICE_USER_CREDENTIAL_REJECTED: &str = "ServiceUserCredentialRejected";
    // ServerAvailable.
    pub const AVAILABLE: &str = "Available";
    pub const DEPLOYMENT_MISSING: &str = "DeploymentMissing";
    pub const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    pub const APPLY_FAILED: &str = "ApplyFailed";
    // ProvisioningHealthy.
    pub const HEALTHY: &str = "Healthy";
    pub const SERVER_UNAVAILABLE: &str = "ServerUnavailable";
    pub const STATUS_UNREACHABLE: &str = "StatusUnreachable";
    pub const ZITADEL_UNREACHABLE_FROM_SERVER: &str = "ZitadelUnreachableFromServer";
    pub const PROJECTION_FAILING: &str = "ProjectionFailing";
    pub const PROJECTION_BACKLOG: &str = "ProjectionBacklog";
}

/// Reasons of events that are not also condition reasons.
pub mod event {
    pub const KEY_CREATED: &str = "KeyCreated";
    pub const KEY_REMOVED: &str = "KeyRemoved";
    pub const KEY_ROTATED: &str = "KeyRotated";
    pub const ROTATE_UNKNOWN_KEY: &str = "RotateUnknownKey";
    pub const SERVICE_USER_CREATED: &str = "ServiceUserCreated";
    pub const SERVICE_USER_DELETED: &str = "ServiceUserDeleted";
    pub const SERVICE_USER_KEY_ISSUED: &str = "ServiceUserKeyIssued";
    pub const ROLES_GRANTED: &str = "RolesGranted";
    pub const CLEANUP_SKIPPED: &str = "CleanupSkipped";
    pub const RECONCILE_FAILED: &str = "ReconcileFailed";
}

/// Annotation keys.
pub mod annotation {
    /// `kubectl annotate st NAME scim.unique.app/rotate=<key name>` replaces that key now.
    pub const ROTATE: &str = "scim.unique.app/rotate";
    /// `scim.unique.app/skip-zitadel-cleanup=true`: delete the tenant without
    /// touching ZITADEL (when ZITADEL is gone for good).
    pub const SKIP_CLEANUP: &str = "scim.unique.app/skip-zitadel-cleanup";
    /// On a key Secret: when its token was generated (expiry counts from here).
    pub const CREATED_AT: &str = "scim.unique.app/created-at";
    /// On a key Secret: the tenant resourceVersion whose rotate annotation was served.
    pub const ROTATED_FOR: &str = "scim.unique.app/rotated-for";
    pub const KEY_NAME: &str = "scim.unique.app/key-name";
    pub const FINGERPRINT: &str = "scim.unique.app/fingerprint";
    pub const EXPIRES_AT: &str = "scim.unique.app/expires-at";
    /// On the PVC: why it outlives its tenant.
    pub const RETAINED: &str = "scim.unique.app/retained";
    /// On the pod template: a change of `serve.yaml` rolls the pod.
    pub const CONFIG_HASH: &str = "scim.unique.app/config-hash";
    /// On the managed credential Secret: the ZITADEL machine key it holds.
    pub const ZITADEL_KEY_ID: &str = "scim.unique.app/zitadel-key-id";
    /// On every applied child: a hash of what was applied (see `diff.rs`).
    pub const APPLIED_HASH: &str = "scim.unique.app/applied-hash";
}

/// Label keys and the fixed values the operator sets.
pub mod label {
    pub const NAME: &str = "app.kubernetes.io/name";
    pub const INSTANCE: &str = "app.kubernetes.io/instance";
    pub const COMPONENT: &str = "app.kubernetes.io/component";
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The value of `app.kubernetes.io/name` on a tenant's children.
    pub const SERVER_APP: &str = "scim-server";
    /// The value of `app.kubernetes.io/part-of`.
    pub const PART_OF_OPERATOR: &str = "scim-operator";
    /// What the controller's child watches select.
    pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=scim-operator";
}
