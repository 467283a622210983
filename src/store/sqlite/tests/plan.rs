//! Batch planning without a database: each request is planned against the
//! committed state plus the earlier requests of its batch, as the writer does
//! between its SQL statements.

use super::*;
use crate::store::sqlite::plan::{Op, Overlay, View};
use crate::store::sqlite::state::{Change, State};

/// A batch in progress over an empty committed state.
struct Batch {
    base: State,
    overlay: Overlay,
    next_seq: u64,
}

impl Batch {
    fn new() -> Self {
        Batch { base: State::default(), overlay: Overlay::default(), next_seq: 1 }
    }

    /// Plans `op`, and layers its changes over the batch as a written request's are.
    fn run(&mut self, op: Op) -> Result<Option<Record>, StoreError> {
        let plan = View { base: &self.base, overlay: &self.overlay }.plan(op, &mut self.next_seq)?;
        for change in plan.changes {
            self.overlay.record(&self.base, change);
        }
        Ok(plan.reply)
    }

    fn create(&mut self, kind: ResourceKind, doc: Value) -> Result<Option<Record>, StoreError> {
        self.run(Op::Create { kind, doc, side: SideEffects::default() })
    }

    /// Folds the batch into the committed state, as after a COMMIT.
    fn commit(&mut self) {
        for change in std::mem::take(&mut self.overlay).changes {
            self.base.apply(change);
        }
    }
}

#[test]
fn a_unique_name_claimed_earlier_in_the_batch_conflicts() {
    let mut b = Batch::new();
    b.create(USER, user("u1", "Alice")).unwrap();
    let e = scim_err(b.create(USER, user("u2", "ALICE")));
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
    // Ids are unique across kinds within the batch too.
    let e = scim_err(b.create(GROUP, group("u1", "Team", &[])));
    assert_eq!(e.detail, "id \"u1\" is already taken by another user");
    // A rename earlier in the batch frees the old name for a later request.
    b.run(Op::Update { kind: USER, id: "u1".into(), mutate: set("userName", "carol") }).unwrap();
    b.create(USER, user("u3", "alice")).unwrap();
    assert_eq!(scim_err(b.create(USER, user("u4", "Carol"))).status, 409);
}

#[test]
fn members_must_exist_in_the_state_the_request_sees() {
    let mut b = Batch::new();
    let e = scim_err(b.create(GROUP, group("g0", "Early", &["u1"])));
    assert_eq!((e.status, e.detail.as_str()), (400, "members: no user or group with id \"u1\""));
    b.create(USER, user("u1", "alice")).unwrap();
    b.create(GROUP, group("g1", "A", &["u1"])).unwrap();
    b.run(Op::Delete { kind: USER, id: "u1".into(), side: None }).unwrap();
    let e = scim_err(b.create(GROUP, group("g2", "B", &["u1"])));
    assert_eq!(e.status, 400, "deleted earlier in the batch");
}

#[test]
fn deleting_a_member_rewrites_every_group_listing_it() {
    let mut b = Batch::new();
    b.create(USER, user("u1", "alice")).unwrap();
    b.create(USER, user("u2", "bob")).unwrap();
    b.create(GROUP, group("g1", "A", &["u1", "u2"])).unwrap();
    b.commit();
    // g2 exists only in the batch, g1 only in the committed state.
    b.create(GROUP, group("g2", "B", &["u1"])).unwrap();
    let before = b.overlay.changes.len();
    b.run(Op::Delete { kind: USER, id: "u1".into(), side: None }).unwrap();
    let mut rewritten: Vec<(String, Vec<String>, u64, bool)> = b.overlay.changes[before..]
        .iter()
        .filter_map(|c| match c {
            Change::Update { kind: GROUP, entry, keys_changed, .. } => {
                Some((entry.id().to_owned(), entry.members.clone(), entry.doc.version, *keys_changed))
            }
            _ => None,
        })
        .collect();
    rewritten.sort();
    assert_eq!(
        rewritten,
        vec![("g1".into(), vec!["u2".into()], 2, false), ("g2".into(), Vec::new(), 2, false)],
        "only the membership changed, so the indexed columns stay"
    );
    assert!(matches!(&b.overlay.changes[before], Change::Delete { kind: USER, id } if id == "u1"));
    // A group left without members stores no `members` at all.
    let g2 = b.run(Op::Update { kind: GROUP, id: "g2".into(), mutate: Box::new(|_, _| Ok(Mutation::Unchanged)) });
    let g2 = g2.unwrap().unwrap();
    assert!(g2.doc.get("members").is_none(), "{}", g2.doc);
    assert_eq!(g2.doc["meta"]["version"], "W/\"2\"");
    b.commit();
    assert!(b.base.groups_of("u1").is_empty());
    assert_eq!(b.base.groups_of("u2"), vec![GroupRef::new("g1", "A")]);
}

