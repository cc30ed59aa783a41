//! Noticing network changes: an address added or removed, a link up or down, a new
//! default route (a laptop moving between networks, a VPN coming up, a container's
//! address changing). The Tailnet reacts as to a wake: reconnect the relay and the
//! coordinator, rediscover endpoints, re-handshake.
//!
//! On Linux a netlink route socket subscribed to link, address and route changes wakes a
//! check at once (debounced); elsewhere, and as a backstop, the check runs every few
//! seconds. The check compares a fingerprint of the interface addresses, so events that
//! change nothing a peer could see are ignored.

use std::net::IpAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long after a netlink event the addresses are compared (events come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the addresses are compared without events.
#[cfg(target_os = "linux")]
const POLL: Duration = Duration::from_secs(10);
#[cfg(not(target_os = "linux"))]
const POLL: Duration = Duration::from_secs(2);

/// The interface addresses, sorted: what a change is measured against.
pub fn fingerprint() -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| v.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    ips.sort();
    ips.dedup();
    ips
}

#[cfg(target_os = "linux")]
mod netlink {
    use rustix::net::netlink::SocketAddrNetlink;
    use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
    use std::os::fd::OwnedFd;
    use tokio::io::unix::AsyncFd;

    const RTMGRP_LINK: u32 = 0x1;
    const RTMGRP_IPV4_IFADDR: u32 = 0x10;
    const RTMGRP_IPV4_ROUTE: u32 = 0x40;
    const RTMGRP_IPV6_IFADDR: u32 = 0x100;
    const RTMGRP_IPV6_ROUTE: u32 = 0x400;

    /// A route netlink socket that becomes readable on every change.
    pub(super) struct Events(AsyncFd<OwnedFd>);

    impl Events {
        pub(super) fn open() -> std::io::Result<Self> {
            let fd = rustix::net::socket_with(
                AddressFamily::NETLINK,
                SocketType::RAW,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )?;
            let groups = RTMGRP_LINK
                | RTMGRP_IPV4_IFADDR
                | RTMGRP_IPV4_ROUTE
                | RTMGRP_IPV6_IFADDR
                | RTMGRP_IPV6_ROUTE;
            rustix::net::bind(&fd, &SocketAddrNetlink::new(0, groups))?;
            // Deprecated because a raw fd could be closed behind tokio's back; here the
            // AsyncFd owns the only handle (an OwnedFd), so that cannot happen, and the
            // safe alternative (`register`) is `unsafe`, which this crate denies.
            #[allow(deprecated)]
            let fd = AsyncFd::new(fd)?;
            Ok(Self(fd))
        }

        /// Waits for events and drains them (their content does not matter: the check
        /// that follows compares addresses).
        pub(super) async fn next(&self) -> std::io::Result<()> {
            let mut buf = [0u8; 8192];
            loop {
                let mut guard = self.0.readable().await?;
                let mut got = false;
                loop {
                    match rustix::net::recv(self.0.get_ref(), &mut buf[..], RecvFlags::empty()) {
                        Ok(_) => got = true,
                        Err(rustix::io::Errno::AGAIN) => break,
                        // The kernel dropped events: something changed.
                        Err(rustix::io::Errno::NOBUFS) => got = true,
                        Err(e) => return Err(e.into()),
                    }
                }
                guard.clear_ready();
                if got {
                    return Ok(());
                }
            }
        }
    }
}

/// Calls `changed` whenever the interface addresses change, until `cancel`.
pub async fn watch(cancel: CancellationToken, mut changed: impl FnMut() + Send) {
    let mut last = fingerprint();
    #[cfg(target_os = "linux")]
    let events = match netlink::Events::open() {
        Ok(e) => Some(e),
        Err(e) => {
            tracing::debug!(error = %e, "no netlink route socket; checking addresses every {POLL:?}");
            None
        }
    };
    loop {
        #[cfg(target_os = "linux")]
        let event = async {
            match &events {
                Some(e) => {
                    if e.next().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(DEBOUNCE).await;
                }
                None => std::future::pending().await,
            }
        };
        #[cfg(not(target_os = "linux"))]
        let event = std::future::pending::<()>();
        tokio::select! {
            () = cancel.cancelled() => return,
            () = event => {}
            () = tokio::time::sleep(POLL) => {}
        }
        let now = fingerprint();
        if now != last {
            tracing::info!(before = ?last, after = ?now, "network change");
            last = now;
            changed();
        }
    }
}
