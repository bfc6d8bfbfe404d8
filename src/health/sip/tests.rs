//! Codec tests on byte strings.

use super::*;
use rand::SeedableRng as _;

fn ids() -> ProbeIds {
    ProbeIds {
        branch: "z9hG4bKabc123".to_owned(),
        call_id: "cid42".to_owned(),
        cseq: 7,
        from_tag: "tag9".to_owned(),
    }
}

fn build(transport: Transport) -> String {
    let ids = ids();
    let bytes = build_options(&OptionsRequest {
        transport,
        host: "sip1.example.org",
        port: 5062,
        local: "192.0.2.1:40000".parse().unwrap(),
        from_domain: "sipdns.invalid",
        user_agent: "sipdns/test",
        ids: &ids,
    })
    .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Header lines of a built request, by (lower-case) name; the request line first.
fn lines(msg: &str) -> (String, Vec<(String, String)>) {
    assert!(
        msg.ends_with("\r\n\r\n"),
        "no empty line at the end: {msg:?}"
    );
    let mut it = msg.trim_end_matches("\r\n").split("\r\n");
    let first = it.next().unwrap().to_owned();
    let headers = it
        .map(|l| {
            let (n, v) = l.split_once(": ").unwrap();
            (n.to_ascii_lowercase(), v.to_owned())
        })
        .collect();
    (first, headers)
}

fn header<'a>(h: &'a [(String, String)], name: &str) -> &'a str {
    let found: Vec<_> = h.iter().filter(|(n, _)| n == name).collect();
    assert_eq!(found.len(), 1, "{name} must appear once in {h:?}");
    &found[0].1
}

#[test]
fn udp_request_follows_rfc3261_field_by_field() {
    let msg = build(Transport::Udp);
    let (first, h) = lines(&msg);
    // §7.1 Request-Line; §11.1 the Request-URI names the target.
    assert_eq!(first, "OPTIONS sip:sip1.example.org:5062 SIP/2.0");
    // §8.1.1.7 Via: transport, sent-by, magic-cookie branch; RFC 3581 rport.
    assert_eq!(
        header(&h, "via"),
        "SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bKabc123;rport"
    );
    // §8.1.1.6
    assert_eq!(header(&h, "max-forwards"), "70");
    // §8.1.1.3 From with tag; §8.1.1.2 To without tag.
    assert_eq!(header(&h, "from"), "<sip:sipdns@sipdns.invalid>;tag=tag9");
    assert_eq!(header(&h, "to"), "<sip:sip1.example.org:5062>");
    assert!(!header(&h, "to").contains("tag="));
    // §8.1.1.4, §8.1.1.5: CSeq method equals the request method.
    assert_eq!(header(&h, "call-id"), "cid42");
    assert_eq!(header(&h, "cseq"), "7 OPTIONS");
    // §11.1 Contact and Accept.
    assert_eq!(header(&h, "contact"), "<sip:sipdns@192.0.2.1:40000>");
    assert_eq!(header(&h, "accept"), "application/sdp");
    assert_eq!(header(&h, "user-agent"), "sipdns/test");
    // §20.14: no body.
    assert_eq!(header(&h, "content-length"), "0");
    assert_eq!(h.len(), 10);
}

#[test]
fn tcp_and_tls_requests_carry_their_transport() {
    let (first, h) = lines(&build(Transport::Tcp));
    assert_eq!(
        first,
        "OPTIONS sip:sip1.example.org:5062;transport=tcp SIP/2.0"
    );
    assert!(header(&h, "via").starts_with("SIP/2.0/TCP 192.0.2.1:40000;branch=z9hG4bK"));
    assert_eq!(
        header(&h, "contact"),
        "<sip:sipdns@192.0.2.1:40000;transport=tcp>"
    );
    let (first, h) = lines(&build(Transport::Tls));
    assert_eq!(first, "OPTIONS sips:sip1.example.org:5062 SIP/2.0");
    assert!(header(&h, "via").starts_with("SIP/2.0/TLS "));
    assert_eq!(header(&h, "from"), "<sips:sipdns@sipdns.invalid>;tag=tag9");
}

