//! UDP socket operations on the netstack.

use super::Netstack;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp::{self, RecvError, SendError};
use smoltcp::wire::{IpEndpoint, IpListenEndpoint};
use std::net::SocketAddr;
use std::task::{Context, Poll};

/// Why a UDP operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UdpError {
    /// The port is taken.
    #[error("address in use")]
    AddrInUse,
    /// No free port.
    #[error("no free local port")]
    NoPorts,
    /// The datagram does not fit the socket's buffer.
    #[error("datagram too large")]
    TooLarge,
    /// The destination is not reachable from this interface.
    #[error("destination unreachable from this interface")]
    Unaddressable,
    /// The receive buffer was too small and the datagram was dropped.
    #[error("datagram truncated")]
    Truncated,
}

impl Netstack {
    /// Binds a UDP socket to `port` (0 picks an ephemeral port) on every interface address.
    ///
    /// # Errors
    /// [`UdpError::AddrInUse`] or [`UdpError::NoPorts`].
    pub fn udp_bind(&mut self, port: u16) -> Result<(SocketHandle, u16), UdpError> {
        let port = if port == 0 {
            let mut found = None;
            for _ in 0..64 {
                let p = self.alloc_port().ok_or(UdpError::NoPorts)?;
                self.used_ports.remove(&p);
                if !self.udp_ports.contains(&p) {
                    found = Some(p);
                    break;
                }
            }
            found.ok_or(UdpError::NoPorts)?
        } else {
            port
        };
        if self.udp_ports.contains(&port) {
            return Err(UdpError::AddrInUse);
        }
        let n = self.config.udp_packets;
        let b = self.config.udp_buffer;
        let mut s = udp::Socket::new(
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; n], vec![0u8; b]),
            udp::PacketBuffer::new(vec![udp::PacketMetadata::EMPTY; n], vec![0u8; b]),
        );
        s.bind(IpListenEndpoint { addr: None, port })
            .map_err(|_| UdpError::AddrInUse)?;
        self.udp_ports.insert(port);
        Ok((self.sockets.add(s), port))
    }

    /// Receives one datagram into `buf`: its length and sender.
    pub fn udp_poll_recv(
        &mut self,
        h: SocketHandle,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<Result<(usize, SocketAddr), UdpError>> {
        let s = self.sockets.get_mut::<udp::Socket>(h);
        match s.recv_slice(buf) {
            Ok((n, meta)) => Poll::Ready(Ok((n, SocketAddr::from(meta.endpoint)))),
            Err(RecvError::Truncated) => Poll::Ready(Err(UdpError::Truncated)),
            Err(RecvError::Exhausted) => {
                s.register_recv_waker(cx.waker());
                Poll::Pending
            }
        }
    }

    /// Queues one datagram to `dst`.
    pub fn udp_poll_send(
        &mut self,
        h: SocketHandle,
        cx: &mut Context<'_>,
        data: &[u8],
        dst: SocketAddr,
    ) -> Poll<Result<(), UdpError>> {
        if !self
            .config
            .addresses
            .iter()
            .any(|a| a.is_ipv4() == dst.is_ipv4())
        {
            return Poll::Ready(Err(UdpError::Unaddressable));
        }
        let s = self.sockets.get_mut::<udp::Socket>(h);
        if data.len() > s.payload_send_capacity() {
            return Poll::Ready(Err(UdpError::TooLarge));
        }
        match s.send_slice(data, IpEndpoint::from(dst)) {
            Ok(()) => {
                self.wake_driver();
                Poll::Ready(Ok(()))
            }
            Err(SendError::BufferFull) => {
                s.register_send_waker(cx.waker());
                Poll::Pending
            }
            Err(SendError::Unaddressable) => Poll::Ready(Err(UdpError::Unaddressable)),
        }
    }

    /// Closes a UDP socket.
    pub fn udp_close(&mut self, h: SocketHandle) {
        let port = self.sockets.get::<udp::Socket>(h).endpoint().port;
        self.udp_ports.remove(&port);
        self.sockets.remove(h);
    }
}
