//! Semantic checks on a parsed [`Config`]: each problem names the field at fault.

use std::{collections::HashSet, time::Duration};

use super::{Config, TlsTrust};

/// One semantic problem: the field path (`sip.domains[0].ttl`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// Field path.
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn err(out: &mut Vec<ValidationError>, field: impl Into<String>, reason: impl Into<String>) {
    out.push(ValidationError {
        field: field.into(),
        reason: reason.into(),
    });
}

/// Every semantic problem in `c`; empty when it is good to run.
pub fn validate(c: &Config) -> Vec<ValidationError> {
    let mut out = Vec::new();

    if c.dns.listen.is_empty() {
        err(
            &mut out,
            "dns.listen",
            "at least one listen address is needed",
        );
    }
    let mut seen = HashSet::new();
    for (i, a) in c.dns.listen.iter().enumerate() {
        if !seen.insert(a) {
            err(
                &mut out,
                format!("dns.listen[{i}]"),
                format!("{a} is listed twice"),
            );
        }
    }
    if c.dns.max_inflight == 0 {
        err(&mut out, "dns.max_inflight", "must be at least 1");
    }
    if !(512..=4096).contains(&c.dns.max_udp_payload) {
        err(
            &mut out,
            "dns.max_udp_payload",
            "must be between 512 and 4096",
        );
    }
    if let Some(n) = c.dns.udp_threads
        && !(1..=super::MAX_UDP_THREADS).contains(&n)
    {
        err(
            &mut out,
            "dns.udp_threads",
            format!("must be between 1 and {}", super::MAX_UDP_THREADS),
        );
    }
    if c.dns.tcp_max_connections == 0 {
        err(&mut out, "dns.tcp_max_connections", "must be at least 1");
    }
    if c.dns.tcp_idle_timeout.is_zero() {
        err(&mut out, "dns.tcp_idle_timeout", "must be more than 0s");
    }
    let rl = &c.dns.rate_limit;
    if rl.responses_per_second > 0 {
        if rl.burst == 0 {
            err(&mut out, "dns.rate_limit.burst", "must be at least 1");
        }
        if rl.max_clients == 0 {
            err(&mut out, "dns.rate_limit.max_clients", "must be at least 1");
        }
        if rl.max_clients > 10_000_000 {
            err(
                &mut out,
                "dns.rate_limit.max_clients",
                "must be at most 10000000 (about 50 bytes each)",
            );
        }
    }

    let u = &c.upstream;
    let mut seen_up = HashSet::new();
    for (i, a) in u.servers.iter().map(|s| &s.address).enumerate() {
        if !seen_up.insert(a) {
            err(
                &mut out,
                format!("upstream.servers[{i}]"),
                format!("{a} is listed twice"),
            );
        }
        if a.port() == 0 {
            err(
                &mut out,
                format!("upstream.servers[{i}]"),
                "port 0 is not a DNS server",
            );
        }
    }
    if u.timeout.is_zero() || u.timeout > Duration::from_secs(30) {
        err(&mut out, "upstream.timeout", "must be between 1ms and 30s");
    }
    if u.attempts == 0 || u.attempts > 10 {
        err(&mut out, "upstream.attempts", "must be between 1 and 10");
    }
    if u.stale_ttl == 0 {
        err(&mut out, "upstream.stale_ttl", "must be at least 1 second");
    }

    let p = &c.sip.probe;
    if p.interval < Duration::from_millis(100) {
        err(&mut out, "sip.probe.interval", "must be at least 100ms");
    }
    if p.timeout.is_zero() {
        err(&mut out, "sip.probe.timeout", "must be more than 0s");
    }
    if p.timeout >= p.interval {
        // Otherwise probes run back to back and a dead server takes up to
        // interval + fall x timeout to be noticed instead of fall x interval + timeout.
        err(
            &mut out,
            "sip.probe.timeout",
            format!(
                "must be shorter than sip.probe.interval ({})",
                humantime::format_duration(p.interval)
            ),
        );
    }
    if let Some(ca) = &p.tls.ca_file {
        match std::fs::metadata(ca) {
            Ok(m) if m.is_file() && m.len() > 0 => {}
            Ok(_) => err(
                &mut out,
                "sip.probe.tls.ca_file",
                format!("{} is empty or not a file", ca.display()),
            ),
            Err(e) => err(
                &mut out,
                "sip.probe.tls.ca_file",
                format!("cannot read {}: {e}", ca.display()),
            ),
        }
    }
    match (p.tls.trust, &p.tls.ca_file) {
        (Some(TlsTrust::File | TlsTrust::Both), None) => err(
            &mut out,
            "sip.probe.tls.trust",
            "needs sip.probe.tls.ca_file (or trust: system)",
        ),
        (Some(TlsTrust::System), Some(_)) => err(
            &mut out,
            "sip.probe.tls.trust",
            "system ignores sip.probe.tls.ca_file: use both, or file, or drop ca_file",
        ),
        _ => {}
    }
    if p.fall == 0 {
        err(&mut out, "sip.probe.fall", "must be at least 1");
    }
    if p.rise == 0 {
        err(&mut out, "sip.probe.rise", "must be at least 1");
    }
    if p.up_codes.is_empty() {
        err(
            &mut out,
            "sip.probe.up_codes",
            "at least one code range is needed",
        );
    }
    if p.user_agent.trim().is_empty() || p.user_agent.contains(['\r', '\n']) {
        err(
            &mut out,
            "sip.probe.user_agent",
            "must be one non-empty line",
        );
    }
    if p.from_domain.trim().is_empty()
        || p.from_domain
            .contains(|c: char| c.is_whitespace() || c == '>' || c == '<')
    {
        err(&mut out, "sip.probe.from_domain", "must be a host name");
    }

    let mut names = HashSet::new();
    for (i, d) in c.sip.domains.iter().enumerate() {
        let at = |f: &str| format!("sip.domains[{i}].{f}");
        if !names.insert(d.name.clone()) {
            err(
                &mut out,
                at("name"),
                format!("domain {} is listed twice", d.name),
            );
        }
        if d.name.is_root() {
            err(&mut out, at("name"), "the root cannot be a SIP domain");
        }
        if d.ttl == 0 {
            err(&mut out, at("ttl"), "must be at least 1 second");
        }
        if d.naptr_order.is_empty() {
            err(&mut out, at("naptr_order"), "list at least one transport");
        }
        let uniq: HashSet<_> = d.naptr_order.iter().collect();
        if uniq.len() != d.naptr_order.len() {
            err(&mut out, at("naptr_order"), "a transport is listed twice");
        }
        if d.a_port == 0 {
            err(&mut out, at("a_port"), "port 0 cannot be probed");
        }
        if d.all_down == super::AllDown::Fallback && d.fallback.is_empty() {
            err(
                &mut out,
                at("all_down"),
                "all_down: fallback needs at least one entry in `fallback`",
            );
        }
        if d.fallback_always && d.fallback.is_empty() {
            err(
                &mut out,
                at("fallback_always"),
                "needs at least one entry in `fallback`",
            );
        }
        for (j, f) in d.fallback.iter().enumerate() {
            if f.port == 0 {
                err(
                    &mut out,
                    format!("sip.domains[{i}].fallback[{j}].port"),
                    "port 0 cannot be probed",
                );
            }
        }
        for (j, t) in d.targets.iter().enumerate() {
            if t.port == 0 {
                err(
                    &mut out,
                    format!("sip.domains[{i}].targets[{j}].port"),
                    "port 0 cannot be probed",
                );
            }
        }
    }

    if let Some(listen) = c.api.listen
        && listen.port() != 0
        && c.dns.listen.contains(&listen)
    {
        err(
            &mut out,
            "api.listen",
            "must differ from every dns.listen address",
        );
    }
    if c.api.max_connections == 0 {
        err(&mut out, "api.max_connections", "must be at least 1");
    }
    if c.api.request_timeout.is_zero() {
        err(&mut out, "api.request_timeout", "must be more than 0");
    }
    if c.zones.max_file_size == 0 {
        err(&mut out, "zones.max_file_size", "must be at least 1 byte");
    }
    if c.api.token_env.trim().is_empty() {
        err(
            &mut out,
            "api.token_env",
            "must name an environment variable",
        );
    }

    secondary(c, &mut out);
    out
}

