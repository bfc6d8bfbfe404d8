//! Shared test support.

pub mod client;
#[allow(dead_code)]
pub mod fake_upstream;
pub mod http;
#[allow(dead_code)]
pub mod peers;
pub mod server;
