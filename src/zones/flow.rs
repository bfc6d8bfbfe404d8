//! A fast reader for the common shape of a large YAML zone: one flow mapping of plain or
//! simply-quoted scalars per record line, e.g.
//!
//! ```yaml
//! records:
//!   - { name: h1, type: A, address: 192.0.2.1 }
//!   - { name: "@", type: NAPTR, order: 90, preference: 50, flags: s, service: SIP+D2T, replacement: _sip._tcp }
//! ```
//!
//! The general YAML parser reads such a file at about 3 µs a record, so a reload after an
//! edit of a 100,000-record zone took half a second; this reader takes a fraction of that.
//! It must never disagree with the full parser: it declines (returns `None`, and the full
//! parser reads the file) as soon as anything falls outside a narrow grammar — block-style
//! records, escapes, anchors, multi-line values, a plain scalar YAML could read as a
//! number, bool or null where a string is wanted, any field error. It produces no errors
//! of its own. The part of the file before `records:` is read by the full parser.

use serde::{
    Deserialize,
    de::{self, DeserializeSeed, IntoDeserializer, MapAccess, Visitor, value::Error},
};

use super::schema::{RecordDoc, ZoneDoc};
use crate::record::Rec;

/// Reads `text` if it has the common shape, else `None`: the document.
#[cfg(test)]
pub(super) fn parse(text: &str) -> Option<ZoneDoc> {
    let (mut doc, records) = read(text, |_, d| Some(d))?;
    doc.records = records;
    Some(doc)
}

/// Reads `text` if it has the common shape and every record converts, else `None`: the
/// document without its records, and the records. Each record is converted right where it
/// is read (on the reader's thread), so the documents of 100,000 records never exist at
/// once. Errors are the full parser's to report, with their lines.
pub(super) fn parse_records(text: &str) -> Option<(ZoneDoc, Vec<Rec>)> {
    read(text, |doc, d| d.to_rec(&doc.zone, doc.ttl, "").ok())
}

/// The fast reader, turning each record's document into a `T` with `convert` (`None`
/// declines the whole file).
fn read<T: Send>(
    text: &str,
    convert: impl Fn(&ZoneDoc, RecordDoc) -> Option<T> + Sync,
) -> Option<(ZoneDoc, Vec<T>)> {
    // YAML forbids most control characters anywhere, comments included (YAML 1.2 §5.1);
    // skipping comment lines must not let them through (found by fuzzing: a NUL in a
    // comment was accepted here and rejected by the full parser). Tabs go to the full
    // parser too.
    if !fast_readable(text) {
        return None;
    }
    let (header, body) = split_records(text)?;
    let doc: ZoneDoc = yaml_serde::from_str(&format!("{header}records: []\n")).ok()?;
    // A large zone is read in pieces on as many threads as there are cores (a reload of a
    // 100,000-record zone happens while the server runs); every piece must have the shape,
    // and all pieces the same indentation.
    let pieces = split_lines(body, super::threads_for(body.len() / AVERAGE_LINE));
    let convert = |d: RecordDoc| convert(&doc, d);
    let read = super::par_map(&pieces, pieces.len(), |_, piece| {
        piece
            .iter()
            .map(|p| records(p, &convert))
            .collect::<Vec<_>>()
    });
    let mut indent = None;
    let mut all = Vec::new();
    for piece in read.into_iter().flatten() {
        let (ind, recs) = piece?;
        if let Some(ind) = ind
            && *indent.get_or_insert(ind) != ind
        {
            return None;
        }
        if all.is_empty() {
            all = recs;
        } else {
            all.extend(recs);
        }
    }
    Some((doc, all))
}

/// Rough length of one record line, to count lines from bytes.
const AVERAGE_LINE: usize = 50;

/// `text` cut at line ends into at most `n` pieces of about equal length.
fn split_lines(text: &str, n: usize) -> Vec<&str> {
    let mut pieces = Vec::with_capacity(n.max(1));
    let mut rest = text;
    for k in (2..=n).rev() {
        let want = rest.len() / k;
        // Byte search: `want` need not be a character boundary, the `\n` after it is.
        match rest.as_bytes()[want..].iter().position(|&b| b == b'\n') {
            Some(at) => {
                let (piece, tail) = rest.split_at(want + at + 1);
                pieces.push(piece);
                rest = tail;
            }
            None => break,
        }
    }
    pieces.push(rest);
    pieces
}

