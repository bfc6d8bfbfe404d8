//! DNS request bytes through the pure edge of the request path: the fast-path reader
//! (`fastpath::quick` + its cache key, `fastpath::key_into`), the full parser (`wire::parse`) and the encoder
//! for a parsed question. Checks invariants, not just "no panic":
//!
//! - whatever the fast path accepts, its offsets lie inside the packet, and the question it
//!   reads (`wire::from_quick`) equals the full parser's;
//! - an immediate reply (FORMERR, NOTIMP, BADVERS, REFUSED) decodes, is a response and
//!   echoes the request's ID;
//! - a packet with the QR bit set is never answered;
//! - an encoded answer decodes, echoes the ID and fits the budget (512 bytes without EDNS).
#![no_main]

use std::net::Ipv4Addr;

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use sipdns::{
    dns::{
        fastpath,
        wire::{self, Parsed},
    },
    record::{Answer, DomainName, Rec, RecordData, Source},
};

fuzz_target!(|data: &[u8]| {
    if let Some(q) = fastpath::quick(data) {
        assert!(q.qname_end > 12 && q.qname_end <= data.len());
        for (limit, tcp) in [(512, false), (1232, false), (65_535, true)] {
            let mut buf = fastpath::KeyBuf::new();
            let k = fastpath::key_into(data, &q, limit, tcp, &mut buf);
            assert_eq!(k.len(), q.qname_end - 12 + 6);
        }
        assert_eq!(data[2] & 0x80, 0, "fast path accepted a response");
        // The question the fast path reads is the one the full parser reads.
        if let Some(fq) = wire::from_quick(data, &q) {
            match wire::parse(data, 1232) {
                Parsed::Query(full) => assert_eq!(fq, full, "quick reader and parser disagree"),
                other => panic!("quick reader accepted what the parser answers {other:?}"),
            }
        }
    }
    match wire::parse(data, 1232) {
        Parsed::Drop(_) => {}
        Parsed::Reply(bytes, _) => {
            assert!(data.len() >= 12);
            assert_eq!(data[2] & 0x80, 0, "a response was answered");
            assert!(bytes.len() >= 12, "empty immediate reply");
            assert_eq!(&bytes[..2], &data[..2], "ID not echoed");
            let m = Message::from_vec(&bytes).expect("immediate reply does not decode");
            assert!(bytes[2] & 0x80 != 0);
            assert!(m.queries.len() <= 1);
        }
        Parsed::Query(q) => {
            assert_eq!(data[2] & 0x80, 0, "a response was accepted as a query");
            let name = DomainName::parse("pbx.example.org").unwrap_or_else(|_| DomainName::root());
            let recs: Vec<Rec> = (0..40u8)
                .map(|i| Rec::new(name.clone(), 30, RecordData::A(Ipv4Addr::new(192, 0, 2, i))))
                .collect();
            let mut answer = Answer::records(recs[..4].to_vec(), Source::Static);
            answer.additional = recs;
            for tcp in [false, true] {
                let limit = wire::budget(&q, tcp, 1232);
                if !tcp && q.edns_payload.is_none() {
                    assert_eq!(limit, 512);
                }
                let (bytes, _tc) = wire::encode(&q, &answer, limit, 1232);
                assert!(bytes.len() <= limit, "{} > {limit}", bytes.len());
                assert_eq!(&bytes[..2], &data[..2]);
                Message::from_vec(&bytes).expect("encoded answer does not decode");
            }
        }
    }
});
