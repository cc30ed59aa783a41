//! Fuzz entry points for the coordinator: message decoding and the registry.

use crate::proto::coord::server::{
    ConnId, Output, PeerAuth, PeerRecord, PeerRow, Registry, RemoteRole, TunnelRow,
};
use crate::wire::addr::{IpCidr, NodeId};
use crate::wire::coord::{
    self, ClientMsg, DecodeError, Hello, MAX_MESSAGE_BYTES, Node, ServerMsg, decode_client,
    decode_server,
};
use crate::wire::key::NodePublic;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Instant;

/// Decodes `data` as a client and as a server message; whatever decodes must re-encode to
/// text that decodes to the same message.
pub fn coord_msg(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = decode_client(text) {
        let encoded = m.encode();
        // Canonical forms can be longer than the input (`::1` becomes `::1/128`).
        if encoded.len() <= MAX_MESSAGE_BYTES {
            assert_eq!(
                decode_client(&encoded).as_ref(),
                Ok(&m),
                "client round trip: {encoded}"
            );
        }
    }
    if let Ok(m) = decode_server(text) {
        let encoded = m.encode();
        if encoded.len() <= MAX_MESSAGE_BYTES {
            let again = decode_server(&encoded).expect("re-encoded server message decodes");
            assert!(server_eq(&again, &m), "server round trip: {encoded}");
        }
    }
}

/// Equality that tolerates the last-bit float differences a JSON number may pick up in a
/// parse/print/parse cycle inside the opaque DERP map.
fn server_eq(a: &ServerMsg, b: &ServerMsg) -> bool {
    match (a, b) {
        (
            ServerMsg::Welcome {
                version: va,
                id: ia,
                derp_map: ma,
            },
            ServerMsg::Welcome {
                version: vb,
                id: ib,
                derp_map: mb,
            },
        ) => {
            va == vb
                && ia == ib
                && match (ma, mb) {
                    (Some(x), Some(y)) => value_eq(x, y),
                    (None, None) => true,
                    _ => false,
                }
        }
        _ => a == b,
    }
}

fn value_eq(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value::*;
    match (a, b) {
        (Number(x), Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) if x.is_f64() || y.is_f64() => {
                p == q || (p - q).abs() <= p.abs().max(q.abs()) * 1e-15
            }
            _ => x == y,
        },
        (Array(x), Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| value_eq(p, q)),
        (Object(x), Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| value_eq(v, w)))
        }
        _ => a == b,
    }
}

const IDS: usize = 6;

fn ids() -> [NodeId; IDS] {
    std::array::from_fn(|i| NodeId(uuid::Uuid::from_bytes([i as u8 + 1; 16])))
}

/// The fixed policy the fuzzed clients run under: principal `p` may use ids `2p` and `2p+1`.
fn allowed(principal: usize, agent: NodeId) -> bool {
    ids()
        .iter()
        .position(|i| *i == agent)
        .is_some_and(|pos| pos / 2 == principal)
}

fn client(principal: usize) -> PeerAuth {
    PeerAuth::Client {
        principal: format!("p{principal}"),
        authorizer: Arc::new(move |a: NodeId| allowed(principal, a)),
    }
}

/// Reads bytes as needed, yielding zeros once the input is exhausted.
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn next(&mut self) -> usize {
        self.0.next().copied().map_or(0, usize::from)
    }
    fn id(&mut self) -> NodeId {
        ids()[self.next() % IDS]
    }
}

fn node(b: &mut Bytes<'_>, id: NodeId) -> Node {
    let claim = |b: &mut Bytes<'_>| -> IpCidr {
        match b.next() % 4 {
            0 => IpCidr::host(std::net::IpAddr::V6(b.id().tailnet_addr())),
            1 => IpCidr {
                addr: std::net::IpAddr::V6(id.tailnet_addr()),
                prefix_len: 64,
            },
            _ => IpCidr::host(std::net::IpAddr::V6(id.tailnet_addr())),
        }
    };
    let mut n = Node {
        id: if b.next().is_multiple_of(8) {
            b.id()
        } else {
            id
        },
        key: NodePublic::from_bytes([b.next() as u8; 32]),
        preferred_derp: 1,
        addresses: vec![],
        allowed_ips: vec![],
        endpoints: vec![],
        as_of: b.next() as u64,
    };
    for _ in 0..b.next() % 3 {
        n.addresses.push(claim(b));
    }
    for _ in 0..b.next() % 3 {
        n.allowed_ips.push(claim(b));
    }
    n
}

