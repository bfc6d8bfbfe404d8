//! A YAML zone document (`zones::load_yaml_text`). Must never panic; and a zone that loads
//! must survive what the API does to it on every write: turned back into a document,
//! written as YAML and loaded again, it must load, with the same records (otherwise an API
//! edit of that zone would fail with "the zone written would not load back").
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sipdns::{api::edit::doc_of, zones::load_yaml_text};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/zones/fuzz.yaml");
    let Ok(zone) = load_yaml_text(path, text) else {
        return;
    };
    let doc = doc_of(&zone);
    let written = yaml_serde::to_string(&doc).expect("a loaded zone serializes");
    let again = load_yaml_text(path, &written)
        .unwrap_or_else(|e| panic!("written zone does not load back: {e}\n---\n{written}"));
    let mut a = zone.records();
    let mut b = again.records();
    a.sort_by_key(ToString::to_string);
    b.sort_by_key(ToString::to_string);
    assert_eq!(a, b, "records changed on the way through the API's writer");
});
