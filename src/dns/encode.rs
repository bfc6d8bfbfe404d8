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

use super::header;
use crate::record::{Answer, RType, Rcode, Rec, RecordData};

/// The client's OPT record, as the reply answers it (RFC 6891 §6.1.1, RFC 3225 §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Opt {
    /// The UDP payload size the reply advertises (ours, not the client's).
    pub payload: u16,
    /// The client's DO bit, echoed.
    pub dnssec_ok: bool,
}

/// What a reply echoes from the query's header, whatever the reply is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Head {
    /// ID to echo.
    pub id: u16,
    /// Opcode to echo.
    pub opcode: u8,
    /// Recursion desired, echoed.
    pub rd: bool,
    /// Checking disabled, echoed (RFC 4035 §3.2.2).
    pub cd: bool,
    /// The client's AD bit (RFC 6840 §5.7: it asks for AD in the reply).
    pub ad: bool,
    /// Present when the query carried OPT: then, and only then, the reply carries one.
    pub opt: Option<Opt>,
}

impl Head {
    /// True when the client set DO.
    pub fn dnssec_ok(&self) -> bool {
        self.opt.is_some_and(|o| o.dnssec_ok)
    }
}

/// The question as the client wrote it.
#[derive(Debug, Clone)]
pub struct WireQuestion<'a> {
    /// What the reply echoes from the header.
    pub head: Head,
    /// The question name in wire form (labels with the client's case), root included.
    pub qname_wire: &'a [u8],
    /// Query type.
    pub qtype: u16,
}

/// Length of our OPT record (no options).
const OPT_LEN: usize = 11;

struct Writer {
    buf: Vec<u8>,
    /// Lower-cased presentation suffix -> offset of its first label.
    names: HashMap<Vec<u8>, u16>,
    /// Keys added to `names`, in order, so an RRset that does not fit can be taken back.
    added: Vec<Vec<u8>>,
}

