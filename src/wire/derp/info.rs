//! The sealed login messages: NaCl boxes of small JSON documents.
//!
//! A box is `nonce (24) | tag (16) | XSalsa20 ciphertext`, the `crypto_box` construction
//! (X25519, then HSalsa20, then XSalsa20-Poly1305) that Go's `nacl/box.Seal` produces with
//! the nonce prepended. The client seals [`ClientInfo`] to the server's key; the server
//! seals [`ServerInfo`] to the client's key, which proves to the client that it talks to
//! the holder of the advertised server key.
//!
//! JSON field names are Go's: `version`, `meshKey`, `CanAckPings`, `IsProber`;
//! `TokenBucketBytesPerSecond`, `TokenBucketBytesBurst`. Like Go's decoder we match names
//! case-insensitively and ignore unknown fields.

use super::{BOX_OVERHEAD, MAX_SERVER_FRAME_LEN, NONCE_LEN};
use crate::wire::key::{NodePrivate, NodePublic};
use crypto_box::aead::AeadInPlace;
use crypto_box::{Nonce, PublicKey, SalsaBox, SecretKey};
use serde_json::{Map, Value};
use std::fmt;
use thiserror::Error;

/// Why a login message did not open or parse. Peer misbehaviour, except `Seal`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LoginError {
    /// Shorter than nonce plus tag.
    #[error("sealed message shorter than nonce and tag")]
    ShortBox,
    /// The box did not open: wrong key or corrupted bytes.
    #[error("sealed message does not open with these keys")]
    BadBox,
    /// The plaintext is not a JSON object.
    #[error("login message is not a JSON object")]
    BadJson,
    /// A known field has the wrong JSON type.
    #[error("login field {0} has the wrong type")]
    BadField(&'static str),
    /// Larger than the protocol allows.
    #[error("login message too large")]
    TooLarge,
    /// Sealing failed; never caused by peer input.
    #[error("cannot seal message")]
    Seal,
}

fn salsa_box(private: &NodePrivate, peer: &NodePublic) -> SalsaBox {
    SalsaBox::new(
        &PublicKey::from(*peer.as_bytes()),
        &SecretKey::from(*private.as_bytes()),
    )
}

/// Seals `msg` from `private` to `peer`: `nonce | tag | ciphertext`. The nonce must be
/// fresh random bytes for every message.
///
/// # Errors
/// [`LoginError::Seal`] if the cipher refuses the message (far beyond protocol sizes).
pub fn seal_to(
    private: &NodePrivate,
    peer: &NodePublic,
    nonce: [u8; NONCE_LEN],
    msg: &[u8],
) -> Result<Vec<u8>, LoginError> {
    let mut ct = msg.to_vec();
    let tag = salsa_box(private, peer)
        .encrypt_in_place_detached(Nonce::from_slice(&nonce), b"", &mut ct)
        .map_err(|_| LoginError::Seal)?;
    let mut out = Vec::with_capacity(NONCE_LEN + BOX_OVERHEAD + msg.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&tag);
    out.extend_from_slice(&ct);
    Ok(out)
}

/// Opens a message sealed by `peer` to `private`.
///
/// # Errors
/// [`LoginError::ShortBox`] or [`LoginError::BadBox`].
pub fn open_from(
    private: &NodePrivate,
    peer: &NodePublic,
    sealed: &[u8],
) -> Result<Vec<u8>, LoginError> {
    let (nonce, rest) = sealed
        .split_at_checked(NONCE_LEN)
        .ok_or(LoginError::ShortBox)?;
    let (tag, ct) = rest
        .split_at_checked(BOX_OVERHEAD)
        .ok_or(LoginError::ShortBox)?;
    let mut pt = ct.to_vec();
    salsa_box(private, peer)
        .decrypt_in_place_detached(Nonce::from_slice(nonce), b"", &mut pt, tag.into())
        .map_err(|_| LoginError::BadBox)?;
    Ok(pt)
}

/// Parses a JSON object; `null` counts as an empty object, as in Go.
fn object(json: &[u8]) -> Result<Map<String, Value>, LoginError> {
    match serde_json::from_slice::<Value>(json) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(Value::Null) => Ok(Map::new()),
        _ => Err(LoginError::BadJson),
    }
}

