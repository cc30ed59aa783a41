//! Self-tests of the NAT lab (`tests/common/nat.rs`): its routers behave like home NATs
//! (mapping, filtering, hole punching, port randomisation, UDP blocking, rebinding), its
//! counters count what crossed them, and dropping it leaves nothing behind.
//!
//! The traffic comes from a small Python tool (below) run in the lab's namespaces.

#![allow(clippy::disallowed_methods)]

mod common;

use common::nat::{Host, Lab, NatKind, Proc};
use common::netns::require;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

const TOOLS: &[&str] = &["iptables", "conntrack", "python3"];
const WAIT: Duration = Duration::from_secs(5);
/// The reflectors' port (STUN's).
const REFLECT: u16 = 3478;
/// IPv4 and UDP headers: iptables counts whole IP packets.
const HDR: u64 = 28;

/// `agent PORT [reflect]`: one UDP socket on PORT (plus, with `reflect`, a TCP listener on
/// the same port). Prints `ready PORT`, then `got TEXT from ADDR` for every datagram; with
/// `reflect` it answers each datagram that is not itself an answer, and each TCP
/// connection, with `seen ADDR` (the source address it saw, as a STUN server would).
/// Commands on stdin, one a line: `send HOST PORT TEXT`, and `punch HOST PORT COUNT`
/// (COUNT datagrams `punch`, 50 ms apart, then prints `punched`).
///
/// `send HOST PORT TEXT`: one datagram from a fresh socket. `tcp HOST PORT`: connects
/// (3 s timeout), prints `tcp ` and what the server sent, or `tcp error`.
const TOOL: &str = r#"
import os, select, socket, sys, time

def fmt(a):
    return "%s:%d" % (a[0], a[1])

def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    return s

mode = sys.argv[1]
if mode == "agent":
    reflect = len(sys.argv) > 3
    u = udp(int(sys.argv[2]))
    ins = [u, 0]
    t = None
    if reflect:
        t = socket.socket()
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        t.bind(("0.0.0.0", int(sys.argv[2])))
        t.listen(16)
        ins.append(t)
    print("ready %d" % u.getsockname()[1], flush=True)
    buf, punches = b"", []
    while True:
        wait = None
        if punches:
            wait = max(0.0, min(p[0] for p in punches) - time.monotonic())
        ready, _, _ = select.select(ins, [], [], wait)
        for s in ready:
            if s is u:
                d, a = u.recvfrom(2048)
                text = d.decode(errors="replace")
                print("got %s from %s" % (text, fmt(a)), flush=True)
                if reflect and not text.startswith("seen "):
                    u.sendto(("seen " + fmt(a)).encode(), a)
            elif s is t:
                c, a = t.accept()
                print("tcp from %s" % fmt(a), flush=True)
                c.sendall(("seen " + fmt(a)).encode())
                c.close()
            else:
                chunk = os.read(0, 4096)
                if not chunk:
                    sys.exit(0)
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    w = line.decode().split()
                    if w[0] == "send":
                        u.sendto(" ".join(w[3:]).encode(), (w[1], int(w[2])))
                    elif w[0] == "punch":
                        punches.append([0.0, w[1], int(w[2]), int(w[3])])
        now = time.monotonic()
        for p in punches:
            if p[0] <= now:
                u.sendto(b"punch", (p[1], p[2]))
                p[0], p[3] = now + 0.05, p[3] - 1
                if p[3] == 0:
                    print("punched", flush=True)
        punches = [p for p in punches if p[3] > 0]
elif mode == "send":
    udp(0).sendto(sys.argv[4].encode(), (sys.argv[2], int(sys.argv[3])))
elif mode == "tcp":
    try:
        c = socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
        print("tcp " + c.recv(2048).decode(), flush=True)
    except OSError as e:
        print("tcp error %s" % e, flush=True)
        sys.exit(1)
"#;

fn tool(args: &[&str]) -> Command {
    let mut c = Command::new("python3");
    c.args(["-u", "-c", TOOL]).args(args);
    c
}

/// Starts the tool's agent on `host`, bound to `port`, and waits until it is listening.
fn agent(lab: &mut Lab, host: &Host, port: u16, reflect: bool) -> Proc {
    let port = port.to_string();
    let mut args = vec!["agent", port.as_str()];
    if reflect {
        args.push("reflect");
    }
    let p = lab.spawn_with_stdin(host, &mut tool(&args));
    assert!(
        p.wait_for("ready", WAIT),
        "agent on {}: {}",
        host.name,
        p.log()
    );
    p
}

fn say(lab: &mut Lab, p: &Proc, line: &str) {
    lab.write_stdin(p, &format!("{line}\n"));
}

