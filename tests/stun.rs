//! `serve`'s STUN server as a node meets it: the DERP map the coordinator hands out names
//! its port, a binding request sent there is answered with the node's own address, and
//! `/metrics` counts it. Without STUN, or with one only loopback can reach, the map says
//! -1; a taken default port is a warning, a taken explicit one an error.

use agentwire::runtime::coord::{CoordClient, CoordClientConfig, CoordEvent};
use agentwire::services::serve::{ServeConfig, ServeError, Server};
use agentwire::wire::addr::NodeId;
use agentwire::wire::stun;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "stun-test-user-token-0123456789abcdef";
const BOUND: Duration = Duration::from_secs(20);

fn config(dir: &std::path::Path, stun_listen: Option<SocketAddr>) -> ServeConfig {
    ServeConfig {
        token: Some(TOKEN.into()),
        stun_listen,
        ..ServeConfig::loopback(dir.join("state"))
    }
}

/// `GET path` over plain HTTP/1.1; the body.
async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(BOUND, s.read_to_end(&mut out))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8_lossy(&out).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default()
}

/// The DERP map a node receives in the coordinator's welcome.
async fn welcome_map(server: &Server) -> serde_json::Value {
    let (tx, mut rx) = tokio::sync::mpsc::channel(16);
    let coord = CoordClient::spawn(
        CoordClientConfig {
            url: server.public_url.clone(),
            token: TOKEN.into(),
            id: NodeId::random(),
            name: "stun-test".into(),
            tls: Default::default(),
        },
        tx,
    );
    let map = tokio::time::timeout(BOUND, async {
        loop {
            match rx.recv().await {
                Some(CoordEvent::Connected { derp_map }) => break derp_map,
                Some(_) => {}
                None => break None,
            }
        }
    })
    .await
    .expect("welcome in time")
    .expect("the welcome carries a DERP map");
    coord.shutdown().await;
    map
}

fn stun_port(map: &serde_json::Value) -> i64 {
    map["Regions"]["999"]["Nodes"][0]["STUNPort"]
        .as_i64()
        .unwrap_or(0)
}

#[tokio::test]
async fn serve_answers_stun_on_the_port_its_derp_map_names() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(
        tmp.path(),
        Some("127.0.0.1:0".parse().expect("addr")),
    ))
    .await
    .expect("serve starts");
    let at = server.stun_addr().expect("a STUN server runs");
    assert_ne!(at.port(), 0);

    let port = i64::from(at.port());
    assert_eq!(stun_port(&welcome_map(&server).await), port);
    let http_map: serde_json::Value =
        serde_json::from_str(&get(server.addr, "/api/v0/derp-map").await).expect("map JSON");
    assert_eq!(stun_port(&http_map), port);

    // A node asks at the advertised host and port, as it would from the map.
    let host = http_map["Regions"]["999"]["Nodes"][0]["IPv4"]
        .as_str()
        .expect("IPv4 literal")
        .to_string();
    let to = SocketAddr::new(host.parse().expect("IP"), at.port());
    let node = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let txid = [0x5a; 12];
    let mut buf = [0u8; 256];
    let mut answer = None;
    // UDP: retry as a client would.
    for _ in 0..5 {
        node.send_to(&stun::binding_request(&txid), to)
            .await
            .expect("send");
        if let Ok(Ok((n, _))) =
            tokio::time::timeout(Duration::from_secs(1), node.recv_from(&mut buf)).await
        {
            answer = Some(stun::parse(&buf[..n]));
            break;
        }
    }
    assert_eq!(
        answer,
        Some(Ok(stun::Message::BindingSuccess {
            txid,
            mapped: Some(node.local_addr().expect("addr"))
        }))
    );
    node.send_to(b"garbage", to).await.expect("send");

    let metrics = tokio::time::timeout(BOUND, async {
        loop {
            let m = get(server.addr, "/metrics").await;
            if m.contains("agentwire_stun_malformed_total 1") {
                break m;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the garbage is counted");
    assert!(
        metrics.contains("agentwire_stun_requests_total "),
        "{metrics}"
    );
    assert!(
        metrics.contains("agentwire_stun_rate_limited_total 0"),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn without_stun_the_map_says_so_and_a_taken_port_is_handled() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(config(tmp.path(), None))
        .await
        .expect("serve starts");
    assert_eq!(server.stun_addr(), None);
    assert_eq!(stun_port(&welcome_map(&server).await), -1);
    let metrics = get(server.addr, "/metrics").await;
    assert!(!metrics.contains("agentwire_stun_"), "{metrics}");
    server.shutdown().await;

    let taken = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let busy = taken.local_addr().expect("addr");
    // Asked for explicitly: refuse to start.
    let tmp = tempfile::tempdir().expect("tempdir");
    match Server::start(config(tmp.path(), Some(busy))).await {
        Err(ServeError::Stun { addr, .. }) => assert_eq!(addr, busy),
        other => panic!("expected a STUN bind error, got {other:?}"),
    }
    // The default: start without STUN, and say so in /healthz.
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(ServeConfig {
        stun_optional: true,
        ..config(tmp.path(), Some(busy))
    })
    .await
    .expect("serve starts without STUN");
    assert_eq!(server.stun_addr(), None);
    assert_eq!(
        stun_port(&serde_json::to_value(&server.hub().derp_map).expect("map")),
        -1
    );
    let health = get(server.addr, "/healthz").await;
    assert!(health.contains("no STUN server"), "{health}");
    server.shutdown().await;

    // Behind a proxy on another name, a loopback STUN socket is not offered to nodes.
    let tmp = tempfile::tempdir().expect("tempdir");
    let server = Server::start(ServeConfig {
        public_url: Some("https://relay.example".into()),
        ..config(tmp.path(), Some("127.0.0.1:0".parse().expect("addr")))
    })
    .await
    .expect("serve starts");
    assert!(server.stun_addr().is_some());
    assert_eq!(
        stun_port(&serde_json::to_value(&server.hub().derp_map).expect("map")),
        -1
    );
    let health = get(server.addr, "/healthz").await;
    assert!(health.contains("--stun-listen 0.0.0.0:"), "{health}");
    server.shutdown().await;
}
