//! One client connection: greet, log in, register, then a reader and a writer side by
//! side until either ends, then unregister.

use super::DerpServer;
use super::mesh::queue::LinkHandle;
use super::queue::{ConnHandle, Control, Enqueued, Pending};
use crate::proto::derp::server::{
    DropReason, LoginAccepted, NewConn, Route, ServerCounters, accept_client_info,
    server_info_frame, server_key_frame,
};
use crate::runtime::clock;
use crate::runtime::derp::transport::{DerpRead, DerpWrite, TransportError};
use crate::wire::derp::{
    Decoded, Direction, Frame, FrameErrorKind, KeepAlive, PeerGone, PeerGoneReason, PeerPresent,
    RecvPacket, Restarting, decode,
};
use crate::wire::key::NodePublic;
use bytes::{Bytes, BytesMut};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const C2S: Direction = Direction::ClientToServer;

/// Packets taken per writer wake-up; bounds one write batch to a few MiB at most.
const PACKETS_PER_BATCH: usize = 64;

/// How often a login waiting for admission asks again.
const ADMIT_POLL: Duration = Duration::from_millis(50);

/// Serves one upgraded connection to completion.
pub(super) async fn serve_conn<R: DerpRead, W: DerpWrite>(
    server: Arc<DerpServer>,
    mut reader: R,
    mut writer: W,
    remote: Option<SocketAddr>,
    transport: &'static str,
) {
    let counters = &server.counters;
    let greeting = Bytes::from(server_key_frame(&server.public));
    let mut buf = BytesMut::with_capacity(64 << 10);
    let login = async {
        write(&server, &mut writer, greeting)
            .await
            .map_err(|()| DropReason::BadLogin)?;
        let login = read_login(&server, &mut reader, &mut buf)
            .await
            .ok_or(DropReason::BadLogin)?;
        // A peer relay's mesh link is trusted by its key, not by the admission check.
        if login.can_mesh || admitted_while_open(&server, &login.key, &mut reader, &mut buf).await {
            Ok(login)
        } else {
            Err(DropReason::NotAdmitted)
        }
    };
    let login = tokio::select! {
        () = server.shutdown.cancelled() => return,
        r = tokio::time::timeout(server.config.login_timeout, login) => {
            r.unwrap_or(Err(DropReason::BadLogin))
        }
    };
    let login = match login {
        Ok(login) => login,
        Err(reason) => {
            counters.drop(reason);
            tracing::debug!(
                ?remote,
                transport,
                reason = reason.as_str(),
                "DERP login failed"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), writer.shutdown()).await;
            return;
        }
    };
    ServerCounters::inc(&counters.logins);
    let key = login.key;
    let handle = Arc::new(ConnHandle::new(
        key,
        server.config.queue_depth,
        Arc::clone(&server.budget),
    ));
    let new = NewConn {
        key,
        handle: Arc::clone(&handle),
        endpoint: remote,
        can_mesh: login.can_mesh,
        is_prober: login.info.is_prober,
    };
    let (id, fx, replaced) = server.registry().register(new);
    if replaced {
        ServerCounters::inc(&counters.replaced);
        tracing::debug!(key = %key.short(), "DERP connection replaced by a newer one");
    }
    server.apply(fx);
    tracing::debug!(key = %key.short(), ?remote, transport, mesh = login.can_mesh, "DERP client logged in");

    let sent_info = match server_info_frame(&server.private, &key, rand::random()) {
        Ok(reply) => write(&server, &mut writer, Bytes::from(reply))
            .await
            .is_ok(),
        Err(_) => false,
    };
    let end = if sent_info {
        tokio::select! {
            () = handle.close.cancelled() => "closed by server",
            why = read_loop(&server, id, &handle, &mut reader, &mut buf) => why,
            why = write_loop(&server, id, &handle, &mut writer) => why,
        }
    } else {
        "could not send ServerInfo"
    };
    tracing::debug!(key = %key.short(), why = end, "DERP client disconnected");
    let fx = server.registry().unregister(id);
    server.apply(fx);
    let stranded = handle.close_queue();
    counters.drop_n(DropReason::Gone, stranded as u64);
    let _ = tokio::time::timeout(Duration::from_millis(200), writer.shutdown()).await;
}

