//! The DERP map, in Tailscale's JSON format (Regions → Nodes).
//!
//! ```json
//! {"Regions": {"1": {"RegionID": 1, "RegionCode": "local", "RegionName": "Local",
//!   "Nodes": [{"Name": "1a", "RegionID": 1, "HostName": "127.0.0.1",
//!              "DERPPort": 3340, "ForceHTTP": true}]}}}
//! ```
//!
//! Field names are Go's and are matched exactly. Unknown fields are ignored, so maps
//! written by Tailscale or Coder load as they are. `ForceWebsockets` on a region is ours
//! (Coder carries the same switch elsewhere); it makes clients dial the websocket
//! variant first.
//!
//! # How a node is dialled ([`DerpNode::dial`])
//! - Scheme: `http` when the node has `ForceHTTP`, `https` otherwise.
//! - URL host (the `Host` header, TLS SNI and the name the certificate is checked
//!   against): `HostName`.
//! - Address dialled: the `IPv4` field when it holds an IPv4 literal, else the `IPv6`
//!   field when it holds an IPv6 literal, else `HostName` resolved by DNS.
//! - Certificate name: `CertName` when set, else `HostName`. `InsecureForTests` skips
//!   certificate verification (TLS still runs).
//! - Port: `DERPPort`, or 80 / 443 by scheme when it is 0.
//! - Path: `/derp`.
//!
//! Plain HTTP is meant for loopback and private links, or a relay behind a TLS proxy
//! that the map does not name.
//!
//! Formats only: reading the file is the caller's job.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use thiserror::Error;

/// A DERP region id. Tailscale allows up to 2^53; we use small ids (Tailscale's
/// custom range is 900–999).
pub type RegionId = u16;

/// Why a DERP map was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DerpMapError {
    /// Not valid JSON, or a field of the wrong type.
    #[error("DERP map is not valid JSON: {0}")]
    Json(String),
    /// A region's map key and its `RegionID` disagree, or the id is 0.
    #[error("region {key}: RegionID {id} must equal its key and be non-zero")]
    RegionId {
        /// The map key.
        key: RegionId,
        /// The `RegionID` field.
        id: RegionId,
    },
    /// A node names a different region than the one it is listed in.
    #[error("node {node:?} in region {region} says RegionID {id}")]
    NodeRegion {
        /// The node's name.
        node: String,
        /// The region it is listed in.
        region: RegionId,
        /// The `RegionID` it claims.
        id: RegionId,
    },
    /// A node lacks a `HostName`.
    #[error("node {0:?} has no HostName")]
    NoHostName(String),
    /// Two nodes share a name.
    #[error("node name {0:?} is used twice")]
    DuplicateName(String),
    /// A port is out of range.
    #[error("node {0:?} has an invalid DERPPort or STUNPort")]
    Port(String),
    /// The region id is not in the map.
    #[error("region {0} is not in the DERP map")]
    NoRegion(RegionId),
    /// The region has no node that serves DERP.
    #[error("region {0} has no DERP node")]
    NoNode(RegionId),
}

/// How to reach one DERP node, as the map describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DerpDial {
    /// `http(s)://HostName:port/derp`.
    pub url: String,
    /// An IP literal to dial instead of resolving the host name.
    pub dial_ip: Option<IpAddr>,
    /// The certificate name when it differs from the host name.
    pub cert_name: Option<String>,
    /// Skip certificate verification.
    pub insecure_for_tests: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}
fn is_zero(n: &i32) -> bool {
    *n == 0
}
fn is_zero_f64(n: &f64) -> bool {
    *n == 0.0
}
fn is_empty(s: &str) -> bool {
    s.is_empty()
}

/// The whole map.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpMap {
    /// Home-region selection parameters, if the map carries them.
    #[serde(
        rename = "HomeParams",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub home_params: Option<HomeParams>,
    /// Regions keyed by id (a decimal string in JSON).
    #[serde(rename = "Regions", default)]
    pub regions: BTreeMap<RegionId, DerpRegion>,
    /// Whether to drop Tailscale's default regions (kept for round trips).
    #[serde(
        rename = "omitDefaultRegions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub omit_default_regions: bool,
}

