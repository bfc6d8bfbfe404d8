//! The deployment kit in `deploy/` cannot rot: every file is loaded or checked here, with
//! the tool that will read it in production where one runs on this machine.
//!
//! - systemd: `systemd-analyze verify` and `security` on the unit (package `systemd`),
//!   `systemd-sysusers` / `systemd-tmpfiles` into a scratch root, the production config
//!   loaded with zones, and the paths the unit grants matching the config's; the real
//!   binary tells a notification socket `READY=1` only after its first probe round.
//! - DHCP: `kea-dhcp4 -t` (`kea-dhcp4-server`), `dnsmasq --test` (`dnsmasq-base`).
//! - Prometheus: `promtool check config`, `check rules`, `test rules` (`prometheus`).
//! - Grafana and alert rules: every metric they use exists in sipdns' `/metrics`.
//! - Container: every file the Dockerfile copies exists; its config loads where the
//!   image puts it; the exposed ports are the ones it listens on (Docker does not run here).
//! - Kubernetes: every manifest parses; the embedded config and zones load; ports, paths,
//!   labels and addresses agree across the manifests and with the DHCP examples.
//!
//! A missing tool fails the test and names the Debian package.

use std::{
    collections::BTreeSet,
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
    time::{Duration, Instant},
};

use hickory_proto::rr::RecordType;
use serde::Deserialize as _;
use serde_json::Value;
use sipdns::{config::Config, record::RType};

use crate::{
    common::process::{free_port, kill, require},
    common::{
        client::{self, query},
        fake_upstream::{FakeUpstream, a},
        server,
    },
};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    root().join("deploy").join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(deploy(rel)).unwrap_or_else(|e| panic!("deploy/{rel}: {e}"))
}

