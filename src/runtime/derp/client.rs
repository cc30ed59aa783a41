//! The DERP client handle and its connection task.
//!
//! One task per client owns the connection. Within it, a reader and a writer run side by
//! side: the reader drains the socket continuously and hands packets on with `try_send`
//! (a slow consumer loses packets, counted, instead of stalling the server, which would
//! drop us after its 2 s write timeout); the writer batches queued packets and control
//! frames into one write. The task reconnects with jittered exponential backoff, and
//! falls back to the websocket variant when `Upgrade: DERP` gets a 4xx answer.

use super::connect::{ConnectError, DerpUrl, check_headers, connect_upgrade, connect_websocket};
use super::session::{SessionEnd, SessionError, SessionParams, run_session};
use super::status::{DerpStatus, Shared};
use crate::proto::backoff::Backoff;
use crate::proto::derp::client::ClientSessionConfig;
use crate::runtime::clock;
use crate::wire::derp::MAX_PACKET_SIZE;
use crate::wire::key::{NodePrivate, NodePublic};
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// What the client connects to and as whom.
#[derive(Debug, Clone)]
pub struct DerpClientConfig {
    /// The region id, echoed in every [`DerpInbound`].
    pub region: u16,
    /// `http(s)://host:port/derp`.
    pub url: String,
    /// Dial this address instead of resolving the URL's host (the map's `IPv4`/`IPv6`).
    pub dial_ip: Option<std::net::IpAddr>,
    /// The name the certificate must carry, when not the URL's host (`CertName`).
    pub cert_name: Option<String>,
    /// Skip certificate verification (`InsecureForTests`).
    pub insecure_skip_verify: bool,
    /// Trust for `https` URLs.
    pub tls: crate::runtime::tls::ClientTls,
    /// Our node key: the WireGuard static key, which is also our DERP address.
    pub private: NodePrivate,
    /// This is our home region: send NotePreferred(true).
    pub preferred: bool,
    /// Dial the websocket variant first.
    pub force_websocket: bool,
    /// Extra headers on the upgrade request, e.g. `Authorization: Bearer TOKEN`.
    pub headers: Vec<(String, String)>,
}

/// Tuning knobs with defaults that suit Tailscale and our own servers.
#[derive(Debug, Clone)]
pub struct DerpClientOptions {
    /// Packets waiting to be written; `send` drops when full.
    pub queue_depth: usize,
    /// Base time between our Pings; up to a quarter more is added at random per
    /// connection, so the default pings every 20–25 s.
    pub ping_interval: Duration,
    /// How long a Ping may go unanswered.
    pub ping_timeout: Duration,
    /// How long the server may be silent.
    pub idle_timeout: Duration,
    /// Budget for TCP connect plus HTTP upgrade; the login has the same budget again.
    pub connect_timeout: Duration,
    /// How long one write may block before the connection counts as dead.
    pub write_timeout: Duration,
    /// Reconnect delays.
    pub backoff: Backoff,
    /// Mesh key to present (privileged clients only).
    pub mesh_key: Option<String>,
}

impl Default for DerpClientOptions {
    fn default() -> Self {
        Self {
            queue_depth: 256,
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
            mesh_key: None,
        }
    }
}

/// A packet that arrived over DERP.
#[derive(Debug, Clone)]
pub struct DerpInbound {
    /// The region it came through.
    pub region: u16,
    /// The sender's key.
    pub src: NodePublic,
    /// The payload (a WireGuard datagram, for peers that speak WireGuard).
    pub packet: Bytes,
}

/// Why [`DerpClient::send`] refused a packet. The packet is dropped either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum DerpSendError {
    /// Larger than DERP's 64 KiB packet limit.
    #[error("packet of {len} bytes exceeds the DERP limit")]
    TooLarge {
        /// The packet's length.
        len: usize,
    },
    /// The send queue is full (counted in [`DerpStatus::dropped_send_full`]).
    #[error("DERP send queue full")]
    QueueFull,
    /// The client was shut down.
    #[error("DERP client stopped")]
    Closed,
}

/// A DERP client: a handle to the task that keeps one connection to one server up.
/// Dropping the handle (or [`DerpClient::shutdown`]) stops the task.
#[derive(Debug)]
pub struct DerpClient {
    shared: Arc<Shared>,
    tx: mpsc::Sender<(NodePublic, Bytes)>,
    cancel: CancellationToken,
    task: Option<JoinHandle<()>>,
}