/// Home-region selection parameters.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HomeParams {
    /// Latency multipliers per region: below 1 prefers a region, above 1 avoids it.
    #[serde(
        rename = "RegionScore",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub region_score: BTreeMap<RegionId, f64>,
}

/// A region: one or more DERP nodes that relay among themselves.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DerpRegion {
    /// Coder marks the relay built into its control plane; kept for round trips.
    #[serde(rename = "EmbeddedRelay", default, skip_serializing_if = "is_false")]
    pub embedded_relay: bool,
    /// The region id; equals the map key.
    #[serde(rename = "RegionID")]
    pub region_id: RegionId,
    /// Short code such as "nyc".
    #[serde(rename = "RegionCode", default)]
    pub region_code: String,
    /// Human-readable name.
    #[serde(rename = "RegionName", default)]
    pub region_name: String,
    /// Latitude for display (kept for round trips).
    #[serde(rename = "Latitude", default, skip_serializing_if = "is_zero_f64")]
    pub latitude: f64,
    /// Longitude for display (kept for round trips).
    #[serde(rename = "Longitude", default, skip_serializing_if = "is_zero_f64")]
    pub longitude: f64,
    /// Clients should not pick this region as home.
    #[serde(rename = "Avoid", default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    /// Clients neither measure this region nor pick it as home (kept for round trips).
    #[serde(rename = "NoMeasureNoHome", default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    /// Dial the websocket variant first (for proxies that refuse `Upgrade: DERP`).
    #[serde(rename = "ForceWebsockets", default, skip_serializing_if = "is_false")]
    pub force_websockets: bool,
    /// Nodes in priority order; clients use the first DERP-serving one.
    #[serde(rename = "Nodes", default)]
    pub nodes: Vec<DerpNode>,
}

/// One DERP node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DerpNode {
    /// Unique node name such as "1a"; not a host name.
    #[serde(rename = "Name", default)]
    pub name: String,
    /// The region the node belongs to.
    #[serde(rename = "RegionID")]
    pub region_id: RegionId,
    /// Host name for DNS, TLS and the `Host` header.
    #[serde(rename = "HostName", default)]
    pub host_name: String,
    /// Expected TLS certificate name, if not the host name (kept for round trips).
    #[serde(rename = "CertName", default, skip_serializing_if = "is_empty")]
    pub cert_name: String,
    /// IPv4 literal to dial instead of resolving; "none" or anything else disables it.
    #[serde(rename = "IPv4", default, skip_serializing_if = "is_empty")]
    pub ipv4: String,
    /// IPv6 literal to dial instead of resolving.
    #[serde(rename = "IPv6", default, skip_serializing_if = "is_empty")]
    pub ipv6: String,
    /// STUN port; 0 means 3478, -1 disables STUN.
    #[serde(rename = "STUNPort", default, skip_serializing_if = "is_zero")]
    pub stun_port: i32,
    /// The node serves STUN only, not DERP.
    #[serde(rename = "STUNOnly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    /// DERP port; 0 means the scheme's default.
    #[serde(rename = "DERPPort", default, skip_serializing_if = "is_zero")]
    pub derp_port: i32,
    /// Tests: TLS without certificate verification.
    #[serde(rename = "InsecureForTests", default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    /// Use plain HTTP.
    #[serde(rename = "ForceHTTP", default, skip_serializing_if = "is_false")]
    pub force_http: bool,
    /// Tests: STUN address override (kept for round trips).
    #[serde(rename = "STUNTestIP", default, skip_serializing_if = "is_empty")]
    pub stun_test_ip: String,
    /// Reachable on port 80 (captive portal checks; kept for round trips).
    #[serde(rename = "CanPort80", default, skip_serializing_if = "is_false")]
    pub can_port80: bool,
}

