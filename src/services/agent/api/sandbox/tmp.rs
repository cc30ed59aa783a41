//! The confined commands' private temporary directory.

use std::path::{Path, PathBuf};

const TMP_PREFIX: &str = "agentwire-commands-";

/// A fresh owner-only directory for the confined commands' temporary files: the system's
/// temporary directory is shared with every other process of the user, so it is not on
/// the allowlist. Its name carries the agent's pid, so directories left by agents that
/// were killed are removed by the next one.
pub(super) fn private_tmp() -> Option<PathBuf> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
