//! Prober benchmark: probes N fake SIP targets on loopback at a 1 s interval and reports
//! the prober's CPU use and how late it makes other tasks on its runtime.
//!
//! `cargo bench --bench prober -- --targets 5000 --secs 10` (or `bench/prober.sh`).
//!
//! - The fake UAS (N UDP sockets on 127.0.0.1, one tokio task each, answering every
//!   OPTIONS with 200) runs on its own thread and runtime, so its CPU is not counted.
//! - The prober runs alone on a current-thread runtime: all of its work happens on that
//!   one thread, whose CPU time (`CLOCK_THREAD_CPUTIME_ID`) is the figure reported.
//! - A "tick" task on the same runtime sleeps 1 ms at a time and records how late it
//!   wakes up: the p99 of that is what probing adds to the latency of anything sharing the
//!   runtime with the prober, e.g. a DNS handler.
//! - With `--dns`: the whole server instead (DNS listeners, resolver, prober probing the N
//!   targets), and a client on its own thread sending `--qps` queries per second for a
//!   static name for `--secs`, recording each query's round trip: DNS p50/p99/p99.9 with
//!   N targets probed, to compare with N = 0.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]
#![allow(clippy::print_stdout)]

use std::{
    net::IpAddr,
    sync::{Arc, mpsc},
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use sipdns::{
    config::{ExtraTargetConfig, ProbeConfig, SipConfig, SipDomainConfig},
    health::{HealthHandle, Lookup, ProberHandle},
    metrics::Metrics,
    record::{Answer, DomainName, RType, Rcode, Source},
    shutdown::CancellationToken,
    target::Transport,
};

struct NoDns;

impl Lookup for NoDns {
    fn lookup<'a>(&'a self, _: &'a DomainName, _: RType) -> BoxFuture<'a, Answer> {
        Box::pin(async { Answer::empty(Rcode::NxDomain, Source::Static) })
    }
}

fn reply_to(req: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(req);
    let mut out = String::from("SIP/2.0 200 OK\r\n");
    for line in text.split("\r\n").skip(1) {
        let l = line.to_ascii_lowercase();
        if ["via:", "from:", "to:", "call-id:", "cseq:"]
            .iter()
            .any(|h| l.starts_with(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out.into_bytes()
}

fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the live local.
    unsafe {
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts);
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    // `cargo bench` passes --bench; the knobs are ours.
    if std::env::args().any(|a| a == "--dns") {
        dns_main();
        return;
    }
    let n = arg("--targets", 1000) as usize;
    let secs = arg("--secs", 10);
    let interval = Duration::from_millis(arg("--interval-ms", 1000));

    // Fake UAS on its own thread.
    let (ports, uas_stop, uas) = start_uas(n);

    let mut domain = SipDomainConfig::new(DomainName::parse("pbx.example.org").unwrap());
    domain.targets = ports
        .iter()
        .map(|p| ExtraTargetConfig {
            address: IpAddr::from([127, 0, 0, 1]),
            port: *p,
            transport: Transport::Udp,
            host: None,
        })
        .collect();
    let cfg = SipConfig {
        probe: ProbeConfig {
            interval,
            startup_grace: Duration::from_secs(5),
            ..ProbeConfig::default()
        },
        domains: vec![domain],
    };

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (cpu, probes, lateness) = rt.block_on(async move {
        let metrics = Arc::new(Metrics::new());
        let stop = CancellationToken::new();
        let handle = ProberHandle::spawn(
            &cfg,
            Arc::new(NoDns),
            metrics.clone(),
            None,
            HealthHandle::new(),
            stop.clone(),
        )
        .unwrap();
        let mut ready = handle.ready();
        let _ = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|v| *v)).await;
        // Warm up one interval so every target is in its steady rhythm.
        tokio::time::sleep(interval * 2).await;
        let good = || metrics.probes.with_label_values(&["udp", "good"]).get();
        let bad: u64 = ["timeout", "unreachable", "error", "bad_code"]
            .iter()
            .map(|r| metrics.probes.with_label_values(&["udp", r]).get())
            .sum();
        let (g0, c0) = (good(), thread_cpu());
        let window = Duration::from_secs(secs);
        let t0 = Instant::now();
        let mut late = Vec::new();
        while t0.elapsed() < window {
            let want = Instant::now() + Duration::from_millis(1);
            tokio::time::sleep_until(want.into()).await;
            late.push(Instant::now().saturating_duration_since(want));
        }
        let cpu = thread_cpu() - c0;
        let probes = good() - g0;
        let bad_after: u64 = ["timeout", "unreachable", "error", "bad_code"]
            .iter()
            .map(|r| metrics.probes.with_label_values(&["udp", r]).get())
            .sum();
        if bad_after > bad {
            eprintln!("warning: {} bad probes during the window", bad_after - bad);
        }
        stop.cancel();
        (cpu, probes, late)
    });
    uas_stop.cancel();
    let _ = uas.join();

    let mut late = lateness;
    late.sort();
    let pct = |p: f64| {
        late.get(((late.len() as f64 * p) as usize).min(late.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
    };
    let cpu_pct = cpu.as_secs_f64() / secs as f64 * 100.0;
    println!(
        "targets={n} interval={}ms window={secs}s probes/s={:.0} prober_cpu={:.1}% of one core \
         ({:.1} us/probe) tick_late_p50={:.0}us p99={:.0}us max={:.0}us",
        interval.as_millis(),
        probes as f64 / secs as f64,
        cpu_pct,
        cpu.as_secs_f64() * 1e6 / probes.max(1) as f64,
        pct(0.50).as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() * 1e6,
        late.last().copied().unwrap_or_default().as_secs_f64() * 1e6,
    );
}

/// Starts `n` fake UAS on loopback on their own thread; returns their ports and a stop token.
fn start_uas(n: usize) -> (Vec<u16>, CancellationToken, std::thread::JoinHandle<()>) {
    let (ports_tx, ports_rx) = mpsc::channel();
    let stop = CancellationToken::new();
    let token = stop.clone();
    let thread = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let mut ports = Vec::with_capacity(n);
            for _ in 0..n {
                let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
                ports.push(s.local_addr().unwrap().port());
                let t = token.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 2048];
                    loop {
                        tokio::select! {
                            () = t.cancelled() => return,
                            r = s.recv_from(&mut buf) => {
                                let Ok((len, from)) = r else { continue };
                                let _ = s.send_to(&reply_to(&buf[..len]), from).await;
                            }
                        }
                    }
                });
            }
            ports_tx.send(ports).unwrap();
            token.cancelled().await;
        });
    });
    (ports_rx.recv().unwrap(), stop, thread)
}

