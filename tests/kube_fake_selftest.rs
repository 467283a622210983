//! The in-process Kubernetes API fake (tests/support/src/kube_fake) driven by real kube 5
//! clients: typed `Api`s, `watcher`, `finalizer`, the event `Recorder` and a `Controller`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event as KEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::watcher;
use kube::{CustomResource, Resource, ResourceExt};
use parking_lot::Mutex;
use schemars::JsonSchema;
use scim_test_support::kube_fake::{KubeFake, Options};
use scim_test_support::wait_until;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(group = "example.test", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
pub struct WidgetSpec {
    size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
pub struct WidgetStatus {
    observed: i64,
}

fn widget(name: &str, size: i64) -> Widget {
    Widget::new(name, WidgetSpec { size, color: None })
}

fn api_code(e: &kube::Error) -> Option<(u16, String)> {
    match e {
        kube::Error::Api(s) => Some((s.code, s.reason.clone())),
        _ => None,
    }
}

fn cm(name: &str, data: Value) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
}

/// A raw request, for what typed clients cannot send (JSON patches, wrong content types, garbage).
async fn raw(fake: &KubeFake, method: reqwest::Method, path: &str, ct: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .request(method, format!("{}{path}", fake.url()))
        .header("content-type", ct)
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    let code = r.status().as_u16();
    (code, serde_json::from_str(&r.text().await.unwrap()).unwrap_or(Value::Null))
}

#[tokio::test]
async fn crud_errors_and_optimistic_concurrency() {
    let fake = KubeFake::start().await;
    let secrets: Api<Secret> = Api::default_namespaced(fake.client());

    let err = secrets.get("missing").await.unwrap_err();
    assert_eq!(api_code(&err), Some((404, "NotFound".into())));
    let kube::Error::Api(status) = err else { unreachable!() };
    assert_eq!(status.message, "secrets \"missing\" not found");

    let mut s: Secret = serde_json::from_value(json!({"metadata": {"name": "a"}, "stringData": {"k": "v"}})).unwrap();
    let created = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let err = secrets.create(&PostParams::default(), &s).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "AlreadyExists".into())));

    s.metadata.name = None;
    s.metadata.generate_name = Some("gen-".into());
    let generated = secrets.create(&PostParams::default(), &s).await.unwrap();
    assert!(generated.name_any().starts_with("gen-") && generated.name_any().len() == 9);
    assert_eq!(secrets.list(&ListParams::default()).await.unwrap().items.len(), 2);

    // A stale resourceVersion on replace is a 409 Conflict; the current one wins.
    let mut current = secrets.get("a").await.unwrap();
    let mut stale = current.clone();
    current.metadata.labels = Some([("x".to_string(), "1".to_string())].into());
    let replaced = secrets.replace("a", &PostParams::default(), &current).await.unwrap();
    assert_ne!(replaced.metadata.resource_version, current.metadata.resource_version);
    stale.metadata.labels = Some([("x".to_string(), "2".to_string())].into());
    let err = secrets.replace("a", &PostParams::default(), &stale).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "Conflict".into())));

    // Replacing with identical content is a no-op: same resourceVersion, recorded as unchanged.
    let mark = fake.mark();
    let same = secrets.replace("a", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(same.metadata.resource_version, replaced.metadata.resource_version);
    let w = fake.writes_since(mark);
    assert_eq!(w.len(), 1);
    assert!(!w[0].changed && w[0].method == "PUT" && w[0].name.as_deref() == Some("a"));

    // Leases: leader election relies on the same optimistic concurrency.
    let leases: Api<Lease> = Api::default_namespaced(fake.client());
    let lease: Lease =
        serde_json::from_value(json!({"metadata": {"name": "leader"}, "spec": {"holderIdentity": "a"}})).unwrap();
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut l2 = l1.clone();
    l2.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases.replace("leader", &PostParams::default(), &l2).await.unwrap();
    let err = leases.replace("leader", &PostParams::default(), &l2).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "Conflict".into())));

    secrets.delete("a", &DeleteParams::default()).await.unwrap();
    let err = secrets.delete("a", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(api_code(&err), Some((404, "NotFound".into())));
    assert!(fake.get("v1", "secrets", Some("default"), "a").is_none());

    let w = fake.writes();
    assert_eq!(w.iter().filter(|w| w.method == "DELETE").count(), 2);
    assert_eq!(w.last().map(|w| w.status), Some(404));

    // Garbage in, Status out: never a panic or a hang.
    let (code, body) =
        raw(&fake, reqwest::Method::POST, "/api/v1/namespaces/default/secrets", "application/json", "{nope").await;
    assert_eq!((code, body["reason"].as_str()), (400, Some("BadRequest")));
    let (code, _) = raw(&fake, reqwest::Method::GET, "/api/v1/widgets", "", "").await;
    assert_eq!(code, 404);
    let (code, _) =
        raw(&fake, reqwest::Method::GET, "/api/v1/namespaces/default/secrets?labelSelector=a%20in%20(", "", "").await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn server_side_apply_tracks_each_managers_fields() {
    let fake = KubeFake::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let op = PatchParams::apply("operator").force();

    let applied = cms.patch("c", &op, &Patch::Apply(cm("c", json!({"a": "1", "b": "2"})))).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap().len(), 2);
    // Another manager adds a field the operator never applied.
    let other = PatchParams::apply("someone-else");
    cms.patch("c", &other, &Patch::Apply(cm("c", json!({"z": "9"})))).await.unwrap();

    // The operator stops applying "b": it goes; "z" belongs to someone else and stays.
    let v2 = cms.patch("c", &op, &Patch::Apply(cm("c", json!({"a": "1"})))).await.unwrap();
    let data = v2.data.clone().unwrap();
    assert_eq!(data.keys().cloned().collect::<Vec<_>>(), ["a", "z"]);

    // Re-applying the same thing changes nothing: no new resourceVersion, recorded as unchanged.
    let mark = fake.mark();
    let v3 = cms.patch("c", &op, &Patch::Apply(cm("c", json!({"a": "1"})))).await.unwrap();
    assert_eq!(v3.metadata.resource_version, v2.metadata.resource_version);
    let w = fake.writes_since(mark);
    assert_eq!(w.len(), 1);
    assert!(!w[0].changed && w[0].field_manager.as_deref() == Some("operator"));

    // Without force, changing another manager's field is a conflict.
    let err = cms.patch("c", &other, &Patch::Apply(cm("c", json!({"z": "9", "a": "2"})))).await.unwrap_err();
    assert_eq!(api_code(&err), Some((409, "Conflict".into())));

    // An apply without fieldManager is refused by the server too (sent raw: kube refuses it locally).
    let (code, _) = raw(
        &fake,
        reqwest::Method::PATCH,
        "/api/v1/namespaces/default/configmaps/c",
        "application/apply-patch+yaml",
        r#"{"apiVersion":"v1","kind":"ConfigMap","data":{"a":"3"}}"#,
    )
    .await;
    assert_eq!(code, 422);
    // Real YAML is accepted as well as JSON.
    let (code, body) = raw(
        &fake,
        reqwest::Method::PATCH,
        "/api/v1/namespaces/default/configmaps/y?fieldManager=kubectl",
        "application/apply-patch+yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: y\ndata:\n  k: v\n",
    )
    .await;
    assert_eq!((code, &body["data"]["k"]), (201, &json!("v")));
}

