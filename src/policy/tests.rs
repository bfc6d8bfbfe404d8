//! Table-driven tests of the health policy, in the style of CoreDNS `test.Case`: records,
//! health and policy knobs in; expected records, all-down rule and reasons out.
//!
//! Fixtures follow the Yealink seeds (`/work/shared/seeds/`), renamed to example.org and
//! 192.0.2.0/24: the server-redundancy guide's NAPTR 90/100 -> `_sip._tcp` / `_sip._udp` and
//! SRV priority 0 with weights 1 and 2 (`server1`/`server2`, 192.168.1.13/.14 -> 192.0.2.13/.14),
//! and the airties capture's `uc2`/`uc1` at priorities 1 and 2 (91.220.65.27/.26 ->
//! 192.0.2.27/.26).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr},
};

use rand::{SeedableRng, rngs::StdRng};

use super::*;
use crate::{
    config::{FallbackTargetConfig, OnDown, Ordering},
    health::{AdminState, Health, HealthSnapshot, TargetStatus},
    record::Source,
};

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// Splits a presentation-format line into tokens; `"..."` is one token (quotes removed).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        let mut tok = String::new();
        if c == '"' {
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                tok.push(c);
            }
        } else {
            tok.push(c);
            while let Some(c) = chars.peek().copied() {
                if c.is_whitespace() {
                    break;
                }
                tok.push(c);
                chars.next();
            }
        }
        out.push(tok);
    }
    out
}

fn name(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

/// Parses `owner [ttl] TYPE rdata` (zone-file style, class omitted). Without a TTL, 0.
fn rr(s: &str) -> Rec {
    let t = tokens(s);
    let owner = name(&t[0]);
    let (ttl, i) = match t[1].parse::<u32>() {
        Ok(ttl) => (ttl, 2),
        Err(_) => (0, 1),
    };
    let n = |k: usize| -> u16 { t[i + 1 + k].parse().unwrap() };
    let n32 = |k: usize| -> u32 { t[i + 1 + k].parse().unwrap() };
    let data = match t[i].as_str() {
        "A" => RecordData::A(t[i + 1].parse().unwrap()),
        "AAAA" => RecordData::Aaaa(t[i + 1].parse().unwrap()),
        "CNAME" => RecordData::Cname(name(&t[i + 1])),
        "TXT" => RecordData::Txt(t[i + 1..].to_vec()),
        "SRV" => RecordData::Srv {
            priority: n(0),
            weight: n(1),
            port: n(2),
            target: name(&t[i + 4]),
        },
        "NAPTR" => RecordData::Naptr {
            order: n(0),
            preference: n(1),
            flags: t[i + 3].clone(),
            services: t[i + 4].clone(),
            regexp: t[i + 5].clone(),
            replacement: name(&t[i + 6]),
        },
        "SOA" => RecordData::Soa {
            mname: name(&t[i + 1]),
            rname: name(&t[i + 2]),
            serial: n32(2),
            refresh: n32(3),
            retry: n32(4),
            expire: n32(5),
            minimum: n32(6),
        },
        other => panic!("rr: unsupported type {other} in {s:?}"),
    };
    Rec::new(owner, ttl, data)
}

fn rrs(list: &[&str]) -> Vec<Rec> {
    list.iter().map(|s| rr(s)).collect()
}

/// Health for tests: per-target status plus the targets behind each host name.
#[derive(Default)]
struct TestHealth {
    targets: HashMap<TargetKey, TargetStatus>,
    hosts: HashMap<DomainName, Vec<TargetKey>>,
}

impl HealthView for TestHealth {
    fn status(&self, key: &TargetKey) -> TargetStatus {
        self.targets
            .get(key)
            .copied()
            .unwrap_or(TargetStatus::UNKNOWN)
    }
    fn host_targets(&self, host: &DomainName) -> Vec<TargetKey> {
        self.hosts.get(host).cloned().unwrap_or_default()
    }
}

fn status(s: &str) -> TargetStatus {
    let (health, admin) = match s {
        "up" => (Health::Up, AdminState::Enabled),
        "down" => (Health::Down, AdminState::Enabled),
        "unknown" => (Health::Unknown, AdminState::Enabled),
        "drained" => (Health::Up, AdminState::Drained),
        other => panic!("status: {other}"),
    };
    TargetStatus { health, admin }
}

fn key(s: &str) -> TargetKey {
    s.parse().unwrap()
}

fn health(statuses: &[(&str, &str)], hosts: &[(&str, &[&str])]) -> TestHealth {
    TestHealth {
        targets: statuses.iter().map(|(k, s)| (key(k), status(s))).collect(),
        hosts: hosts
            .iter()
            .map(|(h, ks)| (name(h), ks.iter().map(|k| key(k)).collect()))
            .collect(),
    }
}

const DOMAIN: &str = "pbx.example.org.";

/// The SBC of the branch office, reachable over UDP and TCP.
fn sbc(transport: Transport, weight: u16) -> FallbackTargetConfig {
    FallbackTargetConfig {
        host: name("sbc.branch.example.org"),
        address: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 50)),
        port: 5060,
        transport,
        weight,
    }
}

