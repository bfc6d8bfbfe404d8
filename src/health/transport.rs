//! How probes travel: the shared UDP sockets (one per address family, with ICMP errors
//! attributed to the destination that caused them), and one TCP or TLS connection per
//! stream probe.
//!
//! ICMP unreachable on a shared, unconnected UDP socket: Linux reports such errors only if
//! `IP_RECVERR` / `IPV6_RECVERR` is set, and then queues each one with the original
//! destination address, which is how the prober knows which target it belongs to
//! (ip(7), `MSG_ERRQUEUE`). Elsewhere ICMP errors are not seen and such a probe times out.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
    time::Duration,
};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
    time::Instant,
};
use tokio_rustls::TlsConnector;

use super::{
    ProbeError,
    sip::{self, Frame, ProbeIds, Reply},
    state::{BadReason, Verdict},
};
use crate::{
    config::{ProbeTlsConfig, TlsTrust},
    metrics::Metrics,
    target::Transport,
};

/// Receive buffer asked for the shared UDP sockets: replies of thousands of targets may
/// arrive in the same millisecond.
const UDP_RECV_BUFFER: usize = 4 * 1024 * 1024;

/// Binds one shared UDP socket for an address family, with ICMP error reporting on.
pub(crate) fn bind_udp(v6: bool) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let domain = if v6 { Domain::IPV6 } else { Domain::IPV4 };
    let sock = Socket::new(domain, Type::DGRAM, Some(Protocol::UDP))?;
    if v6 {
        sock.set_only_v6(true)?;
    }
    // Best effort: the kernel caps it at net.core.rmem_max.
    let _ = sock.set_recv_buffer_size(UDP_RECV_BUFFER);
    set_recv_err(&sock, v6);
    sock.set_nonblocking(true)?;
    let any: SocketAddr = if v6 {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    sock.bind(&any.into())?;
    UdpSocket::from_std(sock.into())
}

#[cfg(target_os = "linux")]
fn set_recv_err(sock: &socket2::Socket, v6: bool) {
    use std::os::fd::AsRawFd as _;
    let one: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    // SAFETY: `sock` is an open socket for the duration of the call; the option value
    // points to a live c_int and its exact size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const one).cast::<libc::c_void>(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot enable ICMP error reports on the probe socket; unreachable targets will time out instead");
    }
}

#[cfg(not(target_os = "linux"))]
fn set_recv_err(_sock: &socket2::Socket, _v6: bool) {}

/// Destinations named by queued ICMP errors on a shared UDP socket (bounded per call).
#[cfg(target_os = "linux")]
pub(crate) fn drain_icmp_errors(sock: &UdpSocket) -> Vec<SocketAddr> {
    use std::mem::MaybeUninit;
    let sref = socket2::SockRef::from(sock);
    let mut out = Vec::new();
    let mut buf = [MaybeUninit::<u8>::uninit(); 256];
    for _ in 0..1024 {
        match sref.recv_from_with_flags(&mut buf, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) {
            Ok((_, addr)) => {
                if let Some(a) = addr.as_socket() {
                    out.push(a);
                }
            }
            Err(_) => break,
        }
    }
    out
}

/// Destinations named by queued ICMP errors (none outside Linux).
#[cfg(not(target_os = "linux"))]
pub(crate) fn drain_icmp_errors(_sock: &UdpSocket) -> Vec<SocketAddr> {
    Vec::new()
}

