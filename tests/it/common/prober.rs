//! A prober running on its own, outside a server, for the tests that drive it directly
//! (`prober.rs`, `faults.rs`, `icmp_forgery.rs`): started from a [`SipConfig`] and a lookup, stopped on drop.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use sipdns::{
    config::{ExtraTargetConfig, ProbeConfig, SipConfig, SipDomainConfig},
    health::{Health, HealthHandle, HealthView as _, Lookup, ProberHandle},
    metrics::Metrics,
    record::{Answer, DomainName, RType, Rcode, Source},
    shutdown::CancellationToken,
    target::{TargetKey, Transport},
};

/// A running prober; dropping it stops the task.
pub(crate) struct Running {
    pub(crate) handle: ProberHandle,
    pub(crate) metrics: Arc<Metrics>,
    stop: CancellationToken,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn start(cfg: SipConfig, lookup: Arc<dyn Lookup>) -> Running {
    let metrics = Arc::new(Metrics::new());
    let stop = CancellationToken::new();
    let handle = ProberHandle::spawn(
        &cfg,
        lookup,
        metrics.clone(),
        None,
        HealthHandle::new(),
        stop.clone(),
    )
    .unwrap();
    Running {
        handle,
        metrics,
        stop,
    }
}

/// A lookup with nothing in it: targets come from config only.
pub(crate) struct NoLookup;

impl Lookup for NoLookup {
    fn lookup<'a>(
        &'a self,
        _name: &'a DomainName,
        _rtype: RType,
    ) -> futures::future::BoxFuture<'a, Answer> {
        Box::pin(async { Answer::empty(Rcode::NxDomain, Source::Static) })
    }
}

/// A prober of `keys` as the extra targets of one domain (nothing from DNS), probed every
/// `interval` with `timeout`, down after 3 bad probes and up after 2 good ones.
pub(crate) fn start_extra(keys: &[TargetKey], interval: Duration, timeout: Duration) -> Running {
    let mut d = SipDomainConfig::new(DomainName::parse("pbx.example.org").unwrap());
    d.targets = keys
        .iter()
        .map(|k| ExtraTargetConfig {
            address: k.ip,
            port: k.port,
            transport: k.transport,
            host: None,
        })
        .collect();
    let cfg = SipConfig {
        probe: ProbeConfig {
            interval,
            timeout,
            fall: 3,
            rise: 2,
            ..ProbeConfig::default()
        },
        domains: vec![d],
    };
    start(cfg, Arc::new(NoLookup))
}

impl Running {
    pub(crate) fn health(&self, k: &TargetKey) -> Health {
        self.handle.snapshot().load().status(k).health
    }

    pub(crate) fn good(&self, t: Transport) -> u64 {
        self.metrics
            .probes
            .with_label_values(&[t.as_str(), "good"])
            .get()
    }

    /// Waits (bounded) for a health; returns how long it took.
    pub(crate) async fn wait_health(&self, k: &TargetKey, want: Health, max: Duration) -> Duration {
        let t0 = Instant::now();
        while t0.elapsed() < max {
            if self.health(k) == want {
                return t0.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let row = self.handle.targets().into_iter().find(|r| r.key == *k);
        panic!(
            "{k} not {want:?} within {max:?}; now {:?}, {row:?}",
            self.health(k)
        );
    }
}
