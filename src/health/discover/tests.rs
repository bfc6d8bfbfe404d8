//! Discovery tests against a map lookup.

use std::{collections::HashMap, net::IpAddr, sync::Mutex};

use super::*;
use crate::{
    config::{ExtraTargetConfig, FallbackTargetConfig},
    record::{Rec, Source},
};

/// A lookup answering from a map; unknown names are NXDOMAIN.
#[derive(Default)]
pub(crate) struct MapLookup {
    pub(crate) answers: Mutex<HashMap<(DomainName, RType), Answer>>,
    /// Lookups answered so far.
    pub(crate) asked: std::sync::atomic::AtomicUsize,
}

impl MapLookup {
    pub(crate) fn add(&self, rec: Rec) {
        let key = (rec.name.clone(), rec.rtype());
        let mut map = self.answers.lock().unwrap();
        map.entry(key)
            .or_insert_with(|| Answer::records(Vec::new(), Source::Static))
            .answers
            .push(rec);
    }

    pub(crate) fn set(&self, name: &str, rtype: RType, answer: Answer) {
        self.answers
            .lock()
            .unwrap()
            .insert((n(name), rtype), answer);
    }

    pub(crate) fn clear(&self, name: &str, rtype: RType) {
        self.answers.lock().unwrap().remove(&(n(name), rtype));
    }
}

impl Lookup for MapLookup {
    fn lookup<'a>(&'a self, name: &'a DomainName, rtype: RType) -> BoxFuture<'a, Answer> {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let a = self
            .answers
            .lock()
            .unwrap()
            .get(&(name.clone(), rtype))
            .cloned()
            .unwrap_or_else(|| Answer::empty(Rcode::NxDomain, Source::Upstream));
        Box::pin(async move { a })
    }
}

#[test]
fn documentation_blocks_are_recognised() {
    for ip in ["192.0.2.10", "198.51.100.1", "203.0.113.9", "2001:db8::10"] {
        assert!(is_documentation(ip.parse().unwrap()), "{ip}");
    }
    for ip in ["127.0.0.1", "192.0.3.1", "10.0.0.1", "::1", "2001:db9::1"] {
        assert!(!is_documentation(ip.parse().unwrap()), "{ip}");
    }
}

