"""Live reload (issue 10; SPEC §3.6, §4): editing a policy file or the configuration takes
effect on the next request, without a restart and without dropping sessions.

- a policy file edited on disk is noticed (polled every second): the same open session — an
  official Python SDK client — sees the new decisions and tool list at its next request;
- counters survive: a limit's budget spent before the reload stays spent;
- GET streams receive `notifications/tools/list_changed` when their session's visible
  tools changed: one the gateway serves (stdio), one relayed from an HTTP upstream (the
  notice slipped in between the upstream's events);
- a broken policy file is rejected with its errors in the log (file and JSON Pointer) and in
  the admin stream (`config_rejected`); the old version stays in force;
- SIGHUP reloads at once, even an edit the poll cannot see (same size, old mtime);
- a configuration edit adds and removes grants, and replaces admin tokens; a broken
  configuration keeps the old grants;
- every change is in the admin stream as `policy_reloaded` with old and new version;
- servers reload too: added, adjusted (same child, same sessions), reconnected (a new child;
  the old one finishes its calls in flight; sessions stay and are told their tools may have
  changed), moved (a new URL: its sessions end with 404) and removed; a server that cannot
  be built keeps every server as it was; settings bound at start are named as waiting for
  a restart (`restart_required`).
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
from mcp import MCPError

from e2e_helpers import (
    PY_UPSTREAM,
    PYTHON,
    Procs,
    RawSession,
    assert_allowed,
    assert_denied,
    assert_rate_limited,
    assert_unknown_tool,
    audit_records,
    http_client,
    iter_sse,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

ALICE = "tg-e2e-reload-alice-0123456789"
BOB = "tg-e2e-reload-bob-0123456789"
CAROL = "tg-e2e-reload-carol-0123456789"
DAY_MS = 86_400_000


def policy(*, hide: list[str], charge_max: int, adds: int = 3) -> dict[str, Any]:
    return {"version": "1", "default": "deny", "hide": hide, "tools": {
        "echo": {}, "filler_00": {},
        "add": {"limits": [{"counter": "adds", "window": "day", "max": adds}]},
        "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": charge_max,
                                "on_deny": f"over {charge_max}"}]},
    }}


def config_text(upstream: str, grants: dict[str, str]) -> str:
    blocks = "".join(f"""
[[grants]]
name = "{name}"
token = "{token}"
policies = {{ http = "policy.json", stdio = "policy.json" }}
""" for name, token in grants.items())
    return f"""
[gateway]

[servers.http]
url = "{upstream}"

