//! Plain DNS record data, shared by every module that must not see hickory types.
//!
//! `zones`, `upstream` and `dns` convert hickory's records into these types (and back, in
//! `dns::wire`); `resolve`, `policy` and `health` only ever see these. Names are held
//! lower-case and fully qualified, so comparisons are plain string compares; the case of the
//! phone's question is restored on the way out (`dns`).

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
    sync::Arc,
};

/// A fully-qualified, lower-case domain name with its trailing dot (`pbx.example.org.`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DomainName(Arc<str>);

/// Hash and equality are those of the text, so maps keyed by names can be searched with a
/// `&str` (lower-case, with its trailing dot) without building a name.
impl std::borrow::Borrow<str> for DomainName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

/// Why a string is not a domain name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("empty domain name")]
    Empty,
    /// A label is empty (two dots in a row, or a leading dot).
    #[error("empty label in {0:?}")]
    EmptyLabel(String),
    /// A label is longer than 63 octets (RFC 1035 §2.3.4).
    #[error("label longer than 63 characters in {0:?}")]
    LabelTooLong(String),
    /// The whole name is longer than 253 characters (RFC 1035 §2.3.4).
    #[error("name longer than 253 characters: {0:?}")]
    NameTooLong(String),
    /// A character outside letters, digits, `-`, `_` and a leading `*` label.
    #[error("invalid character {1:?} in {0:?}")]
    BadChar(String, char),
}

impl DomainName {
    /// The root name, `.`.
    pub fn root() -> Self {
        Self(Arc::from("."))
    }

