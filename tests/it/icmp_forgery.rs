//! Forged ICMP cannot mark a healthy SIP server down (issue 14, finding 1).
//!
//! The attacker is a host on the LAN that knows what a LAN host can learn: the target's
//! address and port (from DNS), and every source port the prober has used towards the
//! attacker's own SIP server (sipdns probes it too: the "observer" here). It cannot see
//! the probes to the target. It floods ICMP port-unreachable quoting an IP/UDP header from
//! the prober (127.0.0.1, each port it has seen) to the target, sent from a raw socket
//! (needs root / `CAP_NET_RAW`, as in CI), for 10 probe intervals, while the target is a
//! sipp UAS that answers after 200 ms, so a probe is in flight most of the time.
//!
//! With one shared probe socket (the old design: one port for the process' life, and any
//! queued ICMP naming the target ended its probe), the target went down within a few
//! probes. With one connected socket per transaction, the kernel delivers ICMP only to the
//! socket of the exact 4-tuple, so the target stays up. A closed port still goes down
//! fast through the real ICMP the kernel sends, and TCP probes ignore ICMP quoting other
//! connections.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket},
    path::Path,
    process::Command,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use sipdns::{
    health::Health,
    target::{TargetKey, Transport},
};

use crate::common::{
    prober::start_extra,
    process::{Peer, free_port, require},
    sip::{fixtures, options_once, sipp_uas},
};

const INTERVAL: Duration = Duration::from_millis(400);
const TIMEOUT: Duration = Duration::from_secs(1);
const LOCALHOST: Ipv4Addr = Ipv4Addr::LOCALHOST;

fn key(port: u16, transport: Transport) -> TargetKey {
    TargetKey {
        ip: IpAddr::V4(LOCALHOST),
        port,
        transport,
    }
}

