"""Horizontal scale (issue 12, point 5; SPEC §8): two replicas in cluster mode (PostgreSQL
and Redis shared) behind a round-robin proxy that sends each request to the next replica in
turn (tests/conformance/auth_proxy.py with two targets).

- a legacy (session-based) client, the official Python SDK: its session is opened on one
  replica and every later request alternates — the session id carries what the other
  replica needs (signed with a key both read from PostgreSQL), so calls, listings and the
  GET stream work on both; a limit counts across both, exactly;
- a modern (2026-07-28) client: any replica serves any request; an approval asked through
  `input_required` on one replica is answered through the other;
- both replicas served requests (their own metrics say so), and a forged session id is an
  unknown session on both.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from e2e_helpers import (
    REPO,
    ClientCallbacks,
    Procs,
    assert_allowed,
    assert_rate_limited,
    http_client,
    ready_url,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

TOKEN = "tg-e2e-replicas-0123456789"
SHARED_POSTGRES = os.environ.get("TOOLGATE_TEST_POSTGRES_URL", "postgres://toolgate@127.0.0.1:5432/toolgate")
SHARED_REDIS = os.environ.get("TOOLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
DAY_MS = 86_400_000


def test_two_replicas_behind_a_round_robin_proxy(procs: Procs, tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    upstream = start_py_upstream_http(procs, name="py_upstream-replicas", ran_file=ran)[0]
    counter = f"adds-{time.time_ns()}"  # Redis is shared with other runs
    policy = {"version": "1", "default": "deny", "tools": {
        "echo": {}, "slow_count": {},
        "add": {"limits": [{"counter": counter, "window": "day", "max": 3}]},
        "record_run": {"action": "require_approval", "approval": {"timeout": "5m"}}}}
    config = f"""
[store]
postgres_url = "{SHARED_POSTGRES}"
redis_url = "{SHARED_REDIS}"

[servers.py]
url = "{upstream}"

[[grants]]
name = "replicated"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""
    replicas = [start_gateway_config(procs, tmp_path / f"replica{i}", config, policies={"policy.json": policy},
                                     name=f"toolgate-replica{i}") for i in range(2)]
    proxy = procs.start("round_robin", [sys.executable, str(REPO / "tests" / "conformance" / "auth_proxy.py"),
                                        "--port", "0", "--bearer", TOKEN,
                                        *[arg for gw in replicas for arg in ("--target", gw.server_url("py"))]])
    url = proxy.wait_for(ready_url)

    def served(gw: Any) -> int:
        text = httpx.get(f"{gw.base}/metrics", timeout=10).text
        return sum(int(m) for m in re.findall(r'^toolgate_calls_total\{server="py",[^}]*\} (\d+)$', text, re.M))

    async def legacy() -> None:
        async with http_client(url, None, mode="legacy") as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "echo" in names, names
            for i in range(3):
                assert_allowed(await client.call_tool("echo", {"text": f"turn {i}"}))
            # Progress notifications come back on the call's own stream, whichever replica.
            counted = await client.call_tool("slow_count", {"n": 3, "delay": 0.01})
            assert_allowed(counted)
            for _ in range(3):
                assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            assert_rate_limited(await client.call_tool("add", {"a": 1, "b": 2}), f"/tools/add/limits/{counter}",
                                "3", "day", counter, DAY_MS)

    run(legacy, timeout=90)
    assert all(served(gw) > 0 for gw in replicas), [served(gw) for gw in replicas]
    opened = [gw.proc.stderr().count("session opened") for gw in replicas]
    assert sorted(opened) == [0, 1], f"one session, opened on one replica and served by both: {opened}"

    async def modern() -> None:
        cb = ClientCallbacks(elicit_action="accept", elicit_content={"approve": True}, sampling_model="m",
                             sampling_text="t")
        async with http_client(url, None, mode="2026-07-28", **cb.kwargs()) as client:
            for i in range(4):
                assert_allowed(await client.call_tool("echo", {"text": f"modern {i}"}))
            # Asked through one replica (input_required), answered through the other.
            assert_allowed(await client.call_tool("record_run", {"tag": "approved-across-replicas"}))
            assert len(cb.elicitations) == 1

    before = [served(gw) for gw in replicas]
    run(modern, timeout=90)
    after = [served(gw) for gw in replicas]
    assert all(a > b for a, b in zip(after, before)), (before, after)
    assert ran.read_text().split() == ["approved-across-replicas"]

    # A forged session id is no session on either replica.
    forged = "tgs2.eyJnIjoicmVwbGljYXRlZCJ9.AAAA"
    for gw in replicas:
        r = httpx.post(gw.server_url("py"), headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream", "Mcp-Session-Id": forged,
            "MCP-Protocol-Version": "2025-11-25"},
            content=json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/list"}), timeout=10)
        assert r.status_code == 404, r.text
