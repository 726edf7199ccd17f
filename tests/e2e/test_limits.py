"""Limits and counters end to end (SPEC §3.5, §4 `rate_limited`; issue 3): the official
Python SDK client → toolgate → py_upstream.py.

- exact admission under concurrency through the real proxy (HTTP and stdio upstreams);
- `all_tools.limits`, a counter shared by two tools, atomic reservation of all limits;
- `increment_from` spend caps, and the `deny` for a missing amount;
- scopes: per grant, per server, per session, global;
- strict rolling windows (and `align: calendar`) with accurate `retry_after_ms`;
- rollback when the call never ran (JSON-RPC error, timeout, unreachable upstream), while an
  `isError` result consumes;
- counters persisting across gateway restarts, crash and clean stop (embedded SQLite store);
- cluster mode (the real Redis, `TOOLGATE_TEST_REDIS_URL`): the same semantics with counters in
  Redis; two gateway processes sharing it exactly. A private redis-server stopped, restarted
  and hung (SIGSTOP) under a running gateway, or absent when it starts: fail closed,
  `fail_open`, recovery without a restart; a reservation the gateway gave up on consumes
  nothing.

Every test uses counter names with a random suffix, so state left in the shared Redis (or
anywhere else) by earlier runs never interferes.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import MCPError

from e2e_helpers import (
    Gateway,
    Procs,
    assert_allowed,
    assert_denied,
    assert_rate_limited,
    decision_of,
    free_port,
    gateway_binary,
    http_client,
    py_upstream_stdio_argv,
    run,
    start_gateway_config,
    start_gateway_quick,
    start_py_upstream_http,
    start_redis,
    started_lazily,
)

SHARED_REDIS = os.environ.get("TOOLGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379")  # the real Redis (CI env.sh)
MINUTE_MS = 60_000
DAY_MS = 86_400_000
TOKEN = "tg-e2e-limits-grant-token-0123456789"
TOKEN_BOB = "tg-e2e-limits-bob-token-9876543210"


def sfx(name: str) -> str:
    """A counter name unique to this run."""
    return f"{name}-{secrets.token_hex(4)}"


def limit(counter: str, max_: float, window: Any = "minute", **extra: Any) -> dict[str, Any]:
    return {"counter": counter, "window": window, "max": max_, **extra}


@pytest.fixture(scope="module")
def upstream(module_procs: Procs) -> Callable[[], str]:
    """One py_upstream over Streamable HTTP shared by the module's gateways (counters live in
    the gateway, not upstream)."""
    return started_lazily(lambda: start_py_upstream_http(module_procs, name="py_upstream-limits")[0])


@pytest.fixture(scope="module")
def json_upstream(module_procs: Procs) -> Callable[[], str]:
    """The same, answering with single JSON bodies (`--json-response`) instead of SSE."""
    return started_lazily(lambda: start_py_upstream_http(module_procs, "--json-response",
                                                         name="py_upstream-limits-json")[0])


def upstream_url(mode: str, upstream: Callable[[], str], json_upstream: Callable[[], str]) -> str:
    return json_upstream() if mode == "json" else upstream()


# ---------------------------------------------------------------- helpers
def outcome(result: Any) -> str:
    """"allowed", "rate_limited", or "other: …" for one tools/call result."""
    decision = decision_of(result)
    if not result.is_error and (decision is None or decision.get("decision") == "allow"):
        return "allowed"
    if decision and decision.get("decision") == "rate_limited":
        return "rate_limited"
    return f"other: {result.model_dump(by_alias=True, exclude_none=True)}"


async def call(url: str, token: str, tool: str, args: dict[str, Any]) -> Any:
    """One tools/call on a fresh SDK session."""
    async with http_client(url, token) as client:
        return await client.call_tool(tool, args)


async def concurrent_calls(targets: list[tuple[str, str]], calls_per_client: int, tool: str = "echo") -> list[Any]:
    """Every (url, token) in `targets` is one SDK client session; all sessions are opened
    first, then every client fires `calls_per_client` echo calls at once. Returns all
    results (allowed ones are checked to carry the upstream's answer)."""
    results: list[Any] = []
    ready = anyio.Event()
    opened = 0

    async def one_client(index: int, url: str, token: str) -> None:
        nonlocal opened
        async with http_client(url, token) as client:
            opened += 1
            if opened == len(targets):
                ready.set()
            await ready.wait()

            async def one_call(j: int) -> None:
                text = f"client {index} call {j}"
                result = await client.call_tool(tool, {"text": text})
                if outcome(result) == "allowed":
                    assert result.content[0].text == text, result
                results.append(result)

            async with anyio.create_task_group() as tg:
                for j in range(calls_per_client):
                    tg.start_soon(one_call, j)

    async with anyio.create_task_group() as tg:
        for i, (url, token) in enumerate(targets):
            tg.start_soon(one_client, i, url, token)
    return results


def assert_exact_admission(results: list[Any], allowed: int, rule: str, max_label: str, counter: str) -> None:
    kinds = [outcome(r) for r in results]
    others = [k for k in kinds if k not in ("allowed", "rate_limited")]
    assert not others, f"unexpected answers: {others}"
    assert kinds.count("allowed") == allowed, f"{kinds.count('allowed')} allowed, expected exactly {allowed}"
    for r in results:
        if outcome(r) == "rate_limited":
            assert_rate_limited(r, rule, max_label, "minute", counter, MINUTE_MS)


def config_text(servers: dict[str, dict[str, Any]], *, redis_url: str | None = None,
                grants: dict[str, str] | None = None, policy_file: str = "limits.json") -> str:
    """A config: `servers` maps names to their TOML keys (strings/bools/ints); every grant of
    `grants` (name → token; default: one grant `limits` with TOKEN) gets `policy_file` on every server."""
    lines = ["[gateway]", 'data_dir = "data"', ""]
    if redis_url:
        lines += ["[store]", f'redis_url = "{redis_url}"', ""]
    for name, keys in servers.items():
        lines.append(f"[servers.{name}]")
        for key, value in keys.items():
            if isinstance(value, bool):
                lines.append(f"{key} = {'true' if value else 'false'}")
            elif isinstance(value, int):
                lines.append(f"{key} = {value}")
            else:
                lines.append(f'{key} = "{value}"')
        lines.append("")
    for grant, token in (grants or {"limits": TOKEN}).items():
        policies = ", ".join(f'{name} = "{policy_file}"' for name in servers)
        lines += ["[[grants]]", f'name = "{grant}"', f'token = "{token}"', f"policies = {{ {policies} }}", ""]
    return "\n".join(lines)


STORES = ["embedded", "redis"]


def store_gateway(procs: Procs, tmp_path: Path, policy: dict[str, Any], store: str, upstream: str,
                  name: str) -> tuple[str, str]:
    """A gateway in front of `upstream` enforcing `policy`, its counters in the embedded store
    (quick mode) or in the shared Redis (config mode, server `up`); returns (proxy URL, token)."""
    if store == "embedded":
        gw = start_gateway_quick(procs, tmp_path, policy, upstream=upstream, name=name)
        assert gw.url and gw.token
        return gw.url, gw.token
    config = config_text({"up": {"url": upstream}}, redis_url=SHARED_REDIS)
    gw = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy}, name=name)
    return gw.server_url("up"), TOKEN


