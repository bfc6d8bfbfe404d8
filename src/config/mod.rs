//! The configuration file: serde types (strict: an unknown key is an error), defaults, and
//! loading with errors that name the file, line and field.
//!
//! Loading is parse first ([`yaml::from_str`]), then semantic checks ([`validate`]); both
//! report [`yaml::FileError`]s. Relative paths in the file are taken relative to the
//! directory of the config file, so the same file works whatever the working directory.

pub mod validate;
pub mod yaml;

#[cfg(test)]
mod tests;

use std::{
    collections::BTreeMap,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{record::DomainName, target::Transport};

pub use yaml::FileError;

/// Why a config could not be loaded: every problem found, each with file, line and field.
#[derive(Debug, thiserror::Error)]
#[error("{}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// The problems, in file order where known.
    pub errors: Vec<FileError>,
}

impl From<FileError> for ConfigError {
    fn from(e: FileError) -> Self {
        Self { errors: vec![e] }
    }
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The DNS listener and who may use it.
    #[serde(default)]
    pub dns: DnsConfig,
    /// Where names that are not answered statically are forwarded.
    #[serde(default)]
    pub upstream: UpstreamConfig,
    /// Static entries.
    #[serde(default)]
    pub zones: ZonesConfig,
    /// The managed SIP domains and how their servers are probed.
    #[serde(default)]
    pub sip: SipConfig,
    /// The REST API, `/metrics`, `/livez` and `/readyz`.
    #[serde(default)]
    pub api: ApiConfig,
    /// Where operator state that must survive a restart (drained targets) is kept.
    #[serde(default)]
    pub state_file: Option<PathBuf>,
    /// How log lines are written.
    #[serde(default)]
    pub log: LogConfig,
    /// Where events (transitions, drains, reloads) are sent.
    #[serde(default)]
    pub events: EventsConfig,
    /// Hints about the phones, for `sipdns check` and `sipdns phones`.
    #[serde(default)]
    pub phones: PhonesConfig,
}

/// `log:` — read at start (a change takes a restart).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `text` (for people; colours only on a terminal) or `json` (one object per line).
    #[serde(default)]
    pub format: LogFormat,
}

/// The log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// `2026-01-01T08:00:00Z  INFO message key=value`.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `events:` — read at start (a change takes a restart).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// URLs that receive a JSON POST for every event.
    #[serde(default)]
    pub webhooks: Vec<WebhookConfig>,
}

/// One webhook receiver.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://` or `https://` URL.
    pub url: WebhookUrl,
    /// File holding a token sent as `Authorization: Bearer <token>`.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding that token (used when `token_file` is unset).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Time for one delivery attempt.
    #[serde(default = "default_webhook_timeout", with = "human")]
    pub timeout: Duration,
    /// Further attempts after a failed one (with doubling back-off from 500 ms).
    #[serde(default = "default_webhook_retries")]
    pub retries: u32,
    /// Events waiting for this receiver at most; more are dropped and counted.
    #[serde(default = "default_webhook_queue")]
    pub queue: usize,
}

/// A webhook URL: `http://` or `https://`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct WebhookUrl(String);

impl WebhookUrl {
    /// The URL text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for WebhookUrl {
    type Error = String;

    fn try_from(s: String) -> Result<Self, String> {
        let rest = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !r.starts_with('/') => Ok(Self(s)),
            _ => Err(format!(
                "{s:?} is not a webhook URL; write http://host[:port]/path or https://..."
            )),
        }
    }
}

impl From<WebhookUrl> for String {
    fn from(u: WebhookUrl) -> Self {
        u.0
    }
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}
fn default_webhook_retries() -> u32 {
    3
}
fn default_webhook_queue() -> usize {
    1000
}

/// `phones:` — what the operator knows about the phones (optional hints, no behaviour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PhonesConfig {
    /// How often the phones send a request (their registration refresh). A phone that
    /// caches DNS answers for their TTL (Yealink `dns_cache_type` 1, linphone) sends its
    /// next request on a cached answer while the TTL runs: `sipdns check` warns when a
    /// domain's policy `ttl` is not below this, since such a phone can then miss a
    /// failover by a whole refresh cycle.
    #[serde(default, with = "human_opt", skip_serializing_if = "Option::is_none")]
    pub register_refresh: Option<Duration>,
}