impl DerpClient {
    /// Starts a client with default options. Must be called within a tokio runtime.
    pub fn spawn(cfg: DerpClientConfig, inbound: mpsc::Sender<DerpInbound>) -> Self {
        Self::spawn_with(cfg, DerpClientOptions::default(), inbound)
    }

    /// Starts a client with explicit options. Must be called within a tokio runtime.
    /// Configuration errors (bad URL, TLS, bad header) are not retried: the task stops
    /// and [`DerpStatus::last_error`] says why.
    pub fn spawn_with(
        cfg: DerpClientConfig,
        opts: DerpClientOptions,
        inbound: mpsc::Sender<DerpInbound>,
    ) -> Self {
        let shared = Arc::new(Shared::new(cfg.region, cfg.private.public()));
        let (tx, rx) = mpsc::channel(opts.queue_depth.max(1));
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run(
            Arc::clone(&shared),
            cfg,
            opts,
            inbound,
            rx,
            cancel.clone(),
        ));
        Self {
            shared,
            tx,
            cancel,
            task: Some(task),
        }
    }

    /// Queues `packet` for `dst`. Never blocks; the packet is copied.
    ///
    /// # Errors
    /// [`DerpSendError`]; the packet is dropped.
    pub fn send(&self, dst: NodePublic, packet: &[u8]) -> Result<(), DerpSendError> {
        if packet.len() > MAX_PACKET_SIZE {
            return Err(DerpSendError::TooLarge { len: packet.len() });
        }
        match self.tx.try_send((dst, Bytes::copy_from_slice(packet))) {
            Ok(()) => Ok(()),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.shared.note_send_full();
                Err(DerpSendError::QueueFull)
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(DerpSendError::Closed),
        }
    }

    /// A snapshot of the connection state and counters.
    pub fn status(&self) -> DerpStatus {
        self.shared.status()
    }

    /// Drops the current connection (if any) and reconnects at once, skipping any
    /// backoff wait. For callers that detect sleep/wake or a network change.
    pub fn reconnect_now(&self) {
        self.shared.reconnect.notify_one();
    }

    /// A watch of the logged-in state, for waiting without holding the client.
    pub fn subscribe_connected(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shared.subscribe()
    }

    /// Waits until the client is logged in, or `timeout` passes; returns whether it is.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.shared.subscribe();
        let connected = tokio::time::timeout(timeout, rx.wait_for(|c| *c)).await;
        matches!(connected, Ok(Ok(_)))
    }

    /// Stops the task and waits for it to close its connection.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for DerpClient {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// How the next connection attempt dials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dial {
    Upgrade,
    WebSocket,
}