    /// Parses a host-style name: letters, digits, `-`, `_`, and `*` as a whole first label
    /// (wildcard). A trailing dot is optional; the result is lower-case.
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let trimmed = s.trim();
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        if trimmed == "." {
            return Ok(Self::root());
        }
        let body = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if body.len() > 253 {
            return Err(NameError::NameTooLong(s.to_owned()));
        }
        for (i, label) in body.split('.').enumerate() {
            if label.is_empty() {
                return Err(NameError::EmptyLabel(s.to_owned()));
            }
            if label.len() > 63 {
                return Err(NameError::LabelTooLong(s.to_owned()));
            }
            if label == "*" && i == 0 {
                continue;
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(NameError::BadChar(s.to_owned(), c));
            }
        }
        // One allocation (the `Arc`): lower-cased with its dot in a buffer on the stack
        // (`body` is at most 253 bytes, checked above, and ASCII, checked label by label).
        let mut buf = [0u8; 256];
        let n = body.len();
        let Some(dst) = buf.get_mut(..=n) else {
            return Err(NameError::NameTooLong(s.to_owned()));
        };
        dst[..n].copy_from_slice(body.as_bytes());
        dst[..n].make_ascii_lowercase();
        dst[n] = b'.';
        match std::str::from_utf8(dst) {
            Ok(name) => Ok(Self(Arc::from(name))),
            Err(_) => Err(NameError::BadChar(
                s.to_owned(),
                char::REPLACEMENT_CHARACTER,
            )),
        }
    }

    /// Builds a name from text already in presentation form (as hickory prints it), only
    /// lower-casing it and adding the trailing dot. Used by the wire conversions, where the
    /// name was validated by the DNS codec.
    pub fn from_presentation(s: &str) -> Self {
        let mut owned = s.to_ascii_lowercase();
        if !owned.ends_with('.') {
            owned.push('.');
        }
        Self(Arc::from(owned))
    }

    /// The name as text, lower-case, with the trailing dot.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `.`.
    pub fn is_root(&self) -> bool {
        &*self.0 == "."
    }

    /// True if `self` equals `zone` or lies below it.
    pub fn is_in(&self, zone: &Self) -> bool {
        if zone.is_root() {
            return true;
        }
        let (me, z) = (self.as_str(), zone.as_str());
        me == z
            || (me.len() > z.len()
                && me.ends_with(z)
                && me.as_bytes()[me.len() - z.len() - 1] == b'.')
    }

    /// The name one label up (`a.b.` -> `b.`); `None` for the root.
    pub fn parent(&self) -> Option<Self> {
        if self.is_root() {
            return None;
        }
        match self.0.find('.') {
            Some(i) if i + 1 < self.0.len() => Some(Self(Arc::from(&self.0[i + 1..]))),
            _ => Some(Self::root()),
        }
    }

    /// Prepends one label (`_sip._udp` + `pbx.example.org.`).
    pub fn prepend(&self, labels: &str) -> Result<Self, NameError> {
        if self.is_root() {
            Self::parse(labels)
        } else {
            // Joined on the stack: no allocation besides the new name's own.
            let total = labels.len() + 1 + self.0.len();
            let mut buf = [0u8; 512];
            match buf.get_mut(..total) {
                Some(dst) => {
                    dst[..labels.len()].copy_from_slice(labels.as_bytes());
                    dst[labels.len()] = b'.';
                    dst[labels.len() + 1..].copy_from_slice(self.0.as_bytes());
                    match std::str::from_utf8(dst) {
                        Ok(joined) => Self::parse(joined),
                        Err(_) => Self::parse(&format!("{labels}.{}", self.0)),
                    }
                }
                None => Self::parse(&format!("{labels}.{}", self.0)),
            }
        }
    }

    /// Number of labels (the root has none).
    pub fn label_count(&self) -> usize {
        if self.is_root() {
            0
        } else {
            self.0.matches('.').count()
        }
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl FromStr for DomainName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl serde::Serialize for DomainName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> serde::Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A DNS record type by number, with names for the ones sipdns knows.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RType(pub u16);

impl RType {
    /// IPv4 address.
    pub const A: Self = Self(1);
    /// Name server.
    pub const NS: Self = Self(2);
    /// Canonical name.
    pub const CNAME: Self = Self(5);
    /// Start of authority.
    pub const SOA: Self = Self(6);
    /// Pointer.
    pub const PTR: Self = Self(12);
    /// Mail exchanger.
    pub const MX: Self = Self(15);
    /// Text.
    pub const TXT: Self = Self(16);
    /// IPv6 address.
    pub const AAAA: Self = Self(28);
    /// Service location (RFC 2782).
    pub const SRV: Self = Self(33);
    /// Naming authority pointer (RFC 3403).
    pub const NAPTR: Self = Self(35);
    /// EDNS0 pseudo-record.
    pub const OPT: Self = Self(41);
    /// Any type (meta-query).
    pub const ANY: Self = Self(255);
    /// DNSSEC signature (RFC 4034).
    pub const RRSIG: Self = Self(46);
    /// Authenticated denial (RFC 4034).
    pub const NSEC: Self = Self(47);
    /// Hashed authenticated denial (RFC 5155).
    pub const NSEC3: Self = Self(50);

    /// RRSIG, NSEC or NSEC3: the records a client gets only when it sets DO (or asks for
    /// that type), RFC 4035 §3.2.1.
    pub fn is_dnssec(self) -> bool {
        matches!(self, Self::RRSIG | Self::NSEC | Self::NSEC3)
    }

    const NAMES: [(Self, &'static str); 12] = [
        (Self::A, "A"),
        (Self::NS, "NS"),
        (Self::CNAME, "CNAME"),
        (Self::SOA, "SOA"),
        (Self::PTR, "PTR"),
        (Self::MX, "MX"),
        (Self::TXT, "TXT"),
        (Self::AAAA, "AAAA"),
        (Self::SRV, "SRV"),
        (Self::NAPTR, "NAPTR"),
        (Self::OPT, "OPT"),
        (Self::ANY, "ANY"),
    ];

    /// A bounded label for metrics: the type's name, or `other`.
    pub fn metric_label(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("other", |(_, n)| n)
    }
}

impl fmt::Display for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match Self::NAMES.iter().find(|(t, _)| t == self) {
            Some((_, n)) => f.write_str(n),
            None => write!(f, "TYPE{}", self.0),
        }
    }
}

impl fmt::Debug for RType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for RType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let up = s.trim().to_ascii_uppercase();
        if let Some((t, _)) = Self::NAMES.iter().find(|(_, n)| *n == up) {
            return Ok(*t);
        }
        if let Some(num) = up.strip_prefix("TYPE")
            && let Ok(n) = num.parse::<u16>()
        {
            return Ok(Self(n));
        }
        Err(format!("unknown record type {s:?}"))
    }
}

