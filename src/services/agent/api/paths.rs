//! Path checks for the agent API: absolute only, normalised, and confined to the
//! workspace root when one is configured (resolving `..` and symlinks of existing
//! ancestors, so neither can step outside).

use std::path::{Component, Path, PathBuf};

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Empty, relative, or containing NUL.
    #[error("{0}")]
    Invalid(String),
    /// Outside the configured root.
    #[error("path {0:?} is outside the workspace root")]
    Outside(String),
}

/// Lexically normalises an absolute path: removes `.`, applies `..` (never above `/`).
///
/// # Errors
/// [`PathError::Invalid`] for an empty or relative path, or one containing NUL.
pub fn normalize(raw: &str) -> Result<PathBuf, PathError> {
    if raw.is_empty() {
        return Err(PathError::Invalid("path is required".into()));
    }
    if raw.contains('\0') {
        return Err(PathError::Invalid("path contains a NUL byte".into()));
    }
    let p = Path::new(raw);
    if !p.is_absolute() {
        return Err(PathError::Invalid(format!(
            "path must be absolute, got {raw:?}"
        )));
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(s) => out.push(s),
        }
    }
    Ok(out)
}

/// Whether every name and value of a URL query decodes to valid UTF-8. Decoders replace
/// bad bytes with U+FFFD, which would silently turn a request for one path into a request
/// for another; such queries are refused instead.
pub fn query_is_utf8(query: &str) -> bool {
    query.split('&').all(|pair| {
        let b = pair.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            match b[i] {
                b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                },
                c => out.push(c),
            }
            i += 1;
        }
        std::str::from_utf8(&out).is_ok()
    })
}

/// Whether `path` is `root` or below it (both already normalised or canonical).
pub fn is_within(root: &Path, path: &Path) -> bool {
    path.starts_with(root)
}

/// `root` with its symlinks resolved. Learnt once per root (an agent has one): resolving
/// it cost a `readlink` per component on every file operation. A root moved or replaced
/// after that is still held to where it was, which can only refuse more.
pub fn canonical_root(root: &Path) -> PathBuf {
    static LAST: std::sync::Mutex<Option<(PathBuf, PathBuf)>> = std::sync::Mutex::new(None);
    let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((given, canonical)) = last.as_ref()
        && given == root
    {
        return canonical.clone();
    }
    match root.canonicalize() {
        Ok(c) => {
            *last = Some((root.to_path_buf(), c.clone()));
            c
        }
        // Not cached: the root may appear later.
        Err(_) => root.to_path_buf(),
    }
}

/// Resolves a request path: normalised, and when `root` is set, checked against the
/// canonical root after resolving symlinks in the longest existing ancestor.
///
/// # Errors
/// [`PathError`] as above.
pub fn resolve(root: Option<&Path>, raw: &str) -> Result<PathBuf, PathError> {
    let path = normalize(raw)?;
    let Some(root) = root else { return Ok(path) };
    let root = canonical_root(root);
    // Canonicalise the longest existing prefix (symlinks resolved), then re-append the
    // components that do not exist yet.
    let mut existing = path.clone();
    let mut rest = Vec::new();
    let canonical = loop {
        match existing.canonicalize() {
            Ok(c) => break c,
            Err(_) => match (
                existing.file_name().map(|n| n.to_os_string()),
                existing.parent(),
            ) {
                (Some(name), Some(parent)) => {
                    rest.push(name);
                    existing = parent.to_path_buf();
                }
                _ => break existing.clone(),
            },
        }
    };
    let mut full = canonical;
    for name in rest.into_iter().rev() {
        full.push(name);
    }
    if is_within(&root, &full) {
        Ok(path)
    } else {
        Err(PathError::Outside(raw.to_string()))
    }
}

/// [`resolve`] without resolving symlinks: the path, normalised, must be written below
/// `root` (as given or canonical). Enough only where the kernel refuses every step
/// outside the root at the open itself (`confine::kernel_confines`).
///
/// # Errors
/// [`PathError`] as above.
pub fn resolve_lexically(root: Option<&Path>, raw: &str) -> Result<PathBuf, PathError> {
    let path = normalize(raw)?;
    let Some(root) = root else { return Ok(path) };
    if is_within(root, &path) || is_within(&canonical_root(root), &path) {
        Ok(path)
    } else {
        Err(PathError::Outside(raw.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_with_bad_utf8_are_spotted() {
        assert!(query_is_utf8("path=/a%20b&limit=3"));
        assert!(query_is_utf8("path=/%E2%82%AC"));
        assert!(query_is_utf8("path=100%"));
        assert!(query_is_utf8("path=%zz%4"));
        assert!(!query_is_utf8("path=/%FF%FE"));
        assert!(!query_is_utf8("path=/%E2%82"));
        assert!(!query_is_utf8("a=1&path%FF=x"));
    }

    #[test]
    fn normalizes_and_rejects() {
        assert_eq!(normalize("/a/./b/../c").unwrap(), PathBuf::from("/a/c"));
        assert_eq!(normalize("/../../etc").unwrap(), PathBuf::from("/etc"));
        assert!(matches!(normalize("a/b"), Err(PathError::Invalid(_))));
        assert!(matches!(normalize(""), Err(PathError::Invalid(_))));
        assert!(matches!(normalize("/a\0b"), Err(PathError::Invalid(_))));
    }

    #[test]
    fn confinement_follows_symlinks_of_ancestors() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
        let r = Some(root.as_path());
        let ok = root.join("new/file.txt");
        assert!(resolve(r, ok.to_str().unwrap()).is_ok());
        let up = format!("{}/../outside/x", root.display());
        assert!(matches!(resolve(r, &up), Err(PathError::Outside(_))));
        let via_link = root.join("escape/x");
        assert!(matches!(
            resolve(r, via_link.to_str().unwrap()),
            Err(PathError::Outside(_))
        ));
        assert!(matches!(
            resolve(r, "/etc/passwd"),
            Err(PathError::Outside(_))
        ));
    }
}
