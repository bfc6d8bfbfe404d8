//! Tells systemd how the service is doing (the `sd_notify` protocol, `man 3 sd_notify`):
//! with `Type=notify` systemd passes a Unix datagram socket in `$NOTIFY_SOCKET`, and sipdns
//! sends `READY=1` once its listeners are bound and the first SIP probe round is done (or
//! `sip.probe.startup_grace` has passed), so `systemctl start` returns, and units ordered
//! after sipdns start, only when phones would get health-checked answers. It sends
//! `WATCHDOG=1` every half `$WATCHDOG_USEC` (`WatchdogSec=`) from the async runtime, so a
//! wedged runtime gets the service restarted, and `STOPPING=1` when shutdown begins.
//!
//! Written here rather than taken from a crate (`sd-notify`, `libsystemd`): the protocol
//! is one datagram per state change, std's `UnixDatagram` sends it (abstract socket names,
//! written `@name`, included), and this keeps the dependency list as it is. Outside
//! systemd (`$NOTIFY_SOCKET` unset) nothing is sent.

use std::{
    os::unix::net::{SocketAddr, UnixDatagram},
    time::Duration,
};

use tokio::sync::watch;

use crate::shutdown::CancellationToken;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` names no usable socket.
    #[error("NOTIFY_SOCKET={path:?}: {reason}")]
    Socket {
        /// The value of `$NOTIFY_SOCKET`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The datagram was not sent.
    #[error("sending {state:?} to systemd: {source}")]
    Send {
        /// The first line of what was sent.
        state: String,
        /// The error.
        source: std::io::Error,
    },
}

/// A connection to systemd's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
}

impl Notifier {
    /// The socket in `$NOTIFY_SOCKET`, or `None` when it is unset or empty (not started
    /// by systemd as `Type=notify`).
    pub fn from_env() -> Result<Option<Self>, NotifyError> {
        match std::env::var("NOTIFY_SOCKET") {
            Ok(path) if !path.is_empty() => Self::connect(&path).map(Some),
            _ => Ok(None),
        }
    }

    /// A notifier for `path`: a file system path, or `@name` for an abstract socket.
    pub fn connect(path: &str) -> Result<Self, NotifyError> {
        let bad = |reason: String| NotifyError::Socket {
            path: path.to_owned(),
            reason,
        };
        let addr = if let Some(name) = path.strip_prefix('@') {
            abstract_addr(name.as_bytes()).map_err(|e| bad(e.to_string()))?
        } else if path.starts_with('/') {
            SocketAddr::from_pathname(path).map_err(|e| bad(e.to_string()))?
        } else {
            return Err(bad("neither an absolute path nor @abstract".to_owned()));
        };
        let sock = UnixDatagram::unbound().map_err(|e| bad(e.to_string()))?;
        // A full queue at systemd's end must never stall the runtime: drop instead.
        sock.set_nonblocking(true).map_err(|e| bad(e.to_string()))?;
        Ok(Self { sock, addr })
    }

    /// Sends `state`: newline-separated `KEY=value` assignments (`READY=1`, `STATUS=...`).
    pub fn notify(&self, state: &str) -> Result<(), NotifyError> {
        self.sock
            .send_to_addr(state.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|source| NotifyError::Send {
                state: state.lines().next().unwrap_or_default().to_owned(),
                source,
            })
    }

    /// Sends `state`, logging a failure instead of returning it.
    fn send_or_log(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!(error = %e, "systemd notification failed");
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> std::io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt as _;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt as _;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> std::io::Result<SocketAddr> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "abstract Unix sockets exist only on Linux",
    ))
}

/// Half of `$WATCHDOG_USEC` (systemd's advice), when the watchdog is on and meant for
/// this process (`$WATCHDOG_PID` unset or equal to its PID).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.trim().parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec) / 2)
}

/// Sends `READY=1` (with `status` as `STATUS=`) once `ready` turns true, `WATCHDOG=1`
/// every `watchdog` if set, and `STOPPING=1` when `shutdown` is cancelled; then returns.
pub async fn run(
    notifier: Notifier,
    mut ready: watch::Receiver<bool>,
    status: impl Fn() -> String + Send,
    watchdog: Option<Duration>,
    shutdown: CancellationToken,
) {
    let mut tick = watchdog.map(|every| {
        let mut t = tokio::time::interval(every);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    });
    let mut announced = false;
    loop {
        let ping = async {
            match tick.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => {
                notifier.send_or_log("STOPPING=1\nSTATUS=shutting down");
                return;
            }
            changed = ready.wait_for(|r| *r), if !announced => {
                if changed.is_err() {
                    // The prober is gone (shutdown under way): nothing left to announce.
                    announced = true;
                    continue;
                }
                announced = true;
                notifier.send_or_log(&format!("READY=1\nSTATUS={}", status()));
                tracing::info!("told systemd we are ready");
            }
            () = ping => notifier.send_or_log("WATCHDOG=1"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        let mut buf = [0u8; 512];
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let n = sock.recv(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    #[test]
    fn sends_to_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        n.notify("READY=1\nSTATUS=ok").unwrap();
        assert_eq!(recv(&server), "READY=1\nSTATUS=ok");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn sends_to_an_abstract_socket() {
        let name = format!("sipdns-notify-test-{}", std::process::id());
        let server = UnixDatagram::bind_addr(&abstract_addr(name.as_bytes()).unwrap()).unwrap();
        let n = Notifier::connect(&format!("@{name}")).unwrap();
        n.notify("WATCHDOG=1").unwrap();
        assert_eq!(recv(&server), "WATCHDOG=1");
    }

    #[test]
    fn rejects_a_relative_path_and_reports_a_missing_socket() {
        let e = Notifier::connect("relative/notify")
            .unwrap_err()
            .to_string();
        assert!(e.contains("relative/notify"), "{e}");
        let n = Notifier::connect("/nonexistent/sipdns/notify").unwrap();
        let e = n.notify("READY=1").unwrap_err().to_string();
        assert!(e.contains("READY=1"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn ready_once_then_watchdog_then_stopping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::connect(path.to_str().unwrap()).unwrap();
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(
            n,
            rx,
            || "serving".to_owned(),
            Some(Duration::from_secs(10)),
            stop.clone(),
        ));
        // The first watchdog tick is immediate; nothing says READY before `ready`.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(recv(&server), "WATCHDOG=1");
        tx.send(true).unwrap();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(recv(&server), "READY=1\nSTATUS=serving");
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(recv(&server), "WATCHDOG=1");
        stop.cancel();
        task.await.unwrap();
        assert_eq!(recv(&server), "STOPPING=1\nSTATUS=shutting down");
    }
}