/// The local address the kernel would send from to reach `dest` (for Via sent-by and
/// Contact of probes on the shared socket, which is bound to the unspecified address).
pub(crate) fn route_source(dest: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match dest {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let s = std::net::UdpSocket::bind(bind).ok()?;
    // connect() on UDP sends nothing; it only picks the route and source address.
    s.connect((dest, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// A verifier that accepts any certificate: the explicit `verify: false` opt-out. It
/// still checks that the handshake signatures are valid for the presented key.
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The TLS client for probes: verification against the trusted CAs (`trust`: the system
/// store, `ca_file`, or both) and the SRV target name, unless `verify: false`.
pub(crate) fn tls_connector(cfg: &ProbeTlsConfig) -> Result<TlsConnector, ProbeError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ProbeError::Tls(e.to_string()))?;
    let config = if cfg.verify {
        let trust = cfg.effective_trust();
        let mut roots = RootCertStore::empty();
        if matches!(trust, TlsTrust::System | TlsTrust::Both) {
            add_system_roots(&mut roots);
        }
        if matches!(trust, TlsTrust::File | TlsTrust::Both)
            && let Some(path) = &cfg.ca_file
        {
            add_ca_file(&mut roots, path)?;
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth()
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Adds the system trust store (rustls-native-certs: `SSL_CERT_FILE` / `SSL_CERT_DIR`, else
/// the distribution's bundle such as `/etc/ssl/certs/ca-certificates.crt`). Unreadable or
/// unparsable entries are logged and skipped; an empty store is logged, since every
/// verified TLS probe will then fail.
fn add_system_roots(roots: &mut RootCertStore) {
    let loaded = rustls_native_certs::load_native_certs();
    for e in &loaded.errors {
        tracing::warn!(error = %e, "reading the system trust store");
    }
    let (added, ignored) = roots.add_parsable_certificates(loaded.certs);
    if ignored > 0 {
        tracing::warn!(
            ignored,
            "system trust store: certificates rustls cannot use were skipped"
        );
    }
    if added == 0 {
        tracing::warn!(
            "the system trust store has no usable CA certificate: TLS targets will fail \
             verification (install ca-certificates, or set sip.probe.tls.ca_file)"
        );
    } else {
        tracing::debug!(added, "TLS probes trust the system store");
    }
}

/// Adds every certificate of a PEM file; one that is unreadable, bad or empty is an error.
fn add_ca_file(roots: &mut RootCertStore, path: &std::path::Path) -> Result<(), ProbeError> {
    let pem = std::fs::read(path)
        .map_err(|e| ProbeError::Tls(format!("cannot read ca_file {}: {e}", path.display())))?;
    let mut added = 0usize;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        let cert =
            cert.map_err(|e| ProbeError::Tls(format!("ca_file {}: bad PEM: {e}", path.display())))?;
        roots.add(cert).map_err(|e| {
            ProbeError::Tls(format!("ca_file {}: bad certificate: {e}", path.display()))
        })?;
        added += 1;
    }
    if added == 0 {
        return Err(ProbeError::Tls(format!(
            "ca_file {}: no certificate in it",
            path.display()
        )));
    }
    Ok(())
}

/// What a stream probe needs.
pub(crate) struct StreamProbe {
    /// Where to connect.
    pub(crate) dest: SocketAddr,
    /// TCP or TLS.
    pub(crate) transport: Transport,
    /// Request-URI host.
    pub(crate) uri_host: String,
    /// TLS server name (SNI and the name the certificate must carry).
    pub(crate) sni: Option<ServerName<'static>>,
    /// The TLS client, for TLS probes.
    pub(crate) tls: Option<TlsConnector>,
    /// Identifiers of this probe.
    pub(crate) ids: ProbeIds,
    /// From host.
    pub(crate) from_domain: String,
    /// User-Agent.
    pub(crate) user_agent: String,
    /// Whole-probe deadline.
    pub(crate) timeout: Duration,
}

fn io_verdict(stage: &str, e: &io::Error) -> Verdict {
    use io::ErrorKind as K;
    let reason = match e.kind() {
        K::ConnectionRefused => BadReason::Refused,
        K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe | K::UnexpectedEof => {
            BadReason::Reset
        }
        K::HostUnreachable | K::NetworkUnreachable => BadReason::Unreachable,
        _ => BadReason::Error,
    };
    Verdict::bad(reason, format!("{stage}: {e}"))
}

/// Runs one TCP or TLS probe to completion (connect, send, read the final reply) within
/// its timeout. Returns the verdict and the reply code / Retry-After it was based on.
pub(crate) async fn stream_probe(
    p: StreamProbe,
    metrics: Arc<Metrics>,
    judge: impl Fn(&Reply, Duration) -> Verdict + Send,
) -> Verdict {
    let start = Instant::now();
    let deadline = p.timeout;
    let run = async {
        let tcp = TcpStream::connect(p.dest)
            .await
            .map_err(|e| io_verdict("connect", &e))?;
        let _ = tcp.set_nodelay(true);
        let local = tcp.local_addr().map_err(|e| io_verdict("socket", &e))?;
        let bytes = sip::build_options(&sip::OptionsRequest {
            transport: p.transport,
            host: &p.uri_host,
            port: p.dest.port(),
            local,
            from_domain: &p.from_domain,
            user_agent: &p.user_agent,
            ids: &p.ids,
        })
        .map_err(|e| Verdict::bad(BadReason::Error, e.to_string()))?;
        match (&p.tls, p.transport) {
            (Some(tls), Transport::Tls) => {
                let name = p.sni.clone().ok_or_else(|| {
                    Verdict::bad(BadReason::Tls, "no usable TLS server name".to_owned())
                })?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Verdict::bad(BadReason::Tls, format!("TLS handshake: {e}")))?;
                exchange(stream, &bytes, &p.ids, &metrics).await
            }
            (None, Transport::Tls) => Err(Verdict::bad(
                BadReason::Tls,
                "no TLS client configured".to_owned(),
            )),
            _ => exchange(tcp, &bytes, &p.ids, &metrics).await,
        }
    };
    match tokio::time::timeout(deadline, run).await {
        Err(_) => Verdict::bad(
            BadReason::Timeout,
            format!("no final reply within {deadline:?}"),
        ),
        Ok(Err(v)) => v,
        Ok(Ok(reply)) => judge(&reply, start.elapsed()),
    }
}

/// Sends the request and reads until the final reply to it; provisional replies and
/// unrelated messages are skipped (the latter counted).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    request: &[u8],
    ids: &ProbeIds,
    metrics: &Metrics,
) -> Result<Reply, Verdict> {
    stream
        .write_all(request)
        .await
        .map_err(|e| io_verdict("send", &e))?;
    stream.flush().await.map_err(|e| io_verdict("send", &e))?;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    // Bounded: each pass either consumes bytes or reads more, and the buffer is capped at
    // sip::MAX_MESSAGE; the caller's timeout bounds the time.
    loop {
        match sip::frame(&buf) {
            Err(e) => {
                metrics
                    .probe_unmatched
                    .with_label_values(&[e.label()])
                    .inc();
                return Err(Verdict::bad(BadReason::Error, format!("bad reply: {e}")));
            }
            Ok(Frame::Skip(n)) => {
                buf.drain(..n);
                continue;
            }
            Ok(Frame::Message(n)) => {
                let msg: Vec<u8> = buf.drain(..n).collect();
                match sip::parse_reply(&msg) {
                    Ok(reply) if reply.matches(ids) => {
                        if !reply.is_provisional() {
                            let _ =
                                tokio::time::timeout(Duration::from_millis(100), stream.shutdown())
                                    .await;
                            return Ok(reply);
                        }
                    }
                    Ok(_) => metrics
                        .probe_unmatched
                        .with_label_values(&["no_probe"])
                        .inc(),
                    Err(e) => metrics
                        .probe_unmatched
                        .with_label_values(&[e.label()])
                        .inc(),
                }
                continue;
            }
            Ok(Frame::Incomplete) => {}
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| io_verdict("receive", &e))?;
        if n == 0 {
            return Err(Verdict::bad(
                BadReason::Reset,
                "connection closed before a final reply".to_owned(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}
