//! Issue 14, tried as an attacker on the LAN or with write access to `zones/` would, on
//! loopback: the real `sipdns` binary as a child process where its own descriptor limit or
//! start-up matters, the in-process server elsewhere. `docs/threats.md` lists what each
//! test shows.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use hickory_proto::{op::ResponseCode, rr::RecordType};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::{
    client::{self, lines, query},
    fake_upstream::FakeUpstream,
    http::{self, Client},
    process::{free_port, kill},
    server::{self, API_TOKEN},
    sip::{kamailio, sipp_uas, test_ca},
};
use sipdns::target::Transport;

const TOKEN: &str = "attack-test-token-Q7-not-a-secret";

/// A `sipdns run` child, killed on drop.
pub(crate) struct Sipdns {
    child: Child,
    pub(crate) api: SocketAddr,
    pub(crate) dns: SocketAddr,
    log: PathBuf,
}

impl Drop for Sipdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sipdns {
    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `sipdns run` in `dir` (which holds `zones/`) with `extra` appended to a config
/// that sets `dns:`, `api:` and `upstream:` (unless `extra` sets `upstream:`), and waits
/// (bounded) until `/livez` answers. `nofile`: the soft and hard `RLIMIT_NOFILE` the child
/// starts with (`ulimit -Sn`, `ulimit -Hn`).
/// An `api:` section at the start of `extra` is merged into the generated one.
pub(crate) async fn spawn(dir: &Path, extra: &str, nofile: Option<(u64, u64)>) -> Sipdns {
    let (api_extra, extra) = match extra.strip_prefix("api:\n") {
        Some(rest) => {
            let end = rest
                .lines()
                .take_while(|l| l.starts_with("  "))
                .map(|l| l.len() + 1)
                .sum::<usize>();
            (&rest[..end], &rest[end..])
        }
        None => ("", extra),
    };
    std::fs::write(dir.join("api-token"), format!("{TOKEN}\n")).unwrap();
    for _attempt in 0..5 {
        let (dns_port, api_port) = (free_port(), free_port());
        let mut config = format!(
            "dns:\n  listen: [\"127.0.0.1:{dns_port}\"]\napi:\n  listen: \"127.0.0.1:{api_port}\"\n  token_file: api-token\n{api_extra}"
        );
        if !extra.contains("upstream:") {
            config.push_str(
                "upstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\n",
            );
        }
        config.push_str(extra);
        std::fs::write(dir.join("sipdns.yaml"), config).unwrap();
        let log = dir.join("sipdns.log");
        // The limit is set by the shell that then execs sipdns (same PID), as `ulimit -n`
        // in a container's entrypoint or a login shell would.
        let mut cmd = Command::new("sh");
        match nofile {
            Some((soft, hard)) => cmd.arg("-c").arg(format!(
                "ulimit -S -n {soft} && ulimit -H -n {hard} && exec \"$0\" \"$@\""
            )),
            None => cmd.arg("-c").arg("exec \"$0\" \"$@\""),
        };
        cmd.arg(env!("CARGO_BIN_EXE_sipdns"))
            .args(["run", "-c"])
            .arg(dir.join("sipdns.yaml"))
            .env("RUST_LOG", "info")
            // The system trust store as installed, not a test harness' override.
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        let child = cmd.spawn().unwrap();
        let mut s = Sipdns {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dns: SocketAddr::from(([127, 0, 0, 1], dns_port)),
            log,
        };
        for _ in 0..400 {
            if status_of(s.api, "/livez").await == Some(200) {
                return s;
            }
            if s.child.try_wait().unwrap().is_some() {
                break; // a port was taken after all: try others
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let log = s.log();
        if !log.contains("Address already in use") {
            panic!("sipdns did not start:\n{log}");
        }
    }
    panic!("sipdns did not start on 5 pairs of ports");
}

/// The status of one `GET` (no token), or `None` if there was no complete reply in 5 s.
pub(crate) async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    http::try_status(addr, &req).await
}

/// `sipdns check -c dir/sipdns.yaml`: (success, stderr).
fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["check", "-c"])
        .arg(dir.join("sipdns.yaml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn corrupt_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("state.json.corrupt-"))
        })
        .collect()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

// ---- 3: start-up survives a bad state file ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_state_file_is_moved_aside_and_sipdns_starts() {
    // (what is at state.json, metric reason)
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        ("empty", Some(b""), "empty"),
        (
            "garbage JSON",
            Some(b"{\"version\": 1, \"drained\": [\x00"),
            "corrupt",
        ),
        ("a directory (unreadable)", None, "unreadable"),
    ];
    for (what, content, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        let state = dir.path().join("state.json");
        match content {
            Some(bytes) => std::fs::write(&state, bytes).unwrap(),
            None => std::fs::create_dir(&state).unwrap(),
        }
        // `sipdns check` (the unit's ExecStartPre) reads it, says what start-up will do
        // and does not fail: a bad drain list must not keep DNS down.
        let extra = "state_file: state.json\n";
        std::fs::write(
            dir.path().join("sipdns.yaml"),
            format!("{extra}upstream:\n  servers: [\"127.0.0.1:9\"]\n"),
        )
        .unwrap();
        let (ok, said) = check(dir.path());
        assert!(ok, "{what}: check failed: {said}");
        assert!(
            said.contains("state.json") && said.contains("would move it aside"),
            "{what}: check said {said}"
        );

        let s = spawn(dir.path(), extra, None).await;
        assert!(!state.exists(), "{what}: not moved aside");
        let aside = corrupt_copies(dir.path());
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
        // state.json.corrupt-YYYYMMDDTHHMMSSZ
        let stamp = name.trim_start_matches("state.json.corrupt-");
        assert_eq!(stamp.len(), 16, "{name}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
            "{name}"
        );
        let log = s.log();
        assert!(
            log.contains("ERROR") && log.contains("moved aside"),
            "{what}: {log}"
        );
        let text = Client::new(s.api, None).get("/metrics").await.text();
        assert_eq!(
            metric(
                &text,
                &format!("sipdns_state_file_quarantined_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{what}"
        );
        // It runs with an empty admin table, and a drain writes a fresh file.
        let targets = Client::new(s.api, Some(TOKEN)).get("/api/v1/targets").await;
        assert_eq!(targets.status, 200, "{what}");
        drop(s);
        let (ok, said) = check(dir.path());
        assert!(ok && said.contains("absent"), "{what}: {said}");
    }
}

// ---- 4: nothing leaks, nothing escapes zones/ ----

const NET: &str = "$ORIGIN example.net.
$TTL 300
@   IN SOA ns1.example.net. hostmaster.example.net. ( 1 3600 600 86400 30 )
    IN NS  ns1.example.net.
ns1 IN A   192.0.2.53
";

/// A TXT answer's strings, or the rcode when there is none.
async fn txt(dns: SocketAddr, name: &str) -> (ResponseCode, Vec<String>) {
    let (m, _) = client::udp(dns, &query(name, RecordType::TXT, Some(1232))).await;
    let data = m
        .answers
        .iter()
        .filter(|r| r.record_type() == RecordType::TXT)
        .map(|r| r.data.to_string())
        .collect();
    (m.metadata.response_code, data)
}

/// `POST /api/v1/reload`: (status, body).
async fn reload(api: &Client) -> (u16, String) {
    let r = api.send("POST", "/api/v1/reload", &[], None).await;
    (r.status, r.text())
}

#[tokio::test]
async fn a_symlink_out_of_zones_is_refused_and_readyz_leaks_nothing() {
    let s = server::start_with_api("", &[("example.net.zone", NET)]).await;
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    let zones = s.dir.path().join("zones");
    // The attacker's symlink: zones/evil.yaml -> the API token file (outside zones/).
    std::os::unix::fs::symlink(s.dir.path().join("api-token"), zones.join("evil.yaml")).unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("evil.yaml"),
        "the error names the file: {body}"
    );
    assert!(body.contains("outside the zones directory"), "{body}");
    assert!(!body.contains(API_TOKEN), "the token leaked: {body}");
    // The open route: a verdict and a reason code, nothing else.
    let open = Client::new(s.api.unwrap(), None).get("/readyz").await;
    assert_eq!(open.status, 200);
    assert_eq!(
        open.json(),
        json!({"ready": true, "reason": "last_reload_failed"})
    );
    // The detail, with the file named, is behind the token.
    assert_eq!(
        Client::new(s.api.unwrap(), None)
            .get("/api/v1/status")
            .await
            .status,
        401
    );
    let detail = c.get("/api/v1/status").await;
    assert_eq!(detail.status, 200);
    let err = detail.json()["reload"]["last_error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        err.contains("evil.yaml") && !err.contains(API_TOKEN),
        "{err}"
    );
    // A symlink that stays inside zones/ is fine.
    std::fs::remove_file(zones.join("evil.yaml")).unwrap();
    std::fs::create_dir(zones.join("sub")).unwrap();
    std::fs::write(
        zones.join("sub/real.yaml"),
        "zone: inside.example.org\nrecords:\n  - { name: '@', type: TXT, text: [inside] }\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("sub/real.yaml", zones.join("inside.example.org.yaml")).unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(txt(s.dns, "inside.example.org.").await.1, vec!["inside"]);
    let open = Client::new(s.api.unwrap(), None).get("/readyz").await;
    assert_eq!(open.json(), json!({"ready": true, "reason": "ok"}));
}

#[tokio::test]
async fn include_outside_zones_is_refused_inside_is_served() {
    let s = server::start_with_api("", &[("example.net.zone", NET)]).await;
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    let zones = s.dir.path().join("zones");
    // A file outside zones/ in zone-file syntax (what the issue saw served as a TXT).
    let outside = s.dir.path().join("secret.txt");
    std::fs::write(&outside, "secret IN TXT \"do-not-serve\"\n").unwrap();
    for include in [
        format!("$INCLUDE {}", outside.display()),
        "$INCLUDE ../secret.txt".to_owned(),
        format!("$INCLUDE \"{}\" ; quoted", outside.display()),
    ] {
        std::fs::write(zones.join("example.net.zone"), format!("{NET}{include}\n")).unwrap();
        let (status, body) = reload(&c).await;
        assert_eq!(status, 422, "{include}: {body}");
        assert!(
            body.contains("example.net.zone") && body.contains("$INCLUDE"),
            "{include}: {body}"
        );
        assert!(!body.contains("do-not-serve"), "{body}");
        assert_eq!(
            txt(s.dns, "secret.example.net.").await.0,
            ResponseCode::NXDomain,
            "{include}"
        );
    }
    // `$INCLUDE` anywhere else than a line's start is refused too (the lexer would take it).
    std::fs::write(
        zones.join("example.net.zone"),
        format!("{NET}$TTL 60 $INCLUDE {}\n", outside.display()),
    )
    .unwrap();
    assert_eq!(reload(&c).await.0, 422);
    // A symlink inside zones/ pointing out is refused by where it leads.
    std::os::unix::fs::symlink(&outside, zones.join("link.inc")).unwrap();
    std::fs::write(
        zones.join("example.net.zone"),
        format!("{NET}$INCLUDE link.inc\n"),
    )
    .unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("outside the zones directory"), "{body}");
    // Inside zones/: included and served.
    std::fs::write(zones.join("extra.inc"), "extra IN TXT \"included\"\n").unwrap();
    std::fs::write(
        zones.join("example.net.zone"),
        format!("{NET}$INCLUDE extra.inc ; ok\n"),
    )
    .unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(txt(s.dns, "extra.example.net.").await.1, vec!["included"]);
}

