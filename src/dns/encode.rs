//! A response encoder with full name compression (RFC 1035 §4.1.4), written for sipdns.
//!
//! Why not hickory's encoder: hickory 0.26 does not compress answer owner names against the
//! question, so every answer repeats the full name, and responses come out larger than
//! unbound's for the same records. Here every name — owners and the names inside NS, CNAME,
//! PTR, MX and SOA data — is compressed against everything written before it, compared
//! case-insensitively; owner names equal to the question become a pointer to the question,
//! which carries the client's own spelling, so the response echoes the client's case (0x20)
//! without rewriting records. SRV targets and NAPTR replacements are never compressed
//! (RFC 2782, RFC 3403 §4.1).

use std::collections::HashMap;

use crate::record::{Answer, RType, Rcode, Rec, RecordData};

/// The question as the client wrote it.
#[derive(Debug, Clone)]
pub struct WireQuestion<'a> {
    /// ID to echo.
    pub id: u16,
    /// The question name in wire form (labels with the client's case), root included.
    pub qname_wire: &'a [u8],
    /// Query type.
    pub qtype: u16,
    /// Recursion desired.
    pub rd: bool,
    /// Checking disabled.
    pub cd: bool,
    /// Add an OPT record advertising this payload size (when the client sent EDNS).
    pub opt_payload: Option<u16>,
}

struct Writer {
    buf: Vec<u8>,
    /// Lower-cased presentation suffix -> offset of its first label.
    names: HashMap<Vec<u8>, u16>,
}

/// Splits a presentation-form name (`a.b.c.`, with `\.` and `\DDD` escapes) into labels.
fn labels(name: &str) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut cur = Vec::new();
    let b = name.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 3 < b.len() && b[i + 1..=i + 3].iter().all(u8::is_ascii_digit) => {
                let d = |x: u8| u16::from(x - b'0');
                let v = d(b[i + 1]) * 100 + d(b[i + 2]) * 10 + d(b[i + 3]);
                cur.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            b'\\' if i + 1 < b.len() => {
                cur.push(b[i + 1]);
                i += 2;
            }
            b'.' => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
                i += 1;
            }
            c => {
                cur.push(c);
                i += 1;
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// The lower-cased key of a label sequence, for the compression map.
fn key(labels: &[Vec<u8>]) -> Vec<u8> {
    let mut k = Vec::with_capacity(64);
    for l in labels {
        k.push(l.len() as u8);
        k.extend(l.iter().map(u8::to_ascii_lowercase));
    }
    k
}

impl Writer {
    fn new() -> Self {
        Self {
            buf: Vec::with_capacity(512),
            names: HashMap::new(),
        }
    }

    fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_be_bytes());
    }

    /// Writes wire-form labels (as the client sent them), remembering every suffix.
    fn wire_name(&mut self, wire: &[u8]) {
        let mut ls = Vec::new();
        let mut i = 0;
        while i < wire.len() && wire[i] != 0 {
            let len = usize::from(wire[i]);
            let end = (i + 1 + len).min(wire.len());
            ls.push(wire[i + 1..end].to_vec());
            i = end;
        }
        self.labels(&ls, true);
    }

    fn name(&mut self, presentation: &str, compress: bool) {
        let ls = labels(presentation);
        self.labels(&ls, compress);
    }

    fn labels(&mut self, ls: &[Vec<u8>], compress: bool) {
        for i in 0..ls.len() {
            let k = key(&ls[i..]);
            if compress && let Some(&off) = self.names.get(&k) {
                self.u16(0xC000 | off);
                return;
            }
            let here = self.buf.len();
            if here < 0x3FFF {
                self.names.entry(k).or_insert(here as u16);
            }
            self.buf.push(ls[i].len() as u8);
            self.buf.extend_from_slice(&ls[i]);
        }
        self.buf.push(0);
    }

    fn record(&mut self, r: &Rec) {
        self.name(r.name.as_str(), true);
        self.u16(r.rtype().0);
        self.u16(1); // IN
        self.u32(r.ttl);
        let len_at = self.buf.len();
        self.u16(0);
        let start = self.buf.len();
        match &r.data {
            RecordData::A(a) => self.buf.extend_from_slice(&a.octets()),
            RecordData::Aaaa(a) => self.buf.extend_from_slice(&a.octets()),
            RecordData::Cname(n) | RecordData::Ns(n) | RecordData::Ptr(n) => {
                self.name(n.as_str(), true)
            }
            RecordData::Mx {
                preference,
                exchange,
            } => {
                self.u16(*preference);
                self.name(exchange.as_str(), true);
            }
            RecordData::Txt(parts) => {
                for p in parts {
                    let b = p.as_bytes();
                    let b = &b[..b.len().min(255)];
                    self.buf.push(b.len() as u8);
                    self.buf.extend_from_slice(b);
                }
            }
            RecordData::Srv {
                priority,
                weight,
                port,
                target,
            } => {
                self.u16(*priority);
                self.u16(*weight);
                self.u16(*port);
                self.name(target.as_str(), false);
            }
            RecordData::Naptr {
                order,
                preference,
                flags,
                services,
                regexp,
                replacement,
            } => {
                self.u16(*order);
                self.u16(*preference);
                for s in [flags, services, regexp] {
                    let b = s.as_bytes();
                    let b = &b[..b.len().min(255)];
                    self.buf.push(b.len() as u8);
                    self.buf.extend_from_slice(b);
                }
                self.name(replacement.as_str(), false);
            }
            RecordData::Soa {
                mname,
                rname,
                serial,
                refresh,
                retry,
                expire,
                minimum,
            } => {
                self.name(mname.as_str(), true);
                self.name(rname.as_str(), true);
                for v in [serial, refresh, retry, expire, minimum] {
                    self.u32(*v);
                }
            }
            RecordData::Opaque { rdata, .. } => self.buf.extend_from_slice(rdata),
        }
        let len = (self.buf.len() - start) as u16;
        self.buf[len_at..len_at + 2].copy_from_slice(&len.to_be_bytes());
    }

    fn opt(&mut self, payload: u16, rcode: Rcode) {
        self.buf.push(0);
        self.u16(RType::OPT.0);
        self.u16(payload);
        // Extended rcode (high 8 bits), version 0, flags 0.
        let high = (rcode_value(rcode) >> 4) as u8;
        self.u32(u32::from(high) << 24);
        self.u16(0);
    }
}

