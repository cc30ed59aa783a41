//! Executes the home-region choice (`proto::home`): feeds it each discovery round's STUN
//! round trips, or, where UDP is blocked, TCP connect times to each region's relay (one
//! round trip, the path DERP traffic then takes), and moves the node's home when it says.

use super::Inner;
use super::manager::publish_self;
use crate::proto::discovery::Report;
use crate::proto::home::HomeChooser;
use crate::runtime::derp::connect::DerpUrl;
use crate::wire::derpmap::DerpMap;
use std::time::Duration;

/// A TCP latency probe gives up after this long (the region then did not answer).
const TCP_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// A chooser for `map`'s usable regions, starting from `home`.
pub(super) fn chooser_for(map: &DerpMap, home: Option<u16>) -> HomeChooser {
    let regions = map
        .regions
        .iter()
        .filter(|(_, r)| !r.avoid && r.derp_node().is_some())
        .map(|(id, _)| *id);
    HomeChooser::new(home, regions)
}

/// Connect time to each region's first DERP node, measured in parallel (regions that do
/// not answer within 2 s are left out).
pub async fn tcp_latencies(map: &DerpMap) -> Vec<(u16, Duration)> {
    let probes = map.regions.keys().filter_map(|id| {
        let dial = map.connect(*id).ok()?;
        let url = DerpUrl::parse(&dial.url)
            .ok()?
            .with_hints(dial.dial_ip, None, false);
        let id = *id;
        Some(async move {
            let start = crate::runtime::clock::now();
            let conn = tokio::time::timeout(
                TCP_PROBE_TIMEOUT,
                tokio::net::TcpStream::connect((url.dial_host.as_str(), url.port)),
            )
            .await;
            matches!(conn, Ok(Ok(_))).then(|| {
                (
                    id,
                    crate::runtime::clock::now().saturating_duration_since(start),
                )
            })
        })
    });
    futures_util::future::join_all(probes)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// After a discovery round: measure (from the report, or over TCP when no STUN answered),
/// and move home if the chooser says so. A configured home region is never moved.
pub(super) async fn on_report(inner: &Inner, report: &Report) {
    if inner.cfg.home_region.is_some() {
        return;
    }
    let map = inner.relay.map();
    let candidates = map
        .regions
        .values()
        .filter(|r| !r.avoid && r.derp_node().is_some())
        .count();
    if candidates < 2 {
        return;
    }
    let answers = if report.udp {
        report.latency.clone()
    } else {
        tcp_latencies(&map).await
    };
    let moved = {
        let mut st = inner.state();
        let moved = st.chooser.handle_round(&answers);
        if let Some(h) = moved {
            st.home = Some(h);
        }
        moved
    };
    if let Some(h) = moved {
        tracing::info!(
            region = h,
            ?answers,
            "home DERP region moved to the fastest"
        );
        inner.relay.set_map(map, Some(h));
        publish_self(inner);
    }
}
