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
    op::{Edns, Message, MessageType, OpCode, ResponseCode},
    rr::{DNSClass, Name, RecordType},
    serialize::binary::BinEncodable,
};

use super::encode::{WireQuestion, response};
use crate::{
    hickory::name_from_hickory,
    record::{Answer, DomainName, RType, Rcode},
};

/// The largest DNS message over TCP.
pub const TCP_MAX: usize = 65_535;
/// The classic UDP limit without EDNS (RFC 1035 §2.3.4).
pub const UDP_CLASSIC: usize = 512;

/// A parsed, acceptable query.
#[derive(Debug, Clone)]
pub struct Question {
    /// Transaction ID, echoed.
    pub id: u16,
    /// The name as the client wrote it (case preserved, RFC 0x20 draft).
    pub wire_name: Name,
    /// The same name in uncompressed wire form.
    pub qname_wire: Vec<u8>,
    /// The name, lower-cased.
    pub name: DomainName,
    /// The asked type.
    pub qtype: RType,
    /// Recursion desired, echoed.
    pub rd: bool,
    /// Checking disabled, echoed.
    pub cd: bool,
    /// The client's EDNS UDP payload size, if it sent OPT.
    pub edns_payload: Option<u16>,
    /// The client's DNSSEC OK bit.
    pub dnssec_ok: bool,
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

/// Reads a request. Never panics on any input.
pub fn parse(bytes: &[u8]) -> Parsed {
    if bytes.len() < 12 {
        return Parsed::Drop("short");
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    let flags = bytes[2];
    if flags & 0x80 != 0 {
        // QR set: a response. Answering responses invites loops and reflection.
        return Parsed::Drop("response_bit");
    }
    let opcode = (flags >> 3) & 0x0f;
    if opcode != 0 {
        return Parsed::Reply(
            header_only(
                id,
                OpCode::from_u8(opcode),
                ResponseCode::NotImp,
                flags & 0x01 != 0,
            ),
            Rcode::NotImp,
        );
    }
    let rd = flags & 0x01 != 0;
    let Ok(msg) = Message::from_vec(bytes) else {
        return Parsed::Reply(
            header_only(id, OpCode::Query, ResponseCode::FormErr, rd),
            Rcode::FormErr,
        );
    };
    let edns = msg.edns.as_ref();
    if let Some(e) = edns
        && e.version() > 0
    {
        // RFC 6891 §6.1.3: BADVERS, with an OPT record of our version.
        let mut resp = Message::new(id, MessageType::Response, OpCode::Query);
        resp.metadata.response_code = ResponseCode::BADVERS;
        resp.metadata.recursion_desired = rd;
        resp.metadata.recursion_available = true;
        if let Some(q) = msg.queries.first() {
            resp.add_query(q.clone());
        }
        let mut opt = Edns::new();
        opt.set_max_payload(UDP_CLASSIC as u16);
        resp.set_edns(opt);
        return Parsed::Reply(resp.to_vec().unwrap_or_default(), Rcode::BadVers);
    }
    if msg.queries.len() != 1 || !msg.answers.is_empty() || !msg.authorities.is_empty() {
        return Parsed::Reply(
            header_only(id, OpCode::Query, ResponseCode::FormErr, rd),
            Rcode::FormErr,
        );
    }
    let q = &msg.queries[0];
    let qtype = q.query_type;
    if q.query_class != DNSClass::IN
        || matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT)
    {
        let mut resp = Message::new(id, MessageType::Response, OpCode::Query);
        resp.metadata.response_code = ResponseCode::Refused;
        resp.metadata.recursion_desired = rd;
        resp.add_query(q.clone());
        return Parsed::Reply(resp.to_vec().unwrap_or_default(), Rcode::Refused);
    }
    let Ok(qname_wire) = q.name.to_bytes() else {
        return Parsed::Reply(
            header_only(id, OpCode::Query, ResponseCode::FormErr, rd),
            Rcode::FormErr,
        );
    };
    Parsed::Query(Question {
        id,
        wire_name: q.name.clone(),
        qname_wire,
        name: name_from_hickory(&q.name),
        qtype: RType(u16::from(qtype)),
        rd,
        cd: msg.metadata.checking_disabled,
        edns_payload: edns.map(Edns::max_payload),
        dnssec_ok: edns.is_some_and(|e| e.flags().dnssec_ok),
    })
}

fn header_only(id: u16, op: OpCode, rcode: ResponseCode, rd: bool) -> Vec<u8> {
    let mut msg = Message::response(id, op);
    msg.metadata.response_code = rcode;
    msg.metadata.recursion_desired = rd;
    msg.metadata.recursion_available = true;
    msg.to_vec().unwrap_or_default()
}

/// REFUSED for a question (clients outside the ACL).
pub fn refused(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        return None;
    }
    let id = u16::from_be_bytes([bytes[0], bytes[1]]);
    Some(header_only(
        id,
        OpCode::Query,
        ResponseCode::Refused,
        bytes[2] & 0x01 != 0,
    ))
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
        id: q.id,
        qname_wire: &q.qname_wire,
        qtype: q.qtype.0,
        rd: q.rd,
        cd: q.cd,
        opt_payload: q
            .edns_payload
            .map(|_| max_udp_payload.max(UDP_CLASSIC as u16)),
    };
    response(&wq, answer, limit)
}

#[cfg(test)]
mod tests {
    use hickory_proto::op::Query;

    use super::*;
    use crate::record::{Rec, RecordData, Source};

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
        let Parsed::Query(q) = parse(&query("PbX.Example.ORG.", RecordType::NAPTR, Some(4096)))
        else {
            panic!()
        };
        assert_eq!(q.id, 0x1234);
        assert_eq!(q.name.as_str(), "pbx.example.org.");
        assert_eq!(q.wire_name.to_ascii(), "PbX.Example.ORG.");
        assert_eq!(q.qtype, RType::NAPTR);
        assert_eq!(budget(&q, false, 1232), 1232);
        assert_eq!(budget(&q, true, 1232), TCP_MAX);
    }

    #[test]
    fn rejects_what_it_must() {
        assert!(matches!(parse(&[0u8; 5]), Parsed::Drop(_)));
        let mut resp = query("a.example.org.", RecordType::A, None);
        resp[2] |= 0x80;
        assert!(matches!(parse(&resp), Parsed::Drop("response_bit")));
        let mut notify = query("a.example.org.", RecordType::A, None);
        notify[2] |= 4 << 3;
        assert!(matches!(parse(&notify), Parsed::Reply(_, Rcode::NotImp)));
        let mut garbage = query("a.example.org.", RecordType::A, None);
        garbage.truncate(15);
        assert!(matches!(parse(&garbage), Parsed::Reply(_, Rcode::FormErr)));
        let axfr = query("example.org.", RecordType::AXFR, None);
        assert!(matches!(parse(&axfr), Parsed::Reply(_, Rcode::Refused)));
    }

    #[test]
    fn additional_is_dropped_before_tc() {
        let Parsed::Query(q) = parse(&query("pbx.example.org.", RecordType::A, None)) else {
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
