//! Prober tests against fake user agents on loopback (real sockets, small intervals,
//! bounded polling). The codec, the state machine, the admin file and discovery have their
//! own unit tests next to them; these check the task end to end.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use tokio::net::{TcpListener, UdpSocket};

use super::{
    AdminState, Health, HealthHandle, HealthView as _, ProberHandle,
    discover::tests::{MapLookup, a, n, srv},
    udp::UdpTransactions,
};
use crate::{
    config::{ExtraTargetConfig, ProbeConfig, SipConfig, SipDomainConfig},
    metrics::Metrics,
    record::RType,
    shutdown::CancellationToken,
    target::{TargetKey, Transport},
};

/// A reply to a request: Via, From, To, Call-ID and CSeq copied (RFC 3261 §8.2.6.2).
pub(crate) fn reply_to(req: &[u8], status: &str, extra: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(req);
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in text.split("\r\n").skip(1) {
        let lower = line.to_ascii_lowercase();
        if ["via:", "from:", "to:", "call-id:", "cseq:"]
            .iter()
            .any(|h| lower.starts_with(h))
        {
            out.push_str(line);
            if lower.starts_with("to:") {
                out.push_str(";tag=uas");
            }
            out.push_str("\r\n");
        }
    }
    out.push_str(extra);
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

/// What the fake UAS does with each request.
#[derive(Clone)]
enum Mode {
    /// Answer with this status line.
    Answer(&'static str, &'static str),
    /// Stay silent for the first datagram of each transaction, then answer 200.
    DropFirst,
    /// Answer with a reply that matches nothing.
    Stray,
}

struct FakeUas {
    addr: SocketAddr,
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUas {
    async fn udp(mode: Mode) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        let mode = Arc::new(Mutex::new(mode));
        let received = Arc::new(Mutex::new(Vec::new()));
        let (m, r) = (mode.clone(), received.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            let mut seen_branches: Vec<String> = Vec::new();
            loop {
                let Ok((len, from)) = sock.recv_from(&mut buf).await else {
                    return;
                };
                let req = buf[..len].to_vec();
                r.lock().unwrap().push(req.clone());
                let mode = m.lock().unwrap().clone();
                let reply = match mode {
                    Mode::Answer(status, extra) => reply_to(&req, status, extra),
                    Mode::DropFirst => {
                        let via = String::from_utf8_lossy(&req)
                            .split("\r\n")
                            .find(|l| l.starts_with("Via:"))
                            .unwrap_or_default()
                            .to_owned();
                        if seen_branches.contains(&via) {
                            reply_to(&req, "200 OK", "")
                        } else {
                            seen_branches.push(via);
                            continue;
                        }
                    }
                    Mode::Stray => {
                        let text = String::from_utf8_lossy(&req).replace("z9hG4bK", "z9hG4bKx");
                        reply_to(text.as_bytes(), "200 OK", "")
                    }
                };
                let _ = sock.send_to(&reply, from).await;
            }
        });
        Self {
            addr,
            mode,
            received,
            task,
        }
    }

    fn set(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn key(&self, transport: Transport) -> TargetKey {
        TargetKey {
            ip: self.addr.ip(),
            port: self.addr.port(),
            transport,
        }
    }
}

impl Drop for FakeUas {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn probe_cfg() -> ProbeConfig {
    ProbeConfig {
        interval: Duration::from_millis(100),
        timeout: Duration::from_millis(300),
        fall: 2,
        rise: 2,
        startup_grace: Duration::from_secs(3),
        ..ProbeConfig::default()
    }
}

fn cfg_with(targets: &[TargetKey], probe: ProbeConfig) -> SipConfig {
    let mut d = SipDomainConfig::new(n("pbx.example.org"));
    for k in targets {
        d.targets.push(ExtraTargetConfig {
            address: k.ip,
            port: k.port,
            transport: k.transport,
            host: Some(n("sip.example.org")),
        });
    }
    SipConfig {
        probe,
        domains: vec![d],
    }
}

struct Running {
    handle: ProberHandle,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn start(cfg: &SipConfig, lookup: Arc<MapLookup>, state_file: Option<PathBuf>) -> Running {
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let handle = ProberHandle::spawn(
        cfg,
        lookup,
        metrics.clone(),
        state_file,
        HealthHandle::new(),
        stop.clone(),
    )
    .unwrap();
    Running {
        handle,
        metrics,
        stop,
    }
}

/// Polls `f` every 10 ms for at most `max`.
async fn wait_for(max: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + max;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}

fn health(r: &Running, k: &TargetKey) -> Health {
    r.handle.snapshot().load().status(k).health
}

fn probes(r: &Running, transport: &str, result: &str) -> u64 {
    r.metrics
        .probes
        .with_label_values(&[transport, result])
        .get()
}

const LONG: Duration = Duration::from_secs(5);

#[tokio::test]
async fn udp_probe_marks_up_and_the_request_is_well_formed() {
    let uas = FakeUas::udp(Mode::Answer("200 OK", "")).await;
    let k = uas.key(Transport::Udp);
    let r = start(&cfg_with(&[k], probe_cfg()), Arc::default(), None);
    let mut ready = r.handle.ready();
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    tokio::time::timeout(LONG, ready.wait_for(|v| *v))
        .await
        .unwrap()
        .unwrap();
    let req = String::from_utf8(uas.received.lock().unwrap()[0].clone()).unwrap();
    let port = uas.addr.port();
    assert!(
        req.starts_with(&format!("OPTIONS sip:sip.example.org:{port} SIP/2.0\r\n")),
        "{req}"
    );
    assert!(req.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:"), "{req}");
    assert!(req.contains(";branch=z9hG4bK") && req.contains(";rport\r\n"));
    let rows = r.handle.targets();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].last_code, Some(200));
    assert!(rows[0].rtt_ms.is_some());
    assert_eq!(rows[0].domains, vec![n("pbx.example.org")]);
    let snap = r.handle.snapshot().load_full();
    assert_eq!(snap.host_targets(&n("sip.example.org")), vec![k]);
    assert!(probes(&r, "udp", "good") >= 1);
    // Probes keep coming at about the interval (100 ms ± 10 %).
    let before = uas.received.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = uas.received.lock().unwrap().len() - before;
    assert!((3..=7).contains(&sent), "{sent} probes in 500 ms");
}

#[tokio::test]
async fn bad_codes_and_icmp_unreachable_mark_down() {
    let uas = FakeUas::udp(Mode::Answer("503 Service Unavailable", "")).await;
    let k = uas.key(Transport::Udp);
    // A port nobody listens on: the kernel answers with ICMP port unreachable.
    let closed = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.local_addr().unwrap()
    };
    let kc = TargetKey {
        ip: closed.ip(),
        port: closed.port(),
        transport: Transport::Udp,
    };
    let mut probe = probe_cfg();
    probe.timeout = Duration::from_secs(2);
    let r = start(&cfg_with(&[k, kc], probe), Arc::default(), None);
    assert!(wait_for(LONG, || health(&r, &k) == Health::Down).await);
    assert!(probes(&r, "udp", "bad_code") >= 2);
    // Down well before two 2 s timeouts could have passed: ICMP was attributed.
    assert!(
        wait_for(Duration::from_millis(1500), || health(&r, &kc)
            == Health::Down)
        .await,
        "closed port not down via ICMP"
    );
    assert!(probes(&r, "udp", "unreachable") >= 2);
    assert_eq!(probes(&r, "udp", "timeout"), 0);
    assert_eq!(
        r.metrics
            .target_transitions
            .with_label_values(&["down"])
            .get(),
        2
    );
    // And back up after `rise` good probes.
    uas.set(Mode::Answer("200 OK", ""));
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    let row = r.handle.targets().into_iter().find(|t| t.key == k).unwrap();
    assert_eq!(row.transitions, 2);
    assert!(
        row.last_reason.contains("good probes"),
        "{}",
        row.last_reason
    );
}

#[tokio::test]
async fn udp_retransmits_on_t1() {
    let uas = FakeUas::udp(Mode::DropFirst).await;
    let k = uas.key(Transport::Udp);
    let mut probe = probe_cfg();
    probe.timeout = Duration::from_millis(1200);
    probe.interval = Duration::from_secs(5);
    let r = start(&cfg_with(&[k], probe), Arc::default(), None);
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    let got = uas.received.lock().unwrap().clone();
    assert_eq!(got.len(), 2, "one retransmission");
    assert_eq!(got[0], got[1], "a retransmission is the same request");
    let rtt = r.handle.targets()[0].rtt_ms.unwrap();
    assert!(
        (450.0..1000.0).contains(&rtt),
        "rtt {rtt} ms counts from the first send"
    );
}

#[tokio::test]
async fn unmatched_replies_are_ignored_and_counted() {
    let uas = FakeUas::udp(Mode::Stray).await;
    let k = uas.key(Transport::Udp);
    let r = start(&cfg_with(&[k], probe_cfg()), Arc::default(), None);
    assert!(wait_for(LONG, || health(&r, &k) == Health::Down).await);
    assert!(
        r.metrics
            .probe_unmatched
            .with_label_values(&["no_probe"])
            .get()
            >= 2
    );
    // The verdicts were local timeouts, with no reply code.
    assert!(probes(&r, "udp", "timeout") >= 2);
    assert_eq!(probes(&r, "udp", "good"), 0);
    assert_eq!(r.handle.targets()[0].last_code, None);
}

#[tokio::test]
async fn retry_after_holds_a_target_down() {
    let uas = FakeUas::udp(Mode::Answer(
        "503 Service Unavailable",
        "Retry-After: 1\r\n",
    ))
    .await;
    let k = uas.key(Transport::Udp);
    let r = start(&cfg_with(&[k], probe_cfg()), Arc::default(), None);
    // Down on the first 503 + Retry-After, without waiting for `fall`.
    assert!(wait_for(LONG, || health(&r, &k) == Health::Down).await);
    assert_eq!(probes(&r, "udp", "bad_code"), 1);
    uas.set(Mode::Answer("200 OK", ""));
    let t0 = tokio::time::Instant::now();
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    assert!(
        t0.elapsed() >= Duration::from_millis(700),
        "up after {:?}, inside the 1 s hold",
        t0.elapsed()
    );
}

#[tokio::test]
async fn tcp_probe_over_a_fresh_connection() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(AtomicUsize::new(0));
    let c = conns.clone();
    let server = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                // A provisional reply, a keep-alive, then the final one.
                let _ = s.write_all(&reply_to(&buf, "100 Trying", "")).await;
                let _ = s.write_all(b"\r\n\r\n").await;
                let _ = s
                    .write_all(&reply_to(&buf, "405 Method Not Allowed", ""))
                    .await;
            });
        }
    });
    let k = TargetKey {
        ip: addr.ip(),
        port: addr.port(),
        transport: Transport::Tcp,
    };
    let r = start(&cfg_with(&[k], probe_cfg()), Arc::default(), None);
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    assert!(wait_for(LONG, || conns.load(Ordering::SeqCst) >= 2).await);
    assert_eq!(r.handle.targets()[0].last_code, Some(405));
    server.abort();
    // Listener gone: refused.
    assert!(wait_for(LONG, || health(&r, &k) == Health::Down).await);
    assert!(probes(&r, "tcp", "refused") >= 2);
}

