//! Small parsers: IP and WireGuard header peeks, wg-quick configuration.

use crate::wire::ip::IpPeek;
use crate::wire::wg::WgHeader;
use crate::wire::wgconf::WgConfig;

/// IP peek: every accepted packet's claimed lengths lie inside the buffer.
pub fn ip_peek(data: &[u8]) {
    if let Ok(p) = IpPeek::parse(data) {
        assert!(p.total_len <= data.len());
        assert!(p.transport_offset <= p.total_len);
        let _ = p.tcp(data);
        assert_eq!(crate::wire::ip::dst_addr(data), Some(p.dst));
    }
    if let Ok(h) = WgHeader::parse(data) {
        assert!(data.len() >= 32 || h.kind != crate::wire::wg::MessageKind::Transport);
    }
}

/// wg-quick configuration: accepted configurations have a key and an address, and
/// errors name a line inside the input.
pub fn wgconf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match WgConfig::parse(&text) {
        Ok(c) => assert!(!c.addresses.is_empty()),
        Err(e) => assert!(e.line <= text.lines().count()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_run() {
        super::ip_peek(&[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        super::wgconf(b"[Interface]\nPrivateKey = x\n");
        super::wgconf(b"\xff\xfe[Peer]");
    }
}
