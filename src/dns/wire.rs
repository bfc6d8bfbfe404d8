//! The DNS wire format at the edge: turning request bytes into a [`Question`] (or an
//! immediate error reply, or nothing), and an [`Answer`] into response bytes that fit the
//! client's transport.
//!
//! Size rules (RFC 1035 §4.2.1, RFC 6891 §6.2.5): over UDP a response fits the client's
//! EDNS payload size, capped at our `max_udp_payload` (1232 by default), or 512 bytes
//! without EDNS. When it does not fit, the ADDITIONAL section goes first, then AUTHORITY
//! for positive answers; TC is set only when the ANSWER section itself does not fit.
//! (hickory 0.26 would set TC as soon as anything overflows; encoding is done by
//! [`super::encode`].)

use hickory_proto::{
    op::{Edns, Message},
    rr::{DNSClass, RecordType},
    serialize::binary::BinEncodable,
};

use super::{
    encode::{Head, Opt, WireQuestion, bare, response},
    fastpath::Quick,
    header,
};
use crate::{
    hickory::name_from_hickory,
    record::{Answer, DomainName, RType, Rcode},
};

/// The largest DNS message over TCP.
pub const TCP_MAX: usize = 65_535;
/// The classic UDP limit without EDNS (RFC 1035 §2.3.4).
pub const UDP_CLASSIC: usize = 512;

/// A parsed, acceptable query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    /// Transaction ID, echoed.
    pub id: u16,
    /// The name as the client wrote it (case preserved, RFC 0x20 draft), in uncompressed
    /// wire form.
    pub qname_wire: Vec<u8>,
    /// The name, lower-cased.
    pub name: DomainName,
    /// The asked type.
    pub qtype: RType,
    /// Recursion desired, echoed.
    pub rd: bool,
    /// Checking disabled, echoed and passed upstream.
    pub cd: bool,
    /// Authentic data requested (RFC 6840 §5.7).
    pub ad: bool,
    /// The client's EDNS UDP payload size, if it sent OPT.
    pub edns_payload: Option<u16>,
    /// The client's DNSSEC OK bit.
    pub dnssec_ok: bool,
}

impl Question {
    /// What every reply to this question echoes, advertising `max_udp_payload` in OPT.
    pub fn head(&self, max_udp_payload: u16) -> Head {
        Head {
            id: self.id,
            opcode: header::OPCODE_QUERY,
            rd: self.rd,
            cd: self.cd,
            ad: self.ad,
            opt: self.edns_payload.map(|_| Opt {
                payload: advertised(max_udp_payload),
                dnssec_ok: self.dnssec_ok,
            }),
        }
    }
}

/// The payload size our OPT records advertise.
fn advertised(max_udp_payload: u16) -> u16 {
    max_udp_payload.max(UDP_CLASSIC as u16)
}

