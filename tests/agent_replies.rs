//! How the server's agent client reads replies it cannot trust: a body announced larger
//! than the call accepts is refused before a byte is read, and a destination's replies are
//! read within its budget, however many calls read them at once. The "agent" here is a
//! plain HTTP server on loopback that answers every request with the body under test.

#![allow(clippy::disallowed_methods)]

use agentwire::services::agent::budget::ReplyRate;
use agentwire::services::agent::client::{
    AgentClient, AgentClientError, IdlePool, ReplyPacing, TcpDialer,
};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// What the fake agent sends.
#[derive(Clone, Copy)]
enum Reply {
    /// `len` bytes of JSON whitespace in 64 KiB frames, with its content length.
    Sized(u64),
    /// A content length of 16 GiB, then one 64 KiB frame every 100 ms.
    Announced16GiB,
}

/// Serves `reply` to every request; counts the body bytes it managed to send.
async fn fake_agent(reply: Reply) -> (SocketAddr, Arc<AtomicU64>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let sent = Arc::new(AtomicU64::new(0));
    let s = sent.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let s = s.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let s = s.clone();
                    async move {
                        let chunk = Bytes::from(vec![b' '; 64 << 10]);
                        let (len, pause) = match reply {
                            Reply::Sized(n) => (n, Duration::ZERO),
                            Reply::Announced16GiB => (16 << 30, Duration::from_millis(100)),
                        };
                        let frames = len.div_ceil(chunk.len() as u64);
                        let stream = futures_util::stream::unfold(0u64, move |i| {
                            let (chunk, s) = (chunk.clone(), s.clone());
                            async move {
                                if i == frames {
                                    return None;
                                }
                                if !pause.is_zero() {
                                    tokio::time::sleep(pause).await;
                                }
                                let left = len - i * chunk.len() as u64;
                                let c = chunk.slice(..(left.min(chunk.len() as u64) as usize));
                                s.fetch_add(c.len() as u64, Ordering::Relaxed);
                                Some((Ok::<_, Infallible>(Frame::data(c)), i + 1))
                            }
                        });
                        let resp = hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/json")
                            .header("content-length", len.to_string())
                            .body(StreamBody::new(stream).boxed())
                            .unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, sent)
}

fn client(addr: SocketAddr, rate: ReplyRate, pacing: Arc<ReplyPacing>) -> AgentClient {
    AgentClient::pooled(
        Arc::new(TcpDialer(addr)),
        Arc::new(IdlePool::new(rate, pacing)),
    )
    .with_timeout(Duration::from_secs(30))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_announced_too_large_is_refused_unread() {
    let (addr, sent) = fake_agent(Reply::Announced16GiB).await;
    let c = client(addr, ReplyRate::default(), Arc::default());
    let start = Instant::now();
    let err = c.health().await.unwrap_err();
    assert!(matches!(err, AgentClientError::TooLarge), "{err:?}");
    // The fake agent sends its first frame after 100 ms: refused on the headers alone.
    assert!(start.elapsed() < Duration::from_secs(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sent.load(Ordering::Relaxed) <= 64 << 10,
        "the client kept reading a body it had refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_beyond_the_burst_are_read_at_the_rate() {
    // 4 calls read 2 MiB each from one destination allowed 16 MiB/s after a 1 MiB burst:
    // 7 MiB beyond the burst take at least 7/16 s, however the reads interleave.
    let (addr, _) = fake_agent(Reply::Sized(2 * MIB)).await;
    let pacing = Arc::new(ReplyPacing::default());
    let rate = ReplyRate {
        bytes_per_sec: 16 * MIB,
        burst: MIB,
    };
    let c = client(addr, rate, pacing.clone());
    let start = Instant::now();
    let calls: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.health().await })
        })
        .collect();
    for call in calls {
        // Whitespace is no health report: the body is read whole, then fails to decode.
        let err = call.await.unwrap().unwrap_err();
        assert!(matches!(err, AgentClientError::Decode(_)), "{err:?}");
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(430), "read in {took:?}");
    let (waits, waited_us) = pacing.get();
    assert!(waits > 0 && waited_us > 0, "{waits} waits, {waited_us} us");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlimited_destination_never_waits() {
    let (addr, _) = fake_agent(Reply::Sized(8 * MIB)).await;
    let pacing = Arc::new(ReplyPacing::default());
    let c = client(addr, ReplyRate::UNLIMITED, pacing.clone());
    for _ in 0..3 {
        let err = c.health().await.unwrap_err();
        assert!(matches!(err, AgentClientError::Decode(_)), "{err:?}");
    }
    assert_eq!(pacing.get(), (0, 0));
}
