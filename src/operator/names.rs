//! The operator's fixed vocabulary: condition types and reasons, event
//! reasons, annotation and label keys, the field manager and the finalizer.
//! Users and tools depend on these exact strings (`kubectl wait
//! --for=condition=Ready`, Flux and Argo CD health checks, alerts on event
//! reasons, label selectors, existing objects' finalizers), so a value here
//! never changes; only new ones are added.

/// The server-side apply field manager of every object the operator writes.
pub(crate) const FIELD_MANAGER: &str = "scim-operator";
/// Held until the tenant's ZITADEL machine user is removed.
pub(crate) const FINALIZER: &str = "scim.unique.app/zitadel-cleanup";
/// The `reportingController` of events.
pub(crate) const EVENT_REPORTER: &str = "scim-operator";
/// The `action` of every event.
pub(crate) const EVENT_ACTION: &str = "Reconcile";
/// The instance roles the SCIM server's machine user needs (`docs/zitadel-contract.md` §5.2).
pub(crate) const SERVICE_ROLES: [&str; 2] = ["IAM_OWNER_VIEWER", "IAM_USER_MANAGER"];

/// `status.conditions[].type`, and the `True`/`False`/`Unknown` statuses.
pub(crate) mod condition {
    pub(crate) const READY: &str = "Ready";
    pub(crate) const RECONCILING: &str = "Reconciling";
    pub(crate) const STALLED: &str = "Stalled";
    pub(crate) const KEYS_READY: &str = "KeysReady";
    pub(crate) const ZITADEL_BOUND: &str = "ZitadelBound";
    pub(crate) const SERVER_AVAILABLE: &str = "ServerAvailable";
    pub(crate) const PROVISIONING_HEALTHY: &str = "ProvisioningHealthy";
    /// Only while `spec.selfService.enabled`.
    pub(crate) const SELF_SERVICE_READY: &str = "SelfServiceReady";

    pub(crate) const TRUE: &str = "True";
    pub(crate) const FALSE: &str = "False";
    pub(crate) const UNKNOWN: &str = "Unknown";
}

/// `status.conditions[].reason`. Some also name the event sent when the
/// condition changes to them.
pub(crate) mod reason {
    // Summary conditions.
    pub(crate) const READY: &str = "Ready";
    pub(crate) const SUSPENDED: &str = "Suspended";
    pub(crate) const INVALID_SPEC: &str = "InvalidSpec";
    pub(crate) const PROGRESSING: &str = "Progressing";
    // KeysReady.
    pub(crate) const KEYS_ISSUED: &str = "KeysIssued";
    pub(crate) const KEY_EXPIRED: &str = "KeyExpired";
    pub(crate) const KEY_EXPIRING_SOON: &str = "KeyExpiringSoon";
    pub(crate) const KEYS_EXPIRED: &str = "KeysExpired";
    pub(crate) const NO_KEYS: &str = "NoKeys";
    pub(crate) const SECRET_CONFLICT: &str = "SecretConflict";
    pub(crate) const SELF_SERVICE_KEYS_ONLY: &str = "SelfServiceKeysOnly";
    // ZitadelBound.
    pub(crate) const BOUND: &str = "Bound";
    pub(crate) const CREDENTIAL_SECRET_MISSING: &str = "CredentialSecretMissing";
    pub(crate) const ZITADEL_UNAUTHORIZED: &str = "ZitadelUnauthorized";
    pub(crate) const ZITADEL_UNAVAILABLE: &str = "ZitadelUnavailable";
    pub(crate) const ZITADEL_REJECTED: &str = "ZitadelRejected";
    pub(crate) const INVALID_CREDENTIAL: &str = "InvalidCredential";
    pub(crate) const SERVICE_USER_CREDENTIAL_REJECTED: &str = "ServiceUserCredentialRejected";
    // ServerAvailable.
    pub(crate) const AVAILABLE: &str = "Available";
    pub(crate) const DEPLOYMENT_MISSING: &str = "DeploymentMissing";
    pub(crate) const SCALED_TO_ZERO: &str = "ScaledToZero";
    pub(crate) const MINIMUM_REPLICAS_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    pub(crate) const APPLY_FAILED: &str = "ApplyFailed";
    // ProvisioningHealthy.
    pub(crate) const HEALTHY: &str = "Healthy";
    pub(crate) const SERVER_UNAVAILABLE: &str = "ServerUnavailable";
    pub(crate) const STATUS_UNREACHABLE: &str = "StatusUnreachable";
    pub(crate) const ZITADEL_UNREACHABLE_FROM_SERVER: &str = "ZitadelUnreachableFromServer";
    pub(crate) const PROJECTION_FAILING: &str = "ProjectionFailing";
    pub(crate) const PROJECTION_BACKLOG: &str = "ProjectionBacklog";
    // SelfServiceReady (plus the ZITADEL reasons of ZitadelBound).
    pub(crate) const APPLICATION_READY: &str = "ApplicationReady";
    pub(crate) const INTROSPECTION_SECRET_READY: &str = "IntrospectionSecretReady";
    pub(crate) const INTROSPECTION_SECRET_MISSING: &str = "IntrospectionSecretMissing";
    pub(crate) const INTROSPECTION_SECRET_INVALID: &str = "IntrospectionSecretInvalid";
}

