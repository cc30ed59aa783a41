//! HTTP routes: `GET /derp` with `Upgrade: DERP` or a `derp` websocket, 426 otherwise;
//! `GET|HEAD /derp/latency-check` and `/derp/probe` → 200.

use super::DerpServer;
use super::conn::serve_conn;
use super::limits::ConnSlot;
use crate::proto::derp::server::{DropReason, ServerCounters};
use crate::runtime::derp::transport::{DerpRead, DerpWrite, RawReader, RawWriter, TransportError};
use crate::wire::derp::PROTOCOL_VERSION;
use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use bytes::{Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;

/// The routes, with the server as state. Mergeable into a larger app.
pub(super) fn router(server: Arc<DerpServer>) -> Router {
    Router::new()
        .route("/derp", any(derp))
        .route("/derp/latency-check", get(probe).head(probe))
        .route("/derp/probe", get(probe).head(probe))
        .with_state(server)
}

async fn probe() -> impl IntoResponse {
    ([(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], "")
}

fn upgrade_required() -> Response {
    (
        StatusCode::UPGRADE_REQUIRED,
        "DERP requires connection upgrade\n",
    )
        .into_response()
}

async fn derp(State(server): State<Arc<DerpServer>>, req: Request) -> Response {
    if server.shutdown.is_cancelled() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "DERP server shutting down\n",
        )
            .into_response();
    }
    let remote = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let headers = req.headers();
    let upgrade = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let wants_ws = upgrade == "websocket"
        && headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|p| p.trim() == "derp"));
    // Very old clients sent "Upgrade: WebSocket" but spoke raw DERP; Go serves them raw.
    if !wants_ws && upgrade != "derp" && upgrade != "websocket" {
        return upgrade_required();
    }
    // The slot is taken before the upgrade and lives in the connection task, so the
    // caps cover connections still in their login phase.
    let slot = match server.slots.acquire(remote.map(|r| r.ip())) {
        Ok(slot) => slot,
        Err(reason) => return refused(&server, reason, remote),
    };
    if wants_ws {
        return websocket(server, req, remote, slot).await;
    }
    raw(server, req, remote, slot)
}

fn refused(server: &DerpServer, reason: DropReason, remote: Option<SocketAddr>) -> Response {
    server.counters.drop(reason);
    tracing::debug!(?remote, reason = reason.as_str(), "DERP connection refused");
    let status = match reason {
        DropReason::PerIpLimit => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    (status, "too many DERP connections\n").into_response()
}

fn raw(
    server: Arc<DerpServer>,
    mut req: Request,
    remote: Option<SocketAddr>,
    slot: ConnSlot,
) -> Response {
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return upgrade_required();
    };
    let s = Arc::clone(&server);
    server.tasks.spawn(async move {
        let _slot = slot;
        // A client that never lets the upgrade complete is bounded like a slow login.
        match tokio::time::timeout(s.config.login_timeout, on_upgrade).await {
            Ok(Ok(upgraded)) => {
                ServerCounters::inc(&s.counters.accepts);
                let (r, w) = tokio::io::split(TokioIo::new(upgraded));
                serve_conn(s, RawReader(r), RawWriter(w), remote, "upgrade").await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "DERP upgrade failed"),
            Err(_) => s.counters.drop(DropReason::BadLogin),
        }
    });
    let key =
        HeaderValue::from_str(&server.public.to_hex()).unwrap_or(HeaderValue::from_static(""));
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::UPGRADE, "DERP")
        .header(header::CONNECTION, "Upgrade")
        .header("Derp-Version", PROTOCOL_VERSION.to_string())
        .header("Derp-Public-Key", key)
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

async fn websocket(
    server: Arc<DerpServer>,
    req: Request,
    remote: Option<SocketAddr>,
    slot: ConnSlot,
) -> Response {
    let (mut parts, _body) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let s = Arc::clone(&server);
    ws.protocols(["derp"])
        .max_message_size(8 << 20)
        .max_frame_size(8 << 20)
        .on_upgrade(move |socket| {
            // axum spawns this future; tracking it lets shutdown wait for it.
            let tasks = s.tasks.clone();
            tasks.track_future(async move {
                let _slot = slot;
                if socket.protocol().is_none_or(|p| p.as_bytes() != b"derp") {
                    return;
                }
                ServerCounters::inc(&s.counters.accepts);
                ServerCounters::inc(&s.counters.accepts_websocket);
                let (w, r) = socket.split();
                serve_conn(s, AxumWsReader(r), AxumWsWriter(w), remote, "websocket").await;
            })
        })
}

/// The read half of an axum websocket as a DERP byte stream.
struct AxumWsReader(SplitStream<WebSocket>);

impl DerpRead for AxumWsReader {
    async fn read_into(&mut self, buf: &mut BytesMut) -> Result<usize, TransportError> {
        loop {
            match self.0.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(0),
                Some(Ok(Message::Binary(b))) if !b.is_empty() => {
                    buf.extend_from_slice(&b);
                    return Ok(b.len());
                }
                Some(Ok(Message::Text(_))) => return Err(TransportError::TextMessage),
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(TransportError::WebSocket(e.to_string())),
            }
        }
    }
}

/// The write half of an axum websocket; one message per batch.
struct AxumWsWriter(SplitSink<WebSocket, Message>);

impl DerpWrite for AxumWsWriter {
    async fn write_all(&mut self, data: Bytes) -> Result<(), TransportError> {
        self.0
            .send(Message::Binary(data))
            .await
            .map_err(|e| TransportError::WebSocket(e.to_string()))
    }
    async fn shutdown(&mut self) {
        let _ = self.0.close().await;
    }
}