#[tokio::test]
async fn merge_and_json_patches() {
    let fake = KubeFake::start().await;
    let widgets: Api<Widget> = Api::default_namespaced(fake.client());
    widgets.create(&PostParams::default(), &widget("w", 1)).await.unwrap();

    let p = json!({"metadata": {"labels": {"team": "a"}}, "spec": {"color": "red"}});
    let w = widgets.patch("w", &PatchParams::default(), &Patch::Merge(&p)).await.unwrap();
    assert_eq!((w.labels().get("team").map(String::as_str), w.spec.color.as_deref()), (Some("a"), Some("red")));
    assert_eq!(w.metadata.generation, Some(2));
    let w = widgets.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"color": null}}))).await.unwrap();
    assert_eq!(w.spec.color, None);

    let path = "/apis/example.test/v1/namespaces/default/widgets/w";
    let jp = "application/json-patch+json";
    // kube-runtime's first-finalizer patch: `test` for null on a missing path succeeds.
    let add = r#"[{"op":"test","path":"/metadata/finalizers","value":null},{"op":"add","path":"/metadata/finalizers","value":["x/y"]}]"#;
    let (code, body) = raw(&fake, reqwest::Method::PATCH, path, jp, add).await;
    assert_eq!((code, &body["metadata"]["finalizers"]), (200, &json!(["x/y"])));
    // The same patch again fails its test: 422 Invalid, and nothing changes.
    let (code, body) = raw(&fake, reqwest::Method::PATCH, path, jp, add).await;
    assert_eq!((code, body["reason"].as_str()), (422, Some("Invalid")));
    let ops = r#"[{"op":"test","path":"/metadata/finalizers/0","value":"x/y"},{"op":"remove","path":"/metadata/finalizers/0"},
        {"op":"copy","from":"/spec/size","path":"/spec/copied"},{"op":"move","from":"/spec/copied","path":"/spec/moved"},
        {"op":"replace","path":"/spec/size","value":5}]"#;
    let (code, body) = raw(&fake, reqwest::Method::PATCH, path, jp, ops).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["spec"], json!({"size": 5, "moved": 1}));
    assert!(body["metadata"].get("finalizers").is_none());

    let (code, _) = raw(&fake, reqwest::Method::PATCH, path, jp, r#"{"op":"add"}"#).await;
    assert_eq!(code, 400);
    let (code, _) = raw(&fake, reqwest::Method::PATCH, path, jp, r#"[{"op":"replace","path":"","value":[1]}]"#).await;
    assert_eq!(code, 400);
    let (code, _) = raw(&fake, reqwest::Method::PATCH, path, "application/merge-patch+json", r#""x""#).await;
    assert_eq!(code, 400);
    let (code, _) =
        raw(&fake, reqwest::Method::PATCH, &format!("{path}/status"), "application/merge-patch+json", "7").await;
    assert_eq!(code, 400);
    let (code, body) = raw(&fake, reqwest::Method::PATCH, path, "text/plain", "{}").await;
    assert_eq!((code, body["reason"].as_str()), (415, Some("UnsupportedMediaType")));
}

#[tokio::test]
async fn status_subresource_is_separate() {
    let fake = KubeFake::start().await;
    let widgets: Api<Widget> = Api::default_namespaced(fake.client());
    let mut w = widget("s", 1);
    w.status = Some(WidgetStatus { observed: 99 });
    let created = widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(created.status, None, "create drops status");

    let st = json!({"apiVersion": "example.test/v1", "kind": "Widget", "status": {"observed": 1}});
    let after = widgets.patch_status("s", &PatchParams::apply("op").force(), &Patch::Apply(&st)).await.unwrap();
    assert_eq!(after.status, Some(WidgetStatus { observed: 1 }));
    assert_eq!(after.metadata.generation, Some(1), "status writes do not bump generation");

    // A main-resource write ignores status; a status write ignores spec.
    let mut main = after.clone();
    main.spec.size = 2;
    main.status = Some(WidgetStatus { observed: 50 });
    let r = widgets.replace("s", &PostParams::default(), &main).await.unwrap();
    assert_eq!(
        (r.spec.size, r.status.clone(), r.metadata.generation),
        (2, Some(WidgetStatus { observed: 1 }), Some(2))
    );
    let mut status_only = r.clone();
    status_only.spec.size = 7;
    status_only.status = Some(WidgetStatus { observed: 2 });
    let r = widgets.replace_status("s", &PostParams::default(), &status_only).await.unwrap();
    assert_eq!((r.spec.size, r.status, r.metadata.generation), (2, Some(WidgetStatus { observed: 2 }), Some(2)));
    let r = widgets
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 9}, "status": {"observed": 3}})),
        )
        .await
        .unwrap();
    assert_eq!((r.spec.size, r.status.map(|s| s.observed)), (2, Some(3)));

    // Core kinds without a status subresource have no /status.
    let (code, _) = raw(&fake, reqwest::Method::GET, "/api/v1/namespaces/default/configmaps/x/status", "", "").await;
    assert_eq!(code, 404);
}