#[tokio::test]
async fn an_oversized_zone_file_is_refused() {
    let s = server::start_with_api(
        "zones:\n  max_file_size: 4096\n",
        &[("example.net.zone", NET)],
    )
    .await;
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    let zones = s.dir.path().join("zones");
    let mut big = NET.to_owned();
    for i in 0..200 {
        big.push_str(&format!("h{i} IN A 192.0.2.{}\n", i % 250 + 1));
    }
    assert!(big.len() > 4096);
    std::fs::write(zones.join("example.net.zone"), &big).unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body.contains("example.net.zone") && body.contains("zones.max_file_size"),
        "{body}"
    );
    // The running zone stays.
    let (m, _) = client::udp(s.dns, &query("h1.example.net.", RecordType::A, None)).await;
    assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
    // Small files under the limit that include each other past it are refused too.
    let chunk: String = big
        .lines()
        .skip(5)
        .take(100)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(chunk.len() < 4096 && 3 * chunk.len() > 4096);
    std::fs::write(zones.join("a.inc"), &chunk).unwrap();
    std::fs::write(
        zones.join("example.net.zone"),
        format!("{NET}$INCLUDE a.inc\n$INCLUDE a.inc\n$INCLUDE a.inc\n"),
    )
    .unwrap();
    let (status, body) = reload(&c).await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("max_file_size"), "{body}");
}