pub(crate) fn n(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

pub(crate) fn naptr(owner: &str, ttl: u32, service: &str, replacement: &str) -> Rec {
    Rec::new(
        n(owner),
        ttl,
        RecordData::Naptr {
            order: 10,
            preference: 10,
            flags: "s".to_owned(),
            services: service.to_owned(),
            regexp: String::new(),
            replacement: n(replacement),
        },
    )
}

pub(crate) fn srv(owner: &str, ttl: u32, port: u16, target: &str) -> Rec {
    Rec::new(
        n(owner),
        ttl,
        RecordData::Srv {
            priority: 10,
            weight: 10,
            port,
            target: n(target),
        },
    )
}

pub(crate) fn a(owner: &str, ttl: u32, ip: &str) -> Rec {
    let data = match ip.parse::<IpAddr>().unwrap() {
        IpAddr::V4(v4) => RecordData::A(v4),
        IpAddr::V6(v6) => RecordData::Aaaa(v6),
    };
    Rec::new(n(owner), ttl, data)
}

fn keys(d: &Discovery) -> Vec<String> {
    let mut v: Vec<String> = d.domains[0]
        .found
        .iter()
        .map(|f| format!("{} {} {:?}", f.target.key, f.target.host, f.origin))
        .collect();
    v.sort();
    v
}

fn cfg(domain: &str) -> SipConfig {
    SipConfig {
        domains: vec![SipDomainConfig::new(n(domain))],
        ..SipConfig::default()
    }
}

#[tokio::test]
async fn naptr_srv_a_aaaa_are_followed() {
    let l = MapLookup::default();
    l.add(naptr(
        "pbx.example.org",
        300,
        "SIP+D2U",
        "_sip._udp.pbx.example.org",
    ));
    l.add(naptr(
        "pbx.example.org",
        300,
        "SIPS+D2T",
        "_sips._tcp.pbx.example.org",
    ));
    l.add(naptr(
        "pbx.example.org",
        300,
        "E2U+sip",
        "ignored.example.org",
    ));
    l.add(srv(
        "_sip._udp.pbx.example.org",
        120,
        5060,
        "s1.example.org",
    ));
    l.add(srv(
        "_sip._udp.pbx.example.org",
        120,
        5070,
        "s2.example.org",
    ));
    l.add(srv(
        "_sips._tcp.pbx.example.org",
        120,
        5061,
        "s1.example.org",
    ));
    // Not named by a NAPTR: not followed.
    l.add(srv(
        "_sip._tcp.pbx.example.org",
        120,
        5060,
        "s3.example.org",
    ));
    l.add(a("s1.example.org", 60, "192.0.2.1"));
    l.add(a("s1.example.org", 60, "2001:db8::1"));
    l.add(a("s2.example.org", 30, "192.0.2.2"));
    l.add(a("s3.example.org", 30, "192.0.2.3"));
    l.add(a("pbx.example.org", 45, "192.0.2.9"));
    let d = discover(&cfg("pbx.example.org"), &l).await;
    assert_eq!(
        keys(&d),
        vec![
            "192.0.2.1:5060/udp s1.example.org. Srv",
            "192.0.2.1:5061/tls s1.example.org. Srv",
            "192.0.2.2:5070/udp s2.example.org. Srv",
            "192.0.2.9:5060/udp pbx.example.org. Domain",
            "[2001:db8::1]:5060/udp s1.example.org. Srv",
            "[2001:db8::1]:5061/tls s1.example.org. Srv",
        ]
    );
    assert!(d.domains[0].complete);
    assert_eq!(d.refresh_in, Duration::from_secs(30), "shortest TTL seen");
}

#[tokio::test]
async fn without_naptr_the_three_srv_names_are_tried() {
    let l = MapLookup::default();
    l.add(srv(
        "_sip._tcp.pbx.example.org",
        600,
        5060,
        "s1.example.org",
    ));
    l.add(srv(
        "_sips._tcp.pbx.example.org",
        600,
        5061,
        "s1.example.org",
    ));
    l.add(srv("_sip._udp.pbx.example.org", 600, 0, "."));
    l.add(a("s1.example.org", 600, "192.0.2.1"));
    let d = discover(&cfg("pbx.example.org"), &l).await;
    assert_eq!(
        keys(&d),
        vec![
            "192.0.2.1:5060/tcp s1.example.org. Srv",
            "192.0.2.1:5061/tls s1.example.org. Srv",
        ]
    );
    // NXDOMAIN for the domain's A without SOA: the negative refresh; TTLs clamped.
    assert_eq!(d.refresh_in, Duration::from_secs(60));
}

#[tokio::test]
async fn config_targets_are_added_and_failures_marked() {
    let l = MapLookup::default();
    l.set(
        "pbx.example.org",
        RType::NAPTR,
        Answer::empty(Rcode::ServFail, Source::Upstream),
    );
    let mut c = cfg("pbx.example.org");
    c.domains[0].fallback.push(FallbackTargetConfig {
        host: n("sbc.example.org"),
        address: "192.0.2.50".parse().unwrap(),
        port: 5060,
        transport: Transport::Udp,
        weight: 0,
    });
    c.domains[0].targets.push(ExtraTargetConfig {
        address: "192.0.2.60".parse().unwrap(),
        port: 5080,
        transport: Transport::Tcp,
        host: None,
    });
    let d = discover(&c, &l).await;
    assert!(!d.domains[0].complete);
    assert_eq!(d.refresh_in, RETRY_AFTER_FAILURE);
    let f = &d.domains[0].found;
    assert_eq!(f.len(), 2);
    assert!(f[0].target.fallback && f[0].origin == Origin::Fallback && f[0].named);
    assert_eq!(f[1].origin, Origin::Extra);
    assert!(!f[1].named);
    assert_eq!(f[1].target.key.to_string(), "192.0.2.60:5080/tcp");
}

fn found(domain: &str, host: &str, ip: &str, origin: Origin, named: bool) -> Found {
    Found {
        target: Target {
            key: TargetKey {
                ip: ip.parse().unwrap(),
                port: 5060,
                transport: Transport::Udp,
            },
            host: n(host),
            domain: n(domain),
            fallback: origin == Origin::Fallback,
        },
        origin,
        named,
    }
}

fn pass(domains: Vec<(&str, Vec<Found>, bool)>) -> Discovery {
    Discovery {
        domains: domains
            .into_iter()
            .map(|(d, found, complete)| DomainTargets {
                domain: n(d),
                found,
                complete,
            })
            .collect(),
        refresh_in: MIN_REFRESH,
    }
}

#[test]
fn merge_joins_a_target_over_domains_and_names() {
    let a = found(
        "a.example.org",
        "sip1.example.net",
        "192.0.2.1",
        Origin::Srv,
        true,
    );
    let b = found(
        "b.example.org",
        "b.example.org",
        "192.0.2.1",
        Origin::Extra,
        false,
    );
    let m = merge(
        &HashMap::new(),
        pass(vec![
            ("a.example.org", vec![a.clone()], true),
            ("b.example.org", vec![b], true),
        ]),
    );
    assert_eq!(m.targets.len(), 1);
    let facts = &m.targets[&a.target.key];
    assert_eq!(facts.origin, Origin::Srv);
    assert!(facts.named);
    assert_eq!(facts.host, n("sip1.example.net"));
    assert_eq!(facts.domains.len(), 2);
    assert_eq!(facts.uri_host(a.target.key.ip), "sip1.example.net");
    assert_eq!(m.by_host[&n("sip1.example.net")], vec![a.target.key]);
    assert_eq!(m.host_domain[&n("sip1.example.net")], n("a.example.org"));
    assert!(
        !m.by_host.contains_key(&n("b.example.org")),
        "unnamed: probed by address"
    );
}

#[test]
fn merge_keeps_an_incomplete_domains_targets() {
    let one = found(
        "a.example.org",
        "sip1.example.org",
        "192.0.2.1",
        Origin::Srv,
        true,
    );
    let two = found(
        "a.example.org",
        "sip2.example.org",
        "192.0.2.2",
        Origin::Srv,
        true,
    );
    let first = merge(
        &HashMap::new(),
        pass(vec![(
            "a.example.org",
            vec![one.clone(), two.clone()],
            true,
        )]),
    );
    // A lookup failed: sip2 was not seen this time, but is kept.
    let second = merge(
        &first.last_found,
        pass(vec![("a.example.org", vec![one.clone()], false)]),
    );
    assert_eq!(second.targets.len(), 2);
    // Complete again without sip2: dropped.
    let third = merge(
        &second.last_found,
        pass(vec![("a.example.org", vec![one.clone()], true)]),
    );
    assert_eq!(third.targets.len(), 1);
    assert!(third.targets.contains_key(&one.target.key));
    // A domain with nothing left is forgotten.
    let fourth = merge(
        &third.last_found,
        pass(vec![("a.example.org", vec![], true)]),
    );
    assert!(fourth.targets.is_empty() && fourth.last_found.is_empty());
}

/// Answers `fast` from a map at once; every lookup of any other name hangs (until the
/// discovery's own timeout).
struct HangingLookup {
    fast: MapLookup,
    fast_domain: DomainName,
}

impl Lookup for HangingLookup {
    fn lookup<'a>(&'a self, name: &'a DomainName, rtype: RType) -> BoxFuture<'a, Answer> {
        if name.is_in(&self.fast_domain) {
            self.fast.lookup(name, rtype)
        } else {
            Box::pin(std::future::pending())
        }
    }
}

#[tokio::test(start_paused = true)]
async fn domains_are_discovered_side_by_side_and_reported_in_config_order() {
    let fast = MapLookup::default();
    fast.add(srv(
        "_sip._udp.fast.example.org",
        300,
        5060,
        "sip.fast.example.org",
    ));
    fast.add(a("sip.fast.example.org", 300, "192.0.2.10"));
    let l = HangingLookup {
        fast,
        fast_domain: n("fast.example.org"),
    };
    // Eight domains whose every lookup hangs, then the one that answers.
    let mut c = SipConfig::default();
    for i in 0..8 {
        c.domains
            .push(SipDomainConfig::new(n(&format!("slow{i}.example.org"))));
    }
    c.domains.push(SipDomainConfig::new(n("fast.example.org")));

    let one = {
        let t = tokio::time::Instant::now();
        let alone = SipConfig {
            domains: vec![c.domains[0].clone()],
            ..SipConfig::default()
        };
        let d = discover(&alone, &l).await;
        assert!(!d.domains[0].complete);
        t.elapsed()
    };
    let t = tokio::time::Instant::now();
    let d = discover(&c, &l).await;
    let all = t.elapsed();
    // One after the other, nine domains would take eight times one slow domain's timeouts.
    assert!(all < one * 2, "one slow domain {one:?}, all {all:?}");
    let names: Vec<String> = d.domains.iter().map(|d| d.domain.to_string()).collect();
    assert_eq!(names.len(), 9);
    assert_eq!(names[0], "slow0.example.org.");
    assert_eq!(names[8], "fast.example.org.");
    assert!(d.domains[8].complete);
    assert_eq!(
        d.domains[8].found[0].target.key.to_string(),
        "192.0.2.10:5060/udp"
    );
}