/// sipp answering OPTIONS over UDP after 200 ms; waits (bounded) until it answers.
fn slow_sipp(dir: &Path, port: u16) -> Peer {
    let mut cmd = Command::new(require("sipp", "sip-tester"));
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(fixtures().join("sipp/uas_options_slow.xml"))
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-t", "u1"])
        .args(["-nostdin", "-max_socket", "256"]);
    let mut peer = Peer::spawn("sipp", cmd, dir.join(format!("sipp-slow-{port}.log")));
    let addr = SocketAddr::from((LOCALHOST, port));
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        peer.assert_running();
        if options_once(addr, Transport::Udp, Duration::from_secs(1)) == Some(200) {
            return peer;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("slow sipp does not answer on {addr}:\n{}", peer.log());
}

/// The attacker's own SIP server: answers 200 at once and notes the source port of every
/// probe it gets.
struct Observer {
    port: u16,
    seen: Arc<Mutex<Vec<u16>>>,
    /// Probes whose Via did not name the address they came from.
    bad_via: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    async fn start() -> Self {
        let sock = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let bad_via = Arc::new(AtomicU64::new(0));
        let (bad, bad_via) = (bad_via.clone(), bad_via);
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((n, from)) = sock.recv_from(&mut buf).await {
                // The Via names the socket the probe came from (RFC 3261 §18.1.1).
                let via = format!("\r\nVia: SIP/2.0/UDP {from};branch=");
                if !String::from_utf8_lossy(&buf[..n]).contains(&via) {
                    bad_via.fetch_add(1, Ordering::Relaxed);
                }
                s.lock().unwrap().push(from.port());
                let reply = reply_200(&buf[..n]);
                let _ = sock.send_to(&reply, from).await;
            }
        });
        Self {
            port,
            seen,
            bad_via: bad,
            task,
        }
    }

    /// Distinct source ports seen so far, at most the last 64.
    fn ports(&self) -> Vec<u16> {
        let seen = self.seen.lock().unwrap();
        let mut out: Vec<u16> = Vec::new();
        for p in seen.iter().rev() {
            if !out.contains(p) {
                out.push(*p);
            }
            if out.len() == 64 {
                break;
            }
        }
        out
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A 200 OK copying Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2).
fn reply_200(req: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(req);
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in text.split("\r\n").skip(1) {
        let l = line.to_ascii_lowercase();
        if ["via:", "from:", "to:", "call-id:", "cseq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// RFC 1071 Internet checksum.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP destination-unreachable / port-unreachable message (RFC 792) quoting the IPv4
/// header and the first 8 bytes of a datagram `src -> dst` of protocol `proto` (UDP: the
/// UDP header; TCP: the ports and sequence number).
fn icmp_port_unreachable(src: SocketAddr, dst: SocketAddr, proto: u8) -> Vec<u8> {
    let (IpAddr::V4(s), IpAddr::V4(d)) = (src.ip(), dst.ip()) else {
        panic!("IPv4 only");
    };
    let mut inner = vec![
        0x45, 0, 0, 0, // version 4, IHL 5; TOS; total length (below)
        0x12, 0x34, 0x40, 0, // id; DF
        64, proto, 0, 0, // TTL; protocol; header checksum (below)
    ];
    inner[2..4].copy_from_slice(&(20u16 + 8 + 480).to_be_bytes());
    inner.extend_from_slice(&s.octets());
    inner.extend_from_slice(&d.octets());
    let c = checksum(&inner);
    inner[10..12].copy_from_slice(&c.to_be_bytes());
    inner.extend_from_slice(&src.port().to_be_bytes());
    inner.extend_from_slice(&dst.port().to_be_bytes());
    inner.extend_from_slice(&(8u16 + 480).to_be_bytes());
    inner.extend_from_slice(&[0, 0]);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0]; // type 3 code 3; checksum; unused
    icmp.extend_from_slice(&inner);
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    icmp
}

/// Floods forged ICMP on its own thread until stopped; counts what it sent.
struct Forger {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forger {
    /// `victims`: (target address, protocol); the quoted source ports come from `ports`.
    fn start(
        victims: Vec<(SocketAddr, u8)>,
        ports: impl Fn() -> Vec<u16> + Send + 'static,
    ) -> Self {
        use socket2::{Domain, Protocol, Socket, Type};
        let raw =
            Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)).unwrap_or_else(|e| {
                panic!("a raw ICMP socket needs root (CAP_NET_RAW), as in CI: {e}")
            });
        let to: socket2::SockAddr = SocketAddr::from((LOCALHOST, 0)).into();
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (st, se) = (stop.clone(), sent.clone());
        let thread = std::thread::spawn(move || {
            // Bounded by the stop flag, which the test sets after a bounded window (and
            // by a hard 60 s cap should the test panic first).
            let end = Instant::now() + Duration::from_secs(60);
            while !st.load(Ordering::Relaxed) && Instant::now() < end {
                for port in ports() {
                    let prober = SocketAddr::from((LOCALHOST, port));
                    for (victim, proto) in &victims {
                        let pkt = icmp_port_unreachable(prober, *victim, *proto);
                        if raw.send_to(&pkt, &to).is_ok() {
                            se.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        Self {
            stop,
            sent,
            thread: Some(thread),
        }
    }

    fn stop(&mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for Forger {
    fn drop(&mut self) {
        self.stop();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_icmp_does_not_mark_a_slow_healthy_uas_down() {
    let dir = tempfile::tempdir().unwrap();
    let slow_port = free_port();
    let _slow = slow_sipp(dir.path(), slow_port);
    let tcp_port = free_port();
    let _tcp = sipp_uas(dir.path(), tcp_port, Transport::Tcp);
    let observer = Observer::start().await;
    let closed_port = {
        let s = StdUdpSocket::bind((LOCALHOST, 0)).unwrap();
        s.local_addr().unwrap().port()
    };
    let (slow, tcp, seen, closed) = (
        key(slow_port, Transport::Udp),
        key(tcp_port, Transport::Tcp),
        key(observer.port, Transport::Udp),
        key(closed_port, Transport::Udp),
    );
    let r = start_extra(&[slow, tcp, seen, closed], INTERVAL, TIMEOUT);
    for k in [slow, tcp, seen] {
        r.wait_health(&k, Health::Up, Duration::from_secs(10)).await;
    }

    // Real ICMP still counts: the closed port is down by "unreachable" verdicts, well
    // before `fall` timeouts could have passed.
    let took = r
        .wait_health(&closed, Health::Down, Duration::from_secs(5))
        .await;
    assert!(took < TIMEOUT * 3, "closed port down only after {took:?}");
    let unreachable = r
        .metrics
        .probes
        .with_label_values(&["udp", "unreachable"])
        .get();
    assert!(unreachable >= 3, "{unreachable} unreachable verdicts");

    // The flood: ICMP for the slow UDP target and the TCP target, quoting every source
    // port the prober has used towards the observer.
    let ports = {
        let seen = observer.seen.clone();
        move || {
            let seen = seen.lock().unwrap();
            let set: BTreeSet<u16> = seen.iter().rev().take(64).copied().collect();
            set.into_iter().collect::<Vec<u16>>()
        }
    };
    let mut forger = Forger::start(
        vec![
            (SocketAddr::from((LOCALHOST, slow_port)), 17),
            (SocketAddr::from((LOCALHOST, tcp_port)), 6),
        ],
        ports,
    );
    let good_before = r.good(Transport::Udp);
    let window = INTERVAL * 10;
    let t0 = Instant::now();
    while t0.elapsed() < window {
        for k in [slow, tcp] {
            let h = r.health(&k);
            assert_eq!(
                h,
                Health::Up,
                "{k} left up after {:?} of forged ICMP; rows: {:?}",
                t0.elapsed(),
                r.handle.targets()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let sent = forger.stop();
    eprintln!(
        "forged ICMP: {sent} sent over {window:?}, quoting {} ports the prober used",
        observer.ports().len()
    );
    // The flood was real: thousands of forged errors, quoting ports the prober used.
    assert!(sent >= 1000, "only {sent} forged ICMP messages sent");
    let observed = observer.ports();
    assert!(observed.len() >= 5, "observer saw ports {observed:?}");
    // Each transaction had its own socket: the observer saw a fresh port per probe.
    let probes_seen = observer.seen.lock().unwrap().len();
    assert!(
        observed.len() * 2 >= probes_seen.min(64),
        "{probes_seen} probes from only {} ports: {observed:?}",
        observed.len()
    );
    assert_eq!(
        observer.bad_via.load(Ordering::Relaxed),
        0,
        "a Via named another socket"
    );
    // And the slow target kept being probed, and answered, all along.
    let good = r.good(Transport::Udp) - good_before;
    assert!(good >= 10, "only {good} good UDP probes during the flood");
    assert_eq!(r.health(&slow), Health::Up);
    assert_eq!(r.health(&closed), Health::Down);
}
