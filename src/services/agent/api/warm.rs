//! A shell started ahead of the next command.
//!
//! Most of a short command's time is starting `sh`: executing it, loading the C library
//! and tearing the process down take 0.5–1 ms on a typical virtual machine before the
//! command does anything, more than the rest of a `workspace_bash` call on a fast link.
//! So an unconfined agent keeps one `sh` started ahead of need, in its own process group
//! and in the default working directory, blocked reading a script from its stdin
//! (`. /dev/stdin`). A command that can take it is written there as one line — stdin to
//! `/dev/null`, the request's variables exported, then `eval` of the command — and the
//! pipe is closed. The shell then runs the command as `sh -c` would, with the same `$0`,
//! environment, working directory and line numbers, its output on the pipes the
//! process table reads. A fresh shell is started behind it once the command exits or
//! has run a moment, so a burst of commands takes the normal path after the first.
//!
//! Only what a script expresses exactly takes this path: the default working directory
//! (a `cd` would also set `OLDPWD`), variable names that are plain identifiers and not
//! ones the shell itself reads (`IFS`, `ENV`, …), no NUL bytes, and a script that fits
//! the pipe's buffer so writing it never waits. Everything else, and every command of a
//! confined agent (whose commands start inside the sandbox, in a directory opened
//! beneath the root), starts a new `sh -c` as before. The one visible difference is the
//! prefix of the shell's own error messages: `eval: foo: not found` where `sh -c` says
//! `foo: not found`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};

/// Largest script written to a waiting shell: less than a pipe's buffer (64 KiB on Linux,
/// 16 KiB on some systems), so the write completes at once.
const MAX_SCRIPT: usize = 12 * 1024;

/// Variables the shell reads for itself: set by `export` after it started, they would
/// act differently than in the environment `sh -c` starts with.
const SHELL_OWN: &[&str] = &[
    "IFS", "ENV", "PPID", "OPTIND", "OPTARG", "PS1", "PS2", "PS4", "PWD", "OLDPWD", "LINENO",
];

/// The shell waiting for a command in `dir` (the default working directory), if any.
/// Clones share it.
#[derive(Debug, Clone)]
pub(super) struct WarmShell {
    dir: Arc<Path>,
    waiting: Arc<Mutex<Option<Waiting>>>,
    closed: Arc<AtomicBool>,
}

/// Dropped unused, its stdin closes and the shell ends by itself (an empty script).
#[derive(Debug)]
struct Waiting {
    child: Child,
    stdin: ChildStdin,
}

/// A shell being handed a command: killed if the handing does not finish (the write
/// failed, or the request was dropped).
struct Handing(Option<Waiting>);

impl Drop for Handing {
    fn drop(&mut self) {
        if let Some(w) = self.0.as_mut() {
            let _ = w.child.start_kill();
        }
    }
}

impl WarmShell {
    /// None waiting yet; [`Self::refill`] starts one.
    pub(super) fn new(dir: &Path) -> Self {
        Self {
            dir: dir.into(),
            waiting: Arc::default(),
            closed: Arc::default(),
        }
    }

    fn slot(&self) -> MutexGuard<'_, Option<Waiting>> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `command` to the waiting shell if it can take it exactly; the shell's
    /// process, now running the command, or `None` (start it the normal way).
    pub(super) async fn run(
        &self,
        command: &str,
        env: &BTreeMap<String, String>,
        workdir: &Path,
    ) -> Option<Child> {
        if workdir != &*self.dir {
            return None;
        }
        let script = script(command, env)?;
        let mut handing = Handing(Some(self.slot().take()?));
        let w = handing.0.as_mut()?;
        // It may have been killed from outside while it waited.
        if !matches!(w.child.try_wait(), Ok(None)) {
            return None;
        }
        // The script fits the pipe's buffer, so this does not wait; if it fails, the
        // guard kills the shell rather than leave a command running that nobody tracks.
        w.stdin.write_all(&script).await.ok()?;
        let w = handing.0.take()?;
        drop(w.stdin);
        Some(w.child)
    }

    /// Starts a shell to wait for the next command, unless one waits or this is closed.
    /// `make` builds it for the directory (`sh -c '. /dev/stdin'`, stdio piped, its own
    /// process group).
    pub(super) fn refill(&self, make: impl FnOnce(&Path) -> Command) {
        if self.closed.load(Ordering::Acquire) || self.ready() {
            return;
        }
        let Ok(mut child) = make(&self.dir).spawn() else {
            return;
        };
        let Some(stdin) = child.stdin.take() else {
            let _ = child.start_kill();
            return;
        };
        let mut slot = self.slot();
        if slot.is_none() && !self.closed.load(Ordering::Acquire) {
            *slot = Some(Waiting { child, stdin });
        } else {
            let _ = child.start_kill();
        }
    }

    /// Whether a shell is waiting.
    pub(super) fn ready(&self) -> bool {
        self.slot().is_some()
    }

    /// Ends the waiting shell and starts no more.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        if let Some(mut w) = self.slot().take() {
            let _ = w.child.start_kill();
        }
    }
}

/// The line a waiting shell runs for `command` with `env`, or `None` if a script cannot
/// express it exactly.
pub(super) fn script(command: &str, env: &BTreeMap<String, String>) -> Option<Vec<u8>> {
    if command.contains('\0') {
        return None;
    }
    let mut s = String::from("exec </dev/null; ");
    for (name, value) in env {
        if !is_plain_name(name) || value.contains('\0') {
            return None;
        }
        s.push_str("export ");
        s.push_str(name);
        s.push('=');
        quote_into(&mut s, value);
        s.push_str("; ");
    }
    s.push_str("eval ");
    quote_into(&mut s, command);
    s.push('\n');
    (s.len() <= MAX_SCRIPT).then(|| s.into_bytes())
}