# ------------------------------------------------------------- 1. concurrency
def test_exact_admission_under_concurrency(procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    """max 10 per minute per grant; 5 clients × 6 concurrent calls → exactly 10 allowed, the
    other 20 rate_limited with the rule id, message and 0 < retry_after_ms <= 60000."""
    counter = sfx("echo-rate")
    policy = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [limit(counter, 10)]}}}
    gw = start_gateway_quick(procs, tmp_path, policy, upstream=upstream(), name="toolgate-limits-conc")
    assert gw.url and gw.token
    results = run(lambda: concurrent_calls([(gw.url, gw.token)] * 5, 6))
    assert len(results) == 30
    assert_exact_admission(results, 10, f"/tools/echo/limits/{counter}", "10", counter)
    # The budget stays spent for later sessions too.
    assert_rate_limited(run(lambda: call(gw.url, gw.token, "echo", {"text": "later"})),
                        f"/tools/echo/limits/{counter}", "10", "minute", counter, MINUTE_MS)


# --------------------------------------------------- 2. all_tools and sharing
@pytest.mark.parametrize("store", STORES)
def test_all_tools_limit_and_shared_counter_are_one_budget(procs: Procs, tmp_path: Path,
                                                           upstream: Callable[[], str], store: str) -> None:
    """echo and add share one counter (max 3); all_tools (max 5) counts every call; a call
    refused by one limit consumes none of the others (reserved together)."""
    shared, every = sfx("shared"), sfx("all-calls")
    policy = {
        "version": "1",
        "default": "allow",
        "all_tools": {"limits": [limit(every, 5)]},
        "tools": {
            "echo": {"limits": [limit(shared, 3)],
                     "deny_if": [{"path": "args.text", "op": "eq", "value": "NO", "on_deny": "no NO"}]},
            "add": {"limits": [limit(shared, 3)]},
            "secret_admin": {"action": "deny"},
        },
    }
    url, token = store_gateway(procs, tmp_path, policy, store, upstream(), f"toolgate-limits-shared-{store}")

    async def body() -> None:
        async with http_client(url, token) as client:
            # only admitted calls consume: denials and unknown tools count against nothing
            for _ in range(3):
                assert_denied(await client.call_tool("echo", {"text": "NO"}), "/tools/echo/deny_if/args.text-eq", "no NO")
                assert_denied(await client.call_tool("secret_admin", {}), "/tools/secret_admin/action",
                              'Tool "secret_admin" is denied by policy')
                with pytest.raises(MCPError) as info:
                    await client.call_tool("ghost_tool", {})
                assert info.value.code == -32602, info.value.error
            assert_allowed(await client.call_tool("echo", {"text": "1"}))
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))
            assert_allowed(await client.call_tool("echo", {"text": "3"}))
            # the shared counter is spent, whichever tool asks
            assert_rate_limited(await client.call_tool("add", {"a": 1, "b": 2}), f"/tools/add/limits/{shared}",
                                "3", "minute", shared, MINUTE_MS)
            assert_rate_limited(await client.call_tool("echo", {"text": "5"}), f"/tools/echo/limits/{shared}",
                                "3", "minute", shared, MINUTE_MS)
            # 3 of the 5 all_tools units are used: the two refused calls consumed nothing
            assert_allowed(await client.call_tool("filler_00", {}))
            assert_allowed(await client.call_tool("filler_01", {}))
            assert_rate_limited(await client.call_tool("filler_02", {}), f"/all_tools/limits/{every}",
                                "5", "minute", every, MINUTE_MS)

    run(body)


