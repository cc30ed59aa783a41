//! Helpers for the DERP integration tests: a server on 127.0.0.1:0, a hand-driven raw
//! client for misbehaving on purpose, and library clients.
#![allow(dead_code)]

use agentwire::runtime::derp::{DerpClient, DerpClientConfig, DerpClientOptions, DerpInbound};
use agentwire::services::derp::{
    self as derp_server, DerpServer, DerpServerConfig, DerpServerStats,
};
use agentwire::wire::derp::{
    ClientInfo, ClientInfoFrame, Decoded, Direction, Frame, Ping, ServerInfo, decode,
};
use agentwire::wire::key::{NodePrivate, NodePublic};
use bytes::BytesMut;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Every wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(WAIT, f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out: {what}"),
    }
}

/// Polls `cond` until it holds; for state only observable through counters.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    within(what, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
}

/// A running server.
pub struct TestServer {
    pub server: Arc<DerpServer>,
    pub addr: SocketAddr,
    tls: bool,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestServer {
    pub async fn start(config: DerpServerConfig) -> Self {
        Self::start_on(
            "127.0.0.1:0".parse().unwrap(),
            NodePrivate::generate(),
            config,
        )
        .await
    }

    pub async fn start_on(addr: SocketAddr, key: NodePrivate, config: DerpServerConfig) -> Self {
        Self::start_with(addr, key, config, None).await
    }

    /// A server terminating TLS with `tls`.
    pub async fn start_tls(
        config: DerpServerConfig,
        tls: agentwire::runtime::tls::ServerTls,
    ) -> Self {
        Self::start_with(
            "127.0.0.1:0".parse().unwrap(),
            NodePrivate::generate(),
            config,
            Some(tls),
        )
        .await
    }

    async fn start_with(
        addr: SocketAddr,
        key: NodePrivate,
        config: DerpServerConfig,
        tls: Option<agentwire::runtime::tls::ServerTls>,
    ) -> Self {
        let is_tls = tls.is_some();
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = DerpServer::new(key, config);
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(derp_server::run_tls(
            listener,
            Arc::clone(&server),
            tls,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            server,
            addr,
            tls: is_tls,
            stop: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}/derp", self.addr)
    }

    pub fn stats(&self) -> DerpServerStats {
        self.server.stats()
    }

    /// Stops serving and waits until every connection task is gone.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            within("server stop", task).await.unwrap().unwrap();
        }
        assert_eq!(self.server.tasks(), 0, "connection tasks leaked");
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// A library client with its inbound channel.
pub struct Peer {
    pub client: DerpClient,
    pub key: NodePrivate,
    pub rx: mpsc::Receiver<DerpInbound>,
}

impl Peer {
    pub fn public(&self) -> NodePublic {
        self.key.public()
    }

    pub async fn recv(&mut self) -> DerpInbound {
        within("derp inbound packet", self.rx.recv())
            .await
            .expect("client stopped")
    }
}

pub fn config(url: &str, websocket: bool) -> DerpClientConfig {
    DerpClientConfig {
        region: 7,
        url: url.to_owned(),
        private: NodePrivate::generate(),
        preferred: true,
        force_websocket: websocket,
        headers: vec![],
        dial_ip: None,
        cert_name: None,
        insecure_skip_verify: false,
        tls: Default::default(),
    }
}

pub async fn peer_with(cfg: DerpClientConfig, opts: DerpClientOptions) -> Peer {
    let key = cfg.private.clone();
    let (tx, rx) = mpsc::channel(1024);
    let client = DerpClient::spawn_with(cfg, opts, tx);
    assert!(
        client.wait_connected(WAIT).await,
        "client did not connect: {:?}",
        client.status()
    );
    Peer { client, key, rx }
}

pub async fn peer(url: &str, websocket: bool) -> Peer {
    peer_with(config(url, websocket), DerpClientOptions::default()).await
}

/// A hand-driven DERP client over `Upgrade: DERP`.
pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    pub key: NodePrivate,
    pub server_key: Option<NodePublic>,
}

/// Opens a TCP connection and completes the HTTP upgrade by hand. `rcvbuf` shrinks the
/// socket's receive buffer (set before connect, so the window scale follows).
pub async fn raw_upgrade(addr: SocketAddr, rcvbuf: Option<u32>) -> Raw {
    let sock = TcpSocket::new_v4().unwrap();
    if let Some(size) = rcvbuf {
        sock.set_recv_buffer_size(size).unwrap();
    }
    let mut stream = within("tcp connect", sock.connect(addr)).await.unwrap();
    let req = format!(
        "GET /derp HTTP/1.1\r\nHost: {addr}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = BytesMut::new();
    let head_end = within("101 response", async {
        loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                return i + 4;
            }
            assert!(
                stream.read_buf(&mut buf).await.unwrap() > 0,
                "closed before 101"
            );
        }
    })
    .await;
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains("upgrade: derp") && lower.contains("derp-version: 2"),
        "{head}"
    );
    let _ = buf.split_to(head_end);
    Raw {
        stream,
        buf,
        key: NodePrivate::generate(),
        server_key: None,
    }
}

