//! Port forwarding between local sockets and the tunnel (`agentwire forward`).
//!
//! - `tcp`/`udp`: a local listener; each connection (or UDP client) is carried through
//!   the tunnel to a remote address.
//! - `remote-tcp`/`remote-udp`: a listener inside the tunnel on our address; each
//!   connection (or UDP peer) is carried to a local address.

use crate::runtime::Tunnel;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;

/// How long a tunnel dial may take before the local connection is dropped.
pub const DIAL_TIMEOUT: Duration = Duration::from_secs(10);
/// UDP sessions idle this long are closed.
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// Concurrent UDP sessions per mapping.
pub const UDP_MAX_SESSIONS: usize = 1024;
/// Copy buffer per direction: large enough not to cap throughput.
const COPY_BUF: usize = 256 * 1024;

/// One forwarding rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mapping {
    /// Local TCP listener → remote address through the tunnel.
    Tcp {
        /// Local listen address.
        local: SocketAddr,
        /// Tunnel destination.
        remote: SocketAddr,
    },
    /// Local UDP socket → remote address through the tunnel.
    Udp {
        /// Local bind address.
        local: SocketAddr,
        /// Tunnel destination.
        remote: SocketAddr,
    },
    /// Tunnel TCP listener on `port` → local address.
    RemoteTcp {
        /// Port on our tunnel address.
        port: u16,
        /// Local destination.
        target: SocketAddr,
    },
    /// Tunnel UDP socket on `port` → local address.
    RemoteUdp {
        /// Port on our tunnel address.
        port: u16,
        /// Local destination.
        target: SocketAddr,
    },
}

/// A mapping string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid mapping {0:?}: expected LOCAL_ADDR:PORT=REMOTE_ADDR:PORT (or PORT=LOCAL_ADDR:PORT for remote mappings)"
)]
pub struct MappingError(pub String);

/// Parses `LOCAL=REMOTE` into a local→tunnel pair of addresses.
pub fn parse_pair(s: &str) -> Result<(SocketAddr, SocketAddr), MappingError> {
    let e = || MappingError(s.to_string());
    let (a, b) = s.split_once('=').ok_or_else(e)?;
    Ok((
        SocketAddr::from_str(a.trim()).map_err(|_| e())?,
        SocketAddr::from_str(b.trim()).map_err(|_| e())?,
    ))
}

/// Parses `PORT=TARGET`.
pub fn parse_remote(s: &str) -> Result<(u16, SocketAddr), MappingError> {
    let e = || MappingError(s.to_string());
    let (a, b) = s.split_once('=').ok_or_else(e)?;
    let port: u16 = a.trim().parse().map_err(|_| e())?;
    if port == 0 {
        return Err(e());
    }
    Ok((port, SocketAddr::from_str(b.trim()).map_err(|_| e())?))
}

