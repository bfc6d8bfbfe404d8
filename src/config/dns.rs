//! The `dns`, `upstream` and `zones` sections: listeners and client limits, the upstream
//! resolvers and their cache, static and secondary zones.

use std::{collections::BTreeMap, net::SocketAddr, path::PathBuf, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::{human, human_opt};
use crate::record::DomainName;
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
fn default_zone_max_file_size() -> u64 {
    DEFAULT_ZONE_MAX_FILE_SIZE
}

/// The default of `zones.max_file_size`: 64 MiB.
pub const DEFAULT_ZONE_MAX_FILE_SIZE: u64 = 64 << 20;
