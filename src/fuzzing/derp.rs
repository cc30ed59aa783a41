//! DERP fuzz entry points: stream decoding in both directions with re-encode round
//! trips, the server registry driven by arbitrary client frames, and both logins.

use crate::proto::derp::client::{ClientEvent, ClientSession, ClientSessionConfig};
use crate::proto::derp::server::{
    MeshKey, NewConn, Registry, Route, accept_client_info, server_info_frame, server_key_frame,
};
use crate::wire::derp::{
    ClientInfo, Decoded, Direction, Frame, FrameHeader, FrameType, HEADER_LEN, ServerInfo, decode,
};
use crate::wire::key::{NodePrivate, NodePublic};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Decodes every frame of `data` as a stream; asserts that each decoded frame
/// re-encodes to bytes that decode to the same frame, and calls `each` on it.
fn decode_stream<'a>(data: &'a [u8], dir: Direction, mut each: impl FnMut(Frame<'a>)) {
    let mut at = 0;
    while let Some(rest) = data.get(at..) {
        match decode(rest, dir) {
            Ok(Decoded::Frame { frame, len }) => {
                assert!(len >= HEADER_LEN && len <= rest.len());
                let header = FrameHeader::parse(rest).expect("a decoded frame has a header");
                assert_eq!(header.frame_len(), len);
                let again = frame.to_vec().expect("decoded frames re-encode");
                assert_eq!(Frame::parse_frame(&again, dir), Ok(frame), "round trip");
                // Types whose bodies are fully kept re-encode byte for byte.
                let lossless = !matches!(
                    frame.ty(),
                    FrameType::KeepAlive
                        | FrameType::NotePreferred
                        | FrameType::Ping
                        | FrameType::Pong
                        | FrameType::PeerGone
                        | FrameType::PeerPresent
                        | FrameType::Restarting
                );
                if lossless {
                    assert_eq!(&again[..], &rest[..len]);
                }
                each(frame);
                at += len;
            }
            Ok(Decoded::Incomplete { needed }) => {
                assert!(needed > 0);
                return;
            }
            Err(e) => {
                if let Some(skip) = e.skip_len() {
                    assert!(skip <= rest.len(), "skippable errors are fully buffered");
                }
                return;
            }
        }
    }
}

fn key(b: u8) -> NodePrivate {
    NodePrivate::from_bytes([b; 32])
}

/// An arbitrary origin for synthetic time.
#[allow(clippy::disallowed_methods)]
fn origin() -> Instant {
    Instant::now()
}

/// Server-side decode of client frames, each applied to a registry as the server
/// would: a connection without the mesh key must never gain mesh powers, and the
/// registry's indexes stay consistent.
pub fn frame_server(data: &[u8]) {
    // Key derivation is slow; do it once per process.
    static KEYS: OnceLock<(NodePublic, Vec<NodePublic>)> = OnceLock::new();
    let (server_key, keys) = KEYS.get_or_init(|| {
        (
            key(0xee).public(),
            (1..=3).map(|b| key(b).public()).collect(),
        )
    });
    let t0 = origin();
    let mut reg: Registry<u8, u8> = Registry::new(*server_key);
    // Connection 0 is the fuzzed one, without the mesh key; 1 and 2 are bystanders.
    let ids: Vec<u64> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let new = NewConn {
                key: *k,
                handle: i as u8,
                endpoint: None,
                can_mesh: i == 2,
                is_prober: false,
            };
            reg.register(new).0
        })
        .collect();
    let me = ids[0];
    // One outbound mesh link; the fuzzed ClosePeer frames double as its watch stream
    // (toggling a forwarder for that key), NotePreferred(false) as a reconnect.
    let mut link_no = 0u8;
    let mut link = reg.add_link(link_no);
    let mut forwarded = std::collections::HashSet::new();
    let mut step = 0u64;
    decode_stream(data, Direction::ClientToServer, |frame| {
        step += 1;
        let now = t0 + Duration::from_millis(step * 100);
        match frame {
            Frame::SendPacket(p) => {
                assert!(p.packet.len() <= crate::wire::derp::MAX_PACKET_SIZE);
                match reg.route(now, me, &p.dst) {
                    Route::Deliver(h) => assert!(keys.get(usize::from(h)) == Some(&p.dst)),
                    Route::Forward(l) => {
                        assert_eq!(l, link_no);
                        assert!(!keys.contains(&p.dst) && forwarded.contains(&p.dst));
                    }
                    Route::NotHere { .. } => {
                        assert!(!keys.contains(&p.dst) && !forwarded.contains(&p.dst))
                    }
                    Route::SenderGone => panic!("the sender is registered"),
                }
            }
            Frame::ForwardPacket(p) => assert!(reg.forward(me, &p.dst).is_err()),
            Frame::WatchConns(_) => assert!(reg.watch_conns(me).is_err()),
            Frame::ClosePeer(c) => {
                assert!(reg.close_peer(me, &c.peer).is_err());
                if forwarded.remove(&c.peer) {
                    let fx = reg.remove_forwarder(link, &c.peer);
                    assert!(fx.peer_gone.len() <= 1);
                } else {
                    assert!(reg.add_forwarder(link, &c.peer));
                    forwarded.insert(c.peer);
                }
            }
            Frame::NotePreferred(n) => {
                reg.note_preferred(me, n.preferred);
                if !n.preferred {
                    reg.remove_link(link);
                    forwarded.clear();
                    link_no = link_no.wrapping_add(1);
                    link = reg.add_link(link_no);
                }
            }
            _ => {}
        }
        assert!(reg.check_invariants());
    });
    assert_eq!(reg.forwarded_keys(), forwarded.len());
    assert_eq!(reg.watchers(), 0);
    assert_eq!(reg.len(), 3);
    assert!(reg.unregister(me).peer_gone.len() <= 2);
    assert!(reg.check_invariants());
}

