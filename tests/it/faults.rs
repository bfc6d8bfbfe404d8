//! Faults (issue #8, point 3): upstreams that fail in every way, SIP peers that misbehave,
//! a full or read-only disk under the API, and `kill -9` in the middle of API writes.
//! Everything runs on loopback; every wait is a bounded poll.

use std::{
    collections::BTreeSet,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::json;
use sipdns::{
    health::{Health, HealthView as _},
    record::RType,
    target::{TargetKey, Transport},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, UdpSocket},
};

use crate::common::{
    client::{self, lines, query},
    fake_upstream::{Behaviour, FakeUpstream, a},
    http::{self, Client},
    prober::{Running, start_extra},
    process::free_port,
    rng::Rng,
    server::{self, API_TOKEN, TestServer},
    snapshot::snapshot,
};

// ---------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------

const PBX: &str = "zone: pbx.example.org
records:
  - { name: _sip._udp, type: SRV, priority: 10, weight: 1, port: 5060, target: server1 }
  - { name: server1, type: A, address: 192.0.2.10 }
";

/// A `fallback` zone: upstream first, these records when upstream fails.
const BACKUP: &str = "zone: backup.example.net
mode: fallback
records:
  - { name: gw, type: A, address: 192.0.2.99 }
";

/// Polls `check` every 50 ms until it holds (at most `max`).
async fn eventually<F, Fut>(what: &str, max: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let end = Instant::now() + max;
    while Instant::now() < end {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}: not within {max:?}");
}

