//! Black-box tests, one binary with a module per area (hickory `bin/tests/integration`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod prober;
mod support_sip;
