//! NAPTR answers: a transport whose SRV set has no usable target is withheld.

use super::*;

#[test]
fn naptr_table() {
    run_table(&[
        Case {
            name: "yealink NAPTR 90/100, all up: both, with their SRV sets and glue",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP, NAPTR_UDP],
            additional: &[SRV_TCP_1, SRV_TCP_2, SRV_UDP_1, SRV_UDP_2, A_1, A_2],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._tcp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._tcp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                r#"pbx.example.org. NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                "2 of 2 targets usable in _sip._tcp.pbx.example.org.",
            )],
            ..BASE
        },
        Case {
            name: "TCP servers down, UDP up: only SIP+D2U handed out",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP, NAPTR_UDP],
            additional: &[SRV_TCP_1, SRV_TCP_2, SRV_UDP_1, SRV_UDP_2, A_1, A_2],
            health: &[
                ("192.0.2.13:5060/tcp", "down"),
                ("192.0.2.14:5060/tcp", "down"),
            ],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_reasons: &[
                (
                    Section::Answer,
                    Action::Withheld,
                    r#"pbx.example.org. NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                    "no usable target in _sip._tcp.pbx.example.org.",
                ),
                (
                    Section::Additional,
                    Action::Withheld,
                    "_sip._tcp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                    "SRV set _sip._tcp.pbx.example.org. of a withheld NAPTR \
                     (target 192.0.2.13:5060/tcp down)",
                ),
            ],
            ..BASE
        },
        Case {
            name: "TCP servers on their own hosts down: their glue goes too",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP, NAPTR_UDP],
            additional: &[
                "_sip._tcp.pbx.example.org. 3600 SRV 0 0 5060 tcp1.pbx.example.org.",
                SRV_UDP_1,
                "tcp1.pbx.example.org. 3600 A 192.0.2.31",
                A_1,
            ],
            health: &[("192.0.2.31:5060/tcp", "down")],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "server1.pbx.example.org. 30 A 192.0.2.13",
            ],
            want_reasons: &[(
                Section::Additional,
                Action::Withheld,
                "tcp1.pbx.example.org. A 192.0.2.31",
                "address of withheld target tcp1.pbx.example.org.",
            )],
            ..BASE
        },
        Case {
            name: "primary down on UDP: NAPTR kept, the SRV set in additional filtered",
            qtype: RType::NAPTR,
            answer: &[NAPTR_UDP],
            additional: &[SRV_UDP_1, SRV_UDP_2, A_1, A_2],
            health: &[("192.0.2.13:5060/udp", "down")],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                r#"pbx.example.org. NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
                "1 of 2 targets usable in _sip._udp.pbx.example.org.",
            )],
            ..BASE
        },
        Case {
            name: "airties NAPTR 2/2, uc2 drained: both NAPTRs, uc2 out of both sets",
            qname: "voice.example.org.",
            qtype: RType::NAPTR,
            answer: &[
                r#"voice.example.org. 3600 NAPTR 2 0 "s" "SIP+D2T" "" _sip._tcp.voice.example.org."#,
                r#"voice.example.org. 3600 NAPTR 2 0 "s" "SIP+D2U" "" _sip._udp.voice.example.org."#,
            ],
            additional: &[
                "_sip._tcp.voice.example.org. 3600 SRV 1 0 5060 uc2.voice.example.org.",
                "_sip._tcp.voice.example.org. 3600 SRV 2 0 5060 uc1.voice.example.org.",
                "_sip._udp.voice.example.org. 3600 SRV 2 0 5060 uc1.voice.example.org.",
                "_sip._udp.voice.example.org. 3600 SRV 1 0 5060 uc2.voice.example.org.",
                "uc2.voice.example.org. 3600 A 192.0.2.27",
                "uc1.voice.example.org. 3600 A 192.0.2.26",
            ],
            health: &[
                ("192.0.2.27:5060/tcp", "drained"),
                ("192.0.2.27:5060/udp", "drained"),
            ],
            config: |d| d.name = name("voice.example.org"),
            want_answer: &[
                r#"voice.example.org. 30 NAPTR 2 0 "s" "SIP+D2T" "" _sip._tcp.voice.example.org."#,
                r#"voice.example.org. 30 NAPTR 2 0 "s" "SIP+D2U" "" _sip._udp.voice.example.org."#,
            ],
            want_additional: &[
                "_sip._tcp.voice.example.org. 30 SRV 2 0 5060 uc1.voice.example.org.",
                "_sip._udp.voice.example.org. 30 SRV 2 0 5060 uc1.voice.example.org.",
                "uc1.voice.example.org. 30 A 192.0.2.26",
            ],
            ..BASE
        },
        Case {
            name: "a NAPTR whose SRV set is not in additional: unknown, kept",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP, NAPTR_UDP],
            additional: &[SRV_UDP_1, A_1],
            health: &[("192.0.2.13:5060/udp", "down")],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
            ],
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                r#"pbx.example.org. NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                "SRV set _sip._tcp.pbx.example.org. not in additional: health unknown",
            )],
            ..BASE
        },
        Case {
            name: "non-SIP NAPTR passed through (capped); SIP ones judged",
            qtype: RType::NAPTR,
            answer: &[
                r#"pbx.example.org. 3600 NAPTR 10 10 "u" "E2U+sip" "!^.*$!sip:info@example.org!" ."#,
                NAPTR_UDP,
            ],
            additional: &[SRV_UDP_1, A_1],
            health: &[("192.0.2.13:5060/udp", "down")],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 10 10 "u" "E2U+sip" "!^.*$!sip:info@example.org!" ."#,
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "server1.pbx.example.org. 30 A 192.0.2.13",
            ],
            want_all_down: Some(AllDown::ServeAll),
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                r#"pbx.example.org. NAPTR 10 10 "u" "E2U+sip" "!^.*$!sip:info@example.org!" ."#,
                "not a SIP service",
            )],
            ..BASE
        },
    ]);
}
