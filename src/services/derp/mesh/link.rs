//! One mesh link: a task that keeps a DERP client connection to one peer relay,
//! presenting the mesh key, watches that relay's connections and forwards packets to
//! it.
//!
//! Per connection: log in, send WatchConns; the first PeerPresent (the stream starts
//! with one for every connected key, our own link included) proves the peer accepted
//! the mesh key, and registers the link with our registry. Then the stream is applied
//! to its forwarders while a writer sends ForwardPacket for whatever our clients route
//! to it. When the connection ends, for
//! any reason, the link and all its forwarders leave the registry before the task
//! waits to reconnect; the next connection's watch stream starts with a PeerPresent
//! for every connected key, so nothing from the old one needs to be kept.

use super::super::DerpServer;
use super::queue::{Forward, LinkHandle};
use super::{LinkState, MeshConfig};
use crate::proto::derp::client::{ClientEvent, ClientSession, ClientSessionConfig};
use crate::proto::derp::server::LinkId;
use crate::runtime::clock;
use crate::runtime::derp::connect::{DerpUrl, connect_upgrade};
use crate::runtime::derp::transport::{DerpRead, DerpWrite};
use crate::wire::derp::{
    Decoded, Direction, ForwardPacket, Frame, PeerPresentFlags, Restarting, WatchConns, decode,
};
use bytes::{Bytes, BytesMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Packets taken from the link queue per write.
const PACKETS_PER_BATCH: usize = 64;

/// How a connection ended.
enum End {
    Cancelled,
    Restarting(Restarting),
    /// Failed; whether it had logged in, and why.
    Failed(bool, String),
}

/// Runs the link to `url` until `cancel`.
pub(super) async fn run(
    server: Arc<DerpServer>,
    cfg: Arc<MeshConfig>,
    url: String,
    state: Arc<LinkState>,
    cancel: CancellationToken,
) {
    let target = match DerpUrl::parse(&url) {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(url = %url, error = %e, "DERP mesh peer not started");
            state.set_error(e.to_string());
            return;
        }
    };
    let mut attempt: u32 = 0;
    loop {
        let started = clock::now();
        let end = tokio::select! {
            biased;
            () = cancel.cancelled() => End::Cancelled,
            end = connect_and_serve(&server, &cfg, &target, &state) => end,
        };
        state.detach(&server);
        let delay = match end {
            End::Cancelled => break,
            End::Restarting(r) => {
                tracing::info!(url = %url, reconnect_in = ?r.reconnect_in(), "DERP mesh peer restarting");
                state.set_error("peer relay restarting".into());
                attempt = 0;
                r.reconnect_in()
            }
            End::Failed(established, why) => {
                if established {
                    tracing::info!(url = %url, error = %why, "DERP mesh link lost; reconnecting");
                } else {
                    tracing::debug!(url = %url, error = %why, attempt, "DERP mesh connect failed");
                }
                state.set_error(why);
                let lived = clock::now().saturating_duration_since(started);
                if established && lived >= Duration::from_secs(10) {
                    attempt = 0;
                }
                let d = cfg.backoff.delay(attempt, rand::random::<f64>());
                attempt = attempt.saturating_add(1);
                d
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    state.detach(&server);
}

async fn connect_and_serve(
    server: &Arc<DerpServer>,
    cfg: &MeshConfig,
    target: &DerpUrl,
    state: &LinkState,
) -> End {
    let conn = tokio::time::timeout(cfg.connect_timeout, connect_upgrade(&cfg.tls, target, &[]));
    let (reader, writer) = match conn.await {
        Ok(Ok(rw)) => rw,
        Ok(Err(e)) => return End::Failed(false, e.to_string()),
        Err(_) => return End::Failed(false, "connect timed out".into()),
    };
    serve(server, cfg, state, reader, writer).await
}

struct Conn<'a> {
    server: &'a Arc<DerpServer>,
    state: &'a LinkState,
    session: Mutex<ClientSession>,
    /// Wakes the writer for session frames (login, WatchConns, pongs, timers).
    wake: Notify,
    handle: Arc<LinkHandle>,
    /// Logged in: WatchConns may go out.
    established: AtomicBool,
    /// Set once watching: this connection's entry in the registry.
    link: Mutex<Option<LinkId>>,
}

impl Conn<'_> {
    fn session(&self) -> MutexGuard<'_, ClientSession> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn link(&self) -> Option<LinkId> {
        *self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn serve<R: DerpRead, W: DerpWrite>(
    server: &Arc<DerpServer>,
    cfg: &MeshConfig,
    state: &LinkState,
    mut reader: R,
    mut writer: W,
) -> End {
    let session_cfg = ClientSessionConfig {
        ping_interval: cfg.ping_interval,
        ping_timeout: cfg.ping_timeout,
        login_timeout: cfg.connect_timeout,
        mesh_key: Some(cfg.mesh_key.clone()),
        ..ClientSessionConfig::default()
    };
    let conn = Conn {
        server,
        state,
        session: Mutex::new(ClientSession::new(
            clock::now(),
            server.private.clone(),
            session_cfg,
            rand::random(),
        )),
        wake: Notify::new(),
        handle: Arc::new(LinkHandle::new(cfg.queue_depth, Arc::clone(&server.budget))),
        established: AtomicBool::new(false),
        link: Mutex::new(None),
    };
    let end = tokio::select! {
        end = read_loop(&conn, &mut reader) => end,
        end = write_loop(&conn, cfg, &mut writer) => end,
    };
    let established = conn.established.load(Ordering::Relaxed);
    let stranded = conn.handle.close();
    server.counters.drop_n(
        crate::proto::derp::server::DropReason::Gone,
        stranded as u64,
    );
    let _ = tokio::time::timeout(Duration::from_millis(200), writer.shutdown()).await;
    match end {
        Err(why) => End::Failed(established, why),
        Ok(r) => End::Restarting(r),
    }
}

/// Reads frames until the connection ends; `Ok` when the peer announced a restart.
async fn read_loop<R: DerpRead>(conn: &Conn<'_>, reader: &mut R) -> Result<Restarting, String> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    loop {
        loop {
            let len = match decode(&buf, Direction::ServerToClient) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Frame { len, .. }) => len,
                Err(e) => match e.skip_len() {
                    Some(n) if n <= buf.len() => {
                        let _ = buf.split_to(n);
                        continue;
                    }
                    _ => return Err(e.to_string()),
                },
            };
            let bytes = buf.split_to(len).freeze();
            if let Some(r) = handle_frame(conn, &bytes)? {
                return Ok(r);
            }
        }
        match reader.read_into(&mut buf).await {
            Ok(0) => return Err("peer relay closed the connection".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

fn handle_frame(conn: &Conn<'_>, bytes: &Bytes) -> Result<Option<Restarting>, String> {
    let Ok(frame) = Frame::parse_frame(bytes, Direction::ServerToClient) else {
        return Ok(None);
    };
    let event = {
        let mut s = conn.session();
        let deadline = s.poll_timeout();
        let event = s
            .handle_frame(clock::now(), frame)
            .map_err(|e| e.to_string())?;
        if s.wants_transmit() || s.poll_timeout() < deadline {
            conn.wake.notify_one();
        }
        event
    };
    let server = conn.server;
    match event {
        Some(ClientEvent::Established { .. }) => {
            conn.established.store(true, Ordering::Relaxed);
            conn.wake.notify_one();
        }
        Some(ClientEvent::PeerPresent(p)) => {
            let link = conn.link().unwrap_or_else(|| {
                let link = server.registry().add_link(Arc::clone(&conn.handle));
                *conn.link.lock().unwrap_or_else(PoisonError::into_inner) = Some(link);
                conn.state.attach(link);
                conn.wake.notify_one();
                tracing::info!(peer = ?conn.session().server_key().map(|k| k.short()), "DERP mesh link up");
                link
            });
            // Other relays' mesh links (ours included) are not destinations.
            let mesh = p
                .flags
                .is_some_and(|f| f.contains(PeerPresentFlags::MESH_PEER));
            if !mesh && p.key != server.public {
                server.registry().add_forwarder(link, &p.key);
            }
        }
        Some(ClientEvent::PeerGone(g)) => {
            if let Some(link) = conn.link() {
                let fx = server.registry().remove_forwarder(link, &g.peer);
                server.apply(fx);
            }
        }
        Some(ClientEvent::Restarting(r)) => return Ok(Some(r)),
        _ => {}
    }
    Ok(None)
}

async fn write_loop<W: DerpWrite>(
    conn: &Conn<'_>,
    cfg: &MeshConfig,
    writer: &mut W,
) -> Result<Restarting, String> {
    let mut batch = BytesMut::with_capacity(64 << 10);
    let mut packets: Vec<Forward> = Vec::new();
    let mut watching = false;
    loop {
        let deadline = conn.session().poll_timeout();
        tokio::select! {
            biased;
            () = conn.wake.notified() => {}
            () = tokio::time::sleep_until(deadline.into()) => {
                conn.session().handle_timeout(clock::now()).map_err(|e| e.to_string())?;
            }
            () = conn.handle.notify.notified(), if conn.link().is_some() => {}
        }
        conn.session().poll_transmit(&mut batch);
        if !watching && conn.established.load(Ordering::Relaxed) {
            let _ = Frame::WatchConns(WatchConns).encode(&mut batch);
            watching = true;
        }
        if conn.link().is_some() {
            if conn.handle.take(PACKETS_PER_BATCH, &mut packets) {
                conn.handle.notify.notify_one();
            }
            let mut sent = 0u64;
            for (src, dst, packet) in packets.drain(..) {
                let f = Frame::ForwardPacket(ForwardPacket {
                    src,
                    dst,
                    packet: &packet,
                });
                if f.encode(&mut batch).is_ok() {
                    sent += 1;
                }
            }
            conn.state.count_sent(sent);
        }
        if batch.is_empty() {
            continue;
        }
        let data = batch.split().freeze();
        match tokio::time::timeout(cfg.write_timeout, writer.write_all(data)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(_) => return Err("write timed out".into()),
        }
    }
}
