//! The all-down rules (`serve_all`, `fallback`, drained targets) for SRV and NAPTR answers.

use super::*;

#[test]
fn srv_all_down_table() {
    run_table(&[
        Case {
            name: "all down, serve_all (default): the unfiltered answer, ttl capped",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "down"),
            ],
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_all_down: Some(AllDown::ServeAll),
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                "target 192.0.2.13:5060/udp down; all targets down: serve_all",
            )],
            ..BASE
        },
        Case {
            name: "all down, demote is still all down: serve_all, original priorities",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "down"),
            ],
            config: |d| d.on_down = OnDown::Demote,
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_all_down: Some(AllDown::ServeAll),
            ..BASE
        },
        Case {
            name: "all down, fallback: the SBC for this transport, its address as glue",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "down"),
            ],
            config: |d| {
                with_sbc(d);
                d.all_down = AllDown::Fallback;
            },
            want_answer: &["_sip._udp.pbx.example.org. 30 SRV 0 0 5060 sbc.branch.example.org."],
            want_additional: &["sbc.branch.example.org. 30 A 192.0.2.50"],
            want_all_down: Some(AllDown::Fallback),
            want_reasons: &[
                (
                    Section::Answer,
                    Action::Added,
                    "_sip._udp.pbx.example.org. SRV 0 0 5060 sbc.branch.example.org.",
                    "fallback target (all down)",
                ),
                (
                    Section::Answer,
                    Action::Withheld,
                    "_sip._udp.pbx.example.org. SRV 0 2 5060 server2.pbx.example.org.",
                    "target 192.0.2.14:5060/udp down; all targets down: fallback",
                ),
                (
                    Section::Additional,
                    Action::Withheld,
                    "server1.pbx.example.org. A 192.0.2.13",
                    "address of withheld target",
                ),
            ],
            ..BASE
        },
        Case {
            name: "all down, fallback, no gateway of this transport: all gateways",
            qname: "_sips._tcp.pbx.example.org.",
            answer: &["_sips._tcp.pbx.example.org. 3600 SRV 0 0 5061 server1.pbx.example.org."],
            additional: &[A_1],
            health: &[("192.0.2.13:5061/tls", "down")],
            config: |d| {
                d.fallback = vec![
                    sbc(Transport::Udp, 10),
                    FallbackTargetConfig {
                        host: name("gw.branch.example.org"),
                        address: "2001:db8::50".parse().unwrap(),
                        port: 5060,
                        transport: Transport::Tcp,
                        weight: 0,
                    },
                ];
                d.all_down = AllDown::Fallback;
            },
            want_answer: &[
                "_sips._tcp.pbx.example.org. 30 SRV 0 10 5060 sbc.branch.example.org.",
                "_sips._tcp.pbx.example.org. 30 SRV 0 0 5060 gw.branch.example.org.",
            ],
            want_additional: &[
                "sbc.branch.example.org. 30 A 192.0.2.50",
                "gw.branch.example.org. 30 AAAA 2001:db8::50",
            ],
            want_all_down: Some(AllDown::Fallback),
            ..BASE
        },
        Case {
            name: "all down, fallback, the gateway is down too: serve_all",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1],
            additional: &[A_1],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.50:5060/udp", "down"),
            ],
            config: |d| {
                d.fallback = vec![sbc(Transport::Udp, 0)];
                d.all_down = AllDown::Fallback;
            },
            want_answer: &["_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            want_all_down: Some(AllDown::ServeAll),
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                "no usable fallback target: serve_all",
            )],
            ..BASE
        },
        Case {
            name: "fallback_always: the SBC listed last while the servers are up",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            config: |d| {
                with_sbc(d);
                d.fallback_always = true;
            },
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 1 0 5060 sbc.branch.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
                "sbc.branch.example.org. 30 A 192.0.2.50",
            ],
            want_reasons: &[(
                Section::Answer,
                Action::Added,
                "_sip._udp.pbx.example.org. SRV 1 0 5060 sbc.branch.example.org.",
                "fallback target (always listed, lowest priority)",
            )],
            ..BASE
        },
        Case {
            name: "fallback_always with demote: the SBC after the demoted records",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[("192.0.2.13:5060/udp", "down")],
            config: |d| {
                with_sbc(d);
                d.fallback_always = true;
                d.on_down = OnDown::Demote;
            },
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 1 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 2 0 5060 sbc.branch.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
                "sbc.branch.example.org. 30 A 192.0.2.50",
            ],
            ..BASE
        },
        Case {
            name: "fallback_always, all down, serve_all: everything, SBC last",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "down"),
            ],
            config: |d| {
                with_sbc(d);
                d.fallback_always = true;
            },
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 1 0 5060 sbc.branch.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
                "sbc.branch.example.org. 30 A 192.0.2.50",
            ],
            want_all_down: Some(AllDown::ServeAll),
            ..BASE
        },
        Case {
            name: "fallback_always, the SBC down: not listed",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1],
            additional: &[A_1],
            health: &[("192.0.2.50:5060/udp", "down")],
            config: |d| {
                with_sbc(d);
                d.fallback_always = true;
            },
            want_answer: &["_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            want_reasons: &[(
                Section::Answer,
                Action::Withheld,
                "_sip._udp.pbx.example.org. SRV 1 0 5060 sbc.branch.example.org.",
                "fallback target 192.0.2.50:5060/udp down",
            )],
            ..BASE
        },
        Case {
            name: "fallback_always lists only gateways of the set's transport",
            qname: "_sips._tcp.pbx.example.org.",
            answer: &["_sips._tcp.pbx.example.org. 3600 SRV 0 0 5061 server1.pbx.example.org."],
            additional: &[A_1],
            config: |d| {
                with_sbc(d);
                d.fallback_always = true;
            },
            want_answer: &["_sips._tcp.pbx.example.org. 30 SRV 0 0 5061 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            ..BASE
        },
        Case {
            name: "without fallback_always the SBC stays hidden while servers are up",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1],
            additional: &[A_1],
            config: |d| {
                with_sbc(d);
                d.all_down = AllDown::Fallback;
            },
            want_answer: &["_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            ..BASE
        },
    ]);
}

