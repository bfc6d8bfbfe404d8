//! The health policy: a pure function from (answer, health, domain policy, random source) to
//! (rewritten answer, a reason per record). No I/O, no clock; it works on its own copy.
//!
//! Filled in by issue #4.