/// The value of `name`, matched case-insensitively; the last match wins, as in Go.
fn field<'m>(m: &'m Map<String, Value>, name: &str) -> Option<&'m Value> {
    m.iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
        .next_back()
}

fn int_field(m: &Map<String, Value>, name: &'static str) -> Result<i64, LoginError> {
    match field(m, name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_i64().ok_or(LoginError::BadField(name)),
    }
}

fn bool_field(m: &Map<String, Value>, name: &'static str) -> Result<bool, LoginError> {
    match field(m, name) {
        None | Some(Value::Null) => Ok(false),
        Some(v) => v.as_bool().ok_or(LoginError::BadField(name)),
    }
}

/// What a client tells the server about itself at login.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Protocol version the client speaks; we send [`super::PROTOCOL_VERSION`].
    pub version: i64,
    /// Pre-shared key that makes the client a trusted mesh peer; `None` for ordinary
    /// clients. Tailscale uses 64 hex digits; any non-empty string is compared.
    pub mesh_key: Option<String>,
    /// Whether the client answers server Pings.
    pub can_ack_pings: bool,
    /// Whether the client is a prober (stats only).
    pub is_prober: bool,
}

impl fmt::Debug for ClientInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientInfo")
            .field("version", &self.version)
            .field("mesh_key", &self.mesh_key.as_ref().map(|_| "<redacted>"))
            .field("can_ack_pings", &self.can_ack_pings)
            .field("is_prober", &self.is_prober)
            .finish()
    }
}

impl ClientInfo {
    /// The JSON Go clients send: `version` and `meshKey` omitted when empty,
    /// `CanAckPings` always present, `IsProber` only when true.
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Map::new();
        if let Some(k) = self.mesh_key.as_ref().filter(|k| !k.is_empty()) {
            m.insert("meshKey".into(), Value::from(k.as_str()));
        }
        if self.version != 0 {
            m.insert("version".into(), Value::from(self.version));
        }
        m.insert("CanAckPings".into(), Value::from(self.can_ack_pings));
        if self.is_prober {
            m.insert("IsProber".into(), Value::from(true));
        }
        Value::Object(m).to_string().into_bytes()
    }

    /// Parses the JSON, ignoring unknown fields.
    ///
    /// # Errors
    /// [`LoginError::BadJson`] or [`LoginError::BadField`].
    pub fn from_json(json: &[u8]) -> Result<Self, LoginError> {
        let m = object(json)?;
        let mesh_key = match field(&m, "meshKey") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return Err(LoginError::BadField("meshKey")),
        };
        Ok(Self {
            version: int_field(&m, "version")?,
            mesh_key,
            can_ack_pings: bool_field(&m, "CanAckPings")?,
            is_prober: bool_field(&m, "IsProber")?,
        })
    }

    /// Seals the JSON from the client to the server: the ClientInfo frame's part after
    /// the client key.
    ///
    /// # Errors
    /// [`LoginError::Seal`] only.
    pub fn seal(
        &self,
        client: &NodePrivate,
        server: &NodePublic,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, LoginError> {
        seal_to(client, server, nonce, &self.to_json())
    }

    /// Opens and parses a sealed ClientInfo on the server.
    ///
    /// # Errors
    /// Any [`LoginError`] but `Seal`.
    pub fn open(
        server: &NodePrivate,
        client: &NodePublic,
        sealed: &[u8],
    ) -> Result<Self, LoginError> {
        if sealed.len() > super::MAX_CLIENT_INFO_LEN {
            return Err(LoginError::TooLarge);
        }
        Self::from_json(&open_from(server, client, sealed)?)
    }
}

/// What the server tells a client at login.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerInfo {
    /// Protocol version the server speaks.
    pub version: i64,
    /// Advisory send budget in bytes per second including framing; 0 means none.
    pub token_bucket_bytes_per_second: i64,
    /// Advisory burst for that budget; 0 means none.
    pub token_bucket_bytes_burst: i64,
}