fn rcode_value(r: Rcode) -> u16 {
    match r {
        Rcode::NoError => 0,
        Rcode::FormErr => 1,
        Rcode::ServFail => 2,
        Rcode::NxDomain => 3,
        Rcode::NotImp => 4,
        Rcode::Refused => 5,
        Rcode::BadVers => 16,
        Rcode::Other(n) => n,
    }
}

/// Encodes a response: header, the question as the client wrote it, then the sections, as
/// many as fit in `limit` (ADDITIONAL dropped first, then AUTHORITY of a positive answer;
/// TC only when the ANSWER section does not fit). Returns the bytes and whether TC was set.
pub fn response(q: &WireQuestion<'_>, answer: &Answer, limit: usize) -> (Vec<u8>, bool) {
    let attempt = |answers: &[Rec], authority: &[Rec], additional: &[Rec], tc: bool| -> Vec<u8> {
        let mut w = Writer::new();
        w.u16(q.id);
        let mut flags: u16 = 0x8000; // QR
        if answer.authoritative {
            flags |= 0x0400;
        }
        if tc {
            flags |= 0x0200;
        }
        if q.rd {
            flags |= 0x0100;
        }
        flags |= 0x0080; // RA
        if q.cd {
            flags |= 0x0010;
        }
        flags |= rcode_value(answer.rcode) & 0x000F;
        w.u16(flags);
        w.u16(1);
        w.u16(answers.len() as u16);
        w.u16(authority.len() as u16);
        w.u16((additional.len() + usize::from(q.opt_payload.is_some())) as u16);
        w.wire_name(q.qname_wire);
        w.u16(q.qtype);
        w.u16(1);
        for r in answers.iter().chain(authority).chain(additional) {
            w.record(r);
        }
        if let Some(p) = q.opt_payload {
            w.opt(p, answer.rcode);
        }
        w.buf
    };
    let full = attempt(
        &answer.answers,
        &answer.authority,
        &answer.additional,
        false,
    );
    if full.len() <= limit {
        return (full, false);
    }
    let no_add = attempt(&answer.answers, &answer.authority, &[], false);
    if no_add.len() <= limit {
        return (no_add, false);
    }
    if !answer.answers.is_empty() {
        let bare = attempt(&answer.answers, &[], &[], false);
        if bare.len() <= limit {
            return (bare, false);
        }
    }
    (attempt(&[], &[], &[], true), true)
}

#[cfg(test)]
mod tests {
    use hickory_proto::{
        op::{Message, ResponseCode},
        rr::{Name, RecordType},
        serialize::binary::BinEncodable,
    };

    use super::*;
    use crate::record::{DomainName, Source};

    fn wire(name: &str) -> Vec<u8> {
        Name::from_ascii(name).unwrap().to_bytes().unwrap()
    }