/// Reasons of events that are not also condition reasons.
pub(crate) mod event {
    pub(crate) const KEY_CREATED: &str = "KeyCreated";
    pub(crate) const KEY_REMOVED: &str = "KeyRemoved";
    pub(crate) const KEY_ROTATED: &str = "KeyRotated";
    pub(crate) const ROTATE_UNKNOWN_KEY: &str = "RotateUnknownKey";
    pub(crate) const SERVICE_USER_CREATED: &str = "ServiceUserCreated";
    pub(crate) const SERVICE_USER_DELETED: &str = "ServiceUserDeleted";
    pub(crate) const SERVICE_USER_KEY_ISSUED: &str = "ServiceUserKeyIssued";
    pub(crate) const ROLES_GRANTED: &str = "RolesGranted";
    pub(crate) const CLEANUP_SKIPPED: &str = "CleanupSkipped";
    pub(crate) const INTROSPECTION_APP_CREATED: &str = "IntrospectionAppCreated";
    pub(crate) const INTROSPECTION_KEY_ISSUED: &str = "IntrospectionKeyIssued";
    pub(crate) const INTROSPECTION_APP_DELETED: &str = "IntrospectionAppDeleted";
    pub(crate) const RECONCILE_FAILED: &str = "ReconcileFailed";
}

/// Annotation keys.
pub(crate) mod annotation {
    /// `scim.unique.app/rotate=<key name>[@<anything>]` replaces that key once per
    /// distinct value (the value is a request token, as Flux's `requestedAt`);
    /// the annotation stays, `status.lastHandledRotateAt` records the value served.
    pub(crate) const ROTATE: &str = "scim.unique.app/rotate";
    /// `scim.unique.app/skip-zitadel-cleanup=true`: delete the tenant without
    /// touching ZITADEL (when ZITADEL is gone for good).
    pub(crate) const SKIP_CLEANUP: &str = "scim.unique.app/skip-zitadel-cleanup";
    /// On a key Secret: when its token was generated (expiry counts from here).
    pub(crate) const CREATED_AT: &str = "scim.unique.app/created-at";
    /// On a key Secret: the rotate request (annotation value) its token was generated for.
    pub(crate) const ROTATED_FOR: &str = "scim.unique.app/rotated-for";
    pub(crate) const KEY_NAME: &str = "scim.unique.app/key-name";
    pub(crate) const FINGERPRINT: &str = "scim.unique.app/fingerprint";
    pub(crate) const EXPIRES_AT: &str = "scim.unique.app/expires-at";
    /// On the PVC: why it outlives its tenant.
    pub(crate) const RETAINED: &str = "scim.unique.app/retained";
    /// On the pod template: a change of `serve.yaml` rolls the pod.
    pub(crate) const CONFIG_HASH: &str = "scim.unique.app/config-hash";
    /// On the managed credential Secret: the ZITADEL machine key it holds.
    pub(crate) const ZITADEL_KEY_ID: &str = "scim.unique.app/zitadel-key-id";
    /// On the managed introspection Secret: the ZITADEL API application whose key it holds.
    pub(crate) const ZITADEL_APP_ID: &str = "scim.unique.app/zitadel-app-id";
    /// On the pod template: the introspection credential's version (a new
    /// key or an edited Secret rolls the pod, which reads it at start).
    pub(crate) const INTROSPECTION_VERSION: &str = "scim.unique.app/introspection-version";
    /// On every applied child: a hash of what was applied (see `diff.rs`).
    pub(crate) const APPLIED_HASH: &str = "scim.unique.app/applied-hash";
}

/// Label keys and the fixed values the operator sets.
pub(crate) mod label {
    pub(crate) const NAME: &str = "app.kubernetes.io/name";
    pub(crate) const INSTANCE: &str = "app.kubernetes.io/instance";
    pub(crate) const COMPONENT: &str = "app.kubernetes.io/component";
    pub(crate) const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub(crate) const PART_OF: &str = "app.kubernetes.io/part-of";
    /// The value of `app.kubernetes.io/name` on a tenant's children.
    pub(crate) const SERVER_APP: &str = "scim-server";
    /// The value of `app.kubernetes.io/part-of`.
    pub(crate) const PART_OF_OPERATOR: &str = "scim-operator";
    /// What the controller's child watches select.
    pub(crate) const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=scim-operator";
}
