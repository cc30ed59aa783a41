//! The HTTP listener every server here uses: HTTP/1.1 with upgrades (DERP, websockets),
//! bounded request heads and header timeouts, optional TLS termination, graceful
//! shutdown.

use crate::runtime::tls::{self, AcceptError, ServerTls};
use axum::Router;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};

/// How long a client may take to send a request's headers; also how long an idle
/// keep-alive connection stays open. Bounds what slow or silent clients can hold.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Largest request head (request line and headers) a listener reads: hyper's read buffer
/// is capped here, and a head that does not fit is answered 431 and the connection closed.
/// Real clients send a few KiB; without the cap hyper buffers ~400 KiB per connection.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// How long shutdown waits for requests in flight before cutting them off.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub(crate) async fn dispatch(
    router: Router,
    req: axum::extract::Request,
) -> axum::response::Response {
    use tower::ServiceExt;
    match router.oneshot(req).await {
        Ok(r) => r,
        Err(e) => match e {},
    }
}

/// Serves `router` on `listener` until `shutdown` resolves: HTTP/1.1 with upgrades
/// (DERP, websockets), each request carrying the peer's [`ConnectInfo`]. Then stops
/// accepting, lets requests in flight finish (up to a grace period) and returns.
///
/// [`ConnectInfo`]: axum::extract::ConnectInfo
///
/// # Errors
/// Never in practice; accept errors are logged and retried after a pause.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls(listener, router, None, shutdown).await
}

/// [`serve`], terminating TLS with `tls` when given. The handshake runs in the
/// connection's own task, so a slow client never holds up the accept loop.
///
/// # Errors
/// As [`serve`].
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<ServerTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            r = listener.accept() => match r {
                Ok((tcp, remote)) => {
                    let _ = tcp.set_nodelay(true);
                    let app = router
                        .clone()
                        .layer(axum::Extension(axum::extract::ConnectInfo(remote)));
                    let stop = stop_rx.clone();
                    match &tls {
                        None => conns.spawn(serve_one(tcp, app, stop)),
                        Some(t) => conns.spawn(handshake_then_serve(t.clone(), tcp, remote, app, stop)),
                    };
                }
                Err(e) => {
                    // Out of descriptors, usually: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        conns.shutdown().await;
    }
    Ok(())
}

async fn handshake_then_serve(
    tls: ServerTls,
    tcp: tokio::net::TcpStream,
    remote: SocketAddr,
    app: Router,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let accepted = tokio::select! {
        r = tls::accept(&tls, tcp) => r,
        _ = stop.wait_for(|s| *s) => return,
    };
    match accepted {
        Ok(s) => serve_one(s, app, stop).await,
        Err(AcceptError::PlainHttp) => {
            tracing::debug!(%remote, "plain HTTP on the TLS port: answered 400");
        }
        Err(e) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
    }
}

async fn serve_one<S>(io: S, app: Router, mut stop: tokio::sync::watch::Receiver<bool>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
    let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let app = app.clone();
        async move {
            Ok::<_, std::convert::Infallible>(dispatch(app, req.map(axum::body::Body::new)).await)
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);
    let ended = tokio::select! {
        r = conn.as_mut() => Some(r),
        _ = stop.wait_for(|s| *s) => None,
    };
    let result = match ended {
        Some(r) => r,
        None => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "HTTP connection ended with an error");
    }
}