/// A point a [`Writer`] can return to.
#[derive(Clone, Copy)]
struct Mark {
    len: usize,
    added: usize,
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
            added: Vec::new(),
        }
    }

    fn mark(&self) -> Mark {
        Mark {
            len: self.buf.len(),
            added: self.added.len(),
        }
    }

    /// Takes back everything written since `m`, compression targets included.
    fn rollback(&mut self, m: Mark) {
        for k in self.added.drain(m.added..) {
            self.names.remove(&k);
        }
        self.buf.truncate(m.len);
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
            if here < 0x3FFF && !self.names.contains_key(&k) {
                self.names.insert(k.clone(), here as u16);
                self.added.push(k);
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

    fn opt(&mut self, opt: Opt, rcode: Rcode) {
        self.buf.push(0);
        self.u16(RType::OPT.0);
        self.u16(opt.payload);
        // Extended rcode (high 8 bits), version 0, DO echoed (RFC 3225 §3), no options.
        let high = (rcode_value(rcode) >> 4) as u8;
        self.buf.push(high);
        self.buf.push(0);
        self.u16(if opt.dnssec_ok { header::EDNS_DO } else { 0 });
        self.u16(0);
    }

    fn set_count(&mut self, at: usize, n: usize) {
        let n = u16::try_from(n).unwrap_or(u16::MAX);
        self.buf[at..at + 2].copy_from_slice(&n.to_be_bytes());
    }

    /// Header (counts zero, filled later) and the question, if any.
    fn start(
        &mut self,
        head: &Head,
        flags: u16,
        rcode: Rcode,
        question: Option<(&[u8], u16, u16)>,
    ) {
        self.u16(head.id);
        let mut f = flags | header::QR | (u16::from(head.opcode & 0x0F) << header::OPCODE_SHIFT);
        if head.rd {
            f |= header::RD;
        }
        if head.cd {
            f |= header::CD;
        }
        f |= rcode_value(rcode) & header::RCODE_MASK;
        self.u16(f);
        self.u16(u16::from(question.is_some()));
        self.u16(0);
        self.u16(0);
        self.u16(0);
        if let Some((qname, qtype, qclass)) = question {
            self.wire_name(qname);
            self.u16(qtype);
            self.u16(qclass);
        }
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

/// A reply with no records: the header, the question when there is one, and an OPT record
/// exactly when the query had one (RFC 6891 §7). Used for FORMERR, REFUSED, NOTIMP, BADVERS
/// and the rate limiter's TC slips. `flags` adds bits such as RA or TC.
pub fn bare(head: &Head, question: Option<(&[u8], u16, u16)>, rcode: Rcode, flags: u16) -> Vec<u8> {
    let mut w = Writer::new();
    w.start(head, flags, rcode, question);
    if let Some(opt) = head.opt {
        w.opt(opt, rcode);
        w.set_count(header::ARCOUNT, 1);
    }
    w.buf
}

/// Groups records into RRsets (same owner and type), in order of first appearance.
fn rrsets(recs: &[&Rec]) -> Vec<Vec<usize>> {
    let mut sets: Vec<Vec<usize>> = Vec::new();
    let mut index: HashMap<(&str, RType), usize> = HashMap::new();
    for (i, r) in recs.iter().enumerate() {
        let k = (r.name.as_str(), r.rtype());
        match index.get(&k) {
            Some(&s) => sets[s].push(i),
            None => {
                index.insert(k, sets.len());
                sets.push(vec![i]);
            }
        }
    }
    sets
}

/// Encodes a response within `limit` bytes:
///
/// - ANSWER whole, or nothing and TC (RFC 2181 §9: TC only when the answer itself does not
///   fit);
/// - AUTHORITY whole if it fits; a negative answer without its SOA is TC too;
/// - ADDITIONAL RRset by RRset in the order the resolver put them (RFC 3263 order), every
///   whole RRset that still fits, the others left out;
/// - OPT when, and only when, the query had one, with DO echoed; RRSIG, NSEC and NSEC3
///   records only for a client that set DO (or asked for that type), AD only on an answer
///   marked authentic for a client that set DO or AD (RFC 4035 §3.2, RFC 6840 §5.8).
///
/// Returns the bytes and whether TC was set.
pub fn response(q: &WireQuestion<'_>, answer: &Answer, limit: usize) -> (Vec<u8>, bool) {
    let head = &q.head;
    let dnssec_ok = head.dnssec_ok();
    let keep = |r: &&Rec| dnssec_ok || !r.rtype().is_dnssec() || r.rtype().0 == q.qtype;
    let answers: Vec<&Rec> = answer.answers.iter().filter(keep).collect();
    let authority: Vec<&Rec> = answer.authority.iter().filter(keep).collect();
    let additional: Vec<&Rec> = answer.additional.iter().filter(keep).collect();
    let room = limit.saturating_sub(if head.opt.is_some() { OPT_LEN } else { 0 });

    let mut flags = header::RA;
    if answer.authoritative {
        flags |= header::AA;
    }
    if answer.authentic_data && (dnssec_ok || head.ad) {
        flags |= header::AD;
    }
    let question = Some((q.qname_wire, q.qtype, 1));
    let mut w = Writer::new();
    w.start(head, flags, answer.rcode, question);
    for r in &answers {
        w.record(r);
    }
    let truncated = |w: Writer| -> (Vec<u8>, bool) {
        drop(w);
        (bare(head, question, answer.rcode, flags | header::TC), true)
    };
    if w.buf.len() > room {
        return truncated(w);
    }
    let m = w.mark();
    for r in &authority {
        w.record(r);
    }
    let mut nauth = authority.len();
    if w.buf.len() > room {
        if answers.is_empty() {
            return truncated(w);
        }
        w.rollback(m);
        nauth = 0;
    }
    let mut nadd = 0;
    for set in rrsets(&additional) {
        let m = w.mark();
        for &i in &set {
            w.record(additional[i]);
        }
        if w.buf.len() > room {
            w.rollback(m);
        } else {
            nadd += set.len();
        }
    }
    if let Some(opt) = head.opt {
        w.opt(opt, answer.rcode);
    }
    w.set_count(header::ANCOUNT, answers.len());
    w.set_count(header::NSCOUNT, nauth);
    w.set_count(header::ARCOUNT, nadd + usize::from(head.opt.is_some()));
    (w.buf, false)
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
            head: Head {
                id: 7,
                opcode: 0,
                rd: true,
                cd: false,
                ad: false,
                opt: Some(Opt {
                    payload: 1232,
                    dnssec_ok: false,
                }),
            },
            qname_wire: &qn,
            qtype: 35,
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
            head: Head {
                id: 1,
                opcode: 0,
                rd: false,
                cd: true,
                ad: false,
                opt: None,
            },
            qname_wire: &qn,
            qtype: 255,
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