#[tokio::test]
async fn drain_is_published_at_once_and_survives_a_restart() {
    let uas = FakeUas::udp(Mode::Answer("200 OK", "")).await;
    let k = uas.key(Transport::Udp);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.json");
    let cfg = cfg_with(&[k], probe_cfg());
    let r = start(&cfg, Arc::default(), Some(file.clone()));
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    let generation = r.handle.snapshot().load().generation;
    r.handle.set_admin(&k, AdminState::Drained).unwrap();
    let snap = r.handle.snapshot().load_full();
    assert!(snap.generation > generation);
    assert_eq!(snap.status(&k).admin, AdminState::Drained);
    assert!(!snap.status(&k).is_usable());
    assert_eq!(r.handle.targets()[0].admin, AdminState::Drained);
    assert_eq!(
        r.metrics
            .target_up
            .with_label_values(&[&k.to_string()])
            .get(),
        0
    );
    // Still probed while drained, and later snapshots keep the drain.
    let before = uas.received.lock().unwrap().len();
    assert!(wait_for(LONG, || uas.received.lock().unwrap().len() > before + 2).await);
    assert_eq!(
        r.handle.snapshot().load().status(&k).admin,
        AdminState::Drained
    );
    let unknown: TargetKey = "192.0.2.99:5060/udp".parse().unwrap();
    assert!(r.handle.set_admin(&unknown, AdminState::Drained).is_err());
    drop(r);

    let r2 = start(&cfg, Arc::default(), Some(file.clone()));
    assert!(wait_for(LONG, || health(&r2, &k) == Health::Up).await);
    assert_eq!(
        r2.handle.snapshot().load().status(&k).admin,
        AdminState::Drained
    );
    r2.handle.set_admin(&k, AdminState::Enabled).unwrap();
    assert!(r2.handle.snapshot().load().status(&k).is_usable());
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&k.to_string()), "{text}");
}