impl DerpMap {
    /// Parses and validates a map.
    ///
    /// # Errors
    /// [`DerpMapError::Json`] or any validation error from [`DerpMap::validate`].
    pub fn from_json(json: &str) -> Result<Self, DerpMapError> {
        let map: Self =
            serde_json::from_str(json).map_err(|e| DerpMapError::Json(e.to_string()))?;
        map.validate()?;
        Ok(map)
    }

    /// The map as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A one-region, one-node map for a relay at `host:port` over plain HTTP, as the
    /// all-in-one server advertises its embedded relay.
    pub fn single(region: RegionId, code: &str, host: IpAddr, port: u16) -> Self {
        Self::single_node(region, code, &host.to_string(), port, false)
    }

    /// A one-region, one-node map for a relay at `host` (a DNS name or an IP literal)
    /// and `port`, over TLS when `tls`. An IP literal also fills `IPv4`/`IPv6`, so
    /// clients dial it without a lookup.
    pub fn single_node(region: RegionId, code: &str, host: &str, port: u16, tls: bool) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let (ipv4, ipv6) = match host.parse::<IpAddr>() {
            Ok(IpAddr::V4(a)) => (a.to_string(), String::new()),
            Ok(IpAddr::V6(a)) => (String::new(), a.to_string()),
            Err(_) => (String::new(), String::new()),
        };
        let node = DerpNode {
            name: format!("{region}a"),
            region_id: region,
            host_name: host.to_owned(),
            ipv4,
            ipv6,
            stun_port: -1,
            derp_port: i32::from(port),
            force_http: !tls,
            ..Default::default()
        };
        let r = DerpRegion {
            region_id: region,
            region_code: code.to_owned(),
            region_name: code.to_owned(),
            nodes: vec![node],
            ..Default::default()
        };
        Self {
            regions: BTreeMap::from([(region, r)]),
            ..Default::default()
        }
    }

    /// Checks ids, names, host names and ports.
    ///
    /// # Errors
    /// The first problem found.
    pub fn validate(&self) -> Result<(), DerpMapError> {
        let mut names = HashSet::new();
        for (&key, region) in &self.regions {
            if key == 0 || region.region_id != key {
                return Err(DerpMapError::RegionId {
                    key,
                    id: region.region_id,
                });
            }
            for node in &region.nodes {
                if node.region_id != key {
                    return Err(DerpMapError::NodeRegion {
                        node: node.name.clone(),
                        region: key,
                        id: node.region_id,
                    });
                }
                if node.host_name.is_empty() {
                    return Err(DerpMapError::NoHostName(node.name.clone()));
                }
                if !node.name.is_empty() && !names.insert(node.name.as_str()) {
                    return Err(DerpMapError::DuplicateName(node.name.clone()));
                }
                let port_ok =
                    (0..=65535).contains(&node.derp_port) && (-1..=65535).contains(&node.stun_port);
                if !port_ok {
                    return Err(DerpMapError::Port(node.name.clone()));
                }
            }
        }
        Ok(())
    }

    /// The region with this id.
    ///
    /// # Errors
    /// [`DerpMapError::NoRegion`].
    pub fn region(&self, id: RegionId) -> Result<&DerpRegion, DerpMapError> {
        self.regions.get(&id).ok_or(DerpMapError::NoRegion(id))
    }

    /// How to dial a region's first DERP node.
    ///
    /// # Errors
    /// [`DerpMapError::NoRegion`] or [`DerpMapError::NoNode`].
    pub fn connect(&self, id: RegionId) -> Result<DerpDial, DerpMapError> {
        Ok(self
            .region(id)?
            .derp_node()
            .ok_or(DerpMapError::NoNode(id))?
            .dial())
    }

    /// The URL of a region's first DERP node.
    ///
    /// # Errors
    /// As [`DerpMap::connect`].
    pub fn connect_url(&self, id: RegionId) -> Result<String, DerpMapError> {
        self.connect(id).map(|d| d.url)
    }
}

