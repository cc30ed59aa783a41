//! Interop with a real WireGuard peer: wireguard-go in a network namespace, kernel TCP

#![allow(clippy::disallowed_methods)]
//! on its side, `agentwire forward` (the real binary) on ours. Bytes are verified both
//! ways, over IPv4 and IPv6 tunnel addresses.

mod common;

use common::netns::{Netns, require};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SIZE: usize = 6 << 20;

fn pattern(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 32);
    let mut block: [u8; 32] = Sha256::digest(b"agentwire").into();
    while out.len() < n {
        block = Sha256::digest(block).into();
        out.extend_from_slice(&block);
    }
    out.truncate(n);
    out
}

fn wg_genkey() -> (String, String) {
    let k = agentwire::wire::key::NodePrivate::generate();
    (k.to_base64(), k.public().to_base64())
}

struct Forward(Child);
impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let start = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "port {port} never opened"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends the pattern through `port`, reads the echo, checks every byte.
fn echo_through(port: u16) {
    let data = pattern(SIZE);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut r = s.try_clone().unwrap();
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        r.read_to_end(&mut got).map(|_| got)
    });
    s.write_all(&data).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = reader.join().unwrap().unwrap();
    assert_eq!(got.len(), data.len(), "echo length");
    assert_eq!(Sha256::digest(&got), Sha256::digest(&data), "echo checksum");
}

#[test]
fn agentwire_forward_interops_with_wireguard_go() {
    if !require(&["wireguard-go", "wg", "python3"]) {
        return;
    }
    let mut ns = Netns::new();
    let iface = format!("wgaw{}", ns.n);
    let dir = tempfile::tempdir().unwrap();
    let (aw_priv, aw_pub) = wg_genkey();
    let (go_priv, go_pub) = wg_genkey();
    let go_key = dir.path().join("go.key");
    std::fs::write(&go_key, &go_priv).unwrap();

    // wireguard-go in the namespace, in the foreground so the test owns it.
    ns.spawn(
        &["wireguard-go", "-f", &iface],
        &[("WG_PROCESS_FOREGROUND", "1")],
    );
    let start = Instant::now();
    while !ns.try_exec(&["ip", "link", "show", &iface]).0 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "wireguard-go did not create {iface}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let aw_port = {
        let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        s.local_addr().unwrap().port()
    };
    ns.exec(&[
        "wg",
        "set",
        &iface,
        "private-key",
        go_key.to_str().unwrap(),
        "listen-port",
        "51820",
        "peer",
        &aw_pub,
        "allowed-ips",
        "10.100.0.1/32,fd10::1/128",
        "endpoint",
        &format!("{}:{aw_port}", ns.host_ip),
    ]);
    ns.exec(&["ip", "addr", "add", "10.100.0.2/24", "dev", &iface]);
    ns.exec(&["ip", "addr", "add", "fd10::2/64", "dev", &iface]);
    ns.exec(&["ip", "link", "set", &iface, "up"]);

    // Kernel TCP echo server behind wireguard-go.
    let server = ns.spawn(&["python3", "tests/support/echo.py", "serve", "5201"], &[]);
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready");

    // Our side: a local echo server the namespace's kernel client will reach through
    // agentwire's --remote-tcp listener.
    let local_echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = local_echo.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in local_echo.incoming() {
            let Ok(mut c) = c else { return };
            std::thread::spawn(move || {
                let mut r = c.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut c);
                let _ = c.shutdown(std::net::Shutdown::Write);
            });
        }
    });

    let conf = dir.path().join("wg.conf");
    std::fs::write(
        &conf,
        format!(
            "[Interface]\nPrivateKey = {aw_priv}\nAddress = 10.100.0.1/24, fd10::1/64\nListenPort = {aw_port}\n\n\
             [Peer]\nPublicKey = {go_pub}\nEndpoint = {}:51820\nAllowedIPs = 10.100.0.0/24, fd10::/64\n",
            ns.ns_ip
        ),
    )
    .unwrap();
    let (p4, p6) = (free_port(), free_port());
    let child = Command::new(env!("CARGO_BIN_EXE_agentwire"))
        .args(["forward", "--config", conf.to_str().unwrap()])
        .args(["--tcp", &format!("127.0.0.1:{p4}=10.100.0.2:5201")])
        .args(["--tcp", &format!("127.0.0.1:{p6}=[fd10::2]:5201")])
        .args(["--remote-tcp", &format!("5202=127.0.0.1:{echo_port}")])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let _fwd = Forward(child);
    wait_for_port(p4);
    wait_for_port(p6);

    // agentwire dials through the tunnel to the kernel server, IPv4 then IPv6.
    echo_through(p4);
    echo_through(p6);

    // A kernel TCP client in the namespace connects into agentwire's netstack.
    for host in ["10.100.0.1", "fd10::1"] {
        let (ok, out) = ns.try_exec(&[
            "python3",
            "tests/support/echo.py",
            "client",
            host,
            "5202",
            &SIZE.to_string(),
        ]);
        assert!(ok, "kernel client via {host}: {out}");
        assert!(out.contains(&format!("received={SIZE}")), "{out}");
    }

    // wireguard-go saw a completed handshake with our key.
    let dump = ns.exec(&["wg", "show", &iface, "latest-handshakes"]);
    assert!(
        dump.contains(&aw_pub) && !dump.trim().ends_with("\t0"),
        "{dump}"
    );
}
