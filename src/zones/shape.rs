//! API edits made in the text of a YAML zone file, so the file keeps the shape its
//! operator gave it: one record a line stays so, names stay relative as written, comments
//! stay, a made-up SOA stays made up (only the serial a write bumps is written:
//! `soa: { serial: 2 }`, the other fields keep their defaults).
//!
//! Each function returns `None` when it cannot make the change in place (block-style
//! records, a serial written twice, ...). The caller loads what comes back and uses it only
//! if it yields exactly the zone a full rewrite would; otherwise it rewrites the file. So
//! nothing here has to be right for every YAML file: only never wrong unnoticed.

use serde::Serialize;

use super::{
    flow,
    schema::{RecordDoc, SoaDoc, ZoneDoc},
};
use crate::record::Rec;

/// `text` with `rec` on a line of its own after the last one-line record.
pub(super) fn add_record(text: &str, rec: &RecordDoc) -> Option<String> {
    let last = record_lines(text)?.pop()?;
    let indent = &text[last.start..last.start + last.indent];
    let line = format!("{indent}- {}\n", flow_mapping(rec)?);
    let mut out = String::with_capacity(text.len() + line.len() + 1);
    out.push_str(&text[..last.end]);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&line);
    out.push_str(&text[last.end..]);
    Some(out)
}

/// `text` without the first one-line record that reads as `target`.
pub(super) fn delete_record(text: &str, target: &Rec) -> Option<String> {
    let header = header_doc(text)?;
    let line = record_lines(text)?.into_iter().find(|l| {
        let item = text[l.start + l.indent..l.end].trim_end();
        let doc: Option<RecordDoc> = item
            .strip_prefix("- ")
            .and_then(|m| yaml_serde::from_str(m).ok());
        doc.and_then(|d| d.to_rec(&header.zone, header.ttl, "").ok())
            .is_some_and(|r| r == *target)
    })?;
    Some(format!("{}{}", &text[..line.start], &text[line.end..]))
}

/// `text` with the SOA serial set to `soa.serial`: the one `serial:` in the part before
/// `records:` rewritten, or, for a made-up SOA, `soa: { serial: N }` added before
/// `records:`.
pub(super) fn set_serial(text: &str, soa: &SoaDoc) -> Option<String> {
    let (head, _) = flow::split_records(text)?;
    let doc = header_doc(text)?;
    if doc.soa.is_none() {
        return Some(format!(
            "{head}soa: {{ serial: {} }}\n{}",
            soa.serial,
            &text[head.len()..]
        ));
    }
    let mut hits = head.match_indices("serial:");
    let (at, key) = hits.next()?;
    if hits.next().is_some() {
        return None;
    }
    let after = at + key.len();
    let digits_from = after + (head[after..].len() - head[after..].trim_start().len());
    let digits = head[digits_from..]
        .bytes()
        .take_while(u8::is_ascii_digit)
        .count();
    if digits == 0 {
        return None;
    }
    Some(format!(
        "{}{}{}",
        &text[..digits_from],
        soa.serial,
        &text[digits_from + digits..]
    ))
}

/// One line of the records list that holds a whole record in flow style.
struct Line {
    /// Byte offset of the line.
    start: usize,
    /// One past its line break (or the end of the text).
    end: usize,
    /// Its indentation, in bytes.
    indent: usize,
}

/// The lines after `records:` that start a flow mapping (`- { ... }`), in order.
fn record_lines(text: &str) -> Option<Vec<Line>> {
    let (_, body) = flow::split_records(text)?;
    let mut at = text.len() - body.len();
    let mut out = Vec::new();
    for line in body.split_inclusive('\n') {
        let trimmed = line.trim_start_matches(' ');
        if trimmed.starts_with("- {") {
            out.push(Line {
                start: at,
                end: at + line.len(),
                indent: line.len() - trimmed.len(),
            });
        }
        at += line.len();
    }
    Some(out)
}

/// The document before `records:`, read by the full YAML parser.
fn header_doc(text: &str) -> Option<ZoneDoc> {
    let (head, _) = flow::split_records(text)?;
    yaml_serde::from_str(&format!("{head}records: []\n")).ok()
}

