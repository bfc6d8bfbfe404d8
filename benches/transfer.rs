//! Secondary zones at scale: `bench/transfer.sh` (or `cargo bench --bench transfer -- --run
//! [--records N] [--members M] [--qps Q] [--secs S]`).
//!
//! A real Knot DNS primary (`knotd`, on 127.0.0.1) serves a zone of N records (default
//! 100,000) and a catalog (RFC 9432) of M member zones (default 1,000); the `sipdns`
//! binary, a separate process, follows them with TSIG. Measured:
//!
//! 1. the N-record zone, cold start (AXFR): time from process start to the first answer
//!    from the zone, and RSS;
//! 2. the same after a restart with the primary stopped (the disk copy): time to the first
//!    answer, RSS;
//! 3. an IXFR of one changed record while a client sends Q queries/s (default 2,000) for S
//!    seconds: queries lost, latency p50/p99/max, the slowest query sent within ±1 s of the
//!    swap, and the time from the change at the primary to the new answer;
//! 4. the catalog, cold start: time to the first member answered and to all M, and RSS;
//! 5. the catalog after a restart without the primary: time until all M answer.

#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::{
    fmt::Write as _,
    net::{SocketAddr, TcpStream, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{Message, Query},
    rr::{Name, RData, RecordType},
};

struct Args {
    records: usize,
    members: usize,
    qps: u32,
    secs: u64,
}

fn args() -> Option<Args> {
    let v: Vec<String> = std::env::args().skip(1).collect();
    if !v.iter().any(|a| a == "--run") {
        return None;
    }
    let get = |k: &str, d: u64| -> u64 {
        v.iter()
            .position(|a| a == k)
            .and_then(|i| v.get(i + 1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(d)
    };
    Some(Args {
        records: get("--records", 100_000) as usize,
        members: get("--members", 1_000) as usize,
        qps: get("--qps", 2_000) as u32,
        secs: get("--secs", 6),
    })
}

fn free_port() -> u16 {
    for _ in 0..100 {
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = u.local_addr().unwrap().port();
        if std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
            return p;
        }
    }
    panic!("no free port");
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(bin: &str, args: &[&str], log: &Path) -> Proc {
    let out = std::fs::File::create(log).unwrap();
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().unwrap()))
        .stderr(Stdio::from(out))
        .spawn()
        .unwrap_or_else(|e| panic!("{bin}: {e}"));
    Proc(child)
}

fn rss_mib(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|k| k.parse::<f64>().ok())
        .map_or(0.0, |k| k / 1024.0)
}

fn query_bytes(id: u16, name: &str) -> Vec<u8> {
    let mut m = Message::query();
    m.metadata.id = id;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

/// The first A address answered for `name`, if any (one try, `wait` at most).
fn ask(sock: &UdpSocket, server: SocketAddr, name: &str, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let id = rand::random::<u16>();
    sock.send_to(&query_bytes(id, name), server).ok()?;
    let mut buf = [0u8; 4096];
    let end = Instant::now() + wait;
    while Instant::now() < end {
        let (n, _) = sock.recv_from(&mut buf).ok()?;
        let m = Message::from_vec(&buf[..n]).ok()?;
        if m.metadata.id != id {
            continue;
        }
        return m.answers.iter().find_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            _ => None,
        });
    }
    None
}

