//! `GET /metrics`: counters in the Prometheus text format. Counts only; nothing here
//! identifies users, workspaces or keys.

use super::hub::Hub;
use super::mcp::McpStats;
use crate::runtime::tailnet::Tailnet;
use axum::Router;
use axum::routing::get;
use std::fmt::Write as _;
use std::sync::Arc;

/// Path of the metrics endpoint.
pub const METRICS_PATH: &str = "/metrics";

fn line(out: &mut String, name: &str, help: &str, kind: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn one(v: impl Into<f64>) -> Vec<(String, f64)> {
    vec![(String::new(), v.into())]
}

fn render_tls(out: &mut String, hub: &Hub) {
    let Some(s) = hub.tls().map(crate::runtime::tls::ServerTls::stats) else {
        return;
    };
    for (name, help, v) in [
        (
            "agentwire_tls_handshakes_total",
            "TLS handshakes completed on the main listener.",
            s.handshakes,
        ),
        (
            "agentwire_tls_handshake_failures_total",
            "TLS handshakes that failed or timed out.",
            s.handshake_failures,
        ),
        (
            "agentwire_tls_plain_http_total",
            "Plain-HTTP requests to the TLS port (answered 400).",
            s.plain_http,
        ),
        (
            "agentwire_tls_reloads_total",
            "Certificate reloads (SIGHUP) that took effect.",
            s.reloads,
        ),
        (
            "agentwire_tls_reload_failures_total",
            "Certificate reloads refused; the old certificate stays.",
            s.reload_failures,
        ),
    ] {
        line(out, name, help, "counter", &one(v as f64));
    }
}

fn render_stun(out: &mut String, hub: &Hub) {
    let Some(s) = hub.stun_stats() else {
        return;
    };
    for (name, help, v) in [
        (
            "agentwire_stun_requests_total",
            "STUN binding requests received (answered or rate limited).",
            s.requests,
        ),
        (
            "agentwire_stun_responses_total",
            "STUN binding responses sent.",
            s.responses,
        ),
        (
            "agentwire_stun_malformed_total",
            "Datagrams on the STUN port that were not a valid binding request.",
            s.malformed,
        ),
        (
            "agentwire_stun_rate_limited_total",
            "STUN binding requests dropped by the per-source rate limit.",
            s.rate_limited,
        ),
    ] {
        line(out, name, help, "counter", &one(v as f64));
    }
}

async fn render(
    hub: &Hub,
    tailnet: &Tailnet,
    mcp: &McpStats,
    agents: &dyn crate::services::mcp::AgentProvider,
) -> String {
    let mut out = String::new();
    render_tls(&mut out, hub);
    if let Some(r) = hub.replica() {
        r.render_metrics(&mut out);
    }
    let dests = tailnet.destinations().await;
    line(
        &mut out,
        "agentwire_tailnet_destinations",
        "Agents with a tunnel from the shared Tailnet.",
        "gauge",
        &one(dests.len() as f64),
    );
    let leases: u64 = dests.iter().map(|d| d.leases).sum();
    line(
        &mut out,
        "agentwire_tailnet_leases",
        "AgentConn handles currently held.",
        "gauge",
        &one(leases as f64),
    );
    let direct = dests
        .iter()
        .filter(|d| matches!(d.path, Some(crate::proto::wg::PathAddr::Udp(_))))
        .count();
    line(
        &mut out,
        "agentwire_tailnet_direct_destinations",
        "Destinations on a direct UDP path.",
        "gauge",
        &one(direct as f64),
    );
    line(
        &mut out,
        "agentwire_runtime_tasks",
        "Tasks alive on the server's runtime (steady under steady load; growth is a leak).",
        "gauge",
        &one(tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as f64),
    );
    let updates = tailnet.peer_update_counts();
    line(
        &mut out,
        "agentwire_tailnet_peer_updates_total",
        "Peer updates of the kinds that end a peer, as the shared Tailnet received them.",
        "counter",
        &[
            (
                "kind=\"disconnected\"".to_string(),
                updates.disconnected as f64,
            ),
            ("kind=\"lost\"".to_string(), updates.lost as f64),
        ],
    );
    line(
        &mut out,
        "agentwire_tailnet_wakes_total",
        "Sleep/wake events handled.",
        "counter",
        &one(tailnet.wake_count() as f64),
    );
    if let Ok(s) = tailnet.tunnel().stats().await {
        let d = &s.driver;
        line(
            &mut out,
            "agentwire_udp_rx_datagrams_total",
            "Datagrams received on the UDP socket.",
            "counter",
            &one(d.udp_rx_datagrams as f64),
        );
        line(
            &mut out,
            "agentwire_udp_tx_datagrams_total",
            "Datagrams sent on the UDP socket.",
            "counter",
            &one(d.udp_tx_datagrams as f64),
        );
        line(
            &mut out,
            "agentwire_udp_tx_errors_total",
            "UDP sends that failed.",
            "counter",
            &one(d.udp_tx_errors as f64),
        );
        let drops: Vec<(String, f64)> = d
            .drops
            .iter()
            .map(|(r, n)| (format!("reason=\"{r}\""), *n as f64))
            .collect();
        line(
            &mut out,
            "agentwire_wireguard_drops_total",
            "Datagrams and packets the WireGuard device dropped.",
            "counter",
            &drops,
        );
        line(
            &mut out,
            "agentwire_wireguard_held_initiations_total",
            "Handshake initiations from a key not yet programmed, held to be answered once it is.",
            "counter",
            &one(d.held_initiations.1 as f64),
        );
        line(
            &mut out,
            "agentwire_tcp_sockets",
            "Open TCP sockets in the netstack.",
            "gauge",
            &one(s.netstack.tcp_sockets as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_rx_queue_full_total",
            "Packets dropped at the netstack's receive queue.",
            "counter",
            &one(s.netstack.rx_queue_full as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_rx_fair_share_dropped_total",
            "Packets dropped because their source held its share of a busy receive queue.",
            "counter",
            &one(s.netstack.rx_fair_share as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_rx_no_socket_dropped_total",
            "UDP packets dropped because no socket is bound to their port.",
            "counter",
            &one(s.netstack.rx_no_socket as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_rx_not_ours_dropped_total",
            "Packets dropped because their destination is not one of the tunnel's addresses.",
            "counter",
            &one(s.netstack.rx_not_ours as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_syn_backlog_full_total",
            "Connection attempts dropped because a listener's backlog was full.",
            "counter",
            &one(s.netstack.syn_backlog_full as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_tcp_buffers_grown_total",
            "Times a connection's TCP buffer grew because it held the connection back.",
            "counter",
            &one(s.netstack.tcp_buffers_grown as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_tcp_growth_refused_total",
            "Times a TCP buffer did not grow because the growth budget was spent.",
            "counter",
            &one(s.netstack.tcp_growth_refused as f64),
        );
        line(
            &mut out,
            "agentwire_netstack_tcp_grown_bytes",
            "Bytes live connections' TCP buffers hold beyond their starting size.",
            "gauge",
            &one(s.netstack.tcp_grown_bytes as f64),
        );
    }
    let c = hub.coordinator().stats();
    line(
        &mut out,
        "agentwire_coordinator_peers",
        "Peers connected to the coordinator.",
        "gauge",
        &one(c.registry.active as f64),
    );
    line(
        &mut out,
        "agentwire_coordinator_tunnels",
        "Tunnels registered at the coordinator.",
        "gauge",
        &one(c.registry.tunnels as f64),
    );
    line(
        &mut out,
        "agentwire_coordinator_violations_total",
        "Streams closed for authorization violations.",
        "counter",
        &one(c.registry.violations as f64),
    );
    line(
        &mut out,
        "agentwire_coordinator_unauthorized_total",
        "Coordinator upgrades refused for a bad token.",
        "counter",
        &one(c.unauthorized as f64),
    );
    for (name, help, v) in [
        (
            "agentwire_coordinator_conflicts_total",
            "Registrations refused because another live process held the agent id.",
            c.registry.conflicts,
        ),
        (
            "agentwire_coordinator_principal_limited_total",
            "Coordinator upgrades refused for the per-token stream cap.",
            c.principal_limited,
        ),
        (
            "agentwire_coordinator_tunnel_limited_total",
            "Tunnels refused for a per-stream or per-user cap.",
            c.registry.tunnel_limit,
        ),
        (
            "agentwire_coordinator_endpoints_dropped_total",
            "Endpoints dropped from nodes (duplicate, not unicast, or past the cap).",
            c.registry.endpoints_dropped,
        ),
        (
            "agentwire_coordinator_key_changes_total",
            "Agents that registered with a new WireGuard key.",
            c.registry.key_changes,
        ),
        (
            "agentwire_coordinator_revoked_total",
            "Streams closed because their token, agent, workspace or share was taken back.",
            c.registry.revoked,
        ),
    ] {
        line(&mut out, name, help, "counter", &one(v as f64));
    }
    let d = hub.derp().stats();
    line(
        &mut out,
        "agentwire_derp_clients",
        "Clients connected to the DERP relay.",
        "gauge",
        &one(d.clients as f64),
    );
    line(
        &mut out,
        "agentwire_derp_connections",
        "Connections open to the DERP relay, logged in or not (per-source and total caps apply).",
        "gauge",
        &one(d.conns as f64),
    );
    line(
        &mut out,
        "agentwire_derp_queued_bytes",
        "Bytes of packets queued for relay clients (charged to the global queue budget).",
        "gauge",
        &one(d.queued_bytes as f64),
    );
    line(
        &mut out,
        "agentwire_derp_packets_relayed_total",
        "Packets relayed.",
        "counter",
        &one(d.counters.packets_relayed as f64),
    );
    line(
        &mut out,
        "agentwire_derp_bytes_relayed_total",
        "Bytes relayed.",
        "counter",
        &one(d.counters.bytes_relayed as f64),
    );
    let drops: Vec<(String, f64)> = crate::proto::derp::server::DropReason::ALL
        .iter()
        .zip(d.counters.drops.iter())
        .map(|(r, n)| (format!("reason=\"{}\"", r.as_str()), *n as f64))
        .collect();
    line(
        &mut out,
        "agentwire_derp_drops_total",
        "Packets the relay dropped.",
        "counter",
        &drops,
    );
    line(
        &mut out,
        "agentwire_derp_mesh_links",
        "Mesh links logged in to peer relays.",
        "gauge",
        &one(d.mesh_links as f64),
    );
    line(
        &mut out,
        "agentwire_derp_mesh_forwarded_keys",
        "Keys connected to peer relays, reachable through a mesh link.",
        "gauge",
        &one(d.forwarded_keys as f64),
    );
    line(
        &mut out,
        "agentwire_derp_mesh_forwarded_packets_total",
        "Packets forwarded to peer relays (out) and accepted from them (in).",
        "counter",
        &[
            (
                "direction=\"out\"".to_owned(),
                d.counters.forwarded_out as f64,
            ),
            (
                "direction=\"in\"".to_owned(),
                d.counters.forwarded_in as f64,
            ),
        ],
    );
    if let Some(m) = hub.mesh_stats() {
        line(
            &mut out,
            "agentwire_derp_mesh_peers",
            "Peer relays the mesh keeps a link to (up or retrying).",
            "gauge",
            &one(m.peers as f64),
        );
    }
    render_stun(&mut out, hub);
    let responses: Vec<(String, f64)> = mcp
        .responses()
        .into_iter()
        .map(|(status, n)| (format!("status=\"{status}\""), n as f64))
        .collect();
    line(
        &mut out,
        "agentwire_mcp_responses_total",
        "MCP endpoint responses by HTTP status (rejected requests included).",
        "counter",
        &responses,
    );
    let (calls, errors) = mcp.tool_calls();
    line(
        &mut out,
        "agentwire_mcp_tool_calls_total",
        "Tool calls answered.",
        "counter",
        &one(calls as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_tool_errors_total",
        "Tool calls answered with a tool error.",
        "counter",
        &one(errors as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_tool_calls_in_flight",
        "Tool calls in progress, all users.",
        "gauge",
        &one(mcp.in_flight() as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_tool_calls_waiting",
        "Tool calls waiting for one of their user's in-flight slots, all users.",
        "gauge",
        &one(mcp.waiting() as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_user_limited_total",
        "Tool calls refused because their user had the maximum in flight and as many waiting, or none finished within the wait.",
        "counter",
        &one(mcp.user_limited() as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_user_large_reads_queued_total",
        "File reads that waited to be sent because their user had its most large reads in flight across all its workspaces.",
        "counter",
        &one(mcp.user_large_reads_queued() as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_user_queued_total",
        "Tool calls that waited for one of their user's in-flight slots.",
        "counter",
        &one(mcp.user_queued() as f64),
    );
    for m in hub.control.metrics() {
        line(&mut out, m.name, m.help, m.kind, &m.samples);
    }
    let (too_large, timed_out) = mcp.agent_replies_limited();
    line(
        &mut out,
        "agentwire_mcp_agent_replies_limited_total",
        "Tool calls failed at a limit on the agent's reply: longer than the call allows or of unannounced length (size), or not in time (time).",
        "counter",
        &[
            ("limit=\"size\"".to_string(), too_large as f64),
            ("limit=\"time\"".to_string(), timed_out as f64),
        ],
    );
    let pacing = agents.reply_pacing();
    let (waits, waited_us) = (pacing.waits, pacing.waited_us);
    line(
        &mut out,
        "agentwire_mcp_agent_reply_paced_total",
        "Times a reader of an agent's reply waited because that agent's replies were being read beyond its rate.",
        "counter",
        &one(waits as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_agent_reply_paced_seconds_total",
        "Time readers of agents' replies spent waiting for their agent's reply budget.",
        "counter",
        &one(waited_us as f64 / 1e6),
    );
    line(
        &mut out,
        "agentwire_mcp_agent_replies_broken_total",
        "Agent replies that broke a size limit, each putting (or keeping) its agent on probation: its replies read slowly and new calls admitted slowly.",
        "counter",
        &one(pacing.broken as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_agent_probation_refused_total",
        "Tool calls refused at once because their agent's probation would have held them too long.",
        "counter",
        &one(pacing.refused as f64),
    );
    line(
        &mut out,
        "agentwire_mcp_agent_large_reads_queued_total",
        "File reads that waited to be sent because their agent, answering large replies, had its most large reads in flight.",
        "counter",
        &one(pacing.large_waits as f64),
    );
    out
}

/// The metrics route.
pub fn router(
    hub: Arc<Hub>,
    tailnet: Arc<Tailnet>,
    mcp: Arc<McpStats>,
    agents: Arc<dyn crate::services::mcp::AgentProvider>,
    gate: MetricsGate,
) -> Router {
    let gate = Arc::new((gate, std::sync::atomic::AtomicU64::new(0)));
    Router::new().route(
        METRICS_PATH,
        get(move |headers: http::HeaderMap| {
            let (hub, tailnet, mcp, agents, gate) = (
                hub.clone(),
                tailnet.clone(),
                mcp.clone(),
                agents.clone(),
                gate.clone(),
            );
            async move {
                use axum::response::IntoResponse;
                let (gate, refused) = &*gate;
                if let Err(refusal) = gate.check(&headers) {
                    refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::debug!("metrics request refused");
                    return refusal.into_response();
                }
                let mut text = render(&hub, &tailnet, &mcp, &*agents).await;
                line(
                    &mut text,
                    "agentwire_metrics_refused_total",
                    "Requests for the metrics on this listener refused for want of the metrics token.",
                    "counter",
                    &one(refused.load(std::sync::atomic::Ordering::Relaxed) as f64),
                );
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    text,
                )
                    .into_response()
            }
        }),
    )
}

/// Who may read `/metrics` on a listener. The counters name no user or key, but they show
/// traffic and load, so on a listener the public can reach they need a token.
#[derive(Clone, Default)]
pub struct MetricsGate {
    /// Served to anyone: the listener is reachable from this host only, or it is the
    /// separate metrics listener the operator chose.
    pub open: bool,
    /// SHA-256 of the bearer token that opens the endpoint when it is not open.
    pub token_sha256: Option<[u8; 32]>,
}

impl std::fmt::Debug for MetricsGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsGate")
            .field("open", &self.open)
            .field("token", &self.token_sha256.map(|_| "<redacted>"))
            .finish()
    }
}

impl MetricsGate {
    /// A gate that opens for `token` (or for anyone when `open`).
    pub fn new(open: bool, token: Option<&str>) -> Self {
        Self {
            open,
            token_sha256: token.map(digest),
        }
    }

    fn check(&self, headers: &http::HeaderMap) -> Result<(), Refusal> {
        if self.open {
            return Ok(());
        }
        let Some(want) = &self.token_sha256 else {
            return Err((
                http::StatusCode::FORBIDDEN,
                [(http::header::CONTENT_TYPE, "text/plain")],
                "metrics are not served on this listener: use --metrics-listen or set AGENTWIRE_METRICS_TOKEN\n",
            ));
        };
        let given = super::control::bearer(headers).map(digest);
        // Digests of equal length compared in full: the time taken says nothing about
        // how much of the token matched.
        match given {
            Some(g) if g.iter().zip(want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0 => Ok(()),
            _ => Err((
                http::StatusCode::UNAUTHORIZED,
                [(
                    http::header::WWW_AUTHENTICATE,
                    "Bearer realm=\"agentwire-metrics\"",
                )],
                "the metrics token is required\n",
            )),
        }
    }
}

/// The answer to a request the gate turns away.
type Refusal = (
    http::StatusCode,
    [(http::HeaderName, &'static str); 1],
    &'static str,
);

fn digest(token: &str) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(token.as_bytes()).into()
}
