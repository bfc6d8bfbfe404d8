//! Every Prometheus series sipdns exports, defined and documented in one place.
//!
//! Names follow `sipdns_<subsystem>_<name>_<unit>`: counters end in `_total`, durations in
//! `_seconds`. Label values come from small fixed sets (transport, record type, rcode,
//! source, result) or from the operator's own target list — never from a query name.
//! One [`Metrics`] is made per running server (not a global), so tests can run several
//! servers in one process.

use prometheus::{
    Encoder, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

/// The registry and every series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// DNS queries answered, by transport (`udp`/`tcp`), query type and response code.
    pub dns_queries: IntCounterVec,
    /// Time from receiving a query to handing the answer to the socket, by transport.
    pub dns_duration: HistogramVec,
    /// Answers by where they came from (`static`, `upstream`, `cache`, `stale`, `merged`,
    /// `synthesized`).
    pub dns_answers: IntCounterVec,
    /// Packets not answered, by reason (`malformed`, `response_bit`, `overloaded`, ...).
    pub dns_dropped: IntCounterVec,
    /// UDP answers sent with TC set.
    pub dns_truncated: IntCounterVec,
    /// UDP queries over their client's rate limit, by action (`drop`, `slip`).
    pub dns_rate_limited: IntCounterVec,
    /// Upstream failures by kind (`timeout`, `servfail`, `refused`, `io`, `other`).
    pub upstream_errors: IntCounterVec,
    /// Upstream requests sent (after coalescing).
    pub upstream_requests: IntCounterVec,
    /// Upstream records dropped by the scrubber, by section (`answer`, `authority`,
    /// `additional`).
    pub upstream_scrubbed: IntCounterVec,
    /// Entries in the forwarder's cache.
    pub cache_entries: IntGauge,
    /// SIP OPTIONS probes by transport and result (`good`, `bad_code`, `timeout`,
    /// `unreachable`, `refused`, `reset`, `tls`, `error`).
    pub probes: IntCounterVec,
    /// SIP OPTIONS round-trip time of answered probes, by transport.
    pub probe_rtt: HistogramVec,
    /// Unsolicited or unmatched SIP messages received by the prober.
    pub probe_unmatched: IntCounterVec,
    /// 1 if a target is handed out (up or unknown, and enabled), else 0; by target.
    pub target_up: IntGaugeVec,
    /// Per SIP domain, its targets handed out to phones (up or not yet probed, and enabled;
    /// fallback targets not counted). 0: every server of the domain is down or drained.
    pub domain_targets_up: IntGaugeVec,
    /// Health transitions, by new state (`up`, `down`).
    pub target_transitions: IntCounterVec,
    /// Targets known to the prober.
    pub targets: IntGauge,
    /// Records the health policy withheld, by record type.
    pub policy_withheld: IntCounterVec,
    /// Answers where every target was down and the all-down rule applied, by rule
    /// (`serve_all`, `fallback`).
    pub policy_all_down: IntCounterVec,
    /// Config and zone reloads, by result (`ok`, `error`, `unchanged`).
    pub reloads: IntCounterVec,
    /// Unix time of the last successful reload (or start).
    pub reload_timestamp: Gauge,
    /// 1 if the last reload attempt succeeded (or none was made since start), else 0: the
    /// files on disk are not what is running.
    pub reload_last_ok: IntGauge,
    /// Admin state files moved aside at start because they could not be used, by reason
    /// (`unreadable`, `empty`, `corrupt`).
    pub state_file_quarantined: IntCounterVec,
    /// API connections closed at once because every slot (`api.max_connections`) was
    /// taken.
    pub api_connections_rejected: IntCounterVec,
    /// Events delivered to webhooks, by kind (`transition`, `admin`, `reload`).
    pub events_sent: IntCounterVec,
    /// Events not delivered to a webhook, by reason (`queue_full`: the receiver's queue was
    /// full; `failed`: every attempt failed).
    pub events_dropped: IntCounterVec,
    /// Secondary zones: the SOA serial in force, by zone.
    pub zone_serial: GaugeVec,
    /// Secondary zones: transfers by zone, kind (`axfr`, `ixfr`) and result (`ok`,
    /// `failed`, `rejected`, `up_to_date`).
    pub zone_transfers: IntCounterVec,
    /// Secondary zones: seconds until the zone expires without a successful check
    /// (0 or below: expired, not served), by zone.
    pub zone_expiry: GaugeVec,
    /// Secondary zones: Unix time of the last successful serial check, by zone.
    pub zone_last_success: GaugeVec,
    /// Secondary zones: the refresh interval in force, by zone.
    pub zone_refresh: GaugeVec,
    /// NOTIFY messages received, by result (`accepted`, `refused`).
    pub zone_notifies: IntCounterVec,
    /// Catalog zones: member properties sipdns does not understand (ignored), by catalog.
    pub catalog_unknown_properties: IntCounterVec,
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let g = GaugeVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(g.clone()));
    g
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| {
        // Names and labels are compile-time constants checked by the metrics test;
        // an error here is a programming error caught before release.
        unreachable!("metric {name}: {e}")
    });
    let _ = r.register(Box::new(c.clone()));
    c
}

