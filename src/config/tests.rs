use std::{net::IpAddr, path::Path, time::Duration};

use super::*;
use crate::record::DomainName;

#[test]
fn empty_config_gets_defaults() {
    let c = Config::from_text(Path::new("/etc/sipdns/x.yaml"), "{}\n").unwrap();
    assert_eq!(c.dns.max_udp_payload, 1232);
    assert_eq!(c.zones.dir, Path::new("/etc/sipdns/zones"));
    assert_eq!(c.sip.probe.fall, 3);
}

#[test]
fn unknown_key_is_an_error_with_line() {
    let text = "dns:\n  listen: [\"127.0.0.1:5353\"]\n  lisen: []\n";
    let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
    let msg = e.to_string();
    assert!(msg.starts_with("c.yaml:3:"), "{msg}");
    assert!(msg.contains("lisen"), "{msg}");
}

#[test]
fn semantic_errors_name_field_and_line() {
    let text = "\
sip:
  domains:
    - name: pbx.example.org
      ttl: 0
      all_down: fallback
";
    let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
    assert_eq!(e.errors.len(), 2, "{e}");
    let ttl = e
        .errors
        .iter()
        .find(|x| x.field.as_deref() == Some("sip.domains[0].ttl"))
        .unwrap();
    assert_eq!(ttl.line, Some(4));
    let fb = e
        .errors
        .iter()
        .find(|x| x.field.as_deref() == Some("sip.domains[0].all_down"))
        .unwrap();
    assert_eq!(fb.line, Some(5));
}

#[test]
fn bad_values_name_their_field() {
    for (text, needle) in [
        ("dns:\n  allow: [\"10.0.0.0/33\"]\n", "allow"),
        ("upstream:\n  timeout: fast\n", "not a duration"),
        (
            "sip:\n  probe:\n    up_codes: [\"200-799\"]\n",
            "not a SIP reply code",
        ),
        (
            "sip:\n  domains:\n    - name: \"bad name.org\"\n",
            "invalid character",
        ),
        (
            "sip:\n  domains:\n    - name: a.example.org\n      a_transport: sctp\n",
            "sctp",
        ),
    ] {
        let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(needle), "{text}: {msg}");
        assert!(msg.starts_with("c.yaml:"), "{msg}");
        assert!(e.errors[0].line.is_some(), "{msg}");
    }
}

#[test]
fn domain_of_picks_most_specific() {
    let mut c = SipConfig::default();
    c.domains
        .push(SipDomainConfig::new("example.org".parse().unwrap()));
    c.domains
        .push(SipDomainConfig::new("pbx.example.org".parse().unwrap()));
    let n: DomainName = "_sip._udp.pbx.example.org".parse().unwrap();
    assert_eq!(c.domain_of(&n).unwrap().name.as_str(), "pbx.example.org.");
    let other: DomainName = "example.net".parse().unwrap();
    assert!(c.domain_of(&other).is_none());
}

#[test]
fn probe_timeout_must_be_shorter_than_interval_and_ca_file_readable() {
    let text = "sip:\n  probe:\n    interval: 1s\n    timeout: 1s\n    tls:\n      ca_file: /nonexistent/ca.pem\n";
    let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
    let fields: Vec<_> = e.errors.iter().filter_map(|x| x.field.clone()).collect();
    assert!(fields.contains(&"sip.probe.timeout".to_owned()), "{e}");
    assert!(fields.contains(&"sip.probe.tls.ca_file".to_owned()), "{e}");
    let ca = e
        .errors
        .iter()
        .find(|x| x.field.as_deref() == Some("sip.probe.tls.ca_file"))
        .unwrap();
    assert_eq!(ca.line, Some(6));
}

