//! Two netstacks wired back to back in memory (no WireGuard), driven by hand.
#![allow(clippy::disallowed_methods)]

use super::*;
use std::net::SocketAddr;
use std::task::{Context, Poll};

struct Wire {
    a: Netstack,
    b: Netstack,
    now: Instant,
    /// Drop every packet from a to b while set.
    cut: bool,
}

fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

fn stack(addr: &str, cfg: impl FnOnce(&mut NetstackConfig)) -> Netstack {
    let mut c = NetstackConfig {
        addresses: vec![addr.parse().unwrap()],
        ..Default::default()
    };
    cfg(&mut c);
    Netstack::new(c, Instant::now(), 7).unwrap()
}

impl Wire {
    fn new() -> Self {
        Self::with(|_| {})
    }
    fn with(cfg: impl Fn(&mut NetstackConfig)) -> Self {
        Self {
            a: stack("10.0.0.1", &cfg),
            b: stack("10.0.0.2", &cfg),
            now: Instant::now(),
            cut: false,
        }
    }
    /// A connection from a to b's port 80: (a's socket, b's accepted socket).
    fn established(&mut self) -> (SocketHandle, SocketHandle) {
        self.established_on(80)
    }
    /// A connection from a to b's `port`.
    fn established_on(&mut self, port: u16) -> (SocketHandle, SocketHandle) {
        let lid = self.b.tcp_listen(port).unwrap();
        let to = SocketAddr::from(([10, 0, 0, 2], port));
        let c = self.a.tcp_connect(to, self.now).unwrap();
        self.run();
        let Poll::Ready(Ok((s, _, _))) = self.b.tcp_poll_accept(lid, &mut cx()) else {
            panic!("not accepted")
        };
        (c, s)
    }
    /// Polls both sides and moves packets until quiet.
    fn run(&mut self) {
        let mut out = Vec::new();
        for _ in 0..10_000 {
            self.a.poll(self.now);
            self.b.poll(self.now);
            let mut moved = false;
            self.a.take_transmits(&mut out);
            for p in &out {
                moved = true;
                if !self.cut {
                    self.b.receive(p, self.now);
                }
            }
            self.a.recycle(&mut out);
            self.b.take_transmits(&mut out);
            for p in &out {
                moved = true;
                self.a.receive(p, self.now);
            }
            self.b.recycle(&mut out);
            if !moved {
                return;
            }
        }
        panic!("no quiescence");
    }
}

