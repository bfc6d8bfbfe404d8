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

use std::{net::SocketAddr, time::Duration};

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use sipdns::dns::{
    fastpath,
    handler::Transport,
    wire::{self, Parsed},
};

#[path = "env.rs"]
mod env;

use env::env;

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
        assert!(
            packet.len() >= 12,
            "reply to a packet shorter than a header"
        );
        assert_eq!(packet[2] & 0x80, 0, "a response (QR set) was answered");
        assert!(resp.len() >= 12);
        assert_eq!(&resp[..2], &packet[..2], "ID not echoed");
        assert!(resp[2] & 0x80 != 0, "reply without QR");
        Message::from_vec(&resp).expect("reply does not decode");
        if transport == Transport::Udp {
            assert!(resp.len() <= env.max_udp, "{} bytes over UDP", resp.len());
            let no_edns = match fastpath::quick(packet) {
                Some(q) => q.edns_payload.is_none(),
                None => {
                    matches!(wire::parse(packet, 1232), Parsed::Query(ref q) if q.edns_payload.is_none())
                }
            };
            if no_edns {
                assert!(
                    resp.len() <= 512,
                    "{} bytes to a client without EDNS",
                    resp.len()
                );
            }
        }
    }
});
