//! How the server's agent client reads replies it cannot trust: a body announced larger
//! than the call accepts, or not announced at all, is refused before a byte is read, and a destination's replies are
//! read within its budget, however many calls read them at once; a destination whose reply
//! broke its limit is put on probation, its next calls admitted slowly or refused at once,
//! while other destinations go on unhindered. The "agent" here is a
//! plain HTTP server on loopback that answers every request with the body under test.

#![allow(clippy::disallowed_methods)]

use agentwire::services::agent::budget::ReplyRate;
use agentwire::services::agent::client::{
    AgentClient, AgentClientError, IdlePool, LARGE_READS, PacingCounts, ReplyPacing,
    TENANT_LARGE_READS, TcpDialer, TenantShares,
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
    /// No content length: a chunked body of 64 KiB frames, one every 100 ms, never
    /// ending.
    Chunked,
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
                            Reply::Announced16GiB | Reply::Chunked => {
                                (16 << 30, Duration::from_millis(100))
                            }
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
                        let mut resp = hyper::Response::builder()
                            .status(200)
                            .header("content-type", "application/json");
                        if !matches!(reply, Reply::Chunked) {
                            resp = resp.header("content-length", len.to_string());
                        }
                        let resp = resp.body(StreamBody::new(stream).boxed()).unwrap();
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
async fn a_body_of_unannounced_length_is_refused_unread_and_starts_probation() {
    let (addr, sent) = fake_agent(Reply::Chunked).await;
    let pacing = Arc::new(ReplyPacing::default());
    let pool = Arc::new(IdlePool::new(ReplyRate::default(), pacing.clone()));
    let c = AgentClient::pooled(Arc::new(TcpDialer(addr)), pool.clone())
        .with_timeout(Duration::from_secs(30));
    let err = c.health().await.unwrap_err();
    assert!(matches!(err, AgentClientError::Unannounced), "{err:?}");
    assert!(
        err.to_string().contains("did not announce its length"),
        "{err}"
    );
    // Refused on the headers: the endless body would otherwise have been read up to the
    // call's limit (16 MiB for JSON) before the reply was known to be broken.
    assert!(pool.on_probation());
    assert_eq!(pacing.get().broken, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        sent.load(Ordering::Relaxed) <= 64 << 10,
        "the client kept reading a body it had refused"
    );
    // The connection was not kept for the next call.
    assert!(pool.is_empty());
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
    let p = pacing.get();
    assert!(p.waits > 0 && p.waited_us > 0, "{p:?}");
    assert_eq!(p.broken, 0);
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
    assert_eq!(pacing.get(), PacingCounts::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_breaks_a_limit_is_put_on_probation_and_only_it() {
    let (evil, _) = fake_agent(Reply::Announced16GiB).await;
    let (good, _) = fake_agent(Reply::Sized(4 << 10)).await;
    let pacing = Arc::new(ReplyPacing::default());
    // The default rate: 1 MiB/s on probation, so each call admitted costs 1/16 s.
    let evil_pool = Arc::new(IdlePool::new(ReplyRate::default(), pacing.clone()));
    let e = AgentClient::pooled(Arc::new(TcpDialer(evil)), evil_pool.clone())
        .with_timeout(Duration::from_secs(30));
    let g = client(good, ReplyRate::default(), pacing.clone());
    let first = e.health().await.unwrap_err();
    assert!(matches!(first, AgentClientError::TooLarge), "{first:?}");
    assert!(evil_pool.on_probation());
    assert_eq!(pacing.get().broken, 1);

    let start = Instant::now();
    for _ in 0..10 {
        let err = e.health().await.unwrap_err();
        assert!(matches!(err, AgentClientError::TooLarge), "{err:?}");
    }
    let evil_took = start.elapsed();
    let start = Instant::now();
    for _ in 0..10 {
        let err = g.health().await.unwrap_err();
        assert!(matches!(err, AgentClientError::Decode(_)), "{err:?}");
    }
    let good_took = start.elapsed();
    // Nine of the ten evil calls waited 62.5 ms each for admission.
    assert!(evil_took >= Duration::from_millis(550), "{evil_took:?}");
    assert!(good_took < Duration::from_millis(300), "{good_took:?}");
    let p = pacing.get();
    assert_eq!(p.broken, 11);
    assert!(p.waits >= 9, "{p:?}");
    assert_eq!(p.refused, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_probation_would_hold_too_long_is_refused_at_once() {
    let (evil, _) = fake_agent(Reply::Announced16GiB).await;
    let pacing = Arc::new(ReplyPacing::default());
    // 640 KiB/s: 10 KiB/s on probation, so one call's 64 KiB admission takes 6.4 s,
    // more than a call is held.
    let rate = ReplyRate {
        bytes_per_sec: 640 << 10,
        burst: MIB,
    };
    let e = client(evil, rate, pacing.clone());
    assert!(matches!(
        e.health().await.unwrap_err(),
        AgentClientError::TooLarge
    ));
    // Admitted at once (out of debt), broken again.
    assert!(matches!(
        e.health().await.unwrap_err(),
        AgentClientError::TooLarge
    ));
    let start = Instant::now();
    let err = e.health().await.unwrap_err();
    assert!(start.elapsed() < Duration::from_millis(100));
    let AgentClientError::Probation { retry_after } = err else {
        panic!("{err:?}")
    };
    assert!(retry_after > Duration::from_secs(5), "{retry_after:?}");
    assert!(err.to_string().contains("try again in"), "{err}");
    assert_eq!(pacing.get().refused, 1);
}

/// Answers every request with `len` bytes after `delay`; counts the most requests it was
/// answering at once.
async fn counting_agent(len: usize, delay: Duration) -> (SocketAddr, Arc<AtomicU64>) {
    let most = Arc::new(AtomicU64::new(0));
    let addr = counting_agent_into(len, delay, Arc::default(), most.clone()).await;
    (addr, most)
}

/// [`counting_agent`] counting into `now` and `most`, which several agents may share.
async fn counting_agent_into(
    len: usize,
    delay: Duration,
    now: Arc<AtomicU64>,
    most: Arc<AtomicU64>,
) -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let m = most;
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let (now, most) = (now.clone(), m.clone());
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req| {
                    let (now, most) = (now.clone(), most.clone());
                    async move {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        let body = http_body_util::Full::new(Bytes::from(vec![b'x'; len]));
                        Ok::<_, Infallible>(hyper::Response::new(body))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// Sixteen file reads at once from `addr` after one first read; all must succeed.
async fn sixteen_reads(c: &AgentClient) {
    c.read_file("/f", 0, Some(1 << 20)).await.unwrap();
    let reads = (0..16).map(|_| c.read_file("/f", 0, Some(1 << 20)));
    for r in futures_util::future::join_all(reads).await {
        r.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_answering_large_gets_few_file_reads_at_once() {
    let (addr, most) = counting_agent(256 << 10, Duration::from_millis(20)).await;
    let pacing = Arc::new(ReplyPacing::default());
    let c = client(addr, ReplyRate::default(), pacing.clone());
    sixteen_reads(&c).await;
    // The first read's 256 KiB reply made the agent one answering large: the sixteen
    // then went at most LARGE_READS at a time, the others waiting to be sent.
    let most = most.load(Ordering::SeqCst);
    assert!(most <= LARGE_READS as u64, "{most} reads in flight at once");
    assert!(
        pacing.get().large_waits >= 16 - LARGE_READS as u64,
        "{:?}",
        pacing.get()
    );

    // Small replies never engage the bound: all sixteen are in flight together.
    let (addr, most) = counting_agent(4 << 10, Duration::from_millis(100)).await;
    let pacing = Arc::new(ReplyPacing::default());
    let c = client(addr, ReplyRate::default(), pacing.clone());
    sixteen_reads(&c).await;
    let most = most.load(Ordering::SeqCst);
    assert!(most > LARGE_READS as u64, "{most} reads in flight at once");
    assert_eq!(pacing.get().large_waits, 0);

    // Nor does a destination whose reply limits are off.
    let (addr, most) = counting_agent(256 << 10, Duration::from_millis(100)).await;
    let c = client(addr, ReplyRate::UNLIMITED, Arc::default());
    sixteen_reads(&c).await;
    assert!(most.load(Ordering::SeqCst) > LARGE_READS as u64);
}

/// Three agents answering large, read sixteen at a time each by clients of the given
/// tenants (from `shares`): the most reads all three were answering at once.
async fn three_agents_read_by(shares: &TenantShares, tenants: [&str; 3]) -> u64 {
    let (now, most) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut clients = Vec::new();
    for tenant in tenants {
        let addr = counting_agent_into(
            256 << 10,
            Duration::from_millis(20),
            now.clone(),
            most.clone(),
        )
        .await;
        clients.push(
            client(addr, ReplyRate::default(), Arc::default()).with_tenant(shares.get(tenant)),
        );
    }
    futures_util::future::join_all(clients.iter().map(sixteen_reads)).await;
    most.load(Ordering::SeqCst)
}

/// One user's workspaces answering large share the user's places: three agents would
/// allow six reads at once by their own bounds, the user's share allows four. Other
/// users' reads are not held by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_reading_large_from_many_agents_gets_few_reads_at_once() {
    let shares = TenantShares::default();
    let most = three_agents_read_by(&shares, ["bob"; 3]).await;
    assert!(
        most <= TENANT_LARGE_READS as u64,
        "{most} of one user's reads in flight at once"
    );
    assert!(shares.queued() > 0);
    // Three agents, each read by its own user: only the agents' bounds hold.
    let most = three_agents_read_by(&shares, ["u1", "u2", "u3"]).await;
    assert!(
        most > TENANT_LARGE_READS as u64,
        "{most} reads in flight at once for three users"
    );
}