#[test]
fn a_rename_is_flagged_as_changing_the_indexed_columns() {
    let mut b = Batch::new();
    b.create(USER, user("u1", "alice")).unwrap();
    b.run(Op::Update { kind: USER, id: "u1".into(), mutate: set("displayName", "A") }).unwrap();
    b.run(Op::Update { kind: USER, id: "u1".into(), mutate: set("userName", "Bob") }).unwrap();
    let flags: Vec<bool> = b
        .overlay
        .changes
        .iter()
        .filter_map(|c| match c {
            Change::Update { keys_changed, .. } => Some(*keys_changed),
            _ => None,
        })
        .collect();
    assert_eq!(flags, vec![false, true]);
}

#[test]
fn an_outbox_entry_completed_after_a_newer_enqueue_is_kept() {
    let mut b = Batch::new();
    let side = |id: &str| SideEffects { enqueue: vec![Enqueue::user(id.to_owned())], ..Default::default() };
    b.run(Op::Create { kind: USER, doc: user("u1", "alice"), side: side("u1") }).unwrap();
    b.commit();
    let read = b.base.outbox[&(USER, "u1".to_owned())].clone();
    b.run(Op::Side { side: side("u1") }).unwrap();
    let removed = Arc::new(AtomicBool::new(true));
    let op = Op::OutboxComplete { entry: read.clone(), projection: None, removed: Arc::clone(&removed) };
    b.run(op).unwrap();
    assert!(!removed.load(AtomicOrdering::Relaxed), "generation 2 still waits");
    b.commit();
    let kept = &b.base.outbox[&(USER, "u1".to_owned())];
    assert_eq!((kept.generation, kept.attempts), (2, 0));
    let op = Op::OutboxComplete { entry: kept.clone(), projection: None, removed: Arc::clone(&removed) };
    b.run(op).unwrap();
    assert!(removed.load(AtomicOrdering::Relaxed));
    b.commit();
    assert!(b.base.outbox.is_empty());
}

#[test]
fn resources_stored_before_the_key_folded_their_names_can_still_be_updated() {
    // Two users whose names only the current key folds together (" Alice" and
    // "alice"), as a database from an older release may hold: both load.
    let mut b = Batch::new();
    for (seq, (id, name)) in [("u1", " Alice"), ("u2", "alice")].into_iter().enumerate() {
        let (entry, _) =
            crate::store::sqlite::state::Entry::written(USER, id, 1, seq as u64 + 1, &user(id, name)).unwrap();
        b.base.put(USER, entry);
    }
    b.next_seq = 3;
    // Entra deactivates either one: the name keeps its key, so no conflict.
    for id in ["u1", "u2"] {
        b.run(Op::Update { kind: USER, id: id.into(), mutate: set("active", "false") }).unwrap();
    }
    // A new resource, or a rename onto the shared key, still conflicts.
    assert_eq!(scim_err(b.create(USER, user("u3", "ALICE"))).status, 409);
    b.create(USER, user("u4", "bob")).unwrap();
    let e = scim_err(b.run(Op::Update { kind: USER, id: "u4".into(), mutate: set("userName", "alice ") }));
    assert_eq!((e.status, e.scim_type), (409, Some(ScimType::Uniqueness)));
}
