//! File access confined to the workspace root.
//!
//! `paths::resolve` checks a path against the root, but a check followed by a separate
//! open by name races with anyone who can swap a directory for a symlink in between. On
//! Linux every operation under a root therefore opens the root as a directory fd and
//! resolves the rest with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`, so the kernel
//! refuses any step outside at the moment of use; creation and rename then go through the
//! parent directory's fd. Directories are handled the same way: `ls` lists an fd opened
//! beneath the root and stats each entry by name relative to it, and a command starts in
//! its working directory through an fd opened beneath the root (`process`). Elsewhere, and
//! on kernels without `openat2`, the earlier check is all there is.
//!
//! Independent of the root, reads open with `O_NONBLOCK` and refuse anything that is not a
//! regular file: opening a fifo would otherwise block a worker thread until a writer came.

use super::Error;
use axum::http::StatusCode;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// Why an operation under the root was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// The kernel found the path leaving the root (through `..` or a symlink).
    #[error("{0}: resolves outside the workspace root")]
    Outside(String),
    /// A fifo, socket or device: reading one can block or have side effects.
    #[error("{0}: not a regular file")]
    NotRegular(String),
    /// A regular file with more than one link could be a hard link to a file outside.
    #[error("{0}: has {1} hard links; files with more than one are refused under a workspace root")]
    HardLinked(String, u64),
}

impl From<ConfineError> for Error {
    fn from(e: ConfineError) -> Self {
        let status = match e {
            ConfineError::Outside(_) | ConfineError::HardLinked(..) => StatusCode::FORBIDDEN,
            ConfineError::NotRegular(_) => StatusCode::BAD_REQUEST,
        };
        Error::new(status, e.to_string())
    }
}

fn shown(p: &Path) -> String {
    p.display().to_string()
}

/// Refuses what a read or write must not touch; links are counted only under a root.
fn check_regular(path: &Path, meta: &std::fs::Metadata, root: bool) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    check_kind(path, meta.is_dir(), meta.is_file(), meta.nlink(), root)
}

/// [`check_regular`] for a `fstat` result.
#[cfg(target_os = "linux")]
pub(super) fn check_stat(path: &Path, st: &rustix::fs::Stat, root: bool) -> Result<(), Error> {
    use rustix::fs::FileType;
    let ft = FileType::from_raw_mode(st.st_mode);
    check_kind(
        path,
        ft == FileType::Directory,
        ft == FileType::RegularFile,
        st.st_nlink,
        root,
    )
}

fn check_kind(path: &Path, dir: bool, file: bool, nlink: u64, root: bool) -> Result<(), Error> {
    if dir {
        return Err(Error::bad_request(format!(
            "{}: is a directory",
            path.display()
        )));
    }
    if !file {
        return Err(ConfineError::NotRegular(shown(path)).into());
    }
    if root && nlink > 1 {
        return Err(ConfineError::HardLinked(shown(path), nlink).into());
    }
    Ok(())
}

/// Whether opens under `root` are confined by the kernel (a root is set and the kernel
/// has `openat2`), so that a lexical check of a path before the open is enough.
pub(crate) fn kernel_confines(root: Option<&Path>) -> bool {
    #[cfg(target_os = "linux")]
    {
        root.is_some() && linux::openat2_available()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = root;
        false
    }
}

/// Clears `O_NONBLOCK` once the fd is known to be a regular file, so reads behave normally.
fn clear_nonblock(f: &std::fs::File, path: &Path) -> Result<(), Error> {
    use rustix::fs::{OFlags, fcntl_getfl, fcntl_setfl};
    let flags = fcntl_getfl(f).map_err(|e| Error::io(path, e.into()))?;
    fcntl_setfl(f, flags - OFlags::NONBLOCK).map_err(|e| Error::io(path, e.into()))
}

#[cfg(target_os = "linux")]
mod linux {
    use super::*;
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    use rustix::io::Errno;
    use std::os::fd::{AsFd, OwnedFd};
    use std::sync::atomic::{AtomicBool, Ordering};

    static WARNED: AtomicBool = AtomicBool::new(false);

    /// The path below `root`, or `None` when `openat2` is unavailable (warned once) and
    /// the caller should fall back to by-name access.
    pub(super) struct Beneath {
        pub root: OwnedFd,
        pub rel: PathBuf,
    }