/// `dns:` — the listener.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// Addresses to serve DNS on; UDP and TCP are both bound on each.
    #[serde(default = "default_listen")]
    pub listen: Vec<SocketAddr>,
    /// Client networks allowed to query; everyone else gets REFUSED.
    #[serde(default = "default_allow")]
    pub allow: Vec<IpNet>,
    /// Upper bound on queries waiting for an upstream at once; past it a query is answered
    /// from stale cache if possible, else SERVFAIL.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Largest UDP response sipdns sends to an EDNS client (RFC 9715 / DNS flag day: 1232).
    #[serde(default = "default_udp_payload")]
    pub max_udp_payload: u16,
    /// UDP receive loops (threads, each with its own SO_REUSEPORT socket) per listen
    /// address; absent: one per two CPU cores, at least one (see [`DnsConfig::udp_loops`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp_threads: Option<usize>,
    /// Most TCP connections served at once.
    #[serde(default = "default_tcp_max_connections")]
    pub tcp_max_connections: usize,
    /// A TCP connection idle this long is closed.
    #[serde(default = "default_tcp_idle_timeout", with = "human")]
    pub tcp_idle_timeout: Duration,
    /// Per-client limit on UDP responses, so sipdns cannot be used to amplify traffic.
    #[serde(default)]
    pub rate_limit: RateLimitConfig,
}

/// `dns.rate_limit:` — per-client UDP response rate limit (see `dns::ratelimit`).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// UDP responses per second each client (IPv4 address or IPv6 /64) may receive;
    /// `0` turns the limit off.
    #[serde(default = "default_rl_rate")]
    pub responses_per_second: u32,
    /// Responses a client may receive at once after being quiet (bucket size).
    #[serde(default = "default_rl_burst")]
    pub burst: u32,
    /// Beyond the limit, every `slip`-th query gets a truncated reply (TC=1, no records,
    /// so a real client retries over TCP) and the others are dropped; `0` drops all,
    /// `1` truncates all.
    #[serde(default = "default_rl_slip")]
    pub slip: u32,
    /// Most clients tracked at once (memory bound); clients beyond it share one bucket.
    #[serde(default = "default_rl_max_clients")]
    pub max_clients: usize,
    /// Client networks never limited (default: loopback).
    #[serde(default = "default_rl_exempt")]
    pub exempt: Vec<IpNet>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            responses_per_second: default_rl_rate(),
            burst: default_rl_burst(),
            slip: default_rl_slip(),
            max_clients: default_rl_max_clients(),
            exempt: default_rl_exempt(),
        }
    }
}

/// `upstream:` — the forwarder.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// Upstream resolvers as `ip:port`, or `{ address: ip:port, trusted_ad: true }` for a
    /// validating resolver whose AD bit is relayed. Leave empty to use `resolv_conf`.
    #[serde(default)]
    pub servers: Vec<UpstreamServer>,
    /// Read upstream resolvers from this resolv.conf when `servers` is empty.
    #[serde(default = "default_resolv_conf")]
    pub resolv_conf: PathBuf,
    /// How long to wait for one upstream attempt.
    #[serde(default = "default_upstream_timeout", with = "human")]
    pub timeout: Duration,
    /// Attempts per query over the upstream set.
    #[serde(default = "default_attempts")]
    pub attempts: usize,
    /// Most (name, type) answers kept in the cache.
    #[serde(default = "default_cache_size")]
    pub cache_size: usize,
    /// How long after expiry a cached answer may still be served when every upstream fails
    /// (RFC 8767); `0s` turns serve-stale off.
    #[serde(default = "default_serve_stale", with = "human")]
    pub serve_stale: Duration,
    /// TTL of a stale answer handed out (RFC 8767 recommends 30 s).
    #[serde(default = "default_stale_ttl")]
    pub stale_ttl: u32,
    /// When a stale answer exists and upstream has not answered within this time, answer
    /// stale and keep refreshing in the background (RFC 8767 "client response timer").
    #[serde(default = "default_stale_answer_after", with = "human")]
    pub stale_answer_after: Duration,
    /// How long an answer given *because* upstream failed (a fallback zone's static data,
    /// a stale answer, a merge zone's static half) is reused before upstream is asked again.
    #[serde(default = "default_retry_after", with = "human")]
    pub retry_after: Duration,
}

