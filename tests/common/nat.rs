//! A NAT lab: network namespaces wired as a small internet with home routers in it.
//!
//! ```text
//!   root ns (test process) ──veth── ┐
//!   public host ns ─────────veth─── ├─ br0 in the "inet" ns: the public segment 10.214.x.0/24
//!   router ns (wan) ────────veth─── ┘
//!     └ lan ──veth── host ns behind the router (172.16.0.0/12, a /24 per router)
//! ```
//!
//! Routers masquerade their LAN to their WAN address and let in only what conntrack says
//! belongs to a flow the LAN started, like a home NAT; [`NatKind`] picks the flavour.
//! Every router counts the UDP it forwards, per public address, so a test can tell a
//! direct path (router to router) from a relayed one (router to the relay's address).
//!
//! Tests call `netns::require(&["iptables", "conntrack"])` first. The lab is IPv4 only
//! (IPv6 stays on loopback, off on every lab link) and never changes the root namespace
//! beyond its own veth and the address on it: no forwarding, no iptables there.
//! Everything it created is removed on drop; if the test is panicking, the processes' logs
//! and the routers' counters are printed first.
//!
//! [`Lab::with_links`] makes every segment (root to public segment, each public host and
//! router WAN to the bridge, each router to its LAN host) an emulated link (`link.rs`)
//! instead of a veth pair, with the same behaviour on every segment both ways: e.g. 10 ms
//! each way per segment gives a NATed host 20 ms one way to a public host.

#![allow(dead_code, clippy::disallowed_methods)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::link::{Link, LinkParams};

/// Labs that can exist at once on a machine (bounded by the address plan below).
const LABS: u32 = 512;
/// Routers per lab (each takes a LAN /24 of the lab's block of eight).
const ROUTERS: usize = 8;
/// Public hosts per lab (addresses .10 to .99 of the public /24).
const PUBLIC_HOSTS: usize = 90;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// How a router translates and filters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatKind {
    /// `MASQUERADE`: the source port is kept when free, so one local port maps to the same
    /// public port for every destination (endpoint-independent mapping in practice);
    /// inbound only from the exact address and port the flow went to. Hole punching works.
    Masquerade,
    /// `MASQUERADE --random-fully`: every new flow gets a random public port, so the port a
    /// third party observed is useless to a peer (a "symmetric" NAT). Hole punching fails.
    RandomFully,
    /// Masquerades TCP like [`NatKind::Masquerade`] but drops every forwarded UDP datagram:
    /// a network where only a relay over TCP gets through.
    BlockUdp,
}

/// The router in front of a NATed host.
#[derive(Debug, Clone)]
pub struct Router {
    /// The router's namespace.
    pub ns: String,
    /// Its address on the public segment, the one its LAN is masqueraded to.
    pub wan_ip: IpAddr,
    /// Its address on the LAN, the host's default gateway.
    pub lan_ip: IpAddr,
    /// How it translates and filters.
    pub kind: NatKind,
}

/// A host in the lab: a namespace with one interface (`eth0`) and loopback.
#[derive(Debug, Clone)]
pub struct Host {
    /// The name the test gave it (used in namespace and log names).
    pub name: String,
    /// Its namespace, for `ip netns exec`.
    pub ns: String,
    /// Its own address: on the public segment for a public host, on the LAN behind a router.
    pub ip: IpAddr,
    /// The router in front of it; `None` for a public host.
    pub router: Option<Router>,
}

impl Host {
    /// The address the public segment sees this host's traffic from: its router's WAN
    /// address if it is NATed, its own otherwise.
    pub fn public_ip(&self) -> IpAddr {
        self.router.as_ref().map_or(self.ip, |r| r.wan_ip)
    }

    /// Its router's WAN address, if it is behind one.
    pub fn router_ip(&self) -> Option<IpAddr> {
        self.router.as_ref().map(|r| r.wan_ip)
    }

    fn nat(&self) -> &Router {
        self.router
            .as_ref()
            .unwrap_or_else(|| panic!("{} is a public host, not behind a router", self.name))
    }
}

