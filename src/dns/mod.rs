//! The DNS listeners (UDP and TCP) and the wire format.
