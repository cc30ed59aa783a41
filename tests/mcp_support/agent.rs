//! A small agent API server on loopback for the MCP front-end tests: the endpoints the
//! tools use, over real files and real processes under a temporary directory. It follows
//! `docs/protocol.md`'s agent API closely enough for the front end; the agent service
//! itself is tested on its own.

use agentwire::services::agent::types::*;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::sync::{Notify, oneshot};

#[derive(Default)]
struct Proc {
    command: String,
    pid: Option<u32>,
    out: Vec<u8>,
    running: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
    started_at_ms: u64,
}

#[derive(Default)]
struct Inner {
    workdir: PathBuf,
    procs: Mutex<HashMap<String, Proc>>,
    order: Mutex<Vec<String>>,
    changed: Notify,
}

type St = Arc<Inner>;

/// A running test agent.
pub struct TestAgent {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    inner: St,
}

impl TestAgent {
    pub async fn start(workdir: &Path) -> Self {
        let inner: St = Arc::new(Inner {
            workdir: workdir.to_path_buf(),
            ..Default::default()
        });
        let app = Router::new()
            .route("/api/v0/health", get(health))
            .route("/api/v0/ls", get(ls))
            .route("/api/v0/read-file", get(read_file))
            .route("/api/v0/read-file-lines", get(read_lines))
            .route("/api/v0/write-file", post(write_file))
            .route("/api/v0/edit-files", post(edit_files))
            .route("/api/v0/processes/start", post(start))
            .route("/api/v0/processes/list", get(list))
            .route("/api/v0/processes/{id}/output", get(output))
            .route("/api/v0/processes/{id}/signal", post(signal))
            .route("/api/v0/listening-ports", get(ports))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        Self {
            addr,
            stop: Some(tx),
            inner,
        }
    }