# ----------------------------------------------------------- 3. spend caps
@pytest.mark.parametrize("store", STORES)
def test_increment_from_spend_cap(procs: Procs, tmp_path: Path, upstream: Callable[[], str], store: str) -> None:
    """charge with a daily cap of 100 summed from args.amount: 60 + 39.5 fit, 1 does not, 0.5
    does; a missing, non-numeric or negative amount is denied and consumes nothing."""
    counter = sfx("spend")
    rule = f"/tools/charge/limits/{counter}"
    policy = {"version": "1", "default": "deny", "tools": {
        "charge": {"limits": [limit(counter, 100, "day", increment_from="args.amount")]}}}
    url, token = store_gateway(procs, tmp_path, policy, store, upstream(), f"toolgate-limits-spend-{store}")

    async def body() -> None:
        async with http_client(url, token) as client:
            # no amount: denied with the reason (decision deny, the limit's rule), nothing consumed
            assert_denied(await client.call_tool("charge", {"reason": "no amount"}), rule, "args.amount is missing")
            bad = await client.call_tool("charge", {"amount": "lots", "reason": "not a number"})
            assert bad.is_error and decision_of(bad) is not None
            assert {k: decision_of(bad)[k] for k in ("decision", "rule")} == {"decision": "deny", "rule": rule}, bad
            # a negative amount would hand budget back: refused too
            refund = await client.call_tool("charge", {"amount": -50, "reason": "refund myself"})
            assert refund.is_error and decision_of(refund) is not None, refund
            assert {k: decision_of(refund)[k] for k in ("decision", "rule")} == {"decision": "deny", "rule": rule}, refund
            first = await client.call_tool("charge", {"amount": 60, "reason": "first"})
            assert_allowed(first)
            assert first.structured_content["charged"] == 60
            assert_allowed(await client.call_tool("charge", {"amount": 39.5, "reason": "second"}))
            assert_rate_limited(await client.call_tool("charge", {"amount": 1, "reason": "third"}), rule,
                                "100", "day", counter, DAY_MS)
            # fractional amounts count exactly: 0.5 is left, then nothing
            assert_allowed(await client.call_tool("charge", {"amount": 0.5, "reason": "the rest"}))
            assert_rate_limited(await client.call_tool("charge", {"amount": 0.01, "reason": "a cent"}), rule,
                                "100", "day", counter, DAY_MS)
            # a zero charge still fits
            assert_allowed(await client.call_tool("charge", {"amount": 0, "reason": "free"}))

    run(body)


# ---------------------------------------------------------------- scopes
def test_scopes_grant_server_session_global(procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    """grant (default): per grant and per server; server: shared by the server's grants;
    session: per MCP session; global: one budget across servers and grants."""
    per_grant, per_server, per_session, everywhere = sfx("g"), sfx("srv"), sfx("sess"), sfx("glob")
    policy = {"version": "1", "default": "allow", "tools": {
        "echo": {"limits": [limit(per_grant, 1)]},
        "add": {"limits": [limit(per_server, 1, scope="server")]},
        "filler_00": {"limits": [limit(per_session, 1, scope="session")]},
        "filler_01": {"limits": [limit(everywhere, 1, scope="global")]},
    }}
    url = upstream()
    config = config_text({"s1": {"url": url}, "s2": {"url": url}}, grants={"alice": TOKEN, "bob": TOKEN_BOB})
    gw = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy}, name="toolgate-limits-scopes")
    s1, s2 = gw.server_url("s1"), gw.server_url("s2")
    echo = {"text": "x"}

    async def body() -> None:
        kinds = lambda results: [outcome(r) for r in results]  # noqa: E731
        # grant scope
        assert kinds([await call(s1, TOKEN, "echo", echo), await call(s1, TOKEN, "echo", echo)]) == ["allowed", "rate_limited"]
        assert outcome(await call(s1, TOKEN_BOB, "echo", echo)) == "allowed", "another grant has its own budget"
        assert outcome(await call(s2, TOKEN, "echo", echo)) == "allowed", "another server has its own budget"
        # server scope
        assert outcome(await call(s1, TOKEN, "add", {"a": 1, "b": 1})) == "allowed"
        assert_rate_limited(await call(s1, TOKEN_BOB, "add", {"a": 1, "b": 1}), f"/tools/add/limits/{per_server}",
                            "1", "minute", per_server, MINUTE_MS)
        assert outcome(await call(s2, TOKEN_BOB, "add", {"a": 1, "b": 1})) == "allowed"
        # session scope
        async with http_client(s1, TOKEN) as client:
            assert outcome(await client.call_tool("filler_00", {})) == "allowed"
            assert_rate_limited(await client.call_tool("filler_00", {}), f"/tools/filler_00/limits/{per_session}",
                                "1", "minute", per_session, MINUTE_MS)
        assert outcome(await call(s1, TOKEN, "filler_00", {})) == "allowed", "a new session has its own budget"
        # global scope
        assert outcome(await call(s1, TOKEN, "filler_01", {})) == "allowed"
        assert_rate_limited(await call(s2, TOKEN_BOB, "filler_01", {}), f"/tools/filler_01/limits/{everywhere}",
                            "1", "minute", everywhere, MINUTE_MS)

    run(body)


