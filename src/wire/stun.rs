//! STUN (RFC 5389) binding requests and responses: what a node sends to learn the
//! address its NAT maps its WireGuard socket to, and what the relay's STUN server
//! answers.
//!
//! ```text
//! type (2) | length (2) | magic cookie 0x2112A442 (4) | transaction id (12) | attributes
//! attribute: type (2) | length (2) | value, padded to a multiple of 4
//! ```
//!
//! Requests we build carry SOFTWARE and FINGERPRINT; responses carry XOR-MAPPED-ADDRESS
//! and FINGERPRINT. A FINGERPRINT, when present, must be the last attribute and must
//! match. Parsing only reads the input; nothing is allocated.
//!
//! Unknown attributes are skipped, comprehension-required ones (type below 0x8000)
//! included, in requests as in responses. RFC 5389 would have a server answer such a
//! request with a 420 error; a binding request has nothing a server could misunderstand,
//! and public STUN servers (Tailscale's among them) answer it anyway, so we do too. Only
//! the first of repeated attributes counts (RFC 5389 section 15).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use thiserror::Error;

/// The STUN port (RFC 5389), which clients assume when a DERP map says 0.
pub const DEFAULT_PORT: u16 = 3478;
/// The fixed cookie that tells STUN from other traffic on the same socket.
pub const MAGIC_COOKIE: u32 = 0x2112_A442;
/// Bytes before the attributes.
pub const HEADER_LEN: usize = 20;
/// A transaction id: ties a response to its request.
pub type TxId = [u8; 12];

const BINDING_REQUEST: u16 = 0x0001;
const BINDING_SUCCESS: u16 = 0x0101;
const BINDING_ERROR: u16 = 0x0111;
const ATTR_MAPPED_ADDRESS: u16 = 0x0001;
const ATTR_ERROR_CODE: u16 = 0x0009;
const ATTR_XOR_MAPPED_ADDRESS: u16 = 0x0020;
const ATTR_SOFTWARE: u16 = 0x8022;
const ATTR_FINGERPRINT: u16 = 0x8028;
const FINGERPRINT_XOR: u32 = 0x5354_554e;
const FAMILY_V4: u8 = 1;
const FAMILY_V6: u8 = 2;
const SOFTWARE: &[u8] = b"agentwire";
/// A request we build: header, SOFTWARE (9 bytes padded to 12), FINGERPRINT.
const REQUEST_LEN: usize = HEADER_LEN + 4 + 12 + 8;
/// The largest response we build: header, XOR-MAPPED-ADDRESS (IPv6), FINGERPRINT.
const RESPONSE_MAX_LEN: usize = HEADER_LEN + 4 + 20 + 8;

/// A STUN message we understand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// "What address do you see me at?"
    BindingRequest {
        /// Echoed in the answer.
        txid: TxId,
    },
    /// The answer to a binding request.
    BindingSuccess {
        /// The request's transaction id.
        txid: TxId,
        /// From XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS (old servers), else none.
        mapped: Option<SocketAddr>,
    },
    /// A refusal of a binding request.
    BindingError {
        /// The request's transaction id.
        txid: TxId,
        /// The ERROR-CODE (class × 100 + number, e.g. 420), 0 when absent.
        code: u16,
    },
}

impl Message {
    /// The transaction id, whatever the message.
    pub fn txid(&self) -> &TxId {
        match self {
            Self::BindingRequest { txid }
            | Self::BindingSuccess { txid, .. }
            | Self::BindingError { txid, .. } => txid,
        }
    }
}

/// Why bytes are not a STUN message we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum StunError {
    /// Shorter than a STUN header.
    #[error("STUN message shorter than its 20-byte header")]
    TooShort,
    /// No magic cookie, or the first two bits are set: not STUN at all.
    #[error("not a STUN message")]
    NotStun,
    /// The length field disagrees with the datagram or is not a multiple of 4, or an
    /// attribute runs past the end.
    #[error("STUN length does not match the message")]
    BadLength,
    /// An attribute we need (address, error code) is malformed.
    #[error("malformed STUN attribute")]
    BadAttribute,
    /// FINGERPRINT is malformed, not last, or does not match the message.
    #[error("STUN fingerprint mismatch")]
    BadFingerprint,
    /// A method or class other than binding request, success or error (the raw type).
    #[error("unsupported STUN message type {0:#06x}")]
    Unsupported(u16),
}

