//! Reading `zones/`: YAML zone documents and RFC 1035 zone files (through hickory's parser).
//! Every error names the file and the line.

use std::{
    collections::{BTreeMap, HashMap},
    hash::{Hash, Hasher},
    path::{Path, PathBuf},
    sync::Arc,
};

use hickory_proto::serialize::txt::Parser;

use super::{
    Zone, ZoneError, ZoneFormat, ZoneStore,
    schema::{self, ZoneDoc},
    zone_file,
};
use crate::{
    config::{FileError, MergeMode, yaml},
    hickory,
    record::{DomainName, RType, Rec},
};

/// Loads every `*.yaml` / `*.yml` / `*.zone` file in `dir` into a store. `modes` gives the
/// merge mode of `.zone` files by origin. All problems are collected, not just the first.
pub fn load_dir(
    dir: &Path,
    modes: &BTreeMap<DomainName, MergeMode>,
) -> Result<ZoneStore, ZoneError> {
    load_dir_reusing(dir, modes, None)
}

/// [`load_dir`] for a reload: a file whose text (and merge mode) is what `previous` was
/// read from is not parsed again; its zone is shared with `previous`. A reload of a config
/// with 100,000 static records in unchanged files then costs a read and a hash of them.
pub fn load_dir_reusing(
    dir: &Path,
    modes: &BTreeMap<DomainName, MergeMode>,
    previous: Option<&ZoneStore>,
) -> Result<ZoneStore, ZoneError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| FileError::whole(dir, format!("cannot read the zones directory: {e}")))?;
    let mut paths: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let hidden = p
                .file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'));
            let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("");
            !hidden && p.is_file() && matches!(ext, "yaml" | "yml" | "zone")
        })
        .collect();
    paths.sort();
    let mut zones: Vec<(Arc<Zone>, u64)> = Vec::new();
    let mut errors = Vec::new();
    let mut origins: HashMap<DomainName, PathBuf> = HashMap::new();
    for path in paths {
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
                errors.push(FileError::whole(&path, format!("cannot read: {e}")));
                continue;
            }
        };
        let zone_file = path.extension().and_then(|e| e.to_str()) == Some("zone");
        let origin_hint = zone_file.then(|| origin_from_file_name(&path)).flatten();
        let mode = origin_hint
            .as_ref()
            .and_then(|o| modes.get(o).copied())
            .unwrap_or_default();
        let digest = source_digest(&text, zone_file.then_some(mode));
        let loaded = match previous.and_then(|p| p.unchanged(&path, digest)) {
            Some(zone) => Ok(zone),
            None if zone_file => load_zone_file_text(&path, &text, origin_hint, mode).map(Arc::new),
            None => load_yaml_text(&path, &text).map(Arc::new),
        };
        match loaded {
            Ok(zone) => {
                if let Some(prev) = origins.get(&zone.origin) {
                    errors.push(FileError::whole(
                        &path,
                        format!(
                            "zone {} is already defined in {}",
                            zone.origin,
                            prev.display()
                        ),
                    ));
                    continue;
                }
                origins.insert(zone.origin.clone(), path.clone());
                zones.push((zone, digest));
            }
            Err(e) => errors.extend(e.errors),
        }
    }
    for origin in modes.keys() {
        if !origins.contains_key(origin) {
            errors.push(FileError::whole(
                dir,
                format!("zones.modes names {origin}, but no zone file defines it"),
            ));
        }
    }
    if errors.is_empty() {
        Ok(ZoneStore::from_files(zones))
    } else {
        Err(ZoneError { errors })
    }
}

/// What a zone file's source is known by: its text and, for an RFC 1035 file, its merge
/// mode (from the config). Stable within the process, which is all it is compared in.
pub(super) fn source_digest(text: &str, zone_file_mode: Option<MergeMode>) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    (text, zone_file_mode).hash(&mut h);
    h.finish()
}

/// Parses and checks a YAML zone document as if read from `path`.
pub fn load_yaml_text(path: &Path, text: &str) -> Result<Zone, ZoneError> {
    // The common one-record-a-line shape is read fast; anything else (and every error)
    // goes through the full YAML parser.
    if let Some((doc, recs)) = super::flow::parse_records(text)
        && let Ok(checked) = schema::finish(&doc, recs, Vec::new())
    {
        return Ok(yaml_zone(path, &doc, checked));
    }
    let doc: ZoneDoc = yaml::from_str(path, text)?;
    zone_from_doc(path, text, doc)
}

