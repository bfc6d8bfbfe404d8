//! The one lookup path: static entries and upstream by merge mode, RFC 3263 additional records and the health policy.
