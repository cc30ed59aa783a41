//! Directory listing, file reads (bytes and lines) and atomic writes.

use super::{AgentApi, Error, confine, rejection};
use crate::services::agent::types::{
    DirEntry, EntryKind, HEADER_FILE_SIZE, HEADER_OFFSET, LsResponse, ReadLinesResponse,
    WriteFileResponse,
};
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::Deserialize;
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

#[derive(Debug, Deserialize)]
pub(super) struct PathQuery {
    path: String,
}

fn kind(ft: rustix::fs::FileType) -> EntryKind {
    use rustix::fs::FileType;
    match ft {
        FileType::Symlink => EntryKind::Symlink,
        FileType::Directory => EntryKind::Dir,
        FileType::RegularFile => EntryKind::File,
        _ => EntryKind::Other,
    }
}

pub(super) async fn ls(
    State(api): State<AgentApi>,
    q: Result<Query<PathQuery>, QueryRejection>,
) -> Result<Json<LsResponse>, Error> {
    let Query(q) = q.map_err(rejection)?;
    let path = api.path(&q.path)?;
    let root = api.root().map(Path::to_path_buf);
    let p = path.clone();
    let mut entries = tokio::task::spawn_blocking(move || {
        let dir = confine::open_dir(root.as_deref(), &p)?;
        list_dir(&dir, &p)
    })
    .await
    .map_err(|e| Error::new(StatusCode::INTERNAL_SERVER_ERROR, "ls task failed").detail(e))??;
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Json(LsResponse {
        path: path.display().to_string(),
        entries,
    }))
}

/// Lists the open directory `dir` (shown as `path`). Every entry is looked at by its
/// name relative to `dir`, never by a path from the top, so nothing here resolves outside
/// the directory that was opened.
pub(super) fn list_dir(dir: &std::os::fd::OwnedFd, path: &Path) -> Result<Vec<DirEntry>, Error> {
    use rustix::fs::{AtFlags, FileType};
    use std::os::unix::ffi::OsStrExt;
    let mut rd = rustix::fs::Dir::read_from(dir).map_err(|e| Error::io(path, e.into()))?;
    let mut entries = Vec::new();
    while let Some(e) = rd.read() {
        let e = e.map_err(|e| Error::io(path, e.into()))?;
        let name = e.file_name();
        if matches!(name.to_bytes(), b"." | b"..") {
            continue;
        }
        // An entry can vanish between listing and stat; skip it rather than fail.
        let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        let k = kind(FileType::from_raw_mode(st.st_mode));
        let symlink_target = (k == EntryKind::Symlink)
            .then(|| rustix::fs::readlinkat(dir, name, Vec::new()).ok())
            .flatten()
            .map(|t| String::from_utf8_lossy(t.as_bytes()).into_owned());
        let name = std::ffi::OsStr::from_bytes(name.to_bytes());
        // mode_t is 16 bits on some systems (macOS).
        #[allow(clippy::useless_conversion)]
        let mode = u32::from(st.st_mode) & 0o7777;
        entries.push(DirEntry {
            name: name.to_string_lossy().into_owned(),
            path: path.join(name).display().to_string(),
            kind: k,
            size: u64::try_from(st.st_size).unwrap_or(0),
            mode,
            mtime: st.st_mtime,
            symlink_target,
        });
    }
    Ok(entries)
}

/// Reads up to this size are served from one buffer; larger ones stream.
const SMALL_READ: u64 = 256 << 10;

#[derive(Debug, Deserialize)]
pub(super) struct ReadQuery {
    path: String,
    #[serde(default)]
    offset: u64,
    limit: Option<u64>,
}

