//! Helpers shared by the black-box tests.

// Shared by several test modules; each uses only part of it.
#[allow(dead_code)]
pub(crate) mod fake_upstream;
