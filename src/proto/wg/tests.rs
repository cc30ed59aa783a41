//! Two devices driven against each other in memory, with time jumped by hand.
#![allow(clippy::disallowed_methods)]

use super::*;

const A_ADDR: &str = "127.0.0.1:51000";
const B_ADDR: &str = "127.0.0.1:52000";

struct Pair {
    a: Device,
    b: Device,
    now: Instant,
    /// Plaintext IP packets delivered, per side.
    got_a: Vec<Vec<u8>>,
    got_b: Vec<Vec<u8>>,
}

fn ip_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    let src: std::net::Ipv4Addr = src.parse().unwrap();
    let dst: std::net::Ipv4Addr = dst.parse().unwrap();
    let total = 20 + payload.len();
    let mut p = vec![0u8; total];
    p[0] = 0x45;
    p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    p[8] = 64;
    p[9] = 17;
    p[12..16].copy_from_slice(&src.octets());
    p[16..20].copy_from_slice(&dst.octets());
    p[20..].copy_from_slice(payload);
    p
}

impl Pair {
    fn new() -> Self {
        let ka = NodePrivate::generate();
        let kb = NodePrivate::generate();
        let now = Instant::now();
        let mut a = Device::new(ka.clone());
        let mut b = Device::new(kb.clone());
        let mut pa = PeerConfig::new(kb.public());
        pa.allowed_ips = vec!["10.0.0.2/32".parse().unwrap()];
        pa.endpoint = Some(B_ADDR.parse().unwrap());
        a.upsert_peer(pa, now).unwrap();
        let mut pb = PeerConfig::new(ka.public());
        pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap()];
        b.upsert_peer(pb, now).unwrap();
        Self {
            a,
            b,
            now,
            got_a: vec![],
            got_b: vec![],
        }
    }

    /// Delivers every datagram until both sides are quiet. Returns datagrams exchanged.
    fn settle(&mut self, mut tx_a: Transmits, mut tx_b: Transmits) -> usize {
        let mut n = 0;
        let mut plain = vec![0u8; 70_000];
        for _ in 0..100 {
            if tx_a.is_empty() && tx_b.is_empty() {
                return n;
            }
            let mut next_a = Transmits::new();
            let mut next_b = Transmits::new();
            for t in tx_a.items().to_vec() {
                n += 1;
                let src = PathSrc::Udp(A_ADDR.parse().unwrap());
                if let Ok(Some(len)) =
                    self.b
                        .decapsulate(self.now, src, tx_a.bytes(&t), &mut plain, &mut next_b)
                {
                    self.got_b.push(plain[..len].to_vec());
                }
            }
            for t in tx_b.items().to_vec() {
                n += 1;
                let src = PathSrc::Udp(B_ADDR.parse().unwrap());
                if let Ok(Some(len)) =
                    self.a
                        .decapsulate(self.now, src, tx_b.bytes(&t), &mut plain, &mut next_a)
                {
                    self.got_a.push(plain[..len].to_vec());
                }
            }
            tx_a = next_a;
            tx_b = next_b;
        }
        panic!("devices did not settle");
    }
}

#[test]
fn first_packet_triggers_handshake_and_is_delivered() {
    let mut p = Pair::new();
    let mut tx = Transmits::new();
    let pkt = ip_packet("10.0.0.1", "10.0.0.2", b"hello");
    p.a.encapsulate(p.now, &pkt, &mut tx).unwrap();
    assert_eq!(tx.len(), 1);
    assert_eq!(tx.bytes(&tx.items()[0])[0], 1, "handshake initiation first");
    p.settle(tx, Transmits::new());
    assert_eq!(p.got_b, vec![pkt.clone()]);
    // Now the session exists: data goes straight out.
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &pkt, &mut tx).unwrap();
    assert_eq!(tx.bytes(&tx.items()[0])[0], 4);
    p.settle(tx, Transmits::new());
    assert_eq!(p.got_b.len(), 2);
    let (stats, path) = p.b.peer_stats(&p.a.public(), p.now).unwrap();
    assert_eq!(stats.rx_packets, 2);
    assert!(stats.last_handshake.is_some());
    // B learned A's endpoint by roaming.
    assert_eq!(path, Some(PathAddr::Udp(A_ADDR.parse().unwrap())));
}

