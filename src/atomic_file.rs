//! Replacing a file atomically and without following anyone's symlinks: the one way sipdns
//! writes a file it will read back (API zone edits, the admin state file).
//!
//! A temporary file `.<name>.tmp` is created in the target's own directory with
//! `O_CREAT | O_EXCL | O_NOFOLLOW` (`create_new`): whatever already sits at that name — a
//! symlink planted by someone with write access to the directory, a directory — is never
//! opened, so the write cannot be redirected to another file. The bytes are written and
//! fsynced, the temp file is renamed over the target, and the directory is fsynced so the
//! rename survives a crash. After a crash the target holds the old or the new content,
//! never a part of either. On any error before the rename the temp file is removed and the
//! target is untouched.
//!
//! A regular file left at the temp name (a crash between create and rename) is removed and
//! the create retried once; anything else there (a symlink, a directory, a device) is
//! refused with an error naming it, and left for the operator to look at. Callers
//! serialize writes to one target (the reloader's lock, the admin table's mutex).

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
};

/// The temp file beside `path`: hidden (the zone loader skips dot files), in the same
/// directory so the rename cannot cross file systems.
pub fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Writes `bytes` to `path` atomically (see the module doc). The directory fsync after the
/// rename is best effort: past the rename every reader sees the new content, so a failure
/// there is logged, not returned.
pub fn write(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = temp_path(path);
    let mut file = create_temp(&tmp)?;
    let written = (|| {
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        // Ours: created by the open above, so removing it removes nothing of anyone else's.
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(path);
    Ok(())
}

/// fsyncs the directory of `path`, so a rename or unlink in it survives a crash. Logged,
/// not returned: the change itself is already visible.
pub fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot fsync the directory");
    }
}

/// Creates the temp file with `create_new` and `O_NOFOLLOW`; a stale regular file from a
/// crash is removed once, anything else at the name is an error naming it.
fn create_temp(tmp: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o644)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            // symlink_metadata does not follow: a planted symlink is seen as one.
            let meta = fs::symlink_metadata(tmp)?;
            if !meta.file_type().is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "the temporary file {} already exists and is not a regular file \
                         (a {}); it is not followed or replaced: remove it",
                        tmp.display(),
                        kind_of(&meta.file_type())
                    ),
                ));
            }
            tracing::warn!(file = %tmp.display(), "removing a temporary file left by an earlier write");
            // unlink never follows a symlink, so a swap after the check removes only a link.
            fs::remove_file(tmp)?;
            open()
        }
        other => other,
    }
}

fn kind_of(t: &fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt as _;
    if t.is_symlink() {
        "symlink"
    } else if t.is_dir() {
        "directory"
    } else if t.is_fifo() {
        "FIFO"
    } else if t.is_socket() {
        "socket"
    } else {
        "device"
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn writes_replace_the_file_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.yaml");
        write(&path, b"one").unwrap();
        write(&path, b"two").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "two");
        assert_eq!(names(dir.path()), vec!["z.yaml"]);
    }

    #[test]
    fn a_planted_symlink_at_the_temp_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "secret").unwrap();
        let path = dir.path().join("state.json");
        fs::write(&path, "old").unwrap();
        std::os::unix::fs::symlink(&victim, temp_path(&path)).unwrap();
        let e = write(&path, b"new").unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(e.to_string().contains(".state.json.tmp"), "{e}");
        assert_eq!(fs::read_to_string(&victim).unwrap(), "secret");
        assert_eq!(fs::read_to_string(&path).unwrap(), "old");
        // A dangling one is refused the same way (it would create the file it names).
        let elsewhere = dir.path().join("created-through-link");
        fs::remove_file(temp_path(&path)).unwrap();
        std::os::unix::fs::symlink(&elsewhere, temp_path(&path)).unwrap();
        assert!(write(&path, b"new").is_err());
        assert!(!elsewhere.exists());
    }

    #[test]
    fn a_stale_temp_file_from_a_crash_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("z.yaml");
        fs::write(temp_path(&path), "half a write").unwrap();
        write(&path, b"whole").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "whole");
        assert_eq!(names(dir.path()), vec!["z.yaml"]);
    }

    #[test]
    fn a_failed_rename_removes_the_temp_and_keeps_the_target() {
        let dir = tempfile::tempdir().unwrap();
        // A directory as the target: the rename of a file over it fails.
        let path = dir.path().join("target");
        fs::create_dir(&path).unwrap();
        fs::write(path.join("inside"), "kept").unwrap();
        assert!(write(&path, b"new").is_err());
        assert!(!temp_path(&path).exists());
        assert_eq!(fs::read_to_string(path.join("inside")).unwrap(), "kept");
    }
}
