//! The URLs a server hands out: its public base URL (MCP endpoint, coordinator, agent
//! join command, protected-resource metadata) and the relay URL in its DERP map. Both
//! must work as deployed: the scheme, host and port the operator gave, never the
//! listen address when a public URL names something else.

use crate::wire::derpmap::DerpMap;
use std::net::{IpAddr, SocketAddr};

/// A URL the server cannot hand out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublicUrlError {
    /// Not `http(s)://host[:port]`.
    #[error("{flag} {url:?}: expected http(s)://HOST[:PORT]")]
    Malformed {
        /// Which setting.
        flag: &'static str,
        /// The value.
        url: String,
    },
    /// A path other than `/`: every path the server serves is fixed, so a prefix would
    /// be handed out and then not served.
    #[error(
        "{flag} {url:?} has a path; give the server's base URL (for example https://HOST), \
         without /mcp or a prefix"
    )]
    HasPath {
        /// Which setting.
        flag: &'static str,
        /// The value.
        url: String,
    },
    /// The listener speaks TLS but the URL says plain HTTP, or the other way round for
    /// the relay URL.
    #[error("{flag} {url:?} says {scheme}, but {why}")]
    Scheme {
        /// Which setting.
        flag: &'static str,
        /// The value.
        url: String,
        /// The URL's scheme.
        scheme: &'static str,
        /// What contradicts it.
        why: &'static str,
    },
}

/// A parsed base URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// `https` (or `wss` for a relay URL).
    pub tls: bool,
    /// Host name or IP literal, without brackets.
    pub host: String,
    /// Port, explicit or the scheme's default.
    pub port: u16,
}

impl BaseUrl {
    /// Parses `http(s)://host[:port]` with an optional trailing `/` (and, when
    /// `allow_derp_path`, an optional `/derp`). `ws`/`wss` are accepted for relay URLs.
    ///
    /// # Errors
    /// [`PublicUrlError`].
    pub fn parse(
        flag: &'static str,
        url: &str,
        allow_derp_path: bool,
    ) -> Result<Self, PublicUrlError> {
        let malformed = || PublicUrlError::Malformed {
            flag,
            url: url.to_owned(),
        };
        let uri: http::Uri = url.trim().parse().map_err(|_| malformed())?;
        let tls = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
            Some("http") => false,
            Some("https") => true,
            Some("ws") if allow_derp_path => false,
            Some("wss") if allow_derp_path => true,
            _ => return Err(malformed()),
        };
        let authority = uri.authority().ok_or_else(malformed)?;
        if authority.as_str().contains('@') {
            return Err(malformed());
        }
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if host.is_empty() {
            return Err(malformed());
        }
        let path = uri.path_and_query().map_or("", |p| p.as_str());
        let path_ok = matches!(path, "" | "/") || (allow_derp_path && path == "/derp");
        if !path_ok {
            return Err(PublicUrlError::HasPath {
                flag,
                url: url.to_owned(),
            });
        }
        let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Ok(Self { tls, host, port })
    }

    /// `scheme://host:port` with IPv6 literals bracketed and a default port left out.
    pub fn to_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.tls { 443 } else { 80 };
        if self.port == default {
            format!("{scheme}://{host}")
        } else {
            format!("{scheme}://{host}:{}", self.port)
        }
    }

    /// Whether the host is an unspecified address (`0.0.0.0`, `::`), which no client can
    /// dial.
    pub fn is_unspecified(&self) -> bool {
        self.host
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified())
    }

    /// The embedded relay's DERP map for this URL.
    pub fn derp_map(&self) -> DerpMap {
        super::hub::embedded_map(&self.host, self.port, self.tls)
    }
}

/// What a server advertises, worked out from its settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advertised {
    /// The public base URL.
    pub public: BaseUrl,
    /// Where nodes reach the relay.
    pub relay: BaseUrl,
    /// Problems worth a warning at start and a line in `/healthz`.
    pub warnings: Vec<String>,
}

