//! Health of every SIP target: the state table the prober writes and the DNS path reads
//! lock-free.
//!
//! The prober owns the table and publishes an immutable [`HealthSnapshot`] through the
//! [`HealthHandle`] (an `ArcSwap`) after every change, so a DNS query reads health with
//! one atomic load and never waits for the prober. Each snapshot carries a generation number that increases on every
//! change, so answer caches can tell when health moved.
//!
//! # Layout
//!
//! - this module: the shared types ([`Health`], [`AdminState`], [`TargetStatus`],
//!   [`HealthView`], [`HealthSnapshot`]) and [`ProbeError`];
//! - [`sip`]: the pure SIP OPTIONS codec (build the request, parse the reply, framing);
//! - [`state`]: the per-target state machine (`fall`, `rise`, `hold_down`, Retry-After);
//! - [`admin`]: the drained/enabled table and its atomically written state file, timed
//!   drains;
//! - [`observer`]: who else hears of probes, transitions and admin changes;
//! - [`history`]: the last hour per target for the status page;
//! - [`discover`]: NAPTR -> SRV -> A/AAAA discovery through the [`Lookup`] trait;
//! - [`table`]: the target table: one row per target, the published snapshot, the API's
//!   rows and the gauges, with one publish path;
//! - [`udp`]: the UDP transaction table (send, retransmit, match replies, return verdicts);
//! - [`transport`]: TCP and TLS connections;
//! - [`prober`]: the loop that ties them, and the app's [`ProberHandle`].

use std::{collections::HashMap, sync::Arc};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::{record::DomainName, target::TargetKey};

/// Probe verdicts so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    /// Not probed yet; counts as up.
    Unknown,
    /// Answering.
    Up,
    /// Not answering (or answering 5xx/6xx).
    Down,
}

/// The operator's say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminState {
    /// Handed out by health.
    #[default]
    Enabled,
    /// Handed out as if down; still probed.
    Drained,
}

/// What the answer policy needs to know of one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetStatus {
    /// Probe verdict.
    pub health: Health,
    /// Operator state.
    pub admin: AdminState,
}

impl TargetStatus {
    /// Unknown and enabled: what an unprobed target looks like.
    pub const UNKNOWN: Self = Self {
        health: Health::Unknown,
        admin: AdminState::Enabled,
    };

    /// True if phones may be sent there: enabled and not down (unknown counts as up).
    pub fn is_usable(&self) -> bool {
        self.admin == AdminState::Enabled && self.health != Health::Down
    }
}

/// Read access to target health, as the answer policy sees it. Implemented by
/// [`HealthSnapshot`], and by plain maps in tests.
pub trait HealthView {
    /// Status of one target; targets the prober does not know are [`TargetStatus::UNKNOWN`].
    fn status(&self, key: &TargetKey) -> TargetStatus;

    /// The targets discovered under a host name (an SRV target, or a SIP domain's own A/AAAA
    /// name), so an A/AAAA answer for that host can be judged per address. Empty when
    /// unknown.
    fn host_targets(&self, host: &DomainName) -> Vec<TargetKey> {
        let _ = host;
        Vec::new()
    }
}

impl HealthView for HashMap<TargetKey, TargetStatus> {
    fn status(&self, key: &TargetKey) -> TargetStatus {
        self.get(key).copied().unwrap_or(TargetStatus::UNKNOWN)
    }
}

/// An immutable view of every target's status, published by the prober.
#[derive(Debug, Clone, Default)]
pub struct HealthSnapshot {
    /// Increases on every change of any status.
    pub generation: u64,
    /// Status per target.
    pub targets: Arc<HashMap<TargetKey, TargetStatus>>,
    /// Targets per host name (SRV target or SIP domain), for A/AAAA answers of those hosts.
    pub by_host: Arc<HashMap<DomainName, Vec<TargetKey>>>,
    /// The SIP domain each host name was discovered under, so an A/AAAA query for an SRV
    /// target outside the domain (`sip1.provider.example.net`) gets that domain's policy.
    pub host_domain: Arc<HashMap<DomainName, DomainName>>,
}

impl HealthView for HealthSnapshot {
    fn status(&self, key: &TargetKey) -> TargetStatus {
        self.targets
            .get(key)
            .copied()
            .unwrap_or(TargetStatus::UNKNOWN)
    }

    fn host_targets(&self, host: &DomainName) -> Vec<TargetKey> {
        self.by_host.get(host).cloned().unwrap_or_default()
    }
}

/// The published health: created first by the app and given to the prober, which writes
/// it (one [`HealthSnapshot`] per change), and to the resolver, which reads it with one
/// atomic load per query. Cloning shares it.
#[derive(Debug, Clone, Default)]
pub struct HealthHandle(Arc<ArcSwap<HealthSnapshot>>);

impl HealthHandle {
    /// A handle holding an empty snapshot (every target unknown) until the prober
    /// publishes.
    pub fn new() -> Self {
        Self::default()
    }

    /// A handle holding `snapshot` (for a resolver over fixed health, as in fuzzing).
    pub fn from_snapshot(snapshot: HealthSnapshot) -> Self {
        Self(Arc::new(ArcSwap::from_pointee(snapshot)))
    }

    /// The snapshot in force, without touching its reference count (hot path).
    pub fn load(&self) -> arc_swap::Guard<Arc<HealthSnapshot>> {
        self.0.load()
    }

    /// The snapshot in force.
    pub fn load_full(&self) -> Arc<HealthSnapshot> {
        self.0.load_full()
    }

    /// Publishes a new snapshot (the prober's target table is the only writer).
    pub(crate) fn store(&self, snapshot: HealthSnapshot) {
        self.0.store(Arc::new(snapshot));
    }
}

/// Why the prober could not start or an admin change was refused.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The admin state file could not be read or written.
    #[error(transparent)]
    StateFile(#[from] admin::StateFileError),
    /// The TLS probe settings are unusable (unreadable or empty `ca_file`).
    #[error("TLS probe settings: {0}")]
    Tls(String),
    /// No such target is known.
    #[error("unknown target {0}")]
    UnknownTarget(TargetKey),
}

impl ProbeError {
    /// A bounded label for metrics and API error codes.
    pub fn label(&self) -> &'static str {
        match self {
            Self::StateFile(_) => "state_file",
            Self::Tls(_) => "tls",
            Self::UnknownTarget(_) => "unknown_target",
        }
    }
}

pub mod admin;
pub mod discover;
pub mod history;
pub mod observer;
pub mod prober;
pub mod sip;
pub mod state;
pub mod table;
pub mod transport;
pub mod udp;

pub use discover::Lookup;
pub use prober::ProberHandle;
pub use table::TargetInfo;

#[cfg(test)]
mod tests;