/// Builds a zone from a document; field errors are located in `text`.
pub(crate) fn zone_from_doc(path: &Path, text: &str, doc: ZoneDoc) -> Result<Zone, ZoneError> {
    match schema::records_of(&doc) {
        Ok(checked) => Ok(yaml_zone(path, &doc, checked)),
        Err(errs) => Err(ZoneError {
            errors: errs
                .into_iter()
                .map(|e| FileError::at_field(path, text, &e.field, e.reason))
                .collect(),
        }),
    }
}

/// The zone of a checked YAML document: its SOA and records.
fn yaml_zone(path: &Path, doc: &ZoneDoc, (soa, recs): (Rec, Vec<Rec>)) -> Zone {
    Zone::new(
        doc.zone.clone(),
        doc.mode,
        soa,
        path.to_path_buf(),
        ZoneFormat::Yaml,
        recs,
    )
}

/// `example.org.zone` -> `example.org.`
fn origin_from_file_name(path: &Path) -> Option<DomainName> {
    let stem = path.file_stem()?.to_str()?;
    DomainName::parse(stem).ok()
}

/// Parses an RFC 1035 zone file. `origin` is the zone name when the file has no `$ORIGIN`.
pub fn load_zone_file_text(
    path: &Path,
    text: &str,
    origin: Option<DomainName>,
    mode: MergeMode,
) -> Result<Zone, ZoneError> {
    let hickory_origin = match &origin {
        Some(o) => {
            Some(hickory::name_to_hickory(o).map_err(|e| FileError::whole(path, e.to_string()))?)
        }
        None => None,
    };
    let parsed = Parser::new(text, Some(path.to_path_buf()), hickory_origin.clone()).parse();
    let (zone_name, sets) = match parsed {
        Ok(ok) => ok,
        Err(e) => {
            return Err(ZoneError {
                errors: zone_file::errors(path, text, hickory_origin.as_ref(), &e.to_string()),
            });
        }
    };
    let origin = hickory::name_from_hickory(&zone_name);
    let recs = sets
        .values()
        .flat_map(|set| set.records_without_rrsigs())
        .filter_map(hickory::rec_from_hickory);
    zone_from_records(path, Some(text), origin, mode, ZoneFormat::ZoneFile, recs)
}

/// The checks every zone's records pass, whether read from a zone file or received by a
/// zone transfer: every owner inside `origin`, one SOA at the apex (RFC 1035 §5.2); other
/// SOA records are dropped. `text` (the file's) locates an error by line.
pub(crate) fn zone_from_records(
    path: &Path,
    text: Option<&str>,
    origin: DomainName,
    mode: MergeMode,
    format: ZoneFormat,
    records: impl IntoIterator<Item = Rec>,
) -> Result<Zone, ZoneError> {
    let mut soa = None;
    let mut recs = Vec::new();
    let mut outside = Vec::new();
    for rec in records {
        if !rec.name.is_in(&origin) {
            outside.push(rec.name.clone());
            continue;
        }
        if rec.rtype() == RType::SOA {
            if rec.name == origin {
                soa = Some(rec);
            }
            continue;
        }
        recs.push(rec);
    }
    if let Some(name) = outside.first() {
        let line = text.and_then(|t| find_line(t, name));
        return Err(FileError {
            file: path.display().to_string(),
            line,
            column: None,
            field: None,
            reason: format!("{name} is outside the zone {origin}"),
        }
        .into());
    }
    let soa: Rec = soa.ok_or_else(|| {
        FileError::whole(
            path,
            format!("zone {origin} has no SOA record at its apex (RFC 1035 §5.2)"),
        )
    })?;
    Ok(Zone::new(
        origin,
        mode,
        soa,
        path.to_path_buf(),
        format,
        recs,
    ))
}

/// The first line that mentions `name` (best effort, for records outside the zone).
fn find_line(text: &str, name: &DomainName) -> Option<usize> {
    let bare = name.as_str().trim_end_matches('.');
    text.lines()
        .position(|l| l.to_ascii_lowercase().contains(bare))
        .map(|i| i + 1)
}
