//! Processes: `sh -c` in its own process group, output captured into a bounded buffer,
//! foreground (wait with a timeout) or background (optionally wait a while for the exit,
//! then poll the output by offset). Under a root, commands start in a directory opened
//! beneath it and inside the sandbox (`sandbox`).

use super::sandbox::{CommandSandbox, SpawnError, Spawner};
use super::warm::WarmShell;
use super::{AgentApi, Error, confine, rejection};
use crate::services::agent::types::{
    ProcessInfo, ProcessList, ProcessOutput, SignalName, SignalRequest, SignalResponse,
    StartProcessRequest,
};
use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::Deserialize;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::watch;
use tokio_util::task::TaskTracker;

/// The output kept for one process: the newest `cap` bytes, addressed by absolute offset.
#[derive(Debug)]
struct Ring {
    data: VecDeque<u8>,
    /// Absolute offset of `data[0]`.
    start: u64,
    cap: usize,
}

impl Ring {
    fn push(&mut self, b: &[u8]) {
        // Whatever exceeds the cap is dropped oldest first: existing data, then the head of
        // this chunk. Every dropped byte advances `start`.
        let overflow = (self.data.len() + b.len()).saturating_sub(self.cap);
        let from_data = overflow.min(self.data.len());
        self.data.drain(..from_data);
        self.data.extend(&b[overflow - from_data..]);
        self.start += overflow as u64;
    }

    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }

    /// Bytes from `offset` (or the oldest kept), how many were dropped before them, and
    /// the offset they start at.
    fn read(&self, offset: u64, max: usize) -> (Vec<u8>, u64, u64) {
        let from = offset.max(self.start).min(self.end());
        let dropped = self.start.saturating_sub(offset);
        let skip = (from - self.start) as usize;
        let out: Vec<u8> = self.data.iter().skip(skip).take(max).copied().collect();
        (out, dropped, from)
    }
}

#[derive(Debug)]
struct State2 {
    ring: Ring,
    running: bool,
    exit_code: Option<i32>,
    signal: Option<i32>,
    timed_out: bool,
    pid: Option<u32>,
}

#[derive(Debug)]
struct Proc {
    id: String,
    command: String,
    workdir: String,
    started_at_ms: u64,
    /// Sequence number of creation, for pruning oldest first.
    seq: u64,
    state: Mutex<State2>,
    /// Bumped on every output chunk and on exit; long-polls wait on it.
    changed: watch::Sender<u64>,
}

impl Proc {
    fn lock(&self) -> MutexGuard<'_, State2> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn info(&self) -> ProcessInfo {
        let s = self.lock();
        ProcessInfo {
            id: self.id.clone(),
            command: self.command.clone(),
            workdir: self.workdir.clone(),
            pid: s.pid.filter(|_| s.running),
            running: s.running,
            exit_code: s.exit_code,
            signal: s.signal,
            started_at_ms: self.started_at_ms,
            output_bytes: s.ring.end(),
        }
    }

    /// Output from `offset`. A trailing incomplete UTF-8 sequence is held back while the
    /// process runs, so a character split across reads is not mangled.
    fn output(&self, offset: u64) -> ProcessOutput {
        let s = self.lock();
        let (mut bytes, dropped, from) = s.ring.read(offset, usize::MAX);
        if s.running {
            let keep = utf8_complete_prefix(&bytes);
            bytes.truncate(keep);
        }
        ProcessOutput {
            id: self.id.clone(),
            offset: from,
            next_offset: from + bytes.len() as u64,
            output: String::from_utf8_lossy(&bytes).into_owned(),
            dropped_bytes: dropped,
            running: s.running,
            exit_code: s.exit_code,
            signal: s.signal,
            timed_out: s.timed_out,
        }
    }

    fn kill(&self, sig: Signal) -> bool {
        let s = self.lock();
        match (s.running, s.pid) {
            (true, Some(pid)) => killpg(Pid::from_raw(pid as i32), sig).is_ok(),
            _ => false,
        }
    }
}

/// Length of the longest prefix of `b` that does not end inside a UTF-8 sequence.
fn utf8_complete_prefix(b: &[u8]) -> usize {
    let n = b.len();
    for back in 1..=3.min(n) {
        let c = b[n - back];
        if c & 0xC0 == 0x80 {
            continue;
        }
        let need = if c >= 0xF0 {
            4
        } else if c >= 0xE0 {
            3
        } else if c >= 0xC0 {
            2
        } else {
            1
        };
        return if back < need { n - back } else { n };
    }
    n
}

