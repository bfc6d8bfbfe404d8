//! Zone edits through the API: the domain behind the zone routes, on the zones in force
//! and their files.
//!
//! An edit is a read-modify-write of one zone; the reloader runs [`apply`] under its write
//! lock (`Reloader::edit_zone`), so it is serialized with hot reloads and with other edits,
//! and cannot lose an update. [`apply`]: check the version (`If-Match` against the zone's
//! ETag), check that the file still holds what the zone was loaded from (a hand edit not
//! yet in force, or one a reload rejected, is never overwritten: 409), build the new
//! document, validate it whole (every problem with its field path),
//! write it atomically to the zone's file (temp file in the same directory, fsync, rename,
//! fsync the directory), load that very text back as the new zone, and only then swap it in.
//! Any error before the rename leaves the file and the running zone as they were.
//!
//! A record added or deleted is written into the file's own text where it can be
//! ([`super::shape`]): the operator's layout, relative names and comments stay. A whole
//! zone sent with PUT or POST is written as sent.
//!
//! The API's view of a YAML zone is the zone in force, not the file on disk (which may have
//! been edited since, or be broken): GET returns it as a [`ZoneDoc`], records in the
//! zone's order (by owner name, then as written), and indexes in `records` refer to that
//! order. RFC 1035 `.zone` files are read-only here.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::Serialize;

use super::{
    Zone, ZoneFormat, ZoneStore, load_yaml_text,
    schema::{self, FieldError, RecordDoc, SoaDoc, ZoneDoc},
    secondary::SecondaryStatus,
    shape,
};
use crate::{
    atomic_file,
    config::MergeMode,
    record::{DomainName, RType, RecordData},
};

/// What is wrong with a request, and where: `field` is a path into the body such as
/// `records[2].port` (absent when the body as a whole is at fault).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The field at fault, as a path into the request body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl Problem {
    /// A problem with the body as a whole.
    pub fn whole(reason: impl Into<String>) -> Self {
        Self {
            field: None,
            reason: reason.into(),
        }
    }

    /// A problem with one field.
    pub fn at(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: Some(field.into()),
            reason: reason.into(),
        }
    }
}

impl From<FieldError> for Problem {
    fn from(e: FieldError) -> Self {
        Self::at(e.field, e.reason)
    }
}

/// Why an edit was refused; nothing changed in any case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// No such zone or record.
    #[error("{0}")]
    NotFound(String),
    /// The zone is an RFC 1035 file, read-only to the API.
    #[error("{0}")]
    ReadOnly(String),
    /// The zone (or its file) already exists, or the record does.
    #[error("{0}")]
    Exists(String),
    /// `If-Match` names another version.
    #[error("{0}")]
    Stale(String),
    /// The zone's file changed on disk since the zone in force was loaded from it (a hand
    /// edit not reloaded yet, or rejected by the last reload): it is not overwritten.
    #[error("{0}")]
    Changed(String),
    /// An index-based edit came without `If-Match`.
    #[error("{0}")]
    NeedsIfMatch(String),
    /// The new document is invalid.
    #[error("invalid zone document")]
    Invalid(Vec<Problem>),
    /// Writing the file failed.
    #[error("{0}")]
    Io(String),
}

/// A zone version, as an HTTP entity tag with its quotes: `"1f3a..."`. Computed from the
/// zone's content, so equal content gives equal tags, across restarts too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct ETag(String);

