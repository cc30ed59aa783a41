//! smoltcp over an in-memory IP device (MTU 1280).
//!
//! Owns the smoltcp `Interface`, its sockets, the device queues, listener accept
//! queues, ephemeral ports and the garbage collection of dropped sockets. It does no IO
//! and reads no clock: the runtime feeds packets in, takes packets out, and calls
//! [`Netstack::poll`] with `now`.
//!
//! Socket operations take a [`std::task::Context`] and register wakers with smoltcp, so
//! the runtime's stream types are thin `AsyncRead`/`AsyncWrite` shims. An operation that
//! gives smoltcp new work (data written, window opened, a close) marks the stack as
//! needing a poll and wakes the driver's registered waker.

mod autotune;
pub mod device;
mod listen;
mod tcp;
mod udp;

pub use listen::ListenerId;
pub use tcp::TcpError;
pub use udp::UdpError;

use device::VirtualDevice;
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::task::Waker;
use std::time::{Duration, Instant};

/// The tunnel MTU. Tailscale's safe TUN MTU: leaves room for WireGuard, UDP and IPv6
/// headers inside a 1360-byte path.
pub const MTU: usize = 1280;

/// Sizes and limits.
///
/// TCP buffers start at 1 MiB each way: ~80 Mbit/s per stream at 100 ms RTT (~670 grown
/// to 8 MiB), and line rate on loopback. The memory is reserved, not touched, until data
/// flows, so thousands of mostly idle connections cost little. A connection whose buffer holds it back (a
/// bulk transfer on a long or lossy path) grows it, up to 8 MiB each way, out of a
/// growth budget shared by the whole netstack (see `autotune.rs`). Buffers of 2 MiB or
/// more can be backed by transparent huge pages, which commit 2 MiB at the first byte
/// written: raise the starting sizes only for a few high-bandwidth, high-latency streams.
#[derive(Debug, Clone)]
pub struct NetstackConfig {
    /// Our tunnel addresses.
    pub addresses: Vec<IpAddr>,
    /// TCP receive buffer per connection, bytes.
    pub tcp_rx_buffer: usize,
    /// TCP send buffer per connection, bytes.
    pub tcp_tx_buffer: usize,
    /// Largest size a connection's receive buffer may grow to (at or below
    /// `tcp_rx_buffer`: it never grows). Sets the window scale of every connection.
    pub tcp_rx_buffer_max: usize,
    /// Largest size a connection's send buffer may grow to.
    pub tcp_tx_buffer_max: usize,
    /// Bytes all connections together may add to their buffers by growing; a socket's
    /// share returns when it is freed.
    pub tcp_growth_budget: usize,
    /// Lower bound of TCP's retransmission timeout once the round trip is measured
    /// (Linux: 200 ms; RFC 6298 and unpatched smoltcp: 1 s). The first RTO stays 1 s.
    pub tcp_min_rto: Duration,
    /// Tail loss probes: a segment not acknowledged within two smoothed round trips is
    /// sent again before the RTO (see `third_party/smoltcp/PATCHES.md`).
    pub tcp_tail_loss_probe: bool,
    /// A loss cuts TCP's congestion window no lower than the estimated bandwidth-delay
    /// product (delivery rate times the smallest RTT), as TCP Westwood+ does: random loss
    /// on a lossy path no longer shrinks the window below what the path carries, while a
    /// queue the flow filled still gets drained (see `third_party/smoltcp/PATCHES.md`).
    pub tcp_loss_rate_floor: bool,
    /// TCP spreads a window's segments over the round trip (1.25 windows per smoothed
    /// RTT) instead of sending them in one burst when an ACK opens it; applies on paths
    /// whose smallest RTT is a few milliseconds or more (see `third_party/smoltcp/PATCHES.md`).
    pub tcp_pacing: bool,
    /// UDP buffer per socket, bytes (each direction).
    pub udp_buffer: usize,
    /// UDP datagrams queued per socket (each direction).
    pub udp_packets: usize,
    /// Packets queued in each direction between the netstack and WireGuard.
    pub queue_packets: usize,
    /// Established connections waiting in a listener's accept queue.
    pub listen_backlog: usize,
    /// How long a dropped, gracefully closing connection may linger before it is reset.
    pub linger: Duration,
    /// Connections we dial probe a silent peer this often (a TCP keep-alive)...
    pub dial_keepalive: Option<Duration>,
    /// ...and are aborted when the peer has sent nothing for this long: a peer that
    /// vanished (killed, frozen, unplugged) fails its callers in seconds, not at their own
    /// timeouts. Also bounds how long a SYN goes unanswered.
    pub dial_dead_after: Option<Duration>,
}