/// One datagram `text` from a fresh socket on `host` (a source port nobody has seen).
fn send_fresh(lab: &Lab, host: &Host, to: SocketAddr, text: &str) {
    let port = to.port().to_string();
    lab.exec(
        host,
        &[
            "python3",
            "-c",
            TOOL,
            "send",
            &to.ip().to_string(),
            &port,
            text,
        ],
    );
}

/// Lines `got TEXT from ADDR` the agent printed for datagrams from `from`: the texts.
fn got_from(p: &Proc, from: SocketAddr) -> Vec<String> {
    let tail = format!(" from {from}");
    p.stdout()
        .lines()
        .filter_map(|l| {
            l.strip_prefix("got ")?
                .strip_suffix(&tail)
                .map(String::from)
        })
        .collect()
}

/// Waits until the agent has printed a datagram `text` from `from` (each test sends a
/// given text once, or waits for the first of several).
fn wait_got(p: &Proc, from: SocketAddr, text: &str) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < WAIT {
        if got_from(p, from).iter().any(|t| t == text) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Asks agent `p` to send to the reflector at `refl` and returns the mapped address the
/// reflector saw.
fn mapped(lab: &mut Lab, p: &Proc, refl: SocketAddr) -> SocketAddr {
    let seen = |p: &Proc| -> Vec<SocketAddr> {
        got_from(p, refl)
            .iter()
            .filter_map(|t| t.strip_prefix("seen ")?.parse().ok())
            .collect()
    };
    let n = seen(p).len();
    say(lab, p, &format!("send {} {} hello", refl.ip(), refl.port()));
    let start = std::time::Instant::now();
    loop {
        if let Some(a) = seen(p).get(n) {
            return *a;
        }
        assert!(
            start.elapsed() < WAIT,
            "no answer from the reflector {refl}: {}",
            p.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn at(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[test]
fn masquerade_maps_to_the_wan_address_and_lets_replies_in() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl = lab.public_host("refl");
    let home = lab.nat_host("home", NatKind::Masquerade);
    let r = agent(&mut lab, &refl, REFLECT, true);
    let a = agent(&mut lab, &home, 4000, false);
    let wan = home.router_ip().unwrap();
    assert_ne!(home.ip, wan);
    assert_eq!(home.public_ip(), wan);

    let m = mapped(&mut lab, &a, at(refl.ip, REFLECT));
    // The reflector saw the router's WAN address; MASQUERADE kept the free source port.
    assert_eq!(m, at(wan, 4000));
    assert_eq!(got_from(&r, m), ["hello"]);

    // One datagram out, one answer in, counted by the router with their IP lengths.
    let answer = format!("seen {m}").len() as u64;
    let expect = (2, HDR + 5 + HDR + answer);
    assert_eq!(lab.udp_router_to(&home, refl.ip), expect);
    assert_eq!(lab.udp_router_total(&home), expect);
    assert_eq!(lab.udp_router_to(&home, lab.root_ip()), (0, 0));
    assert_eq!(lab.udp_dropped(&home), (0, 0));
}

#[test]
fn root_namespace_is_on_the_public_segment() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl = lab.public_host("refl");
    let home = lab.nat_host("home", NatKind::Masquerade);
    let _r = agent(&mut lab, &refl, REFLECT, true);
    let a = agent(&mut lab, &home, 4000, false);

    // The test process talks to a public host directly...
    let s = UdpSocket::bind((lab.root_ip(), 0)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.send_to(b"hi", at(refl.ip, REFLECT)).unwrap();
    let mut buf = [0u8; 256];
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(from, at(refl.ip, REFLECT));
    assert_eq!(
        &buf[..n],
        format!("seen {}", s.local_addr().unwrap()).as_bytes()
    );

    // ...and serves NATed hosts, which reach it through their router.
    let root = s.local_addr().unwrap();
    say(
        &mut lab,
        &a,
        &format!("send {} {} to-root", root.ip(), root.port()),
    );
    let (n, from) = s.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"to-root");
    assert_eq!(from, at(home.router_ip().unwrap(), 4000));
    s.send_to(b"back", from).unwrap();
    assert!(wait_got(&a, root, "back"), "{}", a.log());
    assert_eq!(lab.udp_router_to(&home, lab.root_ip()).0, 2);
}

#[test]
fn unsolicited_inbound_is_dropped() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl = lab.public_host("refl");
    let home = lab.nat_host("home", NatKind::Masquerade);
    let r = agent(&mut lab, &refl, REFLECT, true);
    let a = agent(&mut lab, &home, 4000, false);
    let m = mapped(&mut lab, &a, at(refl.ip, REFLECT));

    // To the mapped port from a source port the host never sent to; to a port never
    // mapped; and from the root namespace.
    send_fresh(&lab, &refl, m, "unsolicited");
    send_fresh(&lab, &refl, at(m.ip(), 4999), "fresh-port");
    UdpSocket::bind((lab.root_ip(), 0))
        .unwrap()
        .send_to(b"from-root", m)
        .unwrap();
    // From the address and port the flow went to: let in. Sent last on the same path, so
    // once it has arrived the others would have too.
    say(&mut lab, &r, &format!("send {} {} late", m.ip(), m.port()));
    assert!(wait_got(&a, at(refl.ip, REFLECT), "late"), "{}", a.log());

    let log = a.stdout();
    assert!(
        !log.contains("unsolicited") && !log.contains("from-root"),
        "{log}"
    );
    let dropped = lab.udp_dropped(&home);
    assert_eq!(dropped.0, 3, "{dropped:?}");
    // 1 datagram out, 2 answers (seen, late) in.
    assert_eq!(lab.udp_router_to(&home, refl.ip).0, 3);
}

#[test]
fn hole_punch_between_two_masquerade_nats() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl = lab.public_host("refl");
    let alice = lab.nat_host("alice", NatKind::Masquerade);
    let bob = lab.nat_host("bob", NatKind::Masquerade);
    let _r = agent(&mut lab, &refl, REFLECT, true);
    let pa = agent(&mut lab, &alice, 4000, false);
    let pb = agent(&mut lab, &bob, 4000, false);
    let ma = mapped(&mut lab, &pa, at(refl.ip, REFLECT));
    let mb = mapped(&mut lab, &pb, at(refl.ip, REFLECT));
    assert_eq!((ma.ip(), mb.ip()), (alice.public_ip(), bob.public_ip()));
    assert_eq!(lab.udp_between_routers(&alice, &bob), (0, 0));

    // Both send to the other's mapped address at once; the first datagrams meet a closed
    // NAT, the ones after the other side's first get through both.
    say(
        &mut lab,
        &pa,
        &format!("punch {} {} 30", mb.ip(), mb.port()),
    );
    say(
        &mut lab,
        &pb,
        &format!("punch {} {} 30", ma.ip(), ma.port()),
    );
    assert!(
        wait_got(&pa, mb, "punch"),
        "alice heard nothing: {}",
        lab.dump()
    );
    assert!(
        wait_got(&pb, ma, "punch"),
        "bob heard nothing: {}",
        lab.dump()
    );
    assert!(pa.wait_for("punched", WAIT) && pb.wait_for("punched", WAIT));
    std::thread::sleep(Duration::from_millis(100));

    let received = (got_from(&pa, mb).len() + got_from(&pb, ma).len()) as u64;
    let (packets, bytes) = lab.udp_between_routers(&alice, &bob);
    // The routers counted exactly what reached the hosts.
    assert_eq!(packets, received);
    assert_eq!(bytes, packets * (HDR + 5));
    assert!(packets >= 50, "{packets} of 60 punches got through");
    // The reflector carried only the two mapping queries and their answers.
    assert_eq!(lab.udp_router_to(&alice, refl.ip).0, 2);
    assert_eq!(lab.udp_router_to(&bob, refl.ip).0, 2);
}

#[test]
fn random_fully_maps_per_destination_and_defeats_hole_punching() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl1 = lab.public_host("refl1");
    let refl2 = lab.public_host("refl2");
    let sym = lab.nat_host("sym", NatKind::RandomFully);
    let cone = lab.nat_host("cone", NatKind::Masquerade);
    let _r1 = agent(&mut lab, &refl1, REFLECT, true);
    let _r2 = agent(&mut lab, &refl2, REFLECT, true);
    let ps = agent(&mut lab, &sym, 4000, false);
    let pc = agent(&mut lab, &cone, 4000, false);

    let x1 = mapped(&mut lab, &ps, at(refl1.ip, REFLECT));
    let x2 = mapped(&mut lab, &ps, at(refl2.ip, REFLECT));
    assert_eq!((x1.ip(), x2.ip()), (sym.public_ip(), sym.public_ip()));
    assert_ne!(x1.port(), 4000, "random-fully kept the local port");
    assert_ne!(x1.port(), x2.port(), "one mapping for two destinations");
    let mc = mapped(&mut lab, &pc, at(refl1.ip, REFLECT));

    // The peer uses the port the reflector learnt; the symmetric side's packets to the
    // peer leave from yet another port. Neither gets through.
    say(
        &mut lab,
        &ps,
        &format!("punch {} {} 20", mc.ip(), mc.port()),
    );
    say(
        &mut lab,
        &pc,
        &format!("punch {} {} 20", x1.ip(), x1.port()),
    );
    assert!(ps.wait_for("punched", WAIT) && pc.wait_for("punched", WAIT));
    std::thread::sleep(Duration::from_millis(200));
    assert!(!ps.stdout().contains("got punch"), "{}", ps.log());
    assert!(!pc.stdout().contains("got punch"), "{}", pc.log());
    assert_eq!(lab.udp_between_routers(&sym, &cone), (0, 0));
    // The punches did reach the other router, which dropped them.
    assert!(lab.udp_dropped(&sym).0 >= 15 && lab.udp_dropped(&cone).0 >= 15);
}

