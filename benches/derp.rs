//! One TCP stream between two agentwire nodes whose only path is the agentwire DERP
//! relay on loopback, each direction, plus the relay's CPU cost per Gbit relayed: first
//! over plain HTTP, then over TLS (`agentwire derp --tls-cert/--tls-key`, certificate
//! from a throwaway CA), in the same run, with the TLS/plain ratio.
//!
//! The relay runs as its own process (`agentwire derp`), so its CPU time is read from
//! `/proc/PID/stat`. Each node runs on its own thread and single-threaded runtime.
//!
//! Run: `cargo bench --bench derp` (`BENCH_SECS` sets seconds per direction).

#![allow(clippy::disallowed_methods)]

mod common;
#[path = "../tests/common/pki.rs"]
mod pki;

use agentwire::proto::wg::PeerConfig;
use agentwire::runtime::derp::DerpClientOptions;
use agentwire::runtime::relay::{DerpRelay, RelayConfig};
use agentwire::runtime::tls::ClientTls;
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

/// What one relay run measured.
struct Figures {
    up: f64,
    down: f64,
    cpu_per_gbit: f64,
    utilisation: f64,
}

/// Runs the relay (over TLS when `tls` names the certificate, key and CA) and measures.
impl Figures {
    /// One figure per line, under `prefix`.
    fn print(&self, prefix: &str) {
        println!("{prefix}_tcp_throughput_a_to_b: {:.0} Mbit/s", self.up);
        println!("{prefix}_tcp_throughput_b_to_a: {:.0} Mbit/s", self.down);
        println!(
            "{prefix}_relay_cpu_per_gbit: {:.3} cpu-s/Gbit",
            self.cpu_per_gbit
        );
        println!("{prefix}_relay_cpu_utilisation: {:.0} %", self.utilisation);
    }
}

fn run(
    secs: f64,
    tls: Option<(&std::path::Path, &std::path::Path, &std::path::Path)>,
    net: u8,
) -> Figures {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentwire"));
    cmd.args(["derp", "--listen", &format!("127.0.0.1:{port}")]);
    if let Some((cert, key, _)) = tls {
        cmd.arg("--tls-cert").arg(cert).arg("--tls-key").arg(key);
    }
    let relay = Relay(
        cmd.env("RUST_LOG", "warn")
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
    let map = DerpMap::single_node(1, "bench", "127.0.0.1", port, tls.is_some());
    let trust = match tls {
        Some((_, _, ca)) => ClientTls::with_ca_file(ca).unwrap(),
        None => ClientTls::default(),
    };
    let (ka, kb) = (NodePrivate::generate(), NodePrivate::generate());
    let mk = |key: NodePrivate,
              addr: String,
              peer: agentwire::wire::key::NodePublic,
              peer_ip: String| {
        let map = map.clone();
        let trust = trust.clone();
        move || {
            let (relay, rx) = DerpRelay::new(RelayConfig {
                private: key.clone(),
                map,
                home: Some(1),
                headers: vec![],
                options: DerpClientOptions::default(),
                tls: trust,
                allow_insecure_http: false,
            });
            let mut p = PeerConfig::new(peer);
            p.allowed_ips = vec![peer_ip.parse().unwrap()];
            p.derp_region = Some(1);
            p.relay_only = true;
            let cfg = TunnelConfig {
                private: key,
                netstack: netstack(&addr),
                listen: "127.0.0.1:0".parse().unwrap(),
                peers: vec![p],
            };
            Tunnel::start_with_relay(cfg, Some((Box::new(relay), rx))).unwrap()
        }
    };
    let (ia, ib) = (format!("10.{net}.0.1"), format!("10.{net}.0.2"));
    let b = start_node(mk(kb.clone(), ib.clone(), ka.public(), format!("{ia}/32")));
    let a = start_node(mk(ka, ia.clone(), kb.public(), format!("{ib}/32")));
    // Warm-up: logins, handshake, a first transfer.
    measure(&a, &b, format!("{ib}:5000").parse().unwrap(), 0.5);
    let cpu0 = cpu_secs(relay.0.id());
    let t0 = Instant::now();
    let up = measure(&a, &b, format!("{ib}:5201").parse().unwrap(), secs);
    let down = measure(&b, &a, format!("{ia}:5202").parse().unwrap(), secs);
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs(relay.0.id()) - cpu0;
    drop((a, b));
    // Gigabits relayed over both runs (each direction ran for `secs`).
    let gbit = (up + down) * secs / 1000.0;
    Figures {
        up,
        down,
        cpu_per_gbit: cpu / gbit,
        utilisation: 100.0 * cpu / wall,
    }
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let plain = run(secs, None, 21);
    plain.print("derp");
    let dir = tempfile::tempdir().unwrap();
    let ca = pki::Ca::new(dir.path(), "ca");
    let leaf = ca.leaf(dir.path(), "relay", &["127.0.0.1"], pki::Validity::Good);
    let tls = run(secs, Some((&leaf.cert, &leaf.key, &ca.file)), 22);
    tls.print("derp_tls");
    println!(
        "derp_tls_vs_plain_throughput_ratio: {:.2} x",
        (tls.up + tls.down) / (plain.up + plain.down)
    );
}