impl Default for NetstackConfig {
    fn default() -> Self {
        Self {
            addresses: Vec::new(),
            tcp_rx_buffer: 1 << 20,
            tcp_tx_buffer: 1 << 20,
            tcp_rx_buffer_max: 8 << 20,
            tcp_tx_buffer_max: 8 << 20,
            tcp_growth_budget: 128 << 20,
            tcp_min_rto: Duration::from_millis(200),
            tcp_tail_loss_probe: true,
            tcp_loss_rate_floor: true,
            tcp_pacing: true,
            udp_buffer: 256 << 10,
            udp_packets: 256,
            queue_packets: 1024,
            listen_backlog: 1024,
            linger: Duration::from_secs(30),
            dial_keepalive: Some(Duration::from_secs(1)),
            dial_dead_after: Some(Duration::from_millis(4500)),
        }
    }
}

/// Errors configuring the netstack.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NetstackError {
    /// An interface address is not a unicast address.
    #[error("interface address {0} is not unicast")]
    BadAddress(IpAddr),
    /// More addresses than the interface supports.
    #[error("at most 4 interface addresses are supported")]
    TooManyAddresses,
}

/// Why a decrypted packet was not queued for smoltcp.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RxDrop {
    /// The receive queue was full.
    QueueFull,
    /// Its source held more than its share of a busy queue.
    FairShare,
    /// UDP to one of our addresses at a port nothing is bound to.
    NoSocket,
    /// Unicast to an address that is not ours (smoltcp would drop it unanswered).
    NotOurs,
    /// A connection attempt a full listener refused.
    Refused,
}

/// Counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetstackStats {
    /// Packets handed to smoltcp.
    pub rx_packets: u64,
    /// Packets smoltcp produced.
    pub tx_packets: u64,
    /// Incoming packets dropped because the receive queue was full.
    pub rx_queue_full: u64,
    /// Incoming packets dropped because their source held its share of a busy queue.
    pub rx_fair_share: u64,
    /// Incoming UDP packets dropped because no socket is bound to their port.
    pub rx_no_socket: u64,
    /// Incoming unicast packets dropped because their destination is not our address.
    pub rx_not_ours: u64,
    /// SYNs dropped because a listener's backlog was full.
    pub syn_backlog_full: u64,
    /// Open TCP sockets (any state).
    pub tcp_sockets: usize,
    /// Open UDP sockets.
    pub udp_sockets: usize,
    /// Dropped connections still closing.
    pub lingering: usize,
    /// Times a connection's TCP buffer grew (either way).
    pub tcp_buffers_grown: u64,
    /// Times a buffer would have grown but the growth budget was spent.
    pub tcp_growth_refused: u64,
    /// Bytes live connections' buffers hold beyond their starting size.
    pub tcp_grown_bytes: usize,
}

/// One TCP socket, for diagnostics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpSocketInfo {
    /// TCP state name.
    pub state: String,
    /// Local endpoint, if bound.
    pub local: Option<std::net::SocketAddr>,
    /// Remote endpoint, if connected.
    pub remote: Option<std::net::SocketAddr>,
    /// Bytes written but not yet acknowledged.
    pub send_queue: usize,
    /// Bytes received but not yet read.
    pub recv_queue: usize,
}

/// The netstack. See the module docs.
pub struct Netstack {
    epoch: Instant,
    iface: Interface,
    sockets: SocketSet<'static>,
    dev: VirtualDevice,
    config: NetstackConfig,
    listeners: listen::Listeners,
    /// Local ports of dialled sockets, to pick unused ephemeral ports.
    dial_ports: HashMap<SocketHandle, u16>,
    used_ports: HashSet<u16>,
    next_port: u16,
    /// Dropped sockets still closing, with the time they are reset regardless.
    lingering: Vec<(SocketHandle, Instant)>,
    driver: Option<Waker>,
    needs_poll: bool,
    stats: NetstackStats,
    udp_ports: HashSet<u16>,
    growth: autotune::Budget,
}

impl std::fmt::Debug for Netstack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Netstack")
            .field("addresses", &self.config.addresses)
            .finish()
    }
}

const EPHEMERAL: std::ops::RangeInclusive<u16> = 49152..=65535;
/// How long an aborted socket may wait for room to send its RST before it is freed anyway.
pub(crate) const RESET_SEND_LIMIT: Duration = Duration::from_secs(5);

