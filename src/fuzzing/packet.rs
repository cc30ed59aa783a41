//! The packet path: datagrams into the WireGuard device, IP packets into the netstack.
#![allow(clippy::disallowed_methods)] // fuzz inputs need a base time; the device itself takes it as an argument

use crate::netstack::{Netstack, NetstackConfig};
use crate::proto::wg::{Device, DropReason, PathAddr, PathSrc, PeerConfig, Transmits};
use crate::wire::key::NodePrivate;
use std::time::{Duration, Instant};

fn keys() -> (NodePrivate, NodePrivate) {
    (
        NodePrivate::from_bytes([1; 32]),
        NodePrivate::from_bytes([2; 32]),
    )
}

fn ip4(src: [u8; 4], dst: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..].copy_from_slice(payload);
    p
}

/// Splits fuzz input into chunks: each chunk is prefixed by a length byte.
fn chunks(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = data;
    std::iter::from_fn(move || {
        let (&len, tail) = rest.split_first()?;
        let n = usize::from(len).min(tail.len());
        let (c, t) = tail.split_at(n);
        rest = t;
        Some(c)
    })
}

/// Arbitrary datagrams into a device that has one peer with an established session.
/// Half the inputs are mutations of real transport packets, so the fuzzer reaches past
/// the header checks into session lookup, replay and decryption.
///
/// Invariants: nothing panics; every rejected datagram increments exactly the counter it
/// names; a delivered packet fits the datagram and comes from the peer's allowed range,
/// and its datagram named the peer's slot before decryption (what the driver's fair share
/// charges it to).
pub fn device_ingress(data: &[u8]) {
    let (ka, kb) = keys();
    let now = Instant::now();
    let mut a = Device::new(ka.clone());
    let mut b = Device::new(kb.clone());
    let mut pa = PeerConfig::new(kb.public());
    pa.allowed_ips = vec!["10.0.0.2/32".parse().unwrap_or_else(|_| unreachable!())];
    pa.endpoint = Some("127.0.0.1:2".parse().unwrap_or_else(|_| unreachable!()));
    let mut pb = PeerConfig::new(ka.public());
    pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap_or_else(|_| unreachable!())];
    pb.derp_region = Some(1);
    if a.upsert_peer(pa, now).is_err() || b.upsert_peer(pb, now).is_err() {
        return;
    }
    let a_src = PathSrc::Udp("127.0.0.1:1".parse().unwrap_or_else(|_| unreachable!()));
    let mut plain = vec![0u8; crate::wire::wg::MAX_DATAGRAM + 64];
    // Handshake so b has a session.
    let mut tx = Transmits::new();
    let _ = a.encapsulate(now, &ip4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), &mut tx);
    for _ in 0..4 {
        let mut next_a = Transmits::new();
        let mut next_b = Transmits::new();
        for t in tx.items().to_vec() {
            let _ = b.decapsulate(now, a_src, tx.bytes(&t), &mut plain, &mut next_b);
        }
        for t in next_b.items().to_vec() {
            let src = PathSrc::Udp("127.0.0.1:2".parse().unwrap_or_else(|_| unreachable!()));
            let _ = a.decapsulate(now, src, next_b.bytes(&t), &mut plain, &mut next_a);
        }
        tx = next_a;
    }
    let Some((&mode, data)) = data.split_first() else {
        return;
    };
    for (i, chunk) in chunks(data).enumerate() {
        let datagram = if mode & 1 == 1 {
            // Mutate a real transport packet: XOR the chunk over it.
            let mut t = Transmits::new();
            if a.encapsulate(
                now,
                &ip4([10, 0, 0, 1], [10, 0, 0, 2], &[i as u8; 40]),
                &mut t,
            )
            .is_err()
            {
                continue;
            }
            let Some(item) = t.items().first().copied() else {
                continue;
            };
            let mut d = t.bytes(&item).to_vec();
            let len = d.len().max(1);
            for (j, x) in chunk.iter().enumerate() {
                if let Some(b) = d.get_mut(j % len) {
                    *b ^= x;
                }
            }
            d
        } else {
            chunk.to_vec()
        };
        let src = if mode & 2 == 2 {
            PathSrc::Derp {
                region: 1,
                key: ka.public(),
            }
        } else {
            a_src
        };
        let before = *b.drops();
        let slot = crate::proto::wg::fair::data_slot(&datagram);
        let mut out = Transmits::new();
        match b.decapsulate(
            now + Duration::from_millis(i as u64),
            src,
            &datagram,
            &mut plain,
            &mut out,
        ) {
            Ok(Some(n)) => {
                assert!(n <= datagram.len());
                assert_eq!(slot, Some(0), "a delivered packet's slot is its peer's");
                let peek = crate::wire::ip::IpPeek::parse(&plain[..n]);
                assert!(matches!(peek, Ok(p) if p.src == std::net::IpAddr::from([10, 0, 0, 1])));
            }
            Ok(None) => assert_eq!(&before, b.drops()),
            Err(r) => {
                for x in DropReason::ALL {
                    let expect = before[x as usize] + u64::from(x == r);
                    assert_eq!(b.drops()[x as usize], expect, "drop counted once, as {r:?}");
                }
            }
        }
        for t in out.items() {
            assert!(t.len > 0 && t.start + t.len <= out.buffer().len());
            assert!(matches!(t.path, PathAddr::Udp(_) | PathAddr::Derp(1)));
        }
    }
    b.handle_timeout(now + Duration::from_secs(1), &mut Transmits::new());
}