impl ETag {
    /// The tag of a zone in force.
    pub fn of(zone: &Zone) -> Self {
        // FNV-1a (64 bit): stable across builds and processes, unlike std's hasher.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut feed = |bytes: &[u8]| {
            for b in bytes {
                h ^= u64::from(*b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        };
        feed(format!("{:?}\n", zone.mode).as_bytes());
        for r in zone.records() {
            feed(r.to_string().as_bytes());
            feed(b"\n");
        }
        Self(format!("\"{h:016x}\""))
    }

    /// The header value.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An `If-Match` precondition (RFC 9110 §13.1.1, strong comparison).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: the edit applies to whatever version is in force.
    Absent,
    /// `*`: any current version.
    Any,
    /// One of these tags (as sent, with quotes; weak tags never match).
    Tags(Vec<String>),
}

impl IfMatch {
    /// Reads the header value.
    pub fn parse(value: Option<&str>) -> Self {
        match value.map(str::trim) {
            None => Self::Absent,
            Some("*") => Self::Any,
            Some(v) => Self::Tags(
                v.split(',')
                    .map(|t| t.trim().to_owned())
                    .filter(|t| !t.is_empty())
                    .collect(),
            ),
        }
    }

    /// True if the precondition holds for the current version (`None`: no zone).
    fn holds(&self, current: Option<&ETag>) -> bool {
        match (self, current) {
            (Self::Absent, _) => true,
            (Self::Any, c) => c.is_some(),
            (Self::Tags(tags), Some(c)) => tags.iter().any(|t| t == c.as_str()),
            (Self::Tags(_), None) => false,
        }
    }
}

/// One zone in the list.
#[derive(Debug, Clone, Serialize)]
pub struct ZoneSummary {
    /// The zone apex.
    pub zone: DomainName,
    /// How it combines with upstream.
    pub mode: MergeMode,
    /// `yaml` or `zone_file`.
    pub format: ZoneFormat,
    /// The file it is kept in.
    pub file: PathBuf,
    /// Records (the SOA not counted).
    pub records: usize,
    /// True for RFC 1035 files, which the API does not change.
    pub read_only: bool,
    /// The zone's version.
    pub etag: ETag,
    /// For a zone transferred from a primary (`zones.secondary`): serial, checks, last
    /// transfer, expiry and error. Such a zone is listed even while it is not served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secondary: Option<SecondaryStatus>,
}

/// A change to one zone.
#[derive(Debug, Clone)]
pub enum Change {
    /// A new zone from this document (the zone name is the document's).
    Create(ZoneDoc),
    /// The zone's whole content.
    Replace(ZoneDoc),
    /// The zone goes, with its file.
    Delete,
    /// One more record.
    AddRecord(RecordDoc),
    /// The record at this index of the zone document's `records`.
    DeleteRecord(usize),
}

/// The zone after an accepted change (`None` after a delete).
#[derive(Debug, Clone)]
pub struct Edited {
    /// The zone as now in force.
    pub zone: Option<(ZoneDoc, ETag)>,
}

/// Every zone, by name.
pub fn list(zones: &ZoneStore) -> Vec<ZoneSummary> {
    let mut out: Vec<ZoneSummary> = zones
        .zones()
        .map(|z| ZoneSummary {
            zone: z.origin.clone(),
            mode: z.mode,
            format: z.format,
            file: z.file.clone(),
            records: z.len(),
            read_only: z.format != ZoneFormat::Yaml,
            etag: ETag::of(z),
            secondary: None,
        })
        .collect();
    out.sort_by(|a, b| a.zone.cmp(&b.zone));
    out
}

/// [`list`] with the status of every secondary zone: attached to the zone in force, or
/// a row of its own while it is not served (not transferred yet, expired, a catalog).
pub fn list_with_secondaries(zones: &ZoneStore, status: Vec<SecondaryStatus>) -> Vec<ZoneSummary> {
    let mut out = list(zones);
    for st in status {
        match out
            .iter_mut()
            .find(|z| z.zone == st.zone && z.format == ZoneFormat::Secondary)
        {
            Some(row) => row.secondary = Some(st),
            None => out.push(ZoneSummary {
                zone: st.zone.clone(),
                mode: st.mode,
                format: ZoneFormat::Secondary,
                file: st.file.clone(),
                records: 0,
                read_only: true,
                etag: ETag("\"-\"".to_owned()),
                secondary: Some(st),
            }),
        }
    }
    out.sort_by(|a, b| a.zone.cmp(&b.zone));
    out
}

/// One zone as a document, with its version. For an RFC 1035 file only the record types
/// a YAML zone can hold (NAPTR, SRV, A, AAAA, CNAME, TXT) are shown.
pub fn get(zones: &ZoneStore, origin: &DomainName) -> Result<(ZoneDoc, ETag), EditError> {
    let zone = find(zones, origin)?;
    Ok((doc_of(zone), ETag::of(zone)))
}

/// Carries out `change` on the zone `origin` of `zones` if `if_match` holds and persists
/// it; returns the new zone store (for the caller to swap in) and what to answer. `dir` is
/// the zones directory, where a new zone's file goes; `pending` the error of the last
/// reload if it failed (named when a changed file is refused). Blocking file I/O; the
/// caller holds the lock that serializes edits with reloads.
pub fn apply(
    zones: &ZoneStore,
    dir: &Path,
    origin: &DomainName,
    if_match: &IfMatch,
    change: Change,
    pending: Option<&str>,
) -> Result<(ZoneStore, Edited), EditError> {
    if let Change::Create(doc) = change {
        return create(zones, dir, if_match, doc);
    }
    let zone = find(zones, origin)?;
    if zone.format != ZoneFormat::Yaml {
        return Err(EditError::ReadOnly(format!(
            "zone {origin} comes from the RFC 1035 file {}, which the API does not change",
            zone.file.display()
        )));
    }
    let current = ETag::of(zone);
    if !if_match.holds(Some(&current)) {
        return Err(EditError::Stale(format!(
            "zone {origin} has changed: its version is now {}",
            current.as_str()
        )));
    }
    let on_disk = unchanged_file(zones, zone, pending)?;
    let mut doc = doc_of(zone);
    // The change made in the file's own text, where that can be done.
    let mut shaped = None;
    match change {
        Change::Create(new) => return create(zones, dir, if_match, new),
        Change::Delete => {
            remove_file(&zone.file)?;
            tracing::info!(zone = %origin, file = %zone.file.display(), "zone deleted through the API");
            return Ok((zones.without_zone(origin), Edited { zone: None }));
        }
        Change::Replace(new) => {
            if new.zone != *origin {
                return Err(EditError::Invalid(vec![Problem::at(
                    "zone",
                    format!("{} is not the zone in the URL, {origin}", new.zone),
                )]));
            }
            doc = new;
        }
        Change::AddRecord(rec) => {
            let at = doc.records.len();
            let new = rec
                .to_rec(&doc.zone, doc.ttl, "record")
                .map_err(|e| EditError::Invalid(vec![body_relative(e, "record")]))?;
            let existing = zone.records_of(&new.name);
            if existing.iter().any(|r| r.data == new.data) {
                return Err(EditError::Exists(format!(
                    "zone {origin} already has the record {new}"
                )));
            }
            shaped = shape::add_record(&on_disk, &rec);
            doc.records.push(rec);
            bump_serial(&mut doc);
            // Whole-zone checks (a CNAME beside other data) name the new record by its
            // body fields, others by their index.
            check(&doc).map_err(|errs| {
                EditError::Invalid(
                    errs.into_iter()
                        .map(|e| body_relative(e, &format!("records[{at}]")))
                        .collect(),
                )
            })?;
        }
        Change::DeleteRecord(index) => {
            if *if_match == IfMatch::Absent {
                return Err(EditError::NeedsIfMatch(
                    "deleting a record by index needs If-Match with the zone's ETag, \
                     so the index refers to the version you read"
                        .to_owned(),
                ));
            }
            if index >= doc.records.len() {
                return Err(EditError::NotFound(format!(
                    "zone {origin} has no record at index {index} (it has {})",
                    doc.records.len()
                )));
            }
            let gone = doc.records.remove(index);
            shaped = gone
                .to_rec(&doc.zone, doc.ttl, "")
                .ok()
                .and_then(|r| shape::delete_record(&on_disk, &r));
            bump_serial(&mut doc);
        }
    }
    if let Some(soa) = &doc.soa {
        shaped = shaped.and_then(|t| shape::set_serial(&t, soa));
    }
    let (new, text) = persist(&zone.file, &doc, shaped)?;
    tracing::info!(zone = %origin, file = %zone.file.display(), "zone changed through the API");
    let edited = Edited {
        zone: Some((doc_of(&new), ETag::of(&new))),
    };
    Ok((zones.with_zone_from(new, &text), edited))
}

/// The text of `zone`'s file, if it is still what the zone in force was loaded from (or
/// last written as); else why the edit is refused.
fn unchanged_file(
    zones: &ZoneStore,
    zone: &Zone,
    pending: Option<&str>,
) -> Result<String, EditError> {
    let file = zone.file.display();
    let why = |what: String| {
        let state = match pending {
            Some(e) => format!("the last reload failed, so it is not in force: {e}"),
            None => "it is not in force yet (the next reload picks it up)".to_owned(),
        };
        EditError::Changed(format!(
            "{what} since zone {} was loaded, and {state}. The API does not overwrite a \
             change by hand: fix or reload the file, then retry",
            zone.origin
        ))
    };
    let text =
        fs::read_to_string(&zone.file).map_err(|e| why(format!("{file} cannot be read ({e})")))?;
    if zones.is_source(&zone.file, &text) == Some(false) {
        return Err(why(format!("{file} changed on disk")));
    }
    Ok(text)
}

fn create(
    zones: &ZoneStore,
    dir: &Path,
    if_match: &IfMatch,
    doc: ZoneDoc,
) -> Result<(ZoneStore, Edited), EditError> {
    let origin = doc.zone.clone();
    if let Some(z) = zones.get(&origin) {
        return Err(EditError::Exists(format!(
            "zone {origin} already exists (in {})",
            z.file.display()
        )));
    }
    if !if_match.holds(None) {
        return Err(EditError::Stale(format!("zone {origin} does not exist")));
    }
    if origin.as_str().starts_with("*.") {
        return Err(EditError::Invalid(vec![Problem::at(
            "zone",
            "a zone name cannot be a wildcard",
        )]));
    }
    let file = dir.join(file_name(&origin));
    if file.exists() {
        return Err(EditError::Exists(format!(
            "{} exists but is not loaded (a broken or misnamed zone file?); fix or remove it first",
            file.display()
        )));
    }
    let (new, text) = persist(&file, &doc, None)?;
    tracing::info!(zone = %origin, file = %file.display(), "zone created through the API");
    let edited = Edited {
        zone: Some((doc_of(&new), ETag::of(&new))),
    };
    Ok((zones.with_zone_from(new, &text), edited))
}

fn find<'a>(zones: &'a ZoneStore, origin: &DomainName) -> Result<&'a Zone, EditError> {
    zones
        .get(origin)
        .map(AsRef::as_ref)
        .ok_or_else(|| EditError::NotFound(format!("no zone {origin}")))
}

