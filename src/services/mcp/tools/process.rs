//! Process tools: `workspace_bash` and `workspace_process_{list,output,signal}`.
//!
//! `workspace_bash` starts the command in the background on the agent and waits up to
//! [`FIRST_WAIT`] for it to exit in the same request, so a short command costs one round
//! trip. A command still running then is long-polled, so the tool can report progress,
//! enforce the timeout itself, and kill the command when the request is cancelled or the
//! client goes away (a drop guard covers the case where the handler future is dropped
//! outright; during the first request the agent itself kills a command whose request is
//! dropped).

use super::out::{BashOut, ProcessListOut, ProcessOutputOut, SignalOut};
use super::{Ctx, Cx};
use crate::runtime::clock;
use crate::services::agent::client::AgentClient;
use crate::services::agent::types::{ProcessOutput, SignalName, StartProcessRequest};
use crate::services::mcp::args::{self, BashArgs, ProcessArgs, SignalArgs, WorkspaceArgs};
use crate::services::mcp::result::{ToolError, within};
use rmcp::RoleServer;
use rmcp::model::{ProgressNotificationParam, ProgressToken};
use std::time::{Duration, Instant};

/// How long the kill sent on timeout or cancellation may take.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// Most output carried in one progress message.
const PROGRESS_TAIL_BYTES: usize = 4096;
/// Fewest milliseconds between progress notifications while output streams in.
const PROGRESS_MIN_GAP: Duration = Duration::from_millis(200);
/// How long the start request waits for the command to exit. A command done by then costs
/// one round trip to the agent; a longer one gets its first progress notification when
/// the wait ends (no later than the rate limit would allow one anyway) and is polled from
/// then on. A cancellation that arrives meanwhile takes effect when the wait ends: only
/// the answer names the process to kill (and an agent that predates the wait answers at
/// once).
const FIRST_WAIT: Duration = PROGRESS_MIN_GAP;