impl ServerInfo {
    /// The JSON Go servers send: `{"version":2}` plus non-zero token bucket fields.
    pub fn to_json(&self) -> Vec<u8> {
        let mut m = Map::new();
        if self.version != 0 {
            m.insert("version".into(), Value::from(self.version));
        }
        if self.token_bucket_bytes_per_second != 0 {
            m.insert(
                "TokenBucketBytesPerSecond".into(),
                Value::from(self.token_bucket_bytes_per_second),
            );
        }
        if self.token_bucket_bytes_burst != 0 {
            m.insert(
                "TokenBucketBytesBurst".into(),
                Value::from(self.token_bucket_bytes_burst),
            );
        }
        Value::Object(m).to_string().into_bytes()
    }

    /// Parses the JSON, ignoring unknown fields.
    ///
    /// # Errors
    /// [`LoginError::BadJson`] or [`LoginError::BadField`].
    pub fn from_json(json: &[u8]) -> Result<Self, LoginError> {
        let m = object(json)?;
        Ok(Self {
            version: int_field(&m, "version")?,
            token_bucket_bytes_per_second: int_field(&m, "TokenBucketBytesPerSecond")?,
            token_bucket_bytes_burst: int_field(&m, "TokenBucketBytesBurst")?,
        })
    }

    /// Seals the JSON from the server to the client: the ServerInfo frame body.
    ///
    /// # Errors
    /// [`LoginError::Seal`] only.
    pub fn seal(
        &self,
        server: &NodePrivate,
        client: &NodePublic,
        nonce: [u8; NONCE_LEN],
    ) -> Result<Vec<u8>, LoginError> {
        seal_to(server, client, nonce, &self.to_json())
    }

