//! The data walk of one query, top to bottom:
//!
//! 1. client ACL — outside the allowed networks: REFUSED (never an open resolver);
//! 2. parse — malformed: FORMERR; responses: dropped; other opcodes: NOTIMP; EDNS version
//!    above 0: BADVERS;
//! 3. resolve — static entries / upstream by merge mode, RFC 3263 ADDITIONAL records, and
//!    the health policy for managed SIP domains ([`crate::resolve::Resolver::answer`]);
//! 4. encode — fit the transport (ADDITIONAL dropped before TC is set), echo ID and the
//!    question's case.
//!
//! Every step reports what it did through metrics; nothing here logs per query above
//! `debug`.

use std::{net::SocketAddr, sync::Arc, time::Instant};

use ipnet::IpNet;

use super::wire::{self, Parsed, Question};
use crate::{
    metrics::Metrics,
    record::{Answer, Rcode},
    resolve::Resolver,
};

/// Which transport a query came over (a metric label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl Transport {
    fn label(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        }
    }
}

/// Answers DNS queries. Shared by every listener.
pub struct Handler {
    resolver: Arc<Resolver>,
    metrics: Arc<Metrics>,
}

/// True if `ip` is inside one of `allow` (IPv4-mapped IPv6 addresses count as IPv4).
pub fn allowed(allow: &[IpNet], ip: std::net::IpAddr) -> bool {
    let ip = ip.to_canonical();
    allow.iter().any(|n| n.contains(&ip))
}

impl Handler {
    /// A handler over a resolver.
    pub fn new(resolver: Arc<Resolver>, metrics: Arc<Metrics>) -> Self {
        Self { resolver, metrics }
    }

    /// The resolver.
    pub fn resolver(&self) -> &Arc<Resolver> {
        &self.resolver
    }

    /// Answers one request; `None` means send nothing.
    pub async fn handle(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        let data = self.resolver.data();
        if !allowed(&data.config.dns.allow, src.ip()) {
            self.metrics
                .dns_dropped
                .with_label_values(&["acl_refused"])
                .inc();
            let resp = wire::refused(bytes)?;
            self.count(transport, "other", Rcode::Refused, start);
            return Some(resp);
        }
        let q = match wire::parse(bytes) {
            Parsed::Query(q) => q,
            Parsed::Reply(resp, rcode) => {
                self.count(transport, "other", rcode, start);
                return Some(resp);
            }
            Parsed::Drop(reason) => {
                self.metrics.dns_dropped.with_label_values(&[reason]).inc();
                return None;
            }
        };
        let answer = self.resolver.answer(&q.name, q.qtype).await;
        Some(self.respond(&q, &answer, transport, start))
    }

    /// Answers a request without waiting for upstream, for when too many queries are
    /// already waiting: a cached answer (fresh or stale) if there is one, else SERVFAIL.
    pub fn overloaded(
        &self,
        bytes: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let start = Instant::now();
        self.metrics
            .dns_dropped
            .with_label_values(&["overloaded"])
            .inc();
        let data = self.resolver.data();
        if !allowed(&data.config.dns.allow, src.ip()) {
            return wire::refused(bytes);
        }
        let Parsed::Query(q) = wire::parse(bytes) else {
            return None;
        };
        let answer = self
            .resolver
            .forwarder()
            .stale(&q.name, q.qtype)
            .unwrap_or_else(Answer::servfail);
        Some(self.respond(&q, &answer, transport, start))
    }

    fn respond(
        &self,
        q: &Question,
        answer: &Answer,
        transport: Transport,
        start: Instant,
    ) -> Vec<u8> {
        let max_udp = self.resolver.data().config.dns.max_udp_payload;
        let limit = wire::budget(q, transport == Transport::Tcp, max_udp);
        let (bytes, truncated) = wire::encode(q, answer, limit, max_udp);
        if truncated {
            self.metrics
                .dns_truncated
                .with_label_values(&[transport.label()])
                .inc();
        }
        self.metrics
            .dns_answers
            .with_label_values(&[answer.source.metric_label()])
            .inc();
        self.count(transport, q.qtype.metric_label(), answer.rcode, start);
        bytes
    }

    fn count(&self, transport: Transport, qtype: &str, rcode: Rcode, start: Instant) {
        self.metrics
            .dns_queries
            .with_label_values(&[transport.label(), qtype, rcode.metric_label()])
            .inc();
        self.metrics
            .dns_duration
            .with_label_values(&[transport.label()])
            .observe(start.elapsed().as_secs_f64());
    }
}
