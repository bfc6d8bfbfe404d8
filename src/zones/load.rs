//! Reading `zones/`: YAML zone documents and RFC 1035 zone files (through hickory's parser).
//! Every error names the file and the line.
//!
//! Nothing is read from outside `zones/`: a zone file must be a regular file whose real
//! path (after every symlink, as the kernel opened it) is inside the zones directory, of at
//! most `zones.max_file_size` bytes. `$INCLUDE` is expanded here, under the same rule,
//! before hickory's parser sees the text; the parser itself is never given a file name to
//! open (issue 14: a symlink or an `$INCLUDE` of any absolute path served or quoted files
//! such as the API token).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    hash::{Hash, Hasher},
    io::Read as _,
    os::unix::fs::OpenOptionsExt as _,
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
    load_dir_limited(dir, modes, DEFAULT_MAX_FILE_SIZE, previous)
}

/// The default of `zones.max_file_size`: 64 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = crate::config::DEFAULT_ZONE_MAX_FILE_SIZE;

/// How deep `$INCLUDE`s may nest.
const MAX_INCLUDE_DEPTH: usize = 8;

/// [`load_dir_reusing`] with a size limit per file (and for a zone file with everything it
/// includes).
pub fn load_dir_limited(
    dir: &Path,
    modes: &BTreeMap<DomainName, MergeMode>,
    max_file_size: u64,
    previous: Option<&ZoneStore>,
) -> Result<ZoneStore, ZoneError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| FileError::whole(dir, format!("cannot read the zones directory: {e}")))?;
    let root = std::fs::canonicalize(dir)
        .map_err(|e| FileError::whole(dir, format!("cannot resolve the zones directory: {e}")))?;
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
        let zone_file = path.extension().and_then(|e| e.to_str()) == Some("zone");
        let read = read_inside(&root, &path, max_file_size).and_then(|text| {
            if zone_file {
                expand_includes(&root, &path, text, max_file_size)
            } else {
                Ok(text)
            }
        });
        let text = match read {
            Ok(t) => t,
            Err(e) => {
                errors.push(e);
                continue;
            }
        };
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

/// Reads `path` if it is a regular file inside `root` (the canonical zones directory) of at
/// most `max` bytes. The check is made on the file as opened (its real path through
/// `/proc/self/fd`, its `fstat`), so a symlink swapped in between cannot slip past it.
fn read_inside(root: &Path, path: &Path, max: u64) -> Result<String, FileError> {
    let fail = |reason: String| FileError::whole(path, reason);
    // O_NONBLOCK: a FIFO planted under a zone name must not hang the loader; it has no
    // effect on regular files.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    let real = real_path(&file, path);
    match &real {
        Some(r) if r.starts_with(root) => {}
        Some(r) => {
            return Err(fail(format!(
                "refused: it resolves to {}, outside the zones directory {}; zone files \
                 must be inside it (a symlink leaving zones/ is not followed)",
                r.display(),
                root.display()
            )));
        }
        None => return Err(fail("refused: cannot tell where the file really is".into())),
    }
    if !meta.is_file() {
        return Err(fail("refused: not a regular file".into()));
    }
    if meta.len() > max {
        return Err(fail(format!(
            "refused: {} bytes, over zones.max_file_size ({max} bytes)",
            meta.len()
        )));
    }
    let mut bytes = Vec::new();
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(fail(format!(
            "refused: grew over zones.max_file_size ({max} bytes) while read"
        )));
    }
    String::from_utf8(bytes).map_err(|e| fail(format!("not UTF-8: {e}")))
}

/// Where the kernel says an open file is: `/proc/self/fd/N`, else (no `/proc`) the path
/// with every symlink resolved.
fn real_path(file: &File, path: &Path) -> Option<PathBuf> {
    use std::os::fd::AsRawFd as _;
    std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
        .ok()
        .filter(|p| p.is_absolute())
        .or_else(|| std::fs::canonicalize(path).ok())
}

