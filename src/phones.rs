//! Provisioning snippets for phones (`sipdns phones yealink|linphone`): the phone settings
//! that pair with sipdns, and for Yealink the phone's own static DNS cache filled with what
//! sipdns serves for the domain (issue 15, point 5).
//!
//! It works **offline**, like `sipdns check`: it reads the config and the zone files and
//! needs no running server, so a provisioning pipeline can make the phones' files from the
//! same repository as sipdns' zones. It therefore knows only the static records (`zones/`),
//! not those from upstream, and no health: the static cache is the phone's last resort when
//! its DNS server is unreachable, so every server is listed, in the order sipdns hands
//! them out while all are up.
//!
//! Limits of the Yealink static cache (seeds, "Static DNS Cache"): `dns_cache_naptr.X.*`,
//! `dns_cache_srv.X.*` and `dns_cache_a.X.*` with X from 1 to 12, each `ttl` an integer
//! from 30 to 2147483647; `account.X.sip_server.Y.failback_timeout` 0 or 60..65535.

use std::fmt::Write as _;

use crate::{
    config::{Config, SipDomainConfig},
    policy,
    record::{DomainName, RType, Rec, RecordData},
    target::Transport,
    zones::{ZoneAnswer, ZoneStore},
};

/// Most entries of each static cache type a Yealink phone takes (X = 1..12).
pub const YEALINK_MAX_ENTRIES: usize = 12;
/// Smallest TTL of a Yealink static cache entry.
pub const YEALINK_MIN_TTL: u32 = 30;
/// Largest TTL of a Yealink static cache entry.
pub const YEALINK_MAX_TTL: u32 = 2_147_483_647;
/// Smallest non-zero `failback_timeout` (1..59 are taken as 60).
pub const YEALINK_MIN_FAILBACK_TIMEOUT: u32 = 60;
/// Yealink accounts are numbered from 1; the largest models have 16.
pub const YEALINK_MAX_ACCOUNT: u32 = 16;

/// Why no snippet could be made.
#[derive(Debug, thiserror::Error)]
pub enum PhonesError {
    /// The domain is not in `sip.domains`.
    #[error("{0} is not a managed SIP domain (sip.domains in the config)")]
    NotManaged(String),
    /// The zones have nothing for the domain.
    #[error(
        "{0}: no static NAPTR, SRV or A records in the zones (this command works offline and \
         does not ask upstream; put the records in zones/ or provision the phone by hand)"
    )]
    NoRecords(String),
    /// Account number out of range.
    #[error("--account {0}: Yealink accounts are numbered 1 to {YEALINK_MAX_ACCOUNT}")]
    Account(u32),
    /// The domain name does not parse.
    #[error("--domain {0:?}: not a domain name")]
    Domain(String),
    /// The config or a zone could not be loaded.
    #[error(transparent)]
    Load(#[from] crate::state::LoadError),
}

/// What sipdns serves for a domain from its zones, in the order a phone follows it
/// (RFC 3263: NAPTR by order and preference, each SRV set by priority, the targets'
/// addresses), with the TTL phones get (`min(record, policy ttl)`).
#[derive(Debug, Clone)]
pub struct Chain {
    /// The SIP domain's settings.
    pub domain: SipDomainConfig,
    /// SIP NAPTR records (`s` flag), best first.
    pub naptr: Vec<Rec>,
    /// True if sipdns synthesizes them (`synthesize_naptr`, no NAPTR in the zones).
    pub synthesized: bool,
    /// SRV records, set by set in NAPTR order, each set by priority.
    pub srv: Vec<Rec>,
    /// A records: of the SRV targets in SRV order, or of the domain if it has no SRV.
    pub a: Vec<Rec>,
    /// SRV targets without any static A record (the phone must resolve them).
    pub unresolved: Vec<DomainName>,
}