/// What to do with a packet.
#[derive(Debug)]
pub enum Parsed {
    /// A query to answer.
    Query(Question),
    /// Reply at once with these bytes (FORMERR, NOTIMP, BADVERS, REFUSED).
    Reply(Vec<u8>, Rcode),
    /// Say nothing (too short to reply to, or a response).
    Drop(&'static str),
}

/// What can be read of any request, however malformed the rest: enough to build an error
/// reply that echoes the question and answers OPT with OPT.
#[derive(Debug, Default)]
pub struct Skim {
    /// ID, opcode, RD, CD, AD, and the OPT record if one was found.
    pub head: Head,
    /// The only question, uncompressed: (name in wire form, type, class).
    pub question: Option<(Vec<u8>, u16, u16)>,
    /// The EDNS version of the OPT record.
    pub edns_version: u8,
}

/// Skips a (possibly compressed) name starting at `i`: its end, and whether it ended in a
/// compression pointer; `None` if it runs off the end.
fn skip_name(p: &[u8], mut i: usize) -> Option<(usize, bool)> {
    // Every step moves forward by at least one byte, so this ends within `p.len()` steps.
    loop {
        let len = *p.get(i)?;
        if len == 0 {
            return Some((i + 1, false));
        }
        if len & 0xC0 == 0xC0 {
            p.get(i + 1)?;
            return Some((i + 2, true));
        }
        if len > 63 {
            return None;
        }
        i += 1 + usize::from(len);
    }
}

/// Reads the header, the question and the OPT record of a request without a full parse
/// (`p` has at least 12 bytes). Never panics.
pub fn skim(p: &[u8], max_udp_payload: u16) -> Skim {
    let mut s = Skim::default();
    if p.len() < header::LEN {
        return s;
    }
    let flags = header::flags(p);
    s.head.id = u16::from_be_bytes([p[0], p[1]]);
    s.head.opcode = header::opcode(flags);
    s.head.rd = flags & header::RD != 0;
    s.head.cd = flags & header::CD != 0;
    s.head.ad = flags & header::AD != 0;
    let count = |i: usize| usize::from(u16::from_be_bytes([p[i], p[i + 1]]));
    let mut i = header::LEN;
    for k in 0..count(header::QDCOUNT) {
        let Some((end, compressed)) = skip_name(p, i) else {
            return s;
        };
        let Some(tail) = p.get(end..end + 4) else {
            return s;
        };
        if k == 0 && count(header::QDCOUNT) == 1 {
            // Only an uncompressed name of legal length (RFC 1035 §2.3.4) is echoed.
            if !compressed && end - i <= 255 {
                s.question = Some((
                    p[i..end].to_vec(),
                    u16::from_be_bytes([tail[0], tail[1]]),
                    u16::from_be_bytes([tail[2], tail[3]]),
                ));
            }
        }
        i = end + 4;
    }
    let records = count(header::ANCOUNT) + count(header::NSCOUNT);
    for k in 0..records + count(header::ARCOUNT) {
        let Some((end, _)) = skip_name(p, i) else {
            return s;
        };
        let Some(fixed) = p.get(end..end + 10) else {
            return s;
        };
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if k >= records && rtype == RType::OPT.0 && p[i] == 0 && s.head.opt.is_none() {
            s.edns_version = fixed[5];
            s.head.opt = Some(Opt {
                payload: advertised(max_udp_payload),
                dnssec_ok: u16::from_be_bytes([fixed[6], fixed[7]]) & header::EDNS_DO != 0,
            });
        }
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        i = end + 10 + rdlen;
    }
    s
}

impl Skim {
    fn question(&self) -> Option<(&[u8], u16, u16)> {
        self.question
            .as_ref()
            .map(|(n, t, c)| (n.as_slice(), *t, *c))
    }

    /// A reply with no records and this rcode; `flags` adds RA, TC, ...
    pub fn reply(&self, rcode: Rcode, flags: u16) -> Vec<u8> {
        bare(&self.head, self.question(), rcode, flags)
    }
}

/// Reads a request. Never panics on any input. Error replies advertise `max_udp_payload`
/// in their OPT record (present exactly when the request had one).
pub fn parse(bytes: &[u8], max_udp_payload: u16) -> Parsed {
    if bytes.len() < header::LEN {
        return Parsed::Drop("short");
    }
    let flags = header::flags(bytes);
    if flags & header::QR != 0 {
        // QR set: a response. Answering responses invites loops and reflection.
        return Parsed::Drop("response_bit");
    }
    let skim = skim(bytes, max_udp_payload);
    if header::opcode(flags) != header::OPCODE_QUERY {
        // RD copied, RA clear: nothing about this message was understood (unbound does the
        // same; ISC's EDNS compliance tester checks it).
        return Parsed::Reply(skim.reply(Rcode::NotImp, 0), Rcode::NotImp);
    }
    let Ok(msg) = Message::from_vec(bytes) else {
        return Parsed::Reply(skim.reply(Rcode::FormErr, header::RA), Rcode::FormErr);
    };
    let edns = msg.edns.as_ref();
    if let Some(e) = edns
        && e.version() > 0
    {
        // RFC 6891 §6.1.3: BADVERS, with an OPT record of our version.
        return Parsed::Reply(skim.reply(Rcode::BadVers, header::RA), Rcode::BadVers);
    }
    if msg.queries.len() != 1 || !msg.answers.is_empty() || !msg.authorities.is_empty() {
        return Parsed::Reply(skim.reply(Rcode::FormErr, header::RA), Rcode::FormErr);
    }
    let q = &msg.queries[0];
    let qtype = q.query_type;
    if q.query_class != DNSClass::IN
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT)
    {
        return Parsed::Reply(skim.reply(Rcode::Refused, header::RA), Rcode::Refused);
    }
    let Ok(qname_wire) = q.name.to_bytes() else {
        return Parsed::Reply(skim.reply(Rcode::FormErr, header::RA), Rcode::FormErr);
    };
    Parsed::Query(Question {
        id: skim.head.id,
        qname_wire,
        name: name_from_hickory(&q.name),
        qtype: RType(u16::from(qtype)),
        rd: skim.head.rd,
        cd: msg.metadata.checking_disabled,
        ad: msg.metadata.authentic_data,
        edns_payload: edns.map(Edns::max_payload),
        dnssec_ok: edns.is_some_and(|e| e.flags().dnssec_ok),
    })
}

