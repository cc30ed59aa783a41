//! Small file reads served in place, on the async worker, when nothing can block.
//!
//! A small read used to cost one trip to the blocking pool: a pool thread woken, the open,
//! `fstat` and read done there, the task woken back. At 16 concurrent
//! `workspace_read_file` calls, spawning that trip alone took 4 % of the process's CPU,
//! with more in the wakeups around it. When every step of the path is in the kernel's
//! lookup cache (`openat2` with `RESOLVE_CACHED`) and the bytes are in the page cache
//! (`preadv2` with `RWF_NOWAIT`), the kernel promises that neither waits for a disk, so
//! they run where the request is. Anything else (a path or page not cached, a filesystem
//! without `RWF_NOWAIT`, a kernel before 5.12) answers [`Inline::WouldBlock`] and the
//! caller takes the blocking pool as before. The `fstat` between the two is served from
//! the inode the open just pinned.

use super::{Error, confine};
use rustix::io::{Errno, ReadWriteFlags};
use std::path::Path;

/// A small read, done.
pub(super) struct SmallRead {
    /// The file's size.
    pub size: u64,
    /// Where the read began (the requested offset, at most the size).
    pub offset: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// What a read in place came to.
pub(super) enum Inline {
    /// Read.
    Done(SmallRead),
    /// More than `small` bytes to send: the caller streams the file.
    Large,
    /// A step could have blocked: the caller takes the blocking pool.
    WouldBlock,
}

/// Reads up to `limit` bytes of `path` from `offset` (clamped to the file's size), if they
/// come to at most `small` bytes and nothing has to wait. The same checks as
/// [`confine::open_read`] apply: a regular file only, beneath `root` when one is set.
///
/// # Errors
/// What the blocking read would answer for the same file: not found, outside the root,
/// not a regular file, hard-linked under a root, an I/O error.
pub(super) fn read_small(
    root: Option<&Path>,
    path: &Path,
    offset: u64,
    limit: u64,
    small: u64,
) -> Result<Inline, Error> {
    let Some(fd) = confine::open_read_cached(root, path)? else {
        return Ok(Inline::WouldBlock);
    };
    let st = rustix::fs::fstat(&fd).map_err(|e| Error::io(path, e.into()))?;
    confine::check_stat(path, &st, root.is_some())?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    let offset = offset.min(size);
    let len = limit.min(size - offset);
    if len > small {
        return Ok(Inline::Large);
    }
    // `len` is at most `small`, a few hundred KiB.
    let mut bytes = vec![0u8; len as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        let at = offset + filled as u64;
        let buf = &mut [std::io::IoSliceMut::new(&mut bytes[filled..])];
        match rustix::io::preadv2(&fd, buf, at, ReadWriteFlags::NOWAIT) {
            // The file shrank since the fstat: what was there is the answer.
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN | Errno::OPNOTSUPP | Errno::INVAL) => return Ok(Inline::WouldBlock),
            Err(e) => return Err(Error::io(path, e.into())),
        }
    }
    bytes.truncate(filled);
    Ok(Inline::Done(SmallRead {
        size,
        offset,
        bytes,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn done(r: Result<Inline, Error>) -> SmallRead {
        match r {
            Ok(Inline::Done(r)) => r,
            Ok(Inline::Large) => panic!("large"),
            Ok(Inline::WouldBlock) => panic!("would block"),
            Err(e) => panic!("error {}", e.status),
        }
    }

    fn status(r: Result<Inline, Error>) -> StatusCode {
        match r {
            Err(e) => e.status,
            Ok(_) => StatusCode::OK,
        }
    }

    /// Warms the caches the way a first read on the blocking pool does, then checks that
    /// the read in place gives the same bytes, offsets and sizes.
    fn warm(root: Option<&Path>, path: &Path) {
        let _ = confine::open_read(root, path).map(|(mut f, _)| {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut f, &mut v)
        });
    }

    #[test]
    fn a_cached_file_is_read_in_place_like_the_blocking_read() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("root");
        std::fs::create_dir_all(root.join("d")).expect("mkdir");
        let f = root.join("d/f.txt");
        let content: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&f, &content).expect("write");
        for r in [None, Some(root.as_path())] {
            warm(r, &f);
            let mut tries = 0;
            // The first read after a write can find a page in flight; a later one cannot.
            let got = loop {
                match read_small(r, &f, 100, 5000, 1 << 20) {
                    Ok(Inline::WouldBlock) if tries < 10 => tries += 1,
                    other => break done(other),
                }
            };
            assert_eq!(got.size, 10_000);
            assert_eq!(got.offset, 100);
            assert_eq!(got.bytes, &content[100..5100]);
            let tail = done(read_small(r, &f, 9_990, 5000, 1 << 20));
            assert_eq!(tail.bytes, &content[9_990..]);
            let past = done(read_small(r, &f, 20_000, 10, 1 << 20));
            assert_eq!((past.offset, past.bytes.len()), (10_000, 0));
            assert!(matches!(
                read_small(r, &f, 0, 10_000, 4096),
                Ok(Inline::Large)
            ));
        }
    }

    #[test]
    fn the_same_refusals_as_the_blocking_read() {
        let (_tmp, root, outside) = confine::tests::root_with_a_link_out();
        std::fs::hard_link(outside.join("f"), root.join("link")).expect("link");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("pipe"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .expect("mkfifo");
        let r = Some(root.as_path());
        for (name, want) in [
            ("d/f", StatusCode::FORBIDDEN),
            ("link", StatusCode::FORBIDDEN),
            ("pipe", StatusCode::BAD_REQUEST),
            (".", StatusCode::BAD_REQUEST),
            ("missing", StatusCode::NOT_FOUND),
        ] {
            let p = root.join(name);
            warm(r, &p);
            let mut tries = 0;
            let got = loop {
                match read_small(r, &p, 0, 100, 1 << 20) {
                    Ok(Inline::WouldBlock) if tries < 10 => {
                        tries += 1;
                        warm(r, &p);
                    }
                    other => break status(other),
                }
            };
            assert_eq!(got, want, "{name}");
        }
        // Outside the root altogether, spelled as such.
        assert_eq!(
            status(read_small(r, &outside.join("f"), 0, 100, 1 << 20)),
            StatusCode::FORBIDDEN
        );
    }
}