fn static_records(zones: &ZoneStore, name: &DomainName, rtype: RType) -> Vec<Rec> {
    match zones.find(name).map(|z| z.lookup(name, rtype)) {
        Some(ZoneAnswer::Records(recs)) => recs,
        _ => Vec::new(),
    }
}

/// The TTL sipdns hands a record out with.
fn served_ttl(rec: &Rec, cap: u32) -> u32 {
    rec.ttl.min(cap)
}

/// `pbx.example.org` (no trailing dot), as phone configs write names.
fn plain(name: &DomainName) -> &str {
    let s = name.as_str();
    s.strip_suffix('.').filter(|s| !s.is_empty()).unwrap_or(s)
}

impl Chain {
    /// Follows NAPTR -> SRV -> A for `domain` through the static zones.
    pub fn from_zones(
        config: &Config,
        zones: &ZoneStore,
        domain: &str,
    ) -> Result<Self, PhonesError> {
        let name = DomainName::parse(domain).map_err(|_| PhonesError::Domain(domain.to_owned()))?;
        let dcfg = config
            .sip
            .domains
            .iter()
            .find(|d| d.name == name)
            .ok_or_else(|| PhonesError::NotManaged(plain(&name).to_owned()))?
            .clone();
        let cap = dcfg.ttl;
        let with_ttl = |mut r: Rec| {
            r.ttl = served_ttl(&r, cap);
            r
        };

        let mut naptr: Vec<Rec> = static_records(zones, &name, RType::NAPTR)
            .into_iter()
            .filter(|r| sip_naptr(r).is_some())
            .map(with_ttl)
            .collect();
        naptr.sort_by_key(|r| match &r.data {
            RecordData::Naptr {
                order, preference, ..
            } => (*order, *preference),
            _ => (u16::MAX, u16::MAX),
        });
        let mut synthesized = false;
        // The SRV sets to follow: the NAPTRs' replacements, else the well-known ones.
        let set_names: Vec<(DomainName, Transport)> = if naptr.is_empty() {
            let present: Vec<(DomainName, Transport)> = Transport::ALL
                .iter()
                .filter_map(|t| {
                    let owner = name.prepend(t.srv_prefix()).ok()?;
                    (!static_records(zones, &owner, RType::SRV).is_empty()).then_some((owner, *t))
                })
                .collect();
            if dcfg.synthesize_naptr && !present.is_empty() {
                let transports: Vec<Transport> = present.iter().map(|(_, t)| *t).collect();
                naptr = policy::synthesize_naptr(&dcfg, &transports, cap);
                synthesized = !naptr.is_empty();
            }
            if naptr.is_empty() {
                present
            } else {
                naptr.iter().filter_map(sip_naptr).collect()
            }
        } else {
            naptr.iter().filter_map(sip_naptr).collect()
        };

        let mut srv = Vec::new();
        for (owner, _) in &set_names {
            let mut set = static_records(zones, owner, RType::SRV);
            // RFC 2782: lowest priority first; within one, the zone's order (the phone
            // does its own weighted pick).
            set.sort_by_key(|r| match &r.data {
                RecordData::Srv { priority, .. } => *priority,
                _ => u16::MAX,
            });
            for r in set {
                if !srv
                    .iter()
                    .any(|s: &Rec| s.name == r.name && s.data == r.data)
                {
                    srv.push(with_ttl(r));
                }
            }
        }

        let mut a = Vec::new();
        let mut unresolved = Vec::new();
        let mut hosts: Vec<DomainName> = Vec::new();
        for r in &srv {
            if let RecordData::Srv { target, .. } = &r.data
                && !target.is_root()
                && !hosts.contains(target)
            {
                hosts.push(target.clone());
            }
        }
        if srv.is_empty() {
            hosts.push(name.clone());
        }
        for host in hosts {
            let found = static_records(zones, &host, RType::A);
            if found.is_empty() {
                unresolved.push(host);
            }
            a.extend(found.into_iter().map(with_ttl));
        }
        if naptr.is_empty() && srv.is_empty() && a.is_empty() {
            return Err(PhonesError::NoRecords(plain(&name).to_owned()));
        }
        Ok(Self {
            domain: dcfg,
            naptr,
            synthesized,
            srv,
            a,
            unresolved,
        })
    }

