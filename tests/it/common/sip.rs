//! Real SIP peers on loopback for the prober tests: sipp (Debian package `sip-tester`),
//! kamailio (`kamailio`, `kamailio-tls-modules`) and a test CA made with the `openssl` CLI;
//! for the phone test (`phone.rs`) kamailio registrars and a baresip phone
//! (`baresip-core`). A missing binary fails the test with the package to install; every
//! process started here runs in a [`Peer`] guard ([`super::process`]), stopped when dropped.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use super::process::{Peer, free_port, require};
use sipdns::{
    health::sip::{OptionsRequest, ProbeIds, build_options, parse_reply},
    target::Transport,
};

/// Sends one OPTIONS and waits for the matching final reply; returns its code.
pub(crate) fn options_once(addr: SocketAddr, transport: Transport, wait: Duration) -> Option<u16> {
    let ids = ProbeIds::fresh(1);
    let request = |transport, local| {
        build_options(&OptionsRequest {
            transport,
            host: "127.0.0.1",
            port: addr.port(),
            local,
            from_domain: "sipdns.invalid",
            user_agent: "sipdns-test",
            ids: &ids,
        })
        .ok()
    };
    match transport {
        Transport::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.set_read_timeout(Some(wait)).ok()?;
            let req = request(transport, s.local_addr().ok()?)?;
            s.send_to(&req, addr).ok()?;
            let mut buf = [0u8; 4096];
            let (n, _) = s.recv_from(&mut buf).ok()?;
            let r = parse_reply(&buf[..n]).ok()?;
            r.matches(&ids).then_some(r.code)
        }
        Transport::Tcp | Transport::Tls => {
            use std::io::{Read as _, Write as _};
            let mut s = std::net::TcpStream::connect_timeout(&addr, wait).ok()?;
            s.set_read_timeout(Some(wait)).ok()?;
            let req = request(Transport::Tcp, s.local_addr().ok()?)?;
            s.write_all(&req).ok()?;
            let mut buf = vec![0u8; 4096];
            let n = s.read(&mut buf).ok()?;
            let r = parse_reply(&buf[..n]).ok()?;
            r.matches(&ids).then_some(r.code)
        }
    }
}

/// Waits (bounded) until a peer answers OPTIONS on `addr`.
pub(crate) fn wait_answering(peer: &mut Peer, addr: SocketAddr, transport: Transport) {
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        peer.assert_running();
        if options_once(addr, transport, Duration::from_millis(200)).is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!(
        "{} does not answer OPTIONS on {addr}/{transport}:\n{}",
        peer.name(),
        peer.log()
    );
}

/// The fixtures directory.
pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// Starts sipp as a UAS answering OPTIONS on 127.0.0.1:`port` over `u1` (UDP) or `t1`
/// (TCP), and waits until it answers.
pub(crate) fn sipp_uas(dir: &Path, port: u16, transport: Transport) -> Peer {
    sipp_uas_at(dir, std::net::Ipv4Addr::LOCALHOST, port, transport)
}

/// Like [`sipp_uas`], on another loopback address (127.0.0.0/8).
pub(crate) fn sipp_uas_at(
    dir: &Path,
    ip: std::net::Ipv4Addr,
    port: u16,
    transport: Transport,
) -> Peer {
    assert!(ip.is_loopback(), "tests only use loopback addresses");
    let bin = require("sipp", "sip-tester");
    let mode = match transport {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
        Transport::Tls => panic!("the Debian sipp is built without TLS; use kamailio"),
    };
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir)
        .arg("-sf")
        .arg(fixtures().join("sipp/uas_options.xml"))
        .args(["-i", &ip.to_string(), "-p", &port.to_string(), "-t", mode])
        .args(["-nostdin", "-max_socket", "256"]);
    let mut peer = Peer::spawn(
        "sipp",
        cmd,
        dir.join(format!("sipp-{ip}-{port}-{mode}.log")),
    );
    wait_answering(&mut peer, SocketAddr::from((ip, port)), transport);
    peer
}

