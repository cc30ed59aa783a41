//! `linkem`: an emulated link between two network namespaces, for tests and benchmarks.
//!
//! Creates two TAP devices, moves each into its namespace under the name given, brings
//! them up and forwards Ethernet frames between them. Each direction has its own delay,
//! jitter, loss, reordering and rate limit with a bounded buffer (`sched.rs` decides,
//! from a seeded RNG). The caller configures addresses on the two interfaces.
//!
//! ```text
//! linkem --a NS:IF --b NS:IF [--a-to-b SPEC] [--b-to-a SPEC] [--seed N] [--duration SECS]
//! SPEC: delay=10ms,jitter=1ms,loss=1%,reorder=0.1%,reorder_delay=1ms,rate=100mbit,queue=256k
//! ```
//!
//! `NS` may be `-` for the namespace linkem runs in. Prints `ready` once both interfaces
//! are up. Commands on stdin, one per line, each answered with one line:
//! `stats` (`a>b frames=… b>a frames=…`), `set a>b|b>a|both SPEC` (`ok` or `error: …`).
//! It exits, removing both interfaces, when stdin closes or after `--duration` (printing
//! the final `stats` line), so a crashed test leaves nothing behind.
//!
//! Time: the shell reads the monotonic clock (a test-support program, outside the
//! library's layering); the scheduling core takes it as an argument.

#![allow(clippy::disallowed_methods)]

mod sched;

#[cfg(target_os = "linux")]
mod shell;

use clap::Parser;

/// Command line (see the module docs).
#[derive(Debug, Parser)]
#[command(
    name = "linkem",
    about = "Emulated link between two network namespaces"
)]
pub struct Args {
    /// First end: NAMESPACE:INTERFACE (`-` for this process's namespace).
    #[arg(long, allow_hyphen_values = true)]
    pub a: String,
    /// Second end: NAMESPACE:INTERFACE.
    #[arg(long, allow_hyphen_values = true)]
    pub b: String,
    /// Behaviour of frames from a to b.
    #[arg(long, default_value = "")]
    pub a_to_b: String,
    /// Behaviour of frames from b to a.
    #[arg(long, default_value = "")]
    pub b_to_a: String,
    /// Seed of the random decisions (each direction derives its own).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Exit after this many seconds whatever happens.
    #[arg(long, default_value_t = 600.0)]
    pub duration: f64,
    /// MTU of both interfaces.
    #[arg(long, default_value_t = 1500)]
    pub mtu: u16,
}

#[cfg(target_os = "linux")]
fn main() -> anyhow::Result<()> {
    shell::run(Args::parse())
}

#[cfg(not(target_os = "linux"))]
fn main() -> anyhow::Result<()> {
    let _ = Args::parse();
    anyhow::bail!("linkem needs Linux (TAP devices and network namespaces)")
}
