//! One coordinator stream: `hello`, registration, then a reader feeding the registry and
//! a writer draining the stream's bounded queue, until either side closes.

use super::{ConnTx, Shared};
use crate::proto::coord::server::{ConnId, PeerAuth, TunnelAuthorizer};
use crate::runtime::clock;
use crate::services::control::Principal;
use crate::wire::addr::NodeId;
use crate::wire::coord::{self, ClientMsg, DecodeError, Hello, ServerMsg};
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Which agents a user's stream may tunnel to: filled by asynchronous control-plane checks
/// made just before each `add_tunnel` reaches the registry, which consults it synchronously.
#[derive(Debug, Default)]
pub(super) struct Grants(Mutex<HashSet<NodeId>>);

impl Grants {
    /// The agents currently allowed.
    pub(super) fn agents(&self) -> Vec<NodeId> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .copied()
            .collect()
    }

    pub(super) fn set(&self, agent: NodeId, allowed: bool) {
        let mut g = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if allowed {
            g.insert(agent);
        } else {
            g.remove(&agent);
        }
    }
}

impl TunnelAuthorizer for Grants {
    fn may_use(&self, agent: NodeId) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&agent)
    }
}

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

/// Longest close reason a websocket close frame can carry.
const MAX_CLOSE_REASON: usize = 123;

fn close_frame(code: u16, reason: &str) -> Message {
    let mut end = reason.len().min(MAX_CLOSE_REASON);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Message::Close(Some(CloseFrame {
        code,
        reason: reason[..end].to_string().into(),
    }))
}

/// Closes a stream that never registered, after an optional error message.
async fn refuse(shared: &Shared, mut sink: Sink, error: Option<String>, code: u16, reason: &str) {
    shared.refused.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(code, reason, "coordinator stream refused");
    let send = async {
        if let Some(e) = error {
            sink.send(Message::Text(ServerMsg::error(e).encode().into()))
                .await?;
        }
        sink.send(close_frame(code, reason)).await?;
        sink.close().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), send).await;
}

async fn read_hello(
    shared: &Shared,
    stream: &mut Stream,
) -> Result<Hello, (Option<String>, u16, String)> {
    let first = tokio::select! {
        r = tokio::time::timeout(shared.cfg.hello_timeout, stream.next()) => r,
        () = shared.cancel.cancelled() => {
            return Err((None, coord::CLOSE_GOING_AWAY, "coordinator shutting down".into()));
        }
    };
    let text = match first {
        Err(_) => {
            return Err((
                None,
                coord::CLOSE_PROTOCOL,
                "no hello within the time limit".into(),
            ));
        }
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) => {
            return Err((
                None,
                coord::CLOSE_PROTOCOL,
                "the first message must be a text hello".into(),
            ));
        }
        Ok(_) => {
            return Err((
                None,
                coord::CLOSE_NORMAL,
                "stream ended before hello".into(),
            ));
        }
    };
    match coord::decode_client(text.as_str()) {
        Ok(ClientMsg::Hello(h)) => Ok(h),
        Ok(other) => Err((
            Some(format!("expected hello, got {}", other.kind())),
            coord::CLOSE_PROTOCOL,
            "the first message must be hello".into(),
        )),
        Err(e) => {
            let code = if e.is_fatal() {
                coord::CLOSE_TOO_BIG
            } else {
                coord::CLOSE_PROTOCOL
            };
            Err((
                Some(e.to_string()),
                code,
                "the first message must be hello".into(),
            ))
        }
    }
}

/// What a stream was admitted with, kept so it can be checked again when the control
/// plane changes.
pub(super) struct Creds {
    /// The token of the upgrade request.
    pub(super) token: String,
    /// Who it stood for then.
    pub(super) principal: Principal,
    /// The agents a user's stream was allowed.
    pub(super) grants: Arc<Grants>,
}

impl std::fmt::Debug for Creds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Creds")
            .field("principal", &self.principal.describe())
            .finish_non_exhaustive()
    }
}

