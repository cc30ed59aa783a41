//! Coordinator client: the websocket, reconnect with jittered backoff, tunnel replay.
//!
//! Owns one task per [`CoordClient`]. The protocol state (our node, wanted tunnels, what is
//! queued, the backoff) lives in the sans-IO [`ClientState`], shared with the handle under a
//! mutex: handle methods change it synchronously and wake the task, so commands never block,
//! never get lost, and coalesce (latest node wins) instead of queueing without bound.
//!
//! While the coordinator is unreachable, WireGuard sessions keep working: the client only
//! reports peers `lost` (never removes them) and replays everything once it is back.

use crate::proto::coord::client::{ClientEvent, ClientState, DEFAULT_BACKOFF, coordinate_url};
use crate::runtime::clock;
use crate::wire::addr::NodeId;
use crate::wire::coord::{self, ClientMsg, Node, PeerUpdate};
use futures_util::{SinkExt, StreamExt};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

/// How long a connection attempt (TCP + upgrade) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the server has to answer `hello`.
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
/// How often we ping the server.
const PING_INTERVAL: Duration = Duration::from_secs(15);
/// Silence after which the stream is presumed dead (a laptop that slept, a dead NAT entry).
const DEAD_AFTER: Duration = Duration::from_secs(45);
/// How long a write may block before the stream is presumed dead.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long `shutdown` waits for the server to close after `disconnect`.
const GRACEFUL_TIMEOUT: Duration = Duration::from_secs(1);

/// Where and as whom to connect.
#[derive(Clone)]
pub struct CoordClientConfig {
    /// The coordinator's base URL, `http://host:port`; the path is appended.
    pub url: String,
    /// Bearer token (agent, user or service token).
    pub token: String,
    /// Our node id; an agent must use the id its token binds.
    pub id: NodeId,
    /// A name for the server's logs.
    pub name: String,
    /// Trust for `https`/`wss` URLs.
    pub tls: crate::runtime::tls::ClientTls,
}

impl fmt::Debug for CoordClientConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CoordClientConfig")
            .field("url", &self.url)
            .field("id", &self.id)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What the client reports to its owner.
#[derive(Debug, Clone, PartialEq)]
pub enum CoordEvent {
    /// Registered with the coordinator; everything has been replayed.
    Connected {
        /// The coordinator's DERP map, if it has one.
        derp_map: Option<serde_json::Value>,
    },
    /// An established stream dropped; reconnecting. Followed by `lost` peer updates.
    Disconnected {
        /// Why.
        error: String,
    },
    /// A peer changed.
    Peer(PeerUpdate),
    /// The coordinator refused a request or sent something undecodable.
    Error(String),
    /// The coordinator refused us (401/403, a policy close, replaced by another stream).
    /// Retried at the backoff's cap in case the cause is fixed.
    Closed {
        /// Why.
        reason: String,
    },
}

/// A snapshot of the client's connection health.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CoordStatus {
    /// Whether a stream is registered right now.
    pub connected: bool,
    /// Streams that reached `welcome`.
    pub connects: u64,
    /// Streams that reached `welcome` after the first.
    pub reconnects: u64,
    /// The most recent failure, if any.
    pub last_error: Option<String>,
    /// Registrations refused because another process held our node id.
    pub conflicts: u64,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<ClientState>,
    status: Mutex<CoordStatus>,
    /// Wakes the task: new requests, `reconnect_now`, shutdown.
    wake: Notify,
    reconnect: AtomicBool,
    /// Set by `retry_now`: end the current backoff wait, if any.
    skip_wait: AtomicBool,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, ClientState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn status(&self) -> MutexGuard<'_, CoordStatus> {
        self.status
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
    fn closing(&self) -> bool {
        self.state().is_closing()
    }
    /// Waits until shutdown is requested.
    async fn until_closing(&self) {
        while !self.closing() {
            self.wake.notified().await;
        }
    }
}

/// A long-lived coordinator client. Dropping it stops its task at once (the server sees the
/// stream as lost); [`CoordClient::shutdown`] says goodbye first.
#[derive(Debug)]
pub struct CoordClient {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

impl CoordClient {
    /// Starts the client task. Events go to `events`; the task waits when it is full.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn spawn(cfg: CoordClientConfig, events: mpsc::Sender<CoordEvent>) -> Self {
        let shared = Arc::new(Shared {
            state: Mutex::new(
                ClientState::new(cfg.id, cfg.name.clone(), DEFAULT_BACKOFF)
                    .with_instance(format!("{:032x}", rand::random::<u128>())),
            ),
            status: Mutex::new(CoordStatus::default()),
            wake: Notify::new(),
            reconnect: AtomicBool::new(false),
            skip_wait: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(shared.clone(), cfg, events));
        Self {
            shared,
            task: Some(task),
        }
    }