#[tokio::test]
async fn discovered_targets_follow_dns() {
    let uas1 = FakeUas::udp(Mode::Answer("200 OK", "")).await;
    let uas2 = FakeUas::udp(Mode::Answer("200 OK", "")).await;
    let lookup = Arc::new(MapLookup::default());
    lookup.add(srv(
        "_sip._udp.pbx.example.org",
        1,
        uas1.addr.port(),
        "s1.example.org",
    ));
    lookup.add(srv(
        "_sip._udp.pbx.example.org",
        1,
        uas2.addr.port(),
        "s2.example.org",
    ));
    lookup.add(a("s1.example.org", 1, "127.0.0.1"));
    lookup.add(a("s2.example.org", 1, "127.0.0.1"));
    let cfg = SipConfig {
        probe: probe_cfg(),
        domains: vec![SipDomainConfig::new(n("pbx.example.org"))],
    };
    let r = start(&cfg, lookup.clone(), None);
    let (k1, k2) = (uas1.key(Transport::Udp), uas2.key(Transport::Udp));
    assert!(
        wait_for(LONG, || health(&r, &k1) == Health::Up
            && health(&r, &k2) == Health::Up)
        .await
    );
    let snap = r.handle.snapshot().load_full();
    assert_eq!(snap.host_targets(&n("s2.example.org")), vec![k2]);
    assert_eq!(r.metrics.targets.get(), 2);
    // s2 leaves DNS: dropped after the 1 s TTL.
    lookup.clear("s2.example.org", RType::A);
    assert!(wait_for(LONG, || r.handle.targets().len() == 1).await);
    let snap = r.handle.snapshot().load_full();
    assert!(!snap.targets.contains_key(&k2));
    assert!(snap.host_targets(&n("s2.example.org")).is_empty());
    assert_eq!(r.metrics.targets.get(), 1);
    // A reload that changes the probe settings keeps the health of known targets.
    let mut cfg2 = cfg.clone();
    cfg2.probe.fall = 5;
    r.handle.reconfigure(&cfg2);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(health(&r, &k1), Health::Up);
}

