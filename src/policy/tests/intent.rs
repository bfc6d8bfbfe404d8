//! The policy follows the operator's intent (issue 15, point 3): `on_down: demote` demotes
//! addresses too (the domain's own A/AAAA, target hosts' A/AAAA and the glue of kept
//! targets) instead of withholding them, and `all_down: serve_all` leaves drained targets
//! out unless `all_down_includes_drained: true`. Each case also checks the explain view.

use super::*;

const UDP: &str = "_sip._udp.pbx.example.org.";
const TCP: &str = "_sip._tcp.pbx.example.org.";

fn a(owner: &str, ip: &str) -> Rec {
    Rec::new(name(owner), 300, address_data(ip.parse().unwrap()))
}

fn srv(owner: &str, priority: u16, target: &str) -> Rec {
    Rec::new(
        name(owner),
        300,
        RecordData::Srv {
            priority,
            weight: 1,
            port: 5060,
            target: name(target),
        },
    )
}

fn naptr(order: u16, service: &str, replacement: &str) -> Rec {
    Rec::new(
        name(DOMAIN),
        300,
        RecordData::Naptr {
            order,
            preference: 10,
            flags: "s".to_owned(),
            services: service.to_owned(),
            regexp: String::new(),
            replacement: name(replacement),
        },
    )
}

/// Applies the policy (fixed ordering, `config` on top of the defaults); returns the
/// outcome and its explanation.
fn apply_to(
    qname: &str,
    qtype: RType,
    answers: Vec<Rec>,
    additional: Vec<Rec>,
    health: &TestHealth,
    config: impl FnOnce(&mut SipDomainConfig),
) -> (Outcome, Explanation) {
    let mut domain = SipDomainConfig::new(name(DOMAIN));
    domain.ordering = Ordering::Fixed;
    config(&mut domain);
    let before = Answer {
        rcode: Rcode::NoError,
        authoritative: true,
        answers,
        authority: Vec::new(),
        additional,
        source: Source::Static,
        authentic_data: false,
        reuse: crate::record::Reuse::Fresh,
    };
    let mut rng = StdRng::seed_from_u64(15);
    let out = apply(
        &name(qname),
        qtype,
        before.clone(),
        &domain,
        health,
        &mut rng,
    );
    let ex = Explanation::new(&name(qname), qtype, &before, &out);
    (out, ex)
}

/// `owner data` of each record, TTL left out.
fn show(recs: &[Rec]) -> Vec<String> {
    recs.iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect()
}

/// The decision about the record `owner data` in `section`.
fn decision<'a>(ex: &'a Explanation, section: Section, rec: &str) -> &'a Decision {
    ex.decisions
        .iter()
        .find(|d| d.section == section && format!("{} {}", d.record.name, d.record.data) == rec)
        .unwrap_or_else(|| {
            panic!(
                "no decision about {rec} in {section:?}: {:#?}",
                ex.decisions
            )
        })
}

#[test]
fn demote_moves_the_domains_own_down_address_after_the_up_ones() {
    let h = TestHealth::default()
        .with("192.0.2.13:5060/udp", "down")
        .with("192.0.2.14:5060/udp", "up");
    let answers = vec![a(DOMAIN, "192.0.2.13"), a(DOMAIN, "192.0.2.14")];
    let (out, ex) = apply_to(DOMAIN, RType::A, answers.clone(), vec![], &h, |d| {
        d.on_down = OnDown::Demote;
    });
    assert_eq!(
        show(&out.answer.answers),
        ["pbx.example.org. 192.0.2.14", "pbx.example.org. 192.0.2.13"]
    );
    assert!(out.answer.answers.iter().all(|r| r.ttl <= 30));
    assert_eq!(out.all_down, None);
    let d = decision(&ex, Section::Answer, "pbx.example.org. 192.0.2.13");
    assert_eq!(d.action, Action::Moved);
    assert!(
        d.reason.contains("192.0.2.13:5060/udp down") && d.reason.contains("demoted"),
        "{}",
        d.reason
    );
    assert_eq!(ex.after.answers.len(), 2, "explain view: {:?}", ex.after);

    // The default (withhold) still withholds it.
    let (out, ex) = apply_to(DOMAIN, RType::A, answers, vec![], &h, |_| {});
    assert_eq!(show(&out.answer.answers), ["pbx.example.org. 192.0.2.14"]);
    let d = decision(&ex, Section::Answer, "pbx.example.org. 192.0.2.13");
    assert_eq!(d.action, Action::Withheld);
}