/// The process table.
#[derive(Debug)]
pub struct ProcessManager {
    procs: Mutex<HashMap<String, Arc<Proc>>>,
    cap: usize,
    max: usize,
    next: std::sync::atomic::AtomicU64,
    /// Random per process table, part of every id: a request naming a process of an
    /// earlier run of the agent (a kill sent just before a restart and delivered just
    /// after) must find nothing rather than the new run's process with the same number.
    run: String,
    tasks: TaskTracker,
    spawner: Spawner,
    /// A shell started ahead of the next command (unconfined agents only; `warm`).
    warm: Option<WarmShell>,
    /// Commands started, and of those in a waiting shell.
    started: std::sync::atomic::AtomicU64,
    started_warm: std::sync::atomic::AtomicU64,
}

/// How long a fresh shell waits to be started behind a command that has not exited:
/// long enough that starting it does not compete with a short command.
const REFILL_AFTER: Duration = Duration::from_millis(20);

/// `sh` as every command starts: none of the agent's own variables, stdout and stderr
/// piped, its own process group, and not killed when its handle drops (the table owns
/// its life).
fn shell(tmp: Option<&std::path::Path>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    // A process embedding the agent (the demo workspace of `serve`) may hold secrets
    // in its environment; the workspace's commands get none of them.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(|n| n.starts_with("AGENTWIRE_")) {
            cmd.env_remove(&name);
        }
    }
    if let Some(t) = tmp {
        cmd.env("TMPDIR", t);
    }
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    cmd
}

/// A shell to wait for the next command (see `warm`).
fn waiting_shell(workdir: &std::path::Path) -> tokio::process::Command {
    let mut cmd = shell(None);
    cmd.current_dir(workdir)
        .arg("-c")
        .arg(". /dev/stdin")
        .stdin(std::process::Stdio::piped());
    cmd
}

impl ProcessManager {
    /// A table whose commands start through `spawner`; with `warm` (the default working
    /// directory), a shell is kept started ahead of the next command where that is exact.
    pub(super) fn new(cap: usize, max: usize, spawner: Spawner, warm: Option<PathBuf>) -> Self {
        let warm = warm
            .filter(|_| spawner.starts_directly() && cfg!(target_os = "linux"))
            .map(|dir| WarmShell::new(&dir));
        Self {
            warm,
            started: Default::default(),
            started_warm: Default::default(),
            procs: Mutex::new(HashMap::new()),
            cap: cap.max(1),
            max: max.max(1),
            next: std::sync::atomic::AtomicU64::new(1),
            run: format!("{:06x}", rand::random::<u32>() & 0xff_ffff),
            tasks: TaskTracker::new(),
            spawner,
        }
    }

    /// How commands are confined.
    pub fn sandbox(&self) -> &CommandSandbox {
        self.spawner.status()
    }

    /// The allowlisted path through which confined commands could read `path`, if any.
    pub fn reachable_by_commands(&self, path: &std::path::Path) -> Option<std::path::PathBuf> {
        self.spawner.reachable(path)
    }

