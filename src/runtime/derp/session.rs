//! One logged-in (or logging-in) connection: the reader and writer loops around a
//! [`ClientSession`].

use super::client::DerpInbound;
use super::connect::ConnectError;
use super::status::Shared;
use super::transport::{DerpRead, DerpWrite, TransportError};
use crate::proto::derp::client::{
    ClientEvent, ClientSession, ClientSessionConfig, ClientSessionError,
};
use crate::runtime::clock;
use crate::wire::derp::{Decoded, Direction, Frame, FrameError, Restarting, SendPacket, decode};
use crate::wire::key::{NodePrivate, NodePublic};
use bytes::{Bytes, BytesMut};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use thiserror::Error;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Why a connection ended badly.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub(super) enum SessionError {
    /// Dialing or the HTTP exchange failed.
    #[error(transparent)]
    Connect(ConnectError),
    /// The socket or websocket failed.
    #[error(transparent)]
    Transport(TransportError),
    /// The server broke the protocol, or a timer expired.
    #[error(transparent)]
    Protocol(ClientSessionError),
    /// The server sent a frame we cannot get past.
    #[error(transparent)]
    Frame(FrameError),
    /// The server closed the connection.
    #[error("server closed the connection")]
    Closed,
    /// A write blocked past the write timeout.
    #[error("write timed out")]
    WriteTimeout,
}

/// How a connection ended.
#[derive(Debug)]
pub(super) enum SessionEnd {
    /// The client is shutting down.
    Cancelled,
    /// `reconnect_now` was called.
    ReconnectNow,
    /// The server announced a restart.
    Restarting(Restarting),
    /// Something failed.
    Failed {
        /// What.
        error: SessionError,
        /// Whether the login had finished.
        established: bool,
    },
}

impl SessionEnd {
    pub(super) fn connect_failed(e: ConnectError) -> Self {
        Self::Failed {
            error: SessionError::Connect(e),
            established: false,
        }
    }
}

/// What a connection needs from its client.
pub(super) struct SessionParams<'a> {
    pub(super) shared: &'a Arc<Shared>,
    pub(super) region: u16,
    pub(super) private: NodePrivate,
    pub(super) session_cfg: ClientSessionConfig,
    pub(super) write_timeout: Duration,
    pub(super) inbound: &'a mpsc::Sender<DerpInbound>,
    pub(super) cancel: &'a CancellationToken,
}

/// Why a loop stopped.
enum Stop {
    Cancelled,
    Restarting(Restarting),
    Error(SessionError),
}

/// Largest write batch; one websocket message or a few socket writes' worth.
const MAX_BATCH: usize = 256 << 10;

fn lock(s: &Mutex<ClientSession>) -> MutexGuard<'_, ClientSession> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logs in and serves the connection until it ends.
pub(super) async fn run_session<R: DerpRead, W: DerpWrite>(
    p: SessionParams<'_>,
    mut reader: R,
    mut writer: W,
    outbound: &mut mpsc::Receiver<(NodePublic, Bytes)>,
    transport: &'static str,
) -> SessionEnd {
    let nonce = rand::random();
    let session = Mutex::new(ClientSession::new(
        clock::now(),
        p.private.clone(),
        p.session_cfg.clone(),
        nonce,
    ));
    let wake = Notify::new();
    let stop = tokio::select! {
        biased;
        () = p.cancel.cancelled() => Stop::Cancelled,
        () = p.shared.reconnect.notified() => {
            let _ = tokio::time::timeout(Duration::from_millis(500), writer.shutdown()).await;
            return SessionEnd::ReconnectNow;
        }
        stop = read_loop(&p, &session, &wake, &mut reader, transport) => stop,
        stop = write_loop(&p, &session, &wake, &mut writer, outbound) => stop,
    };
    let established = lock(&session).is_established();
    if !matches!(stop, Stop::Error(SessionError::WriteTimeout)) {
        let _ = tokio::time::timeout(Duration::from_millis(500), writer.shutdown()).await;
    }
    match stop {
        Stop::Cancelled => SessionEnd::Cancelled,
        Stop::Restarting(r) => SessionEnd::Restarting(r),
        Stop::Error(error) => SessionEnd::Failed { error, established },
    }
}

async fn read_loop<R: DerpRead>(
    p: &SessionParams<'_>,
    session: &Mutex<ClientSession>,
    wake: &Notify,
    reader: &mut R,
    transport: &'static str,
) -> Stop {
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        loop {
            let len = match decode(&buf, Direction::ServerToClient) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Frame { len, .. }) => len,
                Err(e) => match e.skip_len() {
                    // Go clients skip short known frames; so do we.
                    Some(n) if n <= buf.len() => {
                        let _ = buf.split_to(n);
                        p.shared.note_skipped();
                        tracing::debug!(region = p.region, error = %e, "skipped bad DERP frame");
                        continue;
                    }
                    _ => return Stop::Error(SessionError::Frame(e)),
                },
            };
            let bytes = buf.split_to(len).freeze();
            if let Some(stop) = handle_frame(p, session, wake, &bytes, transport) {
                return stop;
            }
        }
        match reader.read_into(&mut buf).await {
            Ok(0) => return Stop::Error(SessionError::Closed),
            Ok(_) => {}
            Err(e) => return Stop::Error(SessionError::Transport(e)),
        }
    }
}

