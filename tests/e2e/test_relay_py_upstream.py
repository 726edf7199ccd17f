"""Server-to-client requests relayed through toolgate: elicitation (accept / decline),
sampling and roots, with py_upstream.py (official Python SDK) over Streamable HTTP and over
stdio. Also: a client that did not declare elicitation gets a prompt answer on a shared
stdio upstream (the gateway answers the elicitation with an error, never drops it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import mcp.types as types
import pytest
from mcp import MCPError

from e2e_helpers import (
    ClientCallbacks,
    Gateway,
    Procs,
    assert_allowed,
    call_tool_once,
    http_client,
    py_upstream_stdio_argv,
    quick_gateways,
    run,
    start_py_upstream_http,
)

ALLOW_ALL = {"version": "1", "default": "allow", "hide": ["secret_admin"]}
TRANSPORTS = ["http", "stdio"]
ROOTS = [types.Root(uri="file:///srv/data", name="data"), types.Root(uri="file:///home/ada/project", name="project")]


@pytest.fixture(scope="module")
def gateways(module_procs: Procs, module_tmp: Path) -> Callable[[str], Gateway]:
    return quick_gateways(module_procs, module_tmp, ALLOW_ALL, stdio_command=py_upstream_stdio_argv,
                          http_upstream=lambda: start_py_upstream_http(module_procs, name="py_upstream-relay")[0],
                          name="toolgate-relay")


def callbacks(action: str = "accept", name: str = "Ada") -> ClientCallbacks:
    return ClientCallbacks(elicit_action=action, elicit_content={"name": name}, sampling_model="e2e-fake",
                           sampling_text="autumn gate / policy", roots=ROOTS)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("action", "expected"), [("accept", "Hello, Ada"), ("decline", "declined"),
                                                  ("cancel", "cancelled")])
def test_elicitation_is_relayed(gateways: Callable[[str], Gateway], transport: str, action: str,
                                expected: str) -> None:
    cb = callbacks(action=action)
    result = call_tool_once(gateways(transport), "ask_name", {}, cb)
    assert_allowed(result)
    assert [c.text for c in result.content] == [expected]
    assert len(cb.elicitations) == 1
    assert cb.elicitations[0].message == "What is your name?"
    schema = cb.elicitations[0].model_dump(by_alias=True)["requestedSchema"]
    assert "name" in schema["properties"]


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_sampling_is_relayed(gateways: Callable[[str], Gateway], transport: str) -> None:
    cb = callbacks()
    result = call_tool_once(gateways(transport), "sample_haiku", {"topic": "gateways"}, cb)
    assert_allowed(result)
    assert [c.text for c in result.content] == ["autumn gate / policy"]
    assert len(cb.samplings) == 1
    params = cb.samplings[0]
    assert params.system_prompt == "You are a poet."
    assert params.max_tokens == 100
    assert params.messages[0].content.text == "Write a haiku about gateways."


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_roots_are_relayed(gateways: Callable[[str], Gateway], transport: str) -> None:
    cb = callbacks()
    result = call_tool_once(gateways(transport), "list_roots", {}, cb)
    assert_allowed(result)
    assert result.structured_content == {"roots": [{"uri": "file:///srv/data", "name": "data"},
                                                   {"uri": "file:///home/ada/project", "name": "project"}]}
    assert cb.roots_calls >= 1


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
    cb = callbacks(name="Auto")

    async def body() -> None:
        async with http_client(gw.url, gw.token, mode="auto", **cb.kwargs()) as client:
            assert client.server_info is not None and client.server_info.name == "py-upstream"
            result = await client.call_tool("ask_name", {})
            assert [c.text for c in result.content] == ["Hello, Auto"]
            assert len(cb.elicitations) == 1

    run(body)