/// `zones.secondary`: each entry names one zone or one catalog, has primaries, and no zone
/// is followed twice; a catalog group's SIP policy template is a `sip.domains` entry.
fn secondary(c: &Config, out: &mut Vec<ValidationError>) {
    for (name, g) in &c.zones.catalog_groups {
        if let Some(t) = &g.sip_policy
            && !c.sip.domains.iter().any(|d| &d.name == t)
        {
            err(
                out,
                format!("zones.catalog_groups.{name}.sip_policy"),
                format!("{t} is not one of sip.domains"),
            );
        }
    }
    let mut seen = HashSet::new();
    for (i, s) in c.zones.secondary.iter().enumerate() {
        let at = format!("zones.secondary[{i}]");
        let name = match (&s.zone, &s.catalog) {
            (Some(z), None) | (None, Some(z)) => Some(z),
            (Some(_), Some(_)) => {
                err(out, &at, "give either `zone` or `catalog`, not both");
                None
            }
            (None, None) => {
                err(
                    out,
                    &at,
                    "give `zone` (one zone) or `catalog` (a catalog zone)",
                );
                None
            }
        };
        if let Some(z) = name
            && !seen.insert(z.clone())
        {
            err(out, &at, format!("{z} is followed twice"));
        }
        if let Some(z) = &s.zone
            && c.zones.modes.contains_key(z)
        {
            err(
                out,
                format!("{at}.zone"),
                format!("{z} is also a zone file in zones.modes; a zone has one source"),
            );
        }
        if s.primaries.is_empty() {
            err(
                out,
                format!("{at}.primaries"),
                "at least one primary is needed",
            );
        }
        for (key, v) in [("refresh", s.refresh), ("retry", s.retry)] {
            if v.is_some_and(|d| d < Duration::from_secs(1)) {
                err(out, format!("{at}.{key}"), "must be at least 1s");
            }
        }
    }
}

/// Settings that work but are likely to hurt phones (printed by `sipdns check`, which still
/// succeeds): today, a domain whose policy `ttl` is not below `phones.register_refresh`.
/// A phone that caches DNS answers for their TTL re-resolves only when a request goes out
/// after the answer expired; with a TTL at or above its refresh interval, every other
/// refresh goes out on an answer from the previous one, which can still name a server
/// that died in between (measured with linphone: a 30 s TTL at a 27 s refresh left it
/// registered nowhere for 31 s; see docs/phones.md).
pub fn warnings(c: &Config) -> Vec<ValidationError> {
    let mut out = Vec::new();
    let Some(refresh) = c.phones.register_refresh else {
        return out;
    };
    for (i, d) in c.sip.domains.iter().enumerate() {
        if Duration::from_secs(u64::from(d.ttl)) >= refresh {
            err(
                &mut out,
                format!("sip.domains[{i}].ttl"),
                format!(
                    "{}: policy ttl {} s is not below phones.register_refresh {}: a phone \
                     that caches DNS for the TTL can send its next request to a server \
                     that died since its last one; use a ttl below the refresh interval",
                    d.name,
                    d.ttl,
                    humantime::format_duration(refresh)
                ),
            );
        }
    }
    out
}
