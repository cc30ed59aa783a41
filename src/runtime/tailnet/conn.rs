//! `AgentConn`: a cheap, clonable handle on one agent, holding a lease.
//!
//! Cloning takes another lease; dropping releases exactly the one it holds. Every dial is
//! pinned to the agent's tailnet address, so a handle can only ever reach its own agent.

use super::{ConnError, Inner, Tailnet, TailnetConfig};
use crate::proto::tailnet::{Acquired, WaiterId};
use crate::runtime::clock;
use crate::runtime::{TcpStream, UdpSocket};
use crate::wire::addr::NodeId;
use crate::wire::key::NodePrivate;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use tokio::sync::oneshot;

/// One lease on a destination: taken when created or cloned, given back exactly once
/// when dropped.
pub(crate) struct Lease {
    inner: Arc<Inner>,
    agent: NodeId,
}

impl Lease {
    /// Wraps a lease the machine has already counted.
    fn adopt(inner: Arc<Inner>, agent: NodeId) -> Self {
        Self { inner, agent }
    }
}

impl Clone for Lease {
    fn clone(&self) -> Self {
        self.inner
            .state()
            .machine
            .take_lease(self.agent, clock::now());
        Self::adopt(self.inner.clone(), self.agent)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let released = self.inner.state().machine.release(self.agent, clock::now());
        if let Err(e) = released {
            tracing::error!(error = %e, "lease bookkeeping is off");
        }
    }
}

/// A caller waiting on the machine; if the caller goes away first (its future is
/// dropped), the wait is abandoned so the machine never resolves it.
struct Waiting {
    inner: Arc<Inner>,
    waiter: WaiterId,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let mut st = self.inner.state();
        st.machine.abandon(self.waiter);
        st.waiters.remove(&self.waiter);
    }
}

/// A handle on one agent. See the module docs.
#[derive(Clone)]
pub struct AgentConn {
    lease: Lease,
    addr: Ipv6Addr,
    /// Per-call mode only: the private stack this handle owns.
    owner: Option<Arc<Tailnet>>,
}

impl std::fmt::Debug for AgentConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConn")
            .field("agent", &self.lease.agent)
            .field("addr", &self.addr)
            .finish()
    }
}

impl AgentConn {
    fn new(lease: Lease) -> Self {
        Self {
            addr: lease.agent.tailnet_addr(),
            lease,
            owner: None,
        }
    }

    fn inner(&self) -> &Arc<Inner> {
        &self.lease.inner
    }

    /// The agent this handle reaches.
    pub fn agent_id(&self) -> NodeId {
        self.lease.agent
    }

    /// The agent's tailnet address.
    pub fn addr(&self) -> IpAddr {
        IpAddr::V6(self.addr)
    }

    /// Opens a TCP connection to `port` on the agent. Wrap it in a timeout.
    ///
    /// # Errors
    /// `ConnectionRefused` if nothing listens there; `NotConnected` after shutdown.
    pub async fn dial_tcp(&self, port: u16) -> io::Result<TcpStream> {
        self.inner()
            .tunnel
            .dial_tcp(SocketAddr::new(self.addr(), port))
            .await
    }

    /// Opens a UDP socket whose datagrams go to `port` on the agent and whose receives
    /// accept only the agent's replies from that port.
    ///
    /// # Errors
    /// `NotConnected` after shutdown, or no free local port.
    pub fn dial_udp(&self, port: u16) -> io::Result<AgentUdp> {
        let socket = self.inner().tunnel.bind_udp(0)?;
        Ok(AgentUdp {
            socket,
            peer: SocketAddr::new(self.addr(), port),
            _conn: self.clone(),
        })
    }

    /// Whether this handle owns a private stack (per-call mode): connections made through
    /// it die with it, so they must not be pooled beyond it.
    pub fn owns_stack(&self) -> bool {
        self.owner.is_some()
    }

