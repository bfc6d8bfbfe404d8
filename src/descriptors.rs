//! Open-file descriptors: raise the soft `RLIMIT_NOFILE` at start, and share the limit so
//! that client connections can never take what serving needs.
//!
//! Every TCP connection a client opens (DNS over TCP, the HTTP API) costs sipdns a
//! descriptor. Left unbounded, a flood of idle connections used them all (issue 14: at
//! `ulimit -n 256`, 300 idle API connections made TCP DNS fail with `accept failed`,
//! forwarded queries SERVFAIL — no socket for upstream — and reloads fail). So:
//!
//! - At start the soft limit is raised to the hard limit ([`raise_soft_limit`]); a
//!   container's or shell's default of 256 or 1024 is often far below what the hard limit
//!   allows.
//! - A **reserve** of a quarter of the limit, at least [`MIN_RESERVE`], is never handed
//!   to client connections. It covers what serving needs: the UDP loops and listeners,
//!   upstream sockets (one per query in flight), the prober's sockets and connections,
//!   zone and config files read on reload, the state file, logging, the runtime.
//! - The rest is the **client share**: the API gets at most a quarter of it, TCP DNS the
//!   remainder; each is the configured limit (`api.max_connections`,
//!   `dns.tcp_max_connections`) if that fits, else lowered to fit, with a warning. A
//!   connection over its budget is closed at once, so a flood costs the attacker a
//!   connection attempt and sipdns one short-lived descriptor.
//!
//! At `ulimit -n 256`: reserve 64, client share 192, API 48, TCP DNS 144.

/// The smallest reserve kept for serving, whatever the limit.
pub const MIN_RESERVE: u64 = 64;

/// Connection budgets derived from the descriptor limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// The soft `RLIMIT_NOFILE` they were computed from.
    pub limit: u64,
    /// Descriptors never given to client connections.
    pub reserve: u64,
    /// Most API connections at once.
    pub api: usize,
    /// Most TCP DNS connections at once.
    pub tcp_dns: usize,
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit and returns the soft limit in force
/// (`None` if it cannot be read). A failure to raise is logged, not fatal.
pub fn raise_soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        tracing::warn!(error = %std::io::Error::last_os_error(), "cannot read the open-files limit");
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!(
                from = lim.rlim_cur,
                to = lim.rlim_max,
                "raised the open-files limit to the hard limit"
            );
            lim.rlim_cur = lim.rlim_max;
        } else {
            tracing::warn!(
                error = %std::io::Error::last_os_error(),
                soft = lim.rlim_cur,
                hard = lim.rlim_max,
                "cannot raise the open-files limit"
            );
        }
    }
    Some(lim.rlim_cur)
}

/// The soft `RLIMIT_NOFILE` in force, if it can be read.
pub fn soft_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    (unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0).then_some(lim.rlim_cur)
}

impl Budget {
    /// Shares `limit` descriptors (see the module doc) between the API (`api_wanted`
    /// connections configured) and TCP DNS (`tcp_wanted`). Each budget is at least 1.
    pub fn share(limit: u64, api_wanted: usize, tcp_wanted: usize) -> Self {
        let reserve = (limit / 4).max(MIN_RESERVE);
        let clients = limit.saturating_sub(reserve);
        let fit = |n: u64| usize::try_from(n).unwrap_or(usize::MAX).max(1);
        let api = api_wanted.min(fit(clients / 4));
        let tcp_dns = tcp_wanted.min(fit(clients.saturating_sub(api as u64)));
        Self {
            limit,
            reserve,
            api,
            tcp_dns,
        }
    }

    /// The budgets for this process' limit, with a warning for each one lowered below its
    /// configured value. Without a readable limit the configured values stand.
    pub fn for_process(api_wanted: usize, tcp_wanted: usize) -> Self {
        let Some(limit) = soft_limit() else {
            return Self {
                limit: u64::MAX,
                reserve: 0,
                api: api_wanted,
                tcp_dns: tcp_wanted,
            };
        };
        let b = Self::share(limit, api_wanted, tcp_wanted);
        if b.api < api_wanted {
            tracing::warn!(
                configured = api_wanted,
                used = b.api,
                open_files_limit = limit,
                "api.max_connections lowered to fit the open-files limit"
            );
        }
        if b.tcp_dns < tcp_wanted {
            tracing::warn!(
                configured = tcp_wanted,
                used = b.tcp_dns,
                open_files_limit = limit,
                "dns.tcp_max_connections lowered to fit the open-files limit"
            );
        }
        b
    }
}

/// True for the accept errors that mean "no descriptor left" (EMFILE, ENFILE), after which
/// a listener backs off briefly instead of spinning.
pub fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_keep_the_reserve() {
        let b = Budget::share(256, 64, 512);
        assert_eq!((b.reserve, b.api, b.tcp_dns), (64, 48, 144));
        assert!(b.reserve + b.api as u64 + b.tcp_dns as u64 <= 256);
        // A generous limit leaves the configured values alone.
        let b = Budget::share(1 << 20, 64, 512);
        assert_eq!((b.api, b.tcp_dns), (64, 512));
        // Tiny limits still serve one connection of each kind.
        let b = Budget::share(16, 64, 512);
        assert_eq!((b.api, b.tcp_dns), (1, 1));
    }
}
