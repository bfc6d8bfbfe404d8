//! The `sip` section: how targets are probed (`sip.probe`) and the health policy of each
//! managed SIP domain (`sip.domains`).

use std::{net::IpAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use super::{default_true, human};
use crate::{record::DomainName, target::Transport};
/// `sip:` — managed domains and probing.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SipConfig {
    /// How targets are probed (shared by all domains: one health state per target).
    #[serde(default)]
    pub probe: ProbeConfig,
    /// The managed SIP domains.
    #[serde(default)]
    pub domains: Vec<SipDomainConfig>,
}

/// `sip.probe:` — SIP OPTIONS probing.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// One OPTIONS per target per interval (with up to 10 % jitter).
    #[serde(default = "default_interval", with = "human")]
    pub interval: Duration,
    /// A probe with no final reply after this long is bad.
    #[serde(default = "default_probe_timeout", with = "human")]
    pub timeout: Duration,
    /// Consecutive bad probes that mark a target down.
    #[serde(default = "default_fall")]
    pub fall: u32,
    /// Consecutive good probes that mark a down target up again.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// After `rise` good probes, a target must also have been good this long.
    #[serde(default, with = "human")]
    pub hold_down: Duration,
    /// Reply codes that count as good; others are bad. Ranges as `200-499`.
    #[serde(default = "default_up_codes")]
    pub up_codes: Vec<CodeRange>,
    /// Longest a 503 Retry-After may keep a target down.
    #[serde(default = "default_retry_after_max", with = "human")]
    pub retry_after_max: Duration,
    /// The first probe round may delay readiness at most this long.
    #[serde(default = "default_startup_grace", with = "human")]
    pub startup_grace: Duration,
    /// User-Agent of the probes.
    #[serde(default = "default_user_agent")]
    pub user_agent: String,
    /// Host part of the probes' From URI.
    #[serde(default = "default_from_domain")]
    pub from_domain: String,
    /// TLS probing.
    #[serde(default)]
    pub tls: ProbeTlsConfig,
}

/// `sip.probe.tls:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTlsConfig {
    /// PEM file of CA certificates to trust (see `trust`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Verify the server certificate against the trusted CAs and the SRV target name.
    /// Turning this off is an explicit opt-out for lab setups.
    #[serde(default = "default_true")]
    pub verify: bool,
    /// Which CAs are trusted: `system` (the system trust store), `file` (only `ca_file`) or
    /// `both`. Unset: `file` when `ca_file` is set, else `system`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TlsTrust>,
}

/// `sip.probe.tls.trust`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TlsTrust {
    /// The system trust store (`/etc/ssl/certs`, `SSL_CERT_FILE`, `SSL_CERT_DIR`).
    System,
    /// Only the CAs in `ca_file`.
    File,
    /// The system store and `ca_file`.
    Both,
}

impl ProbeTlsConfig {
    /// `trust`, or its default: `file` with a `ca_file`, else `system`.
    pub fn effective_trust(&self) -> TlsTrust {
        self.trust.unwrap_or(if self.ca_file.is_some() {
            TlsTrust::File
        } else {
            TlsTrust::System
        })
    }
}

impl Default for ProbeTlsConfig {
    fn default() -> Self {
        Self {
            ca_file: None,
            verify: true,
            trust: None,
        }
    }
}

/// An inclusive range of SIP reply codes, written `200-499` or `404`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CodeRange {
    /// First code.
    pub from: u16,
    /// Last code.
    pub to: u16,
}

impl CodeRange {
    /// True if `code` lies in the range.
    pub fn contains(&self, code: u16) -> bool {
        (self.from..=self.to).contains(&code)
    }
}

impl std::str::FromStr for CodeRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |t: &str| -> Result<u16, String> {
            let n: u16 = t
                .trim()
                .parse()
                .map_err(|_| format!("{t:?} is not a SIP reply code"))?;
            if (100..=699).contains(&n) {
                Ok(n)
            } else {
                Err(format!("{n} is not a SIP reply code (100-699)"))
            }
        };
        let (from, to) = match s.split_once('-') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => {
                let n = parse(s)?;
                (n, n)
            }
        };
        if from > to {
            return Err(format!("range {s:?} is empty"));
        }
        Ok(Self { from, to })
    }
}

impl<'de> Deserialize<'de> for CodeRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u16),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => n.to_string().parse(),
            Raw::S(s) => s.parse(),
        }
        .map_err(serde::de::Error::custom)
    }
}

impl Serialize for CodeRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format!("{}-{}", self.from, self.to))
    }
}

