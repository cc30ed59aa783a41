use super::*;
use crate::proto::derp::server::{accept_client_info, server_info_frame, server_key_frame};
use crate::wire::derp::{
    Decoded, Direction, KeepAlive, PeerGoneReason, ServerInfoFrame, ServerKey, decode,
};

#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// Decodes every frame in `bytes` as the server would.
fn frames_c2s(bytes: &[u8]) -> Vec<Frame<'_>> {
    let mut out = vec![];
    let mut at = 0;
    while at < bytes.len() {
        let Ok(Decoded::Frame { frame, len }) = decode(&bytes[at..], Direction::ClientToServer)
        else {
            panic!("bad client output at {at}")
        };
        out.push(frame);
        at += len;
    }
    out
}

fn s2c(bytes: &[u8]) -> Frame<'_> {
    Frame::parse_frame(bytes, Direction::ServerToClient).unwrap()
}

struct Pair {
    t: Instant,
    server: NodePrivate,
    client: NodePrivate,
    session: ClientSession,
}

impl Pair {
    fn new(cfg: ClientSessionConfig) -> Self {
        let t = origin();
        let client = NodePrivate::generate();
        let session = ClientSession::new(t, client.clone(), cfg, [7; 24]);
        Self {
            t,
            server: NodePrivate::generate(),
            client,
            session,
        }
    }

    /// Runs the login against the real server-side checks.
    fn login(&mut self) -> ServerInfo {
        let greeting = server_key_frame(&self.server.public());
        assert_eq!(self.session.handle_frame(self.t, s2c(&greeting)), Ok(None));
        let mut out = vec![];
        self.session.poll_transmit(&mut out);
        let frames = frames_c2s(&out);
        let ok = accept_client_info(&self.server, None, &frames[0]).unwrap();
        assert_eq!(ok.key, self.client.public());
        assert_eq!(ok.info.version, 2);
        assert!(ok.info.can_ack_pings);
        let reply = server_info_frame(&self.server, &self.client.public(), [8; 24]).unwrap();
        match self.session.handle_frame(self.t, s2c(&reply)) {
            Ok(Some(ClientEvent::Established { server_key, info })) => {
                assert_eq!(server_key, self.server.public());
                info
            }
            other => panic!("{other:?}"),
        }
    }

    fn transmit(&mut self) -> Vec<u8> {
        let mut out = vec![];
        self.session.poll_transmit(&mut out);
        out
    }
}

#[test]
fn login_then_note_preferred() {
    let mut p = Pair::new(ClientSessionConfig {
        preferred: true,
        ..Default::default()
    });
    assert_eq!(p.session.state(), ClientState::AwaitServerKey);
    let info = p.login();
    assert_eq!(info.version, 2);
    assert!(p.session.is_established());
    let out = p.transmit();
    assert_eq!(
        frames_c2s(&out),
        vec![Frame::NotePreferred(NotePreferred { preferred: true })]
    );
    assert!(!p.session.wants_transmit());
}

#[test]
fn login_rejects_impostors_and_surprises() {
    // ServerInfo sealed by a different key than the greeting announced.
    let mut p = Pair::new(ClientSessionConfig::default());
    let greeting = server_key_frame(&p.server.public());
    p.session.handle_frame(p.t, s2c(&greeting)).unwrap();
    let impostor = NodePrivate::generate();
    let reply = server_info_frame(&impostor, &p.client.public(), [8; 24]).unwrap();
    let e = p.session.handle_frame(p.t, s2c(&reply));
    assert_eq!(e, Err(ClientSessionError::Login(LoginError::BadBox)));
    // A packet before the greeting.
    let mut p = Pair::new(ClientSessionConfig::default());
    let e = p.session.handle_frame(p.t, Frame::KeepAlive(KeepAlive));
    assert_eq!(
        e,
        Err(ClientSessionError::UnexpectedFrame(FrameType::KeepAlive))
    );
    // A second greeting instead of ServerInfo.
    let mut p = Pair::new(ClientSessionConfig::default());
    let sk = Frame::ServerKey(ServerKey {
        key: p.server.public(),
        extra: &[],
    });
    p.session.handle_frame(p.t, sk).unwrap();
    assert!(p.session.handle_frame(p.t, sk).is_err());
    // Garbage box.
    let mut p = Pair::new(ClientSessionConfig::default());
    p.session.handle_frame(p.t, sk).unwrap();
    let e = p
        .session
        .handle_frame(p.t, Frame::ServerInfo(ServerInfoFrame { sealed: &[0; 50] }));
    assert_eq!(e, Err(ClientSessionError::Login(LoginError::BadBox)));
}