/// Arbitrary IP packets into a netstack with a port listener, a wildcard listener, an
/// outgoing connection and a UDP socket.
///
/// Invariants: nothing panics; the listener never holds more than its backlog; the
/// socket count stays bounded by what the input could have created.
pub fn netstack_ingress(data: &[u8]) {
    let now = Instant::now();
    let cfg = NetstackConfig {
        addresses: vec![
            [10, 0, 0, 1].into(),
            "fd00::1".parse().unwrap_or_else(|_| unreachable!()),
        ],
        tcp_rx_buffer: 4096,
        tcp_tx_buffer: 4096,
        udp_buffer: 4096,
        udp_packets: 8,
        listen_backlog: 4,
        ..Default::default()
    };
    let Ok(mut st) = Netstack::new(cfg, now, 1) else {
        return;
    };
    let _ = st.tcp_listen(80);
    let _ = st.tcp_listen_any(1000);
    let _ = st.udp_bind(53);
    let _ = st.tcp_connect(
        "10.0.0.2:443".parse().unwrap_or_else(|_| unreachable!()),
        now,
    );
    let mut out = Vec::new();
    let mut n = 0usize;
    for (i, pkt) in chunks(data).enumerate() {
        st.receive(pkt, now);
        n += 1;
        if i % 4 == 3 {
            st.poll(now + Duration::from_millis(i as u64));
            st.take_transmits(&mut out);
            for p in &out {
                assert!(p.len() <= crate::netstack::MTU);
            }
            st.recycle(&mut out);
        }
    }
    st.poll(now + Duration::from_secs(5));
    let s = st.stats();
    // One dialled socket, plus per received packet at most one new listening socket.
    assert!(s.tcp_sockets <= 1 + n);
    assert!(s.udp_sockets <= 1);
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_run() {
        super::device_ingress(&[0, 3, 1, 0, 0, 0, 40, 4]);
        super::device_ingress(&[1, 10, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7]);
        super::device_ingress(&[2, 148, 1]);
        let mut syn = vec![0u8; 41];
        syn[0] = 40;
        syn[1] = 0x45;
        syn[3] = 40;
        syn[10] = 6;
        syn[13..17].copy_from_slice(&[10, 0, 0, 2]);
        syn[17..21].copy_from_slice(&[10, 0, 0, 1]);
        syn[23] = 80;
        syn[33] = 0x50;
        syn[34] = 0x02;
        super::netstack_ingress(&syn);
        super::netstack_ingress(&[5, 0x60, 0, 0, 0, 0]);
    }
}
