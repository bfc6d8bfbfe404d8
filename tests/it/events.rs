//! Events out and log lines (issue #16, points 4 and 5): webhooks against a real HTTP
//! receiver started by the test (and one that never answers, which must not slow probing
//! or DNS); the binary's log lines on a pipe (no ANSI escapes; JSON lines that parse).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use hickory_proto::rr::RecordType;
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt as _;

use crate::common::{process::free_port, sip::sipp_uas_at};
use crate::{
    cli::{office, sipdns_bin},
    common::client::{self, query},
};

type Seen = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// An HTTP receiver on loopback that keeps every POST (Authorization header, JSON body).
async fn receiver() -> (SocketAddr, Seen) {
    async fn hook(State(seen): State<Seen>, headers: HeaderMap, body: String) -> &'static str {
        let auth = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::String(body));
        seen.lock().unwrap().push((auth, v));
        "ok"
    }
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

async fn wait_event(seen: &Seen, what: &str, bound: Duration, f: impl Fn(&Value) -> bool) -> Value {
    let t = Instant::now();
    loop {
        if let Some((_, v)) = seen.lock().unwrap().iter().find(|(_, v)| f(v)) {
            return v.clone();
        }
        assert!(
            t.elapsed() < bound,
            "no {what} event within {bound:?}: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|r| r.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} not in /metrics"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_get_every_event_and_a_hanging_one_slows_nothing() {
    let (addr, seen) = receiver().await;
    // A receiver that accepts connections (kernel backlog) and never answers.
    let hang = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hang_addr = hang.local_addr().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("hook-token");
    std::fs::write(&token_file, "hook-secret-1\n").unwrap();
    let extra = format!(
        "events:\n  webhooks:\n    - url: http://{addr}/hook\n      token_file: {}\n      retries: 2\n    - url: http://{hang_addr}/never\n      timeout: 2s\n      retries: 1\n      queue: 2\n",
        token_file.display()
    );
    let mut o = office(
        (Ipv4Addr::new(127, 0, 0, 41), Ipv4Addr::new(127, 0, 0, 42)),
        &extra,
    )
    .await;
    let c = o.api();
    let t2 = format!("/api/v1/targets/{}:{}/udp", o.key2.ip, o.key2.port);

    // A timed drain and an enable: admin events with the details.
    let r = c
        .json(
            "POST",
            &format!("{t2}/drain"),
            &[],
            &json!({"duration": "10m", "note": "patch", "by": "bob"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let k2 = o.key2.to_string();
    let ev = wait_event(&seen, "drain", Duration::from_secs(5), |v| {
        v["type"] == "admin" && v["admin"] == "drained"
    })
    .await;
    assert_eq!(ev["target"], json!(k2));
    assert_eq!(ev["note"], "patch");
    assert_eq!(ev["by"], "bob");
    assert_eq!(ev["cause"], "api");
    assert!(ev["until"].as_str().unwrap().ends_with('Z'), "{ev}");
    assert!(
        ev["seq"].as_u64().unwrap() >= 1 && ev["time"].is_string(),
        "{ev}"
    );
    // More events than the hanging receiver's queue holds.
    for _ in 0..4 {
        assert_eq!(
            c.send("POST", &format!("{t2}/enable"), &[], None)
                .await
                .status,
            200
        );
        assert_eq!(
            c.send("POST", &format!("{t2}/drain"), &[], None)
                .await
                .status,
            200
        );
    }
    assert_eq!(
        c.send("POST", &format!("{t2}/enable"), &[], None)
            .await
            .status,
        200
    );

    // The primary dies: a transition event, detected as fast as without webhooks, and DNS
    // answers promptly throughout.
    let killed = Instant::now();
    o.primary.kill();
    let mut slowest = Duration::ZERO;
    let ev = loop {
        let t = Instant::now();
        let (m, _) = client::udp(
            o.s.dns,
            &query("_sip._udp.pbx.example.org.", RecordType::SRV, Some(1232)),
        )
        .await;
        slowest = slowest.max(t.elapsed());
        assert!(!m.answers.is_empty());
        let found = seen
            .lock()
            .unwrap()
            .iter()
            .find(|(_, v)| v["type"] == "transition")
            .map(|(_, v)| v.clone());
        if let Some(ev) = found {
            break ev;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(5),
            "no transition event: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let detected = killed.elapsed();
    // fall 2 x interval 200 ms (+10 %) + timeout 150 ms, plus slack for a loaded machine.
    assert!(
        detected < Duration::from_millis(2000),
        "transition after {detected:?}"
    );
    assert!(
        slowest < Duration::from_millis(500),
        "a DNS answer took {slowest:?}"
    );
    assert_eq!(ev["target"], json!(o.key1.to_string()));
    assert_eq!(
        (ev["from"].as_str(), ev["to"].as_str()),
        (Some("up"), Some("down"))
    );
    assert!(
        ev["host"]
            .as_str()
            .unwrap()
            .starts_with("sip1.pbx.example.org"),
        "{ev}"
    );
    assert!(!ev["reason"].as_str().unwrap().is_empty());

    // A reload: its result.
    assert_eq!(
        c.send("POST", "/api/v1/reload", &[], None).await.status,
        200
    );
    let ev = wait_event(&seen, "reload", Duration::from_secs(5), |v| {
        v["type"] == "reload"
    })
    .await;
    assert_eq!(ev["ok"], true);
    assert_eq!(ev["error"], Value::Null);

    // Every event carried the bearer token, in order.
    let all = seen.lock().unwrap().clone();
    assert!(
        all.iter()
            .all(|(a, _)| a.as_deref() == Some("Bearer hook-secret-1"))
    );
    let seqs: Vec<u64> = all
        .iter()
        .map(|(_, v)| v["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    // The hanging receiver's full queue dropped events, counted.
    let m = c.get("/metrics").await.text();
    assert!(
        metric(&m, "sipdns_events_dropped_total{reason=\"queue_full\"}") >= 1.0,
        "{m}"
    );
    assert!(metric(&m, "sipdns_events_sent_total{kind=\"admin\"}") >= 10.0);
    drop(hang);
    o.secondary.stop();
}

/// Reads the child's stderr lines into a shared list.
fn collect(stderr: tokio::process::ChildStderr) -> Arc<Mutex<Vec<String>>> {
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let l = lines.clone();
    tokio::spawn(async move {
        let mut r = tokio::io::BufReader::new(stderr).lines();
        while let Ok(Some(line)) = r.next_line().await {
            l.lock().unwrap().push(line);
        }
    });
    lines
}

async fn wait_line(
    lines: &Arc<Mutex<Vec<String>>>,
    what: &str,
    f: impl Fn(&str) -> bool,
) -> String {
    let t = Instant::now();
    loop {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| f(l)) {
            return l.clone();
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "no {what} line: {:?}",
            lines.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_on_a_pipe_have_no_escapes_and_json_lines_parse() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut sip = sipp_uas_at(
        dir.path(),
        Ipv4Addr::new(127, 0, 0, 45),
        port,
        sipdns::target::Transport::Udp,
    );
    std::fs::write(dir.path().join("api-token"), "log-test-token\n").unwrap();
    std::fs::create_dir(dir.path().join("zones")).unwrap();
    std::fs::write(
        dir.path().join("zones/pbx.example.org.yaml"),
        format!(
            "zone: pbx.example.org\nrecords:\n  - {{ name: _sip._udp, type: SRV, priority: 10, weight: 1, port: {port}, target: sip1 }}\n  - {{ name: sip1, type: A, address: 127.0.0.45 }}\n"
        ),
    )
    .unwrap();
    for format in ["json", "text"] {
        let config = dir.path().join(format!("{format}.yaml"));
        std::fs::write(
            &config,
            format!(
                "dns:\n  listen: [\"127.0.0.1:0\"]\napi:\n  listen: \"127.0.0.2:0\"\n  token_file: api-token\nupstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\nlog:\n  format: {format}\nsip:\n  probe:\n    interval: 200ms\n    timeout: 150ms\n    fall: 2\n  domains:\n    - name: pbx.example.org\n"
            ),
        )
        .unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipdns"))
            .args(["run", "-c", config.to_str().unwrap()])
            .env("RUST_LOG", "info")
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let lines = collect(child.stderr.take().unwrap());
        let listening = wait_line(&lines, "API listening", |l| l.contains("API listening")).await;
        let api = if format == "json" {
            let v: Value = serde_json::from_str(&listening).unwrap();
            v["bound"].as_str().unwrap().to_owned()
        } else {
            listening
                .split("bound=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned()
        };
        let token = dir.path().join("api-token").display().to_string();
        let r = sipdns_bin(&[
            "reload".into(),
            "--api".into(),
            format!("http://{api}"),
            "--token-file".into(),
            token,
        ])
        .await;
        assert_eq!(
            r.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&r.stderr)
        );
        // The target is up; it stops answering: one transition line.
        if format == "json" {
            tokio::time::sleep(Duration::from_millis(500)).await;
            sip.kill();
            wait_line(&lines, "transition", |l| {
                l.contains("\"event\":\"transition\"")
            })
            .await;
            sip = sipp_uas_at(
                dir.path(),
                Ipv4Addr::new(127, 0, 0, 45),
                port,
                sipdns::target::Transport::Udp,
            );
        }
        wait_line(&lines, "reload", |l| l.contains("reload")).await;
        wait_line(&lines, "api_write", |l| l.contains("api_write")).await;
        child.start_kill().unwrap();
        let _ = child.wait().await;
        let lines = lines.lock().unwrap().clone();
        assert!(
            lines.iter().all(|l| !l.contains('\u{1b}')),
            "ANSI escapes on a pipe: {lines:?}"
        );
        if format == "json" {
            let parsed: Vec<Value> = lines
                .iter()
                .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
                .collect();
            let find = |ev: &str| parsed.iter().find(|v| v["event"] == ev).cloned().unwrap();
            let t = find("transition");
            assert_eq!(t["target"], json!(format!("127.0.0.45:{port}/udp")));
            assert_eq!(
                (t["from"].as_str(), t["to"].as_str()),
                (Some("Up"), Some("Down"))
            );
            assert!(t["reason"].is_string() && t["level"] == "INFO" && t["timestamp"].is_string());
            let r = find("reload");
            assert_eq!(r["ok"], true);
            let w = find("api_write");
            assert_eq!(
                (
                    w["method"].as_str(),
                    w["path"].as_str(),
                    w["status"].as_u64()
                ),
                (Some("POST"), Some("/api/v1/reload"), Some(200))
            );
        } else {
            assert!(
                lines
                    .iter()
                    .any(|l| l.contains("event=\"reload\"") || l.contains("event=reload")),
                "{lines:?}"
            );
        }
    }
    sip.stop();
}