/// The records of one piece of the body, each through `convert`, and the indentation of
/// its record lines.
fn records<T>(
    body: &str,
    convert: &impl Fn(RecordDoc) -> Option<T>,
) -> Option<(Option<usize>, Vec<T>)> {
    let mut indent = None;
    let mut records = Vec::with_capacity(body.len() / AVERAGE_LINE + 1);
    for line in body.lines() {
        let t = line.trim_end();
        let body = t.trim_start();
        if body.is_empty() || body.starts_with('#') {
            continue;
        }
        let ind = t.len() - body.len();
        if *indent.get_or_insert(ind) != ind || !t[..ind].bytes().all(|b| b == b' ') {
            return None;
        }
        let (pairs, after) = mapping(body.strip_prefix("- {")?)?;
        let trimmed = after.trim_start();
        // Nothing after the mapping but a comment, which needs a space before its `#`.
        if !(trimmed.is_empty() || (trimmed.starts_with('#') && trimmed.len() < after.len())) {
            return None;
        }
        let doc = RecordDoc::deserialize(Map {
            pairs: pairs.into_iter(),
            value: None,
        })
        .ok()?;
        records.push(convert(doc)?);
    }
    Some((indent, records))
}

/// True if every character is one YAML allows in a stream (YAML 1.2 §5.1 `c-printable`,
/// which is also libyaml's reader check), every line break is `\n` or `\r\n`, and there
/// is no tab. YAML also breaks lines at a lone `\r`, NEL, LS and PS, which `str::lines`
/// does not, so the two would see different lines (found by fuzzing: a lone CR inside a
/// comment). Tabs are never indentation to YAML but may separate tokens; those rules are
/// the full parser's to apply (found by fuzzing: a tab-only line after `records:` was a
/// blank line here and an error there).
fn fast_readable(text: &str) -> bool {
    if text.is_ascii() {
        // The common case (a 100,000-record zone is megabytes): one pass the compiler can
        // vectorize, and a second one only if there is a CR at all.
        let b = text.as_bytes();
        let printable = b.iter().all(|&c| matches!(c, b'\n' | b'\r' | 0x20..=0x7e));
        return printable
            && (!b.contains(&b'\r')
                || b.iter()
                    .enumerate()
                    .all(|(i, &c)| c != b'\r' || b.get(i + 1) == Some(&b'\n')));
    }
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let ok = match c {
            '\r' => chars.peek() == Some(&'\n'),
            '\n' | '\u{20}'..='\u{7e}' => true,
            '\u{85}' | '\u{2028}' | '\u{2029}' => false,
            '\u{a0}'..='\u{d7ff}' | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}' => true,
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// The text before the one top-level `records:` line, and the text after it.
pub(super) fn split_records(text: &str) -> Option<(&str, &str)> {
    let mut found = None;
    // Only lines that start with `records:` can be it: look for those, not at every line.
    for (at, _) in text.match_indices("records:") {
        if at > 0 && text.as_bytes()[at - 1] != b'\n' {
            continue;
        }
        let line_len = text[at..].find('\n').map_or(text.len() - at, |n| n + 1);
        let line = &text[at..at + line_len];
        let key = line.trim_end();
        let key = key.split_once(" #").map_or(key, |(k, _)| k.trim_end());
        if key == "records:" {
            if found.is_some() {
                return None;
            }
            found = Some((at, at + line_len));
        }
    }
    let (start, end) = found?;
    Some((&text[..start], &text[end..]))
}

/// A scalar as written.
#[derive(Debug, Clone, Copy)]
enum Scalar<'a> {
    Plain(&'a str),
    Quoted(&'a str),
}

/// Reads `k: v, k: v }` (after the opening brace); returns the pairs and what follows `}`.
#[allow(clippy::type_complexity)]
fn mapping(s: &str) -> Option<(Vec<(&str, Scalar<'_>)>, &str)> {
    let mut pairs = Vec::with_capacity(8);
    let mut rest = s.trim_start();
    loop {
        let key_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let (key, r) = rest.split_at(key_end);
        if key.is_empty() || !key.as_bytes()[0].is_ascii_alphabetic() {
            return None;
        }
        // A plain key ends with ": " in a flow mapping.
        let r = r.strip_prefix(": ")?.trim_start();
        let (value, r) = scalar(r)?;
        pairs.push((key, value));
        let r = r.trim_start();
        if let Some(after) = r.strip_prefix('}') {
            return Some((pairs, after));
        }
        rest = r.strip_prefix(", ")?.trim_start();
    }
}

/// Reads one scalar; declines escapes, and plain scalars with anything but the characters
/// DNS names, addresses, types and NAPTR services use.
fn scalar(s: &str) -> Option<(Scalar<'_>, &str)> {
    let q = s.as_bytes().first().copied()?;
    if q == b'"' || q == b'\'' {
        let end = s[1..].find(char::from(q))? + 1;
        let inner = &s[1..end];
        // Escapes (`\` in double quotes, `''` in single quotes) and line breaks: decline.
        if inner.contains(['\\', '\n', '\r']) || s[end + 1..].starts_with(char::from(q)) {
            return None;
        }
        return Some((Scalar::Quoted(inner), &s[end + 1..]));
    }
    let end = s.find([',', '}']).unwrap_or(s.len());
    let v = s[..end].trim_end();
    let ok = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'+' | b'-' | b'/');
    if v.is_empty() || !v.bytes().all(ok) || v.starts_with(['-', '.', '+']) {
        return None;
    }
    Some((Scalar::Plain(v), &s[end..]))
}

/// True if YAML could read the plain scalar `v` as something other than a string (a
/// number in any notation, a bool, a null), so it must not be handed out as one.
fn not_plainly_a_string(v: &str) -> bool {
    const WORDS: [&str; 11] = [
        "null", "true", "false", "yes", "no", "on", "off", "y", "n", "inf", "nan",
    ];
    if WORDS.iter().any(|w| v.eq_ignore_ascii_case(w)) || v.parse::<f64>().is_ok() {
        return true;
    }
    // 0x1F, 0o17, 1_000, 0b101, 12e3 ...: anything that starts like a number and has only
    // digit-like characters after it.
    v.as_bytes()[0].is_ascii_digit()
        && v.bytes()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, b'x' | b'X' | b'o' | b'O' | b'_'))
}

