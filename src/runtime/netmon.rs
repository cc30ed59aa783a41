//! Noticing network changes: an address added or removed, a link up or down, a new
//! default route (a laptop moving between networks, a VPN coming up, a container's
//! address changing).
//!
//! On Linux a netlink route socket subscribed to link, address and route changes wakes a
//! check at once (debounced); elsewhere, and as a backstop, the check runs every few
//! seconds. The check takes a [`Snapshot`]: the interface addresses a peer could see, and
//! the source address of the routes that carry our connections (towards the
//! coordinator, and the default routes). [`classify`] then tells two kinds apart:
//!
//! - [`NetChange::Major`]: a route that carries our connections now leaves from another
//!   address (or none). Connections from the old address are dead: the Tailnet reacts as
//!   to a wake (reconnect relay and coordinator, rediscover, re-handshake).
//! - [`NetChange::Minor`]: addresses came or went elsewhere (a container bridge, a test
//!   namespace's veth, a second network). Existing connections are unaffected, so only
//!   the advertised endpoints are refreshed. Treating these as wakes made every process
//!   on a busy host drop its coordinator stream whenever any interface changed, and the
//!   server briefly reported its agents offline.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long after a netlink event the addresses are compared (events come in bursts).
const DEBOUNCE: Duration = Duration::from_millis(200);
/// How often the addresses are compared without events.
#[cfg(target_os = "linux")]
const POLL: Duration = Duration::from_secs(10);
#[cfg(not(target_os = "linux"))]
const POLL: Duration = Duration::from_secs(2);

/// Targets whose route stands for "the default route". Any global unicast address would
/// do: connecting a UDP socket sends nothing, it only consults the routing table.
const DEFAULT_ROUTE_TARGETS: [SocketAddr; 2] = [
    SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::new(1, 1, 1, 1)), 53),
    SocketAddr::new(
        IpAddr::V6(std::net::Ipv6Addr::new(
            0x2606, 0x4700, 0x4700, 0, 0, 0, 0, 0x1111,
        )),
        53,
    ),
];

/// What a network check saw.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Interface addresses, sorted, without loopback and link-local ones (no peer
    /// elsewhere can use them, and every veth brings a link-local address).
    pub addrs: Vec<IpAddr>,
    /// For each route target, in order, the source address the kernel would use.
    pub routes: Vec<Option<IpAddr>>,
}

/// How much a change matters to open connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetChange {
    /// Addresses changed; the routes our connections use did not.
    Minor,
    /// A route our connections use changed its source address.
    Major,
}

/// What changed between two snapshots, if anything that matters.
#[must_use]
pub fn classify(before: &Snapshot, after: &Snapshot) -> Option<NetChange> {
    if before == after {
        return None;
    }
    if before.routes != after.routes {
        return Some(NetChange::Major);
    }
    // With no route to anything in either snapshot there is nothing to tell a used
    // address from an unused one: an address that went may have carried a connection.
    let no_routes = before
        .routes
        .iter()
        .chain(&after.routes)
        .all(Option::is_none);
    let removed = before.addrs.iter().any(|a| !after.addrs.contains(a));
    if no_routes && removed {
        return Some(NetChange::Major);
    }
    Some(NetChange::Minor)
}

/// Whether an interface address is one a peer could see.
fn visible(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified()),
        IpAddr::V6(v6) => !(v6.is_loopback() || v6.is_unicast_link_local() || v6.is_unspecified()),
    }
}

