"""Several clients on one stdio upstream (SPEC §5): the gateway spawns one py_upstream child
and multiplexes every client session onto it, remapping ids. Notifications (progress) and
server-to-client requests (elicitation) must reach the client whose call caused them, and
no other."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp.types as types
from mcp.client.context import ClientRequestContext

from e2e_helpers import (
    Gateway,
    Procs,
    assert_allowed,
    children_of,
    http_client,
    py_upstream_stdio_argv,
    run,
    start_gateway_quick,
)

ALLOW_ALL = {"version": "1", "default": "allow"}


def start(procs: Procs, tmp_path: Path) -> Gateway:
    gw = start_gateway_quick(procs, tmp_path, ALLOW_ALL, command=py_upstream_stdio_argv(), name="toolgate-shared")
    return gw


def test_progress_goes_to_the_caller_only(procs: Procs, tmp_path: Path) -> None:
    gw = start(procs, tmp_path)
    received: dict[str, list[tuple[float, float | None, str | None]]] = {"a": [], "b": []}
    results: dict[str, Any] = {}

    def recorder(who: str):
        async def on_progress(progress: float, total: float | None, message: str | None) -> None:
            received[who].append((progress, total, message))
        return on_progress

    async def caller(who: str, n: int, delay: float, ready: anyio.Event, go: anyio.Event) -> None:
        async with http_client(gw.url, gw.token) as client:
            ready.set()
            await go.wait()
            results[who] = await client.call_tool("slow_count", {"n": n, "delay": delay},
                                                  progress_callback=recorder(who))
            # a second round on the same sessions, to exercise id reuse
            results[who + "2"] = await client.call_tool("slow_count", {"n": 2, "delay": 0.01},
                                                        progress_callback=recorder(who + "2"))

    received["a2"] = []
    received["b2"] = []

    async def body() -> None:
        ready_a, ready_b, go = anyio.Event(), anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(caller, "a", 6, 0.1, ready_a, go)
            tg.start_soon(caller, "b", 9, 0.07, ready_b, go)
            await ready_a.wait()
            await ready_b.wait()
            go.set()

    run(body)
    assert [c.text for c in results["a"].content] == ["counted to 6"]
    assert [c.text for c in results["b"].content] == ["counted to 9"]
    assert [c.text for c in results["a2"].content] == ["counted to 2"]
    assert [c.text for c in results["b2"].content] == ["counted to 2"]
    assert received["a"] == [(i, 6, f"step {i} of 6") for i in range(1, 7)], received
    assert received["b"] == [(i, 9, f"step {i} of 9") for i in range(1, 10)], received
    assert received["a2"] == [(i, 2, f"step {i} of 2") for i in range(1, 3)], received
    assert received["b2"] == [(i, 2, f"step {i} of 2") for i in range(1, 3)], received
    # one child for all of them
    pythons = [c for c in children_of(gw.pid) if "py_upstream.py" in c[2]]
    assert len(pythons) == 1, f"one shared stdio child expected, found {pythons}"


def test_elicitation_goes_to_the_caller_only(procs: Procs, tmp_path: Path) -> None:
    """One call at a time: each client's elicitation reaches that client, and connected
    bystanders (which declared elicitation too) are never asked."""
    gw = start(procs, tmp_path)
    asked: dict[str, int] = {"a": 0, "b": 0, "idle": 0}

    def elicit(who: str, name: str):
        async def on_elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked[who] += 1
            return types.ElicitResult(action="accept", content={"name": name})
        return on_elicit

    async def body() -> None:
        async with (
            http_client(gw.url, gw.token, elicitation_callback=elicit("idle", "Mallory")) as idle,
            http_client(gw.url, gw.token, elicitation_callback=elicit("a", "Ada")) as a,
            http_client(gw.url, gw.token, elicitation_callback=elicit("b", "Bob")) as b,
        ):
            result = await a.call_tool("ask_name", {})
            assert [c.text for c in result.content] == ["Hello, Ada"]
            assert asked == {"a": 1, "b": 0, "idle": 0}, asked
            result = await b.call_tool("ask_name", {})
            assert [c.text for c in result.content] == ["Hello, Bob"]
            assert asked == {"a": 1, "b": 1, "idle": 0}, asked
            assert_allowed(await idle.call_tool("echo", {"text": "idle"}))

    run(body)


def test_concurrent_elicitations_reach_their_own_clients(procs: Procs, tmp_path: Path) -> None:
    """Two clients call ask_name at the same time on the shared child: each elicitation
    must reach the client whose call caused it (SPEC §5), never the other one."""
    gw = start(procs, tmp_path)
    asked: dict[str, int] = {"a": 0, "b": 0, "idle": 0}
    results: dict[str, Any] = {}
    both_asked = anyio.Event()

    def elicit(who: str, name: str):
        async def on_elicit(ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
            asked[who] += 1
            if asked["a"] and asked["b"]:
                both_asked.set()
            # hold the answer until both elicitations are pending at once (a gateway that
            # serializes them is fine too: the wait is bounded)
            with anyio.move_on_after(3):
                await both_asked.wait()
            return types.ElicitResult(action="accept", content={"name": name})
        return on_elicit

    async def caller(who: str, name: str) -> None:
        async with http_client(gw.url, gw.token, elicitation_callback=elicit(who, name)) as client:
            results[who] = await client.call_tool("ask_name", {})

    async def body() -> None:
        async with http_client(gw.url, gw.token, elicitation_callback=elicit("idle", "Mallory")) as idle:
            async with anyio.create_task_group() as tg:
                tg.start_soon(caller, "a", "Ada")
                tg.start_soon(caller, "b", "Bob")
            assert_allowed(await idle.call_tool("echo", {"text": "idle"}))

    run(body)
    texts = {who: [c.text for c in r.content] for who, r in results.items()}
    assert asked == {"a": 1, "b": 1, "idle": 0}, f"elicitations reached the wrong clients: {asked}; results {texts}"
    assert texts == {"a": ["Hello, Ada"], "b": ["Hello, Bob"]}, texts
