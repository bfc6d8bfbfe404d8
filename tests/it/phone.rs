//! End to end with SIP software nobody here wrote (issue 7): a real phone (baresip) whose
//! only DNS server is sipdns registers at one of two real registrars (kamailio, bindings in
//! memory) found through NAPTR -> SRV -> A for `pbx.example.org` (RFC 3263); the records
//! come from `zones/` in one variant and from an upstream DNS server in the other.
//!
//! The sequence, for a primary that **dies** (SIGKILL; the phone registers over UDP) and
//! for one that **hangs** (SIGSTOP; over TCP, whose port keeps accepting connections while
//! nothing answers SIP — the case where a phone waits longest):
//!
//! 1. The phone registers at the primary (SRV priority 10).
//! 2. Right after that REGISTER, the primary fails. sipdns marks it down within
//!    `fall x (interval + jitter + timeout)` and withholds it.
//! 3. The phone's next refresh goes straight to the secondary: on the phone's own schedule
//!    (`rwait`% of the granted expiry after the previous one), so it did not first time out
//!    on the primary (that takes Timer F, 64 x T1 = 32 s), and before the previous binding
//!    expired, so the phone was never without a registration; the CSeq moves by exactly
//!    one, so no REGISTER went anywhere else in between.
//! 4. Right after that, the primary comes back (restarted / SIGCONT). sipdns marks it up
//!    after `rise` good probes, and the phone's next refresh returns to it, on schedule.
//!
//! The times come from the registrars' logs (`REGISTER-LOG` lines written by
//! `tests/fixtures/kamailio/registrar.cfg`) and from the prober; they are printed and
//! checked against bounds derived from the probe settings and the registration interval.
//! libre (baresip's SIP stack) keeps no DNS cache, so the policy TTL does not delay this
//! phone; the bounds still leave room for a phone that caches for the full TTL.

use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use hickory_proto::rr::{RData, RecordType};
use sipdns::{
    health::Health,
    policy::Action,
    record::RType,
    target::{TargetKey, Transport},
};

use crate::common::{
    client::{self, query},
    fake_upstream::{FakeUpstream, a, naptr, srv},
    process::{Peer, free_port},
    server::{self, TestServer, wait_health},
    sip::{PhoneConfig, Register, Registrar, all_registers, baresip, unix_now, wait_register},
};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);
const SECONDARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 22);
const DOMAIN: &str = "pbx.example.org";
const AOR: &str = "sip:user@pbx.example.org";

/// `sip.probe` settings.
const INTERVAL: Duration = Duration::from_millis(500);
const TIMEOUT: Duration = Duration::from_millis(400);
const FALL: u32 = 3;
const RISE: u32 = 2;
/// The prober spreads probes by up to +10 % of the interval.
const JITTER: f64 = 1.1;
/// The domain's policy TTL (seconds): how long a phone that caches DNS may keep an answer.
const POLICY_TTL: u32 = 3;
/// The phone asks for this expiry (seconds) and refreshes after `RWAIT` % of it.
const REGINT: u32 = 10;
const RWAIT: u32 = 80;
/// Scheduling slack for a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(700);
/// How far a refresh may stray from the phone's schedule. A REGISTER that first timed out
/// on a dead server is at least Timer F (64 x T1 = 32 s) late.
const ON_SCHEDULE: Duration = Duration::from_secs(1);

/// How the primary fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// SIGKILL: gone (UDP: ICMP port unreachable); restarted afterwards.
    Dies,
    /// SIGSTOP: hung with its TCP port still accepting; SIGCONT afterwards.
    Hangs,
}

impl Fault {
    /// The transport the phone uses: a hang matters most over TCP, where the phone's
    /// connection succeeds and then nothing answers.
    fn transport(self) -> Transport {
        match self {
            Self::Dies => Transport::Udp,
            Self::Hangs => Transport::Tcp,
        }
    }
}

/// Where sipdns finds the domain's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Zones,
    Upstream,
}

/// The refresh interval: `RWAIT` % of the expiry.
fn refresh() -> Duration {
    Duration::from_secs(u64::from(REGINT)) * RWAIT / 100
}

/// A probe starts at most `interval x 1.1` after the previous one and is judged at most
/// `timeout` after it starts; `fall` bad ones mark the target down.
fn down_bound() -> Duration {
    (INTERVAL.mul_f64(JITTER) + TIMEOUT) * FALL + SLACK
}

/// `rise` good probes mark it up again.
fn up_bound() -> Duration {
    (INTERVAL.mul_f64(JITTER) + TIMEOUT) * RISE + SLACK
}

