//! Server side of the login: greet with ServerKey, check the client's ClientInfo box,
//! answer with a sealed ServerInfo.

use crate::wire::derp::{
    ClientInfo, Frame, FrameType, LoginError, NONCE_LEN, PROTOCOL_VERSION, ServerInfo,
    ServerInfoFrame, ServerKey,
};
use crate::wire::key::{NodePrivate, NodePublic};
use std::fmt;
use thiserror::Error;

/// The pre-shared key that makes a client a trusted mesh peer. Compared in constant
/// time; `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct MeshKey(String);

impl MeshKey {
    /// A mesh key from text (surrounding whitespace trimmed); `None` when empty.
    pub fn new(key: &str) -> Option<Self> {
        let key = key.trim();
        (!key.is_empty()).then(|| Self(key.to_owned()))
    }

    /// The key text, for clients that present it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `presented` equals this key. Time depends only on the lengths.
    pub fn matches(&self, presented: &str) -> bool {
        let (a, b) = (self.0.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for MeshKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MeshKey(<redacted>)")
    }
}

/// A client that logged in.
#[derive(Debug, Clone)]
pub struct LoginAccepted {
    /// The client's key, proven by the box it sealed to us.
    pub key: NodePublic,
    /// What it told us.
    pub info: ClientInfo,
    /// Whether it presented our mesh key.
    pub can_mesh: bool,
}

/// Why a login was refused. Always peer misbehaviour: count as a bad login and close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum LoginRejected {
    /// The first frame was not ClientInfo.
    #[error("expected ClientInfo, got {0:?}")]
    NotClientInfo(FrameType),
    /// The ClientInfo box or JSON was bad.
    #[error("bad ClientInfo: {0}")]
    Login(#[from] LoginError),
}

/// The ServerKey greeting for a server with this public key.
pub fn server_key_frame(public: &NodePublic) -> Vec<u8> {
    Frame::ServerKey(ServerKey {
        key: *public,
        extra: &[],
    })
    .to_vec()
    .unwrap_or_default()
}

/// Checks the client's first frame: it must be a ClientInfo whose box opens with our
/// key and the client's claimed key.
///
/// # Errors
/// [`LoginRejected`].
pub fn accept_client_info(
    server: &NodePrivate,
    mesh_key: Option<&MeshKey>,
    frame: &Frame<'_>,
) -> Result<LoginAccepted, LoginRejected> {
    let Frame::ClientInfo(ci) = frame else {
        return Err(LoginRejected::NotClientInfo(frame.ty()));
    };
    let info = ClientInfo::open(server, &ci.key, ci.sealed)?;
    let can_mesh = match (mesh_key, info.mesh_key.as_deref()) {
        (Some(ours), Some(theirs)) => ours.matches(theirs),
        _ => false,
    };
    Ok(LoginAccepted {
        key: ci.key,
        info,
        can_mesh,
    })
}

/// The sealed ServerInfo frame for `client`; `nonce` must be fresh random bytes.
///
/// # Errors
/// [`LoginError::Seal`] only.
pub fn server_info_frame(
    server: &NodePrivate,
    client: &NodePublic,
    nonce: [u8; NONCE_LEN],
) -> Result<Vec<u8>, LoginError> {
    let info = ServerInfo {
        version: PROTOCOL_VERSION,
        ..Default::default()
    };
    let sealed = info.seal(server, client, nonce)?;
    Frame::ServerInfo(ServerInfoFrame { sealed: &sealed })
        .to_vec()
        .map_err(|_| LoginError::Seal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::derp::{ClientInfoFrame, Direction, Ping};

    fn client_info_frame(client: &NodePrivate, server: &NodePublic, mesh: Option<&str>) -> Vec<u8> {
        let info = ClientInfo {
            version: 2,
            mesh_key: mesh.map(str::to_owned),
            can_ack_pings: true,
            is_prober: false,
        };
        let sealed = info.seal(client, server, [5; 24]).unwrap();
        Frame::ClientInfo(ClientInfoFrame {
            key: client.public(),
            sealed: &sealed,
        })
        .to_vec()
        .unwrap()
    }

    #[test]
    fn accepts_a_good_login_and_checks_the_mesh_key() {
        let server = NodePrivate::generate();
        let client = NodePrivate::generate();
        let mesh = MeshKey::new(&"ab".repeat(32));
        for (presented, want_mesh) in [
            (None, false),
            (Some("wrong"), false),
            (Some(&*"ab".repeat(32)), true),
        ] {
            let b = client_info_frame(&client, &server.public(), presented);
            let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
            let ok = accept_client_info(&server, mesh.as_ref(), &f).unwrap();
            assert_eq!(ok.key, client.public());
            assert_eq!(ok.can_mesh, want_mesh, "{presented:?}");
            assert!(ok.info.can_ack_pings);
        }
        // Without a configured mesh key nobody is a mesh peer.
        let b = client_info_frame(&client, &server.public(), Some("ab"));
        let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
        assert!(!accept_client_info(&server, None, &f).unwrap().can_mesh);
    }

    #[test]
    fn rejects_wrong_frames_and_forged_keys() {
        let server = NodePrivate::generate();
        let client = NodePrivate::generate();
        let ping = Frame::Ping(Ping { data: [0; 8] });
        let e = accept_client_info(&server, None, &ping).unwrap_err();
        assert_eq!(e, LoginRejected::NotClientInfo(FrameType::Ping));
        // Claiming someone else's key: the box does not open.
        let mut b = client_info_frame(&client, &server.public(), None);
        b[5] ^= 0x40;
        let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
        let e = accept_client_info(&server, None, &f).unwrap_err();
        assert_eq!(e, LoginRejected::Login(LoginError::BadBox));
        // Sealed to another server.
        let other = NodePrivate::generate();
        let b = client_info_frame(&client, &other.public(), None);
        let f = Frame::parse_frame(&b, Direction::ClientToServer).unwrap();
        assert!(accept_client_info(&server, None, &f).is_err());
    }

    #[test]
    fn test_emit_greeting_and_reply() {
        let server = NodePrivate::generate();
        let client = NodePrivate::generate();
        let g = server_key_frame(&server.public());
        assert_eq!(hex::encode(&g[..13]), "010000002844455250f09f9491");
        assert_eq!(&g[13..], server.public().as_bytes());
        let r = server_info_frame(&server, &client.public(), [9; 24]).unwrap();
        let Frame::ServerInfo(si) = Frame::parse_frame(&r, Direction::ServerToClient).unwrap()
        else {
            panic!()
        };
        let info = ServerInfo::open(&client, &server.public(), si.sealed).unwrap();
        assert_eq!(info.version, 2);
    }

    #[test]
    fn mesh_key_is_redacted_and_trimmed() {
        let k = MeshKey::new("  secret\n").unwrap();
        assert!(k.matches("secret"));
        assert!(!k.matches("secreT"));
        assert!(!k.matches("secret2"));
        assert!(!format!("{k:?}").contains("secret"));
        assert!(MeshKey::new(" ").is_none());
    }
}