#[test]
fn queued_packets_are_all_flushed_after_handshake() {
    let mut p = Pair::new();
    let mut tx = Transmits::new();
    for i in 0..10u8 {
        p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", &[i]), &mut tx)
            .unwrap();
    }
    assert_eq!(tx.len(), 1, "one initiation, the rest queued");
    p.settle(tx, Transmits::new());
    assert_eq!(p.got_b.len(), 10);
    assert_eq!(p.got_b[9][20], 9, "order kept");
}

#[test]
fn replay_and_garbage_are_dropped_and_counted() {
    let mut p = Pair::new();
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"x"), &mut tx)
        .unwrap();
    p.settle(tx, Transmits::new());
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"y"), &mut tx)
        .unwrap();
    let data = tx.bytes(&tx.items()[0]).to_vec();
    let mut plain = vec![0u8; 70_000];
    let mut out = Transmits::new();
    let src = PathSrc::Udp(A_ADDR.parse().unwrap());
    assert!(
        p.b.decapsulate(p.now, src, &data, &mut plain, &mut out)
            .unwrap()
            .is_some()
    );
    assert_eq!(
        p.b.decapsulate(p.now, src, &data, &mut plain, &mut out),
        Err(DropReason::Replay)
    );
    let mut tx2 = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"z"), &mut tx2)
        .unwrap();
    let mut flipped = tx2.bytes(&tx2.items()[0]).to_vec();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert_eq!(
        p.b.decapsulate(p.now, src, &flipped, &mut plain, &mut out),
        Err(DropReason::Auth)
    );
    assert_eq!(
        p.b.decapsulate(p.now, src, &[1, 2, 3], &mut plain, &mut out),
        Err(DropReason::Malformed)
    );
    assert_eq!(
        p.b.decapsulate(p.now, src, &vec![4u8; 70_000], &mut plain, &mut out),
        Err(DropReason::TooLarge)
    );
    let derp = PathSrc::Derp {
        region: 1,
        key: p.a.public(),
    };
    assert_eq!(
        p.b.decapsulate(
            p.now,
            derp,
            b"TS\xf0\x9f\x92\xac and more disco bytes",
            &mut plain,
            &mut out
        ),
        Err(DropReason::NotWireGuard)
    );
    assert_eq!(p.b.drops()[DropReason::Replay as usize], 1);
    assert_eq!(p.b.drops()[DropReason::Auth as usize], 1);
    // A too-small output buffer is refused, not a panic.
    assert_eq!(
        p.b.decapsulate(p.now, src, &data, &mut [0u8; 10], &mut out),
        Err(DropReason::Internal)
    );
}

#[test]
fn source_address_must_be_allowed() {
    let mut p = Pair::new();
    let mut tx = Transmits::new();
    // A claims a source B does not allow for it.
    p.a.encapsulate(p.now, &ip_packet("10.0.0.9", "10.0.0.2", b"spoof"), &mut tx)
        .unwrap();
    p.settle(tx, Transmits::new());
    assert!(p.got_b.is_empty());
    assert_eq!(p.b.drops()[DropReason::SourceNotAllowed as usize], 1);
}

#[test]
fn unroutable_and_unknown_are_dropped() {
    let mut p = Pair::new();
    let mut tx = Transmits::new();
    assert_eq!(
        p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.9.9.9", b"x"), &mut tx),
        Err(DropReason::NoRoute)
    );
    assert_eq!(
        p.a.encapsulate(p.now, &[0x99; 30], &mut tx),
        Err(DropReason::BadPacket)
    );
    // B has no endpoint for A until A speaks first.
    assert_eq!(
        p.b.encapsulate(p.now, &ip_packet("10.0.0.2", "10.0.0.1", b"x"), &mut tx),
        Err(DropReason::NoPath)
    );
    // A stranger's handshake is refused.
    let mut stranger = Device::new(NodePrivate::generate());
    let mut sc = PeerConfig::new(p.b.public());
    sc.allowed_ips = vec!["10.0.0.2/32".parse().unwrap()];
    sc.endpoint = Some(B_ADDR.parse().unwrap());
    stranger.upsert_peer(sc, p.now).unwrap();
    let mut tx = Transmits::new();
    stranger
        .encapsulate(p.now, &ip_packet("10.0.0.7", "10.0.0.2", b"x"), &mut tx)
        .unwrap();
    let init = tx.bytes(&tx.items()[0]).to_vec();
    let mut plain = vec![0u8; 70_000];
    assert_eq!(
        p.b.decapsulate(
            p.now,
            PathSrc::Udp(A_ADDR.parse().unwrap()),
            &init,
            &mut plain,
            &mut Transmits::new()
        ),
        Err(DropReason::UnknownPeer)
    );
}

