//! One TCP stream between two agentwire nodes over UDP on loopback, each direction; then,
//! in the same run (root and wireguard-go needed, skipped otherwise), a wireguard-go pair
//! with kernel TCP (the baseline) and agentwire to a wireguard-go peer with kernel TCP
//! behind it, each way (interop).
//!
//! Each node runs on its own single-threaded tokio runtime on its own OS thread, as two
//! processes would. Prints one figure per line: `metric: value unit`.
//!
//! Run: `cargo bench --bench throughput` (`BENCH_SECS` sets seconds per direction).

#![allow(clippy::disallowed_methods)]

use agentwire::proto::wg::PeerConfig;
use agentwire::runtime::{Tunnel, TunnelConfig};
use agentwire::wire::key::NodePrivate;

mod common;

use common::{measure, netstack, start_node};

fn main() {
    if let Ok(role) = std::env::var("AW_BENCH_ROLE") {
        baseline::role(&role);
        return;
    }
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let ka = NodePrivate::generate();
    let kb = NodePrivate::generate();
    let mut pa = PeerConfig::new(kb.public());
    pa.allowed_ips = vec!["10.20.0.2/32".parse().unwrap()];
    let mut pb = PeerConfig::new(ka.public());
    pb.allowed_ips = vec!["10.20.0.1/32".parse().unwrap()];
    let cfg_b = TunnelConfig {
        private: kb,
        netstack: netstack("10.20.0.2"),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![pb],
    };
    let b = start_node(move || Tunnel::start(cfg_b).unwrap());
    pa.endpoint = Some(b.tunnel.local_udp_addr());
    let cfg_a = TunnelConfig {
        private: ka,
        netstack: netstack("10.20.0.1"),
        listen: "127.0.0.1:0".parse().unwrap(),
        peers: vec![pa],
    };
    let a = start_node(move || Tunnel::start(cfg_a).unwrap());
    // Warm-up: handshake and a first transfer so both directions have sessions.
    measure(&a, &b, "10.20.0.2:5000".parse().unwrap(), 0.5);
    let up = measure(&a, &b, "10.20.0.2:5201".parse().unwrap(), secs);
    let down = measure(&b, &a, "10.20.0.1:5202".parse().unwrap(), secs);
    if std::env::var("BENCH_VERBOSE").is_ok() {
        eprintln!("a: {:?}", a.handle.block_on(a.tunnel.stats()));
        eprintln!("b: {:?}", b.handle.block_on(b.tunnel.stats()));
    }
    println!("tcp_throughput_a_to_b: {up:.0} Mbit/s");
    println!("tcp_throughput_b_to_a: {down:.0} Mbit/s");
    drop((a, b));
    let pair = match baseline::wireguard_go(secs) {
        Ok((bup, bdown)) => {
            println!("baseline_wireguard_go_kernel_tcp_a_to_b: {bup:.0} Mbit/s");
            println!("baseline_wireguard_go_kernel_tcp_b_to_a: {bdown:.0} Mbit/s");
            println!("ratio_vs_wireguard_go_a_to_b: {:.2} x", up / bup);
            println!("ratio_vs_wireguard_go_b_to_a: {:.2} x", down / bdown);
            Some((bup, bdown))
        }
        Err(why) => {
            println!("baseline_wireguard_go: skipped ({why})");
            None
        }
    };
    match interop::wireguard_go_peer(secs) {
        Ok((send, recv)) => {
            println!("interop_agentwire_to_wireguard_go: {send:.0} Mbit/s");
            println!("interop_wireguard_go_to_agentwire: {recv:.0} Mbit/s");
            if let Some((bup, bdown)) = pair {
                // The pair's two directions are symmetric; each interop direction is
                // compared with the pair's figure for the same direction of the run.
                println!("ratio_interop_send_vs_pair: {:.2} x", send / bup);
                println!("ratio_interop_receive_vs_pair: {:.2} x", recv / bdown);
            }
        }
        Err(why) => println!("interop_wireguard_go: skipped ({why})"),
    }
}

