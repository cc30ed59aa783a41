"""End-to-end checks of the MCP front end with the official Python SDK (mcp==2.3.0).

Run by tests/mcp_python.rs, which starts the server, two workspace agents and the control
plane, and passes their coordinates in the environment. Prints one line per check and a
final "N passed, M failed"; exits non-zero if anything failed.
"""

import base64
import json
import os
import urllib.error
import urllib.request

import anyio
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from checks import check, finish

BASE = os.environ["MCP_BASE"]
ALICE = os.environ["ALICE_TOKEN"]
BOB = os.environ["BOB_TOKEN"]
ALICE_DIR = os.environ["ALICE_DIR"]
ALICE_WS_ID = os.environ["ALICE_WS_ID"]
BOB_WS_ID = os.environ["BOB_WS_ID"]
MCP_PORT = int(BASE.rsplit(":", 1)[1])

STANDARD = [
    "list_workspaces", "get_workspace", "workspace_bash", "workspace_process_list",
    "workspace_process_output", "workspace_process_signal", "workspace_ls",
    "workspace_read_file", "workspace_read_file_lines", "workspace_write_file",
    "workspace_edit_files", "workspace_listening_ports",
]

class Session:
    """`async with Session(token, mode, toolset) as c:` — a connected SDK client."""

    def __init__(self, token, mode, toolset=None, path="/mcp"):
        self.token, self.mode, self.toolset, self.path = token, mode, toolset, path

    async def __aenter__(self):
        url = BASE + self.path + (f"?toolset={self.toolset}" if self.toolset else "")
        self._http = create_mcp_http_client(headers={"Authorization": f"Bearer {self.token}"})
        await self._http.__aenter__()
        self._client = Client(streamable_http_client(url, http_client=self._http), mode=self.mode)
        return await self._client.__aenter__()

    async def __aexit__(self, *exc):
        await self._client.__aexit__(*exc)
        await self._http.__aexit__(*exc)


def text_of(r):
    return "".join(getattr(c, "text", "") for c in r.content)


