//! SRV answers: health filtering (`withhold` / `demote`), TTL caps and glue.

use super::*;

#[test]
fn srv_table() {
    run_table(&[
        Case {
            name: "yealink weights 1 and 2, all up: both handed out, ttl capped",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[("192.0.2.13:5060/udp", "up")],
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_reasons: &[
                (
                    Section::Answer,
                    Action::TtlCapped,
                    "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                    "target 192.0.2.13:5060/udp up; ttl capped 3600 -> 30",
                ),
                (
                    Section::Answer,
                    Action::TtlCapped,
                    "_sip._udp.pbx.example.org. SRV 0 2 5060 server2.pbx.example.org.",
                    "target 192.0.2.14:5060/udp not probed yet (counts as up)",
                ),
            ],
            ..BASE
        },
        Case {
            name: "primary down, withhold: only the secondary and its glue",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "up"),
            ],
            want_answer: &["_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org."],
            want_additional: &["server2.pbx.example.org. 30 A 192.0.2.14"],
            want_reasons: &[
                (
                    Section::Answer,
                    Action::Withheld,
                    "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                    "target 192.0.2.13:5060/udp down",
                ),
                (
                    Section::Additional,
                    Action::Withheld,
                    "server1.pbx.example.org. A 192.0.2.13",
                    "address of withheld target server1.pbx.example.org.",
                ),
            ],
            ..BASE
        },
        Case {
            name: "primary up again (failback): handed out again, no state kept",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[("192.0.2.13:5060/udp", "up"), ("192.0.2.14:5060/udp", "up")],
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            ..BASE
        },
        Case {
            name: "primary down, demote: kept after the up record, priority above it",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, A_2],
            health: &[("192.0.2.13:5060/udp", "down")],
            config: |d| d.on_down = OnDown::Demote,
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 1 1 5060 server1.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_reasons: &[(
                Section::Answer,
                Action::Moved,
                "_sip._udp.pbx.example.org. SRV 1 1 5060 server1.pbx.example.org.",
                "target 192.0.2.13:5060/udp down; demoted: priority 0 -> 1",
            )],
            ..BASE
        },
        Case {
            name: "demote keeps the relative order and weights of the down records",
            qname: UDP_QNAME,
            answer: &[
                "_sip._udp.pbx.example.org. 60 SRV 5 0 5060 a.example.org.",
                "_sip._udp.pbx.example.org. 60 SRV 1 10 5060 b.example.org.",
                "_sip._udp.pbx.example.org. 60 SRV 3 0 5060 d.example.org.",
                "_sip._udp.pbx.example.org. 60 SRV 1 20 5060 c.example.org.",
            ],
            additional: &[
                "a.example.org. 60 A 192.0.2.1",
                "b.example.org. 60 A 192.0.2.2",
                "c.example.org. 60 A 192.0.2.3",
                "d.example.org. 60 A 192.0.2.4",
            ],
            health: &[
                ("192.0.2.2:5060/udp", "down"),
                ("192.0.2.3:5060/udp", "down"),
                ("192.0.2.4:5060/udp", "drained"),
            ],
            config: |d| d.on_down = OnDown::Demote,
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 5 0 5060 a.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 6 10 5060 b.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 6 20 5060 c.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 7 0 5060 d.example.org.",
            ],
            want_additional: &[
                "a.example.org. 30 A 192.0.2.1",
                "b.example.org. 30 A 192.0.2.2",
                "c.example.org. 30 A 192.0.2.3",
                "d.example.org. 30 A 192.0.2.4",
            ],
            want_reasons: &[(
                Section::Answer,
                Action::Moved,
                "_sip._udp.pbx.example.org. SRV 7 0 5060 d.example.org.",
                "target 192.0.2.4:5060/udp drained by operator; demoted: priority 3 -> 7",
            )],
            ..BASE
        },
        Case {
            name: "airties uc2/uc1, priorities 1 and 2: drained primary uc2 withheld",
            qname: "_sip._tcp.voice.example.org.",
            answer: &[
                "_sip._tcp.voice.example.org. 3600 SRV 1 0 5060 uc2.voice.example.org.",
                "_sip._tcp.voice.example.org. 3600 SRV 2 0 5060 uc1.voice.example.org.",
            ],
            additional: &[
                "uc2.voice.example.org. 3600 A 192.0.2.27",
                "uc1.voice.example.org. 3600 A 192.0.2.26",
            ],
            health: &[
                ("192.0.2.27:5060/tcp", "drained"),
                ("192.0.2.26:5060/tcp", "up"),
            ],
            want_answer: &["_sip._tcp.voice.example.org. 30 SRV 2 0 5060 uc1.voice.example.org."],
            want_additional: &["uc1.voice.example.org. 30 A 192.0.2.26"],
            want_reasons: &[(
                Section::Answer,
                Action::Withheld,
                "_sip._tcp.voice.example.org. SRV 1 0 5060 uc2.voice.example.org.",
                "target 192.0.2.27:5060/tcp drained by operator",
            )],
            ..BASE
        },
        Case {
            name: "airties, drained primary, demote: uc1 first, uc2 behind it",
            qname: "_sip._tcp.voice.example.org.",
            answer: &[
                "_sip._tcp.voice.example.org. 3600 SRV 1 0 5060 uc2.voice.example.org.",
                "_sip._tcp.voice.example.org. 3600 SRV 2 0 5060 uc1.voice.example.org.",
            ],
            additional: &[
                "uc2.voice.example.org. 3600 A 192.0.2.27",
                "uc1.voice.example.org. 3600 A 192.0.2.26",
            ],
            health: &[("192.0.2.27:5060/tcp", "drained")],
            config: |d| d.on_down = OnDown::Demote,
            want_answer: &[
                "_sip._tcp.voice.example.org. 30 SRV 2 0 5060 uc1.voice.example.org.",
                "_sip._tcp.voice.example.org. 30 SRV 3 0 5060 uc2.voice.example.org.",
            ],
            want_additional: &[
                "uc2.voice.example.org. 30 A 192.0.2.27",
                "uc1.voice.example.org. 30 A 192.0.2.26",
            ],
            ..BASE
        },
        Case {
            name: "the transport comes from the owner: a UDP-only outage leaves _sip._tcp alone",
            qname: "_sip._tcp.pbx.example.org.",
            answer: &[SRV_TCP_1, SRV_TCP_2],
            additional: &[A_1, A_2],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.14:5060/udp", "down"),
            ],
            want_answer: &[
                "_sip._tcp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._tcp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.13",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            ..BASE
        },
        Case {
            name: "a host with two addresses, one down: record kept, down address not glue",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_1, "server1.pbx.example.org. 3600 A 192.0.2.113", A_2],
            health: &[("192.0.2.13:5060/udp", "down")],
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &[
                "server1.pbx.example.org. 30 A 192.0.2.113",
                "server2.pbx.example.org. 30 A 192.0.2.14",
            ],
            want_reasons: &[(
                Section::Additional,
                Action::Withheld,
                "server1.pbx.example.org. A 192.0.2.13",
                "target 192.0.2.13:5060/udp down",
            )],
            ..BASE
        },
        Case {
            name: "one host on two ports: the down port's record goes, the glue stays",
            qname: UDP_QNAME,
            answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 0 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 0 5070 server1.pbx.example.org.",
            ],
            additional: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            health: &[
                ("192.0.2.13:5060/udp", "down"),
                ("192.0.2.13:5070/udp", "up"),
            ],
            want_answer: &["_sip._udp.pbx.example.org. 30 SRV 0 0 5070 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 30 A 192.0.2.13"],
            ..BASE
        },
        Case {
            name: "a target without glue has unknown health and is kept",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1, SRV_UDP_2],
            additional: &[A_2],
            health: &[("192.0.2.13:5060/udp", "down")],
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 server1.pbx.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 2 5060 server2.pbx.example.org.",
            ],
            want_additional: &["server2.pbx.example.org. 30 A 192.0.2.14"],
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                "no address of server1.pbx.example.org. in additional: health unknown",
            )],
            ..BASE
        },
        Case {
            name: "CNAME to a hosted SRV set: alias first, capped, set filtered",
            qname: UDP_QNAME,
            answer: &[
                "_sip._udp.pbx.example.org. 300 CNAME _sip._udp.hosted.example.net.",
                "_sip._udp.hosted.example.net. 300 SRV 0 0 5060 s1.hosted.example.net.",
                "_sip._udp.hosted.example.net. 300 SRV 0 0 5060 s2.hosted.example.net.",
            ],
            additional: &[
                "s1.hosted.example.net. 300 A 192.0.2.61",
                "s2.hosted.example.net. 300 A 192.0.2.62",
            ],
            health: &[("192.0.2.61:5060/udp", "down")],
            want_answer: &[
                "_sip._udp.pbx.example.org. 30 CNAME _sip._udp.hosted.example.net.",
                "_sip._udp.hosted.example.net. 30 SRV 0 0 5060 s2.hosted.example.net.",
            ],
            want_additional: &["s2.hosted.example.net. 30 A 192.0.2.62"],
            ..BASE
        },
        Case {
            name: "target \".\" (service not offered) is passed through",
            qname: "_sips._tcp.pbx.example.org.",
            answer: &["_sips._tcp.pbx.example.org. 3600 SRV 0 0 0 ."],
            want_answer: &["_sips._tcp.pbx.example.org. 30 SRV 0 0 0 ."],
            ..BASE
        },
        Case {
            name: "a TTL below the cap is left alone",
            qname: UDP_QNAME,
            answer: &["_sip._udp.pbx.example.org. 10 SRV 0 1 5060 server1.pbx.example.org."],
            additional: &["server1.pbx.example.org. 20 A 192.0.2.13"],
            want_answer: &["_sip._udp.pbx.example.org. 10 SRV 0 1 5060 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 20 A 192.0.2.13"],
            want_reasons: &[(
                Section::Answer,
                Action::Kept,
                "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                "not probed yet",
            )],
            ..BASE
        },
        Case {
            name: "the domain's ttl knob sets the cap",
            qname: UDP_QNAME,
            answer: &[SRV_UDP_1],
            additional: &[A_1],
            config: |d| d.ttl = 120,
            want_answer: &["_sip._udp.pbx.example.org. 120 SRV 0 1 5060 server1.pbx.example.org."],
            want_additional: &["server1.pbx.example.org. 120 A 192.0.2.13"],
            want_reasons: &[(
                Section::Answer,
                Action::TtlCapped,
                "_sip._udp.pbx.example.org. SRV 0 1 5060 server1.pbx.example.org.",
                "ttl capped 3600 -> 120",
            )],
            ..BASE
        },
    ]);
}