/// agentwire (in this process, root namespace) and a wireguard-go peer in a namespace
/// joined by a veth pair, kernel TCP behind wireguard-go: the case of `agentwire forward`
/// to a real WireGuard peer.
mod interop {
    use super::common::netns::Netns;
    use super::common::{netstack, start_node};
    use agentwire::proto::wg::PeerConfig;
    use agentwire::runtime::{Tunnel, TunnelConfig};
    use agentwire::wire::key::NodePrivate;
    use std::io::{BufRead, BufReader};
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Returns (agentwire → peer, peer → agentwire) in Mbit/s.
    pub fn wireguard_go_peer(secs: f64) -> Result<(f64, f64), String> {
        super::common::netns::available(&["wireguard-go", "wg"])?;
        let mut ns = Netns::new();
        let iface = format!("wgbI{}", ns.n);
        let ours = NodePrivate::generate();
        let theirs = NodePrivate::generate();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let key = dir.path().join("k");
        std::fs::write(&key, theirs.to_base64()).map_err(|e| e.to_string())?;
        ns.spawn(
            &["wireguard-go", "-f", &iface],
            &[("WG_PROCESS_FOREGROUND", "1")],
        );
        let start = Instant::now();
        while !ns.try_exec(&["ip", "link", "show", &iface]).0 {
            if start.elapsed() > Duration::from_secs(10) {
                return Err("wireguard-go did not start".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let udp = std::net::UdpSocket::bind((ns.host_ip.as_str(), 0)).map_err(|e| e.to_string())?;
        let port = udp.local_addr().map_err(|e| e.to_string())?.port();
        drop(udp);
        ns.exec(&[
            "wg",
            "set",
            &iface,
            "private-key",
            key.to_str().unwrap_or(""),
            "listen-port",
            "51820",
            "peer",
            &ours.public().to_base64(),
            "allowed-ips",
            "10.78.0.1/32",
            "endpoint",
            &format!("{}:{port}", ns.host_ip),
        ]);
        ns.exec(&["ip", "addr", "add", "10.78.0.2/24", "dev", &iface]);
        ns.exec(&["ip", "link", "set", &iface, "up"]);

        let mut peer = PeerConfig::new(theirs.public());
        peer.allowed_ips = vec!["10.78.0.2/32".parse().unwrap()];
        peer.endpoint = Some(format!("{}:51820", ns.ns_ip).parse().unwrap());
        let cfg = TunnelConfig {
            private: ours,
            netstack: netstack("10.78.0.1"),
            listen: format!("{}:{port}", ns.host_ip).parse().unwrap(),
            peers: vec![peer],
        };
        let node = start_node(move || Tunnel::start(cfg).unwrap());
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let exe = exe.to_str().unwrap_or("");
        let secs_s = secs.to_string();

        // Send: the sink runs behind wireguard-go, we write.
        let sink = ns.spawn(
            &[exe],
            &[
                ("AW_BENCH_ROLE", "sink"),
                ("AW_BENCH_ADDR", "10.78.0.2:5201"),
            ],
        );
        let mut out = BufReader::new(sink.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let tunnel = node.tunnel.clone();
        let dur = Duration::from_secs_f64(secs);
        let (done_tx, done_rx) = mpsc::channel();
        // On the node's own thread, as `measure` does for node to node.
        node.handle.spawn(async move {
            let r: Result<(), String> = async move {
                let mut s = tokio::time::timeout(
                    Duration::from_secs(10),
                    tunnel.dial_tcp("10.78.0.2:5201".parse().unwrap()),
                )
                .await
                .map_err(|_| "dial timed out".to_string())?
                .map_err(|e| e.to_string())?;
                let chunk = vec![0x5au8; 256 << 10];
                let start = Instant::now();
                while start.elapsed() < dur {
                    s.write_all(&chunk).await.map_err(|e| e.to_string())?;
                }
                s.shutdown().await.map_err(|e| e.to_string())?;
                s.drained().await.map_err(|e| e.to_string())
            }
            .await;
            let _ = done_tx.send(r);
        });
        done_rx
            .recv_timeout(dur + Duration::from_secs(30))
            .map_err(|_| "send never finished".to_string())??;
        line.clear();
        out.read_line(&mut line).map_err(|e| e.to_string())?;
        let mut it = line.split_whitespace();
        let bytes: f64 = it.next().and_then(|s| s.parse().ok()).ok_or("no result")?;
        let took: f64 = it.next().and_then(|s| s.parse().ok()).ok_or("no result")?;
        let send = bytes * 8.0 / took / 1e6;

        // Receive: the source behind wireguard-go connects to our listener.
        let listener = node.tunnel.listen_tcp(5202).map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::channel();
        node.handle.spawn(async move {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let mut buf = vec![0u8; 256 << 10];
            let (mut total, mut start) = (0u64, None);
            while let Ok(n) = s.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                start.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            let _ = tx.send((total, start.map(|s| s.elapsed()).unwrap_or_default()));
        });
        let status = Command::new("ip")
            .args(["netns", "exec", &ns.name, exe])
            .env("AW_BENCH_ROLE", "source")
            .env("AW_BENCH_ADDR", "10.78.0.1:5202")
            .env("BENCH_SECS", &secs_s)
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("source failed".into());
        }
        let (total, took) = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| "receive never finished".to_string())?;
        let recv = total as f64 * 8.0 / took.as_secs_f64() / 1e6;
        if std::env::var("BENCH_VERBOSE").is_ok() {
            eprintln!("interop: {:?}", node.handle.block_on(node.tunnel.stats()));
        }
        drop(node);
        Ok((send, recv))
    }
}

/// The baseline the issue names: wireguard-go to wireguard-go with kernel TCP over TUN,
/// in two network namespaces joined by a veth pair, measured in the same run.
mod baseline {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    fn sh(args: &[&str]) -> Result<(), String> {
        let out = Command::new(args[0])
            .args(&args[1..])
            .output()
            .map_err(|e| format!("{}: {e}", args[0]))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "{:?}: {}",
                args,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs inside a namespace: `sink ADDR` prints `bytes seconds`; `source ADDR SECS`.
    pub fn role(role: &str) {
        let addr = std::env::var("AW_BENCH_ADDR").expect("AW_BENCH_ADDR");
        match role {
            "sink" => {
                let l = std::net::TcpListener::bind(&addr).expect("bind");
                println!("ready");
                let (mut s, _) = l.accept().expect("accept");
                let mut buf = vec![0u8; 256 << 10];
                let (mut total, mut start) = (0u64, None);
                loop {
                    let n = s.read(&mut buf).unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    start.get_or_insert_with(Instant::now);
                    total += n as u64;
                }
                let secs = start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
                println!("{total} {secs}");
            }
            _ => {
                let secs: f64 = std::env::var("BENCH_SECS")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(5.0);
                let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                let chunk = vec![0x5au8; 256 << 10];
                let start = Instant::now();
                while start.elapsed() < Duration::from_secs_f64(secs) {
                    if s.write_all(&chunk).is_err() {
                        break;
                    }
                }
            }
        }
    }

    struct Cleanup(Vec<String>, Vec<std::process::Child>);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            for c in &mut self.1 {
                let _ = c.kill();
                let _ = c.wait();
            }
            for ns in &self.0 {
                let _ = Command::new("ip").args(["netns", "del", ns]).output();
            }
        }
    }

    fn measure(from: &str, to: &str, to_ip: &str, secs: f64) -> Result<f64, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let addr = format!("{to_ip}:5201");
        let mut sink = Command::new("ip")
            .args(["netns", "exec", to])
            .arg(&exe)
            .env("AW_BENCH_ROLE", "sink")
            .env("AW_BENCH_ADDR", &addr)
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        let mut out = sink.stdout.take().ok_or("no stdout")?;
        let mut ready = [0u8; 6];
        out.read_exact(&mut ready).map_err(|e| e.to_string())?;
        let status = Command::new("ip")
            .args(["netns", "exec", from])
            .arg(&exe)
            .env("AW_BENCH_ROLE", "source")
            .env("AW_BENCH_ADDR", &addr)
            .env("BENCH_SECS", secs.to_string())
            .status()
            .map_err(|e| e.to_string())?;
        if !status.success() {
            return Err("source failed".into());
        }
        let mut rest = String::new();
        out.read_to_string(&mut rest).map_err(|e| e.to_string())?;
        let _ = sink.wait();
        let mut it = rest.split_whitespace();
        let bytes: f64 = it.next().and_then(|s| s.parse().ok()).ok_or("no result")?;
        let secs: f64 = it.next().and_then(|s| s.parse().ok()).ok_or("no result")?;
        Ok(bytes * 8.0 / secs / 1e6)
    }

