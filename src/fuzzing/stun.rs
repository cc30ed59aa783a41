//! STUN: the binding codec the relay's server and the nodes' endpoint discovery share.

use crate::wire::stun::{self, Message};

/// Arbitrary datagrams into the STUN parser.
///
/// Invariants: nothing panics; `is_stun` holds for everything that parses (the socket
/// demultiplexer never hands a parseable message to WireGuard); a parsed request or
/// success response re-encodes to bytes that parse back to the same message; the
/// server's answer to a parsed request is a success response to it.
pub fn stun(data: &[u8]) {
    let Ok(msg) = stun::parse(data) else {
        return;
    };
    assert!(stun::is_stun(data), "parsed but not demultiplexed as STUN");
    let again = match msg {
        Message::BindingRequest { txid } => {
            let from = std::net::SocketAddr::from(([192, 0, 2, data.len() as u8], 3478));
            let answer = stun::parse(&stun::binding_response(&txid, from));
            assert_eq!(
                answer,
                Ok(Message::BindingSuccess {
                    txid,
                    mapped: Some(from)
                })
            );
            stun::binding_request(&txid)
        }
        Message::BindingSuccess {
            txid,
            mapped: Some(mapped),
        } => stun::binding_response(&txid, mapped),
        // No encoder: we never send these.
        Message::BindingSuccess { mapped: None, .. } | Message::BindingError { .. } => return,
    };
    assert!(stun::is_stun(&again));
    assert_eq!(stun::parse(&again), Ok(msg));
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_point_runs() {
        let txid = [4u8; 12];
        super::stun(&crate::wire::stun::binding_request(&txid));
        for a in ["192.0.2.1:1", "[2001:db8::1]:65535"] {
            let mapped = a.parse().expect("address");
            super::stun(&crate::wire::stun::binding_response(&txid, mapped));
        }
        super::stun(b"");
        super::stun(&[0; 20]);
        super::stun(&[0x21; 64]);
        // Every seed in the fuzz corpus.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stun");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(d) = std::fs::read(entry.path()) {
                super::stun(&d);
            }
        }
    }
}