/// A name `export` takes as given, and not one the shell reads for itself.
fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !SHELL_OWN.contains(&name)
}

/// Appends `value` single-quoted: nothing inside single quotes is special except the
/// quote itself, written as `'\''`.
fn quote_into(s: &mut String, value: &str) {
    s.push('\'');
    for c in value.chars() {
        if c == '\'' {
            s.push_str("'\\''");
        } else {
            s.push(c);
        }
    }
    s.push('\'');
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;
    use std::process::Stdio;
    use tokio::io::AsyncReadExt;

    fn waiting(dir: &Path) -> Command {
        let mut c = Command::new("sh");
        c.current_dir(dir)
            .arg("-c")
            .arg(". /dev/stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        c
    }

    async fn outcome(mut child: Child) -> (String, String, Option<i32>) {
        let (mut out, mut err) = (String::new(), String::new());
        let mut so = child.stdout.take().expect("stdout");
        let mut se = child.stderr.take().expect("stderr");
        let (a, b) = tokio::join!(so.read_to_string(&mut out), se.read_to_string(&mut err));
        a.expect("stdout");
        b.expect("stderr");
        let code = child.wait().await.expect("wait").code();
        (out, err, code)
    }

    /// The same command through a waiting shell and through `sh -c`.
    async fn both(
        shell: &WarmShell,
        dir: &Path,
        command: &str,
        env: &BTreeMap<String, String>,
    ) -> ((String, String, Option<i32>), (String, String, Option<i32>)) {
        shell.refill(waiting);
        assert!(shell.ready());
        let warm = shell
            .run(command, env, dir)
            .await
            .unwrap_or_else(|| panic!("{command:?} did not take the waiting shell"));
        let warm = outcome(warm).await;
        let mut cold = Command::new("sh");
        cold.current_dir(dir)
            .arg("-c")
            .arg(command)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        let cold = outcome(cold.spawn().expect("sh")).await;
        (warm, cold)
    }

    #[tokio::test]
    async fn a_waiting_shell_runs_commands_as_sh_c_does() {
        let dir = tempfile::tempdir().unwrap();
        let shell = WarmShell::new(dir.path());
        let env: BTreeMap<String, String> = [
            ("PLAIN", "v"),
            ("QUOTES", "it's \"q\" $HOME `x` \\n"),
            ("LINES", "a\nb\n"),
            ("EMPTY", ""),
        ]
        .into_iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
        let commands = [
            "echo hi",
            "echo \"$PLAIN|$QUOTES|$LINES|${EMPTY-unset}\"",
            "env | grep -E '^(PLAIN|QUOTES|EMPTY)=' | sort",
            "printf '%s\\n' \"$0\" \"$#\"; pwd",
            "exit 3",
            "false",
            "read -r line; echo \"read $? [$line]\"",
            "echo out; echo err >&2; kill -TERM $$",
            "x='it'\\''s'; echo \"$x\"\n# a comment\necho 'two\nlines' ; cd / && pwd",
            "for i in 1 2 3; do echo $i; done | tail -n 1",
            "set -e; false; echo not reached",
            "trap 'echo bye' EXIT; echo hello",
            "cat <<'EOF'\nhere $doc\nEOF",
            "echo 'it''s'",
        ];
        for c in commands {
            let (warm, cold) = both(&shell, dir.path(), c, &env).await;
            assert_eq!(warm, cold, "{c:?}");
        }
        // The shell's own error messages say where they come from.
        let (warm, cold) = both(&shell, dir.path(), "nosuchcommand-x", &env).await;
        assert_eq!((warm.0, warm.2), (cold.0, cold.2));
        assert!(warm.1.contains("nosuchcommand-x: not found"), "{}", warm.1);
        shell.close();
        assert!(!shell.ready());
        shell.refill(waiting);
        assert!(!shell.ready(), "a closed shell started another");
    }

    #[tokio::test]
    async fn what_a_script_cannot_say_exactly_takes_the_normal_path() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let shell = WarmShell::new(dir.path());
        shell.refill(waiting);
        let env = |k: &str, v: &str| BTreeMap::from([(k.to_string(), v.to_string())]);
        let none = BTreeMap::new();
        // Another working directory, odd or shell-owned names, NUL, a long script.
        assert!(shell.run("pwd", &none, other.path()).await.is_none());
        for (k, v) in [
            ("A-B", "1"),
            ("1A", "1"),
            ("", "1"),
            ("IFS", ":"),
            ("A", "a\0b"),
        ] {
            assert!(script("true", &env(k, v)).is_none(), "{k:?}={v:?}");
        }
        assert!(script("echo \0", &none).is_none());
        assert!(script(&"x".repeat(MAX_SCRIPT), &none).is_none());
        // None of those spent the waiting shell.
        assert!(shell.ready());
        // A waiting shell killed from outside is not handed a command.
        let taken = shell.slot().take();
        if let Some(mut w) = taken {
            w.child.start_kill().unwrap();
            w.child.wait().await.unwrap();
            *shell.slot() = Some(w);
        }
        assert!(shell.run("echo hi", &none, dir.path()).await.is_none());
        assert!(!shell.ready());
    }
}
