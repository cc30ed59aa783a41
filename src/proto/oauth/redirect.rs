//! Redirect URIs: which may be registered, when a requested one matches a registered
//! one, and how the response is attached.
//!
//! Matching is exact string comparison (OAuth 2.1 §2.3.1; RFC 9700 §4.1.3) with one
//! exception: for a loopback redirect URI (`http` to `127.0.0.0/8`, `[::1]` or
//! `localhost`), the port may differ, because native apps bind an ephemeral port at
//! the time of the request (RFC 8252 §7.3). No normalisation happens before comparing:
//! `https://App.example/cb`, `https://app.example:443/cb`, `https://app.example/cb/`,
//! `https://app.example/c%62` and `https://app.example/cb/../cb` all differ from
//! `https://app.example/cb`, so there is nothing for an attacker to bend.
//!
//! What may be registered (RFC 8252, RFC 9700 §2.1):
//! - `https` URLs with a host (web clients such as Claude.ai and ChatGPT);
//! - `http` only to a loopback host (native clients);
//! - private-use schemes (`com.example.app:/cb`, `cursor://…`), except schemes a
//!   browser executes or reads locally (`javascript:`, `data:`, `file:`, …).
//!
//! Never a fragment (RFC 6749 §3.1.2), userinfo, or dot segments.

use crate::wire::oauth::form::encode_pairs;
use crate::wire::oauth::uri::{Host, Uri, UriError};
use thiserror::Error;

/// Schemes that are never a redirect target: a browser runs them, reads local data
/// with them, or they are not an application's at all.
const FORBIDDEN_SCHEMES: &[&str] = &[
    "javascript",
    "data",
    "vbscript",
    "file",
    "about",
    "blob",
    "filesystem",
    "view-source",
    "ws",
    "wss",
    "ftp",
    "mailto",
    "tel",
    "sms",
];

/// What kind of client a redirect URI belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https` to a host.
    Web,
    /// `http` to this machine; any port matches.
    Loopback,
    /// A private-use scheme handled by an installed application.
    Native,
}

/// Why a redirect URI may not be registered.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RedirectError {
    /// Not an absolute URI.
    #[error("redirect URI is not an absolute URI: {0}")]
    Syntax(#[from] UriError),
    /// Has a fragment.
    #[error("redirect URI must not have a fragment")]
    Fragment,
    /// Has userinfo (`https://app@evil.example/`).
    #[error("redirect URI must not have userinfo")]
    Userinfo,
    /// Has `.` or `..` segments.
    #[error("redirect URI must not have dot segments")]
    DotSegments,
    /// `http` to a host that is not loopback.
    #[error("plain http redirect URIs are only allowed to a loopback host")]
    PlainHttp,
    /// `http`/`https` without a host.
    #[error("redirect URI has no host")]
    NoHost,
    /// A scheme that is never a redirect target.
    #[error("redirect URI scheme {0:?} is not allowed")]
    Scheme(String),
}

fn is_loopback_host(h: &Host<'_>) -> bool {
    match h {
        Host::Name(n) => n.eq_ignore_ascii_case("localhost"),
        Host::V4(a) => a.is_loopback(),
        Host::V6(a) => a.is_loopback(),
    }
}

fn kind_of(u: &Uri<'_>) -> Result<RedirectKind, RedirectError> {
    if u.fragment.is_some() {
        return Err(RedirectError::Fragment);
    }
    if u.authority.is_some_and(|a| a.userinfo.is_some()) {
        return Err(RedirectError::Userinfo);
    }
    if u.has_dot_segments() {
        return Err(RedirectError::DotSegments);
    }
    let scheme = u.scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "https" | "http" => {
            let a = u.authority.ok_or(RedirectError::NoHost)?;
            if a.host_raw.is_empty() {
                return Err(RedirectError::NoHost);
            }
            if scheme == "https" {
                Ok(RedirectKind::Web)
            } else if is_loopback_host(&a.host) {
                Ok(RedirectKind::Loopback)
            } else {
                Err(RedirectError::PlainHttp)
            }
        }
        s if FORBIDDEN_SCHEMES.contains(&s) => Err(RedirectError::Scheme(scheme)),
        _ => Ok(RedirectKind::Native),
    }
}

