//! The one write path for SCIM resources: create, replace, patch and delete a
//! User or Group, straight into the store or, when ZITADEL is configured,
//! through the projector.
//!
//! The route is decided here and nowhere else, so the HTTP layer only parses
//! requests and renders answers. The rules the routes follow:
//!
//! - Without ZITADEL every write goes to the store alone; nothing is queued.
//! - With ZITADEL a user is written to ZITADEL first (the projector decides
//!   whether a failure rejects the write or defers it to the outbox), so a
//!   rejection never leaves a stored user ZITADEL refused.
//! - With ZITADEL a group is written to the store first: a group is not a
//!   ZITADEL object, only the roles of its members are. The members whose
//!   roles change are queued in the same transaction, and the outbox worker
//!   is woken to project them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Map, Value};
use time::OffsetDateTime;

use crate::scim::error::ScimError;
use crate::scim::patch::{PatchOperation, apply_patch};
use crate::scim::resource::{
    attributes_of, build_document, created_of, etag, etag_matches, same_attributes, timestamp,
};
use crate::scim::schema::ResourceKind;
use crate::store::{MutateFn, Mutation, Record, Store, StoreError};
use crate::zitadel::projector::Projector;

/// The entity tags an `If-Match` header accepts (`*` for any); `None` when
/// the request carries no condition.
pub(crate) type IfMatch = Option<Vec<String>>;

/// Creates, changes and deletes SCIM resources, with or without ZITADEL.
#[derive(Clone)]
pub(crate) struct Provisioning {
    store: Arc<dyn Store>,
    zitadel: Option<Arc<Projector>>,
}

impl Provisioning {
    /// `zitadel` is the projector when ZITADEL is configured: user writes then
    /// go through it, and group writes queue the members whose roles change.
    pub(crate) fn new(store: Arc<dyn Store>, zitadel: Option<Arc<Projector>>) -> Self {
        Provisioning { store, zitadel }
    }

    /// Stores a new resource from validated attributes (see
    /// `scim::resource::normalize`) under a fresh id, at version 1.
    pub(crate) async fn create(&self, kind: ResourceKind, attrs: Map<String, Value>) -> Result<Record, ScimError> {
        let t = now();
        // Time-ordered ids: each insert lands at the end of the id index instead of
        // on a random page, which halves the pages a durable write dirties.
        let id = uuid::Uuid::now_v7().to_string();
        let doc = build_document(kind, &id, attrs, &t, &t, 1);
        let created = match (&self.zitadel, kind) {
            (Some(p), ResourceKind::User) => p.create_user(doc).await,
            (Some(p), ResourceKind::Group) => {
                let side = p.group_side_effects(None, Some(&doc));
                let queued = !side.enqueue.is_empty();
                let r = self.store.create_with(kind, doc, side).await;
                if queued {
                    p.wake_outbox();
                }
                r
            }
            (None, _) => self.store.create(kind, doc).await,
        };
        created.map_err(StoreError::into_scim)
    }

    /// Replaces every writable attribute (PUT). Identical attributes write
    /// nothing and keep the version.
    pub(crate) async fn replace(
        &self,
        kind: ResourceKind,
        id: &str,
        attrs: Map<String, Value>,
        if_match: IfMatch,
    ) -> Result<Record, ScimError> {
        let mutate: MutateFn = Box::new(move |rec, version| {
            precondition(&if_match, rec)?;
            Ok(next_document(kind, rec, attrs, version))
        });
        self.update(kind, id, mutate).await
    }

    /// Applies PATCH operations to the current attributes, atomically with
    /// respect to other writes of the same resource.
    pub(crate) async fn patch(
        &self,
        kind: ResourceKind,
        id: &str,
        ops: Vec<PatchOperation>,
        if_match: IfMatch,
    ) -> Result<Record, ScimError> {
        let mutate: MutateFn = Box::new(move |rec, version| {
            precondition(&if_match, rec)?;
            let mut attrs = attributes_of(&rec.doc);
            apply_patch(kind, &mut attrs, &ops)?;
            Ok(next_document(kind, rec, attrs, version))
        });
        self.update(kind, id, mutate).await
    }

    /// Deletes a resource; 404 when it does not exist, 412 when `if_match`
    /// names another version.
    pub(crate) async fn delete(&self, kind: ResourceKind, id: &str, if_match: IfMatch) -> Result<(), ScimError> {
        if if_match.is_some() {
            let rec =
                self.store.get(kind, id).await.map_err(StoreError::into_scim)?.ok_or_else(|| not_found(kind, id))?;
            precondition(&if_match, &rec)?;
        }
        let deleted = match (&self.zitadel, kind) {
            (Some(p), ResourceKind::User) => p.delete_user(id).await,
            (Some(p), ResourceKind::Group) => {
                let proj = Arc::clone(p);
                let r = self
                    .store
                    .delete_with(kind, id, Box::new(move |rec| proj.group_side_effects(Some(&rec.doc), None)))
                    .await;
                p.wake_outbox();
                r
            }
            (None, _) => self.store.delete(kind, id).await,
        };
        deleted.map_err(StoreError::into_scim)
    }

    async fn update(&self, kind: ResourceKind, id: &str, mutate: MutateFn) -> Result<Record, ScimError> {
        let updated = match (&self.zitadel, kind) {
            (Some(p), ResourceKind::User) => p.update_user(id, mutate).await,
            (Some(p), ResourceKind::Group) => self.update_group(p, id, mutate).await,
            (None, _) => self.store.update(kind, id, mutate).await,
        };
        updated.map_err(StoreError::into_scim)
    }

    /// A group change with the members whose roles it changes queued in the
    /// same transaction. Which members that is depends on the document the
    /// mutation produces, so it is decided inside the store's transaction.
    async fn update_group(&self, p: &Arc<Projector>, id: &str, mutate: MutateFn) -> Result<Record, StoreError> {
        let proj = Arc::clone(p);
        let queued = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&queued);
        let with_side_effects: MutateFn = Box::new(move |rec, version| match mutate(rec, version)? {
            Mutation::Replace(doc) => {
                let side = proj.group_side_effects(Some(&rec.doc), Some(&doc));
                flag.store(!side.enqueue.is_empty(), Ordering::Relaxed);
                Ok(Mutation::WithSideEffects { mutation: Box::new(Mutation::Replace(doc)), side })
            }
            other => Ok(other),
        });
        let r = self.store.update(ResourceKind::Group, id, with_side_effects).await;
        if queued.load(Ordering::Relaxed) {
            p.wake_outbox();
        }
        r
    }
}

fn now() -> String {
    timestamp(OffsetDateTime::now_utc())
}

fn not_found(kind: ResourceKind, id: &str) -> ScimError {
    ScimError::not_found(format!("{} {id} not found", kind.name()))
}

fn precondition(if_match: &IfMatch, rec: &Record) -> Result<(), ScimError> {
    match if_match {
        Some(tags) if !etag_matches(tags, &etag(rec.version)) => Err(ScimError::precondition_failed(format!(
            "If-Match does not match the current version {}; read the resource again and retry",
            etag(rec.version)
        ))),
        _ => Ok(()),
    }
}

/// Builds the new document from new attributes, or reports no change so the
/// store writes nothing and the version stays.
fn next_document(kind: ResourceKind, rec: &Record, attrs: Map<String, Value>, version: u64) -> Mutation {
    if same_attributes(&attrs, &rec.doc) {
        return Mutation::Unchanged;
    }
    Mutation::Replace(build_document(kind, &rec.id, attrs, created_of(&rec.doc), &now(), version))
}

#[cfg(test)]
mod tests;
