//! The SIP OPTIONS codec, pure: builds the probe request and reads the reply, on bytes.
//!
//! Building and parsing go through `rsipstack::sip` (pinned in `Cargo.toml`); this module
//! adds what a health prober needs on top of that general-purpose parser and nothing else:
//!
//! - the request is assembled field by field as RFC 3261 §8.1.1 and §11 ask of an OPTIONS
//!   request sent outside a dialog (Request-URI, Via with a `z9hG4bK` branch and `rport`
//!   (RFC 3581), Max-Forwards 70, From with a tag, To, Call-ID, CSeq, Contact, Accept,
//!   User-Agent, Content-Length 0);
//! - a reply is accepted only with a SIP/2.0 status line, a code in 100..=699, a top Via
//!   with a branch, a Call-ID and a CSeq with a number and method, because those three are
//!   what [`Reply`] is matched on (RFC 3261 §17.1.3);
//! - bytes that are not UTF-8 inside a header are replaced before parsing (rsipstack would
//!   otherwise silently drop every header after such a line, e.g. a Latin-1 `Server:`);
//! - stream framing for TCP/TLS ([`frame`]) follows RFC 3261 §18.3 / §7.5: leading CRLF
//!   keep-alives are skipped and the body length comes from `Content-Length` (or `l`);
//! - `Retry-After` (RFC 3261 §20.33) is read from its leading delta-seconds.
//!
//! Nothing here panics on any input: every malformed reply is a [`CodecError`].

use std::{fmt::Write as _, net::SocketAddr, time::Duration};

use rand::RngExt as _;
use rsipstack::sip::{
    Header, Headers, Method, Param, Request, SipMessage, Version,
    headers::make_header,
    parse_uri,
    prelude::*,
    uri::{OtherParam, OtherParamValue},
};

use crate::target::Transport;

/// Magic cookie every RFC 3261 branch starts with (§8.1.1.7).
pub const BRANCH_COOKIE: &str = "z9hG4bK";

/// Largest SIP message the prober accepts (a reply to OPTIONS is small; this bounds the
/// stream buffer of a TCP/TLS probe).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// Why bytes are not a usable reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The SIP parser rejected the message.
    #[error("malformed SIP message: {0}")]
    Malformed(String),
    /// A request arrived where a reply was expected.
    #[error("a SIP request, not a reply")]
    NotAReply,
    /// The status line is not `SIP/2.0 NNN` with a code in 100..=699.
    #[error("bad status line: {0}")]
    BadStatus(String),
    /// A header needed to match the reply is missing or unreadable.
    #[error("missing or bad {0} header")]
    MissingHeader(&'static str),
    /// The Request-URI could not be built from the target.
    #[error("bad Request-URI {0:?}: {1}")]
    BadUri(String, String),
    /// A message larger than [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
}

impl CodecError {
    /// A bounded label for metrics (`probe_unmatched{reason}`).
    pub fn label(&self) -> &'static str {
        match self {
            Self::Malformed(_) | Self::BadStatus(_) | Self::BadUri(..) | Self::TooLarge => {
                "malformed"
            }
            Self::NotAReply => "request",
            Self::MissingHeader(_) => "missing_header",
        }
    }
}

/// The identifiers of one probe: what a reply must echo to be matched to it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProbeIds {
    /// The Via branch, starting with [`BRANCH_COOKIE`].
    pub branch: String,
    /// The Call-ID.
    pub call_id: String,
    /// The CSeq number (the method is always OPTIONS).
    pub cseq: u32,
    /// The From tag.
    pub from_tag: String,
}

fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())]))
        .collect()
}

impl ProbeIds {
    /// Fresh random identifiers: a 96-bit-plus branch (RFC 3261 §8.1.1.7 asks for one unique
    /// across space and time), Call-ID and tag, and the given CSeq number.
    pub fn fresh(cseq: u32) -> Self {
        Self {
            branch: format!("{BRANCH_COOKIE}{}", random_token(22)),
            call_id: random_token(24),
            cseq,
            from_tag: random_token(10),
        }
    }
}