#[tokio::test]
async fn a_planted_symlink_at_the_temp_name_is_not_followed() {
    let s = server::start_with_api(
        "",
        &[(
            "pbx.example.org.yaml",
            "zone: pbx.example.org\nrecords:\n  - { name: server1, type: A, address: 192.0.2.10 }\n",
        )],
    )
    .await;
    let c = Client::new(s.api.unwrap(), Some(API_TOKEN));
    let zones = s.dir.path().join("zones");
    let victim = s.dir.path().join("victim.conf");
    std::fs::write(&victim, "precious\n").unwrap();
    let temp = zones.join(".pbx.example.org.yaml.tmp");
    std::os::unix::fs::symlink(&victim, &temp).unwrap();
    let rec = json!({"name": "server9", "type": "A", "address": "192.0.2.90"});
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &rec)
        .await;
    assert!((500..600).contains(&r.status), "{} {}", r.status, r.text());
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    assert!(
        std::fs::symlink_metadata(&temp)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    // A dangling one does not create the file it names either.
    std::fs::remove_file(&temp).unwrap();
    let created = s.dir.path().join("created-through-link");
    std::os::unix::fs::symlink(&created, &temp).unwrap();
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &rec)
        .await;
    assert!((500..600).contains(&r.status), "{}", r.status);
    assert!(!created.exists());
    // Once it is gone, the write goes through and leaves no temp file behind.
    std::fs::remove_file(&temp).unwrap();
    let r = c
        .json("POST", "/api/v1/zones/pbx.example.org/records", &[], &rec)
        .await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert!(!temp.exists());
}

