//! Small parsers: IP and WireGuard header peeks, wg-quick configuration, the URLs a
//! server is configured with and a client dials.

use crate::wire::ip::IpPeek;
use crate::wire::wg::WgHeader;
use crate::wire::wgconf::WgConfig;

/// IP peek: every accepted packet's claimed lengths lie inside the buffer.
pub fn ip_peek(data: &[u8]) {
    if let Ok(p) = IpPeek::parse(data) {
        assert!(p.total_len <= data.len());
        assert!(p.transport_offset <= p.total_len);
        let _ = p.tcp(data);
        assert_eq!(crate::wire::ip::dst_addr(data), Some(p.dst));
    }
    if let Ok(h) = WgHeader::parse(data) {
        assert!(data.len() >= 32 || h.kind != crate::wire::wg::MessageKind::Transport);
    }
}

/// wg-quick configuration: accepted configurations have a key and an address, and
/// errors name a line inside the input.
pub fn wgconf(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match WgConfig::parse(&text) {
        Ok(c) => assert!(!c.addresses.is_empty()),
        Err(e) => assert!(e.line <= text.lines().count()),
    }
}

/// URLs: the public/relay base URL, the DERP URL and the secret-URL checks. Accepted
/// URLs print back to themselves; the host a check looks at is part of the input; a
/// loopback or TLS URL may always carry a token.
pub fn urls(data: &[u8]) {
    use crate::runtime::derp::connect::DerpUrl;
    use crate::runtime::tls::{check_secret_url, url_host, url_is_loopback, url_is_tls};
    use crate::services::public_url::BaseUrl;

    let text = String::from_utf8_lossy(data);
    let url = text.as_ref();
    for allow_derp_path in [false, true] {
        if let Ok(b) = BaseUrl::parse("--public-url", url, allow_derp_path) {
            let again = BaseUrl::parse("--public-url", &b.to_url(), false);
            assert_eq!(again.as_ref(), Ok(&b), "{url:?} printed as {}", b.to_url());
            assert!(!b.host.is_empty());
        }
    }
    if let Ok(d) = DerpUrl::parse(url) {
        assert!(!d.host.is_empty());
        assert_eq!(d.tls.is_some(), url_is_tls(url));
        let again = DerpUrl::parse(&d.display()).expect("a DERP URL's display parses");
        assert_eq!(
            (again.host, again.port, again.tls.is_some()),
            (d.host.clone(), d.port, d.tls.is_some())
        );
        let hinted = d.with_hints(Some(std::net::Ipv4Addr::LOCALHOST.into()), Some("c"), true);
        assert_eq!(hinted.dial_host, "127.0.0.1");
    }
    let host = url_host(url);
    assert!(url.contains(host));
    if url_is_loopback(url) || url_is_tls(url) {
        assert!(check_secret_url(url, false).is_ok());
    } else {
        assert!(check_secret_url(url, false).is_err());
    }
    assert!(check_secret_url(url, true).is_ok());
}

/// The admin API's text inputs: durations and times, an agent named by id or
/// `OWNER/WORKSPACE[.AGENT]`, a workspace `OWNER/NAME`. Accepted durations and times print
/// back to themselves (times to the second); accepted names are all valid names; every
/// refusal names the field at fault.
pub fn admin_input(data: &[u8]) {
    use crate::services::control::valid_name;
    use crate::services::store::ops::agents::AgentSel;
    use crate::services::store::ops::split_full;
    use crate::services::time::{fmt_ms, parse_duration, parse_rfc3339_ms};

    let text = String::from_utf8_lossy(data);
    let s = text.as_ref();
    if let Ok(d) = parse_duration(s) {
        assert_eq!(parse_duration(&format!("{}s", d.as_secs())), Ok(d));
    }
    if let Some(ms) = parse_rfc3339_ms(s).filter(|ms| *ms >= 0) {
        assert_eq!(parse_rfc3339_ms(&fmt_ms(ms)), Some(ms - ms % 1000), "{s:?}");
    }
    match AgentSel::parse("agent", s) {
        Ok(AgentSel::Named {
            owner,
            workspace,
            agent,
        }) => {
            assert!(valid_name(&owner) && valid_name(&workspace));
            assert!(agent.is_none_or(|a| valid_name(&a)));
        }
        Ok(AgentSel::Id(_)) => {}
        Err(e) => assert_eq!(e.field(), Some("agent")),
    }
    match split_full("workspace", s) {
        Ok((o, n)) => assert!(valid_name(&o) && valid_name(&n)),
        Err(e) => assert_eq!(e.field(), Some("workspace")),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn fuzz_entry_points_run() {
        for a in [
            "30d",
            "1d12h",
            "2026-12-02T21:00:00.5+02:00",
            "alice/dev.main",
            "alice/dev",
            "11111111-1111-4111-8111-111111111111",
            "a/b/c",
            "",
            "\u{0}",
        ] {
            super::admin_input(a.as_bytes());
        }
        super::ip_peek(&[
            0x45, 0, 0, 20, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
        ]);
        super::wgconf(b"[Interface]\nPrivateKey = x\n");
        super::wgconf(b"\xff\xfe[Peer]");
        for u in [
            "https://hub.example.com",
            "http://[::1]:7080/",
            "wss://relay.example.com:8443/derp",
            "http://user@10.0.0.1/",
            "HTTPS://Example.COM:443",
            "ftp://x",
            "",
        ] {
            super::urls(u.as_bytes());
        }
    }
}
