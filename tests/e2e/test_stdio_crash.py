"""A stdio upstream that dies in the middle of a call (SPEC §4 "upstream down", §5 "restarted
with back-off if they die … shut down cleanly"):

- every caller with a call in flight gets, promptly, a JSON-RPC error (-32603) whose message
  names the server;
- the gateway reaps the dead child (no zombie) and starts a new one; a new session works;
- when the gateway exits, no child process is left running.
"""

from __future__ import annotations

import os
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
    children_of,
    http_client,
    pid_running,
    run,
    start_gateway_config,
)

SERVER = "crashy"
TOKEN = "tg-e2e-crash-token-5150"
ALLOW_ALL = {"version": "1", "default": "allow"}


def upstream_children(gw_pid: int) -> list[tuple[int, str, str]]:
    return [c for c in children_of(gw_pid) if "py_upstream.py" in c[2]]


def wait_until(predicate: Any, timeout: float, what: str, describe: Any = None) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what} (not within {timeout:g}s)" + (f"\n{describe()}" if describe else ""))
        time.sleep(0.1)


def test_crashed_child_is_reported_restarted_and_reaped(procs: Procs, tmp_path: Path) -> None:
    config = f"""
[gateway]
data_dir = "data"

[servers.{SERVER}]
command = "{PYTHON}"
args = ["{PY_UPSTREAM}", "--transport", "stdio"]

[[grants]]
name = "crash-test"
token = "{TOKEN}"
policies = {{ {SERVER} = "allow.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"allow.json": ALLOW_ALL}, name="toolgate-crash")
    url = gw.server_url(SERVER)
    first = upstream_children(gw.pid)
    assert len(first) == 1, f"one stdio child expected: {children_of(gw.pid)}"
    first_pid = first[0][0]
    errors: dict[str, BaseException | Any] = {}
    timings: dict[str, float] = {}

    async def bystander(started: anyio.Event) -> None:
        """Another session with a call in flight when the child dies."""
        async with http_client(url, TOKEN, timeout=30) as client:
            started.set()
            t0 = time.monotonic()
            try:
                errors["bystander"] = await client.call_tool("sleep", {"seconds": 20})
            except MCPError as exc:
                errors["bystander"] = exc
            timings["bystander"] = time.monotonic() - t0

    async def crasher() -> None:
        async with http_client(url, TOKEN, timeout=30) as client:
            assert_allowed(await client.call_tool("echo", {"text": "before"}))
            await anyio.sleep(0.5)  # let the bystander's sleep reach the child
            t0 = time.monotonic()
            try:
                errors["crasher"] = await client.call_tool("crash", {})
            except MCPError as exc:
                errors["crasher"] = exc
            timings["crasher"] = time.monotonic() - t0

    async def body() -> None:
        started = anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(bystander, started)
            await started.wait()
            tg.start_soon(crasher)

    run(body, timeout=45)
    for who in ("crasher", "bystander"):
        exc = errors.get(who)
        assert isinstance(exc, MCPError), f"{who}: expected a JSON-RPC error, got {exc!r}"
        assert exc.code == -32603, f"{who}: code {exc.code}, message {exc.error.message!r}"
        assert SERVER in exc.error.message, f"{who}: the error must name the server: {exc.error.message!r}"
        assert timings[who] < 10, f"{who}: the error took {timings[who]:.1f}s"

    # The dead child is reaped (no zombie under the gateway) and a new one is started.
    wait_until(lambda: not pid_running(first_pid), 10, f"the crashed child {first_pid} is still running")
    wait_until(lambda: all(pid != first_pid for pid, _, _ in children_of(gw.pid)), 10,
               f"the crashed child {first_pid} was not reaped by the gateway",
               lambda: f"children of the gateway: {children_of(gw.pid)}")

    async def new_session_works() -> str:
        deadline = time.monotonic() + 30
        last: BaseException | None = None
        while time.monotonic() < deadline:
            try:
                async with http_client(url, TOKEN, timeout=10) as client:
                    result = await client.call_tool("echo", {"text": "after the crash"})
                    assert_allowed(result)
                    return result.content[0].text
            except Exception as exc:  # noqa: BLE001 - the child may still be restarting
                last = exc
                await anyio.sleep(0.3)
        raise AssertionError(f"no working session within 30 s after the crash; last error: {last!r}")

    assert run(new_session_works, timeout=40) == "after the crash"
    second = upstream_children(gw.pid)
    assert len(second) == 1 and second[0][0] != first_pid, f"a new child expected: {children_of(gw.pid)}"
    assert not [c for c in children_of(gw.pid) if c[1] == "Z"], f"zombies: {children_of(gw.pid)}"
    second_pid = second[0][0]

    # The gateway shuts down cleanly and takes its child with it (SIGTERM to the gateway
    # process alone, not its process group).
    os.kill(gw.pid, signal.SIGTERM)
    try:
        gw.proc.proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the gateway did not exit within 15 s of SIGTERM\n{gw.proc.describe()}")
    wait_until(lambda: not pid_running(second_pid), 10,
               f"the stdio child {second_pid} is still running after the gateway exited")
    # the child's stderr is logged by the gateway
    assert "crash tool called; exiting with status 3" in gw.proc.stderr(), gw.proc.describe()