#[test]
fn demote_keeps_the_order_of_up_addresses_and_of_the_down_ones() {
    let h = TestHealth::default()
        .with("[2001:db8::1]:5060/udp", "down")
        .with("[2001:db8::2]:5060/udp", "up")
        .with("[2001:db8::3]:5060/udp", "down")
        .with("[2001:db8::4]:5060/udp", "up");
    let answers = ["2001:db8::1", "2001:db8::2", "2001:db8::3", "2001:db8::4"]
        .iter()
        .map(|ip| a(DOMAIN, ip))
        .collect();
    let (out, _) = apply_to(DOMAIN, RType::AAAA, answers, vec![], &h, |d| {
        d.on_down = OnDown::Demote;
    });
    assert_eq!(
        show(&out.answer.answers),
        [
            "pbx.example.org. 2001:db8::2",
            "pbx.example.org. 2001:db8::4",
            "pbx.example.org. 2001:db8::1",
            "pbx.example.org. 2001:db8::3",
        ]
    );
}

#[test]
fn demote_moves_a_target_hosts_down_address_after_the_up_one() {
    let host = "server1.pbx.example.org.";
    let h = TestHealth::default()
        .with("192.0.2.13:5060/udp", "down")
        .with("192.0.2.23:5060/udp", "up")
        .host(host, &["192.0.2.13:5060/udp", "192.0.2.23:5060/udp"]);
    let (out, ex) = apply_to(
        host,
        RType::A,
        vec![a(host, "192.0.2.13"), a(host, "192.0.2.23")],
        vec![],
        &h,
        |d| d.on_down = OnDown::Demote,
    );
    assert_eq!(
        show(&out.answer.answers),
        [
            "server1.pbx.example.org. 192.0.2.23",
            "server1.pbx.example.org. 192.0.2.13"
        ]
    );
    assert_eq!(
        decision(&ex, Section::Answer, "server1.pbx.example.org. 192.0.2.13").action,
        Action::Moved
    );
}

#[test]
fn demote_moves_the_down_glue_of_a_kept_target_after_its_up_address() {
    // server1 has two addresses, one down: its SRV record stays (one address is up); in
    // ADDITIONAL the down address follows the up one instead of being withheld.
    let h = TestHealth::default()
        .with("192.0.2.13:5060/udp", "down")
        .with("192.0.2.23:5060/udp", "up")
        .with("192.0.2.14:5060/udp", "up");
    let additional = vec![
        a("server1.pbx.example.org.", "192.0.2.13"),
        a("server1.pbx.example.org.", "192.0.2.23"),
        a("server2.pbx.example.org.", "192.0.2.14"),
    ];
    let answers = vec![
        srv(UDP, 10, "server1.pbx.example.org."),
        srv(UDP, 20, "server2.pbx.example.org."),
    ];
    let (out, ex) = apply_to(UDP, RType::SRV, answers, additional, &h, |d| {
        d.on_down = OnDown::Demote;
    });
    assert_eq!(
        show(&out.answer.additional),
        [
            "server1.pbx.example.org. 192.0.2.23",
            "server1.pbx.example.org. 192.0.2.13",
            "server2.pbx.example.org. 192.0.2.14",
        ]
    );
    let d = decision(
        &ex,
        Section::Additional,
        "server1.pbx.example.org. 192.0.2.13",
    );
    assert_eq!(d.action, Action::Moved, "{}", d.reason);
}

fn all_down_srv(includes_drained: bool) -> (Outcome, Explanation) {
    let h = TestHealth::default()
        .with("192.0.2.13:5060/udp", "down")
        .with("192.0.2.14:5060/udp", "drained");
    let answers = vec![
        srv(UDP, 10, "server1.pbx.example.org."),
        srv(UDP, 20, "server2.pbx.example.org."),
    ];
    let additional = vec![
        a("server1.pbx.example.org.", "192.0.2.13"),
        a("server2.pbx.example.org.", "192.0.2.14"),
    ];
    apply_to(UDP, RType::SRV, answers, additional, &h, |d| {
        d.all_down_includes_drained = includes_drained;
    })
}

#[test]
fn serve_all_leaves_a_drained_target_out() {
    let (out, ex) = all_down_srv(false);
    assert_eq!(out.all_down, Some(AllDown::ServeAll));
    assert_eq!(
        show(&out.answer.answers),
        ["_sip._udp.pbx.example.org. 10 1 5060 server1.pbx.example.org."]
    );
    assert_eq!(
        show(&out.answer.additional),
        ["server1.pbx.example.org. 192.0.2.13"]
    );
    let d = decision(
        &ex,
        Section::Answer,
        "_sip._udp.pbx.example.org. 20 1 5060 server2.pbx.example.org.",
    );
    assert_eq!(d.action, Action::Withheld);
    assert!(
        d.reason.contains("drained by operator")
            && d.reason.contains("all_down_includes_drained: false"),
        "{}",
        d.reason
    );
    assert_eq!(
        decision(
            &ex,
            Section::Additional,
            "server2.pbx.example.org. 192.0.2.14"
        )
        .action,
        Action::Withheld
    );
    assert_eq!(ex.all_down, Some(AllDown::ServeAll));
}

