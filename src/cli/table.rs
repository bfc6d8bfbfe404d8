//! Aligned text tables for people: columns padded to their widest cell, two spaces apart.

/// A table: an optional header row and rows of cells.
#[derive(Debug, Default)]
pub struct Table {
    header: Option<Vec<String>>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new(header: &[&str]) -> Self {
        Self {
            header: Some(header.iter().map(|h| (*h).to_owned()).collect()),
            rows: Vec::new(),
        }
    }

    /// A table without titles (key / value lists).
    pub fn plain() -> Self {
        Self::default()
    }

    /// Adds a row.
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, one line per row; the last column is not padded.
    pub fn render(&self) -> String {
        let all: Vec<&Vec<String>> = self.header.iter().chain(&self.rows).collect();
        let cols = all.iter().map(|r| r.len()).max().unwrap_or(0);
        let mut widths = vec![0; cols];
        for r in &all {
            for (w, c) in widths.iter_mut().zip(r.iter()) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for r in all {
            let mut line = String::new();
            for (i, c) in r.iter().enumerate() {
                if i + 1 == r.len() {
                    line.push_str(c);
                } else {
                    let pad = widths.get(i).copied().unwrap_or(0) - c.chars().count();
                    line.push_str(c);
                    line.push_str(&" ".repeat(pad + 2));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["A", "LONGER", "C"]);
        t.row(vec!["xyz".into(), "1".into(), "last".into()]);
        assert_eq!(t.render(), "A    LONGER  C\nxyz  1       last\n");
    }
}
