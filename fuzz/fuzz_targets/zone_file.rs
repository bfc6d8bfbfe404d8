//! An RFC 1035 zone file (`zones::load_zone_file_text`, hickory's parser plus sipdns'
//! checks and its error-line bisection). Must never panic, whatever the text, with or
//! without an origin from the file name.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sipdns::{config::MergeMode, record::DomainName, zones::load_zone_file_text};

fuzz_target!(|data: &[u8]| {
    let Some((&flag, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let origin = if flag & 1 == 0 {
        DomainName::parse("example.net").ok()
    } else {
        None
    };
    let mode = match flag >> 1 & 3 {
        0 => MergeMode::Override,
        1 => MergeMode::Fallback,
        _ => MergeMode::Merge,
    };
    let _ = load_zone_file_text(
        Path::new("/fuzz/zones/example.net.zone"),
        text,
        origin,
        mode,
    );
});
