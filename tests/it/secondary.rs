//! Secondary zones against real primaries (issue #17): Knot DNS (`knotd`/`knotc`, Debian
//! `knot` + `knot-dnsutils`) and BIND 9 (`named`/`nsupdate`, Debian `bind9` +
//! `bind9-dnsutils`), each started by the test on 127.0.0.1 with its own config, an
//! ephemeral port and a TSIG key. sipdns transfers the zone (AXFR), follows a change by
//! NOTIFY + IXFR, refuses a wrong key while the old copy answers, answers from its disk copy
//! after a restart without the primary, drops the zone after the SOA expire, follows a
//! catalog's members, and applies the health policy to a transferred SRV set.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, MessageType, OpCode, Query, ResponseCode},
    rr::{Name, RData, RecordType},
};

use crate::common::{
    client::{self, query},
    http,
    process::{Peer, free_port, require},
    server::{self, API_TOKEN, TestServer},
    sip::sipp_uas_at,
};

const ZONE: &str = "pbx.example.org";

/// A primary server process (knotd or named) in the tests' process guard, and its port.
struct Primary {
    name: &'static str,
    peer: Option<Peer>,
    dir: PathBuf,
    port: u16,
}

impl Primary {
    fn spawn(name: &'static str, cmd: Command, dir: &Path, port: u16) -> Self {
        let peer = Peer::spawn(name, cmd, dir.join(format!("{name}.log")));
        let p = Self {
            name,
            peer: Some(peer),
            dir: dir.to_owned(),
            port,
        };
        p.wait_serving();
        p
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    fn log(&self) -> String {
        self.peer.as_ref().map(Peer::log).unwrap_or_default()
    }

    /// Waits (bounded) until the primary accepts TCP on its port.
    fn wait_serving(&self) {
        let end = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(self.addr()).is_err() {
            assert!(
                Instant::now() < end,
                "{} not listening within 10 s:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn stop(&mut self) {
        if let Some(mut p) = self.peer.take() {
            p.kill();
        }
    }
}

/// A base64 TSIG secret, written to `<dir>/tsig.key` for sipdns.
fn secret(dir: &Path, seed: u8) -> String {
    let bytes: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(seed))
        .collect();
    let s = data_encoding::BASE64.encode(&bytes);
    std::fs::write(dir.join("tsig.key"), format!("{s}\n")).unwrap();
    s
}

fn soa(serial: u32, refresh: u32, retry: u32, expire: u32) -> String {
    format!(
        "@ 60 IN SOA ns.example.org. admin.example.org. {serial} {refresh} {retry} {expire} 30\n@ 60 IN NS ns.example.org.\n"
    )
}

/// Knot DNS as the primary for `zones` (name, body without SOA), notifying `notify`.
struct Knot {
    p: Primary,
    conf: PathBuf,
    secret: String,
    notify: SocketAddr,
    zones: Vec<String>,
}

impl Knot {
    fn start(dir: &Path, port: u16, zones: &[(&str, String)], notify: SocketAddr) -> Self {
        // The key sipdns was configured with (written before sipdns started).
        let secret = std::fs::read_to_string(dir.join("tsig.key"))
            .unwrap_or_else(|_| secret(dir, 1))
            .trim()
            .to_owned();
        for sub in ["zones", "db", "run"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        for (name, body) in zones {
            std::fs::write(
                dir.join(format!("zones/{name}.zone")),
                format!("$ORIGIN {name}.\n{body}"),
            )
            .unwrap();
        }
        let mut k = Self {
            p: Primary {
                name: "knotd",
                peer: None,
                dir: dir.to_owned(),
                port,
            },
            conf: dir.join("knot.conf"),
            secret,
            notify,
            zones: zones.iter().map(|(n, _)| (*n).to_owned()).collect(),
        };
        k.write_conf(&k.secret.clone());
        let bin = require("knotd", "knot");
        let mut cmd = Command::new(bin);
        cmd.arg("-c").arg(&k.conf);
        k.p = Primary::spawn("knotd", cmd, dir, port);
        k
    }

    fn write_conf(&self, secret: &str) {
        let d = self.p.dir.display();
        let zones: String = self
            .zones
            .iter()
            .map(|z| format!("  - domain: {z}\n    notify: sipdns\n    acl: xfr\n"))
            .collect();
        let conf = format!(
            "server:\n    rundir: \"{d}/run\"\n    listen: 127.0.0.1@{port}\n\
key:\n  - id: office-key\n    algorithm: hmac-sha256\n    secret: {secret}\n\
remote:\n  - id: sipdns\n    address: {nip}@{nport}\n    key: office-key\n\
acl:\n  - id: xfr\n    key: office-key\n    action: transfer\n\
control:\n    listen: \"{d}/run/knot.sock\"\n\
database:\n    storage: \"{d}/db\"\n\
template:\n  - id: default\n    storage: \"{d}/zones\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n\
zone:\n{zones}",
            port = self.p.port,
            nip = self.notify.ip(),
            nport = self.notify.port(),
        );
        std::fs::write(&self.conf, conf).unwrap();
    }

    /// `knotc` with the test's config.
    fn knotc(&self, args: &[&str]) {
        let out = Command::new(require("knotc", "knot"))
            .arg("-c")
            .arg(&self.conf)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "knotc {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One transaction at the primary: `set` and `unset` are `owner TTL TYPE data` /
    /// `owner TYPE data` strings; the serial goes up by one on commit.
    fn change(&self, zone: &str, set: &[&str], unset: &[&str]) {
        self.knotc(&["zone-begin", zone]);
        for s in set {
            let mut args = vec!["zone-set", zone];
            args.extend(s.split_whitespace());
            self.knotc(&args);
        }
        for s in unset {
            let mut args = vec!["zone-unset", zone];
            args.extend(s.split_whitespace());
            self.knotc(&args);
        }
        self.knotc(&["zone-commit", zone]);
    }
}

fn secondary_config(primary: SocketAddr, tsig_file: &Path, entry: &str, extra: &str) -> String {
    format!(
        "zones:\n  secondary_dir: secondary\n  secondary:\n    - {entry}\n      primaries: [\"{primary}\"]\n      tsig: {{ name: office-key, algorithm: hmac-sha256, secret_file: {} }}\n      retry: 1s\n{extra}",
        tsig_file.display()
    )
}

/// A sipdns following `ZONE` from a Knot primary (TSIG key 1) that serves it with `body`.
/// sipdns starts first, so its first check finds no primary and is retried.
async fn knot_and_secondary(body: String) -> (TestServer, Knot, tempfile::TempDir) {
    let kdir = tempfile::tempdir().unwrap();
    let kport = free_port();
    let primary = SocketAddr::from((Ipv4Addr::LOCALHOST, kport));
    secret(kdir.path(), 1);
    let s = server::start_with_api(
        &secondary_config(
            primary,
            &kdir.path().join("tsig.key"),
            &format!("zone: {ZONE}"),
            "",
        ),
        &[],
    )
    .await;
    let knot = Knot::start(kdir.path(), kport, &[(ZONE, body)], s.dns);
    (s, knot, kdir)
}

/// [`knot_and_secondary`] with `sip.pbx.example.org A 192.0.2.10` and the SOA timers
/// `(refresh, retry, expire)`, once sipdns answers it (at most 5 s).
async fn knot_serving_sip(timers: (u32, u32, u32)) -> (TestServer, Knot, tempfile::TempDir) {
    let (refresh, retry, expire) = timers;
    let body = format!("{}sip 60 IN A 192.0.2.10\n", soa(1, refresh, retry, expire));
    let all = knot_and_secondary(body).await;
    wait_answer(
        &all.0,
        "sip.pbx.example.org.",
        &["192.0.2.10"],
        Duration::from_secs(5),
    )
    .await;
    all
}

/// The A addresses sipdns answers for `name` (empty for any other outcome), and the rcode.
async fn addresses(s: &TestServer, name: &str) -> (Vec<String>, ResponseCode) {
    let (m, _) = client::udp(s.dns, &query(name, RecordType::A, Some(1232))).await;
    let addrs = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    (addrs, m.metadata.response_code)
}

/// [`wait_answer`] for `sip.pbx.example.org` and one address.
async fn wait_sip(s: &TestServer, want: &str, bound: Duration) -> Duration {
    wait_answer(s, "sip.pbx.example.org.", &[want], bound).await
}

/// Polls (every 20 ms, at most `bound`) until `name` answers exactly `want`; returns how
/// long it took.
async fn wait_answer(s: &TestServer, name: &str, want: &[&str], bound: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let (got, rcode) = addresses(s, name).await;
        if got == want {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < bound,
            "{name}: wanted {want:?} within {bound:?}, last {got:?} ({rcode:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn zones_status(s: &TestServer) -> serde_json::Value {
    let c = http::Client::new(s.api.unwrap(), Some(API_TOKEN));
    let r = c.get("/api/v1/zones").await;
    assert_eq!(r.status, 200);
    r.json()
}

/// The `secondary` object of `zone` in `GET /api/v1/zones`.
async fn status_of(s: &TestServer, zone: &str) -> serde_json::Value {
    let all = zones_status(s).await;
    all.as_array()
        .unwrap()
        .iter()
        .find(|z| z["zone"] == format!("{zone}."))
        .unwrap_or_else(|| panic!("{zone} not in {all:#}"))["secondary"]
        .clone()
}

async fn metrics(s: &TestServer) -> String {
    http::Client::new(s.api.unwrap(), None)
        .get("/metrics")
        .await
        .text()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn notify(zone: &str) -> Vec<u8> {
    let mut m = Message::new(0x5a5a, MessageType::Query, OpCode::Notify);
    m.add_query(Query::query(
        Name::from_ascii(zone).unwrap(),
        RecordType::SOA,
    ));
    m.to_vec().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_axfr_then_notify_ixfr_within_2s() {
    // The first check failed (knot was not up yet): retried after 1 s, then AXFR.
    let (s, mut knot, _kdir) = knot_serving_sip((60, 10, 600)).await;
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serial"], 1, "{st:#}");
    assert_eq!(st["serving"], true);
    assert_eq!(st["last_transfer"]["kind"], "axfr", "{st:#}");
    assert!(st["last_transfer"]["bytes"].as_u64().unwrap() > 100);
    assert!(st["next_check"].as_f64().is_some());
    // Kept on disk, with its serial.
    let copy =
        std::fs::read_to_string(s.dir.path().join("secondary/pbx.example.org.zone")).unwrap();
    assert!(copy.contains("serial 1"), "{copy}");

    // A change at the primary: NOTIFY, then IXFR, answered within 2 s.
    let t = Instant::now();
    knot.change(ZONE, &["sip 60 A 192.0.2.11"], &["sip A 192.0.2.10"]);
    let took = wait_sip(&s, "192.0.2.11", Duration::from_secs(2)).await;
    eprintln!(
        "change at the primary answered after {:?} (poll {took:?})",
        t.elapsed()
    );
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serial"], 2, "{st:#}");
    assert_eq!(st["last_transfer"]["kind"], "ixfr", "{st:#}");
    // The status page shows the same: served, the serial, the IXFR.
    let dash = http::Client::new(s.api.unwrap(), Some(API_TOKEN))
        .get("/api/v1/ui/dashboard")
        .await
        .text();
    let row = dash
        .split("class=\"secondary\"")
        .nth(1)
        .unwrap_or_else(|| panic!("no secondary zone on the status page:\n{dash}"));
    assert!(
        row.contains("serving") && row.contains("serial 2") && row.contains("last IXFR"),
        "{row}"
    );
    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "sipdns_zone_serial{zone=\"pbx.example.org.\"}"),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        metric(
            &m,
            "sipdns_zone_transfers_total{kind=\"ixfr\",result=\"ok\",zone=\"pbx.example.org.\"}"
        ),
        Some(1.0),
        "{m}"
    );
    assert!(metric(&m, "sipdns_zone_expiry_seconds{zone=\"pbx.example.org.\"}").unwrap() > 500.0);
    assert!(metric(&m, "sipdns_zone_notifies_total{result=\"accepted\"}").unwrap() >= 1.0);
    let log = knot.p.log();
    assert!(log.contains("IXFR, outgoing"), "{log}");
    // Knot signs its NOTIFY with the key (its remote has one) and checks the answer's TSIG.
    let notifies: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("notify, outgoing"))
        .collect();
    assert!(
        !notifies.is_empty() && notifies.iter().all(|l| !l.contains("failed")),
        "{log}"
    );

    // The CLI shows where the zone stands.
    let o = crate::cli::sipdns_bin(&[
        "zones".into(),
        "--api".into(),
        format!("http://{}", s.api.unwrap()),
        "--token-file".into(),
        s.dir.path().join("api-token").display().to_string(),
    ])
    .await;
    let table = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{table}");
    assert!(
        table.contains("SECONDARY")
            && table.lines().any(|l| l.starts_with("pbx.example.org")
                && l.contains(" zone ")
                && l.contains("ixfr")),
        "{table}"
    );

    // NOTIFY from an address that is not a primary: REFUSED, counted.
    let sock = tokio::net::UdpSocket::bind("127.0.0.2:0").await.unwrap();
    sock.send_to(&notify("pbx.example.org."), s.dns)
        .await
        .unwrap();
    let mut buf = vec![0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let r = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    assert_eq!(r.metadata.op_code, OpCode::Notify);
    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "sipdns_zone_notifies_total{result=\"refused\"}"),
        Some(1.0)
    );
    knot.p.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_forged_notify_starts_at_most_one_check_per_quarter_second() {
    // A "primary" that counts the checks (TCP connections) and drops each at once.
    let primary = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = primary.local_addr().unwrap();
    let checks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = checks.clone();
    let accept = tokio::spawn(async move {
        while let Ok((conn, _)) = primary.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            drop(conn);
        }
    });
    let s = server::start_with_api(
        &format!(
            "zones:\n  secondary_dir: secondary\n  secondary:\n    - zone: {ZONE}\n      primaries: [\"{addr}\"]\n      retry: 1h\n"
        ),
        &[],
    )
    .await;
    // The check at start fails; the next one is an hour away.
    let t = Instant::now();
    while checks.load(std::sync::atomic::Ordering::SeqCst) == 0 {
        assert!(t.elapsed() < Duration::from_secs(5), "no check at start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // NOTIFY after NOTIFY from the primary's address (a stranger can forge it) for one second.
    let before = checks.load(std::sync::atomic::Ordering::SeqCst);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let flood = Instant::now();
    let mut sent = 0;
    while flood.elapsed() < Duration::from_secs(1) {
        sock.send_to(&notify("pbx.example.org."), s.dns)
            .await
            .unwrap();
        sent += 1;
        tokio::task::yield_now().await;
    }
    let started = checks.load(std::sync::atomic::Ordering::SeqCst) - before;
    eprintln!("{sent} NOTIFY in {:?}: {started} checks", flood.elapsed());
    assert!(sent > 100, "{sent}");
    // One right away, then at most one each 250 ms (and one may be under way at the end).
    assert!(
        (1..=6).contains(&started),
        "{started} checks for {sent} NOTIFY"
    );
    accept.abort();
}

/// `dig` (BIND's client, which checks the answer's TSIG) sends a NOTIFY for `ZONE` signed
/// with `secret`; its output.
fn dig_signed_notify(s: &TestServer, secret: &str) -> String {
    let out = Command::new(require("dig", "dnsutils"))
        .args(["-p", &s.dns.port().to_string(), &format!("@{}", s.dns.ip())])
        .args(["+opcode=notify", "+norecurse", "+tries=1", "+time=2"])
        .args(["-y", &format!("hmac-sha256:office-key:{secret}")])
        .args([ZONE, "SOA"])
        .output()
        .unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_notify_gets_a_signed_answer_and_a_wrong_key_notauth() {
    let (s, knot, kdir) = knot_serving_sip((60, 10, 600)).await;
    let before = metric(
        &metrics(&s).await,
        "sipdns_zone_notifies_total{result=\"accepted\"}",
    );

    // Signed with the zone's key, from the primary's address: NOERROR, signed (dig checks
    // the MAC over its request's MAC and says nothing; a bad or missing TSIG it reports).
    let key = std::fs::read_to_string(kdir.path().join("tsig.key")).unwrap();
    let out = dig_signed_notify(&s, key.trim());
    assert!(out.contains("opcode: NOTIFY, status: NOERROR"), "{out}");
    assert!(out.contains("flags: qr aa"), "{out}");
    assert!(out.contains("TSIG PSEUDOSECTION"), "{out}");
    assert!(
        !out.contains("Couldn't verify") && !out.contains("could not be validated"),
        "{out}"
    );
    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "sipdns_zone_notifies_total{result=\"accepted\"}"),
        Some(before.unwrap_or(0.0) + 1.0),
        "{m}"
    );

    // Signed with another secret: NOTAUTH with an unsigned BADSIG TSIG, counted, starts no
    // check, and the zone's status says why.
    let other = data_encoding::BASE64.encode(&[7u8; 32]);
    let out = dig_signed_notify(&s, &other);
    assert!(out.contains("opcode: NOTIFY, status: NOTAUTH"), "{out}");
    assert!(out.contains("BADSIG"), "{out}");
    let m = metrics(&s).await;
    assert_eq!(
        metric(&m, "sipdns_zone_notifies_total{result=\"rejected\"}"),
        Some(1.0),
        "{m}"
    );
    let st = status_of(&s, ZONE).await;
    assert!(
        st["error"]
            .as_str()
            .is_some_and(|e| e.contains("NOTIFY from 127.0.0.1") && e.contains("BADSIG")),
        "{st:#}"
    );
    // The copy held keeps answering.
    let (got, _) = addresses(&s, "sip.pbx.example.org.").await;
    assert_eq!(got, ["192.0.2.10"]);
    drop(knot);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_wrong_tsig_key_is_refused_and_the_old_copy_answers() {
    let (s, knot, kdir) = knot_serving_sip((60, 10, 600)).await;

    // The primary's key changes: sipdns's key is now wrong.
    let other = data_encoding::BASE64.encode(&[7u8; 32]);
    knot.write_conf(&other);
    knot.knotc(&["reload"]);
    knot.change(ZONE, &["sip 60 A 192.0.2.11"], &["sip A 192.0.2.10"]);
    // Its NOTIFY, signed with the new key, is answered NOTAUTH (BADSIG) and the zone's
    // status says so; a check sipdns makes is refused by the primary the same way.
    let t = Instant::now();
    loop {
        let st = status_of(&s, ZONE).await;
        if st["error"]
            .as_str()
            .is_some_and(|e| e.contains("TSIG") || e.contains("NOTAUTH"))
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "no TSIG error: {st:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The old copy keeps answering.
    let (got, _) = addresses(&s, "sip.pbx.example.org.").await;
    assert_eq!(got, ["192.0.2.10"]);
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serial"], 1);
    assert_eq!(st["serving"], true);

    // The office gets the new key: its file rewritten, a reload reads it, and the change
    // made meanwhile is transferred.
    std::fs::write(kdir.path().join("tsig.key"), format!("{other}\n")).unwrap();
    reload(&s).await;
    wait_sip(&s, "192.0.2.11", Duration::from_secs(5)).await;
    assert!(status_of(&s, ZONE).await["error"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_disk_copy_answers_after_restart_then_expires() {
    // refresh 2 s, retry 1 s, expire 8 s.
    let (mut s, mut knot, _kdir) = knot_serving_sip((2, 1, 8)).await;

    // WAN outage: the primary is gone, and sipdns restarts.
    knot.p.stop();
    s.restart().await;
    let restarted = Instant::now();
    let (got, _) = addresses(&s, "sip.pbx.example.org.").await;
    assert_eq!(got, ["192.0.2.10"], "the disk copy answers at once");
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["from_disk"], true, "{st:#}");
    assert_eq!(st["serving"], true);

    // No successful check within the SOA expire: the zone is dropped (forwarded as if
    // sipdns had no zone: the test's upstream is a closed port, so SERVFAIL).
    let t = Instant::now();
    loop {
        let (got, rcode) = addresses(&s, "sip.pbx.example.org.").await;
        if got.is_empty() {
            assert_eq!(rcode, ResponseCode::ServFail);
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(12), "never expired");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("expired {:?} after the restart", restarted.elapsed());
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serving"], false, "{st:#}");
    assert!(st["error"].as_str().unwrap().contains("expired"), "{st:#}");
    let m = metrics(&s).await;
    assert!(metric(&m, "sipdns_zone_expiry_seconds{zone=\"pbx.example.org.\"}").unwrap() <= 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_catalog_members_appear_and_disappear() {
    let kdir = tempfile::tempdir().unwrap();
    let kport = free_port();
    let primary = SocketAddr::from((Ipv4Addr::LOCALHOST, kport));
    secret(kdir.path(), 1);
    // Members of group "branch": merge mode fallback, and managed SIP domains with the
    // health policy of the template domain.
    let groups = "  catalog_groups:\n    branch: { mode: fallback, sip_policy: template.example.org }\nsip:\n  domains:\n    - name: template.example.org\n";
    let s = server::start_with_api(
        &secondary_config(
            primary,
            &kdir.path().join("tsig.key"),
            "catalog: catalog.example.net",
            groups,
        ),
        &[],
    )
    .await;
    let catalog = format!(
        "{}version 0 IN TXT \"2\"\nm1.zones 0 IN PTR office1.example.org.\n",
        soa(1, 60, 10, 600)
    );
    let office = |last: u8| {
        format!(
            "{}sip 60 IN A 127.0.0.{}\n_sip._udp 60 IN SRV 10 1 5060 sip\n",
            soa(1, 60, 10, 600),
            20 + last
        )
    };
    let knot = Knot::start(
        kdir.path(),
        kport,
        &[
            ("catalog.example.net", catalog),
            ("office1.example.org", office(1)),
            ("office2.example.org", office(2)),
        ],
        s.dns,
    );
    wait_answer(
        &s,
        "sip.office1.example.org.",
        &["127.0.0.21"],
        Duration::from_secs(6),
    )
    .await;
    let t = Instant::now();
    let (got, _) = addresses(&s, "sip.office2.example.org.").await;
    assert!(got.is_empty(), "office2 is not a member yet");
    eprintln!("office2 (not a member) answered after {:?}", t.elapsed());

    // A member added at the primary: one NOTIFY of the catalog brings it.
    let t = Instant::now();
    knot.change(
        "catalog.example.net",
        &[
            "m2.zones 0 PTR office2.example.org.",
            "group.m2.zones 0 TXT branch",
        ],
        &[],
    );
    wait_answer(
        &s,
        "sip.office2.example.org.",
        &["127.0.0.22"],
        Duration::from_secs(3),
    )
    .await;
    eprintln!("catalog member added: answered after {:?}", t.elapsed());
    let st = status_of(&s, "office2.example.org").await;
    assert_eq!(st["role"], "member", "{st:#}");
    assert_eq!(st["catalog"], "catalog.example.net.");
    assert_eq!(st["group"], "branch");
    assert_eq!(st["mode"], "fallback");
    // office2 is now a managed SIP domain: its SRV target is probed (office1, not in the
    // group, is not).
    let t = Instant::now();
    loop {
        let ips: Vec<String> = s
            .server()
            .prober
            .targets()
            .iter()
            .map(|t| t.key.ip.to_string())
            .collect();
        if ips.contains(&"127.0.0.22".to_owned()) {
            assert!(!ips.contains(&"127.0.0.21".to_owned()), "{ips:?}");
            eprintln!("catalog member probed after {:?}", t.elapsed());
            break;
        }
        // Discovery starts over on the config change (a round under way, waiting on its
        // upstream lookups, is dropped).
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "office2 not probed: {ips:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A member removed: gone within one NOTIFY.
    let t = Instant::now();
    knot.change(
        "catalog.example.net",
        &[],
        &["m1.zones PTR office1.example.org."],
    );
    let bound = Duration::from_secs(3);
    loop {
        let (got, _) = addresses(&s, "sip.office1.example.org.").await;
        if got.is_empty() {
            break;
        }
        assert!(t.elapsed() < bound, "office1 still answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("catalog member removed: gone after {:?}", t.elapsed());
    assert_no_zone_series(&s, &["office1.example.org"]).await;
    let all = zones_status(&s).await;
    assert!(
        !all.as_array()
            .unwrap()
            .iter()
            .any(|z| z["zone"] == "office1.example.org."),
        "{all:#}"
    );
    assert!(
        !s.dir
            .path()
            .join("secondary/office1.example.org.zone")
            .exists()
    );

    // A reload changes the group's template: the members are followed again with it (from
    // their copies, answering throughout).
    let text = std::fs::read_to_string(&s.config_path).unwrap();
    let merged = text.replace("mode: fallback", "mode: merge");
    assert_ne!(merged, text);
    std::fs::write(&s.config_path, &merged).unwrap();
    reload(&s).await;
    let (got, _) = addresses(&s, "sip.office2.example.org.").await;
    assert_eq!(got, ["127.0.0.22"]);
    assert_eq!(status_of(&s, "office2.example.org").await["mode"], "merge");

    // A reload without the catalog: its members stop answering, their copies go.
    let (head, rest) = merged.split_once("  secondary:\n").unwrap();
    let (_, tail) = rest.split_once("      retry: 1s\n").unwrap();
    let without = format!("{head}{tail}");
    assert!(!without.contains("catalog.example.net") && without.contains("upstream:"));
    reload_without(
        &s,
        &without,
        "sip.office2.example.org.",
        &["catalog.example.net", "office2.example.org"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_transferred_srv_set_gets_the_health_policy() {
    const P1: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
    const P2: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);
    let sdir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let mut first = sipp_uas_at(sdir.path(), P1, p1, sipdns::target::Transport::Udp);
    let mut second = sipp_uas_at(sdir.path(), P2, p2, sipdns::target::Transport::Udp);
    let kdir = tempfile::tempdir().unwrap();
    let kport = free_port();
    let primary = SocketAddr::from((Ipv4Addr::LOCALHOST, kport));
    secret(kdir.path(), 1);
    let sip = "sip:\n  probe:\n    interval: 200ms\n    timeout: 150ms\n    fall: 2\n    rise: 2\n    startup_grace: 1s\n  domains:\n    - name: pbx.example.org\n";
    let s = server::start_with_api(
        &secondary_config(
            primary,
            &kdir.path().join("tsig.key"),
            &format!("zone: {ZONE}"),
            sip,
        ),
        &[],
    )
    .await;
    let body = format!(
        "{}_sip._udp 60 IN SRV 10 1 {p1} one\n_sip._udp 60 IN SRV 20 1 {p2} two\none 60 IN A {P1}\ntwo 60 IN A {P2}\n",
        soa(1, 60, 10, 600)
    );
    let _knot = Knot::start(kdir.path(), kport, &[(ZONE, body)], s.dns);
    let srv = |s: &TestServer| {
        let dns = s.dns;
        async move {
            let (m, _) = client::udp(
                dns,
                &query("_sip._udp.pbx.example.org.", RecordType::SRV, Some(1232)),
            )
            .await;
            m.answers
                .iter()
                .filter_map(|r| match &r.data {
                    RData::SRV(v) => Some(v.target.to_ascii()),
                    _ => None,
                })
                .collect::<Vec<_>>()
        }
    };
    let one = "one.pbx.example.org.".to_owned();
    let two = "two.pbx.example.org.".to_owned();
    let t = Instant::now();
    while srv(&s).await != [one.clone(), two.clone()] {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "transferred SRV set not answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The transferred targets are probed like static ones.
    let t = Instant::now();
    while s.server().prober.targets().len() < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(6),
            "targets not discovered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    first.kill();
    let t = Instant::now();
    while srv(&s).await != [two.clone()] {
        assert!(
            t.elapsed() < Duration::from_secs(4),
            "the dead target is still handed out: {:?}",
            srv(&s).await
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    eprintln!("dead transferred target withheld after {:?}", t.elapsed());
    second.stop();
}

/// BIND 9 as the primary: a dynamic zone changed by nsupdate (TSIG-signed) reaches sipdns
/// by NOTIFY + IXFR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_axfr_then_nsupdate_notify_ixfr_within_2s() {
    let bdir = tempfile::tempdir().unwrap();
    let bport = free_port();
    let primary = SocketAddr::from((Ipv4Addr::LOCALHOST, bport));
    let secret = secret(bdir.path(), 9);
    let s = server::start_with_api(
        &secondary_config(
            primary,
            &bdir.path().join("tsig.key"),
            &format!("zone: {ZONE}"),
            "",
        ),
        &[],
    )
    .await;
    let d = bdir.path().display();
    std::fs::write(
        bdir.path().join("pbx.example.org.zone"),
        format!(
            "$ORIGIN pbx.example.org.\n$TTL 60\n{}sip 60 IN A 192.0.2.10\n",
            soa(1, 60, 10, 600)
        ),
    )
    .unwrap();
    let conf = format!(
        "options {{\n  directory \"{d}\";\n  pid-file \"{d}/named.pid\";\n  listen-on port {bport} {{ 127.0.0.1; }};\n  listen-on-v6 {{ none; }};\n  recursion no;\n  notify explicit;\n  notify-delay 0;\n  max-ixfr-ratio unlimited;\n  also-notify {{ 127.0.0.1 port {notify_port}; }};\n  allow-transfer {{ key office-key; }};\n}};\n\
controls {{ }};\n\
key \"office-key\" {{ algorithm hmac-sha256; secret \"{secret}\"; }};\n\
zone \"pbx.example.org\" {{ type primary; file \"{d}/pbx.example.org.zone\"; allow-update {{ key office-key; }}; }};\n",
        notify_port = s.dns.port()
    );
    let conf_path = bdir.path().join("named.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = Command::new(require("named", "bind9"));
    cmd.args(["-g", "-c"]).arg(&conf_path).args(["-n", "1"]);
    let mut named = Primary::spawn("named", cmd, bdir.path(), bport);
    wait_sip(&s, "192.0.2.10", Duration::from_secs(6)).await;
    assert_eq!(status_of(&s, ZONE).await["last_transfer"]["kind"], "axfr");

    let script = format!(
        "server 127.0.0.1 {bport}\nzone pbx.example.org\nupdate delete sip.pbx.example.org. A 192.0.2.10\nupdate add sip.pbx.example.org. 60 A 192.0.2.11\nsend\n"
    );
    let key_arg = format!("hmac-sha256:office-key:{secret}");
    let t = Instant::now();
    let mut up = Command::new(require("nsupdate", "bind9-dnsutils"))
        .args(["-y", &key_arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        up.stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
    }
    let out = up.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nsupdate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_sip(&s, "192.0.2.11", Duration::from_secs(2)).await;
    eprintln!(
        "nsupdate at BIND answered by sipdns after {:?}",
        t.elapsed()
    );
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serial"], 2, "{st:#}");
    assert_eq!(
        st["last_transfer"]["kind"],
        "ixfr",
        "{st:#}\n{}",
        named.log()
    );
    named.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_tsig_secret_keeps_the_disk_copy_answering_until_it_is_fixed() {
    let (mut s, knot, kdir) = knot_serving_sip((60, 10, 600)).await;
    let key_file = kdir.path().join("tsig.key");
    let secret = std::fs::read_to_string(&key_file).unwrap();

    // The secret file is broken and sipdns restarts: it starts, and its disk copy answers.
    std::fs::write(&key_file, "not base64 at all!\n").unwrap();
    let o = crate::cli::sipdns_bin(&[
        "check".into(),
        "-c".into(),
        s.config_path.display().to_string(),
    ])
    .await;
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "sipdns check passed a broken secret");
    assert!(
        err.contains("zones.secondary[0].tsig") && err.contains("tsig.key"),
        "{err}"
    );
    s.restart().await;
    let (got, _) = addresses(&s, "sip.pbx.example.org.").await;
    assert_eq!(got, ["192.0.2.10"], "the disk copy answers at once");
    let t = Instant::now();
    loop {
        let st = status_of(&s, ZONE).await;
        if st["error"].as_str().is_some_and(|e| e.contains("TSIG key")) {
            assert_eq!(st["serving"], true, "{st:#}");
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "{st:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A change at the primary meanwhile; the file is fixed: the next retry reads the key
    // and transfers the change.
    knot.change(ZONE, &["sip 60 A 192.0.2.11"], &["sip A 192.0.2.10"]);
    std::fs::write(&key_file, &secret).unwrap();
    wait_sip(&s, "192.0.2.11", Duration::from_secs(5)).await;
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serial"], 2, "{st:#}");
    assert!(st["error"].is_null(), "{st:#}");
}

/// `POST /api/v1/reload`, as `sipdns reload` does; the reload must succeed.
async fn reload(s: &TestServer) {
    let r = http::Client::new(s.api.unwrap(), Some(API_TOKEN))
        .send("POST", "/api/v1/reload", &[], None)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
}

/// Writes `config` (without some secondary zones) and reloads; then `name` is not
/// answered, none of `zones` is followed, and their copies are deleted.
async fn reload_without(s: &TestServer, config: &str, name: &str, zones: &[&str]) {
    std::fs::write(&s.config_path, config).unwrap();
    reload(s).await;
    let (got, _) = addresses(s, name).await;
    assert!(got.is_empty(), "{name}: {got:?}");
    let all = zones_status(s).await;
    for zone in zones {
        assert!(
            all.as_array()
                .unwrap()
                .iter()
                .all(|z| z["zone"] != format!("{zone}.") || z["secondary"].is_null()),
            "{zone}: {all:#}"
        );
        let copy = s.dir.path().join(format!("secondary/{zone}.zone"));
        assert!(!copy.exists(), "the copy of {zone} is still there");
    }
    assert_no_zone_series(s, zones).await;
}

/// `/metrics` has no series of `zones` (a zone followed no more leaves no stale series for
/// the alert rules to fire on).
async fn assert_no_zone_series(s: &TestServer, zones: &[&str]) {
    let m = metrics(s).await;
    for zone in zones {
        let label = format!("zone=\"{zone}.\"");
        let left: Vec<&str> = m.lines().filter(|l| l.contains(&label)).collect();
        assert!(left.is_empty(), "{left:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adds_changes_and_removes_secondary_zones() {
    // sipdns starts following nothing; Knot serves the zone and notifies sipdns.
    let s = server::start_with_api("", &[]).await;
    let kdir = tempfile::tempdir().unwrap();
    let kport = free_port();
    secret(kdir.path(), 1);
    let body = format!("{}sip 60 IN A 192.0.2.10\n", soa(1, 60, 10, 600));
    let knot = Knot::start(kdir.path(), kport, &[(ZONE, body)], s.dns);
    let (got, _) = addresses(&s, "sip.pbx.example.org.").await;
    assert!(got.is_empty(), "{got:?}");
    let base = std::fs::read_to_string(&s.config_path).unwrap();
    let primary = SocketAddr::from((Ipv4Addr::LOCALHOST, kport));
    let entry = |extra: &str| {
        let key = kdir.path().join("tsig.key");
        format!(
            "{base}{}",
            secondary_config(primary, &key, &format!("zone: {ZONE}\n{extra}"), "")
        )
    };

    // Added by a reload: transferred and answered, and NOTIFY reaches it.
    std::fs::write(&s.config_path, entry("")).unwrap();
    reload(&s).await;
    wait_sip(&s, "192.0.2.10", Duration::from_secs(5)).await;
    knot.change(ZONE, &["sip 60 A 192.0.2.11"], &["sip A 192.0.2.10"]);
    wait_sip(&s, "192.0.2.11", Duration::from_secs(2)).await;
    let copy = s.dir.path().join("secondary/pbx.example.org.zone");
    assert!(copy.exists());

    // Changed by a reload (another mode): followed again from its disk copy, answering
    // throughout.
    std::fs::write(&s.config_path, entry("      mode: fallback\n")).unwrap();
    reload(&s).await;
    let (got, _) = addresses(&s, "sip.pbx.example.org.").await;
    assert_eq!(got, ["192.0.2.11"], "the copy answers across the change");
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["mode"], "fallback", "{st:#}");
    assert_eq!(st["serial"], 2, "{st:#}");

    // Removed by a reload: no longer answered or listed, its copy deleted.
    reload_without(&s, &base, "sip.pbx.example.org.", &[ZONE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knot_corrupt_disk_copy_is_set_aside_and_transferred_again() {
    let kdir = tempfile::tempdir().unwrap();
    let kport = free_port();
    let primary = SocketAddr::from((Ipv4Addr::LOCALHOST, kport));
    secret(kdir.path(), 1);
    let body = format!("{}sip 60 IN A 192.0.2.10\n", soa(3, 60, 10, 600));
    let _knot = Knot::start(
        kdir.path(),
        kport,
        &[(ZONE, body)],
        "127.0.0.1:9".parse().unwrap(),
    );
    // A copy cut short by a disk fault: no SOA, half a record.
    let sdir = tempfile::tempdir().unwrap();
    std::fs::write(
        sdir.path().join("pbx.example.org.zone"),
        "$ORIGIN pbx.example.org.\nsip 60 IN A 192.0.2.\n",
    )
    .unwrap();
    let config = secondary_config(
        primary,
        &kdir.path().join("tsig.key"),
        &format!("zone: {ZONE}"),
        "",
    )
    .replace(
        "secondary_dir: secondary",
        &format!("secondary_dir: {}", sdir.path().display()),
    );
    let s = server::start_with_api(&config, &[]).await;
    wait_sip(&s, "192.0.2.10", Duration::from_secs(5)).await;
    let names: Vec<String> = std::fs::read_dir(sdir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("pbx.example.org.zone.corrupt-")),
        "{names:?}"
    );
    // The new copy replaced it, with the primary's serial. The zone is served first and
    // written to disk after, so wait (bounded) for the write.
    let path = sdir.path().join("pbx.example.org.zone");
    let t = Instant::now();
    let copy = loop {
        let copy = std::fs::read_to_string(&path).unwrap_or_default();
        if copy.contains("serial 3") || t.elapsed() > Duration::from_secs(5) {
            break copy;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(copy.contains("serial 3"), "{copy}");
    let st = status_of(&s, ZONE).await;
    assert_eq!(st["serial"], 3, "{st:#}");
    assert_eq!(st["last_transfer"]["kind"], "axfr");
}
