//! Consumers of the event log: processes (or, on the embedded log, tasks of the gateway) that
//! follow `<prefix>.events` under a consumer name of their own and turn it into state others
//! read. `switchyard consume <name>` runs one.
//!
//! - [`budgets`]: spend per account and budget window → the compacted `<prefix>.spend`
//!   (schema `schemas/events/spend.json`), from which every gateway starts.
//!
//! Not built yet: `spend` (ClickHouse spend logs), `alerts`, `analytics`.

pub mod budgets;

/// The consumers `switchyard consume` knows, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    Spend,
    Budgets,
    Alerts,
    Analytics,
    /// Every consumer in one process.
    All,
}

impl Name {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Spend => "spend",
            Self::Budgets => "budgets",
            Self::Alerts => "alerts",
            Self::Analytics => "analytics",
            Self::All => "all",
        }
    }

    /// Whether this version can run it.
    pub fn implemented(self) -> bool {
        matches!(self, Self::Budgets)
    }
}
