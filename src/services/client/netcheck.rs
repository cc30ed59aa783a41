//! `agentwire netcheck`: what this machine's network allows, measured against the
//! server's relays: UDP at all, the reflexive addresses, whether the NAT maps per
//! destination, latency per region, the region a node here would call home.
//!
//! One discovery round (`proto::discovery`, the machine every node runs) from a fresh
//! UDP socket, plus TCP connect times to every relay (what DERP's own traffic costs
//! where UDP is blocked).

use crate::proto::discovery::{Discovery, ROUND_TIMEOUT, Report};
use crate::proto::home::HomeChooser;
use crate::runtime::clock;
use crate::runtime::tailnet::{stun_servers, tcp_latencies};
use crate::wire::derpmap::DerpMap;
use crate::wire::stun;
use serde::Serialize;
use std::time::Duration;

/// What netcheck found.
#[derive(Debug, Clone, Serialize)]
pub struct Netcheck {
    /// A STUN server answered over UDP.
    pub udp: bool,
    /// Our public address(es) as STUN servers saw them.
    pub reflexive: Vec<String>,
    /// Whether two servers saw different mappings (`None`: fewer than two answered).
    pub mapping_varies: Option<bool>,
    /// Regions: id, name, STUN round trip, TCP connect time (milliseconds).
    pub regions: Vec<RegionCheck>,
    /// The region a node here would pick as home.
    pub preferred_region: Option<u16>,
}

/// One region's figures.
#[derive(Debug, Clone, Serialize)]
pub struct RegionCheck {
    /// Region id.
    pub id: u16,
    /// Its name in the map.
    pub name: String,
    /// STUN round trip, if its server answered.
    pub stun_ms: Option<f64>,
    /// TCP connect time to its relay, if it answered.
    pub tcp_ms: Option<f64>,
}

/// Errors running netcheck.
#[derive(Debug, thiserror::Error)]
pub enum NetcheckError {
    /// The local UDP socket could not be opened.
    #[error("opening a UDP socket: {0}")]
    Socket(#[from] std::io::Error),
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// One discovery round over a fresh socket, driven until it reports.
async fn stun_round(map: &DerpMap) -> Result<Report, NetcheckError> {
    let servers = stun_servers(map, None).await;
    let sock = tokio::net::UdpSocket::bind(("0.0.0.0", 0)).await?;
    let mut d = Discovery::new();
    if servers.is_empty() {
        return Ok(Report::default());
    }
    d.set_servers(servers, clock::now());
    let give_up = clock::now() + ROUND_TIMEOUT + Duration::from_secs(1);
    let mut buf = vec![0u8; 1500];
    loop {
        let now = clock::now();
        d.handle_timeout(now);
        while let Some((to, bytes)) = d.poll_transmit() {
            let _ = sock.send_to(&bytes, to).await;
        }
        if d.report().rounds >= 1 || now >= give_up {
            return Ok(d.report().clone());
        }
        let wake = d.poll_timeout().unwrap_or(give_up).min(give_up);
        let sleep = tokio::time::sleep_until(tokio::time::Instant::from_std(wake));
        tokio::select! {
            r = sock.recv_from(&mut buf) => {
                if let Ok((n, from)) = r
                    && let Ok(m) = stun::parse(&buf[..n])
                {
                    d.handle_response(from, &m, clock::now());
                }
            }
            () = sleep => {}
        }
    }
}

/// Runs the checks against `map`.
///
/// # Errors
/// [`NetcheckError`].
pub async fn run(map: &DerpMap) -> Result<Netcheck, NetcheckError> {
    let (report, tcp) = tokio::join!(stun_round(map), tcp_latencies(map));
    let report = report?;
    let mut chooser = HomeChooser::new(None, map.regions.keys().copied());
    let answers = if report.udp {
        report.latency.clone()
    } else {
        tcp.clone()
    };
    chooser.handle_round(&answers);
    let regions = map
        .regions
        .iter()
        .map(|(id, r)| RegionCheck {
            id: *id,
            name: r.region_name.clone(),
            stun_ms: report
                .latency
                .iter()
                .find(|(x, _)| x == id)
                .map(|(_, d)| ms(*d)),
            tcp_ms: tcp.iter().find(|(x, _)| x == id).map(|(_, d)| ms(*d)),
        })
        .collect();
    Ok(Netcheck {
        udp: report.udp,
        reflexive: report.reflexive.iter().map(ToString::to_string).collect(),
        mapping_varies: report.mapping_varies,
        regions,
        preferred_region: chooser.home(),
    })
}

/// The report for people.
pub fn render(n: &Netcheck) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "Report:");
    let _ = writeln!(out, "  * UDP: {}", n.udp);
    let _ = writeln!(
        out,
        "  * Public address: {}",
        if n.reflexive.is_empty() {
            "(unknown)".into()
        } else {
            n.reflexive.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  * Mapping varies by destination: {}",
        match n.mapping_varies {
            Some(true) => "yes (direct paths through this NAT are unlikely)",
            Some(false) => "no",
            None => "unknown (needs two STUN servers)",
        }
    );
    let _ = writeln!(
        out,
        "  * Preferred DERP region: {}",
        n.preferred_region
            .map_or_else(|| "none".into(), |r| r.to_string())
    );
    let _ = writeln!(out, "  * Region latencies:");
    for r in &n.regions {
        let f = |v: Option<f64>| v.map_or_else(|| "-".into(), |v| format!("{v} ms"));
        let _ = writeln!(
            out,
            "    - {} ({}): stun {}, tcp {}",
            r.id,
            r.name,
            f(r.stun_ms),
            f(r.tcp_ms)
        );
    }
    out
}
