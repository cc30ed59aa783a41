//! TCP ports listening on the agent host, from `/proc/net/tcp{,6}`.

use crate::services::agent::types::{ListeningPort, ListeningPorts};
use axum::Json;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Parses one `/proc/net/tcp` or `tcp6` table; returns listening sockets.
pub fn parse_proc_net_tcp(text: &str, v6: bool) -> Vec<ListeningPort> {
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state)) = (f.get(1), f.get(3)) else {
            continue;
        };
        if *state != "0A" {
            continue;
        }
        let Some((addr_hex, port_hex)) = local.split_once(':') else {
            continue;
        };
        let Ok(port) = u16::from_str_radix(port_hex, 16) else {
            continue;
        };
        let address = if v6 {
            if addr_hex.len() != 32 {
                continue;
            }
            let mut b = [0u8; 16];
            for (i, word) in (0..4).map(|i| &addr_hex[i * 8..i * 8 + 8]).enumerate() {
                let Ok(w) = u32::from_str_radix(word, 16) else {
                    continue;
                };
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
            }
            Ipv6Addr::from(b).to_string()
        } else {
            let Ok(w) = u32::from_str_radix(addr_hex, 16) else {
                continue;
            };
            Ipv4Addr::from(w.to_le_bytes()).to_string()
        };
        out.push(ListeningPort {
            port,
            network: if v6 { "tcp6" } else { "tcp" }.into(),
            address,
        });
    }
    out
}

pub(super) async fn listening_ports() -> Json<ListeningPorts> {
    let mut ports = Vec::new();
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        if let Ok(text) = tokio::fs::read_to_string(file).await {
            ports.extend(parse_proc_net_tcp(&text, v6));
        }
    }
    ports.sort_by(|a, b| (a.port, &a.network).cmp(&(b.port, &b.network)));
    ports.dedup_by(|b, a| a.port == b.port);
    Json(ListeningPorts { ports })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listening_sockets() {
        let v4 = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:0016 0100007F:1234 01 0\n";
        let p = parse_proc_net_tcp(v4, false);
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].port, p[0].address.as_str()), (8080, "127.0.0.1"));
        let v6 = "hdr\n 0: 00000000000000000000000001000000:0050 00000000000000000000000000000000:0000 0A\n";
        let p = parse_proc_net_tcp(v6, true);
        assert_eq!((p[0].port, p[0].address.as_str()), (80, "::1"));
        assert!(parse_proc_net_tcp("hdr\n garbage line\n 0: zz:zz x 0A\n", false).is_empty());
    }
}
