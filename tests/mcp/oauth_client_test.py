"""End to end with the official Python MCP SDK's OAuth client (OAuthClientProvider).

Run by tests/oauth_clients.rs against `agentwire serve` (embedded default: user `demo`,
a demo workspace with an in-process agent). The SDK does discovery (401 -> protected
resource metadata -> authorization server metadata), dynamic registration, PKCE, the
token exchange, tool calls, a refresh; this script plays the browser, posting the sign-in
and consent forms as a browser would, and finally revokes the token (RFC 7009) and sees
the next call refused with 401.

Prints one line per check and "N passed, M failed"; exits non-zero if anything failed.
"""

import os
import re
import time
from urllib.parse import parse_qs, urlparse

import anyio
import httpx2
from mcp import Client
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)

from checks import check, finish

BASE = os.environ["MCP_BASE"]
USER_TOKEN = os.environ["USER_TOKEN"]
REDIRECT = "http://127.0.0.1:53682/callback"


class Memory(TokenStorage):
    def __init__(self):
        self.tokens = None
        self.client = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens: OAuthToken):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client

    async def set_client_info(self, info: OAuthClientInformationFull):
        self.client = info


def hidden(page):
    return dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)">', page))


class Browser:
    """The user's browser: opens the authorization URL, signs in with a user token,
    allows access, and hands the redirect's parameters to the SDK."""

    def __init__(self):
        self.calls = 0
        self.result = None
        self.refuse = False
        self.seen = []

    async def redirect_handler(self, url):
        self.calls += 1
        self.seen.append(url)
        if self.refuse:
            raise RuntimeError("re-authorization requested after revocation")
        form_headers = {"Origin": BASE, "Sec-Fetch-Site": "same-origin"}
        async with httpx2.AsyncClient(follow_redirects=False) as b:
            r = await b.get(url)
            check("authorization page opens", r.status_code == 200, r.status_code)
            page = r.text
            if 'value="token"' in page:
                f = hidden(page)
                r = await b.post(BASE + "/oauth/login", headers=form_headers, data={
                    "request": f["request"], "csrf": f["csrf"], "method": "token", "token": USER_TOKEN})
                page = r.text
                check("sign-in with a user token leads to consent", r.status_code == 200 and "Allow" in page,
                      (r.status_code, page[:300]))
            f = hidden(page)
            r = await b.post(BASE + "/oauth/consent", headers=form_headers, data={
                "request": f["request"], "csrf": f["csrf"], "decision": "approve"})
            check("consent redirects to the client", r.status_code == 303
                  and r.headers["location"].startswith(REDIRECT), (r.status_code, r.text[:300]))
            q = parse_qs(urlparse(r.headers["location"]).query)
            self.result = AuthorizationCodeResult(
                code=q["code"][0], state=q.get("state", [None])[0], iss=q.get("iss", [None])[0])

    async def callback_handler(self):
        return self.result


