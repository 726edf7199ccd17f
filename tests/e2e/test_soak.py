"""Soak (issue 9): steady mixed traffic with faults injected, for a bounded time, through one
gateway on the embedded store; then exact totals.

Five clients (official Python SDK) call an HTTP upstream in a seeded random mix — allowed
calls, policy denials, a hidden tool, a day limit that runs out, argument predicates — with
injected faults among them: upstream JSON-RPC errors, tool errors, calls that outlive the
server's timeout, calls the client gives up on (cancelled), and sessions closed and opened
all along. A sixth client uses the stdio upstream for a few seconds, crashes it, and waits for
the gateway to restart it (with back-off, doubling while it keeps crashing); again.

At the end:
- no client saw an error other than the injected ones, each with the expected message;
- the audit log holds exactly one `tools/call` record per call the clients made, with the
  decision the client saw and the outcome its fault implies, and its chains verify;
- the limited tool was admitted exactly its budget, and the upstream ran exactly the calls
  that were admitted (its own record of `record_run`);
- the gateway's memory did not grow: the resident size late in the run is within a margin
  of the size once warmed up; its open file descriptors are back where they were.

`TOOLGATE_SOAK_SECONDS` sets the traffic time: 40 s by default (the short form CI runs),
300 for the nightly-style run (`TOOLGATE_SOAK_SECONDS=300 pytest tests/e2e/test_soak.py`).
"""

from __future__ import annotations

import json
import os
import random
import secrets
import statistics
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from mcp import MCPError

from e2e_helpers import (
    PY_UPSTREAM,
    PYTHON,
    Procs,
    children_of,
    decision_of,
    gateway_binary,
    http_client,
    run,
    start_gateway_config,
    start_py_upstream_http,
)

TOKEN = "tg-e2e-soak-grant-token-0123456789"
SECONDS = float(os.environ.get("TOOLGATE_SOAK_SECONDS", "40"))
ADD_BUDGET = 120
# How the audit log can word the outcome of a call the client cancelled: the upstream's own
# answer to the cancellation (the SDK server's -32800), the stream ending without one, or the
# gateway's note that the client cancelled.
CANCELLED = {"error -32800", "no_answer", "cancelled"}
SEED = int(os.environ.get("TOOLGATE_SOAK_SEED", "20261126"))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Tally:
    """What the clients saw: per (server, tool) the decisions and outcomes, to compare with
    the audit log; and anything unexpected."""

    def __init__(self) -> None:
        self.calls: Counter[tuple[str, str, str, str]] = Counter()  # server, tool, decision, outcome
        self.unexpected: list[str] = []
        self.tags_admitted: set[str] = set()
        self.crashes = 0
        self.restart_waits: list[float] = []

    def saw(self, server: str, tool: str, decision: str, outcome: str) -> None:
        self.calls[(server, tool, decision, outcome)] += 1


async def http_worker(i: int, url: str, tally: Tally, stop: anyio.Event) -> None:
    rng = random.Random(SEED + i)
    n = 0
    while not stop.is_set():
        async with http_client(url, TOKEN, timeout=20) as client:
            for _ in range(rng.randint(20, 60)):  # then the session is closed and a new one opened
                if stop.is_set():
                    break
                n += 1
                await one_call(client, rng, f"w{i}-{n}", tally)


