//! Test harness: a coordinator server on loopback, clients with event helpers, and raw
//! websockets for misbehaving peers.

use agentwire::runtime::coord::{CoordClient, CoordClientConfig, CoordEvent};
use agentwire::services::control::{ControlPlane, InMemoryControlPlane};
use agentwire::services::coord::{self as coordinator, Coordinator, CoordinatorConfig};
use agentwire::wire::addr::NodeId;
use agentwire::wire::coord::{Node, PeerKind, PeerUpdate};
use agentwire::wire::key::NodePrivate;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

pub const AGENT_A: &str = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
pub const AGENT_B: &str = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";
pub const AGENT_C: &str = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
pub const WAIT: Duration = Duration::from_secs(10);

pub fn control() -> Arc<dyn ControlPlane> {
    let toml = format!(
        r#"
[[users]]
name = "alice"
token = "alice-token"
[[users]]
name = "bob"
token = "bob-token"

[[workspaces]]
owner = "alice"
name = "dev"
[[workspaces.agents]]
id = "{AGENT_A}"
token = "agent-a"
[[workspaces.agents]]
name = "second"
id = "{AGENT_B}"
token = "agent-b"

[[workspaces]]
owner = "bob"
name = "private"
[[workspaces.agents]]
id = "{AGENT_C}"
token = "agent-c"
"#
    );
    Arc::new(InMemoryControlPlane::from_toml(&toml).unwrap())
}

pub fn id(s: &str) -> NodeId {
    s.parse().unwrap()
}

/// A node for `id`; the key is derived from the id, since a node id keeps one key for the
/// life of a stream.
pub fn node(id: NodeId, as_of: u64) -> Node {
    let mut seed = [0u8; 32];
    seed[..16].copy_from_slice(id.0.as_bytes());
    Node {
        id,
        key: NodePrivate::from_bytes(seed).public(),
        preferred_derp: 999,
        addresses: vec![id.tailnet_prefix().parse().unwrap()],
        allowed_ips: vec![id.tailnet_prefix().parse().unwrap()],
        endpoints: vec!["127.0.0.1:41641".parse().unwrap()],
        as_of,
    }
}

pub struct Server {
    pub coord: Arc<Coordinator>,
    pub addr: SocketAddr,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    pub async fn start(control: Arc<dyn ControlPlane>, cfg: CoordinatorConfig) -> Self {
        Self::start_on(control, cfg, "127.0.0.1:0".parse().unwrap()).await
    }

    pub async fn start_on(
        control: Arc<dyn ControlPlane>,
        cfg: CoordinatorConfig,
        at: SocketAddr,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind(at).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let coord = Arc::new(Coordinator::new(control, cfg));
        let (stop, stopped) = oneshot::channel::<()>();
        let c = coord.clone();
        let task = tokio::spawn(async move {
            coordinator::serve(listener, &c, async {
                let _ = stopped.await;
            })
            .await
        });
        Self {
            coord,
            addr,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

pub struct Peer {
    pub client: CoordClient,
    pub events: mpsc::Receiver<CoordEvent>,
    pub id: NodeId,
}

pub fn peer(url: &str, token: &str, id: NodeId) -> Peer {
    let (tx, events) = mpsc::channel(64);
    let cfg = CoordClientConfig {
        url: url.into(),
        token: token.into(),
        id,
        name: token.into(),
        tls: Default::default(),
    };
    Peer {
        client: CoordClient::spawn(cfg, tx),
        events,
        id,
    }
}

impl Peer {
    /// Waits for an event `f` accepts, returning it and every event seen before it.
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut f: impl FnMut(&CoordEvent) -> Option<T>,
    ) -> (T, Vec<CoordEvent>) {
        let mut seen = Vec::new();
        let found = tokio::time::timeout(WAIT, async {
            loop {
                let ev = self.events.recv().await.expect("client task alive");
                if let Some(t) = f(&ev) {
                    return t;
                }
                seen.push(ev);
            }
        })
        .await;
        match found {
            Ok(t) => (t, seen),
            Err(_) => panic!("timed out waiting for {what}; saw {seen:?}"),
        }
    }

    pub async fn connected(&mut self) {
        self.wait_for("connected", |e| {
            matches!(e, CoordEvent::Connected { .. }).then_some(())
        })
        .await;
    }

    /// Waits for a node update about `from`, returning the node.
    pub async fn node_of(&mut self, from: NodeId) -> Node {
        self.wait_for(&format!("node of {from}"), |e| match e {
            CoordEvent::Peer(PeerUpdate {
                id,
                kind: PeerKind::Node,
                node: Some(n),
                ..
            }) if *id == from => Some(n.clone()),
            _ => None,
        })
        .await
        .0
    }

    pub async fn peer_event(&mut self, from: NodeId, kind: PeerKind) -> Vec<CoordEvent> {
        self.wait_for(&format!("{kind:?} from {from}"), |e| match e {
            CoordEvent::Peer(u) if u.id == from && u.kind == kind => Some(()),
            _ => None,
        })
        .await
        .1
    }

    pub async fn closed(&mut self) -> String {
        self.wait_for("closed", |e| match e {
            CoordEvent::Closed { reason } => Some(reason.clone()),
            _ => None,
        })
        .await
        .0
    }
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub async fn raw(addr: SocketAddr, token: Option<&str>) -> Result<Ws, tungstenite::Error> {
    let mut req = format!("ws://{addr}/api/v0/coordinate")
        .into_client_request()
        .unwrap();
    if let Some(t) = token {
        req.headers_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    tokio_tungstenite::connect_async(req)
        .await
        .map(|(ws, _)| ws)
}

pub async fn raw_hello(addr: SocketAddr, token: &str, id: NodeId) -> Ws {
    let mut ws = raw(addr, Some(token)).await.unwrap();
    send(
        &mut ws,
        json!({"type": "hello", "version": 1, "id": id, "name": "raw"}),
    )
    .await;
    let welcome = next_json(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    ws
}

pub async fn send(ws: &mut Ws, v: serde_json::Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

pub async fn next_json(ws: &mut Ws) -> serde_json::Value {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("message in time");
        match m.expect("stream open").expect("no error") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(f) => panic!("closed: {f:?}"),
            _ => {}
        }
    }
}

/// Reads until the server's close frame; returns its code and reason.
pub async fn close_of(ws: &mut Ws) -> (u16, String) {
    loop {
        let m = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("close in time");
        match m {
            Some(Ok(Message::Close(Some(f)))) => return (f.code.into(), f.reason.to_string()),
            Some(Ok(Message::Close(None))) | None => panic!("closed without a frame"),
            Some(Err(e)) => panic!("error before close: {e}"),
            Some(Ok(_)) => {}
        }
    }
}

pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}
