//! Each user's tool calls in flight, capped, with a short queue in front of the cap.
//!
//! A call over its user's cap waits for a slot (at most as many waiting as the cap
//! allows, each at most the configured wait) before it is refused. Refusing at once made
//! a client that keeps more calls going than its cap spin: each of its surplus calls was
//! refused, retried and refused again, and every refusal cost the server a whole request
//! (HTTP, authentication, an rmcp service built for it) on the cores other users' calls
//! need. Waiting costs a parked task instead, and a user's surplus calls start as soon as
//! its own calls finish. Past the queue, calls are refused at once as before, so the
//! parked tasks stay bounded.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Default)]
struct User {
    running: usize,
    waiting: usize,
    /// Woken once per slot given back.
    freed: Arc<Notify>,
}

/// Every user's calls in flight and waiting.
#[derive(Debug, Default)]
pub(crate) struct UserSlots {
    users: Mutex<HashMap<String, User>>,
    refused: AtomicU64,
    queued: AtomicU64,
}

/// One call's place in its user's count; given back on drop.
#[derive(Debug)]
pub(crate) struct CallSlot<'a> {
    slots: &'a UserSlots,
    user: String,
}

/// Why a call got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoSlot {
    /// The cap and the queue were both full, or the wait ran out.
    Refused,
    /// The call was cancelled while it waited.
    Cancelled,
}

impl Drop for CallSlot<'_> {
    fn drop(&mut self) {
        let mut m = self.slots.lock();
        if let Some(u) = m.get_mut(&self.user) {
            u.running = u.running.saturating_sub(1);
            if u.running == 0 && u.waiting == 0 {
                m.remove(&self.user);
            } else {
                u.freed.notify_one();
            }
        }
    }
}

impl UserSlots {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, User>> {
        self.users.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes one of `user`'s `max` slots, waiting up to `wait` behind at most `max` other
    /// waiting calls of the same user.
    pub(crate) async fn enter(
        &self,
        user: &str,
        max: usize,
        wait: Duration,
        cancel: &CancellationToken,
    ) -> Result<CallSlot<'_>, NoSlot> {
        let max = max.max(1);
        let deadline = tokio::time::Instant::from_std(crate::runtime::clock::now()) + wait;
        let mut queued = false;
        loop {
            let freed = {
                let mut m = self.lock();
                let u = m.entry(user.to_string()).or_default();
                if u.running < max {
                    u.running += 1;
                    if queued {
                        u.waiting -= 1;
                    }
                    return Ok(CallSlot {
                        slots: self,
                        user: user.to_string(),
                    });
                }
                if !queued {
                    if u.waiting >= max || wait.is_zero() {
                        drop(m);
                        self.refused.fetch_add(1, Relaxed);
                        return Err(NoSlot::Refused);
                    }
                    u.waiting += 1;
                    queued = true;
                    self.queued.fetch_add(1, Relaxed);
                }
                u.freed.clone()
            };
            // A slot given back between the unlock and this wait leaves its permit in
            // the `Notify`, so it is not missed.
            let outcome = tokio::select! {
                () = freed.notified() => None,
                () = tokio::time::sleep_until(deadline) => Some(NoSlot::Refused),
                () = cancel.cancelled() => Some(NoSlot::Cancelled),
            };
            if let Some(why) = outcome {
                self.leave_queue(user);
                if why == NoSlot::Refused {
                    self.refused.fetch_add(1, Relaxed);
                }
                return Err(why);
            }
        }
    }

    fn leave_queue(&self, user: &str) {
        let mut m = self.lock();
        if let Some(u) = m.get_mut(user) {
            u.waiting = u.waiting.saturating_sub(1);
            // (A wake-up this waiter was given but did not use is passed on to the next
            // waiter by `Notify` itself when the wait is dropped.)
            if u.running == 0 && u.waiting == 0 {
                m.remove(user);
            }
        }
    }

    /// Calls refused: over the cap with the queue full, or not given a slot in time.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// Calls that had to wait for a slot (whether they got one or not).
    pub(crate) fn queued(&self) -> u64 {
        self.queued.load(Relaxed)
    }

    /// Calls running, all users.
    pub(crate) fn running(&self) -> usize {
        self.lock().values().map(|u| u.running).sum()
    }