[servers.stdio]
command = "{PYTHON}"
args = ["{PY_UPSTREAM}", "--transport", "stdio"]
{blocks}"""


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout:g} s: {what}"
        time.sleep(0.1)


def admin_events(data_dir: Path) -> list[dict[str, Any]]:
    return audit_records(data_dir, "--admin")


def listen(url: str) -> tuple[RawSession, list[dict[str, Any]]]:
    """A new session of alice's whose GET stream's messages are collected as they come."""
    session = RawSession(url, ALICE)
    session.initialize()
    notices: list[dict[str, Any]] = []
    opened = threading.Event()

    def read() -> None:
        try:
            with session.stream(timeout=60) as get:
                opened.set()
                for event in iter_sse(get):
                    if event.data:
                        notices.append(json.loads(event.data))
        except httpx.HTTPError:
            pass  # closed at the end of the test
        finally:
            opened.set()

    threading.Thread(target=read, daemon=True).start()
    assert opened.wait(10), f"no GET stream from {url}"
    return session, notices


def test_policy_and_config_edits_apply_live_and_bad_ones_are_refused(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-reload")[0]
    config = tmp_path / "toolgate.toml"
    gw = start_gateway_config(procs, tmp_path, config_text(upstream, {"alice": ALICE, "bob": BOB}),
                              policies={"policy.json": policy(hide=[], charge_max=100)}, name="toolgate-reload")
    data = tmp_path / "toolgate-reload-data"
    policy_file = tmp_path / "policy.json"
    http_url, stdio_url = gw.server_url("http"), gw.server_url("stdio")

    # Sessions listening on their GET streams, for the gateway's own notification: one the
    # gateway serves itself (stdio), one relayed from the HTTP upstream.
    listeners = {"stdio": listen(stdio_url), "http": listen(http_url)}

    async def body() -> None:
        # One SDK session throughout: it must outlive every reload.
        async with http_client(http_url, ALICE) as client:
            assert_allowed(await client.call_tool("echo", {"text": "before"}))
            assert_allowed(await client.call_tool("charge", {"amount": 50, "reason": "r"}))
            for _ in range(2):
                assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" in names, names

            # 1. An edit on disk: echo hidden, charges capped at 10.
            policy_file.write_text(json.dumps(policy(hide=["echo"], charge_max=10)))

            async def reloaded() -> bool:
                try:
                    await client.call_tool("echo", {"text": "probe"})
                    return False
                except MCPError as e:
                    assert_unknown_tool(e, "echo")
                    return True

            deadline = time.monotonic() + 10
            while not await reloaded():
                assert time.monotonic() < deadline, "the edited policy did not apply within 10 s"
                await anyio.sleep(0.2)
            assert_denied(await client.call_tool("charge", {"amount": 50, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "over 10")
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" not in names and "charge" in names, names
            # Counters survive: 2 of 3 were spent before the reload.
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            assert_rate_limited(await client.call_tool("add", {"a": 1, "b": 2}), "/tools/add/limits/adds",
                                "3", "day", "adds", DAY_MS)

            # 2. A broken edit is refused; the version in force stays.
            policy_file.write_text('{"version": "1", "default": "maybe", "tools": {}}')
            wait_for("the rejection in the log", lambda: "default" in gw.proc.stderr()
                     and "reload rejected" in gw.proc.stderr())
            try:
                await client.call_tool("echo", {"text": "still hidden"})
                raise AssertionError("echo came back with a broken policy")
            except MCPError as e:
                assert_unknown_tool(e, "echo")
            assert_denied(await client.call_tool("charge", {"amount": 50, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "over 10")

            # 3. SIGHUP reloads at once, even an edit the poll cannot see: same size, old mtime.
            good = json.dumps(policy(hide=["echo"], charge_max=20))
            policy_file.write_text(good)
            await anyio.sleep(2.5)  # the poll takes this version
            assert_denied(await client.call_tool("charge", {"amount": 50, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "over 20")
            stat = policy_file.stat()
            policy_file.write_text(good.replace('"value": 20', '"value": 90').replace("over 20", "over 90"))
            os.utime(policy_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            await anyio.sleep(2.5)
            assert_denied(await client.call_tool("charge", {"amount": 95, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "over 20")  # unseen by the poll
            gw.proc.proc.send_signal(signal.SIGHUP)
            deadline = time.monotonic() + 5
            while True:
                result = await client.call_tool("charge", {"amount": 95, "reason": "r"})
                if (result.meta or {}).get("toolgate/decision", {}).get("message") == "over 90":
                    break
                assert time.monotonic() < deadline, f"SIGHUP did not reload within 5 s: {result}"
                await anyio.sleep(0.1)
            assert_allowed(await client.call_tool("charge", {"amount": 80, "reason": "r"}))

    run(body, timeout=90)

    # Both GET streams were told their tool list changed (echo became hidden).
    for server, (_, notices) in listeners.items():
        wait_for(f"notifications/tools/list_changed on the {server} GET stream",
                 lambda: {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"} in notices)

    # 4. The configuration: carol added, bob removed.
    def can_call(token: str) -> bool:
        session = RawSession(http_url, token)
        try:
            r = session.client.post(http_url, headers=session.headers(), content=json.dumps(
                {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
                    "protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "probe", "version": "0"}}}))
            return r.status_code == 200
        finally:
            session.client.close()

    assert can_call(BOB) and not can_call(CAROL)
    config.write_text(config_text(upstream, {"alice": ALICE, "carol": CAROL}))
    wait_for("carol admitted and bob refused", lambda: can_call(CAROL) and not can_call(BOB))
    # A broken configuration keeps the grants in force.
    config.write_text(config.read_text() + "\n[[grants]]\nname = 5\n")
    wait_for("the broken configuration rejected", lambda: gw.proc.stderr().count("reload rejected") >= 2)
    assert can_call(CAROL) and can_call(ALICE) and not can_call(BOB)
    for session, _ in listeners.values():
        session.close()

    # 5. The admin stream: each policy change with its versions, each rejection with its errors.
    events = admin_events(data)
    reloaded = [e for e in events if e["action"] == "policy_reloaded"]
    alice_http = [e["detail"] for e in reloaded if e["detail"]["grant"] == "alice" and e["detail"]["server"] == "http"]
    assert len(alice_http) == 3, alice_http  # hide echo, max 20, max 90 (the broken one is not among them)
    assert all(d["version"] and d["previous_version"] and d["version"] != d["previous_version"] for d in alice_http)
    assert [alice_http[i]["version"] == alice_http[i + 1]["previous_version"] for i in range(2)] == [True, True]
    added = [e["detail"] for e in reloaded if e["detail"]["grant"] == "carol"]
    removed = [e["detail"] for e in reloaded if e["detail"]["grant"] == "bob" and e["detail"]["version"] is None]
    assert len(added) == 2 and len(removed) == 2, reloaded
    rejected = [e for e in events if e["action"] == "config_rejected"]
    assert [Path(e["subject"]).name for e in rejected] == ["policy.json", "toolgate.toml"], rejected
    assert any("/default" in error for error in rejected[0]["detail"]["errors"]), rejected[0]


def test_admin_tokens_reload_with_the_configuration(procs: Procs, tmp_path: Path) -> None:
    """An admin token replaced in the configuration: the new one works and the old one is
    refused from the next request, without a restart; the admin stream records who holds
    a token now (names and roles, never tokens)."""

    def admin_section(name: str, token: str) -> str:
        return (f'\n[admin]\ntoken_sha256 = "{hashlib.sha256(b"tg-e2e-reload-root-0123456789").hexdigest()}"\n'
                f'\n[[admin.members]]\nname = "{name}"\nrole = "viewer"\n'
                f'token_sha256 = "{hashlib.sha256(token.encode()).hexdigest()}"\n')

    upstream = start_py_upstream_http(procs, name="py_upstream-reload-admins")[0]
    config = tmp_path / "toolgate.toml"
    old, new = "tg-e2e-reload-old-viewer-0123456789", "tg-e2e-reload-new-viewer-0123456789"
    gw = start_gateway_config(procs, tmp_path, config_text(upstream, {"alice": ALICE}) + admin_section("olga", old),
                              policies={"policy.json": policy(hide=[], charge_max=100)},
                              name="toolgate-reload-admins")

    def status(token: str) -> int:
        return httpx.get(f"{gw.base}/admin/api", headers={"Authorization": f"Bearer {token}"}, timeout=10).status_code

    assert (status(old), status(new)) == (200, 401)
    config.write_text(config_text(upstream, {"alice": ALICE}) + admin_section("nina", new))
    wait_for("the new admin token accepted and the old one refused", lambda: (status(old), status(new)) == (401, 200))
    events = [e for e in admin_events(tmp_path / "toolgate-reload-admins-data") if e["action"] == "admin_tokens_reloaded"]
    assert [e["detail"]["holders"] for e in events] == [[{"name": "admin", "role": "admin"},
                                                        {"name": "nina", "role": "viewer"}]], events
    assert new not in json.dumps(events) and hashlib.sha256(new.encode()).hexdigest() not in json.dumps(events)


def test_servers_reload_with_the_configuration(procs: Procs, tmp_path: Path) -> None:
    """`[servers]` edits apply live, each with the least disturbance that serves it (see
    crates/toolgate-gateway/src/servers.rs)."""
    ran = {name: tmp_path / f"ran-{name}" for name in ("a", "b", "child1", "child2")}
    url_a = start_py_upstream_http(procs, name="py_upstream-servers-a", ran_file=ran["a"])[0]
    url_b = start_py_upstream_http(procs, name="py_upstream-servers-b", ran_file=ran["b"])[0]
    allow = {"version": "1", "default": "deny", "tools": {
        "echo": {}, "record_run": {}, "sleep": {},
        "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100}]}}}

    def config(http_url: str, child: str, *, shadow: bool = False, extra: str | None = None,
               more: str = "", gateway: str = "") -> str:
        servers = {"http": f'url = "{http_url}"',
                   "stdio": f'command = "{PYTHON}"\nargs = ["{PY_UPSTREAM}", "--transport", "stdio"]\n'
                            f'env = {{ PY_UPSTREAM_RAN_FILE = "{ran[child]}" }}\nshadow = {str(shadow).lower()}'}
        if extra:
            servers["extra"] = f'url = "{extra}"'
        blocks = "".join(f"\n[servers.{name}]\n{body}\n" for name, body in servers.items())
        policies = ", ".join(f'{name} = "allow.json"' for name in servers)
        return (f"[gateway]\n{gateway}\n{blocks}{more}\n[[grants]]\nname = \"alice\"\ntoken = \"{ALICE}\"\n"
                f"policies = {{ {policies} }}\n")

    cfg = tmp_path / "toolgate.toml"
    gw = start_gateway_config(procs, tmp_path, config(url_a, "child1"), policies={"allow.json": allow},
                              name="toolgate-servers")

    def children_started() -> int:
        return gw.proc.stderr().count("stdio upstream started")

    def edit(text: str, what: str, check: Callable[[], bool]) -> None:
        cfg.write_text(text)
        wait_for(what, check, timeout=15)

    def call(session: RawSession, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        r, msg = session.request("tools/call", {"name": tool, "arguments": args})
        assert r.status_code == 200, f"{tool}: HTTP {r.status_code} {r.text}"
        return msg

    def ran_tags(name: str) -> list[str]:
        return ran[name].read_text().split() if ran[name].exists() else []

    stdio_session, notices = listen(gw.server_url("stdio"))
    http_session = RawSession(gw.server_url("http"), ALICE)
    http_session.initialize()
    assert "result" in call(http_session, "record_run", {"tag": "h1"}) and ran_tags("a") == ["h1"]
    assert call(stdio_session, "charge", {"amount": 500, "reason": "r"})["result"]["isError"] is True
    wait_for("the stdio child up", lambda: children_started() == 1)

    # 1. A server added; the stdio server put in shadow mode: its child keeps running.
    edit(config(url_a, "child1", shadow=True, extra=url_b), "server extra added",
         lambda: RawSession(gw.server_url("extra"), ALICE).post({"jsonrpc": "2.0", "id": 0, "method": "ping"})
         .status_code != 404)
    extra_session = RawSession(gw.server_url("extra"), ALICE)
    extra_session.initialize()
    assert "result" in call(extra_session, "record_run", {"tag": "x1"}) and ran_tags("b") == ["x1"]
    shadowed = call(stdio_session, "charge", {"amount": 500, "reason": "r"})["result"]
    assert shadowed.get("isError") is not True, shadowed  # decided deny, not enforced
    assert children_started() == 1, "a shadow-only change restarted the child"

    # 2. The stdio child's environment changed: a new child; a call in flight on the old
    # one finishes there; the session stays and is told its tools may have changed.
    assert "result" in call(stdio_session, "record_run", {"tag": "c1"}) and ran_tags("child1") == ["c1"]
    slow: dict[str, Any] = {}
    slow_session = RawSession(gw.server_url("stdio"), ALICE)
    slow_session.initialize()
    in_flight = threading.Thread(target=lambda: slow.update(call(slow_session, "sleep", {"seconds": 2})))
    in_flight.start()
    time.sleep(0.5)
    before = len(notices)
    edit(config(url_a, "child2", shadow=True, extra=url_b), "a second child",
         lambda: children_started() == 2 and "result" in call(stdio_session, "record_run", {"tag": "c2"}))
    in_flight.join(15)
    assert "result" in slow and slow["result"].get("isError") is not True, slow
    assert "c2" in ran_tags("child2") and ran_tags("child1") == ["c1"]
    wait_for("list_changed after the new child",
             lambda: {"jsonrpc": "2.0", "method": "notifications/tools/list_changed"} in notices[before:])
    wait_for("the old child stopped", lambda: "stopping the child a reload replaced" in gw.proc.stderr())

    # 3. A server that cannot be built (its CA file is missing) changes nothing at all.
    broken = config(url_b, "child2", extra=url_b) + ""
    broken = broken.replace(f'url = "{url_b}"\n', f'url = "{url_b}"\nca_file = "missing-ca.pem"\n', 1)
    edit(broken, "the unusable server refused", lambda: "missing-ca.pem" in gw.proc.stderr())
    assert "result" in call(http_session, "record_run", {"tag": "h2"}) and ran_tags("a") == ["h1", "h2"]

    # 4. http moved to B: its sessions end (404), a new one reaches B. extra removed; stdio
    # out of shadow mode. A gateway limit changed too: named as waiting for a restart.
    edit(config(url_b, "child2", gateway="max_connections = 999"), "http moved, extra removed",
         lambda: http_session.post(http_session.message("tools/list")).status_code == 404)
    assert RawSession(gw.server_url("extra"), ALICE).post(
        {"jsonrpc": "2.0", "id": 0, "method": "ping"}).status_code == 404
    moved = RawSession(gw.server_url("http"), ALICE)
    moved.initialize()
    assert "result" in call(moved, "record_run", {"tag": "h3"})
    assert ran_tags("b") == ["x1", "h3"] and ran_tags("a") == ["h1", "h2"]
    assert "result" in call(stdio_session, "echo", {"text": "still here"})  # the same session
    assert call(stdio_session, "charge", {"amount": 500, "reason": "r"})["result"]["isError"] is True
    for session in (stdio_session, moved, slow_session):
        session.close()

    events = admin_events(tmp_path / "toolgate-servers-data")
    reloads = [{s["server"]: s["change"] for s in e["detail"]["servers"]}
               for e in events if e["action"] == "servers_reloaded"]
    assert reloads == [{"extra": "added", "stdio": "adjusted"}, {"stdio": "reconnected"},
                       {"http": "moved", "extra": "removed", "stdio": "adjusted"}], reloads
    rejected = [e for e in events if e["action"] == "config_rejected"]
    assert len(rejected) == 1 and "missing-ca.pem" in json.dumps(rejected[0]["detail"]), rejected
    waiting = [e["detail"]["settings"] for e in events if e["action"] == "restart_required"]
    assert waiting == [["gateway limits"]], waiting