fn srv_name(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "_sip._udp",
        _ => "_sip._tcp",
    }
}

fn naptr_service(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "SIP+D2U",
        _ => "SIP+D2T",
    }
}

fn sip_config() -> String {
    format!(
        "sip:\n  probe:\n    interval: {}ms\n    timeout: {}ms\n    fall: {FALL}\n    rise: {RISE}\n    startup_grace: 3s\n  domains:\n    - name: {DOMAIN}\n      ttl: {POLICY_TTL}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

/// One NAPTR (the fault's transport), two SRV records (primary first), two A records.
fn zone(t: Transport, p1: u16, p2: u16) -> String {
    let (service, srv) = (naptr_service(t), srv_name(t));
    format!(
        "zone: {DOMAIN}\nrecords:\n\
  - {{ name: '@', type: NAPTR, order: 100, preference: 10, flags: s, service: {service}, replacement: {srv} }}\n\
  - {{ name: {srv}, type: SRV, priority: 10, weight: 1, port: {p1}, target: primary }}\n\
  - {{ name: {srv}, type: SRV, priority: 20, weight: 1, port: {p2}, target: secondary }}\n\
  - {{ name: primary, type: A, address: {PRIMARY} }}\n\
  - {{ name: secondary, type: A, address: {SECONDARY} }}\n"
    )
}

/// The same records, served by an upstream DNS server.
async fn upstream(t: Transport, p1: u16, p2: u16) -> FakeUpstream {
    let up = FakeUpstream::start().await;
    let srv_owner = format!("{}.{DOMAIN}", srv_name(t));
    let (h1, h2) = (format!("primary.{DOMAIN}"), format!("secondary.{DOMAIN}"));
    up.answer(
        DOMAIN,
        RType::NAPTR,
        vec![naptr(DOMAIN, 300, 100, 10, naptr_service(t), &srv_owner)],
    );
    up.answer(
        &srv_owner,
        RType::SRV,
        vec![
            srv(&srv_owner, 300, 10, 1, p1, &h1),
            srv(&srv_owner, 300, 20, 1, p2, &h2),
        ],
    );
    up.answer(&h1, RType::A, vec![a(&h1, 300, &PRIMARY.to_string())]);
    up.answer(&h2, RType::A, vec![a(&h2, 300, &SECONDARY.to_string())]);
    up
}

/// Checks that `next` followed `prev` as a refresh on the phone's own schedule.
fn assert_refresh(prev: &Register, next: &Register, registrar: &str, what: &str) {
    assert_eq!(next.registrar, registrar, "{what}: {next:?}");
    assert_eq!(next.call_id, prev.call_id, "{what}: same registration");
    assert_eq!(
        next.cseq,
        prev.cseq + 1,
        "{what}: a REGISTER went somewhere else in between: {prev:?} -> {next:?}"
    );
    let due = prev.at + refresh().as_secs_f64();
    let late = next.at - due;
    assert!(
        late.abs() <= ON_SCHEDULE.as_secs_f64(),
        "{what}: REGISTER {late:+.3} s off the phone's schedule (due {due:.3}, at {:.3}); \
         a first attempt that timed out on the failed server would make it >= 32 s late",
        next.at
    );
    assert!(
        next.at < prev.expires_at,
        "{what}: the previous binding expired at {:.3} before this REGISTER at {:.3}: \
         the phone was registered nowhere",
        prev.expires_at,
        next.at
    );
}

/// The answer the phone's first query gets: the NAPTR, and in ADDITIONAL the SRV records
/// (primary first) and both addresses, every TTL capped at the policy TTL.
async fn check_naptr_answer(s: &TestServer, t: Transport) {
    let (m, _) = client::udp(
        s.dns,
        &query(&format!("{DOMAIN}."), RecordType::NAPTR, None),
    )
    .await;
    let services: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::NAPTR(n) => Some(String::from_utf8_lossy(&n.services).into_owned()),
            _ => None,
        })
        .collect();
    assert_eq!(services, vec![naptr_service(t).to_owned()]);
    let srv_targets: Vec<String> = m
        .additionals
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(v) => Some(v.target.to_ascii()),
            _ => None,
        })
        .collect();
    assert_eq!(
        srv_targets,
        vec![format!("primary.{DOMAIN}."), format!("secondary.{DOMAIN}.")]
    );
    assert!(
        m.answers
            .iter()
            .chain(&m.additionals)
            .all(|r| r.ttl <= POLICY_TTL),
        "policy TTL cap: {m:?}"
    );
}

