//! What a SIP target is: one endpoint (address, port, transport) that phones may be sent to,
//! plus the names it was found under. Shared by config, the prober and the answer policy.

use std::{fmt, net::IpAddr, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::record::DomainName;

/// A SIP transport, as RFC 3263 names them in NAPTR services and SRV prefixes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `SIP+D2U`, `_sip._udp`.
    Udp,
    /// `SIP+D2T`, `_sip._tcp`.
    Tcp,
    /// `SIPS+D2T`, `_sips._tcp`.
    Tls,
}

impl Transport {
    /// All transports, in the default NAPTR synthesis order (TLS, TCP, UDP).
    pub const ALL: [Self; 3] = [Self::Tls, Self::Tcp, Self::Udp];

    /// The SRV owner prefix for this transport (`_sip._udp`).
    pub fn srv_prefix(self) -> &'static str {
        match self {
            Self::Udp => "_sip._udp",
            Self::Tcp => "_sip._tcp",
            Self::Tls => "_sips._tcp",
        }
    }

    /// The NAPTR service field for this transport (RFC 3263 §4.1).
    pub fn naptr_service(self) -> &'static str {
        match self {
            Self::Udp => "SIP+D2U",
            Self::Tcp => "SIP+D2T",
            Self::Tls => "SIPS+D2T",
        }
    }

    /// Reads a NAPTR service field (case-insensitive); `None` for non-SIP services.
    pub fn from_naptr_service(service: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.naptr_service().eq_ignore_ascii_case(service))
    }

    /// Reads the transport from an SRV owner name (`_sip._tcp.pbx.example.org.`).
    pub fn from_srv_name(name: &DomainName) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|t| name.as_str().starts_with(&format!("{}.", t.srv_prefix())))
    }

    /// The default port for this transport (RFC 3261 §19.1.2).
    pub fn default_port(self) -> u16 {
        match self {
            Self::Udp | Self::Tcp => 5060,
            Self::Tls => 5061,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
            Self::Tls => "tls",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Ok(Self::Udp),
            "tcp" => Ok(Self::Tcp),
            "tls" => Ok(Self::Tls),
            _ => Err(format!(
                "unknown transport {s:?} (expected udp, tcp or tls)"
            )),
        }
    }
}

/// The identity of a probed endpoint. Health is kept per key: two SRV records that point to
/// the same address, port and transport share one health state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TargetKey {
    /// Address the prober sends to.
    pub ip: IpAddr,
    /// Port.
    pub port: u16,
    /// Transport.
    pub transport: Transport,
}

impl fmt::Display for TargetKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            IpAddr::V4(ip) => write!(f, "{ip}:{}/{}", self.port, self.transport),
            IpAddr::V6(ip) => write!(f, "[{ip}]:{}/{}", self.port, self.transport),
        }
    }
}

impl FromStr for TargetKey {
    type Err = String;
    /// `192.0.2.10:5060/udp`, `[2001:db8::10]:5061/tls`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, transport) = s
            .rsplit_once('/')
            .ok_or_else(|| format!("target {s:?} must look like 192.0.2.10:5060/udp"))?;
        let sa: std::net::SocketAddr = addr
            .parse()
            .map_err(|e| format!("target {s:?}: bad address: {e}"))?;
        Ok(Self {
            ip: sa.ip(),
            port: sa.port(),
            transport: transport.parse()?,
        })
    }
}

/// A target as discovered: its key plus what the prober needs to talk to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Target {
    /// Address, port, transport.
    pub key: TargetKey,
    /// The host name the address came from (SRV target or the SIP domain itself); used as the
    /// Request-URI host and as TLS SNI.
    pub host: DomainName,
    /// The SIP domain this target serves.
    pub domain: DomainName,
    /// True for the operator's fallback (survivability) targets.
    pub fallback: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transport_names() {
        assert_eq!(
            Transport::from_naptr_service("sip+d2t"),
            Some(Transport::Tcp)
        );
        assert_eq!(Transport::from_naptr_service("E2U+sip"), None);
        let n = DomainName::parse("_sips._tcp.pbx.example.org").unwrap();
        assert_eq!(Transport::from_srv_name(&n), Some(Transport::Tls));
    }

    #[test]
    fn target_key_round_trips() {
        let k: TargetKey = "192.0.2.10:5060/udp".parse().unwrap();
        assert_eq!(k.to_string(), "192.0.2.10:5060/udp");
        let k6: TargetKey = "[2001:db8::10]:5061/tls".parse().unwrap();
        assert_eq!(k6.to_string(), "[2001:db8::10]:5061/tls");
        assert!("192.0.2.10:5060".parse::<TargetKey>().is_err());
        assert!("192.0.2.10:5060/sctp".parse::<TargetKey>().is_err());
    }
}