# --------------------------------------------------------------- windows
@pytest.mark.parametrize("store", STORES)
def test_strict_rolling_window_and_retry_after(procs: Procs, tmp_path: Path, upstream: Callable[[], str],
                                               store: str) -> None:
    """window 2 (seconds), max 2: a call at t0, one at t0+1 s; the third waits until the
    first leaves the window (retry_after_ms accurate), then exactly one slot is free again."""
    counter = sfx("rolling")
    rule = f"/tools/echo/limits/{counter}"
    policy = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [limit(counter, 2, 2)]}}}
    url, token = store_gateway(procs, tmp_path, policy, store, upstream(), f"toolgate-limits-rolling-{store}")

    async def timed(client: Any) -> tuple[Any, float, float]:
        start = time.monotonic()
        result = await client.call_tool("echo", {"text": "t"})
        return result, start, time.monotonic()

    async def body() -> None:
        async with http_client(url, token) as client:
            a, a0, a1 = await timed(client)
            assert_allowed(a)
            await anyio.sleep(1.0)
            b, b0, b1 = await timed(client)
            assert_allowed(b)
            c, c0, c1 = await timed(client)
            retry = assert_rate_limited(c, rule, "2", "2s", counter, 2000)
            # the first call leaves the window 2 s after it was admitted (between a0 and a1)
            low, high = (a0 + 2.0 - c1) * 1000, (a1 + 2.0 - c0) * 1000
            slack = max(100, 0.1 * retry)
            assert low - slack <= retry <= high + slack, f"retry_after_ms {retry}, expected {low:.0f}..{high:.0f}"
            await anyio.sleep(max(0.0, a1 + 2.0 + 0.15 - time.monotonic()))
            d, d0, d1 = await timed(client)
            assert_allowed(d)  # the first call left the window
            e, e0, e1 = await timed(client)
            retry = assert_rate_limited(e, rule, "2", "2s", counter, 2000)
            low, high = (b0 + 2.0 - e1) * 1000, (b1 + 2.0 - e0) * 1000
            slack = max(100, 0.1 * retry)
            assert low - slack <= retry <= high + slack, (
                f"strict rolling window: the second call is still in the window; retry_after_ms {retry}, "
                f"expected {low:.0f}..{high:.0f}")

    run(body)


@pytest.mark.parametrize("store", STORES)
def test_calendar_aligned_window(procs: Procs, tmp_path: Path, upstream: Callable[[], str], store: str) -> None:
    """`align: calendar`: a minute resets at :00 UTC, so retry_after_ms is the time to the next
    whole minute."""
    counter = sfx("calendar")
    policy = {"version": "1", "default": "deny",
              "tools": {"echo": {"limits": [limit(counter, 1, "minute", align="calendar")]}}}
    url, token = store_gateway(procs, tmp_path, policy, store, upstream(), f"toolgate-limits-calendar-{store}")

    async def body() -> None:
        async with http_client(url, token) as client:
            into = time.time() % 60
            if into > 57.5:  # both calls must fall in the same calendar minute
                await anyio.sleep(60 - into + 0.2)
            assert_allowed(await client.call_tool("echo", {"text": "1"}))
            t0 = time.time()
            result = await client.call_tool("echo", {"text": "2"})
            t1 = time.time()
            retry = assert_rate_limited(result, f"/tools/echo/limits/{counter}", "1", "minute", counter, MINUTE_MS)
            low, high = (60 - t1 % 60) * 1000, (60 - t0 % 60) * 1000
            assert low - 300 <= retry <= high + 300, f"retry_after_ms {retry}, expected the next :00 ({low:.0f}..{high:.0f})"

    run(body)


