//! The answer cache is invisible: the same random query sequence driven through the fast
//! path (one handler whose answer cache fills as the sequence goes) and the slow path (a
//! fresh handler for every query, so its cache is always cold), over one resolver. For
//! every query both must answer, or both stay silent, and the replies must be equal byte
//! for byte (the ID is the query's in both). The environment is `dns_handle`'s (`env.rs`):
//! every SIP domain has a fixed SRV order there, so nothing is drawn per response.
//!
//! Input: a flags byte (bit 0: TCP, bit 1: a client outside the ACL), then queries, each
//! a length byte and that many bytes.
#![no_main]

use std::{sync::Arc, time::Duration};

use libfuzzer_sys::fuzz_target;
use sipdns::dns::handler::Handler;

#[path = "env.rs"]
mod env;

use env::env_without_rate_limit;

fuzz_target!(|data: &[u8]| {
    let Some((&flag, mut rest)) = data.split_first() else {
        return;
    };
    // Every client exempt from the rate limit: the two handlers' limiters would otherwise
    // have seen different traffic.
    let env = env_without_rate_limit();
    let (transport, src) = env::client(flag);
    // At most 16 queries per input, each at most 255 bytes.
    for _ in 0..16 {
        let Some((&len, tail)) = rest.split_first() else {
            return;
        };
        let len = usize::from(len).min(tail.len());
        let (packet, next) = tail.split_at(len);
        rest = next;
        let (fast, slow) = env.rt.block_on(async {
            let cold = Arc::new(Handler::new(env.resolver.clone(), env.metrics.clone()));
            let fast = tokio::time::timeout(
                Duration::from_secs(2),
                env.handler.handle(packet, src, transport),
            )
            .await
            .expect("fast path took longer than 2 s with a dead upstream");
            let slow =
                tokio::time::timeout(Duration::from_secs(2), cold.handle(packet, src, transport))
                    .await
                    .expect("slow path took longer than 2 s with a dead upstream");
            (fast, slow)
        });
        assert_eq!(
            fast, slow,
            "cached and uncached replies differ for {packet:02x?}"
        );
    }
});