    /// Whether the kernel has openat2 (Linux 5.6+): probed once per process.
    pub(super) fn openat2_available() -> bool {
        static OPENAT2: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OPENAT2.get_or_init(|| {
            !matches!(
                rustix::fs::openat2(
                    rustix::fs::CWD,
                    ".",
                    OFlags::PATH | OFlags::CLOEXEC,
                    Mode::empty(),
                    ResolveFlags::BENEATH,
                ),
                Err(Errno::NOSYS)
            )
        })
    }

    /// `path` relative to `root`, as `openat2` beneath the root's fd takes it.
    fn relative(root: &Path, path: &Path) -> Result<PathBuf, Error> {
        let canonical = crate::services::agent::api::paths::canonical_root(root);
        let rel = path
            .strip_prefix(root)
            .or_else(|_| path.strip_prefix(&canonical))
            // Spelled through a symlink outside the root: the check passed, but only paths
            // written below the root can be resolved beneath it.
            .map_err(|_| ConfineError::Outside(shown(path)))?;
        Ok(if rel.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            rel.to_path_buf()
        })
    }

    pub(super) fn beneath(root: &Path, path: &Path) -> Result<Option<Beneath>, Error> {
        let rel = relative(root, path)?;
        let fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io(root, e.into()))?;
        if openat2_available() {
            return Ok(Some(Beneath { root: fd, rel }));
        }
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "openat2 is unavailable: workspace-root confinement falls back to checking paths before use, which a concurrent symlink swap can race"
            );
        }
        Ok(None)
    }

    /// Opens `path` for reading as [`super::open_read_fd`] does, but only if every step of
    /// its resolution is in the kernel's lookup cache (`RESOLVE_CACHED`, Linux 5.12), so
    /// the call cannot block on the filesystem. `Ok(None)` means it could have: the caller
    /// opens it the blocking way instead.
    pub(crate) fn open_read_cached(
        root: Option<&Path>,
        path: &Path,
    ) -> Result<Option<OwnedFd>, Error> {
        // Kernels before 5.12 refuse the flag with EINVAL: learnt once.
        static UNSUPPORTED: AtomicBool = AtomicBool::new(false);
        if UNSUPPORTED.load(Ordering::Relaxed) || !openat2_available() {
            return Ok(None);
        }
        let cached =
            |dir: std::os::fd::BorrowedFd<'_>, p: &Path, flags: OFlags, resolve: ResolveFlags| {
                match rustix::fs::openat2(
                    dir,
                    p,
                    flags | OFlags::CLOEXEC,
                    Mode::empty(),
                    resolve | ResolveFlags::CACHED,
                ) {
                    Ok(fd) => Ok(Some(fd)),
                    Err(Errno::AGAIN) => Ok(None),
                    Err(Errno::INVAL) => {
                        UNSUPPORTED.store(true, Ordering::Relaxed);
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            };
        let read = OFlags::RDONLY | OFlags::NONBLOCK;
        let refused = |e| refused(e, path);
        let Some(root) = root else {
            return cached(rustix::fs::CWD, path, read, ResolveFlags::empty()).map_err(refused);
        };
        let rel = relative(root, path)?;
        let dir = match cached(
            rustix::fs::CWD,
            root,
            OFlags::PATH | OFlags::DIRECTORY,
            ResolveFlags::empty(),
        ) {
            Ok(Some(d)) => d,
            Ok(None) => return Ok(None),
            Err(e) => return Err(Error::io(root, e.into())),
        };
        cached(
            dir.as_fd(),
            &rel,
            read,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(refused)
    }

    pub(super) fn open(
        dir: &OwnedFd,
        rel: &Path,
        flags: OFlags,
        mode: Mode,
        shown_as: &Path,
    ) -> Result<OwnedFd, Error> {
        rustix::fs::openat2(
            dir,
            rel,
            flags | OFlags::CLOEXEC,
            mode,
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )
        .map_err(|e| refused(e, shown_as))
    }

    /// What an `openat2` beneath the root failing with `e` means for `shown_as`.
    fn refused(e: Errno, shown_as: &Path) -> Error {
        match e {
            Errno::XDEV | Errno::LOOP => ConfineError::Outside(shown(shown_as)).into(),
            Errno::NXIO => ConfineError::NotRegular(shown(shown_as)).into(),
            e => Error::io(shown_as, e.into()),
        }
    }
}

#[cfg(target_os = "linux")]
pub(crate) use linux::open_read_cached;

/// Opens `path` (already checked by `paths::resolve`) for reading: a regular file only,
/// resolved beneath `root` when one is set.
pub(crate) fn open_read(
    root: Option<&Path>,
    path: &Path,
) -> Result<(std::fs::File, std::fs::Metadata), Error> {
    let f = open_read_fd(root, path)?;
    let meta = f.metadata().map_err(|e| Error::io(path, e))?;
    check_regular(path, &meta, root.is_some())?;
    clear_nonblock(&f, path)?;
    Ok((f, meta))
}

fn open_read_fd(root: Option<&Path>, path: &Path) -> Result<std::fs::File, Error> {
    #[cfg(target_os = "linux")]
    if let Some(root) = root
        && let Some(b) = linux::beneath(root, path)?
    {
        use rustix::fs::{Mode, OFlags};
        let fd = linux::open(
            &b.root,
            &b.rel,
            OFlags::RDONLY | OFlags::NONBLOCK,
            Mode::empty(),
            path,
        )?;
        return Ok(std::fs::File::from(fd));
    }
    let _ = root;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => ConfineError::NotRegular(shown(path)).into(),
            _ => Error::io(path, e),
        })
}