    /// Sets our node; sent now if connected, and after every reconnect. The newest wins.
    pub fn update_self(&self, node: Node) {
        self.shared.state().update_self(node);
        self.shared.wake.notify_one();
    }

    /// Wants a tunnel to `id`, kept across reconnects.
    pub fn add_tunnel(&self, id: NodeId) {
        self.shared.state().add_tunnel(id);
        self.shared.wake.notify_one();
    }

    /// No longer wants a tunnel to `id`.
    pub fn remove_tunnel(&self, id: NodeId) {
        self.shared.state().remove_tunnel(id);
        self.shared.wake.notify_one();
    }

    /// Tells tunnel peer `id` we are ready for a handshake (dropped if not connected).
    pub fn ready_for_handshake(&self, id: NodeId) {
        self.shared.state().ready_for_handshake(id);
        self.shared.wake.notify_one();
    }

    /// Connection health.
    pub fn status(&self) -> CoordStatus {
        self.shared.status().clone()
    }

    /// Drops the current stream (if any) and reconnects without waiting, e.g. after the
    /// machine wakes from sleep or the network changes.
    pub fn reconnect_now(&self) {
        self.shared.reconnect.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// Ends a backoff wait between attempts now (the server was seen answering again).
    /// Unlike [`Self::reconnect_now`] it leaves a stream that is up, or an attempt under
    /// way, alone: replacing our own registration would look like a second copy of us.
    pub fn retry_now(&self) {
        self.shared.skip_wait.store(true, Ordering::SeqCst);
        self.shared.wake.notify_one();
    }

    /// Sends `disconnect` if connected, waits briefly for the server to close, and stops.
    pub async fn shutdown(mut self) {
        self.shared.state().disconnect();
        self.shared.wake.notify_one();
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(GRACEFUL_TIMEOUT * 3, &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }
}

impl Drop for CoordClient {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// How one connection attempt ended.
enum Outcome {
    /// Shut down on request.
    Done,
    /// Never registered (connect failed, timed out).
    Failed(String),
    /// The server refused us; permanent until something changes.
    Refused(String),
    /// Another live process holds our node id.
    Conflict(String),
    /// The stream ended after registering, or was dropped for `reconnect_now`.
    Lost(String),
}

async fn run(shared: Arc<Shared>, cfg: CoordClientConfig, events: mpsc::Sender<CoordEvent>) {
    let url = match coordinate_url(&cfg.url) {
        Ok(u) => u,
        Err(e) => {
            shared.status().last_error = Some(e.to_string());
            let _ = events
                .send(CoordEvent::Closed {
                    reason: e.to_string(),
                })
                .await;
            return;
        }
    };
    let emit = Emitter {
        events: &events,
        shared: &shared,
    };
    // The last failure logged at warn level; the same reason on every retry is not news.
    let mut warned: Option<String> = None;
    loop {
        if shared.closing() {
            return;
        }
        shared.reconnect.store(false, Ordering::SeqCst);
        let mut up_since = None;
        let outcome = attempt(&shared, &cfg, &url, &emit, &mut up_since).await;
        let lasted = up_since.map(|t| clock::now().saturating_duration_since(t));
        let lost = shared.state().handle_disconnect(lasted);
        shared.status().connected = false;
        let was_up = lasted.is_some();
        match outcome {
            Outcome::Done => return,
            Outcome::Failed(e) => {
                if warned.as_deref() == Some(e.as_str()) {
                    tracing::debug!(error = e, "coordinator connect failed again");
                } else {
                    tracing::warn!(
                        url,
                        error = e,
                        "cannot reach the coordinator; retrying with backoff"
                    );
                    warned = Some(e.clone());
                }
                shared.status().last_error = Some(e);
            }
            Outcome::Conflict(reason) => {
                let first = !shared.state().is_conflicted();
                if first {
                    tracing::error!(
                        reason,
                        "coordinator refused this process: another process holds the node id; \
                         retrying with a backoff of up to 30 s"
                    );
                } else {
                    tracing::debug!(reason, "coordinator still refuses: conflict");
                }
                shared.state().handle_conflict();
                {
                    let mut st = shared.status();
                    st.last_error = Some(reason.clone());
                    st.conflicts += 1;
                }
                emit.send(CoordEvent::Closed { reason }).await;
            }
            Outcome::Refused(reason) => {
                if warned.as_deref() == Some(reason.as_str()) {
                    tracing::debug!(reason, "coordinator refused us again");
                } else {
                    tracing::warn!(url, reason, "the coordinator refused this node's token");
                    warned = Some(reason.clone());
                }
                shared.state().handle_refused();
                shared.status().last_error = Some(reason.clone());
                emit.send(CoordEvent::Closed { reason }).await;
            }
            Outcome::Lost(error) => {
                warned = None;
                if was_up {
                    tracing::info!(url, error, "coordinator stream lost; reconnecting");
                } else {
                    tracing::debug!(error, "coordinator stream lost");
                }
                shared.status().last_error = Some(error.clone());
                if was_up {
                    emit.send(CoordEvent::Disconnected { error }).await;
                }
            }
        }
        for update in lost {
            emit.send(CoordEvent::Peer(update)).await;
        }
        if !wait_before_retry(&shared).await {
            return;
        }
    }
}

/// Sleeps for the backoff delay, cut short by `reconnect_now`. False if shutting down.
async fn wait_before_retry(shared: &Shared) -> bool {
    let delay = if shared.reconnect.load(Ordering::SeqCst) {
        shared.state().reset_backoff();
        Duration::ZERO
    } else {
        shared.state().next_delay(rand::random::<f64>())
    };
    let deadline = tokio::time::Instant::from_std(clock::now() + delay);
    loop {
        if shared.closing() {
            return false;
        }
        if shared.reconnect.load(Ordering::SeqCst) || shared.skip_wait.swap(false, Ordering::SeqCst)
        {
            shared.state().reset_backoff();
            return true;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => return !shared.closing(),
            () = shared.wake.notified() => {}
        }
    }
}

/// Sends events to the owner, giving up if shutdown is requested meanwhile.
struct Emitter<'a> {
    events: &'a mpsc::Sender<CoordEvent>,
    shared: &'a Shared,
}

impl Emitter<'_> {
    async fn send(&self, ev: CoordEvent) {
        tokio::select! {
            // A dropped receiver is fine: the client keeps the node and tunnels current.
            _ = self.events.send(ev) => {}
            () = self.shared.until_closing() => {}
        }
    }
}

type Ws = tokio_tungstenite::WebSocketStream<crate::runtime::tls::Stream>;

async fn attempt(
    shared: &Shared,
    cfg: &CoordClientConfig,
    url: &str,
    emit: &Emitter<'_>,
    up_since: &mut Option<Instant>,
) -> Outcome {
    let mut req = match url.into_client_request() {
        Ok(r) => r,
        Err(e) => return Outcome::Refused(format!("bad coordinator URL: {e}")),
    };
    let Some(host) = req
        .uri()
        .host()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
    else {
        return Outcome::Refused(format!("coordinator URL {url} has no host"));
    };
    let secure = req.uri().scheme_str() == Some("wss");
    let port = req
        .uri()
        .port_u16()
        .unwrap_or(if secure { 443 } else { 80 });
    let target = secure.then(|| crate::runtime::tls::TlsTarget::named(host.clone()));
    match format!("Bearer {}", cfg.token).parse() {
        Ok(v) => req.headers_mut().insert(http::header::AUTHORIZATION, v),
        Err(_) => return Outcome::Refused("token is not a valid header value".into()),
    };
    let mut ws_cfg = WebSocketConfig::default();
    ws_cfg.max_message_size = Some(4 * coord::MAX_MESSAGE_BYTES);
    ws_cfg.max_frame_size = Some(4 * coord::MAX_MESSAGE_BYTES);
    let connect = async {
        let stream = cfg
            .tls
            .dial(&host, port, target.as_ref())
            .await
            .map_err(|e| e.to_string())?;
        tokio_tungstenite::client_async_with_config(req, stream, Some(ws_cfg))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(resp) => http_refusal(&resp),
                e => e.to_string(),
            })
            .map(|(ws, _)| ws)
    };
    let result = tokio::select! {
        r = tokio::time::timeout(CONNECT_TIMEOUT, connect) => r,
        () = shared.until_closing() => return Outcome::Done,
    };
    let ws = match result {
        Err(_) => return Outcome::Failed("connect timed out".into()),
        Ok(Err(why)) if why.starts_with("HTTP 401") || why.starts_with("HTTP 403") => {
            return Outcome::Refused(why);
        }
        Ok(Err(why)) => return Outcome::Failed(why),
        Ok(Ok(ws)) => ws,
    };
    session(shared, ws, emit, up_since).await
}

