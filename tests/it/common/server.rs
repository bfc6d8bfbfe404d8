//! Starts the real server in-process on 127.0.0.1:0 from config text and zone files
//! written to a temporary directory.

use std::{net::SocketAddr, path::PathBuf};

use std::time::{Duration, Instant};

use sipdns::{app::Server, health::Health, shutdown::CancellationToken, target::TargetKey};

/// A running server and its files; stopped when dropped.
#[allow(dead_code)]
pub struct TestServer {
    pub server: Option<Server>,
    pub dns: SocketAddr,
    /// The API address, when the config enables it (see [`start_with_api`]).
    pub api: Option<SocketAddr>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
}

/// Writes `config` (YAML; `listen` is forced to 127.0.0.1:0 unless given) and `zones`
/// (file name, contents) and starts the server.
pub async fn start(config: &str, zones: &[(&str, &str)]) -> TestServer {
    try_start(config, zones).await.unwrap()
}

/// Like [`start`], returning the error instead of panicking.
pub async fn try_start(config: &str, zones: &[(&str, &str)]) -> anyhow::Result<TestServer> {
    start_in(tempfile::tempdir()?, config, zones).await
}

/// The bearer token of servers started by [`start_with_api`].
#[allow(dead_code)]
pub const API_TOKEN: &str = "test-token-Zx81-not-a-secret";

/// Like [`start`], with the API on 127.0.0.2:0 (config validation refuses an `api.listen`
/// equal to a `dns.listen`, even with port 0) and its token in the file `api-token`.
/// `config` must not set `dns:` or `api:`.
#[allow(dead_code)]
pub async fn start_with_api(config: &str, zones: &[(&str, &str)]) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("api-token"), format!("{API_TOKEN}\n")).unwrap();
    let text = format!(
        "dns:\n  listen: [\"127.0.0.1:0\"]\napi:\n  listen: \"127.0.0.2:0\"\n  token_file: api-token\n{config}"
    );
    start_in(dir, &text, zones).await.unwrap()
}

async fn start_in(
    dir: tempfile::TempDir,
    config: &str,
    zones: &[(&str, &str)],
) -> anyhow::Result<TestServer> {
    std::fs::create_dir(dir.path().join("zones"))?;
    for (name, text) in zones {
        std::fs::write(dir.path().join("zones").join(name), text)?;
    }
    let mut text = config.to_owned();
    if !text.contains("listen:") {
        text = format!("dns:\n  listen: [\"127.0.0.1:0\"]\napi:\n  listen: null\n{text}");
    }
    // Never let a test fall back to the machine's resolv.conf: without an explicit
    // upstream, point at a closed loopback port (fails fast with ICMP unreachable).
    if !text.contains("upstream:") {
        text.push_str("upstream:\n  servers: [\"127.0.0.1:9\"]\n  timeout: 300ms\n  attempts: 1\n");
    }
    let config_path = dir.path().join("sipdns.yaml");
    std::fs::write(&config_path, &text)?;
    let (cfg, zones) = sipdns::state::load(&config_path)?;
    let server = Server::start(&config_path, cfg, zones, CancellationToken::new()).await?;
    let dns = server.dns_addrs[0];
    let api = server.api_addr;
    Ok(TestServer {
        server: Some(server),
        dns,
        api,
        dir,
        config_path,
    })
}

#[allow(dead_code)]
impl TestServer {
    pub fn server(&self) -> &Server {
        self.server.as_ref().unwrap()
    }

    /// Stops the server and starts a new one from the same config file and directory, as
    /// after a process restart (new ephemeral ports).
    pub async fn restart(&mut self) {
        if let Some(old) = self.server.take() {
            old.stop().await;
        }
        let (cfg, zones) = sipdns::state::load(&self.config_path).unwrap();
        let server = Server::start(&self.config_path, cfg, zones, CancellationToken::new())
            .await
            .unwrap();
        self.dns = server.dns_addrs[0];
        self.api = server.api_addr;
        self.server = Some(server);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = &self.server {
            s.shutdown.cancel();
        }
    }
}

/// The repository's example zones, as (file name, contents).
pub fn example_zones() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "pbx.example.org.yaml",
            include_str!("../../../zones/pbx.example.org.yaml"),
        ),
        (
            "example.net.zone",
            include_str!("../../../zones/example.net.zone"),
        ),
    ]
}

/// Waits (bounded) until the prober reports `want` for `key`; returns how long it took.
pub async fn wait_health(
    s: &TestServer,
    key: &TargetKey,
    want: Health,
    bound: Duration,
) -> Duration {
    let t = Instant::now();
    loop {
        let now = s
            .server()
            .prober
            .targets()
            .into_iter()
            .find(|r| &r.key == key)
            .map(|r| r.health);
        if now == Some(want) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < bound,
            "{key} not {want:?} within {bound:?} (now {now:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