/// The pairs of one flow mapping, handed to serde.
struct Map<'a, I: Iterator<Item = (&'a str, Scalar<'a>)>> {
    pairs: I,
    value: Option<Scalar<'a>>,
}

impl<'de, I: Iterator<Item = (&'de str, Scalar<'de>)>> MapAccess<'de> for Map<'de, I> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.pairs.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(k.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let v = self
            .value
            .take()
            .ok_or_else(|| de::Error::custom("value"))?;
        seed.deserialize(v)
    }
}

impl<'de, I: Iterator<Item = (&'de str, Scalar<'de>)>> de::Deserializer<'de> for Map<'de, I> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_map(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de> Scalar<'de> {
    fn string(self) -> Result<&'de str, Error> {
        match self {
            Self::Quoted(s) => Ok(s),
            Self::Plain(s) if !not_plainly_a_string(s) => Ok(s),
            Self::Plain(_) => Err(de::Error::custom("ambiguous plain scalar")),
        }
    }

    fn unsigned(self) -> Result<u64, Error> {
        match self {
            Self::Plain(s)
                if s.bytes().all(|c| c.is_ascii_digit()) && (s == "0" || !s.starts_with('0')) =>
            {
                s.parse().map_err(de::Error::custom)
            }
            _ => Err(de::Error::custom("not a plain decimal")),
        }
    }
}

macro_rules! unsigned {
    ($($f:ident)*) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_u64(self.unsigned()?)
        }
    )*};
}