    /// Calls waiting for a slot, all users.
    pub(crate) fn waiting(&self) -> usize {
        self.lock().values().map(|u| u.waiting).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_millis(300);

    #[tokio::test]
    async fn calls_past_the_cap_wait_for_a_slot_and_other_users_do_not() {
        let s = UserSlots::default();
        let none = CancellationToken::new();
        let a1 = s.enter("alice", 2, WAIT, &none).await.unwrap();
        let _a2 = s.enter("alice", 2, WAIT, &none).await.unwrap();
        let _b = s.enter("bob", 2, WAIT, &none).await.unwrap();
        let third = s.enter("alice", 2, WAIT, &none);
        tokio::pin!(third);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), third.as_mut())
                .await
                .is_err(),
            "the third call waits"
        );
        assert_eq!(s.waiting(), 1);
        drop(a1);
        let a3 = tokio::time::timeout(Duration::from_millis(100), third)
            .await
            .expect("a freed slot goes to the waiting call at once");
        assert!(a3.is_ok());
        assert_eq!(
            (s.running(), s.waiting(), s.refused(), s.queued()),
            (3, 0, 0, 1)
        );
    }

    #[tokio::test]
    async fn a_wait_runs_out_and_a_full_queue_refuses_at_once() {
        let s = UserSlots::default();
        let none = CancellationToken::new();
        let _a = s.enter("alice", 1, WAIT, &none).await.unwrap();
        let waiting = s.enter("alice", 1, WAIT, &none);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), waiting.as_mut())
                .await
                .is_err()
        );
        // The queue (as long as the cap: one) is full: refused without waiting.
        let started = crate::runtime::clock::now();
        assert_eq!(
            s.enter("alice", 1, WAIT, &none).await.err(),
            Some(NoSlot::Refused)
        );
        assert!(started.elapsed() < Duration::from_millis(100));
        assert_eq!(waiting.await.err(), Some(NoSlot::Refused));
        assert!(started.elapsed() >= WAIT - Duration::from_millis(20));
        assert_eq!((s.refused(), s.waiting(), s.running()), (2, 0, 1));
    }

    #[tokio::test]
    async fn a_cancelled_wait_leaves_and_the_next_waiter_gets_the_slot() {
        let s = UserSlots::default();
        let none = CancellationToken::new();
        let a = s.enter("alice", 2, WAIT, &none).await.unwrap();
        let b = s.enter("alice", 2, WAIT, &none).await.unwrap();
        let cancel = CancellationToken::new();
        let first = s.enter("alice", 2, WAIT, &cancel);
        let second = s.enter("alice", 2, WAIT, &none);
        tokio::pin!(first, second);
        let _ = tokio::time::timeout(Duration::from_millis(1), first.as_mut()).await;
        let _ = tokio::time::timeout(Duration::from_millis(1), second.as_mut()).await;
        cancel.cancel();
        assert_eq!(first.await.err(), Some(NoSlot::Cancelled));
        drop(a);
        let got = tokio::time::timeout(Duration::from_millis(100), second)
            .await
            .expect("the slot reached the remaining waiter");
        assert!(got.is_ok());
        drop((got, b));
        assert_eq!((s.running(), s.waiting()), (0, 0));
        assert!(s.lock().is_empty(), "an idle user's entry is gone");
    }

    #[tokio::test]
    async fn many_callers_never_exceed_the_cap() {
        let s = Arc::new(UserSlots::default());
        let peak = Arc::new(AtomicU64::new(0));
        let now = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        for _ in 0..64 {
            let (s, peak, now) = (s.clone(), peak.clone(), now.clone());
            tasks.push(tokio::spawn(async move {
                let none = CancellationToken::new();
                let mut ok = 0;
                for _ in 0..20 {
                    if let Ok(_slot) = s.enter("alice", 4, Duration::from_secs(5), &none).await {
                        let n = now.fetch_add(1, Relaxed) + 1;
                        peak.fetch_max(n, Relaxed);
                        tokio::task::yield_now().await;
                        now.fetch_sub(1, Relaxed);
                        ok += 1;
                    }
                }
                ok
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.unwrap();
        }
        assert!(peak.load(Relaxed) <= 4, "peak {}", peak.load(Relaxed));
        assert_eq!(ok + s.refused(), 64 * 20);
        assert_eq!((s.running(), s.waiting()), (0, 0));
    }
}