/// Whether `uri` may be registered, and what kind it is.
///
/// # Errors
/// [`RedirectError`] naming the problem.
pub fn classify(uri: &str) -> Result<RedirectKind, RedirectError> {
    kind_of(&Uri::parse(uri)?)
}

/// Whether `requested` matches the registered `registered`: the same string, or for a
/// loopback URI the same string but for the port.
pub fn matches(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Ok(r), Ok(q)) = (Uri::parse(registered), Uri::parse(requested)) else {
        return false;
    };
    kind_of(&r) == Ok(RedirectKind::Loopback)
        && kind_of(&q) == Ok(RedirectKind::Loopback)
        && r.without_port() == q.without_port()
}

/// The registered URI `requested` matches, if any.
pub fn find<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered
        .iter()
        .map(String::as_str)
        .find(|r| matches(r, requested))
}

/// `uri` with `params` added to its query (after `&` if it has one), as the
/// authorization response is delivered (RFC 6749 §4.1.2).
pub fn with_params(uri: &str, params: &[(&str, &str)]) -> String {
    let sep = match Uri::parse(uri).ok().and_then(|u| u.query) {
        Some("") => "",
        Some(_) => "&",
        None => "?",
    };
    format!("{uri}{sep}{}", encode_pairs(params.iter().copied()))
}

/// Where a redirect URI sends the browser, for the consent page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A website: its host (and port, if not the default).
    Web(String),
    /// An application on the user's own computer, listening at this address.
    Loopback(String),
    /// An application registered for this URI scheme.
    Native(String),
}

