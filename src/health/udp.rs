//! The UDP transaction table: RFC 3261 §17.1.2 non-INVITE client transactions for the
//! OPTIONS probes over UDP. It sends a request, retransmits it, matches replies to it and
//! *returns* `(target, probe id, verdict)` from [`UdpTransactions::next`]; it never calls
//! back into the prober.
//!
//! # One socket per transaction
//!
//! Each probe opens its own UDP socket and `connect`s it to the target, so the kernel
//! picks a fresh random ephemeral source port for it (Linux draws the port at random on
//! the implicit bind). The Via and Contact headers carry that socket's own address. This
//! is what makes a probe hard to fool from off the path:
//!
//! - **ICMP errors** count only for the socket's exact 4-tuple: Linux delivers an ICMP
//!   error to the UDP socket that matches the quoted header's addresses and ports, and a
//!   connected socket matches only its own remote address and port (`__udp4_lib_err` ->
//!   `__udp4_lib_lookup`); it then reports the error on the next `recv` (port unreachable
//!   as `ECONNREFUSED`, host/net unreachable as `EHOSTUNREACH`/`ENETUNREACH`). A blind
//!   forger must guess the port of a socket that lives for one transaction. Errors on
//!   other sockets (another probe, a TCP connection) never reach this one.
//! - **Replies** reach the socket only from the target's address and port (the kernel
//!   drops other sources for a connected socket) and must still match the Via branch,
//!   Call-ID and CSeq; anything else is counted in `sipdns_probe_unmatched_total` and
//!   ignored.
//!
//! Retransmissions follow RFC 3261 §17.1.2.2 (Timer E: T1 = 500 ms doubling, capped at
//! T2 = 4 s) until the probe's timeout (Timer F); a provisional reply stops them. A
//! timeout is a local verdict with no code, so it can never be mistaken for a reply.
//!
//! # Cost and bounds
//!
//! A transaction costs a socket, a connect and an epoll registration (a few µs on
//! loopback; see `docs/probing-internals.md`) and holds one file descriptor until its
//! final reply or timeout. At most [`UdpTransactions::capacity`] are open at once (an
//! eighth of the soft open-files limit, at most [`MAX_IN_FLIGHT`]); the prober holds back
//! further probes until one ends, so a flood of dead targets delays probes but never takes
//! the descriptors the DNS listeners need. The transactions are futures polled by the
//! prober's own task (no task per probe).

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use futures::{StreamExt as _, future::BoxFuture, stream::FuturesUnordered};
use tokio::{io::Interest, net::UdpSocket, time::Instant};

use super::{
    sip::{self, ProbeIds},
    state::{BadReason, Thresholds, Verdict},
};
use crate::{
    metrics::Metrics,
    target::{TargetKey, Transport},
};

/// RFC 3261 §17.1.1.1: T1, the RTT estimate and first retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.1.1: T2, the cap on the non-INVITE retransmission interval.
pub const T2: Duration = Duration::from_secs(4);
/// Most UDP transactions (hence sockets) open at once.
pub const MAX_IN_FLIGHT: usize = 4096;
/// Fewest UDP transactions allowed at once, whatever the open-files limit says.
const MIN_IN_FLIGHT: usize = 16;

/// One UDP probe to start.
pub(crate) struct UdpRequest<'a> {
    /// The target.
    pub(crate) key: TargetKey,
    /// The prober's id of this probe, returned with its verdict.
    pub(crate) id: u64,
    /// Branch, Call-ID, CSeq and tag of the request.
    pub(crate) ids: ProbeIds,
    /// Request-URI host.
    pub(crate) uri_host: &'a str,
    /// From host.
    pub(crate) from_domain: &'a str,
    /// User-Agent.
    pub(crate) user_agent: &'a str,
    /// Timer F: the verdict is a timeout this long after the first send.
    pub(crate) timeout: Duration,
}