def proc_dead(pid):
    """Gone, or a zombie nobody reaped yet."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


async def standard(mode, want_version):
    tag = f"[{mode}]"
    async with Session(ALICE, mode) as c:
        check(f"{tag} protocol version", c.protocol_version == want_version, c.protocol_version)
        tools = (await c.list_tools()).tools
        names = [t.name for t in tools]
        check(f"{tag} tools/list names", sorted(names) == sorted(STANDARD), names)
        for t in tools:
            a = t.annotations
            hints = a and None not in (a.read_only_hint, a.destructive_hint, a.idempotent_hint, a.open_world_hint)
            check(f"{tag} {t.name} annotated and has output schema", bool(hints) and t.output_schema is not None)

        async def call(name, args, **kw):
            return await c.call_tool(name, args, **kw)

        r = await call("list_workspaces", {})
        names = [w["full_name"] for w in r.structured_content["workspaces"]]
        check(f"{tag} list_workspaces", names == ["alice/dev"], names)
        check(f"{tag} result also as JSON text", json.loads(text_of(r)) == r.structured_content)

        r = await call("get_workspace", {"workspace": "dev"})
        check(f"{tag} get_workspace", r.structured_content["workspace"]["id"] == ALICE_WS_ID
              and r.structured_content["agent"]["name"] == "main", r.structured_content)

        f = f"{ALICE_DIR}/notes/hello.txt"
        r = await call("workspace_write_file", {"workspace": "dev", "path": f, "content": "hello\nworld\n"})
        check(f"{tag} write_file", not r.is_error and r.structured_content["bytes_written"] == 12, text_of(r))
        r = await call("workspace_read_file", {"workspace": "alice/dev", "path": f})
        s = r.structured_content
        check(f"{tag} read_file text", s["content"] == "hello\nworld\n" and s["size"] == 12
              and s["mime_type"] == "text/plain", s)
        r = await call("workspace_read_file", {"workspace": "dev", "path": f, "offset": 6, "limit": 3})
        check(f"{tag} read_file offset/limit", r.structured_content["content"] == "wor"
              and r.structured_content["next_offset"] == 9, r.structured_content)
        b = f"{ALICE_DIR}/blob.bin"
        raw = bytes([0, 255, 1, 128])
        r = await call("workspace_write_file", {"workspace": "dev.main", "path": b,
                                                "content_base64": base64.b64encode(raw).decode()})
        check(f"{tag} write_file base64", not r.is_error, text_of(r))
        r = await call("workspace_read_file", {"workspace": "dev", "path": b})
        check(f"{tag} read_file binary", base64.b64decode(r.structured_content.get("content_base64", "")) == raw
              and "content" not in r.structured_content, r.structured_content)
        r = await call("workspace_read_file_lines", {"workspace": "dev", "path": f, "line_offset": 1})
        check(f"{tag} read_file_lines", r.structured_content["lines"] == ["world"], r.structured_content)
        r = await call("workspace_ls", {"workspace": "dev", "path": f"{ALICE_DIR}/notes"})
        check(f"{tag} ls", [e["name"] for e in r.structured_content["entries"]] == ["hello.txt"], r.structured_content)
        r = await call("workspace_edit_files", {"workspace": "dev", "files": [
            {"path": f, "edits": [{"search": "world", "replace": "there"}]}]})
        diff = r.structured_content["files"][0]["diff"] if not r.is_error else text_of(r)
        check(f"{tag} edit_files diff", "-world" in diff and "+there" in diff, diff)
        r = await call("workspace_edit_files", {"workspace": "dev", "files": [
            {"path": f, "edits": [{"search": "absent", "replace": "x"}]}]})
        check(f"{tag} edit conflict is a tool error", r.is_error and "not found" in text_of(r), text_of(r))
        # Put it back for the other mode.
        await call("workspace_write_file", {"workspace": "dev", "path": f, "content": "hello\nworld\n"})

        r = await call("workspace_bash", {"workspace": "dev", "command": "echo hi; echo err >&2; exit 3"})
        s = r.structured_content
        check(f"{tag} bash output and exit code", s["output"] == "hi\nerr\n" and s["exit_code"] == 3
              and not s["timed_out"], s)
        r = await call("workspace_bash", {"workspace": "dev", "command": "pwd"})
        check(f"{tag} bash runs in the workspace directory", r.structured_content["output"].strip() == ALICE_DIR,
              r.structured_content)
        r = await call("workspace_bash", {"workspace": "dev", "command": "echo start; sleep 5", "timeout_ms": 700})
        s = r.structured_content
        check(f"{tag} bash timeout", s["timed_out"] and "start" in s["output"] and s["duration_ms"] < 4000, s)

        seen = []

        async def on_progress(p, total, msg):
            seen.append((p, total, msg))

        r = await call("workspace_bash", {"workspace": "dev",
                                          "command": "for i in 1 2 3; do echo line$i; sleep 0.4; done"},
                       progress_callback=on_progress)
        check(f"{tag} bash progress notifications", len(seen) >= 2 and any("line1" in (m or "") for _, _, m in seen)
              and all(a[0] < b[0] for a, b in zip(seen, seen[1:])), seen)
        check(f"{tag} bash result after progress", r.structured_content["output"] == "line1\nline2\nline3\n",
              r.structured_content)

        r = await call("workspace_bash", {"workspace": "dev", "command": "echo bg; sleep 30", "background": True})
        s = r.structured_content
        pid = s.get("process_id")
        check(f"{tag} bash background", s["running"] and pid, s)
        r = await call("workspace_process_list", {"workspace": "dev"})
        check(f"{tag} process_list", any(p["process_id"] == pid and p["running"]
                                         for p in r.structured_content["processes"]), r.structured_content)
        await anyio.sleep(0.3)
        r = await call("workspace_process_output", {"workspace": "dev", "process_id": pid})
        check(f"{tag} process_output", r.structured_content["running"] and "bg" in r.structured_content["output"],
              r.structured_content)
        r = await call("workspace_process_signal", {"workspace": "dev", "process_id": pid, "signal": "kill"})
        check(f"{tag} process_signal", r.structured_content["delivered"], r.structured_content)
        done = False
        for _ in range(50):
            r = await call("workspace_process_output", {"workspace": "dev", "process_id": pid})
            if not r.structured_content["running"]:
                done = r.structured_content["signal"] == 9
                break
            await anyio.sleep(0.1)
        check(f"{tag} signalled process ends", done, r.structured_content)

        r = await call("workspace_listening_ports", {"workspace": "dev"})
        ports = [p["port"] for p in r.structured_content["ports"]]
        check(f"{tag} listening_ports sees the MCP server", MCP_PORT in ports, ports)

        # Cancellation kills the command.
        pidfile = f"{ALICE_DIR}/cancel-{mode}.pid"
        started = anyio.Event()

        async def on_started(p, total, msg):
            if os.path.exists(pidfile) and os.path.getsize(pidfile) > 0:
                started.set()

        async with anyio.create_task_group() as tg:
            async def long_call():
                await call("workspace_bash", {"workspace": "dev",
                                              "command": f"sleep 60 & echo $$ $! > {pidfile}; wait"},
                           progress_callback=on_started)
            tg.start_soon(long_call)
            with anyio.fail_after(15):
                await started.wait()
            tg.cancel_scope.cancel()
        pids = open(pidfile).read().split()
        dead = False
        for _ in range(100):
            if all(proc_dead(int(p)) for p in pids):
                dead = True
                break
            await anyio.sleep(0.1)
        check(f"{tag} cancellation kills the command", dead and len(pids) == 2, pids)

        # Tool errors are results; protocol errors are errors.
        r = await call("workspace_read_file", {"workspace": "dev", "path": f"{ALICE_DIR}/missing"})
        check(f"{tag} missing file is a tool error", r.is_error and "missing" in text_of(r), text_of(r))
        r = await call("workspace_ls", {"workspace": "dev", "path": "relative/path"})
        check(f"{tag} relative path is a tool error", r.is_error and "absolute" in text_of(r), text_of(r))
        r = await call("workspace_bash", {"workspace": "dev", "command": 42})
        check(f"{tag} wrong argument type is a tool error", r.is_error and "invalid" in text_of(r), text_of(r))
        r = await call("workspace_write_file", {"workspace": "dev", "path": f})
        check(f"{tag} missing content is a tool error", r.is_error and "content" in text_of(r), text_of(r))
        try:
            await call("no_such_tool", {})
            check(f"{tag} unknown tool is a protocol error", False, "no error raised")
        except Exception as e:  # the SDK raises MCPError
            check(f"{tag} unknown tool is a protocol error", "unknown tool" in str(e), repr(e))

        # Cross-user: alice cannot see or touch bob's workspace, and cannot tell it exists.
        missing = await call("get_workspace", {"workspace": "bob/nosuch"})
        for name, args in [
            ("get_workspace", {}),
            ("workspace_bash", {"command": "true"}),
            ("workspace_process_list", {}),
            ("workspace_process_output", {"process_id": "p1"}),
            ("workspace_process_signal", {"process_id": "p1", "signal": "kill"}),
            ("workspace_ls", {"path": "/"}),
            ("workspace_read_file", {"path": "/etc/hostname"}),
            ("workspace_read_file_lines", {"path": "/etc/hostname"}),
            ("workspace_write_file", {"path": "/tmp/x", "content": "x"}),
            ("workspace_edit_files", {"files": [{"path": "/tmp/x", "edits": [{"search": "a", "replace": "b"}]}]}),
            ("workspace_listening_ports", {}),
        ]:
            r = await call(name, {"workspace": "bob/secret", **args})
            want = text_of(missing).replace("nosuch", "secret")
            check(f"{tag} {name} denies bob/secret like a missing workspace",
                  r.is_error and text_of(r) == want, text_of(r))
        r = await call("list_workspaces", {"owner": "bob"})
        check(f"{tag} list_workspaces hides bob's", r.structured_content["workspaces"] == [], r.structured_content)


async def chatgpt(mode):
    tag = f"[{mode} chatgpt]"
    with open(f"{ALICE_DIR}/notes/plan.md", "w") as fh:
        fh.write("the zebracorn launch plan\n")
    async with Session(ALICE, mode, toolset="chatgpt") as c:
        tools = (await c.list_tools()).tools
        check(f"{tag} exactly search and fetch", sorted(t.name for t in tools) == ["fetch", "search"])
        for t in tools:
            arg = "query" if t.name == "search" else "id"
            check(f"{tag} {t.name} schema", t.input_schema["required"] == [arg]
                  and list(t.input_schema["properties"]) == [arg]
                  and t.annotations.read_only_hint is True, t.input_schema)
        r = await c.call_tool("search", {"query": "dev"})
        check(f"{tag} search returns one text item", len(r.content) == 1 and r.content[0].type == "text")
        res = json.loads(text_of(r))["results"]
        check(f"{tag} search finds the workspace", {"id": f"workspace:{ALICE_WS_ID}"}.items()
              <= (res[0].items() if res else {}.items()) and all({"id", "title", "url"} <= set(x) for x in res), res)
        r = await c.call_tool("search", {"query": "zebracorn"})
        res = json.loads(text_of(r))["results"]
        ids = [x["id"] for x in res]
        want = f"file:{ALICE_WS_ID}:{ALICE_DIR}/notes/plan.md"
        check(f"{tag} search finds file content", want in ids, ids)
        r = await c.call_tool("fetch", {"id": want})
        doc = json.loads(text_of(r))
        check(f"{tag} fetch file", len(r.content) == 1 and "zebracorn" in doc["text"]
              and {"id", "title", "text", "url"} <= set(doc), doc)
        r = await c.call_tool("fetch", {"id": f"workspace:{ALICE_WS_ID}"})
        doc = json.loads(text_of(r))
        check(f"{tag} fetch workspace", doc["title"] == "Workspace alice/dev", doc)
        r = await c.call_tool("search", {"query": "secret"})
        check(f"{tag} search hides bob's workspace", json.loads(text_of(r))["results"] == [], text_of(r))
        r = await c.call_tool("fetch", {"id": f"workspace:{BOB_WS_ID}"})
        r2 = await c.call_tool("fetch", {"id": "workspace:00000000-0000-4000-8000-000000000000"})
        check(f"{tag} fetch denies bob's workspace like a missing one",
              r.is_error and text_of(r).replace(BOB_WS_ID, "X") == text_of(r2).replace(
                  "00000000-0000-4000-8000-000000000000", "X"), (text_of(r), text_of(r2)))
        r = await c.call_tool("fetch", {"id": f"file:{BOB_WS_ID}:/etc/hostname"})
        check(f"{tag} fetch denies bob's files", r.is_error and "not found" in text_of(r), text_of(r))


def http(method, path, token=None, body=None, headers=None):
    req = urllib.request.Request(BASE + path, method=method, data=body)
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json, text/event-stream")
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def http_checks():
    init = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "t", "version": "1"}}}).encode()
    st, h, b = http("POST", "/mcp", body=init)
    wa = h.get("www-authenticate") or h.get("WWW-Authenticate") or ""
    check("401 without a token", st == 401 and 'realm="agentwire"' in wa
          and f'resource_metadata="{BASE}/.well-known/oauth-protected-resource/mcp"' in wa, (st, wa))
    st, h, b = http("POST", "/mcp", token="wrong", body=init)
    check("401 with a bad token", st == 401 and "invalid_token" in (h.get("www-authenticate") or ""), st)
    st, h, b = http("POST", "/mcp?access_token=" + ALICE, body=init)
    check("token in the query string is ignored", st == 401, st)
    st, h, b = http("POST", "/mcp?toolset=bogus", token=ALICE, body=init)
    check("400 for an unknown toolset", st == 400 and json.loads(b) == {"message": "Invalid toolset: bogus"}, (st, b))
    st, h, b = http("GET", "/mcp", token=ALICE)
    check("GET is 405", st == 405, st)
    st, h, b = http("DELETE", "/mcp", token=ALICE)
    check("DELETE is 405", st == 405, st)
    st, h, b = http("GET", "/.well-known/oauth-protected-resource")
    doc = json.loads(b) if st == 200 else {}
    check("protected-resource metadata", st == 200 and doc.get("resource") == BASE
          and doc.get("authorization_servers") == [BASE] and doc.get("bearer_methods_supported") == ["header"], doc)
    st, h, b = http("GET", "/.well-known/oauth-protected-resource/mcp")
    doc = json.loads(b) if st == 200 else {}
    check("protected-resource metadata for /mcp", st == 200 and doc.get("resource") == BASE + "/mcp"
          and doc.get("scopes_supported") == ["mcp"], doc)
    st, h, b = http("POST", "/mcp", token=ALICE, body=init)
    check("initialize with a token", st == 200 and b"2025-11-25" in b, (st, b[:200]))
    st, h, b = http("POST", "/api/experimental/mcp/http", token=ALICE, body=init)
    check("the experimental path serves too", st == 200, st)
    st, h, b = http("POST", "/mcp", token=ALICE, body=b"{not json")
    check("malformed JSON is a 4xx", 400 <= st < 500, st)
    st, h, b = http("POST", "/mcp", token=ALICE, body=init, headers={"Origin": "http://evil.example"})
    check("foreign Origin is 403", st == 403, st)
    st, h, b = http("POST", "/mcp", token=ALICE, body=init, headers={"Host": "evil.example"})
    check("foreign Host is 403", st == 403, st)
    big = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {
        "name": "workspace_write_file", "arguments": {"workspace": "dev", "path": "/tmp/x",
                                                      "content": "x" * (9 << 20)}}}).encode()
    st, h, b = http("POST", "/mcp", token=ALICE, body=big,
                    headers={"MCP-Protocol-Version": "2025-11-25"})
    check("oversized body is 413", st == 413, st)
    st, h, b = http("POST", "/mcp", token=ALICE, body=init)
    check("still serving after bad requests", st == 200, st)


async def main():
    http_checks()
    await standard("legacy", "2025-11-25")
    await standard("2026-07-28", "2026-07-28")
    await chatgpt("legacy")
    await chatgpt("2026-07-28")
    finish()


anyio.run(main)