/// Handles one whole frame; `Some` ends the connection.
fn handle_frame(
    p: &SessionParams<'_>,
    session: &Mutex<ClientSession>,
    wake: &Notify,
    bytes: &Bytes,
    transport: &'static str,
) -> Option<Stop> {
    let Ok(frame) = Frame::parse_frame(bytes, Direction::ServerToClient) else {
        return None;
    };
    let event = {
        let mut s = lock(session);
        let deadline = s.poll_timeout();
        let event = s.handle_frame(clock::now(), frame);
        // The writer also runs the timers: wake it when there is something to send
        // or its deadline moved earlier (a Pong schedules the next Ping).
        if s.wants_transmit() || s.poll_timeout() < deadline {
            wake.notify_one();
        }
        event
    };
    match event {
        Err(e) => Some(Stop::Error(SessionError::Protocol(e))),
        Ok(None) => None,
        Ok(Some(ev)) => match ev {
            ClientEvent::Established { server_key, .. } => {
                p.shared.set_connected(server_key, transport);
                // The writer may now take packets from the queue.
                wake.notify_one();
                tracing::info!(region = p.region, server = %server_key.short(), transport, "DERP connected");
                None
            }
            ClientEvent::Packet(pkt) => {
                let packet = bytes.slice_ref(pkt.packet);
                p.shared.count_rx(packet.len());
                let msg = DerpInbound {
                    region: p.region,
                    src: pkt.src,
                    packet,
                };
                if p.inbound.try_send(msg).is_err() {
                    p.shared.note_inbound_full();
                    tracing::debug!(region = p.region, "DERP inbound queue full; packet dropped");
                }
                None
            }
            ClientEvent::PeerGone(g) => {
                tracing::debug!(region = p.region, peer = %g.peer.short(), reason = ?g.reason(), "DERP peer gone");
                p.shared.note_peer_gone(g.peer, g.reason());
                None
            }
            ClientEvent::Health(h) => {
                let text = h.text();
                tracing::info!(region = p.region, problem = %text, "DERP server health");
                p.shared.note_health(&text);
                None
            }
            ClientEvent::Restarting(r) => {
                p.shared.note_restarting();
                Some(Stop::Restarting(r))
            }
            ClientEvent::Pong { rtt } => {
                p.shared.set_rtt(rtt);
                None
            }
            ClientEvent::PeerPresent(_) | ClientEvent::KeepAlive => None,
        },
    }
}

async fn write_loop<W: DerpWrite>(
    p: &SessionParams<'_>,
    session: &Mutex<ClientSession>,
    wake: &Notify,
    writer: &mut W,
    outbound: &mut mpsc::Receiver<(NodePublic, Bytes)>,
) -> Stop {
    let mut batch = BytesMut::with_capacity(64 << 10);
    loop {
        let (deadline, established) = {
            let s = lock(session);
            (s.poll_timeout(), s.is_established())
        };
        let first = tokio::select! {
            biased;
            () = wake.notified() => None,
            () = tokio::time::sleep_until(deadline.into()) => {
                if let Err(e) = lock(session).handle_timeout(clock::now()) {
                    return Stop::Error(SessionError::Protocol(e));
                }
                None
            }
            pkt = outbound.recv(), if established => match pkt {
                Some(pkt) => Some(pkt),
                // Every handle is gone: the client is shutting down.
                None => return Stop::Cancelled,
            },
        };
        {
            let mut s = lock(session);
            s.poll_transmit(&mut batch);
            if first.is_some() {
                s.note_sent(clock::now());
            }
        }
        if let Some((dst, pkt)) = first {
            push_packet(p, &mut batch, dst, &pkt);
            while batch.len() < MAX_BATCH {
                let Ok((dst, pkt)) = outbound.try_recv() else {
                    break;
                };
                push_packet(p, &mut batch, dst, &pkt);
            }
        }
        if batch.is_empty() {
            continue;
        }
        let data = batch.split().freeze();
        match tokio::time::timeout(p.write_timeout, writer.write_all(data)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Stop::Error(SessionError::Transport(e)),
            Err(_) => return Stop::Error(SessionError::WriteTimeout),
        }
    }
}

fn push_packet(p: &SessionParams<'_>, batch: &mut BytesMut, dst: NodePublic, packet: &[u8]) {
    // `send` checked the size, so encoding cannot fail.
    if Frame::SendPacket(SendPacket { dst, packet })
        .encode(batch)
        .is_ok()
    {
        p.shared.count_tx(packet.len());
    }
}
