"""Hardening (issue 9): limits on what the gateway holds, each refusal a clear error.

- `[servers.X] max_message_bytes`: an upstream answer larger than the limit — a JSON body
  the gateway reads whole, one SSE event, one stdio line — reaches the caller as a JSON-RPC
  error naming the server and the setting, at once (not a cut stream, not a timeout), and
  the next call on the same session works.
- SIGTERM drains a call in flight: it gets its answer, the gateway exits 0, and the audit
  log holds the call with its outcome.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from mcp import MCPError

from e2e_helpers import (
    Procs,
    RawSession,
    assert_allowed,
    gateway_binary,
    http_client,
    py_upstream_stdio_argv,
    run,
    start_gateway_config,
    start_py_upstream_http,
    started_lazily,
)

TOKEN = "tg-e2e-hardening-grant-token-0123456789"
ALLOW_ALL = {"version": "1", "default": "allow"}


@pytest.fixture(scope="module")
def upstreams(module_procs: Procs) -> Callable[[str], str]:
    """py_upstream over Streamable HTTP: `sse` (its default) or `json` (`--json-response`)."""
    return started_lazily(lambda mode: start_py_upstream_http(
        module_procs, *(["--json-response"] if mode == "json" else []), name=f"py_upstream-hardening-{mode}")[0])


@pytest.mark.parametrize("mode", ["sse", "json", "stdio"])
def test_an_answer_over_max_message_bytes_is_a_clear_error(procs: Procs, tmp_path: Path, mode: str,
                                                           upstreams: Callable[[str], str]) -> None:
    if mode == "stdio":
        argv = py_upstream_stdio_argv()
        server = f'command = "{argv[0]}"\nargs = [' + ", ".join(f'"{a}"' for a in argv[1:]) + "]\n"
    else:
        server = f'url = "{upstreams(mode)}"\n'
    config = f"""
[gateway]
data_dir = "data"

[servers.up]
{server}max_message_bytes = 65536
timeout = "20s"

[[grants]]
name = "hardening"
token = "{TOKEN}"
policies = {{ up = "allow.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"allow.json": ALLOW_ALL},
                              name=f"toolgate-hardening-size-{mode}")

    async def body() -> None:
        async with http_client(gw.server_url("up"), TOKEN) as client:
            assert_allowed(await client.call_tool("echo", {"text": "small"}))
            with pytest.raises(MCPError) as info:
                await client.call_tool("echo", {"text": "x" * 100_000})
            message = info.value.error.message
            assert 'upstream server "up"' in message, message
            assert "larger than 65536 bytes" in message, message
            assert "[servers.up] max_message_bytes" in message, message
            # The session, and the upstream, still serve.
            result = await client.call_tool("echo", {"text": "after"})
            assert_allowed(result)
            assert result.content[0].text == "after", result

    run(body)


def test_sigterm_drains_a_call_in_flight_and_records_its_outcome(procs: Procs, tmp_path: Path,
                                                                 upstreams: Callable[[str], str]) -> None:
    """SIGTERM while a call runs: the call still gets its answer, the gateway then exits
    cleanly, and the audit log holds the call with its outcome."""
    config = f"""
[gateway]
data_dir = "data"

[servers.up]
url = "{upstreams("sse")}"

[[grants]]
name = "hardening"
token = "{TOKEN}"
policies = {{ up = "allow.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"allow.json": ALLOW_ALL},
                              name="toolgate-hardening-drain")
    # Raw HTTP (an SDK client would also hold a GET stream, and fail on its reconnection
    # once the gateway is gone, cancelling the very call this test watches).
    raw = RawSession(gw.server_url("up"), TOKEN)
    raw.initialize()
    answers: list[tuple[int, dict[str, Any]]] = []

    def slow() -> None:
        response, message = raw.request("tools/call", {"name": "sleep", "arguments": {"seconds": 2}})
        answers.append((response.status_code, message))

    caller = threading.Thread(target=slow)
    caller.start()
    time.sleep(0.5)
    gw.proc.signal_group(signal.SIGTERM)
    caller.join(timeout=20)
    assert answers, "the call in flight got no answer"
    status, message = answers[0]
    assert status == 200, answers
    assert message["result"]["isError"] is False, message
    assert message["result"]["content"][0]["text"] == "slept 2", message
    assert gw.proc.proc.wait(timeout=20) == 0, gw.proc.stderr()
    done = subprocess.run([str(gateway_binary()), "audit", "query", "--json", "--tool", "sleep",
                           "--data-dir", str(tmp_path / "toolgate-hardening-drain-data")],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    assert [(r["decision"], r["upstream_status"]) for r in records] == [("allow", "ok")], records
