//! Target discovery: for every managed SIP domain, follow NAPTR -> SRV -> A/AAAA
//! (RFC 3263 §4.1, §4.2) through the same lookup path the DNS server uses, and add the
//! domain's own A/AAAA, the fallback targets and the extra targets from config.
//!
//! The lookup path is the [`Lookup`] trait, implemented by the lead's resolver (static
//! entries and upstream) and by a map in tests. Discovery reports the shortest TTL it saw,
//! clamped to [`MIN_REFRESH`, `MAX_REFRESH`], as the time to look again. A domain whose
//! lookups failed (SERVFAIL, timeout) is marked incomplete so the prober keeps that
//! domain's previous targets instead of dropping servers because DNS hiccupped.

use std::{
    collections::{BTreeSet, HashSet},
    time::Duration,
};

use futures::future::BoxFuture;

use crate::{
    config::{SipConfig, SipDomainConfig},
    record::{Answer, DomainName, RType, Rcode, RecordData},
    target::{Target, TargetKey, Transport},
};

/// The lookup path discovery uses (static entries and upstream, as the DNS server sees
/// them). Implementations answer one question; they must not apply the health policy.
pub trait Lookup: Send + Sync + 'static {
    /// Answers `(name, rtype)`.
    fn lookup<'a>(&'a self, name: &'a DomainName, rtype: RType) -> BoxFuture<'a, Answer>;
}

/// Shortest time between two discoveries.
pub const MIN_REFRESH: Duration = Duration::from_secs(1);
/// Longest time between two discoveries.
pub const MAX_REFRESH: Duration = Duration::from_secs(300);
/// Look again this soon after a failed lookup.
pub const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(10);
/// Refresh time of a negative answer without an SOA.
const NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// One lookup may take at most this long.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

// Bounds on what one domain can make the prober do (every loop is bounded).
const MAX_NAPTR: usize = 16;
const MAX_SRV: usize = 32;
const MAX_ADDRS: usize = 16;

/// Where a target came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// An SRV record's target (via NAPTR or the well-known SRV names).
    Srv,
    /// The SIP domain's own A/AAAA, on `a_port` / `a_transport`.
    Domain,
    /// A fallback (survivability) target from config.
    Fallback,
    /// An extra target from config.
    Extra,
}

/// One discovered target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Found {
    /// The target. For an extra target without a `host`, `target.host` is the domain.
    pub target: Target,
    /// Where it came from.
    pub origin: Origin,
    /// True if `target.host` is a real host name of this address (so it belongs in the
    /// snapshot's `by_host` and is the Request-URI host and TLS SNI); false for an extra
    /// target without a `host`, which is probed by address.
    pub named: bool,
}

/// The targets of one domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainTargets {
    /// The domain.
    pub domain: DomainName,
    /// Its targets (one per key and origin).
    pub found: Vec<Found>,
    /// False if some lookup failed, so targets may be missing.
    pub complete: bool,
}

/// The result of one discovery pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// Per domain, in config order.
    pub domains: Vec<DomainTargets>,
    /// When to look again.
    pub refresh_in: Duration,
}

struct Pass<'a> {
    lookup: &'a dyn Lookup,
    refresh: Duration,
    complete: bool,
}

impl Pass<'_> {
    fn saw_ttl(&mut self, ttl: u32) {
        self.refresh = self.refresh.min(Duration::from_secs(u64::from(ttl)));
    }

    /// One lookup, bounded in time; failures are noted and give no records.
    async fn ask(&mut self, name: &DomainName, rtype: RType) -> Vec<RecordData> {
        let Ok(answer) =
            tokio::time::timeout(LOOKUP_TIMEOUT, self.lookup.lookup(name, rtype)).await
        else {
            tracing::debug!(%name, %rtype, "discovery lookup timed out");
            self.complete = false;
            self.refresh = self.refresh.min(RETRY_AFTER_FAILURE);
            return Vec::new();
        };
        match answer.rcode {
            Rcode::NoError | Rcode::NxDomain => {}
            other => {
                tracing::debug!(%name, %rtype, rcode = other.metric_label(), "discovery lookup failed");
                self.complete = false;
                self.refresh = self.refresh.min(RETRY_AFTER_FAILURE);
                return Vec::new();
            }
        }
        let mut out = Vec::new();
        for rec in &answer.answers {
            if rec.rtype() == rtype {
                self.saw_ttl(rec.ttl);
                out.push(rec.data.clone());
            } else if rec.rtype() == RType::CNAME {
                self.saw_ttl(rec.ttl);
            }
        }
        if out.is_empty() {
            // RFC 2308 §5: a negative answer is cached for min(SOA TTL, SOA MINIMUM).
            let neg = answer.authority.iter().find_map(|r| match &r.data {
                RecordData::Soa { minimum, .. } => Some(r.ttl.min(*minimum)),
                _ => None,
            });
            match neg {
                Some(ttl) => self.saw_ttl(ttl),
                None => self.refresh = self.refresh.min(NEGATIVE_TTL),
            }
        }
        out
    }

    async fn addresses(&mut self, host: &DomainName) -> Vec<std::net::IpAddr> {
        let mut ips = Vec::new();
        for rtype in [RType::A, RType::AAAA] {
            for data in self.ask(host, rtype).await.into_iter().take(MAX_ADDRS) {
                if let Some(ip) = data.ip() {
                    ips.push(ip);
                }
            }
        }
        ips
    }
}