/// One upstream resolver: `ip:port`, or `{ address, trusted_ad }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Serialize)]
#[serde(from = "UpstreamServerRepr", into = "UpstreamServerRepr")]
pub struct UpstreamServer {
    /// Where it listens.
    pub address: SocketAddr,
    /// Relay its AD bit (RFC 4035 §3.2.3) to clients: set only for a validating resolver
    /// reached over a path you trust (RFC 6840 §5.8). Default false: AD is cleared.
    pub trusted_ad: bool,
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(untagged)]
enum UpstreamServerRepr {
    Address(SocketAddr),
    Full(UpstreamServerFull),
}

#[derive(Debug, Clone, Copy, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct UpstreamServerFull {
    address: SocketAddr,
    #[serde(default)]
    trusted_ad: bool,
}

impl From<UpstreamServerRepr> for UpstreamServer {
    fn from(r: UpstreamServerRepr) -> Self {
        match r {
            UpstreamServerRepr::Address(address) => Self {
                address,
                trusted_ad: false,
            },
            UpstreamServerRepr::Full(f) => Self {
                address: f.address,
                trusted_ad: f.trusted_ad,
            },
        }
    }
}

impl From<UpstreamServer> for UpstreamServerRepr {
    fn from(s: UpstreamServer) -> Self {
        if s.trusted_ad {
            Self::Full(UpstreamServerFull {
                address: s.address,
                trusted_ad: true,
            })
        } else {
            Self::Address(s.address)
        }
    }
}

impl From<SocketAddr> for UpstreamServer {
    fn from(address: SocketAddr) -> Self {
        Self {
            address,
            trusted_ad: false,
        }
    }
}

impl std::str::FromStr for UpstreamServer {
    type Err = std::net::AddrParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<SocketAddr>().map(Self::from)
    }
}

impl std::fmt::Display for UpstreamServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.address.fmt(f)
    }
}

/// `zones:` — static entries.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ZonesConfig {
    /// Directory of `*.yaml` and `*.zone` files.
    #[serde(default = "default_zones_dir")]
    pub dir: PathBuf,
    /// Merge mode of RFC 1035 `*.zone` files, by zone name (YAML zones carry their own).
    #[serde(default)]
    pub modes: BTreeMap<DomainName, MergeMode>,
    /// Largest zone file read, in bytes (a `.zone` file together with what it
    /// `$INCLUDE`s). A bigger file is refused with an error naming it.
    #[serde(default = "default_zone_max_file_size")]
    pub max_file_size: u64,
    /// Where zones transferred from a primary are kept (one RFC 1035 file per zone).
    #[serde(default = "default_secondary_dir")]
    pub secondary_dir: PathBuf,
    /// Zones (or every member zone of a catalog) followed from a primary by zone transfer.
    #[serde(default)]
    pub secondary: Vec<SecondaryConfig>,
    /// Templates a catalog member's `group` property (RFC 9432 §4.4.2) selects, by name.
    #[serde(default)]
    pub catalog_groups: BTreeMap<String, CatalogGroupConfig>,
}

/// `zones.secondary[]` — one zone, or a catalog of zones, followed from primaries.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecondaryConfig {
    /// The zone to follow (give this or `catalog`).
    #[serde(default)]
    pub zone: Option<DomainName>,
    /// A catalog zone (RFC 9432) whose member zones are all followed (give this or `zone`).
    #[serde(default)]
    pub catalog: Option<DomainName>,
    /// The primaries, tried in order: transfers and SOA checks go to them over TCP, and
    /// NOTIFY is accepted from their addresses only.
    pub primaries: Vec<SocketAddr>,
    /// The TSIG key (RFC 8945) that signs transfers and SOA checks.
    #[serde(default)]
    pub tsig: Option<TsigConfig>,
    /// How the zone combines with upstream (for a catalog: its members' default).
    #[serde(default)]
    pub mode: MergeMode,
    /// Check the serial this often instead of the SOA's refresh.
    #[serde(default, with = "human_opt")]
    pub refresh: Option<Duration>,
    /// After a failed check, try again this soon instead of the SOA's retry.
    #[serde(default, with = "human_opt")]
    pub retry: Option<Duration>,
}

/// A TSIG key: its name, algorithm and a file holding the base64 secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TsigConfig {
    /// The key name, as the primary knows it.
    pub name: DomainName,
    /// The MAC algorithm.
    pub algorithm: TsigAlgorithmName,
    /// File with the base64 secret: a bare line, or a BIND/Knot key file (`secret "...";` or
    /// `secret: ...`).
    pub secret_file: PathBuf,
}

