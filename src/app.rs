//! Wiring only: load the config, build the shared state, bind the sockets, spawn the tasks
//! and wait for shutdown.

use std::{net::SocketAddr, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures::future::BoxFuture;
use tokio::{
    net::{TcpListener, UdpSocket},
    sync::Semaphore,
    task::JoinSet,
};

use crate::{
    api::{self, AdminError, ApiState, ApiToken, TargetControl},
    config::Config,
    dns::{
        handler::Handler,
        server::{self, Limits},
    },
    health::{
        AdminState, HealthHandle, Lookup, ProbeError, ProberHandle, admin::Drain,
        observer::AdminCause,
    },
    metrics::Metrics,
    record::{Answer, DomainName, RType},
    reload::Reloader,
    resolve::Resolver,
    shutdown::CancellationToken,
    state::{self, Data},
    target::TargetKey,
    upstream::Forwarder,
    zones::ZoneStore,
};

/// How often the config file and `zones/` are checked for changes.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// A running server.
pub struct Server {
    /// The DNS addresses actually bound (UDP and TCP share each port).
    pub dns_addrs: Vec<SocketAddr>,
    /// The address the HTTP API is bound to (`None` when `api.listen` is null).
    pub api_addr: Option<SocketAddr>,
    /// The resolver (config, zones, health).
    pub resolver: Arc<Resolver>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The DNS request handler shared by every listener.
    pub handler: Arc<Handler>,
    /// Reloads config and zones.
    pub reloader: Arc<Reloader>,
    /// The SIP prober.
    pub prober: ProberHandle,
    /// Cancelling this stops every task.
    pub shutdown: CancellationToken,
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
        // Created first: the prober writes it, the resolver reads it.
        let health = HealthHandle::new();
        // Client connections get only what the open-files limit can spare.
        let budget = crate::descriptors::Budget::for_process(
            config.api.max_connections,
            config.dns.tcp_max_connections,
        );
        let limits = Limits {
            max_inflight: config.dns.max_inflight,
            tcp_max_connections: budget.tcp_dns,
            tcp_idle_timeout: config.dns.tcp_idle_timeout,
        };
        let listen = config.dns.listen.clone();
        let udp_loops = config
            .dns
            .udp_loops(std::thread::available_parallelism().map_or(1, |n| n.get()));
        // Secondary zones (zones.secondary): the copies kept on disk answer from the start;
        // transfers run in the background once the listeners are up.
        let secondaries =
            crate::zones::secondary::Secondaries::open(&config.zones, metrics.clone())
                .map_err(|e| anyhow::anyhow!("zones.secondary: {e}"))?;
        let zones = secondaries.overlay(&zones);
        let config = secondaries.overlay_config(&config).unwrap_or(config);
        let sip_config = config.sip.clone();
        let state_file = config.state_file.clone();
        // Read at start only: a change of `api:` or `events:` takes a restart.
        let api_config = config.api.clone();
        let events = crate::events::Events::start(&config.events, metrics.clone());
        let resolver = Arc::new(Resolver::new(
            Data {
                config: Arc::new(config),
                zones: Arc::new(zones),
            },
            forwarder,
            health.clone(),
            metrics.clone(),
        ));
        // The prober discovers targets through the same lookup path as the DNS server, but
        // before the health policy: a withheld target must still be probed to come back.
        let prober = ProberHandle::spawn(
            &sip_config,
            Arc::new(PolicyFreeLookup(resolver.clone())),
            metrics.clone(),
            state_file,
            health,
            shutdown.clone(),
        )
        .context("starting the SIP prober")?;
        let history = Arc::new(crate::health::history::History::default());
        prober.observe(history.clone());
        if events.is_active() {
            prober.observe(events.clone());
        }
        let handler = Arc::new(Handler::new(resolver.clone(), metrics.clone()));
        // The real bound on upstream waits is in the resolver; this one is a safety net.
        let inflight = Arc::new(Semaphore::new(limits.max_inflight * 2 + 64));
        let mut tasks = JoinSet::new();
        let mut dns_addrs = Vec::new();
        for addr in listen {
            let (udp, tcp) = bind_pair(addr, udp_loops).await?;
            let bound = tcp.local_addr()?;
            dns_addrs.push(bound);
            tracing::info!(%bound, udp_loops = udp.len(), "DNS listening on UDP and TCP");
            for socket in udp {
                tasks.spawn(server::serve_udp(
                    Arc::new(socket),
                    handler.clone(),
                    inflight.clone(),
                    shutdown.clone(),
                ));
            }
            tasks.spawn(server::serve_tcp(
                tcp,
                handler.clone(),
                inflight.clone(),
                limits,
                shutdown.clone(),
            ));
        }
        {
            // Idle clients leave the rate limiter's table (it is bounded either way).
            let handler = handler.clone();
            let shutdown = shutdown.clone();
            tasks.spawn(async move {
                let mut tick = tokio::time::interval(crate::dns::ratelimit::PRUNE_EVERY);
                loop {
                    tokio::select! {
                        () = shutdown.cancelled() => return,
                        _ = tick.tick() => handler.prune_rate_limit(),
                    }
                }
            });
        }
        let reloader = Arc::new(Reloader::new(
            config_path,
            resolver.clone(),
            metrics.clone(),
        ));
        // What follows a reload or a zone edit, once the new state is in force.
        {
            let forwarder = resolver.forwarder().clone();
            let mut applied = resolver.data().config.clone();
            tasks.spawn(reloader.follow(shutdown.clone(), move |data: &Data| {
                // A zone edit keeps the config (the same `Arc`): the upstream pools stay.
                if Arc::ptr_eq(&applied, &data.config) {
                    return;
                }
                applied = data.config.clone();
                // Checked before the swap; only a resolv.conf changed since can fail here.
                if let Err(e) = forwarder.reconfigure(&data.config.upstream) {
                    tracing::error!(error = %e, "upstream settings not applied; keeping the old ones");
                }
            }));
            let prober = prober.clone();
            tasks.spawn(reloader.follow(shutdown.clone(), move |data: &Data| {
                prober.reconfigure(&data.config.sip)
            }));
        }
        if events.is_active() {
            reloader.on_result(Box::new(move |r| events.reload(r)));
        }
        tasks.spawn(reloader.clone().watch(WATCH_EVERY, shutdown.clone()));
        // [secondary zones] laid over every reload; a transfer swaps the state like one;
        // a reload's `zones.secondary` is followed; NOTIFY answered on the DNS listeners
        // (while some zone is followed). Set up with none too: a reload may add some.
        let overlay = secondaries.clone();
        reloader.set_overlay(Arc::new(move |c: &Config, z: &ZoneStore| {
            (overlay.overlay_config(c), overlay.overlay(z))
        }));
        let following = secondaries.clone();
        reloader.before_overlay(Arc::new(move |c: &Config| following.reconfigure(&c.zones)));
        let weak = Arc::downgrade(&reloader);
        secondaries.start(
            Arc::new(move || {
                if let Some(r) = weak.upgrade() {
                    r.apply_overlay();
                }
            }),
            shutdown.clone(),
        );
        handler.set_notify(secondaries.clone());
        let mut api_addr = None;
        if let Some(addr) = api_config.listen {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the API on {addr}"))?;
            let bound = listener.local_addr()?;
            api_addr = Some(bound);
            tracing::info!(%bound, "API listening");
            let state = ApiState::new(
                resolver.clone(),
                reloader.clone(),
                metrics.clone(),
                ApiToken::from_config(&api_config),
            )
            .with_targets(Arc::new(ProberTargets(prober.clone())))
            .with_readiness(prober.ready())
            .with_limits(api::ApiLimits {
                max_connections: budget.api,
                request_timeout: api_config.request_timeout,
            })
            .with_history(history)
            .with_ui(api_config.ui)
            .with_secondaries(secondaries.clone());
            tasks.spawn(api::serve(listener, state, shutdown.clone()));
        }
        Ok(Self {
            dns_addrs,
            api_addr,
            prober,
            resolver,
            metrics,
            handler,
            reloader,
            shutdown,
            tasks,
        })
    }

    /// Under systemd (`Type=notify`): sends `READY=1` after the first probe round, watchdog
    /// pings and `STOPPING=1` (see [`crate::notify`]). Does nothing outside systemd.
    pub fn notify_systemd(&mut self) {
        let notifier = match crate::notify::Notifier::from_env() {
            Ok(Some(n)) => n,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell systemd when we are ready");
                return;
            }
        };
        let (prober, dns) = (self.prober.clone(), self.dns_addrs.clone());
        let status = move || {
            let dns: Vec<String> = dns.iter().map(ToString::to_string).collect();
            format!(
                "serving DNS on {}; {} SIP targets probed",
                dns.join(", "),
                prober.targets().len()
            )
        };
        self.tasks.spawn(crate::notify::run(
            notifier,
            self.prober.ready(),
            status,
            crate::notify::watchdog_interval(),
            self.shutdown.clone(),
        ));
    }

    /// Waits until shutdown.
    pub async fn run_until_shutdown(mut self) {
        self.shutdown.cancelled().await;
        while self.tasks.join_next().await.is_some() {}
    }

    /// Stops every task and waits for them.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// The resolver as the prober's discovery path: static entries and upstream, no policy.