#[test]
fn block_udp_lets_only_tcp_out() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl = lab.public_host("refl");
    let home = lab.nat_host("home", NatKind::BlockUdp);
    let r = agent(&mut lab, &refl, REFLECT, true);
    let a = agent(&mut lab, &home, 4000, false);
    say(&mut lab, &a, &format!("send {} {REFLECT} hello", refl.ip));

    let out = lab.exec(
        &home,
        &["python3", "-c", TOOL, "tcp", &refl.ip.to_string(), "3478"],
    );
    let seen: SocketAddr = out
        .trim()
        .strip_prefix("tcp seen ")
        .unwrap_or_else(|| panic!("{out}"))
        .parse()
        .unwrap();
    assert_eq!(seen.ip(), home.public_ip(), "TCP is masqueraded");

    assert!(
        !a.wait_for("got", Duration::from_millis(500)),
        "{}",
        a.log()
    );
    assert!(!r.stdout().contains("got hello"), "{}", r.log());
    assert_eq!(lab.udp_dropped(&home), (1, HDR + 5));
    assert_eq!(lab.udp_router_total(&home), (0, 0));
}

#[test]
fn flushing_conntrack_rebinds_and_drops_the_old_mapping() {
    if !require(TOOLS) {
        return;
    }
    let mut lab = Lab::new();
    let refl = lab.public_host("refl");
    let home = lab.nat_host("home", NatKind::RandomFully);
    let r = agent(&mut lab, &refl, REFLECT, true);
    let a = agent(&mut lab, &home, 4000, false);
    let from_refl = at(refl.ip, REFLECT);
    let x = mapped(&mut lab, &a, from_refl);
    say(
        &mut lab,
        &r,
        &format!("send {} {} before", x.ip(), x.port()),
    );
    assert!(wait_got(&a, from_refl, "before"), "{}", a.log());

    lab.flush_conntrack(&home);
    // The old mapping is gone before the host sends again...
    say(
        &mut lab,
        &r,
        &format!("send {} {} stale1", x.ip(), x.port()),
    );
    // ...the host's next datagram gets a new one...
    let y = mapped(&mut lab, &a, from_refl);
    assert_eq!(y.ip(), x.ip());
    assert_ne!(y.port(), x.port(), "same public port after the flush");
    // ...and only the new one lets answers in.
    say(
        &mut lab,
        &r,
        &format!("send {} {} stale2", x.ip(), x.port()),
    );
    say(&mut lab, &r, &format!("send {} {} after", y.ip(), y.port()));
    assert!(wait_got(&a, from_refl, "after"), "{}", a.log());
    assert!(!a.stdout().contains("stale"), "{}", a.log());
    assert_eq!(lab.udp_dropped(&home).0, 2);
}