/// Runs `bin` (found on PATH or in sbin, else the test fails naming `package`).
fn run(bin: &str, package: &str, args: &[&str], cwd: &Path) -> Output {
    let path = require(bin, package);
    Command::new(path)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"))
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Every YAML document of `text`, as JSON values.
fn yaml_docs(name: &str, text: &str) -> Vec<Value> {
    yaml_serde::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{name}: {e}")))
        .filter(|v| !v.is_null())
        .collect()
}

/// Copies a directory's regular files (not recursive; zone directories are flat).
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

/// The value of every `Key=` line of a unit file section, in order.
fn unit_values(unit: &str, key: &str) -> Vec<String> {
    unit.lines()
        .filter_map(|l| l.trim().strip_prefix(key)?.strip_prefix('='))
        .map(|v| v.trim().to_owned())
        .collect()
}

fn unit_value(unit: &str, key: &str) -> String {
    let v = unit_values(unit, key);
    assert_eq!(v.len(), 1, "exactly one {key}= in the unit: {v:?}");
    v[0].clone()
}

/// The production config of the systemd deployment, loaded where the unit puts it (with
/// the repository's example zones in its `zones/`).
fn production_config(dir: &Path) -> Config {
    let etc = dir.join("etc/sipdns");
    copy_dir(&root().join("zones"), &etc.join("zones"));
    std::fs::write(etc.join("sipdns.yaml"), read("systemd/sipdns.yaml")).unwrap();
    let (cfg, zones) = sipdns::state::load(&etc.join("sipdns.yaml"))
        .unwrap_or_else(|e| panic!("deploy/systemd/sipdns.yaml: {e:#}"));
    assert!(zones.record_count() > 0);
    cfg
}

// ---- systemd ----

#[test]
fn systemd_unit_passes_systemd_analyze_verify_and_security() {
    let unit = read("systemd/sipdns.service");
    let dir = tempfile::tempdir().unwrap();
    // verify checks that every Exec binary exists: point them at the binary under test.
    let local = unit.replace("/usr/local/bin/sipdns", env!("CARGO_BIN_EXE_sipdns"));
    let path = dir.path().join("sipdns.service");
    std::fs::write(&path, &local).unwrap();
    let p = path.to_str().unwrap();
    let out = run("systemd-analyze", "systemd", &["verify", p], dir.path());
    // Unknown keys and bad values are only warnings (exit 0): any output is a failure.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify deploy/systemd/sipdns.service:\n{}",
        text(&out)
    );
    // Exposure 0 (locked down) .. 10 (unprotected); systemd calls <= 2 "OK".
    let out = run(
        "systemd-analyze",
        "systemd",
        &["security", "--offline=yes", "--threshold=20", p],
        dir.path(),
    );
    let report = text(&out);
    let overall = report
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("(no overall line)");
    eprintln!("systemd-analyze security: {overall}");
    assert!(out.status.success(), "exposure above 2.0:\n{report}");

    // What the issue asks of the unit.
    assert_eq!(unit_value(&unit, "Type"), "notify");
    assert_eq!(unit_value(&unit, "User"), "sipdns");
    assert_eq!(
        unit_value(&unit, "AmbientCapabilities"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(
        unit_value(&unit, "CapabilityBoundingSet"),
        "CAP_NET_BIND_SERVICE"
    );
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");
    assert_eq!(unit_value(&unit, "ProtectSystem"), "strict");
    let reload = unit_values(&unit, "ExecReload");
    assert!(
        reload.iter().any(|r| r == "/bin/kill -HUP $MAINPID"),
        "systemctl reload sends SIGHUP: {reload:?}"
    );
    assert!(reload[0].contains("sipdns check -c"), "check before SIGHUP");

    // The unit and the config it runs agree on every path.
    let start = unit_value(&unit, "ExecStart");
    let config_path = start
        .split_once(" -c ")
        .map(|(_, p)| p.trim())
        .expect("ExecStart has -c");
    assert_eq!(config_path, "/etc/sipdns/sipdns.yaml");
    assert_eq!(
        unit_value(&unit, "ExecStartPre"),
        start.replace(" run ", " check ")
    );
    let cfg = production_config(dir.path());
    let zones = cfg
        .zones
        .dir
        .strip_prefix(dir.path())
        .map(|p| Path::new("/").join(p))
        .unwrap();
    assert_eq!(
        unit_value(&unit, "ReadWritePaths"),
        zones.display().to_string(),
        "the API writes zone edits to zones.dir: the unit must let it"
    );
    let state = cfg.state_file.clone().expect("state_file set");
    assert_eq!(
        state.parent().unwrap(),
        Path::new("/var/lib").join(unit_value(&unit, "StateDirectory")),
        "state_file lives in the unit's StateDirectory"
    );
    let cred = unit_value(&unit, "LoadCredential");
    let (id, _) = cred.split_once(':').unwrap();
    assert_eq!(
        cfg.api.token_file.clone().unwrap(),
        Path::new("/run/credentials/sipdns.service").join(id),
        "api.token_file is the unit's credential"
    );
    // Port 53 (what CAP_NET_BIND_SERVICE is for) on a LAN address.
    assert!(
        cfg.dns
            .listen
            .iter()
            .any(|a| a.port() == 53 && !a.ip().is_loopback()),
        "{:?}",
        cfg.dns.listen
    );
}

#[test]
fn systemd_sysusers_and_tmpfiles_make_the_user_and_directories() {
    let scratch = tempfile::tempdir().unwrap();
    let r = scratch.path();
    std::fs::create_dir_all(r.join("etc")).unwrap();
    let root_arg = format!("--root={}", r.display());
    let users = deploy("systemd/sipdns.sysusers.conf");
    let out = run(
        "systemd-sysusers",
        "systemd",
        &[&root_arg, users.to_str().unwrap()],
        r,
    );
    assert!(out.status.success(), "{}", text(&out));
    let passwd = std::fs::read_to_string(r.join("etc/passwd")).unwrap();
    let line = passwd
        .lines()
        .find(|l| l.starts_with("sipdns:"))
        .unwrap_or_else(|| panic!("no sipdns user: {passwd}"));
    assert!(
        line.ends_with(":/var/lib/sipdns:/usr/sbin/nologin"),
        "{line}"
    );
    let gid: u32 = line.split(':').nth(3).unwrap().parse().unwrap();

    let dirs = deploy("systemd/sipdns.tmpfiles.conf");
    let out = run(
        "systemd-tmpfiles",
        "systemd",
        &[&root_arg, "--create", dirs.to_str().unwrap()],
        r,
    );
    assert!(out.status.success(), "{}", text(&out));
    use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
    for (d, mode) in [("etc/sipdns", 0o750), ("etc/sipdns/zones", 0o770)] {
        let m = std::fs::metadata(r.join(d)).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, mode, "{d}");
        assert_eq!(m.gid(), gid, "{d} group sipdns");
    }
}

#[test]
fn systemd_production_config_loads_and_rejects_an_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    production_config(dir.path());
    let text = read("systemd/sipdns.yaml");
    let bad = text.replacen("dns:\n", "dns:\n  no_such_key: 1\n", 1);
    assert_ne!(bad, text);
    let e = Config::from_text(Path::new("sipdns.yaml"), &bad)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no_such_key"), "{e}");
}

