//! Conversions between hickory's record types and sipdns' plain [`Rec`]s: the one place
//! that knows both. It sits below every module that uses it — `zones` and `upstream` call
//! it on the way in, the listeners (`dns`) to read a question's name — and it is the only
//! module outside `dns`, `zones` and `upstream` allowed to touch hickory types.

use std::sync::Arc;

use hickory_proto::{
    rr::{DNSClass, Name, RData, Record},
    serialize::binary::{BinEncodable, BinEncoder},
};

use crate::record::{DomainName, RType, Rec, RecordData};

/// Why a plain name could not be turned into a hickory name.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    /// A name hickory does not accept.
    #[error("invalid name {0:?}: {1}")]
    Name(String, String),
    /// A record that is not an SOA where one is needed.
    #[error("not an SOA record: {0}")]
    NotSoa(String),
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

/// Our SOA as a hickory record (the authority section of an IXFR request, RFC 1995 §3).
pub fn soa_to_hickory(soa: &Rec) -> Result<Record, ConvertError> {
    let RecordData::Soa {
        mname,
        rname,
        serial,
        refresh,
        retry,
        expire,
        minimum,
    } = &soa.data
    else {
        return Err(ConvertError::NotSoa(soa.to_string()));
    };
    // SOA timers are 32-bit on the wire; hickory holds them as i32.
    let t = |v: u32| v as i32;
    Ok(Record::from_rdata(
        name_to_hickory(&soa.name)?,
        soa.ttl,
        RData::SOA(hickory_proto::rr::rdata::SOA::new(
            name_to_hickory(mname)?,
            name_to_hickory(rname)?,
            *serial,
            t(*refresh),
            t(*retry),
            t(*expire),
            *minimum,
        )),
    ))
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