fn with_sbc(d: &mut SipDomainConfig) {
    d.fallback = vec![sbc(Transport::Udp, 0), sbc(Transport::Tcp, 0)];
}

/// One table row.
struct Case {
    name: &'static str,
    qname: &'static str,
    qtype: RType,
    rcode: Rcode,
    answer: &'static [&'static str],
    authority: &'static [&'static str],
    additional: &'static [&'static str],
    /// (target key, up | down | drained | unknown)
    health: &'static [(&'static str, &'static str)],
    /// (host, its target keys), for A/AAAA of target hosts.
    hosts: &'static [(&'static str, &'static [&'static str])],
    /// Knobs on top of the defaults (the harness sets `ordering: fixed` first, so tables
    /// are deterministic; weighted ordering has its own tests).
    config: fn(&mut SipDomainConfig),
    want_rcode: Rcode,
    want_answer: &'static [&'static str],
    want_authority: &'static [&'static str],
    want_additional: &'static [&'static str],
    want_all_down: Option<AllDown>,
    /// (section, action, record without TTL, substring of the reason)
    want_reasons: &'static [(Section, Action, &'static str, &'static str)],
}

fn no_config(_: &mut SipDomainConfig) {}

const BASE: Case = Case {
    name: "",
    qname: DOMAIN,
    qtype: RType::SRV,
    rcode: Rcode::NoError,
    answer: &[],
    authority: &[],
    additional: &[],
    health: &[],
    hosts: &[],
    config: no_config,
    want_rcode: Rcode::NoError,
    want_answer: &[],
    want_authority: &[],
    want_additional: &[],
    want_all_down: None,
    want_reasons: &[],
};

fn show(recs: &[Rec]) -> String {
    recs.iter()
        .map(|r| format!("\n    {r}"))
        .collect::<String>()
}