/// TSIG MAC algorithms (RFC 8945 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum TsigAlgorithmName {
    /// HMAC-SHA256 (mandatory to implement).
    HmacSha256,
    /// HMAC-SHA384.
    HmacSha384,
    /// HMAC-SHA512.
    HmacSha512,
}

/// `zones.catalog_groups.<name>` — what a catalog member in that group gets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogGroupConfig {
    /// The member zone's merge mode.
    #[serde(default)]
    pub mode: MergeMode,
    /// Make each member zone a managed SIP domain (under its own name) with the health
    /// policy of this `sip.domains` entry.
    #[serde(default)]
    pub sip_policy: Option<DomainName>,
}

/// How a zone's static records combine with upstream's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MergeMode {
    /// The static RRset for (name, type) replaces upstream's.
    #[default]
    Override,
    /// Upstream first; static only when upstream gives NXDOMAIN, NODATA, SERVFAIL or
    /// times out.
    Fallback,
    /// The union of both.
    Merge,
}

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

/// `api:`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Address of the HTTP API; `/metrics`, `/livez` and `/readyz` are served there too.
    #[serde(default = "default_api_listen")]
    pub listen: Option<SocketAddr>,
    /// File holding the bearer token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Environment variable holding the bearer token (used when `token_file` is unset).
    #[serde(default = "default_token_env")]
    pub token_env: String,
    /// Most API connections open at once; one over it is closed at once. sipdns may lower
    /// it at start to fit the open-files limit (logged).
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Deadline for a request's headers, then for its whole body; a slower client is cut
    /// off. A kept-alive connection that starts no new request within it is closed too.
    #[serde(default = "default_api_request_timeout", with = "human")]
    pub request_timeout: Duration,
    /// Serve the status page at `/` (its data still needs the token).
    #[serde(default = "default_true")]
    pub ui: bool,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            listen: default_api_listen(),
            token_file: None,
            token_env: default_token_env(),
            max_connections: default_api_max_connections(),
            request_timeout: default_api_request_timeout(),
            ui: true,
        }
    }
}

impl DnsConfig {
    /// The UDP loops to run per listen address: `udp_threads`, or one per two of the
    /// `cores` this process may use, at least one. One loop answers well over 100,000
    /// queries a second; a second loop on a two-core machine only halves each loop's
    /// batches and doubles the wake-ups, so every query costs more CPU
    /// (docs/performance.md).
    pub fn udp_loops(&self, cores: usize) -> usize {
        self.udp_threads
            .unwrap_or(cores / 2)
            .clamp(1, MAX_UDP_THREADS)
    }
}

/// Upper bound of `dns.udp_threads`.
pub const MAX_UDP_THREADS: usize = 64;

impl Default for DnsConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            allow: default_allow(),
            max_inflight: default_max_inflight(),
            max_udp_payload: default_udp_payload(),
            udp_threads: None,
            tcp_max_connections: default_tcp_max_connections(),
            tcp_idle_timeout: default_tcp_idle_timeout(),
            rate_limit: RateLimitConfig::default(),
        }
    }
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            resolv_conf: default_resolv_conf(),
            timeout: default_upstream_timeout(),
            attempts: default_attempts(),
            cache_size: default_cache_size(),
            serve_stale: default_serve_stale(),
            stale_ttl: default_stale_ttl(),
            stale_answer_after: default_stale_answer_after(),
            retry_after: default_retry_after(),
        }
    }
}

