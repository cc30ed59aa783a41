//! Coordinator messages: JSON text over a websocket.
//!
//! Owns the message shapes of the coordinator protocol (see `docs/protocol.md`,
//! "Coordinator") and their decode/encode. Every message is a JSON object with a `"type"`
//! tag; unknown fields are ignored so either side can grow. Decoding classifies failures so
//! the server can answer precisely: malformed JSON, a missing or unknown `type`, a known
//! type with bad fields, or a message over [`MAX_MESSAGE_BYTES`].
//!
//! Must not import tokio or read the clock.

use crate::wire::addr::{IpCidr, NodeId};
use crate::wire::key::NodePublic;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use thiserror::Error;

/// The protocol version this crate speaks, sent in `hello` and `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest message either side accepts, in bytes of UTF-8 text.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// Websocket close code: normal closure (after a graceful `disconnect`).
pub const CLOSE_NORMAL: u16 = 1000;
/// Websocket close code: the server is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Websocket close code: protocol violation (no `hello`, unsupported version).
pub const CLOSE_PROTOCOL: u16 = 1002;
/// Websocket close code: authorization violation. Permanent until the token or request changes.
pub const CLOSE_POLICY: u16 = 1008;
/// Websocket close code: a message exceeded [`MAX_MESSAGE_BYTES`].
pub const CLOSE_TOO_BIG: u16 = 1009;
/// Websocket close code: the peer did not read fast enough and its queue overflowed.
pub const CLOSE_TRY_AGAIN: u16 = 1013;
/// Websocket close code: another stream with the same node id replaced this one.
pub const CLOSE_REPLACED: u16 = 4000;
/// Websocket close code: the node id is already live on another stream that is still
/// answering; this stream was refused. Retry only after a long backoff.
pub const CLOSE_CONFLICT: u16 = 4001;

/// A node as peers see it: everything needed to program a WireGuard peer and reach it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The node's id; must equal the id of the stream that sends it.
    pub id: NodeId,
    /// WireGuard static public key, also the node's DERP address.
    pub key: NodePublic,
    /// Home DERP region id; 0 means none (the node is reachable only directly).
    #[serde(default)]
    pub preferred_derp: u16,
    /// The node's own tailnet addresses (each a /128 derived from its id).
    #[serde(default, with = "cidr_list")]
    pub addresses: Vec<IpCidr>,
    /// Prefixes peers route to this node (the same /128s).
    #[serde(default, with = "cidr_list")]
    pub allowed_ips: Vec<IpCidr>,
    /// Candidate `ip:port` UDP endpoints for direct paths.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// When the node produced this description, unix milliseconds; newer wins at receivers.
    #[serde(default)]
    pub as_of: u64,
}

/// The first message on every stream, from the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks.
    pub version: u32,
    /// The client's node id. Agents must send the id their token is bound to.
    pub id: NodeId,
    /// A human-readable name for logs.
    #[serde(default)]
    pub name: String,
    /// A random value fixed for the life of the client process. A reconnect carrying the
    /// same instance as the live stream replaces it at once; another instance of the same
    /// agent is refused while the live stream still answers.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub instance: String,
}

/// Messages from a client (agent, user client or service) to the coordinator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// Names the protocol version and the node id; must be first, and only first.
    Hello(Hello),
    /// Replaces the sender's node; fanned out to every peer sharing a tunnel with it.
    UpdateSelf {
        /// The sender's current node.
        node: Node,
    },
    /// Opens a tunnel from the sender to `id` (clients and services only).
    AddTunnel {
        /// The destination (an agent).
        id: NodeId,
    },
    /// Closes the tunnel from the sender to `id`.
    RemoveTunnel {
        /// The destination.
        id: NodeId,
    },
    /// Tells `id` (a tunnel peer) that the sender is ready for a WireGuard handshake.
    ReadyForHandshake {
        /// The tunnel peer to tell.
        id: NodeId,
    },
    /// Graceful goodbye: tunnel peers get `disconnected`, and the server closes the stream.
    Disconnect {},
}

/// What happened to a peer, in a [`PeerUpdate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerKind {
    /// The peer's current node is in `node`.
    Node,
    /// The peer left gracefully or the tunnel was removed: forget it.
    Disconnected,
    /// The peer's stream dropped; keep live sessions, it may come back.
    Lost,
    /// The peer is ready for a handshake (sent along an existing tunnel).
    ReadyForHandshake,
}

