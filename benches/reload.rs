//! How long a reload's parts take: `cargo bench --bench reload -- CONFIG [N]`.
//!
//! Times, N times each, what a reload does off to the side before the swap: reading and
//! validating the config and every zone (`state::load`), the same with the config's parse
//! reused (a reload after an edit of a zone file), the YAML zone parse alone, and
//! dropping a loaded state (which happens on some thread after every swap). Used with the
//! 100,000-record config that `bench/gen.py` writes (`target/bench/big/config.yaml`).

#![allow(
    missing_docs,
    clippy::print_stdout,
    clippy::unwrap_used,
    clippy::expect_used
)]

use std::{path::PathBuf, time::Instant};

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let path = PathBuf::from(
        args.first()
            .cloned()
            .unwrap_or_else(|| "target/bench/big/config.yaml".into()),
    );
    if args.is_empty() && !path.exists() {
        // `cargo test --all-targets` runs benches once with no arguments: without the
        // generated data there is nothing to time, and that is not a failure.
        println!(
            "reload bench: {} not found; generate it with bench/gen.py, then run \
             cargo bench --bench reload -- CONFIG [N]",
            path.display()
        );
        return;
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(5);
    let mut load = Vec::new();
    let mut drop_t = Vec::new();
    for _ in 0..n {
        let t = Instant::now();
        let loaded = sipdns::state::load(&path).expect("config loads");
        load.push(t.elapsed().as_secs_f64() * 1e3);
        let t = Instant::now();
        drop(loaded);
        drop_t.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let (config, zones) = sipdns::state::load(&path).expect("config loads");
    let mut yaml = Vec::new();
    for z in zones.zones() {
        if z.len() < 1000 {
            continue;
        }
        let text = std::fs::read_to_string(&z.file).expect("zone file");
        for _ in 0..n {
            let t = Instant::now();
            let zone = sipdns::zones::load_yaml_text(&z.file, &text).expect("zone parses");
            yaml.push(t.elapsed().as_secs_f64() * 1e3);
            drop(zone);
        }
    }
    // What a reload after an edit of the zones (not of config.yaml) does: the config's
    // parse is reused, every zone file is read and hashed, and the zones are parsed again
    // (no previous store, so even unchanged ones: the worst case).
    let text = std::fs::read_to_string(&path).expect("config file");
    // As in the server, the state in force stays alive while the next one is built.
    let mut zone_reload = Vec::new();
    let mut in_force = sipdns::state::load(&path).expect("config loads");
    for _ in 0..n {
        let t = Instant::now();
        let loaded = sipdns::state::load_text_reusing(&path, &text, Some((&text, &config)), None)
            .expect("config loads");
        zone_reload.push(t.elapsed().as_secs_f64() * 1e3);
        in_force = loaded;
    }
    drop(in_force);
    let med = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    println!(
        "{}: {} static records, {} SIP domains",
        path.display(),
        zones.record_count(),
        config.sip.domains.len()
    );
    println!(
        "state::load (config + zones) median {:8.1} ms",
        med(&mut load)
    );
    println!(
        "reload after a zone edit     median {:8.1} ms",
        med(&mut zone_reload)
    );
    println!(
        "largest YAML zone parse      median {:8.1} ms",
        med(&mut yaml)
    );
    println!(
        "dropping the loaded state    median {:8.1} ms",
        med(&mut drop_t)
    );
}
