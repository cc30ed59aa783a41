//! Which URLs may carry a secret in clear.

/// A token would cross the network unencrypted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to send a token to {0} in clear: it is plain http:// to a host that is not \
     loopback. Use https:// (see docs/deploy.md), or pass --allow-insecure-http on a \
     network you trust"
)]
pub struct InsecureUrl(pub String);

/// The host of `scheme://host[:port]/...`, without brackets; empty when there is none.
pub fn url_host(url: &str) -> &str {
    let hostport = url
        .split("://")
        .nth(1)
        .unwrap_or("")
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
    if let Some(rest) = hostport.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => hostport,
        }
    }
}

/// Whether a URL's host is a loopback address or `localhost`: such a URL cannot reach
/// another machine.
pub fn url_is_loopback(url: &str) -> bool {
    let host = url_host(url);
    // Only the literal name: `*.localhost` is resolved by whatever DNS says, so a token
    // could leave the machine.
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Whether the URL's scheme encrypts (`https`, `wss`).
pub fn url_is_tls(url: &str) -> bool {
    let scheme = url.split("://").next().unwrap_or("");
    scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("wss")
}

/// Refuses a plain-HTTP URL to a non-loopback host unless `allow_insecure`.
///
/// # Errors
/// [`InsecureUrl`].
pub fn check_secret_url(url: &str, allow_insecure: bool) -> Result<(), InsecureUrl> {
    if allow_insecure || url_is_tls(url) || url_is_loopback(url) {
        Ok(())
    } else {
        Err(InsecureUrl(url.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_loopback() {
        assert_eq!(url_host("http://a.example:80/x"), "a.example");
        assert_eq!(url_host("https://[::1]:9/x"), "::1");
        assert_eq!(url_host("http://u:p@h/x"), "h");
        assert_eq!(url_host("nonsense"), "");
        for u in [
            "http://127.0.0.1:7080",
            "http://localhost/",
            "http://[::1]:1",
            "ws://127.9.9.9",
        ] {
            assert!(url_is_loopback(u), "{u}");
            assert!(check_secret_url(u, false).is_ok(), "{u}");
        }
        for u in [
            "http://10.0.0.1:7080",
            "http://example.com",
            "http://127.0.0.1.evil.example",
            "http://localhost.evil.example",
            "http://app.localhost:3000",
        ] {
            assert!(!url_is_loopback(u), "{u}");
            assert_eq!(check_secret_url(u, false), Err(InsecureUrl(u.into())));
            assert!(check_secret_url(u, true).is_ok());
        }
        assert!(check_secret_url("https://example.com", false).is_ok());
        assert!(check_secret_url("WSS://example.com", false).is_ok());
    }
}
