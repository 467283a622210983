//! The write path without ZITADEL, against the embedded store.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use super::Provisioning;
use crate::scim::error::{ScimError, ScimType};
use crate::scim::patch::parse_patch;
use crate::scim::resource::{etag, normalize};
use crate::scim::schema::ResourceKind;
use crate::store::Durability;
use crate::store::Store;

struct Fixture {
    // Kept for the store's lifetime: the directory goes when it drops.
    _dir: tempfile::TempDir,
    store: Arc<dyn Store>,
    provisioning: Provisioning,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::store::open_embedded(dir.path(), Durability::Normal).expect("open store");
        let provisioning = Provisioning::new(store.clone(), None);
        Fixture { _dir: dir, store, provisioning }
    }

    async fn assert_no_outbox_entry(&self) {
        let stats = self.store.outbox_stats().await.expect("outbox stats");
        assert_eq!(stats.pending, 0, "without ZITADEL nothing is queued: {stats:?}");
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.store.close();
    }
}

fn attrs(kind: ResourceKind, body: Value) -> Map<String, Value> {
    normalize(kind, &body).expect("valid attributes")
}

fn user(name: &str) -> Map<String, Value> {
    attrs(ResourceKind::User, json!({"userName": name, "active": true, "displayName": "Alice"}))
}

fn patch_ops(body: Value) -> Vec<crate::scim::patch::PatchOperation> {
    parse_patch(&body).expect("valid PatchOp")
}

fn status(e: &ScimError) -> (u16, Option<ScimType>) {
    (e.status, e.scim_type)
}

#[tokio::test]
async fn created_users_read_back_at_version_one() {
    let f = Fixture::new();
    let rec = f.provisioning.create(ResourceKind::User, user("alice@contoso.com")).await.unwrap();
    assert_eq!(rec.version, 1);
    let stored = f.store.get(ResourceKind::User, &rec.id).await.unwrap().expect("stored");
    assert_eq!(stored.doc["userName"], "alice@contoso.com");
    assert_eq!(stored.doc["id"], rec.id.as_str());
    assert_eq!(stored.doc["meta"]["version"], etag(1));
    assert_eq!(stored.doc["meta"]["resourceType"], "User");
    f.assert_no_outbox_entry().await;
}

#[tokio::test]
async fn replace_and_patch_bump_the_version_only_on_change() {
    let f = Fixture::new();
    let rec = f.provisioning.create(ResourceKind::User, user("bob@contoso.com")).await.unwrap();
    let id = rec.id.clone();

    let mut changed = user("bob@contoso.com");
    changed.insert("displayName".into(), json!("Bob"));
    let replaced = f.provisioning.replace(ResourceKind::User, &id, changed.clone(), None).await.unwrap();
    assert_eq!(replaced.version, 2);
    assert_eq!(replaced.doc["displayName"], "Bob");
    let same = f.provisioning.replace(ResourceKind::User, &id, changed, None).await.unwrap();
    assert_eq!(same.version, 2, "identical attributes write nothing");

    let ops = patch_ops(json!({"Operations": [{"op": "Replace", "path": "active", "value": "False"}]}));
    // The tag as `If-Match` carries it once parsed: without the weak prefix.
    let patched = f.provisioning.patch(ResourceKind::User, &id, ops, Some(vec!["\"2\"".into()])).await.unwrap();
    assert_eq!(patched.version, 3);
    assert_eq!(patched.doc["active"], json!(false));
    assert_eq!(patched.doc["displayName"], "Bob", "PATCH keeps what it does not touch");
    f.assert_no_outbox_entry().await;
}

#[tokio::test]
async fn a_stale_if_match_is_a_failed_precondition() {
    let f = Fixture::new();
    let rec = f.provisioning.create(ResourceKind::User, user("carol@contoso.com")).await.unwrap();
    let ops = patch_ops(json!({"Operations": [{"op": "replace", "path": "displayName", "value": "C"}]}));
    let err = f.provisioning.patch(ResourceKind::User, &rec.id, ops, Some(vec!["\"7\"".into()])).await.unwrap_err();
    assert_eq!(err.status, 412);
    let err = f.provisioning.delete(ResourceKind::User, &rec.id, Some(vec!["\"7\"".into()])).await.unwrap_err();
    assert_eq!(err.status, 412);
    assert!(f.store.get(ResourceKind::User, &rec.id).await.unwrap().is_some(), "nothing was deleted");
}