# -------------------------------------------------------------- rollback
@pytest.mark.parametrize(("mode", "store"), [("sse", "embedded"), ("json", "embedded"), ("sse", "redis")])
def test_rollback_on_jsonrpc_error_and_is_error_consumes(procs: Procs, tmp_path: Path, upstream: Callable[[], str],
                                                         json_upstream: Callable[[], str], mode: str,
                                                         store: str) -> None:
    """jsonrpc_error shares echo's counter (max 2): its JSON-RPC errors never consume; an
    isError result (tool_error) does. Upstream answers as SSE or as a JSON body."""
    counter, tool_errors = sfx("rb"), sfx("te")
    policy = {"version": "1", "default": "deny", "tools": {
        "jsonrpc_error": {"limits": [limit(counter, 2)]},
        "echo": {"limits": [limit(counter, 2)]},
        "tool_error": {"limits": [limit(tool_errors, 1)]},
    }}
    url, token = store_gateway(procs, tmp_path, policy, store, upstream_url(mode, upstream, json_upstream),
                               f"toolgate-limits-rollback-{mode}-{store}")

    async def body() -> None:
        async with http_client(url, token) as client:
            for i in range(3):
                with pytest.raises(MCPError) as info:
                    await client.call_tool("jsonrpc_error", {"message": f"boom {i}"})
                assert info.value.code == -32603 and info.value.error.message == f"boom {i}", info.value.error
            # the three calls never ran: echo still has its full budget of 2
            assert_allowed(await client.call_tool("echo", {"text": "1"}))
            assert_allowed(await client.call_tool("echo", {"text": "2"}))
            assert_rate_limited(await client.call_tool("echo", {"text": "3"}), f"/tools/echo/limits/{counter}",
                                "2", "minute", counter, MINUTE_MS)
            # an isError result means the tool ran: it consumes
            failed = await client.call_tool("tool_error", {"message": "tool said no"})
            assert failed.is_error and decision_of(failed) is None, failed
            assert "tool said no" in failed.content[0].text, failed
            assert_rate_limited(await client.call_tool("tool_error", {"message": "again"}),
                                f"/tools/tool_error/limits/{tool_errors}", "1", "minute", tool_errors, MINUTE_MS)

    run(body)


@pytest.mark.parametrize("mode", ["sse", "json"])
def test_rollback_on_upstream_timeout(procs: Procs, tmp_path: Path, upstream: Callable[[], str],
                                      json_upstream: Callable[[], str], mode: str) -> None:
    """`--timeout 1s`: a call the upstream does not answer in time is -32603 naming the server,
    and its reservation is rolled back (sleep shares echo's budget of 2). The upstream answers
    with an SSE stream (head at once, result later) or with one JSON body."""
    url = upstream_url(mode, upstream, json_upstream)
    counter = sfx("timeout")
    shared = limit(counter, 2)
    policy = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [shared]}, "sleep": {"limits": [shared]}}}
    gw = start_gateway_quick(procs, tmp_path, policy, upstream=url, args=["--timeout", "1s"],
                             name=f"toolgate-limits-timeout-{mode}")

    async def body() -> None:
        async with http_client(gw.url, gw.token) as client:
            start = time.monotonic()
            with pytest.raises(MCPError) as info:
                await client.call_tool("sleep", {"seconds": 3})
            took = time.monotonic() - start
            assert took < 2.5, f"the upstream timeout (1s) was not applied: the call took {took:.1f}s"
            assert info.value.code == -32603 and "default" in info.value.error.message, info.value.error
            assert_allowed(await client.call_tool("echo", {"text": "1"}))
            assert_allowed(await client.call_tool("echo", {"text": "2"}))
            assert_rate_limited(await client.call_tool("echo", {"text": "3"}), f"/tools/echo/limits/{counter}",
                                "2", "minute", counter, MINUTE_MS)

    run(body)


def test_rollback_when_upstream_unreachable(procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    """Servers `deadup` and `otherup` share a global counter (max 2). Calls to `deadup` after
    its upstream went away never ran: `otherup` still gets the whole budget."""
    dead_url, dead_proc = start_py_upstream_http(procs, name="py_upstream-deadup")
    other_url = upstream()
    counter = sfx("unreachable")
    policy = {"version": "1", "default": "deny",
              "tools": {"echo": {"limits": [limit(counter, 2, scope="global")]}, "add": {}}}
    config = config_text({"deadup": {"url": dead_url}, "otherup": {"url": other_url}})
    gw = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy}, name="toolgate-limits-down")

    async def body() -> None:
        async with http_client(gw.server_url("deadup"), TOKEN) as client:
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 2}))  # the session works
            dead_proc.stop()  # the upstream goes away under the open session
            for _ in range(2):
                start = time.monotonic()
                with pytest.raises(MCPError) as info:
                    await client.call_tool("echo", {"text": "nobody there"})
                assert time.monotonic() - start < 5
                assert info.value.code == -32603 and "deadup" in info.value.error.message, info.value.error
        async with http_client(gw.server_url("otherup"), TOKEN) as client:
            assert_allowed(await client.call_tool("echo", {"text": "1"}))
            assert_allowed(await client.call_tool("echo", {"text": "2"}))
            assert_rate_limited(await client.call_tool("echo", {"text": "3"}), f"/tools/echo/limits/{counter}",
                                "2", "minute", counter, MINUTE_MS)

    run(body)


