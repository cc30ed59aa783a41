//! The driver task: one task owns the WireGuard device and drives the netstack.
//!
//! Each wake drains everything that is ready, within a budget: UDP batches are
//! decrypted straight into pooled packet buffers, handed to the netstack under one lock,
//! smoltcp runs once, its output is encrypted outside the lock and sent back to back
//! (runs of equal-sized datagrams as one GSO send). When the UDP socket is full, the
//! driver stops taking packets from smoltcp, whose bounded device queue then holds data
//! back in the TCP buffers — backpressure all the way to the writer.

use super::clock;
use super::stack::Shared;
use super::udp::UdpTransport;
use crate::netstack::RxDrop;
use crate::proto::discovery::{Discovery, Report, StunServer};
use crate::proto::wg::fair::{Cut, FairShare, data_slot};
use crate::proto::wg::{
    Device, DeviceError, DropReason, PathAddr, PathInfo, PathSrc, PeerConfig, PeerStats,
    PingResult, Transmits,
};
use crate::wire::key::NodePublic;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Sleep;

/// Rounds of work per wake before yielding to other tasks.
const ROUND_BUDGET: usize = 32;
/// UDP batches read per round.
const RECV_BATCHES: usize = 4;
/// Packets taken from smoltcp per round while earlier datagrams are still unsent.
const MAX_PENDING_TX: usize = 1024;

/// Requests to the driver.
#[derive(Debug)]
pub(crate) enum Command {
    UpsertPeer(PeerConfig, oneshot::Sender<Result<(), DeviceError>>),
    RemovePeer(NodePublic, oneshot::Sender<bool>),
    PeerStats(
        NodePublic,
        oneshot::Sender<Option<(PeerStats, Option<PathAddr>)>>,
    ),
    Stats(oneshot::Sender<DriverStats>),
    /// Start a handshake with the peer now (a new one in place of one in flight if set).
    Initiate(NodePublic, bool),
    /// Reply once the peer has a session.
    AwaitSession(NodePublic, oneshot::Sender<()>),
    /// Stop: fail every socket and end the task.
    Shutdown,
    /// Forget direct paths and re-handshake every peer (after sleep/wake).
    Rehandshake,
    /// Discover our endpoints against these STUN servers (home region first).
    SetStunServers(Vec<StunServer>),
    /// Rediscover endpoints now (network change, wake).
    Rediscover,
    /// Our candidate endpoints, announced to peers in call-me-maybe messages.
    SetEndpoints(Vec<std::net::SocketAddr>),
    /// Ping a peer over its current path; the pong, if one comes.
    Ping(
        NodePublic,
        oneshot::Sender<Option<(PathAddr, oneshot::Receiver<PingResult>)>>,
    ),
    /// A peer's path, for diagnostics.
    PathInfo(NodePublic, oneshot::Sender<Option<PathInfo>>),
}

/// Device-level counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Datagrams received on the UDP socket.
    pub udp_rx_datagrams: u64,
    /// Datagrams sent on the UDP socket.
    pub udp_tx_datagrams: u64,
    /// `sendmsg` calls.
    pub udp_tx_calls: u64,
    /// Sends that failed with an error other than "would block".
    pub udp_tx_errors: u64,
    /// Datagrams for a path with no transport (such as DERP when none is attached).
    pub unroutable: u64,
    /// Drops by reason, as `(name, count)`.
    pub drops: Vec<(&'static str, u64)>,
    /// Configured peers.
    pub peers: usize,
    /// Handshake initiations from keys not yet programmed, held for a replay: now, and
    /// ever (see `proto::wg::held`).
    pub held_initiations: (usize, u64),
}

/// Sends datagrams whose path is a DERP region. Implemented by the DERP client set.
pub trait Relay: Send + 'static {
    /// Queues `packet` for `dst` through `region`; `false` if it was dropped.
    fn send(&mut self, region: u16, dst: NodePublic, packet: &[u8]) -> bool;
}

pub use super::derp::DerpInbound as RelayInbound;