/// The question of a request [`quick`] accepted, read from the bytes it already checked:
/// the common query is parsed once. `None` when a label holds anything but letters,
/// digits, `_`, `-` (not first) and `*` (first only) — such names take [`parse`], whose
/// escaping rules their presentation form must follow — or when the OPT record carries
/// options (whose well-formedness [`parse`] checks).
pub fn from_quick(p: &[u8], q: &Quick) -> Option<Question> {
    if q.edns_options {
        return None;
    }
    let wire = p.get(header::LEN..q.qname_end)?;
    let mut name = String::with_capacity(wire.len());
    let mut i = 0;
    while let Some(&len) = wire.get(i)
        && len != 0
    {
        let label = wire.get(i + 1..i + 1 + usize::from(len))?;
        // The bytes hickory writes unescaped (its `is_safe_ascii`): `-` but not first, `*`
        // only first (found by fuzzing: a label `-bx` read here as `-bx` and by the parser as
        // `\-bx`).
        if !label.iter().enumerate().all(|(k, b)| {
            b.is_ascii_alphanumeric()
                || *b == b'_'
                || (*b == b'-' && k > 0)
                || (*b == b'*' && k == 0)
        }) {
            return None;
        }
        name.extend(label.iter().map(|b| char::from(b.to_ascii_lowercase())));
        name.push('.');
        i += 1 + usize::from(len);
    }
    let flags = header::flags(p);
    Some(Question {
        id: u16::from_be_bytes([p[0], p[1]]),
        qname_wire: wire.to_vec(),
        name: if name.is_empty() {
            DomainName::root()
        } else {
            DomainName::from_presentation(&name)
        },
        qtype: RType(q.qtype),
        rd: flags & header::RD != 0,
        cd: flags & header::CD != 0,
        ad: flags & header::AD != 0,
        edns_payload: q.edns_payload,
        dnssec_ok: q.dnssec_ok,
    })
}

/// REFUSED for a request (clients outside the ACL): the question and OPT echoed.
pub fn refused(bytes: &[u8], max_udp_payload: u16) -> Option<Vec<u8>> {
    if bytes.len() < header::LEN || header::flags(bytes) & header::QR != 0 {
        return None;
    }
    Some(skim(bytes, max_udp_payload).reply(Rcode::Refused, header::RA))
}

/// The size budget of a response to `q` over a transport.
pub fn budget(q: &Question, tcp: bool, max_udp_payload: u16) -> usize {
    budget_for(q.edns_payload, tcp, max_udp_payload)
}

/// The size budget for a client's EDNS payload size (or none) over a transport.
pub fn budget_for(edns_payload: Option<u16>, tcp: bool, max_udp_payload: u16) -> usize {
    if tcp {
        return TCP_MAX;
    }
    match edns_payload {
        Some(p) => {
            usize::from(p.clamp(UDP_CLASSIC as u16, max_udp_payload.max(UDP_CLASSIC as u16)))
        }
        None => UDP_CLASSIC,
    }
}

/// Encodes `answer` for `q` within `limit` bytes ([`super::encode::response`]: full name
/// compression, ADDITIONAL dropped before TC). Returns the bytes and whether TC was set.
pub fn encode(
    q: &Question,
    answer: &Answer,
    limit: usize,
    max_udp_payload: u16,
) -> (Vec<u8>, bool) {
    let wq = WireQuestion {
        head: q.head(max_udp_payload),
        qname_wire: &q.qname_wire,
        qtype: q.qtype.0,
    };
    response(&wq, answer, limit)
}

#[cfg(test)]
mod tests {
    use hickory_proto::{op::Query, rr::Name};

    use super::*;
    use crate::record::{Rec, RecordData, Source};

    fn parse_(bytes: &[u8]) -> Parsed {
        parse(bytes, 1232)
    }

