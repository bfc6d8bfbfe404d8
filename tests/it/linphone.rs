//! End to end with a phone that caches DNS (issue 15): linphone (`linphonec` from Debian
//! `linphone-cli`, liblinphone / belle-sip 5.1) against two kamailio registrars, with
//! sipdns' **default** policy settings for the domain (only the probe timing is shortened
//! for test speed: interval 1 s, timeout 800 ms, fall 3, rise 2).
//!
//! belle-sip asks `SRV _sip._udp.<domain>` and the targets' A/AAAA itself (no NAPTR, the
//! ADDITIONAL section ignored), caches every answer for its TTL and re-resolves only when a
//! request goes out after that; it fails back only with `reconnect_to_primary_asap=1`,
//! which the phone here sets (as docs/phones.md tells operators to). It reads its DNS
//! servers from `/etc/resolv.conf`, so each phone runs in a private mount namespace
//! (`unshare -m`, root needed) with a bind-mounted resolv.conf that names sipdns'
//! ephemeral port (`nameserver [127.0.0.1]:PORT`, a form belle-sip's resolver reads);
//! everything else stays on loopback in the test's own network namespace.
//!
//! Scenarios, registration every 30 s (belle-sip refreshes at 90 %: every 27 s):
//! - **kill**: the primary is SIGKILLed right after a REGISTER; a UDP socket takes its
//!   place to count what the phone still sends there;
//! - **hang**: the primary is SIGSTOPped right after a REGISTER; what the phone sent it
//!   during the hang is counted from its log once it runs again (SIGCONT);
//! - **late kill**: SIGKILL 19 s into the 27-s refresh cycle;
//! - **explicit port**: the account names `pbx.example.org:PORT;transport=tcp`, so the
//!   phone asks only for the domain's A records (probed on the domain's `a_port`). Over
//!   TCP, because over UDP belle-sip never re-resolves a `host:port` it has a channel to:
//!   it keeps retransmitting to the address it first resolved until the transaction times
//!   out (32 s), whatever DNS says (found here; docs/phones.md). Over TCP the kill closes
//!   the connection and belle-sip re-registers at once on a fresh resolution.
//!
//! Each must fail over at the phone's next REGISTER (on its own schedule, CSeq + 1) with no
//! time registered nowhere and no SIP packet to the dead server, then fail back to the
//! primary at the next REGISTER after it is back. In kill, hang and explicit port the phone
//! also places a call 8 s after the fault (kamailio answers 486): the INVITE must reach
//! the secondary without first going to the dead primary. Every figure is printed.

use std::{
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sipdns::{
    health::Health,
    target::{TargetKey, Transport},
};

use crate::common::{
    process::{free_port, kill, require},
    server::{self, TestServer, wait_health},
    sip::{Phone, Register, Registrar, all_registers, unix_now, wait_register},
};

const PRIMARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 41);
const SECONDARY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 42);
const DOMAIN: &str = "pbx.example.org";

/// `sip.probe` settings (the only non-default ones).
const INTERVAL: Duration = Duration::from_millis(1000);
const TIMEOUT: Duration = Duration::from_millis(800);
const FALL: u32 = 3;
const RISE: u32 = 2;
const JITTER: f64 = 1.1;
/// The registration the phone asks for, and when belle-sip refreshes it (90 %).
const REG_EXPIRES: u32 = 30;
const REFRESH: Duration = Duration::from_secs(27);
/// How far into the refresh cycle the late kill comes.
const LATE: Duration = Duration::from_secs(19);
/// When the call is placed, after the fault.
const CALL_AFTER: Duration = Duration::from_secs(8);
/// How far a REGISTER may stray from the phone's schedule (one that first timed out on a
/// dead server is at least Timer F, 32 s, late; one sent on a stale answer goes to the
/// dead server and is counted there).
const ON_SCHEDULE: f64 = 1.5;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scenario {
    Kill,
    Hang,
    LateKill,
    ExplicitPort,
}

/// `fall` probes, each starting at most `interval x 1.1` after the previous one and judged
/// within `timeout`, plus slack for a loaded machine.
fn down_bound() -> Duration {
    (INTERVAL.mul_f64(JITTER) + TIMEOUT) * FALL + Duration::from_secs(1)
}

fn up_bound() -> Duration {
    (INTERVAL.mul_f64(JITTER) + TIMEOUT) * RISE + Duration::from_secs(1)
}

