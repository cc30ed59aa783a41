//! [`Frame`]: one parsed frame of either direction, its size limits, and its encoder.

use super::control::{Health, KeepAlive, NotePreferred, Ping, Pong, Restarting, WatchConns};
use super::header::{FrameHeader, FrameType};
use super::login::{ClientInfoFrame, ServerInfoFrame, ServerKey};
use super::packet::{ForwardPacket, RecvPacket, SendPacket};
use super::peer::{ClosePeer, PeerGone, PeerPresent};
use super::{
    HEADER_LEN, KEY_LEN, MAX_CLIENT_INFO_LEN, MAX_PACKET_SIZE, MAX_PING_LEN, MAX_SERVER_FRAME_LEN,
    MAX_SERVER_KEY_LEN, MAX_UNKNOWN_CLIENT_FRAME_LEN, NONCE_LEN,
};
use bytes::BufMut;
use thiserror::Error;

/// Which side sent the bytes being decoded. Limits and the set of known frame types
/// differ: a type that only flows the other way is treated as unknown, which is what
/// both Go implementations do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Frames a client sends; decoded by a server.
    ClientToServer,
    /// Frames a server sends; decoded by a client.
    ServerToClient,
}

/// What is wrong with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FrameErrorKind {
    /// The body is longer than this frame type allows. The stream cannot be resynced
    /// without reading the whole body, so this is fatal for the connection.
    #[error("body exceeds the limit of {max} bytes")]
    TooLarge {
        /// The limit.
        max: u32,
    },
    /// The body is shorter than this frame type needs.
    #[error("body shorter than the minimum of {min} bytes")]
    TooShort {
        /// The minimum.
        min: u32,
    },
    /// A ServerKey frame that does not start with the DERP magic.
    #[error("missing DERP magic")]
    BadMagic,
}

/// A frame that cannot be accepted. Peer misbehaviour: count it, then skip the frame
/// (where [`FrameError::skip_len`] allows) or close the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[error("bad {ty:?} frame of {len} bytes: {kind}")]
pub struct FrameError {
    /// The frame's type.
    pub ty: FrameType,
    /// The body length the header announced.
    pub len: u32,
    /// What is wrong.
    pub kind: FrameErrorKind,
}

impl FrameError {
    /// The whole frame's length when it is fully buffered and can be skipped; `None`
    /// for [`FrameErrorKind::TooLarge`], which is reported from the header alone.
    pub fn skip_len(&self) -> Option<usize> {
        match self.kind {
            FrameErrorKind::TooLarge { .. } => None,
            _ => Some(HEADER_LEN + self.len as usize),
        }
    }
}

/// Why a frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum EmitError {
    /// The output buffer is too small; nothing was written.
    #[error("output buffer too small: {required} bytes required")]
    BufferTooSmall {
        /// The whole frame's length.
        required: usize,
    },
    /// The body does not fit the u32 length field. Never caused by decoded frames.
    #[error("frame body of {len} bytes does not fit a DERP frame")]
    TooLarge {
        /// The body length.
        len: usize,
    },
}

/// One frame body: its parser and its encoder. `parse` is only called with a body
/// whose length already passed [`limits`].
pub(super) trait Body<'a>: Sized {
    /// Parses the body.
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind>;
    /// The body length `put` writes.
    fn body_len(&self) -> usize;
    /// Writes the body; `out` has room for `body_len()` bytes.
    fn put<B: BufMut>(&self, out: &mut B);
}

/// Reads a key from `b` at `at`; the caller has checked the length.
pub(super) fn key_at(b: &[u8], at: usize) -> Option<crate::wire::key::NodePublic> {
    crate::wire::key::NodePublic::from_slice(b.get(at..)?)
}

