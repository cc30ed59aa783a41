//! TCP buffers that grow while a connection runs.
//!
//! A connection starts with the configured buffers (1 MiB each way by default): enough for
//! every interactive exchange, and little memory for thousands of pooled connections. A
//! bulk transfer over a long or lossy path needs more: while the oldest hole of a window
//! is repaired, everything after it waits in the receiver's buffer and in the sender's,
//! so with 1 MiB at 20 ms RTT and 1 % loss a stream got 160-175 Mbit/s where 4 MiB gave
//! 350-370. A buffer grows fourfold, up to a limit, when it is seen to hold the
//! connection back:
//!
//! - **receive**: a segment reached the right edge of the window we last advertised (or,
//!   behind a hole, its second half) while at most a quarter of the buffer waited for
//!   the application (the socket's `take_rx_window_filled`). The window, not the reader,
//!   held the sender back; a slow reader never grows its buffer.
//! - **send**: the application found the buffer full while at least half of it was in
//!   flight and the peer's window was at least half open: the congestion window admits
//!   that much, and the buffer is what stops more (Linux sizes it at twice the
//!   congestion window for the same reason). Behind a closing peer window (a slow
//!   reader) it stays. Not "the peer's window takes all of it": a receive buffer of the
//!   same size, whose reader holds a few bytes, never advertises quite that much, and
//!   neither side would grow first.
//!
//! Either way only on a path whose round trip the buffer cannot cover at 10 Gbit/s
//! (1 MiB: a millisecond or more): on loopback or a LAN the signals fire as well (the
//! reader is never behind, the flight is the whole buffer), and a larger ring there only
//! spreads the same bytes over more cache (node-to-node throughput fell from about 4 to
//! about 3 Gbit/s with 4 MiB). A connection with no RTT measured yet does not grow.
//!
//! Growth beyond the configured sizes comes out of one budget per netstack, returned
//! when the socket is freed: a peer that keeps windows full, or many bulk streams, cannot
//! make the process hold more than the budget on top of the base buffers. Nothing here
//! reads a clock or does I/O; `tcp.rs` applies the decisions.

use smoltcp::iface::SocketHandle;
use std::collections::HashMap;

/// Bytes a millisecond of round trip holds at the fastest rate worth growing for
/// (10 Gbit/s).
const BYTES_PER_RTT_MS: usize = 1_250_000;

/// Whether a buffer of `capacity` is short of the path's round trip (`rtt_ms`, smoothed).
fn path_is_long(capacity: usize, rtt_ms: Option<u32>) -> bool {
    rtt_ms.is_some_and(|ms| (ms as usize).saturating_mul(BYTES_PER_RTT_MS) > capacity)
}

/// The size to grow a receive buffer of `capacity` to, if the window filled.
pub(super) fn rx_target(
    capacity: usize,
    limit: usize,
    window_filled: bool,
    rtt_ms: Option<u32>,
) -> Option<usize> {
    if !window_filled || !path_is_long(capacity, rtt_ms) {
        return None;
    }
    grown(capacity, limit)
}

/// The size to grow a send buffer of `capacity` to, when it holds `queued` bytes of which
/// `in_flight` are sent and not yet acknowledged, the peer's window is `peer_window` and
/// the smoothed RTT `rtt_ms`.
pub(super) fn tx_target(
    capacity: usize,
    limit: usize,
    queued: usize,
    in_flight: usize,
    peer_window: usize,
    rtt_ms: Option<u32>,
) -> Option<usize> {
    if queued < capacity
        || in_flight < capacity / 2
        || peer_window < capacity / 2
        || !path_is_long(capacity, rtt_ms)
    {
        return None;
    }
    grown(capacity, limit)
}

/// A buffer that held its connection back grows this many times over (to the limit).
/// Four rather than two: at 20 ms and 1 % loss a window spends its first second
/// growing, and quadrupling carried 404 Mbit/s on average where doubling carried 377
/// (`growth_tests`, six seeds, to a 4 MiB limit).
const GROWTH: usize = 4;

fn grown(capacity: usize, limit: usize) -> Option<usize> {
    let to = capacity.saturating_mul(GROWTH).min(limit);
    (to > capacity).then_some(to)
}

/// What growth has taken from the budget, per socket.
#[derive(Debug)]
pub(super) struct Budget {
    limit: usize,
    used: usize,
    by_socket: HashMap<SocketHandle, usize>,
}

impl Budget {
    pub(super) fn new(limit: usize) -> Self {
        Self {
            limit,
            used: 0,
            by_socket: HashMap::new(),
        }
    }

    /// Whether `bytes` more fit in the budget.
    pub(super) fn fits(&self, bytes: usize) -> bool {
        self.used.saturating_add(bytes) <= self.limit
    }

