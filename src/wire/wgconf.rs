//! wg-quick style configuration files: `[Interface]` and `[Peer]` sections.
//!
//! Supported keys — Interface: `PrivateKey`, `Address` (comma-separated, prefix optional),
//! `ListenPort`; Peer: `PublicKey`, `PresharedKey`, `Endpoint` (`host:port`; resolved by
//! the caller), `AllowedIPs`, `PersistentKeepalive`. wg-quick's host-side keys (`DNS`,
//! `MTU`, `Table`, `PreUp`, ...) are accepted and ignored, since there is no host
//! interface. Anything else is an error naming the line.

use super::addr::IpCidr;
use super::key::{NodePrivate, NodePublic};

/// A parsed configuration.
#[derive(Debug, Clone)]
pub struct WgConfig {
    /// Our static key.
    pub private_key: NodePrivate,
    /// Our tunnel addresses.
    pub addresses: Vec<IpCidr>,
    /// UDP port to listen on, if fixed.
    pub listen_port: Option<u16>,
    /// The peers.
    pub peers: Vec<WgPeer>,
    /// Keys that were accepted but ignored, with their line numbers.
    pub ignored: Vec<(usize, String)>,
}

/// One `[Peer]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WgPeer {
    /// The peer's public key.
    pub public_key: NodePublic,
    /// Optional pre-shared key.
    pub preshared_key: Option<[u8; 32]>,
    /// `host:port`, unresolved.
    pub endpoint: Option<String>,
    /// Allowed source/destination prefixes.
    pub allowed_ips: Vec<IpCidr>,
    /// Keepalive interval in seconds.
    pub persistent_keepalive: Option<u16>,
}

/// A configuration error: the 1-based line and what is wrong there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ConfigError {
    /// 1-based line number (0 for whole-file problems).
    pub line: usize,
    /// What is wrong.
    pub reason: String,
}

fn err(line: usize, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        line,
        reason: reason.into(),
    }
}

const IGNORED: &[&str] = &[
    "dns",
    "mtu",
    "table",
    "preup",
    "postup",
    "predown",
    "postdown",
    "saveconfig",
    "fwmark",
];

enum Section {
    None,
    Interface,
    Peer,
}

impl WgConfig {
    /// Parses the text of a configuration file.
    ///
    /// # Errors
    /// [`ConfigError`] with the line and reason for the first problem found.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let mut private_key = None;
        let mut addresses = Vec::new();
        let mut listen_port = None;
        let mut peers: Vec<(usize, PeerBuilder)> = Vec::new();
        let mut ignored = Vec::new();
        let mut section = Section::None;
        let mut seen_interface = false;
        for (i, raw) in text.lines().enumerate() {
            let n = i + 1;
            let line = raw.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if line.starts_with('[') {
                section = match line.to_ascii_lowercase().as_str() {
                    "[interface]" if seen_interface => {
                        return Err(err(n, "a second [Interface] section"));
                    }
                    "[interface]" => {
                        seen_interface = true;
                        Section::Interface
                    }
                    "[peer]" => {
                        peers.push((n, PeerBuilder::default()));
                        Section::Peer
                    }
                    _ => return Err(err(n, format!("unknown section {line}"))),
                };
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                return Err(err(n, "expected Key = Value"));
            };
            let key = k.trim().to_ascii_lowercase();
            let v = v.trim();
            match section {
                Section::None => return Err(err(n, "key outside of a section")),
                Section::Interface => match key.as_str() {
                    "privatekey" => {
                        private_key = Some(
                            v.parse::<NodePrivate>()
                                .map_err(|e| err(n, format!("PrivateKey: {e}")))?,
                        )
                    }
                    "address" => {
                        for a in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                            addresses.push(
                                a.parse::<IpCidr>()
                                    .map_err(|e| err(n, format!("Address: {e}")))?,
                            );
                        }
                    }
                    "listenport" => {
                        listen_port = Some(
                            v.parse::<u16>()
                                .map_err(|_| err(n, format!("ListenPort: {v:?} is not a port")))?,
                        )
                    }
                    k if IGNORED.contains(&k) => ignored.push((n, k.to_string())),
                    _ => return Err(err(n, format!("unknown [Interface] key {}", k.trim()))),
                },
                Section::Peer => {
                    let Some((_, p)) = peers.last_mut() else {
                        return Err(err(n, "internal: no peer"));
                    };
                    match key.as_str() {
                        "publickey" => {
                            p.public_key = Some(
                                v.parse::<NodePublic>()
                                    .map_err(|e| err(n, format!("PublicKey: {e}")))?,
                            )
                        }
                        "presharedkey" => {
                            let k = v
                                .parse::<NodePublic>()
                                .map_err(|e| err(n, format!("PresharedKey: {e}")))?;
                            p.preshared_key = Some(*k.as_bytes());
                        }
                        "endpoint" => {
                            let (host, port) = v
                                .rsplit_once(':')
                                .ok_or_else(|| err(n, "Endpoint must be host:port"))?;
                            if host.is_empty() || port.parse::<u16>().is_err() {
                                return Err(err(n, format!("Endpoint: {v:?} is not host:port")));
                            }
                            p.endpoint = Some(v.to_string());
                        }
                        "allowedips" => {
                            for a in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                                p.allowed_ips.push(
                                    a.parse::<IpCidr>()
                                        .map_err(|e| err(n, format!("AllowedIPs: {e}")))?,
                                );
                            }
                        }
                        "persistentkeepalive" => {
                            p.persistent_keepalive =
                                match v {
                                    "off" | "0" => None,
                                    _ => Some(v.parse::<u16>().map_err(|_| {
                                        err(n, format!("PersistentKeepalive: {v:?}"))
                                    })?),
                                }
                        }
                        _ => return Err(err(n, format!("unknown [Peer] key {}", k.trim()))),
                    }
                }
            }
        }
        let private_key =
            private_key.ok_or_else(|| err(0, "[Interface] PrivateKey is required"))?;
        if addresses.is_empty() {
            return Err(err(0, "[Interface] Address is required"));
        }
        let peers = peers
            .into_iter()
            .map(|(n, p)| {
                Ok(WgPeer {
                    public_key: p
                        .public_key
                        .ok_or_else(|| err(n, "[Peer] without PublicKey"))?,
                    preshared_key: p.preshared_key,
                    endpoint: p.endpoint,
                    allowed_ips: p.allowed_ips,
                    persistent_keepalive: p.persistent_keepalive,
                })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        Ok(Self {
            private_key,
            addresses,
            listen_port,
            peers,
            ignored,
        })
    }
}