/// Whether `d` looks like STUN: the cheap test that demultiplexes a UDP socket shared with
/// WireGuard. At least a header, the top two bits of the first byte clear, the magic
/// cookie, and a length field that is a multiple of 4 and matches the datagram.
pub fn is_stun(d: &[u8]) -> bool {
    let Some(h) = d.first_chunk::<HEADER_LEN>() else {
        return false;
    };
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    h[0] & 0xc0 == 0
        && h[4..8] == MAGIC_COOKIE.to_be_bytes()
        && len.is_multiple_of(4)
        && len == d.len() - HEADER_LEN
}

/// CRC-32 (IEEE 802.3, as zlib), from a table built at compile time.
fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut t = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0xedb8_8320
                } else {
                    c >> 1
                };
                k += 1;
            }
            t[i] = c;
            i += 1;
        }
        t
    };
    let mut crc = !0u32;
    for &b in data {
        crc = TABLE[usize::from((crc as u8) ^ b)] ^ (crc >> 8);
    }
    !crc
}

fn header(out: &mut Vec<u8>, kind: u16, txid: &TxId) {
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    out.extend_from_slice(txid);
}

/// Appends one attribute with its padding. Values are ours and short.
fn put_attr(out: &mut Vec<u8>, kind: u16, value: &[u8]) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// Sets the header's length field for a message of `total` bytes.
fn set_len(out: &mut [u8], total: usize) {
    let len = u16::try_from(total.saturating_sub(HEADER_LEN)).unwrap_or(u16::MAX);
    if let Some(f) = out.get_mut(2..4) {
        f.copy_from_slice(&len.to_be_bytes());
    }
}

/// Appends FINGERPRINT. Its CRC covers the message up to it with the length field
/// already counting it (RFC 5389 section 15.5).
fn finish(out: &mut Vec<u8>) {
    let total = out.len() + 8;
    set_len(out, total);
    let fp = crc32(out) ^ FINGERPRINT_XOR;
    put_attr(out, ATTR_FINGERPRINT, &fp.to_be_bytes());
}

/// A binding request with this transaction id, carrying SOFTWARE ("agentwire") and
/// FINGERPRINT.
pub fn binding_request(txid: &TxId) -> Vec<u8> {
    let mut out = Vec::with_capacity(REQUEST_LEN);
    header(&mut out, BINDING_REQUEST, txid);
    put_attr(&mut out, ATTR_SOFTWARE, SOFTWARE);
    finish(&mut out);
    out
}

/// XOR-MAPPED-ADDRESS's value: the port is XORed with the cookie's top half, an IPv4
/// address with the cookie, an IPv6 address with the cookie and transaction id.
fn put_xor_addr(out: &mut Vec<u8>, addr: SocketAddr, txid: &TxId) {
    let mut key = [0u8; 16];
    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
    key[4..].copy_from_slice(txid);
    let port = (addr.port() ^ (MAGIC_COOKIE >> 16) as u16).to_be_bytes();
    let mut v = [0u8; 20];
    v[2..4].copy_from_slice(&port);
    let n = match addr.ip() {
        IpAddr::V4(ip) => {
            v[1] = FAMILY_V4;
            for (i, b) in ip.octets().iter().enumerate() {
                v[4 + i] = b ^ key[i];
            }
            8
        }
        IpAddr::V6(ip) => {
            v[1] = FAMILY_V6;
            for (i, b) in ip.octets().iter().enumerate() {
                v[4 + i] = b ^ key[i];
            }
            20
        }
    };
    put_attr(out, ATTR_XOR_MAPPED_ADDRESS, &v[..n]);
}

/// A binding success response to `txid` carrying XOR-MAPPED-ADDRESS for `mapped` (IPv4
/// or IPv6) and FINGERPRINT.
pub fn binding_response(txid: &TxId, mapped: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(RESPONSE_MAX_LEN);
    header(&mut out, BINDING_SUCCESS, txid);
    put_xor_addr(&mut out, mapped, txid);
    finish(&mut out);
    out
}

