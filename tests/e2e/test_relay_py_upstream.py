"""Server-to-client requests relayed through toolgate: elicitation (accept / decline),
sampling and roots, with py_upstream.py (official Python SDK) over Streamable HTTP and over
stdio. Also: a client that did not declare elicitation gets a prompt answer on a shared
stdio upstream (the gateway answers the elicitation with an error, never drops it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import mcp.types as types
import pytest
from mcp import MCPError
from mcp.client.context import ClientRequestContext

from e2e_helpers import (
    gateway_binary,
    Gateway,
    Procs,
    assert_allowed,
    http_client,
    py_upstream_stdio_argv,
    run,
    start_gateway_quick,
    start_py_upstream_http,
)

ALLOW_ALL = {"version": "1", "default": "allow", "hide": ["secret_admin"]}
TRANSPORTS = ["http", "stdio"]
ROOTS = [types.Root(uri="file:///srv/data", name="data"), types.Root(uri="file:///home/ada/project", name="project")]


@pytest.fixture(scope="module")
def gateways(module_procs: Procs, module_tmp: Path) -> Callable[[str], Gateway]:
    cache: dict[str, Gateway] = {}

    def get(transport: str) -> Gateway:
        gateway_binary()  # fail fast, before starting any upstream
        if transport not in cache:
            if transport == "stdio":
                cache[transport] = start_gateway_quick(module_procs, module_tmp / transport, ALLOW_ALL,
                                                       command=py_upstream_stdio_argv(),
                                                       name="toolgate-relay-stdio")
            else:
                upstream, _ = start_py_upstream_http(module_procs, name="py_upstream-relay")
                cache[transport] = start_gateway_quick(module_procs, module_tmp / transport, ALLOW_ALL,
                                                       upstream=upstream, name="toolgate-relay-http")
        return cache[transport]

    return get


class Callbacks:
    def __init__(self, action: str = "accept", name: str = "Ada") -> None:
        self.action = action
        self.name = name
        self.elicitations: list[types.ElicitRequestParams] = []
        self.samplings: list[types.CreateMessageRequestParams] = []
        self.roots_calls = 0

    async def on_elicit(self, ctx: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        self.elicitations.append(params)
        if self.action == "accept":
            return types.ElicitResult(action="accept", content={"name": self.name})
        return types.ElicitResult(action=self.action)  # type: ignore[arg-type]

    async def on_sampling(self, ctx: ClientRequestContext,
                          params: types.CreateMessageRequestParams) -> types.CreateMessageResult:
        self.samplings.append(params)
        return types.CreateMessageResult(role="assistant", model="e2e-fake",
                                         content=types.TextContent(type="text", text="autumn gate / policy"),
                                         stop_reason="endTurn")

    async def on_roots(self, ctx: ClientRequestContext) -> types.ListRootsResult:
        self.roots_calls += 1
        return types.ListRootsResult(roots=ROOTS)

    def kwargs(self) -> dict[str, Any]:
        return {"elicitation_callback": self.on_elicit, "sampling_callback": self.on_sampling,
                "list_roots_callback": self.on_roots}


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("action", "expected"), [("accept", "Hello, Ada"), ("decline", "declined"),
                                                  ("cancel", "cancelled")])
def test_elicitation_is_relayed(gateways: Callable[[str], Gateway], transport: str, action: str,
                                expected: str) -> None:
    gw = gateways(transport)
    cb = Callbacks(action=action)

    async def body() -> None:
        async with http_client(gw.url, gw.token, **cb.kwargs()) as client:
            result = await client.call_tool("ask_name", {})
            assert_allowed(result)
            assert [c.text for c in result.content] == [expected]
            assert len(cb.elicitations) == 1
            assert cb.elicitations[0].message == "What is your name?"
            schema = cb.elicitations[0].model_dump(by_alias=True)["requestedSchema"]
            assert "name" in schema["properties"]

    run(body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sampling_is_relayed(gateways: Callable[[str], Gateway], transport: str) -> None:
    gw = gateways(transport)
    cb = Callbacks()

    async def body() -> None:
        async with http_client(gw.url, gw.token, **cb.kwargs()) as client:
            result = await client.call_tool("sample_haiku", {"topic": "gateways"})
            assert_allowed(result)
            assert [c.text for c in result.content] == ["autumn gate / policy"]
            assert len(cb.samplings) == 1
            params = cb.samplings[0]
            assert params.system_prompt == "You are a poet."
            assert params.max_tokens == 100
            assert params.messages[0].content.text == "Write a haiku about gateways."

    run(body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_roots_are_relayed(gateways: Callable[[str], Gateway], transport: str) -> None:
    gw = gateways(transport)
    cb = Callbacks()

    async def body() -> None:
        async with http_client(gw.url, gw.token, **cb.kwargs()) as client:
            result = await client.call_tool("list_roots", {})
            assert_allowed(result)
            assert result.structured_content == {"roots": [{"uri": "file:///srv/data", "name": "data"},
                                                           {"uri": "file:///home/ada/project", "name": "project"}]}
            assert cb.roots_calls >= 1

    run(body)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_relay_without_client_capability_does_not_hang(gateways: Callable[[str], Gateway], transport: str) -> None:
    """A client without the elicitation capability calling ask_name: the upstream's
    elicitation/create must be answered (an error), so the call ends promptly, as a JSON-RPC
    error or an isError result; the session keeps working."""
    gw = gateways(transport)

    async def body() -> None:
        async with http_client(gw.url, gw.token, timeout=20) as client:
            try:
                result = await client.call_tool("ask_name", {}, read_timeout_seconds=15)
            except MCPError as exc:
                assert exc.code != 0
            else:
                assert result.is_error, result.model_dump(by_alias=True, exclude_none=True)
            echo = await client.call_tool("echo", {"text": "after"})
            assert [c.text for c in echo.content] == ["after"]

    run(body, timeout=40)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_default_sdk_mode_works(gateways: Callable[[str], Gateway], transport: str) -> None:
    """The SDK's default `mode="auto"` (probe `server/discover`, fall back to `initialize`)
    gets a working session through the gateway, elicitation included."""
    gw = gateways(transport)
    cb = Callbacks(name="Auto")

    async def body() -> None:
        async with http_client(gw.url, gw.token, mode="auto", **cb.kwargs()) as client:
            assert client.server_info is not None and client.server_info.name == "py-upstream"
            result = await client.call_tool("ask_name", {})
            assert [c.text for c in result.content] == ["Hello, Auto"]
            assert len(cb.elicitations) == 1

    run(body)
