//! The device's one UDP socket, with batched and segmented IO.
//!
//! One `recvmmsg` fills up to [`quinn_udp::BATCH_SIZE`] buffers, each of which may hold
//! several coalesced datagrams (UDP GRO, `stride` apart). Sends hand runs of equal-sized
//! datagrams to the kernel as one GSO `sendmsg`. Per-packet syscalls are what capped
//! earlier userspace WireGuard stacks well below the crypto's speed.

use quinn_udp::{RecvMeta, Transmit as UdpTransmit, UdpSocketState};
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::task::{Context, Poll};
use tokio::io::Interest;

/// Size of each receive buffer: room for a full GRO batch.
const RECV_BUF: usize = 64 * 1024;

/// The UDP socket and its batching state.
#[derive(Debug)]
pub struct UdpTransport {
    socket: tokio::net::UdpSocket,
    state: UdpSocketState,
    bufs: Vec<Vec<u8>>,
    metas: Vec<RecvMeta>,
    local: SocketAddr,
}

impl UdpTransport {
    /// Binds `addr` (port 0 picks one) and enables GRO/GSO where the kernel has them.
    ///
    /// # Errors
    /// The bind or socket-option error.
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let std_sock = std::net::UdpSocket::bind(addr)?;
        let state = UdpSocketState::new((&std_sock).into())?;
        // Large kernel buffers absorb bursts while the driver is busy encrypting.
        let _ = state.set_recv_buffer_size((&std_sock).into(), 8 << 20);
        let _ = state.set_send_buffer_size((&std_sock).into(), 8 << 20);
        std_sock.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(std_sock)?;
        let local = socket.local_addr()?;
        let n = quinn_udp::BATCH_SIZE;
        Ok(Self {
            socket,
            state,
            bufs: (0..n).map(|_| vec![0u8; RECV_BUF]).collect(),
            metas: vec![RecvMeta::default(); n],
            local,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Most datagrams one GSO send may carry.
    pub fn max_gso_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    /// Receives one batch, calling `f(source, datagram)` for each datagram. Returns the
    /// number of datagrams, or `Pending` (with the waker registered) if none are ready.
    pub fn poll_recv(
        &mut self,
        cx: &mut Context<'_>,
        mut f: impl FnMut(SocketAddr, &[u8]),
    ) -> Poll<io::Result<usize>> {
        loop {
            match self.socket.poll_recv_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
            let (bufs, metas, state, socket) =
                (&mut self.bufs, &mut self.metas, &self.state, &self.socket);
            let mut slices: Vec<IoSliceMut<'_>> =
                bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
            let res = socket.try_io(Interest::READABLE, || {
                state.recv(socket.into(), &mut slices, metas)
            });
            drop(slices);
            match res {
                Ok(msgs) => {
                    let mut count = 0;
                    for (meta, buf) in self.metas.iter().zip(self.bufs.iter()).take(msgs) {
                        let data = &buf[..meta.len.min(buf.len())];
                        let stride = if meta.stride == 0 {
                            data.len().max(1)
                        } else {
                            meta.stride
                        };
                        for d in data.chunks(stride) {
                            f(meta.addr, d);
                            count += 1;
                        }
                    }
                    return Poll::Ready(Ok(count));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                // ICMP errors surface as ECONNREFUSED on the next receive; they say
                // nothing about other peers, so keep going.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Sends `contents` to `dst`: one datagram, or several of `segment` bytes each (the
    /// last may be shorter) as one GSO send.
    ///
    /// # Errors
    /// `WouldBlock` when the socket buffer is full (wait with [`Self::poll_send_ready`]);
    /// other errors mean this batch is lost.
    pub fn try_send(
        &self,
        dst: SocketAddr,
        contents: &[u8],
        segment: Option<usize>,
    ) -> io::Result<()> {
        let t = UdpTransmit {
            destination: dst,
            ecn: None,
            contents,
            segment_size: segment,
            src_ip: None,
        };
        self.socket.try_io(Interest::WRITABLE, || {
            self.state.try_send((&self.socket).into(), &t)
        })
    }

    /// Waits until the socket may accept more data.
    pub fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_send_ready(cx)
    }
}
