//! Wiring only: load the config, build the shared state, bind the sockets, spawn the tasks
//! and wait for shutdown. Also the reload procedure (parse and validate aside, then swap).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::Semaphore,
    task::JoinSet,
};

use crate::{
    config::Config,
    dns::{
        handler::Handler,
        server::{self, Limits},
    },
    health::HealthSnapshot,
    metrics::Metrics,
    resolve::{Data, Resolver},
    shutdown::CancellationToken,
    upstream::Forwarder,
    zones::{self, ZoneStore},
};

/// Loads config and zones, or every error found in them.
pub fn load(path: &Path) -> anyhow::Result<(Config, ZoneStore)> {
    let config = Config::load(path).map_err(anyhow::Error::new)?;
    let zones =
        zones::load_dir(&config.zones.dir, &config.zones.modes).map_err(anyhow::Error::new)?;
    Ok((config, zones))
}

/// `sipdns check`: loads the config and every zone; returns a one-line summary.
pub fn check(path: &Path) -> anyhow::Result<String> {
    let (config, zones) = load(path)?;
    Ok(format!(
        "{}: ok — {} zones, {} static records, {} SIP domains",
        path.display(),
        zones.len(),
        zones.record_count(),
        config.sip.domains.len()
    ))
}

/// A running server.
pub struct Server {
    /// The DNS addresses actually bound (UDP and TCP share each port).
    pub dns_addrs: Vec<SocketAddr>,
    /// The resolver (config, zones, health).
    pub resolver: Arc<Resolver>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelling this stops every task.
    pub shutdown: CancellationToken,
    config_path: PathBuf,
    tasks: JoinSet<()>,
}

impl Server {
    /// Binds every listener and starts every task. `config_path` is re-read on reload.
    pub async fn start(
        config_path: &Path,
        config: Config,
        zones: ZoneStore,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Self> {
        let metrics = Arc::new(Metrics::new());
        let forwarder = Arc::new(
            Forwarder::new(&config.upstream, metrics.clone())
                .context("setting up the upstream forwarder")?,
        );
        let health = Arc::new(ArcSwap::from_pointee(HealthSnapshot::default()));
        let limits = Limits {
            max_inflight: config.dns.max_inflight,
            tcp_max_connections: config.dns.tcp_max_connections,
            tcp_idle_timeout: config.dns.tcp_idle_timeout,
        };
        let listen = config.dns.listen.clone();
        let resolver = Arc::new(Resolver::new(
            Data {
                config: Arc::new(config),
                zones: Arc::new(zones),
            },
            forwarder,
            health,
        ));
        let handler = Arc::new(Handler::new(resolver.clone(), metrics.clone()));
        let inflight = Arc::new(Semaphore::new(limits.max_inflight));
        let mut tasks = JoinSet::new();
        let mut dns_addrs = Vec::new();
        for addr in listen {
            let (udp, tcp) = bind_pair(addr).await?;
            let bound = udp.local_addr()?;
            dns_addrs.push(bound);
            tracing::info!(%bound, "DNS listening on UDP and TCP");
            tasks.spawn(server::serve_udp(
                Arc::new(udp),
                handler.clone(),
                inflight.clone(),
                shutdown.clone(),
            ));
            tasks.spawn(server::serve_tcp(
                tcp,
                handler.clone(),
                inflight.clone(),
                limits,
                shutdown.clone(),
            ));
        }
        metrics.reload_timestamp.set(unix_now());
        Ok(Self {
            dns_addrs,
            resolver,
            metrics,
            shutdown,
            config_path: config_path.to_path_buf(),
            tasks,
        })
    }

    /// Re-reads the config file and zones; swaps them in only if all of it is valid. The
    /// running state is untouched on error.
    pub fn reload(&self) -> anyhow::Result<()> {
        match load(&self.config_path) {
            Ok((config, zones)) => {
                if let Err(e) = self.resolver.forwarder().reconfigure(&config.upstream) {
                    self.metrics.reloads.with_label_values(&["error"]).inc();
                    return Err(anyhow::Error::new(e).context("new upstream settings rejected"));
                }
                self.resolver.swap(Data {
                    config: Arc::new(config),
                    zones: Arc::new(zones),
                });
                self.metrics.reloads.with_label_values(&["ok"]).inc();
                self.metrics.reload_timestamp.set(unix_now());
                tracing::info!(path = %self.config_path.display(), "config and zones reloaded");
                Ok(())
            }
            Err(e) => {
                self.metrics.reloads.with_label_values(&["error"]).inc();
                tracing::error!(error = %format!("{e:#}"), "reload rejected; keeping the running config");
                Err(e)
            }
        }
    }

    /// Waits until shutdown, reloading on SIGHUP.
    pub async fn run_until_shutdown(mut self) {
        #[cfg(unix)]
        let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
        loop {
            #[cfg(unix)]
            let hup_recv = async {
                match hup.as_mut() {
                    Some(h) => {
                        h.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            };
            #[cfg(not(unix))]
            let hup_recv = std::future::pending::<()>();
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = hup_recv => {
                    tracing::info!("SIGHUP received, reloading");
                    let _ = self.reload();
                }
            }
        }
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops every task and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds UDP and TCP on the same address; with port 0, retries until both get one port.
async fn bind_pair(addr: SocketAddr) -> anyhow::Result<(UdpSocket, TcpListener)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let udp = UdpSocket::bind(addr)
            .await
            .with_context(|| format!("binding UDP {addr}"))?;
        let bound = udp.local_addr()?;
        match TcpListener::bind(bound).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) => last = Some(e),
        }
    }
    Err(anyhow::anyhow!(
        "binding TCP {addr}: {}",
        last.map(|e| e.to_string()).unwrap_or_default()
    ))
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `sipdns run`: runs until SIGTERM/SIGINT.
pub async fn run_from_file(path: &Path) -> anyhow::Result<()> {
    let (config, zones) = load(path).with_context(|| format!("loading {}", path.display()))?;
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::on_signals(shutdown.clone()));
    let server = Server::start(path, config, zones, shutdown).await?;
    server.run_until_shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