/// Writes with the write timeout. Counts a timeout.
async fn write<W: DerpWrite>(server: &DerpServer, writer: &mut W, data: Bytes) -> Result<(), ()> {
    match tokio::time::timeout(server.config.write_timeout, writer.write_all(data)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(()),
        Err(_) => {
            server.counters.drop(DropReason::WriteTimeout);
            Err(())
        }
    }
}

/// Bytes a client waiting for admission may send ahead; past this it is not read until
/// admitted (TCP holds the rest back).
const MAX_EARLY_BYTES: usize = 64 << 10;

/// [`admitted`], while watching the connection: a client that closes meanwhile is let go
/// at once, rather than holding its task and socket until the wait ends. What it sends
/// meanwhile stays in `buf` for the read loop, up to [`MAX_EARLY_BYTES`]. Both
/// transports' reads are cancel-safe (a raw `read_buf`, a websocket stream's `next`), so
/// admission completing mid-read loses nothing.
async fn admitted_while_open<R: DerpRead>(
    server: &DerpServer,
    key: &NodePublic,
    reader: &mut R,
    buf: &mut BytesMut,
) -> bool {
    let admit = admitted(server, key);
    tokio::pin!(admit);
    loop {
        tokio::select! {
            ok = &mut admit => return ok,
            r = reader.read_into(buf), if buf.len() < MAX_EARLY_BYTES => match r {
                Ok(n) if n > 0 => {}
                _ => return false,
            },
        }
    }
}

/// Asks the admission check, if any, polling for up to `admit_wait` while the key is
/// not admitted yet.
async fn admitted(server: &DerpServer, key: &NodePublic) -> bool {
    let Some(admission) = &server.config.admission else {
        return true;
    };
    let deadline = tokio::time::Instant::from_std(clock::now()) + server.config.admit_wait;
    loop {
        if admission.admits(key) {
            return true;
        }
        if tokio::time::Instant::from_std(clock::now()) >= deadline {
            return false;
        }
        tokio::time::sleep(ADMIT_POLL).await;
    }
}

/// Reads until the first frame is whole and checks it is a valid ClientInfo.
async fn read_login<R: DerpRead>(
    server: &DerpServer,
    reader: &mut R,
    buf: &mut BytesMut,
) -> Option<LoginAccepted> {
    loop {
        match decode(buf, C2S) {
            Ok(Decoded::Frame { frame, len }) => {
                let mesh_key = server.mesh_key();
                let accepted = accept_client_info(&server.private, mesh_key.as_ref(), &frame);
                let _ = buf.split_to(len);
                return accepted.ok();
            }
            Ok(Decoded::Incomplete { .. }) => {}
            Err(_) => return None,
        }
        match reader.read_into(buf).await {
            Ok(n) if n > 0 => {}
            _ => return None,
        }
    }
}

async fn read_loop<R: DerpRead>(
    server: &DerpServer,
    id: u64,
    handle: &ConnHandle,
    reader: &mut R,
    buf: &mut BytesMut,
) -> &'static str {
    loop {
        loop {
            let len = match decode(buf, C2S) {
                Ok(Decoded::Incomplete { .. }) => break,
                Ok(Decoded::Frame { len, .. }) => len,
                Err(e) => {
                    let reason = match e.kind {
                        FrameErrorKind::TooLarge { .. } => DropReason::TooLarge,
                        _ => DropReason::Malformed,
                    };
                    server.counters.drop(reason);
                    tracing::debug!(key = %handle.key.short(), error = %e, "bad frame from DERP client");
                    return reason.as_str();
                }
            };
            let bytes = buf.split_to(len).freeze();
            if let Err(why) = handle_frame(server, id, handle, &bytes) {
                return why;
            }
        }
        // Anything the client sends (a Ping, NotePreferred, a packet) counts as traffic.
        let read = tokio::time::timeout(server.config.idle_timeout, reader.read_into(buf));
        let Ok(read) = read.await else {
            server.counters.drop(DropReason::IdleTimeout);
            return DropReason::IdleTimeout.as_str();
        };
        match read {
            Ok(0) => return "client closed",
            Ok(_) => {}
            Err(TransportError::TextMessage) => {
                server.counters.drop(DropReason::Malformed);
                return "websocket text message";
            }
            Err(_) => return "read error",
        }
    }
}