/// The SRV names to follow for a domain: from its SIP NAPTR records (RFC 3263 §4.1), or,
/// if it has none, the three well-known names (§4.2 "If no NAPTR records are found").
async fn srv_names(pass: &mut Pass<'_>, domain: &DomainName) -> Vec<(Transport, DomainName)> {
    let naptrs = pass.ask(domain, RType::NAPTR).await;
    let mut names = Vec::new();
    let mut seen_sip = false;
    for data in naptrs.into_iter().take(MAX_NAPTR) {
        let RecordData::Naptr {
            flags,
            services,
            replacement,
            ..
        } = data
        else {
            continue;
        };
        let Some(transport) = Transport::from_naptr_service(&services) else {
            continue;
        };
        seen_sip = true;
        // RFC 3263 §4.1: SIP NAPTR records carry the "s" flag (SRV lookup next).
        if !flags.eq_ignore_ascii_case("s") || replacement.is_root() {
            continue;
        }
        if !names.contains(&(transport, replacement.clone())) {
            names.push((transport, replacement));
        }
    }
    if !seen_sip {
        for t in Transport::ALL {
            if let Ok(name) = domain.prepend(t.srv_prefix()) {
                names.push((t, name));
            }
        }
    }
    names
}

async fn discover_domain(pass: &mut Pass<'_>, d: &SipDomainConfig) -> Vec<Found> {
    let mut found: Vec<Found> = Vec::new();
    let push = |found: &mut Vec<Found>, f: Found| {
        if !found.contains(&f) {
            found.push(f);
        }
    };
    for (transport, srv_name) in srv_names(pass, &d.name).await {
        let srvs = pass.ask(&srv_name, RType::SRV).await;
        let mut hosts: BTreeSet<(DomainName, u16)> = BTreeSet::new();
        for data in srvs.into_iter().take(MAX_SRV) {
            // RFC 2782: a target of "." means the service is not available there.
            if let RecordData::Srv { port, target, .. } = data
                && !target.is_root()
            {
                hosts.insert((target, port));
            }
        }
        for (host, port) in hosts {
            for ip in pass.addresses(&host).await {
                push(
                    &mut found,
                    Found {
                        target: Target {
                            key: TargetKey {
                                ip,
                                port,
                                transport,
                            },
                            host: host.clone(),
                            domain: d.name.clone(),
                            fallback: false,
                        },
                        origin: Origin::Srv,
                        named: true,
                    },
                );
            }
        }
    }
    // The domain's own A/AAAA are targets too (docs/probing.md, "Targets"), on a_port / a_transport.
    for ip in pass.addresses(&d.name).await {
        push(
            &mut found,
            Found {
                target: Target {
                    key: TargetKey {
                        ip,
                        port: d.a_port,
                        transport: d.a_transport,
                    },
                    host: d.name.clone(),
                    domain: d.name.clone(),
                    fallback: false,
                },
                origin: Origin::Domain,
                named: true,
            },
        );
    }
    found
}

/// The config targets of a domain (fallback and extra); no lookups needed.
pub fn config_targets(d: &SipDomainConfig) -> Vec<Found> {
    let mut found = Vec::new();
    for fb in &d.fallback {
        found.push(Found {
            target: Target {
                key: TargetKey {
                    ip: fb.address,
                    port: fb.port,
                    transport: fb.transport,
                },
                host: fb.host.clone(),
                domain: d.name.clone(),
                fallback: true,
            },
            origin: Origin::Fallback,
            named: true,
        });
    }
    for x in &d.targets {
        found.push(Found {
            target: Target {
                key: TargetKey {
                    ip: x.address,
                    port: x.port,
                    transport: x.transport,
                },
                host: x.host.clone().unwrap_or_else(|| d.name.clone()),
                domain: d.name.clone(),
                fallback: false,
            },
            origin: Origin::Extra,
            named: x.host.is_some(),
        });
    }
    found
}

/// True for the address blocks reserved for documentation (RFC 5737: 192.0.2.0/24,
/// 198.51.100.0/24, 203.0.113.0/24; RFC 3849: 2001:db8::/32). No real SIP server lives
/// there, so the prober never probes them (they stay `unknown`, handed out as up) — which
/// also lets the shipped example config run anywhere without sending a packet off the
/// machine.
pub fn is_documentation(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let o = v4.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

/// Discovers the targets of every SIP domain in `cfg`.
pub async fn discover(cfg: &SipConfig, lookup: &dyn Lookup) -> Discovery {
    let mut pass = Pass {
        lookup,
        refresh: MAX_REFRESH,
        complete: true,
    };
    let mut domains = Vec::with_capacity(cfg.domains.len());
    for d in &cfg.domains {
        pass.complete = true;
        let mut found = discover_domain(&mut pass, d).await;
        // A set, not `Vec::contains`: a domain may list thousands of targets, and this runs
        // on every rediscovery.
        let mut seen: HashSet<Found> = found.iter().cloned().collect();
        for f in config_targets(d) {
            if seen.insert(f.clone()) {
                found.push(f);
            }
        }
        domains.push(DomainTargets {
            domain: d.name.clone(),
            found,
            complete: pass.complete,
        });
    }
    Discovery {
        domains,
        refresh_in: pass.refresh.clamp(MIN_REFRESH, MAX_REFRESH),
    }
}

#[cfg(test)]
pub(crate) mod tests {
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
}
