//! Listening sockets and accept queues.
//!
//! smoltcp has no listen backlog: a listening socket *becomes* the connection when a
//! SYN arrives. So the netstack looks at each incoming SYN before smoltcp does
//! ([`Netstack::admit`]) and makes sure an idle listening socket waits on that port;
//! after each poll, sockets that left `LISTEN` move to the listener's queues. A full
//! backlog drops the SYN (the peer retransmits) instead of resetting it. A wildcard
//! listener takes SYNs to any port at or above its minimum that has no listener of its
//! own — the agent's port forwarding uses it.

use super::Netstack;
use super::tcp::{TcpError, new_socket};
use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, State};
use smoltcp::wire::{IpAddress, IpListenEndpoint};
use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll, Waker};
use std::time::Instant;

/// Identifies a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ListenerId(u64);

#[derive(Debug)]
struct Listener {
    /// `None` for the wildcard listener.
    port: Option<u16>,
    /// Wildcard only: lowest port accepted.
    min_port: u16,
    /// Idle listening sockets by port.
    idle: HashMap<u16, Vec<SocketHandle>>,
    /// SYNs admitted per port since the last poll: each needs its own idle socket.
    syns: HashMap<u16, usize>,
    /// Handshake in progress.
    pending: Vec<SocketHandle>,
    /// Established, waiting for accept.
    ready: VecDeque<SocketHandle>,
    waker: Option<Waker>,
    /// The stack shut down; accepts fail.
    closed: bool,
}

impl Listener {
    fn queued(&self) -> usize {
        self.pending.len() + self.ready.len()
    }
}

#[derive(Debug, Default)]
pub(super) struct Listeners {
    by_id: HashMap<ListenerId, Listener>,
    by_port: HashMap<u16, ListenerId>,
    wildcard: Option<ListenerId>,
    next_id: u64,
}

impl Listeners {
    pub(super) fn wake_all(&mut self) {
        for l in self.by_id.values_mut() {
            l.closed = true;
            if let Some(w) = l.waker.take() {
                w.wake();
            }
        }
    }

    pub(super) fn has_port(&self, port: u16) -> bool {
        self.by_port.contains_key(&port)
    }

    fn for_port(&self, port: u16) -> Option<ListenerId> {
        if let Some(id) = self.by_port.get(&port) {
            return Some(*id);
        }
        let id = self.wildcard?;
        let l = self.by_id.get(&id)?;
        (port >= l.min_port).then_some(id)
    }

    /// Moves sockets that left LISTEN into the queues; wakes acceptors. `drained` says
    /// whether smoltcp took every queued packet: if not (its transmit queue filled), SYNs
    /// admitted with an idle socket each are still waiting, and trimming those sockets
    /// now would have smoltcp answer the SYNs with resets.
    pub(super) fn upkeep(&mut self, sockets: &mut SocketSet<'static>, drained: bool) {
        for l in self.by_id.values_mut() {
            let mut woke = false;
            if drained {
                l.syns.clear();
            }
            for idle in l.idle.values_mut() {
                idle.retain(|h| {
                    let s = sockets.get::<tcp::Socket>(*h);
                    match s.state() {
                        State::Listen => true,
                        State::SynReceived => {
                            l.pending.push(*h);
                            false
                        }
                        State::Closed => {
                            sockets.remove(*h);
                            false
                        }
                        _ => {
                            l.ready.push_back(*h);
                            woke = true;
                            false
                        }
                    }
                });
            }
            // A port listener keeps one spare; the wildcard keeps none (it would otherwise
            // hold a socket on every port that ever saw a connection).
            let keep = if drained {
                usize::from(l.port.is_some())
            } else {
                usize::MAX
            };
            for idle in l.idle.values_mut() {
                while idle.len() > keep {
                    if let Some(h) = idle.pop() {
                        sockets.remove(h);
                    }
                }
            }
            l.idle.retain(|_, v| !v.is_empty());
            l.pending.retain(|h| {
                let s = sockets.get::<tcp::Socket>(*h);
                match s.state() {
                    State::SynReceived => true,
                    // The handshake failed (RST or timeout): nobody will ever accept it.
                    State::Closed | State::Listen => {
                        sockets.remove(*h);
                        false
                    }
                    _ => {
                        l.ready.push_back(*h);
                        woke = true;
                        false
                    }
                }
            });
            if woke && let Some(w) = &l.waker {
                w.wake_by_ref();
            }
        }
    }
}

impl Netstack {
    /// Listens for TCP connections on `port` of every interface address.
    ///
    /// # Errors
    /// [`TcpError::AddrInUse`] if a listener or a dialled socket holds the port.
    pub fn tcp_listen(&mut self, port: u16) -> Result<ListenerId, TcpError> {
        if port == 0
            || self.listeners.by_port.contains_key(&port)
            || self.used_ports.contains(&port)
        {
            return Err(TcpError::AddrInUse);
        }
        let id = self.new_listener(Some(port), port);
        self.listeners.by_port.insert(port, id);
        Ok(id)
    }

