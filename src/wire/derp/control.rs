//! Small control frame bodies: KeepAlive (0x06), NotePreferred (0x07), WatchConns (0x10),
//! Ping (0x12), Pong (0x13), Health (0x14), Restarting (0x15).
//!
//! ```text
//! KeepAlive      empty (a body, if any, is ignored)
//! NotePreferred  1 byte: 0x01 home region, 0x00 not
//! WatchConns     empty
//! Ping, Pong     8 bytes (a longer ping body is allowed; only 8 bytes are echoed)
//! Health         UTF-8 problem text; empty means healthy again
//! Restarting     reconnect-in ms (u32 BE) | try-for ms (u32 BE)
//! ```

use super::frame::{Body, FrameErrorKind};
use bytes::BufMut;
use std::borrow::Cow;
use std::time::Duration;

/// Server keep-alive; carries nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeepAlive;

impl Body<'_> for KeepAlive {
    fn parse(_body: &[u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self)
    }
    fn body_len(&self) -> usize {
        0
    }
    fn put<B: BufMut>(&self, _out: &mut B) {}
}

/// The client says whether this server is in its home region (the server keeps stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotePreferred {
    /// Any non-zero byte means preferred, as in Go.
    pub preferred: bool,
}

impl Body<'_> for NotePreferred {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        let b = body.first().ok_or(FrameErrorKind::TooShort { min: 1 })?;
        Ok(Self { preferred: *b != 0 })
    }
    fn body_len(&self) -> usize {
        1
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_u8(u8::from(self.preferred));
    }
}

/// A mesh peer subscribes to connect and disconnect events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WatchConns;

impl Body<'_> for WatchConns {
    fn parse(_body: &[u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self)
    }
    fn body_len(&self) -> usize {
        0
    }
    fn put<B: BufMut>(&self, _out: &mut B) {}
}

fn eight(body: &[u8]) -> Result<[u8; 8], FrameErrorKind> {
    body.first_chunk::<8>()
        .copied()
        .ok_or(FrameErrorKind::TooShort { min: 8 })
}

/// A request to echo `data` in a [`Pong`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ping {
    /// The bytes to echo (the first 8 of the body).
    pub data: [u8; 8],
}

impl Body<'_> for Ping {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self { data: eight(body)? })
    }
    fn body_len(&self) -> usize {
        8
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&self.data);
    }
}

/// The answer to a [`Ping`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pong {
    /// The echoed bytes.
    pub data: [u8; 8],
}

impl Body<'_> for Pong {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self { data: eight(body)? })
    }
    fn body_len(&self) -> usize {
        8
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(&self.data);
    }
}

/// The server reports a problem with this connection, or clears it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Health<'a> {
    /// The problem text as sent; empty means healthy.
    pub problem: &'a [u8],
}

impl Health<'_> {
    /// The problem text, with invalid UTF-8 replaced.
    pub fn text(&self) -> Cow<'_, str> {
        String::from_utf8_lossy(self.problem)
    }
}

impl<'a> Body<'a> for Health<'a> {
    fn parse(body: &'a [u8]) -> Result<Self, FrameErrorKind> {
        Ok(Self { problem: body })
    }
    fn body_len(&self) -> usize {
        self.problem.len()
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_slice(self.problem);
    }
}

/// The server is restarting: reconnect after `reconnect_in`, keep trying for `try_for`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restarting {
    /// Advisory wait before reconnecting, in milliseconds.
    pub reconnect_in_ms: u32,
    /// Advisory time to keep retrying before normal failure handling, in milliseconds.
    pub try_for_ms: u32,
}

impl Restarting {
    /// [`Restarting::reconnect_in_ms`] as a duration.
    pub fn reconnect_in(&self) -> Duration {
        Duration::from_millis(self.reconnect_in_ms.into())
    }
    /// [`Restarting::try_for_ms`] as a duration.
    pub fn try_for(&self) -> Duration {
        Duration::from_millis(self.try_for_ms.into())
    }
}

