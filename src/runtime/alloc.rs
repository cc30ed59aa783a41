//! Keeps socket buffers lazily committed under glibc.
//!
//! smoltcp sockets own fixed-size buffers (1 MiB each way by default) that hold memory
//! only once data is written into them — as long as each buffer is its own anonymous
//! `mmap`, which glibc does for allocations above its mmap threshold (128 KiB). But glibc
//! *raises* that threshold to the size of any mmapped block that is freed, so after the
//! first connection closes, later buffers come from the heap, where `calloc` zeroes
//! (touches) recycled memory: 2000 idle connections then cost ~230 MiB instead of ~50 MiB.
//! Setting the threshold explicitly turns the dynamic raising off.

/// Pins glibc's mmap threshold at its default (128 KiB), once per process. A no-op on
/// other C libraries. Called by [`crate::runtime::Tunnel::start`].
pub fn pin_mmap_threshold() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        #[cfg(all(target_os = "linux", target_env = "gnu"))]
        // SAFETY: mallopt only adjusts allocator parameters; the arguments are constants
        // glibc documents, and it is safe to call at any time from any thread.
        #[allow(unsafe_code)]
        unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        }
    });
}
