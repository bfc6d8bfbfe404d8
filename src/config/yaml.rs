//! Strict YAML reading shared by the config file and the YAML zone files: errors carry the
//! file, line, column and the field path, and a field path found wrong by a later semantic
//! check can be turned back into its line.

use std::{fmt, path::Path};

use serde::de::DeserializeOwned;

/// Where in a file something is wrong, and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct FileError {
    /// The file.
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// 1-based column, when known.
    pub column: Option<usize>,
    /// The field path (`sip.domains[0].fall`), when known.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        f.write_str(": ")?;
        if let Some(field) = &self.field {
            write!(f, "field `{field}`: ")?;
        }
        f.write_str(&self.reason)
    }
}

impl FileError {
    /// An error at a field path, its line found in `text`.
    pub fn at_field(file: &Path, text: &str, field: &str, reason: impl Into<String>) -> Self {
        Self {
            file: file.display().to_string(),
            line: line_of(text, field),
            column: None,
            field: Some(field.to_owned()),
            reason: reason.into(),
        }
    }

    /// An error about the whole file (unreadable, ...).
    pub fn whole(file: &Path, reason: impl Into<String>) -> Self {
        Self {
            file: file.display().to_string(),
            line: None,
            column: None,
            field: None,
            reason: reason.into(),
        }
    }
}

/// Deserializes `text` (the contents of `file`) strictly.
pub fn from_str<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, FileError> {
    yaml_serde::from_str::<T>(text).map_err(|e| {
        let loc = e.location();
        let msg = e.to_string();
        // yaml_serde writes "path.to.field: reason at line L column C"; split that apart so
        // the message reads file:line:col: field `path`: reason.
        let msg = match msg.rfind(" at line ") {
            Some(i) => msg[..i].to_owned(),
            None => msg,
        };
        let (field, reason) = split_field(&msg);
        FileError {
            file: file.display().to_string(),
            line: loc.as_ref().map(|l| l.line()),
            column: loc.as_ref().map(|l| l.column()),
            field,
            reason,
        }
    })
}

fn split_field(msg: &str) -> (Option<String>, String) {
    if let Some((head, tail)) = msg.split_once(": ") {
        let looks_like_path = !head.is_empty()
            && !head.contains(' ')
            && head
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._[]-".contains(c));
        if looks_like_path {
            return (Some(head.to_owned()), tail.to_owned());
        }
    }
    (None, msg.to_owned())
}

/// Finds the line of a field path such as `sip.domains[1].fall` in block-style YAML text.
/// Best effort: returns the line of the deepest part of the path it can find.
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let mut start = 0usize; // first line of the current block
    let mut end = lines.len(); // one past its last line
    let mut min_indent: isize = -1; // keys of the current block are indented deeper than this
    let mut found = None;
    for seg in segments(path) {
        match seg {
            Seg::Key(key) => {
                let hit = (start..end).find(|&i| {
                    let (ind, body) = indent_of(lines[i]);
                    (ind as isize) > min_indent
                        && (body.starts_with(&format!("{key}:"))
                            || body.starts_with(&format!("- {key}:"))
                            || body.starts_with(&format!("\"{key}\":")))
                });
                let Some(i) = hit else {
                    return found;
                };
                let (ind, body) = indent_of(lines[i]);
                let ind = if body.starts_with("- ") { ind + 2 } else { ind };
                found = Some(i + 1);
                start = i + 1;
                end = block_end(&lines, start, ind);
                min_indent = ind as isize;
            }
            Seg::Index(n) => {
                let mut count = 0usize;
                let mut item_indent = None;
                let mut hit = None;
                for (i, line) in lines.iter().enumerate().take(end).skip(start) {
                    let (ind, body) = indent_of(line);
                    if body.starts_with("- ") || body == "-" {
                        if item_indent.is_none() {
                            item_indent = Some(ind);
                        }
                        if Some(ind) == item_indent {
                            if count == n {
                                hit = Some(i);
                                break;
                            }
                            count += 1;
                        }
                    }
                }
                let Some(i) = hit else {
                    return found;
                };
                let (ind, _) = indent_of(lines[i]);
                found = Some(i + 1);
                // The item's keys start on its own line, after "- ".
                start = i;
                end = block_end_item(&lines, i + 1, ind);
                // The item's first key shares the dash's line and indent ("- name: x").
                min_indent = ind as isize - 1;
            }
        }
    }
    found
}

enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let mut rest = part;
        if let Some(i) = rest.find('[') {
            if i > 0 {
                out.push(Seg::Key(rest[..i].to_owned()));
            }
            rest = &rest[i..];
            while let Some(stripped) = rest.strip_prefix('[') {
                let Some(close) = stripped.find(']') else {
                    break;
                };
                if let Ok(n) = stripped[..close].parse() {
                    out.push(Seg::Index(n));
                }
                rest = &stripped[close + 1..];
            }
        } else if !rest.is_empty() {
            out.push(Seg::Key(rest.to_owned()));
        }
    }
    out
}

fn indent_of(line: &str) -> (usize, &str) {
    let body = line.trim_start();
    (line.len() - body.len(), body)
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.is_empty() || t.starts_with('#')
}

/// End of the block of lines indented deeper than `indent`, starting at `from`.
fn block_end(lines: &[&str], from: usize, indent: usize) -> usize {
    let mut i = from;
    while i < lines.len() {
        if !is_blank_or_comment(lines[i]) {
            let (ind, body) = indent_of(lines[i]);
            // A sequence may sit at the same indent as its key ("key:\n- a").
            if ind < indent || (ind == indent && !body.starts_with('-')) {
                break;
            }
        }
        i += 1;
    }
    i
}

/// End of one sequence item whose dash sits at `indent`.
fn block_end_item(lines: &[&str], from: usize, indent: usize) -> usize {
    let mut i = from;
    while i < lines.len() {
        if !is_blank_or_comment(lines[i]) {
            let (ind, _) = indent_of(lines[i]);
            if ind <= indent {
                break;
            }
        }
        i += 1;
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
dns:
  listen:
    - 127.0.0.1:5353
sip:
  domains:
    - name: a.example.org
      ttl: 30
    - name: b.example.org
      # a comment
      ttl: 40
      fallback:
        - address: 192.0.2.9
";

    #[test]
    fn finds_lines_of_paths() {
        assert_eq!(line_of(TEXT, "dns"), Some(1));
        assert_eq!(line_of(TEXT, "dns.listen[0]"), Some(3));
        assert_eq!(line_of(TEXT, "sip.domains[0].ttl"), Some(7));
        assert_eq!(line_of(TEXT, "sip.domains[1].name"), Some(8));
        assert_eq!(line_of(TEXT, "sip.domains[1].ttl"), Some(10));
        assert_eq!(
            line_of(TEXT, "sip.domains[1].fallback[0].address"),
            Some(12)
        );
        assert_eq!(line_of(TEXT, "nope"), None);
        // A missing field points at its closest existing parent.
        assert_eq!(line_of(TEXT, "sip.domains[1].port"), Some(8));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct T {
        a: u16,
        #[serde(default)]
        b: Option<u16>,
    }

    #[test]
    fn parse_errors_name_file_line_and_field() {
        let e = from_str::<T>(Path::new("x.yaml"), "a: 1\nc: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert!(e.reason.contains("unknown field `c`"), "{e}");
        let e = from_str::<T>(Path::new("x.yaml"), "a: 1\nb: 70000\n").unwrap_err();
        assert_eq!(e.line, Some(2));
        assert_eq!(e.field.as_deref(), Some("b"));
        assert!(e.to_string().starts_with("x.yaml:2:"), "{e}");
    }
}