    /// Takes `bytes` for `socket`'s growth; false (and nothing taken) past the budget.
    pub(super) fn take(&mut self, socket: SocketHandle, bytes: usize) -> bool {
        if !self.fits(bytes) {
            return false;
        }
        self.used += bytes;
        *self.by_socket.entry(socket).or_default() += bytes;
        true
    }

    /// Returns what `socket` took: it is being freed.
    pub(super) fn release(&mut self, socket: SocketHandle) {
        if let Some(bytes) = self.by_socket.remove(&socket) {
            self.used -= bytes;
        }
    }

    /// Bytes taken by live sockets.
    pub(super) fn used(&self) -> usize {
        self.used
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::iface::SocketSet;
    use smoltcp::socket::udp;

    const MIB: usize = 1 << 20;

    #[test]
    fn a_filled_window_quadruples_the_receive_buffer_up_to_the_limit() {
        let rtt = Some(20);
        assert_eq!(rx_target(MIB, 8 * MIB, false, rtt), None);
        assert_eq!(rx_target(MIB, 8 * MIB, true, rtt), Some(4 * MIB));
        assert_eq!(rx_target(4 * MIB, 6 * MIB, true, rtt), Some(6 * MIB));
        assert_eq!(rx_target(8 * MIB, 8 * MIB, true, rtt), None);
        // A limit below the base size means no growth.
        assert_eq!(rx_target(MIB, 0, true, rtt), None);
    }

    #[test]
    fn a_short_or_unmeasured_round_trip_grows_nothing() {
        assert_eq!(rx_target(MIB, 4 * MIB, true, None), None);
        assert_eq!(rx_target(MIB, 4 * MIB, true, Some(0)), None);
        assert_eq!(rx_target(2 * MIB, 4 * MIB, true, Some(1)), None);
        assert_eq!(rx_target(MIB, 4 * MIB, true, Some(1)), Some(4 * MIB));
        assert_eq!(tx_target(MIB, 4 * MIB, MIB, MIB, MIB, None), None);
        assert_eq!(tx_target(MIB, 4 * MIB, MIB, MIB, MIB, Some(0)), None);
        assert_eq!(
            tx_target(MIB, 4 * MIB, MIB, MIB, MIB, Some(1)),
            Some(4 * MIB)
        );
    }

    #[test]
    fn a_full_send_buffer_grows_only_when_half_of_it_is_in_flight() {
        // Full, but mostly unsent: the congestion window is the limit.
        assert_eq!(
            tx_target(MIB, 8 * MIB, MIB, MIB / 4, 4 * MIB, Some(20)),
            None
        );
        // Not full: the application is the limit.
        assert_eq!(
            tx_target(MIB, 8 * MIB, MIB - 1, MIB, 4 * MIB, Some(20)),
            None
        );
        // The peer's window is closing: the reader is the limit.
        assert_eq!(
            tx_target(MIB, 8 * MIB, MIB, MIB, MIB / 2 - 1, Some(20)),
            None
        );
        assert_eq!(
            tx_target(MIB, 8 * MIB, MIB, MIB / 2, MIB / 2, Some(20)),
            Some(4 * MIB)
        );
        assert_eq!(
            tx_target(8 * MIB, 8 * MIB, 8 * MIB, 8 * MIB, 8 * MIB, Some(20)),
            None
        );
    }

    fn handles(n: usize) -> Vec<SocketHandle> {
        // Handles come only from a socket set; the sockets themselves are not used.
        let mut set = SocketSet::new(Vec::new());
        (0..n)
            .map(|_| {
                set.add(udp::Socket::new(
                    udp::PacketBuffer::new(Vec::new(), Vec::new()),
                    udp::PacketBuffer::new(Vec::new(), Vec::new()),
                ))
            })
            .collect()
    }

    #[test]
    fn the_budget_bounds_growth_and_is_returned_when_a_socket_goes() {
        let h = handles(3);
        let mut b = Budget::new(4 * MIB);
        assert!(b.take(h[0], MIB));
        assert!(b.take(h[0], 2 * MIB));
        assert!(!b.fits(2 * MIB));
        assert!(!b.take(h[1], 2 * MIB), "over the budget");
        assert!(b.take(h[1], MIB));
        assert_eq!(b.used(), 4 * MIB);
        b.release(h[0]);
        assert_eq!(b.used(), MIB);
        assert!(b.take(h[2], 2 * MIB));
        // Releasing twice, or a socket that never grew, returns nothing more.
        b.release(h[0]);
        b.release(h[2]);
        b.release(h[2]);
        assert_eq!(b.used(), MIB);
    }
}
