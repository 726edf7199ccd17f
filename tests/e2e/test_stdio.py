"""Desktop agents (issue 11; SPEC §2): `toolgate stdio` and `toolgate connect`, driven by the
official Python SDK's stdio client, as Claude Desktop, Cursor or VS Code would launch them.

- quick mode in front of an HTTP upstream;
- quick mode around the Python SDK server: allowed, denied, hidden and rate-limited calls;
  the client's environment reaches the child; a child that crashes is restarted and the
  same session goes on; every decision is in the audit log of the data directory;
- a configured server (`@modelcontextprotocol/server-everything`), the grant inferred: the
  same decisions, and the same counters and audit log as `toolgate serve` on that
  configuration afterwards; a `stdio` beside a running `serve` on one directory is refused
  with the way out (`connect`);
- signals and status: the client's SIGTERM reaches the child and toolgate exits with the
  child's status; closing stdin ends both, status 0;
- `toolgate connect` to a live gateway: its decisions, a refused token named, and a session
  the gateway dropped recovered without the client noticing.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError

from e2e_helpers import (
    PY_UPSTREAM,
    PYTHON,
    Procs,
    assert_allowed,
    assert_denied,
    assert_rate_limited,
    assert_unknown_tool,
    audit_records,
    everything_command,
    free_port,
    gateway_binary,
    run,
    start_gateway_config,
    start_py_upstream_http,
    stdio_client,
    wait_ready,
)

DAY_MS = 86_400_000
POLICY: dict[str, Any] = {"version": "1", "default": "deny", "hide": ["secret_admin"], "tools": {
    "echo": {}, "record_run": {}, "crash": {},
    "add": {"limits": [{"counter": "adds", "window": "day", "max": 1}]},
    "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100, "on_deny": "too much"}]},
}}


def tool_calls(data: Path) -> list[tuple[str, str]]:
    return [(r["tool"], r["decision"]) for r in audit_records(data) if r["method"] == "tools/call"]


def test_stdio_quick_mode_enforces_the_policy_on_the_child(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    data, ran = tmp_path / "data", tmp_path / "ran"
    argv = [str(gateway_binary()), "stdio", "--data-dir", str(data), "--policy", str(policy), "--",
            PYTHON, str(PY_UPSTREAM), "--transport", "stdio"]

    async def body() -> None:
        async with stdio_client(argv, env={"PY_UPSTREAM_RAN_FILE": str(ran)}) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" in names and "secret_admin" not in names, names
            assert_allowed(await client.call_tool("echo", {"text": "hi"}))
            assert_denied(await client.call_tool("charge", {"amount": 500, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "too much")
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            assert_rate_limited(await client.call_tool("add", {"a": 1, "b": 2}), "/tools/add/limits/adds",
                                "1", "day", "adds", DAY_MS)
            with pytest.raises(MCPError) as hidden:
                await client.call_tool("secret_admin", {})
            assert_unknown_tool(hidden.value, "secret_admin")
            # The client's environment reached the child.
            assert_allowed(await client.call_tool("record_run", {"tag": "from-the-client-env"}))
            assert ran.read_text().split() == ["from-the-client-env"]

            # The child dies mid-call: the call fails naming the server; a new child comes up
            # and the same session goes on.
            with pytest.raises(MCPError) as crashed:
                await client.call_tool("crash", {})
            assert "default" in crashed.value.error.message, crashed.value.error.message
            deadline = time.monotonic() + 15
            while True:
                try:
                    assert_allowed(await client.call_tool("echo", {"text": "after the crash"}))
                    break
                except MCPError as e:
                    assert time.monotonic() < deadline, f"no restart within 15 s: {e}"
                    await anyio.sleep(0.2)

    run(body, timeout=90)
    calls = tool_calls(data)
    assert calls[:6] == [("echo", "allow"), ("charge", "deny"), ("add", "allow"), ("add", "rate_limited"),
                         ("secret_admin", "hide"), ("record_run", "allow")], calls
    assert all(r["grant"] == "stdio" for r in audit_records(data) if r["method"] == "tools/call")


def test_stdio_quick_mode_in_front_of_an_http_upstream(procs: Procs, tmp_path: Path) -> None:
    """`toolgate stdio --policy P --upstream URL`: a stdio client, an HTTP server."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))
    upstream = start_py_upstream_http(procs, name="py_upstream-stdio-http")[0]
    argv = [str(gateway_binary()), "stdio", "--data-dir", str(tmp_path / "data"), "--policy", str(policy),
            "--upstream", upstream]

    async def body() -> None:
        async with stdio_client(argv) as client:
            assert_allowed(await client.call_tool("echo", {"text": "over http"}))
            assert_denied(await client.call_tool("charge", {"amount": 500, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "too much")

    run(body, timeout=60)
    assert tool_calls(tmp_path / "data") == [("echo", "allow"), ("charge", "deny")]


EVERYTHING_POLICY: dict[str, Any] = {"version": "1", "default": "deny", "hide": ["get-env"], "tools": {
    "echo": {"limits": [{"counter": "echoes", "window": "day", "max": 2}]},
    "get-sum": {"deny_if": [{"path": "args.a", "op": "gt", "value": 10, "on_deny": "small sums only"}]},
}}


def test_stdio_runs_a_configured_server_with_the_gateways_counters_and_log(procs: Procs, tmp_path: Path) -> None:
    (tmp_path / "everything.json").write_text(json.dumps(EVERYTHING_POLICY))
    everything = everything_command("stdio")
    token = "tg-e2e-stdio-desk-0123456789"
    marker = tmp_path / "unused-started"
    # A second server that marks when it starts, and serves like py_upstream.
    unused = (f"import pathlib, runpy, sys; pathlib.Path({str(marker)!r}).touch(); "
              f"sys.argv = [{str(PY_UPSTREAM)!r}, '--transport', 'stdio']; "
              f"runpy.run_path({str(PY_UPSTREAM)!r}, run_name='__main__')")
    config = tmp_path / "toolgate.toml"
    config.write_text(f"""
[gateway]
data_dir = "state"

[servers.everything]
command = "{everything[0]}"
args = {json.dumps(everything[1:])}

[servers.unused]
command = "{PYTHON}"
args = {json.dumps(["-c", unused])}

[[grants]]
name = "desk"
token = "{token}"
policies = {{ everything = "everything.json" }}
""")
    argv = [str(gateway_binary()), "stdio", "--config", str(config), "--server", "everything"]

    async def body() -> None:
        async with stdio_client(argv) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" in names and "get-env" not in names, names
            assert_allowed(await client.call_tool("echo", {"message": "one"}))
            assert_allowed(await client.call_tool("echo", {"message": "two"}))
            assert_rate_limited(await client.call_tool("echo", {"message": "three"}), "/tools/echo/limits/echoes",
                                "2", "day", "echoes", DAY_MS)
            assert_denied(await client.call_tool("get-sum", {"a": 50, "b": 1}),
                          "/tools/get-sum/deny_if/args.a-gt", "small sums only")
            assert_allowed(await client.call_tool("get-sum", {"a": 5, "b": 1}))
            with pytest.raises(MCPError) as hidden:
                await client.call_tool("get-env", {})
            assert_unknown_tool(hidden.value, "get-env")

    run(body, timeout=90)
    assert not marker.exists(), "stdio --server everything started another server too"
    data = tmp_path / "state"
    assert tool_calls(data) == [("echo", "allow"), ("echo", "allow"), ("echo", "rate_limited"), ("get-sum", "deny"),
                                ("get-sum", "allow"), ("get-env", "hide")]

    # The HTTP gateway on the same configuration: the same counters (the day's two echoes
    # are spent), the same audit log. Meanwhile a `stdio` on its directory is refused, with the way out.
    port = free_port()
    serve = procs.start("toolgate-stdio-serve", [str(gateway_binary()), "serve", "--config", str(config),
                                                 "--listen", f"127.0.0.1:{port}"], cwd=tmp_path)
    wait_ready(serve, f"http://127.0.0.1:{port}")
    refused = subprocess.run(argv, input="", capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "toolgate connect" in refused.stderr, refused.stderr

    from e2e_helpers import http_client

    async def over_http() -> None:
        async with http_client(f"http://127.0.0.1:{port}/mcp/everything", token) as client:
            assert_rate_limited(await client.call_tool("echo", {"message": "four"}), "/tools/echo/limits/echoes",
                                "2", "day", "echoes", DAY_MS)
            assert_allowed(await client.call_tool("get-sum", {"a": 1, "b": 1}))

    run(over_http, timeout=60)
    serve.stop()
    assert tool_calls(data)[-2:] == [("echo", "rate_limited"), ("get-sum", "allow")]
    verify = subprocess.run([str(gateway_binary()), "audit", "verify", "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=60)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def initialize_line() -> bytes:
    return (json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-11-25", "capabilities": {},
        "clientInfo": {"name": "signals", "version": "0"}}}) + "\n").encode()


def test_stdio_passes_signals_on_and_exits_with_the_childs_status(tmp_path: Path) -> None:
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps(POLICY))

    def start(*extra: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [str(gateway_binary()), "stdio", "--data-dir", str(tmp_path / "data"), "--policy", str(policy), "--",
             PYTHON, str(PY_UPSTREAM), "--transport", "stdio", *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdin and proc.stdout
        proc.stdin.write(initialize_line())
        proc.stdin.flush()
        answer = json.loads(proc.stdout.readline())
        assert answer["id"] == 1 and "result" in answer, answer
        return proc

    # SIGTERM to toolgate reaches the child, which exits 42: so does toolgate.
    proc = start("--exit-on-term", "42")
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=20) == 42, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.kill()
    # The client closes stdin: the child's stdin is closed, it exits 0, and so does toolgate.
    proc = start()
    assert proc.stdin
    proc.stdin.close()
    try:
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode() if proc.stderr else ""
    finally:
        proc.kill()


def test_connect_relays_to_a_live_gateway(procs: Procs, tmp_path: Path) -> None:
    upstream = start_py_upstream_http(procs, name="py_upstream-connect")[0]
    token = "tg-e2e-connect-0123456789"
    gw = start_gateway_config(procs, tmp_path, f"""
[gateway]
session_idle_timeout = "2s"

[servers.py]
url = "{upstream}"

[[grants]]
name = "remote"
token = "{token}"
policies = {{ py = "policy.json" }}
""", policies={"policy.json": POLICY}, name="toolgate-connect")
    url = gw.server_url("py")
    argv = [str(gateway_binary()), "connect", url]

    async def body() -> None:
        async with stdio_client(argv, env={"TOOLGATE_TOKEN": token}) as client:
            assert_allowed(await client.call_tool("echo", {"text": "hi"}))
            assert_denied(await client.call_tool("charge", {"amount": 500, "reason": "r"}),
                          "/tools/charge/deny_if/args.amount-gt", "too much")
            # The gateway closes the idle session; the next call opens a new one unseen.
            await anyio.sleep(4)
            assert_allowed(await client.call_tool("echo", {"text": "after the session idled out"}))

    run(body, timeout=60)
    assert "session closed after" in gw.proc.stderr()
    assert gw.proc.stderr().count("session opened") >= 2

    async def refused() -> None:
        async with stdio_client([*argv, "--token", "tg-not-a-real-token"]) as client:
            await client.list_tools()

    with pytest.raises(BaseException) as failed:
        run(refused, timeout=30)
    assert "HTTP 401" in repr(failed.value) or "401" in str(failed.value), repr(failed.value)
