//! DERP frames (Tailscale DERP protocol version 2).
//!
//! Owns the byte layout of every frame and the NaCl-box login messages. Must not import
//! tokio, read the clock or do IO; randomness (box nonces) comes in from the caller.
//!
//! A frame is a 5-byte header — type (`u8`) and body length (`u32`, big-endian) — then
//! the body. Frames are decoded from a byte stream ([`decode`]) because the websocket
//! variant splits and merges frames across messages freely.
//!
//! ```text
//!  client                                     server
//!    | <------------- ServerKey (magic + server key)
//!    | ClientInfo (key + nonce + box(json)) ------->
//!    | <------------- ServerInfo (nonce + box(json))
//!    | SendPacket(dst, data) ---------------------->   RecvPacket(src, data) --> dst
//!    | <------------- KeepAlive / Ping / PeerGone / Health / Restarting
//! ```
//!
//! Each frame body is its own type in its own small file; [`Frame`] wraps them.

mod control;
mod decode;
mod frame;
mod header;
mod info;
mod login;
mod packet;
mod peer;

pub use control::{Health, KeepAlive, NotePreferred, Ping, Pong, Restarting, WatchConns};
pub use decode::{Decoded, decode};
pub use frame::{Direction, EmitError, Frame, FrameError, FrameErrorKind};
pub use header::{FrameHeader, FrameType};
pub use info::{ClientInfo, LoginError, ServerInfo, open_from, seal_to};
pub use login::{ClientInfoFrame, ServerInfoFrame, ServerKey};
pub use packet::{ForwardPacket, PACKET_OFFSET, RecvPacket, SendPacket};
pub use peer::{ClosePeer, PeerGone, PeerGoneReason, PeerPresent, PeerPresentFlags};

/// The magic that opens the ServerKey frame: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = *b"DERP\xf0\x9f\x94\x91";

/// The protocol version we speak: RecvPacket carries the source key.
pub const PROTOCOL_VERSION: i64 = 2;

/// Frame header length: type byte plus big-endian u32 length.
pub const HEADER_LEN: usize = 5;

/// Length of a node key on the wire.
pub const KEY_LEN: usize = 32;

/// Length of a NaCl box nonce.
pub const NONCE_LEN: usize = 24;

/// Poly1305 tag that every NaCl box adds.
pub const BOX_OVERHEAD: usize = 16;

/// Largest data payload of one SendPacket, RecvPacket or ForwardPacket.
pub const MAX_PACKET_SIZE: usize = 64 << 10;

/// Largest frame body a client accepts from a server (Go's `Recv` cap).
pub const MAX_SERVER_FRAME_LEN: usize = 1 << 20;

/// Largest ClientInfo body a server accepts from a not-yet-trusted client.
pub const MAX_CLIENT_INFO_LEN: usize = 256 << 10;

/// Largest Ping body a server accepts; only the first 8 bytes matter.
pub const MAX_PING_LEN: usize = 1000;

/// Largest frame body a server accepts for a type it does not know. Go skips unknown
/// frames of any size; we buffer frames whole, so we cap them at a packet plus two keys.
pub const MAX_UNKNOWN_CLIENT_FRAME_LEN: usize = MAX_PACKET_SIZE + 2 * KEY_LEN;

/// Largest ServerKey body a client accepts (Go reads the greeting with a 1 KiB cap).
pub const MAX_SERVER_KEY_LEN: usize = 1 << 10;