#[test]
fn naptr_all_down_table() {
    run_table(&[
        Case {
            name: "all down, serve_all: every NAPTR, SRV set and address",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP, NAPTR_UDP],
            additional: &[SRV_TCP_1, SRV_UDP_1, A_1],
            health: &[
                ("192.0.2.13:5060/tcp", "down"),
                ("192.0.2.13:5060/udp", "down"),
            ],
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._tcp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "server1.pbx.example.org. 30 A 192.0.2.13",
            ],
            want_all_down: Some(AllDown::ServeAll),
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                r#"pbx.example.org. NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                "no usable target in _sip._tcp.pbx.example.org.; all targets down: serve_all",
            )],
            ..BASE
        },
        Case {
            name: "all down, fallback: NAPTRs for the SBC's transports, its SRV sets and glue",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP, NAPTR_UDP],
            additional: &[SRV_TCP_1, SRV_TCP_2, SRV_UDP_1, SRV_UDP_2, A_1, A_2],
            health: &[
                ("192.0.2.13:5060/tcp", "down"),
                ("192.0.2.14:5060/tcp", "down"),
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "drained"),
            ],
            config: |d| {
                with_sbc(d);
                d.all_down = AllDown::Fallback;
            },
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 10 10 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#,
                r#"pbx.example.org. 30 NAPTR 20 10 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._tcp.pbx.example.org. 30 SRV 0 0 5060 sbc.branch.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 0 5060 sbc.branch.example.org.",
                "sbc.branch.example.org. 30 A 192.0.2.50",
            ],
            want_all_down: Some(AllDown::Fallback),
            want_reasons: &[
                (
                    Section::Answer,
                    Action::Withheld,
                    r#"pbx.example.org. NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
                    "no usable target in _sip._udp.pbx.example.org.; all targets down: fallback",
                ),
                (
                    Section::Answer,
                    Action::Added,
                    r#"pbx.example.org. NAPTR 20 10 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
                    "fallback target (all down)",
                ),
                (
                    Section::Additional,
                    Action::Withheld,
                    "server2.pbx.example.org. A 192.0.2.14",
                    "address of withheld target",
                ),
            ],
            ..BASE
        },
        Case {
            name: "all down, fallback only on UDP: one NAPTR",
            qtype: RType::NAPTR,
            answer: &[NAPTR_TCP],
            additional: &[SRV_TCP_1, A_1],
            health: &[("192.0.2.13:5060/tcp", "down")],
            config: |d| {
                d.fallback = vec![sbc(Transport::Udp, 0)];
                d.all_down = AllDown::Fallback;
            },
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 0 5060 sbc.branch.example.org.",
                "sbc.branch.example.org. 30 A 192.0.2.50",
            ],
            want_all_down: Some(AllDown::Fallback),
            ..BASE
        },
        Case {
            name: "fallback_always reaches the SRV sets in additional too",
            qtype: RType::NAPTR,
            answer: &[NAPTR_UDP],
            additional: &[SRV_UDP_1, A_1],
            config: |d| {
                with_sbc(d);
                d.fallback_always = true;
            },
            want_answer: &[
                r#"pbx.example.org. 30 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#,
            ],
            want_additional: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 1 0 5060 sbc.branch.example.org.",
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "sbc.branch.example.org. 30 A 192.0.2.50",
            ],
            ..BASE
        },
    ]);
}
