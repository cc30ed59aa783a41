//! Loss recovery of small calls: two netstacks joined by a simulated path with a round
//! trip time, on a fake clock, with chosen segments dropped. Shows what the patched
//! smoltcp's minimum RTO and tail loss probe buy (`third_party/smoltcp/PATCHES.md`).
#![allow(clippy::disallowed_methods)]

use super::*;
use std::collections::VecDeque;
use std::task::{Context, Poll};

pub(super) fn cx() -> Context<'static> {
    Context::from_waker(Waker::noop())
}

/// Two stacks and a path with `one_way` delay each way.
pub(super) struct Path {
    pub(super) a: Netstack,
    pub(super) b: Netstack,
    pub(super) now: Instant,
    one_way: Duration,
    /// Packets on the way to b and to a, with the time they arrive.
    to_b: VecDeque<(Instant, Vec<u8>)>,
    to_a: VecDeque<(Instant, Vec<u8>)>,
    /// Drop the next packet from a that carries TCP payload.
    drop_next_data_from_a: bool,
    /// Drop every n-th packet from a that carries TCP payload.
    drop_every: Option<u64>,
    /// Drop packets from a that carry TCP payload with this probability, from a seeded
    /// generator (xorshift64*: reproducible, no dependency).
    pub(super) drop_random: Option<(f64, u64)>,
    data_from_a: u64,
    /// A bottleneck on the way to b: its rate in bytes per second and its buffer in
    /// bytes (tail drop), and when the last packet queued there finishes serializing.
    pub(super) bottleneck: Option<(f64, usize)>,
    bottleneck_free_at: Instant,
    pub(super) bottleneck_drops: u64,
    /// Largest queueing delay seen at the bottleneck.
    max_queue_delay: Duration,
}

fn tcp_payload_len(pkt: &[u8]) -> usize {
    let Ok(ip) = crate::wire::ip::IpPeek::parse(pkt) else {
        return 0;
    };
    let Some(t) = pkt.get(ip.transport_offset..) else {
        return 0;
    };
    let data_offset = t.get(12).map_or(20, |b| usize::from(b >> 4) * 4);
    t.len().saturating_sub(data_offset)
}

impl Path {
    pub(super) fn new(one_way: Duration, cfg: impl Fn(&mut NetstackConfig)) -> Self {
        let now = Instant::now();
        let stack = |addr: &str| {
            let mut c = NetstackConfig {
                addresses: vec![addr.parse().unwrap()],
                ..Default::default()
            };
            cfg(&mut c);
            Netstack::new(c, now, 7).unwrap()
        };
        Self {
            a: stack("10.0.0.1"),
            b: stack("10.0.0.2"),
            now,
            one_way,
            to_b: VecDeque::new(),
            to_a: VecDeque::new(),
            drop_next_data_from_a: false,
            drop_every: None,
            drop_random: None,
            data_from_a: 0,
            bottleneck: None,
            bottleneck_free_at: now,
            bottleneck_drops: 0,
            max_queue_delay: Duration::ZERO,
        }
    }

    /// Polls both stacks at `now` and puts what they send on the path.
    fn poll(&mut self) {
        let mut out = Vec::new();
        self.a.poll(self.now);
        self.b.poll(self.now);
        self.a.take_transmits(&mut out);
        for p in out.drain(..) {
            if tcp_payload_len(&p) > 0 {
                self.data_from_a += 1;
                if self.drop_next_data_from_a
                    || self
                        .drop_every
                        .is_some_and(|n| self.data_from_a.is_multiple_of(n))
                    || self.random_drop()
                {
                    self.drop_next_data_from_a = false;
                    continue;
                }
            }
            let mut depart = self.now;
            if let Some((rate, buffer)) = self.bottleneck {
                let start = self.bottleneck_free_at.max(self.now);
                let queued = (start - self.now).as_secs_f64() * rate;
                if queued + p.len() as f64 > buffer as f64 {
                    self.bottleneck_drops += 1;
                    continue;
                }
                self.max_queue_delay = self.max_queue_delay.max(start - self.now);
                depart = start + Duration::from_secs_f64(p.len() as f64 / rate);
                self.bottleneck_free_at = depart;
            }
            self.to_b.push_back((depart + self.one_way, p));
        }
        self.b.take_transmits(&mut out);
        for p in out.drain(..) {
            self.to_a.push_back((self.now + self.one_way, p));
        }
    }

    fn random_drop(&mut self) -> bool {
        let Some((p, state)) = &mut self.drop_random else {
            return false;
        };
        *state ^= *state >> 12;
        *state ^= *state << 25;
        *state ^= *state >> 27;
        let x = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        (x as f64 / (1u64 << 53) as f64) < *p
    }

