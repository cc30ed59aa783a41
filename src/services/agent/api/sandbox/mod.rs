//! Commands confined to the workspace root.
//!
//! With a root, the file tools resolve every path beneath it (`confine`); the commands a
//! workspace runs must not be a way around that. On Linux they are restricted with
//! Landlock: read-write beneath the root and a private temporary directory, read and
//! execute on the system's program and configuration directories, a few device nodes, and
//! nothing else (the policy is listed below and in `docs/deploy.md`).
//!
//! The crate denies `unsafe`, so the restriction cannot be applied in the child between
//! fork and exec (`pre_exec`). A Landlock domain and `no_new_privs` belong to a *thread*,
//! though, and a child inherits both from the thread that forks it. So each API with a root
//! keeps one thread that restricts itself once and then does nothing but spawn: every
//! command forked there starts inside the domain, while the agent's other threads (the
//! tunnel, the file tools) keep their own access. The child is the command itself (no
//! helper process in between), so process groups, signals, kill-on-cancel and output
//! capture work exactly as without confinement.
//!
//! Where Landlock cannot be applied (another OS, a kernel without it), commands under a
//! root are refused with the reason, never run unconfined silently; the operator may opt
//! out explicitly ([`CommandPolicy::unconfined`]).

use std::path::{Path, PathBuf};

/// What the workspace's commands may reach besides the root, or that they are deliberately
/// left unconfined. Only used when the API has a root.
#[derive(Debug, Clone, Default)]
pub struct CommandPolicy {
    /// Run commands with the agent's own access even though a root is set (the operator's
    /// explicit choice, for systems without Landlock).
    pub unconfined: bool,
    /// Extra paths commands may read and execute beneath (a toolchain in a home directory).
    pub read: Vec<PathBuf>,
    /// Extra paths commands may read and write beneath (a shared cache).
    pub write: Vec<PathBuf>,
}

/// How the workspace's commands are confined: logged at start and reported by `health`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandSandbox {
    /// No root is configured: commands run with the agent's own access.
    NoRoot,
    /// A root is configured and the operator chose to run commands unconfined.
    Unconfined,
    /// Landlock restricts commands to the root and the allowlist.
    Landlock {
        /// The Landlock ABI version in force.
        abi: u32,
        /// What this kernel's Landlock does not cover, for the operator.
        gaps: Vec<&'static str>,
        /// Whether a gap lets a command modify files outside the root (Landlock before
        /// Linux 6.2 cannot refuse truncating them).
        partial: bool,
    },
    /// A root is configured but commands cannot be confined here: they are refused.
    Unavailable(String),
}

impl CommandSandbox {
    /// A short name: `off` (no root), `unconfined`, `landlock`, `landlock-partial` or
    /// `refused`.
    pub fn mode(&self) -> &'static str {
        match self {
            Self::NoRoot => "off",
            Self::Unconfined => "unconfined",
            Self::Landlock { partial: false, .. } => "landlock",
            Self::Landlock { partial: true, .. } => "landlock-partial",
            Self::Unavailable(_) => "refused",
        }
    }
}

impl std::fmt::Display for CommandSandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::NoRoot => f.write_str("commands run with the agent's own access (no root)"),
            Self::Unconfined => f.write_str(
                "commands run UNCONFINED with the agent's own access (chosen by the operator); \
                 they can read and write outside the root",
            ),
            Self::Landlock { abi, gaps, .. } => {
                write!(f, "commands confined to the root with Landlock (ABI {abi})")?;
                if !gaps.is_empty() {
                    write!(f, "; not covered by this kernel: {}", gaps.join("; "))?;
                }
                Ok(())
            }
            Self::Unavailable(why) => write!(
                f,
                "commands are refused: {why}; they cannot be confined to the root here \
                 (run the agent with --unconfined-commands to run them with its own access)"
            ),
        }
    }
}

/// Why a command did not start.
#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    /// Commands under this root cannot be confined, so none run.
    #[error("{0}")]
    Refused(String),
    /// The command could not be started (no such working directory, no `sh`).
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The confined spawner thread is gone (it never exits while the API lives).
    #[error("the command spawner stopped")]
    Gone,
}

/// Read and execute: programs, libraries, configuration.
const SYSTEM_EXEC: &[&str] = &[
    "/usr",
    "/bin",
    "/sbin",
    "/lib",
    "/lib32",
    "/lib64",
    "/libx32",
    "/opt",
    "/nix/store",
    "/etc",
];
/// Read only: kernel views many tools need, and where the stub resolver's configuration
/// lives when `/etc/resolv.conf` links there.
const SYSTEM_READ: &[&str] = &["/proc", "/sys", "/run/systemd/resolve"];
/// Read and write, as files.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
];

/// The paths a confined command may reach, with their access.
#[derive(Debug, Clone)]
struct Rules {
    /// The workspace root, the private temporary directory and [`CommandPolicy::write`].
    write: Vec<PathBuf>,
    /// [`CommandPolicy::read`].
    read: Vec<PathBuf>,
}