impl DerpRegion {
    /// The first node that serves DERP (not STUN-only).
    pub fn derp_node(&self) -> Option<&DerpNode> {
        self.nodes.iter().find(|n| !n.stun_only)
    }
}

impl DerpNode {
    fn ip(&self) -> Option<IpAddr> {
        self.ipv4
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .or_else(|_| self.ipv6.parse::<Ipv6Addr>().map(IpAddr::V6))
            .ok()
    }

    /// Whether the node is reached over TLS (see the module docs).
    pub fn uses_tls(&self) -> bool {
        !self.force_http
    }

    /// The node's URL, `http(s)://HostName[:port]/derp`, as the module docs describe.
    pub fn url(&self) -> String {
        let (scheme, default_port) = if self.uses_tls() {
            ("https", 443)
        } else {
            ("http", 80)
        };
        let host = match self.host_name.parse::<Ipv6Addr>() {
            Ok(a) => format!("[{a}]"),
            Err(_) => self.host_name.clone(),
        };
        let port = match u16::try_from(self.derp_port) {
            Ok(p) if p != 0 => p,
            _ => default_port,
        };
        format!("{scheme}://{host}:{port}/derp")
    }

    /// How to dial the node (see the module docs).
    pub fn dial(&self) -> DerpDial {
        DerpDial {
            url: self.url(),
            dial_ip: self.ip(),
            cert_name: (!self.cert_name.is_empty()).then(|| self.cert_name.clone()),
            insecure_for_tests: self.insecure_for_tests,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAILSCALE_STYLE: &str = r#"{
      "Regions": {
        "900": {"RegionID": 900, "RegionCode": "home", "RegionName": "Home",
          "Latitude": 1.5, "Nodes": [
            {"Name": "900s", "RegionID": 900, "HostName": "stun.example", "STUNOnly": true},
            {"Name": "900a", "RegionID": 900, "HostName": "derp.example", "IPv4": "203.0.113.7",
             "IPv6": "none", "DERPPort": 8443, "STUNPort": -1}
          ]},
        "901": {"RegionID": 901, "RegionCode": "lo", "RegionName": "Loopback",
          "ForceWebsockets": true, "Nodes": [
            {"Name": "901a", "RegionID": 901, "HostName": "localhost", "IPv6": "::1",
             "DERPPort": 3340, "InsecureForTests": true}
          ]}
      },
      "HomeParams": {"RegionScore": {"900": 0.5}}
    }"#;

    #[test]
    fn test_parse() {
        let m = DerpMap::from_json(TAILSCALE_STYLE).unwrap();
        assert_eq!(m.regions.len(), 2);
        let r = m.region(900).unwrap();
        assert_eq!(r.region_code, "home");
        assert_eq!(r.derp_node().unwrap().name, "900a");
        assert_eq!(m.home_params.as_ref().unwrap().region_score[&900], 0.5);
        assert!(m.region(901).unwrap().force_websockets);
        assert_eq!(DerpMap::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn url_choice() {
        let m = DerpMap::from_json(TAILSCALE_STYLE).unwrap();
        let tls = m.region(900).unwrap().derp_node().unwrap();
        assert!(tls.uses_tls());
        // The URL names the host (SNI, Host, certificate); the IP literal is where to dial.
        assert_eq!(
            m.connect(900).unwrap(),
            DerpDial {
                url: "https://derp.example:8443/derp".into(),
                dial_ip: Some("203.0.113.7".parse().unwrap()),
                cert_name: None,
                insecure_for_tests: false,
            }
        );
        // InsecureForTests keeps TLS and skips verification; IPv6 literals dial as such.
        let d = m.connect(901).unwrap();
        assert_eq!(d.url, "https://localhost:3340/derp");
        assert_eq!(d.dial_ip, Some("::1".parse().unwrap()));
        assert!(d.insecure_for_tests);
        assert_eq!(m.connect_url(5), Err(DerpMapError::NoRegion(5)));
        let mut n = tls.clone();
        n.force_http = true;
        n.derp_port = 0;
        n.ipv4.clear();
        n.cert_name = "other.example".into();
        let d = n.dial();
        assert_eq!(d.url, "http://derp.example:80/derp");
        assert_eq!(
            (d.dial_ip, d.cert_name.as_deref()),
            (None, Some("other.example"))
        );
        let mut n = tls.clone();
        n.host_name = "::1".into();
        n.ipv4.clear();
        assert_eq!(n.url(), "https://[::1]:8443/derp");
    }

    #[test]
    fn single_node_by_name_or_address() {
        let m = DerpMap::single_node(999, "x", "relay.example", 443, true);
        let d = m.connect(999).unwrap();
        assert_eq!(
            (d.url.as_str(), d.dial_ip),
            ("https://relay.example:443/derp", None)
        );
        let m = DerpMap::single_node(999, "x", "[2001:db8::1]", 8443, true);
        let d = m.connect(999).unwrap();
        assert_eq!(d.url, "https://[2001:db8::1]:8443/derp");
        assert_eq!(d.dial_ip, Some("2001:db8::1".parse().unwrap()));
        let m = DerpMap::single_node(999, "x", "relay.example", 80, false);
        assert_eq!(m.connect_url(999).unwrap(), "http://relay.example:80/derp");
    }

    #[test]
    fn test_emit_single_round_trips() {
        let m = DerpMap::single(999, "embedded", "127.0.0.1".parse().unwrap(), 41234);
        assert_eq!(m.connect_url(999).unwrap(), "http://127.0.0.1:41234/derp");
        let json = m.to_json();
        assert!(json.contains(r#""ForceHTTP": true"#), "{json}");
        assert!(json.contains(r#""999": {"#), "{json}");
        assert_eq!(DerpMap::from_json(&json).unwrap(), m);
    }

    #[test]
    fn validation_errors() {
        let bad_key = r#"{"Regions": {"1": {"RegionID": 2, "Nodes": []}}}"#;
        assert_eq!(
            DerpMap::from_json(bad_key),
            Err(DerpMapError::RegionId { key: 1, id: 2 })
        );
        let bad_node = r#"{"Regions": {"1": {"RegionID": 1, "Nodes": [
            {"Name": "x", "RegionID": 3, "HostName": "h"}]}}}"#;
        assert!(matches!(
            DerpMap::from_json(bad_node),
            Err(DerpMapError::NodeRegion { .. })
        ));
        let no_host = r#"{"Regions": {"1": {"RegionID": 1, "Nodes": [
            {"Name": "x", "RegionID": 1}]}}}"#;
        assert_eq!(
            DerpMap::from_json(no_host),
            Err(DerpMapError::NoHostName("x".into()))
        );
        let dup = r#"{"Regions": {"1": {"RegionID": 1, "Nodes": [
            {"Name": "x", "RegionID": 1, "HostName": "a"},
            {"Name": "x", "RegionID": 1, "HostName": "b"}]}}}"#;
        assert_eq!(
            DerpMap::from_json(dup),
            Err(DerpMapError::DuplicateName("x".into()))
        );
        let port = r#"{"Regions": {"1": {"RegionID": 1, "Nodes": [
            {"Name": "x", "RegionID": 1, "HostName": "a", "DERPPort": 70000}]}}}"#;
        assert_eq!(
            DerpMap::from_json(port),
            Err(DerpMapError::Port("x".into()))
        );
        let stun_only = r#"{"Regions": {"1": {"RegionID": 1, "Nodes": [
            {"Name": "x", "RegionID": 1, "HostName": "a", "STUNOnly": true}]}}}"#;
        assert_eq!(
            DerpMap::from_json(stun_only).unwrap().connect_url(1),
            Err(DerpMapError::NoNode(1))
        );
        assert!(matches!(
            DerpMap::from_json("{"),
            Err(DerpMapError::Json(_))
        ));
        assert!(matches!(
            DerpMap::from_json(r#"{"Regions": {"x": {"RegionID": 1}}}"#),
            Err(DerpMapError::Json(_))
        ));
    }
}
