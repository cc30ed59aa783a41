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
        let tmp = private_tmp();
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

const TMP_PREFIX: &str = "agentwire-commands-";

/// A fresh owner-only directory for the confined commands' temporary files: the system's
/// temporary directory is shared with every other process of the user, so it is not on
/// the allowlist. Its name carries the agent's pid, so directories left by agents that
/// were killed are removed by the next one.
fn private_tmp() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    sweep_stale(&base);
    let tag: u64 = rand::random();
    let dir = base.join(format!("{TMP_PREFIX}{}-{tag:016x}", std::process::id()));
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "no private temporary directory for the workspace's commands");
            None
        }
    }
}

/// Removes private temporary directories of ours whose agent process is gone.
fn sweep_stale(base: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    let uid = rustix::process::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(TMP_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let ours = e.metadata().is_ok_and(|m| m.is_dir() && m.uid() == uid);
        // Only "no such process" counts as gone; EPERM means alive under another user.
        let alive = rustix::process::Pid::from_raw(pid).is_none_or(|p| {
            !matches!(
                rustix::process::test_kill_process(p),
                Err(rustix::io::Errno::SRCH)
            )
        });
        if ours && !alive {
            let _ = std::fs::remove_dir_all(e.path());
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
                let _ = reply.send(cmd.spawn());
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
mod linux {
    use super::{CommandSandbox, DEVICES, Rules, SYSTEM_EXEC, SYSTEM_READ};
    use landlock::{
        ABI, Access, AccessFs, BitFlags, LandlockStatus, PathBeneath, PathFd, RulesetAttr,
        RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
    };

    /// The newest ABI whose rights this policy was written and tested against; newer
    /// kernels enforce these, older ones what they have (best effort, reported as gaps).
    const ABI_TARGET: ABI = ABI::V9;

    /// Restricts the calling thread (and so every process it forks from now on).
    pub(super) fn restrict(rules: &Rules) -> Result<CommandSandbox, String> {
        let kept_capabilities = drop_capabilities();
        let all = AccessFs::from_all(ABI_TARGET);
        let read = AccessFs::from_read(ABI_TARGET);
        let read_only = AccessFs::ReadFile | AccessFs::ReadDir;
        // Devices are written (`> /dev/null` opens with O_TRUNC) and ioctl'd, never run.
        let device: BitFlags<AccessFs> =
            AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate | AccessFs::IoctlDev;
        let rule = |p: &std::path::Path, access| {
            PathFd::new(p)
                .map(|fd| PathBeneath::new(fd, access))
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let mut ruleset = landlock::Ruleset::default()
            .handle_access(all)
            .and_then(|r| r.scope(Scope::from_all(ABI_TARGET)))
            .and_then(|r| r.create())
            .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_EXEC, read)))
            .and_then(|r| r.add_rules(path_beneath_rules(SYSTEM_READ, read_only)))
            .and_then(|r| r.add_rules(path_beneath_rules(DEVICES, device)))
            .map_err(|e| format!("building the Landlock ruleset: {e}"))?;
        for p in &rules.write {
            ruleset = ruleset
                .add_rule(rule(p, all)?)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        for p in &rules.read {
            ruleset = ruleset
                .add_rule(rule(p, read)?)
                .map_err(|e| format!("{}: {e}", p.display()))?;
        }
        let status = ruleset
            .restrict_self()
            .map_err(|e| format!("applying Landlock: {e}"))?;
        let abi = match status.landlock {
            LandlockStatus::Available { effective_abi, .. } => effective_abi,
            LandlockStatus::NotEnabled => {
                return Err(
                    "this kernel has Landlock but it is not enabled (add `landlock` to the \
                     lsm= boot parameter)"
                        .into(),
                );
            }
            LandlockStatus::NotImplemented => {
                return Err("this kernel has no Landlock (Linux 5.13 or newer)".into());
            }
        };
        if status.ruleset == RulesetStatus::NotEnforced {
            return Err(format!("Landlock (ABI {}) enforced nothing", abi as u32));
        }
        let mut sandbox = described(abi);
        if let (Some(why), CommandSandbox::Landlock { gaps, partial, .. }) =
            (kept_capabilities, &mut sandbox)
        {
            gaps.push(why);
            *partial = true;
        }
        Ok(sandbox)
    }

    /// Drops every capability of the calling thread, bounding set included, so commands
    /// of an agent running as root get none on exec either: with them, a command could
    /// read the agent's memory maps and environment through /proc (CAP_SYS_PTRACE
    /// outranks Landlock's ptrace scoping there) or load a kernel module. Returns what is
    /// left when that fails.
    fn drop_capabilities() -> Option<&'static str> {
        use rustix::thread::{CapabilitySet, CapabilitySets};
        let none = CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        };
        match rustix::thread::capabilities(None) {
            Ok(now) if now == none => return None,
            Ok(_) => {}
            Err(_) => return Some("commands may keep the agent's capabilities (capget failed)"),
        }
        for cap in 0..64 {
            match rustix::thread::remove_capability_from_bounding_set(
                CapabilitySet::from_bits_retain(1 << cap),
            ) {
                Ok(()) => {}
                // Past the kernel's last capability.
                Err(rustix::io::Errno::INVAL) => break,
                Err(_) => {
                    return Some(
                        "commands of this root agent keep capabilities (no CAP_SETPCAP to drop them)",
                    );
                }
            }
        }
        match rustix::thread::set_capabilities(None, none) {
            Ok(()) => None,
            Err(_) => Some("commands of this root agent keep capabilities (capset failed)"),
        }
    }

    /// What an ABI leaves out of this policy.
    fn described(abi: ABI) -> CommandSandbox {
        let mut gaps = Vec::new();
        if abi < ABI::V2 {
            gaps.push("files cannot be moved or linked between directories, even inside the root (Linux 5.19)");
        }
        if abi < ABI::V3 {
            gaps.push("truncating a file outside the root is not refused (Linux 6.2)");
        }
        if abi < ABI::V5 {
            gaps.push("ioctl on devices is not restricted (Linux 6.10)");
        }
        if abi < ABI::V6 {
            gaps.push(
                "commands can signal processes outside the sandbox, such as the agent (Linux 6.12)",
            );
        }
        if abi < ABI::V9 {
            gaps.push(
                "connecting to Unix sockets by path outside the root is not refused (Linux 7.1)",
            );
        }
        CommandSandbox::Landlock {
            abi: abi as u32,
            gaps,
            partial: abi < ABI::V3,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn old_abis_are_described_as_partial() {
            let CommandSandbox::Landlock { partial, gaps, .. } = described(ABI::V2) else {
                panic!("landlock")
            };
            assert!(partial);
            assert!(gaps.iter().any(|g| g.contains("truncating")));
            let CommandSandbox::Landlock { partial, gaps, .. } = described(ABI::V9) else {
                panic!("landlock")
            };
            assert!(!partial);
            assert!(gaps.is_empty());
        }
    }
}

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

    #[test]
    fn directories_of_killed_agents_are_swept() {
        let base = tempfile::tempdir().expect("tempdir");
        let mut child = std::process::Command::new("true").spawn().expect("spawn");
        let dead = child.id();
        child.wait().expect("wait");
        let gone = base.path().join(format!("{TMP_PREFIX}{dead}-1"));
        let live = base
            .path()
            .join(format!("{TMP_PREFIX}{}-2", std::process::id()));
        let other = base.path().join("unrelated-1-2");
        for d in [&gone, &live, &other] {
            std::fs::create_dir(d).expect("mkdir");
        }
        sweep_stale(base.path());
        assert!(!gone.exists() && live.exists() && other.exists());
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