// ---- 2: a bounded API ----

/// One attacker connection: `idle` sends nothing; otherwise a slowloris that sends a
/// request head one short header every 300 ms and never ends it. Returns when the server
/// closes it or `stop` is set; reconnects (after 1 s, so a long attack cannot exhaust the
/// client's ports) until `stop`. Counts connections the server cut.
async fn attacker(api: SocketAddr, idle: bool, stop: Arc<AtomicBool>, cut: Arc<AtomicUsize>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(Ok(mut s)) =
            tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(api)).await
        else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        if !idle {
            let _ = s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n").await;
        }
        let mut buf = [0u8; 256];
        // Bounded: 200 rounds of 300 ms is more than any phase of the test.
        for _ in 0..200 {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let closed = tokio::select! {
                r = s.read(&mut buf) => !matches!(r, Ok(n) if n > 0),
                () = tokio::time::sleep(Duration::from_millis(300)) => false,
            };
            if closed {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
            if !idle && s.write_all(b"X-Slow: 1\r\n").await.is_err() {
                cut.fetch_add(1, Ordering::Relaxed);
                break;
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// The value of one series in a scrape (0 when absent).
fn series(text: &str, name: &str) -> f64 {
    metric(text, name).unwrap_or(0.0)
}

/// Descriptors the process has open.
fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_flood_at_ulimit_256_takes_nothing_dns_and_probes_need() {
    const NOFILE: u64 = 256;
    let dir = tempfile::tempdir().unwrap();
    let zones = dir.path().join("zones");
    std::fs::create_dir(&zones).unwrap();
    std::fs::write(zones.join("example.net.zone"), NET).unwrap();
    let upstream = FakeUpstream::start().await;
    let sip_port = free_port();
    let _uas = sipp_uas(dir.path(), sip_port, Transport::Tcp);
    let extra = format!(
        "api:\n  request_timeout: 3s\nupstream:\n  servers: [\"{}\"]\n  timeout: 1s\n  attempts: 2\n\
         sip:\n  probe:\n    interval: 500ms\n    timeout: 400ms\n  domains:\n    - name: pbx.example.org\n      targets:\n        - {{ address: 127.0.0.1, port: {sip_port}, transport: tcp }}\n",
        upstream.addr()
    );
    let s = spawn(dir.path(), &extra, Some((NOFILE, NOFILE))).await;
    let pid = s.child.id();
    let c = Client::new(s.api, Some(TOKEN));
    let tcp_good = "sipdns_probes_total{result=\"good\",transport=\"tcp\"}";
    // The probe target is up before the attack.
    let mut before = String::new();
    for _ in 0..100 {
        before = c.get("/metrics").await.text();
        if series(&before, tcp_good) >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        series(&before, tcp_good) >= 2.0,
        "no good TCP probe before the attack"
    );
    let tcp_bad = |text: &str| {
        [
            "bad_code",
            "timeout",
            "unreachable",
            "refused",
            "reset",
            "tls",
            "error",
        ]
        .iter()
        .map(|r| {
            series(
                text,
                &format!("sipdns_probes_total{{result=\"{r}\",transport=\"tcp\"}}"),
            )
        })
        .sum::<f64>()
    };

    // Phase 1: 500 idle and 100 slowloris connections, re-opened as they are cut, for 8 s
    // (more than two request timeouts), while DNS, upstream, probes and a reload are used.
    let stop = Arc::new(AtomicBool::new(false));
    let cut = Arc::new(AtomicUsize::new(0));
    let mut attackers = Vec::new();
    for i in 0..600 {
        attackers.push(tokio::spawn(attacker(
            s.api,
            i < 500,
            stop.clone(),
            cut.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut checks = 0;
    let mut max_fds = 0;
    let mut reloaded = false;
    while started.elapsed() < Duration::from_secs(8) {
        // TCP DNS: a static record.
        let m = tokio::time::timeout(
            Duration::from_secs(2),
            client::tcp(s.dns, &query("ns1.example.net.", RecordType::A, None)),
        )
        .await
        .unwrap_or_else(|_| panic!("TCP DNS did not answer under the API flood\n{}", s.log()));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        // Forwarded over UDP: a fresh name each time, so a fresh upstream socket.
        let (m, _) = client::udp(
            s.dns,
            &query(&format!("q{checks}.fwd.example.org."), RecordType::A, None),
        )
        .await;
        assert_eq!(
            m.metadata.response_code,
            ResponseCode::NXDomain,
            "forwarding failed under the API flood (SERVFAIL: no socket for upstream?)"
        );
        // A reload half way: a new record in the zone file, SIGHUP, served.
        if !reloaded && started.elapsed() > Duration::from_secs(3) {
            std::fs::write(
                zones.join("example.net.zone"),
                format!("{NET}new IN A 192.0.2.44\n"),
            )
            .unwrap();
            kill(pid as i32, libc::SIGHUP).unwrap();
            reloaded = true;
        }
        max_fds = max_fds.max(open_fds(pid));
        checks += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (m, _) = client::udp(s.dns, &query("new.example.net.", RecordType::A, None)).await;
    assert_eq!(
        lines(&m.answers),
        vec!["new.example.net. A 192.0.2.44"],
        "the reload under the flood did not take"
    );
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.await.unwrap();
    }
    let cut = cut.load(Ordering::Relaxed);
    eprintln!(
        "API flood at ulimit -n {NOFILE}: {checks} rounds of TCP DNS + forwarded UDP ok, \
         {cut} attacker connections cut, at most {max_fds} descriptors open"
    );
    assert!(max_fds < NOFILE as usize, "{max_fds} descriptors open");
    // Connections over the limit closed at once, held ones cut by the deadline.
    assert!(cut >= 600, "only {cut} attacker connections were cut");

    // Phase 2: every slot held by slowloris connections; a legitimate request is turned
    // away, then served within 1 s of one slot freeing.
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut s = tokio::net::TcpStream::connect(s.api).await.unwrap();
        s.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut open = Vec::new();
    for s in held {
        let mut buf = [0u8; 1];
        match s.try_read(&mut buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => open.push(s),
            _ => {}
        }
    }
    let slots = open.len();
    assert!((1..=64).contains(&slots), "{slots} connections held");
    assert_eq!(
        status_of(s.api, "/livez").await,
        None,
        "served although every slot is held"
    );
    drop(open.pop());
    let freed = std::time::Instant::now();
    let mut served = None;
    for _ in 0..40 {
        if status_of(s.api, "/livez").await == Some(200) {
            served = Some(freed.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let served = served.expect("not served after a slot freed");
    eprintln!("API: {slots} slots held; served {served:?} after one freed");
    assert!(served < Duration::from_secs(1), "{served:?}");
    drop(open);

    // Probing never stopped: good TCP probes all along, none bad.
    let after = c.get("/metrics").await.text();
    let good = series(&after, tcp_good) - series(&before, tcp_good);
    assert!(good >= 8.0, "only {good} good TCP probes during the flood");
    assert_eq!(
        tcp_bad(&after),
        tcp_bad(&before),
        "TCP probes failed during the flood"
    );
    assert!(
        series(
            &after,
            "sipdns_api_connections_rejected_total{limit=\"max_connections\"}"
        ) > 0.0
    );
    let log = s.log();
    assert!(!log.contains("accept failed"), "{log}");
    assert!(!log.contains("Too many open files"), "{log}");
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    let s = spawn(dir.path(), "", Some((256, 1024))).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", s.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap()
        .to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&fields[3..5], ["1024", "1024"], "{line}");
}

// ---- 5: TLS that works out of the box ----

/// A CA certificate installed into the system trust store for one test; removed (and the
/// store rebuilt) when dropped, also when the test fails.
struct SystemCa {
    path: PathBuf,
}

impl SystemCa {
    /// Installs `pem` with `update-ca-certificates`. Needs root: without it the test fails
    /// and says so (CI runs as root); it never skips silently.
    fn install(pem: &Path) -> Self {
        // The effective UID, from /proc (no `unsafe` for geteuid).
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let euid = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or_default()
            .to_owned();
        assert_eq!(
            euid, "0",
            "this test installs a test CA into the system trust store \
             (/usr/local/share/ca-certificates + update-ca-certificates): run it as root, as CI does"
        );
        let dir = Path::new("/usr/local/share/ca-certificates");
        assert!(
            dir.is_dir() && Path::new("/usr/sbin/update-ca-certificates").is_file(),
            "no system trust store to install into: apt-get install -y ca-certificates"
        );
        let path = dir.join(format!("sipdns-test-{}.crt", std::process::id()));
        std::fs::copy(pem, &path).unwrap();
        // From here on, Drop removes it whatever happens next.
        let guard = Self { path };
        update_ca_certificates();
        guard
    }
}

impl Drop for SystemCa {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        update_ca_certificates();
    }
}

fn update_ca_certificates() {
    let out = Command::new("update-ca-certificates").output().unwrap();
    assert!(
        out.status.success() || std::thread::panicking(),
        "update-ca-certificates failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Polls `/api/v1/targets` (bounded) until the only target's health is `want`.
async fn wait_target(s: &Sipdns, want: &str, within: Duration) -> serde_json::Value {
    let c = Client::new(s.api, Some(TOKEN));
    let start = std::time::Instant::now();
    loop {
        let targets = c.get("/api/v1/targets").await.json();
        if targets[0]["health"] == want {
            return targets[0].clone();
        }
        assert!(
            start.elapsed() < within,
            "target not {want} within {within:?}: {targets}\n{}",
            s.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_targets_verify_against_the_system_store_without_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    let files = test_ca(dir.path(), "system", "tls.example.org");
    let (port, tls_port) = (free_port(), free_port());
    let _kamailio = kamailio(dir.path(), port, Some((&files, tls_port)));
    // verify: true (the default) and no ca_file: the system store is what is trusted.
    let extra = format!(
        "sip:\n  probe:\n    interval: 1s\n    timeout: 900ms\n    fall: 2\n  domains:\n    - name: pbx.example.org\n      targets:\n        - {{ address: 127.0.0.1, port: {tls_port}, transport: tls, host: tls.example.org }}\n"
    );
    // Control: the test CA is not in the store yet, so the certificate is refused.
    {
        let s = spawn(dir.path(), &extra, None).await;
        let t = wait_target(&s, "down", Duration::from_secs(20)).await;
        assert!(
            t["last_reason"]
                .as_str()
                .unwrap_or_default()
                .contains("TLS"),
            "{t}"
        );
    }
    let _ca = SystemCa::install(&files.ca);
    let s = spawn(dir.path(), &extra, None).await;
    let t = wait_target(&s, "up", Duration::from_secs(20)).await;
    assert_eq!(t["last_code"], 200, "{t}");
}

/// Sends a request head, then `body_len` body bytes one every 200 ms; returns the status of
/// the reply (if any) and when it came.
async fn trickle(api: SocketAddr, token: Option<&str>, body_len: usize) -> (Option<u16>, Duration) {
    let start = std::time::Instant::now();
    let mut s = tokio::net::TcpStream::connect(api).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "POST /api/v1/zones HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {body_len}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 4096];
    // Bounded: at most 100 bytes trickled (20 s), far past any deadline under test.
    for _ in 0..body_len.min(100) {
        tokio::select! {
            r = s.read(&mut buf) => match r {
                Ok(n) if n > 0 => { raw.extend_from_slice(&buf[..n]); break; }
                _ => break,
            },
            () = tokio::time::sleep(Duration::from_millis(200)) => {
                if s.write_all(b" ").await.is_err() {
                    break;
                }
            }
        }
    }
    let status = std::str::from_utf8(raw.get(..12).unwrap_or_default())
        .ok()
        .and_then(|h| h.split(' ').nth(1)?.parse().ok());
    (status, start.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_bodies_have_a_deadline_and_are_read_only_with_the_token() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    let s = spawn(dir.path(), "api:\n  request_timeout: 2s\n", None).await;
    // With the token: the body must arrive within 2 s of the headers.
    let (status, after) = trickle(s.api, Some(TOKEN), 1000).await;
    assert_eq!(status, Some(400), "{after:?}");
    assert!(
        after >= Duration::from_millis(1800) && after < Duration::from_secs(4),
        "{after:?}"
    );
    // Without it: refused before any of the body is read.
    let (status, after) = trickle(s.api, None, 1_000_000).await;
    assert_eq!(status, Some(401));
    assert!(after < Duration::from_secs(1), "{after:?}");
    // The body limit is kept: over 2 MiB is 413.
    // (Written and read leniently: the server may answer and close before the whole body
    // is sent.)
    let mut c = tokio::net::TcpStream::connect(s.api).await.unwrap();
    let head = format!(
        "POST /api/v1/zones HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        3 << 20
    );
    let big = vec![b' '; 3 << 20];
    let (mut rd, mut wr) = c.split();
    let (_, reply) = tokio::join!(
        async {
            let _ = wr.write_all(head.as_bytes()).await;
            let _ = wr.write_all(&big).await;
        },
        async {
            let mut raw = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut raw)).await;
            raw
        }
    );
    let status = std::str::from_utf8(reply.get(..12).unwrap_or_default())
        .ok()
        .and_then(|h| h.split(' ').nth(1)?.parse::<u16>().ok());
    assert_eq!(status, Some(413));
}
