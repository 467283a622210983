//! The index-usable shape of a filter, so a store can narrow a query before
//! the filter runs.

/// How a query can be narrowed with an index before the filter is evaluated.
/// The filter compiler extracts it from a top-level `eq` (or an `and` holding
/// one); the store must return every record the hint allows (a superset of
/// the matches), never fewer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexHint {
    /// `id eq "..."` (case-exact).
    Id(String),
    /// `userName eq` for users, `displayName eq` for groups: the value lowercased.
    UniqueName(String),
    /// `externalId eq "..."` (case-exact).
    ExternalId(String),
}
