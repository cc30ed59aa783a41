//! File tools: `workspace_ls`, `workspace_read_file`, `workspace_read_file_lines`,
//! `workspace_write_file`, `workspace_edit_files`.

use super::out::{EditFilesOut, EditedFileOut, LsOut, ReadFileOut, ReadLinesOut, WriteFileOut};
use super::{Ctx, Cx};
use crate::services::agent::types::{Edit, EditFilesRequest, FileEdits};
use crate::services::mcp::args::{
    self, EditFilesArgs, PathArgs, ReadFileArgs, ReadLinesArgs, WriteFileArgs, check_path,
};
use crate::services::mcp::result::{ToolError, within};
use base64::Engine as _;

pub(super) async fn ls(cx: Cx, a: PathArgs, _: Ctx) -> Result<LsOut, ToolError> {
    check_path(&a.path, cx.limits())?;
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(cx.limits().request_timeout, client.ls(&a.path)).await?;
    Ok(LsOut {
        path: r.path,
        entries: r.entries.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn read(cx: Cx, a: ReadFileArgs, _: Ctx) -> Result<ReadFileOut, ToolError> {
    let limits = cx.limits();
    check_path(&a.path, limits)?;
    let limit = match a.limit {
        None => limits.read_default_bytes,
        Some(0) => return Err(ToolError::Invalid("limit must be positive".into())),
        Some(l) if l > limits.read_max_bytes => {
            return Err(ToolError::Invalid(format!(
                "limit {l} exceeds the maximum of {} bytes; read in pieces with offset",
                limits.read_max_bytes
            )));
        }
        Some(l) => l,
    };
    let offset = a.offset.unwrap_or(0);
    let (_, client) = cx.agent(&a.workspace).await?;
    let (meta, data) = within(
        limits.request_timeout,
        client.read_file(&a.path, offset, Some(limit)),
    )
    .await?;
    Ok(read_file_out(a.path, offset, &meta, &data))
}

/// Text when the bytes are UTF-8 (a character cut by the limit at the end is left for the
/// next read), base64 otherwise.
fn read_file_out(
    path: String,
    offset: u64,
    meta: &crate::services::agent::types::ReadFileMeta,
    data: &[u8],
) -> ReadFileOut {
    let start = meta.offset.max(offset);
    let at_end = start + data.len() as u64 >= meta.size;
    let text = match std::str::from_utf8(data) {
        Ok(s) => Some(s),
        // An incomplete sequence at the very end of a partial read is a cut character.
        Err(e) if e.error_len().is_none() && !at_end && e.valid_up_to() > 0 => data
            .get(..e.valid_up_to())
            .and_then(|d| std::str::from_utf8(d).ok()),
        Err(_) => None,
    };
    let (content, content_base64, used) = match text {
        Some(t) => (Some(t.to_string()), None, t.len()),
        None => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(data)),
            data.len(),
        ),
    };
    ReadFileOut {
        path,
        size: meta.size,
        mime_type: meta.mime_type.clone(),
        offset: start,
        bytes_read: used as u64,
        next_offset: start + used as u64,
        content,
        content_base64,
    }
}

pub(super) async fn read_lines(
    cx: Cx,
    a: ReadLinesArgs,
    _: Ctx,
) -> Result<ReadLinesOut, ToolError> {
    let limits = cx.limits();
    check_path(&a.path, limits)?;
    let line_limit = match a.line_limit {
        None => limits.lines_default,
        Some(0) => return Err(ToolError::Invalid("line_limit must be positive".into())),
        Some(l) if l > limits.lines_max => {
            return Err(ToolError::Invalid(format!(
                "line_limit {l} exceeds the maximum of {} lines",
                limits.lines_max
            )));
        }
        Some(l) => l,
    };
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(
        limits.request_timeout,
        client.read_file_lines(&a.path, a.line_offset.unwrap_or(0), Some(line_limit)),
    )
    .await?;
    Ok(ReadLinesOut::from(r))
}

pub(super) async fn write(cx: Cx, a: WriteFileArgs, _: Ctx) -> Result<WriteFileOut, ToolError> {
    check_path(&a.path, cx.limits())?;
    let data = args::write_content(&a, cx.limits())?;
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(
        cx.limits().request_timeout,
        client.write_file(&a.path, data),
    )
    .await?;
    Ok(WriteFileOut {
        path: r.path,
        bytes_written: r.bytes_written,
        created: r.created,
    })
}

pub(super) async fn edit(cx: Cx, a: EditFilesArgs, _: Ctx) -> Result<EditFilesOut, ToolError> {
    args::check_edits(&a, cx.limits())?;
    let req = EditFilesRequest {
        files: a
            .files
            .into_iter()
            .map(|f| FileEdits {
                path: f.path,
                edits: f
                    .edits
                    .into_iter()
                    .map(|e| Edit {
                        search: e.search,
                        replace: e.replace,
                        replace_all: e.replace_all.unwrap_or(false),
                    })
                    .collect(),
            })
            .collect(),
        include_diff: true,
    };
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(cx.limits().request_timeout, client.edit_files(&req)).await?;
    Ok(EditFilesOut {
        files: r
            .files
            .into_iter()
            .map(|f| EditedFileOut {
                path: f.path,
                replacements: f.replacements,
                diff: f.diff.unwrap_or_default(),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::services::agent::types::ReadFileMeta;

    fn meta(size: u64, offset: u64) -> ReadFileMeta {
        ReadFileMeta {
            size,
            offset,
            mime_type: "text/plain".into(),
        }
    }

    #[test]
    fn utf8_text_and_binary() {
        let o = read_file_out("/f".into(), 0, &meta(5, 0), b"hello");
        assert_eq!(o.content.as_deref(), Some("hello"));
        assert_eq!((o.bytes_read, o.next_offset), (5, 5));
        let o = read_file_out("/f".into(), 0, &meta(3, 0), &[0xff, 0, 1]);
        assert_eq!(o.content, None);
        assert_eq!(o.content_base64.as_deref(), Some("/wAB"));
    }

    #[test]
    fn cut_character_is_left_for_the_next_read() {
        // "aé" is 61 c3 a9; a limit of 2 cuts the é.
        let o = read_file_out("/f".into(), 0, &meta(3, 0), &[0x61, 0xc3]);
        assert_eq!(o.content.as_deref(), Some("a"));
        assert_eq!(o.next_offset, 1);
        // At the end of the file the same bytes are not text.
        let o = read_file_out("/f".into(), 0, &meta(2, 0), &[0x61, 0xc3]);
        assert!(o.content_base64.is_some());
    }
}