struct PolicyFreeLookup(Arc<Resolver>);

impl Lookup for PolicyFreeLookup {
    fn lookup<'a>(&'a self, name: &'a DomainName, rtype: RType) -> BoxFuture<'a, Answer> {
        Box::pin(self.0.lookup(name, rtype))
    }
}

/// The prober as the API's target control.
struct ProberTargets(ProberHandle);

impl TargetControl for ProberTargets {
    fn list(&self) -> serde_json::Value {
        serde_json::to_value(self.0.targets())
            .unwrap_or_else(|_| serde_json::Value::Array(Vec::new()))
    }

    fn set_admin(&self, key: &TargetKey, state: AdminState) -> Result<(), AdminError> {
        self.0
            .set_admin(key, state)
            .map_err(|e| admin_error(key, e))
    }

    fn drain(&self, key: &TargetKey, drain: Drain) -> Result<(), AdminError> {
        self.0
            .set_admin_with(key, AdminState::Drained, Some(drain), AdminCause::Api)
            .map_err(|e| admin_error(key, e))
    }
}

fn admin_error(key: &TargetKey, e: ProbeError) -> AdminError {
    match e {
        ProbeError::UnknownTarget(_) => AdminError::UnknownTarget(key.to_string()),
        other => AdminError::Failed(other.to_string()),
    }
}