/// Everything an OPTIONS request is built from.
#[derive(Debug, Clone)]
pub struct OptionsRequest<'a> {
    /// Transport the request is sent over (Via, Request-URI scheme and `transport` param).
    pub transport: Transport,
    /// Host of the Request-URI and To: the SRV target name without its trailing dot, or an
    /// IP literal (IPv6 in brackets).
    pub host: &'a str,
    /// Port of the Request-URI.
    pub port: u16,
    /// The local address the request leaves from (Via sent-by and Contact).
    pub local: SocketAddr,
    /// Host part of the From URI.
    pub from_domain: &'a str,
    /// User-Agent header value.
    pub user_agent: &'a str,
    /// Branch, Call-ID, CSeq and From tag.
    pub ids: &'a ProbeIds,
}

/// `host:port` with IPv6 literals bracketed.
fn host_port(addr: SocketAddr) -> String {
    match addr {
        SocketAddr::V4(a) => format!("{}:{}", a.ip(), a.port()),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    }
}

/// The Via transport token (RFC 3261 §18.2.1, §26.2: TLS over TCP is `TLS`).
fn via_transport(t: Transport) -> &'static str {
    match t {
        Transport::Udp => "UDP",
        Transport::Tcp => "TCP",
        Transport::Tls => "TLS",
    }
}

/// The Request-URI for a target (RFC 3261 §19.1; RFC 3263 §4.1: `sips:` for TLS, and the
/// `transport` parameter when it is not the scheme's default).
pub fn request_uri(transport: Transport, host: &str, port: u16) -> String {
    match transport {
        Transport::Udp => format!("sip:{host}:{port}"),
        Transport::Tcp => format!("sip:{host}:{port};transport=tcp"),
        Transport::Tls => format!("sips:{host}:{port}"),
    }
}

/// Builds the wire bytes of an OPTIONS probe (RFC 3261 §11.1, with the mandatory header set
/// of §8.1.1).
pub fn build_options(req: &OptionsRequest<'_>) -> Result<Vec<u8>, CodecError> {
    let ruri = request_uri(req.transport, req.host, req.port);
    // rsipstack writes a parsed `transport` parameter in upper case; RFC 3261 writes it in
    // lower case (§19.1.1 examples), so the parameter is added as given.
    let (bare, transport_param) = match ruri.split_once(";transport=") {
        Some((bare, t)) => (bare, Some(t)),
        None => (ruri.as_str(), None),
    };
    let mut uri = parse_uri(bare).map_err(|e| CodecError::BadUri(ruri.clone(), e.to_string()))?;
    if let Some(t) = transport_param {
        uri.params.push(Param::Other(
            OtherParam::new("transport"),
            Some(OtherParamValue::new(t)),
        ));
    }
    let local = host_port(req.local);
    let ids = req.ids;
    let scheme = if req.transport == Transport::Tls {
        "sips"
    } else {
        "sip"
    };
    let contact_params = match req.transport {
        Transport::Udp | Transport::Tls => "",
        Transport::Tcp => ";transport=tcp",
    };
    let mut headers = Headers::default();
    let mut push = |name: &str, value: String| headers.push(make_header(name, value));
    // §8.1.1.7: the branch identifies the transaction; `rport` (RFC 3581) asks the server
    // to answer to the address and port the request came from, so the probe's socket gets
    // the answer behind any NAT.
    push(
        "Via",
        format!(
            "SIP/2.0/{} {local};branch={};rport",
            via_transport(req.transport),
            ids.branch
        ),
    );
    // §8.1.1.6: Max-Forwards 70.
    push("Max-Forwards", "70".to_owned());
    // §8.1.1.3: From with a tag; §8.1.1.2: To without one (outside a dialog).
    push(
        "From",
        format!("<{scheme}:sipdns@{}>;tag={}", req.from_domain, ids.from_tag),
    );
    push(
        "To",
        format!("<{}>", request_uri(req.transport, req.host, req.port)),
    );
    // §8.1.1.4, §8.1.1.5.
    push("Call-ID", ids.call_id.clone());
    push("CSeq", format!("{} OPTIONS", ids.cseq));
    // §11.1: Contact MAY be present; §8.1.1.8 for where it points.
    push(
        "Contact",
        format!("<{scheme}:sipdns@{local}{contact_params}>"),
    );
    // §11.1: an OPTIONS request SHOULD carry Accept.
    push("Accept", "application/sdp".to_owned());
    push("User-Agent", req.user_agent.to_owned());
    push("Content-Length", "0".to_owned());
    let request = Request {
        method: Method::Options,
        uri,
        version: Version::V2,
        headers,
        body: Vec::new(),
    };
    Ok(request.to_bytes())
}