/// Certificate files for the TLS peer.
pub(crate) struct TlsFiles {
    /// CA certificate (PEM) to trust.
    pub(crate) ca: PathBuf,
    /// Server certificate (PEM).
    pub(crate) cert: PathBuf,
    /// Server key (PEM).
    pub(crate) key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let bin = require("openssl", "openssl");
    let out = Command::new(bin)
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openssl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Makes a test CA named `prefix` in `dir` and a server certificate for `dns_name` signed
/// by it.
pub(crate) fn test_ca(dir: &Path, prefix: &str, dns_name: &str) -> TlsFiles {
    let f = |s: &str| format!("{prefix}-{s}");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN=sipdns test CA {prefix}"),
            "-keyout",
            &f("ca.key"),
            "-out",
            &f("ca.pem"),
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            &format!("/CN={dns_name}"),
            "-keyout",
            &f("srv.key"),
            "-out",
            &f("srv.csr"),
        ],
    );
    std::fs::write(
        dir.join(f("ext.cnf")),
        format!(
            "subjectAltName=DNS:{dns_name}\nbasicConstraints=CA:FALSE\n\
             keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
        ),
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &f("srv.csr"),
            "-CA",
            &f("ca.pem"),
            "-CAkey",
            &f("ca.key"),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &f("ext.cnf"),
            "-out",
            &f("srv.pem"),
        ],
    );
    TlsFiles {
        ca: dir.join(f("ca.pem")),
        cert: dir.join(f("srv.pem")),
        key: dir.join(f("srv.key")),
    }
}

fn kamailio_modules() -> PathBuf {
    modules_dir(
        "kamailio",
        &[
            "/usr/lib/x86_64-linux-gnu/kamailio/modules",
            "/usr/lib/aarch64-linux-gnu/kamailio/modules",
            "/usr/lib64/kamailio/modules",
            "/usr/lib/kamailio/modules",
        ],
        "sl.so",
    )
}

/// The first of `candidates` that holds `marker`; panics naming the Debian package.
fn modules_dir(package: &str, candidates: &[&str], marker: &str) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join(marker).is_file())
        .unwrap_or_else(|| {
            panic!(
                "{package} modules ({marker}) not found in {candidates:?} (apt-get install -y {package})"
            )
        })
}

/// Starts kamailio answering OPTIONS on 127.0.0.1:`port` (UDP and TCP) and, with `tls`,
/// on 127.0.0.1:`tls_port` over TLS; waits until it answers over UDP.
pub(crate) fn kamailio(dir: &Path, port: u16, tls: Option<(&TlsFiles, u16)>) -> Peer {
    let bin = require("kamailio", "kamailio");
    let modules = kamailio_modules();
    let run = dir.join(format!("kamailio-{port}"));
    std::fs::create_dir_all(&run).unwrap();
    let tls_cfg = run.join("tls.cfg");
    let tls_port = tls.map_or(0, |(_, p)| p);
    let cfg = std::fs::read_to_string(fixtures().join("kamailio/kamailio.cfg"))
        .unwrap()
        .replace("@PORT@", &port.to_string())
        .replace("@TLS_PORT@", &tls_port.to_string())
        .replace("@MODULES@", &format!("{}/", modules.display()))
        .replace("@TLS_CFG@", &tls_cfg.display().to_string());
    std::fs::write(run.join("kamailio.cfg"), cfg).unwrap();
    let mut cmd = Command::new(bin);
    cmd.current_dir(&run)
        .args(["-DD", "-E", "-m", "32", "-M", "4"])
        .arg("-f")
        .arg(run.join("kamailio.cfg"))
        .arg("-Y")
        .arg(&run)
        .arg("-P")
        .arg(run.join("kamailio.pid"));
    if let Some((files, _)) = tls {
        if !modules.join("tls.so").is_file() {
            panic!("kamailio tls.so missing (apt-get install -y kamailio-tls-modules)");
        }
        let t = std::fs::read_to_string(fixtures().join("kamailio/tls.cfg"))
            .unwrap()
            .replace("@CERT@", &files.cert.display().to_string())
            .replace("@KEY@", &files.key.display().to_string());
        std::fs::write(&tls_cfg, t).unwrap();
        cmd.args(["-A", "WITH_TLS"]);
    }
    let mut peer = Peer::spawn("kamailio", cmd, run.join("kamailio.log"));
    wait_answering(
        &mut peer,
        SocketAddr::from(([127, 0, 0, 1], port)),
        Transport::Udp,
    );
    peer
}

/// One REGISTER a registrar accepted, as logged by `tests/fixtures/kamailio/registrar.cfg`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Register {
    /// Unix time (seconds) the registrar handled it.
    pub(crate) at: f64,
    /// `primary` or `secondary`.
    pub(crate) registrar: String,
    /// `udp` or `tcp`.
    pub(crate) proto: String,
    /// The phone's `ip:port`.
    pub(crate) src: String,
    /// Call-ID (one per phone registration, kept across refreshes).
    pub(crate) call_id: String,
    /// CSeq number (one more per new REGISTER transaction).
    pub(crate) cseq: u32,
    /// Unix time the binding expires.
    pub(crate) expires_at: f64,
}

impl Register {
    /// Parses one `REGISTER-LOG key=value ...` line; `None` for any other line.
    pub(crate) fn parse(line: &str) -> Option<Self> {
        let (_, rest) = line.split_once("REGISTER-LOG ")?;
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_owned)
        };
        Some(Self {
            at: field("at")?.parse().ok()?,
            registrar: field("registrar")?,
            proto: field("proto")?,
            src: field("src")?,
            call_id: field("callid")?,
            cseq: field("cseq")?.parse().ok()?,
            expires_at: field("expires_at")?.parse().ok()?,
        })
    }
}