#[test]
fn connect_accept_transfer_and_close() {
    let mut w = Wire::new();
    let lid = w.b.tcp_listen(80).unwrap();
    let c =
        w.a.tcp_connect("10.0.0.2:80".parse().unwrap(), w.now)
            .unwrap();
    w.run();
    assert_eq!(w.a.tcp_poll_connect(c, &mut cx()), Poll::Ready(Ok(())));
    let Poll::Ready(Ok((s, local, remote))) = w.b.tcp_poll_accept(lid, &mut cx()) else {
        panic!("no accept")
    };
    assert_eq!(local, "10.0.0.2:80".parse().unwrap());
    assert_eq!(remote.ip(), "10.0.0.1".parse::<IpAddr>().unwrap());

    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    while got.len() < data.len() {
        if let Poll::Ready(Ok(n)) = w.a.tcp_poll_write(c, &mut cx(), &data[sent..]) {
            sent += n;
        }
        w.run();
        while let Poll::Ready(Ok(n)) = w.b.tcp_poll_read(s, &mut cx(), &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(got, data);
    // FIN: the reader sees end of stream.
    w.a.tcp_shutdown(c);
    w.run();
    assert_eq!(
        w.b.tcp_poll_read(s, &mut cx(), &mut buf),
        Poll::Ready(Ok(0))
    );
    // The other way still works (half close).
    assert_eq!(w.b.tcp_poll_write(s, &mut cx(), b"bye"), Poll::Ready(Ok(3)));
    w.run();
    assert_eq!(
        w.a.tcp_poll_read(c, &mut cx(), &mut buf),
        Poll::Ready(Ok(3))
    );
    w.b.tcp_release(s, w.now);
    w.a.tcp_release(c, w.now);
    w.run();
    assert_eq!(w.a.stats().tcp_sockets, 0, "dialled socket freed");
    assert_eq!(w.b.stats().tcp_sockets, 0, "accepted socket freed");
    w.b.tcp_unlisten(lid, w.now);
    w.run();
    assert_eq!(w.b.stats().tcp_sockets, 0);
}

#[test]
fn closed_port_refuses() {
    let mut w = Wire::new();
    let c =
        w.a.tcp_connect("10.0.0.2:81".parse().unwrap(), w.now)
            .unwrap();
    w.run();
    assert_eq!(
        w.a.tcp_poll_connect(c, &mut cx()),
        Poll::Ready(Err(TcpError::Refused))
    );
}

#[test]
fn slow_reader_applies_backpressure() {
    let mut w = Wire::with(|c| {
        c.tcp_rx_buffer = 64 << 10;
        c.tcp_tx_buffer = 64 << 10;
    });
    let lid = w.b.tcp_listen(80).unwrap();
    let c =
        w.a.tcp_connect("10.0.0.2:80".parse().unwrap(), w.now)
            .unwrap();
    w.run();
    let Poll::Ready(Ok((_s, _, _))) = w.b.tcp_poll_accept(lid, &mut cx()) else {
        panic!()
    };
    let chunk = vec![7u8; 16 << 10];
    let mut accepted = 0;
    for _ in 0..100 {
        match w.a.tcp_poll_write(c, &mut cx(), &chunk) {
            Poll::Ready(Ok(n)) => accepted += n,
            Poll::Pending => break,
            Poll::Ready(Err(e)) => panic!("{e}"),
        }
        w.run();
    }
    // The receiver never reads: the sender can buffer its window plus its own buffer, no more.
    assert!(accepted <= 128 << 10, "accepted {accepted}");
    assert!(w.a.tcp_poll_write(c, &mut cx(), &chunk).is_pending());
}

#[test]
fn many_simultaneous_syns_are_all_accepted() {
    let mut w = Wire::with(|c| {
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    let lid = w.b.tcp_listen(80).unwrap();
    let conns: Vec<_> = (0..200)
        .map(|_| {
            w.a.tcp_connect("10.0.0.2:80".parse().unwrap(), w.now)
                .unwrap()
        })
        .collect();
    w.run();
    for c in &conns {
        assert_eq!(w.a.tcp_poll_connect(*c, &mut cx()), Poll::Ready(Ok(())));
    }
    let mut n = 0;
    while let Poll::Ready(Ok(_)) = w.b.tcp_poll_accept(lid, &mut cx()) {
        n += 1;
    }
    assert_eq!(n, 200);
}

#[test]
fn syns_left_queued_when_smoltcp_stops_short_keep_their_sockets() {
    // SYN-ACKs left untaken fill b's transmit queue, so smoltcp takes none of the next
    // six SYNs and they stay queued past the poll. Their idle listening sockets must
    // survive the listener upkeep, or smoltcp later answers them with resets. (At most
    // twelve SYNs a round: the receive queue's fair share refuses more from one source.)
    let mut w = Wire::with(|c| c.queue_packets = 8);
    let lid = w.b.tcp_listen(80).unwrap();
    let to: SocketAddr = "10.0.0.2:80".parse().unwrap();
    let (mut conns, mut out) = (Vec::new(), Vec::new());
    let full = w.b.dev.tx_limit;
    let mut rounds = vec![12; full / 12];
    rounds.push(full % 12);
    rounds.push(6);
    for batch in rounds {
        for _ in 0..batch {
            conns.push(w.a.tcp_connect(to, w.now).unwrap());
        }
        w.a.poll(w.now);
        w.a.take_transmits(&mut out);
        assert_eq!(out.len(), batch);
        for p in &out {
            assert!(w.b.receive(p, w.now));
        }
        w.a.recycle(&mut out);
        w.b.poll(w.now);
    }
    assert_eq!(w.b.dev.rx.len(), 6, "the SYNs did not stay queued");
    // Delivering everything at once overflows a's own receive queue: let the handshakes
    // that lost a SYN-ACK retransmit. A reset would be final.
    for _ in 0..30 {
        w.run();
        let done = conns
            .iter()
            .all(|c| w.a.tcp_poll_connect(*c, &mut cx()) != Poll::Pending);
        if done {
            break;
        }
        w.now += Duration::from_millis(500);
    }
    for c in &conns {
        assert_eq!(w.a.tcp_poll_connect(*c, &mut cx()), Poll::Ready(Ok(())));
    }
    let mut n = 0;
    while let Poll::Ready(Ok(_)) = w.b.tcp_poll_accept(lid, &mut cx()) {
        n += 1;
    }
    assert_eq!(n, conns.len());
}

#[test]
fn backlog_full_drops_syns_instead_of_resetting() {
    let mut w = Wire::with(|c| {
        c.listen_backlog = 5;
        c.tcp_rx_buffer = 4096;
        c.tcp_tx_buffer = 4096;
    });
    let _lid = w.b.tcp_listen(80).unwrap();
    let conns: Vec<_> = (0..8)
        .map(|_| {
            w.a.tcp_connect("10.0.0.2:80".parse().unwrap(), w.now)
                .unwrap()
        })
        .collect();
    w.run();
    let established = conns
        .iter()
        .filter(|c| w.a.tcp_poll_connect(**c, &mut cx()) == Poll::Ready(Ok(())))
        .count();
    assert_eq!(established, 5);
    assert!(
        conns
            .iter()
            .all(|c| w.a.tcp_poll_connect(*c, &mut cx()) != Poll::Ready(Err(TcpError::Refused)))
    );
    assert_eq!(w.b.stats().syn_backlog_full, 3);
}

#[test]
fn wildcard_listener_takes_any_port_above_minimum() {
    let mut w = Wire::new();
    let lid = w.b.tcp_listen_any(9).unwrap();
    let c =
        w.a.tcp_connect("10.0.0.2:8080".parse().unwrap(), w.now)
            .unwrap();
    let low =
        w.a.tcp_connect("10.0.0.2:5".parse().unwrap(), w.now)
            .unwrap();
    w.run();
    assert_eq!(w.a.tcp_poll_connect(c, &mut cx()), Poll::Ready(Ok(())));
    assert_eq!(
        w.a.tcp_poll_connect(low, &mut cx()),
        Poll::Ready(Err(TcpError::Refused))
    );
    let Poll::Ready(Ok((_, local, _))) = w.b.tcp_poll_accept(lid, &mut cx()) else {
        panic!()
    };
    assert_eq!(local.port(), 8080);
}

#[test]
fn dropping_with_unread_data_resets_and_frees() {
    let mut w = Wire::new();
    let (c, s) = w.established();
    let _ = w.a.tcp_poll_write(c, &mut cx(), b"unread");
    w.run();
    w.b.tcp_release(s, w.now);
    w.run();
    let mut buf = [0u8; 8];
    assert_eq!(
        w.a.tcp_poll_read(c, &mut cx(), &mut buf),
        Poll::Ready(Err(TcpError::Reset))
    );
}

#[test]
fn lingering_close_is_bounded() {
    let mut w = Wire::new();
    let lid = w.b.tcp_listen(80).unwrap();
    let c =
        w.a.tcp_connect("10.0.0.2:80".parse().unwrap(), w.now)
            .unwrap();
    w.run();
    let Poll::Ready(Ok(_)) = w.b.tcp_poll_accept(lid, &mut cx()) else {
        panic!()
    };
    w.cut = true; // the peer vanishes: our FIN is never acknowledged
    w.a.tcp_release(c, w.now);
    w.run();
    assert_eq!(w.a.stats().lingering, 1);
    w.now += Duration::from_secs(31);
    w.run();
    w.run();
    assert_eq!(w.a.stats().lingering, 0);
    assert_eq!(w.a.stats().tcp_sockets, 0);
}

#[test]
fn data_after_release_resets_the_lingering_socket() {
    let mut w = Wire::new();
    let (c, s) = w.established();
    // b lets go with nothing unread: a graceful close that would linger.
    w.b.tcp_release(s, w.now);
    w.run();
    assert_eq!(w.b.stats().lingering, 1);
    // a keeps sending (its read side may not have noticed the FIN): nobody will read it.
    let _ = w.a.tcp_poll_write(c, &mut cx(), &[7u8; 4096]);
    w.run();
    w.run();
    assert_eq!(w.b.stats().lingering, 0);
    assert_eq!(w.b.stats().tcp_sockets, 0);
    // a was reset: it cannot send more.
    assert!(matches!(
        w.a.tcp_poll_write(c, &mut cx(), b"more"),
        Poll::Ready(Err(_))
    ));
}

#[test]
fn an_aborted_socket_waits_for_room_to_send_its_reset() {
    let mut w = Wire::new();
    let (c, s) = w.established();
    let (_c2, s2) = w.established_on(81);
    // Room for two packets only (the configured queue has a floor of 16).
    w.b.dev.tx_limit = 2;
    // b gets data it will never read, so letting go of s aborts it.
    assert!(matches!(
        w.a.tcp_poll_write(c, &mut cx(), b"unread"),
        Poll::Ready(Ok(6))
    ));
    w.run();
    // Another connection fills b's transmit queue.
    let _ = w.b.tcp_poll_write(s2, &mut cx(), &[1u8; 16 << 10]);
    w.b.poll(w.now);
    assert_eq!(w.b.dev.tx.len(), 2, "b's transmit queue is full");
    w.b.tcp_release(s, w.now);
    w.b.poll(w.now);
    // The RST could not be queued: the socket stays until it can.
    assert_eq!(w.b.stats().lingering, 1);
    w.run();
    // a is idle: only the RST tells it the connection is gone.
    assert_eq!(w.a.tcp_state(c), smoltcp::socket::tcp::State::Closed);
    w.run();
    assert_eq!(w.b.stats().lingering, 0);
}

#[test]
fn an_aborted_socket_is_freed_when_its_reset_cannot_leave() {
    let mut w = Wire::new();
    let (c, s) = w.established();
    let (_c2, s2) = w.established_on(81);
    // Room for two packets only (the configured queue has a floor of 16).
    w.b.dev.tx_limit = 2;
    assert!(matches!(
        w.a.tcp_poll_write(c, &mut cx(), b"unread"),
        Poll::Ready(Ok(6))
    ));
    w.run();
    let _ = w.b.tcp_poll_write(s2, &mut cx(), &[1u8; 16 << 10]);
    w.b.poll(w.now);
    w.b.tcp_release(s, w.now);
    // Nobody takes b's packets: the queue stays full. Polls keep coming, yet the wait
    // is bounded.
    let until = w.now + RESET_SEND_LIMIT;
    while w.now < until {
        w.b.poll(w.now);
        assert_eq!(w.b.stats().lingering, 1);
        w.now += Duration::from_secs(1);
    }
    w.b.poll(w.now);
    assert_eq!(w.b.stats().lingering, 0);
    assert_eq!(w.b.stats().tcp_sockets, 1);
}

#[test]
fn udp_round_trip() {
    let mut w = Wire::new();
    let (ha, pa) = w.a.udp_bind(0).unwrap();
    let (hb, _) = w.b.udp_bind(53).unwrap();
    assert_eq!(w.b.udp_bind(53), Err(UdpError::AddrInUse));
    assert_eq!(
        w.a.udp_poll_send(ha, &mut cx(), b"query", "10.0.0.2:53".parse().unwrap()),
        Poll::Ready(Ok(()))
    );
    w.run();
    let mut buf = [0u8; 64];
    let Poll::Ready(Ok((n, from))) = w.b.udp_poll_recv(hb, &mut cx(), &mut buf) else {
        panic!()
    };
    assert_eq!(&buf[..n], b"query");
    assert_eq!(from, SocketAddr::new("10.0.0.1".parse().unwrap(), pa));
    assert_eq!(
        w.a.udp_poll_send(ha, &mut cx(), b"x", "[::1]:53".parse().unwrap()),
        Poll::Ready(Err(UdpError::Unaddressable))
    );
    w.a.udp_close(ha);
    assert_eq!(w.a.stats().udp_sockets, 0);
}

#[test]
fn bad_addresses_are_rejected() {
    let c = NetstackConfig {
        addresses: vec!["0.0.0.0".parse().unwrap()],
        ..Default::default()
    };
    assert!(Netstack::new(c, Instant::now(), 1).is_err());
}

#[test]
fn reset_remote_fails_waiting_readers_to_that_peer_only() {
    let mut w = Wire::new();
    let (c, s) = w.established();
    // A request was sent and acknowledged; the answer will never come.
    let _ = w.a.tcp_poll_write(c, &mut cx(), b"request");
    w.run();
    w.cut = true;
    let mut buf = [0u8; 8];
    assert!(w.a.tcp_poll_read(c, &mut cx(), &mut buf).is_pending());
    assert_eq!(w.a.reset_remote("10.0.0.9".parse().unwrap()), 0);
    assert!(w.a.tcp_poll_read(c, &mut cx(), &mut buf).is_pending());
    assert_eq!(w.a.reset_remote("10.0.0.2".parse().unwrap()), 1);
    assert_eq!(
        w.a.tcp_poll_read(c, &mut cx(), &mut buf),
        Poll::Ready(Err(TcpError::Reset))
    );
    let _ = s;
}

fn udp4(src: [u8; 4], dst: [u8; 4], port: u16) -> Vec<u8> {
    let mut p = vec![0u8; 28];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&28u16.to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src);
    p[16..20].copy_from_slice(&dst);
    p[20..22].copy_from_slice(&4000u16.to_be_bytes());
    p[22..24].copy_from_slice(&port.to_be_bytes());
    p[24..26].copy_from_slice(&8u16.to_be_bytes());
    p
}

#[test]
fn a_flooding_source_gets_only_its_share_of_the_receive_queue() {
    let mut s = stack("10.0.0.2", |c| c.queue_packets = 16);
    let (_h, _) = s.udp_bind(53).unwrap();
    let now = Instant::now();
    let (flood, quiet) = ([10, 0, 0, 9], [10, 0, 0, 8]);
    let taken = (0..16)
        .filter(|_| s.receive(&udp4(flood, [10, 0, 0, 2], 53), now))
        .count();
    // Up to three quarters of the queue freely; past that, a source holding a quarter is
    // refused, keeping the rest for others.
    assert_eq!(taken, 12);
    assert_eq!(s.stats().rx_fair_share, 4);
    let quiet_taken = (0..6)
        .filter(|_| s.receive(&udp4(quiet, [10, 0, 0, 2], 53), now))
        .count();
    assert_eq!(quiet_taken, 4, "the quiet source still gets its share");
    // Draining the queue gives the flooder room again.
    s.poll(now);
    assert!(s.receive(&udp4(flood, [10, 0, 0, 2], 53), now));
}

#[test]
fn packets_for_another_address_are_dropped_before_smoltcp() {
    let mut s = stack("10.0.0.2", |_| {});
    let now = Instant::now();
    s.udp_bind(53).expect("bind");
    assert!(!s.receive(&udp4([10, 0, 0, 9], [10, 0, 0, 7], 53), now));
    assert_eq!(s.stats().rx_not_ours, 1);
    let mut b = Vec::with_capacity(2048);
    b.extend_from_slice(&udp4([10, 0, 0, 9], [10, 0, 0, 7], 53));
    assert_eq!(s.receive_owned(b, now), Err(RxDrop::NotOurs));
    // Ours, and broadcast, still reach smoltcp.
    assert!(s.receive(&udp4([10, 0, 0, 9], [10, 0, 0, 2], 53), now));
    assert!(s.receive(&udp4([10, 0, 0, 9], [255, 255, 255, 255], 53), now));
    assert_eq!(s.stats().rx_not_ours, 2);
}

#[test]
fn udp_to_an_unbound_port_is_dropped_before_smoltcp() {
    let mut s = stack("10.0.0.2", |_| {});
    let now = Instant::now();
    assert!(!s.receive(&udp4([10, 0, 0, 9], [10, 0, 0, 2], 9), now));
    assert_eq!(s.stats().rx_no_socket, 1);
    s.poll(now);
    let mut out = Vec::new();
    s.take_transmits(&mut out);
    assert!(out.is_empty(), "no ICMP reply is spent on it");
}

#[test]
fn dropped_packets_do_not_grow_the_buffer_pool() {
    let mut s = stack("10.0.0.2", |c| c.queue_packets = 16);
    let now = Instant::now();
    for _ in 0..10_000 {
        let mut b = Vec::with_capacity(2048);
        b.extend_from_slice(&udp4([10, 0, 0, 9], [10, 0, 0, 2], 9));
        assert_eq!(s.receive_owned(b, now), Err(RxDrop::NoSocket));
    }
    assert_eq!(s.stats().rx_no_socket, 10_000);
    assert!(s.dev.free.len() <= 32, "pool grew to {}", s.dev.free.len());
}
