//! The device's output buffer: datagrams packed back to back.

use super::PathAddr;
use crate::wire::key::NodePublic;

/// A datagram waiting to be sent: `len` bytes at `start` in [`Transmits::bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transmit {
    /// Where it goes.
    pub path: PathAddr,
    /// The peer it is for (the DERP destination key).
    pub peer: NodePublic,
    /// Offset into the shared buffer.
    pub start: usize,
    /// Length in bytes.
    pub len: usize,
}

/// Datagrams produced by the device, packed back to back in one reusable buffer so the
/// runtime can hand runs of equal-sized datagrams to the kernel as one GSO send.
#[derive(Debug, Default)]
pub struct Transmits {
    pub(super) buf: Vec<u8>,
    pub(super) used: usize,
    pub(super) items: Vec<Transmit>,
}

impl Transmits {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }
    /// The datagrams, in the order they were produced.
    pub fn items(&self) -> &[Transmit] {
        &self.items
    }
    /// The bytes of one datagram.
    pub fn bytes(&self, t: &Transmit) -> &[u8] {
        &self.buf[t.start..t.start + t.len]
    }
    /// The packed bytes of all datagrams.
    pub fn buffer(&self) -> &[u8] {
        &self.buf[..self.used]
    }
    /// Number of datagrams waiting.
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
    /// Forgets every datagram, keeping the allocation.
    pub fn clear(&mut self) {
        self.used = 0;
        self.items.clear();
    }
    /// Forgets the first `n` datagrams (after they were sent); keeps the allocation.
    pub fn consume(&mut self, n: usize) {
        if n >= self.items.len() {
            self.clear();
        } else {
            self.items.drain(..n);
        }
    }

    /// Room for one datagram of at most `max` bytes. Grows without zeroing what exists.
    pub(super) fn space(&mut self, max: usize) -> &mut [u8] {
        let need = self.used + max;
        if self.buf.len() < need {
            self.buf
                .resize(need.max(self.buf.len() * 2).max(64 * 1024), 0);
        }
        &mut self.buf[self.used..need]
    }

    pub(super) fn commit(&mut self, path: PathAddr, peer: NodePublic, len: usize) {
        self.items.push(Transmit {
            path,
            peer,
            start: self.used,
            len,
        });
        self.used += len;
    }

    /// Queues a copy of `bytes` for `path` (datagrams made outside the device, such as
    /// STUN requests sharing its socket).
    pub fn push(&mut self, path: PathAddr, peer: NodePublic, bytes: &[u8]) {
        self.push_copy(path, peer, bytes);
    }

    pub(super) fn push_copy(&mut self, path: PathAddr, peer: NodePublic, bytes: &[u8]) {
        let len = bytes.len();
        self.space(len).copy_from_slice(bytes);
        self.commit(path, peer, len);
    }
}