/// One line a registrar logged (`SIP-IN` / `INVITE-LOG`), as key=value fields.
#[derive(Debug, Clone)]
struct Logged {
    at: f64,
    method: String,
    src: String,
    cseq: String,
}

/// The `tag` lines (`SIP-IN`, `INVITE-LOG`) in a registrar's logs.
fn logged(r: &Registrar, tag: &str) -> Vec<Logged> {
    r.log()
        .lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once(&format!("{tag} "))?;
            let field = |k: &str| {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .map(str::to_owned)
            };
            Some(Logged {
                at: field("at")?.parse().ok()?,
                method: field("method").unwrap_or_else(|| "INVITE".to_owned()),
                src: field("src")?,
                cseq: field("cseq").unwrap_or_default(),
            })
        })
        .collect()
}

/// A linphonec process (no UI, no media devices) in its own mount namespace, whose
/// `/etc/resolv.conf` names only sipdns. Stopped by PID (its process group) on drop.
struct Linphone {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
    sip_port: u16,
}

impl Linphone {
    fn start(dir: &Path, dns: SocketAddr, proxy: &str) -> Self {
        use std::os::unix::process::CommandExt as _;
        let bin = require("linphonec", "linphone-cli");
        let unshare = require("unshare", "util-linux");
        let home = dir.join("linphone-home");
        // liblinphone keeps its database there and fails to start without the directory.
        std::fs::create_dir_all(home.join(".local/share/linphone")).unwrap();
        let sip_port = free_port();
        let rtp_port = free_port();
        let rc = home.join("linphonerc");
        std::fs::write(
            &rc,
            format!(
                "[sip]\nsip_port={sip_port}\nsip_tcp_port={sip_port}\nsip_tls_port=-1\ndefault_proxy=0\n\
                 reconnect_to_primary_asap=1\nuse_ipv6=0\n\
                 [rtp]\naudio_rtp_port={rtp_port}\nvideo_rtp_port=-1\n\
                 [video]\ncapture=0\ndisplay=0\n\
                 [proxy_0]\nreg_proxy=<sip:{proxy}>\nreg_identity=sip:user@{DOMAIN}\n\
                 reg_expires={REG_EXPIRES}\nreg_sendregister=1\npublish=0\n"
            ),
        )
        .unwrap();
        let resolv = home.join("resolv.conf");
        // belle-sip's resolver (dns.c) reads `[address]:port`.
        std::fs::write(
            &resolv,
            format!("nameserver [{}]:{}\n", dns.ip(), dns.port()),
        )
        .unwrap();
        let log = home.join("linphone.log");
        let out = std::fs::File::create(home.join("linphonec.out")).unwrap();
        let err = out.try_clone().unwrap();
        let mut cmd = Command::new(unshare);
        cmd.arg("-m")
            .arg("sh")
            .arg("-c")
            .arg(r#"mount --bind "$1" /etc/resolv.conf && exec "$2" -c "$3" -d 6 -l "$4""#)
            .arg("sh")
            .arg(&resolv)
            .arg(bin)
            .arg(&rc)
            .arg(&log)
            .env("HOME", &home)
            .current_dir(&home)
            .stdin(Stdio::piped())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start linphonec: {e}"));
        let stdin = child.stdin.take();
        let mut phone = Self {
            child: Some(child),
            stdin,
            log,
            sip_port,
        };
        phone.assert_running();
        phone
    }

    /// A linphonec command on its standard input (`call sip:...`, `terminate`).
    fn command(&mut self, line: &str) {
        if let Some(s) = &mut self.stdin {
            s.write_all(format!("{line}\n").as_bytes()).unwrap();
            s.flush().unwrap();
        }
    }

    /// How many lines of the phone's log contain `what`.
    fn log_count(&self, what: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(what))
            .count()
    }

