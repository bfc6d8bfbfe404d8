//! The upstream server set: sends one question to the configured resolvers through
//! hickory-resolver's name-server pools and turns the reply into a plain [`Answer`].
//!
//! Each server gets its own single-server `NameServerPool` (UDP first, TCP when the reply is
//! truncated, connection reuse, the per-try timeout) and this module walks the servers
//! itself: hickory's multi-server pool gives up on the first SERVFAIL or REFUSED, while a
//! forwarder must try the next server before declaring the upstream down (serve-stale hinges
//! on "every upstream failed"). We do not use `Resolver::lookup`: it chases CNAMEs, answers
//! `localhost` itself and drops the CNAME of a CNAME -> NXDOMAIN reply; a forwarder relays.

use std::{
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
};

use hickory_resolver::{
    NameServerPool, PoolContext, TlsConfig,
    config::{ConnectionConfig, NameServerConfig, ResolverOpts, ServerOrderingStrategy},
    net::{
        DnsError, NetError, NoRecords,
        runtime::TokioRuntimeProvider,
        xfer::{DnsHandle, FirstAnswer},
    },
    proto::{
        op::{DnsRequestOptions, DnsResponse, Query, ResponseCode},
        rr::{Record, RecordType},
    },
};

use super::UpstreamError;
use crate::{
    config::UpstreamConfig,
    hickory::{name_to_hickory, rec_from_hickory},
    metrics::Metrics,
    record::{Answer, DomainName, RType, Rcode, Rec, Source},
};

/// Most requests in flight on one TCP connection to an upstream (hickory's default is 32;
/// a forwarder for a whole office multiplexes more).
const MAX_ACTIVE_REQUESTS: usize = 128;

struct Server {
    addr: SocketAddr,
    pool: NameServerPool<TokioRuntimeProvider>,
}

/// The configured upstream resolvers.
pub(crate) struct Upstreams {
    servers: Vec<Server>,
    /// The server that answered last; the next question starts there, so a dead first server
    /// costs one timeout, not one per question.
    preferred: AtomicUsize,
    /// Rounds over the whole server set per question.
    attempts: usize,
}

impl Upstreams {
    /// Builds the server set from `servers`, or from the resolv.conf when that is empty.
    pub(crate) fn from_config(cfg: &UpstreamConfig) -> Result<Self, UpstreamError> {
        let addrs = if cfg.servers.is_empty() {
            read_resolv_conf(&cfg.resolv_conf)?
        } else {
            cfg.servers.clone()
        };
        // Only the pool's own settings matter here: caching, attempts, hosts file and search
        // domains belong to `Resolver`, which we do not use.
        let mut options = ResolverOpts::default();
        options.timeout = cfg.timeout;
        options.num_concurrent_reqs = 1;
        options.max_active_requests = MAX_ACTIVE_REQUESTS;
        options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        let tls = TlsConfig::new().map_err(|e| UpstreamError::Config(e.to_string()))?;
        let cx = Arc::new(PoolContext::new(options, tls));
        let servers = addrs
            .into_iter()
            .map(|addr| {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                Server {
                    addr,
                    pool: NameServerPool::from_config(
                        [ns],
                        cx.clone(),
                        TokioRuntimeProvider::new(),
                    ),
                }
            })
            .collect();
        Ok(Self {
            servers,
            preferred: AtomicUsize::new(0),
            attempts: cfg.attempts.max(1),
        })
    }

    /// Asks the upstreams, server after server, round after round, until one gives an
    /// answer (NOERROR, NXDOMAIN or NODATA). Every failed try is counted in
    /// `upstream_errors{kind}`; the error returned is the most telling one seen.
    pub(crate) async fn query(
        &self,
        name: &DomainName,
        rtype: RType,
        metrics: &Metrics,
    ) -> Result<Answer, UpstreamError> {
        let qname = name_to_hickory(name).map_err(|e| UpstreamError::Other(e.to_string()))?;
        let query = Query::query(qname, RecordType::from(rtype.0));
        let n = self.servers.len();
        let start = self.preferred.load(Ordering::Relaxed);
        let mut worst: Option<UpstreamError> = None;
        for _round in 0..self.attempts {
            for i in 0..n {
                let idx = (start + i) % n;
                let Some(server) = self.servers.get(idx) else {
                    continue;
                };
                let reply = server
                    .pool
                    .lookup(query.clone(), DnsRequestOptions::default())
                    .first_answer()
                    .await;
                match answer_from_reply(reply) {
                    Ok(answer) => {
                        self.preferred.store(idx, Ordering::Relaxed);
                        return Ok(answer);
                    }
                    Err(e) => {
                        tracing::debug!(upstream = %server.addr, %name, %rtype, error = %e, "upstream try failed");
                        metrics
                            .upstream_errors
                            .with_label_values(&[e.label()])
                            .inc();
                        worst = Some(match worst {
                            Some(w) if w.rank() >= e.rank() => w,
                            _ => e,
                        });
                    }
                }
            }
        }
        Err(worst.unwrap_or(UpstreamError::Other("no upstream servers".into())))
    }
}