/// A kamailio registrar (usrloc in memory) on a loopback address, answering OPTIONS, that
/// logs every REGISTER it saves. Each start writes a new log file, so a restart keeps the
/// history; [`Registrar::registers`] reads them all.
pub(crate) struct Registrar {
    name: String,
    ip: std::net::Ipv4Addr,
    port: u16,
    run: PathBuf,
    starts: u32,
    logs: Vec<PathBuf>,
    peer: Option<Peer>,
}

impl Registrar {
    /// Starts kamailio as registrar `name` on `ip:port` (UDP and TCP) and waits until it
    /// answers OPTIONS.
    pub(crate) fn start(dir: &Path, name: &str, ip: std::net::Ipv4Addr, port: u16) -> Self {
        assert!(ip.is_loopback(), "tests only use loopback addresses");
        let run = dir.join(format!("registrar-{name}"));
        std::fs::create_dir_all(&run).unwrap();
        let cfg = std::fs::read_to_string(fixtures().join("kamailio/registrar.cfg"))
            .unwrap()
            .replace("@NAME@", name)
            .replace("@IP@", &ip.to_string())
            .replace("@PORT@", &port.to_string())
            .replace("@MODULES@", &format!("{}/", kamailio_modules().display()));
        std::fs::write(run.join("kamailio.cfg"), cfg).unwrap();
        let mut r = Self {
            name: name.to_owned(),
            ip,
            port,
            run,
            starts: 0,
            logs: Vec::new(),
            peer: None,
        };
        r.launch();
        r
    }

    fn launch(&mut self) {
        let bin = require("kamailio", "kamailio");
        self.starts += 1;
        let log = self.run.join(format!("kamailio-{}.log", self.starts));
        let mut cmd = Command::new(bin);
        cmd.current_dir(&self.run)
            .args(["-DD", "-E", "-m", "32", "-M", "4"])
            .arg("-f")
            .arg(self.run.join("kamailio.cfg"))
            .arg("-Y")
            .arg(&self.run)
            .arg("-P")
            .arg(self.run.join("kamailio.pid"));
        let mut peer = Peer::spawn(&format!("kamailio {}", self.name), cmd, log.clone());
        self.logs.push(log);
        wait_answering(&mut peer, self.addr(), Transport::Udp);
        self.peer = Some(peer);
    }

    /// `ip:port`.
    pub(crate) fn addr(&self) -> SocketAddr {
        SocketAddr::from((self.ip, self.port))
    }

    /// The running process's PID.
    pub(crate) fn pid(&self) -> Option<u32> {
        self.peer.as_ref().and_then(Peer::pid)
    }

    /// SIGKILL to its process group: it dies at once and forgets every binding.
    pub(crate) fn kill(&mut self) {
        if let Some(mut p) = self.peer.take() {
            p.kill();
        }
    }

    /// Starts it again on the same address and port (after [`Registrar::kill`]).
    pub(crate) fn restart(&mut self) {
        assert!(self.peer.is_none(), "{} is still running", self.name);
        self.launch();
    }

    /// SIGSTOP: hung, its TCP port still accepting connections.
    pub(crate) fn pause(&mut self) {
        if let Some(p) = &mut self.peer {
            p.pause();
        }
    }

    /// SIGCONT after [`Registrar::pause`].
    pub(crate) fn resume(&mut self) {
        if let Some(p) = &mut self.peer {
            p.resume();
        }
    }