const REPLICAS: [&str; 3] = ["own", "r1", "r2"];

fn replica(b: &mut Bytes<'_>) -> String {
    REPLICAS[b.next() % REPLICAS.len()].to_string()
}

fn live_set(b: &mut Bytes<'_>) -> BTreeSet<String> {
    let mask = b.next();
    REPLICAS
        .iter()
        .enumerate()
        .filter(|(i, _)| mask & (1 << i) != 0)
        .map(|(_, r)| r.to_string())
        .collect()
}

fn peer_row(b: &mut Bytes<'_>, id: NodeId) -> PeerRow {
    let role = match b.next() % 4 {
        0 => RemoteRole::Agent,
        1 => RemoteRole::Client("p0".into()),
        2 => RemoteRole::Client("p1".into()),
        _ => RemoteRole::Service,
    };
    let with_node = !b.next().is_multiple_of(3);
    PeerRow {
        record: PeerRecord {
            id,
            name: "n".into(),
            role,
            instance: if b.next().is_multiple_of(2) {
                String::new()
            } else {
                "i".into()
            },
            node: with_node.then(|| node(b, id)),
        },
        replica: replica(b),
        bound_at: (b.next() % 8) as i64,
        silent: std::time::Duration::from_secs((b.next() % 64) as u64),
        lost: b.next().is_multiple_of(4),
    }
}

/// One input from "the database": another replica's rows, a resync, or a handshake hint.
fn remote_input(reg: &mut Registry, b: &mut Bytes<'_>, now: Instant) {
    let live = live_set(b);
    match b.next() % 4 {
        0 | 1 => {
            let id = b.id();
            let rows: Vec<PeerRow> = (0..b.next() % 3).map(|_| peer_row(b, id)).collect();
            reg.remote_peer_rows(id, &rows, &live, b.next().is_multiple_of(2), now);
        }
        2 => {
            let src = b.id();
            let rows: Vec<TunnelRow> = (0..b.next() % 4)
                .map(|_| TunnelRow {
                    src,
                    dst: b.id(),
                    replica: replica(b),
                })
                .collect();
            reg.remote_tunnel_rows(src, &rows, now);
        }
        _ => {
            if b.next().is_multiple_of(2) {
                let peers: Vec<PeerRow> = (0..b.next() % 4)
                    .map(|_| {
                        let id = b.id();
                        peer_row(b, id)
                    })
                    .collect();
                let tunnels: Vec<TunnelRow> = (0..b.next() % 4)
                    .map(|_| TunnelRow {
                        src: b.id(),
                        dst: b.id(),
                        replica: replica(b),
                    })
                    .collect();
                reg.remote_resync(&peers, &tunnels, &live, now);
            } else {
                let (src, dst) = (b.id(), b.id());
                reg.remote_ready_for_handshake(src, dst, now);
            }
        }
    }
}

/// A replica notification payload: parsing never panics.
pub fn replica_note(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::services::replica::parse_note(text);
    }
}

