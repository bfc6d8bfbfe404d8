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
    collections::{BTreeSet, HashMap, HashSet},
    net::IpAddr,
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

/// Domains discovered at once (a thousand catalog members do not all ask upstream at the
/// same moment).
const CONCURRENT_DOMAINS: usize = 16;

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

    async fn addresses(&mut self, host: &DomainName) -> Vec<IpAddr> {
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
pub fn is_documentation(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            matches!(
                (o[0], o[1], o[2]),
                (192, 0, 2) | (198, 51, 100) | (203, 0, 113)
            )
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            s[0] == 0x2001 && s[1] == 0x0db8
        }
    }
}

/// Discovers the targets of every SIP domain in `cfg`.
pub async fn discover(cfg: &SipConfig, lookup: &dyn Lookup) -> Discovery {
    use futures::StreamExt;
    // Several domains at once, their results in config order: a domain whose lookups time
    // out does not hold up the others.
    // (Collected first: a stream over the `map` closure is not `Send` for every lifetime.)
    let each: Vec<_> = cfg
        .domains
        .iter()
        .map(|d| discover_one(lookup, d))
        .collect();
    let per_domain: Vec<(DomainTargets, Duration)> = futures::stream::iter(each)
        .buffered(CONCURRENT_DOMAINS)
        .collect()
        .await;
    let refresh = per_domain
        .iter()
        .map(|(_, r)| *r)
        .min()
        .unwrap_or(MAX_REFRESH);
    Discovery {
        domains: per_domain.into_iter().map(|(d, _)| d).collect(),
        refresh_in: refresh.clamp(MIN_REFRESH, MAX_REFRESH),
    }
}

/// One domain's targets (discovered, then those of the config), and when to look again.
async fn discover_one(lookup: &dyn Lookup, d: &SipDomainConfig) -> (DomainTargets, Duration) {
    let mut pass = Pass {
        lookup,
        refresh: MAX_REFRESH,
        complete: true,
    };
    let mut found = discover_domain(&mut pass, d).await;
    // A set, not `Vec::contains`: a domain may list thousands of targets, and this runs on
    // every rediscovery.
    let mut seen: HashSet<Found> = found.iter().cloned().collect();
    for f in config_targets(d) {
        if seen.insert(f.clone()) {
            found.push(f);
        }
    }
    let targets = DomainTargets {
        domain: d.name.clone(),
        found,
        complete: pass.complete,
    };
    (targets, pass.refresh)
}

/// What the prober knows of one target from discovery, merged over every domain and name
/// it was found under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetFacts {
    /// Where it came from (the first of its origins, named ones first).
    pub origin: Origin,
    /// True if `host` is a real host name of the address (see [`Found::named`]).
    pub named: bool,
    /// The host name probed: Request-URI host and TLS SNI when `named`.
    pub host: DomainName,
    /// Every real host name of this address.
    pub hosts: BTreeSet<DomainName>,
    /// The SIP domains it serves.
    pub domains: BTreeSet<DomainName>,
    /// True for fallback (survivability) targets.
    pub fallback: bool,
}

impl TargetFacts {
    /// The Request-URI host: the host name, or the address (IPv6 in brackets).
    pub fn uri_host(&self, ip: IpAddr) -> String {
        if self.named {
            self.host.as_str().trim_end_matches('.').to_owned()
        } else {
            match ip {
                IpAddr::V4(ip) => ip.to_string(),
                IpAddr::V6(ip) => format!("[{ip}]"),
            }
        }
    }
}

/// One discovery pass merged with what the earlier passes found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Merged {
    /// Every target to probe, with what is known of it.
    pub targets: HashMap<TargetKey, TargetFacts>,
    /// Targets per host name (sorted), for the health snapshot.
    pub by_host: HashMap<DomainName, Vec<TargetKey>>,
    /// The SIP domain each host name was first found under, for the health snapshot.
    pub host_domain: HashMap<DomainName, DomainName>,
    /// Per domain, what it has now: the input of the next merge.
    pub last_found: HashMap<DomainName, Vec<Found>>,
}

/// Merges a discovery pass with `last_found` (the previous merge's): a domain whose
/// lookups all succeeded has exactly what was found; one with failed lookups keeps what it
/// had and adds what was found, so a DNS hiccup drops no server. Targets are merged per
/// key, since a target may serve several domains under several names. Pure.
pub fn merge(last_found: &HashMap<DomainName, Vec<Found>>, d: Discovery) -> Merged {
    let mut per_key: HashMap<TargetKey, Vec<Found>> = HashMap::new();
    let mut kept: HashMap<DomainName, Vec<Found>> = HashMap::new();
    for dom in d.domains {
        let found = if dom.complete {
            dom.found
        } else {
            let mut keep = last_found.get(&dom.domain).cloned().unwrap_or_default();
            let mut seen: HashSet<Found> = keep.iter().cloned().collect();
            for f in dom.found {
                if seen.insert(f.clone()) {
                    keep.push(f);
                }
            }
            keep
        };
        for f in &found {
            per_key.entry(f.target.key).or_default().push(f.clone());
        }
        kept.insert(dom.domain, found);
    }
    kept.retain(|dom, _| per_key.values().flatten().any(|f| &f.target.domain == dom));

    let mut out = Merged {
        last_found: kept,
        ..Merged::default()
    };
    for (key, founds) in per_key {
        let Some(first) = founds.iter().min_by_key(|f| (!f.named, f.origin)) else {
            continue;
        };
        let hosts: BTreeSet<DomainName> = founds
            .iter()
            .filter(|f| f.named)
            .map(|f| f.target.host.clone())
            .collect();
        let domains: BTreeSet<DomainName> =
            founds.iter().map(|f| f.target.domain.clone()).collect();
        for h in &hosts {
            out.by_host.entry(h.clone()).or_default().push(key);
            if let Some(d) = domains.first() {
                out.host_domain
                    .entry(h.clone())
                    .or_insert_with(|| d.clone());
            }
        }
        let facts = TargetFacts {
            origin: first.origin,
            named: first.named,
            host: first.target.host.clone(),
            hosts,
            domains,
            fallback: founds.iter().any(|f| f.target.fallback),
        };
        out.targets.insert(key, facts);
    }
    for keys in out.by_host.values_mut() {
        keys.sort();
    }
    out
}

#[cfg(test)]
pub(crate) mod tests;
