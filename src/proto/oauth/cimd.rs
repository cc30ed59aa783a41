//! Client ID metadata documents (draft-ietf-oauth-client-id-metadata-document, the MCP
//! authorization spec's preferred client identification): the `client_id` is an `https`
//! URL, and the document there is the client's metadata.
//!
//! Fetching a URL a stranger names is a server-side request forgery risk, so the rules
//! are strict: `https` only; the host's addresses must all be public unicast (no
//! loopback, private, link-local, CGNAT, multicast, documentation or reserved ranges,
//! and no IPv6 forms that embed such an IPv4 address), checked on the resolved
//! addresses, and the shell connects to an address it checked (so a DNS answer cannot
//! change between check and use); no redirects; a small size cap and a short timeout;
//! the result cached within bounds. [`AddressPolicy::AllowPrivate`] exists for tests on
//! loopback only.

use super::client::{self, ValidClient};
use super::records::ClientSource;
use super::{OAuthError, Settings, UnixTime};
use crate::wire::oauth::metadata::ClientMetadata;
use crate::wire::oauth::uri::{Host, Uri};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

/// Largest document fetched (the draft suggests 5 KB).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Shortest time a document is cached, whatever its headers say.
pub const MIN_CACHE: Duration = Duration::from_secs(60);
/// Longest time a document is cached.
pub const MAX_CACHE: Duration = Duration::from_secs(24 * 3600);
/// How long a document without caching headers is cached.
pub const DEFAULT_CACHE: Duration = Duration::from_secs(3600);

/// Whether `client_id` is meant as a metadata document URL (registered clients' ids
/// never start with a scheme).
pub fn is_document_url(client_id: &str) -> bool {
    client_id
        .get(..8)
        .is_some_and(|p| p.eq_ignore_ascii_case("https://"))
}

/// Where to fetch a metadata document from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentUrl {
    /// The host to resolve (an IPv6 literal without brackets).
    pub host: String,
    /// Whether `host` is an IP literal (no DNS).
    pub literal: Option<IpAddr>,
    /// The port.
    pub port: u16,
    /// Path and query, for the request line.
    pub target: String,
    /// The name for SNI and the `Host` header.
    pub authority: String,
}

/// Checks a `client_id` URL: `https`, a host, no userinfo, a path other than `/`, no dot
/// segments, no fragment.
///
/// # Errors
/// `invalid_client` naming the rule.
pub fn document_url(client_id: &str) -> Result<DocumentUrl, OAuthError> {
    let bad = |why: &str| OAuthError::client(format!("client_id URL {why}"));
    let u = Uri::parse(client_id).map_err(|e| bad(&format!("is not a valid URL: {e}")))?;
    if u.scheme != "https" {
        return Err(bad("must use https"));
    }
    let a = u.authority.ok_or_else(|| bad("has no host"))?;
    if a.host_raw.is_empty() {
        return Err(bad("has no host"));
    }
    if a.userinfo.is_some() {
        return Err(bad("must not have userinfo"));
    }
    if u.path.is_empty() || u.path == "/" {
        return Err(bad("must have a path"));
    }
    if u.has_dot_segments() {
        return Err(bad("must not have dot segments"));
    }
    if u.fragment.is_some() {
        return Err(bad("must not have a fragment"));
    }
    let (host, literal) = match a.host {
        Host::Name(n) => (n.to_ascii_lowercase(), None),
        Host::V4(ip) => (ip.to_string(), Some(IpAddr::V4(ip))),
        Host::V6(ip) => (ip.to_string(), Some(IpAddr::V6(ip))),
    };
    let port = a.port.unwrap_or(443);
    let authority = match a.port {
        Some(p) => format!("{}:{p}", a.host_raw),
        None => a.host_raw.to_string(),
    };
    let target = match u.query {
        Some(q) => format!("{}?{q}", u.path),
        None => u.path.to_string(),
    };
    Ok(DocumentUrl {
        host,
        literal,
        port,
        target,
        authority,
    })
}

/// Which addresses a document may be fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressPolicy {
    /// Public unicast addresses only (the default).
    PublicOnly,
    /// Any address, loopback and private included. Tests only.
    AllowPrivate,
}

