#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn secrets_from_key_files() {
    assert_eq!(secret_of("c2VjcmV0\n").as_deref(), Some("c2VjcmV0"));
    assert_eq!(
        secret_of("key \"k\" {\n algorithm hmac-sha256;\n secret \"c2VjcmV0\";\n};\n").as_deref(),
        Some("c2VjcmV0")
    );
    assert_eq!(
        secret_of("key:\n  - id: k\n    algorithm: hmac-sha256\n    secret: c2VjcmV0\n").as_deref(),
        Some("c2VjcmV0")
    );
    assert_eq!(secret_of("two words\n"), None);
}

/// A key named `name` with `secret`, loaded from a key file as sipdns loads it.
fn key(name: &str, secret: &[u8]) -> Key {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tsig.key");
    std::fs::write(&file, data_encoding::BASE64.encode(secret)).unwrap();
    Key::load(&TsigConfig {
        name: crate::record::DomainName::parse(name).unwrap(),
        algorithm: TsigAlgorithmName::HmacSha256,
        secret_file: file,
    })
    .unwrap()
}

fn parsed(bytes: &[u8]) -> Message {
    Message::from_vec(bytes).unwrap()
}

/// A NOTIFY for example.org signed by `key` at `time`, and the verifier of its answer.
fn signed_notify(key: &Key, time: u64) -> (Vec<u8>, hickory_proto::rr::TSigVerifier) {
    use hickory_proto::{
        op::{MessageType, OpCode, Query},
        rr::{Name, RecordType},
    };
    let mut m = Message::new(0x1234, MessageType::Query, OpCode::Notify);
    m.add_query(Query::query(
        Name::from_ascii("example.org.").unwrap(),
        RecordType::SOA,
    ));
    let verifier = m.finalize(key.signer(), time).unwrap().unwrap();
    (m.to_vec().unwrap(), verifier)
}

/// The answer to `request` signed as `verdict` says, and whether the verdict was valid.
fn answer(request: &[u8], verdict: Verdict) -> (bool, Vec<u8>) {
    let req = Message::from_vec(request).unwrap();
    let mut resp = Message::new(
        req.metadata.id,
        hickory_proto::op::MessageType::Response,
        hickory_proto::op::OpCode::Notify,
    );
    resp.queries = req.queries;
    let (ok, ctx) = match verdict {
        Verdict::Valid(ctx) => (true, ctx),
        Verdict::Bad { answer, .. } => (false, answer),
    };
    (ok, sign(resp, ctx).unwrap())
}

#[test]
fn a_notify_signed_with_the_key_gets_an_answer_signed_over_its_mac() {
    let k = key("office-key", &[1; 32]);
    let now = unix_now();
    let (req, mut verifier) = signed_notify(&k, now);
    let verdict = k.check_request(&req, &parsed(&req), now + 10);
    let (valid, bytes) = answer(&req, verdict);
    assert!(valid);
    // The requester's own verifier (chained over the request's MAC) accepts the answer.
    verifier.verify(&bytes).unwrap();
}

#[test]
fn a_notify_signed_with_another_secret_is_badsig_and_its_answer_unsigned() {
    let ours = key("office-key", &[1; 32]);
    let theirs = key("office-key", &[2; 32]);
    let now = unix_now();
    let (req, mut verifier) = signed_notify(&theirs, now);
    let verdict = ours.check_request(&req, &parsed(&req), now);
    assert!(matches!(verdict, Verdict::Bad { reason, .. } if reason.starts_with("BADSIG")));
    let (valid, bytes) = answer(&req, verdict);
    assert!(!valid);
    let tsig = Message::from_vec(&bytes).unwrap().signature.unwrap();
    assert_eq!(tsig.data.error, Some(TsigError::BadSig));
    assert!(tsig.data.mac.is_empty(), "BADSIG answers are unsigned");
    assert!(verifier.verify(&bytes).is_err());
}

#[test]
fn a_notify_signed_with_another_key_name_is_badkey() {
    let ours = key("office-key", &[1; 32]);
    let theirs = key("other-key", &[1; 32]);
    let now = unix_now();
    let (req, _) = signed_notify(&theirs, now);
    let verdict = ours.check_request(&req, &parsed(&req), now);
    assert!(matches!(verdict, Verdict::Bad { reason, .. } if reason.starts_with("BADKEY")));
    let (_, bytes) = answer(&req, verdict);
    let tsig = Message::from_vec(&bytes).unwrap().signature.unwrap();
    assert_eq!(tsig.data.error, Some(TsigError::BadKey));
    assert_eq!(tsig.name.to_ascii(), "other-key.");
}

#[test]
fn a_notify_signed_outside_the_fudge_is_badtime_with_a_signed_answer() {
    let k = key("office-key", &[1; 32]);
    let now = unix_now();
    let (req, _) = signed_notify(&k, now - 301);
    let verdict = k.check_request(&req, &parsed(&req), now);
    assert!(matches!(verdict, Verdict::Bad { reason, .. } if reason.starts_with("BADTIME")));
    assert!(matches!(
        k.check_request(&req, &parsed(&req), now - 1),
        Verdict::Valid(_)
    ));
    let (_, bytes) = answer(&req, verdict);
    let tsig = Message::from_vec(&bytes).unwrap().signature.unwrap();
    assert_eq!(tsig.data.error, Some(TsigError::BadTime));
    assert!(!tsig.data.mac.is_empty(), "BADTIME answers are signed");
}
