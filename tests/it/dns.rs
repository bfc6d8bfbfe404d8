//! The DNS core (issue #2) against the real server: static zones, RFC 3263 ADDITIONAL
//! records, size limits, EDNS, case, ACL, negative answers.

use std::time::Duration;

use hickory_proto::{
    op::{Message, ResponseCode},
    rr::RecordType,
};

use crate::common::{
    client::{self, lines, query},
    server::{self, example_zones},
};

fn names_of(m: &Message, section: &[hickory_proto::rr::Record], t: RecordType) -> Vec<String> {
    let _ = m;
    section
        .iter()
        .filter(|r| r.record_type() == t)
        .map(|r| r.name.to_ascii().to_ascii_lowercase())
        .collect()
}

#[tokio::test]
async fn naptr_answer_carries_srv_and_addresses_in_additional() {
    let s = server::start("", &example_zones()).await;
    let (m, _) = client::udp(
        s.dns,
        &query("pbx.example.org.", RecordType::NAPTR, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.metadata.authoritative);
    assert_eq!(m.answers.len(), 3, "{:?}", lines(&m.answers));
    // RFC 3263: the SRV records of every NAPTR replacement...
    let srv = names_of(&m, &m.additionals, RecordType::SRV);
    for owner in [
        "_sips._tcp.pbx.example.org.",
        "_sip._tcp.pbx.example.org.",
        "_sip._udp.pbx.example.org.",
    ] {
        assert_eq!(
            srv.iter().filter(|n| *n == owner).count(),
            2,
            "{owner}: {:?}",
            lines(&m.additionals)
        );
    }
    // ...and the A/AAAA of their targets.
    let a = names_of(&m, &m.additionals, RecordType::A);
    let aaaa = names_of(&m, &m.additionals, RecordType::AAAA);
    for host in ["server1.pbx.example.org.", "server2.pbx.example.org."] {
        assert!(a.contains(&host.to_owned()), "{:?}", lines(&m.additionals));
        assert!(
            aaaa.contains(&host.to_owned()),
            "{:?}",
            lines(&m.additionals)
        );
    }
}

#[tokio::test]
async fn srv_answer_carries_target_addresses() {
    let s = server::start("", &example_zones()).await;
    let (m, _) = client::udp(
        s.dns,
        &query("_sip._udp.pbx.example.org.", RecordType::SRV, Some(1232)),
    )
    .await;
    assert_eq!(m.answers.len(), 2);
    assert_eq!(
        names_of(&m, &m.additionals, RecordType::A).len(),
        2,
        "{:?}",
        lines(&m.additionals)
    );
    assert_eq!(names_of(&m, &m.additionals, RecordType::AAAA).len(), 2);
}

#[tokio::test]
async fn classic_512_byte_client_gets_answers_without_additional_and_no_tc() {
    let s = server::start("", &example_zones()).await;
    // The full NAPTR answer with its additional section is larger than 512 bytes.
    let full = client::tcp(s.dns, &query("pbx.example.org.", RecordType::NAPTR, None)).await;
    assert!(
        full.to_vec().unwrap().len() > 512,
        "fixture too small to test trimming"
    );
    let (m, size) = client::udp(s.dns, &query("pbx.example.org.", RecordType::NAPTR, None)).await;
    assert!(size <= 512, "{size} bytes to a client without EDNS");
    assert!(
        !m.metadata.truncation,
        "TC set although the answer section fits"
    );
    assert_eq!(m.answers.len(), 3);
    assert!(m.additionals.len() < full.additionals.len());
    assert!(
        m.edns.is_none(),
        "OPT in a reply to a client that sent none"
    );
}

#[tokio::test]
async fn tc_only_when_the_answer_itself_does_not_fit_and_tcp_carries_it() {
    let mut zone = String::from("zone: big.example.org\nrecords:\n");
    for i in 1..=60 {
        zone.push_str(&format!(
            "  - {{ name: many, type: A, address: 192.0.2.{i} }}\n"
        ));
    }
    let s = server::start("", &[("big.yaml", &zone)]).await;
    let (m, size) = client::udp(s.dns, &query("many.big.example.org.", RecordType::A, None)).await;
    assert!(size <= 512);
    assert!(m.metadata.truncation);
    let m = client::tcp(s.dns, &query("many.big.example.org.", RecordType::A, None)).await;
    assert!(!m.metadata.truncation);
    assert_eq!(m.answers.len(), 60);
}

#[tokio::test]
async fn edns_is_echoed_with_payload_capped_at_1232() {
    let s = server::start("", &example_zones()).await;
    let (m, _) = client::udp(s.dns, &query("pbx.example.org.", RecordType::A, Some(4096))).await;
    let edns = m.edns.expect("OPT echoed");
    assert_eq!(edns.max_payload(), 1232);
}

#[tokio::test]
async fn question_case_and_id_are_preserved() {
    let s = server::start("", &example_zones()).await;
    let q = query("PbX.ExAmPlE.oRg.", RecordType::A, Some(1232));
    let (m, _) = client::udp(s.dns, &q).await;
    assert_eq!(m.metadata.id, q.metadata.id);
    assert_eq!(m.queries[0].name.to_ascii(), "PbX.ExAmPlE.oRg.");
    assert_eq!(m.answers[0].name.to_ascii(), "PbX.ExAmPlE.oRg.");
    assert_eq!(m.answers.len(), 2);
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let s = server::start("", &example_zones()).await;
    let (m, _) = client::udp(
        s.dns,
        &query("nope.pbx.example.org.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities.len(), 1);
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(m.authorities[0].name.to_ascii(), "pbx.example.org.");
    // Negative TTL = min(SOA TTL, SOA minimum) = 30 (RFC 2308 §3).
    assert_eq!(m.authorities[0].ttl, 30);

    let (m, _) = client::udp(
        s.dns,
        &query("server1.pbx.example.org.", RecordType::TXT, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
    assert!(m.answers.is_empty());
    assert_eq!(m.authorities[0].record_type(), RecordType::SOA);

    // An empty non-terminal exists: NODATA, not NXDOMAIN.
    let (m, _) = client::udp(
        s.dns,
        &query("_udp.pbx.example.org.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::NoError);
}

#[tokio::test]
async fn zone_files_are_served_too() {
    let s = server::start(
        "zones:\n  modes:\n    example.net: override\n",
        &example_zones(),
    )
    .await;
    let (m, _) = client::udp(
        s.dns,
        &query("_sip._udp.gw.example.net.", RecordType::SRV, Some(1232)),
    )
    .await;
    assert_eq!(m.answers.len(), 1, "{:?}", lines(&m.answers));
    assert_eq!(
        names_of(&m, &m.additionals, RecordType::A),
        vec!["gw.example.net.".to_owned()]
    );
    // A CNAME in static data is followed.
    let (m, _) = client::udp(
        s.dns,
        &query("printer.example.net.", RecordType::A, Some(1232)),
    )
    .await;
    assert_eq!(lines(&m.answers).len(), 2, "{:?}", lines(&m.answers));
    assert_eq!(m.answers[1].record_type(), RecordType::A);
}

#[tokio::test]
async fn clients_outside_the_acl_are_refused() {
    let cfg =
        "dns:\n  listen: [\"127.0.0.1:0\"]\n  allow: [\"10.0.0.0/8\"]\napi:\n  listen: null\n";
    let s = server::start(cfg, &example_zones()).await;
    let (m, _) = client::udp(
        s.dns,
        &query("pbx.example.org.", RecordType::NAPTR, Some(1232)),
    )
    .await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
    assert!(m.answers.is_empty());
    let m = client::tcp(s.dns, &query("pbx.example.org.", RecordType::NAPTR, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::Refused);
}

#[tokio::test]
async fn malformed_and_odd_queries_get_the_right_errors() {
    let s = server::start("", &example_zones()).await;
    // Garbage after a valid header: FORMERR with the same ID.
    let mut bytes = query("pbx.example.org.", RecordType::A, None)
        .to_vec()
        .unwrap();
    bytes.truncate(20);
    let raw = client::udp_raw(s.dns, &bytes, Duration::from_secs(5))
        .await
        .unwrap();
    let m = Message::from_vec(&raw).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert_eq!(&raw[..2], &bytes[..2]);
    // A response (QR set) is never answered.
    let mut resp = query("pbx.example.org.", RecordType::A, None)
        .to_vec()
        .unwrap();
    resp[2] |= 0x80;
    assert!(
        client::udp_raw(s.dns, &resp, Duration::from_millis(300))
            .await
            .is_none()
    );
    // EDNS version 1: BADVERS.
    let mut q = query("pbx.example.org.", RecordType::A, Some(1232));
    q.edns.as_mut().unwrap().set_version(1);
    let (m, _) = client::udp(s.dns, &q).await;
    // Extended rcode 16 (hickory decodes 16 as BADSIG, which shares the number).
    assert_eq!(u16::from(m.metadata.response_code), 16);
    assert_eq!(m.edns.as_ref().map(|e| e.version()), Some(0));
    // And the server still answers normally afterwards.
    let (m, _) = client::udp(s.dns, &query("pbx.example.org.", RecordType::A, None)).await;
    assert_eq!(m.answers.len(), 2);
}

#[tokio::test]
async fn repeated_questions_from_the_answer_cache_echo_each_client() {
    let s = server::start("", &example_zones()).await;
    // First: fills the fast path. Then the same question in other spellings, sizes and IDs.
    let mut sizes = Vec::new();
    for (name, edns) in [
        ("pbx.example.org.", Some(1232)),
        ("PBX.EXAMPLE.ORG.", Some(1232)),
        ("pBx.ExAmPlE.OrG.", None),
        ("pbx.example.org.", None),
    ] {
        let q = query(name, RecordType::NAPTR, edns);
        let (m, size) = client::udp(s.dns, &q).await;
        assert_eq!(m.metadata.id, q.metadata.id);
        assert_eq!(m.queries[0].name.to_ascii(), name);
        assert_eq!(
            m.answers[0].name.to_ascii(),
            name,
            "owner names echo the client's case"
        );
        assert_eq!(m.answers.len(), 3);
        assert_eq!(m.edns.is_some(), edns.is_some());
        sizes.push(size);
    }
    assert_eq!(sizes[0], sizes[1]);
    assert!(sizes[2] <= 512 && sizes[3] <= 512, "{sizes:?}");
    let metrics = s.server().metrics.encode();
    assert!(
        metrics.contains("sipdns_dns_answers_total{source=\"static\"} 4"),
        "{metrics}"
    );
}