/// Collects watcher events as short strings ("apply a", "delete a", "init", "err 410").
fn record_watcher<K>(
    stream: impl futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
) -> Arc<Mutex<Vec<String>>>
where
    K: Resource + Send + 'static,
{
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            let line = match ev {
                Ok(watcher::Event::Apply(o)) | Ok(watcher::Event::InitApply(o)) => {
                    format!("apply {}", o.meta().name.clone().unwrap_or_default())
                }
                Ok(watcher::Event::Delete(o)) => format!("delete {}", o.meta().name.clone().unwrap_or_default()),
                Ok(watcher::Event::Init) => "init".into(),
                Ok(watcher::Event::InitDone) => "init-done".into(),
                Err(watcher::Error::WatchError(s)) => format!("err {}", s.code),
                Err(e) => format!("error {e}"),
            };
            out.lock().push(line);
        }
    });
    seen
}

async fn saw(seen: &Arc<Mutex<Vec<String>>>, what: &str) -> bool {
    let what = what.to_string();
    wait_until(WAIT, || {
        let found = seen.lock().contains(&what);
        async move { found }
    })
    .await
}

#[tokio::test]
async fn watcher_follows_changes_and_recovers_from_410() {
    let fake = KubeFake::start_with(Options { history: 10 }).await;
    let client = fake.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.create(&PostParams::default(), &cm("before", json!({}))).await.unwrap();
    let seen = record_watcher(watcher(cms.clone(), watcher::Config::default().labels("!skip")));
    // The other initial-list strategy (watch with sendInitialEvents) and metadata-only watches.
    let streaming = record_watcher(watcher(cms.clone(), watcher::Config::default().streaming_lists()));
    let metadata = record_watcher(watcher(
        Api::<PartialObjectMeta<ConfigMap>>::default_namespaced(client.clone()),
        watcher::Config::default(),
    ));
    for s in [&seen, &streaming, &metadata] {
        assert!(saw(s, "init-done").await);
        assert!(s.lock().contains(&"apply before".to_string()));
    }

    cms.create(&PostParams::default(), &cm("live", json!({}))).await.unwrap();
    assert!(saw(&seen, "apply live").await);
    cms.patch("live", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "v"}}))).await.unwrap();
    cms.delete("live", &DeleteParams::default()).await.unwrap();
    for s in [&seen, &streaming, &metadata] {
        assert!(saw(s, "delete live").await);
    }

    // Twenty deletions in one request overflow a history of ten: the watch gets 410 Expired,
    // and kube's watcher re-lists and carries on.
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "elsewhere");
    for i in 0..20 {
        other.create(&PostParams::default(), &cm(&format!("x{i}"), json!({}))).await.unwrap();
    }
    let before = seen.lock().iter().filter(|l| *l == "init-done").count();
    other.delete_collection(&DeleteParams::default(), &ListParams::default()).await.unwrap();
    assert!(saw(&seen, "err 410").await, "{:?}", seen.lock());
    assert!(
        wait_until(WAIT, || {
            let n = seen.lock().iter().filter(|l| *l == "init-done").count();
            async move { n > before }
        })
        .await
    );
    cms.create(&PostParams::default(), &cm("after", json!({}))).await.unwrap();
    assert!(saw(&seen, "apply after").await);

    // A watch from a resourceVersion older than the history is refused the same way.
    let mut stream = cms.watch(&WatchParams::default(), "2").await.unwrap().boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(s))) => assert_eq!((s.code, s.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

#[tokio::test]
async fn label_selectors_on_list_and_watch() {
    let fake = KubeFake::start().await;
    let cms: Api<ConfigMap> = Api::default_namespaced(fake.client());
    for (name, labels) in [("a", json!({"app": "x", "tier": "web"})), ("b", json!({"app": "y"})), ("c", json!({}))] {
        let c: ConfigMap = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let names = |sel: &'static str| {
        let cms = cms.clone();
        async move {
            cms.list(&ListParams::default().labels(sel))
                .await
                .unwrap()
                .items
                .iter()
                .map(|c| c.name_any())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(names("app=x").await, ["a"]);
    assert_eq!(names("app==y").await, ["b"]);
    assert_eq!(names("app!=x").await, ["b", "c"]);
    assert_eq!(names("app").await, ["a", "b"]);
    assert_eq!(names("!app").await, ["c"]);
    assert_eq!(names("app in (x, y),tier").await, ["a"]);
    assert_eq!(names("app notin (x)").await, ["b", "c"]);
    let by_name = cms.list(&ListParams::default().fields("metadata.name!=a")).await.unwrap();
    assert_eq!(by_name.items.len(), 2);

    // Metadata-only lists, as `Api<PartialObjectMeta<K>>` asks for them.
    let meta: Value = reqwest::Client::new()
        .get(format!("{}/api/v1/namespaces/default/configmaps?labelSelector=app%3Dx", fake.url()))
        .header("accept", "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(meta["kind"], "PartialObjectMetadataList");
    assert_eq!(meta["items"][0]["kind"], "PartialObjectMetadata");
    assert_eq!(meta["items"][0]["metadata"]["name"], "a");

    // Pagination, as the watcher pages.
    let page = cms.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(page.items.len(), 2);
    let token = page.metadata.continue_.clone().unwrap();
    let rest = cms.list(&ListParams::default().limit(2).continue_token(&token)).await.unwrap();
    assert_eq!((rest.items.len(), rest.metadata.continue_.as_deref()), (1, None));

    // An object relabelled out of a watch's selector is DELETED for that watch.
    let rv = page.metadata.resource_version.unwrap();
    let mut stream = cms.watch(&WatchParams::default().labels("app=x"), &rv).await.unwrap().boxed();
    cms.patch("a", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})))
        .await
        .unwrap();
    cms.patch("b", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})))
        .await
        .unwrap();
    let mut events = Vec::new();
    while events.len() < 2 {
        match tokio::time::timeout(WAIT, stream.next()).await.unwrap() {
            Some(Ok(WatchEvent::Deleted(o))) => events.push(format!("deleted {}", o.name_any())),
            Some(Ok(WatchEvent::Added(o))) => events.push(format!("added {}", o.name_any())),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(events, ["deleted a", "added b"]);
}

#[tokio::test]
async fn finalizers_and_owner_garbage_collection() {
    let fake = KubeFake::start().await;
    let client = fake.client();
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let secrets: Api<Secret> = Api::default_namespaced(client.clone());

    let mut w = widget("owner", 1);
    w.metadata.finalizers = Some(vec!["example.test/cleanup".into()]);
    let owner = widgets.create(&PostParams::default(), &w).await.unwrap();
    let oref = owner.controller_owner_ref(&()).unwrap();
    let mut child = cm("child", json!({}));
    child.metadata.owner_references = Some(vec![oref.clone()]);
    let child = cms.create(&PostParams::default(), &child).await.unwrap();
    let mut grandchild: Secret = serde_json::from_value(json!({"metadata": {"name": "grandchild"}})).unwrap();
    grandchild.metadata.owner_references = Some(vec![child.controller_owner_ref(&()).unwrap()]);
    secrets.create(&PostParams::default(), &grandchild).await.unwrap();
    let mut held: Secret =
        serde_json::from_value(json!({"metadata": {"name": "held", "finalizers": ["keep"]}})).unwrap();
    held.metadata.owner_references = Some(vec![oref]);
    secrets.create(&PostParams::default(), &held).await.unwrap();

    // With a finalizer, DELETE only marks the object (once), and bumps its generation.
    widgets.delete("owner", &DeleteParams::default()).await.unwrap();
    let marked = widgets.get("owner").await.unwrap();
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2));
    let mark = fake.mark();
    widgets.delete("owner", &DeleteParams::default()).await.unwrap();
    assert!(!fake.writes_since(mark)[0].changed);
    assert!(cms.get("child").await.is_ok(), "dependents stay while the owner exists");

    // No new finalizers on an object being deleted.
    let add = json!({"metadata": {"finalizers": ["example.test/cleanup", "other"]}});
    let err = widgets.patch("owner", &PatchParams::default(), &Patch::Merge(&add)).await.unwrap_err();
    assert_eq!(api_code(&err).map(|c| c.0), Some(422));

    // Clearing the finalizers removes it; GC takes the children, recursively, and marks the held one.
    widgets
        .patch("owner", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
        .await
        .unwrap();
    assert_eq!(api_code(&widgets.get("owner").await.unwrap_err()).map(|c| c.0), Some(404));
    assert!(fake.get("v1", "configmaps", Some("default"), "child").is_none());
    assert!(fake.get("v1", "secrets", Some("default"), "grandchild").is_none());
    let held = fake.get("v1", "secrets", Some("default"), "held").unwrap();
    assert!(held["metadata"]["deletionTimestamp"].is_string());

    // Deleting a namespace deletes what is in it.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "tmp"}})).unwrap();
    let ns = namespaces.create(&PostParams::default(), &ns).await.unwrap();
    assert_eq!(ns.status.and_then(|s| s.phase).as_deref(), Some("Active"));
    Api::<ConfigMap>::namespaced(client.clone(), "tmp")
        .create(&PostParams::default(), &cm("in-tmp", json!({})))
        .await
        .unwrap();
    namespaces.delete("tmp", &DeleteParams::default()).await.unwrap();
    assert!(fake.get("v1", "configmaps", Some("tmp"), "in-tmp").is_none());
    assert!(fake.get("v1", "namespaces", None, "tmp").is_none());
}

