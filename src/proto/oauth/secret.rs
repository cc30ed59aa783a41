//! Secrets the authorization server hands out (codes, tokens, client secrets, session
//! and CSRF values) and the digests it keeps instead of them.
//!
//! Every secret is 32 random bytes in URL-safe base64 behind a prefix naming its kind,
//! so a token pasted in the wrong place is recognisable (and the MCP endpoint can tell an
//! OAuth access token from a static one without a lookup). Only the SHA-256 digest is
//! stored: a leaked database yields no usable token. Secrets have 256 bits of entropy,
//! so an unsalted fast hash is enough, and lookups by digest leak nothing useful.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};
use std::fmt;

/// What a secret is for; its prefix says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// An access token for the MCP endpoint.
    AccessToken,
    /// A refresh token.
    RefreshToken,
    /// An authorization code.
    Code,
    /// A confidential client's secret.
    ClientSecret,
    /// A browser sign-in session (cookie).
    Session,
    /// A pending authorization request's id (form field).
    Pending,
    /// A pending request's CSRF token (form field).
    Csrf,
    /// The browser binding of a pending request (cookie).
    Browser,
}

impl SecretKind {
    /// The prefix.
    pub fn prefix(self) -> &'static str {
        match self {
            Self::AccessToken => "awat_",
            Self::RefreshToken => "awrt_",
            Self::Code => "awac_",
            Self::ClientSecret => "awcs_",
            Self::Session => "awss_",
            Self::Pending => "awpr_",
            Self::Csrf => "awcf_",
            Self::Browser => "awbr_",
        }
    }
}

/// The SHA-256 of a secret: what is stored and looked up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// The digest of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// From lowercase or uppercase hex.
    pub fn from_hex(s: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).ok()?;
        Some(Self(out))
    }

    /// Compares without an early exit (for secrets compared to one stored value, such
    /// as a client secret or a CSRF token).
    pub fn ct_eq(&self, other: &Self) -> bool {
        let diff = self
            .0
            .iter()
            .zip(&other.0)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(diff) == 0
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Enough to tell records apart in logs; never the secret.
        write!(f, "Digest({}…)", hex::encode(&self.0[..4]))
    }
}

/// A fresh secret of `kind` and its digest.
pub fn generate(rng: &mut impl rand::Rng, kind: SecretKind) -> (String, Digest) {
    let mut b = [0u8; 32];
    rng.fill(&mut b);
    let s = format!(
        "{}{}",
        kind.prefix(),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
    );
    let d = Digest::of(&s);
    (s, d)
}

/// A fresh opaque identifier (grant ids, client ids): 16 random bytes, URL-safe.
pub fn generate_id(rng: &mut impl rand::Rng) -> String {
    let mut b = [0u8; 16];
    rng.fill(&mut b);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

/// Whether `token` looks like one of ours of `kind` (prefix and length), so obviously
/// foreign input is refused before any lookup.
pub fn looks_like(token: &str, kind: SecretKind) -> bool {
    token.strip_prefix(kind.prefix()).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// A token derived from `secret` for one `purpose`: the CSRF token of forms whose
/// session or browser secret lives in an `HttpOnly` cookie, so a page on another site
/// can neither read the cookie nor compute the token.
pub fn bound_token(secret: &str, purpose: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"agentwire-csrf\0");
    h.update(purpose.as_bytes());
    h.update(b"\0");
    h.update(secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Compares two strings without an early exit on the first difference.
pub fn ct_str_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn secrets_have_their_prefix_and_digest() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (s, d) = generate(&mut rng, SecretKind::AccessToken);
        assert!(s.starts_with("awat_") && looks_like(&s, SecretKind::AccessToken));
        assert!(!looks_like(&s, SecretKind::RefreshToken));
        assert_eq!(Digest::of(&s), d);
        assert_eq!(Digest::from_hex(&d.to_hex()), Some(d));
        assert!(d.ct_eq(&d) && !d.ct_eq(&Digest::of("x")));
        let (s2, _) = generate(&mut rng, SecretKind::AccessToken);
        assert_ne!(s, s2);
        assert!(!format!("{d:?}").contains(&d.to_hex()));
        assert!(!looks_like("awat_short", SecretKind::AccessToken));
        assert_eq!(generate_id(&mut rng).len(), 22);
        let t = bound_token(&s, "grants");
        assert_eq!(t, bound_token(&s, "grants"));
        assert_ne!(t, bound_token(&s, "login"));
        assert_ne!(t, bound_token(&s2, "grants"));
        assert!(ct_str_eq(&t, &t.clone()) && !ct_str_eq(&t, "x"));
    }
}
