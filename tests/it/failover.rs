//! Health-aware answers end to end (issue #4): two real SIP UAS peers (sipp) as primary
//! and secondary behind NAPTR/SRV/A records, the real server probing them, a DNS client on
//! the wire. The primary is killed: within `fall x interval + timeout` plus one answer the
//! client sees only the secondary (and only its address as glue); the primary restarts:
//! after `rise` good probes it is handed out first again. Once with the records in `zones/`,
//! once with them coming from an upstream DNS server.

use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use hickory_proto::{op::Message, rr::RecordType};
use sipdns::{
    health::{AdminState, Health},
    record::RType,
    target::{TargetKey, Transport},
};

use crate::common::{
    client::{self, query},
    fake_upstream::{FakeUpstream, a, naptr, srv},
    process::{Peer, free_port},
    server::{self, TestServer},
    sip::sipp_uas_at,
};

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 3;
const RISE: u32 = 2;
const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
const SECONDARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);

/// `fall x interval (+10 % jitter) + timeout`, plus slack for polling on a loaded machine.
fn down_bound() -> Duration {
    INTERVAL.mul_f64(1.1) * FALL + TIMEOUT + Duration::from_millis(700)
}

fn sip_config(extra_upstream: &str) -> String {
    format!(
        "sip:\n  probe:\n    interval: 200ms\n    timeout: 150ms\n    fall: {FALL}\n    rise: {RISE}\n    startup_grace: 2s\n  domains:\n    - name: pbx.example.org\n{extra_upstream}"
    )
}

fn zone(p1: u16, p2: u16) -> String {
    format!(
        "zone: pbx.example.org\nrecords:\n\
  - {{ name: '@', type: NAPTR, order: 100, preference: 10, flags: s, service: SIP+D2U, replacement: _sip._udp }}\n\
  - {{ name: _sip._udp, type: SRV, priority: 10, weight: 1, port: {p1}, target: primary }}\n\
  - {{ name: _sip._udp, type: SRV, priority: 20, weight: 1, port: {p2}, target: secondary }}\n\
  - {{ name: primary, type: A, address: {PRIMARY} }}\n\
  - {{ name: secondary, type: A, address: {SECONDARY} }}\n"
    )
}

/// The SRV targets in answer order, and the owners of A records in ADDITIONAL.
async fn srv_view(s: &TestServer) -> (Vec<String>, Vec<String>, Message) {
    let (m, _) = client::udp(
        s.dns,
        &query("_sip._udp.pbx.example.org.", RecordType::SRV, Some(1232)),
    )
    .await;
    let targets = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::SRV(srv) => Some(srv.target.to_ascii()),
            _ => None,
        })
        .collect();
    let glue = m
        .additionals
        .iter()
        .filter(|r| r.record_type() == RecordType::A)
        .map(|r| r.name.to_ascii())
        .collect();
    (targets, glue, m)
}

const P: &str = "primary.pbx.example.org.";
const S: &str = "secondary.pbx.example.org.";

async fn wait_for(
    s: &TestServer,
    what: &str,
    bound: Duration,
    want: impl Fn(&[String]) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let (targets, _, _) = srv_view(s).await;
        if want(&targets) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < bound,
            "{what}: not seen within {bound:?}; last answer {targets:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn health_of(s: &TestServer, key: &TargetKey) -> Option<Health> {
    s.server()
        .prober
        .targets()
        .into_iter()
        .find(|t| &t.key == key)
        .map(|t| t.health)
}

