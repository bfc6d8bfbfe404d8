//! Plain records as hickory records, for the fake upstream and for queries that carry
//! records: test code only. The server never builds hickory records (its encoder writes the
//! wire itself), so this direction lives here, beside the tests that need it.

use hickory_proto::rr::{
    Name, RData, Record, RecordType,
    rdata::{A, AAAA, CNAME, MX, NAPTR, NS, NULL, PTR, SOA, SRV, TXT},
};
use sipdns::record::{Rec, RecordData};

fn name(n: &sipdns::record::DomainName) -> Result<Name, String> {
    sipdns::hickory::name_to_hickory(n).map_err(|e| e.to_string())
}

/// A hickory record from a plain one. `owner` overrides the owner name (used to echo the
/// case of the phone's question).
pub fn rec_to_hickory(r: &Rec, owner: Option<&Name>) -> Result<Record, String> {
    let data = match &r.data {
        RecordData::A(a) => RData::A(A(*a)),
        RecordData::Aaaa(a) => RData::AAAA(AAAA(*a)),
        RecordData::Cname(n) => RData::CNAME(CNAME(name(n)?)),
        RecordData::Ns(n) => RData::NS(NS(name(n)?)),
        RecordData::Ptr(n) => RData::PTR(PTR(name(n)?)),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, name(exchange)?)),
        RecordData::Txt(parts) => {
            if let Some(p) = parts.iter().find(|p| p.len() > 255) {
                return Err(format!(
                    "invalid TXT data: string of {} bytes (max 255)",
                    p.len()
                ));
            }
            RData::TXT(TXT::new(parts.clone()))
        }
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(*priority, *weight, *port, name(target)?)),
        RecordData::Naptr {
            order,
            preference,
            flags,
            services,
            regexp,
            replacement,
        } => {
            for (field, v) in [("flags", flags), ("services", services), ("regexp", regexp)] {
                if v.len() > 255 {
                    return Err(format!("invalid NAPTR data: {field} longer than 255 bytes"));
                }
            }
            RData::NAPTR(NAPTR::new(
                *order,
                *preference,
                flags.as_bytes().into(),
                services.as_bytes().into(),
                regexp.as_bytes().into(),
                name(replacement)?,
            ))
        }
        RecordData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => RData::SOA(SOA::new(
            name(mname)?,
            name(rname)?,
            *serial,
            *refresh as i32,
            *retry as i32,
            *expire as i32,
            *minimum,
        )),
        RecordData::Opaque { rtype, rdata } => RData::Unknown {
            code: RecordType::from(rtype.0),
            rdata: NULL::with(rdata.to_vec()),
        },
    };
    let name = match owner {
        Some(n) => n.clone(),
        None => name(&r.name)?,
    };
    Ok(Record::from_rdata(name, r.ttl, data))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sipdns::{
        hickory::rec_from_hickory,
        record::{DomainName, RType, Rec, RecordData},
    };

    use super::*;

    fn round_trip(r: Rec) {
        let h = rec_to_hickory(&r, None).unwrap();
        let back = rec_from_hickory(&h).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn records_round_trip() {
        let n = DomainName::parse("pbx.example.org").unwrap();
        round_trip(Rec::new(
            n.clone(),
            300,
            RecordData::A("192.0.2.10".parse().unwrap()),
        ));
        round_trip(Rec::new(
            n.clone(),
            300,
            RecordData::Aaaa("2001:db8::10".parse().unwrap()),
        ));
        round_trip(Rec::new(
            n.clone(),
            60,
            RecordData::Naptr {
                order: 90,
                preference: 50,
                flags: "s".into(),
                services: "SIP+D2T".into(),
                regexp: String::new(),
                replacement: DomainName::parse("_sip._tcp.pbx.example.org").unwrap(),
            },
        ));
        round_trip(Rec::new(
            DomainName::parse("_sip._udp.pbx.example.org").unwrap(),
            60,
            RecordData::Srv {
                priority: 0,
                weight: 2,
                port: 5060,
                target: DomainName::parse("server2.pbx.example.org").unwrap(),
            },
        ));
        round_trip(Rec::new(
            n.clone(),
            60,
            RecordData::Txt(vec!["hello".into(), "world".into()]),
        ));
        round_trip(Rec::new(
            n,
            60,
            RecordData::Opaque {
                rtype: RType(99),
                rdata: Arc::from(vec![1u8, 2, 3]),
            },
        ));
    }

    #[test]
    fn oversized_txt_is_an_error() {
        let n = DomainName::parse("pbx.example.org").unwrap();
        let r = Rec::new(n, 60, RecordData::Txt(vec!["x".repeat(300)]));
        assert!(rec_to_hickory(&r, None).is_err());
    }
}
