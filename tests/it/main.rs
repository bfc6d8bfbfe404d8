//! Black-box tests: the real server, in-process, on 127.0.0.1 with ephemeral ports, spoken
//! to by a DNS client over real UDP and TCP sockets, and real SIP peers (sipp, kamailio).
//! One test binary, one module per area (hickory `bin/tests/integration`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod answers;
mod api;
mod attacks;
mod cli;
mod common;
mod config_files;
mod deploy;
mod dns;
mod events;
mod failover;
mod faults;
mod forwarding;
mod hostile;
mod icmp_forgery;
mod linphone;
mod metrics;
mod phone;
mod prober;
mod reload;
mod secondary;
mod ui;
mod upstream;