async fn run_failover(
    s: &TestServer,
    dir: &std::path::Path,
    p1: u16,
    mut primary: Peer,
    secondary: &mut Peer,
) {
    let key1 = TargetKey {
        ip: PRIMARY.into(),
        port: p1,
        transport: Transport::Udp,
    };
    // Both up: the primary first (priority 10), both addresses as glue.
    wait_for(s, "both targets handed out", Duration::from_secs(5), |t| {
        t == [P, S]
    })
    .await;
    let t = Instant::now();
    while health_of(s, &key1) != Some(Health::Up) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "primary never probed up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, glue, _) = srv_view(s).await;
    assert_eq!(glue, vec![P.to_owned(), S.to_owned()]);

    // The primary dies.
    primary.kill();
    let took = wait_for(s, "failover to the secondary", down_bound(), |t| t == [S]).await;
    eprintln!(
        "failover seen by the DNS client after {took:?} (bound {:?})",
        down_bound()
    );
    let (_, glue, m) = srv_view(s).await;
    assert_eq!(glue, vec![S.to_owned()], "no glue for the dead primary");
    assert!(m.answers.iter().all(|r| r.ttl <= 30), "policy TTL cap");
    // NAPTR: its ADDITIONAL carries only the secondary too.
    let (m, _) = client::udp(
        s.dns,
        &query("pbx.example.org.", RecordType::NAPTR, Some(1232)),
    )
    .await;
    let srv_targets: Vec<String> = m
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            hickory_proto::rr::RData::SRV(srv) => Some(srv.target.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(srv_targets, vec![S.to_owned()]);
    secondary.assert_running();

    // The primary comes back: handed out first again after `rise` good probes.
    let back = Instant::now();
    let mut primary = sipp_uas_at(dir, PRIMARY, p1, Transport::Udp);
    let up_bound = INTERVAL.mul_f64(1.1) * RISE + Duration::from_millis(700);
    let took = wait_for(s, "failback to the primary", up_bound, |t| t == [P, S]).await;
    eprintln!("failback seen after {took:?} (rise {RISE} x interval {INTERVAL:?})");
    // From the restart, `rise` good probes take at least (rise - 1) intervals (the exact
    // count is checked in paused time by the state-machine tests).
    assert!(
        back.elapsed() >= INTERVAL.mul_f64(0.9) * (RISE - 1),
        "failback faster than rise={RISE} probes allow"
    );
    primary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_fail_over_and_back_with_static_records() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let primary = sipp_uas_at(dir.path(), PRIMARY, p1, Transport::Udp);
    let mut secondary = sipp_uas_at(dir.path(), SECONDARY, p2, Transport::Udp);
    let s = server::start(&sip_config(""), &[("pbx.yaml", &zone(p1, p2))]).await;
    run_failover(&s, dir.path(), p1, primary, &mut secondary).await;
    secondary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_fail_over_and_back_with_upstream_records() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let primary = sipp_uas_at(dir.path(), PRIMARY, p1, Transport::Udp);
    let mut secondary = sipp_uas_at(dir.path(), SECONDARY, p2, Transport::Udp);
    let up = FakeUpstream::start().await;
    up.answer(
        "pbx.example.org",
        RType::NAPTR,
        vec![naptr(
            "pbx.example.org",
            300,
            100,
            10,
            "SIP+D2U",
            "_sip._udp.pbx.example.org",
        )],
    );
    up.answer(
        "_sip._udp.pbx.example.org",
        RType::SRV,
        vec![
            srv("_sip._udp.pbx.example.org", 300, 10, 1, p1, P),
            srv("_sip._udp.pbx.example.org", 300, 20, 1, p2, S),
        ],
    );
    up.answer(P, RType::A, vec![a(P, 300, &PRIMARY.to_string())]);
    up.answer(S, RType::A, vec![a(S, 300, &SECONDARY.to_string())]);
    let cfg = format!(
        "{}upstream:\n  servers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n",
        sip_config(""),
        up.addr()
    );
    let s = server::start(&cfg, &[]).await;
    run_failover(&s, dir.path(), p1, primary, &mut secondary).await;
    secondary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_primary_is_handed_out_as_down_until_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let mut primary = sipp_uas_at(dir.path(), PRIMARY, p1, Transport::Udp);
    let mut secondary = sipp_uas_at(dir.path(), SECONDARY, p2, Transport::Udp);
    let s = server::start(&sip_config(""), &[("pbx.yaml", &zone(p1, p2))]).await;
    wait_for(&s, "both targets", Duration::from_secs(5), |t| t == [P, S]).await;
    let key1 = TargetKey {
        ip: PRIMARY.into(),
        port: p1,
        transport: Transport::Udp,
    };
    let t = Instant::now();
    while health_of(&s, &key1) != Some(Health::Up) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "primary never probed up"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.server()
        .prober
        .set_admin(&key1, AdminState::Drained)
        .unwrap();
    // Drained: withheld at once (the snapshot is published before set_admin returns).
    let (targets, glue, _) = srv_view(&s).await;
    assert_eq!(targets, vec![S.to_owned()]);
    assert_eq!(glue, vec![S.to_owned()]);
    // Still probed while drained.
    let info = s
        .server()
        .prober
        .targets()
        .into_iter()
        .find(|t| t.key == key1)
        .unwrap();
    assert_eq!(info.admin, AdminState::Drained);
    s.server()
        .prober
        .set_admin(&key1, AdminState::Enabled)
        .unwrap();
    let (targets, _, _) = srv_view(&s).await;
    assert_eq!(targets, vec![P.to_owned(), S.to_owned()]);
    primary.stop();
    secondary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_down_serves_all_and_explain_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let _ = dir;
    // Nothing listens on either port: both go down (ICMP port unreachable).
    let s = server::start(&sip_config(""), &[("pbx.yaml", &zone(p1, p2))]).await;
    let t = Instant::now();
    loop {
        let ex = s
            .server()
            .resolver
            .explain(&"_sip._udp.pbx.example.org".parse().unwrap(), RType::SRV)
            .await;
        if ex.all_down.is_some() {
            // serve_all (default): never an empty answer; both records handed out.
            assert_eq!(ex.after.answers.len(), 2);
            assert!(!ex.decisions.is_empty());
            break;
        }
        assert!(
            t.elapsed() < down_bound() + Duration::from_secs(1),
            "targets never went down"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let (targets, _, _) = srv_view(&s).await;
    assert_eq!(targets, vec![P.to_owned(), S.to_owned()]);
    let metrics = s.server().metrics.encode();
    assert!(
        metrics.contains("sipdns_policy_all_down_total{rule=\"serve_all\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addresses_of_srv_targets_outside_the_domain_are_filtered_too() {
    // The SIP domain's SRV records point at a provider's host with two addresses; one
    // answers SIP, the other does not. An A query for that host (not inside the SIP
    // domain) gets the domain's policy: the dead address withheld, the TTL capped.
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut live = sipp_uas_at(dir.path(), PRIMARY, port, Transport::Udp);
    let host = "sip1.provider.example.net.";
    let dead = Ipv4Addr::new(127, 0, 0, 13);
    let up = FakeUpstream::start().await;
    up.answer(
        "_sip._udp.pbx.example.org",
        RType::SRV,
        vec![srv("_sip._udp.pbx.example.org", 300, 10, 1, port, host)],
    );
    up.answer(
        host,
        RType::A,
        vec![
            a(host, 300, &PRIMARY.to_string()),
            a(host, 300, &dead.to_string()),
        ],
    );
    let cfg = format!(
        "{}upstream:\n  servers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n",
        sip_config(""),
        up.addr()
    );
    let s = server::start(&cfg, &[]).await;
    let t = Instant::now();
    loop {
        let (m, _) = client::udp(s.dns, &query(host, RecordType::A, Some(1232))).await;
        let addrs: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
        if addrs == vec![PRIMARY.to_string()] {
            assert!(m.answers.iter().all(|r| r.ttl <= 30), "TTL not capped");
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(2) + down_bound(),
            "dead address still handed out: {addrs:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    live.stop();
}