    /// Every REGISTER it saved, over all its runs, in log order.
    pub(crate) fn registers(&self) -> Vec<Register> {
        self.logs
            .iter()
            .flat_map(|l| {
                std::fs::read_to_string(l)
                    .unwrap_or_default()
                    .lines()
                    .filter_map(Register::parse)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// All its logs (for assertion messages).
    pub(crate) fn log(&self) -> String {
        self.logs
            .iter()
            .map(|l| std::fs::read_to_string(l).unwrap_or_default())
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    /// Stops it (SIGTERM, then SIGKILL) if it runs.
    pub(crate) fn stop(&mut self) {
        if let Some(mut p) = self.peer.take() {
            p.stop();
        }
    }
}

fn baresip_modules() -> PathBuf {
    modules_dir(
        "baresip-core",
        &[
            "/usr/lib/baresip/modules",
            "/usr/lib/x86_64-linux-gnu/baresip/modules",
            "/usr/lib/aarch64-linux-gnu/baresip/modules",
            "/usr/local/lib/baresip/modules",
        ],
        "account.so",
    )
}

/// What a baresip phone is told.
pub(crate) struct PhoneConfig<'a> {
    /// The account, e.g. `sip:user@pbx.example.org` (no port, no transport: RFC 3263).
    pub(crate) aor: &'a str,
    /// Its only DNS server.
    pub(crate) dns: SocketAddr,
    /// The registration expiry it asks for (baresip `regint`), seconds.
    pub(crate) regint: u32,
    /// It refreshes after this percentage of the granted expiry (libre `rwait`, 5-95).
    pub(crate) rwait: u32,
}

/// Starts baresip (no UI, no media) with its config in `dir/phone`, sipdns as its only DNS
/// server, listening for SIP on 127.0.0.1:`sip_port` (UDP and TCP).
pub(crate) fn baresip(dir: &Path, cfg: &PhoneConfig<'_>) -> Peer {
    let bin = require("baresip", "baresip-core");
    let home = dir.join("phone");
    std::fs::create_dir_all(&home).unwrap();
    // baresip binds UDP and TCP on its port and TLS on the next one. A port found free can
    // be taken by a concurrent test before baresip binds it; a start that fails with
    // "Address already in use" is retried on other ports (at most five times).
    const ATTEMPTS: usize = 5;
    for attempt in 1..=ATTEMPTS {
        let sip_port = free_port_pair();
        let fill = |name: &str| {
            std::fs::read_to_string(fixtures().join("baresip").join(name))
                .unwrap()
                .replace("@MODULE_PATH@", &baresip_modules().display().to_string())
                .replace("@SIP_LISTEN@", &format!("127.0.0.1:{sip_port}"))
                .replace("@DNS_SERVER@", &cfg.dns.to_string())
                .replace("@AOR@", cfg.aor)
                .replace("@REGINT@", &cfg.regint.to_string())
                .replace("@RWAIT@", &cfg.rwait.to_string())
        };
        std::fs::write(home.join("config"), fill("config")).unwrap();
        std::fs::write(home.join("accounts"), fill("accounts")).unwrap();
        std::fs::write(home.join("contacts"), "").unwrap();
        let mut cmd = Command::new(&bin);
        cmd.current_dir(&home).arg("-f").arg(&home);
        let mut peer = Peer::spawn("baresip", cmd, home.join(format!("baresip-{attempt}.log")));
        // Started once its last port (TLS, the next one) is taken, failed if it exited
        // (bounded polling; a start takes milliseconds, and the phone registers at once).
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end
            && !peer.exited()
            && TcpListener::bind(("127.0.0.1", sip_port + 1)).is_ok()
        {
            std::thread::sleep(Duration::from_millis(5));
        }
        if attempt < ATTEMPTS && peer.exited() && peer.log().contains("Address already in use") {
            continue;
        }
        peer.assert_running();
        return peer;
    }
    unreachable!("the last attempt returns or panics")
}

/// A loopback port free for UDP and TCP whose next port is free for TCP too (baresip's
/// TLS transport).
fn free_port_pair() -> u16 {
    for _ in 0..100 {
        let p = free_port();
        if p < u16::MAX && TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
            return p;
        }
    }
    panic!("no free pair of loopback ports");
}

/// A phone under test, for the bounded waits below: fails the test when it exited, and
/// shows what it printed.
pub(crate) trait Phone {
    /// Fails the test if the phone process has exited.
    fn assert_running(&mut self);
    /// What the phone printed so far.
    fn output(&self) -> String;
}

impl Phone for Peer {
    fn assert_running(&mut self) {
        Self::assert_running(self);
    }
    fn output(&self) -> String {
        self.log()
    }
}

/// Seconds since the Unix epoch, the clock the registrars log REGISTERs with.
pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Every REGISTER both registrars saved, in time order.
pub(crate) fn all_registers(regs: [&Registrar; 2]) -> Vec<Register> {
    let mut all: Vec<Register> = regs.iter().flat_map(|r| r.registers()).collect();
    all.sort_by(|a, b| a.at.total_cmp(&b.at));
    all
}

/// Waits (bounded) for REGISTER number `n` (0-based, over both registrars).
pub(crate) async fn wait_register(
    regs: [&Registrar; 2],
    phone: &mut impl Phone,
    n: usize,
    what: &str,
    bound: Duration,
) -> Register {
    let t = Instant::now();
    loop {
        let all = all_registers(regs);
        if let Some(r) = all.get(n) {
            return r.clone();
        }
        phone.assert_running();
        assert!(
            t.elapsed() < bound,
            "{what}: no REGISTER within {bound:?}; so far {all:#?}\nphone output:\n{}\nprimary log:\n{}\nsecondary log:\n{}",
            phone.output(),
            regs[0].log(),
            regs[1].log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
