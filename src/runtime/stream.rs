//! `TcpStream` and `TcpListener` over the tunnel, implementing tokio's IO traits so
//! hyper, codecs and `tokio::io::copy` work on them unchanged.

use super::clock;
use super::stack::{Shared, closed_error, tcp_io_error};
use crate::netstack::{ListenerId, TcpError};
use smoltcp::iface::SocketHandle;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A TCP connection through the tunnel. Dropping it closes the connection (gracefully
/// if everything was read, with a reset otherwise) and frees its socket.
#[derive(Debug)]
pub struct TcpStream {
    shared: Arc<Shared>,
    handle: SocketHandle,
    local: SocketAddr,
    peer: SocketAddr,
}

impl TcpStream {
    /// Connects to `addr` through the tunnel. Wrap it in a timeout: a peer that never
    /// answers keeps retrying the SYN. Cancelling the future frees the socket.
    ///
    /// # Errors
    /// `ConnectionRefused`, `HostUnreachable` (no local address of that family),
    /// `AddrNotAvailable` (no free port), `NotConnected` (tunnel shut down).
    pub(crate) async fn connect(shared: Arc<Shared>, addr: SocketAddr) -> io::Result<Self> {
        shared.check_open()?;
        let handle = shared
            .lock()
            .tcp_connect(addr, clock::now())
            .map_err(tcp_io_error)?;
        // From here on, Drop releases the socket, also when this future is cancelled.
        let mut stream = Self {
            shared,
            handle,
            local: addr,
            peer: addr,
        };
        std::future::poll_fn(|cx| {
            if stream.shared.is_closed() {
                return Poll::Ready(Err(closed_error()));
            }
            stream
                .shared
                .lock()
                .tcp_poll_connect(handle, cx)
                .map_err(tcp_io_error)
        })
        .await?;
        if let Some((l, p)) = stream.shared.lock().tcp_addrs(handle) {
            stream.local = l;
            stream.peer = p;
        }
        Ok(stream)
    }

    /// Our address in the tunnel.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }

    /// Waits until the peer has acknowledged everything written so far.
    ///
    /// # Errors
    /// `ConnectionReset` if the connection died first.
    pub async fn drained(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| {
            self.shared
                .lock()
                .tcp_poll_drained(self.handle, cx)
                .map_err(tcp_io_error)
        })
        .await
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let dst = buf.initialize_unfilled();
        match self.shared.lock().tcp_poll_read(self.handle, cx, dst) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(tcp_io_error(e))),
            Poll::Pending if self.shared.is_closed() => Poll::Ready(Err(closed_error())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.shared.lock().tcp_poll_write(self.handle, cx, data) {
            Poll::Ready(r) => Poll::Ready(r.map_err(tcp_io_error)),
            Poll::Pending if self.shared.is_closed() => Poll::Ready(Err(closed_error())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written data is already in the stack's send buffer, as with a kernel socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.shared.lock().tcp_shutdown(self.handle);
        Poll::Ready(Ok(()))
    }
}

impl Drop for TcpStream {
    fn drop(&mut self) {
        self.shared.lock().tcp_release(self.handle, clock::now());
    }
}

/// Accepts TCP connections made to a port of ours through the tunnel.
#[derive(Debug)]
pub struct TcpListener {
    shared: Arc<Shared>,
    id: ListenerId,
    port: Option<u16>,
}

impl TcpListener {
    pub(crate) fn bind(shared: Arc<Shared>, port: u16) -> io::Result<Self> {
        shared.check_open()?;
        let id = shared.lock().tcp_listen(port).map_err(tcp_io_error)?;
        Ok(Self {
            shared,
            id,
            port: Some(port),
        })
    }

    pub(crate) fn bind_any(shared: Arc<Shared>, min_port: u16) -> io::Result<Self> {
        shared.check_open()?;
        let id = shared
            .lock()
            .tcp_listen_any(min_port)
            .map_err(tcp_io_error)?;
        Ok(Self {
            shared,
            id,
            port: None,
        })
    }

    /// The port listened on (`None` for a wildcard listener).
    pub fn port(&self) -> Option<u16> {
        self.port
    }

    /// The next established connection and its peer's address.
    ///
    /// # Errors
    /// `NotConnected` once the tunnel is shut down.
    pub async fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        std::future::poll_fn(|cx| self.poll_accept(cx)).await
    }

    /// Polls for the next connection.
    pub fn poll_accept(&self, cx: &mut Context<'_>) -> Poll<io::Result<(TcpStream, SocketAddr)>> {
        if self.shared.is_closed() {
            return Poll::Ready(Err(closed_error()));
        }
        match self.shared.lock().tcp_poll_accept(self.id, cx) {
            Poll::Ready(Ok((handle, local, peer))) => Poll::Ready(Ok((
                TcpStream {
                    shared: self.shared.clone(),
                    handle,
                    local,
                    peer,
                },
                peer,
            ))),
            Poll::Ready(Err(TcpError::NotConnected)) => Poll::Ready(Err(closed_error())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(tcp_io_error(e))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for TcpListener {
    fn drop(&mut self) {
        self.shared.lock().tcp_unlisten(self.id, clock::now());
    }
}
