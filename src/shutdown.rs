//! The shutdown signal: a `CancellationToken` cancelled on SIGTERM or SIGINT (or by tests).

pub use tokio_util::sync::CancellationToken;

/// Waits for SIGTERM or SIGINT, then cancels `token`. The handlers are installed when this
/// is called, not when the future is first polled: a SIGTERM that arrives before the
/// spawned future ran still stops the server gracefully instead of killing it. Call it
/// inside the runtime.
pub fn on_signals(token: CancellationToken) -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let handlers = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match handlers {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM received, shutting down"),
                    _ = int.recv() => tracing::info!("SIGINT received, shutting down"),
                    () = token.cancelled() => return,
                }
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot install signal handlers; only ctrl-c stops sipdns");
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = token.cancelled() => return,
                }
            }
        }
        #[cfg(not(unix))]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = token.cancelled() => return,
        }
        token.cancel();
    }
}
