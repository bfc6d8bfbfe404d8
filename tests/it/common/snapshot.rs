//! What a directory holds, byte for byte, to assert that a failed write changed nothing.

use std::{collections::BTreeMap, path::Path};

/// Every file in `dir` (not below it) with its bytes, by file name.
pub(crate) fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect()
}