pub(super) async fn run(
    shared: Arc<Shared>,
    socket: WebSocket,
    principal: Principal,
    token: String,
) {
    let (sink, mut stream) = socket.split();
    let hello = match read_hello(&shared, &mut stream).await {
        Ok(h) => h,
        Err((error, code, reason)) => return refuse(&shared, sink, error, code, &reason).await,
    };
    let grants = Arc::new(Grants::default());
    let auth = match &principal {
        Principal::Agent { agent_id, .. } => PeerAuth::Agent { id: *agent_id },
        Principal::Service => PeerAuth::Service,
        Principal::User(user) => {
            // A client under an agent's id would receive the agent's tunnels once the agent
            // is offline; the registry cannot know agent ids, so check here.
            match shared.control.workspace_by_agent(hello.id).await {
                Ok(None) => {}
                Ok(Some(_)) => {
                    let reason = format!("node id {} belongs to an agent", hello.id);
                    return refuse(&shared, sink, None, coord::CLOSE_POLICY, &reason).await;
                }
                Err(e) => {
                    return refuse(&shared, sink, None, coord::CLOSE_TRY_AGAIN, &e.to_string())
                        .await;
                }
            }
            PeerAuth::Client {
                principal: user.name.clone(),
                authorizer: grants.clone(),
            }
        }
    };

    let conn = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    let (msgs, rx) = mpsc::channel(shared.cfg.queue.max(1));
    let own = msgs.clone();
    let (close, close_rx) = watch::channel(None);
    {
        let mut hub = shared.hub();
        if shared.cancel.is_cancelled() {
            drop(hub);
            return refuse(
                &shared,
                sink,
                None,
                coord::CLOSE_GOING_AWAY,
                "coordinator shutting down",
            )
            .await;
        }
        hub.conns.insert(
            conn,
            ConnTx {
                msgs: msgs.clone(),
                close,
                creds: Arc::new(Creds {
                    token,
                    principal: principal.clone(),
                    grants: grants.clone(),
                }),
            },
        );
        hub.registry.connect(conn, &hello, auth, clock::now());
        shared.dispatch(&mut hub);
    }
    tracing::debug!(conn, id = %hello.id, who = principal.describe(), "coordinator stream open");

    let we_closed = tokio::select! {
        () = write_loop(sink, rx, close_rx, shared.cfg.ping_interval) => true,
        () = read_loop(&shared, conn, &mut stream, &principal, &grants, own) => false,
    };
    if we_closed {
        // Finish the closing handshake: read (and discard) until the peer's close, so the
        // socket is not reset with unread data and the peer sees our close frame.
        let drain = async {
            while let Some(Ok(m)) = stream.next().await {
                if matches!(m, Message::Close(_)) {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    }

    let mut hub = shared.hub();
    hub.conns.remove(&conn);
    hub.registry.close(conn, false, clock::now());
    shared.dispatch(&mut hub);
    drop(hub);
    tracing::debug!(conn, id = %hello.id, "coordinator stream closed");
}

/// Reads requests into the registry until the stream ends or goes silent.
///
/// Before each request it waits for a free slot in the stream's own outbound queue: a
/// request causes at most one message back to its sender, so a peer that floods requests
/// is slowed to the pace at which it reads answers (TCP backpressure) instead of
/// overflowing its queue. `own` is that queue.
async fn read_loop(
    shared: &Shared,
    conn: ConnId,
    stream: &mut Stream,
    principal: &Principal,
    grants: &Grants,
    own: mpsc::Sender<String>,
) {
    loop {
        match tokio::time::timeout(shared.cfg.idle_timeout, own.reserve()).await {
            Ok(Ok(permit)) => drop(permit),
            Ok(Err(_)) => return,
            Err(_) => return tracing::debug!(conn, "coordinator stream not reading; dropping"),
        }
        let next = tokio::time::timeout(shared.cfg.idle_timeout, stream.next()).await;
        let text = match next {
            Err(_) => return tracing::debug!(conn, "coordinator stream idle; dropping"),
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {
                shared.with_registry(|r| r.touch(conn, clock::now()));
                continue;
            }
            Ok(Some(Ok(Message::Binary(_)))) => {
                let e = DecodeError::Malformed("binary frames are not part of the protocol".into());
                shared.with_registry(|r| r.bad_message(conn, &e, clock::now()));
                continue;
            }
            Ok(Some(Ok(Message::Text(t)))) => t,
        };
        match coord::decode_client(text.as_str()) {
            Ok(msg) => {
                if let (ClientMsg::AddTunnel { id }, Principal::User(_)) = (&msg, principal) {
                    let allowed = shared.control.may_use_agent(principal, *id).await;
                    grants.set(*id, allowed);
                }
                shared.with_registry(|r| r.handle_message(conn, msg, clock::now()));
            }
            Err(e) => shared.with_registry(|r| r.bad_message(conn, &e, clock::now())),
        }
    }
}

/// Writes queued messages and pings; on a close request, flushes what is queued (bounded
/// in time) and sends the close frame.
async fn write_loop(
    mut sink: Sink,
    mut rx: mpsc::Receiver<String>,
    mut close_rx: watch::Receiver<Option<(u16, String)>>,
    ping_interval: Duration,
) {
    let first = tokio::time::Instant::from_std(clock::now()) + ping_interval;
    let mut ping = tokio::time::interval_at(first, ping_interval);
    loop {
        let msg = tokio::select! {
            biased;
            m = rx.recv() => match m {
                Some(text) => Message::Text(text.into()),
                None => break,
            },
            _ = close_rx.changed() => break,
            _ = ping.tick() => Message::Ping(Default::default()),
        };
        if sink.send(msg).await.is_err() {
            return;
        }
    }
    let frame = close_rx.borrow().clone();
    let flush = async {
        while let Ok(text) = rx.try_recv() {
            sink.send(Message::Text(text.into())).await?;
        }
        if let Some((code, reason)) = frame {
            sink.send(close_frame(code, &reason)).await?;
        }
        sink.close().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(2), flush).await;
}