/// Opens the directory `path` (already checked by `paths::resolve`), beneath `root` when
/// one is set: the handle `ls` lists relative to and commands start in, so a directory
/// swapped for a symlink after the check takes neither outside.
pub(crate) fn open_dir(root: Option<&Path>, path: &Path) -> Result<std::os::fd::OwnedFd, Error> {
    use rustix::fs::{Mode, OFlags};
    #[cfg(target_os = "linux")]
    if let Some(root) = root
        && let Some(b) = linux::beneath(root, path)?
    {
        return linux::open(
            &b.root,
            &b.rel,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            path,
        );
    }
    let _ = root;
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(path, e.into()))
}

/// Where a write lands: the target's parent directory (held open beneath the root on
/// Linux) and the target's name in it.
pub(crate) struct Parent {
    dir: Dir,
    name: OsString,
    target: PathBuf,
    rooted: bool,
}

enum Dir {
    #[cfg(target_os = "linux")]
    Fd {
        root: std::os::fd::OwnedFd,
        rel: PathBuf,
        fd: std::os::fd::OwnedFd,
    },
    Path(PathBuf),
}

impl Parent {
    /// Opens (creating as needed) the parent directory of `target`.
    pub(crate) async fn open(root: Option<&Path>, target: &Path) -> Result<Self, Error> {
        let root = root.map(Path::to_path_buf);
        let target = target.to_path_buf();
        tokio::task::spawn_blocking(move || Self::open_blocking(root.as_deref(), &target))
            .await
            .map_err(|e| {
                Error::new(StatusCode::INTERNAL_SERVER_ERROR, "write task failed").detail(e)
            })?
    }

