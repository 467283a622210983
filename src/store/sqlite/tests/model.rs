//! Model check: random operations, in one batch and one by one.

use super::*;

const POOL_IDS: [&str; 6] = ["i0", "i1", "i2", "i3", "i4", "i5"];
const POOL_NAMES: [&str; 6] = ["ann", "ANN", "åsa", "ÅSA", "bob", "Bob"];

#[derive(Debug, Clone)]
enum ModelOp {
    CreateUser(usize, usize),
    CreateGroup(usize, usize, Vec<usize>),
    RenameUser(usize, usize),
    AddMember(usize, usize),
    Delete(bool, usize),
}

fn model_op() -> impl proptest::strategy::Strategy<Value = ModelOp> {
    use proptest::prelude::*;
    let id = 0..POOL_IDS.len();
    let name = 0..POOL_NAMES.len();
    prop_oneof![
        (id.clone(), name.clone()).prop_map(|(i, n)| ModelOp::CreateUser(i, n)),
        (id.clone(), name.clone(), proptest::collection::vec(id.clone(), 0..3))
            .prop_map(|(i, n, m)| ModelOp::CreateGroup(i, n, m)),
        (id.clone(), name).prop_map(|(i, n)| ModelOp::RenameUser(i, n)),
        (id.clone(), id.clone()).prop_map(|(g, m)| ModelOp::AddMember(g, m)),
        (any::<bool>(), id).prop_map(|(g, i)| ModelOp::Delete(g, i)),
    ]
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRes {
    kind: ResourceKind,
    name: String,
    members: Vec<String>,
    version: u64,
}

/// The rules of the `Store` trait, written as plainly as possible.
#[derive(Default)]
struct Model {
    res: BTreeMap<String, ModelRes>,
}

impl Model {
    fn name_taken(&self, kind: ResourceKind, name: &str, except: &str) -> bool {
        self.res.iter().any(|(id, r)| r.kind == kind && id != except && r.name.to_lowercase() == name.to_lowercase())
    }

    /// The status the store must answer with (200 for success).
    fn apply(&mut self, op: &ModelOp) -> u16 {
        let id = |i: &usize| POOL_IDS[*i].to_owned();
        match op {
            ModelOp::CreateUser(i, n) | ModelOp::CreateGroup(i, n, _) => {
                let kind = if matches!(op, ModelOp::CreateUser(..)) { USER } else { GROUP };
                let members: Vec<String> = match op {
                    ModelOp::CreateGroup(_, _, m) => m.iter().map(id).collect(),
                    _ => Vec::new(),
                };
                if self.name_taken(kind, POOL_NAMES[*n], "") || self.res.contains_key(&id(i)) {
                    return 409;
                }
                if members.iter().any(|m| !self.res.contains_key(m)) {
                    return 400;
                }
                let name = POOL_NAMES[*n].to_owned();
                self.res.insert(id(i), ModelRes { kind, name, members, version: 1 });
                200
            }
            ModelOp::RenameUser(i, n) => {
                if self.res.get(&id(i)).is_none_or(|r| r.kind != USER) {
                    return 404;
                }
                if self.name_taken(USER, POOL_NAMES[*n], &id(i)) {
                    return 409;
                }
                let Some(r) = self.res.get_mut(&id(i)) else {
                    return 404;
                };
                r.name = POOL_NAMES[*n].to_owned();
                r.version += 1;
                200
            }
            ModelOp::AddMember(g, m) => {
                let (g, m) = (id(g), id(m));
                match self.res.get(&g) {
                    Some(r) if r.kind == GROUP => {
                        if r.members.contains(&m) {
                            return 200;
                        }
                    }
                    _ => return 404,
                }
                if !self.res.contains_key(&m) {
                    return 400;
                }
                let Some(r) = self.res.get_mut(&g) else {
                    return 404;
                };
                r.members.push(m);
                r.version += 1;
                200
            }
            ModelOp::Delete(is_group, i) => {
                let kind = if *is_group { GROUP } else { USER };
                if self.res.get(&id(i)).is_none_or(|r| r.kind != kind) {
                    return 404;
                }
                self.res.remove(&id(i));
                for r in self.res.values_mut() {
                    if r.members.contains(&id(i)) {
                        r.members.retain(|m| *m != id(i));
                        r.version += 1;
                    }
                }
                200
            }
        }
    }
}

fn store_call<'a>(store: &'a SqliteStore, op: &ModelOp) -> Pending<'a, Result<(), StoreError>> {
    let id = |i: &usize| POOL_IDS[*i].to_owned();
    let op = op.clone();
    Box::pin(async move {
        match op {
            ModelOp::CreateUser(i, n) => store.create(USER, user(&id(&i), POOL_NAMES[n])).await.map(drop),
            ModelOp::CreateGroup(i, n, m) => {
                let m: Vec<String> = m.iter().map(id).collect();
                let m: Vec<&str> = m.iter().map(String::as_str).collect();
                store.create(GROUP, group(&id(&i), POOL_NAMES[n], &m)).await.map(drop)
            }
            ModelOp::RenameUser(i, n) => store.update(USER, &id(&i), set("userName", POOL_NAMES[n])).await.map(drop),
            ModelOp::AddMember(g, m) => store.update(GROUP, &id(&g), add_member(&id(&m))).await.map(drop),
            ModelOp::Delete(g, i) => store.delete(if g { GROUP } else { USER }, &id(&i)).await,
        }
    })
}