#[test]
fn rate_limit_defaults_exempt_loopback_and_bad_values_name_their_field() {
    let c = Config::from_text(Path::new("c.yaml"), "{}\n").unwrap();
    let rl = &c.dns.rate_limit;
    assert_eq!((rl.responses_per_second, rl.burst, rl.slip), (100, 200, 2));
    assert_eq!(rl.max_clients, 10_000);
    assert!(
        rl.exempt
            .iter()
            .any(|n| n.contains(&"127.0.0.1".parse::<IpAddr>().unwrap()))
    );
    assert!(
        rl.exempt
            .iter()
            .any(|n| n.contains(&"::1".parse::<IpAddr>().unwrap()))
    );
    // Off: no other key matters.
    let off = "dns:\n  rate_limit:\n    responses_per_second: 0\n    burst: 0\n";
    assert!(Config::from_text(Path::new("c.yaml"), off).is_ok());
    let text =
        "dns:\n  rate_limit:\n    responses_per_second: 10\n    burst: 0\n    max_clients: 0\n";
    let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
    let fields: Vec<_> = e.errors.iter().filter_map(|x| x.field.as_deref()).collect();
    assert_eq!(
        fields,
        vec!["dns.rate_limit.burst", "dns.rate_limit.max_clients"],
        "{e}"
    );
    assert_eq!(e.errors[0].line, Some(4));
    let typo = "dns:\n  rate_limit:\n    per_second: 10\n";
    let e = Config::from_text(Path::new("c.yaml"), typo).unwrap_err();
    assert!(e.to_string().contains("per_second"), "{e}");
}

#[test]
fn udp_threads_default_to_one_per_two_cores_and_are_bounded() {
    let c = Config::from_text(Path::new("c.yaml"), "{}\n").unwrap();
    assert_eq!(c.dns.udp_threads, None);
    assert_eq!(c.dns.udp_loops(1), 1);
    assert_eq!(c.dns.udp_loops(2), 1);
    assert_eq!(c.dns.udp_loops(8), 4);
    assert_eq!(c.dns.udp_loops(1000), MAX_UDP_THREADS);
    let c = Config::from_text(Path::new("c.yaml"), "dns:\n  udp_threads: 3\n").unwrap();
    assert_eq!(c.dns.udp_loops(2), 3);
    let text = "dns:\n  listen: [\"127.0.0.1:5353\"]\n  udp_threads: 0\n";
    let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains("c.yaml:3"), "{msg}");
    assert!(msg.contains("dns.udp_threads"), "{msg}");
    assert!(msg.contains("between 1 and 64"), "{msg}");
}

#[test]
fn a_reload_reuses_the_parse_of_unchanged_config_text_but_validates_it_again() {
    let path = Path::new("/etc/sipdns/c.yaml");
    let text = "dns:\n  max_inflight: 100\n";
    let mut previous = Config::from_text(path, text).unwrap();
    // Not what `text` says: if it comes back, the parse was reused.
    previous.dns.max_inflight = 7;
    let c = Config::from_text_reusing(path, text, Some((text, &previous))).unwrap();
    assert_eq!(c.dns.max_inflight, 7);
    // Other text is parsed.
    let other = "dns:\n  max_inflight: 200\n";
    let c = Config::from_text_reusing(path, other, Some((text, &previous))).unwrap();
    assert_eq!(c.dns.max_inflight, 200);
    // A reused config is still validated.
    previous.dns.max_inflight = 0;
    let e = Config::from_text_reusing(path, text, Some((text, &previous))).unwrap_err();
    assert!(e.to_string().contains("dns.max_inflight"), "{e}");
}

#[test]
fn phones_register_refresh_hint_warns_about_a_longer_policy_ttl() {
    let text = "\
phones:
  register_refresh: 27s
sip:
  domains:
    - name: pbx.example.org
      ttl: 30
    - name: short.example.org
      ttl: 5
      all_down_includes_drained: true
";
    let c = Config::from_text(Path::new("c.yaml"), text).unwrap();
    assert_eq!(c.phones.register_refresh, Some(Duration::from_secs(27)));
    assert!(c.sip.domains[1].all_down_includes_drained);
    assert!(!c.sip.domains[0].all_down_includes_drained);
    let w = validate::warnings(&c);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].field, "sip.domains[0].ttl");
    assert!(w[0].reason.contains("27s"), "{}", w[0].reason);
    // No hint, no warning.
    let c = Config::from_text(
        Path::new("c.yaml"),
        "sip:\n  domains:\n    - name: pbx.example.org\n      ttl: 3600\n",
    )
    .unwrap();
    assert!(validate::warnings(&c).is_empty());
    // A bad duration names itself.
    let e =
        Config::from_text(Path::new("c.yaml"), "phones:\n  register_refresh: soon\n").unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");
}