/// How a transaction ended, before the thresholds judge a reply.
enum Outcome {
    /// A final reply.
    Reply {
        code: u16,
        rtt: Duration,
        retry_after: Option<Duration>,
    },
    /// No usable reply: timeout, ICMP error, send failure.
    Failed(Verdict),
}

/// A verdict on one probe: the target, the prober's probe id, and the verdict.
pub(crate) type Done = (TargetKey, u64, Verdict);

/// The open UDP transactions.
pub(crate) struct UdpTransactions {
    running: FuturesUnordered<BoxFuture<'static, (TargetKey, u64, Outcome)>>,
    capacity: usize,
    metrics: Arc<Metrics>,
}

impl UdpTransactions {
    /// An empty table, bounded by the process' open-files limit.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self::with_capacity(metrics, capacity_for(crate::descriptors::soft_limit()))
    }

    /// An empty table holding at most `capacity` transactions (at least one).
    pub(crate) fn with_capacity(metrics: Arc<Metrics>, capacity: usize) -> Self {
        Self {
            running: FuturesUnordered::new(),
            capacity: capacity.max(1),
            metrics,
        }
    }

    /// Most transactions open at once.
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    /// True if another transaction may start now.
    pub(crate) fn has_room(&self) -> bool {
        self.running.len() < self.capacity
    }

    /// Opens the transaction's socket and sends the first request. An error is the
    /// probe's verdict (nothing is left running).
    pub(crate) fn start(&mut self, req: UdpRequest<'_>) -> Result<(), Verdict> {
        let dest = SocketAddr::new(req.key.ip, req.key.port);
        let sock = connect(dest).map_err(|e| io_verdict("cannot open a UDP socket", &e))?;
        let local = sock
            .local_addr()
            .map_err(|e| io_verdict("cannot open a UDP socket", &e))?;
        let bytes = sip::build_options(&sip::OptionsRequest {
            transport: Transport::Udp,
            host: req.uri_host,
            port: dest.port(),
            local,
            from_domain: req.from_domain,
            user_agent: req.user_agent,
            ids: &req.ids,
        })
        .map_err(|e| Verdict::bad(BadReason::Error, e.to_string()))?;
        // A fresh socket's send buffer is empty: this does not block.
        send_now(&sock, &bytes).map_err(|e| io_verdict("send", &e))?;
        let (key, id, metrics) = (req.key, req.id, self.metrics.clone());
        let sent = Instant::now();
        self.running.push(Box::pin(async move {
            let outcome = transaction(sock, bytes, req.ids, sent, req.timeout, &metrics).await;
            (key, id, outcome)
        }));
        Ok(())
    }

    /// Waits for the next verdict: a matching final reply, an ICMP error or a timeout.
    /// Pending forever while no transaction is open. Cancel-safe.
    pub(crate) async fn next(&mut self, th: &Thresholds) -> Done {
        let Some((key, id, outcome)) = self.running.next().await else {
            return std::future::pending().await;
        };
        let v = match outcome {
            Outcome::Reply {
                code,
                rtt,
                retry_after,
            } => Verdict::from_reply(th, code, rtt, retry_after),
            Outcome::Failed(v) => v,
        };
        (key, id, v)
    }
}

/// A UDP socket connected to `dest` (the kernel picks the source address by route and a
/// random ephemeral port), registered with the runtime.
fn connect(dest: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if dest.is_ipv6() {
        Domain::IPV6
    } else {
        Domain::IPV4
    };
    let sock = Socket::new(domain, Type::DGRAM.nonblocking(), Some(Protocol::UDP))?;
    // No bind: connect() binds to a random ephemeral port and the route's source address.
    sock.connect(&dest.into())?;
    UdpSocket::from_std(sock.into())
}

/// Sends one datagram now, straight to the kernel: the runtime's readiness cache would
/// refuse a send on a socket registered a moment ago. `WouldBlock` if the buffer is full.
fn send_now(sock: &UdpSocket, bytes: &[u8]) -> io::Result<usize> {
    socket2::SockRef::from(sock).send(bytes)
}