/// Rediscovery runs whenever records expire (here every second); when it finds what it
/// found before, it publishes no new health snapshot, since a new generation empties the
/// DNS answer cache.
#[tokio::test]
async fn an_unchanged_rediscovery_keeps_the_health_generation() {
    let uas = FakeUas::udp(Mode::Answer("200 OK", "")).await;
    let lookup = Arc::new(MapLookup::default());
    lookup.add(srv(
        "_sip._udp.pbx.example.org",
        1,
        uas.addr.port(),
        "s1.example.org",
    ));
    lookup.add(a("s1.example.org", 1, "127.0.0.1"));
    let cfg = SipConfig {
        probe: probe_cfg(),
        domains: vec![SipDomainConfig::new(n("pbx.example.org"))],
    };
    let r = start(&cfg, lookup.clone(), None);
    let key = uas.key(Transport::Udp);
    assert!(wait_for(LONG, || health(&r, &key) == Health::Up).await);
    let generation = r.handle.snapshot().load().generation;
    let asked = || lookup.asked.load(Ordering::Relaxed);
    // Two more discovery rounds (each asks NAPTR, SRV, A, AAAA at least).
    let before = asked();
    assert!(wait_for(LONG, || asked() >= before + 8).await);
    assert_eq!(health(&r, &key), Health::Up);
    assert_eq!(r.handle.snapshot().load().generation, generation);
    // A real change still publishes at once.
    lookup.add(a("s1.example.org", 1, "127.0.0.2"));
    assert!(wait_for(LONG, || r.handle.snapshot().load().generation > generation).await);
}