#[derive(Default)]
struct PeerBuilder {
    public_key: Option<NodePublic>,
    preshared_key: Option<[u8; 32]>,
    endpoint: Option<String>,
    allowed_ips: Vec<IpCidr>,
    persistent_keepalive: Option<u16>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "
# a comment
[Interface]
PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=
Address = 10.100.0.1/24, fd00::1/64
ListenPort = 51820
DNS = 1.1.1.1

[Peer]
PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=
Endpoint = 192.0.2.1:51820
AllowedIPs = 10.100.0.2/32, fd00::2/128
PersistentKeepalive = 25
";

    #[test]
    fn test_parse_good() {
        let c = WgConfig::parse(GOOD).unwrap();
        assert_eq!(c.addresses.len(), 2);
        assert_eq!(c.listen_port, Some(51820));
        assert_eq!(c.peers.len(), 1);
        assert_eq!(c.peers[0].endpoint.as_deref(), Some("192.0.2.1:51820"));
        assert_eq!(c.peers[0].persistent_keepalive, Some(25));
        assert_eq!(c.ignored, vec![(7, "dns".to_string())]);
    }

    #[test]
    fn test_parse_errors_name_the_line() {
        let bad = GOOD.replace("ListenPort = 51820", "ListenPort = huge");
        assert_eq!(WgConfig::parse(&bad).unwrap_err().line, 6);
        let bad = GOOD.replace("AllowedIPs = 10.100.0.2/32", "AllowedIPs = 10.100.0.2/99");
        let e = WgConfig::parse(&bad).unwrap_err();
        assert_eq!(e.line, 12);
        assert!(e.reason.contains("AllowedIPs"), "{e}");
        let bad = GOOD.replace("PublicKey = x", "PublicKey = !");
        assert_eq!(WgConfig::parse(&bad).unwrap_err().line, 10);
        let bad = GOOD.replace("Endpoint = 192.0.2.1:51820", "Endpoint = nowhere");
        assert_eq!(WgConfig::parse(&bad).unwrap_err().line, 11);
        assert_eq!(WgConfig::parse("Key = 1").unwrap_err().line, 1);
        assert_eq!(WgConfig::parse("[Interface]\nFoo = 1").unwrap_err().line, 2);
        assert_eq!(
            WgConfig::parse("[Interface]\nAddress = 10.0.0.1")
                .unwrap_err()
                .line,
            0
        );
        assert!(WgConfig::parse("[Interface]\nPrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\nAddress = 10.0.0.1\n[Peer]\nEndpoint = a:1").is_err());
    }
}