fn mime(path: &Path) -> String {
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

pub(super) async fn open_file(
    root: Option<&Path>,
    path: &Path,
) -> Result<(tokio::fs::File, std::fs::Metadata), Error> {
    let root = root.map(Path::to_path_buf);
    let p = path.to_path_buf();
    let (f, m) = tokio::task::spawn_blocking(move || confine::open_read(root.as_deref(), &p))
        .await
        .map_err(|e| {
            Error::new(StatusCode::INTERNAL_SERVER_ERROR, "open task failed").detail(e)
        })??;
    Ok((tokio::fs::File::from_std(f), m))
}

pub(super) async fn read_file(
    State(api): State<AgentApi>,
    q: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Response, Error> {
    let Query(q) = q.map_err(rejection)?;
    let cfg = api.config();
    let limit = q.limit.unwrap_or(cfg.read_default_limit);
    if limit > cfg.read_max_limit {
        return Err(Error::bad_request(format!(
            "limit {limit} exceeds the maximum of {}",
            cfg.read_max_limit
        )));
    }
    let path = api.path_to_open(&q.path)?;
    // Small reads (the common case) are done in place when nothing can block, else in
    // one trip to the blocking pool rather than one per open, stat, seek and read; large
    // ones stream.
    #[cfg(target_os = "linux")]
    match super::inline::read_small(api.root(), &path, q.offset, limit, SMALL_READ)? {
        super::inline::Inline::Done(r) => {
            let len = r.bytes.len() as u64;
            return Ok(file_response(
                Body::from(r.bytes),
                &path,
                len,
                r.size,
                r.offset,
            ));
        }
        super::inline::Inline::Large => return stream_file(&api, &path, q.offset, limit).await,
        super::inline::Inline::WouldBlock => {}
    }
    let p2 = path.clone();
    let root = api.root().map(Path::to_path_buf);
    let small =
        tokio::task::spawn_blocking(move || -> Result<Option<(u64, u64, Vec<u8>)>, Error> {
            use std::io::{Read, Seek};
            let (mut f, m) = confine::open_read(root.as_deref(), &p2)?;
            let size = m.len();
            let offset = q.offset.min(size);
            let len = limit.min(size - offset);
            if len > SMALL_READ {
                return Ok(None);
            }
            f.seek(std::io::SeekFrom::Start(offset))
                .map_err(|e| Error::io(&p2, e))?;
            let mut buf = Vec::with_capacity(len as usize);
            f.take(len)
                .read_to_end(&mut buf)
                .map_err(|e| Error::io(&p2, e))?;
            Ok(Some((size, offset, buf)))
        })
        .await
        .map_err(|e| {
            Error::new(StatusCode::INTERNAL_SERVER_ERROR, "read task failed").detail(e)
        })??;
    if let Some((size, offset, buf)) = small {
        let len = buf.len() as u64;
        return Ok(file_response(Body::from(buf), &path, len, size, offset));
    }
    stream_file(&api, &path, q.offset, limit).await
}

/// A read too large for one buffer, streamed from the blocking pool.
async fn stream_file(
    api: &AgentApi,
    path: &Path,
    offset: u64,
    limit: u64,
) -> Result<Response, Error> {
    let (mut f, meta) = open_file(api.root(), path).await?;
    let size = meta.len();
    let offset = offset.min(size);
    f.seek(std::io::SeekFrom::Start(offset))
        .await
        .map_err(|e| Error::io(path, e))?;
    let len = limit.min(size - offset);
    let stream = tokio_util::io::ReaderStream::with_capacity(f.take(len), 256 << 10);
    Ok(file_response(
        Body::from_stream(stream),
        path,
        len,
        size,
        offset,
    ))
}

fn file_response(body: Body, path: &Path, len: u64, size: u64, offset: u64) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&mime(path)) {
        h.insert(header::CONTENT_TYPE, v);
    }
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
    h.insert(HEADER_FILE_SIZE, HeaderValue::from(size));
    h.insert(HEADER_OFFSET, HeaderValue::from(offset));
    resp
}

#[derive(Debug, Deserialize)]
pub(super) struct LinesQuery {
    path: String,
    #[serde(default)]
    line_offset: u64,
    line_limit: Option<u64>,
    max_line_bytes: Option<usize>,
    max_response_bytes: Option<usize>,
}

/// Cuts `b` to at most `max` bytes without splitting a UTF-8 character.
fn cut_line(b: &[u8], max: usize) -> (String, bool) {
    if b.len() <= max {
        return (String::from_utf8_lossy(b).into_owned(), false);
    }
    let mut end = max;
    while end > 0 && (b[end] & 0xC0) == 0x80 {
        end -= 1;
    }
    (String::from_utf8_lossy(&b[..end]).into_owned(), true)
}

pub(super) async fn read_file_lines(
    State(api): State<AgentApi>,
    q: Result<Query<LinesQuery>, QueryRejection>,
) -> Result<Json<ReadLinesResponse>, Error> {
    let Query(q) = q.map_err(rejection)?;
    let cfg = api.config();
    let line_limit = q.line_limit.unwrap_or(cfg.lines_default).max(1);
    let max_line = q
        .max_line_bytes
        .unwrap_or(cfg.max_line_bytes)
        .clamp(1, cfg.max_line_bytes.max(1) * 16);
    let max_resp = q
        .max_response_bytes
        .unwrap_or(cfg.max_response_bytes)
        .clamp(1, cfg.max_response_bytes.max(1));
    let path = api.path_to_open(&q.path)?;
    let (f, meta) = open_file(api.root(), &path).await?;
    let mut r = tokio::io::BufReader::with_capacity(64 << 10, f);
    let mut buf = Vec::new();
    let (mut index, mut bytes, mut truncated) = (0u64, 0usize, 0u64);
    let mut lines = Vec::new();
    let mut more = false;
    loop {
        buf.clear();
        // Lines are read whole but only the first `max_line` bytes are kept; a huge line
        // costs reading it, not holding it.
        let n = read_line_capped(&mut r, &mut buf, max_line + 4)
            .await
            .map_err(|e| Error::io(&path, e))?;
        if n == 0 {
            break;
        }
        if index < q.line_offset {
            index += 1;
            continue;
        }
        if lines.len() as u64 >= line_limit || bytes >= max_resp {
            more = true;
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let (line, cut) = cut_line(&buf, max_line);
        truncated += u64::from(cut);
        bytes += line.len() + 1;
        lines.push(line);
        index += 1;
    }
    Ok(Json(ReadLinesResponse {
        path: path.display().to_string(),
        line_offset: q.line_offset,
        lines,
        truncated_lines: truncated,
        more,
        mime_type: mime(&path),
        size: meta.len(),
    }))
}

/// Reads one line (through `\n` or EOF), keeping at most `keep` bytes of it. Returns the
/// number of bytes consumed.
async fn read_line_capped<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
    keep: usize,
) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (chunk.len(), false),
        };
        let room = keep.saturating_sub(out.len());
        out.extend_from_slice(&chunk[..take.min(room)]);
        r.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct WriteQuery {
    path: String,
    /// Octal permission bits for a new file (default 644; an existing file keeps its own).
    mode: Option<String>,
}