    fn open_blocking(root: Option<&Path>, target: &Path) -> Result<Self, Error> {
        let name = target
            .file_name()
            .ok_or_else(|| Error::bad_request(format!("{}: is a directory", target.display())))?
            .to_os_string();
        let parent = target.parent().unwrap_or(Path::new("/")).to_path_buf();
        #[cfg(target_os = "linux")]
        if let Some(r) = root
            && let Some(b) = linux::beneath(r, target)?
        {
            use rustix::fs::{Mode, OFlags};
            let rel_parent = b.rel.parent().unwrap_or(Path::new(".")).to_path_buf();
            let flags = OFlags::RDONLY | OFlags::DIRECTORY;
            // mkdir -p, each step resolved beneath the root: mkdirat never follows the
            // name it creates, and the next step is resolved from the root again.
            let mut so_far = PathBuf::from(".");
            let mut dir = linux::open(&b.root, &so_far, flags, Mode::empty(), &parent)?;
            for c in rel_parent.components() {
                so_far.push(c);
                match linux::open(&b.root, &so_far, flags, Mode::empty(), &parent) {
                    Ok(d) => dir = d,
                    Err(e) if e.status == StatusCode::NOT_FOUND => {
                        match rustix::fs::mkdirat(&dir, c.as_os_str(), Mode::from_raw_mode(0o755)) {
                            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                            Err(e) => return Err(Error::io(&parent, e.into())),
                        }
                        dir = linux::open(&b.root, &so_far, flags, Mode::empty(), &parent)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            return Ok(Self {
                dir: Dir::Fd {
                    root: b.root,
                    rel: b.rel,
                    fd: dir,
                },
                name,
                target: target.to_path_buf(),
                rooted: true,
            });
        }
        std::fs::create_dir_all(&parent).map_err(|e| Error::io(&parent, e))?;
        Ok(Self {
            dir: Dir::Path(parent),
            name,
            target: target.to_path_buf(),
            rooted: root.is_some(),
        })
    }

    /// The permission bits of the existing target, or `None` if there is none. Refuses a
    /// directory, anything not a regular file, and (under a root) a hard-linked file.
    pub(crate) fn existing_mode(&self) -> Result<Option<u32>, Error> {
        use std::os::unix::fs::PermissionsExt;
        let meta = match &self.dir {
            #[cfg(target_os = "linux")]
            Dir::Fd { root, rel, .. } => {
                use rustix::fs::{Mode, OFlags};
                match linux::open(root, rel, OFlags::PATH, Mode::empty(), &self.target) {
                    Ok(fd) => std::fs::File::from(fd).metadata(),
                    Err(e) if e.status == StatusCode::NOT_FOUND => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
            Dir::Path(_) => std::fs::metadata(&self.target),
        };
        match meta {
            Ok(m) => {
                check_regular(&self.target, &m, self.rooted)?;
                Ok(Some(m.permissions().mode() & 0o7777))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(&self.target, e)),
        }
    }

    /// Creates `name` exclusively in the parent directory (never following a symlink).
    pub(crate) fn create_new(&self, name: &OsString) -> std::io::Result<std::fs::File> {
        match &self.dir {
            #[cfg(target_os = "linux")]
            Dir::Fd { fd, .. } => {
                use rustix::fs::{Mode, OFlags};
                let f = rustix::fs::openat(
                    fd,
                    name.as_os_str(),
                    OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                Ok(std::fs::File::from(f))
            }
            Dir::Path(p) => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(p.join(name)),
        }
    }

    /// Renames `from` over the target, both in the parent directory.
    pub(crate) fn rename_into_place(&self, from: &OsString) -> std::io::Result<()> {
        match &self.dir {
            #[cfg(target_os = "linux")]
            Dir::Fd { fd, .. } => Ok(rustix::fs::renameat(
                fd,
                from.as_os_str(),
                fd,
                self.name.as_os_str(),
            )?),
            Dir::Path(p) => std::fs::rename(p.join(from), p.join(&self.name)),
        }
    }

    /// Removes `name` from the parent directory, ignoring errors (cleanup).
    pub(crate) fn remove(&self, name: &OsString) {
        match &self.dir {
            #[cfg(target_os = "linux")]
            Dir::Fd { fd, .. } => {
                let _ = rustix::fs::unlinkat(fd, name.as_os_str(), rustix::fs::AtFlags::empty());
            }
            Dir::Path(p) => {
                let _ = std::fs::remove_file(p.join(name));
            }
        }
    }

    /// The target's file name.
    pub(crate) fn name(&self) -> &OsString {
        &self.name
    }
}

#[cfg(all(test, target_os = "linux"))]
pub(super) mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn status(r: Result<impl Sized, Error>) -> StatusCode {
        match r {
            Ok(_) => StatusCode::OK,
            Err(e) => e.status,
        }
    }

    #[test]
    fn fifo_is_refused_at_once() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let fifo = tmp.path().join("pipe");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        // Without a root and with one: a fifo never blocks the opener.
        assert_eq!(status(open_read(None, &fifo)), StatusCode::BAD_REQUEST);
        assert_eq!(
            status(open_read(Some(tmp.path()), &fifo)),
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn hard_link_to_a_file_outside_is_refused_under_a_root() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("secret"));
        std::fs::create_dir(&root).expect("mkdir");
        std::fs::write(&outside, "outside").expect("write");
        std::fs::hard_link(&outside, root.join("link")).expect("link");
        assert_eq!(
            status(open_read(Some(&root), &root.join("link"))),
            StatusCode::FORBIDDEN
        );
        let parent = Parent::open_blocking(Some(&root), &root.join("link")).expect("parent");
        assert_eq!(status(parent.existing_mode()), StatusCode::FORBIDDEN);
        std::fs::write(root.join("plain"), "inside").expect("write");
        let (mut f, _) = open_read(Some(&root), &root.join("plain")).expect("plain file");
        let mut s = String::new();
        std::io::Read::read_to_string(&mut f, &mut s).expect("read");
        assert_eq!(s, "inside");
    }

    /// A root, and beside it a directory `out` holding `f`, reached from `root/d`.
    pub(crate) fn root_with_a_link_out() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("out"));
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("f"), "outside").expect("write");
        std::os::unix::fs::symlink(&outside, root.join("d")).expect("symlink");
        (tmp, root, outside)
    }

    #[test]
    fn symlink_out_of_the_root_is_refused() {
        let (_tmp, root, outside) = root_with_a_link_out();
        assert_eq!(
            status(open_read(Some(&root), &root.join("d/f"))),
            StatusCode::FORBIDDEN
        );
        assert!(Parent::open_blocking(Some(&root), &root.join("d/new")).is_err());
        assert!(!outside.join("new").exists());
    }

    /// A thread swaps `root/d` between a real directory and a symlink to a directory
    /// outside while reads, writes and listings (`ls`, and the directory commands start
    /// in) go through `d`; nothing outside is ever read, written or listed.
    #[test]
    fn racing_symlink_swaps_never_escape() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (root, outside) = (tmp.path().join("root"), tmp.path().join("out"));
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::create_dir_all(&outside).expect("mkdir");
        std::fs::write(outside.join("f"), "outside").expect("write");
        std::fs::write(outside.join("only-outside"), "").expect("write");
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let (root, outside, stop) = (root.clone(), outside.clone(), stop.clone());
            std::thread::spawn(move || {
                let (d, real, link) = (root.join("d"), root.join("d.real"), root.join("d.link"));
                std::fs::create_dir_all(&real).expect("mkdir");
                std::fs::write(real.join("f"), "inside").expect("write");
                let _ = std::os::unix::fs::symlink(&outside, &link);
                let mut swaps = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // rename(2) replaces `d` atomically with one or the other.
                    let _ = std::fs::remove_dir_all(&d).or_else(|_| std::fs::remove_file(&d));
                    if swaps.is_multiple_of(2) {
                        let _ = std::os::unix::fs::symlink(&outside, &d);
                    } else {
                        let _ = std::fs::create_dir(&d);
                        let _ = std::fs::write(d.join("f"), "inside");
                    }
                    swaps += 1;
                }
                swaps
            })
        };
        #[allow(clippy::disallowed_methods)] // a test bounding its own run time
        let started = std::time::Instant::now();
        let (mut reads, mut writes, mut lists, mut escaped) = (0u64, 0u64, 0u64, 0u64);
        let mut inline_reads = 0u64;
        while started.elapsed() < std::time::Duration::from_secs(3) {
            if let Ok((mut f, _)) = open_read(Some(&root), &root.join("d/f")) {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut f, &mut s);
                reads += 1;
                if s == "outside" {
                    escaped += 1;
                }
            }
            // The read in place, which opens through the lookup cache.
            let f = root.join("d/f");
            if let Ok(crate::services::agent::api::inline::Inline::Done(r)) =
                crate::services::agent::api::inline::read_small(Some(&root), &f, 0, 100, 4096)
            {
                inline_reads += 1;
                if r.bytes == b"outside" {
                    escaped += 1;
                }
            }
            let d = root.join("d");
            if let Ok(dir) = open_dir(Some(&root), &d)
                && let Ok(entries) = crate::services::agent::api::files::list_dir(&dir, &d)
            {
                lists += 1;
                if entries.iter().any(|e| e.name == "only-outside") {
                    escaped += 1;
                }
            }
            if let Ok(parent) = Parent::open_blocking(Some(&root), &root.join("d/w")) {
                let name = OsString::from(format!(".w.{writes}"));
                if parent.create_new(&name).is_ok() {
                    writes += 1;
                    let _ = parent.rename_into_place(&name);
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        let swaps = swapper.join().expect("swapper");
        let written_outside = std::fs::read_dir(&outside)
            .expect("read outside")
            .filter_map(Result::ok)
            .filter(|e| e.file_name() != "f" && e.file_name() != "only-outside")
            .count();
        println!(
            "swaps {swaps}, reads {reads} ({inline_reads} in place), writes {writes}, listings {lists}, escaped reads or listings {escaped}, files written outside {written_outside}"
        );
        assert!(
            swaps > 100 && reads + writes > 100 && lists > 100,
            "the race ran"
        );
        assert_eq!(escaped, 0, "a read or listing escaped the root");
        assert_eq!(written_outside, 0, "a write escaped the root");
    }
}
