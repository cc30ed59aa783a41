//! Node identity and tailnet addressing.
//!
//! A node's tailnet address is the /128 made of the 6-byte prefix `fd7a:115c:a1e0::/48`
//! followed by bytes 6..16 of its UUID. A node may only claim addresses derived from its
//! own id; [`NodeId::owns`] is that rule.

use std::fmt;
use std::net::Ipv6Addr;
use std::str::FromStr;
use uuid::Uuid;

/// The tailnet's /48 prefix.
pub const TAILNET_PREFIX: [u8; 6] = [0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0];

/// The agent's HTTP API port on the tailnet.
pub const AGENT_API_PORT: u16 = 4;

/// Ports below this are reserved by the agent and never forwarded to its host.
pub const AGENT_MIN_FORWARD_PORT: u16 = 9;

/// A node's identity: agents have the id the control plane gave them, clients a random one.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub Uuid);

impl NodeId {
    /// A random (v4) id, for clients.
    pub fn random() -> Self {
        Self(Uuid::new_v4())
    }

    /// The node's tailnet address: the prefix followed by bytes 6..16 of the id.
    pub fn tailnet_addr(&self) -> Ipv6Addr {
        let mut b = *self.0.as_bytes();
        b[..6].copy_from_slice(&TAILNET_PREFIX);
        Ipv6Addr::from(b)
    }

    /// The node's address as a /128 CIDR string, as nodes advertise it.
    pub fn tailnet_prefix(&self) -> String {
        format!("{}/128", self.tailnet_addr())
    }

    /// Whether `cidr` (text such as `fd7a:...:1/128`) is an address this node may claim.
    pub fn owns(&self, cidr: &str) -> bool {
        cidr == self.tailnet_prefix()
            || cidr.parse::<IpCidr>().is_ok_and(|c| {
                c.prefix_len == 128 && c.addr == std::net::IpAddr::V6(self.tailnet_addr())
            })
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", self.0)
    }
}

impl FromStr for NodeId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// An IP prefix such as `10.0.0.0/24` or `fd7a:115c:a1e0::/48`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct IpCidr {
    /// The network address (host bits are kept as written).
    pub addr: std::net::IpAddr,
    /// Prefix length in bits.
    pub prefix_len: u8,
}

/// Why a CIDR string did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: expected ADDRESS or ADDRESS/PREFIX")]
pub struct CidrError(pub String);

impl IpCidr {
    /// A prefix from an address and length; `None` if the length exceeds the family's width.
    pub fn new(addr: std::net::IpAddr, prefix_len: u8) -> Option<Self> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (prefix_len <= max).then_some(Self { addr, prefix_len })
    }

    /// A host route: /32 or /128.
    pub fn host(addr: std::net::IpAddr) -> Self {
        Self {
            addr,
            prefix_len: if addr.is_ipv4() { 32 } else { 128 },
        }
    }

    /// Whether `ip` falls inside this prefix.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::*;
        match (self.addr, ip) {
            (V4(n), V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (V6(n), V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix_len))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for IpCidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError(s.to_string());
        let (a, p) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr: std::net::IpAddr = a.parse().map_err(|_| err())?;
        let len = match p {
            Some(p) => p.parse::<u8>().map_err(|_| err())?,
            None => {
                if addr.is_ipv4() {
                    32
                } else {
                    128
                }
            }
        };
        Self::new(addr, len).ok_or_else(err)
    }
}

impl fmt::Display for IpCidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_from_uuid() {
        let id: NodeId = "01234567-89ab-cdef-0123-456789abcdef".parse().unwrap();
        assert_eq!(
            id.tailnet_addr().to_string(),
            "fd7a:115c:a1e0:cdef:123:4567:89ab:cdef"
        );
        assert!(id.owns("fd7a:115c:a1e0:cdef:123:4567:89ab:cdef/128"));
        assert!(id.owns("fd7a:115c:a1e0:cdef:0123:4567:89ab:cdef/128"));
        assert!(!id.owns("fd7a:115c:a1e0:cdef:123:4567:89ab:cdef/64"));
        assert!(!id.owns(&NodeId::random().tailnet_prefix()));
    }

    #[test]
    fn cidr_contains() {
        let c: IpCidr = "10.100.0.0/24".parse().unwrap();
        assert!(c.contains("10.100.0.7".parse().unwrap()));
        assert!(!c.contains("10.100.1.7".parse().unwrap()));
        let all: IpCidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("1.2.3.4".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6: IpCidr = "fd7a:115c:a1e0::/48".parse().unwrap();
        assert!(v6.contains(NodeId::random().tailnet_addr().into()));
        assert!("10.0.0.0/33".parse::<IpCidr>().is_err());
        assert!("nonsense".parse::<IpCidr>().is_err());
    }
}