#[test]
fn peers_can_be_removed_and_readded_while_running() {
    let mut p = Pair::new();
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"1"), &mut tx)
        .unwrap();
    p.settle(tx, Transmits::new());
    let key = p.a.public();
    assert!(p.b.remove_peer(&key));
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"2"), &mut tx)
        .unwrap();
    p.settle(tx, Transmits::new());
    assert_eq!(p.got_b.len(), 1, "removed peer's data is not delivered");
    let mut pb = PeerConfig::new(key);
    pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap()];
    p.b.upsert_peer(pb, p.now).unwrap();
    // B's new peer has no session; A's old one is unknown to it. Once B speaks (it now
    // knows A's endpoint only if configured), a fresh handshake restores traffic.
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"3"), &mut tx)
        .unwrap();
    p.settle(tx, Transmits::new());
    assert!(
        p.b.drops()[DropReason::NoSession as usize] + p.b.drops()[DropReason::UnknownPeer as usize]
            > 0
    );
    let mut pb = PeerConfig::new(key);
    pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap()];
    pb.endpoint = Some(A_ADDR.parse().unwrap());
    p.b.upsert_peer(pb, p.now).unwrap();
    let mut tx = Transmits::new();
    p.b.encapsulate(p.now, &ip_packet("10.0.0.2", "10.0.0.1", b"back"), &mut tx)
        .unwrap();
    p.settle(Transmits::new(), tx);
    assert_eq!(p.got_a.len(), 1, "re-added peer handshakes and delivers");
    let mut tx = Transmits::new();
    p.a.encapsulate(p.now, &ip_packet("10.0.0.1", "10.0.0.2", b"4"), &mut tx)
        .unwrap();
    p.settle(tx, Transmits::new());
    assert_eq!(p.got_b.last().map(|v| v[20]), Some(b'4'));
}

#[test]
fn derp_path_probes_candidates_and_moves_to_direct() {
    let ka = NodePrivate::generate();
    let kb = NodePrivate::generate();
    let now = Instant::now();
    let mut a = Device::new(ka.clone());
    let mut b = Device::new(kb.clone());
    let mut pa = PeerConfig::new(kb.public());
    pa.allowed_ips = vec!["10.0.0.2/32".parse().unwrap()];
    pa.derp_region = Some(9);
    pa.candidates = vec![B_ADDR.parse().unwrap()];
    a.upsert_peer(pa, now).unwrap();
    let mut pb = PeerConfig::new(ka.public());
    pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap()];
    pb.derp_region = Some(9);
    b.upsert_peer(pb, now).unwrap();

    let mut tx = Transmits::new();
    a.encapsulate(now, &ip_packet("10.0.0.1", "10.0.0.2", b"hi"), &mut tx)
        .unwrap();
    let paths: Vec<_> = tx
        .items()
        .iter()
        .filter(|t| !crate::wire::disco::is_disco(tx.bytes(t)))
        .map(|t| t.path)
        .collect();
    assert_eq!(
        paths,
        vec![PathAddr::Derp(9), PathAddr::Udp(B_ADDR.parse().unwrap())]
    );
    // Alongside, a ping to the candidate (no call-me-maybe: A has no endpoints yet).
    let pings: Vec<_> = tx
        .items()
        .iter()
        .filter(|t| crate::wire::disco::is_disco(tx.bytes(t)))
        .map(|t| t.path)
        .collect();
    assert_eq!(pings, vec![PathAddr::Udp(B_ADDR.parse().unwrap())]);
    // The direct copy arrives first; B answers over UDP and A moves to direct.
    let mut plain = vec![0u8; 70_000];
    let mut out_b = Transmits::new();
    let udp_copy = tx.bytes(&tx.items()[1]).to_vec();
    b.decapsulate(
        now,
        PathSrc::Udp(A_ADDR.parse().unwrap()),
        &udp_copy,
        &mut plain,
        &mut out_b,
    )
    .unwrap();
    assert_eq!(
        out_b.items()[0].path,
        PathAddr::Udp(A_ADDR.parse().unwrap())
    );
    let derp_copy = tx.bytes(&tx.items()[0]).to_vec();
    let derp_src = PathSrc::Derp {
        region: 9,
        key: ka.public(),
    };
    assert_eq!(
        b.decapsulate(now, derp_src, &derp_copy, &mut plain, &mut Transmits::new()),
        Err(DropReason::Replay)
    );
    let mut out_a = Transmits::new();
    let resp = out_b.bytes(&out_b.items()[0]).to_vec();
    a.decapsulate(
        now,
        PathSrc::Udp(B_ADDR.parse().unwrap()),
        &resp,
        &mut plain,
        &mut out_a,
    )
    .unwrap();
    assert!(
        out_a
            .items()
            .iter()
            .all(|t| t.path == PathAddr::Udp(B_ADDR.parse().unwrap()))
    );
    assert_eq!(
        a.peer_stats(&kb.public(), now).unwrap().1,
        Some(PathAddr::Udp(B_ADDR.parse().unwrap()))
    );
}