/// Acts on one frame from a logged-in client. `Err` closes the connection.
fn handle_frame(
    server: &DerpServer,
    id: u64,
    handle: &ConnHandle,
    bytes: &Bytes,
) -> Result<(), &'static str> {
    let counters = &server.counters;
    let Ok(frame) = Frame::parse_frame(bytes, C2S) else {
        return Ok(());
    };
    match frame {
        Frame::SendPacket(p) => {
            count_in(counters, p.packet.len());
            let route = server.registry().route(clock::now(), id, &p.dst);
            match route {
                Route::Deliver(dst) => deliver(counters, &dst, handle.key, p.packet),
                Route::Forward(link) => forward_out(counters, &link, handle.key, p.dst, p.packet),
                Route::NotHere { peer_gone } => {
                    counters.drop(DropReason::NoSuchPeer);
                    if peer_gone {
                        queue_peer_gone(counters, handle, p.dst, PeerGoneReason::NotHere);
                    }
                }
                Route::SenderGone => {}
            }
        }
        Frame::ForwardPacket(p) => {
            let route = server
                .registry()
                .forward(id, &p.dst)
                .map_err(|_| mesh_denied(server))?;
            count_in(counters, p.packet.len());
            ServerCounters::inc(&counters.forwarded_in);
            match route {
                Route::Deliver(dst) => deliver(counters, &dst, p.src, p.packet),
                _ => counters.drop(DropReason::NoSuchPeer),
            }
        }
        Frame::NotePreferred(n) => server.registry().note_preferred(id, n.preferred),
        Frame::WatchConns(_) => {
            let wake = server
                .registry()
                .watch_conns(id)
                .map_err(|_| mesh_denied(server))?;
            if let Some(h) = wake {
                h.wake_mesh();
            }
        }
        Frame::ClosePeer(c) => {
            let target = server
                .registry()
                .close_peer(id, &c.peer)
                .map_err(|_| mesh_denied(server))?;
            if let Some(t) = target {
                t.close.cancel();
            }
        }
        Frame::Ping(p) => {
            handle.set_pong(p.data);
        }
        Frame::Pong(_) => {}
        _ => {
            counters.drop(DropReason::UnknownFrame);
            tracing::debug!(key = %handle.key.short(), ty = ?frame.ty(), "skipped DERP frame");
        }
    }
    Ok(())
}

fn count_in(counters: &ServerCounters, len: usize) {
    ServerCounters::inc(&counters.packets_in);
    ServerCounters::add(&counters.bytes_in, len as u64);
}

fn deliver(counters: &ServerCounters, dst: &ConnHandle, src: NodePublic, packet: &[u8]) {
    match dst.enqueue_packet(src, packet) {
        Enqueued::Queued => {}
        Enqueued::DroppedOldest => counters.drop(DropReason::QueueFull),
        Enqueued::Closed => counters.drop(DropReason::Gone),
        Enqueued::OverBudget => counters.drop(DropReason::BudgetFull),
    }
}

fn forward_out(
    counters: &ServerCounters,
    link: &LinkHandle,
    src: NodePublic,
    dst: NodePublic,
    packet: &[u8],
) {
    match link.enqueue(src, dst, packet) {
        Enqueued::Queued => ServerCounters::inc(&counters.forwarded_out),
        Enqueued::DroppedOldest => {
            ServerCounters::inc(&counters.forwarded_out);
            counters.drop(DropReason::MeshQueueFull);
        }
        Enqueued::Closed => counters.drop(DropReason::Gone),
        Enqueued::OverBudget => counters.drop(DropReason::BudgetFull),
    }
}

pub(super) fn queue_peer_gone(
    counters: &ServerCounters,
    to: &ConnHandle,
    peer: NodePublic,
    reason: PeerGoneReason,
) {
    if to.enqueue_control(Control::PeerGone(peer, reason)) {
        match reason {
            PeerGoneReason::NotHere => ServerCounters::inc(&counters.peer_gone_not_here),
            _ => ServerCounters::inc(&counters.peer_gone_disconnected),
        }
    } else {
        counters.drop(DropReason::ControlQueueFull);
    }
}