fn histogram(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    let _ = r.register(Box::new(h.clone()));
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every series registered.
    pub fn new() -> Self {
        let r = Registry::new();
        let dns_buckets = vec![
            0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1,
            0.25, 0.5, 1.0, 2.5,
        ];
        let probe_buckets = vec![
            0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0,
        ];
        let cache_entries =
            IntGauge::new("sipdns_cache_entries", "Entries in the forwarder's cache.")
                .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = r.register(Box::new(cache_entries.clone()));
        let targets = IntGauge::new("sipdns_probe_targets", "Targets known to the prober.")
            .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = r.register(Box::new(targets.clone()));
        let reload_timestamp = Gauge::new(
            "sipdns_config_reload_timestamp_seconds",
            "Unix time of the last successful config and zone load.",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = r.register(Box::new(reload_timestamp.clone()));
        let target_up = IntGaugeVec::new(
            Opts::new(
                "sipdns_target_up",
                "1 if the target is handed out to phones (up or not yet probed, and enabled), else 0.",
            ),
            &["target"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = r.register(Box::new(target_up.clone()));
        let domain_targets_up = IntGaugeVec::new(
            Opts::new(
                "sipdns_domain_targets_up",
                "Targets of the SIP domain handed out to phones (fallback targets not counted); 0: every server of the domain is down or drained.",
            ),
            &["domain"],
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        let _ = r.register(Box::new(domain_targets_up.clone()));
        let reload_last_ok = IntGauge::new(
            "sipdns_config_last_reload_successful",
            "1 if the last config and zone reload succeeded (or none was tried since start), else 0.",
        )
        .unwrap_or_else(|e| unreachable!("{e}"));
        reload_last_ok.set(1);
        let _ = r.register(Box::new(reload_last_ok.clone()));
        let m = Self {
            dns_queries: counter(
                &r,
                "sipdns_dns_queries_total",
                "DNS queries answered, by transport, query type and response code.",
                &["transport", "qtype", "rcode"],
            ),
            dns_duration: histogram(
                &r,
                "sipdns_dns_query_duration_seconds",
                "Time from receiving a DNS query to sending its answer.",
                &["transport"],
                dns_buckets,
            ),
            dns_answers: counter(
                &r,
                "sipdns_dns_answers_total",
                "DNS answers by source: static, upstream, cache, stale, merged, synthesized.",
                &["source"],
            ),
            dns_dropped: counter(
                &r,
                "sipdns_dns_dropped_total",
                "DNS packets not answered, by reason.",
                &["reason"],
            ),
            dns_truncated: counter(
                &r,
                "sipdns_dns_truncated_total",
                "UDP answers sent with the TC bit set, by transport.",
                &["transport"],
            ),
            dns_rate_limited: counter(
                &r,
                "sipdns_dns_rate_limited_total",
                "UDP queries over their client's rate limit, by action: drop, or slip (a truncated reply).",
                &["action"],
            ),
            upstream_errors: counter(
                &r,
                "sipdns_upstream_errors_total",
                "Failed upstream lookups, by kind.",
                &["kind"],
            ),
            upstream_requests: counter(
                &r,
                "sipdns_upstream_requests_total",
                "Upstream lookups started (after coalescing identical in-flight questions), by result.",
                &["result"],
            ),
            upstream_scrubbed: counter(
                &r,
                "sipdns_upstream_scrubbed_records_total",
                "Records of upstream replies dropped because they do not belong to the question (off the CNAME chain, SOA/NS below the name, addresses nothing points to), by section.",
                &["section"],
            ),
            cache_entries,
            probes: counter(
                &r,
                "sipdns_probes_total",
                "SIP OPTIONS probes finished, by transport and result.",
                &["transport", "result"],
            ),
            probe_rtt: histogram(
                &r,
                "sipdns_probe_rtt_seconds",
                "Round-trip time of answered SIP OPTIONS probes.",
                &["transport"],
                probe_buckets,
            ),
            probe_unmatched: counter(
                &r,
                "sipdns_probe_unmatched_total",
                "SIP messages received by the prober that match no outstanding probe, by reason.",
                &["reason"],
            ),
            target_up,
            domain_targets_up,
            target_transitions: counter(
                &r,
                "sipdns_target_transitions_total",
                "Target health transitions, by new state.",
                &["to"],
            ),
            targets,
            policy_withheld: counter(
                &r,
                "sipdns_policy_withheld_records_total",
                "Records withheld from answers by the health policy, by record type.",
                &["qtype"],
            ),
            policy_all_down: counter(
                &r,
                "sipdns_policy_all_down_total",
                "Answers in which every target was down, by the rule applied.",
                &["rule"],
            ),
            reloads: counter(
                &r,
                "sipdns_config_reloads_total",
                "Config and zone reloads, by result.",
                &["result"],
            ),
            events_sent: counter(
                &r,
                "sipdns_events_sent_total",
                "Events delivered to webhooks, by kind.",
                &["kind"],
            ),
            events_dropped: counter(
                &r,
                "sipdns_events_dropped_total",
                "Events not delivered to a webhook, by reason.",
                &["reason"],
            ),
            reload_timestamp,
            reload_last_ok,
            zone_serial: gauge_vec(
                &r,
                "sipdns_zone_serial",
                "Secondary zones: the SOA serial in force.",
                &["zone"],
            ),
            zone_transfers: counter(
                &r,
                "sipdns_zone_transfers_total",
                "Secondary zones: transfers by kind (axfr, ixfr) and result (ok, failed, rejected, up_to_date).",
                &["zone", "kind", "result"],
            ),
            zone_expiry: gauge_vec(
                &r,
                "sipdns_zone_expiry_seconds",
                "Secondary zones: seconds until the zone expires without a successful serial check; 0 or below: expired and not served.",
                &["zone"],
            ),
            zone_last_success: gauge_vec(
                &r,
                "sipdns_zone_last_success_timestamp_seconds",
                "Secondary zones: Unix time of the last successful serial check or transfer.",
                &["zone"],
            ),
            zone_refresh: gauge_vec(
                &r,
                "sipdns_zone_refresh_seconds",
                "Secondary zones: the refresh interval in force (the SOA's, or zones.secondary[].refresh).",
                &["zone"],
            ),
            zone_notifies: counter(
                &r,
                "sipdns_zone_notifies_total",
                "NOTIFY messages received, by result: accepted (from a listed primary, for a followed zone), rejected (signed, but not with the zone's TSIG key or out of time: NOTAUTH) or refused.",
                &["result"],
            ),
            catalog_unknown_properties: counter(
                &r,
                "sipdns_zone_catalog_unknown_properties_total",
                "Catalog zones: member properties not understood by sipdns (ignored), by catalog.",
                &["catalog"],
            ),
            state_file_quarantined: counter(
                &r,
                "sipdns_state_file_quarantined_total",
                "Admin state files moved aside at start because they could not be used, by reason.",
                &["reason"],
            ),
            api_connections_rejected: counter(
                &r,
                "sipdns_api_connections_rejected_total",
                "API connections closed at once because every slot was taken, by limit.",
                &["limit"],
            ),
            registry: r,
        };
        m.zero_known_labels();
        m
    }

    /// Creates every series whose label values come from a small fixed set, at zero, so
    /// each one is in the scrape (with its HELP text) from the start: a series that appears
    /// only after its first event breaks `rate()` and hides "never happened" from alerts.
    /// Series keyed by the query's type and rcode, or by target, appear with traffic.
    fn zero_known_labels(&self) {
        const TRANSPORTS: [&str; 3] = ["udp", "tcp", "tls"];
        for t in ["udp", "tcp"] {
            let _ = self.dns_duration.with_label_values(&[t]);
        }
        let _ = self.dns_truncated.with_label_values(&["udp"]);
        for a in ["drop", "slip"] {
            let _ = self.dns_rate_limited.with_label_values(&[a]);
        }
        for s in [
            "static",
            "upstream",
            "cache",
            "stale",
            "merged",
            "synthesized",
        ] {
            let _ = self.dns_answers.with_label_values(&[s]);
        }
        for k in ["timeout", "servfail", "refused", "io", "other"] {
            let _ = self.upstream_errors.with_label_values(&[k]);
        }
        for s in ["answer", "authority", "additional"] {
            let _ = self.upstream_scrubbed.with_label_values(&[s]);
        }
        for t in TRANSPORTS {
            for r in [
                "good",
                "bad_code",
                "timeout",
                "unreachable",
                "refused",
                "reset",
                "tls",
                "error",
            ] {
                let _ = self.probes.with_label_values(&[t, r]);
            }
            let _ = self.probe_rtt.with_label_values(&[t]);
        }
        for to in ["up", "down"] {
            let _ = self.target_transitions.with_label_values(&[to]);
        }
        for q in ["NAPTR", "SRV", "A", "AAAA"] {
            let _ = self.policy_withheld.with_label_values(&[q]);
        }
        for rule in ["serve_all", "fallback"] {
            let _ = self.policy_all_down.with_label_values(&[rule]);
        }
        for res in ["ok", "error"] {
            let _ = self.reloads.with_label_values(&[res]);
        }
        for res in ["accepted", "refused"] {
            let _ = self.zone_notifies.with_label_values(&[res]);
        }
        for reason in ["unreadable", "empty", "corrupt"] {
            let _ = self.state_file_quarantined.with_label_values(&[reason]);
        }
        for limit in ["max_connections", "descriptors"] {
            let _ = self.api_connections_rejected.with_label_values(&[limit]);
        }
        for k in ["transition", "admin", "reload"] {
            let _ = self.events_sent.with_label_values(&[k]);
        }
        for r in ["queue_full", "failed"] {
            let _ = self.events_dropped.with_label_values(&[r]);
        }
    }

    /// The registry, for tests and the HTTP handler.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Every series in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            tracing::warn!(error = %e, "encoding metrics failed");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    /// Every series sipdns registers has its row in docs/metrics.md.
    #[test]
    fn every_series_is_documented() {
        let source = include_str!("metrics.rs");
        let doc = include_str!("../docs/metrics.md");
        let series: Vec<&str> = source
            .split('"')
            .filter(|s| {
                s.len() > "sipdns_".len()
                    && s.starts_with("sipdns_")
                    && s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            })
            .collect();
        assert!(series.len() > 30, "{series:?}");
        let missing: Vec<&&str> = series
            .iter()
            .filter(|s| !doc.contains(&format!("| `{s}` |")))
            .collect();
        assert!(missing.is_empty(), "not in docs/metrics.md: {missing:?}");
    }
}
