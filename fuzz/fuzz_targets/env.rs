//! The request-path environment shared by the `dns_handle` and `dns_paths` fuzz targets:
//! one resolver over the repository's example zones plus a `fallback` zone and managed SIP
//! domains (fixed SRV order, so nothing is drawn at random), an upstream on a closed
//! loopback port with a 2 ms timeout, and a health snapshot with some targets down.

#![allow(dead_code)] // each target uses part of it

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, OnceLock},
};

use sipdns::{
    config::{Config, MergeMode},
    dns::handler::{Handler, Transport},
    health::{AdminState, Health, HealthHandle, HealthSnapshot, TargetStatus},
    metrics::Metrics,
    record::DomainName,
    resolve::Resolver,
    state::Data,
    target::{TargetKey, Transport as SipTransport},
    upstream::Forwarder,
    zones::{ZoneStore, load_yaml_text, load_zone_file_text, secondary::Secondaries},
};

const CONFIG: &str = r#"
dns:
  listen: ["127.0.0.1:0"]
upstream:
  servers: ["127.0.0.1:9"]
  timeout: 2ms
  attempts: 1
  stale_answer_after: 2ms
api:
  listen: null
sip:
  domains:
    - name: pbx.example.org
      on_down: demote
      ordering: fixed
    - name: voice.example.org
      synthesize_naptr: true
      ordering: fixed
      all_down: fallback
      fallback:
        - { host: sbc.voice.example.org, address: 192.0.2.250 }
"#;

const VOICE: &str = r#"
zone: voice.example.org
mode: fallback
records:
  - { name: _sip._udp, type: SRV, priority: 10, weight: 5, port: 5060, target: a }
  - { name: _sip._udp, type: SRV, priority: 10, weight: 1, port: 5060, target: b }
  - { name: _sip._tcp, type: SRV, priority: 10, weight: 1, port: 5060, target: a }
  - { name: a, type: A, address: 192.0.2.21 }
  - { name: b, type: A, address: 192.0.2.22 }
  - { name: "@", type: A, address: 192.0.2.21 }
  - { name: alias, type: CNAME, target: a }
  - { name: loop1, type: CNAME, target: loop2 }
  - { name: loop2, type: CNAME, target: loop1 }
  - { name: outside, type: CNAME, target: www.example.com. }
  - { name: txt, type: TXT, text: ["hello", "world"] }
"#;

/// The secondary zone `dns_handle`'s handler follows (from 127.0.0.1, never contacted:
/// its task is not started), and the TSIG key it holds for it.
pub const FOLLOWED: &str = "followed.example.org";
pub const KEY_NAME: &str = "fuzz-key";
pub const KEY_SECRET: [u8; 32] = [0x5a; 32];

/// The transport and client an input's flags byte picks: bit 0 TCP, bit 1 a client outside
/// the ACL (inside is 127.0.0.1).
pub fn client(flag: u8) -> (Transport, SocketAddr) {
    let transport = if flag & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let src: SocketAddr = if flag & 2 == 0 {
        ([127, 0, 0, 1], 5300).into()
    } else {
        ([192, 0, 2, 99], 5300).into()
    };
    (transport, src)
}

pub struct Env {
    pub rt: tokio::runtime::Runtime,
    pub handler: Arc<Handler>,
    pub resolver: Arc<Resolver>,
    pub metrics: Arc<Metrics>,
    pub max_udp: usize,
}

/// The environment, with the default rate limit (loopback exempt, anyone else limited),
/// and NOTIFY answered for [`FOLLOWED`] (primary 127.0.0.1, TSIG key [`KEY_SECRET`]).
pub fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sipdns-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let key = dir.join("tsig.key");
        std::fs::write(&key, data_encoding::BASE64.encode(&KEY_SECRET)).expect("key file");
        let config = format!(
            "{CONFIG}zones:\n  secondary_dir: {}\n  secondary:\n    - zone: {FOLLOWED}\n      primaries: [\"127.0.0.1:9\"]\n      tsig: {{ name: {KEY_NAME}, algorithm: hmac-sha256, secret_file: {} }}\n",
            dir.display(),
            key.display()
        );
        let env = build(&config);
        let secondaries =
            Secondaries::open(&env.resolver.data().config.zones, env.metrics.clone())
                .expect("secondaries");
        env.handler.set_notify(secondaries);
        env
    })
}