    /// The lines of the phone's log about DNS and SIP requests (for failure messages).
    fn sip_log(&self) -> String {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| {
                l.contains("resolved to")
                    || l.contains("current peer")
                    || l.contains("Refresher")
                    || l.starts_with("REGISTER ")
                    || l.starts_with("INVITE ")
                    || l.contains("channel") && l.contains("error")
                    || l.contains("sent to")
                    || l.contains("connect")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn output(&self) -> String {
        let home = self.log.parent().unwrap();
        std::fs::read_to_string(home.join("linphonec.out")).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(c) = &mut self.child
            && let Ok(Some(status)) = c.try_wait()
        {
            panic!(
                "linphonec exited ({status}); needs root for `unshare -m`:\n{}",
                self.output()
            );
        }
    }

    /// The phone's SIP source address as the registrars log it (over UDP).
    fn src(&self) -> String {
        format!("127.0.0.1:{}", self.sip_port)
    }

    /// Whether a registrar's `src` is this phone (over TCP the source port is ephemeral).
    fn is_src(&self, src: &str, tcp: bool) -> bool {
        if tcp {
            src.starts_with("127.0.0.1:")
        } else {
            src == self.src()
        }
    }

    fn stop(&mut self) {
        self.stdin.take();
        let Some(mut c) = self.child.take() else {
            return;
        };
        // The process group this guard created; its leader is not reaped yet.
        let pgid = c.id() as libc::pid_t;
        let _ = kill(-pgid, libc::SIGTERM);
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            if let Ok(Some(_)) = c.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = kill(-pgid, libc::SIGKILL);
        let _ = c.wait();
    }
}

impl Phone for Linphone {
    fn assert_running(&mut self) {
        Self::assert_running(self);
    }
    fn output(&self) -> String {
        Self::output(self)
    }
}

impl Drop for Linphone {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A UDP socket in the killed primary's place, counting datagrams from one source until
/// stopped (bounded: at most `limit`).
struct StandIn {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    thread: Option<JoinHandle<()>>,
}

impl StandIn {
    fn start(addr: SocketAddr, from: String, limit: Duration) -> Self {
        // The killed registrar's worker processes release the port a moment after the
        // group leader is reaped: retry for up to 2 s.
        let end = Instant::now() + Duration::from_secs(2);
        let sock = loop {
            match UdpSocket::bind(addr) {
                Ok(s) => break s,
                Err(e) if Instant::now() < end => {
                    let _ = e;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("cannot take the dead primary's place {addr}: {e}"),
            }
        };
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, c) = (stop.clone(), count.clone());
        let thread = std::thread::spawn(move || {
            let end = Instant::now() + limit;
            let mut buf = [0u8; 65_535];
            while !s.load(Ordering::Relaxed) && Instant::now() < end {
                // SIP messages only: belle-sip's CRLF keep-alives (RFC 5626 §4.4.1) are not.
                if let Ok((n, peer)) = sock.recv_from(&mut buf)
                    && peer.to_string() == from
                    && buf[..n].iter().any(|b| !b.is_ascii_whitespace())
                {
                    c.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Self {
            stop,
            count,
            thread: Some(thread),
        }
    }

    /// Stops counting, frees the port and returns the count.
    fn finish(mut self) -> usize {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.count.load(Ordering::Relaxed)
    }
}

/// Checks that `next` is the REGISTER after `prev`, at `registrar`, at `due` (unix time: the
/// phone's refresh schedule, or the request that made it move), before `prev`'s binding
/// expired.
fn assert_refresh(
    prev: &Register,
    next: &Register,
    due: f64,
    registrar: &str,
    what: &str,
    ctx: &str,
) {
    assert_eq!(next.registrar, registrar, "{what}: {next:?}\n{ctx}");
    assert_eq!(next.call_id, prev.call_id, "{what}: same registration");
    assert_eq!(
        next.cseq,
        prev.cseq + 1,
        "{what}: a REGISTER went somewhere else in between: {prev:?} -> {next:?}"
    );
    let late = next.at - due;
    assert!(
        late.abs() <= ON_SCHEDULE,
        "{what}: REGISTER {late:+.3} s off the phone's schedule\n{ctx}"
    );
    assert!(
        next.at < prev.expires_at,
        "{what}: registered nowhere from {:.3} to {:.3}",
        prev.expires_at,
        next.at
    );
}

fn sip_config(extra: &str) -> String {
    format!(
        "sip:\n  probe:\n    interval: {}ms\n    timeout: {}ms\n    fall: {FALL}\n    rise: {RISE}\n    startup_grace: 3s\n  domains:\n    - name: {DOMAIN}\n{extra}",
        INTERVAL.as_millis(),
        TIMEOUT.as_millis()
    )
}

/// NAPTR -> SRV (primary at priority 10, secondary at 20) -> A, as in `phone.rs`.
fn srv_zone(p1: u16, p2: u16) -> String {
    format!(
        "zone: {DOMAIN}\nrecords:\n\
- {{ name: '@', type: NAPTR, order: 100, preference: 10, flags: s, service: SIP+D2U, replacement: _sip._udp }}\n\
- {{ name: _sip._udp, type: SRV, priority: 10, weight: 1, port: {p1}, target: primary }}\n\
- {{ name: _sip._udp, type: SRV, priority: 20, weight: 1, port: {p2}, target: secondary }}\n\
- {{ name: primary, type: A, address: {PRIMARY} }}\n\
- {{ name: secondary, type: A, address: {SECONDARY} }}\n"
    )
}

/// The domain's own A records, primary first (explicit-port accounts ask only these).
fn a_zone() -> String {
    format!(
        "zone: {DOMAIN}\nrecords:\n\
- {{ name: '@', type: A, address: {PRIMARY} }}\n\
- {{ name: '@', type: A, address: {SECONDARY} }}\n"
    )
}

/// Sum of `sipdns_dns_queries_total` (the phone's queries; the test sends none).
fn dns_queries(s: &TestServer) -> f64 {
    s.server()
        .metrics
        .encode()
        .lines()
        .filter(|l| l.starts_with("sipdns_dns_queries_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

async fn run(scenario: Scenario) {
    let dir = tempfile::tempdir().unwrap();
    let explicit = scenario == Scenario::ExplicitPort;
    let (p1, p2) = if explicit {
        let p = free_port();
        (p, p)
    } else {
        (free_port(), free_port())
    };
    let (mut primary, mut secondary) = tokio::task::block_in_place(|| {
        (
            Registrar::start(dir.path(), "primary", PRIMARY, p1),
            Registrar::start(dir.path(), "secondary", SECONDARY, p2),
        )
    });
    let (cfg, zone) = if explicit {
        (sip_config(&format!("      a_port: {p1}\n")), a_zone())
    } else {
        (sip_config(""), srv_zone(p1, p2))
    };
    let s = server::start(&cfg, &[("pbx.example.org.yaml", &zone)]).await;
    // The config leaves the policy at its defaults.
    let policy_ttl = sipdns::config::SipDomainConfig::new(DOMAIN.parse().unwrap()).ttl;
    let key = |ip: Ipv4Addr, port| TargetKey {
        ip: ip.into(),
        port,
        transport: Transport::Udp,
    };
    let (k1, k2) = (key(PRIMARY, p1), key(SECONDARY, p2));
    wait_health(&s, &k1, Health::Up, Duration::from_secs(10)).await;
    wait_health(&s, &k2, Health::Up, Duration::from_secs(10)).await;

    let proxy = if explicit {
        format!("{DOMAIN}:{p1};transport=tcp")
    } else {
        DOMAIN.to_owned()
    };
    let mut phone = Linphone::start(dir.path(), s.dns, &proxy);
    let regs = |p: &Registrar, q: &Registrar| -> Vec<Register> { all_registers([p, q]) };
    let first = wait_register(
        [&primary, &secondary],
        &mut phone,
        0,
        "first registration",
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(first.registrar, "primary", "{first:?}");
    assert!(phone.is_src(&first.src, explicit), "{first:?}");

    // The fault.
    if scenario == Scenario::LateKill {
        let due = first.at + LATE.as_secs_f64();
        let wait = (due - unix_now()).max(0.0);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        assert_eq!(
            regs(&primary, &secondary).len(),
            1,
            "a REGISTER before the kill"
        );
    }
    let fault_at = unix_now();
    let stand_in = tokio::task::block_in_place(|| match scenario {
        Scenario::Hang => {
            primary.pause();
            None
        }
        Scenario::ExplicitPort => {
            primary.kill();
            None
        }
        _ => {
            primary.kill();
            Some(StandIn::start(
                SocketAddr::from((PRIMARY, p1)),
                phone.src(),
                Duration::from_secs(180),
            ))
        }
    });
    let detected = wait_health(&s, &k1, Health::Down, down_bound()).await;

    // A call a few seconds after the fault (not in the late kill: it would cross the
    // refresh).
    let mut call = None;
    let mut invite_at = None;
    if scenario != Scenario::LateKill {
        let wait = (fault_at + CALL_AFTER.as_secs_f64() - unix_now()).max(0.0);
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        let dial_at = unix_now();
        // To the server the account names (with its port in the explicit-port case).
        phone.command(&format!("call <sip:bob@{proxy}>"));
        let t = Instant::now();
        let invite = loop {
            if let Some(i) = logged(&secondary, "INVITE-LOG").into_iter().next() {
                break i;
            }
            phone.assert_running();
            assert!(
                t.elapsed() < Duration::from_secs(10),
                "the call's INVITE did not reach the secondary within 10 s\nphone:\n{}\n{}",
                phone.output(),
                phone.sip_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert!(phone.is_src(&invite.src, explicit), "{invite:?}");
        phone.command("terminate");
        call = Some(invite.at - dial_at);
        invite_at = Some(invite.at);
    }

    // Failover at the next refresh.
    let failover = wait_register(
        [&primary, &secondary],
        &mut phone,
        1,
        "failover",
        REFRESH + Duration::from_secs(5),
    )
    .await;
    let context = |p: &Registrar, q: &Registrar, phone: &Linphone| {
        format!(
            "registers: {:#?}\nphone log (SIP):\n{}",
            all_registers([p, q]),
            phone.sip_log()
        )
    };
    // The phone moves at its next request: its refresh, or the call's INVITE, after which
    // belle-sip re-registers at once because the INVITE moved their shared channel to the
    // secondary.
    // Over TCP (explicit port) the kill closes the phone's connection: belle-sip
    // re-registers at once, a new request on a fresh resolution.
    let due = if explicit {
        fault_at
    } else {
        invite_at.unwrap_or(first.at + REFRESH.as_secs_f64())
    };
    let ctx = context(&primary, &secondary, &phone);
    assert_refresh(&first, &failover, due, "secondary", "failover", &ctx);

    // The primary comes back right after; the phone returns at its next refresh.
    let stand_in_count = stand_in.map(StandIn::finish);
    let back_at = unix_now();
    tokio::task::block_in_place(|| match scenario {
        Scenario::Hang => primary.resume(),
        _ => primary.restart(),
    });
    let recovered = wait_health(&s, &k1, Health::Up, up_bound()).await;
    let failback = wait_register(
        [&primary, &secondary],
        &mut phone,
        2,
        "failback",
        REFRESH + Duration::from_secs(5),
    )
    .await;
    let ctx = context(&primary, &secondary, &phone);
    let due = failover.at + REFRESH.as_secs_f64();
    // With an explicit port belle-sip keeps its TCP connection to `host:port` (now the
    // secondary) and does not ask DNS again while it stays up: it does not fail back
    // (reconnect_to_primary_asap acts when the SRV answer's first target changes). The
    // refresh must still be on time, with no gap.
    let back_to = if explicit {
        failback.registrar.as_str()
    } else {
        "primary"
    };
    assert_refresh(&failover, &failback, due, back_to, "failback", &ctx);

    // Packets to the dead server: at the stand-in (kill), or what the hung primary
    // processed from the phone once it ran again, besides the failback REGISTER.
    // Over TCP, nothing can reach a killed server: the phone's connection attempts are
    // refused (counted from its log), so no SIP message gets there.
    let refused = phone.log_count("Cannot connect to");
    let to_dead = match stand_in_count {
        Some(n) => n,
        None if explicit => 0,
        None => logged(&primary, "SIP-IN")
            .into_iter()
            .filter(|l| l.src == phone.src() && l.at >= fault_at)
            .filter(|l| !(l.method == "REGISTER" && l.cseq == failback.cseq.to_string()))
            .count(),
    };
    let invites_at_primary = logged(&primary, "INVITE-LOG").len();
    let unregistered = (failover.at - first.expires_at).max(0.0);
    let queries = dns_queries(&s);
    let requests = all_registers([&primary, &secondary]).len() + usize::from(call.is_some());

    let mut out = String::new();
    let _ = writeln!(
        out,
        "linphone e2e {scenario:?}: policy ttl {policy_ttl} s (default), probe {INTERVAL:?}/{TIMEOUT:?}/fall {FALL}/rise {RISE}, \
         registration {REG_EXPIRES} s (refresh {REFRESH:?})"
    );
    let _ = writeln!(
        out,
        "  fault at {:+.3} s after the REGISTER; sipdns: down after {detected:.3?}",
        fault_at - first.at
    );
    let _ = writeln!(
        out,
        "  failover {:.3} s after the fault ({}), unregistered {unregistered:.3} s, \
         packets to the dead server {to_dead}",
        failover.at - fault_at,
        match invite_at {
            _ if explicit => format!(
                "TCP: at once, when the kill closed its connection; {refused} refused connects to the dead server"
            ),
            Some(i) => format!("{:+.3} s after the call's INVITE", failover.at - i),
            None => format!(
                "{:+.3} s off the refresh schedule",
                failover.at - first.at - REFRESH.as_secs_f64()
            ),
        }
    );
    if let Some(c) = call {
        let _ = writeln!(
            out,
            "  call {CALL_AFTER:?} after the fault: dial -> INVITE at the secondary {c:.3} s; INVITEs at the primary {invites_at_primary}"
        );
    }
    let _ = writeln!(
        out,
        "  next REGISTER at the {} {:.3} s after the primary came back (up in sipdns after {recovered:.3?}), {:+.3} s off schedule",
        failback.registrar,
        failback.at - back_at,
        failback.at - failover.at - REFRESH.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "  DNS queries from the phone: {queries} for {requests} requests ({:.1} per request)",
        queries / requests as f64
    );
    eprint!("{out}");

    assert_eq!(to_dead, 0, "SIP packets to the dead server\n{out}");
    assert_eq!(
        invites_at_primary, 0,
        "an INVITE went to the primary\n{out}"
    );
    assert_eq!(unregistered, 0.0, "{out}");
    if let Some(c) = call {
        // Without sipdns the INVITE would first wait out Timer B (32 s) on the dead server.
        assert!(c < 2.0, "call setup {c:.3} s\n{out}");
    }
    phone.stop();
    primary.stop();
    secondary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_fails_over_and_back_when_the_primary_dies() {
    run(Scenario::Kill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_fails_over_and_back_when_the_primary_hangs() {
    run(Scenario::Hang).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_fails_over_and_back_when_the_primary_dies_late_in_the_refresh_cycle() {
    run(Scenario::LateKill).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_with_an_explicit_port_fails_over_on_a_records() {
    run(Scenario::ExplicitPort).await;
}

/// The control, and the evidence for the default TTL: the same phone and kill with the
/// policy TTL at 30 s (the old default, above the phone's 27-s refresh). The refresh goes
/// out on the answer cached with the previous REGISTER, which still names the primary:
/// SIP packets reach the dead server, and the registration lapses until belle-sip gives up
/// on it and asks DNS again. The tests above rule this out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linphone_with_a_30_s_ttl_sends_to_the_dead_primary_and_lapses() {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let (mut primary, mut secondary) = tokio::task::block_in_place(|| {
        (
            Registrar::start(dir.path(), "primary", PRIMARY, p1),
            Registrar::start(dir.path(), "secondary", SECONDARY, p2),
        )
    });
    let s = server::start(
        &sip_config("      ttl: 30\n"),
        &[("pbx.example.org.yaml", &srv_zone(p1, p2))],
    )
    .await;
    let k1 = TargetKey {
        ip: PRIMARY.into(),
        port: p1,
        transport: Transport::Udp,
    };
    wait_health(&s, &k1, Health::Up, Duration::from_secs(10)).await;
    let mut phone = Linphone::start(dir.path(), s.dns, DOMAIN);
    let regs = [&primary, &secondary];
    let first = wait_register(regs, &mut phone, 0, "first", Duration::from_secs(15)).await;
    assert_eq!(first.registrar, "primary");
    let fault_at = unix_now();
    let stand_in = tokio::task::block_in_place(|| {
        primary.kill();
        StandIn::start(
            SocketAddr::from((PRIMARY, p1)),
            phone.src(),
            Duration::from_secs(180),
        )
    });
    wait_health(&s, &k1, Health::Down, down_bound()).await;
    // Timer F (32 s) on the dead primary after the refresh, then the secondary.
    let next = wait_register(
        [&primary, &secondary],
        &mut phone,
        1,
        "failover with a 30 s TTL",
        REFRESH + Duration::from_secs(32 + 15),
    )
    .await;
    let to_dead = stand_in.finish();
    let lapse = next.at - first.expires_at;
    eprintln!(
        "linphone e2e control, policy ttl 30 s, primary killed: REGISTER at the {} {:.3} s after \
         the fault; registered nowhere {lapse:.3} s; {to_dead} SIP packets to the dead server",
        next.registrar,
        next.at - fault_at
    );
    assert_eq!(next.registrar, "secondary");
    assert!(
        to_dead > 0,
        "the refresh should have gone to the dead primary"
    );
    assert!(lapse > 0.0, "the registration should have lapsed");
    phone.stop();
    secondary.stop();
}