    /// Advances the clock to the next event (a delivery or a stack's timer), no further
    /// than `until`; returns false when there is nothing before `until`.
    pub(super) fn step(&mut self, until: Instant) -> bool {
        self.poll();
        let next = [
            self.to_b.front().map(|(t, _)| *t),
            self.to_a.front().map(|(t, _)| *t),
            self.a.poll_at(self.now),
            self.b.poll_at(self.now),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next.filter(|t| *t <= until) else {
            self.now = until;
            return false;
        };
        self.now = self.now.max(next);
        while self.to_b.front().is_some_and(|(t, _)| *t <= self.now) {
            let (_, p) = self.to_b.pop_front().unwrap();
            self.b.receive(&p, self.now);
        }
        while self.to_a.front().is_some_and(|(t, _)| *t <= self.now) {
            let (_, p) = self.to_a.pop_front().unwrap();
            self.a.receive(&p, self.now);
        }
        self.poll();
        true
    }

    /// A connection from a to b's port 80: (a's socket, b's accepted socket).
    pub(super) fn connect(&mut self) -> (SocketHandle, SocketHandle) {
        self.connect_on(80)
    }

    /// A connection from a to b's `port`.
    pub(super) fn connect_on(&mut self, port: u16) -> (SocketHandle, SocketHandle) {
        let lid = self.b.tcp_listen(port).unwrap();
        let c = self
            .a
            .tcp_connect(std::net::SocketAddr::from(([10, 0, 0, 2], port)), self.now)
            .unwrap();
        let mut accepted = None;
        self.run_until(Duration::from_secs(5), |p| {
            if let Poll::Ready(Ok((s, _, _))) = p.b.tcp_poll_accept(lid, &mut cx()) {
                accepted = Some(s);
            }
            accepted.is_some()
        })
        .expect("connected");
        (c, accepted.expect("accepted"))
    }

    /// Runs until `done` holds; returns the time it took, or `None` after `limit`.
    pub(super) fn run_until(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Option<Duration> {
        let start = self.now;
        while self.now - start < limit {
            if done(self) {
                return Some(self.now - start);
            }
            self.step(start + limit);
        }
        done(self).then(|| self.now - start)
    }
}

/// Sends `n` bytes a → b and returns how long until b has read them all.
fn request(p: &mut Path, c: SocketHandle, s: SocketHandle, n: usize) -> Option<Duration> {
    let msg = vec![0x61u8; n];
    assert_eq!(p.a.tcp_poll_write(c, &mut cx(), &msg), Poll::Ready(Ok(n)));
    let mut got = 0;
    let mut buf = vec![0u8; 4096];
    p.run_until(Duration::from_secs(5), |p| {
        while let Poll::Ready(Ok(k)) = p.b.tcp_poll_read(s, &mut cx(), &mut buf) {
            if k == 0 {
                break;
            }
            got += k;
        }
        got >= n
    })
}

/// A connection a → b over a 20 ms round trip with a few exchanges done (so the RTT is
/// measured), then one small request whose only segment is lost: how long until b has it.
fn lost_request_delay(cfg: impl Fn(&mut NetstackConfig)) -> Duration {
    let mut p = Path::new(Duration::from_millis(10), cfg);
    let (c, s) = p.connect();
    for _ in 0..5 {
        let t = request(&mut p, c, s, 200).expect("request delivered");
        assert!(t <= Duration::from_millis(11), "a clean request took {t:?}");
        // Let the ACK come back.
        p.run_until(Duration::from_millis(15), |_| false);
    }
    p.drop_next_data_from_a = true;
    request(&mut p, c, s, 200).expect("lost request never repaired")
}

#[test]
fn a_lost_tail_is_probed_after_two_round_trips() {
    let t = lost_request_delay(|_| {});
    // Sent at 0, probed at 2 * SRTT (40 ms), arriving 10 ms later.
    assert!(
        t >= Duration::from_millis(45) && t <= Duration::from_millis(60),
        "repaired after {t:?}"
    );
}

#[test]
fn without_probes_the_minimum_rto_bounds_the_stall() {
    let t = lost_request_delay(|c| c.tcp_tail_loss_probe = false);
    assert!(
        t >= Duration::from_millis(200) && t <= Duration::from_millis(220),
        "repaired after {t:?}"
    );
}

#[test]
fn smoltcp_defaults_stall_a_lost_request_for_a_second() {
    // What the patch fixes: RFC 6298's 1 s floor, no probe.
    let t = lost_request_delay(|c| {
        c.tcp_min_rto = Duration::from_secs(1);
        c.tcp_tail_loss_probe = false;
    });
    assert!(
        t >= Duration::from_millis(1000) && t <= Duration::from_millis(1020),
        "repaired after {t:?}"
    );
}

/// Sends 4 MiB a -> b over `p` (as fast as the sender goes) and returns the rate in
/// simulated time, Mbit/s.
fn bulk_rate(p: &mut Path) -> f64 {
    bulk_rate_of(p, 4 << 20)
}

/// `bulk_rate` of `total` bytes.
pub(super) fn bulk_rate_of(p: &mut Path, total: usize) -> f64 {
    let (c, s) = p.connect();
    let chunk = vec![7u8; 64 << 10];
    let (mut sent, mut got) = (0usize, 0usize);
    let mut buf = vec![0u8; 64 << 10];
    let start = p.now;
    while got < total && p.now - start < Duration::from_secs(120) {
        while sent < total {
            match p
                .a
                .tcp_poll_write(c, &mut cx(), &chunk[..chunk.len().min(total - sent)])
            {
                Poll::Ready(Ok(k)) if k > 0 => sent += k,
                _ => break,
            }
        }
        let until = p.now + Duration::from_millis(1);
        while p.step(until) {}
        while let Poll::Ready(Ok(k)) = p.b.tcp_poll_read(s, &mut cx(), &mut buf) {
            if k == 0 {
                break;
            }
            got += k;
        }
    }
    assert_eq!(got, total, "the transfer did not finish");
    got as f64 * 8.0 / (p.now - start).as_secs_f64() / 1e6
}

/// The bulk figure of `cargo bench --bench links` without namespaces: 4 MiB over a 20 ms
/// round trip losing 1 % of data segments, every 100th or at random, with and without the
/// rate floor (`NetstackConfig::tcp_loss_rate_floor`). Without it the window a loss-based
/// sender holds is set by the loss rate (about 1.2/sqrt(p) segments for Reno); kernel
/// CUBIC measured 5.8-6.8 Mbit/s at 1 % random loss on the emulated link, kernel BBR
/// 230-450 (docs/performance.md, Links). Unpatched smoltcp got 2.5 Mbit/s with every
/// 100th segment lost: it grew its window by one segment per ACK, and this netstack
/// sends one ACK per burst. With the floor, a random loss does not cut the window below
/// the measured bandwidth-delay product, so it keeps growing to what the buffers allow.
#[test]
fn bulk_under_one_percent_loss() {
    let run = |floor: bool, random: bool| {
        let mut p = Path::new(Duration::from_millis(10), |c| c.tcp_loss_rate_floor = floor);
        if random {
            p.drop_random = Some((0.01, 0x9e37_79b9_7f4a_7c15));
        } else {
            p.drop_every = Some(100);
        }
        let mbit = bulk_rate(&mut p);
        println!(
            "bulk_{}_floor_{}: {mbit:.2} Mbit/s ({} data segments)",
            if random {
                "1pct_random_loss"
            } else {
                "every_100th_lost"
            },
            if floor { "on" } else { "off" },
            p.data_from_a
        );
        mbit
    };
    let (every_off, random_off) = (run(false, false), run(false, true));
    let (every_on, random_on) = (run(true, false), run(true, true));
    // Below what the patched sender reaches, above the unpatched 2.5 and 2.75.
    assert!(
        every_off >= 3.0,
        "every 100th lost, no floor: {every_off:.2} Mbit/s"
    );
    assert!(
        random_off >= 3.5,
        "1 % random loss, no floor: {random_off:.2} Mbit/s"
    );
    assert!(
        every_on >= 15.0,
        "every 100th lost, floor: {every_on:.2} Mbit/s"
    );
    assert!(
        random_on >= 15.0,
        "1 % random loss, floor: {random_on:.2} Mbit/s"
    );
}

/// The floor must not turn the sender into one that ignores congestion: through a
/// 20 Mbit/s bottleneck with a 64 KiB buffer (tail drop, no random loss) the losses come
/// from the queue the flow filled, the delivery rate says so, and the floor changes
/// nothing: the same losses, the same rate as without it.
///
/// The figures also show a weakness left open: slow start overshoots the path (to about
/// four times what it holds), and without SACK-based recovery the sender then resends
/// whole windows after timeouts (several times the data; about 8 Mbit/s of the 20). With
/// the unpatched probe the same run crawled at under 1 Mbit/s (one hole per probe, the
/// retransmit timer restarted by every repaired hole).
#[test]
fn at_a_full_queue_the_rate_floor_changes_nothing() {
    let run_with = |floor: bool, buffer: usize| {
        let mut p = Path::new(Duration::from_millis(10), |c| c.tcp_loss_rate_floor = floor);
        p.bottleneck = Some((20e6 / 8.0, buffer));
        let mbit = bulk_rate(&mut p);
        println!(
            "bottleneck_20mbit_{}k_floor_{}: {mbit:.2} Mbit/s, {} drops, {} data segments \
             (4 MiB is ~3420), max queueing delay {:?}",
            buffer >> 10,
            if floor { "on" } else { "off" },
            p.bottleneck_drops,
            p.data_from_a,
            p.max_queue_delay
        );
        (mbit, p.bottleneck_drops)
    };
    let run = |floor: bool| run_with(floor, 64 << 10);
    let (off, off_drops) = run(false);
    let (on, on_drops) = run(true);
    // A buffer of a third of the path's bandwidth-delay product (50 KB): the
    // floor's 1.25 then lies above what the queue holds, so the floor can bind at
    // queue losses too; printed, for the record.
    run_with(false, 16 << 10);
    run_with(true, 16 << 10);
    // The floor may keep more of the window where a recovery's losses were not all
    // from the queue, but it must not fill the queue more often.
    assert!(on_drops <= off_drops + off_drops / 20, "{on} vs {off}");
    assert!(off >= 5.0, "{off:.2} Mbit/s through 20: recovery regressed");
}

/// The links bench's bulk transfer without namespaces: 64 MiB over a 20 ms round trip
/// through a 300 Mbit/s bottleneck (512 KiB buffer, tail drop) that loses 1 % of data
/// segments at random, and the same path without random loss. Before SACK-based
/// recovery (`third_party/smoltcp/PATCHES.md`) the lossy run crawled at 13 Mbit/s: each
/// loss was found by the tail loss probe (a receiver that ACKs each burst once sends too
/// few duplicates), holes were repaired one per round trip, and the window stood still
/// behind them; the sender also resent what the receiver held, and a receiver holding
/// four out-of-order ranges dropped the rest. With SACK and without pacing (printed as
/// `pacing_off`) the sender still overflowed the bottleneck's buffer in bursts (3 000+
/// drops, 84-108 Mbit/s); paced, it drops nothing there.
#[test]
fn bulk_on_a_fast_path_with_one_percent_loss() {
    let run_buffers = |loss: f64, pacing: bool, buffer: Option<usize>| {
        let mut p = Path::new(Duration::from_millis(10), |c| {
            c.tcp_pacing = pacing;
            if let Some(b) = buffer {
                c.tcp_rx_buffer = b;
                c.tcp_tx_buffer = b;
            }
        });
        if loss > 0.0 {
            p.drop_random = Some((loss, 0x9e37_79b9_7f4a_7c15));
        }
        p.bottleneck = Some((300e6 / 8.0, 512 << 10));
        let mbit = bulk_rate_of(&mut p, 64 << 20);
        println!(
            "bulk_64mib_300mbit_{}pct_loss_pacing_{}{}: {mbit:.1} Mbit/s, {} bottleneck drops, \
             {} data segments (64 MiB is ~54 700)",
            loss * 100.0,
            if pacing { "on" } else { "off" },
            buffer.map_or(String::new(), |b| format!("_{}mib_buffers", b >> 20)),
            p.bottleneck_drops,
            p.data_from_a
        );
        (mbit, p.data_from_a)
    };
    let run_with = |loss: f64, pacing: bool| run_buffers(loss, pacing, None);
    let run = |loss: f64| run_with(loss, true);
    run_with(0.01, false);
    run_with(0.0, false);
    let (lossy, lossy_segments) = run(0.01);
    let (clean, _) = run(0.0);
    // A window larger than the path holds: the queue overflows in bursts, and repairs
    // are themselves lost. Printed, for the record.
    run_buffers(0.0, true, Some(4 << 20));
    run_buffers(0.01, true, Some(4 << 20));
    // Without the bottleneck (as on the emulated link, which is not rate-limited) the
    // receive window bounds the flight: a hole pins the window's left edge for the round
    // trip and a half it takes to repair, so 1 MiB buffers carry about 1 MiB per 30 ms.
    let unlimited = |buffer: usize| {
        let mut p = Path::new(Duration::from_millis(10), |c| {
            c.tcp_rx_buffer = buffer;
            c.tcp_tx_buffer = buffer;
        });
        p.drop_random = Some((0.01, 0x9e37_79b9_7f4a_7c15));
        let mbit = bulk_rate_of(&mut p, 64 << 20);
        println!(
            "bulk_64mib_unlimited_1pct_loss_{}mib_buffers: {mbit:.1} Mbit/s",
            buffer >> 20
        );
        mbit
    };
    let default_buffers = unlimited(NetstackConfig::default().tcp_rx_buffer);
    unlimited(4 << 20);
    assert!(default_buffers >= 120.0, "{default_buffers:.1} Mbit/s");
    assert!(lossy >= 130.0, "1 % loss: {lossy:.1} Mbit/s");
    // Resends stay near what was lost: 1 %, and the bottleneck's own drops.
    assert!(
        lossy_segments <= 66_000,
        "{lossy_segments} segments for ~54 700"
    );
    assert!(clean >= 80.0, "no random loss: {clean:.1} Mbit/s");
}
