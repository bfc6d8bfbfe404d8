//! Conversions between hickory's record types and sipdns' plain [`Rec`]s. The one place
//! that knows both; `zones` and `upstream` call it on the way in, the encoder on the way out.

use std::sync::Arc;

use hickory_proto::{
    rr::{
        DNSClass, Name, RData, Record, RecordType,
        rdata::{A, AAAA, CNAME, MX, NAPTR, NS, NULL, PTR, SOA, SRV, TXT},
    },
    serialize::binary::{BinEncodable, BinEncoder},
};

use crate::record::{DomainName, RType, Rec, RecordData};

/// Why a plain record could not be turned into a wire record.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A name hickory does not accept.
    #[error("invalid name {0:?}: {1}")]
    Name(String, String),
    /// A TXT string longer than 255 bytes, or similar.
    #[error("invalid {rtype} data: {reason}")]
    Data {
        /// The record type.
        rtype: RType,
        /// What is wrong.
        reason: String,
    },
}

/// A plain name from a hickory name (lower-cased, fully qualified).
pub fn name_from_hickory(n: &Name) -> DomainName {
    if n.is_root() {
        return DomainName::root();
    }
    DomainName::from_presentation(&n.to_ascii())
}

/// A hickory name from a plain one.
pub fn name_to_hickory(n: &DomainName) -> Result<Name, ConvertError> {
    Name::from_ascii(n.as_str()).map_err(|e| ConvertError::Name(n.to_string(), e.to_string()))
}

/// A plain record from a hickory record; `None` for records sipdns never relays (non-IN
/// class, OPT, TSIG/SIG pseudo-records).
pub fn rec_from_hickory(r: &Record) -> Option<Rec> {
    if r.dns_class != DNSClass::IN {
        return None;
    }
    let data = match &r.data {
        RData::A(a) => RecordData::A(a.0),
        RData::AAAA(a) => RecordData::Aaaa(a.0),
        RData::CNAME(c) => RecordData::Cname(name_from_hickory(&c.0)),
        RData::NS(n) => RecordData::Ns(name_from_hickory(&n.0)),
        RData::PTR(p) => RecordData::Ptr(name_from_hickory(&p.0)),
        RData::MX(mx) => RecordData::Mx {
            preference: mx.preference,
            exchange: name_from_hickory(&mx.exchange),
        },
        RData::SRV(s) => RecordData::Srv {
            priority: s.priority,
            weight: s.weight,
            port: s.port,
            target: name_from_hickory(&s.target),
        },
        RData::NAPTR(n) => RecordData::Naptr {
            order: n.order,
            preference: n.preference,
            flags: String::from_utf8_lossy(&n.flags).into_owned(),
            services: String::from_utf8_lossy(&n.services).into_owned(),
            regexp: String::from_utf8_lossy(&n.regexp).into_owned(),
            replacement: name_from_hickory(&n.replacement),
        },
        RData::SOA(s) => RecordData::Soa {
            mname: name_from_hickory(&s.mname),
            rname: name_from_hickory(&s.rname),
            serial: s.serial,
            refresh: s.refresh as u32,
            retry: s.retry as u32,
            expire: s.expire as u32,
            minimum: s.minimum,
        },
        RData::TXT(t) => {
            let parts: Result<Vec<String>, _> = t
                .txt_data
                .iter()
                .map(|p| String::from_utf8(p.to_vec()))
                .collect();
            match parts {
                Ok(parts) => RecordData::Txt(parts),
                Err(_) => opaque(r)?,
            }
        }
        RData::OPT(_) | RData::TSIG(_) | RData::Update0(_) => return None,
        _ => opaque(r)?,
    };
    Some(Rec {
        name: name_from_hickory(&r.name),
        ttl: r.ttl,
        data,
    })
}

fn opaque(r: &Record) -> Option<RecordData> {
    let mut buf = Vec::with_capacity(64);
    let mut enc = BinEncoder::new(&mut buf);
    // RFC 3597: unknown types are relayed as uncompressed RDATA.
    enc.set_canonical_form(true);
    r.data.emit(&mut enc).ok()?;
    Some(RecordData::Opaque {
        rtype: RType(u16::from(r.record_type())),
        rdata: Arc::from(buf),
    })
}

/// A hickory record from a plain one. `owner` overrides the owner name (used to echo the
/// case of the phone's question).
pub fn rec_to_hickory(r: &Rec, owner: Option<&Name>) -> Result<Record, ConvertError> {
    let data = match &r.data {
        RecordData::A(a) => RData::A(A(*a)),
        RecordData::Aaaa(a) => RData::AAAA(AAAA(*a)),
        RecordData::Cname(n) => RData::CNAME(CNAME(name_to_hickory(n)?)),
        RecordData::Ns(n) => RData::NS(NS(name_to_hickory(n)?)),
        RecordData::Ptr(n) => RData::PTR(PTR(name_to_hickory(n)?)),
        RecordData::Mx {
            preference,
            exchange,
        } => RData::MX(MX::new(*preference, name_to_hickory(exchange)?)),
        RecordData::Txt(parts) => {
            if let Some(p) = parts.iter().find(|p| p.len() > 255) {
                return Err(ConvertError::Data {
                    rtype: RType::TXT,
                    reason: format!("string of {} bytes (max 255)", p.len()),
                });
            }
            RData::TXT(TXT::new(parts.clone()))
        }
        RecordData::Srv {
            priority,
            weight,
            port,
            target,
        } => RData::SRV(SRV::new(
            *priority,
            *weight,
            *port,
            name_to_hickory(target)?,
        )),
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
                    return Err(ConvertError::Data {
                        rtype: RType::NAPTR,
                        reason: format!("{field} longer than 255 bytes"),
                    });
                }
            }
            RData::NAPTR(NAPTR::new(
                *order,
                *preference,
                flags.as_bytes().into(),
                services.as_bytes().into(),
                regexp.as_bytes().into(),
                name_to_hickory(replacement)?,
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
            name_to_hickory(mname)?,
            name_to_hickory(rname)?,
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
        None => name_to_hickory(&r.name)?,
    };
    Ok(Record::from_rdata(name, r.ttl, data))
}

#[cfg(test)]
mod tests {
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