/// The whole server with `--targets` probed, and DNS latency measured from a client.
fn dns_main() {
    let n = arg("--targets", 1000) as usize;
    let secs = arg("--secs", 10);
    let qps = arg("--qps", 2000).max(1);
    let (ports, uas_stop, uas) = start_uas(n);
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/pbx.yaml"),
        "zone: pbx.example.org\nrecords:\n  - { name: server1, type: A, address: 192.0.2.10 }\n",
    )
    .unwrap();
    let mut cfg = String::from(
        "dns:\n  listen: [\"127.0.0.1:0\"]\nupstream:\n  servers: [\"127.0.0.1:9\"]\napi:\n  listen: null\nsip:\n  probe:\n    interval: 1s\n    timeout: 500ms\n    startup_grace: 5s\n  domains:\n    - name: pbx.example.org\n      targets:\n",
    );
    for p in &ports {
        cfg.push_str(&format!("        - {{ address: 127.0.0.1, port: {p} }}\n"));
    }
    if ports.is_empty() {
        cfg.push_str("        []\n");
        cfg = cfg.replace("      targets:\n        []\n", "      targets: []\n");
    }
    let path = dir.path().join("sipdns.yaml");
    std::fs::write(&path, &cfg).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (server, addr) = rt.block_on(async {
        let (config, zones) = sipdns::state::load(&path).unwrap();
        let server = sipdns::app::Server::start(&path, config, zones, CancellationToken::new())
            .await
            .unwrap();
        let mut ready = server.prober.ready();
        let _ = tokio::time::timeout(Duration::from_secs(30), ready.wait_for(|v| *v)).await;
        let addr = server.dns_addrs[0];
        (server, addr)
    });
    // Warm-up: every target in its rhythm.
    std::thread::sleep(Duration::from_secs(2));
    let query = {
        use hickory_proto::{
            op::{Message, Query},
            rr::{Name, RecordType},
        };
        let mut m = Message::query();
        m.add_query(Query::query(
            Name::from_ascii("server1.pbx.example.org.").unwrap(),
            RecordType::A,
        ));
        m.to_vec().unwrap()
    };
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let gap = Duration::from_secs_f64(1.0 / qps as f64);
    let total = qps * secs;
    let mut rtts = Vec::with_capacity(total as usize);
    let mut lost = 0u64;
    let mut buf = [0u8; 1500];
    let start = Instant::now();
    for i in 0..total {
        let due = start + gap * (i as u32);
        while Instant::now() < due {
            std::hint::spin_loop();
        }
        let mut q = query.clone();
        q[0..2].copy_from_slice(&(i as u16).to_be_bytes());
        let t = Instant::now();
        sock.send_to(&q, addr).unwrap();
        loop {
            match sock.recv_from(&mut buf) {
                Ok((len, _)) if len >= 2 && buf[0..2] == q[0..2] => {
                    rtts.push(t.elapsed());
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    let probes = server
        .metrics
        .probes
        .with_label_values(&["udp", "good"])
        .get();
    rt.block_on(server.stop());
    uas_stop.cancel();
    let _ = uas.join();
    rtts.sort();
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 * p) as usize).min(rtts.len().saturating_sub(1)))
            .copied()
            .unwrap_or_default()
            .as_secs_f64()
            * 1e6
    };
    println!(
        "targets={n} dns_qps={qps} window={secs}s answered={} lost={lost} good_probes={probes} \
         dns_p50={:.0}us p99={:.0}us p99.9={:.0}us",
        rtts.len(),
        pct(0.50),
        pct(0.99),
        pct(0.999),
    );
}
