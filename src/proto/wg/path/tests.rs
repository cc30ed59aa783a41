//! Path choice driven by a fake clock: rounds, pongs, heartbeats, fallback.
#![allow(clippy::disallowed_methods)]

use super::*;
use crate::wire::key::NodePrivate;

fn cfg(derp: Option<u16>, endpoint: Option<SocketAddr>, cands: &[&str]) -> PeerConfig {
    let mut c = PeerConfig::new(NodePrivate::generate().public());
    c.derp_region = derp;
    c.endpoint = endpoint;
    c.candidates = cands.iter().map(|s| s.parse().unwrap()).collect();
    c
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Answers every ping of the probe after `rtt`, as the peer would.
fn pong_all(p: &mut Path, probe: &Probe, sent: Instant, rtt: Duration, txids: &mut u8) {
    let mut ids = Vec::new();
    for a in &probe.pings {
        *txids += 1;
        let id = [*txids; 12];
        p.record_ping(id, PathAddr::Udp(*a), sent);
        ids.push((id, *a));
    }
    for (id, a) in ids {
        p.handle_pong(&id, PathSrc::Udp(a), addr("198.51.100.1:1"), sent + rtt);
    }
}

#[test]
fn static_endpoint_without_derp_roams() {
    let t0 = Instant::now();
    let a = addr("127.0.0.1:1000");
    let b = addr("127.0.0.1:2000");
    let mut p = Path::new(&cfg(None, Some(a), &[]), t0);
    assert_eq!(p.current(t0), Some(PathAddr::Udp(a)));
    p.on_authenticated(PathSrc::Udp(b), t0);
    assert_eq!(
        p.current(t0 + Duration::from_secs(3600)),
        Some(PathAddr::Udp(b))
    );
    assert_eq!(p.poll_probe(t0), Probe::default());
    assert!(p.initiation_targets(t0).is_empty());
}

#[test]
fn new_peer_starts_on_derp_and_runs_a_round_at_once() {
    let t0 = Instant::now();
    let mut p = Path::new(&cfg(Some(7), None, &["192.0.2.1:1", "192.0.2.2:2"]), t0);
    assert_eq!(p.current(t0), Some(PathAddr::Derp(7)));
    let probe = p.poll_probe(t0);
    assert_eq!(probe.pings, vec![addr("192.0.2.1:1"), addr("192.0.2.2:2")]);
    assert!(probe.call_me_maybe);
    // Idle: no further rounds.
    assert_eq!(p.poll_probe(t0 + Duration::from_secs(10)), Probe::default());
    // Traffic over DERP: a round every PROBE_INTERVAL, not more often.
    let t1 = t0 + Duration::from_secs(10);
    p.on_send(PathAddr::Derp(7), t1);
    assert_eq!(p.poll_probe(t1).pings.len(), 2);
    assert!(p.poll_probe(t1 + ms(500)).pings.is_empty());
    p.on_send(PathAddr::Derp(7), t1 + PROBE_INTERVAL);
    assert_eq!(p.poll_probe(t1 + PROBE_INTERVAL).pings.len(), 2);
    assert_eq!(p.info(t1).rounds, 3);
}

#[test]
fn pong_moves_traffic_to_the_fastest_candidate_with_hysteresis() {
    let t0 = Instant::now();
    let (a, b) = (addr("192.0.2.1:1"), addr("192.0.2.2:2"));
    let mut p = Path::new(&cfg(Some(7), None, &["192.0.2.1:1", "192.0.2.2:2"]), t0);
    let _ = p.poll_probe(t0);
    p.record_ping([1; 12], PathAddr::Udp(a), t0);
    p.record_ping([2; 12], PathAddr::Udp(b), t0);
    // A pong with an unknown id, or from the wrong path, proves nothing.
    assert_eq!(
        p.handle_pong(&[9; 12], PathSrc::Udp(a), a, t0 + ms(5)),
        None
    );
    assert_eq!(
        p.handle_pong(&[1; 12], PathSrc::Udp(b), a, t0 + ms(5)),
        None
    );
    assert_eq!(p.current(t0 + ms(5)), Some(PathAddr::Derp(7)));
    // The first pong wins at once.
    assert_eq!(
        p.handle_pong(&[2; 12], PathSrc::Udp(b), a, t0 + ms(40)),
        Some(ms(40))
    );
    assert_eq!(p.current(t0 + ms(40)), Some(PathAddr::Udp(b)));
    // A slightly faster one does not take over; a much faster one does.
    assert_eq!(
        p.handle_pong(&[1; 12], PathSrc::Udp(a), a, t0 + ms(35)),
        Some(ms(35))
    );
    assert_eq!(p.current(t0 + ms(41)), Some(PathAddr::Udp(b)));
    p.record_ping([3; 12], PathAddr::Udp(a), t0 + ms(100));
    p.handle_pong(&[3; 12], PathSrc::Udp(a), a, t0 + ms(110));
    assert_eq!(p.current(t0 + ms(110)), Some(PathAddr::Udp(a)));
    let info = p.info(t0 + ms(110));
    assert_eq!(info.direct_rtt, Some(ms(10)));
    assert_eq!(info.seen_as, Some(a));
    // Once direct, traffic does not start rounds.
    p.on_send(PathAddr::Udp(a), t0 + ms(120));
    assert_eq!(p.poll_probe(t0 + ms(300)), Probe::default());
}

#[test]
fn silent_direct_path_gets_a_heartbeat_then_falls_back_within_the_limit() {
    let t0 = Instant::now();
    let c = addr("192.0.2.1:1");
    let mut p = Path::new(&cfg(Some(7), None, &["192.0.2.1:1"]), t0);
    let probe = p.poll_probe(t0);
    let mut ids = 0;
    pong_all(&mut p, &probe, t0, ms(20), &mut ids);
    let t1 = t0 + ms(20);
    assert_eq!(p.current(t1), Some(PathAddr::Udp(c)));
    // Sends go unanswered: a heartbeat ping after HEARTBEAT_AFTER, once per interval.
    p.on_send(PathAddr::Udp(c), t1);
    assert!(p.poll_probe(t1 + ms(100)).pings.is_empty());
    assert_eq!(p.poll_probe(t1 + HEARTBEAT_AFTER).pings, vec![c]);
    assert!(
        p.poll_probe(t1 + HEARTBEAT_AFTER + ms(100))
            .pings
            .is_empty()
    );
    // Its pong revives the path.
    p.record_ping([77; 12], PathAddr::Udp(c), t1 + HEARTBEAT_AFTER);
    p.handle_pong(&[77; 12], PathSrc::Udp(c), c, t1 + HEARTBEAT_AFTER + ms(20));
    let t2 = t1 + HEARTBEAT_AFTER + ms(20);
    assert_eq!(p.current(t2 + ms(1400)), Some(PathAddr::Udp(c)));
    // Now silence: back to DERP DIRECT_UNANSWERED after the first unanswered send.
    p.on_send(PathAddr::Udp(c), t2);
    assert_eq!(
        p.current(t2 + DIRECT_UNANSWERED - ms(1)),
        Some(PathAddr::Udp(c))
    );
    assert_eq!(p.current(t2 + DIRECT_UNANSWERED), Some(PathAddr::Derp(7)));
    // Traffic now flows over DERP and starts rounds again.
    p.on_send(PathAddr::Derp(7), t2 + DIRECT_UNANSWERED);
    let probe = p.poll_probe(t2 + DIRECT_UNANSWERED);
    assert_eq!(probe.pings, vec![c]);
    assert!(probe.call_me_maybe);
    // Silence past DIRECT_TRUST falls back too, even with nothing sent.
    let mut q = Path::new(&cfg(Some(7), None, &["192.0.2.1:1"]), t0);
    let probe = q.poll_probe(t0);
    pong_all(&mut q, &probe, t0, ms(20), &mut ids);
    assert_eq!(q.current(t0 + DIRECT_TRUST - ms(1)), Some(PathAddr::Udp(c)));
    assert_eq!(
        q.current(t0 + ms(20) + DIRECT_TRUST),
        Some(PathAddr::Derp(7))
    );
}

#[test]
fn call_me_maybe_and_pings_teach_candidates_and_start_rounds() {
    let t0 = Instant::now();
    let mut p = Path::new(&cfg(Some(7), None, &[]), t0);
    assert!(p.poll_probe(t0).pings.is_empty());
    let e = addr("203.0.113.9:41641");
    p.handle_call_me_maybe(&[e], t0 + ms(10));
    let probe = p.poll_probe(t0 + ms(10));
    assert_eq!(probe.pings, vec![e]);
    // A second call-me-maybe right after waits for the minimum gap.
    p.handle_call_me_maybe(&[e], t0 + ms(20));
    assert!(p.poll_probe(t0 + ms(20)).pings.is_empty());
    assert_eq!(p.poll_probe(t0 + ms(300)).pings, vec![e]);
    // A ping from an address we do not know: learned, and pinged back once a second.
    let r = addr("198.51.100.7:5000");
    assert!(p.handle_ping_from(r, t0 + ms(400)));
    p.record_ping([1; 12], PathAddr::Udp(r), t0 + ms(400));
    assert!(!p.handle_ping_from(r, t0 + ms(500)));
    assert!(p.handle_ping_from(r, t0 + ms(1500)));
    let info = p.info(t0);
    assert!(
        info.candidates
            .iter()
            .any(|c| c.addr == r && c.origin == Origin::PeerReflexive)
    );
    // Learned candidates are capped; advertised ones are never pushed out.
    let mut q = Path::new(&cfg(Some(7), None, &["192.0.2.1:1"]), t0);
    let many: Vec<SocketAddr> = (0..100u16)
        .map(|i| SocketAddr::from(([10, 0, 0, 1], 1000 + i)))
        .collect();
    q.handle_call_me_maybe(&many, t0);
    let info = q.info(t0);
    assert_eq!(info.candidates.len(), MAX_CANDIDATES);
    assert_eq!(info.candidates[0].addr, addr("192.0.2.1:1"));
}

#[test]
fn relay_only_ignores_udp_and_never_probes() {
    let t0 = Instant::now();
    let mut c = cfg(Some(1), None, &["127.0.0.1:3000"]);
    c.relay_only = true;
    let mut p = Path::new(&c, t0);
    p.on_authenticated(PathSrc::Udp(addr("127.0.0.1:3000")), t0);
    p.handle_call_me_maybe(&[addr("127.0.0.1:3001")], t0);
    assert!(!p.handle_ping_from(addr("127.0.0.1:3002"), t0));
    assert_eq!(p.current(t0), Some(PathAddr::Derp(1)));
    p.on_send(PathAddr::Derp(1), t0);
    assert_eq!(p.poll_probe(t0), Probe::default());
    assert!(p.initiation_targets(t0).is_empty());
}

#[test]
fn forget_direct_and_new_endpoints_start_a_round() {
    let t0 = Instant::now();
    let c = addr("192.0.2.1:1");
    let mut p = Path::new(&cfg(Some(7), None, &["192.0.2.1:1"]), t0);
    let probe = p.poll_probe(t0);
    let mut ids = 0;
    pong_all(&mut p, &probe, t0, ms(5), &mut ids);
    assert!(p.is_direct(t0 + ms(5)));
    p.forget_direct();
    assert_eq!(p.current(t0 + ms(6)), Some(PathAddr::Derp(7)));
    let probe = p.poll_probe(t0 + ms(6));
    assert_eq!(probe.pings, vec![c]);
    assert!(probe.call_me_maybe);
    // The coordinator sends new endpoints: a round at once.
    let mut changed = cfg(Some(7), None, &["192.0.2.5:5"]);
    changed.public = NodePrivate::generate().public();
    p.reconfigure(&changed, t0 + Duration::from_secs(1));
    assert_eq!(
        p.poll_probe(t0 + Duration::from_secs(1)).pings,
        vec![addr("192.0.2.5:5")]
    );
}

#[test]
fn unanswered_pings_on_the_direct_path_fall_back_without_data() {
    let t0 = Instant::now();
    let c = addr("192.0.2.1:1");
    let mut p = Path::new(&cfg(Some(7), None, &["192.0.2.1:1"]), t0);
    let probe = p.poll_probe(t0);
    let mut ids = 0;
    pong_all(&mut p, &probe, t0, ms(20), &mut ids);
    let t1 = t0 + ms(20);
    assert_eq!(p.current(t1), Some(PathAddr::Udp(c)));
    // Only pings, no data (a NAT mapping vanished): back on DERP DIRECT_UNANSWERED after
    // the first unanswered one, not DIRECT_TRUST.
    p.record_ping([90; 12], PathAddr::Udp(c), t1);
    p.record_ping([91; 12], PathAddr::Udp(c), t1 + ms(550));
    assert_eq!(
        p.current(t1 + DIRECT_UNANSWERED - ms(1)),
        Some(PathAddr::Udp(c))
    );
    assert_eq!(p.current(t1 + DIRECT_UNANSWERED), Some(PathAddr::Derp(7)));
    // An answered ping keeps it.
    let mut q = Path::new(&cfg(Some(7), None, &["192.0.2.1:1"]), t0);
    let probe = q.poll_probe(t0);
    pong_all(&mut q, &probe, t0, ms(20), &mut ids);
    q.record_ping([92; 12], PathAddr::Udp(c), t1);
    q.handle_pong(&[92; 12], PathSrc::Udp(c), c, t1 + ms(20));
    assert_eq!(
        q.current(t1 + DIRECT_UNANSWERED * 2),
        Some(PathAddr::Udp(c))
    );
    // Pings to other candidates say nothing about the path in use.
    let mut r = Path::new(&cfg(Some(7), None, &["192.0.2.1:1", "192.0.2.2:2"]), t0);
    let probe = r.poll_probe(t0);
    pong_all(&mut r, &probe, t0, ms(20), &mut ids);
    let other = if r.info(t1).direct == Some(c) {
        addr("192.0.2.2:2")
    } else {
        c
    };
    r.record_ping([93; 12], PathAddr::Udp(other), t1);
    assert!(r.is_direct(t1 + DIRECT_UNANSWERED * 2));
}
