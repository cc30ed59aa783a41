//! Endpoint discovery: STUN binding requests from the WireGuard socket to the relays'
//! STUN servers, which tell a node the address its NAT maps that socket to.
//!
//! One round asks every server (the home region first), retransmitting twice, and ends
//! when all have answered or [`ROUND_TIMEOUT`] passes. From a round:
//! - the reflexive addresses (distinct mapped addresses seen),
//! - whether UDP works at all (any answer),
//! - whether the mapping varies by destination (two servers saw different ports: a
//!   port-randomising NAT, where the addresses are no use to peers),
//! - each region's round trip (for choosing the home region).
//!
//! Rounds repeat every [`REFRESH`] and at once on [`Discovery::rediscover`] (network
//! change, wake). Responses are matched by transaction id and server address, so an
//! off-path sender cannot inject a mapped address without guessing 96 random bits.

use crate::wire::stun;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How often endpoints are rediscovered.
pub const REFRESH: Duration = Duration::from_secs(30);
/// A round gives up on servers that have not answered after this long.
pub const ROUND_TIMEOUT: Duration = Duration::from_millis(1500);
/// Retransmission times after the first request.
const RETRIES: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(750)];
/// The most servers asked per round.
const MAX_SERVERS: usize = 8;

/// A STUN server of a DERP region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunServer {
    /// The region it belongs to.
    pub region: u16,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// What the last complete round found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Any server answered.
    pub udp: bool,
    /// Distinct mapped addresses, in server order.
    pub reflexive: Vec<SocketAddr>,
    /// Two servers saw different mappings (`None` with fewer than two answers).
    pub mapping_varies: Option<bool>,
    /// Round trip per region that answered, fastest answer per region.
    pub latency: Vec<(u16, Duration)>,
    /// Rounds completed.
    pub rounds: u64,
}

#[derive(Debug)]
struct Probe {
    server: StunServer,
    txid: stun::TxId,
    first_sent: Instant,
    sent: usize,
    answer: Option<(SocketAddr, Duration)>,
}

/// The discovery state machine. Inputs: [`Discovery::set_servers`],
/// [`Discovery::handle_response`], [`Discovery::handle_timeout`],
/// [`Discovery::rediscover`]; outputs: [`Discovery::poll_transmit`],
/// [`Discovery::poll_timeout`], [`Discovery::poll_changed`].
#[derive(Debug, Default)]
pub struct Discovery {
    servers: Vec<StunServer>,
    probes: Vec<Probe>,
    round_started: Option<Instant>,
    next_round: Option<Instant>,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    report: Report,
    changed: bool,
}

impl Discovery {
    /// A machine with no servers (it does nothing until given some).
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces the servers (home region first) and starts a round at once if they
    /// changed.
    pub fn set_servers(&mut self, mut servers: Vec<StunServer>, now: Instant) {
        servers.truncate(MAX_SERVERS);
        if servers == self.servers {
            return;
        }
        self.servers = servers;
        self.probes.clear();
        self.round_started = None;
        self.next_round = (!self.servers.is_empty()).then_some(now);
    }

    /// Starts a round now (after a network change or wake).
    pub fn rediscover(&mut self, now: Instant) {
        if !self.servers.is_empty() {
            self.probes.clear();
            self.round_started = None;
            self.next_round = Some(now);
        }
    }