    /// The transport a phone that skips NAPTR should use: the best NAPTR's, else the first
    /// SRV set's, else UDP.
    pub fn preferred_transport(&self) -> Transport {
        self.naptr
            .iter()
            .find_map(sip_naptr)
            .map(|(_, t)| t)
            .or_else(|| {
                self.srv
                    .first()
                    .and_then(|r| Transport::from_srv_name(&r.name))
            })
            .unwrap_or(Transport::Udp)
    }
}

/// The SRV set and transport a SIP NAPTR (`s` flag) leads to.
fn sip_naptr(rec: &Rec) -> Option<(DomainName, Transport)> {
    match &rec.data {
        RecordData::Naptr {
            flags,
            services,
            replacement,
            ..
        } if flags.eq_ignore_ascii_case("s") => {
            Transport::from_naptr_service(services).map(|t| (replacement.clone(), t))
        }
        _ => None,
    }
}

/// The static cache entries chosen from a [`Chain`] within the phone's limits, and why
/// others were left out.
struct Trimmed {
    naptr: Vec<Rec>,
    srv: Vec<Rec>,
    a: Vec<Rec>,
    notes: Vec<String>,
}

/// Picks at most [`YEALINK_MAX_ENTRIES`] of each type, best first, keeping the chain
/// whole: addresses go to the best SRV targets first; an SRV record is kept only if an
/// address of its target is; a NAPTR only if a record of its SRV set is.
fn trim(chain: &Chain) -> Trimmed {
    let mut notes = Vec::new();
    let max = YEALINK_MAX_ENTRIES;
    let a: Vec<Rec> = chain.a.iter().take(max).cloned().collect();
    if chain.a.len() > max {
        notes.push(format!(
            "{} A records, the phone takes {max}: the last {} (of the least preferred targets) are left out",
            chain.a.len(),
            chain.a.len() - max
        ));
    }
    let mut srv = Vec::new();
    for r in &chain.srv {
        let RecordData::Srv { target, .. } = &r.data else {
            continue;
        };
        if !a.iter().any(|x| x.name == *target) {
            notes.push(format!(
                "SRV {} -> {} left out: no static A entry of its target (not in the zones, or past the {max}-entry limit)",
                plain(&r.name),
                plain(target)
            ));
            continue;
        }
        if srv.len() == max {
            notes.push(format!(
                "SRV {} -> {} left out: the phone takes {max} SRV entries",
                plain(&r.name),
                plain(target)
            ));
            continue;
        }
        srv.push(r.clone());
    }
    let mut naptr = Vec::new();
    for r in &chain.naptr {
        let Some((set, _)) = sip_naptr(r) else {
            continue;
        };
        if !srv.iter().any(|s| s.name == set) {
            notes.push(format!(
                "NAPTR -> {} left out: no SRV entry of that set is in the cache",
                plain(&set)
            ));
            continue;
        }
        if naptr.len() == max {
            notes.push(format!(
                "NAPTR -> {} left out: the phone takes {max} NAPTR entries",
                plain(&set)
            ));
            continue;
        }
        naptr.push(r.clone());
    }
    Trimmed {
        naptr,
        srv,
        a,
        notes,
    }
}

/// A static cache entry's TTL: what sipdns serves, raised into the phone's range.
pub fn yealink_static_ttl(served: u32) -> u32 {
    served.clamp(YEALINK_MIN_TTL, YEALINK_MAX_TTL)
}

