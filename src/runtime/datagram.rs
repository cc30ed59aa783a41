//! `UdpSocket` over the tunnel.

use super::stack::{Shared, closed_error, udp_io_error};
use smoltcp::iface::SocketHandle;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::Poll;

/// A UDP socket bound to a port of ours in the tunnel. Dropping it unbinds the port.
#[derive(Debug)]
pub struct UdpSocket {
    shared: Arc<Shared>,
    handle: SocketHandle,
    port: u16,
}

impl UdpSocket {
    pub(crate) fn bind(shared: Arc<Shared>, port: u16) -> io::Result<Self> {
        shared.check_open()?;
        let (handle, port) = shared.lock().udp_bind(port).map_err(udp_io_error)?;
        Ok(Self {
            shared,
            handle,
            port,
        })
    }

    /// The bound port.
    pub fn local_port(&self) -> u16 {
        self.port
    }

    /// Sends one datagram to `dst`, waiting for buffer space if needed.
    ///
    /// # Errors
    /// `InvalidInput` if it can never fit, `HostUnreachable` for a family we have no
    /// address in, `NotConnected` once the tunnel is shut down.
    pub async fn send_to(&self, data: &[u8], dst: SocketAddr) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            if self.shared.is_closed() {
                return Poll::Ready(Err(closed_error()));
            }
            self.shared
                .lock()
                .udp_poll_send(self.handle, cx, data, dst)
                .map_err(udp_io_error)
        })
        .await
    }

    /// Receives one datagram: its length and sender. A datagram larger than `buf` is
    /// dropped with an `InvalidData` error.
    ///
    /// # Errors
    /// `NotConnected` once the tunnel is shut down.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        std::future::poll_fn(|cx| {
            if self.shared.is_closed() {
                return Poll::Ready(Err(closed_error()));
            }
            self.shared
                .lock()
                .udp_poll_recv(self.handle, cx, buf)
                .map_err(udp_io_error)
        })
        .await
    }
}

impl Drop for UdpSocket {
    fn drop(&mut self) {
        self.shared.lock().udp_close(self.handle);
    }
}
