//! Every error of an RFC 1035 zone file, each at its entry's first line and, where it can
//! be told, the field at fault (`SRV.port`, `A.address`, `$TTL`).
//!
//! hickory's parser stops at the first error and says neither where nor which field. On
//! the error path only, the bad entry is found by bisecting over whole entries (the
//! smallest prefix that fails), blanked out, and the search repeated, up to
//! [`MAX_ERRORS`] and within a parse budget, so a broken 100,000-record file cannot hold a
//! reload for long. The field is found by reading the entry's RDATA against its type's
//! fields (RFC 1035 §3.3, RFC 2782, RFC 3403).

use std::path::Path;

use hickory_proto::{rr::Name, serialize::txt::Parser};

use crate::config::FileError;

/// At most this many errors are reported per file.
const MAX_ERRORS: usize = 20;
/// Bytes parsed looking for errors after the first one, at most this many times the size
/// of the file (and at least [`MIN_BUDGET`]).
const BUDGET_FACTOR: usize = 16;
const MIN_BUDGET: usize = 1 << 20;

/// The errors of `text`, which hickory rejected with `first` (the message used when no
/// entry can be blamed).
pub(super) fn errors(
    path: &Path,
    text: &str,
    origin: Option<&Name>,
    first: &str,
) -> Vec<FileError> {
    let entries = entries(text);
    let mut work = text.as_bytes().to_vec();
    let mut blanked = vec![false; entries.len()];
    let mut budget = (text.len() * BUDGET_FACTOR).max(MIN_BUDGET);
    let mut out = Vec::new();
    let parse = |work: &[u8], end: usize, budget: &mut usize| {
        *budget = budget.saturating_sub(end);
        // Blanking replaces whole characters with spaces: still UTF-8.
        let prefix = std::str::from_utf8(&work[..end]).unwrap_or_default();
        // No path: `$INCLUDE` was expanded (inside zones/ only) before; see `load`.
        Parser::new(prefix, None, origin.cloned())
            .parse()
            .err()
            .map(|e| e.to_string())
    };
    let at = |line: Option<usize>, field: Option<String>, reason: &str| FileError {
        file: path.display().to_string(),
        line,
        column: None,
        field,
        reason: format!("zone file error: {reason}"),
    };
    while out.len() < MAX_ERRORS {
        let Some(last) = entries.len().checked_sub(1) else {
            break;
        };
        if !out.is_empty() {
            if budget == 0 {
                out.push(FileError::whole(
                    path,
                    "more errors may follow (the file is large: stopped looking)",
                ));
                break;
            }
            if parse(&work, work.len(), &mut budget).is_none() {
                break;
            }
        }
        // Smallest k such that the prefix up to entry k fails.
        let Some(mut reason) = parse(&work, entries[last].end, &mut budget) else {
            // A prefix never fails, yet the whole does (e.g. an error only visible at
            // the end, such as a missing SOA): blame the last entry.
            out.push(at(Some(entries[last].line), None, first));
            break;
        };
        let (mut lo, mut hi) = (0usize, last);
        while lo < hi {
            let mid = (lo + hi) / 2;
            match parse(&work, entries[mid].end, &mut budget) {
                Some(r) => {
                    hi = mid;
                    reason = r;
                }
                None => lo = mid + 1,
            }
        }
        let e = &entries[lo];
        if blanked[lo] {
            break;
        }
        out.push(at(Some(e.line), field(&text[e.line_start..e.end]), &reason));
        blanked[lo] = true;
        for b in &mut work[e.start..e.end] {
            if *b != b'\n' {
                *b = b' ';
            }
        }
    }
    if out.is_empty() {
        out.push(at(None, None, first));
    }
    out
}

/// One entry of a zone file.
struct Entry {
    /// Its first line (1-based).
    line: usize,
    /// Byte offset of that line.
    line_start: usize,
    /// Byte offset of its first non-blank character.
    start: usize,
    /// One past its end (its last line break included).
    end: usize,
}

/// Every non-empty entry of a zone file, honouring comments, quotes and parentheses
/// (RFC 1035 §5.1).
fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut comment, mut escaped) = (0usize, false, false, false);
    let (mut line, mut line_start) = (1usize, 0usize);
    let mut open: Option<(usize, usize, usize)> = None;
    for (i, c) in text.char_indices() {
        if c == '\n' {
            comment = false;
            if depth == 0
                && !quoted
                && let Some((l, ls, s)) = open.take()
            {
                out.push(Entry {
                    line: l,
                    line_start: ls,
                    start: s,
                    end: i + 1,
                });
            }
            line += 1;
            line_start = i + 1;
            continue;
        }
        if comment {
            continue;
        }
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                comment = true;
                continue;
            }
            '(' if !quoted => depth += 1,
            ')' if !quoted => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !c.is_whitespace() && open.is_none() {
            open = Some((line, line_start, i));
        }
    }
    if let Some((l, ls, s)) = open {
        out.push(Entry {
            line: l,
            line_start: ls,
            start: s,
            end: text.len(),
        });
    }
    out
}