fn io_verdict(stage: &str, e: &io::Error) -> Verdict {
    use io::ErrorKind as K;
    match e.kind() {
        // ICMP errors reported on the connected socket (port, host or net unreachable).
        K::ConnectionRefused | K::HostUnreachable | K::NetworkUnreachable => {
            Verdict::bad(BadReason::Unreachable, format!("ICMP unreachable ({e})"))
        }
        _ => Verdict::bad(BadReason::Error, format!("{stage}: {e}")),
    }
}

thread_local! {
    /// One receive buffer per thread, not per transaction (thousands may be open): a
    /// thread polls one transaction at a time, and a datagram is judged before the next
    /// is read.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0; sip::MAX_MESSAGE]);
}

/// One transaction, from the first send (done by the caller at `sent`) to its outcome.
async fn transaction(
    sock: UdpSocket,
    bytes: Vec<u8>,
    ids: ProbeIds,
    sent: Instant,
    timeout: Duration,
    metrics: &Metrics,
) -> Outcome {
    let deadline = sent + timeout;
    let mut rto = T1;
    let first_retransmit = Some(sent + T1).filter(|t| *t < deadline);
    let mut provisional = false;
    // The next retransmission (Timer E) if it comes before the deadline, else the deadline.
    let sleep = tokio::time::sleep_until(first_retransmit.unwrap_or(deadline));
    tokio::pin!(sleep);
    // Bounded: every pass either reads a datagram, retransmits (at most
    // log2(timeout / T1) + timeout / T2 times) or ends at the deadline.
    loop {
        tokio::select! {
            r = sock.ready(Interest::READABLE | Interest::ERROR) => {
                let ready = match r {
                    Ok(ready) => ready,
                    Err(e) => return Outcome::Failed(io_verdict("receive", &e)),
                };
                if ready.is_error() {
                    // An ICMP error for this socket's 4-tuple (EPOLLERR without EPOLLIN).
                    match sock.take_error() {
                        Ok(Some(e)) | Err(e) => {
                            return Outcome::Failed(io_verdict("receive", &e));
                        }
                        Ok(None) => {
                            // Spurious: clear the readiness so the next wait blocks.
                            let _ = sock.try_io(Interest::ERROR, || {
                                Err::<(), _>(io::Error::from(io::ErrorKind::WouldBlock))
                            });
                        }
                    }
                }
                let heard = RECV_BUF.with_borrow_mut(|buf| {
                    sock.try_recv(buf).map(|n| judge(buf.get(..n).unwrap_or_default(), &ids, metrics))
                });
                let heard = match heard {
                    Ok(heard) => heard,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Outcome::Failed(io_verdict("receive", &e)),
                };
                match heard {
                    Some(Heard::Final { code, retry_after }) => {
                        return Outcome::Reply { code, rtt: sent.elapsed(), retry_after };
                    }
                    Some(Heard::Provisional) => {
                        // §17.1.2.2: a provisional reply moves the transaction to
                        // Proceeding; no more retransmissions.
                        provisional = true;
                        sleep.as_mut().reset(deadline);
                    }
                    None => {}
                }
            }
            () = &mut sleep => {
                let now = Instant::now();
                if now >= deadline {
                    let what = if provisional { "no final reply" } else { "no reply" };
                    return Outcome::Failed(Verdict::bad(
                        BadReason::Timeout,
                        format!("{what} within {timeout:?}"),
                    ));
                }
                // Timer E doubles up to T2 (RFC 3261 §17.1.2.2).
                rto = (rto * 2).min(T2);
                let next = Some(now + rto).filter(|t| *t < deadline);
                sleep.as_mut().reset(next.unwrap_or(deadline));
                match send_now(&sock, &bytes) {
                    // A full send buffer loses this retransmission as the network might.
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Outcome::Failed(io_verdict("send", &e)),
                }
            }
        }
    }
}

