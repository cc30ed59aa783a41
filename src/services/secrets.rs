//! Secrets kept in the data directory (tokens, keys, ids): written owner-only (0600), and
//! put back to owner-only when found readable by others.

use std::path::{Path, PathBuf};

/// A data-directory file could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source}")]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: std::io::Error,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FileError + '_ {
    move |source| FileError {
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a secret file (first line, trimmed), or creates it (mode 0600) with `make()`;
/// whether it was created.
///
/// # Errors
/// The file cannot be read or written.
pub fn read_or_create(
    path: &Path,
    make: impl FnOnce() -> String,
) -> Result<(String, bool), FileError> {
    match read(path)? {
        Some(s) => Ok((s, false)),
        None => {
            let v = make();
            write(path, &v)?;
            Ok((v, true))
        }
    }
}

/// Reads a secret file (trimmed), tightening its mode first; `None` if it does not exist.
///
/// # Errors
/// The file exists but cannot be read.
pub fn read(path: &Path) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            tighten_mode(path)?;
            Ok(Some(s.trim().to_string()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// A secrets file left readable by others (an older version, a copy, a hand edit) is put
/// back to owner-only before its content is used.
#[cfg(unix)]
fn tighten_mode(path: &Path) -> Result<(), FileError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    if meta.permissions().mode() & 0o077 != 0 {
        tracing::warn!(path = %path.display(), "secrets file was readable by others; mode set to 0600");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(io_err(path))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn tighten_mode(_path: &Path) -> Result<(), FileError> {
    Ok(())
}

/// Writes `value` and a newline to `path`, owner-only.
///
/// # Errors
/// The file cannot be written.
pub fn write(path: &Path, value: &str) -> Result<(), FileError> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    // `mode` applies only when the file is created; an existing one keeps its own, so it
    // is tightened before the secret goes in.
    tighten_mode(path)?;
    f.write_all(value.as_bytes()).map_err(io_err(path))?;
    f.write_all(b"\n").map_err(io_err(path))
}