#[tokio::test]
async fn deployments_simulated_ready_or_not() {
    let fake = KubeFake::start().await;
    let deployments: Api<Deployment> = Api::default_namespaced(fake.client());
    let d: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}
    }))
    .unwrap();
    let mark = fake.mark();
    deployments.patch("web", &PatchParams::apply("op").force(), &Patch::Apply(&d)).await.unwrap();
    assert_eq!(fake.writes_since(mark).len(), 1, "the simulated controller's status write is not a client write");
    let got = deployments.get("web").await.unwrap();
    let st = got.status.unwrap();
    assert_eq!((st.observed_generation, st.ready_replicas, st.available_replicas), (Some(1), Some(2), Some(2)));
    let available = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!(available.status, "True");

    fake.set_deployments_ready(false);
    let st = deployments.get("web").await.unwrap().status.unwrap();
    assert_eq!((st.ready_replicas, st.unavailable_replicas), (None, Some(2)));
    let available = st.conditions.unwrap().into_iter().find(|c| c.type_ == "Available").unwrap();
    assert_eq!((available.status.as_str(), available.reason.as_deref()), ("False", Some("MinimumReplicasUnavailable")));

    let mut d2 = d.clone();
    d2.spec.as_mut().unwrap().replicas = Some(3);
    deployments.patch("web", &PatchParams::apply("op").force(), &Patch::Apply(&d2)).await.unwrap();
    let got = deployments.get("web").await.unwrap();
    assert_eq!(got.metadata.generation, Some(2));
    assert_eq!(got.status.unwrap().observed_generation, Some(2));
}

