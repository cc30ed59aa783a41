//! The netstack shared between the driver task and the stream handles.
//!
//! One `std::sync::Mutex` guards it: every critical section is a bounded, non-blocking
//! copy in or out of smoltcp's buffers (no await while held), so contention costs about
//! as much as the ring-buffer handoff it replaces, and data is copied once instead of
//! twice. The driver never holds the lock while encrypting or doing IO.

use crate::netstack::{Netstack, TcpError, UdpError};
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};

/// State shared by the driver and every socket handle of one tunnel.
#[derive(Debug)]
pub struct Shared {
    stack: Mutex<Netstack>,
    closed: AtomicBool,
}

impl Shared {
    pub(crate) fn new(stack: Netstack) -> Self {
        Self {
            stack: Mutex::new(stack),
            closed: AtomicBool::new(false),
        }
    }

    /// Locks the netstack. A poisoned lock (a panic elsewhere while holding it) still
    /// yields the stack: its invariants are smoltcp's, which a panic in our code between
    /// calls does not break.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Netstack> {
        self.stack.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the tunnel gone and fails every waiting operation.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.lock().close_all();
    }

    pub(crate) fn check_open(&self) -> io::Result<()> {
        if self.is_closed() {
            Err(closed_error())
        } else {
            Ok(())
        }
    }
}

pub(crate) fn closed_error() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "tunnel is shut down")
}

pub(crate) fn tcp_io_error(e: TcpError) -> io::Error {
    let kind = match e {
        TcpError::Refused => io::ErrorKind::ConnectionRefused,
        TcpError::Reset => io::ErrorKind::ConnectionReset,
        TcpError::NotConnected => io::ErrorKind::NotConnected,
        TcpError::NoPorts => io::ErrorKind::AddrNotAvailable,
        TcpError::Unaddressable => io::ErrorKind::HostUnreachable,
        TcpError::AddrInUse => io::ErrorKind::AddrInUse,
        TcpError::BrokenPipe => io::ErrorKind::BrokenPipe,
    };
    io::Error::new(kind, e)
}

pub(crate) fn udp_io_error(e: UdpError) -> io::Error {
    let kind = match e {
        UdpError::AddrInUse => io::ErrorKind::AddrInUse,
        UdpError::NoPorts => io::ErrorKind::AddrNotAvailable,
        UdpError::TooLarge => io::ErrorKind::InvalidInput,
        UdpError::Unaddressable => io::ErrorKind::HostUnreachable,
        UdpError::Truncated => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, e)
}
