//! User passwords: argon2id with the crate's defaults (OWASP's 19 MiB, 2 passes, one
//! lane), stored as PHC strings so the parameters travel with each hash and can be raised
//! later without breaking old ones. Hashing takes tens of milliseconds of CPU, so callers
//! run it on the blocking pool.

use super::error::StoreError;
use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use std::sync::LazyLock;

/// Shortest password accepted.
pub const MIN_LEN: usize = 8;
/// Longest password accepted (bytes): hashing cost grows with length.
pub const MAX_LEN: usize = 1024;

/// A 400 unless the password's length is within bounds.
///
/// # Errors
/// [`StoreError::Invalid`] naming `password`.
pub fn check(password: &str) -> Result<(), StoreError> {
    let n = password.chars().count();
    if n < MIN_LEN || password.len() > MAX_LEN {
        return Err(StoreError::invalid(
            "password",
            format!("a password has {MIN_LEN} to {MAX_LEN} characters"),
        ));
    }
    Ok(())
}

/// The argon2id PHC string for `password`, with a random salt.
///
/// # Errors
/// [`StoreError::Invalid`] for a password out of bounds.
pub fn hash(password: &str) -> Result<String, StoreError> {
    check(password)?;
    let mut salt = [0u8; 16];
    rand::fill(&mut salt);
    let salt = SaltString::encode_b64(&salt)
        .map_err(|e| StoreError::Internal(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| StoreError::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the PHC string `stored` (a malformed one matches nothing).
pub fn verify(stored: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Checks `password` against a fixed hash and discards the answer, so asking about a
/// user without a password costs the same time as a wrong password.
pub fn verify_nothing(password: &str) {
    static DUMMY: LazyLock<String> =
        LazyLock::new(|| hash("not a real password").unwrap_or_default());
    let _ = verify(&DUMMY, password);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_verify_and_are_salted() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "salted");
        assert!(verify(&a, "correct horse"));
        assert!(!verify(&a, "correct horse!"));
        assert!(!verify("not a hash", "correct horse"));
        assert!(matches!(
            hash("short"),
            Err(StoreError::Invalid {
                field: "password",
                ..
            })
        ));
    }
}
