//! `Tunnel`: a WireGuard device, a netstack and a UDP socket driven by one task.
//!
//! This is the packet core every node is built on: `agentwire forward` uses it with
//! wg-quick style peers, and the shared `Tailnet` adds DERP and the coordinator.

use super::clock;
use super::datagram::UdpSocket;
use super::driver::{Command, Driver, DriverStats, Relay, RelayInbound};
use super::stack::Shared;
use super::stream::{TcpListener, TcpStream};
use super::udp::UdpTransport;
use crate::netstack::{Netstack, NetstackConfig, NetstackError, NetstackStats};
use crate::proto::discovery::{Report, StunServer};
use crate::proto::wg::{
    Device, DeviceError, PathAddr, PathInfo, PeerConfig, PeerStats, PingResult,
};
use crate::wire::key::{NodePrivate, NodePublic};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Everything a tunnel needs to start.
#[derive(Debug, Clone)]
pub struct TunnelConfig {
    /// Our static key.
    pub private: NodePrivate,
    /// Netstack addresses and buffer sizes.
    pub netstack: NetstackConfig,
    /// Where the UDP socket binds (port 0 picks one).
    pub listen: SocketAddr,
    /// Initial peers.
    pub peers: Vec<PeerConfig>,
}

/// Errors starting a tunnel.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// The UDP socket could not be bound.
    #[error("binding UDP {addr}: {source}")]
    Bind {
        /// The address tried.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
    },
    /// The netstack configuration is invalid.
    #[error(transparent)]
    Netstack(#[from] NetstackError),
    /// A peer is invalid.
    #[error(transparent)]
    Peer(#[from] DeviceError),
    /// The driver task is gone (the tunnel was shut down).
    #[error("tunnel is shut down")]
    Closed,
}

/// Counters for the whole tunnel.
#[derive(Debug, Clone, Default)]
pub struct TunnelStats {
    /// Device and UDP counters.
    pub driver: DriverStats,
    /// Netstack counters.
    pub netstack: NetstackStats,
}

/// A running tunnel. Cheap operations go straight to the netstack; peer changes go to the
/// driver task. Dropping the tunnel stops the driver and fails every open socket.
#[derive(Debug)]
pub struct Tunnel {
    shared: Arc<Shared>,
    cmds: mpsc::Sender<Command>,
    task: Option<JoinHandle<()>>,
    local_udp: SocketAddr,
    public: NodePublic,
    discovered: tokio::sync::watch::Receiver<Report>,
}

impl Tunnel {
    /// Binds the UDP socket and starts the driver on the current tokio runtime.
    ///
    /// # Errors
    /// [`TunnelError`] for a bind failure or invalid configuration.
    pub fn start(cfg: TunnelConfig) -> Result<Self, TunnelError> {
        Self::start_with_relay(cfg, None)
    }

    /// Like [`Tunnel::start`], with a relay for peers reached through DERP.
    ///
    /// # Errors
    /// [`TunnelError`] for a bind failure or invalid configuration.
    pub fn start_with_relay(
        cfg: TunnelConfig,
        relay: Option<(Box<dyn Relay>, mpsc::Receiver<RelayInbound>)>,
    ) -> Result<Self, TunnelError> {
        super::alloc::pin_mmap_threshold();
        let now = clock::now();
        let udp = UdpTransport::bind(cfg.listen).map_err(|source| TunnelError::Bind {
            addr: cfg.listen,
            source,
        })?;
        let local_udp = udp.local_addr();
        let stack = Netstack::new(cfg.netstack, now, rand::random())?;
        let mut device = Device::new(cfg.private.clone());
        for p in cfg.peers {
            device.upsert_peer(p, now)?;
        }
        let shared = Arc::new(Shared::new(stack));
        let (tx, rx) = mpsc::channel(64);
        let (disc_tx, discovered) = tokio::sync::watch::channel(Report::default());
        let driver = Driver::new(shared.clone(), device, udp, rx, relay, disc_tx);
        let task = tokio::spawn(driver);
        Ok(Self {
            shared,
            cmds: tx,
            task: Some(task),
            local_udp,
            public: cfg.private.public(),
            discovered,
        })
    }

    /// Our public key.
    pub fn public(&self) -> NodePublic {
        self.public
    }

    /// The UDP socket's bound address.
    pub fn local_udp_addr(&self) -> SocketAddr {
        self.local_udp
    }

    /// Our tunnel addresses.
    pub fn addresses(&self) -> Vec<std::net::IpAddr> {
        self.shared.lock().addresses().to_vec()
    }

    /// Connects to `addr` through the tunnel. No timeout of its own: wrap it.
    ///
    /// # Errors
    /// See [`TcpStream`]: refused, unreachable, no ports, shut down.
    pub async fn dial_tcp(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        TcpStream::connect(self.shared.clone(), addr).await
    }

    /// Listens on `port` of our tunnel addresses.
    ///
    /// # Errors
    /// `AddrInUse` if taken.
    pub fn listen_tcp(&self, port: u16) -> io::Result<TcpListener> {
        TcpListener::bind(self.shared.clone(), port)
    }

    /// Listens on every port at or above `min_port` without a listener of its own.
    ///
    /// # Errors
    /// `AddrInUse` if a wildcard listener exists.
    pub fn listen_tcp_any(&self, min_port: u16) -> io::Result<TcpListener> {
        TcpListener::bind_any(self.shared.clone(), min_port)
    }

    /// Binds a UDP socket on `port` (0 picks one).
    ///
    /// # Errors
    /// `AddrInUse` if taken.
    pub fn bind_udp(&self, port: u16) -> io::Result<UdpSocket> {
        UdpSocket::bind(self.shared.clone(), port)
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, TunnelError> {
        let (tx, rx) = oneshot::channel();
        self.cmds
            .send(make(tx))
            .await
            .map_err(|_| TunnelError::Closed)?;
        rx.await.map_err(|_| TunnelError::Closed)
    }

    /// Adds or updates a peer while traffic flows.
    ///
    /// # Errors
    /// [`TunnelError::Peer`] for an invalid peer, [`TunnelError::Closed`].
    pub async fn upsert_peer(&self, peer: PeerConfig) -> Result<(), TunnelError> {
        Ok(self.ask(|r| Command::UpsertPeer(peer, r)).await??)
    }

    /// Removes a peer. Returns whether it existed.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn remove_peer(&self, key: NodePublic) -> Result<bool, TunnelError> {
        self.ask(|r| Command::RemovePeer(key, r)).await
    }

    /// A peer's counters and current path.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn peer_stats(
        &self,
        key: NodePublic,
    ) -> Result<Option<(PeerStats, Option<PathAddr>)>, TunnelError> {
        self.ask(|r| Command::PeerStats(key, r)).await
    }

    /// Starts a handshake with the peer now if it has no session and, unless `force`,
    /// none is in flight (`force` begins a new one in place of an unanswered one).
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn initiate(&self, key: NodePublic, force: bool) -> Result<(), TunnelError> {
        self.cmds
            .send(Command::Initiate(key, force))
            .await
            .map_err(|_| TunnelError::Closed)
    }

    /// Forgets learned direct paths and re-handshakes every peer with a session: after a
    /// sleep or network change.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn rehandshake_all(&self) -> Result<(), TunnelError> {
        self.cmds
            .send(Command::Rehandshake)
            .await
            .map_err(|_| TunnelError::Closed)
    }

    async fn tell(&self, c: Command) -> Result<(), TunnelError> {
        self.cmds.send(c).await.map_err(|_| TunnelError::Closed)
    }

    /// Discovers our endpoints against these STUN servers (home region first), from the
    /// tunnel's own UDP socket.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn set_stun_servers(&self, servers: Vec<StunServer>) -> Result<(), TunnelError> {
        self.tell(Command::SetStunServers(servers)).await
    }

    /// Rediscovers endpoints now (after a network change).
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn rediscover(&self) -> Result<(), TunnelError> {
        self.tell(Command::Rediscover).await
    }

    /// What endpoint discovery found; changes after every round.
    pub fn discovery(&self) -> tokio::sync::watch::Receiver<Report> {
        self.discovered.clone()
    }

    /// Sets our candidate endpoints, announced to peers when they are probed.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn set_endpoints(&self, endpoints: Vec<SocketAddr>) -> Result<(), TunnelError> {
        self.tell(Command::SetEndpoints(endpoints)).await
    }

    /// Pings a peer over its current path and waits up to `timeout` for the pong.
    /// Returns the path the ping took and the answer, `None` for an unknown or
    /// unreachable peer.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn ping(
        &self,
        key: NodePublic,
        timeout: std::time::Duration,
    ) -> Result<Option<(PathAddr, Option<PingResult>)>, TunnelError> {
        let Some((path, rx)) = self.ask(|r| Command::Ping(key, r)).await? else {
            return Ok(None);
        };
        let pong = tokio::time::timeout(timeout, rx)
            .await
            .ok()
            .and_then(Result::ok);
        Ok(Some((path, pong)))
    }

    /// A peer's path: current choice, candidates and their round trips.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn path_info(&self, key: NodePublic) -> Result<Option<PathInfo>, TunnelError> {
        self.ask(|r| Command::PathInfo(key, r)).await
    }

    /// Waits until the peer has a session (a completed handshake).
    ///
    /// # Errors
    /// [`TunnelError::Closed`] if the tunnel shuts down first.
    pub async fn await_session(&self, key: NodePublic) -> Result<(), TunnelError> {
        self.ask(|r| Command::AwaitSession(key, r)).await
    }

    /// Counters for the whole tunnel.
    ///
    /// # Errors
    /// [`TunnelError::Closed`].
    pub async fn stats(&self) -> Result<TunnelStats, TunnelError> {
        let driver = self.ask(Command::Stats).await?;
        let netstack = self.shared.lock().stats();
        Ok(TunnelStats { driver, netstack })
    }

    /// Every TCP socket in the netstack, for diagnostics.
    pub fn tcp_sockets(&self) -> Vec<crate::netstack::TcpSocketInfo> {
        self.shared.lock().tcp_sockets()
    }

    /// Resets every TCP connection to `remote` (see [`crate::netstack::Netstack::reset_remote`]).
    pub fn reset_connections_to(&self, remote: std::net::IpAddr) -> usize {
        self.shared.lock().reset_remote(remote)
    }

    /// Stops the driver without consuming the tunnel (for owners that share it behind an
    /// `Arc`). Every open socket fails afterwards.
    pub async fn close(&self) {
        let _ = self.cmds.send(Command::Shutdown).await;
        self.shared.close();
    }

    /// Like [`Tunnel::close`], without waiting for room in the command queue.
    pub fn close_now(&self) {
        let _ = self.cmds.try_send(Command::Shutdown);
        self.shared.close();
    }

    /// Stops the driver and waits for it; every open socket fails afterwards.
    pub async fn shutdown(mut self) {
        let task = self.task.take();
        // Closing the command channel is the driver's shutdown signal.
        let (dead, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.cmds, dead));
        if let Some(t) = task {
            let _ = t.await;
        }
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            // The driver also exits on its own once the command channel closes; aborting
            // makes that immediate even if it is mid-wake, and close() fails the sockets.
            t.abort();
            self.shared.close();
        }
    }
}