async fn run(source: Source, fault: Fault) {
    let t = fault.transport();
    // The bounds must fit the phone's refresh interval, with room for a phone that caches
    // DNS answers for the whole policy TTL.
    let ttl = Duration::from_secs(u64::from(POLICY_TTL));
    assert!(down_bound() + ttl < refresh() && up_bound() + ttl < refresh());

    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (mut primary, mut secondary) = tokio::task::block_in_place(|| {
        (
            Registrar::start(dir.path(), "primary", PRIMARY, p1),
            Registrar::start(dir.path(), "secondary", SECONDARY, p2),
        )
    });
    // The upstream server (upstream variant) lives as long as the test.
    let mut _upstream = None;
    let s = match source {
        Source::Zones => {
            server::start(&sip_config(), &[("pbx.example.org.yaml", &zone(t, p1, p2))]).await
        }
        Source::Upstream => {
            let up = upstream(t, p1, p2).await;
            let cfg = format!(
                "{}upstream:\n  servers: [\"{}\"]\n  timeout: 300ms\n  attempts: 1\n",
                sip_config(),
                up.addr()
            );
            _upstream = Some(up);
            server::start(&cfg, &[]).await
        }
    };
    let key = |ip: Ipv4Addr, port| TargetKey {
        ip: ip.into(),
        port,
        transport: t,
    };
    let (k1, k2) = (key(PRIMARY, p1), key(SECONDARY, p2));
    let mut ready = s.server().prober.ready();
    tokio::time::timeout(Duration::from_secs(10), ready.wait_for(|r| *r))
        .await
        .expect("sipdns not ready within 10 s")
        .unwrap();
    wait_health(&s, &k1, Health::Up, Duration::from_secs(10)).await;
    wait_health(&s, &k2, Health::Up, Duration::from_secs(10)).await;
    check_naptr_answer(&s, t).await;

    let mut phone = baresip(
        dir.path(),
        &PhoneConfig {
            aor: AOR,
            dns: s.dns,
            regint: REGINT,
            rwait: RWAIT,
        },
    );
    // 1. Registered at the primary.
    let first = wait_register(
        [&primary, &secondary],
        &mut phone,
        0,
        "first registration",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(first.registrar, "primary", "{first:?}");
    assert_eq!(first.proto, t.to_string(), "{first:?}");
    let granted = first.expires_at - first.at;
    // The registrar logs the expiry in whole seconds and the arrival with fractions, so
    // the difference can fall just under REGINT - 1.
    assert!(
        (f64::from(REGINT) - 2.0..=f64::from(REGINT) + 1.0).contains(&granted),
        "registrar granted {granted} s, the phone asked for {REGINT} s"
    );

    // 2. The primary fails right after it.
    let pid = primary.pid();
    let fault_at = unix_now();
    tokio::task::block_in_place(|| match fault {
        Fault::Dies => primary.kill(),
        Fault::Hangs => primary.pause(),
    });
    assert!(
        fault_at - first.at < 1.0,
        "the fault must come right after the REGISTER ({:.3} s)",
        fault_at - first.at
    );
    let detected = wait_health(&s, &k1, Health::Down, down_bound()).await;
    let ex = s
        .server()
        .resolver
        .explain(
            &format!("{}.{DOMAIN}", srv_name(t)).parse().unwrap(),
            RType::SRV,
        )
        .await;
    let withheld: Vec<String> = ex
        .decisions
        .iter()
        .filter(|d| d.action == Action::Withheld)
        .map(|d| format!("{} ({})", d.record, d.reason))
        .collect();
    assert!(
        withheld.iter().any(|w| w.contains("primary")),
        "explain: the primary's SRV record is not withheld: {:#?}",
        ex.decisions
    );
    let metrics = s.server().metrics.encode();
    assert!(
        metrics.contains(&format!(
            "sipdns_domain_targets_up{{domain=\"{DOMAIN}\"}} 1"
        )),
        "one target of the domain left up:\n{metrics}"
    );

    // 3. The next refresh goes straight to the secondary.
    let failover = wait_register(
        [&primary, &secondary],
        &mut phone,
        1,
        "failover",
        refresh() + ON_SCHEDULE * 2,
    )
    .await;
    assert_refresh(&first, &failover, "secondary", "failover");
    assert!(failover.at > fault_at, "{failover:?}");

    // 4. The primary comes back right after it; the next refresh returns to it.
    let back_at = unix_now();
    // Restarting waits until kamailio answers OPTIONS: off the runtime's worker threads.
    tokio::task::block_in_place(|| match fault {
        Fault::Dies => primary.restart(),
        Fault::Hangs => primary.resume(),
    });
    let answering_at = unix_now();
    let recovered = wait_health(&s, &k1, Health::Up, up_bound()).await;
    let failback = wait_register(
        [&primary, &secondary],
        &mut phone,
        2,
        "failback",
        refresh() + ON_SCHEDULE * 2,
    )
    .await;
    assert_refresh(&failover, &failback, "primary", "failback");
    assert!(failback.at > back_at, "{failback:?}");

    // Nothing else reached either registrar (a REGISTER queued at the hung primary would
    // show up after SIGCONT), and the phone logged no failure.
    let all = all_registers([&primary, &secondary]);
    assert_eq!(all.len(), 3, "exactly three REGISTERs: {all:#?}");
    let phone_log = phone.log();
    assert!(
        !phone_log.to_ascii_lowercase().contains("fail"),
        "the phone reported a failure:\n{phone_log}"
    );
    assert!(
        all.iter().all(|r| r.src.starts_with("127.0.0.1:")),
        "{all:#?}"
    );

    // The phone asked sipdns every time: one NAPTR query per REGISTER (libre keeps no
    // cache), besides the test's own.
    let naptr_queries: f64 = s
        .server()
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sipdns_dns_queries_total{") && l.contains("qtype=\"NAPTR\""))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert!(
        naptr_queries >= 4.0,
        "NAPTR queries seen by sipdns: {naptr_queries}"
    );

    // The report.
    let rel = |at: f64| at - first.at;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "phone e2e: records from {source:?}, primary {fault:?} (pid {}), phone over {t}; \
         probe interval {INTERVAL:?} timeout {TIMEOUT:?} fall {FALL} rise {RISE}, policy TTL {POLICY_TTL} s, \
         regint {REGINT} s, refresh every {:?}",
        pid.unwrap_or(0),
        refresh()
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  REGISTER at primary    cseq {}  binding expires {:+.3}",
        0.0,
        first.cseq,
        rel(first.expires_at)
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  primary {}",
        rel(fault_at),
        if fault == Fault::Dies {
            "killed (SIGKILL)"
        } else {
            "hung (SIGSTOP)"
        }
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  sipdns: primary down, withheld ({detected:.3?} after the fault; bound {:.3?})",
        rel(fault_at) + detected.as_secs_f64(),
        down_bound()
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  REGISTER at secondary  cseq {}  ({:+.3} s off schedule, {:.3} s before the primary binding would have expired)",
        rel(failover.at),
        failover.cseq,
        failover.at - first.at - refresh().as_secs_f64(),
        first.expires_at - failover.at
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  primary {}",
        rel(back_at),
        if fault == Fault::Dies {
            "restarted"
        } else {
            "resumed (SIGCONT)"
        }
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  sipdns: primary up ({recovered:.3?} after it answered again; bound {:.3?})",
        rel(answering_at) + recovered.as_secs_f64(),
        up_bound()
    );
    let _ = writeln!(
        out,
        "  {:+8.3} s  REGISTER at primary    cseq {}  ({:+.3} s off schedule, {:.3} s before the secondary binding would have expired)",
        rel(failback.at),
        failback.cseq,
        failback.at - failover.at - refresh().as_secs_f64(),
        failover.expires_at - failback.at
    );
    eprint!("{out}");

    phone.stop();
    primary.stop();
    secondary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_fails_over_and_back_when_the_primary_dies_records_in_zones() {
    run(Source::Zones, Fault::Dies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_fails_over_and_back_when_the_primary_dies_records_upstream() {
    run(Source::Upstream, Fault::Dies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_fails_over_and_back_when_the_primary_hangs_records_in_zones() {
    run(Source::Zones, Fault::Hangs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_fails_over_and_back_when_the_primary_hangs_records_upstream() {
    run(Source::Upstream, Fault::Hangs).await;
}

/// The control: the same phone, registrars and records, but `pbx.example.org` is not a
/// managed SIP domain, so sipdns hands out the dead primary like any DNS server would.
/// The phone's refresh goes to the dead primary, waits out Timer F (64 x T1 = 32 s), and
/// only then tries the secondary: its registration lapses. This is what the tests above
/// rule out, and shows they would see it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phone_without_the_health_policy_times_out_on_the_dead_primary() {
    let t = Transport::Udp;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (mut primary, mut secondary) = tokio::task::block_in_place(|| {
        (
            Registrar::start(dir.path(), "primary", PRIMARY, p1),
            Registrar::start(dir.path(), "secondary", SECONDARY, p2),
        )
    });
    let s = server::start("", &[("pbx.example.org.yaml", &zone(t, p1, p2))]).await;
    let mut phone = baresip(
        dir.path(),
        &PhoneConfig {
            aor: AOR,
            dns: s.dns,
            regint: REGINT,
            rwait: RWAIT,
        },
    );
    let regs = [&primary, &secondary];
    let first = wait_register(regs, &mut phone, 0, "first", Duration::from_secs(10)).await;
    assert_eq!(first.registrar, "primary");
    tokio::task::block_in_place(|| primary.kill());
    // Timer F for the attempt at the dead primary, then the secondary.
    let timer_f = Duration::from_secs(32);
    let next = wait_register(
        [&primary, &secondary],
        &mut phone,
        1,
        "failover without the policy",
        refresh() + timer_f + Duration::from_secs(5),
    )
    .await;
    assert_eq!(next.registrar, "secondary");
    let late = next.at - first.at - refresh().as_secs_f64();
    let lapse = next.at - first.expires_at;
    eprintln!(
        "phone e2e control (no health policy, primary killed): REGISTER at the secondary \
         {:+.3} s after the first, {late:.3} s late; registered nowhere for {lapse:.3} s",
        next.at - first.at
    );
    assert!(
        late >= timer_f.as_secs_f64() - 1.0,
        "expected the phone to wait out Timer F: {late:.3} s late"
    );
    assert!(lapse > 0.0, "the registration should have lapsed");
    phone.stop();
    secondary.stop();
}

/// The policy follows the operator's intent (issue 15, point 3), on the wire: with
/// `on_down: demote` the domain's own down address (what a phone with an explicit port
/// asks for) is moved after the up one instead of withheld; under `all_down: serve_all` a
/// drained address stays out. A sipp UAS answers at one address, nothing at the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_moves_down_addresses_and_serve_all_leaves_drained_ones_out() {
    use sipdns::health::AdminState;
    const LIVE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 31);
    const DEAD: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 32);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut uas = crate::common::sip::sipp_uas_at(dir.path(), LIVE, port, Transport::Udp);
    let cfg = format!(
        "sip:\n  probe:\n    interval: 200ms\n    timeout: 150ms\n    fall: 3\n    rise: 2\n    startup_grace: 2s\n  domains:\n    - name: {DOMAIN}\n      on_down: demote\n      a_port: {port}\n"
    );
    // The dead address first, as the zone lists it.
    let zone = format!(
        "zone: {DOMAIN}\nrecords:\n  - {{ name: '@', type: A, address: {DEAD} }}\n  - {{ name: '@', type: A, address: {LIVE} }}\n"
    );
    let s = server::start(&cfg, &[("pbx.example.org.yaml", &zone)]).await;
    let key = |ip: Ipv4Addr| TargetKey {
        ip: ip.into(),
        port,
        transport: Transport::Udp,
    };
    wait_health(&s, &key(DEAD), Health::Down, Duration::from_secs(5)).await;
    wait_health(&s, &key(LIVE), Health::Up, Duration::from_secs(5)).await;
    let addresses = || async {
        let (m, _) = client::udp(s.dns, &query(&format!("{DOMAIN}."), RecordType::A, None)).await;
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0),
                _ => None,
            })
            .collect::<Vec<Ipv4Addr>>()
    };
    // Demote: both handed out, the live one first.
    assert_eq!(addresses().await, vec![LIVE, DEAD]);
    let domain_name = DOMAIN.parse().unwrap();
    let ex = s.server().resolver.explain(&domain_name, RType::A).await;
    let moved = ex
        .decisions
        .iter()
        .find(|d| d.record.data.ip() == Some(DEAD.into()))
        .expect("a decision about the dead address");
    assert_eq!(moved.action, Action::Moved, "{:#?}", ex.decisions);
    assert!(moved.reason.contains("demoted"), "{}", moved.reason);

    // Drain the live one: every address unusable, serve_all, the drained one stays out.
    s.server()
        .prober
        .set_admin(&key(LIVE), AdminState::Drained)
        .unwrap();
    assert_eq!(addresses().await, vec![DEAD]);
    let ex = s.server().resolver.explain(&domain_name, RType::A).await;
    assert_eq!(ex.all_down, Some(sipdns::config::AllDown::ServeAll));
    let drained = ex
        .decisions
        .iter()
        .find(|d| d.record.data.ip() == Some(LIVE.into()))
        .expect("a decision about the drained address");
    assert_eq!(drained.action, Action::Withheld, "{:#?}", ex.decisions);
    assert!(
        drained.reason.contains("all_down_includes_drained"),
        "{}",
        drained.reason
    );
    uas.stop();
}

