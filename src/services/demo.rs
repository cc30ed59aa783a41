//! Where the embedded default's demo workspace lives, and what its commands can reach.
//!
//! The data directory holds the server's secrets (`user-token`, `derp.key`); the demo
//! agent runs in the server's own process, as the same user. Its workspace is therefore
//! kept *beside* the data directory, never inside it (nor around it), and its commands run
//! in the same Landlock sandbox as any agent's with a root: they can read and write only
//! beneath the workspace (see `agent::api::sandbox`).

use crate::services::agent::api::CommandSandbox;
use std::path::{Path, PathBuf};

/// Why the demo workspace cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum DemoDirError {
    /// Creating, moving or resolving the directory failed.
    #[error("demo workspace {path}: {source}")]
    Io {
        /// The directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The workspace would hold or sit inside the directory with the secrets.
    #[error(
        "the demo workspace {workspace} and the data directory {data} must not contain one another: the workspace's commands would reach the server's secrets"
    )]
    Overlaps {
        /// The workspace.
        workspace: PathBuf,
        /// The data directory.
        data: PathBuf,
    },
    /// The data directory has no parent to put the workspace beside.
    #[error("cannot place the demo workspace beside the data directory {0}; give --demo-dir")]
    NoSibling(PathBuf),
}

/// The default: `<data dir>-demo`, beside the data directory.
///
/// # Errors
/// [`DemoDirError::NoSibling`] for `/`.
pub fn default_dir(data_dir: &Path) -> Result<PathBuf, DemoDirError> {
    match (data_dir.parent(), data_dir.file_name()) {
        (Some(parent), Some(name)) => {
            let mut n = name.to_os_string();
            n.push("-demo");
            Ok(parent.join(n))
        }
        _ => Err(DemoDirError::NoSibling(data_dir.to_path_buf())),
    }
}

/// Creates the demo workspace (`dir`, or the default beside `data_dir`), moving one left
/// inside the data directory by an earlier version, and returns its canonical path.
///
/// # Errors
/// [`DemoDirError`].
pub fn prepare(data_dir: &Path, dir: Option<&Path>) -> Result<PathBuf, DemoDirError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoDirError::Io { path, source }
    };
    let data = data_dir.canonicalize().map_err(io(data_dir))?;
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => default_dir(&data)?,
    };
    let old = data.join("workspaces").join("demo");
    if old.is_dir() && !dir.exists() {
        if let Some(parent) = dir.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        match std::fs::rename(&old, &dir) {
            Ok(()) => {
                tracing::info!(from = %old.display(), to = %dir.display(), "moved the demo workspace out of the data directory");
                let _ = std::fs::remove_dir(data.join("workspaces"));
            }
            Err(e) => {
                tracing::warn!(from = %old.display(), to = %dir.display(), error = %e, "could not move the old demo workspace; starting an empty one")
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let workspace = dir.canonicalize().map_err(io(&dir))?;
    if workspace.starts_with(&data) || data.starts_with(&workspace) {
        return Err(DemoDirError::Overlaps { workspace, data });
    }
    Ok(workspace)
}

/// Logs how the demo workspace's commands are confined (a warning when they are not, or
/// when the data directory is on the sandbox's allowlist) and returns it for the banner.
pub fn report(
    procs: &crate::services::agent::api::ProcessManager,
    data_dir: &Path,
) -> CommandSandbox {
    let sandbox = procs.sandbox().clone();
    match &sandbox {
        CommandSandbox::Landlock { partial: false, .. } => {
            tracing::info!("demo workspace: {sandbox}")
        }
        _ => tracing::warn!("demo workspace: {sandbox}"),
    }
    if let Some(via) = procs.reachable_by_commands(data_dir) {
        tracing::warn!(
            "the data directory {} is beneath {}, which the demo workspace's commands may read; move it (--data-dir) to keep the server's secrets from them",
            data_dir.display(),
            via.display()
        );
    }
    sandbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workspace_goes_beside_the_data_directory() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("state");
        std::fs::create_dir(&data).expect("mkdir");
        let ws = prepare(&data, None).expect("prepare");
        assert_eq!(ws, tmp.path().canonicalize().unwrap().join("state-demo"));
        assert!(ws.is_dir());
    }

    #[test]
    fn an_old_workspace_inside_the_data_directory_is_moved_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("state");
        let old = data.join("workspaces/demo");
        std::fs::create_dir_all(&old).expect("mkdir");
        std::fs::write(old.join("notes.txt"), "kept").expect("write");
        let ws = prepare(&data, None).expect("prepare");
        assert_eq!(
            std::fs::read_to_string(ws.join("notes.txt")).expect("moved"),
            "kept"
        );
        assert!(!data.join("workspaces").exists());
    }

    #[test]
    fn overlapping_directories_are_refused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let data = tmp.path().join("state");
        std::fs::create_dir(&data).expect("mkdir");
        for bad in [data.join("ws"), tmp.path().to_path_buf(), data.clone()] {
            assert!(
                matches!(
                    prepare(&data, Some(&bad)),
                    Err(DemoDirError::Overlaps { .. })
                ),
                "{}",
                bad.display()
            );
        }
        assert!(matches!(
            default_dir(Path::new("/")),
            Err(DemoDirError::NoSibling(_))
        ));
    }
}
