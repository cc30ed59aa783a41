//! Emulated links for namespace tests and benchmarks: the `linkem` program (TAP devices
//! in two namespaces, frames forwarded with seeded delay, jitter, loss, reordering and a
//! rate limit per direction) started and stopped from Rust.
//!
//! - [`Link`] joins any two namespaces (`-` is the caller's own), interface names given.
//! - `netns::Netns::with_link` is a namespace joined to the root namespace by a link,
//!   with addresses.
//! - `nat::Lab::with_links` puts a link on every segment of a NAT lab.
//! - [`overhead`] measures what the emulator itself adds (benchmarks print it).
//!
//! Shared with the benchmarks through `#[path]`; needs `CARGO_BIN_EXE_linkem`, which
//! cargo sets for integration tests and benchmarks of this package.

#![allow(dead_code, clippy::disallowed_methods)]

use super::netns::Netns;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

/// One direction's behaviour (see `src/bin/linkem/sched.rs` for the model).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LinkParams {
    /// One-way delay.
    pub delay: Duration,
    /// Delay varies uniformly within `delay ± jitter` (order kept).
    pub jitter: Duration,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is held back by `reorder_delay` and overtaken.
    pub reorder: f64,
    /// How long a reordered frame is held back (`None`: linkem's default, 1 ms).
    pub reorder_delay: Option<Duration>,
    /// Bottleneck rate, Mbit/s; `None` for none.
    pub rate_mbit: Option<f64>,
    /// Bottleneck buffer in bytes (`None`: linkem's default, 256 KiB).
    pub queue_bytes: Option<u64>,
}

impl LinkParams {
    /// A perfect link: frames pass as fast as the emulator forwards them.
    pub fn perfect() -> Self {
        Self::default()
    }

    /// `ms` milliseconds one way, nothing else.
    pub fn delay_ms(ms: f64) -> Self {
        Self {
            delay: Duration::from_secs_f64(ms / 1e3),
            ..Self::default()
        }
    }

    /// The same with loss probability `p` (0 to 1).
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }

    /// The same with jitter.
    pub fn jitter(mut self, d: Duration) -> Self {
        self.jitter = d;
        self
    }

    /// The same with reordering.
    pub fn reorder(mut self, p: f64, held: Duration) -> Self {
        self.reorder = p;
        self.reorder_delay = Some(held);
        self
    }

    /// The same with a bottleneck of `mbit` Mbit/s and a buffer of `queue_bytes`.
    pub fn rate(mut self, mbit: f64, queue_bytes: u64) -> Self {
        self.rate_mbit = Some(mbit);
        self.queue_bytes = Some(queue_bytes);
        self
    }

    /// The `key=value,...` form linkem reads.
    pub fn spec(&self) -> String {
        let mut s = format!(
            "delay={}us,jitter={}us,loss={},reorder={}",
            self.delay.as_micros(),
            self.jitter.as_micros(),
            self.loss,
            self.reorder
        );
        if let Some(d) = self.reorder_delay {
            let _ = write!(s, ",reorder_delay={}us", d.as_micros());
        }
        if let Some(r) = self.rate_mbit {
            let _ = write!(s, ",rate={}bit", (r * 1e6) as u64);
        }
        if let Some(q) = self.queue_bytes {
            let _ = write!(s, ",queue={q}");
        }
        s
    }
}

/// Counters of one direction, as linkem reports them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DirStats {
    pub frames: u64,
    pub bytes: u64,
    pub delivered: u64,
    pub lost: u64,
    pub queue_drops: u64,
    pub reordered: u64,
    pub write_errors: u64,
}

/// Counters of both directions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkStats {
    pub a_to_b: DirStats,
    pub b_to_a: DirStats,
}

fn parse_stats(line: &str) -> LinkStats {
    let mut st = LinkStats::default();
    let mut cur: Option<&mut DirStats> = None;
    for tok in line.split_whitespace() {
        match tok {
            "a>b" => cur = Some(&mut st.a_to_b),
            "b>a" => cur = Some(&mut st.b_to_a),
            _ => {
                let (Some(d), Some((k, v))) = (cur.as_deref_mut(), tok.split_once('=')) else {
                    continue;
                };
                let v: u64 = v.parse().unwrap_or(0);
                match k {
                    "frames" => d.frames = v,
                    "bytes" => d.bytes = v,
                    "delivered" => d.delivered = v,
                    "lost" => d.lost = v,
                    "queue_drops" => d.queue_drops = v,
                    "reordered" => d.reordered = v,
                    "write_errors" => d.write_errors = v,
                    _ => {}
                }
            }
        }
    }
    st
}