/// The data of one record, for the types sipdns reasons about; anything else is carried as
/// its wire RDATA (RFC 3597), untouched.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RecordData {
    /// IPv4 address.
    A(Ipv4Addr),
    /// IPv6 address.
    Aaaa(Ipv6Addr),
    /// Alias.
    Cname(DomainName),
    /// Name server.
    Ns(DomainName),
    /// Pointer.
    Ptr(DomainName),
    /// Mail exchanger.
    Mx {
        /// Lower is preferred.
        preference: u16,
        /// Host.
        exchange: DomainName,
    },
    /// Text strings.
    Txt(Vec<String>),
    /// Service location (RFC 2782).
    Srv {
        /// Lower is tried first.
        priority: u16,
        /// Relative share among equal priorities.
        weight: u16,
        /// Port of the service.
        port: u16,
        /// Host providing the service.
        target: DomainName,
    },
    /// Naming authority pointer (RFC 3403), as used by RFC 3263.
    Naptr {
        /// Lower is processed first.
        order: u16,
        /// Lower is preferred within an order.
        preference: u16,
        /// `s` for "look up SRV next".
        flags: String,
        /// `SIP+D2U`, `SIP+D2T`, `SIPS+D2T`, ...
        services: String,
        /// Always empty for SIP.
        regexp: String,
        /// The SRV name to look up next.
        replacement: DomainName,
    },
    /// Start of authority.
    Soa {
        /// Primary server.
        mname: DomainName,
        /// Responsible mailbox.
        rname: DomainName,
        /// Serial.
        serial: u32,
        /// Refresh interval.
        refresh: u32,
        /// Retry interval.
        retry: u32,
        /// Expiry.
        expire: u32,
        /// Negative-caching TTL (RFC 2308).
        minimum: u32,
    },
    /// Any other type, as wire RDATA.
    Opaque {
        /// Record type.
        rtype: RType,
        /// Uncompressed wire RDATA.
        rdata: Arc<[u8]>,
    },
}

impl RecordData {
    /// The record type of this data.
    pub fn rtype(&self) -> RType {
        match self {
            Self::A(_) => RType::A,
            Self::Aaaa(_) => RType::AAAA,
            Self::Cname(_) => RType::CNAME,
            Self::Ns(_) => RType::NS,
            Self::Ptr(_) => RType::PTR,
            Self::Mx { .. } => RType::MX,
            Self::Txt(_) => RType::TXT,
            Self::Srv { .. } => RType::SRV,
            Self::Naptr { .. } => RType::NAPTR,
            Self::Soa { .. } => RType::SOA,
            Self::Opaque { rtype, .. } => *rtype,
        }
    }

    /// The address, for A and AAAA.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::A(a) => Some(IpAddr::V4(*a)),
            Self::Aaaa(a) => Some(IpAddr::V6(*a)),
            _ => None,
        }
    }
}

impl fmt::Display for RecordData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::A(a) => write!(f, "{a}"),
            Self::Aaaa(a) => write!(f, "{a}"),
            Self::Cname(n) | Self::Ns(n) | Self::Ptr(n) => write!(f, "{n}"),
            Self::Mx {
                preference,
                exchange,
            } => write!(f, "{preference} {exchange}"),
            Self::Txt(parts) => {
                let quoted: Vec<String> = parts.iter().map(|p| format!("{p:?}")).collect();
                f.write_str(&quoted.join(" "))
            }
            Self::Srv {
                priority,
                weight,
                port,
                target,
            } => write!(f, "{priority} {weight} {port} {target}"),
            Self::Naptr {
                order,
                preference,
                flags,
                services,
                regexp,
                replacement,
            } => write!(
                f,
                "{order} {preference} {flags:?} {services:?} {regexp:?} {replacement}"
            ),
            Self::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => write!(
                f,
                "{mname} {rname} {serial} {refresh} {retry} {expire} {minimum}"
            ),
            Self::Opaque { rdata, .. } => {
                write!(f, "\\# {}", rdata.len())?;
                for b in rdata.iter() {
                    write!(f, " {b:02x}")?;
                }
                Ok(())
            }
        }
    }
}

/// One resource record (class IN).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rec {
    /// Owner name.
    pub name: DomainName,
    /// Time to live, seconds.
    pub ttl: u32,
    /// Type and data.
    pub data: RecordData,
}

impl Rec {
    /// A record.
    pub fn new(name: DomainName, ttl: u32, data: RecordData) -> Self {
        Self { name, ttl, data }
    }

    /// The record's type.
    pub fn rtype(&self) -> RType {
        self.data.rtype()
    }
}