impl Body<'_> for Restarting {
    fn parse(body: &[u8]) -> Result<Self, FrameErrorKind> {
        let [a0, a1, a2, a3, b0, b1, b2, b3] = eight(body)?;
        Ok(Self {
            reconnect_in_ms: u32::from_be_bytes([a0, a1, a2, a3]),
            try_for_ms: u32::from_be_bytes([b0, b1, b2, b3]),
        })
    }
    fn body_len(&self) -> usize {
        8
    }
    fn put<B: BufMut>(&self, out: &mut B) {
        out.put_u32(self.reconnect_in_ms);
        out.put_u32(self.try_for_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Direction, Frame, FrameErrorKind, FrameType};
    use super::*;

    const C2S: Direction = Direction::ClientToServer;
    const S2C: Direction = Direction::ServerToClient;

    fn fixture(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// (hex frame, direction, parsed) triples; each must parse and re-emit identically.
    fn vectors() -> Vec<(&'static str, Direction, Frame<'static>)> {
        vec![
            ("06 00000000", S2C, Frame::KeepAlive(KeepAlive)),
            (
                "07 00000001 01",
                C2S,
                Frame::NotePreferred(NotePreferred { preferred: true }),
            ),
            (
                "07 00000001 00",
                C2S,
                Frame::NotePreferred(NotePreferred { preferred: false }),
            ),
            ("10 00000000", C2S, Frame::WatchConns(WatchConns)),
            (
                "12 00000008 0102030405060708",
                C2S,
                Frame::Ping(Ping {
                    data: [1, 2, 3, 4, 5, 6, 7, 8],
                }),
            ),
            (
                "13 00000008 0807060504030201",
                S2C,
                Frame::Pong(Pong {
                    data: [8, 7, 6, 5, 4, 3, 2, 1],
                }),
            ),
            (
                "14 00000003 626164",
                S2C,
                Frame::Health(Health { problem: b"bad" }),
            ),
            ("14 00000000", S2C, Frame::Health(Health { problem: b"" })),
            (
                "15 00000008 000001f4 00001388",
                S2C,
                Frame::Restarting(Restarting {
                    reconnect_in_ms: 500,
                    try_for_ms: 5000,
                }),
            ),
        ]
    }

    #[test]
    fn test_parse() {
        for (hex, dir, want) in vectors() {
            assert_eq!(Frame::parse_frame(&fixture(hex), dir), Ok(want), "{hex}");
        }
    }

    #[test]
    fn test_emit() {
        for (hex, _, frame) in vectors() {
            assert_eq!(frame.to_vec().unwrap(), fixture(hex), "{hex}");
        }
    }

    #[test]
    fn lenient_and_strict_forms() {
        // Any non-zero NotePreferred byte means preferred.
        let f = Frame::parse(FrameType::NotePreferred, &[7], C2S).unwrap();
        assert_eq!(f, Frame::NotePreferred(NotePreferred { preferred: true }));
        // The server insists on exact sizes for NotePreferred and WatchConns.
        let e = Frame::parse(FrameType::NotePreferred, &[1, 1], C2S).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TooLarge { max: 1 });
        assert!(Frame::parse(FrameType::NotePreferred, &[], C2S).is_err());
        assert!(Frame::parse(FrameType::WatchConns, &[0], C2S).is_err());
        // Long pings are accepted up to 1000 bytes; the first 8 are echoed.
        let mut long = [0u8; 1000];
        long[0] = 9;
        let f = Frame::parse(FrameType::Ping, &long, C2S).unwrap();
        assert_eq!(
            f,
            Frame::Ping(Ping {
                data: [9, 0, 0, 0, 0, 0, 0, 0]
            })
        );
        // A keep-alive with a body is still a keep-alive; Restarting may be longer.
        assert_eq!(
            Frame::parse(FrameType::KeepAlive, &[1], S2C),
            Ok(Frame::KeepAlive(KeepAlive))
        );
        assert!(Frame::parse(FrameType::Restarting, &[0; 12], S2C).is_ok());
        assert!(Frame::parse(FrameType::Restarting, &[0; 7], S2C).is_err());
        let r = Restarting {
            reconnect_in_ms: 1500,
            try_for_ms: 1,
        };
        assert_eq!(r.reconnect_in(), Duration::from_millis(1500));
        let h = Health {
            problem: &[0xff, b'x'],
        };
        assert_eq!(h.text(), "\u{fffd}x");
    }
}