async fn a_lines(dns: SocketAddr, name: &str) -> (ResponseCode, Vec<String>, Vec<u32>) {
    let (m, _) = client::udp(dns, &query(name, RecordType::A, Some(1232))).await;
    (
        m.metadata.response_code,
        lines(&m.answers),
        m.answers.iter().map(|r| r.ttl).collect(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_upstreams_never_cost_static_or_cached_answers_and_recovery_needs_no_restart() {
    let up = FakeUpstream::start().await;
    let cfg = format!(
        "upstream:\n  servers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  stale_answer_after: 300ms\n",
        up.addr()
    );
    let s = server::start(
        &cfg,
        &[("pbx.example.org.yaml", PBX), ("backup.yaml", BACKUP)],
    )
    .await;
    for (round, behaviour) in [
        Behaviour::Silent,
        Behaviour::ServFail,
        Behaviour::Refused,
        Behaviour::Garbage,
    ]
    .into_iter()
    .enumerate()
    {
        let ip = format!("192.0.2.{}", 80 + round);
        up.set_behaviour(Behaviour::Answer);
        up.answer(
            "www.example.net",
            RType::A,
            vec![a("www.example.net", 1, &ip)],
        );
        let want = vec![format!("www.example.net. A {ip}")];
        // Upstream healthy: the fresh answer (bounded poll: the previous round's stale
        // entry is refreshed in the background).
        eventually("fresh answer", Duration::from_secs(5), || async {
            a_lines(s.dns, "www.example.net.").await.1 == want
        })
        .await;

        up.set_behaviour(behaviour);
        // Static names: answered at once, whatever upstream does.
        let t = Instant::now();
        let (rcode, recs, _) = a_lines(s.dns, "server1.pbx.example.org.").await;
        assert_eq!(rcode, ResponseCode::NoError, "{behaviour:?}");
        assert_eq!(recs, vec!["server1.pbx.example.org. A 192.0.2.10"]);
        assert!(t.elapsed() < Duration::from_millis(500), "{behaviour:?}");
        // The fallback zone's static record stands in for the failing upstream.
        eventually("fallback static answer", Duration::from_secs(5), || async {
            a_lines(s.dns, "gw.backup.example.net.").await.1
                == vec!["gw.backup.example.net. A 192.0.2.99"]
        })
        .await;
        // The cached name, once expired (TTL 1), is served stale (TTL 30, RFC 8767), never
        // SERVFAIL.
        eventually("stale answer", Duration::from_secs(6), || async {
            let (rcode, recs, ttls) = a_lines(s.dns, "www.example.net.").await;
            assert_eq!(rcode, ResponseCode::NoError, "{behaviour:?}: {recs:?}");
            assert_eq!(recs, want, "{behaviour:?}");
            ttls == vec![30]
        })
        .await;
        // Nothing cached: SERVFAIL, quickly.
        let t = Instant::now();
        let (rcode, _, _) = a_lines(s.dns, &format!("never{round}.example.net.")).await;
        assert_eq!(rcode, ResponseCode::ServFail, "{behaviour:?}");
        assert!(t.elapsed() < Duration::from_secs(2), "{behaviour:?}");
    }
    // Recovery without a restart: new data arrives as soon as upstream answers again.
    up.set_behaviour(Behaviour::Answer);
    up.answer(
        "www.example.net",
        RType::A,
        vec![a("www.example.net", 300, "192.0.2.90")],
    );
    eventually("recovered answer", Duration::from_secs(5), || async {
        a_lines(s.dns, "www.example.net.").await.1 == vec!["www.example.net. A 192.0.2.90"]
    })
    .await;
    let metrics = s.server().metrics.encode();
    for kind in ["timeout", "servfail", "refused"] {
        assert!(
            !metrics.contains(&format!(
                "sipdns_upstream_errors_total{{kind=\"{kind}\"}} 0"
            )),
            "no {kind} error counted:\n{metrics}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// SIP peers that misbehave
// ---------------------------------------------------------------------------------------

/// How a fake SIP peer treats each OPTIONS it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Peer {
    /// A correct 200 OK.
    Good,
    /// Random bytes instead of a reply.
    Garbage,
    /// The first part of a correct 200 OK, cut inside the Via branch.
    Half,
    /// A correct 200 OK, followed by a flood of unsolicited replies (random branches and
    /// Call-IDs, 503s, garbage, replies to the same Call-ID with other branches).
    GoodThenFlood,
    /// A 200 OK whose Via branch is not the probe's (Call-ID and CSeq are right).
    SpoofedBranch,
    /// A correct 200 OK, plus a 503 with a spoofed branch for the same Call-ID.
    GoodAndSpoofed503,
    /// A 200 OK to the *previous* probe only (a late reply): the current one gets nothing.
    LateReplay,
}

impl Peer {
    /// What the prober must conclude.
    fn healthy(self) -> bool {
        matches!(
            self,
            Self::Good | Self::GoodThenFlood | Self::GoodAndSpoofed503
        )
    }
}

/// The header values of a received OPTIONS that a reply must echo.
#[derive(Clone, Debug)]
struct Echo {
    via: String,
    from: String,
    to: String,
    call_id: String,
    cseq: String,
}

fn header<'a>(text: &'a str, names: &[&str]) -> Option<&'a str> {
    text.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        names
            .iter()
            .any(|x| n.trim().eq_ignore_ascii_case(x))
            .then(|| v.trim())
    })
}

fn echo_of(request: &[u8]) -> Option<Echo> {
    let text = std::str::from_utf8(request).ok()?;
    Some(Echo {
        via: header(text, &["Via", "v"])?.to_owned(),
        from: header(text, &["From", "f"])?.to_owned(),
        to: header(text, &["To", "t"])?.to_owned(),
        call_id: header(text, &["Call-ID", "i"])?.to_owned(),
        cseq: header(text, &["CSeq"])?.to_owned(),
    })
}

fn reply(code: &str, e: &Echo) -> Vec<u8> {
    format!(
        "SIP/2.0 {code}\r\nVia: {}\r\nFrom: {}\r\nTo: {};tag=fakepeer\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
        e.via, e.from, e.to, e.call_id, e.cseq
    )
    .into_bytes()
}

/// `e` with its Via branch replaced.
fn with_branch(e: &Echo, branch: &str) -> Echo {
    let mut e = e.clone();
    if let Some(at) = e.via.find("branch=") {
        let rest = &e.via[at + 7..];
        let end = rest.find(';').map_or(e.via.len(), |i| at + 7 + i);
        e.via.replace_range(at + 7..end, branch);
    }
    e
}

/// Runs a fake UDP SIP peer on `sock` until the task is aborted.
async fn udp_peer(sock: UdpSocket, mode: Peer) {
    let mut buf = vec![0u8; 65_535];
    let mut rng = Rng(0xfeed_5eed ^ mode as u64);
    let mut previous: Option<Echo> = None;
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some(e) = echo_of(&buf[..n]) else {
            continue;
        };
        let mut out: Vec<Vec<u8>> = Vec::new();
        match mode {
            Peer::Good => out.push(reply("200 OK", &e)),
            Peer::Garbage => {
                let len = 20 + (rng.next() % 400) as usize;
                out.push((0..len).map(|_| rng.next() as u8).collect());
                out.push(b"SIP/2.0 200 OK\r\n\r\n".to_vec());
                out.push(b"SIP/2.0 200\r\nVia: nonsense\r\nCSeq: x\r\n\r\n".to_vec());
            }
            Peer::Half => {
                let full = reply("200 OK", &e);
                let text = String::from_utf8_lossy(&full).into_owned();
                let cut = text.find("branch=").map_or(full.len() / 2, |i| i + 12);
                out.push(full[..cut].to_vec());
            }
            Peer::GoodThenFlood => {
                out.push(reply("200 OK", &e));
                for i in 0..300 {
                    let branch = format!("z9hG4bK{}", rng.token());
                    match i % 4 {
                        0 => out.push(reply("503 Service Unavailable", &with_branch(&e, &branch))),
                        1 => {
                            let mut other = with_branch(&e, &branch);
                            other.call_id = rng.token();
                            out.push(reply("200 OK", &other));
                        }
                        2 => out.push((0..200).map(|_| rng.next() as u8).collect()),
                        _ => out.push(b"\r\n\r\n".to_vec()),
                    }
                }
            }
            Peer::SpoofedBranch => {
                let branch = format!("z9hG4bK{}", rng.token());
                out.push(reply("200 OK", &with_branch(&e, &branch)));
            }
            Peer::GoodAndSpoofed503 => {
                let branch = format!("z9hG4bK{}", rng.token());
                // The spoofed failure first, so it is there before the real reply.
                out.push(reply("503 Service Unavailable", &with_branch(&e, &branch)));
                out.push(reply("200 OK", &e));
            }
            Peer::LateReplay => {
                if let Some(p) = previous.replace(e.clone()) {
                    out.push(reply("200 OK", &p));
                }
            }
        }
        for d in out {
            let _ = sock.send_to(&d, from).await;
        }
    }
}

