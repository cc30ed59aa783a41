//! Sans-IO protocol state machines. Own protocol state; take time as `now` and bytes as
//! slices; return what must be sent as values.
//!
//! Must not import tokio or read the clock (the one exception is boringtun's `Tunn`,
//! wrapped in [`wg::session`]).
//!
//! # Calling contract
//!
//! Every machine here is driven the same way, in the style of quinn's `Connection`:
//!
//! - **Inputs** are `handle_*(…, now)` methods: something arrived or happened
//!   (`handle_message`, `handle_frame`, `handle_peer`, `handle_session`,
//!   `handle_disconnect`, …). Time is always an argument; a machine never reads a clock.
//!   Lifecycle inputs a caller initiates keep plain verbs (`connect`, `close`,
//!   `acquire`, `release`) and also take `now` when time matters to them.
//! - **Timers**: `poll_timeout()` says when the machine next needs `handle_timeout(now)`;
//!   the shell sleeps until then (or until another input arrives). After
//!   `handle_timeout(now)`, `poll_timeout()` is never in the past.
//! - **Outputs** are drained until `None`: `poll_transmit(…)` for bytes to send on the
//!   machine's own connection, `poll_action()` for effects the shell carries out
//!   elsewhere (messages to other peers, device changes, waking callers).
//! - **Queries** are plain nouns (`stats`, `stage`, `summaries`) and change nothing.
//! - Bad input is an error value or a counted drop, never a panic; `check_invariants`,
//!   where a machine has it, is what the tests and fuzz targets call after every input.
//!
//! | machine | inputs | outputs |
//! |---|---|---|
//! | [`wg::Device`] | `encapsulate`, `decapsulate`, `handle_timeout` | returned per call, `poll_timeout` |
//! | [`coord::client::ClientState`] | `handle_message`, `handle_disconnect`, `handle_refused`, `handle_conflict` | `poll_transmit` |
//! | [`coord::server::Registry`] | `connect`, `handle_message`, `handle_text`, `close` | `poll_action` |
//! | [`derp::client::ClientSession`] | `handle_frame`, `handle_timeout` | `poll_transmit`, `poll_timeout` |
//! | [`derp::server::Registry`] | `register`, `route`, `unregister` | returned per call (`Effects`, `Route`) |
//! | [`tailnet::Destinations`] | `acquire`, `release`, `handle_peer`, `handle_session`, `handle_timeout`, … | `poll_action`, `poll_timeout` |
//!
//! The packet-rate machines (`wg::Device`, `derp::server::Registry`) return their effects
//! from each call instead of queueing them: one packet in, at most a few out, with no
//! allocation for a queue on the hot path.

pub mod backoff;
pub mod coord;
pub mod derp;
pub mod discovery;
pub mod home;
pub mod oauth;
pub mod tailnet;
pub mod wake;
pub mod wg;
