//! The listeners. Sockets are bound by the caller and passed in, so tests bind port 0.
//!
//! UDP: one receive loop per socket (`dns.udp_threads` sockets, SO_REUSEPORT), on its own thread
//! with batched `recvmmsg` / `sendmmsg` on Linux. Stored answers ([`Handler::fast`]) are
//! written into buffers reused from batch to batch: no allocation, no task, no thread
//! woken. Any other query's future is polled once in the loop: static and cached answers
//! complete right there. Only a query that must wait for upstream is moved to its own task,
//! and at most `max_inflight` of those exist at once; past that a query gets a stale answer
//! or SERVFAIL at once instead of queueing without bound.
//!
//! TCP (RFC 7766): at most `tcp_max_connections` connections; each must deliver a whole
//! message within `tcp_idle_timeout` or is closed, so slow clients cannot pin resources.

use std::{
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::Semaphore,
};
use tokio_util::sync::CancellationToken;

use super::handler::{Fast, Handler, Transport};

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
///
/// On Linux the loop runs on its own OS thread (named `sipdns-udp`), in blocking
/// `recvmmsg` / `sendmmsg` calls of up to [`BATCH`] datagrams: the kernel wakes that thread
/// directly when a query arrives, with no reactor or worker hand-off in between, and a
/// burst of queries costs two system calls instead of two per query. The thread enters the
/// tokio runtime, so a query that must wait for upstream is spawned onto it as before.
/// Elsewhere, or if the socket is shared, the loop runs as a tokio task.
pub async fn serve_udp(
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    inflight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    #[cfg(target_os = "linux")]
    {
        let socket = match Arc::try_unwrap(socket) {
            Ok(s) => s,
            Err(shared) => return serve_udp_task(shared, handler, inflight, shutdown).await,
        };
        batch::serve(socket, handler, inflight, shutdown).await;
    }
    #[cfg(not(target_os = "linux"))]
    serve_udp_task(socket, handler, inflight, shutdown).await;
}

/// The UDP loop as a tokio task: one `recv_from` per query.
async fn serve_udp_task(
    socket: Arc<UdpSocket>,
    handler: Arc<Handler>,
    inflight: Arc<Semaphore>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; 65_535];
    let mut out = Vec::new();
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
        let start = Instant::now();
        let miss = match handler.fast(&buf[..n], src, Transport::Udp, start, &mut out) {
            Fast::Answered => {
                send(&socket, &out, src).await;
                continue;
            }
            Fast::Dropped => continue,
            Fast::Miss(miss) => miss,
        };
        let packet = buf[..n].to_vec();
        let h = handler.clone();
        let mut fut: SlowFuture =
            Box::pin(async move { h.slow(&packet, Transport::Udp, start, miss).await });
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

/// The full path of one query, boxed so it can be polled in place and moved to a task.
type SlowFuture = Pin<Box<dyn Future<Output = Option<Vec<u8>>> + Send>>;

async fn send(socket: &UdpSocket, resp: &[u8], to: SocketAddr) {
    if let Err(e) = socket.send_to(resp, to).await {
        tracing::debug!(error = %e, %to, "udp send failed");
    }
}

/// Datagrams taken from (and sent to) the socket per system call.
pub const BATCH: usize = 32;

#[cfg(target_os = "linux")]
mod batch {
    //! The UDP loop on its own thread with `recvmmsg` / `sendmmsg` (Linux).

    use std::{
        io,
        mem::{size_of, zeroed},
        net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
        os::fd::{AsRawFd, RawFd},
        ptr,
    };

    use super::*;

    /// Longest query read; a longer datagram (no real DNS query) is dropped.
    const MAX_QUERY: usize = 4096;
    /// How often a blocked receive wakes to look at the shutdown signal.
    const WAKE_EVERY: Duration = Duration::from_millis(100);