/// What a field of RDATA must look like.
#[derive(Clone, Copy)]
enum Kind {
    U16,
    U32,
    /// A TTL-like number, with BIND units allowed (`1h`, `2d`).
    Time,
    Ipv4,
    Ipv6,
    /// A name or a character string: anything.
    Any,
}

/// The RDATA fields of the types sipdns serves from zone files.
fn fields(rtype: &str) -> Option<&'static [(&'static str, Kind)]> {
    use Kind::{Any, Ipv4, Ipv6, Time, U16, U32};
    Some(match rtype {
        "A" => &[("address", Ipv4)],
        "AAAA" => &[("address", Ipv6)],
        "NS" => &[("nsdname", Any)],
        "CNAME" => &[("target", Any)],
        "PTR" => &[("ptrdname", Any)],
        "MX" => &[("preference", U16), ("exchange", Any)],
        "SRV" => &[
            ("priority", U16),
            ("weight", U16),
            ("port", U16),
            ("target", Any),
        ],
        "NAPTR" => &[
            ("order", U16),
            ("preference", U16),
            ("flags", Any),
            ("service", Any),
            ("regexp", Any),
            ("replacement", Any),
        ],
        "SOA" => &[
            ("mname", Any),
            ("rname", Any),
            ("serial", U32),
            ("refresh", Time),
            ("retry", Time),
            ("expire", Time),
            ("minimum", Time),
        ],
        "TXT" => &[("text", Any)],
        _ => return None,
    })
}

/// The field at fault in `entry` (its text from the start of its first line): `$TTL` for
/// a directive, `TYPE.field` for the first RDATA field that cannot be read, `TYPE` when
/// the fields look right, `type` when no known type is found.
fn field(entry: &str) -> Option<String> {
    let mut tokens = tokens(entry);
    if tokens.first().is_some_and(|t| t.starts_with('$')) {
        return tokens.first().map(|t| t.to_ascii_uppercase());
    }
    // An entry that starts with a blank has no owner (it is the previous entry's).
    if !entry.starts_with([' ', '\t']) && !tokens.is_empty() {
        tokens.remove(0);
    }
    let is_class = |t: &str| matches!(t, "IN" | "CH" | "HS" | "CS");
    let pos = tokens.iter().position(|t| {
        let u = t.to_ascii_uppercase();
        !is_class(&u) && !is_time(t)
    })?;
    let rtype = tokens[pos].to_ascii_uppercase();
    let Some(spec) = fields(&rtype) else {
        return Some("type".to_owned());
    };
    let rdata = &tokens[pos + 1..];
    for (k, (name, kind)) in spec.iter().enumerate() {
        let Some(v) = rdata.get(k) else {
            return Some(format!("{rtype}.{name}"));
        };
        let ok = match kind {
            Kind::U16 => v.parse::<u16>().is_ok(),
            Kind::U32 => v.parse::<u32>().is_ok(),
            Kind::Time => is_time(v),
            Kind::Ipv4 => v.parse::<std::net::Ipv4Addr>().is_ok(),
            Kind::Ipv6 => v.parse::<std::net::Ipv6Addr>().is_ok(),
            Kind::Any => true,
        };
        if !ok {
            return Some(format!("{rtype}.{name}"));
        }
    }
    Some(rtype)
}

/// `3600`, `1h`, `1h30m` (BIND's TTL units).
fn is_time(t: &str) -> bool {
    let t = t.to_ascii_lowercase();
    !t.is_empty()
        && t.as_bytes()[0].is_ascii_digit()
        && t.bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b's' | b'm' | b'h' | b'd' | b'w'))
}

/// The entry's tokens: comments dropped, parentheses as blanks, a quoted string one token.
fn tokens(entry: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let (mut quoted, mut escaped, mut comment) = (false, false, false);
    for c in entry.chars() {
        if comment {
            if c == '\n' {
                comment = false;
            }
            continue;
        }
        if escaped {
            cur.push(c);
            escaped = false;
            continue;
        }
        match c {
            '\\' => {
                cur.push(c);
                escaped = true;
            }
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            ';' if !quoted => comment = true,
            c if !quoted && (c.is_whitespace() || c == '(' || c == ')') => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_named_from_the_rdata() {
        assert_eq!(field("gw IN A 192.0.2.300\n").as_deref(), Some("A.address"));
        assert_eq!(
            field("_sip._udp 300 IN SRV 10 1 many gw\n").as_deref(),
            Some("SRV.port")
        );
        assert_eq!(
            field("    IN SRV 10 1 5060\n").as_deref(),
            Some("SRV.target")
        );
        assert_eq!(
            field("@ IN SOA ns1 hostmaster ( x 3600 ; serial\n 600 86400 30 )\n").as_deref(),
            Some("SOA.serial")
        );
        assert_eq!(field("$TTL 5x\n").as_deref(), Some("$TTL"));
        assert_eq!(field("gw IN BOGUS 1\n").as_deref(), Some("type"));
        assert_eq!(
            field("info IN TXT \"a ; b\"\n").as_deref(),
            Some("TXT"),
            "a quoted `;` is text"
        );
    }
}