pub(crate) struct Driver {
    shared: Arc<Shared>,
    device: Device,
    udp: UdpTransport,
    relay: Option<Box<dyn Relay>>,
    relay_rx: Option<mpsc::Receiver<RelayInbound>>,
    cmds: mpsc::Receiver<Command>,
    tx: Transmits,
    /// Datagrams of `tx` already sent.
    sent: usize,
    send_blocked: bool,
    /// Decrypted packets waiting for the netstack lock, and the peer slot each came from.
    rx_batch: Vec<Vec<u8>>,
    rx_slots: Vec<u32>,
    /// Empty packet buffers lent by the netstack.
    pool: Vec<Vec<u8>>,
    /// Packets taken from smoltcp, and buffers to give back.
    out_pkts: Vec<Vec<u8>>,
    spent: Vec<Vec<u8>>,
    big: Vec<u8>,
    timer: Pin<Box<Sleep>>,
    timer_at: Option<Instant>,
    stack_due: bool,
    stats: DriverStats,
    gso_max: usize,
    /// Callers waiting for a peer's first session.
    session_waiters: Vec<(NodePublic, oneshot::Sender<()>)>,
    /// Endpoint discovery over the WireGuard socket, and where its findings go.
    discovery: Discovery,
    discovered: tokio::sync::watch::Sender<Report>,
    /// Callers waiting for a pong.
    ping_waiters: Vec<(crate::wire::disco::TxId, oneshot::Sender<PingResult>)>,
    /// Each peer's share of decryption while the receive queue is backlogged.
    fair: FairShare,
}

impl Driver {
    pub(crate) fn new(
        shared: Arc<Shared>,
        device: Device,
        udp: UdpTransport,
        cmds: mpsc::Receiver<Command>,
        relay: Option<(Box<dyn Relay>, mpsc::Receiver<RelayInbound>)>,
        discovered: tokio::sync::watch::Sender<Report>,
    ) -> Self {
        let gso_max = udp.max_gso_segments().clamp(1, 64);
        let (relay, relay_rx) = match relay {
            Some((r, rx)) => (Some(r), Some(rx)),
            None => (None, None),
        };
        Self {
            shared,
            device,
            udp,
            relay,
            relay_rx,
            cmds,
            tx: Transmits::new(),
            sent: 0,
            send_blocked: false,
            rx_batch: Vec::new(),
            rx_slots: Vec::new(),
            pool: Vec::new(),
            out_pkts: Vec::new(),
            spent: Vec::new(),
            big: vec![0u8; crate::wire::wg::MAX_DATAGRAM + 64],
            timer: Box::pin(tokio::time::sleep(std::time::Duration::from_secs(3600))),
            timer_at: None,
            stack_due: true,
            stats: DriverStats::default(),
            gso_max,
            session_waiters: Vec::new(),
            discovery: Discovery::new(),
            discovered,
            ping_waiters: Vec::new(),
            fair: FairShare::default(),
        }
    }

    fn command(&mut self, c: Command) {
        let now = clock::now();
        match c {
            Command::UpsertPeer(cfg, reply) => {
                let key = cfg.public;
                let r = self.device.upsert_peer(cfg, now);
                if r.is_ok() {
                    let n = self.device.replay_held(&key, now, &mut self.tx);
                    if n > 0 {
                        tracing::debug!(peer = %key, held = n, "answered handshakes that came before the peer");
                    }
                }
                let _ = reply.send(r);
            }
            Command::RemovePeer(key, reply) => {
                let _ = reply.send(self.device.remove_peer(&key));
            }
            Command::PeerStats(key, reply) => {
                let _ = reply.send(self.device.peer_stats(&key, now));
            }
            Command::Stats(reply) => {
                let mut s = self.stats.clone();
                s.drops = DropReason::ALL
                    .iter()
                    .map(|r| (r.name(), self.device.drops()[*r as usize]))
                    .filter(|(_, n)| *n > 0)
                    .collect();
                s.peers = self.device.peer_count();
                s.held_initiations = self.device.held_initiations();
                let _ = reply.send(s);
            }
            Command::Initiate(key, force) => {
                self.device.initiate(&key, force, now, &mut self.tx);
            }
            Command::Shutdown => {}
            Command::Rehandshake => {
                self.discovery.rediscover(now);
                let n = self.device.rehandshake_all(now, &mut self.tx);
                tracing::debug!(peers = n, "re-handshaking after wake");
            }
            Command::SetStunServers(servers) => self.discovery.set_servers(servers, now),
            Command::Rediscover => self.discovery.rediscover(now),
            Command::SetEndpoints(eps) => self.device.set_endpoints(eps),
            Command::Ping(key, reply) => {
                let sent = self
                    .device
                    .ping(&key, now, &mut self.tx)
                    .map(|(txid, path)| {
                        let (tx, rx) = oneshot::channel();
                        self.ping_waiters.retain(|(_, w)| !w.is_closed());
                        self.ping_waiters.push((txid, tx));
                        (path, rx)
                    });
                let _ = reply.send(sent);
            }
            Command::PathInfo(key, reply) => {
                let _ = reply.send(self.device.path_info(&key, now));
            }
            Command::AwaitSession(key, reply) => {
                if self.device.has_session(&key) {
                    let _ = reply.send(());
                } else {
                    self.session_waiters.push((key, reply));
                }
            }
        }
    }

