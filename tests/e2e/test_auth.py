"""Authentication and authorization at the proxy endpoint (SPEC §4), config mode:

- 401 with `WWW-Authenticate: Bearer` for a missing or wrong token, nothing forwarded;
- 403 for a server that is not among the grant's servers, nothing forwarded;
- the `(no policy)` denial for a server among the grant's `servers` without a policy;
- 404 for an unknown server name.

Upstreams are header_recorder.py instances, whose logs prove what was (not) forwarded.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from e2e_helpers import (
    Gateway,
    Procs,
    RawSession,
    assert_allowed,
    assert_denied,
    http_client,
    run,
    start_gateway_config,
    start_header_recorder,
    started_lazily,
)

ALICE = "tg-e2e-alice-0123456789abcdef"
BOB = "tg-e2e-bob-fedcba9876543210"
ALLOW_ALL = {"version": "1", "default": "allow"}

INIT = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                   "clientInfo": {"name": "e2e-auth", "version": "0"}}}


class Setup:
    def __init__(self, procs: Procs, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.records = {name: workdir / f"{name}.jsonl" for name in ("a", "x", "b")}
        urls = {name: start_header_recorder(procs, path, name=f"recorder-{name}") for name, path in self.records.items()}
        config = f"""
[gateway]
data_dir = "data"

[servers.a]
url = "{urls['a']}"

[servers.x]
url = "{urls['x']}"

[servers.b]
url = "{urls['b']}"

[[grants]]
name = "alice"
token = "{ALICE}"
policies = {{ a = "allow.json" }}
servers = ["x"]

[[grants]]
name = "bob"
token_sha256 = "{hashlib.sha256(BOB.encode()).hexdigest()}"
policies = {{ b = "allow.json" }}
"""
        self.gateway: Gateway = start_gateway_config(procs, workdir, config, policies={"allow.json": ALLOW_ALL},
                                                     name="toolgate-auth")

    def url(self, server: str) -> str:
        return self.gateway.server_url(server)

    def recorded(self, server: str) -> list[dict[str, Any]]:
        text = self.records[server].read_text()
        return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def setup(module_procs: Procs, module_tmp: Path) -> Callable[[], Setup]:
    return started_lazily(lambda: Setup(module_procs, module_tmp / "auth"))


def post_init(url: str, token: str | None, scheme: str = "Bearer") -> httpx.Response:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    if token is not None:
        headers["Authorization"] = f"{scheme} {token}"
    return httpx.post(url, headers=headers, content=json.dumps(INIT), timeout=15)


def assert_401(r: httpx.Response) -> None:
    assert r.status_code == 401, f"expected 401, got {r.status_code}: {r.text}"
    challenge = r.headers.get("www-authenticate", "")
    assert challenge.split(" ", 1)[0].lower() == "bearer", f"WWW-Authenticate: {challenge!r}"


def test_missing_or_wrong_token_is_401(setup: Callable[[], Setup]) -> None:
    s = setup()
    before = len(s.recorded("a"))
    assert_401(post_init(s.url("a"), None))
    assert_401(post_init(s.url("a"), "tg-e2e-not-a-real-token"))
    assert_401(post_init(s.url("a"), ALICE + "x"))
    assert_401(post_init(s.url("a"), ALICE, scheme="Basic"))
    # GET and DELETE are guarded too
    for method in ("GET", "DELETE"):
        r = httpx.request(method, s.url("a"), headers={"Accept": "text/event-stream"}, timeout=15)
        assert_401(r)
    assert len(s.recorded("a")) == before, "a request without a valid token must not reach the upstream"
    # the right token works (with and without a trailing slash)
    for url in (s.url("a"), s.url("a") + "/"):
        r = post_init(url, ALICE)
        assert r.status_code == 200, r.text


def test_server_outside_the_grant_is_403(setup: Callable[[], Setup]) -> None:
    s = setup()
    before = len(s.recorded("b"))
    r = post_init(s.url("b"), ALICE)
    assert r.status_code == 403, f"alice may not use b: HTTP {r.status_code} {r.text}"
    assert len(s.recorded("b")) == before, "a refused request must not reach the upstream"
    # bob (token_sha256 grant) may use b, not a
    assert post_init(s.url("b"), BOB).status_code == 200
    assert post_init(s.url("a"), BOB).status_code == 403
    assert post_init(s.url("x"), BOB).status_code == 403


def test_unknown_server_is_404(setup: Callable[[], Setup]) -> None:
    s = setup()
    for token in (ALICE, BOB):
        r = post_init(s.url("no-such-server"), token)
        assert r.status_code == 404, f"HTTP {r.status_code} {r.text}"


def test_server_without_policy_denies_calls(setup: Callable[[], Setup]) -> None:
    s = setup()

    async def body() -> None:
        async with http_client(s.url("x"), ALICE) as client:
            result = await client.call_tool("whoami", {})
            assert_denied(result, "(no policy)", 'Tool "whoami" is not permitted by policy')
        async with http_client(s.url("a"), ALICE) as client:
            result = await client.call_tool("whoami", {})
            assert_allowed(result)

    run(body)
    assert not [e for e in s.recorded("x") if e.get(":rpc") == "tools/call"], \
        "a (no policy) denial must not reach the upstream"
    assert [e for e in s.recorded("a") if e.get(":rpc") == "tools/call"]


def test_raw_no_policy_denial_shape(setup: Callable[[], Setup]) -> None:
    """The same denial seen on the wire: HTTP 200, a result (not an error) with isError."""
    s = setup()
    raw = RawSession(s.url("x"), ALICE)
    try:
        raw.initialize()
        resp, msg = raw.request("tools/call", {"name": "whoami", "arguments": {}})
        assert resp.status_code == 200
        assert "error" not in msg, msg
        result = msg["result"]
        assert result["isError"] is True
        assert result["content"] == [{"type": "text", "text": '[POLICY DENIED] Tool "whoami" is not permitted by policy'}]
        assert result["_meta"]["toolgate/decision"] == {
            "decision": "deny", "rule": "(no policy)", "message": 'Tool "whoami" is not permitted by policy'}
        assert "structuredContent" not in result
    finally:
        raw.close()