async def main():
    storage = Memory()
    browser = Browser()
    provider = OAuthClientProvider(
        server_url=BASE + "/mcp",
        client_metadata=OAuthClientMetadata(
            client_name="Python SDK OAuth test",
            redirect_uris=[REDIRECT],
            grant_types=["authorization_code", "refresh_token"],
            response_types=["code"],
        ),
        storage=storage,
        redirect_handler=browser.redirect_handler,
        callback_handler=browser.callback_handler,
    )
    async with create_mcp_http_client(auth=provider) as http:
        async with Client(streamable_http_client(BASE + "/mcp", http_client=http), mode="legacy") as c:
            names = [t.name for t in (await c.list_tools()).tools]
            check("tools listed with an OAuth token", "workspace_bash" in names, names)
            ws = (await c.call_tool("list_workspaces", {})).structured_content
            check("list_workspaces as the signed-in user",
                  [w["name"] for w in ws["workspaces"]] == ["demo"], ws)
            r = await c.call_tool("workspace_bash", {"workspace": "demo", "command": "echo oauth-ok"})
            check("a command runs in the workspace", not r.is_error
                  and r.structured_content["output"].strip() == "oauth-ok", r)

        auth_url = urlparse(browser.seen[0])
        q = parse_qs(auth_url.query)
        check("one browser authorization", browser.calls == 1, browser.calls)
        check("the SDK found the authorization endpoint by discovery",
              f"{auth_url.scheme}://{auth_url.netloc}{auth_url.path}" == BASE + "/oauth/authorize", browser.seen[0])
        check("PKCE S256 and the resource indicator were sent",
              q.get("code_challenge_method") == ["S256"] and q.get("resource") == [BASE + "/mcp"], q)
        info = storage.client
        check("the client registered dynamically", info is not None and info.client_id.startswith("aw-"), info)
        first = storage.tokens
        check("tokens are agentwire's", first.access_token.startswith("awat_")
              and first.refresh_token.startswith("awrt_") and first.scope == "mcp", first)

        # Refresh: make the SDK consider its access token expired.
        provider.context.token_expiry_time = time.time() - 1
        async with Client(streamable_http_client(BASE + "/mcp", http_client=http), mode="2026-07-28") as c:
            r = await c.call_tool("list_workspaces", {})
            check("a call after expiry works (2026-07-28 mode)", not r.is_error, r)
        second = storage.tokens
        check("the SDK refreshed", second.access_token != first.access_token, second)
        check("the refresh token rotated", second.refresh_token != first.refresh_token, second)
        check("no new browser authorization for the refresh", browser.calls == 1, browser.calls)

        # The retired refresh token is reuse: refused.
        r = await http.post(BASE + "/oauth/token", data={
            "grant_type": "refresh_token", "refresh_token": first.refresh_token},
            auth=httpx2.BasicAuth(info.client_id, info.client_secret))
        body = r.json()
        check("a reused refresh token is refused", r.status_code == 400 and body.get("error") == "invalid_grant", body)

    # That reuse revoked the family: the current tokens are dead too. A fresh flow, then
    # explicit revocation.
    storage2 = Memory()
    browser2 = Browser()
    provider2 = OAuthClientProvider(
        server_url=BASE + "/mcp",
        client_metadata=OAuthClientMetadata(client_name="Python SDK OAuth test 2", redirect_uris=[REDIRECT]),
        storage=storage2,
        redirect_handler=browser2.redirect_handler,
        callback_handler=browser2.callback_handler,
    )
    async with httpx2.AsyncClient() as raw:
        r = await raw.post(BASE + "/mcp", headers={"Authorization": f"Bearer {second.access_token}",
                                                  "Accept": "application/json, text/event-stream"}, json={})
        check("reuse revoked the whole family (401)", r.status_code == 401, r.status_code)

    async with create_mcp_http_client(auth=provider2) as http:
        async with Client(streamable_http_client(BASE + "/mcp", http_client=http), mode="legacy") as c:
            r = await c.call_tool("list_workspaces", {})
            check("a second client authorizes and calls", not r.is_error, r)
        tokens = storage2.tokens
        info = storage2.client
        r = await http.post(BASE + "/oauth/revoke", data={"token": tokens.refresh_token,
                                                          "token_type_hint": "refresh_token"},
                            auth=httpx2.BasicAuth(info.client_id, info.client_secret))
        check("revocation answers 200", r.status_code == 200, (r.status_code, r.text))
        r = await http.post(BASE + "/mcp", headers={"Authorization": f"Bearer {tokens.access_token}",
                                                   "Accept": "application/json, text/event-stream"}, json={},
                            auth=None)
        check("the next call with the revoked token is 401", r.status_code == 401
              and "invalid_token" in r.headers.get("www-authenticate", ""), (r.status_code, r.headers))
        browser2.refuse = True
        try:
            async with Client(streamable_http_client(BASE + "/mcp", http_client=http), mode="legacy") as c:
                await c.call_tool("list_workspaces", {})
            check("the SDK cannot call after revocation", False, "call succeeded")
        except Exception as e:  # noqa: BLE001 - any failure is the expected outcome
            check("the SDK cannot call after revocation (it asks for a new authorization)",
                  browser2.calls == 2, (browser2.calls, repr(e)[:200]))

    finish()


anyio.run(main)