# ------------------------------------------------------------ persistence
def test_counters_survive_restarts(procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    """Embedded store (data dir in tmp): a killed gateway and a cleanly stopped one both come
    back with the counters they had — also when the policy document was edited meanwhile
    (counters belong to counter names, not to a version of the policy)."""
    counter = sfx("persist")
    rule = f"/tools/echo/limits/{counter}"
    policy = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [limit(counter, 4, "hour")]}}}
    config = config_text({"up": {"url": upstream()}})

    def start(doc: dict[str, Any] = policy) -> Gateway:
        return start_gateway_config(procs, tmp_path, config, policies={"limits.json": doc},
                                    name="toolgate-limits-persist")

    def echo(gw: Gateway) -> Any:
        return run(lambda: call(gw.server_url("up"), TOKEN, "echo", {"text": "x"}))

    def assert_limited_until_first_leaves(gw: Gateway) -> None:
        """rate_limited, retry_after_ms = when the first call leaves the hour (the window's
        timestamps survived too, not just a count)."""
        before = time.time()
        retry = assert_rate_limited(echo(gw), rule, "4", "hour", counter, 3_600_000)
        after = time.time()
        low, high = (first[0] + 3600 - after) * 1000, (first[1] + 3600 - before) * 1000
        assert low - 100 <= retry <= high + 100, f"retry_after_ms {retry}, expected {low:.0f}..{high:.0f}"

    gw = start()
    first = (time.time(), 0.0)
    assert_allowed(echo(gw))
    first = (first[0], time.time())
    assert_allowed(echo(gw))
    gw.proc.signal_group(signal.SIGKILL)  # a crash
    gw.proc.proc.wait(timeout=10)
    gw = start()
    assert_allowed(echo(gw))
    assert_allowed(echo(gw))
    assert_limited_until_first_leaves(gw)
    gw.proc.stop()  # a clean stop (SIGTERM)
    gw = start()
    assert_limited_until_first_leaves(gw)
    gw.proc.stop()
    edited = {**policy, "tools": {**policy["tools"], "add": {}}}
    gw = start(edited)
    assert_limited_until_first_leaves(gw)


def test_a_second_gateway_on_the_same_data_directory_refuses_to_start(
        procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    """The embedded store's counters are journaled by the one gateway that owns them (no
    commit per call), so a second gateway on its directory would count apart: it refuses to
    start and says why and what to do instead. The first keeps serving, and once it has
    stopped the directory can be served again."""
    counter = sfx("owned")
    policy = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [limit(counter, 4, "hour")]}}}
    config = config_text({"up": {"url": upstream()}})
    first = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy},
                                 name="toolgate-limits-owner")
    assert_allowed(run(lambda: call(first.server_url("up"), TOKEN, "echo", {"text": "x"})))
    data = tmp_path / "toolgate-limits-owner-data"
    second = subprocess.run([str(gateway_binary()), "serve", "--config", str(tmp_path / "toolgate.toml"),
                             "--listen", "127.0.0.1:0", "--data-dir", str(data)],
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0, second.stderr
    assert "another gateway is serving from" in second.stderr and "redis_url" in second.stderr, second.stderr
    assert_allowed(run(lambda: call(first.server_url("up"), TOKEN, "echo", {"text": "x"})))
    first.proc.stop()
    again = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy},
                                 name="toolgate-limits-owner")
    for _ in range(2):
        assert_allowed(run(lambda: call(again.server_url("up"), TOKEN, "echo", {"text": "x"})))
    assert_rate_limited(run(lambda: call(again.server_url("up"), TOKEN, "echo", {"text": "x"})),
                        f"/tools/echo/limits/{counter}", "4", "hour", counter, 3_600_000)


