//! How stream probes travel: one TCP or TLS connection per probe, and the TLS client.
//! (UDP probes are transactions of their own: [`super::udp`].)
//!
//! ICMP errors reach a TCP connection only if they quote its own 4-tuple and a sequence
//! number in its window (the kernel checks both), so errors forged for other connections
//! or ports never end a stream probe.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use rustls::{
    ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::CryptoProvider,
    pki_types::{CertificateDer, ServerName, UnixTime},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpStream,
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