/// The source address of the route to `target`, if there is one.
#[must_use]
pub fn route_source(target: SocketAddr) -> Option<IpAddr> {
    let s = std::net::UdpSocket::bind(if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .ok()?;
    s.connect(target).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

/// Takes a snapshot: the visible interface addresses and the source of the route to each
/// of `targets`, then of the default routes.
#[must_use]
pub fn snapshot(targets: &[SocketAddr]) -> Snapshot {
    let mut addrs: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|v| {
            v.into_iter()
                .map(|i| i.ip())
                .filter(|ip| visible(*ip))
                .collect()
        })
        .unwrap_or_default();
    addrs.sort();
    addrs.dedup();
    let routes = targets
        .iter()
        .chain(&DEFAULT_ROUTE_TARGETS)
        .map(|t| route_source(*t))
        .collect();
    Snapshot { addrs, routes }
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

/// Calls `changed` whenever the network changes (see [`classify`]), until `cancel`.
/// `targets` are the addresses of servers we hold connections to.
pub async fn watch(
    cancel: CancellationToken,
    targets: Vec<SocketAddr>,
    mut changed: impl FnMut(NetChange) + Send,
) {
    let mut last = snapshot(&targets);
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
        let now = snapshot(&targets);
        if let Some(kind) = classify(&last, &now) {
            match kind {
                NetChange::Major => {
                    tracing::info!(before = ?last, after = ?now, "network change: routes moved");
                }
                NetChange::Minor => {
                    tracing::debug!(before = ?last.addrs, after = ?now.addrs, "addresses changed");
                }
            }
            last = now;
            changed(kind);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn snap(addrs: &[&str], routes: &[Option<&str>]) -> Snapshot {
        Snapshot {
            addrs: addrs.iter().map(|a| ip(a)).collect(),
            routes: routes.iter().map(|r| r.map(ip)).collect(),
        }
    }

    #[test]
    fn nothing_changed() {
        let a = snap(&["10.0.0.2"], &[Some("10.0.0.2")]);
        assert_eq!(classify(&a, &a.clone()), None);
    }

    #[test]
    fn an_unrelated_address_coming_or_going_is_minor() {
        let before = snap(&["10.0.0.2"], &[Some("10.0.0.2"), None]);
        let added = snap(&["10.0.0.2", "172.17.0.1"], &[Some("10.0.0.2"), None]);
        assert_eq!(classify(&before, &added), Some(NetChange::Minor));
        assert_eq!(classify(&added, &before), Some(NetChange::Minor));
    }

    #[test]
    fn a_route_leaving_from_another_address_is_major() {
        let before = snap(&["10.0.0.2"], &[Some("10.0.0.2")]);
        let moved = snap(&["10.0.0.102"], &[Some("10.0.0.102")]);
        assert_eq!(classify(&before, &moved), Some(NetChange::Major));
        let gone = snap(&[], &[None]);
        assert_eq!(classify(&before, &gone), Some(NetChange::Major));
        let back = snap(&["10.0.0.2"], &[Some("10.0.0.2")]);
        assert_eq!(classify(&gone, &back), Some(NetChange::Major));
    }

    #[test]
    fn without_routes_a_removed_address_is_major_and_an_added_one_minor() {
        let before = snap(&["10.0.0.2", "10.0.1.2"], &[None, None]);
        let removed = snap(&["10.0.0.2"], &[None, None]);
        assert_eq!(classify(&before, &removed), Some(NetChange::Major));
        assert_eq!(classify(&removed, &before), Some(NetChange::Minor));
    }

    #[test]
    fn snapshots_leave_out_loopback_and_link_local() {
        for a in ["127.0.0.1", "::1", "169.254.1.1", "fe80::1", "0.0.0.0"] {
            assert!(!visible(ip(a)), "{a}");
        }
        for a in ["10.0.0.1", "192.0.2.2", "fd00::2", "2001:db8::1"] {
            assert!(visible(ip(a)), "{a}");
        }
        let s = snapshot(&["127.0.0.1:9".parse().unwrap()]);
        assert!(s.addrs.iter().all(|a| visible(*a)));
        assert_eq!(s.routes.len(), 1 + DEFAULT_ROUTE_TARGETS.len());
        assert_eq!(s.routes[0], Some(ip("127.0.0.1")));
    }
}
