//! Absolute URIs (RFC 3986), parsed strictly: the pieces OAuth compares and the
//! rules in `proto::oauth` look at (scheme, userinfo, host, port, path, query, fragment).
//!
//! Anything a browser or URL library might read differently from how it is written is
//! refused rather than normalised: characters outside RFC 3986 (spaces, `\`, `"`, `<`,
//! non-ASCII, controls), malformed `%` escapes, more than one `@`, an empty or
//! zero-padded port, IPv6 zone identifiers, and host names a WHATWG parser would read as
//! an IPv4 address (`2130706433`, `0x7f.1`, `127.0.0.01`). The host is never percent-
//! decoded: a name is letters, digits, `-`, `_` and `.` only.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// Longest URI accepted.
pub const MAX_URI_BYTES: usize = 2048;

/// Why a URI did not parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum UriError {
    /// Longer than [`MAX_URI_BYTES`].
    #[error("URI is longer than {MAX_URI_BYTES} bytes")]
    TooLong,
    /// Empty, or no `scheme:`.
    #[error("not an absolute URI (no scheme)")]
    NoScheme,
    /// The scheme has characters a scheme cannot have.
    #[error("malformed scheme")]
    BadScheme,
    /// A character RFC 3986 does not allow, or one in a place it is not allowed.
    #[error("character {0:?} is not allowed in a URI")]
    BadChar(char),
    /// A `%` not followed by two hexadecimal digits.
    #[error("malformed percent-encoding")]
    BadEscape,
    /// More than one `@` in the authority.
    #[error("malformed userinfo")]
    BadUserinfo,
    /// A host that is neither a plain name nor an IP literal, or that is ambiguous.
    #[error("malformed or ambiguous host")]
    BadHost,
    /// An empty, zero, zero-padded or out-of-range port.
    #[error("malformed port")]
    BadPort,
}

/// A host as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host<'a> {
    /// A registered name (possibly empty, as in `file:///x`).
    Name(&'a str),
    /// A dotted-quad IPv4 address.
    V4(Ipv4Addr),
    /// A bracketed IPv6 address.
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The address, for IP literals.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Self::Name(_) => None,
            Self::V4(a) => Some(IpAddr::V4(*a)),
            Self::V6(a) => Some(IpAddr::V6(*a)),
        }
    }
}

/// `[userinfo@]host[:port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Authority<'a> {
    /// Before the `@`, if there is one.
    pub userinfo: Option<&'a str>,
    /// The host as written (IPv6 with its brackets).
    pub host_raw: &'a str,
    /// The parsed host.
    pub host: Host<'a>,
    /// The explicit port, if any.
    pub port: Option<u16>,
}

/// An absolute URI, borrowing the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uri<'a> {
    /// The whole input.
    pub raw: &'a str,
    /// The scheme as written.
    pub scheme: &'a str,
    /// Present when the URI has `//`.
    pub authority: Option<Authority<'a>>,
    /// The path (may be empty).
    pub path: &'a str,
    /// After `?`, if present.
    pub query: Option<&'a str>,
    /// After `#`, if present.
    pub fragment: Option<&'a str>,
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn is_sub_delim(b: u8) -> bool {
    matches!(
        b,
        b'!' | b'$' | b'&' | b'\'' | b'(' | b')' | b'*' | b'+' | b',' | b';' | b'='
    )
}

/// Checks that `s` only has characters of `pchar`-like sets plus `extra`, and that every
/// `%` starts a valid escape.
fn check_chars(s: &str, extra: &[u8]) -> Result<(), UriError> {
    let b = s.as_bytes();
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        if c == b'%' {
            let ok = b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit);
            if !ok {
                return Err(UriError::BadEscape);
            }
            i += 3;
            continue;
        }
        if !(is_unreserved(c) || is_sub_delim(c) || extra.contains(&c)) {
            let ch = s.get(i..).and_then(|r| r.chars().next()).unwrap_or('?');
            return Err(UriError::BadChar(ch));
        }
        i += 1;
    }
    Ok(())
}