/// One DERP frame. Borrowed bodies point into the decoded buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Server greeting.
    ServerKey(ServerKey<'a>),
    /// Client login.
    ClientInfo(ClientInfoFrame<'a>),
    /// Server login reply.
    ServerInfo(ServerInfoFrame<'a>),
    /// Client sends a packet.
    SendPacket(SendPacket<'a>),
    /// Server delivers a packet.
    RecvPacket(RecvPacket<'a>),
    /// Server keep-alive.
    KeepAlive(KeepAlive),
    /// Client's home-region flag.
    NotePreferred(NotePreferred),
    /// A peer went away or is not here.
    PeerGone(PeerGone),
    /// A peer connected (mesh watchers).
    PeerPresent(PeerPresent),
    /// Mesh peer forwards a packet.
    ForwardPacket(ForwardPacket<'a>),
    /// Mesh peer subscribes to connection changes.
    WatchConns(WatchConns),
    /// Mesh peer asks to close a client.
    ClosePeer(ClosePeer),
    /// Ping to be answered with a Pong.
    Ping(Ping),
    /// Answer to a Ping.
    Pong(Pong),
    /// Server-reported connection health.
    Health(Health<'a>),
    /// Server is restarting.
    Restarting(Restarting),
    /// A type this direction does not know; skipped by receivers.
    Unknown {
        /// The type code.
        ty: u8,
        /// The body.
        body: &'a [u8],
    },
}

/// Smallest and largest body length for a type in a direction; `None` when the type is
/// unknown in that direction.
pub(super) fn limits(ty: FrameType, dir: Direction) -> Option<(usize, usize)> {
    use FrameType as T;
    match dir {
        Direction::ClientToServer => Some(match ty {
            T::ClientInfo => (KEY_LEN + NONCE_LEN, MAX_CLIENT_INFO_LEN),
            T::SendPacket => (KEY_LEN, KEY_LEN + MAX_PACKET_SIZE),
            T::ForwardPacket => (2 * KEY_LEN, 2 * KEY_LEN + MAX_PACKET_SIZE),
            T::NotePreferred => (1, 1),
            T::WatchConns => (0, 0),
            T::ClosePeer => (KEY_LEN, KEY_LEN),
            T::Ping | T::Pong => (8, MAX_PING_LEN),
            _ => return None,
        }),
        Direction::ServerToClient => Some(match ty {
            T::ServerKey => (super::MAGIC.len() + KEY_LEN, MAX_SERVER_KEY_LEN),
            T::ServerInfo => (NONCE_LEN, MAX_SERVER_FRAME_LEN),
            T::RecvPacket | T::PeerGone | T::PeerPresent => (KEY_LEN, MAX_SERVER_FRAME_LEN),
            T::Ping | T::Pong | T::Restarting => (8, MAX_SERVER_FRAME_LEN),
            T::KeepAlive | T::Health => (0, MAX_SERVER_FRAME_LEN),
            _ => return None,
        }),
    }
}

/// The largest body of an unknown type a receiver buffers.
pub(super) fn unknown_max(dir: Direction) -> usize {
    match dir {
        Direction::ClientToServer => MAX_UNKNOWN_CLIENT_FRAME_LEN,
        Direction::ServerToClient => MAX_SERVER_FRAME_LEN,
    }
}

/// Checks a header's length against the limits; the first check a decoder makes.
pub(super) fn check_header(h: FrameHeader, dir: Direction) -> Result<(), FrameError> {
    let max = limits(h.ty, dir).map_or(unknown_max(dir), |(_, max)| max);
    if h.len as usize > max {
        let max = u32::try_from(max).unwrap_or(u32::MAX);
        return Err(FrameError {
            ty: h.ty,
            len: h.len,
            kind: FrameErrorKind::TooLarge { max },
        });
    }
    Ok(())
}

fn parse_as<'a, T: Body<'a>>(
    body: &'a [u8],
    wrap: fn(T) -> Frame<'a>,
) -> Result<Frame<'a>, FrameErrorKind> {
    T::parse(body).map(wrap)
}

impl<'a> Frame<'a> {
    /// Parses a complete frame body of type `ty`, as sent in direction `dir`.
    ///
    /// # Errors
    /// A [`FrameError`] when the body breaks the type's size limits or layout.
    pub fn parse(ty: FrameType, body: &'a [u8], dir: Direction) -> Result<Self, FrameError> {
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let err = |kind| FrameError { ty, len, kind };
        check_header(FrameHeader { ty, len }, dir)?;
        let Some((min, _)) = limits(ty, dir) else {
            return Ok(Frame::Unknown {
                ty: u8::from(ty),
                body,
            });
        };
        if body.len() < min {
            let min = u32::try_from(min).unwrap_or(u32::MAX);
            return Err(err(FrameErrorKind::TooShort { min }));
        }
        use FrameType as T;
        let parsed = match ty {
            T::ServerKey => parse_as(body, Frame::ServerKey),
            T::ClientInfo => parse_as(body, Frame::ClientInfo),
            T::ServerInfo => parse_as(body, Frame::ServerInfo),
            T::SendPacket => parse_as(body, Frame::SendPacket),
            T::RecvPacket => parse_as(body, Frame::RecvPacket),
            T::KeepAlive => parse_as(body, Frame::KeepAlive),
            T::NotePreferred => parse_as(body, Frame::NotePreferred),
            T::PeerGone => parse_as(body, Frame::PeerGone),
            T::PeerPresent => parse_as(body, Frame::PeerPresent),
            T::ForwardPacket => parse_as(body, Frame::ForwardPacket),
            T::WatchConns => parse_as(body, Frame::WatchConns),
            T::ClosePeer => parse_as(body, Frame::ClosePeer),
            T::Ping => parse_as(body, Frame::Ping),
            T::Pong => parse_as(body, Frame::Pong),
            T::Health => parse_as(body, Frame::Health),
            T::Restarting => parse_as(body, Frame::Restarting),
            T::Unknown(code) => Ok(Frame::Unknown { ty: code, body }),
        };
        parsed.map_err(err)
    }

    /// Parses one whole frame (header and body, nothing after it) from `buf`.
    ///
    /// # Errors
    /// A [`FrameError`] for a bad frame; a frame whose length disagrees with `buf`
    /// reports [`FrameErrorKind::TooShort`] or [`FrameErrorKind::TooLarge`].
    pub fn parse_frame(buf: &'a [u8], dir: Direction) -> Result<Self, FrameError> {
        let header = FrameHeader::parse(buf).ok_or(FrameError {
            ty: FrameType::Unknown(0),
            len: 0,
            kind: FrameErrorKind::TooShort {
                min: HEADER_LEN as u32,
            },
        })?;
        let body = buf.get(HEADER_LEN..).unwrap_or_default();
        let kind = if body.len() < header.len as usize {
            FrameErrorKind::TooShort { min: header.len }
        } else if body.len() > header.len as usize {
            FrameErrorKind::TooLarge { max: header.len }
        } else {
            return Self::parse(header.ty, body, dir);
        };
        Err(FrameError {
            ty: header.ty,
            len: header.len,
            kind,
        })
    }

    /// The frame's type.
    pub fn ty(&self) -> FrameType {
        match self {
            Frame::ServerKey(_) => FrameType::ServerKey,
            Frame::ClientInfo(_) => FrameType::ClientInfo,
            Frame::ServerInfo(_) => FrameType::ServerInfo,
            Frame::SendPacket(_) => FrameType::SendPacket,
            Frame::RecvPacket(_) => FrameType::RecvPacket,
            Frame::KeepAlive(_) => FrameType::KeepAlive,
            Frame::NotePreferred(_) => FrameType::NotePreferred,
            Frame::PeerGone(_) => FrameType::PeerGone,
            Frame::PeerPresent(_) => FrameType::PeerPresent,
            Frame::ForwardPacket(_) => FrameType::ForwardPacket,
            Frame::WatchConns(_) => FrameType::WatchConns,
            Frame::ClosePeer(_) => FrameType::ClosePeer,
            Frame::Ping(_) => FrameType::Ping,
            Frame::Pong(_) => FrameType::Pong,
            Frame::Health(_) => FrameType::Health,
            Frame::Restarting(_) => FrameType::Restarting,
            Frame::Unknown { ty, .. } => FrameType::from(*ty),
        }
    }

    /// The body length [`Frame::encode`] writes.
    pub fn body_len(&self) -> usize {
        match self {
            Frame::ServerKey(b) => b.body_len(),
            Frame::ClientInfo(b) => b.body_len(),
            Frame::ServerInfo(b) => b.body_len(),
            Frame::SendPacket(b) => b.body_len(),
            Frame::RecvPacket(b) => b.body_len(),
            Frame::KeepAlive(b) => b.body_len(),
            Frame::NotePreferred(b) => b.body_len(),
            Frame::PeerGone(b) => b.body_len(),
            Frame::PeerPresent(b) => b.body_len(),
            Frame::ForwardPacket(b) => b.body_len(),
            Frame::WatchConns(b) => b.body_len(),
            Frame::ClosePeer(b) => b.body_len(),
            Frame::Ping(b) => b.body_len(),
            Frame::Pong(b) => b.body_len(),
            Frame::Health(b) => b.body_len(),
            Frame::Restarting(b) => b.body_len(),
            Frame::Unknown { body, .. } => body.len(),
        }
    }

    /// The whole frame's length: header plus body.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN.saturating_add(self.body_len())
    }

    fn put_body<B: BufMut>(&self, out: &mut B) {
        match self {
            Frame::ServerKey(b) => b.put(out),
            Frame::ClientInfo(b) => b.put(out),
            Frame::ServerInfo(b) => b.put(out),
            Frame::SendPacket(b) => b.put(out),
            Frame::RecvPacket(b) => b.put(out),
            Frame::KeepAlive(b) => b.put(out),
            Frame::NotePreferred(b) => b.put(out),
            Frame::PeerGone(b) => b.put(out),
            Frame::PeerPresent(b) => b.put(out),
            Frame::ForwardPacket(b) => b.put(out),
            Frame::WatchConns(b) => b.put(out),
            Frame::ClosePeer(b) => b.put(out),
            Frame::Ping(b) => b.put(out),
            Frame::Pong(b) => b.put(out),
            Frame::Health(b) => b.put(out),
            Frame::Restarting(b) => b.put(out),
            Frame::Unknown { body, .. } => out.put_slice(body),
        }
    }

    /// Appends the frame (header and body) to `out`, returning the bytes written.
    ///
    /// # Errors
    /// [`EmitError::BufferTooSmall`] when `out` has less room than the frame (nothing is
    /// written); [`EmitError::TooLarge`] when the body does not fit the length field.
    pub fn encode<B: BufMut>(&self, out: &mut B) -> Result<usize, EmitError> {
        let body_len = self.body_len();
        let len = u32::try_from(body_len).map_err(|_| EmitError::TooLarge { len: body_len })?;
        let required = self.frame_len();
        if out.remaining_mut() < required {
            return Err(EmitError::BufferTooSmall { required });
        }
        out.put_slice(&FrameHeader { ty: self.ty(), len }.to_bytes());
        self.put_body(out);
        Ok(required)
    }

    /// Writes the frame to the start of `buf`, returning the bytes written.
    ///
    /// # Errors
    /// As [`Frame::encode`]; `buf` is not modified on error.
    pub fn emit(&self, buf: &mut [u8]) -> Result<usize, EmitError> {
        let mut out = buf;
        self.encode(&mut out)
    }

    /// The frame as a new vector.
    ///
    /// # Errors
    /// [`EmitError::TooLarge`] when the body does not fit the length field.
    pub fn to_vec(&self) -> Result<Vec<u8>, EmitError> {
        let mut v = Vec::with_capacity(self.frame_len());
        self.encode(&mut v)?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emit_reports_required_size_and_leaves_buffer_alone() {
        let f = Frame::Ping(Ping { data: *b"12345678" });
        let mut small = [0xaau8; 12];
        assert_eq!(
            f.emit(&mut small),
            Err(EmitError::BufferTooSmall { required: 13 })
        );
        assert_eq!(small, [0xaa; 12]);
        let mut exact = [0u8; 13];
        assert_eq!(f.emit(&mut exact), Ok(13));
        assert_eq!(hex::encode(exact), "12000000083132333435363738");
    }

    #[test]
    fn wrong_direction_is_unknown() {
        let body = [0u8; 40];
        let f = Frame::parse(FrameType::RecvPacket, &body, Direction::ClientToServer).unwrap();
        assert_eq!(
            f,
            Frame::Unknown {
                ty: 0x05,
                body: &body
            }
        );
        let f = Frame::parse(FrameType::SendPacket, &body, Direction::ServerToClient).unwrap();
        assert_eq!(
            f,
            Frame::Unknown {
                ty: 0x04,
                body: &body
            }
        );
    }

    #[test]
    fn parse_frame_checks_length_agreement() {
        let short = hex::decode("1200000008").unwrap();
        let e = Frame::parse_frame(&short, Direction::ServerToClient);
        assert!(matches!(
            e,
            Err(FrameError {
                kind: FrameErrorKind::TooShort { .. },
                ..
            })
        ));
        let e = Frame::parse_frame(&[0x12], Direction::ServerToClient);
        assert!(e.is_err());
        let whole = hex::decode("12000000080102030405060708").unwrap();
        let ok = Frame::parse_frame(&whole, Direction::ServerToClient);
        assert_eq!(
            ok,
            Ok(Frame::Ping(Ping {
                data: [1, 2, 3, 4, 5, 6, 7, 8]
            }))
        );
    }

    #[test]
    fn limits_are_enforced_by_direction() {
        let big = vec![0u8; MAX_PING_LEN + 1];
        let e = Frame::parse(FrameType::Ping, &big, Direction::ClientToServer).unwrap_err();
        assert_eq!(
            e.kind,
            FrameErrorKind::TooLarge {
                max: MAX_PING_LEN as u32
            }
        );
        assert_eq!(e.skip_len(), None);
        // A server may send a longer ping; the client echoes the first 8 bytes.
        assert!(Frame::parse(FrameType::Ping, &big, Direction::ServerToClient).is_ok());
        let short = [0u8; 7];
        let e = Frame::parse(FrameType::Ping, &short, Direction::ServerToClient).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TooShort { min: 8 });
        assert_eq!(e.skip_len(), Some(12));
    }
}
