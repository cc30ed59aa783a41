//! Which UDP endpoints a node advertises for direct paths, and where it asks STUN.
//!
//! Candidates, in order: the address of the route to the coordinator (which is loopback
//! when the coordinator is: peers on this host then reach us there), every other
//! interface address of the socket's family that a peer elsewhere could use (no loopback,
//! link-local, or tailnet addresses), then the reflexive addresses STUN saw. A configured
//! list (`--advertise`) replaces all of it; `relay_only` advertises nothing.

use super::Inner;
use crate::proto::discovery::StunServer;
use crate::wire::derpmap::DerpMap;
use std::net::{IpAddr, SocketAddr};

/// The most endpoints a node advertises (the coordinator keeps at most 16).
const MAX_ENDPOINTS: usize = 16;

/// UDP endpoints to advertise for direct paths: the configured ones, or the local
/// addresses and what STUN saw.
pub(super) fn advertise(inner: &Inner) -> Vec<SocketAddr> {
    if inner.cfg.relay_only {
        return Vec::new();
    }
    if let Some(a) = &inner.cfg.advertise {
        return a.clone();
    }
    let local = inner.tunnel.local_udp_addr();
    let mut eps = local_endpoints(
        local,
        route_to(&inner.cfg.coordinator_url),
        &interface_ips(),
    );
    for r in inner.state().reflexive.clone() {
        if !eps.contains(&r) {
            eps.push(r);
        }
    }
    eps.truncate(MAX_ENDPOINTS);
    eps
}

/// The local source address of the route to the coordinator.
fn route_to(coordinator_url: &str) -> Option<IpAddr> {
    crate::runtime::netmon::route_source(coordinator_addr(coordinator_url)?)
}

/// The coordinator's address when its URL names one (or `localhost`); `None` for a host
/// name, which is not resolved here.
pub(super) fn coordinator_addr(coordinator_url: &str) -> Option<SocketAddr> {
    let host = coordinator_url
        .split_once("://")
        .map(|(_, rest)| rest.split('/').next().unwrap_or(""))
        .unwrap_or("");
    host.parse::<SocketAddr>().ok().or_else(|| {
        host.rsplit_once(':').and_then(|(h, p)| {
            let h = if h == "localhost" { "127.0.0.1" } else { h };
            format!("{h}:{p}").parse().ok()
        })
    })
}

/// The machine's interface addresses.
fn interface_ips() -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(ifs) => ifs.into_iter().map(|i| i.ip()).collect(),
        Err(e) => {
            tracing::debug!(error = %e, "listing interface addresses");
            Vec::new()
        }
    }
}

/// Whether a peer on another host could reach us at `ip`.
fn usable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast())
        }
        IpAddr::V6(v6) => {
            let tailnet = crate::wire::addr::TAILNET_PREFIX;
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local()
                || v6.octets()[..6] == tailnet[..]
                || v6.to_ipv4_mapped().is_some())
        }
    }
}

/// The endpoints of a socket bound at `local`: that address when bound to one, else the
/// route's source address (kept even when loopback) and the usable interface addresses
/// of the socket's family, each with the socket's port.
fn local_endpoints(local: SocketAddr, route: Option<IpAddr>, ifs: &[IpAddr]) -> Vec<SocketAddr> {
    if !local.ip().is_unspecified() {
        return vec![local];
    }
    // A socket bound to 0.0.0.0 only speaks IPv4; one bound to [::] takes both.
    let family_ok = |ip: &IpAddr| local.is_ipv6() || ip.is_ipv4();
    let mut ips: Vec<IpAddr> = route.into_iter().filter(family_ok).collect();
    for ip in ifs
        .iter()
        .copied()
        .filter(family_ok)
        .filter(|ip| usable(*ip))
    {
        if !ips.contains(&ip) {
            ips.push(ip);
        }
    }
    ips.into_iter()
        .map(|ip| SocketAddr::new(ip, local.port()))
        .collect()
}

/// The STUN servers of a DERP map, home region first. Host names are resolved here
/// (literal addresses in the map are used as they are).
pub async fn stun_servers(map: &DerpMap, home: Option<u16>) -> Vec<StunServer> {
    let mut regions: Vec<u16> = map.regions.keys().copied().collect();
    regions.sort_by_key(|r| (Some(*r) != home, *r));
    let mut out = Vec::new();
    for region in regions {
        let Some(r) = map.regions.get(&region) else {
            continue;
        };
        let Some(node) = r.nodes.iter().find(|n| n.stun_port >= 0) else {
            continue;
        };
        let port = if node.stun_port == 0 {
            crate::wire::stun::DEFAULT_PORT
        } else {
            node.stun_port as u16
        };
        let literal = [&node.ipv4, &node.ipv6, &node.host_name]
            .into_iter()
            .find_map(|h| h.parse::<IpAddr>().ok());
        let ip = match literal {
            Some(ip) => Some(ip),
            None if node.host_name == "localhost" => Some(IpAddr::from([127, 0, 0, 1])),
            None if node.host_name.is_empty() => None,
            None => tokio::net::lookup_host((node.host_name.as_str(), port))
                .await
                .ok()
                .and_then(|mut a| a.find(|a| a.is_ipv4()))
                .map(|a| a.ip()),
        };
        if let Some(ip) = ip {
            out.push(StunServer {
                region,
                addr: SocketAddr::new(ip, port),
            });
        }
    }
    out
}

/// Points endpoint discovery at the map's STUN servers.
pub(super) async fn discover_with(inner: &Inner, map: &DerpMap, home: Option<u16>) {
    if inner.cfg.relay_only {
        return;
    }
    let servers = stun_servers(map, home).await;
    tracing::debug!(?servers, "endpoint discovery");
    let _ = inner.tunnel.set_stun_servers(servers).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn bound_address_is_the_only_endpoint() {
        let local: SocketAddr = "10.0.0.5:41641".parse().expect("addr");
        assert_eq!(
            local_endpoints(local, Some(ip("10.0.0.9")), &[ip("192.168.1.2")]),
            vec![local]
        );
    }

    #[test]
    fn wildcard_socket_lists_route_then_usable_interfaces_of_its_family() {
        let ifs = [
            ip("127.0.0.1"),
            ip("192.168.1.20"),
            ip("169.254.3.4"),
            ip("10.1.2.3"),
            ip("::1"),
            ip("fe80::1"),
            ip("2001:db8::7"),
            ip("fd7a:115c:a1e0::1"),
        ];
        let v4: SocketAddr = "0.0.0.0:5000".parse().expect("addr");
        assert_eq!(
            local_endpoints(v4, Some(ip("10.1.2.3")), &ifs),
            ["10.1.2.3:5000", "192.168.1.20:5000"].map(|a| a.parse::<SocketAddr>().expect("addr"))
        );
        // The route's loopback source stays: the coordinator is on this host.
        assert_eq!(
            local_endpoints(v4, Some(ip("127.0.0.1")), &ifs)[0],
            "127.0.0.1:5000".parse::<SocketAddr>().expect("addr")
        );
        let v6: SocketAddr = "[::]:5000".parse().expect("addr");
        let eps = local_endpoints(v6, None, &ifs);
        assert!(eps.contains(&"[2001:db8::7]:5000".parse().expect("addr")));
        assert!(eps.contains(&"192.168.1.20:5000".parse().expect("addr")));
        assert_eq!(eps.len(), 3, "{eps:?}");
    }
}