impl Raw {
    /// Connects and logs in (optionally as `key`, with a mesh key).
    pub async fn login(addr: SocketAddr, key: Option<NodePrivate>, mesh_key: Option<&str>) -> Raw {
        Self::login_with(addr, key, mesh_key, None).await
    }

    pub async fn login_with(
        addr: SocketAddr,
        key: Option<NodePrivate>,
        mesh_key: Option<&str>,
        rcvbuf: Option<u32>,
    ) -> Raw {
        let mut raw = raw_upgrade(addr, rcvbuf).await;
        if let Some(k) = key {
            raw.key = k;
        }
        let greeting = raw.recv().await.expect("no ServerKey");
        let Ok(Frame::ServerKey(sk)) = Frame::parse_frame(&greeting, Direction::ServerToClient)
        else {
            panic!("first frame is not ServerKey")
        };
        raw.server_key = Some(sk.key);
        let info = ClientInfo {
            version: 2,
            mesh_key: mesh_key.map(str::to_owned),
            can_ack_pings: true,
            is_prober: false,
        };
        let sealed = info.seal(&raw.key, &sk.key, rand::random()).unwrap();
        raw.send(Frame::ClientInfo(ClientInfoFrame {
            key: raw.key.public(),
            sealed: &sealed,
        }))
        .await;
        let reply = raw.recv().await.expect("no ServerInfo");
        let Ok(Frame::ServerInfo(si)) = Frame::parse_frame(&reply, Direction::ServerToClient)
        else {
            panic!("second frame is not ServerInfo")
        };
        let info = ServerInfo::open(&raw.key, &sk.key, si.sealed).unwrap();
        assert_eq!(info.version, 2);
        raw
    }

    pub fn public(&self) -> NodePublic {
        self.key.public()
    }

    pub async fn send(&mut self, frame: Frame<'_>) {
        self.send_bytes(&frame.to_vec().unwrap()).await;
    }

    pub async fn send_bytes(&mut self, bytes: &[u8]) {
        within("raw write", self.stream.write_all(bytes))
            .await
            .unwrap();
    }

    /// The next whole frame's bytes; `None` at end of stream.
    pub async fn recv(&mut self) -> Option<Vec<u8>> {
        within("raw frame", self.recv_unbounded()).await
    }

    pub async fn recv_any(&mut self) -> Option<Vec<u8>> {
        self.recv_unbounded().await
    }

    async fn recv_unbounded(&mut self) -> Option<Vec<u8>> {
        loop {
            match decode(&self.buf, Direction::ServerToClient) {
                Ok(Decoded::Frame { len, .. }) => return Some(self.buf.split_to(len).to_vec()),
                Ok(Decoded::Incomplete { .. }) => {}
                Err(e) => panic!("server sent a bad frame: {e}"),
            }
            match self.stream.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// Waits for end of stream, skipping frames; panics if it does not come.
    pub async fn expect_closed(&mut self) {
        within("connection close", async {
            while self.recv_unbounded().await.is_some() {}
        })
        .await;
    }

    /// Sends a Ping and waits for its Pong: every frame sent before it was processed.
    pub async fn sync(&mut self) {
        let data: [u8; 8] = rand::random();
        self.send(Frame::Ping(Ping { data })).await;
        loop {
            let f = self.recv().await.expect("closed while waiting for pong");
            if let Ok(Frame::Pong(p)) = Frame::parse_frame(&f, Direction::ServerToClient)
                && p.data == data
            {
                return;
            }
        }
    }
}