impl Default for ZonesConfig {
    fn default() -> Self {
        Self {
            dir: default_zones_dir(),
            modes: BTreeMap::new(),
            secondary_dir: default_secondary_dir(),
            secondary: Vec::new(),
            catalog_groups: BTreeMap::new(),
            max_file_size: default_zone_max_file_size(),
        }
    }
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

fn default_listen() -> Vec<SocketAddr> {
    vec![SocketAddr::from(([127, 0, 0, 1], 53))]
}
fn default_allow() -> Vec<IpNet> {
    [
        "127.0.0.0/8",
        "::1/128",
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "fc00::/7",
        "169.254.0.0/16",
        "fe80::/10",
    ]
    .iter()
    .filter_map(|s| s.parse().ok())
    .collect()
}
fn default_max_inflight() -> usize {
    1024
}
fn default_udp_payload() -> u16 {
    1232
}
fn default_tcp_max_connections() -> usize {
    512
}
fn default_tcp_idle_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_rl_rate() -> u32 {
    100
}
fn default_rl_burst() -> u32 {
    200
}
fn default_rl_slip() -> u32 {
    2
}
fn default_rl_max_clients() -> usize {
    10_000
}
fn default_rl_exempt() -> Vec<IpNet> {
    ["127.0.0.0/8", "::1/128"]
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect()
}
fn default_resolv_conf() -> PathBuf {
    PathBuf::from("/etc/resolv.conf")
}
fn default_upstream_timeout() -> Duration {
    Duration::from_secs(2)
}
fn default_attempts() -> usize {
    2
}
fn default_cache_size() -> usize {
    10_000
}
fn default_serve_stale() -> Duration {
    Duration::from_secs(86_400)
}
fn default_stale_ttl() -> u32 {
    30
}
fn default_stale_answer_after() -> Duration {
    Duration::from_millis(1800)
}
fn default_retry_after() -> Duration {
    Duration::from_secs(2)
}
fn default_zones_dir() -> PathBuf {
    PathBuf::from("zones")
}
fn default_secondary_dir() -> PathBuf {
    PathBuf::from("secondary")
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
fn default_true() -> bool {
    true
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
fn default_api_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([127, 0, 0, 1], 8053)))
}
fn default_token_env() -> String {
    "SIPDNS_API_TOKEN".to_owned()
}
fn default_api_max_connections() -> usize {
    64
}
fn default_api_request_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_zone_max_file_size() -> u64 {
    DEFAULT_ZONE_MAX_FILE_SIZE
}

/// The default of `zones.max_file_size`: 64 MiB.
pub const DEFAULT_ZONE_MAX_FILE_SIZE: u64 = 64 << 20;

/// Durations written for people: `500ms`, `5s`, `1m 30s`, `1d`.
pub mod human {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads a humantime duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write e.g. 500ms, 5s, 1d"
            ))
        })
    }

    /// Writes a humantime duration.
    pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

/// [`human`] for an optional duration (`null` or absent: none).
pub mod human_opt {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Reads an optional humantime duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => humantime::parse_duration(&s).map(Some).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); write e.g. 500ms, 5s, 1d"
                ))
            }),
        }
    }

    /// Writes an optional humantime duration.
    pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }
}

impl Config {
    /// Reads, parses and validates a config file. Relative paths inside it are made
    /// relative to the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| FileError::whole(path, format!("cannot read config: {e}")))?;
        Self::from_text(path, &text)
    }

    /// Parses and validates config text as if read from `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Self, ConfigError> {
        Self::from_text_reusing(path, text, None)
    }

    /// [`Self::from_text`] for a reload: if `text` is the text `previous` was read from,
    /// its parse is reused (a config listing 5,000 targets takes tens of milliseconds to
    /// parse, on every edit of a zone file). It is validated again either way: files it
    /// names may have changed.
    pub fn from_text_reusing(
        path: &Path,
        text: &str,
        previous: Option<(&str, &Self)>,
    ) -> Result<Self, ConfigError> {
        let config = match previous {
            Some((was, config)) if was == text => config.clone(),
            _ => {
                let mut config: Self = yaml::from_str(path, text)?;
                let base = path.parent().unwrap_or_else(|| Path::new("."));
                config.resolve_paths(base);
                config
            }
        };
        let errors = validate::validate(&config)
            .into_iter()
            .map(|v| FileError::at_field(path, text, &v.field, v.reason))
            .collect::<Vec<_>>();
        if errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError { errors })
        }
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.zones.dir);
        fix(&mut self.zones.secondary_dir);
        for s in &mut self.zones.secondary {
            if let Some(t) = &mut s.tsig {
                fix(&mut t.secret_file);
            }
        }
        if let Some(p) = &mut self.state_file {
            fix(p);
        }
        if let Some(p) = &mut self.api.token_file {
            fix(p);
        }
        for w in &mut self.events.webhooks {
            if let Some(p) = &mut w.token_file {
                fix(p);
            }
        }
        if let Some(p) = &mut self.sip.probe.tls.ca_file {
            fix(p);
        }
        fix(&mut self.upstream.resolv_conf);
    }
}