/// Runs one case; returns the problems found.
fn run(case: &Case) -> Vec<String> {
    let mut domain = SipDomainConfig {
        ttl: 30,
        ..SipDomainConfig::new(name(DOMAIN))
    };
    domain.ordering = Ordering::Fixed;
    (case.config)(&mut domain);
    let h = health(case.health, case.hosts);
    let input = Answer {
        rcode: case.rcode,
        authoritative: false,
        answers: rrs(case.answer),
        authority: rrs(case.authority),
        additional: rrs(case.additional),
        source: Source::Upstream,
    };
    let before = input.clone();
    let mut rng = StdRng::seed_from_u64(7);
    let out = apply(&name(case.qname), case.qtype, input, &domain, &h, &mut rng);
    let mut errs = Vec::new();
    let mut section = |what: &str, got: &[Rec], want: &[&str]| {
        let want = rrs(want);
        if got != want.as_slice() {
            errs.push(format!(
                "{what}:\n  got:{}\n  want:{}",
                show(got),
                show(&want)
            ));
        }
    };
    section("answer", &out.answer.answers, case.want_answer);
    section("authority", &out.answer.authority, case.want_authority);
    section("additional", &out.answer.additional, case.want_additional);
    if out.answer.rcode != case.want_rcode {
        errs.push(format!(
            "rcode: got {:?}, want {:?}",
            out.answer.rcode, case.want_rcode
        ));
    }
    if out.all_down != case.want_all_down {
        errs.push(format!(
            "all_down: got {:?}, want {:?}",
            out.all_down, case.want_all_down
        ));
    }
    for (sec, action, rec, reason) in case.want_reasons {
        let want = rr(rec);
        let found = out.decisions.iter().any(|d| {
            d.section == *sec
                && d.action == *action
                && d.record.name == want.name
                && d.record.data == want.data
                && d.reason.contains(reason)
        });
        if !found {
            errs.push(format!(
                "no decision {sec:?} {action:?} {rec:?} with reason containing {reason:?}; \
                 decisions:{}",
                out.decisions
                    .iter()
                    .map(|d| format!(
                        "\n    {:?} {:?} {} -- {}",
                        d.section, d.action, d.record, d.reason
                    ))
                    .collect::<String>()
            ));
        }
    }
    errs.extend(invariants(case, &domain, &before, &out));
    errs
}

/// What must hold for every answer: every record in and out is explained; nothing handed
/// out is marked withheld; glue only for targets handed out; TTLs within the cap where
/// the policy applies.
fn invariants(
    case: &Case,
    domain: &SipDomainConfig,
    before: &Answer,
    out: &Outcome,
) -> Vec<String> {
    let mut errs = Vec::new();
    if !matches!(before.rcode, Rcode::NoError | Rcode::NxDomain) {
        return errs;
    }
    let explained = |sec: Section, r: &Rec, handed: bool| {
        out.decisions.iter().any(|d| {
            d.section == sec
                && d.record.name == r.name
                && d.record.data == r.data
                && (d.action != Action::Withheld) == handed
                && (!handed || d.record.ttl == r.ttl)
        })
    };
    for (sec, recs) in [
        (Section::Answer, &out.answer.answers),
        (Section::Additional, &out.answer.additional),
    ] {
        for r in recs.iter() {
            if !explained(sec, r, true) {
                errs.push(format!("{sec:?} {r} handed out without a decision"));
            }
        }
    }
    for (sec, before_recs, after_recs) in [
        (Section::Answer, &before.answers, &out.answer.answers),
        (
            Section::Additional,
            &before.additional,
            &out.answer.additional,
        ),
    ] {
        for r in before_recs.iter() {
            let handed = after_recs
                .iter()
                .any(|a| a.name == r.name && a.data.rtype() == r.data.rtype() && same_rdata(a, r));
            if !handed && !explained(sec, r, false) {
                errs.push(format!("{sec:?} {r} dropped without a Withheld decision"));
            }
        }
    }
    // Glue: an address of an SRV target of the input is only handed out if an SRV record
    // handed out (answer or additional) points at that host.
    let targets = |recs: &[Rec]| -> Vec<DomainName> {
        recs.iter()
            .filter_map(|r| match &r.data {
                RecordData::Srv { target, .. } => Some(target.clone()),
                _ => None,
            })
            .collect()
    };
    let mut before_targets = targets(&before.answers);
    before_targets.extend(targets(&before.additional));
    let mut after_targets = targets(&out.answer.answers);
    after_targets.extend(targets(&out.answer.additional));
    for r in &out.answer.additional {
        if r.data.ip().is_some()
            && before_targets.contains(&r.name)
            && !after_targets.contains(&r.name)
        {
            errs.push(format!("glue {r} for a target that is not handed out"));
        }
    }
    if matches!(case.qtype, RType::SRV | RType::NAPTR) || before.is_negative(case.qtype) {
        for r in out.answer.answers.iter().chain(&out.answer.additional) {
            if r.ttl > domain.ttl {
                errs.push(format!("{r} above the ttl cap {}", domain.ttl));
            }
        }
    }
    errs
}

