//! The scrubber: what an upstream reply may bring into the cache, after unbound's
//! `iterator/iter_scrub.c` (and RFC 2181 §5.4.1's ranking of data). A forwarder that relays
//! whatever an upstream puts in a reply lets any upstream (or anyone who can spoof one)
//! plant records for names it was never asked about.
//!
//! - ANSWER: records owned by the question's name or a name on its CNAME chain, of the
//!   asked type (any type for ANY), CNAMEs, and the RRSIGs over them.
//! - AUTHORITY: SOA and NS records at or above the last name of that chain (the zone the
//!   answer comes from), with the NSEC / NSEC3 / RRSIG records inside that zone (the
//!   DNSSEC proof of a negative answer).
//! - ADDITIONAL: addresses (A, AAAA and their RRSIGs) of names the kept records point to
//!   (NS, MX and SRV targets), and the SRV records a kept NAPTR points to (RFC 3263), with
//!   their targets' addresses.
//!
//! Everything else is dropped and counted per section.

use crate::record::{Answer, DomainName, RType, Rec, RecordData};

/// Records dropped, per section: answer, authority, additional.
pub(crate) type Dropped = [usize; 3];

/// The names on the question's CNAME chain, the question first (bounded).
fn chain(qname: &DomainName, answers: &[Rec]) -> Vec<DomainName> {
    let mut names = vec![qname.clone()];
    // Each round adds at most one link; a loop stops when no new name appears.
    for _ in 0..16 {
        let Some(last) = names.last() else { break };
        let next = answers.iter().find_map(|r| match &r.data {
            RecordData::Cname(t) if &r.name == last => Some(t.clone()),
            _ => None,
        });
        match next {
            Some(t) if !names.contains(&t) => names.push(t),
            _ => break,
        }
    }
    names
}

/// The type an RRSIG covers (the first two bytes of its RDATA, RFC 4034 §3.1).
fn covered(r: &Rec) -> Option<RType> {
    match &r.data {
        RecordData::Opaque { rtype, rdata } if *rtype == RType::RRSIG && rdata.len() >= 2 => {
            Some(RType(u16::from_be_bytes([rdata[0], rdata[1]])))
        }
        _ => None,
    }
}