fn read_resolv_conf(path: &Path) -> Result<Vec<SocketAddr>, UpstreamError> {
    let bad = |reason: String| UpstreamError::Config(format!("{}: {reason}", path.display()));
    let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let (config, _) =
        hickory_resolver::system_conf::parse_resolv_conf(data).map_err(|e| bad(e.to_string()))?;
    let addrs: Vec<SocketAddr> = config
        .name_servers()
        .iter()
        .map(|ns| SocketAddr::new(ns.ip, 53))
        .collect();
    if addrs.is_empty() {
        return Err(bad("no nameserver lines".into()));
    }
    Ok(addrs)
}

/// Sorts a reply into an answer to relay or a failure of this try.
fn answer_from_reply(reply: Result<DnsResponse, NetError>) -> Result<Answer, UpstreamError> {
    match reply {
        Ok(response) => {
            let rcode = rcode_from_hickory(response.response_code);
            let message = response.into_message();
            Ok(Answer {
                rcode,
                authoritative: false,
                answers: plain(&message.answers),
                authority: plain(&message.authorities),
                additional: plain(&message.additionals),
                source: Source::Upstream,
            })
        }
        // hickory turns NXDOMAIN and NODATA replies into this error; they are answers, and
        // the authority section (the SOA) is kept. The additional section of a negative
        // reply is dropped by hickory; it carries nothing a client needs.
        Err(NetError::Dns(DnsError::NoRecordsFound(NoRecords {
            response_code: code @ (ResponseCode::NXDomain | ResponseCode::NoError),
            authorities,
            ..
        }))) => Ok(Answer {
            rcode: rcode_from_hickory(code),
            authoritative: false,
            answers: Vec::new(),
            authority: authorities.map(|a| plain(&a)).unwrap_or_default(),
            additional: Vec::new(),
            source: Source::Upstream,
        }),
        Err(e) => Err(error_from_hickory(e)),
    }
}

fn plain(records: &[Record]) -> Vec<Rec> {
    records.iter().filter_map(rec_from_hickory).collect()
}

fn error_from_hickory(e: NetError) -> UpstreamError {
    match e {
        NetError::Timeout => UpstreamError::Timeout,
        NetError::Io(io) if io.kind() == std::io::ErrorKind::TimedOut => UpstreamError::Timeout,
        NetError::Io(io) => UpstreamError::Io(io.to_string()),
        NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail)) => UpstreamError::ServFail,
        NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)) => UpstreamError::Refused,
        other => UpstreamError::Other(other.to_string()),
    }
}

fn rcode_from_hickory(code: ResponseCode) -> Rcode {
    match code {
        ResponseCode::NoError => Rcode::NoError,
        ResponseCode::FormErr => Rcode::FormErr,
        ResponseCode::ServFail => Rcode::ServFail,
        ResponseCode::NXDomain => Rcode::NxDomain,
        ResponseCode::NotImp => Rcode::NotImp,
        ResponseCode::Refused => Rcode::Refused,
        ResponseCode::BADVERS => Rcode::BadVers,
        other => Rcode::Other(u16::from(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_classified() {
        assert_eq!(error_from_hickory(NetError::Timeout).label(), "timeout");
        assert_eq!(
            error_from_hickory(NetError::Dns(DnsError::ResponseCode(
                ResponseCode::ServFail
            )))
            .label(),
            "servfail"
        );
        assert_eq!(
            error_from_hickory(NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused)))
                .label(),
            "refused"
        );
        assert_eq!(
            error_from_hickory(NetError::Io(Arc::new(std::io::Error::from(
                std::io::ErrorKind::ConnectionRefused
            ))))
            .label(),
            "io"
        );
        assert_eq!(
            error_from_hickory(NetError::Dns(DnsError::ResponseCode(ResponseCode::FormErr)))
                .label(),
            "other"
        );
    }

    #[test]
    fn resolv_conf_servers_use_port_53() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        std::fs::write(&path, "search example.org\nnameserver 192.0.2.53\n").unwrap();
        assert_eq!(
            read_resolv_conf(&path).unwrap(),
            vec!["192.0.2.53:53".parse().unwrap()]
        );
        std::fs::write(&path, "search example.org\n").unwrap();
        assert!(matches!(
            read_resolv_conf(&path),
            Err(UpstreamError::Config(_))
        ));
        assert!(matches!(
            read_resolv_conf(&dir.path().join("missing")),
            Err(UpstreamError::Config(_))
        ));
    }
}
