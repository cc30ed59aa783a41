//! The IO around the scheduling core: two TAP devices, a reader and a sender thread per
//! direction, commands on stdin.
//!
//! A reader takes each frame, hands it to its direction under a lock and writes what is
//! already due itself (with no delay, a frame costs one read and one write: the
//! emulator's own latency is two syscalls and a lock). Frames due later are written by
//! the direction's sender thread, which sleeps on a condition variable until the
//! earliest one is due; a reader wakes it when a frame becomes due sooner than that.

use crate::Args;
use crate::sched::{Direction, Params, Verdict};
use anyhow::{Context as _, bail};
use std::io::{BufRead, Write};
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::time::{Duration, Instant};
use tun_rs::{DeviceBuilder, Layer, SyncDevice};

/// One direction's state, shared by its reader, its sender and the command loop.
struct Shared {
    dir: Direction,
    /// What the sender is sleeping until: `None` when it is awake (it checks the heap
    /// before sleeping again), `Some(None)` when nothing was held.
    sleeping_until: Option<Option<Instant>>,
    /// The sender is writing frames it popped: a reader must leave due frames to it, or
    /// they could pass the ones being written.
    sending: bool,
    write_errors: u64,
}

struct Half {
    state: Mutex<Shared>,
    wake: Condvar,
}

impl Half {
    fn lock(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panicking thread ends the process (see `run`); the state is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stats_line(&self, name: &str) -> String {
        let s = self.lock();
        format!(
            "{name} {} write_errors={} held={}",
            s.dir.stats(),
            s.write_errors,
            s.dir.held()
        )
    }
}

fn parse_end(s: &str) -> anyhow::Result<(Option<String>, String)> {
    let (ns, ifname) = s
        .rsplit_once(':')
        .with_context(|| format!("{s:?}: expected NAMESPACE:INTERFACE"))?;
    if ifname.is_empty() || ifname.len() > 15 {
        bail!("{s:?}: interface names are 1 to 15 characters");
    }
    Ok((
        (ns != "-" && !ns.is_empty()).then(|| ns.to_string()),
        ifname.to_string(),
    ))
}

fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Creates a TAP device under a temporary name, then moves and renames it into place.
fn open_end(tmp: &str, ns: Option<&str>, ifname: &str, mtu: u16) -> anyhow::Result<SyncDevice> {
    let dev = DeviceBuilder::new()
        .name(tmp)
        .layer(Layer::L2)
        .mtu(mtu)
        .enable(false)
        .build_sync()
        .with_context(|| format!("creating TAP device {tmp}"))?;
    match ns {
        Some(ns) => {
            ip(&["link", "set", "dev", tmp, "netns", ns, "name", ifname])?;
            ip(&["-n", ns, "link", "set", ifname, "up"])?;
        }
        None => {
            ip(&["link", "set", "dev", tmp, "name", ifname])?;
            ip(&["link", "set", ifname, "up"])?;
        }
    }
    Ok(dev)
}

/// Reads frames from `from` into `half` for as long as the process lives.
fn reader(from: Arc<SyncDevice>, to: Arc<SyncDevice>, half: Arc<Half>) {
    let mut buf = vec![0u8; 65536];
    let mut due = Vec::new();
    loop {
        let n = match from.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The TAP device went with its namespace (the test is tearing down): the
            // kernel answers a read on the orphaned descriptor with EFAULT or EBADFD.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EFAULT | libc::EBADFD)) => {
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("linkem: read: {e}");
                std::process::exit(1);
            }
        };
        let now = Instant::now();
        {
            let mut s = half.lock();
            if s.dir.handle_frame(now, buf[..n].to_vec()) != Verdict::Queued {
                continue;
            }
            if !s.sending {
                while let Some(f) = s.dir.poll_transmit(now) {
                    due.push(f);
                }
            }
            let next = s.dir.poll_timeout();
            let wake = match (s.sleeping_until, next) {
                (Some(None), Some(_)) => true,
                (Some(Some(until)), Some(next)) => next < until,
                _ => false,
            };
            if wake {
                half.wake.notify_one();
            }
        }
        for f in due.drain(..) {
            if to.send(&f).is_err() {
                half.lock().write_errors += 1;
            }
        }
    }
}

