//! The relay's server-wide limits, each by performing the attack it stops: connections
//! held open from one source, logins never finished, keys the operator did not admit, and
//! receivers that never read while senders flood them.

mod derp_support;

use agentwire::proto::derp::server::DropReason;
use agentwire::services::derp::{Admission, DerpServerConfig};
use agentwire::wire::derp::{ClientInfo, ClientInfoFrame, Direction, Frame, SendPacket};
use agentwire::wire::key::NodePrivate;
use derp_support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The status line of a plain upgrade request.
async fn upgrade_status(addr: std::net::SocketAddr) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!(
        "GET /derp HTTP/1.1\r\nHost: {addr}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 512];
    let n = within("status line", s.read(&mut buf)).await.unwrap_or(0);
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or("")
        .to_string()
}

#[tokio::test]
async fn one_source_cannot_hold_every_connection() {
    let cfg = DerpServerConfig {
        max_conns_per_ip: 3,
        limit_loopback: true,
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let held: Vec<Raw> =
        futures_util::future::join_all((0..3).map(|_| raw_upgrade(srv.addr, None))).await;
    let status = upgrade_status(srv.addr).await;
    assert!(
        status.contains("429"),
        "beyond the per-source cap: {status}"
    );
    assert!(srv.stats().counters.dropped(DropReason::PerIpLimit) >= 1);
    drop(held);
    eventually("held connections released", || srv.stats().conns == 0).await;
    let a = peer(&srv.url(), false).await;
    let mut b = peer(&srv.url(), true).await;
    // The first send may race the login completing on the server; retry until through.
    let got = within("relayed after the cap", async {
        loop {
            let _ = a.client.send(b.public(), b"after the cap");
            if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(200), b.rx.recv()).await
            {
                return p;
            }
        }
    })
    .await;
    assert_eq!(&got.packet[..], b"after the cap");
    srv.stop().await;
}

#[tokio::test]
async fn logins_never_finished_are_closed_by_the_deadline() {
    let cfg = DerpServerConfig {
        login_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let mut silent: Vec<Raw> =
        futures_util::future::join_all((0..50).map(|_| raw_upgrade(srv.addr, None))).await;
    for g in &mut silent {
        g.expect_closed().await;
    }
    eventually("no connection left", || srv.stats().conns == 0).await;
    srv.stop().await;
}

#[tokio::test]
async fn keys_not_admitted_cannot_relay() {
    let admitted = NodePrivate::generate();
    let allowed = admitted.public();
    let cfg = DerpServerConfig {
        admission: Some(Admission::new(move |k| *k == allowed)),
        admit_wait: Duration::from_millis(200),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let mut a = Raw::login(srv.addr, Some(admitted), None).await;
    // An unknown key: the login is refused and nothing it sends reaches `a`.
    let mut stranger = raw_upgrade(srv.addr, None).await;
    stranger.login_refused().await;
    eventually("refusal counted", || {
        srv.stats().counters.dropped(DropReason::NotAdmitted) >= 1
    })
    .await;
    a.sync().await;
    srv.stop().await;
}

#[tokio::test]
async fn slow_receivers_cannot_spend_more_than_the_queue_budget() {
    const BUDGET: usize = 256 << 10;
    let cfg = DerpServerConfig {
        queue_budget: BUDGET,
        queue_depth: 4096,
        write_timeout: Duration::from_secs(30),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    // Receivers with tiny socket buffers that never read.
    let sinks: Vec<Raw> = futures_util::future::join_all(
        (0..4).map(|_| Raw::login_with(srv.addr, None, None, Some(4096))),
    )
    .await;
    let mut sender = Raw::login(srv.addr, None, None).await;
    let payload = vec![0x5a; 1200];
    let mut peak = 0usize;
    for round in 0..4000 {
        for s in &sinks {
            sender
                .send(Frame::SendPacket(SendPacket {
                    dst: s.public(),
                    packet: &payload,
                }))
                .await;
        }
        if round % 200 == 0 {
            sender.sync().await;
            peak = peak.max(srv.stats().queued_bytes);
        }
    }
    sender.sync().await;
    peak = peak.max(srv.stats().queued_bytes);
    println!(
        "queued bytes peak {peak} (budget {BUDGET}), dropped for budget {}",
        srv.stats().counters.dropped(DropReason::BudgetFull)
    );
    assert!(peak <= BUDGET, "queued {peak} > budget {BUDGET}");
    assert!(srv.stats().counters.dropped(DropReason::BudgetFull) > 0);
    drop(sinks);
    eventually("budget returned", || srv.stats().queued_bytes == 0).await;
    srv.stop().await;
}

trait LoginRefused {
    async fn send_login(&mut self);
    async fn login_refused(&mut self);
}

impl LoginRefused for Raw {
    /// Sends a well-formed login for this client's key and waits for the close.
    async fn login_refused(&mut self) {
        self.send_login().await;
        self.expect_closed().await;
    }

    /// Reads the server's key and sends a well-formed login for this client's key.
    async fn send_login(&mut self) {
        let greeting = self.recv().await.expect("ServerKey");
        let Ok(Frame::ServerKey(sk)) = Frame::parse_frame(&greeting, Direction::ServerToClient)
        else {
            panic!("first frame is not ServerKey")
        };
        let info = ClientInfo {
            version: 2,
            mesh_key: None,
            can_ack_pings: true,
            is_prober: false,
        };
        let sealed = info.seal(&self.key, &sk.key, rand::random()).expect("seal");
        self.send(Frame::ClientInfo(ClientInfoFrame {
            key: self.key.public(),
            sealed: &sealed,
        }))
        .await;
    }
}

#[tokio::test]
async fn a_login_waiting_for_admission_ends_when_its_client_leaves() {
    let cfg = DerpServerConfig {
        admission: Some(Admission::new(|_| false)),
        admit_wait: Duration::from_secs(60),
        ..Default::default()
    };
    let srv = TestServer::start(cfg).await;
    let mut stranger = raw_upgrade(srv.addr, None).await;
    stranger.send_login().await;
    // Bytes sent while waiting are read and kept, not taken for a close.
    stranger
        .send(Frame::SendPacket(SendPacket {
            dst: NodePrivate::generate().public(),
            packet: b"early",
        }))
        .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(srv.stats().counters.dropped(DropReason::NotAdmitted), 0);
    let t = agentwire::runtime::clock::now();
    drop(stranger);
    // Let go at once, not when the minute of admission wait is over.
    eventually("refusal counted", || {
        srv.stats().counters.dropped(DropReason::NotAdmitted) >= 1
    })
    .await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    srv.stop().await;
}

#[tokio::test]
async fn the_embedded_relay_serves_only_registered_nodes() {
    use agentwire::services::serve::{ServeConfig, Server};
    let tmp = tempfile::tempdir().unwrap();
    let server = Server::start(ServeConfig {
        relay_only: true,
        ..ServeConfig::loopback(tmp.path().join("state"))
    })
    .await
    .unwrap();
    assert!(server.wait_ready(Duration::from_secs(10)).await);
    // The server's own tailnet and the demo agent are registered, so they are on the relay.
    eventually("registered nodes admitted", || {
        server.hub().derp().stats().conns >= 2
    })
    .await;
    // A key nobody registered waits out the admission window and is turned away.
    let mut stranger = raw_upgrade(server.addr, None).await;
    stranger.login_refused().await;
    let derp = server.hub().derp();
    assert!(derp.stats().counters.dropped(DropReason::NotAdmitted) >= 1);
    server.shutdown().await;
}
