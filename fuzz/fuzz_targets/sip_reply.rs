//! Bytes on the prober's socket: the SIP reply parser (`health::sip::parse_reply`) and the
//! stream framer (`health::sip::frame`). Neither may panic; the framer's lengths must lie
//! inside the buffer and always make progress; a parsed reply has a code in 100..=699 and
//! a non-empty branch and Call-ID (what it is matched on).
#![no_main]

use libfuzzer_sys::fuzz_target;
use sipdns::health::sip::{self, Frame};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = sip::parse_reply(data) {
        assert!((100..=699).contains(&r.code));
        assert!(!r.branch.is_empty());
        assert!(!r.call_id.is_empty());
    }
    match sip::frame(data) {
        Ok(Frame::Skip(n)) => assert!(n > 0 && n <= data.len()),
        Ok(Frame::Message(n)) => {
            assert!(n > 0 && n <= data.len());
            let _ = sip::parse_reply(&data[..n]);
        }
        Ok(Frame::Incomplete) | Err(_) => {}
    }
    let _ = sip::excerpt(data);
});
