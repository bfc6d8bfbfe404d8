//! Shared test support.

pub mod client;
#[allow(dead_code)]
pub mod fake_upstream;
pub mod hickory;
pub mod http;
pub mod prober;
pub mod process;
pub mod rng;
pub mod server;
pub mod sip;
pub mod snapshot;