#[tokio::test]
async fn events_recorder_and_outage() {
    let fake = KubeFake::start().await;
    let client = fake.client();
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let w = widgets.create(&PostParams::default(), &widget("e", 1)).await.unwrap();
    let recorder = Recorder::new(client.clone(), Reporter { controller: "selftest".into(), instance: None });
    let ev = KEvent {
        type_: EventType::Normal,
        reason: "Tested".into(),
        note: Some("n".into()),
        action: "Test".into(),
        secondary: None,
    };
    let mark = fake.mark();
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
    let writes = fake.writes_since(mark);
    assert_eq!(writes.iter().map(|w| w.method.as_str()).collect::<Vec<_>>(), ["POST", "PATCH"]);
    assert!(writes.iter().all(|w| w.api_version == "events.k8s.io/v1" && w.status < 300));
    let events = fake.list("events.k8s.io/v1", "events", Some("default"));
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["series"]["count"], json!(2));

    // Outage: 503 with a Status body, and open watches end.
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/namespaces/default/configmaps?watch=true&allowWatchBookmarks=true", fake.url()))
        .send()
        .await
        .unwrap();
    assert!(wait_until(WAIT, || async { fake.open_watches() == 1 }).await);
    fake.set_down(true);
    let (code, body) = raw(&fake, reqwest::Method::GET, "/api/v1/namespaces/default/configmaps", "", "").await;
    assert_eq!((code, body["reason"].as_str()), (503, Some("ServiceUnavailable")));
    let ended = tokio::time::timeout(WAIT, resp.text()).await;
    assert!(ended.is_ok(), "watch stream should end when the API goes down");
    assert!(wait_until(WAIT, || async { fake.open_watches() == 0 }).await);
    fake.set_down(false);
    assert!(widgets.get("e").await.is_ok());
}