fn v4_is_public(a: Ipv4Addr) -> bool {
    let [o0, o1, o2, _] = a.octets();
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_private()
        || a.is_link_local()
        || a.is_broadcast()
        || a.is_multicast()
        || a.is_documentation()
        || o0 == 0
        || o0 >= 240
        || (o0 == 100 && (64..128).contains(&o1))
        || (o0 == 192 && o1 == 0 && o2 == 0)
        || (o0 == 198 && (18..20).contains(&o1)))
}

fn v6_is_public(a: Ipv6Addr) -> bool {
    if let Some(v4) = a.to_ipv4_mapped() {
        return v4_is_public(v4);
    }
    let s = a.segments();
    // 6to4 (2002::/16) and NAT64 (64:ff9b::/96) carry an IPv4 address; judge that.
    if s[0] == 0x2002 {
        let [h, l] = [s[1].to_be_bytes(), s[2].to_be_bytes()];
        return v4_is_public(Ipv4Addr::new(h[0], h[1], l[0], l[1]));
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [h, l] = [s[6].to_be_bytes(), s[7].to_be_bytes()];
        return v4_is_public(Ipv4Addr::new(h[0], h[1], l[0], l[1]));
    }
    !(a.is_unspecified()
        || a.is_loopback()
        || a.is_multicast()
        // IPv4-compatible (deprecated) ::a.b.c.d
        || s[..6] == [0; 6]
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo
        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
        || (s[0] & 0xe000) != 0x2000) // not global unicast (2000::/3)
}

/// Whether a document may be fetched from `ip` under `policy`.
pub fn address_allowed(ip: IpAddr, policy: AddressPolicy) -> bool {
    match policy {
        AddressPolicy::AllowPrivate => true,
        AddressPolicy::PublicOnly => match ip {
            IpAddr::V4(a) => v4_is_public(a),
            IpAddr::V6(a) => v6_is_public(a),
        },
    }
}

/// Checks every resolved address; one that is not allowed fails the whole name (a host
/// that resolves to both a public and a private address is refused, not half used).
///
/// # Errors
/// `invalid_client` saying the host resolves to an address that may not be fetched.
pub fn check_addresses(addrs: &[IpAddr], policy: AddressPolicy) -> Result<(), OAuthError> {
    if addrs.is_empty() {
        return Err(OAuthError::client("client_id URL host has no addresses"));
    }
    if let Some(a) = addrs.iter().find(|a| !address_allowed(**a, policy)) {
        return Err(OAuthError::client(format!(
            "client_id URL host resolves to a non-public address ({a}); metadata documents are only fetched from public addresses"
        )));
    }
    Ok(())
}

/// Validates a fetched document for `url`.
///
/// # Errors
/// `invalid_client` when the document is not client metadata for `url` (too large, not
/// JSON, a different `client_id`), or the registration rules' error.
pub fn parse_document(
    bytes: &[u8],
    url: &str,
    settings: &Settings,
) -> Result<ValidClient, OAuthError> {
    let meta = ClientMetadata::parse(bytes, MAX_DOCUMENT_BYTES)
        .map_err(|e| OAuthError::client(format!("client metadata document: {e}")))?;
    if meta.client_id.as_deref() != Some(url) {
        return Err(OAuthError::client(
            "client metadata document's client_id is not the URL it was fetched from",
        ));
    }
    client::validate(&meta, ClientSource::MetadataDocument, settings)
}