/// The Yealink provisioning block (`<y0000000000xx.cfg>` / `<MAC>.cfg` lines) for account
/// `account` of the chain's domain: server settings that pair with sipdns, and the static
/// DNS cache mirroring sipdns' zones.
pub fn yealink(chain: &Chain, account: u32, source: &str) -> Result<String, PhonesError> {
    if !(1..=YEALINK_MAX_ACCOUNT).contains(&account) {
        return Err(PhonesError::Account(account));
    }
    let d = &chain.domain;
    let dom = plain(&d.name);
    let ttl = d.ttl;
    let x = account;
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## sipdns phones yealink: account {x} of {dom}, from {source}\n\
         ## Offline: the static records of the zones (not upstream's), every server listed as\n\
         ## sipdns hands them out while all are up. sipdns caps every TTL at {ttl} s."
    );
    let _ = writeln!(
        o,
        "\n# The SIP domain, port 0 and DNS-NAPTR: the phone follows NAPTR -> SRV -> A (RFC 3263)\n\
         # through sipdns, which hands out only servers that answer SIP.\n\
         account.{x}.sip_server.1.address = {dom}\n\
         account.{x}.sip_server.1.port = 0\n\
         account.{x}.sip_server.1.transport_type = 3"
    );
    let _ = writeln!(
        o,
        "# 1 (DNSTTL): after a failover the phone stays on the working server until the DNS TTL\n\
         # expires, then asks again and follows sipdns' answer, which lists the primary first\n\
         # again once it answers probes: back within {ttl} s of that. (0 newRequests would try\n\
         # the first server of its cached answer on every new request; 2 and 3 wait for a\n\
         # registration expiry or failback_timeout, much longer than sipdns' TTL.)\n\
         account.{x}.sip_server.1.failback_mode = 1\n\
         # Only read in mode 3 (duration); the smallest value the phone takes.\n\
         account.{x}.sip_server.1.failback_timeout = {}",
        YEALINK_MIN_FAILBACK_TIMEOUT.max(ttl)
    );
    let _ = writeln!(
        o,
        "# 1: cache answers for their TTL ({ttl} s from sipdns), not the ADDITIONAL records.\n\
         account.{x}.dns_cache_type = 1\n\
         # 0: ask sipdns first; the static entries below only when it cannot be reached.\n\
         account.{x}.static_cache_pri = 0\n\
         # 1: without a NAPTR answer, look for UDP, TCP and TLS SRV sets (not only UDP).\n\
         account.{x}.naptr_build = 1"
    );

    let t = trim(chain);
    let _ = writeln!(
        o,
        "\n## Static DNS cache (entries are per phone, not per account: X = 1..{YEALINK_MAX_ENTRIES} of each type).\n\
         ## TTL: what sipdns serves ({ttl} s cap) raised to the phone's minimum of {YEALINK_MIN_TTL} s."
    );
    if chain.synthesized {
        let _ = writeln!(
            o,
            "## The NAPTR entries are synthesized by sipdns (synthesize_naptr): the zones have none."
        );
    }
    for note in &t.notes {
        let _ = writeln!(o, "# {note}");
    }
    for host in &chain.unresolved {
        let _ = writeln!(
            o,
            "# {} has no static A record: the phone needs DNS to reach it",
            plain(host)
        );
    }
    for (i, r) in t.naptr.iter().enumerate() {
        if let RecordData::Naptr {
            order,
            preference,
            flags,
            services,
            replacement,
            ..
        } = &r.data
        {
            let n = i + 1;
            let _ = writeln!(
                o,
                "dns_cache_naptr.{n}.name = {}\n\
                 dns_cache_naptr.{n}.flags = {}\n\
                 dns_cache_naptr.{n}.order = {order}\n\
                 dns_cache_naptr.{n}.preference = {preference}\n\
                 dns_cache_naptr.{n}.replace = {}\n\
                 dns_cache_naptr.{n}.service = {services}\n\
                 dns_cache_naptr.{n}.ttl = {}",
                plain(&r.name),
                flags.to_ascii_uppercase(),
                plain(replacement),
                yealink_static_ttl(r.ttl)
            );
        }
    }
    for (i, r) in t.srv.iter().enumerate() {
        if let RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } = &r.data
        {
            let n = i + 1;
            let _ = writeln!(
                o,
                "dns_cache_srv.{n}.name = {}\n\
                 dns_cache_srv.{n}.port = {port}\n\
                 dns_cache_srv.{n}.priority = {priority}\n\
                 dns_cache_srv.{n}.target = {}\n\
                 dns_cache_srv.{n}.weight = {weight}\n\
                 dns_cache_srv.{n}.ttl = {}",
                plain(&r.name),
                plain(target),
                yealink_static_ttl(r.ttl)
            );
        }
    }
    for (i, r) in t.a.iter().enumerate() {
        if let Some(ip) = r.data.ip() {
            let n = i + 1;
            let _ = writeln!(
                o,
                "dns_cache_a.{n}.name = {}\n\
                 dns_cache_a.{n}.ip = {ip}\n\
                 dns_cache_a.{n}.ttl = {}",
                plain(&r.name),
                yealink_static_ttl(r.ttl)
            );
        }
    }
    Ok(o)
}

