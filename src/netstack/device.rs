//! The in-memory IP device smoltcp reads from and writes to.
//!
//! Packets live in reusable buffers: the runtime hands decrypted packets in, smoltcp's
//! egress fills buffers taken from a free list, and spent buffers go back to it. The
//! transmit queue is bounded; when it is full `transmit` returns `None`, which makes
//! smoltcp hold its data — backpressure instead of drops.

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;
use std::collections::VecDeque;

/// Capacity of a pooled packet buffer: the MTU plus slack for larger peer MTUs.
pub const PACKET_BUF: usize = 2048;

/// The device: bounded receive and transmit queues over pooled buffers.
#[derive(Debug)]
pub struct VirtualDevice {
    /// Received packets, each with the source it is charged to (see `rx_from`).
    pub(crate) rx: VecDeque<(Vec<u8>, Option<std::net::IpAddr>)>,
    /// Packets in `rx` per source address, for the receive queue's fair share.
    rx_from: std::collections::HashMap<std::net::IpAddr, usize>,
    pub(crate) tx: VecDeque<Vec<u8>>,
    pub(crate) free: Vec<Vec<u8>>,
    /// Buffers smoltcp finished reading; moved back to `free` after each poll.
    spent: Vec<Vec<u8>>,
    pub(crate) tx_limit: usize,
    pub(crate) rx_limit: usize,
    mtu: usize,
}

impl VirtualDevice {
    pub(crate) fn new(mtu: usize, queue: usize) -> Self {
        Self {
            rx: VecDeque::with_capacity(queue),
            rx_from: std::collections::HashMap::new(),
            tx: VecDeque::with_capacity(queue),
            free: Vec::new(),
            spent: Vec::new(),
            tx_limit: queue,
            rx_limit: queue,
            mtu,
        }
    }

    /// A buffer holding a copy of `pkt`, from the pool when possible.
    pub(crate) fn buffer_from(&mut self, pkt: &[u8]) -> Vec<u8> {
        let mut b = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PACKET_BUF));
        b.clear();
        b.extend_from_slice(pkt);
        b
    }

    /// Returns one buffer to the pool, unless the pool is full: dropped packets arrive in
    /// buffers the runtime may have allocated, and a flood of them must not grow the pool.
    pub(crate) fn give_back(&mut self, buf: Vec<u8>) {
        if self.free.len() < self.rx_limit + self.tx_limit && buf.capacity() <= 4 * PACKET_BUF {
            self.free.push(buf);
        }
    }

    /// Returns spent buffers to the pool, keeping it bounded.
    pub(crate) fn recycle_spent(&mut self) {
        let keep = (self.rx_limit + self.tx_limit).saturating_sub(self.free.len());
        self.free.extend(self.spent.drain(..).take(keep));
        self.spent.clear();
    }

    /// Takes back buffers the runtime finished with.
    pub(crate) fn recycle(&mut self, bufs: &mut Vec<Vec<u8>>) {
        let keep = (self.rx_limit + self.tx_limit).saturating_sub(self.free.len());
        self.free.extend(
            bufs.drain(..)
                .filter(|b| b.capacity() <= 4 * PACKET_BUF)
                .take(keep),
        );
        bufs.clear();
    }
}

#[derive(Debug)]
pub struct RxToken<'a> {
    buf: Vec<u8>,
    spent: &'a mut Vec<Vec<u8>>,
}

#[derive(Debug)]
pub struct TxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    free: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let r = f(&self.buf);
        self.spent.push(self.buf);
        r
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut b = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(PACKET_BUF));
        // Buffers keep their previous length, so resizing to a full-sized packet rarely
        // has to zero anything.
        b.resize(len, 0);
        let r = f(&mut b[..len]);
        self.tx.push_back(b);
        r
    }
}

impl VirtualDevice {
    /// Queues a received packet, charged to `src`.
    pub(crate) fn push_rx(&mut self, buf: Vec<u8>, src: Option<std::net::IpAddr>) {
        if let Some(src) = src {
            *self.rx_from.entry(src).or_default() += 1;
        }
        self.rx.push_back((buf, src));
    }

    /// Packets from `src` waiting in the receive queue.
    pub(crate) fn queued_from(&self, src: &std::net::IpAddr) -> usize {
        self.rx_from.get(src).copied().unwrap_or(0)
    }

    fn uncharge(&mut self, src: Option<std::net::IpAddr>) {
        let Some(src) = src else { return };
        if let Some(n) = self.rx_from.get_mut(&src) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.rx_from.remove(&src);
            }
        }
    }
}

impl phy::Device for VirtualDevice {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _ts: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        if self.tx.len() >= self.tx_limit {
            // A reply (ACK, RST) needs room; leave the packet queued until there is.
            return None;
        }
        let (buf, src) = self.rx.pop_front()?;
        self.uncharge(src);
        Some((
            RxToken {
                buf,
                spent: &mut self.spent,
            },
            TxToken {
                tx: &mut self.tx,
                free: &mut self.free,
            },
        ))
    }

    fn transmit(&mut self, _ts: Instant) -> Option<TxToken<'_>> {
        if self.tx.len() >= self.tx_limit {
            return None;
        }
        Some(TxToken {
            tx: &mut self.tx,
            free: &mut self.free,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // WireGuard authenticates every packet, so verifying checksums on receive buys
        // nothing; outgoing checksums stay correct for kernel and gVisor peers.
        let mut cs = ChecksumCapabilities::default();
        cs.ipv4 = Checksum::Tx;
        cs.tcp = Checksum::Tx;
        cs.udp = Checksum::Tx;
        cs.icmpv4 = Checksum::Tx;
        cs.icmpv6 = Checksum::Tx;
        caps.checksum = cs;
        caps
    }
}