#[test]
fn ipv6_literals_are_bracketed() {
    let ids = ids();
    let bytes = build_options(&OptionsRequest {
        transport: Transport::Udp,
        host: "[2001:db8::1]",
        port: 5060,
        local: "[2001:db8::2]:5070".parse().unwrap(),
        from_domain: "sipdns.invalid",
        user_agent: "ua",
        ids: &ids,
    })
    .unwrap();
    let msg = String::from_utf8(bytes).unwrap();
    assert!(
        msg.starts_with("OPTIONS sip:[2001:db8::1]:5060 SIP/2.0\r\n"),
        "{msg}"
    );
    assert!(msg.contains("Via: SIP/2.0/UDP [2001:db8::2]:5070;branch="));
}

#[test]
fn fresh_ids_are_unique_and_carry_the_cookie() {
    let a = ProbeIds::fresh(1);
    let b = ProbeIds::fresh(1);
    assert!(a.branch.starts_with(BRANCH_COOKIE));
    assert!(a.branch.len() >= BRANCH_COOKIE.len() + 16);
    assert_ne!(a.branch, b.branch);
    assert_ne!(a.call_id, b.call_id);
    assert_ne!(a.from_tag, b.from_tag);
}

const OK: &str = "SIP/2.0 200 OK\r\n\
    Via: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bKabc123;rport=40000;received=192.0.2.1\r\n\
    From: <sip:sipdns@sipdns.invalid>;tag=tag9\r\n\
    To: <sip:sip1.example.org:5062>;tag=srv1\r\n\
    Call-ID: cid42\r\n\
    CSeq: 7 OPTIONS\r\n\
    Content-Length: 0\r\n\r\n";

#[test]
fn a_plain_reply_is_read_and_matched() {
    let r = parse_reply(OK.as_bytes()).unwrap();
    assert_eq!(r.code, 200);
    assert_eq!(r.branch, "z9hG4bKabc123");
    assert_eq!(r.call_id, "cid42");
    assert_eq!((r.cseq, r.cseq_method.as_str()), (7, "OPTIONS"));
    assert_eq!(r.retry_after, None);
    assert!(r.matches(&ids()));
    let mut other = ids();
    other.cseq = 8;
    assert!(!r.matches(&other));
    let mut other = ids();
    other.call_id = "x".to_owned();
    assert!(!r.matches(&other));
    let mut other = ids();
    other.branch = "z9hG4bKother".to_owned();
    assert!(!r.matches(&other));
}

#[test]
fn compact_header_forms_are_read() {
    let msg = "SIP/2.0 404 Not Found\r\n\
        v: SIP/2.0/UDP 192.0.2.1:40000;branch=z9hG4bKabc123\r\n\
        f: <sip:sipdns@sipdns.invalid>;tag=tag9\r\n\
        t: <sip:x>;tag=1\r\n\
        i: cid42\r\n\
        CSeq: 7 OPTIONS\r\n\
        l: 0\r\n\r\n";
    let r = parse_reply(msg.as_bytes()).unwrap();
    assert_eq!(r.code, 404);
    assert!(r.matches(&ids()));
}

#[test]
fn folded_headers_are_unfolded() {
    // RFC 3261 §7.3.1: a line starting with whitespace continues the previous one.
    let msg = "SIP/2.0 200 OK\r\n\
        Via: SIP/2.0/UDP 192.0.2.1:40000\r\n \
        ;branch=z9hG4bKabc123\r\n\
        Call-ID:\r\n\tcid42\r\n\
        CSeq: 7\r\n  OPTIONS\r\n\
        Content-Length: 0\r\n\r\n";
    let r = parse_reply(msg.as_bytes()).unwrap();
    assert!(r.matches(&ids()), "{r:?}");
}

#[test]
fn missing_content_length_over_udp_is_accepted() {
    // RFC 3261 §18.3: over UDP the body runs to the end of the datagram.
    let msg = OK.replace("Content-Length: 0\r\n", "");
    let r = parse_reply(msg.as_bytes()).unwrap();
    assert!(r.matches(&ids()));
    let with_body = format!("{}v=0\r\n", msg);
    assert!(parse_reply(with_body.as_bytes()).unwrap().matches(&ids()));
    // A datagram cut right after the last header line (no empty line) still reads.
    let cut = OK.trim_end_matches("\r\n");
    assert!(parse_reply(cut.as_bytes()).unwrap().matches(&ids()));
}

#[test]
fn retry_after_is_read() {
    let msg = OK.replace("200 OK", "503 Service Unavailable").replace(
        "Content-Length",
        "Retry-After: 120 (maintenance);duration=60\r\nContent-Length",
    );
    let r = parse_reply(msg.as_bytes()).unwrap();
    assert_eq!(r.code, 503);
    assert_eq!(r.retry_after, Some(Duration::from_secs(120)));
}

