//! Issue 14, tried as an attacker on the LAN or with write access to `zones/` would: the
//! real `sipdns` binary (a child process, so its descriptor limit is its own), on loopback.
//! What each test shows is listed in `docs/threats.md`.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{common::http::Client, support_sip::free_port};

const TOKEN: &str = "attack-test-token-Q7-not-a-secret";

/// A `sipdns run` child, killed on drop.
#[allow(dead_code)] // `dns` is for the flood test
pub(crate) struct Sipdns {
    child: Child,
    pub(crate) api: SocketAddr,
    pub(crate) dns: SocketAddr,
    log: PathBuf,
}

impl Drop for Sipdns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sipdns {
    /// What it logged so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `sipdns run` in `dir` (which holds `zones/`) with `extra` appended to a config
/// that sets `dns:`, `api:` and `upstream:` (unless `extra` sets `upstream:`), and waits
/// (bounded) until `/livez` answers. `nofile`: the soft and hard `RLIMIT_NOFILE` the child
/// starts with, as `ulimit -n` would set them.
pub(crate) async fn spawn(dir: &Path, extra: &str, nofile: Option<u64>) -> Sipdns {
    std::fs::write(dir.join("api-token"), format!("{TOKEN}\n")).unwrap();
    for _attempt in 0..5 {
        let (dns_port, api_port) = (free_port(), free_port());
        let mut config = format!(
            "dns:\n  listen: [\"127.0.0.1:{dns_port}\"]\napi:\n  listen: \"127.0.0.1:{api_port}\"\n  token_file: api-token\n"
        );
        if !extra.contains("upstream:") {
            config.push_str(
                "upstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\n",
            );
        }
        config.push_str(extra);
        std::fs::write(dir.join("sipdns.yaml"), config).unwrap();
        let log = dir.join("sipdns.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sipdns"));
        cmd.args(["run", "-c"])
            .arg(dir.join("sipdns.yaml"))
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt as _;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and
            // exec.
            unsafe {
                cmd.pre_exec(move || {
                    let lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        let mut s = Sipdns {
            child,
            api: SocketAddr::from(([127, 0, 0, 1], api_port)),
            dns: SocketAddr::from(([127, 0, 0, 1], dns_port)),
            log,
        };
        for _ in 0..400 {
            if status_of(s.api, "/livez").await == Some(200) {
                return s;
            }
            if s.child.try_wait().unwrap().is_some() {
                break; // a port was taken after all: try others
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let log = s.log();
        if !log.contains("Address already in use") {
            panic!("sipdns did not start:\n{log}");
        }
    }
    panic!("sipdns did not start on 5 pairs of ports");
}

/// The status of one `GET` (no token), or `None` if there was no complete reply in 5 s.
pub(crate) async fn status_of(addr: SocketAddr, path: &str) -> Option<u16> {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.ok()?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw).await.ok()?;
        let head = std::str::from_utf8(raw.get(..12)?).ok()?;
        head.split(' ').nth(1)?.parse().ok()
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .ok()
        .flatten()
}

/// `sipdns check -c dir/sipdns.yaml`: (success, stderr).
fn check(dir: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sipdns"))
        .args(["check", "-c"])
        .arg(dir.join("sipdns.yaml"))
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn corrupt_copies(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("state.json.corrupt-"))
        })
        .collect()
}

fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

// ---- 3: start-up survives a bad state file ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_state_file_is_moved_aside_and_sipdns_starts() {
    // (what is at state.json, metric reason)
    let cases: [(&str, Option<&[u8]>, &str); 3] = [
        ("empty", Some(b""), "empty"),
        (
            "garbage JSON",
            Some(b"{\"version\": 1, \"drained\": [\x00"),
            "corrupt",
        ),
        ("a directory (unreadable)", None, "unreadable"),
    ];
    for (what, content, reason) in cases {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("zones")).unwrap();
        let state = dir.path().join("state.json");
        match content {
            Some(bytes) => std::fs::write(&state, bytes).unwrap(),
            None => std::fs::create_dir(&state).unwrap(),
        }
        // `sipdns check` (the unit's ExecStartPre) reads it, says what start-up will do
        // and does not fail: a bad drain list must not keep DNS down.
        let extra = "state_file: state.json\n";
        std::fs::write(
            dir.path().join("sipdns.yaml"),
            format!("{extra}upstream:\n  servers: [\"127.0.0.1:9\"]\n"),
        )
        .unwrap();
        let (ok, said) = check(dir.path());
        assert!(ok, "{what}: check failed: {said}");
        assert!(
            said.contains("state.json") && said.contains("would move it aside"),
            "{what}: check said {said}"
        );

        let s = spawn(dir.path(), extra, None).await;
        assert!(!state.exists(), "{what}: not moved aside");
        let aside = corrupt_copies(dir.path());
        assert_eq!(aside.len(), 1, "{what}: {aside:?}");
        let name = aside[0].file_name().unwrap().to_string_lossy().into_owned();
        // state.json.corrupt-YYYYMMDDTHHMMSSZ
        let stamp = name.trim_start_matches("state.json.corrupt-");
        assert_eq!(stamp.len(), 16, "{name}");
        assert!(
            stamp.ends_with('Z') && stamp.as_bytes()[8] == b'T',
            "{name}"
        );
        let log = s.log();
        assert!(
            log.contains("ERROR") && log.contains("moved aside"),
            "{what}: {log}"
        );
        let text = Client::new(s.api, None).get("/metrics").await.text();
        assert_eq!(
            metric(
                &text,
                &format!("sipdns_state_file_quarantined_total{{reason=\"{reason}\"}}")
            ),
            Some(1.0),
            "{what}"
        );
        // It runs with an empty admin table, and a drain writes a fresh file.
        let targets = Client::new(s.api, Some(TOKEN)).get("/api/v1/targets").await;
        assert_eq!(targets.status, 200, "{what}");
        drop(s);
        let (ok, said) = check(dir.path());
        assert!(ok && said.contains("absent"), "{what}: {said}");
    }
}
