//! DERP client session, sans-IO: login, then keep-alive and ping bookkeeping.
//!
//! Must not import tokio or read the clock. The shell in `runtime::derp` owns the
//! connection and calls, in this order, whenever something happens:
//!
//! 1. [`ClientSession::handle_frame`] for each decoded frame (returns an event);
//! 2. [`ClientSession::handle_timeout`] when [`ClientSession::poll_timeout`] passes
//!    (an early call does nothing);
//! 3. [`ClientSession::poll_transmit`] to collect control frames to write (ClientInfo,
//!    NotePreferred, Pong, Ping).
//!
//! An error from 1 or 2 means the connection is dead: drop it and reconnect.

use crate::wire::derp::{
    ClientInfo, ClientInfoFrame, Frame, FrameType, Health, LoginError, NONCE_LEN, NotePreferred,
    PROTOCOL_VERSION, PeerGone, PeerPresent, Ping, Pong, RecvPacket, Restarting, ServerInfo,
};
use crate::wire::key::{NodePrivate, NodePublic};
use bytes::BufMut;
use std::collections::VecDeque;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Timing and identity options of a session.
#[derive(Debug, Clone)]
pub struct ClientSessionConfig {
    /// Time between our Pings. Go servers send a KeepAlive only every 60 s; pinging
    /// every 15–30 s finds dead connections sooner and keeps idle proxies open.
    pub ping_interval: Duration,
    /// How long a Ping may go unanswered before the connection counts as dead.
    pub ping_timeout: Duration,
    /// How long the connection may be silent (two missed server keep-alives).
    pub idle_timeout: Duration,
    /// Budget from connect to ServerInfo.
    pub login_timeout: Duration,
    /// Send NotePreferred(true): this is our home region.
    pub preferred: bool,
    /// Mesh key to present, for privileged clients.
    pub mesh_key: Option<String>,
    /// Watching a connection in use, so that a relay that stopped (a replica frozen
    /// behind a load balancer) is left within about 750 ms, in time for the tunnel's TCP
    /// streams' second or third retransmission, instead of the idle ping's tens of
    /// seconds. `None`: only the idle ping.
    pub stall_probe: Option<StallProbe>,
}

/// When silence on a connection in use is suspicious enough to ping.
///
/// A node that only receives (an agent answering nothing because nothing reaches it)
/// would never notice a stopped relay from its own sends, so silence counts as soon as
/// data crossed the connection in either direction within `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StallProbe {
    /// Nothing received this long, while the connection is in use, starts a probe.
    pub after: Duration,
    /// How long the probe may go unanswered: this, or three measured round trips when
    /// that is longer, so a slow path is not mistaken for a dead relay.
    pub timeout: Duration,
    /// How recently data must have crossed the connection for silence to count.
    pub window: Duration,
}

impl Default for StallProbe {
    fn default() -> Self {
        Self {
            after: Duration::from_millis(250),
            timeout: Duration::from_millis(500),
            window: Duration::from_secs(10),
        }
    }
}

impl Default for ClientSessionConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            login_timeout: Duration::from_secs(10),
            preferred: false,
            mesh_key: None,
            stall_probe: Some(StallProbe::default()),
        }
    }
}

/// Where the session is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Waiting for the server's greeting.
    AwaitServerKey,
    /// ClientInfo queued or sent; waiting for ServerInfo.
    AwaitServerInfo,
    /// Logged in.
    Established,
}

/// Something the shell should act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientEvent<'a> {
    /// Login finished; the server proved it holds `server_key`.
    Established {
        /// The server's key.
        server_key: NodePublic,
        /// What it said about itself.
        info: ServerInfo,
    },
    /// A packet from a peer.
    Packet(RecvPacket<'a>),
    /// A peer is gone or not here.
    PeerGone(PeerGone),
    /// A peer is present (mesh clients only).
    PeerPresent(PeerPresent),
    /// The server reports a problem with this connection, or clears it.
    Health(Health<'a>),
    /// The server is restarting; reconnect per its hints.
    Restarting(Restarting),
    /// Our Ping was answered.
    Pong {
        /// Round-trip time.
        rtt: Duration,
    },
    /// The server's keep-alive.
    KeepAlive,
}

/// Why the session is dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ClientSessionError {
    /// The server sent something else where the login needed a particular frame.
    #[error("unexpected {0:?} frame during login")]
    UnexpectedFrame(FrameType),
    /// ServerInfo did not open with the server's key, or was not valid.
    #[error("bad ServerInfo: {0}")]
    Login(LoginError),
    /// No ServerInfo within the login budget.
    #[error("login timed out")]
    LoginTimeout,
    /// Our Ping was not answered in time.
    #[error("ping not answered within {0:?}")]
    PingTimeout(Duration),
    /// Nothing arrived for too long.
    #[error("nothing received for {0:?}")]
    IdleTimeout(Duration),
}