@pytest.mark.parametrize("mode", ["sse", "json", "stdio"])
def test_a_caller_has_at_most_max_concurrent_calls_running(procs: Procs, tmp_path: Path, mode: str,
                                                            upstream: Callable[[], str],
                                                            json_upstream: Callable[[], str]) -> None:
    """`[gateway] max_concurrent_calls = 3`: of five slow calls fired at once by one grant,
    three run and two are refused at once with a refusal that names the setting; another
    grant has places of its own meanwhile; once the three have finished, the grant's calls
    run again. For answers read whole (JSON), streamed (SSE) and from a stdio child."""
    policy = {"version": "1", "default": "deny", "tools": {"sleep": {}, "echo": {}}}
    if mode == "stdio":
        argv = py_upstream_stdio_argv()
        server = {"command": argv[0]}
        extra = "args = [" + ", ".join(f'"{a}"' for a in argv[1:]) + "]\n"
    else:
        server, extra = {"url": upstream_url(mode, upstream, json_upstream)}, ""
    config = config_text({"up": server}, grants={"alice": TOKEN, "bob": TOKEN_BOB})
    config = config.replace("[gateway]\n", "[gateway]\nmax_concurrent_calls = 3\n", 1)
    config = config.replace("[servers.up]\n", "[servers.up]\n" + extra, 1)
    gw = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy},
                              name=f"toolgate-limits-running-{mode}")
    url = gw.server_url("up")

    async def body() -> None:
        results: list[Any] = []
        async with http_client(url, TOKEN) as alice, http_client(url, TOKEN_BOB) as bob:
            async def slow() -> None:
                results.append(await alice.call_tool("sleep", {"seconds": 1.5}))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(slow)
                await anyio.sleep(0.5)  # the refusals are back; three calls are still running
                refused = [r for r in results if r.is_error]
                assert len(refused) == 2, [r.model_dump() for r in results]
                for r in refused:
                    decision = decision_of(r)
                    assert decision and decision["decision"] == "deny", r
                    assert decision["rule"] == "/gateway/max_concurrent_calls", r
                    assert "3 calls are already running" in r.content[0].text, r
                    assert "max_concurrent_calls" in r.content[0].text, r
                assert_allowed(await bob.call_tool("echo", {"text": "bob has places of his own"}))
            ran = [r for r in results if not r.is_error]
            assert [r.content[0].text for r in ran] == ["slept 1.5"] * 3, [r.model_dump() for r in ran]
            # All three finished: alice's places are free again.
            assert_allowed(await alice.call_tool("echo", {"text": "again"}))

    run(body)


# ---------------------------------------------------------------- cluster
def test_two_gateways_share_one_redis_exactly(procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    counter = sfx("cluster")
    policy = {"version": "1", "default": "deny", "tools": {"echo": {"limits": [limit(counter, 10)]}}}
    config = config_text({"up": {"url": upstream()}}, redis_url=SHARED_REDIS)
    gws = [start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy},
                                name=f"toolgate-limits-replica{i}") for i in (1, 2)]
    targets = [(gw.server_url("up"), TOKEN) for gw in gws for _ in range(4)]
    results = run(lambda: concurrent_calls(targets, 5))
    assert len(results) == 40
    assert_exact_admission(results, 10, f"/tools/echo/limits/{counter}", "10", counter)
    # the counters are in Redis, not in the replicas' embedded stores: a third replica with
    # its own empty data dir sees the spent budget
    third = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy},
                                 name="toolgate-limits-replica3")
    assert_rate_limited(run(lambda: call(third.server_url("up"), TOKEN, "echo", {"text": "x"})),
                        f"/tools/echo/limits/{counter}", "10", "minute", counter, MINUTE_MS)


class RedisOutage:
    """A gateway on a private Redis with servers `closed` (fail closed, the default) and `open`
    (`fail_open = true`) in front of the same upstream. echo has a roomy limit, add a tight
    one (max 1), filler_00 none."""

    def __init__(self, procs: Procs, tmp_path: Path, upstream: str, *, redis_running: bool) -> None:
        self.procs = procs
        self.port = free_port()
        self.redis = start_redis(procs, port=self.port, name="redis-private")[1] if redis_running else None
        self.echo_counter, self.add_counter = sfx("fragile"), sfx("tight")
        policy = {"version": "1", "default": "deny", "tools": {
            "echo": {"limits": [limit(self.echo_counter, 100)]},
            "add": {"limits": [limit(self.add_counter, 1)]},
            "filler_00": {},
        }}
        config = config_text({"closed": {"url": upstream}, "open": {"url": upstream, "fail_open": True}},
                             redis_url=f"redis://127.0.0.1:{self.port}")
        # Started with Redis down, readiness is not asked for: only calls need the counter store.
        self.gw = start_gateway_config(procs, tmp_path, config, policies={"limits.json": policy},
                                       name="toolgate-limits-redis", ready=redis_running)
        self.closed, self.opened = self.gw.server_url("closed"), self.gw.server_url("open")

    def call(self, target: str, tool: str = "echo", args: dict[str, Any] | None = None) -> tuple[Any, float]:
        """One call on a fresh session; returns (result, seconds the call took)."""
        if args is None:
            args = {"a": 1, "b": 2} if tool == "add" else {"text": "x"} if tool == "echo" else {}

        async def body() -> tuple[Any, float]:
            async with http_client(target, TOKEN) as client:
                start = time.monotonic()
                result = await client.call_tool(tool, args)
                return result, time.monotonic() - start

        return run(body, timeout=30)

    def assert_fails_closed(self, tool: str = "echo") -> None:
        result, took = self.call(self.closed, tool)
        counter = self.echo_counter if tool == "echo" else self.add_counter
        assert_denied(result, f"/tools/{tool}/limits/{counter}", "counter store unavailable")
        assert took < 5, f"a fail-closed answer took {took:.1f}s"

    def assert_fails_open(self) -> None:
        result, took = self.call(self.opened)
        assert_allowed(result)
        assert took < 5, f"a fail-open answer took {took:.1f}s"

    def start_redis(self) -> None:
        self.redis = start_redis(self.procs, port=self.port, name="redis-private-again")[1]

    def wait_recovered(self) -> None:
        """Polls echo on `closed` (denied while the store is unavailable) until it is admitted."""
        deadline = time.monotonic() + 15
        while True:
            result, _ = self.call(self.closed)
            if outcome(result) == "allowed":
                return
            assert_denied(result, f"/tools/echo/limits/{self.echo_counter}", "counter store unavailable")
            assert time.monotonic() < deadline, "the gateway did not recover within 15 s of Redis coming back"
            time.sleep(0.2)


