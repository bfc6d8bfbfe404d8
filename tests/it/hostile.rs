//! Hostile traffic against the real server on loopback (issue #8, point 2). Every flood is
//! bounded in count and time, every wait is a bounded poll or a receive timeout.
//!
//! Each test fails without the protection it checks: a panic in the request path kills a
//! receive loop (later queries go unanswered); without the QR check responses are answered;
//! without the per-message TCP deadline byte-by-byte writers keep their slots; without the
//! connection limit the extra connection is served; without the 512-byte budget classic
//! clients get oversized datagrams; without the rate limit every query is answered.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, OpCode, ResponseCode},
    rr::RecordType,
};
use sipdns::record::RType;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::common::{
    client::{self, query},
    fake_upstream::{FakeUpstream, a},
    rng::Rng,
    server::{self, TestServer, example_zones},
};

fn wire(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
    query(name, qtype, edns).to_vec().unwrap()
}

/// The server still answers a static question correctly, over UDP and TCP.
async fn still_answers(s: &TestServer) {
    let (m, _) = client::udp(
        s.dns,
        &query("pbx.example.org.", RecordType::NAPTR, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(m.answers.len(), 3);
    let m = client::tcp(
        s.dns,
        &query("server1.pbx.example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.answers.len(), 1);
}

/// Receives datagrams on `sock` until it has been quiet for `quiet` (at most `max` in all).
async fn drain(sock: &UdpSocket, quiet: Duration, max: Duration) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let end = Instant::now() + max;
    while Instant::now() < end {
        match tokio::time::timeout(quiet, sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) => out.push(buf[..n].to_vec()),
            _ => break,
        }
    }
    out
}

/// Sends `packets` as fast as the socket takes them, reading replies as they come.
async fn blast(server: SocketAddr, packets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").await.unwrap());
    let _ = socket2::SockRef::from(&*sock).set_recv_buffer_size(8 << 20);
    let reader = {
        let sock = sock.clone();
        tokio::spawn(async move {
            drain(&sock, Duration::from_millis(1500), Duration::from_secs(30)).await
        })
    };
    for (i, p) in packets.iter().enumerate() {
        sock.send_to(p, server).await.unwrap();
        if i % 256 == 255 {
            // Let the server's loops breathe; this is a flood, not a socket-buffer test.
            tokio::task::yield_now().await;
        }
    }
    reader.await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_random_and_truncated_packets_leave_the_server_answering() {
    let s = server::start("", &example_zones()).await;
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let valid = [
        wire("pbx.example.org.", RecordType::NAPTR, Some(1232)),
        wire("_sip._udp.pbx.example.org.", RecordType::SRV, None),
        wire("server2.pbx.example.org.", RecordType::AAAA, Some(4096)),
        wire("printer.example.net.", RecordType::A, None),
    ];
    // Each packet's first two bytes are its index, so a reply names its packet.
    let mut packets: Vec<Vec<u8>> = Vec::new();
    // Random bytes of random length (0..600).
    for _ in 0..3000 {
        let n = rng.below(600);
        packets.push(rng.bytes(n));
    }
    // Every truncation of valid queries.
    for v in &valid {
        for len in 0..v.len() {
            packets.push(v[..len].to_vec());
        }
    }
    // Valid queries with random bytes flipped.
    for _ in 0..2000 {
        let mut p = valid[rng.below(valid.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(p.len());
            p[i] ^= 1 << rng.below(8);
        }
        packets.push(p);
    }
    let mut qr_set = HashMap::new();
    for (i, p) in packets.iter_mut().enumerate() {
        if p.len() >= 2 {
            p[..2].copy_from_slice(&(i as u16).to_be_bytes());
        }
        qr_set.insert(i as u16, p.len() >= 3 && p[2] & 0x80 != 0);
    }
    let replies = blast(s.dns, &packets).await;
    assert!(
        !replies.is_empty(),
        "not one of {} packets answered",
        packets.len()
    );
    for r in &replies {
        assert!(r.len() >= 12, "a reply shorter than a header: {r:?}");
        let id = u16::from_be_bytes([r[0], r[1]]);
        let p = &packets[usize::from(id)];
        assert!(p.len() >= 12, "a reply to a {}-byte packet", p.len());
        assert!(!qr_set[&id], "a response (QR set) was answered");
        let m = Message::from_vec(r).unwrap_or_else(|e| panic!("reply does not decode: {e}"));
        assert!(m.metadata.message_type == hickory_proto::op::MessageType::Response);
        assert!(r.len() <= 1232, "{} bytes", r.len());
    }

    // TCP: connections with random frames, truncated frames and lying length prefixes.
    for c in 0..40 {
        let Ok(mut conn) = TcpStream::connect(s.dns).await else {
            continue;
        };
        let mut bytes = Vec::new();
        for _ in 0..1 + rng.below(4) {
            let body = if c % 2 == 0 {
                let n = rng.below(300);
                rng.bytes(n)
            } else {
                let v = &valid[rng.below(valid.len())];
                v[..rng.below(v.len())].to_vec()
            };
            let claimed = if rng.below(3) == 0 {
                body.len() + rng.below(100)
            } else {
                body.len()
            };
            bytes.extend_from_slice(&(claimed as u16).to_be_bytes());
            bytes.extend_from_slice(&body);
        }
        let _ = conn.write_all(&bytes).await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(300), conn.read_to_end(&mut sink)).await;
    }
    still_answers(&s).await;
}

#[tokio::test]
async fn responses_are_never_answered_whatever_their_opcode_or_rcode() {
    let s = server::start("", &example_zones()).await;
    let base = wire("pbx.example.org.", RecordType::A, Some(1232));
    let mut packets = Vec::new();
    for opcode in 0..16u8 {
        for rcode in [0u8, 2, 3, 5] {
            let mut p = base.clone();
            p[2] = 0x80 | (opcode << 3) | 0x01;
            p[3] = rcode;
            packets.push(p);
        }
    }
    let replies = blast(s.dns, &packets).await;
    assert!(
        replies.is_empty(),
        "{} responses were answered",
        replies.len()
    );
    still_answers(&s).await;
}

#[tokio::test]
async fn unknown_opcodes_get_notimp_with_the_id_and_opcode_echoed() {
    let s = server::start("", &example_zones()).await;
    for opcode in 1..16u8 {
        let mut p = wire("pbx.example.org.", RecordType::A, None);
        p[2] = (opcode << 3) | 0x01;
        let raw = client::udp_raw(s.dns, &p, Duration::from_secs(5))
            .await
            .unwrap_or_else(|| panic!("no reply to opcode {opcode}"));
        assert_eq!(&raw[..2], &p[..2]);
        assert_eq!(raw[3] & 0x0f, 4, "opcode {opcode}: rcode {}", raw[3] & 0x0f);
        assert_eq!((raw[2] >> 3) & 0x0f, opcode, "opcode echoed");
        assert!(raw.len() <= 512);
    }
    // IQUERY/STATUS/NOTIFY/UPDATE through hickory's view too.
    let mut q = query("pbx.example.org.", RecordType::SOA, None);
    q.metadata.op_code = OpCode::Update;
    let (m, _) = client::udp(s.dns, &q).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NotImp);
    still_answers(&s).await;
}

#[tokio::test]
async fn edns_version_1_gets_badvers_even_when_the_answer_is_cached() {
    let s = server::start("", &example_zones()).await;
    // Fill the fast path's response cache with the version 0 answer first.
    for _ in 0..2 {
        let (m, _) =
            client::udp(s.dns, &query("pbx.example.org.", RecordType::A, Some(1232))).await;
        assert_eq!(m.answers.len(), 2);
    }
    for version in [1u8, 2, 255] {
        let mut q = query("pbx.example.org.", RecordType::A, Some(1232));
        q.edns.as_mut().unwrap().set_version(version);
        let (m, size) = client::udp(s.dns, &q).await;
        // Extended rcode 16 = BADVERS (hickory reads 16 as BADSIG, which shares the number).
        assert_eq!(u16::from(m.metadata.response_code), 16, "version {version}");
        assert!(m.answers.is_empty());
        assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
        assert!(size <= 512);
    }
    still_answers(&s).await;
}

#[tokio::test]
async fn oversized_malformed_and_multi_question_queries_get_formerr() {
    let s = server::start("", &example_zones()).await;
    let base = wire("pbx.example.org.", RecordType::A, None);
    let formerr = |raw: &[u8], what: &str| {
        let m = Message::from_vec(raw).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(m.metadata.response_code, ResponseCode::FormErr, "{what}");
        assert!(m.answers.is_empty(), "{what}");
        assert!(raw.len() <= 512, "{what}: {} bytes", raw.len());
    };
    // Two questions.
    let mut two = query("pbx.example.org.", RecordType::A, None);
    two.add_query(hickory_proto::op::Query::query(
        hickory_proto::rr::Name::from_ascii("server1.pbx.example.org.").unwrap(),
        RecordType::A,
    ));
    let raw = client::udp_raw(s.dns, &two.to_vec().unwrap(), Duration::from_secs(5))
        .await
        .unwrap();
    formerr(&raw, "two questions");
    // No question.
    let mut none = base[..12].to_vec();
    none[4..6].copy_from_slice(&[0, 0]);
    let raw = client::udp_raw(s.dns, &none, Duration::from_secs(5))
        .await
        .unwrap();
    formerr(&raw, "no question");
    // QDCOUNT says 65535.
    let mut lots = base.clone();
    lots[4..6].copy_from_slice(&[0xff, 0xff]);
    let raw = client::udp_raw(s.dns, &lots, Duration::from_secs(5))
        .await
        .unwrap();
    formerr(&raw, "qdcount 65535");
    // An answer record in a query.
    let mut with_answer = query("pbx.example.org.", RecordType::A, None);
    with_answer.add_answer(
        crate::common::hickory::rec_to_hickory(&a("pbx.example.org", 30, "192.0.2.1"), None)
            .unwrap(),
    );
    let raw = client::udp_raw(
        s.dns,
        &with_answer.to_vec().unwrap(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    formerr(&raw, "answer section in a query");
    // A name longer than 255 octets.
    let mut long = base[..12].to_vec();
    for _ in 0..5 {
        long.push(63);
        long.extend_from_slice(&[b'a'; 63]);
    }
    long.extend_from_slice(&[0, 0, 1, 0, 1]);
    let raw = client::udp_raw(s.dns, &long, Duration::from_secs(5))
        .await
        .unwrap();
    formerr(&raw, "name over 255 octets");
    // A compression loop in the question name.
    let mut looped = base[..12].to_vec();
    looped.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
    let raw = client::udp_raw(s.dns, &looped, Duration::from_secs(5))
        .await
        .unwrap();
    formerr(&raw, "compression loop");

    // The largest UDP datagram there is: a query followed by ~64 KB of junk. Whatever the
    // server makes of it, the reply (if any) fits a classic client's 512 bytes.
    let mut huge = base.clone();
    huge.resize(65_000, 0xAB);
    if let Some(raw) = client::udp_raw(s.dns, &huge, Duration::from_secs(2)).await {
        assert!(raw.len() <= 512, "{} bytes", raw.len());
        Message::from_vec(&raw).unwrap();
    }
    // The same as the largest TCP message.
    let mut conn = TcpStream::connect(s.dns).await.unwrap();
    huge.resize(65_535, 0xAB);
    conn.write_all(&65_535u16.to_be_bytes()).await.unwrap();
    conn.write_all(&huge).await.unwrap();
    let mut len = [0u8; 2];
    if tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut len))
        .await
        .is_ok_and(|r| r.is_ok())
    {
        let mut body = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut body).await.unwrap();
        Message::from_vec(&body).unwrap();
    }
    still_answers(&s).await;
}

#[tokio::test]
async fn udp_answers_to_clients_without_edns_never_exceed_512_bytes() {
    // A forwarded name with a big answer too (upstream sends it over TCP after TC).
    let up = FakeUpstream::start().await;
    let many: Vec<_> = (1..=80)
        .map(|i| a("big.example.com", 300, &format!("192.0.2.{i}")))
        .collect();
    up.answer("big.example.com", RType::A, many);
    let mut zone = String::from("zone: big.example.org\nrecords:\n");
    for i in 1..=60 {
        zone.push_str(&format!(
            "  - {{ name: many, type: A, address: 192.0.2.{i} }}\n"
        ));
    }
    zone.push_str("  - { name: txt, type: TXT, text: [\"");
    zone.push_str(&"x".repeat(250));
    zone.push_str("\", \"");
    zone.push_str(&"y".repeat(250));
    zone.push_str("\"] }\n");
    let mut zones = example_zones();
    zones.push(("big.yaml", &zone));
    let cfg = format!(
        "upstream:\n  servers: [\"{}\"]\n  timeout: 1s\n  attempts: 1\n",
        up.addr()
    );
    let s = server::start(&cfg, &zones).await;
    let questions = [
        ("pbx.example.org.", RecordType::NAPTR),
        ("_sip._udp.pbx.example.org.", RecordType::SRV),
        ("_sips._tcp.pbx.example.org.", RecordType::SRV),
        ("many.big.example.org.", RecordType::A),
        ("txt.big.example.org.", RecordType::TXT),
        ("big.example.com.", RecordType::A),
    ];
    // Each question first with EDNS (fills the fast path's cache with the large answer),
    // then without, then with an EDNS size below 512 (which means 512).
    for (name, qtype) in questions {
        let (m, big) = client::udp(s.dns, &query(name, qtype, Some(4096))).await;
        assert!(big <= 1232, "{name}: {big} bytes with EDNS 4096");
        assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
        for edns in [None, Some(200), None] {
            let (m, size) = client::udp(s.dns, &query(name, qtype, edns)).await;
            assert!(size <= 512, "{name} {qtype} edns {edns:?}: {size} bytes");
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert!(
                !m.answers.is_empty() || m.metadata.truncation,
                "{name}: neither records nor TC"
            );
        }
    }
}

/// Reads until EOF/reset or `max`; returns how long the server took to close.
async fn closed_within(conn: &mut TcpStream, max: Duration) -> Option<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 512];
    while t.elapsed() < max {
        match tokio::time::timeout(max.saturating_sub(t.elapsed()), conn.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return Some(t.elapsed()),
            Ok(Ok(_)) => continue,
            Err(_) => return None,
        }
    }
    None
}

