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
//! The handler also answers NOTIFY for one followed secondary zone (primary 127.0.0.1,
//! with a TSIG key), as a server with `zones.secondary` does.
//!
//! The first input byte picks the transport (UDP/TCP), the client (inside or outside the
//! ACL; inside is 127.0.0.1, the followed zone's primary), and whether the packet, if it
//! decodes, is first TSIG-signed now with the followed zone's key; the rest is the packet.
//! Invariants: a response is never sent to a packet with QR set; a response decodes, is a
//! response, and echoes the ID; over UDP it fits 512 bytes unless the client sent EDNS,
//! and never exceeds `max_udp_payload`. A NOTIFY for the followed zone signed with its
//! key, from its primary, gets NOERROR signed over the request's MAC.
#![no_main]

use std::time::Duration;

use hickory_proto::{
    op::{Message, MessageType, OpCode, ResponseCode},
    rr::{Name, TSigVerifier, TSigner, rdata::tsig::TsigAlgorithm},
};
use libfuzzer_sys::fuzz_target;
use sipdns::dns::{
    fastpath,
    handler::Transport,
    wire::{self, Parsed},
};

#[path = "env.rs"]
mod env;

use env::env;

/// `packet` signed now with the followed zone's key, and the verifier of the answer; `None`
/// when it does not decode or encode.
fn signed(packet: &[u8]) -> Option<(Vec<u8>, TSigVerifier)> {
    let mut m = Message::from_vec(packet).ok()?;
    let signer = TSigner::new(
        env::KEY_SECRET.to_vec(),
        TsigAlgorithm::HmacSha256,
        Name::from_ascii(env::KEY_NAME).ok()?,
        300,
    )
    .ok()?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs();
    let verifier = m.finalize(&signer, now).ok()??;
    Some((m.to_vec().ok()?, verifier))
}

/// A NOTIFY query for the followed zone.
fn notify_for_followed(packet: &[u8]) -> bool {
    Message::from_vec(packet).is_ok_and(|m| {
        m.metadata.message_type == MessageType::Query
            && m.metadata.op_code == OpCode::Notify
            && m.queries.first().is_some_and(|q| {
                q.name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(env::FOLLOWED)
            })
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&flag, packet)) = data.split_first() else {
        return;
    };
    let mut verifier = None;
    let signed_packet;
    let packet = match (flag & 4 != 0).then(|| signed(packet)).flatten() {
        Some((bytes, v)) => {
            signed_packet = bytes;
            verifier = Some(v);
            &signed_packet[..]
        }
        None => packet,
    };
    let env = env();
    let (transport, src) = env::client(flag);
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
        let reply = Message::from_vec(&resp).expect("reply does not decode");
        // (The first answer only: a verifier follows one chain of answers.)
        if let Some(mut v) = verifier.take()
            && flag & 2 == 0
            && notify_for_followed(packet)
        {
            assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
            v.verify(&resp)
                .expect("the answer to a signed NOTIFY is not signed");
        }
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
