//! The authorization server's settings: who it is, what it protects, how long things
//! live, which client identification it accepts.

use super::resource;
use std::time::Duration;

/// The one scope: use the MCP tools as the signed-in user, with that user's
/// workspaces. Requests for other scopes are not errors; the extra scopes are dropped
/// (RFC 6749 §3.3 lets the server grant less than asked) and the granted scope says so.
pub const SCOPE_MCP: &str = "mcp";

/// Whether `s` is a syntactically valid `scope` value (RFC 6749 §3.3: space-separated
/// tokens of `%x21 / %x23-5B / %x5D-7E`).
pub fn scope_is_valid(s: &str) -> bool {
    s.len() <= 1024
        && s.split(' ').all(|t| {
            !t.is_empty()
                && t.bytes()
                    .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b))
        })
}

/// Settings of one authorization server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// The issuer identifier (RFC 8414): the server's base URL, no trailing slash. Every
    /// endpoint URL starts with it, and it is the `iss` of authorization responses.
    pub issuer: String,
    /// The resources tokens may be issued for (canonical form, see [`resource`]): this
    /// server's MCP endpoints. The first is the default when a client names none.
    pub resources: Vec<String>,
    /// How long an authorization code lives.
    pub code_ttl: Duration,
    /// How long an access token lives.
    pub access_ttl: Duration,
    /// How long a refresh token lives unused; each refresh starts it again.
    pub refresh_ttl: Duration,
    /// How long the sign-in and consent pages of one request may take.
    pub pending_ttl: Duration,
    /// How long a browser stays signed in.
    pub session_ttl: Duration,
    /// Whether dynamic client registration (RFC 7591) is open.
    pub registration: bool,
    /// Whether `https` URLs are accepted as client ids (client ID metadata documents).
    pub metadata_documents: bool,
    /// Largest registration request body.
    pub max_registration_bytes: usize,
    /// Most redirect URIs one client may register.
    pub max_redirect_uris: usize,
}

impl Settings {
    /// Defaults for an issuer whose MCP endpoints are `resources` (URLs, canonicalised
    /// here; ones that do not parse are dropped).
    pub fn new(issuer: &str, resources: &[String]) -> Self {
        Self {
            issuer: issuer.trim_end_matches('/').to_string(),
            resources: resources
                .iter()
                .filter_map(|r| resource::canonical(r).ok())
                .collect(),
            code_ttl: Duration::from_secs(60),
            access_ttl: Duration::from_secs(3600),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            pending_ttl: Duration::from_secs(15 * 60),
            session_ttl: Duration::from_secs(12 * 3600),
            registration: true,
            metadata_documents: true,
            max_registration_bytes: 16 << 10,
            max_redirect_uris: 10,
        }
    }

    /// `issuer` + `path`.
    pub fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.issuer)
    }

    /// Whether the issuer is served over plain HTTP (loopback development); cookies are
    /// then not `Secure` and cannot use the `__Host-` prefix.
    pub fn is_plain_http(&self) -> bool {
        self.issuer.starts_with("http://")
    }

    /// The resource a request names, if it is one of ours, in canonical form.
    ///
    /// # Errors
    /// `invalid_target` naming why.
    pub fn accept_resource(&self, given: Option<&str>) -> Result<String, super::OAuthError> {
        let Some(given) = given else {
            return self
                .resources
                .first()
                .cloned()
                .ok_or_else(|| super::OAuthError::target("this server protects no resource"));
        };
        let c = resource::canonical(given)
            .map_err(|e| super::OAuthError::target(format!("resource: {e}")))?;
        if self.resources.contains(&c) {
            Ok(c)
        } else {
            Err(super::OAuthError::target(
                "resource is not an MCP endpoint of this server",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_syntax() {
        for ok in ["mcp", "mcp offline_access", "a:b/c"] {
            assert!(scope_is_valid(ok), "{ok}");
        }
        for bad in ["", " mcp", "mcp  x", "a\"b", "a\\b", "é", "mcp\t"] {
            assert!(!scope_is_valid(bad), "{bad:?}");
        }
    }

    #[test]
    fn resources() {
        let s = Settings::new(
            "https://mcp.example.com/",
            &["https://mcp.example.com/mcp".into(), "not a url".into()],
        );
        assert_eq!(s.issuer, "https://mcp.example.com");
        assert_eq!(s.resources, ["https://mcp.example.com/mcp"]);
        assert_eq!(
            s.accept_resource(None).unwrap(),
            "https://mcp.example.com/mcp"
        );
        assert_eq!(
            s.accept_resource(Some("https://MCP.example.com:443/mcp/"))
                .unwrap(),
            "https://mcp.example.com/mcp"
        );
        for bad in [
            "https://evil.example/mcp",
            "https://mcp.example.com/other",
            "https://mcp.example.com:8443/mcp",
            "http://mcp.example.com/mcp",
            "https://mcp.example.com/mcp#f",
            "mcp",
        ] {
            let e = s.accept_resource(Some(bad)).unwrap_err();
            assert_eq!(e.code, super::super::ErrorCode::InvalidTarget, "{bad}");
        }
    }
}