impl Rules {
    /// The allowlisted path at or above `path` that grants access to it, if any.
    fn covering(&self, path: &Path) -> Option<PathBuf> {
        let fixed = SYSTEM_EXEC.iter().chain(SYSTEM_READ).chain(DEVICES);
        fixed
            .map(PathBuf::from)
            .chain(self.write.iter().cloned())
            .chain(self.read.iter().cloned())
            .find(|allowed| path.starts_with(allowed))
    }
}

/// Starts commands for one API: directly, or on the confined thread.
#[derive(Debug)]
pub(super) struct Spawner {
    how: How,
    status: CommandSandbox,
    rules: Option<Rules>,
    /// The confined commands' `TMPDIR` (mode 0700, outside the root); removed on drop.
    tmp: Option<PathBuf>,
}

#[derive(Debug)]
enum How {
    Direct,
    Confined(std::sync::mpsc::Sender<Job>),
    Refused,
}

struct Job {
    cmd: tokio::process::Command,
    /// The caller's runtime: the child is registered with its process driver.
    handle: tokio::runtime::Handle,
    reply: tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").finish_non_exhaustive()
    }
}

impl Spawner {
    /// Sets up how commands start under `root` (none: directly) with `policy`. Applies
    /// Landlock on a new thread and waits for the outcome, so the status is known when
    /// this returns.
    pub(super) fn new(root: Option<&Path>, policy: &CommandPolicy) -> Self {
        let Some(root) = root else {
            return Self::direct(CommandSandbox::NoRoot);
        };
        if policy.unconfined {
            return Self::direct(CommandSandbox::Unconfined);
        }
        let tmp = tmp::private_tmp();
        let mut write = vec![root.to_path_buf()];
        write.extend(tmp.clone());
        write.extend(policy.write.iter().cloned());
        let rules = Rules {
            write,
            read: policy.read.clone(),
        };
        let (how, status) = match start_thread(rules.clone()) {
            Ok((tx, status)) => (How::Confined(tx), status),
            Err(status) => (How::Refused, status),
        };
        Self {
            how,
            status,
            rules: Some(rules),
            tmp,
        }
    }

    fn direct(status: CommandSandbox) -> Self {
        Self {
            how: How::Direct,
            status,
            rules: None,
            tmp: None,
        }
    }

    /// Whether commands start directly, neither confined nor refused.
    pub(super) fn starts_directly(&self) -> bool {
        matches!(self.how, How::Direct)
    }

    /// How commands are confined.
    pub(super) fn status(&self) -> &CommandSandbox {
        &self.status
    }

    /// The confined commands' temporary directory, if any.
    pub(super) fn tmp(&self) -> Option<&Path> {
        self.tmp.as_deref()
    }

    /// The allowlisted path through which confined commands can read `path`, if any (for
    /// warnings about secrets left where the workspace can reach them).
    pub(super) fn reachable(&self, path: &Path) -> Option<PathBuf> {
        let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        self.rules.as_ref()?.covering(&path)
    }

