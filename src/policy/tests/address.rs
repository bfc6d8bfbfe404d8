//! A / AAAA answers: of the SIP domain itself and of SRV target hosts.

use super::*;

#[test]
fn address_table() {
    run_table(&[
        Case {
            name: "domain A (explicit port, Yealink static cache example 1): a_port/a_transport",
            qtype: RType::A,
            answer: &[
                "pbx.example.org. 3600 A 192.0.2.13",
                "pbx.example.org. 3600 A 192.0.2.14",
            ],
            health: &[
                ("192.0.2.13:5070/tcp", "down"),
                // Another port of the same machine does not count.
                ("192.0.2.14:5060/udp", "down"),
            ],
            config: |d| {
                d.a_port = 5070;
                d.a_transport = Transport::Tcp;
            },
            want_answer: &["pbx.example.org. 30 A 192.0.2.14"],
            want_reasons: &[
                (
                    Section::Answer,
                    Action::Withheld,
                    "pbx.example.org. A 192.0.2.13",
                    "target 192.0.2.13:5070/tcp down",
                ),
                (
                    Section::Answer,
                    Action::TtlCapped,
                    "pbx.example.org. A 192.0.2.14",
                    "target 192.0.2.14:5070/tcp not probed yet",
                ),
            ],
            ..BASE
        },
        Case {
            name: "domain A, defaults (5060/udp), primary drained: order of the rest kept",
            qtype: RType::A,
            answer: &[
                "pbx.example.org. 3600 A 192.0.2.13",
                "pbx.example.org. 3600 A 192.0.2.15",
                "pbx.example.org. 3600 A 192.0.2.14",
            ],
            health: &[("192.0.2.13:5060/udp", "drained")],
            want_answer: &[
                "pbx.example.org. 30 A 192.0.2.15",
                "pbx.example.org. 30 A 192.0.2.14",
            ],
            ..BASE
        },
        Case {
            name: "domain AAAA filtered the same way",
            qtype: RType::AAAA,
            answer: &[
                "pbx.example.org. 3600 AAAA 2001:db8::13",
                "pbx.example.org. 3600 AAAA 2001:db8::14",
            ],
            health: &[("[2001:db8::13]:5060/udp", "down")],
            want_answer: &["pbx.example.org. 30 AAAA 2001:db8::14"],
            ..BASE
        },
        Case {
            name: "domain A all down, serve_all",
            qtype: RType::A,
            answer: &["pbx.example.org. 3600 A 192.0.2.13"],
            health: &[("192.0.2.13:5060/udp", "down")],
            want_answer: &["pbx.example.org. 30 A 192.0.2.13"],
            want_all_down: Some(AllDown::ServeAll),
            ..BASE
        },
        Case {
            name: "domain A all down, fallback: the gateway's address",
            qtype: RType::A,
            answer: &[
                "pbx.example.org. 3600 A 192.0.2.13",
                "pbx.example.org. 3600 A 192.0.2.14",
            ],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "down"),
            ],
            config: |d| {
                with_sbc(d);
                d.all_down = AllDown::Fallback;
            },
            want_answer: &["pbx.example.org. 30 A 192.0.2.50"],
            want_all_down: Some(AllDown::Fallback),
            want_reasons: &[(
                Section::Answer,
                Action::Added,
                "pbx.example.org. A 192.0.2.50",
                "fallback target (all down)",
            )],
            ..BASE
        },
        Case {
            name: "domain AAAA all down, fallback has no IPv6 gateway: serve_all",
            qtype: RType::AAAA,
            answer: &["pbx.example.org. 3600 AAAA 2001:db8::13"],
            health: &[("[2001:db8::13]:5060/udp", "down")],
            config: |d| {
                with_sbc(d);
                d.all_down = AllDown::Fallback;
            },
            want_answer: &["pbx.example.org. 30 AAAA 2001:db8::13"],
            want_all_down: Some(AllDown::ServeAll),
            ..BASE
        },
        Case {
            name: "target host A: an address is kept while one of its targets is usable",
            qname: "server1.pbx.example.org.",
            qtype: RType::A,
            answer: &[
                "server1.pbx.example.org. 3600 A 192.0.2.13",
                "server1.pbx.example.org. 3600 A 192.0.2.113",
                "server1.pbx.example.org. 3600 A 192.0.2.213",
            ],
            hosts: &[(
                "server1.pbx.example.org.",
                &[
                    "192.0.2.13:5060/udp",
                    "192.0.2.13:5060/tcp",
                    "192.0.2.113:5060/udp",
                ],
            )],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.113:5060/udp", "down"),
            ],
            want_answer: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server1.pbx.example.org. 30 A 192.0.2.213",
            ],
            want_reasons: &[
                (
                    Section::Answer,
                    Action::TtlCapped,
                    "server1.pbx.example.org. A 192.0.2.13",
                    "target 192.0.2.13:5060/tcp not probed yet",
                ),
                (
                    Section::Answer,
                    Action::Withheld,
                    "server1.pbx.example.org. A 192.0.2.113",
                    "target 192.0.2.113:5060/udp down",
                ),
                (
                    Section::Answer,
                    Action::TtlCapped,
                    "server1.pbx.example.org. A 192.0.2.213",
                    "not a probed address",
                ),
            ],
            ..BASE
        },
        Case {
            name: "target host A all down: served as it is, never another host's address",
            qname: "server1.pbx.example.org.",
            qtype: RType::A,
            answer: &["server1.pbx.example.org. 3600 A 192.0.2.13"],
            hosts: &[("server1.pbx.example.org.", &["192.0.2.13:5060/udp"])],
            health: &[("192.0.2.13:5060/udp", "down")],
            config: |d| {
                with_sbc(d);
                d.all_down = AllDown::Fallback;
            },
            want_answer: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            want_all_down: Some(AllDown::ServeAll),
            ..BASE
        },
        Case {
            name: "a host the prober does not know: unchanged, TTL included",
            qname: "www.pbx.example.org.",
            qtype: RType::A,
            answer: &["www.pbx.example.org. 3600 A 192.0.2.80"],
            health: &[("192.0.2.80:5060/udp", "down")],
            want_answer: &["www.pbx.example.org. 3600 A 192.0.2.80"],
            want_reasons: &[(
                Section::Answer,
                Action::Kept,
                "www.pbx.example.org. A 192.0.2.80",
                "no SIP target known at www.pbx.example.org.: unchanged",
            )],
            ..BASE
        },
    ]);
}
