//! DERP server session logic, sans-IO: login checks, the key → connection registry
//! with replacement, routing, PeerGone bookkeeping, mesh gating, and the counters.
//!
//! Must not import tokio or read the clock: time comes in as `now`. The async shell in
//! `services::derp` owns sockets and queues and calls in here for every decision.
//!
//! The registry is generic over `H`, the shell's cheap handle to one connection (its
//! send queue); routing hands back a clone of the destination's handle.

mod counters;
mod login;
mod registry;
mod token_bucket;

pub use counters::{DropReason, ServerCounters, ServerStats};
pub use login::{
    LoginAccepted, LoginRejected, MeshKey, accept_client_info, server_info_frame, server_key_frame,
};
pub use registry::{ConnId, Effects, LinkId, NewConn, NotPermitted, PeerChange, Registry, Route};
pub use token_bucket::TokenBucket;
