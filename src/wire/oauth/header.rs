//! Header values the authorization server reads: HTTP Basic client credentials
//! (RFC 6749 §2.3.1) and `Cookie` (RFC 6265 §5.4).

use super::form::percent_decode;
use base64::Engine as _;
use thiserror::Error;

/// Longest `Authorization: Basic` value decoded.
const MAX_BASIC_BYTES: usize = 2048;

/// Why `Authorization: Basic …` did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum BasicError {
    /// Not base64, too long, no `:`, or a half that is not form-urlencoded UTF-8.
    #[error("malformed HTTP Basic credentials")]
    Malformed,
}

/// Client credentials from `Authorization: Basic`.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicCredentials {
    /// The client id (decoded).
    pub client_id: String,
    /// The client secret (decoded).
    pub secret: String,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

impl BasicCredentials {
    /// Parses an `Authorization` header value. `Ok(None)` when the scheme is not Basic.
    /// Each half is form-urlencoded before base64 (RFC 6749 §2.3.1), so both are
    /// percent-decoded.
    ///
    /// # Errors
    /// [`BasicError::Malformed`] for a Basic value that does not decode.
    pub fn parse(value: &str) -> Result<Option<Self>, BasicError> {
        let value = value.trim();
        let Some((scheme, rest)) = value.split_once(' ') else {
            return Ok(None);
        };
        if !scheme.eq_ignore_ascii_case("basic") {
            return Ok(None);
        }
        let rest = rest.trim();
        if rest.len() > MAX_BASIC_BYTES {
            return Err(BasicError::Malformed);
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rest)
            .map_err(|_| BasicError::Malformed)?;
        let text = String::from_utf8(raw).map_err(|_| BasicError::Malformed)?;
        let (id, secret) = text.split_once(':').ok_or(BasicError::Malformed)?;
        let client_id = percent_decode(&id.replace('+', " ")).map_err(|_| BasicError::Malformed)?;
        let secret =
            percent_decode(&secret.replace('+', " ")).map_err(|_| BasicError::Malformed)?;
        if client_id.is_empty() {
            return Err(BasicError::Malformed);
        }
        Ok(Some(Self { client_id, secret }))
    }

    /// Encodes as an `Authorization` value (for tests and clients).
    pub fn encode(&self) -> String {
        let pair = format!(
            "{}:{}",
            super::form::escape(&self.client_id),
            super::form::escape(&self.secret)
        );
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// The value of cookie `name` in a `Cookie` header value. A name that appears more than
/// once yields `None`: a duplicate can be planted by a sibling subdomain, so neither copy
/// is trusted.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let mut found = None;
    for piece in header.split(';') {
        let Some((n, v)) = piece.trim().split_once('=') else {
            continue;
        };
        if n.trim() == name {
            if found.is_some() {
                return None;
            }
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .unwrap_or(v);
            found = Some(v);
        }
    }
    found.filter(|v| !v.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let c = BasicCredentials {
            client_id: "my client:1".into(),
            secret: "s3cr+t/=".into(),
        };
        let enc = c.encode();
        assert_eq!(BasicCredentials::parse(&enc), Ok(Some(c)));
        // Plain (not urlencoded) halves also decode.
        let v = format!(
            "basic {}",
            base64::engine::general_purpose::STANDARD.encode("abc:def")
        );
        let p = BasicCredentials::parse(&v).unwrap().unwrap();
        assert_eq!((p.client_id.as_str(), p.secret.as_str()), ("abc", "def"));
        assert_eq!(BasicCredentials::parse("Bearer x"), Ok(None));
        assert_eq!(BasicCredentials::parse("nonsense"), Ok(None));
        for bad in [
            "Basic !!!",
            "Basic YWJj",
            "Basic OmFiYw==",
            "Basic JXp6OmE=",
        ] {
            assert_eq!(
                BasicCredentials::parse(bad),
                Err(BasicError::Malformed),
                "{bad}"
            );
        }
        assert!(!format!("{c:?}", c = BasicCredentials::parse(&enc).unwrap()).contains("s3cr"));
    }

    #[test]
    fn cookies() {
        let h = "a=1; aw_session=xyz; b=\"q\"";
        assert_eq!(cookie(h, "aw_session"), Some("xyz"));
        assert_eq!(cookie(h, "b"), Some("q"));
        assert_eq!(cookie(h, "c"), None);
        assert_eq!(cookie("s=1; s=2", "s"), None, "duplicates are not trusted");
        assert_eq!(cookie("s=", "s"), None);
        assert_eq!(cookie(";;;=;", "s"), None);
    }
}