    fn query(name: &str, qtype: RecordType, edns: Option<u16>) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.id = 0x1234;
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        if let Some(p) = edns {
            let mut e = Edns::new();
            e.set_max_payload(p);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    #[test]
    fn parses_a_query_and_keeps_case() {
        let Parsed::Query(q) = parse_(&query("PbX.Example.ORG.", RecordType::NAPTR, Some(4096)))
        else {
            panic!()
        };
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name.as_str(), "pbx.example.org.");
        assert_eq!(q.qname_wire, b"\x03PbX\x07Example\x03ORG\x00".to_vec());
        assert_eq!(q.qtype, RType::NAPTR);
        assert_eq!(budget(&q, false, 1232), 1232);
        assert_eq!(budget(&q, true, 1232), TCP_MAX);
    }

    #[test]
    fn the_quick_reader_and_the_parser_agree() {
        for (name, t, edns) in [
            ("PbX.Example.ORG.", RecordType::NAPTR, Some(4096)),
            ("_sip._udp.example.org.", RecordType::SRV, None),
            ("*.example.org.", RecordType::A, Some(512)),
            (".", RecordType::NS, None),
        ] {
            let bytes = query(name, t, edns);
            let q = crate::dns::fastpath::quick(&bytes).unwrap();
            let Parsed::Query(full) = parse_(&bytes) else {
                panic!("{name}")
            };
            assert_eq!(from_quick(&bytes, &q), Some(full), "{name}");
        }
        // A label with a dot or a space in it: the full parser decides.
        let mut odd = query("a-b.example.org.", RecordType::A, None);
        odd[14] = b' ';
        let q = crate::dns::fastpath::quick(&odd).unwrap();
        assert_eq!(from_quick(&odd, &q), None);
        // A leading `-` or a `*` after the first byte, which hickory's presentation form
        // escapes (regression: fuzz `dns_wire`, a label `-bx`): the full parser decides,
        // and whichever reader answers, the name is the same.
        for (first, second) in [(b'-', b'b'), (b'b', b'*')] {
            let mut odd = query("abx.example.org.", RecordType::A, Some(1232));
            odd[13] = first;
            odd[14] = second;
            let q = crate::dns::fastpath::quick(&odd).unwrap();
            assert_eq!(from_quick(&odd, &q), None);
            let Parsed::Query(full) = parse_(&odd) else {
                panic!()
            };
            assert!(full.name.as_str().contains('\\'), "{}", full.name);
        }
    }

    #[test]
    fn rejects_what_it_must() {
        assert!(matches!(parse_(&[0u8; 5]), Parsed::Drop(_)));
        let mut resp = query("a.example.org.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(matches!(parse_(&resp), Parsed::Drop("response_bit")));
        let mut notify = query("a.example.org.", RecordType::A, None);
        notify[2] |= 4 << 3;
        assert!(matches!(parse_(&notify), Parsed::Reply(_, Rcode::NotImp)));
        let mut garbage = query("a.example.org.", RecordType::A, None);
        garbage.truncate(15);
        assert!(matches!(parse_(&garbage), Parsed::Reply(_, Rcode::FormErr)));
        let axfr = query("example.org.", RecordType::AXFR, None);
        assert!(matches!(parse_(&axfr), Parsed::Reply(_, Rcode::Refused)));
    }

    #[test]
    fn additional_is_dropped_before_tc() {
        let Parsed::Query(q) = parse_(&query("pbx.example.org.", RecordType::A, None)) else {
            panic!()
        };
        let name = DomainName::parse("pbx.example.org").unwrap();
        let rec = |i: u8| {
            Rec::new(
                name.clone(),
                30,
                RecordData::A(std::net::Ipv4Addr::new(192, 0, 2, i)),
            )
        };
        let mut ans = Answer::records((1..=5).map(rec).collect(), Source::Static);
        ans.additional = (1..=60).map(rec).collect();
        let (bytes, tc) = encode(&q, &ans, 512, 1232);
        assert!(!tc);
        assert!(bytes.len() <= 512);
        let m = Message::from_vec(&bytes).unwrap();
        assert_eq!(m.answers.len(), 5);
        assert!(m.additionals.is_empty());

        ans.answers = (1..=60).map(rec).collect();
        let (bytes, tc) = encode(&q, &ans, 512, 1232);
        assert!(tc);
        let m = Message::from_vec(&bytes).unwrap();
        assert!(m.metadata.truncation);
        assert!(m.answers.is_empty());
    }
}
