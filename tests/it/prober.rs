//! The SIP OPTIONS prober against real SIP peers on loopback: sipp as a UAS over UDP and
//! TCP, kamailio over UDP, TCP and TLS (with a test CA made at test time).
//!
//! Timing: interval 200 ms, timeout 150 ms, fall 3, rise 2. A killed peer must be down
//! within `fall x interval (+10 % jitter) + timeout` plus a little slack for polling and a
//! loaded CI machine; a restarted one up after `rise` good probes. All waits are bounded
//! polls, never bare sleeps.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sipdns::{
    config::{ExtraTargetConfig, ProbeConfig, SipConfig, SipDomainConfig},
    health::{Health, HealthView as _, Lookup},
    record::{Answer, DomainName, RType, Rcode, Rec, RecordData, Source},
    target::{TargetKey, Transport},
};

use crate::common::{
    prober::{Running, start},
    process::{Peer, free_port},
    sip::{kamailio, sipp_uas, test_ca},
};

const INTERVAL: Duration = Duration::from_millis(200);
const TIMEOUT: Duration = Duration::from_millis(150);
const FALL: u32 = 3;
const RISE: u32 = 2;
/// Polling and scheduling slack on a shared 2-core machine.
const SLACK: Duration = Duration::from_millis(300);

fn down_bound() -> Duration {
    INTERVAL.mul_f64(1.1) * FALL + TIMEOUT + SLACK
}

fn n(s: &str) -> DomainName {
    DomainName::parse(s).unwrap()
}

/// A lookup answering from a map (the lead's resolver plays this part in the app).
#[derive(Default)]
struct MapLookup(Mutex<HashMap<(DomainName, RType), Vec<Rec>>>);

impl MapLookup {
    fn add(&self, name: &str, ttl: u32, data: RecordData) {
        let rec = Rec::new(n(name), ttl, data);
        self.0
            .lock()
            .unwrap()
            .entry((rec.name.clone(), rec.rtype()))
            .or_default()
            .push(rec);
    }
}

impl Lookup for MapLookup {
    fn lookup<'a>(&'a self, name: &'a DomainName, rtype: RType) -> BoxFuture<'a, Answer> {
        let recs = self.0.lock().unwrap().get(&(name.clone(), rtype)).cloned();
        Box::pin(async move {
            match recs {
                Some(r) => Answer::records(r, Source::Static),
                None => Answer::empty(Rcode::NxDomain, Source::Static),
            }
        })
    }
}

fn probe_cfg() -> ProbeConfig {
    ProbeConfig {
        interval: INTERVAL,
        timeout: TIMEOUT,
        fall: FALL,
        rise: RISE,
        ..ProbeConfig::default()
    }
}

fn extra(key: TargetKey, host: &str) -> ExtraTargetConfig {
    ExtraTargetConfig {
        address: key.ip,
        port: key.port,
        transport: key.transport,
        host: Some(n(host)),
    }
}

fn key(port: u16, transport: Transport) -> TargetKey {
    TargetKey {
        ip: IpAddr::from([127, 0, 0, 1]),
        port,
        transport,
    }
}

