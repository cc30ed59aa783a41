//! Search/replace edits across files: validated in memory first, then each file written
//! atomically, with a unified diff per file.

use super::files::write_atomic;
use super::{AgentApi, Error, rejection};
use crate::services::agent::types::{Edit, EditFilesRequest, EditFilesResponse, FileEditResult};
use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;

/// Why an edit could not apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The search text is empty.
    #[error("edit {index}: search text is empty")]
    EmptySearch {
        /// 0-based edit index within its file.
        index: usize,
    },
    /// The search text does not occur.
    #[error("edit {index}: search text not found")]
    NotFound {
        /// 0-based edit index within its file.
        index: usize,
    },
    /// The search text occurs more than once and `replace_all` is not set.
    #[error(
        "edit {index}: search text is ambiguous ({count} matches); make it unique or set replace_all"
    )]
    Ambiguous {
        /// 0-based edit index within its file.
        index: usize,
        /// How many times it occurs.
        count: usize,
    },
    /// Applying the edit would make the text larger than allowed.
    #[error("edit {index}: the result would exceed {limit} bytes")]
    TooLarge {
        /// 0-based edit index within its file.
        index: usize,
        /// The size limit, bytes.
        limit: usize,
    },
}

/// Applies `edits` in order to `text`, never producing more than `max_len` bytes (each
/// `replace_all` can multiply the size, so a few small edits could otherwise ask for
/// gigabytes). Returns the new text and the number of matches replaced; on any error
/// nothing is applied.
///
/// # Errors
/// [`EditError`] naming the first edit that does not apply.
pub fn apply_edits(text: &str, edits: &[Edit], max_len: usize) -> Result<(String, u64), EditError> {
    let mut cur = text.to_string();
    let mut total = 0u64;
    for (index, e) in edits.iter().enumerate() {
        if e.search.is_empty() {
            return Err(EditError::EmptySearch { index });
        }
        let count = cur.matches(e.search.as_str()).count();
        let applied = if count == 1 || e.replace_all {
            count
        } else {
            0
        };
        // Matches do not overlap, so what they remove fits in the text.
        let kept = cur.len() - applied * e.search.len();
        let new_len = e
            .replace
            .len()
            .checked_mul(applied)
            .and_then(|added| added.checked_add(kept));
        if new_len.is_none_or(|n| n > max_len) {
            return Err(EditError::TooLarge {
                index,
                limit: max_len,
            });
        }
        match count {
            0 => return Err(EditError::NotFound { index }),
            1 => cur = cur.replacen(e.search.as_str(), &e.replace, 1),
            _ if e.replace_all => cur = cur.replace(e.search.as_str(), &e.replace),
            n => return Err(EditError::Ambiguous { index, count: n }),
        }
        total += count as u64;
    }
    Ok((cur, total))
}

fn diff(path: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(&format!("a{path}"), &format!("b{path}"))
        .to_string()
}

pub(super) async fn edit_files(
    State(api): State<AgentApi>,
    req: Result<Json<EditFilesRequest>, JsonRejection>,
) -> Result<Json<EditFilesResponse>, Error> {
    let Json(req) = req.map_err(rejection)?;
    if req.files.is_empty() {
        return Err(Error::bad_request("no files to edit"));
    }
    let max_len = api.config().edit_max_bytes;
    // Validate everything before writing anything. A file named twice sees the result of
    // its earlier entry.
    let mut staged: Vec<(std::path::PathBuf, String, String, u64)> = Vec::new();
    for f in &req.files {
        let path = api.path(&f.path)?;
        let original = match staged.iter().rposition(|(p, ..)| *p == path) {
            Some(i) => staged[i].2.clone(),
            None => {
                let (mut file, meta) = super::files::open_file(api.root(), &path).await?;
                let size = meta.len();
                if size > max_len as u64 {
                    return Err(Error::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!(
                            "{}: {size} bytes is larger than the {max_len} bytes edits work on",
                            path.display()
                        ),
                    ));
                }
                let mut bytes = Vec::new();
                tokio::io::AsyncReadExt::read_to_end(&mut file, &mut bytes)
                    .await
                    .map_err(|e| Error::io(&path, e))?;
                String::from_utf8(bytes).map_err(|_| {
                    Error::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("{}: not UTF-8 text", path.display()),
                    )
                })?
            }
        };
        let (new, n) = apply_edits(&original, &f.edits, max_len).map_err(|e| {
            let status = match e {
                EditError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                _ => StatusCode::CONFLICT,
            };
            Error::new(status, format!("{}: {e}", path.display()))
        })?;
        staged.push((path, original, new, n));
    }
    let mut files = Vec::new();
    for (i, (path, original, new, _)) in staged.iter().enumerate() {
        // Only the last entry for a path is written (it holds every edit to it).
        if staged[i + 1..].iter().any(|(p, ..)| p == path) {
            continue;
        }
        let first_original = staged
            .iter()
            .find(|(p, ..)| p == path)
            .map(|(_, o, ..)| o.as_str())
            .unwrap_or(original);
        let body = futures_util::stream::iter([Ok::<_, std::convert::Infallible>(
            bytes::Bytes::from(new.clone()),
        )]);
        // An existing file keeps its own mode.
        write_atomic(api.root(), path, None, body, usize::MAX).await?;
        let total: u64 = staged
            .iter()
            .filter(|(p, ..)| p == path)
            .map(|(.., n)| *n)
            .sum();
        let shown = path.display().to_string();
        files.push(FileEditResult {
            path: shown.clone(),
            replacements: total,
            diff: req.include_diff.then(|| diff(&shown, first_original, new)),
        });
    }
    Ok(Json(EditFilesResponse { files }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(s: &str, r: &str, all: bool) -> Edit {
        Edit {
            search: s.into(),
            replace: r.into(),
            replace_all: all,
        }
    }

    #[test]
    fn unique_ambiguous_missing_and_all() {
        assert_eq!(
            apply_edits("a b c", &[e("b", "B", false)], 1 << 20).unwrap(),
            ("a B c".into(), 1)
        );
        assert_eq!(
            apply_edits("x x", &[e("x", "y", false)], 1 << 20),
            Err(EditError::Ambiguous { index: 0, count: 2 })
        );
        assert_eq!(
            apply_edits("x x", &[e("x", "y", true)], 1 << 20).unwrap(),
            ("y y".into(), 2)
        );
        assert_eq!(
            apply_edits("abc", &[e("b", "B", false), e("zz", "", false)], 1 << 20),
            Err(EditError::NotFound { index: 1 })
        );
        assert_eq!(
            apply_edits("abc", &[e("", "x", false)], 1 << 20),
            Err(EditError::EmptySearch { index: 0 })
        );
        // Later edits see earlier results.
        assert_eq!(
            apply_edits("ab", &[e("a", "c", false), e("cb", "d", false)], 1 << 20)
                .unwrap()
                .0,
            "d"
        );
    }

    #[test]
    fn growth_is_bounded() {
        // Each replace_all multiplies the size by ten: the fourth would pass 1 MiB.
        let ten = "aaaaaaaaaa";
        let edits: Vec<Edit> = (0..6).map(|_| e("a", ten, true)).collect();
        let text = "a".repeat(100);
        assert_eq!(
            apply_edits(&text, &edits, 1 << 20),
            Err(EditError::TooLarge {
                index: 4,
                limit: 1 << 20
            })
        );
        assert_eq!(
            apply_edits(&text, &edits[..4], 1 << 20).unwrap().0.len(),
            1_000_000
        );
        assert!(apply_edits("abc", &[e("b", "", false)], 2).is_ok());
    }
}