impl fmt::Display for Rec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} IN {} {}",
            self.name,
            self.ttl,
            self.rtype(),
            self.data
        )
    }
}

/// A DNS response code, as far as sipdns produces or relays them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rcode {
    /// No error (possibly with an empty answer: NODATA).
    NoError,
    /// Format error.
    FormErr,
    /// Server failure.
    ServFail,
    /// Name does not exist.
    NxDomain,
    /// Not implemented.
    NotImp,
    /// Refused.
    Refused,
    /// Bad EDNS version (extended rcode 16).
    BadVers,
    /// Any other code, by number.
    Other(u16),
}

impl Rcode {
    /// A bounded label for metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::NoError => "NOERROR",
            Self::FormErr => "FORMERR",
            Self::ServFail => "SERVFAIL",
            Self::NxDomain => "NXDOMAIN",
            Self::NotImp => "NOTIMP",
            Self::Refused => "REFUSED",
            Self::BadVers => "BADVERS",
            Self::Other(_) => "other",
        }
    }
}

/// Where an answer came from; a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The operator's static entries.
    Static,
    /// A fresh upstream answer.
    Upstream,
    /// The forwarder's cache.
    Cache,
    /// An expired cache entry served because every upstream failed (RFC 8767).
    Stale,
    /// Static and upstream combined (`merge` mode).
    Merged,
    /// Made by sipdns (synthesized NAPTR, fallback targets, errors).
    Synthesized,
}

impl Source {
    /// A bounded label for metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Upstream => "upstream",
            Self::Cache => "cache",
            Self::Stale => "stale",
            Self::Merged => "merged",
            Self::Synthesized => "synthesized",
        }
    }
}

/// How long a reply built from an answer may be reused for the same question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Reuse {
    /// As long as the data it was built from is fresh (the answer cache's rules by source).
    #[default]
    Fresh,
    /// Given because upstream failed (a fallback zone's static data, a stale answer, the
    /// static half of a merge): no longer than `upstream.retry_after`, then upstream is
    /// asked again.
    UntilRetry,
    /// Drawn per response (the health policy's weighted-random SRV order): never reused.
    Never,
}

/// A complete answer to one question, before it is put on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Response code.
    pub rcode: Rcode,
    /// Set for answers from the operator's static zones.
    pub authoritative: bool,
    /// Answer section.
    pub answers: Vec<Rec>,
    /// Authority section (the SOA for NXDOMAIN / NODATA).
    pub authority: Vec<Rec>,
    /// Additional section.
    pub additional: Vec<Rec>,
    /// Where it came from.
    pub source: Source,
    /// AD: an upstream marked `trusted_ad` validated it (RFC 4035 §3.2.3). Never set on
    /// data sipdns made or changed.
    pub authentic_data: bool,
    /// How long a reply built from it may be reused.
    pub reuse: Reuse,
}

impl Answer {
    /// An empty answer with the given code.
    pub fn empty(rcode: Rcode, source: Source) -> Self {
        Self {
            rcode,
            authoritative: false,
            answers: Vec::new(),
            authority: Vec::new(),
            additional: Vec::new(),
            source,
            authentic_data: false,
            reuse: Reuse::Fresh,
        }
    }

    /// SERVFAIL, nothing else.
    pub fn servfail() -> Self {
        Self::empty(Rcode::ServFail, Source::Synthesized)
    }

    /// NOERROR with records in the answer section and nothing else.
    pub fn records(answers: Vec<Rec>, source: Source) -> Self {
        Self {
            answers,
            ..Self::empty(Rcode::NoError, source)
        }
    }

    /// The answer without DNSSEC records and with AD clear: what sipdns makes or rewrites
    /// itself carries no signature that would no longer match (RFC 4035 §3.2).
    pub fn without_dnssec(mut self) -> Self {
        for s in [&mut self.answers, &mut self.authority, &mut self.additional] {
            s.retain(|r| !r.rtype().is_dnssec());
        }
        self.authentic_data = false;
        self
    }

    /// True for NXDOMAIN, or NOERROR with no record of the asked type (NODATA).
    pub fn is_negative(&self, qtype: RType) -> bool {
        self.rcode == Rcode::NxDomain
            || (self.rcode == Rcode::NoError && !self.answers.iter().any(|r| r.rtype() == qtype))
    }
}

#[cfg(test)]
mod tests;
