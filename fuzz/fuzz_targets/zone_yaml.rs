//! A YAML zone document (`zones::load_yaml_text`). Must never panic, and:
//!
//! - **the fast reader never disagrees with the full YAML parser.** `load_yaml_text` reads
//!   the common one-record-a-line shape with its own small reader (`zones/flow.rs`) and
//!   everything else with yaml_serde; the fuzz target loads every input both ways (the
//!   full way: `yaml_serde` + `schema::records_of`, exactly what the loader falls back to)
//!   and requires the same verdict and the same zone (origin, mode, SOA, records);
//! - a zone that loads survives what the API does to it on every write: turned back into a
//!   document, written as YAML and loaded again, it loads with the same records (otherwise
//!   an API edit of that zone would fail with "the zone written would not load back").
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sipdns::{
    record::Rec,
    zones::{Zone, ZoneFormat, edit::doc_of, load_yaml_text, schema},
};

fn sorted(zone: &Zone) -> Vec<Rec> {
    let mut r = zone.records();
    r.sort_by_key(ToString::to_string);
    r
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/zones/fuzz.yaml");
    let loaded = load_yaml_text(path, text);
    // The full parser's verdict, as the loader computes it when the fast reader declines.
    let full = yaml_serde::from_str::<schema::ZoneDoc>(text)
        .ok()
        .and_then(|doc| {
            let (soa, recs) = schema::records_of(&doc).ok()?;
            Some(Zone::new(
                doc.zone.clone(),
                doc.mode,
                soa,
                path.to_path_buf(),
                ZoneFormat::Yaml,
                recs,
            ))
        });
    let zone = match (loaded, full) {
        (Err(_), None) => return,
        (Ok(_), None) => panic!("loaded a zone the full YAML parser rejects:\n{text}"),
        (Err(e), Some(_)) => panic!("rejected a zone the full YAML parser accepts: {e}\n{text}"),
        (Ok(zone), Some(expected)) => {
            assert_eq!(zone.origin, expected.origin, "origin differs\n{text}");
            assert_eq!(zone.mode, expected.mode, "mode differs\n{text}");
            assert_eq!(zone.negative_soa(), expected.negative_soa(), "SOA differs\n{text}");
            assert_eq!(sorted(&zone), sorted(&expected), "records differ\n{text}");
            zone
        }
    };
    let doc = doc_of(&zone);
    let written = yaml_serde::to_string(&doc).expect("a loaded zone serializes");
    let again = load_yaml_text(path, &written)
        .unwrap_or_else(|e| panic!("written zone does not load back: {e}\n---\n{written}"));
    assert_eq!(
        sorted(&zone),
        sorted(&again),
        "records changed on the way through the API's writer"
    );
});
