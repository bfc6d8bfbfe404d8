//! The forwarder: sends questions sipdns does not answer statically to the upstream
//! resolvers (hickory-resolver), with a cache that honours TTLs and serves stale answers
//! (RFC 8767) when every upstream fails.
//!
//! Placeholder until the forwarder lands: every lookup fails.

use std::sync::Arc;

use crate::{
    config::UpstreamConfig,
    metrics::Metrics,
    record::{Answer, DomainName, RType},
};

/// Upstream failures.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing configured.
    #[error("no upstream")]
    NoUpstream,
}

impl UpstreamError {
    /// Metric label.
    pub fn label(&self) -> &'static str {
        "other"
    }
}

/// The forwarder.
pub struct Forwarder;

impl Forwarder {
    /// Builds it.
    pub fn new(_cfg: &UpstreamConfig, _metrics: Arc<Metrics>) -> Result<Self, UpstreamError> {
        Ok(Self)
    }
    /// Fresh cache hit.
    pub fn cached(&self, _name: &DomainName, _rtype: RType) -> Option<Answer> {
        None
    }
    /// Full lookup.
    pub async fn lookup(&self, _name: &DomainName, _rtype: RType) -> Result<Answer, UpstreamError> {
        Err(UpstreamError::NoUpstream)
    }
    /// Stale entry.
    pub fn stale(&self, _name: &DomainName, _rtype: RType) -> Option<Answer> {
        None
    }
    /// Reload.
    pub fn reconfigure(&self, _cfg: &UpstreamConfig) -> Result<(), UpstreamError> {
        Ok(())
    }
    /// Cache size.
    pub fn cache_len(&self) -> usize {
        0
    }
}
