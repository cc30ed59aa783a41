//! The DERP relay end to end: a real server on 127.0.0.1:0, library clients and
//! hand-driven raw clients.

mod derp_support;

use agentwire::proto::derp::server::DropReason;
use agentwire::runtime::clock;
use agentwire::runtime::derp::DerpSendError;
use agentwire::services::derp::DerpServerConfig;
use agentwire::wire::derp::{ClosePeer, MAX_PACKET_SIZE};
use agentwire::wire::derp::{
    Direction, Frame, FrameType, PeerGoneReason, PeerPresentFlags, SendPacket, WatchConns,
};
use agentwire::wire::key::NodePrivate;
use derp_support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn parse(b: &[u8]) -> Frame<'_> {
    Frame::parse_frame(b, Direction::ServerToClient).unwrap()
}

async fn relay_both_ways(a: &mut Peer, b: &mut Peer) {
    a.client.send(b.public(), b"hello b").unwrap();
    let got = b.recv().await;
    assert_eq!(
        (got.src, &got.packet[..], got.region),
        (a.public(), &b"hello b"[..], 7)
    );
    b.client.send(a.public(), b"hello a").unwrap();
    let got = a.recv().await;
    assert_eq!((got.src, &got.packet[..]), (b.public(), &b"hello a"[..]));
}

#[tokio::test]
async fn relays_over_upgrade_websocket_and_mixed() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    for (ws_a, ws_b) in [(false, false), (true, true), (false, true)] {
        let mut a = peer(&srv.url(), ws_a).await;
        let mut b = peer(&srv.url(), ws_b).await;
        assert_eq!(
            a.client.status().transport,
            Some(if ws_a { "websocket" } else { "upgrade" })
        );
        assert_eq!(
            b.client.status().transport,
            Some(if ws_b { "websocket" } else { "upgrade" })
        );
        relay_both_ways(&mut a, &mut b).await;
        // A burst of full-size packets arrives whole and in order.
        let big: Vec<Vec<u8>> = (0..50u8).map(|i| vec![i; MAX_PACKET_SIZE]).collect();
        for p in &big {
            a.client.send(b.public(), p).unwrap();
        }
        for p in &big {
            assert_eq!(&b.recv().await.packet[..], &p[..]);
        }
        a.client.shutdown().await;
        b.client.shutdown().await;
    }
    let s = srv.stats();
    assert_eq!(s.counters.logins, 6);
    assert_eq!(s.counters.accepts_websocket, 3);
    assert!(s.counters.packets_relayed >= 6 * 51 / 2);
    assert_eq!(s.counters.dropped(DropReason::QueueFull), 0);
    srv.stop().await;
}

#[tokio::test]
async fn home_region_is_noted() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let a = peer(&srv.url(), false).await;
    eventually("NotePreferred counted", || srv.stats().home_clients == 1).await;
    a.client.shutdown().await;
    eventually("client gone", || srv.stats().clients == 0).await;
    srv.stop().await;
}

#[tokio::test]
async fn second_connection_with_the_same_key_replaces_the_first() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let key = NodePrivate::generate();
    let mut first = Raw::login(srv.addr, Some(key.clone()), None).await;
    let mut second = Raw::login(srv.addr, Some(key.clone()), None).await;
    first.expect_closed().await;
    let mut sender = Raw::login(srv.addr, None, None).await;
    sender
        .send(Frame::SendPacket(SendPacket {
            dst: key.public(),
            packet: b"to the newest",
        }))
        .await;
    let got = second.recv().await.unwrap();
    let Frame::RecvPacket(p) = parse(&got) else {
        panic!("{:?}", parse(&got))
    };
    assert_eq!((p.src, p.packet), (sender.public(), &b"to the newest"[..]));
    let s = srv.stats();
    assert_eq!((s.counters.replaced, s.clients), (1, 2));
    srv.stop().await;
}