/// The environment with every client exempt from the rate limit: for comparing two
/// handlers, whose limiters would otherwise have seen different traffic.
pub fn env_without_rate_limit() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let config = CONFIG.replace(
            "  listen: [\"127.0.0.1:0\"]\n",
            "  listen: [\"127.0.0.1:0\"]\n  rate_limit:\n    exempt: [\"0.0.0.0/0\", \"::/0\"]\n",
        );
        build(&config)
    })
}

fn build(config_text: &str) -> Env {
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config =
            Config::from_text(Path::new("/fuzz/sipdns.yaml"), config_text).expect("config");
        let pbx = load_yaml_text(
            Path::new("pbx.example.org.yaml"),
            include_str!("../../zones/pbx.example.org.yaml"),
        )
        .expect("pbx zone");
        let net = load_zone_file_text(
            Path::new("example.net.zone"),
            include_str!("../../zones/example.net.zone"),
            DomainName::parse("example.net").ok(),
            MergeMode::Merge,
        )
        .expect("example.net zone");
        let voice = load_yaml_text(Path::new("voice.example.org.yaml"), VOICE).expect("voice");
        let zones = ZoneStore::new([pbx, net, voice]);
        let metrics = Arc::new(Metrics::new());
        let max_udp = usize::from(config.dns.max_udp_payload);
        let resolver = rt.block_on(async {
            let forwarder =
                Arc::new(Forwarder::new(&config.upstream, metrics.clone()).expect("forwarder"));
            let health = HealthHandle::from_snapshot(snapshot());
            let resolver = Arc::new(Resolver::new(
                Data {
                    config: Arc::new(config),
                    zones: Arc::new(zones),
                },
                forwarder,
                health,
                metrics.clone(),
            ));
            resolver
        });
        let handler = Arc::new(Handler::new(resolver.clone(), metrics.clone()));
        Env {
            rt,
            handler,
            resolver,
            metrics,
            max_udp,
        }
    }
}

/// server1 of pbx.example.org and target `a` of voice.example.org down, the rest unknown
/// (counted as up); `b` drained.
fn snapshot() -> HealthSnapshot {
    let key = |ip: [u8; 4], transport| TargetKey {
        ip: IpAddr::from(ip),
        port: 5060,
        transport,
    };
    let down = TargetStatus {
        health: Health::Down,
        admin: AdminState::Enabled,
    };
    let drained = TargetStatus {
        health: Health::Up,
        admin: AdminState::Drained,
    };
    let mut targets = HashMap::new();
    let mut by_host = HashMap::new();
    for t in [SipTransport::Udp, SipTransport::Tcp] {
        targets.insert(key([192, 0, 2, 10], t), down);
        targets.insert(key([192, 0, 2, 21], t), down);
        targets.insert(key([192, 0, 2, 22], t), drained);
    }
    let name = |s: &str| DomainName::parse(s).expect("name");
    by_host.insert(
        name("server1.pbx.example.org"),
        vec![key([192, 0, 2, 10], SipTransport::Udp)],
    );
    by_host.insert(
        name("a.voice.example.org"),
        vec![key([192, 0, 2, 21], SipTransport::Udp)],
    );
    by_host.insert(
        name("b.voice.example.org"),
        vec![key([192, 0, 2, 22], SipTransport::Udp)],
    );
    HealthSnapshot {
        generation: 1,
        targets: Arc::new(targets),
        by_host: Arc::new(by_host),
        host_domain: Arc::new(HashMap::new()),
    }
}