#[test]
fn login_deadline() {
    let mut p = Pair::new(ClientSessionConfig::default());
    let deadline = p.session.poll_timeout();
    assert_eq!(deadline, p.t + Duration::from_secs(10));
    assert_eq!(
        p.session.handle_timeout(p.t + Duration::from_secs(9)),
        Ok(())
    );
    assert_eq!(
        p.session.handle_timeout(deadline),
        Err(ClientSessionError::LoginTimeout)
    );
}

#[test]
fn pings_on_schedule_and_measures_rtt() {
    let mut p = Pair::new(ClientSessionConfig::default());
    p.login();
    assert_eq!(p.session.poll_timeout(), p.t + Duration::from_secs(20));
    // Early timer calls do nothing.
    p.session
        .handle_timeout(p.t + Duration::from_secs(5))
        .unwrap();
    assert!(!p.session.wants_transmit());
    let t1 = p.t + Duration::from_secs(20);
    p.session.handle_timeout(t1).unwrap();
    let out = p.transmit();
    let Frame::Ping(ping) = frames_c2s(&out)[0] else {
        panic!()
    };
    assert_eq!(
        p.session.poll_timeout(),
        t1 + Duration::from_secs(10),
        "waiting for the pong"
    );
    // A pong with the wrong payload is ignored; the right one yields the RTT.
    let wrong = Frame::Pong(Pong { data: [9; 8] });
    assert_eq!(p.session.handle_frame(t1, wrong), Ok(None));
    let rtt = Duration::from_millis(30);
    let ev = p
        .session
        .handle_frame(t1 + rtt, Frame::Pong(Pong { data: ping.data }));
    assert_eq!(ev, Ok(Some(ClientEvent::Pong { rtt })));
    assert_eq!(p.session.rtt(), Some(rtt));
    assert_eq!(p.session.poll_timeout(), t1 + Duration::from_secs(20));
}

#[test]
fn unanswered_ping_kills_the_connection() {
    let mut p = Pair::new(ClientSessionConfig::default());
    p.login();
    let t1 = p.t + Duration::from_secs(20);
    p.session.handle_timeout(t1).unwrap();
    p.transmit();
    // Other traffic does not count as an answer.
    p.session
        .handle_frame(t1 + Duration::from_secs(5), Frame::KeepAlive(KeepAlive))
        .unwrap();
    let e = p.session.handle_timeout(t1 + Duration::from_secs(10));
    assert_eq!(
        e,
        Err(ClientSessionError::PingTimeout(Duration::from_secs(10)))
    );
}

#[test]
fn silence_kills_the_connection() {
    let cfg = ClientSessionConfig {
        ping_interval: Duration::from_secs(1000),
        idle_timeout: Duration::from_secs(120),
        ..Default::default()
    };
    let mut p = Pair::new(cfg);
    p.login();
    let e = p.session.handle_timeout(p.t + Duration::from_secs(120));
    assert_eq!(
        e,
        Err(ClientSessionError::IdleTimeout(Duration::from_secs(120)))
    );
}

