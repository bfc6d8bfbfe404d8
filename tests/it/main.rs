//! Black-box tests: the real server, in-process, on 127.0.0.1 with ephemeral ports, spoken
//! to by a DNS client over real UDP and TCP sockets. One test binary, one module per area.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod api;
mod common;
mod config_files;
mod dns;
mod forwarding;
mod metrics;
mod reload;
mod upstream;