    /// Listens on every port at or above `min_port` that has no listener of its own.
    ///
    /// # Errors
    /// [`TcpError::AddrInUse`] if a wildcard listener exists.
    pub fn tcp_listen_any(&mut self, min_port: u16) -> Result<ListenerId, TcpError> {
        if self.listeners.wildcard.is_some() {
            return Err(TcpError::AddrInUse);
        }
        let id = self.new_listener(None, min_port.max(1));
        self.listeners.wildcard = Some(id);
        Ok(id)
    }

    fn new_listener(&mut self, port: Option<u16>, min_port: u16) -> ListenerId {
        let id = ListenerId(self.listeners.next_id);
        self.listeners.next_id += 1;
        self.listeners.by_id.insert(
            id,
            Listener {
                port,
                min_port,
                idle: HashMap::new(),
                syns: HashMap::new(),
                pending: Vec::new(),
                ready: VecDeque::new(),
                waker: None,
                closed: false,
            },
        );
        id
    }

    /// Takes the next established connection: its socket and remote address.
    pub fn tcp_poll_accept(
        &mut self,
        id: ListenerId,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(SocketHandle, SocketAddr, SocketAddr), TcpError>> {
        let Some(l) = self.listeners.by_id.get_mut(&id) else {
            return Poll::Ready(Err(TcpError::NotConnected));
        };
        if l.closed {
            return Poll::Ready(Err(TcpError::NotConnected));
        }
        while let Some(h) = l.ready.pop_front() {
            let s = self.sockets.get::<tcp::Socket>(h);
            if let (Some(local), Some(remote)) = (s.local_endpoint(), s.remote_endpoint()) {
                return Poll::Ready(Ok((h, SocketAddr::from(local), SocketAddr::from(remote))));
            }
            // Reset before anyone accepted it.
            self.sockets.remove(h);
        }
        match &l.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => l.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Stops listening; connections not yet accepted are reset.
    pub fn tcp_unlisten(&mut self, id: ListenerId, now: Instant) {
        let Some(l) = self.listeners.by_id.remove(&id) else {
            return;
        };
        if let Some(p) = l.port {
            self.listeners.by_port.remove(&p);
        }
        if self.listeners.wildcard == Some(id) {
            self.listeners.wildcard = None;
        }
        for h in l.idle.values().flatten() {
            self.sockets.remove(*h);
        }
        for h in l.pending.iter().chain(l.ready.iter()) {
            self.sockets.get_mut::<tcp::Socket>(*h).abort();
            self.lingering.push((*h, now + super::RESET_SEND_LIMIT));
        }
        self.wake_driver();
    }

    /// Looks at an incoming packet before smoltcp does. For a SYN to a listened port,
    /// makes sure an idle listening socket waits there; refuses it when the backlog is
    /// full. Everything else passes.
    pub(super) fn admit(
        &mut self,
        pkt: &[u8],
        ip: &crate::wire::ip::IpPeek,
        _now: Instant,
    ) -> bool {
        let Some(t) = ip.tcp(pkt) else { return true };
        if !t.syn || t.ack || t.rst {
            return true;
        }
        if !self.config.addresses.contains(&ip.dst) {
            return true;
        }
        let Some(id) = self.listeners.for_port(t.dst_port) else {
            return true;
        };
        let backlog = self.config.listen_backlog;
        let Some(l) = self.listeners.by_id.get_mut(&id) else {
            return true;
        };
        // A retransmitted SYN for a handshake already under way needs no new socket.
        let remote = SocketAddr::new(ip.src, t.src_port);
        let dup = l.pending.iter().any(|h| {
            self.sockets
                .get::<tcp::Socket>(*h)
                .remote_endpoint()
                .map(SocketAddr::from)
                == Some(remote)
        });
        if dup {
            return true;
        }
        let in_batch: usize = l.syns.values().sum();
        if l.queued() + in_batch >= backlog {
            self.stats.syn_backlog_full += 1;
            return false;
        }
        let syns = l.syns.entry(t.dst_port).or_insert(0);
        *syns += 1;
        let idle = l.idle.get(&t.dst_port).map_or(0, Vec::len);
        if idle >= *syns {
            return true;
        }
        let mut s = new_socket(&self.config);
        let ep = IpListenEndpoint {
            addr: Some(IpAddress::from(ip.dst)),
            port: t.dst_port,
        };
        if s.listen(ep).is_err() {
            return true;
        }
        let h = self.sockets.add(s);
        l.idle.entry(t.dst_port).or_default().push(h);
        true
    }

    /// Whether `addr` is one of ours.
    pub fn is_local(&self, addr: IpAddr) -> bool {
        self.config.addresses.contains(&addr)
    }
}
