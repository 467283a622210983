//! The committed state in memory: every resource with its indexes, the
//! outbox and projection bookkeeping, and the queries served from it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use parking_lot::RwLock;
use serde_json::Value;

use super::packed::Packed;
use crate::scim::names::unique_name_key;
use crate::scim::schema::ResourceKind;
use crate::store::{ApiKeyChange, ApiKeyRecord, GroupRef, IndexHint, OutboxEntry, Page, Query, Record, StoreError};

/// A stored document as reads copy it out of the lock: two reference counts,
/// no deep copy, so parsing happens after the lock is released.
#[derive(Debug, Clone)]
pub(super) struct Doc {
    pub(super) id: Arc<str>,
    pub(super) version: u64,
    /// The compact JSON written to the database, packed.
    pub(super) text: Packed,
}

impl Doc {
    pub(super) fn value(&self) -> Result<Value, StoreError> {
        serde_json::from_str(&self.text.unpack())
            .map_err(|e| StoreError::Backend(format!("stored document {} is not valid JSON: {e}", self.id)))
    }

    pub(super) fn record(&self) -> Result<Record, StoreError> {
        Ok(Record { id: self.id.to_string(), version: self.version, doc: Arc::new(self.value()?) })
    }
}

/// A stored resource with what the indexes need, extracted once at write time.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    pub(super) doc: Doc,
    /// Creation order; never changes on update.
    pub(super) seq: u64,
    /// The unique name as stored (`groups_of` returns it).
    pub(super) name: Arc<str>,
    /// The same allocation as `name` when the name is already lowercase
    /// (the usual case): the indexes below share these strings.
    pub(super) name_lower: Arc<str>,
    pub(super) external_id: Option<Arc<str>>,
    /// Member ids of a group (empty for users).
    pub(super) members: Vec<String>,
}

impl Entry {
    /// `doc` serialised once: the JSON for the database, and the entry (which
    /// holds it packed) for memory.
    pub(super) fn written(
        kind: ResourceKind,
        id: &str,
        version: u64,
        seq: u64,
        doc: &Value,
    ) -> Result<(Self, String), StoreError> {
        let json = doc_text(doc)?;
        Ok((Self::with_text(kind, id, version, seq, doc, &json), json))
    }

    /// `text` must be `doc` serialised.
    pub(super) fn with_text(kind: ResourceKind, id: &str, version: u64, seq: u64, doc: &Value, text: &str) -> Self {
        let name_str = doc.get(kind.unique_name_attr()).and_then(Value::as_str).unwrap_or_default();
        let name: Arc<str> = name_str.into();
        // The one key unique names are indexed and compared by, for new
        // writes and for rows loaded at start alike.
        let key = unique_name_key(name_str);
        let name_lower = if key == name_str { name.clone() } else { key.into() };
        let members = match kind {
            ResourceKind::Group => member_ids(doc).map(str::to_owned).collect(),
            ResourceKind::User => Vec::new(),
        };
        Entry {
            doc: Doc { id: id.into(), version, text: Packed::pack(text) },
            seq,
            name,
            name_lower,
            external_id: external_id(doc).map(Arc::from),
            members,
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.doc.id
    }
}

/// The seqs sharing one externalId: almost always exactly one, kept inline.
#[derive(Debug)]
enum Seqs {
    One(u64),
    Many(BTreeSet<u64>),
}

impl Seqs {
    fn insert(&mut self, seq: u64) {
        match self {
            Seqs::One(s) if *s == seq => {}
            Seqs::One(s) => *self = Seqs::Many(BTreeSet::from([*s, seq])),
            Seqs::Many(set) => {
                set.insert(seq);
            }
        }
    }