    /// Releases the lease. In shared mode that is all (the same as dropping the handle);
    /// in per-call mode it also tears the handle's private stack down and waits for it:
    /// a graceful coordinator disconnect, relay connections closed, the tunnel stopped.
    pub async fn close(mut self) {
        let owner = self.owner.take();
        drop(self);
        if let Some(t) = owner.and_then(|o| Arc::try_unwrap(o).ok()) {
            t.shutdown().await;
        }
    }
}

/// A UDP "connection" to one port of the agent. Holds a lease like [`AgentConn`].
#[derive(Debug)]
pub struct AgentUdp {
    socket: UdpSocket,
    peer: SocketAddr,
    _conn: AgentConn,
}

impl AgentUdp {
    /// Sends one datagram to the agent's port.
    ///
    /// # Errors
    /// See [`UdpSocket::send_to`].
    pub async fn send(&self, data: &[u8]) -> io::Result<()> {
        self.socket.send_to(data, self.peer).await
    }

    /// Receives one datagram from the agent's port (others are discarded).
    ///
    /// # Errors
    /// See [`UdpSocket::recv_from`].
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let (n, from) = self.socket.recv_from(buf).await?;
            if from == self.peer {
                return Ok(n);
            }
        }
    }
}

/// The shared-mode path of `Tailnet::agent_conn`. The machine owns the deadline: it
/// resolves the wait when a session is up or fails it, naming the stage, when the
/// deadline passes.
pub(super) async fn acquire(
    inner: &Arc<Inner>,
    agent: NodeId,
    deadline: tokio::time::Instant,
) -> Result<AgentConn, ConnError> {
    let (lease, wait) = {
        let mut st = inner.state();
        let acquired = st.machine.acquire(agent, deadline.into_std(), clock::now());
        let lease = Lease::adopt(inner.clone(), agent);
        match acquired {
            Acquired::Ready => return Ok(AgentConn::new(lease)),
            Acquired::Wait(waiter) => {
                let (tx, rx) = oneshot::channel();
                st.waiters.insert(waiter, tx);
                st.settle();
                drop(st);
                let guard = Waiting {
                    inner: inner.clone(),
                    waiter,
                };
                (lease, (rx, guard))
            }
        }
    };
    inner.kick.notify_one();
    let (rx, _guard) = wait;
    match rx.await {
        Ok(Ok(())) => Ok(AgentConn::new(lease)),
        Ok(Err(failure)) => Err(ConnError::from_failure(agent, failure)),
        Err(_) => Err(ConnError::Closed),
    }
}

/// Per-call mode: a private stack for this one handle.
pub(super) async fn per_call(
    cfg: &TailnetConfig,
    agent: NodeId,
    deadline: tokio::time::Instant,
    derp_map: Option<crate::wire::derpmap::DerpMap>,
) -> Result<AgentConn, ConnError> {
    let mut c = cfg.clone();
    c.id = NodeId::random();
    c.private = NodePrivate::generate();
    c.dial_mode = super::DialMode::Shared;
    c.derp_map = derp_map.or(c.derp_map);
    let t = Tailnet::start(c).map_err(|_| ConnError::Closed)?;
    let mut conn = acquire(&t.inner, agent, deadline).await?;
    await_reachable(&t, agent, deadline).await?;
    conn.owner = Some(Arc::new(t));
    Ok(conn)
}

/// What the reference's per-call path does once its tunnel is up, before it hands the
/// connection out (`AwaitReachable`): pings the agent through it until one is answered,
/// starting at 50 ms per ping and doubling.
async fn await_reachable(
    t: &Tailnet,
    agent: NodeId,
    deadline: tokio::time::Instant,
) -> Result<(), ConnError> {
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::from_std(clock::now()));
        if left.is_zero() {
            return Err(ConnError::NoHandshake(agent));
        }
        if let Some((_, Some(_pong))) = t.ping(agent, wait.min(left)).await? {
            return Ok(());
        }
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}