/// Drives a registry with connects, requests, raw text, bad messages and closes chosen by
/// `data`, checking after every step that no tunnel starts at an agent or leads somewhere
/// its source may not go, that nothing is sent to a closed stream, and that the registry's
/// indexes agree.
pub fn coord_registry(data: &[u8]) {
    // Any instant will do: the registry only keeps the instants it is given.
    #[allow(clippy::disallowed_methods)]
    let now = Instant::now();
    let mut reg = Registry::new(None);
    let mut b = Bytes(data.iter());
    let mut conns: Vec<(ConnId, NodeId)> = Vec::new();
    let mut closed: HashSet<ConnId> = HashSet::new();
    let mut next_conn: ConnId = 1;
    // Half the inputs run as one replica of three, fed other replicas' rows.
    let replicated = b.next().is_multiple_of(2);
    if replicated {
        reg.enable_replication("own".into());
    }
    while b.0.len() > 0 {
        let op = b.next();
        if replicated && op % 4 == 3 {
            remote_input(&mut reg, &mut b, now);
            continue;
        }
        let pick = |b: &mut Bytes<'_>, conns: &[(ConnId, NodeId)]| {
            (!conns.is_empty()).then(|| conns[b.next() % conns.len()])
        };
        match op % 8 {
            0 | 1 => {
                let conn = next_conn;
                next_conn += 1;
                let id = b.id();
                let auth = match b.next() % 4 {
                    0 => PeerAuth::Agent {
                        id: if b.next().is_multiple_of(4) {
                            b.id()
                        } else {
                            id
                        },
                    },
                    1 => client(0),
                    2 => client(1),
                    _ => PeerAuth::Service,
                };
                let version = if b.next() % 16 == 0 {
                    2
                } else {
                    coord::PROTOCOL_VERSION
                };
                let hello = Hello {
                    version,
                    id,
                    name: "n".repeat(b.next()),
                    instance: if b.next().is_multiple_of(2) {
                        String::new()
                    } else {
                        "i".into()
                    },
                };
                reg.connect(conn, &hello, auth, now);
                conns.push((conn, id));
            }
            2..=4 => {
                let Some((conn, id)) = pick(&mut b, &conns) else {
                    continue;
                };
                let msg = match b.next() % 7 {
                    0 => ClientMsg::UpdateSelf {
                        node: node(&mut b, id),
                    },
                    1 | 2 => ClientMsg::AddTunnel { id: b.id() },
                    3 => ClientMsg::RemoveTunnel { id: b.id() },
                    4 => ClientMsg::ReadyForHandshake { id: b.id() },
                    5 => ClientMsg::Disconnect {},
                    _ => ClientMsg::Hello(Hello {
                        version: 1,
                        id,
                        name: String::new(),
                        instance: String::new(),
                    }),
                };
                reg.handle_message(conn, msg, now);
            }
            5 => {
                let Some((conn, _)) = pick(&mut b, &conns) else {
                    continue;
                };
                let len = b.next();
                let raw: Vec<u8> = (0..len).map(|_| b.next() as u8).collect();
                reg.handle_text(conn, &String::from_utf8_lossy(&raw), now);
            }
            6 => {
                let Some((conn, _)) = pick(&mut b, &conns) else {
                    continue;
                };
                let err = match b.next() % 2 {
                    0 => DecodeError::TooLarge {
                        len: MAX_MESSAGE_BYTES + 1,
                    },
                    _ => DecodeError::MissingType,
                };
                reg.bad_message(conn, &err, now);
            }
            _ => {
                let Some((conn, _)) = pick(&mut b, &conns) else {
                    continue;
                };
                reg.close(conn, b.next().is_multiple_of(2), now);
                closed.insert(conn);
            }
        }
        while let Some(out) = reg.poll_action() {
            match out {
                Output::Send { conn, .. } => {
                    assert!(conn < next_conn, "send to unknown stream {conn}");
                    assert!(!closed.contains(&conn), "send to closed stream {conn}");
                }
                Output::Close { conn, .. } => {
                    assert!(closed.insert(conn), "stream {conn} closed twice");
                }
                Output::Replicate(_) => assert!(replicated, "replicated without replication"),
            }
        }
        reg.check_invariants();
        for (src, dst) in reg.tunnels() {
            match reg.auth_of(src) {
                None => panic!("tunnel from a peer that is not live"),
                Some(PeerAuth::Agent { .. }) => panic!("tunnel from an agent"),
                Some(PeerAuth::Client { principal, .. }) => {
                    let p = usize::from(principal.as_bytes()[1] - b'0');
                    assert!(allowed(p, dst), "{principal} may not use {dst}");
                }
                Some(PeerAuth::Service) => {}
            }
        }
        for (conn, _) in &conns {
            assert!(
                !(reg.is_live(*conn) && closed.contains(conn)),
                "closed stream {conn} is live"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    /// The registry target on a few thousand pseudo-random inputs (half of them as a
    /// replica fed other replicas' rows), so its invariants are checked on every test run.
    #[test]
    fn registry_survives_random_inputs() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let len = (next() % 600) as usize;
            let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            super::coord_registry(&data);
        }
    }

    #[test]
    fn replica_notes_never_panic() {
        for payload in [
            "",
            "p",
            "h  ",
            "r \u{0}",
            "t 1 2 3",
            "p 01010101-0101-0101-0101-010101010101",
        ] {
            super::replica_note(payload.as_bytes());
        }
    }
}
