//! The forwarder: sends questions sipdns does not answer statically to the upstream
//! resolvers (hickory-resolver), with a cache that honours TTLs and serves stale answers
//! (RFC 8767) when every upstream fails.