    /// The last complete round's findings.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// Whether the reflexive addresses or UDP reachability changed since last asked.
    pub fn poll_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The next request to send from the WireGuard socket.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// When [`Discovery::handle_timeout`] should next run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match self.round_started {
            Some(start) => {
                let next_retry = self
                    .probes
                    .iter()
                    .filter(|p| p.answer.is_none())
                    .filter_map(|p| RETRIES.get(p.sent - 1).map(|d| p.first_sent + *d))
                    .min();
                let end = start + ROUND_TIMEOUT;
                Some(next_retry.map_or(end, |r| r.min(end)))
            }
            None => self.next_round,
        }
    }

    /// Starts rounds, retransmits and ends rounds that are due.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.round_started.is_none() {
            if self.next_round.is_some_and(|t| now >= t) {
                self.start_round(now);
            }
            return;
        }
        for p in self.probes.iter_mut().filter(|p| p.answer.is_none()) {
            if RETRIES
                .get(p.sent - 1)
                .is_some_and(|d| now >= p.first_sent + *d)
            {
                p.sent += 1;
                self.out
                    .push_back((p.server.addr, stun::binding_request(&p.txid)));
            }
        }
        if self.round_started.is_some_and(|s| now >= s + ROUND_TIMEOUT) {
            self.finish_round(now);
        }
    }

    fn start_round(&mut self, now: Instant) {
        self.round_started = Some(now);
        self.next_round = None;
        self.probes = self
            .servers
            .iter()
            .map(|s| Probe {
                server: *s,
                txid: rand::random(),
                first_sent: now,
                sent: 1,
                answer: None,
            })
            .collect();
        for p in &self.probes {
            self.out
                .push_back((p.server.addr, stun::binding_request(&p.txid)));
        }
    }

    /// A STUN message that arrived on the WireGuard socket from `from`. Returns whether
    /// it answered one of our requests.
    pub fn handle_response(&mut self, from: SocketAddr, msg: &stun::Message, now: Instant) -> bool {
        let stun::Message::BindingSuccess {
            txid,
            mapped: Some(mapped),
        } = msg
        else {
            return false;
        };
        let Some(p) = self
            .probes
            .iter_mut()
            .find(|p| p.txid == *txid && p.server.addr == from && p.answer.is_none())
        else {
            return false;
        };
        p.answer = Some((*mapped, now.saturating_duration_since(p.first_sent)));
        if self.probes.iter().all(|p| p.answer.is_some()) {
            self.finish_round(now);
        }
        true
    }

    fn finish_round(&mut self, now: Instant) {
        let mut report = Report {
            rounds: self.report.rounds + 1,
            ..Report::default()
        };
        let answers: Vec<(StunServer, SocketAddr, Duration)> = self
            .probes
            .iter()
            .filter_map(|p| p.answer.map(|(m, rtt)| (p.server, m, rtt)))
            .collect();
        report.udp = !answers.is_empty();
        for (s, mapped, rtt) in &answers {
            if !report.reflexive.contains(mapped) {
                report.reflexive.push(*mapped);
            }
            match report.latency.iter_mut().find(|(r, _)| *r == s.region) {
                Some((_, best)) => *best = (*best).min(*rtt),
                None => report.latency.push((s.region, *rtt)),
            }
        }
        // Only servers at different addresses can reveal a per-destination mapping.
        let mut distinct_servers: Vec<SocketAddr> =
            answers.iter().map(|(s, _, _)| s.addr).collect();
        distinct_servers.dedup();
        report.mapping_varies = (distinct_servers.len() >= 2).then(|| {
            let v4: Vec<&SocketAddr> = report.reflexive.iter().filter(|a| a.is_ipv4()).collect();
            let v6: Vec<&SocketAddr> = report.reflexive.iter().filter(|a| a.is_ipv6()).collect();
            v4.len() > 1 || v6.len() > 1
        });
        if report.reflexive != self.report.reflexive || report.udp != self.report.udp {
            self.changed = true;
        }
        self.report = report;
        self.probes.clear();
        self.round_started = None;
        self.next_round = Some(now + REFRESH);
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn txid_of(req: &[u8]) -> stun::TxId {
        match stun::parse(req).unwrap() {
            stun::Message::BindingRequest { txid } => txid,
            other => panic!("not a request: {other:?}"),
        }
    }

    fn servers() -> Vec<StunServer> {
        vec![
            StunServer {
                region: 1,
                addr: addr("192.0.2.10:3478"),
            },
            StunServer {
                region: 2,
                addr: addr("192.0.2.20:3478"),
            },
        ]
    }

    #[test]
    fn a_round_finds_the_mapping_and_repeats() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        assert_eq!(d.poll_timeout(), None);
        d.set_servers(servers(), t0);
        d.handle_timeout(t0);
        let reqs: Vec<_> = std::iter::from_fn(|| d.poll_transmit()).collect();
        assert_eq!(reqs.len(), 2);
        let mapped = addr("198.51.100.1:5000");
        for (i, (to, req)) in reqs.iter().enumerate() {
            let ok = stun::Message::BindingSuccess {
                txid: txid_of(req),
                mapped: Some(mapped),
            };
            // A response from the wrong server is ignored.
            assert!(!d.handle_response(addr("192.0.2.99:3478"), &ok, t0));
            assert!(d.handle_response(*to, &ok, t0 + Duration::from_millis(10 * (i as u64 + 1))));
        }
        assert!(d.poll_changed());
        assert!(!d.poll_changed());
        let r = d.report();
        assert!(r.udp);
        assert_eq!(r.reflexive, vec![mapped]);
        assert_eq!(r.mapping_varies, Some(false));
        assert_eq!(
            r.latency,
            vec![
                (1, Duration::from_millis(10)),
                (2, Duration::from_millis(20))
            ]
        );
        assert_eq!(
            d.poll_timeout(),
            Some(t0 + Duration::from_millis(20) + REFRESH)
        );
        // The next round starts on time; the same answer is no change.
        let t1 = t0 + Duration::from_millis(20) + REFRESH;
        d.handle_timeout(t1);
        let reqs: Vec<_> = std::iter::from_fn(|| d.poll_transmit()).collect();
        for (to, req) in &reqs {
            let ok = stun::Message::BindingSuccess {
                txid: txid_of(req),
                mapped: Some(mapped),
            };
            d.handle_response(*to, &ok, t1);
        }
        assert!(!d.poll_changed());
        assert_eq!(d.report().rounds, 2);
    }

    #[test]
    fn retransmits_then_gives_up_and_reports_udp_blocked() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        d.set_servers(servers()[..1].to_vec(), t0);
        d.handle_timeout(t0);
        assert!(d.poll_transmit().is_some());
        assert_eq!(d.poll_timeout(), Some(t0 + RETRIES[0]));
        d.handle_timeout(t0 + RETRIES[0]);
        assert!(d.poll_transmit().is_some());
        d.handle_timeout(t0 + RETRIES[1]);
        assert!(d.poll_transmit().is_some());
        assert_eq!(d.poll_timeout(), Some(t0 + ROUND_TIMEOUT));
        d.handle_timeout(t0 + ROUND_TIMEOUT);
        assert!(d.poll_transmit().is_none());
        let r = d.report();
        assert!(!r.udp && r.reflexive.is_empty() && r.mapping_varies.is_none());
        assert_eq!(r.rounds, 1);
        // A wake starts a round at once.
        d.rediscover(t0 + Duration::from_secs(2));
        assert_eq!(d.poll_timeout(), Some(t0 + Duration::from_secs(2)));
    }

    #[test]
    fn different_ports_per_server_mean_the_mapping_varies() {
        let t0 = Instant::now();
        let mut d = Discovery::new();
        d.set_servers(servers(), t0);
        d.handle_timeout(t0);
        let reqs: Vec<_> = std::iter::from_fn(|| d.poll_transmit()).collect();
        for (i, (to, req)) in reqs.iter().enumerate() {
            let mapped = SocketAddr::from(([198, 51, 100, 1], 5000 + i as u16));
            let ok = stun::Message::BindingSuccess {
                txid: txid_of(req),
                mapped: Some(mapped),
            };
            assert!(d.handle_response(*to, &ok, t0));
        }
        assert_eq!(d.report().mapping_varies, Some(true));
        assert_eq!(d.report().reflexive.len(), 2);
        // Replays of answered requests are not ours any more.
        let ok = stun::Message::BindingSuccess {
            txid: txid_of(&reqs[0].1),
            mapped: Some(addr("203.0.113.1:1")),
        };
        assert!(!d.handle_response(reqs[0].0, &ok, t0));
    }
}