fn status(result: Result<(), StoreError>) -> u16 {
    match result {
        Ok(()) => 200,
        Err(StoreError::Scim(e)) => e.status,
        Err(e) => panic!("storage failure {e}"),
    }
}

async fn assert_matches_model(store: &SqliteStore, model: &Model) {
    let counts = store.counts().await.unwrap();
    let users = model.res.values().filter(|r| r.kind == USER).count();
    assert_eq!((counts.users, counts.groups), (users, model.res.len() - users));
    for (id, r) in &model.res {
        let rec = store.get(r.kind, id).await.unwrap().expect("resource exists");
        let name = rec.doc[r.kind.unique_name_attr()].as_str().unwrap();
        assert_eq!((name, members_of(&rec), rec.version), (r.name.as_str(), r.members.clone(), r.version), "{id}");
        let mut groups: Vec<String> = store.groups_of(id).await.unwrap().into_iter().map(|g| g.id).collect();
        groups.sort();
        let expected: Vec<String> =
            model.res.iter().filter(|(_, g)| g.members.contains(id)).map(|(g, _)| g.clone()).collect();
        assert_eq!(groups, expected, "groups of {id}");
        let hint = IndexHint::UniqueName(r.name.to_lowercase());
        let page = store.query(Query { hint: Some(hint), ..all(r.kind) }).await.unwrap();
        assert_eq!(ids(&page), vec![id.as_str()]);
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]

    #[test]
    fn store_follows_the_model(
        batched in proptest::collection::vec(model_op(), 0..24),
        sequential in proptest::collection::vec(model_op(), 0..12),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let store = Arc::new(SqliteStore::open(dir.path(), Durability::Normal).unwrap());
            store.create(USER, user("gate", "gate")).await.unwrap();
            let mut model = Model::default();

            let (blocker, release) = block_writer(&store, USER, "gate").await;
            let pending: Vec<_> = batched.iter().map(|op| enqueue(store_call(&store, op))).collect();
            release.send(()).unwrap();
            blocker.await.unwrap().unwrap();
            for (op, fut) in batched.iter().zip(pending) {
                assert_eq!(status(fut.await), model.apply(op), "{op:?} in a batch");
            }
            for op in &sequential {
                assert_eq!(status(store_call(&store, op).await), model.apply(op), "{op:?} alone");
            }
            store.delete(USER, "gate").await.unwrap();
            assert_matches_model(&store, &model).await;
            let snap = snapshot(&store).await;
            drop(store);
            let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
            assert_eq!(snapshot(&store).await, snap);
            assert_matches_model(&store, &model).await;
        });
    }
}