#[derive(Debug, Clone)]
enum Pending {
    Frame(Vec<u8>),
    Preferred(bool),
    Ping([u8; 8]),
    Pong([u8; 8]),
}

/// Pongs owed to the server beyond this are dropped: a server pinging faster than we
/// write is misbehaving and one answer per burst is enough.
const MAX_PENDING_PONGS: usize = 8;

/// One connection's client-side protocol state.
#[derive(Debug, Clone)]
pub struct ClientSession {
    private: NodePrivate,
    cfg: ClientSessionConfig,
    /// Nonce for our one ClientInfo box; fresh randomness from the shell.
    nonce: [u8; NONCE_LEN],
    state: ClientState,
    server_key: Option<NodePublic>,
    login_deadline: Instant,
    last_rx: Instant,
    next_ping: Instant,
    /// Our unanswered Ping: payload, send time and how long it may take.
    ping_out: Option<([u8; 8], Instant, Duration)>,
    /// When a data packet last crossed the connection, either way.
    last_data: Option<Instant>,
    ping_seq: u64,
    rtt: Option<Duration>,
    pending: VecDeque<Pending>,
    pending_pongs: usize,
}

impl ClientSession {
    /// A session for a connection opened at `now`. `nonce` must be fresh random bytes.
    pub fn new(
        now: Instant,
        private: NodePrivate,
        cfg: ClientSessionConfig,
        nonce: [u8; NONCE_LEN],
    ) -> Self {
        Self {
            private,
            login_deadline: now + cfg.login_timeout,
            last_rx: now,
            next_ping: now + cfg.ping_interval,
            cfg,
            nonce,
            state: ClientState::AwaitServerKey,
            server_key: None,
            ping_out: None,
            last_data: None,
            ping_seq: 0,
            rtt: None,
            pending: VecDeque::new(),
            pending_pongs: 0,
        }
    }

    /// Where the login is.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// Whether the login finished.
    pub fn is_established(&self) -> bool {
        self.state == ClientState::Established
    }

    /// The server's key, once its greeting arrived.
    pub fn server_key(&self) -> Option<NodePublic> {
        self.server_key
    }