/// `zones/<zone>.yaml`, the zone name without its final dot.
fn file_name(origin: &DomainName) -> String {
    format!("{}.yaml", origin.as_str().trim_end_matches('.'))
}

/// Validates a whole document.
fn check(doc: &ZoneDoc) -> Result<(), Vec<FieldError>> {
    schema::records_of(doc).map(|_| ())
}

/// `record.port` -> `port`: the field path of a record sent alone is relative to it.
fn body_relative(e: FieldError, prefix: &str) -> Problem {
    let field = match e.field.strip_prefix(prefix) {
        Some(rest) => rest.trim_start_matches('.').to_owned(),
        None => e.field,
    };
    if field.is_empty() {
        Problem::whole(e.reason)
    } else {
        Problem::at(field, e.reason)
    }
}

/// RFC 1982 serial arithmetic: a changed zone gets the next serial.
fn bump_serial(doc: &mut ZoneDoc) {
    if let Some(soa) = &mut doc.soa {
        soa.serial = soa.serial.wrapping_add(1);
    }
}

/// The document form of a zone in force. The zone TTL is taken from the SOA (which has it
/// unless the document gave the SOA its own), so records at it need no `ttl`.
pub fn doc_of(zone: &Zone) -> ZoneDoc {
    let origin = &zone.origin;
    let zone_ttl = zone.soa.ttl;
    let soa = match &zone.soa.data {
        RecordData::Soa {
            mname,
            rname,
            serial,
            refresh,
            retry,
            expire,
            minimum,
        } => Some(SoaDoc {
            mname: schema::relative(origin, mname),
            rname: schema::relative(origin, rname),
            serial: *serial,
            refresh: *refresh,
            retry: *retry,
            expire: *expire,
            minimum: *minimum,
            ttl: None,
        }),
        _ => None,
    };
    ZoneDoc {
        zone: origin.clone(),
        mode: zone.mode,
        ttl: zone_ttl,
        soa,
        records: zone
            .records()
            .iter()
            .filter(|r| r.rtype() != RType::SOA)
            .filter_map(|r| RecordDoc::from_rec(origin, zone_ttl, r))
            .collect(),
    }
}