async def one_call(client: Any, rng: random.Random, tag: str, tally: Tally) -> None:
    """One call of the mix; records what the client saw, and what it should have seen."""
    pick = rng.random()

    def unexpected(what: str) -> None:
        tally.unexpected.append(f"{tag}: {what}")

    try:
        if pick < 0.30:
            result = await client.call_tool("record_run", {"tag": tag})
            if result.is_error:
                return unexpected(f"record_run failed: {result}")
            tally.tags_admitted.add(tag)
            tally.saw("http", "record_run", "allow", "ok")
        elif pick < 0.45:
            result = await client.call_tool("echo", {"text": tag})
            if result.is_error or result.content[0].text != tag:
                return unexpected(f"echo: {result}")
            tally.saw("http", "echo", "allow", "ok")
        elif pick < 0.60:
            result = await client.call_tool("add", {"a": 1, "b": 2})
            decision = decision_of(result)
            if decision is None and not result.is_error:
                tally.saw("http", "add", "allow", "ok")
            elif decision and decision["decision"] == "rate_limited":
                tally.saw("http", "add", "rate_limited", "")
            else:
                unexpected(f"add: {result}")
        elif pick < 0.68:
            result = await client.call_tool("delete_everything", {})
            decision = decision_of(result)
            if not decision or decision["rule"] != "/tools/delete_everything/action":
                return unexpected(f"delete_everything: {result}")
            tally.saw("http", "delete_everything", "deny", "")
        elif pick < 0.78:
            amount = rng.randint(1, 200)
            result = await client.call_tool("charge", {"amount": amount, "reason": tag})
            decision = decision_of(result)
            if amount > 100:
                if not decision or decision["message"] != "too much":
                    return unexpected(f"charge {amount}: {result}")
                tally.saw("http", "charge", "deny", "")
            else:
                if result.is_error:
                    return unexpected(f"charge {amount}: {result}")
                tally.saw("http", "charge", "allow", "ok")
        elif pick < 0.81:
            try:
                await client.call_tool("secret_admin", {})
                return unexpected("secret_admin was not hidden")
            except MCPError as e:
                if "Unknown tool" not in str(e):
                    return unexpected(f"secret_admin: {e}")
            tally.saw("http", "secret_admin", "hide", "")
        elif pick < 0.86:  # injected: the upstream answers with a JSON-RPC error
            try:
                await client.call_tool("jsonrpc_error", {"message": "injected"})
                return unexpected("jsonrpc_error did not fail")
            except MCPError as e:
                if "injected" not in str(e):
                    return unexpected(f"jsonrpc_error: {e}")
            tally.saw("http", "jsonrpc_error", "allow", "error -32603")
        elif pick < 0.91:  # injected: the tool reports a failure
            result = await client.call_tool("tool_error", {"message": "injected"})
            if not result.is_error:
                return unexpected(f"tool_error: {result}")
            tally.saw("http", "tool_error", "allow", "tool_error")
        elif pick < 0.93:  # injected: the call outlives the server's timeout (2 s)
            try:
                await client.call_tool("sleep", {"seconds": 3})
                return unexpected("sleep 3 did not time out")
            except MCPError as e:
                if "did not answer within 2 s" not in str(e):
                    return unexpected(f"sleep 3: {e}")
            tally.saw("http", "sleep", "allow", "timeout")
        else:  # injected: the client gives up on a call in flight
            with anyio.move_on_after(0.2):
                await client.call_tool("sleep", {"seconds": 1})
                return unexpected("sleep 1 finished within 0.2 s")
            tally.saw("http", "sleep", "allow", "cancelled")
    except MCPError as e:
        unexpected(f"error {e}")


async def crasher(url: str, tally: Tally, stop: anyio.Event) -> None:
    """Calls echo on the stdio upstream, crashes it, waits for it to come back; again."""
    while not stop.is_set():
        started = time.monotonic()
        while True:  # a new session: the child may still be restarting after the last crash
            try:
                async with http_client(url, TOKEN, timeout=20) as client:
                    tally.restart_waits.append(time.monotonic() - started)
                    for k in range(10):  # steady use for a while, then the crash
                        result = await client.call_tool("echo", {"text": f"stdio {k}"})
                        if result.is_error:
                            tally.unexpected.append(f"stdio echo: {result}")
                        tally.saw("stdio", "echo", "allow", "ok")
                        await anyio.sleep(0.2)
                    try:
                        await client.call_tool("crash", {})
                        tally.unexpected.append("crash did not fail")
                    except MCPError as e:
                        if e.code != -32603 or "stdio" not in e.error.message:
                            tally.unexpected.append(f"crash: {e.code} {e.error.message}")
                    tally.crashes += 1
                break
            except Exception:  # noqa: BLE001 - before the child is back, a session cannot start
                # Restarts back off, doubling up to 30 s while the child keeps crashing.
                if time.monotonic() - started > 40:
                    tally.unexpected.append("the stdio upstream did not come back within 40 s")
                    return
                await anyio.sleep(0.2)