/// Scrubs `a`, the reply to (qname, qtype), in place; returns what was dropped.
pub(crate) fn scrub(qname: &DomainName, qtype: RType, a: &mut Answer) -> Dropped {
    let names = chain(qname, &a.answers);
    let answer_type_ok = |t: RType| t == qtype || t == RType::CNAME || qtype == RType::ANY;
    let before = [a.answers.len(), a.authority.len(), a.additional.len()];

    a.answers.retain(|r| {
        names.contains(&r.name)
            && (answer_type_ok(r.rtype()) || covered(r).is_some_and(answer_type_ok))
    });

    let last = names.last().unwrap_or(qname);
    let zone_of = |r: &Rec| {
        matches!(r.rtype(), RType::SOA | RType::NS) && (last.is_in(&r.name) || qname.is_in(&r.name))
    };
    let zones: Vec<DomainName> = a
        .authority
        .iter()
        .filter(|r| zone_of(r))
        .map(|r| r.name.clone())
        .collect();
    a.authority.retain(|r| {
        if zone_of(r) {
            return true;
        }
        let in_zone = zones.iter().any(|z| r.name.is_in(z));
        match r.rtype() {
            RType::NSEC | RType::NSEC3 => in_zone,
            RType::RRSIG => {
                in_zone
                    && covered(r).is_some_and(|t| {
                        matches!(t, RType::SOA | RType::NS | RType::NSEC | RType::NSEC3)
                    })
            }
            _ => false,
        }
    });

    // Names the kept records point to; a kept NAPTR's SRV set (when upstream sent it) adds
    // its targets.
    let mut srv_owners: Vec<DomainName> = Vec::new();
    let mut hosts: Vec<DomainName> = Vec::new();
    for r in a.answers.iter().chain(&a.authority) {
        match &r.data {
            RecordData::Naptr { replacement, .. } => srv_owners.push(replacement.clone()),
            RecordData::Ns(n) | RecordData::Mx { exchange: n, .. } => hosts.push(n.clone()),
            RecordData::Srv { target, .. } => hosts.push(target.clone()),
            _ => {}
        }
    }
    for r in &a.additional {
        if let RecordData::Srv { target, .. } = &r.data
            && srv_owners.contains(&r.name)
        {
            hosts.push(target.clone());
        }
    }
    let address = |t: RType| matches!(t, RType::A | RType::AAAA);
    a.additional.retain(|r| match r.rtype() {
        RType::SRV => srv_owners.contains(&r.name),
        t if address(t) => hosts.contains(&r.name),
        RType::RRSIG => match covered(r) {
            Some(RType::SRV) => srv_owners.contains(&r.name),
            Some(t) if address(t) => hosts.contains(&r.name),
            _ => false,
        },
        _ => false,
    });

    [
        before[0] - a.answers.len(),
        before[1] - a.authority.len(),
        before[2] - a.additional.len(),
    ]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::record::{Rcode, Source};

    fn n(s: &str) -> DomainName {
        DomainName::parse(s).unwrap()
    }

    fn a(name: &str, ip: &str) -> Rec {
        Rec::new(n(name), 60, RecordData::A(ip.parse().unwrap()))
    }

    fn soa(zone: &str) -> Rec {
        Rec::new(
            n(zone),
            60,
            RecordData::Soa {
                mname: n("ns.example.net"),
                rname: n("h.example.net"),
                serial: 1,
                refresh: 1,
                retry: 1,
                expire: 1,
                minimum: 60,
            },
        )
    }

    #[test]
    fn off_chain_answers_and_unrelated_glue_are_dropped() {
        let mut ans = Answer::records(
            vec![
                Rec::new(
                    n("www.example.net"),
                    60,
                    RecordData::Cname(n("cdn.example.net")),
                ),
                a("cdn.example.net", "192.0.2.1"),
                a("victim.example.org", "192.0.2.66"),
                Rec::new(n("www.example.net"), 60, RecordData::Txt(vec!["x".into()])),
            ],
            Source::Upstream,
        );
        ans.authority = vec![
            soa("example.net"),
            soa("sub.www.example.net"),
            Rec::new(n("example.org"), 60, RecordData::Ns(n("ns.example.org"))),
        ];
        ans.additional = vec![a("bank.example.org", "192.0.2.67")];
        let dropped = scrub(&n("www.example.net"), RType::A, &mut ans);
        assert_eq!(dropped, [2, 2, 1]);
        assert_eq!(ans.answers.len(), 2);
        assert_eq!(ans.authority, vec![soa("example.net")]);
        assert!(ans.additional.is_empty());
    }

    #[test]
    fn rfc3263_glue_is_kept() {
        let mut ans = Answer::records(
            vec![Rec::new(
                n("example.net"),
                60,
                RecordData::Naptr {
                    order: 10,
                    preference: 10,
                    flags: "s".into(),
                    services: "SIP+D2U".into(),
                    regexp: String::new(),
                    replacement: n("_sip._udp.example.net"),
                },
            )],
            Source::Upstream,
        );
        ans.additional = vec![
            Rec::new(
                n("_sip._udp.example.net"),
                60,
                RecordData::Srv {
                    priority: 1,
                    weight: 1,
                    port: 5060,
                    target: n("sip1.example.net"),
                },
            ),
            a("sip1.example.net", "192.0.2.5"),
            a("sip2.example.net", "192.0.2.6"),
        ];
        let dropped = scrub(&n("example.net"), RType::NAPTR, &mut ans);
        assert_eq!(dropped, [0, 0, 1]);
        assert_eq!(ans.additional.len(), 2);
        assert_eq!(ans.rcode, Rcode::NoError);
    }
}