fn domain_with(targets: Vec<ExtraTargetConfig>, probe: ProbeConfig) -> SipConfig {
    let mut d = SipDomainConfig::new(n("pbx.example.org"));
    d.targets = targets;
    SipConfig {
        probe,
        domains: vec![d],
    }
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Kill the peer: every key down within the bound. Restart it: up again after `rise`
/// good probes.
async fn kill_and_restart(
    r: &Running,
    keys: &[TargetKey],
    mut restart: impl FnMut() -> Peer,
    mut peer: Peer,
) -> Peer {
    for k in keys {
        r.wait_health(k, Health::Up, Duration::from_secs(10)).await;
    }
    peer.kill();
    let t0 = Instant::now();
    for k in keys {
        let left = down_bound().saturating_sub(t0.elapsed());
        r.wait_health(k, Health::Down, left).await;
        eprintln!(
            "{k}: down {:?} after kill (bound {:?})",
            t0.elapsed(),
            down_bound()
        );
    }
    let good_before: Vec<u64> = keys.iter().map(|k| r.good(k.transport)).collect();
    let peer = restart();
    for (k, before) in keys.iter().zip(good_before) {
        r.wait_health(k, Health::Up, Duration::from_secs(10)).await;
        let goods = r.good(k.transport) - before;
        assert!(
            (u64::from(RISE)..=u64::from(RISE) + 1).contains(&goods),
            "{k} up after {goods} good probes, rise is {RISE}"
        );
        let row = r
            .handle
            .targets()
            .into_iter()
            .find(|t| t.key == *k)
            .unwrap();
        assert_eq!(row.transitions, 2, "{row:?}");
        assert_eq!(row.last_code, Some(200));
    }
    peer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_over_udp_down_on_kill_up_on_restart() {
    let dir = tmp();
    let port = free_port();
    let k = key(port, Transport::Udp);
    let peer = sipp_uas(dir.path(), port, Transport::Udp);
    let r = start(
        domain_with(vec![extra(k, "sip1.example.org")], probe_cfg()),
        Arc::new(MapLookup::default()),
    );
    let path = dir.path().to_owned();
    let _peer = kill_and_restart(&r, &[k], || sipp_uas(&path, port, Transport::Udp), peer).await;
    // The kill was seen through ICMP port unreachable, not only timeouts.
    assert!(
        r.metrics
            .probes
            .with_label_values(&["udp", "unreachable"])
            .get()
            >= u64::from(FALL)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_over_tcp_down_on_kill_up_on_restart() {
    let dir = tmp();
    let port = free_port();
    let k = key(port, Transport::Tcp);
    let peer = sipp_uas(dir.path(), port, Transport::Tcp);
    let r = start(
        domain_with(vec![extra(k, "sip1.example.org")], probe_cfg()),
        Arc::new(MapLookup::default()),
    );
    let path = dir.path().to_owned();
    let _peer = kill_and_restart(&r, &[k], || sipp_uas(&path, port, Transport::Tcp), peer).await;
    assert!(
        r.metrics
            .probes
            .with_label_values(&["tcp", "refused"])
            .get()
            >= u64::from(FALL)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_found_through_srv_over_udp_and_tcp() {
    let dir = tmp();
    let port = free_port();
    let peer = kamailio(dir.path(), port, None);
    // Discovery: NAPTR -> SRV -> A, as a phone would (RFC 3263).
    let lookup = Arc::new(MapLookup::default());
    for (svc, srv_name) in [
        ("SIP+D2U", "_sip._udp.pbx.example.org"),
        ("SIP+D2T", "_sip._tcp.pbx.example.org"),
    ] {
        lookup.add(
            "pbx.example.org",
            60,
            RecordData::Naptr {
                order: 10,
                preference: 10,
                flags: "s".to_owned(),
                services: svc.to_owned(),
                regexp: String::new(),
                replacement: n(srv_name),
            },
        );
        lookup.add(
            srv_name,
            60,
            RecordData::Srv {
                priority: 10,
                weight: 10,
                port,
                target: n("kam.example.org"),
            },
        );
    }
    lookup.add("kam.example.org", 60, RecordData::A([127, 0, 0, 1].into()));
    let r = start(domain_with(Vec::new(), probe_cfg()), lookup);
    let (ku, kt) = (key(port, Transport::Udp), key(port, Transport::Tcp));
    r.wait_health(&ku, Health::Up, Duration::from_secs(10))
        .await;
    r.wait_health(&kt, Health::Up, Duration::from_secs(10))
        .await;
    let snap = r.handle.snapshot().load_full();
    assert_eq!(snap.host_targets(&n("kam.example.org")), vec![ku, kt]);
    let mut ready = r.handle.ready();
    tokio::time::timeout(Duration::from_secs(5), ready.wait_for(|v| *v))
        .await
        .unwrap()
        .unwrap();

    let path: PathBuf = dir.path().to_owned();
    let mut peer = kill_and_restart(&r, &[ku, kt], || kamailio(&path, port, None), peer).await;
    // A clean stop (SIGTERM) is seen as well.
    peer.stop();
    r.wait_health(&kt, Health::Down, down_bound()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kamailio_tls_is_verified_against_the_ca() {
    let dir = tmp();
    let port = free_port();
    let tls_port = free_port();
    let good = test_ca(dir.path(), "good", "tls.example.org");
    let wrong = test_ca(dir.path(), "wrong", "tls.example.org");
    let _peer = kamailio(dir.path(), port, Some((&good, tls_port)));
    let k = key(tls_port, Transport::Tls);

    let with = |ca: &PathBuf, verify: bool, host: &str| {
        let mut p = probe_cfg();
        p.tls.ca_file = Some(ca.clone());
        p.tls.verify = verify;
        // TLS handshakes of a 2048-bit RSA key on a busy machine: more room.
        p.timeout = Duration::from_secs(1);
        p.interval = Duration::from_millis(300);
        start(
            domain_with(vec![extra(k, host)], p),
            Arc::new(MapLookup::default()),
        )
    };

    // Verification on, right CA, SNI = the host name on the certificate: up.
    let ok = with(&good.ca, true, "tls.example.org");
    ok.wait_health(&k, Health::Up, Duration::from_secs(10))
        .await;
    assert_eq!(
        ok.handle.targets()[0].last_code,
        Some(200),
        "{:?}",
        ok.handle.targets()
    );

    // Wrong CA: the handshake fails, and that is a bad probe.
    let bad = with(&wrong.ca, true, "tls.example.org");
    bad.wait_health(&k, Health::Down, Duration::from_secs(10))
        .await;
    assert!(bad.metrics.probes.with_label_values(&["tls", "tls"]).get() >= u64::from(FALL));
    let reason = &bad.handle.targets()[0].last_reason;
    assert!(reason.contains("TLS"), "{reason}");

    // Right CA but a name the certificate does not carry: also a failure.
    let other = with(&good.ca, true, "other.example.org");
    other
        .wait_health(&k, Health::Down, Duration::from_secs(10))
        .await;

    // The explicit opt-out accepts the wrong CA.
    let lab = with(&wrong.ca, false, "tls.example.org");
    lab.wait_health(&k, Health::Up, Duration::from_secs(10))
        .await;
}
