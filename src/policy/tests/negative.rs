//! Negative answers, other rcodes and other types.

use super::*;

#[test]
fn negative_and_other_table() {
    run_table(&[
        Case {
            name: "NXDOMAIN: SOA ttl and negative ttl capped",
            qname: "_sips._tcp.pbx.example.org.",
            rcode: Rcode::NxDomain,
            authority: &[
                "pbx.example.org. 3600 SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 3600",
            ],
            want_rcode: Rcode::NxDomain,
            want_authority: &[
                "pbx.example.org. 30 SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 30",
            ],
            want_reasons: &[(
                Section::Authority,
                Action::TtlCapped,
                "pbx.example.org. SOA ns1.example.org. hostmaster.example.org. 2024010101 7200 3600 1209600 30",
                "negative answer: soa ttl 3600 -> 30, negative ttl (minimum) 3600 -> 30",
            )],
            ..BASE
        },
        Case {
            name: "NODATA: a minimum already below the cap stays",
            qtype: RType::NAPTR,
            authority: &[
                "pbx.example.org. 3600 SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 10",
            ],
            want_authority: &[
                "pbx.example.org. 30 SOA ns1.example.org. hostmaster.example.org. 1 7200 3600 1209600 10",
            ],
            ..BASE
        },
        Case {
            name: "NODATA behind a CNAME: the alias is capped too",
            qname: UDP_QNAME,
            answer: &["_sip._udp.pbx.example.org. 3600 CNAME _sip._udp.hosted.example.net."],
            authority: &[
                "example.net. 900 SOA ns1.example.net. hostmaster.example.net. 1 7200 3600 1209600 900",
            ],
            want_answer: &["_sip._udp.pbx.example.org. 30 CNAME _sip._udp.hosted.example.net."],
            want_authority: &[
                "example.net. 30 SOA ns1.example.net. hostmaster.example.net. 1 7200 3600 1209600 30",
            ],
            ..BASE
        },
        Case {
            name: "SERVFAIL is not touched",
            qname: UDP_QNAME,
            rcode: Rcode::ServFail,
            want_rcode: Rcode::ServFail,
            ..BASE
        },
        Case {
            name: "other types are not touched",
            qtype: RType::TXT,
            answer: &["pbx.example.org. 3600 TXT hello"],
            want_answer: &["pbx.example.org. 3600 TXT hello"],
            ..BASE
        },
    ]);
}