/// `{ key: value, ... }` of a flat document (scalars and lists of scalars), values as
/// YAML writes them, quoted where a flow context needs it.
fn flow_mapping(value: &impl Serialize) -> Option<String> {
    let block = yaml_serde::to_string(value).ok()?;
    let mut pairs: Vec<String> = Vec::new();
    let mut list: Option<(String, Vec<String>)> = None;
    for line in block.lines() {
        if let Some(item) = line.trim_start().strip_prefix("- ") {
            list.as_mut()?.1.push(flow_scalar(item));
            continue;
        }
        if let Some((key, items)) = list.take() {
            pairs.push(format!("{key}: [{}]", items.join(", ")));
        }
        if line.starts_with([' ', '-']) {
            return None;
        }
        let (key, v) = line.split_once(':')?;
        match v.trim() {
            "" => list = Some((key.to_owned(), Vec::new())),
            v => pairs.push(format!("{key}: {}", flow_scalar(v))),
        }
    }
    if let Some((key, items)) = list.take() {
        pairs.push(format!("{key}: [{}]", items.join(", ")));
    }
    Some(format!("{{ {} }}", pairs.join(", ")))
}

/// A scalar as YAML wrote it in block context, made safe for a flow context (where `,`
/// `[` `]` `{` `}` end a plain scalar).
fn flow_scalar(v: &str) -> String {
    let quoted = v.starts_with(['\'', '"']);
    let flow_literal = v == "[]" || v == "{}";
    if quoted || flow_literal || !v.contains([',', '[', ']', '{', '}', '#']) {
        v.to_owned()
    } else {
        format!("'{}'", v.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::{record::DomainName, zones::schema::TextDoc};

    const ZONE: &str = "# the lab\nzone: pbx.example.org\nttl: 300\nrecords:\n  # servers\n  - { name: server1, type: A, address: 192.0.2.10 }\n  - { name: '@', type: A, address: 192.0.2.10 } # apex\n";

    #[test]
    fn a_record_is_added_on_its_own_line() {
        let rec = RecordDoc {
            name: "server2".into(),
            rtype: "A".into(),
            address: Some("192.0.2.20".parse().unwrap()),
            ..RecordDoc::default()
        };
        let out = add_record(ZONE, &rec).unwrap();
        assert_eq!(
            out,
            format!("{ZONE}  - {{ name: server2, type: A, address: 192.0.2.20 }}\n")
        );
        let txt = RecordDoc {
            name: "info".into(),
            rtype: "TXT".into(),
            text: Some(TextDoc::Many(vec!["a, b".into(), "c".into()])),
            ..RecordDoc::default()
        };
        let line = flow_mapping(&txt).unwrap();
        let back: RecordDoc = yaml_serde::from_str(&line).unwrap();
        assert_eq!(back, txt, "{line}");
    }

    #[test]
    fn a_record_is_deleted_by_its_line_only() {
        let origin = DomainName::parse("pbx.example.org").unwrap();
        let target = RecordDoc {
            name: "@".into(),
            rtype: "A".into(),
            address: Some("192.0.2.10".parse().unwrap()),
            ..RecordDoc::default()
        }
        .to_rec(&origin, 300, "")
        .unwrap();
        let out = delete_record(ZONE, &target).unwrap();
        assert_eq!(
            out,
            ZONE.replace(
                "  - { name: '@', type: A, address: 192.0.2.10 } # apex\n",
                ""
            )
        );
    }

    #[test]
    fn the_serial_is_set_where_it_is_written_or_added_alone() {
        let soa = SoaDoc {
            serial: 7,
            ..header_doc("zone: x.example.org\nsoa: { serial: 1 }\nrecords:\n")
                .unwrap()
                .soa
                .unwrap()
        };
        let out = set_serial(ZONE, &soa).unwrap();
        assert!(
            out.contains("ttl: 300\nsoa: { serial: 7 }\nrecords:\n"),
            "{out}"
        );
        let block =
            "zone: x.example.org\nsoa:\n  mname: ns1\n  serial: 41 # bumped by the API\nrecords:\n";
        assert_eq!(
            set_serial(block, &soa).unwrap(),
            block.replace("serial: 41", "serial: 7")
        );
        assert!(set_serial("zone: x.example.org\n", &soa).is_none());
    }
}
