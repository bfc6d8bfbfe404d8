#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{Ipv4Addr, SocketAddr};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RecordType},
};

use super::{follow::apply, transfer::Diff, *};
use crate::zones::{ZoneFormat, load_zone_file_text};

fn zone(text: &str) -> Zone {
    let mut z = load_zone_file_text(
        std::path::Path::new("x.zone"),
        text,
        None,
        MergeMode::Override,
    )
    .unwrap();
    z.format = ZoneFormat::Secondary;
    z
}

fn rec(line: &str) -> Rec {
    let z = zone(&format!(
        "$ORIGIN example.org.\n@ 60 IN SOA ns.example.org. a.example.org. 1 60 10 600 30\n{line}\n"
    ));
    z.recs[0].clone()
}

#[test]
fn ixfr_steps_apply_to_the_records_held() {
    let base = zone(
        "$ORIGIN example.org.\n@ 60 IN SOA ns.example.org. a.example.org. 1 60 10 600 30\n\
         a 60 IN A 192.0.2.1\nb 60 IN A 192.0.2.2\n",
    );
    let new_soa =
        zone("$ORIGIN example.org.\n@ 60 IN SOA ns.example.org. a.example.org. 3 60 10 600 30\n")
            .soa;
    let diffs = vec![
        Diff {
            removed: vec![rec("a 60 IN A 192.0.2.1")],
            added: vec![rec("a 60 IN A 192.0.2.9")],
        },
        Diff {
            removed: vec![],
            // Added twice: kept once.
            added: vec![rec("c 60 IN A 192.0.2.3"), rec("b 60 IN A 192.0.2.2")],
        },
    ];
    let out = apply(
        &base,
        new_soa.clone(),
        diffs,
        std::path::Path::new("x.zone"),
    )
    .unwrap();
    assert_eq!(out.soa, new_soa);
    assert_eq!(out.len(), 3);
    let a = DomainName::parse("a.example.org").unwrap();
    assert_eq!(out.records_of(&a), &[rec("a 60 IN A 192.0.2.9")]);
}

#[test]
fn an_ixfr_bringing_a_name_outside_the_zone_is_rejected() {
    let base =
        zone("$ORIGIN example.org.\n@ 60 IN SOA ns.example.org. a.example.org. 1 60 10 600 30\n");
    let outside = Rec::new(
        DomainName::parse("evil.example.net").unwrap(),
        60,
        RecordData::A(Ipv4Addr::new(192, 0, 2, 66)),
    );
    let e = apply(
        &base,
        base.soa.clone(),
        vec![Diff {
            removed: vec![],
            added: vec![outside],
        }],
        std::path::Path::new("x.zone"),
    )
    .unwrap_err();
    assert!(e.to_string().contains("outside the zone"), "{e}");
}

fn secondaries(primary: SocketAddr) -> Arc<Secondaries> {
    let dir = tempfile::tempdir().unwrap();
    let config = ZonesConfig {
        secondary_dir: dir.path().to_path_buf(),
        secondary: vec![SecondaryConfig {
            zone: Some(DomainName::parse("pbx.example.org").unwrap()),
            catalog: None,
            primaries: vec![primary],
            tsig: None,
            mode: MergeMode::Override,
            refresh: None,
            retry: None,
        }],
        ..ZonesConfig::default()
    };
    Secondaries::open(&config, Arc::new(Metrics::new())).unwrap()
}

fn notify_bytes(zone: &str) -> Vec<u8> {
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Notify);
    m.add_query(Query::query(
        Name::from_ascii(zone).unwrap(),
        RecordType::SOA,
    ));
    m.to_vec().unwrap()
}

#[test]
fn notify_only_from_a_listed_primary_for_a_followed_zone() {
    let s = secondaries("127.0.0.53:53".parse().unwrap());
    let answer = |zone: &str, src: &str| {
        let bytes = s.notify(&notify_bytes(zone), src.parse().unwrap()).unwrap();
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 0x1234);
        assert_eq!(m.metadata.op_code, OpCode::Notify);
        assert_eq!(m.metadata.message_type, MessageType::Response);
        m.metadata.response_code
    };
    // Any source port: NOTIFY comes from the primary's address, not its listening port.
    assert_eq!(
        answer("pbx.example.org.", "127.0.0.53:40000"),
        ResponseCode::NoError
    );
    assert_eq!(
        answer("pbx.example.org.", "127.0.0.54:53"),
        ResponseCode::Refused
    );
    assert_eq!(
        answer("other.example.org.", "127.0.0.53:53"),
        ResponseCode::Refused
    );
    let m = &s.metrics;
    assert_eq!(m.zone_notifies.with_label_values(&["accepted"]).get(), 1);
    assert_eq!(m.zone_notifies.with_label_values(&["refused"]).get(), 2);
    // Garbage is not answered.
    assert!(
        s.notify(&[1, 2, 3], "127.0.0.53:1".parse().unwrap())
            .is_none()
    );
    // Many questions (RFC 1996 allows one): FORMERR, none echoed, so the answer stays
    // small whatever was sent.
    let mut many = Message::from_vec(&notify_bytes("pbx.example.org.")).unwrap();
    for i in 0..40 {
        many.add_query(Query::query(
            Name::from_ascii(format!(
                "a-rather-long-label-to-fill-the-packet-{i}.example.org."
            ))
            .unwrap(),
            RecordType::SOA,
        ));
    }
    let bytes = many.to_vec().unwrap();
    assert!(bytes.len() > 1500);
    let answer = s.notify(&bytes, "127.0.0.53:1".parse().unwrap()).unwrap();
    assert!(answer.len() <= 12, "{} bytes", answer.len());
    let m = Message::from_vec(&answer).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    assert!(m.queries.is_empty());
}
