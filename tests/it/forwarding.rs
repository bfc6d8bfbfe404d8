//! Forwarding through the real server (issue #2 points 5 and 6): relayed sections and
//! rcodes, merge modes against a live upstream, serve-stale when the upstream goes silent,
//! bounded concurrency and coalescing.

use std::time::{Duration, Instant};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use sipdns::record::{RType, Rcode};

use crate::common::{
    client::{self, lines, query},
    fake_upstream::{Behaviour, FakeUpstream, Reply, a, naptr, soa, srv},
    server::{self, TestServer},
};

fn upstream_cfg(up: &FakeUpstream, extra: &str) -> String {
    format!(
        "upstream:\n  servers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n  stale_answer_after: 500ms\n{extra}",
        up.addr()
    )
}

async fn start(up: &FakeUpstream, extra: &str, zones: &[(&str, &str)]) -> TestServer {
    server::start(&upstream_cfg(up, extra), zones).await
}

#[tokio::test]
async fn forwarded_answers_relay_every_section_and_the_rcode() {
    let up = FakeUpstream::start().await;
    up.reply(
        "voip.example.net",
        RType::NAPTR,
        Reply {
            rcode: Rcode::NoError,
            answers: vec![naptr(
                "voip.example.net",
                60,
                10,
                10,
                "SIP+D2U",
                "_sip._udp.voip.example.net",
            )],
            authority: vec![],
            additional: vec![
                srv(
                    "_sip._udp.voip.example.net",
                    60,
                    0,
                    1,
                    5060,
                    "sip1.voip.example.net",
                ),
                a("sip1.voip.example.net", 60, "192.0.2.61"),
            ],
        },
    );
    up.nxdomain("nope.example.net", RType::A, soa("example.net", 60, 45));
    let s = start(&up, "", &[]).await;

    let (m, _) = client::udp(
        s.dns,
        &query("voip.example.net.", RecordType::NAPTR, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(!m.metadata.authoritative);
    assert_eq!(m.answers.len(), 1);
    assert_eq!(m.additionals.len(), 2, "{:?}", lines(&m.additionals));

    let (m, _) = client::udp(
        s.dns,
        &query("nope.example.net.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    // Over TCP too.
    let m = client::tcp(s.dns, &query("voip.example.net.", RecordType::NAPTR, None)).await;
    assert_eq!(m.answers.len(), 1);
}

#[tokio::test]
async fn merge_and_fallback_modes_combine_with_upstream() {
    let up = FakeUpstream::start().await;
    up.answer(
        "_sip._udp.cloud.example.net",
        RType::SRV,
        vec![srv(
            "_sip._udp.cloud.example.net",
            300,
            10,
            1,
            5060,
            "sip.cloud.example.net",
        )],
    );
    up.answer(
        "sip.cloud.example.net",
        RType::A,
        vec![a("sip.cloud.example.net", 300, "192.0.2.70")],
    );
    up.nxdomain(
        "gw.office.example.org",
        RType::A,
        soa("office.example.org", 60, 60),
    );
    let merge = "zone: cloud.example.net\nmode: merge\nrecords:\n  - { name: _sip._udp, type: SRV, priority: 20, weight: 0, port: 5060, target: gw.example.org. }\n";
    let fallback = "zone: office.example.org\nmode: fallback\nrecords:\n  - { name: gw, type: A, address: 192.0.2.99 }\n";
    let s = start(&up, "", &[("cloud.yaml", merge), ("office.yaml", fallback)]).await;

    // merge: the cloud's SRV plus the local gateway.
    let (m, _) = client::udp(
        s.dns,
        &query("_sip._udp.cloud.example.net.", RecordType::SRV, Some(1232)),
    )
    .await;
    let got = lines(&m.answers);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(
        got.iter().any(|l| l.contains("sip.cloud.example.net")),
        "{got:?}"
    );
    assert!(got.iter().any(|l| l.contains("gw.example.org")), "{got:?}");
    // Names of a merge zone that static data lacks come from upstream.
    let (m, _) = client::udp(
        s.dns,
        &query("sip.cloud.example.net.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(m.answers.len(), 1);

    // fallback: upstream says NXDOMAIN, so the static record is served.
    let (m, _) = client::udp(
        s.dns,
        &query("gw.office.example.org.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(
        lines(&m.answers),
        vec!["gw.office.example.org. A 192.0.2.99".to_owned()]
    );
    // fallback: upstream silent, static waits at most stale_answer_after.
    up.set_behaviour(Behaviour::Silent);
    let t = Instant::now();
    let (m, _) = client::udp(
        s.dns,
        &query("gw.office.example.org.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(m.answers.len(), 1);
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn silent_upstream_serves_stale_and_recovers_without_restart() {
    let up = FakeUpstream::start().await;
    up.answer(
        "www.example.net",
        RType::A,
        vec![a("www.example.net", 1, "192.0.2.80")],
    );
    let s = start(&up, "", &[]).await;
    let (m, _) = client::udp(s.dns, &query("www.example.net.", RecordType::A, Some(1232))).await;
    assert_eq!(m.answers.len(), 1);

    // The office link goes down. Once the 1 s TTL has run out, the answer is served stale
    // with TTL 30 (RFC 8767); bounded polling.
    up.set_behaviour(Behaviour::Silent);
    let mut stale = None;
    for _ in 0..40 {
        let (m, _) =
            client::udp(s.dns, &query("www.example.net.", RecordType::A, Some(1232))).await;
        if m.answers.first().is_some_and(|r| r.ttl == 30) {
            stale = Some(m);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = stale.expect("no stale answer within 4 s");
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert_eq!(
        lines(&m.answers),
        vec!["www.example.net. A 192.0.2.80".to_owned()]
    );
    let metrics = s.server().metrics.encode();
    assert!(
        metrics.contains("sipdns_dns_answers_total{source=\"stale\"}"),
        "{metrics}"
    );

    // Nothing cached and the upstream silent: SERVFAIL.
    let (m, _) = client::udp(
        s.dns,
        &query("never.example.net.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::ServFail);

    // The link comes back: fresh answers, no restart.
    up.answer(
        "www.example.net",
        RType::A,
        vec![a("www.example.net", 300, "192.0.2.81")],
    );
    up.set_behaviour(Behaviour::Answer);
    let mut fresh = false;
    for _ in 0..40 {
        let (m, _) =
            client::udp(s.dns, &query("www.example.net.", RecordType::A, Some(1232))).await;
        if lines(&m.answers) == vec!["www.example.net. A 192.0.2.81".to_owned()] {
            fresh = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fresh, "upstream recovery not picked up");
}

#[tokio::test]
async fn identical_questions_in_flight_share_one_upstream_request() {
    let up = FakeUpstream::start().await;
    up.answer(
        "slow.example.net",
        RType::A,
        vec![a("slow.example.net", 300, "192.0.2.90")],
    );
    up.set_delay(Duration::from_millis(200));
    let s = start(&up, "", &[]).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let dns = s.dns;
        tasks.push(tokio::spawn(async move {
            client::udp(dns, &query("slow.example.net.", RecordType::A, Some(1232)))
                .await
                .0
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().answers.len(), 1);
    }
    assert_eq!(up.queries("slow.example.net", RType::A), 1);
}

#[tokio::test]
async fn queries_waiting_on_upstream_are_bounded() {
    let up = FakeUpstream::start().await;
    up.set_delay(Duration::from_millis(250));
    for i in 0..40 {
        let n = format!("n{i}.example.net");
        up.answer(&n, RType::A, vec![a(&n, 300, "192.0.2.1")]);
    }
    let cfg = format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  max_inflight: 4\napi:\n  listen: null\n{}",
        upstream_cfg(&up, "")
    );
    let s = server::start(&cfg, &[]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let dns = s.dns;
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let (m, _) = client::udp(
                dns,
                &query(&format!("n{i}.example.net."), RecordType::A, Some(1232)),
            )
            .await;
            (m.metadata.response_code, t.elapsed())
        }));
    }
    let mut servfail = 0;
    for t in tasks {
        let (rcode, took) = t.await.unwrap();
        assert!(took < Duration::from_secs(3), "{took:?}");
        if rcode == ResponseCode::ServFail {
            servfail += 1;
        }
    }
    // Past the bound, queries are answered at once instead of queueing.
    assert!(servfail > 0, "no query was turned away");
    assert!(
        up.total_queries() <= 40 - servfail,
        "{} upstream queries",
        up.total_queries()
    );
    let metrics = s.server().metrics.encode();
    assert!(
        metrics.contains("sipdns_dns_dropped_total{reason=\"overloaded\"}"),
        "{metrics}"
    );
}