/// A NAT with endpoint-dependent filtering (like iptables MASQUERADE): a datagram from
/// outside gets in only if the host behind it sent to that address first.
struct Nat {
    inside: SocketAddr,
    outside: SocketAddr,
    sent_to: std::collections::HashSet<SocketAddr>,
}

/// Two devices behind two NATs, a relay between them, both told the other's mapped
/// address (as STUN would): only a simultaneous probe gets a direct path.
#[test]
fn hole_punching_through_two_nats_moves_both_sides_to_direct() {
    let ka = NodePrivate::generate();
    let kb = NodePrivate::generate();
    let t0 = Instant::now();
    let mut nats = [
        Nat {
            inside: "192.168.1.2:41641".parse().unwrap(),
            outside: "198.51.100.1:5000".parse().unwrap(),
            sent_to: Default::default(),
        },
        Nat {
            inside: "192.168.2.2:41641".parse().unwrap(),
            outside: "198.51.100.2:6000".parse().unwrap(),
            sent_to: Default::default(),
        },
    ];
    let mut devs = [Device::new(ka.clone()), Device::new(kb.clone())];
    let keys = [ka.public(), kb.public()];
    for i in 0..2 {
        let mut c = PeerConfig::new(keys[1 - i]);
        c.allowed_ips = vec![format!("10.0.0.{}/32", 2 - i).parse().unwrap()];
        c.derp_region = Some(1);
        c.candidates = vec![nats[1 - i].outside];
        devs[i].upsert_peer(c, t0).unwrap();
        devs[i].set_endpoints(vec![nats[i].outside, nats[i].inside]);
    }
    let mut plain = vec![0u8; 70_000];
    let mut queues = [Transmits::new(), Transmits::new()];
    devs[0]
        .encapsulate(
            t0,
            &ip_packet("10.0.0.1", "10.0.0.2", b"hi"),
            &mut queues[0],
        )
        .unwrap();
    let mut now = t0;
    let mut direct_udp = 0;
    // Every step is 10 ms of one-way delay; the relay costs two steps.
    let mut relayed: Vec<(usize, Vec<u8>, usize)> = Vec::new();
    for _step in 0..100 {
        now += Duration::from_millis(10);
        let mut next = [Transmits::new(), Transmits::new()];
        let mut arriving: Vec<(usize, PathSrc, Vec<u8>)> = Vec::new();
        relayed.retain_mut(|(to, bytes, wait)| {
            if *wait == 0 {
                let src = PathSrc::Derp {
                    region: 1,
                    key: keys[1 - *to],
                };
                arriving.push((*to, src, std::mem::take(bytes)));
                false
            } else {
                *wait -= 1;
                true
            }
        });
        for from in 0..2 {
            let q = std::mem::take(&mut queues[from]);
            for t in q.items() {
                let bytes = q.bytes(t).to_vec();
                match t.path {
                    PathAddr::Derp(_) => relayed.push((1 - from, bytes, 1)),
                    PathAddr::Udp(dst) => {
                        nats[from].sent_to.insert(dst);
                        let to = 1 - from;
                        // Sent to the other side's mapped address and let in by its NAT?
                        if dst == nats[to].outside && nats[to].sent_to.contains(&nats[from].outside)
                        {
                            direct_udp += 1;
                            arriving.push((to, PathSrc::Udp(nats[from].outside), bytes));
                        }
                    }
                }
            }
        }
        for (to, src, bytes) in arriving {
            let _ = devs[to].decapsulate(now, src, &bytes, &mut plain, &mut next[to]);
        }
        for i in 0..2 {
            devs[i].handle_timeout(now, &mut next[i]);
        }
        queues = next;
        let direct = (0..2).all(|i| {
            devs[i].peer_stats(&keys[1 - i], now).unwrap().1
                == Some(PathAddr::Udp(nats[1 - i].outside))
        });
        if direct {
            assert!(direct_udp > 0);
            assert!(
                now - t0 <= Duration::from_millis(500),
                "direct after {:?}",
                now - t0
            );
            // Each side learned how the other sees it.
            let info = devs[0].path_info(&keys[1], now).unwrap();
            assert_eq!(info.seen_as, Some(nats[0].outside));
            assert!(info.direct_rtt.is_some());
            return;
        }
    }
    panic!(
        "no direct path after a second: {:?}",
        devs[0].path_info(&keys[1], now)
    );
}