const HEADER: &str = "\
# Written by the sipdns REST API. Editing by hand is fine: hot reload picks the change up.
# The API adds and deletes records in place (layout and comments stay); a whole zone
# sent to the API replaces this file.
";

/// Validates `doc`, writes it to `path` atomically, and returns the zone loaded from
/// exactly the text written (what a restart will load) and that text. `shaped` is the
/// change made in the file's own text: written instead of the document if it loads as the
/// very same zone.
fn persist(
    path: &Path,
    doc: &ZoneDoc,
    shaped: Option<String>,
) -> Result<(Zone, String), EditError> {
    check(doc).map_err(|errs| EditError::Invalid(errs.into_iter().map(Problem::from).collect()))?;
    let body = yaml_serde::to_string(doc)
        .map_err(|e| EditError::Io(format!("cannot write the zone as YAML: {e}")))?;
    let full = format!("{HEADER}{body}");
    let zone = load_yaml_text(path, &full)
        .map_err(|e| EditError::Io(format!("the zone written would not load back (a bug): {e}")))?;
    let text = match shaped {
        Some(t) if load_yaml_text(path, &t).is_ok_and(|z| z == zone) => t,
        _ => full,
    };
    atomic_file::write(path, text.as_bytes())
        .map_err(|e| EditError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok((zone, text))
}

/// Deletes a zone file and makes that durable.
fn remove_file(path: &Path) -> Result<(), EditError> {
    fs::remove_file(path)
        .map_err(|e| EditError::Io(format!("cannot delete {}: {e}", path.display())))?;
    atomic_file::sync_dir(path);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn if_match_forms() {
        let tag = ETag("\"abc\"".to_owned());
        assert!(IfMatch::parse(None).holds(Some(&tag)));
        assert!(IfMatch::parse(None).holds(None));
        assert!(IfMatch::parse(Some("*")).holds(Some(&tag)));
        assert!(!IfMatch::parse(Some("*")).holds(None));
        assert!(IfMatch::parse(Some("\"x\", \"abc\"")).holds(Some(&tag)));
        assert!(!IfMatch::parse(Some("W/\"abc\"")).holds(Some(&tag)));
        assert!(!IfMatch::parse(Some("\"abd\"")).holds(Some(&tag)));
    }

    #[test]
    fn documents_round_trip_through_the_zone() {
        let text = "zone: pbx.example.org\nttl: 120\nrecords:\n  - { name: '@', type: NAPTR, order: 10, flags: s, service: SIP+D2U, replacement: _sip._udp }\n  - { name: _sip._udp, type: SRV, priority: 10, weight: 5, port: 5060, target: server1 }\n  - { name: server1, type: A, address: 192.0.2.10, ttl: 60 }\n  - { name: info, type: TXT, text: [a, b] }\n  - { name: ext, type: CNAME, target: other.example.net. }\n";
        let zone = load_yaml_text(Path::new("z.yaml"), text).unwrap();
        let doc = doc_of(&zone);
        assert_eq!(doc.ttl, 120);
        let yaml = yaml_serde::to_string(&doc).unwrap();
        let again = load_yaml_text(Path::new("z.yaml"), &yaml).unwrap();
        assert_eq!(again.records(), zone.records());
        assert_eq!(ETag::of(&again), ETag::of(&zone));
        assert_eq!(doc_of(&again), doc);
    }

    #[test]
    fn body_relative_paths() {
        let e = FieldError {
            field: "record.port".into(),
            reason: "r".into(),
        };
        assert_eq!(body_relative(e, "record"), Problem::at("port", "r"));
        let e = FieldError {
            field: "records[1].name".into(),
            reason: "r".into(),
        };
        assert_eq!(
            body_relative(e, "records[3]"),
            Problem::at("records[1].name", "r")
        );
    }

    #[test]
    fn edits_keep_the_shape_and_never_overwrite_a_hand_edit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pbx.example.org.yaml");
        let text = "zone: pbx.example.org\nrecords:\n  # the server\n  - { name: server1, type: A, address: 192.0.2.10 }\n";
        fs::write(&path, text).unwrap();
        let zones = crate::zones::load_dir(dir.path(), &Default::default()).unwrap();
        let origin = DomainName::parse("pbx.example.org").unwrap();
        let add = |name: &str, address: &str| {
            Change::AddRecord(RecordDoc {
                name: name.into(),
                rtype: "A".into(),
                address: Some(address.parse().unwrap()),
                ..RecordDoc::default()
            })
        };
        let apply_to = |zones: &ZoneStore, change, pending| {
            apply(
                zones,
                dir.path(),
                &origin,
                &IfMatch::Absent,
                change,
                pending,
            )
        };
        // In place: the comment, the relative name and the flow line stay; the made-up SOA
        // gains only its bumped serial.
        let (zones, _) = apply_to(&zones, add("server2", "192.0.2.20"), None).unwrap();
        let written = fs::read_to_string(&path).unwrap();
        assert_eq!(
            written,
            "zone: pbx.example.org\nsoa: { serial: 2 }\nrecords:\n  # the server\n  - { name: server1, type: A, address: 192.0.2.10 }\n  - { name: server2, type: A, address: 192.0.2.20 }\n"
        );
        // The next edit finds the file as it was written.
        let (zones, _) = apply_to(&zones, add("server3", "192.0.2.30"), None).unwrap();
        assert!(fs::read_to_string(&path).unwrap().contains("serial: 3"));
        // A change by hand since: refused, the file left as the operator wrote it.
        let hand = fs::read_to_string(&path)
            .unwrap()
            .replace("192.0.2.10", "192.0.2.11");
        fs::write(&path, &hand).unwrap();
        let e = apply_to(&zones, add("server4", "192.0.2.40"), None).unwrap_err();
        assert!(
            matches!(&e, EditError::Changed(r) if r.contains("changed on disk") && r.contains("not in force yet")),
            "{e}"
        );
        let e = apply_to(&zones, Change::Delete, Some("pbx.example.org.yaml:5: bad")).unwrap_err();
        assert!(
            matches!(&e, EditError::Changed(r) if r.contains("the last reload failed, so it is not in force: pbx.example.org.yaml:5: bad")),
            "{e}"
        );
        assert_eq!(fs::read_to_string(&path).unwrap(), hand);
    }

    #[test]
    fn a_failed_write_leaves_the_file_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.yaml");
        fs::write(&path, "old").unwrap();
        fs::create_dir(atomic_file::temp_path(&path)).unwrap();
        assert!(atomic_file::write(&path, b"new").is_err());
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        fs::remove_dir(atomic_file::temp_path(&path)).unwrap();
        atomic_file::write(&path, b"new").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "new");
        assert!(!atomic_file::temp_path(&path).exists());
    }
}