fn tcp_config(max: usize, idle: &str) -> String {
    format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  tcp_max_connections: {max}\n  tcp_idle_timeout: {idle}\napi:\n  listen: null\n"
    )
}

async fn tcp_query(conn: &mut TcpStream, name: &str) -> std::io::Result<Message> {
    let q = wire(name, RecordType::A, None);
    conn.write_all(&(q.len() as u16).to_be_bytes()).await?;
    conn.write_all(&q).await?;
    let len = conn.read_u16().await?;
    let mut body = vec![0u8; usize::from(len)];
    conn.read_exact(&mut body).await?;
    Message::from_vec(&body).map_err(std::io::Error::other)
}

#[tokio::test]
async fn tcp_connections_over_the_limit_are_closed_at_once() {
    let s = server::start(&tcp_config(4, "5s"), &example_zones()).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = TcpStream::connect(s.dns).await.unwrap();
        // Served: each of the four answers a query and stays open.
        let m = tcp_query(&mut c, "server1.pbx.example.org.").await.unwrap();
        assert_eq!(m.answers.len(), 1);
        held.push(c);
    }
    let mut extra = TcpStream::connect(s.dns).await.unwrap();
    let closed = closed_within(&mut extra, Duration::from_secs(2)).await;
    assert!(closed.is_some(), "a fifth connection was kept open");
    assert!(
        tcp_query(&mut extra, "server1.pbx.example.org.")
            .await
            .is_err()
    );
    // UDP is not affected by the TCP limit.
    let (m, _) = client::udp(
        s.dns,
        &query("server1.pbx.example.org.", RecordType::A, None),
    )
    .await;
    assert_eq!(m.answers.len(), 1);
    // A freed slot is usable again (bounded retry: the server notices the close at once).
    drop(held.pop());
    let mut served = false;
    for _ in 0..50 {
        let mut c = TcpStream::connect(s.dns).await.unwrap();
        if tcp_query(&mut c, "server1.pbx.example.org.").await.is_ok() {
            served = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "no slot was freed by closing a connection");
}

