//! Real DNS peers started by a test on loopback, each with its own config in a temporary
//! directory and an ephemeral port: Knot DNS (`knotd`, signing a zone with an automatic
//! key policy) and unbound. Stopped when dropped (the [`process::Peer`] guard).

use std::{
    net::SocketAddr,
    path::Path,
    time::{Duration, Instant},
};

use tokio::process::Command;

use super::process::{self, free_port, require};

/// Waits (bounded) until a DNS server on `addr` answers an SOA query for `zone` over UDP.
pub async fn wait_answering(addr: SocketAddr, zone: &str, within: Duration) {
    use hickory_proto::rr::RecordType;
    let q = super::client::query(zone, RecordType::SOA, None)
        .to_vec()
        .unwrap();
    let start = Instant::now();
    while start.elapsed() < within {
        if super::client::udp_raw(addr, &q, Duration::from_millis(200))
            .await
            .is_some()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{addr} did not answer for {zone} within {within:?}");
}

/// A DNS peer running on loopback with its files.
pub struct Peer {
    pub addr: SocketAddr,
    pub process: process::Peer,
    pub dir: tempfile::TempDir,
}

/// Knot DNS serving `zone` (RFC 1035 text, origin `origin`), signed at load with Knot's
/// default automatic policy (ECDSA P-256 KSK and ZSK). Returns the server and the trust
/// anchor of the zone as a `delv -a` file and as a DS record line (digest SHA-256, from
/// `keymgr`).
pub async fn knot_signed(origin: &str, zone: &str) -> (Peer, std::path::PathBuf, String) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir(d.join("db")).unwrap();
    std::fs::write(d.join(format!("{origin}.zone")), zone).unwrap();
    let port = free_port();
    let conf = format!(
        "server:\n    listen: 127.0.0.1@{port}\n    rundir: {dir}\ndatabase:\n    storage: {dir}/db\nlog:\n  - target: stderr\n    any: warning\ntemplate:\n  - id: default\n    storage: {dir}\n    file: \"%s.zone\"\nzone:\n  - domain: {origin}\n    dnssec-signing: on\n",
        dir = d.display()
    );
    let conf_path = d.join("knot.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let mut cmd = std::process::Command::new(require("knotd", "knot"));
    cmd.arg("-c").arg(&conf_path);
    let process = process::Peer::spawn("knotd", cmd, d.join("knotd.log"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let peer = Peer { addr, process, dir };
    wait_answering(addr, origin, Duration::from_secs(20)).await;
    let (anchors, ds) = trust_anchor(&conf_path, origin, peer.dir.path()).await;
    (peer, anchors, ds)
}

async fn trust_anchor(conf: &Path, origin: &str, dir: &Path) -> (std::path::PathBuf, String) {
    // Signing happens right after load: wait (bounded) until the key is there.
    let start = Instant::now();
    loop {
        let out = Command::new(require("keymgr", "knot"))
            .arg("-c")
            .arg(conf)
            .arg(origin)
            .arg("ds")
            .output()
            .await
            .expect("keymgr runs");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        // `signed.example.net. DS 27920 13 2 985e...`
        if let Some(line) = text
            .lines()
            .find(|l| l.split_whitespace().nth(4) == Some("2"))
        {
            let f: Vec<&str> = line.split_whitespace().collect();
            let path = dir.join("anchors.conf");
            std::fs::write(
                &path,
                format!(
                    "trust-anchors {{\n  {origin}. static-ds {} {} {} \"{}\";\n}};\n",
                    f[2], f[3], f[4], f[5]
                ),
            )
            .unwrap();
            return (path, line.trim().to_string());
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no DS from keymgr: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Runs `delv` against `server` with `anchors` and `+root=root`; returns stdout + stderr.
pub async fn delv(
    server: SocketAddr,
    anchors: &Path,
    root: &str,
    name: &str,
    qtype: &str,
) -> String {
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(require("delv", "bind9-dnsutils"))
            .arg(format!("@{}", server.ip()))
            .arg("-p")
            .arg(server.port().to_string())
            .arg("-a")
            .arg(anchors)
            .arg(format!("+root={root}"))
            .arg(name)
            .arg(qtype)
            .output(),
    )
    .await
    .expect("delv finished in time")
    .expect("delv (bind9-dnsutils) is installed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// unbound on loopback with `conf` (the `server:` clauses and zones, without `interface`,
/// `port` and the housekeeping this adds).
pub async fn unbound(conf_body: &str, wait_zone: &str) -> Peer {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let conf = format!(
        "server:\n  interface: 127.0.0.1\n  port: {port}\n  do-daemonize: no\n  use-syslog: no\n  logfile: \"\"\n  chroot: \"\"\n  username: \"\"\n  directory: \"{dir}\"\n  pidfile: \"\"\n  do-ip6: no\n  access-control: 127.0.0.0/8 allow\n  verbosity: 0\n  num-threads: 1\n{conf_body}",
        dir = dir.path().display()
    );
    let conf_path = dir.path().join("unbound.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let check = std::process::Command::new(require("unbound-checkconf", "unbound"))
        .arg(&conf_path)
        .output()
        .expect("unbound-checkconf runs");
    assert!(
        check.status.success(),
        "unbound config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = std::process::Command::new(require("unbound", "unbound"));
    cmd.arg("-d").arg("-c").arg(&conf_path);
    let process = process::Peer::spawn("unbound", cmd, dir.path().join("unbound.log"));
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let peer = Peer { addr, process, dir };
    wait_answering(addr, wait_zone, Duration::from_secs(20)).await;
    peer
}