    /// Answers callers waiting for a session, and forgets those who gave up.
    fn check_sessions(&mut self) {
        if self.session_waiters.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.session_waiters.len() {
            let (key, tx) = &self.session_waiters[i];
            if tx.is_closed() {
                self.session_waiters.swap_remove(i);
            } else if self.device.has_session(key) {
                let (_, tx) = self.session_waiters.swap_remove(i);
                let _ = tx.send(());
            } else {
                i += 1;
            }
        }
    }

    /// Reads what the UDP socket and relays have. Returns datagrams read.
    fn receive(&mut self, cx: &mut Context<'_>, now: Instant) -> usize {
        let mut total = 0;
        // The window is backlogged if no read in it found the socket empty (with GRO one
        // read may carry dozens of datagrams, so a read's count says little).
        let mut full = true;
        self.fair.start_window(now);
        for _ in 0..RECV_BATCHES {
            let res = {
                let Self {
                    udp,
                    device,
                    tx,
                    pool,
                    rx_batch,
                    rx_slots,
                    big,
                    discovery,
                    fair,
                    ..
                } = self;
                udp.poll_recv(cx, |src, d| {
                    // STUN answers share the WireGuard socket (that is the point: they
                    // report its mapping); nothing else starts with the magic cookie.
                    if crate::wire::stun::is_stun(d) {
                        match crate::wire::stun::parse(d) {
                            Ok(m) if discovery.handle_response(src, &m, now) => {}
                            _ => device.count_drop(DropReason::Malformed),
                        }
                        return;
                    }
                    if !admit(fair, device, d) {
                        return;
                    }
                    let rx = (&mut *rx_batch, &mut *rx_slots);
                    ingest_into(device, tx, pool, rx, big, now, PathSrc::Udp(src), d);
                })
            };
            match res {
                Poll::Ready(Ok(n)) => {
                    total += n;
                    self.stats.udp_rx_datagrams += n as u64;
                }
                Poll::Ready(Err(e)) => {
                    tracing::debug!(error = %e, "udp receive error");
                    full = false;
                    break;
                }
                Poll::Pending => {
                    full = false;
                    break;
                }
            }
        }
        let Self {
            relay_rx,
            device,
            tx,
            pool,
            rx_batch,
            rx_slots,
            big,
            fair,
            ..
        } = self;
        if let Some(rx) = relay_rx.as_mut() {
            for _ in 0..256 {
                let Poll::Ready(Some(m)) = rx.poll_recv(cx) else {
                    break;
                };
                let src = PathSrc::Derp {
                    region: m.region,
                    key: m.src,
                };
                if admit(fair, device, &m.packet) {
                    let rx = (&mut *rx_batch, &mut *rx_slots);
                    ingest_into(device, tx, pool, rx, big, now, src, &m.packet);
                }
                total += 1;
            }
        }
        fair.end_window(full);
        total
    }

