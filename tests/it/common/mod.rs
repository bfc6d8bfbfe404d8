//! Shared test support.

pub mod client;
#[allow(dead_code)]
pub mod fake_upstream;
pub mod hickory;
pub mod http;
pub mod server;