#[test]
fn answers_server_pings_and_surfaces_signals() {
    let mut p = Pair::new(ClientSessionConfig::default());
    p.login();
    for i in 0..20u8 {
        assert_eq!(
            p.session
                .handle_frame(p.t, Frame::Ping(Ping { data: [i; 8] })),
            Ok(None)
        );
    }
    let out = p.transmit();
    let pongs = frames_c2s(&out);
    assert_eq!(
        pongs.len(),
        MAX_PENDING_PONGS,
        "a ping flood gets a bounded answer"
    );
    assert_eq!(pongs[0], Frame::Pong(Pong { data: [0; 8] }));
    let gone = PeerGone {
        peer: NodePublic::from_bytes([1; 32]),
        reason: Some(PeerGoneReason::NotHere),
    };
    assert_eq!(
        p.session.handle_frame(p.t, Frame::PeerGone(gone)),
        Ok(Some(ClientEvent::PeerGone(gone)))
    );
    let r = Restarting {
        reconnect_in_ms: 10,
        try_for_ms: 20,
    };
    assert_eq!(
        p.session.handle_frame(p.t, Frame::Restarting(r)),
        Ok(Some(ClientEvent::Restarting(r)))
    );
    let h = Health {
        problem: b"duplicate",
    };
    assert_eq!(
        p.session.handle_frame(p.t, Frame::Health(h)),
        Ok(Some(ClientEvent::Health(h)))
    );
    let pkt = RecvPacket {
        src: NodePublic::from_bytes([2; 32]),
        packet: b"wg",
    };
    assert_eq!(
        p.session.handle_frame(p.t, Frame::RecvPacket(pkt)),
        Ok(Some(ClientEvent::Packet(pkt)))
    );
    assert_eq!(
        p.session.handle_frame(
            p.t,
            Frame::Unknown {
                ty: 0x7f,
                body: &[]
            }
        ),
        Ok(None)
    );
}

#[test]
fn transmit_into_a_small_buffer_keeps_the_rest() {
    let mut p = Pair::new(ClientSessionConfig::default());
    p.login();
    p.session
        .handle_frame(p.t, Frame::Ping(Ping { data: [1; 8] }))
        .unwrap();
    p.session
        .handle_frame(p.t, Frame::Ping(Ping { data: [2; 8] }))
        .unwrap();
    let mut buf = [0u8; 20];
    let mut out = &mut buf[..];
    assert_eq!(p.session.poll_transmit(&mut out), 13);
    assert!(p.session.wants_transmit());
    let rest = p.transmit();
    assert_eq!(frames_c2s(&rest), vec![Frame::Pong(Pong { data: [2; 8] })]);
}

/// The stall probe with round figures: 400 ms of silence, 1 s to answer, 10 s in use.
fn probing() -> ClientSessionConfig {
    ClientSessionConfig {
        stall_probe: Some(StallProbe {
            after: Duration::from_millis(400),
            timeout: Duration::from_secs(1),
            window: Duration::from_secs(10),
        }),
        ..Default::default()
    }
}

#[test]
fn silence_on_a_connection_in_use_probes_the_relay_soon() {
    let mut p = Pair::new(probing());
    p.login();
    let ms = Duration::from_millis;
    // Never used for data: only the idle ping.
    assert_eq!(p.session.poll_timeout(), p.t + Duration::from_secs(20));
    // Sent, and something came back: the probe waits for 400 ms of silence after it.
    p.session.note_sent(p.t + ms(10));
    p.session
        .handle_frame(p.t + ms(20), Frame::KeepAlive(KeepAlive))
        .unwrap();
    assert_eq!(p.session.poll_timeout(), p.t + ms(420));
    // Sent, then silence: a probe 400 ms after the last frame received.
    let t1 = p.t + ms(100);
    p.session
        .handle_frame(t1, Frame::KeepAlive(KeepAlive))
        .unwrap();
    p.session.note_sent(t1 + ms(300));
    assert_eq!(p.session.poll_timeout(), t1 + ms(400));
    p.session.handle_timeout(t1 + ms(399)).unwrap();
    assert!(!p.session.wants_transmit());
    p.session.handle_timeout(t1 + ms(400)).unwrap();
    let out = p.transmit();
    let Frame::Ping(ping) = frames_c2s(&out)[0] else {
        panic!("no probe: {out:?}")
    };
    assert_eq!(p.session.poll_timeout(), t1 + ms(1400));
    // A live relay answers: the connection stays, watched again from the answer.
    p.session
        .handle_frame(t1 + ms(450), Frame::Pong(Pong { data: ping.data }))
        .unwrap();
    assert_eq!(p.session.poll_timeout(), t1 + ms(850));
    // A stopped one does not: gone 1 s after the probe.
    let t2 = t1 + ms(850);
    p.session.handle_timeout(t2).unwrap();
    p.transmit();
    assert_eq!(
        p.session.handle_timeout(t2 + ms(1000)),
        Err(ClientSessionError::PingTimeout(ms(1000)))
    );
}