/// Replaces every `$INCLUDE <file>` line of a zone file by the text of that file, read with
/// [`read_inside`] (so it must be inside `zones/`), recursively up to
/// [`MAX_INCLUDE_DEPTH`]; the whole expanded text is bounded by `max` too. hickory's parser
/// would otherwise open any path it is given; it shares the parse state (origin, TTL)
/// between a file and what it includes, so inlining the text parses the same.
///
/// Any other occurrence of `$INCLUDE` (not at the start of a line, with a domain name
/// after the file, in a record) is refused, so none reaches the parser: the lexer
/// recognises `$INCLUDE` in more places than at a line start. Whole-line comments may
/// mention it.
fn expand_includes(root: &Path, path: &Path, text: String, max: u64) -> Result<String, FileError> {
    if !text.contains("$INCLUDE") {
        return Ok(text);
    }
    let mut total = 0u64;
    expand(root, path, &text, max, 0, &mut total)
}

fn expand(
    root: &Path,
    path: &Path,
    text: &str,
    max: u64,
    depth: usize,
    total: &mut u64,
) -> Result<String, FileError> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let at = |reason: String| FileError {
            file: path.display().to_string(),
            line: Some(i + 1),
            column: None,
            field: None,
            reason,
        };
        let comment = line.trim_start().starts_with(';');
        let Some(pos) = line.find("$INCLUDE") else {
            *total += line.len() as u64;
            out.push_str(line);
            continue;
        };
        if comment {
            *total += line.len() as u64;
            out.push_str(line);
            continue;
        }
        if pos != 0 {
            return Err(at(
                "$INCLUDE is allowed only as a directive at the start of a line".into(),
            ));
        }
        let rest = line["$INCLUDE".len()..].trim_end_matches(['\r', '\n']);
        if !rest.starts_with([' ', '\t']) {
            return Err(at("$INCLUDE needs a file name".into()));
        }
        let rest = rest.trim_start();
        let (name, after) = if let Some(q) = rest.strip_prefix('"') {
            let end = q
                .find('"')
                .ok_or_else(|| at("$INCLUDE: unclosed quote".into()))?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = rest.find([' ', '\t', ';']).unwrap_or(rest.len());
            (&rest[..end], &rest[end..])
        };
        let after = after.trim_start();
        if name.is_empty() {
            return Err(at("$INCLUDE needs a file name".into()));
        }
        if !(after.is_empty() || after.starts_with(';')) {
            return Err(at(
                "$INCLUDE with a domain name is not supported (set $ORIGIN in the included file)"
                    .into(),
            ));
        }
        if depth >= MAX_INCLUDE_DEPTH {
            return Err(at(format!(
                "$INCLUDE nested deeper than {MAX_INCLUDE_DEPTH} files"
            )));
        }
        let base = path.parent().unwrap_or(Path::new("."));
        let target = base.join(name);
        let included = read_inside(root, &target, max).map_err(|e| {
            at(format!(
                "$INCLUDE {name}: {} (an included file must be inside the zones directory)",
                e.reason
            ))
        })?;
        let mut expanded = expand(root, &target, &included, max, depth + 1, total)?;
        if !expanded.ends_with('\n') {
            expanded.push('\n');
        }
        out.push_str(&expanded);
        if *total > max {
            return Err(at(format!(
                "with its $INCLUDEs over zones.max_file_size ({max} bytes)"
            )));
        }
    }
    Ok(out)
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
    // `$INCLUDE` is expanded (inside `zones/` only) by the loader; one left here was not
    // (an API body, a fuzz input): refused, so the parser never opens a file.
    if let Some(line) = include_line(text) {
        return Err(FileError {
            file: path.display().to_string(),
            line: Some(line),
            column: None,
            field: None,
            reason: "$INCLUDE is not allowed here (only in files read from the zones directory)"
                .into(),
        }
        .into());
    }
    // No path: the parser resolves no relative `$INCLUDE` against it.
    let parsed = Parser::new(text, None, hickory_origin.clone()).parse();
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

/// The first line with `$INCLUDE` outside a whole-line comment, if any.
fn include_line(text: &str) -> Option<usize> {
    if !text.contains("$INCLUDE") {
        return None;
    }
    text.lines()
        .position(|l| l.contains("$INCLUDE") && !l.trim_start().starts_with(';'))
        .map(|i| i + 1)
}

/// The first line that mentions `name` (best effort, for records outside the zone).
fn find_line(text: &str, name: &DomainName) -> Option<usize> {
    let bare = name.as_str().trim_end_matches('.');
    text.lines()
        .position(|l| l.to_ascii_lowercase().contains(bare))
        .map(|i| i + 1)
}
