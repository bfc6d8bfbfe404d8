//! The listeners. Sockets are bound by the caller and passed in, so tests bind port 0.
//!
//! UDP: one receive loop per socket. Each query's future is polled once in the loop: static
//! and cached answers complete right there, with no task spawned and no thread woken. Only
//! a query that must wait for upstream is moved to its own task, and at most
//! `max_inflight` of those exist at once; past that a query gets a stale answer or SERVFAIL
//! at once instead of queueing without bound.
//!
//! TCP (RFC 7766): at most `tcp_max_connections` connections; each must deliver a whole
//! message within `tcp_idle_timeout` or is closed, so slow clients cannot pin resources.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

use super::handler::{Handler, Transport};

/// Limits of one DNS server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Queries waiting for upstream at once (UDP and TCP together).
    pub max_inflight: usize,
    /// TCP connections at once.
    pub tcp_max_connections: usize,
    /// A TCP connection must deliver a whole message within this time.
    pub tcp_idle_timeout: Duration,
}

/// Runs a UDP receive loop until `shutdown`.
pub async fn serve_udp(
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    inflight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65_535];
    loop {
        let (n, src) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                Err(e) => {
                    // ICMP errors from earlier sends surface here on some systems; keep going.
                    tracing::debug!(error = %e, "udp receive error");
                    continue;
                }
            },
        };
        let packet = buf[..n].to_vec();
        let h = handler.clone();
        let mut fut: Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>> =
            Box::pin(async move { h.handle(&packet, src, Transport::Udp).await });
        let polled = fut.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        match polled {
            Poll::Ready(Some(resp)) => send(&socket, &resp, src).await,
            Poll::Ready(None) => {}
            // Waiting on upstream: the resolver holds one of `max_inflight` permits for it,
            // so these tasks are bounded. A second bound here guards against anything else
            // that might wait (e.g. a stuck send).
            Poll::Pending => match inflight.clone().try_acquire_owned() {
                Ok(permit) => {
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        if let Some(resp) = fut.await {
                            send(&socket, &resp, src).await;
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    drop(fut);
                    if let Some(resp) = handler.overloaded(&buf[..n], src, Transport::Udp) {
                        send(&socket, &resp, src).await;
                    }
                }
            },
        }
    }
}

async fn send(socket: &UdpSocket, resp: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(resp, to).await {
        tracing::debug!(error = %e, %to, "udp send failed");
    }
}

/// Runs a TCP accept loop until `shutdown`.
pub async fn serve_tcp(
    listener: TcpListener,
    handler: Arc<Handler>,
    inflight: Arc<Semaphore>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let conns = Arc::new(Semaphore::new(limits.tcp_max_connections));
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "tcp accept failed");
                    // Out of file descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = conns.clone().try_acquire_owned() else {
            // Over the limit: close at once rather than queue (RFC 7766 §6.2.2).
            drop(stream);
            continue;
        };
        let handler = handler.clone();
        let inflight = inflight.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = shutdown.cancelled() => {}
                () = connection(stream, peer, handler, inflight, limits.tcp_idle_timeout) => {}
            }
            drop(permit);
        });
    }
}

async fn connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    inflight: Arc<Semaphore>,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    loop {
        let read = async {
            let len = stream.read_u16().await? as usize;
            let mut msg = vec![0u8; len];
            stream.read_exact(&mut msg).await?;
            Ok::<_, std::io::Error>(msg)
        };
        // Closed, reset, or idle/slow past the limit: drop the connection.
        let Ok(Ok(msg)) = tokio::time::timeout(idle, read).await else {
            return;
        };
        let resp = match inflight.clone().try_acquire_owned() {
            Ok(_permit) => handler.handle(&msg, peer, Transport::Tcp).await,
            Err(_) => handler.overloaded(&msg, peer, Transport::Tcp),
        };
        let Some(resp) = resp else {
            continue;
        };
        let Ok(len) = u16::try_from(resp.len()) else {
            return;
        };
        let write = async {
            stream.write_all(&len.to_be_bytes()).await?;
            stream.write_all(&resp).await
        };
        match tokio::time::timeout(idle, write).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
