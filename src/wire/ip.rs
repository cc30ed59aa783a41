//! Peeks at IP packets: version, addresses, length, and the TCP/UDP ports and TCP flags
//! the device and netstack need for routing and for accepting connections.
//!
//! This is a view, not a full parser: smoltcp does the real parsing of packets that reach
//! the netstack. [`IpPeek::parse`] checks every length it relies on.

use super::WireError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// IP protocol number for TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number for UDP.
pub const PROTO_UDP: u8 = 17;

/// What the packet path needs to know about an IP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPeek {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Total packet length claimed by the header (always ≤ the buffer length).
    pub total_len: usize,
    /// Transport protocol (next header for IPv6 without extension headers).
    pub protocol: u8,
    /// Offset of the transport header.
    pub transport_offset: usize,
}

/// The TCP fields the netstack's accept path looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpPeek {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// SYN flag.
    pub syn: bool,
    /// ACK flag.
    pub ack: bool,
    /// RST flag.
    pub rst: bool,
}

impl IpPeek {
    /// Reads the IP header of `pkt`.
    ///
    /// # Errors
    /// [`WireError::Truncated`] if the buffer is shorter than the header or the header's
    /// claimed length; [`WireError::Malformed`] for an unknown version or a bad header length.
    pub fn parse(pkt: &[u8]) -> Result<Self, WireError> {
        let first = *pkt.first().ok_or(WireError::Truncated)?;
        match first >> 4 {
            4 => {
                let hdr: &[u8; 20] = pkt
                    .get(..20)
                    .ok_or(WireError::Truncated)?
                    .try_into()
                    .map_err(|_| WireError::Truncated)?;
                let ihl = usize::from(hdr[0] & 0x0f) * 4;
                if ihl < 20 {
                    return Err(WireError::Malformed);
                }
                let total_len = usize::from(u16::from_be_bytes([hdr[2], hdr[3]]));
                if total_len < ihl {
                    return Err(WireError::Malformed);
                }
                if total_len > pkt.len() {
                    return Err(WireError::Truncated);
                }
                Ok(Self {
                    src: IpAddr::V4(Ipv4Addr::new(hdr[12], hdr[13], hdr[14], hdr[15])),
                    dst: IpAddr::V4(Ipv4Addr::new(hdr[16], hdr[17], hdr[18], hdr[19])),
                    total_len,
                    protocol: hdr[9],
                    transport_offset: ihl,
                })
            }
            6 => {
                let hdr: &[u8; 40] = pkt
                    .get(..40)
                    .ok_or(WireError::Truncated)?
                    .try_into()
                    .map_err(|_| WireError::Truncated)?;
                let payload = usize::from(u16::from_be_bytes([hdr[4], hdr[5]]));
                let total_len = 40 + payload;
                if total_len > pkt.len() {
                    return Err(WireError::Truncated);
                }
                let mut src = [0u8; 16];
                let mut dst = [0u8; 16];
                src.copy_from_slice(&hdr[8..24]);
                dst.copy_from_slice(&hdr[24..40]);
                Ok(Self {
                    src: IpAddr::V6(Ipv6Addr::from(src)),
                    dst: IpAddr::V6(Ipv6Addr::from(dst)),
                    total_len,
                    protocol: hdr[6],
                    transport_offset: 40,
                })
            }
            _ => Err(WireError::Malformed),
        }
    }

    /// The TCP header fields, if this is a TCP packet with a complete fixed header.
    pub fn tcp(&self, pkt: &[u8]) -> Option<TcpPeek> {
        if self.protocol != PROTO_TCP {
            return None;
        }
        let t = pkt.get(self.transport_offset..self.total_len)?;
        let t = t.get(..20)?;
        let flags = t[13];
        Some(TcpPeek {
            src_port: u16::from_be_bytes([t[0], t[1]]),
            dst_port: u16::from_be_bytes([t[2], t[3]]),
            syn: flags & 0x02 != 0,
            ack: flags & 0x10 != 0,
            rst: flags & 0x04 != 0,
        })
    }
}

/// Just the destination address, for routing outgoing packets. Cheaper than a full peek.
pub fn dst_addr(pkt: &[u8]) -> Option<IpAddr> {
    match pkt.first()? >> 4 {
        4 => {
            let b: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        6 => {
            let b: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // IPv4 TCP SYN 10.0.0.1:40000 -> 10.0.0.2:80, no options.
    const V4_SYN: &str =
        "45000028 00004000 40060000 0a000001 0a000002 9c400050 00000001 00000000 5002ffff 00000000";

    fn hexb(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    #[test]
    fn test_parse_v4_syn() {
        let mut p = hexb(V4_SYN);
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        let ip = IpPeek::parse(&p).unwrap();
        assert_eq!(ip.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(ip.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!(ip.total_len, 40);
        let t = ip.tcp(&p).unwrap();
        assert_eq!(
            (t.src_port, t.dst_port, t.syn, t.ack),
            (40000, 80, true, false)
        );
        assert_eq!(dst_addr(&p), Some(ip.dst));
    }

    #[test]
    fn test_parse_v6() {
        let mut p = vec![0u8; 60];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&20u16.to_be_bytes());
        p[6] = PROTO_TCP;
        p[23] = 1;
        p[39] = 2;
        p[40 + 13] = 0x12;
        let ip = IpPeek::parse(&p).unwrap();
        assert_eq!(ip.dst, "::2".parse::<IpAddr>().unwrap());
        let t = ip.tcp(&p).unwrap();
        assert!(t.syn && t.ack);
    }

    #[test]
    fn test_parse_rejects() {
        assert_eq!(IpPeek::parse(&[]), Err(WireError::Truncated));
        assert_eq!(IpPeek::parse(&[0x45; 10]), Err(WireError::Truncated));
        assert_eq!(IpPeek::parse(&[0x10; 40]), Err(WireError::Malformed));
        let mut p = hexb(V4_SYN);
        p[2..4].copy_from_slice(&200u16.to_be_bytes());
        assert_eq!(IpPeek::parse(&p), Err(WireError::Truncated));
        p[2..4].copy_from_slice(&10u16.to_be_bytes());
        assert_eq!(IpPeek::parse(&p), Err(WireError::Malformed));
    }
}