/// Reads notification datagrams until one contains `want` (bounded).
fn wait_notify(sock: &UnixDatagram, want: &str, bound: Duration) -> (String, Duration) {
    let t = Instant::now();
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while t.elapsed() < bound {
        sock.set_read_timeout(Some(
            bound
                .saturating_sub(t.elapsed())
                .max(Duration::from_millis(1)),
        ))
        .unwrap();
        match sock.recv(&mut buf) {
            Ok(n) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if msg.contains(want) {
                    return (msg, t.elapsed());
                }
                seen.push(msg);
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("notify socket: {e}"),
        }
    }
    panic!("no {want:?} within {bound:?}; got {seen:?}");
}

/// `sipdns run` as systemd starts it (`Type=notify`): `READY=1` comes after the first probe
/// round, which here takes a full probe timeout (the only target accepts TCP connections
/// but never answers); `WATCHDOG=1` follows; SIGTERM brings `STOPPING=1` and a clean exit.
fn notify_run(socket_arg: &str, server: UnixDatagram) {
    let dir = tempfile::tempdir().unwrap();
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = hung.local_addr().unwrap().port();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    let probe_timeout = Duration::from_millis(1500);
    std::fs::write(
        dir.path().join("sipdns.yaml"),
        format!(
            "dns:\n  listen: [\"127.0.0.1:0\"]\napi:\n  listen: null\n\
             upstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\n\
             sip:\n  probe:\n    interval: 5s\n    timeout: {}ms\n    startup_grace: 20s\n  \
             domains:\n    - name: pbx.example.org\n      targets:\n        - {{ address: 127.0.0.1, port: {port}, transport: tcp }}\n",
            probe_timeout.as_millis()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("sipdns.log")).unwrap();
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["run", "-c"])
        .arg(dir.path().join("sipdns.yaml"))
        .env("NOTIFY_SOCKET", socket_arg)
        .env("WATCHDOG_USEC", "400000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = child.id();
    let guard_log = dir.path().join("sipdns.log");
    let (ready, _) = wait_notify(&server, "READY=1", Duration::from_secs(15));
    let after = started.elapsed();
    let log_text = || std::fs::read_to_string(&guard_log).unwrap_or_default();
    assert!(
        after >= probe_timeout.mul_f64(0.9),
        "READY=1 after {after:?}, before the first probe round could finish ({probe_timeout:?}):\n{}",
        log_text()
    );
    assert!(
        ready.contains("STATUS=serving DNS on 127.0.0.1:"),
        "{ready}"
    );
    assert!(ready.contains("1 SIP targets probed"), "{ready}");
    eprintln!("READY=1 {after:?} after start (probe timeout {probe_timeout:?}): {ready:?}");
    wait_notify(&server, "WATCHDOG=1", Duration::from_secs(2));
    kill(pid as libc::pid_t, libc::SIGTERM).unwrap();
    wait_notify(&server, "STOPPING=1", Duration::from_secs(5));
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let _guard = Kill(child);
    assert!(status.success(), "{status}:\n{}", log_text());
    drop(hung);
}

#[test]
fn systemd_notify_ready_after_the_first_probe_round_on_a_path_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let server = UnixDatagram::bind(&path).unwrap();
    notify_run(path.to_str().unwrap(), server);
}

#[test]
fn systemd_notify_ready_on_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt as _;
    let name = format!("sipdns-it-notify-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let server = UnixDatagram::bind_addr(&addr).unwrap();
    notify_run(&format!("@{name}"), server);
}

// ---- DHCP ----

