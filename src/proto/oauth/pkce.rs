//! PKCE (RFC 7636), S256 only: OAuth 2.1 and the MCP authorization spec require it,
//! and `plain` protects nothing once the challenge is seen.

use super::OAuthError;
use base64::Engine as _;
use sha2::{Digest as _, Sha256};

/// Checks the authorization request's `code_challenge` and `code_challenge_method`.
///
/// # Errors
/// `invalid_request`: no challenge, a method other than `S256` (an absent method means
/// `plain`, RFC 7636 §4.3), or a challenge that is not a base64url SHA-256.
pub fn check_challenge(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<String, OAuthError> {
    let challenge = challenge
        .ok_or_else(|| OAuthError::request("code_challenge is required (PKCE with S256)"))?;
    match method {
        Some("S256") => {}
        None | Some("plain") => {
            return Err(OAuthError::request(
                "code_challenge_method must be S256; plain is not accepted",
            ));
        }
        Some(_) => return Err(OAuthError::request("unsupported code_challenge_method")),
    }
    let ok = challenge.len() == 43
        && base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(challenge)
            .is_ok_and(|d| d.len() == 32);
    if !ok {
        return Err(OAuthError::request(
            "code_challenge must be the base64url SHA-256 of the verifier (43 characters)",
        ));
    }
    Ok(challenge.to_string())
}

/// Whether `verifier` is syntactically a code verifier: 43 to 128 characters of
/// `[A-Za-z0-9-._~]`.
pub fn verifier_is_valid(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The S256 challenge of `verifier`.
pub fn challenge_of(verifier: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// Whether `verifier` answers `challenge` (compared without an early exit).
pub fn verify(verifier: &str, challenge: &str) -> bool {
    if !verifier_is_valid(verifier) {
        return false;
    }
    let got = challenge_of(verifier);
    got.len() == challenge.len()
        && got
            .bytes()
            .zip(challenge.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7636 appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc_example() {
        assert_eq!(challenge_of(VERIFIER), CHALLENGE);
        assert!(verify(VERIFIER, CHALLENGE));
        assert_eq!(
            check_challenge(Some(CHALLENGE), Some("S256")).unwrap(),
            CHALLENGE
        );
    }

    #[test]
    fn wrong_verifiers_fail() {
        let mut other = VERIFIER.to_string();
        other.replace_range(0..1, "e");
        assert!(!verify(&other, CHALLENGE));
        assert!(!verify("", CHALLENGE));
        assert!(
            !verify(CHALLENGE, CHALLENGE),
            "the challenge is not its own verifier"
        );
        let short = &VERIFIER[..42];
        assert!(
            !verify(short, &challenge_of(short)),
            "too short to be a verifier"
        );
        let long = "a".repeat(129);
        assert!(!verify(&long, &challenge_of(&long)));
        let bad = format!("{}!", &VERIFIER[..43]);
        assert!(!verify(&bad, &challenge_of(&bad)));
    }

    #[test]
    fn challenge_rules() {
        assert!(check_challenge(None, Some("S256")).is_err());
        assert!(
            check_challenge(Some(CHALLENGE), None).is_err(),
            "absent method is plain"
        );
        assert!(check_challenge(Some(CHALLENGE), Some("plain")).is_err());
        assert!(check_challenge(Some(CHALLENGE), Some("s256")).is_err());
        assert!(check_challenge(Some("short"), Some("S256")).is_err());
        assert!(check_challenge(Some(&format!("{CHALLENGE}=")), Some("S256")).is_err());
        assert!(check_challenge(Some(&CHALLENGE.replace('-', "+")), Some("S256")).is_err());
    }
}
