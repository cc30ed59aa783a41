//! Test hosts in network namespaces this test creates itself, joined to the root
//! namespace by a veth pair or an emulated link (`link.rs`). Everything is torn down on
//! drop.

#![allow(dead_code)]

use super::link::{Link, LinkParams};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Whether this machine can run namespace tests (root, `ip`, the binaries named).
pub fn available(tools: &[&str]) -> Result<(), String> {
    if !nix_is_root() {
        return Err("not root".into());
    }
    for t in tools.iter().chain(["ip"].iter()) {
        let ok = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {t}"))
            .output()
            .map(|o| o.status.success());
        if !matches!(ok, Ok(true)) {
            return Err(format!("{t} not installed"));
        }
    }
    Ok(())
}

/// Skips the calling test with a message, unless running in CI, where every
/// prerequisite is installed by the test script and a skip would hide a failure.
pub fn require(tools: &[&str]) -> bool {
    match available(tools) {
        Ok(()) => true,
        Err(why) if std::env::var("CI").is_ok() => panic!("namespace test cannot run in CI: {why}"),
        Err(why) => {
            eprintln!("SKIPPED: {why} (run the README test command to install prerequisites)");
            false
        }
    }
}

fn nix_is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with a veth pair (or an emulated link) to the root namespace.
pub struct Netns {
    /// Namespace name.
    pub name: String,
    /// Short unique number, used to derive names and addresses.
    pub n: u32,
    /// Root-side veth address (no prefix).
    pub host_ip: String,
    /// Namespace-side veth address (no prefix).
    pub ns_ip: String,
    /// The root side's interface name.
    pub host_if: String,
    /// The emulator, when the namespace was made with [`Netns::with_link`]: a is the
    /// root side, b the namespace.
    pub link: Option<Link>,
    children: Vec<Child>,
}

impl Netns {
    /// Creates the namespace, the veth pair and their addresses (a /30 per namespace).
    pub fn new() -> Self {
        Self::build(None)
    }

    /// The same joined by an emulated link: root → namespace behaves as `out`, namespace
    /// → root as `back`.
    pub fn with_link(out: &LinkParams, back: &LinkParams, seed: u64) -> Self {
        Self::build(Some((out, back, seed)))
    }

    fn build(link: Option<(&LinkParams, &LinkParams, u64)>) -> Self {
        let n = (std::process::id() % 200) * 50 + NEXT.fetch_add(1, Ordering::Relaxed) % 50;
        let name = format!("aw{}", n);
        let host_if = format!("awh{n}");
        let ns_if = format!("awn{n}");
        let (b, c) = (n / 64 % 250, (n % 64) * 4);
        let host_ip = format!("10.213.{b}.{}", c + 1);
        let ns_ip = format!("10.213.{b}.{}", c + 2);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        run(&["ip", "netns", "add", &name]);
        let link = match link {
            Some((out, back, seed)) => Some(Link::start(
                ("-", &host_if),
                (&name, &ns_if),
                out,
                back,
                seed,
                Duration::from_secs(1800),
            )),
            None => {
                run(&[
                    "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
                ]);
                run(&["ip", "link", "set", &ns_if, "netns", &name]);
                None
            }
        };
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/30"),
            "dev",
            &host_if,
        ]);
        run(&["ip", "link", "set", &host_if, "up"]);
        run(&[
            "ip",
            "-n",
            &name,
            "addr",
            "add",
            &format!("{ns_ip}/30"),
            "dev",
            &ns_if,
        ]);
        run(&["ip", "-n", &name, "link", "set", &ns_if, "up"]);
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Self {
            name,
            n,
            host_ip,
            ns_ip,
            host_if,
            link,
            children: Vec::new(),
        }
    }

    /// The emulator between the root namespace (a) and this one (b).
    ///
    /// # Panics
    /// If the namespace was made with a veth pair.
    pub fn link(&mut self) -> &mut Link {
        self.link.as_mut().expect("made with Netns::with_link")
    }

    /// Runs a command inside the namespace to completion; panics on failure.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawn");
        assert!(
            out.status.success(),
            "{:?} failed: {}",
            args,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a command inside the namespace and returns (success, stdout+stderr).
    pub fn try_exec(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(args)
            .output()
            .expect("spawn");
        let mut s = String::from_utf8_lossy(&out.stdout).into_owned();
        s.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), s)
    }

    /// Starts a long-running command inside the namespace; killed on drop. Its stdout
    /// is piped so callers can wait for a readiness line.
    pub fn spawn(&mut self, args: &[&str], env: &[(&str, &str)]) -> &mut Child {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            c.env(k, v);
        }
        self.children.push(c.spawn().expect("spawn in namespace"));
        self.children.last_mut().expect("just pushed")
    }

    /// Starts `tests/support/echo.py MODE PORT` (a kernel-TCP peer: `serve`, `sink` or
    /// `source`) and waits until it listens.
    pub fn kernel_peer(&mut self, mode: &str, port: u16) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/echo.py");
        let child = self.spawn(&["python3", script, mode, &port.to_string()], &[]);
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("piped"))
            .read_line(&mut line)
            .expect("echo.py output");
        assert_eq!(line.trim(), "ready", "echo.py {mode} {port}");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        drop(self.link.take());
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}