def test_soak_mixed_traffic_with_faults_keeps_exact_totals_and_flat_memory(procs: Procs, tmp_path: Path) -> None:
    counter = f"soak-add-{secrets.token_hex(4)}"
    ran_file = tmp_path / "ran.txt"
    upstream = start_py_upstream_http(procs, name="py_upstream-soak", ran_file=ran_file)[0]
    policy = {"version": "1", "default": "deny", "hide": ["secret_admin"], "tools": {
        "echo": {}, "record_run": {}, "jsonrpc_error": {}, "tool_error": {}, "sleep": {}, "crash": {},
        "delete_everything": {"action": "deny", "on_deny": "Nothing gets deleted."},
        "add": {"limits": [{"counter": counter, "window": "day", "max": ADD_BUDGET}]},
        "charge": {"deny_if": [{"path": "args.amount", "op": "gt", "value": 100, "on_deny": "too much"}]},
    }}
    config = f"""
[gateway]

[servers.http]
url = "{upstream}"
timeout = "2s"

[servers.stdio]
command = "{PYTHON}"
args = ["{PY_UPSTREAM}", "--transport", "stdio"]

[[grants]]
name = "soak"
token = "{TOKEN}"
policies = {{ http = "policy.json", stdio = "policy.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"policy.json": policy}, name="toolgate-soak")
    data = tmp_path / "toolgate-soak-data"
    tally = Tally()
    samples: list[tuple[float, int]] = []
    fds: dict[str, int] = {}
    sampling = threading.Event()

    def sample() -> None:
        t0 = time.monotonic()
        while not sampling.is_set():
            samples.append((time.monotonic() - t0, rss_kib(gw.pid)))
            sampling.wait(0.5)

    sampler = threading.Thread(target=sample, daemon=True)

    async def body() -> None:
        stop = anyio.Event()
        sampler.start()
        async with anyio.create_task_group() as tg:
            for i in range(5):
                tg.start_soon(http_worker, i, gw.server_url("http"), tally, stop)
            tg.start_soon(crasher, gw.server_url("stdio"), tally, stop)
            await anyio.sleep(SECONDS * 0.3)
            fds["warm"] = open_fds(gw.pid)
            await anyio.sleep(SECONDS * 0.7)
            stop.set()

    run(body, timeout=SECONDS + 120)
    sampling.set()
    sampler.join(timeout=5)

    # 1. Only the injected errors, each as expected.
    assert not tally.unexpected, tally.unexpected[:20]
    calls = sum(tally.calls.values())
    assert tally.crashes >= 2, f"the stdio upstream was crashed only {tally.crashes} times"

    # 2. The limit: exactly its budget admitted (the run makes more attempts than that).
    adds_allowed = tally.calls[("http", "add", "allow", "ok")]
    adds_refused = tally.calls[("http", "add", "rate_limited", "")]
    assert adds_refused > 0, f"the budget of {ADD_BUDGET} was never exhausted ({adds_allowed} adds)"
    assert adds_allowed == ADD_BUDGET, f"{adds_allowed} adds admitted, budget {ADD_BUDGET}"

    # 3. The upstream ran exactly what was admitted.
    ran = ran_file.read_text().split()
    assert sorted(ran) == sorted(tally.tags_admitted), "record_run: admitted and ran differ"

    # 4. The audit log: exactly one record per call, with what the client saw. Outcomes are
    # written a moment after the answer (with the next commit), so poll briefly.
    deadline = time.monotonic() + 10
    while True:
        done = subprocess.run([str(gateway_binary()), "audit", "query", "--json", "--grant", "soak",
                               "--data-dir", str(data)],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        calls_recorded = [r for r in records if r["method"] == "tools/call"]
        if all(r["upstream_status"] for r in calls_recorded if r["forwarded"]) or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    audited: Counter[tuple[str, str, str, str]] = Counter()
    for r in calls_recorded:
        outcome = (r["upstream_status"] or "") if r["forwarded"] else ""
        if r["tool"] == "crash":
            continue  # counted below
        if r["tool"] == "sleep" and outcome in CANCELLED:
            outcome = "cancelled"
        audited[(r["server"], r["tool"], r["decision"], outcome)] += 1
    crashes_recorded = [r for r in calls_recorded if r["tool"] == "crash"]
    assert len(crashes_recorded) == tally.crashes, (len(crashes_recorded), tally.crashes)
    # The child dies mid-call: the gateway answers the JSON-RPC error naming the server.
    assert all(r["upstream_status"] == "error -32603" for r in crashes_recorded), \
        Counter(r["upstream_status"] for r in crashes_recorded)
    difference = {k: (tally.calls[k], audited[k]) for k in set(tally.calls) | set(audited)
                  if tally.calls[k] != audited[k]}
    assert not difference, f"(client saw, audit holds) differ: {difference}"
    verify = subprocess.run([str(gateway_binary()), "audit", "verify", "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr

    # 5. Memory and descriptors. Warm: the samples from 30% to 50% of the run; late: the last
    # 20%. The margin covers allocator noise, not growth with the number of calls.
    warm = statistics.median(kib for t, kib in samples if SECONDS * 0.3 <= t < SECONDS * 0.5)
    late = statistics.median(kib for t, kib in samples if t >= SECONDS * 0.8)
    assert late <= warm * 1.10 + 3072, f"resident size grew from {warm} KiB to {late} KiB"
    deadline = time.monotonic() + 10
    while open_fds(gw.pid) > fds["warm"] + 4 and time.monotonic() < deadline:
        time.sleep(0.2)  # sessions just closed by the clients are being torn down
    assert open_fds(gw.pid) <= fds["warm"] + 4, f"descriptors: {fds['warm']} warm, {open_fds(gw.pid)} at the end"
    assert not [c for c in children_of(gw.pid) if c[1] == "Z"], f"zombies: {children_of(gw.pid)}"
    print(f"soak {SECONDS:g}s: {calls} calls, {tally.crashes} stdio crashes "
          f"(back after {max(tally.restart_waits):.1f}s at most), RSS {warm} KiB warm, {late} KiB late, "
          f"max {max(k for _, k in samples)} KiB; fds {fds['warm']} warm")