/// MAPPED-ADDRESS or, with `xor`, XOR-MAPPED-ADDRESS.
fn parse_addr(v: &[u8], xor: Option<&TxId>) -> Result<SocketAddr, StunError> {
    let mut key = [0u8; 16];
    if let Some(txid) = xor {
        key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
        key[4..].copy_from_slice(txid);
    }
    let port_key = u16::from_be_bytes([key[0], key[1]]);
    match v {
        [_, FAMILY_V4, p0, p1, a @ ..] if a.len() == 4 => {
            let mut o = [0u8; 4];
            for (i, b) in a.iter().enumerate() {
                o[i] = b ^ key[i];
            }
            let port = u16::from_be_bytes([*p0, *p1]) ^ port_key;
            Ok(SocketAddr::new(Ipv4Addr::from(o).into(), port))
        }
        [_, FAMILY_V6, p0, p1, a @ ..] if a.len() == 16 => {
            let mut o = [0u8; 16];
            for (i, b) in a.iter().enumerate() {
                o[i] = b ^ key[i];
            }
            let port = u16::from_be_bytes([*p0, *p1]) ^ port_key;
            Ok(SocketAddr::new(Ipv6Addr::from(o).into(), port))
        }
        _ => Err(StunError::BadAttribute),
    }
}

/// ERROR-CODE: two reserved bytes, the class (3 bits) and the number; a reason phrase
/// follows, which we do not keep.
fn parse_error_code(v: &[u8]) -> Result<u16, StunError> {
    match v {
        [_, _, class, number, ..] if (3..=6).contains(&(class & 7)) && *number < 100 => {
            Ok(u16::from(class & 7) * 100 + u16::from(*number))
        }
        _ => Err(StunError::BadAttribute),
    }
}

