//! The whole request path: bytes in, `Handler::handle` (ACL, fast path, parse, static
//! zones by merge mode, CNAME chasing, RFC 3263 ADDITIONAL records, NAPTR synthesis, the
//! health policy with some targets down, encoding) and bytes out, or nothing.
//!
//! One handler is built once over the repository's example zones plus a `fallback` zone and
//! a managed SIP domain, with an upstream on a closed loopback port and a 2 ms timeout
//! (every forwarded question fails within milliseconds; no network beyond 127.0.0.1: the
//! resolver does not act on ICMP port unreachable, so the timeout is what bounds it). It
//! runs on a current-thread tokio runtime.
//!
//! The first input byte picks the transport (UDP/TCP) and the client (inside or outside
//! the ACL); the rest is the packet. Invariants: a response is never sent to a packet with
//! QR set; a response decodes, is a response, and echoes the ID; over UDP it fits 512
//! bytes unless the client sent EDNS, and never exceeds `max_udp_payload`.
#![no_main]

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::{Arc, OnceLock},
    time::Duration,
};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use sipdns::{
    config::{Config, MergeMode},
    dns::{
        fastpath,
        handler::{Handler, Transport},
        wire::{self, Parsed},
    },
    health::{AdminState, Health, HealthHandle, HealthSnapshot, TargetStatus},
    metrics::Metrics,
    record::DomainName,
    resolve::Resolver,
    state::Data,
    target::{TargetKey, Transport as SipTransport},
    upstream::Forwarder,
    zones::{ZoneStore, load_yaml_text, load_zone_file_text},
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
    - name: voice.example.org
      synthesize_naptr: true
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

struct Env {
    rt: tokio::runtime::Runtime,
    handler: Handler,
    max_udp: usize,
}

fn env() -> &'static Env {
    static ENV: OnceLock<Env> = OnceLock::new();
    ENV.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let config = Config::from_text(Path::new("/fuzz/sipdns.yaml"), CONFIG).expect("config");
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
        let handler = rt.block_on(async {
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
            Handler::new(resolver, metrics)
        });
        Env {
            rt,
            handler,
            max_udp,
        }
    })
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

fuzz_target!(|data: &[u8]| {
    let Some((&flag, packet)) = data.split_first() else {
        return;
    };
    let env = env();
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
    // Twice: the second time the answer may come from the fast path's response cache.
    for _ in 0..2 {
        let resp = env.rt.block_on(async {
            tokio::time::timeout(
                Duration::from_secs(2),
                env.handler.handle(packet, src, transport),
            )
            .await
            .expect("a query took longer than 2 s with a dead upstream")
        });
        let Some(resp) = resp else {
            continue;
        };
        assert!(packet.len() >= 12, "reply to a packet shorter than a header");
        assert_eq!(packet[2] & 0x80, 0, "a response (QR set) was answered");
        assert!(resp.len() >= 12);
        assert_eq!(&resp[..2], &packet[..2], "ID not echoed");
        assert!(resp[2] & 0x80 != 0, "reply without QR");
        Message::from_vec(&resp).expect("reply does not decode");
        if transport == Transport::Udp {
            assert!(resp.len() <= env.max_udp, "{} bytes over UDP", resp.len());
            let no_edns = match fastpath::quick(packet) {
                Some(q) => q.edns_payload.is_none(),
                None => matches!(wire::parse(packet), Parsed::Query(ref q) if q.edns_payload.is_none()),
            };
            if no_edns {
                assert!(resp.len() <= 512, "{} bytes to a client without EDNS", resp.len());
            }
        }
    }
});
