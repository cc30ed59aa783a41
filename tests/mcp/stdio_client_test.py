"""`agentwire mcp` over stdio with the official Python SDK (mcp==2.3.0).

Run by tests/mcp_client.rs, which starts `agentwire serve`, two workspace agents (`dev`
and `other`), logs a client in (AGENTWIRE_CONFIG_DIR) and passes coordinates in the
environment. The SDK spawns the real `agentwire mcp` binary, as an MCP client on a
person's machine does. Phases (argv[1]):

  tools      every tool of both toolsets, and that stdout carries only MCP
  outage     serve is killed: calls over the live tunnel keep working, a new workspace
             fails within its deadline saying the server is unreachable; serve restarts
             and calls to the new workspace work again within 2 s
  freeze     the `agentwire mcp` process is stopped for 10 s: calls work within 2 s of
             SIGCONT
  skew       as freeze, and while it is stopped its wall clock is turned back an hour
             (libfaketime, FAKETIME_LIB; monotonic time untouched): calls work within 2 s,
             and a destination that idled out is set up again on the skewed clock
  idle       with a 2 s idle timeout the destination is closed, then comes back
  netchange  (inside a network namespace) waits while the test changes this host's
             address, then measures how long until calls work again

Prints one line per check, `figure NAME VALUE` lines, and "N passed, M failed".
"""

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import anyio
from mcp import Client, StdioServerParameters

BIN = os.environ["AGENTWIRE_BIN"]
CFG = os.environ["AGENTWIRE_CONFIG_DIR"]
DEV_DIR = os.environ["DEV_DIR"]
SERVE_URL = os.environ.get("SERVE_URL", "")
SERVE_PIDFILE = os.environ.get("SERVE_PIDFILE", "")
SERVE_ARGV = json.loads(os.environ.get("SERVE_ARGV", "[]"))

STANDARD = sorted([
    "list_workspaces", "get_workspace", "workspace_bash", "workspace_process_list",
    "workspace_process_output", "workspace_process_signal", "workspace_ls",
    "workspace_read_file", "workspace_read_file_lines", "workspace_write_file",
    "workspace_edit_files", "workspace_listening_ports",
])

passed = 0
failed = 0


def check(name, cond, detail=""):
    global passed, failed
    if cond:
        passed += 1
        print(f"ok   {name}", flush=True)
    else:
        failed += 1
        print(f"FAIL {name} {detail}", flush=True)


def figure(name, value):
    print(f"figure {name} {value}", flush=True)


def text_of(r):
    return "".join(getattr(c, "text", "") for c in r.content)


def params(*extra, env=None):
    env = {"AGENTWIRE_CONFIG_DIR": CFG, "RUST_LOG": os.environ.get("MCP_RUST_LOG", "warn"),
           **(env or {})}
    return StdioServerParameters(command=BIN, args=["mcp", *extra], env=env)


def mcp_pid():
    """The running `agentwire mcp`'s pid, from its status socket's name."""
    run = os.path.join(CFG, "run")
    for name in os.listdir(run):
        if name.startswith("mcp-") and name.endswith(".sock"):
            return int(name[4:-5])
    return None