    /// Whether any process this agent started is still running.
    pub fn any_running(&self) -> bool {
        self.inner.procs.lock().unwrap().values().any(|p| p.running)
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        for p in self.inner.procs.lock().unwrap().values() {
            if let (true, Some(pid)) = (p.running, p.pid) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

fn err(code: StatusCode, message: impl Into<String>) -> Response {
    (
        code,
        axum::Json(ApiError {
            message: message.into(),
            detail: None,
        }),
    )
        .into_response()
}

fn io_err(path: &str, e: std::io::Error) -> Response {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NOT_FOUND,
        std::io::ErrorKind::PermissionDenied => StatusCode::FORBIDDEN,
        _ => StatusCode::BAD_REQUEST,
    };
    err(code, format!("{path}: {e}"))
}

type Q = Query<HashMap<String, String>>;

#[allow(clippy::result_large_err)]
fn path_of(q: &HashMap<String, String>) -> Result<String, Response> {
    let p = q.get("path").cloned().unwrap_or_default();
    if !p.starts_with('/') {
        return Err(err(
            StatusCode::BAD_REQUEST,
            format!("path {p:?} is not absolute"),
        ));
    }
    Ok(p)
}

fn num(q: &HashMap<String, String>, k: &str) -> Option<u64> {
    q.get(k).and_then(|v| v.parse().ok())
}

async fn health() -> impl IntoResponse {
    axum::Json(Health {
        status: "ok".into(),
        version: "test".into(),
        uptime_secs: 0,
        hostname: "test".into(),
        rejected_requests: 0,
        commands: None,
        commands_started: 0,
        commands_started_warm: 0,
    })
}

async fn ls(Query(q): Q) -> Response {
    let path = match path_of(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let rd = match std::fs::read_dir(&path) {
        Ok(r) => r,
        Err(e) => return io_err(&path, e),
    };
    let mut entries = Vec::new();
    for e in rd.flatten() {
        let Ok(m) = e.path().symlink_metadata() else {
            continue;
        };
        use std::os::unix::fs::MetadataExt;
        let kind = if m.is_dir() {
            EntryKind::Dir
        } else if m.is_file() {
            EntryKind::File
        } else if m.file_type().is_symlink() {
            EntryKind::Symlink
        } else {
            EntryKind::Other
        };
        entries.push(DirEntry {
            name: e.file_name().to_string_lossy().into_owned(),
            path: e.path().to_string_lossy().into_owned(),
            kind,
            size: m.len(),
            mode: m.mode() & 0o7777,
            mtime: m.mtime(),
            symlink_target: None,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    axum::Json(LsResponse { path, entries }).into_response()
}

fn mime(path: &str) -> String {
    mime_guess::from_path(path)
        .first_or_octet_stream()
        .essence_str()
        .to_string()
}

async fn read_file(Query(q): Q) -> Response {
    let path = match path_of(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => return io_err(&path, e),
    };
    let offset = num(&q, "offset").unwrap_or(0).min(data.len() as u64) as usize;
    let limit = num(&q, "limit").unwrap_or(1 << 20) as usize;
    let end = offset.saturating_add(limit).min(data.len());
    let mut h = HeaderMap::new();
    h.insert(HEADER_FILE_SIZE, HeaderValue::from(data.len() as u64));
    h.insert(HEADER_OFFSET, HeaderValue::from(offset as u64));
    h.insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_str(&mime(&path)).unwrap(),
    );
    (h, data[offset..end].to_vec()).into_response()
}

async fn read_lines(Query(q): Q) -> Response {
    let path = match path_of(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => return io_err(&path, e),
    };
    let text = String::from_utf8_lossy(&data);
    let all: Vec<&str> = text.lines().collect();
    let off = num(&q, "line_offset").unwrap_or(0) as usize;
    let lim = num(&q, "line_limit").unwrap_or(1000) as usize;
    let lines: Vec<String> = all
        .iter()
        .skip(off)
        .take(lim)
        .map(|s| s.to_string())
        .collect();
    axum::Json(ReadLinesResponse {
        more: off + lines.len() < all.len(),
        path: path.clone(),
        line_offset: off as u64,
        lines,
        truncated_lines: 0,
        mime_type: mime(&path),
        size: data.len() as u64,
    })
    .into_response()
}

async fn write_file(Query(q): Q, body: Bytes) -> Response {
    let path = match path_of(&q) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let p = Path::new(&path);
    let created = !p.exists();
    if let Some(parent) = p.parent()
        && let Err(e) = std::fs::create_dir_all(parent)
    {
        return io_err(&path, e);
    }
    let tmp = p.with_extension("agentwire-tmp");
    if let Err(e) = std::fs::write(&tmp, &body).and_then(|()| std::fs::rename(&tmp, p)) {
        return io_err(&path, e);
    }
    axum::Json(WriteFileResponse {
        path,
        bytes_written: body.len() as u64,
        created,
    })
    .into_response()
}

async fn edit_files(axum::Json(req): axum::Json<EditFilesRequest>) -> Response {
    let mut staged = Vec::new();
    for f in &req.files {
        let before = match std::fs::read_to_string(&f.path) {
            Ok(t) => t,
            Err(e) => return io_err(&f.path, e),
        };
        let mut after = before.clone();
        let mut count = 0u64;
        for (i, e) in f.edits.iter().enumerate() {
            let n = after.matches(e.search.as_str()).count();
            if n == 0 {
                return err(
                    StatusCode::CONFLICT,
                    format!("{}: edit {i}: search text not found", f.path),
                );
            }
            if n > 1 && !e.replace_all {
                return err(
                    StatusCode::CONFLICT,
                    format!(
                        "{}: edit {i}: search text is ambiguous ({n} matches)",
                        f.path
                    ),
                );
            }
            after = after.replace(e.search.as_str(), &e.replace);
            count += n as u64;
        }
        let diff = similar::TextDiff::from_lines(&before, &after)
            .unified_diff()
            .header(&f.path, &f.path)
            .to_string();
        staged.push((f.path.clone(), after, count, diff));
    }
    let mut files = Vec::new();
    for (path, after, replacements, diff) in staged {
        if let Err(e) = std::fs::write(&path, after) {
            return io_err(&path, e);
        }
        files.push(FileEditResult {
            path,
            replacements,
            diff: Some(diff),
        });
    }
    axum::Json(EditFilesResponse { files }).into_response()
}

fn snapshot(id: &str, p: &Proc, offset: u64) -> ProcessOutput {
    let start = (offset as usize).min(p.out.len());
    ProcessOutput {
        id: id.to_string(),
        offset: start as u64,
        next_offset: p.out.len() as u64,
        output: String::from_utf8_lossy(&p.out[start..]).into_owned(),
        dropped_bytes: 0,
        running: p.running,
        exit_code: p.exit_code,
        signal: p.signal,
        timed_out: false,
    }
}

async fn start(State(s): State<St>, axum::Json(req): axum::Json<StartProcessRequest>) -> Response {
    let id = format!("p{}", s.order.lock().unwrap().len() + 1);
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(format!("exec 2>&1; {}", req.command))
        .current_dir(
            req.workdir
                .as_deref()
                .map_or(s.workdir.as_path(), Path::new),
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    let mut stdout = child.stdout.take().unwrap();
    s.procs.lock().unwrap().insert(
        id.clone(),
        Proc {
            command: req.command.clone(),
            pid: child.id(),
            running: true,
            ..Default::default()
        },
    );
    s.order.lock().unwrap().push(id.clone());
    let (st, pid) = (s.clone(), id.clone());
    tokio::spawn(async move {
        let mut buf = [0u8; 8192];
        while let Ok(n) = stdout.read(&mut buf).await {
            if n == 0 {
                break;
            }
            st.procs
                .lock()
                .unwrap()
                .get_mut(&pid)
                .unwrap()
                .out
                .extend_from_slice(&buf[..n]);
            st.changed.notify_waiters();
        }
        let status = child.wait().await.ok();
        {
            use std::os::unix::process::ExitStatusExt;
            let mut procs = st.procs.lock().unwrap();
            let p = procs.get_mut(&pid).unwrap();
            p.running = false;
            p.exit_code = status.and_then(|s| s.code());
            p.signal = status.and_then(|s| s.signal());
        }
        st.changed.notify_waiters();
    });
    if !req.background {
        loop {
            let notified = s.changed.notified();
            if !s.procs.lock().unwrap()[&id].running {
                break;
            }
            notified.await;
        }
    }
    let procs = s.procs.lock().unwrap();
    axum::Json(snapshot(&id, &procs[&id], 0)).into_response()
}

async fn list(State(s): State<St>) -> Response {
    let procs = s.procs.lock().unwrap();
    let order = s.order.lock().unwrap();
    let processes = order
        .iter()
        .rev()
        .map(|id| {
            let p = &procs[id];
            ProcessInfo {
                id: id.clone(),
                command: p.command.clone(),
                workdir: s.workdir.to_string_lossy().into_owned(),
                pid: p.pid.filter(|_| p.running),
                running: p.running,
                exit_code: p.exit_code,
                signal: p.signal,
                started_at_ms: p.started_at_ms,
                output_bytes: p.out.len() as u64,
            }
        })
        .collect();
    axum::Json(ProcessList { processes }).into_response()
}

async fn output(State(s): State<St>, UrlPath(id): UrlPath<String>, Query(q): Q) -> Response {
    let offset = num(&q, "offset").unwrap_or(0);
    let wait = std::time::Duration::from_millis(num(&q, "wait_ms").unwrap_or(0).min(30_000));
    let now = || tokio::time::Instant::from_std(agentwire::runtime::clock::now());
    let deadline = now() + wait;
    loop {
        let notified = s.changed.notified();
        {
            let procs = s.procs.lock().unwrap();
            let Some(p) = procs.get(&id) else {
                return err(StatusCode::NOT_FOUND, format!("no process {id}"));
            };
            if !p.running || p.out.len() as u64 > offset || now() >= deadline {
                return axum::Json(snapshot(&id, p, offset)).into_response();
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn signal(
    State(s): State<St>,
    UrlPath(id): UrlPath<String>,
    axum::Json(req): axum::Json<SignalRequest>,
) -> Response {
    let (pid, running) = {
        let procs = s.procs.lock().unwrap();
        let Some(p) = procs.get(&id) else {
            return err(StatusCode::NOT_FOUND, format!("no process {id}"));
        };
        (p.pid, p.running)
    };
    use nix::sys::signal::Signal;
    let sig = match req.signal {
        SignalName::Terminate => Signal::SIGTERM,
        SignalName::Kill => Signal::SIGKILL,
        SignalName::Interrupt => Signal::SIGINT,
    };
    let delivered = running
        && pid.is_some_and(|pid| {
            nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), sig).is_ok()
        });
    axum::Json(SignalResponse { id, delivered }).into_response()
}

async fn ports() -> Response {
    let mut ports = Vec::new();
    for (file, network) in [("/proc/net/tcp", "tcp"), ("/proc/net/tcp6", "tcp6")] {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 3
                && f[3] == "0A"
                && let Some((_, port)) = f[1].rsplit_once(':')
                && let Ok(port) = u16::from_str_radix(port, 16)
            {
                ports.push(ListeningPort {
                    port,
                    network: network.into(),
                    address: f[1].into(),
                });
            }
        }
    }
    ports.sort_by_key(|p| p.port);
    ports.dedup_by_key(|p| p.port);
    axum::Json(ListeningPorts { ports }).into_response()
}
