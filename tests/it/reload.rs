//! Hot reload: parse and validate aside, swap atomically, keep the running state on error,
//! and never drop or fail a query meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use hickory_proto::{op::ResponseCode, rr::RecordType};

use crate::common::{
    client::{self, query},
    server,
};

fn zone(version: u32) -> String {
    format!(
        "zone: pbx.example.org\nrecords:\n  - {{ name: '@', type: TXT, text: v{version} }}\n  - {{ name: '@', type: A, address: 192.0.2.10 }}\n  - {{ name: _sip._udp, type: SRV, priority: 10, weight: 1, port: 5060, target: server1 }}\n  - {{ name: server1, type: A, address: 192.0.2.10 }}\n"
    )
}

async fn txt(dns: std::net::SocketAddr) -> String {
    let (m, _) = client::udp(dns, &query("pbx.example.org.", RecordType::TXT, Some(1232))).await;
    m.answers
        .first()
        .map(|r| r.data.to_string())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_reloads_under_load_lose_no_query() {
    let s = server::start("", &[("pbx.yaml", &zone(0))]).await;
    let zones_dir = s.dir.path().join("zones");
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, lost, servfail) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut load = Vec::new();
    for i in 0..4 {
        let (stop, ok, lost, servfail, dns) = (
            stop.clone(),
            ok.clone(),
            lost.clone(),
            servfail.clone(),
            s.dns,
        );
        load.push(tokio::spawn(async move {
            let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut n = 0u64;
            // Bounded: stops when told, or after 200k queries at most.
            while !stop.load(Ordering::Relaxed) && n < 200_000 {
                n += 1;
                let qt = if (n + i).is_multiple_of(2) {
                    RecordType::SRV
                } else {
                    RecordType::A
                };
                let name = if qt == RecordType::SRV {
                    "_sip._udp.pbx.example.org."
                } else {
                    "pbx.example.org."
                };
                let q = query(name, qt, Some(1232));
                sock.send_to(&q.to_vec().unwrap(), dns).await.unwrap();
                match tokio::time::timeout(Duration::from_secs(2), sock.recv_from(&mut buf)).await {
                    Ok(Ok((len, _))) => {
                        let m = hickory_proto::op::Message::from_vec(&buf[..len]).unwrap();
                        if m.metadata.response_code != ResponseCode::NoError || m.answers.is_empty()
                        {
                            servfail.fetch_add(1, Ordering::Relaxed);
                        } else {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    _ => {
                        lost.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let reloader = s.server().reloader.clone();
    let mut last_good = 0;
    for v in 1..=50u32 {
        if v.is_multiple_of(2) {
            // Invalid: an A record without an address. Rejected; the old zone stays.
            std::fs::write(
                zones_dir.join("pbx.yaml"),
                format!("{}  - {{ name: bad, type: A }}\n", zone(v)),
            )
            .unwrap();
            assert!(reloader.reload().is_err());
            assert!(reloader.status().last_error.is_some());
        } else {
            std::fs::write(zones_dir.join("pbx.yaml"), zone(v)).unwrap();
            reloader.reload().unwrap();
            last_good = v;
        }
        assert_eq!(txt(s.dns).await, format!("v{last_good}"));
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in load {
        l.await.unwrap();
    }
    let (ok, lost, servfail) = (
        ok.load(Ordering::Relaxed),
        lost.load(Ordering::Relaxed),
        servfail.load(Ordering::Relaxed),
    );
    assert!(ok > 100, "only {ok} answers during the test");
    assert_eq!(lost, 0, "{lost} queries lost during reloads ({ok} ok)");
    assert_eq!(
        servfail, 0,
        "{servfail} failed answers during reloads ({ok} ok)"
    );
    let status = reloader.status();
    // The file watcher may have reloaded some versions a second time; never fewer.
    assert!(status.reloads_failed >= 25, "{status:?}");
    assert!(status.reloads_ok >= 25, "{status:?}");
    let metrics = s.server().metrics.encode();
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("sipdns_config_reloads_total{result=\"error\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    assert_eq!(errors, status.reloads_failed, "{metrics}");
}

#[tokio::test]
async fn a_changed_zone_file_is_picked_up_without_a_signal() {
    let s = server::start("", &[("pbx.yaml", &zone(1))]).await;
    assert_eq!(txt(s.dns).await, "v1");
    std::fs::write(s.dir.path().join("zones/pbx.yaml"), zone(2)).unwrap();
    // Bounded polling: the watcher checks every second.
    let mut seen = String::new();
    for _ in 0..50 {
        seen = txt(s.dns).await;
        if seen == "v2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(seen, "v2");
}
