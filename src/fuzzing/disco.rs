//! Path discovery messages (ping, pong, call-me-maybe): the sealed envelope and the body.

use crate::wire::disco::{Message, Opener, is_disco, sender};
use crate::wire::key::NodePrivate;

/// Arbitrary bytes as a datagram from a peer and as an opened body.
///
/// Invariants: nothing panics; a body that parses re-encodes to one that parses to the
/// same message; sealing it and opening it again gives it back; a datagram that is not
/// a discovery message is refused before any cryptography; an arbitrary datagram never
/// opens (the box authenticates).
pub fn disco(data: &[u8]) {
    let ours = NodePrivate::from_bytes([7; 32]);
    let theirs = NodePrivate::from_bytes([9; 32]);
    let from_them = Opener::new(&ours, theirs.public());
    let to_us = Opener::new(&theirs, ours.public());
    if let Ok(m) = Message::decode(data) {
        let again = Message::decode(&m.encode());
        assert_eq!(again.as_ref(), Ok(&m), "re-encoded body parses differently");
        let sealed = to_us.seal([data.len() as u8; 24], &m).expect("seal");
        assert!(is_disco(&sealed));
        assert_eq!(from_them.open(&sealed), Ok(m));
    }
    if !is_disco(data) {
        assert!(sender(data).is_err());
    }
    assert!(from_them.open(data).is_err(), "an unsealed datagram opened");
}

#[cfg(test)]
mod tests {
    use crate::wire::disco::Message;

    #[test]
    fn fuzz_entry_point_runs() {
        let bodies = [
            Message::Ping { txid: [1; 12] },
            Message::Pong {
                txid: [2; 12],
                src: "198.51.100.7:41641".parse().expect("addr"),
            },
            Message::CallMeMaybe {
                endpoints: vec!["[2001:db8::5]:1".parse().expect("addr")],
            },
        ];
        for m in &bodies {
            super::disco(&m.encode());
        }
        super::disco(b"");
        super::disco(&[3, 9, 1, 2, 3]);
        super::disco(&[0; 200]);
        let mut fake = crate::wire::disco::MAGIC.to_vec();
        fake.extend_from_slice(&[0; 100]);
        super::disco(&fake);
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/disco");
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Ok(d) = std::fs::read(entry.path()) {
                super::disco(&d);
            }
        }
    }
}