#[test]
fn security_limits_default_and_bad_values_name_their_field() {
    let c = Config::from_text(Path::new("c.yaml"), "{}\n").unwrap();
    assert_eq!(c.api.max_connections, 64);
    assert_eq!(c.api.request_timeout, Duration::from_secs(10));
    assert_eq!(c.zones.max_file_size, 64 << 20);
    // No ca_file: the system store; a ca_file alone: only it.
    assert_eq!(c.sip.probe.tls.effective_trust(), TlsTrust::System);
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "-----BEGIN CERTIFICATE-----\n").unwrap();
    let with_ca = |trust: &str| {
        format!(
            "sip:\n  probe:\n    tls:\n      ca_file: {}\n{trust}",
            ca.display()
        )
    };
    let c = Config::from_text(Path::new("c.yaml"), &with_ca("")).unwrap();
    assert_eq!(c.sip.probe.tls.effective_trust(), TlsTrust::File);
    let c = Config::from_text(Path::new("c.yaml"), &with_ca("      trust: both\n")).unwrap();
    assert_eq!(c.sip.probe.tls.effective_trust(), TlsTrust::Both);
    for (text, field) in [
        ("api:\n  max_connections: 0\n", "api.max_connections"),
        ("api:\n  request_timeout: 0s\n", "api.request_timeout"),
        ("zones:\n  max_file_size: 0\n", "zones.max_file_size"),
        (
            "sip:\n  probe:\n    tls:\n      trust: file\n",
            "sip.probe.tls.trust",
        ),
        (&with_ca("      trust: system\n"), "sip.probe.tls.trust"),
    ] {
        let e = Config::from_text(Path::new("c.yaml"), text).unwrap_err();
        assert!(
            e.errors.iter().any(|x| x.field.as_deref() == Some(field)),
            "{text}: {e}"
        );
    }
}

#[test]
fn secondary_zones_parse_and_bad_entries_name_their_field() {
    let good = "\
zones:
  secondary:
    - zone: pbx.example.org
      primaries: [\"192.0.2.53:53\"]
      tsig: { name: office-key, algorithm: hmac-sha256, secret_file: tsig.key }
      refresh: 5m
    - catalog: catalog.example.net
      primaries: [\"192.0.2.53:53\"]
  catalog_groups:
    branch: { mode: fallback }
";
    let c = Config::from_text(Path::new("/etc/sipdns/c.yaml"), good).unwrap();
    assert_eq!(c.zones.secondary.len(), 2);
    assert_eq!(c.zones.secondary_dir, Path::new("/etc/sipdns/secondary"));
    let tsig = c.zones.secondary[0].tsig.as_ref().unwrap();
    assert_eq!(tsig.secret_file, Path::new("/etc/sipdns/tsig.key"));
    assert_eq!(c.zones.secondary[0].refresh, Some(Duration::from_secs(300)));
    assert_eq!(c.zones.catalog_groups["branch"].mode, MergeMode::Fallback);

    let bad = "\
zones:
  secondary:
    - zone: pbx.example.org
      catalog: catalog.example.net
      primaries: [\"192.0.2.53:53\"]
    - zone: office.example.org
      primaries: []
      retry: 10ms
  catalog_groups:
    branch: { sip_policy: pbx.example.org }
";
    let e = Config::from_text(Path::new("c.yaml"), bad).unwrap_err();
    let fields: Vec<&str> = e.errors.iter().filter_map(|x| x.field.as_deref()).collect();
    for want in [
        "zones.secondary[0]",
        "zones.secondary[1].primaries",
        "zones.secondary[1].retry",
        "zones.catalog_groups.branch.sip_policy",
    ] {
        assert!(fields.contains(&want), "{want} not in {fields:?}: {e}");
    }
}