/// The client's first handshake message can reach the agent before the agent has
/// programmed the client (the coordinator tells both at once): it is held, and answered
/// when the key is programmed, so the first packet still gets through without waiting for
/// WireGuard's 5 s retry.
#[test]
fn an_initiation_from_a_key_not_yet_programmed_is_answered_once_it_is() {
    let mut p = Pair::new();
    let a_key = p.a.public();
    assert!(p.b.remove_peer(&a_key));
    let mut tx = Transmits::new();
    let pkt = ip_packet("10.0.0.1", "10.0.0.2", b"early");
    p.a.encapsulate(p.now, &pkt, &mut tx).unwrap();
    let unknown_before = p.b.drops()[DropReason::UnknownPeer as usize];
    p.settle(tx, Transmits::new());
    assert_eq!(
        p.b.drops()[DropReason::UnknownPeer as usize],
        unknown_before + 1
    );
    assert_eq!(p.b.held_initiations(), (1, 1));
    assert!(p.got_b.is_empty());

    // Replaying for another key, or before the key is programmed, does nothing.
    let mut tx_b = Transmits::new();
    assert_eq!(p.b.replay_held(&a_key, p.now, &mut tx_b), 0);
    assert!(tx_b.is_empty());

    p.now += Duration::from_millis(20);
    let mut pb = PeerConfig::new(a_key);
    pb.allowed_ips = vec!["10.0.0.1/32".parse().unwrap()];
    p.b.upsert_peer(pb, p.now).unwrap();
    assert_eq!(p.b.replay_held(&a_key, p.now, &mut tx_b), 1);
    assert_eq!(tx_b.len(), 1, "the handshake response");
    assert_eq!(tx_b.bytes(&tx_b.items()[0])[0], 2);
    p.settle(Transmits::new(), tx_b);
    assert!(p.a.has_session(&p.b.public()));
    assert_eq!(
        p.got_b,
        vec![pkt],
        "the packet queued behind the handshake arrived"
    );
    assert_eq!(p.b.held_initiations().0, 0);
}

/// Held initiations expire: one replayed after WireGuard would have retried anyway is
/// not answered (the initiator's newer one will be).
#[test]
fn a_held_initiation_expires() {
    let mut p = Pair::new();
    let a_key = p.a.public();
    p.b.remove_peer(&a_key);
    let mut tx = Transmits::new();
    p.a.initiate(&p.b.public(), false, p.now, &mut tx);
    p.settle(tx, Transmits::new());
    assert_eq!(p.b.held_initiations().0, 1);
    p.now += held::HOLD_FOR;
    p.b.upsert_peer(PeerConfig::new(a_key), p.now).unwrap();
    let mut tx_b = Transmits::new();
    assert_eq!(p.b.replay_held(&a_key, p.now, &mut tx_b), 0);
    assert!(tx_b.is_empty());
}