#[test]
fn dropping_the_lab_removes_what_it_created() {
    if !require(TOOLS) {
        return;
    }
    let netns_list = || -> Vec<String> {
        let out = Command::new("ip").args(["netns", "list"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(String::from))
            .collect()
    };
    let mut lab = Lab::new();
    let srv = lab.public_host("srv");
    let home = lab.nat_host("home", NatKind::RandomFully);
    let p = agent(&mut lab, &home, 4000, false);
    let _q = agent(&mut lab, &srv, 4000, false);
    let namespaces = lab.namespaces().to_vec();
    let link = lab.root_link().to_string();
    let dir = lab.dir().to_path_buf();
    assert_eq!(namespaces.len(), 4, "{namespaces:?}");
    let listed = netns_list();
    assert!(namespaces.iter().all(|n| listed.contains(n)), "{listed:?}");
    assert!(dir.join(format!("{}.out", p.label)).exists());

    drop(lab);
    let listed = netns_list();
    assert!(!namespaces.iter().any(|n| listed.contains(n)), "{listed:?}");
    let link_gone = !Command::new("ip")
        .args(["link", "show", &link])
        .output()
        .unwrap()
        .status
        .success();
    assert!(link_gone, "{link} still exists");
    assert!(!std::path::Path::new(&format!("/proc/{}", p.pid)).exists());
    assert!(!dir.exists());
}