struct Ctx {
    client: kube::Client,
}

#[derive(Debug, thiserror::Error)]
enum ReconcileError {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Finalizer(#[from] Box<kube::runtime::finalizer::Error<kube::Error>>),
}

async fn reconcile(w: Arc<Widget>, ctx: Arc<Ctx>) -> Result<Action, ReconcileError> {
    let ns = w.namespace().unwrap_or_default();
    let widgets: Api<Widget> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&widgets, "example.test/cleanup", w, |ev| async {
        match ev {
            Finalizer::Apply(w) => {
                let cms: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &ns);
                let mut c = cm(&format!("{}-cfg", w.name_any()), json!({"size": w.spec.size.to_string()}));
                c.metadata.owner_references = Some(vec![w.controller_owner_ref(&()).unwrap()]);
                let pp = PatchParams::apply("selftest-operator").force();
                cms.patch(&c.name_any(), &pp, &Patch::Apply(&c)).await?;
                let generation = w.metadata.generation.unwrap_or_default();
                let st = json!({"apiVersion": "example.test/v1", "kind": "Widget", "status": {"observed": generation}});
                widgets.patch_status(&w.name_any(), &pp, &Patch::Apply(&st)).await?;
                Ok(Action::await_change())
            }
            Finalizer::Cleanup(_) => Ok(Action::await_change()),
        }
    })
    .await
    .map_err(|e| ReconcileError::Finalizer(Box::new(e)))
}