#[test]
fn a_latin1_header_does_not_hide_the_ones_after_it() {
    let mut msg = b"SIP/2.0 200 OK\r\nServer: M\xfcller PBX\r\n".to_vec();
    msg.extend_from_slice(OK.split_once("\r\n").unwrap().1.as_bytes());
    assert!(parse_reply(&msg).unwrap().matches(&ids()));
}

#[test]
fn garbage_and_half_messages_are_errors() {
    let cases: &[&[u8]] = &[
        b"",
        b"\r\n\r\n",
        b"hello",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"SIP/2.0 200 OK\r\n\r\n",
        b"SIP/2.0 abc OK\r\n\r\n",
        b"SIP/2.0 99 Odd\r\n\r\n",
        b"SIP/2.0 700 Odd\r\n\r\n",
        b"SIP/3.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCSeq: 1 OPTIONS\r\n\r\n",
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: x OPTIONS\r\n\r\n",
        b"\xff\xfe\x00\x01\r\n\r\n",
    ];
    for case in cases {
        assert!(parse_reply(case).is_err(), "accepted {:?}", excerpt(case));
    }
    let req = b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/UDP a;branch=z9hG4bK1\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert_eq!(parse_reply(req), Err(CodecError::NotAReply));
    assert_eq!(
        parse_reply(&vec![b'a'; MAX_MESSAGE + 1]),
        Err(CodecError::TooLarge)
    );
}

#[test]
fn random_bytes_never_panic() {
    // A small fuzz: mutations of a valid reply and pure noise. Run under the test
    // harness, a panic anywhere in rsipstack or here fails the test.
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let base = OK.as_bytes();
    for i in 0..20_000 {
        let buf: Vec<u8> = if i % 2 == 0 {
            let len = rng.random_range(0..300);
            (0..len).map(|_| rng.random()).collect()
        } else {
            let mut buf = base.to_vec();
            for _ in 0..rng.random_range(1..10) {
                if buf.is_empty() {
                    break;
                }
                let pos = rng.random_range(0..buf.len());
                match rng.random_range(0..3) {
                    0 => buf[pos] = rng.random(),
                    1 => {
                        buf.remove(pos);
                    }
                    _ => buf.insert(pos, rng.random()),
                }
            }
            buf
        };
        let _ = parse_reply(&buf);
        let _ = frame(&buf);
    }
}

#[test]
fn stream_framing_uses_content_length() {
    assert_eq!(frame(b"\r\n\r\nSIP"), Ok(Frame::Skip(4)));
    assert_eq!(
        frame(b"SIP/2.0 200 OK\r\nCall-ID: x\r\n"),
        Ok(Frame::Incomplete)
    );
    let msg = b"SIP/2.0 200 OK\r\nl: 3\r\n\r\nabcSIP/2.0";
    assert_eq!(frame(msg), Ok(Frame::Message(msg.len() - 7)));
    assert_eq!(
        frame(b"SIP/2.0 200 OK\r\nContent-Length: 10\r\n\r\nabc"),
        Ok(Frame::Incomplete)
    );
    assert_eq!(frame(OK.as_bytes()), Ok(Frame::Message(OK.len())));
    assert!(frame(b"SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n").is_err());
    assert_eq!(
        frame(b"SIP/2.0 200 OK\r\nContent-Length: 99999999\r\n\r\n"),
        Err(CodecError::TooLarge)
    );
}

/// Regression (fuzz `sip_reply`, crash-87774d02): a top Via with an empty `branch=`
/// was accepted as a reply with an empty branch; it has no branch to be matched on.
#[test]
fn an_empty_branch_is_no_branch() {
    let crash = b"SIP/2.0 404 Not FouSIP/2.0 671 Ser: [::1]:5070;bnd\r\nVia: SIP/2.0/UDP h;branch=\n\rranch=z4hG4bKq\r\ni:zc\r\nCSeq: 1 OPTIONS\r\nRetr\ny-After:\x07\x07";
    assert_eq!(
        parse_reply(crash),
        Err(CodecError::MissingHeader("Via branch"))
    );
    let plain =
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert_eq!(
        parse_reply(plain),
        Err(CodecError::MissingHeader("Via branch"))
    );
    let spaced = b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch= ;rport\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n";
    assert!(parse_reply(spaced).is_err());
}
