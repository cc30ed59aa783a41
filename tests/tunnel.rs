//! Two tunnels on loopback UDP: TCP and UDP through real sockets, both directions.

#![allow(clippy::disallowed_methods)]

use agentwire::netstack::NetstackConfig;
use agentwire::proto::wg::PeerConfig;
use agentwire::runtime::{Tunnel, TunnelConfig};
use agentwire::wire::key::NodePrivate;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn pair_configs(a_addr: &str, b_addr: &str) -> (TunnelConfig, TunnelConfig) {
    let ka = NodePrivate::generate();
    let kb = NodePrivate::generate();
    let a = TunnelConfig {
        private: ka.clone(),
        netstack: NetstackConfig {
            addresses: vec![a_addr.parse().unwrap()],
            ..Default::default()
        },
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![],
    };
    let mut b = a.clone();
    b.private = kb;
    b.netstack.addresses = vec![b_addr.parse().unwrap()];
    (a, b)
}

async fn start_pair(a_addr: &str, b_addr: &str) -> (Tunnel, Tunnel) {
    let (ca, cb) = pair_configs(a_addr, b_addr);
    let (pa, pb) = (ca.private.public(), cb.private.public());
    let a = Tunnel::start(ca).unwrap();
    let b = Tunnel::start(cb).unwrap();
    let mut peer_b = PeerConfig::new(pb);
    peer_b.allowed_ips = vec![
        format!("{b_addr}/{}", if b_addr.contains(':') { 128 } else { 32 })
            .parse()
            .unwrap(),
    ];
    peer_b.endpoint = Some(b.local_udp_addr());
    a.upsert_peer(peer_b).await.unwrap();
    let mut peer_a = PeerConfig::new(pa);
    peer_a.allowed_ips = vec![
        format!("{a_addr}/{}", if a_addr.contains(':') { 128 } else { 32 })
            .parse()
            .unwrap(),
    ];
    b.upsert_peer(peer_a).await.unwrap();
    (a, b)
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    let mut x = u32::from(seed) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

async fn echo_transfer(a: &Tunnel, b: &Tunnel, b_ip: &str, size: usize) {
    let listener = b.listen_tcp(7000).unwrap();
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let (mut r, mut w) = tokio::io::split(&mut s);
        tokio::io::copy(&mut r, &mut w).await.unwrap();
        w.shutdown().await.unwrap();
        drop(listener);
    });
    let addr: SocketAddr = SocketAddr::new(b_ip.parse().unwrap(), 7000);
    let stream = tokio::time::timeout(Duration::from_secs(10), a.dial_tcp(addr))
        .await
        .unwrap()
        .unwrap();
    let data = pattern(size, 3);
    let (mut r, mut w) = tokio::io::split(stream);
    let d2 = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&d2).await.unwrap();
        w.shutdown().await.unwrap();
    });
    let mut back = Vec::with_capacity(size);
    tokio::time::timeout(Duration::from_secs(60), r.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    writer.await.unwrap();
    server.await.unwrap();
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_ipv4_several_megabytes() {
    let (a, b) = start_pair("10.10.0.1", "10.10.0.2").await;
    echo_transfer(&a, &b, "10.10.0.2", 8 << 20).await;
    let (stats, _) = a.peer_stats(b.public()).await.unwrap().unwrap();
    assert!(stats.tx_bytes > 8 << 20);
    assert!(stats.last_handshake.is_some());
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_echo_ipv6() {
    let (a, b) = start_pair("fd7a:115c:a1e0::1", "fd7a:115c:a1e0::2").await;
    echo_transfer(&a, &b, "fd7a:115c:a1e0::2", 4 << 20).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_both_ways() {
    let (a, b) = start_pair("10.11.0.1", "10.11.0.2").await;
    let sb = b.bind_udp(5353).unwrap();
    let sa = a.bind_udp(0).unwrap();
    sa.send_to(b"ping", "10.11.0.2:5353".parse().unwrap())
        .await
        .unwrap();
    let mut buf = [0u8; 100];
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sb.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"ping");
    sb.send_to(b"pong", from).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), sa.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf[..n], b"pong");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_unreachable() {
    let (a, _b) = start_pair("10.12.0.1", "10.12.0.2").await;
    let err = tokio::time::timeout(
        Duration::from_secs(10),
        a.dial_tcp("10.12.0.2:9".parse().unwrap()),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
    // No peer owns this address: the SYN is dropped, the dial times out.
    let r = tokio::time::timeout(
        Duration::from_millis(300),
        a.dial_tcp("10.99.0.2:80".parse().unwrap()),
    )
    .await;
    assert!(r.is_err());
    let stats = a.stats().await.unwrap();
    assert!(
        stats
            .driver
            .drops
            .iter()
            .any(|(n, c)| *n == "no_route" && *c > 0)
    );
    assert_eq!(
        stats.netstack.tcp_sockets, 0,
        "cancelled dial freed its socket"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_fails_open_sockets_instead_of_hanging() {
    let (a, b) = start_pair("10.13.0.1", "10.13.0.2").await;
    let listener = b.listen_tcp(80).unwrap();
    let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
    let s = a.bind_udp(0).unwrap();
    let recv = tokio::spawn(async move {
        let mut buf = [0u8; 10];
        s.recv_from(&mut buf).await.map(|_| ())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.shutdown().await;
    a.shutdown().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(5), accept)
            .await
            .unwrap()
            .unwrap()
            .is_err()
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(5), recv)
            .await
            .unwrap()
            .unwrap()
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_tcp_and_udp_both_ways() {
    use agentwire::services::forward::{self, Mapping};
    let (a, b) = start_pair("10.14.0.1", "10.14.0.2").await;
    let (a, b) = (std::sync::Arc::new(a), std::sync::Arc::new(b));
    // Kernel echo servers on B's side, reached through B's remote mappings.
    let udp_echo = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let udp_echo_addr = udp_echo.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = udp_echo.recv_from(&mut buf).await {
            let _ = udp_echo.send_to(&buf[..n], from).await;
        }
    });
    let tcp_echo = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tcp_echo_addr = tcp_echo.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp_echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let free = || {
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
    };
    let (udp_local, tcp_local) = (
        free(),
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    );
    let (stop_a, stop_b) = (tokio::sync::Notify::new(), tokio::sync::Notify::new());
    let (stop_a, stop_b) = (std::sync::Arc::new(stop_a), std::sync::Arc::new(stop_b));
    let fb = tokio::spawn({
        let (b, stop) = (b.clone(), stop_b.clone());
        async move {
            forward::run(
                b,
                vec![
                    Mapping::RemoteUdp {
                        port: 5353,
                        target: udp_echo_addr,
                    },
                    Mapping::RemoteTcp {
                        port: 7777,
                        target: tcp_echo_addr,
                    },
                ],
                async move { stop.notified().await },
            )
            .await
        }
    });
    let fa = tokio::spawn({
        let (a, stop) = (a.clone(), stop_a.clone());
        async move {
            forward::run(
                a,
                vec![
                    Mapping::Udp {
                        local: udp_local,
                        remote: "10.14.0.2:5353".parse().unwrap(),
                    },
                    Mapping::Tcp {
                        local: tcp_local,
                        remote: "10.14.0.2:7777".parse().unwrap(),
                    },
                ],
                async move { stop.notified().await },
            )
            .await
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // UDP: two clients, each gets its own replies.
    for i in 0..2u8 {
        let c = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut got = None;
        for _ in 0..20 {
            c.send_to(&[i; 100], udp_local).await.unwrap();
            let mut buf = [0u8; 200];
            if let Ok(Ok((n, _))) =
                tokio::time::timeout(Duration::from_millis(250), c.recv_from(&mut buf)).await
            {
                got = Some(buf[..n].to_vec());
                break;
            }
        }
        assert_eq!(got, Some(vec![i; 100]), "udp echo through the tunnel");
    }
    // TCP.
    let mut s = tokio::net::TcpStream::connect(tcp_local).await.unwrap();
    s.write_all(b"tcp through forward").await.unwrap();
    let mut back = vec![0u8; 19];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"tcp through forward");
    stop_a.notify_one();
    stop_b.notify_one();
    fa.await.unwrap().unwrap();
    fb.await.unwrap().unwrap();
}