    fn table(&self) -> MutexGuard<'_, HashMap<String, Arc<Proc>>> {
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, id: &str) -> Result<Arc<Proc>, Error> {
        self.table()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::new(StatusCode::NOT_FOUND, format!("no process {id:?}")))
    }

    /// Commands started, and of those how many in a shell started ahead of need.
    pub fn started(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.started.load(Relaxed), self.started_warm.load(Relaxed))
    }

    /// Number of processes still running.
    pub fn running(&self) -> usize {
        self.table().values().filter(|p| p.lock().running).count()
    }

    /// Kills every running process group and waits for the readers to finish.
    pub async fn shutdown(&self) {
        if let Some(w) = &self.warm {
            w.close();
        }
        let procs: Vec<Arc<Proc>> = self.table().values().cloned().collect();
        for p in procs {
            p.kill(Signal::SIGKILL);
        }
        self.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.tasks.wait()).await;
    }

    /// Starts `sh -c` for the request, in a directory opened beneath the root if any.
    async fn spawn_cold(
        &self,
        req: &StartProcessRequest,
        workdir: &std::path::Path,
        root: Option<&std::path::Path>,
    ) -> Result<tokio::process::Child, Error> {
        let mut cmd = shell(self.spawner.tmp());
        // Under a root the working directory is held open beneath it and entered through
        // the descriptor, so a swap after the check cannot start the command elsewhere.
        let dir = match root {
            Some(_) => Some(confine::open_dir(root, workdir)?),
            None => None,
        };
        match dir.as_ref().and_then(through_fd) {
            Some(p) => cmd.current_dir(p),
            None => cmd.current_dir(workdir),
        };
        cmd.arg("-c")
            .arg(&req.command)
            .envs(&req.env)
            .stdin(std::process::Stdio::null());
        let child = self.spawner.spawn(cmd).await.map_err(|e| match e {
            SpawnError::Refused(why) => Error::new(StatusCode::SERVICE_UNAVAILABLE, why),
            e => Error::new(
                StatusCode::BAD_REQUEST,
                format!("cannot start process in {}", workdir.display()),
            )
            .detail(e),
        })?;
        drop(dir);
        Ok(child)
    }

    async fn spawn(
        &self,
        req: &StartProcessRequest,
        workdir: &std::path::Path,
        root: Option<&std::path::Path>,
    ) -> Result<Arc<Proc>, Error> {
        {
            let mut t = self.table();
            if t.len() >= self.max {
                // Prune finished processes, oldest first.
                let mut done: Vec<(u64, String)> = t
                    .values()
                    .filter(|p| !p.lock().running)
                    .map(|p| (p.seq, p.id.clone()))
                    .collect();
                done.sort();
                let excess = t.len() + 1 - self.max;
                for (_, id) in done.into_iter().take(excess) {
                    t.remove(&id);
                }
                if t.len() >= self.max {
                    return Err(Error::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        format!(
                            "{} processes are running; the limit is {}",
                            t.len(),
                            self.max
                        ),
                    ));
                }
            }
        }
        let warm = match (&self.warm, root) {
            (Some(w), None) => w.run(&req.command, &req.env, workdir).await,
            _ => None,
        };
        let warmed = warm.is_some();
        let mut child = match warm {
            Some(child) => child,
            None => self.spawn_cold(req, workdir, root).await?,
        };
        self.started
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if warmed {
            self.started_warm
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let seq = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("p{seq}-{}", self.run);
        let started_at_ms = crate::runtime::clock::wall()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let (changed, _) = watch::channel(0u64);
        let proc = Arc::new(Proc {
            id: id.clone(),
            command: req.command.clone(),
            workdir: workdir.display().to_string(),
            started_at_ms,
            seq,
            state: Mutex::new(State2 {
                ring: Ring {
                    data: VecDeque::new(),
                    start: 0,
                    cap: self.cap,
                },
                running: true,
                exit_code: None,
                signal: None,
                timed_out: false,
                pid: child.id(),
            }),
            changed,
        });
        self.table().insert(id, proc.clone());
        if let Some(w) = self.warm.as_ref().filter(|w| !w.ready()) {
            // The next shell starts behind this command rather than beside it: once it
            // exits, or after a moment if it runs on.
            let (w, p) = (w.clone(), proc.clone());
            self.tasks.spawn(async move {
                let mut rx = p.changed.subscribe();
                let exited = async {
                    while p.lock().running {
                        if rx.changed().await.is_err() {
                            break;
                        }
                    }
                };
                let _ = tokio::time::timeout(REFILL_AFTER, exited).await;
                w.refill(waiting_shell);
            });
        }
        let readers: Vec<Box<dyn tokio::io::AsyncRead + Unpin + Send>> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
        ]
        .into_iter()
        .flatten()
        .collect();
        let p = proc.clone();
        self.tasks.spawn(async move {
            let pumps = readers.into_iter().map(|mut r| {
                let p = p.clone();
                async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = r.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        p.lock().ring.push(&buf[..n]);
                        p.bump();
                    }
                }
            });
            let status = child.wait();
            let (_, status) = tokio::join!(futures_util::future::join_all(pumps), status);
            {
                use std::os::unix::process::ExitStatusExt;
                let mut s = p.lock();
                s.running = false;
                if let Ok(st) = status {
                    s.exit_code = st.code();
                    s.signal = st.signal();
                }
            }
            p.bump();
        });
        Ok(proc)
    }
}

impl Drop for ProcessManager {
    /// Processes must not outlive the agent that started them.
    fn drop(&mut self) {
        if let Some(w) = &self.warm {
            w.close();
        }
        for p in self
            .procs
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .values()
        {
            p.kill(Signal::SIGKILL);
        }
    }
}

/// The path that names an open directory for a child about to start, where the system
/// has one (`/proc/self/fd/N`: the child's copy of the descriptor, until its exec).
fn through_fd(dir: &std::os::fd::OwnedFd) -> Option<std::path::PathBuf> {
    use std::os::fd::AsRawFd;
    let via = std::path::PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    cfg!(target_os = "linux")
        .then_some(via)
        .filter(|p| p.exists())
}

/// Kills a process group if the request waiting on it (foreground, or a background start's
/// `wait_ms`) is dropped before it answers: the client went away.
struct KillOnDrop(Option<Arc<Proc>>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            p.kill(Signal::SIGKILL);
        }
    }
}

