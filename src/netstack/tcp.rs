//! TCP socket operations on the netstack, for the runtime's stream types.

use super::Netstack;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, RecvError, SendError, State};
use smoltcp::wire::IpEndpoint;
use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Instant;

/// Why a TCP operation failed. Maps onto `std::io::ErrorKind` in the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TcpError {
    /// The peer refused the connection (RST in reply to our SYN).
    #[error("connection refused")]
    Refused,
    /// The connection was reset.
    #[error("connection reset")]
    Reset,
    /// The socket is not (or no longer) connected for this operation.
    #[error("socket not connected")]
    NotConnected,
    /// No ephemeral port is free.
    #[error("no free local port")]
    NoPorts,
    /// No interface address of the destination's family, or a bad destination.
    #[error("destination unreachable from this interface")]
    Unaddressable,
    /// A listener already holds that port.
    #[error("address in use")]
    AddrInUse,
    /// The write side was shut down.
    #[error("broken pipe")]
    BrokenPipe,
}

pub(super) fn new_socket(config: &super::NetstackConfig) -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0u8; config.tcp_rx_buffer]),
        tcp::SocketBuffer::new(vec![0u8; config.tcp_tx_buffer]),
    );
    // Interactive request/response traffic dominates; Nagle would add a round trip to
    // every small write. Delayed ACKs are off because the driver already batches: one
    // poll processes a whole burst of segments and sends one ACK for it.
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s.set_congestion_control(tcp::CongestionControl::Cubic);
    // A lost segment of a small call must not cost a second (smoltcp's default floor):
    // the patched smoltcp (third_party/smoltcp/PATCHES.md) takes a lower floor and
    // probes a lost tail after two round trips.
    s.set_min_rto(config.tcp_min_rto.into());
    s.set_tail_loss_probe(config.tcp_tail_loss_probe);
    // After the controller is chosen: the floor is a setting of CUBIC.
    s.set_loss_rate_floor(config.tcp_loss_rate_floor);
    s.set_pacing(config.tcp_pacing);
    // Before the SYN: the window scale must describe the largest buffer.
    s.set_rx_capacity_limit(config.tcp_rx_buffer_max.max(config.tcp_rx_buffer));
    s
}

/// Which of a socket's buffers grows.
#[derive(Debug, Clone, Copy)]
enum Ring {
    Rx,
    Tx,
}

fn endpoint(e: IpEndpoint) -> SocketAddr {
    SocketAddr::from(e)
}