/// An HTTP answer instead of the upgrade, as `HTTP <status>: <start of body>`.
fn http_refusal(resp: &tungstenite::http::Response<Option<Vec<u8>>>) -> String {
    let body = resp
        .body()
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    format!(
        "HTTP {}: {}",
        resp.status(),
        body.trim().chars().take(200).collect::<String>()
    )
}

async fn send(ws: &mut Ws, msg: Message) -> Result<(), String> {
    match tokio::time::timeout(WRITE_TIMEOUT, ws.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("write timed out".into()),
    }
}

async fn session(
    shared: &Shared,
    mut ws: Ws,
    emit: &Emitter<'_>,
    up_since: &mut Option<Instant>,
) -> Outcome {
    let hello = shared.state().hello();
    if let Err(e) = send(&mut ws, Message::text(hello.encode())).await {
        return Outcome::Failed(e);
    }
    let start = clock::now();
    let welcome_deadline = tokio::time::Instant::from_std(start + WELCOME_TIMEOUT);
    let mut last_rx = start;
    let mut ping = tokio::time::interval_at(
        tokio::time::Instant::from_std(start + PING_INTERVAL),
        PING_INTERVAL,
    );
    loop {
        // Write everything queued before waiting again.
        loop {
            let Some(msg) = shared.state().poll_transmit() else {
                break;
            };
            let goodbye = matches!(msg, ClientMsg::Disconnect {});
            if let Err(e) = send(&mut ws, Message::text(msg.encode())).await {
                return Outcome::Lost(e);
            }
            if goodbye {
                await_close(&mut ws).await;
                return Outcome::Done;
            }
        }
        if shared.closing() && up_since.is_none() {
            return Outcome::Done;
        }
        if shared.reconnect.load(Ordering::SeqCst) {
            return Outcome::Lost("reconnect requested".into());
        }
        let welcome_wait = async {
            match up_since {
                None => tokio::time::sleep_until(welcome_deadline).await,
                Some(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shared.wake.notified() => {}
            () = welcome_wait => return Outcome::Failed("no welcome from coordinator".into()),
            _ = ping.tick() => {
                if clock::now().saturating_duration_since(last_rx) > DEAD_AFTER {
                    return Outcome::Lost("coordinator went silent".into());
                }
                if let Err(e) = send(&mut ws, Message::Ping(Default::default())).await {
                    return Outcome::Lost(e);
                }
            }
            m = ws.next() => {
                last_rx = clock::now();
                let text = match m {
                    None => return Outcome::Lost("stream ended".into()),
                    Some(Err(e)) => return Outcome::Lost(e.to_string()),
                    Some(Ok(Message::Close(frame))) => return closed_by_server(frame),
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(_)) => continue,
                };
                let event = match coord::decode_server(text.as_str()) {
                    Ok(msg) => shared.state().handle_message(msg),
                    Err(e) => Some(ClientEvent::Error(format!("undecodable coordinator message: {e}"))),
                };
                match event {
                    None => {}
                    Some(ClientEvent::Connected { derp_map }) => {
                        *up_since = Some(clock::now());
                        {
                            let mut st = shared.status();
                            st.connected = true;
                            st.connects += 1;
                            st.reconnects = st.connects - 1;
                        }
                        emit.send(CoordEvent::Connected { derp_map }).await;
                    }
                    Some(ClientEvent::Peer(u)) => emit.send(CoordEvent::Peer(u)).await,
                    Some(ClientEvent::Error(e)) => emit.send(CoordEvent::Error(e)).await,
                }
            }
        }
    }
}

/// After `disconnect`, waits (briefly) for the server's close, then closes our side.
async fn await_close(ws: &mut Ws) {
    let drain = async {
        while let Some(Ok(m)) = ws.next().await {
            if m.is_close() {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(GRACEFUL_TIMEOUT, drain).await;
    let _ = tokio::time::timeout(GRACEFUL_TIMEOUT, ws.close(None)).await;
}

fn closed_by_server(frame: Option<tungstenite::protocol::CloseFrame>) -> Outcome {
    let Some(frame) = frame else {
        return Outcome::Lost("closed by coordinator".into());
    };
    let code = u16::from(frame.code);
    let why = format!("closed by coordinator ({code}): {}", frame.reason.as_str());
    if code == coord::CLOSE_CONFLICT {
        return Outcome::Conflict(why);
    }
    if code == coord::CLOSE_REPLACED {
        tracing::error!(reason = %frame.reason, "coordinator stream replaced by another registration");
    }
    let permanent = [
        coord::CLOSE_POLICY,
        coord::CLOSE_REPLACED,
        coord::CLOSE_PROTOCOL,
        coord::CLOSE_TOO_BIG,
    ];
    if permanent.contains(&code) || frame.code == CloseCode::Policy {
        Outcome::Refused(why)
    } else {
        Outcome::Lost(why)
    }
}