fn mesh_denied(server: &DerpServer) -> &'static str {
    server.counters.drop(DropReason::MeshDenied);
    DropReason::MeshDenied.as_str()
}

fn keepalive_period(server: &DerpServer) -> Duration {
    let jitter_ms = u64::try_from(server.config.keepalive_jitter.as_millis()).unwrap_or(u64::MAX);
    server.config.keepalive + Duration::from_millis(rand::random_range(0..=jitter_ms))
}

async fn write_loop<W: DerpWrite>(
    server: &DerpServer,
    id: u64,
    handle: &ConnHandle,
    writer: &mut W,
) -> &'static str {
    let counters = &server.counters;
    let period = keepalive_period(server);
    let mut next_keepalive = tokio::time::Instant::from_std(clock::now()) + period;
    let mut batch = BytesMut::with_capacity(64 << 10);
    let mut pending = Pending::default();
    loop {
        let mut keepalive = false;
        tokio::select! {
            biased;
            () = server.shutdown.cancelled() => {
                if let Some((reconnect_in, try_for)) = server.config.restart_hint {
                    let ms = |d: Duration| u32::try_from(d.as_millis()).unwrap_or(u32::MAX);
                    let r = Restarting { reconnect_in_ms: ms(reconnect_in), try_for_ms: ms(try_for) };
                    if Frame::Restarting(r).encode(&mut batch).is_ok()
                        && write(server, writer, batch.split().freeze()).await.is_ok()
                    {
                        ServerCounters::inc(&counters.restarting);
                    }
                }
                return "server shutting down";
            }
            () = handle.notify.notified() => {}
            () = tokio::time::sleep_until(next_keepalive) => keepalive = true,
        }
        let more = handle.take(PACKETS_PER_BATCH, &mut pending);
        if more {
            // Come straight back for the rest after this write.
            handle.notify.notify_one();
        }
        for c in pending.control.drain(..) {
            let Control::PeerGone(peer, reason) = c;
            let _ = Frame::PeerGone(PeerGone {
                peer,
                reason: Some(reason),
            })
            .encode(&mut batch);
        }
        if let Some(data) = pending.pong.take() {
            let _ = Frame::Pong(crate::wire::derp::Pong { data }).encode(&mut batch);
            ServerCounters::inc(&counters.pongs);
        }
        if std::mem::take(&mut pending.mesh) {
            for c in server.registry().take_mesh_updates(id) {
                let frame = if c.present {
                    Frame::PeerPresent(PeerPresent {
                        key: c.key,
                        endpoint: c.endpoint,
                        flags: Some(c.flags),
                    })
                } else {
                    Frame::PeerGone(PeerGone {
                        peer: c.key,
                        reason: Some(PeerGoneReason::Disconnected),
                    })
                };
                let _ = frame.encode(&mut batch);
            }
        }
        let (mut packets, mut bytes) = (0u64, 0u64);
        let taken: usize = pending.packets.iter().map(|(_, p)| p.len()).sum();
        for (src, packet) in pending.packets.drain(..) {
            if Frame::RecvPacket(RecvPacket {
                src,
                packet: &packet,
            })
            .encode(&mut batch)
            .is_ok()
            {
                packets += 1;
                bytes += packet.len() as u64;
            }
        }
        // Given back once copied into the batch, not after the write: this future is
        // dropped mid-write when the reader ends the connection, and bytes released only
        // after the write would then never come back. A batch is bounded by
        // PACKETS_PER_BATCH, so what the budget does not see is small and per connection.
        handle.release(taken);
        if keepalive {
            let _ = Frame::KeepAlive(KeepAlive).encode(&mut batch);
            ServerCounters::inc(&counters.keepalives);
            next_keepalive = tokio::time::Instant::from_std(clock::now()) + period;
        }
        if batch.is_empty() {
            continue;
        }
        let written = write(server, writer, batch.split().freeze()).await;
        if written.is_err() {
            return "write failed or timed out";
        }
        ServerCounters::add(&counters.packets_relayed, packets);
        ServerCounters::add(&counters.bytes_relayed, bytes);
    }
}
