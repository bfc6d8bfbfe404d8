//! Transferred zones on disk: one RFC 1035 master file per zone in `zones.secondary_dir`,
//! `<zone>.zone`, its serial in the SOA and in a header comment. Written atomically (a new
//! temporary file in the same directory, fsync, rename over the old copy, fsync of the
//! directory), so a crash leaves the old copy or the new one, never half of one. Read back
//! through the zone-file loader, so a copy on disk passes the same checks as a zone file;
//! one that does not is set aside as `<zone>.zone.corrupt-<unix time>`.
//!
//! The file's modification time is the time of the last successful serial check: a restart
//! counts the SOA expire from there.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    time::SystemTime,
};

use hickory_proto::{
    rr::{RData, RecordType},
    serialize::binary::{BinDecoder, Restrict},
};

use super::super::{Zone, ZoneError, ZoneFormat, load};
use crate::{
    config::MergeMode,
    record::{DomainName, Rec, RecordData},
};

/// The file of zone `origin` in `dir`.
pub(crate) fn path_of(dir: &Path, origin: &DomainName) -> PathBuf {
    let stem = origin.as_str().trim_end_matches('.');
    let stem = if stem.is_empty() { "root" } else { stem };
    dir.join(format!("{stem}.zone"))
}

/// The zone as master-file text.
pub(crate) fn render(zone: &Zone) -> String {
    let serial = super::transfer::serial_of(&zone.soa).unwrap_or(0);
    let mut out = String::with_capacity(64 * (zone.len() + 2));
    let _ = writeln!(
        out,
        "; {} serial {serial}, transferred by sipdns (zones.secondary); do not edit",
        zone.origin
    );
    let _ = writeln!(out, "$ORIGIN {}", zone.origin);
    line(&mut out, &zone.soa);
    for group in zone.groups.iter() {
        let start = group.start as usize;
        for r in zone
            .recs
            .get(start..start + group.len as usize)
            .unwrap_or(&[])
        {
            line(&mut out, r);
        }
    }
    out
}

/// One record as a master-file line.
fn line(out: &mut String, r: &Rec) {
    if let RecordData::Opaque { rtype, rdata } = &r.data {
        // Types sipdns carries as wire data: decoded by hickory and written in its
        // presentation form (type mnemonic and data), which its zone-file parser reads.
        let code = RecordType::from(rtype.0);
        let len = u16::try_from(rdata.len()).unwrap_or(u16::MAX);
        let mut dec = BinDecoder::new(rdata);
        if let Ok(data) = RData::read(&mut dec, code, Restrict::new(len)) {
            let _ = writeln!(out, "{} {} IN {code} {data}", r.name, r.ttl);
            return;
        }
    }
    let _ = write!(out, "{} {} IN {} ", r.name, r.ttl, r.rtype());
    match &r.data {
        RecordData::Txt(parts) => {
            let quoted: Vec<String> = parts.iter().map(|p| quote(p)).collect();
            out.push_str(&quoted.join(" "));
        }
        RecordData::Naptr {
            order,
            preference,
            flags,
            services,
            regexp,
            replacement,
        } => {
            let _ = write!(
                out,
                "{order} {preference} {} {} {} {replacement}",
                quote(flags),
                quote(services),
                quote(regexp)
            );
        }
        other => {
            let _ = write!(out, "{other}");
        }
    }
    out.push('\n');
}

/// A character-string in quotes: quote and backslash escaped (RFC 1035 §5.1), control
/// characters as `\DDD`, other text as UTF-8 (hickory's parser reads `\DDD` above 127 as
/// characters, not bytes).
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                q.push('\\');
                q.push(c);
            }
            c if c.is_ascii_control() => {
                let _ = write!(q, "\\{:03}", u32::from(c));
            }
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

/// Writes `text` to `path` atomically, the one way sipdns replaces a file it reads back
/// ([`crate::atomic_file`]: a temporary file created new in the same directory, never
/// through a symlink, fsync, rename, directory fsync). The directory is created first.
pub(crate) fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::atomic_file::write(path, text.as_bytes())
}

/// Reads the copy at `path` as zone `origin`: the zone-file loader's checks, plus the origin
/// must be the one expected.
pub(crate) fn read(path: &Path, origin: &DomainName, mode: MergeMode) -> Result<Zone, ZoneError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        crate::config::FileError::whole(path, format!("cannot read the transferred copy: {e}"))
    })?;
    let mut zone = load::load_zone_file_text(path, &text, Some(origin.clone()), mode)?;
    if &zone.origin != origin {
        return Err(crate::config::FileError::whole(
            path,
            format!("holds zone {}, expected {origin}", zone.origin),
        )
        .into());
    }
    zone.format = ZoneFormat::Secondary;
    Ok(zone)
}

/// Moves a copy that cannot be read out of the way: `<file>.corrupt-<unix time>`.
pub(crate) fn set_aside(path: &Path) -> std::io::Result<PathBuf> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut aside = path.as_os_str().to_owned();
    aside.push(format!(".corrupt-{now}"));
    let aside = PathBuf::from(aside);
    std::fs::rename(path, &aside)?;
    Ok(aside)
}

/// Marks a successful serial check: the file's modification time becomes now.
pub(crate) fn touch(path: &Path) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_modified(SystemTime::now())
}

/// When the copy was last confirmed (its modification time).
pub(crate) fn confirmed_at(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).ok()?.modified().ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_copy_reads_back_as_the_same_zone() {
        let dir = tempfile::tempdir().unwrap();
        let text = "$ORIGIN example.org.\n\
            @ 60 IN SOA ns.example.org. admin.example.org. 7 60 10 600 30\n\
            @ 60 IN NS ns.example.org.\n\
            @ 60 IN NAPTR 10 20 \"s\" \"SIP+D2U\" \"\" _sip._udp.example.org.\n\
            _sip._udp 60 IN SRV 10 1 5060 sip.example.org.\n\
            sip 60 IN A 192.0.2.1\n\
            sip 60 IN AAAA 2001:db8::1\n\
            txt 60 IN TXT \"a \\\"quoted\\\" word\" \"back\\\\slash\" \"café\"\n\
            mail 60 IN MX 10 sip.example.org.\n\
            caa 60 IN CAA 0 issue \"ca.example.net\"\n\
            ssh 60 IN SSHFP 1 1 0123456789abcdef0123456789abcdef01234567\n\
            www 60 IN CNAME sip.example.org.\n";
        let origin = DomainName::parse("example.org").unwrap();
        let src = dir.path().join("src.zone");
        let mut zone =
            load::load_zone_file_text(&src, text, Some(origin.clone()), MergeMode::Override)
                .unwrap();
        let path = path_of(dir.path(), &origin);
        zone.file = path.clone();
        zone.format = ZoneFormat::Secondary;
        write_atomic(&path, &render(&zone)).unwrap();
        let back = read(&path, &origin, MergeMode::Override).unwrap();
        assert_eq!(back, zone);
        assert_eq!(back.len(), 10);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn a_corrupt_copy_is_an_error_and_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        let origin = DomainName::parse("example.org").unwrap();
        let path = path_of(dir.path(), &origin);
        std::fs::write(&path, "$ORIGIN example.org.\n@ 60 IN A 192.0.2.1\n").unwrap();
        let e = read(&path, &origin, MergeMode::Override).unwrap_err();
        assert!(e.to_string().contains("no SOA"), "{e}");
        let aside = set_aside(&path).unwrap();
        assert!(!path.exists());
        assert!(aside.to_string_lossy().contains(".zone.corrupt-"));
    }
}
