//! Sans-IO protocol state machines. Own protocol state; take time as `now` and bytes as
//! slices; return what must be sent as values.
//!
//! Must not import tokio or read the clock (the one exception is boringtun's `Tunn`,
//! wrapped in [`wg::session`]).

pub mod backoff;
pub mod coord_client;
pub mod coord_server;
pub mod derp_client;
pub mod derp_server;
pub mod tailnet;
pub mod wake;
pub mod wg;