impl<'a> Uri<'a> {
    /// Parses an absolute URI.
    ///
    /// # Errors
    /// [`UriError`] naming the first problem.
    pub fn parse(raw: &'a str) -> Result<Self, UriError> {
        if raw.len() > MAX_URI_BYTES {
            return Err(UriError::TooLong);
        }
        let (scheme, rest) = raw.split_once(':').ok_or(UriError::NoScheme)?;
        let sb = scheme.as_bytes();
        if sb.is_empty() {
            return Err(UriError::NoScheme);
        }
        if !sb.first().is_some_and(u8::is_ascii_alphabetic)
            || !sb
                .iter()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'))
        {
            return Err(UriError::BadScheme);
        }
        let (rest, fragment) = match rest.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (rest, None),
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = match rest.strip_prefix("//") {
            Some(after) => {
                let end = after.find('/').unwrap_or(after.len());
                let (auth, path) = after.split_at(end);
                (Some(parse_authority(auth)?), path)
            }
            None => (None, rest),
        };
        check_chars(path, b":@/")?;
        if let Some(q) = query {
            check_chars(q, b":@/?")?;
        }
        if let Some(f) = fragment {
            check_chars(f, b":@/?")?;
        }
        Ok(Self {
            raw,
            scheme,
            authority,
            path,
            query,
            fragment,
        })
    }

    /// The host, when there is an authority.
    pub fn host(&self) -> Option<Host<'a>> {
        self.authority.map(|a| a.host)
    }

    /// The URI as written with its port (and the `:` before it) removed; used to compare
    /// loopback redirect URIs, whose port may vary (RFC 8252 §7.3).
    pub fn without_port(&self) -> String {
        let mut out = String::with_capacity(self.raw.len());
        out.push_str(self.scheme);
        out.push(':');
        if let Some(a) = &self.authority {
            out.push_str("//");
            if let Some(u) = a.userinfo {
                out.push_str(u);
                out.push('@');
            }
            out.push_str(a.host_raw);
        }
        out.push_str(self.path);
        if let Some(q) = self.query {
            out.push('?');
            out.push_str(q);
        }
        if let Some(f) = self.fragment {
            out.push('#');
            out.push_str(f);
        }
        out
    }

    /// Whether a path segment is `.` or `..`, written plainly or with `%2e`: a browser
    /// resolves those away, so the URI it visits is not the one written.
    pub fn has_dot_segments(&self) -> bool {
        self.path.split('/').any(|seg| {
            let lower = seg.to_ascii_lowercase().replace("%2e", ".");
            lower == "." || lower == ".."
        })
    }
}