#[test]
fn serve_all_hands_drained_targets_out_when_the_operator_says_so() {
    let (out, _) = all_down_srv(true);
    assert_eq!(out.all_down, Some(AllDown::ServeAll));
    assert_eq!(out.answer.answers.len(), 2);
    assert_eq!(out.answer.additional.len(), 2);
}

#[test]
fn serve_all_with_only_drained_targets_serves_them_rather_than_nothing() {
    let h = TestHealth::default()
        .with("192.0.2.13:5060/udp", "drained")
        .with("192.0.2.14:5060/udp", "drained");
    let answers = vec![
        srv(UDP, 10, "server1.pbx.example.org."),
        srv(UDP, 20, "server2.pbx.example.org."),
    ];
    let additional = vec![
        a("server1.pbx.example.org.", "192.0.2.13"),
        a("server2.pbx.example.org.", "192.0.2.14"),
    ];
    let (out, ex) = apply_to(UDP, RType::SRV, answers, additional, &h, |_| {});
    assert_eq!(out.answer.answers.len(), 2, "never an empty answer");
    assert_eq!(out.answer.additional.len(), 2);
    let d = decision(
        &ex,
        Section::Answer,
        "_sip._udp.pbx.example.org. 10 1 5060 server1.pbx.example.org.",
    );
    assert!(
        d.reason.contains("only drained targets left"),
        "{}",
        d.reason
    );
}

#[test]
fn serve_all_leaves_the_domains_drained_address_out() {
    let h = TestHealth::default()
        .with("192.0.2.13:5060/udp", "down")
        .with("192.0.2.14:5060/udp", "drained");
    let answers = vec![a(DOMAIN, "192.0.2.13"), a(DOMAIN, "192.0.2.14")];
    let (out, ex) = apply_to(DOMAIN, RType::A, answers.clone(), vec![], &h, |_| {});
    assert_eq!(out.all_down, Some(AllDown::ServeAll));
    assert_eq!(show(&out.answer.answers), ["pbx.example.org. 192.0.2.13"]);
    let d = decision(&ex, Section::Answer, "pbx.example.org. 192.0.2.14");
    assert_eq!(d.action, Action::Withheld);
    assert!(
        d.reason.contains("all_down_includes_drained"),
        "{}",
        d.reason
    );

    let (out, _) = apply_to(DOMAIN, RType::A, answers, vec![], &h, |d| {
        d.all_down_includes_drained = true;
    });
    assert_eq!(out.answer.answers.len(), 2);
}

#[test]
fn serve_all_leaves_a_naptr_whose_targets_are_all_drained_out() {
    // TCP servers down, the UDP server drained: under serve_all the TCP NAPTR and its set
    // are handed out, the drained UDP one is not.
    let h = TestHealth::default()
        .with("192.0.2.13:5060/tcp", "down")
        .with("192.0.2.14:5060/udp", "drained");
    let answers = vec![naptr(90, "SIP+D2T", TCP), naptr(100, "SIP+D2U", UDP)];
    let additional = vec![
        srv(TCP, 0, "server1.pbx.example.org."),
        srv(UDP, 0, "server2.pbx.example.org."),
        a("server1.pbx.example.org.", "192.0.2.13"),
        a("server2.pbx.example.org.", "192.0.2.14"),
    ];
    let (out, ex) = apply_to(
        DOMAIN,
        RType::NAPTR,
        answers.clone(),
        additional.clone(),
        &h,
        |_| {},
    );
    assert_eq!(out.all_down, Some(AllDown::ServeAll));
    assert_eq!(
        out.answer.answers.len(),
        1,
        "{:?}",
        show(&out.answer.answers)
    );
    assert!(show(&out.answer.answers)[0].contains("SIP+D2T"));
    assert_eq!(
        show(&out.answer.additional),
        [
            "_sip._tcp.pbx.example.org. 0 1 5060 server1.pbx.example.org.",
            "server1.pbx.example.org. 192.0.2.13"
        ]
    );
    let withheld: Vec<&Decision> = ex
        .decisions
        .iter()
        .filter(|d| d.section == Section::Answer && d.action == Action::Withheld)
        .collect();
    assert_eq!(withheld.len(), 1);
    assert!(
        withheld[0].reason.contains("every target drained"),
        "{}",
        withheld[0].reason
    );

    let (out, _) = apply_to(DOMAIN, RType::NAPTR, answers, additional, &h, |d| {
        d.all_down_includes_drained = true;
    });
    assert_eq!(out.answer.answers.len(), 2);
    assert_eq!(out.answer.additional.len(), 4);
}