/// A change to one peer, sent by the coordinator to the peer's tunnel partners.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerUpdate {
    /// The peer this update is about.
    pub id: NodeId,
    /// What happened.
    pub kind: PeerKind,
    /// The peer's node, for `kind: node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// Why, for `disconnected` and `lost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Messages from the coordinator to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Answer to `hello`: the stream is registered.
    Welcome {
        /// Protocol version the server speaks on this stream.
        version: u32,
        /// The registered node id (echoed).
        id: NodeId,
        /// The DERP map in Tailscale's JSON format, if the server has one.
        #[serde(default)]
        derp_map: Option<serde_json::Value>,
    },
    /// A change to one peer.
    PeerUpdate(PeerUpdate),
    /// A request was refused or could not be parsed; the stream stays open unless closed.
    Error {
        /// What went wrong, for humans.
        message: String,
    },
}

/// Why a coordinator message did not decode. The peer sent something wrong.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The text exceeds [`MAX_MESSAGE_BYTES`]; the stream should be closed.
    #[error("message of {len} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge {
        /// Length of the offending message in bytes.
        len: usize,
    },
    /// Not a JSON object.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// A JSON object without a string `type` field.
    #[error("message has no \"type\" field")]
    MissingType,
    /// A `type` this side does not know (possibly from a newer peer).
    #[error("unknown message type {0:?}")]
    UnknownType(String),
    /// A known `type` whose fields are missing or invalid.
    #[error("invalid {kind} message: {detail}")]
    Invalid {
        /// The message's `type`.
        kind: &'static str,
        /// What was wrong with it.
        detail: String,
    },
}

impl DecodeError {
    /// Whether the stream must be closed rather than answered with an error message.
    pub fn is_fatal(&self) -> bool {
        matches!(self, Self::TooLarge { .. })
    }
}

const CLIENT_TYPES: &[&str] = &[
    "hello",
    "update_self",
    "add_tunnel",
    "remove_tunnel",
    "ready_for_handshake",
    "disconnect",
];
const SERVER_TYPES: &[&str] = &["welcome", "peer_update", "error"];

/// Longest `type` string echoed back in an error, so errors stay small.
const MAX_ECHOED_TYPE: usize = 64;

/// Decodes a message sent by a client.
///
/// # Errors
/// [`DecodeError`] classifies why the text is not a valid client message.
pub fn decode_client(text: &str) -> Result<ClientMsg, DecodeError> {
    decode(text, CLIENT_TYPES)
}

/// Decodes a message sent by the server.
///
/// # Errors
/// [`DecodeError`] classifies why the text is not a valid server message.
pub fn decode_server(text: &str) -> Result<ServerMsg, DecodeError> {
    decode(text, SERVER_TYPES)
}

fn decode<T: serde::de::DeserializeOwned>(
    text: &str,
    known: &'static [&'static str],
) -> Result<T, DecodeError> {
    if text.len() > MAX_MESSAGE_BYTES {
        return Err(DecodeError::TooLarge { len: text.len() });
    }
    // Parse once into a tree so the tag can be classified before the typed conversion;
    // messages are small and rare enough that the second pass costs nothing that matters.
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    let Some(obj) = value.as_object() else {
        return Err(DecodeError::Malformed("expected a JSON object".into()));
    };
    let Some(tag) = obj.get("type").and_then(|t| t.as_str()) else {
        return Err(DecodeError::MissingType);
    };
    let Some(kind) = known.iter().copied().find(|k| *k == tag) else {
        return Err(DecodeError::UnknownType(truncate(tag, MAX_ECHOED_TYPE)));
    };
    serde_json::from_value(value).map_err(|e| DecodeError::Invalid {
        kind,
        detail: e.to_string(),
    })
}

fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Encodes a message as JSON text.
fn encode<T: Serialize>(msg: &T) -> String {
    // These types contain only strings, numbers, lists and string-keyed maps, which JSON
    // always represents, so serialization cannot fail; the fallback keeps that an invariant
    // of the types rather than a panic site.
    serde_json::to_string(msg).unwrap_or_else(|e| {
        serde_json::json!({"type": "error", "message": format!("encode failed: {e}")}).to_string()
    })
}

