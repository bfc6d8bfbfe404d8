//! `/metrics` after DNS traffic: every series docs/metrics.md lists is there with HELP text, names
//! follow the Prometheus suffix rules, label values are bounded (never a query name), the
//! DNS counters move with traffic, and `promtool check metrics` accepts the scrape.

use std::{collections::BTreeMap, io::Write as _, process::Stdio};

use hickory_proto::rr::RecordType;

use crate::common::{
    client::{self, query},
    http::Client,
    server,
};

/// Every series the operator is promised (docs/metrics.md): (name, labels, what it answers).
const SPEC_SERIES: &[(&str, &[&str], &str)] = &[
    (
        "sipdns_dns_queries_total",
        &["transport", "qtype", "rcode"],
        "queries by transport, type and rcode",
    ),
    (
        "sipdns_dns_query_duration_seconds",
        &["transport"],
        "latency histogram",
    ),
    ("sipdns_dns_answers_total", &["source"], "answers by source"),
    ("sipdns_upstream_errors_total", &["kind"], "upstream errors"),
    ("sipdns_cache_entries", &[], "cache size"),
    (
        "sipdns_probes_total",
        &["transport", "result"],
        "probes by result",
    ),
    ("sipdns_probe_rtt_seconds", &["transport"], "probe RTT"),
    ("sipdns_target_up", &["target"], "target up"),
    (
        "sipdns_target_transitions_total",
        &["to"],
        "state transitions",
    ),
    (
        "sipdns_policy_withheld_records_total",
        &["qtype"],
        "records withheld",
    ),
    (
        "sipdns_config_reloads_total",
        &["result"],
        "reloads by result",
    ),
];

const ZONE: &str = "zone: pbx.example.org
records:
  - { name: _sip._udp, type: SRV, priority: 10, weight: 1, port: 5060, target: server1 }
  - { name: server1, type: A, address: 192.0.2.10 }
";

/// One parsed scrape.
struct Scrape {
    text: String,
    help: BTreeMap<String, String>,
    kind: BTreeMap<String, String>,
    /// (series name with labels, value)
    samples: Vec<(String, f64)>,
}

