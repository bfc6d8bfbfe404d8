//! sipdns — a SIP-aware DNS forwarding proxy.
//!
//! Phones ask sipdns for the NAPTR / SRV / A / AAAA records of their PBX domain (RFC 3263).
//! sipdns answers from upstream DNS combined with the operator's static entries, probes
//! every SIP server behind those records with SIP OPTIONS, and rewrites the answers so
//! phones fail over to healthy servers and fail back when the primary recovers. Every other
//! name is forwarded, with a cache.
//!
//! # Layout
//!
//! - [`app`]: wiring only — load config, build state, spawn tasks, wait for shutdown.
//! - [`atomic_file`]: replacing a file atomically, never through a planted symlink.
//! - [`config`]: the YAML config (strict), defaults and validation.
//! - [`descriptors`]: the open-files limit raised at start and shared so client
//!   connections never take what serving needs.
//! - [`record`]: plain DNS record data shared by modules that must not see hickory types.
//! - [`target`]: what a SIP target is (address, port, transport).
//! - [`hickory`]: the one conversion between hickory's records and [`record`].
//! - [`zones`]: the operator's static entries (`zones/*.yaml`, `zones/*.zone`) and their
//!   edits through the API (atomic file writes).
//! - [`state`]: the config and zones in force, loaded from disk (and `sipdns check`).
//! - [`upstream`]: the forwarder over hickory-resolver, its cache and serve-stale.
//! - [`resolve`]: the one lookup path — static entries and upstream by merge mode, the
//!   RFC 3263 additional records, and the health policy — used by the DNS server and the
//!   prober alike.
//! - [`health`]: target health state, the SIP OPTIONS codec and the prober task.
//! - [`policy`]: the pure health policy that reorders and withholds records.
//! - [`dns`]: the UDP/TCP listeners and the wire format.
//! - [`api`]: the REST API, `/metrics`, `/livez`, `/readyz`, the status page.
//! - [`cli`]: the command-line client of the API (`sipdns status`, `targets`, `drain` ...).
//! - [`events`]: webhooks for transitions, drains and reloads.
//! - [`metrics`]: every Prometheus series.
//! - [`reload`]: hot reload (file change, SIGHUP, API) and zone edits: validate aside, swap
//!   atomically, tell the followers.
//! - [`shutdown`]: the shutdown signal.
//! - [`notify`]: readiness, watchdog and stopping notifications to systemd (`Type=notify`).
//! - [`phones`]: provisioning snippets for phones (`sipdns phones`), from config and zones.
//!
//! Only `dns`, `zones`, `upstream` and `hickory` use hickory types. Imports point down the
//! layers listed in `scripts/check-imports.py` (from `record` up to `api`, `app` and the
//! binary); nothing imports `app`, which is wiring only.

pub mod api;
pub mod app;
pub mod atomic_file;
pub mod cli;
pub mod config;
pub mod descriptors;
pub mod dns;
pub mod events;
pub mod health;
pub mod hickory;
pub mod memory;
pub mod metrics;
pub mod notify;
pub mod phones;
pub mod policy;
pub mod record;
pub mod reload;
pub mod resolve;
pub mod shutdown;
pub mod state;
pub mod target;
pub mod upstream;
pub mod zones;