impl Netstack {
    /// A netstack with the given addresses. `seed` randomises TCP sequence numbers and
    /// must differ between runs.
    ///
    /// # Errors
    /// [`NetstackError`] for a non-unicast address or too many addresses.
    pub fn new(config: NetstackConfig, now: Instant, seed: u64) -> Result<Self, NetstackError> {
        if config.addresses.len() > 4 {
            return Err(NetstackError::TooManyAddresses);
        }
        for a in &config.addresses {
            let ok = match a {
                IpAddr::V4(v) => !v.is_unspecified() && !v.is_multicast() && !v.is_broadcast(),
                IpAddr::V6(v) => !v.is_unspecified() && !v.is_multicast(),
            };
            if !ok {
                return Err(NetstackError::BadAddress(*a));
            }
        }
        let mut dev = VirtualDevice::new(MTU, config.queue_packets.max(16));
        let mut cfg = Config::new(HardwareAddress::Ip);
        cfg.random_seed = seed;
        let mut iface = Interface::new(cfg, &mut dev, smoltcp::time::Instant::from_micros(0));
        iface.update_ip_addrs(|addrs| {
            for a in &config.addresses {
                let len = if a.is_ipv4() { 32 } else { 128 };
                // Capacity was checked above.
                let _ = addrs.push(IpCidr::new(IpAddress::from(*a), len));
            }
        });
        // Everything not on-link goes to the tunnel; WireGuard's allowed IPs decide
        // which peer, if any, takes it. Medium::Ip needs no neighbour, so routing via our
        // own address works as "out the only interface".
        for a in &config.addresses {
            match a {
                IpAddr::V4(v) => {
                    let _ = iface.routes_mut().add_default_ipv4_route(*v);
                }
                IpAddr::V6(v) => {
                    let _ = iface.routes_mut().add_default_ipv6_route(*v);
                }
            }
        }
        let next_port =
            EPHEMERAL.start() + (seed % u64::from(EPHEMERAL.end() - EPHEMERAL.start())) as u16;
        let growth = autotune::Budget::new(config.tcp_growth_budget);
        Ok(Self {
            epoch: now,
            iface,
            sockets: SocketSet::new(Vec::new()),
            dev,
            config,
            listeners: listen::Listeners::default(),
            dial_ports: HashMap::new(),
            used_ports: HashSet::new(),
            next_port,
            lingering: Vec::new(),
            driver: None,
            needs_poll: false,
            stats: NetstackStats::default(),
            udp_ports: HashSet::new(),
            growth,
        })
    }

    fn ts(&self, now: Instant) -> smoltcp::time::Instant {
        smoltcp::time::Instant::from_micros(
            now.saturating_duration_since(self.epoch).as_micros() as i64
        )
    }

    /// The interface addresses.
    pub fn addresses(&self) -> &[IpAddr] {
        &self.config.addresses
    }