/// A logged-in client session with fixed keys.
fn established_session(t0: Instant) -> ClientSession {
    let (server, client) = (key(0x51), key(0xc1));
    let mut s = ClientSession::new(t0, client.clone(), ClientSessionConfig::default(), [1; 24]);
    let greeting = server_key_frame(&server.public());
    let f = Frame::parse_frame(&greeting, Direction::ServerToClient).expect("valid greeting");
    s.handle_frame(t0, f).expect("greeting accepted");
    let reply = server_info_frame(&server, &client.public(), [2; 24]).expect("sealed");
    let f = Frame::parse_frame(&reply, Direction::ServerToClient).expect("valid reply");
    s.handle_frame(t0, f).expect("login accepted");
    assert!(s.is_established());
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    s
}

/// Client-side decode of server frames, fed to a logged-in session with timers in
/// between; everything the session writes back must be valid client frames.
pub fn frame_client(data: &[u8]) {
    // The login costs several X25519 operations; do it once per process.
    static SESSION: OnceLock<(Instant, ClientSession)> = OnceLock::new();
    let (t0, session) = SESSION.get_or_init(|| {
        let t0 = origin();
        (t0, established_session(t0))
    });
    let (t0, mut session) = (*t0, session.clone());
    let mut step = 0u64;
    let mut alive = true;
    decode_stream(data, Direction::ServerToClient, |frame| {
        if !alive {
            return;
        }
        step += 1;
        let now = t0 + Duration::from_millis(step * 997);
        match session.handle_frame(now, frame) {
            Ok(Some(ClientEvent::Packet(p))) => {
                assert!(matches!(frame, Frame::RecvPacket(r) if r == p))
            }
            Ok(_) => {}
            Err(_) => panic!("an established session accepts any server frame"),
        }
        if session.handle_timeout(now).is_err() {
            alive = false;
        }
        let mut out = Vec::new();
        session.poll_transmit(&mut out);
        decode_stream(&out, Direction::ClientToServer, |f| {
            assert!(matches!(
                f,
                Frame::Pong(_) | Frame::Ping(_) | Frame::NotePreferred(_)
            ));
        });
    });
}

/// Both logins with arbitrary bytes. Server: `data` as a ClientInfo body must not
/// open (nobody can seal to our key without a client private key), and any JSON the
/// parser accepts round-trips. Client: `data` split into a ServerKey and a ServerInfo
/// body; the session is only established if the box opened with the announced key.
pub fn login(data: &[u8]) {
    let server = key(0x51);
    let mesh = MeshKey::new("fuzz-mesh-key");
    if let Ok(frame) = Frame::parse(FrameType::ClientInfo, data, Direction::ClientToServer)
        && let Ok(ok) = accept_client_info(&server, mesh.as_ref(), &frame)
    {
        assert_eq!(
            ClientInfo::from_json(&ok.info.to_json()).as_ref(),
            Ok(&ok.info)
        );
        assert!(!ok.can_mesh || ok.info.mesh_key.as_deref() == Some("fuzz-mesh-key"));
    }
    if let Ok(info) = ClientInfo::from_json(data) {
        assert_eq!(ClientInfo::from_json(&info.to_json()), Ok(info));
    }
    if let Ok(info) = ServerInfo::from_json(data) {
        assert_eq!(ServerInfo::from_json(&info.to_json()), Ok(info));
    }

    let t0 = origin();
    let cut = usize::from(data.first().copied().unwrap_or(0)).min(data.len());
    let (first, second) = data.split_at(cut);
    let mut s = ClientSession::new(t0, key(0xc1), ClientSessionConfig::default(), [1; 24]);
    let Ok(greeting) = Frame::parse(FrameType::ServerKey, first, Direction::ServerToClient) else {
        return;
    };
    if s.handle_frame(t0, greeting).is_err() {
        return;
    }
    let mut out = Vec::new();
    s.poll_transmit(&mut out);
    // What the client sent opens with the announced server key only if we hold it.
    if let (Ok(Frame::ClientInfo(ci)), Frame::ServerKey(sk)) = (
        Frame::parse_frame(&out, Direction::ClientToServer),
        greeting,
    ) && sk.key == server.public()
    {
        assert!(ClientInfo::open(&server, &ci.key, ci.sealed).is_ok());
    }
    if let Ok(reply) = Frame::parse(FrameType::ServerInfo, second, Direction::ServerToClient)
        && s.handle_frame(t0, reply).is_ok()
    {
        assert!(s.is_established());
        assert!(s.server_key().is_some());
    }
}
