//! The operator's static entries: `zones/*.yaml` and RFC 1035 `zones/*.zone` files.