/// What the prober reads from a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Status code, 100..=699.
    pub code: u16,
    /// Branch of the top Via.
    pub branch: String,
    /// Call-ID.
    pub call_id: String,
    /// CSeq number.
    pub cseq: u32,
    /// CSeq method, upper-case.
    pub cseq_method: String,
    /// Retry-After, when present and readable (RFC 3261 §20.33: delta-seconds, optionally
    /// followed by a comment and parameters).
    pub retry_after: Option<Duration>,
}

impl Reply {
    /// True if this reply answers the probe with these identifiers (RFC 3261 §17.1.3: the
    /// top Via branch and the CSeq method; the Call-ID and CSeq number as well, so a reply
    /// to an older probe can never be taken for the current one).
    pub fn matches(&self, ids: &ProbeIds) -> bool {
        self.branch == ids.branch
            && self.call_id == ids.call_id
            && self.cseq == ids.cseq
            && self.cseq_method.eq_ignore_ascii_case("OPTIONS")
    }

    /// True for 1xx.
    pub fn is_provisional(&self) -> bool {
        self.code < 200
    }
}

/// Replaces bytes that are not UTF-8 in the header section, leaving the body alone.
fn sanitize(bytes: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let head_end = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(bytes.len(), |p| p + 4);
    let head = &bytes[..head_end];
    if std::str::from_utf8(head).is_ok() {
        return std::borrow::Cow::Borrowed(bytes);
    }
    let mut fixed = String::from_utf8_lossy(head).into_owned().into_bytes();
    fixed.extend_from_slice(&bytes[head_end..]);
    std::borrow::Cow::Owned(fixed)
}

/// Leading delta-seconds of a Retry-After value (`120`, `18000;duration=3600`,
/// `120 (I'm in a meeting)`).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let digits: String = value
        .trim()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse::<u64>().ok().map(Duration::from_secs)
}