/// Describes where `uri` (already validated) sends the browser.
pub fn target(uri: &str) -> Target {
    let Ok(u) = Uri::parse(uri) else {
        return Target::Native(String::new());
    };
    let authority = u.authority.map(|a| match a.port {
        Some(p) => format!("{}:{p}", a.host_raw),
        None => a.host_raw.to_string(),
    });
    match kind_of(&u) {
        Ok(RedirectKind::Web) => Target::Web(authority.unwrap_or_default()),
        Ok(RedirectKind::Loopback) => Target::Loopback(authority.unwrap_or_default()),
        _ => Target::Native(u.scheme.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_may_be_registered() {
        for (uri, kind) in [
            ("https://claude.ai/api/mcp/auth_callback", RedirectKind::Web),
            (
                "https://chatgpt.com/connector_platform_oauth_redirect",
                RedirectKind::Web,
            ),
            ("https://app.example/cb?tenant=1", RedirectKind::Web),
            ("http://127.0.0.1/callback", RedirectKind::Loopback),
            ("http://127.0.0.1:33418/", RedirectKind::Loopback),
            ("http://[::1]:8080/cb", RedirectKind::Loopback),
            ("http://localhost:3030/callback", RedirectKind::Loopback),
            ("com.example.app:/oauth2redirect", RedirectKind::Native),
            (
                "cursor://anysphere.cursor-retrieval/oauth/callback",
                RedirectKind::Native,
            ),
        ] {
            assert_eq!(classify(uri), Ok(kind), "{uri}");
        }
        for (uri, err) in [
            ("https://app.example/cb#x", RedirectError::Fragment),
            (
                "https://app.example@evil.example/cb",
                RedirectError::Userinfo,
            ),
            ("https://app.example/a/../cb", RedirectError::DotSegments),
            (
                "https://app.example/a/%2e%2e/cb",
                RedirectError::DotSegments,
            ),
            ("http://app.example/cb", RedirectError::PlainHttp),
            ("http://192.168.1.10/cb", RedirectError::PlainHttp),
            ("http://localhost.evil.example/cb", RedirectError::PlainHttp),
            ("https:///cb", RedirectError::NoHost),
            ("https:/cb", RedirectError::NoHost),
            (
                "javascript:alert(1)",
                RedirectError::Scheme("javascript".into()),
            ),
            (
                "JavaScript:alert(1)",
                RedirectError::Scheme("javascript".into()),
            ),
            ("data:text/html,x", RedirectError::Scheme("data".into())),
            ("file:///etc/passwd", RedirectError::Scheme("file".into())),
        ] {
            assert_eq!(classify(uri), Err(err), "{uri}");
        }
        assert!(matches!(
            classify("not a uri"),
            Err(RedirectError::Syntax(_))
        ));
        assert!(matches!(
            classify("https://a b/"),
            Err(RedirectError::Syntax(_))
        ));
    }

    #[test]
    fn exact_match_with_tricks_refused() {
        let reg = "https://app.example/cb";
        assert!(matches(reg, reg));
        for trick in [
            "https://App.example/cb",
            "HTTPS://app.example/cb",
            "https://app.example:443/cb",
            "https://app.example:8443/cb",
            "https://app.example/cb/",
            "https://app.example/CB",
            "https://app.example/c%62",
            "https://app.example/cb%2F..%2Fevil",
            "https://app.example/cb/../cb",
            "https://app.example/cb?x=1",
            "https://app.example/cb#x",
            "https://app.example.evil.example/cb",
            "https://app.example@evil.example/cb",
            "https://evil.example/cb",
            "http://app.example/cb",
            "https://app.example/cb\\",
            " https://app.example/cb",
        ] {
            assert!(!matches(reg, trick), "{trick}");
        }
    }

    #[test]
    fn loopback_ports_vary_but_nothing_else() {
        let reg = "http://127.0.0.1/callback";
        for ok in [
            "http://127.0.0.1/callback",
            "http://127.0.0.1:49152/callback",
            "http://127.0.0.1:1/callback",
        ] {
            assert!(matches(reg, ok), "{ok}");
        }
        assert!(matches(
            "http://127.0.0.1:3000/callback",
            "http://127.0.0.1:4000/callback"
        ));
        assert!(matches("http://[::1]:3000/cb", "http://[::1]/cb"));
        assert!(matches(
            "http://localhost:3030/cb",
            "http://localhost:51000/cb"
        ));
        for bad in [
            "http://127.0.0.1:49152/callback/",
            "http://127.0.0.1:49152/other",
            "http://127.0.0.2:49152/callback",
            "http://localhost:49152/callback",
            "http://[::1]:49152/callback",
            "https://127.0.0.1:49152/callback",
            "http://127.0.0.1:49152/callback?x",
            "http://127.0.0.1:049152/callback",
            "http://u@127.0.0.1:49152/callback",
            "http://127.0.0.1.evil.example:49152/callback",
        ] {
            assert!(!matches(reg, bad), "{bad}");
        }
        // The exception is for loopback only.
        assert!(!matches(
            "https://app.example/cb",
            "https://app.example:1/cb"
        ));
        assert!(!matches("cursor://x/cb", "cursor://x:1/cb"));
    }

    #[test]
    fn finding_and_attaching() {
        let regs = vec![
            "https://a.example/cb".to_string(),
            "http://127.0.0.1/cb".into(),
        ];
        assert_eq!(
            find(&regs, "http://127.0.0.1:5/cb"),
            Some("http://127.0.0.1/cb")
        );
        assert_eq!(find(&regs, "https://b.example/cb"), None);
        assert_eq!(
            with_params("https://a.example/cb", &[("code", "x y"), ("state", "s&t")]),
            "https://a.example/cb?code=x%20y&state=s%26t"
        );
        assert_eq!(
            with_params("https://a.example/cb?t=1", &[("code", "c")]),
            "https://a.example/cb?t=1&code=c"
        );
        assert_eq!(
            with_params("https://a.example/cb?", &[("code", "c")]),
            "https://a.example/cb?code=c"
        );
        assert_eq!(
            target("https://claude.ai/api/cb"),
            Target::Web("claude.ai".into())
        );
        assert_eq!(
            target("http://127.0.0.1:4000/cb"),
            Target::Loopback("127.0.0.1:4000".into())
        );
        assert_eq!(target("cursor://x/cb"), Target::Native("cursor".into()));
    }
}