/// A temporary file that is removed unless committed: a failed, refused or cut-off
/// request never leaves it behind.
struct TempFile<'a> {
    parent: &'a confine::Parent,
    name: OsString,
    committed: bool,
}

impl Drop for TempFile<'_> {
    fn drop(&mut self) {
        if !self.committed {
            self.parent.remove(&self.name);
        }
    }
}

fn temp_name(name: &OsString) -> OsString {
    let tag: u64 = rand::random();
    OsString::from(format!(".{}.aw-tmp-{tag:016x}", name.to_string_lossy()))
}

/// Writes `chunks` to `target` atomically: a temporary file in the same directory,
/// fsync, permissions, rename. Under a root the directory is held open beneath it, so the
/// temporary file and the rename cannot be redirected outside. Returns (bytes written,
/// created).
pub(super) async fn write_atomic<S, E>(
    root: Option<&Path>,
    target: &Path,
    mode: Option<u32>,
    mut chunks: S,
    limit: usize,
) -> Result<(u64, bool), Error>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    if target.file_name().is_none() {
        return Err(Error::bad_request(format!(
            "{}: is a directory",
            target.display()
        )));
    }
    let parent = confine::Parent::open(root, target).await?;
    let existing = parent.existing_mode()?;
    let mut tmp = TempFile {
        parent: &parent,
        name: temp_name(parent.name()),
        committed: false,
    };
    let f = parent
        .create_new(&tmp.name)
        .map_err(|e| Error::io(target, e))?;
    let mut f = tokio::fs::File::from_std(f);
    let mut written = 0u64;
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.map_err(|e| Error::bad_request("request body ended early").detail(e))?;
        written += chunk.len() as u64;
        if written > limit as u64 {
            return Err(Error::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("body exceeds the limit of {limit} bytes"),
            ));
        }
        f.write_all(&chunk)
            .await
            .map_err(|e| Error::io(target, e))?;
    }
    f.flush().await.map_err(|e| Error::io(target, e))?;
    f.sync_all().await.map_err(|e| Error::io(target, e))?;
    let perms = existing.or(mode).unwrap_or(0o644);
    // fchmod on the open file: a by-name chmod could be redirected.
    f.set_permissions(std::fs::Permissions::from_mode(perms))
        .await
        .map_err(|e| Error::io(target, e))?;
    drop(f);
    parent
        .rename_into_place(&tmp.name)
        .map_err(|e| Error::io(target, e))?;
    tmp.committed = true;
    Ok((written, existing.is_none()))
}

pub(super) async fn write_file(
    State(api): State<AgentApi>,
    q: Result<Query<WriteQuery>, QueryRejection>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<Json<WriteFileResponse>, Error> {
    let Query(q) = q.map_err(rejection)?;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > api.config().body_limit as u64) {
        return Err(Error::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "body exceeds the limit of {} bytes",
                api.config().body_limit
            ),
        ));
    }
    let path = api.path(&q.path)?;
    let mode = match q.mode.as_deref() {
        None => None,
        Some(m) => Some(
            u32::from_str_radix(m, 8)
                .ok()
                .filter(|v| *v <= 0o7777)
                .ok_or_else(|| {
                    Error::bad_request(format!("mode {m:?} is not octal permission bits"))
                })?,
        ),
    };
    let limit = api.config().body_limit;
    let stream = body.into_data_stream();
    let (n, created) = write_atomic(api.root(), &path, mode, stream, limit).await?;
    Ok(Json(WriteFileResponse {
        path: path.display().to_string(),
        bytes_written: n,
        created,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_line_keeps_characters_whole() {
        assert_eq!(cut_line("héllo".as_bytes(), 2), ("h".to_string(), true));
        assert_eq!(cut_line(b"abc", 10), ("abc".to_string(), false));
    }
}
