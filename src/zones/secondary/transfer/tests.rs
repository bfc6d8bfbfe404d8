#![allow(clippy::unwrap_used)]

use super::*;

fn soa(serial: u32) -> Rec {
    Rec::new(
        DomainName::parse("example.org").unwrap(),
        60,
        RecordData::Soa {
            mname: DomainName::parse("ns.example.org").unwrap(),
            rname: DomainName::parse("admin.example.org").unwrap(),
            serial,
            refresh: 60,
            retry: 10,
            expire: 600,
            minimum: 30,
        },
    )
}

fn a(name: &str, last: u8) -> Rec {
    Rec::new(
        DomainName::parse(name).unwrap(),
        60,
        RecordData::A(std::net::Ipv4Addr::new(192, 0, 2, last)),
    )
}

fn zone() -> DomainName {
    DomainName::parse("example.org").unwrap()
}

#[test]
fn axfr_stream_over_two_messages() {
    let mut s = Stream::new(zone(), None);
    assert!(!s.feed([soa(5), a("a.example.org", 1)].into_iter()).unwrap());
    assert!(s.feed([a("b.example.org", 2), soa(5)].into_iter()).unwrap());
    let (kind, body) = s.finish().unwrap();
    assert_eq!(kind, Kind::Axfr);
    assert_eq!(
        body,
        Body::Full(vec![soa(5), a("a.example.org", 1), a("b.example.org", 2)])
    );
}

#[test]
fn ixfr_two_steps() {
    let mut s = Stream::new(zone(), Some(5));
    let recs = [
        soa(7),
        soa(5),
        a("a.example.org", 1),
        soa(6),
        a("a.example.org", 2),
        soa(6),
        soa(7),
        a("c.example.org", 3),
        soa(7),
    ];
    assert!(s.feed(recs.into_iter()).unwrap());
    let (kind, body) = s.finish().unwrap();
    assert_eq!(kind, Kind::Ixfr);
    let Body::Incremental { soa: new, diffs } = body else {
        panic!("not incremental");
    };
    assert_eq!(new, soa(7));
    assert_eq!(diffs.len(), 2);
    assert_eq!(diffs[0].removed, vec![a("a.example.org", 1)]);
    assert_eq!(diffs[0].added, vec![a("a.example.org", 2)]);
    assert!(diffs[1].removed.is_empty());
    assert_eq!(diffs[1].added, vec![a("c.example.org", 3)]);
}

#[test]
fn ixfr_up_to_date_and_axfr_fallback() {
    let mut s = Stream::new(zone(), Some(5));
    assert!(!s.feed([soa(5)].into_iter()).unwrap());
    assert!(s.up_to_date_after_first_message());
    assert_eq!(s.finish().unwrap().1, Body::UpToDate);
    // A primary without the history answers an IXFR with the whole zone.
    let mut s = Stream::new(zone(), Some(5));
    assert!(
        s.feed([soa(6), a("a.example.org", 1), soa(6)].into_iter())
            .unwrap()
    );
    assert_eq!(s.finish().unwrap().0, Kind::Axfr);
}

#[test]
fn hostile_streams_are_errors() {
    let mut s = Stream::new(zone(), None);
    assert!(s.feed([a("a.example.org", 1)].into_iter()).is_err());
    let mut s = Stream::new(zone(), None);
    assert!(
        s.feed([soa(5), soa(5), a("a.example.org", 1)].into_iter())
            .is_err()
    );
    let mut s = Stream::new(zone(), None);
    s.feed([soa(5), a("a.example.org", 1)].into_iter()).unwrap();
    assert!(s.finish().is_err());
}

#[test]
fn serial_arithmetic() {
    assert!(newer(2, 1));
    assert!(!newer(1, 2));
    assert!(newer(0, u32::MAX));
    assert!(!newer(5, 5));
}
