//! How `agentwire status` finds the running `agentwire mcp` processes: each listens on
//! a Unix socket `run/mcp-PID.sock` in the configuration directory (owner-only) and
//! answers every connection with its [`TailnetStatus`] as JSON, then closes it. Several
//! MCP clients each start their own `agentwire mcp`, so there may be several.
//!
//! Unix only; elsewhere `status` says it is not available.

use super::status::TailnetStatus;
use crate::runtime::tailnet::Tailnet;
use std::path::PathBuf;
use std::sync::Arc;

/// Errors serving or asking for a local status.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The configuration directory is unknown.
    #[error(transparent)]
    Config(#[from] super::config::ConfigError),
    /// A socket could not be made or read.
    #[error("{path}: {source}")]
    Io {
        /// The socket or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No `agentwire mcp` is running.
    #[error("no `agentwire mcp` is running for this user (nothing in {0})")]
    NoneRunning(PathBuf),
    /// Not on this platform.
    #[error("`agentwire status` needs Unix sockets, which this platform does not have")]
    Unsupported,
}

/// The directory of the status sockets.
///
/// # Errors
/// [`LocalError::Config`].
pub fn run_dir() -> Result<PathBuf, LocalError> {
    Ok(super::config::config_dir()?.join("run"))
}

/// Serves this process's status until dropped.
#[derive(Debug)]
pub struct StatusServer {
    path: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

#[cfg(unix)]
/// Listens at `run/mcp-PID.sock` and answers with `tailnet`'s status.
///
/// # Errors
/// [`LocalError`].
pub fn serve(tailnet: Arc<Tailnet>) -> Result<StatusServer, LocalError> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = run_dir()?;
    let io = |path: &PathBuf| {
        let path = path.clone();
        move |source| LocalError::Io { path, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    let path = dir.join(format!("mcp-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).map_err(io(&path))?;
    let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    let task = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt as _;
        while let Ok((mut s, _)) = listener.accept().await {
            let snap = super::status::snapshot(&tailnet).await;
            let body = serde_json::to_vec(&snap).unwrap_or_default();
            let _ =
                tokio::time::timeout(std::time::Duration::from_secs(2), s.write_all(&body)).await;
        }
    });
    Ok(StatusServer { path, task })
}

#[cfg(not(unix))]
/// Not available without Unix sockets.
///
/// # Errors
/// [`LocalError::Unsupported`].
pub fn serve(_tailnet: Arc<Tailnet>) -> Result<StatusServer, LocalError> {
    Err(LocalError::Unsupported)
}

#[cfg(unix)]
/// Every running `agentwire mcp`'s status (stale sockets of dead processes are removed).
///
/// # Errors
/// [`LocalError::NoneRunning`] when there is none.
pub async fn query_all() -> Result<Vec<TailnetStatus>, LocalError> {
    use tokio::io::AsyncReadExt as _;
    let dir = run_dir()?;
    let mut out = Vec::new();
    let entries = std::fs::read_dir(&dir).map_err(|_| LocalError::NoneRunning(dir.clone()))?;
    for e in entries.flatten() {
        let path = e.path();
        if path.extension().is_none_or(|x| x != "sock") {
            continue;
        }
        let Ok(mut s) = tokio::net::UnixStream::connect(&path).await else {
            // Nobody listens: a process that ended without cleaning up.
            let _ = std::fs::remove_file(&path);
            continue;
        };
        let mut buf = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            (&mut s).take(16 << 20).read_to_end(&mut buf),
        )
        .await;
        if matches!(read, Ok(Ok(_)))
            && let Ok(st) = serde_json::from_slice::<TailnetStatus>(&buf)
        {
            out.push(st);
        }
    }
    if out.is_empty() {
        return Err(LocalError::NoneRunning(dir));
    }
    Ok(out)
}

#[cfg(not(unix))]
/// Not available without Unix sockets.
///
/// # Errors
/// [`LocalError::Unsupported`].
pub async fn query_all() -> Result<Vec<TailnetStatus>, LocalError> {
    Err(LocalError::Unsupported)
}