impl Scrape {
    fn parse(text: String) -> Self {
        let (mut help, mut kind, mut samples) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (n, h) = rest.split_once(' ').unwrap_or((rest, ""));
                help.insert(n.to_owned(), h.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (n, t) = rest.split_once(' ').unwrap();
                kind.insert(n.to_owned(), t.to_owned());
            } else if !line.is_empty() && !line.starts_with('#') {
                let (series, value) = line.rsplit_once(' ').unwrap();
                samples.push((series.to_owned(), value.parse().unwrap()));
            }
        }
        Self {
            text,
            help,
            kind,
            samples,
        }
    }

    /// Sum of every sample of `name` whose labels include all of `labels`.
    fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.samples
            .iter()
            .filter(|(s, _)| {
                let base = s.split('{').next().unwrap();
                base == name && labels.iter().all(|l| s.contains(l))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// The label names used by the samples of `name` (histograms: of its `_count`).
    fn label_names(&self, name: &str) -> Vec<String> {
        let sample = self.samples.iter().find(|(s, _)| {
            let base = s.split('{').next().unwrap();
            base == name || base == format!("{name}_count")
        });
        let Some((s, _)) = sample else {
            return Vec::new();
        };
        let Some((_, labels)) = s.split_once('{') else {
            return Vec::new();
        };
        labels
            .trim_end_matches('}')
            .split("\",")
            .filter_map(|kv| {
                kv.split_once('=')
                    .map(|(k, _)| k.trim_matches(',').to_owned())
            })
            .collect()
    }
}

async fn scrape(c: &Client) -> Scrape {
    let r = c.get("/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .unwrap()
            .starts_with("text/plain; version=0.0.4"),
        "{:?}",
        r.header("content-type")
    );
    Scrape::parse(r.text())
}

#[tokio::test]
async fn every_series_is_there_well_named_and_moves_with_traffic() {
    let s = server::start_with_api("", &[("pbx.example.org.yaml", ZONE)]).await;
    // The prober is not wired into the server yet; it will write exactly this gauge per
    // target. Stand in for it so the series is in the scrape.
    s.server()
        .metrics
        .target_up
        .with_label_values(&["192.0.2.10:5060/udp"])
        .set(1);
    let c = Client::new(s.api.unwrap(), None);
    let before = scrape(&c).await;

    // Traffic: static answers over UDP and TCP, a NODATA, and a forwarded name whose
    // upstream is down (SERVFAIL, an upstream error).
    const N: usize = 10;
    for _ in 0..N {
        client::udp(
            s.dns,
            &query("_sip._udp.pbx.example.org.", RecordType::SRV, Some(1232)),
        )
        .await;
    }
    client::tcp(
        s.dns,
        &query("server1.pbx.example.org.", RecordType::A, None),
    )
    .await;
    client::udp(
        s.dns,
        &query("server1.pbx.example.org.", RecordType::TXT, Some(1232)),
    )
    .await;
    client::udp(
        s.dns,
        &query("unknown-name-7f3a.example.com.", RecordType::A, Some(1232)),
    )
    .await;
    let after = scrape(&c).await;

    // Every promised series: present, with HELP text, a TYPE and its labels.
    for (name, labels, what) in SPEC_SERIES {
        let help = after
            .help
            .get(*name)
            .unwrap_or_else(|| panic!("{name} ({what}) is missing from /metrics:\n{}", after.text));
        assert!(help.len() > 10, "{name}: HELP text too thin: {help:?}");
        assert!(after.kind.contains_key(*name), "{name}: no TYPE");
        let mut got = after.label_names(name);
        got.retain(|l| l != "le");
        let mut want: Vec<String> = labels.iter().map(|l| (*l).to_owned()).collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}: labels");
    }

    // Naming rules (CoreDNS test/metric_naming_test.go, promlint): one prefix, counters end
    // in _total, histograms here are all durations in seconds, gauges never end in _total.
    for (name, kind) in &after.kind {
        assert!(name.starts_with("sipdns_"), "{name}: no sipdns_ prefix");
        assert!(after.help.contains_key(name), "{name}: no HELP");
        match kind.as_str() {
            "counter" => assert!(
                name.ends_with("_total"),
                "counter {name} must end in _total"
            ),
            "histogram" => assert!(
                name.ends_with("_seconds"),
                "histogram {name} must end in _seconds"
            ),
            "gauge" => assert!(
                !name.ends_with("_total"),
                "gauge {name} must not end in _total"
            ),
            other => panic!("{name}: unexpected type {other}"),
        }
    }
    // Bounded labels: the query names asked never show up as label values.
    for needle in ["pbx.example.org", "example.com", "unknown-name"] {
        assert!(
            !after.text.contains(needle),
            "a query name leaked into a label: {needle}"
        );
    }

    // The DNS counters move with the traffic.
    let moved = |name: &str, labels: &[&str]| after.sum(name, labels) - before.sum(name, labels);
    let total = (N + 3) as f64;
    assert_eq!(moved("sipdns_dns_queries_total", &[]), total);
    assert_eq!(
        moved(
            "sipdns_dns_queries_total",
            &["transport=\"udp\"", "qtype=\"SRV\"", "rcode=\"NOERROR\""]
        ),
        N as f64
    );
    assert_eq!(
        moved(
            "sipdns_dns_queries_total",
            &["transport=\"tcp\"", "qtype=\"A\""]
        ),
        1.0
    );
    assert_eq!(
        moved("sipdns_dns_queries_total", &["rcode=\"SERVFAIL\""]),
        1.0
    );
    assert_eq!(moved("sipdns_dns_query_duration_seconds_count", &[]), total);
    assert_eq!(
        moved(
            "sipdns_dns_query_duration_seconds_count",
            &["transport=\"tcp\""]
        ),
        1.0
    );
    assert_eq!(
        moved("sipdns_dns_answers_total", &["source=\"static\""]),
        (N + 2) as f64
    );
    assert_eq!(moved("sipdns_dns_answers_total", &[]), total);

    // promtool (Debian package `prometheus`) accepts the scrape.
    promtool_check(&after.text);
}

/// Runs `promtool check metrics` on `text`; fails (never skips) when promtool is missing.
fn promtool_check(text: &str) {
    let child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) => panic!(
            "promtool is needed to check the /metrics output but cannot be run ({e}). \
             Install it: apt-get install prometheus (Debian package `prometheus`)."
        ),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && report.trim().is_empty(),
        "promtool check metrics found problems ({}):\n{report}",
        out.status
    );
}

#[tokio::test]
async fn reloads_are_counted_by_result() {
    let s = server::start_with_api("", &[("pbx.example.org.yaml", ZONE)]).await;
    let c = Client::new(s.api.unwrap(), Some(server::API_TOKEN));
    let before = scrape(&c).await;
    assert_eq!(
        c.send("POST", "/api/v1/reload", &[], None).await.status,
        200
    );
    std::fs::write(s.dir.path().join("zones/pbx.example.org.yaml"), "zone: [").unwrap();
    assert_eq!(
        c.send("POST", "/api/v1/reload", &[], None).await.status,
        422
    );
    let after = scrape(&c).await;
    let moved = |r: &str| {
        let l = format!("result=\"{r}\"");
        after.sum("sipdns_config_reloads_total", &[&l])
            - before.sum("sipdns_config_reloads_total", &[&l])
    };
    // The file watcher may reload the same change too; never fewer than ours.
    assert!(moved("ok") >= 1.0);
    assert!(moved("error") >= 1.0);
    assert!(after.sum("sipdns_config_reload_timestamp_seconds", &[]) > 1.6e9);
}