    /// Two namespaces, wireguard-go in each; returns (a→b, b→a) in Mbit/s.
    pub fn wireguard_go(secs: f64) -> Result<(f64, f64), String> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
        if !matches!(root, Ok(true)) {
            return Err("needs root for network namespaces".into());
        }
        sh(&["sh", "-c", "command -v wireguard-go && command -v wg"])
            .map_err(|_| "wireguard-go or wg not installed")?;
        let id = std::process::id() % 10000;
        let (na, nb) = (format!("awbA{id}"), format!("awbB{id}"));
        let mut clean = Cleanup(vec![na.clone(), nb.clone()], Vec::new());
        sh(&["ip", "netns", "add", &na])?;
        sh(&["ip", "netns", "add", &nb])?;
        sh(&[
            "ip", "link", "add", "awbva", "netns", &na, "type", "veth", "peer", "name", "awbvb",
            "netns", &nb,
        ])?;
        let dir = std::env::temp_dir().join(format!("awbench{id}"));
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let keys: Vec<(String, String)> = (0..2)
            .map(|_| {
                let k = agentwire::wire::key::NodePrivate::generate();
                (k.to_base64(), k.public().to_base64())
            })
            .collect();
        for (i, (ns, veth, wg)) in [
            (&na, "awbva", format!("wgbA{id}")),
            (&nb, "awbvb", format!("wgbB{id}")),
        ]
        .iter()
        .enumerate()
        {
            let other = 1 - i;
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("192.168.250.{}/30", i + 1),
                "dev",
                veth,
            ])?;
            sh(&["ip", "-n", ns, "link", "set", veth, "up"])?;
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
            let child = Command::new("ip")
                .args(["netns", "exec", ns, "wireguard-go", "-f", wg])
                .env("WG_PROCESS_FOREGROUND", "1")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?;
            clean.1.push(child);
            let start = Instant::now();
            while sh(&["ip", "-n", ns, "link", "show", wg]).is_err() {
                if start.elapsed() > Duration::from_secs(10) {
                    return Err("wireguard-go did not start".into());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let key = dir.join(format!("k{i}"));
            std::fs::write(&key, &keys[i].0).map_err(|e| e.to_string())?;
            sh(&[
                "ip",
                "netns",
                "exec",
                ns,
                "wg",
                "set",
                wg,
                "private-key",
                key.to_str().unwrap_or(""),
                "listen-port",
                "51820",
                "peer",
                &keys[other].1,
                "allowed-ips",
                &format!("10.77.0.{}/32", other + 1),
                "endpoint",
                &format!("192.168.250.{}:51820", other + 1),
            ])?;
            sh(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.77.0.{}/24", i + 1),
                "dev",
                wg,
            ])?;
            sh(&["ip", "-n", ns, "link", "set", wg, "up"])?;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let up = measure(&na, &nb, "10.77.0.2", secs)?;
        let down = measure(&nb, &na, "10.77.0.1", secs)?;
        drop(clean);
        Ok((up, down))
    }
}