/// A process started with [`Lab::spawn`]. Its output goes to two files in the lab's
/// temporary directory, readable while it runs and until the lab is dropped.
#[derive(Debug, Clone)]
pub struct Proc {
    /// `<host>-<program>-<n>`, used in log file names and dumps.
    pub label: String,
    /// Its process id (also its process group: the lab kills the whole group).
    pub pid: u32,
    /// File receiving its stdout.
    pub stdout_path: PathBuf,
    /// File receiving its stderr.
    pub stderr_path: PathBuf,
    idx: usize,
}

impl Proc {
    /// Its stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Its stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Its stdout then its stderr, so far.
    pub fn log(&self) -> String {
        format!("{}{}", self.stdout(), self.stderr())
    }

    /// Waits until `needle` appears in its stdout or stderr; false at the timeout.
    pub fn wait_for(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        loop {
            if self.log().contains(needle) {
                return true;
            }
            if start.elapsed() >= timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Running {
    child: Child,
    proc: Proc,
    done: bool,
}

struct RouterState {
    name: String,
    ns: String,
    wan: Ipv4Addr,
}

/// The lab. See the module documentation for the topology.
pub struct Lab {
    id: u32,
    inet: String,
    root_if: String,
    root_ip: Ipv4Addr,
    /// Every namespace created, in creation order (the inet first).
    namespaces: Vec<String>,
    names: Vec<String>,
    public_hosts: usize,
    routers: Vec<RouterState>,
    /// Every address on the public segment: the root's, public hosts', routers' WANs.
    public: Vec<Ipv4Addr>,
    /// Interfaces on the public segment, with emulated links: (namespace or `-` for the
    /// root, interface, address, MAC), for [`Lab::join_segment`].
    segment: Vec<(String, String, Ipv4Addr, String)>,
    procs: Vec<Running>,
    /// Behaviour of every segment when the lab emulates its links.
    link: Option<LinkParams>,
    /// The emulators, one per segment (stopped before the namespaces go).
    links: Vec<Link>,
    dir: tempfile::TempDir,
}

/// The public /24 of lab `id`: 10.214.0.0/24 to 10.215.255.0/24 (tests/common/netns.rs
/// uses 10.213.0.0/16).
fn public_addr(id: u32, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 214 + (id / 256) as u8, (id % 256) as u8, host)
}

/// The LAN /24 of router `j` of lab `id`, in 172.16.0.0/12.
fn lan_addr(id: u32, j: usize, host: u8) -> Ipv4Addr {
    let n = id * ROUTERS as u32 + j as u32;
    Ipv4Addr::new(172, 16 + (n / 256) as u8, (n % 256) as u8, host)
}

fn read_lossy(p: &Path) -> String {
    std::fs::read(p)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn output(args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(args[0]);
    c.args(&args[1..])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap_or_else(|e| panic!("spawn {args:?}: {e}"));
    if let Some(text) = stdin {
        let mut w = child.stdin.take().expect("piped stdin");
        w.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn run(args: &[&str]) -> String {
    let (ok, out, err) = output(args, None);
    assert!(ok, "{args:?} failed: {err}");
    out
}

fn quiet(args: &[&str]) {
    let _ = output(args, None);
}

/// Filter rules counting one public peer's UDP through a router (inserted at the top of the
/// `aw-fwd` chain, which only sees forwarded traffic that was let through).
fn peer_rules(ip: Ipv4Addr) -> String {
    format!(
        "-I aw-fwd 1 -o wan -d {ip} -p udp -m comment --comment out:{ip}\n\
         -I aw-fwd 1 -i wan -s {ip} -p udp -m comment --comment in:{ip}\n"
    )
}

impl Lab {
    /// Creates the public segment (a bridge in its own namespace) and joins the root
    /// namespace to it, so the test process reaches public hosts and routers' WAN
    /// addresses directly at [`Lab::root_ip`].
    pub fn new() -> Lab {
        Self::build(None)
    }

    /// A lab whose every segment is an emulated link behaving as `p` both ways.
    pub fn with_links(p: LinkParams) -> Lab {
        Self::build(Some(p))
    }

    fn build(link: Option<LinkParams>) -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("natlab-")
            .tempdir()
            .expect("temp dir");
        let start = std::process::id().wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed) * 97);
        // The inet namespace's name claims the lab number: `ip netns add` fails if another
        // lab (in another test process) has it.
        let mut claimed = None;
        for k in 0..LABS {
            let id = (start + k) % LABS;
            let inet = format!("awl{id}-inet");
            let (ok, _, err) = output(&["ip", "netns", "add", &inet], None);
            if ok {
                claimed = Some((id, inet));
                break;
            }
            assert!(err.contains("exists"), "ip netns add {inet}: {err}");
        }
        let (id, inet) =
            claimed.expect("every lab number is in use (leaked awl*-inet namespaces?)");
        let mut lab = Lab {
            id,
            inet: inet.clone(),
            root_if: format!("awl{id}"),
            root_ip: public_addr(id, 1),
            namespaces: vec![inet.clone()],
            names: Vec::new(),
            public_hosts: 0,
            routers: Vec::new(),
            public: vec![public_addr(id, 1)],
            segment: Vec::new(),
            procs: Vec::new(),
            link,
            links: Vec::new(),
            dir,
        };
        lab.init_ns(&inet);
        run(&["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &inet, "link", "set", "br0", "up"]);
        // The root side keeps its name in the root namespace; the number is ours, so an
        // interface by that name is a leftover.
        let root_if = lab.root_if.clone();
        quiet(&["ip", "link", "del", &root_if]);
        lab.veth("-", &root_if, &inet, "root");
        lab.bridge_port("root");
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}/24", lab.root_ip),
            "dev",
            &root_if,
        ]);
        run(&["ip", "link", "set", &root_if, "up"]);
        let root_ip = lab.root_ip;
        lab.join_segment("-", &root_if, root_ip);
        lab
    }

    /// With emulated links, tells `dev` (in `ns`, `-` for the root) and every interface
    /// already on the public segment each other's MAC address. Each ARP exchange would
    /// otherwise cost the first packet between two hosts a round trip of the emulated
    /// delay, which a routed WAN never shows: there, hosts reach each other through a
    /// gateway whose address is long resolved.
    fn join_segment(&mut self, ns: &str, dev: &str, ip: Ipv4Addr) {
        if self.link.is_none() {
            return;
        }
        let ip_cmd = |ns: &str, args: &[&str]| -> (bool, String, String) {
            let mut v = vec!["ip"];
            if ns != "-" {
                v.extend(["-n", ns]);
            }
            v.extend(args);
            output(&v, None)
        };
        let (ok, out, err) = ip_cmd(ns, &["-o", "link", "show", "dev", dev]);
        assert!(ok, "ip link show {dev} in {ns}: {err}");
        let mac = out
            .split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .unwrap_or_else(|| panic!("no MAC address for {dev} in {ns}: {out}"))
            .to_string();
        for (ons, odev, oip, omac) in &self.segment {
            for (a_ns, a_dev, b_ip, b_mac) in
                [(ns, dev, *oip, omac.as_str()), (ons, odev, ip, &mac)]
            {
                let b_ip = b_ip.to_string();
                let (ok, _, err) = ip_cmd(
                    a_ns,
                    &[
                        "neigh",
                        "replace",
                        &b_ip,
                        "lladdr",
                        b_mac,
                        "dev",
                        a_dev,
                        "nud",
                        "permanent",
                    ],
                );
                assert!(ok, "ip neigh replace {b_ip} in {a_ns}: {err}");
            }
        }
        self.segment.push((ns.into(), dev.into(), ip, mac));
    }

    /// The lab's number (0..512), from which its names and addresses derive.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The root namespace's address on the public segment: the test process's own
    /// address as public hosts and routers see it (bind servers run in-process to it).
    pub fn root_ip(&self) -> IpAddr {
        self.root_ip.into()
    }

    /// Every namespace the lab created so far.
    pub fn namespaces(&self) -> &[String] {
        &self.namespaces
    }

    /// The root namespace's interface onto the public segment.
    pub fn root_link(&self) -> &str {
        &self.root_if
    }

    /// A temporary directory that lives as long as the lab (logs are written here; tests
    /// may put configuration files in it too).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// A host directly on the public segment (a server, a relay, a STUN-like reflector).
    /// Its address is [`Host::ip`].
    pub fn public_host(&mut self, name: &str) -> Host {
        self.claim_name(name);
        assert!(self.public_hosts < PUBLIC_HOSTS, "too many public hosts");
        let i = self.public_hosts;
        self.public_hosts += 1;
        let ns = format!("awl{}-{name}", self.id);
        let ip = public_addr(self.id, 10 + i as u8);
        self.init_ns(&ns);
        let port = format!("p{i}");
        let inet = self.inet.clone();
        self.veth(&ns, "eth0", &inet, &port);
        self.bridge_port(&port);
        self.addr_up(&ns, "eth0", ip);
        self.join_segment(&ns, "eth0", ip);
        for r in &self.routers {
            self.restore(&r.ns, &peer_rules(ip));
        }
        self.public.push(ip);
        Host {
            name: name.into(),
            ns,
            ip: ip.into(),
            router: None,
        }
    }

    /// A router (WAN on the public segment, LAN on its own /24) with one host behind it;
    /// returns the host, whose [`Host::router`] describes the router.
    pub fn nat_host(&mut self, name: &str, kind: NatKind) -> Host {
        self.claim_name(name);
        assert!(self.routers.len() < ROUTERS, "too many routers");
        let j = self.routers.len();
        let rns = format!("awl{}-{name}-gw", self.id);
        let hns = format!("awl{}-{name}", self.id);
        let wan = public_addr(self.id, 100 + j as u8);
        let (lan_gw, lan_host) = (lan_addr(self.id, j, 1), lan_addr(self.id, j, 2));
        self.init_ns(&rns);
        self.init_ns(&hns);
        let port = format!("r{j}");
        let inet = self.inet.clone();
        self.veth(&rns, "wan", &inet, &port);
        self.bridge_port(&port);
        self.addr_up(&rns, "wan", wan);
        self.join_segment(&rns, "wan", wan);
        self.veth(&hns, "eth0", &rns, "lan");
        self.addr_up(&rns, "lan", lan_gw);
        self.addr_up(&hns, "eth0", lan_host);
        run(&[
            "ip",
            "-n",
            &hns,
            "route",
            "add",
            "default",
            "via",
            &lan_gw.to_string(),
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &rns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv4/ip_forward",
        ]);

        // Inbound is dropped at INPUT as well as FORWARD: an unsolicited datagram to the
        // WAN address is addressed to the router itself, and letting it through INPUT
        // would answer it with an ICMP error and commit a conntrack entry that takes the
        // port a later outbound flow wants (a real home router drops it silently).
        let masq = match kind {
            NatKind::RandomFully => "-j MASQUERADE --random-fully",
            NatKind::Masquerade | NatKind::BlockUdp => "-j MASQUERADE",
        };
        let mut rules = format!("*nat\n-A POSTROUTING -o wan {masq}\nCOMMIT\n");
        rules.push_str(
            "*filter\n\
             :INPUT ACCEPT [0:0]\n\
             :FORWARD DROP [0:0]\n\
             :OUTPUT ACCEPT [0:0]\n\
             :aw-fwd - [0:0]\n\
             -A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT\n\
             -A INPUT -i wan -p udp -m comment --comment drop-udp -j DROP\n\
             -A INPUT -i wan -j DROP\n\
             -A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j aw-fwd\n\
             -A FORWARD -i wan -p udp -m comment --comment drop-udp -j DROP\n\
             -A FORWARD -i wan -j DROP\n",
        );
        if kind == NatKind::BlockUdp {
            rules.push_str("-A FORWARD -i lan -p udp -m comment --comment drop-udp -j DROP\n");
        }
        rules.push_str(
            "-A FORWARD -i lan -j aw-fwd\n\
             -A aw-fwd -o wan -p udp -m comment --comment out:all\n\
             -A aw-fwd -i wan -p udp -m comment --comment in:all\n\
             -A aw-fwd -j ACCEPT\n",
        );
        for ip in &self.public {
            rules.push_str(&peer_rules(*ip));
        }
        rules.push_str("COMMIT\n");
        let (ok, _, err) = output(
            &["ip", "netns", "exec", &rns, "iptables-restore"],
            Some(&rules),
        );
        assert!(ok, "iptables-restore in {rns}: {err}\n{rules}");
        for r in &self.routers {
            self.restore(&r.ns, &peer_rules(wan));
        }
        self.public.push(wan);
        self.routers.push(RouterState {
            name: name.into(),
            ns: rns.clone(),
            wan,
        });
        Host {
            name: name.into(),
            ns: hns,
            ip: lan_host.into(),
            router: Some(Router {
                ns: rns,
                wan_ip: wan.into(),
                lan_ip: lan_gw.into(),
                kind,
            }),
        }
    }

    /// Starts `cmd` inside `host`'s namespace (`ip netns exec NS program args...`, with
    /// `cmd`'s environment changes and working directory), stdin from /dev/null, stdout
    /// and stderr to files in [`Lab::dir`]. The process (and its process group) is killed
    /// when the lab is dropped, or by [`Lab::kill`].
    pub fn spawn(&mut self, host: &Host, cmd: &mut Command) -> Proc {
        self.spawn_inner(host, cmd, false)
    }

    /// [`Lab::spawn`] with stdin a pipe the test writes to with [`Lab::write_stdin`].
    pub fn spawn_with_stdin(&mut self, host: &Host, cmd: &mut Command) -> Proc {
        self.spawn_inner(host, cmd, true)
    }

    fn spawn_inner(&mut self, host: &Host, cmd: &mut Command, stdin: bool) -> Proc {
        let idx = self.procs.len();
        let program = Path::new(cmd.get_program())
            .file_name()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let label = format!("{}-{program}-{idx}", host.name);
        let stdout_path = self.dir.path().join(format!("{label}.out"));
        let stderr_path = self.dir.path().join(format!("{label}.err"));
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &host.ns])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => c.env(k, v),
                None => c.env_remove(k),
            };
        }
        if let Some(d) = cmd.get_current_dir() {
            c.current_dir(d);
        }
        c.stdin(if stdin { Stdio::piped() } else { Stdio::null() })
            .stdout(std::fs::File::create(&stdout_path).expect("log file"))
            .stderr(std::fs::File::create(&stderr_path).expect("log file"))
            .process_group(0);
        let child = c
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {label} in {}: {e}", host.ns));
        let proc = Proc {
            label,
            pid: child.id(),
            stdout_path,
            stderr_path,
            idx,
        };
        self.procs.push(Running {
            child,
            proc: proc.clone(),
            done: false,
        });
        proc
    }

    /// Writes `text` to the stdin of a process started with [`Lab::spawn_with_stdin`].
    pub fn write_stdin(&mut self, p: &Proc, text: &str) {
        let r = &mut self.procs[p.idx];
        let w = r
            .child
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{} was not spawned with stdin", p.label));
        w.write_all(text.as_bytes())
            .and_then(|()| w.flush())
            .unwrap_or_else(|e| panic!("write to {}: {e}", p.label));
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait(&mut self, p: &Proc, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(st) = self.procs[p.idx].child.try_wait().expect("try_wait") {
                self.procs[p.idx].done = true;
                return Some(st);
            }
            if start.elapsed() >= timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process's group and reaps it (a crash, from the network's point of view).
    pub fn kill(&mut self, p: &Proc) {
        Self::stop(&mut self.procs[p.idx]);
    }

    fn stop(r: &mut Running) {
        if !r.done {
            let _ = killpg(Pid::from_raw(r.proc.pid as i32), Signal::SIGKILL);
            let _ = r.child.wait();
            r.done = true;
        }
    }

    /// Runs a command in `host`'s namespace to completion; panics on failure, returns stdout.
    pub fn exec(&self, host: &Host, args: &[&str]) -> String {
        let (ok, out) = Self::exec_in(&host.ns, args);
        assert!(ok, "{args:?} in {} failed: {out}", host.ns);
        out
    }

    /// Runs a command in namespace `ns` (a [`Host::ns`] or a [`Router::ns`]) to
    /// completion; returns whether it succeeded and its stdout followed by its stderr.
    pub fn exec_in(ns: &str, args: &[&str]) -> (bool, String) {
        let mut full = vec!["ip", "netns", "exec", ns];
        full.extend_from_slice(args);
        let (ok, out, err) = output(&full, None);
        (ok, out + &err)
    }

    /// UDP packets and bytes (IP lengths) that crossed directly between the routers of
    /// NATed hosts `a` and `b`, both directions, counting only what the receiving router
    /// let in: hole-punching attempts the other NAT dropped do not count, so a non-zero
    /// result means a working direct path.
    pub fn udp_between_routers(&self, a: &Host, b: &Host) -> (u64, u64) {
        let (ra, rb) = (a.nat(), b.nat());
        let (ca, cb) = (self.counters(&ra.ns), self.counters(&rb.ns));
        let get =
            |c: &HashMap<String, (u64, u64)>, k: String| c.get(&k).copied().unwrap_or_default();
        let (p1, b1) = get(&ca, format!("in:{}", rb.wan_ip));
        let (p2, b2) = get(&cb, format!("in:{}", ra.wan_ip));
        (p1 + p2, b1 + b2)
    }

    /// UDP packets and bytes the router in front of `r` forwarded to `public_ip` plus those
    /// it let in from there (a server, a relay, a public host, another router's WAN).
    pub fn udp_router_to(&self, r: &Host, public_ip: IpAddr) -> (u64, u64) {
        let c = self.counters(&r.nat().ns);
        let (po, bo) = c
            .get(&format!("out:{public_ip}"))
            .copied()
            .unwrap_or_default();
        let (pi, bi) = c
            .get(&format!("in:{public_ip}"))
            .copied()
            .unwrap_or_default();
        (po + pi, bo + bi)
    }

    /// All UDP packets and bytes the router in front of `r` forwarded, both directions.
    pub fn udp_router_total(&self, r: &Host) -> (u64, u64) {
        let c = self.counters(&r.nat().ns);
        let (po, bo) = c.get("out:all").copied().unwrap_or_default();
        let (pi, bi) = c.get("in:all").copied().unwrap_or_default();
        (po + pi, bo + bi)
    }

    /// UDP packets and bytes the router in front of `r` dropped: unsolicited inbound, and
    /// for [`NatKind::BlockUdp`] everything outbound.
    pub fn udp_dropped(&self, r: &Host) -> (u64, u64) {
        self.counters(&r.nat().ns)
            .get("drop-udp")
            .copied()
            .unwrap_or_default()
    }

    /// Empties the conntrack table of the router in front of `r`: every mapping is gone,
    /// the next outbound packet of each flow gets a new one (a NAT rebinding), and inbound
    /// packets for the old mappings are dropped.
    pub fn flush_conntrack(&self, r: &Host) {
        let ns = &r.nat().ns;
        let (ok, out) = Self::exec_in(ns, &["conntrack", "-F"]);
        assert!(ok, "conntrack -F in {ns}: {out}");
    }

    /// Every process's log, each router's filter counters and conntrack table: what to
    /// look at when a test fails (printed by drop when the test is panicking).
    pub fn dump(&self) -> String {
        let mut s = String::new();
        for r in &self.procs {
            let p = &r.proc;
            let _ = write!(
                s,
                "----- {} (pid {}) stdout -----\n{}\n----- {} stderr -----\n{}\n",
                p.label,
                p.pid,
                p.stdout(),
                p.label,
                p.stderr()
            );
        }
        for r in &self.routers {
            let (_, rules) = Self::exec_in(&r.ns, &["iptables-save", "-c"]);
            let (_, ct) = Self::exec_in(&r.ns, &["conntrack", "-L"]);
            let _ = write!(
                s,
                "----- router {} ({}, wan {}) -----\n{rules}{ct}\n",
                r.name, r.ns, r.wan
            );
        }
        s
    }

    /// Counter of every commented rule in a router's filter table, summed by comment.
    fn counters(&self, ns: &str) -> HashMap<String, (u64, u64)> {
        let (ok, out) = Self::exec_in(ns, &["iptables-save", "-c", "-t", "filter"]);
        assert!(ok, "iptables-save in {ns}: {out}");
        let mut m: HashMap<String, (u64, u64)> = HashMap::new();
        for line in out.lines() {
            // "[packets:bytes] -A chain ... -m comment --comment name ..."
            let Some((count, rule)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
                continue;
            };
            let Some((p, b)) = count.split_once(':') else {
                continue;
            };
            let mut toks = rule.split_whitespace();
            if toks.any(|t| t == "--comment")
                && let Some(name) = toks.next()
            {
                let e = m.entry(name.trim_matches('"').to_string()).or_default();
                e.0 += p.parse::<u64>().unwrap_or(0);
                e.1 += b.parse::<u64>().unwrap_or(0);
            }
        }
        m
    }

    fn claim_name(&mut self, name: &str) {
        assert!(
            !name.is_empty() && name.len() <= 24 && name.bytes().all(|c| c.is_ascii_alphanumeric()),
            "host name {name:?}: 1 to 24 letters and digits"
        );
        assert!(
            !self.names.iter().any(|n| n == name),
            "host name {name:?} used twice"
        );
        self.names.push(name.into());
    }

    /// Creates namespace `ns` (replacing a leftover of an earlier lab with this number),
    /// brings loopback up and keeps IPv6 off the links created in it later.
    fn init_ns(&mut self, ns: &str) {
        if ns != self.inet {
            quiet(&["ip", "netns", "del", ns]);
            run(&["ip", "netns", "add", ns]);
            self.namespaces.push(ns.into());
        }
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            ns,
            "sh",
            "-c",
            "echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6",
        ]);
    }

    /// A veth pair created directly in its two namespaces (`-`: the root namespace), or
    /// an emulated link when the lab has one.
    fn veth(&mut self, ns_a: &str, if_a: &str, ns_b: &str, if_b: &str) {
        if let Some(p) = &self.link {
            let seed = u64::from(self.id) * 1000 + self.links.len() as u64;
            let link = Link::symmetric(
                (ns_a, if_a),
                (ns_b, if_b),
                p,
                seed,
                Duration::from_secs(1800),
            );
            self.links.push(link);
            return;
        }
        let mut args = vec!["ip", "link", "add", "name", if_a];
        if ns_a != "-" {
            args.extend(["netns", ns_a]);
        }
        args.extend(["type", "veth", "peer", "name", if_b, "netns", ns_b]);
        run(&args);
    }

    fn bridge_port(&self, port: &str) {
        run(&["ip", "-n", &self.inet, "link", "set", port, "master", "br0"]);
        run(&["ip", "-n", &self.inet, "link", "set", port, "up"]);
    }

    fn addr_up(&self, ns: &str, dev: &str, ip: Ipv4Addr) {
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            dev,
        ]);
        run(&["ip", "-n", ns, "link", "set", dev, "up"]);
    }

    fn restore(&self, ns: &str, filter_rules: &str) {
        let text = format!("*filter\n{filter_rules}COMMIT\n");
        let (ok, _, err) = output(
            &["ip", "netns", "exec", ns, "iptables-restore", "--noflush"],
            Some(&text),
        );
        assert!(ok, "iptables-restore in {ns}: {err}\n{text}");
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for r in &mut self.procs {
            Self::stop(r);
        }
        if std::thread::panicking() {
            eprintln!("===== NAT lab {} =====\n{}", self.id, self.dump());
        }
        quiet(&["ip", "link", "del", &self.root_if]);
        self.links.clear();
        for ns in self.namespaces.iter().rev() {
            quiet(&["ip", "netns", "del", ns]);
        }
    }
}