    /// Starts `cmd`, inside the sandbox when there is one.
    ///
    /// # Errors
    /// [`SpawnError`].
    pub(super) async fn spawn(
        &self,
        mut cmd: tokio::process::Command,
    ) -> Result<tokio::process::Child, SpawnError> {
        match &self.how {
            How::Direct => Ok(cmd.spawn()?),
            How::Refused => Err(SpawnError::Refused(self.status.to_string())),
            How::Confined(tx) => {
                let (reply, rx) = tokio::sync::oneshot::channel();
                let job = Job {
                    cmd,
                    handle: tokio::runtime::Handle::current(),
                    reply,
                };
                tx.send(job).map_err(|_| SpawnError::Gone)?;
                Ok(rx.await.map_err(|_| SpawnError::Gone)??)
            }
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Some(t) = &self.tmp {
            // The process table killed every group first; whatever is left is garbage.
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// Starts the spawner thread, which restricts itself and reports how; on failure, the
/// status that explains why commands are refused.
fn start_thread(
    rules: Rules,
) -> Result<(std::sync::mpsc::Sender<Job>, CommandSandbox), CommandSandbox> {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let (status_tx, status_rx) = std::sync::mpsc::sync_channel(1);
    let spawned = std::thread::Builder::new()
        .name("agent-commands".into())
        .spawn(move || {
            let status = restrict_this_thread(&rules);
            let confined = matches!(status, CommandSandbox::Landlock { .. });
            let _ = status_tx.send(status);
            if !confined {
                return;
            }
            // Runs until the API (the one sender) goes away.
            while let Ok(job) = rx.recv() {
                let Job {
                    mut cmd,
                    handle,
                    reply,
                } = job;
                let _rt = handle.enter();
                if let Err(Ok(child)) = reply.send(cmd.spawn()) {
                    // The request went away while its command started: nobody would
                    // track, time out or kill it. Its group goes now; tokio reaps it.
                    abandon(&child);
                }
            }
        });
    if let Err(e) = spawned {
        return Err(CommandSandbox::Unavailable(format!(
            "cannot start the command spawner thread: {e}"
        )));
    }
    match status_rx.recv() {
        Ok(s @ CommandSandbox::Landlock { .. }) => Ok((tx, s)),
        Ok(s) => Err(s),
        Err(_) => Err(CommandSandbox::Unavailable(
            "the command spawner thread failed".into(),
        )),
    }
}

/// Kills the process group of a child started for a caller that is gone.
fn abandon(child: &tokio::process::Child) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        tracing::debug!(pid, "command started for a dropped request: killed");
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn restrict_this_thread(_rules: &Rules) -> CommandSandbox {
    CommandSandbox::Unavailable("Landlock is Linux-only".into())
}

#[cfg(target_os = "linux")]
fn restrict_this_thread(rules: &Rules) -> CommandSandbox {
    match linux::restrict(rules) {
        Ok(s) => s,
        Err(e) => CommandSandbox::Unavailable(e),
    }
}

#[cfg(target_os = "linux")]
mod linux;
mod tmp;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_root_or_opt_out_spawns_directly() {
        let s = Spawner::new(None, &CommandPolicy::default());
        assert_eq!(s.status(), &CommandSandbox::NoRoot);
        let tmp = std::env::temp_dir();
        let s = Spawner::new(
            Some(&tmp),
            &CommandPolicy {
                unconfined: true,
                ..Default::default()
            },
        );
        assert_eq!(s.status().mode(), "unconfined");
        assert!(s.tmp().is_none());
    }

    /// Whatever keeps the sandbox from being built (here a root that is gone; elsewhere a
    /// kernel without Landlock), commands are refused, never run unconfined.
    #[tokio::test]
    async fn a_sandbox_that_cannot_be_built_refuses_commands() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = Spawner::new(Some(&tmp.path().join("gone")), &CommandPolicy::default());
        assert_eq!(s.status().mode(), "refused", "{}", s.status());
        let mut cmd = tokio::process::Command::new("true");
        cmd.kill_on_drop(true);
        assert!(matches!(s.spawn(cmd).await, Err(SpawnError::Refused(_))));
    }

    /// Processes whose command line is exactly `argv`.
    #[cfg(target_os = "linux")]
    fn running(argv: &[&str]) -> Vec<i32> {
        let want: Vec<u8> = argv
            .iter()
            .flat_map(|a| [a.as_bytes(), b"\0"].concat())
            .collect();
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c == want))
            .collect()
    }

    /// A request dropped while the spawner thread starts its command: the command must
    /// not run on untracked (nothing would time it out or kill it).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_command_started_for_a_dropped_request_is_killed() {
        let root = tempfile::tempdir().expect("tempdir");
        let s = Spawner::new(Some(root.path()), &CommandPolicy::default());
        let How::Confined(tx) = &s.how else {
            eprintln!("skipped: commands are not confined here ({})", s.status());
            return;
        };
        let marker = format!("3600.{}", rand::random::<u32>());
        let argv = ["sleep", marker.as_str()];
        let job = |reply| {
            let mut cmd = tokio::process::Command::new(argv[0]);
            cmd.arg(argv[1]).process_group(0);
            Job {
                cmd,
                handle: tokio::runtime::Handle::current(),
                reply,
            }
        };
        let (reply, rx) = tokio::sync::oneshot::channel();
        drop(rx);
        tx.send(job(reply)).expect("spawner thread");
        // The thread takes jobs in order: once a second one is answered, the first
        // has been started (and, with nobody to take it, dealt with).
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(job(reply)).expect("spawner thread");
        let mut second = rx.await.expect("answered").expect("spawned");
        let second_pid = second.id().and_then(|p| i32::try_from(p).ok());
        let deadline = crate::runtime::clock::now() + std::time::Duration::from_secs(3);
        let left = loop {
            let left: Vec<i32> = running(&argv)
                .into_iter()
                .filter(|p| Some(*p) != second_pid)
                .collect();
            if left.is_empty() || crate::runtime::clock::now() > deadline {
                break left;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let _ = second.kill().await;
        for pid in &left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        assert!(left.is_empty(), "an abandoned command still runs: {left:?}");
    }

    #[test]
    fn the_allowlist_names_what_reaches_a_path() {
        let rules = Rules {
            write: vec![PathBuf::from("/srv/ws")],
            read: vec![PathBuf::from("/home/u/.cargo")],
        };
        assert_eq!(
            rules.covering(Path::new("/etc/agentwire/user-token")),
            Some(PathBuf::from("/etc"))
        );
        assert_eq!(
            rules.covering(Path::new("/srv/ws/token")),
            Some(PathBuf::from("/srv/ws"))
        );
        assert_eq!(rules.covering(Path::new("/srv/wsx/token")), None);
        assert_eq!(
            rules.covering(Path::new("/var/lib/agentwire/derp.key")),
            None
        );
    }
}
