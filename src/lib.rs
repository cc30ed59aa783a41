//! agentwire: one long-lived shared WireGuard tunnel per process, and cheap
//! reference-counted [`AgentConn`](runtime::tailnet::AgentConn) handles over it.
//!
//! The crate is layered; each layer imports only the layers above it in this list:
//!
//! ```text
//!  wire      formats only: WireGuard headers, IP peeks, DERP frames, coordinator
//!            messages, keys, node addresses. No tokio, no clock. Parsers never panic.
//!  proto     sans-IO state machines: WireGuard peer table, DERP sessions, the
//!            coordinator registry, lease bookkeeping. Time comes in as `now`.
//!  netstack  smoltcp over an in-memory IP device (MTU 1280). No tokio, no clock.
//!  runtime   the tokio shell: UDP, DERP and coordinator clients, the driver task that
//!            owns the device and netstack, TcpStream/TcpListener/UdpSocket, Tailnet.
//!  services  servers built on the runtime: agent, coordinator, DERP relay, MCP.
//!  cli       argument parsing for the `agentwire` binary.
//! ```
//!
//! The one documented exception to "no clock below runtime": boringtun's `Tunn` reads
//! the monotonic clock inside its timers, so `proto::wg::session` wraps it and nothing
//! else below the runtime does.
// One audited exception: `runtime::alloc` calls glibc `mallopt`.
#![deny(unsafe_code)]
#![warn(missing_debug_implementations)]

pub mod cli;
pub mod netstack;
pub mod proto;
pub mod runtime;
pub mod services;
pub mod wire;

#[cfg(any(fuzzing, test))]
pub mod fuzzing;
