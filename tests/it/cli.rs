//! The operator's command line and timed drains (issue #16, points 2 and 3), black-box: a
//! real server on loopback probing two real sipp UAS, the `sipdns` binary as the client.

use std::{
    net::Ipv4Addr,
    path::PathBuf,
    process::Output,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sipdns::target::{TargetKey, Transport};

use crate::common::{
    http::Client,
    server::{self, API_TOKEN, TestServer},
};
use crate::common::{
    process::{Peer, free_port},
    sip::sipp_uas_at,
};

/// A small office: one SIP domain, two UDP servers (real sipp), the API with its token,
/// a state file.
pub(crate) struct Office {
    pub(crate) s: TestServer,
    pub(crate) primary: Peer,
    pub(crate) secondary: Peer,
    pub(crate) key1: TargetKey,
    pub(crate) key2: TargetKey,
    /// sipp's logs (kept as long as the peers run).
    #[allow(dead_code)]
    pub(crate) dir: tempfile::TempDir,
}

/// Starts the two servers at `ips` and sipdns in front of them; returns once both are up.
pub(crate) async fn office(ips: (Ipv4Addr, Ipv4Addr), extra: &str) -> Office {
    let dir = tempfile::tempdir().unwrap();
    let (p1, p2) = (free_port(), free_port());
    let primary = sipp_uas_at(dir.path(), ips.0, p1, Transport::Udp);
    let secondary = sipp_uas_at(dir.path(), ips.1, p2, Transport::Udp);
    let zone = format!(
        "zone: pbx.example.org\nrecords:\n\
  - {{ name: '@', type: NAPTR, order: 100, preference: 10, flags: s, service: SIP+D2U, replacement: _sip._udp }}\n\
  - {{ name: _sip._udp, type: SRV, priority: 10, weight: 1, port: {p1}, target: sip1 }}\n\
  - {{ name: _sip._udp, type: SRV, priority: 20, weight: 1, port: {p2}, target: sip2 }}\n\
  - {{ name: sip1, type: A, address: {} }}\n\
  - {{ name: sip2, type: A, address: {} }}\n",
        ips.0, ips.1
    );
    let config = format!(
        "state_file: state.json\nsip:\n  probe:\n    interval: 200ms\n    timeout: 150ms\n    fall: 2\n    rise: 1\n    startup_grace: 2s\n  domains:\n    - name: pbx.example.org\n      ttl: 1\n{extra}"
    );
    let s = server::start_with_api(&config, &[("pbx.example.org.yaml", &zone)]).await;
    let key = |ip: Ipv4Addr, port| TargetKey {
        ip: ip.into(),
        port,
        transport: Transport::Udp,
    };
    let o = Office {
        s,
        primary,
        secondary,
        key1: key(ips.0, p1),
        key2: key(ips.1, p2),
        dir,
    };
    o.wait_health(&o.key1, "up", Duration::from_secs(10)).await;
    o.wait_health(&o.key2, "up", Duration::from_secs(10)).await;
    o
}

impl Office {
    pub(crate) fn api(&self) -> Client {
        Client::new(self.s.api.unwrap(), Some(API_TOKEN))
    }

    pub(crate) fn api_url(&self) -> String {
        format!("http://{}", self.s.api.unwrap())
    }

    pub(crate) fn token_file(&self) -> PathBuf {
        self.s.dir.path().join("api-token")
    }

    pub(crate) fn state_file(&self) -> Value {
        let text = std::fs::read_to_string(self.s.dir.path().join("state.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }

    /// The API row of a target.
    pub(crate) async fn row(&self, key: &TargetKey) -> Value {
        let v = self.api().get("/api/v1/targets").await.json();
        v.as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"] == json!(key.to_string()))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Polls until the target's `health` is `want` (bounded).
    pub(crate) async fn wait_health(&self, key: &TargetKey, want: &str, bound: Duration) {
        let t = Instant::now();
        loop {
            let row = self.row(key).await;
            if row["health"] == json!(want) {
                return;
            }
            assert!(
                t.elapsed() < bound,
                "{key} not {want} within {bound:?}: {row}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Runs `sipdns ARGS --api URL --token-file FILE`.
    pub(crate) async fn cli(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
        all.extend([
            "--api".to_owned(),
            self.api_url(),
            "--token-file".to_owned(),
            self.token_file().display().to_string(),
        ]);
        sipdns_bin(&all).await
    }
}

pub(crate) async fn sipdns_bin(args: &[String]) -> Output {
    let run = tokio::process::Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(args)
        .env_remove("SIPDNS_API_TOKEN")
        .env("USER", "alice")
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("the CLI did not finish within 30 s")
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit status; stdout:\n{}\nstderr:\n{}",
        out(o),
        err(o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_drain_ends_by_itself_and_survives_a_restart() {
    let mut o = office(
        (Ipv4Addr::new(127, 0, 0, 21), Ipv4Addr::new(127, 0, 0, 22)),
        "",
    )
    .await;
    let c = o.api();
    let path = format!("/api/v1/targets/{}:{}/udp/drain", o.key1.ip, o.key1.port);
    // Bad details: 422 naming the field, nothing changes.
    for (body, field) in [
        (json!({"duration": "soon"}), "duration"),
        (json!({"duration": "0s"}), "duration"),
        (json!({"note": "x".repeat(501)}), "note"),
    ] {
        let r = c.json("POST", &path, &[], &body).await;
        assert_eq!(r.status, 422, "{body}: {}", r.text());
        assert!(r.text().contains(field), "{}", r.text());
    }
    assert_eq!(o.row(&o.key1).await["admin"], "enabled");
    let r = c
        .json(
            "POST",
            &path,
            &[],
            &json!({"duration": "2s", "note": "firmware", "by": "alice"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let v = r.json();
    assert_eq!(v["admin"], "drained");
    assert_eq!(v["note"], "firmware");
    let until = v["until"].as_str().unwrap().to_owned();
    let end = humantime::parse_rfc3339(&until).unwrap();
    let left = end
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    assert!(left <= Duration::from_secs(2), "until {until}");
    // Shown in the rows and persisted with its end.
    let row = o.row(&o.key1).await;
    assert_eq!(row["admin"], "drained");
    assert_eq!(
        row["drain"],
        json!({"until": until, "note": "firmware", "by": "alice"})
    );
    let state = o.state_file();
    assert_eq!(state["drained"], json!([o.key1.to_string()]));
    assert_eq!(state["drains"][o.key1.to_string()]["until"], json!(until));
    // Ends by itself, within a second of its end.
    let t = Instant::now();
    while o.row(&o.key1).await["admin"] != "enabled" {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "the drain did not end by itself"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let late = std::time::SystemTime::now()
        .duration_since(end)
        .unwrap_or_default();
    assert!(
        late < Duration::from_millis(1500),
        "ended {late:?} after its end"
    );
    assert_eq!(o.row(&o.key1).await["drain"], Value::Null);
    assert_eq!(o.state_file()["drained"], json!([]));
    assert!(o.state_file().get("drains").is_none());

    // A long drain outlives a restart, end time and note included.
    let r = c
        .json(
            "POST",
            &path,
            &[],
            &json!({"duration": "1h", "note": "rack move"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let until = r.json()["until"].clone();
    o.s.restart().await;
    o.wait_health(&o.key1, "up", Duration::from_secs(10)).await;
    let row = o.row(&o.key1).await;
    assert_eq!(row["admin"], "drained");
    assert_eq!(row["drain"]["until"], until);
    assert_eq!(row["drain"]["note"], "rack move");
    // A plain drain (no body) still answers as before.
    let path2 = format!("/api/v1/targets/{}:{}/udp/drain", o.key2.ip, o.key2.port);
    let r = o.api().send("POST", &path2, &[], None).await;
    assert_eq!(
        r.json(),
        json!({"target": o.key2.to_string(), "admin": "drained"})
    );
    o.primary.stop();
    o.secondary.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_drives_the_api_with_tables_json_and_exit_codes() {
    let mut o = office(
        (Ipv4Addr::new(127, 0, 0, 23), Ipv4Addr::new(127, 0, 0, 24)),
        "",
    )
    .await;
    let (k1, k2) = (o.key1.to_string(), o.key2.to_string());

    let r = o.cli(&["status"]).await;
    assert_exit(&r, 0);
    let text = out(&r);
    assert!(text.contains("ready") && text.contains("yes"), "{text}");
    assert!(
        text.contains("pbx.example.org") && text.contains("2 up, 0 down"),
        "{text}"
    );

    // An aligned table: every row's STATE column starts where the header's does.
    let r = o.cli(&["targets"]).await;
    assert_exit(&r, 0);
    let text = out(&r);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    let col = lines[0].find("STATE").unwrap();
    for l in &lines[1..] {
        assert_eq!(&l[col..col + 2], "up", "{text}");
    }
    assert!(
        text.contains(&k1) && text.contains("sip1.pbx.example.org"),
        "{text}"
    );

    // Drain for 30 minutes with a note: in the table, the JSON and the state file.
    let target = format!("{}:{}/udp", o.key2.ip, o.key2.port);
    let r = o
        .cli(&[
            "drain",
            &target,
            "--for",
            "30m",
            "--note",
            "firmware upgrade",
        ])
        .await;
    assert_exit(&r, 0);
    assert!(out(&r).contains("drained until 20"), "{}", out(&r));
    let r = o.cli(&["targets"]).await;
    let text = out(&r);
    let line = text.lines().find(|l| l.contains(&k2)).unwrap();
    assert!(
        line.contains("drained") && line.contains("firmware upgrade") && line.contains("by alice"),
        "{text}"
    );
    let r = o.cli(&["targets", "--json"]).await;
    assert_exit(&r, 0);
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    let row = v
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == json!(k2))
        .unwrap();
    assert_eq!(row["admin"], "drained");
    assert_eq!(row["drain"]["note"], "firmware upgrade");
    assert_eq!(o.state_file()["drains"][&k2]["note"], "firmware upgrade");

    // What a phone is told: only the primary's SRV.
    let r = o
        .cli(&["explain", "_sip._udp.pbx.example.org", "SRV"])
        .await;
    assert_exit(&r, 0);
    let text = out(&r);
    assert!(
        text.contains("withheld") && text.contains("sip2.pbx.example.org"),
        "{text}"
    );

    let r = o.cli(&["enable", &target]).await;
    assert_exit(&r, 0);
    assert_eq!(out(&r), format!("{k2} enabled\n"));

    // Zones and records: list, add, remove.
    let r = o.cli(&["zones"]).await;
    assert_exit(&r, 0);
    assert!(
        out(&r).starts_with("ZONE") && out(&r).contains("pbx.example.org"),
        "{}",
        out(&r)
    );
    let r = o
        .cli(&[
            "records",
            "pbx.example.org",
            "add",
            "sip3",
            "A",
            "address=192.0.2.13",
        ])
        .await;
    assert_exit(&r, 0);
    assert!(out(&r).contains("address=192.0.2.13"), "{}", out(&r));
    let r = o.cli(&["records", "pbx.example.org", "--json"]).await;
    assert_exit(&r, 0);
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    let idx = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .position(|r| r["name"] == "sip3")
        .unwrap();
    let r = o
        .cli(&["records", "pbx.example.org", "rm", &idx.to_string()])
        .await;
    assert_exit(&r, 0);
    assert!(!out(&r).contains("192.0.2.13"), "{}", out(&r));
    let r = o.cli(&["reload"]).await;
    assert_exit(&r, 0);
    assert_eq!(out(&r), "reloaded\n");

    // API errors: exit 1 with the API's message.
    let r = o.cli(&["drain", "192.0.2.99:5060/udp"]).await;
    assert_exit(&r, 1);
    assert!(
        err(&r).contains("unknown target 192.0.2.99:5060/udp"),
        "{}",
        err(&r)
    );
    let r = o
        .cli(&[
            "records",
            "pbx.example.org",
            "add",
            "bad",
            "A",
            "address=nonsense",
        ])
        .await;
    assert_exit(&r, 1);
    assert!(err(&r).contains("422"), "{}", err(&r));
    let wrong = o.s.dir.path().join("wrong-token");
    std::fs::write(&wrong, "nope\n").unwrap();
    let r = sipdns_bin(&[
        "targets".into(),
        "--api".into(),
        o.api_url(),
        "--token-file".into(),
        wrong.display().to_string(),
    ])
    .await;
    assert_exit(&r, 1);
    assert!(err(&r).contains("401"), "{}", err(&r));
    // Usage errors: exit 2.
    for args in [
        vec!["drain"],
        vec!["drain", "192.0.2.10"],
        vec!["drain", "192.0.2.10/udp", "--for", "soon"],
        vec!["targets", "--bogus"],
    ] {
        let r = o.cli(&args).await;
        assert_exit(&r, 2);
    }

    // The API and token found through the server's config file.
    let cfg = o.s.dir.path().join("client.yaml");
    std::fs::write(
        &cfg,
        format!(
            "api:\n  listen: \"{}\"\n  token_file: api-token\n",
            o.s.api.unwrap()
        ),
    )
    .unwrap();
    let r = sipdns_bin(&[
        "targets".into(),
        "-c".into(),
        cfg.display().to_string(),
        "--json".into(),
    ])
    .await;
    assert_exit(&r, 0);
    let v: Value = serde_json::from_slice(&r.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    o.primary.stop();
    o.secondary.stop();
}