/// A running emulator. Dropping it closes its stdin, which ends it and removes both
/// interfaces; it also ends by itself at its time limit.
pub struct Link {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Link {
    /// Creates interface `a.1` in namespace `a.0` and `b.1` in `b.0` (namespace `-` for
    /// the caller's), joined by the emulator, both up, no addresses. Waits until they are.
    ///
    /// # Panics
    /// If linkem cannot start or set up the interfaces (the test cannot run).
    pub fn start(
        a: (&str, &str),
        b: (&str, &str),
        a_to_b: &LinkParams,
        b_to_a: &LinkParams,
        seed: u64,
        limit: Duration,
    ) -> Link {
        let mut child = Command::new(env!("CARGO_BIN_EXE_linkem"))
            .arg(format!("--a={}:{}", a.0, a.1))
            .arg(format!("--b={}:{}", b.0, b.1))
            .arg(format!("--a-to-b={}", a_to_b.spec()))
            .arg(format!("--b-to-a={}", b_to_a.spec()))
            .arg("--seed")
            .arg(seed.to_string())
            .arg("--duration")
            .arg(limit.as_secs_f64().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start linkem");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        let _ = stdout.read_line(&mut line);
        if line.trim() != "ready" {
            let _ = child.kill();
            let status = child.wait();
            panic!("linkem {a:?} <-> {b:?} did not start ({status:?}): {line:?}");
        }
        Link {
            child,
            stdin,
            stdout,
        }
    }

    /// The same behaviour both ways.
    pub fn symmetric(
        a: (&str, &str),
        b: (&str, &str),
        p: &LinkParams,
        seed: u64,
        limit: Duration,
    ) -> Link {
        Self::start(a, b, p, p, seed, limit)
    }

    fn command(&mut self, cmd: &str) -> String {
        let w = self.stdin.as_mut().expect("link is running");
        writeln!(w, "{cmd}")
            .and_then(|()| w.flush())
            .expect("linkem stdin");
        let mut line = String::new();
        self.stdout.read_line(&mut line).expect("linkem stdout");
        line
    }

    /// Changes one direction (`"a>b"`, `"b>a"` or `"both"`); frames already on the link
    /// keep their times.
    pub fn set(&mut self, which: &str, p: &LinkParams) {
        let reply = self.command(&format!("set {which} {}", p.spec()));
        assert_eq!(reply.trim(), "ok", "linkem set {which}");
    }

    /// Counters so far.
    pub fn stats(&mut self) -> LinkStats {
        parse_stats(&self.command("stats"))
    }

    /// Stops the emulator and returns its final counters.
    pub fn stop(mut self) -> LinkStats {
        drop(self.stdin.take());
        let mut rest = String::new();
        let _ = self.stdout.read_to_string(&mut rest);
        let _ = self.child.wait();
        parse_stats(rest.lines().last().unwrap_or(""))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(2) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Median round trip of `n` 64-byte request/responses to an echo server.
pub fn echo_rtt(addr: impl ToSocketAddrs, n: usize) -> Duration {
    let mut s = TcpStream::connect(addr).expect("connect to echo");
    s.set_nodelay(true).expect("nodelay");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let msg = [0x42u8; 64];
    let mut buf = [0u8; 64];
    let mut v = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        s.write_all(&msg).expect("echo write");
        s.read_exact(&mut buf).expect("echo read");
        v.push(t.elapsed());
    }
    v.sort();
    v[v.len() / 2]
}

/// Kernel TCP from the caller to a `sink` peer: sends `bytes`, waits for the peer's
/// count; returns Mbit/s.
pub fn kernel_send(addr: impl ToSocketAddrs, bytes: usize) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect to sink");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let chunk = vec![0x5au8; 256 << 10];
    let t = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).expect("sink write");
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write).expect("shutdown");
    let mut reply = String::new();
    s.read_to_string(&mut reply).expect("sink reply");
    let got: usize = reply.trim().parse().expect("sink count");
    assert_eq!(got, bytes, "sink received");
    bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6
}

