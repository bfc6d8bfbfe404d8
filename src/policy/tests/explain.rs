//! The API shape: the policy through `dyn HealthView` and a snapshot, and the
//! explanation the REST view serializes.

use super::*;

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