impl ClientMsg {
    /// The message as JSON text.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// The message's `type` tag, for logs and counters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Hello(_) => "hello",
            Self::UpdateSelf { .. } => "update_self",
            Self::AddTunnel { .. } => "add_tunnel",
            Self::RemoveTunnel { .. } => "remove_tunnel",
            Self::ReadyForHandshake { .. } => "ready_for_handshake",
            Self::Disconnect {} => "disconnect",
        }
    }
}

impl ServerMsg {
    /// The message as JSON text.
    pub fn encode(&self) -> String {
        encode(self)
    }

    /// An error message.
    pub fn error(message: impl Into<String>) -> Self {
        Self::Error {
            message: message.into(),
        }
    }
}

/// Serde for CIDR lists as strings (`"fd7a:115c:a1e0::1/128"`); a bare address means a
/// host route.
mod cidr_list {
    use crate::wire::addr::IpCidr;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[IpCidr], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(ToString::to_string))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpCidr>, D::Error> {
        let raw = Vec::<std::borrow::Cow<'de, str>>::deserialize(d)?;
        raw.iter()
            .map(|s| s.parse().map_err(serde::de::Error::custom))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "01234567-89ab-cdef-0123-456789abcdef";
    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    fn node() -> Node {
        let id: NodeId = ID.parse().unwrap();
        Node {
            id,
            key: KEY.parse().unwrap(),
            preferred_derp: 999,
            addresses: vec![id.tailnet_prefix().parse().unwrap()],
            allowed_ips: vec![id.tailnet_prefix().parse().unwrap()],
            endpoints: vec![
                "192.0.2.1:41641".parse().unwrap(),
                "[2001:db8::1]:7".parse().unwrap(),
            ],
            as_of: 1_700_000_000_123,
        }
    }

    #[test]
    fn test_parse_hello() {
        let m = decode_client(&format!(
            r#"{{"type":"hello","version":1,"id":"{ID}","name":"laptop","extra":[1,2]}}"#
        ))
        .unwrap();
        assert_eq!(
            m,
            ClientMsg::Hello(Hello {
                version: 1,
                id: ID.parse().unwrap(),
                name: "laptop".into(),
                instance: String::new(),
            })
        );
    }

    #[test]
    fn test_emit_hello() {
        let m = ClientMsg::Hello(Hello {
            version: 1,
            id: ID.parse().unwrap(),
            name: "x".into(),
            instance: String::new(),
        });
        assert_eq!(
            m.encode(),
            format!(r#"{{"type":"hello","version":1,"id":"{ID}","name":"x"}}"#)
        );
    }

    #[test]
    fn test_parse_update_self() {
        let text = format!(
            r#"{{"type":"update_self","node":{{"id":"{ID}","key":"{KEY}","preferred_derp":999,
            "addresses":["fd7a:115c:a1e0:cdef:123:4567:89ab:cdef/128"],
            "allowed_ips":["fd7a:115c:a1e0:cdef:0123:4567:89ab:cdef"],
            "endpoints":["192.0.2.1:41641","[2001:db8::1]:7"],"as_of":1700000000123}}}}"#
        );
        assert_eq!(
            decode_client(&text).unwrap(),
            ClientMsg::UpdateSelf { node: node() }
        );
    }

    #[test]
    fn test_emit_node() {
        let json = serde_json::to_value(node()).unwrap();
        assert_eq!(
            json["addresses"][0],
            "fd7a:115c:a1e0:cdef:123:4567:89ab:cdef/128"
        );
        assert_eq!(json["endpoints"][1], "[2001:db8::1]:7");
        assert_eq!(json["key"], KEY);
        assert_eq!(json["as_of"], 1_700_000_000_123u64);
    }

    #[test]
    fn test_parse_minimal_node_defaults() {
        let text = format!(r#"{{"type":"update_self","node":{{"id":"{ID}","key":"{KEY}"}}}}"#);
        let ClientMsg::UpdateSelf { node } = decode_client(&text).unwrap() else {
            panic!()
        };
        assert_eq!(node.preferred_derp, 0);
        assert!(node.addresses.is_empty() && node.endpoints.is_empty());
    }

    #[test]
    fn test_parse_requests() {
        let id: NodeId = ID.parse().unwrap();
        for (text, want) in [
            (
                format!(r#"{{"type":"add_tunnel","id":"{ID}"}}"#),
                ClientMsg::AddTunnel { id },
            ),
            (
                format!(r#"{{"type":"remove_tunnel","id":"{ID}"}}"#),
                ClientMsg::RemoveTunnel { id },
            ),
            (
                format!(r#"{{"type":"ready_for_handshake","id":"{ID}"}}"#),
                ClientMsg::ReadyForHandshake { id },
            ),
            (
                r#"{"type":"disconnect"}"#.to_string(),
                ClientMsg::Disconnect {},
            ),
        ] {
            assert_eq!(decode_client(&text).unwrap(), want);
            assert_eq!(decode_client(&want.encode()).unwrap(), want);
        }
    }

    #[test]
    fn test_emit_peer_update() {
        let id: NodeId = ID.parse().unwrap();
        let m = ServerMsg::PeerUpdate(PeerUpdate {
            id,
            kind: PeerKind::Lost,
            node: None,
            reason: Some("lost".into()),
        });
        assert_eq!(
            m.encode(),
            format!(r#"{{"type":"peer_update","id":"{ID}","kind":"lost","reason":"lost"}}"#)
        );
        assert_eq!(decode_server(&m.encode()).unwrap(), m);
        let rfh = format!(r#"{{"type":"peer_update","id":"{ID}","kind":"ready_for_handshake"}}"#);
        let ServerMsg::PeerUpdate(u) = decode_server(&rfh).unwrap() else {
            panic!()
        };
        assert_eq!(u.kind, PeerKind::ReadyForHandshake);
    }

    #[test]
    fn test_emit_welcome() {
        let id: NodeId = ID.parse().unwrap();
        let m = ServerMsg::Welcome {
            version: 1,
            id,
            derp_map: None,
        };
        assert_eq!(
            m.encode(),
            format!(r#"{{"type":"welcome","version":1,"id":"{ID}","derp_map":null}}"#)
        );
        let with_map = ServerMsg::Welcome {
            version: 1,
            id,
            derp_map: Some(serde_json::json!({"Regions": {"999": {"RegionID": 999}}})),
        };
        assert_eq!(decode_server(&with_map.encode()).unwrap(), with_map);
    }

    #[test]
    fn errors_are_classified() {
        assert!(matches!(decode_client("{"), Err(DecodeError::Malformed(_))));
        assert!(matches!(
            decode_client("[1]"),
            Err(DecodeError::Malformed(_))
        ));
        assert_eq!(decode_client(r#"{"id":1}"#), Err(DecodeError::MissingType));
        assert_eq!(
            decode_client(r#"{"type":7}"#),
            Err(DecodeError::MissingType)
        );
        assert_eq!(
            decode_client(r#"{"type":"teleport"}"#),
            Err(DecodeError::UnknownType("teleport".into()))
        );
        // A server type is unknown to the client decoder and vice versa.
        assert!(matches!(
            decode_client(r#"{"type":"welcome"}"#),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            decode_server(r#"{"type":"hello"}"#),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            decode_client(r#"{"type":"add_tunnel","id":"nope"}"#),
            Err(DecodeError::Invalid {
                kind: "add_tunnel",
                ..
            })
        ));
        let bad_cidr = format!(
            r#"{{"type":"update_self","node":{{"id":"{ID}","key":"{KEY}","addresses":["x/999"]}}}}"#
        );
        assert!(matches!(
            decode_client(&bad_cidr),
            Err(DecodeError::Invalid { .. })
        ));
        let big = format!(
            r#"{{"type":"disconnect","pad":"{}"}}"#,
            "a".repeat(MAX_MESSAGE_BYTES)
        );
        let err = decode_client(&big).unwrap_err();
        assert!(err.is_fatal(), "{err}");
        let deep = "[".repeat(10_000);
        assert!(matches!(
            decode_client(&deep),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_type_echo_is_bounded() {
        let text = format!(r#"{{"type":"{}"}}"#, "é".repeat(1000));
        let Err(DecodeError::UnknownType(t)) = decode_client(&text) else {
            panic!()
        };
        assert!(t.chars().count() <= MAX_ECHOED_TYPE + 3);
    }
}