/// Parses one SIP reply. Over UDP the datagram is the message; a missing Content-Length
/// then means the body runs to the end of the datagram (RFC 3261 §18.3), which does not
/// matter here as the body is not used.
pub fn parse_reply(bytes: &[u8]) -> Result<Reply, CodecError> {
    if bytes.len() > MAX_MESSAGE {
        return Err(CodecError::TooLarge);
    }
    // RFC 3261 §7.5: CRLFs before the start line are ignored.
    let start = bytes
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(bytes.len());
    let bytes = &bytes[start..];
    let mut owned;
    let mut bytes: &[u8] = bytes;
    // A datagram may end right after the headers without the empty line's final CRLF
    // pair; rsipstack needs the separator.
    if !bytes.windows(4).any(|w| w == b"\r\n\r\n") {
        owned = bytes.to_vec();
        if owned.ends_with(b"\r\n") {
            owned.extend_from_slice(b"\r\n");
        } else {
            owned.extend_from_slice(b"\r\n\r\n");
        }
        bytes = &owned;
    }
    let clean = sanitize(bytes);
    let message =
        SipMessage::try_from(clean.as_ref()).map_err(|e| CodecError::Malformed(e.to_string()))?;
    let response = match message {
        SipMessage::Response(r) => r,
        SipMessage::Request(_) => return Err(CodecError::NotAReply),
    };
    // rsipstack accepts any SIP/x.y version and any u16 code; a probe reply must be
    // SIP/2.0 (RFC 3261 §7.1) with a three-digit code 100..=699 (§7.2, §21).
    if response.version != Version::V2 {
        return Err(CodecError::BadStatus(format!(
            "version {}",
            response.version
        )));
    }
    let code = response.status_code.code();
    if !(100..=699).contains(&code) {
        return Err(CodecError::BadStatus(format!("code {code}")));
    }
    let via = response
        .top_via_header()
        .map_err(|_| CodecError::MissingHeader("Via"))?;
    let via = via.typed().map_err(|_| CodecError::MissingHeader("Via"))?;
    // An empty `branch=` is no branch (found by fuzzing: rsipstack reads it as "").
    let branch = via
        .branch()
        .map(ToString::to_string)
        .filter(|b| !b.trim().is_empty())
        .ok_or(CodecError::MissingHeader("Via branch"))?;
    let call_id = response
        .call_id_header()
        .map_err(|_| CodecError::MissingHeader("Call-ID"))?
        .value()
        .trim()
        .to_owned();
    if call_id.is_empty() {
        return Err(CodecError::MissingHeader("Call-ID"));
    }
    let cseq_header = response
        .cseq_header()
        .map_err(|_| CodecError::MissingHeader("CSeq"))?;
    let cseq = cseq_header
        .seq()
        .map_err(|_| CodecError::MissingHeader("CSeq"))?;
    let cseq_method = cseq_header
        .method()
        .map_err(|_| CodecError::MissingHeader("CSeq"))?
        .to_string()
        .to_ascii_uppercase();
    let retry_after = response.headers.iter().find_map(|h| match h {
        Header::RetryAfter(r) => parse_retry_after(r.value()),
        _ => None,
    });
    Ok(Reply {
        code,
        branch,
        call_id,
        cseq,
        cseq_method,
        retry_after,
    })
}

/// What [`frame`] found at the start of a stream buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame {
    /// Not a whole message yet; read more.
    Incomplete,
    /// Skip this many bytes of CRLF keep-alives (RFC 5626 §3.5.1 / RFC 3261 §7.5).
    Skip(usize),
    /// One whole message of this many bytes.
    Message(usize),
}

/// Finds the first whole message in a stream buffer. Over a stream, Content-Length is
/// mandatory (RFC 3261 §18.3, §20.14); a message without it is taken to have no body.
pub fn frame(buf: &[u8]) -> Result<Frame, CodecError> {
    let lead = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    if lead > 0 {
        return Ok(Frame::Skip(lead));
    }
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_MESSAGE {
            return Err(CodecError::TooLarge);
        }
        return Ok(Frame::Incomplete);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let mut body_len = 0usize;
    for line in head.split("\r\n").skip(1) {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
            body_len = value
                .trim()
                .parse()
                .map_err(|_| CodecError::MissingHeader("Content-Length"))?;
        }
    }
    let total = head_len
        .checked_add(4)
        .and_then(|n| n.checked_add(body_len))
        .ok_or(CodecError::TooLarge)?;
    if total > MAX_MESSAGE {
        return Err(CodecError::TooLarge);
    }
    if buf.len() < total {
        return Ok(Frame::Incomplete);
    }
    Ok(Frame::Message(total))
}

/// A short printable excerpt of a message, for debug logs.
pub fn excerpt(bytes: &[u8]) -> String {
    let mut s = String::new();
    for b in bytes.iter().take(80) {
        match b {
            b'\r' => s.push_str("\\r"),
            b'\n' => s.push_str("\\n"),
            0x20..=0x7e => s.push(char::from(*b)),
            _ => {
                let _ = write!(s, "\\x{b:02x}");
            }
        }
    }
    s
}

#[cfg(test)]
mod tests;