impl<'de> de::Deserializer<'de> for Scalar<'de> {
    type Error = Error;

    /// Anything that asks "what is this?" (untagged enums, `text:`): decline.
    fn deserialize_any<V: Visitor<'de>>(self, _visitor: V) -> Result<V::Value, Error> {
        Err(de::Error::custom("needs the full parser"))
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.string()?)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_borrowed_str(self.string()?)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    unsigned!(deserialize_u8 deserialize_u16 deserialize_u32 deserialize_u64);

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u128 f32 f64 char bytes byte_buf unit unit_struct
        newtype_struct seq tuple tuple_struct map struct enum identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full(text: &str) -> Option<ZoneDoc> {
        yaml_serde::from_str(text).ok()
    }

    /// The fast reader either declines or agrees with the full parser.
    fn agrees(text: &str) -> bool {
        match parse(text) {
            None => false,
            Some(fast) => {
                assert_eq!(Some(&fast), full(text).as_ref(), "disagreement on:\n{text}");
                true
            }
        }
    }

    #[test]
    fn reads_the_shipped_and_generated_shapes() {
        let shipped = include_str!("../../zones/pbx.example.org.yaml");
        assert!(
            agrees(shipped),
            "the shipped example zone takes the fast path"
        );
        let mut big = String::from("zone: big.example.org\nmode: override\nttl: 300\nrecords:\n");
        for i in 0..300 {
            big.push_str(&format!(
                "  - {{ name: \"h{i}\", type: A, address: 127.3.{}.{} }}\n",
                i / 250,
                i % 250 + 1
            ));
        }
        big.push_str("  - { name: _sip._udp, type: SRV, priority: 10, weight: 1, port: 5060, target: 'h1' }\n");
        big.push_str(
            "  - { name: h1, type: AAAA, address: \"2001:db8::1\", ttl: 60 } # trailing\n",
        );
        assert!(agrees(&big));
        assert_eq!(parse(&big).map(|d| d.records.len()), Some(302));
    }

    #[test]
    fn declines_whatever_it_does_not_fully_understand() {
        let head = "zone: a.example.org\nrecords:\n";
        for line in [
            "  - name: x\n    type: A\n    address: 192.0.2.1\n", // block style
            "  - { name: x, type: TXT, text: hello }\n",          // untagged field
            "  - { name: 'it''s', type: A, address: 192.0.2.1 }\n",
            "  - { name: \"a\\tb\", type: A, address: 192.0.2.1 }\n",
            "  - { name: x, type: A, address: 192.0.2.1, }\n",
            "  - { name: x, type: A, ttl: 0x10, address: 192.0.2.1 }\n",
            "  - { name: x, type: A, ttl: 010, address: 192.0.2.1 }\n",
            "  - { name: x, type: A, ttl: null, address: 192.0.2.1 }\n",
            "  - { name: 123, type: A, address: 192.0.2.1 }\n",
            "  - { name: true, type: A, address: 192.0.2.1 }\n",
            "  - { name: 1e3, type: A, address: 192.0.2.1 }\n",
            "  - { name: x, type: AAAA, address: ::1 }\n",
            "  - { name: x, type: A, address: 192.0.2.1, bogus: 1 }\n",
            "  - { name: x, type: A, address: 192.0.2.1 }\n - { name: y, type: A, address: 192.0.2.2 }\n",
            "  - { name: &a x, type: A, address: 192.0.2.1 }\n",
            "  - { name: x,\n      type: A, address: 192.0.2.1 }\n",
        ] {
            assert!(parse(&format!("{head}{line}")).is_none(), "{line}");
        }
        assert!(parse("zone: a.example.org\n").is_none(), "no records line");
        assert!(
            parse("zone: a.example.org\nrecords:\n  - { name: x, type: A, address: 192.0.2.1 }\nmode: merge\n").is_none(),
            "a key after the records"
        );
    }

    /// Regression (fuzz `zone_yaml`, crash-bf689d4c and crash-2a20cf0f): a NUL (or any
    /// control character YAML forbids), or a lone CR (a line break to YAML, not to
    /// `str::lines`), in a comment line was skipped here and the zone loaded, while the
    /// full parser rejects the file.
    #[test]
    fn declines_characters_yaml_forbids_even_in_comments() {
        let good = "zone: a.example.org\nrecords:\n  # comment\n  - { name: x, type: A, address: 192.0.2.1 }\n";
        assert!(agrees(good));
        for bad in [
            "\0", "\u{7}", "\u{1b}", "\u{7f}", "\u{9f}", "\u{fffe}", "\r", "\r\r", "\u{85}",
            "\u{2028}", "\u{2029}",
        ] {
            let text = good.replace("# comment", &format!("# com{bad}ment"));
            assert!(parse(&text).is_none(), "{bad:?}");
            assert!(
                full(&text).is_none(),
                "{bad:?}: the full parser accepts it after all"
            );
        }
        for crash in [
            include_str!("../../tests/fixtures/fuzz/zone_yaml-nul-in-comment.yaml"),
            include_str!("../../tests/fixtures/fuzz/zone_yaml-cr-in-comment.yaml"),
        ] {
            assert!(parse(crash).is_none());
            assert!(full(crash).is_none());
        }
        // A tab anywhere: the full parser decides (regression: fuzz `zone_yaml`,
        // crash-cb8464fb, a tab-only line after `records:`, which the full parser rejects).
        let tab = include_str!("../../tests/fixtures/fuzz/zone_yaml-tab-line.yaml");
        assert!(parse(tab).is_none());
        assert!(full(tab).is_none());
        for text in [
            good.replace("  # comment", "\t"),
            good.replace("# comment", "#\tcomment"),
            good.replace("type: A", "type:\tA"),
        ] {
            assert!(parse(&text).is_none(), "{text:?}");
        }
        // CRLF line ends are fine.
        assert!(agrees(&good.replace('\n', "\r\n")));
    }

    /// Many generated lines mixing every token kind: whenever the fast reader accepts one,
    /// the full parser reads the same document.
    #[test]
    fn never_disagrees_with_the_full_parser() {
        let values = [
            "x",
            "_sip._udp",
            "@",
            "'@'",
            "\"@\"",
            "192.0.2.1",
            "'192.0.2.1'",
            "0",
            "7",
            "07",
            "65535",
            "70000",
            "-1",
            "+1",
            "1.5",
            ".5",
            "1e3",
            "0x10",
            "1_0",
            "null",
            "~",
            "Null",
            "true",
            "No",
            "y",
            "on",
            "inf",
            ".inf",
            "nan",
            "A",
            "AAAA",
            "SRV",
            "NAPTR",
            "s",
            "S",
            "SIP+D2U",
            "'SIP+D2U'",
            "\"\"",
            "''",
            "a b",
            "'a, b'",
            "\"a}b\"",
            "2001:db8::1",
            "\"2001:db8::1\"",
            "a#b",
            "x.",
            "'x.'",
            "a/b",
            "12ab",
            "1.2.3",
            "b'c",
            "'it''s'",
        ];
        let keys = [
            "name",
            "type",
            "address",
            "ip",
            "ttl",
            "priority",
            "weight",
            "port",
            "target",
            "order",
            "preference",
            "flags",
            "service",
            "services",
            "regexp",
            "replacement",
            "replace",
            "text",
            "bogus",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut accepted = 0;
        for _ in 0..20_000 {
            let mut text = String::from("zone: z.example.org\nttl: 60\nrecords:\n");
            for _ in 0..1 + next(3) {
                // Mostly the two required fields first, then anything.
                let mut fields: Vec<String> = Vec::new();
                if next(8) != 0 {
                    fields.push(format!("name: {}", values[next(12)]));
                    fields.push(format!("type: {}", values[next(values.len())]));
                }
                for _ in 0..next(5) {
                    let k = keys[next(keys.len())];
                    fields.push(format!("{k}: {}", values[next(values.len())]));
                }
                if fields.is_empty() {
                    fields.push("name: x".into());
                }
                text.push_str(&format!("  - {{ {} }}\n", fields.join(", ")));
            }
            if agrees(&text) {
                accepted += 1;
            }
        }
        assert!(
            accepted > 100,
            "the fast path should accept many ({accepted})"
        );
    }

    #[test]
    fn split_lines_cuts_only_at_line_ends_even_in_non_ascii_text() {
        let text = "a: 1\n  - { name: \"ñandú\", x: ü }\n\n  - { z: 3 }\nlast";
        for n in 1..=8 {
            let pieces = split_lines(text, n);
            assert!(!pieces.is_empty() && pieces.len() <= n);
            assert_eq!(pieces.concat(), text, "{n} pieces");
            for p in &pieces[..pieces.len() - 1] {
                assert!(p.ends_with('\n'), "{p:?}");
            }
        }
    }

    /// A zone large enough to be read on every core reads the same as with the full
    /// parser, and one bad line anywhere (here in the last piece) declines the whole file.
    #[test]
    fn large_zones_read_in_pieces_agree_with_the_full_parser() {
        let mut big = String::from("zone: big.example.org\nttl: 300\nrecords:\n");
        for i in 0..30_000 {
            match i % 4 {
                0 => big.push_str(&format!(
                    "  - {{ name: h{i}, type: A, address: 192.0.2.{} }}\n",
                    i % 250 + 1
                )),
                1 => big.push_str(&format!(
                    "  - {{ name: h{i}, type: AAAA, address: \"2001:db8::{:x}\" }}\n",
                    i
                )),
                2 => big.push_str(&format!(
                    "  - {{ name: _sip._udp.s{i}, type: SRV, priority: 10, weight: {}, port: 5060, target: h{} }}\n",
                    i % 7,
                    i - 2
                )),
                _ => big.push_str("  # a comment line between records\n"),
            }
        }
        // Big enough to be cut into one piece per core.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(
            super::super::threads_for(big.len() / AVERAGE_LINE),
            cores.clamp(1, 8)
        );
        assert!(agrees(&big));
        assert_eq!(parse(&big).map(|d| d.records.len()), Some(22_500));
        // A block-style record at the very end: the fast reader must decline, whichever
        // piece it falls in.
        let mut bad = big.clone();
        bad.push_str("  - name: x\n    type: A\n    address: 192.0.2.1\n");
        assert!(parse(&bad).is_none());
        // A different indentation in the last piece only.
        let mut shifted = big;
        shifted.push_str("    - { name: y, type: A, address: 192.0.2.2 }\n");
        assert!(parse(&shifted).is_none());
    }
}
