//! RFC 8707 resource indicators: the URI of the protected resource a token is for.
//!
//! Tokens carry the canonical form of their resource, and the MCP endpoint accepts a
//! token only when that is one of its own (audience binding). Canonical form: scheme
//! and host lowercased, the scheme's default port dropped, the trailing `/` of the path
//! dropped, the query dropped (a query such as `?toolset=chatgpt` selects a view of the
//! same endpoint, not another resource). A fragment, userinfo, dot segments or a scheme
//! other than `http`/`https` make the indicator invalid.

use crate::wire::oauth::uri::{Uri, UriError};
use thiserror::Error;

/// Why a resource indicator is invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ResourceError {
    /// Not an absolute URI.
    #[error("not an absolute URI: {0}")]
    Syntax(#[from] UriError),
    /// Not `http` or `https`, or no host.
    #[error("must be an http(s) URL with a host")]
    NotHttp,
    /// Has a fragment (RFC 8707 §2: MUST NOT).
    #[error("must not have a fragment")]
    Fragment,
    /// Has userinfo or dot segments.
    #[error("must not have userinfo or dot segments")]
    Ambiguous,
}

/// The canonical form of a resource indicator.
///
/// # Errors
/// [`ResourceError`].
pub fn canonical(s: &str) -> Result<String, ResourceError> {
    let u = Uri::parse(s)?;
    let scheme = u.scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "https" => 443,
        "http" => 80,
        _ => return Err(ResourceError::NotHttp),
    };
    let a = u.authority.ok_or(ResourceError::NotHttp)?;
    if a.host_raw.is_empty() {
        return Err(ResourceError::NotHttp);
    }
    if u.fragment.is_some() {
        return Err(ResourceError::Fragment);
    }
    if a.userinfo.is_some() || u.has_dot_segments() {
        return Err(ResourceError::Ambiguous);
    }
    let host = a.host_raw.to_ascii_lowercase();
    let port = match a.port {
        Some(p) if p != default_port => format!(":{p}"),
        _ => String::new(),
    };
    Ok(format!(
        "{scheme}://{host}{port}{}",
        u.path.trim_end_matches('/')
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        for (given, want) in [
            ("https://MCP.Example.com/mcp", "https://mcp.example.com/mcp"),
            (
                "https://mcp.example.com:443/mcp/",
                "https://mcp.example.com/mcp",
            ),
            ("https://mcp.example.com/", "https://mcp.example.com"),
            ("https://mcp.example.com", "https://mcp.example.com"),
            (
                "HTTP://127.0.0.1:80/mcp?toolset=chatgpt",
                "http://127.0.0.1/mcp",
            ),
            ("http://[::1]:8080/mcp", "http://[::1]:8080/mcp"),
        ] {
            assert_eq!(canonical(given).as_deref(), Ok(want), "{given}");
        }
        assert_eq!(
            canonical("https://a.example/mcp#x"),
            Err(ResourceError::Fragment)
        );
        assert_eq!(canonical("urn:example:mcp"), Err(ResourceError::NotHttp));
        assert_eq!(canonical("https:///mcp"), Err(ResourceError::NotHttp));
        assert_eq!(
            canonical("https://u@a.example/mcp"),
            Err(ResourceError::Ambiguous)
        );
        assert_eq!(
            canonical("https://a.example/x/../mcp"),
            Err(ResourceError::Ambiguous)
        );
        assert!(matches!(canonical("mcp"), Err(ResourceError::Syntax(_))));
    }
}
