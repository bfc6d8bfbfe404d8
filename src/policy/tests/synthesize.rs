//! `synthesize_naptr`: NAPTR records made from the SRV sets that exist.

use super::*;

#[test]
fn synthesize_naptr_table() {
    /// (what, naptr_order if not the default, SRV sets present, expected records)
    type SynthCase<'a> = (
        &'a str,
        Option<&'a [Transport]>,
        &'a [Transport],
        &'a [&'a str],
    );
    let cases: &[SynthCase<'_>] = &[
        (
            "every set, default order TLS, TCP, UDP",
            None,
            &[Transport::Udp, Transport::Tcp, Transport::Tls],
            &[
                r#"pbx.example.org. 30 NAPTR 10 10 "s" "SIPS+D2T" "" _sips._tcp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 20 10 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 30 10 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
        ),
        (
            "Yealink naptr_build: UDP and TCP sets only",
            None,
            &[Transport::Udp, Transport::Tcp],
            &[
                r#"pbx.example.org. 30 NAPTR 10 10 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 20 10 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
        ),
        (
            "naptr_order udp, tcp",
            Some(&[Transport::Udp, Transport::Tcp]),
            &[Transport::Tcp, Transport::Udp, Transport::Tls],
            &[
                r#"pbx.example.org. 30 NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 20 10 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
            ],
        ),
        ("no SRV set, no NAPTR", None, &[], &[]),
    ];
    for (what, order, present, want) in cases {
        let mut domain = SipDomainConfig {
            ttl: 30,
            ..SipDomainConfig::new(name(DOMAIN))
        };
        if let Some(order) = order {
            domain.naptr_order = order.to_vec();
        }
        assert_eq!(
            synthesize_naptr(&domain, present, 30),
            rrs(want),
            "case {what:?}"
        );
    }
}
