//! The DNS listeners (UDP and TCP) and the wire format. With `zones` and `upstream`, the only
//! module that uses hickory types.

pub mod encode;
pub mod fastpath;
pub mod handler;
pub mod ratelimit;
pub mod server;
pub mod wire;