fn error_policy(_: Arc<Widget>, _: &ReconcileError, _: Arc<Ctx>) -> Action {
    Action::requeue(Duration::from_millis(200))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_controller_converges_and_goes_quiet() {
    let fake = KubeFake::start().await;
    let client = fake.client();
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let controller = Controller::new(Api::<Widget>::all(client.clone()), watcher::Config::default())
        .owns(Api::<ConfigMap>::all(client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(Ctx { client: client.clone() }))
        .for_each(|_| async {});
    let task = tokio::spawn(controller);

    widgets.create(&PostParams::default(), &widget("t", 3)).await.unwrap();
    let converged = || async {
        let w = fake.get("example.test/v1", "widgets", Some("default"), "t");
        let c = fake.get("v1", "configmaps", Some("default"), "t-cfg");
        w.is_some_and(|w| {
            w["status"]["observed"] == w["metadata"]["generation"] && w["metadata"]["finalizers"].is_array()
        }) && c.is_some()
    };
    assert!(wait_until(WAIT, || async { converged().await }).await);
    assert!(wait_until(WAIT, || async { fake.open_watches() == 2 }).await, "one watch per watched kind");

    // Converged means quiet: after the reconcile its own status write causes, no more writes.
    let mut mark = fake.mark();
    assert!(
        wait_until(WAIT, || {
            let quiet = fake.writes_since(mark).is_empty();
            mark = fake.mark();
            async move { quiet }
        })
        .await
    );
    let mark = fake.mark();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(fake.writes_since(mark), [], "no writes at steady state");

    // Drift: the owned ConfigMap is deleted and comes back.
    cms.delete("t-cfg", &DeleteParams::default()).await.unwrap();
    assert!(wait_until(WAIT, || async { fake.get("v1", "configmaps", Some("default"), "t-cfg").is_some() }).await);

    // Deletion runs the finalizer, then GC removes the ConfigMap.
    widgets.delete("t", &DeleteParams::default()).await.unwrap();
    assert!(
        wait_until(WAIT, || async {
            fake.get("example.test/v1", "widgets", Some("default"), "t").is_none()
                && fake.get("v1", "configmaps", Some("default"), "t-cfg").is_none()
        })
        .await
    );

    // Stopping the controller closes its watches on the server too.
    task.abort();
    assert!(wait_until(WAIT, || async { fake.open_watches() == 0 }).await);
}

#[tokio::test]
async fn rbac_bindings_rules_and_aggregation_decide_when_enforced() {
    use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
    let fake = KubeFake::start().await;
    let admin = fake.client();
    let post = PostParams::default();
    fn obj<T: serde::de::DeserializeOwned>(v: Value) -> T {
        serde_json::from_value(v).unwrap()
    }
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    // `reader` is filled by aggregation from `cm-reader` (matchExpressions), and itself
    // carries a label `outer` selects: aggregation through an aggregated role.
    roles
        .create(
            &post,
            &obj(json!({"metadata": {"name": "cm-reader", "labels": {"tier": "read"}},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]})),
        )
        .await
        .unwrap();
    roles
        .create(&post, &obj(json!({"metadata": {"name": "reader", "labels": {"outer": "yes"}},
            "aggregationRule": {"clusterRoleSelectors": [{"matchExpressions": [{"key": "tier", "operator": "In", "values": ["read"]}]}]},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]})))
        .await
        .unwrap();
    roles
        .create(
            &post,
            &obj(json!({"metadata": {"name": "outer"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"outer": "yes"}}]}})),
        )
        .await
        .unwrap();
    let subject = json!([{"kind": "ServiceAccount", "name": "app", "namespace": "a"}]);
    Api::<RoleBinding>::namespaced(admin.clone(), "a")
        .create(
            &post,
            &obj(json!({"metadata": {"name": "app-outer"}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "outer"}})),
        )
        .await
        .unwrap();
    Api::<Role>::namespaced(admin.clone(), "b")
        .create(
            &post,
            &obj(json!({"metadata": {"name": "one-secret"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["s1"]}]})),
        )
        .await
        .unwrap();
    Api::<RoleBinding>::namespaced(admin.clone(), "b")
        .create(
            &post,
            &obj(json!({"metadata": {"name": "app-one-secret"}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "one-secret"}})),
        )
        .await
        .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "a").create(&post, &cm("c", json!({}))).await.unwrap();
    let mut s1 = Secret::default();
    s1.metadata.name = Some("s1".into());
    Api::<Secret>::namespaced(admin.clone(), "b").create(&post, &s1).await.unwrap();
    s1.metadata.name = Some("s2".into());
    Api::<Secret>::namespaced(admin.clone(), "b").create(&post, &s1).await.unwrap();

    let app = fake.client_as("system:serviceaccount:a:app");
    let cms_a: Api<ConfigMap> = Api::namespaced(app.clone(), "a");
    assert!(cms_a.get("c").await.is_ok(), "RBAC is off until enforced");
    fake.enforce_rbac(true);
    assert!(cms_a.get("c").await.is_ok(), "configmaps get through outer ← reader ← cm-reader");
    assert!(cms_a.list(&ListParams::default()).await.is_ok());
    let e = cms_a.delete("c", &DeleteParams::default()).await.unwrap_err();
    assert_eq!(api_code(&e).map(|c| c.0), Some(403), "reader's own `*` rule is replaced by aggregation");
    let e = Api::<ConfigMap>::namespaced(app.clone(), "b").get("c").await.unwrap_err();
    assert_eq!(api_code(&e).map(|c| c.0), Some(403), "a RoleBinding grants in its namespace only");
    let secrets_b: Api<Secret> = Api::namespaced(app.clone(), "b");
    assert!(secrets_b.get("s1").await.is_ok());
    let e = secrets_b.get("s2").await.unwrap_err();
    let kube::Error::Api(status) = &e else { panic!("{e:?}") };
    assert_eq!(
        (status.code, status.reason.as_str(), status.message.as_str()),
        (
            403,
            "Forbidden",
            "secrets \"s2\" is forbidden: User \"system:serviceaccount:a:app\" cannot get resource \"secrets\" in API group \"\" in the namespace \"b\""
        )
    );
    assert!(secrets_b.list(&ListParams::default()).await.is_err(), "resourceNames never allow a list");
    assert!(Api::<Namespace>::all(app.clone()).list(&ListParams::default()).await.is_err(), "nothing cluster-wide");

    // A ClusterRoleBinding grants everywhere, cluster scope included; the harness is never restricted.
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(
            &post,
            &obj(json!({"metadata": {"name": "app-reader"}, "subjects": subject,
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cm-reader"}})),
        )
        .await
        .unwrap();
    assert!(Api::<ConfigMap>::namespaced(app.clone(), "b").get_opt("c").await.is_ok());
    assert!(Api::<ConfigMap>::all(app).list(&ListParams::default()).await.is_ok());
    assert!(Api::<Secret>::namespaced(admin, "b").list(&ListParams::default()).await.is_ok());
    let denied: Vec<_> =
        fake.access().into_iter().filter(|a| !a.allowed).map(|a| (a.verb, a.resource, a.namespace)).collect();
    assert_eq!(
        denied,
        [
            ("delete".to_string(), "configmaps".to_string(), Some("a".to_string())),
            ("get".into(), "configmaps".into(), Some("b".into())),
            ("get".into(), "secrets".into(), Some("b".into())),
            ("list".into(), "secrets".into(), Some("b".into())),
            ("list".into(), "namespaces".into(), None),
        ],
        "the log records each refusal"
    );
}
