//! The relay's STUN server (RFC 5389 binding only): answers a binding request with the
//! address it came from, which is how a node behind a NAT learns the public address of
//! its WireGuard socket.
//!
//! One task owns the UDP socket. Datagrams that are not a valid binding request (other
//! traffic, malformed STUN, responses, other methods) are counted and dropped. Valid
//! requests pass a per-source rate limit first: a STUN answer goes to whatever source
//! address the request names, so without a limit the server would reflect a spoofed
//! flood at its victim. Answers that the socket cannot take at once are dropped rather
//! than queued; the client retries.
//!
//! The rate table is bounded (see [`StunConfig::max_sources`]): a flood from spoofed
//! sources recycles the table instead of growing it, at the cost of forgetting how much
//! of its burst a source had used.

use crate::runtime::clock;
use crate::wire::stun;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;

pub use crate::wire::stun::DEFAULT_PORT;

/// Rate-limit settings of a [`StunServer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StunConfig {
    /// Binding requests per second one source may have answered, sustained. A node asks
    /// a few times per path check, so the default 20 leaves room for many nodes behind
    /// one NAT.
    pub rate_per_sec: u32,
    /// Requests one source may have answered back to back before the rate applies.
    pub burst: u32,
    /// Sources whose rate is tracked at once. Beyond it the table starts over in halves,
    /// so its memory stays bounded whatever the number of (spoofed) sources.
    pub max_sources: usize,
}

impl Default for StunConfig {
    fn default() -> Self {
        Self {
            rate_per_sec: 20,
            burst: 40,
            max_sources: 16_384,
        }
    }
}

/// A snapshot of a STUN server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StunStats {
    /// Valid binding requests received (answered or rate limited).
    pub requests: u64,
    /// Binding success responses sent.
    pub responses: u64,
    /// Datagrams dropped for not being a valid binding request.
    pub malformed: u64,
    /// Binding requests dropped by the per-source rate limit.
    pub rate_limited: u64,
}

/// A STUN server's live counters, shared with whoever reports them (`/metrics`).
#[derive(Debug, Default)]
pub struct StunCounters {
    requests: AtomicU64,
    responses: AtomicU64,
    malformed: AtomicU64,
    rate_limited: AtomicU64,
}