    /// The last measured ping round trip.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Handles one frame from the server.
    ///
    /// # Errors
    /// [`ClientSessionError`] when the login goes wrong; the connection is dead.
    pub fn handle_frame<'a>(
        &mut self,
        now: Instant,
        frame: Frame<'a>,
    ) -> Result<Option<ClientEvent<'a>>, ClientSessionError> {
        self.last_rx = now;
        match (self.state, frame) {
            (ClientState::AwaitServerKey, Frame::ServerKey(sk)) => {
                let info = ClientInfo {
                    version: PROTOCOL_VERSION,
                    mesh_key: self.cfg.mesh_key.clone(),
                    can_ack_pings: true,
                    is_prober: false,
                };
                let sealed = info
                    .seal(&self.private, &sk.key, self.nonce)
                    .map_err(ClientSessionError::Login)?;
                let frame = Frame::ClientInfo(ClientInfoFrame {
                    key: self.private.public(),
                    sealed: &sealed,
                });
                let bytes = frame
                    .to_vec()
                    .map_err(|_| ClientSessionError::Login(LoginError::Seal))?;
                self.pending.push_back(Pending::Frame(bytes));
                self.server_key = Some(sk.key);
                self.state = ClientState::AwaitServerInfo;
                Ok(None)
            }
            (ClientState::AwaitServerInfo, Frame::ServerInfo(si)) => {
                let Some(server_key) = self.server_key else {
                    return Err(ClientSessionError::UnexpectedFrame(FrameType::ServerInfo));
                };
                let info = ServerInfo::open(&self.private, &server_key, si.sealed)
                    .map_err(ClientSessionError::Login)?;
                self.state = ClientState::Established;
                self.next_ping = now + self.cfg.ping_interval;
                if self.cfg.preferred {
                    self.pending.push_back(Pending::Preferred(true));
                }
                Ok(Some(ClientEvent::Established { server_key, info }))
            }
            (ClientState::Established, f) => Ok(self.handle_established(now, f)),
            (_, f) => Err(ClientSessionError::UnexpectedFrame(f.ty())),
        }
    }

    fn handle_established<'a>(
        &mut self,
        now: Instant,
        frame: Frame<'a>,
    ) -> Option<ClientEvent<'a>> {
        match frame {
            Frame::RecvPacket(p) => {
                self.last_data = Some(now);
                Some(ClientEvent::Packet(p))
            }
            Frame::KeepAlive(_) => Some(ClientEvent::KeepAlive),
            Frame::PeerGone(g) => Some(ClientEvent::PeerGone(g)),
            Frame::PeerPresent(p) => Some(ClientEvent::PeerPresent(p)),
            Frame::Health(h) => Some(ClientEvent::Health(h)),
            Frame::Restarting(r) => Some(ClientEvent::Restarting(r)),
            Frame::Ping(p) => {
                if self.pending_pongs < MAX_PENDING_PONGS {
                    self.pending_pongs += 1;
                    self.pending.push_back(Pending::Pong(p.data));
                }
                None
            }
            Frame::Pong(p) => match self.ping_out {
                Some((data, sent, _)) if data == p.data => {
                    let rtt = now.saturating_duration_since(sent);
                    self.ping_out = None;
                    self.rtt = Some(rtt);
                    Some(ClientEvent::Pong { rtt })
                }
                // A late answer to a ping we gave up on, or not ours at all.
                _ => None,
            },
            // A repeated greeting, frames meant for servers, unknown types: skipped.
            _ => None,
        }
    }

    /// The next instant [`ClientSession::handle_timeout`] has work to do.
    pub fn poll_timeout(&self) -> Instant {
        if !self.is_established() {
            return self.login_deadline;
        }
        let ping = match self.ping_out {
            Some((_, sent, timeout)) => sent + timeout,
            None => match self.stall_due() {
                Some(due) => self.next_ping.min(due),
                None => self.next_ping,
            },
        };
        ping.min(self.last_rx + self.cfg.idle_timeout)
    }

    /// Fires due timers: queues our Ping, or reports a dead connection.
    ///
    /// # Errors
    /// [`ClientSessionError::LoginTimeout`], [`ClientSessionError::PingTimeout`] or
    /// [`ClientSessionError::IdleTimeout`].
    pub fn handle_timeout(&mut self, now: Instant) -> Result<(), ClientSessionError> {
        if !self.is_established() {
            if now >= self.login_deadline {
                return Err(ClientSessionError::LoginTimeout);
            }
            return Ok(());
        }
        if let Some((_, sent, timeout)) = self.ping_out
            && now >= sent + timeout
        {
            return Err(ClientSessionError::PingTimeout(timeout));
        }
        if now >= self.last_rx + self.cfg.idle_timeout {
            return Err(ClientSessionError::IdleTimeout(self.cfg.idle_timeout));
        }
        let stalled = match (self.stall_due(), self.cfg.stall_probe) {
            (Some(due), Some(probe)) if now >= due => {
                Some(probe.timeout.max(self.rtt.unwrap_or_default() * 3))
            }
            _ => None,
        };
        if self.ping_out.is_none() && (now >= self.next_ping || stalled.is_some()) {
            self.ping_seq += 1;
            let data = self.ping_seq.to_be_bytes();
            let timeout = stalled.unwrap_or(self.cfg.ping_timeout);
            self.ping_out = Some((data, now, timeout));
            self.next_ping = now + self.cfg.ping_interval;
            self.pending.push_back(Pending::Ping(data));
        }
        Ok(())
    }

    /// Packets went out at `now`: the connection is in use, so silence from here on
    /// starts the stall probe.
    pub fn note_sent(&mut self, now: Instant) {
        if self.is_established() {
            self.last_data = Some(now);
        }
    }

    /// When the stall probe is due: `after` past the last frame received, while data
    /// crossed the connection within `window` of that moment.
    fn stall_due(&self) -> Option<Instant> {
        let probe = self.cfg.stall_probe?;
        let silent = self.last_rx + probe.after;
        self.last_data
            .is_some_and(|d| d + probe.window >= silent)
            .then_some(silent)
    }

    /// Whether control frames are waiting for [`ClientSession::poll_transmit`].
    pub fn wants_transmit(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Appends every queued control frame to `out`; returns the bytes written.
    pub fn poll_transmit<B: BufMut>(&mut self, out: &mut B) -> usize {
        let mut n = 0;
        while let Some(p) = self.pending.pop_front() {
            let written = match &p {
                Pending::Frame(bytes) => {
                    out.put_slice(bytes);
                    Ok(bytes.len())
                }
                Pending::Preferred(preferred) => Frame::NotePreferred(NotePreferred {
                    preferred: *preferred,
                })
                .encode(out),
                Pending::Ping(data) => Frame::Ping(Ping { data: *data }).encode(out),
                Pending::Pong(data) => Frame::Pong(Pong { data: *data }).encode(out),
            };
            match written {
                Ok(w) => {
                    n += w;
                    if matches!(p, Pending::Pong(_)) {
                        self.pending_pongs = self.pending_pongs.saturating_sub(1);
                    }
                }
                Err(_) => {
                    // `out` is full: keep the frame for the next call.
                    self.pending.push_front(p);
                    break;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests;
