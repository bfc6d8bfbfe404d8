//! Table-driven tests of the health policy, in the style of CoreDNS `test.Case`: records,
//! health and policy knobs in; expected records, all-down rule and reasons out.
//!
//! This file is the shared harness (a presentation-format record reader, a health view
//! built from a table, [`Case`], [`run_table`] and the invariants every case is checked
//! against) and the fixtures; the cases live in one file per record type or rule:
//! [`srv`], [`naptr`], [`all_down`], [`address`], [`negative`], [`ordering`],
//! [`synthesize`], [`explain`] and [`intent`] (the operator's intent: demote, drained).
//!
//! Fixtures follow the Yealink documentation (docs/policy.md), renamed to example.org and
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
mod address;
mod all_down;
mod explain;
mod intent;
mod naptr;
mod negative;
mod ordering;
mod srv;
mod synthesize;

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

impl TestHealth {
    /// Adds target `key` (`192.0.2.13:5060/udp`) in state `state` (see [`status`]).
    fn with(mut self, key_text: &str, state: &str) -> Self {
        self.targets.insert(key(key_text), status(state));
        self
    }

    /// Names the targets behind host `host`.
    fn host(mut self, host: &str, keys: &[&str]) -> Self {
        self.hosts
            .insert(name(host), keys.iter().map(|k| key(k)).collect());
        self
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
        authentic_data: false,
        reuse: crate::record::Reuse::Fresh,
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