/// Parses a binding request, success response or error response.
///
/// # Errors
/// A [`StunError`] for anything else: other traffic, other STUN methods and classes,
/// inconsistent lengths, malformed addresses or error codes in a response, a wrong
/// FINGERPRINT. No input panics.
pub fn parse(d: &[u8]) -> Result<Message, StunError> {
    let Some((h, attrs)) = d.split_first_chunk::<HEADER_LEN>() else {
        return Err(StunError::TooShort);
    };
    if h[0] & 0xc0 != 0 || h[4..8] != MAGIC_COOKIE.to_be_bytes() {
        return Err(StunError::NotStun);
    }
    let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if len != attrs.len() || !len.is_multiple_of(4) {
        return Err(StunError::BadLength);
    }
    let kind = u16::from_be_bytes([h[0], h[1]]);
    if !matches!(kind, BINDING_REQUEST | BINDING_SUCCESS | BINDING_ERROR) {
        return Err(StunError::Unsupported(kind));
    }
    let mut txid = [0u8; 12];
    txid.copy_from_slice(&h[8..20]);

    let mut xor_mapped = None;
    let mut mapped = None;
    let mut code = None;
    let mut at = 0;
    while at < attrs.len() {
        let Some([t0, t1, l0, l1]) = attrs.get(at..).and_then(|r| r.first_chunk::<4>()) else {
            return Err(StunError::BadLength);
        };
        let akind = u16::from_be_bytes([*t0, *t1]);
        let alen = usize::from(u16::from_be_bytes([*l0, *l1]));
        let start = at + 4;
        let value = attrs.get(start..start + alen).ok_or(StunError::BadLength)?;
        match akind {
            ATTR_FINGERPRINT => {
                // It covers everything before it, so nothing may follow it.
                let Ok(want) = <[u8; 4]>::try_from(value) else {
                    return Err(StunError::BadFingerprint);
                };
                if start + 4 != attrs.len()
                    || crc32(&d[..HEADER_LEN + at]) ^ FINGERPRINT_XOR != u32::from_be_bytes(want)
                {
                    return Err(StunError::BadFingerprint);
                }
            }
            ATTR_XOR_MAPPED_ADDRESS if kind == BINDING_SUCCESS && xor_mapped.is_none() => {
                xor_mapped = Some(parse_addr(value, Some(&txid))?);
            }
            ATTR_MAPPED_ADDRESS if kind == BINDING_SUCCESS && mapped.is_none() => {
                mapped = Some(parse_addr(value, None)?);
            }
            ATTR_ERROR_CODE if kind == BINDING_ERROR && code.is_none() => {
                code = Some(parse_error_code(value)?);
            }
            _ => {}
        }
        at = start + alen.next_multiple_of(4);
    }
    Ok(match kind {
        BINDING_REQUEST => Message::BindingRequest { txid },
        BINDING_SUCCESS => Message::BindingSuccess {
            txid,
            mapped: xor_mapped.or(mapped),
        },
        _ => Message::BindingError {
            txid,
            code: code.unwrap_or(0),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_TXID: TxId = [
        0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
    ];

    /// RFC 5769 section 2.1: SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME,
    /// MESSAGE-INTEGRITY, FINGERPRINT. PRIORITY, USERNAME and MESSAGE-INTEGRITY are
    /// comprehension-required attributes we do not know.
    const RFC_REQUEST: &str = "000100582112a442b7e7a701bc34d686fa87dfae\
        802200105354554e207465737420636c69656e74\
        002400046e0001ff\
        80290008932ff9b151263b36\
        000600096576746a3a68367659202020\
        000800149aeaa70cbfd8cb56781ef2b5b2d3f249c1b571a2\
        80280004e57a3bcf";
    /// RFC 5769 section 2.2: XOR-MAPPED-ADDRESS 192.0.2.1:32853.
    const RFC_RESPONSE_V4: &str = "0101003c2112a442b7e7a701bc34d686fa87dfae\
        8022000b7465737420766563746f7220\
        002000080001a147e112a643\
        000800142b91f599fd9e90c38c7489f92af9ba53f06be7d7\
        80280004c07d4c96";
    /// RFC 5769 section 2.3: XOR-MAPPED-ADDRESS [2001:db8:1234:5678:11:2233:4455:6677]:32853.
    const RFC_RESPONSE_V6: &str = "010100482112a442b7e7a701bc34d686fa87dfae\
        8022000b7465737420766563746f7220\
        002000140002a1470113a9faa5d3f179bc25f4b5bed2b9d9\
        00080014a382954e4be67bf11784c97c8292c275bfe3ed41\
        80280004c8fb0b4c";

    /// coturn 4.6.1 (`turnserver --stun-only`) answering our request with txid 10..1b
    /// from 127.0.0.1:40001: XOR-MAPPED-ADDRESS, MAPPED-ADDRESS, RESPONSE-ORIGIN,
    /// SOFTWARE, FINGERPRINT.
    const COTURN_RESPONSE: &str = "010100442112a442101112131415161718191a1b\
        002000080001bd535e12a443\
        0001000800019c417f000001\
        802b0008000187e87f000001\
        80220014436f7475726e2d342e362e312027476f72737427\
        8028000433fc29c5";

    fn bytes(h: &str) -> Vec<u8> {
        hex::decode(h).expect("test vector hex")
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test address")
    }

    /// A message from raw attributes, with a length field to match and no fingerprint.
    fn raw(kind: u16, txid: &TxId, attrs: &[(u16, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        header(&mut out, kind, txid);
        for (t, v) in attrs {
            put_attr(&mut out, *t, v);
        }
        let n = out.len();
        set_len(&mut out, n);
        out
    }

    #[test]
    fn crc32_is_the_zlib_one() {
        assert_eq!(crc32(b""), 0);
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn rfc5769_sample_request() {
        let req = bytes(RFC_REQUEST);
        assert!(is_stun(&req));
        assert_eq!(parse(&req), Ok(Message::BindingRequest { txid: RFC_TXID }));
    }

    #[test]
    fn rfc5769_sample_responses() {
        for (v, want) in [
            (RFC_RESPONSE_V4, sa("192.0.2.1:32853")),
            (
                RFC_RESPONSE_V6,
                sa("[2001:db8:1234:5678:11:2233:4455:6677]:32853"),
            ),
        ] {
            let resp = bytes(v);
            assert!(is_stun(&resp));
            let got = parse(&resp);
            assert_eq!(
                got,
                Ok(Message::BindingSuccess {
                    txid: RFC_TXID,
                    mapped: Some(want)
                })
            );
            // Our encoding of the same address is the vector's XOR-MAPPED-ADDRESS.
            let ours = binding_response(&RFC_TXID, want);
            let n = if want.is_ipv4() { 12 } else { 24 };
            let theirs_at = HEADER_LEN + 16;
            assert_eq!(
                hex::encode(&ours[HEADER_LEN..HEADER_LEN + n]),
                hex::encode(&resp[theirs_at..theirs_at + n])
            );
        }
    }

    #[test]
    fn a_real_server_response() {
        let txid: TxId = std::array::from_fn(|i| 0x10 + i as u8);
        assert_eq!(
            parse(&bytes(COTURN_RESPONSE)),
            Ok(Message::BindingSuccess {
                txid,
                mapped: Some(sa("127.0.0.1:40001"))
            })
        );
    }

    #[test]
    fn round_trips_v4_and_v6() {
        let txid = [7u8; 12];
        let req = binding_request(&txid);
        assert_eq!(req.len(), REQUEST_LEN);
        assert!(is_stun(&req));
        assert_eq!(parse(&req), Ok(Message::BindingRequest { txid }));
        for a in [
            "203.0.113.7:41641",
            "0.0.0.0:0",
            "255.255.255.255:65535",
            "[2001:db8::9]:1",
            "[::ffff:192.0.2.1]:3478",
        ] {
            let mapped = sa(a);
            let resp = binding_response(&txid, mapped);
            assert!(resp.len() <= RESPONSE_MAX_LEN);
            assert!(is_stun(&resp));
            let got = parse(&resp).expect("own response parses");
            assert_eq!(
                got,
                Message::BindingSuccess {
                    txid,
                    mapped: Some(mapped)
                }
            );
            assert_eq!(got.txid(), &txid);
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let mut all = vec![
            bytes(RFC_REQUEST),
            bytes(RFC_RESPONSE_V4),
            bytes(RFC_RESPONSE_V6),
            bytes(COTURN_RESPONSE),
            binding_request(&[1; 12]),
        ];
        all.push(binding_response(&[1; 12], sa("192.0.2.1:5")));
        all.push(binding_response(&[1; 12], sa("[2001:db8::1]:5")));
        for m in all {
            for n in 0..m.len() {
                assert!(parse(&m[..n]).is_err(), "{n} bytes of {}", hex::encode(&m));
                assert!(!is_stun(&m[..n]));
            }
            // Extra bytes after the message contradict its length field.
            let mut long = m.clone();
            long.extend_from_slice(&[0; 4]);
            assert_eq!(parse(&long), Err(StunError::BadLength));
            assert!(!is_stun(&long));
        }
    }

    #[test]
    fn fingerprint_is_checked() {
        for m in [
            bytes(RFC_REQUEST),
            bytes(RFC_RESPONSE_V6),
            binding_request(&[9; 12]),
            binding_response(&[9; 12], sa("[2001:db8::9]:1")),
        ] {
            // Any bit flipped in the attributes, the fingerprint's own value included,
            // is caught.
            // (Not the FINGERPRINT's type: changed, it is an unknown attribute and the
            // message one without a fingerprint.)
            let fp_type = m.len() - 8..m.len() - 6;
            for i in (HEADER_LEN..m.len()).filter(|i| !fp_type.contains(i)) {
                let mut bad = m.clone();
                bad[i] ^= 0x10;
                assert!(parse(&bad).is_err(), "byte {i} of {}", hex::encode(&m));
            }
            // A changed transaction id keeps the layout but breaks the fingerprint.
            let mut bad = m.clone();
            bad[12] ^= 1;
            assert_eq!(parse(&bad), Err(StunError::BadFingerprint));
        }
        // A FINGERPRINT that is not last is refused.
        let mut m = binding_request(&[3; 12]);
        m.extend_from_slice(&[0x80, 0x22, 0, 0]);
        let n = m.len();
        set_len(&mut m, n);
        assert_eq!(parse(&m), Err(StunError::BadFingerprint));
        // A FINGERPRINT of the wrong size too.
        let m = raw(BINDING_REQUEST, &[3; 12], &[(ATTR_FINGERPRINT, &[0; 8])]);
        assert_eq!(parse(&m), Err(StunError::BadFingerprint));
    }

    #[test]
    fn without_fingerprint_and_with_unknown_attributes() {
        let txid = [5u8; 12];
        // An unknown comprehension-required attribute (0x0003, CHANGE-REQUEST of RFC
        // 3489) in a request: still a request.
        let req = raw(BINDING_REQUEST, &txid, &[(0x0003, &[0, 0, 0, 4])]);
        assert_eq!(parse(&req), Ok(Message::BindingRequest { txid }));
        // A bare header is a request.
        let bare = raw(BINDING_REQUEST, &txid, &[]);
        assert!(is_stun(&bare));
        assert_eq!(parse(&bare), Ok(Message::BindingRequest { txid }));
        // An old server's MAPPED-ADDRESS, behind an unknown optional attribute.
        let old = raw(
            BINDING_SUCCESS,
            &txid,
            &[
                (0x8050, b"x"),
                (ATTR_MAPPED_ADDRESS, &[0, 1, 0x80, 0x55, 192, 0, 2, 1]),
            ],
        );
        assert_eq!(
            parse(&old),
            Ok(Message::BindingSuccess {
                txid,
                mapped: Some(sa("192.0.2.1:32853"))
            })
        );
        // XOR-MAPPED-ADDRESS wins over MAPPED-ADDRESS whatever the order; the first of
        // two XOR-MAPPED-ADDRESSes counts.
        let mut both = Vec::new();
        put_attr(&mut both, ATTR_MAPPED_ADDRESS, &[0, 1, 0, 1, 10, 0, 0, 1]);
        put_xor_addr(&mut both, sa("198.51.100.1:2"), &txid);
        put_xor_addr(&mut both, sa("198.51.100.9:9"), &txid);
        let mut m = Vec::new();
        header(&mut m, BINDING_SUCCESS, &txid);
        m.extend_from_slice(&both);
        finish(&mut m);
        assert_eq!(
            parse(&m),
            Ok(Message::BindingSuccess {
                txid,
                mapped: Some(sa("198.51.100.1:2"))
            })
        );
        // A success without an address.
        let none = raw(BINDING_SUCCESS, &txid, &[]);
        assert_eq!(
            parse(&none),
            Ok(Message::BindingSuccess { txid, mapped: None })
        );
        // Address attributes mean nothing in a request, so a broken one is ignored there.
        let req = raw(BINDING_REQUEST, &txid, &[(ATTR_XOR_MAPPED_ADDRESS, &[1])]);
        assert_eq!(parse(&req), Ok(Message::BindingRequest { txid }));
    }

    #[test]
    fn error_responses() {
        let txid = [6u8; 12];
        let e = raw(
            BINDING_ERROR,
            &txid,
            &[(ATTR_ERROR_CODE, b"\0\0\x04\x14Unknown Attribute")],
        );
        assert_eq!(parse(&e), Ok(Message::BindingError { txid, code: 420 }));
        let e = raw(BINDING_ERROR, &txid, &[]);
        assert_eq!(parse(&e), Ok(Message::BindingError { txid, code: 0 }));
        for bad in [&b"\0\0\x04"[..], b"\0\0\x02\x00", b"\0\0\x04\x64"] {
            let e = raw(BINDING_ERROR, &txid, &[(ATTR_ERROR_CODE, bad)]);
            assert_eq!(parse(&e), Err(StunError::BadAttribute));
        }
    }

    #[test]
    fn other_traffic_is_refused() {
        // A WireGuard handshake initiation: type 1 but no cookie.
        let mut wg = vec![0u8; 148];
        wg[0] = 1;
        assert!(!is_stun(&wg));
        assert_eq!(parse(&wg), Err(StunError::NotStun));
        assert_eq!(parse(&[0x41; 40]), Err(StunError::NotStun));
        assert_eq!(parse(&[0; 19]), Err(StunError::TooShort));
        // The top two bits set (a WireGuard-over-something, RTP, ...).
        let mut m = binding_request(&[1; 12]);
        m[0] |= 0x80;
        assert!(!is_stun(&m));
        assert_eq!(parse(&m), Err(StunError::NotStun));
        // A binding indication, and another method.
        for kind in [0x0011u16, 0x0003] {
            let mut m = binding_request(&[1; 12]);
            m[..2].copy_from_slice(&kind.to_be_bytes());
            assert!(is_stun(&m));
            assert_eq!(parse(&m), Err(StunError::Unsupported(kind)));
        }
        // A length that is not a multiple of 4.
        let mut m = raw(BINDING_REQUEST, &[1; 12], &[]);
        m.push(0);
        set_len(&mut m, HEADER_LEN + 1);
        assert!(!is_stun(&m));
        assert_eq!(parse(&m), Err(StunError::BadLength));
        // An attribute running past the end.
        let mut m = raw(BINDING_SUCCESS, &[0; 12], &[]);
        m.extend_from_slice(&[0, 0x20, 0, 40, 0, 1, 0, 0]);
        let n = m.len();
        set_len(&mut m, n);
        assert_eq!(parse(&m), Err(StunError::BadLength));
        // A malformed XOR-MAPPED-ADDRESS in a response.
        for v in [
            &[0u8, 1, 0, 0, 1, 2, 3][..],
            &[0, 3, 0, 0, 1, 2, 3, 4],
            &[0; 20],
        ] {
            let m = raw(BINDING_SUCCESS, &[0; 12], &[(ATTR_XOR_MAPPED_ADDRESS, v)]);
            assert_eq!(parse(&m), Err(StunError::BadAttribute), "{v:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        assert_eq!(
            StunError::Unsupported(0x11).to_string(),
            "unsupported STUN message type 0x0011"
        );
        assert!(
            StunError::BadFingerprint
                .to_string()
                .contains("fingerprint")
        );
    }
}
