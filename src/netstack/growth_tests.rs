//! TCP buffers that grow (`autotune.rs`), on the simulated path of `recovery_tests`.
#![allow(clippy::disallowed_methods)]

use super::recovery_tests::{Path, bulk_rate_of, cx};
use super::*;
use std::task::Poll;

const SEEDS: [u64; 6] = [
    0x9e37_79b9_7f4a_7c15,
    0x1234_5678_9abc_def1,
    0xdead_beef_cafe_f00d,
    0x0bad_c0de_1357_9bdf,
    0x7777_1111_3333_5555,
    0x2468_ace0_1357_9bdf,
];

/// 64 MiB a -> b over 20 ms at 1 % random loss, once per seed: the mean rate, and
/// whether every run grew both buffers.
fn lossy_runs(bottleneck: bool, grow: bool) -> (f64, bool) {
    let mut rates = Vec::new();
    let mut grew = true;
    for seed in SEEDS {
        let mut p = Path::new(Duration::from_millis(10), |c| {
            if !grow {
                c.tcp_rx_buffer_max = 0;
                c.tcp_tx_buffer_max = 0;
            }
        });
        p.drop_random = Some((0.01, seed));
        if bottleneck {
            p.bottleneck = Some((300e6 / 8.0, 512 << 10));
        }
        rates.push(bulk_rate_of(&mut p, 64 << 20));
        grew &= p.a.stats().tcp_buffers_grown > 0 && p.b.stats().tcp_buffers_grown > 0;
    }
    let mean = rates.iter().sum::<f64>() / rates.len() as f64;
    println!(
        "growth_{}_{}: mean {mean:.1} Mbit/s, runs {rates:.0?}",
        if bottleneck {
            "300mbit_bottleneck"
        } else {
            "unlimited"
        },
        if grow { "on" } else { "off" },
    );
    (mean, grew)
}

/// What the links bench's bulk transfer needs: with 1 MiB buffers a hole pins the
/// window for the round trip and a half its repair takes, and a 20 ms path at 1 % loss
/// carried ~175 Mbit/s where 4 MiB carried ~380. Grown on demand to 8 MiB, the default
/// buffers carry ~510, provided the receiver's assembler and the sender's scoreboard
/// track the 40-70 holes such a window holds (with 32 ranges and a 16-range board the
/// same runs averaged ~300). Through a bottleneck (where a larger window can only fill
/// the queue) growth must cost nothing.
#[test]
fn grown_buffers_carry_more_on_a_lossy_path_and_no_less_through_a_bottleneck() {
    let (fixed, _) = lossy_runs(false, false);
    let (grown, grew) = lossy_runs(false, true);
    assert!(grew, "a buffer did not grow");
    assert!(grown >= fixed * 2.5, "{grown:.1} vs {fixed:.1} Mbit/s");
    let (fixed, _) = lossy_runs(true, false);
    let (grown, _) = lossy_runs(true, true);
    assert!(grown >= fixed * 0.95, "{grown:.1} vs {fixed:.1} Mbit/s");
}

/// A reader that takes 16 KiB every 10 ms holds its window shut: neither its receive
/// buffer nor the sender's send buffer grows, however much the sender queues.
#[test]
fn a_slow_reader_grows_no_buffer() {
    let mut p = Path::new(Duration::from_millis(10), |_| {});
    let (c, s) = p.connect();
    let chunk = vec![7u8; 64 << 10];
    let mut buf = vec![0u8; 16 << 10];
    let start = p.now;
    let mut got = 0;
    while p.now - start < Duration::from_secs(3) {
        while let Poll::Ready(Ok(k)) = p.a.tcp_poll_write(c, &mut cx(), &chunk) {
            if k == 0 {
                break;
            }
        }
        let until = p.now + Duration::from_millis(10);
        while p.step(until) {}
        if let Poll::Ready(Ok(k)) = p.b.tcp_poll_read(s, &mut cx(), &mut buf) {
            got += k;
        }
    }
    assert!(got >= 4 << 20, "read {got}");
    assert_eq!(p.a.stats().tcp_buffers_grown, 0);
    assert_eq!(p.b.stats().tcp_buffers_grown, 0);
}

/// Growth comes out of the netstack's budget: with room for one connection's growth,
/// two bulk transfers side by side grow one buffer each way and the rest is refused (and
/// counted); what was taken returns when the sockets are freed.
#[test]
fn growth_stays_within_the_budget_and_returns_when_the_socket_goes() {
    let mut p = Path::new(Duration::from_millis(10), |c| {
        c.tcp_growth_budget = 3 << 20;
    });
    p.drop_random = Some((0.01, SEEDS[0]));
    let conns = [p.connect(), p.connect_on(81)];
    let chunk = vec![7u8; 64 << 10];
    let mut buf = vec![0u8; 64 << 10];
    let total = 32 << 20;
    let mut sent = [0usize; 2];
    let mut got = [0usize; 2];
    let start = p.now;
    while got.iter().any(|g| *g < total) && p.now - start < Duration::from_secs(60) {
        for (i, (c, _)) in conns.iter().enumerate() {
            while sent[i] < total {
                let n = chunk.len().min(total - sent[i]);
                match p.a.tcp_poll_write(*c, &mut cx(), &chunk[..n]) {
                    Poll::Ready(Ok(k)) if k > 0 => sent[i] += k,
                    _ => break,
                }
            }
        }
        let until = p.now + Duration::from_millis(1);
        while p.step(until) {}
        for (i, (_, s)) in conns.iter().enumerate() {
            while let Poll::Ready(Ok(k)) = p.b.tcp_poll_read(*s, &mut cx(), &mut buf) {
                if k == 0 {
                    break;
                }
                got[i] += k;
            }
        }
    }
    assert_eq!(got, [total; 2]);
    for stack in [&p.a, &p.b] {
        let st = stack.stats();
        assert_eq!(st.tcp_buffers_grown, 1, "{st:?}");
        assert_eq!(st.tcp_grown_bytes, 3 << 20, "{st:?}");
        assert!(st.tcp_growth_refused > 0, "{st:?}");
    }
    for (c, s) in conns {
        p.a.tcp_release(c, p.now);
        p.b.tcp_release(s, p.now);
    }
    let freed = p.run_until(Duration::from_secs(60), |p| {
        p.a.stats().tcp_sockets == 0 && p.b.stats().tcp_sockets <= 1
    });
    assert!(freed.is_some(), "{:?} {:?}", p.a.stats(), p.b.stats());
    assert_eq!(p.a.stats().tcp_grown_bytes, 0);
    assert_eq!(p.b.stats().tcp_grown_bytes, 0);
}