fn parse_authority(auth: &str) -> Result<Authority<'_>, UriError> {
    let (userinfo, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => {
            if u.contains('@') {
                return Err(UriError::BadUserinfo);
            }
            check_chars(u, b":")?;
            (Some(u), h)
        }
        None => (None, auth),
    };
    let (host_raw, port_raw) = if let Some(inner) = hostport.strip_prefix('[') {
        let close = inner.find(']').ok_or(UriError::BadHost)?;
        let after = inner.get(close + 1..).unwrap_or("");
        let host_raw = hostport.get(..close + 2).ok_or(UriError::BadHost)?;
        match after {
            "" => (host_raw, None),
            p => (
                host_raw,
                Some(p.strip_prefix(':').ok_or(UriError::BadHost)?),
            ),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    let port = match port_raw {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    let host = parse_host(host_raw)?;
    Ok(Authority {
        userinfo,
        host_raw,
        host,
        port,
    })
}

fn parse_port(p: &str) -> Result<u16, UriError> {
    if p.is_empty() || p.len() > 5 || p.starts_with('0') || !p.bytes().all(|c| c.is_ascii_digit()) {
        return Err(UriError::BadPort);
    }
    p.parse::<u16>().map_err(|_| UriError::BadPort)
}

fn parse_host(h: &str) -> Result<Host<'_>, UriError> {
    if let Some(inner) = h.strip_prefix('[') {
        let inner = inner.strip_suffix(']').ok_or(UriError::BadHost)?;
        return inner
            .parse::<Ipv6Addr>()
            .map(Host::V6)
            .map_err(|_| UriError::BadHost);
    }
    if !h
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        return Err(UriError::BadHost);
    }
    if let Ok(a) = h.parse::<Ipv4Addr>() {
        return Ok(Host::V4(a));
    }
    // A WHATWG parser reads a host whose last label is numeric (or hex) as an IPv4
    // address in some notation; no real name ends that way, so refuse it outright.
    let last = h.trim_end_matches('.').rsplit('.').next().unwrap_or("");
    let lower = last.to_ascii_lowercase();
    if !last.is_empty() && (last.bytes().all(|c| c.is_ascii_digit()) || lower.starts_with("0x")) {
        return Err(UriError::BadHost);
    }
    Ok(Host::Name(h))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_pieces() {
        let u = Uri::parse("https://user@App.example.com:8443/cb/x?a=1&b=%20#frag").unwrap();
        assert_eq!(u.scheme, "https");
        let a = u.authority.unwrap();
        assert_eq!(a.userinfo, Some("user"));
        assert_eq!(a.host, Host::Name("App.example.com"));
        assert_eq!(a.port, Some(8443));
        assert_eq!(u.path, "/cb/x");
        assert_eq!(u.query, Some("a=1&b=%20"));
        assert_eq!(u.fragment, Some("frag"));
        assert_eq!(
            u.without_port(),
            "https://user@App.example.com/cb/x?a=1&b=%20#frag"
        );

        let u = Uri::parse("http://[::1]:33418/").unwrap();
        assert_eq!(u.host(), Some(Host::V6(Ipv6Addr::LOCALHOST)));
        assert_eq!(u.without_port(), "http://[::1]/");
        let u = Uri::parse("http://127.0.0.1/callback").unwrap();
        assert_eq!(u.host(), Some(Host::V4(Ipv4Addr::LOCALHOST)));
        assert_eq!(u.authority.unwrap().port, None);

        let u = Uri::parse("com.example.app:/oauth/cb").unwrap();
        assert_eq!(
            (u.scheme, u.authority, u.path),
            ("com.example.app", None, "/oauth/cb")
        );
        let u = Uri::parse("cursor://anysphere.cursor-retrieval/oauth/callback").unwrap();
        assert_eq!(u.host(), Some(Host::Name("anysphere.cursor-retrieval")));
    }

    #[test]
    fn refuses_what_browsers_would_read_differently() {
        for (bad, why) in [
            ("", UriError::NoScheme),
            ("/relative", UriError::NoScheme),
            ("1http://x", UriError::BadScheme),
            ("ht tp://x", UriError::BadScheme),
            ("https://a.example/c b", UriError::BadChar(' ')),
            ("https://a.example\\@evil.example/", UriError::BadChar('\\')),
            ("https://a.example/cb\\..\\x", UriError::BadChar('\\')),
            ("https://a.example/é", UriError::BadChar('é')),
            ("https://a.example/%zz", UriError::BadEscape),
            ("https://a.example/%2", UriError::BadEscape),
            ("https://a@b@evil.example/", UriError::BadUserinfo),
            ("https://a.example:/", UriError::BadPort),
            ("https://a.example:0/", UriError::BadPort),
            ("https://a.example:0443/", UriError::BadPort),
            ("https://a.example:65536/", UriError::BadPort),
            ("https://a.example:+1/", UriError::BadPort),
            ("https://[::1%25eth0]/", UriError::BadHost),
            ("https://[::1/", UriError::BadHost),
            ("https://[::1]x/", UriError::BadHost),
            ("https://a%2eexample/", UriError::BadHost),
            ("https://2130706433/", UriError::BadHost),
            ("https://0x7f.1/", UriError::BadHost),
            ("https://127.0.0.01/", UriError::BadHost),
            ("https://a.example/#a#b", UriError::BadChar('#')),
            ("https://a.example/[x]", UriError::BadChar('[')),
            ("https://a.example/\u{0}", UriError::BadChar('\u{0}')),
        ] {
            assert_eq!(Uri::parse(bad), Err(why), "{bad:?}");
        }
        assert_eq!(
            Uri::parse(&format!("https://a.example/{}", "a".repeat(MAX_URI_BYTES))),
            Err(UriError::TooLong)
        );
    }

    #[test]
    fn dot_segments_are_seen_in_any_spelling() {
        for p in [
            "https://a.example/cb/../x",
            "https://a.example/cb/./x",
            "https://a.example/cb/%2e%2E/x",
            "https://a.example/cb/.%2e",
            "https://a.example/..",
        ] {
            assert!(Uri::parse(p).unwrap().has_dot_segments(), "{p}");
        }
        for p in [
            "https://a.example/cb/...",
            "https://a.example/.well-known/x",
        ] {
            assert!(!Uri::parse(p).unwrap().has_dot_segments(), "{p}");
        }
    }
}