async def until_ok(c, name, args, within):
    """Calls until one succeeds; returns seconds taken, or None."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        try:
            r = await c.call_tool(name, args)
            if not r.is_error:
                return time.monotonic() - start
        except Exception:
            pass
        await anyio.sleep(0.05)
    return None


async def tools():
    async with Client(params()) as c:
        names = sorted(t.name for t in (await c.list_tools()).tools)
        check("standard toolset listed", names == STANDARD, names)
        r = await c.call_tool("list_workspaces", {})
        ws = sorted(w["full_name"] for w in r.structured_content["workspaces"])
        check("list_workspaces", ws == ["alice/dev", "alice/other"], ws)
        st = {w["full_name"]: w["agents"][0].get("status", {}).get("state")
              for w in r.structured_content["workspaces"]}
        check("agent status from the server", st.get("alice/dev") == "online", st)
        r = await c.call_tool("get_workspace", {"workspace": "dev"})
        check("get_workspace", r.structured_content["agent"]["name"] == "main", r.structured_content)
        f = f"{DEV_DIR}/notes.txt"
        r = await c.call_tool("workspace_write_file", {"workspace": "dev", "path": f, "content": "hello\nworld\n"})
        check("write_file", not r.is_error, text_of(r))
        r = await c.call_tool("workspace_read_file", {"workspace": "dev", "path": f})
        check("read_file", r.structured_content["content"] == "hello\nworld\n", r.structured_content)
        r = await c.call_tool("workspace_read_file_lines", {"workspace": "dev", "path": f, "line_offset": 1})
        check("read_file_lines", r.structured_content["lines"] == ["world"], r.structured_content)
        r = await c.call_tool("workspace_edit_files", {"workspace": "dev", "files": [
            {"path": f, "edits": [{"search": "world", "replace": "there"}]}]})
        check("edit_files", not r.is_error and "+there" in r.structured_content["files"][0]["diff"], text_of(r))
        r = await c.call_tool("workspace_ls", {"workspace": "dev", "path": DEV_DIR})
        check("ls", "notes.txt" in [e["name"] for e in r.structured_content["entries"]], r.structured_content)
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo hi; exit 2"})
        check("bash", r.structured_content["output"] == "hi\n" and r.structured_content["exit_code"] == 2,
              r.structured_content)
        seen = []

        async def on_progress(p, total, msg):
            seen.append(msg)

        r = await c.call_tool("workspace_bash", {"workspace": "dev",
                                                 "command": "for i in 1 2 3; do echo l$i; sleep 0.3; done"},
                              progress_callback=on_progress)
        check("bash progress over stdio", len(seen) >= 2, seen)
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "sleep 30", "background": True})
        pid = r.structured_content.get("process_id")
        check("bash background", bool(pid), r.structured_content)
        r = await c.call_tool("workspace_process_list", {"workspace": "dev"})
        check("process_list", any(p["process_id"] == pid for p in r.structured_content["processes"]))
        r = await c.call_tool("workspace_process_output", {"workspace": "dev", "process_id": pid})
        check("process_output", r.structured_content["running"], r.structured_content)
        r = await c.call_tool("workspace_process_signal", {"workspace": "dev", "process_id": pid, "signal": "kill"})
        check("process_signal", r.structured_content["delivered"], r.structured_content)
        r = await c.call_tool("workspace_listening_ports", {"workspace": "dev"})
        check("listening_ports", not r.is_error, text_of(r))
        r = await c.call_tool("workspace_bash", {"workspace": "nope", "command": "true"})
        check("unknown workspace is a tool error", r.is_error and "not found" in text_of(r), text_of(r))
        # Warm calls: no request to the server (resolution cached), one tunnel.
        t0 = time.monotonic()
        for _ in range(20):
            await c.call_tool("workspace_read_file", {"workspace": "dev", "path": f})
        figure("stdio_warm_read_ms", round((time.monotonic() - t0) / 20 * 1000, 2))
    async with Client(params("--toolset", "chatgpt")) as c:
        names = sorted(t.name for t in (await c.list_tools()).tools)
        check("chatgpt toolset listed", names == ["fetch", "search"], names)
        r = await c.call_tool("search", {"query": "notes"})
        hits = json.loads(text_of(r))["results"]
        check("search finds the file", any(h["id"].endswith("/notes.txt") for h in hits), hits)
        file_hit = next((h for h in hits if h["id"].startswith("file:")), None)
        if file_hit:
            r = await c.call_tool("fetch", {"id": file_hit["id"]})
            check("fetch the file", "hello" in json.loads(text_of(r))["text"], text_of(r))


def serve_alive():
    try:
        with urllib.request.urlopen(SERVE_URL + "/healthz", timeout=1) as r:
            return r.status == 200
    except Exception:
        return False


async def kill_serve():
    with open(SERVE_PIDFILE) as fh:
        os.kill(int(fh.read().strip()), signal.SIGKILL)
    while serve_alive():
        await anyio.sleep(0.05)


async def start_serve():
    proc = subprocess.Popen(SERVE_ARGV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    with open(SERVE_PIDFILE, "w") as fh:
        fh.write(str(proc.pid))
    while not serve_alive():
        await anyio.sleep(0.02)


def faked_clock():
    """A file holding the wall clock's offset, and the environment that makes a process
    read it (libfaketime)."""
    clock = os.path.join(CFG, "faketime-offset")
    with open(clock, "w") as fh:
        fh.write("+0\n")
    return clock, {
        "LD_PRELOAD": os.environ["FAKETIME_LIB"],
        "FAKETIME_TIMESTAMP_FILE": clock,
        # Re-read the offset every second; only the wall clock moves.
        "FAKETIME_CACHE_DURATION": "1",
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",
    }


async def outage():
    async with Client(params()) as c:
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo up"})
        check("dev reachable before the outage", not r.is_error, text_of(r))
        await kill_serve()
        ok = 0
        for _ in range(10):
            r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo still"})
            ok += (not r.is_error and r.structured_content["output"] == "still\n")
        check("live tunnel keeps working without the server", ok == 10, f"{ok}/10")
        t0 = time.monotonic()
        r = await c.call_tool("workspace_bash", {"workspace": "other", "command": "echo new"})
        took = time.monotonic() - t0
        figure("outage_new_workspace_fail_s", round(took, 2))
        check("a new workspace fails while the server is away", r.is_error, text_of(r))
        msg = text_of(r)
        check("the failure says the server cannot be reached",
              "cannot be reached" in msg or "unavailable" in msg, msg)
        check("it fails within the deadline", took < 35, took)
        await start_serve()
        took = await until_ok(c, "workspace_bash", {"workspace": "other", "command": "echo back"}, 20)
        figure("outage_recovery_s", None if took is None else round(took, 2))
        check("the new workspace works within 2 s of the server's return", took is not None and took <= 2, took)


async def freeze():
    async with Client(params()) as c:
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo up"})
        check("reachable before the freeze", not r.is_error, text_of(r))
        pid = mcp_pid()
        check("found agentwire mcp's pid", pid is not None)
        os.kill(pid, signal.SIGSTOP)
        await anyio.sleep(10)
        os.kill(pid, signal.SIGCONT)
        took = await until_ok(c, "workspace_bash", {"workspace": "dev", "command": "echo thawed"}, 20)
        figure("freeze_recovery_s", None if took is None else round(took, 2))
        check("calls work within 2 s after 10 s stopped", took is not None and took <= 2, took)


def destinations():
    """The running `agentwire mcp`'s destinations (its status socket), or None, and the
    raw output."""
    out = subprocess.run([BIN, "status", "--json"], env={**os.environ}, capture_output=True, text=True)
    try:
        st = json.loads(out.stdout)
        return (st[0]["destinations"] if len(st) == 1 else None), out.stdout + out.stderr
    except (ValueError, LookupError, TypeError):
        return None, out.stdout + out.stderr


async def idle_then_again(c, closed):
    """Waits for the idle destination to close, then calls again."""
    await anyio.sleep(4.5)
    dests, raw = destinations()
    check(closed, dests == [], raw)
    t0 = time.monotonic()
    r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo again"})
    return round((time.monotonic() - t0) * 1000, 1), r


def handshake_age_s():
    """Seconds between now and the last handshake `agentwire mcp` reports, by its wall
    clock, for the one destination."""
    dests, _ = destinations()
    try:
        return time.time() - dests[0]["last_handshake_unix_ms"] / 1000
    except (LookupError, TypeError):
        return None


async def skew():
    clock, fake = faked_clock()
    # Destinations idle out after 3 s, so the ones used after the freeze are set up anew
    # (fresh WireGuard handshake state) on the turned-back clock.
    async with Client(params("--idle-timeout", "3", env=fake)) as c:
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo up"})
        check("reachable before the freeze", not r.is_error, text_of(r))
        age = handshake_age_s()
        check("its wall clock is right before", age is not None and -60 < age < 600, age)
        pid = mcp_pid()
        check("found agentwire mcp's pid", pid is not None)
        os.kill(pid, signal.SIGSTOP)
        with open(clock, "w") as fh:
            fh.write("-1h\n")
        await anyio.sleep(10)
        os.kill(pid, signal.SIGCONT)
        took = await until_ok(c, "workspace_bash", {"workspace": "dev", "command": "echo thawed"}, 20)
        figure("skew_recovery_s", None if took is None else round(took, 2))
        check("calls work within 2 s after 10 s stopped and the clock turned back an hour",
              took is not None and took <= 2, took)
        # The process's own clock says its handshake is an hour older than it is.
        await anyio.sleep(1.5)
        age = handshake_age_s()
        check("its wall clock was turned back", age is not None and age > 3000, age)
        ok = 0
        for _ in range(10):
            r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo still"})
            ok += (not r.is_error and r.structured_content["output"] == "still\n")
        check("calls keep working on the skewed clock", ok == 10, f"{ok}/10")
        ms, r = await idle_then_again(c, "the idle destination closed")
        figure("skew_reestablish_ms", ms)
        check("set up again on the skewed clock", not r.is_error, text_of(r))


async def skew_stale():
    """The agent keeps our old WireGuard state while we set the destination up anew on a
    clock turned back: the server is away when the destination idles out, so the agent never
    hears of the removal. Our new handshake must still be newer than the last one it saw."""
    clock, fake = faked_clock()
    async with Client(params("--idle-timeout", "3", env=fake)) as c:
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo up"})
        check("reachable before", not r.is_error, text_of(r))
        await kill_serve()
        with open(clock, "w") as fh:
            fh.write("-1h\n")
        # Idle expiry removes the destination here; the removal cannot reach the agent.
        await anyio.sleep(4.5)
        dests, raw = destinations()
        check("the idle destination closed while the server was away", dests == [], raw)
        await start_serve()
        took = await until_ok(c, "workspace_bash", {"workspace": "dev", "command": "echo back"}, 20)
        figure("skew_stale_recovery_s", None if took is None else round(took, 2))
        # The agent's own coordinator backoff (at most 5 s) sets how soon it is back; what
        # is refused as a replay stays refused until the agent initiates itself (~12 s).
        check("set up again with the agent's old state and the clock turned back",
              took is not None and took <= 6, took)
        age = handshake_age_s()
        check("its wall clock was turned back", age is not None and age > 3000, age)


async def idle():
    async with Client(params("--idle-timeout", "2")) as c:
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo one"})
        check("first call", not r.is_error, text_of(r))
        dests, raw = destinations()
        check("status shows the destination", dests is not None and len(dests) == 1, raw)
        ms, r = await idle_then_again(c, "idle destination closed")
        figure("idle_reestablish_ms", ms)
        check("re-established after idle expiry", not r.is_error, text_of(r))


async def netchange():
    marker = os.environ["CHANGE_MARKER"]
    async with Client(params()) as c:
        r = await c.call_tool("workspace_bash", {"workspace": "dev", "command": "echo before"})
        check("reachable before the change", not r.is_error, text_of(r))
        print("ready-for-change", flush=True)
        while not os.path.exists(marker):
            await anyio.sleep(0.02)
        took = await until_ok(c, "workspace_bash", {"workspace": "dev", "command": "echo after"}, 30)
        figure("netchange_recovery_s", None if took is None else round(took, 2))
        check("calls work within 3 s of the address change", took is not None and took <= 3, took)


async def main():
    phase = sys.argv[1]
    await {"tools": tools, "outage": outage, "freeze": freeze, "skew": skew, "skew_stale": skew_stale, "idle": idle, "netchange": netchange}[phase]()
    print(f"{passed} passed, {failed} failed", flush=True)
    sys.exit(1 if failed else 0)


anyio.run(main)