async fn run(
    shared: Arc<Shared>,
    cfg: DerpClientConfig,
    opts: DerpClientOptions,
    inbound: mpsc::Sender<DerpInbound>,
    mut outbound: mpsc::Receiver<(NodePublic, Bytes)>,
    cancel: CancellationToken,
) {
    let url = match DerpUrl::parse(&cfg.url).and_then(|u| check_headers(&cfg.headers).map(|()| u)) {
        Ok(u) => u.with_hints(
            cfg.dial_ip,
            cfg.cert_name.as_deref(),
            cfg.insecure_skip_verify,
        ),
        Err(e) => {
            tracing::warn!(region = cfg.region, url = %cfg.url, error = %e, "DERP client not started");
            shared.set_error(e.to_string());
            return;
        }
    };
    let mut dial = if cfg.force_websocket {
        Dial::WebSocket
    } else {
        Dial::Upgrade
    };
    let mut attempt: u32 = 0;
    // The last failure logged at warn level: a new reason is worth a line, the same
    // one again on every retry is not.
    let mut warned: Option<String> = None;
    // Until this instant the server asked us (Restarting) to retry at a short interval.
    let mut retry_fast_until = None;
    loop {
        let started = clock::now();
        let end = tokio::select! {
            biased;
            () = cancel.cancelled() => break,
            end = connect_and_serve(&shared, &cfg, &opts, &url, dial, &inbound, &mut outbound, &cancel) => end,
        };
        let lived = clock::now().saturating_duration_since(started);
        shared.set_disconnected();
        match end {
            SessionEnd::Cancelled => break,
            SessionEnd::ReconnectNow => {
                attempt = 0;
                continue;
            }
            SessionEnd::Restarting(r) => {
                tracing::info!(region = cfg.region, reconnect_in = ?r.reconnect_in(), try_for = ?r.try_for(), "DERP server restarting");
                retry_fast_until = Some(clock::now() + r.reconnect_in() + r.try_for());
                attempt = 0;
                if !sleep_or_wake(&shared, &cancel, r.reconnect_in()).await {
                    break;
                }
                continue;
            }
            SessionEnd::Failed { error, established } => {
                if let SessionError::Connect(e) = &error
                    && e.suggests_websocket()
                    && dial == Dial::Upgrade
                {
                    tracing::info!(region = cfg.region, error = %error, "DERP upgrade refused; switching to websocket");
                    dial = Dial::WebSocket;
                    continue;
                }
                let why = error.to_string();
                if established {
                    warned = None;
                    tracing::info!(region = cfg.region, url = %url.display(), error = %why, "DERP connection lost; reconnecting");
                } else if warned.as_deref() != Some(why.as_str()) {
                    tracing::warn!(region = cfg.region, url = %url.display(), error = %why, "cannot reach the DERP relay; retrying with backoff");
                    warned = Some(why.clone());
                } else {
                    tracing::debug!(region = cfg.region, error = %why, attempt, "DERP connect failed again");
                }
                shared.set_error(why);
                // A session that lived a while resets the backoff; a server that accepts
                // and drops us at once keeps escalating it.
                if established && lived >= Duration::from_secs(10) {
                    attempt = 0;
                }
            }
        }
        let fast = retry_fast_until.is_some_and(|t| clock::now() < t);
        let delay = if fast {
            Duration::from_millis(250)
        } else {
            opts.backoff.delay(attempt, rand::random::<f64>())
        };
        attempt = attempt.saturating_add(1);
        if !sleep_or_wake(&shared, &cancel, delay).await {
            break;
        }
    }
    shared.set_disconnected();
}

/// Sleeps for `delay`, cut short by `reconnect_now`; `false` when cancelled.
async fn sleep_or_wake(shared: &Shared, cancel: &CancellationToken, delay: Duration) -> bool {
    tokio::select! {
        biased;
        () = cancel.cancelled() => false,
        () = shared.reconnect.notified() => true,
        () = tokio::time::sleep(delay) => true,
    }
}

#[allow(clippy::too_many_arguments)]
async fn connect_and_serve(
    shared: &Arc<Shared>,
    cfg: &DerpClientConfig,
    opts: &DerpClientOptions,
    url: &DerpUrl,
    dial: Dial,
    inbound: &mpsc::Sender<DerpInbound>,
    outbound: &mut mpsc::Receiver<(NodePublic, Bytes)>,
    cancel: &CancellationToken,
) -> SessionEnd {
    let session_cfg = ClientSessionConfig {
        ping_interval: opts.ping_interval
            + opts.ping_interval.mul_f64(rand::random_range(0.0..0.25)),
        ping_timeout: opts.ping_timeout,
        idle_timeout: opts.idle_timeout,
        login_timeout: opts.connect_timeout,
        preferred: cfg.preferred,
        mesh_key: opts.mesh_key.clone(),
        ..ClientSessionConfig::default()
    };
    let params = SessionParams {
        shared,
        region: cfg.region,
        private: cfg.private.clone(),
        session_cfg,
        write_timeout: opts.write_timeout,
        inbound,
        cancel,
    };
    let budget = opts.connect_timeout;
    match dial {
        Dial::Upgrade => {
            match tokio::time::timeout(budget, connect_upgrade(&cfg.tls, url, &cfg.headers)).await {
                Ok(Ok((r, w))) => run_session(params, r, w, outbound, "upgrade").await,
                Ok(Err(e)) => SessionEnd::connect_failed(e),
                Err(_) => SessionEnd::connect_failed(ConnectError::Timeout),
            }
        }
        Dial::WebSocket => {
            match tokio::time::timeout(budget, connect_websocket(&cfg.tls, url, &cfg.headers)).await
            {
                Ok(Ok((r, w))) => run_session(params, r, w, outbound, "websocket").await,
                Ok(Err(e)) => SessionEnd::connect_failed(e),
                Err(_) => SessionEnd::connect_failed(ConnectError::Timeout),
            }
        }
    }
}