/// `sipdns phones yealink` (issue 15, point 5): the provisioning block parsed back and
/// checked against the zone and the phone's limits (seeds: at most 12 entries of each
/// static cache type, TTL 30..2147483647). The zone has more than the phone takes: 14 SRV
/// targets behind the TCP NAPTR (one address each) and 3 behind the UDP one.
#[test]
fn yealink_provisioning_mirrors_the_zone_within_the_phones_limits() {
    use std::collections::BTreeMap;
    const TARGETS: u16 = 14;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    // (priority, target, address) of the TCP set; the UDP set uses the first 3 targets.
    let tcp: Vec<(u16, String, String)> = (1..=TARGETS)
        .map(|i| (i * 10, format!("s{i}.{DOMAIN}"), format!("192.0.2.{i}")))
        .collect();
    let mut zone = format!(
        "zone: {DOMAIN}\nttl: 3600\nrecords:\n\
  - {{ name: '@', type: NAPTR, order: 90, preference: 50, flags: s, service: SIP+D2T, replacement: _sip._tcp }}\n\
  - {{ name: '@', type: NAPTR, order: 100, preference: 50, flags: s, service: SIP+D2U, replacement: _sip._udp }}\n"
    );
    // Listed in reverse priority order: the command must sort them.
    for (p, t, ip) in tcp.iter().rev() {
        zone.push_str(&format!(
            "- {{ name: _sip._tcp, type: SRV, priority: {p}, weight: 1, port: 5060, target: '{t}.' }}\n- {{ name: '{t}.', type: A, address: {ip} }}\n"
        ));
    }
    for (p, t, _) in tcp.iter().take(3) {
        zone.push_str(&format!(
            "- {{ name: _sip._udp, type: SRV, priority: {p}, weight: 2, port: 5062, target: '{t}.' }}\n"
        ));
    }
    std::fs::write(dir.path().join("zones/pbx.example.org.yaml"), &zone).unwrap();
    let cfg = dir.path().join("sipdns.yaml");
    std::fs::write(
        &cfg,
        format!(
            "upstream:\n  servers: [\"127.0.0.1:9\"]\nsip:\n  domains:\n    - name: {DOMAIN}\n"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args([
            "phones",
            "yealink",
            "--domain",
            DOMAIN,
            "--account",
            "2",
            "-c",
        ])
        .arg(&cfg)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Parse it back: `key = value` lines, `#` comments.
    let mut kv: BTreeMap<String, String> = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line
            .split_once(" = ")
            .unwrap_or_else(|| panic!("not `key = value`: {line:?}"));
        assert!(kv.insert(k.to_owned(), v.to_owned()).is_none(), "{k} twice");
    }
    let get = |k: &str| kv.get(k).map(String::as_str);
    assert_eq!(get("account.2.sip_server.1.address"), Some(DOMAIN));
    assert_eq!(get("account.2.sip_server.1.port"), Some("0"));
    assert_eq!(get("account.2.sip_server.1.transport_type"), Some("3"));
    assert_eq!(get("account.2.sip_server.1.failback_mode"), Some("1"));
    let fb: u32 = get("account.2.sip_server.1.failback_timeout")
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        fb == 0 || (60..=65535).contains(&fb),
        "failback_timeout {fb}"
    );
    assert_eq!(get("account.2.dns_cache_type"), Some("1"));

    // Entries of one type: X = 1..n contiguous, n <= 12, each with exactly these fields.
    let entries = |kind: &str, fields: &[&str]| -> Vec<BTreeMap<String, String>> {
        let mut list = Vec::new();
        for x in 1.. {
            let prefix = format!("dns_cache_{kind}.{x}.");
            let e: BTreeMap<String, String> = kv
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_owned(), v.clone())))
                .collect();
            if e.is_empty() {
                break;
            }
            let mut names: Vec<&str> = e.keys().map(String::as_str).collect();
            names.sort_unstable();
            let mut want = fields.to_vec();
            want.sort_unstable();
            assert_eq!(names, want, "dns_cache_{kind}.{x}");
            let ttl: u64 = e["ttl"].parse().unwrap();
            assert!((30..=2_147_483_647).contains(&ttl), "{kind}.{x} ttl {ttl}");
            list.push(e);
        }
        assert!(list.len() <= 12, "{kind}: {} entries", list.len());
        let stray = kv
            .keys()
            .filter(|k| k.starts_with(&format!("dns_cache_{kind}.")))
            .count();
        assert_eq!(
            stray,
            list.len() * fields.len(),
            "{kind}: entries past a gap"
        );
        list
    };
    let naptr = entries(
        "naptr",
        &[
            "name",
            "flags",
            "order",
            "preference",
            "replace",
            "service",
            "ttl",
        ],
    );
    let srv = entries(
        "srv",
        &["name", "port", "priority", "target", "weight", "ttl"],
    );
    let a = entries("a", &["name", "ip", "ttl"]);

    // Against the zone: every entry is a record sipdns serves.
    for e in &a {
        let i: u16 = e["ip"].strip_prefix("192.0.2.").unwrap().parse().unwrap();
        assert_eq!(e["name"], format!("s{i}.{DOMAIN}"), "{e:?}");
    }
    for e in &srv {
        let t = &e["target"];
        let i: u16 = t
            .strip_prefix('s')
            .unwrap()
            .split('.')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let (owner, port, weight) = if e["name"] == format!("_sip._tcp.{DOMAIN}") {
            ("tcp", "5060", "1")
        } else {
            assert!(i <= 3, "{e:?}");
            ("udp", "5062", "2")
        };
        assert_eq!(e["name"], format!("_sip._{owner}.{DOMAIN}"));
        assert_eq!(
            (
                e["port"].as_str(),
                e["weight"].as_str(),
                e["priority"].clone()
            ),
            (port, weight, (i * 10).to_string()),
            "{e:?}"
        );
        // The chain is whole: the target has an address in the cache.
        assert!(
            a.iter().any(|x| &x["name"] == t),
            "SRV {e:?} without an A entry"
        );
    }
    for e in &naptr {
        assert!(
            srv.iter().any(|s| s["name"] == e["replace"]),
            "NAPTR {e:?} without an SRV entry"
        );
        assert_eq!(e["name"], DOMAIN);
        assert_eq!(e["flags"], "S");
    }
    // The trimming kept the best: the 12 best-priority TCP targets, in priority order;
    // the UDP records did not fit, so neither did their NAPTR.
    assert_eq!(a.len(), 12);
    assert_eq!(srv.len(), 12);
    let prios: Vec<u16> = srv.iter().map(|e| e["priority"].parse().unwrap()).collect();
    assert_eq!(prios, (1..=12).map(|i| i * 10).collect::<Vec<u16>>());
    assert_eq!(naptr.len(), 1);
    assert_eq!(naptr[0]["service"], "SIP+D2T");
    assert_eq!(naptr[0]["order"], "90");
    // And said why in comments.
    assert!(text.contains("14 A records, the phone takes 12"), "{text}");
    assert!(text.contains("SRV entries"), "{text}");
    assert!(text.contains("NAPTR -> _sip._udp"), "{text}");

    // The linphone snippet: the domain by SRV, failback switched on.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["phones", "linphone", "--domain", DOMAIN, "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(out.status.success());
    let rc = String::from_utf8(out.stdout).unwrap();
    let sip = rc
        .split("[sip]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    assert!(
        sip.lines().any(|l| l == "reconnect_to_primary_asap=1"),
        "{rc}"
    );
    assert!(
        rc.contains(&format!("reg_proxy=<sip:{DOMAIN};transport=tcp>")),
        "{rc}"
    );

    // A domain sipdns does not manage is an error naming it.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["phones", "yealink", "--domain", "other.example.org", "-c"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("other.example.org"));
}