/// Same record data, ignoring an SRV priority change (a demoted record is the same record).
fn same_rdata(a: &Rec, b: &Rec) -> bool {
    match (&a.data, &b.data) {
        (
            RecordData::Srv {
                weight: w1,
                port: p1,
                target: t1,
                ..
            },
            RecordData::Srv {
                weight: w2,
                port: p2,
                target: t2,
                ..
            },
        ) => w1 == w2 && p1 == p2 && t1 == t2,
        _ => a.data == b.data,
    }
}

fn run_table(cases: &[Case]) {
    let mut failures = Vec::new();
    for case in cases {
        let errs = run(case);
        if !errs.is_empty() {
            failures.push(format!("case {:?}:\n{}", case.name, errs.join("\n")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

// ---------------------------------------------------------------------------------------
// Fixtures: Yealink server-redundancy guide (NAPTR 90/100, SRV 0 1 / 0 2)
// ---------------------------------------------------------------------------------------

const NAPTR_TCP: &str =
    r#"pbx.example.org. 3600 NAPTR 90 50 "s" "SIP+D2T" "" _sip._tcp.pbx.example.org."#;
const NAPTR_UDP: &str =
    r#"pbx.example.org. 3600 NAPTR 100 50 "s" "SIP+D2U" "" _sip._udp.pbx.example.org."#;
const SRV_UDP_1: &str = "_sip._udp.pbx.example.org. 3600 SRV 0 1 5060 server1.pbx.example.org.";
const SRV_UDP_2: &str = "_sip._udp.pbx.example.org. 3600 SRV 0 2 5060 server2.pbx.example.org.";
const SRV_TCP_1: &str = "_sip._tcp.pbx.example.org. 3600 SRV 0 1 5060 server1.pbx.example.org.";
const SRV_TCP_2: &str = "_sip._tcp.pbx.example.org. 3600 SRV 0 2 5060 server2.pbx.example.org.";
const A_1: &str = "server1.pbx.example.org. 3600 A 192.0.2.13";
const A_2: &str = "server2.pbx.example.org. 3600 A 192.0.2.14";

const UDP_QNAME: &str = "_sip._udp.pbx.example.org.";

// ---------------------------------------------------------------------------------------
// SRV
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// NAPTR
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// A / AAAA
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Negative answers, other rcodes and types
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// Weighted ordering (RFC 2782)
// ---------------------------------------------------------------------------------------

/// Over `draws` orderings, how often each weight's record came first.
fn first_shares(weights: &[u16], draws: u32, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut firsts = vec![0u32; weights.len()];
    for _ in 0..draws {
        let items: Vec<usize> = (0..weights.len()).collect();
        let order = srv::weighted_order(items, |i| weights[*i], &mut rng);
        assert_eq!(order.len(), weights.len());
        firsts[order[0]] += 1;
    }
    firsts
        .into_iter()
        .map(|n| f64::from(n) / f64::from(draws))
        .collect()
}

fn assert_shares(weights: &[u16], want: &[f64]) {
    let got = first_shares(weights, 10_000, 2782);
    for (g, w) in got.iter().zip(want) {
        assert!(
            (g - w).abs() < 0.02,
            "weights {weights:?}: first-record shares {got:?}, want {want:?} (within 2 points)"
        );
    }
}

#[test]
fn weighted_first_record_follows_weights() {
    // Yealink's SRV example: weights 1 and 2.
    assert_shares(&[1, 2], &[1.0 / 3.0, 2.0 / 3.0]);
    assert_shares(&[10, 20, 70], &[0.10, 0.20, 0.70]);
    assert_shares(&[70, 20, 10], &[0.70, 0.20, 0.10]);
    assert_shares(&[5, 5], &[0.5, 0.5]);
    // Weight 0 gets RFC 2782's "very small chance": the 0 slot of the 0..=sum draw.
    assert_shares(&[0, 10], &[1.0 / 11.0, 10.0 / 11.0]);
    // All weights 0: an even shuffle.
    assert_shares(&[0, 0, 0], &[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]);
}

#[test]
fn weighted_is_a_permutation_and_single_records_are_stable() {
    let mut rng = StdRng::seed_from_u64(1);
    for _ in 0..100 {
        let mut order = srv::weighted_order(vec![1, 2, 3, 4], |i| (*i as u16) * 3, &mut rng);
        order.sort_unstable();
        assert_eq!(order, vec![1, 2, 3, 4]);
    }
    assert_eq!(srv::weighted_order(vec![7], |_| 0, &mut rng), vec![7]);
    assert!(srv::weighted_order(Vec::<u8>::new(), |_| 0, &mut rng).is_empty());
}

#[test]
fn weighted_second_place_follows_remaining_weights() {
    // Selection without replacement: given 70 went first, 20 is second 2/3 of the time.
    let weights = [10u16, 20, 70];
    let mut rng = StdRng::seed_from_u64(99);
    let (mut after70, mut twenty_second) = (0u32, 0u32);
    for _ in 0..20_000 {
        let order = srv::weighted_order(vec![0usize, 1, 2], |i| weights[*i], &mut rng);
        if order[0] == 2 {
            after70 += 1;
            if order[1] == 1 {
                twenty_second += 1;
            }
        }
    }
    let share = f64::from(twenty_second) / f64::from(after70);
    assert!((share - 2.0 / 3.0).abs() < 0.02, "share {share}");
}

/// The default config orders by weight: over 10,000 answers, the Yealink weights 1 and 2
/// put server2 first two times in three, and priorities are never mixed.
#[test]
fn weighted_ordering_through_apply() {
    let domain = SipDomainConfig {
        ttl: 30,
        ..SipDomainConfig::new(name(DOMAIN))
    };
    assert_eq!(domain.ordering, Ordering::Weighted);
    let h = TestHealth::default();
    let input = Answer {
        additional: rrs(&[A_1, A_2]),
        ..Answer::records(
            rrs(&[
                SRV_UDP_1,
                SRV_UDP_2,
                "_sip._udp.pbx.example.org. 3600 SRV 1 0 5060 backup.pbx.example.org.",
            ]),
            Source::Upstream,
        )
    };
    let mut rng = StdRng::seed_from_u64(3263);
    let mut server2_first = 0u32;
    for _ in 0..10_000 {
        let out = apply(
            &name(UDP_QNAME),
            RType::SRV,
            input.clone(),
            &domain,
            &h,
            &mut rng,
        );
        let targets: Vec<String> = out
            .answer
            .answers
            .iter()
            .map(|r| match &r.data {
                RecordData::Srv { target, .. } => target.to_string(),
                _ => String::new(),
            })
            .collect();
        assert_eq!(targets.len(), 3);
        assert_eq!(targets[2], "backup.pbx.example.org.");
        if targets[0] == "server2.pbx.example.org." {
            server2_first += 1;
        }
    }
    let share = f64::from(server2_first) / 10_000.0;
    assert!((share - 2.0 / 3.0).abs() < 0.02, "server2 first {share}");
}

#[test]
fn fixed_ordering_keeps_source_order_within_priority() {
    let mut domain = SipDomainConfig {
        ttl: 30,
        ..SipDomainConfig::new(name(DOMAIN))
    };
    domain.ordering = Ordering::Fixed;
    let input = Answer::records(
        rrs(&[
            "_sip._udp.pbx.example.org. 30 SRV 1 90 5060 c.example.org.",
            "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 a.example.org.",
            "_sip._udp.pbx.example.org. 30 SRV 0 99 5060 b.example.org.",
        ]),
        Source::Static,
    );
    let mut rng = StdRng::seed_from_u64(0);
    for _ in 0..50 {
        let out = apply(
            &name(UDP_QNAME),
            RType::SRV,
            input.clone(),
            &domain,
            &TestHealth::default(),
            &mut rng,
        );
        assert_eq!(
            out.answer.answers,
            rrs(&[
                "_sip._udp.pbx.example.org. 30 SRV 0 1 5060 a.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 0 99 5060 b.example.org.",
                "_sip._udp.pbx.example.org. 30 SRV 1 90 5060 c.example.org.",
            ])
        );
    }
}

// ---------------------------------------------------------------------------------------
// synthesize_naptr
// ---------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------
// API shape
// ---------------------------------------------------------------------------------------

#[test]
fn works_through_dyn_health_and_snapshot() {
    let domain = SipDomainConfig {
        ttl: 30,
        ..SipDomainConfig::new(name(DOMAIN))
    };
    let mut targets = HashMap::new();
    targets.insert(key("192.0.2.13:5060/udp"), status("down"));
    let snapshot = HealthSnapshot {
        generation: 1,
        targets: targets.clone().into(),
        by_host: HashMap::new().into(),
        host_domain: HashMap::new().into(),
    };
    let input = Answer {
        additional: rrs(&[A_1, A_2]),
        ..Answer::records(rrs(&[SRV_UDP_1, SRV_UDP_2]), Source::Upstream)
    };
    let views: [&dyn HealthView; 2] = [&snapshot, &targets];
    for view in views {
        let mut rng = StdRng::seed_from_u64(0);
        let out = apply(
            &name(UDP_QNAME),
            RType::SRV,
            input.clone(),
            &domain,
            view,
            &mut rng,
        );
        assert_eq!(out.answer.answers.len(), 1);
        assert_eq!(out.withheld_count(), 2);
    }
}

#[test]
fn explanation_serializes_for_the_rest_view() {
    let domain = SipDomainConfig {
        ttl: 30,
        ..SipDomainConfig::new(name(DOMAIN))
    };
    let h = health(&[("192.0.2.13:5060/udp", "down")], &[]);
    let before = Answer {
        additional: rrs(&[A_1, A_2]),
        ..Answer::records(rrs(&[SRV_UDP_1, SRV_UDP_2]), Source::Upstream)
    };
    let mut rng = StdRng::seed_from_u64(0);
    let out = apply(
        &name(UDP_QNAME),
        RType::SRV,
        before.clone(),
        &domain,
        &h,
        &mut rng,
    );
    let ex = Explanation::new(&name(UDP_QNAME), RType::SRV, &before, &out);
    let v = serde_json::to_value(&ex).unwrap();
    assert_eq!(v["name"], "_sip._udp.pbx.example.org.");
    assert_eq!(v["type"], "SRV");
    assert_eq!(v["before"]["answer"].as_array().unwrap().len(), 2);
    assert_eq!(
        v["after"]["answer"][0],
        "_sip._udp.pbx.example.org. 30 IN SRV 0 2 5060 server2.pbx.example.org."
    );
    assert_eq!(v["all_down"], serde_json::Value::Null);
    let withheld = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["action"] == "withheld" && d["section"] == "answer")
        .unwrap();
    assert_eq!(withheld["record"]["type"], "SRV");
    assert_eq!(withheld["record"]["ttl"], 3600);
    assert_eq!(
        withheld["record"]["data"],
        "0 1 5060 server1.pbx.example.org."
    );
    assert_eq!(withheld["reason"], "target 192.0.2.13:5060/udp down");
    assert_eq!(all_down_label(AllDown::ServeAll), "serve_all");
}
