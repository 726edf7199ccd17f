"""The admin API (SPEC §7; issue 5): JSON under /admin/api with admin tokens and roles.

- every endpoint checks the role it needs: each one is called with every role, and those
  below its role get 403 naming the role needed (the list comes from `GET /admin/api`, so
  an endpoint added later is covered too); no token or a wrong one gets 401;
- viewers read grants, policies, servers (never credentials) and audit records;
- policy managers attach policies to minted grants; admins mint, rotate and revoke grants,
  and the minted token works through the proxy with the official Python SDK client;
- every change lands in the admin audit stream with who made it;
- grant tokens cannot use the admin API, and admin tokens cannot call tools.
"""

from __future__ import annotations

import hashlib
import json
import time
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
    start_py_upstream_http,
    started_lazily,
)

ADMIN = "tg-e2e-admin-token-0123456789abcdef"
POLICY_MANAGER = "tg-e2e-policy-manager-token-0123456789"
VIEWER = "tg-e2e-viewer-token-0123456789abcdef"
GRANT = "tg-e2e-admin-api-grant-token-0123456789"
UPSTREAM_SECRET = "upstream-api-key-never-shown"
ROLES = {"viewer": VIEWER, "policy_manager": POLICY_MANAGER, "admin": ADMIN}
RANK = {"viewer": 0, "policy_manager": 1, "admin": 2}
ALLOW_ECHO = {"version": "1", "default": "deny", "tools": {"echo": {}}}


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Setup:
    def __init__(self, procs: Procs, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        upstream, _ = start_py_upstream_http(procs, name="py_upstream-admin")
        config = f"""
[gateway]

[servers.py]
url = "{upstream}"
headers = {{ "X-Api-Key" = "{UPSTREAM_SECRET}" }}

[[grants]]
name = "ops"
token_sha256 = "{sha(GRANT)}"
policies = {{ py = "policy.json" }}

[admin]
token_sha256 = "{sha(ADMIN)}"

[[admin.members]]
name = "pat"
role = "policy_manager"
token_sha256 = "{sha(POLICY_MANAGER)}"

[[admin.members]]
name = "vera"
role = "viewer"
token_sha256 = "{sha(VIEWER)}"
"""
        self.gateway: Gateway = start_gateway_config(procs, workdir, config, policies={"policy.json": ALLOW_ECHO},
                                                     name="toolgate-admin")
        self.http = httpx.Client(base_url=self.gateway.base, timeout=30)

    def api(self, method: str, path: str, token: str | None, body: Any = None,
            content: bytes | None = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        return self.http.request(method, path, headers=headers, content=content)

    def ok(self, method: str, path: str, token: str, body: Any = None, status: int = 200) -> Any:
        r = self.api(method, path, token, body)
        assert r.status_code == status, f"{method} {path}: {r.status_code} {r.text}"
        return r.json()


@pytest.fixture(scope="module")
def setup(module_procs: Procs, module_tmp: Path) -> Callable[[], Setup]:
    return started_lazily(lambda: Setup(module_procs, module_tmp / "admin"))


def test_every_endpoint_refuses_a_token_of_too_low_a_role(setup: Callable[[], Setup]) -> None:
    s = setup()
    listing = s.ok("GET", "/admin/api", VIEWER)
    assert listing["you"] == {"name": "vera", "role": "viewer"}
    endpoints = listing["endpoints"]
    assert {(e["method"], e["path"]) for e in endpoints} >= {
        ("GET", "/admin/api/grants"), ("POST", "/admin/api/grants"), ("GET", "/admin/api/policies"),
        ("GET", "/admin/api/servers"), ("GET", "/admin/api/audit")}
    checked = 0
    for endpoint in endpoints:
        path = endpoint["path"].replace("{name}", "nobody").replace("{server}", "py")
        for role, token in ROLES.items():
            if RANK[role] >= RANK[endpoint["role"]]:
                continue
            r = s.api(endpoint["method"], path, token, body={} if endpoint["method"] != "GET" else None)
            assert r.status_code == 403, f"{role} on {endpoint['method']} {path}: {r.status_code} {r.text}"
            assert f"needs the {endpoint['role']} role" in r.json()["error"], r.text
            checked += 1
    assert checked >= 6, f"only {checked} role refusals were checked"
    for token in (None, "tg-not-an-admin-token", GRANT):
        r = s.api("GET", "/admin/api/grants", token)
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer"), r.text
    assert s.api("DELETE", "/admin/api/grants", ADMIN).status_code == 405
    assert s.api("GET", "/admin/api/nothing", ADMIN).status_code == 404


def test_viewers_read_grants_policies_servers_and_audit_but_never_secrets(setup: Callable[[], Setup]) -> None:
    s = setup()

    async def call() -> None:
        async with http_client(s.gateway.server_url("py"), GRANT) as client:
            assert_allowed(await client.call_tool("echo", {"text": "for the audit log"}))

    run(call)
    grants = s.ok("GET", "/admin/api/grants", VIEWER)["grants"]
    ops = next(g for g in grants if g["name"] == "ops")
    assert ops["origin"] == "config" and ops["status"] == "active" and "py" in ops["policies"], ops
    policies = s.ok("GET", "/admin/api/policies", VIEWER)["policies"]
    assert any(p["grant"] == "ops" and p["server"] == "py" and p["version"] for p in policies), policies
    servers = s.ok("GET", "/admin/api/servers", VIEWER)["servers"]
    assert servers[0]["name"] == "py" and servers[0]["upstream"]["headers"] == ["X-Api-Key"], servers
    deadline = time.monotonic() + 5
    while True:
        records = s.ok("GET", "/admin/api/audit?grant=ops&tool=echo", VIEWER)["records"]
        if records or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert records and records[-1]["decision"] == "allow" and records[-1]["server"] == "py", records
    everything = json.dumps([grants, policies, servers, records])
    for secret in (UPSTREAM_SECRET, GRANT, sha(GRANT), ADMIN, sha(ADMIN)):
        assert secret not in everything, "the admin API shows a secret"
    bad = s.api("GET", "/admin/api/audit?since=soonish", VIEWER)
    assert bad.status_code == 400 and "since" in bad.json()["error"], bad.text


def test_admins_mint_rotate_and_revoke_and_policy_managers_attach_policies(setup: Callable[[], Setup]) -> None:
    s = setup()
    minted = s.ok("POST", "/admin/api/grants", ADMIN, {
        "name": "api-bot", "policies": {"py": ALLOW_ECHO}, "note": "made over the API", "expires": "1d"}, status=201)
    token = minted["token"]
    assert token.startswith("tg_") and minted["note"] == "made over the API", minted
    conflict = s.api("POST", "/admin/api/grants", ADMIN, {"name": "api-bot", "policies": {"py": ALLOW_ECHO}})
    assert conflict.status_code == 409, conflict.text
    for body, needle in [({"name": "x", "policies": {"nowhere": ALLOW_ECHO}}, "nowhere"),
                         ({"name": "x", "policies": {"py": {"version": "1", "default": "perhaps"}}}, "/default"),
                         ({"name": "x"}, "policies"), ({"name": "x", "policies": {}, "colour": 1}, "colour")]:
        r = s.api("POST", "/admin/api/grants", ADMIN, body)
        assert r.status_code == 400 and needle in r.json()["error"], f"{body}: {r.status_code} {r.text}"

    async def echo_allowed(with_token: str) -> None:
        async with http_client(s.gateway.server_url("py"), with_token) as client:
            assert_allowed(await client.call_tool("echo", {"text": "hi"}))

    run(lambda: echo_allowed(token))
    # A policy manager replaces the grant's policy: echo is now denied.
    deny_all = {"version": "1", "default": "deny"}
    r = s.api("PUT", "/admin/api/grants/api-bot/policies/py", POLICY_MANAGER, content=json.dumps(deny_all).encode())
    assert r.status_code == 200, r.text

    async def echo_denied() -> None:
        async with http_client(s.gateway.server_url("py"), token) as client:
            assert_denied(await client.call_tool("echo", {"text": "hi"}), "(default deny)",
                          'Tool "echo" is not permitted by policy')

    run(echo_denied)
    rotated = s.ok("POST", "/admin/api/grants/api-bot/rotate", ADMIN)
    assert rotated["token"] != token
    raw = RawSession(s.gateway.server_url("py"), token)
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401
    s.ok("POST", "/admin/api/grants/api-bot/revoke", ADMIN)
    raw = RawSession(s.gateway.server_url("py"), rotated["token"])
    assert raw.post({"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401
    assert s.api("POST", "/admin/api/grants/api-bot/revoke", ADMIN).status_code == 404
    # Admin tokens are not grant tokens.
    assert RawSession(s.gateway.server_url("py"), ADMIN).post(
        {"jsonrpc": "2.0", "id": 1, "method": "ping"}).status_code == 401

    events = [e for e in s.ok("GET", "/admin/api/audit/admin", ADMIN)["records"] if e["subject"] == "api-bot"]
    assert [(e["action"], e["actor"]) for e in events] == [
        ("grant_minted", "admin-api:admin"), ("grant_policy_set", "admin-api:pat"),
        ("grant_rotated", "admin-api:admin"), ("grant_revoked", "admin-api:admin")], events
    listed = next(g for g in s.ok("GET", "/admin/api/grants", VIEWER)["grants"] if g["name"] == "api-bot")
    assert listed["status"] == "revoked" and listed["origin"] == "minted", listed
    assert token not in json.dumps(events) and rotated["token"] not in json.dumps(listed)


def test_viewers_evaluate_calls_see_classified_tools_and_policy_file_status(setup: Callable[[], Setup]) -> None:
    """What the dashboard's pages read: a call decided without running it (under a grant's
    policy, or a pasted document), a server's tools with their risk, and whether each policy
    file on disk still loads to the version in force."""
    s = setup()
    evaluate = "/admin/api/policies/evaluate"
    allowed = s.ok("POST", evaluate, VIEWER, {"grant": "ops", "server": "py", "tool": "echo", "arguments": {"text": "x"}})
    assert (allowed["decision"], allowed["rule"]) == ("allow", ""), allowed
    assert allowed["policy"]["source"].endswith("policy.json") and allowed["policy"]["version"], allowed
    denied = s.ok("POST", evaluate, VIEWER, {"grant": "ops", "server": "py", "tool": "delete_everything"})
    assert (denied["decision"], denied["rule"]) == ("deny", "(default deny)"), denied
    pasted = {"version": "1", "default": "allow", "tools": {
        "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 10, "on_deny": "too much"}]}}}
    fired = s.ok("POST", evaluate, VIEWER, {"policy": pasted, "tool": "charge", "arguments": {"amount": 50}})
    assert fired == {"decision": "deny", "rule": "/tools/charge/deny_if/args.amount-gt", "message": "too much",
                     "limits": [], "policy": {"source": "the request"}}, fired
    broken = s.api("POST", evaluate, VIEWER, {"policy": {"version": "1", "default": "sometimes"}, "tool": "x"})
    assert broken.status_code == 422 and "/default" in broken.json()["error"], broken.text
    for body, status in (({"grant": "ops", "server": "py"}, 400), ({"grant": "nobody", "server": "py", "tool": "x"}, 404),
                         ({"grant": "ops", "server": "elsewhere", "tool": "x"}, 404), ({"tool": "x"}, 400)):
        r = s.api("POST", evaluate, VIEWER, body)
        assert r.status_code == status and r.json()["error"], (body, r.status_code, r.text)

    tools = {t["name"]: t for t in s.ok("GET", "/admin/api/servers/py/tools", VIEWER)["tools"]}
    assert tools["delete_everything"]["category"] == "Destructive", tools["delete_everything"]
    assert tools["echo"]["risk"] in ("low", "medium") and tools["delete_everything"]["risk"] in ("high", "critical")
    assert all(t["evidence"] for t in tools.values())
    assert s.api("GET", "/admin/api/servers/nowhere/tools", VIEWER).status_code == 404

    def status_of_ops() -> dict[str, Any]:
        policies = s.ok("GET", "/admin/api/policies", VIEWER)["policies"]
        return next(p for p in policies if p["grant"] == "ops" and p["server"] == "py")["file"]

    assert status_of_ops() == {"status": "ok"}
    policy_file = s.gateway.workdir / "policy.json" if s.gateway.workdir else None
    assert policy_file is not None
    original = policy_file.read_text()
    try:
        policy_file.write_text('{"version": "1", "default": "sometimes"}')
        invalid = status_of_ops()
        assert invalid["status"] == "invalid" and any("/default" in e for e in invalid["errors"]), invalid
        # The version in force is still the good one: echo is still allowed.
        again = s.ok("POST", evaluate, VIEWER, {"grant": "ops", "server": "py", "tool": "echo"})
        assert again["decision"] == "allow" and again["policy"]["version"] == allowed["policy"]["version"], again
    finally:
        policy_file.write_text(original)