impl StunCounters {
    /// The counters now.
    pub fn snapshot(&self) -> StunStats {
        StunStats {
            requests: self.requests.load(Ordering::Relaxed),
            responses: self.responses.load(Ordering::Relaxed),
            malformed: self.malformed.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
        }
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A running STUN server. Dropping it stops the task (and closes the socket);
/// [`StunServer::shutdown`] also waits for that.
#[derive(Debug)]
pub struct StunServer {
    local: SocketAddr,
    counters: Arc<StunCounters>,
    cancel: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl StunServer {
    /// Binds `addr` and serves with the default rate limit until dropped.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind(addr: SocketAddr) -> std::io::Result<Self> {
        Self::bind_with(addr, StunConfig::default()).await
    }

    /// Binds `addr` and serves with `config` until dropped.
    ///
    /// # Errors
    /// The bind error.
    pub async fn bind_with(addr: SocketAddr, config: StunConfig) -> std::io::Result<Self> {
        Self::from_socket(UdpSocket::bind(addr).await?, config)
    }

    /// Serves on an already bound socket. Must be called within a tokio runtime.
    ///
    /// # Errors
    /// The socket has no local address.
    pub fn from_socket(socket: UdpSocket, config: StunConfig) -> std::io::Result<Self> {
        let local = socket.local_addr()?;
        let counters = Arc::new(StunCounters::default());
        let cancel = CancellationToken::new();
        let task = tokio::spawn(serve(
            socket,
            Limiter::new(config),
            counters.clone(),
            cancel.clone(),
        ));
        tracing::info!(%local, "STUN server listening");
        Ok(Self {
            local,
            counters,
            cancel,
            task: Some(task),
        })
    }

    /// Where it listens.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Its counters now.
    pub fn stats(&self) -> StunStats {
        self.counters.snapshot()
    }

    /// Its live counters, to report after the handle has moved.
    pub fn counters(&self) -> &Arc<StunCounters> {
        &self.counters
    }

    /// Stops the task and waits until the socket is closed.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

async fn serve(
    socket: UdpSocket,
    mut limiter: Limiter,
    counters: Arc<StunCounters>,
    cancel: CancellationToken,
) {
    // Larger datagrams are truncated to this, which no valid request survives: its
    // length field no longer matches.
    let mut buf = vec![0u8; 1536];
    loop {
        let (n, from) = tokio::select! {
            () = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => match r {
                Ok(v) => v,
                Err(e) => {
                    // Nothing a STUN server receives should fail; if the socket keeps
                    // failing, do not spin on it.
                    tracing::debug!(error = %e, "STUN receive error");
                    tokio::select! {
                        () = cancel.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(10)) => continue,
                    }
                }
            },
        };
        let Some(d) = buf.get(..n) else { continue };
        let Ok(stun::Message::BindingRequest { txid }) = stun::parse(d) else {
            bump(&counters.malformed);
            continue;
        };
        bump(&counters.requests);
        // A dual-stack socket sees IPv4 clients as ::ffff:a.b.c.d; they are told (and
        // limited as) the IPv4 address they have.
        let seen = SocketAddr::new(from.ip().to_canonical(), from.port());
        if !limiter.allow(seen.ip(), clock::now()) {
            bump(&counters.rate_limited);
            continue;
        }
        match socket.try_send_to(&stun::binding_response(&txid, seen), from) {
            Ok(_) => bump(&counters.responses),
            Err(e) => tracing::debug!(error = %e, %from, "STUN answer dropped"),
        }
    }
}

/// Per-source rate limits, as a generic cell rate algorithm: each source has one
/// "theoretical arrival time" that moves `interval` ahead per answered request; a request
/// is answered while that time is at most `tolerance` (the burst) ahead of now.
///
/// Two generations bound the table: sources go into `current`; when it holds half the
/// limit it becomes `previous` (dropping the old `previous`), and a source seen again is
/// moved back. A source dropped this way starts over with a full burst; to reach that, a
/// flood needs `max_sources / 2` other sources in between.
struct Limiter {
    interval: Duration,
    tolerance: Duration,
    half: usize,
    current: HashMap<IpAddr, Instant>,
    previous: HashMap<IpAddr, Instant>,
}

impl Limiter {
    fn new(c: StunConfig) -> Self {
        let interval = Duration::from_secs(1) / c.rate_per_sec.max(1);
        Self {
            interval,
            tolerance: interval * c.burst.max(1).saturating_sub(1),
            half: (c.max_sources / 2).max(1),
            current: HashMap::new(),
            previous: HashMap::new(),
        }
    }

    /// The key a source is limited by. One IPv6 host usually holds a whole /64, so a /64
    /// counts as one source.
    fn key(ip: IpAddr) -> IpAddr {
        match ip.to_canonical() {
            IpAddr::V6(v6) => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
            v4 => v4,
        }
    }

    fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let key = Self::key(ip);
        let tat = self
            .current
            .get(&key)
            .copied()
            .or_else(|| self.previous.remove(&key))
            .map_or(now, |t| t.max(now));
        let ok = tat <= now + self.tolerance;
        self.current
            .insert(key, if ok { tat + self.interval } else { tat });
        if self.current.len() >= self.half {
            self.previous = std::mem::take(&mut self.current);
        }
        ok
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(2);

    async fn ask(
        client: &UdpSocket,
        server: SocketAddr,
        txid: stun::TxId,
    ) -> Option<stun::Message> {
        client
            .send_to(&stun::binding_request(&txid), server)
            .await
            .ok()?;
        let mut buf = [0u8; 512];
        let (n, _) = tokio::time::timeout(WAIT, client.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        stun::parse(&buf[..n]).ok()
    }

    async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
        for _ in 0..200 {
            if cond() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("timed out waiting for {what}");
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address")
    }

    #[tokio::test]
    async fn answers_with_the_source_address() {
        let server = StunServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        let got = ask(&a, server.local_addr(), [1; 12]).await;
        assert_eq!(
            got,
            Some(stun::Message::BindingSuccess {
                txid: [1; 12],
                mapped: Some(a.local_addr().expect("addr"))
            })
        );
        assert_eq!(
            server.stats(),
            StunStats {
                requests: 1,
                responses: 1,
                ..StunStats::default()
            }
        );
        // IPv6, and IPv4 through a dual-stack socket, where the host has them.
        let Ok(v6) = StunServer::bind("[::]:0".parse().expect("addr")).await else {
            return;
        };
        let port = v6.local_addr().port();
        if let Ok(b) = UdpSocket::bind("[::1]:0").await {
            let got = ask(&b, SocketAddr::from((Ipv6Addr::LOCALHOST, port)), [2; 12]).await;
            let want = b.local_addr().expect("addr");
            assert!(
                matches!(got, Some(stun::Message::BindingSuccess { mapped: Some(m), .. }) if m == want),
                "{got:?}"
            );
        }
        let got = ask(&a, SocketAddr::from(([127, 0, 0, 1], port)), [3; 12]).await;
        if let Some(stun::Message::BindingSuccess { mapped, .. }) = got {
            assert_eq!(mapped, Some(a.local_addr().expect("addr")), "not ::ffff:");
        }
    }

    #[tokio::test]
    async fn garbage_is_counted_and_the_server_keeps_serving() {
        let server = StunServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let to = server.local_addr();
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        let response = stun::binding_response(&[1; 12], to);
        let request = stun::binding_request(&[1; 12]);
        let mut bad_fingerprint = request.clone();
        bad_fingerprint[30] ^= 1;
        let huge = [0u8; 4000];
        for d in [
            &b"not stun at all"[..],
            &[][..],
            &response,
            &request[..request.len() - 4],
            &bad_fingerprint,
            &huge,
        ] {
            a.send_to(d, to).await.expect("send");
        }
        let got = ask(&a, to, [2; 12]).await;
        assert_eq!(
            got,
            Some(stun::Message::BindingSuccess {
                txid: [2; 12],
                mapped: Some(a.local_addr().expect("addr"))
            }),
            "still serving"
        );
        // Datagrams are handled in order, so the garbage was counted before the answer.
        assert_eq!(
            server.stats(),
            StunStats {
                requests: 1,
                responses: 1,
                malformed: 6,
                rate_limited: 0
            }
        );
    }

    #[tokio::test]
    async fn a_flood_is_limited_per_source() {
        let config = StunConfig {
            rate_per_sec: 1,
            burst: 5,
            ..StunConfig::default()
        };
        let server = StunServer::bind_with("127.0.0.1:0".parse().expect("addr"), config)
            .await
            .expect("bind");
        let to = server.local_addr();
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind client");
        let started = clock::now();
        for i in 0..50u8 {
            a.send_to(&stun::binding_request(&[i; 12]), to)
                .await
                .expect("send");
        }
        eventually("the flood counted", || server.stats().requests == 50).await;
        let s = server.stats();
        // The burst, plus one per second the flood took to arrive.
        let refill = clock::now().duration_since(started).as_secs() + 1;
        assert!(s.responses >= 5 && s.responses <= 5 + refill, "{s:?}");
        assert_eq!(s.rate_limited, 50 - s.responses, "{s:?}");
        // Another source is answered meanwhile (all of 127/8 is loopback on Linux).
        match UdpSocket::bind("127.0.0.2:0").await {
            Ok(b) => {
                let got = ask(&b, to, [99; 12]).await;
                let want = b.local_addr().expect("addr");
                assert!(
                    matches!(got, Some(stun::Message::BindingSuccess { mapped: Some(m), .. }) if m == want),
                    "{got:?}"
                );
            }
            Err(e) => eprintln!("skipping the second source: {e}"),
        }
    }

    #[tokio::test]
    async fn shutdown_and_drop_close_the_socket() {
        let server = StunServer::bind("127.0.0.1:0".parse().expect("addr"))
            .await
            .expect("bind");
        let at = server.local_addr();
        server.shutdown().await;
        let again = StunServer::bind(at)
            .await
            .expect("port free after shutdown");
        drop(again);
        let mut rebound = None;
        for _ in 0..200 {
            if let Ok(s) = UdpSocket::bind(at).await {
                rebound = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(rebound.is_some(), "port still held after drop");
    }

    #[test]
    fn limiter_burst_then_rate() {
        let mut l = Limiter::new(StunConfig::default());
        let t0 = clock::now();
        let a = ip("198.51.100.1");
        for i in 0..40 {
            assert!(l.allow(a, t0), "request {i} of the burst");
        }
        assert!(!l.allow(a, t0));
        // Refused requests do not use up the refill.
        for _ in 0..100 {
            assert!(!l.allow(a, t0 + Duration::from_millis(49)));
        }
        assert!(l.allow(a, t0 + Duration::from_millis(50)));
        assert!(!l.allow(a, t0 + Duration::from_millis(50)));
        // Another source has its own burst.
        assert!(l.allow(ip("198.51.100.2"), t0));
        // An idle second refills 20.
        let t1 = t0 + Duration::from_millis(1050);
        let n = (0..100).filter(|_| l.allow(a, t1)).count();
        assert_eq!(n, 20);
        // After a long idle, the burst again, not more.
        let t2 = t0 + Duration::from_secs(3600);
        let n = (0..100).filter(|_| l.allow(a, t2)).count();
        assert_eq!(n, 40);
    }

    #[test]
    fn limiter_keys_by_ipv4_and_ipv6_slash_64() {
        let mut l = Limiter::new(StunConfig {
            rate_per_sec: 1,
            burst: 1,
            ..StunConfig::default()
        });
        let t0 = clock::now();
        assert!(l.allow(ip("2001:db8:1:2::1"), t0));
        assert!(!l.allow(ip("2001:db8:1:2:ffff::9"), t0), "same /64");
        assert!(l.allow(ip("2001:db8:1:3::1"), t0));
        assert!(l.allow(ip("192.0.2.1"), t0));
        assert!(
            !l.allow(ip("::ffff:192.0.2.1"), t0),
            "mapped is the IPv4 source"
        );
        assert!(
            l.allow(ip("::ffff:192.0.2.2"), t0),
            "not one /64 for all of IPv4"
        );
    }

    #[test]
    fn limiter_table_is_bounded() {
        let max = 1000;
        let mut l = Limiter::new(StunConfig {
            max_sources: max,
            ..StunConfig::default()
        });
        let t0 = clock::now();
        let flooder = ip("203.0.113.1");
        for _ in 0..40 {
            l.allow(flooder, t0);
        }
        assert!(!l.allow(flooder, t0));
        for i in 0..100_000u32 {
            assert!(l.allow(IpAddr::from(i.to_be_bytes()), t0));
            assert!(l.len() <= max);
            // A source that keeps sending keeps its place.
            if i % 100 == 0 {
                assert!(!l.allow(flooder, t0), "forgotten after {i} sources");
            }
        }
    }
}