    /// Opens and parses a sealed ServerInfo on the client.
    ///
    /// # Errors
    /// Any [`LoginError`] but `Seal`.
    pub fn open(
        client: &NodePrivate,
        server: &NodePublic,
        sealed: &[u8],
    ) -> Result<Self, LoginError> {
        if sealed.len() > NONCE_LEN + MAX_SERVER_FRAME_LEN {
            return Err(LoginError::TooLarge);
        }
        Self::from_json(&open_from(client, server, sealed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.split_whitespace().collect::<String>()).unwrap()
    }

    /// The published NaCl `crypto_box` test vector (tests/box.c, box2.c): Alice's secret
    /// key, Bob's public key, the nonce, the 131-byte message and the 147-byte box.
    #[test]
    fn nacl_box_vector() {
        let alice = NodePrivate::from_bytes(
            h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
                .try_into()
                .unwrap(),
        );
        let bob_secret = NodePrivate::from_bytes(
            h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
                .try_into()
                .unwrap(),
        );
        let bob = NodePublic::from_slice(&h(
            "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f",
        ))
        .unwrap();
        assert_eq!(bob_secret.public(), bob);
        let nonce: [u8; 24] = h("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
            .try_into()
            .unwrap();
        let msg = h(
            "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc
            e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31
            0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde
            048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864
            5e0705",
        );
        let boxed = h(
            "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce
            48332ea7164d96a4476fb8c531a1186ac0dfc17c98dce87b4da7f011ec48c972
            71d2c20f9b928fe2270d6fb863d51738b48eeee314a7cc8ab932164548e526ae
            90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b3
            7973f622a43d14a6599b1f654cb45a74e355a5",
        );
        let sealed = seal_to(&alice, &bob, nonce, &msg).unwrap();
        assert_eq!(&sealed[..24], &nonce);
        assert_eq!(hex::encode(&sealed[24..]), hex::encode(&boxed));
        assert_eq!(
            open_from(&bob_secret, &alice.public(), &sealed).unwrap(),
            msg
        );
    }

    #[test]
    fn open_rejects_tampering_and_short_input() {
        let a = NodePrivate::generate();
        let b = NodePrivate::generate();
        let mut s = seal_to(&a, &b.public(), [1; 24], b"{}").unwrap();
        assert_eq!(open_from(&b, &a.public(), &s).unwrap(), b"{}");
        s[30] ^= 1;
        assert_eq!(open_from(&b, &a.public(), &s), Err(LoginError::BadBox));
        assert_eq!(
            open_from(&b, &a.public(), &s[..39]),
            Err(LoginError::ShortBox)
        );
        let other = NodePrivate::generate();
        let s = seal_to(&a, &b.public(), [1; 24], b"{}").unwrap();
        assert_eq!(open_from(&other, &a.public(), &s), Err(LoginError::BadBox));
    }

    #[test]
    fn test_emit_client_info_json() {
        let ci = ClientInfo {
            version: 2,
            mesh_key: None,
            can_ack_pings: true,
            is_prober: false,
        };
        assert_eq!(
            String::from_utf8(ci.to_json()).unwrap(),
            r#"{"CanAckPings":true,"version":2}"#
        );
        let mesh = ClientInfo {
            mesh_key: Some("ab".repeat(32)),
            is_prober: true,
            ..ci.clone()
        };
        let json = String::from_utf8(mesh.to_json()).unwrap();
        assert!(json.contains(&format!(r#""meshKey":"{}""#, "ab".repeat(32))));
        assert!(json.contains(r#""IsProber":true"#));
        assert!(!format!("{mesh:?}").contains("abab"));
    }

    #[test]
    fn test_parse_client_info_json() {
        // Exactly what Go's json.Marshal(ClientInfo{Version: 2, CanAckPings: true}) makes.
        let go = br#"{"version":2,"CanAckPings":true}"#;
        let ci = ClientInfo::from_json(go).unwrap();
        assert_eq!(
            ci,
            ClientInfo {
                version: 2,
                can_ack_pings: true,
                ..Default::default()
            }
        );
        // Case-insensitive names, unknown fields ignored, empty meshKey means none.
        let odd = br#"{"VERSION":2,"meshkey":"","canackpings":false,"AppName":"x"}"#;
        let ci = ClientInfo::from_json(odd).unwrap();
        assert_eq!(
            ci,
            ClientInfo {
                version: 2,
                ..Default::default()
            }
        );
        assert_eq!(
            ClientInfo::from_json(b"null").unwrap(),
            ClientInfo::default()
        );
        assert_eq!(ClientInfo::from_json(b"[1]"), Err(LoginError::BadJson));
        assert_eq!(ClientInfo::from_json(b"{"), Err(LoginError::BadJson));
        assert_eq!(
            ClientInfo::from_json(br#"{"version":"2"}"#),
            Err(LoginError::BadField("version"))
        );
        assert_eq!(
            ClientInfo::from_json(br#"{"meshKey":5}"#),
            Err(LoginError::BadField("meshKey"))
        );
    }

    #[test]
    fn server_info_json_round_trip() {
        let si = ServerInfo {
            version: 2,
            ..Default::default()
        };
        assert_eq!(si.to_json(), br#"{"version":2}"#);
        let rl = ServerInfo {
            version: 2,
            token_bucket_bytes_per_second: 1000,
            token_bucket_bytes_burst: 70000,
        };
        assert_eq!(ServerInfo::from_json(&rl.to_json()).unwrap(), rl);
        let go = br#"{"version":2,"TokenBucketBytesPerSecond":5,"TokenBucketBytesBurst":6}"#;
        assert_eq!(
            ServerInfo::from_json(go).unwrap().token_bucket_bytes_burst,
            6
        );
    }

    #[test]
    fn sealed_login_round_trip() {
        let client = NodePrivate::generate();
        let server = NodePrivate::generate();
        let ci = ClientInfo {
            version: 2,
            can_ack_pings: true,
            ..Default::default()
        };
        let sealed = ci.seal(&client, &server.public(), [3; 24]).unwrap();
        assert_eq!(
            ClientInfo::open(&server, &client.public(), &sealed).unwrap(),
            ci
        );
        let si = ServerInfo {
            version: 2,
            ..Default::default()
        };
        let sealed = si.seal(&server, &client.public(), [4; 24]).unwrap();
        assert_eq!(
            ServerInfo::open(&client, &server.public(), &sealed).unwrap(),
            si
        );
    }
}
