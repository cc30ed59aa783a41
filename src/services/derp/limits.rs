//! Connection slots: a cap on concurrent connections per source address and in total,
//! so connections that log in but never do anything cannot use up the process's file
//! descriptors. A slot is taken before the upgrade and held until the connection task
//! ends, login phase included.

use crate::proto::derp::server::DropReason;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Open connections, in total and by source address.
#[derive(Debug)]
pub(super) struct ConnSlots {
    inner: Mutex<Counts>,
    per_ip: usize,
    total: usize,
    limit_loopback: bool,
}

#[derive(Debug, Default)]
struct Counts {
    total: usize,
    by_ip: HashMap<IpAddr, usize>,
}

/// One taken slot; dropping it gives the slot back.
#[derive(Debug)]
pub(super) struct ConnSlot {
    slots: Arc<ConnSlots>,
    ip: Option<IpAddr>,
}

impl ConnSlots {
    pub(super) fn new(per_ip: usize, total: usize, limit_loopback: bool) -> Self {
        Self {
            inner: Mutex::new(Counts::default()),
            per_ip,
            total,
            limit_loopback,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Open connections.
    pub(super) fn open(&self) -> usize {
        self.lock().total
    }

    /// Takes a slot for a connection from `ip` (unknown when the listener gave no
    /// address; such connections count only against the total).
    ///
    /// # Errors
    /// The reason to count when a cap is reached.
    pub(super) fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<ConnSlot, DropReason> {
        let mut c = self.lock();
        if c.total >= self.total {
            return Err(DropReason::ConnLimit);
        }
        let ip = ip.map(canonical);
        if let Some(ip) = ip {
            let limited = self.limit_loopback || !ip.is_loopback();
            let n = c.by_ip.entry(ip).or_insert(0);
            if limited && *n >= self.per_ip {
                if *n == 0 {
                    c.by_ip.remove(&ip);
                }
                return Err(DropReason::PerIpLimit);
            }
            *n += 1;
        }
        c.total += 1;
        Ok(ConnSlot {
            slots: Arc::clone(self),
            ip,
        })
    }
}

/// IPv4-mapped IPv6 addresses count as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut c = self.slots.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = c.by_ip.get_mut(&ip)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.by_ip.remove(&ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_address_and_in_total() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let slots = Arc::new(ConnSlots::new(2, 4, false));
        let a1 = slots.acquire(Some(a)).unwrap();
        let _a2 = slots.acquire(Some(a)).unwrap();
        assert_eq!(slots.acquire(Some(a)).unwrap_err(), DropReason::PerIpLimit);
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        assert_eq!(
            slots.acquire(Some(mapped)).unwrap_err(),
            DropReason::PerIpLimit
        );
        // Loopback is exempt from the per-address cap unless asked.
        let _l = [
            slots.acquire(Some(lo)).unwrap(),
            slots.acquire(Some(lo)).unwrap(),
        ];
        assert_eq!(slots.acquire(Some(b)).unwrap_err(), DropReason::ConnLimit);
        drop(a1);
        assert_eq!(slots.open(), 3);
        let _a3 = slots.acquire(Some(a)).unwrap();
        let strict = Arc::new(ConnSlots::new(1, 10, true));
        let _s = strict.acquire(Some(lo)).unwrap();
        assert_eq!(
            strict.acquire(Some(lo)).unwrap_err(),
            DropReason::PerIpLimit
        );
    }
}