/// Writes frames of `half` to `to` when they are due.
fn sender(to: Arc<SyncDevice>, half: Arc<Half>) {
    let mut due = Vec::new();
    let mut s = half.lock();
    loop {
        let now = Instant::now();
        while let Some(f) = s.dir.poll_transmit(now) {
            due.push(f);
        }
        if !due.is_empty() {
            s.sending = true;
            drop(s);
            let mut errors = 0;
            for f in due.drain(..) {
                if to.send(&f).is_err() {
                    errors += 1;
                }
            }
            s = half.lock();
            s.sending = false;
            s.write_errors += errors;
            continue;
        }
        let next = s.dir.poll_timeout();
        s.sleeping_until = Some(next);
        let wait = next.map_or(Duration::from_secs(3600), |t| {
            t.saturating_duration_since(now)
        });
        s = half
            .wake
            .wait_timeout(s, wait)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        s.sleeping_until = None;
    }
}

enum Stop {
    Eof,
    Timeout,
}

/// Sets up both ends, forwards until stdin closes or the time limit passes.
pub fn run(args: Args) -> anyhow::Result<()> {
    let a_to_b = Params::parse(&args.a_to_b).context("--a-to-b")?;
    let b_to_a = Params::parse(&args.b_to_a).context("--b-to-a")?;
    let (ns_a, if_a) = parse_end(&args.a)?;
    let (ns_b, if_b) = parse_end(&args.b)?;
    // A panic in any thread leaves a direction without its reader or sender: end the
    // whole process (and with it both interfaces) rather than carry on half-working.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        std::process::exit(101);
    }));

    let pid = std::process::id();
    let dev_a = Arc::new(open_end(
        &format!("lkm{pid}a"),
        ns_a.as_deref(),
        &if_a,
        args.mtu,
    )?);
    let dev_b = Arc::new(open_end(
        &format!("lkm{pid}b"),
        ns_b.as_deref(),
        &if_b,
        args.mtu,
    )?);
    let half = |p: Params, seed: u64| {
        Arc::new(Half {
            state: Mutex::new(Shared {
                dir: Direction::new(p, seed),
                sleeping_until: None,
                sending: false,
                write_errors: 0,
            }),
            wake: Condvar::new(),
        })
    };
    let ab = half(a_to_b, args.seed.wrapping_mul(2));
    let ba = half(b_to_a, args.seed.wrapping_mul(2).wrapping_add(1));
    for (from, to, h) in [(&dev_a, &dev_b, &ab), (&dev_b, &dev_a, &ba)] {
        let (from, to2, h2) = (from.clone(), to.clone(), h.clone());
        std::thread::spawn(move || reader(from, to2, h2));
        let (to, h) = (to.clone(), h.clone());
        std::thread::spawn(move || sender(to, h));
    }

    let stats = || format!("{} {}", ab.stats_line("a>b"), ba.stats_line("b>a"));
    let mut out = std::io::stdout();
    writeln!(out, "ready")?;
    out.flush()?;

    let (tx, rx) = mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(Some(line)).is_err() {
                return;
            }
        }
        let _ = tx.send(None);
    });
    let deadline = Instant::now() + Duration::from_secs_f64(args.duration.max(0.0));
    let why = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(Some(line)) => line,
            Ok(None) | Err(mpsc::RecvTimeoutError::Disconnected) => break Stop::Eof,
            Err(mpsc::RecvTimeoutError::Timeout) => break Stop::Timeout,
        };
        let reply = command(line.trim(), &ab, &ba).unwrap_or_else(&stats);
        writeln!(out, "{reply}")?;
        out.flush()?;
    };
    if let Stop::Timeout = why {
        eprintln!("linkem: time limit reached");
    }
    writeln!(out, "{}", stats())?;
    out.flush()?;
    std::process::exit(0)
}

/// Runs one command line; `None` means "print the stats".
fn command(line: &str, ab: &Half, ba: &Half) -> Option<String> {
    let mut words = line.splitn(3, ' ');
    match (words.next(), words.next(), words.next()) {
        (Some("stats"), None, None) => None,
        (Some("set"), Some(which), spec) => {
            let p = match Params::parse(spec.unwrap_or("")) {
                Ok(p) => p,
                Err(e) => return Some(format!("error: {e}")),
            };
            let targets: &[&Half] = match which {
                "a>b" => &[ab],
                "b>a" => &[ba],
                "both" => &[ab, ba],
                _ => return Some("error: direction is a>b, b>a or both".into()),
            };
            for h in targets {
                h.lock().dir.set_params(p.clone());
                h.wake.notify_one();
            }
            Some("ok".into())
        }
        _ => Some("error: commands are `stats` and `set a>b|b>a|both SPEC`".into()),
    }
}