/// Kernel TCP with congestion control `cc` (`cubic`, `bbr`, ...) to a `sink` peer: the
/// same as [`kernel_send`], the sender being a Python process that can choose it.
pub fn kernel_send_with(host: &str, port: u16, bytes: usize, cc: &str) -> f64 {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/echo.py");
    let t = Instant::now();
    let out = std::process::Command::new("python3")
        .args([
            script,
            "send",
            host,
            &port.to_string(),
            &bytes.to_string(),
            cc,
        ])
        .output()
        .expect("start echo.py send");
    let secs = t.elapsed().as_secs_f64();
    let reply = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "echo.py send {cc}: {out:?}");
    let got: usize = reply.trim().parse().expect("sink count");
    assert_eq!(got, bytes, "sink received");
    bytes as f64 * 8.0 / secs / 1e6
}

/// The system's default TCP congestion control (`bbr`, `cubic`, ...), for the record.
pub fn default_congestion_control() -> String {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Kernel TCP from a `source` peer to the caller: asks for `bytes`, reads to the end;
/// returns Mbit/s.
pub fn kernel_receive(addr: impl ToSocketAddrs, bytes: usize) -> f64 {
    kernel_receive_with(addr, bytes, None)
}

/// [`kernel_receive`] with the source sending under congestion control `cc`.
pub fn kernel_receive_with(addr: impl ToSocketAddrs, bytes: usize, cc: Option<&str>) -> f64 {
    let mut s = TcpStream::connect(addr).expect("connect to source");
    s.set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let t = Instant::now();
    match cc {
        Some(cc) => writeln!(s, "{bytes} {cc}"),
        None => writeln!(s, "{bytes}"),
    }
    .expect("source request");
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0;
    loop {
        let n = s.read(&mut buf).expect("source read");
        if n == 0 {
            break;
        }
        got += n;
    }
    assert_eq!(got, bytes, "source sent");
    bytes as f64 * 8.0 / t.elapsed().as_secs_f64() / 1e6
}

/// What the emulator adds on its own, with no delay configured.
#[derive(Debug, Clone)]
pub struct Overhead {
    /// Median 64-byte TCP round trip over a veth pair.
    pub veth_rtt: Duration,
    /// The same over a perfect emulated link.
    pub link_rtt: Duration,
    /// Kernel TCP throughput through a perfect emulated link, Mbit/s (one stream).
    pub max_mbit: f64,
}

impl Overhead {
    /// The round trip the emulator adds.
    pub fn rtt_added(&self) -> Duration {
        self.link_rtt.saturating_sub(self.veth_rtt)
    }

    /// `metric: value unit` lines, as the benchmarks print them.
    pub fn lines(&self) -> String {
        format!(
            "linkem_rtt_veth_p50: {:.0} us\nlinkem_rtt_link_p50: {:.0} us\nlinkem_rtt_added_p50: {:.0} us\nlinkem_max_throughput: {:.0} Mbit/s\n",
            self.veth_rtt.as_secs_f64() * 1e6,
            self.link_rtt.as_secs_f64() * 1e6,
            self.rtt_added().as_secs_f64() * 1e6,
            self.max_mbit
        )
    }
}

/// Measures the emulator against a veth pair between the same kind of namespaces: 64-byte
/// TCP round trips (kernel on both ends) and one kernel TCP stream of `bytes`.
/// Needs root and python3.
pub fn overhead(bytes: usize) -> Overhead {
    let mut veth = Netns::new();
    veth.kernel_peer("serve", 7001);
    let veth_rtt = echo_rtt((veth.ns_ip.as_str(), 7001), 2000);
    drop(veth);

    let p = LinkParams::perfect();
    let mut ns = Netns::with_link(&p, &p, 1);
    ns.kernel_peer("serve", 7001);
    ns.kernel_peer("sink", 7002);
    let link_rtt = echo_rtt((ns.ns_ip.as_str(), 7001), 2000);
    let max_mbit = kernel_send((ns.ns_ip.as_str(), 7002), bytes);
    Overhead {
        veth_rtt,
        link_rtt,
        max_mbit,
    }
}