async fn wait_exit(p: &Proc, timeout: Duration) -> bool {
    let mut rx = p.changed.subscribe();
    let wait = async {
        loop {
            if !p.lock().running {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    };
    tokio::time::timeout(timeout, wait).await.is_ok()
}

pub(super) async fn start(
    State(api): State<AgentApi>,
    req: Result<Json<StartProcessRequest>, JsonRejection>,
) -> Result<Json<ProcessOutput>, Error> {
    let Json(req) = req.map_err(rejection)?;
    if req.command.trim().is_empty() {
        return Err(Error::bad_request("command is empty"));
    }
    let workdir = match &req.workdir {
        Some(w) => api.path(w)?,
        None => api.config().workdir.clone(),
    };
    let cfg = api.config().clone();
    let proc = api.processes().spawn(&req, &workdir, api.root()).await?;
    if req.background {
        let wait = Duration::from_millis(req.wait_ms.unwrap_or(0)).min(cfg.max_wait);
        if !wait.is_zero() {
            // Until this answer arrives the caller cannot name the process to kill it,
            // so a dropped request kills it here.
            let mut guard = KillOnDrop(Some(proc.clone()));
            wait_exit(&proc, wait).await;
            guard.0 = None;
        }
        return Ok(Json(proc.output(0)));
    }
    let timeout = req
        .timeout_ms
        .map(Duration::from_millis)
        .unwrap_or(cfg.default_timeout)
        .min(cfg.max_wait);
    let mut guard = KillOnDrop(Some(proc.clone()));
    if !wait_exit(&proc, timeout).await {
        proc.lock().timed_out = true;
        proc.kill(Signal::SIGKILL);
        // The group is dead; collect what it wrote before the pipes closed.
        let _ = wait_exit(&proc, Duration::from_secs(5)).await;
    }
    guard.0 = None;
    Ok(Json(proc.output(0)))
}

pub(super) async fn list(State(api): State<AgentApi>) -> Json<ProcessList> {
    let mut processes: Vec<(u64, ProcessInfo)> = api
        .processes()
        .table()
        .values()
        .map(|p| (p.seq, p.info()))
        .collect();
    processes.sort_by_key(|p| std::cmp::Reverse(p.0));
    Json(ProcessList {
        processes: processes.into_iter().map(|(_, i)| i).collect(),
    })
}

#[derive(Debug, Deserialize)]
pub(super) struct OutputQuery {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    wait_ms: u64,
}

pub(super) async fn output(
    State(api): State<AgentApi>,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<OutputQuery>, QueryRejection>,
) -> Result<Json<ProcessOutput>, Error> {
    let Query(q) = q.map_err(rejection)?;
    let p = api.processes().get(&id)?;
    let wait = Duration::from_millis(q.wait_ms).min(api.config().max_wait);
    if !wait.is_zero() {
        let mut rx = p.changed.subscribe();
        let ready = |p: &Proc| {
            let s = p.lock();
            !s.running || s.ring.end() > q.offset
        };
        let _ = tokio::time::timeout(wait, async {
            while !ready(&p) {
                if rx.changed().await.is_err() {
                    break;
                }
            }
        })
        .await;
    }
    Ok(Json(p.output(q.offset)))
}

pub(super) async fn signal(
    State(api): State<AgentApi>,
    UrlPath(id): UrlPath<String>,
    req: Result<Json<SignalRequest>, JsonRejection>,
) -> Result<Json<SignalResponse>, Error> {
    let Json(req) = req.map_err(rejection)?;
    let p = api.processes().get(&id)?;
    let sig = match req.signal {
        SignalName::Terminate => Signal::SIGTERM,
        SignalName::Kill => Signal::SIGKILL,
        SignalName::Interrupt => Signal::SIGINT,
    };
    Ok(Json(SignalResponse {
        id,
        delivered: p.kill(sig),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_newest_bytes_and_counts_the_rest() {
        let mut r = Ring {
            data: VecDeque::new(),
            start: 0,
            cap: 4,
        };
        r.push(b"abc");
        r.push(b"def");
        assert_eq!(r.read(0, 100), (b"cdef".to_vec(), 2, 2));
        assert_eq!(r.read(4, 100), (b"ef".to_vec(), 0, 4));
        r.push(b"0123456789");
        assert_eq!(r.read(0, 100), (b"6789".to_vec(), 12, 12));
        assert_eq!(r.end(), 16);
    }

    #[test]
    fn incomplete_utf8_tails_are_held_back() {
        let s = "aé€😀".as_bytes();
        assert_eq!(utf8_complete_prefix(s), s.len());
        assert_eq!(utf8_complete_prefix(&s[..s.len() - 1]), s.len() - 4);
        assert_eq!(utf8_complete_prefix(&s[..2]), 1);
        assert_eq!(utf8_complete_prefix(b""), 0);
    }
}