/// The DNS servers the DHCP examples hand out.
fn dhcp_dns_servers() -> Vec<String> {
    let kea = read("dhcp/kea-dhcp4.conf");
    let line = kea
        .lines()
        .find(|l| l.contains("\"domain-name-servers\""))
        .expect("kea sets domain-name-servers");
    let data = line.split("\"data\": \"").nth(1).unwrap();
    let kea_servers: Vec<String> = data
        .split('"')
        .next()
        .unwrap()
        .split(',')
        .map(|s| s.trim().to_owned())
        .collect();
    let dnsmasq = read("dhcp/dnsmasq.conf");
    let line = dnsmasq
        .lines()
        .find(|l| l.starts_with("dhcp-option=option:dns-server,"))
        .expect("dnsmasq sets option:dns-server");
    let dnsmasq_servers: Vec<String> = line
        .trim_start_matches("dhcp-option=option:dns-server,")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(kea_servers, dnsmasq_servers);
    kea_servers
}

#[test]
fn dhcp_examples_pass_kea_and_dnsmasq_checks() {
    let dir = deploy("dhcp");
    let out = run(
        "kea-dhcp4",
        "kea-dhcp4-server",
        &["-t", "kea-dhcp4.conf"],
        &dir,
    );
    assert!(out.status.success(), "kea-dhcp4 -t:\n{}", text(&out));
    let out = run(
        "dnsmasq",
        "dnsmasq-base",
        &["--test", "-C", "dnsmasq.conf"],
        &dir,
    );
    assert!(out.status.success(), "dnsmasq --test:\n{}", text(&out));

    // The router note names the same servers, and every DNS server handed out is one the
    // production config listens on or the Kubernetes Services announce.
    let servers = dhcp_dns_servers();
    let note = read("dhcp/routers.md");
    for s in &servers {
        assert!(note.contains(s.as_str()), "routers.md does not name {s}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = production_config(tmp.path());
    let first: SocketAddr = format!("{}:53", servers[0]).parse().unwrap();
    assert!(cfg.dns.listen.contains(&first), "{:?}", cfg.dns.listen);
    let lb: Vec<String> = kubernetes()
        .iter()
        .filter(|d| d["kind"] == "Service" && d["spec"]["type"] == "LoadBalancer")
        .map(|d| {
            d["metadata"]["annotations"]["metallb.universe.tf/loadBalancerIPs"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(lb, servers, "Kubernetes Services = DHCP option 6");
}

// ---- Prometheus and Grafana ----

#[test]
fn prometheus_config_and_alert_rules_pass_promtool() {
    let dir = deploy("prometheus");
    for args in [
        &["check", "config", "prometheus.yml"][..],
        &["check", "rules", "sipdns.rules.yml"],
        &["test", "rules", "sipdns.rules.test.yml"],
    ] {
        let out = run("promtool", "prometheus", args, &dir);
        assert!(
            out.status.success(),
            "promtool {}:\n{}",
            args.join(" "),
            text(&out)
        );
    }
    // The scrape targets are the sipdns API listeners of the production config.
    let prom = yaml_docs("prometheus.yml", &read("prometheus/prometheus.yml"));
    let targets: Vec<String> = prom[0]["scrape_configs"][0]["static_configs"][0]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect();
    let tmp = tempfile::tempdir().unwrap();
    let cfg = production_config(tmp.path());
    let api = cfg.api.listen.unwrap().to_string();
    assert!(targets.contains(&api), "{targets:?} lacks {api}");
    // Each alert the issue asks for.
    let rules = read("prometheus/sipdns.rules.yml");
    for (alert, metric) in [
        ("SipdnsTargetDown", "sipdns_target_up"),
        ("SipdnsDomainAllTargetsDown", "sipdns_domain_targets_up"),
        ("SipdnsUpstreamFailing", "sipdns_upstream_requests_total"),
        ("SipdnsReloadFailed", "sipdns_config_last_reload_successful"),
        (
            "SipdnsZoneStale",
            "sipdns_zone_last_success_timestamp_seconds",
        ),
        ("SipdnsZoneExpired", "sipdns_zone_expiry_seconds"),
    ] {
        assert!(rules.contains(&format!("alert: {alert}")), "{alert}");
        assert!(rules.contains(metric), "{metric}");
    }
}

/// Every `sipdns_*` name in `expr`.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("sipdns_") {
        let start = i + pos;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |n| start + n);
        if boundary {
            out.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

/// Every PromQL expression in a dashboard (any `expr` or templating `query` string).
fn dashboard_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", Value::String(s)) => out.push(s.clone()),
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| dashboard_exprs(v, out)),
        _ => {}
    }
}

/// The metric families of a scrape taken after enough traffic that every labelled
/// family has a series: a SIP domain with a target, a static and a forwarded answer, and a
/// secondary zone served from its disk copy.
async fn exported_families() -> BTreeSet<String> {
    let secondary = tempfile::tempdir().unwrap();
    std::fs::write(
        secondary.path().join("office.example.org.zone"),
        "$ORIGIN office.example.org.\n@ 60 IN SOA ns.example.org. a.example.org. 1 60 10 86400 30\n",
    )
    .unwrap();
    let up = FakeUpstream::start().await;
    up.answer(
        "www.example.net",
        RType::A,
        vec![a("www.example.net", 300, "192.0.2.80")],
    );
    let port = free_port();
    let zone = format!(
        "zone: pbx.example.org\nrecords:\n  - {{ name: _sip._udp, type: SRV, priority: 10, weight: 1, port: {port}, target: server1 }}\n  - {{ name: server1, type: A, address: 127.0.0.1 }}\n"
    );
    let cfg = format!(
        "sip:\n  probe:\n    interval: 200ms\n    timeout: 150ms\n  domains:\n    - name: pbx.example.org\nupstream:\n  servers: [\"{}\"]\n  timeout: 500ms\n  attempts: 1\nzones:\n  secondary_dir: {}\n  secondary:\n    - {{ zone: office.example.org, primaries: [\"127.0.0.1:9\"] }}\n",
        up.addr(),
        secondary.path().display()
    );
    let s = server::start(&cfg, &[("pbx.yaml", &zone)]).await;
    let t = Instant::now();
    while s.server().prober.targets().is_empty() {
        assert!(t.elapsed() < Duration::from_secs(5), "no target discovered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    client::udp(
        s.dns,
        &query("_sip._udp.pbx.example.org.", RecordType::SRV, None),
    )
    .await;
    client::udp(s.dns, &query("www.example.net.", RecordType::A, None)).await;
    let scrape = s.server().metrics.encode();
    scrape
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let (name, kind) = l.split_once(' ').unwrap();
            let mut names = vec![name.to_owned()];
            if kind == "histogram" {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
            names
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_dashboard_and_alert_rules_use_only_exported_metrics() {
    let dash: Value = serde_json::from_str(&read("grafana/sipdns.json"))
        .unwrap_or_else(|e| panic!("deploy/grafana/sipdns.json: {e}"));
    assert_eq!(dash["uid"], "sipdns");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
        let g = &p["gridPos"];
        assert!(
            g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
            "{p}"
        );
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        assert!(
            !p["targets"].as_array().unwrap().is_empty(),
            "{}",
            p["title"]
        );
    }
    let mut exprs = Vec::new();
    dashboard_exprs(&dash, &mut exprs);
    let rules = yaml_docs("sipdns.rules.yml", &read("prometheus/sipdns.rules.yml"));
    for g in rules[0]["groups"].as_array().unwrap() {
        for r in g["rules"].as_array().unwrap() {
            exprs.push(r["expr"].as_str().unwrap().to_owned());
        }
    }
    let used: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();
    assert!(used.len() >= 10, "{used:?}");
    let exported = exported_families().await;
    let missing: Vec<&String> = used.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by the dashboard or the alerts but not in /metrics: {missing:?}\nexported: {exported:?}"
    );
}

// ---- container ----

/// Dockerfile instructions, continuation lines joined, comments dropped.
fn dockerfile() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in read("container/Dockerfile").lines() {
        let l = line.trim();
        if cur.is_empty() && (l.is_empty() || l.starts_with('#')) {
            continue;
        }
        if let Some(part) = l.strip_suffix('\\') {
            cur.push_str(part);
            cur.push(' ');
            continue;
        }
        cur.push_str(l);
        let (ins, rest) = cur.split_once(' ').unwrap_or((&cur, ""));
        out.push((ins.to_ascii_uppercase(), rest.trim().to_owned()));
        cur.clear();
    }
    out
}

#[test]
fn container_recipe_copies_existing_files_and_its_config_loads() {
    let ins = dockerfile();
    let image = tempfile::tempdir().unwrap();
    let mut copied = 0;
    for (_, args) in ins.iter().filter(|(i, _)| i == "COPY") {
        let words: Vec<&str> = args
            .split_whitespace()
            .filter(|w| !w.starts_with("--chown") && !w.starts_with("--chmod"))
            .collect();
        if words[0].starts_with("--from") {
            continue;
        }
        let (dst, srcs) = words.split_last().unwrap();
        for src in srcs {
            let from = root().join(src);
            assert!(
                from.exists(),
                "Dockerfile copies {src}, which does not exist"
            );
            copied += 1;
            // Lay out the final stage's files (the build stage copies into /src).
            if dst.starts_with("/etc/") {
                let to = image.path().join(dst.trim_start_matches('/'));
                if from.is_dir() {
                    copy_dir(&from, &to);
                } else {
                    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
                    std::fs::copy(&from, &to).unwrap();
                }
            }
        }
    }
    assert!(copied >= 5, "{ins:?}");
    // The Rust image is new enough for the crate.
    let from = &ins.iter().find(|(i, _)| i == "FROM").unwrap().1;
    let version = from
        .strip_prefix("rust:")
        .and_then(|v| v.split('-').next())
        .unwrap();
    let manifest = std::fs::read_to_string(root().join("Cargo.toml")).unwrap();
    let needed = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    let v = |s: &str| -> Vec<u32> { s.split('.').map(|p| p.parse().unwrap()).collect() };
    assert!(
        v(version) >= v(needed),
        "rust:{version} < rust-version {needed}"
    );
    // The config CMD names loads with the zones where the image puts them.
    let cmd = &ins.iter().find(|(i, _)| i == "CMD").unwrap().1;
    let cmd: Vec<String> = serde_json::from_str(cmd).unwrap();
    let config = cmd.iter().skip_while(|a| *a != "-c").nth(1).unwrap();
    let local = image.path().join(config.trim_start_matches('/'));
    let (cfg, zones) =
        sipdns::state::load(&local).unwrap_or_else(|e| panic!("{config} in the image: {e:#}"));
    assert!(zones.record_count() > 0);
    // EXPOSE lists what the config listens on.
    let expose = &ins.iter().find(|(i, _)| i == "EXPOSE").unwrap().1;
    for a in &cfg.dns.listen {
        for proto in ["udp", "tcp"] {
            let p = format!("{}/{proto}", a.port());
            assert!(
                expose.split_whitespace().any(|e| e == p),
                "EXPOSE lacks {p}"
            );
        }
    }
    let api = cfg.api.listen.unwrap().port();
    assert!(
        expose.contains(&format!("{api}/tcp")),
        "EXPOSE lacks the API"
    );
    // Unprivileged, and the build context leaves out target/.
    assert!(ins.iter().any(|(i, a)| i == "USER" && !a.starts_with('0')));
    let ignore = read("container/Dockerfile.dockerignore");
    assert!(ignore.lines().any(|l| l.trim() == "target"));
}

// ---- Kubernetes ----

/// Every document of every manifest the kustomization lists (which must be every file).
fn kubernetes() -> Vec<Value> {
    let kust = yaml_docs("kustomization.yaml", &read("kubernetes/kustomization.yaml"));
    let listed: BTreeSet<String> = kust[0]["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r.as_str().unwrap().to_owned())
        .collect();
    let present: BTreeSet<String> = std::fs::read_dir(deploy("kubernetes"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
        .collect();
    assert_eq!(listed, present, "kustomization.yaml lists every manifest");
    let mut docs = Vec::new();
    for f in &listed {
        for d in yaml_docs(f, &read(&format!("kubernetes/{f}"))) {
            for key in ["apiVersion", "kind"] {
                assert!(d[key].is_string(), "{f}: a document without {key}");
            }
            assert!(
                d["metadata"]["name"].is_string(),
                "{f}: unnamed {}",
                d["kind"]
            );
            docs.push(d);
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

#[test]
fn kubernetes_manifests_parse_and_agree_with_the_embedded_config() {
    let docs = kubernetes();
    let config_map = find(&docs, "ConfigMap", "sipdns-config");
    let zones_map = find(&docs, "ConfigMap", "sipdns-zones");
    let sts = find(&docs, "StatefulSet", "sipdns");
    let pod = &sts["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(sts["spec"]["replicas"], 2, "the site's two DNS servers");

    // The embedded config, at the path the container is told.
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let config_path = args.iter().skip_while(|a| **a != "-c").nth(1).unwrap();
    let text = config_map["data"]["sipdns.yaml"].as_str().unwrap();
    let cfg = Config::from_text(Path::new(config_path), text)
        .unwrap_or_else(|e| panic!("ConfigMap sipdns-config: {e}"));
    let mounts = container["volumeMounts"].as_array().unwrap();
    let mount_of = |volume: &str| -> (String, &Value) {
        let m = mounts.iter().find(|m| m["name"] == volume).unwrap();
        let v = pod["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == volume)
            .unwrap();
        (m["mountPath"].as_str().unwrap().to_owned(), v)
    };
    let (config_dir, config_vol) = mount_of("config");
    assert_eq!(format!("{config_dir}/sipdns.yaml"), *config_path);
    assert_eq!(config_vol["configMap"]["name"], "sipdns-config");
    let (zones_dir, zones_vol) = mount_of("zones");
    assert_eq!(Path::new(&zones_dir), cfg.zones.dir);
    assert_eq!(zones_vol["configMap"]["name"], "sipdns-zones");

    // Config and zones load together, laid out as the pod sees them.
    let tmp = tempfile::tempdir().unwrap();
    let zdir = tmp.path().join("zones");
    std::fs::create_dir(&zdir).unwrap();
    for (name, body) in zones_map["data"].as_object().unwrap() {
        std::fs::write(zdir.join(name), body.as_str().unwrap()).unwrap();
    }
    let local = text.replace(&zones_dir, zdir.to_str().unwrap());
    std::fs::write(tmp.path().join("sipdns.yaml"), local).unwrap();
    let (_, zones) = sipdns::state::load(&tmp.path().join("sipdns.yaml"))
        .unwrap_or_else(|e| panic!("ConfigMaps sipdns-config + sipdns-zones: {e:#}"));
    assert!(zones.record_count() > 0);

    // Ports: the container's are the config's; probes hit the API; every Service port
    // names a container port.
    let ports = container["ports"].as_array().unwrap();
    let port_named = |n: &str| {
        ports
            .iter()
            .find(|p| p["name"] == n)
            .unwrap_or_else(|| panic!("no container port {n}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let dns_port = u64::from(cfg.dns.listen[0].port());
    assert_eq!(port_named("dns-udp"), dns_port);
    assert_eq!(port_named("dns-tcp"), dns_port);
    assert_eq!(port_named("api"), u64::from(cfg.api.listen.unwrap().port()));
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/livez");
    assert_eq!(
        container["securityContext"]["readOnlyRootFilesystem"], true,
        "sipdns writes nothing but its state file (null here)"
    );
    assert!(cfg.state_file.is_none());

    // One LoadBalancer Service per replica, keeping the phones' addresses for the ACL.
    let pod_labels = &sts["spec"]["template"]["metadata"]["labels"];
    let lbs: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == "Service" && d["spec"]["type"] == "LoadBalancer")
        .collect();
    assert_eq!(lbs.len(), 2);
    for (i, svc) in lbs.iter().enumerate() {
        let spec = &svc["spec"];
        assert_eq!(spec["externalTrafficPolicy"], "Local");
        assert_eq!(
            spec["selector"]["statefulset.kubernetes.io/pod-name"],
            format!("sipdns-{i}")
        );
        for p in spec["ports"].as_array().unwrap() {
            assert_eq!(p["port"], 53);
            port_named(p["targetPort"].as_str().unwrap());
        }
    }
    let headless = find(&docs, "Service", "sipdns");
    assert_eq!(sts["spec"]["serviceName"], "sipdns");
    assert_eq!(headless["spec"]["clusterIP"], "None");
    // Every selector matches the pods.
    for d in &docs {
        let sel = match d["kind"].as_str().unwrap() {
            "Service" => &d["spec"]["selector"],
            "PodDisruptionBudget" | "StatefulSet" => &d["spec"]["selector"]["matchLabels"],
            _ => continue,
        };
        for (k, v) in sel.as_object().unwrap() {
            if k != "statefulset.kubernetes.io/pod-name" {
                assert_eq!(&pod_labels[k], v, "{} selector {k}", d["metadata"]["name"]);
            }
        }
    }
    // Replicas on different nodes.
    assert_eq!(
        pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
}
