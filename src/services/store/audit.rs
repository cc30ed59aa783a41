//! The audit writer: tool calls are queued without waiting (a bounded channel; a full
//! queue drops the record and counts it) and written in batches by one task, so a call
//! never waits on the database. A batch that fails is retried a few times (the database
//! may be restarting), then dropped and counted.

use super::db::{Mode, script};
use super::error::StoreError;
use super::ops;
use crate::services::control::ToolCallRecord;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Records written per transaction at most.
const BATCH: usize = 512;

/// After the first record of a batch, how long the writer waits for more. A write is one
/// transaction (with PostgreSQL, one WAL flush): without the wait, a busy server wrote a
/// few records per transaction, hundreds of transactions a second, on the cores serving
/// the calls; with it, at most ten a second at any rate below `BATCH` per interval.
const LINGER: Duration = Duration::from_millis(100);

/// Attempts per batch before it is dropped.
const ATTEMPTS: u32 = 3;

/// The queue side, held by the store.
#[derive(Debug)]
pub(crate) struct AuditQueue {
    tx: mpsc::Sender<ToolCallRecord>,
    /// Queued and not yet written or dropped.
    pending: AtomicU64,
    written: AtomicU64,
    batches: AtomicU64,
    dropped_full: AtomicU64,
    dropped_error: AtomicU64,
}

/// Counters for `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditStats {
    /// Records in the queue or being written.
    pub pending: u64,
    /// Records written.
    pub written: u64,
    /// Transactions that wrote them.
    pub batches: u64,
    /// Records dropped because the queue was full.
    pub dropped_queue_full: u64,
    /// Records dropped because the database kept failing.
    pub dropped_store_error: u64,
}

impl AuditQueue {
    /// A queue of `capacity` records and its receiving end, for [`run`].
    pub(crate) fn new(capacity: usize) -> (Self, mpsc::Receiver<ToolCallRecord>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Self {
                tx,
                pending: AtomicU64::new(0),
                written: AtomicU64::new(0),
                batches: AtomicU64::new(0),
                dropped_full: AtomicU64::new(0),
                dropped_error: AtomicU64::new(0),
            },
            rx,
        )
    }

    /// Queues a record, or drops and counts it when the queue is full. Never waits.
    pub(crate) fn push(&self, record: ToolCallRecord) {
        self.pending.fetch_add(1, Ordering::AcqRel);
        if self.tx.try_send(record).is_err() {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            let n = self.dropped_full.fetch_add(1, Ordering::Relaxed);
            if n.is_power_of_two() {
                tracing::warn!(
                    dropped = n + 1,
                    "audit queue full: tool call records dropped (the database is not keeping up)"
                );
            }
        }
    }

    pub(crate) fn stats(&self) -> AuditStats {
        AuditStats {
            pending: self.pending.load(Ordering::Acquire),
            written: self.written.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            dropped_queue_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_store_error: self.dropped_error.load(Ordering::Relaxed),
        }
    }

    /// Records queued and not yet written or dropped.
    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }
}

/// Writes queued records until `stop`, then writes what is left and returns.
pub(crate) async fn run(
    inner: Arc<super::Inner>,
    mut rx: mpsc::Receiver<ToolCallRecord>,
    stop: CancellationToken,
) {
    let mut buf = Vec::with_capacity(BATCH);
    loop {
        let n = tokio::select! {
            biased;
            () = stop.cancelled() => {
                rx.close();
                while let Ok(r) = rx.try_recv() {
                    buf.push(r);
                    if buf.len() >= BATCH {
                        write(&inner, &mut buf, false).await;
                    }
                }
                write(&inner, &mut buf, false).await;
                return;
            }
            n = rx.recv_many(&mut buf, BATCH) => n,
        };
        if n == 0 {
            return;
        }
        // Linger by sleeping, not by receiving: a receiver waiting on the queue is woken
        // by every record sent, which at thousands of calls a second cost a task wake-up
        // (often a thread's) per call. A backlog of a whole batch is written at once.
        if buf.len() + rx.len() < BATCH {
            let until = tokio::time::Instant::from_std(crate::runtime::clock::now() + LINGER);
            tokio::select! {
                biased;
                // The loop above drains the queue once this batch is written.
                () = stop.cancelled() => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
        while buf.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => buf.push(r),
                Err(_) => break,
            }
        }
        write(&inner, &mut buf, true).await;
    }
}

/// Writes `buf` (then empties it), retrying when `retry`.
async fn write(inner: &super::Inner, buf: &mut Vec<ToolCallRecord>, retry: bool) {
    if buf.is_empty() {
        return;
    }
    let records: Arc<[ToolCallRecord]> = std::mem::take(buf).into();
    let n = records.len() as u64;
    let attempts = if retry { ATTEMPTS } else { 1 };
    let mut last: Option<StoreError> = None;
    for attempt in 1..=attempts {
        let batch = records.clone();
        let r = inner
            .db
            .run(
                Mode::Write,
                script(move |tx| Box::pin(async move { ops::audit::insert(tx, &batch).await })),
            )
            .await;
        match r {
            Ok(()) => {
                inner.audit.written.fetch_add(n, Ordering::Relaxed);
                inner.audit.batches.fetch_add(1, Ordering::Relaxed);
                inner.audit.pending.fetch_sub(n, Ordering::AcqRel);
                return;
            }
            Err(e) => {
                inner.count_error();
                last = Some(e);
                if attempt < attempts {
                    tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                }
            }
        }
    }
    inner.audit.dropped_error.fetch_add(n, Ordering::Relaxed);
    inner.audit.pending.fetch_sub(n, Ordering::AcqRel);
    if let Some(e) = last {
        tracing::warn!(records = n, error = %e, "audit records dropped: the store kept failing");
    }
}