#[tokio::test]
async fn idle_tcp_connections_are_closed_after_the_idle_timeout() {
    let s = server::start(&tcp_config(16, "500ms"), &example_zones()).await;
    // One connection never sends a byte; one sends a query, then nothing. Each must be
    // closed about one idle timeout after its last message, not before and not never.
    let silent = tokio::spawn(async move {
        let mut c = TcpStream::connect(s.dns).await.unwrap();
        closed_within(&mut c, Duration::from_secs(5)).await
    });
    let dns = s.dns;
    let once = tokio::spawn(async move {
        let mut c = TcpStream::connect(dns).await.unwrap();
        let m = tcp_query(&mut c, "server1.pbx.example.org.").await.unwrap();
        assert_eq!(m.answers.len(), 1);
        closed_within(&mut c, Duration::from_secs(5)).await
    });
    for (what, h) in [("silent", silent), ("after one query", once)] {
        let took = h
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: not closed within 5 s"));
        assert!(
            took >= Duration::from_millis(300),
            "{what}: closed after {took:?}"
        );
    }
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_cannot_starve_other_clients() {
    // Four slots, one second per whole message.
    let s = server::start(&tcp_config(4, "1s"), &example_zones()).await;
    let dns = s.dns;
    let started = Instant::now();
    // Slowloris: two clients write a query one byte every 100 ms (it would take them ~6 s);
    // two connect and never send. Together they take every slot.
    let mut slow = Vec::new();
    for _ in 0..2 {
        slow.push(tokio::spawn(async move {
            let mut c = TcpStream::connect(dns).await.unwrap();
            let q = wire("server1.pbx.example.org.", RecordType::A, None);
            let mut framed = (q.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&q);
            let t = Instant::now();
            for b in framed {
                if c.write_all(&[b]).await.is_err() {
                    return Some(t.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                // The server closing shows up as EOF on a non-blocking read.
                let mut probe = [0u8; 1];
                if let Ok(Ok(0)) =
                    tokio::time::timeout(Duration::from_millis(1), c.read(&mut probe)).await
                {
                    return Some(t.elapsed());
                }
            }
            None
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..2 {
        silent.push(TcpStream::connect(dns).await.unwrap());
    }
    // Meanwhile UDP answers at once.
    let t = Instant::now();
    let (m, _) = client::udp(dns, &query("server1.pbx.example.org.", RecordType::A, None)).await;
    assert_eq!(m.answers.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(1));
    // A well-behaved TCP client gets its answer once the slow ones are cut off, within
    // about one idle timeout — long before the byte-by-byte writers would be done.
    let mut answered = None;
    while started.elapsed() < Duration::from_secs(4) {
        if let Ok(mut c) = TcpStream::connect(dns).await
            && let Ok(Ok(m)) = tokio::time::timeout(
                Duration::from_millis(500),
                tcp_query(&mut c, "server1.pbx.example.org."),
            )
            .await
        {
            assert_eq!(m.answers.len(), 1);
            answered = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answered = answered.expect("a normal TCP client was starved by slow clients");
    assert!(answered < Duration::from_secs(4), "{answered:?}");
    for h in slow {
        let cut = h
            .await
            .unwrap()
            .expect("a byte-by-byte writer was never cut off");
        assert!(cut < Duration::from_secs(3), "cut off after {cut:?}");
    }
}

fn rate_limit_config(extra: &str) -> String {
    format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  rate_limit:\n    responses_per_second: 20\n    burst: 10\n    slip: 2\n    exempt: []\n{extra}api:\n  listen: null\n"
    )
}

/// The sum of every series of a metric.
fn metric_sum(s: &TestServer, name: &str) -> u64 {
    s.server()
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn metric(s: &TestServer, line: &str) -> u64 {
    let text = s.server().metrics.encode();
    text.lines()
        .find_map(|l| {
            l.strip_prefix(line)
                .map(|v| v.trim().parse::<u64>().unwrap())
        })
        .unwrap_or_else(|| panic!("no {line} in\n{text}"))
}

#[tokio::test]
async fn the_rate_limit_stops_amplification_and_slips_real_clients_to_tcp() {
    let s = server::start(&rate_limit_config(""), &example_zones()).await;
    // 400 NAPTR queries (each answer is several times the query's size) from one address,
    // as fast as possible: far past 10 at once plus 20 a second.
    let q = wire("pbx.example.org.", RecordType::NAPTR, Some(1232));
    let packets = vec![q.clone(); 400];
    let started = Instant::now();
    let replies = blast(s.dns, &packets).await;
    let secs = started.elapsed().as_secs_f64();
    let (full, slipped): (Vec<_>, Vec<_>) = replies.iter().partition(|r| r[2] & 0x02 == 0);
    let allowed = 10.0 + 20.0 * secs + 1.0;
    assert!(
        (full.len() as f64) <= allowed,
        "{} full answers in {secs:.1}s (limit {allowed:.0})",
        full.len()
    );
    assert!(
        full.len() >= 10,
        "the burst was not answered: {}",
        full.len()
    );
    assert!(!slipped.is_empty(), "no truncated reply sent");
    for r in &slipped {
        let m = Message::from_vec(r).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty() && m.additionals.is_empty());
        assert!(r.len() <= q.len(), "a slip reply larger than the query");
    }
    // No amplification: what went out beyond the allowance is smaller than what came in.
    let out: usize = slipped.iter().map(|r| r.len()).sum();
    assert!(out <= q.len() * packets.len());
    assert!(metric(&s, "sipdns_dns_rate_limited_total{action=\"drop\"}") > 0);
    assert!(metric(&s, "sipdns_dns_rate_limited_total{action=\"slip\"}") > 0);
    // The real client behind that address retries over TCP, which is never limited.
    let m = client::tcp(s.dns, &query("pbx.example.org.", RecordType::NAPTR, None)).await;
    assert_eq!(m.answers.len(), 3);
    // Another client (127.0.0.2) has its own bucket.
    let other = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    other.send_to(&q, s.dns).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), other.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(Message::from_vec(&buf[..n]).unwrap().answers.len(), 3);
    // The bucket refills: after a quiet second the first client is answered again.
    let mut again = false;
    for _ in 0..30 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Some(raw) = client::udp_raw(s.dns, &q, Duration::from_millis(500)).await
            && raw[2] & 0x02 == 0
        {
            again = true;
            break;
        }
    }
    assert!(again, "the limit never lifted");
}

#[tokio::test]
async fn loopback_is_not_rate_limited_by_default() {
    let s = server::start("", &example_zones()).await;
    let q = wire("server1.pbx.example.org.", RecordType::A, None);
    let replies = blast(s.dns, &vec![q; 600]).await;
    let full = replies.iter().filter(|r| r[2] & 0x02 == 0).count();
    // The default limit (100/s, burst 200) would cut this short if loopback were limited.
    assert!(full > 400, "only {full} of 600 answered");
    assert_eq!(
        metric(&s, "sipdns_dns_rate_limited_total{action=\"drop\"}"),
        0
    );
}

#[tokio::test]
async fn the_rate_limit_table_is_bounded() {
    let s = server::start(
        &rate_limit_config("").replace("    exempt: []\n", "    exempt: []\n    max_clients: 32\n"),
        &example_zones(),
    )
    .await;
    let q = wire("server1.pbx.example.org.", RecordType::A, None);
    // 300 clients (127.0.1.0 ... 127.0.2.43), one query each.
    let mut socks = Vec::new();
    for i in 0..300u32 {
        let ip = std::net::Ipv4Addr::from(0x7f00_0100 + i);
        let sock = UdpSocket::bind((ip, 0)).await.unwrap();
        sock.send_to(&q, s.dns).await.unwrap();
        socks.push(sock);
    }
    // Poll (bounded) until the server has dealt with all 300 (answered or limited).
    let mut tracked = usize::MAX;
    for _ in 0..100 {
        let seen = metric_sum(&s, "sipdns_dns_queries_total")
            + metric_sum(&s, "sipdns_dns_rate_limited_total");
        tracked = s.server().handler.limiter().len();
        if seen >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tracked <= 32,
        "{tracked} clients tracked with max_clients 32"
    );
    // The clients that did not fit shared one bucket, so they were limited together.
    assert!(metric_sum(&s, "sipdns_dns_rate_limited_total") > 0);
    assert!(tracked > 0);
}
