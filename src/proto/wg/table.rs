//! Cryptokey routing: which peer owns a destination address (longest prefix wins).
//!
//! Prefixes are grouped by length, so a lookup is one hash probe per distinct prefix
//! length in use — a handful in practice, whatever the number of peers.

use crate::wire::addr::IpCidr;
use std::collections::HashMap;
use std::net::IpAddr;

/// Longest-prefix-match table from IP prefixes to values.
#[derive(Debug, Clone)]
pub struct AllowedIps<T> {
    v4: Family<T>,
    v6: Family<T>,
}

#[derive(Debug, Clone)]
struct Family<T> {
    /// (prefix length, masked network → value), longest prefixes first.
    by_len: Vec<(u8, HashMap<u128, T>)>,
}

impl<T> Default for Family<T> {
    fn default() -> Self {
        Self { by_len: Vec::new() }
    }
}

impl<T> Default for AllowedIps<T> {
    fn default() -> Self {
        Self {
            v4: Family::default(),
            v6: Family::default(),
        }
    }
}

fn key(addr: IpAddr, len: u8) -> u128 {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
            u128::from(u32::from(a) & mask)
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0);
            u128::from(a) & mask
        }
    }
}

impl<T: Copy + PartialEq> AllowedIps<T> {
    fn family(&mut self, addr: IpAddr) -> &mut Family<T> {
        if addr.is_ipv4() {
            &mut self.v4
        } else {
            &mut self.v6
        }
    }

    /// Maps `cidr` to `value`, replacing any previous owner of exactly that prefix (as
    /// WireGuard does: the last peer configured with a prefix owns it).
    pub fn insert(&mut self, cidr: IpCidr, value: T) -> Option<T> {
        let fam = self.family(cidr.addr);
        let pos = match fam.by_len.iter().position(|(l, _)| *l <= cidr.prefix_len) {
            Some(p) if fam.by_len[p].0 == cidr.prefix_len => p,
            Some(p) => {
                fam.by_len.insert(p, (cidr.prefix_len, HashMap::new()));
                p
            }
            None => {
                fam.by_len.push((cidr.prefix_len, HashMap::new()));
                fam.by_len.len() - 1
            }
        };
        fam.by_len[pos]
            .1
            .insert(key(cidr.addr, cidr.prefix_len), value)
    }

    /// Removes every prefix that maps to `value`.
    pub fn remove_value(&mut self, value: T) {
        for fam in [&mut self.v4, &mut self.v6] {
            for (_, m) in fam.by_len.iter_mut() {
                m.retain(|_, v| *v != value);
            }
            fam.by_len.retain(|(_, m)| !m.is_empty());
        }
    }

    /// The value owning the longest prefix containing `addr`.
    pub fn lookup(&self, addr: IpAddr) -> Option<T> {
        let fam = if addr.is_ipv4() { &self.v4 } else { &self.v6 };
        fam.by_len
            .iter()
            .find_map(|(len, m)| m.get(&key(addr, *len)).copied())
    }

    /// Number of prefixes held.
    pub fn len(&self) -> usize {
        [&self.v4, &self.v6]
            .iter()
            .flat_map(|f| f.by_len.iter())
            .map(|(_, m)| m.len())
            .sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> IpCidr {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(c("0.0.0.0/0"), 1);
        t.insert(c("10.0.0.0/8"), 2);
        t.insert(c("10.1.0.0/16"), 3);
        t.insert(c("10.1.2.3/32"), 4);
        assert_eq!(t.lookup(ip("8.8.8.8")), Some(1));
        assert_eq!(t.lookup(ip("10.9.9.9")), Some(2));
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(3));
        assert_eq!(t.lookup(ip("10.1.2.3")), Some(4));
        assert_eq!(t.lookup(ip("::1")), None);
        t.remove_value(3);
        assert_eq!(t.lookup(ip("10.1.9.9")), Some(2));
        assert_eq!(t.len(), 3);
    }

    #[test]
    fn v6_and_replacement() {
        let mut t = AllowedIps::default();
        t.insert(c("fd7a:115c:a1e0::/48"), 1);
        t.insert(c("fd7a:115c:a1e0::5/128"), 2);
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0::5")), Some(2));
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0::6")), Some(1));
        assert_eq!(t.insert(c("fd7a:115c:a1e0::5/128"), 3), Some(2));
        assert_eq!(t.lookup(ip("fd7a:115c:a1e0::5")), Some(3));
        t.insert(c("::/0"), 9);
        assert_eq!(t.lookup(ip("2001:db8::1")), Some(9));
    }
}