#[tokio::test]
async fn deleted_resources_are_gone_and_a_second_delete_is_not_found() {
    let f = Fixture::new();
    let u = f.provisioning.create(ResourceKind::User, user("dave@contoso.com")).await.unwrap();
    let g = f
        .provisioning
        .create(
            ResourceKind::Group,
            attrs(ResourceKind::Group, json!({"displayName": "Sales", "members": [{"value": u.id}]})),
        )
        .await
        .unwrap();
    f.provisioning.delete(ResourceKind::User, &u.id, None).await.unwrap();
    assert!(f.store.get(ResourceKind::User, &u.id).await.unwrap().is_none());
    let group = f.store.get(ResourceKind::Group, &g.id).await.unwrap().expect("group stays");
    assert!(group.doc.get("members").is_none_or(|m| m.as_array().is_some_and(Vec::is_empty)), "{}", group.doc);
    f.provisioning.delete(ResourceKind::Group, &g.id, Some(vec!["*".into()])).await.unwrap();
    let err = f.provisioning.delete(ResourceKind::Group, &g.id, None).await.unwrap_err();
    assert_eq!(err.status, 404);
    f.assert_no_outbox_entry().await;
}

#[tokio::test]
async fn a_taken_user_name_is_the_scim_uniqueness_conflict() {
    let f = Fixture::new();
    f.provisioning.create(ResourceKind::User, user("erin@contoso.com")).await.unwrap();
    let err = f.provisioning.create(ResourceKind::User, user("ERIN@contoso.com")).await.unwrap_err();
    assert_eq!(status(&err), (409, Some(ScimType::Uniqueness)), "{err:?}");

    let other = f.provisioning.create(ResourceKind::User, user("frank@contoso.com")).await.unwrap();
    let err = f.provisioning.replace(ResourceKind::User, &other.id, user("erin@contoso.com"), None).await.unwrap_err();
    assert_eq!(status(&err), (409, Some(ScimType::Uniqueness)), "{err:?}");
    f.assert_no_outbox_entry().await;
}

/// Group writes with ZITADEL configured never call it (a group is not a
/// ZITADEL object), so an unreachable address is enough here.
fn zitadel(f: &Fixture, pat_dir: &std::path::Path) -> Provisioning {
    use crate::zitadel::config::{Credentials, GroupRoles, ZitadelConfig};
    let pat = pat_dir.join("pat");
    std::fs::write(&pat, "token").expect("write PAT");
    let cfg = ZitadelConfig {
        url: "http://127.0.0.1:9".into(),
        credentials: Credentials { pat_file: Some(pat), key_file: None },
        organization_id: "org".into(),
        project_id: "project".into(),
        project_organization_id: "org".into(),
        group_roles: vec![GroupRoles { group: "Admins".into(), roles: vec!["admin".into()] }],
        ..Default::default()
    };
    let client = crate::zitadel::client::Client::new(&cfg).expect("client");
    let store: Arc<dyn Store> = f.store.clone();
    Provisioning::new(store.clone(), Some(crate::zitadel::projector::Projector::new(client, cfg, store)))
}

#[tokio::test]
async fn with_zitadel_a_role_mapped_group_queues_its_members() {
    let f = Fixture::new();
    let pat_dir = tempfile::tempdir().expect("tempdir");
    let p = zitadel(&f, pat_dir.path());
    // Stored directly: a user create with ZITADEL configured would call it.
    let u = f
        .store
        .create(
            ResourceKind::User,
            crate::scim::resource::build_document(ResourceKind::User, "u1", user("gina@contoso.com"), "t", "t", 1),
        )
        .await
        .unwrap();

    let plain = attrs(ResourceKind::Group, json!({"displayName": "Sales", "members": [{"value": u.id}]}));
    p.create(ResourceKind::Group, plain).await.unwrap();
    f.assert_no_outbox_entry().await;

    let mapped = attrs(ResourceKind::Group, json!({"displayName": "Admins", "members": [{"value": u.id}]}));
    let g = p.create(ResourceKind::Group, mapped).await.unwrap();
    let due = f.store.outbox_due(u64::MAX, 10).await.unwrap();
    assert_eq!(due.iter().map(|e| (e.kind, e.id.as_str())).collect::<Vec<_>>(), [(ResourceKind::User, "u1")]);
    f.store.outbox_complete(&due[0], None).await.unwrap();

    let ops = patch_ops(json!({"Operations": [{"op": "remove", "path": "members[value eq \"u1\"]"}]}));
    let patched = p.patch(ResourceKind::Group, &g.id, ops, None).await.unwrap();
    assert_eq!(patched.version, 2);
    assert_eq!(f.store.outbox_stats().await.unwrap().pending, 1, "the member who left loses the role");
}
