//! Ordering within a priority: `weighted` (RFC 2782) and `fixed`.

use super::*;

/// Over `draws` orderings, how often each weight's record came first.
fn first_shares(weights: &[u16], draws: u32, seed: u64) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut firsts = vec![0u32; weights.len()];
    for _ in 0..draws {
        let items: Vec<usize> = (0..weights.len()).collect();
        let order = crate::policy::srv::weighted_order(items, |i| weights[*i], &mut rng);
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
        let mut order =
            crate::policy::srv::weighted_order(vec![1, 2, 3, 4], |i| (*i as u16) * 3, &mut rng);
        order.sort_unstable();
        assert_eq!(order, vec![1, 2, 3, 4]);
    }
    assert_eq!(
        crate::policy::srv::weighted_order(vec![7], |_| 0, &mut rng),
        vec![7]
    );
    assert!(crate::policy::srv::weighted_order(Vec::<u8>::new(), |_| 0, &mut rng).is_empty());
}

#[test]
fn weighted_second_place_follows_remaining_weights() {
    // Selection without replacement: given 70 went first, 20 is second 2/3 of the time.
    let weights = [10u16, 20, 70];
    let mut rng = StdRng::seed_from_u64(99);
    let (mut after70, mut twenty_second) = (0u32, 0u32);
    for _ in 0..20_000 {
        let order =
            crate::policy::srv::weighted_order(vec![0usize, 1, 2], |i| weights[*i], &mut rng);
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
