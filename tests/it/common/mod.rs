//! Shared test support.

pub mod client;
pub mod server;
