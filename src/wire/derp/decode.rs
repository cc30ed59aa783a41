//! Stream decoding: frames arrive as a byte stream that may split or merge them anywhere
//! (TCP segments, websocket messages), so decoding looks at a buffer prefix and says
//! whether a whole frame is there.

use super::HEADER_LEN;
use super::frame::{Direction, Frame, FrameError, check_header};
use super::header::FrameHeader;

/// The result of looking at the front of a receive buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// Not a whole frame yet; at least `needed` more bytes must arrive.
    Incomplete {
        /// Lower bound on the missing bytes.
        needed: usize,
    },
    /// A whole frame, `len` bytes long including its header. The caller consumes `len`
    /// bytes before decoding again.
    Frame {
        /// The frame.
        frame: Frame<'a>,
        /// Bytes the frame occupies at the front of the buffer.
        len: usize,
    },
}

/// Decodes the frame at the front of `buf`, sent in direction `dir`.
///
/// Size limits are checked as soon as the header is there, so an oversized frame is
/// refused before its body is buffered.
///
/// # Errors
/// A [`FrameError`]: the frame breaks its type's limits or layout. When
/// [`FrameError::skip_len`] is `Some`, the frame is fully buffered and may be skipped;
/// otherwise the stream cannot continue.
pub fn decode(buf: &[u8], dir: Direction) -> Result<Decoded<'_>, FrameError> {
    let Some(header) = FrameHeader::parse(buf) else {
        return Ok(Decoded::Incomplete {
            needed: HEADER_LEN - buf.len(),
        });
    };
    check_header(header, dir)?;
    let len = header.frame_len();
    let Some(body) = buf.get(HEADER_LEN..len) else {
        return Ok(Decoded::Incomplete {
            needed: len - buf.len(),
        });
    };
    let frame = Frame::parse(header.ty, body, dir)?;
    Ok(Decoded::Frame { frame, len })
}

#[cfg(test)]
mod tests {
    use super::super::{FrameErrorKind, FrameType, Ping, SendPacket};
    use super::*;
    use crate::wire::key::NodePublic;

    #[test]
    fn split_and_merged_frames() {
        let a = Frame::Ping(Ping { data: *b"pingpong" }).to_vec().unwrap();
        let dst = NodePublic::from_bytes([3; 32]);
        let b = Frame::SendPacket(SendPacket {
            dst,
            packet: b"payload",
        })
        .to_vec()
        .unwrap();
        let stream: Vec<u8> = a.iter().chain(b.iter()).copied().collect();
        // Every split point yields Incomplete until the first frame is whole.
        for cut in 0..a.len() {
            let d = decode(&stream[..cut], Direction::ClientToServer).unwrap();
            assert!(
                matches!(d, Decoded::Incomplete { needed } if needed >= 1),
                "{cut}"
            );
        }
        let mut at = 0;
        let mut frames = vec![];
        while at < stream.len() {
            let Decoded::Frame { frame, len } =
                decode(&stream[at..], Direction::ClientToServer).unwrap()
            else {
                panic!("incomplete at {at}")
            };
            frames.push(frame.ty());
            at += len;
        }
        assert_eq!(frames, vec![FrameType::Ping, FrameType::SendPacket]);
    }

    #[test]
    fn needed_is_exact_for_bodies() {
        let d = decode(&[0x12, 0, 0, 0, 8, 1, 2], Direction::ClientToServer).unwrap();
        assert_eq!(d, Decoded::Incomplete { needed: 6 });
        assert_eq!(
            decode(&[0x12], Direction::ClientToServer).unwrap(),
            Decoded::Incomplete { needed: 4 }
        );
    }

    #[test]
    fn garbage_is_a_typed_error() {
        // "GET / HTTP/1.1" read as a frame: type 'G' (unknown), length "ET /" = 1.16 GB.
        let e = decode(b"GET / HTTP/1.1\r\n", Direction::ClientToServer).unwrap_err();
        assert_eq!(e.ty, FrameType::Unknown(b'G'));
        assert!(matches!(e.kind, FrameErrorKind::TooLarge { .. }));
        assert_eq!(e.skip_len(), None);
        // An oversized SendPacket is refused from its header alone.
        let e = decode(&[0x04, 0, 1, 0, 0x21], Direction::ClientToServer).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TooLarge { max: 32 + 65536 });
        // A short one is refused once whole, and can be skipped.
        let e = decode(&[0x04, 0, 0, 0, 1, 9], Direction::ClientToServer).unwrap_err();
        assert_eq!(
            (e.kind, e.skip_len()),
            (FrameErrorKind::TooShort { min: 32 }, Some(6))
        );
        // Frames over 1 MiB are refused by clients.
        let e = decode(&[0x05, 0, 0x10, 0, 1], Direction::ServerToClient).unwrap_err();
        assert_eq!(e.kind, FrameErrorKind::TooLarge { max: 1 << 20 });
    }

    #[test]
    fn unknown_frames_are_returned_for_skipping() {
        let d = decode(
            &[0x7e, 0, 0, 0, 2, 0xaa, 0xbb, 0x06],
            Direction::ServerToClient,
        )
        .unwrap();
        assert_eq!(
            d,
            Decoded::Frame {
                frame: Frame::Unknown {
                    ty: 0x7e,
                    body: &[0xaa, 0xbb]
                },
                len: 7
            }
        );
    }
}