    /// Sends queued datagrams until done or the socket is full.
    fn flush(&mut self, cx: &mut Context<'_>) {
        let items = self.tx.items();
        let mut i = self.sent;
        while i < items.len() {
            let t = items[i];
            match t.path {
                PathAddr::Derp(region) => {
                    let ok = match self.relay.as_mut() {
                        Some(r) => r.send(region, t.peer, self.tx.bytes(&t)),
                        None => false,
                    };
                    if !ok {
                        self.stats.unroutable += 1;
                    }
                    i += 1;
                }
                PathAddr::Udp(dst) => {
                    // Gather a run of equal-sized, contiguous datagrams to the same place.
                    let seg = t.len;
                    let mut j = i + 1;
                    let mut end = t.start + t.len;
                    while j < items.len()
                        && j - i < self.gso_max
                        && items[j].path == t.path
                        && items[j].start == end
                        && items[j].len <= seg
                        && end + items[j].len - t.start <= 65000
                    {
                        end += items[j].len;
                        let last_short = items[j].len < seg;
                        j += 1;
                        if last_short {
                            break;
                        }
                    }
                    let contents = &self.tx.buffer()[t.start..end];
                    let segment = (j - i > 1).then_some(seg);
                    match self.udp.try_send(dst, contents, segment) {
                        Ok(()) => {
                            self.stats.udp_tx_calls += 1;
                            self.stats.udp_tx_datagrams += (j - i) as u64;
                            i = j;
                        }
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            if self.udp.poll_send_ready(cx).is_pending() {
                                self.send_blocked = true;
                                self.sent = i;
                                return;
                            }
                        }
                        Err(e) => {
                            self.stats.udp_tx_errors += 1;
                            tracing::debug!(error = %e, %dst, "udp send failed");
                            i = j;
                        }
                    }
                }
            }
        }
        self.send_blocked = false;
        self.sent = 0;
        self.tx.clear();
    }

    /// One netstack round under the lock. Returns packets taken for sending.
    fn stack_round(&mut self, cx: &mut Context<'_>, now: Instant) -> usize {
        let mut st = self.shared.lock();
        st.register_driver(cx.waker());
        let asked = st.take_needs_poll();
        if asked || !self.rx_batch.is_empty() || self.stack_due || st.has_transmits() {
            // Feed the bounded receive queue in slices, polling in between, so a large
            // GRO burst is processed rather than dropped at the queue.
            let fair = &mut self.fair;
            let mut judge = |slot: u32, r: Result<(), RxDrop>| {
                let wasted = matches!(r, Err(RxDrop::NoSocket | RxDrop::NotOurs));
                if let Some(change) = fair.decrypted(slot, wasted) {
                    tracing::debug!(slot, ?change, "a peer's decrypted traffic was judged");
                }
            };
            let mut pending = self
                .rx_batch
                .drain(..)
                .zip(self.rx_slots.drain(..))
                .peekable();
            loop {
                let room = st.rx_room().max(1);
                for (buf, slot) in pending.by_ref().take(room) {
                    judge(slot, st.receive_owned(buf, now));
                }
                st.poll(now);
                if pending.peek().is_none() || st.rx_room() == 0 {
                    break;
                }
            }
            // Whatever is left could not be taken (smoltcp is blocked on a full transmit
            // queue): drop it, counted, rather than buffer without bound.
            for (buf, slot) in pending {
                judge(slot, st.receive_owned(buf, now));
            }
        }
        let mut taken = 0;
        if !self.send_blocked && self.tx.len() < MAX_PENDING_TX {
            st.take_transmits(&mut self.out_pkts);
            taken = self.out_pkts.len();
        }
        st.recycle(&mut self.spent);
        if self.pool.len() < 64 {
            let want = 128 - self.pool.len();
            st.lend_buffers(&mut self.pool, want);
        }
        let at = st.poll_at(now);
        drop(st);
        self.stack_due = at.is_some_and(|t| t <= now);
        self.set_timer(at);
        taken
    }

    /// Runs endpoint discovery and hands out what pings and discovery produced.
    fn discover(&mut self, now: Instant) {
        if self.discovery.poll_timeout().is_some_and(|t| t <= now) {
            self.discovery.handle_timeout(now);
        }
        while let Some((to, bytes)) = self.discovery.poll_transmit() {
            self.tx
                .push(PathAddr::Udp(to), NodePublic::from_bytes([0; 32]), &bytes);
        }
        if self.discovery.poll_changed()
            || self.discovered.borrow().rounds != self.discovery.report().rounds
        {
            let report = self.discovery.report().clone();
            self.discovered.send_replace(report);
        }
        while let Some(r) = self.device.poll_ping_result() {
            if let Some(i) = self.ping_waiters.iter().position(|(t, _)| *t == r.txid) {
                let (_, w) = self.ping_waiters.swap_remove(i);
                let _ = w.send(r);
            }
        }
    }

    fn set_timer(&mut self, stack_at: Option<Instant>) {
        let wg_at = match (self.device.poll_timeout(), self.discovery.poll_timeout()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let at = match (stack_at, wg_at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.timer_at = at;
    }

    fn encrypt(&mut self, now: Instant) {
        for pkt in self.out_pkts.drain(..) {
            let _ = self.device.encapsulate(now, &pkt, &mut self.tx);
            self.spent.push(pkt);
        }
    }

    fn shutdown(&mut self) {
        self.shared.close();
    }
}

/// Whether a datagram may go on to decryption: only transport data is limited, by its
/// peer's fair share of a backlogged window and by the peer's standing.
fn admit(fair: &mut FairShare, device: &mut Device, d: &[u8]) -> bool {
    let Some(slot) = data_slot(d) else {
        return true;
    };
    match fair.admit(slot) {
        Ok(()) => return true,
        Err(Cut::OverShare) => device.count_drop(DropReason::FairShare),
        Err(Cut::Wasteful) => device.count_drop(DropReason::Wasteful),
    }
    false
}

#[allow(clippy::too_many_arguments)]
fn ingest_into(
    device: &mut Device,
    tx: &mut Transmits,
    pool: &mut Vec<Vec<u8>>,
    (rx_batch, rx_slots): (&mut Vec<Vec<u8>>, &mut Vec<u32>),
    big: &mut [u8],
    now: Instant,
    src: PathSrc,
    d: &[u8],
) {
    // Only transport data decrypts to a packet, and its receiver index names the slot.
    let slot = data_slot(d).unwrap_or(u32::MAX);
    let mut buf = pool.pop().unwrap_or_default();
    let need = d.len().max(crate::wire::wg::INITIATION_LEN);
    if need <= crate::netstack::device::PACKET_BUF {
        if buf.len() < need {
            buf.resize(crate::netstack::device::PACKET_BUF, 0);
        }
        match device.decapsulate(now, src, d, &mut buf, tx) {
            Ok(Some(n)) => {
                buf.truncate(n);
                rx_batch.push(buf);
                rx_slots.push(slot);
            }
            _ => pool.push(buf),
        }
    } else if let Ok(Some(n)) = device.decapsulate(now, src, d, big, tx) {
        buf.clear();
        buf.extend_from_slice(&big[..n]);
        rx_batch.push(buf);
        rx_slots.push(slot);
    } else {
        pool.push(buf);
    }
}

impl Future for Driver {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            match this.cmds.poll_recv(cx) {
                Poll::Ready(Some(Command::Shutdown)) => {
                    this.shutdown();
                    return Poll::Ready(());
                }
                Poll::Ready(Some(c)) => this.command(c),
                Poll::Ready(None) => {
                    this.shutdown();
                    return Poll::Ready(());
                }
                Poll::Pending => break,
            }
        }
        for _ in 0..ROUND_BUDGET {
            let now = clock::now();
            if !this.tx.is_empty() {
                this.flush(cx);
            }
            let received = this.receive(cx, now);
            if this.device.poll_timeout().is_some_and(|t| t <= now) {
                this.device.handle_timeout(now, &mut this.tx);
            }
            this.discover(now);
            let taken = this.stack_round(cx, now);
            this.encrypt(now);
            if received > 0 {
                this.check_sessions();
            }
            if !this.tx.is_empty() && !this.send_blocked {
                this.flush(cx);
            }
            if received == 0 && taken == 0 && (!this.stack_due || this.send_blocked) {
                // Nothing moved: arm the timer and sleep until something wakes us.
                if let Some(at) = this.timer_at {
                    let deadline = tokio::time::Instant::from_std(at);
                    if this.timer.deadline() != deadline {
                        this.timer.as_mut().reset(deadline);
                    }
                    if this.timer.as_mut().poll(cx).is_ready() {
                        continue;
                    }
                }
                return Poll::Pending;
            }
        }
        // Out of budget with work left: yield, and come straight back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}
