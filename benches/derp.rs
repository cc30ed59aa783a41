//! One TCP stream between two agentwire nodes whose only path is the agentwire DERP
//! relay on loopback, each direction, plus the relay's CPU cost per Gbit relayed.
//!
//! The relay runs as its own process (`agentwire derp`), so its CPU time is read from
//! `/proc/PID/stat`. Each node runs on its own thread and single-threaded runtime.
//!
//! Run: `cargo bench --bench derp` (`BENCH_SECS` sets seconds per direction).

#![allow(clippy::disallowed_methods)]

mod common;

use agentwire::proto::wg::PeerConfig;
use agentwire::runtime::derp::DerpClientOptions;
use agentwire::runtime::relay::{DerpRelay, RelayConfig};
use agentwire::runtime::{Tunnel, TunnelConfig};
use agentwire::wire::derpmap::DerpMap;
use agentwire::wire::key::NodePrivate;
use common::{measure, netstack, start_node};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// CPU seconds (user + system) a process has used.
fn cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

struct Relay(std::process::Child);
impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let relay = Relay(
        Command::new(env!("CARGO_BIN_EXE_agentwire"))
            .args(["derp", "--listen", &format!("127.0.0.1:{port}")])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("start relay"),
    );
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "relay did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let map = DerpMap::single(1, "bench", "127.0.0.1".parse().unwrap(), port);
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let mk = |key: NodePrivate,
              addr: &'static str,
              peer: agentwire::wire::key::NodePublic,
              peer_ip: &'static str| {
        let map = map.clone();
        move || {
            let (relay, rx) = DerpRelay::new(RelayConfig {
                private: key.clone(),
                map,
                home: Some(1),
                headers: vec![],
                options: DerpClientOptions::default(),
                tls: Default::default(),
                allow_insecure_http: false,
            });
            let mut p = PeerConfig::new(peer);
            p.allowed_ips = vec![peer_ip.parse().unwrap()];
            p.derp_region = Some(1);
            p.relay_only = true;
            let cfg = TunnelConfig {
                private: key,
                netstack: netstack(addr),
                listen: "127.0.0.1:0".parse().unwrap(),
                peers: vec![p],
            };
            Tunnel::start_with_relay(cfg, Some((Box::new(relay), rx))).unwrap()
        }
    };
    let b = start_node(mk(kb.clone(), "10.21.0.2", ka.public(), "10.21.0.1/32"));
    let a = start_node(mk(ka, "10.21.0.1", kb.public(), "10.21.0.2/32"));
    // Warm-up: logins, handshake, a first transfer.
    measure(&a, &b, "10.21.0.2:5000".parse().unwrap(), 0.5);
    let cpu0 = cpu_secs(relay.0.id());
    let t0 = Instant::now();
    let up = measure(&a, &b, "10.21.0.2:5201".parse().unwrap(), secs);
    let down = measure(&b, &a, "10.21.0.1:5202".parse().unwrap(), secs);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(relay.0.id()) - cpu0;
    // Gigabits relayed over both runs (each direction ran for `secs`).
    let gbit = (up + down) * secs / 1000.0;
    println!("derp_tcp_throughput_a_to_b: {up:.0} Mbit/s");
    println!("derp_tcp_throughput_b_to_a: {down:.0} Mbit/s");
    println!("derp_relay_cpu_per_gbit: {:.3} cpu-s/Gbit", cpu / gbit);
    println!("derp_relay_cpu_utilisation: {:.0} %", 100.0 * cpu / wall);
    drop((a, b));
}