#[test]
fn a_node_that_only_receives_still_notices_a_stopped_relay() {
    // An agent answers nothing while nothing reaches it: its own sends cannot tell it
    // that its relay stopped, the silence after data it received must.
    let mut p = Pair::new(probing());
    p.login();
    let ms = Duration::from_millis;
    let t1 = p.t + ms(50);
    let pkt = Frame::RecvPacket(RecvPacket {
        src: NodePrivate::generate().public(),
        packet: b"data",
    });
    p.session.handle_frame(t1, pkt).unwrap();
    assert_eq!(p.session.poll_timeout(), t1 + ms(400));
    p.session.handle_timeout(t1 + ms(400)).unwrap();
    assert!(matches!(frames_c2s(&p.transmit())[0], Frame::Ping(_)));
    assert_eq!(
        p.session.handle_timeout(t1 + ms(1400)),
        Err(ClientSessionError::PingTimeout(ms(1000)))
    );
}

#[test]
fn the_probe_stops_when_the_connection_goes_idle_and_waits_for_slow_paths() {
    let mut p = Pair::new(probing());
    p.login();
    let ms = Duration::from_millis;
    // A measured round trip of 500 ms: a probe may take three of them.
    p.session
        .handle_timeout(p.t + Duration::from_secs(20))
        .unwrap();
    let Frame::Ping(ping) = frames_c2s(&p.transmit())[0] else {
        panic!("no idle ping")
    };
    let t1 = p.t + Duration::from_secs(20) + ms(500);
    p.session
        .handle_frame(t1, Frame::Pong(Pong { data: ping.data }))
        .unwrap();
    p.session.note_sent(t1);
    p.session.handle_timeout(t1 + ms(400)).unwrap();
    let Frame::Ping(ping) = frames_c2s(&p.transmit())[0] else {
        panic!("no probe")
    };
    assert_eq!(p.session.poll_timeout(), t1 + ms(1900));
    // Answered; then probes keep coming while the last data is within 10 s, and stop.
    let mut t = t1 + ms(900);
    p.session
        .handle_frame(t, Frame::Pong(Pong { data: ping.data }))
        .unwrap();
    let mut probes = 0;
    let mut probed = t;
    while p.session.poll_timeout() < t1 + Duration::from_secs(15) {
        t = p.session.poll_timeout();
        probed = t;
        p.session.handle_timeout(t).unwrap();
        let Frame::Ping(ping) = frames_c2s(&p.transmit())[0] else {
            panic!("no probe at {t:?}")
        };
        t += ms(5);
        p.session
            .handle_frame(t, Frame::Pong(Pong { data: ping.data }))
            .unwrap();
        probes += 1;
    }
    assert!((20..=25).contains(&probes), "{probes} probes");
    assert!(
        probed <= t1 + Duration::from_secs(10),
        "probed at {probed:?}"
    );
    assert_eq!(p.session.poll_timeout(), probed + Duration::from_secs(20));
}

#[test]
fn the_stall_probe_can_be_turned_off() {
    let cfg = ClientSessionConfig {
        stall_probe: None,
        ..Default::default()
    };
    let mut p = Pair::new(cfg);
    p.login();
    p.session.note_sent(p.t);
    assert_eq!(p.session.poll_timeout(), p.t + Duration::from_secs(20));
}