impl Netstack {
    fn tcp(&mut self, h: SocketHandle) -> &mut tcp::Socket<'static> {
        self.sockets.get_mut::<tcp::Socket>(h)
    }

    /// Starts a connection to `remote`. Completion is observed with
    /// [`Netstack::tcp_poll_connect`].
    ///
    /// # Errors
    /// [`TcpError::NoPorts`] or [`TcpError::Unaddressable`].
    pub fn tcp_connect(
        &mut self,
        remote: SocketAddr,
        _now: Instant,
    ) -> Result<SocketHandle, TcpError> {
        let local_addr = self
            .config
            .addresses
            .iter()
            .find(|a| a.is_ipv4() == remote.is_ipv4())
            .copied()
            .ok_or(TcpError::Unaddressable)?;
        let port = self.alloc_port().ok_or(TcpError::NoPorts)?;
        let mut s = new_socket(&self.config);
        s.set_keep_alive(self.config.dial_keepalive.map(Into::into));
        s.set_timeout(self.config.dial_dead_after.map(Into::into));
        if s.connect(
            self.iface.context(),
            remote,
            SocketAddr::new(local_addr, port),
        )
        .is_err()
        {
            self.used_ports.remove(&port);
            return Err(TcpError::Unaddressable);
        }
        let h = self.sockets.add(s);
        self.dial_ports.insert(h, port);
        self.wake_driver();
        Ok(h)
    }

    /// Whether the connection started by [`Netstack::tcp_connect`] is established.
    pub fn tcp_poll_connect(
        &mut self,
        h: SocketHandle,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TcpError>> {
        let s = self.tcp(h);
        match s.state() {
            State::SynSent | State::SynReceived => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            State::Closed | State::TimeWait | State::Listen => Poll::Ready(Err(TcpError::Refused)),
            _ => Poll::Ready(Ok(())),
        }
    }

    /// Reads into `buf`. `Ok(0)` is end of stream.
    pub fn tcp_poll_read(
        &mut self,
        h: SocketHandle,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<usize, TcpError>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let s = self.tcp(h);
        match s.recv_slice(buf) {
            Ok(0) => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                self.grow_rx(h);
                // The window just opened; let the driver tell the peer.
                self.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(RecvError::Finished) => Poll::Ready(Ok(0)),
            Err(RecvError::InvalidState) => match s.state() {
                State::SynSent | State::SynReceived => {
                    s.register_recv_waker(cx.waker());
                    Poll::Pending
                }
                _ => Poll::Ready(Err(TcpError::Reset)),
            },
        }
    }

    /// Writes from `data`; returns how much was buffered.
    pub fn tcp_poll_write(
        &mut self,
        h: SocketHandle,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<Result<usize, TcpError>> {
        let s = self.tcp(h);
        if s.send_queue() == s.send_capacity() && !data.is_empty() {
            self.grow_tx(h);
        }
        let s = self.tcp(h);
        match s.send_slice(data) {
            Ok(0) if !data.is_empty() => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            Ok(n) => {
                self.wake_driver();
                Poll::Ready(Ok(n))
            }
            Err(SendError::InvalidState) => match s.state() {
                State::SynSent | State::SynReceived => {
                    s.register_send_waker(cx.waker());
                    Poll::Pending
                }
                State::FinWait1
                | State::FinWait2
                | State::Closing
                | State::LastAck
                | State::TimeWait => Poll::Ready(Err(TcpError::BrokenPipe)),
                _ => Poll::Ready(Err(TcpError::Reset)),
            },
        }
    }

    /// Grows `h`'s receive buffer if its window held the peer back (see `autotune.rs`).
    fn grow_rx(&mut self, h: SocketHandle) {
        let limit = self.config.tcp_rx_buffer_max;
        let s = self.tcp(h);
        let filled = s.take_rx_window_filled();
        let capacity = s.recv_capacity();
        let rtt = s.smoothed_rtt_ms();
        if let Some(to) = super::autotune::rx_target(capacity, limit, filled, rtt) {
            self.grow(h, Ring::Rx, capacity, to);
        }
    }

    /// Grows `h`'s full send buffer if it is what holds the connection back.
    fn grow_tx(&mut self, h: SocketHandle) {
        let limit = self.config.tcp_tx_buffer_max;
        let s = self.tcp(h);
        let capacity = s.send_capacity();
        let target = super::autotune::tx_target(
            capacity,
            limit,
            s.send_queue(),
            s.send_in_flight(),
            s.remote_window(),
            s.smoothed_rtt_ms(),
        );
        if let Some(to) = target {
            self.grow(h, Ring::Tx, capacity, to);
        }
    }

    /// Moves `h`'s `ring` from `capacity` to `to` bytes if the growth budget allows.
    fn grow(&mut self, h: SocketHandle, ring: Ring, capacity: usize, to: usize) {
        let extra = to - capacity;
        if !self.growth.fits(extra) {
            self.stats.tcp_growth_refused += 1;
            return;
        }
        let buffer = tcp::SocketBuffer::new(vec![0u8; to]);
        let s = self.tcp(h);
        let moved = match ring {
            Ring::Rx => s.grow_rx_buffer(buffer),
            Ring::Tx => s.grow_tx_buffer(buffer),
        };
        if moved.is_err() {
            // Only a smaller buffer is refused, and `to` is larger.
            tracing::warn!(?ring, capacity, to, "buffer did not grow");
            return;
        }
        let taken = self.growth.take(h, extra);
        debug_assert!(taken, "checked to fit above");
        self.stats.tcp_buffers_grown += 1;
        tracing::trace!(?ring, capacity = to, "buffer grew");
    }

    /// Ready once everything written has been acknowledged by the peer.
    pub fn tcp_poll_drained(
        &mut self,
        h: SocketHandle,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), TcpError>> {
        let s = self.tcp(h);
        if s.send_queue() == 0 {
            return Poll::Ready(Ok(()));
        }
        match s.state() {
            State::Closed => Poll::Ready(Err(TcpError::Reset)),
            _ => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Closes the write half (FIN after buffered data).
    pub fn tcp_shutdown(&mut self, h: SocketHandle) {
        self.tcp(h).close();
        self.wake_driver();
    }

    /// Resets the connection at once.
    pub fn tcp_abort(&mut self, h: SocketHandle) {
        self.tcp(h).abort();
        self.wake_driver();
    }

    /// Releases a socket whose handle was dropped. Unread data means the application
    /// abandoned the stream: reset, as a kernel does. Otherwise close gracefully and let
    /// the socket linger until closed (bounded by the configured linger time).
    pub fn tcp_release(&mut self, h: SocketHandle, now: Instant) {
        let linger = self.config.linger;
        let s = self.tcp(h);
        let wait = match s.state() {
            // Nothing to tell the peer: a SYN-SENT socket has no connection yet.
            State::Closed | State::TimeWait | State::Listen | State::SynSent => {
                self.free_socket(h);
                return;
            }
            _ if s.recv_queue() > 0 => {
                s.abort();
                super::RESET_SEND_LIMIT
            }
            _ => {
                s.close();
                linger
            }
        };
        self.lingering.push((h, now + wait));
        self.wake_driver();
    }

    /// The connection's local and remote addresses.
    pub fn tcp_addrs(&mut self, h: SocketHandle) -> Option<(SocketAddr, SocketAddr)> {
        let s = self.tcp(h);
        Some((
            endpoint(s.local_endpoint()?),
            endpoint(s.remote_endpoint()?),
        ))
    }

    /// The socket's TCP state, for diagnostics and tests.
    pub fn tcp_state(&mut self, h: SocketHandle) -> State {
        self.tcp(h).state()
    }
}