/// linphone refreshes a registration after 90 % of the granted expiry (belle-sip).
const LINPHONE_REFRESH_PERCENT: u64 = 90;

/// A linphonerc snippet for the chain's domain: the proxy by domain (SRV, no port), the
/// transport sipdns prefers, `reconnect_to_primary_asap=1` (linphone never fails back
/// without it) and a registration expiry whose refresh is longer than sipdns' TTL.
pub fn linphone(chain: &Chain, config: &Config, source: &str) -> String {
    let d = &chain.domain;
    let dom = plain(&d.name);
    let ttl = d.ttl;
    let transport = match chain.preferred_transport() {
        Transport::Udp => "udp",
        Transport::Tcp => "tcp",
        Transport::Tls => "tls",
    };
    // Refresh = 90 % of expires; it must stay above the TTL so each refresh re-resolves.
    let expires = config.phones.register_refresh.map_or(600, |r| {
        (r.as_secs() * 100).div_ceil(LINPHONE_REFRESH_PERCENT)
    });
    let mut o = String::new();
    let _ = writeln!(
        o,
        "## sipdns phones linphone: {dom}, from {source} (offline: zones only)\n\
         ## linphone asks SRV _sip._{{udp,tcp}} / _sips._tcp and the targets' A/AAAA itself (no\n\
         ## NAPTR, ADDITIONAL ignored), caches each answer for its TTL (sipdns: {ttl} s) and\n\
         ## re-resolves when a request goes out after that.\n\
         [sip]\n\
         # Back to the first server of the SRV answer as soon as DNS lists it again; without\n\
         # it linphone never fails back.\n\
         reconnect_to_primary_asap=1\n\
         \n\
         [proxy_0]\n\
         # The domain without port: SRV lookup ({transport}, the transport sipdns lists first).\n\
         reg_proxy=<sip:{dom};transport={transport}>\n\
         reg_identity=sip:USER@{dom}\n\
         # Refreshed at {LINPHONE_REFRESH_PERCENT} % of this; keep that above sipdns' TTL ({ttl} s).\n\
         reg_expires={expires}\n\
         reg_sendregister=1"
    );
    o
}

/// Which snippet `sipdns phones` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phone {
    /// Yealink, one account (1..16).
    Yealink {
        /// The account number X of `account.X.*`.
        account: u32,
    },
    /// linphone (linphonerc).
    Linphone,
}

/// `sipdns phones ... -c CONFIG --domain D`: loads the config and zones as `sipdns check`
/// does and returns the snippet.
pub fn from_file(
    path: &std::path::Path,
    domain: &str,
    phone: Phone,
) -> Result<String, PhonesError> {
    let (config, zones) = crate::state::load(path)?;
    let chain = Chain::from_zones(&config, &zones, domain)?;
    let source = path.display().to_string();
    Ok(match phone {
        Phone::Yealink { account } => yealink(&chain, account, &source)?,
        Phone::Linphone => linphone(&chain, &config, &source),
    })
}