/// One managed SIP domain and its health policy.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SipDomainConfig {
    /// The SIP domain (`pbx.example.org`).
    pub name: DomainName,
    /// What happens to SRV records whose target is down.
    #[serde(default)]
    pub on_down: OnDown,
    /// What is handed out when every target is down.
    #[serde(default)]
    pub all_down: AllDown,
    /// Under `all_down: serve_all`, also hand out targets an operator drained (default:
    /// no; a drain is intent, not a health guess). They are still served when nothing but
    /// drained targets is left, rather than an empty answer.
    #[serde(default)]
    pub all_down_includes_drained: bool,
    /// Order of records with equal priority.
    #[serde(default)]
    pub ordering: Ordering,
    /// Cap on the TTL of every answer the policy touches, and the negative TTL (seconds).
    #[serde(default = "default_policy_ttl")]
    pub ttl: u32,
    /// Synthesize NAPTR records from the SRV sets when neither upstream nor static has any.
    #[serde(default)]
    pub synthesize_naptr: bool,
    /// Transport order of synthesized NAPTR records.
    #[serde(default = "default_naptr_order")]
    pub naptr_order: Vec<Transport>,
    /// Port probed for the domain's own A/AAAA records.
    #[serde(default = "default_sip_port")]
    pub a_port: u16,
    /// Transport probed for the domain's own A/AAAA records.
    #[serde(default = "default_transport")]
    pub a_transport: Transport,
    /// Local survivability gateways / SBCs, hidden unless `all_down: fallback` applies or
    /// `fallback_always` is set.
    #[serde(default)]
    pub fallback: Vec<FallbackTargetConfig>,
    /// Also list the fallback targets at the lowest priority while servers are up.
    #[serde(default)]
    pub fallback_always: bool,
    /// Extra targets to probe that DNS does not name.
    #[serde(default)]
    pub targets: Vec<ExtraTargetConfig>,
}

/// SRV records of down targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnDown {
    /// Drop them.
    #[default]
    Withhold,
    /// Keep them, after every up record.
    Demote,
}

/// Every target down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AllDown {
    /// Hand out the unfiltered answer (fail open).
    #[default]
    ServeAll,
    /// Hand out the fallback targets.
    Fallback,
}

/// Order within equal priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ordering {
    /// RFC 2782 weighted random draw per response.
    #[default]
    Weighted,
    /// Source order.
    Fixed,
}

/// A fallback (survivability) target.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackTargetConfig {
    /// Host name handed out in SRV records (its A/AAAA is synthesized from `address`).
    pub host: DomainName,
    /// Address of the gateway.
    pub address: IpAddr,
    /// Port.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// Transport.
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// SRV weight.
    #[serde(default)]
    pub weight: u16,
}

/// An extra target to probe.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExtraTargetConfig {
    /// Address.
    pub address: IpAddr,
    /// Port.
    #[serde(default = "default_sip_port")]
    pub port: u16,
    /// Transport.
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// Host name for the Request-URI and TLS SNI (default: the address).
    #[serde(default)]
    pub host: Option<DomainName>,
}

impl Default for ProbeConfig {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            timeout: default_probe_timeout(),
            fall: default_fall(),
            rise: default_rise(),
            hold_down: Duration::ZERO,
            up_codes: default_up_codes(),
            retry_after_max: default_retry_after_max(),
            startup_grace: default_startup_grace(),
            user_agent: default_user_agent(),
            from_domain: default_from_domain(),
            tls: ProbeTlsConfig::default(),
        }
    }
}

impl SipDomainConfig {
    /// A domain with every knob at its default.
    pub fn new(name: DomainName) -> Self {
        Self {
            name,
            on_down: OnDown::default(),
            all_down: AllDown::default(),
            all_down_includes_drained: false,
            ordering: Ordering::default(),
            ttl: default_policy_ttl(),
            synthesize_naptr: false,
            naptr_order: default_naptr_order(),
            a_port: default_sip_port(),
            a_transport: default_transport(),
            fallback: Vec::new(),
            fallback_always: false,
            targets: Vec::new(),
        }
    }
}

impl SipConfig {
    /// The managed domain that `name` belongs to (the domain itself, or a name below it such
    /// as `_sip._udp.pbx.example.org`), most specific first.
    pub fn domain_of(&self, name: &DomainName) -> Option<&SipDomainConfig> {
        self.domains
            .iter()
            .filter(|d| name.is_in(&d.name))
            .max_by_key(|d| d.name.label_count())
    }
}
fn default_interval() -> Duration {
    Duration::from_secs(5)
}
fn default_probe_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_fall() -> u32 {
    3
}
fn default_rise() -> u32 {
    2
}
fn default_up_codes() -> Vec<CodeRange> {
    vec![CodeRange { from: 200, to: 499 }]
}
fn default_retry_after_max() -> Duration {
    Duration::from_secs(300)
}
fn default_startup_grace() -> Duration {
    Duration::from_secs(3)
}
fn default_user_agent() -> String {
    format!("sipdns/{}", env!("CARGO_PKG_VERSION"))
}
fn default_from_domain() -> String {
    "sipdns.invalid".to_owned()
}
/// 5 s: below the re-request interval of phones that cache DNS answers for their TTL, so
/// each of their requests asks again (docs/phones.md has the measurements: at 30 s
/// linphone, refreshing every 27 s, went out on a cached answer naming a dead server and
/// was registered nowhere for 31 s; at 5 s it failed over at its next request with no
/// gap). Phones that ask only when they send a request cost the same queries at any TTL
/// below their interval.
fn default_policy_ttl() -> u32 {
    5
}
fn default_naptr_order() -> Vec<Transport> {
    Transport::ALL.to_vec()
}
fn default_sip_port() -> u16 {
    5060
}
fn default_transport() -> Transport {
    Transport::Udp
}
