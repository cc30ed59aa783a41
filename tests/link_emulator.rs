//! The link emulator (`linkem`) between real namespaces, with kernel TCP on both ends:
//! the delay, loss, rate and reordering it is told to apply are what TCP sees, it stops
//! by itself, and a NAT lab can run every segment through it.

#![allow(clippy::disallowed_methods)]

mod common;

use common::link::{Link, LinkParams, echo_rtt, kernel_send};
use common::nat::Lab;
use common::netns::{Netns, require};
use std::process::Command;
use std::time::{Duration, Instant};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn delay_each_way_adds_up_to_the_round_trip() {
    if !require(&["python3"]) {
        return;
    }
    let p = LinkParams::delay_ms(10.0);
    let back = LinkParams::delay_ms(5.0);
    let mut ns = Netns::with_link(&p, &back, 1);
    ns.kernel_peer("serve", 7001);
    let rtt = echo_rtt((ns.ns_ip.as_str(), 7001), 20);
    assert!(rtt >= ms(15), "round trip {rtt:?} below 10 + 5 ms");
    assert!(rtt < ms(22), "round trip {rtt:?} far above 10 + 5 ms");
    let st = ns.link().stats();
    assert!(
        st.a_to_b.delivered >= 20 && st.b_to_a.delivered >= 20,
        "{st:?}"
    );
    assert_eq!(st.a_to_b.lost + st.b_to_a.lost, 0);

    // Changed on the fly: all lost one way, nothing gets through.
    ns.link().set("a>b", &LinkParams::perfect().loss(1.0));
    // Frames already on the link (10 ms) are still delivered.
    std::thread::sleep(ms(50));
    let before = ns.link().stats();
    let c = std::net::TcpStream::connect_timeout(
        &format!("{}:7001", ns.ns_ip).parse().unwrap(),
        ms(300),
    );
    assert!(c.is_err(), "connected through a link that loses everything");
    let after = ns.link().stats();
    assert!(after.a_to_b.lost > before.a_to_b.lost, "{after:?}");
    assert_eq!(after.a_to_b.delivered, before.a_to_b.delivered, "{after:?}");
}

#[test]
fn rate_limit_caps_kernel_tcp_and_loss_is_repaired() {
    if !require(&["python3"]) {
        return;
    }
    // 40 Mbit/s with a 64 KiB buffer and 1 ms each way, 1 % loss and some reordering
    // toward the sink: TCP gets below the rate, never above it, and every byte arrives.
    let out = LinkParams::delay_ms(1.0)
        .rate(40.0, 64 << 10)
        .loss(0.01)
        .reorder(0.01, ms(1));
    let mut ns = Netns::with_link(&out, &LinkParams::delay_ms(1.0), 2);
    ns.kernel_peer("sink", 7002);
    let mbit = kernel_send((ns.ns_ip.as_str(), 7002), 4 << 20);
    assert!(mbit <= 42.0, "{mbit:.1} Mbit/s through a 40 Mbit/s link");
    assert!(
        mbit >= 5.0,
        "{mbit:.1} Mbit/s: the link is far slower than its rate"
    );
    let st = ns.link().stats();
    assert!(st.a_to_b.lost > 0, "{st:?}");
    assert!(st.a_to_b.reordered > 0, "{st:?}");
}

#[test]
fn stops_by_itself_and_removes_its_interfaces() {
    if !require(&[]) {
        return;
    }
    let name = format!("awke{}", std::process::id() % 100_000);
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    assert!(
        Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success()
    );
    let link = Link::symmetric(
        (&name, "x0"),
        (&name, "x1"),
        &LinkParams::perfect(),
        3,
        ms(300),
    );
    let has = |dev: &str| {
        Command::new("ip")
            .args(["-n", &name, "link", "show", dev])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(has("x0") && has("x1"));
    let start = Instant::now();
    while has("x0") && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(ms(20));
    }
    let gone = !has("x0") && !has("x1");
    drop(link);
    let _ = Command::new("ip").args(["netns", "del", &name]).output();
    assert!(gone, "interfaces still there after the time limit");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn nat_lab_runs_every_segment_through_the_emulator() {
    if !require(&["iptables", "conntrack", "python3"]) {
        return;
    }
    let mut lab = Lab::with_links(LinkParams::delay_ms(5.0));
    let server = lab.public_host("server");
    let home = lab.nat_host("home", common::nat::NatKind::Masquerade);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/echo.py");
    let p = lab.spawn(
        &server,
        Command::new("python3").args([script, "serve", "7003"]),
    );
    assert!(p.wait_for("ready", Duration::from_secs(10)), "{}", p.log());
    // Root → bridge → server: two segments of 5 ms each way.
    let rtt = echo_rtt((server.ip, 7003), 10);
    assert!(
        rtt >= ms(20) && rtt < ms(27),
        "round trip {rtt:?}, want ~20 ms"
    );
    // Home host → router → bridge → server: three segments, 30 ms round trips; the
    // client connects and echoes (at least two round trips) through the NAT.
    let t = Instant::now();
    let out = lab.exec(
        &home,
        &[
            "python3",
            script,
            "client",
            &server.ip.to_string(),
            "7003",
            "1000",
        ],
    );
    assert!(out.contains("ok=True"), "{out}");
    assert!(
        t.elapsed() >= ms(60),
        "echo through three 5 ms segments in {:?}",
        t.elapsed()
    );
}