/// Errors setting up forwarding.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// A listener could not be bound.
    #[error("binding {what}: {source}")]
    Bind {
        /// Which mapping.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Runs every mapping until `shutdown` completes; then stops all listeners and
/// connections.
///
/// # Errors
/// [`ForwardError::Bind`] if a listener cannot be bound (nothing is left running).
pub async fn run(
    tunnel: Arc<Tunnel>,
    mappings: Vec<Mapping>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ForwardError> {
    let mut tasks = JoinSet::new();
    for m in mappings {
        match m {
            Mapping::Tcp { local, remote } => {
                let l = tokio::net::TcpListener::bind(local)
                    .await
                    .map_err(|source| ForwardError::Bind {
                        what: format!("tcp {local}"),
                        source,
                    })?;
                tracing::info!(%local, %remote, "forwarding tcp");
                tasks.spawn(tcp_local(tunnel.clone(), l, remote));
            }
            Mapping::RemoteTcp { port, target } => {
                let l = tunnel
                    .listen_tcp(port)
                    .map_err(|source| ForwardError::Bind {
                        what: format!("tunnel tcp port {port}"),
                        source,
                    })?;
                tracing::info!(port, %target, "forwarding remote tcp");
                tasks.spawn(tcp_remote(l, target));
            }
            Mapping::Udp { local, remote } => {
                let s = tokio::net::UdpSocket::bind(local).await.map_err(|source| {
                    ForwardError::Bind {
                        what: format!("udp {local}"),
                        source,
                    }
                })?;
                tracing::info!(%local, %remote, "forwarding udp");
                tasks.spawn(udp_local(tunnel.clone(), Arc::new(s), remote));
            }
            Mapping::RemoteUdp { port, target } => {
                let s = tunnel.bind_udp(port).map_err(|source| ForwardError::Bind {
                    what: format!("tunnel udp port {port}"),
                    source,
                })?;
                tracing::info!(port, %target, "forwarding remote udp");
                tasks.spawn(udp_remote(Arc::new(s), target));
            }
        }
    }
    shutdown.await;
    tasks.shutdown().await;
    Ok(())
}

async fn splice<A, B>(mut a: A, mut b: B)
where
    A: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    B: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err(e) =
        tokio::io::copy_bidirectional_with_sizes(&mut a, &mut b, COPY_BUF, COPY_BUF).await
    {
        tracing::debug!(error = %e, "forwarded connection ended with an error");
    }
}

async fn tcp_local(tunnel: Arc<Tunnel>, listener: tokio::net::TcpListener, remote: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((local, peer)) => {
                    let tunnel = tunnel.clone();
                    conns.spawn(async move {
                        let _ = local.set_nodelay(true);
                        match tokio::time::timeout(DIAL_TIMEOUT, tunnel.dial_tcp(remote)).await {
                            Ok(Ok(t)) => splice(local, t).await,
                            Ok(Err(e)) => tracing::info!(%peer, %remote, error = %e, "tunnel dial failed"),
                            Err(_) => tracing::info!(%peer, %remote, "tunnel dial timed out"),
                        }
                    });
                }
                Err(e) => {
                    // Out of descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn tcp_remote(listener: crate::runtime::TcpListener, target: SocketAddr) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((t, peer)) => {
                    conns.spawn(async move {
                        match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect(target)).await {
                            Ok(Ok(local)) => {
                                let _ = local.set_nodelay(true);
                                splice(t, local).await;
                            }
                            Ok(Err(e)) => tracing::info!(%peer, %target, error = %e, "local dial failed"),
                            Err(_) => tracing::info!(%peer, %target, "local dial timed out"),
                        }
                    });
                }
                Err(e) => {
                    tracing::info!(error = %e, "tunnel listener closed");
                    return;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

/// Local UDP clients, each with its own tunnel socket so replies find their way back.
async fn udp_local(tunnel: Arc<Tunnel>, local: Arc<tokio::net::UdpSocket>, remote: SocketAddr) {
    let mut sessions: HashMap<
        SocketAddr,
        (Arc<crate::runtime::UdpSocket>, tokio::task::AbortHandle),
    > = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    loop {
        tokio::select! {
            r = local.recv_from(&mut buf) => {
                let Ok((n, client)) = r else { continue };
                if !sessions.contains_key(&client) {
                    if sessions.len() >= UDP_MAX_SESSIONS {
                        tracing::debug!(%client, "too many udp sessions; dropping datagram");
                        continue;
                    }
                    let Ok(s) = tunnel.bind_udp(0) else { continue };
                    let s = Arc::new(s);
                    let (s2, local2) = (s.clone(), local.clone());
                    let h = tasks.spawn(async move {
                        let mut b = vec![0u8; 65536];
                        loop {
                            match tokio::time::timeout(UDP_IDLE, s2.recv_from(&mut b)).await {
                                Ok(Ok((n, _))) => {
                                    let _ = local2.send_to(&b[..n], client).await;
                                }
                                _ => return client,
                            }
                        }
                    });
                    sessions.insert(client, (s, h));
                }
                if let Some((s, _)) = sessions.get(&client)
                    && let Err(e) = s.send_to(&buf[..n], remote).await {
                        tracing::debug!(error = %e, "udp send through tunnel failed");
                    }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(client) = done {
                    sessions.remove(&client);
                }
            }
        }
    }
}

/// Tunnel UDP peers, each with its own local socket.
async fn udp_remote(tunnel_sock: Arc<crate::runtime::UdpSocket>, target: SocketAddr) {
    let mut sessions: HashMap<SocketAddr, Arc<tokio::net::UdpSocket>> = HashMap::new();
    let mut tasks = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    let any: SocketAddr = if target.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .unwrap_or(target);
    loop {
        tokio::select! {
            r = tunnel_sock.recv_from(&mut buf) => {
                let Ok((n, peer)) = r else { return };
                if !sessions.contains_key(&peer) {
                    if sessions.len() >= UDP_MAX_SESSIONS {
                        continue;
                    }
                    let Ok(s) = tokio::net::UdpSocket::bind(any).await else { continue };
                    if s.connect(target).await.is_err() {
                        continue;
                    }
                    let s = Arc::new(s);
                    let (s2, t2) = (s.clone(), tunnel_sock.clone());
                    tasks.spawn(async move {
                        let mut b = vec![0u8; 65536];
                        loop {
                            match tokio::time::timeout(UDP_IDLE, s2.recv(&mut b)).await {
                                Ok(Ok(n)) => {
                                    let _ = t2.send_to(&b[..n], peer).await;
                                }
                                _ => return peer,
                            }
                        }
                    });
                    sessions.insert(peer, s);
                }
                if let Some(s) = sessions.get(&peer) {
                    let _ = s.send(&buf[..n]).await;
                }
            }
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Ok(peer) = done {
                    sessions.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mappings_parse() {
        assert_eq!(
            parse_pair("127.0.0.1:15201=10.100.0.2:5201").unwrap(),
            (
                "127.0.0.1:15201".parse().unwrap(),
                "10.100.0.2:5201".parse().unwrap()
            )
        );
        assert_eq!(
            parse_pair("[::1]:1=[fd00::2]:2").unwrap().1,
            "[fd00::2]:2".parse().unwrap()
        );
        assert_eq!(parse_remote("5201=127.0.0.1:5201").unwrap().0, 5201);
        assert!(parse_pair("127.0.0.1:1").is_err());
        assert!(parse_remote("0=127.0.0.1:1").is_err());
        assert!(parse_remote("x=127.0.0.1:1").is_err());
    }
}
