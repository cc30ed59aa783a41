//! A node's view of its tunnel as JSON: what `agentwire status` prints for a running
//! `agentwire mcp`, and what `serve` shows admins at [`DEBUG_TAILNET_PATH`].

use crate::proto::wg::{Origin, PathAddr, PathInfo};
use crate::runtime::tailnet::Tailnet;
use crate::wire::addr::NodeId;
use serde::{Deserialize, Serialize};
use std::time::UNIX_EPOCH;

/// Where `serve` answers admins with its own tunnel's [`TailnetStatus`].
pub const DEBUG_TAILNET_PATH: &str = "/api/v0/debug/tailnet";

/// One node's tunnel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TailnetStatus {
    /// The node's id.
    pub id: NodeId,
    /// Its tailnet address.
    pub address: String,
    /// Whether the coordinator stream is up.
    pub coordinator_connected: bool,
    /// The coordinator's last error, if any.
    pub coordinator_error: Option<String>,
    /// Home DERP region.
    pub home_region: Option<u16>,
    /// The UDP socket's local address.
    pub udp_local: String,
    /// What endpoint discovery last found.
    pub discovery: DiscoveryStatus,
    /// Sleep/wake gaps handled.
    pub wakes: u64,
    /// Every destination.
    pub destinations: Vec<DestinationStatus>,
    /// The process: what a leak would grow.
    #[serde(default)]
    pub process: ProcessStatus,
}

/// The process serving the status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStatus {
    /// Its id.
    pub pid: u32,
    /// Tokio tasks alive.
    pub tasks: usize,
    /// Open file descriptors (sockets among them); Linux only.
    pub open_fds: Option<usize>,
}

impl ProcessStatus {
    fn now() -> Self {
        Self {
            pid: std::process::id(),
            tasks: tokio::runtime::Handle::try_current()
                .map(|h| h.metrics().num_alive_tasks())
                .unwrap_or(0),
            open_fds: open_fds(),
        }
    }
}

#[cfg(target_os = "linux")]
fn open_fds() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

#[cfg(not(target_os = "linux"))]
fn open_fds() -> Option<usize> {
    None
}

/// Endpoint discovery's last round.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DiscoveryStatus {
    /// Any STUN server answered.
    pub udp: bool,
    /// Our addresses as STUN servers saw them.
    pub reflexive: Vec<String>,
    /// Whether the NAT maps per destination (`None`: fewer than two servers answered).
    pub mapping_varies: Option<bool>,
    /// STUN round trip per region, milliseconds.
    pub latency_ms: Vec<(u16, f64)>,
    /// Rounds completed.
    pub rounds: u64,
}

/// One destination (an agent this node dials).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DestinationStatus {
    /// The agent.
    pub agent: NodeId,
    /// Setup stage.
    pub stage: String,
    /// Handles held now, and ever.
    pub leases: u64,
    /// Handles ever taken.
    pub leases_total: u64,
    /// `direct ADDR`, `relay (DERP region N)`, or none.
    pub path: Option<String>,
    /// Round trip of the direct path, milliseconds.
    pub direct_rtt_ms: Option<f64>,
    /// Round trip over DERP, milliseconds.
    pub derp_rtt_ms: Option<f64>,
    /// Candidate direct addresses: (address, how learned, round trip ms).
    pub candidates: Vec<(String, String, Option<f64>)>,
    /// When the session's handshake completed, Unix milliseconds.
    pub last_handshake_unix_ms: Option<u64>,
    /// Plaintext bytes sent and received.
    pub tx_bytes: u64,
    /// Plaintext bytes received.
    pub rx_bytes: u64,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn origin(o: Origin) -> &'static str {
    match o {
        Origin::Advertised => "advertised",
        Origin::CallMeMaybe => "call-me-maybe",
        Origin::PeerReflexive => "peer-reflexive",
    }
}

/// A snapshot of `tailnet`.
pub async fn snapshot(tailnet: &Tailnet) -> TailnetStatus {
    let report = tailnet.discovery();
    let coord = tailnet.coordinator_status();
    let mut destinations = Vec::new();
    for d in tailnet.destinations().await {
        let info: Option<PathInfo> = match d.key {
            Some(_) => tailnet.path_info(d.agent).await,
            None => None,
        };
        destinations.push(DestinationStatus {
            agent: d.agent,
            stage: d.stage.to_string(),
            leases: d.leases,
            leases_total: d.leases_total,
            path: d.path.map(PathAddr::describe),
            direct_rtt_ms: info.as_ref().and_then(|i| i.direct_rtt).map(ms),
            derp_rtt_ms: info.as_ref().and_then(|i| i.derp_rtt).map(ms),
            candidates: info
                .map(|i| {
                    i.candidates
                        .iter()
                        .map(|c| (c.addr.to_string(), origin(c.origin).into(), c.rtt.map(ms)))
                        .collect()
                })
                .unwrap_or_default(),
            last_handshake_unix_ms: d
                .last_handshake
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map(|d| d.as_millis() as u64),
            tx_bytes: d.tx_bytes,
            rx_bytes: d.rx_bytes,
        });
    }
    TailnetStatus {
        id: tailnet.id(),
        address: tailnet.addr().to_string(),
        coordinator_connected: tailnet.coordinator_connected(),
        coordinator_error: coord.and_then(|c| c.last_error),
        home_region: tailnet.home_region(),
        udp_local: tailnet.tunnel().local_udp_addr().to_string(),
        discovery: DiscoveryStatus {
            udp: report.udp,
            reflexive: report.reflexive.iter().map(ToString::to_string).collect(),
            mapping_varies: report.mapping_varies,
            latency_ms: report.latency.iter().map(|(r, d)| (*r, ms(*d))).collect(),
            rounds: report.rounds,
        },
        wakes: tailnet.wake_count(),
        destinations,
        process: ProcessStatus::now(),
    }
}

/// Prints a status for people.
pub fn render(s: &TailnetStatus) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "node {} ({})   pid {}, {} tasks{}",
        s.id,
        s.address,
        s.process.pid,
        s.process.tasks,
        s.process
            .open_fds
            .map(|n| format!(", {n} open files"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  coordinator: {}{}",
        if s.coordinator_connected {
            "connected"
        } else {
            "not connected"
        },
        s.coordinator_error
            .as_ref()
            .filter(|_| !s.coordinator_connected)
            .map(|e| format!(" ({e})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "  home DERP region: {}   UDP: {}   reflexive: {}",
        s.home_region
            .map_or_else(|| "none".into(), |r| r.to_string()),
        s.udp_local,
        if s.discovery.reflexive.is_empty() {
            "none".into()
        } else {
            s.discovery.reflexive.join(", ")
        }
    );
    if s.destinations.is_empty() {
        let _ = writeln!(out, "  no destinations");
    }
    for d in &s.destinations {
        let _ = writeln!(
            out,
            "  {}  {}  {}  leases {} (ever {})  tx {} B  rx {} B{}",
            d.agent,
            d.stage,
            d.path.as_deref().unwrap_or("no path"),
            d.leases,
            d.leases_total,
            d.tx_bytes,
            d.rx_bytes,
            d.direct_rtt_ms
                .map(|r| format!("  direct rtt {r} ms"))
                .unwrap_or_default()
        );
    }
    out
}
