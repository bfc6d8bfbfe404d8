//! Shared test support.

pub mod client;
pub mod http;
pub mod server;