/// Works out the public URL and relay address from the listen address, whether the
/// listener speaks TLS, `--public-url` and `--derp-url`.
///
/// # Errors
/// [`PublicUrlError`] for URLs that cannot work.
pub fn advertise(
    listen: SocketAddr,
    tls: bool,
    public_url: Option<&str>,
    derp_url: Option<&str>,
) -> Result<Advertised, PublicUrlError> {
    let mut warnings = Vec::new();
    let public = match public_url {
        Some(u) => {
            let p = BaseUrl::parse("--public-url", u, false)?;
            if tls && !p.tls {
                return Err(PublicUrlError::Scheme {
                    flag: "--public-url",
                    url: u.to_owned(),
                    scheme: "http",
                    why: "the listener speaks TLS (--tls-cert); use https://",
                });
            }
            if p.is_unspecified() {
                return Err(PublicUrlError::Malformed {
                    flag: "--public-url",
                    url: u.to_owned(),
                });
            }
            p
        }
        None => {
            if listen.ip().is_unspecified() {
                warnings.push(format!(
                    "listening on {listen} without --public-url: the URLs handed out name \
                     127.0.0.1, which only this machine can use; set --public-url"
                ));
            }
            let ip = if listen.ip().is_unspecified() {
                IpAddr::from([127, 0, 0, 1])
            } else {
                listen.ip()
            };
            BaseUrl {
                tls,
                host: ip.to_string(),
                port: listen.port(),
            }
        }
    };
    let relay = match derp_url {
        Some(u) => BaseUrl::parse("--derp-url", u, true)?,
        None => public.clone(),
    };
    if !tls && !listen.ip().is_loopback() {
        warnings.push(if public.tls {
            format!(
                "listening on {listen} without TLS: tokens and traffic reach this process in \
                 clear; keep the path from the TLS proxy to it private"
            )
        } else {
            format!(
                "listening on {listen} without TLS: tokens cross the network in clear; use \
                 --tls-cert/--tls-key or a TLS proxy (docs/deploy.md)"
            )
        });
    }
    Ok(Advertised {
        public,
        relay,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adv(listen: &str, tls: bool, public: Option<&str>, derp: Option<&str>) -> Advertised {
        advertise(listen.parse().unwrap(), tls, public, derp).unwrap()
    }

    #[test]
    fn a_dns_name_in_the_public_url_reaches_the_map() {
        let a = adv(
            "0.0.0.0:7080",
            false,
            Some("http://relay.example:7080"),
            None,
        );
        let d = a.relay.derp_map().connect(999).unwrap();
        assert_eq!(d.url, "http://relay.example:7080/derp");
        assert_eq!(d.dial_ip, None);
        assert_eq!(a.public.to_url(), "http://relay.example:7080");
        assert_eq!(a.warnings.len(), 1, "{:?}", a.warnings);
    }

    #[test]
    fn behind_a_tls_proxy_on_loopback() {
        let a = adv(
            "127.0.0.1:7080",
            false,
            Some("https://agentwire.example"),
            None,
        );
        let d = a.relay.derp_map().connect(999).unwrap();
        assert_eq!(d.url, "https://agentwire.example:443/derp");
        assert_eq!(a.public.to_url(), "https://agentwire.example");
        assert!(a.warnings.is_empty(), "{:?}", a.warnings);
    }

    #[test]
    fn an_https_ip_public_url_is_tls_to_that_ip() {
        let a = adv("0.0.0.0:443", true, Some("https://203.0.113.5"), None);
        let d = a.relay.derp_map().connect(999).unwrap();
        assert_eq!(d.url, "https://203.0.113.5:443/derp");
        assert_eq!(d.dial_ip, Some("203.0.113.5".parse().unwrap()));
        assert!(a.warnings.is_empty());
    }

    #[test]
    fn derp_url_overrides_the_relay() {
        let a = adv(
            "127.0.0.1:7080",
            false,
            Some("https://a.example"),
            Some("wss://relay.example:8443/derp"),
        );
        assert_eq!(
            a.relay.derp_map().connect_url(999).unwrap(),
            "https://relay.example:8443/derp"
        );
        assert_eq!(a.public.to_url(), "https://a.example");
    }

    #[test]
    fn defaults_follow_the_listener() {
        let a = adv("127.0.0.1:7080", false, None, None);
        assert_eq!(a.public.to_url(), "http://127.0.0.1:7080");
        assert!(a.warnings.is_empty());
        let a = adv("127.0.0.1:7443", true, None, None);
        assert_eq!(a.public.to_url(), "https://127.0.0.1:7443");
        let a = adv("[::]:7080", false, None, None);
        assert_eq!(a.public.host, "127.0.0.1");
        assert_eq!(a.warnings.len(), 2, "{:?}", a.warnings);
    }

    #[test]
    fn urls_that_cannot_work_are_refused() {
        let l: SocketAddr = "127.0.0.1:1".parse().unwrap();
        for (tls, public, derp) in [
            (false, Some("https://h/mcp"), None),
            (false, Some("ftp://h"), None),
            (false, Some("http://"), None),
            (false, Some("http://0.0.0.0:7080"), None),
            (false, Some("http://u@h"), None),
            (true, Some("http://h"), None),
            (false, None, Some("https://r/other")),
        ] {
            assert!(
                advertise(l, tls, public, derp).is_err(),
                "{public:?} {derp:?}"
            );
        }
        assert!(matches!(
            advertise(l, false, Some("https://h/mcp"), None),
            Err(PublicUrlError::HasPath { .. })
        ));
        let ipv6 = BaseUrl::parse("x", "https://[2001:db8::1]:8443/", false).unwrap();
        assert_eq!(ipv6.to_url(), "https://[2001:db8::1]:8443");
    }
}