/// Runs a fake TCP SIP peer: reads one OPTIONS per connection and misbehaves.
async fn tcp_peer(listener: TcpListener, mode: TcpPeer) {
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read up to the end of the request head (bounded by the prober's timeout).
            while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65_536 {
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let Some(e) = echo_of(&buf) else { return };
            let full = reply("200 OK", &e);
            match mode {
                TcpPeer::Good => {
                    let _ = conn.write_all(&full).await;
                }
                TcpPeer::HalfThenClose => {
                    let _ = conn.write_all(&full[..full.len() / 2]).await;
                }
                TcpPeer::HalfThenHang => {
                    let _ = conn.write_all(&full[..full.len() - 3]).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                TcpPeer::GarbageThenClose => {
                    let _ = conn
                        .write_all(b"\x16\x03\x01 this is not SIP\r\nContent-Length: lots\r\n\r\n")
                        .await;
                }
                TcpPeer::HugeContentLength => {
                    let mut lying = String::from_utf8_lossy(&full).into_owned();
                    lying = lying.replace("Content-Length: 0", "Content-Length: 99999999");
                    let _ = conn.write_all(lying.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
                TcpPeer::UnrelatedThenClose => {
                    let mut other = with_branch(&e, "z9hG4bKnotyours");
                    other.call_id = "not-yours".to_owned();
                    for _ in 0..50 {
                        let _ = conn.write_all(&reply("200 OK", &other)).await;
                    }
                }
            }
            let _ = conn.shutdown().await;
        });
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpPeer {
    Good,
    HalfThenClose,
    HalfThenHang,
    GarbageThenClose,
    HugeContentLength,
    UnrelatedThenClose,
}

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);

fn probe(keys: &[TargetKey]) -> Running {
    start_extra(keys, INTERVAL, TIMEOUT)
}

/// Watches every target for `window`, sampling every 10 ms: a healthy peer must never be
/// seen down, a faulty one never up, and each must have reached its verdict by the end.
async fn watch_verdicts(p: &Running, expect: &[(TargetKey, bool, String)], window: Duration) {
    let end = Instant::now() + window;
    while Instant::now() < end {
        let snap = p.handle.snapshot().load_full();
        for (key, healthy, what) in expect {
            let h = snap.status(key).health;
            if *healthy {
                assert_ne!(h, Health::Down, "{what}: a healthy peer was marked down");
            } else {
                assert_ne!(h, Health::Up, "{what}: a faulty peer was marked up");
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snap = p.handle.snapshot().load_full();
    for (key, healthy, what) in expect {
        let want = if *healthy { Health::Up } else { Health::Down };
        assert_eq!(snap.status(key).health, want, "{what} at the end");
    }
}

fn loopback(port: u16, transport: Transport) -> TargetKey {
    TargetKey {
        ip: IpAddr::from([127, 0, 0, 1]),
        port,
        transport,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_udp_sip_peers_never_move_health_the_wrong_way() {
    let modes = [
        Peer::Good,
        Peer::Garbage,
        Peer::Half,
        Peer::GoodThenFlood,
        Peer::SpoofedBranch,
        Peer::GoodAndSpoofed503,
        Peer::LateReplay,
    ];
    let mut tasks = Vec::new();
    let mut expect = Vec::new();
    for mode in modes {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let key = loopback(sock.local_addr().unwrap().port(), Transport::Udp);
        tasks.push(tokio::spawn(udp_peer(sock, mode)));
        expect.push((key, mode.healthy(), format!("UDP {mode:?}")));
    }
    let keys: Vec<_> = expect.iter().map(|(k, _, _)| *k).collect();
    let p = probe(&keys);
    // fall 3 x 200 ms (+10 % jitter) + timeout, with room for a loaded machine: 3 s.
    watch_verdicts(&p, &expect, Duration::from_secs(3)).await;
    // The noise was seen and counted, not taken for replies.
    let unmatched: u64 = ["malformed", "no_probe", "mismatch", "missing_header"]
        .iter()
        .map(|r| p.metrics.probe_unmatched.with_label_values(&[r]).get())
        .sum();
    eprintln!("UDP peers: {unmatched} unmatched messages counted");
    assert!(
        unmatched > 100,
        "only {unmatched} unmatched messages counted"
    );
    assert_eq!(
        p.metrics
            .target_transitions
            .with_label_values(&["up"])
            .get(),
        0,
        "no target may come back up: none went down that should not have"
    );
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_tcp_sip_peers_never_move_health_the_wrong_way() {
    let modes = [
        TcpPeer::Good,
        TcpPeer::HalfThenClose,
        TcpPeer::HalfThenHang,
        TcpPeer::GarbageThenClose,
        TcpPeer::HugeContentLength,
        TcpPeer::UnrelatedThenClose,
    ];
    let mut tasks = Vec::new();
    let mut expect = Vec::new();
    for mode in modes {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let key = loopback(l.local_addr().unwrap().port(), Transport::Tcp);
        tasks.push(tokio::spawn(tcp_peer(l, mode)));
        expect.push((key, mode == TcpPeer::Good, format!("TCP {mode:?}")));
    }
    let keys: Vec<_> = expect.iter().map(|(k, _, _)| *k).collect();
    let p = probe(&keys);
    watch_verdicts(&p, &expect, Duration::from_secs(3)).await;
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_unsolicited_replies_does_not_delay_real_ones() {
    // One healthy peer, answering each probe after 80 ms; while a probe waits for that
    // answer, the peer's own socket (the only source a probe's connected socket accepts)
    // floods that probe's port (learnt from where the probe came from) with well-formed
    // 503s for probes that do not exist, as fast as it can, bounded to 128 datagrams per
    // probe and 20,000 in all.
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let key = loopback(sock.local_addr().unwrap().port(), Transport::Udp);
    let prober_addr: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
    let seen = prober_addr.clone();
    let peer_sock = sock.clone();
    let peer = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_535];
        loop {
            let Ok((n, from)) = peer_sock.recv_from(&mut buf).await else {
                continue;
            };
            *seen.lock().unwrap() = Some(from);
            if let Some(e) = echo_of(&buf[..n]) {
                let (s, live) = (peer_sock.clone(), seen.clone());
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(80)).await;
                    let _ = s.send_to(&reply("200 OK", &e), from).await;
                    let mut live = live.lock().unwrap();
                    if *live == Some(from) {
                        *live = None;
                    }
                });
            }
        }
    });
    let p = probe(&[key]);
    let mut target = None;
    for _ in 0..100 {
        target = *prober_addr.lock().unwrap();
        if target.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(target.is_some(), "the peer was never probed");
    let done = Arc::new(AtomicBool::new(false));
    let flood = {
        let done = done.clone();
        let latest = prober_addr.clone();
        tokio::spawn(async move {
            let s = sock;
            let mut rng = Rng(7);
            let e = Echo {
                via: "SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx".to_owned(),
                from: "<sip:a@example.org>;tag=1".to_owned(),
                to: "<sip:b@example.org>".to_owned(),
                call_id: String::new(),
                cseq: "1 OPTIONS".to_owned(),
            };
            // At most this many per probe: what a probe socket's receive buffer holds, so
            // the flood tests the prober's matching, not the kernel's drops (a flood from
            // the target's own address and port can always crowd out its own reply).
            const PER_PROBE: u32 = 128;
            let (mut window_of, mut in_window) = (None, 0u32);
            let start = Instant::now();
            let mut sent = 0u32;
            while sent < 20_000 && start.elapsed() < Duration::from_secs(3) {
                let mut fake = with_branch(&e, &format!("z9hG4bK{}", rng.token()));
                fake.call_id = rng.token();
                let live = *latest.lock().unwrap();
                let Some(target) = live.filter(|t| {
                    if window_of != Some(*t) {
                        (window_of, in_window) = (Some(*t), 0);
                    }
                    in_window < PER_PROBE
                }) else {
                    // No probe waiting for its answer, or this one had its share: wait
                    // for the next one.
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                in_window += 1;
                let _ = s
                    .send_to(&reply("503 Service Unavailable", &fake), target)
                    .await;
                sent += 1;
                if sent.is_multiple_of(64) {
                    tokio::task::yield_now().await;
                }
            }
            done.store(true, Ordering::Relaxed);
            sent
        })
    };
    watch_verdicts(
        &p,
        &[(key, true, "flooded peer".to_owned())],
        Duration::from_secs(3),
    )
    .await;
    let sent = flood.await.unwrap();
    assert!(done.load(Ordering::Relaxed));
    let ignored = p
        .metrics
        .probe_unmatched
        .with_label_values(&["no_probe"])
        .get();
    eprintln!("flood: {sent} sent, {ignored} seen and ignored by the prober");
    assert!(
        ignored > u64::from(sent) / 10,
        "{ignored} of {sent} flood replies seen"
    );
    assert_eq!(
        p.metrics
            .target_transitions
            .with_label_values(&["down"])
            .get(),
        0
    );
    peer.abort();
}

// ---------------------------------------------------------------------------------------
// The disk fails under the API
// ---------------------------------------------------------------------------------------

const API_ZONE: &str = "zone: pbx.example.org
ttl: 300
records:
  - { name: server1, type: A, address: 192.0.2.10 }
";

/// One write that the disk refuses: 5xx, and the file, the running zone and the DNS
/// answers stay as they were. Returns the zone's ETag.
async fn refused_write(s: &TestServer, dir: &Path, what: &str) {
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    let before = snapshot(dir);
    let zone_before = c.get("/api/v1/zones/pbx.example.org").await;
    assert_eq!(zone_before.status, 200);
    let tag = zone_before.header("etag").unwrap().to_owned();
    let rec = json!({"name": "server9", "type": "A", "address": "192.0.2.90"});
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &rec)
        .await;
    assert!(
        (500..600).contains(&r.status),
        "{what}: {} {}",
        r.status,
        r.text()
    );
    let mut doc = zone_before.json();
    doc["records"][0]["address"] = json!("192.0.2.11");
    let r = c
        .json("PUT", "/api/v1/zones/pbx.example.org", &[], &doc)
        .await;
    assert!((500..600).contains(&r.status), "{what} (PUT): {}", r.status);
    let new_zone = json!({"zone": "new.example.org", "records": [
        {"name": "@", "type": "A", "address": "192.0.2.1"}]});
    let r = c.json("POST", "/api/v1/zones", &[], &new_zone).await;
    assert!(
        (500..600).contains(&r.status),
        "{what} (create): {}",
        r.status
    );
    assert_eq!(snapshot(dir), before, "{what}: files changed");
    let after = c.get("/api/v1/zones/pbx.example.org").await;
    assert_eq!(
        after.header("etag").unwrap(),
        tag,
        "{what}: running zone changed"
    );
    assert_eq!(
        c.get("/api/v1/zones/new.example.org").await.status,
        404,
        "{what}"
    );
    let (m, _) = client::udp(
        s.dns,
        &query("server9.pbx.example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{what}");
    let (m, _) = client::udp(
        s.dns,
        &query("server1.pbx.example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(
        lines(&m.answers),
        vec!["server1.pbx.example.org. A 192.0.2.10"]
    );
}

/// Once the disk is fine again the same write succeeds, without a restart.
async fn accepted_write(s: &TestServer) {
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    let rec = json!({"name": "server9", "type": "A", "address": "192.0.2.90"});
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &rec)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    let (m, _) = client::udp(
        s.dns,
        &query("server9.pbx.example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(
        lines(&m.answers),
        vec!["server9.pbx.example.org. A 192.0.2.90"]
    );
}

#[tokio::test]
async fn a_disk_full_write_is_a_5xx_and_changes_nothing() {
    // The API's temp file name is a planted symlink to /dev/full: it is never followed
    // (create_new, O_NOFOLLOW), so the write is refused before any byte goes anywhere.
    // ENOSPC itself is the full-tmpfs test below.
    let s = server::start_with_api("", &[("pbx.example.org.yaml", API_ZONE)]).await;
    let dir = s.dir.path().join("zones");
    let temp = |name: &str| dir.join(format!(".{name}.tmp"));
    for name in ["pbx.example.org.yaml", "new.example.org.yaml"] {
        std::os::unix::fs::symlink("/dev/full", temp(name)).unwrap();
    }
    refused_write(&s, &dir, "ENOSPC (/dev/full)").await;
    for name in ["pbx.example.org.yaml", "new.example.org.yaml"] {
        std::fs::remove_file(temp(name)).unwrap();
    }
    accepted_write(&s).await;
}

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None` when this process may not mount (not root, or no CAP_SYS_ADMIN).
    fn mount(at: &Path, size: &str) -> Option<Self> {
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }

    fn remount(&self, opt: &str) {
        let ok = Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .status()
            .unwrap()
            .success();
        assert!(ok, "remount {opt}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test]
async fn a_really_full_or_read_only_filesystem_is_a_5xx_and_changes_nothing() {
    // The zones directory on a 256 KiB tmpfs, filled to the last byte, then remounted
    // read-only. Needs the right to mount (root with CAP_SYS_ADMIN, as in CI's container);
    // without it the test says so and stops (the /dev/full test above still runs).
    let outer = tempfile::tempdir().unwrap();
    let mnt = outer.path().join("zones");
    let Some(fs) = Tmpfs::mount(&mnt, "256k") else {
        eprintln!("SKIPPED: cannot mount a tmpfs here (not root / no CAP_SYS_ADMIN)");
        return;
    };
    std::fs::write(mnt.join("pbx.example.org.yaml"), API_ZONE).unwrap();
    let cfg = format!("zones:\n  dir: {}\n", mnt.display());
    let s = server::start_with_api(&cfg, &[]).await;

    // Full: a filler file takes every free block.
    let filler = mnt.join(".filler");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 4096];
        let mut full = false;
        for _ in 0..1024 {
            match f.write_all(&block).and_then(|()| f.sync_all()) {
                Ok(()) => {}
                Err(e) => {
                    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
                    full = true;
                    break;
                }
            }
        }
        assert!(full, "the tmpfs never filled up");
    }
    refused_write(&s, &mnt, "ENOSPC (full tmpfs)").await;
    std::fs::remove_file(&filler).unwrap();

    // Read-only.
    fs.remount("ro");
    refused_write(&s, &mnt, "EROFS (read-only tmpfs)").await;
    fs.remount("rw");
    accepted_write(&s).await;
    drop(s);
}

// ---------------------------------------------------------------------------------------
// kill -9 in the middle of API writes
// ---------------------------------------------------------------------------------------

/// One HTTP request that never panics: the status, or `None` if the server went away.
async fn try_request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<u16> {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nAuthorization: Bearer {API_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http::try_status(addr, &req).await
}

struct Sipdns {
    child: Child,
    api: SocketAddr,
    dns: SocketAddr,
}

impl Drop for Sipdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the `sipdns` binary on fresh loopback ports and waits (bounded) until its API
/// answers.
async fn spawn_sipdns(dir: &Path) -> Sipdns {
    for _attempt in 0..5 {
        let (dns_port, api_port) = (free_port(), free_port());
        let config = format!(
            "dns:\n  listen: [\"127.0.0.1:{dns_port}\"]\napi:\n  listen: \"127.0.0.1:{api_port}\"\n  token_file: api-token\nupstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\n"
        );
        std::fs::write(dir.join("sipdns.yaml"), config).unwrap();
        let log = std::fs::File::create(dir.join("sipdns.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_sipdns"))
            .args(["run", "-c"])
            .arg(dir.join("sipdns.yaml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let mut s = Sipdns {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dns: SocketAddr::from(([127, 0, 0, 1], dns_port)),
        };
        for _ in 0..200 {
            if try_request(s.api, "GET", "/livez", "").await == Some(200) {
                return s;
            }
            if s.child.try_wait().unwrap().is_some() {
                break; // port taken after all: try others
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let _ = s.child.kill();
    }
    panic!(
        "sipdns did not start: {}",
        std::fs::read_to_string(dir.join("sipdns.log")).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_api_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    std::fs::write(dir.path().join("zones/pbx.example.org.yaml"), API_ZONE).unwrap();
    std::fs::write(dir.path().join("api-token"), format!("{API_TOKEN}\n")).unwrap();
    // Every acknowledged (2xx) write: record names added to pbx.example.org, and zones.
    let acked_records: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let acked_zones: Arc<Mutex<BTreeSet<String>>> = Arc::default();
    let mut next = 0u32;
    for round in 0..3 {
        let server = spawn_sipdns(dir.path()).await;
        let api = server.api;
        let mut writers = Vec::new();
        for w in 0..3u32 {
            let acked = acked_records.clone();
            let first = next + w * 1000;
            writers.push(tokio::spawn(async move {
                for i in 0..1000u32 {
                    let n = first + i;
                    let name = format!("w{n}");
                    let body = json!({"name": name, "type": "A",
                        "address": format!("192.0.2.{}", n % 250 + 1)})
                    .to_string();
                    match try_request(api, "POST", "/api/v1/zones/pbx.example.org/records", &body)
                        .await
                    {
                        Some(201) => {
                            acked.lock().unwrap().insert(name);
                        }
                        Some(s) => panic!("write {name}: status {s}"),
                        None => return,
                    }
                }
            }));
        }
        {
            let acked = acked_zones.clone();
            let first = next;
            writers.push(tokio::spawn(async move {
                for i in 0..1000u32 {
                    let zone = format!("z{}.example.org", first + i);
                    let body = json!({"zone": zone, "records": [
                        {"name": "@", "type": "A", "address": "192.0.2.7"}]})
                    .to_string();
                    match try_request(api, "POST", "/api/v1/zones", &body).await {
                        Some(201) => {
                            acked.lock().unwrap().insert(zone);
                        }
                        Some(s) => panic!("create {zone}: status {s}"),
                        None => return,
                    }
                }
            }));
        }
        next += 10_000;
        // Let a stream of writes get going, then SIGKILL mid-stream (bounded wait).
        let target = acked_records.lock().unwrap().len() + 20 + round * 7;
        for _ in 0..400 {
            if acked_records.lock().unwrap().len() >= target {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut server = server;
        server.child.kill().unwrap(); // SIGKILL
        server.child.wait().unwrap();
        for w in writers {
            w.await.unwrap();
        }
    }
    let acked_records = acked_records.lock().unwrap().clone();
    let acked_zones = acked_zones.lock().unwrap().clone();
    eprintln!(
        "kill -9: {} records and {} zones acknowledged over 3 kills",
        acked_records.len(),
        acked_zones.len()
    );
    assert!(
        acked_records.len() >= 60,
        "only {} writes acknowledged",
        acked_records.len()
    );

    // Every zone file parses: `sipdns check` on the directory as the crash left it.
    let check = Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["check", "-c"])
        .arg(dir.path().join("sipdns.yaml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "zone files broken after kill -9: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // And after a restart every acknowledged write is there, in the API and in DNS.
    let server = spawn_sipdns(dir.path()).await;
    let c = Client::new(server.api, Some(API_TOKEN));
    let doc = c.get("/api/v1/zones/pbx.example.org").await.json();
    let have: BTreeSet<String> = doc["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str().map(str::to_owned))
        .collect();
    let lost: Vec<_> = acked_records.difference(&have).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");
    for zone in &acked_zones {
        let r = c.get(&format!("/api/v1/zones/{zone}")).await;
        assert_eq!(r.status, 200, "acknowledged zone {zone} lost");
    }
    let probe = acked_records.iter().next().unwrap();
    let (m, _) = client::udp(
        server.dns,
        &query(&format!("{probe}.pbx.example.org."), RecordType::A, None),
    )
    .await;
    assert_eq!(m.answers.len(), 1, "{probe} not answered after restart");
}
