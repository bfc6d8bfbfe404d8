//! The UDP transaction table: RFC 3261 §17.1.2 non-INVITE client transactions for the
//! OPTIONS probes over UDP. It sends a request, retransmits it, matches replies to it and
//! *returns* `(target, probe id, verdict)` from [`UdpTransactions::next`]; it never calls
//! back into the prober.
//!
//! - All probes share one socket per address family. Replies are matched by Via branch,
//!   Call-ID and CSeq against the outstanding probes; anything else is counted in
//!   `sipdns_probe_unmatched_total` and ignored.
//! - Retransmissions follow RFC 3261 §17.1.2.2 (Timer E: T1 = 500 ms doubling, capped at
//!   T2 = 4 s) until the probe's timeout (Timer F); a provisional reply stops them. A
//!   timeout is a local verdict with no code, so it can never be mistaken for a reply.
//! - ICMP errors are read from the socket's error queue (see [`transport::drain_icmp_errors`])
//!   and end the probe in flight to the destination they name.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use tokio::{
    net::UdpSocket,
    time::{Instant, sleep_until},
};

use super::{
    sip::{self, ProbeIds},
    state::{BadReason, Thresholds, Verdict},
    transport,
};
use crate::{
    metrics::Metrics,
    target::{TargetKey, Transport},
};

/// RFC 3261 §17.1.1.1: T1, the RTT estimate and first retransmission interval.
pub const T1: Duration = Duration::from_millis(500);
/// RFC 3261 §17.1.1.1: T2, the cap on the non-INVITE retransmission interval.
pub const T2: Duration = Duration::from_secs(4);
/// Timer events handled per wake-up before the caller looks at its other inputs.
const TIMER_BATCH: usize = 4096;

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

/// An outstanding UDP probe.
struct UdpProbe {
    key: TargetKey,
    ids: ProbeIds,
    bytes: Arc<[u8]>,
    dest: SocketAddr,
    sent: Instant,
    rto: Duration,
    deadline: Instant,
    timeout: Duration,
    provisional: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// Retransmit a probe (Timer E).
    Retransmit(u64),
    /// A probe's deadline (Timer F).
    Deadline(u64),
}

/// A verdict on one probe: the target, the prober's probe id, and the verdict.
pub(crate) type Done = (TargetKey, u64, Verdict);

/// The outstanding UDP probes and the sockets they travel on.
pub(crate) struct UdpTransactions {
    probes: HashMap<u64, UdpProbe>,
    by_branch: HashMap<String, u64>,
    /// The probe in flight per destination, for ICMP errors (one per target at a time).
    by_dest: HashMap<SocketAddr, u64>,
    timers: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    timer_seq: u64,
    udp4: Option<Arc<UdpSocket>>,
    udp6: Option<Arc<UdpSocket>>,
    /// Source address per destination, for Via/Contact.
    sources: HashMap<IpAddr, IpAddr>,
    /// Verdicts reached but not returned yet.
    done: VecDeque<Done>,
    buf4: Vec<u8>,
    buf6: Vec<u8>,
    metrics: Arc<Metrics>,
}

