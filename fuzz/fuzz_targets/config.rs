//! The config loader (`Config::from_text`: strict YAML, then validation with errors that
//! locate the field). Must never panic; a config that loads must serialize and load back
//! to the same config (what `sipdns check` approves is what runs).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sipdns::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/fuzz/sipdns.yaml");
    let Ok(config) = Config::from_text(path, text) else {
        return;
    };
    let written = yaml_serde::to_string(&config).expect("a loaded config serializes");
    let again = Config::from_text(path, &written)
        .unwrap_or_else(|e| panic!("written config does not load back: {e}\n---\n{written}"));
    assert_eq!(
        config, again,
        "config changed through a write and a load\n---\n{written}"
    );
});
