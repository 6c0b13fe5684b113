//! `nixos-pxe fleet copy`: a fleet's whole state moved between stores (SQLite to PostgreSQL when
//! a fleet outgrows one boot server, and back), every row as it is, with its numbers, so that
//! tokens, attempts, the history and the bindings go on as if nothing moved. The target must be
//! empty: a copy never mixes two fleets' states.

use super::store::StoreError;

/// Every row of a store, in the columns both schemas share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    pub hosts: Vec<HostRow>,
    pub attempts: Vec<AttemptRow>,
    pub reports: Vec<ReportRow>,
    pub bindings: Vec<BindingRow>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub name: String,
    pub macs: String,
    pub generation: Option<i64>,
    pub installed_generation: Option<i64>,
    pub confirmed_generation: Option<i64>,
    pub confirmed_system: Option<String>,
    pub reinstall_after: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub seq: i64,
    pub host: String,
    pub generation: i64,
    pub number: i64,
    pub token_hash: String,
    pub status: String,
    pub step: Option<String>,
    pub error: Option<String>,
    pub system: Option<String>,
    pub boot_token_hash: Option<String>,
    pub mac: Option<String>,
    pub handed_out_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportRow {
    pub id: i64,
    pub attempt_seq: i64,
    pub event: String,
    pub step: Option<String>,
    pub message: Option<String>,
    pub log_tail: Option<String>,
    pub system: Option<String>,
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingRow {
    pub mac: String,
    pub address: String,
    pub seen_at: i64,
}

impl Dump {
    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty() && self.attempts.is_empty() && self.reports.is_empty() && self.bindings.is_empty()
    }

    pub fn summary(&self) -> String {
        format!("{} hosts, {} attempts, {} reports, {} bindings", self.hosts.len(), self.attempts.len(), self.reports.len(), self.bindings.len())
    }
}

/// A store's rows can be read whole and written into an empty one.
pub trait Copyable {
    fn dump(&self) -> Result<Dump, StoreError>;
    /// Writes `dump` in one transaction; refuses a store that has any row.
    fn load(&self, dump: &Dump) -> Result<(), StoreError>;
}

/// The error of [`Copyable::load`] into a store that has rows.
pub fn not_empty(place: &str, found: &Dump) -> StoreError {
    StoreError::Backend(format!(
        "{place} is not empty ({}): fleet copy writes only into an empty store, so that two fleets' states never mix; copy into a new database or state directory",
        found.summary()
    ))
}
