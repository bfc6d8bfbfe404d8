//! Helpers to run real SIP peers on loopback for the prober tests: sipp (Debian package
//! `sip-tester`), kamailio (`kamailio`, `kamailio-tls-modules`) and a test CA made with the
//! `openssl` CLI. A missing binary fails the test with the package to install; every
//! process started here is stopped by PID when its guard is dropped.

use std::{
    net::{SocketAddr, TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sipdns::{
    health::sip::{OptionsRequest, ProbeIds, build_options, parse_reply},
    target::Transport,
};

/// Finds a binary on PATH or in the sbin directories; panics naming the Debian package.
pub(crate) fn require(bin: &str, package: &str) -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    dirs.extend(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(PathBuf::from));
    dirs.into_iter()
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("`{bin}` not found: these tests need it (apt-get install -y {package})")
        })
}

/// A loopback port free for both UDP and TCP right now.
pub(crate) fn free_port() -> u16 {
    for _ in 0..100 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for UDP and TCP");
}

/// A child process stopped on drop: SIGTERM to its process group, then SIGKILL if it has
/// not exited within 3 s.
pub(crate) struct Peer {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Peer {
    fn spawn(name: &str, mut cmd: Command, log: PathBuf) -> Self {
        use std::os::unix::process::CommandExt as _;
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            // Its own process group, so kamailio's worker children are stopped with it.
            .process_group(0);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Self {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    /// The peer's output so far (for assertion messages).
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn signal_group(pid: u32, sig: libc::c_int) {
        // SAFETY: plain kill(2) on the process group this guard created (its id is the
        // leader's PID, which this guard has not reaped yet or has just reaped).
        unsafe {
            libc::kill(-(pid as libc::pid_t), sig);
        }
    }

    /// Kills the peer hard (SIGKILL to its process group) and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            Self::signal_group(c.id(), libc::SIGKILL);
            let _ = c.wait();
        }
    }

    /// Stops the peer (SIGTERM to its group, SIGKILL after 3 s or to any worker left)
    /// and reaps it.
    pub(crate) fn stop(&mut self) {
        let Some(mut c) = self.child.take() else {
            return;
        };
        Self::signal_group(c.id(), libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Self::signal_group(c.id(), libc::SIGKILL);
        let _ = c.wait();
    }

    /// Panics with the peer's log if it has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Some(c) = &mut self.child
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!("{} exited ({status}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends one OPTIONS and waits for the matching final reply; returns its code.
pub(crate) fn options_once(addr: SocketAddr, transport: Transport, wait: Duration) -> Option<u16> {
    let ids = ProbeIds::fresh(1);
    match transport {
        Transport::Udp => {
            let s = UdpSocket::bind("127.0.0.1:0").ok()?;
            s.set_read_timeout(Some(wait)).ok()?;
            let req = build_options(&OptionsRequest {
                transport,
                host: "127.0.0.1",
                port: addr.port(),
                local: s.local_addr().ok()?,
                from_domain: "sipdns.invalid",
                user_agent: "sipdns-test",
                ids: &ids,
            })
            .ok()?;
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
            let req = build_options(&OptionsRequest {
                transport: Transport::Tcp,
                host: "127.0.0.1",
                port: addr.port(),
                local: s.local_addr().ok()?,
                from_domain: "sipdns.invalid",
                user_agent: "sipdns-test",
                ids: &ids,
            })
            .ok()?;
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
        peer.name,
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
    let candidates = [
        "/usr/lib/x86_64-linux-gnu/kamailio/modules",
        "/usr/lib/aarch64-linux-gnu/kamailio/modules",
        "/usr/lib64/kamailio/modules",
        "/usr/lib/kamailio/modules",
    ];
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.join("sl.so").is_file())
        .unwrap_or_else(|| {
            panic!(
                "kamailio modules (sl.so) not found in {candidates:?} (apt-get install -y kamailio)"
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