/// What a datagram on a transaction's socket says.
enum Heard {
    Provisional,
    Final {
        code: u16,
        retry_after: Option<Duration>,
    },
}

/// Parses and matches a datagram; anything that is not a reply to this request is counted
/// and ignored (`None`).
fn judge(msg: &[u8], ids: &ProbeIds, metrics: &Metrics) -> Option<Heard> {
    let unmatched = |label: &str| {
        metrics.probe_unmatched.with_label_values(&[label]).inc();
    };
    let reply = match sip::parse_reply(msg) {
        Ok(r) => r,
        Err(e) => {
            // CRLF keep-alives (RFC 5626 §4.4.1) are not worth counting.
            if !msg.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                tracing::debug!(error = %e, msg = %sip::excerpt(msg), "unparsable message on a probe socket");
                unmatched(e.label());
            }
            return None;
        }
    };
    if reply.branch != ids.branch {
        unmatched("no_probe");
        return None;
    }
    if !reply.matches(ids) {
        unmatched("mismatch");
        return None;
    }
    if reply.is_provisional() {
        return Some(Heard::Provisional);
    }
    Some(Heard::Final {
        code: reply.code,
        retry_after: reply.retry_after,
    })
}

/// An eighth of the open-files limit (half of the quarter [`crate::descriptors`] keeps
/// from client connections for serving), within [`MIN_IN_FLIGHT`, `MAX_IN_FLIGHT`]: the
/// rest of that reserve stays for the DNS listeners, upstream sockets, TCP/TLS probes and
/// reloads.
fn capacity_for(soft_nofile: Option<u64>) -> usize {
    soft_nofile
        .map_or(MAX_IN_FLIGHT, |n| {
            usize::try_from(n / 8).unwrap_or(MAX_IN_FLIGHT)
        })
        .clamp(MIN_IN_FLIGHT, MAX_IN_FLIGHT)
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, sync::Arc, time::Duration};

    use super::{UdpRequest, UdpTransactions, capacity_for};
    use crate::{
        health::{
            sip::ProbeIds,
            state::{BadReason, Thresholds, Verdict},
        },
        metrics::Metrics,
        target::{TargetKey, Transport},
    };

    fn request(key: TargetKey, id: u64) -> UdpRequest<'static> {
        UdpRequest {
            key,
            id,
            ids: ProbeIds::fresh(1),
            uri_host: "127.0.0.1",
            from_domain: "sipdns.invalid",
            user_agent: "sipdns-test",
            timeout: Duration::from_secs(2),
        }
    }

    #[tokio::test]
    async fn a_full_table_has_room_again_when_a_transaction_ends() {
        // A closed port: each transaction ends on the kernel's ICMP port unreachable, read
        // from its own connected socket, long before the 2 s timeout.
        let closed: SocketAddr = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.local_addr().unwrap()
        };
        let key = TargetKey {
            ip: closed.ip(),
            port: closed.port(),
            transport: Transport::Udp,
        };
        let mut t = UdpTransactions::with_capacity(Arc::new(Metrics::new()), 2);
        let th = Thresholds::default();
        assert!(t.start(request(key, 1)).is_ok());
        assert!(t.has_room());
        assert!(t.start(request(key, 2)).is_ok());
        assert!(!t.has_room());
        let (k, _, v) = tokio::time::timeout(Duration::from_secs(1), t.next(&th))
            .await
            .unwrap();
        assert_eq!(k, key);
        assert!(
            matches!(
                v,
                Verdict::Bad {
                    reason: BadReason::Unreachable,
                    ..
                }
            ),
            "{v:?}"
        );
        assert!(t.has_room());
    }

    #[test]
    fn capacity_follows_the_open_files_limit() {
        assert_eq!(capacity_for(Some(1024)), 128);
        assert_eq!(capacity_for(Some(256)), 32);
        assert_eq!(capacity_for(Some(20)), 16);
        assert_eq!(capacity_for(Some(1 << 20)), 4096);
        assert_eq!(capacity_for(None), 4096);
    }
}