/// Binds `count` UDP sockets (SO_REUSEPORT, so the kernel spreads queries over one
/// receive loop per socket) and a TCP listener on the same address; with port 0, retries
/// until all get one port.
async fn bind_pair(
    addr: SocketAddr,
    count: usize,
) -> anyhow::Result<(Vec<UdpSocket>, TcpListener)> {
    let attempts = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..attempts {
        let first = udp_socket(addr).with_context(|| format!("binding UDP {addr}"))?;
        let bound = first.local_addr()?;
        let mut udp = vec![first];
        let mut ok = true;
        for _ in 1..count {
            match udp_socket(bound) {
                Ok(s) => udp.push(s),
                Err(e) => {
                    last = Some(e);
                    ok = false;
                    break;
                }
            }
        }
        if !ok {
            continue;
        }
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

fn udp_socket(addr: SocketAddr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    #[cfg(unix)]
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    // Room for bursts of queries while a loop is busy.
    let _ = s.set_recv_buffer_size(4 << 20);
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    UdpSocket::from_std(s.into())
}

/// `sipdns check`: [`state::check`], the TSIG secret files of the secondary zones, then
/// what start-up would do with the admin state file (a bad one does not stop a start: it
/// is moved aside, see [`crate::health::admin::AdminTable::load_at_start`]).
pub fn check(path: &Path) -> anyhow::Result<String> {
    let summary = state::check(path)?;
    // The config is valid (state::check loaded it); read again for what start-up reads
    // beside it: the TSIG secrets and the admin state file.
    let config = std::fs::read_to_string(path)
        .ok()
        .and_then(|text| Config::from_text(path, &text).ok());
    // An unreadable secret does not stop a start (the disk copy answers, every check of the
    // zone fails saying why), but it is an error to fix.
    let keys = config
        .as_ref()
        .map(|c| crate::zones::secondary::check_keys(&c.zones))
        .unwrap_or_default();
    if !keys.is_empty() {
        anyhow::bail!("{}", keys.join("\n"));
    }
    let admin = config
        .and_then(|c| c.state_file)
        .map(|p| crate::health::admin::AdminTable::check(&p));
    Ok(match admin {
        Some(line) => format!("{summary}\n{line}"),
        None => summary,
    })
}

/// `sipdns run`: runs until SIGTERM/SIGINT.
pub async fn run_from_file(path: &Path) -> anyhow::Result<()> {
    crate::descriptors::raise_soft_limit();
    let (config, zones) =
        state::load(path).with_context(|| format!("loading {}", path.display()))?;
    // What parsing left behind (the zone texts and documents) goes back to the system.
    crate::memory::release_freed();
    let shutdown = CancellationToken::new();
    tokio::spawn(crate::shutdown::on_signals(shutdown.clone()));
    let mut server = Server::start(path, config, zones, shutdown).await?;
    server.notify_systemd();
    server.run_until_shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