pub(super) async fn bash(cx: Cx, a: BashArgs, ctx: Ctx) -> Result<BashOut, ToolError> {
    let limits = cx.limits();
    args::check_command(&a.command, limits)?;
    let timeout_ms = args::bash_timeout_ms(a.timeout_ms, limits)?;
    let (_, client) = cx.agent(&a.workspace).await?;
    let started_at = clock::now();
    let background = a.background.unwrap_or(false);
    let total = Duration::from_millis(timeout_ms);
    let first_wait = if background {
        Duration::ZERO
    } else {
        FIRST_WAIT.min(limits.poll_interval).min(total)
    };
    let req = StartProcessRequest {
        command: a.command,
        background: true,
        wait_ms: (!first_wait.is_zero()).then(|| millis(first_wait)),
        ..Default::default()
    };
    let first = within(
        limits.request_timeout + first_wait,
        client.start_process(&req),
    )
    .await?;
    let mut buf = OutputTail::new(limits.max_output_bytes);
    if background {
        buf.push(&first.output, first.dropped_bytes);
        return Ok(BashOut {
            output: buf.text(),
            exit_code: first.exit_code,
            signal: first.signal,
            timed_out: false,
            running: first.running,
            process_id: Some(first.id),
            truncated_bytes: buf.truncated,
            duration_ms: elapsed_ms(started_at),
        });
    }
    let id = first.id.clone();
    let mut guard = KillGuard {
        client: first.running.then(|| client.clone()),
        id: id.clone(),
    };
    let run = Run {
        client: &client,
        id: &id,
        limits,
        deadline: started_at + total,
        total_ms: timeout_ms,
        started_at,
        progress: ctx
            .meta
            .get_progress_token()
            .map(|t| Progress::new(t, ctx.peer.clone())),
    };
    let outcome = tokio::select! {
        r = run.drive(first, &mut buf) => r,
        () = ctx.ct.cancelled() => Ok(Outcome::Cancelled),
    };
    let last = match outcome {
        Ok(Outcome::Exited(last)) => {
            guard.disarm();
            last
        }
        Ok(Outcome::TimedOut) => {
            guard.disarm();
            kill(&client, &id).await;
            // Collect what it printed before dying and its final state.
            let last = within(
                limits.request_timeout,
                client.process_output(&id, buf.next_offset, 2000),
            )
            .await?;
            buf.push(&last.output, last.dropped_bytes);
            buf.next_offset = last.next_offset;
            return Ok(BashOut {
                output: buf.text(),
                exit_code: last.exit_code,
                signal: last.signal,
                timed_out: true,
                running: last.running,
                process_id: None,
                truncated_bytes: buf.truncated,
                duration_ms: elapsed_ms(started_at),
            });
        }
        Ok(Outcome::Cancelled) => {
            guard.disarm();
            tracing::debug!(process = %id, "workspace_bash cancelled; killing it");
            kill(&client, &id).await;
            return Err(ToolError::Invalid(
                "cancelled; the command was killed".into(),
            ));
        }
        Err(e) => return Err(e),
    };
    Ok(BashOut {
        output: buf.text(),
        exit_code: last.exit_code,
        signal: last.signal,
        timed_out: last.timed_out,
        running: false,
        process_id: None,
        truncated_bytes: buf.truncated,
        duration_ms: elapsed_ms(started_at),
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

enum Outcome {
    Exited(ProcessOutput),
    TimedOut,
    Cancelled,
}

struct Run<'a> {
    client: &'a AgentClient,
    id: &'a str,
    limits: &'a crate::services::mcp::config::McpLimits,
    deadline: Instant,
    total_ms: u64,
    started_at: Instant,
    progress: Option<Progress>,
}

impl Run<'_> {
    /// Takes in the start's answer, then polls until the process exits or the deadline
    /// passes.
    async fn drive(
        mut self,
        first: ProcessOutput,
        buf: &mut OutputTail,
    ) -> Result<Outcome, ToolError> {
        let mut out = first;
        loop {
            buf.push(&out.output, out.dropped_bytes);
            buf.next_offset = out.next_offset;
            if !out.running {
                return Ok(Outcome::Exited(out));
            }
            let now = clock::now();
            if now >= self.deadline {
                return Ok(Outcome::TimedOut);
            }
            self.report(buf).await;
            let wait = self
                .limits
                .poll_interval
                .min(self.deadline.saturating_duration_since(now));
            let wait_ms = millis(wait).max(1);
            out = within(
                self.limits.request_timeout + wait,
                self.client
                    .process_output(self.id, buf.next_offset, wait_ms),
            )
            .await?;
        }
    }

    async fn report(&mut self, buf: &OutputTail) {
        let elapsed = elapsed_ms(self.started_at);
        let total = self.total_ms;
        if let Some(p) = &mut self.progress {
            p.send(elapsed, total, buf).await;
        }
    }
}

/// Sends `notifications/progress` with the output so far.
struct Progress {
    token: ProgressToken,
    peer: rmcp::Peer<RoleServer>,
    last_value: f64,
    last_sent: Option<Instant>,
}

impl Progress {
    fn new(token: ProgressToken, peer: rmcp::Peer<RoleServer>) -> Self {
        Self {
            token,
            peer,
            last_value: 0.0,
            last_sent: None,
        }
    }

    /// Rate-limited to one per [`PROGRESS_MIN_GAP`]; a quiet command still gets one per
    /// poll, which doubles as a heartbeat.
    async fn send(&mut self, elapsed_ms: u64, total_ms: u64, buf: &OutputTail) {
        let now = clock::now();
        if self
            .last_sent
            .is_some_and(|t| now.duration_since(t) < PROGRESS_MIN_GAP)
        {
            return;
        }
        // Progress must strictly increase.
        let value = (elapsed_ms as f64).max(self.last_value + 1.0);
        self.last_value = value;
        self.last_sent = Some(now);
        let message = format!(
            "running for {:.1}s; output so far ({} bytes):\n{}",
            elapsed_ms as f64 / 1000.0,
            buf.total,
            buf.tail(PROGRESS_TAIL_BYTES)
        );
        let param = ProgressNotificationParam::new(self.token.clone(), value)
            .with_total(total_ms as f64)
            .with_message(message);
        if let Err(e) = self.peer.notify_progress(param).await {
            tracing::debug!(error = %e, "progress notification not delivered");
        }
    }
}

/// Kills the process if the handler is dropped before it finished (client gone and the
/// future dropped rather than cancelled).
struct KillGuard {
    client: Option<AgentClient>,
    id: String,
}

impl KillGuard {
    fn disarm(&mut self) {
        self.client = None;
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let id = std::mem::take(&mut self.id);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Bounded by KILL_TIMEOUT; holds the agent client (and its lease) until done.
            rt.spawn(async move { kill(&client, &id).await });
        }
    }
}