/// Polls until `name` answers (`want`, or anything when `None`); the time it took.
fn wait_answer(server: SocketAddr, name: &str, want: Option<&str>, bound: Duration) -> Duration {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    loop {
        if let Some(a) = ask(&sock, server, name, Duration::from_millis(200))
            && want.is_none_or(|w| w == a)
        {
            return t.elapsed();
        }
        assert!(t.elapsed() < bound, "{name} not answered within {bound:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Whether `name` answers within `bound`.
fn answers_within(server: SocketAddr, name: &str, bound: Duration) -> bool {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let t = Instant::now();
    while t.elapsed() < bound {
        if ask(&sock, server, name, Duration::from_millis(200)).is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

struct Setup {
    dir: PathBuf,
    knot_port: u16,
    dns_port: u16,
    secret: String,
}

fn write_knot(s: &Setup, a: &Args) -> PathBuf {
    let d = s.dir.display();
    for sub in ["kzones", "kdb", "krun"] {
        std::fs::create_dir_all(s.dir.join(sub)).unwrap();
    }
    let soa = "@ 3600 IN SOA ns.example.org. admin.example.org. 1 3600 600 604800 60\n@ 3600 IN NS ns.example.org.\n";
    let mut big = format!("$ORIGIN big.example.org.\n{soa}");
    for i in 0..a.records {
        let _ = writeln!(big, "h{i} 300 IN A 192.0.2.{}", i % 250 + 1);
    }
    std::fs::write(s.dir.join("kzones/big.example.org.zone"), big).unwrap();
    let mut cat = format!("$ORIGIN catalog.example.net.\n{soa}version 0 IN TXT \"2\"\n");
    for i in 0..a.members {
        let _ = writeln!(cat, "m{i}.zones 0 IN PTR office{i}.example.org.");
        std::fs::write(
            s.dir.join(format!("kzones/office{i}.example.org.zone")),
            format!(
                "$ORIGIN office{i}.example.org.\n{soa}sip 300 IN A 192.0.2.{}\n_sip._udp 300 IN SRV 10 1 5060 sip\n",
                i % 250 + 1
            ),
        )
        .unwrap();
    }
    std::fs::write(s.dir.join("kzones/catalog.example.net.zone"), cat).unwrap();
    let mut zones = String::from("  - domain: big.example.org\n  - domain: catalog.example.net\n");
    for i in 0..a.members {
        let _ = writeln!(zones, "  - domain: office{i}.example.org");
    }
    let conf = format!(
        "server:\n    rundir: \"{d}/krun\"\n    listen: 127.0.0.1@{kp}\n    background-workers: 2\n\
key:\n  - id: office-key\n    algorithm: hmac-sha256\n    secret: {secret}\n\
remote:\n  - id: sipdns\n    address: 127.0.0.1@{dp}\n\
acl:\n  - id: xfr\n    key: office-key\n    action: transfer\n\
control:\n    listen: \"{d}/krun/knot.sock\"\n\
database:\n    storage: \"{d}/kdb\"\n\
template:\n  - id: default\n    storage: \"{d}/kzones\"\n    file: \"%s.zone\"\n    zonefile-sync: -1\n    notify: sipdns\n    acl: xfr\n\
zone:\n{zones}",
        kp = s.knot_port,
        dp = s.dns_port,
        secret = s.secret,
    );
    let path = s.dir.join("knot.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

fn write_sipdns(s: &Setup, name: &str, entry: &str) -> PathBuf {
    let dir = s.dir.join(name);
    std::fs::create_dir_all(dir.join("zones")).unwrap();
    std::fs::write(dir.join("tsig.key"), format!("{}\n", s.secret)).unwrap();
    let conf = format!(
        "dns:\n  listen: [\"127.0.0.1:{dp}\"]\napi:\n  listen: null\nupstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\n\
zones:\n  dir: zones\n  secondary_dir: secondary\n  secondary:\n    - {entry}\n      primaries: [\"127.0.0.1:{kp}\"]\n      tsig: {{ name: office-key, algorithm: hmac-sha256, secret_file: tsig.key }}\n      retry: 2s\n",
        dp = s.dns_port,
        kp = s.knot_port,
    );
    let path = dir.join("sipdns.yaml");
    std::fs::write(&path, conf).unwrap();
    path
}

fn start_sipdns(config: &Path, log: &Path) -> (Proc, Instant) {
    let t = Instant::now();
    let p = spawn(
        env!("CARGO_BIN_EXE_sipdns"),
        &["run", "-c", config.to_str().unwrap()],
        log,
    );
    (p, t)
}

fn knotc(conf: &Path, args: &[&str]) {
    let out = Command::new("knotc")
        .arg("-c")
        .arg(conf)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "knotc {args:?}: {out:?}");
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// Q queries/s over UDP for `secs`; at half time `change()` runs. Returns (sent, lost,
/// latencies ms, slowest ms within ±1 s of the change, change -> new answer).
fn load_with_change(
    server: SocketAddr,
    qps: u32,
    secs: u64,
    records: usize,
    change: Option<impl FnOnce() + Send + 'static>,
    changed_name: &str,
    new_value: &str,
) -> (usize, usize, Vec<f64>, f64, Duration) {
    let sock = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
    let total = (u64::from(qps) * secs) as usize;
    let sent_at: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let got: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; total]));
    let done = Arc::new(AtomicBool::new(false));
    let rx = {
        let (sock, got, done) = (sock.clone(), got.clone(), done.clone());
        std::thread::spawn(move || {
            sock.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut buf = [0u8; 4096];
            while !done.load(Ordering::Relaxed) {
                if let Ok((n, _)) = sock.recv_from(&mut buf)
                    && n >= 2
                {
                    // Sequence number in the ID (the low 16 bits) and one byte of the
                    // name's label: see the sender.
                    let id = u16::from_be_bytes([buf[0], buf[1]]) as usize;
                    let now = Instant::now();
                    let mut g = got.lock().unwrap();
                    // The k-th query with this ID that has no reply yet.
                    let mut k = id;
                    while k < g.len() {
                        if g[k].is_none() {
                            g[k] = Some(now);
                            break;
                        }
                        k += 65_536;
                    }
                }
            }
        })
    };
    let gap = Duration::from_secs_f64(1.0 / f64::from(qps));
    let start = Instant::now();
    let mut change = change;
    let mut change_at = None;
    let mut watcher = None;
    for i in 0..total {
        let due = start + gap * i as u32;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let name = format!("h{}.big.example.org.", (i * 7919) % records);
        let _ = sock.send_to(&query_bytes(i as u16, &name), server);
        sent_at.lock().unwrap()[i] = Some(Instant::now());
        if i == total / 2
            && let Some(c) = change.take()
        {
            // The change and the watch for its answer run beside the sender.
            change_at = Some(Instant::now());
            let (name, value) = (changed_name.to_owned(), new_value.to_owned());
            watcher = Some(std::thread::spawn(move || {
                let t = Instant::now();
                c();
                wait_answer(server, &name, Some(&value), Duration::from_secs(30));
                t.elapsed()
            }));
        }
    }
    let change_at = change_at.unwrap_or(start);
    let to_new = watcher.map_or(Duration::ZERO, |w| w.join().unwrap());
    std::thread::sleep(Duration::from_secs(1));
    done.store(true, Ordering::Relaxed);
    rx.join().unwrap();
    let sent = sent_at.lock().unwrap();
    let got = got.lock().unwrap();
    let mut lat = Vec::new();
    let mut lost = 0;
    let mut swap_max: f64 = 0.0;
    for (s, g) in sent.iter().zip(got.iter()) {
        match (s, g) {
            (Some(s), Some(g)) => {
                let ms = g.duration_since(*s).as_secs_f64() * 1e3;
                lat.push(ms);
                let from_change = if *s > change_at {
                    s.duration_since(change_at)
                } else {
                    change_at.duration_since(*s)
                };
                if from_change < Duration::from_secs(1) {
                    swap_max = swap_max.max(ms);
                }
            }
            (Some(_), None) => lost += 1,
            _ => {}
        }
    }
    (sent.iter().flatten().count(), lost, lat, swap_max, to_new)
}

fn main() {
    let Some(a) = args() else {
        // `cargo test --all-targets` runs benches once with no arguments.
        println!(
            "transfer bench: needs knotd/knotc; run bench/transfer.sh (or cargo bench --bench transfer -- --run)"
        );
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let s = Setup {
        dir: tmp.path().to_owned(),
        knot_port: free_port(),
        dns_port: free_port(),
        secret: "c2lwZG5zLWJlbmNobWFyay1rZXktbm90LWEtc2VjcmV0IQ==".into(),
    };
    let dns = SocketAddr::from(([127, 0, 0, 1], s.dns_port));
    println!(
        "# transfer bench: {} records, {} catalog members, {} qps; {} CPUs, load {}",
        a.records,
        a.members,
        a.qps,
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split(' ')
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    let knot_conf = write_knot(&s, &a);
    let t = Instant::now();
    let mut knot = Some(spawn(
        "knotd",
        &["-c", knot_conf.to_str().unwrap()],
        &s.dir.join("knotd.log"),
    ));
    while TcpStream::connect(("127.0.0.1", s.knot_port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "knotd did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // Knot loads zones in the background: wait until the big zone answers.
    let last = format!("h{}.big.example.org.", a.records - 1);
    wait_answer(
        SocketAddr::from(([127, 0, 0, 1], s.knot_port)),
        &last,
        None,
        Duration::from_secs(120),
    );
    println!("knotd serving after {:.1} s", t.elapsed().as_secs_f64());

    // 1. Big zone, cold start.
    let big = write_sipdns(&s, "big", "zone: big.example.org");
    let log = s.dir.join("sipdns-big.log");
    let (p, _) = start_sipdns(&big, &log);
    let took = wait_answer(dns, &last, None, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{} records, cold start (AXFR): first answer after {:.2} s; RSS {:.0} MiB",
        a.records,
        took.as_secs_f64(),
        rss_mib(p.0.id())
    );
    drop(p);

    // 2. Restart with the disk copy (the primary stopped: a WAN outage).
    knot.take();
    let (p, _) = start_sipdns(&big, &log);
    let took = wait_answer(dns, &last, None, Duration::from_secs(120));
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "{} records, restart without the primary (disk copy): first answer after {:.2} s; RSS {:.0} MiB",
        a.records,
        took.as_secs_f64(),
        rss_mib(p.0.id())
    );
    drop(p);

    // 3. IXFR of one record under load.
    let mut knot = Some(spawn(
        "knotd",
        &["-c", knot_conf.to_str().unwrap()],
        &s.dir.join("knotd2.log"),
    ));
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", s.knot_port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "knotd did not restart"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    wait_answer(
        SocketAddr::from(([127, 0, 0, 1], s.knot_port)),
        &last,
        None,
        Duration::from_secs(120),
    );
    let (p, _) = start_sipdns(&big, &log);
    if !answers_within(dns, &last, Duration::from_secs(60)) {
        panic!(
            "sipdns did not answer after the primary's restart; its log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    // Let its first (up-to-date) check pass.
    std::thread::sleep(Duration::from_secs(2));
    // The same stream without a change: the machine's own noise, for comparison.
    let (sent0, lost0, mut lat0, _, _) =
        load_with_change(dns, a.qps, a.secs, a.records, None::<fn()>, "", "");
    println!(
        "baseline, no change, {} qps: {sent0} queries, {lost0} lost; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        a.qps,
        pct(&mut lat0, 0.5),
        pct(&mut lat0, 0.99),
        pct(&mut lat0, 1.0),
    );
    let kc = knot_conf.clone();
    let (sent, lost, mut lat, swap_max, to_new) = load_with_change(
        dns,
        a.qps,
        a.secs,
        a.records,
        Some(move || {
            knotc(&kc, &["zone-begin", "big.example.org"]);
            knotc(
                &kc,
                &[
                    "zone-set",
                    "big.example.org",
                    "h7",
                    "300",
                    "A",
                    "192.0.2.254",
                ],
            );
            knotc(
                &kc,
                &["zone-unset", "big.example.org", "h7", "A", "192.0.2.8"],
            );
            knotc(&kc, &["zone-commit", "big.example.org"]);
        }),
        "h7.big.example.org.",
        "192.0.2.254",
    );
    println!(
        "IXFR of 1 record under {} qps: {sent} queries, {lost} lost; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; slowest within ±1 s of the change {:.2} ms; change -> new answer {:.0} ms; RSS {:.0} MiB",
        a.qps,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        pct(&mut lat, 1.0),
        swap_max,
        to_new.as_secs_f64() * 1e3,
        rss_mib(p.0.id())
    );
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    if let Some(l) = tail.lines().rev().find(|l| l.contains("zone transferred")) {
        // Without the terminal colours of the log.
        let mut plain = String::new();
        let mut esc = false;
        for c in l.trim().chars() {
            match (esc, c) {
                (false, '\u{1b}') => esc = true,
                (true, 'm') => esc = false,
                (true, _) => {}
                (false, c) => plain.push(c),
            }
        }
        println!("  sipdns: {plain}");
    }
    drop(p);

    // 4. Catalog, cold start.
    let cat = write_sipdns(&s, "catalog", "catalog: catalog.example.net");
    let clog = s.dir.join("sipdns-catalog.log");
    let (p, t0) = start_sipdns(&cat, &clog);
    let first = wait_answer(
        dns,
        "sip.office0.example.org.",
        None,
        Duration::from_secs(300),
    );
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    for i in 0..a.members {
        let name = format!("sip.office{i}.example.org.");
        let t = Instant::now();
        while ask(&sock, dns, &name, Duration::from_millis(200)).is_none() {
            assert!(
                t.elapsed() < Duration::from_secs(300),
                "{name} never answered"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let all = t0.elapsed();
    std::thread::sleep(Duration::from_millis(500));
    println!(
        "catalog of {} members, cold start: first member answered after {:.2} s, all after {:.2} s; RSS {:.0} MiB",
        a.members,
        first.as_secs_f64(),
        all.as_secs_f64(),
        rss_mib(p.0.id())
    );
    drop(p);

    // 5. Catalog, restart without the primary.
    knot.take();
    let (p, t0) = start_sipdns(&cat, &clog);
    wait_answer(
        dns,
        "sip.office0.example.org.",
        None,
        Duration::from_secs(120),
    );
    for i in 0..a.members {
        let name = format!("sip.office{i}.example.org.");
        assert!(
            ask(&sock, dns, &name, Duration::from_secs(1)).is_some(),
            "{name} not served from disk"
        );
    }
    println!(
        "catalog of {} members, restart without the primary (disk copies): all answered {:.2} s after start; RSS {:.0} MiB",
        a.members,
        t0.elapsed().as_secs_f64(),
        rss_mib(p.0.id())
    );
    drop(p);
}