async fn recv_opt(
    sock: Option<&Arc<UdpSocket>>,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    match sock {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

impl UdpTransactions {
    /// An empty table; sockets are opened on first use.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            probes: HashMap::new(),
            by_branch: HashMap::new(),
            by_dest: HashMap::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            udp4: None,
            udp6: None,
            sources: HashMap::new(),
            done: VecDeque::new(),
            buf4: vec![0u8; 65_535],
            buf6: vec![0u8; 65_535],
            metrics,
        }
    }

    /// Sends the first request of a probe and starts its timers. An error is the probe's
    /// verdict (nothing was sent).
    pub(crate) async fn start(&mut self, req: UdpRequest<'_>) -> Result<(), Verdict> {
        let dest = SocketAddr::new(req.key.ip, req.key.port);
        let sock = self.socket(dest.is_ipv6())?;
        let port = sock
            .local_addr()
            .map_err(|e| Verdict::bad(BadReason::Error, e.to_string()))?
            .port();
        let src = match self.sources.get(&dest.ip()) {
            Some(ip) => *ip,
            None => {
                let ip = transport::route_source(dest.ip()).ok_or_else(|| {
                    Verdict::bad(BadReason::Unreachable, format!("no route to {}", dest.ip()))
                })?;
                self.sources.insert(dest.ip(), ip);
                ip
            }
        };
        let bytes: Arc<[u8]> = sip::build_options(&sip::OptionsRequest {
            transport: Transport::Udp,
            host: req.uri_host,
            port: dest.port(),
            local: SocketAddr::new(src, port),
            from_domain: req.from_domain,
            user_agent: req.user_agent,
            ids: &req.ids,
        })
        .map_err(|e| Verdict::bad(BadReason::Error, e.to_string()))?
        .into();
        self.send(&sock, &bytes, dest).await?;
        let now = Instant::now();
        let deadline = now + req.timeout;
        if now + T1 < deadline {
            self.schedule(now + T1, Timer::Retransmit(req.id));
        }
        self.schedule(deadline, Timer::Deadline(req.id));
        self.by_branch.insert(req.ids.branch.clone(), req.id);
        self.by_dest.insert(dest, req.id);
        self.probes.insert(
            req.id,
            UdpProbe {
                key: req.key,
                ids: req.ids,
                bytes,
                dest,
                sent: now,
                rto: T1,
                deadline,
                timeout: req.timeout,
                provisional: false,
            },
        );
        Ok(())
    }

    /// Forgets the probe in flight to a target that is gone (no verdict will come).
    pub(crate) fn cancel(&mut self, key: &TargetKey) {
        let dest = SocketAddr::new(key.ip, key.port);
        if let Some(id) = self.by_dest.get(&dest).copied() {
            self.remove(id);
        }
    }

    /// Drops cached routes once they outnumber the targets well (targets come and go).
    pub(crate) fn trim_routes(&mut self, targets: usize) {
        if self.sources.len() > 2 * targets + 16 {
            self.sources.clear();
        }
    }

    /// Waits for the next verdict: a matching final reply, an ICMP error or a timeout.
    /// Retransmits while it waits. Cancel-safe: a verdict reached is kept for the next
    /// call.
    pub(crate) async fn next(&mut self, th: &Thresholds) -> Done {
        loop {
            if let Some(d) = self.done.pop_front() {
                return d;
            }
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let (s4, s6) = (self.udp4.clone(), self.udp6.clone());
            tokio::select! {
                r = recv_opt(s4.as_ref(), &mut self.buf4) => self.on_datagram(s4.as_ref(), r, false, th),
                r = recv_opt(s6.as_ref(), &mut self.buf6) => self.on_datagram(s6.as_ref(), r, true, th),
                () = sleep_until(next_timer.unwrap_or_else(Instant::now)), if next_timer.is_some() => {
                    self.fire_timers().await;
                }
            }
        }
    }

    fn socket(&mut self, v6: bool) -> Result<Arc<UdpSocket>, Verdict> {
        let slot = if v6 { &mut self.udp6 } else { &mut self.udp4 };
        if let Some(s) = slot {
            return Ok(s.clone());
        }
        let s = transport::bind_udp(v6)
            .map(Arc::new)
            .map_err(|e| Verdict::bad(BadReason::Error, format!("cannot open UDP socket: {e}")))?;
        *slot = Some(s.clone());
        Ok(s)
    }

    fn schedule(&mut self, at: Instant, t: Timer) {
        self.timer_seq += 1;
        self.timers.push(Reverse((at, self.timer_seq, t)));
    }

    fn remove(&mut self, id: u64) -> Option<UdpProbe> {
        let p = self.probes.remove(&id)?;
        self.by_branch.remove(&p.ids.branch);
        if self.by_dest.get(&p.dest) == Some(&id) {
            self.by_dest.remove(&p.dest);
        }
        Some(p)
    }

    /// Sends on a shared socket. An ICMP error reported on this send belongs to an
    /// earlier datagram: it is handed to its probe and the send is tried once more.
    async fn send(
        &mut self,
        sock: &Arc<UdpSocket>,
        bytes: &[u8],
        dest: SocketAddr,
    ) -> Result<(), Verdict> {
        for attempt in 0..2 {
            match sock.send_to(bytes, dest).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused && attempt == 0 => {
                    self.on_icmp(sock);
                }
                Err(e) => {
                    let v = Verdict::bad(
                        match e.kind() {
                            std::io::ErrorKind::HostUnreachable
                            | std::io::ErrorKind::NetworkUnreachable => BadReason::Unreachable,
                            _ => BadReason::Error,
                        },
                        format!("send: {e}"),
                    );
                    return Err(v);
                }
            }
        }
        Err(Verdict::bad(
            BadReason::Error,
            "send failed twice".to_owned(),
        ))
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        for _ in 0..TIMER_BATCH {
            match self.timers.peek() {
                Some(Reverse((at, _, _))) if *at <= now => {}
                _ => break,
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
            match timer {
                Timer::Retransmit(id) => self.retransmit(id).await,
                Timer::Deadline(id) => {
                    if let Some(p) = self.remove(id) {
                        let what = if p.provisional {
                            "no final reply"
                        } else {
                            "no reply"
                        };
                        let v = Verdict::bad(
                            BadReason::Timeout,
                            format!("{what} within {:?}", p.timeout),
                        );
                        self.done.push_back((p.key, id, v));
                    }
                }
            }
        }
    }

    async fn retransmit(&mut self, id: u64) {
        let Some(p) = self.probes.get_mut(&id) else {
            return;
        };
        if p.provisional {
            return;
        }
        // Timer E doubles up to T2 (RFC 3261 §17.1.2.2).
        p.rto = (p.rto * 2).min(T2);
        let (bytes, dest, next, deadline) = (p.bytes.clone(), p.dest, p.rto, p.deadline);
        let now = Instant::now();
        if now + next < deadline {
            self.schedule(now + next, Timer::Retransmit(id));
        }
        let Ok(sock) = self.socket(dest.is_ipv6()) else {
            return;
        };
        if let Err(v) = self.send(&sock, &bytes, dest).await
            && let Some(p) = self.remove(id)
        {
            self.done.push_back((p.key, id, v));
        }
    }

    fn on_icmp(&mut self, sock: &Arc<UdpSocket>) {
        for dest in transport::drain_icmp_errors(sock) {
            let Some(id) = self.by_dest.get(&dest).copied() else {
                continue;
            };
            if let Some(p) = self.remove(id) {
                self.done.push_back((
                    p.key,
                    id,
                    Verdict::bad(BadReason::Unreachable, "ICMP unreachable".to_owned()),
                ));
            }
        }
    }

    fn on_datagram(
        &mut self,
        sock: Option<&Arc<UdpSocket>>,
        r: std::io::Result<(usize, SocketAddr)>,
        v6: bool,
        th: &Thresholds,
    ) {
        let n = match r {
            Ok((n, _from)) => n,
            Err(e) => {
                if let Some(s) = sock {
                    self.on_icmp(s);
                }
                if e.kind() != std::io::ErrorKind::ConnectionRefused {
                    tracing::debug!(error = %e, "probe socket receive error");
                }
                return;
            }
        };
        let buf = if v6 { &self.buf6 } else { &self.buf4 };
        let Some(msg) = buf.get(..n) else {
            return;
        };
        let unmatched = |label: &str| {
            self.metrics
                .probe_unmatched
                .with_label_values(&[label])
                .inc();
        };
        let reply = match sip::parse_reply(msg) {
            Ok(r) => r,
            Err(e) => {
                // CRLF keep-alives (RFC 5626 §4.4.1) are not worth counting.
                if !msg.iter().all(|b| matches!(b, b'\r' | b'\n')) {
                    tracing::debug!(error = %e, msg = %sip::excerpt(msg), "unparsable message on the probe socket");
                    unmatched(e.label());
                }
                return;
            }
        };
        let Some(id) = self.by_branch.get(&reply.branch).copied() else {
            unmatched("no_probe");
            return;
        };
        let Some(p) = self.probes.get_mut(&id) else {
            unmatched("no_probe");
            return;
        };
        if !reply.matches(&p.ids) {
            unmatched("mismatch");
            return;
        }
        if reply.is_provisional() {
            // §17.1.2.2: a provisional reply moves the transaction to Proceeding.
            p.provisional = true;
            return;
        }
        let rtt = p.sent.elapsed();
        if let Some(p) = self.remove(id) {
            let v = Verdict::from_reply(th, reply.code, rtt, reply.retry_after);
            self.done.push_back((p.key, id, v));
        }
    }
}