async fn kill(client: &AgentClient, id: &str) {
    match tokio::time::timeout(KILL_TIMEOUT, client.signal_process(id, SignalName::Kill)).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!(process = id, error = %e, "kill failed"),
        Err(_) => tracing::debug!(process = id, "kill timed out"),
    }
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(clock::now().duration_since(since).as_millis()).unwrap_or(u64::MAX)
}

/// The last `cap` bytes of a process's output, and how much was left out.
#[derive(Debug)]
pub(crate) struct OutputTail {
    cap: usize,
    buf: String,
    /// Bytes left out: dropped by the agent or pushed out of the tail.
    pub truncated: u64,
    /// Bytes seen in total (including truncated ones).
    pub total: u64,
    /// Offset to poll from next.
    pub next_offset: u64,
}

impl OutputTail {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            cap,
            buf: String::new(),
            truncated: 0,
            total: 0,
            next_offset: 0,
        }
    }

    pub(crate) fn push(&mut self, s: &str, dropped: u64) {
        self.truncated += dropped;
        self.total += dropped + s.len() as u64;
        self.buf.push_str(s);
        if self.buf.len() > self.cap {
            let cut = floor_char_boundary(&self.buf, self.buf.len() - self.cap);
            self.buf.drain(..cut);
            self.truncated += cut as u64;
        }
    }

    pub(crate) fn text(&self) -> String {
        self.buf.clone()
    }

    /// The last `n` bytes (at a character boundary).
    pub(crate) fn tail(&self, n: usize) -> &str {
        let start = floor_char_boundary(&self.buf, self.buf.len().saturating_sub(n));
        self.buf.get(start..).unwrap_or("")
    }
}

/// The first char boundary at or after `i`, so the part kept from there is valid UTF-8.
fn floor_char_boundary(s: &str, i: usize) -> usize {
    let mut i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

pub(super) async fn list(cx: Cx, a: WorkspaceArgs, _: Ctx) -> Result<ProcessListOut, ToolError> {
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(cx.limits().request_timeout, client.list_processes()).await?;
    Ok(ProcessListOut {
        processes: r.processes.into_iter().map(Into::into).collect(),
    })
}

pub(super) async fn output(cx: Cx, a: ProcessArgs, _: Ctx) -> Result<ProcessOutputOut, ToolError> {
    args::check_process_id(&a.process_id)?;
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(
        cx.limits().request_timeout,
        client.process_output(&a.process_id, 0, 0),
    )
    .await?;
    let mut buf = OutputTail::new(cx.limits().max_output_bytes);
    buf.push(&r.output, r.dropped_bytes);
    Ok(ProcessOutputOut {
        process_id: r.id,
        output: buf.text(),
        running: r.running,
        exit_code: r.exit_code,
        signal: r.signal,
        timed_out: r.timed_out,
        truncated_bytes: buf.truncated,
    })
}

pub(super) async fn signal(cx: Cx, a: SignalArgs, _: Ctx) -> Result<SignalOut, ToolError> {
    args::check_process_id(&a.process_id)?;
    let (_, client) = cx.agent(&a.workspace).await?;
    let r = within(
        cx.limits().request_timeout,
        client.signal_process(&a.process_id, a.signal.into()),
    )
    .await?;
    let name = match a.signal {
        args::SignalArg::Terminate => "terminate",
        args::SignalArg::Kill => "kill",
        args::SignalArg::Interrupt => "interrupt",
    };
    Ok(SignalOut {
        process_id: r.id,
        signal: name.into(),
        delivered: r.delivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_and_counts_the_rest() {
        let mut t = OutputTail::new(4);
        t.push("ab", 0);
        assert_eq!((t.text().as_str(), t.truncated), ("ab", 0));
        t.push("cdef", 3);
        assert_eq!(t.text(), "cdef");
        assert_eq!(t.truncated, 3 + 2);
        assert_eq!(t.total, 9);
        // Multi-byte characters are never split.
        let mut t = OutputTail::new(3);
        t.push("aéé", 0);
        assert_eq!(t.text(), "é");
        assert_eq!(t.tail(1), "");
        assert_eq!(t.tail(2), "é");
    }
}
