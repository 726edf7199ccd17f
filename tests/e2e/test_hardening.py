"""Hardening (issue 9): limits on what the gateway holds, each refusal a clear error.

- `[servers.X] max_message_bytes`: an upstream answer larger than the limit — a JSON body
  the gateway reads whole, one SSE event, one stdio line — reaches the caller as a JSON-RPC
  error naming the server and the setting, at once (not a cut stream, not a timeout), and
  the next call on the same session works.
- SIGTERM drains a call in flight: it gets its answer, the gateway exits 0, and the audit
  log holds the call with its outcome.
- PostgreSQL (cluster audit log), then Redis (counters), stopped and started again under a
  steady load: calls are refused with a message naming what is down and never reach the
  upstream; `/readyz` says 503 naming the store meanwhile; the gateway recovers by itself; every call that ran is in the audit log with its
  outcome, and the counter holds exactly the calls that ran.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from mcp import MCPError

from e2e_helpers import (
    PrivatePostgres,
    Procs,
    RawSession,
    assert_allowed,
    gateway_binary,
    http_client,
    py_upstream_stdio_argv,
    free_port,
    redis_command,
    run,
    start_gateway_config,
    start_py_upstream_http,
    start_redis,
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


@pytest.fixture
def private_postgres(procs: Procs) -> Any:
    pg = PrivatePostgres(procs)
    yield pg
    pg.close()


def test_postgres_and_redis_stopped_and_restarted_under_load_lose_nothing(
        procs: Procs, tmp_path: Path, private_postgres: PrivatePostgres) -> None:
    """Six clients call `record_run` in a loop through a cluster-mode gateway (audit log in a
    private PostgreSQL, counters in a private Redis that persists) while PostgreSQL is
    stopped (fast shutdown) and started again, and then Redis. Every call either ran or was
    refused: naming the audit log while PostgreSQL was down, naming the counter store while
    Redis was; no refused call reached the upstream; calls run again without a gateway
    restart; every call that ran has its audit record with outcome `ok`, and a refused one
    has none or one whose outcome says it was not sent; the counter, which outlived its
    Redis' restart, holds exactly the calls that ran."""
    pg = private_postgres
    pg.start()
    redis_port = free_port()
    redis_dir = tmp_path / "redis"
    redis_dir.mkdir()
    redis_url, redis = start_redis(procs, port=redis_port, name="redis-outage", persist_dir=redis_dir)
    counter = f"outage-{secrets.token_hex(4)}"
    ran_file = tmp_path / "ran.txt"
    upstream = start_py_upstream_http(procs, name="py_upstream-outage", ran_file=ran_file)[0]
    policy = {"version": "1", "default": "deny", "tools": {"record_run": {"limits": [
        {"counter": counter, "window": "hour", "max": 1_000_000, "scope": "global"}]}}}
    config = f"""
[gateway]

[store]
postgres_url = "{pg.url}"
redis_url = "{redis_url}"

[servers.py]
url = "{upstream}"

[[grants]]
name = "outage"
token = "{TOKEN}"
policies = {{ py = "policy.json" }}
"""
    gw = start_gateway_config(procs, tmp_path, config, policies={"policy.json": policy},
                              name="toolgate-hardening-outage")
    outcomes: dict[str, str] = {}
    phase = {"now": "before"}
    refused: Counter[tuple[str, str]] = Counter()  # (phase, by whom)

    async def worker(i: int, stop: anyio.Event) -> None:
        async with http_client(gw.server_url("py"), TOKEN, timeout=20) as client:
            n = 0
            while not stop.is_set():
                tag = f"w{i}-{n}"
                n += 1
                try:
                    result = await client.call_tool("record_run", {"tag": tag})
                except MCPError as e:
                    if "audit log unavailable, so the request was not forwarded" in str(e):
                        outcomes[tag] = "refused"
                        refused[(phase["now"], "audit")] += 1
                    else:
                        outcomes[tag] = f"unexpected error: {e}"
                    continue
                decision = (result.meta or {}).get("toolgate/decision")
                if not result.is_error:
                    outcomes[tag] = "ran"
                elif decision and "counter store unavailable" in decision["message"]:
                    outcomes[tag] = "refused"
                    refused[(phase["now"], "counters")] += 1
                else:
                    outcomes[tag] = f"unexpected result: {result}"

    def ran_count() -> int:
        return sum(1 for o in outcomes.values() if o == "ran")

    def readyz() -> tuple[int, str]:
        r = httpx.get(f"{gw.base}/readyz", timeout=10)
        return r.status_code, r.text

    async def outage(name: str, stop_it: Callable[[], None], start_it: Callable[[], None]) -> None:
        phase["now"] = f"{name} down"
        await anyio.to_thread.run_sync(stop_it)
        # /readyz asks the store itself: not ready, naming it, while it is down.
        status, text = await anyio.to_thread.run_sync(readyz)
        store_line = "audit log" if name == "postgres" else "counter store"
        assert status == 503 and f"{store_line}: " in text and f"{store_line}: ok" not in text, text
        await anyio.sleep(2.5)
        await anyio.to_thread.run_sync(start_it)
        deadline = time.monotonic() + 20
        while (await anyio.to_thread.run_sync(readyz))[0] != 200:
            assert time.monotonic() < deadline, f"not ready within 20 s of {name} coming back"
            await anyio.sleep(0.2)
        phase["now"] = f"after {name}"
        ran_at_restart = ran_count()
        deadline = time.monotonic() + 20
        while ran_count() < ran_at_restart + 20:
            assert time.monotonic() < deadline, f"no recovery within 20 s of {name} coming back: {refused}"
            await anyio.sleep(0.2)

    def restart_redis() -> None:
        nonlocal redis
        redis = start_redis(procs, port=redis_port, name="redis-outage-again", persist_dir=redis_dir)[1]

    def stop_redis() -> None:
        redis.signal_group(signal.SIGTERM)  # saves nothing more: every write is already fsynced
        redis.proc.wait(timeout=30)

    async def body() -> None:
        stop = anyio.Event()
        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(worker, i, stop)
            await anyio.sleep(1.5)
            assert ran_count() > 0, outcomes
            await outage("postgres", pg.stop, pg.start)
            await outage("redis", stop_redis, restart_redis)
            stop.set()

    run(body, timeout=120)
    unexpected = {tag: o for tag, o in outcomes.items() if o not in ("ran", "refused")}
    assert not unexpected, unexpected
    assert refused[("postgres down", "audit")] > 0, f"the PostgreSQL outage was never felt: {refused}"
    assert refused[("redis down", "counters")] > 0, f"the Redis outage was never felt: {refused}"
    ran = ran_file.read_text().split()
    assert len(ran) == len(set(ran)), "a call ran twice"
    assert set(ran) == {tag for tag, o in outcomes.items() if o == "ran"}, "a refused call reached the upstream"

    def sha(tag: str) -> str:
        text = json.dumps({"tag": tag}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()

    by_sha = {sha(tag): tag for tag in outcomes}
    # Outcomes ride along with later commits (or the periodic flush): poll until every call
    # that ran has one.
    deadline = time.monotonic() + 15
    while True:
        done = subprocess.run([str(gateway_binary()), "audit", "query", "--json", "--grant", "outage",
                               "--tool", "record_run", "--config", str(tmp_path / "toolgate.toml")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        records = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
        status = {by_sha[r["args_sha256"]]: r["upstream_status"] for r in records}
        if all(status.get(tag) == "ok" for tag in ran):
            break
        missing = [tag for tag in ran if status.get(tag) != "ok"]
        assert time.monotonic() < deadline, f"calls that ran lack their audit outcome: {missing[:10]}"
        time.sleep(0.5)
    assert len(records) == len(status), "a call was recorded twice"
    for tag, outcome in status.items():
        if outcomes[tag] == "refused":
            # Refused by the counter store: recorded as a denial, never forwarded. Refused for
            # the audit log: its record may have been committed just as PostgreSQL went away
            # (the COMMIT's answer lost); then its outcome says it was never sent.
            assert outcome in (None, "not_sent"), (tag, outcome)
    # A reserve whose answer Redis' stop cut off is voided in the background once Redis is
    # back (retried with back-off): until then it may still count, so poll briefly.
    key = f"toolgate:counter:{{global\x1f{counter}}}:sum"
    deadline = time.monotonic() + 10
    first_total = float(redis_command(redis_url, "HGET", key, "s") or 0)
    while (total := float(redis_command(redis_url, "HGET", key, "s") or 0)) != len(ran):
        assert total > len(ran), f"counter {total} below the {len(ran)} calls that ran"
        assert time.monotonic() < deadline, f"counter {total}, calls that ran {len(ran)}"
        time.sleep(0.2)
    print(f"ran {len(ran)}, refused {dict(refused)}, records {len(records)}, counter first read {first_total}")
