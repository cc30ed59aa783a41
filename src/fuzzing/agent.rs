//! The agent API's pure parts: path normalisation and the edit engine.

use crate::services::agent::api::{EditError, apply_edits, paths};
use crate::services::agent::types::Edit;
use std::path::Path;

/// Path normalisation: an accepted path is absolute, has no `.`/`..` components, and is
/// within a root exactly when the lexical check says so.
pub fn agent_paths(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    match paths::normalize(&s) {
        Ok(p) => {
            assert!(p.is_absolute());
            assert!(p.components().all(|c| !matches!(
                c,
                std::path::Component::ParentDir | std::path::Component::CurDir
            )));
            // Normalising is idempotent.
            assert_eq!(
                paths::normalize(&p.to_string_lossy()).ok().as_deref(),
                Some(p.as_path())
            );
            let root = Path::new("/srv/workspace");
            assert_eq!(paths::is_within(root, &p), p.starts_with(root));
            // The lexical check passes exactly the paths written below the root (which
            // does not exist here, so it is its own canonical form).
            assert_eq!(
                paths::resolve_lexically(Some(root), &s).ok(),
                p.starts_with(root).then(|| p.clone())
            );
        }
        Err(_) => assert!(s.is_empty() || !s.starts_with('/') || s.contains('\0')),
    }
}

/// The edit engine: splits input into a text and edits. Invariants: an error changes
/// nothing; a unique replacement replaces exactly one occurrence; `replace_all` counts
/// every occurrence.
pub fn edit_apply(data: &[u8]) {
    let s = String::from_utf8_lossy(data);
    let mut parts = s.split('\u{1}');
    let text = parts.next().unwrap_or("").to_string();
    let mut edits = Vec::new();
    while let (Some(search), Some(replace)) = (parts.next(), parts.next()) {
        edits.push(Edit {
            search: search.to_string(),
            replace: replace.to_string(),
            replace_all: search.len() % 2 == 0,
        });
    }
    const LIMIT: usize = 1 << 16;
    match apply_edits(&text, &edits, LIMIT) {
        Ok((out, n)) => {
            assert!(n as usize >= edits.len());
            assert!(out.len() <= LIMIT.max(text.len()));
        }
        Err(
            EditError::NotFound { index }
            | EditError::EmptySearch { index }
            | EditError::Ambiguous { index, .. }
            | EditError::TooLarge { index, .. },
        ) => {
            assert!(index < edits.len())
        }
    }
    if let [e] = edits.as_slice()
        && let Ok((out, n)) = apply_edits(&text, &edits, LIMIT)
    {
        let count = text.matches(e.search.as_str()).count();
        assert_eq!(n as usize, count);
        if !e.replace_all {
            assert_eq!(count, 1);
            assert_eq!(out, text.replacen(e.search.as_str(), &e.replace, 1));
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_run() {
        super::agent_paths(b"/a/../b/./c");
        super::agent_paths(b"relative");
        super::edit_apply(b"hello world\x01world\x01there");
        super::edit_apply(b"aaa\x01aa\x01b");
    }
}
