//! The GraphQL schema of the self-service key API:
//! `scimKeyCreate(name, expiresInDays): ScimKey!`, `scimKeyDelete(id): Boolean!`,
//! `scimKeys: [ScimKeyInfo!]!`. The caller was authorised before the request
//! runs; it is in the request's data.

use std::sync::Arc;

use async_graphql::{Context, EmptySubscription, Enum, ErrorExtensions, ID, Object, Schema, SimpleObject};

use super::access::Caller;
use super::keys::{KeyInfo, KeyManager, KeyOpError};
use crate::server::ms_to_time;

pub(crate) type KeySchema = Schema<QueryRoot, MutationRoot, EmptySubscription>;

/// Nesting deeper than the schema has is an attack, not a query.
const MAX_DEPTH: usize = 6;
/// Each field costs 1: this allows a few aliases of every field, not hundreds.
const MAX_COMPLEXITY: usize = 60;

pub(crate) fn build(keys: Arc<KeyManager>) -> KeySchema {
    Schema::build(QueryRoot, MutationRoot, EmptySubscription)
        .data(keys)
        .limit_depth(MAX_DEPTH)
        .limit_complexity(MAX_COMPLEXITY)
        .limit_recursive_depth(32)
        .limit_directives(4)
        .disable_introspection()
        .finish()
}

#[derive(Enum, Copy, Clone, Eq, PartialEq)]
pub(crate) enum KeySource {
    /// Created with this API.
    Api,
    /// From the tenant's keys file (managed in Kubernetes).
    Kubernetes,
}

/// A key just created; `key` is shown only here.
#[derive(SimpleObject)]
pub(crate) struct ScimKey {
    id: ID,
    key: String,
    name: String,
    created_at: String,
    expires_at: Option<String>,
}

#[derive(SimpleObject)]
pub(crate) struct ScimKeyInfo {
    id: ID,
    name: String,
    source: KeySource,
    created_at: Option<String>,
    created_by: Option<String>,
    last_used_at: Option<String>,
    expires_at: Option<String>,
    fingerprint: Option<String>,
}

impl From<KeyInfo> for ScimKeyInfo {
    fn from(k: KeyInfo) -> Self {
        ScimKeyInfo {
            id: ID(k.id),
            name: k.name,
            source: if k.source == "API" { KeySource::Api } else { KeySource::Kubernetes },
            created_at: k.created_ms.and_then(ms_to_time),
            created_by: k.created_by,
            last_used_at: k.last_used_ms.and_then(ms_to_time),
            expires_at: k.expires_ms.and_then(ms_to_time),
            fingerprint: k.fingerprint,
        }
    }
}

fn gql_error(e: KeyOpError) -> async_graphql::Error {
    let code = e.code();
    let retry = match &e {
        KeyOpError::RateLimited { retry_after_secs } => Some(*retry_after_secs),
        _ => None,
    };
    async_graphql::Error::new(e.to_string()).extend_with(|_, ext| {
        ext.set("code", code);
        if let Some(secs) = retry {
            ext.set("retryAfterSeconds", secs);
        }
    })
}

fn parts<'a>(ctx: &'a Context<'_>) -> async_graphql::Result<(&'a Arc<KeyManager>, &'a Caller)> {
    Ok((ctx.data::<Arc<KeyManager>>()?, ctx.data::<Caller>()?))
}

pub(crate) struct QueryRoot;

#[Object]
impl QueryRoot {
    /// Every key that opens this tenant's SCIM endpoints, without the keys themselves.
    async fn scim_keys(&self, ctx: &Context<'_>) -> async_graphql::Result<Vec<ScimKeyInfo>> {
        let (keys, _) = parts(ctx)?;
        Ok(keys.list().into_iter().map(ScimKeyInfo::from).collect())
    }
}

pub(crate) struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Creates a key for this tenant's SCIM endpoints. Store it safely: it is shown only now.
    async fn scim_key_create(
        &self,
        ctx: &Context<'_>,
        name: Option<String>,
        expires_in_days: Option<i32>,
    ) -> async_graphql::Result<ScimKey> {
        let (keys, caller) = parts(ctx)?;
        let created = keys.create(caller, name, expires_in_days).await.map_err(gql_error)?;
        Ok(ScimKey {
            id: ID(created.record.id),
            key: created.token,
            name: created.record.name,
            created_at: ms_to_time(created.record.created_ms).unwrap_or_default(),
            expires_at: created.record.expires_ms.and_then(ms_to_time),
        })
    }

    /// Deletes a key made with this API; requests with it are refused from now on.
    async fn scim_key_delete(&self, ctx: &Context<'_>, id: ID) -> async_graphql::Result<bool> {
        let (keys, caller) = parts(ctx)?;
        keys.delete(caller, &id).await.map_err(gql_error)?;
        Ok(true)
    }
}