#[tokio::test]
async fn ipv6_targets_use_their_own_socket() {
    let Ok(sock) = UdpSocket::bind("[::1]:0").await else {
        eprintln!("no IPv6 loopback here; nothing to test");
        return;
    };
    let addr = sock.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((len, from)) = sock.recv_from(&mut buf).await {
            let _ = sock
                .send_to(&reply_to(&buf[..len], "200 OK", ""), from)
                .await;
        }
    });
    let k = TargetKey {
        ip: addr.ip(),
        port: addr.port(),
        transport: Transport::Udp,
    };
    let mut cfg = cfg_with(&[], probe_cfg());
    cfg.domains[0].targets.push(ExtraTargetConfig {
        address: k.ip,
        port: k.port,
        transport: Transport::Udp,
        host: None,
    });
    let r = start(&cfg, Arc::default(), None);
    assert!(wait_for(LONG, || health(&r, &k) == Health::Up).await);
    // Probed by address: the Request-URI carries the bracketed literal.
    assert_eq!(r.handle.targets()[0].host, format!("[{}]", addr.ip()));
    server.abort();
}

#[tokio::test]
async fn udp_probes_wait_for_a_free_transaction_slot() {
    // Five targets answering after 30 ms, and room for one UDP transaction at a time: every
    // probe still runs (in turn) and every target comes up; never two at once.
    let open = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let mut keys = Vec::new();
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
        let addr = sock.local_addr().unwrap();
        keys.push(TargetKey {
            ip: addr.ip(),
            port: addr.port(),
            transport: Transport::Udp,
        });
        let (open, most) = (open.clone(), most.clone());
        tasks.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 65_535];
            while let Ok((len, from)) = sock.recv_from(&mut buf).await {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                let reply = reply_to(&buf[..len], "200 OK", "");
                tokio::time::sleep(Duration::from_millis(30)).await;
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = sock.send_to(&reply, from).await;
            }
        }));
    }
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let handle = ProberHandle::spawn_with(
        &cfg_with(&keys, probe_cfg()),
        Arc::<MapLookup>::default(),
        metrics.clone(),
        None,
        HealthHandle::new(),
        UdpTransactions::with_capacity(metrics.clone(), 1),
        stop.clone(),
    )
    .unwrap();
    let r = Running {
        handle,
        metrics,
        stop,
    };
    assert!(wait_for(LONG, || keys.iter().all(|k| health(&r, k) == Health::Up)).await);
    // And they keep their rhythm through the queue: three rounds each.
    assert!(wait_for(LONG, || probes(&r, "udp", "good") >= 15).await);
    assert_eq!(probes(&r, "udp", "timeout"), 0);
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "two probes were open at once"
    );
    for t in tasks {
        t.abort();
    }
}