/// Until when a document fetched at `now` with this `Cache-Control` may be used:
/// `max-age` clamped to [[`MIN_CACHE`], [`MAX_CACHE`]], `no-store`/`no-cache` as the
/// minimum, [`DEFAULT_CACHE`] without either.
pub fn cache_until(now: UnixTime, cache_control: Option<&str>) -> UnixTime {
    let mut ttl = DEFAULT_CACHE;
    if let Some(cc) = cache_control {
        for d in cc.split(',').map(|d| d.trim().to_ascii_lowercase()) {
            if d == "no-store" || d == "no-cache" {
                ttl = MIN_CACHE;
                break;
            }
            if let Some(Ok(secs)) = d
                .strip_prefix("max-age=")
                .map(|v| v.trim_matches('"').parse::<u64>())
            {
                ttl = Duration::from_secs(secs);
            }
        }
    }
    now.plus(ttl.clamp(MIN_CACHE, MAX_CACHE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_urls() {
        let d = document_url("https://app.example.com/oauth/client.json?v=2").unwrap();
        assert_eq!(
            (
                d.host.as_str(),
                d.port,
                d.target.as_str(),
                d.authority.as_str()
            ),
            (
                "app.example.com",
                443,
                "/oauth/client.json?v=2",
                "app.example.com"
            )
        );
        let d = document_url("https://[2001:4860::8888]:8443/c").unwrap();
        assert_eq!(d.literal, Some("2001:4860::8888".parse().unwrap()));
        assert_eq!(d.authority, "[2001:4860::8888]:8443");
        for bad in [
            "http://app.example.com/client.json",
            "HTTPS://app.example.com/client.json",
            "https://app.example.com",
            "https://app.example.com/",
            "https://u:p@app.example.com/c",
            "https://app.example.com/a/../c",
            "https://app.example.com/c#x",
            "https:///c",
            "https://app example/c",
        ] {
            assert!(document_url(bad).is_err(), "{bad}");
        }
        assert!(is_document_url("https://x/y") && is_document_url("HTTPS://x/y"));
        assert!(!is_document_url("aw-abc") && !is_document_url("http://x/y"));
    }

    #[test]
    fn only_public_addresses() {
        let p = AddressPolicy::PublicOnly;
        for ok in ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450::1"] {
            assert!(address_allowed(ok.parse().unwrap(), p), "{ok}");
        }
        for bad in [
            "127.0.0.1",
            "127.1.2.3",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.254",
            "0.0.0.0",
            "0.1.2.3",
            "255.255.255.255",
            "224.0.0.1",
            "240.0.0.1",
            "192.0.2.1",
            "198.51.100.1",
            "203.0.113.1",
            "198.18.0.1",
            "192.0.0.8",
            "::1",
            "::",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "2002:7f00:1::1",
            "2002:c0a8:101::1",
            "64:ff9b::a00:1",
            "64:ff9b::7f00:1",
            "100::1",
            "4000::1",
        ] {
            assert!(!address_allowed(bad.parse().unwrap(), p), "{bad}");
        }
        assert!(
            address_allowed("2002:0808:0808::1".parse().unwrap(), p),
            "6to4 of a public v4"
        );
        assert!(address_allowed(
            "127.0.0.1".parse().unwrap(),
            AddressPolicy::AllowPrivate
        ));
        let mixed: Vec<IpAddr> = vec!["8.8.8.8".parse().unwrap(), "10.0.0.1".parse().unwrap()];
        assert!(
            check_addresses(&mixed, p).is_err(),
            "one private address fails the name"
        );
        assert!(check_addresses(&[], p).is_err());
        assert!(check_addresses(&mixed[..1], p).is_ok());
    }

    #[test]
    fn documents() {
        let s = Settings::new("https://as.example", &["https://as.example/mcp".into()]);
        let url = "https://app.example/client.json";
        let ok = format!(
            r#"{{"client_id":"{url}","client_name":"App","redirect_uris":["https://app.example/cb"]}}"#
        );
        let v = parse_document(ok.as_bytes(), url, &s).unwrap();
        assert_eq!(v.name.as_deref(), Some("App"));
        let other = ok.replace("client.json", "other.json");
        assert!(
            parse_document(other.as_bytes(), url, &s).is_err(),
            "client_id must be the URL"
        );
        let no_id = r#"{"redirect_uris":["https://app.example/cb"]}"#;
        assert!(parse_document(no_id.as_bytes(), url, &s).is_err());
        let big = format!(
            r#"{{"client_id":"{url}","x":"{}"}}"#,
            "a".repeat(MAX_DOCUMENT_BYTES)
        );
        assert!(
            parse_document(big.as_bytes(), url, &s)
                .unwrap_err()
                .description
                .contains("larger")
        );
    }

    #[test]
    fn caching() {
        let t = UnixTime(1000);
        assert_eq!(cache_until(t, None), t.plus(DEFAULT_CACHE));
        assert_eq!(cache_until(t, Some("public, max-age=600")), UnixTime(1600));
        assert_eq!(cache_until(t, Some("max-age=1")), t.plus(MIN_CACHE));
        assert_eq!(cache_until(t, Some("max-age=99999999")), t.plus(MAX_CACHE));
        assert_eq!(cache_until(t, Some("no-store")), t.plus(MIN_CACHE));
        assert_eq!(cache_until(t, Some("max-age=junk")), t.plus(DEFAULT_CACHE));
    }
}