#[tokio::test]
async fn absent_peers_get_rate_limited_peer_gone_not_here() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let mut a = Raw::login(srv.addr, None, None).await;
    let nobody = NodePrivate::generate().public();
    for _ in 0..10 {
        a.send(Frame::SendPacket(SendPacket {
            dst: nobody,
            packet: b"x",
        }))
        .await;
    }
    a.send(Frame::Ping(agentwire::wire::derp::Ping {
        data: *b"syncsync",
    }))
    .await;
    let mut gone = 0;
    loop {
        let f = a.recv().await.expect("closed");
        match parse(&f) {
            Frame::PeerGone(g) => {
                assert_eq!((g.peer, g.reason()), (nobody, PeerGoneReason::NotHere));
                gone += 1;
            }
            Frame::Pong(p) if &p.data == b"syncsync" => break,
            _ => {}
        }
    }
    assert_eq!(gone, 3, "burst of 3, then 1 per second");
    let s = srv.stats();
    assert_eq!(s.counters.dropped(DropReason::NoSuchPeer), 10);
    assert_eq!(s.counters.peer_gone_not_here, 3);
    srv.stop().await;
}

#[tokio::test]
async fn library_client_surfaces_peer_gone() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let a = peer(&srv.url(), false).await;
    let mut b = peer(&srv.url(), false).await;
    // NotHere for a key nobody has.
    let nobody = NodePrivate::generate().public();
    a.client.send(nobody, b"anyone?").unwrap();
    within("PeerGone(NotHere)", async {
        while a.client.status().last_peer_gone != Some((nobody, PeerGoneReason::NotHere)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    // Disconnected for a peer we exchanged packets with.
    a.client.send(b.public(), b"hi").unwrap();
    b.recv().await;
    let b_key = b.public();
    b.client.shutdown().await;
    within("PeerGone(Disconnected)", async {
        while a.client.status().last_peer_gone != Some((b_key, PeerGoneReason::Disconnected)) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(srv.stats().counters.peer_gone_disconnected, 1);
    srv.stop().await;
}

#[tokio::test]
async fn full_queue_drops_the_oldest_packets() {
    const DEPTH: usize = 8;
    const N: u32 = 1000;
    let cfg = DerpServerConfig {
        queue_depth: DEPTH,
        // Long enough that the stalled receiver is not cut off during the test.
        write_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let mut rx = Raw::login_with(srv.addr, None, None, Some(4096)).await;
    let mut tx = Raw::login(srv.addr, None, None).await;
    // The receiver stops reading. Feed it 64 KiB fillers one round trip at a time, so
    // its writer keeps up, until the queue overflows: its socket buffers are full and
    // the writer is stuck.
    let filler = vec![0xffu8; MAX_PACKET_SIZE];
    let mut sent_fillers = 0u32;
    while srv.stats().counters.dropped(DropReason::QueueFull) == 0 {
        assert!(sent_fillers < 1000, "the receiver's socket never filled up");
        tx.send(Frame::SendPacket(SendPacket {
            dst: rx.public(),
            packet: &filler,
        }))
        .await;
        tx.sync().await;
        sent_fillers += 1;
    }
    // Now numbered packets pile up in the blocked client's queue.
    for i in 0..N {
        let mut packet = vec![0u8; 100];
        packet[..4].copy_from_slice(&i.to_be_bytes());
        tx.send(Frame::SendPacket(SendPacket {
            dst: rx.public(),
            packet: &packet,
        }))
        .await;
    }
    tx.sync().await;
    let dropped = srv.stats().counters.dropped(DropReason::QueueFull);
    let (mut fillers, mut numbered) = (0u32, vec![]);
    while numbered.last() != Some(&(N - 1)) {
        let f = rx.recv().await.expect("receiver closed");
        match parse(&f) {
            Frame::RecvPacket(p) if p.packet.len() == MAX_PACKET_SIZE => fillers += 1,
            Frame::RecvPacket(p) => {
                numbered.push(u32::from_be_bytes(p.packet[..4].try_into().unwrap()))
            }
            _ => {}
        }
    }
    // The writer was stuck the whole time, so of the numbered packets exactly the
    // newest DEPTH survive, in order.
    let tail: Vec<u32> = (N - DEPTH as u32..N).collect();
    assert_eq!(numbered, tail, "after {fillers} of {sent_fillers} fillers");
    // Every packet that did not arrive was counted.
    let lost = u64::from(sent_fillers - fillers) + u64::from(N) - numbered.len() as u64;
    assert_eq!(lost, dropped);
    srv.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_after_the_write_timeout() {
    let cfg = DerpServerConfig {
        queue_depth: 8,
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let slow = Raw::login_with(srv.addr, None, None, Some(4096)).await;
    let slow_key = slow.public();
    let mut tx = Raw::login(srv.addr, None, None).await;
    let packet = vec![0u8; 16 << 10];
    // The last time the server managed to write to the slow client.
    let (mut relayed, mut progress) = (0, clock::now());
    let cut = within("slow client cut off", async {
        loop {
            for _ in 0..8 {
                tx.send(Frame::SendPacket(SendPacket {
                    dst: slow_key,
                    packet: &packet,
                }))
                .await;
            }
            let s = srv.stats().counters;
            if s.packets_relayed != relayed {
                (relayed, progress) = (s.packets_relayed, clock::now());
            }
            if s.dropped(DropReason::WriteTimeout) > 0 {
                return clock::now();
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
    let stalled_for = cut - progress;
    assert!(
        stalled_for >= Duration::from_millis(1800),
        "cut after {stalled_for:?}"
    );
    assert!(
        stalled_for <= Duration::from_millis(3000),
        "cut after {stalled_for:?}"
    );
    eventually("slow client unregistered", || {
        !srv.server.is_connected(&slow_key)
    })
    .await;
    // The sender is unaffected.
    tx.sync().await;
    drop(slow);
    srv.stop().await;
}

#[tokio::test]
async fn oversized_frames_are_refused() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let mut a = Raw::login(srv.addr, None, None).await;
    let b = peer(&srv.url(), false).await;
    // A SendPacket header announcing one byte over the limit: refused from the header.
    let len = (32 + MAX_PACKET_SIZE + 1) as u32;
    let mut hdr = vec![0x04];
    hdr.extend_from_slice(&len.to_be_bytes());
    a.send_bytes(&hdr).await;
    a.expect_closed().await;
    eventually("too_large counted", || {
        srv.stats().counters.dropped(DropReason::TooLarge) == 1
    })
    .await;
    // The library refuses to send one.
    let too_big = vec![0u8; MAX_PACKET_SIZE + 1];
    assert_eq!(
        b.client.send(b.public(), &too_big),
        Err(DerpSendError::TooLarge {
            len: MAX_PACKET_SIZE + 1
        })
    );
    srv.stop().await;
}

#[tokio::test]
async fn garbage_before_login_closes_only_that_connection() {
    let cfg = DerpServerConfig {
        login_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let mut a = peer(&srv.url(), false).await;
    let mut b = peer(&srv.url(), true).await;
    // Text instead of ClientInfo.
    let mut g = raw_upgrade(srv.addr, None).await;
    g.send_bytes(b"hello, is this the relay?\r\n").await;
    g.expect_closed().await;
    // A well-framed but wrong first frame.
    let mut g = raw_upgrade(srv.addr, None).await;
    g.send(Frame::Ping(agentwire::wire::derp::Ping { data: [0; 8] }))
        .await;
    g.expect_closed().await;
    // A ClientInfo whose box does not open.
    let mut g = raw_upgrade(srv.addr, None).await;
    let mut body = vec![0x02, 0, 0, 0, 100];
    body.extend_from_slice(&[7u8; 100]);
    g.send_bytes(&body).await;
    g.expect_closed().await;
    // Silence: the login deadline.
    let mut g = raw_upgrade(srv.addr, None).await;
    g.expect_closed().await;
    eventually("bad logins counted", || {
        srv.stats().counters.dropped(DropReason::BadLogin) == 4
    })
    .await;
    relay_both_ways(&mut a, &mut b).await;
    srv.stop().await;
}

#[tokio::test]
async fn garbage_after_login_closes_only_that_connection() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let mut a = peer(&srv.url(), false).await;
    let mut b = peer(&srv.url(), true).await;
    // Random bytes: almost surely an absurd length.
    let mut g = Raw::login(srv.addr, None, None).await;
    g.send_bytes(&[0x42, 0xff, 0x13, 0x00, 0x99, 1, 2, 3]).await;
    g.expect_closed().await;
    // A SendPacket too short to hold a key.
    let mut g = Raw::login(srv.addr, None, None).await;
    g.send_bytes(&[0x04, 0, 0, 0, 3, 1, 2, 3]).await;
    g.expect_closed().await;
    // An unknown frame type is skipped, not fatal.
    let mut g = Raw::login(srv.addr, None, None).await;
    g.send_bytes(&[0x7e, 0, 0, 0, 2, 1, 2]).await;
    g.sync().await;
    let s = srv.stats().counters;
    assert_eq!(s.dropped(DropReason::TooLarge), 1);
    assert_eq!(s.dropped(DropReason::Malformed), 1);
    assert_eq!(s.dropped(DropReason::UnknownFrame), 1);
    relay_both_ways(&mut a, &mut b).await;
    srv.stop().await;
}

#[tokio::test]
async fn websocket_text_messages_close_the_connection() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest};
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let mut req = format!("ws://{}/derp", srv.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Sec-WebSocket-Protocol", "derp".parse().unwrap());
    let (mut ws, _) = within("ws connect", tokio_tungstenite::connect_async(req))
        .await
        .unwrap();
    let Some(Ok(Message::Binary(greeting))) = within("greeting", ws.next()).await else {
        panic!()
    };
    assert_eq!(parse(&greeting).ty(), FrameType::ServerKey);
    ws.send(Message::Text("hello".into())).await.unwrap();
    within("ws close", async {
        while let Some(Ok(m)) = ws.next().await {
            assert!(!matches!(m, Message::Binary(_)), "no more frames expected");
        }
    })
    .await;
    srv.stop().await;
}

#[tokio::test]
async fn plain_get_is_426_and_latency_check_is_200() {
    let srv = TestServer::start(DerpServerConfig::default()).await;
    let get = |req: String| async move {
        let mut s = tokio::net::TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = String::new();
        within("http response", s.read_to_string(&mut out))
            .await
            .unwrap();
        out
    };
    let r = get("GET /derp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into()).await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    let r =
        get("GET /derp HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: close\r\n\r\n".into())
            .await;
    assert!(r.starts_with("HTTP/1.1 426"), "{r}");
    let r = get("GET /derp/latency-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into())
        .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    let r = get("HEAD /derp/latency-check HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".into())
        .await;
    assert!(r.starts_with("HTTP/1.1 200"), "{r}");
    srv.stop().await;
}

#[tokio::test]
async fn mesh_frames_need_the_mesh_key() {
    let mesh = "ab".repeat(32);
    let cfg = DerpServerConfig {
        mesh_key: Some(mesh.clone()),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let regulars: Vec<Raw> = {
        let mut v = vec![];
        for _ in 0..3 {
            v.push(Raw::login(srv.addr, None, None).await);
        }
        v
    };
    // Without the key (or with a wrong one): closed.
    for presented in [None, Some("cd".repeat(32))] {
        let mut intruder = Raw::login(srv.addr, None, presented.as_deref()).await;
        intruder.send(Frame::WatchConns(WatchConns)).await;
        intruder.expect_closed().await;
    }
    let mut intruder = Raw::login(srv.addr, None, None).await;
    intruder
        .send(Frame::ClosePeer(ClosePeer {
            peer: regulars[0].public(),
        }))
        .await;
    intruder.expect_closed().await;
    assert_eq!(srv.stats().counters.dropped(DropReason::MeshDenied), 3);
    assert!(srv.server.is_connected(&regulars[0].public()));

    // With the key: a flood of PeerPresent for everyone connected, then changes.
    let mut watcher = Raw::login(srv.addr, None, Some(&mesh)).await;
    watcher.send(Frame::WatchConns(WatchConns)).await;
    let mut present = std::collections::HashSet::new();
    while present.len() < 4 {
        let f = watcher.recv().await.unwrap();
        let Frame::PeerPresent(p) = parse(&f) else {
            continue;
        };
        assert!(p.endpoint.is_some_and(|e| e.ip().is_loopback()));
        if p.key == watcher.public() {
            assert!(p.flags.unwrap().contains(PeerPresentFlags::MESH_PEER));
        }
        present.insert(p.key);
    }
    assert!(regulars.iter().all(|r| present.contains(&r.public())));
    let newcomer = Raw::login(srv.addr, None, None).await;
    let f = watcher.recv().await.unwrap();
    assert!(matches!(parse(&f), Frame::PeerPresent(p) if p.key == newcomer.public()));
    // ClosePeer with the key closes the target, and the watcher hears it left.
    let mut target = newcomer;
    watcher
        .send(Frame::ClosePeer(ClosePeer {
            peer: target.public(),
        }))
        .await;
    target.expect_closed().await;
    let f = watcher.recv().await.unwrap();
    assert!(matches!(parse(&f), Frame::PeerGone(g) if g.peer == target.public()));
    assert_eq!(srv.stats().watchers, 1);
    srv.stop().await;
}