    /// The configuration in force.
    pub fn config(&self) -> &NetstackConfig {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> NetstackStats {
        let mut s = self.stats.clone();
        s.tcp_sockets = 0;
        s.udp_sockets = 0;
        for (_, sock) in self.sockets.iter() {
            match sock {
                smoltcp::socket::Socket::Tcp(_) => s.tcp_sockets += 1,
                smoltcp::socket::Socket::Udp(_) => s.udp_sockets += 1,
            }
        }
        s.lingering = self.lingering.len();
        s.tcp_grown_bytes = self.growth.used();
        s
    }

    /// Every TCP socket's state and queues.
    pub fn tcp_sockets(&self) -> Vec<TcpSocketInfo> {
        self.sockets
            .iter()
            .filter_map(|(_, s)| match s {
                smoltcp::socket::Socket::Tcp(t) => Some(TcpSocketInfo {
                    state: t.state().to_string(),
                    local: t.local_endpoint().map(Into::into),
                    remote: t.remote_endpoint().map(Into::into),
                    send_queue: t.send_queue(),
                    recv_queue: t.recv_queue(),
                }),
                _ => None,
            })
            .collect()
    }

    /// Registers the driver's waker: it is woken when the stack needs a poll.
    pub fn register_driver(&mut self, waker: &Waker) {
        match &self.driver {
            Some(w) if w.will_wake(waker) => {}
            _ => self.driver = Some(waker.clone()),
        }
    }

    /// Whether an operation asked for a poll since the last call; clears the flag.
    pub fn take_needs_poll(&mut self) -> bool {
        std::mem::take(&mut self.needs_poll)
    }

    fn wake_driver(&mut self) {
        if !self.needs_poll {
            self.needs_poll = true;
            if let Some(w) = &self.driver {
                w.wake_by_ref();
            }
        }
    }

    /// Room left in the receive queue.
    pub fn rx_room(&self) -> usize {
        self.dev.rx_limit.saturating_sub(self.dev.rx.len())
    }

    /// Queues one decrypted IP packet for smoltcp. Returns `false` (and counts it) if the
    /// packet was dropped: the queue is full, its source is over its fair share, it is UDP
    /// to a port nothing listens on, or it is a SYN a full listener refuses.
    pub fn receive(&mut self, pkt: &[u8], now: Instant) -> bool {
        let Some(src) = self.rx_gate(pkt, now) else {
            return false;
        };
        let b = self.dev.buffer_from(pkt);
        self.dev.push_rx(b, src);
        self.stats.rx_packets += 1;
        true
    }

    /// Queues one decrypted IP packet held in a pooled buffer (no copy). On drop the
    /// buffer goes back to the pool and the reason is returned, so the driver can tell
    /// a peer whose traffic is addressed to nothing from one that met a full queue.
    pub fn receive_owned(&mut self, buf: Vec<u8>, now: Instant) -> Result<(), RxDrop> {
        let src = match self.rx_gate_why(&buf, now) {
            Ok(src) => src,
            Err(why) => {
                self.dev.give_back(buf);
                return Err(why);
            }
        };
        self.dev.push_rx(buf, src);
        self.stats.rx_packets += 1;
        Ok(())
    }

    /// Decides whether `pkt` may be queued; the source to charge it to if so.
    ///
    /// The receive queue is shared by every peer. Its last quarter is kept for sources that
    /// hold less than a quarter of it: a peer flooding the tunnel loses its own packets, not
    /// its neighbours' (whose TCP would otherwise stall in retransmission backoff), while a
    /// peer alone on a busy stack still has three quarters of the queue. UDP to a port no socket is bound to is dropped here, before smoltcp
    /// would spend an ICMP reply on it, and so is unicast for an address that is not ours.
    fn rx_gate(&mut self, pkt: &[u8], now: Instant) -> Option<Option<IpAddr>> {
        self.rx_gate_why(pkt, now).ok()
    }

    fn rx_gate_why(&mut self, pkt: &[u8], now: Instant) -> Result<Option<IpAddr>, RxDrop> {
        let limit = self.dev.rx_limit;
        if self.dev.rx.len() >= limit {
            self.stats.rx_queue_full += 1;
            return Err(RxDrop::QueueFull);
        }
        // Not an IP packet we can read: smoltcp will drop it, counted as its own.
        let Ok(ip) = crate::wire::ip::IpPeek::parse(pkt) else {
            return Ok(None);
        };
        let busy = self.dev.rx.len() >= limit - limit / 4;
        if busy && self.dev.queued_from(&ip.src) >= (limit / 4).max(1) {
            self.stats.rx_fair_share += 1;
            return Err(RxDrop::FairShare);
        }
        if !self.config.addresses.contains(&ip.dst) {
            let unicast = match ip.dst {
                IpAddr::V4(a) => !a.is_multicast() && !a.is_broadcast(),
                IpAddr::V6(a) => !a.is_multicast(),
            };
            if unicast {
                self.stats.rx_not_ours += 1;
                return Err(RxDrop::NotOurs);
            }
        } else if ip.protocol == 17 {
            let port = pkt
                .get(ip.transport_offset + 2..ip.transport_offset + 4)
                .map(|b| u16::from_be_bytes([b[0], b[1]]));
            if port.is_some_and(|p| !self.udp_ports.contains(&p)) {
                self.stats.rx_no_socket += 1;
                return Err(RxDrop::NoSocket);
            }
        }
        if !self.admit(pkt, &ip, now) {
            return Err(RxDrop::Refused);
        }
        Ok(Some(ip.src))
    }

    /// Lends up to `n` pooled packet buffers (allocating when the pool is empty).
    pub fn lend_buffers(&mut self, out: &mut Vec<Vec<u8>>, n: usize) {
        for _ in 0..n {
            out.push(
                self.dev
                    .free
                    .pop()
                    .unwrap_or_else(|| Vec::with_capacity(device::PACKET_BUF)),
            );
        }
    }

    /// Aborts every connection and listener: the tunnel is going away. Wakes every
    /// waiting task so nothing hangs on a stack that will never be polled again.
    pub fn close_all(&mut self) {
        for (_, s) in self.sockets.iter_mut() {
            match s {
                smoltcp::socket::Socket::Tcp(t) => t.abort(),
                smoltcp::socket::Socket::Udp(u) => u.close(),
            }
        }
        self.listeners.wake_all();
    }

    /// Resets every TCP connection to `remote`. For when the peer behind that address is
    /// gone for good (it left, or came back as a new incarnation that knows none of our
    /// connections): a request already sent on one would otherwise wait for an answer that
    /// can never come. Returns how many were reset.
    pub fn reset_remote(&mut self, remote: IpAddr) -> usize {
        let mut n = 0;
        for (_, s) in self.sockets.iter_mut() {
            if let smoltcp::socket::Socket::Tcp(t) = s
                && t.remote_endpoint()
                    .is_some_and(|ep| IpAddr::from(ep.addr) == remote)
            {
                t.abort();
                n += 1;
            }
        }
        if n > 0 {
            self.wake_driver();
        }
        n
    }

    /// Runs smoltcp: all queued ingress, then egress, then listener and socket upkeep.
    /// Returns whether any socket's state may have changed.
    pub fn poll(&mut self, now: Instant) -> bool {
        let ts = self.ts(now);
        let before = self.dev.tx.len();
        let changed = self.iface.poll(ts, &mut self.dev, &mut self.sockets)
            == smoltcp::iface::PollResult::SocketStateChanged;
        self.stats.tx_packets += self.dev.tx.len().saturating_sub(before) as u64;
        self.dev.recycle_spent();
        let drained = self.dev.rx.is_empty();
        self.listeners.upkeep(&mut self.sockets, drained);
        self.collect_lingering(now);
        changed
    }

    /// Moves every packet smoltcp produced into `out` (swapping buffers, no copies).
    pub fn take_transmits(&mut self, out: &mut Vec<Vec<u8>>) {
        out.extend(self.dev.tx.drain(..));
    }

    /// Whether packets are waiting to be taken.
    pub fn has_transmits(&self) -> bool {
        !self.dev.tx.is_empty()
    }

    /// Returns packet buffers the runtime is done with to the pool.
    pub fn recycle(&mut self, bufs: &mut Vec<Vec<u8>>) {
        self.dev.recycle(bufs);
    }

    /// When smoltcp next needs a poll (retransmits, delayed ACKs, keepalives), or `None`.
    pub fn poll_at(&mut self, now: Instant) -> Option<Instant> {
        let ts = self.ts(now);
        let at = self.iface.poll_at(ts, &self.sockets)?;
        let micros = u64::try_from(at.total_micros()).unwrap_or(0);
        let mut t = self.epoch + Duration::from_micros(micros);
        if let Some(&(_, deadline)) = self.lingering.iter().min_by_key(|(_, d)| *d) {
            t = t.min(deadline);
        }
        Some(t)
    }

    fn alloc_port(&mut self) -> Option<u16> {
        let span = u32::from(EPHEMERAL.end() - EPHEMERAL.start()) + 1;
        for _ in 0..span {
            let p = self.next_port;
            self.next_port = if p == *EPHEMERAL.end() {
                *EPHEMERAL.start()
            } else {
                p + 1
            };
            if !self.used_ports.contains(&p) && !self.listeners.has_port(p) {
                self.used_ports.insert(p);
                return Some(p);
            }
        }
        None
    }

    fn free_socket(&mut self, h: SocketHandle) {
        if let Some(p) = self.dial_ports.remove(&h) {
            self.used_ports.remove(&p);
        }
        self.growth.release(h);
        self.sockets.remove(h);
    }

    fn collect_lingering(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.lingering.len() {
            let (h, deadline) = self.lingering[i];
            let sock = self.sockets.get::<smoltcp::socket::tcp::Socket>(h);
            let state = sock.state();
            use smoltcp::socket::tcp::State;
            // An aborted socket keeps its peer until its RST leaves; freed before that (the
            // transmit queue was full), the peer would never hear of it and an idle peer
            // would wait on the connection until its own timeouts.
            let reset_pending = state == State::Closed && sock.remote_endpoint().is_some();
            let done = match state {
                State::TimeWait => true,
                State::Closed => !reset_pending || now >= deadline,
                _ => false,
            };
            if done {
                self.lingering.swap_remove(i);
                self.free_socket(h);
                continue;
            }
            // Data arriving after the application let go will never be read: reset, as a
            // kernel does. Otherwise a peer that keeps sending (an endless reply the
            // client stopped reading) fills the receive buffer of every connection it was
            // cut from, and holds it for the whole linger time.
            if !reset_pending && (now >= deadline || sock.recv_queue() > 0) {
                self.sockets
                    .get_mut::<smoltcp::socket::tcp::Socket>(h)
                    .abort();
                self.lingering[i].1 = now + RESET_SEND_LIMIT;
                self.needs_poll = true;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod growth_tests;
#[cfg(test)]
mod recovery_tests;
#[cfg(test)]
mod tests;