    pub(super) async fn serve(
        socket: UdpSocket,
        handler: Arc<Handler>,
        inflight: Arc<Semaphore>,
        shutdown: CancellationToken,
    ) {
        // Out of the reactor: tokio must not be woken for every datagram the thread reads.
        let socket = match socket.into_std().and_then(|s| {
            s.set_nonblocking(false)?;
            s.set_read_timeout(Some(WAKE_EVERY))?;
            Ok(s)
        }) {
            Ok(s) => Arc::new(s),
            Err(e) => {
                tracing::error!(error = %e, "cannot set up the UDP socket");
                return;
            }
        };
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let runtime = tokio::runtime::Handle::current();
        let spawned = std::thread::Builder::new()
            .name("sipdns-udp".into())
            .spawn(move || {
                let _runtime = runtime.enter();
                Loop::new(socket, handler, inflight).run(&shutdown);
                drop(done_tx);
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start a UDP thread");
            return;
        }
        // Resolves when the thread ends (it drops the sender), i.e. after shutdown.
        let _ = done_rx.await;
    }

    struct Loop {
        socket: Arc<std::net::UdpSocket>,
        fd: RawFd,
        handler: Arc<Handler>,
        inflight: Arc<Semaphore>,
        /// `BATCH` receive slots of `MAX_QUERY` bytes.
        bufs: Vec<u8>,
        addrs: Vec<libc::sockaddr_storage>,
        addr_lens: Vec<libc::socklen_t>,
        iovs: Vec<libc::iovec>,
        hdrs: Vec<libc::mmsghdr>,
        /// Responses of this batch, reused from batch to batch; `out_to[k]` is the receive
        /// slot whose source address response `k` goes back to.
        outs: Vec<Vec<u8>>,
        out_to: Vec<usize>,
        send_iovs: Vec<libc::iovec>,
        send_hdrs: Vec<libc::mmsghdr>,
        /// Receive headers the last batch filled (to reset).
        used: usize,
    }

    // SAFETY: the only non-`Send` fields are raw pointers: `iovs`, `hdrs`, `send_iovs` and
    // `send_hdrs` hold pointers into the heap buffers of the other fields of the same `Loop`, which are allocated
    // once and never resized (moving the `Loop` does not move them). Receive headers are
    // set up once; send headers right before each call.
    unsafe impl Send for Loop {}

    impl Loop {
        fn new(
            socket: Arc<std::net::UdpSocket>,
            handler: Arc<Handler>,
            inflight: Arc<Semaphore>,
        ) -> Self {
            // SAFETY: all-zero is a valid value of these plain C structs.
            let (addr, iov, hdr) = unsafe {
                (
                    zeroed::<libc::sockaddr_storage>(),
                    zeroed::<libc::iovec>(),
                    zeroed::<libc::mmsghdr>(),
                )
            };
            let mut this = Self {
                fd: socket.as_raw_fd(),
                socket,
                handler,
                inflight,
                bufs: vec![0; BATCH * MAX_QUERY],
                addrs: vec![addr; BATCH],
                addr_lens: vec![0; BATCH],
                iovs: vec![iov; BATCH],
                hdrs: vec![hdr; BATCH],
                outs: (0..BATCH).map(|_| Vec::with_capacity(512)).collect(),
                out_to: vec![0; BATCH],
                send_iovs: vec![iov; BATCH],
                send_hdrs: vec![hdr; BATCH],
                used: 0,
            };
            for i in 0..BATCH {
                this.point(i);
            }
            this
        }

        fn run(&mut self, shutdown: &CancellationToken) {
            while !shutdown.is_cancelled() {
                let n = match self.receive() {
                    Ok(n) => n,
                    Err(e) => {
                        if !matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock
                                | io::ErrorKind::TimedOut
                                | io::ErrorKind::Interrupted
                        ) {
                            tracing::debug!(error = %e, "udp receive error");
                        }
                        continue;
                    }
                };
                let start = Instant::now();
                let mut ready = 0;
                for i in 0..n {
                    if self.answer(i, start, ready) {
                        self.out_to[ready] = i;
                        ready += 1;
                    }
                }
                self.send(ready);
            }
        }

        /// Points receive header `i` at its buffer and address slot. Done once: the buffers
        /// never move, and the kernel writes back only `msg_namelen`, `msg_flags` and
        /// `msg_len`, which [`Self::receive`] resets for the slots a batch used.
        fn point(&mut self, i: usize) {
            self.iovs[i] = libc::iovec {
                iov_base: self.bufs[i * MAX_QUERY..].as_mut_ptr().cast(),
                iov_len: MAX_QUERY,
            };
            // SAFETY: all-zero is a valid msghdr; the pointers set below stay valid for the
            // life of the loop (see the `Send` impl).
            let mut h: libc::msghdr = unsafe { zeroed() };
            h.msg_name = ptr::from_mut(&mut self.addrs[i]).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = ptr::from_mut(&mut self.iovs[i]);
            h.msg_iovlen = 1;
            self.hdrs[i] = libc::mmsghdr {
                msg_hdr: h,
                msg_len: 0,
            };
        }

        /// One `recvmmsg`: blocks until at least one datagram is there (or the wake-up
        /// timeout), then takes whatever else is queued, up to `BATCH`.
        fn receive(&mut self) -> io::Result<usize> {
            for h in &mut self.hdrs[..self.used] {
                h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                h.msg_hdr.msg_flags = 0;
            }
            self.used = 0;
            // SAFETY: `hdrs` holds BATCH initialised headers whose buffers outlive the call.
            let n = unsafe {
                libc::recvmmsg(
                    self.fd,
                    self.hdrs.as_mut_ptr(),
                    BATCH as libc::c_uint,
                    libc::MSG_WAITFORONE,
                    ptr::null_mut(),
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let n = n as usize;
            self.used = n;
            for i in 0..n {
                self.addr_lens[i] = self.hdrs[i].msg_hdr.msg_namelen;
            }
            Ok(n)
        }

        /// Answers datagram `i` into `outs[slot]`; false if nothing is to be sent now.
        fn answer(&mut self, i: usize, start: Instant, slot: usize) -> bool {
            let hdr = &self.hdrs[i];
            if hdr.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
                return false;
            }
            let len = hdr.msg_len as usize;
            let Some(src) = socket_addr(&self.addrs[i]) else {
                return false;
            };
            let packet = &self.bufs[i * MAX_QUERY..i * MAX_QUERY + len];
            let out = &mut self.outs[slot];
            let miss = match self.handler.fast(packet, src, Transport::Udp, start, out) {
                Fast::Answered => return true,
                Fast::Dropped => return false,
                Fast::Miss(miss) => miss,
            };
            let owned = packet.to_vec();
            let h = self.handler.clone();
            let mut fut: SlowFuture =
                Box::pin(async move { h.slow(&owned, Transport::Udp, start, miss).await });
            match fut.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                Poll::Ready(Some(resp)) => {
                    *out = resp;
                    true
                }
                Poll::Ready(None) => false,
                // Waiting on upstream: bounded as in the task loop.
                Poll::Pending => match self.inflight.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let socket = self.socket.clone();
                        tokio::spawn(async move {
                            if let Some(resp) = fut.await {
                                send_later(&socket, &resp, src).await;
                            }
                            drop(permit);
                        });
                        false
                    }
                    Err(_) => {
                        drop(fut);
                        match self.handler.overloaded(packet, src, Transport::Udp) {
                            Some(resp) => {
                                *out = resp;
                                true
                            }
                            None => false,
                        }
                    }
                },
            }
        }

        /// Sends `outs[..ready]` back to their sources with `sendmmsg`.
        fn send(&mut self, ready: usize) {
            for k in 0..ready {
                let out = &self.outs[k];
                let to = self.out_to[k];
                self.send_iovs[k] = libc::iovec {
                    iov_base: out.as_ptr().cast_mut().cast(),
                    iov_len: out.len(),
                };
                // SAFETY: as in `receive`.
                let mut h: libc::msghdr = unsafe { zeroed() };
                h.msg_name = ptr::from_mut(&mut self.addrs[to]).cast();
                h.msg_namelen = self.addr_lens[to];
                h.msg_iov = ptr::from_mut(&mut self.send_iovs[k]);
                h.msg_iovlen = 1;
                self.send_hdrs[k] = libc::mmsghdr {
                    msg_hdr: h,
                    msg_len: 0,
                };
            }
            let mut sent = 0;
            while sent < ready {
                // SAFETY: headers `sent..ready` are initialised and point at live buffers.
                let r = unsafe {
                    libc::sendmmsg(
                        self.fd,
                        self.send_hdrs[sent..].as_mut_ptr(),
                        (ready - sent) as libc::c_uint,
                        0,
                    )
                };
                if r < 0 {
                    let e = io::Error::last_os_error();
                    if e.kind() != io::ErrorKind::Interrupted {
                        // The first message failed (e.g. an unroutable source): skip it.
                        tracing::debug!(error = %e, "udp send failed");
                        sent += 1;
                    }
                    continue;
                }
                sent += r as usize;
            }
        }
    }

    /// Sends a response from a task (after an upstream wait) on the loop's socket, which is
    /// in blocking mode: `MSG_DONTWAIT`, and a short back-off while the send buffer is full.
    async fn send_later(socket: &std::net::UdpSocket, resp: &[u8], to: SocketAddr) {
        let sock = socket2::SockRef::from(socket);
        let to = socket2::SockAddr::from(to);
        for _ in 0..20 {
            match sock.send_to_with_flags(resp, &to, libc::MSG_DONTWAIT) {
                Ok(_) => return,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "udp send failed");
                    return;
                }
            }
        }
    }

    /// The source address of a received datagram.
    fn socket_addr(ss: &libc::sockaddr_storage) -> Option<SocketAddr> {
        match libc::c_int::from(ss.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in (family AF_INET) into the storage,
                // which is large enough and suitably aligned for it.
                let a = unsafe { &*ptr::from_ref(ss).cast::<libc::sockaddr_in>() };
                Some(SocketAddr::V4(SocketAddrV4::new(
                    Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                    u16::from_be(a.sin_port),
                )))
            }
            libc::AF_INET6 => {
                // SAFETY: as above, for sockaddr_in6 (family AF_INET6).
                let a = unsafe { &*ptr::from_ref(ss).cast::<libc::sockaddr_in6>() };
                Some(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(a.sin6_addr.s6_addr),
                    u16::from_be(a.sin6_port),
                    a.sin6_flowinfo,
                    a.sin6_scope_id,
                )))
            }
            _ => None,
        }
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
    stream: TcpStream,
    peer: SocketAddr,
    handler: Arc<Handler>,
    inflight: Arc<Semaphore>,
    idle: Duration,
) {
    let _ = stream.set_nodelay(true);
    let (rd, mut wr) = stream.into_split();
    // Buffered reads: pipelined queries (RFC 7766 §6.2.1.1) come out of one system call.
    let mut rd = tokio::io::BufReader::with_capacity(16 * 1024, rd);
    let mut msg = Vec::new();
    // The length prefix and the response go out in one write (one segment with nodelay).
    let mut out = Vec::with_capacity(514);
    let mut resp = Vec::new();
    loop {
        let read = async {
            let len = rd.read_u16().await? as usize;
            msg.resize(len, 0);
            rd.read_exact(&mut msg).await?;
            Ok::<_, std::io::Error>(())
        };
        // Closed, reset, or idle/slow past the limit: drop the connection.
        let Ok(Ok(())) = tokio::time::timeout(idle, read).await else {
            return;
        };
        let start = Instant::now();
        let answered = match handler.fast(&msg, peer, Transport::Tcp, start, &mut resp) {
            Fast::Answered => true,
            Fast::Dropped => false,
            Fast::Miss(miss) => {
                let r = match inflight.clone().try_acquire_owned() {
                    Ok(_permit) => handler.slow(&msg, Transport::Tcp, start, miss).await,
                    Err(_) => handler.overloaded(&msg, peer, Transport::Tcp),
                };
                match r {
                    Some(r) => {
                        resp = r;
                        true
                    }
                    None => false,
                }
            }
        };
        if !answered {
            continue;
        }
        let Ok(len) = u16::try_from(resp.len()) else {
            return;
        };
        out.clear();
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&resp);
        match tokio::time::timeout(idle, wr.write_all(&out)).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
}