    fn n(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    #[test]
    fn compresses_owners_into_the_question_and_keeps_client_case() {
        let qn = wire("PbX.Example.ORG.");
        let q = WireQuestion {
            id: 7,
            qname_wire: &qn,
            qtype: 35,
            rd: true,
            cd: false,
            opt_payload: Some(1232),
        };
        let naptr = |order, svc: &str, repl: &str| {
            Rec::new(
                n("pbx.example.org"),
                30,
                RecordData::Naptr {
                    order,
                    preference: 50,
                    flags: "s".into(),
                    services: svc.into(),
                    regexp: String::new(),
                    replacement: n(repl),
                },
            )
        };
        let mut a = Answer::records(
            vec![
                naptr(90, "SIP+D2T", "_sip._tcp.pbx.example.org"),
                naptr(100, "SIP+D2U", "_sip._udp.pbx.example.org"),
            ],
            Source::Static,
        );
        a.additional.push(Rec::new(
            n("_sip._udp.pbx.example.org"),
            30,
            RecordData::Srv {
                priority: 0,
                weight: 1,
                port: 5060,
                target: n("server1.pbx.example.org"),
            },
        ));
        a.additional.push(Rec::new(
            n("server1.pbx.example.org"),
            30,
            RecordData::A("192.0.2.10".parse().unwrap()),
        ));
        let (bytes, tc) = response(&q, &a, 1232);
        assert!(!tc);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert_eq!(m.queries[0].name.to_ascii(), "PbX.Example.ORG.");
        assert_eq!(m.answers.len(), 2);
        assert_eq!(m.answers[0].name.to_ascii(), "PbX.Example.ORG.");
        assert_eq!(m.additionals.len(), 2);
        assert_eq!(m.additionals[1].record_type(), RecordType::A);
        assert_eq!(m.edns.as_ref().unwrap().max_payload(), 1232);
        // Smaller than hickory's own encoding of the same records (read back from ours,
        // owners in the lower case they are stored in), whose compression is
        // case-sensitive and so cannot point lower-case names into the client's question.
        let mut h = Message::response(7, hickory_proto::op::OpCode::Query);
        h.add_query(hickory_proto::op::Query::query(
            Name::from_ascii("PbX.Example.ORG.").unwrap(),
            RecordType::NAPTR,
        ));
        let lower = |r: &hickory_proto::rr::Record| {
            let mut r = r.clone();
            r.name = r.name.to_lowercase();
            r
        };
        for r in &m.answers {
            h.add_answer(lower(r));
        }
        for r in &m.additionals {
            h.add_additional(lower(r));
        }
        let hickory = h.to_vec().unwrap();
        assert!(
            bytes.len() < hickory.len(),
            "{} vs hickory {}",
            bytes.len(),
            hickory.len()
        );
    }

    #[test]
    fn every_record_type_round_trips_through_a_decoder() {
        let qn = wire("x.example.org.");
        let q = WireQuestion {
            id: 1,
            qname_wire: &qn,
            qtype: 255,
            rd: false,
            cd: true,
            opt_payload: None,
        };
        let recs = vec![
            Rec::new(
                n("x.example.org"),
                1,
                RecordData::Aaaa("2001:db8::1".parse().unwrap()),
            ),
            Rec::new(n("x.example.org"), 2, RecordData::Cname(n("y.example.org"))),
            Rec::new(
                n("x.example.org"),
                3,
                RecordData::Mx {
                    preference: 5,
                    exchange: n("mx.example.org"),
                },
            ),
            Rec::new(
                n("x.example.org"),
                4,
                RecordData::Txt(vec!["a b".into(), "c".into()]),
            ),
            Rec::new(n("x.example.org"), 5, RecordData::Ns(n("ns.example.org"))),
            Rec::new(
                n("example.org"),
                6,
                RecordData::Soa {
                    mname: n("ns.example.org"),
                    rname: n("hostmaster.example.org"),
                    serial: 1,
                    refresh: 2,
                    retry: 3,
                    expire: 4,
                    minimum: 5,
                },
            ),
            Rec::new(
                n("x.example.org"),
                7,
                RecordData::Opaque {
                    rtype: RType(99),
                    rdata: std::sync::Arc::from(vec![1u8, 2, 3]),
                },
            ),
        ];
        let (bytes, _) = response(&q, &Answer::records(recs.clone(), Source::Static), 65535);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.checking_disabled);
        let back: Vec<Rec> = m
            .answers
            .iter()
            .filter_map(crate::hickory::rec_from_hickory)
            .collect();
        assert_eq!(back, recs);
    }

    #[test]
    fn escaped_labels_are_kept() {
        assert_eq!(labels("a\\.b.c."), vec![b"a.b".to_vec(), b"c".to_vec()]);
        assert_eq!(labels("\\065x.c."), vec![b"Ax".to_vec(), b"c".to_vec()]);
        assert!(labels(".").is_empty());
    }
}