    /// False once empty.
    fn remove(&mut self, seq: u64) -> bool {
        match self {
            Seqs::One(s) => *s != seq,
            Seqs::Many(set) => {
                set.remove(&seq);
                if let (1, Some(&only)) = (set.len(), set.first()) {
                    *self = Seqs::One(only);
                }
                !matches!(self, Seqs::Many(set) if set.is_empty())
            }
        }
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        let (one, many) = match self {
            Seqs::One(s) => (Some(*s), None),
            Seqs::Many(set) => (None, Some(set.iter().copied())),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Resources of one kind. Everything is keyed by `seq` so that iteration in
/// creation order needs no extra lookups. Index keys share the entry's
/// `Arc<str>`s instead of copying them. Every map is a B-tree, not a hash map,
/// because a hash map's all-at-once rehash would hold the write lock (and so
/// every request) for a long pause.
#[derive(Debug, Default)]
pub(super) struct KindState {
    pub(super) by_seq: BTreeMap<u64, Entry>,
    by_id: BTreeMap<Arc<str>, u64>,
    by_name: BTreeMap<Arc<str>, u64>,
    by_external: BTreeMap<Arc<str>, Seqs>,
}

impl KindState {
    pub(super) fn get(&self, id: &str) -> Option<&Entry> {
        self.by_id.get(id).and_then(|seq| self.by_seq.get(seq))
    }

    pub(super) fn by_name(&self, name: &str) -> Option<&Entry> {
        self.by_name.get(name).and_then(|seq| self.by_seq.get(seq))
    }

    pub(super) fn insert(&mut self, entry: Entry) -> Option<Entry> {
        let old = self.remove(entry.id());
        let seq = entry.seq;
        self.by_id.insert(entry.doc.id.clone(), seq);
        self.by_name.insert(entry.name_lower.clone(), seq);
        if let Some(ext) = &entry.external_id {
            match self.by_external.get_mut(ext) {
                Some(seqs) => seqs.insert(seq),
                None => {
                    self.by_external.insert(ext.clone(), Seqs::One(seq));
                }
            }
        }
        self.by_seq.insert(seq, entry);
        old
    }

    pub(super) fn remove(&mut self, id: &str) -> Option<Entry> {
        let seq = self.by_id.remove(id)?;
        let entry = self.by_seq.remove(&seq)?;
        if self.by_name.get(&entry.name_lower) == Some(&seq) {
            self.by_name.remove(&entry.name_lower);
        }
        if let Some(ext) = &entry.external_id
            && let Some(seqs) = self.by_external.get_mut(ext)
            && !seqs.remove(seq)
        {
            self.by_external.remove(ext);
        }
        Some(entry)
    }
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) users: KindState,
    pub(super) groups: KindState,
    /// Member id → `seq`s of the groups listing it.
    pub(super) members: BTreeMap<String, BTreeSet<u64>>,
    pub(super) outbox: BTreeMap<(ResourceKind, String), OutboxEntry>,
    pub(super) projection: BTreeMap<String, String>,
    /// Self-service keys by id.
    pub(super) api_keys: BTreeMap<String, ApiKeyRecord>,
}

impl State {
    pub(super) fn kind(&self, kind: ResourceKind) -> &KindState {
        match kind {
            ResourceKind::User => &self.users,
            ResourceKind::Group => &self.groups,
        }
    }

    fn kind_mut(&mut self, kind: ResourceKind) -> &mut KindState {
        match kind {
            ResourceKind::User => &mut self.users,
            ResourceKind::Group => &mut self.groups,
        }
    }

    /// Ids are unique across kinds, because group members and `groups_of`
    /// name a resource by id alone.
    pub(super) fn find_any(&self, id: &str) -> Option<(ResourceKind, &Entry)> {
        self.users
            .get(id)
            .map(|e| (ResourceKind::User, e))
            .or_else(|| self.groups.get(id).map(|e| (ResourceKind::Group, e)))
    }

    pub(super) fn put(&mut self, kind: ResourceKind, entry: Entry) {
        let seq = entry.seq;
        let new_members: HashSet<String> = entry.members.iter().cloned().collect();
        if let Some(old) = self.kind_mut(kind).insert(entry) {
            for m in &old.members {
                if !new_members.contains(m) {
                    self.unlink_member(m, seq);
                }
            }
        }
        for m in new_members {
            self.members.entry(m).or_default().insert(seq);
        }
    }

    pub(super) fn remove(&mut self, kind: ResourceKind, id: &str) {
        let Some(old) = self.kind_mut(kind).remove(id) else {
            return;
        };
        for m in &old.members {
            self.unlink_member(m, old.seq);
        }
    }

    fn unlink_member(&mut self, member: &str, group_seq: u64) {
        if let Some(set) = self.members.get_mut(member) {
            set.remove(&group_seq);
            if set.is_empty() {
                self.members.remove(member);
            }
        }
    }

    /// Folds in a change that committed.
    pub(super) fn apply(&mut self, change: Change) {
        match change {
            Change::Insert { kind, entry, .. } | Change::Update { kind, entry, .. } => self.put(kind, entry),
            Change::Delete { kind, id } => self.remove(kind, &id),
            Change::OutboxPut { entry } => {
                self.outbox.insert((entry.kind, entry.id.clone()), entry);
            }
            Change::OutboxDelete { kind, id } => {
                self.outbox.remove(&(kind, id));
            }
            Change::Projection { id, state: Some(state) } => {
                self.projection.insert(id, state);
            }
            Change::Projection { id, state: None } => {
                self.projection.remove(&id);
            }
            Change::ApiKey(c) => super::api_keys::apply(&mut self.api_keys, c),
        }
    }

    /// The entries a query's index hint allows, in creation order.
    pub(super) fn candidates<'s>(&'s self, q: &Query<'_>) -> Box<dyn Iterator<Item = &'s Entry> + 's> {
        let ks = self.kind(q.kind);
        match &q.hint {
            None => Box::new(ks.by_seq.values()),
            Some(IndexHint::Id(id)) => Box::new(ks.get(id).into_iter()),
            // The key is idempotent: keying again keeps the index sound even if
            // a caller forgot to.
            Some(IndexHint::UniqueName(name)) => Box::new(ks.by_name(&unique_name_key(name)).into_iter()),
            Some(IndexHint::ExternalId(ext)) => Box::new(
                ks.by_external.get(ext.as_str()).into_iter().flat_map(Seqs::iter).filter_map(|seq| ks.by_seq.get(&seq)),
            ),
        }
    }

    pub(super) fn groups_of(&self, member_id: &str) -> Vec<GroupRef> {
        let Some(seqs) = self.members.get(member_id) else {
            return Vec::new();
        };
        seqs.iter()
            .filter_map(|seq| self.groups.by_seq.get(seq))
            .map(|g| GroupRef::new(g.id(), g.name.to_string()))
            .collect()
    }
}

/// Runs a query: candidates are copied out under the read lock, documents are
/// parsed and filtered after it is released, so a long scan never holds up
/// the writer (nor, behind it, other readers).
pub(super) fn run_query(state: &RwLock<State>, q: &Query<'_>) -> Result<Page, StoreError> {
    let skip = q.start_index.max(1) - 1;
    if q.matches.is_none() && q.sort.is_none() {
        // Every candidate matches: count them, parse only the page.
        let (total, page) = {
            let st = state.read();
            let all: Vec<&Entry> = st.candidates(q).collect();
            let page: Vec<Doc> = all.iter().skip(skip).take(q.count).map(|e| e.doc.clone()).collect();
            (all.len(), page)
        };
        let records = page.iter().map(Doc::record).collect::<Result<_, _>>()?;
        return Ok(Page { total, records });
    }
    let docs: Vec<Doc> = state.read().candidates(q).map(|e| e.doc.clone()).collect();
    let mut matching = Vec::new();
    for doc in &docs {
        let record = doc.record()?;
        if q.matches.is_none_or(|m| m(&record.doc)) {
            matching.push(record);
        }
    }
    if let Some(sort) = q.sort {
        matching.sort_by(|a, b| sort(&a.doc, &b.doc));
    }
    let total = matching.len();
    let records = matching.into_iter().skip(skip).take(q.count).collect();
    Ok(Page { total, records })
}

/// The member ids a group document lists.
pub(super) fn member_ids(doc: &Value) -> impl Iterator<Item = &str> {
    doc.get("members")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("value").and_then(Value::as_str))
}

pub(super) fn external_id(doc: &Value) -> Option<String> {
    doc.get("externalId").and_then(Value::as_str).map(str::to_owned)
}

pub(super) fn doc_text(doc: &Value) -> Result<String, StoreError> {
    serde_json::to_string(doc).map_err(|e| StoreError::Backend(format!("serialising a document: {e}")))
}

/// One step of a write request, as applied to SQLite and then to the state.
#[derive(Debug)]
pub(super) enum Change {
    /// `json` is the document as it goes to the database (the entry keeps it
    /// packed), so it is not unpacked again for the write.
    Insert {
        kind: ResourceKind,
        entry: Entry,
        json: String,
    },
    /// When `keys_changed` is false (the unique name and externalId, which
    /// SQLite indexes or keeps beside the document, are the same), the row is
    /// rewritten without touching the name index, so the commit puts one
    /// B-tree page in the WAL instead of two.
    Update {
        kind: ResourceKind,
        entry: Entry,
        json: String,
        keys_changed: bool,
    },
    Delete {
        kind: ResourceKind,
        id: String,
    },
    OutboxPut {
        entry: OutboxEntry,
    },
    OutboxDelete {
        kind: ResourceKind,
        id: String,
    },
    /// Projection bookkeeping of a resource id: `Some` sets, `None` clears.
    Projection {
        id: String,
        state: Option<String>,
    },
    ApiKey(ApiKeyChange),
}

impl Change {
    /// `old` replaced by `entry`.
    pub(super) fn update(kind: ResourceKind, entry: Entry, json: String, old: &Entry) -> Self {
        let keys_changed = entry.name_lower != old.name_lower || entry.external_id != old.external_id;
        Change::Update { kind, entry, json, keys_changed }
    }
}