/// A call from baresip a few seconds after the primary died (issue 15, point 4): the phone
/// resolves NAPTR -> SRV -> A for the INVITE, sipdns (default policy, probes shortened) no
/// longer lists the dead primary, and the INVITE reaches the secondary (kamailio answers
/// 486) without first timing out on the primary (Timer B, 32 s). A UDP socket takes the
/// killed primary's place and counts what the caller sends there. The caller is a baresip
/// with the `menu` module (for `/dial`) and G.711 (for an SDP offer), started at dial time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_call_reaches_a_live_server_a_few_seconds_after_the_primary_died() {
    use std::{net::UdpSocket, process::Command};

    use crate::common::process::require;
    let t = Transport::Udp;
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (mut primary, mut secondary) = tokio::task::block_in_place(|| {
        (
            Registrar::start(dir.path(), "primary", PRIMARY, p1),
            Registrar::start(dir.path(), "secondary", SECONDARY, p2),
        )
    });
    // The domain at its default policy; only the probes are faster.
    let cfg = format!(
        "sip:\n  probe:\n    interval: {}ms\n    timeout: {}ms\n    fall: {FALL}\n    rise: {RISE}\n    startup_grace: 3s\n  domains:\n    - name: {DOMAIN}\n",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    );
    let s = server::start(&cfg, &[("pbx.example.org.yaml", &zone(t, p1, p2))]).await;
    let key = |ip: Ipv4Addr, port| TargetKey {
        ip: ip.into(),
        port,
        transport: t,
    };
    let (k1, k2) = (key(PRIMARY, p1), key(SECONDARY, p2));
    wait_health(&s, &k1, Health::Up, Duration::from_secs(10)).await;
    wait_health(&s, &k2, Health::Up, Duration::from_secs(10)).await;

    let fault_at = unix_now();
    let caller_port = free_port();
    let stand_in = tokio::task::block_in_place(|| {
        primary.kill();
        // Its worker processes free the port a moment after the leader is reaped.
        let end = Instant::now() + Duration::from_secs(2);
        loop {
            match UdpSocket::bind((PRIMARY, p1)) {
                Ok(sock) => break sock,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("cannot take the dead primary's place: {e}"),
            }
        }
    });
    wait_health(&s, &k1, Health::Down, down_bound()).await;
    // A few seconds after the fault.
    let wait = (fault_at + 3.0 - unix_now()).max(0.0);
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;

    let modules = [
        "/usr/lib/baresip/modules",
        "/usr/lib/x86_64-linux-gnu/baresip/modules",
        "/usr/lib/aarch64-linux-gnu/baresip/modules",
        "/usr/local/lib/baresip/modules",
    ]
    .into_iter()
    .find(|d| std::path::Path::new(d).join("menu.so").is_file())
    .expect("baresip modules (menu.so) not found (apt-get install -y baresip-core)");
    let home = dir.path().join("caller");
    std::fs::create_dir_all(&home).unwrap();
    std::fs::write(
        home.join("config"),
        format!(
            "poll_method epoll\nmodule_path {modules}\nnet_interface 127.0.0.1\n\
             sip_listen 127.0.0.1:{caller_port}\ndns_server {}\n\
             module g711.so\nmodule menu.so\nmodule_tmp account.so\n",
            s.dns
        ),
    )
    .unwrap();
    // Not registered (regint=0): the call alone.
    std::fs::write(
        home.join("accounts"),
        format!("<sip:caller@{DOMAIN}>;regint=0\n"),
    )
    .unwrap();
    std::fs::write(home.join("contacts"), "").unwrap();
    let mut cmd = Command::new(require("baresip", "baresip-core"));
    cmd.current_dir(&home)
        .arg("-f")
        .arg(&home)
        .arg("-e")
        .arg(format!("/dial sip:bob@{DOMAIN}"));
    let dial_at = unix_now();
    let mut caller = Peer::spawn("baresip caller", cmd, home.join("caller.log"));
    let t0 = Instant::now();
    let invite_at = loop {
        let at = secondary.log().lines().find_map(|l| {
            let rest = l.split_once("INVITE-LOG ")?.1;
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix("at="))?
                .parse::<f64>()
                .ok()
        });
        if let Some(at) = at {
            break at;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no INVITE at the secondary within 10 s\ncaller:\n{}",
            caller.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // What reached the dead primary's address from the caller (bounded drain).
    let to_dead = tokio::task::block_in_place(|| {
        stand_in
            .set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 65_535];
        let mut n = 0;
        for _ in 0..1000 {
            match stand_in.recv_from(&mut buf) {
                Ok((_, peer)) if peer.port() == caller_port => n += 1,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        n
    });
    let setup = invite_at - dial_at;
    eprintln!(
        "phone e2e call (baresip, default policy TTL): dialled {:.3} s after the primary was \
         killed; dial (process start) -> INVITE at the secondary {setup:.3} s; {to_dead} \
         packets to the dead primary",
        dial_at - fault_at
    );
    assert_eq!(to_dead, 0, "the INVITE went to the dead primary first");
    assert!(
        setup < 2.0,
        "call setup {setup:.3} s\ncaller:\n{}",
        caller.log()
    );
    caller.stop();
    secondary.stop();
}
