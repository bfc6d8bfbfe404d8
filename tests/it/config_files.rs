//! Every shipped config loads; bad configs and zones are rejected with file, line and
//! field; `sipdns check` and `sipdns run` behave on them.

use std::{path::Path, process::Command};

fn shipped_configs() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut out = Vec::new();
    for dir in ["deploy", "tests/fixtures/configs"] {
        for e in std::fs::read_dir(root.join(dir)).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".yaml") && name.contains("sipdns")
                || dir != "deploy" && name.ends_with(".yaml")
            {
                out.push(p);
            }
        }
    }
    assert!(out.len() >= 2, "{out:?}");
    out
}

#[test]
fn every_shipped_config_loads_with_its_zones() {
    for p in shipped_configs() {
        sipdns::state::load(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
    }
}

#[test]
fn every_shipped_config_rejects_an_unknown_key() {
    for p in shipped_configs() {
        let text = std::fs::read_to_string(&p).unwrap();
        let bad = text.replacen("dns:\n", "dns:\n  no_such_key: 1\n", 1);
        assert_ne!(bad, text, "{} has no dns: section", p.display());
        let e = sipdns::config::Config::from_text(&p, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no_such_key"), "{e}");
        assert!(e.contains(&format!("{}:", p.display())), "{e}");
    }
}

fn sipdns(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn check_accepts_the_example_and_rejects_a_bad_zone_with_file_and_line() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = sipdns(&[
        "check",
        "-c",
        root.join("deploy/sipdns.example.yaml").to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/example.net.zone"),
        "$ORIGIN example.net.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\ngw IN A 192.0.2.300\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sipdns.yaml"),
        "dns:\n  listen: [\"127.0.0.1:0\"]\nupstream:\n  servers: [\"127.0.0.1:9\"]\napi:\n  listen: null\n",
    )
    .unwrap();
    let cfg = dir.path().join("sipdns.yaml");
    let out = sipdns(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("example.net.zone:4"), "{err}");
    // The server does not start with it either.
    let out = sipdns(&["run", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("example.net.zone:4"));
}

#[test]
fn check_lists_every_error_with_its_field_in_zone_files_too() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/example.net.zone"),
        "$ORIGIN example.net.\n$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 30\n\
         gw IN A 192.0.2.300\nok IN A 192.0.2.1\n_sip._udp IN SRV 10 1 many gw\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("zones/pbx.example.org.yaml"),
        [
            "zone: pbx.example.org",
            "records:",
            "  - { name: a, type: A, address: 192.0.2.1 }",
            "  - { name: s, type: SRV, priority: 1, weight: 1, port: 5060 }",
            "  - { name: b, type: A }",
            "",
        ]
        .join("\n"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("sipdns.yaml"),
        "dns:\n  listen: [\"127.0.0.1:0\"]\nupstream:\n  servers: [\"127.0.0.1:9\"]\napi:\n  listen: null\n",
    )
    .unwrap();
    let cfg = dir.path().join("sipdns.yaml");
    let out = sipdns(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for wanted in [
        "example.net.zone:4: field `A.address`",
        "example.net.zone:6: field `SRV.port`",
        "pbx.example.org.yaml:4: field `records[1].target`",
        "pbx.example.org.yaml:5: field `records[2].address`",
    ] {
        assert!(err.contains(wanted), "{wanted} missing from:\n{err}");
    }
    assert!(
        !err.contains("example.net.zone:5"),
        "a good entry blamed:\n{err}"
    );
}

#[test]
fn check_rejects_a_bad_config_naming_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(&cfg, "sip:\n  probe:\n    fall: 0\n").unwrap();
    let out = sipdns(&["check", "-c", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("c.yaml:3"), "{err}");
    assert!(err.contains("sip.probe.fall"), "{err}");
}

/// Runs the real binary on an ephemeral port; returns the child and the bound DNS address
/// read from its log.
fn spawn_binary(dir: &Path) -> (std::process::Child, std::net::SocketAddr) {
    use std::io::{BufRead, BufReader};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cfg = dir.join("sipdns.yaml");
    std::fs::write(
        &cfg,
        format!(
            "dns:\n  listen: [\"127.0.0.1:0\"]\nupstream:\n  servers: [\"127.0.0.1:9\"]\napi:\n  listen: null\nzones:\n  dir: {}\n  modes:\n    example.net: merge\n",
            root.join("zones").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["run", "-c", cfg.to_str().unwrap()])
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("bound=") {
                let addr = line[i + 6..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let _ = tx.send(addr);
            }
        }
    });
    let addr = rx
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("sipdns did not report its DNS address");
    let addr = addr
        .trim_matches(|c: char| !c.is_ascii_digit() && c != '.' && c != ':')
        .parse()
        .unwrap();
    (child, addr)
}

#[test]
fn sigterm_shuts_down_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, _addr) = spawn_binary(dir.path());
    crate::common::process::kill(child.id() as libc::pid_t, libc::SIGTERM).unwrap();
    let start = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        if start.elapsed() > std::time::Duration::from_secs(10) {
            let _ = child.kill();
            panic!("sipdns did not stop within 10 s of SIGTERM");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

#[test]
fn dig_sees_naptr_with_srv_and_addresses_in_additional() {
    let dig = crate::common::process::require("dig", "dnsutils");
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = spawn_binary(dir.path());
    let out = Command::new(dig)
        .args([
            &format!("@{}", addr.ip()),
            "-p",
            &addr.port().to_string(),
            "NAPTR",
            "pbx.example.org",
            "+tries=3",
            "+time=2",
        ])
        .output()
        .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("status: NOERROR"), "{text}");
    assert!(text.contains("ANSWER: 3"), "{text}");
    assert!(text.contains(";; ADDITIONAL SECTION:"), "{text}");
    let additional = text.split(";; ADDITIONAL SECTION:").nth(1).unwrap_or("");
    for (owner, kind, data) in [
        (
            "_sips._tcp.pbx.example.org.",
            "SRV",
            "server1.pbx.example.org.",
        ),
        (
            "_sip._udp.pbx.example.org.",
            "SRV",
            "server2.pbx.example.org.",
        ),
        ("server1.pbx.example.org.", "A", "192.0.2.10"),
        ("server2.pbx.example.org.", "AAAA", "2001:db8::20"),
    ] {
        assert!(
            additional.lines().any(|l| l.starts_with(owner)
                && l.split_whitespace().nth(3) == Some(kind)
                && l.ends_with(data)),
            "no {owner} {kind} {data} in ADDITIONAL:\n{text}"
        );
    }
}