def test_redis_down_fails_closed_or_open_and_recovers(procs: Procs, tmp_path: Path,
                                                      upstream: Callable[[], str]) -> None:
    """Redis stops under a running gateway: calls needing a counter are denied at once on the
    fail-closed server, admitted on the fail_open one, calls needing none still run; Redis
    starts again on the same port and the gateway recovers by itself. Then Redis hangs
    (SIGSTOP): same answers within a few seconds, and once it resumes, the reservations the
    gateway gave up on have consumed nothing."""
    s = RedisOutage(procs, tmp_path, upstream(), redis_running=True)
    assert_allowed(s.call(s.closed)[0])
    assert_allowed(s.call(s.opened)[0])

    assert s.redis is not None
    s.redis.stop()
    s.assert_fails_closed()
    s.assert_fails_closed()
    s.assert_fails_open()
    assert_allowed(s.call(s.closed, "filler_00")[0])  # no counter needed

    s.start_redis()
    s.wait_recovered()
    s.assert_fails_open()

    s.redis.signal_group(signal.SIGSTOP)  # Redis hangs: connections stay open, nothing answers
    try:
        s.assert_fails_closed("add")
        s.assert_fails_open()
    finally:
        s.redis.signal_group(signal.SIGCONT)
    s.wait_recovered()
    # The refused add was not admitted: its budget of 1 is whole once the store has voided
    # the attempt it gave up on. The void runs in the background with back-off (first retry
    # 100 ms, at most 2 s apart), so it may land a moment after Redis resumes; until then the
    # stalled EVALSHA may count, and a refusal consumes nothing, so poll.
    deadline = time.monotonic() + 10
    while True:
        result = s.call(s.closed, "add")[0]
        if outcome(result) == "allowed":
            break
        assert_rate_limited(result, f"/tools/add/limits/{s.add_counter}", "1", "minute", s.add_counter, MINUTE_MS)
        assert time.monotonic() < deadline, "the given-up reservation was not voided within 10 s"
        time.sleep(0.2)
    assert_rate_limited(s.call(s.closed, "add")[0], f"/tools/add/limits/{s.add_counter}", "1", "minute",
                        s.add_counter, MINUTE_MS)


def test_gateway_started_while_redis_is_down(procs: Procs, tmp_path: Path, upstream: Callable[[], str]) -> None:
    """A gateway whose Redis is not there yet serves (failing closed / open) and starts
    counting once Redis appears."""
    s = RedisOutage(procs, tmp_path, upstream(), redis_running=False)
    s.assert_fails_closed()
    s.assert_fails_open()
    assert_allowed(s.call(s.closed, "filler_00")[0])
    s.start_redis()
    s.wait_recovered()
    assert_allowed(s.call(s.closed, "add")[0])
    assert_rate_limited(s.call(s.closed, "add")[0], f"/tools/add/limits/{s.add_counter}", "1", "minute",
                        s.add_counter, MINUTE_MS)


# ----------------------------------------------------------------- stdio
def test_exact_admission_with_stdio_upstream(procs: Procs, tmp_path: Path) -> None:
    counter = sfx("stdio-rate")
    rollback = sfx("stdio-rb")
    policy = {"version": "1", "default": "deny", "tools": {
        "echo": {"limits": [limit(counter, 4)]},
        "jsonrpc_error": {"limits": [limit(rollback, 1)]},
        "add": {"limits": [limit(rollback, 1)]},
    }}
    gw = start_gateway_quick(procs, tmp_path, policy, command=py_upstream_stdio_argv(), name="toolgate-limits-stdio")
    assert gw.url and gw.token
    results = run(lambda: concurrent_calls([(gw.url, gw.token)] * 3, 3))
    assert len(results) == 9
    assert_exact_admission(results, 4, f"/tools/echo/limits/{counter}", "4", counter)

    async def body() -> None:
        async with http_client(gw.url, gw.token) as client:
            for _ in range(2):  # JSON-RPC errors from the child: rolled back
                with pytest.raises(MCPError) as info:
                    await client.call_tool("jsonrpc_error", {"message": "child says no"})
                assert info.value.code == -32603 and info.value.error.message == "child says no", info.value.error
            assert_allowed(await client.call_tool("add", {"a": 1, "b": 1}))
            assert_rate_limited(await client.call_tool("add", {"a": 1, "b": 1}), f"/tools/add/limits/{rollback}",
                                "1", "minute", rollback, MINUTE_MS)

    run(body)

